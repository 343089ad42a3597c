//! The relay sees only ciphertext: a distinctive plaintext pattern that B writes to A over a
//! relayed connection never appears in the bytes R forwards, while A reads it intact.

mod relay_world;

use std::time::Duration;

use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::RelayLimits;

use relay_world::{Content, Flow, open_stream_pair, reserved_trio, run_flows};

const BULK: &str = "/bulk/1.0.0";
const MARKER: &[u8] = b"DEP2P-PLAINTEXT-MARKER-0123456789";
const LEN: u64 = 1024 * 1024;
/// Records every byte of the circuit: the payload plus TLS, yamux and negotiation overhead.
const TAP: usize = 4 * 1024 * 1024;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn plaintext_written_over_a_relayed_connection_never_crosses_the_relay_in_the_clear() {
    let mut app = NodeConfig::default();
    app.protocol(BULK);
    let mut trio = reserved_trio(12, RelayLimits::default(), app);
    let (a, b, r) = (trio.a, trio.b, trio.r);
    trio.world.node(r).tap_forwarded(TAP);

    let (at_b, _) = trio.dial();
    let (send, recv) = open_stream_pair(&mut trio.world, b, a, at_b, BULK);
    let content = Content {
        seed: 7,
        marker: Some(MARKER.to_vec()),
    };
    let mut flows = [Flow::new(b, send, a, recv, LEN, content)];
    run_flows(&mut trio.world, &mut flows, Duration::from_secs(60));

    let (sent, received) = flows[0].digests();
    assert_eq!(flows[0].received(), LEN);
    assert_eq!(
        sent, received,
        "A read exactly what B wrote, markers included"
    );

    let tapped = trio.world.node(r).forwarded_tap();
    assert_eq!(tapped.len(), 2, "one circuit, two directions");
    let forwarded: usize = tapped.iter().map(Vec::len).sum();
    assert!(
        forwarded as u64 > LEN && forwarded < TAP,
        "the tap saw the whole circuit: {forwarded} bytes"
    );
    // Positive control: the upgrade negotiation happens in the clear, so the tap does see
    // plaintext when there is some.
    assert!(
        contains(&tapped[0], b"/tls/1.0.0"),
        "the tap records B's cleartext `/tls/1.0.0` proposal"
    );
    for (i, direction) in tapped.iter().enumerate() {
        assert!(
            !contains(direction, MARKER),
            "direction {i}: the relay forwarded B's plaintext marker in the clear"
        );
        assert!(
            !contains(direction, &MARKER[..12]),
            "direction {i}: even a marker prefix crosses the relay in the clear"
        );
        assert!(
            !contains(direction, BULK.as_bytes()),
            "direction {i}: the application protocol name is negotiated inside TLS"
        );
    }
}
