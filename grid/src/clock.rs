//! The wall clock as the grid records it: milliseconds since the Unix
//! epoch, in records, leases, map epochs and repair schedules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch; 0 if the clock is before it
/// (a broken clock must not stop a node, and 0 sorts as "long ago").
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
