//! `Session::write_bytes`: payloads handed over as `Bytes` go out without a copy, framed and
//! limited exactly as `write` frames and limits them.

use bytes::Bytes;

use super::pair::{Pair, events, read_available};
use crate::yamux::session::ZERO_COPY_MIN;
use crate::yamux::{
    HEADER_LEN, INITIAL_STREAM_WINDOW, Mode, Session, YamuxConfig, YamuxError, YamuxEvent,
};

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn a_large_payload_is_handed_out_where_the_application_put_it() {
    let mut session = Session::new(Mode::Client, YamuxConfig::default());
    let id = session.open_stream().unwrap();
    let data = payload(40_000);
    let start = data.as_ptr() as usize;
    let end = start + data.len();
    let mut rest = data.clone();
    assert_eq!(session.write_bytes(id, &mut rest), Ok(data.len()));
    assert!(
        rest.is_empty(),
        "the accepted bytes are taken off the front"
    );
    let mut uncopied = 0;
    let mut total = 0;
    while let Some(piece) = session.poll_output() {
        let at = piece.as_ptr() as usize;
        if (start..end).contains(&at) {
            uncopied += piece.len();
        }
        total += piece.len();
    }
    assert_eq!(uncopied, data.len(), "every payload byte went out uncopied");
    let frames = data.len().div_ceil(16 * 1024);
    assert_eq!(
        total,
        data.len() + frames * HEADER_LEN + HEADER_LEN,
        "payload, one header per frame, and the stream's opening frame"
    );
}

#[test]
fn bytes_written_either_way_arrive_identical_and_in_order() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    let first = payload(30_000);
    let small = payload(ZERO_COPY_MIN - 1);
    let mut expected = Vec::new();
    expected.extend_from_slice(&first);
    expected.extend_from_slice(b"copied");
    expected.extend_from_slice(&small);
    assert_eq!(pair.client.write_bytes(id, &mut first.clone()), Ok(30_000));
    assert_eq!(pair.client.write(id, b"copied"), Ok(6));
    assert_eq!(
        pair.client.write_bytes(id, &mut small.clone()),
        Ok(small.len()),
        "a small payload is copied, in order"
    );
    pair.pump();
    let (received, _) = read_available(&mut pair.server, id);
    assert_eq!(received, expected);
}

#[test]
fn write_bytes_takes_no_more_than_the_window_and_blocks_like_write() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    let mut data = payload(INITIAL_STREAM_WINDOW as usize + 5_000);
    assert_eq!(
        pair.client.write_bytes(id, &mut data),
        Ok(INITIAL_STREAM_WINDOW as usize)
    );
    assert_eq!(
        data.len(),
        5_000,
        "what the window refused stays with the caller"
    );
    assert_eq!(pair.client.write_bytes(id, &mut data), Ok(0), "blocked");
    assert_eq!(data.len(), 5_000, "a blocked write takes nothing");
    pair.pump();
    let (received, _) = read_available(&mut pair.server, id);
    assert_eq!(received.len(), INITIAL_STREAM_WINDOW as usize);
    pair.pump();
    assert!(
        pair.client_events.contains(&YamuxEvent::Writable(id)),
        "credit returned wakes the blocked writer"
    );
    assert_eq!(pair.client.write_bytes(id, &mut data), Ok(5_000));
}

#[test]
fn the_output_budget_counts_uncopied_payloads_and_frees_once_all_is_taken() {
    let mut config = YamuxConfig::default();
    config.max_buffered_output(20_000);
    let mut session = Session::new(Mode::Client, config);
    let id = session.open_stream().unwrap();
    let mut data = payload(50_000);
    let accepted = session.write_bytes(id, &mut data).unwrap();
    assert!(
        accepted < 20_000,
        "accepted {accepted} past a 20,000-byte output budget"
    );
    assert!(session.buffered_output() <= 20_000 + HEADER_LEN * 3);
    assert_eq!(session.write_bytes(id, &mut data), Ok(0), "budget full");
    let _ = session.poll_output().expect("output waits");
    assert!(
        events(&mut session).is_empty(),
        "not woken while part of the output still waits"
    );
    while session.poll_output().is_some() {}
    assert_eq!(events(&mut session), vec![YamuxEvent::Writable(id)]);
    assert!(session.write_bytes(id, &mut data).unwrap() > 0);
}

#[test]
fn write_bytes_on_a_finished_or_unknown_stream_fails_naming_it() {
    let mut session = Session::new(Mode::Client, YamuxConfig::default());
    let id = session.open_stream().unwrap();
    session.finish(id).unwrap();
    let mut data = payload(5_000);
    assert_eq!(
        session.write_bytes(id, &mut data),
        Err(YamuxError::WriteClosed(id))
    );
    assert_eq!(data.len(), 5_000, "nothing taken");
    let unknown = crate::yamux::StreamId::new(99);
    assert_eq!(
        session.write_bytes(unknown, &mut data),
        Err(YamuxError::UnknownStream(unknown))
    );
}
