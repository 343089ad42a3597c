//! A node's listener refuses QUIC clients that do not follow the libp2p TLS profile, with a
//! specific error: a certificate without the libp2p extension, an extension signed by another
//! host key, and an ALPN other than `libp2p`. None of them ever becomes an established
//! connection.

mod common;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{ConnectionFailure, Event, NodeConfig};
use dep2p_core::testing::World;
use dep2p_core::tls::{ALPN, CertificateError, TlsIdentity};

use common::SETTLE;
use common::raw::{RawPeer, client_tls, good_identity};

/// The TLS alert `no_application_protocol` (RFC 8446 §6), and QUIC's crypto error range.
const ALERT_NO_APPLICATION_PROTOCOL: u64 = 120;
const QUIC_CRYPTO_ERROR_BASE: u64 = 0x100;

/// One listening node and a raw client that connects to it with `identity` offering `alpn`,
/// run until the client lost the connection and, if `listener_reports`, the node reported it
/// closed (or `SETTLE` passed).
fn attempt(
    seed: u64,
    identity: &TlsIdentity,
    alpn: &[&[u8]],
    listener_reports: bool,
) -> (World, usize, RawPeer) {
    let mut world = World::new(seed);
    let listener = world.add_node(NodeConfig::default());
    let expected = world.peer_id(listener);
    let tls = client_tls(&world, identity, Some(expected), alpn);
    let mut client = RawPeer::connect(&mut world, listener, 5000, tls);
    let closed = |w: &World, c: &RawPeer| {
        c.lost().is_some()
            && (!listener_reports
                || w.events(listener)
                    .any(|e| matches!(e, Event::ConnectionClosed { .. })))
    };
    assert!(
        client.run_until(&mut world, SETTLE, closed),
        "both sides give up; client events: {:?}, node events: {:?}",
        client.events,
        world.events(listener).collect::<Vec<_>>()
    );
    assert!(
        !world
            .events(listener)
            .any(|e| matches!(e, Event::ConnectionEstablished { .. })),
        "the listener never establishes a refused connection: {:?}",
        world.events(listener).collect::<Vec<_>>()
    );
    (world, listener, client)
}

/// The failure the listener reported for its (only) connection.
fn listener_failure(world: &World, listener: usize) -> ConnectionFailure {
    world
        .events(listener)
        .find_map(|e| match e {
            Event::ConnectionClosed { peer, failure, .. } => {
                assert_eq!(*peer, None, "no peer was authenticated");
                Some(failure.clone())
            }
            _ => None,
        })
        .expect("the listener reports the connection closed")
}

/// The QUIC transport error code the client's connection was closed with.
fn client_close_code(client: &RawPeer) -> u64 {
    match client.lost() {
        Some(quinn_proto::ConnectionError::ConnectionClosed(close)) => u64::from(close.error_code),
        Some(quinn_proto::ConnectionError::TransportError(error)) => u64::from(error.code),
        other => panic!("expected the listener to close with a transport error, got {other:?}"),
    }
}

#[test]
fn well_formed_raw_client_is_accepted() {
    // The harness itself: a raw client with a proper certificate gets in, as its PeerId.
    let mut world = World::new(10);
    let listener = world.add_node(NodeConfig::default());
    let identity = good_identity(9);
    let tls = client_tls(&world, &identity, Some(world.peer_id(listener)), &[ALPN]);
    let mut client = RawPeer::connect(&mut world, listener, 5000, tls);
    let peer = identity.peer_id();
    assert!(
        client.run_until(&mut world, SETTLE, |w, _| w.events(listener).any(
            |e| matches!(e, Event::ConnectionEstablished { peer: p, .. } if *p == peer)
        )),
        "the node authenticates the raw client: {:?}",
        world.events(listener).collect::<Vec<_>>()
    );
    assert!(client.is_connected());
    assert!(client.lost().is_none());
}

#[test]
fn certificate_without_the_libp2p_extension_is_refused_by_the_listener() {
    let host = keypair_from_seed([7; 32]);
    let bare = TlsIdentity::forged_without_libp2p_extension(&host, [8; 32]).expect("cert");
    let (world, listener, client) = attempt(11, &bare, &[ALPN], true);
    match listener_failure(&world, listener) {
        ConnectionFailure::Certificate(CertificateError::MissingLibp2pExtension) => {}
        other => panic!("expected Certificate(MissingLibp2pExtension), got {other:?}"),
    }
    let code = client_close_code(&client);
    assert!(
        (QUIC_CRYPTO_ERROR_BASE..QUIC_CRYPTO_ERROR_BASE + 0x100).contains(&code),
        "the client receives a TLS alert, got code {code:#x}"
    );
}

#[test]
fn extension_signed_by_another_host_key_is_refused_by_the_listener() {
    let (host, impostor) = (keypair_from_seed([7; 32]), keypair_from_seed([6; 32]));
    let forged =
        TlsIdentity::forged_with_extension_signed_by(&host, &impostor, [8; 32]).expect("cert");
    let (world, listener, client) = attempt(12, &forged, &[ALPN], true);
    match listener_failure(&world, listener) {
        ConnectionFailure::Certificate(CertificateError::InvalidExtensionSignature) => {}
        other => panic!("expected Certificate(InvalidExtensionSignature), got {other:?}"),
    }
    let code = client_close_code(&client);
    assert!(
        (QUIC_CRYPTO_ERROR_BASE..QUIC_CRYPTO_ERROR_BASE + 0x100).contains(&code),
        "the client receives a TLS alert, got code {code:#x}"
    );
}

#[test]
fn client_offering_h3_instead_of_libp2p_is_refused() {
    let (mut world, listener, client) = attempt(13, &good_identity(9), &[b"h3"], false);
    assert_eq!(
        client_close_code(&client),
        QUIC_CRYPTO_ERROR_BASE + ALERT_NO_APPLICATION_PROTOCOL,
        "the client is told no_application_protocol"
    );
    // quinn-proto refuses the handshake while accepting it, so no connection ever existed on
    // the listener: nothing to report, nothing held.
    assert_eq!(
        world.events(listener).count(),
        0,
        "the listener reports nothing: {:?}",
        world.events(listener).collect::<Vec<_>>()
    );
    assert_eq!(world.node(listener).stats().connections, 0);
}

#[test]
fn concurrent_refusals_are_each_reported_on_their_own_connection() {
    // The client-certificate verifier's failure slot is shared by every inbound connection of
    // the node; interleaved handshakes must still each get their own reason, and a good client
    // handshaking at the same time must not inherit one.
    let mut world = World::new(14);
    let listener = world.add_node(NodeConfig::default());
    let expected = Some(world.peer_id(listener));
    let host = keypair_from_seed([7; 32]);
    let bare = TlsIdentity::forged_without_libp2p_extension(&host, [8; 32]).expect("cert");
    let forged =
        TlsIdentity::forged_with_extension_signed_by(&host, &keypair_from_seed([6; 32]), [8; 32])
            .expect("cert");
    let good = good_identity(9);
    let mut clients = [(5001, &bare), (5002, &forged), (5003, &good)].map(|(port, identity)| {
        let tls = client_tls(&world, identity, expected, &[ALPN]);
        RawPeer::connect(&mut world, listener, port, tls)
    });
    // Drive all three in lockstep, a tick at a time.
    for _ in 0..500 {
        for client in &mut clients {
            client.run_for(&mut world, std::time::Duration::from_millis(1));
        }
    }
    let [_, _, good_client] = &clients;
    assert!(
        good_client.is_connected() && good_client.lost().is_none(),
        "the good client is in"
    );
    let established: Vec<_> = world
        .events(listener)
        .filter_map(|e| match e {
            Event::ConnectionEstablished {
                connection,
                peer,
                remote,
                ..
            } => Some((*connection, *peer, *remote)),
            _ => None,
        })
        .collect();
    assert_eq!(
        established,
        vec![(established[0].0, good.peer_id(), good_client.addr)],
        "only the good client is established, as itself"
    );
    let mut failures: Vec<String> = world
        .events(listener)
        .filter_map(|e| match e {
            Event::ConnectionClosed {
                connection,
                failure,
                ..
            } => {
                assert_ne!(
                    *connection, established[0].0,
                    "the good connection stays up"
                );
                Some(match failure {
                    ConnectionFailure::Certificate(error) => format!("{error:?}"),
                    other => panic!("each refusal is typed, got {other:?}"),
                })
            }
            _ => None,
        })
        .collect();
    failures.sort();
    assert_eq!(
        failures,
        vec![
            "InvalidExtensionSignature".to_owned(),
            "MissingLibp2pExtension".to_owned()
        ],
        "each forged client gets its own reason"
    );
    for client in &clients[..2] {
        assert!(
            client.lost().is_some(),
            "forged client {} is refused",
            client.addr
        );
    }
}
