//! Encoding round trips, validation, and schema evolution in both
//! directions.

use metadata::model::*;
use metadata::record::{Record, RecordError, RECORD_TAG_V1};
use std::collections::BTreeMap;

fn chunk(offset: u64, len: u64) -> ChunkRef {
    ChunkRef {
        id: vec![7; CHUNK_ID_LEN],
        offset,
        len,
        erasure: Some(ErasureSpec::new(4, 2)),
        shard_len: 262_208,
    }
}

fn version() -> ObjectVersion {
    ObjectVersion {
        bucket: "photos".into(),
        key: "2026/11/21/ünïcode key.jpg".into(),
        version_id: vec![1; VERSION_ID_LEN],
        null_version: false,
        delete_marker: false,
        size: 3 << 20,
        etag: "\"9b2cf535f27731c974343645a3985328\"".into(),
        content_type: "image/jpeg".into(),
        user_metadata: BTreeMap::from([("camera".into(), "x100".into())]),
        chunks: vec![chunk(0, 1 << 20), chunk(1 << 20, 2 << 20)],
        inline_data: vec![],
        created_ms: 1_795_000_000_000,
        storage_class: "STANDARD".into(),
        checksums: BTreeMap::from([("CRC32C".into(), "yZRlqg==".into())]),
        revision: 0,
        purged: false,
        part_sizes: vec![1 << 20, 2 << 20],
        sse_customer_key_md5: "bWQ1".into(),
        tags: BTreeMap::from([("project".into(), "grid".into())]),
    }
}

#[test]
fn every_record_round_trips() {
    let v = version();
    assert_eq!(ObjectVersion::decode_record(&v.encode_record()).unwrap(), v);

    let b = Bucket {
        name: "photos".into(),
        id: vec![3; BUCKET_ID_LEN],
        owner: "GKabc".into(),
        created_ms: 5,
        versioning: VersioningState::Suspended as i32,
        erasure: Some(ErasureSpec::new(8, 4)),
        revision: 77,
        deleted: true,
        public: true,
    };
    assert_eq!(Bucket::decode_record(&b.encode_record()).unwrap(), b);

    let u = MultipartUpload {
        bucket: "b".into(),
        key: "k".into(),
        upload_id: "u1".into(),
        owner: "o".into(),
        initiated_ms: 9,
        content_type: "text/plain".into(),
        user_metadata: BTreeMap::new(),
        storage_class: "REDUCED_REDUNDANCY".into(),
        revision: 12,
        closed: true,
        sse_customer_key_md5: String::new(),
        checksum_algorithm: "SHA256".into(),
        erasure: Some(ErasureSpec::new(4, 1)),
        completed_etag: "abc-2".into(),
        completed_version: vec![1; VERSION_ID_LEN],
        completed_size: 99,
        completed_checksums: BTreeMap::from([("SHA256".into(), "x-2".into())]),
    };
    assert_eq!(
        MultipartUpload::decode_record(&u.encode_record()).unwrap(),
        u
    );

    let p = Part {
        upload_id: "u1".into(),
        part_number: 3,
        size: 1 << 20,
        etag: "\"e\"".into(),
        chunks: vec![chunk(0, 1 << 20)],
        last_modified_ms: 10,
        checksums: BTreeMap::new(),
        revision: 3,
    };
    assert_eq!(Part::decode_record(&p.encode_record()).unwrap(), p);

    let r = ChunkReference {
        chunk_id: vec![7; CHUNK_ID_LEN],
        erasure: Some(ErasureSpec::new(4, 2)),
        shard_len: 64,
        referrer: Some(Referrer {
            bucket_id: vec![3; BUCKET_ID_LEN],
            key_hash: vec![9; 16],
            version: vec![1; VERSION_ID_LEN],
            part_number: 0,
        }),
        created_ms: 11,
        shard_hashes: (0..6).map(|i| vec![i; 32]).collect(),
        ..ChunkReference::default()
    };
    // Signed by the owner, checkable by anyone with the public key;
    // altering what either signature covers breaks it.
    let owner = metadata::signing::OwnerKey::from_seed(&[1; 32]);
    let mut signed = r.clone();
    owner.sign_reference(&mut signed);
    assert!(metadata::signing::reference_verifies(
        &signed,
        &owner.public()
    ));
    let other = metadata::signing::OwnerKey::from_seed(&[2; 32]);
    assert!(!metadata::signing::reference_verifies(
        &signed,
        &other.public()
    ));
    assert!(!metadata::signing::reference_verifies(&r, &owner.public()));
    let mut moved = signed.clone();
    moved.referrer.as_mut().unwrap().part_number = 1;
    assert!(!metadata::signing::reference_verifies(
        &moved,
        &owner.public()
    ));
    let mut forged = signed.clone();
    forged.shard_hashes[2][0] ^= 1;
    assert!(!metadata::signing::reference_verifies(
        &forged,
        &owner.public()
    ));
    // The hashes' signature travels with them to another referrer.
    let mut other_ref = r.clone();
    other_ref.shard_hashes.clear();
    other_ref.referrer.as_mut().unwrap().version = vec![2; VERSION_ID_LEN];
    owner.sign_reference(&mut other_ref);
    other_ref.shard_hashes = signed.shard_hashes.clone();
    other_ref.hashes_signature = signed.hashes_signature.clone();
    assert!(metadata::signing::reference_verifies(
        &other_ref,
        &owner.public()
    ));
    assert_eq!(
        ChunkReference::decode_record(&r.encode_record()).unwrap(),
        r
    );
    let mut wrong = r.clone();
    wrong.shard_hashes.pop();
    assert!(ChunkReference::decode_record(&wrong.encode_record()).is_err());
    let mut unknown = r.clone();
    unknown.shard_hashes.clear();
    assert!(ChunkReference::decode_record(&unknown.encode_record()).is_ok());

    let m = ClusterMap {
        epoch: 42,
        nodes: vec![Node {
            id: "n1".into(),
            addr: "127.0.0.1:7001".into(),
            site: "farm-a".into(),
            capacity_bytes: 1 << 40,
            state: NodeState::Draining as i32,
            key: vec![9; 32],
            untrusted_reason: String::new(),
        }],
        clients: vec![],
        ..ClusterMap::default()
    };
    let back = ClusterMap::decode_record(&m.encode_record()).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.nodes[0].state(), NodeState::Draining);
}

#[test]
fn chunk_reference_keys_group_by_chunk_and_never_collide() {
    let referrer = |bucket: &[u8], version: &[u8], part: u32, key: &str| Referrer {
        bucket_id: bucket.to_vec(),
        key_hash: {
            let mut h = [0u8; 16];
            h[..key.len()].copy_from_slice(key.as_bytes());
            h.to_vec()
        },
        version: version.to_vec(),
        part_number: part,
    };
    let a = [1u8; CHUNK_ID_LEN];
    let b = [2u8; CHUNK_ID_LEN];
    let refs = [
        referrer(&[1], &[2, 3], 0, "k"),
        referrer(&[1, 2], &[3], 0, "k"),
        referrer(&[1], &[2], 0, "3k"),
        referrer(&[1], &[2, 3], 1, "k"),
        referrer(&[1], &[2, 3], 0, "k2"),
    ];
    let mut keys: Vec<Vec<u8>> = refs
        .iter()
        .map(|r| ChunkReference::table_key(&a, r))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), refs.len());
    let bk = ChunkReference::table_key(&b, &refs[0]);
    assert!(keys.iter().all(|k| k.starts_with(&a) && *k < bk));
}

#[test]
fn encoding_is_compact() {
    // A 3 MiB object with two chunks: well under 400 bytes of metadata.
    let n = version().encode_record().len();
    assert!(n < 400, "{n} bytes");
}

#[test]
fn bad_input_is_a_typed_error() {
    assert_eq!(ObjectVersion::decode_record(&[]), Err(RecordError::Empty));
    assert_eq!(
        ObjectVersion::decode_record(&[9, 1, 2]),
        Err(RecordError::UnsupportedVersion(9))
    );
    assert!(matches!(
        ObjectVersion::decode_record(&[RECORD_TAG_V1, 0xff, 0xff, 0xff]),
        Err(RecordError::Malformed(_))
    ));
    let mut v = version();
    v.chunks[1].offset += 1;
    assert_eq!(
        ObjectVersion::decode_record(&v.encode_record()),
        Err(RecordError::Invalid("chunks not contiguous"))
    );
    let mut v = version();
    v.version_id.pop();
    assert!(ObjectVersion::decode_record(&v.encode_record()).is_err());
    let mut v = version();
    v.chunks[0].id = vec![1; 5];
    assert!(ObjectVersion::decode_record(&v.encode_record()).is_err());
    let m = ClusterMap {
        epoch: 1,
        nodes: vec![
            Node {
                id: "a".into(),
                ..Default::default()
            },
            Node {
                id: "a".into(),
                ..Default::default()
            },
        ],
        clients: vec![],
        ..ClusterMap::default()
    };
    assert_eq!(
        ClusterMap::decode_record(&m.encode_record()),
        Err(RecordError::Invalid("duplicate node id"))
    );
}

/// `Node` as a later version might define it, with a field this version
/// does not know.
#[derive(Clone, PartialEq, prost::Message)]
struct NodeV2 {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    addr: String,
    #[prost(string, tag = "3")]
    site: String,
    #[prost(uint64, tag = "4")]
    capacity_bytes: u64,
    #[prost(enumeration = "NodeState", tag = "5")]
    state: i32,
    #[prost(string, tag = "20")]
    rack: String,
    #[prost(uint32, repeated, tag = "21")]
    disk_ids: Vec<u32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClusterMapV2 {
    #[prost(uint64, tag = "1")]
    epoch: u64,
    #[prost(message, repeated, tag = "2")]
    nodes: Vec<NodeV2>,
    #[prost(string, tag = "20")]
    cluster_name: String,
}

impl Record for ClusterMapV2 {}

#[test]
fn a_record_from_a_newer_version_decodes_here() {
    let newer = ClusterMapV2 {
        epoch: 7,
        nodes: vec![NodeV2 {
            id: "n1".into(),
            addr: "127.0.0.1:1".into(),
            site: "s".into(),
            capacity_bytes: 1 << 30,
            state: NodeState::Up as i32,
            rack: "r4".into(),
            disk_ids: vec![1, 2],
        }],
        cluster_name: "grid".into(),
    };
    let old = ClusterMap::decode_record(&newer.encode_record()).unwrap();
    assert_eq!(old.epoch, 7);
    assert_eq!(old.nodes[0].id, "n1");
    assert_eq!(old.nodes[0].capacity_bytes, 1 << 30);
}

#[test]
fn a_record_from_this_version_decodes_after_fields_are_added() {
    let current = ClusterMap {
        epoch: 8,
        nodes: vec![Node {
            id: "n2".into(),
            addr: "127.0.0.1:2".into(),
            site: "t".into(),
            capacity_bytes: 5,
            state: NodeState::Down as i32,
            key: vec![],
            untrusted_reason: String::new(),
        }],
        clients: vec![],
        ..ClusterMap::default()
    };
    let newer = ClusterMapV2::decode_record(&current.encode_record()).unwrap();
    assert_eq!(newer.epoch, 8);
    assert_eq!(newer.nodes[0].state, NodeState::Down as i32);
    assert_eq!(newer.nodes[0].rack, "", "added field takes its default");
    assert!(newer.nodes[0].disk_ids.is_empty());
    assert_eq!(newer.cluster_name, "");
}
