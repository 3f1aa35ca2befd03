//! Front ends over `cluster`: S3 on the `s3s` crate (which owns the
//! protocol: routing, SigV4 and presigned URLs, aws-chunked bodies, XML,
//! error codes) and WebDAV on the `dav-server` crate ([`webdav`]).
//!
//! [`S3Gateway`] maps S3 operations to [`cluster::ObjectStore`] calls;
//! [`auth`] checks signatures against the access keys stored in the
//! cluster and decides what anonymous requests may do; [`server`] runs it
//! all on hyper with a bound on concurrent requests, completing s3s's
//! error answers with AWS's messages ([`errors`]) and mending signed
//! requests s3s would refuse for the wrong reason; [`tls`] is the
//! optional TLS of every listener.

pub mod access_log;
pub mod admin_listener;
pub mod admission;
pub mod auth;
mod convert;
pub mod errors;
pub mod jobs;
pub mod listener;
pub mod metrics;
pub mod recent_errors;
pub mod s3;
pub mod server;
mod signing;
pub mod status_page;
pub mod tls;
pub mod webdav;

pub use s3::S3Gateway;
