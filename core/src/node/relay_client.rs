//! The relay client role (DESIGN §4.3, §5.2): reservations on relays with renewal at three
//! quarters of their lifetime, dialing through a relay, and accepting circuits from relays that
//! hold our reservation. Relayed connections are upgraded with TLS and yamux
//! ([`super::relayed`]) and then behave like direct ones.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use multiaddr::{Multiaddr, Protocol};

use super::Node;
use super::connection::{Conn, ConnState};
use super::error::{ConnectionFailure, DialError, StreamError};
use super::event::ReservationFailureKind;
use super::ids::{ConnectionId, Direction, StreamHandle};
use super::relay_server::two_mut;
use super::relayed::{CircuitRole, RelayedTransport};
use super::stream::{Purpose, RelayRole, StreamKind};
use super::transport::{PassEnd, StreamEnd, Transport, Written};
use crate::framing::FrameError;
use crate::identity::PeerId;
use crate::relay::HOP_PROTOCOL;
use crate::relay::voucher::Voucher;
use crate::relay::wire::{
    CircuitLimit, DecodeError, HopRequest, HopResponse, Status, StopRequest, StopResponse,
};

/// Rounds of moving bytes between a relayed connection and its circuit per call: each round
/// moves at most one bounded chunk each way. A connection still moving bytes when the rounds
/// run out is marked to be pumped again.
const PUMP_ROUNDS: usize = 64;
/// Largest chunk read from a circuit stream at once.
const CIRCUIT_CHUNK: usize = 16 * 1024;
/// Most received pieces (about one per packet) one round reads from a circuit stream: more than
/// CIRCUIT_CHUNK of full-sized packets, and a bound on a round's work whatever the frame sizes.
const MAX_CIRCUIT_PIECES: usize = 64;
/// Retry delay for a renewal whose request failed while the reservation is still live.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// A reservation we hold on a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReservation {
    /// The relay.
    pub relay: PeerId,
    /// Expiry (unix seconds).
    pub expire_unix_secs: u64,
    /// Our circuit addresses through the relay.
    pub circuit_addrs: Vec<Multiaddr>,
    /// The relay's per-circuit limits.
    pub limit: Option<CircuitLimit>,
    renew_at: Instant,
}

/// The client role's state.
#[derive(Debug, Default)]
pub(crate) struct RelayClient {
    reservations: BTreeMap<ConnectionId, ClientReservation>,
    renewals: BTreeSet<(Instant, ConnectionId)>,
    in_flight: BTreeSet<ConnectionId>,
    /// Circuit dials whose CONNECT waits for stream credit on the relay connection (the key),
    /// oldest first, with the instant each gives up; each at most [`MAX_WAITING_CONNECTS`] long.
    waiting_connects: BTreeMap<ConnectionId, VecDeque<(ConnectionId, Instant)>>,
    /// When each waiting dial gives up: (deadline, relayed connection, relay connection).
    waiting_deadlines: BTreeSet<(Instant, ConnectionId, ConnectionId)>,
}

/// Circuit dials that may wait for stream credit on one relay connection. Our relays give a new
/// connection 8 streams and 32 once it uses half (one round trip later); a burst of dials
/// beyond the credit waits for it rather than failing. More than this many waiting is refused
/// at once ([`Node::dial_through_relay`] fails), so a caller cannot queue without bound.
pub const MAX_WAITING_CONNECTS: usize = 64;

impl RelayClient {
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let renewal = self.renewals.first().map(|&(at, _)| at);
        let waiting = self.waiting_deadlines.first().map(|&(at, _, _)| at);
        renewal.into_iter().chain(waiting).min()
    }
}

/// Why [`Node::reserve`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// A RESERVE is already in flight on this connection.
    #[error("a reservation request is already in flight on {0}")]
    InFlight(ConnectionId),
    /// Reservations are only made over direct connections.
    #[error("{0} is relayed; reservations need a direct connection")]
    Relayed(ConnectionId),
    /// The stream could not be opened.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl Node {
    /// Asks the relay at the other end of `connection` for a reservation (or renews ours). The
    /// answer is [`Event::ReservationAccepted`](super::Event::ReservationAccepted) or
    /// [`Event::ReservationFailed`](super::Event::ReservationFailed); an accepted reservation is
    /// renewed automatically at three quarters of its lifetime while the connection lives.
    pub fn reserve(&mut self, now: Instant, connection: ConnectionId) -> Result<(), ReserveError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        self.established(connection)?;
        if matches!(
            self.connections.get(&connection).map(|c| &c.transport),
            Some(Transport::Relayed(_))
        ) {
            return Err(ReserveError::Relayed(connection));
        }
        if self.client.in_flight.contains(&connection) {
            return Err(ReserveError::InFlight(connection));
        }
        let request = HopRequest::Reserve.encode();
        self.with_ctx(connection, |conn, ctx| {
            conn.open_outbound(
                HOP_PROTOCOL,
                Purpose::Relay {
                    role: RelayRole::Reserve,
                    request,
                },
                ctx,
            )
        })
        .flatten()
        .ok_or(StreamError::TooManyStreams(connection))?;
        self.client.in_flight.insert(connection);
        self.process(connection);
        Ok(())
    }

    /// Stops renewing our reservation over `connection` and forgets it (AutoRelay released
    /// the relay; its address was already withdrawn).
    pub(crate) fn release_reservation(&mut self, connection: ConnectionId) {
        if let Some(old) = self.client.reservations.remove(&connection) {
            self.client.renewals.remove(&(old.renew_at, connection));
        }
    }

    /// The reservation we hold over `connection`, if any.
    #[must_use]
    pub fn reservation(&self, connection: ConnectionId) -> Option<&ClientReservation> {
        self.client.reservations.get(&connection)
    }

    /// Dials `target` through the relay at the other end of `relay_connection`. The result is
    /// a new connection: [`Event::ConnectionEstablished`](super::Event::ConnectionEstablished)
    /// (with `relay` set) once TLS authenticated `target` end to end and yamux runs, or
    /// [`Event::ConnectionClosed`](super::Event::ConnectionClosed).
    ///
    /// When the relay connection has no stream credit left (our relays give a fresh connection
    /// 8 streams, 32 one round trip after it uses half), the CONNECT waits for credit, at most
    /// the request timeout; up to [`MAX_WAITING_CONNECTS`] dials may wait per relay connection,
    /// and a dial beyond that fails at once.
    pub fn dial_through_relay(
        &mut self,
        now: Instant,
        relay_connection: ConnectionId,
        target: PeerId,
    ) -> Result<ConnectionId, DialError> {
        let _tls = self.enter_tls_randomness();
        self.advance(now);
        if target == self.peer_id {
            return Err(DialError::SelfDial(target));
        }
        let Some(relay_conn) = self.connections.get(&relay_connection) else {
            return Err(DialError::Tls(format!(
                "{relay_connection} is not an open connection"
            )));
        };
        let (Some(relay_peer), Some(relay_addr), ConnState::Established) = (
            relay_conn.peer,
            relay_conn.transport.remote_address(),
            relay_conn.state,
        ) else {
            return Err(DialError::Tls(format!(
                "{relay_connection} is not an established direct connection"
            )));
        };
        let id = self.new_relayed(
            relay_connection,
            relay_peer,
            relay_addr,
            CircuitRole::Dialer,
            target,
            Direction::Outbound,
        );
        if !self.send_connect(relay_connection, id, target) {
            // No stream credit now: wait for the relay to give more (see MAX_WAITING_CONNECTS).
            let waiting = self
                .client
                .waiting_connects
                .entry(relay_connection)
                .or_default();
            if waiting.len() >= MAX_WAITING_CONNECTS {
                self.connections.remove(&id);
                return Err(DialError::Tls(format!(
                    "the relay connection {relay_connection} allows no more streams and \
                     {MAX_WAITING_CONNECTS} dials already wait for more"
                )));
            }
            let deadline = self.now + self.local.request_timeout;
            waiting.push_back((id, deadline));
            self.client
                .waiting_deadlines
                .insert((deadline, id, relay_connection));
        }
        Ok(id)
    }

    /// Opens the HOP stream carrying relayed connection `relayed`'s CONNECT to `target` on
    /// `relay_connection`; false when the relay connection has no stream credit left.
    fn send_connect(
        &mut self,
        relay_connection: ConnectionId,
        relayed: ConnectionId,
        target: PeerId,
    ) -> bool {
        let request = HopRequest::Connect { peer: target }.encode();
        let opened = self
            .with_ctx(relay_connection, |conn, ctx| {
                conn.open_outbound(
                    HOP_PROTOCOL,
                    Purpose::Relay {
                        role: RelayRole::Connect { relayed },
                        request,
                    },
                    ctx,
                )
            })
            .flatten()
            .is_some();
        if opened {
            self.process(relay_connection);
        }
        opened
    }

    /// The relay gave more stream credit on `relay_connection`: sends the CONNECTs that waited
    /// for it, oldest first, while the credit lasts.
    pub(crate) fn open_waiting_connects(&mut self, relay_connection: ConnectionId) {
        // Each turn removes one waiting dial (or stops), so this ends.
        loop {
            let Some((relayed, deadline)) = self
                .client
                .waiting_connects
                .get_mut(&relay_connection)
                .and_then(VecDeque::pop_front)
            else {
                self.client.waiting_connects.remove(&relay_connection);
                return;
            };
            let waited = (deadline, relayed, relay_connection);
            let Some(target) = self
                .connections
                .get(&relayed)
                .and_then(|c| match &c.transport {
                    Transport::Relayed(r) => Some(r.remote),
                    Transport::Quic(_) => None,
                })
            else {
                // Closed by the application meanwhile.
                self.client.waiting_deadlines.remove(&waited);
                continue;
            };
            if !self.send_connect(relay_connection, relayed, target) {
                if let Some(waiting) = self.client.waiting_connects.get_mut(&relay_connection) {
                    waiting.push_front((relayed, deadline));
                }
                return;
            }
            self.client.waiting_deadlines.remove(&waited);
        }
    }

    fn new_relayed(
        &mut self,
        relay_conn: ConnectionId,
        relay_peer: PeerId,
        relay_addr: std::net::SocketAddr,
        role: CircuitRole,
        remote: PeerId,
        direction: Direction,
    ) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        let transport = RelayedTransport::new(
            relay_conn,
            relay_peer,
            relay_addr,
            role,
            remote,
            super::relayed::CircuitTls {
                identity: self.tls.clone(),
                clock: self.clock.clone(),
                provider: self.tls_provider.clone(),
            },
            {
                let mut yamux = crate::yamux::YamuxConfig::default();
                yamux.max_stream_window(self.local.config.relayed_stream_window);
                yamux
            },
        );
        let expected = (role == CircuitRole::Dialer).then_some(remote);
        self.connections.insert(
            id,
            Box::new(Conn::new(
                Transport::Relayed(Box::new(transport)),
                direction,
                expected,
                None,
            )),
        );
        id
    }

    /// The relay answered our RESERVE.
    pub(crate) fn on_reserve_response(
        &mut self,
        stream: StreamHandle,
        frame: Result<Bytes, FrameError>,
    ) {
        let connection = stream.connection;
        self.client.in_flight.remove(&connection);
        self.reply_and_close(stream, Bytes::new());
        let Some(relay) = self.connection_peer(connection) else {
            return;
        };
        let response = frame
            .map_err(DecodeError::from)
            .and_then(HopResponse::decode);
        let other = ReservationFailureKind::Other;
        let outcome = match response {
            Err(error) => Err((format!("bad answer from the relay: {error}"), other)),
            Ok(HopResponse { status, .. }) if status != Status::Ok => Err((
                format!("refused with {status:?}"),
                ReservationFailureKind::Refused(status),
            )),
            Ok(HopResponse {
                reservation: None, ..
            }) => Err(("OK without a reservation".to_owned(), other)),
            Ok(HopResponse {
                reservation: Some(info),
                limit,
                ..
            }) => self
                .check_reservation(relay, info, limit)
                .map_err(|reason| (reason, other)),
        };
        let had = self.client.reservations.contains_key(&connection);
        match outcome {
            Ok(reservation) => {
                let event = super::Event::ReservationAccepted {
                    connection,
                    relay,
                    expire_unix_secs: reservation.expire_unix_secs,
                    circuit_addrs: reservation.circuit_addrs.clone(),
                    limit: reservation.limit,
                    renewed: had,
                };
                if let Some(old) = self
                    .client
                    .reservations
                    .insert(connection, reservation.clone())
                {
                    self.client.renewals.remove(&(old.renew_at, connection));
                }
                self.client
                    .renewals
                    .insert((reservation.renew_at, connection));
                self.events.push(event);
            }
            Err((reason, kind)) => {
                self.events.push(super::Event::ReservationFailed {
                    connection,
                    relay,
                    reason: reason.clone(),
                    kind,
                });
                if let Some(old) = self.client.reservations.remove(&connection) {
                    self.client.renewals.remove(&(old.renew_at, connection));
                    self.events.push(super::Event::ReservationLost {
                        connection,
                        relay,
                        reason: format!("renewal failed: {reason}"),
                    });
                }
            }
        }
    }

    fn check_reservation(
        &self,
        relay: PeerId,
        info: crate::relay::wire::ReservationInfo,
        limit: Option<CircuitLimit>,
    ) -> Result<ClientReservation, String> {
        let now_unix = self.clock.unix_secs();
        if info.expire_unix_secs <= now_unix {
            return Err(format!(
                "reservation already expired ({} <= now {now_unix})",
                info.expire_unix_secs
            ));
        }
        if let Some(voucher) = &info.voucher {
            Voucher::verify_for(voucher, &relay, &self.peer_id, now_unix)
                .map_err(|e| format!("bad voucher: {e}"))?;
        }
        let circuit_addrs: Vec<Multiaddr> = info
            .addrs
            .into_iter()
            .map(|addr| {
                let addr = if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                    addr
                } else {
                    addr.with(Protocol::P2p(relay))
                };
                addr.with(Protocol::P2pCircuit)
            })
            .collect();
        if circuit_addrs.is_empty() {
            return Err("reservation without addresses".into());
        }
        let lifetime = Duration::from_secs(info.expire_unix_secs - now_unix);
        Ok(ClientReservation {
            relay,
            expire_unix_secs: info.expire_unix_secs,
            circuit_addrs,
            limit,
            renew_at: self.now + lifetime * 3 / 4,
        })
    }

    /// A client-side relay stream failed before its answer arrived.
    pub(crate) fn on_relay_client_stream_failed(
        &mut self,
        stream: StreamHandle,
        role: RelayRole,
        unsupported: bool,
        reason: String,
    ) {
        match role {
            RelayRole::Reserve => {
                let connection = stream.connection;
                self.client.in_flight.remove(&connection);
                if let Some(relay) = self.connection_peer(connection) {
                    self.events.push(super::Event::ReservationFailed {
                        connection,
                        relay,
                        reason: reason.clone(),
                        kind: if unsupported {
                            ReservationFailureKind::HopUnsupported
                        } else {
                            ReservationFailureKind::Other
                        },
                    });
                    if let Some(reservation) = self.client.reservations.get(&connection).cloned() {
                        // Still live: retry the renewal soon rather than lose it.
                        self.client
                            .renewals
                            .remove(&(reservation.renew_at, connection));
                        let retry = self.now + RENEW_RETRY;
                        self.client.renewals.insert((retry, connection));
                        if let Some(r) = self.client.reservations.get_mut(&connection) {
                            r.renew_at = retry;
                        }
                    }
                }
            }
            RelayRole::Connect { relayed } => {
                self.fail_relayed(relayed, format!("circuit request failed: {reason}"));
            }
            RelayRole::StopServe => {}
            _ => {}
        }
        self.abort_and_forget(stream, super::connection::CODE_PROTOCOL_ERROR);
    }

    /// The relay answered our CONNECT.
    pub(crate) fn on_connect_response(
        &mut self,
        stream: StreamHandle,
        relayed: ConnectionId,
        frame: Result<Bytes, FrameError>,
        rest: BytesMut,
    ) {
        let response = frame
            .map_err(DecodeError::from)
            .and_then(HopResponse::decode);
        match response {
            Ok(HopResponse {
                status: Status::Ok, ..
            }) => self.start_circuit(stream, relayed, rest.freeze()),
            Ok(HopResponse { status, .. }) => {
                self.reply_and_close(stream, Bytes::new());
                self.fail_relayed(relayed, format!("relay refused the circuit: {status:?}"));
            }
            Err(error) => {
                self.reply_and_close(stream, Bytes::new());
                self.fail_relayed(relayed, format!("bad answer from the relay: {error}"));
            }
        }
    }

    /// A relay opened STOP toward us.
    pub(crate) fn on_stop_request(
        &mut self,
        stream: StreamHandle,
        frame: Result<Bytes, FrameError>,
        rest: BytesMut,
    ) {
        let request = frame
            .map_err(DecodeError::from)
            .and_then(StopRequest::decode);
        let source = match request {
            Ok(StopRequest::Connect { source, .. }) => source,
            Err(error) => {
                self.reply_and_close(
                    stream,
                    StopResponse {
                        status: error.status(),
                    }
                    .encode(),
                );
                return;
            }
        };
        // Only a relay holding our reservation may connect peers to us (DESIGN §4.3).
        if !self.client.reservations.contains_key(&stream.connection) {
            self.reply_and_close(
                stream,
                StopResponse {
                    status: Status::PermissionDenied,
                }
                .encode(),
            );
            return;
        }
        let Some(relay_conn) = self.connections.get(&stream.connection) else {
            return;
        };
        let (Some(relay_peer), Some(relay_addr)) =
            (relay_conn.peer, relay_conn.transport.remote_address())
        else {
            return;
        };
        let id = self.new_relayed(
            stream.connection,
            relay_peer,
            relay_addr,
            CircuitRole::Listener,
            source,
            Direction::Inbound,
        );
        if let Some(conn) = self.connections.get_mut(&stream.connection) {
            if let Some(entry) = conn.streams.get_mut(&stream.id) {
                entry
                    .pending_write
                    .extend_from_slice(&StopResponse { status: Status::Ok }.encode());
            }
            conn.flush(stream.id);
        }
        self.start_circuit(stream, id, rest.freeze());
    }

    /// The circuit stream is open: hand it to the relayed connection and start the upgrade.
    fn start_circuit(&mut self, stream: StreamHandle, relayed: ConnectionId, rest: Bytes) {
        if let Some(entry) = self
            .connections
            .get_mut(&stream.connection)
            .and_then(|c| c.streams.get_mut(&stream.id))
        {
            entry.kind = StreamKind::Circuit { relayed };
        }
        let started = match self.connections.get_mut(&relayed).map(|c| &mut c.transport) {
            Some(Transport::Relayed(r)) => r.start(stream.id).and_then(|()| {
                if rest.is_empty() {
                    Ok(())
                } else {
                    r.handle_circuit_input(&rest)
                }
            }),
            _ => {
                self.abort_and_forget(stream, super::connection::CODE_PROTOCOL_ERROR);
                return;
            }
        };
        match started {
            Ok(()) => self.pump_relayed(relayed),
            Err(error) => self.fail_relayed(relayed, error.to_string()),
        }
    }

    /// Moves bytes between a relayed connection and its circuit stream, and runs the
    /// relayed connection's protocol events.
    pub(crate) fn pump_relayed(&mut self, relayed: ConnectionId) {
        for _ in 0..PUMP_ROUNDS {
            let Some(Transport::Relayed(r)) = self.connections.get(&relayed).map(|c| &c.transport)
            else {
                return;
            };
            let (relay_conn, Some(circuit), capacity) =
                (r.relay_conn, r.circuit, r.input_capacity())
            else {
                return;
            };
            let mut progress = false;
            // 1. Circuit bytes in, as far as the upgrade layers take them: the pieces waiting
            //    (about one per packet), up to CIRCUIT_CHUNK, in one pass over the circuit
            //    stream, each fed to TLS where quinn-proto holds it.
            let budget = capacity.min(CIRCUIT_CHUNK);
            if budget > 0 {
                let pass = match two_mut(&mut self.connections, relay_conn, relayed) {
                    Some((relay, conn)) => match &mut conn.transport {
                        Transport::Relayed(r) => relay.transport.read_each(
                            circuit,
                            budget,
                            MAX_CIRCUIT_PIECES,
                            |piece| r.handle_circuit_input(&piece),
                        ),
                        Transport::Quic(_) => return,
                    },
                    // The relay connection is gone (the relayed one is checked above).
                    None => Ok((0, PassEnd::Closed)),
                };
                let fed = match pass {
                    Err(error) => Err(error),
                    Ok((read, end)) => {
                        progress |= read > 0;
                        match (end, self.relayed_mut(relayed)) {
                            (_, None) => return,
                            (PassEnd::Waiting, _) => Ok(()),
                            (PassEnd::Ended(StreamEnd::Finished), Some(r)) => {
                                progress = true;
                                r.handle_circuit_end()
                            }
                            (PassEnd::Ended(StreamEnd::Reset(code)), _) => {
                                Err(super::relayed::CircuitFailure::CircuitEnded(format!(
                                    "circuit stream reset (code {code})"
                                )))
                            }
                            (PassEnd::Closed, _) => {
                                Err(super::relayed::CircuitFailure::CircuitEnded(
                                    "relay connection gone".into(),
                                ))
                            }
                        }
                    }
                };
                if let Err(error) = fed {
                    self.fail_relayed(relayed, error.to_string());
                    return;
                }
            }
            // 2. Through the layers, then the relayed connection's protocol events (which may
            //    write), then through the layers again so those writes leave in this round.
            for pass in 0..2 {
                match self.relayed_mut(relayed).map(|r| r.pump()) {
                    Some(Ok(moved)) => progress |= moved,
                    Some(Err(error)) => {
                        self.fail_relayed(relayed, error.to_string());
                        return;
                    }
                    None => return,
                }
                if pass == 0 {
                    self.with_ctx(relayed, |conn, ctx| conn.drive(ctx));
                }
            }
            // 3. Out to the circuit stream.
            let mut out = match self.relayed_mut(relayed) {
                Some(r) => r.take_circuit_output(),
                None => return,
            };
            if !out.is_empty() {
                let written = match self.connections.get_mut(&relay_conn) {
                    Some(conn) => conn.transport.write_bytes(circuit, &mut out),
                    None => Written::Closed,
                };
                match written {
                    Written::Bytes(n) => progress |= n > 0,
                    Written::Stopped(_) | Written::Closed => {
                        self.fail_relayed(relayed, "circuit stream closed by the relay".into());
                        return;
                    }
                }
                if let Some(r) = self.relayed_mut(relayed) {
                    r.untake_circuit_output(out);
                }
                self.dirty.insert(relay_conn);
            }
            if !progress {
                return;
            }
        }
        // The round budget ran out while bytes were still moving: more may be waiting, in a
        // layer no later event would wake (the circuit's last bytes and its end, when the
        // sender has nothing more to send). `poll_output` pumps it again before it returns,
        // and that ends: each pump moves only bytes already buffered.
        self.relayed_dirty.insert(relayed);
    }

    fn relayed_mut(&mut self, relayed: ConnectionId) -> Option<&mut RelayedTransport> {
        match self.connections.get_mut(&relayed).map(|c| &mut c.transport) {
            Some(Transport::Relayed(r)) => Some(r),
            _ => None,
        }
    }

    /// Ends a relayed connection: reports it, resets its circuit stream, forgets it.
    pub(crate) fn fail_relayed(&mut self, relayed: ConnectionId, reason: String) {
        self.with_ctx(relayed, |conn, ctx| {
            conn.report_closed(ConnectionFailure::Relayed(reason), ctx);
        });
        self.forget_relayed(relayed, false);
    }

    /// Removes a relayed connection that is closed, and its circuit stream: finished after
    /// the last bytes (yamux go-away, TLS close_notify) when `graceful`, reset otherwise.
    pub(crate) fn forget_relayed(&mut self, relayed: ConnectionId, graceful: bool) {
        let Some(mut conn) = self.connections.remove(&relayed) else {
            return;
        };
        // Its timer (a stream deadline), its dirty mark.
        self.forget_connection(relayed, &mut conn);
        self.relayed_dirty.remove(&relayed);
        let Transport::Relayed(mut r) = conn.transport else {
            return;
        };
        let Some(circuit) = r.circuit else { return };
        let stream = StreamHandle {
            connection: r.relay_conn,
            id: circuit,
        };
        if !graceful {
            self.abort_and_forget(stream, super::connection::CODE_CANCELLED);
            return;
        }
        let last = r.take_all_circuit_output();
        self.reply_and_close(stream, last);
    }

    /// Renewals due by `now`.
    pub(crate) fn client_timeouts(&mut self, now: Instant) {
        while let Some(&(at, relayed, relay_connection)) = self.client.waiting_deadlines.first() {
            if at > now {
                break;
            }
            self.client
                .waiting_deadlines
                .remove(&(at, relayed, relay_connection));
            if let Some(waiting) = self.client.waiting_connects.get_mut(&relay_connection) {
                waiting.retain(|&(r, _)| r != relayed);
            }
            self.fail_relayed(
                relayed,
                format!(
                    "the relay connection {relay_connection} gave no stream for the CONNECT \
                     within the request timeout"
                ),
            );
        }
        while let Some(&(at, connection)) = self.client.renewals.first() {
            if at > now {
                break;
            }
            self.client.renewals.remove(&(at, connection));
            if self.reserve(now, connection).is_err()
                && let Some(reservation) = self.client.reservations.get(&connection).cloned()
            {
                // Could not even send the renewal; keep trying while the reservation lives.
                let retry = now + RENEW_RETRY;
                self.client.renewals.insert((retry, connection));
                if let Some(r) = self.client.reservations.get_mut(&connection) {
                    r.renew_at = retry;
                }
                let _ = reservation;
            }
        }
    }

    /// A connection closed: reservations over it are lost, relayed connections over it end.
    pub(crate) fn client_connection_closed(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
    ) {
        self.client.in_flight.remove(&connection);
        // The waiting relayed connections themselves fail below with the others over it.
        for (relayed, deadline) in self
            .client
            .waiting_connects
            .remove(&connection)
            .unwrap_or_default()
        {
            self.client
                .waiting_deadlines
                .remove(&(deadline, relayed, connection));
        }
        if let Some(reservation) = self.client.reservations.remove(&connection) {
            self.client
                .renewals
                .remove(&(reservation.renew_at, connection));
            self.events.push(super::Event::ReservationLost {
                connection,
                relay: peer.unwrap_or(reservation.relay),
                reason: "relay connection closed".into(),
            });
        }
        // Every connection that is not direct is relayed (`by_handle` indexes the direct ones):
        // a node with none, such as a relay, skips the walk over all its connections, which
        // would make closing all of them (a drain, a partition) quadratic.
        let any_relayed = self.connections.len() > self.by_handle.len();
        let over: Vec<ConnectionId> = if any_relayed {
            self.connections
                .iter()
                .filter(|(_, c)| matches!(&c.transport, Transport::Relayed(r) if r.relay_conn == connection))
                .map(|(id, _)| *id)
                .collect()
        } else {
            Vec::new()
        };
        for relayed in over {
            self.fail_relayed(relayed, "relay connection closed".into());
        }
        if matches!(
            self.connections.get(&connection).map(|c| &c.transport),
            Some(Transport::Relayed(_))
        ) {
            self.forget_relayed(connection, true);
        }
    }
}
