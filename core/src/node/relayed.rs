//! A relayed connection's transport: the byte stream of a circuit, upgraded like a raw
//! connection (DESIGN §4.3): multistream-select `/tls/1.0.0` → TLS 1.3 with libp2p
//! certificates (the remote PeerId is authenticated end to end; the relay sees ciphertext) →
//! multistream-select `/yamux/1.0.0` inside TLS → yamux, whose streams carry the same
//! protocols as QUIC streams do.
//!
//! The node moves bytes between this transport and the circuit stream on the relay
//! connection; see `Node::pump_relayed`.

use bytes::{Bytes, BytesMut};

use super::chunk_queue::ChunkQueue;
use super::ids::ConnectionId;
use super::stream::Negotiation;
use super::transport::StreamKey;
use crate::identity::PeerId;
use crate::multistream::{Dialer, Listener, Progress};
use crate::tls::{Plaintext, SecureStream, SecureStreamError, SecureStreamEvent, TlsIdentity};
use crate::wallclock::WallClock;
use crate::yamux::{Mode, Session, YamuxConfig};

/// Protocol id of the TLS upgrade on a raw stream.
pub const TLS_PROTOCOL: &str = "/tls/1.0.0";
/// Protocol id of the yamux upgrade inside TLS.
pub const YAMUX_PROTOCOL: &str = "/yamux/1.0.0";

/// Most bytes read from TLS into yamux per pump round: yamux buffers at most its windows, this
/// only keeps one round's work small.
const PLAINTEXT_CHUNK: usize = 16 * 1024;
/// Most bytes the pre-TLS negotiation may take from the circuit at once.
const NEGOTIATION_INPUT: usize = 4096;
/// Most bytes waiting for the circuit stream before TLS output is left inside TLS (whose own
/// buffer then refuses writes, pushing back on yamux and the application).
const MAX_TO_CIRCUIT: usize = 64 * 1024;
/// Plaintext bytes a TLS 1.3 record carries at most.
const RECORD_PLAINTEXT: usize = 16 * 1024;
/// Bytes a TLS 1.3 record adds to its plaintext with AES-GCM: header, content type, tag.
const RECORD_OVERHEAD: usize = 5 + 1 + 16;
/// Most yamux output waiting for TLS before yamux output is left inside yamux.
const MAX_PLAINTEXT_OUT: usize = 64 * 1024;

/// What a circuit's TLS upgrade needs: our certificate, the clock, the crypto provider.
#[derive(Clone)]
pub(crate) struct CircuitTls {
    pub(crate) identity: TlsIdentity,
    pub(crate) clock: WallClock,
    pub(crate) provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

/// Who dialed the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CircuitRole {
    /// We sent HOP CONNECT; we are the TLS client and expect `peer`.
    Dialer,
    /// We accepted a STOP CONNECT; we are the TLS server.
    Listener,
}

/// Why a circuit's upgrade or transport failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CircuitFailure {
    /// The relay refused the circuit with this status.
    #[error("relay refused the circuit: {0:?}")]
    Refused(crate::relay::wire::Status),
    /// The relay's answer could not be used.
    #[error("relay answered badly: {0}")]
    BadRelayAnswer(String),
    /// Negotiating `/tls/1.0.0` or `/yamux/1.0.0` failed.
    #[error("upgrade negotiation failed: {0}")]
    Negotiation(#[from] crate::multistream::NegotiationError),
    /// TLS failed (includes a certificate refusal, e.g. a PeerId mismatch).
    #[error("TLS on the circuit failed: {0}")]
    Tls(#[from] SecureStreamError),
    /// yamux failed.
    #[error("yamux on the circuit failed: {0}")]
    Yamux(String),
    /// The circuit stream ended or was reset (relay gone, limit hit, peer gone).
    #[error("circuit stream ended: {0}")]
    CircuitEnded(String),
}

enum Inner {
    Negotiating(Negotiation),
    Yamux(Box<Session>),
}

enum Stage {
    /// Dialer only: HOP CONNECT sent, the relay has not answered yet.
    AwaitingRelay,
    /// Negotiating `/tls/1.0.0` in the clear.
    Outer(Negotiation),
    /// TLS running; inside it, yamux negotiation then yamux.
    Secure {
        tls: Box<SecureStream>,
        inner: Inner,
    },
}

/// The transport of a relayed connection.
pub(crate) struct RelayedTransport {
    /// The direct connection to the relay carrying the circuit.
    pub(crate) relay_conn: ConnectionId,
    /// The relay's PeerId.
    pub(crate) relay_peer: PeerId,
    /// The relay's UDP address (reported as the connection's remote address).
    pub(crate) relay_addr: std::net::SocketAddr,
    /// The circuit stream on `relay_conn` (our HOP stream as dialer, the STOP stream as
    /// listener). `None` until the relay accepted (dialer).
    pub(crate) circuit: Option<StreamKey>,
    pub(crate) role: CircuitRole,
    /// The remote peer: expected (dialer) or announced by the relay (listener).
    pub(crate) remote: PeerId,
    stage: Stage,
    tls: CircuitTls,
    yamux_config: YamuxConfig,
    /// Bytes for the circuit stream (negotiation lines, then TLS records), in order, after
    /// `circuit_pending`.
    pub(crate) to_circuit: BytesMut,
    /// Bytes taken out for the circuit stream that it has not accepted yet (flow control).
    /// They go first; kept apart from `to_circuit` so they are handed back without a copy.
    circuit_pending: Bytes,
    /// Plaintext (negotiation lines, then yamux frames) that TLS has not taken yet, as the
    /// chunks it was produced in: TLS takes them without their being copied together.
    plaintext_out: ChunkQueue,
    /// The peer's TLS identity, once the handshake completed.
    authenticated: Option<PeerId>,
}

impl RelayedTransport {
    pub(crate) fn new(
        relay_conn: ConnectionId,
        relay_peer: PeerId,
        relay_addr: std::net::SocketAddr,
        role: CircuitRole,
        remote: PeerId,
        tls: CircuitTls,
        yamux_config: YamuxConfig,
    ) -> Self {
        Self {
            relay_conn,
            relay_peer,
            relay_addr,
            circuit: None,
            role,
            remote,
            stage: Stage::AwaitingRelay,
            tls,
            yamux_config,
            to_circuit: BytesMut::new(),
            circuit_pending: Bytes::new(),
            plaintext_out: ChunkQueue::default(),
            authenticated: None,
        }
    }

    /// The yamux session, once running.
    pub(crate) fn yamux_mut(&mut self) -> Option<&mut Session> {
        match &mut self.stage {
            Stage::Secure {
                inner: Inner::Yamux(session),
                ..
            } => Some(session),
            _ => None,
        }
    }

    /// The authenticated remote peer, once TLS completed.
    pub(crate) fn authenticated_peer(&self) -> Option<PeerId> {
        self.authenticated
    }

    /// Ready for application streams: TLS authenticated the peer and yamux runs.
    pub(crate) fn is_ready(&self) -> bool {
        self.authenticated.is_some()
            && matches!(
                self.stage,
                Stage::Secure {
                    inner: Inner::Yamux(_),
                    ..
                }
            )
    }

    /// The circuit is open (the relay's STATUS OK, or our STOP reply): start upgrading.
    pub(crate) fn start(&mut self, circuit: StreamKey) -> Result<(), CircuitFailure> {
        self.circuit = Some(circuit);
        let mut negotiation = match self.role {
            CircuitRole::Dialer => Negotiation::Dialer(
                Dialer::new([TLS_PROTOCOL]).expect("TLS_PROTOCOL is a valid protocol id"),
            ),
            CircuitRole::Listener => {
                Negotiation::Listener(Listener::new(vec![TLS_PROTOCOL.to_owned()]))
            }
        };
        while let Some(out) = negotiation.poll_output() {
            self.to_circuit.extend_from_slice(&out);
        }
        self.stage = Stage::Outer(negotiation);
        Ok(())
    }

    /// How many circuit bytes the transport can take now (0: stop reading the circuit).
    pub(crate) fn input_capacity(&self) -> usize {
        match &self.stage {
            Stage::Outer(_) => NEGOTIATION_INPUT,
            Stage::Secure { tls, .. } => tls.input_capacity(),
            Stage::AwaitingRelay => 0,
        }
    }

    /// Closes the relayed connection: yamux go-away, TLS close_notify.
    pub(crate) fn close(&mut self) {
        if let Some(session) = self.yamux_mut() {
            session.close();
        }
        // Flush yamux's go-away into TLS; errors here only mean the circuit is already dead.
        let _ = self.pump();
        if let Stage::Secure { tls, .. } = &mut self.stage {
            tls.close();
        }
        let _ = self.pump();
    }

    /// Feeds bytes read from the circuit stream (at most [`Self::input_capacity`]).
    pub(crate) fn handle_circuit_input(&mut self, data: &[u8]) -> Result<(), CircuitFailure> {
        match &mut self.stage {
            Stage::Outer(negotiation) => {
                let progress = negotiation.handle_input(data);
                while let Some(out) = negotiation.poll_output() {
                    self.to_circuit.extend_from_slice(&out);
                }
                match progress? {
                    Progress::Pending => Ok(()),
                    Progress::Negotiated(negotiated) => {
                        self.start_tls()?;
                        if negotiated.remaining.is_empty() {
                            Ok(())
                        } else {
                            self.handle_circuit_input(&negotiated.remaining)
                        }
                    }
                }
            }
            Stage::Secure { tls, .. } => Ok(tls.handle_input(data)?),
            Stage::AwaitingRelay => Ok(()),
        }
    }

    /// The circuit stream ended cleanly (the peer finished it).
    pub(crate) fn handle_circuit_end(&mut self) -> Result<(), CircuitFailure> {
        match &mut self.stage {
            Stage::Secure { tls, .. } => Ok(tls.handle_end_of_input()?),
            _ => Err(CircuitFailure::CircuitEnded(
                "finished before the upgrade completed".into(),
            )),
        }
    }

    fn start_tls(&mut self) -> Result<(), CircuitFailure> {
        let tls = match self.role {
            CircuitRole::Dialer => SecureStream::client_with_provider(
                &self.tls.identity,
                self.tls.clock.clone(),
                self.remote,
                self.tls.provider.clone(),
            ),
            CircuitRole::Listener => SecureStream::server_with_provider(
                &self.tls.identity,
                self.tls.clock.clone(),
                self.tls.provider.clone(),
            ),
        }
        .map_err(|e| CircuitFailure::Tls(SecureStreamError::Buffering(e.to_string())))?;
        let mut inner = match self.role {
            CircuitRole::Dialer => Negotiation::Dialer(
                Dialer::new([YAMUX_PROTOCOL]).expect("YAMUX_PROTOCOL is a valid protocol id"),
            ),
            CircuitRole::Listener => {
                Negotiation::Listener(Listener::new(vec![YAMUX_PROTOCOL.to_owned()]))
            }
        };
        let mut tls = Box::new(tls);
        while let Some(out) = inner.poll_output() {
            // Written before the handshake completes; SecureStream sends it once it can.
            let mut rest = &out[..];
            while !rest.is_empty() {
                let n = tls.write(rest)?;
                if n == 0 {
                    self.plaintext_out.push(Bytes::copy_from_slice(rest));
                    break;
                }
                rest = &rest[n..];
            }
        }
        self.stage = Stage::Secure {
            tls,
            inner: Inner::Negotiating(inner),
        };
        Ok(())
    }

    /// Moves bytes through the layers: TLS plaintext into yamux (or its negotiation), yamux
    /// output into TLS, TLS records toward the circuit. Returns whether anything moved.
    pub(crate) fn pump(&mut self) -> Result<bool, CircuitFailure> {
        let Stage::Secure { tls, inner } = &mut self.stage else {
            return Ok(false);
        };
        let mut moved = false;
        while let Some(event) = tls.poll_event() {
            if let SecureStreamEvent::HandshakeComplete { peer } = event {
                self.authenticated = Some(peer);
                moved = true;
            }
        }
        // Plaintext in. Bounded: each read takes bytes out of TLS's bounded buffer.
        loop {
            if let Inner::Yamux(session) = inner
                && session.is_terminated()
            {
                return Err(CircuitFailure::Yamux("session terminated".into()));
            }
            // yamux takes the plaintext where TLS holds it; the negotiation gets a copy.
            let read = match inner {
                Inner::Yamux(session) => tls
                    .read_with(PLAINTEXT_CHUNK, |data| session.handle_input(data))?
                    .map(|()| None),
                Inner::Negotiating(_) => tls
                    .read_with(PLAINTEXT_CHUNK, Bytes::copy_from_slice)?
                    .map(Some),
            };
            match read {
                Plaintext::Taken(None) => moved = true,
                Plaintext::Taken(Some(data)) => {
                    moved = true;
                    if let Inner::Negotiating(negotiation) = inner {
                        let progress = negotiation.handle_input(&data);
                        while let Some(out) = negotiation.poll_output() {
                            self.plaintext_out.push(out);
                        }
                        if let Progress::Negotiated(negotiated) = progress? {
                            let mode = match self.role {
                                CircuitRole::Dialer => Mode::Client,
                                CircuitRole::Listener => Mode::Server,
                            };
                            let mut session =
                                Box::new(Session::new(mode, self.yamux_config.clone()));
                            session.handle_input(&negotiated.remaining);
                            *inner = Inner::Yamux(session);
                        }
                    }
                }
                Plaintext::Blocked => break,
                Plaintext::Finished => {
                    if let Inner::Yamux(session) = inner {
                        session.close();
                    }
                    return Err(CircuitFailure::CircuitEnded("peer closed TLS".into()));
                }
            }
        }
        // Plaintext out: yamux frames, then into TLS as far as it takes them.
        // Gathered first, so TLS cuts full records rather than one per yamux frame (a frame is
        // 12 bytes longer than a record holds).
        // All of it at once (yamux clears its control-frame backlog only once its output was
        // taken in full), as pieces: payloads the application handed over as `Bytes` stay
        // uncopied until TLS encrypts them.
        if let Inner::Yamux(session) = inner
            && self.plaintext_out.len() < MAX_PLAINTEXT_OUT
        {
            while let Some(out) = session.poll_output() {
                self.plaintext_out.push(out);
                moved = true;
            }
        }
        let encrypted = self
            .plaintext_out
            .write_with(|slices| tls.write_vectored(slices))?;
        moved |= encrypted > 0;
        if self.to_circuit.len() + self.circuit_pending.len() < MAX_TO_CIRCUIT {
            // Room for the records just cut, so the buffer (emptied each time the circuit takes
            // it) is not grown by doubling, a copy per step.
            self.to_circuit
                .reserve(encrypted + encrypted.div_ceil(RECORD_PLAINTEXT) * RECORD_OVERHEAD);
            moved |= tls.write_output_into(&mut self.to_circuit);
        }
        Ok(moved)
    }

    /// Takes the next bytes for the circuit stream: what it did not accept last time, else
    /// everything produced since. Hand back what it does not take now with
    /// [`Self::untake_circuit_output`].
    pub(crate) fn take_circuit_output(&mut self) -> Bytes {
        if self.circuit_pending.is_empty() {
            self.circuit_pending = self.to_circuit.split().freeze();
        }
        std::mem::take(&mut self.circuit_pending)
    }

    /// Takes every byte waiting for the circuit stream, in order (the last flush of a closing
    /// connection).
    pub(crate) fn take_all_circuit_output(&mut self) -> Bytes {
        let pending = std::mem::take(&mut self.circuit_pending);
        if pending.is_empty() {
            return self.to_circuit.split().freeze();
        }
        if self.to_circuit.is_empty() {
            return pending;
        }
        let mut joined = BytesMut::with_capacity(pending.len() + self.to_circuit.len());
        joined.extend_from_slice(&pending);
        joined.extend_from_slice(&self.to_circuit.split());
        joined.freeze()
    }

    /// Hands back what the circuit stream did not take of [`Self::take_circuit_output`]; it goes
    /// first next time. No copy: the bytes are kept as they are.
    pub(crate) fn untake_circuit_output(&mut self, rest: Bytes) {
        if rest.is_empty() {
            return;
        }
        if self.circuit_pending.is_empty() {
            self.circuit_pending = rest;
        } else {
            // Only if something was taken twice without handing back in between.
            let mut joined = BytesMut::with_capacity(rest.len() + self.circuit_pending.len());
            joined.extend_from_slice(&rest);
            joined.extend_from_slice(&self.circuit_pending);
            self.circuit_pending = joined.freeze();
        }
    }
}
