//! A hub's node key: its identity among peers. Made on first run and kept in the
//! store directory (PKCS#8 PEM, mode 0600). A peer *is* its node id, the Ed25519
//! public key; QUIC's TLS is bound to it (see hubcast_transport::quic).

use crate::{encode_hex, KeyFileError};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const NODE_KEY_FILE: &str = "node.key";

/// A node's identity: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_hex(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &encode_hex(&self.0[..6]))
    }
}

/// Where a node listens, and who it must prove to be: `NODEID@HOST:PORT`, as the
/// broadcaster prints its tracker's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub id: NodeId,
    pub addr: std::net::SocketAddr,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl std::str::FromStr for NodeAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("`{s}`: give NODEID@HOST:PORT, as `broadcaster seed --tracker` prints it");
        let (id, addr) = s.trim().split_once('@').ok_or_else(usage)?;
        let id: [u8; 32] = crate::decode_hex(id).and_then(|b| b.try_into().ok()).ok_or_else(usage)?;
        let addr = addr.parse().map_err(|_| usage())?;
        Ok(NodeAddr { id: NodeId(id), addr })
    }
}

pub struct NodeKey {
    key: SigningKey,
}

impl NodeKey {
    pub fn generate<R: rand::CryptoRng + rand::RngCore>(rng: &mut R) -> NodeKey {
        NodeKey { key: SigningKey::generate(rng) }
    }

    pub fn id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// The private key as PKCS#8 DER, for building the TLS certificate.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        // Invariant: PKCS#8 encoding of an Ed25519 key cannot fail (fixed-size DER).
        self.key
            .to_pkcs8_der()
            .expect("invariant: an Ed25519 key always encodes as PKCS#8 (fixed-size DER)")
            .as_bytes()
            .to_vec()
    }

    /// Load `dir/node.key`, or make one there if there is none.
    pub fn load_or_create(dir: &Path) -> Result<NodeKey, KeyFileError> {
        let path = dir.join(NODE_KEY_FILE);
        let io = |source| KeyFileError::Io { path: path.clone(), source };
        if path.exists() {
            let pem = std::fs::read_to_string(&path).map_err(io)?;
            let key =
                SigningKey::from_pkcs8_pem(&pem).map_err(|_| KeyFileError::BadPrivateKey(path.clone()))?;
            return Ok(NodeKey { key });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let node = NodeKey::generate(&mut rand::rngs::OsRng);
        // Invariant: as above, encoding cannot fail.
        let pem = node
            .key
            .to_pkcs8_pem(Default::default())
            .expect("invariant: an Ed25519 key always encodes as PKCS#8 (fixed-size DER)");
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
        f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_node_address_reads_back_what_it_prints() {
        let a = NodeAddr { id: NodeId([7; 32]), addr: "127.0.0.1:4433".parse().unwrap() };
        assert_eq!(a.to_string().parse::<NodeAddr>(), Ok(a));
        assert!("127.0.0.1:4433".parse::<NodeAddr>().unwrap_err().contains("NODEID@HOST:PORT"));
        assert!("abcd@127.0.0.1:1".parse::<NodeAddr>().is_err(), "short id");
    }

    #[test]
    fn a_node_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeKey::load_or_create(dir.path()).unwrap();
        let again = NodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.id(), again.id());
        let mode = std::fs::metadata(dir.path().join(NODE_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.id().to_string().len(), 64);
    }
}
