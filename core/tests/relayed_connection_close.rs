//! Ending relayed connections and what they ride on: a relayed connection closed by one end is
//! reported closed at the other and its circuit freed at the relay; closing the connection that
//! holds a reservation loses it on both sides; and when a relay connection dies, the relayed
//! connections over it end on both peers, even with data in flight. Nothing is left behind in
//! any table, and a reservation that survives can be dialed again.

mod relay_world;

use dep2p_core::node::{ConnectionFailure, ConnectionId, Event, NodeConfig, NodeStats};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

use relay_world::{SETTLE, Trio, closed, reserved_trio};

const ECHO: &str = "/echo/1.0.0";

fn app() -> NodeConfig {
    let mut app = NodeConfig::default();
    app.protocol(ECHO);
    app
}

fn stats(world: &mut World, nodes: [usize; 3]) -> [NodeStats; 3] {
    nodes.map(|n| world.node(n).stats())
}

/// The connection node `at` holds to node `to` (direct).
fn direct(world: &World, at: usize, to: usize) -> ConnectionId {
    let peer = world.peer_id(to);
    world
        .events(at)
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                connection,
                peer: p,
                relay: None,
                ..
            } if *p == peer => Some(*connection),
            _ => None,
        })
        .expect("a direct connection")
}

/// A reserved trio after everything settled (identify done), with the relayed connection up,
/// one application stream open on it, and the stats from before the dial.
fn relayed_with_stream(seed: u64) -> (Trio, ConnectionId, ConnectionId, [NodeStats; 3]) {
    let mut trio = reserved_trio(seed, RelayLimits::default(), app());
    trio.world.run_for(SETTLE);
    let nodes = [trio.a, trio.b, trio.r];
    let before = stats(&mut trio.world, nodes);
    let (at_b, at_a) = trio.dial();
    let (b, a) = (trio.b, trio.a);
    let _ = relay_world::open_stream_pair(&mut trio.world, b, a, at_b, ECHO);
    let relay = trio.world.node(trio.r).relay_stats().expect("relay");
    assert_eq!((relay.circuits, relay.bridges), (1, 1));
    (trio, at_b, at_a, before)
}

#[test]
fn closing_a_relayed_connection_closes_it_at_the_peer_and_frees_the_circuit() {
    let (mut trio, at_b, at_a, before) = relayed_with_stream(31);
    let (a, b, r) = (trio.a, trio.b, trio.r);
    trio.world
        .command(b, |n, now| n.close(now, at_b, 0, b"done"))
        .expect("close");
    assert!(closed(&trio.world, b, at_b), "reported at once locally");
    assert!(
        trio.world.run_until(SETTLE, |w| closed(w, a, at_a)),
        "A learns that B closed the relayed connection"
    );
    assert!(
        trio.world.run_until(SETTLE, |w| w
            .sim_node(r)
            .node
            .relay_stats()
            .is_some_and(|s| (s.circuits, s.bridges) == (0, 0))),
        "R frees the circuit: {:?}",
        trio.world.node(r).relay_stats()
    );
    trio.world.run_for(SETTLE);
    assert_eq!(
        stats(&mut trio.world, [a, b, r]),
        before,
        "A, B and R are back to their state before the dial"
    );
    let relay = trio.world.node(r).relay_stats().expect("relay");
    assert_eq!(relay.reservations, 1, "A's reservation is untouched");
    assert_eq!(relay.bridge_buffered, 0);
    // The direct connections stay up.
    assert!(!closed(&trio.world, a, trio.a_r));
    assert!(!closed(&trio.world, b, trio.b_r));
}

#[test]
fn closing_the_connection_holding_a_reservation_loses_it_on_both_sides() {
    let mut trio = reserved_trio(32, RelayLimits::default(), app());
    let (a, r, a_r) = (trio.a, trio.r, trio.a_r);
    assert_eq!(
        trio.world.node(r).relay_stats().map(|s| s.reservations),
        Some(1)
    );
    trio.world
        .command(a, |n, now| n.close(now, a_r, 0, b"bye"))
        .expect("close");
    assert!(
        trio.world.events(a).any(|e| matches!(e,
            Event::ReservationLost { connection, .. } if *connection == a_r)),
        "A reports the reservation lost with its connection"
    );
    assert!(trio.world.node(a).reservation(a_r).is_none());
    assert!(
        trio.world.run_until(SETTLE, |w| w
            .sim_node(r)
            .node
            .relay_stats()
            .is_some_and(|s| s.reservations == 0)),
        "R drops the reservation when the connection holding it closes"
    );
    // And nobody can reach A through R any more.
    let target = trio.world.peer_id(a);
    let b_r = trio.b_r;
    let at_b = trio
        .world
        .command(trio.b, |n, now| n.dial_through_relay(now, b_r, target))
        .expect("dial starts");
    assert!(
        trio.world.run_until(SETTLE, |w| closed(w, trio.b, at_b)),
        "a dial to A through R now fails"
    );
}

#[test]
fn when_a_relay_connection_dies_the_relayed_connections_over_it_end_on_both_peers() {
    // R closes its side toward the dialer B, then (second run) toward the target A.
    for (seed, victim_is_b) in [(33, true), (34, false)] {
        let (mut trio, at_b, at_a, before) = relayed_with_stream(seed);
        let (a, b, r) = (trio.a, trio.b, trio.r);
        let victim = if victim_is_b { b } else { a };
        let r_side = direct(&trio.world, r, victim);
        trio.world
            .command(r, |n, now| n.close(now, r_side, 0, b"going away"))
            .expect("close");
        assert!(
            trio.world
                .run_until(SETTLE, |w| closed(w, a, at_a) && closed(w, b, at_b)),
            "both ends of the relayed connection report it closed (victim {victim})"
        );
        for (at, connection) in [(a, at_a), (b, at_b)] {
            let failure = trio
                .world
                .events(at)
                .find_map(|e| match e {
                    Event::ConnectionClosed {
                        connection: c,
                        failure,
                        ..
                    } if *c == connection => Some(failure.clone()),
                    _ => None,
                })
                .expect("ConnectionClosed");
            assert!(
                matches!(failure, ConnectionFailure::Relayed(_)),
                "node {at}: ended as a relayed connection: {failure:?}"
            );
        }
        // Let the closed QUIC connection drain everywhere.
        trio.world.run_for(SETTLE * 4);
        let relay = trio.world.node(r).relay_stats().expect("relay");
        assert_eq!(
            (relay.circuits, relay.bridges),
            (0, 0),
            "R freed the circuit"
        );
        assert_eq!(
            relay.reservations,
            usize::from(victim_is_b),
            "A's reservation survives only if its own connection did"
        );
        let after = stats(&mut trio.world, [a, b, r]);
        let survivor = if victim_is_b { a } else { b };
        let survivor_index = if victim_is_b { 0 } else { 1 };
        assert_eq!(
            after[survivor_index], before[survivor_index],
            "node {survivor} keeps only its direct connection to R, as before the dial"
        );
        let victim_index = 1 - survivor_index;
        assert_eq!(
            (after[victim_index].connections, after[victim_index].streams),
            (0, 0),
            "node {victim} holds nothing once its only connection is gone"
        );
        assert_eq!(
            (after[2].connections, after[2].streams),
            (before[2].connections - 1, before[2].streams),
            "R holds only its connection to the surviving peer, with the streams it had"
        );
    }
}

#[test]
fn the_target_closing_a_relayed_connection_is_seen_by_the_dialer_who_can_dial_again() {
    let (mut trio, at_b, at_a, before) = relayed_with_stream(35);
    let (a, b, r) = (trio.a, trio.b, trio.r);
    trio.world
        .command(a, |n, now| n.close(now, at_a, 0, b"done"))
        .expect("close");
    assert!(
        trio.world.run_until(SETTLE, |w| closed(w, b, at_b)),
        "B learns that A closed the relayed connection"
    );
    trio.world.run_for(SETTLE);
    assert_eq!(stats(&mut trio.world, [a, b, r]), before);
    let relay = trio.world.node(r).relay_stats().expect("relay");
    assert_eq!((relay.circuits, relay.bridges), (0, 0));

    // The reservation still stands: B dials again and the new connection works.
    let (again, _) = trio.dial();
    assert_ne!(again, at_b, "a new connection id");
    trio.world
        .command(b, |n, now| n.ping(now, again))
        .expect("ping starts");
    assert!(trio.world.run_until(SETTLE, |w| w.events(b).any(
        |e| matches!(e, Event::PingSucceeded { connection, .. } if *connection == again)
    )));
}

#[test]
fn a_relay_connection_dying_with_data_in_flight_leaves_nothing_behind() {
    let mut trio = reserved_trio(36, RelayLimits::default(), app());
    trio.world.run_for(SETTLE);
    let (a, b, r) = (trio.a, trio.b, trio.r);
    let b_before = trio.world.node(b).stats();
    let (at_b, at_a) = trio.dial();
    let (send, _recv) = relay_world::open_stream_pair(&mut trio.world, b, a, at_b, ECHO);
    // B writes while A does not read: bytes sit in A's buffers, in R's bridge and in flight.
    let chunk = vec![0x42; 32 * 1024];
    for _ in 0..16 {
        trio.world
            .command(b, |n, now| n.write(now, send, &chunk))
            .expect("write");
        trio.world.run_for(std::time::Duration::from_millis(5));
    }
    let r_a = direct(&trio.world, r, a);
    trio.world
        .command(r, |n, now| n.close(now, r_a, 0, b"going away"))
        .expect("close");
    assert!(
        trio.world
            .run_until(SETTLE, |w| closed(w, a, at_a) && closed(w, b, at_b)),
        "both ends report the relayed connection closed"
    );
    assert_eq!(
        trio.world.command(b, |n, now| n.write(now, send, b"late")),
        Err(dep2p_core::node::StreamError::UnknownConnection(at_b)),
        "the dead connection's streams are gone"
    );
    trio.world.run_for(SETTLE * 4);
    let relay = trio.world.node(r).relay_stats().expect("relay");
    assert_eq!(
        (
            relay.reservations,
            relay.circuits,
            relay.bridges,
            relay.bridge_buffered
        ),
        (0, 0, 0, 0),
        "R holds no reservation, circuit or buffered byte for the gone connection"
    );
    assert_eq!(
        trio.world.node(b).stats(),
        b_before,
        "B is back to its direct connection"
    );
    assert_eq!(
        (
            trio.world.node(a).stats().connections,
            trio.world.node(a).stats().streams
        ),
        (0, 0)
    );
    assert_eq!(
        (
            trio.world.node(r).stats().connections,
            trio.world.node(r).stats().streams
        ),
        (1, 0),
        "R keeps only B's connection, with no stream"
    );
}
