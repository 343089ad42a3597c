//! An idle reservation costs the relay as little as possible: one keep-alive and one
//! acknowledgement per keep-alive interval, and one wake-up. The client (the dialer) sends every
//! keep-alive: the relay's own interval on inbound connections is longer and every packet
//! received postpones it; the relay acknowledges each keep-alive at once, as the client asks it
//! to (QUIC acknowledgement frequency). A client that goes silent is detected by the relay's
//! idle timeout.

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
fn the_client_sends_every_keep_alive_and_the_relay_answers_each_in_one_wake_up() {
    let mut world = reserved_world(43);
    let (relay, client) = (world.sim_node(0), world.sim_node(1));
    let before = (relay.wakeups, relay.datagrams_sent, client.datagrams_sent);
    let idle = Duration::from_secs(120);
    world.run_for(idle);
    let (relay, client) = (world.sim_node(0), world.sim_node(1));
    let wakeups = relay.wakeups - before.0;
    let relay_sent = relay.datagrams_sent - before.1;
    let client_sent = client.datagrams_sent - before.2;
    let intervals = idle.as_secs() / KEEP_ALIVE.as_secs();
    // The client's keep-alives, one per interval (its interval is the shorter one).
    assert!(
        client_sent >= intervals - 1 && client_sent <= intervals + 1,
        "the client sent {client_sent} datagrams in {intervals} intervals"
    );
    // The relay only acknowledges them, each at once: were it to send keep-alives of its own,
    // or to acknowledge after its ack delay, it would be woken about twice per interval (49
    // times here before it did either). A few wake-ups of its own timers are allowed.
    assert!(
        relay_sent <= client_sent,
        "the relay sent {relay_sent} datagrams for the client's {client_sent}"
    );
    assert!(
        wakeups <= intervals + intervals / 4,
        "the relay was woken {wakeups} times in {intervals} intervals \
         (it sent {relay_sent}, the client {client_sent})"
    );
    assert!(world.is_connected(1, 0), "the connection stays up");
}

#[test]
fn streams_that_finished_leave_no_timer_behind_at_the_relay() {
    // Identify both ways and the RESERVE each had a deadline (negotiation, request) while they
    // ran; once they finished, nothing should wake the relay at those deadlines. Watched over
    // the 15 s after the reservation, which holds every one of them (the longest is 10 s).
    let mut world = reserved_world(45);
    let before = world.sim_node(0).wakeups;
    let window = Duration::from_secs(15);
    world.run_for(window);
    let wakeups = world.sim_node(0).wakeups - before;
    let intervals = window.as_secs() / KEEP_ALIVE.as_secs();
    assert!(
        wakeups <= intervals + 1,
        "the relay was woken {wakeups} times in {intervals} keep-alive intervals"
    );
    assert!(world.is_connected(1, 0), "the connection stays up");
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

#[test]
fn a_client_that_sends_no_keep_alives_is_kept_by_the_relays_own() {
    let mut world = World::new(44);
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(RelayLimits::default()));
    let r = world.add_node(relay);
    let mut quiet = NodeConfig::default();
    quiet.keep_alive(Duration::ZERO);
    let client = world.add_node(quiet);
    let conn = world.connect(client, r);
    assert!(world.run_until(SETTLE, |w| w.is_connected(client, r)));
    world
        .command(client, |n, now| n.reserve(now, conn))
        .expect("reserve starts");
    let before = world.sim_node(r).datagrams_sent;
    world.run_for(4 * IDLE_TIMEOUT);
    assert!(
        world.is_connected(client, r),
        "the relay's keep-alives hold a connection whose client sends none"
    );
    assert!(
        world.sim_node(r).datagrams_sent - before >= 4,
        "the relay sent keep-alives"
    );
}
