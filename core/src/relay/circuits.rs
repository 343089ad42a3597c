//! The relay's circuits: CONNECT admission and the per-circuit byte and time limits
//! (DESIGN §4.3, §5.1).
//!
//! [`CircuitTable::admit`] decides a CONNECT in this order; a refusal changes nothing but the
//! rate buckets and the counters:
//!
//! 1. a CONNECT to oneself → `PERMISSION_DENIED`;
//! 2. the circuit rate limits, per source peer and per source [`IpGroup`] (charged to both
//!    buckets only when both admit; later refusals still cost the tokens);
//! 3. the destination has no live reservation → `NO_RESERVATION`;
//! 4. `max_circuits`, then `max_circuits_per_peer` for the source, then for the destination
//!    (a peer's count is the circuits it takes part in, as source or as destination)
//!    → `RESOURCE_LIMIT_EXCEEDED`.
//!
//! An admitted circuit is bounded by `max_circuit_bytes` per direction
//! ([`CircuitTable::record_bytes`]) and by `max_circuit_duration` ([`CircuitTable::expired`]).
//! When either is hit the node resets both streams (DESIGN §4.3) and the circuit is gone.
//! Closing a circuit releases all its counts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use libp2p_identity::PeerId;

use super::limits::{IpGroup, RelayLimits};
use super::peer_key::PeerKey;
use super::rate::{RateDecision, RateLimiter};
use super::refusal::{Refusal, RefusalReason, RejectionCounters};
use super::reservations::ReservationTable;

/// Identifies a circuit of one [`CircuitTable`]; never reused by that table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircuitId(u64);

impl CircuitId {
    /// The number of this id.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
impl CircuitId {
    /// The id numbered `n`, for tests naming ids a table never issued.
    pub(crate) const fn from_raw(n: u64) -> Self {
        Self(n)
    }
}

/// A direction of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Bytes from the source (the peer that sent CONNECT) to the destination.
    SrcToDst,
    /// Bytes from the destination to the source.
    DstToSrc,
}

impl Direction {
    const fn index(self) -> usize {
        match self {
            Self::SrcToDst => 0,
            Self::DstToSrc => 1,
        }
    }
}

/// A limit an open circuit ran into; the node resets both streams.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// Relaying the bytes would exceed `max_circuit_bytes` in `direction`. The bytes were not
    /// counted and must not be forwarded; the circuit has been closed.
    #[error("circuit byte limit of {limit} reached ({direction:?})")]
    Bytes {
        /// The direction that hit the limit.
        direction: Direction,
        /// The limit, bytes per direction.
        limit: u64,
    },
    /// No open circuit has this id (already closed or expired): local misuse or a race the
    /// node should treat as "reset".
    #[error("no such circuit")]
    UnknownCircuit,
}

/// One open circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    /// The peer that sent CONNECT.
    pub src: PeerId,
    /// Its IP address.
    pub src_ip: IpAddr,
    /// The target of the CONNECT.
    pub dst: PeerId,
    /// When it was admitted.
    pub opened_at: Instant,
    /// When it must end; `None` if circuits have no duration limit.
    pub deadline: Option<Instant>,
    bytes: [u64; 2],
}

impl Circuit {
    /// Bytes relayed so far in `direction`.
    #[must_use]
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.bytes[direction.index()]
    }
}

/// The open circuits of a relay and their limits.
#[derive(Debug, Clone)]
pub struct CircuitTable {
    limits: RelayLimits,
    next_id: u64,
    circuits: BTreeMap<CircuitId, Circuit>,
    deadlines: BTreeSet<(Instant, CircuitId)>,
    /// Circuits per peer, as source or destination; a peer is removed when it drops to zero.
    per_peer: BTreeMap<PeerId, u32>,
    peer_rate: RateLimiter<PeerKey>,
    ip_rate: RateLimiter<IpGroup>,
    rejections: RejectionCounters,
}

impl CircuitTable {
    /// An empty table enforcing `limits` (which the caller has validated).
    #[must_use]
    pub fn new(limits: RelayLimits) -> Self {
        let keys = usize::try_from(limits.rate_limiter_max_keys).unwrap_or(usize::MAX);
        Self {
            peer_rate: RateLimiter::new(limits.circuit_rate_per_peer, keys),
            ip_rate: RateLimiter::new(limits.circuit_rate_per_ip, keys),
            limits,
            next_id: 0,
            circuits: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            per_peer: BTreeMap::new(),
            rejections: RejectionCounters::default(),
        }
    }

    /// Decide a CONNECT from `src` (at `src_ip`) to `dst` at `now`; `reservations` tells
    /// whether `dst` holds a live reservation.
    pub fn admit(
        &mut self,
        now: Instant,
        src: PeerId,
        src_ip: IpAddr,
        dst: PeerId,
        reservations: &ReservationTable,
    ) -> Result<CircuitId, Refusal> {
        self.admit_with(now, src, src_ip, dst, reservations.is_reserved(now, &dst))
    }

    /// [`Self::admit`] with the destination's reservation given as a bool.
    pub fn admit_with(
        &mut self,
        now: Instant,
        src: PeerId,
        src_ip: IpAddr,
        dst: PeerId,
        dst_reserved: bool,
    ) -> Result<CircuitId, Refusal> {
        if src == dst {
            return Err(self.refuse(RefusalReason::ConnectToSelf));
        }
        if let Err(reason) = self.charge_rates(now, src, IpGroup::of(src_ip)) {
            return Err(self.refuse(reason));
        }
        if !dst_reserved {
            return Err(self.refuse(RefusalReason::NoReservation));
        }
        let max = self.limits.max_circuits;
        if max != 0 && self.circuits.len() >= max as usize {
            return Err(self.refuse(RefusalReason::CircuitsFull));
        }
        if self.peer_full(&src) {
            return Err(self.refuse(RefusalReason::CircuitsPerSourceFull));
        }
        if self.peer_full(&dst) {
            return Err(self.refuse(RefusalReason::CircuitsPerDestinationFull));
        }
        let id = CircuitId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = self
            .limits
            .circuit_duration_limit()
            .map(|d| now.checked_add(d).unwrap_or(now));
        self.circuits.insert(
            id,
            Circuit {
                src,
                src_ip,
                dst,
                opened_at: now,
                deadline,
                bytes: [0; 2],
            },
        );
        if let Some(t) = deadline {
            self.deadlines.insert((t, id));
        }
        *self.per_peer.entry(src).or_insert(0) += 1;
        *self.per_peer.entry(dst).or_insert(0) += 1;
        Ok(id)
    }

    /// Count `n` bytes about to be relayed in `direction`. If they would take the direction
    /// past `max_circuit_bytes` they are not counted, the circuit is closed, and the node must
    /// reset both streams instead of forwarding them (never a silent truncation).
    pub fn record_bytes(
        &mut self,
        id: CircuitId,
        direction: Direction,
        n: u64,
    ) -> Result<(), LimitHit> {
        let limit = self.limits.circuit_bytes_limit();
        let circuit = self.circuits.get_mut(&id).ok_or(LimitHit::UnknownCircuit)?;
        let total = circuit.bytes[direction.index()].saturating_add(n);
        match limit {
            Some(limit) if total > limit => {
                let _ = self.close(id);
                Err(LimitHit::Bytes { direction, limit })
            }
            _ => {
                circuit.bytes[direction.index()] = total;
                Ok(())
            }
        }
    }

    /// Remove and return, in deadline order, the circuits whose `max_circuit_duration` ended at
    /// or before `now`; the node resets their streams. Harmless when nothing is due.
    #[must_use]
    pub fn expired(&mut self, now: Instant) -> Vec<CircuitId> {
        let mut gone = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let _ = self.close(id);
            gone.push(id);
        }
        gone
    }

    /// The earliest circuit deadline: when to call [`Self::expired`] next.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Close circuit `id` (either stream ended or was reset), releasing its counts. Returns
    /// it if it was open.
    pub fn close(&mut self, id: CircuitId) -> Option<Circuit> {
        let c = self.circuits.remove(&id)?;
        if let Some(t) = c.deadline {
            self.deadlines.remove(&(t, id));
        }
        for peer in [c.src, c.dst] {
            if let Some(count) = self.per_peer.get_mut(&peer) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_peer.remove(&peer);
                }
            }
        }
        Some(c)
    }

    /// The open circuit `id`.
    #[must_use]
    pub fn get(&self, id: CircuitId) -> Option<&Circuit> {
        self.circuits.get(&id)
    }

    /// The open circuits, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (CircuitId, &Circuit)> {
        self.circuits.iter().map(|(&id, c)| (id, c))
    }

    /// Number of open circuits.
    #[must_use]
    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    /// Whether no circuit is open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }

    /// Circuits `peer` takes part in, as source or destination.
    #[must_use]
    pub fn count_for_peer(&self, peer: &PeerId) -> u32 {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Number of peers taking part in at least one circuit (0 when the table is empty).
    #[must_use]
    pub fn peers(&self) -> usize {
        self.per_peer.len()
    }

    /// Refusals so far, per reason.
    #[must_use]
    pub fn rejections(&self) -> &RejectionCounters {
        &self.rejections
    }

    /// Keys tracked by the `(per peer, per IP)` rate limiters.
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
        peer: PeerId,
        group: IpGroup,
    ) -> Result<(), RefusalReason> {
        let key = PeerKey::new(peer);
        let decide = |d: RateDecision, limited| match d {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { .. } => Err(limited),
            RateDecision::TableFull => Err(RefusalReason::RateTableFull),
        };
        decide(
            self.peer_rate.peek(now, &key),
            RefusalReason::CircuitRatePerPeer,
        )?;
        decide(
            self.ip_rate.peek(now, &group),
            RefusalReason::CircuitRatePerIp,
        )?;
        // `peek` answered `Allowed` for both, so `check` does too: it only takes the tokens.
        let _ = self.peer_rate.check(now, &key);
        let _ = self.ip_rate.check(now, &group);
        Ok(())
    }

    fn peer_full(&self, peer: &PeerId) -> bool {
        let max = self.limits.max_circuits_per_peer;
        max != 0 && self.count_for_peer(peer) >= max
    }

    fn refuse(&mut self, reason: RefusalReason) -> Refusal {
        self.rejections.record(reason);
        Refusal::from(reason)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::relay::limits::RateLimit;
    use crate::relay::reservations::tests::{no_rates, peer, v4};
    use crate::relay::wire::Status;
    use crate::testing::virtual_epoch;

    fn refused(r: Result<CircuitId, Refusal>) -> (RefusalReason, Status) {
        let e = r.expect_err("should be refused");
        (e.reason, e.status)
    }

    /// A reservation table in which peers 100..110 hold reservations.
    fn reserved(t: Instant) -> ReservationTable {
        let mut r = ReservationTable::new(no_rates());
        for n in 100..110 {
            let _ = r.admit(t, peer(n), v4(n)).unwrap();
        }
        r
    }

    #[test]
    fn iter_lists_open_circuits_in_id_order_and_forgets_expired_ones() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuit_duration(Duration::from_secs(5)));
        let a = c.admit(t, peer(1), v4(1), peer(100), &r).unwrap();
        let later = t + Duration::from_secs(1);
        let b = c.admit(later, peer(2), v4(2), peer(101), &r).unwrap();
        let listed: Vec<(CircuitId, PeerId, Option<Instant>)> =
            c.iter().map(|(id, x)| (id, x.dst, x.deadline)).collect();
        assert_eq!(
            listed,
            [
                (a, peer(100), Some(t + Duration::from_secs(5))),
                (b, peer(101), Some(later + Duration::from_secs(5))),
            ]
        );
        assert_eq!(c.expired(t + Duration::from_secs(5)), [a]);
        assert_eq!(c.iter().map(|(id, _)| id).collect::<Vec<_>>(), [b]);
    }

    #[test]
    fn connect_to_oneself_is_permission_denied() {
        let t = virtual_epoch();
        let mut r = reserved(t);
        let _ = r.admit(t, peer(1), v4(1)).unwrap();
        let mut c = CircuitTable::new(no_rates());
        assert_eq!(
            refused(c.admit(t, peer(1), v4(1), peer(1), &r)),
            (RefusalReason::ConnectToSelf, Status::PermissionDenied)
        );
        assert_eq!(c.rejections().get(RefusalReason::ConnectToSelf), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn connect_without_reservation_is_no_reservation() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates());
        assert_eq!(
            refused(c.admit(t, peer(1), v4(1), peer(2), &r)),
            (RefusalReason::NoReservation, Status::NoReservation)
        );
        // An expired reservation counts as none, even before `expire` ran.
        let ttl = Duration::from_secs(3600);
        assert!(c.admit(t, peer(1), v4(1), peer(100), &r).is_ok());
        assert_eq!(
            refused(c.admit(t + ttl, peer(1), v4(1), peer(101), &r)).0,
            RefusalReason::NoReservation
        );
    }

    #[test]
    fn max_circuits_refuses_with_resource_limit_exceeded() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuits(2));
        assert!(c.admit(t, peer(1), v4(1), peer(100), &r).is_ok());
        assert!(c.admit(t, peer(2), v4(2), peer(101), &r).is_ok());
        assert_eq!(
            refused(c.admit(t, peer(3), v4(3), peer(102), &r)),
            (RefusalReason::CircuitsFull, Status::ResourceLimitExceeded)
        );
    }

    #[test]
    fn max_circuits_per_peer_counts_the_source() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuits_per_peer(2));
        assert!(c.admit(t, peer(1), v4(1), peer(100), &r).is_ok());
        assert!(c.admit(t, peer(1), v4(1), peer(101), &r).is_ok());
        assert_eq!(
            refused(c.admit(t, peer(1), v4(1), peer(102), &r)),
            (
                RefusalReason::CircuitsPerSourceFull,
                Status::ResourceLimitExceeded
            )
        );
    }

    #[test]
    fn max_circuits_per_peer_counts_the_destination() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuits_per_peer(2));
        assert!(c.admit(t, peer(1), v4(1), peer(100), &r).is_ok());
        assert!(c.admit(t, peer(2), v4(2), peer(100), &r).is_ok());
        assert_eq!(
            refused(c.admit(t, peer(3), v4(3), peer(100), &r)),
            (
                RefusalReason::CircuitsPerDestinationFull,
                Status::ResourceLimitExceeded
            )
        );
    }

    #[test]
    fn a_peer_counts_as_source_and_as_destination_together() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuits_per_peer(2));
        // peer 100 is destination once, then source once: its budget of 2 is spent.
        assert!(c.admit(t, peer(1), v4(1), peer(100), &r).is_ok());
        assert!(c.admit(t, peer(100), v4(100), peer(101), &r).is_ok());
        assert_eq!(c.count_for_peer(&peer(100)), 2);
        assert_eq!(
            refused(c.admit(t, peer(2), v4(2), peer(100), &r)).0,
            RefusalReason::CircuitsPerDestinationFull
        );
        assert_eq!(
            refused(c.admit(t, peer(100), v4(100), peer(102), &r)).0,
            RefusalReason::CircuitsPerSourceFull
        );
    }

    #[test]
    fn circuit_rate_per_peer_and_per_ip_refuse_with_resource_limit_exceeded() {
        let t = virtual_epoch();
        let r = reserved(t);
        let limits = no_rates()
            .circuit_rate_per_peer(RateLimit::new(2, Duration::from_secs(60)))
            .circuit_rate_per_ip(RateLimit::new(3, Duration::from_secs(60)));
        let mut c = CircuitTable::new(limits);
        assert!(c.admit(t, peer(1), v4(1), peer(100), &r).is_ok());
        assert!(c.admit(t, peer(1), v4(1), peer(101), &r).is_ok());
        assert_eq!(
            refused(c.admit(t, peer(1), v4(1), peer(102), &r)),
            (
                RefusalReason::CircuitRatePerPeer,
                Status::ResourceLimitExceeded
            )
        );
        assert!(c.admit(t, peer(2), v4(1), peer(102), &r).is_ok());
        assert_eq!(
            refused(c.admit(t, peer(3), v4(1), peer(103), &r)),
            (
                RefusalReason::CircuitRatePerIp,
                Status::ResourceLimitExceeded
            )
        );
        // The peer rate refills one token per 30 s.
        assert!(
            c.admit(t + Duration::from_secs(30), peer(1), v4(9), peer(104), &r)
                .is_ok()
        );
    }

    #[test]
    fn byte_limit_is_per_direction_and_exact() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuit_bytes(100));
        let id = c.admit(t, peer(1), v4(1), peer(100), &r).unwrap();
        assert_eq!(c.record_bytes(id, Direction::SrcToDst, 60), Ok(()));
        assert_eq!(c.record_bytes(id, Direction::DstToSrc, 100), Ok(()));
        assert_eq!(c.record_bytes(id, Direction::SrcToDst, 40), Ok(()));
        assert_eq!(c.get(id).unwrap().bytes(Direction::SrcToDst), 100);
        assert_eq!(
            c.record_bytes(id, Direction::SrcToDst, 1),
            Err(LimitHit::Bytes {
                direction: Direction::SrcToDst,
                limit: 100
            })
        );
        // The circuit is gone and its counts released.
        assert!(c.is_empty());
        assert_eq!(c.peers(), 0);
        assert_eq!(
            c.record_bytes(id, Direction::DstToSrc, 1),
            Err(LimitHit::UnknownCircuit)
        );
    }

    #[test]
    fn zero_byte_limit_is_unlimited() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(no_rates().max_circuit_bytes(0));
        let id = c.admit(t, peer(1), v4(1), peer(100), &r).unwrap();
        assert_eq!(c.record_bytes(id, Direction::SrcToDst, u64::MAX), Ok(()));
        assert_eq!(c.record_bytes(id, Direction::SrcToDst, 1), Ok(()));
    }

    #[test]
    fn circuits_expire_at_max_duration() {
        let t = virtual_epoch();
        let r = reserved(t);
        let d = Duration::from_secs(30);
        let mut c = CircuitTable::new(no_rates().max_circuit_duration(d));
        let a = c.admit(t, peer(1), v4(1), peer(100), &r).unwrap();
        let b = c
            .admit(t + Duration::from_secs(5), peer(2), v4(2), peer(101), &r)
            .unwrap();
        assert_eq!(c.next_deadline(), Some(t + d));
        assert!(c.expired(t + d - Duration::from_nanos(1)).is_empty());
        assert_eq!(c.expired(t + d), vec![a]);
        assert_eq!(c.next_deadline(), Some(t + d + Duration::from_secs(5)));
        assert_eq!(c.expired(t + Duration::from_secs(3600)), vec![b]);
        assert!(c.expired(t + Duration::from_secs(3600)).is_empty());
        assert!(c.is_empty());
        // Unlimited duration: no deadline.
        let mut c = CircuitTable::new(no_rates().max_circuit_duration(Duration::ZERO));
        let _ = c.admit(t, peer(1), v4(1), peer(100), &r).unwrap();
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn counts_return_to_zero_after_every_circuit_ends() {
        let t = virtual_epoch();
        let r = reserved(t);
        let mut c = CircuitTable::new(RelayLimits::default());
        let mut ids = Vec::new();
        for n in 0..10u8 {
            ids.push(c.admit(t, peer(n), v4(n), peer(100 + n % 3), &r).unwrap());
        }
        assert_eq!(c.len(), 10);
        for id in ids {
            assert!(c.close(id).is_some());
            assert!(c.close(id).is_none());
        }
        assert!(c.is_empty());
        assert_eq!(c.peers(), 0);
        assert_eq!(c.next_deadline(), None);
        c.evict_full_rate_buckets(t + Duration::from_secs(120));
        assert_eq!(c.rate_keys(), (0, 0));
    }
}
