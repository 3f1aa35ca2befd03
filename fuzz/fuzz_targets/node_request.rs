//! What a node parses from a request: shard names and range queries in
//! paths, and every record body of the node RPC. Never panics; a shard
//! name that parses has exactly one spelling.
#![no_main]

use grid::node_api as api;
use libfuzzer_sys::fuzz_target;
use metadata::model::{Bucket, ChunkReference, ClusterMap, MultipartUpload, ObjectVersion, Part};
use metadata::{Record, ShardKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = ShardKey::from_name(text) {
            assert_eq!(k.to_name(), text);
        }
        let _ = api::parse_range_query(Some(text));
        let _ = api::table_from_name(text);
    }
    if let Ok(list) = api::ShardList::decode_record(data) {
        // validate() already accepted every key.
        assert_eq!(list.shard_keys().map(|k| k.len()), Ok(list.keys.len()));
    }
    if let Ok(batch) = api::MetaBatch::decode_record(data) {
        assert!(batch.ops.iter().all(|op| op.table().is_ok()));
    }
    let _ = api::ScanRequest::decode_record(data);
    let _ = api::CasRequest::decode_record(data);
    let _ = api::RefQuery::decode_record(data);
    if let Ok(q) = api::ChangesRequest::decode_record(data) {
        assert!(q.table().is_ok());
    }
    // What a node checks of the sealed records it stores: the shape and
    // the clear revision, agreeing with each other.
    assert_eq!(
        metadata::sealed::check_envelope(data).is_ok(),
        metadata::sealed::revision(data).is_some()
    );
    if let Ok(refs) = api::RefList::decode_record(data) {
        assert!(refs.refs.iter().all(|r| r.key().is_some()));
    }
    // A job task's request, whole or as frames (a streamed request's
    // inputs follow its first frame).
    let _ = grid::task::TaskRequest::decode_record(data);
    let mut frames = grid::task::FrameReader::default();
    frames.push(data);
    while let Ok(Some((_, payload))) = frames.next_frame() {
        let _ = grid::task::TaskInput::decode_record(&payload);
    }
    let _ = ChunkReference::decode_record(data);
    let _ = ClusterMap::decode_record(data);
    let _ = Bucket::decode_record(data);
    let _ = ObjectVersion::decode_record(data);
    let _ = MultipartUpload::decode_record(data);
    let _ = Part::decode_record(data);
});
