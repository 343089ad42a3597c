//! State-machine tests (proptest-state-machine) of the relay's admission layer, each table
//! against a small reference model that states DESIGN §5.1 directly (plain lists, counts
//! recomputed by scanning, nothing cached; the shared pieces are in [`super::test_model`]):
//!
//! - `reservations`, of [`super::reservations::ReservationTable`];
//! - `circuits`, of [`super::circuits::CircuitTable`];
//! - `limits`, of [`super::limits::RelayLimits`] and its validation, [`super::rate::RateLimiter`]
//!   built from its [`super::limits::RateLimit`]s and keyed by [`super::limits::IpGroup`], and
//!   [`super::refusal::RejectionCounters`].
//!
//! Each run is deterministic (a fixed RNG seed) and replays the cases recorded in its regression
//! file under `core/proptest-regressions/relay/state_machine_tests/` first. A recorded case is a
//! seed: it replays the same transitions only while the strategies of its test stay unchanged.

mod circuits;
mod limits;
mod reservations;

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

use super::limits::RateLimit;
use crate::testing::virtual_epoch;

/// The configuration of every state-machine test here: `cases` cases from a fixed seed, failures
/// recorded in the regression file beside the source (`proptest-regressions/`, committed).
fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x0d3b_2b5e_7a7e),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// A test's virtual time: `Duration`s since an epoch from [`virtual_epoch`] (the core has no
/// clock; only differences between instants matter).
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    /// A clock whose virtual time zero is a fresh epoch.
    fn new() -> Self {
        Self(virtual_epoch())
    }

    /// The instant of virtual time `t`.
    fn at(self, t: Duration) -> Instant {
        self.0 + t
    }

    /// The virtual time of instant `t` (not before the epoch).
    fn since(self, t: Instant) -> Duration {
        t.duration_since(self.0)
    }
}

/// A burst of one to three over a period of 1 ms to `max_period`, to the nanosecond (so a token
/// usually takes a fraction of a nanosecond, and waits must be rounded up).
fn limited_rate(max_period: Duration) -> impl Strategy<Value = RateLimit> {
    let max_ns = u64::try_from(max_period.as_nanos()).expect("a short period");
    (1..=3u32, 1_000_000..=max_ns)
        .prop_map(|(burst, ns)| RateLimit::new(burst, Duration::from_nanos(ns)))
}

/// A valid rate for the tables: unlimited one time in `1 + limited`, else a
/// [`limited_rate`].
fn rate_limit(limited: u32, max_period: Duration) -> impl Strategy<Value = RateLimit> {
    prop_oneof![
        1 => Just(RateLimit::unlimited()),
        limited => limited_rate(max_period),
    ]
}

/// A step of virtual time from `now`: up to `max_step` at random, or exactly to one of
/// `milestones` (the instants after `now` at which an answer changes) or one nanosecond before
/// it, where an off-by-one in a `<` would show.
fn advance(
    now: Duration,
    milestones: Vec<Duration>,
    max_step: Duration,
) -> BoxedStrategy<Duration> {
    let max_ms = u64::try_from(max_step.as_millis()).expect("a short step");
    let random = (0..max_ms).prop_map(Duration::from_millis);
    let later: Vec<Duration> = milestones.into_iter().filter(|&t| t > now).collect();
    if later.is_empty() {
        return random.boxed();
    }
    prop_oneof![
        2 => random,
        2 => (proptest::sample::select(later), 0..2u64)
            .prop_map(move |(t, early)| t - now - Duration::from_nanos(early)),
    ]
    .boxed()
}
