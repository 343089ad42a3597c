//! The relay server role of a node (DESIGN §4.3, §5.1): RESERVE and CONNECT on HOP streams,
//! STOP toward the target, and the bridge between the two streams.
//!
//! Admission decisions come from the pure tables of [`crate::relay`]; this module applies them
//! to streams and connections.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Node;
use super::bridge::{Bridge, BridgeEnd, CODE_CIRCUIT_LIMIT, CODE_CIRCUIT_PEER_GONE, End, Turn};
use super::ids::{ConnectionId, StreamHandle};
use super::stream::{Purpose, RelayRole, StreamKind};
use super::transport::Transport;
use crate::framing::FrameError;
use crate::identity::PeerId;
use crate::relay::STOP_PROTOCOL;
use crate::relay::circuits::{CircuitId, CircuitTable};
use crate::relay::limits::RelayLimits;
use crate::relay::reservations::ReservationTable;
use crate::relay::voucher::Voucher;
use crate::relay::wire::{
    DecodeError, HopRequest, HopResponse, ReservationInfo, Status, StopRequest, StopResponse,
};

/// Application close code of a connection closed because the relay was above its high
/// connection watermark.
pub const CLOSE_TRIMMED: u32 = 0x7472;

/// Application close code of a connection closed because the node is draining (shutting down
/// gracefully): clients fail over at once instead of waiting for the idle timeout (DESIGN §5.2).
pub const CLOSE_DRAINING: u32 = 0x6472;

/// Counters of the relay role, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Reservations held now.
    pub reservations: usize,
    /// Circuits admitted and not yet closed (waiting for the target, or bridged).
    pub circuits: usize,
    /// Circuits bridged now.
    pub bridges: usize,
    /// RESERVE requests admitted (new and renewals).
    pub reservations_accepted: u64,
    /// Circuits that were bridged.
    pub circuits_opened: u64,
    /// Bytes forwarded, both directions, over all circuits.
    pub bytes_relayed: u64,
    /// Refusals by reason (both tables, plus the node's own: malformed, unexpected, relayed
    /// connection, target failure).
    pub refusals: BTreeMap<&'static str, u64>,
    /// Bytes parked in bridges now (at most one chunk per direction per circuit).
    pub bridge_buffered: usize,
}

/// One admitted circuit of a relay as it stands now (see [`Node::relay_circuits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSnapshot {
    /// The circuit's id; never reused by this relay (until it restarts).
    pub id: CircuitId,
    /// The peer that sent CONNECT.
    pub src: PeerId,
    /// The target of the CONNECT.
    pub dst: PeerId,
    /// Bytes relayed so far, source→target then target→source, as counted toward
    /// `max_circuit_bytes` (at most one chunk per direction may still wait in the bridge);
    /// zero while the circuit waits for the target's STOP answer.
    pub bytes: [u64; 2],
    /// When the relay admitted it.
    pub opened_at: Instant,
    /// When `max_circuit_duration` ends it; `None` without a duration limit.
    pub deadline: Option<Instant>,
}

/// A CONNECT waiting for the target's STOP answer.
#[derive(Debug)]
pub(crate) struct PendingCircuit {
    source: StreamHandle,
    target: StreamHandle,
    /// Bytes the source sent after its CONNECT: the start of the relayed stream.
    source_rest: Bytes,
}

/// The relay's state.
#[derive(Debug)]
pub(crate) struct RelayServer {
    pub(crate) limits: RelayLimits,
    pub(crate) reservations: ReservationTable,
    pub(crate) circuits: CircuitTable,
    /// The connection holding each reservation: STOP goes there.
    holders: BTreeMap<PeerId, ConnectionId>,
    pending: BTreeMap<CircuitId, PendingCircuit>,
    bridges: BTreeMap<CircuitId, Bridge>,
    stats: RelayStats,
    /// Draining: new reservations are refused.
    draining: bool,
    /// Test-only: bytes to record per circuit, and what ended circuits recorded.
    #[cfg(any(test, feature = "test-driver"))]
    tap: Option<(usize, Vec<[Vec<u8>; 2]>)>,
}

impl RelayServer {
    pub(crate) fn new(limits: RelayLimits) -> Self {
        Self {
            reservations: ReservationTable::new(limits.clone()),
            circuits: CircuitTable::new(limits.clone()),
            limits,
            holders: BTreeMap::new(),
            pending: BTreeMap::new(),
            bridges: BTreeMap::new(),
            stats: RelayStats::default(),
            draining: false,
            #[cfg(any(test, feature = "test-driver"))]
            tap: None,
        }
    }

    fn refuse(&mut self, reason: &'static str) {
        *self.stats.refusals.entry(reason).or_default() += 1;
    }

    /// The earliest deadline of the relay's tables.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.reservations.next_deadline(),
            self.circuits.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn circuits(&self) -> Vec<CircuitSnapshot> {
        self.circuits
            .iter()
            .map(|(id, c)| CircuitSnapshot {
                id,
                src: c.src,
                dst: c.dst,
                bytes: self.bridges.get(&id).map_or([0; 2], |b| b.forwarded),
                opened_at: c.opened_at,
                deadline: c.deadline,
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> RelayStats {
        let mut stats = self.stats.clone();
        stats.reservations = self.reservations.len();
        stats.circuits = self.circuits.len();
        stats.bridges = self.bridges.len();
        stats.bridge_buffered = self.bridges.values().map(Bridge::buffered).sum();
        for (reason, count) in self
            .reservations
            .rejections()
            .iter()
            .chain(self.circuits.rejections().iter())
        {
            *stats.refusals.entry(reason.label()).or_default() += count;
        }
        stats
    }
}

impl Node {
    /// Counters of the relay role, if this node is a relay.
    #[must_use]
    pub fn relay_stats(&self) -> Option<RelayStats> {
        self.relay.as_ref().map(RelayServer::stats)
    }

    /// The circuits this relay has admitted and not yet ended (waiting for the target, or
    /// bridged), in id order; empty if this node is not a relay. A circuit leaves the list
    /// when it closes, when one of its ends goes, or at its duration deadline, and never
    /// comes back.
    #[must_use]
    pub fn relay_circuits(&self) -> Vec<CircuitSnapshot> {
        self.relay
            .as_ref()
            .map_or_else(Vec::new, RelayServer::circuits)
    }

    /// Test-only: from now on, records the first `max_bytes_per_circuit` bytes each new circuit
    /// forwards (both directions together), exactly as the relay forwards them.
    #[cfg(any(test, feature = "test-driver"))]
    pub fn tap_forwarded(&mut self, max_bytes_per_circuit: usize) {
        if let Some(server) = self.relay.as_mut() {
            server.tap = Some((max_bytes_per_circuit, Vec::new()));
        }
    }

    /// Test-only: what [`Node::tap_forwarded`] recorded, one byte string per circuit and
    /// direction (source→target, then target→source), ended circuits first.
    #[cfg(any(test, feature = "test-driver"))]
    #[must_use]
    pub fn forwarded_tap(&self) -> Vec<Vec<u8>> {
        let Some(server) = self.relay.as_ref() else {
            return Vec::new();
        };
        let ended = server.tap.iter().flat_map(|(_, ended)| ended.iter());
        let live = server.bridges.values().filter_map(|b| b.tap.as_ref());
        ended
            .cloned()
            .chain(live.map(|t| t.bytes.clone()))
            .flatten()
            .collect()
    }

    /// Test-only: how many chunks each tapped circuit handed on, per direction (source→target,
    /// then target→source), live circuits only. A chunk is what one bridge read produced: a
    /// packet's worth of bytes, or the pieces of a batch of packets joined.
    #[cfg(any(test, feature = "test-driver"))]
    #[must_use]
    pub fn forwarded_pieces(&self) -> Vec<[u64; 2]> {
        let Some(server) = self.relay.as_ref() else {
            return Vec::new();
        };
        server
            .bridges
            .values()
            .filter_map(|b| b.tap.as_ref().map(|t| t.pieces))
            .collect()
    }

    /// Answers on `stream` with one message, then finishes it and ignores what follows.
    pub(crate) fn reply_and_close(&mut self, stream: StreamHandle, message: Bytes) {
        if let Some(conn) = self.connections.get_mut(&stream.connection) {
            if let Some(entry) = conn.streams.get_mut(&stream.id) {
                entry.kind = StreamKind::Closing;
                entry.pending_write.extend_from_slice(&message);
                entry.finish_when_flushed = true;
            }
            conn.flush(stream.id);
            // `touch`, not just `dirty`: on a relayed connection the bytes must also be pumped
            // into the circuit, or the answer sits in yamux until unrelated traffic moves it.
            self.touch(stream.connection);
        }
        // The peer's FIN usually arrives with its message, while the stream was parked and not
        // read; no new readable event comes for it, so read it now or the entry never ends.
        self.with_ctx(stream.connection, |conn, ctx| {
            conn.on_readable(stream.id, ctx);
        });
    }

    /// Writes `message` on `stream` without finishing it (the stream goes on as a circuit).
    fn reply_and_keep(&mut self, stream: StreamHandle, message: Bytes, kind: StreamKind) {
        if let Some(conn) = self.connections.get_mut(&stream.connection) {
            if let Some(entry) = conn.streams.get_mut(&stream.id) {
                entry.kind = kind;
                entry.pending_write.extend_from_slice(&message);
            }
            conn.flush(stream.id);
            self.touch(stream.connection);
        }
    }

    /// Resets a stream and forgets it.
    pub(crate) fn abort_and_forget(&mut self, stream: StreamHandle, code: u32) {
        if let Some(conn) = self.connections.get_mut(&stream.connection) {
            conn.streams.remove(&stream.id);
            conn.abort_stream(stream.id, code);
            self.touch(stream.connection);
        }
    }

    /// A HOP request arrived at the relay.
    pub(crate) fn on_hop_request(
        &mut self,
        stream: StreamHandle,
        frame: Result<Bytes, FrameError>,
        rest: BytesMut,
    ) {
        let Some(server) = self.relay.as_mut() else {
            // HOP is only offered on relays; a relayed connection of a non-relay also lands here.
            self.reply_and_close(
                stream,
                HopResponse::from_status(Status::PermissionDenied).encode(),
            );
            return;
        };
        let request = frame
            .map_err(DecodeError::from)
            .and_then(HopRequest::decode);
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                server.refuse(match error.status() {
                    Status::UnexpectedMessage => "unexpected_message",
                    _ => "malformed_message",
                });
                self.reply_and_close(stream, HopResponse::from_status(error.status()).encode());
                return;
            }
        };
        let Some(conn) = self.connections.get(&stream.connection) else {
            return;
        };
        let (Some(peer), Transport::Quic(quic)) = (conn.peer, &conn.transport) else {
            // DESIGN §4.3: RESERVE and CONNECT are valid only over a direct connection.
            server.refuse("relayed_connection");
            self.reply_and_close(
                stream,
                HopResponse::from_status(Status::PermissionDenied).encode(),
            );
            return;
        };
        let ip = quic.conn.remote_address().ip();
        match request {
            HopRequest::Reserve => self.relay_reserve(stream, peer, ip),
            HopRequest::Connect { peer: target } => {
                self.relay_connect(stream, peer, ip, target, rest.freeze())
            }
        }
    }

    fn relay_reserve(&mut self, stream: StreamHandle, peer: PeerId, ip: IpAddr) {
        let now = self.now;
        let relay_id = self.peer_id;
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let admission = match server.reservations.admit(now, peer, ip) {
            Ok(admission) => admission,
            Err(refusal) => {
                self.reply_and_close(stream, HopResponse::from_status(refusal.status).encode());
                return;
            }
        };
        server.stats.reservations_accepted += 1;
        server.holders.insert(peer, stream.connection);
        let limit = server.limits.circuit_limit();
        let expire = self.anchor.unix_at(admission.expires_at()).as_secs();
        let voucher = Voucher {
            relay: relay_id,
            peer,
            expiration_unix_secs: expire,
        }
        .sign(&self.keypair)
        .ok();
        let addrs = self
            .local
            .config
            .listen_addrs
            .iter()
            .map(|a| a.clone().with(multiaddr::Protocol::P2p(relay_id)))
            .collect();
        let info = ReservationInfo {
            expire_unix_secs: expire,
            addrs,
            voucher,
        };
        self.reply_and_close(
            stream,
            HopResponse::reservation_accepted(info, Some(limit)).encode(),
        );
    }

    fn relay_connect(
        &mut self,
        stream: StreamHandle,
        source: PeerId,
        ip: IpAddr,
        target: PeerId,
        rest: Bytes,
    ) {
        let now = self.now;
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let circuit = match server
            .circuits
            .admit(now, source, ip, target, &server.reservations)
        {
            Ok(circuit) => circuit,
            Err(refusal) => {
                self.reply_and_close(stream, HopResponse::from_status(refusal.status).encode());
                return;
            }
        };
        let limit = server.limits.circuit_limit();
        let holder = server.holders.get(&target).copied();
        let request = StopRequest::Connect {
            source,
            limit: Some(limit),
        }
        .encode();
        let opened = holder.and_then(|holder| {
            self.with_ctx(holder, |conn, ctx| {
                conn.open_outbound(
                    STOP_PROTOCOL,
                    Purpose::Relay {
                        role: RelayRole::Stop { circuit },
                        request,
                    },
                    ctx,
                )
            })
            .flatten()
            .map(|id| StreamHandle {
                connection: holder,
                id,
            })
        });
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let Some(target_stream) = opened else {
            let _ = server.circuits.close(circuit);
            server.refuse("target_unreachable");
            self.reply_and_close(
                stream,
                HopResponse::from_status(Status::ConnectionFailed).encode(),
            );
            return;
        };
        server.pending.insert(
            circuit,
            PendingCircuit {
                source: stream,
                target: target_stream,
                source_rest: rest,
            },
        );
        if let Some(entry) = self
            .connections
            .get_mut(&stream.connection)
            .and_then(|c| c.streams.get_mut(&stream.id))
        {
            entry.kind = StreamKind::Parked {
                role: RelayRole::AwaitingTarget { circuit },
            };
        }
        if let Some(holder) = holder {
            self.process(holder);
        }
    }

    /// The target answered our STOP CONNECT.
    pub(crate) fn on_stop_response(
        &mut self,
        circuit: CircuitId,
        target: StreamHandle,
        frame: Result<Bytes, FrameError>,
        rest: BytesMut,
    ) {
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let Some(pending) = server.pending.remove(&circuit) else {
            self.abort_and_forget(target, CODE_CIRCUIT_PEER_GONE);
            return;
        };
        let response = frame
            .map_err(DecodeError::from)
            .and_then(StopResponse::decode);
        if !matches!(response, Ok(StopResponse { status: Status::Ok })) {
            let _ = server.circuits.close(circuit);
            server.refuse("target_refused");
            self.reply_and_close(
                pending.source,
                HopResponse::from_status(Status::ConnectionFailed).encode(),
            );
            self.reply_and_close(target, Bytes::new());
            return;
        }
        let limit = server.limits.circuit_limit();
        let mut bridge = Bridge::new(pending.source, target, limit.data_bytes);
        #[cfg(any(test, feature = "test-driver"))]
        if let Some((budget, _)) = server.tap {
            bridge.tap = Some(super::bridge::BridgeTap {
                budget,
                ..Default::default()
            });
        }
        let preload = bridge
            .preload(End::Source, pending.source_rest)
            .and_then(|()| bridge.preload(End::Target, rest.freeze()));
        server.bridges.insert(circuit, bridge);
        server.stats.circuits_opened += 1;
        self.reply_and_keep(
            pending.source,
            HopResponse::circuit_established(Some(limit)).encode(),
            StreamKind::Bridged { circuit },
        );
        if let Some(entry) = self
            .connections
            .get_mut(&target.connection)
            .and_then(|c| c.streams.get_mut(&target.id))
        {
            entry.kind = StreamKind::Bridged { circuit };
        }
        match preload {
            Ok(()) => self.run_bridge(circuit),
            Err(end) => self.end_circuit(circuit, end),
        }
    }

    /// A relay-protocol stream of the relay failed before its message arrived.
    pub(crate) fn on_relay_server_stream_failed(&mut self, stream: StreamHandle, role: RelayRole) {
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        match role {
            RelayRole::Stop { circuit } => {
                if let Some(pending) = server.pending.remove(&circuit) {
                    let _ = server.circuits.close(circuit);
                    server.refuse("target_unreachable");
                    self.reply_and_close(
                        pending.source,
                        HopResponse::from_status(Status::ConnectionFailed).encode(),
                    );
                }
                self.abort_and_forget(stream, CODE_CIRCUIT_PEER_GONE);
            }
            RelayRole::AwaitingTarget { circuit } => {
                if let Some(pending) = server.pending.remove(&circuit) {
                    let _ = server.circuits.close(circuit);
                    self.abort_and_forget(pending.target, CODE_CIRCUIT_PEER_GONE);
                }
                self.abort_and_forget(stream, CODE_CIRCUIT_PEER_GONE);
            }
            _ => self.abort_and_forget(stream, CODE_CIRCUIT_PEER_GONE),
        }
    }

    /// Runs every bridge that had input since the last call (see `Node::bridges_dirty`).
    pub(crate) fn run_dirty_bridges(&mut self) {
        // A bridge turn queues no bridge of its own, so one pass settles; the bound only
        // guards against a bug.
        for _ in 0..100 {
            if self.bridges_dirty.is_empty() {
                return;
            }
            for circuit in std::mem::take(&mut self.bridges_dirty) {
                self.run_bridge(circuit);
                self.run_actions();
            }
        }
        debug_assert!(self.bridges_dirty.is_empty(), "bridges did not settle");
    }

    /// Forwards what can be forwarded on a bridged circuit, both directions.
    pub(crate) fn run_bridge(&mut self, circuit: CircuitId) {
        for from in [End::Source, End::Target] {
            let Some(server) = self.relay.as_mut() else {
                return;
            };
            let Some(bridge) = server.bridges.get_mut(&circuit) else {
                return;
            };
            let src = bridge.ends[from as usize];
            let dst = bridge.ends[from.other() as usize];
            // The STATUS to the source must leave before any relayed byte does.
            let dst_ready = self
                .connections
                .get_mut(&dst.connection)
                .map(|c| {
                    c.flush(dst.id);
                    c.streams
                        .get(&dst.id)
                        .is_some_and(|e| e.pending_write.is_empty())
                })
                .unwrap_or(false);
            if !dst_ready {
                if self.connections.contains_key(&dst.connection) {
                    continue;
                }
                self.end_circuit(circuit, BridgeEnd::Reset);
                return;
            }
            let turn = match two_mut(&mut self.connections, src.connection, dst.connection) {
                Some((src_conn, dst_conn)) => {
                    let before = bridge.forwarded[from as usize];
                    let turn =
                        bridge.forward(from, &mut src_conn.transport, &mut dst_conn.transport);
                    server.stats.bytes_relayed += bridge.forwarded[from as usize] - before;
                    turn
                }
                None => Turn::Done(BridgeEnd::Reset),
            };
            self.dirty.insert(src.connection);
            self.dirty.insert(dst.connection);
            if let Turn::Done(end) = turn {
                self.end_circuit(circuit, end);
                return;
            }
        }
    }

    /// Ends a circuit: removes it from the tables and, unless both directions finished
    /// cleanly, resets both streams.
    pub(crate) fn end_circuit(&mut self, circuit: CircuitId, end: BridgeEnd) {
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let _ = server.circuits.close(circuit);
        let Some(bridge) = server.bridges.remove(&circuit) else {
            return;
        };
        #[cfg(any(test, feature = "test-driver"))]
        if let (Some((_, ended)), Some(tap)) = (server.tap.as_mut(), bridge.tap.as_ref()) {
            ended.push(tap.bytes.clone());
        }
        let code = match end {
            BridgeEnd::Finished => None,
            BridgeEnd::DataLimit => Some(CODE_CIRCUIT_LIMIT),
            BridgeEnd::Reset => Some(CODE_CIRCUIT_PEER_GONE),
        };
        for stream in bridge.ends {
            match code {
                Some(code) => self.abort_and_forget(stream, code),
                None => {
                    if let Some(conn) = self.connections.get_mut(&stream.connection) {
                        conn.streams.remove(&stream.id);
                    }
                }
            }
        }
    }

    /// Shuts down gracefully (DESIGN §5.2): refuses new reservations and connections (inbound,
    /// and outbound dials with [`DialError::Draining`](super::DialError::Draining)), stops
    /// AutoRelay so a client does not replace the relays it is leaving, and closes every
    /// connection with [`CLOSE_DRAINING`], so peers fail over at once. The node stays usable
    /// for the few round trips the closes need; drop it after its connections are gone
    /// ([`Node::stats`] `connections == 0`).
    pub fn drain(&mut self, now: Instant) {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        self.draining = true;
        // Dropped before the closes: their events must not make AutoRelay dial replacements.
        self.autorelay = None;
        if let Some(server) = self.relay.as_mut() {
            server.draining = true;
        }
        // No new connections either: without a server config the endpoint refuses them.
        self.endpoint.set_server_config(None);
        let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for id in ids {
            let _ = self.close(self.now, id, CLOSE_DRAINING, b"draining");
        }
    }

    /// Whether [`Node::drain`] was called.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Connection watermarks (DESIGN §5.1): above the high watermark, close idle direct
    /// connections, oldest first, down to the low watermark. Connections holding a
    /// reservation, or any stream other than finished identify/ping bookkeeping, are
    /// protected.
    pub(crate) fn trim_connections(&mut self) {
        let Some(server) = self.relay.as_ref() else {
            return;
        };
        let (low, high) = server.limits.connection_watermarks();
        // Every direct (QUIC) connection, and only those, has an entry in `by_handle`: a
        // count without visiting each connection on every accepted handshake.
        let direct = self.by_handle.len();
        if high == 0 || direct <= high as usize {
            return;
        }
        let holders: std::collections::BTreeSet<ConnectionId> =
            server.holders.values().copied().collect();
        let excess = direct - low as usize;
        // BTreeMap order is creation order: ids are never reused and only grow.
        let idle: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(id, c)| {
                matches!(c.transport, Transport::Quic(_))
                    && c.state == super::connection::ConnState::Established
                    && !holders.contains(id)
                    && c.streams.values().all(|e| {
                        matches!(
                            e.kind,
                            StreamKind::IdentifyServe | StreamKind::PingDone | StreamKind::Closing
                        )
                    })
            })
            .map(|(id, _)| *id)
            .take(excess)
            .collect();
        for id in idle {
            if let Some(server) = self.relay.as_mut() {
                server.refuse("connection_trimmed");
            }
            let _ = self.close(self.now, id, CLOSE_TRIMMED, b"connection limit");
        }
    }

    /// Reservation and circuit deadlines.
    pub(crate) fn relay_timeouts(&mut self, now: Instant) {
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        for peer in server.reservations.expire(now) {
            server.holders.remove(&peer);
        }
        let expired = server.circuits.expired(now);
        for circuit in expired {
            let Some(server) = self.relay.as_mut() else {
                return;
            };
            if let Some(pending) = server.pending.remove(&circuit) {
                self.abort_and_forget(pending.source, CODE_CIRCUIT_LIMIT);
                self.abort_and_forget(pending.target, CODE_CIRCUIT_LIMIT);
            } else {
                self.end_circuit(circuit, BridgeEnd::DataLimit);
            }
        }
    }

    /// A connection closed: its reservation goes, and every circuit with an end on it.
    pub(crate) fn relay_connection_closed(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
    ) {
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        if let Some(peer) = peer
            && server.holders.get(&peer) == Some(&connection)
        {
            server.holders.remove(&peer);
            let _ = server.reservations.remove(&peer);
        }
        let pending: Vec<CircuitId> = server
            .pending
            .iter()
            .filter(|(_, p)| p.source.connection == connection || p.target.connection == connection)
            .map(|(id, _)| *id)
            .collect();
        for circuit in pending {
            let Some(server) = self.relay.as_mut() else {
                return;
            };
            if let Some(p) = server.pending.remove(&circuit) {
                let _ = server.circuits.close(circuit);
                self.abort_and_forget(p.source, CODE_CIRCUIT_PEER_GONE);
                self.abort_and_forget(p.target, CODE_CIRCUIT_PEER_GONE);
            }
        }
        let Some(server) = self.relay.as_mut() else {
            return;
        };
        let bridged: Vec<CircuitId> = server
            .bridges
            .iter()
            .filter(|(_, b)| b.ends.iter().any(|e| e.connection == connection))
            .map(|(id, _)| *id)
            .collect();
        for circuit in bridged {
            self.end_circuit(circuit, BridgeEnd::Reset);
        }
    }
}

/// Both connections of a bridge at once, in place (no moving a connection out of the map and
/// back): `None` if either is gone or they are the same connection (a peer relaying to
/// itself is refused before a bridge exists).
pub(super) fn two_mut<V>(
    map: &mut BTreeMap<ConnectionId, V>,
    a: ConnectionId,
    b: ConnectionId,
) -> Option<(&mut V, &mut V)> {
    if a == b {
        return None;
    }
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    let mut range = map.range_mut(low..=high);
    let (first_key, first) = range.next()?;
    let (last_key, last) = range.next_back()?;
    if *first_key != low || *last_key != high {
        return None;
    }
    Some(if a < b { (first, last) } else { (last, first) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mut_returns_both_entries_in_the_asked_order_or_none() {
        let mut map: BTreeMap<ConnectionId, u32> =
            (1..=5).map(|k| (ConnectionId(k), k as u32 * 10)).collect();
        let (a, b) = two_mut(&mut map, ConnectionId(4), ConnectionId(2)).expect("both present");
        assert_eq!((*a, *b), (40, 20));
        *a += 1;
        *b += 1;
        assert_eq!(map[&ConnectionId(4)], 41);
        assert_eq!(map[&ConnectionId(2)], 21);
        assert!(two_mut(&mut map, ConnectionId(3), ConnectionId(3)).is_none());
        assert!(two_mut(&mut map, ConnectionId(3), ConnectionId(9)).is_none());
        assert!(two_mut(&mut map, ConnectionId(0), ConnectionId(3)).is_none());
    }
}
