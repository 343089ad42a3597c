//! How a client keeps a reservation: a small trait so that AutoRelay (DESIGN §5.2) can replace
//! the scripted policy of the scenarios later.

use std::time::{Duration, Instant};

use dep2p_core::node::{ConnectionId, Event};

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
    /// The relay and connection of the reservation held now, if any.
    fn reserved(&self) -> Option<(HostId, ConnectionId)>;
    /// Stops: closes the relay connection and does nothing more (end of the workload).
    fn stop(&mut self, sim: &mut Sim);
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
    }

    fn on_event(&mut self, sim: &mut Sim, event: &Event) {
        match (seen(event), self.state) {
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

    fn on_wake(&mut self, sim: &mut Sim) {
        if let State::Waiting(at) = self.state
            && at <= sim.now()
        {
            self.dial_next(sim);
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        match self.state {
            State::Waiting(at) => Some(at),
            _ => None,
        }
    }

    fn reserved(&self) -> Option<(HostId, ConnectionId)> {
        match self.state {
            State::Reserved(relay, c) => Some((relay, c)),
            _ => None,
        }
    }

    fn stop(&mut self, sim: &mut Sim) {
        if let Some(connection) = self.connection() {
            let _ = sim.command(self.client, |node, now| {
                node.close(now, connection, 0, b"workload over")
            });
        }
        self.state = State::Stopped;
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
