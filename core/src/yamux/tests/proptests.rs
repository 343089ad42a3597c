//! Property tests: arbitrary peer bytes, and arbitrary operation sequences between two sessions.

use proptest::prelude::*;

use super::pair::Pair;
use crate::yamux::{
    Flags, FrameType, HEADER_LEN, Header, Mode, ReadOutcome, Session, StreamId, YamuxConfig,
    YamuxError,
};

/// Raw garbage, or headers with small plausible fields (so the parser gets past the version
/// byte) followed by a few payload bytes.
fn peer_bytes() -> impl Strategy<Value = Vec<u8>> {
    let header = (
        0u8..5,
        0u16..16,
        0u32..8,
        prop_oneof![0u32..64, any::<u32>()],
        0usize..40,
    )
        .prop_map(|(ty, flags, id, length, payload)| {
            let mut bytes = vec![0u8; HEADER_LEN];
            bytes[1] = ty;
            bytes[2..4].copy_from_slice(&flags.to_be_bytes());
            bytes[4..8].copy_from_slice(&id.to_be_bytes());
            bytes[8..12].copy_from_slice(&length.to_be_bytes());
            bytes.extend((0..payload).map(|i| i as u8));
            bytes
        });
    prop_oneof![1 => proptest::collection::vec(any::<u8>(), 0..64), 6 => header]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_peer_bytes_never_panic_and_stay_within_bounds(
        pieces in proptest::collection::vec(peer_bytes(), 0..40),
        split in 1usize..50,
        client in any::<bool>(),
    ) {
        let mut config = YamuxConfig::default();
        config.max_streams(4).max_control_backlog(8).max_pending_events(16);
        let mut session = Session::new(if client { Mode::Client } else { Mode::Server }, config);
        let input: Vec<u8> = pieces.concat();
        for piece in input.chunks(split) {
            session.handle_input(piece);
            prop_assert!(session.stream_count() <= 4);
            for raw in 0..8 {
                if let Some(info) = session.stream_info(StreamId::new(raw)) {
                    prop_assert!(info.buffered <= info.window_target as usize);
                    prop_assert!(info.window_target <= 1024 * 1024);
                }
            }
            // Peer-driven output: control frames (capped at 8 per drain) plus ACKs for the
            // (at most 4) accepted streams, plus a go-away.
            prop_assert!(session.buffered_output() <= (8 + 4 + 1) * HEADER_LEN * 2);
            // Also exercise the local API on whatever the peer opened.
            for raw in 0..8 {
                let id = StreamId::new(raw);
                let _ = session.read(id, 100);
                let _ = session.write(id, b"x");
            }
            let mut count = 0;
            while session.poll_event().is_some() {
                count += 1;
            }
            prop_assert!(count <= 16 + 5 * 4 + 2);
            while session.poll_output().is_some() {}
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        client: bool,
    },
    Write {
        client: bool,
        stream: usize,
        len: usize,
    },
    Read {
        client: bool,
        stream: usize,
        max: usize,
    },
    Finish {
        client: bool,
        stream: usize,
    },
    Pump {
        chunk: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<bool>().prop_map(|client| Op::Open { client }),
        4 => (any::<bool>(), 0usize..8, 0usize..70_000)
            .prop_map(|(client, stream, len)| Op::Write { client, stream, len }),
        4 => (any::<bool>(), 0usize..8, 1usize..100_000)
            .prop_map(|(client, stream, max)| Op::Read { client, stream, max }),
        1 => (any::<bool>(), 0usize..8).prop_map(|(client, stream)| Op::Finish { client, stream }),
        3 => prop_oneof![1usize..40, Just(usize::MAX)].prop_map(|chunk| Op::Pump { chunk }),
    ]
}

/// What was written and read in one direction of one stream.
#[derive(Default)]
struct Direction {
    written: Vec<u8>,
    read: Vec<u8>,
    finished: bool,
    read_finished: bool,
}

/// Byte `offset` of a direction of stream `id`.
fn byte(id: StreamId, from_client: bool, offset: usize) -> u8 {
    (id.get().wrapping_mul(31) as usize
        ^ offset.wrapping_mul(7)
        ^ (usize::from(from_client) * 0x55)) as u8
}

fn session(pair: &mut Pair, client: bool) -> &mut Session {
    if client {
        &mut pair.client
    } else {
        &mut pair.server
    }
}

fn do_read(
    pair: &mut Pair,
    dir: &mut Direction,
    id: StreamId,
    reader_is_client: bool,
    max: usize,
) -> Result<(), TestCaseError> {
    if dir.read_finished {
        return Ok(());
    }
    match session(pair, reader_is_client).read(id, max) {
        Ok(ReadOutcome::Data(bytes)) => dir.read.extend_from_slice(&bytes),
        Ok(ReadOutcome::Finished) => dir.read_finished = true,
        Ok(ReadOutcome::Blocked) | Err(YamuxError::UnknownStream(_)) => {}
        Err(e) => return Err(TestCaseError::fail(format!("read {id}: {e}"))),
    }
    prop_assert!(
        dir.written.starts_with(&dir.read),
        "{id}: read bytes diverge from written"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_preserve_per_stream_order_and_integrity(
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut pair = Pair::new();
        // (id, client→server, server→client)
        let mut streams: Vec<(StreamId, Direction, Direction)> = Vec::new();
        for op in ops {
            match op {
                Op::Open { client } => {
                    let id = session(&mut pair, client).open_stream().expect("below every limit");
                    streams.push((id, Direction::default(), Direction::default()));
                }
                Op::Pump { chunk } => pair.pump_chunked(chunk),
                _ if streams.is_empty() => {}
                Op::Write { client, stream, len } => {
                    let n = streams.len();
                    let (id, c2s, s2c) = &mut streams[stream % n];
                    let dir = if client { c2s } else { s2c };
                    let data: Vec<u8> =
                        (0..len).map(|i| byte(*id, client, dir.written.len() + i)).collect();
                    match session(&mut pair, client).write(*id, &data) {
                        Ok(accepted) => dir.written.extend_from_slice(&data[..accepted]),
                        Err(YamuxError::WriteClosed(_) | YamuxError::UnknownStream(_)) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("write: {e}"))),
                    }
                }
                Op::Read { client, stream, max } => {
                    let n = streams.len();
                    let (id, c2s, s2c) = &mut streams[stream % n];
                    // The reader reads the other side's direction.
                    let dir = if client { s2c } else { c2s };
                    do_read(&mut pair, dir, *id, client, max)?;
                }
                Op::Finish { client, stream } => {
                    let n = streams.len();
                    let (id, c2s, s2c) = &mut streams[stream % n];
                    let dir = if client { c2s } else { s2c };
                    if !dir.finished {
                        match session(&mut pair, client).finish(*id) {
                            Ok(()) => dir.finished = true,
                            // The peer's SYN has not arrived on this side yet.
                            Err(YamuxError::UnknownStream(_)) => {}
                            Err(e) => return Err(TestCaseError::fail(format!("finish: {e}"))),
                        }
                    }
                }
            }
        }
        // Deliver every SYN, then finish everything and read both directions to the end.
        pair.pump();
        for (id, c2s, s2c) in &mut streams {
            for (client, dir) in [(true, &mut *c2s), (false, &mut *s2c)] {
                if !dir.finished {
                    session(&mut pair, client).finish(*id).expect("open stream");
                    dir.finished = true;
                }
            }
        }
        for _ in 0..10_000 {
            pair.pump();
            let mut all_done = true;
            for (id, c2s, s2c) in &mut streams {
                do_read(&mut pair, c2s, *id, false, usize::MAX)?;
                do_read(&mut pair, s2c, *id, true, usize::MAX)?;
                all_done &= c2s.read_finished && s2c.read_finished;
            }
            if all_done {
                break;
            }
        }
        for (id, c2s, s2c) in &streams {
            prop_assert!(c2s.read_finished && s2c.read_finished, "{id} did not finish");
            prop_assert_eq!(&c2s.read, &c2s.written);
            prop_assert_eq!(&s2c.read, &s2c.written);
        }
        prop_assert_eq!(pair.client.stream_count(), 0, "client leaked streams");
        prop_assert_eq!(pair.server.stream_count(), 0, "server leaked streams");
        prop_assert!(!pair.client.is_terminated() && !pair.server.is_terminated());
    }
}

#[test]
fn hand_built_header_parser_matches_the_codec() {
    // Guards the byte layout used by `peer_bytes`.
    let header = Header::window_update(StreamId::new(3), Flags::SYN, 9);
    let bytes = header.encode();
    assert_eq!(bytes[1], FrameType::WindowUpdate.to_u8());
    assert_eq!(&bytes[4..8], &3u32.to_be_bytes());
}
