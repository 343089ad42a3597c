//! A reserves on relay R, B dials A through R: TLS authenticates A end to end over the circuit,
//! yamux carries an application stream, and the bytes arrive intact.

use std::time::Duration;

use bytes::Bytes;
use dep2p_core::node::{Event, NodeConfig, ReadOutcome};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

#[test]
fn peer_dialed_through_a_relay_receives_stream_data_from_the_authenticated_dialer() {
    let mut world = World::new(3);
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(RelayLimits::default()));
    let r = world.add_node(relay);
    let mut app = NodeConfig::default();
    app.protocol("/echo/1.0.0");
    let a = world.add_node(app.clone());
    let b = world.add_node(app);
    let a_r = world.connect(a, r);
    let b_r = world.connect(b, r);
    assert!(
        world.run_until(Duration::from_secs(5), |w| w.is_connected(a, r)
            && w.is_connected(b, r))
    );

    world
        .command(a, |n, now| n.reserve(now, a_r))
        .expect("reserve starts");
    assert!(world.run_until(Duration::from_secs(5), |w| {
        w.events(a)
            .any(|e| matches!(e, Event::ReservationAccepted { .. }))
    }));

    let target = world.peer_id(a);
    let relayed = world
        .command(b, |n, now| n.dial_through_relay(now, b_r, target))
        .expect("dial starts");
    let relay_id = world.peer_id(r);
    assert!(
        world.run_until(Duration::from_secs(5), |w| w.events(b).any(|e| matches!(
            e,
            Event::ConnectionEstablished { connection, peer, relay: Some(via), .. }
                if *connection == relayed && *peer == target && *via == relay_id
        )))
    );
    let b_id = world.peer_id(b);
    assert!(world.events(a).any(|e| matches!(
        e,
        Event::ConnectionEstablished { peer, relay: Some(_), .. } if *peer == b_id
    )));

    let stream = world
        .command(b, |n, now| n.open_stream(now, relayed, "/echo/1.0.0"))
        .expect("stream opens");
    assert!(
        world.run_until(Duration::from_secs(5), |w| w.events(b).any(
            |e| matches!(e, Event::StreamReady { stream: s, .. } if *s == stream)
        ))
    );
    let written = world
        .command(b, |n, now| n.write(now, stream, b"hello through the relay"))
        .expect("write");
    assert_eq!(written, 23);
    world
        .command(b, |n, now| n.finish(now, stream))
        .expect("finish");
    world.run_for(Duration::from_secs(1));
    let inbound = world
        .events(a)
        .find_map(|e| match e {
            Event::InboundStream { stream, .. } => Some(*stream),
            _ => None,
        })
        .expect("A accepted the relayed stream");
    let data = world
        .command(a, |n, now| n.read(now, inbound, 1000))
        .expect("read");
    assert_eq!(
        data,
        ReadOutcome::Data(Bytes::from_static(b"hello through the relay"))
    );
    let stats = world.node(r).relay_stats().expect("R is a relay");
    assert_eq!((stats.reservations, stats.bridges), (1, 1));
    assert!(
        stats.bytes_relayed > 23,
        "TLS and yamux overhead crossed the relay too"
    );
}
