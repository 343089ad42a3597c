//! Helpers shared by the node integration tests: connected worlds and event lookups.

// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use dep2p_core::node::{ConnectionId, Direction, Event, NodeConfig, StreamHandle};
use dep2p_core::testing::{LinkConfig, World};

/// Longest any handshake or exchange in these tests may take in virtual time.
pub const SETTLE: Duration = Duration::from_secs(5);

/// A world of two nodes with the given configs and link, `a` dialed `b`, both sides
/// established. Returns `(world, a, b, a's connection, b's connection)`.
pub fn connected_pair(
    seed: u64,
    link: LinkConfig,
    config_a: NodeConfig,
    config_b: NodeConfig,
) -> (World, usize, usize, ConnectionId, ConnectionId) {
    let mut world = World::new(seed);
    world.set_link(link);
    let a = world.add_node(config_a);
    let b = world.add_node(config_b);
    world.connect(a, b);
    assert!(
        world.run_until(SETTLE, |w| w.is_connected(a, b) && w.is_connected(b, a)),
        "nodes {a} and {b} did not connect within {SETTLE:?}"
    );
    let conn_a = established(&world, a, b);
    let conn_b = established(&world, b, a);
    (world, a, b, conn_a, conn_b)
}

/// The connection node `at` reports as established to node `to`.
pub fn established(world: &World, at: usize, to: usize) -> ConnectionId {
    let peer = world.peer_id(to);
    world
        .events(at)
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                connection,
                peer: p,
                ..
            } if *p == peer => Some(*connection),
            _ => None,
        })
        .unwrap_or_else(|| panic!("node {at} has no established connection to node {to}"))
}

/// The direction node `at` reports for its connection to `to`.
pub fn direction(world: &World, at: usize, to: usize) -> Direction {
    let peer = world.peer_id(to);
    world
        .events(at)
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                peer: p, direction, ..
            } if *p == peer => Some(*direction),
            _ => None,
        })
        .unwrap_or_else(|| panic!("node {at} has no established connection to node {to}"))
}

/// The first inbound stream node `at` was offered, with its protocol.
pub fn inbound_stream(world: &World, at: usize) -> Option<(StreamHandle, String)> {
    world.events(at).find_map(|e| match e {
        Event::InboundStream { stream, protocol } => Some((*stream, protocol.clone())),
        _ => None,
    })
}

/// Whether node `at` reported `stream` ready.
pub fn stream_ready(world: &World, at: usize, stream: StreamHandle) -> bool {
    world
        .events(at)
        .any(|e| matches!(e, Event::StreamReady { stream: s, .. } if *s == stream))
}

/// Opens a `protocol` stream from `a` on `connection` (to `b`) and waits until it is ready on
/// `a` and offered to `b`. Returns `(a's stream, b's stream)`.
pub fn negotiated_stream(
    world: &mut World,
    a: usize,
    b: usize,
    connection: ConnectionId,
    protocol: &str,
) -> (StreamHandle, StreamHandle) {
    let stream = world
        .command(a, |node, now| node.open_stream(now, connection, protocol))
        .expect("stream opens");
    assert!(
        world.run_until(SETTLE, |w| stream_ready(w, a, stream)
            && inbound_stream(w, b).is_some()),
        "the {protocol} stream did not negotiate within {SETTLE:?}"
    );
    let (inbound, _) = inbound_stream(world, b).expect("inbound stream");
    (stream, inbound)
}

/// Pings from `at` over `connection` and waits for the result; returns the RTT.
pub fn ping_ok(world: &mut World, at: usize, connection: ConnectionId) -> Duration {
    let before = world.events(at).count();
    world
        .command(at, |node, now| node.ping(now, connection))
        .expect("ping starts");
    let done = |w: &World| {
        w.events(at).skip(before).any(|e| {
            matches!(
                e,
                Event::PingSucceeded { connection: c, .. } | Event::PingFailed { connection: c, .. }
                    if *c == connection
            )
        })
    };
    assert!(
        world.run_until(SETTLE, done),
        "ping on {connection} did not end"
    );
    world
        .events(at)
        .skip(before)
        .find_map(|e| match e {
            Event::PingSucceeded { connection: c, rtt } if *c == connection => Some(Ok(*rtt)),
            Event::PingFailed {
                connection: c,
                reason,
            } if *c == connection => Some(Err(reason.clone())),
            _ => None,
        })
        .expect("ping result")
        .unwrap_or_else(|reason| panic!("ping on {connection} failed: {reason}"))
}
pub mod raw;
