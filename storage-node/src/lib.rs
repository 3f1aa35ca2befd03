//! The node daemon: the shard store on disk (this crate's first piece), and
//! later the node RPC server, the repair daemon and the job runner host.

pub mod file_io;
pub mod shard_store;

pub use file_io::IoBackend;
pub use shard_store::{ShardKey, ShardStore, ShardWriter, StoreConfig, StoreError, Usage};
