//! The root's list of revoked signing-key certificates.
//!
//! Signed by the root (offline, `broadcaster revoke`) and versioned: a hub
//! takes a list only from the root it trusts and only with a higher version
//! than the one it holds, and refuses from then on every datagram whose
//! certificate's serial the list names. The broadcaster carries the newest
//! list in-band; it cannot make one.
//!
//! Byte layout (integers big-endian), 114 + 8·n bytes:
//!
//! ```text
//! 0   32  root public key (Ed25519)
//! 32   8  version, 1 and up
//! 40   8  issued, unix seconds
//! 48   2  n, revoked serials (0..=MAX_REVOKED)
//! 50  8n  the serials, strictly ascending
//! ..  64  root signature over every byte before, context "hubcast revocations v1"
//! ```

use crate::{sign_with_context, verify_with_context, CertError, TrustAnchor};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use std::collections::BTreeSet;

const CONTEXT: &[u8] = b"hubcast revocations v1";
/// Serials one list names at most: it fits one datagram. A channel with more
/// revoked keys than this has a leaking root: rotate it.
pub const MAX_REVOKED: usize = 128;
const HEAD_LEN: usize = 50;
const SIGNATURE_LEN: usize = 64;
/// The longest list's encoding.
pub const MAX_REVOCATIONS_LEN: usize = HEAD_LEN + 8 * MAX_REVOKED + SIGNATURE_LEN;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationList {
    pub root: VerifyingKey,
    pub version: u64,
    pub issued: u64,
    /// Strictly ascending.
    serials: Vec<u64>,
    pub signature: Signature,
}

/// Why a revocation list was not made or not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("a revocation list names at most {MAX_REVOKED} serials; with more, rotate the root")]
    TooMany,
    #[error("revocation list is malformed")]
    Malformed,
}

impl RevocationList {
    /// The root's signed list of `serials` at `version`.
    pub fn issue(
        root: &SigningKey,
        version: u64,
        issued: u64,
        serials: &BTreeSet<u64>,
    ) -> Result<RevocationList, RevocationError> {
        if serials.len() > MAX_REVOKED {
            return Err(RevocationError::TooMany);
        }
        let mut list = RevocationList {
            root: root.verifying_key(),
            version,
            issued,
            serials: serials.iter().copied().collect(),
            signature: Signature::from_bytes(&[0; 64]),
        };
        list.signature = sign_with_context(root, CONTEXT, &list.signed_bytes());
        Ok(list)
    }

    pub fn serials(&self) -> &[u64] {
        &self.serials
    }

    /// Does the list revoke the certificate with this serial?
    pub fn revokes(&self, serial: u64) -> bool {
        self.serials.binary_search(&serial).is_ok()
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEAD_LEN + 8 * self.serials.len());
        b.extend_from_slice(self.root.as_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.issued.to_be_bytes());
        // At most MAX_REVOKED (issue and decode check it): fits two bytes.
        b.extend_from_slice(&(self.serials.len() as u16).to_be_bytes());
        for s in &self.serials {
            b.extend_from_slice(&s.to_be_bytes());
        }
        b
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.signed_bytes();
        b.extend_from_slice(&self.signature.to_bytes());
        b
    }

    /// Parse the layout exactly: the length the count says, a count within
    /// bounds, serials strictly ascending, a valid curve point. Verifies
    /// nothing else.
    pub fn decode(bytes: &[u8]) -> Result<RevocationList, RevocationError> {
        let u64_at = |at: usize| -> u64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(a)
        };
        if bytes.len() < HEAD_LEN + SIGNATURE_LEN {
            return Err(RevocationError::Malformed);
        }
        let n = usize::from(u16::from_be_bytes([bytes[48], bytes[49]]));
        if n > MAX_REVOKED || bytes.len() != HEAD_LEN + 8 * n + SIGNATURE_LEN {
            return Err(RevocationError::Malformed);
        }
        let mut root = [0u8; 32];
        root.copy_from_slice(&bytes[..32]);
        let root = VerifyingKey::from_bytes(&root).map_err(|_| RevocationError::Malformed)?;
        let serials: Vec<u64> = (0..n).map(|i| u64_at(HEAD_LEN + 8 * i)).collect();
        if serials.windows(2).any(|w| w[0] >= w[1]) {
            return Err(RevocationError::Malformed);
        }
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[bytes.len() - SIGNATURE_LEN..]);
        Ok(RevocationList {
            root,
            version: u64_at(32),
            issued: u64_at(40),
            serials,
            signature: Signature::from_bytes(&sig),
        })
    }

    /// Signed by the root `anchor` names?
    pub fn verify(&self, anchor: &TrustAnchor) -> Result<(), CertError> {
        if !anchor.trusts(&self.root) {
            return Err(CertError::UntrustedRoot);
        }
        if !verify_with_context(&self.root, CONTEXT, &self.signed_bytes(), &self.signature) {
            return Err(CertError::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fingerprint;
    use proptest::prelude::*;

    fn root() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    #[test]
    fn a_list_round_trips_verifies_and_refuses_tampering() {
        let serials: BTreeSet<u64> = [9, 2, 40].into();
        let list = RevocationList::issue(&root(), 3, 1000, &serials).unwrap();
        let anchor = TrustAnchor::new(Fingerprint::of(&root().verifying_key()));
        let bytes = list.encode();
        assert_eq!(bytes.len(), 114 + 8 * 3);
        let back = RevocationList::decode(&bytes).unwrap();
        assert_eq!(back, list);
        assert_eq!(back.verify(&anchor), Ok(()));
        assert!(back.revokes(9) && back.revokes(40) && !back.revokes(3));
        assert_eq!(back.serials(), &[2, 9, 40]);

        let mut bumped = bytes.clone();
        bumped[39] ^= 1; // another version
        assert_eq!(RevocationList::decode(&bumped).unwrap().verify(&anchor), Err(CertError::BadSignature));
        let other = TrustAnchor::new(Fingerprint::of(&SigningKey::from_bytes(&[6; 32]).verifying_key()));
        assert_eq!(back.verify(&other), Err(CertError::UntrustedRoot));
        let too_many: BTreeSet<u64> = (0..=MAX_REVOKED as u64).collect();
        assert_eq!(RevocationList::issue(&root(), 1, 0, &too_many), Err(RevocationError::TooMany));
    }

    #[test]
    fn unordered_or_miscounted_serials_are_malformed() {
        let list = RevocationList::issue(&root(), 1, 0, &[1, 2].into()).unwrap();
        let mut b = list.encode();
        b[50..58].copy_from_slice(&5u64.to_be_bytes()); // 5, 2: not ascending
        assert_eq!(RevocationList::decode(&b), Err(RevocationError::Malformed));
        let mut b = list.encode();
        b[49] = 3; // says three, holds two
        assert_eq!(RevocationList::decode(&b), Err(RevocationError::Malformed));
        assert_eq!(RevocationList::decode(&list.encode()[..100]), Err(RevocationError::Malformed));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_refuse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(l) = RevocationList::decode(&bytes) {
                prop_assert_eq!(l.encode(), bytes);
            }
        }

        #[test]
        fn any_set_round_trips(serials in proptest::collection::btree_set(any::<u64>(), 0..=MAX_REVOKED), version: u64) {
            let list = RevocationList::issue(&root(), version, 7, &serials).unwrap();
            let back = RevocationList::decode(&list.encode()).unwrap();
            prop_assert!(serials.iter().all(|s| back.revokes(*s)));
            prop_assert_eq!(back, list);
        }
    }
}
