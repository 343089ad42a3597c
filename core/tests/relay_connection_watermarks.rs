//! Connection watermarks (DESIGN §5.1): above the high watermark the relay closes idle
//! connections, oldest first, down to the low watermark; connections holding a reservation are
//! protected.

use std::time::Duration;

use dep2p_core::node::{CLOSE_TRIMMED, ConnectionFailure, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

const SETTLE: Duration = Duration::from_secs(5);

fn trimmed(world: &World, node: usize) -> bool {
    world.events(node).any(|e| {
        matches!(
            e,
            Event::ConnectionClosed {
                failure: ConnectionFailure::ClosedByPeer { code, .. },
                ..
            } if *code == u64::from(CLOSE_TRIMMED)
        )
    })
}

#[test]
fn relay_above_high_watermark_trims_idle_connections_but_keeps_reservation_holders() {
    let mut world = World::new(11);
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(
        RelayLimits::default()
            .connection_low_watermark(2)
            .connection_high_watermark(3),
    ));
    let r = world.add_node(relay);

    // The oldest client holds a reservation: it must survive every trim.
    let holder = world.add_node(NodeConfig::default());
    let holder_conn = world.connect(holder, r);
    assert!(world.run_until(SETTLE, |w| w.is_connected(holder, r)));
    world
        .command(holder, |n, now| n.reserve(now, holder_conn))
        .expect("reserve starts");
    assert!(world.run_until(SETTLE, |w| {
        w.events(holder)
            .any(|e| matches!(e, Event::ReservationAccepted { .. }))
    }));

    let idle: Vec<usize> = (0..3)
        .map(|_| world.add_node(NodeConfig::default()))
        .collect();
    for &client in &idle {
        world.connect(client, r);
        assert!(world.run_until(SETTLE, |w| w.is_connected(client, r)));
        world.run_for(Duration::from_millis(200));
    }
    world.run_for(Duration::from_secs(1));

    // 4 connections > high (3): trimmed to low (2) — the two oldest idle ones go.
    assert!(
        trimmed(&world, idle[0]),
        "oldest idle connection was trimmed"
    );
    assert!(
        trimmed(&world, idle[1]),
        "second oldest idle connection was trimmed"
    );
    assert!(!trimmed(&world, idle[2]), "newest connection stays");
    assert!(!trimmed(&world, holder), "reservation holder is protected");
    assert_eq!(world.node(r).stats().connections, 2);
    let stats = world.node(r).relay_stats().expect("relay");
    assert_eq!(stats.refusals.get("connection_trimmed"), Some(&2));
    assert_eq!(stats.reservations, 1);
}
