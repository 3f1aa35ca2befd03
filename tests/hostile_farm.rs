//! One farm turns hostile: the test holds one node's data directory and
//! identity (all a dishonest farm owner has) and attacks the rest of a
//! grid of real `gridstore node` processes, one attack per case. Each
//! attack must be refused or undone; after it, every acknowledged object
//! reads back by sha256 and no shard is missing.

mod support;

use ::grid::node_api as api;
use ::grid::signed_map::{self, OwnerKey};
use ::grid::tls::Identity;
use ::grid::{ClientOptions, NodeClient, RpcError};
use bytes::Bytes;
use cluster::{ErasureSpec, GetOptions, ObjectStore, PutOptions, StoreConfig};
use futures_util::StreamExt;
use metadata::db::Table;
use metadata::model::{ClusterMap, NodeState};
use metadata::ShardKey;
use sha2::{Digest, Sha256};
use std::time::Duration;
use support::objects::{Data, OWNER};
use support::shards::{shard_files, wait_for};
use support::NodeProc;

/// Six nodes on three sites, 4+2 coding, heartbeats every second.
struct Farm {
    _root: tempfile::TempDir,
    procs: Vec<NodeProc>,
    map: ClusterMap,
    store: ObjectStore,
    /// (key, sha256) of every acknowledged object.
    objects: Vec<(String, [u8; 32])>,
    /// Which node is the hostile farm.
    hostile: usize,
}

async fn farm() -> Farm {
    farm_of(3, 2, 8).await
}

/// `per_site` nodes on each of `sites` sites, `objects` objects written.
async fn farm_of(sites: usize, per_site: usize, objects: u64) -> Farm {
    let root = tempfile::tempdir().unwrap();
    let cfg = "[repair]\nreconcile_interval_secs = 1\nheartbeat_secs = 1\n\
               down_after_secs = 3\nscrub_interval_secs = 0\n\
               anti_entropy_interval_secs = 1\n";
    let (procs, map) = support::proc_grid(root.path(), sites, per_site, cfg).await;
    let grid = ::grid::Grid::new(map.clone(), ClientOptions::default());
    let store = ObjectStore::new(grid, support::master(), StoreConfig::default())
        .following_map(Duration::from_millis(500));
    store
        .create_bucket("farm", OWNER, Some(ErasureSpec::new(4, 2)))
        .await
        .unwrap();
    let count = objects;
    let mut objects = Vec::new();
    for i in 0..count {
        let len = [1_000, 300_000, 2_500_000][i as usize % 3];
        let key = format!("o/{i}");
        store
            .put_object(
                "farm",
                &key,
                Data::new(len, i).stream(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        objects.push((key, Data::sha256(len, i)));
    }
    Farm {
        _root: root,
        procs,
        map,
        store,
        objects,
        hostile: 0,
    }
}

impl Farm {
    /// The hostile farm's own identity, read from its data directory.
    fn stolen_identity(&self) -> Identity {
        Identity::load(&self.procs[self.hostile].dir.join("data").join("identity")).unwrap()
    }

    /// A client of node `i` that presents the hostile farm's identity.
    fn attacker(&self, i: usize) -> NodeClient {
        let p = &self.procs[i];
        let opts = ClientOptions {
            identity: Some(self.stolen_identity()),
            ..ClientOptions::default()
        };
        NodeClient::new(&p.addr, &p.key.0, opts)
    }

    fn victims(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.procs.len()).filter(|i| *i != self.hostile)
    }

    /// The nodes holding the bucket's version records.
    async fn version_holders(&self) -> Vec<usize> {
        let mut h = Vec::new();
        for (i, p) in self.procs.iter().enumerate() {
            let page = p
                .client()
                .meta_scan(Table::Versions, &[], None, 1)
                .await
                .unwrap();
            if !page.items.is_empty() {
                h.push(i);
            }
        }
        h
    }

    fn shard_counts(&self) -> Vec<usize> {
        self.procs
            .iter()
            .map(|p| shard_files(&p.dir.join("data")).len())
            .collect()
    }

    /// Every acknowledged object reads back right.
    async fn assert_whole(&self) {
        for (key, sha) in &self.objects {
            let r = self
                .store
                .get_object("farm", key, GetOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let mut body = r.body;
            let mut h = Sha256::new();
            while let Some(piece) = body.next().await {
                h.update(piece.unwrap_or_else(|e| panic!("{key}: {e}")));
            }
            assert_eq!(&<[u8; 32]>::from(h.finalize()), sha, "{key}");
        }
    }

    /// The map every node holds.
    async fn maps(&self) -> Vec<ClusterMap> {
        let mut out = Vec::new();
        for p in &self.procs {
            out.push(p.client().get_map().await.unwrap().unwrap());
        }
        out
    }

    /// A shard the hostile farm holds, and its bytes.
    async fn own_shard(&self) -> (ShardKey, Vec<u8>) {
        let files = shard_files(&self.procs[self.hostile].dir.join("data"));
        let (_, key) = files.iter().next().expect("the hostile farm holds shards");
        let bytes = self
            .attacker(self.hostile)
            .get_shard(key, None)
            .await
            .unwrap();
        (*key, bytes.to_vec())
    }
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, RpcError>, what: &str) {
    match r {
        Err(RpcError::Rejected { status: 403, .. }) => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_cannot_delete_shards_or_references_elsewhere() {
    let f = farm().await;
    let before = f.shard_counts();
    for i in f.victims() {
        let files = shard_files(&f.procs[i].dir.join("data"));
        let keys: Vec<ShardKey> = files.values().copied().collect();
        let a = f.attacker(i);
        forbidden(a.delete_shards(&keys).await, "shards:delete");
        forbidden(a.delete_shard(&keys[0]).await, "shard DELETE");
        let refs = a
            .refs_list(api::RefQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .refs;
        assert!(!refs.is_empty(), "a peer may list references");
        forbidden(a.refs_remove(refs).await, "refs:remove");
    }
    assert_eq!(f.shard_counts(), before, "no shard went anywhere");
    f.assert_whole().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_cannot_overwrite_delete_or_roll_back_records() {
    let f = farm().await;
    // An older authentic record: the object's version before it is
    // written again (its record key stays, its revision grows).
    let holders: Vec<usize> = f
        .version_holders()
        .await
        .into_iter()
        .filter(|i| *i != f.hostile)
        .collect();
    assert!(!holders.is_empty(), "some victim holds version records");
    let old = f
        .attacker(holders[0])
        .meta_scan(Table::Versions, &[], None, 100)
        .await
        .unwrap();
    let mut f = f;
    for (i, (key, sha)) in f.objects.iter_mut().enumerate() {
        let len = 5_000 + i as u64;
        f.store
            .put_object(
                "farm",
                key,
                Data::new(len, 100 + i as u64).stream(),
                PutOptions::default(),
            )
            .await
            .unwrap();
        *sha = Data::sha256(len, 100 + i as u64);
    }
    let mut rollbacks = 0;
    for &i in &holders {
        let a = f.attacker(i);
        let now = a.meta_scan(Table::Versions, &[], None, 100).await.unwrap();
        for kv in &now.items {
            let garbage = {
                let mut v = kv.value.clone();
                let last = v.len() - 1;
                v[last] ^= 1;
                v
            };
            forbidden(
                a.meta_put(Table::Versions, &kv.key, garbage.clone()).await,
                "meta PUT",
            );
            forbidden(a.meta_delete(Table::Versions, &kv.key).await, "meta DELETE");
            forbidden(
                a.meta_batch(vec![api::MetaOp::delete(Table::Versions, &kv.key)])
                    .await,
                "meta:batch",
            );
            forbidden(
                a.meta_cas(Table::Versions, &kv.key, Some(kv.value.clone()), None)
                    .await,
                "meta:cas delete",
            );
            if let Some(before) = old
                .items
                .iter()
                .find(|o| o.key == kv.key && o.value != kv.value)
            {
                forbidden(
                    a.meta_cas(
                        Table::Versions,
                        &kv.key,
                        Some(kv.value.clone()),
                        Some(before.value.clone()),
                    )
                    .await,
                    "meta:cas rollback",
                );
                rollbacks += 1;
            }
        }
    }
    assert!(rollbacks > 0, "no older record to roll back to was found");
    f.assert_whole().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_cannot_push_garbage_foreign_or_forged_shards() {
    let f = farm().await;
    let before = f.shard_counts();
    let (key, genuine) = f.own_shard().await;
    let map = &f.map;
    let refs = f
        .attacker(f.hostile)
        .refs_list(api::RefQuery {
            chunk_id: Some(key.chunk.to_vec()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let erasure = refs.refs[0].erasure.unwrap();
    let homes: Vec<String> = metadata::placement::chunk_nodes(map, &key.chunk, erasure.total())
        .unwrap()
        .iter()
        .map(|n| n.id.clone())
        .collect();
    let index_of = |id: &str| f.procs.iter().position(|p| p.id == id).unwrap();

    // Garbage under a real key, to that shard's home.
    let home = index_of(&homes[key.index as usize]);
    let other = (0..erasure.total())
        .find(|i| *i != key.index as usize && homes[*i] != f.procs[f.hostile].id)
        .unwrap();
    let other_home = index_of(&homes[other]);
    let other_key = ShardKey::new(key.chunk, other).unwrap();
    let r = f
        .attacker(other_home)
        .put_shard(&other_key, Bytes::from(vec![0x5a; genuine.len()]))
        .await;
    assert!(r.is_err(), "garbage accepted");

    // A genuine shard, to a node that is not its home (the home of
    // another of the chunk's shards).
    let stranger = f.victims().find(|i| *i != home).unwrap();
    forbidden(
        f.attacker(stranger)
            .put_shard(&key, Bytes::from(genuine.clone()))
            .await,
        "shard to a node that is not its home",
    );

    // A forged shard that checks out by itself: another index's header
    // and body, re-indexed and re-summed, to that index's home.
    let mut forged = genuine.clone();
    forged[11] = other as u8;
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    let sum = {
        let mut h = blake3::Hasher::new();
        h.update(&forged[..80]);
        h.update(&forged[112..]);
        h.finalize()
    };
    forged[80..112].copy_from_slice(sum.as_bytes());
    forbidden(
        f.attacker(other_home)
            .put_shard(&other_key, Bytes::from(forged))
            .await,
        "forged shard",
    );

    // A shard of a chunk nobody references.
    let foreign = support::sealed(100_000, 4, 2, 99);
    let fk = support::shard_key(&foreign, 0);
    forbidden(
        f.attacker(1)
            .put_shard(&fk, Bytes::from(foreign.shard(0).to_vec()))
            .await,
        "unreferenced chunk",
    );
    assert_eq!(f.shard_counts(), before);
    f.assert_whole().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_cannot_publish_a_map_or_mark_others_down_alone() {
    let f = farm().await;
    let held = f.maps().await;
    let epoch = held[1].epoch;

    // A map with a higher epoch that removes everyone else: unsigned,
    // signed with a key of the farm's own making, or carrying the owner's
    // membership signature of another map.
    let mut grab = held[1].clone();
    grab.epoch = epoch + 100;
    for n in grab.nodes.iter_mut().skip(1) {
        n.state = NodeState::Removed as i32;
    }
    let mut unsigned = grab.clone();
    unsigned.owner_signature.clear();
    let mine = OwnerKey::from_seed(&[9; 32]).signed(grab.clone());
    for i in f.victims() {
        let a = f.attacker(i);
        forbidden(a.put_map(&grab).await, "map with a stale signature");
        forbidden(a.put_map(&unsigned).await, "unsigned map");
        forbidden(a.put_map(&mine).await, "map signed by another owner");
    }

    // Everyone else down, with the farm's own vote only.
    let mut down = held[1].clone();
    down.epoch = epoch + 1;
    down.owner_signature.clear();
    for n in down.nodes.iter_mut().skip(1) {
        n.state = NodeState::Down as i32;
    }
    down.votes = vec![signed_map::vote(
        &f.stolen_identity(),
        &f.procs[f.hostile].id,
        &down,
    )];
    for i in f.victims() {
        let a = f.attacker(i);
        forbidden(a.put_map(&down).await, "liveness change with one vote");
        // And nobody lends it a vote: they all hear from each other.
        let r = a.map_vote(&down).await;
        assert!(
            matches!(r, Err(RpcError::Rejected { .. })),
            "{} voted for a lie: {r:?}",
            f.procs[i].id
        );
    }
    // An old map the owner did sign, replayed: older, so ignored.
    let mut older = held[1].clone();
    older.epoch = epoch.saturating_sub(1);
    let replay = support::signed_map(older);
    for i in f.victims() {
        let r = f.attacker(i).put_map(&replay).await.unwrap();
        assert!(!r.accepted, "an older map replaced a newer one");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (m, p) in f.maps().await.iter().zip(&f.procs) {
        assert!(
            m.nodes.iter().all(|n| n.state == NodeState::Up as i32),
            "{} holds a map with {:?}",
            p.id,
            m.nodes.iter().map(|n| n.state).collect::<Vec<_>>()
        );
    }
    f.assert_whole().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_cannot_run_tasks_or_touch_what_is_not_its_to_touch() {
    let f = farm().await;
    for i in f.victims() {
        let a = f.attacker(i);
        let req = ::grid::task::TaskRequest::default();
        forbidden(a.run_task(&req).await.map(drop), "job task");
    }
    // What a peer may do still works for it: read shards, status, maps.
    let (key, genuine) = f.own_shard().await;
    let mut served = false;
    for i in f.victims() {
        let a = f.attacker(i);
        a.status().await.unwrap();
        a.get_map().await.unwrap().unwrap();
        if let Ok(b) = a.get_shard(&key, None).await {
            served |= b.len() == genuine.len();
        }
    }
    let _ = served;
    // A liveness change the majority agrees on still goes through: the
    // hostile farm itself stops, and the others mark it down.
    let mut f = f;
    let hostile = f.hostile;
    f.procs[hostile].kill9();
    let watcher = f.procs[1].client();
    let hostile_id = f.procs[f.hostile].id.clone();
    let marked = wait_for(Duration::from_secs(60), || async {
        watcher.get_map().await.ok().flatten().is_some_and(|m| {
            m.nodes
                .iter()
                .any(|n| n.id == hostile_id && n.state == NodeState::Down as i32)
        })
    })
    .await;
    assert!(
        marked,
        "a dead node was never marked down by its peers' votes"
    );
    let m = watcher.get_map().await.unwrap().unwrap();
    assert!(m.votes.len() * 2 > m.nodes.len(), "{} votes", m.votes.len());
    f.assert_whole().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_cannot_push_made_up_records_or_references() {
    let mut f = farm().await;
    let holders = f.version_holders().await;
    let target = holders[0];
    f.hostile = *holders.last().unwrap();
    let a = f.attacker(target);
    let held = a.meta_scan(Table::Versions, &[], None, 100).await.unwrap();
    let kv = &held.items[0];
    // Re-dated to win the merge: the revision is in clear, the signature
    // covers it.
    let mut bumped = kv.value.clone();
    bumped[1] = 0x7f;
    forbidden(
        a.meta_cas(
            Table::Versions,
            &kv.key,
            Some(kv.value.clone()),
            Some(bumped),
        )
        .await,
        "re-dated record",
    );
    // Sealed and signed with keys of the farm's own making.
    let fake = metadata::sealed::RecordKeys::new(&[3; 32])
        .signing_with(std::sync::Arc::new(OwnerKey::from_seed(&[4; 32])));
    let forged = fake.seal(
        Table::Versions,
        &kv.key,
        u64::MAX / 2,
        &metadata::model::ObjectVersion::default(),
    );
    forbidden(
        a.meta_cas(
            Table::Versions,
            &kv.key,
            Some(kv.value.clone()),
            Some(forged.clone()),
        )
        .await,
        "forged record",
    );
    forbidden(
        a.meta_cas(Table::Versions, b"made-up-key", None, Some(forged))
            .await,
        "forged record under a new key",
    );

    // References: one with made-up shard hashes (unsigned, or re-signed
    // by the farm) is refused; an authentic one passes, as repair needs.
    let mine = f
        .attacker(f.hostile)
        .refs_list(api::RefQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .refs;
    let genuine = mine
        .iter()
        .find(|r| !r.shard_hashes.is_empty())
        .unwrap()
        .clone();
    let mut forged = genuine.clone();
    forged.shard_hashes[0][0] ^= 1;
    let mut resigned = forged.clone();
    OwnerKey::from_seed(&[4; 32]).sign_reference(&mut resigned);
    let mut fresh = genuine.clone();
    fresh.referrer.as_mut().unwrap().part_number = 7;
    for i in f.victims() {
        let a = f.attacker(i);
        forbidden(a.refs_add(vec![forged.clone()]).await, "forged hashes");
        forbidden(
            a.refs_add(vec![resigned.clone()]).await,
            "re-signed reference",
        );
        forbidden(a.refs_add(vec![fresh.clone()]).await, "made-up referrer");
        a.refs_add(vec![genuine.clone()]).await.unwrap();
    }
    f.assert_whole().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_serving_made_up_records_from_its_own_disk_changes_nothing() {
    let mut f = farm().await;
    let holders = f.version_holders().await;
    f.hostile = holders[0];
    let h = f.hostile;
    let held = f.procs[h]
        .client()
        .meta_scan(Table::Versions, &[], None, 100)
        .await
        .unwrap();
    // The farm rewrites its own database: every version record replaced
    // by one of its making under a far higher revision, and one made-up
    // key added.
    f.procs[h].kill9();
    {
        let db = metadata::db::Db::open(&f.procs[h].dir.join("data").join("meta")).unwrap();
        let fake = metadata::sealed::RecordKeys::new(&[3; 32])
            .signing_with(std::sync::Arc::new(OwnerKey::from_seed(&[4; 32])));
        let forge = |key: &[u8]| {
            fake.seal(
                Table::Versions,
                key,
                u64::MAX / 2,
                &metadata::model::ObjectVersion::default(),
            )
        };
        for kv in &held.items {
            db.put_raw(Table::Versions, &kv.key, &forge(&kv.key))
                .unwrap();
        }
        let mut extra = held.items[0].key.clone();
        let last = extra.len() - 1;
        extra[last] ^= 0x55;
        db.put_raw(Table::Versions, &extra, &forge(&extra)).unwrap();
    }
    f.procs[h].restart();
    // Reads take the replicas' authentic records over the farm's, however
    // high its revisions, and listings show no key it made up.
    f.assert_whole().await;
    let listed = f
        .store
        .list_objects(
            "farm",
            &cluster::ListObjectsParams {
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<String> = listed.objects.iter().map(|o| o.key.clone()).collect();
    let mut want: Vec<String> = f.objects.iter().map(|(k, _)| k.clone()).collect();
    want.sort();
    assert_eq!(names, want);
    // Anti-entropy runs every second: no other replica takes them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for &i in holders.iter().filter(|i| **i != h) {
        let page = f.procs[i]
            .client()
            .meta_scan(Table::Versions, &[], None, 100)
            .await
            .unwrap();
        for kv in &page.items {
            assert!(
                metadata::sealed::revision(&kv.value).unwrap() < u64::MAX / 2,
                "{} took a made-up record",
                f.procs[i].id
            );
        }
    }
    f.assert_whole().await;
}

/// A farm quietly deletes a tenth of the shards it was given and runs no
/// repair of its own. The gateway's storage audits find it, the owner's
/// map marks it untrusted with the reason, the other nodes rebuild its
/// shards at their new homes, and every object reads back, with no
/// command. (A farm that also answered "have" for the deleted shards
/// would be found the same way: a challenge asks for a proof of content,
/// which it cannot give.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_farm_that_drops_a_tenth_of_its_shards_is_found_and_replaced() {
    use cluster::{AuditConfig, Auditor};
    let mut f = farm_of(4, 2, 24).await;
    let h = f.hostile;
    let id = f.procs[h].id.clone();
    // Its own repair off, so nothing puts the shards back behind the
    // auditor's back.
    f.procs[h].kill9();
    let text = std::fs::read_to_string(&f.procs[h].config).unwrap();
    let text = text
        .replace("reconcile_interval_secs = 1", "reconcile_interval_secs = 0")
        .replace(
            "anti_entropy_interval_secs = 1",
            "anti_entropy_interval_secs = 0",
        );
    std::fs::write(&f.procs[h].config, text).unwrap();
    let mut files: Vec<_> = shard_files(&f.procs[h].dir.join("data"))
        .into_keys()
        .collect();
    assert!(files.len() >= 10, "it holds only {} shards", files.len());
    let drop = files.len().div_ceil(10);
    for i in 0..drop {
        let at = (i * 7919) % files.len();
        std::fs::remove_file(files.swap_remove(at)).unwrap();
    }
    f.procs[h].restart();

    let every = Duration::from_secs(1);
    let cfg = AuditConfig {
        every,
        samples_per_node: 32,
        fail_threshold: 2,
        window_rounds: 30,
        settle: Duration::from_secs(2),
        ..AuditConfig::default()
    };
    let started = std::time::Instant::now();
    let auditor = tokio::spawn(Auditor::new(f.store.clone(), cfg).run("hostile-test".into()));
    let watcher = f.procs[(h + 1) % f.procs.len()].client();
    let found = wait_for(Duration::from_secs(90), || async {
        watcher.get_map().await.ok().flatten().is_some_and(|m| {
            m.nodes
                .iter()
                .any(|n| n.id == id && n.state == NodeState::Untrusted as i32)
        })
    })
    .await;
    assert!(found, "the farm that dropped shards was never found");
    eprintln!(
        "{drop} of {} shards dropped; untrusted after {:.1} s of 1 s audit rounds",
        files.len() + drop,
        started.elapsed().as_secs_f64()
    );
    let m = watcher.get_map().await.unwrap().unwrap();
    let entry = m.nodes.iter().find(|n| n.id == id).unwrap();
    assert!(
        entry.untrusted_reason.contains("storage audit"),
        "{entry:?}"
    );
    assert!(
        m.nodes
            .iter()
            .all(|n| n.id == id || n.state == NodeState::Up as i32),
        "an honest node was blamed: {:?}",
        m.nodes
    );

    // Redundancy comes back by itself: every shard at its home under the
    // new map, the untrusted farm's included.
    let root = f._root.path().to_path_buf();
    let chunks = support::shards::chunks_on_disk(&root, 6);
    let healed = wait_for(Duration::from_secs(120), || async {
        let m = watcher.get_map().await.unwrap().unwrap();
        support::shards::misplaced(&root, &m, &chunks).0 == 0
    })
    .await;
    let m = watcher.get_map().await.unwrap().unwrap();
    assert!(
        healed,
        "shards missing at their homes: {:?}",
        support::shards::misplaced(&root, &m, &chunks)
    );
    f.assert_whole().await;
    auditor.abort();
}
