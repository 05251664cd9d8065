//! Why a datagram was not used, and the counters kept for each reason.

use crate::verify::VerifyError;
use crate::wire::WireError;
use hubcast_keys::CertError;

/// Why a datagram was not used. Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    Truncated,
    Oversized,
    BadMagic,
    BadVersion,
    BadKind,
    OutOfRange,
    BadCertificate,
    /// Another channel's traffic on the same group.
    WrongChannel,
    /// Certificate from a root other than the trusted one.
    UntrustedRoot,
    /// Certificate's root signature does not verify.
    CertSignature,
    /// Certificate expired or not yet valid.
    CertValidity,
    /// Manifest or ticket signature does not verify.
    BadSignature,
    Expired,
    /// A manifest older than one already accepted for the same name.
    RolledBack,
    /// A ticket that contradicts the manifest or an earlier ticket.
    Inconsistent,
    /// A table page whose hash is not the ticket's.
    PageMismatch,
    /// A symbol whose digest is not the table's.
    DigestMismatch,
    /// A symbol of the wrong length or beyond N_max for its ticket.
    BadSymbol,
    /// Decoded data whose BLAKE3 is not the ticket's (should never happen).
    ChunkHashMismatch,
    /// Pushed out of the pending buffer before its ticket or page came.
    PendingEvicted,
    /// A partly collected chunk dropped to make room (its symbols are lost).
    ActiveEvicted,
    /// More objects than `max_objects`.
    TooManyObjects,
    /// Already have it (benign).
    Duplicate,
    /// For a chunk already complete (benign).
    AlreadyComplete,
    /// A live segment's manifest or data past its playout deadline.
    Late,
    /// For an object the hub does not keep (evicted, or not chosen): benign.
    Unwanted,
    /// Signed under a certificate the root's revocation list names.
    CertRevoked,
    /// A revocation list that does not parse.
    BadRevocations,
    /// A revocation list whose root signature does not verify.
    RevocationsSignature,
    /// A revocation list older than the one held.
    RevocationsRolledBack,
    /// A root rotation statement that does not parse.
    BadRotation,
    /// A rotation from the root trusted now not signed by both roots.
    RotationSignature,
    /// A rotation more than one version past the root trusted now.
    RotationSkipped,
    /// A rotation to a version at or below the root trusted now.
    RotationRolledBack,
}

impl DropReason {
    pub const ALL: [DropReason; 34] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::BadMagic,
        DropReason::BadVersion,
        DropReason::BadKind,
        DropReason::OutOfRange,
        DropReason::BadCertificate,
        DropReason::WrongChannel,
        DropReason::UntrustedRoot,
        DropReason::CertSignature,
        DropReason::CertValidity,
        DropReason::BadSignature,
        DropReason::Expired,
        DropReason::RolledBack,
        DropReason::Inconsistent,
        DropReason::PageMismatch,
        DropReason::DigestMismatch,
        DropReason::BadSymbol,
        DropReason::ChunkHashMismatch,
        DropReason::PendingEvicted,
        DropReason::ActiveEvicted,
        DropReason::TooManyObjects,
        DropReason::Duplicate,
        DropReason::AlreadyComplete,
        DropReason::Late,
        DropReason::Unwanted,
        DropReason::CertRevoked,
        DropReason::BadRevocations,
        DropReason::RevocationsSignature,
        DropReason::RevocationsRolledBack,
        DropReason::BadRotation,
        DropReason::RotationSignature,
        DropReason::RotationSkipped,
        DropReason::RotationRolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::BadMagic => "bad_magic",
            DropReason::BadVersion => "bad_version",
            DropReason::BadKind => "bad_kind",
            DropReason::OutOfRange => "out_of_range",
            DropReason::BadCertificate => "bad_certificate",
            DropReason::WrongChannel => "wrong_channel",
            DropReason::UntrustedRoot => "untrusted_root",
            DropReason::CertSignature => "cert_signature",
            DropReason::CertValidity => "cert_validity",
            DropReason::BadSignature => "bad_signature",
            DropReason::Expired => "expired",
            DropReason::RolledBack => "rolled_back",
            DropReason::Inconsistent => "inconsistent",
            DropReason::PageMismatch => "page_mismatch",
            DropReason::DigestMismatch => "digest_mismatch",
            DropReason::BadSymbol => "bad_symbol",
            DropReason::ChunkHashMismatch => "chunk_hash_mismatch",
            DropReason::PendingEvicted => "pending_evicted",
            DropReason::ActiveEvicted => "active_evicted",
            DropReason::TooManyObjects => "too_many_objects",
            DropReason::Duplicate => "duplicate",
            DropReason::AlreadyComplete => "already_complete",
            DropReason::Late => "late",
            DropReason::Unwanted => "unwanted",
            DropReason::CertRevoked => "cert_revoked",
            DropReason::BadRevocations => "bad_revocations",
            DropReason::RevocationsSignature => "revocations_signature",
            DropReason::RevocationsRolledBack => "revocations_rolled_back",
            DropReason::BadRotation => "bad_rotation",
            DropReason::RotationSignature => "rotation_signature",
            DropReason::RotationSkipped => "rotation_skipped",
            DropReason::RotationRolledBack => "rotation_rolled_back",
        }
    }

    /// Benign drops are a normal part of a carousel; the others mean loss of
    /// data, a misconfiguration or an attack.
    pub fn is_benign(self) -> bool {
        matches!(self, DropReason::Duplicate | DropReason::AlreadyComplete | DropReason::Unwanted)
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::Oversized => DropReason::Oversized,
            WireError::BadMagic => DropReason::BadMagic,
            WireError::BadVersion => DropReason::BadVersion,
            WireError::BadKind => DropReason::BadKind,
            WireError::OutOfRange => DropReason::OutOfRange,
            WireError::BadCertificate => DropReason::BadCertificate,
            WireError::BadRevocations => DropReason::BadRevocations,
            WireError::BadRotation => DropReason::BadRotation,
        }
    }
}

impl From<VerifyError> for DropReason {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Cert(CertError::UntrustedRoot) => DropReason::UntrustedRoot,
            VerifyError::Cert(CertError::BadSignature) => DropReason::CertSignature,
            VerifyError::Cert(CertError::OutsideValidity) => DropReason::CertValidity,
            VerifyError::Cert(CertError::Malformed) => DropReason::BadCertificate,
            VerifyError::BadSignature => DropReason::BadSignature,
            VerifyError::Expired => DropReason::Expired,
            VerifyError::Revoked => DropReason::CertRevoked,
        }
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::ALL.len()])
    }
}

impl DropCounters {
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }
    pub(super) fn add(&mut self, r: DropReason) {
        self.0[r as usize] += 1;
    }
    /// Drops that were not benign.
    pub fn harmful(&self) -> u64 {
        DropReason::ALL.iter().filter(|r| !r.is_benign()).map(|r| self.get(*r)).sum()
    }
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}
