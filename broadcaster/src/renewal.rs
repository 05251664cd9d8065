//! The signing key's renewal while the broadcaster runs.
//!
//! `broadcaster certify` writes a new signing key and certificate into the
//! keys folder; on SIGHUP (`systemctl reload`) the running broadcaster reads
//! them and swaps them into the [`Signer`] every task shares. Nothing
//! restarts: what was signed before stays valid as long as its certificate
//! is, and hubs take both. From [`WARN_BEFORE_SECS`] before the certificate
//! in use ends, the broadcaster says so in its log, `/api/status` and
//! `/metrics`.

use crate::status::{CertificateStatus, StatusBoard};
use crate::unix_now;
use hubcast_keys::{Certificate, Fingerprint, SignerKeys, TrustAnchor};
use hubcast_protocol::verify::Signer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Warn from a week before the certificate in use ends: time for the
/// monthly `broadcaster certify` to come round.
pub const WARN_BEFORE_SECS: u64 = 7 * 86_400;

/// The most the expiry check sleeps: the warning repeats this often.
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// A certificate that hubs would drop now, named with the fix.
#[derive(Debug, thiserror::Error)]
#[error("the signing certificate (serial {serial}) is valid from {} to {} and it is now {}: hubs would drop everything; make a new signing key with `broadcaster certify --root-dir ROOT --keys KEYS`", utc(*.not_before), utc(*.not_after), utc(*.now))]
pub struct NotValidNow {
    pub serial: u64,
    pub not_before: u64,
    pub not_after: u64,
    pub now: u64,
}

/// Unix seconds as an RFC 3339 UTC time, for people.
pub fn utc(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// Refuse a certificate hubs would drop now.
pub fn check_valid_now(cert: &Certificate, now: u64) -> Result<(), NotValidNow> {
    cert.check_validity(now).map_err(|_| NotValidNow {
        serial: cert.serial,
        not_before: cert.not_before,
        not_after: cert.not_after,
        now,
    })
}

/// What the status says of `cert` at `now`; the warning, if it needs one.
pub fn certificate_status(cert: &Certificate, renewals: u64, now: u64) -> CertificateStatus {
    let left = cert.not_after.saturating_sub(now);
    let warning = if left == 0 {
        Some(format!(
            "the signing certificate (serial {}) ended at {}: hubs drop everything; run `broadcaster certify` and reload",
            cert.serial,
            utc(cert.not_after)
        ))
    } else if left <= WARN_BEFORE_SECS {
        Some(format!(
            "the signing certificate (serial {}) ends at {} (in {} h): run `broadcaster certify` and reload",
            cert.serial,
            utc(cert.not_after),
            left / 3600
        ))
    } else {
        None
    };
    CertificateStatus {
        serial: cert.serial,
        not_before: cert.not_before,
        not_after: cert.not_after,
        expires_in_secs: left,
        renewals,
        warning,
        revocations_version: 0,
    }
}

/// Publish the certificate in use, and log its warning if it has one.
fn publish(signer: &Signer, status: &StatusBoard, revocations: u64) {
    let mut s = certificate_status(&signer.certificate(), signer.renewals(), unix_now());
    s.revocations_version = revocations;
    match &s.warning {
        Some(w) if s.expires_in_secs == 0 => error!("{w}"),
        Some(w) => warn!("{w}"),
        None => {}
    }
    status.update(|b| b.certificate = s);
}

/// What one read of the keys folder did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The same certificate as in use.
    Unchanged,
    /// A new key and certificate sign from now on.
    Renewed { serial: u64 },
    /// Kept the one in use: why.
    Refused(String),
}

/// Read `dir` again and swap in what it holds if it is a certificate of the
/// same root that is valid now.
pub fn reload(dir: &Path, signer: &Signer) -> Reload {
    let keys = match SignerKeys::load(dir) {
        Ok(k) => k,
        Err(e) => return Reload::Refused(e.to_string()),
    };
    if keys.cert == signer.certificate() {
        return Reload::Unchanged;
    }
    if let Err(e) = check_valid_now(&keys.cert, unix_now()) {
        return Reload::Refused(e.to_string());
    }
    let serial = keys.cert.serial;
    match signer.renew(keys) {
        Ok(()) => Reload::Renewed { serial },
        Err(e) => Reload::Refused(e.to_string()),
    }
}

/// Why the keys folder's chain of root rotations was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    File(#[from] hubcast_keys::KeyFileError),
    #[error("{0}/rotations: the chain of root rotations does not check out (each signed by both roots, each from the one before, versions 2, 3, …): copy it again from the newest root folder")]
    Broken(PathBuf),
    #[error("{0}/signing.cert is from root {1}, but the chain of rotations ends at root {2}: certify a signing key with the newest root (`broadcaster certify --root-dir NEWEST`)")]
    NotTheHead(PathBuf, Fingerprint, Fingerprint),
}

/// The signer for `keys`, of the channel the chain of rotations in `dir`
/// starts from (or the certificate's root, with no chain), carrying it.
pub fn signer(dir: &Path, keys: SignerKeys) -> Result<Signer, ChainError> {
    let chain = hubcast_keys::files::load_rotations(dir)?;
    hubcast_keys::files::check_chain(&chain).map_err(|_| ChainError::Broken(dir.to_owned()))?;
    let Some(first) = chain.first() else { return Ok(Signer::new(keys)) };
    let head = chain.last().map_or(first.new, |r| r.new);
    if keys.cert.root != head {
        return Err(ChainError::NotTheHead(dir.to_owned(), keys.fingerprint(), Fingerprint::of(&head)));
    }
    let signer = Signer::for_channel(keys, Fingerprint::of(&first.old));
    signer.set_rotations(&chain);
    Ok(signer)
}

/// Carry a longer chain of rotations from `dir`, if it starts at the
/// channel's first root, extends the one carried and checks out.
fn reload_rotations(dir: &Path, signer: &Signer) {
    let chain = match hubcast_keys::files::load_rotations(dir) {
        Ok(c) => c,
        Err(e) => return warn!("{e}; carrying the chain of rotations held"),
    };
    if chain.len() <= signer.rotation_count() {
        return;
    }
    let starts = chain.first().is_some_and(|r| Fingerprint::of(&r.old) == signer.channel());
    if !starts || hubcast_keys::files::check_chain(&chain).is_err() {
        return warn!(keys = %dir.display(), "the chain of root rotations does not check out from the channel's root; carrying the one held");
    }
    signer.set_rotations(&chain);
    info!(version = chain.len() + 1, "carrying the chain of root rotations: hubs follow it to the new root");
}

/// Carry the revocation list in `dir` if it is newer than `held` (the
/// version carried) and the channel's root signed it. Returns the version
/// carried after.
pub fn reload_revocations(dir: &Path, signer: &Signer, held: u64) -> u64 {
    let list = match hubcast_keys::files::load_revocations(dir) {
        Ok(Some(list)) => list,
        Ok(None) => return held,
        Err(e) => {
            warn!("{e}; carrying revocation list version {held} on");
            return held;
        }
    };
    let anchor = TrustAnchor::new(signer.root());
    if let Err(e) = list.verify(&anchor) {
        warn!(keys = %dir.display(), "the revocation list is not this channel's root's ({e}); carrying version {held} on");
        return held;
    }
    if list.version < held {
        warn!(
            version = list.version,
            held, "the revocation list in the keys folder is older than the one carried; carrying it on"
        );
        return held;
    }
    if list.version > held {
        signer.set_revocations(&list);
        info!(version = list.version, revoked = ?list.serials(), "carrying the root's revocation list: hubs refuse these certificates from now on");
    }
    if list.revokes(signer.certificate().serial) {
        error!(serial = signer.certificate().serial, "the signing certificate in use is revoked: hubs refuse everything it signs; run `broadcaster certify` and reload");
    }
    list.version
}

/// Until `cancel`: on SIGHUP read the keys folder again, and check the
/// certificate in use against the clock at least hourly (and as it crosses
/// the warning and its end).
pub async fn watch(dir: PathBuf, signer: Arc<Signer>, status: StatusBoard, cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut revocations = reload_revocations(&dir, &signer, 0);
    publish(&signer, &status, revocations);
    loop {
        let sleep = next_check(&signer.certificate(), unix_now());
        tokio::select! {
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                reload_rotations(&dir, &signer);
                match reload(&dir, &signer) {
                    Reload::Unchanged => debug!(keys = %dir.display(), "SIGHUP: the signing certificate is unchanged"),
                    Reload::Renewed { serial } => info!(serial, keys = %dir.display(), "SIGHUP: signing with the new certificate from now on"),
                    Reload::Refused(why) => warn!(keys = %dir.display(), serial = signer.certificate().serial, "SIGHUP: keeping the signing key in use: {why}"),
                }
                revocations = reload_revocations(&dir, &signer, revocations);
            }
            _ = tokio::time::sleep(sleep) => {}
            _ = cancel.cancelled() => return,
        }
        publish(&signer, &status, revocations);
    }
}

/// When to look at the clock again: the next threshold (the warning, the
/// end), at most [`CHECK_EVERY`] away.
fn next_check(cert: &Certificate, now: u64) -> Duration {
    let warn_at = cert.not_after.saturating_sub(WARN_BEFORE_SECS);
    let next = [warn_at, cert.not_after].into_iter().filter(|t| *t > now).min();
    next.map_or(CHECK_EVERY, |t| Duration::from_secs(t - now).min(CHECK_EVERY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubcast_keys::RootKeys;
    use rand::rngs::OsRng;

    #[test]
    fn the_status_warns_a_week_before_the_end_and_errs_after() {
        let root = hubcast_keys::SigningKey::from_bytes(&[1; 32]);
        let signing = hubcast_keys::SigningKey::from_bytes(&[2; 32]);
        let cert = Certificate::issue(&root, &signing.verifying_key(), 0, 30 * 86_400, 4);
        assert_eq!(certificate_status(&cert, 0, 86_400).warning, None);
        let near = certificate_status(&cert, 0, 23 * 86_400 + 1);
        assert!(near.warning.as_deref().is_some_and(|w| w.contains("broadcaster certify")), "{near:?}");
        let past = certificate_status(&cert, 0, 30 * 86_400);
        assert_eq!(past.expires_in_secs, 0);
        assert!(past.warning.as_deref().is_some_and(|w| w.contains("ended")), "{past:?}");
        assert_eq!(next_check(&cert, 0), CHECK_EVERY);
        assert_eq!(next_check(&cert, 23 * 86_400 - 10), Duration::from_secs(10));
        assert_eq!(next_check(&cert, 30 * 86_400 - 10), Duration::from_secs(10));
        assert_eq!(next_check(&cert, 31 * 86_400), CHECK_EVERY);
        let err = check_valid_now(&cert, 30 * 86_400).unwrap_err().to_string();
        assert!(err.contains("broadcaster certify") && err.contains("serial 4"), "{err}");
    }

    #[test]
    fn a_reload_takes_a_new_certificate_of_the_same_root_only() {
        let (root_dir, keys_dir, other) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let root = RootKeys::create(&mut OsRng, root_dir.path(), false).unwrap();
        let now = unix_now();
        let first = root.certify(&mut OsRng, keys_dir.path(), now - 10, now + 100).unwrap();
        let signer = Signer::new(first);
        assert_eq!(reload(keys_dir.path(), &signer), Reload::Unchanged);

        root.certify(&mut OsRng, keys_dir.path(), now - 10, now + 200).unwrap();
        assert_eq!(reload(keys_dir.path(), &signer), Reload::Renewed { serial: 2 });
        assert_eq!((signer.certificate().serial, signer.renewals()), (2, 1));

        root.certify(&mut OsRng, keys_dir.path(), now - 20, now - 10).unwrap();
        assert!(
            matches!(reload(keys_dir.path(), &signer), Reload::Refused(w) if w.contains("broadcaster certify"))
        );
        let stranger = RootKeys::create(&mut OsRng, other.path(), false).unwrap();
        stranger.certify(&mut OsRng, keys_dir.path(), now - 10, now + 100).unwrap();
        assert!(matches!(reload(keys_dir.path(), &signer), Reload::Refused(w) if w.contains("another root")));
        std::fs::remove_file(keys_dir.path().join(hubcast_keys::files::SIGNING_KEY_FILE)).unwrap();
        assert!(matches!(reload(keys_dir.path(), &signer), Reload::Refused(_)));
        assert_eq!((signer.certificate().serial, signer.renewals()), (2, 1), "kept the one in use");
    }
}
