//! `clienthub get NAME_OR_ID [-o FILE]`: copy an object out of the running
//! hub, through its HTTP gateway (`/files/NAME` or `/objects/ID`), with a
//! progress bar on a terminal; with the hub's token, one it does not hold is
//! fetched first. The copy is written under `FILE.part`, made durable and
//! renamed: a `FILE` is whole or absent. And `clienthub pin/unpin`.

use crate::store_worker::Ask;
use crate::token::Token;
use hubcast_protocol::ObjectId;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("no hub answers on {0}: is `clienthub run --http {0}` running? ({1})")]
    Connect(SocketAddr, std::io::Error),
    #[error("reading from the hub at {0}: {1}")]
    Read(SocketAddr, std::io::Error),
    #[error("the hub at {addr} answered `{line}` for {what}: {hint}")]
    Refused { addr: SocketAddr, what: String, line: String, hint: String },
    #[error("the hub at {0} sent an answer that is not HTTP: {1}")]
    BadAnswer(SocketAddr, String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the hub's answer ended after {got} of {want} bytes (a chunk found damaged is fetched again: try once more)")]
    Short { got: u64, want: u64 },
}

/// What a get copied.
#[derive(Debug)]
pub struct Got {
    pub path: PathBuf,
    pub bytes: u64,
}

/// The gateway path of `what`: an object id (64 hex digits) or a name in
/// the channel, percent-encoded.
pub fn gateway_path(what: &str) -> String {
    match ObjectId::from_hex(what) {
        Some(id) => format!("/objects/{id}"),
        None => format!("/files/{}", percent_encode(what.trim_start_matches('/'))),
    }
}

/// Where the copy goes without `-o`: the name's last part, or the id.
pub fn default_output(what: &str) -> PathBuf {
    PathBuf::from(what.rsplit('/').find(|p| !p.is_empty()).unwrap_or(what))
}

/// A path for a URL: every byte but letters, digits, `-._~/` as `%XX`.
pub fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Send one request to the hub; the answer's status line and
/// `Content-Length`, and the reader left at its body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&Token>,
) -> Result<(String, Option<u64>, BufReader<std::net::TcpStream>), GetError> {
    let mut s = hubcast_transport::tcp::connect(addr, Duration::from_secs(5))
        .map_err(|e| GetError::Connect(addr, e))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| GetError::Connect(addr, e))?;
    let auth = token.map(|t| format!("Authorization: Bearer {}\r\n", t.as_str())).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| GetError::Connect(addr, e))?;
    let mut r = BufReader::new(s);
    let (status, length) = read_head(&mut r, addr)?;
    Ok((status, length, r))
}

/// An answer other than `ok`: what the hub said, and what to do.
fn refused(addr: SocketAddr, what: &str, status: String, r: &mut impl Read, token: bool) -> GetError {
    let mut body = String::new();
    let _ = r.take(4096).read_to_string(&mut body);
    let hint = match status.split_whitespace().nth(1) {
        Some("404") => "`clienthub status` lists the names the hub knows".to_owned(),
        Some("401" | "503") if !token => {
            format!("{} (no token was read: give --store the hub's store, as the hub's user)", body.trim())
        }
        _ => body.trim().to_owned(),
    };
    GetError::Refused { addr, what: what.to_owned(), line: status, hint }
}

/// Ask the hub at `addr` to fetch, pin or unpin `what` (with its token).
pub fn ask(addr: SocketAddr, ask: Ask, what: &str, token: &Token) -> Result<(), GetError> {
    let verb = format!("{ask:?}").to_lowercase();
    let path = format!("/api/{verb}/{}", percent_encode(what.trim_start_matches('/')));
    let (status, _, mut r) = request(addr, "POST", &path, Some(token))?;
    match status.split_whitespace().nth(1) {
        Some("202") => Ok(()),
        _ => Err(refused(addr, what, status, &mut r, true)),
    }
}

/// Copy `what` from the hub at `addr` to `out`. With the hub's token, an
/// object the hub does not hold is fetched (from peers, the origin for
/// what no peer has) and copied as it arrives.
pub fn get(
    addr: SocketAddr,
    what: &str,
    out: &Path,
    progress: bool,
    token: Option<&Token>,
) -> Result<Got, GetError> {
    let (status, length, mut r) = request(addr, "GET", &gateway_path(what), token)?;
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(refused(addr, what, status, &mut r, token.is_some()));
    }
    let want = length.ok_or_else(|| GetError::BadAnswer(addr, "no Content-Length".into()))?;
    let part = out.with_file_name(format!(
        "{}.part",
        out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "get".into())
    ));
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| GetError::Write { path, source }
    };
    let mut file = std::fs::File::create(&part).map_err(werr(&part))?;
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(want);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    while got < want {
        let n = r.read(&mut buf).map_err(|e| GetError::Read(addr, e))?;
        if n == 0 {
            break;
        }
        let n = n.min((want - got) as usize);
        file.write_all(&buf[..n]).map_err(werr(&part))?;
        got += n as u64;
        if let Some(b) = &bar {
            b.set_position(got);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if got < want {
        drop(file);
        let _ = std::fs::remove_file(&part);
        return Err(GetError::Short { got, want });
    }
    file.sync_all().map_err(werr(&part))?;
    std::fs::rename(&part, out).map_err(werr(out))?;
    Ok(Got { path: out.to_owned(), bytes: got })
}

/// The status line and `Content-Length` of an answer; the reader is left at
/// its body. Heads past 64 KiB are refused.
fn read_head(r: &mut impl BufRead, addr: SocketAddr) -> Result<(String, Option<u64>), GetError> {
    let mut status = String::new();
    let mut length = None;
    let mut read = 0usize;
    loop {
        let mut line = String::new();
        let n = r.by_ref().take(8192).read_line(&mut line).map_err(|e| GetError::Read(addr, e))?;
        read += n;
        if n == 0 || read > 64 << 10 {
            return Err(GetError::BadAnswer(addr, "the head ended early or ran long".into()));
        }
        let line = line.trim_end();
        if status.is_empty() {
            if !line.starts_with("HTTP/1.") {
                return Err(GetError::BadAnswer(addr, line.chars().take(80).collect()));
            }
            status = line.to_owned();
        } else if line.is_empty() {
            return Ok((status, length));
        } else if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_become_gateway_paths_and_file_names() {
        let id = "ab".repeat(32);
        assert_eq!(gateway_path(&id), format!("/objects/{id}"));
        assert_eq!(gateway_path("sample/a film.mp4"), "/files/sample/a%20film.mp4");
        assert_eq!(gateway_path("/x/ü?#%"), "/files/x/%C3%BC%3F%23%25");
        assert_eq!(default_output("sample/a film.mp4"), PathBuf::from("a film.mp4"));
        assert_eq!(default_output(&id), PathBuf::from(&id));
    }
}
