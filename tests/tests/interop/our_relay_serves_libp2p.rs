//! Our relay serves rust-libp2p clients: A reserves (the reservation's limit, addrs and expire
//! as libp2p reads them), B dials A through our relay, and they exchange data over the circuit
//! (TLS + yamux end to end between the two libp2p peers; our relay only bridges bytes).

use std::time::{Duration, Instant};

use dep2p_core::relay::limits::RelayLimits;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, relay};

use crate::common::*;

/// Short, so the test sees libp2p renew at three quarters of the expire we sent.
const TTL: Duration = Duration::from_secs(4);
const CIRCUIT_BYTES: u64 = 8 * 1024 * 1024;
const CIRCUIT_DURATION: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libp2p_clients_reserve_on_our_relay_and_exchange_data_through_it() {
    bounded(Duration::from_secs(60), async {
        let relay_node = our_relay(
            RelayLimits::default()
                .reservation_ttl(TTL)
                .max_circuit_bytes(CIRCUIT_BYTES)
                .max_circuit_duration(CIRCUIT_DURATION),
        );
        let relay_peer = to_libp2p_peer(relay_node.peer_id());
        let relay_addr = our_addr(&relay_node);
        assert_eq!(relay_addr.iter().last(), Some(Protocol::P2p(relay_peer)));

        // A reserves: libp2p's relay transport dials our relay and sends RESERVE.
        let mut a = libp2p_client();
        let a_peer = a.node.peer_id;
        let listen = relay_addr.clone().with(Protocol::P2pCircuit);
        let reserved_at = Instant::now();
        a.node
            .call(move |swarm| swarm.listen_on(listen))
            .await
            .expect("listen on the circuit address");
        // The behaviour event and the listener's address come in either order.
        let a_circuit_addr = relay_addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(a_peer));
        let mut limit = None;
        let mut announced = None;
        while limit.is_none() || announced.is_none() {
            let seen = a
                .node
                .expect("ReservationReqAccepted and NewListenAddr", |e| match e {
                    SwarmEvent::Behaviour(ClientBehaviourEvent::RelayClient(
                        relay::client::Event::ReservationReqAccepted {
                            relay_peer_id,
                            renewal: false,
                            limit,
                        },
                    )) if *relay_peer_id == relay_peer => Some(Ok(*limit)),
                    SwarmEvent::NewListenAddr { address, .. } => Some(Err(address.clone())),
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        panic!("libp2p's reservation on our relay failed: {reason:?}")
                    }
                    _ => None,
                })
                .await;
            match seen {
                Ok(l) => limit = Some(l.expect("our relay sends a limit")),
                Err(address) => announced = Some(address),
            }
        }
        let limit = limit.expect("set above");
        assert_eq!(limit.data_in_bytes(), Some(CIRCUIT_BYTES));
        assert_eq!(limit.duration(), Some(CIRCUIT_DURATION));
        // The reservation's addrs, as libp2p turned them into listen addresses.
        assert_eq!(
            announced,
            Some(a_circuit_addr.clone()),
            "reservation addrs carry /p2p/<relay>"
        );
        let snapshot = relay_node.snapshot().await.expect("relay snapshot");
        assert_eq!(snapshot.relay.as_ref().map(|r| r.reservations), Some(1));

        // libp2p renews at 3/4 of (expire - now): proves `expire` is unix seconds in the future.
        a.node
            .expect("a renewal ReservationReqAccepted", |e| match e {
                SwarmEvent::Behaviour(ClientBehaviourEvent::RelayClient(
                    relay::client::Event::ReservationReqAccepted {
                        relay_peer_id,
                        renewal: true,
                        ..
                    },
                )) if *relay_peer_id == relay_peer => Some(()),
                _ => None,
            })
            .await;
        let renewed_after = reserved_at.elapsed();
        assert!(
            renewed_after >= Duration::from_secs(1) && renewed_after < TTL,
            "renewed after {renewed_after:?}, TTL {TTL:?}"
        );

        // B dials A through our relay.
        let mut b = libp2p_client();
        let b_peer = b.node.peer_id;
        let target = a_circuit_addr.clone();
        b.node
            .call(move |swarm| swarm.dial(target))
            .await
            .expect("dial starts");
        b.node
            .expect("relayed ConnectionEstablished with A", |e| match e {
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if *peer_id == a_peer => {
                    assert!(
                        endpoint
                            .get_remote_address()
                            .iter()
                            .any(|p| p == Protocol::P2pCircuit),
                        "relayed: {endpoint:?}"
                    );
                    Some(())
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("B's dial through our relay failed: {error}")
                }
                _ => None,
            })
            .await;
        let b_limit = a
            .node
            .expect("InboundCircuitEstablished from B", |e| match e {
                SwarmEvent::Behaviour(ClientBehaviourEvent::RelayClient(
                    relay::client::Event::InboundCircuitEstablished { src_peer_id, limit },
                )) if *src_peer_id == b_peer => Some(*limit),
                _ => None,
            })
            .await
            .expect("STOP carries the limit");
        assert_eq!(b_limit.data_in_bytes(), Some(CIRCUIT_BYTES));

        // Identify over the circuit: B learns A's key through TLS + yamux over our relay.
        b.node
            .expect("identify of A over the circuit", |e| match e {
                SwarmEvent::Behaviour(ClientBehaviourEvent::Identify(
                    identify::Event::Received { peer_id, info, .. },
                )) if *peer_id == a_peer => {
                    assert_eq!(info.public_key.to_peer_id(), a_peer);
                    Some(())
                }
                _ => None,
            })
            .await;

        // Data both ways: B's bytes to A's echo and back.
        let data = payload(512 * 1024, 1);
        let stream = b
            .control
            .open_stream(a_peer, ECHO_PROTOCOL)
            .await
            .expect("B opens echo on A over the circuit");
        let back = libp2p_echo_round_trip(stream, &data).await;
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the echo through our relay differs");

        let stats = relay_node
            .snapshot()
            .await
            .expect("relay snapshot")
            .relay
            .expect("relay stats");
        assert_eq!(stats.circuits_opened, 1);
        assert!(
            stats.bytes_relayed >= 2 * data.len() as u64,
            "relayed {} bytes",
            stats.bytes_relayed
        );
    })
    .await;
}
