//! Our client uses a rust-libp2p relay server: node 1 reserves on it (we read libp2p's
//! reservation), node 2 dials node 1 through it, the two upgrade the circuit with /tls/1.0.0
//! and /yamux/1.0.0, and data flows both ways, with streams opened from both ends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dep2p_core::node::{Direction, Event};
use libp2p::multiaddr::Protocol;
use libp2p::relay;
use libp2p::swarm::SwarmEvent;

use crate::common::*;

/// rust-libp2p's default is 128 KiB, counted over both directions together: far too small for
/// this exchange. Raised here (see the README's interop section).
const CIRCUIT_BYTES: u64 = 16 * 1024 * 1024;
const CIRCUIT_DURATION: Duration = Duration::from_secs(600);
const RESERVATION_DURATION: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_nodes_reserve_on_a_libp2p_relay_and_exchange_data_through_it() {
    bounded(Duration::from_secs(60), async {
        let config = relay::Config {
            max_circuit_bytes: CIRCUIT_BYTES,
            max_circuit_duration: CIRCUIT_DURATION,
            reservation_duration: RESERVATION_DURATION,
            ..relay::Config::default()
        };
        let (mut relay_node, relay_addr) = libp2p_relay(config).await;
        let relay_peer = relay_node.peer_id;
        let relay_socket = socket_of(&relay_addr);

        // Node 1 reserves.
        let n1 = our_node();
        let mut n1_events = n1.events();
        let n1_relay = n1
            .dial(relay_socket, to_our_peer(relay_peer))
            .await
            .expect("node 1 dials the libp2p relay over QUIC");
        let reservation = n1.reserve(n1_relay).await.expect("libp2p relay accepts");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert_eq!(reservation.relay, to_our_peer(relay_peer));
        let lifetime = reservation.expire_unix_secs.saturating_sub(now);
        assert!(
            lifetime + 5 >= RESERVATION_DURATION.as_secs()
                && lifetime <= RESERVATION_DURATION.as_secs(),
            "expire {} is about now + {RESERVATION_DURATION:?} (now {now})",
            reservation.expire_unix_secs
        );
        let expected_circuit = relay_addr
            .clone()
            .with(Protocol::P2p(relay_peer))
            .with(Protocol::P2pCircuit);
        assert!(
            reservation
                .circuit_addrs
                .iter()
                .any(|a| to_libp2p_addr(a) == expected_circuit),
            "{expected_circuit} in {:?}",
            reservation.circuit_addrs
        );
        let limit = reservation.limit.expect("libp2p sends a limit");
        assert_eq!(limit.data_bytes, Some(CIRCUIT_BYTES));
        assert_eq!(
            limit.duration_secs.map(u64::from),
            Some(CIRCUIT_DURATION.as_secs())
        );
        let n1_peer = to_libp2p_peer(n1.peer_id());
        relay_node
            .expect("relay ReservationReqAccepted", |e| match e {
                SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(
                    relay::Event::ReservationReqAccepted {
                        src_peer_id,
                        renewed: false,
                    },
                )) if *src_peer_id == n1_peer => Some(()),
                _ => None,
            })
            .await;

        // Node 2 dials node 1 through the libp2p relay.
        let n2 = our_node();
        let mut n2_events = n2.events();
        let n2_relay = n2
            .dial(relay_socket, to_our_peer(relay_peer))
            .await
            .expect("node 2 dials the libp2p relay");
        let circuit = n2
            .dial_through_relay(n2_relay, n1.peer_id())
            .await
            .expect("circuit through the libp2p relay, TLS + yamux upgraded");
        let n2_peer = to_libp2p_peer(n2.peer_id());
        relay_node
            .expect("relay CircuitReqAccepted", |e| match e {
                SwarmEvent::Behaviour(RelayBehaviourEvent::Relay(
                    relay::Event::CircuitReqAccepted {
                        src_peer_id,
                        dst_peer_id,
                    },
                )) if *src_peer_id == n2_peer && *dst_peer_id == n1_peer => Some(()),
                _ => None,
            })
            .await;
        let n2_peer_ours = n2.peer_id();
        let inbound = expect_our_event(&mut n1_events, "relayed inbound connection", |e| match e {
            Event::ConnectionEstablished {
                connection,
                peer,
                direction: Direction::Inbound,
                relay: Some(via),
                ..
            } if *peer == n2_peer_ours && *via == to_our_peer(relay_peer) => Some(*connection),
            _ => None,
        })
        .await;
        let n1_peer_ours = n1.peer_id();
        expect_our_event(&mut n2_events, "relayed outbound connection", |e| match e {
            Event::ConnectionEstablished {
                connection,
                peer,
                direction: Direction::Outbound,
                relay: Some(_),
                ..
            } if *connection == circuit && *peer == n1_peer_ours => Some(()),
            _ => None,
        })
        .await;

        // 1 MiB out and back from each end: 4 MiB crosses the relay, far above its default.
        let data = payload(1024 * 1024, 2);
        let back = our_echo_round_trip(&n2, circuit, &data).await;
        assert!(
            back == data,
            "node 1's echo through the libp2p relay differs"
        );
        let data = payload(1024 * 1024, 3);
        let back = our_echo_round_trip(&n1, inbound, &data).await;
        assert!(
            back == data,
            "node 2's echo through the libp2p relay differs"
        );

        // The circuit is a full connection: ping and identify work over it too.
        n2.ping(circuit)
            .await
            .expect("ping over the libp2p circuit");
    })
    .await;
}
