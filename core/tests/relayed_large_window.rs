//! `NodeConfig::relayed_stream_window` lets a relayed stream's yamux window grow past the 1 MiB
//! default (rust-libp2p's yamux grants far larger windows). With 16 MiB on both ends and QUIC
//! windows of 8 MiB toward the peers, a sender's writes are no longer paced by window updates:
//! everything moves on QUIC's wake-ups alone, intact and without waiting for a timer. (On real
//! sockets this setting exposed two stalls, a short QUIC write that registered no wake-up and a
//! circuit pump that took one packet per round; `stream_write_limits` covers the first.)

mod relay_world;

use std::time::Duration;

use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::RelayLimits;

use relay_world::{Content, Flow, open_stream_pair, reserved_trio, run_flows};

const BULK: &str = "/bulk/1.0.0";
const TOTAL: u64 = 32 * 1024 * 1024;

#[test]
fn a_large_relayed_window_moves_32_mib_without_waiting_for_a_timer() {
    let mut app = NodeConfig::default();
    app.protocol(BULK)
        .relayed_stream_window(16 * 1024 * 1024)
        .stream_receive_window(8 * 1024 * 1024)
        .connection_receive_window(32 * 1024 * 1024);
    let mut trio = reserved_trio(23, RelayLimits::default(), app);
    let (a, b) = (trio.a, trio.b);
    let (at_b, _at_a) = trio.dial();
    let (send, recv) = open_stream_pair(&mut trio.world, b, a, at_b, BULK);
    let mut flows = [Flow::new(
        b,
        send,
        a,
        recv,
        TOTAL,
        Content {
            seed: 0x5eed,
            marker: None,
        },
    )];

    let start = trio.world.now();
    run_flows(&mut trio.world, &mut flows, Duration::from_secs(60));
    let taken = trio.world.now() - start;

    let flow = &flows[0];
    assert_eq!(flow.received(), TOTAL, "every byte arrived");
    let (sent, received) = flow.digests();
    assert_eq!(sent, received, "SHA-256 of sent and received");
    // The links carry it in well under a second of virtual time; a pump left waiting for an
    // event stalls until the next keep-alive (5 s) or later, once per stall.
    assert!(
        taken < Duration::from_secs(2),
        "32 MiB took {taken:?} of virtual time"
    );
}
