//! Flow control reaches the application: writing to a stream whose peer does not read stops at
//! the peer's window (write returns 0), nothing is buffered beyond it, and once the peer reads,
//! `StreamWritable` arrives and writes progress again.

mod common;

use std::time::Duration;

use dep2p_core::node::{Event, NodeConfig, ReadOutcome, StreamHandle};
use dep2p_core::testing::{LinkConfig, World};

use common::{SETTLE, connected_pair, negotiated_stream};

const BULK: &str = "/bulk/1.0.0";
const STREAM_WINDOW: u32 = 64 * 1024;

/// Writes chunks until the stream blocks, letting the world run between writes; returns the
/// bytes accepted. Bounded by the flow-control window (each round writes at least one byte or
/// stops).
fn write_until_blocked(world: &mut World, at: usize, stream: StreamHandle, chunk: &[u8]) -> usize {
    let mut total = 0;
    let mut zero_rounds = 0;
    for _ in 0..10_000 {
        let written = world
            .command(at, |node, now| node.write(now, stream, chunk))
            .expect("write");
        total += written;
        if written == 0 {
            // Give in-flight window updates a chance before concluding it is really blocked.
            zero_rounds += 1;
            if zero_rounds == 3 {
                return total;
            }
        } else {
            zero_rounds = 0;
        }
        world.run_for(Duration::from_millis(50));
    }
    panic!("stream never blocked after {total} bytes");
}

/// Two connected nodes and a negotiated bulk stream from `a` to `b`, whose stream window is
/// `STREAM_WINDOW`: the world, `a`, `b`, the stream at `a`, the stream at `b`.
fn negotiated_bulk_stream(seed: u64) -> (World, usize, usize, StreamHandle, StreamHandle) {
    let mut config_b = NodeConfig::default();
    config_b
        .protocol(BULK)
        .stream_receive_window(STREAM_WINDOW)
        .connection_receive_window(4 * STREAM_WINDOW);
    let (mut world, a, b, conn_a, _) =
        connected_pair(seed, LinkConfig::default(), NodeConfig::default(), config_b);
    let (stream, inbound) = negotiated_stream(&mut world, a, b, conn_a, BULK);
    (world, a, b, stream, inbound)
}

#[test]
fn writes_block_at_the_peer_window_and_resume_after_it_reads() {
    let (mut world, a, b, stream, inbound) = negotiated_bulk_stream(40);

    let chunk = vec![0xab; 8 * 1024];
    let first = write_until_blocked(&mut world, a, stream, &chunk);
    assert!(first > 0, "some data went out before blocking");
    assert!(
        first <= STREAM_WINDOW as usize,
        "the writer is held to the peer's stream window: accepted {first} bytes, window {STREAM_WINDOW}"
    );
    // a's multistream header and proposal (a few dozen bytes) used the start of the same
    // stream window.
    assert!(
        first + 64 >= STREAM_WINDOW as usize,
        "the writer fills (almost) the whole window: {first} of {STREAM_WINDOW}"
    );
    let blocked = world.command(a, |node, now| node.write(now, stream, &chunk));
    assert_eq!(blocked, Ok(0), "still blocked while b does not read");

    // b reads everything; a is told it may write again.
    let writable_before = writable_events(&world, a, stream);
    let mut read = 0;
    for _ in 0..10_000 {
        match world.command(b, |node, now| node.read(now, inbound, 16 * 1024)) {
            Ok(ReadOutcome::Data(bytes)) => {
                assert!(bytes.iter().all(|&x| x == 0xab), "data intact");
                read += bytes.len();
            }
            Ok(ReadOutcome::Blocked) => break,
            other => panic!("unexpected read result {other:?}"),
        }
    }
    assert_eq!(read, first, "b reads exactly what a wrote");
    assert!(
        world.run_until(SETTLE, |w| writable_events(w, a, stream) > writable_before),
        "StreamWritable arrives once b read"
    );
    let second = write_until_blocked(&mut world, a, stream, &chunk);
    assert!(
        second > 0 && second <= STREAM_WINDOW as usize,
        "writes progress again, within one window: {second}"
    );

    // The node holds no stream state beyond the one stream on each side.
    assert!(world.node(a).stats().streams <= 1);
    assert!(world.node(b).stats().streams <= 1);
    assert_eq!(world.node(a).stats().events_dropped, 0);
}

fn writable_events(world: &World, at: usize, stream: StreamHandle) -> usize {
    world
        .events(at)
        .filter(|e| matches!(e, Event::StreamWritable { stream: s } if *s == stream))
        .count()
}

#[test]
fn write_bytes_takes_what_the_window_allows_and_leaves_the_rest_in_the_callers_bytes() {
    let (mut world, a, b, stream, inbound) = negotiated_bulk_stream(41);

    // Twice the peer's window, with a pattern that shows order: a first write takes at most
    // one window and leaves the rest, unchanged, at the front of `data`.
    let total = 2 * STREAM_WINDOW as usize;
    let payload: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let mut data = bytes::Bytes::from(payload.clone());
    let first = world
        .command(a, |node, now| node.write_bytes(now, stream, &mut data))
        .expect("write");
    assert!(first > 0 && first <= STREAM_WINDOW as usize, "took {first}");
    assert_eq!(data.len(), total - first, "the rest stays with the caller");
    assert_eq!(
        &data[..],
        &payload[first..],
        "the rest is the unwritten tail"
    );

    // b reads while a writes the rest; every byte arrives in order.
    let mut received = Vec::new();
    for _ in 0..10_000 {
        if !data.is_empty() {
            world
                .command(a, |node, now| node.write_bytes(now, stream, &mut data))
                .expect("write");
        }
        world.run_for(Duration::from_millis(20));
        while let Ok(ReadOutcome::Data(bytes)) =
            world.command(b, |node, now| node.read(now, inbound, 16 * 1024))
        {
            received.extend_from_slice(&bytes);
        }
        if received.len() == total {
            break;
        }
    }
    assert_eq!(received.len(), total, "every byte arrived");
    assert!(received == payload, "in order and intact");
}
