//! The relay server's limits (DESIGN §5.1) as one configuration struct.
//!
//! Every limit of the table in DESIGN §5.1 is a field of [`RelayLimits`], with the same default.
//! Where DESIGN says "0 = unlimited" makes sense, the setter says so; the limits where zero would
//! be meaningless (a zero TTL, a zero request timeout) are refused by [`RelayLimits::validate`],
//! which names the offending key.
//!
//! The tables that enforce these limits are [`super::reservations::ReservationTable`] and
//! [`super::circuits::CircuitTable`]; the rate limits use [`super::rate::RateLimiter`]. Source
//! IPs are grouped by [`IpGroup`]: one group per IPv4 address, one per IPv6 /64.

use std::net::IpAddr;
use std::time::Duration;

/// A token-bucket rate: at most `burst` requests at once, refilled at `burst` per `period`.
///
/// `burst = 0` means no rate limit. DESIGN §5.1: 30 per peer per 2 min, 60 per IP per min.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Bucket capacity, and the number of tokens refilled over one `period`. 0 = unlimited.
    pub burst: u32,
    /// The time in which an empty bucket refills completely.
    pub period: Duration,
}

impl RateLimit {
    /// `burst` requests per `period`.
    #[must_use]
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self { burst, period }
    }

    /// No rate limit.
    #[must_use]
    pub const fn unlimited() -> Self {
        Self {
            burst: 0,
            period: Duration::ZERO,
        }
    }

    /// Whether this rate limits nothing (`burst == 0`).
    #[must_use]
    pub const fn is_unlimited(&self) -> bool {
        self.burst == 0
    }
}

/// The longest `period` a [`RateLimit`] may have: a day. Longer periods are a configuration
/// mistake, and the bound keeps every `Instant` computation of the rate limiter far from
/// overflow.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// The grouping key of a source IP address for per-IP limits.
///
/// DESIGN §5.1 counts per source IP, "per /64 for IPv6": one IPv6 host usually owns a whole /64,
/// so counting per address would let it multiply its quota by 2^64. IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`) are grouped as the IPv4 address they carry; otherwise every mapped IPv4
/// client would share the single /64 `::`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpGroup {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix64([u8; 8]),
}

impl IpGroup {
    /// The group `ip` belongs to.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let octets = v6.octets();
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&octets[..8]);
                Self::V6Prefix64(prefix)
            }
        }
    }
}

impl From<IpAddr> for IpGroup {
    fn from(ip: IpAddr) -> Self {
        Self::of(ip)
    }
}

/// A configuration value [`RelayLimits::validate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relay limit `{key}`: {problem}")]
pub struct InvalidLimit {
    /// The name of the field, as in DESIGN §5.1.
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: &'static str,
}

/// Every limit of the relay server (DESIGN §5.1).
///
/// Build with [`RelayLimits::default`] and the chaining setters, then call
/// [`RelayLimits::validate`]. The tables take a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    pub(crate) max_reservations: u32,
    pub(crate) max_reservations_per_peer: u32,
    pub(crate) max_reservations_per_ip: u32,
    pub(crate) reservation_ttl: Duration,
    pub(crate) max_circuits: u32,
    pub(crate) max_circuits_per_peer: u32,
    pub(crate) max_circuit_duration: Duration,
    pub(crate) max_circuit_bytes: u64,
    pub(crate) reservation_rate_per_peer: RateLimit,
    pub(crate) reservation_rate_per_ip: RateLimit,
    pub(crate) circuit_rate_per_peer: RateLimit,
    pub(crate) circuit_rate_per_ip: RateLimit,
    pub(crate) rate_limiter_max_keys: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) connection_low_watermark: u32,
    pub(crate) connection_high_watermark: u32,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 1024,
            max_reservations_per_peer: 1,
            max_reservations_per_ip: 8,
            reservation_ttl: Duration::from_secs(60 * 60),
            max_circuits: 1024,
            max_circuits_per_peer: 16,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 128 * 1024 * 1024,
            reservation_rate_per_peer: RateLimit::new(30, Duration::from_secs(120)),
            reservation_rate_per_ip: RateLimit::new(60, Duration::from_secs(60)),
            circuit_rate_per_peer: RateLimit::new(30, Duration::from_secs(120)),
            circuit_rate_per_ip: RateLimit::new(60, Duration::from_secs(60)),
            rate_limiter_max_keys: 8192,
            request_timeout: Duration::from_secs(10),
            connection_low_watermark: 100,
            connection_high_watermark: 200,
        }
    }
}

impl RelayLimits {
    /// Most reservations held at once. Default 1024; 0 = unlimited. A renewal never counts
    /// twice.
    #[must_use]
    pub fn max_reservations(mut self, n: u32) -> Self {
        self.max_reservations = n;
        self
    }

    /// Most reservations one peer holds. Default 1: a new RESERVE from the same peer renews or
    /// replaces its reservation. The reservation table keeps one reservation per peer, so 1 is
    /// the only value [`Self::validate`] accepts.
    #[must_use]
    pub fn max_reservations_per_peer(mut self, n: u32) -> Self {
        self.max_reservations_per_peer = n;
        self
    }

    /// Most reservations from one source [`IpGroup`] (an IPv4 address or an IPv6 /64).
    /// Default 8; 0 = unlimited.
    #[must_use]
    pub fn max_reservations_per_ip(mut self, n: u32) -> Self {
        self.max_reservations_per_ip = n;
        self
    }

    /// Lifetime of a reservation, sent as `expire`; a renewal restarts it. Default 1 h. Must be
    /// at least one second (the wire carries whole seconds).
    #[must_use]
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.reservation_ttl = ttl;
        self
    }

    /// Most circuits open at once. Default 1024; 0 = unlimited.
    #[must_use]
    pub fn max_circuits(mut self, n: u32) -> Self {
        self.max_circuits = n;
        self
    }

    /// Most circuits one peer takes part in, counted as source and as destination. Default 16;
    /// 0 = unlimited.
    #[must_use]
    pub fn max_circuits_per_peer(mut self, n: u32) -> Self {
        self.max_circuits_per_peer = n;
        self
    }

    /// Longest lifetime of a circuit, sent in `Limit.duration` (whole seconds, rounded down).
    /// Default 30 min; `Duration::ZERO` = unlimited. Otherwise at least 1 s and at most
    /// `u32::MAX` seconds.
    #[must_use]
    pub fn max_circuit_duration(mut self, d: Duration) -> Self {
        self.max_circuit_duration = d;
        self
    }

    /// Most bytes relayed in each direction of a circuit, sent in `Limit.data`. Default
    /// 128 MiB; 0 = unlimited.
    #[must_use]
    pub fn max_circuit_bytes(mut self, n: u64) -> Self {
        self.max_circuit_bytes = n;
        self
    }

    /// RESERVE rate per peer (renewals included). Default 30 per 2 min;
    /// [`RateLimit::unlimited`] = unlimited.
    #[must_use]
    pub fn reservation_rate_per_peer(mut self, rate: RateLimit) -> Self {
        self.reservation_rate_per_peer = rate;
        self
    }

    /// RESERVE rate per source [`IpGroup`] (renewals included). Default 60 per min;
    /// [`RateLimit::unlimited`] = unlimited.
    #[must_use]
    pub fn reservation_rate_per_ip(mut self, rate: RateLimit) -> Self {
        self.reservation_rate_per_ip = rate;
        self
    }

    /// CONNECT rate per source peer. Default 30 per 2 min; [`RateLimit::unlimited`] =
    /// unlimited.
    #[must_use]
    pub fn circuit_rate_per_peer(mut self, rate: RateLimit) -> Self {
        self.circuit_rate_per_peer = rate;
        self
    }

    /// CONNECT rate per source [`IpGroup`]. Default 60 per min; [`RateLimit::unlimited`] =
    /// unlimited.
    #[must_use]
    pub fn circuit_rate_per_ip(mut self, rate: RateLimit) -> Self {
        self.circuit_rate_per_ip = rate;
        self
    }

    /// Most keys (peers or IP groups) each rate limiter tracks at once. Default 8192; must not
    /// be 0. Not in the DESIGN §5.1 table: it is the bound DESIGN §3 demands of every
    /// peer-driven table. A key is tracked only until its bucket is full again; when the table
    /// is full of keys that are still refilling, a request from a new key is refused
    /// (see [`super::rate::RateLimiter`]).
    #[must_use]
    pub fn rate_limiter_max_keys(mut self, n: u32) -> Self {
        self.rate_limiter_max_keys = n;
        self
    }

    /// Time a HOP/STOP stream has for negotiation and its first message before it is reset.
    /// Default 10 s; must not be zero. Enforced by the node, not by these tables.
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Connection count the trimmer cuts down to. Default 100. Enforced by the node.
    #[must_use]
    pub fn connection_low_watermark(mut self, n: u32) -> Self {
        self.connection_low_watermark = n;
        self
    }

    /// Connection count above which idle connections are trimmed (down to the low watermark;
    /// connections holding reservations or circuits are protected). Default 200; 0 = never
    /// trim. Enforced by the node.
    #[must_use]
    pub fn connection_high_watermark(mut self, n: u32) -> Self {
        self.connection_high_watermark = n;
        self
    }

    /// Check the limits for values that make no sense; the error names the first bad key.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        let bad = |key, problem| Err(InvalidLimit { key, problem });
        if self.max_reservations_per_peer != 1 {
            return bad(
                "max_reservations_per_peer",
                "only 1 is supported: a new RESERVE from the same peer replaces its reservation",
            );
        }
        if self.reservation_ttl < Duration::from_secs(1) {
            return bad("reservation_ttl", "must be at least one second");
        }
        if self.max_circuit_duration.as_secs() > u64::from(u32::MAX) {
            return bad(
                "max_circuit_duration",
                "must fit the u32 seconds of Limit.duration",
            );
        }
        if !self.max_circuit_duration.is_zero()
            && self.max_circuit_duration < Duration::from_secs(1)
        {
            // Limit.duration carries whole seconds: it would say 0, which peers read as
            // unlimited (or as already over), while the relay cut the circuit anyway.
            return bad(
                "max_circuit_duration",
                "must be 0 (unlimited) or at least one second",
            );
        }
        for (key, rate) in [
            ("reservation_rate_per_peer", self.reservation_rate_per_peer),
            ("reservation_rate_per_ip", self.reservation_rate_per_ip),
            ("circuit_rate_per_peer", self.circuit_rate_per_peer),
            ("circuit_rate_per_ip", self.circuit_rate_per_ip),
        ] {
            if !rate.is_unlimited() && rate.period.is_zero() {
                return bad(key, "a non-zero burst needs a non-zero period");
            }
            if rate.period > MAX_RATE_PERIOD {
                return bad(key, "the period must not exceed one day");
            }
        }
        if self.rate_limiter_max_keys == 0 {
            return bad(
                "rate_limiter_max_keys",
                "must not be 0 (the table must be bounded)",
            );
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must not be zero");
        }
        if self.connection_high_watermark != 0
            && self.connection_low_watermark > self.connection_high_watermark
        {
            return bad(
                "connection_low_watermark",
                "must not exceed connection_high_watermark",
            );
        }
        Ok(())
    }

    /// Longest circuit lifetime; `None` when unlimited.
    #[must_use]
    pub fn circuit_duration_limit(&self) -> Option<Duration> {
        (!self.max_circuit_duration.is_zero()).then_some(self.max_circuit_duration)
    }

    /// Most bytes per direction of a circuit; `None` when unlimited.
    #[must_use]
    pub fn circuit_bytes_limit(&self) -> Option<u64> {
        (self.max_circuit_bytes != 0).then_some(self.max_circuit_bytes)
    }

    /// The connection watermarks `(low, high)`.
    #[must_use]
    pub fn connection_watermarks(&self) -> (u32, u32) {
        (
            self.connection_low_watermark,
            self.connection_high_watermark,
        )
    }

    /// The `Limit` sent to both ends of a circuit (DESIGN §4.3).
    #[must_use]
    pub fn circuit_limit(&self) -> super::wire::CircuitLimit {
        super::wire::CircuitLimit {
            duration_secs: self
                .circuit_duration_limit()
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            data_bytes: self.circuit_bytes_limit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn defaults_match_design_table() {
        let l = RelayLimits::default();
        assert_eq!(l.max_reservations, 1024);
        assert_eq!(l.max_reservations_per_peer, 1);
        assert_eq!(l.max_reservations_per_ip, 8);
        assert_eq!(l.reservation_ttl, Duration::from_secs(3600));
        assert_eq!(l.max_circuits, 1024);
        assert_eq!(l.max_circuits_per_peer, 16);
        assert_eq!(l.max_circuit_duration, Duration::from_secs(1800));
        assert_eq!(l.max_circuit_bytes, 134_217_728);
        assert_eq!(
            l.reservation_rate_per_peer,
            RateLimit::new(30, Duration::from_secs(120))
        );
        assert_eq!(
            l.reservation_rate_per_ip,
            RateLimit::new(60, Duration::from_secs(60))
        );
        assert_eq!(l.circuit_rate_per_peer, l.reservation_rate_per_peer);
        assert_eq!(l.circuit_rate_per_ip, l.reservation_rate_per_ip);
        assert_eq!(l.request_timeout, Duration::from_secs(10));
        assert_eq!(l.connection_watermarks(), (100, 200));
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(
            l.circuit_limit(),
            crate::relay::wire::CircuitLimit {
                duration_secs: Some(1800),
                data_bytes: Some(134_217_728)
            }
        );
    }

    #[test]
    fn zero_means_unlimited_in_the_circuit_limit() {
        let l = RelayLimits::default()
            .max_circuit_duration(Duration::ZERO)
            .max_circuit_bytes(0);
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(
            l.circuit_limit(),
            crate::relay::wire::CircuitLimit::default()
        );
    }

    #[test]
    fn validate_names_the_bad_key() {
        let key = |l: RelayLimits| l.validate().unwrap_err().key;
        let d = RelayLimits::default;
        assert_eq!(
            key(d().max_reservations_per_peer(2)),
            "max_reservations_per_peer"
        );
        assert_eq!(key(d().reservation_ttl(Duration::ZERO)), "reservation_ttl");
        assert_eq!(
            key(d().max_circuit_duration(Duration::from_secs(u64::from(u32::MAX) + 1))),
            "max_circuit_duration"
        );
        assert_eq!(
            key(d().max_circuit_duration(Duration::from_millis(500))),
            "max_circuit_duration"
        );
        assert_eq!(
            key(d().circuit_rate_per_ip(RateLimit::new(3, Duration::ZERO))),
            "circuit_rate_per_ip"
        );
        assert_eq!(
            key(d().reservation_rate_per_peer(RateLimit::new(3, Duration::from_secs(90_000)))),
            "reservation_rate_per_peer"
        );
        assert_eq!(key(d().rate_limiter_max_keys(0)), "rate_limiter_max_keys");
        assert_eq!(key(d().request_timeout(Duration::ZERO)), "request_timeout");
        assert_eq!(
            key(d().connection_low_watermark(300)),
            "connection_low_watermark"
        );
        assert!(
            d().reservation_rate_per_peer(RateLimit::unlimited())
                .validate()
                .is_ok()
        );
        let err = d().request_timeout(Duration::ZERO).validate().unwrap_err();
        assert!(err.to_string().contains("`request_timeout`"));
    }

    #[test]
    fn ipv6_is_grouped_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpGroup::of(a), IpGroup::of(b));
        assert_ne!(IpGroup::of(a), IpGroup::of(c));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        let other_mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 8).to_ipv6_mapped());
        assert_eq!(IpGroup::of(mapped), IpGroup::of(v4));
        assert_ne!(IpGroup::of(mapped), IpGroup::of(other_mapped));
        assert_ne!(
            IpGroup::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8))),
            IpGroup::of(v4)
        );
        assert_eq!(
            IpGroup::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpGroup::V6Prefix64([0; 8])
        );
    }
}
