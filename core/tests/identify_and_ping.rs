//! Identify runs on every connection and tells each side the other's protocols (the
//! application's and ping) and the address it is seen from; ping measures the round trip
//! (twice the one-way link latency) and refuses a second ping while one is in flight.

mod common;

use std::time::Duration;

use dep2p_core::addr::quic_multiaddr;
use dep2p_core::node::{Event, NodeConfig, PingError};
use dep2p_core::protocols::identify::IdentifyInfo;
use dep2p_core::protocols::{IDENTIFY, PING};
use dep2p_core::testing::{LinkConfig, World};

use common::{SETTLE, connected_pair, ping_ok};

const ECHO: &str = "/echo/1.0.0";

fn identified(world: &World, at: usize) -> Option<IdentifyInfo> {
    world.events(at).find_map(|e| match e {
        Event::Identified { info, .. } => Some((**info).clone()),
        _ => None,
    })
}

#[test]
fn identify_exchanges_protocols_and_observed_addresses() {
    let mut config_a = NodeConfig::default();
    config_a.protocol(ECHO).agent_version("node-a/1");
    let (mut world, a, b, _, _) =
        connected_pair(30, LinkConfig::default(), config_a, NodeConfig::default());
    assert!(
        world.run_until(SETTLE, |w| identified(w, a).is_some()
            && identified(w, b).is_some()),
        "both sides identify; a: {:?}, b: {:?}",
        world.events(a).collect::<Vec<_>>(),
        world.events(b).collect::<Vec<_>>()
    );
    let seen_by_b = identified(&world, b).expect("b identified a");
    let seen_by_a = identified(&world, a).expect("a identified b");

    assert_eq!(seen_by_b.public_key.to_peer_id(), world.peer_id(a));
    assert_eq!(seen_by_a.public_key.to_peer_id(), world.peer_id(b));
    assert_eq!(seen_by_b.agent_version, "node-a/1");
    for protocol in [IDENTIFY, PING, ECHO] {
        assert!(
            seen_by_b.protocols.iter().any(|p| p == protocol),
            "a announces {protocol}: {:?}",
            seen_by_b.protocols
        );
    }
    assert!(seen_by_a.protocols.iter().any(|p| p == PING));
    assert!(
        !seen_by_a.protocols.iter().any(|p| p == ECHO),
        "b does not announce a protocol it does not serve"
    );
    // Each side tells the other where it sees it from.
    assert_eq!(
        seen_by_b.observed_addr,
        Some(quic_multiaddr(world.addr(b))),
        "a observed b at b's address"
    );
    assert_eq!(
        seen_by_a.observed_addr,
        Some(quic_multiaddr(world.addr(a))),
        "b observed a at a's address"
    );
    assert_eq!(
        seen_by_a.observed_addr.as_ref().map(ToString::to_string),
        Some(format!(
            "/ip4/{}/udp/{}/quic-v1",
            world.addr(a).ip(),
            world.addr(a).port()
        ))
    );
    for at in [a, b] {
        assert!(
            !world
                .events(at)
                .any(|e| matches!(e, Event::IdentifyFailed { .. })),
            "node {at}: no identify failure"
        );
    }
}

#[test]
fn ping_measures_twice_the_link_latency() {
    let latency = Duration::from_millis(25);
    let link = LinkConfig {
        latency,
        ..LinkConfig::default()
    };
    let (mut world, a, b, conn_a, conn_b) =
        connected_pair(31, link, NodeConfig::default(), NodeConfig::default());
    world.run_for(SETTLE);
    for (at, conn) in [(a, conn_a), (b, conn_b), (a, conn_a)] {
        let rtt = ping_ok(&mut world, at, conn);
        let error = rtt.abs_diff(2 * latency);
        assert!(
            error <= Duration::from_millis(1),
            "node {at}: ping RTT {rtt:?} is 2 x {latency:?} within 1 ms"
        );
    }
}

#[test]
fn second_ping_while_one_is_in_flight_is_refused() {
    let (mut world, a, _, conn_a, _) = connected_pair(
        32,
        LinkConfig::default(),
        NodeConfig::default(),
        NodeConfig::default(),
    );
    world
        .command(a, |node, now| node.ping(now, conn_a))
        .expect("first ping starts");
    let second = world.command(a, |node, now| node.ping(now, conn_a));
    assert_eq!(second, Err(PingError::InFlight(conn_a)));
    let done = |w: &World| {
        w.events(a)
            .any(|e| matches!(e, Event::PingSucceeded { .. } | Event::PingFailed { .. }))
    };
    assert!(world.run_until(SETTLE, done), "the first ping completes");
    let successes = world
        .events(a)
        .filter(|e| matches!(e, Event::PingSucceeded { .. }))
        .count();
    assert_eq!(successes, 1, "exactly one ping ran");
    // Once it is done, pinging again works.
    let _ = ping_ok(&mut world, a, conn_a);
}
