//! `clienthub run` settings: TOML file (`--config`) with documented defaults,
//! each overridden by its command-line flag.

use crate::bridge::BackBuffer;
use hubcast_daemon::units::Rate;
use hubcast_transport::quic::AcceptLimits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a hub takes from the carousel without being asked (`--keep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Keep {
    /// Every pushed object.
    #[default]
    All,
    /// The pushed objects whose catalog entry carries one of `tags`.
    Tagged,
    /// None: only what the user asks for.
    OnDemand,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// The channel's trust fingerprint, or the path of its root.pub. Required.
    pub trust: String,
    /// The channel's chain of root rotations (the `rotations` file
    /// `broadcaster rotate-root` writes): the hub starts at the newest root
    /// it leads to, and no statement of a retired root can lead it
    /// elsewhere. Default: none (the hub follows the chain the channel sends).
    pub trust_chain: Option<PathBuf>,
    /// Multicast group and port. Default 239.255.0.1:5000.
    pub group: SocketAddr,
    /// Interface: IPv4 address, or index/name for IPv6. Default 127.0.0.1.
    pub iface: String,
    /// Source-specific multicast: accept only this sender. Default: any.
    pub source: Option<std::net::IpAddr>,
    /// Store directory. Default `hubcast-store`.
    pub store: PathBuf,
    /// Export completed objects here under their names. Default: none.
    pub export: Option<PathBuf>,
    /// Local HTTP listener for status, metrics and objects. Default: none.
    pub http: Option<SocketAddr>,
    /// Testing aid: drop this share of received datagrams at random. Default 0.
    pub simulate_loss: f64,
    /// Seed for --simulate-loss, for a reproducible run. Default: random.
    pub loss_seed: Option<u64>,
    /// Testing aid: drop received multicast beyond this rate, as a path
    /// this narrow would (a second's burst passes). Default: none.
    pub simulate_narrow: Option<Rate>,
    /// Warn when nothing arrives for this long. Default 10 s.
    pub silence_warning_secs: u64,
    /// Repair from peer hubs over QUIC. Default true.
    pub peer_repair: bool,
    /// QUIC address peers connect to. Default: the --iface address, any port.
    pub peer_listen: Option<SocketAddr>,
    /// Cap on serving peers and feeds, e.g. "100Mbit" (docs/OPERATIONS.md
    /// lists the units). Default 100Mbit.
    pub upload_rate: Rate,
    /// The broadcaster's origin service, NODEID@HOST:PORT as `broadcaster seed
    /// --tracker` prints it: where the hub registers, and NAKs go when no peer
    /// can repair. Default: the tracker the channel's signed manifests name.
    pub tracker: Option<String>,
    /// Serve the channel's feed to desert hubs while this hub hears the
    /// multicast, and register with the tracker as a bridge. Default false.
    pub bridge: bool,
    /// Desert hubs a bridge feeds at once; more are refused as busy. Default 8.
    pub bridge_fanout: usize,
    /// A bridge's (or a stripe parent's) back buffer: the chunks it
    /// completed in the last `back_buffer_secs`. A hub that changes bridge
    /// or parent resumes within it. Default 30.
    pub back_buffer_secs: u64,
    /// The back buffer's ceiling, in MiB (memory and store bytes it keeps
    /// serving). Default 64.
    pub back_buffer_mib: u64,
    /// Chunks collected at once, in memory: each holds up to its size (1 MiB
    /// by default) of verified symbols until it decodes. At heavy loss no
    /// chunk decodes in one round, and one dropped for room is asked for
    /// whole. Default 256.
    pub collect_chunks: usize,
    /// Do not join the multicast group: take the feed from a bridge. Default false.
    pub no_multicast: bool,
    /// With no multicast heard for this long, take the feed from a bridge
    /// (until the multicast returns). Default 4 s: with the check every
    /// quarter second and the subscription, the hub is on a bridge within 5 s.
    pub desert_after_secs: u64,
    /// Bridges to subscribe to, NODEID@HOST:PORT, before those the tracker lists.
    pub bridge_peers: Vec<String>,
    /// While fed by a bridge, send the feed out again as multicast on this
    /// group and port, from the --iface interface. Default: none.
    pub remulticast: Option<SocketAddr>,
    /// Media seconds of each live channel kept behind its newest segment:
    /// what /live/NAME/index.m3u8 lists and a late player can rewind to.
    /// Default 30.
    pub live_buffer_secs: u64,
    /// Stripes of the stripe forest (3..=16), 0 for none. A `--bridge` hub
    /// with stripes is the root of every tree; a desert hub with stripes
    /// joins the forest at its first `--bridge-peer` instead of taking a
    /// bridge's whole feed. Default 0.
    pub stripes: u8,
    /// The most the store holds of objects (e.g. "500GiB"): past it the
    /// least recently used complete objects are evicted (their manifests
    /// stay: the channel still offers them). Default: what the store holds
    /// at start and 90% of its disk's free space.
    pub quota: Option<hubcast_daemon::units::Size>,
    /// What the hub takes unasked: `all` pushed objects, the `tagged` ones
    /// (`tags`), or only what its user asks for (`on-demand`). Default all.
    pub keep: Keep,
    /// With `keep = "tagged"`: the tags whose objects the hub takes.
    pub tags: Vec<String>,
    /// The background scrub reads stored chunks at most this fast to check
    /// their hashes. Default "8MiB/s".
    pub scrub_rate: Rate,
    /// A scrub pass over the whole store starts at most this often, the first
    /// at start. Default 86400 (daily).
    pub scrub_every_secs: u64,
    /// QUIC handshakes in progress at once (peers, bridges, forest); past it
    /// unvalidated addresses get a Retry and validated ones are refused.
    /// Default 256.
    pub quic_max_handshakes: usize,
    /// QUIC handshakes in progress from one IP address. Default 16.
    pub quic_max_handshakes_per_ip: usize,
    /// QUIC connections established at once. Default 1024.
    pub quic_max_connections: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            trust: String::new(),
            trust_chain: None,
            group: SocketAddr::from(([239, 255, 0, 1], 5000)),
            iface: "127.0.0.1".into(),
            source: None,
            store: PathBuf::from("hubcast-store"),
            export: None,
            http: None,
            simulate_loss: 0.0,
            loss_seed: None,
            simulate_narrow: None,
            silence_warning_secs: 10,
            peer_repair: true,
            peer_listen: None,
            upload_rate: Rate::from_bits_per_sec(100_000_000),
            tracker: None,
            bridge: false,
            bridge_fanout: 8,
            back_buffer_secs: 30,
            back_buffer_mib: 64,
            collect_chunks: hubcast_protocol::receiver::ReceiverConfig::default().max_active_chunks,
            no_multicast: false,
            desert_after_secs: 4,
            bridge_peers: Vec::new(),
            remulticast: None,
            live_buffer_secs: 30,
            stripes: 0,
            quota: None,
            keep: Keep::All,
            tags: Vec::new(),
            scrub_rate: Rate::from_bits_per_sec(8 * 8 * (1 << 20)),
            scrub_every_secs: 86_400,
            quic_max_handshakes: AcceptLimits::default().max_handshakes,
            quic_max_handshakes_per_ip: AcceptLimits::default().max_handshakes_per_ip,
            quic_max_connections: AcceptLimits::default().max_connections,
        }
    }
}

impl HubConfig {
    /// The QUIC accept bounds these settings give.
    pub fn quic_limits(&self) -> AcceptLimits {
        AcceptLimits {
            max_handshakes: self.quic_max_handshakes.max(1),
            max_handshakes_per_ip: self.quic_max_handshakes_per_ip.max(1),
            max_connections: self.quic_max_connections.max(1),
            ..AcceptLimits::default()
        }
    }

    pub fn back_buffer(&self) -> BackBuffer {
        BackBuffer {
            secs: Duration::from_secs(self.back_buffer_secs),
            bytes: self.back_buffer_mib.saturating_mul(1 << 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_in_deploy_parses() {
        let c: HubConfig = toml::from_str(include_str!("../../deploy/config/hub.toml")).unwrap();
        assert_eq!(c.http, Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
        assert_eq!(c.simulate_loss, 0.0);
    }
}
