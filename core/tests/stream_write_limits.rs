//! A write that QUIC cuts short at the connection's flow-control window (smaller than the
//! stream's) must still be followed by a `Writable` wake-up once the window moves. quinn-proto
//! raises it only for a stream a write found blocked, so every writer inside the node (the
//! relay's bridges, a relayed connection's circuit) retries a short write until quinn says
//! blocked. Without that, a bridge waits for a wake-up that never comes and the circuit stalls
//! until an unrelated packet (a keep-alive, seconds later) runs it again.

mod relay_world;

use std::time::Duration;

use dep2p_core::node::NodeConfig;

use relay_world::one_relayed_transfer;

const BULK: &str = "/bulk/1.0.0";
const TOTAL: u64 = 8 * 1024 * 1024;

#[test]
fn a_connection_window_smaller_than_the_stream_window_does_not_stall_a_circuit() {
    let mut app = NodeConfig::default();
    app.protocol(BULK)
        .stream_receive_window(1024 * 1024)
        .connection_receive_window(128 * 1024);
    let taken = one_relayed_transfer(29, app, BULK, TOTAL, Duration::from_secs(120));
    assert!(
        taken < Duration::from_secs(2),
        "8 MiB took {taken:?} of virtual time"
    );
}
