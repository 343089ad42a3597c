//! Wall-clock time as an *input*.
//!
//! The core never reads the system clock (DESIGN §3). Some protocol fields are wall-clock
//! values, though: reservation `expire`, voucher expirations, certificate validity. The adapter
//! tells the node the current unix time at construction and whenever it drifts; the node maps its
//! monotonic `Instant`s onto that reference, and shares the result with the parts (certificate
//! verifiers, quinn-proto's token time source) that need "now" in unix seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared, cheaply clonable "current unix time in milliseconds", written by the node and read by
/// certificate verifiers and token validation.
#[derive(Debug, Clone)]
pub struct WallClock {
    unix_millis: Arc<AtomicU64>,
}

impl WallClock {
    /// A clock that reads `unix` until it is next set.
    #[must_use]
    pub fn new(unix: Duration) -> Self {
        Self {
            unix_millis: Arc::new(AtomicU64::new(saturating_millis(unix))),
        }
    }

    /// Sets the current unix time.
    pub fn set(&self, unix: Duration) {
        self.unix_millis
            .store(saturating_millis(unix), Ordering::Relaxed);
    }

    /// The current unix time.
    #[must_use]
    pub fn unix(&self) -> Duration {
        Duration::from_millis(self.unix_millis.load(Ordering::Relaxed))
    }

    /// The current unix time in whole seconds.
    #[must_use]
    pub fn unix_secs(&self) -> u64 {
        self.unix().as_secs()
    }
}

fn saturating_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Maps monotonic `Instant`s onto unix time, from one `(Instant, unix)` reference pair supplied by
/// the adapter.
#[derive(Debug, Clone, Copy)]
pub struct UnixAnchor {
    at: Instant,
    unix: Duration,
}

impl UnixAnchor {
    /// `unix` was the wall-clock time at monotonic instant `at`.
    #[must_use]
    pub fn new(at: Instant, unix: Duration) -> Self {
        Self { at, unix }
    }

    /// The unix time at `now`. Instants before the anchor map to the anchor's time minus the
    /// difference, saturating at the epoch.
    #[must_use]
    pub fn unix_at(&self, now: Instant) -> Duration {
        if now >= self.at {
            self.unix + (now - self.at)
        } else {
            self.unix.saturating_sub(self.at - now)
        }
    }

    /// The monotonic instant at which unix time `unix` is reached, saturating at the anchor for
    /// times in the past.
    #[must_use]
    pub fn instant_at(&self, unix: Duration) -> Instant {
        self.at + unix.saturating_sub(self.unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_maps_instants_both_ways() {
        let at = crate::testing::virtual_epoch();
        let anchor = UnixAnchor::new(at, Duration::from_secs(1_000));
        assert_eq!(
            anchor.unix_at(at + Duration::from_secs(5)),
            Duration::from_secs(1_005)
        );
        assert_eq!(
            anchor.instant_at(Duration::from_secs(1_010)),
            at + Duration::from_secs(10)
        );
        assert_eq!(anchor.instant_at(Duration::from_secs(10)), at);
    }

    #[test]
    fn wall_clock_is_shared_between_clones() {
        let clock = WallClock::new(Duration::from_secs(7));
        let reader = clock.clone();
        clock.set(Duration::from_secs(9));
        assert_eq!(reader.unix_secs(), 9);
    }
}
