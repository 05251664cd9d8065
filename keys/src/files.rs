//! Key files in a key directory, as written by `broadcaster keygen`:
//!
//! | file           | contents                                          | mode |
//! |----------------|---------------------------------------------------|------|
//! | `root.key`     | root private key, PKCS#8 PEM (keep it offline)    | 0600 |
//! | `signing.key`  | online signing private key, PKCS#8 PEM            | 0600 |
//! | `signing.cert` | the root's certificate for the signing key, hex   | 0644 |
//! | `root.pub`     | fingerprint and root public key, text             | 0644 |
//!
//! `root.pub` is what a hub may be given with `--trust FILE`.

use crate::{decode_hex, encode_hex, Certificate, Fingerprint, TrustAnchor};
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
    #[error("{0}: signing.cert does not certify signing.key; run `broadcaster keygen` again")]
    CertificateMismatch(PathBuf),
    #[error("{0}: not a root.pub file (needs `fingerprint:` and `root-public-key:` lines that match)")]
    BadRootPub(PathBuf),
    #[error("no signing key in {0}: make the channel's keys with `broadcaster keygen --dir {0}`")]
    NoKeys(PathBuf),
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

    /// Write all four files to `dir` (created if missing). Refuses to overwrite
    /// existing keys unless `force`.
    pub fn write(&self, dir: &Path, force: bool) -> Result<(), KeyFileError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if !force && (dir.join(ROOT_KEY_FILE).exists() || dir.join(SIGNING_KEY_FILE).exists()) {
            return Err(KeyFileError::AlreadyExists(dir.to_owned()));
        }
        let pem = |k: &SigningKey| {
            // Invariant: PKCS#8 encoding of an Ed25519 key cannot fail (fixed-size DER).
            k.to_pkcs8_pem(Default::default())
                .expect("invariant: an Ed25519 key always encodes as PKCS#8 (fixed-size DER)")
        };
        write_file(&dir.join(ROOT_KEY_FILE), pem(&self.root).as_bytes(), 0o600)?;
        write_file(&dir.join(SIGNING_KEY_FILE), pem(&self.signer.signing).as_bytes(), 0o600)?;
        let cert = format!("{}\n", encode_hex(&self.signer.cert.encode()));
        write_file(&dir.join(CERT_FILE), cert.as_bytes(), 0o644)?;
        write_file(&dir.join(ROOT_PUB_FILE), root_pub_text(&self.root.verifying_key()).as_bytes(), 0o644)
    }
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
    fn keygen_files_load_back_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ChannelKeys::generate(&mut rand::rngs::OsRng, 1000, 3600);
        keys.write(dir.path(), false).unwrap();
        for f in [ROOT_KEY_FILE, SIGNING_KEY_FILE] {
            let mode = fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let signer = SignerKeys::load(dir.path()).unwrap();
        assert_eq!(signer.cert, keys.signer.cert);
        let fp = signer.fingerprint();
        let anchor = TrustAnchor::from_arg(dir.path().join(ROOT_PUB_FILE).to_str().unwrap()).unwrap();
        assert_eq!(anchor.fingerprint, fp);
        assert_eq!(TrustAnchor::from_arg(&fp.to_string()).unwrap(), anchor);
        assert_eq!(signer.cert.verify(&anchor, 2000), Ok(signer.signing.verifying_key()));
        assert!(matches!(keys.write(dir.path(), false), Err(KeyFileError::AlreadyExists(_))));
        keys.write(dir.path(), true).unwrap();
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
