//! A burst of circuit dials on a fresh relay connection: our relay gives a new connection 8
//! streams of credit and 32 once it uses half, so dials beyond the first credit wait for the
//! raise (one round trip) instead of failing; a relay that never gives more fails the waiting
//! dials after the request timeout, naming why.

mod relay_world;

use std::time::Duration;

use dep2p_core::node::{ConnectionFailure, Event, MAX_WAITING_CONNECTS, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;

use relay_world::{SETTLE, relayed_established, reserved_trio};

const BURST: usize = 12;

#[test]
fn a_burst_of_dials_beyond_the_initial_stream_credit_waits_and_all_connect() {
    let mut trio = reserved_trio(31, RelayLimits::default(), NodeConfig::default());
    let (a, b, r, b_r) = (trio.a, trio.b, trio.r, trio.b_r);
    let target = trio.world.peer_id(a);
    let relay = trio.world.peer_id(r);
    let mut dials = Vec::new();
    for _ in 0..BURST {
        let dial = trio
            .world
            .command(b, |n, now| n.dial_through_relay(now, b_r, target))
            .expect("every dial of the burst starts");
        dials.push(dial);
    }
    assert!(
        trio.world.run_until(SETTLE, |w| {
            let established = relayed_established(w, b, target, relay);
            dials.iter().all(|d| established.contains(d))
        }),
        "all {BURST} relayed connections are established; B saw {:?}",
        trio.world
            .events(b)
            .filter(|e| matches!(e, Event::ConnectionClosed { .. }))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        trio.world.node(r).relay_stats().expect("a relay").circuits,
        BURST,
        "the relay bridges every circuit"
    );
}

#[test]
fn dials_waiting_for_stream_credit_that_never_comes_fail_after_the_request_timeout() {
    let mut trio = reserved_trio(32, RelayLimits::default(), NodeConfig::default());
    let (a, b) = (trio.a, trio.b);
    let target = trio.world.peer_id(a);
    // A relay S that allows 2 streams per connection, never more, and waits up to 60 s for a
    // target's STOP answer: its CONNECT streams stay open longer than B's 10 s timeouts.
    let mut stingy = NodeConfig::default();
    stingy
        .relay_server(Some(
            RelayLimits::default().request_timeout(Duration::from_secs(60)),
        ))
        .max_streams_per_connection(2)
        .initial_inbound_streams(2);
    let s = trio.world.add_node(stingy);
    let a_s = trio.world.connect(a, s);
    let b_s = trio.world.connect(b, s);
    assert!(
        trio.world
            .run_until(SETTLE, |w| w.is_connected(a, s) && w.is_connected(b, s))
    );
    trio.world
        .command(a, |n, now| n.reserve(now, a_s))
        .expect("reserve starts");
    assert!(trio.world.run_until(SETTLE, |w| {
        w.events(a).any(
            |e| matches!(e, Event::ReservationAccepted { connection, .. } if *connection == a_s),
        )
    }));
    // A goes silent: S's STOP to it is never answered, so the CONNECTs that got a stream wait.
    trio.world.isolate(a);
    let mut dials = Vec::new();
    for _ in 0..4 {
        dials.push(
            trio.world
                .command(b, |n, now| n.dial_through_relay(now, b_s, target))
                .expect("the dial starts"),
        );
    }
    let waited_and_failed = |w: &dep2p_core::testing::World| {
        w.events(b)
            .filter(|e| {
                matches!(e, Event::ConnectionClosed { connection, failure: ConnectionFailure::Relayed(why), .. }
                    if dials.contains(connection) && why.contains("gave no stream for the CONNECT"))
            })
            .count()
    };
    assert!(
        trio.world
            .run_until(Duration::from_secs(12), |w| waited_and_failed(w) == 2),
        "the two dials beyond the credit fail once B's 10 s request timeout passes, naming why; \
         B saw {:?}",
        trio.world
            .events(b)
            .filter(|e| matches!(e, Event::ConnectionClosed { .. }))
            .collect::<Vec<_>>()
    );
}

#[test]
fn at_most_max_waiting_connects_dials_wait_on_one_relay_connection() {
    let mut trio = reserved_trio(33, RelayLimits::default(), NodeConfig::default());
    let (a, b, b_r) = (trio.a, trio.b, trio.b_r);
    let target = trio.world.peer_id(a);
    // Without any input in between, no credit can arrive: the CONNECTs take what stream
    // credit is left (at most the relay's initial 8), the next MAX_WAITING_CONNECTS wait, and
    // the one after is refused at once.
    let initial_credit = 8;
    let mut started = 0;
    let refused = loop {
        match trio
            .world
            .command(b, |n, now| n.dial_through_relay(now, b_r, target))
        {
            Ok(_) => started += 1,
            Err(error) => break error,
        }
        assert!(
            started <= initial_credit + MAX_WAITING_CONNECTS,
            "{started} dials started: nothing bounds the waiting ones"
        );
    };
    assert!(
        started > MAX_WAITING_CONNECTS,
        "only {started} dials started before: {refused}"
    );
    assert!(
        refused.to_string().contains("64 dials already wait"),
        "the refusal names the bound: {refused}"
    );
}
