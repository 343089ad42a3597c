//! Token-bucket rate limiting per key (a peer or an [`IpGroup`](super::limits::IpGroup)),
//! with a bounded number of tracked keys (DESIGN §3, §5.1).
//!
//! # Exact arithmetic
//!
//! A [`RateLimit`] of `burst` tokens per `period` is kept in integer units: one token is
//! `period` nanoseconds' worth of units, the bucket holds `burst × period_ns` units when full,
//! and every elapsed nanosecond adds `burst` units. Refill after `dt` is therefore exactly
//! `dt × burst / period` tokens with no rounding at all, however the time is sliced: checking
//! at 1 s, 2 s, 3 s gives the same bucket as checking once at 3 s. The values fit in `u128`.
//!
//! # Bounded table
//!
//! A key whose bucket is full is indistinguishable from a key never seen, so the limiter
//! forgets it: a key is tracked only from its first request until its bucket is full again,
//! and full buckets are evicted (earliest first) before anything else is decided. When the
//! table holds `max_keys` keys that are all still refilling, a request from a *new* key is
//! refused with [`RateDecision::TableFull`]. The alternative, evicting an active key, would
//! hand that key a fresh bucket and let anyone who can mint keys (PeerIds are free) reset the
//! rate limit of others; refusing new keys under such a flood costs at most one refill period
//! for newcomers and never lets a limited key through. Known keys keep being served.
//!
//! Time is an input; if `now` goes backwards, no time is taken to have passed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::limits::{MAX_RATE_PERIOD, RateLimit};

/// The answer of a [`RateLimiter`] to one request.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// The request may proceed; a token was taken (by [`RateLimiter::check`]).
    Allowed,
    /// The key's bucket is empty; a token will be available after `retry_after`.
    Limited {
        /// Time until the next token.
        retry_after: Duration,
    },
    /// The key is new and the table is full of keys that are still refilling.
    TableFull,
}

impl RateDecision {
    /// Whether the request may proceed.
    #[must_use]
    pub fn is_allowed(self) -> bool {
        matches!(self, Self::Allowed)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Units in the bucket at `at`.
    level: u128,
    at: Instant,
    /// When the bucket will be full again; its key in `RateLimiter::full_at`.
    full_at: Instant,
}

/// Token buckets keyed by `K`, at most `max_keys` of them.
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    /// Tokens refilled per `period`; 0 = unlimited.
    burst: u128,
    /// `period` in nanoseconds (at least 1 when `burst > 0`).
    period_ns: u128,
    max_keys: usize,
    buckets: BTreeMap<K, Bucket>,
    full_at: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Clone> RateLimiter<K> {
    /// A limiter applying `limit` to each key, tracking at most `max_keys` keys (at least 1).
    ///
    /// A `period` longer than [`MAX_RATE_PERIOD`] is clamped to it and a zero `period` with a
    /// non-zero burst is taken as one nanosecond; [`super::limits::RelayLimits::validate`]
    /// refuses both.
    #[must_use]
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        let period = limit.period.min(MAX_RATE_PERIOD);
        Self {
            burst: u128::from(limit.burst),
            period_ns: period.as_nanos().max(1),
            max_keys: max_keys.max(1),
            buckets: BTreeMap::new(),
            full_at: BTreeSet::new(),
        }
    }

    /// Number of keys tracked (keys whose bucket is not full, as of the last `check`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Decide a request from `key` at `now` and, if allowed, take a token.
    pub fn check(&mut self, now: Instant, key: &K) -> RateDecision {
        if self.burst == 0 {
            return RateDecision::Allowed;
        }
        self.evict_full(now);
        let cost = self.period_ns;
        let Some(bucket) = self.buckets.get_mut(key) else {
            if self.buckets.len() >= self.max_keys {
                return RateDecision::TableFull;
            }
            let level = self.capacity() - cost;
            let full_at = full_at(now, level, self.burst, self.period_ns);
            self.buckets.insert(
                key.clone(),
                Bucket {
                    level,
                    at: now,
                    full_at,
                },
            );
            self.full_at.insert((full_at, key.clone()));
            return RateDecision::Allowed;
        };
        let level = refilled(bucket, now, self.burst, self.period_ns);
        if level < cost {
            return RateDecision::Limited {
                retry_after: nanos(div_ceil(cost - level, self.burst)),
            };
        }
        let old_full_at = bucket.full_at;
        bucket.level = level - cost;
        bucket.at = now.max(bucket.at);
        bucket.full_at = full_at(bucket.at, bucket.level, self.burst, self.period_ns);
        let new_full_at = bucket.full_at;
        self.full_at.remove(&(old_full_at, key.clone()));
        self.full_at.insert((new_full_at, key.clone()));
        RateDecision::Allowed
    }

    /// What [`Self::check`] would answer at `now`, without taking a token.
    pub fn peek(&self, now: Instant, key: &K) -> RateDecision {
        if self.burst == 0 {
            return RateDecision::Allowed;
        }
        let cost = self.period_ns;
        match self.buckets.get(key) {
            Some(bucket) if bucket.full_at > now => {
                let level = refilled(bucket, now, self.burst, self.period_ns);
                if level < cost {
                    RateDecision::Limited {
                        retry_after: nanos(div_ceil(cost - level, self.burst)),
                    }
                } else {
                    RateDecision::Allowed
                }
            }
            Some(_) => RateDecision::Allowed,
            None => {
                let evictable = self.full_at.first().is_some_and(|(t, _)| *t <= now);
                if self.buckets.len() >= self.max_keys && !evictable {
                    RateDecision::TableFull
                } else {
                    RateDecision::Allowed
                }
            }
        }
    }

    /// Forget every key whose bucket is full at `now`. [`Self::check`] does this itself; call
    /// it to release memory early.
    pub fn evict_full(&mut self, now: Instant) {
        while let Some((t, _)) = self.full_at.first() {
            if *t > now {
                break;
            }
            if let Some((_, key)) = self.full_at.pop_first() {
                self.buckets.remove(&key);
            }
        }
    }

    /// The instant at which the last tracked bucket is full again (and the table empty).
    #[must_use]
    pub fn all_full_at(&self) -> Option<Instant> {
        self.full_at.last().map(|(t, _)| *t)
    }

    fn capacity(&self) -> u128 {
        self.burst * self.period_ns
    }
}

/// The bucket's level at `now`, capped at capacity.
fn refilled(bucket: &Bucket, now: Instant, burst: u128, period_ns: u128) -> u128 {
    let elapsed = now.saturating_duration_since(bucket.at).as_nanos();
    bucket
        .level
        .saturating_add(elapsed.saturating_mul(burst))
        .min(burst * period_ns)
}

/// When a bucket at `level` at `at` is full.
fn full_at(at: Instant, level: u128, burst: u128, period_ns: u128) -> Instant {
    let missing = burst * period_ns - level;
    // `missing / burst ≤ period_ns ≤ MAX_RATE_PERIOD`: far from overflowing an `Instant`. Should
    // it overflow anyway, the bucket counts as full at once (it is forgotten early), which
    // cannot panic.
    at.checked_add(nanos(div_ceil(missing, burst)))
        .unwrap_or(at)
}

fn div_ceil(a: u128, b: u128) -> u128 {
    a.div_ceil(b)
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::virtual_epoch;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn burst_then_limited_with_exact_retry_after() {
        let t0 = virtual_epoch();
        let mut rl = RateLimiter::new(RateLimit::new(30, secs(120)), 16);
        for _ in 0..30 {
            assert_eq!(rl.check(t0, &1u8), RateDecision::Allowed);
        }
        assert_eq!(
            rl.check(t0, &1u8),
            RateDecision::Limited {
                retry_after: secs(4)
            }
        );
        // Another key has its own bucket.
        assert_eq!(rl.check(t0, &2u8), RateDecision::Allowed);
    }

    #[test]
    fn refill_is_exact_over_virtual_time() {
        let t0 = virtual_epoch();
        // 3 tokens per 10 s: one token every 3.333… s, which no float or integer-ms scheme
        // represents exactly.
        let mut rl = RateLimiter::new(RateLimit::new(3, secs(10)), 16);
        for _ in 0..3 {
            assert!(rl.check(t0, &0u8).is_allowed());
        }
        // One token takes 10/3 s = 3_333_333_333.33 ns: not there 1 ns before the ceiling.
        let one_token = Duration::from_nanos(3_333_333_334);
        assert_eq!(
            rl.peek(t0 + one_token - Duration::from_nanos(1), &0u8),
            RateDecision::Limited {
                retry_after: Duration::from_nanos(1)
            }
        );
        assert!(rl.check(t0 + one_token, &0u8).is_allowed());
        // 10 s after t0 exactly three tokens have been refilled in total, so after the one
        // taken at `one_token`, two remain.
        let t = t0 + secs(10);
        assert!(rl.check(t, &0u8).is_allowed());
        assert!(rl.check(t, &0u8).is_allowed());
        assert!(!rl.check(t, &0u8).is_allowed());
    }

    #[test]
    fn slicing_checks_finely_loses_no_fraction_of_a_token() {
        let t0 = virtual_epoch();
        let mut rl = RateLimiter::new(RateLimit::new(3, secs(10)), 16);
        for _ in 0..3 {
            assert!(rl.check(t0, &0u8).is_allowed());
        }
        // Poll every millisecond for 10 s, taking tokens as soon as they appear: exactly
        // three are granted, and each no earlier than its exact refill time.
        let mut granted = Vec::new();
        for ms in 1..=10_000u64 {
            let t = t0 + Duration::from_millis(ms);
            if rl.check(t, &0u8).is_allowed() {
                granted.push(ms);
            }
        }
        assert_eq!(granted, vec![3_334, 6_667, 10_000]);
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let t0 = virtual_epoch();
        let mut rl = RateLimiter::new(RateLimit::new(2, secs(2)), 16);
        assert!(rl.check(t0, &1u8).is_allowed());
        assert!(rl.check(t0, &2u8).is_allowed());
        assert!(rl.check(t0, &2u8).is_allowed());
        assert_eq!(rl.len(), 2);
        assert_eq!(rl.all_full_at(), Some(t0 + secs(2)));
        rl.evict_full(t0 + secs(1));
        assert_eq!(rl.len(), 1, "key 1 refilled its one token after 1 s");
        rl.evict_full(t0 + secs(2));
        assert!(rl.is_empty());
        assert_eq!(rl.all_full_at(), None);
    }

    #[test]
    fn new_key_is_refused_when_table_is_full_of_active_keys() {
        let t0 = virtual_epoch();
        let mut rl = RateLimiter::new(RateLimit::new(2, secs(2)), 2);
        assert!(rl.check(t0, &1u8).is_allowed());
        assert!(rl.check(t0, &2u8).is_allowed());
        assert_eq!(rl.peek(t0, &3u8), RateDecision::TableFull);
        assert_eq!(rl.check(t0, &3u8), RateDecision::TableFull);
        // Known keys are still served.
        assert!(rl.check(t0, &1u8).is_allowed());
        // Once key 2 is full again (1 s) it is evicted and the newcomer gets its slot.
        let t1 = t0 + secs(1);
        assert_eq!(rl.peek(t1, &3u8), RateDecision::Allowed);
        assert!(rl.check(t1, &3u8).is_allowed());
        assert_eq!(rl.len(), 2);
    }

    #[test]
    fn unlimited_rate_tracks_nothing() {
        let t0 = virtual_epoch();
        let mut rl = RateLimiter::new(RateLimit::unlimited(), 1);
        for k in 0..100u8 {
            assert!(rl.check(t0, &k).is_allowed());
        }
        assert!(rl.is_empty());
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let t0 = virtual_epoch() + secs(100);
        let mut rl = RateLimiter::new(RateLimit::new(1, secs(10)), 4);
        assert!(rl.check(t0, &0u8).is_allowed());
        assert!(!rl.check(t0 - secs(50), &0u8).is_allowed());
        assert!(rl.check(t0 + secs(10), &0u8).is_allowed());
    }
}
