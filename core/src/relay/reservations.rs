//! The relay's reservations: RESERVE admission, renewal, expiry (DESIGN §4.3, §5.1).
//!
//! [`ReservationTable`] holds at most one reservation per peer. It decides a RESERVE in this
//! order, and a refusal changes nothing but the rate buckets and the counters:
//!
//! 1. reservations whose deadline has passed are dropped (as by [`ReservationTable::expire`]);
//! 2. the rate limits, per peer and per source [`IpGroup`], renewals included. A request is
//!    charged to both buckets only when both admit it; a request refused later for a count
//!    limit still costs its tokens (it was an attempt);
//! 3. a peer that already holds a reservation renews it ([`Admission::Renewed`]) or, from
//!    another IP address, moves it there ([`Admission::Replaced`]). Neither counts twice toward
//!    any limit: only the per-IP limit of a *new* IP group is checked on a move;
//! 4. otherwise the total and per-IP counts ([`Admission::New`]).
//!
//! A reservation lives for `reservation_ttl` from its last admission: it is live while
//! `now < expires_at`. Deadlines are kept ordered in a `BTreeSet<(Instant, PeerId)>`.
//! Every table here is bounded by `max_reservations` (or, when that is unlimited, by the
//! connections the node holds: a reservation lives only while its connection does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use libp2p_identity::PeerId;

use super::limits::{IpGroup, RelayLimits};
use super::peer_key::PeerKey;
use super::rate::{RateDecision, RateLimiter};
use super::refusal::{Refusal, RefusalReason, RejectionCounters};

/// One peer's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The source IP address of the RESERVE that created or last renewed it.
    pub ip: IpAddr,
    /// The group of `ip` for the per-IP limit.
    pub group: IpGroup,
    /// When the reservation was last admitted.
    pub admitted_at: Instant,
    /// When it ends unless renewed; live while `now < expires_at`.
    pub expires_at: Instant,
}

/// An admitted RESERVE.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The peer had no reservation.
    New {
        /// When the reservation ends unless renewed.
        expires_at: Instant,
    },
    /// The peer renewed its reservation from the same IP address.
    Renewed {
        /// The new end of the reservation.
        expires_at: Instant,
    },
    /// The peer renewed its reservation from another IP address; the reservation moved there.
    Replaced {
        /// The address of the replaced reservation.
        previous_ip: IpAddr,
        /// The new end of the reservation.
        expires_at: Instant,
    },
}

impl Admission {
    /// When the reservation ends unless renewed (sent as `expire`).
    #[must_use]
    pub fn expires_at(&self) -> Instant {
        match *self {
            Self::New { expires_at }
            | Self::Renewed { expires_at }
            | Self::Replaced { expires_at, .. } => expires_at,
        }
    }
}

/// The reservations of a relay and their limits.
#[derive(Debug, Clone)]
pub struct ReservationTable {
    limits: RelayLimits,
    /// Keyed by [`PeerKey`]: a lookup compares integers, not PeerId bytes.
    by_peer: BTreeMap<PeerKey, Reservation>,
    deadlines: BTreeSet<(Instant, PeerKey)>,
    /// Reservations per IP group; a group is removed when its count drops to zero.
    per_ip: BTreeMap<IpGroup, u32>,
    peer_rate: RateLimiter<PeerKey>,
    ip_rate: RateLimiter<IpGroup>,
    rejections: RejectionCounters,
}

impl ReservationTable {
    /// An empty table enforcing `limits` (which the caller has validated).
    #[must_use]
    pub fn new(limits: RelayLimits) -> Self {
        let keys = usize::try_from(limits.rate_limiter_max_keys).unwrap_or(usize::MAX);
        Self {
            peer_rate: RateLimiter::new(limits.reservation_rate_per_peer, keys),
            ip_rate: RateLimiter::new(limits.reservation_rate_per_ip, keys),
            limits,
            by_peer: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            per_ip: BTreeMap::new(),
            rejections: RejectionCounters::default(),
        }
    }

    /// Decide a RESERVE from `peer`, received from `ip` at `now`.
    pub fn admit(&mut self, now: Instant, peer: PeerId, ip: IpAddr) -> Result<Admission, Refusal> {
        let _expired = self.expire(now);
        let group = IpGroup::of(ip);
        let key = PeerKey::new(peer);
        if let Err(reason) = self.charge_rates(now, key, group) {
            return Err(self.refuse(reason));
        }
        let expires_at = now.checked_add(self.limits.reservation_ttl).unwrap_or(now);
        if let Some(old) = self.by_peer.get(&key).copied() {
            if old.group != group && self.ip_full(group) {
                return Err(self.refuse(RefusalReason::ReservationsPerIpFull));
            }
            if old.group == group {
                // The common renewal: same IP group, so only the entry and its deadline move
                // (two tree operations instead of six; DESIGN §10 decisions per second).
                if let Some(entry) = self.by_peer.get_mut(&key) {
                    entry.ip = ip;
                    entry.admitted_at = now;
                    entry.expires_at = expires_at;
                }
                self.deadlines.remove(&(old.expires_at, key));
                self.deadlines.insert((expires_at, key));
            } else {
                self.remove_key(key);
                self.insert(key, ip, group, now, expires_at);
            }
            return Ok(if old.ip == ip {
                Admission::Renewed { expires_at }
            } else {
                Admission::Replaced {
                    previous_ip: old.ip,
                    expires_at,
                }
            });
        }
        let max = self.limits.max_reservations;
        if max != 0 && self.by_peer.len() >= max as usize {
            return Err(self.refuse(RefusalReason::ReservationsFull));
        }
        if self.ip_full(group) {
            return Err(self.refuse(RefusalReason::ReservationsPerIpFull));
        }
        self.insert(key, ip, group, now, expires_at);
        Ok(Admission::New { expires_at })
    }

    /// Remove and return, in deadline order, the peers whose reservation ended at or before
    /// `now`. Harmless when nothing is due.
    #[must_use]
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let mut gone = Vec::new();
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let _ = self.remove_key(key);
            gone.push(key.peer());
        }
        gone
    }

    /// Remove `peer`'s reservation (its connection closed); returns it if there was one.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Reservation> {
        self.remove_key(PeerKey::new(*peer))
    }

    fn remove_key(&mut self, key: PeerKey) -> Option<Reservation> {
        let r = self.by_peer.remove(&key)?;
        self.deadlines.remove(&(r.expires_at, key));
        if let Some(count) = self.per_ip.get_mut(&r.group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_ip.remove(&r.group);
            }
        }
        Some(r)
    }

    /// `peer`'s reservation, live or not yet expired by [`Self::expire`].
    #[must_use]
    pub fn get(&self, peer: &PeerId) -> Option<&Reservation> {
        self.by_peer.get(&PeerKey::new(*peer))
    }

    /// Whether `peer` holds a reservation live at `now`.
    #[must_use]
    pub fn is_reserved(&self, now: Instant, peer: &PeerId) -> bool {
        self.by_peer
            .get(&PeerKey::new(*peer))
            .is_some_and(|r| now < r.expires_at)
    }

    /// Number of reservations held (including any past their deadline but not yet expired).
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether the table holds no reservation.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Reservations held from IP group `group`.
    #[must_use]
    pub fn count_for_ip(&self, group: IpGroup) -> u32 {
        self.per_ip.get(&group).copied().unwrap_or(0)
    }

    /// Number of IP groups holding at least one reservation (0 when the table is empty).
    #[must_use]
    pub fn ip_groups(&self) -> usize {
        self.per_ip.len()
    }

    /// The earliest reservation deadline: when to call [`Self::expire`] next.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Refusals so far, per reason.
    #[must_use]
    pub fn rejections(&self) -> &RejectionCounters {
        &self.rejections
    }

    /// Keys tracked by the `(per peer, per IP)` rate limiters; both drop to zero once every
    /// bucket has refilled and a later request (or [`Self::evict_full_rate_buckets`]) ran.
    #[must_use]
    pub fn rate_keys(&self) -> (usize, usize) {
        (self.peer_rate.len(), self.ip_rate.len())
    }

    /// Forget rate buckets that are full at `now` (memory only; decisions are unchanged).
    pub fn evict_full_rate_buckets(&mut self, now: Instant) {
        self.peer_rate.evict_full(now);
        self.ip_rate.evict_full(now);
    }

    fn charge_rates(
        &mut self,
        now: Instant,
        key: PeerKey,
        group: IpGroup,
    ) -> Result<(), RefusalReason> {
        let decide = |d: RateDecision, limited| match d {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { .. } => Err(limited),
            RateDecision::TableFull => Err(RefusalReason::RateTableFull),
        };
        decide(
            self.peer_rate.peek(now, &key),
            RefusalReason::ReservationRatePerPeer,
        )?;
        decide(
            self.ip_rate.peek(now, &group),
            RefusalReason::ReservationRatePerIp,
        )?;
        // `peek` answered `Allowed` for both, so `check` does too: it only takes the tokens.
        let _ = self.peer_rate.check(now, &key);
        let _ = self.ip_rate.check(now, &group);
        Ok(())
    }

    fn ip_full(&self, group: IpGroup) -> bool {
        let max = self.limits.max_reservations_per_ip;
        max != 0 && self.count_for_ip(group) >= max
    }

    fn insert(&mut self, key: PeerKey, ip: IpAddr, group: IpGroup, now: Instant, exp: Instant) {
        self.by_peer.insert(
            key,
            Reservation {
                ip,
                group,
                admitted_at: now,
                expires_at: exp,
            },
        );
        self.deadlines.insert((exp, key));
        *self.per_ip.entry(group).or_insert(0) += 1;
    }

    fn refuse(&mut self, reason: RefusalReason) -> Refusal {
        self.rejections.record(reason);
        Refusal::from(reason)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;
    use crate::relay::limits::RateLimit;
    use crate::relay::wire::Status;
    use crate::testing::virtual_epoch;

    pub(crate) fn peer(n: u8) -> PeerId {
        crate::identity::keypair_from_seed([n; 32])
            .public()
            .to_peer_id()
    }

    pub(crate) fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    /// Limits with no rate limiting, so count limits are tested alone.
    pub(crate) fn no_rates() -> RelayLimits {
        RelayLimits::default()
            .reservation_rate_per_peer(RateLimit::unlimited())
            .reservation_rate_per_ip(RateLimit::unlimited())
            .circuit_rate_per_peer(RateLimit::unlimited())
            .circuit_rate_per_ip(RateLimit::unlimited())
    }

    fn refused(r: Result<Admission, Refusal>) -> (RefusalReason, Status) {
        let e = r.expect_err("should be refused");
        (e.reason, e.status)
    }

    #[test]
    fn max_reservations_refuses_with_resource_limit_exceeded() {
        let t = virtual_epoch();
        let mut table = ReservationTable::new(no_rates().max_reservations(2));
        assert!(table.admit(t, peer(1), v4(1)).is_ok());
        assert!(table.admit(t, peer(2), v4(2)).is_ok());
        assert_eq!(
            refused(table.admit(t, peer(3), v4(3))),
            (
                RefusalReason::ReservationsFull,
                Status::ResourceLimitExceeded
            )
        );
        assert_eq!(table.rejections().get(RefusalReason::ReservationsFull), 1);
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn renewal_at_max_reservations_does_not_count_twice() {
        let t = virtual_epoch();
        let mut table =
            ReservationTable::new(no_rates().max_reservations(1).max_reservations_per_ip(1));
        let first = table.admit(t, peer(1), v4(1)).unwrap();
        assert!(matches!(first, Admission::New { .. }));
        for s in 1..5 {
            let now = t + Duration::from_secs(s);
            assert_eq!(
                table.admit(now, peer(1), v4(1)),
                Ok(Admission::Renewed {
                    expires_at: now + Duration::from_secs(3600)
                })
            );
        }
        assert_eq!(table.len(), 1);
        assert_eq!(table.count_for_ip(IpGroup::of(v4(1))), 1);
        assert_eq!(table.rejections().total(), 0);
    }

    #[test]
    fn same_peer_from_new_ip_replaces_and_moves_the_ip_count() {
        let t = virtual_epoch();
        let mut table = ReservationTable::new(no_rates().max_reservations(1));
        let _ = table.admit(t, peer(1), v4(1)).unwrap();
        assert_eq!(
            table.admit(t, peer(1), v4(2)),
            Ok(Admission::Replaced {
                previous_ip: v4(1),
                expires_at: t + Duration::from_secs(3600)
            })
        );
        assert_eq!(table.len(), 1);
        assert_eq!(table.count_for_ip(IpGroup::of(v4(1))), 0);
        assert_eq!(table.count_for_ip(IpGroup::of(v4(2))), 1);
        assert_eq!(table.ip_groups(), 1);
    }

    #[test]
    fn max_reservations_per_ip_refuses_with_resource_limit_exceeded() {
        let t = virtual_epoch();
        let mut table = ReservationTable::new(no_rates().max_reservations_per_ip(2));
        let _ = table.admit(t, peer(1), v4(1)).unwrap();
        let _ = table.admit(t, peer(2), v4(1)).unwrap();
        assert_eq!(
            refused(table.admit(t, peer(3), v4(1))),
            (
                RefusalReason::ReservationsPerIpFull,
                Status::ResourceLimitExceeded
            )
        );
        // Another IP is fine, and a peer moving into the full IP is refused too, keeping its
        // old reservation.
        let _ = table.admit(t, peer(3), v4(2)).unwrap();
        assert_eq!(
            refused(table.admit(t, peer(3), v4(1))).0,
            RefusalReason::ReservationsPerIpFull
        );
        assert_eq!(table.get(&peer(3)).unwrap().ip, v4(2));
        assert_eq!(
            table.rejections().get(RefusalReason::ReservationsPerIpFull),
            2
        );
    }

    #[test]
    fn ipv6_reservations_are_counted_per_64() {
        let t = virtual_epoch();
        let mut table = ReservationTable::new(no_rates().max_reservations_per_ip(2));
        let ip = |s: &str| s.parse::<Ipv6Addr>().map(IpAddr::V6).unwrap();
        let _ = table.admit(t, peer(1), ip("2001:db8:0:1::1")).unwrap();
        let _ = table.admit(t, peer(2), ip("2001:db8:0:1:ffff::2")).unwrap();
        assert_eq!(
            refused(table.admit(t, peer(3), ip("2001:db8:0:1:1234:5678:9abc:def0"))).0,
            RefusalReason::ReservationsPerIpFull
        );
        // The next /64 is a separate group.
        assert!(table.admit(t, peer(3), ip("2001:db8:0:2::1")).is_ok());
        // A peer moving within its /64 keeps one count.
        assert!(matches!(
            table.admit(t, peer(1), ip("2001:db8:0:1::99")),
            Ok(Admission::Replaced { .. })
        ));
        assert_eq!(table.count_for_ip(IpGroup::of(ip("2001:db8:0:1::"))), 2);
    }

    #[test]
    fn reservation_rate_per_peer_counts_renewals() {
        let t = virtual_epoch();
        let limits =
            no_rates().reservation_rate_per_peer(RateLimit::new(3, Duration::from_secs(60)));
        let mut table = ReservationTable::new(limits);
        for _ in 0..3 {
            assert!(table.admit(t, peer(1), v4(1)).is_ok());
        }
        assert_eq!(
            refused(table.admit(t, peer(1), v4(1))),
            (
                RefusalReason::ReservationRatePerPeer,
                Status::ResourceLimitExceeded
            )
        );
        // Another peer from the same IP is not limited per peer.
        assert!(table.admit(t, peer(2), v4(1)).is_ok());
        // One token refills in 20 s.
        assert!(
            table
                .admit(t + Duration::from_secs(20), peer(1), v4(1))
                .is_ok()
        );
        assert_eq!(
            table
                .rejections()
                .get(RefusalReason::ReservationRatePerPeer),
            1
        );
    }

    #[test]
    fn reservation_rate_per_ip_refuses_and_does_not_charge_the_peer() {
        let t = virtual_epoch();
        let limits = no_rates()
            .reservation_rate_per_ip(RateLimit::new(2, Duration::from_secs(60)))
            .reservation_rate_per_peer(RateLimit::new(1, Duration::from_secs(60)));
        let mut table = ReservationTable::new(limits);
        assert!(table.admit(t, peer(1), v4(1)).is_ok());
        assert!(table.admit(t, peer(2), v4(1)).is_ok());
        assert_eq!(
            refused(table.admit(t, peer(3), v4(1))),
            (
                RefusalReason::ReservationRatePerIp,
                Status::ResourceLimitExceeded
            )
        );
        // peer 3 was not charged: from another IP it gets through on its single token.
        assert!(table.admit(t, peer(3), v4(2)).is_ok());
    }

    #[test]
    fn reservations_expire_after_ttl_in_deadline_order() {
        let t = virtual_epoch();
        let ttl = Duration::from_secs(10);
        let mut table = ReservationTable::new(no_rates().reservation_ttl(ttl));
        let _ = table.admit(t, peer(1), v4(1)).unwrap();
        let _ = table
            .admit(t + Duration::from_secs(2), peer(2), v4(1))
            .unwrap();
        let _ = table
            .admit(t + Duration::from_secs(1), peer(3), v4(2))
            .unwrap();
        assert_eq!(table.next_deadline(), Some(t + ttl));
        assert!(table.is_reserved(t + ttl - Duration::from_nanos(1), &peer(1)));
        assert!(!table.is_reserved(t + ttl, &peer(1)));
        assert!(table.expire(t + ttl - Duration::from_nanos(1)).is_empty());
        assert_eq!(
            table.expire(t + ttl + Duration::from_secs(5)),
            vec![peer(1), peer(3), peer(2)]
        );
        assert!(table.is_empty());
        assert_eq!(table.ip_groups(), 0);
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn renewal_restarts_the_ttl() {
        let t = virtual_epoch();
        let ttl = Duration::from_secs(10);
        let mut table = ReservationTable::new(no_rates().reservation_ttl(ttl));
        let _ = table.admit(t, peer(1), v4(1)).unwrap();
        let later = t + Duration::from_secs(8);
        let _ = table.admit(later, peer(1), v4(1)).unwrap();
        assert!(table.expire(t + ttl).is_empty());
        assert_eq!(table.next_deadline(), Some(later + ttl));
        assert_eq!(table.expire(later + ttl), vec![peer(1)]);
    }

    #[test]
    fn expired_reservations_free_their_slot_for_new_peers() {
        let t = virtual_epoch();
        let ttl = Duration::from_secs(10);
        let mut table = ReservationTable::new(no_rates().reservation_ttl(ttl).max_reservations(1));
        let _ = table.admit(t, peer(1), v4(1)).unwrap();
        // No call to `expire`: `admit` drops the expired reservation itself.
        assert!(matches!(
            table.admit(t + ttl, peer(2), v4(2)),
            Ok(Admission::New { .. })
        ));
        assert!(table.get(&peer(1)).is_none());
    }

    #[test]
    fn remove_returns_counts_to_zero() {
        let t = virtual_epoch();
        let mut table = ReservationTable::new(RelayLimits::default());
        for n in 0..20u8 {
            let _ = table.admit(t, peer(n), v4(n % 3)).unwrap();
        }
        assert_eq!(table.ip_groups(), 3);
        for n in 0..20u8 {
            assert!(table.remove(&peer(n)).is_some());
        }
        assert!(table.remove(&peer(0)).is_none());
        assert!(table.is_empty());
        assert_eq!(table.ip_groups(), 0);
        assert_eq!(table.next_deadline(), None);
        table.evict_full_rate_buckets(t + Duration::from_secs(120));
        assert_eq!(table.rate_keys(), (0, 0));
    }
}
