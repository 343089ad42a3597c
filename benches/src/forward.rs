//! Relayed forwarding in memory: a relay R, a target A holding a reservation on R, and a
//! dialer B with a relayed connection to A through R and one stream to A. Real quinn-proto
//! connections (TLS 1.3, AES-GCM) on both hops, no sockets: datagrams travel in a queue with a
//! fixed one-way delay on a virtual clock, so wall time is pure CPU.
//!
//! Every call into a node is timed, per node: [`RelayedTrio::busy`] tells how much wall time
//! the relay spent (decrypt from B, bridge, encrypt to A, and the acknowledgements back) for
//! the bytes moved, which is the "in-memory circuit forwarding per core" of DESIGN §10.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{
    ConnectionId, Datagram, Event, Node, NodeConfig, Output, ReadOutcome, StreamHandle,
};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::{WORLD_UNIX_START, virtual_epoch};

/// The application protocol of the bulk stream.
pub const BULK: &str = "/dep2p/bench-bulk/1.0.0";
/// Index of the relay.
pub const R: usize = 0;
/// Index of the target (holds the reservation, reads).
pub const A: usize = 1;
/// Index of the dialer (writes).
pub const B: usize = 2;
/// Longest virtual time any setup step may take.
const SETTLE: Duration = Duration::from_secs(10);
/// Packets per transmit, as the tokio adapter asks for on Linux (GSO).
const GSO_BATCH: usize = 10;
/// Bytes handed to one `write` call.
const WRITE_CHUNK: usize = 64 * 1024;

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    // Reversed: the max-heap pops the earliest datagram first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Three nodes, a relayed connection B → R → A and one bulk stream on it.
pub struct RelayedTrio {
    nodes: Vec<Node>,
    addrs: Vec<SocketAddr>,
    wake: Vec<Instant>,
    busy: Vec<Duration>,
    events: Vec<Vec<Event>>,
    keep_events: bool,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    now: Instant,
    latency: Duration,
    buf: Vec<u8>,
    send: Option<StreamHandle>,
    recv: Option<StreamHandle>,
    chunk: Bytes,
    /// Bytes A has read so far.
    pub received: u64,
}

impl RelayedTrio {
    /// Sets the trio up: connections, A's reservation, B's relayed connection and the stream.
    /// `latency` is the one-way delay of every hop (virtual time).
    ///
    /// # Panics
    ///
    /// When a setup step does not complete; that is a bug in the core, not a measurement.
    #[must_use]
    pub fn new(latency: Duration) -> Self {
        let now = virtual_epoch();
        let mut relay = NodeConfig::default();
        relay.relay_server(Some(RelayLimits::default().max_circuit_bytes(u64::MAX / 4)));
        let mut app = NodeConfig::default();
        app.protocol(BULK);
        let configs = [relay, app.clone(), app];
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        for (i, mut config) in configs.into_iter().enumerate() {
            let index = u8::try_from(i).expect("three nodes");
            let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 0, index + 1), 4001));
            config.listen_addrs(vec![dep2p_core::addr::quic_multiaddr(addr)]);
            // As the tokio adapter runs it on a GSO-capable socket.
            config.max_transmit_datagrams(GSO_BATCH);
            let node = Node::new(
                config,
                keypair_from_seed([index + 1; 32]),
                [index + 101; 32],
                now,
                WORLD_UNIX_START,
            )
            .expect("node config is valid");
            nodes.push(node);
            addrs.push(addr);
        }
        let mut trio = Self {
            nodes,
            addrs,
            wake: vec![now; 3],
            busy: vec![Duration::ZERO; 3],
            events: vec![Vec::new(); 3],
            keep_events: true,
            queue: BinaryHeap::new(),
            seq: 0,
            now,
            latency,
            buf: Vec::with_capacity(64 * 1024),
            send: None,
            recv: None,
            chunk: Bytes::from(vec![0x5a; WRITE_CHUNK]),
            received: 0,
        };
        for i in 0..3 {
            trio.drain(i);
        }
        let relay_peer = trio.nodes[R].peer_id();
        let relay_addr = trio.addrs[R];
        let a_r = trio
            .command(A, |n, now| n.dial(now, relay_addr, relay_peer))
            .expect("A dials R");
        let b_r = trio
            .command(B, |n, now| n.dial(now, relay_addr, relay_peer))
            .expect("B dials R");
        trio.run_until(
            |t| t.established(A, a_r) && t.established(B, b_r),
            "A and B connect to R",
        );
        trio.command(A, |n, now| n.reserve(now, a_r))
            .expect("A reserves");
        trio.run_until(
            |t| {
                t.events[A]
                    .iter()
                    .any(|e| matches!(e, Event::ReservationAccepted { .. }))
            },
            "R accepts A's reservation",
        );
        let target = trio.nodes[A].peer_id();
        let circuit = trio
            .command(B, |n, now| n.dial_through_relay(now, b_r, target))
            .expect("B dials A through R");
        trio.run_until(
            |t| t.established(B, circuit),
            "the relayed connection is up",
        );
        let send = trio
            .command(B, |n, now| n.open_stream(now, circuit, BULK))
            .expect("stream opens");
        trio.run_until(
            |t| {
                t.events[B]
                    .iter()
                    .any(|e| matches!(e, Event::StreamReady { stream, .. } if *stream == send))
                    && t.events[A]
                        .iter()
                        .any(|e| matches!(e, Event::InboundStream { .. }))
            },
            "the bulk stream is negotiated",
        );
        let recv = trio.events[A]
            .iter()
            .find_map(|e| match e {
                Event::InboundStream { stream, .. } => Some(*stream),
                _ => None,
            })
            .expect("checked above");
        trio.send = Some(send);
        trio.recv = Some(recv);
        trio.keep_events = false;
        trio.events.iter_mut().for_each(Vec::clear);
        trio
    }

    /// Wall time each node spent inside its own calls so far (index [`R`], [`A`], [`B`]).
    #[must_use]
    pub fn busy(&self, node: usize) -> Duration {
        self.busy[node]
    }

    /// Moves at least `bytes` more from B to A over the relayed stream.
    ///
    /// # Panics
    ///
    /// When the stream fails; that is a bug in the core.
    pub fn pump(&mut self, bytes: u64) {
        let goal = self.received + bytes;
        let (send, recv) = (self.send.expect("set up"), self.recv.expect("set up"));
        while self.received < goal {
            loop {
                // As the tokio adapter writes: `Bytes`, which the node queues without a copy.
                let mut chunk = self.chunk.clone();
                let offered = chunk.len();
                let written = self
                    .command(B, |n, now| n.write_bytes(now, send, &mut chunk))
                    .expect("write to the bulk stream");
                if written < offered {
                    break;
                }
            }
            loop {
                match self.command(A, |n, now| n.read(now, recv, usize::MAX)) {
                    Ok(ReadOutcome::Data(data)) => self.received += data.len() as u64,
                    Ok(ReadOutcome::Blocked) => break,
                    other => panic!("bulk stream read: {other:?}"),
                }
            }
            if self.received >= goal {
                break;
            }
            assert!(self.step(), "the network went quiet with bytes outstanding");
        }
    }

    fn established(&self, at: usize, connection: ConnectionId) -> bool {
        self.events[at].iter().any(
            |e| matches!(e, Event::ConnectionEstablished { connection: c, .. } if *c == connection),
        )
    }

    fn command<T>(&mut self, at: usize, f: impl FnOnce(&mut Node, Instant) -> T) -> T {
        let started = Instant::now();
        let out = f(&mut self.nodes[at], self.now);
        self.busy[at] += started.elapsed();
        self.drain(at);
        out
    }

    fn run_until(&mut self, done: impl Fn(&Self) -> bool, what: &str) {
        let limit = self.now + SETTLE;
        while !done(self) {
            assert!(
                self.step() && self.now <= limit,
                "setup: {what} did not happen"
            );
        }
    }

    fn drain(&mut self, at: usize) {
        let started = Instant::now();
        loop {
            match self.nodes[at].poll_output(&mut self.buf) {
                Output::Transmit(transmit) => {
                    let segment = transmit.segment_size.unwrap_or(transmit.size).max(1);
                    let to = self.addrs.iter().position(|a| *a == transmit.destination);
                    if let Some(to) = to {
                        for piece in self.buf[..transmit.size].chunks(segment) {
                            self.seq += 1;
                            self.queue.push(InFlight {
                                at: self.now + self.latency,
                                seq: self.seq,
                                to,
                                from: self.addrs[at],
                                data: piece.to_vec(),
                            });
                        }
                    }
                }
                Output::Event(event) => {
                    if self.keep_events {
                        self.events[at].push(event);
                    }
                }
                Output::Timeout(at_time) => {
                    self.wake[at] = at_time;
                    break;
                }
            }
        }
        self.busy[at] += started.elapsed();
    }

    /// Advances to the next delivery or wake-up and processes everything due then. Returns
    /// false when nothing is left to happen.
    fn step(&mut self) -> bool {
        let delivery = self.queue.peek().map(|d| d.at);
        let wake = self.wake.iter().copied().min();
        let Some(next) = [delivery, wake].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        // Everything due is delivered before any node is drained, as the tokio adapter reads a
        // batch of datagrams (recvmmsg, GRO) before it polls the node's output.
        let mut received = [false; 3];
        while self.queue.peek().is_some_and(|d| d.at <= now) {
            let datagram = self.queue.pop().expect("peeked");
            let to = datagram.to;
            received[to] = true;
            let started = Instant::now();
            self.nodes[to].handle_datagram(
                now,
                Datagram {
                    remote: datagram.from,
                    local_ip: None,
                    ecn: None,
                    data: BytesMut::from(&datagram.data[..]),
                },
            );
            self.busy[to] += started.elapsed();
        }
        for (i, received) in received.into_iter().enumerate() {
            if received {
                self.drain(i);
            }
        }
        for i in 0..self.nodes.len() {
            if self.wake[i] <= now {
                let started = Instant::now();
                self.nodes[i].handle_timeout(now);
                self.busy[i] += started.elapsed();
                self.drain(i);
            }
        }
        true
    }
}
