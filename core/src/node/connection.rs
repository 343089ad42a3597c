//! One QUIC connection and the streams the node runs on it.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{Dir, StreamEvent, VarInt};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::RngCore;
use rustls::pki_types::CertificateDer;

use super::action::Action;
use super::config::NodeConfig;
use super::error::{ConnectionFailure, StreamOpenFailure};
use super::event::Event;
use super::ids::{ConnectionId, Direction, StreamHandle};
use super::stream::{Negotiation, Purpose, RelayRole, StreamEntry, StreamKind};
use super::stream_table::StreamTable;
use super::transport::{Chunk, StreamKey, Transport, Written};
use crate::framing::FrameDecoder;
use crate::framing::MAX_UVARINT_LEN;
use crate::identity::PeerId;
use crate::multistream::{Dialer, Listener, Negotiated, Progress};
use crate::protocols::identify::{self, IdentifyInfo};
use crate::protocols::ping::{PING_SIZE, PingResponder, Pinger};
use crate::protocols::{IDENTIFY, PING};
use crate::relay::wire::MAX_MESSAGE_SIZE;
use crate::relay::{HOP_PROTOCOL, STOP_PROTOCOL};
use crate::tls::{self, VerificationOutcome};

/// Stream reset / stop code for a protocol violation or a refused negotiation.
pub(crate) const CODE_PROTOCOL_ERROR: u32 = 1;
/// Stream reset / stop code for a stream that did not make progress in time.
pub(crate) const CODE_TIMED_OUT: u32 = 2;
/// Stream reset / stop code for a stream the application reset without a code of its own.
pub(crate) const CODE_CANCELLED: u32 = 0;
/// Connection close code for a peer silent for the whole idle timeout.
pub(crate) const CLOSE_SILENT: u32 = 3;
/// Connection close code for an identity failure after the handshake.
pub(crate) const CLOSE_IDENTITY: u32 = 1;

/// Most bytes the node reads from an internal stream in one go.
const READ_CHUNK: usize = 4096;
/// Queued echo bytes beyond which a ping responder stops reading (and so pushes back on the
/// peer through QUIC flow control) until its echoes drain.
const MAX_PENDING_ECHO: usize = 4096;

/// Lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// TLS handshake in progress.
    Handshaking,
    /// Handshake done, peer authenticated.
    Established,
    /// Closed or lost; kept until quinn-proto drains it. `ConnectionClosed` was reported.
    Closed,
}

/// What the node knows about itself, for identify answers and inbound negotiation.
#[derive(Debug)]
pub(crate) struct LocalInfo {
    pub(crate) config: NodeConfig,
    pub(crate) public_key: crate::identity::PublicKey,
    /// Protocols inbound streams may negotiate: identify, ping, relay protocols, then the
    /// application's.
    pub(crate) supported: std::sync::Arc<[String]>,
    /// How long a relay-protocol stream may take to deliver its message.
    pub(crate) request_timeout: std::time::Duration,
}

/// Bounded queue of events for the application.
#[derive(Debug)]
pub(crate) struct EventQueue {
    events: VecDeque<Event>,
    max: usize,
    pub(crate) dropped: u64,
}

impl EventQueue {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            events: VecDeque::new(),
            max,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, event: Event) {
        if self.events.len() >= self.max {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(event);
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// Everything a connection needs from the node while it processes events.
pub(crate) struct Ctx<'a> {
    pub(crate) now: Instant,
    pub(crate) id: ConnectionId,
    pub(crate) events: &'a mut EventQueue,
    pub(crate) local: &'a LocalInfo,
    pub(crate) ping_rng: &'a mut ChaCha20Rng,
    pub(crate) actions: &'a mut Vec<Action>,
}

/// A connection of the node.
pub(crate) struct Conn {
    pub(crate) transport: Transport,
    pub(crate) direction: Direction,
    pub(crate) state: ConnState,
    pub(crate) peer: Option<PeerId>,
    /// For dials: the PeerId the certificate must carry.
    /// Boxed, like `refused_certificate`: most connections of a relay are inbound and have none.
    pub(crate) expected_peer: Option<Box<PeerId>>,
    /// For dials: where our certificate verifier records a typed refusal.
    pub(crate) verification: Option<VerificationOutcome>,
    /// For inbound connections: the typed reason our verifier refused the peer's certificate.
    pub(crate) refused_certificate: Option<Box<tls::CertificateError>>,
    /// The streams in use; it owns no storage while there are none (DESIGN §10 memory).
    pub(crate) streams: StreamTable,
    pub(crate) ping_in_flight: Option<StreamKey>,
    /// The deadline currently registered in the node's timer set (see `Node::refresh_timer`).
    pub(crate) registered_timer: Option<Instant>,
    /// Some stream may be waiting on a deadline: set when a stream is given one, cleared when
    /// a scan finds none, so a busy connection's streams are not all scanned at every refresh.
    pub(crate) stream_deadlines_armed: bool,
    /// When the last datagram of this (direct) connection arrived: the liveness clock.
    pub(crate) last_rx: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(
        transport: Transport,
        direction: Direction,
        expected_peer: Option<PeerId>,
        verification: Option<VerificationOutcome>,
    ) -> Self {
        Self {
            transport,
            direction,
            state: ConnState::Handshaking,
            peer: None,
            expected_peer: expected_peer.map(Box::new),
            verification,
            refused_certificate: None,
            streams: StreamTable::default(),
            ping_in_flight: None,
            registered_timer: None,
            stream_deadlines_armed: false,
            last_rx: None,
        }
    }

    fn handle_of(&self, ctx: &Ctx<'_>, id: StreamKey) -> StreamHandle {
        StreamHandle {
            connection: ctx.id,
            id,
        }
    }

    /// Processes every pending event of this connection's transport.
    pub(crate) fn drive(&mut self, ctx: &mut Ctx<'_>) {
        match &mut self.transport {
            Transport::Quic(_) => self.drive_quic(ctx),
            Transport::Relayed(_) => self.drive_relayed(ctx),
        }
    }

    fn drive_quic(&mut self, ctx: &mut Ctx<'_>) {
        // quinn-proto yields a bounded number of events per input; each handler below does
        // bounded work, so this loop ends.
        while let Some(event) = self.transport.quic().and_then(|q| q.poll()) {
            match event {
                quinn_proto::Event::HandshakeDataReady => {}
                quinn_proto::Event::Connected => {
                    let peer = self.quic_peer();
                    self.on_connected(peer, ctx)
                }
                quinn_proto::Event::ConnectionLost { reason } => self.on_lost(reason.into(), ctx),
                quinn_proto::Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    self.accept_streams(ctx)
                }
                quinn_proto::Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    // We allow no unidirectional streams; quinn refuses them at the limit.
                }
                quinn_proto::Event::Stream(StreamEvent::Readable { id }) => {
                    self.on_readable(StreamKey::Quic(id), ctx)
                }
                quinn_proto::Event::Stream(StreamEvent::Writable { id }) => {
                    self.on_writable(StreamKey::Quic(id), ctx)
                }
                quinn_proto::Event::Stream(StreamEvent::Finished { id }) => {
                    self.with_entry(StreamKey::Quic(id), |entry| entry.send_closed = true);
                }
                quinn_proto::Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                    self.on_stopped(StreamKey::Quic(id), error_code.into_inner(), ctx)
                }
                quinn_proto::Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => {
                    ctx.actions
                        .push(Action::StreamsAvailable { connection: ctx.id });
                    ctx.events
                        .push(Event::StreamsAvailable { connection: ctx.id });
                }
                quinn_proto::Event::Stream(StreamEvent::Available { dir: Dir::Uni }) => {}
                quinn_proto::Event::DatagramReceived | quinn_proto::Event::DatagramsUnblocked => {}
            }
        }
    }

    fn drive_relayed(&mut self, ctx: &mut Ctx<'_>) {
        use crate::yamux::YamuxEvent;
        let Transport::Relayed(relayed) = &mut self.transport else {
            return;
        };
        if self.state == ConnState::Handshaking && relayed.is_ready() {
            let peer = relayed
                .authenticated_peer()
                .ok_or_else(|| tls::CertificateError::Malformed("no authenticated peer".into()));
            self.on_connected(peer, ctx);
        }
        // yamux bounds its event queue; each handler does bounded work.
        for _ in 0..4096 {
            let Transport::Relayed(relayed) = &mut self.transport else {
                return;
            };
            let Some(event) = relayed.yamux_mut().and_then(|y| y.poll_event()) else {
                return;
            };
            match event {
                YamuxEvent::InboundStream(id) => self.accept_stream(StreamKey::Yamux(id), ctx),
                YamuxEvent::Readable(id)
                | YamuxEvent::StreamFinished(id)
                | YamuxEvent::StreamReset(id) => self.on_readable(StreamKey::Yamux(id), ctx),
                YamuxEvent::Writable(id) => self.on_writable(StreamKey::Yamux(id), ctx),
                YamuxEvent::GoAway { code } => self.report_closed(
                    ConnectionFailure::Relayed(format!("peer sent go-away {code:?}")),
                    ctx,
                ),
                YamuxEvent::SessionError(error) => {
                    self.report_closed(ConnectionFailure::Relayed(format!("yamux: {error}")), ctx)
                }
                YamuxEvent::Pong(_) => {}
            }
        }
    }

    /// The PeerId of a direct connection's verified certificate.
    fn quic_peer(&mut self) -> Result<PeerId, tls::CertificateError> {
        let certificates = self
            .transport
            .quic()
            .and_then(|q| q.crypto_session().peer_identity())
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok());
        match certificates {
            // Our verifier checked them in the handshake; this only reads the PeerId.
            Some(certs) => tls::config::peer_id_from_accepted_certificates(&certs),
            None => Err(tls::CertificateError::Malformed(
                "no peer certificate".into(),
            )),
        }
    }

    fn with_entry(&mut self, id: StreamKey, f: impl FnOnce(&mut StreamEntry)) {
        if let Some(entry) = self.streams.get_mut(&id) {
            f(entry);
            if entry.is_done() {
                self.streams.remove(&id);
            }
        }
    }

    fn on_connected(&mut self, verified: Result<PeerId, tls::CertificateError>, ctx: &mut Ctx<'_>) {
        let peer = match verified {
            Ok(peer) => peer,
            Err(error) => {
                // The verifier accepted this certificate during the handshake, so this is not
                // expected; refuse the connection rather than run it without an identity.
                if let Some(quic) = self.transport.quic() {
                    quic.close(
                        ctx.now,
                        VarInt::from_u32(CLOSE_IDENTITY),
                        Bytes::from_static(b"identity"),
                    );
                }
                self.report_closed(ConnectionFailure::Certificate(error), ctx);
                return;
            }
        };
        self.peer = Some(peer);
        self.state = ConnState::Established;
        let (remote, relay) = match &self.transport {
            Transport::Quic(q) => (q.conn.remote_address(), None),
            Transport::Relayed(r) => (r.relay_addr, Some(r.relay_peer)),
        };
        ctx.events.push(Event::ConnectionEstablished {
            connection: ctx.id,
            peer,
            remote,
            direction: self.direction,
            relay,
        });
        // Identify runs on every connection; failure to open is only possible at a zero stream
        // limit, which validate() forbids.
        let _ = self.open_outbound(IDENTIFY, Purpose::Identify, ctx);
    }

    fn on_lost(&mut self, failure: ConnectionFailure, ctx: &mut Ctx<'_>) {
        // A typed certificate refusal recorded by our verifier (either side) explains the loss
        // better than the TLS alert string quinn-proto reports.
        let refused = self.refused_certificate.take().map(|e| *e).or_else(|| {
            self.verification
                .as_ref()
                .and_then(VerificationOutcome::take_failure)
        });
        let failure = match refused {
            Some(error) => ConnectionFailure::Certificate(error),
            None => failure,
        };
        self.report_closed(failure, ctx);
    }

    /// Reports the end of the connection once, failing whatever was pending on it.
    pub(crate) fn report_closed(&mut self, failure: ConnectionFailure, ctx: &mut Ctx<'_>) {
        if self.state == ConnState::Closed {
            return;
        }
        self.state = ConnState::Closed;
        let streams = self.streams.take_all();
        for (id, entry) in streams {
            self.report_stream_failure(id, &entry.kind, StreamOpenFailure::ConnectionClosed, ctx);
        }
        self.ping_in_flight = None;
        ctx.actions.push(Action::ConnectionClosed {
            connection: ctx.id,
            peer: self.peer,
        });
        ctx.events.push(Event::ConnectionClosed {
            connection: ctx.id,
            peer: self.peer.or(self.expected_peer.as_deref().copied()),
            failure,
        });
    }

    /// Opens an outbound bidirectional stream and starts negotiating `protocol` on it.
    pub(crate) fn open_outbound(
        &mut self,
        protocol: &str,
        purpose: Purpose,
        ctx: &mut Ctx<'_>,
    ) -> Option<StreamKey> {
        // Callers validate the protocol id first, so the dialer cannot refuse it; check anyway
        // rather than open a stream we cannot use.
        let dialer = Dialer::new([protocol]).ok()?;
        let id = self.transport.open_bi()?;
        let deadline = ctx.now + ctx.local.config.negotiation_timeout;
        let mut entry = StreamEntry::new(StreamKind::Negotiating {
            negotiation: Negotiation::Dialer(dialer),
            purpose,
            deadline,
        });
        if let StreamKind::Negotiating { negotiation, .. } = &mut entry.kind {
            while let Some(bytes) = negotiation.poll_output() {
                entry.pending_write.extend_from_slice(&bytes);
            }
        }
        self.stream_deadlines_armed = true;
        self.streams.insert(id, Box::new(entry));
        self.flush(id);
        Some(id)
    }

    fn accept_streams(&mut self, ctx: &mut Ctx<'_>) {
        // Bounded by the peer's stream limit, which we set.
        while let Some(id) = self.transport.accept_bi() {
            self.accept_stream(id, ctx);
        }
        self.grow_stream_credit(ctx);
    }

    /// Raises the peer's stream credit to `max_streams_per_connection` once it holds half of
    /// its current credit open. Inbound connections start with `initial_inbound_streams`
    /// (DESIGN §10 memory: quinn keeps bookkeeping for every allowed stream); a peer that opens
    /// circuits or many application streams gets the full credit one round trip later.
    fn grow_stream_credit(&mut self, ctx: &Ctx<'_>) {
        let max = u64::from(ctx.local.config.max_streams_per_connection);
        let Some(quic) = self.transport.quic() else {
            return;
        };
        let credit = quic.max_concurrent_streams(Dir::Bi);
        if credit < max && quic.streams().remote_open_streams(Dir::Bi) * 2 >= credit {
            quic.set_max_concurrent_streams(Dir::Bi, VarInt::from_u64(max).unwrap_or(VarInt::MAX));
        }
    }

    /// Starts listening for a protocol proposal on a stream the peer opened.
    fn accept_stream(&mut self, id: StreamKey, ctx: &mut Ctx<'_>) {
        let deadline = ctx.now + ctx.local.config.negotiation_timeout;
        let listener = Listener::new(std::sync::Arc::clone(&ctx.local.supported));
        self.streams.insert(
            id,
            Box::new(StreamEntry::new(StreamKind::Negotiating {
                negotiation: Negotiation::Listener(listener),
                purpose: Purpose::App,
                deadline,
            })),
        );
        self.stream_deadlines_armed = true;
        self.on_readable(id, ctx);
    }

    fn read_chunk(&mut self, id: StreamKey, max: usize) -> Chunk {
        self.transport.read_chunk(id, max)
    }

    /// Reads and acts on whatever arrived on stream `id`.
    pub(crate) fn on_readable(&mut self, id: StreamKey, ctx: &mut Ctx<'_>) {
        // Each round consumes bytes from quinn's bounded receive buffer or changes state, so
        // the loop is bounded by the stream's flow-control window.
        loop {
            let Some(entry) = self.streams.get_mut(&id) else {
                return;
            };
            match &entry.kind {
                StreamKind::Parked { .. } => return,
                StreamKind::Bridged { circuit } => {
                    ctx.actions.push(Action::Bridge { circuit: *circuit });
                    return;
                }
                StreamKind::Circuit { relayed } => {
                    ctx.actions.push(Action::Circuit { relayed: *relayed });
                    return;
                }
                StreamKind::App { .. } => {
                    ctx.events.push(Event::StreamReadable {
                        stream: StreamHandle {
                            connection: ctx.id,
                            id,
                        },
                    });
                    return;
                }
                StreamKind::PingServe { .. } if entry.pending_write.len() >= MAX_PENDING_ECHO => {
                    // Backpressure: resume when our echoes drain (on_writable).
                    return;
                }
                _ => {}
            }
            if entry.recv_closed {
                return;
            }
            match self.read_chunk(id, READ_CHUNK) {
                Chunk::Blocked => return,
                Chunk::Data(data) => self.on_stream_data(id, data, ctx),
                Chunk::Finished => {
                    self.on_stream_end(id, None, ctx);
                    return;
                }
                Chunk::Reset(code) => {
                    self.on_stream_end(id, Some(code), ctx);
                    return;
                }
                Chunk::Closed => {
                    self.with_entry(id, |e| e.recv_closed = true);
                    return;
                }
            }
        }
    }

    fn on_stream_data(&mut self, id: StreamKey, data: Bytes, ctx: &mut Ctx<'_>) {
        let handle = self.handle_of(ctx, id);
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        match &mut entry.kind {
            StreamKind::Negotiating { negotiation, .. } => {
                let progress = negotiation.handle_input(&data);
                while let Some(out) = negotiation.poll_output() {
                    entry.pending_write.extend_from_slice(&out);
                }
                match progress {
                    Ok(Progress::Pending) => self.flush(id),
                    Ok(Progress::Negotiated(negotiated)) => {
                        self.flush(id);
                        self.on_negotiated(id, negotiated, ctx);
                    }
                    Err(error) => {
                        // Close gracefully rather than reset, so a listener's last `na` still
                        // reaches the peer and tells it why.
                        self.flush(id);
                        if let Some(entry) = self.streams.remove(&id) {
                            let failure = StreamOpenFailure::Negotiation(error);
                            self.report_stream_failure(id, &entry.kind, failure, ctx);
                        }
                        self.finish_and_stop(id, CODE_PROTOCOL_ERROR);
                    }
                }
            }
            StreamKind::App { .. } => {
                // Application data is read by the application; on_readable never reads it.
                debug_assert!(false, "node read application data on {handle}");
            }
            StreamKind::IdentifyFetch { buffer, .. } => {
                let max = identify::MAX_MESSAGE_LEN + MAX_UVARINT_LEN;
                if buffer.len() + data.len() > max {
                    ctx.events.push(Event::IdentifyFailed {
                        connection: ctx.id,
                        reason: format!("identify record exceeds {max} bytes"),
                    });
                    self.streams.remove(&id);
                    self.abort_stream(id, CODE_PROTOCOL_ERROR);
                } else {
                    buffer.extend_from_slice(&data);
                }
            }
            StreamKind::PingOut { pinger, .. } => match pinger.handle_input(&data, ctx.now) {
                Ok(None) => {}
                Ok(Some(rtt)) => {
                    entry.kind = StreamKind::PingDone;
                    entry.finish_when_flushed = true;
                    self.ping_in_flight = None;
                    ctx.events.push(Event::PingSucceeded {
                        connection: ctx.id,
                        rtt,
                    });
                    self.flush(id);
                }
                Err(error) => {
                    self.ping_in_flight = None;
                    ctx.events.push(Event::PingFailed {
                        connection: ctx.id,
                        reason: error.to_string(),
                    });
                    self.streams.remove(&id);
                    self.abort_stream(id, CODE_PROTOCOL_ERROR);
                }
            },
            StreamKind::PingServe { responder } => {
                let echo = responder.handle_input(&data);
                entry.pending_write.extend_from_slice(&echo);
                self.flush(id);
            }
            StreamKind::IdentifyServe | StreamKind::PingDone | StreamKind::Closing => {
                // The peer has nothing more to say on these; ignore stray bytes.
            }
            StreamKind::RelayRead { role, decoder, .. } => {
                decoder.extend(&data);
                let role = *role;
                let frame = match decoder.decode() {
                    Ok(None) => return,
                    Ok(Some(frame)) => Ok(frame),
                    Err(error) => Err(error),
                };
                let StreamKind::RelayRead { decoder, .. } =
                    std::mem::replace(&mut entry.kind, StreamKind::Parked { role })
                else {
                    return;
                };
                ctx.actions.push(Action::RelayMessage {
                    stream: handle,
                    role,
                    frame,
                    rest: decoder.into_remaining(),
                });
            }
            StreamKind::Parked { .. } | StreamKind::Bridged { .. } | StreamKind::Circuit { .. } => {
                // on_readable never reads these.
            }
        }
    }

    fn on_negotiated(&mut self, id: StreamKey, negotiated: Negotiated, ctx: &mut Ctx<'_>) {
        let handle = self.handle_of(ctx, id);
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        let StreamKind::Negotiating {
            purpose,
            negotiation,
            deadline: negotiation_deadline,
        } = &entry.kind
        else {
            return;
        };
        let inbound = matches!(negotiation, Negotiation::Listener(_));
        let purpose = purpose.clone();
        // DESIGN §5.1: a served HOP/STOP stream gets `request_timeout` for negotiation and its
        // first message together, counted from when the peer opened it.
        let opened_at = *negotiation_deadline - ctx.local.config.negotiation_timeout;
        let serve_deadline = (opened_at + ctx.local.request_timeout).max(ctx.now);
        let Negotiated {
            protocol,
            remaining,
        } = negotiated;
        if inbound {
            match protocol.as_str() {
                IDENTIFY => {
                    entry.kind = StreamKind::IdentifyServe;
                    let info = IdentifyInfo {
                        public_key: ctx.local.public_key.clone(),
                        protocol_version: crate::protocols::PROTOCOL_VERSION.to_owned(),
                        agent_version: ctx.local.config.agent_version.clone(),
                        listen_addrs: ctx.local.config.listen_addrs.clone(),
                        observed_addr: self
                            .transport
                            .remote_address()
                            .map(crate::addr::quic_multiaddr),
                        protocols: ctx.local.supported.to_vec(),
                    };
                    entry
                        .pending_write
                        .extend_from_slice(&identify::encode(&info));
                    entry.finish_when_flushed = true;
                    self.flush(id);
                }
                PING => {
                    let mut responder = PingResponder::new();
                    let echo = responder.handle_input(&remaining);
                    entry.pending_write.extend_from_slice(&echo);
                    entry.kind = StreamKind::PingServe { responder };
                    self.flush(id);
                }
                HOP_PROTOCOL => {
                    self.start_relay_read(id, RelayRole::HopServe, remaining, serve_deadline, ctx);
                }
                STOP_PROTOCOL => {
                    self.start_relay_read(id, RelayRole::StopServe, remaining, serve_deadline, ctx);
                }
                _ => {
                    entry.kind = StreamKind::App {
                        protocol: protocol.clone(),
                        leftover: remaining,
                        ended: None,
                    };
                    ctx.events.push(Event::InboundStream {
                        stream: handle,
                        protocol,
                    });
                    ctx.events.push(Event::StreamReadable { stream: handle });
                }
            }
            return;
        }
        match purpose {
            Purpose::App => {
                entry.kind = StreamKind::App {
                    protocol: protocol.clone(),
                    leftover: remaining,
                    ended: None,
                };
                ctx.events.push(Event::StreamReady {
                    stream: handle,
                    protocol,
                });
                ctx.events.push(Event::StreamReadable { stream: handle });
            }
            Purpose::Identify => {
                let mut buffer = BytesMut::new();
                buffer.extend_from_slice(&remaining);
                let deadline = ctx.now + ctx.local.config.negotiation_timeout;
                entry.kind = StreamKind::IdentifyFetch { buffer, deadline };
                // We send nothing on an identify request stream.
                entry.finish_when_flushed = true;
                self.stream_deadlines_armed = true;
                self.flush(id);
            }
            Purpose::Ping => {
                let mut payload = [0u8; PING_SIZE];
                ctx.ping_rng.fill_bytes(&mut payload);
                let mut pinger = Pinger::new();
                let deadline = ctx.now + ctx.local.config.negotiation_timeout;
                let sent = pinger.send(payload, ctx.now);
                let early = match &sent {
                    Ok(bytes) => {
                        entry.pending_write.extend_from_slice(bytes);
                        if remaining.is_empty() {
                            Ok(None)
                        } else {
                            pinger.handle_input(&remaining, ctx.now)
                        }
                    }
                    Err(error) => Err(*error),
                };
                entry.kind = StreamKind::PingOut { pinger, deadline };
                self.stream_deadlines_armed = true;
                self.flush(id);
                if let Err(error) = early {
                    self.fail_ping(id, error.to_string(), ctx);
                }
            }
            Purpose::Relay { role, request } => {
                entry.pending_write.extend_from_slice(&request);
                self.flush(id);
                let deadline = ctx.now + ctx.local.request_timeout;
                self.start_relay_read(id, role, remaining, deadline, ctx);
            }
        }
    }

    /// Starts reading the one framed message a relay-protocol stream expects by `deadline`.
    fn start_relay_read(
        &mut self,
        id: StreamKey,
        role: RelayRole,
        remaining: Bytes,
        deadline: Instant,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        entry.kind = StreamKind::RelayRead {
            role,
            decoder: FrameDecoder::new(MAX_MESSAGE_SIZE),
            deadline,
        };
        self.stream_deadlines_armed = true;
        if !remaining.is_empty() {
            self.on_stream_data(id, remaining, ctx);
        }
    }

    fn fail_ping(&mut self, id: StreamKey, reason: String, ctx: &mut Ctx<'_>) {
        self.ping_in_flight = None;
        ctx.events.push(Event::PingFailed {
            connection: ctx.id,
            reason,
        });
        self.streams.remove(&id);
        self.abort_stream(id, CODE_PROTOCOL_ERROR);
    }

    /// The peer finished (`code == None`) or reset its sending side.
    fn on_stream_end(&mut self, id: StreamKey, code: Option<u64>, ctx: &mut Ctx<'_>) {
        let Some(mut entry) = self.streams.remove(&id) else {
            return;
        };
        entry.recv_closed = true;
        match entry.kind {
            StreamKind::Negotiating { .. } => {
                let failure = match code {
                    Some(code) => StreamOpenFailure::Reset(code),
                    None => StreamOpenFailure::Finished,
                };
                self.report_stream_failure(id, &entry.kind, failure, ctx);
                self.abort_stream(id, CODE_PROTOCOL_ERROR);
                return;
            }
            StreamKind::IdentifyFetch { ref buffer, .. } => {
                let event = match code {
                    Some(code) => Event::IdentifyFailed {
                        connection: ctx.id,
                        reason: format!("identify stream reset by peer (code {code})"),
                    },
                    None => self.identify_event(buffer, ctx),
                };
                ctx.events.push(event);
                entry.kind = StreamKind::IdentifyServe;
            }
            StreamKind::PingOut { .. } => {
                self.fail_ping(id, "peer closed the ping stream before echoing".into(), ctx);
                return;
            }
            StreamKind::PingServe { .. } => {
                // The pinger is done: finish our side once the last echo is out.
                entry.finish_when_flushed = true;
            }
            StreamKind::App { .. } => {
                // Left to the application's read; not reached (App streams are not read here).
            }
            StreamKind::IdentifyServe | StreamKind::PingDone | StreamKind::Closing => {}
            StreamKind::RelayRead { role, .. } | StreamKind::Parked { role } => {
                ctx.actions.push(Action::RelayStreamFailed {
                    stream: StreamHandle {
                        connection: ctx.id,
                        id,
                    },
                    role,
                    unsupported: false,
                    reason: match code {
                        Some(code) => format!("stream reset by peer (code {code})"),
                        None => "stream finished before its message".into(),
                    },
                });
                self.abort_stream(id, CODE_PROTOCOL_ERROR);
                return;
            }
            StreamKind::Bridged { circuit } => ctx.actions.push(Action::Bridge { circuit }),
            StreamKind::Circuit { relayed } => ctx.actions.push(Action::Circuit { relayed }),
        }
        if code.is_some() && !entry.send_closed {
            // The peer abandoned the stream: stop writing to it too.
            self.abort_stream(id, CODE_CANCELLED);
            return;
        }
        if !entry.is_done() {
            self.streams.insert(id, entry);
            self.flush(id);
        }
    }

    fn identify_event(&self, buffer: &BytesMut, ctx: &Ctx<'_>) -> Event {
        match identify::decode_complete(buffer) {
            Err(error) => Event::IdentifyFailed {
                connection: ctx.id,
                reason: error.to_string(),
            },
            Ok(received) => {
                let info = received.info;
                let claimed = info.public_key.to_peer_id();
                if Some(claimed) != self.peer {
                    Event::IdentifyFailed {
                        connection: ctx.id,
                        reason: format!(
                            "identify key is for {claimed}, but the connection is authenticated as {}",
                            self.peer.map(|p| p.to_string()).unwrap_or_default()
                        ),
                    }
                } else {
                    Event::Identified {
                        connection: ctx.id,
                        info: Box::new(info),
                    }
                }
            }
        }
    }

    fn on_writable(&mut self, id: StreamKey, ctx: &mut Ctx<'_>) {
        match self.streams.get(&id).map(|e| &e.kind) {
            Some(StreamKind::Bridged { circuit }) => {
                ctx.actions.push(Action::Bridge { circuit: *circuit });
                return;
            }
            Some(StreamKind::Circuit { relayed }) => {
                ctx.actions.push(Action::Circuit { relayed: *relayed });
                return;
            }
            _ => {}
        }
        let is_app = matches!(
            self.streams.get(&id).map(|e| &e.kind),
            Some(StreamKind::App { .. })
        );
        self.flush(id);
        if is_app {
            ctx.events.push(Event::StreamWritable {
                stream: StreamHandle {
                    connection: ctx.id,
                    id,
                },
            });
        } else if matches!(
            self.streams.get(&id).map(|e| &e.kind),
            Some(StreamKind::PingServe { .. })
        ) {
            // Echo backlog may have drained: resume reading.
            self.on_readable(id, ctx);
        }
    }

    /// The peer sent STOP_SENDING: it reads no more of this stream. That ends only our sending
    /// side. A stream whose remaining work is reading goes on: rust-libp2p answers identify
    /// (and a relay answers RESERVE) by writing, finishing and dropping the stream, and quinn
    /// stops the receiving side on drop, so the STOP_SENDING can arrive together with the very
    /// answer we are waiting for.
    fn on_stopped(&mut self, id: StreamKey, code: u64, ctx: &mut Ctx<'_>) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        entry.send_closed = true;
        let all_sent = entry.pending_write.is_empty();
        entry.pending_write.clear();
        if all_sent && only_reads_from_now_on(&entry.kind) {
            self.with_entry(id, |_| {});
            return;
        }
        match &entry.kind {
            StreamKind::App { .. } => {
                ctx.events.push(Event::StreamStopped {
                    stream: StreamHandle {
                        connection: ctx.id,
                        id,
                    },
                    code,
                });
            }
            StreamKind::Bridged { circuit } => {
                ctx.actions.push(Action::Bridge { circuit: *circuit })
            }
            StreamKind::Circuit { relayed } => {
                ctx.actions.push(Action::Circuit { relayed: *relayed })
            }
            StreamKind::Negotiating { .. }
            | StreamKind::PingOut { .. }
            | StreamKind::IdentifyFetch { .. }
            | StreamKind::RelayRead { .. }
            | StreamKind::Parked { .. } => {
                if let Some(entry) = self.streams.remove(&id) {
                    let failure = StreamOpenFailure::Reset(code);
                    self.report_stream_failure(id, &entry.kind, failure, ctx);
                }
                self.abort_stream(id, CODE_CANCELLED);
                return;
            }
            _ => {}
        }
        self.with_entry(id, |_| {});
    }

    /// Reports the failure of a stream the node or application was waiting on.
    fn report_stream_failure(
        &mut self,
        id: StreamKey,
        kind: &StreamKind,
        failure: StreamOpenFailure,
        ctx: &mut Ctx<'_>,
    ) {
        let stream = StreamHandle {
            connection: ctx.id,
            id,
        };
        match kind {
            StreamKind::Negotiating {
                purpose,
                negotiation,
                ..
            } => match (purpose, negotiation) {
                (_, Negotiation::Listener(_)) => {}
                (Purpose::App, _) => ctx.events.push(Event::StreamOpenFailed { stream, failure }),
                (Purpose::Identify, _) => ctx.events.push(Event::IdentifyFailed {
                    connection: ctx.id,
                    reason: failure.to_string(),
                }),
                (Purpose::Ping, _) => {
                    self.ping_in_flight = None;
                    ctx.events.push(Event::PingFailed {
                        connection: ctx.id,
                        reason: failure.to_string(),
                    });
                }
                (Purpose::Relay { role, .. }, _) => ctx.actions.push(Action::RelayStreamFailed {
                    stream,
                    role: *role,
                    unsupported: matches!(
                        failure,
                        StreamOpenFailure::Negotiation(
                            crate::multistream::NegotiationError::Unsupported { .. }
                        )
                    ),
                    reason: failure.to_string(),
                }),
            },
            StreamKind::RelayRead { role, .. } | StreamKind::Parked { role } => {
                ctx.actions.push(Action::RelayStreamFailed {
                    stream,
                    role: *role,
                    unsupported: false,
                    reason: failure.to_string(),
                })
            }
            StreamKind::Bridged { circuit } => {
                ctx.actions.push(Action::Bridge { circuit: *circuit })
            }
            StreamKind::Circuit { relayed } => {
                ctx.actions.push(Action::Circuit { relayed: *relayed })
            }
            StreamKind::IdentifyFetch { .. } => ctx.events.push(Event::IdentifyFailed {
                connection: ctx.id,
                reason: failure.to_string(),
            }),
            StreamKind::PingOut { .. } => {
                self.ping_in_flight = None;
                ctx.events.push(Event::PingFailed {
                    connection: ctx.id,
                    reason: failure.to_string(),
                });
            }
            _ => {}
        }
    }

    /// Resets our sending side and stops the peer's, ignoring streams already closed.
    pub(crate) fn abort_stream(&mut self, id: StreamKey, code: u32) {
        self.transport.abort(id, code);
    }

    /// Finishes our sending side (after anything already written) and stops the peer's.
    fn finish_and_stop(&mut self, id: StreamKey, code: u32) {
        self.transport.finish_and_stop(id, code);
    }

    /// Writes what the node queued on stream `id`, then finishes it if asked.
    pub(crate) fn flush(&mut self, id: StreamKey) {
        let Some(entry) = self.streams.get_mut(&id) else {
            return;
        };
        while !entry.pending_write.is_empty() && !entry.send_closed {
            match self.transport.write(id, &entry.pending_write) {
                Written::Bytes(0) => return,
                Written::Bytes(written) => entry.pending_write.advance(written),
                Written::Stopped(_) | Written::Closed => {
                    entry.pending_write.clear();
                    entry.send_closed = true;
                }
            }
        }
        if entry.pending_write.is_empty() && entry.finish_when_flushed && !entry.send_closed {
            let _ = self.transport.finish(id);
            entry.finish_when_flushed = false;
            if matches!(self.transport, Transport::Relayed(_)) {
                // yamux reports no acknowledgement of a finish: our side is done now.
                entry.send_closed = true;
            }
            // On QUIC the Finished event marks it closed once the peer acknowledged
            // everything; until then the entry stays so stray data is drained.
        }
        if entry.is_done() {
            self.streams.remove(&id);
        }
    }

    /// The earliest deadline of a stream still waiting (negotiation, identify, ping, relay
    /// request): a connection has few streams, and scanning them when its timer is refreshed
    /// means a stream that finished leaves no timer behind.
    pub(crate) fn next_stream_deadline(&mut self) -> Option<Instant> {
        if !self.stream_deadlines_armed {
            return None;
        }
        let next = self
            .streams
            .values()
            .filter_map(|e| e.kind.deadline())
            .min();
        self.stream_deadlines_armed = next.is_some();
        next
    }

    /// Resets and reports every stream whose deadline is `now` or earlier.
    pub(crate) fn expire_streams(&mut self, ctx: &mut Ctx<'_>) {
        if !self.stream_deadlines_armed {
            return;
        }
        let now = ctx.now;
        let expired: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, e)| e.kind.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(entry) = self.streams.remove(&id) {
                self.report_stream_failure(id, &entry.kind, StreamOpenFailure::TimedOut, ctx);
            }
            self.abort_stream(id, CODE_TIMED_OUT);
        }
    }
}

/// Whether a stream of this kind, its own bytes all sent, has nothing left to write: it only
/// waits for the peer's answer (see `Conn::on_stopped`).
fn only_reads_from_now_on(kind: &StreamKind) -> bool {
    match kind {
        // Our proposal is out; an identify request writes nothing after the negotiation.
        StreamKind::Negotiating {
            negotiation: Negotiation::Dialer(_),
            purpose: Purpose::Identify,
            ..
        } => true,
        // The RESERVE is out; the STATUS may still come. (CONNECT and STOP go on as a circuit
        // that must write, so a stop there still fails them.)
        StreamKind::RelayRead {
            role: RelayRole::Reserve,
            ..
        }
        | StreamKind::IdentifyFetch { .. } => true,
        _ => false,
    }
}
