//! The async API for embedding applications: start a node on a UDP socket, then dial, reserve,
//! open and accept streams, and watch events through a cloneable [`NodeHandle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dep2p_core::addr::quic_multiaddr;
use dep2p_core::autorelay::CandidateSource;
use dep2p_core::identity::{Keypair, PeerId};
use dep2p_core::node::{
    CircuitAddrError, ClientReservation, ConnectionFailure, ConnectionId, DialError, Event, Node,
    NodeConfig, NodeError, StreamError, StreamHandle, StreamOpenFailure,
};
use multiaddr::Multiaddr;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};

use crate::driver::{CircuitConnection, Command, Driver, RelaySwitch, Snapshot, unix_now};
use crate::io::UdpIo;
use crate::metrics::Metrics;

/// Why a handle call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The node refused to dial (also while draining).
    #[error("dial refused: {0}")]
    Dial(#[from] DialError),
    /// No circuit address given to [`NodeHandle::dial_circuit`] can be used.
    #[error("dial refused: {0}")]
    CircuitAddr(#[from] CircuitAddrError),
    /// A circuit dial failed through every relay, in every round; what each attempt ran into.
    #[error("no relay reached the target: {}", .0.join("; "))]
    CircuitDial(Vec<String>),
    /// The connection ended (or a dial failed) with this reason.
    #[error("connection closed: {0}")]
    ConnectionClosed(ConnectionFailure),
    /// A reservation could not be made.
    #[error("reservation failed: {0}")]
    Reservation(String),
    /// A stream command failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A stream could not be opened for its protocol.
    #[error("stream refused: {0}")]
    StreamOpen(StreamOpenFailure),
    /// [`NodeHandle::open_stream`] (or [`reserve`](NodeHandle::reserve),
    /// [`ping`](NodeHandle::ping)) found the peer's stream credit used up and could not wait
    /// for more: the peer raised none within the node's request timeout, or
    /// [`MAX_PARKED_OPENS`](crate::MAX_PARKED_OPENS) requests already waited on the connection.
    #[error("no stream credit on {connection}: {reason}")]
    NoStreamCredit {
        /// The connection.
        connection: ConnectionId,
        /// Why the open stopped waiting.
        reason: String,
    },
    /// A ping failed.
    #[error("ping failed: {0}")]
    Ping(String),
    /// The node's task has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// An event of the node, as the application sees it.
#[derive(Debug, Clone)]
pub enum AdapterEvent {
    /// Reported by the core, unchanged (including its own `RelaySwitched`).
    Node(Event),
    /// The core's AutoRelay switched relays; sent right after the core's
    /// [`Event::RelaySwitched`], with the failover time the driver measured.
    RelaySwitched(RelaySwitch),
}

/// Most datagrams the driver asks the node to build into one GSO send.
const MAX_GSO_BATCH: usize = 10;

/// A stream the peer opened for one of our protocols.
#[derive(Debug)]
pub struct InboundStream {
    /// The stream.
    pub stream: Stream,
    /// The negotiated protocol.
    pub protocol: String,
    /// The remote peer.
    pub peer: Option<PeerId>,
}

/// How to start a node: everything [`NodeHandle::spawn`] needs.
pub struct NodeOptions {
    /// Core configuration. Its listen addresses are filled in from the bound socket when empty.
    pub config: NodeConfig,
    /// Host key.
    pub keypair: Keypair,
    /// UDP address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// Addresses to announce instead of the bound one (a relay behind a NAT or on 0.0.0.0).
    pub external_addrs: Vec<Multiaddr>,
    /// Relay candidates handed to AutoRelay at start as its bootstrap list (a relay's PeerId
    /// and its QUIC multiaddrs). Needs `config.auto_relay(Some(..))`; ignored without it.
    pub relay_candidates: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Where to count what happens.
    pub metrics: Option<Arc<Metrics>>,
    /// Inbound streams queued for [`NodeHandle::accept`] before new ones are reset.
    pub accept_backlog: usize,
}

impl NodeOptions {
    /// Options with defaults: no relay candidates, no metrics, a backlog of 256.
    #[must_use]
    pub fn new(config: NodeConfig, keypair: Keypair, bind: SocketAddr) -> Self {
        Self {
            config,
            keypair,
            bind,
            external_addrs: Vec::new(),
            relay_candidates: Vec::new(),
            metrics: None,
            accept_backlog: 256,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The core refused its configuration.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A cloneable handle on a running node. The node's task stops when every handle is dropped
/// (or after [`NodeHandle::drain`]).
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// What every handle of one node shares.
pub(crate) struct Shared {
    events: broadcast::Sender<AdapterEvent>,
    /// Subscribed before the driver started, so the first [`NodeHandle::events`] call sees
    /// every event from the start.
    first_events: std::sync::Mutex<Option<broadcast::Receiver<AdapterEvent>>>,
    inbound: Mutex<mpsc::Receiver<InboundStream>>,
    peer_id: PeerId,
    local_addr: SocketAddr,
    listen_addrs: Vec<Multiaddr>,
}

/// What the driver keeps to hand out streams: a weak sender, so dropping every application
/// handle still ends the node's task.
#[derive(Clone)]
pub(crate) struct WeakHandle {
    commands: mpsc::WeakSender<Command>,
    shared: Arc<Shared>,
}

impl WeakHandle {
    pub(crate) fn upgrade(&self) -> Option<NodeHandle> {
        Some(NodeHandle {
            commands: self.commands.upgrade()?,
            shared: Arc::clone(&self.shared),
        })
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.shared.peer_id)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Random bytes from the OS: the adapter owns randomness (the core takes a seed).
pub(crate) fn os_seed() -> [u8; 32] {
    use rand::TryRngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .expect("the OS random generator is available");
    seed
}

impl NodeHandle {
    /// Binds the socket, builds the node and starts its task on the current tokio runtime.
    pub fn spawn(options: NodeOptions) -> Result<Self, StartError> {
        let NodeOptions {
            mut config,
            keypair,
            bind,
            external_addrs,
            relay_candidates,
            metrics,
            accept_backlog,
        } = options;
        let io = UdpIo::bind(bind).map_err(|source| StartError::Bind { addr: bind, source })?;
        let local_addr = io
            .local_addr()
            .map_err(|source| StartError::Bind { addr: bind, source })?;
        // A relay must announce an address peers can reach: the configured external ones,
        // else the bound one (loopback when bound to the unspecified address).
        let listen_addrs = if external_addrs.is_empty() {
            let mut announced = local_addr;
            if announced.ip().is_unspecified() {
                announced.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            vec![quic_multiaddr(announced)]
        } else {
            external_addrs
        };
        config.listen_addrs(listen_addrs.clone());
        // Build packets in GSO batches when the socket can send them (quinn's own endpoint
        // driver batches up to 10): fewer calls and syscalls per byte.
        config.max_transmit_datagrams(io.max_gso_segments().clamp(1, MAX_GSO_BATCH));
        let peer_id = keypair.public().to_peer_id();
        let node = Node::new(config, keypair, os_seed(), Instant::now(), unix_now())?;
        let (commands, commands_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(4096);
        let (inbound_tx, inbound_rx) = mpsc::channel(accept_backlog.max(1));
        let handle = Self {
            commands,
            shared: Arc::new(Shared {
                first_events: std::sync::Mutex::new(Some(events.subscribe())),
                events: events.clone(),
                inbound: Mutex::new(inbound_rx),
                peer_id,
                local_addr,
                listen_addrs,
            }),
        };
        let driver_handle = WeakHandle {
            commands: handle.commands.downgrade(),
            shared: Arc::clone(&handle.shared),
        };
        let driver = Driver::new(
            node,
            io,
            commands_rx,
            events,
            inbound_tx,
            relay_candidates,
            metrics,
            driver_handle,
        );
        tokio::spawn(driver.run());
        Ok(handle)
    }

    /// This node's PeerId.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The bound UDP address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The addresses the node announces (with `/p2p/<id>`).
    #[must_use]
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .listen_addrs
            .iter()
            .map(|a| {
                a.clone()
                    .with(multiaddr::Protocol::P2p(self.shared.peer_id))
            })
            .collect()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(crate::driver::Reply<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Dials `peer` at `addr` and waits until the connection is established and authenticated.
    pub async fn dial(&self, addr: SocketAddr, peer: PeerId) -> Result<ConnectionId, Error> {
        self.call(|reply| Command::Dial { addr, peer, reply }).await
    }

    /// Dials `target` through the relay at the other end of `relay_connection`, and waits until
    /// TLS authenticated `target` end to end over the circuit.
    pub async fn dial_through_relay(
        &self,
        relay_connection: ConnectionId,
        target: PeerId,
    ) -> Result<ConnectionId, Error> {
        self.call(|reply| Command::DialThroughRelay {
            relay_connection,
            target,
            reply,
        })
        .await
    }

    /// Dials `target` through the relays of its circuit addresses
    /// (`<relay quic addr>/p2p/<relay>/p2p-circuit[/p2p/<target>]`): the first relay, the next
    /// when one fails, the whole list again after a backoff, a bounded number of rounds (the
    /// core's [`Node::dial_circuit`]). Waits until TLS authenticated `target` end to end.
    pub async fn dial_circuit(
        &self,
        target: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<CircuitConnection, Error> {
        self.call(|reply| Command::DialCircuit {
            target,
            addrs,
            reply,
        })
        .await
    }

    /// Gives AutoRelay more relay candidates (a relay's PeerId and its QUIC multiaddrs).
    /// Does nothing unless the node was started with AutoRelay.
    pub async fn add_relay_candidates(
        &self,
        candidates: Vec<(PeerId, Vec<Multiaddr>)>,
        source: CandidateSource,
    ) -> Result<(), Error> {
        self.commands
            .send(Command::AddRelayCandidates { candidates, source })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Reserves a slot on the relay at the other end of `connection` (renewed automatically).
    /// Waits for stream credit as [`open_stream`](Self::open_stream) does.
    pub async fn reserve(&self, connection: ConnectionId) -> Result<ClientReservation, Error> {
        self.call(|reply| Command::Reserve { connection, reply })
            .await
    }

    /// Opens a stream for `protocol` and waits until the peer accepted it. When the peer's
    /// stream credit is used up (a relay gives 8 streams at first and more a round trip later),
    /// the open waits for more, in order, for at most the node's request timeout, and fails
    /// with [`Error::NoStreamCredit`] after it.
    pub async fn open_stream(
        &self,
        connection: ConnectionId,
        protocol: &str,
    ) -> Result<Stream, Error> {
        let protocol = protocol.to_owned();
        let stream = self
            .call(|reply| Command::OpenStream {
                connection,
                protocol,
                reply,
            })
            .await?;
        Ok(Stream::new(self.clone(), stream))
    }

    /// The next stream a peer opened for one of our protocols; `None` when the node stopped.
    pub async fn accept(&self) -> Option<InboundStream> {
        self.shared.inbound.lock().await.recv().await
    }

    /// Measures the round trip to the peer of `connection`. Waits for stream credit as
    /// [`open_stream`](Self::open_stream) does.
    pub async fn ping(&self, connection: ConnectionId) -> Result<Duration, Error> {
        self.call(|reply| Command::Ping { connection, reply }).await
    }

    /// Closes a connection with an application code.
    pub async fn close(&self, connection: ConnectionId, code: u32) -> Result<(), Error> {
        self.commands
            .send(Command::Close { connection, code })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Subscribes to events: the first call on a node sees every event since it started,
    /// later calls see events from now on. A slow subscriber misses the oldest.
    #[must_use]
    pub fn events(&self) -> broadcast::Receiver<AdapterEvent> {
        let first = self
            .shared
            .first_events
            .lock()
            .ok()
            .and_then(|mut first| first.take());
        first.unwrap_or_else(|| self.shared.events.subscribe())
    }

    /// Stops keeping events for a first subscriber. Until [`events`](Self::events) is first
    /// called, the node keeps its latest 4,096 events (identify records included) so that
    /// subscriber misses none; a node whose events nobody reads (`dep2p relay`) calls this so
    /// they are not held for its whole life. Later subscribers see events from then on.
    pub fn discard_events(&self) {
        if let Ok(mut first) = self.shared.first_events.lock() {
            first.take();
        }
    }

    /// Counters and reservations now (and refreshes the metrics, if any).
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Graceful drain (DESIGN §5.2), the core's [`Node::drain`]: refuse new reservations and
    /// connections, stop AutoRelay, close every connection with
    /// [`CLOSE_DRAINING`](dep2p_core::node::CLOSE_DRAINING) (clients fail over at once); wait
    /// until they are gone or `timeout` passed; then the node's task ends.
    pub async fn drain(&self, timeout: Duration) -> Result<(), Error> {
        self.call(|reply| Command::Drain { timeout, reply }).await
    }

    /// Stops the node at once (its peers notice by idle timeout): a drain with no grace.
    pub async fn shutdown(&self) {
        let _ = self.drain(Duration::ZERO).await;
    }
}

/// An application stream on a connection.
#[derive(Debug, Clone)]
pub struct Stream {
    handle: NodeHandle,
    id: StreamHandle,
}

impl Stream {
    pub(crate) fn new(handle: NodeHandle, id: StreamHandle) -> Self {
        Self { handle, id }
    }

    /// The core's handle of this stream.
    #[must_use]
    pub fn id(&self) -> StreamHandle {
        self.id
    }

    /// Writes all of `data`, waiting for flow control as needed.
    pub async fn write_all(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        let stream = self.id;
        let data = data.into();
        self.handle
            .call(|reply| Command::Write {
                stream,
                data,
                reply,
            })
            .await
    }

    /// Reads up to `max` bytes; `None` at the end of the stream.
    pub async fn read(&self, max: usize) -> Result<Option<Bytes>, Error> {
        let stream = self.id;
        self.handle
            .call(|reply| Command::Read { stream, max, reply })
            .await
    }

    /// Reads until the end of the stream, refusing more than `limit` bytes.
    pub async fn read_to_end(&self, limit: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read(64 * 1024).await? {
            if out.len() + chunk.len() > limit {
                self.reset(1).await;
                return Err(Error::Stream(StreamError::InvalidProtocol(format!(
                    "peer sent more than {limit} bytes"
                ))));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Finishes our sending side.
    pub async fn finish(&self) -> Result<(), Error> {
        let stream = self.id;
        self.handle
            .call(|reply| Command::Finish { stream, reply })
            .await
    }

    /// Abandons the stream both ways.
    pub async fn reset(&self, code: u32) {
        let _ = self
            .handle
            .commands
            .send(Command::Reset {
                stream: self.id,
                code,
            })
            .await;
    }
}
