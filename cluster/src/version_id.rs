//! Version ids that sort by time across gateways: a hybrid logical clock.
//!
//! An id is 16 bytes: 8 bytes of HLC timestamp (48 bits of milliseconds
//! since the Unix epoch, 16 bits of logical counter), then 8 bytes naming
//! the gateway process. Big-endian, so byte order is time order, and two
//! gateways never produce the same id. The logical counter keeps ids
//! strictly increasing inside one process even when the wall clock stalls
//! or steps back, and [`Hlc::observe`] moves a clock past any id it sees
//! from another gateway, so a version written after another one was read
//! sorts after it whatever the clocks say.

use metadata::model::VERSION_ID_LEN;
use std::sync::Mutex;

/// Ids newer than this many ms ahead of our clock are not trusted to pull
/// the clock forward (a peer with a broken clock must not drag us years
/// ahead).
pub const MAX_FORWARD_DRIFT_MS: u64 = 60_000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionId(pub [u8; VERSION_ID_LEN]);

impl VersionId {
    /// Milliseconds since the Unix epoch when the id was made.
    pub fn time_ms(&self) -> u64 {
        self.hlc() >> 16
    }

    /// The clock reading (milliseconds << 16 | counter): also used as the
    /// revision of mutable records.
    pub fn hlc(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// 32 lowercase hex digits: the form S3 clients see.
    pub fn to_text(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_text(s: &str) -> Option<Self> {
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        let mut b = [0u8; VERSION_ID_LEN];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Self(b))
    }
}

impl std::fmt::Debug for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VersionId({})", self.to_text())
    }
}

/// One process's clock. Cheap to share behind an `Arc`.
pub struct Hlc {
    node: [u8; 8],
    last: Mutex<u64>,
    now_ms: fn() -> u64,
}

impl Default for Hlc {
    fn default() -> Self {
        Self::new()
    }
}

impl Hlc {
    /// A clock with a random process id and the system wall clock.
    pub fn new() -> Self {
        Self::with_clock(rand::random(), grid::clock::now_ms)
    }

    /// A clock with a given process id and time source (tests).
    pub fn with_clock(node: [u8; 8], now_ms: fn() -> u64) -> Self {
        Self {
            node,
            last: Mutex::new(0),
            now_ms,
        }
    }

    /// A new id, greater than every id this clock made or observed.
    pub fn next(&self) -> VersionId {
        let wall = ((self.now_ms)() & ((1 << 48) - 1)) << 16;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // Counter overflow (65 536 ids in one ms) borrows the next ms.
        *last = wall.max(*last + 1);
        let mut id = [0u8; VERSION_ID_LEN];
        id[..8].copy_from_slice(&last.to_be_bytes());
        id[8..].copy_from_slice(&self.node);
        VersionId(id)
    }

    /// Move past an id seen from elsewhere (a manifest just read), unless
    /// it claims a time too far ahead of our clock to be believed.
    pub fn observe(&self, seen: &VersionId) {
        let wall = (self.now_ms)();
        if seen.time_ms() > wall + MAX_FORWARD_DRIFT_MS {
            tracing::warn!(
                ahead_ms = seen.time_ms() - wall,
                "ignoring a version id from a clock far ahead of ours"
            );
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(seen.hlc());
    }
}
