//! Peer faults, from hand-crafted frames: each ends in a specific error or behaviour.

use super::pair::{data_frame, events, frame, sent_headers};
use crate::yamux::{
    Flags, FrameError, FrameType, GoAwayCode, Header, INITIAL_STREAM_WINDOW, Misbehaviour, Mode,
    Session, SessionError, StreamId, YamuxConfig, YamuxEvent,
};

fn server() -> Session {
    Session::new(Mode::Server, YamuxConfig::default())
}

fn syn(id: u32) -> bytes::BytesMut {
    frame(Header::window_update(StreamId::new(id), Flags::SYN, 0), &[])
}

/// Asserts the session failed with `error` and answered with a protocol-error go-away.
fn assert_protocol_error(session: &mut Session, error: SessionError) {
    let evs = events(session);
    assert_eq!(
        evs.last(),
        Some(&YamuxEvent::SessionError(error)),
        "events: {evs:?}"
    );
    assert!(session.is_terminated());
    assert_eq!(session.stream_count(), 0);
    let last = *sent_headers(session).last().expect("a go-away was sent");
    assert_eq!(last, Header::go_away(GoAwayCode::ProtocolError));
}

#[test]
fn data_beyond_the_window_is_a_protocol_error() {
    let mut s = server();
    s.handle_input(&syn(1));
    let chunk = vec![0u8; 200 * 1024];
    s.handle_input(&data_frame(1, Flags::EMPTY, &chunk));
    // 200 KiB used, 56 KiB left: another 200 KiB frame overflows it.
    s.handle_input(&Header::data(StreamId::new(1), Flags::EMPTY, 200 * 1024).encode());
    let window = INITIAL_STREAM_WINDOW - 200 * 1024;
    assert_protocol_error(
        &mut s,
        Misbehaviour::WindowExceeded {
            stream: StreamId::new(1),
            length: 200 * 1024,
            window,
        }
        .into(),
    );
    // Input after termination is ignored.
    s.handle_input(&chunk);
    assert!(events(&mut s).is_empty());
}

#[test]
fn oversized_data_frame_is_refused_before_buffering() {
    let mut s = server();
    s.handle_input(&syn(1));
    s.handle_input(&Header::data(StreamId::new(1), Flags::EMPTY, u32::MAX).encode());
    assert_protocol_error(
        &mut s,
        Misbehaviour::FrameTooLarge {
            length: u32::MAX,
            max: 1024 * 1024,
        }
        .into(),
    );
}

#[test]
fn invalid_version_and_type_are_malformed() {
    let mut s = server();
    let mut bytes = Header::ping(Flags::SYN, 1).encode();
    bytes[0] = 7;
    s.handle_input(&bytes);
    assert_protocol_error(&mut s, FrameError::UnsupportedVersion(7).into());

    let mut s = server();
    let mut bytes = Header::ping(Flags::SYN, 1).encode();
    bytes[1] = 9;
    s.handle_input(&bytes);
    assert_protocol_error(&mut s, FrameError::UnknownType(9).into());
}

#[test]
fn duplicate_syn_is_a_protocol_error() {
    let mut s = server();
    s.handle_input(&syn(1));
    s.handle_input(&syn(1));
    assert_protocol_error(&mut s, Misbehaviour::DuplicateSyn(StreamId::new(1)).into());
}

#[test]
fn syn_with_our_parity_is_a_protocol_error() {
    let mut s = server();
    s.handle_input(&syn(2));
    assert_protocol_error(&mut s, Misbehaviour::WrongParity(StreamId::new(2)).into());
}

#[test]
fn frame_for_a_never_opened_stream_is_a_protocol_error() {
    let mut s = server();
    s.handle_input(&data_frame(5, Flags::EMPTY, b"who?"));
    assert_protocol_error(&mut s, Misbehaviour::UnknownStream(StreamId::new(5)).into());

    let mut s = server();
    s.handle_input(&frame(
        Header::window_update(StreamId::new(4), Flags::EMPTY, 10),
        &[],
    ));
    assert_protocol_error(&mut s, Misbehaviour::UnknownStream(StreamId::new(4)).into());
}

#[test]
fn stream_frame_on_session_id_is_a_protocol_error() {
    let mut s = server();
    s.handle_input(&data_frame(0, Flags::EMPTY, b"x"));
    assert_protocol_error(&mut s, Misbehaviour::StreamFrameOnSessionId.into());
}

#[test]
fn window_update_overflow_is_a_protocol_error() {
    let mut s = server();
    s.handle_input(&syn(1));
    s.handle_input(&frame(
        Header::window_update(StreamId::new(1), Flags::EMPTY, u32::MAX),
        &[],
    ));
    assert_protocol_error(
        &mut s,
        Misbehaviour::WindowOverflow(StreamId::new(1)).into(),
    );
}

#[test]
fn data_after_fin_resets_only_that_stream() {
    let mut s = server();
    s.handle_input(&syn(1));
    s.handle_input(&syn(3));
    s.handle_input(&data_frame(1, Flags::FIN, b"last"));
    s.handle_input(&data_frame(1, Flags::EMPTY, b"too late"));
    let id = StreamId::new(1);
    assert_eq!(
        events(&mut s),
        vec![
            YamuxEvent::InboundStream(id),
            YamuxEvent::InboundStream(StreamId::new(3)),
            YamuxEvent::Readable(id),
            YamuxEvent::StreamFinished(id),
            YamuxEvent::StreamReset(id),
        ]
    );
    assert!(!s.is_terminated());
    assert_eq!(s.stream_count(), 1);
    let last = *sent_headers(&mut s).last().unwrap();
    assert_eq!(last, Header::window_update(id, Flags::RST, 0));
}

#[test]
fn ping_flood_without_draining_is_a_protocol_error() {
    let mut config = YamuxConfig::default();
    config.max_control_backlog(4);
    let mut s = Session::new(Mode::Server, config);
    for i in 0..4 {
        s.handle_input(&Header::ping(Flags::SYN, i).encode());
    }
    assert!(!s.is_terminated());
    let pongs = sent_headers(&mut s);
    assert_eq!(pongs.len(), 4);
    assert!(
        pongs
            .iter()
            .all(|h| h.frame_type == FrameType::Ping && h.flags == Flags::ACK)
    );
    // Draining resets the backlog; five in a row without draining is a flood.
    for i in 0..5 {
        s.handle_input(&Header::ping(Flags::SYN, i).encode());
    }
    assert_protocol_error(&mut s, Misbehaviour::ControlFlood.into());
}

#[test]
fn unsolicited_pong_is_ignored() {
    let mut s = server();
    s.handle_input(&Header::ping(Flags::ACK, 99).encode());
    assert!(events(&mut s).is_empty());
    assert!(!s.is_terminated());
}

#[test]
fn inbound_streams_are_refused_while_events_pile_up() {
    let mut config = YamuxConfig::default();
    config.max_pending_events(2);
    let mut s = Session::new(Mode::Server, config);
    for id in [1, 3, 5] {
        s.handle_input(&syn(id));
    }
    assert_eq!(s.stream_count(), 2);
    let headers = sent_headers(&mut s);
    assert_eq!(
        headers.last(),
        Some(&Header::window_update(StreamId::new(5), Flags::RST, 0))
    );
}
