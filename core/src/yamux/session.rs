//! The yamux session: decodes the peer's byte stream, drives every stream's state, and encodes
//! our frames.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::config::YamuxConfig;
use super::error::{Limit, Misbehaviour, SessionError, YamuxError};
use super::frame::{Flags, FrameType, GoAwayCode, HEADER_LEN, Header, StreamId};
use super::stream::{ReadOutcome, Stream, StreamInfo};

/// Smallest payload [`Session::write_bytes`] queues without a copy: a smaller one costs less to
/// copy than to carry as a piece of its own.
pub const ZERO_COPY_MIN: usize = 1024;

/// Which side of the underlying connection we are: the client (dialer) opens odd stream ids,
/// the server (listener) even ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The dialer.
    Client,
    /// The listener.
    Server,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum YamuxEvent {
    /// The peer opened a stream (already acknowledged).
    InboundStream(StreamId),
    /// Data arrived on a stream whose buffer was drained; read until `Blocked`.
    Readable(StreamId),
    /// A stream whose `write` returned 0 can accept bytes again.
    Writable(StreamId),
    /// The peer finished its direction of the stream; reading ends with `Finished`.
    StreamFinished(StreamId),
    /// The stream was reset (by the peer, or by us because the peer sent data after its FIN)
    /// and is gone.
    StreamReset(StreamId),
    /// The peer sent a go-away. With [`GoAwayCode::Normal`] existing streams continue and no new
    /// ones may be opened; any other code terminates the session.
    GoAway {
        /// The peer's code.
        code: GoAwayCode,
    },
    /// The response to our [`Session::ping`] with this opaque value.
    Pong(u32),
    /// The peer broke the protocol; we sent a go-away (protocol error) and the session is
    /// terminated.
    SessionError(SessionError),
}

/// Where the decoder stands in the peer's byte stream.
#[derive(Debug)]
enum Decoder {
    /// Collecting a 12-byte header.
    Header {
        buf: [u8; HEADER_LEN],
        filled: usize,
    },
    /// Passing the payload of a data frame to `stream` (or dropping it when `deliver` is
    /// false), then applying `fin`.
    Body {
        stream: StreamId,
        remaining: u32,
        fin: bool,
        deliver: bool,
    },
}

impl Decoder {
    const fn header() -> Self {
        Decoder::Header {
            buf: [0; HEADER_LEN],
            filled: 0,
        }
    }
}

/// A sans-IO yamux session (`/yamux/1.0.0`) over one reliable, ordered byte stream.
///
/// # Driving it
///
/// - **inputs**: [`handle_input`](Self::handle_input) with any slice of bytes read from the
///   underlying stream; frames may be split anywhere.
/// - **commands**: [`open_stream`](Self::open_stream), [`write`](Self::write),
///   [`read`](Self::read), [`finish`](Self::finish), [`reset`](Self::reset),
///   [`ping`](Self::ping), [`close`](Self::close). Each returns an immediate `Result` for misuse
///   or a local limit.
/// - **outputs**: after any input or command, drain [`poll_output`](Self::poll_output) (bytes to
///   write to the underlying stream, in order) and [`poll_event`](Self::poll_event) until both
///   return `None`.
/// - **getters**: [`stream_count`](Self::stream_count), [`stream_info`](Self::stream_info),
///   [`is_terminated`](Self::is_terminated).
///
/// Yamux needs no timers; keep-alive pings are the caller's to schedule.
///
/// # Bounds
///
/// The input decoder holds at most one partial header. A stream buffers at most the window it
/// granted. `write` accepts at most the peer's send window and the free output budget, so the
/// output buffer is bounded; peer-triggered control frames are capped per drain. Events per
/// stream are deduplicated and inbound streams are refused while the event queue is full.
#[derive(Debug)]
pub struct Session {
    mode: Mode,
    config: YamuxConfig,
    streams: BTreeMap<StreamId, Stream>,
    decoder: Decoder,
    /// Output handed out before `out`: payloads `write_bytes` queued without a copy, each after
    /// the `out` bytes (headers, control frames) queued before it.
    out_chunks: VecDeque<Bytes>,
    /// Bytes in `out_chunks`.
    out_chunks_len: usize,
    /// Output queued last, in order after `out_chunks`.
    out: BytesMut,
    events: VecDeque<YamuxEvent>,
    /// Next id for `open_stream`; `None` once the id space is used up.
    next_outbound: Option<u32>,
    /// Highest id the peer opened, so frames for never-opened ids are told from late frames.
    highest_inbound: u32,
    /// Sum of every stream's `window_target`.
    total_window_target: u64,
    /// Peer-triggered control frames queued since the output was last taken in full.
    control_backlog: usize,
    outstanding_pings: SmallVec<[u32; 4]>,
    /// Some stream is blocked on the output budget (checked when output drains).
    writers_blocked: bool,
    local_go_away: bool,
    remote_go_away: bool,
    terminated: bool,
}

impl Session {
    /// A new session; the client side opens odd stream ids, the server even ones.
    #[must_use]
    pub fn new(mode: Mode, config: YamuxConfig) -> Self {
        Self {
            mode,
            config,
            streams: BTreeMap::new(),
            decoder: Decoder::header(),
            out_chunks: VecDeque::new(),
            out_chunks_len: 0,
            out: BytesMut::new(),
            events: VecDeque::new(),
            next_outbound: Some(match mode {
                Mode::Client => 1,
                Mode::Server => 2,
            }),
            highest_inbound: 0,
            total_window_target: 0,
            control_backlog: 0,
            outstanding_pings: SmallVec::new(),
            writers_blocked: false,
            local_go_away: false,
            remote_go_away: false,
            terminated: false,
        }
    }

    // ---------------------------------------------------------------- getters

    /// Our side of the connection.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Streams currently held (open in at least one direction, or with unread data).
    #[must_use]
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Flow-control state of a stream, if it is held.
    #[must_use]
    pub fn stream_info(&self, id: StreamId) -> Option<StreamInfo> {
        self.streams.get(&id).map(Stream::info)
    }

    /// Whether the session failed or the peer terminated it; only draining outputs remains.
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }

    /// Bytes waiting in the output buffer.
    #[must_use]
    pub fn buffered_output(&self) -> usize {
        self.out_chunks_len + self.out.len()
    }

    // ---------------------------------------------------------------- outputs

    /// Bytes to write to the underlying stream, in order, one piece at a time, or `None` when
    /// nothing is pending. Take pieces until `None`: the control-frame backlog is cleared and
    /// writers blocked on the output budget are woken once all output has been taken.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Bytes> {
        let bytes = match self.out_chunks.pop_front() {
            Some(chunk) => {
                self.out_chunks_len -= chunk.len();
                chunk
            }
            None if self.out.is_empty() => return None,
            None => self.out.split().freeze(),
        };
        if self.buffered_output() == 0 {
            self.output_taken();
        }
        Some(bytes)
    }

    /// All output was taken: peer-triggered control frames no longer wait, and writers blocked
    /// on the output budget may write again.
    fn output_taken(&mut self) {
        self.control_backlog = 0;
        if self.writers_blocked {
            self.writers_blocked = false;
            for (&id, stream) in &mut self.streams {
                if stream.write_blocked && stream.send_window > 0 {
                    stream.write_blocked = false;
                    self.events.push_back(YamuxEvent::Writable(id));
                }
            }
        }
    }

    /// The next event, or `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<YamuxEvent> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------- commands

    /// Opens a stream. The `SYN` goes out at once, so data may be written right away.
    pub fn open_stream(&mut self) -> Result<StreamId, YamuxError> {
        self.check_live()?;
        if self.local_go_away || self.remote_go_away {
            return Err(YamuxError::Closing);
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(YamuxError::LimitExceeded(Limit::Streams));
        }
        let unacked = self.streams.values().filter(|s| !s.acked).count();
        if unacked >= self.config.max_ack_backlog {
            return Err(YamuxError::LimitExceeded(Limit::AckBacklog));
        }
        let raw = self.next_outbound.ok_or(YamuxError::StreamIdsExhausted)?;
        self.next_outbound = raw.checked_add(2);
        let id = StreamId::new(raw);
        self.insert_stream(id, Stream::new(true));
        self.queue(Header::window_update(id, Flags::SYN, 0));
        Ok(id)
    }

    /// Queues up to `data.len()` bytes on the stream and returns how many were accepted: at most
    /// the peer's send window and the free output budget. `Ok(0)` for non-empty `data` means
    /// blocked; [`YamuxEvent::Writable`] follows once bytes can be accepted again.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, YamuxError> {
        let n = self.admit_write(id, data.len())?;
        for chunk in data[..n].chunks(self.config.max_frame_payload) {
            // chunk.len() <= n <= u32::MAX.
            self.queue(Header::data(id, Flags::EMPTY, chunk.len() as u32));
            self.out.extend_from_slice(chunk);
        }
        Ok(n)
    }

    /// Like [`write`](Self::write), taking the accepted bytes off the front of `data` and
    /// queueing payloads of at least [`ZERO_COPY_MIN`] bytes as they are, without a copy.
    pub fn write_bytes(&mut self, id: StreamId, data: &mut Bytes) -> Result<usize, YamuxError> {
        let n = self.admit_write(id, data.len())?;
        let mut left = n;
        while left > 0 {
            let len = left.min(self.config.max_frame_payload);
            // len <= n <= u32::MAX.
            self.queue(Header::data(id, Flags::EMPTY, len as u32));
            let payload = data.split_to(len);
            if len < ZERO_COPY_MIN {
                self.out.extend_from_slice(&payload);
            } else {
                let before = self.out.split().freeze();
                self.push_out_chunk(before);
                self.push_out_chunk(payload);
            }
            left -= len;
        }
        Ok(n)
    }

    fn push_out_chunk(&mut self, chunk: Bytes) {
        self.out_chunks_len += chunk.len();
        self.out_chunks.push_back(chunk);
    }

    /// How many of `len` bytes a write on `id` may queue now: at most the peer's send window and
    /// the free output budget; their window is spent. `Ok(0)` for `len > 0` marks the stream
    /// blocked, so [`YamuxEvent::Writable`] follows once bytes can be accepted again.
    fn admit_write(&mut self, id: StreamId, len: usize) -> Result<usize, YamuxError> {
        self.check_live()?;
        let budget = self
            .config
            .max_buffered_output
            .saturating_sub(self.buffered_output());
        let stream = self
            .streams
            .get_mut(&id)
            .ok_or(YamuxError::UnknownStream(id))?;
        if stream.local_fin {
            return Err(YamuxError::WriteClosed(id));
        }
        let n = len.min(stream.send_window as usize).min(budget);
        if n == 0 {
            if len > 0 {
                stream.write_blocked = true;
                if stream.send_window > 0 {
                    // Blocked on the output budget rather than the window.
                    self.writers_blocked = true;
                }
            }
            return Ok(0);
        }
        // n <= send_window, a u32.
        stream.send_window -= n as u32;
        Ok(n)
    }

    /// Reads up to `max` buffered bytes. Reading returns credit to the peer: a window update is
    /// sent once half the window was consumed. When that read also emptied the buffer (the
    /// reader keeps up, so the window limits throughput) the window doubles, up to
    /// [`YamuxConfig::max_stream_window`] and within
    /// [`YamuxConfig::max_total_receive_window`]; with no clock, this stands in for the
    /// RTT-based growth of other implementations. Once the peer finished and everything was read,
    /// returns `Finished`; a stream finished both ways is then removed.
    pub fn read(&mut self, id: StreamId, max: usize) -> Result<ReadOutcome, YamuxError> {
        self.check_live()?;
        let stream = self
            .streams
            .get_mut(&id)
            .ok_or(YamuxError::UnknownStream(id))?;
        if !stream.recv_buf.is_empty() || max == 0 {
            let data = stream.take(max);
            self.return_credit(id);
            return Ok(ReadOutcome::Data(data));
        }
        if stream.remote_fin {
            stream.finish_observed = true;
            self.remove_if_done(id);
            return Ok(ReadOutcome::Finished);
        }
        stream.readable_armed = true;
        Ok(ReadOutcome::Blocked)
    }

    /// Finishes our direction (sends `FIN`); reading continues until the peer finishes too.
    pub fn finish(&mut self, id: StreamId) -> Result<(), YamuxError> {
        self.check_live()?;
        let stream = self
            .streams
            .get_mut(&id)
            .ok_or(YamuxError::UnknownStream(id))?;
        if stream.local_fin {
            return Err(YamuxError::WriteClosed(id));
        }
        stream.local_fin = true;
        stream.write_blocked = false;
        self.queue(Header::window_update(id, Flags::FIN, 0));
        self.remove_if_done(id);
        Ok(())
    }

    /// Resets the stream (sends `RST`) and forgets it; unread data is dropped.
    pub fn reset(&mut self, id: StreamId) -> Result<(), YamuxError> {
        self.check_live()?;
        if !self.streams.contains_key(&id) {
            return Err(YamuxError::UnknownStream(id));
        }
        self.remove_stream(id);
        self.queue(Header::window_update(id, Flags::RST, 0));
        Ok(())
    }

    /// Sends a ping carrying `opaque`; [`YamuxEvent::Pong`] reports the response.
    pub fn ping(&mut self, opaque: u32) -> Result<(), YamuxError> {
        self.check_live()?;
        if self.outstanding_pings.len() >= self.config.max_outstanding_pings {
            return Err(YamuxError::LimitExceeded(Limit::OutstandingPings));
        }
        self.outstanding_pings.push(opaque);
        self.queue(Header::ping(Flags::SYN, opaque));
        Ok(())
    }

    /// Sends a go-away (normal termination): no new streams are opened or accepted, existing
    /// ones run to their end. Calling it again does nothing.
    pub fn close(&mut self) {
        if self.terminated || self.local_go_away {
            return;
        }
        self.local_go_away = true;
        self.queue(Header::go_away(GoAwayCode::Normal));
    }

    // ---------------------------------------------------------------- input

    /// Consumes bytes read from the underlying stream. Peer faults terminate the session (see
    /// [`YamuxEvent::SessionError`]); input after termination is ignored.
    pub fn handle_input(&mut self, mut input: &[u8]) {
        while !input.is_empty() && !self.terminated {
            match &mut self.decoder {
                Decoder::Header { buf, filled } => {
                    let n = (HEADER_LEN - *filled).min(input.len());
                    buf[*filled..*filled + n].copy_from_slice(&input[..n]);
                    *filled += n;
                    input = &input[n..];
                    if *filled == HEADER_LEN {
                        let raw = *buf;
                        self.decoder = Decoder::header();
                        match Header::decode(&raw) {
                            Ok(header) => self.on_header(header),
                            Err(e) => self.fail(e.into()),
                        }
                    }
                }
                Decoder::Body {
                    stream,
                    remaining,
                    fin,
                    deliver,
                } => {
                    let (id, fin, deliver) = (*stream, *fin, *deliver);
                    // remaining is a u32, so n fits one.
                    let n = (*remaining as usize).min(input.len());
                    *remaining -= n as u32;
                    let done = *remaining == 0;
                    if deliver {
                        self.deliver(id, &input[..n]);
                    }
                    input = &input[n..];
                    if done {
                        self.decoder = Decoder::header();
                        if deliver && fin {
                            self.on_remote_fin(id);
                        }
                    }
                }
            }
        }
    }

    fn on_header(&mut self, header: Header) {
        let result = match header.frame_type {
            FrameType::Data => self.on_data(header),
            FrameType::WindowUpdate => self.on_window_update(header),
            FrameType::Ping => self.on_ping(header),
            FrameType::GoAway => {
                self.on_go_away(header);
                Ok(())
            }
        };
        if let Err(e) = result {
            self.fail(e.into());
        }
    }

    fn on_data(&mut self, header: Header) -> Result<(), Misbehaviour> {
        let (id, flags, length) = (header.stream_id, header.flags, header.length);
        if length > self.config.max_stream_window {
            return Err(Misbehaviour::FrameTooLarge {
                length,
                max: self.config.max_stream_window,
            });
        }
        // Until told otherwise the payload is dropped.
        self.skip_body(id, length);
        if !self.on_stream_flags_before(id, flags)? {
            return Ok(());
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if stream.remote_fin && length > 0 {
            // The peer wrote after its FIN: only this stream is broken.
            self.remove_stream(id);
            self.queue(Header::window_update(id, Flags::RST, 0));
            self.events.push_back(YamuxEvent::StreamReset(id));
            return Ok(());
        }
        if length > stream.recv_window {
            return Err(Misbehaviour::WindowExceeded {
                stream: id,
                length,
                window: stream.recv_window,
            });
        }
        stream.recv_window -= length;
        let fin = flags.contains(Flags::FIN);
        if length == 0 {
            if fin {
                self.on_remote_fin(id);
            }
        } else {
            self.decoder = Decoder::Body {
                stream: id,
                remaining: length,
                fin,
                deliver: true,
            };
        }
        Ok(())
    }

    fn on_window_update(&mut self, header: Header) -> Result<(), Misbehaviour> {
        let (id, flags, delta) = (header.stream_id, header.flags, header.length);
        if !self.on_stream_flags_before(id, flags)? {
            return Ok(());
        }
        let budget_free = self.buffered_output() < self.config.max_buffered_output;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        stream.send_window = stream
            .send_window
            .checked_add(delta)
            .ok_or(Misbehaviour::WindowOverflow(id))?;
        if stream.write_blocked && stream.send_window > 0 && !stream.local_fin {
            if budget_free {
                stream.write_blocked = false;
                self.events.push_back(YamuxEvent::Writable(id));
            } else {
                self.writers_blocked = true;
            }
        }
        if flags.contains(Flags::FIN) {
            self.on_remote_fin(id);
        }
        Ok(())
    }

    /// Handles SYN, ACK and RST and unknown ids for a data or window-update frame. Returns
    /// whether the frame concerns a live stream whose processing should continue.
    fn on_stream_flags_before(&mut self, id: StreamId, flags: Flags) -> Result<bool, Misbehaviour> {
        if id == StreamId::SESSION {
            return Err(Misbehaviour::StreamFrameOnSessionId);
        }
        if flags.contains(Flags::SYN) && !self.accept_inbound(id)? {
            return Ok(false);
        }
        if !self.streams.contains_key(&id) {
            if self.never_opened(id) {
                return Err(Misbehaviour::UnknownStream(id));
            }
            // A late frame for a stream that ended (e.g. we reset it): ignore.
            return Ok(false);
        }
        if flags.contains(Flags::RST) {
            self.remove_stream(id);
            self.events.push_back(YamuxEvent::StreamReset(id));
            return Ok(false);
        }
        if flags.contains(Flags::ACK)
            && let Some(stream) = self.streams.get_mut(&id)
        {
            stream.acked = true;
        }
        Ok(true)
    }

    /// Accepts or refuses the peer's new stream; `Ok(false)` when refused with RST.
    fn accept_inbound(&mut self, id: StreamId) -> Result<bool, Misbehaviour> {
        let ours = match self.mode {
            Mode::Client => id.is_client_initiated(),
            Mode::Server => !id.is_client_initiated(),
        };
        if ours {
            return Err(Misbehaviour::WrongParity(id));
        }
        if self.streams.contains_key(&id) {
            return Err(Misbehaviour::DuplicateSyn(id));
        }
        self.highest_inbound = self.highest_inbound.max(id.get());
        if self.local_go_away
            || self.streams.len() >= self.config.max_streams
            || self.events.len() >= self.config.max_pending_events
        {
            self.queue_control(Header::window_update(id, Flags::RST, 0))?;
            return Ok(false);
        }
        self.insert_stream(id, Stream::new(false));
        self.queue(Header::window_update(id, Flags::ACK, 0));
        self.events.push_back(YamuxEvent::InboundStream(id));
        Ok(true)
    }

    fn never_opened(&self, id: StreamId) -> bool {
        let ours = match self.mode {
            Mode::Client => id.is_client_initiated(),
            Mode::Server => !id.is_client_initiated(),
        };
        if ours {
            self.next_outbound.is_some_and(|next| id.get() >= next)
        } else {
            id.get() > self.highest_inbound
        }
    }

    fn on_ping(&mut self, header: Header) -> Result<(), Misbehaviour> {
        if header.flags.contains(Flags::SYN) {
            self.queue_control(Header::ping(Flags::ACK, header.length))?;
        } else if header.flags.contains(Flags::ACK)
            && let Some(pos) = self
                .outstanding_pings
                .iter()
                .position(|&p| p == header.length)
        {
            self.outstanding_pings.remove(pos);
            self.events.push_back(YamuxEvent::Pong(header.length));
        }
        Ok(())
    }

    fn on_go_away(&mut self, header: Header) {
        let code = GoAwayCode::from_u32(header.length);
        if self.remote_go_away && code == GoAwayCode::Normal {
            return;
        }
        self.remote_go_away = true;
        self.events.push_back(YamuxEvent::GoAway { code });
        if code != GoAwayCode::Normal {
            self.terminate();
        }
    }

    fn on_remote_fin(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.remote_fin
        {
            stream.remote_fin = true;
            self.events.push_back(YamuxEvent::StreamFinished(id));
        }
    }

    fn deliver(&mut self, id: StreamId, bytes: &[u8]) {
        if let Some(stream) = self.streams.get_mut(&id)
            && stream.push_data(bytes)
        {
            self.events.push_back(YamuxEvent::Readable(id));
        }
    }

    fn skip_body(&mut self, id: StreamId, length: u32) {
        if length > 0 {
            self.decoder = Decoder::Body {
                stream: id,
                remaining: length,
                fin: false,
                deliver: false,
            };
        }
    }

    // ---------------------------------------------------------------- internals

    /// Returns consumed bytes to the peer once half the window was read.
    fn return_credit(&mut self, id: StreamId) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.remote_fin || stream.consumed_unacked < stream.window_target / 2 {
            return;
        }
        let mut delta = stream.consumed_unacked;
        if stream.recv_buf.is_empty() && stream.window_target < self.config.max_stream_window {
            // The reader keeps up, so the window is what limits throughput: double it.
            let headroom = self
                .config
                .max_total_receive_window
                .saturating_sub(self.total_window_target);
            let growth = stream
                .window_target
                .min(self.config.max_stream_window - stream.window_target)
                .min(u32::try_from(headroom).unwrap_or(u32::MAX));
            stream.window_target += growth;
            self.total_window_target += u64::from(growth);
            delta += growth;
        }
        stream.recv_window += delta;
        stream.consumed_unacked = 0;
        self.queue(Header::window_update(id, Flags::EMPTY, delta));
    }

    fn check_live(&self) -> Result<(), YamuxError> {
        if self.terminated {
            Err(YamuxError::Terminated)
        } else {
            Ok(())
        }
    }

    fn insert_stream(&mut self, id: StreamId, stream: Stream) {
        self.total_window_target += u64::from(stream.window_target);
        self.streams.insert(id, stream);
    }

    fn remove_stream(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.remove(&id) {
            self.total_window_target -= u64::from(stream.window_target);
        }
    }

    fn remove_if_done(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(Stream::is_done) {
            self.remove_stream(id);
        }
    }

    fn queue(&mut self, header: Header) {
        self.out.extend_from_slice(&header.encode());
    }

    /// Queues a frame the peer made us send, enforcing the control backlog.
    fn queue_control(&mut self, header: Header) -> Result<(), Misbehaviour> {
        if self.control_backlog >= self.config.max_control_backlog {
            return Err(Misbehaviour::ControlFlood);
        }
        self.control_backlog += 1;
        self.queue(header);
        Ok(())
    }

    /// Ends the session for a peer fault: go-away (protocol error), then nothing more.
    fn fail(&mut self, error: SessionError) {
        if self.terminated {
            return;
        }
        self.queue(Header::go_away(GoAwayCode::ProtocolError));
        self.events.push_back(YamuxEvent::SessionError(error));
        self.terminate();
    }

    fn terminate(&mut self) {
        self.terminated = true;
        self.streams.clear();
        self.total_window_target = 0;
        self.outstanding_pings.clear();
        self.decoder = Decoder::header();
    }
}
