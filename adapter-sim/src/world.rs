//! The simulated world: hosts running real [`Node`]s on a virtual clock and a virtual network.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dep2p_core::identity::{Keypair, PeerId, keypair_from_seed};
use dep2p_core::node::{
    CLOSE_DRAINING, CircuitSnapshot, ConnectionId, Datagram, Event, Node, NodeConfig, Output,
};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::seed::SeedTree;
use dep2p_core::testing::virtual_epoch;

use crate::fault::Fault;
use crate::net::Network;
use crate::rng::RootSeed;
use crate::trace::Trace;

/// Unix time at which every run starts (2026-01-01T00:00:00Z): fixed, so runs replay.
pub const UNIX_START: Duration = Duration::from_secs(1_767_225_600);
/// Application close code of a graceful drain: the core's, set by [`Node::drain`].
pub const DRAIN_CODE: u32 = CLOSE_DRAINING;
/// How long a draining host keeps running to flush its closes before it stops.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Most steps one run may take: a guard against a livelock, not a budget.
const MAX_STEPS: u64 = 200_000_000;

/// A host of the world (index into the host list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// A deliberately broken relay, for tests that prove the checkers can fail. The sim applies
/// it to what it reports about the relay (its counters) or to the circuit data the relay
/// carries, as a buggy relay would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// The circuit counter never goes down: a leak.
    LeakCircuitCounter,
    /// The relay keeps forwarding bytes after its circuits closed.
    ForwardAfterClose,
    /// The relay flips a byte of circuit data it forwards.
    CorruptCircuitData,
    /// The relay keeps circuits that reached their duration deadline and goes on forwarding
    /// on them: they stay in its circuit list, their byte counts growing.
    ForwardAfterExpiry,
}

/// One host: its identity and, while it runs, its node.
struct Host {
    name: String,
    config: NodeConfig,
    addr: SocketAddr,
    seeds: SeedTree,
    key: Keypair,
    peer_id: PeerId,
    node: Option<Node>,
    incarnation: u32,
    wake: Option<Instant>,
    /// Connections the node reported established and not yet closed.
    connections: BTreeSet<ConnectionId>,
    /// When a draining host stops.
    stop_at: Option<Instant>,
    is_relay: bool,
}

/// The world: hosts, virtual clock, network, trace.
pub struct Sim {
    root: RootSeed,
    epoch: Instant,
    now: Instant,
    hosts: Vec<Host>,
    by_addr: BTreeMap<SocketAddr, HostId>,
    /// The network; faults change it.
    pub net: Network,
    buf: Vec<u8>,
    events: VecDeque<(HostId, Event)>,
    trace: Trace,
    sabotage: BTreeMap<HostId, Sabotage>,
    /// Bytes a `ForwardAfterClose` relay pretends to have forwarded.
    phantom_bytes: BTreeMap<HostId, u64>,
    /// Expired circuits a `ForwardAfterExpiry` relay still reports, and the circuits it
    /// really had at the previous step (to spot the ones that expire).
    ghost_circuits: BTreeMap<HostId, (Vec<CircuitSnapshot>, Vec<CircuitSnapshot>)>,
    steps: u64,
    /// Node deadlines and drain ends as a min-queue, so a step touches only the hosts due.
    /// Entries are not removed when a host's deadline moves: a popped entry that no longer
    /// matches the host's `wake` or `stop_at` is stale and skipped.
    wakes: BinaryHeap<Reverse<(Instant, HostId)>>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.root.seed())
            .field("elapsed", &self.elapsed())
            .field("hosts", &self.hosts.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty world whose every random choice derives from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let root = RootSeed::new(seed);
        let epoch = virtual_epoch();
        Self {
            net: Network::new(root.rng("links")),
            root,
            epoch,
            now: epoch,
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            buf: Vec::with_capacity(64 * 1024),
            events: VecDeque::new(),
            trace: Trace::new(),
            sabotage: BTreeMap::new(),
            phantom_bytes: BTreeMap::new(),
            ghost_circuits: BTreeMap::new(),
            steps: 0,
            wakes: BinaryHeap::new(),
        }
    }

    /// The root seed.
    #[must_use]
    pub fn root(&self) -> &RootSeed {
        &self.root
    }

    /// Adds a relay with `limits` and node settings `config`.
    pub fn add_relay(&mut self, name: &str, mut config: NodeConfig, limits: RelayLimits) -> HostId {
        config.relay_server(Some(limits));
        self.add_host(name, config, true)
    }

    /// Adds a plain node (a relay client).
    pub fn add_client(&mut self, name: &str, config: NodeConfig) -> HostId {
        self.add_host(name, config, false)
    }

    fn add_host(&mut self, name: &str, mut config: NodeConfig, is_relay: bool) -> HostId {
        let id = HostId(self.hosts.len());
        // 10.0.0.1, 10.0.0.2, …: one IP per host, so per-IP limits see distinct hosts.
        let n = u32::try_from(id.0 + 1).expect("fewer than 2^32 hosts");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)), 4001);
        config.deterministic_tls(true);
        // What an adapter does with its bound socket: announce it (relays must).
        config.listen_addrs(vec![dep2p_core::addr::quic_multiaddr(addr)]);
        let seeds = self.root.subtree(&format!("node-{}", id.0));
        let key = keypair_from_seed(seeds.derive("host-key"));
        let peer_id = key.public().to_peer_id();
        self.by_addr.insert(addr, id);
        self.hosts.push(Host {
            name: name.to_owned(),
            config,
            addr,
            seeds,
            key,
            peer_id,
            node: None,
            incarnation: 0,
            wake: None,
            connections: BTreeSet::new(),
            stop_at: None,
            is_relay,
        });
        self.start(id);
        id
    }

    /// Builds the host's node for its current incarnation: same key, a seed of its own.
    fn start(&mut self, id: HostId) {
        let host = &mut self.hosts[id.0];
        let seed = host
            .seeds
            .derive(&format!("incarnation-{}", host.incarnation));
        let node = Node::new(
            host.config.clone(),
            host.key.clone(),
            seed,
            self.now,
            UNIX_START + (self.now - self.epoch),
        )
        .expect("simulated node configurations are valid");
        host.node = Some(node);
        self.set_wake(id, Some(self.now));
        self.drain(id);
    }

    // ----- getters -----

    /// The current virtual time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the run began.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// The instant `offset` after the start of the run.
    #[must_use]
    pub fn at(&self, offset: Duration) -> Instant {
        self.epoch + offset
    }

    /// Every host.
    pub fn hosts(&self) -> impl Iterator<Item = HostId> + use<> {
        (0..self.hosts.len()).map(HostId)
    }

    /// The relays.
    #[must_use]
    pub fn relays(&self) -> Vec<HostId> {
        self.hosts().filter(|&h| self.hosts[h.0].is_relay).collect()
    }

    /// A host's name.
    #[must_use]
    pub fn name(&self, host: HostId) -> &str {
        &self.hosts[host.0].name
    }

    /// A host's address.
    #[must_use]
    pub fn addr(&self, host: HostId) -> SocketAddr {
        self.hosts[host.0].addr
    }

    /// A host's PeerId (stable across restarts).
    #[must_use]
    pub fn peer_id(&self, host: HostId) -> PeerId {
        self.hosts[host.0].peer_id
    }

    /// The host with this PeerId.
    #[must_use]
    pub fn host_of(&self, peer: PeerId) -> Option<HostId> {
        self.hosts().find(|&h| self.hosts[h.0].peer_id == peer)
    }

    /// Whether the host's process runs now.
    #[must_use]
    pub fn is_up(&self, host: HostId) -> bool {
        self.hosts[host.0].node.is_some()
    }

    /// Whether the host is draining (it stops at the end of [`DRAIN_GRACE`]).
    #[must_use]
    pub fn is_draining(&self, host: HostId) -> bool {
        self.hosts[host.0].stop_at.is_some()
    }

    /// How many times the host has been restarted.
    #[must_use]
    pub fn incarnation(&self, host: HostId) -> u32 {
        self.hosts[host.0].incarnation
    }

    /// The host's node, while it runs.
    #[must_use]
    pub fn node(&self, host: HostId) -> Option<&Node> {
        self.hosts[host.0].node.as_ref()
    }

    /// Connections the host's node holds established now.
    #[must_use]
    pub fn connections(&self, host: HostId) -> &BTreeSet<ConnectionId> {
        &self.hosts[host.0].connections
    }

    /// The relay's counters as the relay reports them (through its sabotage, if any).
    #[must_use]
    pub fn relay_stats(&self, host: HostId) -> Option<dep2p_core::node::RelayStats> {
        let mut stats = self.node(host)?.relay_stats()?;
        match self.sabotage.get(&host) {
            Some(Sabotage::LeakCircuitCounter) => {
                stats.circuits = stats
                    .circuits
                    .max(usize::try_from(stats.circuits_opened).unwrap_or(usize::MAX));
            }
            Some(Sabotage::ForwardAfterClose) => {
                stats.bytes_relayed += self.phantom_bytes.get(&host).copied().unwrap_or(0);
            }
            _ => {}
        }
        Some(stats)
    }

    /// The relay's circuits as the relay reports them (through its sabotage, if any); `None`
    /// if the host is down or not a relay.
    #[must_use]
    pub fn relay_circuits(&self, host: HostId) -> Option<Vec<CircuitSnapshot>> {
        if !self.hosts[host.0].is_relay {
            return None;
        }
        let mut circuits = self.node(host)?.relay_circuits();
        if let Some((ghosts, _)) = self.ghost_circuits.get(&host) {
            circuits.extend(ghosts.iter().copied());
            circuits.sort_by_key(|c| c.id);
        }
        Some(circuits)
    }

    /// The sabotage of a relay, if it is broken on purpose.
    #[must_use]
    pub fn sabotage(&self, host: HostId) -> Option<Sabotage> {
        self.sabotage.get(&host).copied()
    }

    /// Breaks a relay on purpose (tests of the checkers only).
    pub fn set_sabotage(&mut self, host: HostId, sabotage: Sabotage) {
        self.sabotage.insert(host, sabotage);
    }

    /// SHA-256 over every input and output so far, as hex.
    #[must_use]
    pub fn trace_hash(&self) -> String {
        self.trace.hex()
    }

    /// Steps taken so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    // ----- commands -----

    /// Runs a command on a running host at the current virtual time, then drains its outputs.
    /// `None` if the host is down.
    pub fn command<R>(
        &mut self,
        host: HostId,
        f: impl FnOnce(&mut Node, Instant) -> R,
    ) -> Option<R> {
        let now = self.now;
        let node = self.hosts[host.0].node.as_mut()?;
        self.trace.command(host, self.now - self.epoch);
        let result = f(node, now);
        self.drain(host);
        Some(result)
    }

    /// Dials `to` from `from` (expecting `to`'s real PeerId).
    pub fn dial(&mut self, from: HostId, to: HostId) -> Option<ConnectionId> {
        let addr = self.addr(to);
        let peer = self.peer_id(to);
        self.command(from, |node, now| node.dial(now, addr, peer).ok())
            .flatten()
    }

    /// Removes and returns the events emitted since the last call, in order.
    pub fn take_events(&mut self) -> VecDeque<(HostId, Event)> {
        std::mem::take(&mut self.events)
    }

    /// Applies a fault now.
    pub fn apply(&mut self, fault: &Fault) {
        self.trace.fault(self.now - self.epoch, &fault.to_string());
        match fault {
            Fault::Crash(h) => self.crash(*h),
            Fault::Restart(h) => self.restart(*h),
            Fault::Drain(h) => self.drain_host(*h),
            Fault::Partition { from, to, one_way } => {
                for &a in from {
                    for &b in to {
                        self.net.block(a, b);
                        if !one_way {
                            self.net.block(b, a);
                        }
                    }
                }
            }
            Fault::Isolate(h) => self.net.isolate(*h),
            Fault::Gray { host, max_datagram } => self.net.gray(*host, *max_datagram),
            Fault::Heal => self.net.heal(),
            Fault::AllLinks(model) => {
                self.net.clear_links();
                self.net.set_default_link(*model);
            }
            Fault::Link { a, b, model } => {
                self.net.set_link(*a, *b, *model);
                self.net.set_link(*b, *a, *model);
            }
        }
    }

    /// The host's process dies: its node and all its state are dropped.
    pub fn crash(&mut self, host: HostId) {
        let h = &mut self.hosts[host.0];
        h.node = None;
        h.wake = None;
        h.stop_at = None;
        h.connections.clear();
    }

    /// A crashed host starts again with the same key and a new seed. No-op if it runs.
    pub fn restart(&mut self, host: HostId) {
        if self.is_up(host) {
            return;
        }
        self.hosts[host.0].incarnation += 1;
        self.start(host);
    }

    /// Graceful shutdown with the core's [`Node::drain`]: refuse new reservations and
    /// connections, close every connection with [`DRAIN_CODE`], stop after [`DRAIN_GRACE`].
    pub fn drain_host(&mut self, host: HostId) {
        if self.command(host, |node, now| node.drain(now)).is_some() {
            let at = self.now + DRAIN_GRACE;
            self.hosts[host.0].stop_at = Some(at);
            self.wakes.push(Reverse((at, host)));
        }
    }

    /// Sets a host's node deadline, queueing it if it changed.
    fn set_wake(&mut self, host: HostId, at: Option<Instant>) {
        let h = &mut self.hosts[host.0];
        if h.wake == at {
            return;
        }
        h.wake = at;
        if let Some(at) = at {
            self.wakes.push(Reverse((at, host)));
            // Stale entries pile up as deadlines move; rebuild once they dominate.
            if self.wakes.len() > 64 + 8 * self.hosts.len() {
                self.rebuild_wakes();
            }
        }
    }

    fn rebuild_wakes(&mut self) {
        self.wakes = self
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| {
                [h.wake, h.stop_at]
                    .into_iter()
                    .flatten()
                    .map(move |at| Reverse((at, HostId(i))))
            })
            .collect();
    }

    /// Whether a queued entry still stands for a deadline of the host.
    fn is_current(&self, at: Instant, host: HostId) -> bool {
        let h = &self.hosts[host.0];
        h.wake == Some(at) || h.stop_at == Some(at)
    }

    // ----- running -----

    /// Polls a host's outputs until it is drained.
    fn drain(&mut self, host: HostId) {
        let offset = self.now - self.epoch;
        loop {
            let Some(node) = self.hosts[host.0].node.as_mut() else {
                return;
            };
            match node.poll_output(&mut self.buf) {
                Output::Transmit(transmit) => {
                    let segment = transmit.segment_size.unwrap_or(transmit.size).max(1);
                    let Some(&to) = self.by_addr.get(&transmit.destination) else {
                        self.net.stats.to_dead_host += 1;
                        continue;
                    };
                    for chunk in self.buf[..transmit.size].chunks(segment) {
                        self.trace.transmit(host, to, offset, chunk);
                        self.net.send(self.now, host, to, chunk.to_vec());
                    }
                }
                Output::Event(event) => {
                    self.trace.event(host, offset, &event);
                    let h = &mut self.hosts[host.0];
                    match &event {
                        Event::ConnectionEstablished {
                            connection,
                            relay: None,
                            ..
                        } => {
                            h.connections.insert(*connection);
                        }
                        Event::ConnectionClosed { connection, .. } => {
                            h.connections.remove(connection);
                        }
                        _ => {}
                    }
                    self.events.push_back((host, event));
                }
                Output::Timeout(at) => {
                    self.set_wake(host, Some(at));
                    return;
                }
            }
        }
    }

    /// The next instant something is due in the world: a delivery, a node wake-up or the end
    /// of a drain.
    #[must_use]
    pub fn next_event_time(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, host))) = self.wakes.peek() {
            if self.is_current(at, host) {
                break;
            }
            self.wakes.pop();
        }
        let wake = self.wakes.peek().map(|Reverse((at, _))| *at);
        [self.net.next_delivery(), wake].into_iter().flatten().min()
    }

    /// Advances to the next thing due, but not past `limit`, and processes everything due then.
    /// Returns false (with the clock at `limit`) if nothing was due by `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.steps += 1;
        assert!(
            self.steps < MAX_STEPS,
            "the world did not settle: livelock?"
        );
        let Some(next) = self.next_event_time().filter(|&t| t <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        let offset = now - self.epoch;
        while let Some(datagram) = self.net.pop_due(now) {
            let to = datagram.to;
            let remote = self.hosts[datagram.from.0].addr;
            let Some(node) = self.hosts[to.0].node.as_mut() else {
                self.net.stats.to_dead_host += 1;
                continue;
            };
            self.net.stats.delivered += 1;
            self.trace
                .datagram(datagram.from, to, offset, &datagram.data);
            node.handle_datagram(
                now,
                Datagram {
                    remote,
                    local_ip: None,
                    ecn: None,
                    data: BytesMut::from(&datagram.data[..]),
                },
            );
            self.drain(to);
        }
        // Every host due now, each once, in host order (a deadline set while handling these
        // waits for the next step).
        let mut due = Vec::new();
        while let Some(&Reverse((at, host))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            if self.is_current(at, host) {
                due.push(host);
            }
        }
        due.sort_unstable();
        due.dedup();
        for host in due {
            let index = host.0;
            if self.hosts[index].stop_at.is_some_and(|at| at <= now) {
                self.crash(host);
                continue;
            }
            let h = &mut self.hosts[index];
            if h.wake.is_some_and(|at| at <= now)
                && let Some(node) = h.node.as_mut()
            {
                // Its entry is gone from the queue: the drain below queues the next deadline,
                // even if it is the same instant.
                h.wake = None;
                self.trace.timeout(host, offset);
                node.handle_timeout(now);
                self.drain(host);
            }
        }
        self.tick_sabotage();
        true
    }

    fn tick_sabotage(&mut self) {
        let now = self.now;
        for (&host, &sabotage) in &self.sabotage {
            if sabotage == Sabotage::ForwardAfterExpiry {
                let real = self.hosts[host.0]
                    .node
                    .as_ref()
                    .map(Node::relay_circuits)
                    .unwrap_or_default();
                let (ghosts, before) = self.ghost_circuits.entry(host).or_default();
                if self.hosts[host.0].node.is_none() {
                    // Crashed: the relay's state, ghosts included, is lost.
                    ghosts.clear();
                }
                for gone in before.iter() {
                    if gone.deadline.is_some_and(|d| d <= now)
                        && !real.iter().any(|c| c.id == gone.id)
                    {
                        ghosts.push(*gone);
                    }
                }
                for ghost in ghosts.iter_mut() {
                    ghost.bytes[0] += 100;
                }
                *before = real;
            }
            if sabotage == Sabotage::ForwardAfterClose
                && let Some(stats) = self.hosts[host.0].node.as_ref().and_then(Node::relay_stats)
                && stats.bridges == 0
                && stats.circuits_opened > 0
            {
                *self.phantom_bytes.entry(host).or_default() += 100;
            }
        }
    }
}
