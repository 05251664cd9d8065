//! Harness for end-to-end tests: real `broadcaster` and `clienthub` processes on
//! loopback multicast, each test on its own group and ports.
//!
//! The binaries are built once per test process with the same cargo and profile
//! as the tests (a no-op when they are fresh), so a test never runs a stale binary.
//! Every daemon is killed when its handle drops, so a failing test leaks nothing.
//! Waits have generous deadlines as safety nets; no test asserts on time.

use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Directory holding the built binaries.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe =
            std::env::current_exe().expect("invariant: a running test binary has a path (/proc/self/exe)");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("invariant: cargo runs test binaries from target/<profile>/deps")
            .to_owned();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(env!("CARGO"));
        // Without the variables cargo sets for this test: build scripts that
        // watch them (ring watches CARGO_MANIFEST_DIR) would otherwise see a
        // change, and the daemons would be rebuilt from ring up on every switch
        // between `cargo test` and `cargo build`.
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            if var.starts_with("CARGO_PKG_")
                || var.starts_with("CARGO_BIN_")
                || var.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&var.as_ref())
            {
                cmd.env_remove(var.as_ref());
            }
        }
        cmd.args(["build", "--quiet", "--bins", "-p", "hubcast-broadcaster", "-p", "hubcast-clienthub"])
            .arg("--manifest-path")
            .arg(&manifest);
        if release {
            cmd.arg("--release");
        }
        let status =
            cmd.status().expect("precondition of the suite: $CARGO, which runs this test, can run again");
        assert!(status.success(), "building broadcaster and clienthub failed");
        dir
    })
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A multicast group and port no other test in this run uses (nor its port + 1,
/// the hubs' control group).
pub fn unique_group() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // Even ports: a hub's control group is the data port + 1.
    let port = 20_000 + (pid % 2000) as u16 * 16 + (n % 8) * 2;
    let octet = (n / 8 % 200) as u8 + 1;
    SocketAddr::from(([239, 255, (pid % 250) as u8 + 1, octet], port))
}

/// Ports handed to daemons come from here, below Linux's ephemeral range
/// (32768-60999) and the groups' ports ([`unique_group`], 20000-52000): a
/// port the kernel picked for a socket bound to port 0 could be picked again
/// for another (a hub's feed socket, another test's daemon) between the test
/// freeing it and the daemon binding it. Once, a desert hub's tracker port
/// went that way and the test timed out connecting.
const PORTS: std::ops::Range<u32> = 10_000..20_000;

/// The next port of [`PORTS`] that `free` says is free now: each process
/// starts at its own place (by pid) and never hands out a port twice.
fn unused_port(free: impl Fn(SocketAddr) -> bool) -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = PORTS.start + (start + NEXT.fetch_add(1, Relaxed)) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if free(addr) {
            return addr;
        }
    }
    panic!("precondition of the suite: a free loopback port in {PORTS:?}")
}

/// A TCP port free right now on loopback.
pub fn free_port() -> SocketAddr {
    unused_port(|a| TcpListener::bind(a).is_ok())
}

/// A UDP port free right now on loopback (for QUIC).
pub fn free_udp_port() -> SocketAddr {
    unused_port(|a| std::net::UdpSocket::bind(a).is_ok())
}

/// A child process, stopped with SIGTERM (and checked to exit 0) when dropped.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Daemon {
        Daemon::spawn_with_env(name, program, args, log_dir, &[])
    }

    /// [`Daemon::spawn`] with variables added to its environment.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .expect("precondition of the suite: the test's temporary directory is writable");
        let child = Command::new(program)
            .envs(env.iter().copied())
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(
                out.try_clone()
                    .expect("precondition of the suite: a file descriptor is free to share the log"),
            )
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Daemon { name: name.into(), child: Some(child), log }
    }

    /// Bytes this process has caused to be written to storage so far
    /// (`write_bytes` of /proc/PID/io, counted when pages are dirtied, less
    /// `cancelled_write_bytes`: what truncation took back).
    pub fn write_bytes(&self) -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.as_ref()?.id())).ok()?;
        let field = |name: &str| io.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        Some(field("write_bytes:")?.saturating_sub(field("cancelled_write_bytes:").unwrap_or(0)))
    }

    /// Kill with SIGKILL, as a power cut would, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Ask the process to stop with SIGTERM, as systemd does.
    pub fn terminate(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }

    /// Wait for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// How long a daemon may take to stop on SIGTERM at the end of a test: a
/// net, not a figure (they stop in well under a second); systemd's default
/// stop timeout is 90 s.
const STOP_NET: Duration = Duration::from_secs(20);

impl Drop for Daemon {
    /// At the end of a test every daemon still running is stopped as systemd
    /// stops it, with SIGTERM, and must exit 0: no task left hanging, no
    /// error on the way out. (A test that already failed just kills them.)
    fn drop(&mut self) {
        if std::thread::panicking() || self.child.is_none() {
            return self.kill();
        }
        if let Ok(Some(st)) = self.child.as_mut().map_or(Ok(None), Child::try_wait) {
            self.child = None;
            // Exited by itself while the test ran: a daemon that stops on
            // its own (a finite broadcaster) must have stopped cleanly.
            assert!(st.success(), "{} exited with {st} during the test:\n{}", self.name, self.log_text());
            return;
        }
        let asked = Instant::now();
        self.terminate();
        match self.wait_exit(STOP_NET) {
            Some(st) => {
                // The figure, for the record (`grep 'stopped in'` over a run).
                eprintln!("{} stopped in {:.2} s of SIGTERM", self.name, asked.elapsed().as_secs_f64());
                assert!(st.success(), "{} exited with {st} on SIGTERM:\n{}", self.name, self.log_text())
            }
            None => {
                self.kill();
                panic!(
                    "{} did not stop within {} s of SIGTERM:\n{}",
                    self.name,
                    STOP_NET.as_secs(),
                    self.log_text()
                );
            }
        }
    }
}

/// Whether a test that needs something this machine may lack can run:
/// `missing` says what is missing. It then says it skipped; but under
/// `HUBCAST_LAB_REQUIRED` (CI) it fails instead, so no test passes by
/// skipping there.
pub fn can_run(missing: Option<&str>) -> bool {
    let Some(why) = missing else { return true };
    assert!(std::env::var_os("HUBCAST_LAB_REQUIRED").is_none(), "HUBCAST_LAB_REQUIRED is set, and {why}");
    eprintln!("SKIPPED: {why}");
    false
}

/// The offline root folder [`keygen`] keeps apart from the keys folder
/// `keys`: its sibling `KEYS-root`.
pub fn root_dir(keys: &Path) -> PathBuf {
    let name = keys.file_name().expect("precondition: a keys folder has a name").to_string_lossy();
    keys.with_file_name(format!("{name}-root"))
}

/// Run `broadcaster keygen --root-dir KEYS-root --keys KEYS`; returns the
/// fingerprint it printed last. Seeding never sees the root.
pub fn keygen(keys: &Path) -> String {
    let out = Command::new(bin("broadcaster"))
        .arg("keygen")
        .arg("--root-dir")
        .arg(root_dir(keys))
        .arg("--keys")
        .arg(keys)
        .output()
        .expect("precondition of the suite: the built broadcaster runs");
    assert!(out.status.success(), "keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("invariant: keygen prints hex and ASCII words only");
    let last = text
        .lines()
        .last()
        .expect("invariant: keygen prints the fingerprint on its last line")
        .trim()
        .to_owned();
    assert_eq!(last.len(), 64, "fingerprint alone on the last line: {text}");
    last
}

std::thread_local! {
    /// The last status this test's thread read: what [`wait_for`] shows when
    /// it times out.
    static LAST_STATUS: std::cell::RefCell<Option<(SocketAddr, String)>> = const { std::cell::RefCell::new(None) };
}

/// A hub's `/api/status`, or `None` while it is not answering.
pub fn status(http: SocketAddr) -> Option<Value> {
    let body = hubcast_clienthub::status_client::get(http, "/api/status").ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    LAST_STATUS.with(|l| *l.borrow_mut() = Some((http, body)));
    Some(v)
}

/// One request's status line (`POST` with an empty body, or `GET`), with
/// an `Authorization` header if given.
pub fn request(http: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!("Authorization: {a}"));
    let head = response_head(http, method, path, auth.as_deref().into_iter());
    head.lines().next().unwrap_or("").to_owned()
}

/// One request with these header lines; the answer's status line and
/// headers (the body left unread).
pub fn response_head<'a>(
    http: SocketAddr,
    method: &str,
    path: &str,
    headers: impl Iterator<Item = &'a str>,
) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http)
        .expect("precondition of the test: the hub's HTTP listener is up (its status answered)");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("invariant: a nonzero read timeout is accepted");
    let headers: String = headers.map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("precondition of the test: the hub keeps the connection open for a request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(answer.len());
    String::from_utf8_lossy(&answer[..end]).into_owned()
}

/// The `Authorization` header a hub's API token (in its store) makes.
pub fn bearer(store: &Path) -> String {
    let token = std::fs::read_to_string(store.join("api-token"))
        .expect("precondition of the test: the hub has started and made its api-token");
    format!("Bearer {}", token.trim())
}

/// Poll `f` until it returns `Some`, or panic after `deadline` with `what`
/// and the last status the thread read (what the daemon was doing when it
/// did not get there).
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    LAST_STATUS.with(|l| l.borrow_mut().take());
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= deadline {
            let last = LAST_STATUS.with(|l| l.borrow_mut().take());
            let last = last.map_or("none read".into(), |(at, body)| format!("{at}: {body}"));
            panic!("timed out after {deadline:?} waiting for {what}; the last status: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when the hub knows `objects` objects and all are complete.
pub fn all_complete(s: &Value, objects: usize) -> bool {
    let list = s["objects"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    list.len() == objects && list.iter().all(|o| o["complete"] == true)
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// The object id the broadcaster gives a seeded file named `name` (its path
/// relative to the seeded folder's parent) with this content.
pub fn archive_id(name: &str, content: &[u8]) -> hubcast_protocol::ObjectId {
    hubcast_protocol::ObjectId::archive(name, blake3::hash(content).as_bytes())
}

/// UDP datagrams this network namespace's kernel dropped for a full
/// receive buffer so far (`RcvbufErrors` of /proc/net/snmp).
pub fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().expect("Udp header"), udp.next().expect("Udp values"));
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors").expect("RcvbufErrors");
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("a count")
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for tens of MiB.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every file under `root`, relative path → BLAKE3, for comparing trees.
pub fn tree_digest(root: &Path) -> std::collections::BTreeMap<PathBuf, [u8; 32]> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, [u8; 32]>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let data = std::fs::read(&p)
                    .expect("precondition: the tree being digested is not changed while it is read");
                out.insert(
                    p.strip_prefix(root)
                        .expect("invariant: the walk starts at root, so every path is under it")
                        .to_owned(),
                    *blake3::hash(&data).as_bytes(),
                );
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Bytes the files at or under `paths` take on disk (allocated blocks, as
/// `du` counts them), a file with several names counted once.
pub fn disk_use(paths: &[&Path]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(path: &Path, seen: &mut std::collections::HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(meta) = path.symlink_metadata() else { return };
        if meta.is_dir() {
            for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&e.path(), seen, total);
            }
        } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            *total += meta.blocks() * 512;
        }
    }
    let (mut seen, mut total) = (std::collections::HashSet::new(), 0);
    for p in paths {
        walk(p, &mut seen, &mut total);
    }
    total
}

/// Arguments for `clienthub run`.
pub fn hub_args(
    trust: &str,
    group: SocketAddr,
    store: &Path,
    export: &Path,
    http: SocketAddr,
) -> Vec<String> {
    vec![
        "run".into(),
        "--trust".into(),
        trust.into(),
        "--group".into(),
        group.to_string(),
        "--store".into(),
        store.display().to_string(),
        "--export".into(),
        export.display().to_string(),
        "--http".into(),
        http.to_string(),
    ]
}

/// Start `n` hubs on `group`: hub i stores in `dir/store-i`, exports to
/// `dir/out-i`, logs to `dir/hub-i.log`, and takes `extra(i)` besides. Returns
/// them with their HTTP addresses.
pub fn start_hubs(
    dir: &Path,
    trust: &str,
    group: SocketAddr,
    n: usize,
    extra: impl Fn(usize) -> Vec<String>,
) -> (Vec<Daemon>, Vec<SocketAddr>) {
    let https: Vec<SocketAddr> = (0..n).map(|_| free_port()).collect();
    let hubs = https
        .iter()
        .enumerate()
        .map(|(i, http)| {
            let store = dir.join(format!("store-{i}"));
            let mut args = hub_args(trust, group, &store, &dir.join(format!("out-{i}")), *http);
            args.extend(extra(i));
            Daemon::spawn(&format!("hub-{i}"), &bin("clienthub"), &args, dir)
        })
        .collect();
    (hubs, https)
}

/// Wait until every hub's status lists `peers` peers.
pub fn wait_for_peers(https: &[SocketAddr], peers: usize, deadline: Duration) {
    for http in https {
        wait_for("hubs to find each other", deadline, || {
            status(*http).filter(|s| s["peers"].as_array().is_some_and(|p| p.len() == peers))
        });
    }
}

/// Arguments for `broadcaster seed`.
pub fn seed_args(keys: &Path, group: SocketAddr, rate: &str, rounds: u32, paths: &[&Path]) -> Vec<String> {
    let mut a = vec![
        "seed".into(),
        "--keys".into(),
        keys.display().to_string(),
        "--group".into(),
        group.to_string(),
        "--rate".into(),
        rate.into(),
        "--rounds".into(),
        rounds.to_string(),
    ];
    a.extend(paths.iter().map(|p| p.display().to_string()));
    a
}

/// `seed_args` with the origin service on (`--tracker` on a free port, and
/// `--linger` so it outlives the rounds): origin repair is there to be asked,
/// so a hub's `origin == 0` says it did not need it. The hubs learn it from
/// the manifests; [`origin_known`] checks that they did.
pub fn seed_args_with_origin(
    keys: &Path,
    group: SocketAddr,
    rate: &str,
    rounds: u32,
    paths: &[&Path],
) -> Vec<String> {
    let mut a = seed_args(keys, group, rate, rounds, &[]);
    a.extend(["--tracker".into(), free_udp_port().to_string(), "--linger".into(), "600".into()]);
    a.extend(paths.iter().map(|p| p.display().to_string()));
    a
}

/// The hub's status names an origin service, taken from the manifests.
pub fn origin_known(s: &Value) -> bool {
    s["tracker"]["from"] == "manifest" && s["tracker"]["addr"].as_str().is_some_and(|a| a.contains('@'))
}

/// One tracker query over QUIC, as a newcomer hub would ask it, from a node
/// key made for the occasion. The error names the step that failed.
pub fn ask_tracker(
    tracker: hubcast_keys::NodeAddr,
    query: hubcast_protocol::peer_wire::PeerMessage,
) -> Result<Vec<hubcast_protocol::peer_wire::ListedHub>, String> {
    use hubcast_protocol::peer_wire::{self, PeerMessage};
    let at = |step: &'static str| move |e: &dyn std::fmt::Display| format!("{step}: {e}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| at("a runtime")(&e))?;
    rt.block_on(async {
        let key = hubcast_keys::NodeKey::generate(&mut rand::rngs::OsRng);
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let ep = hubcast_transport::quic::NodeEndpoint::bind(loopback, &key)
            .map_err(|e| at("a QUIC endpoint on loopback")(&e))?;
        let connecting =
            ep.connect(tracker.addr, tracker.id).map_err(|e| at("a client config for the tracker")(&e))?;
        let conn = connecting.await.map_err(|e| at("connecting to the tracker")(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| at("a stream to the tracker")(&e))?;
        let mut out = Vec::new();
        peer_wire::encode(&query, &mut out);
        send.write_all(&out).await.map_err(|e| at("writing the query")(&e))?;
        send.finish().map_err(|e| at("finishing the query")(&e))?;
        let body = recv.read_to_end(1 << 16).await.map_err(|e| at("the answer, under 64 KiB")(&e))?;
        match peer_wire::decode_all(&body).map_err(|e| at("decoding the answer")(&e))?.as_slice() {
            [PeerMessage::HubList(hubs)] => Ok(hubs.clone()),
            other => Err(format!("the tracker answered {other:?}")),
        }
    })
}

/// Debian's headless Chromium, if installed (else the test says it is skipped).
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    });
    can_run(found.is_none().then_some("chromium is missing: apt-get install chromium"));
    found
}

/// The page as the browser built it, scripts and all (their requests
/// answered within the virtual time budget).
pub fn dump_dom(browser: &str, url: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=1000",
            "--dump-dom",
            url,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A wait that times out names the last status read: the first timeout
    /// of a flaky test is then enough to tell why.
    #[test]
    fn a_wait_that_times_out_shows_the_last_status_read() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("precondition: a loopback port");
        let addr = listener.local_addr().expect("precondition: a bound listener");
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.read(&mut [0u8; 1024]);
                let body = r#"{"feed":{"mode":"searching","bridges_banned":1}}"#;
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            }
        });
        let waited = std::panic::catch_unwind(|| {
            wait_for("a bridge", Duration::from_millis(300), || {
                status(addr).filter(|s| s["feed"]["mode"] == "bridge")
            })
        });
        let message = waited.expect_err("the wait times out");
        let message = message.downcast_ref::<String>().expect("a formatted panic message");
        assert!(message.contains("waiting for a bridge"), "{message}");
        assert!(message.contains(r#""bridges_banned":1"#), "{message}");
    }
}
