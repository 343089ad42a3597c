//! Inbound connections start with a small stream credit (`initial_inbound_streams`, DESIGN §10
//! memory) that an idle reservation never outgrows; a peer that uses its streams, such as the
//! source of circuits, gets `max_streams_per_connection` one round trip later and can still hold
//! `max_circuits_per_peer` (16, DESIGN §5.1) circuits plus its control streams.

mod common;

use std::time::Duration;

use dep2p_core::node::{ConnectionId, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

use common::{SETTLE, established};

fn relay_world(seed: u64) -> (World, usize) {
    let mut world = World::new(seed);
    let mut config = NodeConfig::default();
    config.relay_server(Some(RelayLimits::default()));
    let relay = world.add_node(config);
    (world, relay)
}

/// A node connected to the relay: the node, its connection, the relay's connection to it.
fn client(world: &mut World, relay: usize) -> (usize, ConnectionId, ConnectionId) {
    let node = world.add_node(NodeConfig::default());
    world.connect(node, relay);
    assert!(
        world.run_until(SETTLE, |w| w.is_connected(node, relay)
            && w.is_connected(relay, node)),
        "node {node} connects to the relay"
    );
    (
        node,
        established(world, node, relay),
        established(world, relay, node),
    )
}

fn reserve(world: &mut World, node: usize, conn: ConnectionId) {
    world
        .command(node, |n, now| n.reserve(now, conn))
        .expect("reserve starts");
    let accepted = |w: &World| {
        w.events(node).any(
            |e| matches!(e, Event::ReservationAccepted { connection, .. } if *connection == conn),
        )
    };
    assert!(world.run_until(SETTLE, accepted), "reservation accepted");
}

/// Dials `target` through the relay from `node` and waits until the relayed connection is up.
fn dial_via(world: &mut World, node: usize, relay_conn: ConnectionId, target: usize) {
    let target = world.peer_id(target);
    let relayed = world
        .command(node, |n, now| n.dial_through_relay(now, relay_conn, target))
        .expect("dial starts");
    let established = |w: &World| {
        w.events(node).any(|e| {
            matches!(e, Event::ConnectionEstablished { connection, .. } if *connection == relayed)
        })
    };
    assert!(
        world.run_until(SETTLE, established),
        "circuit {relayed} from node {node} established"
    );
}

#[test]
fn idle_reservation_keeps_the_initial_inbound_stream_credit() {
    let (mut world, relay) = relay_world(401);
    let (node, conn, at_relay) = client(&mut world, relay);
    reserve(&mut world, node, conn);
    world.run_for(Duration::from_secs(30));
    // Identify both ways and the RESERVE never hold half of the initial credit open.
    assert_eq!(world.node(relay).peer_stream_credit(at_relay), Some(8));
    // Our own outbound connection allows the relay the full credit (STOP streams come there).
    assert_eq!(world.node(node).peer_stream_credit(conn), Some(32));
    // Nothing stays open on an idle reservation.
    assert_eq!(world.node(relay).stats().streams, 0);
    assert_eq!(world.node(node).stats().streams, 0);
}

#[test]
fn stream_credit_is_raised_when_a_source_opens_circuits_and_it_can_hold_16() {
    let (mut world, relay) = relay_world(402);
    let (target, target_conn, _) = client(&mut world, relay);
    reserve(&mut world, target, target_conn);
    let (source, source_conn, at_relay) = client(&mut world, relay);
    assert_eq!(world.node(relay).peer_stream_credit(at_relay), Some(8));
    // max_circuits_per_peer (16) circuits, each holding one HOP stream open on the source's
    // connection to the relay.
    for _ in 0..16 {
        dial_via(&mut world, source, source_conn, target);
    }
    assert_eq!(world.node(relay).peer_stream_credit(at_relay), Some(32));
    let stats = world.node(relay).relay_stats().expect("relay");
    assert_eq!(stats.circuits, 16, "{stats:?}");
    // Control streams still fit next to the circuits.
    let rtt = world
        .command(source, |n, now| n.ping(now, source_conn))
        .map(|_| ());
    assert!(rtt.is_ok(), "a ping stream opens next to 16 circuits");
}

#[test]
fn a_node_that_is_no_relay_gives_the_full_stream_credit_at_once() {
    let mut world = World::new(77);
    let mut app = NodeConfig::default();
    app.protocol("/app/1.0.0");
    let server = world.add_node(app.clone());
    let node = world.add_node(app);
    world.connect(node, server);
    assert!(world.run_until(SETTLE, |w| w.is_connected(node, server)
        && w.is_connected(server, node)));
    let conn = established(&world, node, server);
    let at_server = established(&world, server, node);
    assert_eq!(
        world.node(server).peer_stream_credit(at_server),
        Some(32),
        "max_streams_per_connection from the start"
    );
    // More streams at once than a relay's first credit of 8: all open.
    for i in 0..12 {
        world
            .command(node, |n, now| n.open_stream(now, conn, "/app/1.0.0"))
            .unwrap_or_else(|e| panic!("stream {i} opens: {e}"));
    }
    let ready = |w: &World| {
        w.events(node)
            .filter(|e| matches!(e, Event::StreamReady { .. }))
            .count()
    };
    assert!(
        world.run_until(SETTLE, |w| ready(w) == 12),
        "all 12 streams negotiated"
    );
}

#[test]
fn opens_beyond_a_relays_first_credit_are_refused_and_stream_credit_events_say_when_to_retry() {
    let mut world = World::new(78);
    let mut config = NodeConfig::default();
    config
        .relay_server(Some(RelayLimits::default()))
        .protocol("/app/1.0.0");
    let relay = world.add_node(config);
    let mut app = NodeConfig::default();
    app.protocol("/app/1.0.0");
    let node = world.add_node(app);
    world.connect(node, relay);
    assert!(world.run_until(SETTLE, |w| w.is_connected(node, relay)
        && w.is_connected(relay, node)));
    let conn = established(&world, node, relay);
    // Let identify finish, so only our opens hold streams.
    world.run_for(Duration::from_secs(1));
    let mut opened = 0;
    let mut refused = 0;
    for _ in 0..12 {
        match world.command(node, |n, now| n.open_stream(now, conn, "/app/1.0.0")) {
            Ok(_) => opened += 1,
            Err(dep2p_core::node::StreamError::TooManyStreams(c)) => {
                assert_eq!(c, conn);
                refused += 1;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    // The relay's first credit is 8, one of which identify may still hold.
    assert!(
        (7..=8).contains(&opened) && opened + refused == 12,
        "{opened} opened, {refused} refused"
    );
    let available = |w: &World| {
        w.events(node)
            .any(|e| matches!(e, Event::StreamsAvailable { connection } if *connection == conn))
    };
    assert!(
        world.run_until(SETTLE, available),
        "the node reports the relay's raised credit"
    );
    for i in 0..refused {
        world
            .command(node, |n, now| n.open_stream(now, conn, "/app/1.0.0"))
            .unwrap_or_else(|e| panic!("retry {i} opens: {e}"));
    }
}
