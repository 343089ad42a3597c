//! Two nodes connect over QUIC with the libp2p TLS profile and authenticate each other's
//! PeerId; a dial expecting another PeerId fails with a typed mismatch on both ends' terms, and
//! a node refuses to dial itself.

mod common;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{ConnectionFailure, DialError, Direction, Event, NodeConfig};
use dep2p_core::testing::{LinkConfig, World};
use dep2p_core::tls::CertificateError;

use common::{SETTLE, connected_pair, direction};

#[test]
fn both_sides_report_the_other_peer_id_and_direction() {
    let (world, a, b, conn_a, conn_b) = connected_pair(
        1,
        LinkConfig::default(),
        NodeConfig::default(),
        NodeConfig::default(),
    );
    assert_eq!(direction(&world, a, b), Direction::Outbound, "the dialer");
    assert_eq!(direction(&world, b, a), Direction::Inbound, "the listener");
    assert_eq!(
        world.sim_node(a).node.connection_peer(conn_a),
        Some(world.peer_id(b)),
        "a's connection is authenticated as b"
    );
    assert_eq!(
        world.sim_node(b).node.connection_peer(conn_b),
        Some(world.peer_id(a)),
        "b's connection is authenticated as a"
    );
    // The remote address each side reports is the other's UDP address.
    for (at, other) in [(a, b), (b, a)] {
        let remote = world.events(at).find_map(|e| match e {
            Event::ConnectionEstablished { remote, .. } => Some(*remote),
            _ => None,
        });
        assert_eq!(
            remote,
            Some(world.addr(other)),
            "node {at} sees node {other}'s address"
        );
    }
    for at in [a, b] {
        assert!(
            !world
                .events(at)
                .any(|e| matches!(e, Event::ConnectionClosed { .. })),
            "node {at} closed nothing: {:?}",
            world.events(at).collect::<Vec<_>>()
        );
    }
}

#[test]
fn dialing_with_the_wrong_expected_peer_id_fails_with_a_typed_mismatch() {
    let mut world = World::new(2);
    let a = world.add_node(NodeConfig::default());
    let b = world.add_node(NodeConfig::default());
    let impostor = keypair_from_seed([0x42; 32]).public().to_peer_id();
    let actual = world.peer_id(b);
    let addr_b = world.addr(b);
    let conn = world
        .command(a, |node, now| node.dial(now, addr_b, impostor))
        .expect("dial starts");

    let closed = |w: &World, at: usize| {
        w.events(at)
            .any(|e| matches!(e, Event::ConnectionClosed { .. }))
    };
    assert!(
        world.run_until(SETTLE, |w| closed(w, a) && closed(w, b)),
        "both sides report the failed connection; a: {:?}, b: {:?}",
        world.events(a).collect::<Vec<_>>(),
        world.events(b).collect::<Vec<_>>()
    );

    let failure = world
        .events(a)
        .find_map(|e| match e {
            Event::ConnectionClosed {
                connection,
                peer,
                failure,
            } if *connection == conn => {
                assert_eq!(
                    *peer,
                    Some(impostor),
                    "a failed dial names the expected peer"
                );
                Some(failure.clone())
            }
            _ => None,
        })
        .expect("the dialer reports its connection closed");
    match &failure {
        ConnectionFailure::Certificate(CertificateError::PeerIdMismatch {
            expected,
            actual: got,
        }) => {
            assert_eq!(*expected, impostor);
            assert_eq!(*got, actual);
        }
        other => panic!("expected a PeerIdMismatch, got {other:?}"),
    }
    let message = failure.to_string();
    assert!(
        message.contains(&impostor.to_base58()) && message.contains(&actual.to_base58()),
        "the message names both PeerIds: {message}"
    );

    for at in [a, b] {
        assert!(
            !world
                .events(at)
                .any(|e| matches!(e, Event::ConnectionEstablished { .. })),
            "node {at} never reports the connection established"
        );
    }
    assert!(
        world.events(b).any(|e| matches!(
            e,
            Event::ConnectionClosed {
                peer: None,
                failure: ConnectionFailure::Quic(_),
                ..
            }
        )),
        "the listener sees the connection fail before authenticating anyone: {:?}",
        world.events(b).collect::<Vec<_>>()
    );

    // Nothing lingers once quinn drained both connections.
    world.run_for(SETTLE);
    for at in [a, b] {
        assert_eq!(
            world.node(at).stats().connections,
            0,
            "node {at} forgot the connection"
        );
    }
}

#[test]
fn dialing_ourselves_is_refused() {
    let mut world = World::new(3);
    let a = world.add_node(NodeConfig::default());
    let own = world.peer_id(a);
    let addr = world.addr(a);
    let result = world.command(a, |node, now| node.dial(now, addr, own));
    match result {
        Err(DialError::SelfDial(peer)) => assert_eq!(peer, own),
        other => panic!("expected SelfDial, got {other:?}"),
    }
    assert_eq!(
        world.node(a).stats().connections,
        0,
        "no connection was created"
    );
    assert_eq!(world.events(a).count(), 0, "a refused dial emits no event");
}
