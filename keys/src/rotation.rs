//! Root rotation: a statement, signed by the old root and the new one, that
//! the channel's root is now the new key.
//!
//! The channel keeps its name (the first root's fingerprint, which hubs are
//! configured with); its roots form a chain, version 1 the first. A hub
//! follows the chain one version at a time from the root it trusts, and
//! keeps the newest in its store.
//!
//! Byte layout (integers big-endian), 200 bytes:
//!
//! ```text
//! 0     8  version of the new root, 2 and up
//! 8    32  old root public key (Ed25519), the root of version − 1
//! 40   32  new root public key
//! 72   64  old root's signature over bytes 0..72, context "hubcast root rotation v1"
//! 136  64  new root's signature over bytes 0..72, same context
//! ```

use crate::{sign_with_context, verify_with_context};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

const CONTEXT: &[u8] = b"hubcast root rotation v1";
const SIGNED_LEN: usize = 72;
pub const ROTATION_LEN: usize = SIGNED_LEN + 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootRotation {
    pub version: u64,
    pub old: VerifyingKey,
    pub new: VerifyingKey,
    pub old_signature: Signature,
    pub new_signature: Signature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("root rotation statement is malformed")]
    Malformed,
    /// One of the two signatures (or both) does not verify.
    #[error("root rotation statement is not signed by both roots")]
    BadSignature,
}

impl RootRotation {
    /// `old` hands the channel to `new`, which becomes root `version`.
    pub fn issue(old: &SigningKey, new: &SigningKey, version: u64) -> RootRotation {
        Self::sign_with(old, new, old.verifying_key(), new.verifying_key(), version)
    }

    /// Sign the statement "`old_key` → `new_key` at `version`" with any two
    /// keys: what [`RootRotation::issue`] does with the right ones, and what
    /// a forger does with the wrong ones (for tests).
    pub fn sign_with(
        old_signer: &SigningKey,
        new_signer: &SigningKey,
        old: VerifyingKey,
        new: VerifyingKey,
        version: u64,
    ) -> RootRotation {
        let mut r = RootRotation {
            version,
            old,
            new,
            old_signature: Signature::from_bytes(&[0; 64]),
            new_signature: Signature::from_bytes(&[0; 64]),
        };
        let body = r.signed_bytes();
        r.old_signature = sign_with_context(old_signer, CONTEXT, &body);
        r.new_signature = sign_with_context(new_signer, CONTEXT, &body);
        r
    }

    fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut b = [0u8; SIGNED_LEN];
        b[..8].copy_from_slice(&self.version.to_be_bytes());
        b[8..40].copy_from_slice(self.old.as_bytes());
        b[40..72].copy_from_slice(self.new.as_bytes());
        b
    }

    pub fn encode(&self) -> [u8; ROTATION_LEN] {
        let mut b = [0u8; ROTATION_LEN];
        b[..SIGNED_LEN].copy_from_slice(&self.signed_bytes());
        b[SIGNED_LEN..SIGNED_LEN + 64].copy_from_slice(&self.old_signature.to_bytes());
        b[SIGNED_LEN + 64..].copy_from_slice(&self.new_signature.to_bytes());
        b
    }

    /// Parse the fixed layout; checks the points and that the version is
    /// 2 or more and the two roots differ, nothing else.
    pub fn decode(bytes: &[u8]) -> Result<RootRotation, RotationError> {
        let b: &[u8; ROTATION_LEN] = bytes.try_into().map_err(|_| RotationError::Malformed)?;
        let key = |at: usize| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b[at..at + 32]);
            VerifyingKey::from_bytes(&k).map_err(|_| RotationError::Malformed)
        };
        let sig = |at: usize| {
            let mut s = [0u8; 64];
            s.copy_from_slice(&b[at..at + 64]);
            Signature::from_bytes(&s)
        };
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[..8]);
        let r = RootRotation {
            version: u64::from_be_bytes(v),
            old: key(8)?,
            new: key(40)?,
            old_signature: sig(SIGNED_LEN),
            new_signature: sig(SIGNED_LEN + 64),
        };
        if r.version < 2 || r.old == r.new {
            return Err(RotationError::Malformed);
        }
        Ok(r)
    }

    /// Both roots signed it.
    pub fn verify(&self) -> Result<(), RotationError> {
        let body = self.signed_bytes();
        let old = verify_with_context(&self.old, CONTEXT, &body, &self.old_signature);
        let new = verify_with_context(&self.new, CONTEXT, &body, &self.new_signature);
        if old && new {
            Ok(())
        } else {
            Err(RotationError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_statement_needs_both_signatures() {
        let (a, b, c) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let good = RootRotation::issue(&a, &b, 2);
        let back = RootRotation::decode(&good.encode()).unwrap();
        assert_eq!(back, good);
        assert_eq!(back.verify(), Ok(()));
        // The new root alone, and the old root alone, each signing both parts.
        let new_alone = RootRotation::sign_with(&b, &b, a.verifying_key(), b.verifying_key(), 2);
        let old_alone = RootRotation::sign_with(&a, &a, a.verifying_key(), c.verifying_key(), 2);
        assert_eq!(new_alone.verify(), Err(RotationError::BadSignature));
        assert_eq!(old_alone.verify(), Err(RotationError::BadSignature));
        let mut bumped = good.encode();
        bumped[7] ^= 1;
        assert_eq!(RootRotation::decode(&bumped).unwrap().verify(), Err(RotationError::BadSignature));
        assert_eq!(
            RootRotation::decode(&RootRotation::issue(&a, &b, 1).encode()),
            Err(RotationError::Malformed)
        );
        assert_eq!(
            RootRotation::decode(&RootRotation::issue(&a, &a, 2).encode()),
            Err(RotationError::Malformed)
        );
        assert_eq!(RootRotation::decode(&good.encode()[..199]), Err(RotationError::Malformed));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_refuse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(r) = RootRotation::decode(&bytes) {
                prop_assert_eq!(&r.encode()[..], &bytes[..]);
                let _ = r.verify();
            }
        }

        #[test]
        fn any_issued_statement_round_trips_and_verifies(a: [u8; 32], b: [u8; 32], version in 2u64..) {
            prop_assume!(a != b);
            let (a, b) = (SigningKey::from_bytes(&a), SigningKey::from_bytes(&b));
            prop_assume!(a.verifying_key() != b.verifying_key());
            let r = RootRotation::issue(&a, &b, version);
            let back = RootRotation::decode(&r.encode()).unwrap();
            prop_assert_eq!(back.verify(), Ok(()));
            prop_assert_eq!(back, r);
        }
    }
}
