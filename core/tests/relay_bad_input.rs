//! Bad input to a Circuit Relay v2 relay and client (DESIGN §4.3, §5.1) gets its exact status
//! or a reset, never a panic: oversized and malformed HOP messages, a STATUS sent as a request,
//! CONNECT to a peer without a reservation, RESERVE over a relayed connection, STOP from a peer
//! that is not our relay, a silent HOP stream, a target that never answers STOP, and random
//! bytes on HOP and STOP streams (relay and client side). After each, the relay still serves
//! well-behaved peers (a reservation and a circuit work). Bytes that follow the final STATUS on
//! either end of a circuit reach the other end.

mod common;

use std::time::Duration;

use bytes::Bytes;
use quinn_proto::StreamId;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use dep2p_core::framing::{FrameDecoder, encode_frame};
use dep2p_core::identity::{PeerId, keypair_from_seed};
use dep2p_core::multistream::PROTOCOL_HEADER;
use dep2p_core::node::{ConnectionId, Event, NodeConfig, ReadOutcome};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::relay::wire::{
    HopRequest, HopResponse, MAX_MESSAGE_SIZE, Status, StopRequest, StopResponse,
};
use dep2p_core::relay::{HOP_PROTOCOL, STOP_PROTOCOL};
use dep2p_core::testing::World;
use dep2p_core::tls::ALPN;

use common::SETTLE;
use common::raw::{RawPeer, client_tls, good_identity, run_all_for, run_all_until};

/// Reset code of a stream that did not deliver its request in time (`CODE_TIMED_OUT`).
const CODE_TIMED_OUT: u64 = 2;
/// The relay's request timeout in these tests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Negotiation timeout of every node: the identify request a node sends a (silent) raw client
/// gives up after it, so stream counts settle before a test measures them.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a raw exchange is given to complete in virtual time.
const EXCHANGE: Duration = Duration::from_millis(500);

/// A multistream-select line: uvarint length (newline included), the text, `\n`.
fn line(text: &str) -> Vec<u8> {
    let len = text.len() + 1;
    assert!(len < 128, "test lines fit a one-byte uvarint");
    let mut out = vec![len as u8];
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// The header and one protocol line: a dialer's proposal and a listener's acceptance alike.
fn negotiate(protocol: &str) -> Vec<u8> {
    let mut out = line(PROTOCOL_HEADER);
    out.extend_from_slice(&line(protocol));
    out
}

/// `bytes` with the echoed negotiation of `protocol` stripped, or `None` if it is not there.
fn after_negotiation<'a>(bytes: &'a [u8], protocol: &str) -> Option<&'a [u8]> {
    bytes.strip_prefix(negotiate(protocol).as_slice())
}

/// The first relay-protocol frame in `bytes` and the bytes after it, if complete.
fn first_frame(bytes: &[u8]) -> Option<(Bytes, Vec<u8>)> {
    let mut decoder = FrameDecoder::new(MAX_MESSAGE_SIZE);
    decoder.extend(bytes);
    let frame = decoder
        .decode()
        .expect("the relay sends well-framed answers")?;
    Some((frame, decoder.into_remaining().to_vec()))
}

/// The HOP answer the relay wrote on a raw stream, decoded, and the bytes that followed it.
fn hop_answer(bytes: &[u8]) -> Option<(HopResponse, Vec<u8>)> {
    let (frame, rest) = first_frame(after_negotiation(bytes, HOP_PROTOCOL)?)?;
    let response = HopResponse::decode(frame).expect("the relay's answer decodes");
    Some((response, rest))
}

/// The PeerId of the raw client built from `good_identity(n)`.
fn raw_peer_id(n: u8) -> PeerId {
    keypair_from_seed([n; 32]).public().to_peer_id()
}

/// A relay `r` and two well-behaved nodes: `a` reserved on `r`, `b` connected to `r`.
struct Relay {
    world: World,
    r: usize,
    a: usize,
    b: usize,
    a_r: ConnectionId,
    b_r: ConnectionId,
}

fn relay_limits() -> RelayLimits {
    RelayLimits::default().request_timeout(REQUEST_TIMEOUT)
}

fn node_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.negotiation_timeout(NEGOTIATION_TIMEOUT);
    config
}

fn relay_config() -> NodeConfig {
    let mut config = node_config();
    config.relay_server(Some(relay_limits()));
    config
}

fn relay_world(seed: u64) -> Relay {
    let mut world = World::new(seed);
    let r = world.add_node(relay_config());
    let a = world.add_node(node_config());
    let b = world.add_node(node_config());
    let a_r = world.connect(a, r);
    let b_r = world.connect(b, r);
    assert!(world.run_until(SETTLE, |w| w.is_connected(a, r) && w.is_connected(b, r)));
    let mut fx = Relay {
        world,
        r,
        a,
        b,
        a_r,
        b_r,
    };
    reserve_ok(&mut fx, &mut []);
    fx
}

/// Node `a` (re)reserves on the relay and the relay accepts.
fn reserve_ok(fx: &mut Relay, peers: &mut [&mut RawPeer]) {
    let (a, a_r) = (fx.a, fx.a_r);
    let accepted = |w: &World| {
        w.events(a)
            .filter(|e| matches!(e, Event::ReservationAccepted { connection, .. } if *connection == a_r))
            .count()
    };
    let before = accepted(&fx.world);
    fx.world
        .command(a, |n, now| n.reserve(now, a_r))
        .expect("reserve starts");
    assert!(
        run_all_until(&mut fx.world, peers, SETTLE, |w, _| accepted(w) > before),
        "the relay accepts a well-behaved reservation: {:?}",
        fx.world.events(a).collect::<Vec<_>>()
    );
}

/// The relay still serves: `a` renews its reservation and `b` reaches `a` through a circuit
/// (TLS over the circuit authenticates both ends, so bytes flowed both ways).
fn relay_still_serves(fx: &mut Relay, peers: &mut [&mut RawPeer]) {
    reserve_ok(fx, peers);
    let (a, b, b_r) = (fx.a, fx.b, fx.b_r);
    let target = fx.world.peer_id(a);
    let relayed = fx
        .world
        .command(b, |n, now| n.dial_through_relay(now, b_r, target))
        .expect("dial starts");
    let relay_id = fx.world.peer_id(fx.r);
    let up = |w: &World| {
        w.events(b).any(|e| {
            matches!(e, Event::ConnectionEstablished { connection, relay: Some(via), .. }
                if *connection == relayed && *via == relay_id)
        })
    };
    assert!(
        run_all_until(&mut fx.world, peers, SETTLE, |w, _| up(w)),
        "a circuit through the relay still works: {:?}",
        fx.world.events(b).collect::<Vec<_>>()
    );
    fx.world
        .command(b, |n, now| n.close(now, relayed, 0, b"done"))
        .expect("close");
    run_all_for(&mut fx.world, peers, EXCHANGE);
}

/// A raw client (identity `n`) connected to node `to`, after the node's identify request to
/// it (never answered) timed out.
fn raw_client(world: &mut World, to: usize, n: u8) -> RawPeer {
    let tls = client_tls(world, &good_identity(n), Some(world.peer_id(to)), &[ALPN]);
    let mut peer = RawPeer::connect(world, to, 6000 + u16::from(n), tls);
    assert!(
        peer.run_until(world, SETTLE, |_, p| p.is_connected()),
        "raw client {n} connects"
    );
    peer.run_for(world, NEGOTIATION_TIMEOUT * 2);
    peer
}

/// Sends `request` after negotiating HOP on a new stream, gives the relay time to answer, and
/// returns the stream, what came back, and how the relay ended its side.
fn send_hop(
    world: &mut World,
    peer: &mut RawPeer,
    request: &[u8],
) -> (StreamId, Vec<u8>, Option<Option<u64>>) {
    let mut bytes = negotiate(HOP_PROTOCOL);
    bytes.extend_from_slice(request);
    let id = peer.open_and_write(&bytes);
    peer.run_for(world, EXCHANGE);
    let (data, end) = peer.received(id);
    (id, data, end)
}

/// Asserts the relay answered `request` with `status`, finished the stream after it and sent
/// nothing more; then finishes our side so the relay can forget the stream.
fn assert_hop_status(
    world: &mut World,
    peer: &mut RawPeer,
    what: &str,
    request: &[u8],
    status: Status,
) {
    let (id, data, end) = send_hop(world, peer, request);
    let (response, rest) =
        hop_answer(&data).unwrap_or_else(|| panic!("{what}: no HOP answer in {data:?}"));
    assert_eq!(response.status, status, "{what}: {response:?}");
    assert!(response.reservation.is_none(), "{what}: no reservation");
    assert!(rest.is_empty(), "{what}: nothing after the STATUS");
    assert_eq!(end, Some(None), "{what}: the relay finished the stream");
    peer.finish(id);
    peer.run_for(world, EXCHANGE);
}

/// A HOP message with arbitrary fields, framed.
fn hop_message(r#type: Option<i32>, peer: Option<Vec<u8>>, status: Option<i32>) -> Bytes {
    use dep2p_core::relay::wire::proto;
    let message = proto::HopMessage {
        r#type,
        peer: peer.map(|id| proto::Peer {
            id: Some(Bytes::from(id)),
            addrs: Vec::new(),
        }),
        reservation: None,
        limit: None,
        status,
    };
    encode_frame(&prost::Message::encode_to_vec(&message))
}

#[test]
fn oversized_hop_message_is_answered_malformed_message() {
    let mut fx = relay_world(40);
    let mut x = raw_client(&mut fx.world, fx.r, 41);
    let streams = fx.world.node(fx.r).stats().streams;
    // A length prefix of MAX_MESSAGE_SIZE + 1 (4097 = 0x81 0x20), then junk.
    let mut request = vec![0x81, 0x20];
    request.extend_from_slice(&[0xab; 512]);
    assert_hop_status(
        &mut fx.world,
        &mut x,
        "oversized",
        &request,
        Status::MalformedMessage,
    );
    let stats = fx.world.node(fx.r).relay_stats().expect("relay");
    assert_eq!(stats.refusals.get("malformed_message"), Some(&1));
    assert_eq!(
        fx.world.node(fx.r).stats().streams,
        streams,
        "no entry leaks"
    );
    relay_still_serves(&mut fx, &mut [&mut x]);
}

#[test]
fn malformed_hop_protobuf_is_answered_malformed_message() {
    let mut fx = relay_world(42);
    let mut x = raw_client(&mut fx.world, fx.r, 43);
    let cases: Vec<(&str, Bytes)> = vec![
        // Field 15 with the reserved wire type 7.
        ("undecodable protobuf", encode_frame(&[0x7f, 0x01, 0x02])),
        ("truncated field", encode_frame(&[0x0a, 0x10, 0x01])),
        ("missing type", hop_message(None, None, None)),
        (
            "CONNECT without peer",
            hop_message(
                Some(dep2p_core::relay::wire::proto::HOP_CONNECT),
                None,
                None,
            ),
        ),
        (
            "CONNECT with an invalid peer id",
            hop_message(
                Some(dep2p_core::relay::wire::proto::HOP_CONNECT),
                Some(vec![0xde, 0xad]),
                None,
            ),
        ),
    ];
    let count = cases.len() as u64;
    for (what, request) in cases {
        assert_hop_status(
            &mut fx.world,
            &mut x,
            what,
            &request,
            Status::MalformedMessage,
        );
    }
    let stats = fx.world.node(fx.r).relay_stats().expect("relay");
    assert_eq!(stats.refusals.get("malformed_message"), Some(&count));
    relay_still_serves(&mut fx, &mut [&mut x]);
}

#[test]
fn status_or_unknown_type_sent_as_hop_request_is_answered_unexpected_message() {
    let mut fx = relay_world(44);
    let mut x = raw_client(&mut fx.world, fx.r, 45);
    let status_as_request = HopResponse::from_status(Status::Ok).encode();
    assert_hop_status(
        &mut fx.world,
        &mut x,
        "STATUS as request",
        &status_as_request,
        Status::UnexpectedMessage,
    );
    assert_hop_status(
        &mut fx.world,
        &mut x,
        "unknown type 7",
        &hop_message(Some(7), None, None),
        Status::UnexpectedMessage,
    );
    let stats = fx.world.node(fx.r).relay_stats().expect("relay");
    assert_eq!(stats.refusals.get("unexpected_message"), Some(&2));
    relay_still_serves(&mut fx, &mut [&mut x]);
}

#[test]
fn connect_to_a_peer_without_reservation_is_answered_no_reservation() {
    let mut fx = relay_world(46);
    let mut x = raw_client(&mut fx.world, fx.r, 47);
    // `b` is connected to the relay but holds no reservation; 99 is not connected at all.
    for (what, target) in [
        ("connected peer", fx.world.peer_id(fx.b)),
        ("unknown peer", raw_peer_id(99)),
    ] {
        let request = HopRequest::Connect { peer: target }.encode();
        assert_hop_status(&mut fx.world, &mut x, what, &request, Status::NoReservation);
    }
    let stats = fx.world.node(fx.r).relay_stats().expect("relay");
    assert_eq!(
        (stats.circuits, stats.bridges),
        (0, 0),
        "no circuit was admitted"
    );
    relay_still_serves(&mut fx, &mut [&mut x]);
}

#[test]
fn reserve_and_connect_over_a_relayed_connection_are_answered_permission_denied() {
    // R2 is a relay itself and reserved on R1; C reaches R2 through R1 and asks R2 for a
    // reservation (and a circuit) over that relayed connection.
    let mut fx = relay_world(48);
    let r1 = fx.r;
    let r2 = fx.world.add_node(relay_config());
    let c = fx.world.add_node(node_config());
    let r2_r1 = fx.world.connect(r2, r1);
    let c_r1 = fx.world.connect(c, r1);
    assert!(
        fx.world
            .run_until(SETTLE, |w| w.is_connected(r2, r1) && w.is_connected(c, r1))
    );
    fx.world
        .command(r2, |n, now| n.reserve(now, r2_r1))
        .expect("reserve starts");
    assert!(fx.world.run_until(SETTLE, |w| {
        w.events(r2)
            .any(|e| matches!(e, Event::ReservationAccepted { .. }))
    }));
    let r2_id = fx.world.peer_id(r2);
    let relayed = fx
        .world
        .command(c, |n, now| n.dial_through_relay(now, c_r1, r2_id))
        .expect("dial starts");
    assert!(fx.world.run_until(SETTLE, |w| w.events(c).any(
        |e| matches!(e, Event::ConnectionEstablished { connection, .. } if *connection == relayed)
    )));
    // The node refuses to send RESERVE over a relayed connection itself, so speak HOP as an
    // application protocol.
    assert!(
        fx.world
            .command(c, |n, now| n.reserve(now, relayed))
            .is_err()
    );
    let a_id = fx.world.peer_id(fx.a);
    for (what, request) in [
        ("RESERVE", HopRequest::Reserve.encode()),
        ("CONNECT", HopRequest::Connect { peer: a_id }.encode()),
    ] {
        let stream = fx
            .world
            .command(c, |n, now| n.open_stream(now, relayed, HOP_PROTOCOL))
            .expect("stream opens");
        assert!(
            fx.world.run_until(SETTLE, |w| w
                .events(c)
                .any(|e| matches!(e, Event::StreamReady { stream: s, .. } if *s == stream)))
        );
        let written = fx.world.command(c, |n, now| n.write(now, stream, &request));
        assert_eq!(written, Ok(request.len()));
        fx.world.run_for(EXCHANGE);
        let mut data = Vec::new();
        let mut finished = false;
        for _ in 0..100 {
            match fx.world.command(c, |n, now| n.read(now, stream, 4096)) {
                Ok(ReadOutcome::Data(bytes)) => data.extend_from_slice(&bytes),
                Ok(ReadOutcome::Finished) => {
                    finished = true;
                    break;
                }
                Ok(ReadOutcome::Blocked) => break,
                Err(error) => panic!("{what}: read failed: {error}"),
            }
        }
        let r2_stats = fx.world.node(r2).relay_stats();
        let (frame, rest) = first_frame(&data).unwrap_or_else(|| {
            panic!(
                "{what}: no answer in {data:?}; c: {:?}; r2: {r2_stats:?}",
                fx.world.events(c).collect::<Vec<_>>(),
            )
        });
        let response = HopResponse::decode(frame).expect("answer decodes");
        assert_eq!(response.status, Status::PermissionDenied, "{what}");
        assert!(
            rest.is_empty() && finished,
            "{what}: the STATUS ends the stream"
        );
    }
    let stats = fx.world.node(r2).relay_stats().expect("R2 is a relay");
    assert_eq!(stats.reservations, 0, "R2 granted nothing over the circuit");
    assert_eq!(stats.refusals.get("relayed_connection"), Some(&2));
    relay_still_serves(&mut fx, &mut []);
}

#[test]
fn stop_from_a_peer_that_is_not_our_relay_is_answered_permission_denied() {
    // `a` holds a reservation on the relay; a stranger X (no reservation of `a` on it) opens
    // STOP toward `a` as if it were a relay.
    let mut fx = relay_world(50);
    let a = fx.a;
    let mut x = raw_client(&mut fx.world, a, 51);
    let connections = fx.world.node(a).stats().connections;
    let mut bytes = negotiate(STOP_PROTOCOL);
    bytes.extend_from_slice(
        &StopRequest::Connect {
            source: raw_peer_id(52),
            limit: None,
        }
        .encode(),
    );
    bytes.extend_from_slice(b"would-be circuit bytes");
    let id = x.open_and_write(&bytes);
    x.run_for(&mut fx.world, EXCHANGE);
    let (data, end) = x.received(id);
    let (frame, rest) = after_negotiation(&data, STOP_PROTOCOL)
        .and_then(first_frame)
        .unwrap_or_else(|| panic!("no STOP answer in {data:?}"));
    let response = StopResponse::decode(frame).expect("answer decodes");
    assert_eq!(response.status, Status::PermissionDenied);
    assert!(rest.is_empty());
    assert_eq!(end, Some(None), "the STATUS ends the stream");
    assert!(
        !fx.world
            .events(a)
            .any(|e| matches!(e, Event::ConnectionEstablished { relay: Some(_), .. })),
        "no relayed connection appeared"
    );
    assert_eq!(
        fx.world.node(a).stats().connections,
        connections,
        "no relayed connection is held"
    );

    // A STATUS sent as a STOP request, and an undecodable one, get their own statuses.
    for (what, request, status) in [
        (
            "STATUS as request",
            StopResponse { status: Status::Ok }.encode(),
            Status::UnexpectedMessage,
        ),
        (
            "undecodable",
            encode_frame(&[0x7f, 0x01]),
            Status::MalformedMessage,
        ),
    ] {
        let mut bytes = negotiate(STOP_PROTOCOL);
        bytes.extend_from_slice(&request);
        let id = x.open_and_write(&bytes);
        x.run_for(&mut fx.world, EXCHANGE);
        let (data, _) = x.received(id);
        let (frame, _) = after_negotiation(&data, STOP_PROTOCOL)
            .and_then(first_frame)
            .unwrap_or_else(|| panic!("{what}: no STOP answer in {data:?}"));
        let response = StopResponse::decode(frame).expect("answer decodes");
        assert_eq!(response.status, status, "{what}");
    }
    relay_still_serves(&mut fx, &mut [&mut x]);
}

#[test]
fn silent_hop_stream_is_reset_after_the_request_timeout() {
    let mut fx = relay_world(52);
    let mut x = raw_client(&mut fx.world, fx.r, 53);
    let streams = fx.world.node(fx.r).stats().streams;
    let id = x.open_and_write(&negotiate(HOP_PROTOCOL));
    x.run_for(&mut fx.world, REQUEST_TIMEOUT / 2);
    let (data, end) = x.received(id);
    assert_eq!(
        after_negotiation(&data, HOP_PROTOCOL),
        Some(&[][..]),
        "HOP was negotiated"
    );
    assert_eq!(end, None, "not reset before the timeout");
    assert_eq!(
        fx.world.node(fx.r).stats().streams,
        streams + 1,
        "the relay tracks the waiting stream"
    );
    x.run_for(&mut fx.world, REQUEST_TIMEOUT);
    let (_, end) = x.received(id);
    assert_eq!(
        end,
        Some(Some(CODE_TIMED_OUT)),
        "reset with the timed-out code"
    );
    assert_eq!(
        fx.world.node(fx.r).stats().streams,
        streams,
        "no entry leaks"
    );
    relay_still_serves(&mut fx, &mut [&mut x]);
}

/// Accepts the streams the node opened toward `peer` (into `seen`) and returns one that
/// negotiates `protocol` and is not in `skip`.
fn find_inbound(
    peer: &mut RawPeer,
    protocol: &str,
    seen: &mut Vec<StreamId>,
    skip: &[StreamId],
) -> Option<StreamId> {
    while let Some(id) = peer.accept_bi() {
        seen.push(id);
    }
    seen.iter()
        .copied()
        .filter(|id| !skip.contains(id))
        .find(|&id| {
            let (data, _) = peer.received(id);
            data.starts_with(&negotiate(protocol))
        })
}

#[test]
fn bytes_after_connect_and_after_stop_status_reach_the_other_end() {
    let mut fx = relay_world(54);
    let r = fx.r;
    // T reserves on the relay with raw bytes; S opens a circuit to T.
    let mut t = raw_client(&mut fx.world, r, 55);
    let mut s = raw_client(&mut fx.world, r, 56);
    let (_, data, _) = send_hop(&mut fx.world, &mut t, &HopRequest::Reserve.encode());
    let (response, _) = hop_answer(&data).expect("RESERVE answered");
    assert_eq!(response.status, Status::Ok);

    let mut connect = negotiate(HOP_PROTOCOL);
    connect.extend_from_slice(
        &HopRequest::Connect {
            peer: raw_peer_id(55),
        }
        .encode(),
    );
    connect.extend_from_slice(b"early from the source");
    let source = s.open_and_write(&connect);

    // The relay opens STOP toward T (after an identify stream T leaves unanswered).
    let mut seen = Vec::new();
    let mut stop = None;
    assert!(
        run_all_until(&mut fx.world, &mut [&mut s, &mut t], SETTLE, |_, peers| {
            stop = find_inbound(peers[1], STOP_PROTOCOL, &mut seen, &[]);
            stop.is_some()
        }),
        "the relay opened STOP toward T"
    );
    let stop = stop.expect("STOP stream");
    t.write(stop, &negotiate(STOP_PROTOCOL));
    let mut request = None;
    assert!(
        run_all_until(&mut fx.world, &mut [&mut s, &mut t], SETTLE, |_, peers| {
            let (data, _) = peers[1].received(stop);
            request = after_negotiation(&data, STOP_PROTOCOL)
                .and_then(first_frame)
                .map(|(frame, rest)| (StopRequest::decode(frame), rest));
            request.is_some()
        }),
        "the relay sent STOP CONNECT"
    );
    let (request, rest) = request.expect("STOP CONNECT");
    match request.expect("STOP CONNECT decodes") {
        StopRequest::Connect { source, .. } => assert_eq!(source, raw_peer_id(56)),
    }
    assert!(
        rest.is_empty(),
        "no source byte may precede T's STOP STATUS: {rest:?}"
    );

    let mut answer = StopResponse { status: Status::Ok }.encode().to_vec();
    answer.extend_from_slice(b"early from the target");
    t.write(stop, &answer);
    run_all_for(&mut fx.world, &mut [&mut s, &mut t], EXCHANGE);

    let (data, end) = s.received(source);
    let (response, rest) = hop_answer(&data).expect("CONNECT answered");
    assert_eq!(response.status, Status::Ok);
    assert_eq!(
        rest, b"early from the target",
        "the target's early bytes arrive"
    );
    assert_eq!(end, None, "the circuit stays open");
    let (data, _) = t.received(stop);
    let (_, rest) = after_negotiation(&data, STOP_PROTOCOL)
        .and_then(first_frame)
        .expect("STOP CONNECT");
    assert_eq!(
        rest, b"early from the source",
        "the source's early bytes arrive"
    );

    // And the circuit keeps carrying bytes both ways.
    s.write(source, b" and more");
    t.write(stop, b" and more");
    run_all_for(&mut fx.world, &mut [&mut s, &mut t], EXCHANGE);
    let (data, _) = s.received(source);
    assert!(
        data.ends_with(b"early from the target and more"),
        "{data:?}"
    );
    let (data, _) = t.received(stop);
    assert!(
        data.ends_with(b"early from the source and more"),
        "{data:?}"
    );
    let stats = fx.world.node(r).relay_stats().expect("relay");
    assert_eq!(stats.bridges, 1);
    relay_still_serves(&mut fx, &mut [&mut s, &mut t]);
}

/// One random attack on a relay-protocol stream.
fn random_payload(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = (rng.next_u32() % 300) as usize;
    let mut payload = vec![0; len];
    rng.fill_bytes(&mut payload);
    match rng.next_u32() % 4 {
        // A well-formed frame around random protobuf, to get past the framing.
        0 => encode_frame(&payload).to_vec(),
        // A valid message type byte first, then random fields.
        1 => {
            let mut body = vec![0x08, (rng.next_u32() % 3) as u8];
            body.extend_from_slice(&payload);
            encode_frame(&body).to_vec()
        }
        _ => payload,
    }
}

#[test]
fn random_bytes_on_hop_and_stop_streams_never_panic_and_the_relay_keeps_serving() {
    let mut fx = relay_world(56);
    let (r, a) = (fx.r, fx.a);
    // X attacks the relay's HOP; Y attacks client `a`'s STOP; T holds a reservation and
    // answers the relay's STOP with random bytes.
    let mut x = raw_client(&mut fx.world, r, 57);
    let mut y = raw_client(&mut fx.world, a, 58);
    let mut t = raw_client(&mut fx.world, r, 59);
    let (_, data, _) = send_hop(&mut fx.world, &mut t, &HopRequest::Reserve.encode());
    assert_eq!(
        hop_answer(&data).expect("RESERVE answered").0.status,
        Status::Ok
    );
    let t_id = raw_peer_id(59);
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut seen = Vec::new();
    let mut answered: Vec<StreamId> = Vec::new();
    for round in 0..24 {
        let mut hop = negotiate(HOP_PROTOCOL);
        hop.extend_from_slice(&random_payload(&mut rng));
        let id = x.open_and_write(&hop);
        x.finish(id);
        let mut stop = negotiate(STOP_PROTOCOL);
        stop.extend_from_slice(&random_payload(&mut rng));
        let id = y.open_and_write(&stop);
        y.finish(id);
        // Every fourth round, `b` dials T and T answers the STOP with random bytes.
        if round % 4 == 0 {
            let b_r = fx.b_r;
            let dial = fx
                .world
                .command(fx.b, |n, now| n.dial_through_relay(now, b_r, t_id));
            assert!(dial.is_ok(), "round {round}: {dial:?}");
            let mut stop = None;
            let found = run_all_until(
                &mut fx.world,
                &mut [&mut x, &mut y, &mut t],
                SETTLE,
                |_, peers| {
                    stop = find_inbound(peers[2], STOP_PROTOCOL, &mut seen, &answered);
                    stop.is_some()
                },
            );
            assert!(found, "round {round}: the relay opened STOP toward T");
            let stop = stop.expect("STOP stream");
            let mut reply = negotiate(STOP_PROTOCOL);
            reply.extend_from_slice(&random_payload(&mut rng));
            t.write(stop, &reply);
            t.finish(stop);
            answered.push(stop);
        }
        run_all_for(
            &mut fx.world,
            &mut [&mut x, &mut y, &mut t],
            Duration::from_millis(200),
        );
    }
    assert_eq!(answered.len(), 6);
    // Silent leftovers time out; then only the long-lived streams remain.
    run_all_for(
        &mut fx.world,
        &mut [&mut x, &mut y, &mut t],
        REQUEST_TIMEOUT * 2,
    );
    for peer in [&x, &y, &t] {
        assert!(peer.lost().is_none(), "attack stays on the stream level");
    }
    let stats = fx.world.node(r).relay_stats().expect("relay");
    assert_eq!(stats.bridges, 0, "no circuit outlived the attack");
    relay_still_serves(&mut fx, &mut [&mut x, &mut y, &mut t]);
}

#[test]
fn target_that_never_answers_stop_fails_the_circuit_with_connection_failed() {
    let mut fx = relay_world(60);
    let r = fx.r;
    let mut t = raw_client(&mut fx.world, r, 61);
    let mut s = raw_client(&mut fx.world, r, 62);
    let (_, data, _) = send_hop(&mut fx.world, &mut t, &HopRequest::Reserve.encode());
    assert_eq!(
        hop_answer(&data).expect("RESERVE answered").0.status,
        Status::Ok
    );
    let mut connect = negotiate(HOP_PROTOCOL);
    connect.extend_from_slice(
        &HopRequest::Connect {
            peer: raw_peer_id(61),
        }
        .encode(),
    );
    let source = s.open_and_write(&connect);
    // T accepts the STOP negotiation, then never answers the CONNECT.
    let mut seen = Vec::new();
    let mut stop = None;
    assert!(run_all_until(
        &mut fx.world,
        &mut [&mut s, &mut t],
        SETTLE,
        |_, peers| {
            stop = find_inbound(peers[1], STOP_PROTOCOL, &mut seen, &[]);
            stop.is_some()
        }
    ));
    let stop = stop.expect("STOP stream");
    t.write(stop, &negotiate(STOP_PROTOCOL));
    run_all_for(&mut fx.world, &mut [&mut s, &mut t], REQUEST_TIMEOUT / 2);
    assert_eq!(
        s.received(source).0,
        negotiate(HOP_PROTOCOL),
        "no answer yet"
    );
    assert_eq!(fx.world.node(r).relay_stats().expect("relay").circuits, 1);
    run_all_for(&mut fx.world, &mut [&mut s, &mut t], REQUEST_TIMEOUT);
    let (data, end) = s.received(source);
    let (response, rest) = hop_answer(&data).expect("CONNECT answered");
    assert_eq!(response.status, Status::ConnectionFailed);
    assert!(rest.is_empty());
    assert_eq!(end, Some(None), "the STATUS ends the source's stream");
    assert_eq!(
        t.received(stop).1,
        Some(Some(CODE_TIMED_OUT)),
        "the silent STOP stream is reset"
    );
    let stats = fx.world.node(r).relay_stats().expect("relay");
    assert_eq!(
        (stats.circuits, stats.bridges),
        (0, 0),
        "the circuit is gone"
    );
    relay_still_serves(&mut fx, &mut [&mut s, &mut t]);
}

#[test]
fn random_hop_answers_to_a_reserving_client_fail_the_reservation_without_panic() {
    // X pretends to be a relay: `a` reserves on it and X answers with random bytes.
    let mut fx = relay_world(64);
    let a = fx.a;
    let mut x = raw_client(&mut fx.world, a, 65);
    let x_id = raw_peer_id(65);
    let a_x = fx
        .world
        .events(a)
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                connection, peer, ..
            } if *peer == x_id => Some(*connection),
            _ => None,
        })
        .expect("a sees X");
    let mut rng = ChaCha8Rng::seed_from_u64(0xbad);
    let mut seen = Vec::new();
    let mut answered: Vec<StreamId> = Vec::new();
    let failed = |w: &World| {
        w.events(a)
            .filter(
                |e| matches!(e, Event::ReservationFailed { connection, .. } if *connection == a_x),
            )
            .count()
    };
    for round in 0..12 {
        fx.world
            .command(a, |n, now| n.reserve(now, a_x))
            .expect("reserve starts");
        let mut hop = None;
        assert!(
            run_all_until(&mut fx.world, &mut [&mut x], SETTLE, |_, peers| {
                hop = find_inbound(peers[0], HOP_PROTOCOL, &mut seen, &answered);
                hop.is_some()
            }),
            "round {round}: a opened HOP"
        );
        let hop = hop.expect("HOP stream");
        let mut reply = negotiate(HOP_PROTOCOL);
        reply.extend_from_slice(&random_payload(&mut rng));
        x.write(hop, &reply);
        x.finish(hop);
        answered.push(hop);
        assert!(
            x.run_until(&mut fx.world, SETTLE, |w, _| failed(w) > round),
            "round {round}: the reservation fails: {:?}",
            fx.world.events(a).collect::<Vec<_>>()
        );
    }
    assert!(fx.world.node(a).reservation(a_x).is_none());
    assert!(x.lost().is_none(), "the attack stays on the stream level");
    relay_still_serves(&mut fx, &mut [&mut x]);
}
