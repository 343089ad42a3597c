//! How a client keeps its reservations: a small trait with two implementations. The default,
//! [`AutoRelayPolicy`], is the node's own AutoRelay (DESIGN §5.2): the policy hands it the
//! relays as bootstrap candidates and watches. [`ScriptedFailover`] is the older scripted
//! stand-in (one reservation, next relay on loss), kept to compare against.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use dep2p_core::autorelay::CandidateSource;
use dep2p_core::identity::PeerId;
use dep2p_core::node::{ConnectionId, Event};
use multiaddr::Multiaddr;

use crate::{HostId, Sim};

/// A client's relay-selection policy, driven by the scenario runner.
pub trait RelayPolicy {
    /// Called once, when the workload starts.
    fn start(&mut self, sim: &mut Sim);
    /// An event of this policy's client.
    fn on_event(&mut self, sim: &mut Sim, event: &Event);
    /// Called at (or after) [`RelayPolicy::wake_at`].
    fn on_wake(&mut self, sim: &mut Sim);
    /// When the policy wants [`RelayPolicy::on_wake`].
    fn wake_at(&self) -> Option<Instant>;
    /// The reservations held now (relay and connection), in relay order.
    fn reservations(&self) -> &[(HostId, ConnectionId)];
    /// The first reservation held now, if any.
    fn reserved(&self) -> Option<(HostId, ConnectionId)> {
        self.reservations().first().copied()
    }
    /// Stops for good: gives up the reservations and closes the relay connections (end of the
    /// workload).
    fn stop(&mut self, sim: &mut Sim);
}

/// Which [`RelayPolicy`] the clients of a scenario use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// The node's AutoRelay ([`AutoRelayPolicy`]).
    AutoRelay,
    /// The scripted stand-in ([`ScriptedFailover`]).
    Scripted,
}

impl PolicyKind {
    /// The CLI name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::AutoRelay => "autorelay",
            Self::Scripted => "scripted",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "autorelay" => Ok(Self::AutoRelay),
            "scripted" => Ok(Self::Scripted),
            other => Err(format!("unknown policy `{other}` (autorelay, scripted)")),
        }
    }
}

/// The node's own AutoRelay as the client policy. The client's `NodeConfig` must enable
/// AutoRelay. At start the policy adds every relay as a bootstrap candidate; from then on the
/// node dials, reserves, renews and replaces relays by itself, and the policy only keeps track
/// of which reservations the node holds (for the workload and the metrics). Optionally it pings
/// every direct connection periodically, as libp2p's ping behaviour does, so AutoRelay's
/// scores follow the measured RTT.
#[derive(Debug, Clone)]
pub struct AutoRelayPolicy {
    client: HostId,
    candidates: Vec<(PeerId, Vec<Multiaddr>)>,
    relay_of: BTreeMap<PeerId, HostId>,
    /// The connection of the latest reservation accepted by each relay.
    connection_of: BTreeMap<HostId, ConnectionId>,
    held: Vec<(HostId, ConnectionId)>,
    ping_every: Option<Duration>,
    next_ping: Option<Instant>,
}

impl AutoRelayPolicy {
    /// A policy for `client` with `relays` as bootstrap candidates; with `ping_every`, it pings
    /// the client's direct connections at that period.
    #[must_use]
    pub fn new(sim: &Sim, client: HostId, relays: &[HostId], ping_every: Option<Duration>) -> Self {
        let candidates = relays
            .iter()
            .map(|&r| {
                let addr = dep2p_core::addr::quic_multiaddr(sim.addr(r));
                (sim.peer_id(r), vec![addr])
            })
            .collect();
        Self {
            client,
            candidates,
            relay_of: relays.iter().map(|&r| (sim.peer_id(r), r)).collect(),
            connection_of: BTreeMap::new(),
            held: Vec::new(),
            ping_every,
            next_ping: None,
        }
    }

    /// Re-reads the held set from the node's AutoRelay.
    fn refresh(&mut self, sim: &Sim) {
        self.held.clear();
        let Some(auto) = sim.node(self.client).and_then(|n| n.auto_relay()) else {
            return;
        };
        for relay in auto.held_relays() {
            if let Some(&host) = self.relay_of.get(&relay.peer)
                && let Some(&connection) = self.connection_of.get(&host)
            {
                self.held.push((host, connection));
            }
        }
        self.held.sort_unstable();
    }
}

impl RelayPolicy for AutoRelayPolicy {
    fn start(&mut self, sim: &mut Sim) {
        let candidates = std::mem::take(&mut self.candidates);
        let _ = sim.command(self.client, |node, now| {
            node.add_relay_candidates(now, &candidates, CandidateSource::Bootstrap);
        });
        self.candidates = candidates;
        self.next_ping = self.ping_every.map(|every| sim.now() + every);
        self.refresh(sim);
    }

    fn on_event(&mut self, sim: &mut Sim, event: &Event) {
        match event {
            Event::ReservationAccepted {
                connection, relay, ..
            } => {
                if let Some(&host) = self.relay_of.get(relay) {
                    self.connection_of.insert(host, *connection);
                }
            }
            Event::ConnectionClosed { connection, .. } => {
                self.connection_of.retain(|_, c| c != connection);
            }
            Event::ReservationLost { .. }
            | Event::CircuitAddrsChanged { .. }
            | Event::RelaySwitched { .. } => {}
            _ => return,
        }
        self.refresh(sim);
    }

    fn on_wake(&mut self, sim: &mut Sim) {
        let (Some(at), Some(every)) = (self.next_ping, self.ping_every) else {
            return;
        };
        if at > sim.now() {
            return;
        }
        let connections: Vec<ConnectionId> = sim.connections(self.client).iter().copied().collect();
        for connection in connections {
            let _ = sim.command(self.client, |node, now| node.ping(now, connection));
        }
        self.next_ping = Some(sim.now() + every);
    }

    fn wake_at(&self) -> Option<Instant> {
        self.next_ping
    }

    fn reservations(&self) -> &[(HostId, ConnectionId)] {
        &self.held
    }

    fn stop(&mut self, sim: &mut Sim) {
        // A drained node stops AutoRelay and closes every connection.
        let _ = sim.command(self.client, |node, now| node.drain(now));
        self.held.clear();
        self.next_ping = None;
        self.ping_every = None;
    }
}

/// What the scripted policy is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to (re)try at the given instant.
    Waiting(Instant),
    /// Dialing a relay.
    Dialing(HostId, ConnectionId),
    /// Connected, RESERVE in flight.
    Reserving(HostId, ConnectionId),
    /// Holding a reservation.
    Reserved(HostId, ConnectionId),
    /// Stopped for good.
    Stopped,
}

/// The scenarios' stand-in for AutoRelay: one reservation at a time, on the first relay of a
/// list. When the reservation or the relay connection is lost, it dials the next relay in the
/// list at once; when a dial or a reservation fails, it waits with exponential backoff
/// (`base`, doubling, at most `max`) and tries the next one. With one relay it retries that
/// relay until it is back (the Tier 1 restart story).
#[derive(Debug, Clone)]
pub struct ScriptedFailover {
    client: HostId,
    relays: Vec<HostId>,
    next: usize,
    state: State,
    failures: u32,
    base: Duration,
    max: Duration,
    /// The reservation held (mirrors `State::Reserved`).
    held: Option<(HostId, ConnectionId)>,
}

impl ScriptedFailover {
    /// A policy for `client` over `relays` (tried in order, starting with `first`).
    #[must_use]
    pub fn new(client: HostId, relays: Vec<HostId>, first: usize) -> Self {
        assert!(!relays.is_empty(), "a client needs at least one relay");
        let next = first % relays.len();
        Self {
            client,
            relays,
            next,
            state: State::Stopped,
            failures: 0,
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
            held: None,
        }
    }

    fn connection(&self) -> Option<ConnectionId> {
        match self.state {
            State::Dialing(_, c) | State::Reserving(_, c) | State::Reserved(_, c) => Some(c),
            _ => None,
        }
    }

    /// Dials the next relay in the list now.
    fn dial_next(&mut self, sim: &mut Sim) {
        let relay = self.relays[self.next];
        self.next = (self.next + 1) % self.relays.len();
        self.state = match sim.dial(self.client, relay) {
            Some(connection) => State::Dialing(relay, connection),
            None => State::Waiting(sim.now() + self.backoff()),
        };
    }

    fn backoff(&self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        (self.base * factor).min(self.max)
    }

    /// After a failure: close what is left, then wait and move on.
    fn fail(&mut self, sim: &mut Sim) {
        if let Some(connection) = self.connection() {
            let _ = sim.command(self.client, |node, now| {
                node.close(now, connection, 0, b"relay policy gave up")
            });
        }
        self.state = State::Waiting(sim.now() + self.backoff());
        self.failures = self.failures.saturating_add(1);
    }
}

impl RelayPolicy for ScriptedFailover {
    fn start(&mut self, sim: &mut Sim) {
        self.dial_next(sim);
        self.sync();
    }

    fn on_event(&mut self, sim: &mut Sim, event: &Event) {
        self.on_seen(sim, seen(event));
        self.sync();
    }

    fn on_wake(&mut self, sim: &mut Sim) {
        if let State::Waiting(at) = self.state
            && at <= sim.now()
        {
            self.dial_next(sim);
        }
        self.sync();
    }

    fn wake_at(&self) -> Option<Instant> {
        match self.state {
            State::Waiting(at) => Some(at),
            _ => None,
        }
    }

    fn reservations(&self) -> &[(HostId, ConnectionId)] {
        self.held.as_slice()
    }

    fn stop(&mut self, sim: &mut Sim) {
        if let Some(connection) = self.connection() {
            let _ = sim.command(self.client, |node, now| {
                node.close(now, connection, 0, b"workload over")
            });
        }
        self.state = State::Stopped;
        self.sync();
    }
}

impl ScriptedFailover {
    fn sync(&mut self) {
        self.held = match self.state {
            State::Reserved(relay, c) => Some((relay, c)),
            _ => None,
        };
    }

    fn on_seen(&mut self, sim: &mut Sim, seen: Seen) {
        match (seen, self.state) {
            (Seen::Established(c), State::Dialing(relay, d)) if c == d => {
                let reserved = sim
                    .command(self.client, |node, now| node.reserve(now, c).is_ok())
                    .unwrap_or(false);
                if reserved {
                    self.state = State::Reserving(relay, c);
                } else {
                    self.fail(sim);
                }
            }
            (Seen::Accepted(c), State::Reserving(relay, d)) if c == d => {
                self.state = State::Reserved(relay, c);
                self.failures = 0;
            }
            (Seen::Refused(c), State::Reserving(_, d)) if c == d => self.fail(sim),
            (Seen::Lost(c), State::Reserved(_, d)) if c == d => {
                // Lost a live reservation: replace it at once (DESIGN §5.2), no backoff.
                let _ = sim.command(self.client, |node, now| node.close(now, c, 0, b"lost"));
                self.dial_next(sim);
            }
            (Seen::Closed(c), State::Reserved(_, d)) if c == d => self.dial_next(sim),
            (Seen::Closed(c), State::Dialing(_, d) | State::Reserving(_, d)) if c == d => {
                self.state = State::Waiting(sim.now() + self.backoff());
                self.failures = self.failures.saturating_add(1);
            }
            _ => {}
        }
    }
}

/// The parts of an event the policy looks at.
#[derive(Debug, Clone, Copy)]
enum Seen {
    Established(ConnectionId),
    Accepted(ConnectionId),
    Refused(ConnectionId),
    Lost(ConnectionId),
    Closed(ConnectionId),
    Other,
}

fn seen(event: &Event) -> Seen {
    match event {
        Event::ConnectionEstablished {
            connection,
            relay: None,
            ..
        } => Seen::Established(*connection),
        Event::ReservationAccepted {
            connection,
            renewed: false,
            ..
        } => Seen::Accepted(*connection),
        Event::ReservationFailed { connection, .. } => Seen::Refused(*connection),
        Event::ReservationLost { connection, .. } => Seen::Lost(*connection),
        Event::ConnectionClosed { connection, .. } => Seen::Closed(*connection),
        _ => Seen::Other,
    }
}
