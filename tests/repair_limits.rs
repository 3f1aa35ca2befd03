//! Self-healing that knows when to stop, on an in-process grid (real
//! metadata store, real shard files, real RPC on loopback), passes driven by hand:
//!
//! - a chunk fewer than `k` good shards of exist anywhere is listed as
//!   damaged, with the objects that refer to it, and later passes leave it
//!   alone instead of asking every peer again; a new map or a hint has it
//!   tried again, and it leaves the list once it can be rebuilt;
//! - a node whose shard store is full pauses rebuilds instead of pulling
//!   shards from its peers on every pass, and resumes once it has room.
//!
//! Nothing here measures time: the bounds are on counts (rebuild
//! failures, shard GETs the peers served) over a number of passes.

mod support;

use codec::{ChunkId, SealedChunk};
use metadata::model::{ChunkReference, ErasureSpec, Referrer, BUCKET_ID_LEN, VERSION_ID_LEN};
use std::time::Duration;
use storage_node::config::RepairConfig;
use support::grid::TestGrid;
use support::shards::wait_for;
use support::{sealed, shard_key};

const K: usize = 4;
const M: usize = 2;
const N: usize = K + M;

fn referrer(key: &str) -> Referrer {
    Referrer {
        bucket_id: vec![0xb1; BUCKET_ID_LEN],
        key_hash: blake3::hash(key.as_bytes()).as_bytes()[..16].to_vec(),
        version: vec![0x7e; VERSION_ID_LEN],
        part_number: 0,
    }
}

/// A reference as a gateway writes it: with the shard length and each
/// shard's checksum when it sealed the chunk itself (`c`), without either
/// when it referenced the chunk before storing it (dedup: reference first).
fn reference(id: [u8; 32], c: Option<&SealedChunk>, key: &str) -> ChunkReference {
    let (shard_len, shard_hashes) = match c {
        Some(c) => (
            c.shard(0).len() as u32,
            (0..N)
                .map(|i| {
                    let h = c.header(i);
                    h[h.len() - 32..].to_vec()
                })
                .collect(),
        ),
        None => (0, Vec::new()),
    };
    let mut r = ChunkReference {
        chunk_id: id.to_vec(),
        erasure: Some(ErasureSpec::new(K as u32, M as u32)),
        shard_len,
        referrer: Some(referrer(key)),
        created_ms: 1,
        shard_hashes,
        ..ChunkReference::default()
    };
    support::owner().sign_reference(&mut r);
    r
}

fn homes(grid: &TestGrid, id: [u8; 32]) -> Vec<String> {
    grid.grid().shard_homes(&ChunkId(id), N).unwrap()
}

/// Give every home of the chunk the reference.
async fn add_refs(grid: &TestGrid, r: &ChunkReference) {
    let id: [u8; 32] = r.chunk_id.as_slice().try_into().unwrap();
    let g = grid.grid();
    for home in homes(grid, id) {
        g.client(&home)
            .unwrap()
            .refs_add(vec![r.clone()])
            .await
            .unwrap();
    }
}

/// Store shard `i` of `c` on its home.
async fn put_shard(grid: &TestGrid, c: &SealedChunk, i: usize) {
    let home = &homes(grid, c.id().0)[i];
    grid.grid()
        .client(home)
        .unwrap()
        .put_shard(&shard_key(c, i), c.shard(i).into())
        .await
        .unwrap();
}

async fn repair_status(grid: &TestGrid, node: &str) -> grid::node_api::RepairStatus {
    grid.grid()
        .client(node)
        .unwrap()
        .status()
        .await
        .unwrap()
        .repair
        .unwrap()
}

/// Shard GETs every node but `except` served (whatever their answer): the
/// load a rebuilding node puts on its peers.
fn shard_gets_served(grid: &TestGrid, except: &str) -> u64 {
    grid.nodes
        .iter()
        .flatten()
        .filter(|n| n.node.id != except)
        .map(|n| {
            metric(
                &n.node.metrics.render(),
                "gridstore_node_requests_total{op=\"get_shard\"",
            )
        })
        .sum()
}

/// The sum of the samples in `text` whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn repair_metric(grid: &TestGrid, node: &str, what: &str) -> u64 {
    let text = grid.node(node).node.metrics.render();
    metric(&text, &format!("gridstore_node_repair{{what=\"{what}\"}}"))
}

async fn holds(grid: &TestGrid, node: &str, c: &SealedChunk, i: usize) -> bool {
    let lens = grid
        .grid()
        .client(node)
        .unwrap()
        .has_shards(&[shard_key(c, i)])
        .await
        .unwrap();
    lens[0] > 0
}

/// Two chunks that cannot be rebuilt: one referenced but never stored (a
/// gateway died between its references and its shards), one with only 3 of
/// the 4 shards a rebuild needs left. Every home lacking a shard lists
/// them as damaged, with their referrers, and does not try them again pass
/// after pass; a new map tries them once more; a hint after a shard came
/// back rebuilds one, a shard put back by hand clears it where it was
/// missing, and references removed clear the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_too_few_shards_of_exist_is_listed_as_damaged_and_left_alone() {
    let grid = TestGrid::start_healing(3, 2, RepairConfig::manual()).await;
    let g = grid.grid();

    let never_stored = [0x5a; 32];
    let ref_a = reference(never_stored, None, "photos/never-written.jpg");
    add_refs(&grid, &ref_a).await;
    let b = sealed(60_000, K, M, 11);
    let b_id = b.id().0;
    for i in 0..3 {
        put_shard(&grid, &b, i).await;
    }
    add_refs(
        &grid,
        &reference(b_id, Some(&b), "videos/three-shards-left.mp4"),
    )
    .await;
    let b_homes = homes(&grid, b_id);
    // x lacks shard 3 of b, y shard 4.
    let (x, y) = (b_homes[3].clone(), b_homes[4].clone());

    // y first: a node's first pass under a map gives its peers the
    // references, with hints, and a hint is a reason to try again.
    let r = grid.node(&y).reconcile().await.unwrap();
    assert_eq!(r.damaged, 2, "{r:?}");
    let first = grid.node(&x).reconcile().await.unwrap();
    assert_eq!(
        (first.damaged, first.failed, first.rebuilt),
        (2, 0, 0),
        "{first:?}"
    );

    let st = repair_status(&grid, &x).await;
    assert_eq!(st.damaged_chunks, 2);
    assert_eq!(st.damaged.len(), 2);
    assert_eq!(
        st.missing, 0,
        "damaged chunks are not counted as missing shards"
    );
    let listed = |st: &grid::node_api::RepairStatus, id: [u8; 32]| {
        st.damaged.iter().find(|d| d.chunk_id == id).cloned()
    };
    let a = listed(&st, never_stored).expect("the never-stored chunk is listed");
    assert_eq!((a.shards_found, a.shards_needed), (0, K as u32));
    assert_eq!(a.referrers, vec![referrer("photos/never-written.jpg")]);
    assert_eq!(a.referrer_count, 1);
    let bd = listed(&st, b_id).expect("the chunk with 3 shards left is listed");
    assert_eq!((bd.shards_found, bd.shards_needed), (3, K as u32));
    assert_eq!(bd.referrers, vec![referrer("videos/three-shards-left.mp4")]);
    assert!(bd.first_found_ms > 0);
    assert_eq!(repair_metric(&grid, &x, "damaged_chunks"), 2);
    let failed = st.failed_rebuilds;
    assert_eq!(failed, 2);

    // Later passes leave them alone: no rebuild tried, no peer asked.
    let gets = shard_gets_served(&grid, &x);
    for _ in 0..4 {
        let r = grid.node(&x).reconcile().await.unwrap();
        assert_eq!(
            (r.left_damaged, r.damaged, r.failed, r.missing),
            (2, 0, 0, 0),
            "{r:?}"
        );
    }
    let st = repair_status(&grid, &x).await;
    assert_eq!(
        st.failed_rebuilds, failed,
        "damaged chunks were tried again"
    );
    assert_eq!(st.damaged_chunks, 2);
    assert_eq!(
        shard_gets_served(&grid, &x),
        gets,
        "peers were asked for shards again"
    );

    // A new map may bring shards back: both are tried once more, and stay
    // listed (first found when they were first found).
    let mut map = grid.map.clone();
    map.epoch += 1;
    let map = support::signed_map(map);
    g.client(&x).unwrap().put_map(&map).await.unwrap();
    let r = grid.node(&x).reconcile().await.unwrap();
    assert_eq!((r.damaged, r.failed), (2, 0), "{r:?}");
    let r = grid.node(&x).reconcile().await.unwrap();
    assert_eq!((r.left_damaged, r.damaged), (2, 0), "{r:?}");
    let st = repair_status(&grid, &x).await;
    assert_eq!(st.failed_rebuilds, failed + 2);
    assert_eq!(listed(&st, b_id).unwrap().first_found_ms, bd.first_found_ms);

    // A fourth shard of b comes back (on y, put back by hand). A pass on y
    // finds its shard whole: b is no damage of y's any more.
    put_shard(&grid, &b, 4).await;
    grid.node(&y).reconcile().await.unwrap();
    let st_y = repair_status(&grid, &y).await;
    assert!(listed(&st_y, b_id).is_none(), "{st_y:?}");
    assert_eq!(st_y.damaged_chunks, 1);

    // x, told nothing, still leaves b alone; a hint naming b has it
    // rebuilt, and it leaves the list.
    let r = grid.node(&x).reconcile().await.unwrap();
    assert_eq!((r.left_damaged, r.rebuilt), (2, 0), "{r:?}");
    g.client(&x)
        .unwrap()
        .repair_hint(&[shard_key(&b, 3)], false)
        .await
        .unwrap();
    let r = grid.node(&x).reconcile().await.unwrap();
    assert_eq!((r.rebuilt, r.left_damaged), (1, 1), "{r:?}");
    assert!(holds(&grid, &x, &b, 3).await);
    let st = repair_status(&grid, &x).await;
    assert_eq!(st.damaged_chunks, 1);
    assert!(listed(&st, b_id).is_none());
    assert_eq!(repair_metric(&grid, &x, "damaged_chunks"), 1);

    // The never-stored chunk's object is deleted: once its references are
    // gone a full pass forgets it.
    g.client(&x)
        .unwrap()
        .refs_remove(vec![ref_a])
        .await
        .unwrap();
    grid.node(&x).reconcile().await.unwrap();
    let st = repair_status(&grid, &x).await;
    assert_eq!((st.damaged_chunks, st.damaged.len()), (0, 0), "{st:?}");
    assert_eq!(repair_metric(&grid, &x, "damaged_chunks"), 0);
}

/// `count` chunks of the same size, each stored on every home but
/// `without`, and referenced on every home as `sealed` says (with the
/// shard length and checksums, or without, as a dedup-first reference).
async fn chunks_missing_on(
    grid: &TestGrid,
    without: &str,
    count: u64,
    with_lengths: bool,
) -> Vec<SealedChunk> {
    let mut out = Vec::new();
    for seed in 0..count {
        let c = sealed(40_000, K, M, 100 + seed);
        for (i, home) in homes(grid, c.id().0).iter().enumerate() {
            if home != without {
                put_shard(grid, &c, i).await;
            }
        }
        let key = format!("full/{seed}");
        let r = reference(c.id().0, with_lengths.then_some(&c), &key);
        add_refs(grid, &r).await;
        out.push(c);
    }
    out
}

/// Restart `node` with a shard quota of `quota` bytes (its data kept).
async fn restart_with_quota(grid: &mut TestGrid, node: &str, quota: u64) {
    grid.kill(node).await;
    let i = grid.index_of(node);
    grid.cfgs[i].quota_bytes = Some(quota);
    grid.restart(node).await;
}

/// A node whose store has room for half a shard must rebuild six. It pulls
/// no shard from its peers (it checks its room first), pauses rebuilds and
/// says so in its status, however many passes run meanwhile; once space is
/// freed, rebuilds resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_store_pauses_rebuilds_and_fetches_nothing_until_there_is_room() {
    let mut grid = TestGrid::start_healing(3, 2, RepairConfig::manual()).await;
    let x = grid.map.nodes[0].id.clone();
    // What fills x: one big unreferenced shard (collection is off).
    let filler = sealed(8 * K * 40_000, K, M, 7);
    let filler_len = filler.shard(0).len() as u64;
    let shard_len = sealed(40_000, K, M, 100).shard(0).len() as u64;
    assert!(filler_len > 6 * shard_len);
    restart_with_quota(&mut grid, &x, filler_len + shard_len / 2).await;
    let client = grid.grid().client(&x).unwrap().clone();
    client
        .put_shard(&shard_key(&filler, 0), filler.shard(0).into())
        .await
        .unwrap();
    let chunks = chunks_missing_on(&grid, &x, 6, true).await;

    let gets = shard_gets_served(&grid, &x);
    let r = grid.node(&x).reconcile().await.unwrap();
    assert_eq!((r.missing, r.rebuilt, r.failed), (6, 0, 0), "{r:?}");
    assert_eq!(r.deferred, 6, "{r:?}");
    let st = repair_status(&grid, &x).await;
    assert!(
        st.rebuilds_paused_until_ms > grid::clock::now_ms(),
        "status says paused: {st:?}"
    );
    assert_eq!(st.store_full_pauses, 1);
    assert_eq!(st.missing, 6);
    assert_eq!(st.failed_rebuilds, 0);
    assert_eq!(repair_metric(&grid, &x, "store_full_pauses"), 1);

    // Passes go on (hints, the interval): none pulls a shard.
    for _ in 0..10 {
        let r = grid.node(&x).reconcile().await.unwrap();
        assert_eq!((r.rebuilt, r.failed), (0, 0), "{r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        shard_gets_served(&grid, &x),
        gets,
        "a node with no room fetched shards from its peers"
    );
    let st = repair_status(&grid, &x).await;
    // One pause (another if one ran out meanwhile), never one a pass.
    assert!((1..=3).contains(&st.store_full_pauses), "{st:?}");

    // Room again: rebuilds resume once the pause ends.
    assert!(client.delete_shard(&shard_key(&filler, 0)).await.unwrap());
    let healed = wait_for(Duration::from_secs(120), || async {
        let r = grid.node(&x).reconcile().await.unwrap();
        r.missing == 0
    })
    .await;
    assert!(healed, "rebuilds did not resume once there was room");
    for c in &chunks {
        let i = homes(&grid, c.id().0).iter().position(|h| *h == x).unwrap();
        assert!(holds(&grid, &x, c, i).await);
    }
    let st = repair_status(&grid, &x).await;
    assert_eq!((st.missing, st.rebuilt_shards), (0, 6), "{st:?}");
    assert_eq!(st.rebuilds_paused_until_ms, 0);
    // Each rebuild fetched its k shards once.
    assert_eq!(shard_gets_served(&grid, &x) - gets, 6 * K as u64);
}

/// References that do not record the shard length (a chunk referenced
/// before it was stored) let a rebuild past the room check; its write then
/// finds the store full. That pauses the other rebuilds too: the shards
/// fetched by the rebuilds already under way are the last the peers serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_that_finds_the_store_full_pauses_the_other_rebuilds() {
    let mut grid = TestGrid::start_healing(3, 2, RepairConfig::manual()).await;
    let x = grid.map.nodes[1].id.clone();
    let shard_len = sealed(40_000, K, M, 100).shard(0).len() as u64;
    restart_with_quota(&mut grid, &x, shard_len / 2).await;
    let chunks = chunks_missing_on(&grid, &x, 6, false).await;

    let gets = shard_gets_served(&grid, &x);
    let r = grid.node(&x).reconcile().await.unwrap();
    assert_eq!((r.missing, r.rebuilt, r.failed), (6, 0, 0), "{r:?}");
    assert_eq!(r.deferred, 6, "{r:?}");
    // At most the rebuilds started before the first write failed fetched,
    // k shards each, and none gathered again.
    let first = shard_gets_served(&grid, &x) - gets;
    assert!(
        first <= (chunks.len() * K) as u64,
        "{first} shard GETs for {} rebuilds",
        chunks.len()
    );
    for _ in 0..10 {
        let r = grid.node(&x).reconcile().await.unwrap();
        assert_eq!((r.rebuilt, r.failed), (0, 0), "{r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Eleven passes; fetching again only once a pause ran out, and each
    // pause longer than the last.
    let st = repair_status(&grid, &x).await;
    assert!((1..=3).contains(&st.store_full_pauses), "{st:?}");
    let all = shard_gets_served(&grid, &x) - gets;
    assert!(
        all <= first * st.store_full_pauses,
        "rebuilds went on fetching shards for a full store: {first} GETs, then {all} after {} pauses",
        st.store_full_pauses
    );
    assert_eq!(st.missing, 6);
}
