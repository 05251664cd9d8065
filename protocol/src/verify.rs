//! Verification of signed datagrams: certificate chain to the trusted root,
//! signature, channel and expiry. Past this module only verified manifests and
//! tickets exist; their types ([`VerifiedManifest`], [`VerifiedTicket`]) can only
//! be made here.

use crate::wire::{self, CatalogRoot, Feedback, Manifest, Signed, Ticket, SIGNATURE_LEN};
use hubcast_keys::Fingerprint;
use hubcast_keys::{
    sign_with_context, verify_with_context, CertError, Certificate, RevocationList, RootRotation, Signature,
    SignerKeys, TrustAnchor, CERTIFICATE_LEN,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

const MANIFEST_CONTEXT: &[u8] = b"hubcast manifest v1";
const TICKET_CONTEXT: &[u8] = b"hubcast ticket v1";
const FEEDBACK_CONTEXT: &[u8] = b"hubcast feedback v1";
const CATALOG_CONTEXT: &[u8] = b"hubcast catalog v1";
/// Distinct certificates whose root signature is remembered as checked.
pub const MAX_CACHED_CERTS: usize = 16;

/// Why a signed datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The certificate chain does not lead to the trusted root, or is outside its window.
    #[error("certificate refused: {0}")]
    Cert(#[from] CertError),
    /// The signature by the certified key does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// Signed under a certificate the root's revocation list names.
    #[error("certificate revoked")]
    Revoked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest(Manifest);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTicket(Ticket);

impl std::ops::Deref for VerifiedManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.0
    }
}

impl std::ops::Deref for VerifiedTicket {
    type Target = Ticket;
    fn deref(&self) -> &Ticket {
        &self.0
    }
}

/// Checks signed datagrams against one trust anchor. Remembers which
/// certificates' root signatures it has checked, so a ticket costs one Ed25519
/// verification, not two.
pub struct Verifier {
    /// The root trusted now: the configured one, or the newest the chain of
    /// rotations led to.
    anchor: TrustAnchor,
    /// Its version: 1 for the configured root, one up per rotation taken.
    root_version: u64,
    /// The rotations taken, in order.
    rotations: Vec<RootRotation>,
    checked_certs: HashMap<[u8; CERTIFICATE_LEN], ()>,
    /// The newest revocation list of the trusted root taken.
    revocations: Option<RevocationList>,
}

impl Verifier {
    pub fn new(anchor: TrustAnchor) -> Self {
        Verifier {
            anchor,
            root_version: 1,
            rotations: Vec::new(),
            checked_certs: HashMap::new(),
            revocations: None,
        }
    }

    pub fn channel_tag(&self) -> u64 {
        self.anchor.fingerprint.channel_tag()
    }

    fn check_chain<T>(&mut self, s: &Signed<T>, context: &[u8], unix_now: u64) -> Result<(), VerifyError> {
        let encoded = s.cert.encode();
        if !self.checked_certs.contains_key(&encoded) {
            s.cert.verify_signature(&self.anchor)?;
            if self.checked_certs.len() >= MAX_CACHED_CERTS {
                self.checked_certs.clear();
            }
            self.checked_certs.insert(encoded, ());
        }
        s.cert.check_validity(unix_now)?;
        if self.revocations.as_ref().is_some_and(|l| l.revokes(s.cert.serial)) {
            return Err(VerifyError::Revoked);
        }
        let sig = Signature::from_bytes(&s.signature);
        if !verify_with_context(&s.cert.signing, context, &s.signed_bytes, &sig) {
            return Err(VerifyError::BadSignature);
        }
        Ok(())
    }

    /// The root trusted now and its version.
    pub fn root(&self) -> (Fingerprint, u64) {
        (self.anchor.fingerprint, self.root_version)
    }

    /// The rotations taken, in order.
    pub fn rotations(&self) -> &[RootRotation] {
        &self.rotations
    }

    /// Follow `r` to its new root: certificates of the old one are refused
    /// from now on. Only a statement from the root trusted now, one
    /// version up, signed by both: the caller's checks.
    pub(crate) fn rotate(&mut self, r: RootRotation) {
        self.anchor = TrustAnchor::new(Fingerprint::of(&r.new));
        self.root_version = r.version;
        self.rotations.push(r);
        self.checked_certs.clear();
    }

    /// The revocation list held (the newest taken).
    pub fn revocations(&self) -> Option<&RevocationList> {
        self.revocations.as_ref()
    }

    /// Did the trusted root sign `list`?
    pub fn check_revocations(&self, list: &RevocationList) -> Result<(), CertError> {
        list.verify(&self.anchor)
    }

    /// Refuse `list`'s serials from now on. Only a list
    /// [`Verifier::check_revocations`] passed, newer than the one held: the
    /// caller's checks.
    pub(crate) fn set_revocations(&mut self, list: RevocationList) {
        self.revocations = Some(list);
    }

    pub fn verify_manifest(
        &mut self,
        s: Signed<Manifest>,
        unix_now: u64,
    ) -> Result<VerifiedManifest, VerifyError> {
        self.check_chain(&s, MANIFEST_CONTEXT, unix_now)?;
        if unix_now >= s.body.expiry {
            return Err(VerifyError::Expired);
        }
        Ok(VerifiedManifest(s.body))
    }

    /// A feedback datagram's echo, once its signature and expiry hold.
    pub fn verify_feedback(&mut self, s: Signed<Feedback>, unix_now: u64) -> Result<Feedback, VerifyError> {
        self.check_chain(&s, FEEDBACK_CONTEXT, unix_now)?;
        if unix_now >= s.body.expiry {
            return Err(VerifyError::Expired);
        }
        Ok(s.body)
    }

    /// A catalog root, once its signature and expiry hold. Whether its
    /// version is newer than the one held is the caller's check.
    pub fn verify_catalog_root(
        &mut self,
        s: Signed<CatalogRoot>,
        unix_now: u64,
    ) -> Result<CatalogRoot, VerifyError> {
        self.check_chain(&s, CATALOG_CONTEXT, unix_now)?;
        if unix_now >= s.body.expiry {
            return Err(VerifyError::Expired);
        }
        Ok(s.body)
    }

    pub fn verify_ticket(&mut self, s: Signed<Ticket>, unix_now: u64) -> Result<VerifiedTicket, VerifyError> {
        self.check_chain(&s, TICKET_CONTEXT, unix_now)?;
        if unix_now >= s.body.expiry {
            return Err(VerifyError::Expired);
        }
        Ok(VerifiedTicket(s.body))
    }
}

/// The broadcaster's side: signs manifests and tickets into datagrams.
///
/// Shared by every task that signs (the carousel, the origin's repair, the
/// loss reports' echo, live segments); [`Signer::renew`] swaps in a new
/// signing key and certificate of the same root while they run.
pub struct Signer {
    keys: RwLock<Arc<SignerKeys>>,
    /// The root's statements carried as they are: the chain of rotations,
    /// then the revocation list.
    statements: RwLock<Arc<Statements>>,
    renewals: AtomicU64,
    /// Bumped at each change of key or statements.
    epoch: AtomicU64,
    channel: Fingerprint,
    channel_tag: u64,
}

#[derive(Clone, Default)]
struct Statements {
    /// Each rotation's datagram beside the version of the root it names.
    rotations: Vec<(u64, Vec<u8>)>,
    /// The root the chain ends at, if there is a chain.
    head: Option<Fingerprint>,
    /// The list's datagram beside its version.
    revocations: Option<(u64, Vec<u8>)>,
}

/// Why [`Signer::renew`] kept the key it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    #[error("the new certificate is from another root ({0}): hubs trust {1}")]
    OtherRoot(Fingerprint, Fingerprint),
}

impl Signer {
    /// A signer for the channel its certificate's root names (no rotation).
    pub fn new(keys: SignerKeys) -> Self {
        let channel = keys.fingerprint();
        Self::for_channel(keys, channel)
    }

    /// A signer for the channel named `channel` (its first root), whatever
    /// root certified `keys` since.
    pub fn for_channel(keys: SignerKeys, channel: Fingerprint) -> Self {
        let channel_tag = channel.channel_tag();
        Signer {
            keys: RwLock::new(Arc::new(keys)),
            statements: RwLock::default(),
            renewals: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            channel,
            channel_tag,
        }
    }

    pub fn channel_tag(&self) -> u64 {
        self.channel_tag
    }

    /// The channel's name: its first root's fingerprint.
    pub fn channel(&self) -> Fingerprint {
        self.channel
    }

    /// The newest root: the chain's end, or the certificate's root.
    pub fn root(&self) -> Fingerprint {
        let head = self.statements.read().unwrap_or_else(PoisonError::into_inner).head;
        head.unwrap_or_else(|| Fingerprint::of(&self.current().cert.root))
    }

    /// The rotations carried.
    pub fn rotation_count(&self) -> usize {
        self.statements.read().unwrap_or_else(PoisonError::into_inner).rotations.len()
    }

    fn current(&self) -> Arc<SignerKeys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The certificate signing now.
    pub fn certificate(&self) -> Certificate {
        self.current().cert.clone()
    }

    /// Sign with `keys` from now on. Datagrams signed before stay valid
    /// while their certificate is: hubs take both.
    pub fn renew(&self, keys: SignerKeys) -> Result<(), RenewError> {
        let held = Fingerprint::of(&self.current().cert.root);
        let head = self.statements.read().unwrap_or_else(PoisonError::into_inner).head;
        if keys.fingerprint() != held && Some(keys.fingerprint()) != head {
            return Err(RenewError::OtherRoot(keys.fingerprint(), held));
        }
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.renewals.fetch_add(1, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Carry `list` from now on (the root signed it; hubs check that).
    pub fn set_revocations(&self, list: &RevocationList) {
        let datagram = wire::revocations_datagram(list, self.channel_tag);
        self.change_statements(|s| s.revocations = Some((list.version, datagram)));
    }

    /// Carry the chain of root rotations from now on (checked by the
    /// caller); a certificate of the root it ends at may then renew.
    pub fn set_rotations(&self, chain: &[RootRotation]) {
        let datagrams =
            chain.iter().map(|r| (r.version, wire::rotation_datagram(r, self.channel_tag))).collect();
        let head = chain.last().map(|r| Fingerprint::of(&r.new));
        self.change_statements(|s| (s.rotations, s.head) = (datagrams, head));
    }

    fn change_statements(&self, f: impl FnOnce(&mut Statements)) {
        let mut held = self.statements.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Statements::clone(&held);
        f(&mut next);
        *held = Arc::new(next);
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// The root's statements to send with the manifests: the rotations in
    /// order (a hub follows them one at a time), then the revocation list.
    pub fn statements(&self) -> Vec<Vec<u8>> {
        self.statements_newer(0, 0, usize::MAX)
    }

    /// The statements a hub lacks that holds root version `root_version`
    /// and revocation list version `revocations_version` (0: none), at most
    /// `max`: the rotations past its root in order, then the list when it
    /// is newer and no rotation before it was left out (the list is signed
    /// by the newest root).
    pub fn statements_newer(&self, root_version: u64, revocations_version: u64, max: usize) -> Vec<Vec<u8>> {
        let s = self.statements.read().unwrap_or_else(PoisonError::into_inner).clone();
        let rotations: Vec<&Vec<u8>> =
            s.rotations.iter().filter(|(v, _)| *v > root_version).map(|(_, d)| d).collect();
        let list = s.revocations.as_ref().filter(|(v, _)| *v > revocations_version).map(|(_, d)| d);
        let list = list.filter(|_| rotations.len() < max);
        rotations.into_iter().take(max).chain(list).cloned().collect()
    }

    /// Changes with every renewal and every new statement: what was sent
    /// at another epoch is due to be sent again.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// How many times [`Signer::renew`] swapped the key.
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Sign `bytes` (made with `keys`' certificate) with `keys`: one pair,
    /// even when a renewal comes in between.
    fn finish(keys: &SignerKeys, mut bytes: Vec<u8>, context: &[u8]) -> Vec<u8> {
        let sig = sign_with_context(&keys.signing, context, &bytes);
        bytes.extend_from_slice(&sig.to_bytes());
        debug_assert!(bytes.len() <= wire::MAX_DATAGRAM && SIGNATURE_LEN == 64);
        bytes
    }

    pub fn manifest_datagram(&self, m: &Manifest) -> Vec<u8> {
        let keys = self.current();
        let bytes = wire::manifest_signed_bytes(m, &keys.cert, self.channel_tag);
        Self::finish(&keys, bytes, MANIFEST_CONTEXT)
    }

    pub fn feedback_datagram(&self, f: &Feedback) -> Vec<u8> {
        let keys = self.current();
        let bytes = wire::feedback_signed_bytes(f, &keys.cert, self.channel_tag);
        Self::finish(&keys, bytes, FEEDBACK_CONTEXT)
    }

    pub fn catalog_root_datagram(&self, c: &CatalogRoot) -> Vec<u8> {
        let keys = self.current();
        let bytes = wire::catalog_root_signed_bytes(c, &keys.cert, self.channel_tag);
        Self::finish(&keys, bytes, CATALOG_CONTEXT)
    }

    pub fn ticket_datagram(&self, t: &Ticket) -> Vec<u8> {
        let keys = self.current();
        let bytes = wire::ticket_signed_bytes(t, &keys.cert, self.channel_tag);
        Self::finish(&keys, bytes, TICKET_CONTEXT)
    }
}
