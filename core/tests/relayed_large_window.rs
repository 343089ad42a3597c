//! `NodeConfig::relayed_stream_window` lets a relayed stream's yamux window grow past the 1 MiB
//! default (rust-libp2p's yamux grants far larger windows). With 16 MiB on both ends and QUIC
//! windows of 8 MiB toward the peers, a sender's writes are no longer paced by window updates:
//! everything moves on QUIC's wake-ups alone, intact and without waiting for a timer. (On real
//! sockets this setting exposed two stalls, a short QUIC write that registered no wake-up and a
//! circuit pump that took one packet per round; `stream_write_limits` covers the first.)

mod relay_world;

use std::time::Duration;

use dep2p_core::node::NodeConfig;

use relay_world::one_relayed_transfer;

const BULK: &str = "/bulk/1.0.0";
const TOTAL: u64 = 32 * 1024 * 1024;

#[test]
fn a_large_relayed_window_moves_32_mib_without_waiting_for_a_timer() {
    let mut app = NodeConfig::default();
    app.protocol(BULK)
        .relayed_stream_window(16 * 1024 * 1024)
        .stream_receive_window(8 * 1024 * 1024)
        .connection_receive_window(32 * 1024 * 1024);
    let taken = one_relayed_transfer(23, app, BULK, TOTAL, Duration::from_secs(120));
    assert!(
        taken < Duration::from_secs(2),
        "32 MiB took {taken:?} of virtual time"
    );
}
