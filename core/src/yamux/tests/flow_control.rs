//! Flow control: window exhaustion, window updates, growth, the output budget.

use super::pair::{Pair, events, write_some};
use crate::yamux::{INITIAL_STREAM_WINDOW, ReadOutcome, YamuxConfig, YamuxEvent};
use crate::yamux::{Session, StreamId};

#[test]
fn window_exhaustion_blocks_the_writer_until_the_reader_reads() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    let data = vec![7u8; 400 * 1024];
    assert_eq!(
        write_some(&mut pair.client, id, &data),
        INITIAL_STREAM_WINDOW as usize
    );
    assert_eq!(pair.client.write(id, b"more"), Ok(0), "window exhausted");
    pair.pump();
    assert_eq!(
        pair.server.stream_info(id).unwrap().buffered,
        INITIAL_STREAM_WINDOW as usize
    );

    // Reading less than half the window returns no credit yet.
    let ReadOutcome::Data(first) = pair.server.read(id, 100 * 1024).unwrap() else {
        panic!()
    };
    assert_eq!(first.len(), 100 * 1024);
    pair.pump();
    assert_eq!(pair.client.write(id, b"more"), Ok(0), "still blocked");
    assert!(!pair.client_events.contains(&YamuxEvent::Writable(id)));

    // Crossing half the window sends an update; the writer hears Writable.
    let ReadOutcome::Data(_) = pair.server.read(id, 50 * 1024).unwrap() else {
        panic!()
    };
    pair.pump();
    let (client_events, _) = pair.take_events();
    assert_eq!(client_events, vec![YamuxEvent::Writable(id)]);
    assert_eq!(pair.client.stream_info(id).unwrap().send_window, 150 * 1024);
    assert_eq!(pair.client.write(id, &data[..1000]), Ok(1000));
}

#[test]
fn received_data_never_exceeds_the_granted_window() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    let data = vec![1u8; 4 * 1024 * 1024];
    let mut sent = 0;
    for _ in 0..200 {
        sent += write_some(&mut pair.client, id, &data[sent..]);
        pair.pump();
        let info = pair.server.stream_info(id).unwrap();
        assert!(info.buffered <= info.window_target as usize);
        // A slow reader: a few KiB per round.
        let _ = pair.server.read(id, 8 * 1024).unwrap();
    }
    let info = pair.server.stream_info(id).unwrap();
    assert_eq!(
        info.window_target, INITIAL_STREAM_WINDOW,
        "a slow reader does not grow the window"
    );
}

#[test]
fn window_grows_up_to_the_maximum_when_the_reader_keeps_up() {
    let mut config = YamuxConfig::default();
    config.max_stream_window(1024 * 1024);
    let mut pair = Pair::with_config(config);
    let id = pair.client.open_stream().unwrap();
    let data = vec![3u8; 8 * 1024 * 1024];
    let mut sent = 0;
    let mut received = 0;
    while received < data.len() {
        sent += write_some(&mut pair.client, id, &data[sent..]);
        pair.pump();
        received += read_all_at_once(&mut pair.server, id);
        pair.pump();
    }
    let info = pair.server.stream_info(id).unwrap();
    assert_eq!(info.window_target, 1024 * 1024);
    assert_eq!(
        pair.client.stream_info(id).unwrap().send_window,
        info.recv_window
    );
}

#[test]
fn total_receive_budget_caps_window_growth() {
    let mut config = YamuxConfig::default();
    config
        .max_stream_window(4 * 1024 * 1024)
        .max_total_receive_window(u64::from(INITIAL_STREAM_WINDOW) * 3);
    let mut pair = Pair::with_config(config);
    let id = pair.client.open_stream().unwrap();
    let data = vec![3u8; 4 * 1024 * 1024];
    let mut sent = 0;
    let mut received = 0;
    while received < data.len() {
        sent += write_some(&mut pair.client, id, &data[sent..]);
        pair.pump();
        received += read_all_at_once(&mut pair.server, id);
        pair.pump();
    }
    // One stream on the server: its window may take the whole budget but no more.
    assert_eq!(
        pair.server.stream_info(id).unwrap().window_target,
        3 * INITIAL_STREAM_WINDOW
    );
}

#[test]
fn full_output_buffer_blocks_writes_until_drained() {
    let mut config = YamuxConfig::default();
    config.max_buffered_output(1000);
    let mut pair = Pair::with_config(config);
    let id = pair.client.open_stream().unwrap();
    let accepted = write_some(&mut pair.client, id, &[9u8; 5000]);
    assert!(accepted < 1000, "accepted {accepted}");
    assert_eq!(pair.client.write(id, b"x"), Ok(0));
    assert!(events(&mut pair.client).is_empty());
    while pair.client.poll_output().is_some() {}
    assert_eq!(events(&mut pair.client), vec![YamuxEvent::Writable(id)]);
    assert!(pair.client.write(id, b"x").unwrap() == 1);
}

/// A reader that keeps up: takes everything buffered in one read.
fn read_all_at_once(session: &mut Session, id: StreamId) -> usize {
    match session.read(id, usize::MAX).unwrap() {
        ReadOutcome::Data(bytes) => bytes.len(),
        _ => 0,
    }
}
