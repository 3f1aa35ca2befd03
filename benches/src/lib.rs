//! Self-benchmarks a farm operator runs on their own hardware
//! (`gridstore bench …`), in the spirit of `minio speedtest`.
//!
//! Every figure is a ratio-friendly throughput measured in the same run as
//! its reference (memcpy, the AEAD stage), because absolute numbers on a
//! shared machine say little. The exception is `s3_load` (`gridstore
//! bench s3`), a load generator for any S3 endpoint, whose absolute figures
//! are the point.

pub mod codec_speed;
pub mod node_speed;
pub mod repair_speed;
pub mod s3_load;
mod timing;

pub use timing::{median, median_ratio, Case, Timing};
