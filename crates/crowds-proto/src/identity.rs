//! Ed25519 identity keys: the jondo's identity, the blender's signing key.
//!
//! Owns key generation, signing and verification, and the conversion between a raw
//! 32-byte public key and the DER `SubjectPublicKeyInfo` form TLS raw public keys use.
//! It does not read or write files: callers persist [`SecretKey::pkcs8`] themselves.

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::fmt;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Errors about keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The stored private key is not a valid Ed25519 PKCS#8 document.
    #[error("not a valid Ed25519 private key (PKCS#8)")]
    BadPrivateKey,
    /// A public key is not 32 bytes of hex.
    #[error("not a valid Ed25519 public key: expected 64 hex digits")]
    BadPublicKey,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// An Ed25519 public key, 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The DER `SubjectPublicKeyInfo` encoding, as sent in TLS raw-public-key handshakes.
    pub fn to_spki(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(44);
        out.extend_from_slice(&ED25519_SPKI_PREFIX);
        out.extend_from_slice(&self.0);
        out
    }

    /// Parses an Ed25519 `SubjectPublicKeyInfo`; anything else yields `None`.
    pub fn from_spki(spki: &[u8]) -> Option<Self> {
        let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
        Some(Self(key.try_into().ok()?))
    }

    /// Lower-case hex, the form used in files and status output.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::BadPublicKey)?;
        Ok(Self(bytes.try_into().map_err(|_| KeyError::BadPublicKey)?))
    }

    /// Verifies an Ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An Ed25519 key pair. `Debug` never prints the secret.
pub struct SecretKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl SecretKey {
    /// Generates a fresh key from the system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Rng)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// Loads a key from its PKCS#8 (v1 or v2) DER encoding.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::BadPrivateKey)?;
        Ok(Self {
            pkcs8: der.to_vec(),
            pair,
        })
    }

    /// The PKCS#8 DER encoding, for storing in a 0600 file.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // Wipe our copy of the private key (ring keeps its own expanded copy, which it
        // does not expose for wiping).
        zeroize::Zeroize::zeroize(&mut self.pkcs8);
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretKey(public {:?}, secret [redacted])",
            self.public()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trip_and_sign() {
        let key = SecretKey::generate().expect("key");
        let public = key.public();
        assert_eq!(PublicKey::from_spki(&public.to_spki()), Some(public));
        assert_eq!(PublicKey::from_hex(&public.to_hex()).expect("hex"), public);
        let sig = key.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellp", &sig));
        let again = SecretKey::from_pkcs8(key.pkcs8()).expect("reload");
        assert_eq!(again.public(), public);
        assert!(!format!("{key:?}").contains(&hex::encode(key.pkcs8())));
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(PublicKey::from_hex("zz").is_err());
        assert!(PublicKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(PublicKey::from_spki(&[0u8; 44]).is_none());
        assert!(SecretKey::from_pkcs8(b"garbage").is_err());
    }
}
