//! rustls certificate verifiers for the libp2p TLS profile.
//!
//! [`ServerCertificateVerifier`] runs on the dialing side and checks the listener's certificate
//! (and, when dialing a known peer, its PeerId); [`ClientCertificateVerifier`] runs on the
//! listening side and requires a client certificate. Both check certificates with
//! [`verify_certificate`] at the time of a [`WallClock`] (not rustls' `now`), accept only TLS 1.3
//! handshake signatures, and record the typed [`CertificateError`] of a failure in a
//! [`VerificationOutcome`], because rustls reports verifier errors to the application only as
//! its own error type.

use std::sync::{Arc, Mutex, PoisonError};

use libp2p_identity::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};

use super::certificate::{
    self, CertificateError, SUPPORTED_SCHEMES, VerifiedCertificate, verify_certificate,
};
use crate::wallclock::WallClock;

/// The typed reason of a verifier's last failure, shared between the verifier (inside a rustls
/// config) and the node, which reads it after rustls reports a certificate error.
///
/// The slot holds only the *last* failure. A client config is built per dial, so its slot
/// belongs to one connection; a verifier shared by many connections overwrites it.
#[derive(Debug, Clone, Default)]
pub struct VerificationOutcome {
    slot: Arc<Mutex<Option<CertificateError>>>,
}

impl VerificationOutcome {
    /// An empty outcome.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The last recorded failure, leaving it in place.
    #[must_use]
    pub fn last_failure(&self) -> Option<CertificateError> {
        self.lock().clone()
    }

    /// Takes the last recorded failure out, leaving the slot empty.
    #[must_use]
    pub fn take_failure(&self) -> Option<CertificateError> {
        self.lock().take()
    }

    fn record(&self, error: CertificateError) {
        *self.lock() = Some(error);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CertificateError>> {
        // The slot holds plain data that a panicking writer cannot leave half-written, so a
        // poisoned lock is still usable.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a failure and converts it for rustls.
    fn fail<T>(&self, error: CertificateError) -> Result<T, rustls::Error> {
        let converted = to_rustls(&error);
        self.record(error);
        Err(converted)
    }
}

/// Converts a certificate failure to the rustls error that makes rustls send the fitting alert.
fn to_rustls(error: &CertificateError) -> rustls::Error {
    use rustls::CertificateError as Rustls;
    let certificate_error = match error {
        CertificateError::Malformed(_) => Rustls::BadEncoding,
        CertificateError::InvalidSelfSignature | CertificateError::InvalidHandshakeSignature => {
            Rustls::BadSignature
        }
        CertificateError::Expired { .. } => Rustls::Expired,
        CertificateError::NotYetValid { .. } => Rustls::NotValidYet,
        CertificateError::UnknownCriticalExtension(_) => Rustls::UnhandledCriticalExtension,
        CertificateError::UnexpectedChainLength(0) => {
            return rustls::Error::NoCertificatesPresented;
        }
        CertificateError::UnexpectedChainLength(_)
        | CertificateError::UnsupportedSignatureScheme(_)
        | CertificateError::MissingLibp2pExtension
        | CertificateError::InvalidExtensionSignature
        | CertificateError::UnsupportedHostKey(_)
        | CertificateError::PeerIdMismatch { .. } => {
            Rustls::Other(OtherError(Arc::new(error.clone())))
        }
    };
    rustls::Error::InvalidCertificate(certificate_error)
}

/// Verifies a presented chain: exactly one certificate, valid at `now`, authenticating
/// `expected` if given.
fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now_unix_secs: u64,
    expected: Option<PeerId>,
) -> Result<VerifiedCertificate, CertificateError> {
    if !intermediates.is_empty() {
        return Err(CertificateError::UnexpectedChainLength(
            intermediates.len().saturating_add(1),
        ));
    }
    let verified = verify_certificate(end_entity, now_unix_secs)?;
    if let Some(expected) = expected {
        verified.expect_peer(expected)?;
    }
    Ok(verified)
}

fn verify_tls13(
    outcome: &VerificationOutcome,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    match certificate::verify_tls13_signature(cert, dss.scheme, message, dss.signature()) {
        Ok(()) => Ok(HandshakeSignatureValid::assertion()),
        Err(error) => outcome.fail(error),
    }
}

fn refuse_tls12(outcome: &VerificationOutcome) -> Result<HandshakeSignatureValid, rustls::Error> {
    // Our configs enable TLS 1.3 only, so rustls never asks; refuse in case it does.
    outcome.fail(CertificateError::UnsupportedSignatureScheme(
        "TLS 1.2 handshake signature (libp2p requires TLS 1.3)".into(),
    ))
}

/// Verifies the listener's certificate on the dialing side, and that it authenticates the
/// expected PeerId when one is given.
#[derive(Debug)]
pub struct ServerCertificateVerifier {
    clock: WallClock,
    expected_peer: Option<PeerId>,
    outcome: VerificationOutcome,
}

impl ServerCertificateVerifier {
    /// A verifier checking validity at `clock`'s time and, if `expected_peer` is set, the PeerId.
    #[must_use]
    pub fn new(clock: WallClock, expected_peer: Option<PeerId>) -> Self {
        Self {
            clock,
            expected_peer,
            outcome: VerificationOutcome::new(),
        }
    }

    /// The slot where this verifier records its failures.
    #[must_use]
    pub fn outcome(&self) -> VerificationOutcome {
        self.outcome.clone()
    }
}

impl ServerCertVerifier for ServerCertificateVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is meaningless in libp2p (the PeerId is the identity) and time comes from
        // the wall clock input, not from rustls.
        match verify_chain(
            end_entity,
            intermediates,
            self.clock.unix_secs(),
            self.expected_peer,
        ) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(error) => self.outcome.fail(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12(&self.outcome)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.outcome, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SUPPORTED_SCHEMES.to_vec()
    }
}

/// Verifies the dialer's certificate on the listening side. Client authentication is
/// mandatory (the spec requires servers to authenticate clients).
#[derive(Debug)]
pub struct ClientCertificateVerifier {
    clock: WallClock,
    outcome: VerificationOutcome,
}

impl ClientCertificateVerifier {
    /// A verifier checking validity at `clock`'s time.
    #[must_use]
    pub fn new(clock: WallClock) -> Self {
        Self {
            clock,
            outcome: VerificationOutcome::new(),
        }
    }

    /// The slot where this verifier records its failures. A server config serves many
    /// connections, so this holds the latest failure of any of them.
    #[must_use]
    pub fn outcome(&self) -> VerificationOutcome {
        self.outcome.clone()
    }
}

impl ClientCertVerifier for ClientCertificateVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Self-signed certificates have no CA to hint at.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match verify_chain(end_entity, intermediates, self.clock.unix_secs(), None) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(error) => self.outcome.fail(error),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12(&self.outcome)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.outcome, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SUPPORTED_SCHEMES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p_identity::Keypair;

    use super::*;
    use crate::tls::TlsIdentity;

    fn identity(n: u8) -> TlsIdentity {
        let host = Keypair::ed25519_from_bytes([n; 32]).expect("32-byte ed25519 secret");
        TlsIdentity::new(&host, [n; 32]).expect("identity")
    }

    fn clock() -> WallClock {
        WallClock::new(Duration::from_secs(1_700_000_000))
    }

    #[test]
    fn a_chain_of_two_certificates_is_refused_and_recorded() {
        let verifier = ClientCertificateVerifier::new(clock());
        let cert = identity(1).certificate().clone();
        let result = verifier.verify_client_cert(
            &cert,
            std::slice::from_ref(&cert),
            UnixTime::since_unix_epoch(Duration::ZERO),
        );
        assert!(matches!(
            result,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(_)
            ))
        ));
        assert_eq!(
            verifier.outcome().take_failure(),
            Some(CertificateError::UnexpectedChainLength(2))
        );
    }

    #[test]
    fn verifiers_use_the_wall_clock_not_rustls_time() {
        // rustls' `now` says 1970; the wall clock says 2023 and wins.
        let verifier = ServerCertificateVerifier::new(clock(), None);
        let cert = identity(1).certificate().clone();
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let result = verifier.verify_server_cert(
            &cert,
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::ZERO),
        );
        assert!(result.is_ok());
        assert_eq!(verifier.outcome().last_failure(), None);
    }

    #[test]
    fn tls12_handshake_signatures_are_refused() {
        // rustls cannot reach this with our TLS 1.3-only configs, and its signed-struct type
        // cannot be built outside rustls, so the shared refusal is tested directly.
        let verifier = ServerCertificateVerifier::new(clock(), None);
        assert!(refuse_tls12(&verifier.outcome).is_err());
        assert!(matches!(
            verifier.outcome().take_failure(),
            Some(CertificateError::UnsupportedSignatureScheme(_))
        ));
        assert_eq!(
            verifier.supported_verify_schemes(),
            vec![
                SignatureScheme::ED25519,
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ECDSA_NISTP384_SHA384
            ]
        );
    }

    #[test]
    fn client_authentication_is_mandatory_without_hints() {
        let verifier = ClientCertificateVerifier::new(clock());
        assert!(verifier.offer_client_auth());
        assert!(verifier.client_auth_mandatory());
        assert!(verifier.root_hint_subjects().is_empty());
    }
}
