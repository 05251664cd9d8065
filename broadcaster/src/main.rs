//! `broadcaster`: make channel keys, and seed files and folders over multicast.

use clap::{Parser, Subcommand};
use hubcast_broadcaster::live::LiveConfig;
use hubcast_broadcaster::status::{self, StatusBoard};
use hubcast_broadcaster::{unix_now, SeedConfig};
use hubcast_daemon::units::{Rate, RateSetting, Size};
use hubcast_keys::{KeyFileError, RootKeys, SignerKeys};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "broadcaster", version, about = "hubcast broadcaster: signed RaptorQ over IP multicast")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (coloured only on a terminal) or as JSON objects.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: hubcast_daemon::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Make a channel: an offline root key (in --root-dir) and an online
    /// signing key with its certificate (in --keys, what seed and live read).
    /// Prints the channel's trust fingerprint alone on the last line.
    Keygen {
        /// The offline root folder: root.key and the serial counter. Keep it
        /// off the broadcasting machine (created if missing).
        #[arg(long, required_unless_present = "dir")]
        root_dir: Option<PathBuf>,
        /// The online keys folder the broadcaster reads (created if missing).
        #[arg(long, required_unless_present = "dir")]
        keys: Option<PathBuf>,
        /// Shorthand for --root-dir DIR --keys DIR: the root key beside the
        /// online one, for trying things out (warns).
        #[arg(long, conflicts_with_all = ["root_dir", "keys"])]
        dir: Option<PathBuf>,
        #[command(flatten)]
        validity: Validity,
        /// Replace a root already in the folder (a new channel: every hub
        /// must be given the new fingerprint).
        #[arg(long)]
        force: bool,
    },
    /// Make a fresh signing key and its certificate with the root, offline,
    /// with the next serial; a running broadcaster takes them on SIGHUP.
    Certify {
        /// The offline root folder from `keygen --root-dir`.
        #[arg(long)]
        root_dir: PathBuf,
        /// The keys folder to write signing.key and signing.cert into.
        #[arg(long)]
        keys: PathBuf,
        #[command(flatten)]
        validity: Validity,
    },
    /// Revoke signing certificates by serial (a leaked signing key): the
    /// root signs a new revocation list, one version up, which the
    /// broadcaster carries to every hub after a reload.
    Revoke {
        /// The offline root folder from `keygen --root-dir`.
        #[arg(long)]
        root_dir: PathBuf,
        /// The serial to revoke (as `certify` printed it); repeatable.
        #[arg(long = "serial", required = true)]
        serials: Vec<u64>,
        /// Also write the list into this keys folder.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Hand the channel to a new root (a root that leaked, or one past its
    /// time): a statement signed by the old root and the new one, which the
    /// broadcaster carries and hubs follow. The channel keeps its
    /// fingerprint.
    RotateRoot {
        /// The root folder in use now.
        #[arg(long)]
        root_dir: PathBuf,
        /// Where to make the new root (created; must not hold one).
        #[arg(long)]
        new_root_dir: PathBuf,
        /// Also write the chain (and the revocation list) into this keys folder.
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Send files and folders in a carousel until stopped or for --rounds rounds.
    Seed(Box<SeedArgs>),
    /// Send a live MPEG-TS stream as signed segments, until the input ends or
    /// the broadcaster is stopped. Hubs serve it at /live/NAME/index.m3u8.
    Live(Box<LiveArgs>),
    /// Print the node id of the origin service (making its key, node.key in the
    /// key directory, if there is none), for hubs' --tracker NODEID@HOST:PORT.
    NodeId {
        /// Key directory from `broadcaster keygen`.
        #[arg(long)]
        keys: PathBuf,
        /// Where node.key is kept, as `seed --state-dir`. [default: --keys]
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

/// How long a certificate lasts.
#[derive(clap::Args)]
struct Validity {
    /// Days the signing certificate is valid (1 to 3650).
    #[arg(long, visible_alias = "validity-days", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
    days: u64,
    /// Testing aid: seconds instead of days.
    #[arg(long, hide = true, conflicts_with = "days")]
    seconds: Option<u64>,
}

/// A certificate starts this long before it is made, so hubs whose clocks
/// run a little behind take it at once.
const CLOCK_SLACK_SECS: u64 = 300;

impl Validity {
    /// `[not_before, not_after)` of a certificate made now.
    fn window(&self) -> (u64, u64) {
        let now = unix_now();
        let secs = self.seconds.unwrap_or(self.days * 86_400);
        (now.saturating_sub(CLOCK_SLACK_SECS), now.saturating_add(secs))
    }
}

/// Certify a fresh signing key into `keys` and say what was written.
fn certify(root: &RootKeys, keys: &std::path::Path, validity: &Validity) -> anyhow::Result<()> {
    let (not_before, not_after) = validity.window();
    let issued = root.certify(&mut rand::rngs::OsRng, keys, not_before, not_after)?;
    println!(
        "wrote {}/{{signing.key,signing.cert,root.pub}}: serial {}, valid until {}",
        keys.display(),
        issued.cert.serial,
        hubcast_broadcaster::renewal::utc(not_after)
    );
    Ok(())
}

/// Flags `seed` and `live` share: where and how the channel is sent.
#[derive(clap::Args)]
struct SendArgs {
    /// TOML file with settings (see docs/OPERATIONS.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Key directory from `broadcaster keygen`. [default: keys]
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Where the broadcaster keeps what it makes (node.key of the origin
    /// service); give a writable folder when the keys are read-only.
    /// [default: the --keys directory]
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Multicast group and port. [default: 239.255.0.1:5000]
    #[arg(long)]
    group: Option<SocketAddr>,
    /// Interface to send on: its IPv4 address for an IPv4 group, its name or
    /// index for an IPv6 group. [default: 127.0.0.1, this host only]
    #[arg(long)]
    iface: Option<String>,
    /// Send rate: 200Mbit (or Mbps, megabits per second), 25MB/s (megabytes
    /// per second); docs/OPERATIONS.md lists every unit. For seed, `auto`:
    /// the hubs' feedback sets it, within --rate-min and --rate-max (needs
    /// the origin service, --tracker). [default: seed: auto with --tracker,
    /// else 200Mbit; live: 100Mbit]
    #[arg(long)]
    rate: Option<RateSetting>,
    /// Repair symbols sent as a share of the source symbols; for seed, the
    /// least sent (hubs' loss reports raise it up to --fec-max). [default: 0.1]
    #[arg(long, visible_alias = "fec-min")]
    fec_overhead: Option<f64>,
    /// Chunk size: bytes, or with a unit (512KiB, 1MiB). [default: 1MiB]
    #[arg(long)]
    chunk_size: Option<Size>,
    /// Multicast TTL / hop limit. [default: 1, this link only]
    #[arg(long)]
    ttl: Option<u32>,
    /// Run the origin service (repair requests; tracker) on this QUIC address,
    /// e.g. 0.0.0.0:7000. Prints the NODEID@ADDR hubs take as --tracker.
    /// [default: none]
    #[arg(long)]
    tracker: Option<SocketAddr>,
    /// With --tracker: the address hubs reach it at, named in every manifest
    /// (hubs then need no --tracker). Default: the --tracker address, 0.0.0.0
    /// replaced by the --iface address.
    #[arg(long)]
    tracker_public: Option<SocketAddr>,
    /// Cap on the origin's multicast repair. [default for seed: none (see
    /// --repair-share); for live: 20Mbit, on top of --rate]
    #[arg(long)]
    repair_rate: Option<Rate>,
    /// Local HTTP listener for /api/status, e.g. 127.0.0.1:8090. [default: none]
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Testing aid: leave out this share of the symbols, as if every hub
    /// lost them. [default: 0]
    #[arg(long)]
    simulate_loss: Option<f64>,
}

/// Each flag given overrides its setting.
macro_rules! overlay {
    ($c:ident, $a:expr; $($f:ident),*) => { $( if let Some(v) = $a.$f { $c.$f = v; } )* };
}

/// The settings file (or the defaults) with the shared flags laid over it.
macro_rules! send_config {
    ($args:expr, $ty:ty) => {{
        let a: SendArgs = $args;
        let mut c: $ty = hubcast_daemon::load_settings(a.config.as_deref())?;
        overlay!(c, a; keys, group, iface, fec_overhead, ttl, simulate_loss);
        if let Some(r) = a.repair_rate {
            c.repair_rate = r.into(); // a cap for seed (Option), the rate for live
        }
        if let Some(size) = a.chunk_size {
            c.chunk_size = u32::try_from(size.0).unwrap_or(u32::MAX);
        }
        c.tracker = a.tracker.or(c.tracker);
        c.state_dir = a.state_dir.or(c.state_dir);
        c.tracker_public = a.tracker_public.or(c.tracker_public);
        c.http = a.http.or(c.http);
        c
    }};
}

#[derive(clap::Args)]
struct SeedArgs {
    #[command(flatten)]
    send: SendArgs,
    /// Carousel rounds; 0: until stopped. [default: 0]
    #[arg(long)]
    rounds: Option<u32>,
    /// With --tracker: keep answering repair requests this many seconds after
    /// the last round. [default: 30]
    #[arg(long)]
    linger: Option<u64>,
    /// The catalog's metadata (titles, descriptions, tags, types) for the
    /// seeded files: a TOML file of `[[item]]`s, as docs/OPERATIONS.md shows.
    /// [default: none: each file's name, type and time]
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// With --tracker: the share of --rate origin repair may take while the
    /// carousel sends (the carousel sends that much less); all of it once the
    /// carousel is idle. [default: 0.5]
    #[arg(long)]
    repair_share: Option<f64>,
    /// With --tracker: the most repair symbols the hubs' loss reports may
    /// raise the carousel to, as a share of K (from --fec-overhead up to 1;
    /// a chunk's digest table covers 0.5). [default: 0.5]
    #[arg(long)]
    fec_max: Option<f64>,
    /// With --rate auto: the rate it never goes below. [default: 10Mbit]
    #[arg(long)]
    rate_min: Option<Rate>,
    /// With --rate auto: the rate it never goes above. [default: 1Gbit]
    #[arg(long)]
    rate_max: Option<Rate>,
    /// A file or folder announced in the catalog but not sent on the
    /// carousel: the origin service multicasts it once when hubs ask
    /// (`clienthub get`). Repeatable; needs --tracker.
    #[arg(long = "on-demand", value_name = "PATH")]
    on_demand: Vec<PathBuf>,
    /// Scan the paths again every this many seconds (and on SIGHUP), and
    /// publish what changed without a restart; 0: on SIGHUP only.
    /// [default: 300]
    #[arg(long = "rescan-every", value_name = "SECS")]
    rescan_secs: Option<u64>,
    /// Files and folders to seed.
    paths: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct LiveArgs {
    #[command(flatten)]
    send: SendArgs,
    /// MPEG-TS source: a file (played in real time), `-` for stdin (already
    /// real time, e.g. from `ffmpeg -re`), or udp://ADDR:PORT. [default: -]
    #[arg(long)]
    input: Option<String>,
    /// Channel name: hubs serve it at /live/NAME/index.m3u8. [default: live]
    #[arg(long)]
    name: Option<String>,
    /// Target segment duration (cut at the next keyframe after it). [default: 1s]
    #[arg(long)]
    segment: Option<String>,
    /// Playout deadline after a segment is cut: hubs give up on it after.
    /// [default: 3s]
    #[arg(long)]
    deadline: Option<String>,
    /// Segments announced and repairable at once. [default: 10]
    #[arg(long)]
    window: Option<u32>,
    /// Play a file input again from the start when it ends.
    #[arg(long = "loop")]
    loop_input: bool,
}

impl LiveArgs {
    fn into_config(self) -> anyhow::Result<LiveConfig> {
        let rate = self.send.rate;
        let mut c = send_config!(self.send, LiveConfig);
        overlay!(c, self; input, name, segment, deadline, window);
        match rate {
            Some(RateSetting::Fixed(r)) => c.rate = r,
            Some(RateSetting::Auto) => {
                anyhow::bail!(
                    "--rate auto is for seed; a live stream sends at a fixed rate: give --rate, e.g. 20Mbit"
                )
            }
            None => {}
        }
        c.loop_input |= self.loop_input;
        Ok(c)
    }
}

/// Serve the broadcaster's status on `addr`, if given.
async fn serve_status(
    addr: Option<SocketAddr>,
    status: &StatusBoard,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = hubcast_transport::tcp::listen(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--http {addr}: {e} (is the port in use? pick another)"))?;
    Ok(Some(tokio::spawn(status::serve(listener, status.clone(), cancel.clone()))))
}

impl SeedArgs {
    fn into_config(self) -> anyhow::Result<SeedConfig> {
        let rate = self.send.rate;
        let mut c = send_config!(self.send, SeedConfig);
        overlay!(c, self; rounds, repair_share, fec_max, rate_min, rate_max, rescan_secs);
        if rate.is_some() {
            c.rate = rate;
        }
        if let Some(v) = self.linger {
            c.linger_secs = v;
        }
        if self.catalog.is_some() {
            c.catalog = self.catalog;
        }
        if !self.paths.is_empty() {
            c.paths = self.paths;
        }
        if !self.on_demand.is_empty() {
            c.on_demand = self.on_demand;
        }
        Ok(c)
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    hubcast_daemon::run_main(cli.log_format, run(cli)).await;
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { root_dir, keys, dir, validity, force } => {
            let (root_dir, keys) = match (dir, root_dir, keys) {
                (Some(dir), _, _) => {
                    eprintln!(
                        "warning: --dir puts root.key beside the online signing key; for a channel that \
                         lasts, use --root-dir ROOT --keys KEYS and keep ROOT offline"
                    );
                    (dir.clone(), dir)
                }
                (None, Some(root_dir), Some(keys)) => (root_dir, keys),
                _ => anyhow::bail!("give --root-dir ROOT and --keys KEYS (or --dir DIR for both)"),
            };
            if !force && keys.join(hubcast_keys::files::SIGNING_KEY_FILE).exists() {
                anyhow::bail!(KeyFileError::AlreadyExists(keys));
            }
            let root = RootKeys::create(&mut rand::rngs::OsRng, &root_dir, force)?;
            certify(&root, &keys, &validity)?;
            println!("wrote {}/{{root.key,root.pub,serial}}: keep this folder offline", root_dir.display());
            println!("give hubs root.pub or the fingerprint below as --trust");
            println!("{}", root.fingerprint());
        }
        Command::Revoke { root_dir, serials, keys } => {
            let root = RootKeys::open(&root_dir)?;
            let list = root.revoke(&serials, unix_now(), keys.as_deref())?;
            println!(
                "wrote {}/revocations: version {}, revoking serials {:?}",
                root_dir.display(),
                list.version,
                list.serials()
            );
            match keys {
                Some(k) => println!("and {}/revocations", k.display()),
                None => println!("copy it into the broadcaster's keys folder"),
            }
            println!(
                "then certify a new signing key if the one in use is revoked, and reload the broadcaster (systemctl reload hubcast-broadcaster, or kill -HUP PID)"
            );
        }
        Command::RotateRoot { root_dir, new_root_dir, keys } => {
            let old = RootKeys::open(&root_dir)?;
            let (new, statement) =
                old.rotate(&mut rand::rngs::OsRng, &new_root_dir, keys.as_deref(), unix_now())?;
            println!(
                "wrote {}: root version {} (fingerprint {}), the chain of rotations, the serial counter{}",
                new_root_dir.display(),
                statement.version,
                new.fingerprint(),
                if new.revocations()?.is_some() { " and the revocation list" } else { "" }
            );
            println!(
                "now certify a signing key with it (broadcaster certify --root-dir {} --keys KEYS), copy rotations and the key to the broadcaster and reload; keep {} offline, retire {}",
                new_root_dir.display(),
                new_root_dir.display(),
                root_dir.display()
            );
            println!("hubs follow the chain; the channel's fingerprint stays the one below (give new hubs the same)");
            let channel =
                hubcast_keys::files::parse_root_pub(&std::fs::read_to_string(new_root_dir.join("root.pub"))?)
                    .ok_or_else(|| anyhow::anyhow!("{}/root.pub is unreadable", new_root_dir.display()))?;
            println!("{channel}");
        }
        Command::Certify { root_dir, keys, validity } => {
            certify(&RootKeys::open(&root_dir)?, &keys, &validity)?;
            println!("a running broadcaster takes it on SIGHUP: systemctl reload hubcast-broadcaster, or kill -HUP PID");
        }
        Command::NodeId { keys, state_dir } => {
            let dir = state_dir.unwrap_or(keys);
            println!("{}", hubcast_keys::NodeKey::load_or_create(&dir)?.id());
        }
        Command::Seed(args) => {
            let cfg = args.into_config()?;
            let keys = SignerKeys::load(&cfg.keys)?;
            let cancel = hubcast_daemon::cancel_on_signal();
            let status = StatusBoard::default();
            let http = serve_status(cfg.http, &status, &cancel).await?;
            let r = hubcast_broadcaster::seed(&cfg, keys, status, cancel.clone()).await;
            cancel.cancel();
            if let Some(h) = http {
                let _ = h.await;
            }
            let r = r?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            println!(
                "sent {} objects ({} bytes) as {} datagrams, {} bytes, in {:.1} s ({:.0} Mbit/s)",
                r.objects,
                r.object_bytes,
                r.datagrams,
                r.bytes,
                secs,
                r.bytes as f64 * 8.0 / secs / 1e6
            );
        }
        Command::Live(args) => {
            let cfg = args.into_config()?;
            let keys = SignerKeys::load(&cfg.keys)?;
            let cancel = hubcast_daemon::cancel_on_signal();
            let status = StatusBoard::default();
            let http = serve_status(cfg.http, &status, &cancel).await?;
            let r = hubcast_broadcaster::live::live(&cfg, keys, status, cancel.clone()).await;
            cancel.cancel();
            if let Some(h) = http {
                let _ = h.await;
            }
            let r = r?;
            println!(
                "sent {} segments ({} bytes) as {} datagrams, {} bytes, in {:.1} s",
                r.segments,
                r.segment_bytes,
                r.datagrams,
                r.bytes,
                r.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}
