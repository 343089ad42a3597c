//! Graceful drain (DESIGN §5.2): a draining relay closes every connection with the drain code,
//! so its clients learn at once (no idle timeout), and it accepts no new connections.

use std::time::Duration;

use dep2p_core::node::{CLOSE_DRAINING, ConnectionFailure, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::{LinkConfig, World};

#[test]
fn draining_relay_closes_clients_with_the_drain_code_within_one_link_delay() {
    let mut world = World::new(21);
    world.set_link(LinkConfig {
        latency: Duration::from_millis(20),
        ..LinkConfig::default()
    });
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(RelayLimits::default()));
    let r = world.add_node(relay);
    let a = world.add_node(NodeConfig::default());
    let a_r = world.connect(a, r);
    assert!(world.run_until(Duration::from_secs(5), |w| w.is_connected(a, r)));
    world
        .command(a, |n, now| n.reserve(now, a_r))
        .expect("reserve starts");
    assert!(world.run_until(Duration::from_secs(5), |w| {
        w.events(a)
            .any(|e| matches!(e, Event::ReservationAccepted { .. }))
    }));

    let drained_at = world.now();
    world.command(r, |n, now| n.drain(now));
    let drained = |w: &World| {
        w.events(a).any(|e| {
            matches!(
                e,
                Event::ConnectionClosed {
                    failure: ConnectionFailure::ClosedByPeer { code, .. },
                    ..
                } if *code == u64::from(CLOSE_DRAINING)
            )
        })
    };
    assert!(world.run_until(Duration::from_secs(1), drained));
    assert!(
        world.now() - drained_at <= Duration::from_millis(25),
        "the client learns within one link delay, not after the idle timeout"
    );
    assert!(
        world
            .events(a)
            .any(|e| matches!(e, Event::ReservationLost { .. }))
    );

    // A newcomer cannot connect to the draining relay.
    let late = world.add_node(NodeConfig::default());
    world.connect(late, r);
    world.run_for(Duration::from_secs(20));
    assert!(!world.is_connected(late, r));
    assert!(
        world
            .events(late)
            .any(|e| matches!(e, Event::ConnectionClosed { .. }))
    );
}
