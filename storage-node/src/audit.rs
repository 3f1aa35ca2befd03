//! Storage audits, the node's side: answer a challenge for a slice of a
//! shard with a bao proof (see `codec::audit`) that the challenger checks
//! against the checksum the writer recorded.
//!
//! Nothing here can make a proof pass: the node only reads the shard it
//! holds and proves what is there. Outboard trees are not stored; each
//! proof hashes the whole shard once, which is also what makes a proof
//! evidence of holding all of it. A shard found damaged on the way (its
//! bytes no longer hash to its own header's checksum) is handed to this
//! node's repair, as a reader's report would be; the proof goes out as is
//! and fails at the challenger, as it must.

use crate::node::Node;
use crate::shard_store::StoreError;
use codec::CodecError;
use grid::node_api::{ProveRequest, ShardProof};

/// Answer one challenge. Blocking (reads the shard): call it on the
/// blocking pool. `NotFound` when the shard is not held.
pub fn prove(node: &Node, req: &ProveRequest) -> Result<ShardProof, StoreError> {
    let key = req.shard_key()?;
    let shard = node.store.read(&key, None)?;
    let proof = match codec::audit::prove_slice(&shard, req.offset, req.len) {
        Ok(p) => p,
        Err(CodecError::SliceOutOfRange { offset, len, total }) => {
            return Err(StoreError::InvalidRange {
                offset,
                len,
                shard_len: total,
            })
        }
        Err(e) => {
            // Not even a shard any more: let repair replace it.
            node.repair.hint(key.chunk, true);
            return Err(StoreError::Corrupt(e.to_string()));
        }
    };
    if !proof.intact {
        tracing::warn!(shard = %key.to_name(), "audited shard fails its checksum; repairing it");
        node.repair.hint(key.chunk, true);
    }
    node.metrics.bytes_sent.inc_by(proof.proof.len() as u64);
    Ok(ShardProof { proof: proof.proof })
}
