//! Identify and ping run over a relayed connection like over a direct one (identify on both
//! sides with the authenticated keys and no observed address, ping round trips), and a stream
//! for a protocol the peer does not support fails with `StreamOpenFailed`.

mod relay_world;

use dep2p_core::multistream::NegotiationError;
use dep2p_core::node::{Event, NodeConfig, StreamOpenFailure};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

use relay_world::{SETTLE, reserved_trio};

const ECHO: &str = "/echo/1.0.0";

fn identified(world: &World, at: usize, connection: dep2p_core::node::ConnectionId) -> bool {
    world
        .events(at)
        .any(|e| matches!(e, Event::Identified { connection: c, .. } if *c == connection))
}

#[test]
fn both_ends_of_a_relayed_connection_identify_each_other_without_an_observed_address() {
    let mut app = NodeConfig::default();
    app.protocol(ECHO);
    let mut trio = reserved_trio(21, RelayLimits::default(), app);
    let (a, b) = (trio.a, trio.b);
    let (at_b, at_a) = trio.dial();
    assert!(
        trio.world
            .run_until(SETTLE, |w| identified(w, a, at_a) && identified(w, b, at_b)),
        "identify completes over the relayed connection on both sides"
    );
    for (at, connection, remote) in [(a, at_a, b), (b, at_b, a)] {
        let info = trio
            .world
            .events(at)
            .find_map(|e| match e {
                Event::Identified {
                    connection: c,
                    info,
                } if *c == connection => Some(info),
                _ => None,
            })
            .expect("Identified");
        assert_eq!(
            info.public_key.to_peer_id(),
            trio.world.peer_id(remote),
            "the key is the TLS-authenticated peer's"
        );
        assert_eq!(
            info.observed_addr, None,
            "a relayed connection has no observed address of ours to report"
        );
        assert!(info.protocols.iter().any(|p| p == ECHO));
    }
    assert!(
        !trio
            .world
            .events(a)
            .chain(trio.world.events(b))
            .any(|e| matches!(e, Event::IdentifyFailed { .. })),
        "no identify failure anywhere"
    );
}

#[test]
fn ping_round_trips_over_a_relayed_connection() {
    let mut trio = reserved_trio(22, RelayLimits::default(), NodeConfig::default());
    let (a, b) = (trio.a, trio.b);
    let (at_b, at_a) = trio.dial();
    for (at, connection) in [(b, at_b), (a, at_a)] {
        trio.world
            .command(at, |n, now| n.ping(now, connection))
            .expect("ping starts");
        assert!(
            trio.world.run_until(SETTLE, |w| w.events(at).any(
                |e| matches!(e, Event::PingSucceeded { connection: c, .. } if *c == connection)
            )),
            "node {at} pings its peer through the relay"
        );
        let rtt = trio
            .world
            .events(at)
            .find_map(|e| match e {
                Event::PingSucceeded { connection: c, rtt } if *c == connection => Some(*rtt),
                _ => None,
            })
            .expect("PingSucceeded");
        // Two hops of 10 ms each way: at least 40 ms.
        assert!(
            rtt >= std::time::Duration::from_millis(40),
            "the round trip crosses both hops: {rtt:?}"
        );
    }
    assert!(
        !trio
            .world
            .events(a)
            .chain(trio.world.events(b))
            .any(|e| matches!(e, Event::PingFailed { .. }))
    );
}

#[test]
fn a_stream_for_an_unsupported_protocol_fails_to_open_over_a_relayed_connection() {
    let mut trio = reserved_trio(23, RelayLimits::default(), NodeConfig::default());
    let (a, b) = (trio.a, trio.b);
    let (at_b, at_a) = trio.dial();
    trio.world.run_for(SETTLE);
    let baseline = [trio.world.node(a).stats(), trio.world.node(b).stats()];
    let stream = trio
        .world
        .command(b, |n, now| n.open_stream(now, at_b, "/not-supported/1.0.0"))
        .expect("open_stream starts");
    assert!(
        trio.world.run_until(SETTLE, |w| w.events(b).any(
            |e| matches!(e, Event::StreamOpenFailed { stream: s, .. } if *s == stream)
        )),
        "the refusal is reported"
    );
    let failure = trio
        .world
        .events(b)
        .find_map(|e| match e {
            Event::StreamOpenFailed { stream: s, failure } if *s == stream => Some(failure),
            _ => None,
        })
        .expect("StreamOpenFailed");
    assert!(
        matches!(
            failure,
            StreamOpenFailure::Negotiation(NegotiationError::Unsupported { .. })
        ),
        "refused as unsupported: {failure:?}"
    );
    assert!(
        !trio
            .world
            .events(a)
            .any(|e| matches!(e, Event::InboundStream { .. })),
        "A accepted no stream"
    );
    // The connection survives the refusal: a ping still works, and no stream entry is left
    // behind for the refused stream.
    trio.world
        .command(b, |n, now| n.ping(now, at_b))
        .expect("ping starts");
    assert!(
        trio.world.run_until(SETTLE, |w| w.events(b).any(
            |e| matches!(e, Event::PingSucceeded { connection, .. } if *connection == at_b)
        ))
    );
    trio.world.run_for(SETTLE);
    assert!(!relay_world::closed(&trio.world, a, at_a));
    assert!(!relay_world::closed(&trio.world, b, at_b));
    assert_eq!(
        [trio.world.node(a).stats(), trio.world.node(b).stats()],
        baseline,
        "the refused stream and the ping stream left nothing behind"
    );
}
