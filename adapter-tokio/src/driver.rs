//! One task per socket drives one [`Node`]: drain its outputs, then `select!` on the socket,
//! the command channel and one sleep (reset only when the deadline changes).
//!
//! Applications talk to the task through a [`NodeHandle`](crate::NodeHandle): every call is a
//! [`Command`] with a oneshot reply. Reads and writes that cannot progress now are parked in the
//! driver and retried after every input, so no wake-up can be missed.
//!
//! Relay selection and failover are the core's (AutoRelay inside the node); the driver only
//! feeds it candidates and watches its events to time failovers for the metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dep2p_core::autorelay::{CandidateSource, SwitchReason};
use dep2p_core::identity::PeerId;
use dep2p_core::node::{
    CircuitDialId, ClientReservation, ConnectionFailure, ConnectionId, Event, Node, NodeStats,
    Output, PingError, ReadOutcome, RelayStats, ReserveError, StreamError, StreamHandle,
    StreamOpenFailure,
};
use multiaddr::Multiaddr;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::handle::{AdapterEvent, Error, InboundStream};
use crate::io::UdpIo;
use crate::metrics::Metrics;
use crate::parked_opens::{self, ParkedOpen, ParkedOpens, ParkedRequest};

/// Reply channel of a command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What a handle asks the driver to do.
pub(crate) enum Command {
    Dial {
        addr: SocketAddr,
        peer: PeerId,
        reply: Reply<ConnectionId>,
    },
    DialThroughRelay {
        relay_connection: ConnectionId,
        target: PeerId,
        reply: Reply<ConnectionId>,
    },
    DialCircuit {
        target: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<CircuitConnection>,
    },
    AddRelayCandidates {
        candidates: Vec<(PeerId, Vec<Multiaddr>)>,
        source: CandidateSource,
    },
    Reserve {
        connection: ConnectionId,
        reply: Reply<ClientReservation>,
    },
    OpenStream {
        connection: ConnectionId,
        protocol: String,
        reply: Reply<StreamHandle>,
    },
    Write {
        stream: StreamHandle,
        data: Bytes,
        reply: Reply<()>,
    },
    Read {
        stream: StreamHandle,
        max: usize,
        reply: Reply<Option<Bytes>>,
    },
    Finish {
        stream: StreamHandle,
        reply: Reply<()>,
    },
    Reset {
        stream: StreamHandle,
        code: u32,
    },
    Ping {
        connection: ConnectionId,
        reply: Reply<Duration>,
    },
    Close {
        connection: ConnectionId,
        code: u32,
    },
    Stats {
        reply: Reply<Snapshot>,
    },
    Drain {
        timeout: Duration,
        reply: Reply<()>,
    },
}

/// A point-in-time view of a node, for metrics and tests.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The node's counters.
    pub node: NodeStats,
    /// The relay role's counters, if this node is a relay.
    pub relay: Option<RelayStats>,
    /// Relays on which we hold a reservation now.
    pub reserved_on: Vec<PeerId>,
}

/// A relayed connection made by [`NodeHandle::dial_circuit`](crate::NodeHandle::dial_circuit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitConnection {
    /// The relayed connection to the target.
    pub connection: ConnectionId,
    /// The relay it runs through.
    pub relay: PeerId,
}

/// A relay switch reported by the core's AutoRelay, with the failover time the driver measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySwitch {
    /// The relay replaced, if any (`None` for a first acquisition).
    pub from: Option<PeerId>,
    /// The relay now held.
    pub to: PeerId,
    /// Why.
    pub why: SwitchReason,
    /// From losing the reservation on `from` to holding the one on `to`, when `from` was lost
    /// (not for a first acquisition or a voluntary switch to a better relay).
    pub took: Option<Duration>,
}

/// Lost reservations remembered while waiting for their replacement (one per relay).
const PENDING_LOSSES: usize = 64;

struct Draining {
    until: Instant,
    reply: Option<Reply<()>>,
}

pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) io: UdpIo,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<AdapterEvent>,
    pub(crate) inbound: mpsc::Sender<InboundStream>,
    pub(crate) candidates: Vec<(PeerId, Vec<Multiaddr>)>,
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) handle: crate::handle::WeakHandle,
    buf: Vec<u8>,
    wake: Instant,
    dials: BTreeMap<ConnectionId, Reply<ConnectionId>>,
    reserves: BTreeMap<ConnectionId, Reply<ClientReservation>>,
    opens: BTreeMap<StreamHandle, Reply<StreamHandle>>,
    /// Opens waiting for the peer's stream credit (see `parked_opens`).
    parked_opens: ParkedOpens<ConnectionId>,
    pings: BTreeMap<ConnectionId, Reply<Duration>>,
    reads: BTreeMap<StreamHandle, (usize, Reply<Option<Bytes>>)>,
    writes: BTreeMap<StreamHandle, (Bytes, Reply<()>)>,
    reservations: BTreeMap<ConnectionId, PeerId>,
    circuit_dials: BTreeMap<CircuitDialId, Reply<CircuitConnection>>,
    /// When each relay's reservation was lost, until AutoRelay reports its replacement.
    lost_at: BTreeMap<PeerId, Instant>,
    draining: Option<Draining>,
    /// A stream became readable or writable during the last drain.
    stream_progress: bool,
    /// Why recently closed connections ended, so a later call on them reports the reason
    /// rather than "unknown connection". Bounded by [`RECENTLY_CLOSED`].
    closed: std::collections::VecDeque<(ConnectionId, ConnectionFailure)>,
}

/// Closed connections whose reason the driver remembers.
const RECENTLY_CLOSED: usize = 256;

pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node: Node,
        io: UdpIo,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<AdapterEvent>,
        inbound: mpsc::Sender<InboundStream>,
        candidates: Vec<(PeerId, Vec<Multiaddr>)>,
        metrics: Option<Arc<Metrics>>,
        handle: crate::handle::WeakHandle,
    ) -> Self {
        Self {
            node,
            io,
            commands,
            events,
            inbound,
            candidates,
            metrics,
            handle,
            buf: Vec::with_capacity(64 * 1024),
            wake: Instant::now(),
            dials: BTreeMap::new(),
            reserves: BTreeMap::new(),
            opens: BTreeMap::new(),
            parked_opens: ParkedOpens::default(),
            pings: BTreeMap::new(),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            reservations: BTreeMap::new(),
            circuit_dials: BTreeMap::new(),
            lost_at: BTreeMap::new(),
            draining: None,
            stream_progress: false,
            closed: std::collections::VecDeque::new(),
        }
    }

    /// Runs until every handle is dropped, or a drain completes.
    pub(crate) async fn run(mut self) {
        let candidates = std::mem::take(&mut self.candidates);
        if !candidates.is_empty() {
            self.node
                .add_relay_candidates(Instant::now(), &candidates, CandidateSource::Bootstrap);
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut sleep_at: Option<Instant> = None;
        loop {
            // Drain; events seen while draining may unblock parked reads and writes, whose
            // retries are commands that need another drain. Bounded: each pass either moves
            // bytes or finds nothing to do.
            // Parked operations are retried only after a drain, so a connection that just
            // ended has reported its close reason before a retry fails on it.
            for pass in 0..64 {
                self.stream_progress = false;
                if let Err(error) = self.drain().await {
                    tracing::error!(%error, "UDP send failed; stopping the node");
                    return;
                }
                let parked = !(self.reads.is_empty() && self.writes.is_empty());
                if !parked || (pass > 0 && !self.stream_progress) {
                    break;
                }
                self.retry_parked();
            }
            if self.drain_finished() {
                return;
            }
            let deadline = self.deadline();
            if sleep_at != Some(deadline) {
                sleep_at = Some(deadline);
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
            }
            tokio::select! {
                readable = self.io.readable() => {
                    if let Err(error) = readable {
                        tracing::error!(%error, "UDP socket failed; stopping the node");
                        return;
                    }
                    self.receive();
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return };
                    self.apply(command);
                    // Take what else is queued, bounded so the socket is not starved.
                    for _ in 0..64 {
                        match self.commands.try_recv() {
                            Ok(command) => self.apply(command),
                            Err(_) => break,
                        }
                    }
                }
                () = &mut sleep => {
                    sleep_at = None;
                    let now = Instant::now();
                    self.expire_parked_opens(now);
                    self.node.handle_timeout(now);
                }
            }
        }
    }

    fn deadline(&self) -> Instant {
        let wake = match self.parked_opens.next_deadline() {
            Some(at) => self.wake.min(at),
            None => self.wake,
        };
        match &self.draining {
            Some(draining) => wake.min(draining.until),
            None => wake,
        }
    }

    fn receive(&mut self) {
        // Bounded batches per wake-up, so commands and timers are not starved under load.
        for _ in 0..16 {
            let node = &mut self.node;
            let now = Instant::now();
            match self
                .io
                .try_recv(|datagram| node.handle_datagram(now, datagram))
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "UDP receive failed");
                    return;
                }
            }
        }
    }

    /// The drain rule: poll until `Timeout`, sending transmits and handling events.
    async fn drain(&mut self) -> std::io::Result<()> {
        loop {
            match self.node.poll_output(&mut self.buf) {
                Output::Transmit(transmit) => {
                    let size = transmit.size;
                    self.io.send(&transmit, &self.buf[..size]).await?;
                }
                Output::Event(event) => self.on_event(event),
                Output::Timeout(at) => {
                    self.wake = at;
                    return Ok(());
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match &event {
            Event::ConnectionEstablished { connection, .. } => {
                if let Some(m) = &self.metrics {
                    m.connections_established.inc();
                }
                if let Some(reply) = self.dials.remove(connection) {
                    let _ = reply.send(Ok(*connection));
                }
            }
            Event::ConnectionClosed {
                connection,
                failure,
                ..
            } => {
                if let Some(relay) = self.reservations.remove(connection) {
                    self.note_loss(relay, now);
                }
                if let Some(m) = &self.metrics {
                    m.connections_closed.inc();
                }
                self.fail_connection(*connection, failure);
                if self.closed.len() >= RECENTLY_CLOSED {
                    self.closed.pop_front();
                }
                self.closed.push_back((*connection, failure.clone()));
            }
            Event::StreamsAvailable { connection } => self.open_parked(*connection),
            Event::ReservationAccepted {
                connection, relay, ..
            } => {
                self.reservations.insert(*connection, *relay);
                if let (Some(reply), Some(reservation)) = (
                    self.reserves.remove(connection),
                    self.node.reservation(*connection),
                ) {
                    let _ = reply.send(Ok(reservation.clone()));
                }
            }
            Event::ReservationFailed {
                connection, reason, ..
            } => {
                if let Some(reply) = self.reserves.remove(connection) {
                    let _ = reply.send(Err(Error::Reservation(reason.clone())));
                }
            }
            Event::ReservationLost { connection, .. } => {
                if let Some(relay) = self.reservations.remove(connection) {
                    self.note_loss(relay, now);
                }
            }
            Event::RelaySwitched { from, to, why } => {
                let took = from
                    .and_then(|from| self.lost_at.remove(&from))
                    .map(|at| now.saturating_duration_since(at));
                self.lost_at.remove(to);
                tracing::info!(from = ?from.map(|f| f.to_string()), %to, why = why.label(), ?took, "relay switched");
                if let Some(m) = &self.metrics {
                    m.record_switch(*why, took);
                }
                let _ = self.events.send(AdapterEvent::RelaySwitched(RelaySwitch {
                    from: *from,
                    to: *to,
                    why: *why,
                    took,
                }));
            }
            Event::CircuitAddrsChanged { addrs } => {
                if let Some(m) = &self.metrics {
                    m.circuit_addrs
                        .set(i64::try_from(addrs.len()).unwrap_or(i64::MAX));
                }
            }
            Event::CircuitDialSucceeded {
                dial, connection, ..
            } => {
                if let Some(reply) = self.circuit_dials.remove(dial) {
                    let relay = self.node.connection_relay(*connection);
                    let _ = reply.send(match relay {
                        Some(relay) => Ok(CircuitConnection {
                            connection: *connection,
                            relay,
                        }),
                        None => Err(Error::CircuitDial(vec![format!(
                            "{connection} closed before it could be used"
                        )])),
                    });
                }
            }
            Event::CircuitDialFailed { dial, errors, .. } => {
                if let Some(reply) = self.circuit_dials.remove(dial) {
                    let _ = reply.send(Err(Error::CircuitDial(errors.clone())));
                }
            }
            Event::StreamReady { stream, .. } => {
                self.stream_progress = true;
                if let Some(reply) = self.opens.remove(stream) {
                    let _ = reply.send(Ok(*stream));
                }
            }
            Event::StreamOpenFailed { stream, failure } => {
                if let Some(reply) = self.opens.remove(stream) {
                    let _ = reply.send(Err(Error::StreamOpen(failure.clone())));
                }
            }
            Event::InboundStream { stream, protocol } => {
                let peer = self.node.connection_peer(stream.connection());
                let accepted = self.handle.upgrade().is_some_and(|handle| {
                    let inbound = InboundStream {
                        stream: crate::handle::Stream::new(handle, *stream),
                        protocol: protocol.clone(),
                        peer,
                    };
                    self.inbound.try_send(inbound).is_ok()
                });
                if !accepted {
                    tracing::debug!(%stream, "no room for an inbound stream; resetting it");
                    let _ = self.node.reset(now, *stream, 0);
                }
            }
            Event::PingSucceeded { connection, rtt } => {
                if let Some(reply) = self.pings.remove(connection) {
                    let _ = reply.send(Ok(*rtt));
                }
            }
            Event::PingFailed { connection, reason } => {
                if let Some(reply) = self.pings.remove(connection) {
                    let _ = reply.send(Err(Error::Ping(reason.clone())));
                }
            }
            Event::StreamReadable { .. }
            | Event::StreamWritable { .. }
            | Event::StreamStopped { .. } => self.stream_progress = true,
            _ => {}
        }
        let _ = self.events.send(AdapterEvent::Node(event));
    }

    /// Remembers when the reservation on `relay` was lost (the first loss counts), so the
    /// replacement's [`Event::RelaySwitched`] can be timed.
    fn note_loss(&mut self, relay: PeerId, now: Instant) {
        if self.lost_at.len() >= PENDING_LOSSES && !self.lost_at.contains_key(&relay) {
            // Bounded: forget the oldest loss (its replacement will be reported untimed).
            if let Some(oldest) = self
                .lost_at
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(p, _)| *p)
            {
                self.lost_at.remove(&oldest);
            }
        }
        self.lost_at.entry(relay).or_insert(now);
    }

    /// Fails every waiter on a connection that ended.
    /// Starts a parked request's stream (application stream, RESERVE or ping); gives the request
    /// back when the peer's stream credit is used up, and answers it when it fails otherwise.
    fn try_open(&mut self, connection: ConnectionId, open: ParkedOpen) -> Result<(), ParkedOpen> {
        let now = Instant::now();
        let no_credit = |e: &StreamError| matches!(e, StreamError::TooManyStreams(_));
        match open.request {
            ParkedRequest::Stream { protocol, reply } => {
                match self.node.open_stream(now, connection, &protocol) {
                    Ok(stream) => {
                        self.opens.insert(stream, reply);
                    }
                    Err(error) if no_credit(&error) => {
                        return Err(ParkedOpen {
                            request: ParkedRequest::Stream { protocol, reply },
                            deadline: open.deadline,
                        });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(Error::Stream(error)));
                    }
                }
            }
            ParkedRequest::Reserve { reply } => match self.node.reserve(now, connection) {
                Ok(()) => {
                    self.reserves.insert(connection, reply);
                }
                Err(ReserveError::Stream(error)) if no_credit(&error) => {
                    return Err(ParkedOpen {
                        request: ParkedRequest::Reserve { reply },
                        deadline: open.deadline,
                    });
                }
                Err(error) => {
                    let _ = reply.send(Err(Error::Reservation(error.to_string())));
                }
            },
            ParkedRequest::Ping { reply } => match self.node.ping(now, connection) {
                Ok(()) => {
                    self.pings.insert(connection, reply);
                }
                Err(PingError::Stream(error)) if no_credit(&error) => {
                    return Err(ParkedOpen {
                        request: ParkedRequest::Ping { reply },
                        deadline: open.deadline,
                    });
                }
                Err(error) => {
                    let _ = reply.send(Err(Error::Ping(error.to_string())));
                }
            },
        }
        Ok(())
    }

    fn open_or_park(&mut self, connection: ConnectionId, open: ParkedOpen) {
        let open = if self.parked_opens.is_waiting(connection) {
            open
        } else {
            match self.try_open(connection, open) {
                Ok(()) => return,
                Err(open) => open,
            }
        };
        if let Err(open) = self.parked_opens.park(connection, open) {
            open.request.fail(parked_opens::no_credit(connection, None));
        }
    }

    /// The peer raised its stream credit: opens the parked opens, oldest first, while it lasts.
    fn open_parked(&mut self, connection: ConnectionId) {
        // Each pass takes one open out of a queue of at most MAX_PARKED_OPENS.
        while let Some(open) = self.parked_opens.pop(connection) {
            if let Err(open) = self.try_open(connection, open) {
                self.parked_opens.unpop(connection, open);
                return;
            }
        }
    }

    /// Fails the parked opens whose wait is over.
    fn expire_parked_opens(&mut self, now: Instant) {
        let waited = self.node.request_timeout();
        for (connection, open) in self.parked_opens.expire(now) {
            open.request
                .fail(parked_opens::no_credit(connection, Some(waited)));
        }
    }

    fn fail_connection(&mut self, connection: ConnectionId, failure: &ConnectionFailure) {
        let closed = || Error::ConnectionClosed(failure.clone());
        for open in self.parked_opens.take_all(connection) {
            open.request.fail(closed());
        }
        if let Some(reply) = self.dials.remove(&connection) {
            let _ = reply.send(Err(closed()));
        }
        if let Some(reply) = self.reserves.remove(&connection) {
            let _ = reply.send(Err(closed()));
        }
        if let Some(reply) = self.pings.remove(&connection) {
            let _ = reply.send(Err(closed()));
        }
        let on_conn = |s: &StreamHandle| s.connection() == connection;
        let opens: Vec<_> = self.opens.keys().copied().filter(on_conn).collect();
        for stream in opens {
            if let Some(reply) = self.opens.remove(&stream) {
                let _ = reply.send(Err(Error::StreamOpen(StreamOpenFailure::ConnectionClosed)));
            }
        }
        let reads: Vec<_> = self.reads.keys().copied().filter(on_conn).collect();
        for stream in reads {
            if let Some((_, reply)) = self.reads.remove(&stream) {
                let _ = reply.send(Err(closed()));
            }
        }
        let writes: Vec<_> = self.writes.keys().copied().filter(on_conn).collect();
        for stream in writes {
            if let Some((_, reply)) = self.writes.remove(&stream) {
                let _ = reply.send(Err(closed()));
            }
        }
    }

    fn apply(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Dial { addr, peer, reply } => match self.node.dial(now, addr, peer) {
                Ok(connection) => {
                    self.dials.insert(connection, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(Error::Dial(error)));
                }
            },
            Command::DialThroughRelay {
                relay_connection,
                target,
                reply,
            } => match self.node.dial_through_relay(now, relay_connection, target) {
                Ok(connection) => {
                    self.dials.insert(connection, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(Error::Dial(error)));
                }
            },
            Command::DialCircuit {
                target,
                addrs,
                reply,
            } => {
                if self.node.is_draining() {
                    let _ = reply.send(Err(Error::Dial(dep2p_core::node::DialError::Draining)));
                    return;
                }
                match self.node.dial_circuit(now, target, &addrs) {
                    Ok(dial) => {
                        self.circuit_dials.insert(dial, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(Error::CircuitAddr(error)));
                    }
                }
            }
            Command::AddRelayCandidates { candidates, source } => {
                self.node.add_relay_candidates(now, &candidates, source);
            }
            Command::Reserve { connection, reply } => {
                let deadline = now + self.node.request_timeout();
                self.open_or_park(
                    connection,
                    ParkedOpen {
                        request: ParkedRequest::Reserve { reply },
                        deadline,
                    },
                );
            }
            Command::OpenStream {
                connection,
                protocol,
                reply,
            } => {
                let deadline = now + self.node.request_timeout();
                self.open_or_park(
                    connection,
                    ParkedOpen {
                        request: ParkedRequest::Stream { protocol, reply },
                        deadline,
                    },
                );
            }
            Command::Write {
                stream,
                data,
                reply,
            } => self.try_write(stream, data, reply),
            Command::Read { stream, max, reply } => self.try_read(stream, max, reply),
            Command::Finish { stream, reply } => {
                let result = self.node.finish(now, stream);
                let _ = reply.send(result.map_err(|e| self.stream_error(e)));
            }
            Command::Reset { stream, code } => {
                self.reads.remove(&stream);
                self.writes.remove(&stream);
                let _ = self.node.reset(now, stream, code);
            }
            Command::Ping { connection, reply } => {
                let deadline = now + self.node.request_timeout();
                self.open_or_park(
                    connection,
                    ParkedOpen {
                        request: ParkedRequest::Ping { reply },
                        deadline,
                    },
                );
            }
            Command::Close { connection, code } => {
                let _ = self.node.close(now, connection, code, b"");
            }
            Command::Stats { reply } => {
                let _ = reply.send(Ok(self.snapshot()));
            }
            Command::Drain { timeout, reply } => self.start_drain(now, timeout, reply),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut reserved_on: Vec<PeerId> = self.reservations.values().copied().collect();
        reserved_on.sort();
        reserved_on.dedup();
        let snapshot = Snapshot {
            node: self.node.stats(),
            relay: self.node.relay_stats(),
            reserved_on,
        };
        if let Some(m) = &self.metrics {
            m.update(&snapshot);
        }
        snapshot
    }

    fn try_write(&mut self, stream: StreamHandle, mut data: Bytes, reply: Reply<()>) {
        let now = Instant::now();
        while !data.is_empty() {
            // The written part is split off `data` (without a copy on a direct stream).
            match self.node.write_bytes(now, stream, &mut data) {
                Ok(0) => {
                    self.writes.insert(stream, (data, reply));
                    return;
                }
                Ok(_) => {}
                // Still negotiating (a stream handed out before its ready event): wait.
                Err(StreamError::Negotiating(_)) => {
                    self.writes.insert(stream, (data, reply));
                    return;
                }
                Err(error) => {
                    let _ = reply.send(Err(self.stream_error(error)));
                    return;
                }
            }
        }
        let _ = reply.send(Ok(()));
    }

    fn try_read(&mut self, stream: StreamHandle, max: usize, reply: Reply<Option<Bytes>>) {
        match self.node.read(Instant::now(), stream, max) {
            Ok(ReadOutcome::Data(data)) => {
                let _ = reply.send(Ok(Some(data)));
            }
            Ok(ReadOutcome::Finished) => {
                let _ = reply.send(Ok(None));
            }
            Ok(ReadOutcome::Blocked) | Err(StreamError::Negotiating(_)) => {
                self.reads.insert(stream, (max, reply));
            }
            Err(error) => {
                let _ = reply.send(Err(self.stream_error(error)));
            }
        }
    }

    /// A stream error, with the close reason when its connection is gone.
    fn stream_error(&self, error: dep2p_core::node::StreamError) -> Error {
        use dep2p_core::node::StreamError as E;
        let connection = match &error {
            E::UnknownConnection(c) | E::NotEstablished(c) => Some(*c),
            E::UnknownStream(s) => Some(s.connection()),
            _ => None,
        };
        connection
            .and_then(|c| self.closed.iter().rev().find(|(id, _)| *id == c))
            .map_or(Error::Stream(error), |(_, failure)| {
                Error::ConnectionClosed(failure.clone())
            })
    }

    /// Retries every parked read and write. Cheap (one entry per blocked stream) and immune to
    /// a missed readiness event.
    fn retry_parked(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        for (stream, (data, reply)) in writes {
            if reply.is_closed() {
                continue;
            }
            self.try_write(stream, data, reply);
        }
        let reads = std::mem::take(&mut self.reads);
        for (stream, (max, reply)) in reads {
            if reply.is_closed() {
                continue;
            }
            self.try_read(stream, max, reply);
        }
    }

    fn start_drain(&mut self, now: Instant, timeout: Duration, reply: Reply<()>) {
        tracing::info!(
            connections = self.node.stats().connections,
            "draining: closing every connection with the core's drain code"
        );
        // The core refuses new reservations and connections, stops AutoRelay, and closes every
        // connection with CLOSE_DRAINING, which clients take as "fail over now".
        self.node.drain(now);
        self.draining = Some(Draining {
            until: now + timeout,
            reply: Some(reply),
        });
    }

    /// Whether a drain is complete (every connection gone, or the timeout passed); replies.
    fn drain_finished(&mut self) -> bool {
        let Some(draining) = self.draining.as_mut() else {
            return false;
        };
        let done = self.node.stats().connections == 0 || Instant::now() >= draining.until;
        if done && let Some(reply) = draining.reply.take() {
            let _ = reply.send(Ok(()));
        }
        done
    }
}
