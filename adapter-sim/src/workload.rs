//! The workload: pairs of clients that keep a circuit open through a relay and stream
//! checkable data over it, one finite flow after another.
//!
//! Client `2k` dials client `2k+1` through the relay where `2k+1` holds its reservation (over
//! its own reservation connection when it is the same relay, else over an extra direct
//! connection), opens a data stream, writes an 8-byte flow id and then a pattern derived from
//! the id at a fixed rate, finishes, and closes the circuit once the receiver has everything.
//! The receiver checks every byte against the pattern and the sender's progress
//! ([`PrefixCheck`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dep2p_core::node::{ConnectionId, Event, ReadOutcome, StreamHandle};

use crate::check::{Checkers, PrefixCheck};
use crate::policy::RelayPolicy;
use crate::rng::SimRng;
use crate::{HostId, Sabotage, Sim};

/// The protocol of the data streams.
pub const DATA_PROTOCOL: &str = "/dep2p-sim/data/1.0.0";
/// Bytes of the flow id that open every data stream.
const HEADER: u64 = 8;

/// The byte at `offset` of flow `flow`'s stream (header included).
#[must_use]
pub fn flow_byte(flow: u64, offset: u64) -> u8 {
    if offset < HEADER {
        return flow.to_be_bytes()[offset as usize];
    }
    let x = (flow.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset - HEADER))
        .wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> 56) as u8
}

/// Settings of the workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadConfig {
    /// Payload bytes per flow.
    pub flow_bytes: u64,
    /// Bytes a sender writes per tick.
    pub bytes_per_tick: usize,
    /// Tick period.
    pub tick: Duration,
    /// Longest pause between two flows of a pair.
    pub max_pause: Duration,
    /// Most pairs that stream data (the first ones); the other clients only hold
    /// reservations. `None`: every pair. Each flow opens a relayed connection with its own
    /// TLS handshake, which dominates large runs.
    pub pairs: Option<usize>,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            flow_bytes: 32 * 1024,
            bytes_per_tick: 2048,
            tick: Duration::from_millis(100),
            max_pause: Duration::from_secs(1),
            pairs: None,
        }
    }
}

/// Where a pair's current flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowState {
    /// No flow; start one at the instant.
    Idle(Instant),
    /// Waiting for an extra direct connection to the target's relay.
    ConnectingRelay(HostId, ConnectionId),
    /// Dialing through the relay.
    Dialing {
        relay: HostId,
        relayed: ConnectionId,
    },
    /// Circuit up, stream negotiating.
    Opening {
        relay: HostId,
        relayed: ConnectionId,
        stream: StreamHandle,
    },
    /// Writing data.
    Sending {
        relay: HostId,
        relayed: ConnectionId,
        stream: StreamHandle,
    },
    /// Stopped for good.
    Stopped,
}

/// One pair of clients.
#[derive(Debug)]
struct Pair {
    dialer: usize,
    target: usize,
    state: FlowState,
    flow: u64,
    /// Stream bytes written (header included) of the current flow.
    written: u64,
    finished: bool,
    /// A circuit of this pair broke and none has been re-established since.
    broken: bool,
    /// Last time a circuit of this pair was (re-)established.
    last_established: Option<Instant>,
}

/// A receiving stream.
#[derive(Debug, Default)]
struct Receiver {
    flow: Option<u64>,
    header: Vec<u8>,
    check: PrefixCheck,
    corrupted_once: bool,
}

/// Counters of the workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Circuits established (each flow opens one).
    pub circuits_established: u64,
    /// Circuits that failed while carrying a flow.
    pub circuits_broken: u64,
    /// Circuits established on a pair after one broke.
    pub circuits_reestablished: u64,
    /// Flows delivered completely.
    pub flows_completed: u64,
    /// Payload bytes received and verified.
    pub bytes_delivered: u64,
}

/// The workload's state.
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    clients: Vec<HostId>,
    pairs: Vec<Pair>,
    /// Stream bytes written per flow id.
    sent: BTreeMap<u64, u64>,
    receivers: BTreeMap<(HostId, StreamHandle), Receiver>,
    /// Extra direct connections (dialer, relay) → connection, and whether established.
    extra: BTreeMap<(HostId, HostId), (ConnectionId, bool)>,
    next_flow: u64,
    next_tick: Instant,
    rng: SimRng,
    stats: WorkloadStats,
}

impl Workload {
    /// A workload over `clients` (paired in order; an odd one out only holds a reservation).
    #[must_use]
    pub fn new(config: WorkloadConfig, clients: Vec<HostId>, start: Instant, rng: SimRng) -> Self {
        let pairs = (0..(clients.len() / 2).min(config.pairs.unwrap_or(usize::MAX)))
            .map(|k| Pair {
                dialer: 2 * k,
                target: 2 * k + 1,
                state: FlowState::Idle(start),
                flow: 0,
                written: 0,
                finished: false,
                broken: false,
                last_established: None,
            })
            .collect();
        Self {
            config,
            clients,
            pairs,
            sent: BTreeMap::new(),
            receivers: BTreeMap::new(),
            extra: BTreeMap::new(),
            next_flow: 1,
            next_tick: start,
            rng,
            stats: WorkloadStats::default(),
        }
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> WorkloadStats {
        self.stats
    }

    /// When the workload wants [`Workload::tick`].
    #[must_use]
    pub fn wake_at(&self) -> Instant {
        self.next_tick
    }

    /// Pairs whose last circuit was established at or after `since`, and the number of pairs.
    #[must_use]
    pub fn pairs_established_since(&self, since: Instant) -> (usize, usize) {
        let ok = self
            .pairs
            .iter()
            .filter(|p| p.last_established.is_some_and(|t| t >= since))
            .count();
        (ok, self.pairs.len())
    }

    /// Advances every pair: start flows, write data.
    pub fn tick(&mut self, sim: &mut Sim, policies: &[Box<dyn RelayPolicy>]) {
        let now = sim.now();
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.config.tick;
        for index in 0..self.pairs.len() {
            match self.pairs[index].state {
                FlowState::Idle(at) if at <= now => self.start_flow(sim, policies, index),
                FlowState::ConnectingRelay(relay, connection) => {
                    let dialer = self.clients[self.pairs[index].dialer];
                    let target_there = policies[self.pairs[index].target]
                        .reservations()
                        .iter()
                        .any(|&(r, _)| r == relay);
                    if !target_there {
                        // The target moved (or lost its reservation): give up on this relay.
                        self.extra.remove(&(dialer, relay));
                        let _ = sim.command(dialer, |node, now| {
                            node.close(now, connection, 0, b"target moved")
                        });
                        self.pairs[index].state = FlowState::Idle(now);
                    } else if let Some(&(connection, true)) = self.extra.get(&(dialer, relay)) {
                        self.dial_through(sim, index, relay, connection);
                    }
                }
                FlowState::Sending { stream, .. } => self.send(sim, index, stream),
                _ => {}
            }
        }
    }

    fn start_flow(&mut self, sim: &mut Sim, policies: &[Box<dyn RelayPolicy>], index: usize) {
        let pair = &self.pairs[index];
        let dialer = self.clients[pair.dialer];
        let targets = policies[pair.target].reservations();
        let Some(&(first, _)) = targets.first() else {
            return; // the target is unreachable now: try again next tick
        };
        // A relay both hold reservations on first: the dialer's own relay connection is live
        // (a relay the dialer found dead is no longer in its list), no extra connection needed.
        if let Some(&(relay, connection)) = policies[pair.dialer]
            .reservations()
            .iter()
            .find(|(own, _)| targets.iter().any(|(t, _)| t == own))
        {
            self.dial_through(sim, index, relay, connection);
            return;
        }
        let relay = first;
        match self.extra.get(&(dialer, relay)) {
            Some(&(connection, true)) => self.dial_through(sim, index, relay, connection),
            Some(&(connection, false)) => {
                self.pairs[index].state = FlowState::ConnectingRelay(relay, connection);
            }
            None => {
                if let Some(connection) = sim.dial(dialer, relay) {
                    self.extra.insert((dialer, relay), (connection, false));
                    self.pairs[index].state = FlowState::ConnectingRelay(relay, connection);
                }
            }
        }
    }

    fn dial_through(&mut self, sim: &mut Sim, index: usize, relay: HostId, via: ConnectionId) {
        let pair = &self.pairs[index];
        let dialer = self.clients[pair.dialer];
        let target = sim.peer_id(self.clients[pair.target]);
        let relayed = sim
            .command(dialer, |node, now| {
                node.dial_through_relay(now, via, target).ok()
            })
            .flatten();
        let pair = &mut self.pairs[index];
        pair.state = match relayed {
            Some(relayed) => FlowState::Dialing { relay, relayed },
            None => FlowState::Idle(sim.now() + self.config.tick),
        };
    }

    fn send(&mut self, sim: &mut Sim, index: usize, stream: StreamHandle) {
        let pair = &self.pairs[index];
        let total = HEADER + self.config.flow_bytes;
        if pair.finished {
            return;
        }
        let dialer = self.clients[pair.dialer];
        let (flow, from) = (pair.flow, pair.written);
        let to = total.min(from + self.config.bytes_per_tick as u64);
        let chunk: Vec<u8> = (from..to).map(|o| flow_byte(flow, o)).collect();
        let written = sim
            .command(dialer, |node, now| {
                node.write(now, stream, &chunk).unwrap_or(0)
            })
            .unwrap_or(0);
        let pair = &mut self.pairs[index];
        pair.written += written as u64;
        self.sent.insert(flow, pair.written);
        if pair.written == total {
            pair.finished = true;
            let _ = sim.command(dialer, |node, now| node.finish(now, stream));
        }
    }

    /// Feeds one event of host `host`.
    pub fn on_event(
        &mut self,
        sim: &mut Sim,
        checkers: &mut Checkers,
        host: HostId,
        event: &Event,
    ) {
        match event {
            Event::ConnectionEstablished {
                connection,
                relay: None,
                ..
            } => {
                for entry in self.extra.values_mut() {
                    if entry.0 == *connection {
                        entry.1 = true;
                    }
                }
            }
            Event::ConnectionEstablished {
                connection,
                relay: Some(_),
                ..
            } => {
                if let Some(index) = self.pair_of(
                    host,
                    |s| matches!(s, FlowState::Dialing { relayed, .. } if relayed == *connection),
                ) {
                    let FlowState::Dialing { relay, relayed } = self.pairs[index].state else {
                        return;
                    };
                    match sim
                        .command(host, |node, now| {
                            node.open_stream(now, relayed, DATA_PROTOCOL).ok()
                        })
                        .flatten()
                    {
                        Some(stream) => {
                            self.pairs[index].state = FlowState::Opening {
                                relay,
                                relayed,
                                stream,
                            };
                        }
                        None => self.close_circuit(sim, index, relayed, false),
                    }
                }
            }
            Event::StreamReady { stream, .. } => {
                if let Some(index) = self.pair_of(
                    host,
                    |s| matches!(s, FlowState::Opening { stream: st, .. } if st == *stream),
                ) {
                    let FlowState::Opening {
                        relay,
                        relayed,
                        stream,
                    } = self.pairs[index].state
                    else {
                        return;
                    };
                    let now = sim.now();
                    let flow = self.next_flow;
                    self.next_flow += 1;
                    let pair = &mut self.pairs[index];
                    pair.flow = flow;
                    pair.written = 0;
                    pair.finished = false;
                    pair.last_established = Some(now);
                    self.stats.circuits_established += 1;
                    if pair.broken {
                        pair.broken = false;
                        self.stats.circuits_reestablished += 1;
                    }
                    pair.state = FlowState::Sending {
                        relay,
                        relayed,
                        stream,
                    };
                    self.sent.insert(flow, 0);
                    self.send(sim, index, stream);
                }
            }
            Event::StreamOpenFailed { stream, .. } => {
                if let Some(index) = self.pair_of(
                    host,
                    |s| matches!(s, FlowState::Opening { stream: st, .. } if st == *stream),
                ) && let FlowState::Opening { relayed, .. } = self.pairs[index].state
                {
                    self.close_circuit(sim, index, relayed, false);
                }
            }
            Event::InboundStream { stream, protocol } if protocol == DATA_PROTOCOL => {
                self.receivers.insert((host, *stream), Receiver::default());
                self.read(sim, checkers, host, *stream);
            }
            Event::StreamReadable { stream } if self.receivers.contains_key(&(host, *stream)) => {
                self.read(sim, checkers, host, *stream);
            }
            Event::ConnectionClosed { connection, .. } => {
                self.extra
                    .retain(|&(dialer, _), (c, _)| !(dialer == host && c == connection));
                for index in 0..self.pairs.len() {
                    if self.clients[self.pairs[index].dialer] != host {
                        continue;
                    }
                    match self.pairs[index].state {
                        FlowState::ConnectingRelay(_, c) if c == *connection => {
                            self.pairs[index].state = FlowState::Idle(sim.now() + self.config.tick);
                        }
                        FlowState::Dialing { relayed, .. } if relayed == *connection => {
                            self.pairs[index].state = FlowState::Idle(sim.now() + self.config.tick);
                        }
                        FlowState::Opening { relayed, .. } | FlowState::Sending { relayed, .. }
                            if relayed == *connection =>
                        {
                            self.stats.circuits_broken += 1;
                            self.pairs[index].broken = true;
                            self.pairs[index].state = FlowState::Idle(sim.now() + self.config.tick);
                        }
                        _ => {}
                    }
                }
                self.receivers
                    .retain(|&(h, s), _| !(h == host && s.connection() == *connection));
            }
            _ => {}
        }
    }

    fn pair_of(&self, dialer: HostId, matches: impl Fn(FlowState) -> bool) -> Option<usize> {
        self.pairs
            .iter()
            .position(|p| self.clients[p.dialer] == dialer && matches(p.state))
    }

    /// Reads everything buffered on a receiving stream and checks it.
    fn read(&mut self, sim: &mut Sim, checkers: &mut Checkers, host: HostId, stream: StreamHandle) {
        loop {
            let outcome = sim
                .command(host, |node, now| node.read(now, stream, 64 * 1024))
                .and_then(Result::ok);
            let Some(receiver) = self.receivers.get_mut(&(host, stream)) else {
                return;
            };
            match outcome {
                Some(ReadOutcome::Data(data)) => {
                    let mut data = data.to_vec();
                    if receiver.flow.is_none() {
                        let need = (HEADER as usize).saturating_sub(receiver.header.len());
                        let take = need.min(data.len());
                        receiver.header.extend(data.drain(..take));
                        if receiver.header.len() == HEADER as usize {
                            let mut id = [0u8; 8];
                            id.copy_from_slice(&receiver.header);
                            receiver.flow = Some(u64::from_be_bytes(id));
                            receiver.check.received = HEADER;
                        }
                    }
                    let Some(flow) = receiver.flow else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    // A relay broken on purpose corrupts one byte of the first flow it carries.
                    let relay = relay_of_flow(&self.pairs, flow);
                    if !receiver.corrupted_once
                        && relay
                            .is_some_and(|r| sim.sabotage(r) == Some(Sabotage::CorruptCircuitData))
                    {
                        receiver.corrupted_once = true;
                        data[0] ^= 0x40;
                    }
                    let sent = self.sent.get(&flow).copied().unwrap_or(0);
                    let before = receiver.check.received;
                    match receiver.check.accept(&data, sent, |o| flow_byte(flow, o)) {
                        Ok(()) => self.stats.bytes_delivered += receiver.check.received - before,
                        Err(why) => {
                            checkers.violate(
                                sim.elapsed(),
                                "circuit-data-prefix",
                                format!("flow {flow} to {}: {why}", sim.name(host)),
                            );
                            self.receivers.remove(&(host, stream));
                            return;
                        }
                    }
                }
                Some(ReadOutcome::Finished) => {
                    let flow = receiver.flow;
                    let received = receiver.check.received;
                    self.receivers.remove(&(host, stream));
                    let Some(flow) = flow else { return };
                    let sent = self.sent.get(&flow).copied().unwrap_or(0);
                    if received != sent {
                        checkers.violate(
                            sim.elapsed(),
                            "circuit-data-prefix",
                            format!("flow {flow} finished after {received} of {sent} bytes"),
                        );
                    }
                    self.flow_delivered(sim, flow);
                    return;
                }
                Some(ReadOutcome::Blocked) | None => return,
            }
        }
    }
}

/// The relay carrying `flow`, while it runs.
fn relay_of_flow(pairs: &[Pair], flow: u64) -> Option<HostId> {
    {
        pairs
            .iter()
            .find(|p| p.flow == flow)
            .and_then(|p| match p.state {
                FlowState::Sending { relay, .. } | FlowState::Opening { relay, .. } => Some(relay),
                _ => None,
            })
    }
}

impl Workload {
    /// The receiver has the whole flow: the dialer closes the circuit and rests a little.
    fn flow_delivered(&mut self, sim: &mut Sim, flow: u64) {
        self.stats.flows_completed += 1;
        self.sent.remove(&flow);
        if let Some(index) = self.pairs.iter().position(|p| p.flow == flow)
            && let FlowState::Sending { relayed, .. } = self.pairs[index].state
        {
            self.close_circuit(sim, index, relayed, true);
        }
    }

    fn close_circuit(&mut self, sim: &mut Sim, index: usize, relayed: ConnectionId, pause: bool) {
        let dialer = self.clients[self.pairs[index].dialer];
        let rest = if pause {
            self.rng.duration_up_to(self.config.max_pause)
        } else {
            self.config.tick
        };
        self.pairs[index].state = FlowState::Idle(sim.now() + rest);
        let _ = sim.command(dialer, |node, now| {
            node.close(now, relayed, 0, b"flow done")
        });
    }

    /// Ends the workload: closes circuits and extra connections; nothing starts again.
    pub fn stop(&mut self, sim: &mut Sim) {
        for index in 0..self.pairs.len() {
            let dialer = self.clients[self.pairs[index].dialer];
            let state = std::mem::replace(&mut self.pairs[index].state, FlowState::Stopped);
            if let FlowState::Dialing { relayed, .. }
            | FlowState::Opening { relayed, .. }
            | FlowState::Sending { relayed, .. } = state
            {
                let _ = sim.command(dialer, |node, now| node.close(now, relayed, 0, b"stop"));
            }
        }
        for ((dialer, _), (connection, _)) in std::mem::take(&mut self.extra) {
            let _ = sim.command(dialer, |node, now| node.close(now, connection, 0, b"stop"));
        }
        self.next_tick = sim.now() + Duration::from_secs(3600 * 24 * 365);
    }
}
