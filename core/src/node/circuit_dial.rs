//! Dialing a peer through its circuit addresses (DESIGN §5.2): relays are tried in order, the
//! next one when one fails, and the whole list again after a backoff, a bounded number of
//! rounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use multiaddr::{Multiaddr, Protocol};

use super::Node;
use super::event::Event;
use super::ids::ConnectionId;
use super::transport::Transport;
use crate::identity::PeerId;

/// Rounds over the whole address list before a circuit dial gives up.
pub const CIRCUIT_DIAL_ROUNDS: u32 = 3;
/// Backoff before the second round; doubled for each further round.
pub const CIRCUIT_DIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Most circuit addresses one dial tries (the rest are ignored).
const MAX_CIRCUIT_ADDRS: usize = 16;
/// Most circuit dials in flight at once.
const MAX_CIRCUIT_DIALS: usize = 256;

/// Identifies one [`Node::dial_circuit`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CircuitDialId(u64);

/// Why a circuit address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CircuitAddrError {
    /// No address names a QUIC relay followed by `/p2p-circuit`.
    #[error(
        "no usable circuit address (expected /ip4|ip6/…/udp/…/quic-v1/p2p/<relay>/p2p-circuit[/p2p/<target>])"
    )]
    NoUsableAddress,
    /// Too many circuit dials are in flight.
    #[error("too many circuit dials in flight ({0})")]
    TooManyDials(usize),
    /// Dialing ourselves.
    #[error("refusing to dial ourselves")]
    SelfDial,
}

#[derive(Debug, Clone, Copy)]
enum Attempt {
    /// Connecting to the relay itself first.
    Relay(ConnectionId),
    /// The relayed connection is being set up.
    Relayed(ConnectionId),
}

#[derive(Debug)]
pub(crate) struct CircuitDial {
    target: PeerId,
    relays: Vec<(SocketAddr, PeerId)>,
    next: usize,
    round: u32,
    attempt: Option<Attempt>,
    retry_at: Option<Instant>,
    errors: Vec<String>,
}

/// All circuit dials in flight.
#[derive(Debug, Default)]
pub(crate) struct CircuitDials {
    dials: BTreeMap<CircuitDialId, CircuitDial>,
    next_id: u64,
}

impl CircuitDials {
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.dials.values().filter_map(|d| d.retry_at).min()
    }
}

/// `(relay socket, relay, target)` of a circuit address.
fn parse_circuit_addr(addr: &Multiaddr) -> Option<(SocketAddr, PeerId, Option<PeerId>)> {
    let mut relay_part = Multiaddr::empty();
    let mut parts = addr.iter();
    for part in parts.by_ref() {
        if part == Protocol::P2pCircuit {
            break;
        }
        relay_part.push(part);
    }
    let target = match parts.next() {
        Some(Protocol::P2p(peer)) => Some(peer),
        None => None,
        Some(_) => return None,
    };
    let (socket, relay) = crate::addr::parse_quic_multiaddr(&relay_part).ok()?;
    Some((socket, relay?, target))
}

impl Node {
    /// Dials `target` through the relays named by its circuit addresses
    /// (`<relay quic addr>/p2p/<relay>/p2p-circuit[/p2p/<target>]`): the first relay, then
    /// the next when one fails, then the whole list again after [`CIRCUIT_DIAL_BACKOFF`]
    /// (doubling), for [`CIRCUIT_DIAL_ROUNDS`] rounds. Reported as
    /// [`Event::CircuitDialSucceeded`] or [`Event::CircuitDialFailed`].
    pub fn dial_circuit(
        &mut self,
        now: Instant,
        target: PeerId,
        addrs: &[Multiaddr],
    ) -> Result<CircuitDialId, CircuitAddrError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        if target == self.peer_id {
            return Err(CircuitAddrError::SelfDial);
        }
        if self.circuit_dials.dials.len() >= MAX_CIRCUIT_DIALS {
            return Err(CircuitAddrError::TooManyDials(MAX_CIRCUIT_DIALS));
        }
        let relays: Vec<(SocketAddr, PeerId)> = addrs
            .iter()
            .filter_map(parse_circuit_addr)
            .filter(|(_, relay, t)| t.is_none_or(|t| t == target) && *relay != target)
            .map(|(socket, relay, _)| (socket, relay))
            .take(MAX_CIRCUIT_ADDRS)
            .collect();
        if relays.is_empty() {
            return Err(CircuitAddrError::NoUsableAddress);
        }
        let id = CircuitDialId(self.circuit_dials.next_id);
        self.circuit_dials.next_id += 1;
        self.circuit_dials.dials.insert(
            id,
            CircuitDial {
                target,
                relays,
                next: 0,
                round: 0,
                attempt: None,
                retry_at: None,
                errors: Vec::new(),
            },
        );
        self.advance_circuit_dial(id);
        Ok(id)
    }

    /// Starts the next attempt of a dial, schedules the next round, or gives up.
    fn advance_circuit_dial(&mut self, id: CircuitDialId) {
        // Each pass consumes one address of the list, so this ends within one round.
        loop {
            let Some(dial) = self.circuit_dials.dials.get_mut(&id) else {
                return;
            };
            if dial.next >= dial.relays.len() {
                dial.round += 1;
                dial.next = 0;
                if dial.round >= CIRCUIT_DIAL_ROUNDS {
                    let dial = self.circuit_dials.dials.remove(&id).expect("present above");
                    self.events.push(Event::CircuitDialFailed {
                        dial: id,
                        target: dial.target,
                        errors: dial.errors,
                    });
                    return;
                }
                dial.retry_at = Some(self.now + CIRCUIT_DIAL_BACKOFF * (1 << (dial.round - 1)));
                return;
            }
            let (socket, relay) = dial.relays[dial.next];
            dial.next += 1;
            let target = dial.target;
            let existing = self
                .connections
                .iter()
                .find(|(_, c)| {
                    c.peer == Some(relay)
                        && c.state == super::connection::ConnState::Established
                        && matches!(c.transport, Transport::Quic(_))
                })
                .map(|(id, _)| *id);
            let started = match existing {
                Some(relay_conn) => self
                    .dial_through_relay(self.now, relay_conn, target)
                    .map(Attempt::Relayed),
                None => self.dial(self.now, socket, relay).map(Attempt::Relay),
            };
            let Some(dial) = self.circuit_dials.dials.get_mut(&id) else {
                return;
            };
            match started {
                Ok(attempt) => {
                    dial.attempt = Some(attempt);
                    return;
                }
                Err(error) => dial.errors.push(format!("via {relay}: {error}")),
            }
        }
    }

    /// Circuit dials whose backoff ended.
    pub(crate) fn circuit_dial_timeouts(&mut self, now: Instant) {
        let due: Vec<CircuitDialId> = self
            .circuit_dials
            .dials
            .iter()
            .filter(|(_, d)| d.retry_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(dial) = self.circuit_dials.dials.get_mut(&id) {
                dial.retry_at = None;
            }
            self.advance_circuit_dial(id);
        }
    }

    /// Feeds an outgoing event to the circuit dials waiting on it.
    pub(crate) fn observe_for_circuit_dials(&mut self, event: &Event) {
        let (connection, established, error) = match event {
            Event::ConnectionEstablished { connection, .. } => (*connection, true, String::new()),
            Event::ConnectionClosed {
                connection,
                failure,
                ..
            } => (*connection, false, failure.to_string()),
            _ => return,
        };
        let waiting = self
            .circuit_dials
            .dials
            .iter()
            .find_map(|(id, d)| match d.attempt {
                Some(Attempt::Relay(c) | Attempt::Relayed(c)) if c == connection => {
                    Some((*id, d.attempt))
                }
                _ => None,
            });
        let Some((id, Some(attempt))) = waiting else {
            return;
        };
        match (attempt, established) {
            (Attempt::Relayed(relayed), true) => {
                let dial = self.circuit_dials.dials.remove(&id).expect("found above");
                self.events.push(Event::CircuitDialSucceeded {
                    dial: id,
                    target: dial.target,
                    connection: relayed,
                });
            }
            (Attempt::Relay(relay_conn), true) => {
                let target = self.circuit_dials.dials[&id].target;
                let started = self.dial_through_relay(self.now, relay_conn, target);
                let Some(dial) = self.circuit_dials.dials.get_mut(&id) else {
                    return;
                };
                match started {
                    Ok(relayed) => dial.attempt = Some(Attempt::Relayed(relayed)),
                    Err(error) => {
                        dial.errors.push(error.to_string());
                        dial.attempt = None;
                        self.advance_circuit_dial(id);
                    }
                }
            }
            (_, false) => {
                if let Some(dial) = self.circuit_dials.dials.get_mut(&id) {
                    let relay = dial.relays[dial.next - 1].1;
                    dial.errors.push(format!("via {relay}: {error}"));
                    dial.attempt = None;
                }
                self.advance_circuit_dial(id);
            }
        }
    }
}
