//! The object layer every front end uses. Its first pieces are the node
//! RPC: its authentication ([`rpc_auth`]), its protocol ([`node_api`], shared
//! with the server in `storage-node`, which depends on this crate) and a
//! typed client ([`node_client`]).

pub mod chunk_io;
pub mod erasure_default;
pub mod naming;
pub mod node_api;
pub mod node_client;
pub mod rpc_auth;
pub mod version_id;

pub use node_client::{ClientOptions, NodeClient, NodeError};
