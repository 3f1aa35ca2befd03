//! Listings through a gateway's ordered index of a bucket stay exact while
//! other gateways write and delete, and when a replica restarts (its change
//! feed starts over): every listing equals what a gateway with no index
//! reads from the replicas.

mod support;

use cluster::{ListObjectsParams, ListVersionsParams, ObjectStore, PutOptions, StoreConfig};
use support::grid::TestGrid;
use support::objects::{store_on, stream_of, OWNER};

async fn put(store: &ObjectStore, bucket: &str, key: &str) {
    store
        .put_object(
            bucket,
            key,
            stream_of(key.as_bytes().to_vec(), 64),
            PutOptions::default(),
        )
        .await
        .unwrap();
}

/// Every key of a listing, followed page by page with the markers the
/// listing hands out.
async fn all_keys(
    store: &ObjectStore,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_objects(
                bucket,
                &ListObjectsParams {
                    prefix: prefix.into(),
                    delimiter: delimiter.map(str::to_string),
                    start_after: after.clone(),
                    max_keys: 7,
                },
            )
            .await
            .unwrap();
        out.extend(page.objects.iter().map(|o| o.key.clone()));
        out.extend(page.common_prefixes.iter().map(|p| format!("{p}(prefix)")));
        if !page.is_truncated {
            return out;
        }
        after = page.next_start_after;
    }
}

async fn all_versions(store: &ObjectStore, bucket: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let (mut km, mut vm) = (None, None);
    loop {
        let page = store
            .list_object_versions(
                bucket,
                &ListVersionsParams {
                    key_marker: km.clone(),
                    version_id_marker: vm.clone(),
                    max_keys: 5,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        out.extend(
            page.versions
                .iter()
                .map(|v| (v.key.clone(), v.version_id.clone(), v.is_latest)),
        );
        if !page.is_truncated {
            return out;
        }
        km = page.next_key_marker;
        vm = page.next_version_id_marker;
    }
}

async fn agree(indexed: &ObjectStore, grid: &TestGrid, bucket: &str) {
    // A new store has no index: it lists from a full read.
    let fresh = store_on(grid, StoreConfig::default());
    for (prefix, delimiter) in [("", None), ("", Some("/")), ("d1/", Some("/")), ("d", None)] {
        assert_eq!(
            all_keys(indexed, bucket, prefix, delimiter).await,
            all_keys(&fresh, bucket, prefix, delimiter).await,
            "prefix {prefix:?} delimiter {delimiter:?}"
        );
    }
    assert_eq!(
        all_versions(indexed, bucket).await,
        all_versions(&fresh, bucket).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_indexed_listing_follows_other_gateways_and_restarts() {
    let mut grid = TestGrid::start(3, 2).await;
    let a = store_on(&grid, StoreConfig::default());
    let b = store_on(&grid, StoreConfig::default());
    a.create_bucket("idx", OWNER, None).await.unwrap();
    for i in 0..30 {
        put(&a, "idx", &format!("d{}/k{i:02}", i % 3)).await;
    }
    assert_eq!(all_keys(&a, "idx", "", None).await.len(), 30);

    // Another gateway writes, overwrites and deletes; `a` sees each at once.
    put(&b, "idx", "d1/new").await;
    put(&b, "idx", "top").await;
    b.delete_object("idx", "d0/k00", None).await.unwrap();
    put(&b, "idx", "d2/k02").await;
    let keys = all_keys(&a, "idx", "", None).await;
    assert!(keys.contains(&"d1/new".to_string()) && keys.contains(&"top".to_string()));
    assert!(!keys.contains(&"d0/k00".to_string()));
    assert_eq!(keys.len(), 31);
    agree(&a, &grid, "idx").await;

    // Versioned: markers and old versions appear in version listings.
    b.set_versioning("idx", cluster::VersioningState::Enabled)
        .await
        .unwrap();
    put(&b, "idx", "d1/k01").await;
    b.delete_object("idx", "d1/k04", None).await.unwrap();
    agree(&a, &grid, "idx").await;
    assert!(!all_keys(&a, "idx", "d1/", None)
        .await
        .contains(&"d1/k04".to_string()));

    // The replicas restart (every node, one at a time, so the bucket's
    // are among them): their feeds start over and `a` reads the bucket
    // again rather than miss what the new feeds do not name.
    let ids: Vec<String> = grid.map.nodes.iter().map(|n| n.id.clone()).collect();
    for id in &ids {
        grid.kill(id).await;
        grid.restart(id).await;
    }
    put(&b, "idx", "after-restart").await;
    agree(&a, &grid, "idx").await;
    assert!(all_keys(&a, "idx", "", None)
        .await
        .contains(&"after-restart".to_string()));
}
