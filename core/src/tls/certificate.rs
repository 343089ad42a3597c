//! The libp2p TLS certificate: generating ours, verifying a peer's.
//!
//! Generation is deterministic: the certificate key is the Ed25519 key whose seed the caller
//! passes (taken from the node's seed), the validity window is fixed and wide
//! (1975-01-01 to 4096-01-01, as the spec suggests, so no clock is needed), the serial number is
//! a hash of the certificate's public key, and Ed25519 signatures are deterministic. One seed
//! therefore always gives byte-identical certificates.
//!
//! Verification follows the spec's "Peer Authentication" rules; see [`verify_certificate`].

use std::fmt;

use libp2p_identity::{Keypair, PeerId, PublicKey};
use prost::Message as _;
use ring::signature::{self as ring_sig, Ed25519KeyPair, KeyPair as _};
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer as _, X509Certificate, X509Version};

use super::LIBP2P_EXTENSION_OID;

/// The host key signs this prefix followed by the certificate key's DER SubjectPublicKeyInfo.
const SIGNING_PREFIX: &[u8] = b"libp2p-tls-handshake:";

/// PKCS#8 v1 (RFC 8410) for an Ed25519 private key, up to the 32-byte seed:
/// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }`.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Domain separator for the serial number hash, so it cannot collide with other uses of the key.
const SERIAL_DOMAIN: &[u8] = b"dep2p-tls-serial:";

// DER contents of the object identifiers we look at.
/// 1.3.6.1.4.1.53594.1.1, the libp2p Public Key Extension.
const OID_LIBP2P_EXTENSION: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xa2, 0x5a, 0x01, 0x01];
/// 1.3.101.112, Ed25519 (key and signature algorithm).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// 1.2.840.10045.2.1, id-ecPublicKey.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7, the P-256 curve.
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.132.0.34, the P-384 curve.
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// 1.2.840.10045.4.3.2, ecdsa-with-SHA256.
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// 1.2.840.10045.4.3.3, ecdsa-with-SHA384.
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
/// Critical extensions we understand well enough to accept: they constrain how a key may be
/// used in a chain or which purposes it serves, and a lone self-signed leaf meets any of them.
/// Some libp2p implementations mark basicConstraints and keyUsage critical.
const UNDERSTOOD_CRITICAL_EXTENSIONS: [&[u8]; 3] = [
    &[0x55, 0x1d, 0x13], // 2.5.29.19 basicConstraints
    &[0x55, 0x1d, 0x0f], // 2.5.29.15 keyUsage
    &[0x55, 0x1d, 0x25], // 2.5.29.37 extKeyUsage
];
/// DER tag of an OBJECT IDENTIFIER.
const TAG_OID: u32 = 6;

/// Why a peer's certificate was refused. Every variant is the peer's fault or an
/// incompatibility; none is a local error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The bytes are not one DER X.509 v3 certificate, or a field in it (the libp2p extension,
    /// the host key) does not decode.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The peer sent no certificate or more than one; libp2p allows exactly one.
    #[error("expected exactly one certificate, got {0}")]
    UnexpectedChainLength(usize),
    /// The certificate's signature does not verify with the certificate's own key.
    #[error("the certificate's self-signature does not verify")]
    InvalidSelfSignature,
    /// The certificate key, the certificate signature algorithm or the TLS handshake signature
    /// scheme is one we do not support.
    #[error("unsupported signature scheme: {0}")]
    UnsupportedSignatureScheme(String),
    /// The TLS 1.3 handshake signature (CertificateVerify) does not verify with the certificate
    /// key: the peer does not hold the certificate's private key.
    #[error("the TLS handshake signature does not verify with the certificate key")]
    InvalidHandshakeSignature,
    /// The certificate's validity ended before `now` (unix seconds).
    #[error("certificate expired at unix time {not_after}, now is {now}")]
    Expired {
        /// End of validity, unix seconds.
        not_after: i64,
        /// The time the certificate was checked at, unix seconds.
        now: u64,
    },
    /// The certificate's validity starts after `now` (unix seconds).
    #[error("certificate not valid before unix time {not_before}, now is {now}")]
    NotYetValid {
        /// Start of validity, unix seconds.
        not_before: i64,
        /// The time the certificate was checked at, unix seconds.
        now: u64,
    },
    /// The certificate has a critical extension other than the libp2p one and the few we
    /// understand (the spec requires aborting).
    #[error("unknown critical extension {0}")]
    UnknownCriticalExtension(String),
    /// The libp2p Public Key Extension (1.3.6.1.4.1.53594.1.1) is absent.
    #[error("the libp2p public key extension is missing")]
    MissingLibp2pExtension,
    /// The host key's signature in the libp2p extension does not cover this certificate's key.
    #[error("the libp2p extension signature does not verify with the host key")]
    InvalidExtensionSignature,
    /// The host key is of a type we do not support (we support Ed25519 host keys).
    #[error("unsupported host key type {0}")]
    UnsupportedHostKey(String),
    /// The peer authenticated as a different peer than the one dialed.
    #[error("peer id mismatch: expected {expected}, the certificate authenticates {actual}")]
    PeerIdMismatch {
        /// The PeerId that was dialed.
        expected: PeerId,
        /// The PeerId the certificate authenticates.
        actual: PeerId,
    },
}

/// Generating our certificate failed. This is a local error (it cannot happen with a valid
/// Ed25519 host key), never the peer's.
#[derive(Debug, thiserror::Error)]
pub enum TlsIdentityError {
    /// The host key could not sign the certificate key.
    #[error("host key signing failed: {0}")]
    HostKeySigning(#[from] libp2p_identity::SigningError),
    /// ring rejected the certificate key derived from the seed.
    #[error("certificate key rejected: {0}")]
    CertificateKey(String),
    /// rcgen could not build the certificate.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}

/// Our side of the libp2p TLS handshake: the self-signed certificate carrying the host key, and
/// the certificate's private key.
pub struct TlsIdentity {
    certificate: CertificateDer<'static>,
    private_key: PrivatePkcs8KeyDer<'static>,
    peer_id: PeerId,
}

impl TlsIdentity {
    /// Builds the certificate for `host`, with an Ed25519 certificate key derived from
    /// `cert_key_seed`. Deterministic: the same inputs give byte-identical certificates. The seed
    /// should come from the node's seed and be kept secret: it is the certificate's private key.
    pub fn new(host: &Keypair, cert_key_seed: [u8; 32]) -> Result<Self, TlsIdentityError> {
        Self::build(host, cert_key_seed, &Recipe::standard(host))
    }

    /// Builds a certificate from a recipe; tests use non-standard recipes to craft bad
    /// certificates.
    fn build(
        host: &Keypair,
        seed: [u8; 32],
        recipe: &Recipe<'_>,
    ) -> Result<Self, TlsIdentityError> {
        let mut pkcs8 = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + seed.len());
        pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        pkcs8.extend_from_slice(&seed);
        let key = CertificateKey::from_pkcs8(&pkcs8)?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);

        let mut params = rcgen::CertificateParams::default();
        let (year, month, day) = recipe.not_before;
        params.not_before = rcgen::date_time_ymd(year, month, day);
        let (year, month, day) = recipe.not_after;
        params.not_after = rcgen::date_time_ymd(year, month, day);
        params.serial_number = Some(serial_number(&spki));
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::OrganizationName, "dep2p");
        params.distinguished_name = name;
        if let Some(signer) = recipe.extension_signer {
            let mut message = Vec::with_capacity(SIGNING_PREFIX.len() + spki.len());
            message.extend_from_slice(SIGNING_PREFIX);
            message.extend_from_slice(&spki);
            let signature = signer.sign(&message)?;
            let signed_key = encode_signed_key(&host.public().encode_protobuf(), &signature);
            let mut extension =
                rcgen::CustomExtension::from_oid_content(LIBP2P_EXTENSION_OID, signed_key);
            extension.set_criticality(true);
            params.custom_extensions.push(extension);
        }
        params
            .custom_extensions
            .extend(recipe.extra_extensions.iter().cloned());
        let certificate = params.self_signed(&key)?;

        Ok(Self {
            certificate: certificate.der().clone(),
            private_key: PrivatePkcs8KeyDer::from(pkcs8),
            peer_id: host.public().to_peer_id(),
        })
    }

    /// The certificate, DER-encoded.
    #[must_use]
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The certificate's private key (PKCS#8 v1, Ed25519), as rustls takes it.
    #[must_use]
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.private_key.clone_key())
    }

    /// The PeerId the certificate authenticates (the host key's).
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone_key(),
            peer_id: self.peer_id,
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsIdentity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// How to build a certificate. Production uses [`Recipe::standard`]; tests vary it.
struct Recipe<'a> {
    /// Start of validity as (year, month, day), midnight UTC.
    not_before: (i32, u8, u8),
    /// End of validity as (year, month, day), midnight UTC.
    not_after: (i32, u8, u8),
    /// The key that signs the libp2p extension; `None` omits the extension.
    extension_signer: Option<&'a Keypair>,
    extra_extensions: Vec<rcgen::CustomExtension>,
}

impl<'a> Recipe<'a> {
    fn standard(host: &'a Keypair) -> Self {
        Self {
            not_before: (1975, 1, 1),
            not_after: (4096, 1, 1),
            extension_signer: Some(host),
            extra_extensions: Vec::new(),
        }
    }
}

/// A serial number derived from the certificate key, so it is deterministic and differs between
/// certificate keys. 16 bytes with the top bit clear: a positive INTEGER within RFC 5280's 20
/// bytes.
fn serial_number(spki: &[u8]) -> rcgen::SerialNumber {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(SERIAL_DOMAIN);
    context.update(spki);
    let digest = context.finish();
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&digest.as_ref()[..16]);
    serial[0] &= 0x7f;
    serial[0] |= 0x40; // nonzero leading byte: the encoding is always 16 bytes
    rcgen::SerialNumber::from_slice(&serial)
}

/// The certificate key as an rcgen signer. Using ring directly (instead of `rcgen::KeyPair`)
/// keeps generation free of any random number generator.
struct CertificateKey {
    pair: Ed25519KeyPair,
}

impl CertificateKey {
    fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, TlsIdentityError> {
        // rustls loads the key the same way (PKCS#8 v1 has no public key to cross-check).
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| TlsIdentityError::CertificateKey(e.to_string()))?;
        Ok(Self { pair })
    }
}

impl rcgen::PublicKeyData for CertificateKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for CertificateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.pair.sign(msg).as_ref().to_vec())
    }
}

/// A peer certificate that passed [`verify_certificate`].
#[derive(Debug, Clone)]
pub struct VerifiedCertificate {
    host_key: PublicKey,
    peer_id: PeerId,
}

impl VerifiedCertificate {
    /// The peer's PeerId, derived from the host key in the libp2p extension.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The peer's host public key, from the libp2p extension.
    #[must_use]
    pub fn public_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// Checks that the certificate authenticates `expected`.
    pub fn expect_peer(&self, expected: PeerId) -> Result<(), CertificateError> {
        if self.peer_id == expected {
            Ok(())
        } else {
            Err(CertificateError::PeerIdMismatch {
                expected,
                actual: self.peer_id,
            })
        }
    }
}

/// Verifies a peer's libp2p TLS certificate at unix time `now_unix_secs` and returns the host key
/// it authenticates.
///
/// Checks, in order: `der` is exactly one DER X.509 v3 certificate without the deprecated unique
/// ids; its validity window contains `now_unix_secs`; its key is Ed25519, ECDSA P-256 or P-384 and
/// its self-signature verifies with that key; it has no critical extension we do not understand;
/// the libp2p extension is present, decodes, carries an Ed25519 host key, and the host key's
/// signature over `"libp2p-tls-handshake:" ‖ SubjectPublicKeyInfo` verifies. The PeerId comes from
/// that host key only.
pub fn verify_certificate(
    der: &[u8],
    now_unix_secs: u64,
) -> Result<VerifiedCertificate, CertificateError> {
    let cert = parse(der)?;
    check_validity(&cert, now_unix_secs)?;

    let key = CertificateKeyInfo::of(&cert)?;
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(CertificateError::Malformed(
            "outer and inner signature algorithms differ".into(),
        ));
    }
    let algorithm =
        key.certificate_signature_algorithm(cert.signature_algorithm.algorithm.as_bytes())?;
    if cert.signature_value.unused_bits != 0 {
        return Err(CertificateError::Malformed(
            "signature has unused bits".into(),
        ));
    }
    ring_sig::UnparsedPublicKey::new(algorithm, key.public_key)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| CertificateError::InvalidSelfSignature)?;

    let mut signed_key = None;
    for extension in cert.extensions() {
        let oid = extension.oid.as_bytes();
        if oid == OID_LIBP2P_EXTENSION {
            // x509-parser refuses duplicate extensions, so this runs at most once.
            signed_key = Some(extension.value);
        } else if extension.critical && !UNDERSTOOD_CRITICAL_EXTENSIONS.contains(&oid) {
            return Err(CertificateError::UnknownCriticalExtension(
                extension.oid.to_id_string(),
            ));
        }
    }
    let signed_key = signed_key.ok_or(CertificateError::MissingLibp2pExtension)?;
    let (host_key_bytes, signature) = decode_signed_key(signed_key)
        .ok_or_else(|| CertificateError::Malformed("libp2p extension is not a SignedKey".into()))?;
    let host_key = decode_host_key(host_key_bytes)?;

    let spki = cert.public_key().raw;
    let mut message = Vec::with_capacity(SIGNING_PREFIX.len() + spki.len());
    message.extend_from_slice(SIGNING_PREFIX);
    message.extend_from_slice(spki);
    if !host_key.verify(&message, signature) {
        return Err(CertificateError::InvalidExtensionSignature);
    }

    Ok(VerifiedCertificate {
        peer_id: host_key.to_peer_id(),
        host_key,
    })
}

/// Verifies a TLS 1.3 handshake signature (CertificateVerify) made with the key of `der`.
/// `der` must already have passed [`verify_certificate`].
pub(crate) fn verify_tls13_signature(
    der: &[u8],
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
) -> Result<(), CertificateError> {
    let cert = parse(der)?;
    let key = CertificateKeyInfo::of(&cert)?;
    let algorithm: &dyn ring_sig::VerificationAlgorithm = match (key.kind, scheme) {
        (KeyKind::Ed25519, SignatureScheme::ED25519) => &ring_sig::ED25519,
        (KeyKind::EcdsaP256, SignatureScheme::ECDSA_NISTP256_SHA256) => {
            &ring_sig::ECDSA_P256_SHA256_ASN1
        }
        (KeyKind::EcdsaP384, SignatureScheme::ECDSA_NISTP384_SHA384) => {
            &ring_sig::ECDSA_P384_SHA384_ASN1
        }
        (kind, scheme) => {
            return Err(CertificateError::UnsupportedSignatureScheme(format!(
                "{scheme:?} with a {kind:?} certificate key"
            )));
        }
    };
    ring_sig::UnparsedPublicKey::new(algorithm, key.public_key)
        .verify(message, signature)
        .map_err(|_| CertificateError::InvalidHandshakeSignature)
}

/// The TLS 1.3 signature schemes [`verify_tls13_signature`] accepts, most preferred first.
pub(crate) const SUPPORTED_SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
];

/// Parses exactly one X.509 v3 certificate, without the deprecated unique ids.
fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertificateError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertificateError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::Malformed(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    if cert.version() != X509Version::V3 {
        return Err(CertificateError::Malformed(format!(
            "X.509 version {} instead of 3",
            cert.version().0 + 1
        )));
    }
    if cert.tbs_certificate.issuer_uid.is_some() || cert.tbs_certificate.subject_uid.is_some() {
        return Err(CertificateError::Malformed(
            "deprecated unique identifier present".into(),
        ));
    }
    Ok(cert)
}

fn check_validity(cert: &X509Certificate<'_>, now: u64) -> Result<(), CertificateError> {
    let validity = cert.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let now_wide = i128::from(now);
    if now_wide < i128::from(not_before) {
        return Err(CertificateError::NotYetValid { not_before, now });
    }
    if now_wide > i128::from(not_after) {
        return Err(CertificateError::Expired { not_after, now });
    }
    Ok(())
}

/// The kinds of certificate key we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
}

/// A certificate's key: its kind and the raw key bits (the point for ECDSA, 32 bytes for
/// Ed25519), as ring takes them.
struct CertificateKeyInfo<'a> {
    kind: KeyKind,
    public_key: &'a [u8],
}

impl<'a> CertificateKeyInfo<'a> {
    fn of(cert: &'a X509Certificate<'_>) -> Result<Self, CertificateError> {
        let spki = cert.public_key();
        let algorithm = spki.algorithm.algorithm.as_bytes();
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .filter(|p| p.header.tag().0 == TAG_OID)
            .map(|p| p.data);
        let kind = match (algorithm, curve) {
            (OID_ED25519, _) => KeyKind::Ed25519,
            (OID_EC_PUBLIC_KEY, Some(OID_P256)) => KeyKind::EcdsaP256,
            (OID_EC_PUBLIC_KEY, Some(OID_P384)) => KeyKind::EcdsaP384,
            _ => {
                return Err(CertificateError::UnsupportedSignatureScheme(format!(
                    "certificate key algorithm {}",
                    spki.algorithm.algorithm.to_id_string()
                )));
            }
        };
        if spki.subject_public_key.unused_bits != 0 {
            return Err(CertificateError::Malformed(
                "public key has unused bits".into(),
            ));
        }
        let public_key: &'a [u8] = &spki.subject_public_key.data;
        Ok(Self { kind, public_key })
    }

    /// The ring algorithm that checks a certificate signature of algorithm `oid` with this key.
    fn certificate_signature_algorithm(
        &self,
        oid: &[u8],
    ) -> Result<&'static dyn ring_sig::VerificationAlgorithm, CertificateError> {
        Ok(match (self.kind, oid) {
            (KeyKind::Ed25519, OID_ED25519) => &ring_sig::ED25519,
            (KeyKind::EcdsaP256, OID_ECDSA_SHA256) => &ring_sig::ECDSA_P256_SHA256_ASN1,
            (KeyKind::EcdsaP256, OID_ECDSA_SHA384) => &ring_sig::ECDSA_P256_SHA384_ASN1,
            (KeyKind::EcdsaP384, OID_ECDSA_SHA384) => &ring_sig::ECDSA_P384_SHA384_ASN1,
            (KeyKind::EcdsaP384, OID_ECDSA_SHA256) => &ring_sig::ECDSA_P384_SHA256_ASN1,
            (kind, _) => {
                return Err(CertificateError::UnsupportedSignatureScheme(format!(
                    "certificate signature algorithm for a {kind:?} key"
                )));
            }
        })
    }
}

/// The protobuf `PublicKey { required KeyType Type = 1; required bytes Data = 2; }`, decoded
/// here only to tell an unsupported key type from a malformed key.
#[derive(Clone, PartialEq, prost::Message)]
struct PublicKeyProto {
    #[prost(int32, required, tag = "1")]
    key_type: i32,
    #[prost(bytes = "vec", required, tag = "2")]
    data: Vec<u8>,
}

/// The protobuf key type of Ed25519.
const KEY_TYPE_ED25519: i32 = 1;

fn decode_host_key(bytes: &[u8]) -> Result<PublicKey, CertificateError> {
    let proto = PublicKeyProto::decode(bytes)
        .map_err(|e| CertificateError::Malformed(format!("host public key: {e}")))?;
    if proto.key_type != KEY_TYPE_ED25519 {
        let name = match proto.key_type {
            0 => "RSA".to_owned(),
            2 => "Secp256k1".to_owned(),
            3 => "ECDSA".to_owned(),
            other => format!("unknown ({other})"),
        };
        return Err(CertificateError::UnsupportedHostKey(name));
    }
    PublicKey::try_decode_protobuf(bytes)
        .map_err(|e| CertificateError::Malformed(format!("host public key: {e}")))
}

// A minimal strict DER codec for `SignedKey ::= SEQUENCE { publicKey OCTET STRING,
// signature OCTET STRING }`.

const TAG_SEQUENCE: u8 = 0x30;
const TAG_OCTET_STRING: u8 = 0x04;

fn encode_signed_key(public_key: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(public_key.len() + signature.len() + 8);
    push_tlv(&mut body, TAG_OCTET_STRING, public_key);
    push_tlv(&mut body, TAG_OCTET_STRING, signature);
    let mut out = Vec::with_capacity(body.len() + 4);
    push_tlv(&mut out, TAG_SEQUENCE, &body);
    out
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// Reads one DER TLV with a one-byte tag: `(tag, content, rest)`. Refuses indefinite and
/// non-minimal lengths.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        if len_bytes[0] == 0 {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// Decodes a DER `SignedKey` into `(publicKey, signature)`.
fn decode_signed_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (TAG_SEQUENCE, body, []) = read_tlv(der)? else {
        return None;
    };
    let (TAG_OCTET_STRING, public_key, rest) = read_tlv(body)? else {
        return None;
    };
    let (TAG_OCTET_STRING, signature, []) = read_tlv(rest)? else {
        return None;
    };
    Some((public_key, signature))
}
