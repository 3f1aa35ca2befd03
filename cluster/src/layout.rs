//! How object-layer records are keyed in the node tables. Keys hold no
//! names: an object key appears only as its keyed hash `h(key)`
//! ([`crate::store::BucketHandle::key_hash`]), a bucket name only as its
//! hash on the root replicas.
//!
//! | table | key | holds |
//! |---|---|---|
//! | buckets | h(bucket name) | `Bucket` (on the root replicas) |
//! | versions | bucket id ‖ h(key) ‖ !version id | `ObjectVersion` |
//! | uploads | bucket id ‖ h(key) ‖ upload id | `MultipartUpload` |
//! | parts | bucket id ‖ upload id ‖ part number (BE) | `Part` |
//!
//! One object's versions are one contiguous range, newest first (the
//! version id is stored inverted). Objects follow each other in hash
//! order, so listings sort what they read (see [`crate::listing`]).

use crate::version_id::VersionId;
use metadata::model::{BUCKET_ID_LEN, VERSION_ID_LEN};
use metadata::sealed::NAME_HASH_LEN;

/// Upload ids are 16 bytes (clock-ordered, like version ids).
pub const UPLOAD_ID_LEN: usize = 16;

/// `bucket id ‖ h(key)`: the prefix of every version of one object.
pub fn object_prefix(bucket_id: &[u8], key_hash: &[u8; NAME_HASH_LEN]) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket_id.len() + NAME_HASH_LEN + VERSION_ID_LEN);
    k.extend_from_slice(bucket_id);
    k.extend_from_slice(key_hash);
    k
}

pub fn version_key(
    bucket_id: &[u8],
    key_hash: &[u8; NAME_HASH_LEN],
    version: &VersionId,
) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key_hash);
    k.extend(version.0.iter().map(|b| !b));
    k
}

/// The first table key after every version of one object.
pub fn after_object(bucket_id: &[u8], key_hash: &[u8; NAME_HASH_LEN]) -> Option<Vec<u8>> {
    metadata::db::prefix_end(&object_prefix(bucket_id, key_hash))
}

/// Scan bounds of one bucket's records in a table (`[start, end)`; `end`
/// is `None` only for an all-0xff bucket id).
pub fn bucket_range(bucket_id: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    (bucket_id.to_vec(), metadata::db::prefix_end(bucket_id))
}

pub fn upload_key(bucket_id: &[u8], key_hash: &[u8; NAME_HASH_LEN], upload_id: &[u8]) -> Vec<u8> {
    let mut k = object_prefix(bucket_id, key_hash);
    k.extend_from_slice(upload_id);
    k
}

/// The upload id an uploads-table key ends with.
pub fn upload_id_of(bucket_id: &[u8], raw: &[u8]) -> Option<Vec<u8>> {
    let rest = raw.strip_prefix(bucket_id)?;
    (rest.len() == NAME_HASH_LEN + UPLOAD_ID_LEN).then(|| rest[NAME_HASH_LEN..].to_vec())
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
    fn one_objects_versions_sort_newest_first_and_together() {
        let b = [7u8; BUCKET_ID_LEN];
        let (h1, h2) = ([1u8; NAME_HASH_LEN], [2u8; NAME_HASH_LEN]);
        let old = VersionId([1; VERSION_ID_LEN]);
        let new = VersionId([2; VERSION_ID_LEN]);
        let mut keys = [
            version_key(&b, &h2, &old),
            version_key(&b, &h1, &old),
            version_key(&b, &h1, &new),
        ];
        keys.sort();
        assert_eq!(keys[0], version_key(&b, &h1, &new));
        assert_eq!(keys[1], version_key(&b, &h1, &old));
        let after = after_object(&b, &h1).unwrap();
        assert!(keys[1] < after && after <= keys[2]);
        let (start, end) = bucket_range(&b);
        assert!(keys.iter().all(|k| *k >= start && Some(k) < end.as_ref()));
    }

    #[test]
    fn upload_keys_round_trip() {
        let b = [1u8; BUCKET_ID_LEN];
        let id = [9u8; UPLOAD_ID_LEN];
        let k = upload_key(&b, &[3; NAME_HASH_LEN], &id);
        assert_eq!(upload_id_of(&b, &k), Some(id.to_vec()));
        assert!(part_key(&b, &id, 1) < part_key(&b, &id, 2));
        assert!(part_key(&b, &id, 255) < part_key(&b, &id, 256));
    }
}
