//! Host identity: Ed25519 keys, libp2p `PeerId`s, and the key file format.
//!
//! Keys come from `libp2p-identity`; this module adds deterministic construction (the core has
//! no OS randomness: a key is made from 32 seed bytes supplied by the caller) and a key file
//! format for persisting a host key.
//!
//! # Key file format
//!
//! A UTF-8 text file:
//!
//! ```text
//! # dep2p host key. Keep this file secret: it is the node's identity.
//! dep2p-key-v1 <hex of the libp2p protobuf encoding of the private key>
//! ```
//!
//! Lines starting with `#` and blank lines are ignored. For compatibility with go-libp2p and
//! kubo, a file holding the raw protobuf encoding of a private key (binary) is accepted too.

pub use libp2p_identity::{Keypair, PeerId, PublicKey};

/// The first word of the key line in a dep2p key file.
pub const KEY_FILE_TAG: &str = "dep2p-key-v1";

/// Why a key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file is neither a dep2p key file nor a raw protobuf private key.
    #[error(
        "not a key file: expected a line starting with `{KEY_FILE_TAG}` or a protobuf private key"
    )]
    UnknownFormat,
    /// The key line's hex payload is invalid.
    #[error("key file line {line}: invalid hex")]
    BadHex {
        /// 1-based line number.
        line: usize,
    },
    /// The file holds more than one key line.
    #[error("key file line {line}: a second key; a key file holds exactly one")]
    SeveralKeys {
        /// 1-based line number of the second key.
        line: usize,
    },
    /// The bytes decode, but not to a usable private key.
    #[error("key file holds an invalid private key: {0}")]
    InvalidKey(String),
}

/// Makes the Ed25519 keypair whose secret is `seed`.
///
/// The same seed always gives the same key: production callers pass 32 bytes from the OS
/// random generator (read by the adapter); tests and the simulator pass fixed seeds.
#[must_use]
pub fn keypair_from_seed(seed: [u8; 32]) -> Keypair {
    let mut secret = seed;
    // An Ed25519 secret is any 32 bytes, so this cannot fail.
    Keypair::ed25519_from_bytes(&mut secret).expect("any 32 bytes are an Ed25519 secret")
}

/// Encodes `key` in the dep2p key file format.
pub fn encode_key_file(key: &Keypair) -> Result<String, KeyFileError> {
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| KeyFileError::InvalidKey(e.to_string()))?;
    let mut out =
        String::from("# dep2p host key. Keep this file secret: it is the node's identity.\n");
    out.push_str(KEY_FILE_TAG);
    out.push(' ');
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push('\n');
    Ok(out)
}

/// Decodes a key file: the dep2p text format, or a raw protobuf private key.
pub fn decode_key_file(contents: &[u8]) -> Result<Keypair, KeyFileError> {
    let Ok(text) = std::str::from_utf8(contents) else {
        return decode_protobuf(contents).map_err(|_| KeyFileError::UnknownFormat);
    };
    let mut found: Option<Vec<u8>> = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(hex) = line.strip_prefix(KEY_FILE_TAG) else {
            return decode_protobuf(contents).map_err(|_| KeyFileError::UnknownFormat);
        };
        if found.is_some() {
            return Err(KeyFileError::SeveralKeys { line: index + 1 });
        }
        found = Some(decode_hex(hex.trim()).ok_or(KeyFileError::BadHex { line: index + 1 })?);
    }
    let bytes = found.ok_or(KeyFileError::UnknownFormat)?;
    decode_protobuf(&bytes)
}

fn decode_protobuf(bytes: &[u8]) -> Result<Keypair, KeyFileError> {
    Keypair::from_protobuf_encoding(bytes).map_err(|e| KeyFileError::InvalidKey(e.to_string()))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || hex.is_empty() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_peer_id_and_different_seeds_differ() {
        let a = keypair_from_seed([1; 32]).public().to_peer_id();
        assert_eq!(a, keypair_from_seed([1; 32]).public().to_peer_id());
        assert_ne!(a, keypair_from_seed([2; 32]).public().to_peer_id());
        assert!(a.to_base58().starts_with("12D3KooW"), "{a}");
    }

    #[test]
    fn key_file_round_trips() {
        let key = keypair_from_seed([7; 32]);
        let file = encode_key_file(&key).unwrap();
        let back = decode_key_file(file.as_bytes()).unwrap();
        assert_eq!(back.public(), key.public());
    }

    #[test]
    fn raw_protobuf_key_files_are_accepted() {
        let key = keypair_from_seed([8; 32]);
        let raw = key.to_protobuf_encoding().unwrap();
        assert_eq!(decode_key_file(&raw).unwrap().public(), key.public());
    }

    #[test]
    fn bad_key_files_name_their_fault() {
        assert_eq!(
            decode_key_file(b"hello\n").map(|_| ()),
            Err(KeyFileError::UnknownFormat)
        );
        assert_eq!(
            decode_key_file(b"dep2p-key-v1 zz\n").map(|_| ()),
            Err(KeyFileError::BadHex { line: 1 })
        );
        let file = encode_key_file(&keypair_from_seed([9; 32])).unwrap();
        let twice = format!("{file}{file}");
        assert_eq!(
            decode_key_file(twice.as_bytes()).map(|_| ()),
            Err(KeyFileError::SeveralKeys { line: 4 })
        );
        assert!(matches!(
            decode_key_file(b"dep2p-key-v1 0011\n"),
            Err(KeyFileError::InvalidKey(_))
        ));
        assert_eq!(
            decode_key_file(b"").map(|_| ()),
            Err(KeyFileError::UnknownFormat)
        );
    }
}
