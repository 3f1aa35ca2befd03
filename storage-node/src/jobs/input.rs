//! Reading a task's input where it lies: for each chunk, the data shards
//! this node holds come from its own disk, the others from their home
//! nodes (parity only when a data shard cannot be had, this node's own
//! first), and the chunk is opened here with the key the task brought.
//! Every byte is counted by where it came from: own disk, own site, other
//! sites.

use crate::node::Node;
use bytes::Bytes;
use codec::{ChunkId, ChunkKey, Opener};
use grid::chunk_io::{self, ChunkSecret, Grid};
use metadata::model::ChunkRef;
use metadata::ShardKey;
use std::sync::Arc;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("input chunk {0} malformed")]
    Malformed(String),
    #[error("input chunk {chunk} unreadable: {reason}")]
    Unreadable { chunk: String, reason: String },
    /// The inputs streamed with the request did not arrive whole.
    #[error("input stream: {0}")]
    Stream(String),
}

/// Shard bytes by where they were read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadBytes {
    pub local: u64,
    pub site: u64,
    pub remote: u64,
}

impl ReadBytes {
    pub fn add(&mut self, o: ReadBytes) {
        self.local += o.local;
        self.site += o.site;
        self.remote += o.remote;
    }
}

/// Where shard `index` of the chunk came from.
enum Source {
    Local,
    Site,
    Remote,
}

/// Read and open one chunk; its plaintext and where its bytes came from.
pub async fn read_chunk(
    node: &Arc<Node>,
    grid: &Grid,
    chunk: &ChunkRef,
    key: [u8; 32],
) -> Result<(Vec<u8>, ReadBytes), InputError> {
    let id = <[u8; 32]>::try_from(chunk.id.as_slice())
        .map(ChunkId)
        .map_err(|_| InputError::Malformed(hex::encode(&chunk.id)))?;
    let e = chunk
        .erasure
        .ok_or_else(|| InputError::Malformed(id.to_hex()))?;
    let (k, n) = (e.data as usize, e.data as usize + e.parity as usize);
    let unreadable = |reason: String| InputError::Unreadable {
        chunk: id.to_hex(),
        reason,
    };
    let homes = grid
        .shard_homes(&id, n)
        .map_err(|e| unreadable(e.to_string()))?;
    let mut shards: Vec<Bytes> = Vec::with_capacity(k);
    let mut bytes = ReadBytes::default();
    // Data shards, then parity, each round asking for as many as are
    // still short; local ones are read first within a round.
    let mut rounds: Vec<Vec<usize>> = vec![(0..k).collect()];
    let mut parity: Vec<usize> = (k..n).collect();
    parity.sort_by_key(|&i| !holds(node, &id, i));
    let mut parity = parity.into_iter();
    while let Some(wanted) = rounds.pop() {
        for (data, source) in fetch(node, grid, &id, &homes, &wanted).await {
            let len = data.len() as u64;
            match source {
                Source::Local => bytes.local += len,
                Source::Site => bytes.site += len,
                Source::Remote => bytes.remote += len,
            }
            shards.push(data);
        }
        let short = k.saturating_sub(shards.len());
        let next: Vec<usize> = parity.by_ref().take(short).collect();
        if !next.is_empty() {
            rounds.push(next);
        }
    }
    let secret = ChunkKey::from_bytes(key);
    if shards.len() >= k {
        let opened = {
            let secret = secret.clone();
            tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                Opener::new()
                    .and_then(|mut o| o.open_with_key(&id, &secret, &shards, &mut out))
                    .map(|_| out)
            })
            .await
        };
        if let Ok(Ok(plain)) = opened {
            return Ok((plain, bytes));
        }
    }
    // Shards missing from their homes (handed off, being repaired) or
    // damaged: the object layer's full read searches the grid and names
    // bad shards. Its bytes are counted as remote (it may have read
    // anywhere).
    let (plain, _) = chunk_io::get_chunk_with(grid, &ChunkSecret::Key(secret), &id, k, n - k)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    bytes.remote += u64::from(chunk.shard_len) * k as u64;
    Ok((plain, bytes))
}

fn holds(node: &Node, id: &ChunkId, index: usize) -> bool {
    ShardKey::new(id.0, index).is_ok_and(|k| node.store.contains(&k))
}

/// Shards `wanted`: those on this node's disk, the others from their
/// homes in parallel; the ones that could not be had are left out.
async fn fetch(
    node: &Arc<Node>,
    grid: &Grid,
    id: &ChunkId,
    homes: &[String],
    wanted: &[usize],
) -> Vec<(Bytes, Source)> {
    let mut out = Vec::new();
    let mut remote = JoinSet::new();
    for &i in wanted {
        let Ok(key) = ShardKey::new(id.0, i) else {
            continue;
        };
        if node.store.contains(&key) {
            let n = node.clone();
            let read = tokio::task::spawn_blocking(move || n.store.read(&key, None)).await;
            if let Ok(Ok(data)) = read {
                out.push((Bytes::from(data), Source::Local));
                continue;
            }
        }
        let Some(home) = homes.get(i) else { continue };
        if home == &node.id {
            // Ours by placement but not on our disk: the fallback search
            // finds where it went.
            continue;
        }
        let Some(client) = grid.client(home).cloned() else {
            continue;
        };
        let same_site = grid
            .map()
            .nodes
            .iter()
            .any(|m| &m.id == home && m.site == node.site);
        remote.spawn(async move {
            client.get_shard(&key, None).await.ok().map(|b| {
                (
                    b,
                    if same_site {
                        Source::Site
                    } else {
                        Source::Remote
                    },
                )
            })
        });
    }
    while let Some(r) = remote.join_next().await {
        if let Ok(Some(got)) = r {
            out.push(got);
        }
    }
    out
}
