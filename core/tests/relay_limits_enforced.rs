//! Every relay server limit of DESIGN §5.1 is enforced end to end over real QUIC connections:
//! a request over a limit is answered with the right status (visible to the client), counted
//! under the right reason, renewals never count twice, circuits are reset (never truncated)
//! when they hit their duration or byte limit, and once every circuit and reservation has
//! ended the relay's tables and the node's streams are back where they started.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{ConnectionFailure, ConnectionId, Event, NodeConfig, ReadOutcome};
use dep2p_core::relay::HOP_PROTOCOL;
use dep2p_core::relay::limits::{RateLimit, RelayLimits};
use dep2p_core::relay::wire::{HopRequest, HopResponse, Status};
use dep2p_core::testing::{WORLD_UNIX_START, World};
use dep2p_core::tls::ALPN;

use common::SETTLE;
use common::raw::{RawPeer, client_tls, good_identity};

const APP: &str = "/bulk/1.0.0";
const HEADER: &str = "/multistream/1.0.0";
/// Reset code the node uses for a stream that timed out (`CODE_TIMED_OUT`).
const CODE_TIMED_OUT: u64 = 2;
/// Reset code of a circuit stream the relay reset because a limit was hit.
const CODE_CIRCUIT_LIMIT: &str = "reset (code 256)";
/// A rate nobody reaches in a test: the limit under test is the only one that bites.
const HOUR: Duration = Duration::from_secs(3600);

/// A world with one relay enforcing `limits`.
fn relay_world(seed: u64, limits: RelayLimits) -> (World, usize) {
    let mut world = World::new(seed);
    let mut config = NodeConfig::default();
    config.relay_server(Some(limits));
    let relay = world.add_node(config);
    (world, relay)
}

fn app_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.protocol(APP);
    config
}

/// Adds an application node (at `addr`, or the world's default address) connected to the
/// relay; returns it and its connection to the relay.
fn client(world: &mut World, relay: usize, addr: Option<SocketAddr>) -> (usize, ConnectionId) {
    let node = match addr {
        Some(addr) => world.add_node_at(app_config(), addr),
        None => world.add_node(app_config()),
    };
    let conn = world.connect(node, relay);
    assert!(
        world.run_until(SETTLE, |w| w.is_connected(node, relay)
            && w.is_connected(relay, node)),
        "node {node} connects to the relay"
    );
    (node, conn)
}

/// `127.0.9.9:<port>`: several nodes behind one IP address.
fn shared_ip(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 9, 9)), port)
}

/// Sends RESERVE from `node` over `conn` and waits for the answer: the granted `expire` (unix
/// seconds) and whether it was a renewal, or the failure reason.
fn reserve(world: &mut World, node: usize, conn: ConnectionId) -> Result<(u64, bool), String> {
    let before = world.events(node).count();
    world
        .command(node, |n, now| n.reserve(now, conn))
        .expect("reserve starts");
    let answer = |w: &World| {
        w.events(node).skip(before).find_map(|e| match e {
            Event::ReservationAccepted {
                connection,
                expire_unix_secs,
                renewed,
                ..
            } if *connection == conn => Some(Ok((*expire_unix_secs, *renewed))),
            Event::ReservationFailed {
                connection, reason, ..
            } if *connection == conn => Some(Err(reason.clone())),
            _ => None,
        })
    };
    assert!(
        world.run_until(SETTLE, |w| answer(w).is_some()),
        "RESERVE from node {node} got no answer"
    );
    answer(world).expect("answered")
}

/// Dials `target` from `node` through the relay at the other end of `relay_conn` and waits for
/// the relayed connection: its id, or the failure (`Debug`-formatted).
fn dial_via(
    world: &mut World,
    node: usize,
    relay_conn: ConnectionId,
    target: usize,
) -> Result<ConnectionId, String> {
    let target = world.peer_id(target);
    let relayed = world
        .command(node, |n, now| n.dial_through_relay(now, relay_conn, target))
        .expect("dial starts");
    let outcome = |w: &World| {
        w.events(node).find_map(|e| match e {
            Event::ConnectionEstablished { connection, .. } if *connection == relayed => {
                Some(Ok(relayed))
            }
            Event::ConnectionClosed {
                connection,
                failure,
                ..
            } if *connection == relayed => Some(Err(format!("{failure:?}"))),
            _ => None,
        })
    };
    assert!(
        world.run_until(SETTLE, |w| outcome(w).is_some()),
        "dial from node {node} through the relay did not end"
    );
    outcome(world).expect("ended")
}

/// The relayed connection `at` holds with `peer` (as reported when established).
fn relayed_conn_to(world: &World, at: usize, peer: usize) -> ConnectionId {
    let peer = world.peer_id(peer);
    world
        .events(at)
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                connection,
                peer: p,
                relay: Some(_),
                ..
            } if *p == peer => Some(*connection),
            _ => None,
        })
        .expect("relayed connection established")
}

/// Why `connection` of node `at` closed, if it did.
fn closed(world: &World, at: usize, connection: ConnectionId) -> Option<ConnectionFailure> {
    world.events(at).find_map(|e| match e {
        Event::ConnectionClosed {
            connection: c,
            failure,
            ..
        } if *c == connection => Some(failure.clone()),
        _ => None,
    })
}

/// Asserts a circuit refusal (a `Debug`-formatted [`ConnectionFailure`]) reached the client
/// as a relayed-connection failure with `status` in its reason.
fn assert_refused(failure: &str, status: &str) {
    assert!(
        failure.starts_with("Relayed(") && failure.contains(status),
        "expected a refusal with {status}, got {failure}"
    );
}

/// The relay's refusal count for `label`.
fn refusals(world: &mut World, relay: usize, label: &str) -> u64 {
    relay_stats(world, relay)
        .refusals
        .get(label)
        .copied()
        .unwrap_or(0)
}

/// The relay's refusal counts, only the non-zero ones.
fn nonzero_refusals(world: &mut World, relay: usize) -> Vec<(&'static str, u64)> {
    relay_stats(world, relay)
        .refusals
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn relay_stats(world: &mut World, relay: usize) -> dep2p_core::node::RelayStats {
    world.node(relay).relay_stats().expect("node is a relay")
}

/// Asserts the relay holds no circuit, bridge or parked byte (reservations may remain).
fn assert_no_circuits(world: &mut World, relay: usize) {
    let stats = relay_stats(world, relay);
    assert_eq!(
        (stats.circuits, stats.bridges, stats.bridge_buffered),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn reserve_beyond_max_reservations_is_refused_but_renewals_still_pass() {
    let limits = RelayLimits::default().max_reservations(2);
    let (mut world, relay) = relay_world(301, limits);
    let (a, a_r) = client(&mut world, relay, None);
    let (b, b_r) = client(&mut world, relay, None);
    let (c, c_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, a, a_r).is_ok());
    assert!(reserve(&mut world, b, b_r).is_ok());
    world.run_for(Duration::from_secs(1));
    let streams = world.node(relay).stats().streams;
    let refused = reserve(&mut world, c, c_r).expect_err("the third reservation is refused");
    assert!(refused.contains("ResourceLimitExceeded"), "{refused}");
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("reservations_full", 1)]
    );
    world.run_for(Duration::from_secs(1));
    assert_eq!(
        world.node(relay).stats().streams,
        streams,
        "the refused request's stream is gone"
    );

    // The relay is full, yet a renewal is admitted: it does not count twice.
    let (_, renewed) = reserve(&mut world, a, a_r).expect("renewal while full");
    assert!(renewed);
    let stats = relay_stats(&mut world, relay);
    assert_eq!((stats.reservations, stats.reservations_accepted), (2, 3));
    assert_eq!(refusals(&mut world, relay, "reservations_full"), 1);
}

#[test]
fn second_reserve_from_the_same_peer_replaces_the_first_and_counts_once() {
    // One reservation in total: a second one from the same peer would not fit if it counted.
    let limits = RelayLimits::default().max_reservations(1);
    let (mut world, relay) = relay_world(302, limits);
    let (a, first) = client(&mut world, relay, None);
    let (b, b_r) = client(&mut world, relay, None);
    assert_eq!(reserve(&mut world, a, first).map(|(_, r)| r), Ok(false));
    // A second connection of the same peer reserves: it takes the reservation over.
    let second = world.connect(a, relay);
    assert!(world.run_until(SETTLE, |w| w.events(a).any(|e| matches!(
        e,
        Event::ConnectionEstablished { connection, .. } if *connection == second
    ))));
    assert!(reserve(&mut world, a, second).is_ok());
    let stats = relay_stats(&mut world, relay);
    assert_eq!((stats.reservations, stats.reservations_accepted), (1, 2));
    assert!(nonzero_refusals(&mut world, relay).is_empty());

    // The old connection closing does not take the moved reservation with it: circuits to A
    // now go over the second connection.
    world
        .command(a, |n, now| n.close(now, first, 0, b"done"))
        .expect("close");
    world.run_for(Duration::from_secs(1));
    assert_eq!(relay_stats(&mut world, relay).reservations, 1);
    let relayed = dial_via(&mut world, b, b_r, a).expect("circuit over the new connection");
    let stats = relay_stats(&mut world, relay);
    assert_eq!((stats.circuits, stats.bridges), (1, 1));
    world
        .command(b, |n, now| n.close(now, relayed, 0, b"done"))
        .expect("close");
    world
        .command(a, |n, now| n.close(now, second, 0, b"done"))
        .expect("close");
    world.run_for(Duration::from_secs(1));
    let stats = relay_stats(&mut world, relay);
    assert_eq!((stats.reservations, stats.circuits), (0, 0), "{stats:?}");
}

#[test]
fn automatic_renewals_keep_the_only_slot_and_never_count_twice() {
    // Room for one reservation, renewed by the client at three quarters of an 8 s TTL.
    let limits = RelayLimits::default()
        .max_reservations(1)
        .reservation_ttl(Duration::from_secs(8));
    let (mut world, relay) = relay_world(309, limits);
    let (a, a_r) = client(&mut world, relay, None);
    let (b, b_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, a, a_r).is_ok());
    world.run_for(Duration::from_secs(1));
    let streams = [relay, a].map(|n| world.node(n).stats().streams);
    world.run_for(Duration::from_secs(30));
    let renewals = world
        .events(a)
        .filter(|e| matches!(e, Event::ReservationAccepted { renewed: true, .. }))
        .count();
    assert!(renewals >= 4, "renewed {renewals} times in 30 s");
    assert!(
        !world
            .events(a)
            .any(|e| matches!(e, Event::ReservationLost { .. })),
        "never lost"
    );
    let stats = relay_stats(&mut world, relay);
    assert_eq!(stats.reservations, 1);
    assert!(nonzero_refusals(&mut world, relay).is_empty());
    assert_eq!(
        [relay, a].map(|n| world.node(n).stats().streams),
        streams,
        "renewal streams do not pile up"
    );
    // The slot is still taken by A alone.
    let refused = reserve(&mut world, b, b_r).expect_err("no room for B");
    assert!(refused.contains("ResourceLimitExceeded"), "{refused}");
}

#[test]
fn reserve_beyond_max_reservations_per_ip_is_refused_for_that_ip_only() {
    let limits = RelayLimits::default().max_reservations_per_ip(2);
    let (mut world, relay) = relay_world(303, limits);
    let (a, a_r) = client(&mut world, relay, Some(shared_ip(5001)));
    let (b, b_r) = client(&mut world, relay, Some(shared_ip(5002)));
    let (c, c_r) = client(&mut world, relay, Some(shared_ip(5003)));
    let (d, d_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, a, a_r).is_ok());
    assert!(reserve(&mut world, b, b_r).is_ok());
    let refused = reserve(&mut world, c, c_r).expect_err("a third reservation from the IP");
    assert!(refused.contains("ResourceLimitExceeded"), "{refused}");
    assert!(
        reserve(&mut world, d, d_r).is_ok(),
        "another IP is not affected"
    );
    // Renewals from the full IP still pass.
    assert_eq!(reserve(&mut world, b, b_r).map(|(_, r)| r), Ok(true));
    assert_eq!(relay_stats(&mut world, relay).reservations, 3);
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("reservations_per_ip_full", 1)]
    );
}

#[test]
fn reservation_expire_is_now_plus_ttl() {
    let ttl = Duration::from_secs(600);
    let (mut world, relay) = relay_world(304, RelayLimits::default().reservation_ttl(ttl));
    let (a, a_r) = client(&mut world, relay, None);
    let (expire, _) = reserve(&mut world, a, a_r).expect("reserved");
    // The relay admitted the request less than a round trip before the answer arrived.
    let now_unix = (WORLD_UNIX_START + world.elapsed() + ttl).as_secs();
    assert!(
        (now_unix - 1..=now_unix).contains(&expire),
        "expire {expire}, expected about {now_unix}"
    );
}

/// A raw QUIC client of the relay with host key seed 9; connected, and with the relay's
/// identify request to it (which it never answers) timed out.
fn raw_client(world: &mut World, relay: usize, port: u16) -> RawPeer {
    let tls = client_tls(
        world,
        &good_identity(9),
        Some(world.peer_id(relay)),
        &[ALPN],
    );
    let mut raw = RawPeer::connect(world, relay, port, tls);
    assert!(raw.run_until(world, SETTLE, |_, c| c.is_connected()));
    raw.run_for(world, Duration::from_secs(11));
    raw
}

/// A multistream-select line.
fn line(text: &str) -> Vec<u8> {
    let len = text.len() + 1;
    assert!(len < 128, "test lines fit a one-byte uvarint");
    let mut out = vec![len as u8];
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// Opens a HOP stream from `raw` and sends `request`; returns the relay's answer once the
/// stream ended.
fn raw_hop(world: &mut World, raw: &mut RawPeer, request: Bytes) -> HopResponse {
    let mut bytes = line(HEADER);
    bytes.extend_from_slice(&line(HOP_PROTOCOL));
    bytes.extend_from_slice(&request);
    let id = raw.open_and_write(&bytes);
    let mut received = Vec::new();
    let mut end = None;
    for _ in 0..50 {
        raw.run_for(world, Duration::from_millis(100));
        let (data, e) = raw.read(id);
        received.extend_from_slice(&data);
        end = e;
        if end.is_some() {
            break;
        }
    }
    assert_eq!(
        end,
        Some(None),
        "the relay answers, then finishes the stream"
    );
    let mut echo = line(HEADER);
    echo.extend_from_slice(&line(HOP_PROTOCOL));
    assert!(received.starts_with(&echo), "{received:?}");
    let frame = &received[echo.len()..];
    // A uvarint length of one or two bytes (messages are at most 4096 bytes).
    let (len, prefix) = if frame[0] < 0x80 {
        (usize::from(frame[0]), 1)
    } else {
        (usize::from(frame[0] & 0x7f) | usize::from(frame[1]) << 7, 2)
    };
    assert_eq!(frame.len(), prefix + len, "exactly one frame");
    HopResponse::decode(Bytes::copy_from_slice(&frame[prefix..])).expect("a valid HOP answer")
}

#[test]
fn reservation_that_is_not_renewed_expires_on_the_relay_after_the_ttl() {
    let ttl = Duration::from_secs(20);
    let (mut world, relay) = relay_world(305, RelayLimits::default().reservation_ttl(ttl));
    let (b, b_r) = client(&mut world, relay, None);
    // A raw client reserves once and never renews.
    let mut raw = raw_client(&mut world, relay, 6001);
    let answer = raw_hop(&mut world, &mut raw, HopRequest::Reserve.encode());
    assert_eq!(answer.status, Status::Ok);
    let expire = answer.reservation.expect("a reservation").expire_unix_secs;
    let start = world.elapsed();
    assert_eq!(relay_stats(&mut world, relay).reservations, 1);

    raw.run_for(&mut world, ttl - Duration::from_secs(2));
    assert_eq!(relay_stats(&mut world, relay).reservations, 1, "still live");
    raw.run_for(&mut world, Duration::from_secs(3));
    assert!((WORLD_UNIX_START + world.elapsed()).as_secs() >= expire);
    assert_eq!(
        relay_stats(&mut world, relay).reservations,
        0,
        "expired {:?} after it was granted",
        world.elapsed() - start
    );
    assert!(raw.lost().is_none(), "the connection itself lives on");

    // A circuit to the expired peer is refused with NO_RESERVATION.
    let target = keypair_from_seed([9; 32]).public().to_peer_id();
    let target_relayed = world
        .command(b, |n, now| n.dial_through_relay(now, b_r, target))
        .expect("dial starts");
    raw.run_for(&mut world, Duration::from_secs(1));
    let failure = closed(&world, b, target_relayed).expect("the dial failed");
    assert_refused(&format!("{failure:?}"), "NoReservation");
    assert_eq!(nonzero_refusals(&mut world, relay), [("no_reservation", 1)]);
}

#[test]
fn connect_to_oneself_is_refused_with_permission_denied() {
    let (mut world, relay) = relay_world(306, RelayLimits::default());
    let mut raw = raw_client(&mut world, relay, 6002);
    let answer = raw_hop(&mut world, &mut raw, HopRequest::Reserve.encode());
    assert_eq!(answer.status, Status::Ok);
    let me = keypair_from_seed([9; 32]).public().to_peer_id();
    let answer = raw_hop(
        &mut world,
        &mut raw,
        HopRequest::Connect { peer: me }.encode(),
    );
    assert_eq!(answer.status, Status::PermissionDenied);
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("connect_to_self", 1)]
    );
    assert_no_circuits(&mut world, relay);
}

#[test]
fn hop_stream_that_sends_no_request_is_reset_after_the_request_timeout() {
    let timeout = Duration::from_secs(3);
    let (mut world, relay) = relay_world(307, RelayLimits::default().request_timeout(timeout));
    let mut raw = raw_client(&mut world, relay, 6003);
    let baseline = world.node(relay).stats().streams;
    let mut bytes = line(HEADER);
    bytes.extend_from_slice(&line(HOP_PROTOCOL));
    let id = raw.open_and_write(&bytes);
    raw.run_for(&mut world, timeout - Duration::from_millis(500));
    assert_eq!(raw.read(id).1, None, "not reset before the timeout");
    assert_eq!(world.node(relay).stats().streams, baseline + 1);
    raw.run_for(&mut world, Duration::from_secs(1));
    assert_eq!(raw.read(id).1, Some(Some(CODE_TIMED_OUT)));
    assert_eq!(
        world.node(relay).stats().streams,
        baseline,
        "no entry leaks"
    );
    assert!(raw.lost().is_none(), "only the stream is reset");
}

#[test]
fn request_timeout_covers_negotiation_and_the_first_message_together() {
    let timeout = Duration::from_secs(3);
    let (mut world, relay) = relay_world(308, RelayLimits::default().request_timeout(timeout));
    let mut raw = raw_client(&mut world, relay, 6004);
    // The header now, the HOP proposal just before the timeout, then nothing.
    let id = raw.open_and_write(&line(HEADER));
    raw.run_for(&mut world, timeout - Duration::from_millis(500));
    raw.write(id, &line(HOP_PROTOCOL));
    raw.run_for(&mut world, Duration::from_secs(1));
    assert_eq!(
        raw.read(id).1,
        Some(Some(CODE_TIMED_OUT)),
        "reset {timeout:?} after the stream opened, not {timeout:?} after negotiation"
    );
}

/// A relay with `limits`, and nodes A and B reserved on it. Returns the world, the relay, and
/// `(node, connection to the relay)` for A and B.
fn two_reserved(
    seed: u64,
    limits: RelayLimits,
) -> (World, usize, (usize, ConnectionId), (usize, ConnectionId)) {
    let (mut world, relay) = relay_world(seed, limits);
    let (a, a_r) = client(&mut world, relay, None);
    let (b, b_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, a, a_r).is_ok());
    assert!(reserve(&mut world, b, b_r).is_ok());
    (world, relay, (a, a_r), (b, b_r))
}

#[test]
fn connect_beyond_max_circuits_is_refused_with_resource_limit_exceeded() {
    let limits = RelayLimits::default().max_circuits(1);
    let (mut world, relay, (a, _), (b, b_r)) = two_reserved(310, limits);
    let (c, c_r) = client(&mut world, relay, None);
    dial_via(&mut world, b, b_r, a).expect("first circuit");
    world.run_for(Duration::from_secs(1));
    let streams = [relay, c].map(|n| world.node(n).stats().streams);
    let failure = dial_via(&mut world, c, c_r, b).expect_err("second circuit");
    assert_refused(&failure, "ResourceLimitExceeded");
    assert_eq!(nonzero_refusals(&mut world, relay), [("circuits_full", 1)]);
    assert_eq!(relay_stats(&mut world, relay).circuits, 1);
    world.run_for(Duration::from_secs(1));
    assert_eq!(
        [relay, c].map(|n| world.node(n).stats().streams),
        streams,
        "the refused CONNECT's stream is gone at both ends"
    );
}

#[test]
fn connect_beyond_max_circuits_per_peer_is_refused_as_source_and_as_destination() {
    let limits = RelayLimits::default().max_circuits_per_peer(1);
    let (mut world, relay, (a, _), (b, b_r)) = two_reserved(311, limits);
    let (c, c_r) = client(&mut world, relay, None);
    let (d, d_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, d, d_r).is_ok());
    dial_via(&mut world, b, b_r, a).expect("B → A");
    // B is already the source of a circuit.
    let failure = dial_via(&mut world, b, b_r, d).expect_err("B → D");
    assert_refused(&failure, "ResourceLimitExceeded");
    // A is already the destination of a circuit.
    let failure = dial_via(&mut world, c, c_r, a).expect_err("C → A");
    assert_refused(&failure, "ResourceLimitExceeded");
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [
            ("circuits_per_destination_full", 1),
            ("circuits_per_source_full", 1)
        ]
    );
    // Peers with no circuit are unaffected.
    dial_via(&mut world, c, c_r, d).expect("C → D");
    assert_eq!(relay_stats(&mut world, relay).circuits, 2);
}

#[test]
fn circuit_is_reset_at_both_ends_when_its_duration_limit_passes() {
    let duration = Duration::from_secs(10);
    let limits = RelayLimits::default().max_circuit_duration(duration);
    let (mut world, relay, (a, _), (b, b_r)) = two_reserved(312, limits);
    let relayed_b = dial_via(&mut world, b, b_r, a).expect("circuit");
    let relayed_a = relayed_conn_to(&world, a, b);
    world.run_for(duration - Duration::from_secs(2));
    assert!(
        closed(&world, b, relayed_b).is_none(),
        "not before the limit"
    );
    assert_eq!(relay_stats(&mut world, relay).bridges, 1);
    world.run_for(Duration::from_secs(3));
    for (at, conn) in [(a, relayed_a), (b, relayed_b)] {
        let failure = closed(&world, at, conn).expect("the relayed connection failed");
        assert!(
            matches!(&failure, ConnectionFailure::Relayed(r) if r.contains(CODE_CIRCUIT_LIMIT)),
            "node {at}: {failure:?}"
        );
    }
    assert_no_circuits(&mut world, relay);
}

/// Reads everything waiting on `stream` at `at`; `None` once the stream or its connection
/// failed.
fn drain_stream(
    world: &mut World,
    at: usize,
    stream: dep2p_core::node::StreamHandle,
) -> Option<usize> {
    let mut total = 0;
    for _ in 0..10_000 {
        match world.command(at, |n, now| n.read(now, stream, 64 * 1024)) {
            Ok(ReadOutcome::Data(data)) => total += data.len(),
            Ok(ReadOutcome::Blocked | ReadOutcome::Finished) => return Some(total),
            Err(_) => return None,
        }
    }
    panic!("stream never drained");
}

#[test]
fn circuit_is_reset_at_both_ends_when_a_direction_hits_the_byte_limit() {
    let limit: u64 = 64 * 1024;
    let limits = RelayLimits::default().max_circuit_bytes(limit);
    let (mut world, relay, (a, _), (b, b_r)) = two_reserved(313, limits);
    let relayed_b = dial_via(&mut world, b, b_r, a).expect("circuit");
    let relayed_a = relayed_conn_to(&world, a, b);
    let stream = world
        .command(b, |n, now| n.open_stream(now, relayed_b, APP))
        .expect("stream opens");
    let payload = vec![0x42u8; 16 * 1024];
    let (mut sent, mut received) = (0usize, 0usize);
    let mut inbound = None;
    // B sends four times the limit, A reads whatever arrives, until the circuit breaks.
    for _ in 0..200 {
        if closed(&world, b, relayed_b).is_some() && closed(&world, a, relayed_a).is_some() {
            break;
        }
        if sent < 4 * limit as usize
            && let Ok(n) = world.command(b, |node, now| node.write(now, stream, &payload))
        {
            sent += n;
        }
        world.run_for(Duration::from_millis(50));
        inbound = inbound.or_else(|| {
            world.events(a).find_map(|e| match e {
                Event::InboundStream { stream, .. } => Some(*stream),
                _ => None,
            })
        });
        if let Some(s) = inbound
            && let Some(n) = drain_stream(&mut world, a, s)
        {
            received += n;
        }
    }
    // With TLS and yamux framing, B's writes took its direction past the limit.
    assert!(
        sent as u64 >= limit,
        "B wrote up to the limit ({sent} bytes)"
    );
    assert!(
        (received as u64) < limit,
        "A received {received} bytes: at most the limit, less its TLS and yamux overhead"
    );
    for (at, conn) in [(a, relayed_a), (b, relayed_b)] {
        let failure = closed(&world, at, conn).expect("the relayed connection failed");
        assert!(
            matches!(&failure, ConnectionFailure::Relayed(r) if r.contains(CODE_CIRCUIT_LIMIT)),
            "node {at}: {failure:?}"
        );
    }
    assert_no_circuits(&mut world, relay);
    let stats = relay_stats(&mut world, relay);
    assert!(
        stats.bytes_relayed <= 2 * limit,
        "nothing beyond the limit was relayed: {stats:?}"
    );
}

#[test]
fn reserve_beyond_the_per_peer_rate_is_refused() {
    let limits = RelayLimits::default().reservation_rate_per_peer(RateLimit::new(2, HOUR));
    let (mut world, relay) = relay_world(320, limits);
    let (a, a_r) = client(&mut world, relay, None);
    let (b, b_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, a, a_r).is_ok());
    assert!(reserve(&mut world, a, a_r).is_ok());
    let refused = reserve(&mut world, a, a_r).expect_err("a third RESERVE within the hour");
    assert!(refused.contains("ResourceLimitExceeded"), "{refused}");
    assert!(
        reserve(&mut world, b, b_r).is_ok(),
        "other peers unaffected"
    );
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("reservation_rate_per_peer", 1)]
    );
}

#[test]
fn reserve_beyond_the_per_ip_rate_is_refused() {
    let limits = RelayLimits::default().reservation_rate_per_ip(RateLimit::new(2, HOUR));
    let (mut world, relay) = relay_world(321, limits);
    let (a, a_r) = client(&mut world, relay, Some(shared_ip(5001)));
    let (b, b_r) = client(&mut world, relay, Some(shared_ip(5002)));
    let (c, c_r) = client(&mut world, relay, Some(shared_ip(5003)));
    let (d, d_r) = client(&mut world, relay, None);
    assert!(reserve(&mut world, a, a_r).is_ok());
    assert!(reserve(&mut world, b, b_r).is_ok());
    let refused = reserve(&mut world, c, c_r).expect_err("a third RESERVE from the IP");
    assert!(refused.contains("ResourceLimitExceeded"), "{refused}");
    assert!(reserve(&mut world, d, d_r).is_ok(), "other IPs unaffected");
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("reservation_rate_per_ip", 1)]
    );
}

#[test]
fn connect_beyond_the_per_peer_circuit_rate_is_refused() {
    let limits = RelayLimits::default().circuit_rate_per_peer(RateLimit::new(1, HOUR));
    let (mut world, relay, (a, a_r), (b, _)) = two_reserved(322, limits);
    let (c, c_r) = client(&mut world, relay, None);
    dial_via(&mut world, c, c_r, a).expect("C → A");
    let failure = dial_via(&mut world, c, c_r, b).expect_err("C → B within the hour");
    assert_refused(&failure, "ResourceLimitExceeded");
    dial_via(&mut world, a, a_r, b).expect("A → B: another source");
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("circuit_rate_per_peer", 1)]
    );
}

#[test]
fn connect_beyond_the_per_ip_circuit_rate_is_refused() {
    let limits = RelayLimits::default().circuit_rate_per_ip(RateLimit::new(1, HOUR));
    let (mut world, relay, (a, _), (b, b_r)) = two_reserved(323, limits);
    let (c, c_r) = client(&mut world, relay, Some(shared_ip(5001)));
    let (d, d_r) = client(&mut world, relay, Some(shared_ip(5002)));
    dial_via(&mut world, c, c_r, a).expect("C → A");
    let failure = dial_via(&mut world, d, d_r, a).expect_err("D, same IP as C, → A");
    assert_refused(&failure, "ResourceLimitExceeded");
    dial_via(&mut world, b, b_r, a).expect("B, another IP, → A");
    assert_eq!(
        nonzero_refusals(&mut world, relay),
        [("circuit_rate_per_ip", 1)]
    );
}

#[test]
fn relay_tables_and_streams_return_to_zero_after_everything_ends() {
    let (mut world, relay) = relay_world(330, RelayLimits::default());
    let baseline = world.node(relay).stats();
    let (a, a_r) = client(&mut world, relay, None);
    let (b, b_r) = client(&mut world, relay, None);
    let (c, c_r) = client(&mut world, relay, None);
    for (node, conn) in [(a, a_r), (b, b_r), (c, c_r)] {
        assert!(reserve(&mut world, node, conn).is_ok());
    }
    // Refused requests leave nothing behind either.
    let (d, d_r) = client(&mut world, relay, None);
    assert_refused(
        &dial_via(&mut world, a, a_r, d).expect_err("D holds no reservation"),
        "NoReservation",
    );
    let b_a = dial_via(&mut world, b, b_r, a).expect("B → A");
    let c_a = dial_via(&mut world, c, c_r, a).expect("C → A");
    dial_via(&mut world, a, a_r, b).expect("A → B");
    for (at, conn) in [(b, b_a), (c, c_a)] {
        let stream = world
            .command(at, |n, now| n.open_stream(now, conn, APP))
            .expect("stream");
        world.run_for(Duration::from_millis(200));
        let _ = world.command(at, |n, now| n.write(now, stream, b"payload"));
    }
    world.run_for(Duration::from_secs(1));
    let stats = relay_stats(&mut world, relay);
    assert_eq!(
        (stats.reservations, stats.circuits, stats.bridges),
        (3, 3, 3)
    );

    // One circuit closed by its dialer, then every client leaves the relay.
    world
        .command(b, |n, now| n.close(now, b_a, 0, b"bye"))
        .expect("close");
    world.run_for(Duration::from_secs(1));
    let stats = relay_stats(&mut world, relay);
    assert_eq!((stats.circuits, stats.bridges), (2, 2), "{stats:?}");
    for (node, conn) in [(a, a_r), (b, b_r), (c, c_r), (d, d_r)] {
        world
            .command(node, |n, now| n.close(now, conn, 0, b"bye"))
            .expect("close");
    }
    world.run_for(Duration::from_secs(2));
    let stats = relay_stats(&mut world, relay);
    assert_eq!(
        (
            stats.reservations,
            stats.circuits,
            stats.bridges,
            stats.bridge_buffered
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.circuits_opened, 3);
    let after = world.node(relay).stats();
    assert_eq!(
        (after.connections, after.streams),
        (baseline.connections, baseline.streams),
        "{after:?}"
    );
}
