//! Drives [`AutoRelay`](crate::autorelay::AutoRelay) from the node (DESIGN §5.2): the node's
//! events are its inputs, its actions become node commands, its timer joins the node's.
//!
//! The observer sits where events leave the node (`poll_output`), so AutoRelay sees exactly
//! what the application sees, at the same `now`, and reacts before the next input: a lost
//! relay is replaced immediately, not at the next refresh.

use std::collections::BTreeMap;
use std::time::Instant;

use multiaddr::Multiaddr;

use super::Node;
use super::error::ConnectionFailure;
use super::event::{Event, ReservationFailureKind};
use super::ids::ConnectionId;
use super::relay_server::CLOSE_DRAINING;
use super::transport::Transport;
use crate::addr::parse_quic_multiaddr;
use crate::autorelay::{AutoRelay, AutoRelayAction, CandidateSource};
use crate::identity::PeerId;
use crate::relay::HOP_PROTOCOL;

/// Application close code of a relay connection AutoRelay no longer needs.
pub const CLOSE_RELEASED: u32 = 0x726c;

/// Most AutoRelay actions carried out per drain; the machine emits a handful per input.
const MAX_ACTIONS: usize = 10_000;

/// The node's side of AutoRelay.
#[derive(Debug)]
pub(crate) struct AutoRelayDriver {
    pub(crate) machine: AutoRelay,
    /// Established direct connections, by peer (the newest wins).
    direct: BTreeMap<PeerId, ConnectionId>,
    /// Dials AutoRelay asked for and that are not established yet.
    dialing: BTreeMap<ConnectionId, PeerId>,
}

impl AutoRelayDriver {
    pub(crate) fn new(machine: AutoRelay) -> Self {
        Self {
            machine,
            direct: BTreeMap::new(),
            dialing: BTreeMap::new(),
        }
    }
}

impl Node {
    /// Adds relay candidates for AutoRelay (a bootstrap or static list). Only QUIC addresses
    /// (`/ip4|ip6/…/udp/…/quic-v1`) can be dialed. Does nothing without AutoRelay.
    pub fn add_relay_candidates(
        &mut self,
        now: Instant,
        candidates: &[(PeerId, Vec<Multiaddr>)],
        source: CandidateSource,
    ) {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        let now = self.now;
        let Some(driver) = self.autorelay.as_mut() else {
            return;
        };
        let _ = driver.machine.add_candidates(
            now,
            candidates
                .iter()
                .map(|(peer, addrs)| (*peer, addrs.as_slice())),
            source,
        );
        self.run_autorelay();
    }

    /// AutoRelay's state, when enabled.
    #[must_use]
    pub fn auto_relay(&self) -> Option<&AutoRelay> {
        self.autorelay.as_ref().map(|d| &d.machine)
    }

    /// Feeds one outgoing event to AutoRelay.
    pub(crate) fn observe_for_autorelay(&mut self, event: &Event) {
        let now = self.now;
        let rtt_of = |node: &Node, c: ConnectionId| node.connection_rtt(c).unwrap_or_default();
        let Some(driver) = self.autorelay.as_ref() else {
            return;
        };
        let _ = driver;
        match event {
            Event::ConnectionEstablished {
                connection,
                peer,
                relay: None,
                ..
            } => {
                let rtt = rtt_of(self, *connection);
                if let Some(driver) = self.autorelay.as_mut() {
                    driver.dialing.remove(connection);
                    driver.direct.insert(*peer, *connection);
                    driver.machine.on_connected(now, *peer, rtt);
                }
            }
            Event::ConnectionClosed {
                connection,
                peer: Some(peer),
                failure,
            } => {
                let Some(driver) = self.autorelay.as_mut() else {
                    return;
                };
                if driver.dialing.remove(connection).is_some() {
                    driver.machine.on_dial_failed(now, *peer);
                } else if driver.direct.get(peer) == Some(connection) {
                    driver.direct.remove(peer);
                    let drained = matches!(
                        failure,
                        ConnectionFailure::ClosedByPeer { code, .. } if *code == u64::from(CLOSE_DRAINING)
                    );
                    driver.machine.on_connection_lost(now, *peer, drained);
                }
            }
            Event::Identified { connection, info } => {
                let direct = matches!(
                    self.connections.get(connection).map(|c| &c.transport),
                    Some(Transport::Quic(_))
                );
                if !direct {
                    return;
                }
                let peer = info.public_key.to_peer_id();
                let hop = info.protocols.iter().any(|p| p == HOP_PROTOCOL);
                if let Some(driver) = self.autorelay.as_mut() {
                    driver
                        .machine
                        .on_identified(now, peer, hop, &info.listen_addrs);
                }
            }
            Event::PingSucceeded { connection, rtt } => {
                let Some(peer) = self.connection_peer(*connection) else {
                    return;
                };
                if let Some(driver) = self.autorelay.as_mut() {
                    driver.machine.on_rtt_sample(now, peer, *rtt);
                }
            }
            Event::ReservationAccepted {
                relay,
                expire_unix_secs,
                circuit_addrs,
                ..
            } => {
                let expire = self
                    .anchor
                    .instant_at(std::time::Duration::from_secs(*expire_unix_secs));
                if let Some(driver) = self.autorelay.as_mut() {
                    driver
                        .machine
                        .on_reservation_accepted(now, *relay, expire, circuit_addrs);
                }
            }
            Event::ReservationFailed { relay, kind, .. } => {
                let Some(driver) = self.autorelay.as_mut() else {
                    return;
                };
                match kind {
                    ReservationFailureKind::Refused(status) => {
                        driver.machine.on_reservation_refused(now, *relay, *status)
                    }
                    ReservationFailureKind::HopUnsupported => {
                        driver.machine.on_hop_unsupported(now, *relay)
                    }
                    ReservationFailureKind::Other => {
                        driver.machine.on_reservation_failed(now, *relay)
                    }
                }
            }
            _ => return,
        }
        self.run_autorelay();
    }

    /// AutoRelay's timer.
    pub(crate) fn autorelay_timeout(&mut self, now: Instant) {
        if let Some(driver) = self.autorelay.as_mut() {
            if driver.machine.poll_timeout().is_some_and(|at| at <= now) {
                driver.machine.handle_timeout(now);
            }
            self.run_autorelay();
        }
    }

    pub(crate) fn autorelay_deadline(&self) -> Option<Instant> {
        self.autorelay
            .as_ref()
            .and_then(|d| d.machine.poll_timeout())
    }

    /// Carries out AutoRelay's actions.
    fn run_autorelay(&mut self) {
        for _ in 0..MAX_ACTIONS {
            let Some(action) = self
                .autorelay
                .as_mut()
                .and_then(|d| d.machine.poll_action())
            else {
                return;
            };
            self.run_autorelay_action(action);
        }
    }

    fn run_autorelay_action(&mut self, action: AutoRelayAction) {
        let now = self.now;
        match action {
            AutoRelayAction::Dial { peer, addrs } => {
                if let Some(&existing) = self.autorelay.as_ref().and_then(|d| d.direct.get(&peer)) {
                    let rtt = self.connection_rtt(existing).unwrap_or_default();
                    if let Some(driver) = self.autorelay.as_mut() {
                        driver.machine.on_connected(now, peer, rtt);
                    }
                    return;
                }
                let target = addrs
                    .iter()
                    .filter_map(|a| parse_quic_multiaddr(a).ok())
                    .find(|(_, p)| p.is_none_or(|p| p == peer))
                    .map(|(socket, _)| socket);
                let dialed = target.map(|socket| self.dial(now, socket, peer));
                let Some(driver) = self.autorelay.as_mut() else {
                    return;
                };
                match dialed {
                    Some(Ok(connection)) => {
                        driver.dialing.insert(connection, peer);
                    }
                    _ => driver.machine.on_dial_failed(now, peer),
                }
            }
            AutoRelayAction::Reserve { peer } => {
                let connection = self
                    .autorelay
                    .as_ref()
                    .and_then(|d| d.direct.get(&peer))
                    .copied();
                let reserved = connection.map(|c| self.reserve(now, c));
                if !matches!(reserved, Some(Ok(())))
                    && let Some(driver) = self.autorelay.as_mut()
                {
                    driver.machine.on_reservation_failed(now, peer);
                }
            }
            AutoRelayAction::Release { peer } => {
                let connection = self
                    .autorelay
                    .as_ref()
                    .and_then(|d| d.direct.get(&peer))
                    .copied();
                if let Some(connection) = connection {
                    self.release_reservation(connection);
                    let carries_circuits = self
                        .connections
                        .values()
                        .any(|c| matches!(&c.transport, Transport::Relayed(r) if r.relay_conn == connection));
                    if !carries_circuits {
                        if let Some(driver) = self.autorelay.as_mut() {
                            driver.direct.remove(&peer);
                        }
                        let _ = self.close(now, connection, CLOSE_RELEASED, b"relay released");
                    }
                }
            }
            AutoRelayAction::AddrsChanged { addrs } => {
                self.events.push(Event::CircuitAddrsChanged { addrs })
            }
            AutoRelayAction::Switched { from, to, why } => {
                self.events.push(Event::RelaySwitched { from, to, why })
            }
        }
    }
}
