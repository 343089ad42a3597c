//! Host faults: a crash loses the node's state, a restart brings back the same identity, a
//! drain tells peers at once with an application close code.

use std::time::Duration;

use dep2p_core::node::{ConnectionFailure, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_sim::{DRAIN_CODE, Sim};

fn run(sim: &mut Sim, for_: Duration) -> Vec<(dep2p_sim::HostId, Event)> {
    let end = sim.now() + for_;
    let mut events = Vec::new();
    while sim.step(end) {
        events.extend(sim.take_events());
    }
    events.extend(sim.take_events());
    events
}

#[test]
fn a_restarted_relay_keeps_its_peer_id_but_loses_its_reservations() {
    let mut sim = Sim::new(4);
    let relay = sim.add_relay("relay", NodeConfig::default(), RelayLimits::default());
    let client = sim.add_client("client", NodeConfig::default());
    let peer = sim.peer_id(relay);
    let connection = sim.dial(client, relay).expect("dial starts");
    run(&mut sim, Duration::from_secs(1));
    sim.command(client, |node, now| node.reserve(now, connection))
        .expect("client is up")
        .expect("reserve starts");
    run(&mut sim, Duration::from_secs(1));
    assert_eq!(sim.relay_stats(relay).map(|s| s.reservations), Some(1));

    sim.crash(relay);
    assert!(!sim.is_up(relay));
    assert_eq!(sim.relay_stats(relay), None);
    sim.restart(relay);
    assert_eq!(sim.incarnation(relay), 1);
    assert_eq!(sim.node(relay).map(|n| n.peer_id()), Some(peer));
    assert_eq!(sim.relay_stats(relay).map(|s| s.reservations), Some(0));
}

#[test]
fn a_draining_relay_closes_connections_with_its_code_and_stops() {
    let mut sim = Sim::new(5);
    let relay = sim.add_relay("relay", NodeConfig::default(), RelayLimits::default());
    let client = sim.add_client("client", NodeConfig::default());
    sim.dial(client, relay).expect("dial starts");
    run(&mut sim, Duration::from_secs(1));
    sim.drain_host(relay);
    let events = run(&mut sim, Duration::from_secs(2));
    assert!(
        events.iter().any(|(host, e)| *host == client
            && matches!(e, Event::ConnectionClosed {
                failure: ConnectionFailure::ClosedByPeer { code, .. }, ..
            } if *code == u64::from(DRAIN_CODE))),
        "{events:?}"
    );
    assert!(!sim.is_up(relay), "stopped after the grace period");
}
