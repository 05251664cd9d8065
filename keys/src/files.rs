//! Key files, as written by `broadcaster keygen` and `broadcaster certify`.
//!
//! The root folder (`--root-dir`) stays offline; the keys folder (`--keys`)
//! is all the online broadcaster reads:
//!
//! | folder | file           | contents                                        | mode |
//! |--------|----------------|-------------------------------------------------|------|
//! | root   | `root.key`     | root private key, PKCS#8 PEM                    | 0600 |
//! | root   | `serial`       | the last certificate serial issued, decimal     | 0644 |
//! | both   | `root.pub`     | fingerprint and root public key, text           | 0644 |
//! | keys   | `signing.key`  | online signing private key, PKCS#8 PEM          | 0600 |
//! | keys   | `signing.cert` | the root's certificate for the signing key, hex | 0644 |
//! | both   | `revocations`  | the root's newest revocation list, hex          | 0644 |
//! | both   | `rotations`    | the chain of root rotations, one hex line each  | 0644 |
//!
//! After a rotation (`broadcaster rotate-root`) `root.pub` stays the first
//! root's: the channel's name, what hubs are given; they follow `rotations`.
//!
//! `root.pub` is what a hub may be given with `--trust FILE`. A new signing
//! key and its certificate replace the old ones by rename, the key first, so a
//! reader sees either pair or a key that its certificate does not certify
//! (refused as [`KeyFileError::CertificateMismatch`]; read again later).

use crate::{decode_hex, encode_hex, Certificate, Fingerprint, RevocationList, RootRotation, TrustAnchor};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const ROOT_KEY_FILE: &str = "root.key";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const CERT_FILE: &str = "signing.cert";
pub const ROOT_PUB_FILE: &str = "root.pub";
pub const SERIAL_FILE: &str = "serial";
pub const REVOCATIONS_FILE: &str = "revocations";
pub const ROTATIONS_FILE: &str = "rotations";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a PKCS#8 Ed25519 private key in PEM form")]
    BadPrivateKey(PathBuf),
    #[error("{0}: not a hubcast certificate (one line of hex, as keygen writes it)")]
    BadCertificate(PathBuf),
    #[error("{0}: signing.cert does not certify signing.key (halfway through `broadcaster certify`? try again; else run it again)")]
    CertificateMismatch(PathBuf),
    #[error("{0}: not a root.pub file (needs `fingerprint:` and `root-public-key:` lines that match)")]
    BadRootPub(PathBuf),
    #[error("no signing key in {0}: make the channel's keys with `broadcaster keygen --root-dir ROOT --keys {0}`, or a new signing key with `broadcaster certify --root-dir ROOT --keys {0}`")]
    NoKeys(PathBuf),
    #[error("no root key in {0}: give the root folder `broadcaster keygen --root-dir` wrote")]
    NoRoot(PathBuf),
    #[error("{0}: not a serial counter (one decimal number, the last serial issued)")]
    BadSerial(PathBuf),
    #[error("{0}: not a revocation list of this root (one line of hex, as `broadcaster revoke` writes it)")]
    BadRevocations(PathBuf),
    #[error("{0}")]
    Revocation(#[from] crate::RevocationError),
    #[error("{0}: not a chain of root rotations that ends at this root (one hex line per rotation, as `broadcaster rotate-root` writes them)")]
    BadRotations(PathBuf),
    #[error("{0} already holds keys; refusing to overwrite them (pass --force to replace)")]
    AlreadyExists(PathBuf),
    #[error("`{0}` is neither a 64-hex-character fingerprint nor a readable root.pub file")]
    BadTrustArgument(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io { path: path.to_owned(), source }
}

/// Everything `keygen` makes. Only the broadcaster's [`SignerKeys`] need to be
/// online; `root` belongs offline.
pub struct ChannelKeys {
    pub root: SigningKey,
    pub signer: SignerKeys,
}

/// What the online broadcaster holds: the signing key and its certificate.
pub struct SignerKeys {
    pub signing: SigningKey,
    pub cert: Certificate,
}

impl SignerKeys {
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert.root)
    }

    /// Load `signing.key` and `signing.cert` from `dir` and check they belong together.
    pub fn load(dir: &Path) -> Result<SignerKeys, KeyFileError> {
        let key_path = dir.join(SIGNING_KEY_FILE);
        if !key_path.exists() {
            return Err(KeyFileError::NoKeys(dir.to_owned()));
        }
        let pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let signing =
            SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyFileError::BadPrivateKey(key_path.clone()))?;
        let cert_path = dir.join(CERT_FILE);
        let text = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let cert = decode_hex(text.trim())
            .and_then(|b| Certificate::decode(&b).ok())
            .ok_or_else(|| KeyFileError::BadCertificate(cert_path.clone()))?;
        if cert.signing != signing.verifying_key() {
            return Err(KeyFileError::CertificateMismatch(cert_path));
        }
        Ok(SignerKeys { signing, cert })
    }
}

impl SignerKeys {
    /// The online half of freshly generated keys, as `load` would return it.
    pub fn load_from(keys: &ChannelKeys) -> SignerKeys {
        SignerKeys { signing: keys.signer.signing.clone(), cert: keys.signer.cert.clone() }
    }
}

impl ChannelKeys {
    /// Make a fresh root and signing key; the certificate is valid from
    /// `unix_now` for `validity_secs`.
    pub fn generate<R: rand::CryptoRng + rand::RngCore>(
        rng: &mut R,
        unix_now: u64,
        validity_secs: u64,
    ) -> ChannelKeys {
        let root = SigningKey::generate(rng);
        let signing = SigningKey::generate(rng);
        let serial = rng.next_u64();
        let cert = Certificate::issue(
            &root,
            &signing.verifying_key(),
            unix_now,
            unix_now.saturating_add(validity_secs),
            serial,
        );
        ChannelKeys { root, signer: SignerKeys { signing, cert } }
    }
}

/// The offline root: its key, and the folder that keeps the serial counter.
pub struct RootKeys {
    pub key: SigningKey,
    dir: PathBuf,
}

impl RootKeys {
    /// Make a new root in `dir` (created if missing): `root.key`, `root.pub`
    /// and the serial counter at 0. Refuses a folder with a root unless `force`.
    pub fn create<R: rand::CryptoRng + rand::RngCore>(
        rng: &mut R,
        dir: &Path,
        force: bool,
    ) -> Result<RootKeys, KeyFileError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if !force && dir.join(ROOT_KEY_FILE).exists() {
            return Err(KeyFileError::AlreadyExists(dir.to_owned()));
        }
        let key = SigningKey::generate(rng);
        write_file(&dir.join(ROOT_KEY_FILE), pem(&key).as_bytes(), 0o600)?;
        write_file(&dir.join(ROOT_PUB_FILE), root_pub_text(&key.verifying_key()).as_bytes(), 0o644)?;
        write_file(&dir.join(SERIAL_FILE), b"0\n", 0o644)?;
        Ok(RootKeys { key, dir: dir.to_owned() })
    }

    /// Open the root `keygen` wrote in `dir`.
    pub fn open(dir: &Path) -> Result<RootKeys, KeyFileError> {
        let path = dir.join(ROOT_KEY_FILE);
        if !path.exists() {
            return Err(KeyFileError::NoRoot(dir.to_owned()));
        }
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|_| KeyFileError::BadPrivateKey(path))?;
        Ok(RootKeys { key, dir: dir.to_owned() })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.key.verifying_key())
    }

    /// The last serial issued (0: none yet).
    pub fn last_serial(&self) -> Result<u64, KeyFileError> {
        let path = self.dir.join(SERIAL_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| KeyFileError::BadSerial(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(KeyFileError::Io { path, source }),
        }
    }

    /// A fresh signing key certified with the next serial for
    /// `[not_before, not_after)`, written to `keys_dir` (created if missing)
    /// with `root.pub`. The counter moves on before the key is written, so a
    /// serial is never issued twice, even if writing the key fails.
    pub fn certify<R: rand::CryptoRng + rand::RngCore>(
        &self,
        rng: &mut R,
        keys_dir: &Path,
        not_before: u64,
        not_after: u64,
    ) -> Result<SignerKeys, KeyFileError> {
        let serial = self
            .last_serial()?
            .checked_add(1)
            .ok_or_else(|| KeyFileError::BadSerial(self.dir.join(SERIAL_FILE)))?;
        replace_file(&self.dir.join(SERIAL_FILE), format!("{serial}\n").as_bytes(), 0o644)?;
        let signing = SigningKey::generate(rng);
        let cert = Certificate::issue(&self.key, &signing.verifying_key(), not_before, not_after, serial);
        fs::create_dir_all(keys_dir).map_err(io_err(keys_dir))?;
        replace_file(&keys_dir.join(SIGNING_KEY_FILE), pem(&signing).as_bytes(), 0o600)?;
        let cert_text = format!("{}\n", encode_hex(&cert.encode()));
        replace_file(&keys_dir.join(CERT_FILE), cert_text.as_bytes(), 0o644)?;
        // The channel's root.pub (the first root's, after rotations) and
        // its chain of rotations go with the key.
        let root_pub = self.dir.join(ROOT_PUB_FILE);
        let root_pub = fs::read(&root_pub).map_err(io_err(&root_pub))?;
        replace_file(&keys_dir.join(ROOT_PUB_FILE), &root_pub, 0o644)?;
        let chain = self.rotations()?;
        if !chain.is_empty() {
            replace_file(&keys_dir.join(ROTATIONS_FILE), rotations_text(&chain).as_bytes(), 0o644)?;
        }
        Ok(SignerKeys { signing, cert })
    }
}

impl RootKeys {
    /// The root's newest revocation list, if it made one (checked: its own).
    pub fn revocations(&self) -> Result<Option<RevocationList>, KeyFileError> {
        let anchor = TrustAnchor::new(self.fingerprint());
        let list = load_revocations(&self.dir)?;
        match list {
            Some(l) if l.verify(&anchor).is_err() => {
                Err(KeyFileError::BadRevocations(self.dir.join(REVOCATIONS_FILE)))
            }
            list => Ok(list),
        }
    }

    /// Add `serials` to the root's revocation list, one version up, issued
    /// `now`; written to the root folder and to `keys_dir` if given.
    pub fn revoke(
        &self,
        serials: &[u64],
        now: u64,
        keys_dir: Option<&Path>,
    ) -> Result<RevocationList, KeyFileError> {
        let held = self.revocations()?;
        let mut all: std::collections::BTreeSet<u64> =
            held.as_ref().map(|l| l.serials().iter().copied().collect()).unwrap_or_default();
        all.extend(serials);
        let version = held.map_or(1, |l| l.version + 1);
        let list = RevocationList::issue(&self.key, version, now, &all)?;
        let text = format!("{}\n", encode_hex(&list.encode()));
        replace_file(&self.dir.join(REVOCATIONS_FILE), text.as_bytes(), 0o644)?;
        if let Some(dir) = keys_dir {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            replace_file(&dir.join(REVOCATIONS_FILE), text.as_bytes(), 0o644)?;
        }
        Ok(list)
    }
}

impl RootKeys {
    /// The chain of rotations that led to this root (empty for a first
    /// root), checked: each signed by both, each from the one before, the
    /// last to this root.
    pub fn rotations(&self) -> Result<Vec<RootRotation>, KeyFileError> {
        let chain = load_rotations(&self.dir)?;
        let path = || KeyFileError::BadRotations(self.dir.join(ROTATIONS_FILE));
        if !chain.is_empty() && chain.last().map(|r| r.new) != Some(self.key.verifying_key()) {
            return Err(path());
        }
        check_chain(&chain).map_err(|_| path())?;
        Ok(chain)
    }

    /// Hand the channel to a new root, made in `new_dir`: a statement signed
    /// by this root and the new one, one version up. The new folder takes
    /// the channel's `root.pub`, the chain, the serial counter and the
    /// revocation list (signed again by the new root, one version up);
    /// `keys_dir`, if given, the chain and the list.
    pub fn rotate<R: rand::CryptoRng + rand::RngCore>(
        &self,
        rng: &mut R,
        new_dir: &Path,
        keys_dir: Option<&Path>,
        now: u64,
    ) -> Result<(RootKeys, RootRotation), KeyFileError> {
        let mut chain = self.rotations()?;
        let last_serial = self.last_serial()?;
        let revocations = self.revocations()?;
        let new = RootKeys::create(rng, new_dir, false)?;
        let statement = RootRotation::issue(&self.key, &new.key, chain.len() as u64 + 2);
        chain.push(statement.clone());
        let text = rotations_text(&chain);
        replace_file(&new_dir.join(ROTATIONS_FILE), text.as_bytes(), 0o644)?;
        replace_file(&new_dir.join(SERIAL_FILE), format!("{last_serial}\n").as_bytes(), 0o644)?;
        let root_pub = self.dir.join(ROOT_PUB_FILE);
        let root_pub = fs::read(&root_pub).map_err(io_err(&root_pub))?;
        replace_file(&new_dir.join(ROOT_PUB_FILE), &root_pub, 0o644)?;
        if let Some(dir) = keys_dir {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            replace_file(&dir.join(ROTATIONS_FILE), text.as_bytes(), 0o644)?;
        }
        if let Some(held) = revocations {
            let serials = held.serials().iter().copied().collect();
            let list = RevocationList::issue(&new.key, held.version + 1, now, &serials)?;
            let text = format!("{}\n", encode_hex(&list.encode()));
            replace_file(&new_dir.join(REVOCATIONS_FILE), text.as_bytes(), 0o644)?;
            if let Some(dir) = keys_dir {
                replace_file(&dir.join(REVOCATIONS_FILE), text.as_bytes(), 0o644)?;
            }
        }
        Ok((new, statement))
    }
}

/// Each statement signed by both its roots, each from the root the one
/// before handed to, versions 2, 3, … in order.
pub fn check_chain(chain: &[RootRotation]) -> Result<(), crate::RotationError> {
    for (i, r) in chain.iter().enumerate() {
        r.verify()?;
        let linked = i == 0 || chain[i - 1].new == r.old;
        if !linked || r.version != i as u64 + 2 {
            return Err(crate::RotationError::Malformed);
        }
    }
    Ok(())
}

fn rotations_text(chain: &[RootRotation]) -> String {
    chain.iter().map(|r| format!("{}\n", encode_hex(&r.encode()))).collect()
}

/// The chain of rotations in `dir` (empty if there is none), parsed; the
/// reader checks it ([`check_chain`]).
pub fn load_rotations(dir: &Path) -> Result<Vec<RootRotation>, KeyFileError> {
    match read_rotations(&dir.join(ROTATIONS_FILE)) {
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        read => read,
    }
}

/// The chain of rotations in the file `path` (a `rotations` file), parsed;
/// the reader checks it ([`check_chain`]).
pub fn read_rotations(path: &Path) -> Result<Vec<RootRotation>, KeyFileError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| decode_hex(l.trim()).and_then(|b| RootRotation::decode(&b).ok()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| KeyFileError::BadRotations(path.to_owned()))
}

/// The revocation list in `dir`, if there is one. Its signature is the
/// reader's to check: a broadcaster carries it, hubs verify it.
pub fn load_revocations(dir: &Path) -> Result<Option<RevocationList>, KeyFileError> {
    let path = dir.join(REVOCATIONS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeyFileError::Io { path, source }),
    };
    decode_hex(text.trim())
        .and_then(|b| RevocationList::decode(&b).ok())
        .map(Some)
        .ok_or(KeyFileError::BadRevocations(path))
}

fn pem(k: &SigningKey) -> impl std::ops::Deref<Target = String> {
    k.to_pkcs8_pem(Default::default())
        .expect("invariant: an Ed25519 key always encodes as PKCS#8 (fixed-size DER)")
}

/// Write `path` whole or not at all: a temporary file beside it, synced, then
/// renamed over it, and the folder synced.
fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    write_file(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    }
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyFileError> {
    // Remove first so the mode of a new file applies even with --force.
    let _ = fs::remove_file(path);
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io_err(path))?;
    f.write_all(contents).and_then(|_| f.sync_all()).map_err(io_err(path))
}

fn root_pub_text(root: &VerifyingKey) -> String {
    format!(
        "# hubcast channel root. Give this file, or the fingerprint, to hubs as --trust.\n\
         fingerprint: {}\nroot-public-key: {}\n",
        Fingerprint::of(root),
        encode_hex(root.as_bytes())
    )
}

/// Parse a `root.pub` file's text. The fingerprint line must match the key.
pub fn parse_root_pub(text: &str) -> Option<Fingerprint> {
    let field = |name: &str| {
        text.lines().filter_map(|l| l.trim().strip_prefix(name)).map(|v| v.trim().to_owned()).next()
    };
    let fp: Fingerprint = field("fingerprint:")?.parse().ok()?;
    let key: [u8; 32] = decode_hex(&field("root-public-key:")?)?.try_into().ok()?;
    let key = VerifyingKey::from_bytes(&key).ok()?;
    (Fingerprint::of(&key) == fp).then_some(fp)
}

impl TrustAnchor {
    /// `--trust` takes a fingerprint or the path of a `root.pub` file.
    pub fn from_arg(arg: &str) -> Result<TrustAnchor, KeyFileError> {
        if let Ok(fp) = arg.parse::<Fingerprint>() {
            return Ok(TrustAnchor::new(fp));
        }
        let path = Path::new(arg);
        if path.exists() {
            let text = fs::read_to_string(path).map_err(io_err(path))?;
            return parse_root_pub(&text)
                .map(TrustAnchor::new)
                .ok_or_else(|| KeyFileError::BadRootPub(path.to_owned()));
        }
        Err(KeyFileError::BadTrustArgument(arg.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn root_and_keys_live_apart_and_load_back_with_private_modes() {
        let (root_dir, keys_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let root = RootKeys::create(&mut rand::rngs::OsRng, root_dir.path(), false).unwrap();
        let issued = root.certify(&mut rand::rngs::OsRng, keys_dir.path(), 1000, 4600).unwrap();
        assert_eq!(
            fs::metadata(root_dir.path().join(ROOT_KEY_FILE)).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(keys_dir.path().join(SIGNING_KEY_FILE)).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!keys_dir.path().join(ROOT_KEY_FILE).exists(), "the online folder holds no root key");
        let signer = SignerKeys::load(keys_dir.path()).unwrap();
        assert_eq!(signer.cert, issued.cert);
        assert_eq!(signer.cert.serial, 1);
        let fp = signer.fingerprint();
        assert_eq!(fp, root.fingerprint());
        for dir in [root_dir.path(), keys_dir.path()] {
            let anchor = TrustAnchor::from_arg(dir.join(ROOT_PUB_FILE).to_str().unwrap()).unwrap();
            assert_eq!(anchor.fingerprint, fp);
        }
        let anchor = TrustAnchor::from_arg(&fp.to_string()).unwrap();
        assert_eq!(signer.cert.verify(&anchor, 2000), Ok(signer.signing.verifying_key()));
        assert!(matches!(
            RootKeys::create(&mut rand::rngs::OsRng, root_dir.path(), false),
            Err(KeyFileError::AlreadyExists(_))
        ));
        assert!(matches!(RootKeys::open(keys_dir.path()), Err(KeyFileError::NoRoot(_))));
        assert!(matches!(SignerKeys::load(root_dir.path()), Err(KeyFileError::NoKeys(_))));
    }

    #[test]
    fn each_certificate_takes_the_next_serial_and_replaces_the_last() {
        let (root_dir, keys_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        RootKeys::create(&mut rand::rngs::OsRng, root_dir.path(), false).unwrap();
        let root = RootKeys::open(root_dir.path()).unwrap();
        let mut last = None;
        for serial in 1..=3 {
            let issued = root.certify(&mut rand::rngs::OsRng, keys_dir.path(), 0, 10).unwrap();
            assert_eq!(issued.cert.serial, serial);
            let loaded = SignerKeys::load(keys_dir.path()).unwrap();
            assert_eq!(loaded.cert, issued.cert, "the new pair replaced the old");
            assert_ne!(Some(loaded.signing.verifying_key()), last, "a fresh key each time");
            last = Some(loaded.signing.verifying_key());
        }
        assert_eq!(root.last_serial().unwrap(), 3);
        let leftovers: Vec<_> = fs::read_dir(keys_dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".new"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::write(root_dir.path().join(SERIAL_FILE), "seven").unwrap();
        assert!(matches!(
            root.certify(&mut rand::rngs::OsRng, keys_dir.path(), 0, 10),
            Err(KeyFileError::BadSerial(_))
        ));
    }

    #[test]
    fn each_revocation_adds_to_the_list_one_version_up() {
        let (root_dir, keys_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let root = RootKeys::create(&mut rand::rngs::OsRng, root_dir.path(), false).unwrap();
        assert_eq!(root.revocations().unwrap(), None);
        let first = root.revoke(&[3], 100, None).unwrap();
        assert_eq!((first.version, first.serials()), (1, &[3][..]));
        let second = root.revoke(&[1, 3], 200, Some(keys_dir.path())).unwrap();
        assert_eq!((second.version, second.serials()), (2, &[1, 3][..]));
        assert_eq!(load_revocations(keys_dir.path()).unwrap(), Some(second.clone()));
        assert_eq!(root.revocations().unwrap(), Some(second));
        // Another root's list in this root's folder is refused, not extended.
        let other_dir = tempfile::tempdir().unwrap();
        let other = RootKeys::create(&mut rand::rngs::OsRng, other_dir.path(), false).unwrap();
        other.revoke(&[9], 0, Some(root_dir.path())).unwrap();
        assert!(matches!(root.revoke(&[4], 300, None), Err(KeyFileError::BadRevocations(_))));
    }

    #[test]
    fn a_rotated_root_takes_the_chain_the_serials_and_the_list_and_keeps_the_channels_name() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let (first, keys) = (dirs[0].path(), dirs[3].path());
        let r1 = RootKeys::create(&mut rand::rngs::OsRng, first, false).unwrap();
        r1.certify(&mut rand::rngs::OsRng, keys, 0, 10).unwrap();
        r1.revoke(&[1], 5, None).unwrap();
        let (r2, s2) = r1.rotate(&mut rand::rngs::OsRng, dirs[1].path(), Some(keys), 6).unwrap();
        let (r3, s3) = r2.rotate(&mut rand::rngs::OsRng, dirs[2].path(), Some(keys), 7).unwrap();
        assert_eq!((s2.version, s3.version), (2, 3));
        assert_eq!(r3.rotations().unwrap(), vec![s2, s3]);
        assert_eq!(load_rotations(keys).unwrap().len(), 2);
        let list = r3.revocations().unwrap().unwrap();
        assert_eq!(
            (list.version, list.serials()),
            (3, &[1][..]),
            "re-signed one version up by each new root"
        );
        let issued = r3.certify(&mut rand::rngs::OsRng, keys, 0, 10).unwrap();
        assert_eq!(issued.cert.serial, 2, "the serials go on");
        let anchor = TrustAnchor::from_arg(keys.join(ROOT_PUB_FILE).to_str().unwrap()).unwrap();
        assert_eq!(anchor.fingerprint, r1.fingerprint(), "root.pub names the channel's first root");
        // A chain with a link missing does not check out.
        let chain = r3.rotations().unwrap();
        assert!(check_chain(&chain[1..]).is_err());
    }

    #[test]
    fn tampered_root_pub_is_refused() {
        let keys = ChannelKeys::generate(&mut rand::rngs::OsRng, 0, 10);
        let text = root_pub_text(&keys.root.verifying_key());
        assert!(parse_root_pub(&text).is_some());
        let other = ChannelKeys::generate(&mut rand::rngs::OsRng, 0, 10);
        let mixed = format!(
            "fingerprint: {}\nroot-public-key: {}\n",
            Fingerprint::of(&other.root.verifying_key()),
            encode_hex(keys.root.verifying_key().as_bytes())
        );
        assert!(parse_root_pub(&mixed).is_none());
    }
}
