//! Channel keys for hubcast: the offline root key, the online signing key, the
//! certificate that binds them, and the trust fingerprint hubs are configured with.
//!
//! A channel is named by its root public key. The root key stays offline; it
//! certifies a short-lived online signing key ([`Certificate`]), and the broadcaster
//! signs manifests and tickets with that signing key. A hub is given only the
//! [`Fingerprint`] of the root key (or the `root.pub` file) and checks every
//! certificate against it.
//!
//! This crate does no IO beyond reading and writing key files (see [`files`]).

pub mod cert;
pub mod files;
mod hex;
pub mod node;
pub mod revocation;
pub mod rotation;

pub use cert::{CertError, Certificate, CERTIFICATE_LEN};
pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey, SIGNATURE_LENGTH};
pub use files::{ChannelKeys, KeyFileError, RootKeys, SignerKeys};
pub use hex::{decode_hex, encode_hex};
pub use node::{NodeAddr, NodeId, NodeKey};
pub use revocation::{RevocationError, RevocationList, MAX_REVOCATIONS_LEN, MAX_REVOKED};
pub use rotation::{RootRotation, RotationError, ROTATION_LEN};

use std::fmt;
use std::str::FromStr;

/// Domain separation for the fingerprint hash.
const FINGERPRINT_CONTEXT: &str = "hubcast 2026 channel root fingerprint v1";

/// The trust fingerprint of a channel: BLAKE3 (derive-key mode) of the root public
/// key. Printed and parsed as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(root: &VerifyingKey) -> Fingerprint {
        Fingerprint(blake3::derive_key(FINGERPRINT_CONTEXT, root.as_bytes()))
    }

    /// A short tag carried in every datagram header so a hub can drop traffic of
    /// other channels sharing a group before doing any cryptography. Not a
    /// security boundary: the certificate check is.
    pub fn channel_tag(&self) -> u64 {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(tag)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({}…)", &encode_hex(&self.0[..6]))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a fingerprint is 64 hex characters, as printed by `broadcaster keygen`")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = decode_hex(s.trim()).ok_or(BadFingerprint)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| BadFingerprint)?;
        Ok(Fingerprint(arr))
    }
}

/// What a hub trusts: one channel root, named by its fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    pub fingerprint: Fingerprint,
}

impl TrustAnchor {
    pub fn new(fingerprint: Fingerprint) -> Self {
        TrustAnchor { fingerprint }
    }

    /// Is `root` the key this anchor names?
    pub fn trusts(&self, root: &VerifyingKey) -> bool {
        Fingerprint::of(root) == self.fingerprint
    }
}

/// Sign `body` under a domain-separation `context`, so a signature made for one
/// kind of message can never be replayed as another.
pub fn sign_with_context(key: &SigningKey, context: &[u8], body: &[u8]) -> Signature {
    use ed25519_dalek::Signer;
    let mut msg = Vec::with_capacity(context.len() + body.len());
    msg.extend_from_slice(context);
    msg.extend_from_slice(body);
    key.sign(&msg)
}

/// Verify a signature made by [`sign_with_context`]. Uses strict verification
/// (rejects small-order and non-canonical points).
pub fn verify_with_context(key: &VerifyingKey, context: &[u8], body: &[u8], signature: &Signature) -> bool {
    let mut msg = Vec::with_capacity(context.len() + body.len());
    msg.extend_from_slice(context);
    msg.extend_from_slice(body);
    key.verify_strict(&msg, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_through_text() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let fp = Fingerprint::of(&key.verifying_key());
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert_eq!("abc".parse::<Fingerprint>(), Err(BadFingerprint));
        assert_eq!(text[..62].parse::<Fingerprint>(), Err(BadFingerprint));
    }

    #[test]
    fn context_separates_signatures() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let sig = sign_with_context(&key, b"a", b"body");
        assert!(verify_with_context(&key.verifying_key(), b"a", b"body", &sig));
        assert!(!verify_with_context(&key.verifying_key(), b"b", b"body", &sig));
        assert!(!verify_with_context(&key.verifying_key(), b"a", b"bodz", &sig));
    }
}
