//! Moving one sealed chunk's shards to and from the grid.
//!
//! Writes: shard `i` goes to the `i`-th node of the chunk's placement
//! (rendezvous order over the cluster map). A node that does not take its
//! shard (down, full, failing) hands it to the next node in the same order
//! that holds none of this chunk yet, and when the grid has fewer live
//! nodes than shards, to the live node holding the fewest. The write is
//! acknowledged only when every shard is stored and no node holds more
//! than `m` of them, so the chunk survives losing any one node at the
//! moment of the ack; otherwise it fails with [`ChunkError::Quorum`] and
//! says what was stored.
//!
//! Reads: data shards from their placement nodes first, parity when one is
//! missing or rejected, then a search of the other nodes for shards that
//! were handed off. Every missing or rejected shard is reported, for the
//! repair queue.

use crate::node_client::{ClientOptions, NodeClient, RpcError};
use crate::stragglers::{join_all_but_stragglers, Stragglers};
use crate::tls::IdentityKey;
use bytes::Bytes;
use codec::{ChunkId, ChunkKey, DomainKey, SealedChunk};
use metadata::model::{ClusterMap, Node};
use metadata::placement::{self, PlacementError};
use metadata::ShardKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(
        "write quorum not reached for chunk {chunk}: {stored} of {shards} shards stored ({detail})"
    )]
    Quorum {
        chunk: ChunkId,
        stored: usize,
        shards: usize,
        detail: String,
    },
    #[error("node {node} refused shard {index}: {source}")]
    Refused {
        node: String,
        index: usize,
        source: RpcError,
    },
    #[error("chunk {chunk} unreadable: {valid} usable shards of {needed} needed ({detail})")]
    Unreadable {
        chunk: ChunkId,
        valid: usize,
        needed: usize,
        detail: String,
    },
    #[error("chunk {chunk}: {source}")]
    Codec {
        chunk: ChunkId,
        source: codec::CodecError,
    },
}

/// The grid as one gateway sees it: the cluster map and a client per node.
#[derive(Clone)]
pub struct Grid {
    map: ClusterMap,
    clients: HashMap<String, NodeClient>,
    local_site: Option<String>,
    opts: ClientOptions,
    /// Shard homes placed lately under `map`, shared by clones.
    placed: Arc<HomesCache>,
    /// Nodes left behind lately as stragglers, shared by every clone and
    /// map of this grid (see [`Grid::suspect`]).
    suspects: Arc<Mutex<HashMap<String, std::time::Instant>>>,
}

/// How long a node that hung on a call is skipped where others can stand
/// in for it: long enough that the stages of one request do not each wait
/// for it again, short enough that a node back to its pace is soon used.
const SUSPECT_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Placement hashes a few dozen times per chunk, and a repair pass asks for
/// one chunk's homes several times (its visit, the queue order, the
/// rebuild, and again for each peer's hint): the answers, kept for a while.
#[derive(Default)]
struct HomesCache(Mutex<HashMap<(ChunkId, usize), Vec<String>>>);

/// Entries kept at most; a full cache starts over (it only saves work).
const HOMES_CACHED: usize = 4096;

impl HomesCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ChunkId, usize), Vec<String>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &(ChunkId, usize)) -> Option<Vec<String>> {
        self.lock().get(key).cloned()
    }

    fn put(&self, key: (ChunkId, usize), homes: Vec<String>) {
        let mut cache = self.lock();
        if cache.len() >= HOMES_CACHED {
            cache.clear();
        }
        cache.insert(key, homes);
    }

    fn get_or(
        &self,
        key: (ChunkId, usize),
        place: impl FnOnce() -> Result<Vec<String>, PlacementError>,
    ) -> Result<Vec<String>, PlacementError> {
        if let Some(homes) = self.get(&key) {
            return Ok(homes);
        }
        let homes = place()?;
        self.put(key, homes.clone());
        Ok(homes)
    }
}

impl Grid {
    pub fn new(map: ClusterMap, opts: ClientOptions) -> Self {
        let clients = map
            .nodes
            .iter()
            .map(|n| {
                (
                    n.id.clone(),
                    NodeClient::new(n.addr.clone(), &n.key, opts.clone()),
                )
            })
            .collect();
        Self {
            map,
            clients,
            local_site: None,
            opts,
            placed: Arc::default(),
            suspects: Arc::default(),
        }
    }

    /// The same grid under another map: clients of nodes at the same
    /// address are kept (with their connections), others made anew.
    pub fn with_map(&self, map: ClusterMap) -> Grid {
        let clients =
            map.nodes
                .iter()
                .map(|n| {
                    let kept = self.clients.get(&n.id).filter(|c| {
                        c.addr() == n.addr && c.pin() == IdentityKey::from_bytes(&n.key)
                    });
                    let client = kept.cloned().unwrap_or_else(|| {
                        NodeClient::new(n.addr.clone(), &n.key, self.opts.clone())
                    });
                    (n.id.clone(), client)
                })
                .collect();
        Grid {
            map,
            clients,
            local_site: self.local_site.clone(),
            opts: self.opts.clone(),
            placed: Arc::default(),
            suspects: self.suspects.clone(),
        }
    }

    /// Note that `node` was left behind as a straggler: for a few seconds,
    /// calls that can do without it (shard reads and writes, reference
    /// updates beyond the holders, merged scans with a quorum to spare)
    /// skip it instead of waiting for it again.
    pub fn suspect(&self, node: &str) {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(node.to_string(), std::time::Instant::now() + SUSPECT_FOR);
    }

    /// Join calls made to several nodes at once, each task answering
    /// `(node, result)`, without waiting for stragglers (see
    /// [`join_all_but_stragglers`]; `success` says which results count as
    /// an answer). The nodes of `asked` that did not answer are remembered
    /// as suspects and returned beside the answers.
    pub async fn join_calls<'a, T: 'static>(
        &self,
        tasks: &mut JoinSet<(String, T)>,
        asked: impl IntoIterator<Item = &'a String>,
        success: impl Fn(&T) -> bool,
    ) -> (Vec<(String, T)>, Vec<String>) {
        let (answers, _) = join_all_but_stragglers(tasks, |(_, r)| success(r)).await;
        let mut left_behind: Vec<String> = Vec::new();
        for node in asked {
            if !answers.iter().any(|(n, _)| n == node) && !left_behind.contains(node) {
                self.suspect(node);
                left_behind.push(node.clone());
            }
        }
        (answers, left_behind)
    }

    /// Whether `node` hung lately (see [`Grid::suspect`]).
    pub fn is_suspect(&self, node: &str) -> bool {
        let mut s = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        match s.get(node) {
            Some(until) if *until > std::time::Instant::now() => true,
            Some(_) => {
                s.remove(node);
                false
            }
            None => false,
        }
    }

    /// The site this gateway runs on: reads prefer shards held there.
    pub fn with_local_site(mut self, site: Option<String>) -> Self {
        self.local_site = site;
        self
    }

    fn is_local(&self, node_id: &str) -> bool {
        self.local_site.as_ref().is_some_and(|site| {
            self.map
                .nodes
                .iter()
                .any(|n| n.id == node_id && &n.site == site)
        })
    }

    /// The nodes that should hold chunk `id`'s `shards` shards (wrapping
    /// round when the grid has fewer placeable nodes), without repeats:
    /// where its chunk references go.
    pub fn placement(&self, id: &ChunkId, shards: usize) -> Result<Vec<String>, PlacementError> {
        Ok(self
            .homes(id, shards)?
            .into_iter()
            .map(|node| node.id.clone())
            .collect())
    }

    /// The placement node of each shard index (with wrap-round).
    pub fn shard_homes(&self, id: &ChunkId, shards: usize) -> Result<Vec<String>, PlacementError> {
        self.placed
            .get_or((*id, shards), || homes_of(self.homes(id, shards)?, shards))
    }

    /// [`shard_homes`](Self::shard_homes) under this grid's map and under
    /// `other`'s, placed together: when the maps differ only in node
    /// states (before and after a node went down), the draws are shared.
    #[allow(clippy::type_complexity)]
    pub fn shard_homes_beside(
        &self,
        other: &Grid,
        id: &ChunkId,
        shards: usize,
    ) -> (
        Result<Vec<String>, PlacementError>,
        Result<Vec<String>, PlacementError>,
    ) {
        let key = (*id, shards);
        if let (Some(a), Some(b)) = (self.placed.get(&key), other.placed.get(&key)) {
            return (Ok(a), Ok(b));
        }
        let (a, b) = placement::chunk_nodes_under_both(
            &self.map,
            shards.min(placeable(&self.map)),
            &other.map,
            shards.min(placeable(&other.map)),
            &id.0,
        );
        let a = a.and_then(|nodes| homes_of(nodes, shards));
        let b = b.and_then(|nodes| homes_of(nodes, shards));
        if let Ok(a) = &a {
            self.placed.put(key, a.clone());
        }
        if let Ok(b) = &b {
            other.placed.put(key, b.clone());
        }
        (a, b)
    }

    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    pub fn client(&self, node_id: &str) -> Option<&NodeClient> {
        self.clients.get(node_id)
    }

    /// Every placeable node, in this chunk's order: the homes of its
    /// `shards` shards, then its hand-off order.
    fn chunk_order(&self, id: &ChunkId, shards: usize) -> Result<Vec<&Node>, PlacementError> {
        placement::chunk_order(&self.map, &id.0, shards)
    }

    fn order_ids(&self, id: &ChunkId, shards: usize) -> Result<Vec<String>, PlacementError> {
        Ok(self
            .chunk_order(id, shards)?
            .into_iter()
            .map(|node| node.id.clone())
            .collect())
    }

    /// The first `shards` nodes of [`chunk_order`](Self::chunk_order) (all
    /// of it when fewer are placeable), without drawing the rest: what
    /// every reconciliation visit asks, and the full order costs a draw
    /// per node of the grid.
    fn homes(&self, id: &ChunkId, shards: usize) -> Result<Vec<&Node>, PlacementError> {
        placement::chunk_nodes(&self.map, &id.0, shards.min(placeable(&self.map)))
    }
}

fn placeable(map: &ClusterMap) -> usize {
    map.nodes.iter().filter(|n| n.placeable()).count()
}

/// Shard `i`'s home from the homes placed (fewer than the shards when
/// fewer nodes are placeable: then they wrap round).
fn homes_of(order: Vec<&Node>, shards: usize) -> Result<Vec<String>, PlacementError> {
    if order.is_empty() {
        return Err(PlacementError::NotEnoughNodes {
            needed: 1,
            available: 0,
        });
    }
    Ok((0..shards)
        .map(|i| order[i % order.len()].id.clone())
        .collect())
}

/// Where each shard of a written chunk went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkWriteReport {
    /// Node id per shard index.
    pub holders: Vec<String>,
    /// Shards stored somewhere other than their placement node.
    pub handed_off: Vec<usize>,
}

/// A node failure worth trying elsewhere, as opposed to a refusal that
/// would repeat anywhere (the shard or our credentials are bad).
fn try_elsewhere(e: &RpcError) -> bool {
    e.is_transient() || matches!(e, RpcError::InsufficientStorage(_))
}

/// Store every shard of `chunk` (see the module docs for the rule).
pub async fn put_chunk(grid: &Grid, chunk: &SealedChunk) -> Result<ChunkWriteReport, ChunkError> {
    let id = chunk.id();
    let n = chunk.shard_count();
    // Shard i's home; the rest of the chunk's order (every placeable node,
    // a draw each) only once a home fails.
    let homes = grid.shard_homes(&id, n)?;
    let mut order: Option<Vec<String>> = None;
    let (_, m) = chunk.shape();
    let shards: Vec<Bytes> = (0..n).map(|i| Bytes::from(chunk.shard(i))).collect();

    let mut holders: Vec<Option<String>> = vec![None; n];
    // Nodes tried (and failed) for each shard, and nodes known down.
    let mut failed_for: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut dead: Vec<String> = Vec::new();
    let mut last_error: BTreeMap<usize, String> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<_>, index: usize, node: String| {
        let client = grid.client(&node).cloned();
        let key = ShardKey::new(id.0, index);
        let shard = shards[index].clone();
        tasks.spawn(async move {
            let result = match (client, key) {
                (Some(c), Ok(k)) => c.put_shard(&k, shard).await,
                (None, _) => Err(RpcError::Unreachable {
                    node: node.clone(),
                    reason: "not in the cluster map".into(),
                }),
                (_, Err(e)) => Err(RpcError::Rejected {
                    status: 400,
                    message: e.to_string(),
                }),
            };
            (index, node, result)
        });
    };
    let mut planned: Vec<Option<String>> = vec![None; n];
    for (i, slot) in planned.iter_mut().enumerate() {
        // With fewer nodes than shards the placement wraps round.
        let node = homes[i].clone();
        *slot = Some(node.clone());
        if grid.is_suspect(&node) {
            // Hung lately: hand its shard off at once.
            tasks.spawn(async move {
                let e = RpcError::Unreachable {
                    node: node.clone(),
                    reason: "hung on a recent call".into(),
                };
                (i, node, Err(e))
            });
            continue;
        }
        spawn(&mut tasks, i, node);
    }
    let mut stragglers = Stragglers::new();
    loop {
        let joined = match tokio::time::timeout_at(stragglers.deadline(), tasks.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break,
            Err(_) => {
                // Shards still in flight long after the others landed:
                // their nodes are hung or overloaded. Count them as absent
                // and hand their shards to the next nodes in the chunk's
                // order, as for a node that refused.
                tasks.abort_all();
                for index in 0..n {
                    if holders[index].is_some() {
                        continue;
                    }
                    if let Some(node) = planned[index].clone() {
                        tracing::debug!(%node, index, "shard write too slow; handing off");
                        grid.suspect(&node);
                        tasks.spawn(async move {
                            let e = RpcError::Unreachable {
                                node: node.clone(),
                                reason: "too slow: no answer long after the chunk's other shards"
                                    .into(),
                            };
                            (index, node, Err(e))
                        });
                    }
                }
                // The hand-offs get a fresh allowance.
                stragglers = Stragglers::new();
                continue;
            }
        };
        let Ok((index, node, result)) = joined else {
            continue;
        };
        match result {
            Ok(()) => {
                stragglers.one_done();
                holders[index] = Some(node)
            }
            Err(e) if try_elsewhere(&e) => {
                tracing::debug!(%node, index, error = %e, "shard write failed; handing off");
                last_error.insert(index, e.to_string());
                if !dead.contains(&node) {
                    dead.push(node.clone());
                }
                failed_for[index].push(node);
                // Next node in order not dead and not already holding (or
                // about to hold) a shard of this chunk; failing that, the
                // live node with the fewest.
                let busy = |cand: &String| {
                    planned
                        .iter()
                        .chain(holders.iter())
                        .flatten()
                        .any(|h| h == cand)
                };
                if order.is_none() {
                    order = Some(grid.order_ids(&id, n)?);
                }
                let order = order.as_deref().unwrap_or_default();
                let fresh = order
                    .iter()
                    .find(|c| !dead.contains(c) && !busy(c) && !grid.is_suspect(c));
                let fallback = fresh.cloned().or_else(|| {
                    order
                        .iter()
                        .filter(|c| !dead.contains(c) && !failed_for[index].contains(c))
                        .min_by_key(|c| {
                            holders
                                .iter()
                                .flatten()
                                .chain(planned.iter().flatten())
                                .filter(|h| h == c)
                                .count()
                        })
                        .cloned()
                });
                match fallback {
                    Some(next) => {
                        planned[index] = Some(next.clone());
                        spawn(&mut tasks, index, next);
                    }
                    None => planned[index] = None,
                }
            }
            Err(e) => {
                tasks.abort_all();
                return Err(ChunkError::Refused {
                    node,
                    index,
                    source: e,
                });
            }
        }
    }
    let stored = holders.iter().filter(|h| h.is_some()).count();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for h in holders.iter().flatten() {
        *per_node.entry(h).or_default() += 1;
    }
    let most = per_node.values().copied().max().unwrap_or(0);
    if stored < n || (m > 0 && most > m) {
        let detail = if stored < n {
            let missing: Vec<String> = (0..n)
                .filter(|i| holders[*i].is_none())
                .map(|i| {
                    format!(
                        "shard {i}: {}",
                        last_error.get(&i).map_or("not attempted", |s| s)
                    )
                })
                .collect();
            missing.join("; ")
        } else {
            format!("one node would hold {most} shards, more than m = {m}")
        };
        return Err(ChunkError::Quorum {
            chunk: id,
            stored,
            shards: n,
            detail,
        });
    }
    let holders: Vec<String> = holders.into_iter().flatten().collect();
    let handed_off = (0..n).filter(|i| holders[*i] != homes[*i]).collect();
    Ok(ChunkWriteReport {
        holders,
        handed_off,
    })
}

/// What a read noticed, for the repair queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkReadReport {
    /// Shard indexes that no node asked had.
    pub missing: Vec<usize>,
    /// (shard index, node) pairs whose shard was rejected as corrupt.
    pub corrupt: Vec<(usize, String)>,
    /// Shards read from a node other than their placement node.
    pub found_elsewhere: Vec<(usize, String)>,
}

/// The key that opens a chunk.
#[derive(Clone, Debug)]
pub enum ChunkSecret {
    /// Convergent encryption in a key domain (the id is checked too).
    Domain(DomainKey),
    /// An explicit key (customer keys).
    Key(ChunkKey),
}

/// Read and open chunk `id` (`k` data + `m` parity shards) of `domain`.
pub async fn get_chunk(
    grid: &Grid,
    domain: &DomainKey,
    id: &ChunkId,
    k: usize,
    m: usize,
) -> Result<(Vec<u8>, ChunkReadReport), ChunkError> {
    get_chunk_with(grid, &ChunkSecret::Domain(domain.clone()), id, k, m).await
}

/// Read and open chunk `id` with `secret`.
pub async fn get_chunk_with(
    grid: &Grid,
    secret: &ChunkSecret,
    id: &ChunkId,
    k: usize,
    m: usize,
) -> Result<(Vec<u8>, ChunkReadReport), ChunkError> {
    let n = k + m;
    // The rest of the chunk's order is drawn only if a search is needed.
    let homes = grid.shard_homes(id, n)?;
    let mut report = ChunkReadReport::default();
    // index -> (node, bytes)
    let mut have: BTreeMap<usize, (String, Bytes)> = BTreeMap::new();
    let mut tried: Vec<Vec<String>> = vec![Vec::new(); n];
    let primary = |i: usize| homes.get(i).cloned();

    // Data shards first (no decoding), then parity as needed, nearest
    // site first, then a search.
    let mut wanted: Vec<usize> = (0..k).collect();
    let mut parity: Vec<usize> = (k..n).collect();
    parity.sort_by_key(|i| primary(*i).is_none_or(|node| !grid.is_local(&node)));
    let mut parity = parity.into_iter();
    let mut searched_again = false;
    loop {
        let fetched = fetch(grid, id, &wanted, &primary, &mut tried).await;
        for (index, node, result) in fetched {
            if let Some(bytes) = result {
                have.insert(index, (node, bytes));
            }
        }
        let usable = have.len();
        if usable >= k {
            match open(secret, id, &have).await {
                Ok((plain, rejected)) => {
                    report.corrupt.extend(rejected);
                    report.missing = (0..n).filter(|i| !have.contains_key(i)).collect();
                    report.missing.retain(|i| {
                        // Only shards we looked for and did not find count.
                        !tried[*i].is_empty()
                    });
                    report.found_elsewhere = have
                        .iter()
                        .filter(|(i, (node, _))| Some(node) != primary(**i).as_ref())
                        .map(|(i, (node, _))| (*i, node.clone()))
                        .collect();
                    return Ok((plain, report));
                }
                Err(OpenFailure::Rejected(bad)) => {
                    for (index, node) in bad {
                        have.remove(&index);
                        report.corrupt.push((index, node));
                    }
                }
                Err(OpenFailure::Fatal(source)) => {
                    return Err(ChunkError::Codec { chunk: *id, source });
                }
            }
        }
        // Need more: the next untried parity shards from their placement
        // nodes, or, once those are exhausted, any missing shard from any
        // node not yet asked for it.
        let short = k.saturating_sub(have.len());
        wanted.clear();
        while wanted.len() < short {
            let Some(p) = parity.next() else { break };
            wanted.push(p);
        }
        if wanted.is_empty() {
            let order = grid.order_ids(id, n)?;
            let mut found = search(grid, id, n, &order, &have, &mut tried).await;
            if found.is_empty() && !searched_again {
                // Repair may be moving a shard from one node to another
                // (handed back to its home): asked before it arrived at the
                // one and after it left the other, it was missed. One more
                // search a moment later finds it where it landed.
                searched_again = true;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                for t in tried.iter_mut() {
                    t.clear();
                }
                found = search(grid, id, n, &order, &have, &mut tried).await;
            }
            if found.is_empty() {
                report.missing = (0..n).filter(|i| !have.contains_key(i)).collect();
                return Err(ChunkError::Unreadable {
                    chunk: *id,
                    valid: have.len(),
                    needed: k,
                    detail: format!("missing {:?}, corrupt {:?}", report.missing, report.corrupt),
                });
            }
            for (index, node, bytes) in found {
                have.insert(index, (node, bytes));
            }
        }
    }
}

type Fetched = Vec<(usize, String, Option<Bytes>)>;

/// Get shards `wanted` from their placement nodes, in parallel.
async fn fetch(
    grid: &Grid,
    id: &ChunkId,
    wanted: &[usize],
    primary: &impl Fn(usize) -> Option<String>,
    tried: &mut [Vec<String>],
) -> Fetched {
    let mut tasks = JoinSet::new();
    let mut asked = Vec::new();
    for &index in wanted {
        let Some(node) = primary(index) else { continue };
        tried[index].push(node.clone());
        if grid.is_suspect(&node) {
            // Hung lately: read around it at once.
            continue;
        }
        asked.push(node.clone());
        let client = grid.client(&node).cloned();
        let key = ShardKey::new(id.0, index);
        tasks.spawn(async move {
            let bytes = match (client, key) {
                (Some(c), Ok(k)) => match c.get_shard(&k, None).await {
                    Ok(b) => Some(b),
                    Err(e) => {
                        if !matches!(e, RpcError::NotFound) {
                            tracing::debug!(%node, index, error = %e, "shard read failed");
                        }
                        None
                    }
                },
                _ => None,
            };
            (node, (index, bytes))
        });
    }
    let (out, left_behind) = grid
        .join_calls(&mut tasks, &asked, |(_, b)| b.is_some())
        .await;
    if !left_behind.is_empty() {
        // A hung or overloaded node: the caller reads around it (parity
        // shards for what is missing) instead of waiting out the RPC
        // timeout.
        tracing::debug!(nodes = ?left_behind, "shard reads too slow; reading around them");
    }
    out.into_iter()
        .map(|(node, (index, bytes))| (index, node, bytes))
        .collect()
}

/// Ask every live node not yet asked which of the missing shards it holds
/// (one batched call each), and fetch what turns up.
async fn search(
    grid: &Grid,
    id: &ChunkId,
    n: usize,
    order: &[String],
    have: &BTreeMap<usize, (String, Bytes)>,
    tried: &mut [Vec<String>],
) -> Vec<(usize, String, Bytes)> {
    let missing: Vec<usize> = (0..n).filter(|i| !have.contains_key(i)).collect();
    let mut tasks = JoinSet::new();
    for node in order {
        let ask: Vec<usize> = missing
            .iter()
            .copied()
            .filter(|i| !tried[*i].contains(node))
            .collect();
        if ask.is_empty() {
            continue;
        }
        for &i in &ask {
            tried[i].push(node.clone());
        }
        let Some(client) = grid.client(node).cloned() else {
            continue;
        };
        let node = node.clone();
        let keys: Vec<ShardKey> = ask
            .iter()
            .filter_map(|i| ShardKey::new(id.0, *i).ok())
            .collect();
        tasks.spawn(async move {
            let mut got = Vec::new();
            let Ok(lens) = client.has_shards(&keys).await else {
                return got;
            };
            for (key, len) in keys.iter().zip(lens) {
                if len == 0 {
                    continue;
                }
                if let Ok(b) = client.get_shard(key, None).await {
                    got.push((key.index as usize, node.clone(), b));
                }
            }
            got
        });
    }
    let mut found: Vec<(usize, String, Bytes)> = Vec::new();
    // Any answer, even "none here", shows what a live node's pace is.
    let (answers, _) = join_all_but_stragglers(&mut tasks, |_| true).await;
    for r in answers {
        for (i, node, b) in r {
            if !found.iter().any(|(j, _, _)| *j == i) {
                found.push((i, node, b));
            }
        }
    }
    found
}

enum OpenFailure {
    /// These (index, node) shards were bad; try again without them.
    Rejected(Vec<(usize, String)>),
    Fatal(codec::CodecError),
}

/// Open on the blocking pool (decryption and decoding are CPU work).
async fn open(
    secret: &ChunkSecret,
    id: &ChunkId,
    have: &BTreeMap<usize, (String, Bytes)>,
) -> Result<(Vec<u8>, Vec<(usize, String)>), OpenFailure> {
    let positions: Vec<(usize, String)> = have.iter().map(|(i, (n, _))| (*i, n.clone())).collect();
    let shards: Vec<Bytes> = have.values().map(|(_, b)| b.clone()).collect();
    let secret = secret.clone();
    let id = *id;
    let joined = tokio::task::spawn_blocking(move || {
        codec::with_opener(|opener| match &secret {
            ChunkSecret::Domain(domain) => opener.open(domain, &id, &shards),
            ChunkSecret::Key(key) => {
                let mut out = Vec::new();
                let report = opener.open_with_key(&id, key, &shards, &mut out)?;
                Ok((out, report))
            }
        })
    })
    .await;
    let result = match joined {
        Ok(r) => r,
        Err(e) => {
            return Err(OpenFailure::Fatal(codec::CodecError::BadHeader(
                if e.is_panic() {
                    "decoder panicked"
                } else {
                    "decoder cancelled"
                },
            )))
        }
    };
    match result {
        Ok((plain, report)) => {
            let bad = report
                .rejected
                .iter()
                .filter_map(|r| positions.get(r.position).cloned())
                .collect();
            Ok((plain, bad))
        }
        Err(codec::CodecError::TooFewShards { .. })
        | Err(codec::CodecError::AuthenticationFailed) => {
            // Every shard we hold is suspect only if the opener could not
            // name culprits; hashing each one tells.
            let bad: Vec<(usize, String)> = have
                .iter()
                .filter(|(_, (_, b))| codec::shard::verify(b).is_err())
                .map(|(i, (n, _))| (*i, n.clone()))
                .collect();
            if bad.is_empty() {
                Err(OpenFailure::Fatal(codec::CodecError::AuthenticationFailed))
            } else {
                Err(OpenFailure::Rejected(bad))
            }
        }
        Err(e) => Err(OpenFailure::Fatal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metadata::model::NodeState;

    fn grid() -> Grid {
        let nodes = (0..8)
            .map(|i| Node {
                id: format!("n{i}"),
                addr: format!("127.0.0.1:{}", 9000 + i),
                site: format!("site-{}", i / 2),
                capacity_bytes: 1 << 40,
                state: NodeState::Up as i32,
                key: vec![i as u8; 32],
                untrusted_reason: String::new(),
            })
            .collect();
        Grid::new(
            ClusterMap {
                epoch: 1,
                nodes,
                clients: vec![],
                ..ClusterMap::default()
            },
            ClientOptions::default(),
        )
    }

    /// Cached homes are the placement's, before and after the cache fills
    /// and starts over, and a grid under another map does not see them.
    #[test]
    fn cached_homes_are_the_placements() {
        let g = grid();
        let place = |g: &Grid, id: &ChunkId| -> Vec<String> {
            placement::chunk_nodes(&g.map, &id.0, 6)
                .unwrap()
                .into_iter()
                .map(|n| n.id.clone())
                .collect()
        };
        let ids: Vec<ChunkId> = (0..HOMES_CACHED as u64 + 100)
            .map(|i| ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        for _ in 0..2 {
            for id in &ids {
                assert_eq!(g.shard_homes(id, 6).unwrap(), place(&g, id));
            }
        }
        let mut map = g.map.clone();
        map.nodes[0].state = NodeState::Down as i32;
        let other = g.with_map(map);
        for id in &ids[..200] {
            let homes = other.shard_homes(id, 6).unwrap();
            assert!(!homes.contains(&"n0".to_string()));
            assert_eq!(homes, place(&other, id));
        }
    }
}
