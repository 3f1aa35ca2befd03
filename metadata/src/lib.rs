//! The data model (buckets, object versions, manifests, chunk references,
//! cluster map), placement and the on-disk encoding of records.
//!
//! Empty until the storage-node issue: nothing here yet has a user.
