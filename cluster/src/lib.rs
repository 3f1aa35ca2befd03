//! The object layer every front end uses. Its first piece is the
//! authentication of node RPC, shared by the client (here) and the node's
//! server (`storage-node`), which depends on this crate.

pub mod rpc_auth;
