//! A stand-in relay selection policy until AutoRelay (DESIGN §5.2) lands.
//!
//! [`RelayPolicy`] is the seam: the driver feeds it node events and timeouts, and carries out
//! the [`PolicyAction`]s it returns. [`StaticFailover`] is the only implementation: it keeps
//! `min_relays` reservations on a fixed, ordered list of relays. When a reservation is lost
//! (relay connection closed, drained or timed out, renewal refused) it dials the next configured
//! relay at once and reserves there; relays that failed are retried with exponential backoff,
//! so a restarted relay is used again. No scoring, no discovery: AutoRelay replaces this module
//! behind the same trait.
//!
//! Like the core, the policy does no I/O and reads no clock: `now` is an input, so it is tested
//! without sockets or sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dep2p_core::identity::PeerId;
use dep2p_core::node::{ConnectionId, Direction, Event};

/// What a policy asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    /// Dial this relay; the driver reports the outcome with [`RelayPolicy::on_dial_started`].
    Dial {
        /// The relay's UDP address.
        addr: SocketAddr,
        /// The relay's PeerId.
        peer: PeerId,
    },
    /// Reserve on this (established, direct) relay connection.
    Reserve {
        /// The connection.
        connection: ConnectionId,
    },
    /// Close a relay connection the policy no longer wants (reservation refused).
    Close {
        /// The connection.
        connection: ConnectionId,
    },
    /// Tell the application (and metrics) something happened.
    Notice(PolicyNotice),
}

/// Something a policy reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyNotice {
    /// A reservation was lost and a new one is held on `to`, `took` after the loss.
    RelaySwitched {
        /// The relay whose reservation was lost.
        from: PeerId,
        /// The relay now holding our reservation.
        to: PeerId,
        /// Time from noticing the loss to the new reservation.
        took: Duration,
        /// Why the old reservation ended.
        why: String,
    },
}

/// A relay selection policy driven by the tokio driver. See the module docs.
pub trait RelayPolicy: Send + 'static {
    /// Called once when the driver starts.
    fn start(&mut self, now: Instant, out: &mut Vec<PolicyAction>);
    /// The driver started (or failed to start) the dial asked for by [`PolicyAction::Dial`].
    fn on_dial_started(
        &mut self,
        now: Instant,
        peer: PeerId,
        result: Result<ConnectionId, String>,
        out: &mut Vec<PolicyAction>,
    );
    /// Every node event, in order.
    fn on_event(&mut self, now: Instant, event: &Event, out: &mut Vec<PolicyAction>);
    /// Called at (or after) [`RelayPolicy::next_wakeup`].
    fn on_timeout(&mut self, now: Instant, out: &mut Vec<PolicyAction>);
    /// When the policy wants [`RelayPolicy::on_timeout`] next.
    fn next_wakeup(&self) -> Option<Instant>;
    /// Relays holding a reservation now.
    fn reserved(&self) -> Vec<PeerId>;
}

/// Knobs of [`StaticFailover`] (the DESIGN §5.2 client knobs it honours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Relays in order of preference.
    pub relays: Vec<(SocketAddr, PeerId)>,
    /// Reservations to keep on distinct relays (capped by the number of relays). Default 2.
    pub min_relays: usize,
    /// Most reservations held at once. Default 4.
    pub max_relays: usize,
    /// First retry delay after a relay failed. Default 500 ms.
    pub backoff_initial: Duration,
    /// Longest retry delay. Default 30 s.
    pub backoff_max: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            relays: Vec::new(),
            min_relays: 2,
            max_relays: 4,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle { retry_at: Instant },
    Dialing,
    Connecting(ConnectionId),
    Reserving(ConnectionId),
    Reserved(ConnectionId),
}

#[derive(Debug)]
struct Entry {
    addr: SocketAddr,
    peer: PeerId,
    state: State,
    failures: u32,
}

/// A lost reservation not yet replaced.
#[derive(Debug, Clone)]
struct Loss {
    from: PeerId,
    at: Instant,
    why: String,
}

/// Keeps `min_relays` reservations on a fixed list of relays, failing over in list order. See
/// the module docs.
#[derive(Debug)]
pub struct StaticFailover {
    config: FailoverConfig,
    entries: Vec<Entry>,
    losses: Vec<Loss>,
    /// Index after the last relay dialed: the next failover starts there.
    cursor: usize,
}

impl StaticFailover {
    /// A policy over `config.relays`.
    #[must_use]
    pub fn new(config: FailoverConfig, now: Instant) -> Self {
        let entries = config
            .relays
            .iter()
            .map(|&(addr, peer)| Entry {
                addr,
                peer,
                state: State::Idle { retry_at: now },
                failures: 0,
            })
            .collect();
        Self {
            config,
            entries,
            losses: Vec::new(),
            cursor: 0,
        }
    }

    fn want(&self) -> usize {
        self.config
            .min_relays
            .max(1)
            .min(self.config.max_relays.max(1))
            .min(self.entries.len())
    }

    fn active(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !matches!(e.state, State::Idle { .. }))
            .count()
    }

    /// Dials idle relays, in list order from the cursor, until enough are in progress.
    fn plan(&mut self, now: Instant, out: &mut Vec<PolicyAction>) {
        let n = self.entries.len();
        let mut looked = 0;
        while self.active() < self.want() && looked < n {
            let index = self.cursor % n;
            self.cursor = (self.cursor + 1) % n;
            looked += 1;
            let entry = &mut self.entries[index];
            if let State::Idle { retry_at } = entry.state
                && retry_at <= now
            {
                entry.state = State::Dialing;
                out.push(PolicyAction::Dial {
                    addr: entry.addr,
                    peer: entry.peer,
                });
            }
        }
    }

    fn fail(&mut self, index: usize, now: Instant, why: &str) {
        let backoff_initial = self.config.backoff_initial;
        let backoff_max = self.config.backoff_max;
        let count = self.entries.len().max(1);
        let entry = &mut self.entries[index];
        if let State::Reserved(_) = entry.state {
            self.losses.push(Loss {
                from: entry.peer,
                at: now,
                why: why.to_owned(),
            });
            // The next failover starts after the relay just lost.
            self.cursor = (index + 1) % count;
        }
        let shift = entry.failures.min(16);
        let delay = backoff_initial
            .saturating_mul(1u32 << shift)
            .min(backoff_max);
        entry.failures = entry.failures.saturating_add(1);
        entry.state = State::Idle {
            retry_at: now + delay,
        };
    }

    fn by_connection(&self, connection: ConnectionId) -> Option<usize> {
        self.entries.iter().position(|e| match e.state {
            State::Connecting(c) | State::Reserving(c) | State::Reserved(c) => c == connection,
            _ => false,
        })
    }
}

impl RelayPolicy for StaticFailover {
    fn start(&mut self, now: Instant, out: &mut Vec<PolicyAction>) {
        self.plan(now, out);
    }

    fn on_dial_started(
        &mut self,
        now: Instant,
        peer: PeerId,
        result: Result<ConnectionId, String>,
        out: &mut Vec<PolicyAction>,
    ) {
        let Some(index) = self
            .entries
            .iter()
            .position(|e| e.peer == peer && e.state == State::Dialing)
        else {
            return;
        };
        match result {
            Ok(connection) => self.entries[index].state = State::Connecting(connection),
            Err(why) => {
                self.fail(index, now, &why);
                self.plan(now, out);
            }
        }
    }

    fn on_event(&mut self, now: Instant, event: &Event, out: &mut Vec<PolicyAction>) {
        match event {
            Event::ConnectionEstablished {
                connection,
                direction: Direction::Outbound,
                relay: None,
                ..
            } => {
                if let Some(index) = self.by_connection(*connection)
                    && self.entries[index].state == State::Connecting(*connection)
                {
                    self.entries[index].state = State::Reserving(*connection);
                    out.push(PolicyAction::Reserve {
                        connection: *connection,
                    });
                }
            }
            Event::ReservationAccepted {
                connection,
                relay,
                renewed,
                ..
            } => {
                if let Some(index) = self.by_connection(*connection) {
                    let entry = &mut self.entries[index];
                    entry.state = State::Reserved(*connection);
                    entry.failures = 0;
                    if !renewed && let Some(loss) = self.losses.pop() {
                        out.push(PolicyAction::Notice(PolicyNotice::RelaySwitched {
                            from: loss.from,
                            to: *relay,
                            took: now.saturating_duration_since(loss.at),
                            why: loss.why,
                        }));
                    }
                }
            }
            Event::ReservationFailed {
                connection, reason, ..
            } => {
                if let Some(index) = self.by_connection(*connection)
                    && self.entries[index].state == State::Reserving(*connection)
                {
                    self.fail(index, now, reason);
                    out.push(PolicyAction::Close {
                        connection: *connection,
                    });
                    self.plan(now, out);
                }
            }
            Event::ReservationLost {
                connection, reason, ..
            } => {
                if let Some(index) = self.by_connection(*connection) {
                    self.fail(index, now, reason);
                    out.push(PolicyAction::Close {
                        connection: *connection,
                    });
                    self.plan(now, out);
                }
            }
            Event::ConnectionClosed {
                connection,
                failure,
                ..
            } => {
                if let Some(index) = self.by_connection(*connection) {
                    self.fail(index, now, &failure.to_string());
                    self.plan(now, out);
                }
            }
            _ => {}
        }
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Vec<PolicyAction>) {
        self.plan(now, out);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        if self.active() >= self.want() {
            return None;
        }
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Idle { retry_at } => Some(retry_at),
                _ => None,
            })
            .min()
    }

    fn reserved(&self) -> Vec<PeerId> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Reserved(_)))
            .map(|e| e.peer)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dep2p_core::identity::keypair_from_seed;
    use dep2p_core::node::ConnectionFailure;

    fn peer(n: u8) -> PeerId {
        keypair_from_seed([n; 32]).public().to_peer_id()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Connection ids are opaque; the driver hands them out. Tests take them from a real
    /// core event type by dialing nothing: use the policy's own bookkeeping instead.
    fn dial_and_reserve(
        policy: &mut StaticFailover,
        now: Instant,
        relay: PeerId,
        connection: ConnectionId,
    ) -> Vec<PolicyAction> {
        let mut out = Vec::new();
        policy.on_dial_started(now, relay, Ok(connection), &mut out);
        policy.on_event(
            now,
            &Event::ConnectionEstablished {
                connection,
                peer: relay,
                remote: addr(1),
                direction: Direction::Outbound,
                relay: None,
            },
            &mut out,
        );
        assert_eq!(out, vec![PolicyAction::Reserve { connection }]);
        out.clear();
        policy.on_event(
            now,
            &Event::ReservationAccepted {
                connection,
                relay,
                expire_unix_secs: 0,
                circuit_addrs: Vec::new(),
                limit: None,
                renewed: false,
            },
            &mut out,
        );
        out
    }

    fn connection_ids() -> (ConnectionId, ConnectionId) {
        // ConnectionId has no public constructor; take two from a real node.
        let mut node = dep2p_core::node::Node::new(
            dep2p_core::node::NodeConfig::default(),
            keypair_from_seed([9; 32]),
            [1; 32],
            Instant::now(),
            Duration::from_secs(1_700_000_000),
        )
        .unwrap();
        let a = node.dial(Instant::now(), addr(2), peer(1)).unwrap();
        let b = node.dial(Instant::now(), addr(3), peer(2)).unwrap();
        (a, b)
    }

    #[test]
    fn lost_reservation_fails_over_to_the_next_relay_and_reports_the_switch() {
        let (c1, c2) = connection_ids();
        let now = Instant::now();
        let mut policy = StaticFailover::new(
            FailoverConfig {
                relays: vec![(addr(10), peer(1)), (addr(11), peer(2))],
                min_relays: 1,
                ..FailoverConfig::default()
            },
            now,
        );
        let mut out = Vec::new();
        policy.start(now, &mut out);
        assert_eq!(
            out,
            vec![PolicyAction::Dial {
                addr: addr(10),
                peer: peer(1)
            }]
        );
        assert!(dial_and_reserve(&mut policy, now, peer(1), c1).is_empty());
        assert_eq!(policy.reserved(), vec![peer(1)]);
        assert_eq!(policy.next_wakeup(), None);

        let later = now + Duration::from_secs(3);
        let mut out = Vec::new();
        policy.on_event(
            later,
            &Event::ConnectionClosed {
                connection: c1,
                peer: Some(peer(1)),
                failure: ConnectionFailure::TimedOut,
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![PolicyAction::Dial {
                addr: addr(11),
                peer: peer(2)
            }]
        );
        let done = later + Duration::from_millis(40);
        let out = dial_and_reserve(&mut policy, done, peer(2), c2);
        assert_eq!(
            out,
            vec![PolicyAction::Notice(PolicyNotice::RelaySwitched {
                from: peer(1),
                to: peer(2),
                took: Duration::from_millis(40),
                why: "timed out".to_owned(),
            })]
        );
        assert_eq!(policy.reserved(), vec![peer(2)]);
    }

    #[test]
    fn failed_relays_are_retried_with_growing_backoff() {
        let now = Instant::now();
        let mut policy = StaticFailover::new(
            FailoverConfig {
                relays: vec![(addr(10), peer(1))],
                min_relays: 1,
                ..FailoverConfig::default()
            },
            now,
        );
        let mut out = Vec::new();
        policy.start(now, &mut out);
        out.clear();
        policy.on_dial_started(now, peer(1), Err("unreachable".into()), &mut out);
        assert!(out.is_empty(), "nothing else to dial yet");
        assert_eq!(policy.next_wakeup(), Some(now + Duration::from_millis(500)));
        let t1 = now + Duration::from_millis(500);
        policy.on_timeout(t1, &mut out);
        assert_eq!(out.len(), 1, "retried after the backoff");
        out.clear();
        policy.on_dial_started(t1, peer(1), Err("unreachable".into()), &mut out);
        assert_eq!(policy.next_wakeup(), Some(t1 + Duration::from_secs(1)));
    }
}
