//! Bulk data over a relayed connection: A reserves on relay R (its voucher verified), B dials A
//! through R, and three streams each carry 16 MiB in both directions at once, written under
//! backpressure; every byte arrives intact and in order.

mod relay_world;

use std::time::Duration;

use dep2p_core::node::{Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::LinkConfig;

use relay_world::{Content, Flow, open_stream_pair, reserved_trio, run_flows};

const BULK: &str = "/bulk/1.0.0";
const PER_DIRECTION: u64 = 16 * 1024 * 1024;

#[test]
fn three_streams_move_16_mib_each_way_through_a_relay_intact() {
    let mut app = NodeConfig::default();
    app.protocol(BULK);
    let mut trio = reserved_trio(11, RelayLimits::default(), app);
    let (a, b, r, a_r) = (trio.a, trio.b, trio.r, trio.a_r);

    // The reservation was accepted only after A verified R's voucher (relay = R, peer = A,
    // not expired); its circuit address names R.
    let relay_id = trio.world.peer_id(r);
    let accepted = trio
        .world
        .events(a)
        .find_map(|e| match e {
            Event::ReservationAccepted {
                connection,
                relay,
                circuit_addrs,
                renewed: false,
                ..
            } if *connection == a_r => Some((*relay, circuit_addrs.clone())),
            _ => None,
        })
        .expect("ReservationAccepted");
    assert_eq!(accepted.0, relay_id);
    assert!(
        accepted.1.iter().all(|addr| addr
            .to_string()
            .ends_with(&format!("/p2p/{relay_id}/p2p-circuit"))),
        "circuit addresses name the relay: {:?}",
        accepted.1
    );
    assert!(trio.world.node(a).reservation(a_r).is_some());

    let (at_b, _at_a) = trio.dial();
    let mut flows = Vec::new();
    for i in 0..3u64 {
        let (send, recv) = open_stream_pair(&mut trio.world, b, a, at_b, BULK);
        let seed = 0x1000 + i;
        flows.push(Flow::new(
            b,
            send,
            a,
            recv,
            PER_DIRECTION,
            Content { seed, marker: None },
        ));
        flows.push(Flow::new(
            a,
            recv,
            b,
            send,
            PER_DIRECTION,
            Content {
                seed: !seed,
                marker: None,
            },
        ));
    }

    #[allow(clippy::disallowed_methods)] // wall time only for the report below
    let started = std::time::Instant::now();
    let virtual_start = trio.world.now();
    run_flows(&mut trio.world, &mut flows, Duration::from_secs(600));
    let virtual_taken = trio.world.now() - virtual_start;
    eprintln!(
        "6 × 16 MiB through the relay: {:?} virtual, {:?} CPU wall time",
        virtual_taken,
        started.elapsed()
    );

    for flow in &flows {
        assert_eq!(
            flow.received(),
            PER_DIRECTION,
            "{} delivered all",
            flow.send
        );
        let (sent, received) = flow.digests();
        assert_eq!(
            sent, received,
            "{}: SHA-256 of sent and received",
            flow.send
        );
    }
    assert!(
        flows.iter().any(|f| f.blocked_writes > 0),
        "writers were held back by flow control"
    );
    let stats = trio.world.node(r).relay_stats().expect("R is a relay");
    assert!(
        stats.bytes_relayed > 6 * PER_DIRECTION,
        "R forwarded all of it (plus TLS and yamux framing): {}",
        stats.bytes_relayed
    );
    assert!(
        stats.bridge_buffered <= 2 * 16 * 1024,
        "at most one chunk per direction waits in the bridge"
    );
}

#[test]
fn relayed_streams_stay_intact_over_lossy_jittery_links() {
    let mut app = NodeConfig::default();
    app.protocol(BULK);
    let mut trio = reserved_trio(13, RelayLimits::default(), app);
    // From here on every hop loses 3% of datagrams and reorders some: QUIC on each hop
    // repairs it, so the circuit's byte stream (TLS records, yamux frames) stays exact.
    trio.world.set_link(LinkConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(15),
        loss: 0.03,
    });
    let (a, b) = (trio.a, trio.b);
    let (at_b, _) = trio.dial();
    let mut flows = Vec::new();
    for i in 0..3u64 {
        let (send, recv) = open_stream_pair(&mut trio.world, b, a, at_b, BULK);
        for (writer, w, reader, r, seed) in [(b, send, a, recv, i), (a, recv, b, send, !i)] {
            flows.push(Flow::new(
                writer,
                w,
                reader,
                r,
                2 * 1024 * 1024,
                Content { seed, marker: None },
            ));
        }
    }
    run_flows(&mut trio.world, &mut flows, Duration::from_secs(600));
    assert!(
        trio.world.net_stats().lost > 0,
        "the links did lose datagrams"
    );
    for flow in &flows {
        let (sent, received) = flow.digests();
        assert_eq!(flow.received(), 2 * 1024 * 1024);
        assert_eq!(
            sent, received,
            "{}: SHA-256 of sent and received",
            flow.send
        );
    }
}
