//! The node daemon: shard store on disk, node RPC server, repair daemon and
//! job runner host.
//!
//! Empty until the storage-node issue.
