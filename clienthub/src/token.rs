//! The hub's API token: what changes the hub over HTTP (fetch, pin, unpin)
//! needs it, so that a hub whose HTTP is open on the LAN can be read by
//! players but not steered by them. It is a file in the store that only the
//! hub's user can read (0600), as transmission's RPC keeps its secret;
//! `clienthub get/pin/unpin` read it from there and send it as
//! `Authorization: Bearer TOKEN`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token file's name in the store directory.
pub const TOKEN_FILE: &str = "api-token";

/// A token: 32 random bytes as 64 hex digits.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the hub's API token {path}: {source} (is --store the hub's store, and are you the hub's user?)"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the hub's API token {0} is not 64 hex digits: delete it and restart the hub for a new one")]
    Malformed(PathBuf),
}

impl Token {
    /// The store's token, made (readable by this user alone) if there is none.
    /// One readable by others is made private again.
    pub fn open_or_create(store: &Path) -> Result<Token, TokenError> {
        let path = store.join(TOKEN_FILE);
        let io = |source| TokenError::Io { path: path.clone(), source };
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut f) => {
                let token = Token(hubcast_keys::encode_hex(&rand::random::<[u8; 32]>()));
                f.write_all(token.0.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
                Ok(token)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the API token was readable by others: made private (0600)");
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                Token::read(store)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The store's token, as a client on the hub's host reads it.
    pub fn read(store: &Path) -> Result<Token, TokenError> {
        let path = store.join(TOKEN_FILE);
        let text =
            fs::read_to_string(&path).map_err(|source| TokenError::Io { path: path.clone(), source })?;
        let text = text.trim();
        match text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            true => Ok(Token(text.to_owned())),
            false => Err(TokenError::Malformed(path)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header's value carries this token, in a
    /// time that does not tell how much of it matched.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|a| a.trim().strip_prefix("Bearer ")) else { return false };
        let (given, ours) = (given.trim().as_bytes(), self.0.as_bytes());
        given.len() == ours.len() && given.iter().zip(ours).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_private_kept_and_admits_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let t = Token::open_or_create(dir.path()).unwrap();
        let path = dir.path().join(TOKEN_FILE);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(Token::open_or_create(dir.path()).unwrap().as_str(), t.as_str(), "kept across starts");
        assert_eq!(Token::read(dir.path()).unwrap().as_str(), t.as_str());

        assert!(t.admits(Some(&format!("Bearer {}", t.as_str()))));
        assert!(!t.admits(None));
        assert!(!t.admits(Some(t.as_str())), "the scheme is said");
        assert!(!t.admits(Some("Bearer ")));
        assert!(!t.admits(Some(&format!("Bearer {}", &t.as_str()[..63]))));
        let mut other = t.as_str().to_owned();
        other.replace_range(63.., if other.ends_with('0') { "1" } else { "0" });
        assert!(!t.admits(Some(&format!("Bearer {other}"))));

        // Made readable by others: private again at the next start.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Token::open_or_create(dir.path()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        fs::write(&path, "not a token").unwrap();
        assert!(matches!(Token::read(dir.path()), Err(TokenError::Malformed(_))));
    }
}
