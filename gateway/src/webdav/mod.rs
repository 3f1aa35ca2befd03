//! WebDAV over the object layer, on its own listener. The protocol
//! (methods, multistatus XML, If headers, lock semantics) is dav-server's;
//! this module supplies its filesystem ([`fs::GridFs`]: buckets, folders
//! as key prefixes, objects), its lock system ([`lock::GridLs`]: locks in
//! the cluster, shared by every gateway) and the listener with HTTP Basic
//! authentication against the S3 access keys ([`server`]).

pub mod fs;
pub mod lock;
mod meta;
mod props;
pub mod server;
mod writer;

pub use fs::{Caller, GridFs};
pub use lock::GridLs;
pub use server::{handler, serve, WebDavError};
