//! `broadcaster seed` settings: TOML file (`--config`) with documented defaults,
//! each overridden by its command-line flag.

use hubcast_daemon::units::{deserialize_u32_size, Rate, RateSetting};
use hubcast_protocol::wire;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Settings of one seeding run. Every field has a default; see `Default`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    /// Key directory written by `broadcaster keygen`. Default `keys`.
    pub keys: PathBuf,
    /// Where the broadcaster keeps what it makes itself (the origin
    /// service's node.key). Default: the key directory. Give a writable
    /// folder when the keys are read-only (the systemd unit does).
    pub state_dir: Option<PathBuf>,
    /// Multicast group and port. Default 239.255.0.1:5000.
    pub group: SocketAddr,
    /// Interface: IPv4 address, or index/name for IPv6. Default 127.0.0.1 (this host only).
    pub iface: String,
    /// IPv4 TTL or IPv6 hop limit. Default 1: this link only.
    pub ttl: u32,
    /// Send rate, e.g. "200Mbit", "1Gbps", "25MB/s" (docs/OPERATIONS.md
    /// lists the units), or "auto": the hubs' feedback sets it between
    /// `rate_min` and `rate_max` (needs the origin service). Default: auto
    /// with the origin service (`tracker`), else 200Mbit
    /// ([`SeedConfig::rate_setting`]).
    pub rate: Option<RateSetting>,
    /// With `rate = "auto"`: never below. Default 10Mbit.
    pub rate_min: Rate,
    /// With `rate = "auto"`: never above, and what origin repair's share
    /// is taken of. Default 1Gbit.
    pub rate_max: Rate,
    /// Repair symbols per round as a share of K, at least (`--fec-min`).
    /// Default 0.1.
    pub fec_overhead: f64,
    /// With the origin service, hubs' loss reports raise the repair symbols
    /// up to this share of K (0.5 is all a chunk's digest table covers).
    /// Default 0.5.
    pub fec_max: f64,
    /// Carousel rounds; 0 means until stopped. Default 0.
    pub rounds: u32,
    /// Chunk size, bytes or with a unit ("1MiB"). Default 1 MiB.
    #[serde(deserialize_with = "deserialize_u32_size")]
    pub chunk_size: u32,
    /// Symbol size in bytes. Default 1280 (fits a 1400-byte MTU with headers).
    pub symbol_size: u16,
    /// A manifest is mixed in every this many datagrams. Default 256.
    pub manifest_every: u32,
    /// Manifests and tickets expire this long after they are signed. Default 86400 s.
    pub expiry_secs: u64,
    /// Run the origin service (repair NAKs; the tracker) on this QUIC address.
    /// Default: none.
    pub tracker: Option<SocketAddr>,
    /// The origin service's address as hubs reach it, named in every manifest.
    /// Default: the `tracker` address, an unspecified IP (0.0.0.0) replaced by
    /// the `iface` address.
    pub tracker_public: Option<SocketAddr>,
    /// Cap on the origin's multicast repair, e.g. "20Mbit". Default: none
    /// (the budget is `repair_share` of `rate`, all of it once the carousel
    /// is idle).
    pub repair_rate: Option<Rate>,
    /// The share of `rate` origin repair may take while the carousel sends;
    /// the carousel sends that much less. Default 0.5.
    pub repair_share: f64,
    /// With the origin service, keep answering this long after the last round.
    /// Default 30 s.
    pub linger_secs: u64,
    /// Local HTTP listener for `/api/status`. Default: none.
    pub http: Option<SocketAddr>,
    /// Testing aid: leave out this share of the carousel's symbol datagrams, as
    /// if the network lost them before any hub. Default 0.
    pub simulate_loss: f64,
    /// Files and folders to seed.
    pub paths: Vec<PathBuf>,
    /// Files and folders announced in the catalog but not sent on the
    /// carousel: the origin multicasts one when hubs ask for it (needs
    /// `tracker`).
    pub on_demand: Vec<PathBuf>,
    /// Scan `paths` and `on_demand` again this often, publishing what
    /// changed (a new catalog version; the carousel starts over the new
    /// objects). 0: only on SIGHUP. Default 300.
    pub rescan_secs: u64,
    /// The catalog's metadata for the seeded files (TOML, `[[item]]`s; see
    /// docs/OPERATIONS.md). Default: none (names, types and times only).
    pub catalog: Option<PathBuf>,
}

impl Default for SeedConfig {
    fn default() -> Self {
        SeedConfig {
            keys: PathBuf::from("keys"),
            state_dir: None,
            group: SocketAddr::from(([239, 255, 0, 1], 5000)),
            iface: "127.0.0.1".into(),
            ttl: 1,
            rate: None,
            rate_min: Rate::from_bits_per_sec(10_000_000),
            rate_max: Rate::from_bits_per_sec(1_000_000_000),
            fec_overhead: 0.1,
            fec_max: 0.5,
            rounds: 0,
            chunk_size: 1 << 20,
            symbol_size: wire::DEFAULT_SYMBOL_SIZE,
            manifest_every: 256,
            expiry_secs: 86_400,
            tracker: None,
            tracker_public: None,
            repair_rate: None,
            repair_share: 0.5,
            linger_secs: 30,
            http: None,
            simulate_loss: 0.0,
            paths: Vec::new(),
            on_demand: Vec::new(),
            rescan_secs: 300,
            catalog: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--fec-overhead {0}: must be between 0 and 1 (0.1 sends 10% repair symbols)")]
    BadOverhead(f64),
    #[error("--fec-max {max}: must be from --fec-overhead ({min}) to 1 (0.5 is all a chunk's digest table covers)")]
    BadFecMax { min: f64, max: f64 },
    #[error("--symbol-size {0}: must be a multiple of 8 from {min} to {max}", min = wire::MIN_SYMBOL_SIZE, max = wire::MAX_SYMBOL_SIZE)]
    BadSymbolSize(u16),
    #[error("--chunk-size {0}: must be at least one symbol and at most {max} symbols", max = wire::MAX_SOURCE_SYMBOLS)]
    BadChunkSize(u32),
    #[error("nothing to seed: give one or more files or folders")]
    NoPaths,
    #[error("--on-demand: hubs ask the origin service for what no peer holds; give --tracker ADDR (e.g. 0.0.0.0:7100)")]
    OnDemandWithoutTracker,
    #[error("--rate-min {min} is above --rate-max {max}")]
    BadRateBounds { min: Rate, max: Rate },
    #[error("--rate auto: hubs send their verdicts to the origin service; give --tracker ADDR (e.g. 0.0.0.0:7100), or a fixed --rate")]
    AutoWithoutTracker,
    #[error("--repair-share {0}: must be from 0 to 1 (0.5: repair may take half the channel while the carousel sends)")]
    BadRepairShare(f64),
    #[error("--simulate-loss {0}: must be from 0 up to (not including) 1")]
    BadLoss(f64),
    #[error("--input `{0}`: give a file, `-` for stdin, or udp://ADDR:PORT")]
    BadInput(String),
    #[error("--name `{0}`: a channel name is 1 to 64 ASCII letters, digits, '-', '_' or '.', not starting with '.'")]
    BadChannelName(String),
    #[error("duration `{0}`: give a number with a unit, ms or s (e.g. 1s, 500ms)")]
    BadDuration(String),
    #[error("--segment `{0}`: must be from 100ms to 30s")]
    BadSegment(String),
}

/// Parse a duration such as `1s`, `2.5s` or `500ms`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, ConfigError> {
    let t = s.trim().to_ascii_lowercase();
    let (number, scale) = match t.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (t.strip_suffix('s').ok_or_else(|| ConfigError::BadDuration(s.into()))?, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 86_400.0 => {
            Ok(std::time::Duration::from_secs_f64(v * scale))
        }
        _ => Err(ConfigError::BadDuration(s.into())),
    }
}

impl SeedConfig {
    /// Check every value; returns the rate in bytes per second.
    pub fn validate(&self) -> Result<u64, ConfigError> {
        if !(0.0..=1.0).contains(&self.fec_overhead) {
            return Err(ConfigError::BadOverhead(self.fec_overhead));
        }
        if !(0.0..=1.0).contains(&self.repair_share) {
            return Err(ConfigError::BadRepairShare(self.repair_share));
        }
        if !(self.fec_overhead..=1.0).contains(&self.fec_max) {
            return Err(ConfigError::BadFecMax { min: self.fec_overhead, max: self.fec_max });
        }
        if !wire::valid_symbol_size(self.symbol_size) {
            return Err(ConfigError::BadSymbolSize(self.symbol_size));
        }
        if self.chunk_size < u32::from(self.symbol_size)
            || wire::source_symbols(self.chunk_size, self.symbol_size) > wire::MAX_SOURCE_SYMBOLS
        {
            return Err(ConfigError::BadChunkSize(self.chunk_size));
        }
        if self.paths.is_empty() && self.on_demand.is_empty() {
            return Err(ConfigError::NoPaths);
        }
        if !self.on_demand.is_empty() && self.tracker.is_none() {
            return Err(ConfigError::OnDemandWithoutTracker);
        }
        if !(0.0..1.0).contains(&self.simulate_loss) {
            return Err(ConfigError::BadLoss(self.simulate_loss));
        }
        if self.rate == Some(RateSetting::Auto) && self.tracker.is_none() {
            return Err(ConfigError::AutoWithoutTracker);
        }
        if self.rate_min.bits_per_sec() > self.rate_max.bits_per_sec() {
            return Err(ConfigError::BadRateBounds { min: self.rate_min, max: self.rate_max });
        }
        Ok(match self.rate_setting() {
            RateSetting::Fixed(r) => r.bytes_per_sec(),
            RateSetting::Auto => self.rate_max.bytes_per_sec(),
        })
    }

    /// The rate given, else the default: `auto` where the hubs can be heard
    /// (the origin service is on), [`FIXED_DEFAULT`] where they cannot.
    pub fn rate_setting(&self) -> RateSetting {
        match (self.rate, self.tracker) {
            (Some(r), _) => r,
            (None, Some(_)) => RateSetting::Auto,
            (None, None) => RateSetting::Fixed(FIXED_DEFAULT),
        }
    }

    /// With `--rate auto`: the rate control, starting at [`AUTO_START`]
    /// within the bounds.
    pub fn rate_control(&self) -> Option<hubcast_protocol::rate::RateControl> {
        (self.rate_setting() == RateSetting::Auto).then(|| {
            let (min, max) = (self.rate_min.bytes_per_sec(), self.rate_max.bytes_per_sec());
            hubcast_protocol::rate::RateControl::new(AUTO_START.bytes_per_sec(), min, max)
        })
    }
}

/// Where `--rate auto` starts (then doubles each round while every hub
/// keeps up): the fixed rate's default, what a channel sent at before. From
/// 50 Mbit/s, slow start took 6 s to pass 250 Mbit/s, and a 256 MiB file in
/// the lab took 12.47 s against UFTP's 8.11 s.
pub const AUTO_START: Rate = Rate::from_bits_per_sec(200_000_000);

/// The rate without the origin service and without `--rate`: no hub can
/// say it keeps up, so the channel sends at what a home's wired LAN takes.
pub const FIXED_DEFAULT: Rate = Rate::from_bits_per_sec(200_000_000);

impl SeedConfig {}

impl SeedConfig {
    /// Where node.key is kept.
    pub fn state_dir(&self) -> &std::path::Path {
        self.state_dir.as_deref().unwrap_or(&self.keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_and_milliseconds() {
        use std::time::Duration;
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["1", "s", "-1s", "1h", "NaNs", "1e9s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_overrides_defaults_and_unknown_keys_are_refused() {
        let c: SeedConfig =
            toml::from_str("rate = \"1gbit\"\nrounds = 3\nchunk_size = \"512KiB\"\n").unwrap();
        assert_eq!(c.rounds, 3);
        assert_eq!(c.rate, Some(RateSetting::Fixed(Rate::from_bits_per_sec(1_000_000_000))));
        assert_eq!(c.chunk_size, 512 << 10);
        assert!(toml::from_str::<SeedConfig>("rate = \"200Mb\"").is_err(), "ambiguous");
        assert!(toml::from_str::<SeedConfig>("rat = \"1gbit\"").is_err());
    }

    #[test]
    fn the_rate_is_auto_by_default_where_the_origin_service_hears_the_hubs() {
        let mut c: SeedConfig = toml::from_str("paths = [\"x\"]\n").unwrap();
        assert_eq!(c.rate_setting(), RateSetting::Fixed(FIXED_DEFAULT));
        assert_eq!(c.validate(), Ok(FIXED_DEFAULT.bytes_per_sec()));
        assert!(c.rate_control().is_none());
        c.tracker = Some(SocketAddr::from(([127, 0, 0, 1], 7100)));
        assert_eq!(c.rate_setting(), RateSetting::Auto);
        assert_eq!(c.rate_control().map(|r| r.rate()), Some(AUTO_START.bytes_per_sec()));
        let fixed: SeedConfig = toml::from_str("rate = \"50mbit\"\ntracker = \"127.0.0.1:7100\"\n").unwrap();
        assert_eq!(fixed.rate_setting(), RateSetting::Fixed(Rate::from_bits_per_sec(50_000_000)));
    }

    #[test]
    fn rate_auto_needs_the_origin_service_and_sane_bounds() {
        let mut c: SeedConfig =
            toml::from_str("rate = \"auto\"\nrate_min = \"20Mbit\"\nrate_max = \"2Gbit\"\npaths = [\"x\"]\n")
                .unwrap();
        assert_eq!(c.rate, Some(RateSetting::Auto));
        assert_eq!(c.validate(), Err(ConfigError::AutoWithoutTracker));
        assert!(ConfigError::AutoWithoutTracker.to_string().contains("--tracker"));
        c.tracker = Some(SocketAddr::from(([127, 0, 0, 1], 7100)));
        assert_eq!(c.validate(), Ok(250_000_000), "origin repair's share is of the highest");
        let control = c.rate_control().expect("a rate control");
        assert_eq!(control.rate(), AUTO_START.bytes_per_sec());
        c.rate_min = Rate::from_bits_per_sec(4_000_000_000);
        assert!(matches!(c.validate(), Err(ConfigError::BadRateBounds { .. })));
        c.rate = Some(RateSetting::Fixed(Rate::from_bits_per_sec(8_000)));
        c.rate_min = Rate::from_bits_per_sec(1);
        assert!(c.rate_control().is_none());
    }

    #[test]
    fn the_example_config_in_deploy_parses() {
        let c: SeedConfig = toml::from_str(include_str!("../../deploy/config/seed.toml")).unwrap();
        assert_eq!(c.ttl, 16);
        assert_eq!(c.validate(), Ok(25_000_000));
    }
}
