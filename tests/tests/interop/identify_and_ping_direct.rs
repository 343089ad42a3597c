//! Identify and ping between our node and a rust-libp2p peer over a direct QUIC connection,
//! each side dialing once: our TLS certificate (Ed25519 key) must pass libp2p's verifier and
//! theirs ours; the identify fields must decode on both sides; ping must echo.

use std::time::Duration;

use dep2p_core::node::{Direction, Event};
use dep2p_tokio::apps::ECHO;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, ping};

use crate::common::*;

/// What libp2p reported about us over one connection.
struct SeenByLibp2p {
    info: identify::Info,
    rtt: Duration,
}

async fn libp2p_identifies_and_pings(
    client: &mut Libp2pClient,
    ours: &dep2p_tokio::NodeHandle,
) -> SeenByLibp2p {
    let our_peer = to_libp2p_peer(ours.peer_id());
    let mut info = None;
    let mut rtt = None;
    while info.is_none() || rtt.is_none() {
        let event = client
            .node
            .expect(
                "identify Received and a ping from our node",
                |event| match event {
                    SwarmEvent::Behaviour(ClientBehaviourEvent::Identify(
                        identify::Event::Received { peer_id, info, .. },
                    )) if *peer_id == our_peer => Some(Ok(info.clone())),
                    SwarmEvent::Behaviour(ClientBehaviourEvent::Ping(ping::Event {
                        peer,
                        result: Ok(rtt),
                        ..
                    })) if *peer == our_peer => Some(Err(*rtt)),
                    SwarmEvent::Behaviour(ClientBehaviourEvent::Ping(ping::Event {
                        result: Err(e),
                        ..
                    })) => panic!("libp2p ping to our node failed: {e}"),
                    SwarmEvent::Behaviour(ClientBehaviourEvent::Identify(
                        identify::Event::Error { error, .. },
                    )) => panic!("libp2p identify of our node failed: {error}"),
                    _ => None,
                },
            )
            .await;
        match event {
            Ok(i) => info = Some(i),
            Err(r) => rtt = Some(r),
        }
    }
    SeenByLibp2p {
        info: info.expect("set above"),
        rtt: rtt.expect("set above"),
    }
}

fn assert_libp2p_saw_us(seen: &SeenByLibp2p, ours: &dep2p_tokio::NodeHandle) {
    let info = &seen.info;
    assert_eq!(
        info.public_key.to_peer_id(),
        to_libp2p_peer(ours.peer_id()),
        "our identify key derives our PeerId"
    );
    assert!(
        info.agent_version.starts_with("dep2p/"),
        "{}",
        info.agent_version
    );
    assert_eq!(info.protocol_version, "ipfs/0.1.0");
    let protocols: Vec<&str> = info.protocols.iter().map(|p| p.as_ref()).collect();
    for expected in ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", ECHO] {
        assert!(protocols.contains(&expected), "{expected} in {protocols:?}");
    }
    assert!(
        info.listen_addrs
            .iter()
            .any(|a| socket_of(a) == ours.local_addr()),
        "our listen address {} in {:?}",
        ours.local_addr(),
        info.listen_addrs
    );
    assert!(seen.rtt < Duration::from_secs(2), "rtt {:?}", seen.rtt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_and_ping_interop_on_direct_quic_both_directions() {
    bounded(Duration::from_secs(60), async {
        let mut client = libp2p_client();
        let client_addr = client.node.listen_quic().await;
        let client_peer = client.node.peer_id;

        // 1. We dial libp2p.
        let ours = our_node();
        let mut events = ours.events();
        let connection = ours
            .dial(socket_of(&client_addr), to_our_peer(client_peer))
            .await
            .expect("our dial to libp2p over QUIC");
        let info = expect_our_event(&mut events, "Identified from libp2p", |e| match e {
            Event::Identified {
                connection: c,
                info,
            } if *c == connection => Some(info.clone()),
            Event::IdentifyFailed { reason, .. } => panic!("identify of libp2p failed: {reason}"),
            _ => None,
        })
        .await;
        assert_eq!(info.public_key.to_peer_id(), to_our_peer(client_peer));
        assert_eq!(info.agent_version, LIBP2P_AGENT);
        assert_eq!(info.protocol_version, LIBP2P_PROTOCOL_VERSION);
        for expected in ["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", ECHO] {
            assert!(
                info.protocols.iter().any(|p| p == expected),
                "{expected} in {:?}",
                info.protocols
            );
        }
        assert!(
            info.listen_addrs.contains(&to_our_addr(&client_addr)),
            "{client_addr} in {:?}",
            info.listen_addrs
        );
        let observed = info
            .observed_addr
            .as_ref()
            .expect("libp2p tells what it saw");
        assert_eq!(
            socket_of(&to_libp2p_addr(observed)),
            ours.local_addr(),
            "libp2p observed our socket"
        );
        let rtt = ours.ping(connection).await.expect("we ping libp2p");
        assert!(rtt < Duration::from_secs(2), "rtt {rtt:?}");
        let seen = libp2p_identifies_and_pings(&mut client, &ours).await;
        assert_libp2p_saw_us(&seen, &ours);
        assert_eq!(
            socket_of(&seen.info.observed_addr),
            socket_of(&client_addr),
            "we tell libp2p the address we see it at"
        );

        // 2. libp2p dials us.
        let ours = our_node();
        let mut events = ours.events();
        let target = our_addr(&ours);
        client
            .node
            .call(move |swarm| swarm.dial(target))
            .await
            .expect("libp2p dial starts");
        let our_peer = to_libp2p_peer(ours.peer_id());
        client
            .node
            .expect("ConnectionEstablished with our node", |e| match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == our_peer => {
                    Some(())
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("libp2p dial to our node failed: {error}")
                }
                _ => None,
            })
            .await;
        let inbound = expect_our_event(&mut events, "inbound ConnectionEstablished", |e| match e {
            Event::ConnectionEstablished {
                connection,
                peer,
                direction: Direction::Inbound,
                relay: None,
                ..
            } if *peer == to_our_peer(client_peer) => Some(*connection),
            _ => None,
        })
        .await;
        let seen = libp2p_identifies_and_pings(&mut client, &ours).await;
        assert_libp2p_saw_us(&seen, &ours);
        let rtt = ours.ping(inbound).await.expect("we ping libp2p back");
        assert!(rtt < Duration::from_secs(2), "rtt {rtt:?}");
    })
    .await;
}
