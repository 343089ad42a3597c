//! Resets, refusals, limits, ping and go-away between two sessions.

use super::pair::{Pair, events, read_available, sent_headers};
use crate::yamux::{
    FrameType, GoAwayCode, Limit, ReadOutcome, StreamId, YamuxConfig, YamuxError, YamuxEvent,
};

#[test]
fn reset_propagates_and_forgets_the_stream() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    assert_eq!(pair.client.write(id, b"doomed"), Ok(6));
    pair.pump();
    pair.take_events();
    pair.client.reset(id).unwrap();
    assert_eq!(pair.client.stream_count(), 0);
    pair.pump();
    let (_, server_events) = pair.take_events();
    assert_eq!(server_events, vec![YamuxEvent::StreamReset(id)]);
    assert_eq!(pair.server.stream_count(), 0);
    assert_eq!(pair.server.read(id, 10), Err(YamuxError::UnknownStream(id)));
    assert_eq!(
        pair.client.write(id, b"x"),
        Err(YamuxError::UnknownStream(id))
    );
}

#[test]
fn late_frames_for_a_reset_stream_are_ignored() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    pair.pump();
    // Both sides act at once: the server writes while the client resets.
    assert_eq!(pair.server.write(id, b"in flight"), Ok(9));
    pair.client.reset(id).unwrap();
    pair.pump();
    assert!(!pair.client.is_terminated() && !pair.server.is_terminated());
    assert_eq!(pair.client.stream_count(), 0);
    assert_eq!(pair.server.stream_count(), 0);
}

#[test]
fn streams_beyond_the_peer_limit_are_refused_with_rst() {
    let mut server_config = YamuxConfig::default();
    server_config.max_streams(2);
    let mut pair = Pair::new();
    pair.server = crate::yamux::Session::new(crate::yamux::Mode::Server, server_config);
    let ids: Vec<_> = (0..3).map(|_| pair.client.open_stream().unwrap()).collect();
    pair.pump();
    let (client_events, server_events) = pair.take_events();
    assert_eq!(client_events, vec![YamuxEvent::StreamReset(ids[2])]);
    assert_eq!(
        server_events,
        vec![
            YamuxEvent::InboundStream(ids[0]),
            YamuxEvent::InboundStream(ids[1])
        ]
    );
    assert_eq!(pair.server.stream_count(), 2);
    assert_eq!(pair.client.stream_count(), 2);
}

#[test]
fn local_stream_limit_and_ack_backlog_refuse_open() {
    let mut config = YamuxConfig::default();
    config.max_streams(3);
    let mut pair = Pair::with_config(config);
    for _ in 0..3 {
        pair.client.open_stream().unwrap();
    }
    assert_eq!(
        pair.client.open_stream(),
        Err(YamuxError::LimitExceeded(Limit::Streams))
    );

    let mut config = YamuxConfig::default();
    config.max_ack_backlog(2);
    let mut pair = Pair::with_config(config);
    pair.client.open_stream().unwrap();
    pair.client.open_stream().unwrap();
    assert_eq!(
        pair.client.open_stream(),
        Err(YamuxError::LimitExceeded(Limit::AckBacklog))
    );
    pair.pump(); // the server acknowledges both
    assert!(pair.client.open_stream().is_ok());
}

#[test]
fn ping_round_trip_reports_pong() {
    let mut pair = Pair::new();
    pair.client.ping(42).unwrap();
    pair.pump();
    let (client_events, server_events) = pair.take_events();
    assert_eq!(client_events, vec![YamuxEvent::Pong(42)]);
    assert!(server_events.is_empty());
}

#[test]
fn outstanding_pings_are_bounded() {
    let mut config = YamuxConfig::default();
    config.max_outstanding_pings(2);
    let mut pair = Pair::with_config(config);
    pair.client.ping(1).unwrap();
    pair.client.ping(2).unwrap();
    assert_eq!(
        pair.client.ping(3),
        Err(YamuxError::LimitExceeded(Limit::OutstandingPings))
    );
    pair.pump();
    pair.client.ping(3).unwrap();
}

#[test]
fn close_sends_normal_go_away_and_existing_streams_finish() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    pair.pump();
    pair.take_events();
    pair.client.close();
    pair.client.close(); // idempotent
    pair.pump();
    let (_, server_events) = pair.take_events();
    assert_eq!(
        server_events,
        vec![YamuxEvent::GoAway {
            code: GoAwayCode::Normal
        }]
    );
    assert_eq!(pair.client.open_stream(), Err(YamuxError::Closing));
    assert_eq!(pair.server.open_stream(), Err(YamuxError::Closing));
    // The existing stream still works.
    assert_eq!(pair.server.write(id, b"still here"), Ok(10));
    pair.server.finish(id).unwrap();
    pair.pump();
    assert_eq!(
        read_available(&mut pair.client, id),
        (b"still here".to_vec(), true)
    );
}

#[test]
fn inbound_syn_after_our_go_away_is_refused() {
    let mut pair = Pair::new();
    let id = pair.server.open_stream().unwrap(); // SYN in flight
    pair.client.close();
    pair.pump();
    let (_, server_events) = pair.take_events();
    assert!(server_events.contains(&YamuxEvent::StreamReset(id)));
    assert_eq!(pair.client.stream_count(), 0);
}

#[test]
fn go_away_with_an_error_code_terminates_the_session() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    pair.pump();
    pair.take_events();
    let frame = super::pair::frame(
        crate::yamux::Header::go_away(GoAwayCode::InternalError),
        &[],
    );
    pair.client.handle_input(&frame);
    assert_eq!(
        events(&mut pair.client),
        vec![YamuxEvent::GoAway {
            code: GoAwayCode::InternalError
        }]
    );
    assert!(pair.client.is_terminated());
    assert_eq!(pair.client.stream_count(), 0);
    assert_eq!(pair.client.read(id, 1), Err(YamuxError::Terminated));
    assert!(sent_headers(&mut pair.client).is_empty());
}

#[test]
fn read_with_zero_max_returns_empty_data() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    assert_eq!(
        pair.client.read(id, 0),
        Ok(ReadOutcome::Data(bytes::Bytes::new()))
    );
    assert_eq!(pair.client.read(id, 10), Ok(ReadOutcome::Blocked));
    let headers = sent_headers(&mut pair.client);
    assert_eq!(headers.len(), 1);
    assert_eq!(headers[0].frame_type, FrameType::WindowUpdate);
    assert_eq!(headers[0].stream_id, StreamId::new(1));
}
