//! How object-layer records are keyed in the node tables.
//!
//! | table | key | holds |
//! |---|---|---|
//! | buckets | bucket name | `Bucket` (on the root replicas) |
//! | versions | bucket id ‖ object key ‖ 0 ‖ !version id | `ObjectVersion` |
//! | uploads | bucket id ‖ object key ‖ 0 ‖ upload id | `MultipartUpload` |
//! | parts | bucket id ‖ upload id ‖ part number (BE) | `Part` |
//!
//! Object keys never contain NUL (see [`crate::naming`]), so the 0 byte
//! ends a key unambiguously and sorts a key before every longer key that
//! starts with it: a scan sees objects in S3's byte order. The version id
//! is stored inverted so one key's versions come newest first.

use crate::version_id::VersionId;
use metadata::model::{BUCKET_ID_LEN, VERSION_ID_LEN};

/// Upload ids are 16 bytes (clock-ordered, like version ids).
pub const UPLOAD_ID_LEN: usize = 16;

/// `bucket id ‖ key ‖ 0`: the prefix of every version of one object.
pub fn object_prefix(bucket_id: &[u8], key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket_id.len() + key.len() + 1 + VERSION_ID_LEN);
    k.extend_from_slice(bucket_id);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

pub fn version_key(bucket_id: &[u8], key: &str, version: &VersionId) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    k.extend(version.0.iter().map(|b| !b));
    k
}

/// The object key and version a versions-table key names.
pub fn parse_version_key(bucket_id: &[u8], raw: &[u8]) -> Option<(String, VersionId)> {
    let rest = raw.strip_prefix(bucket_id)?;
    if rest.len() < VERSION_ID_LEN + 1 {
        return None;
    }
    let (key, tail) = rest.split_at(rest.len() - VERSION_ID_LEN - 1);
    if tail[0] != 0 {
        return None;
    }
    let mut v = [0u8; VERSION_ID_LEN];
    for (d, s) in v.iter_mut().zip(&tail[1..]) {
        *d = !s;
    }
    Some((String::from_utf8(key.to_vec()).ok()?, VersionId(v)))
}

/// Scan bounds for keys starting with `prefix` in one bucket's table
/// (`[start, end)`; `end` is `None` only for an all-0xff bucket id).
pub fn bucket_range(bucket_id: &[u8], prefix: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut start = bucket_id.to_vec();
    start.extend_from_slice(prefix.as_bytes());
    let end = metadata::db::prefix_end(&start);
    (start, end)
}

/// The first table key after every entry of object `key` and of every
/// key that starts with `key ‖ 0`... i.e. the start of the next object.
pub fn after_object(bucket_id: &[u8], key: &str) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    // Entries of `key` are `key ‖ 0 ‖ 16 bytes`; `key ‖ 1` is past them
    // and before `key ‖ c` for every other continuation c >= 1.
    if let Some(last) = k.last_mut() {
        *last = 1;
    }
    k
}

/// The first table key past every key starting with `prefix` (for skipping
/// a common prefix in a delimited listing).
pub fn after_prefix(bucket_id: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let mut k = bucket_id.to_vec();
    k.extend_from_slice(prefix.as_bytes());
    metadata::db::prefix_end(&k)
}

pub fn upload_key(bucket_id: &[u8], key: &str, upload_id: &[u8]) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key);
    k.extend_from_slice(upload_id);
    k
}

pub fn parse_upload_key(bucket_id: &[u8], raw: &[u8]) -> Option<(String, Vec<u8>)> {
    let rest = raw.strip_prefix(bucket_id)?;
    if rest.len() < UPLOAD_ID_LEN + 1 {
        return None;
    }
    let (key, tail) = rest.split_at(rest.len() - UPLOAD_ID_LEN - 1);
    if tail[0] != 0 {
        return None;
    }
    Some((String::from_utf8(key.to_vec()).ok()?, tail[1..].to_vec()))
}

pub fn parts_prefix(bucket_id: &[u8], upload_id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(BUCKET_ID_LEN + UPLOAD_ID_LEN + 4);
    k.extend_from_slice(bucket_id);
    k.extend_from_slice(upload_id);
    k
}

pub fn part_key(bucket_id: &[u8], upload_id: &[u8], part_number: u32) -> Vec<u8> {
    let mut k = parts_prefix(bucket_id, upload_id);
    k.extend_from_slice(&part_number.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_key_then_newest_first() {
        let b = [7u8; BUCKET_ID_LEN];
        let old = VersionId([1; VERSION_ID_LEN]);
        let new = VersionId([2; VERSION_ID_LEN]);
        let mut keys = [
            version_key(&b, "ab", &old),
            version_key(&b, "a", &old),
            version_key(&b, "a/b", &new),
            version_key(&b, "a", &new),
        ];
        keys.sort();
        let parsed: Vec<_> = keys
            .iter()
            .map(|k| parse_version_key(&b, k).unwrap())
            .collect();
        assert_eq!(
            parsed,
            vec![
                ("a".to_string(), new),
                ("a".to_string(), old),
                ("a/b".to_string(), new),
                ("ab".to_string(), old),
            ]
        );
        // after_object("a") skips both versions of "a" and nothing else.
        let after = after_object(&b, "a");
        assert!(keys[1] < after && after < keys[2]);
    }

    #[test]
    fn upload_keys_round_trip() {
        let b = [1u8; BUCKET_ID_LEN];
        let id = [9u8; UPLOAD_ID_LEN];
        let k = upload_key(&b, "dir/file", &id);
        assert_eq!(
            parse_upload_key(&b, &k),
            Some(("dir/file".to_string(), id.to_vec()))
        );
        assert!(part_key(&b, &id, 1) < part_key(&b, &id, 2));
        assert!(part_key(&b, &id, 255) < part_key(&b, &id, 256));
    }
}
