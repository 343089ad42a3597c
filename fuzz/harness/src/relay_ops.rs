//! Relay server operation sequences on the reservation and circuit tables: RESERVE, CONNECT,
//! close, remove, bytes, expiry, rate-bucket eviction and time, with limits the input picks
//! (small, so every limit is reached). After every step the tables must respect every limit
//! and agree with each other.

use std::net::IpAddr;
use std::time::Duration;

use arbitrary::Unstructured;
use libp2p_identity::PeerId;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::relay::circuits::{CircuitId, CircuitTable, Direction};
use dep2p_core::relay::limits::{IpGroup, RateLimit, RelayLimits};
use dep2p_core::relay::reservations::ReservationTable;
use dep2p_core::testing::virtual_epoch;

const PEERS: usize = 6;
const IPS: [&str; 5] = [
    "192.0.2.1",
    "192.0.2.2",
    "2001:db8::1",
    "2001:db8::ffff:2",
    "::ffff:192.0.2.1",
];

fn small(u: &mut Unstructured, max: u32) -> u32 {
    u32::from(u.arbitrary::<u8>().unwrap_or(0)) % (max + 1)
}

fn rate(u: &mut Unstructured) -> RateLimit {
    let burst = small(u, 4);
    let secs = 1 + u64::from(small(u, 9));
    RateLimit::new(burst, Duration::from_secs(secs))
}

/// The count limits the harness chose, to check against (the fields of [`RelayLimits`] are
/// private, and the harness must not widen the API for them).
#[derive(Debug, Clone, Copy)]
struct Counts {
    reservations: u32,
    reservations_per_ip: u32,
    circuits: u32,
    circuits_per_peer: u32,
    rate_keys: u32,
}

/// Limits from the input, all small; every count limit is at least 1 (0 would mean "none").
fn limits(u: &mut Unstructured) -> (RelayLimits, Counts) {
    let counts = Counts {
        reservations: 1 + small(u, 4),
        reservations_per_ip: 1 + small(u, 3),
        circuits: 1 + small(u, 4),
        circuits_per_peer: 1 + small(u, 3),
        rate_keys: 1 + small(u, 4),
    };
    let limits = RelayLimits::default()
        .max_reservations(counts.reservations)
        .max_reservations_per_ip(counts.reservations_per_ip)
        .reservation_ttl(Duration::from_secs(1 + u64::from(small(u, 20))))
        .max_circuits(counts.circuits)
        .max_circuits_per_peer(counts.circuits_per_peer)
        .max_circuit_duration(Duration::from_secs(u64::from(small(u, 10))))
        .max_circuit_bytes(u64::from(small(u, 200)))
        .reservation_rate_per_peer(rate(u))
        .reservation_rate_per_ip(rate(u))
        .circuit_rate_per_peer(rate(u))
        .circuit_rate_per_ip(rate(u))
        .rate_limiter_max_keys(counts.rate_keys);
    (limits, counts)
}

/// The harness.
pub fn relay_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (limits, counts) = limits(&mut u);
    if limits.validate().is_err() {
        return;
    }
    let peers: Vec<PeerId> = (0..PEERS)
        .map(|i| keypair_from_seed([i as u8 + 1; 32]).public().to_peer_id())
        .collect();
    let ips: Vec<IpAddr> = IPS.iter().map(|s| s.parse().expect("literal")).collect();
    let mut reservations = ReservationTable::new(limits.clone());
    let mut circuits = CircuitTable::new(limits.clone());
    let mut open: Vec<CircuitId> = Vec::new();
    let mut now = virtual_epoch();
    let pick = |u: &mut Unstructured, n: usize| usize::from(u.arbitrary::<u8>().unwrap_or(0)) % n;
    while !u.is_empty() {
        match u.arbitrary::<u8>().unwrap_or(0) % 9 {
            0 | 1 => {
                let (peer, ip) = (peers[pick(&mut u, PEERS)], ips[pick(&mut u, ips.len())]);
                if let Ok(admission) = reservations.admit(now, peer, ip) {
                    assert!(admission.expires_at() > now);
                    assert!(reservations.is_reserved(now, &peer));
                }
            }
            2 | 3 => {
                let src = peers[pick(&mut u, PEERS)];
                let ip = ips[pick(&mut u, ips.len())];
                let dst = peers[pick(&mut u, PEERS)];
                let reserved = reservations.is_reserved(now, &dst);
                if let Ok(id) = circuits.admit(now, src, ip, dst, &reservations) {
                    assert!(
                        reserved && src != dst,
                        "circuit to an unreserved peer or self"
                    );
                    open.push(id);
                }
            }
            4 => {
                if !open.is_empty() {
                    let id = open.swap_remove(pick(&mut u, open.len()));
                    let _ = circuits.close(id);
                    assert!(circuits.get(id).is_none());
                }
            }
            5 => {
                if !open.is_empty() {
                    let id = open[pick(&mut u, open.len())];
                    let direction = if u.arbitrary::<bool>().unwrap_or(false) {
                        Direction::SrcToDst
                    } else {
                        Direction::DstToSrc
                    };
                    let n = u64::from(u.arbitrary::<u8>().unwrap_or(0));
                    let before = circuits.get(id).map(|c| c.bytes(direction));
                    match circuits.record_bytes(id, direction, n) {
                        Ok(()) => {
                            let after = circuits.get(id).map(|c| c.bytes(direction));
                            assert_eq!(after, before.map(|b| b + n));
                            if let (Some(limit), Some(after)) =
                                (limits.circuit_bytes_limit(), after)
                            {
                                assert!(after <= limit);
                            }
                        }
                        Err(_) => assert!(circuits.get(id).is_none()),
                    }
                }
            }
            6 => {
                let _ = reservations.remove(&peers[pick(&mut u, PEERS)]);
            }
            7 => {
                for peer in reservations.expire(now) {
                    assert!(!reservations.is_reserved(now, &peer));
                }
                for id in circuits.expired(now) {
                    assert!(circuits.get(id).is_none());
                }
                reservations.evict_full_rate_buckets(now);
                circuits.evict_full_rate_buckets(now);
            }
            _ => {
                let ms = u64::from(u.arbitrary::<u16>().unwrap_or(0));
                now += Duration::from_millis(ms);
            }
        }
        open.retain(|id| circuits.get(*id).is_some());
        check(counts, &peers, &ips, &reservations, &circuits, open.len());
    }
}

fn check(
    counts: Counts,
    peers: &[PeerId],
    ips: &[IpAddr],
    reservations: &ReservationTable,
    circuits: &CircuitTable,
    open: usize,
) {
    assert!(
        reservations.len() <= counts.reservations as usize,
        "{counts:?}"
    );
    for &ip in ips {
        let n = reservations.count_for_ip(IpGroup::of(ip));
        assert!(n <= counts.reservations_per_ip, "{n} for {ip}, {counts:?}");
    }
    assert_eq!(
        circuits.len(),
        open,
        "the harness tracks every open circuit"
    );
    assert!(circuits.len() <= counts.circuits as usize, "{counts:?}");
    let mut ends = 0;
    for peer in peers {
        let n = circuits.count_for_peer(peer);
        assert!(n <= counts.circuits_per_peer, "{n} for {peer}, {counts:?}");
        ends += n;
    }
    assert_eq!(
        ends as usize,
        2 * circuits.len(),
        "each circuit counts at both ends"
    );
    let keys = counts.rate_keys as usize;
    for (a, b) in [reservations.rate_keys(), circuits.rate_keys()] {
        assert!(a <= keys && b <= keys, "rate keys {a} {b}, max {keys}");
    }
}
