//! An idle reservation costs the relay as few packets as possible: one keep-alive and one
//! acknowledgement per keep-alive interval (both ends use the same interval, and receiving the
//! peer's keep-alive postpones our own, so only one side sends them). A client that goes silent
//! is detected by the relay's idle timeout.

use std::time::Duration;

use dep2p_core::node::{ConnectionFailure, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

const SETTLE: Duration = Duration::from_secs(5);
/// The default keep-alive interval and idle timeout (DESIGN §5.2).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A world with a relay (node 0) and a client (node 1) holding a reservation on it.
fn reserved_world(seed: u64) -> World {
    let mut world = World::new(seed);
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(RelayLimits::default()));
    let r = world.add_node(relay);
    let client = world.add_node(NodeConfig::default());
    let conn = world.connect(client, r);
    assert!(world.run_until(SETTLE, |w| w.is_connected(client, r)));
    world
        .command(client, |n, now| n.reserve(now, conn))
        .expect("reserve starts");
    assert!(world.run_until(SETTLE, |w| {
        w.events(client)
            .any(|e| matches!(e, Event::ReservationAccepted { .. }))
    }));
    // Let identify, the reservation exchange and their acknowledgements finish.
    world.run_for(Duration::from_secs(2));
    world
}

#[test]
fn idle_reservation_costs_one_keep_alive_and_one_ack_per_interval() {
    let mut world = reserved_world(41);
    let before = world.net_stats().delivered;
    let idle = Duration::from_secs(120);
    world.run_for(idle);
    let datagrams = world.net_stats().delivered - before;
    let intervals = idle.as_secs() / KEEP_ALIVE.as_secs();
    // One keep-alive and its acknowledgement per interval; were both ends to send their own
    // keep-alives (each acknowledged), it would be twice as many.
    assert!(
        datagrams <= 2 * intervals + 2,
        "{datagrams} datagrams in {idle:?} of idleness"
    );
    assert!(
        datagrams >= intervals,
        "the client keeps the connection alive"
    );
    assert!(
        world.is_connected(1, 0),
        "the reservation's connection stays up"
    );
    assert_eq!(
        world.node(0).relay_stats().expect("a relay").reservations,
        1
    );
}

#[test]
fn relay_drops_a_silent_client_within_its_idle_timeout() {
    let mut world = reserved_world(42);
    let silent_from = world.elapsed();
    world.isolate(1);
    let closed = world.run_until(IDLE_TIMEOUT + Duration::from_secs(2), |w| {
        w.events(0).any(|e| {
            matches!(
                e,
                Event::ConnectionClosed {
                    failure: ConnectionFailure::TimedOut,
                    ..
                }
            )
        })
    });
    assert!(
        closed,
        "relay still holds the connection {:?} after the client went silent",
        world.elapsed() - silent_from
    );
    assert_eq!(
        world.node(0).relay_stats().expect("a relay").reservations,
        0
    );
}
