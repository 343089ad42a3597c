//! The sans-IO node: one QUIC endpoint, its connections, and the libp2p protocols above them.

// `CertificateError` carries two PeerIds for a mismatch; failures are rare and off the hot
// path, so a large error type costs nothing that matters.
#![allow(clippy::result_large_err)]

mod action;
mod autorelay_driver;
mod bridge;
mod chunk_queue;
mod circuit_dial;
mod config;
mod connection;
mod error;
mod event;
mod ids;
mod quic;
mod quic_tls;
#[cfg(any(test, feature = "test-driver"))]
pub(crate) use quic_tls::LAZY_KEYS_DERIVED;
mod relay_client;
mod relay_server;
mod relayed;
mod stream;
mod stream_table;
mod transport;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, EcnCodepoint, VarInt};
use rand_chacha::ChaCha20Rng;

pub use autorelay_driver::CLOSE_RELEASED;
pub use circuit_dial::{
    CIRCUIT_DIAL_BACKOFF, CIRCUIT_DIAL_ROUNDS, CircuitAddrError, CircuitDialId,
};
pub use config::{ConfigError, NodeConfig};
pub use error::{ConnectionFailure, DialError, PingError, StreamError, StreamOpenFailure};
pub use event::{Event, ReservationFailureKind};
pub use ids::{ConnectionId, Direction, StreamHandle};
pub use quinn_proto::Transmit;
pub use relay_client::{ClientReservation, MAX_WAITING_CONNECTS, ReserveError};
pub use relay_server::{CLOSE_DRAINING, CLOSE_TRIMMED, CircuitSnapshot, RelayStats};
pub use relayed::CircuitFailure;
pub use transport::StreamKey;

use connection::{Conn, ConnState, Ctx, EventQueue, LocalInfo};
use stream::{Purpose, RelayRole, StreamKind};
use transport::{Chunk, QuicTransport, StreamEnd, Transport, Written};

use crate::identity::{Keypair, PeerId};
use crate::protocols::{IDENTIFY, PING};
use crate::relay::circuits::CircuitId;
use crate::seed::SeedTree;
use crate::tls::{self, TlsIdentity};
use crate::wallclock::{UnixAnchor, WallClock};

/// Longest the node asks to sleep when it has no deadline at all. Waking spuriously is harmless.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Most stateless responses (version negotiation, resets, refusals) queued at once; beyond it,
/// new ones are dropped, as a real socket buffer would.
const MAX_ENDPOINT_RESPONSES: usize = 256;
/// Most received pieces (STREAM frames, about one per packet) one [`Node::read`] joins: about
/// 300 KiB of full-sized packets, and a bound on a read's work whatever the peer's frame sizes.
const READ_MAX_PIECES: usize = 256;

/// A received UDP datagram.
#[derive(Debug)]
pub struct Datagram {
    /// Who sent it.
    pub remote: SocketAddr,
    /// The local IP it was received on, when the socket reports it.
    pub local_ip: Option<IpAddr>,
    /// Its ECN codepoint, when the socket reports it.
    pub ecn: Option<EcnCodepoint>,
    /// Its payload (one datagram; split GRO batches first).
    pub data: BytesMut,
}

/// What [`Node::poll_output`] hands back.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Send `transmit.size` bytes from the start of the buffer passed to `poll_output`.
    Transmit(Transmit),
    /// Something happened.
    Event(Event),
    /// Drained: nothing more to do until this instant or the next input.
    Timeout(Instant),
}

/// Counters and sizes, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Connections held (any state).
    pub connections: usize,
    /// Streams the node tracks over all connections.
    pub streams: usize,
    /// Events dropped because the application did not drain them ([`NodeConfig::max_events`]).
    pub events_dropped: u64,
    /// Inbound connections refused because the node was at [`NodeConfig::max_connections`].
    pub connections_refused: u64,
    /// Stateless responses dropped because too many were queued.
    pub responses_dropped: u64,
}

/// What an application read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ReadOutcome {
    /// Bytes, in order.
    Data(Bytes),
    /// Nothing buffered now; a [`Event::StreamReadable`] follows when there is.
    Blocked,
    /// The peer finished its side; no more data will come.
    Finished,
}

/// A libp2p node over QUIC, with no I/O, no clock and no OS randomness of its own.
///
/// # How to drive it
///
/// `Node` follows quinn-proto's `Connection` and str0m's `Rtc`. Its methods come in four kinds:
///
/// - **Inputs**, `handle_*`: a received datagram ([`Node::handle_datagram`]) or the passing of
///   time ([`Node::handle_timeout`]). Every input carries `now`.
/// - **Commands**: [`Node::dial`], [`Node::open_stream`], [`Node::write`], [`Node::read`],
///   [`Node::finish`], [`Node::reset`], [`Node::ping`], [`Node::close`],
///   [`Node::set_unix_time`]. Each returns an immediate `Result` for misuse or a local limit;
///   everything the peer does in response is reported later as an [`Event`].
/// - **Outputs**: [`Node::poll_output`] returns [`Output::Transmit`] (bytes written into the
///   caller's buffer), [`Output::Event`], and finally [`Output::Timeout`].
/// - **Getters**: [`Node::peer_id`], [`Node::stats`], [`Node::connection_peer`]…
///
/// **The drain rule**: after every input and every command, call `poll_output` until it
/// returns `Output::Timeout(t)`; then wait for a datagram or for `t`, whichever is first, and
/// feed it in. Outputs not drained are not lost but delay transmissions and grow the event
/// queue (bounded by [`NodeConfig::max_events`]).
///
/// # Time
///
/// `now` must not go backwards between calls; an earlier `now` is treated as the latest one
/// seen. Deadlines are plain `Instant`s, so a simulator may run the node on virtual time.
/// Spurious timeouts are harmless. Wall-clock time (for certificate validity, QUIC tokens and,
/// later, reservation expiry) is an input too: the unix time given to [`Node::new`] and
/// [`Node::set_unix_time`] is mapped onto `now`.
///
/// # Randomness
///
/// All randomness the node draws itself (QUIC connection IDs, reset and token keys, ping
/// payloads, certificate key) derives from the seed given to [`Node::new`]; production callers
/// pass OS-random bytes, tests pass fixed ones. rustls draws TLS randoms and ephemeral keys
/// from the OS, unless [`NodeConfig::deterministic_tls`] derives them from the seed too (for
/// simulators and tests only).
///
/// # Panics
///
/// No input from a peer can make the node panic. Peer faults end a stream or a connection and
/// are reported as events.
pub struct Node {
    keypair: Keypair,
    peer_id: PeerId,
    tls: TlsIdentity,
    /// Where the server config's client-certificate verifier records a typed refusal. Shared
    /// by all inbound connections, but rustls only verifies inside the quinn-proto call that
    /// feeds one connection's handshake, and `process` runs right after every such
    /// call and moves the failure onto that connection, so the slot never mixes connections.
    client_verification: tls::VerificationOutcome,
    /// rustls' crypto provider, shared by every handshake (see `quic::tls_provider`).
    tls_provider: Arc<rustls::crypto::CryptoProvider>,
    /// The node's TLS generators under [`NodeConfig::deterministic_tls`], entered around
    /// every public call that may reach rustls (see [`Node::enter_tls_randomness`]).
    tls_randomness: Option<Arc<tls::SeededRandomness>>,
    clock: WallClock,
    anchor: UnixAnchor,
    endpoint: quinn_proto::Endpoint,
    transport: Arc<quinn_proto::TransportConfig>,
    local: LocalInfo,
    /// Boxed: a `Conn` is a few hundred bytes, and a `BTreeMap` leaf holds room for 11 of them
    /// (about 0.8 KiB per connection at a relay's usual fill); boxed, each costs its own size plus
    /// a pointer (DESIGN §10 memory), and moving one out and back in is cheap.
    connections: BTreeMap<ConnectionId, Box<Conn>>,
    /// The node id of every direct (QUIC) connection in `connections`, by quinn handle; its
    /// length is the number of direct connections.
    by_handle: BTreeMap<ConnectionHandle, ConnectionId>,
    next_connection: u64,
    /// Each connection's next deadline (see `refresh_timer`), one entry per connection, ordered.
    timers: BTreeSet<(Instant, ConnectionId)>,
    /// Connections touched since they were last polled for transmits.
    dirty: BTreeSet<ConnectionId>,
    responses: VecDeque<(Transmit, Bytes)>,
    events: EventQueue,
    ping_rng: ChaCha20Rng,
    initial_cids: Arc<Mutex<ChaCha20Rng>>,
    now: Instant,
    scratch: Vec<u8>,
    connections_refused: u64,
    responses_dropped: u64,
    /// Work connections handed over (see `action.rs`).
    actions: Vec<action::Action>,
    /// The relay server role, if enabled.
    relay: Option<relay_server::RelayServer>,
    /// The relay client role.
    client: relay_client::RelayClient,
    /// Relayed connections touched by a command since their last pump.
    relayed_dirty: BTreeSet<ConnectionId>,
    /// Relayed circuits (at a relay) with bytes to forward, run by the next `poll_output`
    /// rather than per datagram, so the bridge joins what a batch of packets delivered.
    bridges_dirty: BTreeSet<CircuitId>,
    /// AutoRelay, if enabled.
    autorelay: Option<autorelay_driver::AutoRelayDriver>,
    /// Dials through circuit addresses in flight.
    circuit_dials: circuit_dial::CircuitDials,
    /// [`Node::drain`] was called: no new outbound dials, AutoRelay stopped.
    draining: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("peer_id", &self.peer_id)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS identity or configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

impl Node {
    /// A node with identity `keypair`, drawing all of its randomness from `seed`, starting at
    /// monotonic time `now` which is unix time `unix_time`.
    pub fn new(
        config: NodeConfig,
        keypair: Keypair,
        seed: [u8; 32],
        now: Instant,
        unix_time: Duration,
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let seeds = SeedTree::new(seed);
        let clock = WallClock::new(unix_time);
        let tls = TlsIdentity::new(&keypair, seeds.derive("tls-certificate-key"))
            .map_err(|e| NodeError::Tls(e.to_string()))?;
        let (tls_provider, tls_randomness) = quic::tls_provider(&config, &seeds);
        let (server_tls, client_verification) = tls::server_config_with_provider(
            &tls,
            clock.clone(),
            &[tls::ALPN],
            Arc::clone(&tls_provider),
        )
        .map_err(|e| NodeError::Tls(e.to_string()))?;
        let transport = quic::transport_config(&config);
        let server = quic::server_config(
            server_tls,
            quic::inbound_transport_config(&config),
            &seeds,
            &clock,
        )
        .map_err(|e| NodeError::Tls(e.to_string()))?;
        let endpoint =
            quinn_proto::Endpoint::new(quic::endpoint_config(&seeds), Some(server), false, None);
        let mut supported = vec![IDENTIFY.to_owned(), PING.to_owned()];
        if config.relay_server.is_some() {
            supported.push(crate::relay::HOP_PROTOCOL.to_owned());
        }
        supported.push(crate::relay::STOP_PROTOCOL.to_owned());
        let request_timeout = config
            .relay_server
            .as_ref()
            .map_or(config.negotiation_timeout, |limits| limits.request_timeout);
        let relay = config
            .relay_server
            .clone()
            .map(relay_server::RelayServer::new);
        let autorelay = match &config.auto_relay {
            Some(auto) => Some(autorelay_driver::AutoRelayDriver::new(
                crate::autorelay::AutoRelay::new(auto.clone(), seeds.rng("autorelay")).map_err(
                    |e| ConfigError::InvalidValue {
                        setting: "auto_relay",
                        why: e.to_string(),
                    },
                )?,
            )),
            None => None,
        };
        supported.extend(config.protocols.iter().cloned());
        let supported: Arc<[String]> = supported.into();
        let events = EventQueue::new(config.max_events);
        let peer_id = keypair.public().to_peer_id();
        Ok(Self {
            local: LocalInfo {
                config,
                public_key: keypair.public(),
                supported,
                request_timeout,
            },
            peer_id,
            keypair,
            tls,
            client_verification,
            tls_provider,
            tls_randomness,
            anchor: UnixAnchor::new(now, unix_time),
            clock,
            endpoint,
            transport,
            connections: BTreeMap::new(),
            by_handle: BTreeMap::new(),
            next_connection: 0,
            timers: BTreeSet::new(),
            dirty: BTreeSet::new(),
            responses: VecDeque::new(),
            events,
            ping_rng: seeds.rng("ping-payloads"),
            initial_cids: Arc::new(Mutex::new(seeds.rng("quic-initial-dcid"))),
            now,
            scratch: Vec::new(),
            connections_refused: 0,
            responses_dropped: 0,
            actions: Vec::new(),
            relay,
            client: relay_client::RelayClient::default(),
            relayed_dirty: BTreeSet::new(),
            bridges_dirty: BTreeSet::new(),
            autorelay,
            circuit_dials: circuit_dial::CircuitDials::default(),
            draining: false,
        })
    }

    // ----- getters -----

    /// This node's PeerId.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's host key.
    #[must_use]
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The authenticated peer of an established connection.
    #[must_use]
    pub fn connection_peer(&self, connection: ConnectionId) -> Option<PeerId> {
        self.connections.get(&connection).and_then(|c| c.peer)
    }

    /// How many streams the peer may hold open at once on direct connection `connection` (its
    /// QUIC stream credit): [`NodeConfig::initial_inbound_streams`] on a fresh inbound
    /// connection, [`NodeConfig::max_streams_per_connection`] once raised or on an outbound one.
    #[must_use]
    pub fn peer_stream_credit(&self, connection: ConnectionId) -> Option<u64> {
        self.connections
            .get(&connection)
            .and_then(|c| c.transport.quic_ref())
            .map(|q| q.max_concurrent_streams(quinn_proto::Dir::Bi))
    }

    /// How long the node waits for a peer's answer to a request: stream negotiation, and on a
    /// relay the relay protocol's `request_timeout`. A circuit dial waits as long for stream
    /// credit; the tokio adapter's `open_stream` too.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        self.local.request_timeout
    }

    /// The relay a relayed connection goes through (`None` for a direct or unknown one).
    #[must_use]
    pub fn connection_relay(&self, connection: ConnectionId) -> Option<PeerId> {
        match &self.connections.get(&connection)?.transport {
            Transport::Relayed(r) => Some(r.relay_peer),
            Transport::Quic(_) => None,
        }
    }

    /// The connection's current smoothed round-trip time estimate.
    #[must_use]
    pub fn connection_rtt(&self, connection: ConnectionId) -> Option<Duration> {
        self.connections
            .get(&connection)
            .and_then(|c| c.transport.quic_ref())
            .map(|q| q.rtt())
    }

    /// The protocol negotiated on an application stream.
    #[must_use]
    pub fn stream_protocol(&self, stream: StreamHandle) -> Option<&str> {
        match &self
            .connections
            .get(&stream.connection)?
            .streams
            .get(&stream.id)?
            .kind
        {
            StreamKind::App { protocol, .. } => Some(protocol),
            _ => None,
        }
    }

    /// The current unix time as the node sees it.
    #[must_use]
    pub fn unix_time(&self) -> Duration {
        self.clock.unix()
    }

    /// Counters and sizes.
    #[must_use]
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            connections: self.connections.len(),
            streams: self.connections.values().map(|c| c.streams.len()).sum(),
            events_dropped: self.events.dropped,
            connections_refused: self.connections_refused,
            responses_dropped: self.responses_dropped,
        }
    }

    // ----- inputs -----

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let now = self.now;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let event = self.endpoint.handle(
            now,
            datagram.remote,
            datagram.local_ip,
            datagram.ecn,
            datagram.data,
            &mut buf,
        );
        match event {
            None => {}
            Some(DatagramEvent::Response(transmit)) => self.queue_response(transmit, &buf),
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(&id) = self.by_handle.get(&handle) {
                    if let Some(conn) = self.connections.get_mut(&id) {
                        conn.last_rx = Some(now);
                        if let Some(quic) = conn.transport.quic() {
                            quic.handle_event(event);
                        }
                    }
                    self.process(id);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.connections.len() >= self.local.config.max_connections {
                    self.connections_refused += 1;
                    buf.clear();
                    let transmit = self.endpoint.refuse(incoming, &mut buf);
                    self.queue_response(transmit, &buf);
                } else {
                    buf.clear();
                    match self.endpoint.accept(incoming, now, &mut buf, None) {
                        Ok((handle, quic)) => {
                            let id = self.insert_connection(
                                handle,
                                quic,
                                Direction::Inbound,
                                None,
                                None,
                            );
                            self.process(id);
                            self.trim_connections();
                        }
                        Err(error) => {
                            if let Some(transmit) = error.response {
                                self.queue_response(transmit, &buf);
                            }
                        }
                    }
                }
            }
        }
        self.scratch = buf;
    }

    /// Tells the node that time has passed. Call it at (or after) the instant of the last
    /// [`Output::Timeout`]; calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let now = self.now;
        // Each expired timer is removed before its connection is processed, and processing
        // re-registers only a strictly later deadline or the same one once handled, so this
        // loop ends.
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            if let Some(conn) = self.connections.get_mut(&id) {
                conn.registered_timer = None;
                if let Some(quic) = conn.transport.quic() {
                    quic.handle_timeout(now);
                }
            }
            self.with_ctx(id, |conn, ctx| conn.expire_streams(ctx));
            self.process(id);
            self.check_liveness(id, now);
        }
        self.relay_timeouts(now);
        self.client_timeouts(now);
        self.autorelay_timeout(now);
        self.circuit_dial_timeouts(now);
        self.run_actions();
    }

    // ----- commands -----

    /// Sets the current unix time (call it when the wall clock drifts from the monotonic clock).
    pub fn set_unix_time(&mut self, now: Instant, unix_time: Duration) {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        self.anchor = UnixAnchor::new(self.now, unix_time);
        self.clock.set(unix_time);
    }

    /// Dials `remote`, requiring the peer to prove it is `expected`. The outcome is reported
    /// as [`Event::ConnectionEstablished`] or [`Event::ConnectionClosed`] (a different PeerId
    /// gives [`ConnectionFailure::Certificate`] with
    /// [`CertificateError::PeerIdMismatch`](crate::tls::CertificateError::PeerIdMismatch)).
    pub fn dial(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        expected: PeerId,
    ) -> Result<ConnectionId, DialError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        if self.draining {
            return Err(DialError::Draining);
        }
        if expected == self.peer_id {
            return Err(DialError::SelfDial(expected));
        }
        if self.connections.len() >= self.local.config.max_connections {
            return Err(DialError::TooManyConnections {
                max: self.local.config.max_connections,
            });
        }
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(DialError::InvalidAddress(remote));
        }
        let (client_tls, outcome) = tls::client_config_with_provider(
            &self.tls,
            self.clock.clone(),
            Some(expected),
            &[tls::ALPN],
            Arc::clone(&self.tls_provider),
        )
        .map_err(|e| DialError::Tls(e.to_string()))?;
        let client =
            quic::client_config(client_tls, Arc::clone(&self.transport), &self.initial_cids)
                .map_err(|e| DialError::Tls(e.to_string()))?;
        // libp2p identifies the server by its certificate, not by name; "l" is the placeholder
        // server name libp2p implementations use.
        let (handle, quic) = self.endpoint.connect(self.now, client, remote, "l")?;
        let id = self.insert_connection(
            handle,
            quic,
            Direction::Outbound,
            Some(expected),
            Some(outcome),
        );
        self.process(id);
        Ok(id)
    }

    /// Opens a stream on an established connection and negotiates `protocol` on it. The stream
    /// is usable after [`Event::StreamReady`]; a refusal is [`Event::StreamOpenFailed`].
    pub fn open_stream(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        protocol: &str,
    ) -> Result<StreamHandle, StreamError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        if let Err(error) = crate::multistream::Dialer::new([protocol]) {
            return Err(StreamError::InvalidProtocol(format!(
                "`{protocol}`: {error}"
            )));
        }
        self.established(connection)?;
        let id = self
            .with_ctx(connection, |conn, ctx| {
                conn.open_outbound(protocol, Purpose::App, ctx)
            })
            .flatten()
            .ok_or(StreamError::TooManyStreams(connection))?;
        self.process(connection);
        Ok(StreamHandle { connection, id })
    }

    /// Writes as much of `data` as flow control allows now and returns how much that was; `0`
    /// means blocked until [`Event::StreamWritable`].
    pub fn write(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        self.write_with(now, stream, |transport| transport.write(stream.id, data))
    }

    /// As [`write`](Self::write), for data the caller holds as [`Bytes`]: the part written is
    /// split off the front of `data`, and on a direct (QUIC) stream it is handed to quinn-proto
    /// without a copy (DESIGN §3). A relayed stream copies it into its yamux frame, as `write`.
    pub fn write_bytes(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        data: &mut Bytes,
    ) -> Result<usize, StreamError> {
        self.write_with(now, stream, |transport| {
            transport.write_bytes(stream.id, data)
        })
    }

    /// The common part of the writes: the stream must be an application stream; the outcome
    /// becomes a count or a typed error, and the connection is marked for transmit polling.
    fn write_with(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        write: impl FnOnce(&mut Transport) -> Written,
    ) -> Result<usize, StreamError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let conn = self.app_stream(stream)?;
        let result = match write(&mut conn.transport) {
            Written::Bytes(n) => Ok(n),
            Written::Stopped(code) => Err(StreamError::Stopped { stream, code }),
            Written::Closed => Err(StreamError::AlreadyFinished(stream)),
        };
        self.touch(stream.connection);
        result
    }

    /// Reads up to `max` bytes, in order: everything received and waiting, as one chunk (a
    /// direct stream's received packets are joined, so a read is not limited to one packet).
    /// After the last bytes, the next read reports the peer's finish or reset.
    pub fn read(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        max: usize,
    ) -> Result<ReadOutcome, StreamError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let conn = self.app_stream(stream)?;
        let entry = conn
            .streams
            .get_mut(&stream.id)
            .ok_or(StreamError::UnknownStream(stream))?;
        let chunk = match &mut entry.kind {
            StreamKind::App { leftover, .. } if !leftover.is_empty() => {
                let take = max.min(leftover.len());
                return Ok(ReadOutcome::Data(leftover.split_to(take)));
            }
            // The end a previous read met after its data.
            StreamKind::App { ended, .. } if ended.is_some() => {
                ended.take().map_or(Chunk::Blocked, StreamEnd::chunk)
            }
            _ if entry.recv_closed => return Ok(ReadOutcome::Finished),
            kind => {
                let gathered = conn
                    .transport
                    .read_gathered(stream.id, max, READ_MAX_PIECES);
                if let (Some(end), StreamKind::App { ended, .. }) = (gathered.then, kind) {
                    *ended = Some(end);
                }
                gathered.chunk
            }
        };
        let outcome = match chunk {
            Chunk::Data(data) => Ok(ReadOutcome::Data(data)),
            Chunk::Finished => Ok(ReadOutcome::Finished),
            Chunk::Blocked => Ok(ReadOutcome::Blocked),
            Chunk::Reset(code) => Err(StreamError::Reset { stream, code }),
            Chunk::Closed => Err(StreamError::UnknownStream(stream)),
        };
        if matches!(
            outcome,
            Ok(ReadOutcome::Finished) | Err(StreamError::Reset { .. })
        ) {
            entry.recv_closed = true;
            if entry.is_done() {
                conn.streams.remove(&stream.id);
            }
        }
        self.touch(stream.connection);
        outcome
    }

    /// Finishes the sending side of a stream: the peer reads to the end, then sees the finish.
    pub fn finish(&mut self, now: Instant, stream: StreamHandle) -> Result<(), StreamError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let conn = self.app_stream(stream)?;
        let relayed = matches!(conn.transport, Transport::Relayed(_));
        let result = match conn.transport.finish(stream.id) {
            Ok(()) => Ok(()),
            Err(Written::Stopped(code)) => Err(StreamError::Stopped { stream, code }),
            Err(_) => Err(StreamError::AlreadyFinished(stream)),
        };
        if relayed
            && result.is_ok()
            && let Some(entry) = conn.streams.get_mut(&stream.id)
        {
            // yamux acknowledges no finish: our side is done now.
            entry.send_closed = true;
            if entry.is_done() {
                conn.streams.remove(&stream.id);
            }
        }
        self.touch(stream.connection);
        result
    }

    /// Abandons a stream in both directions with an application error code.
    pub fn reset(
        &mut self,
        now: Instant,
        stream: StreamHandle,
        code: u32,
    ) -> Result<(), StreamError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let conn = self.app_stream(stream)?;
        conn.streams.remove(&stream.id);
        conn.abort_stream(stream.id, code);
        self.touch(stream.connection);
        Ok(())
    }

    /// Measures the round trip to the peer of `connection` with libp2p ping; the result is
    /// [`Event::PingSucceeded`] or [`Event::PingFailed`].
    pub fn ping(&mut self, now: Instant, connection: ConnectionId) -> Result<(), PingError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        self.established(connection)?;
        if self
            .connections
            .get(&connection)
            .is_some_and(|conn| conn.ping_in_flight.is_some())
        {
            return Err(PingError::InFlight(connection));
        }
        let id = self
            .with_ctx(connection, |conn, ctx| {
                let id = conn.open_outbound(PING, Purpose::Ping, ctx);
                conn.ping_in_flight = id;
                id
            })
            .flatten()
            .ok_or(StreamError::TooManyStreams(connection))?;
        let _ = id;
        self.process(connection);
        Ok(())
    }

    /// Closes a connection with an application error code. Reported at once as
    /// [`Event::ConnectionClosed`] with [`ConnectionFailure::ClosedLocally`].
    pub fn close(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        code: u32,
        reason: &[u8],
    ) -> Result<(), StreamError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let now = self.now;
        if !self.connections.contains_key(&connection) {
            return Err(StreamError::UnknownConnection(connection));
        }
        self.with_ctx(connection, |conn, ctx| {
            match &mut conn.transport {
                Transport::Quic(q) => {
                    q.conn
                        .close(now, VarInt::from_u32(code), Bytes::copy_from_slice(reason))
                }
                Transport::Relayed(r) => r.close(),
            }
            conn.report_closed(ConnectionFailure::ClosedLocally, ctx);
        });
        self.process(connection);
        Ok(())
    }

    // ----- outputs -----

    /// The next output. Call until it returns [`Output::Timeout`] (the drain rule); a
    /// [`Output::Transmit`]'s bytes are at the start of `buf`.
    pub fn poll_output(&mut self, buf: &mut Vec<u8>) -> Output {
        let _tls = self.enter_tls_randomness();
        while let Some(relayed) = self.relayed_dirty.pop_first() {
            self.pump_relayed(relayed);
            self.run_actions();
        }
        self.run_dirty_bridges();
        if let Some(event) = self.events.pop() {
            self.observe_for_autorelay(&event);
            self.observe_for_circuit_dials(&event);
            return Output::Event(event);
        }
        if let Some((transmit, data)) = self.responses.pop_front() {
            buf.clear();
            buf.extend_from_slice(&data);
            return Output::Transmit(transmit);
        }
        while let Some(&id) = self.dirty.first() {
            let now = self.now;
            if let Some(quic) = self
                .connections
                .get_mut(&id)
                .and_then(|c| c.transport.quic())
            {
                buf.clear();
                let batch = self.local.config.max_transmit_datagrams;
                if let Some(transmit) = quic.poll_transmit(now, batch, buf) {
                    return Output::Transmit(transmit);
                }
            }
            self.dirty.remove(&id);
            self.refresh_timer(id);
        }
        let next_timer = self.timers.first().map(|&(at, _)| at);
        let relay_deadline = self.relay.as_ref().and_then(|r| r.next_deadline());
        let client_deadline = self.client.next_deadline();
        let autorelay_deadline = self.autorelay_deadline();
        let dial_deadline = self.circuit_dials.next_deadline();
        let wake = [
            dial_deadline,
            next_timer,
            relay_deadline,
            client_deadline,
            autorelay_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.now + MAX_SLEEP);
        Output::Timeout(wake)
    }

    // ----- internals -----

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        self.clock.set(self.anchor.unix_at(self.now));
    }

    fn queue_response(&mut self, transmit: Transmit, buf: &[u8]) {
        if self.responses.len() >= MAX_ENDPOINT_RESPONSES {
            self.responses_dropped += 1;
            return;
        }
        let data = Bytes::copy_from_slice(&buf[..transmit.size]);
        self.responses.push_back((transmit, data));
    }

    fn insert_connection(
        &mut self,
        handle: ConnectionHandle,
        quic: quinn_proto::Connection,
        direction: Direction,
        expected: Option<PeerId>,
        outcome: Option<tls::VerificationOutcome>,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        self.by_handle.insert(handle, id);
        let transport = Transport::Quic(Box::new(QuicTransport { handle, conn: quic }));
        self.connections.insert(
            id,
            Box::new(Conn::new(transport, direction, expected, outcome)),
        );
        id
    }

    fn established(&self, connection: ConnectionId) -> Result<(), StreamError> {
        match self.connections.get(&connection) {
            None => Err(StreamError::UnknownConnection(connection)),
            Some(conn) if conn.state != ConnState::Established => {
                Err(StreamError::NotEstablished(connection))
            }
            Some(_) => Ok(()),
        }
    }

    fn app_stream(&mut self, stream: StreamHandle) -> Result<&mut Conn, StreamError> {
        let conn = self
            .connections
            .get_mut(&stream.connection)
            .ok_or(StreamError::UnknownConnection(stream.connection))?;
        match conn.streams.get(&stream.id).map(|e| &e.kind) {
            None => Err(StreamError::UnknownStream(stream)),
            Some(StreamKind::App { .. }) => Ok(conn),
            Some(StreamKind::Negotiating { .. }) => Err(StreamError::Negotiating(stream)),
            Some(_) => Err(StreamError::NotApplicationStream(stream)),
        }
    }

    fn with_ctx<R>(
        &mut self,
        id: ConnectionId,
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let conn = self.connections.get_mut(&id)?;
        let mut ctx = Ctx {
            now: self.now,
            id,
            events: &mut self.events,
            local: &self.local,
            ping_rng: &mut self.ping_rng,
            actions: &mut self.actions,
        };
        let result = f(conn, &mut ctx);
        self.dirty.insert(id);
        Some(result)
    }

    /// Enters the node's deterministic TLS generators for the rest of the calling scope, so
    /// rustls draws this node's bytes whatever other node ran on the thread before; nothing
    /// without [`NodeConfig::deterministic_tls`]. Every public call that may reach rustls
    /// starts with it.
    fn enter_tls_randomness(&self) -> Option<tls::EnteredRandomness> {
        self.tls_randomness
            .as_ref()
            .map(tls::SeededRandomness::enter)
    }

    /// Runs a connection after an input: endpoint events, protocol events, timer, cleanup.
    fn process(&mut self, id: ConnectionId) {
        // Any refusal recorded by the shared client-certificate verifier happened during the
        // quinn-proto call on this connection that preceded this `process` (see the field).
        if let Some(error) = self.client_verification.take_failure()
            && let Some(conn) = self.connections.get_mut(&id)
        {
            conn.refused_certificate = Some(Box::new(error));
        }
        let mut drained = false;
        // Endpoint events are few per input (CID issuance, retirement, drain), so this ends.
        loop {
            let Some(conn) = self.connections.get_mut(&id) else {
                return;
            };
            let mut progressed = false;
            if let Transport::Quic(q) = &mut conn.transport {
                while let Some(event) = q.conn.poll_endpoint_events() {
                    progressed = true;
                    drained |= event.is_drained();
                    if let Some(reply) = self.endpoint.handle_event(q.handle, event) {
                        q.conn.handle_event(reply);
                    }
                }
            }
            self.with_ctx(id, |conn, ctx| conn.drive(ctx));
            if !progressed {
                break;
            }
        }
        if drained {
            // A connection drained without a reported loss (should not happen) is reported now.
            self.with_ctx(id, |conn, ctx| {
                conn.report_closed(ConnectionFailure::ClosedLocally, ctx)
            });
            if let Some(mut conn) = self.connections.remove(&id) {
                self.forget_connection(id, &mut conn);
            }
            self.run_actions();
            return;
        }
        if matches!(
            self.connections.get(&id).map(|c| &c.transport),
            Some(Transport::Relayed(_))
        ) {
            self.relayed_dirty.insert(id);
        }
        self.dirty.insert(id);
        self.refresh_timer(id);
        self.run_actions();
    }

    /// Marks a connection for transmit polling (and a relayed one for pumping).
    fn touch(&mut self, id: ConnectionId) {
        self.dirty.insert(id);
        if matches!(
            self.connections.get(&id).map(|c| &c.transport),
            Some(Transport::Relayed(_))
        ) {
            self.relayed_dirty.insert(id);
        }
    }

    /// Carries out what connections handed over. Each action does bounded work and may queue
    /// more; the bound only guards against a bug feeding the queue forever.
    fn run_actions(&mut self) {
        for _ in 0..100_000 {
            if self.actions.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut self.actions);
            for action in batch {
                self.run_action(action);
            }
        }
        debug_assert!(false, "relay actions did not settle");
    }

    fn run_action(&mut self, action: action::Action) {
        use action::Action;
        match action {
            Action::RelayMessage {
                stream,
                role,
                frame,
                rest,
            } => match role {
                RelayRole::HopServe => self.on_hop_request(stream, frame, rest),
                RelayRole::Stop { circuit } => self.on_stop_response(circuit, stream, frame, rest),
                RelayRole::Reserve => self.on_reserve_response(stream, frame),
                RelayRole::Connect { relayed } => {
                    self.on_connect_response(stream, relayed, frame, rest)
                }
                RelayRole::StopServe => self.on_stop_request(stream, frame, rest),
                RelayRole::AwaitingTarget { .. } => {}
            },
            Action::RelayStreamFailed {
                stream,
                role,
                unsupported,
                reason,
            } => match role {
                RelayRole::HopServe | RelayRole::Stop { .. } | RelayRole::AwaitingTarget { .. } => {
                    self.on_relay_server_stream_failed(stream, role)
                }
                RelayRole::Reserve | RelayRole::Connect { .. } | RelayRole::StopServe => {
                    self.on_relay_client_stream_failed(stream, role, unsupported, reason)
                }
            },
            // Deferred to `poll_output`, after the whole batch of input: see `bridges_dirty`.
            Action::Bridge { circuit } => {
                self.bridges_dirty.insert(circuit);
            }
            Action::Circuit { relayed } => {
                self.relayed_dirty.insert(relayed);
            }
            Action::StreamsAvailable { connection } => self.open_waiting_connects(connection),
            Action::ConnectionClosed { connection, peer } => {
                self.relay_connection_closed(connection, peer);
                self.client_connection_closed(connection, peer);
            }
        }
    }

    /// Drops the node's bookkeeping of a removed connection.
    fn forget_connection(&mut self, id: ConnectionId, conn: &mut Conn) {
        if let Transport::Quic(q) = &conn.transport {
            self.by_handle.remove(&q.handle);
        }
        if let Some(at) = conn.registered_timer.take() {
            self.timers.remove(&(at, id));
        }
        self.dirty.remove(&id);
    }

    /// Declares a direct connection lost once nothing arrived from the peer for the whole
    /// idle timeout. QUIC's own idle timer restarts at our first ack-eliciting send after the
    /// last receipt (RFC 9000 §10.1), so with keep-alives it fires up to one keep-alive
    /// interval later; counting from the last receipt bounds detection by the idle timeout
    /// itself (DESIGN §10: failover within idle timeout + 2 s).
    fn check_liveness(&mut self, id: ConnectionId, now: Instant) {
        let idle = self.local.config.idle_timeout;
        let silent = self.connections.get(&id).is_some_and(|c| {
            c.state == ConnState::Established && c.last_rx.is_some_and(|at| now >= at + idle)
        });
        if !silent {
            return;
        }
        self.with_ctx(id, |conn, ctx| {
            if let Some(quic) = conn.transport.quic() {
                quic.close(
                    now,
                    VarInt::from_u32(connection::CLOSE_SILENT),
                    Bytes::from_static(b"silent"),
                );
            }
            conn.report_closed(ConnectionFailure::TimedOut, ctx);
        });
        self.process(id);
    }

    /// Registers the connection's next deadline in `timers`: quinn-proto's timer and our
    /// liveness check for a direct connection, and the earliest stream deadline for any
    /// connection.
    fn refresh_timer(&mut self, id: ConnectionId) {
        let Some(conn) = self.connections.get_mut(&id) else {
            return;
        };
        let streams = conn.next_stream_deadline();
        let (quic, liveness) = match conn.transport.quic() {
            Some(quic) => (
                quic.poll_timeout(),
                match conn.state {
                    ConnState::Established => {
                        conn.last_rx.map(|at| at + self.local.config.idle_timeout)
                    }
                    _ => None,
                },
            ),
            None => (None, None),
        };
        let next = [quic, liveness, streams].into_iter().flatten().min();
        if next == conn.registered_timer {
            return;
        }
        if let Some(old) = conn.registered_timer.take() {
            self.timers.remove(&(old, id));
        }
        if let Some(at) = next {
            self.timers.insert((at, id));
        }
        conn.registered_timer = next;
    }
}
