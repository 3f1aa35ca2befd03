//! Shard files as they lie on the nodes' disks, for tests that check where
//! shards are (and are not) after faults and repair.
#![allow(dead_code)]

use ::grid::chunk_io::Grid;
use ::grid::ClientOptions;
use codec::ChunkId;
use metadata::model::ClusterMap;
use metadata::ShardKey;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every shard file under `dir` (a node's data dir, or a folder of them).
pub fn shard_files(dir: &Path) -> BTreeMap<PathBuf, ShardKey> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                // The metadata store's files are not shards.
                if p.file_name().is_some_and(|n| n != "meta") {
                    stack.push(p);
                }
            } else if let Some(key) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| ShardKey::from_name(n).ok())
            {
                out.insert(p, key);
            }
        }
    }
    out
}

/// Chunks with a shard anywhere under `root`, each with `shards` shards
/// (the erasure shape the test wrote them with: a shard missing from every
/// disk must still count as missing).
pub fn chunks_on_disk(root: &Path, shards: usize) -> BTreeMap<[u8; 32], usize> {
    shard_files(root)
        .values()
        .map(|k| (k.chunk, shards))
        .collect()
}

/// (node, chunk, index) of every shard file under `root`, where each
/// node's files live in a folder named by its id.
pub fn held(root: &Path) -> BTreeSet<(String, [u8; 32], u8)> {
    shard_files(root)
        .iter()
        .filter_map(|(p, k)| {
            let node = p.strip_prefix(root).ok()?.components().next()?;
            Some((
                node.as_os_str().to_string_lossy().into_owned(),
                k.chunk,
                k.index,
            ))
        })
        .collect()
}

/// Under `root`, where each node's files live in a folder named by its id:
/// (shards missing from their home under `map`, shards held anywhere else).
pub fn misplaced(
    root: &Path,
    map: &ClusterMap,
    chunks: &BTreeMap<[u8; 32], usize>,
) -> (usize, usize) {
    let g = Grid::new(map.clone(), ClientOptions::default());
    let held = held(root);
    let (mut missing, mut stale) = (0, 0);
    for (id, n) in chunks {
        let homes = g.shard_homes(&ChunkId(*id), *n).unwrap();
        for (i, home) in homes.iter().enumerate() {
            if !held.contains(&(home.clone(), *id, i as u8)) {
                missing += 1;
            }
        }
        stale += held
            .iter()
            .filter(|(node, c, i)| c == id && homes.get(*i as usize) != Some(node))
            .count();
    }
    (missing, stale)
}

/// The shards counted as stale by [`misplaced`]: (node, chunk hex, index,
/// homes of the chunk), for failure messages.
pub fn stale_list(
    root: &Path,
    map: &ClusterMap,
    chunks: &BTreeMap<[u8; 32], usize>,
) -> Vec<(String, String, u8, Vec<String>)> {
    let g = Grid::new(map.clone(), ClientOptions::default());
    let mut out = Vec::new();
    for (p, k) in shard_files(root) {
        let Some(node) = p
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.components().next())
        else {
            continue;
        };
        let node = node.as_os_str().to_string_lossy().into_owned();
        let Some(n) = chunks.get(&k.chunk) else {
            continue;
        };
        let homes = g.shard_homes(&ChunkId(k.chunk), *n).unwrap();
        if homes.get(k.index as usize) != Some(&node) {
            out.push((node, hex::encode(k.chunk), k.index, homes));
        }
    }
    out
}

/// Chunks that some node answering holds a reference to: the chunks
/// acknowledged objects (or parts) use, and not those of a put that
/// failed, whose shards nobody must keep.
pub async fn referenced_chunks(nodes: &[::grid::NodeClient]) -> BTreeSet<[u8; 32]> {
    let mut out = BTreeSet::new();
    for c in nodes {
        let mut after = None;
        loop {
            let q = ::grid::node_api::RefQuery {
                chunk_id: None,
                start_after: after.clone(),
                limit: 1000,
            };
            let Ok(page) = c.refs_list(q).await else {
                break;
            };
            for r in &page.refs {
                if let Ok(id) = <[u8; 32]>::try_from(r.chunk_id.as_slice()) {
                    out.insert(id);
                }
            }
            match page.next_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    out
}

/// Poll `check` every 250 ms until it holds or `limit` passes.
pub async fn wait_for<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
