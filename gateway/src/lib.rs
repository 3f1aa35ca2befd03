//! S3 (s3s on hyper) and WebDAV (dav-server) front ends over `cluster`.
//!
//! Empty until the S3 gateway issue.
