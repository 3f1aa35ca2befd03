//! The node daemon: a shard store on disk ([`shard_store`]), metadata
//! tables (`metadata::db`), and the authenticated node RPC over
//! both ([`rpc_server`], protocol in `grid::node_api`), run by
//! `gridstore node --config node.toml` ([`daemon`]), which also collects
//! unreferenced shards ([`gc`]), repairs and scrubs what it should hold
//! ([`repair`], [`scrub`], [`anti_entropy`]) and runs job tasks beside the
//! shards they read ([`jobs`]), and answers storage audits ([`audit`]). The daemon owns the node core ([`node`])
//! and hands it to each of these; none of them reaches back into another.

pub mod anti_entropy;
pub mod audit;
pub mod config;
pub mod daemon;
pub mod file_io;
pub mod gc;
pub mod jobs;
pub mod liveness;
pub mod metrics;
pub mod node;
pub mod outage;
pub mod peer_view;
pub mod repair;
pub mod repair_budget;
pub mod repair_state;
pub mod rpc_server;
pub mod scrub;
pub mod shard_store;

pub use config::NodeConfig;
pub use file_io::IoBackend;
pub use gc::GcReport;
pub use node::{Node, NodeError};
pub use shard_store::{
    ShardKey, ShardReader, ShardStore, ShardStoreConfig, ShardWriter, StoreError, Usage,
};
