//! [`SecureStream`]: TLS 1.3 over an ordered byte stream, sans-IO — the `/tls/1.0.0` upgrade of a
//! relayed circuit (DESIGN §4.3).
//!
//! After a circuit is bridged, the two peers negotiate `/tls/1.0.0` with multistream-select and
//! run a libp2p TLS handshake over the relayed bytes, so the remote PeerId is authenticated end to
//! end and the relay only ever sees ciphertext. Then `/yamux/1.0.0` is negotiated *inside* the
//! TLS stream with multistream-select.
//!
//! # ALPN
//!
//! Both sides use ALPN `libp2p` (the configs of [`super::client_config`] /
//! [`super::server_config`]), exactly as rust-libp2p's `libp2p-tls` does on `/tls/1.0.0` (its
//! `make_client_config` / `make_server_config` serve QUIC and the stream upgrade alike). go-libp2p
//! offers its muxers followed by `libp2p` ("inlined muxer negotiation"); our server prefers only
//! `libp2p`, so it selects `libp2p` and the muxer is negotiated by multistream-select afterwards,
//! which every libp2p implementation supports. A client offering ALPN without `libp2p` is refused
//! (`NoApplicationProtocol`); a client sending no ALPN extension at all is accepted.
//!
//! # Driving a `SecureStream`
//!
//! The same four kinds of method as the rest of the core (DESIGN §3):
//!
//! - **input**: [`SecureStream::handle_input`] takes ciphertext received from the circuit, split
//!   anywhere, but never more than [`SecureStream::input_capacity`] bytes at a time;
//!   [`SecureStream::handle_end_of_input`] says the circuit ended.
//! - **commands**: [`SecureStream::write`] and [`SecureStream::write_vectored`] (plaintext,
//!   return how much was accepted), [`SecureStream::read`] and [`SecureStream::read_with`] (the
//!   latter hands the plaintext to a closure where rustls holds it), [`SecureStream::close`]
//!   (sends `close_notify`).
//! - **outputs**: [`SecureStream::poll_output`] (ciphertext to send on the circuit) and
//!   [`SecureStream::poll_event`]. After any input or command, drain both until `None`.
//! - **getters**: [`SecureStream::peer_id`], [`SecureStream::is_handshaking`],
//!   [`SecureStream::input_capacity`], [`SecureStream::unread_plaintext`],
//!   [`SecureStream::failure`].
//!
//! # Bounds and backpressure
//!
//! - *Received ciphertext* waits in a queue of at most [`MAX_PENDING_CIPHERTEXT`] bytes. The
//!   stream hands rustls only as much of it as rustls needs while the unread plaintext is below
//!   [`READ_AHEAD`]; the rest stays queued. The caller must not feed more than
//!   [`SecureStream::input_capacity`] (a larger input is refused whole, see
//!   [`SecureStreamError::InputLimitExceeded`]): a caller reading from a QUIC stream reads at most
//!   that much, so a slow reader of the plaintext backpressures the remote peer through QUIC flow
//!   control. Capacity comes back when the application [`read`](SecureStream::read)s.
//! - *Unread plaintext* stays below [`READ_AHEAD`] plus what one rustls read can complete
//!   (at most 64 KiB, rustls' own deframer window), whatever the peer sends.
//! - *Plaintext to send* is accepted by [`write`](SecureStream::write) only while rustls' unsent
//!   buffers hold less than [`MAX_UNSENT`] bytes; it returns how much it took (maybe 0). Draining
//!   [`poll_output`](SecureStream::poll_output) frees the room.
//! - Events are coalesced (at most one pending `Readable`), so the event queue holds at most
//!   three entries.
//!
//! # Failures
//!
//! A failure caused by the peer or by TLS is fatal: it is returned once, with its type (a refused
//! certificate gives the verifier's [`CertificateError`], e.g. `PeerIdMismatch` naming both ids;
//! anything else from rustls is [`SecureStreamError::Tls`]), and every later input or command
//! returns [`SecureStreamError::Dead`]; [`SecureStream::failure`] keeps the original. Output
//! remains pollable so the alert rustls queued reaches the peer. Local misuse
//! ([`SecureStreamError::InputLimitExceeded`], [`SecureStreamError::WriteAfterClose`]) changes
//! nothing and is not fatal ([`SecureStreamError::is_fatal`]).
//!
//! Note (TLS 1.3): a client completes its handshake before the server has checked the client's
//! certificate; if the server refuses it, the client learns so afterwards from an alert
//! ([`SecureStreamError::Tls`] with `AlertReceived`).

use std::collections::VecDeque;
use std::io::{BufRead, ErrorKind, IoSlice, Write};
use std::net::Ipv4Addr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use libp2p_identity::PeerId;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::certificate::{CertificateError, TlsIdentity};
use super::config::{TlsConfigError, peer_id_from_accepted_certificates};
use super::verifier::VerificationOutcome;
use crate::wallclock::WallClock;

/// The most received ciphertext a [`SecureStream`] queues before rustls takes it. Larger than one
/// TLS record on the wire (rustls accepts up to 18 437 bytes), so a full record always fits.
pub const MAX_PENDING_CIPHERTEXT: usize = 32 * 1024;

/// Unread plaintext at which a [`SecureStream`] stops handing ciphertext to rustls. It is rustls'
/// own received-plaintext limit (16 KiB), above which `read_tls` refuses to read.
pub const READ_AHEAD: usize = 16 * 1024;

/// The most plaintext-plus-ciphertext rustls holds unsent before [`SecureStream::write`] accepts
/// nothing more (rustls' `set_buffer_limit`).
pub const MAX_UNSENT: usize = 64 * 1024;

/// Why a [`SecureStream`] call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecureStreamError {
    /// The peer's certificate was refused; the verifier's typed reason. Fatal.
    #[error("peer certificate refused: {0}")]
    Certificate(CertificateError),
    /// TLS failed: malformed records, a protocol violation, an alert from the peer, an
    /// incompatible peer. Fatal.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// rustls refused to buffer more ciphertext (e.g. an oversized record prefix). Fatal.
    #[error("TLS record buffering: {0}")]
    Buffering(String),
    /// The circuit ended without a `close_notify` (truncation), or during the handshake. Fatal.
    #[error("the byte stream ended without close_notify")]
    Truncated,
    /// The stream failed earlier ([`SecureStream::failure`] has the reason) and is unusable.
    #[error("the secure stream failed earlier")]
    Dead,
    /// Local misuse: more ciphertext than [`SecureStream::input_capacity`] was offered. Nothing
    /// was consumed; not fatal.
    #[error("ciphertext input of {offered} bytes exceeds the capacity of {capacity} bytes")]
    InputLimitExceeded {
        /// Bytes offered.
        offered: usize,
        /// [`SecureStream::input_capacity`] at the time.
        capacity: usize,
    },
    /// Local misuse: [`SecureStream::write`] after [`SecureStream::close`]. Not fatal.
    #[error("write after close")]
    WriteAfterClose,
}

impl SecureStreamError {
    /// Whether the stream is dead after this error (everything except local misuse).
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Self::InputLimitExceeded { .. } | Self::WriteAfterClose
        )
    }
}

/// What [`SecureStream::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ReadOutcome {
    /// Plaintext from the peer, at most the requested length (empty only if 0 was requested).
    Data(Bytes),
    /// Nothing to read now; a [`SecureStreamEvent::Readable`] follows when there is.
    Blocked,
    /// The peer sent `close_notify` and everything before it has been read.
    Finished,
}

/// The outcome of [`SecureStream::read_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Plaintext<R> {
    /// Plaintext was handed to the reader, which returned this.
    Taken(R),
    /// Nothing to read now; a [`SecureStreamEvent::Readable`] follows when there is.
    Blocked,
    /// The peer sent `close_notify` and everything before it has been read.
    Finished,
}

impl<R> Plaintext<R> {
    /// The same outcome with the reader's result mapped by `f`.
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Plaintext<S> {
        match self {
            Plaintext::Taken(taken) => Plaintext::Taken(f(taken)),
            Plaintext::Blocked => Plaintext::Blocked,
            Plaintext::Finished => Plaintext::Finished,
        }
    }
}

/// Something that happened on a [`SecureStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum SecureStreamEvent {
    /// The handshake finished and the peer authenticated as `peer`.
    HandshakeComplete {
        /// The authenticated remote PeerId.
        peer: PeerId,
    },
    /// Plaintext became readable (emitted again only after a `read` returned `Blocked` or
    /// emptied the buffer).
    Readable,
    /// The peer sent `close_notify`: reading ends with [`ReadOutcome::Finished`] once the data
    /// before it is read. Writing remains possible (TLS 1.3 half-close).
    Closed,
}

/// TLS 1.3 with libp2p certificates over an ordered byte stream, sans-IO. See the
/// [module documentation](self) for the driving contract, bounds and failure rules.
#[derive(Debug)]
pub struct SecureStream {
    conn: Connection,
    /// The dialer's verifier slot (typed certificate failures); `None` on the listening side,
    /// whose config does not expose its slot: there the typed error is recovered from rustls'
    /// `CertificateError::Other` when the verifier put it there.
    outcome: Option<VerificationOutcome>,
    /// Received ciphertext rustls has not taken yet, at most [`MAX_PENDING_CIPHERTEXT`].
    pending: BytesMut,
    /// Unread plaintext inside rustls, as of its last report.
    unread: usize,
    peer: Option<PeerId>,
    events: VecDeque<SecureStreamEvent>,
    readable_armed: bool,
    peer_closed: bool,
    closed_reported: bool,
    local_closed: bool,
    input_ended: bool,
    eof_delivered: bool,
    failure: Option<SecureStreamError>,
}

impl SecureStream {
    /// The dialing side: the handshake succeeds only if the listener authenticates as
    /// `expected_peer`. Ciphertext (the ClientHello) is ready in [`poll_output`](Self::poll_output)
    /// right away.
    pub fn client(
        identity: &TlsIdentity,
        clock: WallClock,
        expected_peer: PeerId,
    ) -> Result<Self, TlsConfigError> {
        Self::client_with_provider(identity, clock, expected_peer, super::crypto_provider())
    }

    /// As [`SecureStream::client`], with the given crypto provider (e.g. the seeded one of a
    /// simulator).
    pub fn client_with_provider(
        identity: &TlsIdentity,
        clock: WallClock,
        expected_peer: PeerId,
        provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsConfigError> {
        // A config per stream, so the verifier's outcome slot belongs to this stream alone.
        let (config, outcome) = super::client_config_with_provider(
            identity,
            clock.clone(),
            Some(expected_peer),
            &[super::ALPN],
            provider,
        )?;
        // libp2p sends no SNI (the spec forbids it, and `enable_sni` is off); the name is unused.
        let name = ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into());
        let conn = ClientConnection::new(config, name)?;
        Ok(Self::new(conn.into(), Some(outcome)))
    }

    /// The listening side; the dialer must present a valid libp2p certificate.
    pub fn server(identity: &TlsIdentity, clock: WallClock) -> Result<Self, TlsConfigError> {
        Self::server_with_provider(identity, clock, super::crypto_provider())
    }

    /// As [`SecureStream::server`], with the given crypto provider.
    pub fn server_with_provider(
        identity: &TlsIdentity,
        clock: WallClock,
        provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, TlsConfigError> {
        let (config, _) =
            super::server_config_with_provider(identity, clock.clone(), &[super::ALPN], provider)?;
        let conn = ServerConnection::new(config)?;
        Ok(Self::new(conn.into(), None))
    }

    fn new(mut conn: Connection, outcome: Option<VerificationOutcome>) -> Self {
        conn.set_buffer_limit(Some(MAX_UNSENT));
        Self {
            conn,
            outcome,
            pending: BytesMut::new(),
            unread: 0,
            peer: None,
            events: VecDeque::new(),
            readable_armed: true,
            peer_closed: false,
            closed_reported: false,
            local_closed: false,
            input_ended: false,
            eof_delivered: false,
            failure: None,
        }
    }

    // ---- getters ----

    /// The authenticated remote PeerId, once the handshake is complete.
    #[must_use]
    pub fn peer_id(&self) -> Option<PeerId> {
        self.peer
    }

    /// Whether the handshake is still running (false after it completed, and after a failure).
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        self.failure.is_none() && self.peer.is_none()
    }

    /// How many ciphertext bytes [`handle_input`](Self::handle_input) accepts now.
    #[must_use]
    pub fn input_capacity(&self) -> usize {
        if self.failure.is_some() || self.input_ended {
            return 0;
        }
        MAX_PENDING_CIPHERTEXT.saturating_sub(self.pending.len())
    }

    /// Decrypted plaintext waiting to be [`read`](Self::read).
    #[must_use]
    pub fn unread_plaintext(&self) -> usize {
        self.unread
    }

    /// The fatal error this stream failed with, if it did.
    #[must_use]
    pub fn failure(&self) -> Option<&SecureStreamError> {
        self.failure.as_ref()
    }

    // ---- inputs ----

    /// Ciphertext received from the circuit, split anywhere. At most
    /// [`input_capacity`](Self::input_capacity) bytes: a larger input is refused whole with
    /// [`SecureStreamError::InputLimitExceeded`] and nothing is consumed. Ciphertext after the
    /// peer's `close_notify` is discarded.
    pub fn handle_input(&mut self, ciphertext: &[u8]) -> Result<(), SecureStreamError> {
        self.check_alive()?;
        let capacity = self.input_capacity();
        if ciphertext.len() > capacity {
            return Err(SecureStreamError::InputLimitExceeded {
                offered: ciphertext.len(),
                capacity,
            });
        }
        if self.peer_closed {
            // "Any data received after a closure alert has been received MUST be ignored."
            return Ok(());
        }
        let mut rest = ciphertext;
        if self.pending.is_empty() {
            // Nothing queued before it: rustls reads straight from the input, and only what
            // it does not take now is copied into the queue.
            rest = self.feed(rest)?;
        }
        self.pending.extend_from_slice(rest);
        self.pump()
    }

    /// The circuit ended: no more ciphertext will come. Reading ends with
    /// [`ReadOutcome::Finished`] if the peer sent `close_notify`, else with
    /// [`SecureStreamError::Truncated`]; during the handshake this fails at once.
    pub fn handle_end_of_input(&mut self) -> Result<(), SecureStreamError> {
        self.check_alive()?;
        self.input_ended = true;
        self.pump()?;
        if self.peer.is_none() && self.pending.is_empty() {
            return Err(self.fail(SecureStreamError::Truncated));
        }
        Ok(())
    }

    // ---- commands ----

    /// Queues plaintext for encryption and returns how many bytes were taken: fewer than
    /// offered (possibly 0) when [`MAX_UNSENT`] bytes wait unsent; drain
    /// [`poll_output`](Self::poll_output) and retry. Before the handshake completes the
    /// plaintext is held and sent once it does.
    pub fn write(&mut self, plaintext: &[u8]) -> Result<usize, SecureStreamError> {
        self.write_vectored(&[IoSlice::new(plaintext)])
    }

    /// Like [`write`](Self::write), for plaintext in several pieces: they are taken as one run
    /// of bytes (TLS cuts full records across them), without being copied together first.
    pub fn write_vectored(
        &mut self,
        plaintext: &[IoSlice<'_>],
    ) -> Result<usize, SecureStreamError> {
        self.check_alive()?;
        if self.local_closed {
            return Err(SecureStreamError::WriteAfterClose);
        }
        match self.conn.writer().write_vectored(plaintext) {
            Ok(taken) => Ok(taken),
            Err(error) => Err(self.fail(SecureStreamError::Buffering(error.to_string()))),
        }
    }

    /// Reads at most `max` bytes of plaintext.
    pub fn read(&mut self, max: usize) -> Result<ReadOutcome, SecureStreamError> {
        Ok(match self.read_with(max, Bytes::copy_from_slice)? {
            Plaintext::Taken(data) => ReadOutcome::Data(data),
            Plaintext::Blocked => ReadOutcome::Blocked,
            Plaintext::Finished => ReadOutcome::Finished,
        })
    }

    /// Hands the next received plaintext, at most `max` bytes of one TLS record, to `take`
    /// where rustls holds it, and returns what `take` returned: the bytes are consumed without
    /// being copied out first. Same outcomes as [`read`](Self::read).
    pub fn read_with<R>(
        &mut self,
        max: usize,
        take: impl FnOnce(&[u8]) -> R,
    ) -> Result<Plaintext<R>, SecureStreamError> {
        self.check_alive()?;
        if max == 0 {
            return Ok(Plaintext::Taken(take(&[])));
        }
        let mut reader = self.conn.reader();
        let outcome = match reader.fill_buf() {
            // Empty only once the peer's close_notify was read with nothing before it.
            Ok([]) => Plaintext::Finished,
            Ok(chunk) => {
                let n = chunk.len().min(max);
                let taken = take(&chunk[..n]);
                reader.consume(n);
                Plaintext::Taken(taken)
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => Plaintext::Blocked,
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => {
                return Err(self.fail(SecureStreamError::Truncated));
            }
            Err(error) => return Err(self.fail(SecureStreamError::Buffering(error.to_string()))),
        };
        // Room freed: refresh the count and hand rustls more of the queued ciphertext.
        self.refresh()?;
        self.pump()?;
        if matches!(outcome, Plaintext::Blocked) || self.unread == 0 {
            self.readable_armed = true;
            self.update_events();
        }
        Ok(outcome)
    }

    /// Sends `close_notify`: the peer's reads end with [`ReadOutcome::Finished`]. Later writes
    /// fail with [`SecureStreamError::WriteAfterClose`]; reading goes on. Idempotent; does
    /// nothing on a failed stream.
    pub fn close(&mut self) {
        if self.failure.is_none() && !self.local_closed {
            self.local_closed = true;
            self.conn.send_close_notify();
        }
    }

    // ---- outputs ----

    /// Ciphertext to send on the circuit, in order. Still yields after a failure (the alert).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        self.write_output_into(&mut out).then(|| out.freeze())
    }

    /// Appends the ciphertext to send on the circuit to `out`, in order, as
    /// [`poll_output`](Self::poll_output) returns it but without an allocation of its own.
    /// Returns whether anything was appended.
    pub fn write_output_into(&mut self, out: &mut BytesMut) -> bool {
        let before = out.len();
        let mut writer = BufMut::writer(&mut *out);
        while self.conn.wants_write() {
            // Writing into memory cannot fail; stop rather than spin if it ever did.
            match self.conn.write_tls(&mut writer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.len() > before
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SecureStreamEvent> {
        self.events.pop_front()
    }

    // ---- internals ----

    fn check_alive(&self) -> Result<(), SecureStreamError> {
        match self.failure {
            Some(_) => Err(SecureStreamError::Dead),
            None => Ok(()),
        }
    }

    /// Records a fatal error and returns it.
    fn fail(&mut self, error: SecureStreamError) -> SecureStreamError {
        self.pending.clear();
        self.failure = Some(error.clone());
        error
    }

    /// Hands `input` to rustls while the unread plaintext is below [`READ_AHEAD`]; returns
    /// what rustls did not take (nothing after the peer's `close_notify`, which makes the rest
    /// to be ignored).
    fn feed<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], SecureStreamError> {
        while !input.is_empty() && self.unread < READ_AHEAD {
            let taken = match self.conn.read_tls(&mut input) {
                Ok(taken) => taken,
                Err(error) => {
                    return Err(self.fail(SecureStreamError::Buffering(error.to_string())));
                }
            };
            if taken == 0 {
                return Ok(&[]);
            }
            self.refresh()?;
        }
        Ok(input)
    }

    /// Hands queued ciphertext to rustls while the unread plaintext is below [`READ_AHEAD`].
    fn pump(&mut self) -> Result<(), SecureStreamError> {
        let mut pending = std::mem::take(&mut self.pending);
        let left = self.feed(&pending)?.len();
        pending.advance(pending.len() - left);
        self.pending = pending;
        if self.input_ended && self.pending.is_empty() && !self.eof_delivered {
            // Tell rustls about the end so a missing close_notify reads as truncation.
            self.eof_delivered = true;
            let mut empty: &[u8] = &[];
            if let Err(error) = self.conn.read_tls(&mut empty) {
                return Err(self.fail(SecureStreamError::Buffering(error.to_string())));
            }
        }
        self.update_events();
        self.failure.clone().map_or(Ok(()), Err)
    }

    /// Lets rustls process what it has and records its state.
    fn refresh(&mut self) -> Result<(), SecureStreamError> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.unread = state.plaintext_bytes_to_read();
                self.peer_closed |= state.peer_has_closed();
                Ok(())
            }
            Err(error) => {
                let error = self.classify(error);
                Err(self.fail(error))
            }
        }
    }

    /// A typed certificate error when the verifier refused the peer, else the rustls error.
    fn classify(&self, error: rustls::Error) -> SecureStreamError {
        let certificate_failure = matches!(
            error,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        );
        if certificate_failure {
            if let Some(typed) = self.outcome.as_ref().and_then(|o| o.take_failure()) {
                return SecureStreamError::Certificate(typed);
            }
            if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
                &error
                && let Some(typed) = other.0.downcast_ref::<CertificateError>()
            {
                return SecureStreamError::Certificate(typed.clone());
            }
        }
        SecureStreamError::Tls(error)
    }

    fn update_events(&mut self) {
        if self.failure.is_some() {
            return;
        }
        if self.peer.is_none() && !self.conn.is_handshaking() {
            // The verifier accepted the certificate a moment ago; this reads the PeerId from the
            // one certificate rustls kept (it cannot differ), without verifying it twice.
            let certificates = self.conn.peer_certificates().unwrap_or(&[]);
            match peer_id_from_accepted_certificates(certificates) {
                Ok(peer) => {
                    self.peer = Some(peer);
                    self.events
                        .push_back(SecureStreamEvent::HandshakeComplete { peer });
                }
                Err(error) => {
                    self.fail(SecureStreamError::Certificate(error));
                    return;
                }
            }
        }
        if self.unread > 0 && self.readable_armed {
            self.readable_armed = false;
            self.events.push_back(SecureStreamEvent::Readable);
        }
        if self.peer_closed && !self.closed_reported {
            self.closed_reported = true;
            self.events.push_back(SecureStreamEvent::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p_identity::Keypair;
    use proptest::prelude::*;

    use super::*;

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    fn identity(n: u8) -> TlsIdentity {
        let host = Keypair::ed25519_from_bytes([n; 32]).expect("32-byte ed25519 secret");
        TlsIdentity::new(&host, [n.wrapping_add(100); 32]).expect("identity")
    }

    /// Which side failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Side {
        Client,
        Server,
    }

    /// One direction of the relayed circuit: ciphertext in flight, delivered in chunks of the
    /// given sizes (cycled) but never beyond the receiver's input capacity.
    #[derive(Default)]
    struct Link {
        in_flight: BytesMut,
        /// Every byte that crossed the relay, for the "relay sees only ciphertext" test.
        seen: Vec<u8>,
        splits: Vec<usize>,
        next_split: usize,
    }

    impl Link {
        fn with_splits(splits: &[usize]) -> Self {
            Self {
                splits: splits.to_vec(),
                ..Self::default()
            }
        }

        /// Moves output of `from` to `to`; returns whether anything moved.
        fn carry(
            &mut self,
            from: &mut SecureStream,
            to: &mut SecureStream,
        ) -> Result<bool, SecureStreamError> {
            let mut moved = false;
            while let Some(chunk) = from.poll_output() {
                self.seen.extend_from_slice(&chunk);
                self.in_flight.extend_from_slice(&chunk);
                moved = true;
            }
            while !self.in_flight.is_empty() {
                let split = if self.splits.is_empty() {
                    usize::MAX
                } else {
                    self.splits[self.next_split % self.splits.len()]
                };
                self.next_split += 1;
                let n = split.min(self.in_flight.len()).min(to.input_capacity());
                if n == 0 {
                    break;
                }
                let chunk = self.in_flight.split_to(n);
                to.handle_input(&chunk)?;
                moved = true;
            }
            Ok(moved)
        }
    }

    /// A dialer and a listener wired back to back through an in-memory "relay".
    struct Pair {
        client: SecureStream,
        server: SecureStream,
        up: Link,
        down: Link,
    }

    impl Pair {
        fn new(expected: PeerId) -> Self {
            Self::with_splits(expected, &[])
        }

        fn with_splits(expected: PeerId, splits: &[usize]) -> Self {
            let clock = WallClock::new(NOW);
            let client =
                SecureStream::client(&identity(1), clock.clone(), expected).expect("client");
            let server = SecureStream::server(&identity(2), clock).expect("server");
            Self {
                client,
                server,
                up: Link::with_splits(splits),
                down: Link::with_splits(splits),
            }
        }

        fn connected() -> Self {
            let mut pair = Self::new(identity(2).peer_id());
            pair.pump().expect("handshake");
            pair
        }

        /// Carries ciphertext both ways until nothing moves. Bounded: every round either moves
        /// bytes or ends the loop, and no test needs anywhere near this many.
        fn pump(&mut self) -> Result<(), (Side, SecureStreamError)> {
            for _ in 0..100_000 {
                let up = self
                    .up
                    .carry(&mut self.client, &mut self.server)
                    .map_err(|e| (Side::Server, e))?;
                let down = self
                    .down
                    .carry(&mut self.server, &mut self.client)
                    .map_err(|e| (Side::Client, e))?;
                if !up && !down {
                    return Ok(());
                }
            }
            panic!("pump did not settle")
        }
    }

    fn events(stream: &mut SecureStream) -> Vec<SecureStreamEvent> {
        std::iter::from_fn(|| stream.poll_event()).collect()
    }

    /// Reads everything currently readable, in reads of at most `max` bytes.
    fn read_available(stream: &mut SecureStream, max: usize, into: &mut Vec<u8>) -> bool {
        loop {
            match stream.read(max).expect("read") {
                ReadOutcome::Data(data) => into.extend_from_slice(&data),
                ReadOutcome::Blocked => return false,
                ReadOutcome::Finished => return true,
            }
        }
    }

    /// Deterministic test data (xorshift).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    fn sha256(bytes: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .to_vec()
    }

    #[test]
    fn vectored_writes_arrive_whole_and_in_order_through_read_with() {
        let mut pair = Pair::connected();
        let message = data(100_000, 7);
        // Pieces of uneven sizes, written as one run (a full record spans several pieces).
        let pieces: Vec<&[u8]> = message.chunks(3_000).collect();
        let mut written = 0;
        while written < message.len() {
            let mut skip = written;
            let slices: Vec<IoSlice<'_>> = pieces
                .iter()
                .filter_map(|piece| {
                    if skip >= piece.len() {
                        skip -= piece.len();
                        return None;
                    }
                    let slice = IoSlice::new(&piece[skip..]);
                    skip = 0;
                    Some(slice)
                })
                .collect();
            let n = pair.client.write_vectored(&slices).expect("write");
            assert!(n > 0, "TLS takes more once its output was carried");
            written += n;
            pair.pump().expect("carry");
        }
        pair.client.close();
        pair.pump().expect("carry");
        let mut received = Vec::new();
        let mut finished = false;
        // Bounded: 100,000 bytes in reads of at least one byte each, then the end.
        for _ in 0..200_000 {
            match pair
                .server
                .read_with(5_000, |plaintext| {
                    assert!(plaintext.len() <= 5_000, "handed {} bytes", plaintext.len());
                    received.extend_from_slice(plaintext);
                })
                .expect("read")
            {
                Plaintext::Taken(()) => {}
                Plaintext::Blocked => pair.pump().expect("carry"),
                Plaintext::Finished => {
                    finished = true;
                    break;
                }
            }
        }
        assert!(finished, "close_notify ends the reads");
        assert_eq!(sha256(&received), sha256(&message), "every byte, in order");
    }

    #[test]
    fn read_with_never_hands_out_more_than_max() {
        let mut pair = Pair::connected();
        let message = data(40_000, 9);
        assert_eq!(pair.client.write(&message).expect("write"), message.len());
        pair.pump().expect("carry");
        let mut received = Vec::new();
        // Bounded: 40,000 bytes in reads of at least one byte each.
        for _ in 0..40_000 {
            match pair.server.read_with(777, |plaintext| {
                assert!(plaintext.len() <= 777, "handed {} bytes", plaintext.len());
                received.extend_from_slice(plaintext);
            }) {
                Ok(Plaintext::Taken(())) => {}
                Ok(Plaintext::Blocked) => break,
                other => panic!("unexpected read outcome {other:?}"),
            }
        }
        assert_eq!(received, message, "nothing lost between partial reads");
    }

    #[test]
    fn handshake_completes_and_each_side_learns_the_other_peer_id() {
        let mut pair = Pair::new(identity(2).peer_id());
        assert!(pair.client.is_handshaking() && pair.server.is_handshaking());
        pair.pump().expect("handshake");

        assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking());
        assert_eq!(pair.client.peer_id(), Some(identity(2).peer_id()));
        assert_eq!(pair.server.peer_id(), Some(identity(1).peer_id()));
        assert_eq!(
            events(&mut pair.client),
            [SecureStreamEvent::HandshakeComplete {
                peer: identity(2).peer_id()
            }]
        );
        assert_eq!(
            events(&mut pair.server),
            [SecureStreamEvent::HandshakeComplete {
                peer: identity(1).peer_id()
            }]
        );
    }

    #[test]
    fn handshake_negotiates_alpn_libp2p_like_rust_libp2p() {
        let pair = Pair::connected();
        assert_eq!(pair.client.conn.alpn_protocol(), Some(super::super::ALPN));
        assert_eq!(pair.server.conn.alpn_protocol(), Some(super::super::ALPN));
        assert_eq!(
            pair.client.conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    }

    #[test]
    fn handshake_survives_one_byte_deliveries() {
        let mut pair = Pair::with_splits(identity(2).peer_id(), &[1]);
        pair.pump().expect("handshake");
        assert_eq!(pair.server.peer_id(), Some(identity(1).peer_id()));
    }

    #[test]
    fn data_flows_both_ways() {
        let mut pair = Pair::connected();
        assert_eq!(pair.client.write(b"ping from the dialer"), Ok(20));
        assert_eq!(pair.server.write(b"pong from the listener"), Ok(22));
        pair.pump().expect("pump");

        assert!(events(&mut pair.server).contains(&SecureStreamEvent::Readable));
        assert!(events(&mut pair.client).contains(&SecureStreamEvent::Readable));
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        read_available(&mut pair.server, 1024, &mut at_server);
        read_available(&mut pair.client, 1024, &mut at_client);
        assert_eq!(at_server, b"ping from the dialer");
        assert_eq!(at_client, b"pong from the listener");
    }

    #[test]
    fn data_written_before_the_handshake_is_sent_after_it() {
        let mut pair = Pair::new(identity(2).peer_id());
        assert_eq!(pair.client.write(b"early"), Ok(5));
        pair.pump().expect("pump");
        let mut at_server = Vec::new();
        read_available(&mut pair.server, 64, &mut at_server);
        assert_eq!(at_server, b"early");
    }

    #[test]
    fn four_mebibytes_each_way_arrive_intact_with_odd_splits() {
        const LEN: usize = 4 * 1024 * 1024;
        let mut pair = Pair::with_splits(identity(2).peer_id(), &[1, 7, 1021, 3001, 16_411, 5]);
        pair.pump().expect("handshake");
        let (up, down) = (data(LEN, 1), data(LEN, 2));
        let (mut up_sent, mut down_sent) = (0, 0);
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());

        for _ in 0..10_000 {
            up_sent += pair.client.write(&up[up_sent..]).expect("write");
            down_sent += pair.server.write(&down[down_sent..]).expect("write");
            pair.pump().expect("pump");
            read_available(&mut pair.server, 4093, &mut at_server);
            read_available(&mut pair.client, 997, &mut at_client);
            if at_server.len() == LEN && at_client.len() == LEN {
                break;
            }
        }
        assert_eq!(at_server.len(), LEN);
        assert_eq!(at_client.len(), LEN);
        assert_eq!(sha256(&at_server), sha256(&up));
        assert_eq!(sha256(&at_client), sha256(&down));
    }

    #[test]
    fn write_accepts_at_most_the_unsent_bound() {
        let mut pair = Pair::connected();
        let big = vec![7u8; 1024 * 1024];
        let taken = pair.client.write(&big).expect("write");
        assert!(taken > 0 && taken <= MAX_UNSENT, "took {taken}");
        assert_eq!(
            pair.client.write(&big),
            Ok(0),
            "full until output is drained"
        );
        while pair.client.poll_output().is_some() {}
        assert!(pair.client.write(&big).expect("write") > 0);
    }

    #[test]
    fn slow_reader_stops_consuming_ciphertext_and_catches_up() {
        const LEN: usize = 1024 * 1024;
        let mut pair = Pair::connected();
        let payload = data(LEN, 3);
        let mut sent = 0;
        // The listener does not read: its plaintext and ciphertext queues fill, then stop.
        for _ in 0..1_000 {
            sent += pair.client.write(&payload[sent..]).expect("write");
            pair.pump().expect("pump");
            if sent == LEN {
                break;
            }
        }
        assert_eq!(pair.server.input_capacity(), 0);
        assert!(pair.server.unread_plaintext() <= READ_AHEAD + 64 * 1024);
        assert!(!pair.up.in_flight.is_empty(), "the rest waits upstream");

        let mut received = Vec::new();
        for _ in 0..10_000 {
            read_available(&mut pair.server, 8192, &mut received);
            sent += pair.client.write(&payload[sent..]).expect("write");
            pair.pump().expect("pump");
            assert!(pair.server.unread_plaintext() <= READ_AHEAD + 64 * 1024);
            if received.len() == LEN {
                break;
            }
        }
        assert_eq!(received, payload);
    }

    #[test]
    fn input_beyond_capacity_is_refused_whole_and_is_not_fatal() {
        let mut pair = Pair::new(identity(2).peer_id());
        let too_much = vec![0u8; MAX_PENDING_CIPHERTEXT + 1];
        let error = pair.server.handle_input(&too_much).expect_err("too much");
        assert_eq!(
            error,
            SecureStreamError::InputLimitExceeded {
                offered: MAX_PENDING_CIPHERTEXT + 1,
                capacity: MAX_PENDING_CIPHERTEXT,
            }
        );
        assert!(!error.is_fatal());
        assert_eq!(pair.server.failure(), None);
        pair.pump().expect("the handshake still works");
        assert!(!pair.server.is_handshaking());
    }

    #[test]
    fn dialing_the_wrong_peer_fails_with_peer_id_mismatch() {
        let expected = identity(3).peer_id();
        let mut pair = Pair::new(expected);
        let (side, error) = pair.pump().expect_err("wrong peer");
        assert_eq!(side, Side::Client);
        let mismatch = SecureStreamError::Certificate(CertificateError::PeerIdMismatch {
            expected,
            actual: identity(2).peer_id(),
        });
        assert_eq!(error, mismatch);
        assert!(error.to_string().contains(&expected.to_base58()));

        // Dead, and says so; the original reason is kept.
        assert_eq!(pair.client.failure(), Some(&mismatch));
        assert!(!pair.client.is_handshaking());
        assert_eq!(pair.client.peer_id(), None);
        assert_eq!(pair.client.write(b"x"), Err(SecureStreamError::Dead));
        assert_eq!(pair.client.read(10), Err(SecureStreamError::Dead));
        assert_eq!(pair.client.input_capacity(), 0);
        assert_eq!(events(&mut pair.client), []);

        // The alert still reaches the listener, which fails too.
        let (side, error) = pair.pump().expect_err("alert");
        assert_eq!(side, Side::Server);
        assert!(
            matches!(
                error,
                SecureStreamError::Tls(rustls::Error::AlertReceived(_))
            ),
            "{error:?}"
        );
    }

    #[test]
    fn listener_refuses_an_expired_client_certificate() {
        let host = Keypair::ed25519_from_bytes([1; 32]).expect("key");
        let dialer = TlsIdentity::with_validity(&host, [5; 32], (2000, 1, 1), (2001, 1, 1));
        // The dialer's clock is inside its own window; the listener's is years later.
        let dialer_clock = WallClock::new(Duration::from_secs(960_000_000));
        let mut pair = Pair::new(identity(2).peer_id());
        pair.client =
            SecureStream::client(&dialer, dialer_clock, identity(2).peer_id()).expect("client");
        let (side, error) = pair.pump().expect_err("expired");
        assert_eq!(side, Side::Server);
        // The listener's config keeps its verifier slot to itself, so this reason arrives as
        // rustls' (still typed) certificate error.
        assert_eq!(
            error,
            SecureStreamError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
            ))
        );
        // TLS 1.3: the dialer finished first and learns of the refusal from the alert.
        let (side, error) = pair.pump().expect_err("alert");
        assert_eq!(side, Side::Client);
        assert!(
            matches!(
                error,
                SecureStreamError::Tls(rustls::Error::AlertReceived(_))
            ),
            "{error:?}"
        );
    }

    #[test]
    fn garbage_ciphertext_fails_the_listener_without_panic() {
        let clock = WallClock::new(NOW);
        let mut server = SecureStream::server(&identity(2), clock).expect("server");
        let error = server
            .handle_input(b"GET / HTTP/1.1\r\nHost: relay\r\n\r\n")
            .expect_err("not TLS");
        assert!(matches!(error, SecureStreamError::Tls(_)), "{error:?}");
        assert!(error.is_fatal());
        assert_eq!(server.handle_input(b"more"), Err(SecureStreamError::Dead));
        assert!(server.poll_output().is_some(), "an alert for the peer");
    }

    #[test]
    fn corrupted_record_after_the_handshake_fails_the_reader() {
        let mut pair = Pair::connected();
        pair.client.write(b"some application data").expect("write");
        let mut record = pair.client.poll_output().expect("record").to_vec();
        let last = record.len() - 1;
        record[last] ^= 0x01;
        let error = pair.server.handle_input(&record).expect_err("bad MAC");
        assert_eq!(
            error,
            SecureStreamError::Tls(rustls::Error::DecryptError),
            "{error:?}"
        );
    }

    #[test]
    fn close_notify_finishes_the_peer_reader_and_half_close_keeps_the_other_way() {
        let mut pair = Pair::connected();
        pair.client.write(b"last words").expect("write");
        pair.client.close();
        pair.client.close(); // idempotent
        assert_eq!(
            pair.client.write(b"more"),
            Err(SecureStreamError::WriteAfterClose)
        );
        assert!(!SecureStreamError::WriteAfterClose.is_fatal());
        pair.pump().expect("pump");

        let server_events = events(&mut pair.server);
        assert!(server_events.contains(&SecureStreamEvent::Readable));
        assert!(server_events.contains(&SecureStreamEvent::Closed));
        let mut received = Vec::new();
        assert!(
            read_available(&mut pair.server, 4, &mut received),
            "Finished"
        );
        assert_eq!(received, b"last words");
        assert_eq!(pair.server.read(4), Ok(ReadOutcome::Finished));

        // Ciphertext after close_notify is ignored.
        pair.server.handle_input(b"trailing junk").expect("ignored");

        pair.server.write(b"reply").expect("write");
        pair.pump().expect("pump");
        let mut at_client = Vec::new();
        read_available(&mut pair.client, 64, &mut at_client);
        assert_eq!(at_client, b"reply");
    }

    #[test]
    fn end_of_input_without_close_notify_is_truncation() {
        let mut pair = Pair::connected();
        pair.client.write(b"partial").expect("write");
        pair.pump().expect("pump");
        pair.server.handle_end_of_input().expect("end");
        assert_eq!(
            pair.server.read(64),
            Ok(ReadOutcome::Data(Bytes::from_static(b"partial")))
        );
        assert_eq!(pair.server.read(64), Err(SecureStreamError::Truncated));
        assert_eq!(pair.server.failure(), Some(&SecureStreamError::Truncated));
    }

    #[test]
    fn end_of_input_after_close_notify_finishes_cleanly() {
        let mut pair = Pair::connected();
        pair.client.close();
        pair.pump().expect("pump");
        pair.server.handle_end_of_input().expect("end");
        assert_eq!(pair.server.read(64), Ok(ReadOutcome::Finished));
    }

    #[test]
    fn end_of_input_during_the_handshake_fails() {
        let clock = WallClock::new(NOW);
        let mut server = SecureStream::server(&identity(2), clock).expect("server");
        assert_eq!(
            server.handle_end_of_input(),
            Err(SecureStreamError::Truncated)
        );
    }

    #[test]
    fn relay_sees_only_ciphertext() {
        let mut pair = Pair::connected();
        let pattern = b"dep2p-plaintext-pattern-0123456789";
        let message: Vec<u8> = pattern.iter().copied().cycle().take(100 * 1024).collect();
        let (mut sent, mut received) = (0, Vec::new());
        for _ in 0..1_000 {
            sent += pair.client.write(&message[sent..]).expect("write");
            pair.server.write(&message[..2048]).expect("write");
            pair.pump().expect("pump");
            read_available(&mut pair.server, 4096, &mut received);
            if received.len() == message.len() {
                break;
            }
        }
        assert_eq!(received, message);
        for seen in [&pair.up.seen, &pair.down.seen] {
            assert!(seen.len() > 2048);
            assert!(!seen.windows(16).any(|w| w == &pattern[..16]));
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_a_listener(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..2048), 1..16)
        ) {
            let clock = WallClock::new(NOW);
            let mut server = SecureStream::server(&identity(2), clock).expect("server");
            for chunk in chunks {
                let take = chunk.len().min(server.input_capacity());
                if server.handle_input(&chunk[..take]).is_err() {
                    prop_assert!(server.failure().is_some());
                    break;
                }
                while server.poll_output().is_some() {}
                let _ = server.read(1024);
                let _ = events(&mut server);
            }
            let _ = server.handle_end_of_input();
        }

        #[test]
        fn random_bytes_after_a_handshake_never_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            let mut pair = Pair::connected();
            let _ = pair.client.handle_input(&junk);
            let _ = pair.client.read(1024);
            while pair.client.poll_output().is_some() {}
        }
    }
}
