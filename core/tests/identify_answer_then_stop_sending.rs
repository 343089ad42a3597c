//! A peer that answers our identify request the way rust-libp2p does over QUIC: it confirms the
//! protocol, writes its record, finishes, and drops the stream, which makes quinn send
//! STOP_SENDING for our side in the same flight as the answer. The STOP_SENDING ends only our
//! sending side; the answer must still be read (found by the rust-libp2p interop tests: we used
//! to fail the stream as "reset by peer during negotiation").

mod common;

use std::time::Duration;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{Event, NodeConfig};
use dep2p_core::protocols::IDENTIFY;
use dep2p_core::protocols::identify::{self, IdentifyInfo};
use dep2p_core::testing::World;
use dep2p_core::tls::ALPN;
use quinn_proto::VarInt;

use common::SETTLE;
use common::raw::{RawPeer, client_tls, good_identity};

/// A multistream-select line: uvarint length (newline included), the text, `\n`.
fn frame(line: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(line.len() + 1).expect("short line")];
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out
}

#[test]
fn identify_answer_followed_by_stop_sending_is_still_read() {
    let mut world = World::new(31);
    let node = world.add_node(NodeConfig::default());
    let tls = client_tls(
        &world,
        &good_identity(9),
        Some(world.peer_id(node)),
        &[ALPN],
    );
    let mut peer = RawPeer::connect(&mut world, node, 5000, tls);
    assert!(
        peer.run_until(&mut world, SETTLE, |_, p| p.is_connected()),
        "raw peer connects"
    );
    // The node asks for our identify record as soon as the connection is up.
    let mut stream = None;
    for _ in 0..100 {
        stream = peer.accept_bi();
        if stream.is_some() {
            break;
        }
        peer.run_for(&mut world, Duration::from_millis(10));
    }
    let stream = stream.expect("the node opens an identify stream");
    let mut proposal = Vec::new();
    let mut expected = frame("/multistream/1.0.0");
    expected.extend_from_slice(&frame(IDENTIFY));
    for _ in 0..100 {
        proposal.extend_from_slice(&peer.read(stream).0);
        if proposal.len() >= expected.len() {
            break;
        }
        peer.run_for(&mut world, Duration::from_millis(10));
    }
    assert_eq!(proposal, expected, "the node proposes identify");

    // Answer, finish and stop reading, all before the next flight goes out.
    let info = IdentifyInfo {
        public_key: keypair_from_seed([9; 32]).public(),
        protocol_version: "ipfs/0.1.0".into(),
        agent_version: "stop-sending-peer/1".into(),
        listen_addrs: Vec::new(),
        observed_addr: None,
        protocols: vec![IDENTIFY.into()],
    };
    let mut answer = frame("/multistream/1.0.0");
    answer.extend_from_slice(&frame(IDENTIFY));
    answer.extend_from_slice(&identify::encode(&info));
    peer.write(stream, &answer);
    peer.finish(stream);
    peer.conn
        .recv_stream(stream)
        .stop(VarInt::from_u32(0))
        .expect("stream open");
    peer.run_for(&mut world, Duration::from_secs(1));

    let seen: Vec<_> = world.events(node).collect();
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Identified { info, .. } if info.agent_version == "stop-sending-peer/1"
        )),
        "the answer is read despite the STOP_SENDING: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::IdentifyFailed { .. })),
        "{seen:?}"
    );
    assert_eq!(world.node(node).stats().streams, 0, "nothing left behind");
}
