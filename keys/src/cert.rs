//! Root → signing-key certificates.
//!
//! Byte layout (152 bytes, integers big-endian):
//!
//! ```text
//! 0   32  root public key (Ed25519)
//! 32  32  signing public key (Ed25519)
//! 64   8  not_before, unix seconds
//! 72   8  not_after, unix seconds (exclusive)
//! 80   8  serial
//! 88  64  root signature over bytes 0..88, context "hubcast cert v1"
//! ```

use crate::{sign_with_context, verify_with_context, TrustAnchor};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

pub const CERTIFICATE_LEN: usize = 152;
const SIGNED_LEN: usize = 88;
const CERT_CONTEXT: &[u8] = b"hubcast cert v1";

/// A root key's statement that `signing` may sign for the channel between
/// `not_before` and `not_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub root: VerifyingKey,
    pub signing: VerifyingKey,
    pub not_before: u64,
    pub not_after: u64,
    pub serial: u64,
    pub signature: Signature,
}

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum CertError {
    /// Wrong length, or a public key that is not a valid curve point.
    #[error("certificate is malformed")]
    Malformed,
    /// Signed by a root that is not the one the hub trusts.
    #[error("certificate is from another root than the trusted one")]
    UntrustedRoot,
    /// The root signature does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// Outside its validity window.
    #[error("certificate is not valid at this time (expired or not yet valid)")]
    OutsideValidity,
}

impl Certificate {
    /// Issue a certificate: `root` vouches for `signing` over the window.
    pub fn issue(
        root: &SigningKey,
        signing: &VerifyingKey,
        not_before: u64,
        not_after: u64,
        serial: u64,
    ) -> Certificate {
        let mut cert = Certificate {
            root: root.verifying_key(),
            signing: *signing,
            not_before,
            not_after,
            serial,
            signature: Signature::from_bytes(&[0u8; 64]),
        };
        cert.signature = sign_with_context(root, CERT_CONTEXT, &cert.signed_bytes());
        cert
    }

    fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut b = [0u8; SIGNED_LEN];
        b[0..32].copy_from_slice(self.root.as_bytes());
        b[32..64].copy_from_slice(self.signing.as_bytes());
        b[64..72].copy_from_slice(&self.not_before.to_be_bytes());
        b[72..80].copy_from_slice(&self.not_after.to_be_bytes());
        b[80..88].copy_from_slice(&self.serial.to_be_bytes());
        b
    }

    pub fn encode(&self) -> [u8; CERTIFICATE_LEN] {
        let mut b = [0u8; CERTIFICATE_LEN];
        b[..SIGNED_LEN].copy_from_slice(&self.signed_bytes());
        b[SIGNED_LEN..].copy_from_slice(&self.signature.to_bytes());
        b
    }

    /// Parse the fixed layout. Does not verify anything but curve-point validity.
    pub fn decode(bytes: &[u8]) -> Result<Certificate, CertError> {
        let b: &[u8; CERTIFICATE_LEN] = bytes.try_into().map_err(|_| CertError::Malformed)?;
        let key = |r: std::ops::Range<usize>| {
            let arr: [u8; 32] = b[r].try_into().map_err(|_| CertError::Malformed)?;
            VerifyingKey::from_bytes(&arr).map_err(|_| CertError::Malformed)
        };
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(a)
        };
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[SIGNED_LEN..]);
        Ok(Certificate {
            root: key(0..32)?,
            signing: key(32..64)?,
            not_before: u64_at(64),
            not_after: u64_at(72),
            serial: u64_at(80),
            signature: Signature::from_bytes(&sig),
        })
    }

    /// Check the root against the anchor and the signature. Validity in time is
    /// separate ([`Certificate::check_validity`]) so callers can cache this result.
    pub fn verify_signature(&self, anchor: &TrustAnchor) -> Result<(), CertError> {
        if !anchor.trusts(&self.root) {
            return Err(CertError::UntrustedRoot);
        }
        if !verify_with_context(&self.root, CERT_CONTEXT, &self.signed_bytes(), &self.signature) {
            return Err(CertError::BadSignature);
        }
        Ok(())
    }

    pub fn check_validity(&self, unix_now: u64) -> Result<(), CertError> {
        if unix_now < self.not_before || unix_now >= self.not_after {
            return Err(CertError::OutsideValidity);
        }
        Ok(())
    }

    /// Full check: trusted root, good signature, valid now. Returns the key it certifies.
    pub fn verify(&self, anchor: &TrustAnchor, unix_now: u64) -> Result<VerifyingKey, CertError> {
        self.verify_signature(anchor)?;
        self.check_validity(unix_now)?;
        Ok(self.signing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fingerprint;

    fn keys() -> (SigningKey, SigningKey) {
        (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]))
    }

    #[test]
    fn issued_certificate_verifies_and_round_trips() {
        let (root, signing) = keys();
        let cert = Certificate::issue(&root, &signing.verifying_key(), 100, 200, 5);
        let anchor = TrustAnchor::new(Fingerprint::of(&root.verifying_key()));
        let decoded = Certificate::decode(&cert.encode()).unwrap();
        assert_eq!(decoded, cert);
        assert_eq!(decoded.verify(&anchor, 150), Ok(signing.verifying_key()));
        assert_eq!(decoded.verify(&anchor, 99), Err(CertError::OutsideValidity));
        assert_eq!(decoded.verify(&anchor, 200), Err(CertError::OutsideValidity));
    }

    #[test]
    fn other_root_and_tampering_are_refused() {
        let (root, signing) = keys();
        let other = SigningKey::from_bytes(&[3; 32]);
        let cert = Certificate::issue(&other, &signing.verifying_key(), 0, u64::MAX, 1);
        let anchor = TrustAnchor::new(Fingerprint::of(&root.verifying_key()));
        assert_eq!(cert.verify(&anchor, 10), Err(CertError::UntrustedRoot));

        let good = Certificate::issue(&root, &signing.verifying_key(), 0, 100, 1);
        let mut bytes = good.encode();
        bytes[75] ^= 1; // extend not_after
        let forged = Certificate::decode(&bytes).unwrap();
        assert_eq!(forged.verify(&anchor, 10), Err(CertError::BadSignature));
        assert_eq!(Certificate::decode(&bytes[..100]), Err(CertError::Malformed));
    }
}
