//! A draining AutoRelay client (DESIGN §5.2 graceful drain on the client side): it closes its
//! relay connections and stays closed, instead of AutoRelay replacing the relays it just left.

use std::time::Duration;

use dep2p_core::autorelay::{AutoRelayConfig, CandidateSource};
use dep2p_core::node::{DialError, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

#[test]
fn draining_client_closes_its_relay_connections_and_does_not_replace_them() {
    let mut world = World::new(61);
    let relays: Vec<usize> = (0..3)
        .map(|_| {
            let mut config = NodeConfig::default();
            config.relay_server(Some(RelayLimits::default()));
            world.add_node(config)
        })
        .collect();
    let candidates: Vec<_> = relays
        .iter()
        .map(|&r| {
            let addr = dep2p_core::addr::quic_multiaddr(world.addr(r));
            (world.peer_id(r), vec![addr])
        })
        .collect();
    let mut config = NodeConfig::default();
    config.auto_relay(Some(AutoRelayConfig::default().min_relays(2)));
    let c = world.add_node(config);
    world.command(c, |n, now| {
        n.add_relay_candidates(now, &candidates, CandidateSource::Bootstrap)
    });
    let reserved = |w: &World| {
        w.events(c)
            .filter(|e| matches!(e, Event::ReservationAccepted { .. }))
            .count()
            >= 2
    };
    assert!(world.run_until(Duration::from_secs(10), reserved));

    world.command(c, |n, now| n.drain(now));
    world.take_events(c);
    world.run_for(Duration::from_secs(30));
    assert_eq!(
        world.node(c).stats().connections,
        0,
        "every connection closed"
    );
    let redials = world
        .events(c)
        .filter(|e| matches!(e, Event::ConnectionEstablished { .. }))
        .count();
    assert_eq!(redials, 0, "no relay dialed after the drain");
    let peer = world.peer_id(relays[0]);
    let addr = world.addr(relays[0]);
    assert!(matches!(
        world.command(c, |n, now| n.dial(now, addr, peer)),
        Err(DialError::Draining)
    ));
}
