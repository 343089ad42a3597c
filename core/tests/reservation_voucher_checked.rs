//! A client verifies the relay's reservation voucher: a fake relay (a raw QUIC peer answering
//! HOP by hand) that grants a reservation with a voucher made out to another peer, or signed by
//! another relay, gets `ReservationFailed` and no reservation; the same fake relay with a
//! correct voucher is accepted, so the refusals are about the voucher alone.

mod common;

use std::time::Duration;

use dep2p_core::identity::{PeerId, keypair_from_seed};
use dep2p_core::multistream::{Listener, Progress};
use dep2p_core::node::{ConnectionId, Event, NodeConfig};
use dep2p_core::relay::HOP_PROTOCOL;
use dep2p_core::relay::voucher::Voucher;
use dep2p_core::relay::wire::{CircuitLimit, HopResponse, ReservationInfo};
use dep2p_core::testing::{WORLD_UNIX_START, World};
use dep2p_core::tls::ALPN;
use quinn_proto::Dir;

use common::SETTLE;
use common::raw::{RawPeer, client_tls, good_identity};

/// Host key seed of the fake relay (`good_identity(RELAY_SEED)` is its TLS identity).
const RELAY_SEED: u8 = 9;

/// What the fake relay puts in the voucher: `(signer seed, relay, peer)` given the real relay
/// and the client.
type VoucherFor = fn(PeerId, PeerId) -> (u8, PeerId, PeerId);

/// The fake relay connects to A; A reserves over that connection and the fake relay answers with a voucher built by `voucher_for`. Returns A's events on that
/// connection and whether A holds a reservation afterwards.
fn reserve_on_fake_relay(seed: u64, voucher_for: VoucherFor) -> (Vec<Event>, bool) {
    let mut world = World::new(seed);
    let a = world.add_node(NodeConfig::default());
    let a_id = world.peer_id(a);
    let relay_key = keypair_from_seed([RELAY_SEED; 32]);
    let relay_id = relay_key.public().to_peer_id();
    let tls = client_tls(&world, &good_identity(RELAY_SEED), Some(a_id), &[ALPN]);
    let mut relay = RawPeer::connect(&mut world, a, 5000, tls);
    assert!(relay.run_until(&mut world, SETTLE, |w, r| r.is_connected()
        && connected_to_peer(w, a, relay_id)));
    let connection = established_with(&world, a, relay_id);
    world
        .command(a, |n, now| n.reserve(now, connection))
        .expect("reserve starts");

    let (signer, voucher_relay, voucher_peer) = voucher_for(relay_id, a_id);
    let expire = (WORLD_UNIX_START + world.elapsed()).as_secs() + 3600;
    let voucher = Voucher {
        relay: voucher_relay,
        peer: voucher_peer,
        expiration_unix_secs: expire,
    }
    .sign(&keypair_from_seed([signer; 32]))
    .expect("the signer is the voucher's relay");
    let answer = HopResponse::reservation_accepted(
        ReservationInfo {
            expire_unix_secs: expire,
            addrs: vec![
                format!("/ip4/127.0.0.2/udp/5000/quic-v1/p2p/{relay_id}")
                    .parse()
                    .expect("multiaddr"),
            ],
            voucher: Some(voucher),
        },
        Some(CircuitLimit::default()),
    )
    .encode();

    // Serve HOP (only) on every stream A opens; answer the RESERVE once negotiated.
    let mut streams = Vec::new();
    for _ in 0..100 {
        relay.run_for(&mut world, Duration::from_millis(50));
        while let Some(id) = relay.conn.streams().accept(Dir::Bi) {
            streams.push((id, Listener::new(vec![HOP_PROTOCOL.to_owned()]), false));
        }
        for (id, listener, answered) in &mut streams {
            let (data, _) = relay.read(*id);
            if data.is_empty() || *answered {
                continue;
            }
            let progress = listener.handle_input(&data);
            let mut out = Vec::new();
            while let Some(bytes) = listener.poll_output() {
                out.extend_from_slice(&bytes);
            }
            if let Ok(Progress::Negotiated(negotiated)) = progress
                && negotiated.protocol == HOP_PROTOCOL
            {
                out.extend_from_slice(&answer);
                *answered = true;
            }
            if !out.is_empty() {
                relay.write(*id, &out);
            }
        }
        if reservation_outcome(&world, a, connection) {
            break;
        }
    }
    let events = world
        .events(a)
        .filter(|e| {
            matches!(e,
            Event::ReservationAccepted { connection: c, .. }
            | Event::ReservationFailed { connection: c, .. }
            | Event::ReservationLost { connection: c, .. } if *c == connection)
        })
        .cloned()
        .collect();
    let held = world.node(a).reservation(connection).is_some();
    (events, held)
}

fn reservation_outcome(world: &World, at: usize, connection: ConnectionId) -> bool {
    world.events(at).any(|e| {
        matches!(e,
            Event::ReservationAccepted { connection: c, .. }
            | Event::ReservationFailed { connection: c, .. } if *c == connection)
    })
}

fn established_with(world: &World, at: usize, peer: PeerId) -> ConnectionId {
    world
        .events(at)
        .find_map(|e| match e {
            Event::ConnectionEstablished {
                connection,
                peer: p,
                ..
            } if *p == peer => Some(*connection),
            _ => None,
        })
        .expect("A reports the connection")
}

fn connected_to_peer(world: &World, at: usize, peer: PeerId) -> bool {
    world
        .events(at)
        .any(|e| matches!(e, Event::ConnectionEstablished { peer: p, .. } if *p == peer))
}

fn failure_reason(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        Event::ReservationFailed { reason, .. } => Some(reason.as_str()),
        _ => None,
    })
}

#[test]
fn a_correct_voucher_from_the_fake_relay_is_accepted() {
    let (events, held) = reserve_on_fake_relay(51, |relay, peer| (RELAY_SEED, relay, peer));
    assert!(
        matches!(
            events.as_slice(),
            [Event::ReservationAccepted { renewed: false, .. }]
        ),
        "control: the hand-made answer is a valid reservation: {events:?}"
    );
    assert!(held);
}

#[test]
fn a_voucher_made_out_to_another_peer_is_refused() {
    let (events, held) = reserve_on_fake_relay(52, |relay, _peer| {
        let other = keypair_from_seed([77; 32]).public().to_peer_id();
        (RELAY_SEED, relay, other)
    });
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ReservationAccepted { .. })),
        "no reservation from a voucher for someone else: {events:?}"
    );
    let reason = failure_reason(&events).expect("ReservationFailed");
    assert!(
        reason.contains("bad voucher") && reason.contains("another peer"),
        "the failure names the voucher's peer: {reason}"
    );
    assert!(!held);
}

#[test]
fn a_voucher_signed_by_another_relay_is_refused() {
    let (events, held) = reserve_on_fake_relay(53, |_relay, peer| {
        let other = keypair_from_seed([78; 32]).public().to_peer_id();
        (78, other, peer)
    });
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ReservationAccepted { .. })),
        "no reservation from another relay's voucher: {events:?}"
    );
    let reason = failure_reason(&events).expect("ReservationFailed");
    assert!(
        reason.contains("bad voucher") && reason.contains("another relay"),
        "the failure names the voucher's relay: {reason}"
    );
    assert!(!held);
}
