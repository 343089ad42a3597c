//! Mixed end to end through our relay: a rust-libp2p peer (relay client with TLS + yamux) and
//! our node both reserve on our relay, then each dials the other through it and checks an echo
//! of its own bytes. The circuit upgrade (multistream-select, /tls/1.0.0, /yamux/1.0.0) runs
//! between libp2p and our core in both roles.

use std::time::Duration;

use dep2p_core::node::{Direction, Event};
use dep2p_core::relay::limits::RelayLimits;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, relay};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_peer_and_our_node_dial_each_other_through_our_relay() {
    bounded(Duration::from_secs(60), async {
        let relay_node = our_relay(RelayLimits::default());
        let relay_peer = to_libp2p_peer(relay_node.peer_id());
        let relay_addr = our_addr(&relay_node);

        // Our node reserves.
        let ours = our_node();
        let mut events = ours.events();
        let our_relay_conn = ours
            .dial(relay_node.local_addr(), relay_node.peer_id())
            .await
            .expect("our node dials our relay");
        ours.reserve(our_relay_conn)
            .await
            .expect("our node reserves");

        // The libp2p peer reserves.
        let mut peer = libp2p_client();
        let peer_id = peer.node.peer_id;
        let listen = relay_addr.clone().with(Protocol::P2pCircuit);
        peer.node
            .call(move |swarm| swarm.listen_on(listen))
            .await
            .expect("listen on the circuit");
        peer.node
            .expect("ReservationReqAccepted", |e| match e {
                SwarmEvent::Behaviour(ClientBehaviourEvent::RelayClient(
                    relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
                )) if *relay_peer_id == relay_peer => Some(()),
                SwarmEvent::ListenerClosed { reason, .. } => {
                    panic!("reservation failed: {reason:?}")
                }
                _ => None,
            })
            .await;

        // 1. libp2p dials our node through our relay.
        let our_peer = to_libp2p_peer(ours.peer_id());
        let target = relay_addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(our_peer));
        peer.node
            .call(move |swarm| swarm.dial(target))
            .await
            .expect("dial starts");
        peer.node
            .expect("relayed ConnectionEstablished with our node", |e| match e {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == our_peer => {
                    Some(())
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("libp2p's dial to our node through our relay failed: {error}")
                }
                _ => None,
            })
            .await;
        let peer_ours = to_our_peer(peer_id);
        let relay_ours = relay_node.peer_id();
        let inbound = expect_our_event(&mut events, "relayed inbound from libp2p", |e| match e {
            Event::ConnectionEstablished {
                connection,
                peer,
                direction: Direction::Inbound,
                relay: Some(via),
                ..
            } if *peer == peer_ours && *via == relay_ours => Some(*connection),
            _ => None,
        })
        .await;
        // Identify ran over the relayed connection in both directions.
        let info = expect_our_event(
            &mut events,
            "identify of libp2p over the circuit",
            |e| match e {
                Event::Identified { connection, info } if *connection == inbound => {
                    Some(info.clone())
                }
                _ => None,
            },
        )
        .await;
        assert_eq!(info.agent_version, LIBP2P_AGENT);
        assert_eq!(info.public_key.to_peer_id(), peer_ours);
        peer.node
            .expect("identify of our node over the circuit", |e| match e {
                SwarmEvent::Behaviour(ClientBehaviourEvent::Identify(
                    identify::Event::Received { peer_id, info, .. },
                )) if *peer_id == our_peer => {
                    assert!(info.agent_version.starts_with("dep2p/"));
                    Some(())
                }
                _ => None,
            })
            .await;
        let data = payload(512 * 1024, 4);
        let stream = peer
            .control
            .open_stream(our_peer, ECHO_PROTOCOL)
            .await
            .expect("libp2p opens our echo over the circuit");
        let back = libp2p_echo_round_trip(stream, &data).await;
        assert_eq!(back.len(), data.len());
        assert!(back == data, "our node's echo to libp2p differs");

        // 2. Our node dials the libp2p peer through our relay (a second, separate circuit).
        let circuit = ours
            .dial_through_relay(our_relay_conn, peer_ours)
            .await
            .expect("our node dials libp2p through our relay");
        assert_ne!(circuit, inbound);
        let our_peer_ = our_peer;
        peer.node
            .expect("InboundCircuitEstablished from our node", |e| match e {
                SwarmEvent::Behaviour(ClientBehaviourEvent::RelayClient(
                    relay::client::Event::InboundCircuitEstablished { src_peer_id, .. },
                )) if *src_peer_id == our_peer_ => Some(()),
                _ => None,
            })
            .await;
        let data = payload(512 * 1024, 5);
        let back = our_echo_round_trip(&ours, circuit, &data).await;
        assert!(back == data, "libp2p's echo to our node differs");
        let rtt = ours
            .ping(circuit)
            .await
            .expect("ping libp2p over the circuit");
        assert!(rtt < Duration::from_secs(2), "rtt {rtt:?}");

        let stats = relay_node
            .snapshot()
            .await
            .expect("snapshot")
            .relay
            .expect("relay stats");
        assert_eq!(stats.reservations, 2);
        assert_eq!(stats.circuits_opened, 2);
    })
    .await;
}
