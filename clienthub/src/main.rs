//! `clienthub`: run a hub, or show a running hub's status.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hubcast_clienthub::store_worker::Ask;
use hubcast_clienthub::token::Token;
use hubcast_clienthub::{HubConfig, StatusBoard};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "clienthub", version, about = "hubcast client hub: verified multicast to a local store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (coloured only on a terminal) or as JSON objects.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: hubcast_daemon::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Join the channel and keep verified copies of what it sends.
    Run(Box<RunArgs>),
    /// Check a stopped hub's store: drop missing and damaged chunks from the
    /// index (the hub fetches them again from peers when it starts), move
    /// entries the hub did not write to quarantine/, and say what it did.
    Fsck {
        /// The store directory (the hub's --store).
        #[arg(long)]
        store: PathBuf,
    },
    /// Copy a file out of the running hub, by its name in the channel or
    /// its object id (as `clienthub status` lists them), through the hub's
    /// HTTP gateway; one the hub does not hold (evicted, not yet sent) is
    /// fetched first, from peers. Written whole or not at all.
    Get {
        /// The object's name in the channel (e.g. `sample/a film.mp4`) or its id.
        what: String,
        /// Where to write it. [default: the name's last part, in this folder]
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        hub: HubAddr,
    },
    /// Keep an object whatever --quota (fetching it if the hub does not hold it).
    Pin {
        /// The object's name in the channel or its id.
        what: String,
        #[command(flatten)]
        hub: HubAddr,
    },
    /// Let --quota evict a pinned object again.
    Unpin {
        /// The object's name in the channel or its id.
        what: String,
        #[command(flatten)]
        hub: HubAddr,
    },
    /// Show a running hub's status.
    Status {
        /// The hub's --http address: host:port, a host (port 8080), or a URL.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// Print the raw JSON.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw every --interval seconds until Ctrl-C: progress bars on a
        /// terminal, the plain status again elsewhere.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch. [default: 1]
        #[arg(long, default_value_t = 1.0, requires = "watch")]
        interval: f64,
    },
}

/// Where the running hub is, and its token.
#[derive(clap::Args)]
struct HubAddr {
    /// The hub's --http address: host:port, a host (port 8080), or a URL.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// The hub's --store: its API token (`api-token`, readable by the hub's
    /// user) is read from there; fetch, pin and unpin need it.
    #[arg(long, default_value = "hubcast-store")]
    store: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML file with settings (see docs/OPERATIONS.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The channel's fingerprint, or the path of its root.pub. Required,
    /// here or as `trust` in --config.
    #[arg(long, value_name = "FINGERPRINT|FILE")]
    trust: Option<String>,
    /// The channel's `rotations` file (from the newest root's folder, or the
    /// broadcaster's keys): start at the newest root it leads to from --trust.
    /// [default: follow the chain the channel sends]
    #[arg(long, value_name = "FILE")]
    trust_chain: Option<PathBuf>,
    /// Multicast group and port. [default: 239.255.0.1:5000]
    #[arg(long)]
    group: Option<SocketAddr>,
    /// Interface to join on: its IPv4 address for an IPv4 group, its name or
    /// index for an IPv6 group. [default: 127.0.0.1, this host only]
    #[arg(long)]
    iface: Option<String>,
    /// Accept only this sender (source-specific multicast). [default: any]
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Store directory. [default: hubcast-store, in the working directory]
    #[arg(long)]
    store: Option<PathBuf>,
    /// Export completed objects here, under their names. [default: none]
    #[arg(long)]
    export: Option<PathBuf>,
    /// Local HTTP listener for the status page, /api/status and /metrics,
    /// e.g. 127.0.0.1:8080. [default: none]
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Testing aid: drop this share of received datagrams at random (e.g.
    /// 0.05). [default: 0]
    #[arg(long)]
    simulate_loss: Option<f64>,
    /// Seed for --simulate-loss. [default: random]
    #[arg(long)]
    loss_seed: Option<u64>,
    /// Testing aid: drop received multicast beyond this rate, as a path
    /// this narrow would (e.g. 20Mbit). [default: none]
    #[arg(long)]
    simulate_narrow: Option<hubcast_daemon::units::Rate>,
    /// QUIC address for peer repair. [default: the --iface address, any port]
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Cap on what this hub serves to peers and feeds: 100Mbit (or Mbps),
    /// 12MB/s; docs/OPERATIONS.md lists every unit. [default: 100Mbit]
    #[arg(long)]
    upload_rate: Option<hubcast_daemon::units::Rate>,
    /// Do not repair from (or serve) peer hubs.
    #[arg(long)]
    no_peer_repair: bool,
    /// The broadcaster's origin service, NODEID@HOST:PORT as `broadcaster seed
    /// --tracker` prints it: the hub registers there, and NAKs go there when no
    /// peer can repair a chunk. [default: the one the channel's manifests name]
    #[arg(long)]
    tracker: Option<String>,
    /// Feed desert hubs over QUIC while this hub hears the multicast, and
    /// register with the tracker as a bridge.
    #[arg(long)]
    bridge: bool,
    /// Desert hubs a bridge feeds at once. [default: 8]
    #[arg(long)]
    bridge_fanout: Option<usize>,
    /// Seconds of the channel a bridge (or stripe parent) keeps for hubs
    /// that change bridge or parent to resume within. [default: 30]
    #[arg(long)]
    back_buffer_secs: Option<u64>,
    /// The back buffer's ceiling, in MiB. [default: 64]
    #[arg(long)]
    back_buffer_mib: Option<u64>,
    /// Chunks collected at once in memory, each up to its size (1 MiB by
    /// default) until it decodes. [default: 256]
    #[arg(long)]
    collect_chunks: Option<usize>,
    /// Do not join the multicast group; take the feed from a bridge.
    #[arg(long)]
    no_multicast: bool,
    /// Seconds without multicast before taking the feed from a bridge. [default: 4]
    #[arg(long)]
    desert_after: Option<u64>,
    /// A bridge to subscribe to, NODEID@HOST:PORT (repeatable); tried before
    /// the bridges the tracker lists.
    #[arg(long)]
    bridge_peer: Vec<String>,
    /// While fed by a bridge, send the feed out again as multicast on this
    /// GROUP:PORT from the --iface interface, so this LAN's hubs hear it.
    /// [default: none]
    #[arg(long)]
    remulticast: Option<SocketAddr>,
    /// Media seconds of each live channel kept for players. [default: 30]
    #[arg(long)]
    live_buffer_secs: Option<u64>,
    /// Stripe forest: 3-16 stripes. On a --bridge hub, it is the root; on a
    /// desert hub, it joins the forest at its first --bridge-peer and takes
    /// one stripe from each of its parents. [default: 0, no forest]
    #[arg(long)]
    stripes: Option<u8>,
    /// The most the store holds (e.g. 500GiB): past it the least recently
    /// used complete, unpinned objects are evicted. [default: what the store
    /// holds at start and 90% of its disk's free space]
    #[arg(long)]
    quota: Option<hubcast_daemon::units::Size>,
    /// What the hub takes from the carousel unasked: all (every pushed
    /// object), tagged (those whose catalog entry has a --tag), or on-demand
    /// (only what its user asks for). [default: all]
    #[arg(long, value_enum)]
    keep: Option<hubcast_clienthub::config::Keep>,
    /// With --keep tagged: a tag whose objects the hub takes (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// How fast the background scrub reads stored chunks to check their
    /// hashes (units as for rates, e.g. 8MiB/s). [default: 8MiB/s]
    #[arg(long)]
    scrub_rate: Option<hubcast_daemon::units::Rate>,
    /// Seconds between the starts of scrub passes over the whole store; the
    /// first pass runs at start. [default: 86400]
    #[arg(long)]
    scrub_every: Option<u64>,
}

impl RunArgs {
    fn into_config(self) -> anyhow::Result<HubConfig> {
        let mut c: HubConfig = hubcast_daemon::load_settings(self.config.as_deref())?;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        set!(trust, group, iface, store, simulate_loss, upload_rate);
        if self.no_peer_repair {
            c.peer_repair = false;
        }
        macro_rules! set_opt {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f; } )* };
        }
        set_opt!(
            trust_chain,
            source,
            export,
            http,
            loss_seed,
            simulate_narrow,
            peer_listen,
            tracker,
            remulticast,
            quota
        );
        set!(
            bridge_fanout,
            back_buffer_secs,
            back_buffer_mib,
            collect_chunks,
            live_buffer_secs,
            stripes,
            scrub_rate
        );
        if let Some(s) = self.scrub_every {
            c.scrub_every_secs = s;
        }
        if let Some(s) = self.desert_after {
            c.desert_after_secs = s;
        }
        if let Some(k) = self.keep {
            c.keep = k;
        }
        c.tags.extend(self.tags);
        c.bridge |= self.bridge;
        c.no_multicast |= self.no_multicast;
        c.bridge_peers.extend(self.bridge_peer);
        for b in &c.bridge_peers {
            b.parse::<hubcast_keys::NodeAddr>().map_err(|e| anyhow::anyhow!("--bridge-peer {e}"))?;
        }
        anyhow::ensure!(c.bridge_fanout > 0, "--bridge-fanout must be at least 1");
        anyhow::ensure!(c.collect_chunks >= 4, "--collect-chunks must be at least 4");
        anyhow::ensure!(
            c.stripes == 0 || (3..=hubcast_protocol::forest::MAX_STRIPES).contains(&c.stripes),
            "--stripes must be 0 (no forest) or 3 to 16: any stripes − 1 of them must carry a chunk, within the digest table's N_max"
        );
        anyhow::ensure!(
            c.stripes == 0 || c.bridge || !c.bridge_peers.is_empty(),
            "--stripes on a desert hub needs the forest's root: --bridge-peer NODEID@HOST:PORT of a --bridge hub with --stripes"
        );
        anyhow::ensure!(c.desert_after_secs > 0, "--desert-after must be at least 1 s");
        use hubcast_clienthub::config::Keep;
        anyhow::ensure!(
            c.keep != Keep::Tagged || !c.tags.is_empty(),
            "--keep tagged takes the objects whose catalog entry carries a --tag: give one or more, e.g. --tag news"
        );
        anyhow::ensure!(
            c.keep == Keep::Tagged || c.tags.is_empty(),
            "--tag chooses what --keep tagged takes: add --keep tagged"
        );
        anyhow::ensure!(
            c.peer_repair || (!c.no_multicast && !c.bridge && c.remulticast.is_none()),
            "--no-multicast, --bridge and --remulticast need the QUIC side: drop --no-peer-repair"
        );
        if let Some(t) = &c.tracker {
            t.parse::<hubcast_keys::NodeAddr>().map_err(|e| anyhow::anyhow!("--tracker {e}"))?;
        }
        anyhow::ensure!(
            !c.trust.is_empty(),
            "--trust is required: the channel's fingerprint or root.pub file"
        );
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
        Command::Run(args) => {
            let cfg = (*args).into_config()?;
            let cancel = hubcast_daemon::cancel_on_signal();
            hubcast_clienthub::run(cfg, StatusBoard::default(), cancel).await?;
        }
        Command::Fsck { store } => {
            let r = tokio::task::spawn_blocking(move || hubcast_clienthub::store::fsck(&store)).await??;
            let o = &r.open;
            println!(
                "checked {} chunks ({} bytes) of {} objects against their hashes",
                r.checked, r.bytes, o.manifests
            );
            println!("missing on disk, dropped: {}", o.missing.len());
            println!("damaged, dropped: {}", r.damaged.len());
            println!("unfinished writes removed: {}", o.orphans_removed);
            for (from, to) in &o.quarantined {
                println!("not the hub's, moved aside: {} -> {}", from.display(), to.display());
            }
            let lost = o.lost.len() + r.damaged.len();
            println!("chunks the hub will fetch again from peers at its next start: {lost}");
        }
        Command::Get { what, output, hub } => {
            let out = output.unwrap_or_else(|| hubcast_clienthub::get::default_output(&what));
            let got = tokio::task::spawn_blocking(move || {
                let http = hubcast_clienthub::status_client::resolve_target(&hub.http)?;
                // Without the token, what the hub holds is still served.
                let token = Token::read(&hub.store).ok();
                let bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
                anyhow::Ok(hubcast_clienthub::get::get(http, &what, &out, bar, token.as_ref())?)
            })
            .await??;
            println!("{} ({} bytes)", got.path.display(), got.bytes);
        }
        Command::Pin { what, hub } => ask(Ask::Pin, what, hub).await?,
        Command::Unpin { what, hub } => ask(Ask::Unpin, what, hub).await?,
        Command::Status { http, json, watch, interval } => {
            let http =
                tokio::task::spawn_blocking(move || hubcast_clienthub::status_client::resolve_target(&http))
                    .await??;
            if watch {
                anyhow::ensure!(interval >= 0.1 && interval.is_finite(), "--interval must be at least 0.1 s");
                let every = std::time::Duration::from_secs_f64(interval);
                tokio::task::spawn_blocking(move || hubcast_clienthub::watch::watch(http, every)).await?;
            }
            let body = tokio::task::spawn_blocking(move || {
                hubcast_clienthub::status_client::get(http, "/api/status")
            })
            .await??;
            if json {
                println!("{body}");
            } else {
                let v: serde_json::Value = serde_json::from_str(&body).context("status is not JSON")?;
                print!("{}", hubcast_clienthub::status_client::render(&v));
            }
        }
    }
    Ok(())
}

/// `clienthub pin/unpin`: the ask, with the token, to the running hub.
async fn ask(ask: Ask, what: String, hub: HubAddr) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let http = hubcast_clienthub::status_client::resolve_target(&hub.http)?;
        let token = Token::read(&hub.store)?;
        hubcast_clienthub::get::ask(http, ask, &what, &token)?;
        println!("{what}: {}", if ask == Ask::Pin { "pinned" } else { "unpinned" });
        anyhow::Ok(())
    })
    .await?
}
