//! Dialing a peer through its circuit addresses tries the next relay when one fails, and the
//! whole list again after a backoff (DESIGN §5.2).

use std::time::Duration;

use dep2p_core::node::{CIRCUIT_DIAL_ROUNDS, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;
use multiaddr::Multiaddr;

const SETTLE: Duration = Duration::from_secs(5);

/// Two relays; `a` holds a reservation on both. Returns (world, [r1, r2], a, b, a's circuit addrs).
fn setup(seed: u64) -> (World, [usize; 2], usize, usize, Vec<Multiaddr>) {
    let mut world = World::new(seed);
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(RelayLimits::default()));
    let r1 = world.add_node(relay.clone());
    let r2 = world.add_node(relay);
    let a = world.add_node(NodeConfig::default());
    let b = world.add_node(NodeConfig::default());
    let mut addrs = Vec::new();
    for r in [r1, r2] {
        let conn = world.connect(a, r);
        assert!(world.run_until(SETTLE, |w| w.is_connected(a, r)));
        world
            .command(a, |n, now| n.reserve(now, conn))
            .expect("reserve");
        let relay = world.peer_id(r);
        assert!(world.run_until(SETTLE, |w| w.events(a).any(
            |e| matches!(e, Event::ReservationAccepted { relay: p, .. } if *p == relay)
        )));
    }
    for event in world.events(a) {
        if let Event::ReservationAccepted { circuit_addrs, .. } = event {
            addrs.extend(circuit_addrs.iter().cloned());
        }
    }
    (world, [r1, r2], a, b, addrs)
}

#[test]
fn circuit_dial_moves_to_the_next_relay_when_the_first_is_dead() {
    let (mut world, [r1, r2], a, b, addrs) = setup(51);
    assert_eq!(addrs.len(), 2);
    world.isolate(r1);
    let target = world.peer_id(a);
    let dial = world
        .command(b, |n, now| n.dial_circuit(now, target, &addrs))
        .expect("usable addresses");
    assert!(
        world.run_until(Duration::from_secs(60), |w| w.events(b).any(
            |e| matches!(e, Event::CircuitDialSucceeded { dial: d, .. } if *d == dial)
        ))
    );
    let connection = world
        .events(b)
        .find_map(|e| match e {
            Event::CircuitDialSucceeded { connection, .. } => Some(*connection),
            _ => None,
        })
        .expect("succeeded");
    let via = world.peer_id(r2);
    assert!(world.events(b).any(|e| matches!(
        e,
        Event::ConnectionEstablished { connection: c, relay: Some(r), peer, .. }
            if *c == connection && *r == via && *peer == target
    )));
}

#[test]
fn circuit_dial_gives_up_after_every_round_with_backoff_between_rounds() {
    let (mut world, [r1, r2], a, b, addrs) = setup(52);
    // Relays alive, but the target is gone: once they notice (idle timeout), each answers
    // NO_RESERVATION at once.
    let target = world.peer_id(a);
    world.isolate(a);
    world.run_for(Duration::from_secs(20));
    for r in [r1, r2] {
        assert_eq!(world.node(r).relay_stats().expect("relay").reservations, 0);
    }
    let started = world.now();
    let dial = world
        .command(b, |n, now| n.dial_circuit(now, target, &addrs))
        .expect("usable addresses");
    assert!(
        world.run_until(Duration::from_secs(60), |w| w.events(b).any(
            |e| matches!(e, Event::CircuitDialFailed { dial: d, .. } if *d == dial)
        ))
    );
    let errors = world
        .events(b)
        .find_map(|e| match e {
            Event::CircuitDialFailed { errors, .. } => Some(errors.clone()),
            _ => None,
        })
        .expect("failed");
    assert_eq!(errors.len(), 2 * CIRCUIT_DIAL_ROUNDS as usize, "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("NoReservation")),
        "{errors:?}"
    );
    // Backoffs of 1 s then 2 s separate the three rounds.
    assert!(world.now() - started >= Duration::from_secs(3));
}
