//! Every stream starts with multistream-select: an application protocol negotiates and carries
//! data both ways intact, an unsupported one is refused by name, and a peer that sends an
//! oversized or malformed line, or nothing at all, loses only that stream (reset after the
//! negotiation timeout when silent) while the connection keeps working and nothing leaks.

mod common;

use std::time::Duration;

use dep2p_core::multistream::{MAX_LINE_LEN, NegotiationError};
use dep2p_core::node::{Event, NodeConfig, ReadOutcome, StreamHandle, StreamOpenFailure};
use dep2p_core::testing::{LinkConfig, World};
use dep2p_core::tls::ALPN;
use quinn_proto::StreamId;

use common::raw::{RawPeer, client_tls, good_identity};
use common::{SETTLE, connected_pair, inbound_stream, stream_ready};

const ECHO: &str = "/echo/1.0.0";
const HEADER: &str = "/multistream/1.0.0";
const PING: &str = "/ipfs/ping/1.0.0";
/// Reset code the node uses for a stream that timed out (`CODE_TIMED_OUT`).
const CODE_TIMED_OUT: u64 = 2;

fn echo_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.protocol(ECHO);
    config
}

/// A multistream-select line: uvarint length (newline included), the text, `\n`.
fn frame(line: &str) -> Vec<u8> {
    let len = line.len() + 1;
    assert!(len < 128, "test lines fit a one-byte uvarint");
    let mut out = vec![len as u8];
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out
}

/// Reads everything buffered on `stream` at node `at`: the bytes and whether it finished.
fn read_all(world: &mut World, at: usize, stream: StreamHandle) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    // Bounded: each read returns a chunk of the bounded receive window or ends the loop.
    for _ in 0..10_000 {
        match world.command(at, |node, now| node.read(now, stream, 4096)) {
            Ok(ReadOutcome::Data(bytes)) => data.extend_from_slice(&bytes),
            Ok(ReadOutcome::Blocked) => return (data, false),
            Ok(ReadOutcome::Finished) => return (data, true),
            Err(error) => panic!("read on {stream} failed: {error}"),
        }
    }
    panic!("stream {stream} never drained");
}

#[test]
fn app_protocol_negotiates_and_carries_data_both_ways() {
    let (mut world, a, b, conn_a, _) =
        connected_pair(20, LinkConfig::default(), echo_config(), echo_config());
    let stream = world
        .command(a, |node, now| node.open_stream(now, conn_a, ECHO))
        .expect("stream opens");
    assert!(
        world.run_until(SETTLE, |w| stream_ready(w, a, stream)
            && inbound_stream(w, b).is_some()),
        "StreamReady on the opener and InboundStream on the peer; a: {:?}, b: {:?}",
        world.events(a).collect::<Vec<_>>(),
        world.events(b).collect::<Vec<_>>()
    );
    let (inbound, protocol) = inbound_stream(&world, b).expect("inbound stream");
    assert_eq!(protocol, ECHO);
    assert_eq!(world.node(a).stream_protocol(stream), Some(ECHO));
    assert_eq!(world.node(b).stream_protocol(inbound), Some(ECHO));

    let request: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let written = world.command(a, |node, now| node.write(now, stream, &request));
    assert_eq!(written, Ok(request.len()), "the request fits the window");
    world
        .command(a, |node, now| node.finish(now, stream))
        .expect("finish");
    world.run_for(SETTLE);
    let (received, finished) = read_all(&mut world, b, inbound);
    assert_eq!(received, request, "the request arrives intact");
    assert!(finished, "b sees a's finish after the data");

    let reply = b"pong from b".to_vec();
    let written = world.command(b, |node, now| node.write(now, inbound, &reply));
    assert_eq!(written, Ok(reply.len()));
    world
        .command(b, |node, now| node.finish(now, inbound))
        .expect("finish");
    world.run_for(SETTLE);
    let (data, end) = read_all(&mut world, a, stream);
    assert_eq!(data, reply, "the reply arrives intact");
    assert!(end, "a sees b's finish");

    // Both directions are done: neither node keeps the stream.
    world.run_for(SETTLE);
    for at in [a, b] {
        assert_eq!(
            world.node(at).stats().streams,
            0,
            "node {at} forgot the finished stream"
        );
    }
}

#[test]
fn unsupported_protocol_fails_with_unsupported_naming_it() {
    let (mut world, a, _, conn_a, _) = connected_pair(
        21,
        LinkConfig::default(),
        NodeConfig::default(),
        NodeConfig::default(),
    );
    world.run_for(SETTLE);
    let baseline = world.node(a).stats().streams;
    let stream = world
        .command(a, |node, now| node.open_stream(now, conn_a, ECHO))
        .expect("stream opens");
    let failed = |w: &World| {
        w.events(a)
            .any(|e| matches!(e, Event::StreamOpenFailed { stream: s, .. } if *s == stream))
    };
    assert!(world.run_until(SETTLE, failed), "the open fails");
    let failure = world
        .events(a)
        .find_map(|e| match e {
            Event::StreamOpenFailed { stream: s, failure } if *s == stream => Some(failure.clone()),
            _ => None,
        })
        .expect("failure");
    assert_eq!(
        failure,
        StreamOpenFailure::Negotiation(NegotiationError::Unsupported {
            protocols: vec![ECHO.to_owned()]
        })
    );
    assert!(failure.to_string().contains(ECHO), "{failure}");
    assert!(!stream_ready(&world, a, stream));
    world.run_for(SETTLE);
    assert_eq!(world.node(a).stats().streams, baseline, "no entry leaks");
}

/// A node with the echo protocol and a raw client connected to it, after the node's identify
/// request to the (silent) raw client timed out, so no internal stream remains.
fn node_and_raw_client(seed: u64, timeout: Duration) -> (World, usize, RawPeer) {
    let mut world = World::new(seed);
    let mut config = echo_config();
    config.negotiation_timeout(timeout);
    let node = world.add_node(config);
    let tls = client_tls(
        &world,
        &good_identity(9),
        Some(world.peer_id(node)),
        &[ALPN],
    );
    let mut client = RawPeer::connect(&mut world, node, 5000, tls);
    assert!(
        client.run_until(&mut world, SETTLE, |_, c| c.is_connected()),
        "raw client connects"
    );
    client.run_for(&mut world, timeout + Duration::from_secs(1));
    assert!(
        world
            .events(node)
            .any(|e| matches!(e, Event::IdentifyFailed { .. })),
        "identify to a silent peer gives up after the negotiation timeout: {:?}",
        world.events(node).collect::<Vec<_>>()
    );
    assert_eq!(world.node(node).stats().streams, 0, "nothing left");
    (world, node, client)
}

/// The raw client pings the node on a fresh stream and checks the echo: the connection works.
fn raw_ping_works(world: &mut World, client: &mut RawPeer) {
    let payload = [0x5a; 32];
    let mut request = frame(HEADER);
    request.extend_from_slice(&frame(PING));
    request.extend_from_slice(&payload);
    let id = client.open_and_write(&request);
    let mut expected = frame(HEADER);
    expected.extend_from_slice(&frame(PING));
    expected.extend_from_slice(&payload);
    client.run_for(world, Duration::from_secs(1));
    let (received, _) = client.read(id);
    assert_eq!(
        received, expected,
        "the node echoes a ping on the same connection"
    );
    assert!(client.lost().is_none(), "the connection is still up");
}

/// Sends `bytes` from the first byte of a new stream and returns what the node did with it.
fn send_raw(
    world: &mut World,
    client: &mut RawPeer,
    bytes: &[u8],
) -> (StreamId, Vec<u8>, Option<Option<u64>>) {
    let id = client.open_and_write(bytes);
    client.run_for(world, Duration::from_secs(1));
    let (data, end) = client.read(id);
    (id, data, end)
}

#[test]
fn oversized_line_closes_only_that_stream() {
    let (mut world, node, mut client) = node_and_raw_client(22, Duration::from_secs(2));
    let mut bytes = frame(HEADER);
    // A length prefix announcing one byte more than the limit, then junk.
    let len = (MAX_LINE_LEN + 1) as u16;
    bytes.extend_from_slice(&[(len & 0x7f) as u8 | 0x80, (len >> 7) as u8]);
    bytes.extend_from_slice(&[b'x'; 64]);
    let (_, data, end) = send_raw(&mut world, &mut client, &bytes);
    assert!(
        end.is_some(),
        "the node ended the stream, got {end:?} after {data:?}"
    );
    assert_eq!(world.node(node).stats().streams, 0, "the entry is gone");
    assert!(
        !world.events(node).any(|e| matches!(
            e,
            Event::InboundStream { .. } | Event::ConnectionClosed { .. }
        )),
        "no stream reached the application and the connection stayed: {:?}",
        world.events(node).collect::<Vec<_>>()
    );
    raw_ping_works(&mut world, &mut client);
}

#[test]
fn malformed_lines_close_only_their_stream() {
    let (mut world, node, mut client) = node_and_raw_client(23, Duration::from_secs(2));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "non-minimal uvarint",
            vec![
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
        ),
        ("missing newline", {
            let mut b = frame(HEADER);
            b.extend_from_slice(b"\x05/abcd");
            b
        }),
        ("wrong header", frame("/multistream/2.0.0")),
        ("empty line", {
            let mut b = frame(HEADER);
            b.push(1);
            b.push(b'\n');
            b
        }),
        ("not UTF-8", {
            let mut b = frame(HEADER);
            b.extend_from_slice(&[4, 0xff, 0xfe, 0xfd, b'\n']);
            b
        }),
    ];
    for (what, bytes) in cases {
        let (_, data, end) = send_raw(&mut world, &mut client, &bytes);
        assert!(
            end.is_some(),
            "{what}: the node ended the stream, got {end:?} after {data:?}"
        );
        assert_eq!(
            world.node(node).stats().streams,
            0,
            "{what}: the entry is gone"
        );
    }
    assert!(
        !world.events(node).any(|e| matches!(
            e,
            Event::InboundStream { .. } | Event::ConnectionClosed { .. }
        )),
        "{:?}",
        world.events(node).collect::<Vec<_>>()
    );
    raw_ping_works(&mut world, &mut client);
}

#[test]
fn stream_that_never_completes_negotiation_is_reset_after_the_timeout() {
    let timeout = Duration::from_secs(3);
    let (mut world, node, mut client) = node_and_raw_client(24, timeout);
    let baseline = world.node(node).stats().streams;
    // A length prefix and nothing more: the node waits for the rest of the header.
    let id = client.open_and_write(&[19]);
    client.run_for(&mut world, timeout / 2);
    assert_eq!(
        world.node(node).stats().streams,
        baseline + 1,
        "the node tracks the negotiating stream"
    );
    assert_eq!(client.read(id).1, None, "not reset before the timeout");
    client.run_for(&mut world, timeout);
    let (_, end) = client.read(id);
    assert_eq!(
        end,
        Some(Some(CODE_TIMED_OUT)),
        "reset with the timed-out code"
    );
    assert_eq!(world.node(node).stats().streams, baseline, "no entry leaks");
    raw_ping_works(&mut world, &mut client);
}
