//! A deterministic in-memory driver for tests: several [`Node`]s, a virtual clock, datagram
//! queues and optional loss and latency. This is the seed of `dep2p-sim`.
//!
//! Only compiled with the `test-driver` feature (and for the crate's own tests).
//!
//! Runs replay: every node gets [`NodeConfig::deterministic_tls`], so one world seed fixes every
//! byte on the wire, and [`World::trace_hash`] summarises a run (DESIGN §8) so two runs can be
//! compared.
//!
//! ```
//! use dep2p_core::testing::World;
//! use dep2p_core::node::{Event, NodeConfig};
//!
//! let mut world = World::new(7);
//! let a = world.add_node(NodeConfig::default());
//! let b = world.add_node(NodeConfig::default());
//! world.connect(a, b);
//! assert!(world.run_until(std::time::Duration::from_secs(5), |w| w.is_connected(a, b)));
//! ```

pub mod raw;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::identity::{PeerId, keypair_from_seed};
use crate::node::{ConnectionId, Datagram, Event, Node, NodeConfig, Output};
use crate::seed::SeedTree;

/// The instant virtual time starts from.
///
/// `Instant` has no public constructor, so the driver anchors its virtual clock on one real
/// reading taken at start-up. Only differences from this anchor are ever used: nothing the
/// nodes do depends on its value, so runs stay deterministic.
#[must_use]
pub fn virtual_epoch() -> Instant {
    #[allow(clippy::disallowed_methods)] // the one anchor of virtual time; see the doc comment
    Instant::now()
}

/// How many generations of next 1-RTT packet keys the server sessions of this process derived:
/// they are derived on first use, which is a key update.
#[must_use]
pub fn server_key_generations_derived() -> u64 {
    crate::node::LAZY_KEYS_DERIVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Unix time at which every world starts (2026-01-01T00:00:00Z): fixed, so runs replay.
pub const WORLD_UNIX_START: Duration = Duration::from_secs(1_767_225_600);

/// Most steps one `run_until` may take: a guard against a livelock in a test, not a budget.
const MAX_STEPS: u64 = 50_000_000;

/// How datagrams travel between nodes. One setting for every link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (may reorder).
    pub jitter: Duration,
    /// Probability in `0.0..=1.0` that a datagram is dropped.
    pub loss: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

/// A datagram in flight.
struct InFlight {
    deliver_at: Instant,
    seq: u64,
    to: SocketAddr,
    from: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.seq) == (other.deliver_at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    // Reversed, so the max-heap pops the earliest (then lowest-sequence) datagram first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deliver_at, other.seq).cmp(&(self.deliver_at, self.seq))
    }
}

/// One node of the world, with everything it reported.
pub struct SimNode {
    /// The node.
    pub node: Node,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Every event it emitted, with the virtual time.
    pub events: Vec<(Instant, Event)>,
    /// Times the world woke it: a step that delivered it datagrams or fired its timer (both
    /// in one step count once), as a driver wakes for its socket or its sleep.
    pub wakeups: u64,
    /// Datagrams it sent.
    pub datagrams_sent: u64,
    wake: Instant,
}

/// Counters of the world's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to a node.
    pub delivered: u64,
    /// Datagrams dropped by the loss model.
    pub lost: u64,
    /// Datagrams sent to an address no node has.
    pub unroutable: u64,
    /// Datagrams dropped because their sender or receiver was isolated.
    pub isolated: u64,
}

/// A set of nodes on a virtual network with a virtual clock.
pub struct World {
    seeds: SeedTree,
    epoch: Instant,
    now: Instant,
    nodes: Vec<SimNode>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    link: LinkConfig,
    link_rng: ChaCha20Rng,
    buf: Vec<u8>,
    /// Which nodes received something in the current step (kept to reuse its allocation).
    received_scratch: Vec<bool>,
    stats: NetStats,
    /// Hosts outside the world (raw QUIC peers driven by a test): datagrams for them wait here.
    external: BTreeMap<SocketAddr, Vec<ExternalDatagram>>,
    /// Running SHA-256 over every delivered datagram and every emitted event.
    trace: ring::digest::Context,
    /// Nodes cut off from the network: nothing they send or are sent arrives.
    isolated: BTreeSet<SocketAddr>,
}

/// A datagram a node sent to an external host (see [`World::add_external`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalDatagram {
    /// When it arrived (virtual time).
    pub at: Instant,
    /// The node that sent it.
    pub from: SocketAddr,
    /// Its payload.
    pub data: Vec<u8>,
}

impl World {
    /// An empty world whose every random choice derives from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut root = [0u8; 32];
        root[..8].copy_from_slice(&seed.to_le_bytes());
        let seeds = SeedTree::new(root);
        let epoch = virtual_epoch();
        Self {
            epoch,
            link_rng: ChaCha20Rng::from_seed(seeds.derive("links")),
            seeds,
            now: epoch,
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            link: LinkConfig::default(),
            buf: Vec::with_capacity(1500),
            received_scratch: Vec::new(),
            stats: NetStats::default(),
            external: BTreeMap::new(),
            trace: ring::digest::Context::new(&ring::digest::SHA256),
            isolated: BTreeSet::new(),
        }
    }

    /// Sets how every link behaves from now on.
    pub fn set_link(&mut self, link: LinkConfig) {
        self.link = link;
    }

    /// Adds a node whose key and seed derive from the world's seed and its index. Its TLS
    /// randomness derives from its seed too ([`NodeConfig::deterministic_tls`] is forced on).
    pub fn add_node(&mut self, config: NodeConfig) -> usize {
        let addr = self.next_addr();
        self.add_node_at(config, addr)
    }

    /// The address [`World::add_node`] gives the next node: 127.0.1.1 for the first, 250 nodes
    /// per /24 after that.
    fn next_addr(&self) -> SocketAddr {
        let index = self.nodes.len();
        let third = u8::try_from(1 + index / 250).expect("at most 63,750 nodes in a test world");
        let octet = u8::try_from(1 + index % 250).expect("index % 250 + 1 fits in a byte");
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, third, octet)), 4001)
    }

    /// [`World::add_node`] at a chosen UDP address instead of `127.0.1.<index + 1>:4001`, e.g.
    /// to put several nodes behind one IP address (per-IP limits). Its key and seed still derive
    /// from its index.
    ///
    /// # Panics
    /// If `addr` already belongs to a node or an external host.
    pub fn add_node_at(&mut self, config: NodeConfig, addr: SocketAddr) -> usize {
        let node_seeds = self.seeds.subtree(&format!("node-{}", self.nodes.len()));
        self.add_node_from(config, addr, node_seeds)
    }

    /// Adds a node at the next free address whose host key and every secret (QUIC reset and
    /// token keys, connection ids, TLS randomness) derive from `seed` instead of the world's
    /// seed. A fuzz harness gives a node a seed taken from the input, so the fuzzer cannot
    /// learn that node's secrets (e.g. a stateless reset token) from earlier runs.
    pub fn add_node_with_seed(&mut self, config: NodeConfig, seed: [u8; 32]) -> usize {
        let addr = self.next_addr();
        self.add_node_from(config, addr, crate::seed::SeedTree::new(seed))
    }

    fn add_node_from(
        &mut self,
        mut config: NodeConfig,
        addr: SocketAddr,
        node_seeds: crate::seed::SeedTree,
    ) -> usize {
        assert!(
            !self.by_addr.contains_key(&addr) && !self.external.contains_key(&addr),
            "{addr} is already taken"
        );
        config.deterministic_tls(true);
        let index = self.nodes.len();
        if config.listen_addrs.is_empty() {
            // What an adapter does with its bound socket: announce it (relays must).
            config.listen_addrs(vec![crate::addr::quic_multiaddr(addr)]);
        }
        let key = keypair_from_seed(node_seeds.derive("host-key"));
        let node = Node::new(
            config,
            key,
            node_seeds.derive("node"),
            self.now,
            WORLD_UNIX_START + self.elapsed(),
        )
        .expect("test node configuration is valid");
        self.by_addr.insert(addr, index);
        self.nodes.push(SimNode {
            node,
            addr,
            events: Vec::new(),
            wakeups: 0,
            datagrams_sent: 0,
            wake: self.now,
        });
        self.drain(index);
        index
    }

    /// The current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the world began.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// SHA-256 over everything that happened so far: each delivered (or injected) datagram
    /// with its virtual time since the epoch, sender, receiver and bytes, and each event with its
    /// node index, virtual time and `Debug` text. Two worlds built and driven the same way from
    /// the same seed have the same hash.
    #[must_use]
    pub fn trace_hash(&self) -> [u8; 32] {
        let digest = self.trace.clone().finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// [`World::trace_hash`] as lowercase hex, for printing.
    #[must_use]
    pub fn trace_hash_hex(&self) -> String {
        self.trace_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Adds a delivered datagram to the trace. Fields are fixed-width or length-prefixed, so
    /// two different traces cannot hash the same input.
    fn trace_datagram(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let offset = self.elapsed_nanos();
        let trace = &mut self.trace;
        trace.update(b"D");
        trace.update(&offset.to_le_bytes());
        trace_addr(trace, from);
        trace_addr(trace, to);
        trace.update(&(data.len() as u64).to_le_bytes());
        trace.update(data);
    }

    /// Adds an event emitted by node `index` to the trace.
    fn trace_event(&mut self, index: usize, event: &Event) {
        let offset = self.elapsed_nanos();
        let text = format!("{event:?}");
        let trace = &mut self.trace;
        trace.update(b"E");
        trace.update(&(index as u64).to_le_bytes());
        trace.update(&offset.to_le_bytes());
        trace.update(&(text.len() as u64).to_le_bytes());
        trace.update(text.as_bytes());
    }

    fn elapsed_nanos(&self) -> u64 {
        // u64 nanoseconds last 584 years of virtual time.
        u64::try_from(self.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Cuts a node off the network (as a crash or a partition looks to its peers): from now
    /// on nothing it sends or is sent arrives, including datagrams already in flight.
    pub fn isolate(&mut self, index: usize) {
        self.isolated.insert(self.nodes[index].addr);
    }

    /// Reconnects an isolated node.
    pub fn heal(&mut self, index: usize) {
        self.isolated.remove(&self.nodes[index].addr);
    }

    /// Network counters.
    #[must_use]
    pub fn net_stats(&self) -> NetStats {
        self.stats
    }

    /// A node.
    pub fn node(&mut self, index: usize) -> &mut Node {
        &mut self.nodes[index].node
    }

    /// A node with its address and event log.
    #[must_use]
    pub fn sim_node(&self, index: usize) -> &SimNode {
        &self.nodes[index]
    }

    /// A node's UDP address.
    #[must_use]
    pub fn addr(&self, index: usize) -> SocketAddr {
        self.nodes[index].addr
    }

    /// A node's PeerId.
    #[must_use]
    pub fn peer_id(&self, index: usize) -> PeerId {
        self.nodes[index].node.peer_id()
    }

    /// Runs a command on a node at the current virtual time, then drains its outputs.
    pub fn command<R>(&mut self, index: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let result = f(&mut self.nodes[index].node, now);
        self.drain(index);
        result
    }

    /// Dials node `to` from node `from`, expecting `to`'s real PeerId.
    pub fn connect(&mut self, from: usize, to: usize) -> ConnectionId {
        let addr = self.addr(to);
        let peer = self.peer_id(to);
        self.command(from, |node, now| node.dial(now, addr, peer))
            .expect("dial starts")
    }

    /// Events a node emitted so far (kept in its log).
    pub fn events(&self, index: usize) -> impl Iterator<Item = &Event> {
        self.nodes[index].events.iter().map(|(_, e)| e)
    }

    /// Removes and returns a node's event log.
    pub fn take_events(&mut self, index: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[index].events)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Whether `a` reports an established connection to `b`.
    #[must_use]
    pub fn is_connected(&self, a: usize, b: usize) -> bool {
        let peer = self.peer_id(b);
        self.events(a)
            .any(|e| matches!(e, Event::ConnectionEstablished { peer: p, .. } if *p == peer))
    }

    /// Hands a raw datagram to node `to` as if `from` had sent it (for malformed-input tests).
    pub fn inject(&mut self, to: usize, from: SocketAddr, data: &[u8]) {
        let now = self.now;
        self.trace_datagram(from, self.nodes[to].addr, data);
        self.nodes[to].node.handle_datagram(
            now,
            Datagram {
                remote: from,
                local_ip: None,
                ecn: None,
                data: BytesMut::from(data),
            },
        );
        self.drain(to);
    }

    /// Registers `addr` as a host outside the world, such as a raw quinn-proto endpoint a test
    /// drives by hand: datagrams the nodes send to it travel the links as usual and then wait
    /// in its mailbox ([`World::take_external`]) instead of being counted unroutable. It sends
    /// with [`World::inject`].
    pub fn add_external(&mut self, addr: SocketAddr) {
        assert!(
            !self.by_addr.contains_key(&addr),
            "{addr} already belongs to a node"
        );
        self.external.entry(addr).or_default();
    }

    /// Removes and returns the datagrams that reached external host `addr` so far, in order.
    pub fn take_external(&mut self, addr: SocketAddr) -> Vec<ExternalDatagram> {
        self.external
            .get_mut(&addr)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Polls a node's outputs until it is drained: transmits enter the network, events go to
    /// its log, the timeout becomes its next wake-up.
    pub fn drain(&mut self, index: usize) {
        loop {
            let output = self.nodes[index].node.poll_output(&mut self.buf);
            match output {
                Output::Transmit(transmit) => {
                    let from = self.nodes[index].addr;
                    let segment = transmit.segment_size.unwrap_or(transmit.size).max(1);
                    let data = std::mem::take(&mut self.buf);
                    for chunk in data[..transmit.size].chunks(segment) {
                        self.nodes[index].datagrams_sent += 1;
                        self.send(from, transmit.destination, chunk.to_vec());
                    }
                    self.buf = data;
                }
                Output::Event(event) => {
                    self.trace_event(index, &event);
                    self.nodes[index].events.push((self.now, event));
                }
                Output::Timeout(at) => {
                    self.nodes[index].wake = at;
                    return;
                }
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            self.stats.isolated += 1;
            return;
        }
        if self.link.loss > 0.0 {
            let draw = self.link_rng.next_u64() as f64 / u64::MAX as f64;
            if draw < self.link.loss {
                self.stats.lost += 1;
                return;
            }
        }
        let jitter = if self.link.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(self.link.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(self.link_rng.next_u64() % (nanos + 1))
        };
        self.seq += 1;
        self.queue.push(InFlight {
            deliver_at: self.now + self.link.latency + jitter,
            seq: self.seq,
            to,
            from,
            data,
        });
    }

    /// The next instant something happens: a delivery or a node's wake-up.
    fn next_event_time(&self) -> Option<Instant> {
        let delivery = self.queue.peek().map(|d| d.deliver_at);
        let wake = self.nodes.iter().map(|n| n.wake).min();
        [delivery, wake].into_iter().flatten().min()
    }

    /// Advances to the next event (but not past `limit`) and processes everything due then.
    /// Returns false if nothing was due before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(next) = self.next_event_time().filter(|&t| t <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        // Everything due is delivered before any receiver is drained, as the tokio adapter
        // reads a batch of datagrams before it polls the node's output. Receivers are drained
        // in index order, so the run stays deterministic.
        let mut received = std::mem::take(&mut self.received_scratch);
        received.clear();
        received.resize(self.nodes.len(), false);
        while self.queue.peek().is_some_and(|d| d.deliver_at <= now) {
            let Some(datagram) = self.queue.pop() else {
                break;
            };
            if self.isolated.contains(&datagram.to) || self.isolated.contains(&datagram.from) {
                self.stats.isolated += 1;
                continue;
            }
            if let Some(mailbox) = self.external.get_mut(&datagram.to) {
                self.stats.delivered += 1;
                mailbox.push(ExternalDatagram {
                    at: now,
                    from: datagram.from,
                    data: datagram.data,
                });
                continue;
            }
            let Some(&to) = self.by_addr.get(&datagram.to) else {
                self.stats.unroutable += 1;
                continue;
            };
            self.stats.delivered += 1;
            self.trace_datagram(datagram.from, datagram.to, &datagram.data);
            self.nodes[to].node.handle_datagram(
                now,
                Datagram {
                    remote: datagram.from,
                    local_ip: None,
                    ecn: None,
                    data: BytesMut::from(&datagram.data[..]),
                },
            );
            received[to] = true;
        }
        for (index, &received) in received.iter().enumerate() {
            if received {
                self.nodes[index].wakeups += 1;
                self.drain(index);
            }
        }
        for (index, &received) in received.iter().enumerate() {
            if self.nodes[index].wake <= now {
                if !received {
                    self.nodes[index].wakeups += 1;
                }
                self.nodes[index].node.handle_timeout(now);
                self.drain(index);
            }
        }
        self.received_scratch = received;
        true
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let limit = self.now + duration;
        let mut steps = 0u64;
        while self.step(limit) {
            steps += 1;
            assert!(steps < MAX_STEPS, "world did not settle: livelock?");
        }
    }

    /// Runs until `done` holds (checked after every step) or `max` virtual time passes.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let limit = self.now + max;
        let mut steps = 0u64;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
            steps += 1;
            assert!(steps < MAX_STEPS, "world did not settle: livelock?");
        }
    }
}

/// Adds a socket address to the trace in a fixed layout: family, IP octets, port.
fn trace_addr(trace: &mut ring::digest::Context, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            trace.update(&[4]);
            trace.update(&ip.octets());
        }
        IpAddr::V6(ip) => {
            trace.update(&[6]);
            trace.update(&ip.octets());
        }
    }
    trace.update(&addr.port().to_be_bytes());
}
