//! What the owner signs besides sealed records: cluster maps (whole, and
//! their membership) and chunk references, and the digests each signature
//! covers. The key itself is in `crate::owner_key`.

use crate::model::{ChunkReference, ClusterMap, NodeState};
pub use crate::owner_key::{
    message, verifies, OwnerKey, MAP_CONTEXT, MEMBERSHIP_CONTEXT, RECORD_CONTEXT,
    REFERENCE_CONTEXT, SHARD_HASHES_CONTEXT, SIGNATURE_LEN,
};
use crate::Record;

impl OwnerKey {
    /// Sign `map` as the owner: its owner key, both owner signatures, and
    /// no votes (the owner's word needs none).
    pub fn sign(&self, map: &mut ClusterMap) {
        map.owner_key = self.public();
        map.votes.clear();
        map.membership_signature = self
            .sign_digest(MEMBERSHIP_CONTEXT, &membership_digest(map))
            .to_vec();
        map.owner_signature = self.sign_digest(MAP_CONTEXT, &full_digest(map)).to_vec();
    }

    /// Sign reference `r` (and its shard hashes, if it has them).
    pub fn sign_reference(&self, r: &mut ChunkReference) {
        r.signature = self
            .sign_digest(REFERENCE_CONTEXT, &reference_digest(r))
            .to_vec();
        r.hashes_signature = if r.shard_hashes.is_empty() {
            Vec::new()
        } else {
            self.sign_digest(SHARD_HASHES_CONTEXT, &hashes_digest(r))
                .to_vec()
        };
    }

    /// `map` signed, as a new value.
    pub fn signed(&self, mut map: ClusterMap) -> ClusterMap {
        self.sign(&mut map);
        map
    }
}

fn unsigned(map: &ClusterMap) -> ClusterMap {
    let mut m = map.clone();
    m.owner_signature.clear();
    m.membership_signature.clear();
    m.votes.clear();
    m
}

/// What the owner's and the nodes' map signatures cover: the whole map
/// but the signatures.
pub fn full_digest(map: &ClusterMap) -> [u8; 32] {
    *blake3::hash(&unsigned(map).encode_record()).as_bytes()
}

/// What the owner's membership signature covers: the map without its
/// epoch, with down and lost nodes counted as up. Equal for two maps
/// exactly when they differ only in epoch and up/down/lost states.
pub fn membership_digest(map: &ClusterMap) -> [u8; 32] {
    let mut m = unsigned(map);
    m.epoch = 0;
    for n in &mut m.nodes {
        if n.state == NodeState::Down as i32 || n.state == NodeState::Lost as i32 {
            n.state = NodeState::Up as i32;
        }
    }
    *blake3::hash(&m.encode_record()).as_bytes()
}

/// What a reference's signature covers: chunk, erasure, referrer and
/// creation time.
pub fn reference_digest(r: &ChunkReference) -> [u8; 32] {
    let covered = ChunkReference {
        chunk_id: r.chunk_id.clone(),
        erasure: r.erasure,
        referrer: r.referrer.clone(),
        created_ms: r.created_ms,
        ..ChunkReference::default()
    };
    *blake3::hash(&covered.encode_record()).as_bytes()
}

/// What a reference's hashes signature covers: chunk, erasure, shard
/// length and shard hashes (not the referrer: any reference of the chunk
/// may carry them).
pub fn hashes_digest(r: &ChunkReference) -> [u8; 32] {
    let covered = ChunkReference {
        chunk_id: r.chunk_id.clone(),
        erasure: r.erasure,
        shard_len: r.shard_len,
        shard_hashes: r.shard_hashes.clone(),
        ..ChunkReference::default()
    };
    *blake3::hash(&covered.encode_record()).as_bytes()
}

/// Whether the owner with public key `owner` signed reference `r`, and
/// its shard hashes if it carries any.
pub fn reference_verifies(r: &ChunkReference, owner: &[u8]) -> bool {
    verifies(owner, REFERENCE_CONTEXT, &reference_digest(r), &r.signature)
        && (r.shard_hashes.is_empty()
            || verifies(
                owner,
                SHARD_HASHES_CONTEXT,
                &hashes_digest(r),
                &r.hashes_signature,
            ))
}
