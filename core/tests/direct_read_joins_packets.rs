//! A read of a direct stream returns everything received and waiting, not one packet's piece:
//! quinn-proto keeps one piece per received STREAM frame, and an application that pays a round
//! trip per read (the tokio adapter) would otherwise move about 1.2 KiB per round trip. The
//! peer's finish met after the last bytes is kept for the next read, even when our own side
//! finishes in between, so no end is lost and no stream is forgotten early.

mod common;

use dep2p_core::node::{NodeConfig, ReadOutcome, StreamError, StreamHandle};
use dep2p_core::testing::{LinkConfig, World};

use common::{SETTLE, connected_pair, negotiated_stream};

const BULK: &str = "/bulk/1.0.0";
/// Several hundred packets' worth, within the default 1 MiB stream window.
const PAYLOAD: usize = 200 * 1024;

fn bulk_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.protocol(BULK);
    config
}

fn payload() -> Vec<u8> {
    (0..PAYLOAD as u32).map(|i| (i % 251) as u8).collect()
}

/// Connects two nodes, sends `payload()` from the first to the second and finishes, and lets
/// every packet arrive. Returns the world, both ends and the receiving node's index.
fn sent_and_finished(seed: u64) -> (World, usize, StreamHandle, usize, StreamHandle) {
    let (mut world, a, b, conn_a, _) =
        connected_pair(seed, LinkConfig::default(), bulk_config(), bulk_config());
    let (stream, inbound) = negotiated_stream(&mut world, a, b, conn_a, BULK);
    let data = payload();
    let written = world.command(a, |node, now| node.write(now, stream, &data));
    assert_eq!(written, Ok(PAYLOAD), "the payload fits the stream window");
    world
        .command(a, |node, now| node.finish(now, stream))
        .expect("finish");
    world.run_for(SETTLE);
    (world, a, stream, b, inbound)
}

#[test]
fn one_read_returns_every_packet_waiting_then_the_next_read_the_finish() {
    let (mut world, _, _, b, inbound) = sent_and_finished(61);
    let first = world.command(b, |node, now| node.read(now, inbound, 1024 * 1024));
    let Ok(ReadOutcome::Data(data)) = first else {
        panic!("the first read returns data, got {first:?}");
    };
    assert_eq!(
        data.len(),
        PAYLOAD,
        "one read returns all {PAYLOAD} bytes waiting (hundreds of packets), not one piece"
    );
    assert_eq!(&data[..], &payload()[..], "in order and intact");
    assert_eq!(
        world.command(b, |node, now| node.read(now, inbound, 1024 * 1024)),
        Ok(ReadOutcome::Finished),
        "the finish met after the data is reported by the next read"
    );
}

#[test]
fn a_read_never_returns_more_than_asked_and_loses_nothing() {
    let (mut world, _, _, b, inbound) = sent_and_finished(62);
    let mut received = Vec::new();
    let mut finished = false;
    // Bounded: 200 KiB in reads of up to 3,000 bytes.
    for _ in 0..1_000 {
        match world.command(b, |node, now| node.read(now, inbound, 3_000)) {
            Ok(ReadOutcome::Data(data)) => {
                assert!(data.len() <= 3_000, "a read returned {} bytes", data.len());
                received.extend_from_slice(&data);
            }
            Ok(ReadOutcome::Finished) => {
                finished = true;
                break;
            }
            other => panic!("unexpected read outcome {other:?}"),
        }
    }
    assert!(finished, "the finish arrives after the data");
    assert_eq!(received, payload(), "every byte, in order");
}

#[test]
fn finishing_our_side_before_reading_the_kept_finish_still_reports_it() {
    let (mut world, a, stream, b, inbound) = sent_and_finished(63);
    let first = world.command(b, |node, now| node.read(now, inbound, 1024 * 1024));
    assert!(
        matches!(&first, Ok(ReadOutcome::Data(data)) if data.len() == PAYLOAD),
        "all data in one read: {first:?}"
    );
    // Our side finishes while the peer's finish is still unread: the stream must stay known.
    world
        .command(b, |node, now| node.finish(now, inbound))
        .expect("finish our side");
    world.run_for(SETTLE);
    assert_eq!(
        world.command(b, |node, now| node.read(now, inbound, 1024)),
        Ok(ReadOutcome::Finished),
        "the kept finish is reported, not an unknown stream"
    );
    // Both directions are done now: the stream is forgotten and a further read says so.
    assert_eq!(
        world.command(b, |node, now| node.read(now, inbound, 1024)),
        Err(StreamError::UnknownStream(inbound)),
        "a stream done both ways is forgotten once its end was read"
    );
    assert_eq!(
        world.command(a, |node, now| node.read(now, stream, 1024)),
        Ok(ReadOutcome::Finished),
        "the opener sees our finish"
    );
    world.run_for(SETTLE);
    for at in [a, b] {
        assert_eq!(
            world.node(at).stats().streams,
            0,
            "node {at} keeps no stream once both ends were read"
        );
    }
}

#[test]
fn a_read_of_zero_bytes_returns_nothing_at_once_and_consumes_nothing() {
    let (mut world, _, _, b, inbound) = sent_and_finished(64);
    assert_eq!(
        world.command(b, |node, now| node.read(now, inbound, 0)),
        Ok(ReadOutcome::Data(bytes::Bytes::new())),
        "an empty read answers at once rather than waiting for data that is already there"
    );
    let next = world.command(b, |node, now| node.read(now, inbound, 1024 * 1024));
    assert!(
        matches!(&next, Ok(ReadOutcome::Data(data)) if data.len() == PAYLOAD),
        "the data is all still there: {next:?}"
    );
}
