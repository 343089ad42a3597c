//! Why the relay refused a RESERVE or CONNECT, the status code it answers with, and the
//! per-reason counters (DESIGN §5.1: "every rejection increments a per-reason counter and
//! answers with the correct status code").
//!
//! Status codes follow the Circuit Relay v2 spec: a refusal because of a resource limit (a
//! count or a rate) is `RESOURCE_LIMIT_EXCEEDED`, a CONNECT to a peer without reservation is
//! `NO_RESERVATION`, and a CONNECT to oneself is `PERMISSION_DENIED`.

use super::wire::Status;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// RESERVE: the relay holds `max_reservations` reservations.
    ReservationsFull,
    /// RESERVE: the source IP group holds `max_reservations_per_ip` reservations.
    ReservationsPerIpFull,
    /// RESERVE: the peer exceeded its reservation rate.
    ReservationRatePerPeer,
    /// RESERVE: the source IP group exceeded its reservation rate.
    ReservationRatePerIp,
    /// CONNECT: the relay carries `max_circuits` circuits.
    CircuitsFull,
    /// CONNECT: the source takes part in `max_circuits_per_peer` circuits.
    CircuitsPerSourceFull,
    /// CONNECT: the destination takes part in `max_circuits_per_peer` circuits.
    CircuitsPerDestinationFull,
    /// CONNECT: the source peer exceeded its circuit rate.
    CircuitRatePerPeer,
    /// CONNECT: the source IP group exceeded its circuit rate.
    CircuitRatePerIp,
    /// A rate limiter's table is full of other active keys and this key is new
    /// (see [`super::rate::RateLimiter`]).
    RateTableFull,
    /// CONNECT: the destination has no live reservation.
    NoReservation,
    /// CONNECT: the source asked for a circuit to itself.
    ConnectToSelf,
}

impl RefusalReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 12] = [
        Self::ReservationsFull,
        Self::ReservationsPerIpFull,
        Self::ReservationRatePerPeer,
        Self::ReservationRatePerIp,
        Self::CircuitsFull,
        Self::CircuitsPerSourceFull,
        Self::CircuitsPerDestinationFull,
        Self::CircuitRatePerPeer,
        Self::CircuitRatePerIp,
        Self::RateTableFull,
        Self::NoReservation,
        Self::ConnectToSelf,
    ];

    /// A stable snake_case name, for metric labels and logs.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::ReservationsFull => "reservations_full",
            Self::ReservationsPerIpFull => "reservations_per_ip_full",
            Self::ReservationRatePerPeer => "reservation_rate_per_peer",
            Self::ReservationRatePerIp => "reservation_rate_per_ip",
            Self::CircuitsFull => "circuits_full",
            Self::CircuitsPerSourceFull => "circuits_per_source_full",
            Self::CircuitsPerDestinationFull => "circuits_per_destination_full",
            Self::CircuitRatePerPeer => "circuit_rate_per_peer",
            Self::CircuitRatePerIp => "circuit_rate_per_ip",
            Self::RateTableFull => "rate_table_full",
            Self::NoReservation => "no_reservation",
            Self::ConnectToSelf => "connect_to_self",
        }
    }

    /// The status code the relay answers with.
    #[must_use]
    pub const fn status(self) -> Status {
        match self {
            Self::NoReservation => Status::NoReservation,
            Self::ConnectToSelf => Status::PermissionDenied,
            Self::ReservationsFull
            | Self::ReservationsPerIpFull
            | Self::ReservationRatePerPeer
            | Self::ReservationRatePerIp
            | Self::CircuitsFull
            | Self::CircuitsPerSourceFull
            | Self::CircuitsPerDestinationFull
            | Self::CircuitRatePerPeer
            | Self::CircuitRatePerIp
            | Self::RateTableFull => Status::ResourceLimitExceeded,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// A refused request: the reason and the status code to answer with.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refused ({reason:?}): {status:?}")]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// The status of the HOP `STATUS` reply; always `reason.status()`.
    pub status: Status,
}

impl From<RefusalReason> for Refusal {
    fn from(reason: RefusalReason) -> Self {
        Self {
            reason,
            status: reason.status(),
        }
    }
}

/// One counter per [`RefusalReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectionCounters {
    counts: [u64; RefusalReason::ALL.len()],
}

impl RejectionCounters {
    /// Count one refusal.
    pub fn record(&mut self, reason: RefusalReason) {
        let c = &mut self.counts[reason.index()];
        *c = c.saturating_add(1);
    }

    /// Refusals counted for `reason`.
    #[must_use]
    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.counts[reason.index()]
    }

    /// Refusals counted in total.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |a, &c| a.saturating_add(c))
    }

    /// `(reason, count)` for every reason, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (RefusalReason, u64)> + '_ {
        RefusalReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_order_matches_the_enum() {
        for (i, r) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn counters_count_per_reason() {
        let mut c = RejectionCounters::default();
        c.record(RefusalReason::NoReservation);
        c.record(RefusalReason::NoReservation);
        c.record(RefusalReason::ConnectToSelf);
        assert_eq!(c.get(RefusalReason::NoReservation), 2);
        assert_eq!(c.get(RefusalReason::ConnectToSelf), 1);
        assert_eq!(c.get(RefusalReason::CircuitsFull), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().count(), RefusalReason::ALL.len());
    }

    #[test]
    fn refusal_carries_the_reason_status() {
        let r = Refusal::from(RefusalReason::ConnectToSelf);
        assert_eq!(r.status, Status::PermissionDenied);
        assert_eq!(
            Refusal::from(RefusalReason::NoReservation).status,
            Status::NoReservation
        );
        assert_eq!(
            Refusal::from(RefusalReason::ReservationsFull).status,
            Status::ResourceLimitExceeded
        );
    }
}
