//! Reference-model pieces shared by the relay's property tests ([`super::model_tests`] and
//! [`super::state_machine_tests`]): the test peers and source addresses, a token bucket stated
//! plainly, a check of the rate bound a token bucket promises (DESIGN §5.1), and the refusal
//! counters recounted from a log. Everything here recomputes its answers by scanning plain data;
//! nothing is cached. Times are virtual: a `Duration` since the test's epoch.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use libp2p_identity::PeerId;

use super::limits::RateLimit;
use super::rate::RateDecision;
use super::refusal::{RefusalReason, RejectionCounters};
use super::wire::Status;

/// Number of test peers.
pub(crate) const PEERS: usize = 5;

/// The test peers, derived once (key generation is the slow part of a step otherwise).
static PEER_IDS: LazyLock<[PeerId; PEERS]> = LazyLock::new(|| {
    std::array::from_fn(|n| {
        let seed = u8::try_from(n + 1).expect("PEERS fits a byte");
        crate::identity::keypair_from_seed([seed; 32])
            .public()
            .to_peer_id()
    })
});

/// Test peer `i` (`i < PEERS`); peer `i` has the key of seed byte `i + 1`.
pub(crate) fn peer(i: usize) -> PeerId {
    PEER_IDS[i]
}

/// The index of a test peer.
pub(crate) fn peer_index(p: &PeerId) -> usize {
    PEER_IDS
        .iter()
        .position(|q| q == p)
        .expect("one of the test peers")
}

/// Source addresses and, written out by hand, the IP group each belongs to: one group per IPv4
/// address, one per IPv6 /64, and an IPv4-mapped IPv6 address in the group of the IPv4 address
/// it carries (DESIGN §5.1, [`super::limits::IpGroup`]). Several addresses share a group. The
/// first four are the addresses `model_tests` draws from.
pub(crate) const IPS: [(&str, usize); 7] = [
    ("192.0.2.1", 0),
    ("192.0.2.2", 1),
    ("2001:db8::1", 2),
    ("2001:db8::ffff:2", 2),
    ("::ffff:192.0.2.1", 0),
    ("2001:db8:0:1::1", 3),
    ("::ffff:192.0.2.2", 1),
];

/// Number of distinct groups in [`IPS`].
pub(crate) const IP_GROUPS: usize = 4;

/// Source address `i` of [`IPS`].
pub(crate) fn ip(i: usize) -> IpAddr {
    IPS[i].0.parse().expect("literal address")
}

/// The index in [`IPS`] of a source address.
pub(crate) fn ip_index(addr: IpAddr) -> usize {
    (0..IPS.len())
        .find(|&i| ip(i) == addr)
        .expect("one of the test addresses")
}

/// The hand-written group label of source address `i`.
pub(crate) fn group_of(i: usize) -> usize {
    IPS[i].1
}

/// An address of group label `g`.
pub(crate) fn group_ip(g: usize) -> IpAddr {
    ip((0..IPS.len())
        .find(|&i| group_of(i) == g)
        .expect("every label has an address"))
}

/// One key's bucket: `level` units at virtual time `at`.
#[derive(Debug, Clone, Copy)]
struct ModelBucket {
    level: u128,
    at: Duration,
}

/// Token buckets per key, stated plainly (DESIGN §5.1 "token buckets"; [`super::rate`]): a full
/// bucket holds `burst × period_ns` units, a request costs `period_ns` units, and every
/// nanosecond adds `burst` units, so refill is exact. A key is tracked exactly while its bucket
/// is not full; a new key is refused while `max_keys` keys are tracked. `burst = 0` limits
/// nothing and tracks nothing.
#[derive(Debug, Clone)]
pub(crate) struct ModelRate<K> {
    limit: RateLimit,
    max_keys: usize,
    buckets: BTreeMap<K, ModelBucket>,
}

impl<K: Ord + Copy> ModelRate<K> {
    /// Buckets of `limit`, at most `max_keys` keys tracked.
    pub(crate) fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit,
            max_keys,
            buckets: BTreeMap::new(),
        }
    }

    /// The rate these buckets apply.
    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    fn burst(&self) -> u128 {
        u128::from(self.limit.burst)
    }

    fn cost(&self) -> u128 {
        self.limit.period.as_nanos()
    }

    fn cap(&self) -> u128 {
        self.burst() * self.cost()
    }

    /// Units in `key`'s bucket at `now` (a key never charged has a full bucket).
    fn level(&self, now: Duration, key: &K) -> u128 {
        match self.buckets.get(key) {
            None => self.cap(),
            Some(b) => {
                let dt = now.saturating_sub(b.at).as_nanos();
                (b.level + dt * self.burst()).min(self.cap())
            }
        }
    }

    /// Whether `key`'s bucket is not full at `now`.
    pub(crate) fn is_tracked(&self, now: Duration, key: &K) -> bool {
        self.burst() != 0 && self.level(now, key) < self.cap()
    }

    /// Number of keys whose bucket is not full at `now`, counted by scanning.
    pub(crate) fn tracked(&self, now: Duration) -> usize {
        self.buckets
            .keys()
            .filter(|k| self.is_tracked(now, k))
            .count()
    }

    /// What a request from `key` at `now` gets, without taking a token.
    pub(crate) fn decide(&self, now: Duration, key: &K) -> RateDecision {
        if self.burst() == 0 {
            return RateDecision::Allowed;
        }
        if !self.is_tracked(now, key) {
            return if self.tracked(now) >= self.max_keys {
                RateDecision::TableFull
            } else {
                RateDecision::Allowed
            };
        }
        let level = self.level(now, key);
        if level >= self.cost() {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after: nanos((self.cost() - level).div_ceil(self.burst())),
            }
        }
    }

    /// Take one token from `key`'s bucket at `now` (after [`Self::decide`] allowed it).
    pub(crate) fn charge(&mut self, now: Duration, key: K) {
        if self.burst() == 0 {
            return;
        }
        let level = self.level(now, &key) - self.cost();
        self.buckets.insert(key, ModelBucket { level, at: now });
    }

    /// When `key`'s bucket, tracked at `now`, is full again.
    fn full_at(&self, key: &K) -> Option<Duration> {
        let b = self.buckets.get(key)?;
        Some(b.at + nanos((self.cap() - b.level).div_ceil(self.burst())))
    }

    /// The latest instant at which a bucket tracked at `now` is full again; `None` when no key
    /// is tracked.
    pub(crate) fn all_full_at(&self, now: Duration) -> Option<Duration> {
        self.buckets
            .keys()
            .filter(|k| self.is_tracked(now, k))
            .filter_map(|k| self.full_at(k))
            .max()
    }

    /// The instants after `now` at which a tracked bucket gains its next token or becomes full:
    /// where the answers change, so where a test should step time to (and just before).
    pub(crate) fn milestones(&self, now: Duration) -> Vec<Duration> {
        let mut out = Vec::new();
        for k in self.buckets.keys().filter(|k| self.is_tracked(now, k)) {
            if let RateDecision::Limited { retry_after } = self.decide(now, k) {
                out.push(now + retry_after);
            }
            out.extend(self.full_at(k));
        }
        out
    }
}

/// The rate checks of a table in their documented order, per peer and then per IP group: both
/// buckets are charged only when both admit. A refusal names the limit (`limited[0]` per peer,
/// `limited[1]` per IP) or [`RefusalReason::RateTableFull`] for a new key in a full table.
pub(crate) fn charge_both<P: Ord + Copy, G: Ord + Copy>(
    now: Duration,
    (peer_rate, peer): (&mut ModelRate<P>, P),
    (ip_rate, group): (&mut ModelRate<G>, G),
    limited: [RefusalReason; 2],
) -> Result<(), RefusalReason> {
    let refusal = |d, reason| match d {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { .. } => Err(reason),
        RateDecision::TableFull => Err(RefusalReason::RateTableFull),
    };
    refusal(peer_rate.decide(now, &peer), limited[0])?;
    refusal(ip_rate.decide(now, &group), limited[1])?;
    peer_rate.charge(now, peer);
    ip_rate.charge(now, group);
    Ok(())
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).expect("test durations fit u64 nanoseconds"))
}

/// The requests a rate limiter let through, per key, as a test observed them from its answers.
#[derive(Debug, Clone)]
pub(crate) struct RateAudit<K> {
    passed: BTreeMap<K, Vec<Duration>>,
}

impl<K: Ord + Copy + std::fmt::Debug> RateAudit<K> {
    /// No request seen yet.
    pub(crate) fn new() -> Self {
        Self {
            passed: BTreeMap::new(),
        }
    }

    /// A request from `key` passed the limiter at `now` (times never go backwards).
    pub(crate) fn record(&mut self, key: K, now: Duration) {
        self.passed.entry(key).or_default().push(now);
    }

    /// Assert the bound a token bucket of `limit` promises: in any window `[a, b]` a key passes
    /// at most `burst + ⌊(b − a) × burst / period⌋` requests (a full bucket, plus what refills
    /// meanwhile). Nothing to check for an unlimited rate.
    pub(crate) fn assert_within(&self, limit: RateLimit) {
        if limit.is_unlimited() {
            return;
        }
        let burst = u128::from(limit.burst);
        let period = limit.period.as_nanos();
        for (key, times) in &self.passed {
            for (i, a) in times.iter().enumerate() {
                for (j, b) in times.iter().enumerate().skip(i) {
                    let passed = (j - i + 1) as u128;
                    let allowed = burst + (*b - *a).as_nanos() * burst / period;
                    assert!(
                        passed <= allowed,
                        "{key:?} passed {passed} requests in [{a:?}, {b:?}], more than {allowed} \
                         allowed by {limit:?}"
                    );
                }
            }
        }
    }
}

/// The status a refusal for `reason` answers with, stated from the Circuit Relay v2 spec and
/// DESIGN §5.1 (not from [`RefusalReason::status`]): a CONNECT to a peer without reservation is
/// `NO_RESERVATION`, a CONNECT to oneself `PERMISSION_DENIED`, every count or rate limit
/// `RESOURCE_LIMIT_EXCEEDED`.
pub(crate) fn expected_status(reason: RefusalReason) -> Status {
    match reason {
        RefusalReason::NoReservation => Status::NoReservation,
        RefusalReason::ConnectToSelf => Status::PermissionDenied,
        _ => Status::ResourceLimitExceeded,
    }
}

/// Whether `reason` is a rate limit's (a refusal that took no token).
pub(crate) fn is_rate_refusal(reason: RefusalReason) -> bool {
    matches!(
        reason,
        RefusalReason::ReservationRatePerPeer
            | RefusalReason::ReservationRatePerIp
            | RefusalReason::CircuitRatePerPeer
            | RefusalReason::CircuitRatePerIp
            | RefusalReason::RateTableFull
    )
}

/// Assert that `counters` hold, for every reason, the number of times it occurs in `log`, and
/// that their total and listing agree.
pub(crate) fn assert_counters(counters: &RejectionCounters, log: &[RefusalReason]) {
    for reason in RefusalReason::ALL {
        let want = log.iter().filter(|&&r| r == reason).count() as u64;
        assert_eq!(counters.get(reason), want, "counter of {reason:?}");
    }
    assert_eq!(counters.total(), log.len() as u64);
    let listed: Vec<(RefusalReason, u64)> = counters.iter().collect();
    assert_eq!(listed.len(), RefusalReason::ALL.len());
    for (reason, n) in listed {
        assert_eq!(n, counters.get(reason));
    }
}
