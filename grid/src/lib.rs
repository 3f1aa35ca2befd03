//! What nodes and gateways both speak, below the object layer (`cluster`)
//! and the node daemon (`storage-node`):
//!
//! * [`tls`]: identities, and TLS 1.3 with keys pinned by the cluster map
//!   on every node connection (the only authentication node RPC has);
//! * [`node_api`]: the node protocol (paths, records, limits) shared by
//!   the server in `storage-node` and the typed client [`node_client`];
//! * [`task`]: the job task call and its streamed frames;
//! * [`chunk_io`]: the cluster map in use ([`chunk_io::Grid`]), placement
//!   of a chunk's shards, and shard reads and writes across nodes;
//! * [`membership`]: agreeing on and spreading the cluster map;
//! * [`signed_map`]: who may change the map (the owner, or a majority of
//!   nodes for liveness);
//! * [`replicas`]: metadata records on replica sets, written and read by
//!   quorum;
//! * [`table`]: one record kind on its replica set, typed: the generic
//!   get / put / scan every kind of metadata goes through;
//! * [`blocking()`]: the one way blocking work leaves an async thread;
//! * [`clock`]: the wall clock in the milliseconds records carry.

pub mod blocking;
pub mod chunk_io;
pub mod clock;
pub mod membership;
pub mod metrics_text;
pub mod node_api;
pub mod node_client;
pub mod replicas;
pub mod signed_map;
pub mod stragglers;
pub mod table;
pub mod task;
pub mod tls;

pub use blocking::{blocking, BlockingError};
pub use chunk_io::Grid;
pub use node_client::{ClientOptions, NodeClient, RpcError};
