//! The relay forwards a batch of received packets as a few large pieces, not one piece per
//! packet: quinn-proto scans the pieces a stream has in flight for every packet it builds, so
//! packet-sized pieces cost the relay CPU in proportion to the bytes in flight.

mod relay_world;

use std::time::Duration;

use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::RelayLimits;

use relay_world::{Content, Flow, open_stream_pair, reserved_trio, run_flows};

const BULK: &str = "/bulk/1.0.0";
const LEN: u64 = 2 * 1024 * 1024;
/// Only the piece count matters here; the tap keeps a few bytes.
const TAP: usize = 1024;
/// The largest QUIC packet on the world's links carries less than this of one stream.
const PACKET_PAYLOAD: u64 = 1_500;

#[test]
fn a_relay_joins_the_packets_of_one_batch_into_one_forwarded_piece() {
    let mut app = NodeConfig::default();
    app.protocol(BULK);
    let mut trio = reserved_trio(21, RelayLimits::default(), app);
    let (a, b, r) = (trio.a, trio.b, trio.r);
    trio.world.node(r).tap_forwarded(TAP);

    let (at_b, _) = trio.dial();
    let (send, recv) = open_stream_pair(&mut trio.world, b, a, at_b, BULK);
    let mut flows = [Flow::new(
        b,
        send,
        a,
        recv,
        LEN,
        Content {
            seed: 3,
            marker: None,
        },
    )];
    run_flows(&mut trio.world, &mut flows, Duration::from_secs(60));
    let (sent, received) = flows[0].digests();
    assert_eq!(flows[0].received(), LEN);
    assert_eq!(sent, received, "A read exactly what B wrote");

    let circuits = trio.world.node(r).relay_circuits();
    assert_eq!(circuits.len(), 1, "one circuit");
    let forwarded = circuits[0].bytes[0];
    let pieces = trio.world.node(r).forwarded_pieces();
    assert_eq!(pieces.len(), 1, "one tapped circuit");
    let pieces = pieces[0][0];
    assert!(
        forwarded >= LEN && pieces > 0,
        "the relay forwarded the transfer: {forwarded} bytes in {pieces} pieces"
    );
    // One piece per packet would be at most PACKET_PAYLOAD bytes each; B sends batches of
    // packets that arrive together, and the relay forwards each batch as one piece.
    let average = forwarded / pieces;
    assert!(
        average > 4 * PACKET_PAYLOAD,
        "pieces average {average} bytes ({pieces} pieces for {forwarded} bytes): \
         the relay forwards packet by packet"
    );
}
