//! `broadcaster live`: a live MPEG-TS stream, cut into segments
//! ([`crate::segment`]), each sent once as an object of its own.
//!
//! An ingest thread reads the input (a file played in real time by its PCR
//! clock, stdin, or `udp://ADDR:PORT`), cuts segments, and codes and signs
//! each: its manifest carries the channel name, the segment's sequence number,
//! its duration, and the playout deadline (`--deadline` after the cut). The
//! async side sends each segment's datagrams at `--rate`, with the manifests
//! of the last `--window` segments mixed in (a hub that joins learns the recent
//! stream, and its repair window). The origin service (`--tracker`) answers
//! NAKs for segments in the window whose deadline has not passed.

use crate::config::ConfigError;
use crate::origin::{self, Catalog};
use crate::seed::{public_tracker, Out, SeedError};
use crate::segment::{Segment, Segmenter, PCR_HZ};
use crate::status::StatusBoard;
use crate::unix_ms;
use hubcast_daemon::units::{deserialize_u32_size, Rate};
use hubcast_keys::{NodeAddr, SignerKeys};
use hubcast_protocol::sender::{ObjectPlan, Pacer, PreparedChunk, Sender};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire::{self, LiveSegment, Manifest};
use hubcast_protocol::ObjectId;
use hubcast_transport::{Interface, MulticastConfig};
use serde::Deserialize;
use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Settings of a live run. Every field has a default; see `Default`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// Key directory written by `broadcaster keygen`. Default `keys`.
    pub keys: PathBuf,
    /// Where the broadcaster keeps what it makes itself (the origin
    /// service's node.key). Default: the key directory. Give a writable
    /// folder when the keys are read-only (the systemd unit does).
    pub state_dir: Option<PathBuf>,
    /// Multicast group and port. Default 239.255.0.1:5000.
    pub group: SocketAddr,
    /// Interface: IPv4 address, or index/name for IPv6. Default 127.0.0.1.
    pub iface: String,
    /// IPv4 TTL or IPv6 hop limit. Default 1.
    pub ttl: u32,
    /// MPEG-TS source: a file (played in real time by its clock), `-` for
    /// stdin, or `udp://ADDR:PORT` (a multicast ADDR is joined). Default `-`.
    pub input: String,
    /// The channel's name: hubs serve it at /live/NAME/. Default `live`.
    pub name: String,
    /// Target segment duration; segments end at the first keyframe after it.
    /// Default 1s.
    pub segment: String,
    /// Playout deadline: how long after a segment is cut hubs have to get it.
    /// Hubs stop repairing it after that. Default 3s.
    pub deadline: String,
    /// Segments announced and repairable at once. Default 10.
    pub window: u32,
    /// Play a file input again from its start at its end. Default false.
    #[serde(rename = "loop")]
    pub loop_input: bool,
    /// Send rate, e.g. "50Mbit": how fast one segment goes out. Default 100Mbit.
    pub rate: Rate,
    /// Repair symbols sent with each segment, as a share of K. Default 0.1.
    pub fec_overhead: f64,
    /// Chunk size, bytes or with a unit ("1MiB"). Default 1 MiB.
    #[serde(deserialize_with = "deserialize_u32_size")]
    pub chunk_size: u32,
    /// Symbol size in bytes. Default 1280.
    pub symbol_size: u16,
    /// A manifest of the window is mixed in every this many datagrams. Default 16.
    pub manifest_every: u32,
    /// Run the origin service (repair NAKs; the tracker) on this QUIC address.
    pub tracker: Option<SocketAddr>,
    /// The origin service's address as hubs reach it, named in every manifest.
    pub tracker_public: Option<SocketAddr>,
    /// Cap on the origin's multicast repair. Default 20Mbit.
    pub repair_rate: Rate,
    /// Local HTTP listener for `/api/status`. Default: none.
    pub http: Option<SocketAddr>,
    /// Testing aid: leave out this share of the symbol datagrams. Default 0.
    pub simulate_loss: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            keys: PathBuf::from("keys"),
            state_dir: None,
            group: SocketAddr::from(([239, 255, 0, 1], 5000)),
            iface: "127.0.0.1".into(),
            ttl: 1,
            input: "-".into(),
            name: "live".into(),
            segment: "1s".into(),
            deadline: "3s".into(),
            window: 10,
            loop_input: false,
            rate: Rate::from_bits_per_sec(100_000_000),
            fec_overhead: 0.1,
            chunk_size: 1 << 20,
            symbol_size: wire::DEFAULT_SYMBOL_SIZE,
            manifest_every: 16,
            tracker: None,
            tracker_public: None,
            repair_rate: Rate::from_bits_per_sec(20_000_000),
            http: None,
            simulate_loss: 0.0,
        }
    }
}

/// Where the stream comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
    Udp(SocketAddr),
}

impl std::str::FromStr for Input {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Input, ConfigError> {
        match s {
            "-" => Ok(Input::Stdin),
            _ => match s.strip_prefix("udp://") {
                Some(addr) => addr.parse().map(Input::Udp).map_err(|_| ConfigError::BadInput(s.into())),
                None if s.is_empty() => Err(ConfigError::BadInput(s.into())),
                None => Ok(Input::File(s.into())),
            },
        }
    }
}

/// Settings checked and parsed.
struct Checked {
    rate: u64,
    repair_rate: u64,
    segment: Duration,
    deadline: Duration,
    input: Input,
}

impl LiveConfig {
    fn check(&self) -> Result<Checked, ConfigError> {
        if !wire::valid_channel_name(&self.name) {
            return Err(ConfigError::BadChannelName(self.name.clone()));
        }
        if !(0.0..=1.0).contains(&self.fec_overhead) {
            return Err(ConfigError::BadOverhead(self.fec_overhead));
        }
        if !wire::valid_symbol_size(self.symbol_size) {
            return Err(ConfigError::BadSymbolSize(self.symbol_size));
        }
        if self.chunk_size < u32::from(self.symbol_size)
            || wire::source_symbols(self.chunk_size, self.symbol_size) > wire::MAX_SOURCE_SYMBOLS
        {
            return Err(ConfigError::BadChunkSize(self.chunk_size));
        }
        if !(0.0..1.0).contains(&self.simulate_loss) {
            return Err(ConfigError::BadLoss(self.simulate_loss));
        }
        let segment = crate::config::parse_duration(&self.segment)?;
        let deadline = crate::config::parse_duration(&self.deadline)?;
        if segment < Duration::from_millis(100) || segment > Duration::from_secs(30) {
            return Err(ConfigError::BadSegment(self.segment.clone()));
        }
        Ok(Checked {
            rate: self.rate.bytes_per_sec(),
            repair_rate: self.repair_rate.bytes_per_sec(),
            segment,
            deadline,
            input: self.input.parse()?,
        })
    }
}

/// What a live run sent.
#[derive(Clone, Debug, Default)]
pub struct LiveReport {
    pub segments: u64,
    pub segment_bytes: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

enum Batch {
    /// A segment's datagrams, and the window's manifests from now on.
    Segment {
        datagrams: Vec<Vec<u8>>,
        window: Vec<Vec<u8>>,
        bytes: u64,
    },
    Failed(SeedError),
}

/// Segments coded ahead of the sender.
const SEGMENTS_AHEAD: usize = 4;
/// Read size from the input.
const READ_SIZE: usize = 64 << 10;
/// A segment is cut at this size whatever its clock says (bounds memory).
const MAX_SEGMENT_BYTES: usize = 32 << 20;
const QUIET_WARN_EVERY: Duration = Duration::from_secs(10);

/// Run a live channel until the input ends or `cancel`.
pub async fn live(
    cfg: &LiveConfig,
    keys: SignerKeys,
    status: StatusBoard,
    cancel: CancellationToken,
) -> Result<LiveReport, SeedError> {
    let checked = cfg.check()?;
    crate::renewal::check_valid_now(&keys.cert, crate::unix_now())?;
    let mut mc = MulticastConfig::new(cfg.group);
    mc.interface = cfg.iface.parse::<Interface>()?;
    mc.ttl = cfg.ttl;
    let socket = Arc::new(hubcast_transport::multicast::sender(&mc)?);
    let signer = Arc::new(crate::renewal::signer(&cfg.keys, keys)?);
    let fingerprint = signer.channel();
    status.update(|s| {
        s.fingerprint = fingerprint.to_string();
        s.group = cfg.group.to_string();
    });
    let catalog = Arc::new(Catalog::new(&[], &[], 0));
    let service_stop = cancel.child_token();
    // Each segment is signed as it is cut: a renewal applies from the next.
    tokio::spawn(crate::renewal::watch(
        cfg.keys.clone(),
        signer.clone(),
        status.clone(),
        service_stop.clone(),
    ));
    let mut tracker = None;
    let service = match cfg.tracker {
        Some(addr) => {
            let (endpoint, bound) = origin::bind(addr, cfg.state_dir())?;
            let at = public_tracker(bound, cfg.tracker_public, &mc.interface)?;
            info!(tracker = %at, "origin service named in every manifest");
            status.update(|s| s.origin_service = Some(at.to_string()));
            tracker = Some(at);
            let service = origin::Service {
                endpoint,
                catalog: catalog.clone(),
                signer: signer.clone(),
                socket: socket.clone(),
                control_group: SocketAddr::new(cfg.group.ip(), cfg.group.port().wrapping_add(1)),
                budget: origin::RepairBudget::on_top(checked.repair_rate),
                feedback: None,
                status: status.clone(),
            };
            Some(tokio::spawn(origin::run(service, service_stop.clone())))
        }
        None => None,
    };
    info!(channel = %cfg.name, input = %cfg.input, group = %cfg.group, %fingerprint,
        segment_ms = checked.segment.as_millis() as u64, deadline_ms = checked.deadline.as_millis() as u64, "live");

    let burst = (checked.rate as usize / 500).max(64 << 10);
    let mut sender = Sender::new(Vec::new(), cfg.manifest_every, Pacer::new(checked.rate, burst));
    let (tx, mut rx) = mpsc::channel::<Batch>(SEGMENTS_AHEAD);
    let ingest = {
        let job = Ingest {
            cfg: cfg.clone(),
            input: checked.input.clone(),
            segment: checked.segment,
            deadline: checked.deadline,
            signer: signer.clone(),
            catalog,
            tracker,
            status: status.clone(),
        };
        let stop = cancel.clone();
        std::thread::Builder::new()
            .name("live-ingest".into())
            .spawn(move || job.run(&tx, &stop))
            .map_err(|source| SeedError::Read { path: "ingest thread".into(), source })?
    };
    let mut out = Out::new(socket, cfg.group, cfg.simulate_loss)?;
    let started = Instant::now();
    let mut report = LiveReport::default();
    let mut failure = None;
    loop {
        out.send_ready(&mut sender).await?;
        out.publish(&status, &sender, false);
        if let Some(at) = sender.poll_timeout().filter(|_| sender.queued() > 0) {
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => continue,
                _ = cancel.cancelled() => break,
            }
        }
        tokio::select! {
            batch = rx.recv() => match batch {
                Some(Batch::Segment { datagrams, window, bytes }) => {
                    sender.handle_datagrams(datagrams);
                    sender.set_manifests(window);
                    report.segments += 1;
                    report.segment_bytes += bytes;
                }
                Some(Batch::Failed(e)) => { failure = Some(e); break; }
                None => break,
            },
            _ = cancel.cancelled() => break,
        }
    }
    out.drain(&mut sender, &cancel).await?;
    out.publish(&status, &sender, failure.is_none());
    let stopped = cancel.is_cancelled();
    drop(rx);
    cancel.cancel();
    service_stop.cancel();
    if let Some(service) = service {
        let _ = service.await;
    }
    // Not joined when stopped: it may sit in a read of stdin, and exits at
    // its next read.
    if !stopped {
        let _ = ingest.join();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let s = sender.stats();
    (report.datagrams, report.bytes, report.elapsed) = (s.datagrams, s.bytes, started.elapsed());
    Ok(report)
}

/// The ingest thread's work: read, cut, code, sign, hand over.
struct Ingest {
    cfg: LiveConfig,
    input: Input,
    segment: Duration,
    deadline: Duration,
    signer: Arc<Signer>,
    catalog: Arc<Catalog>,
    tracker: Option<NodeAddr>,
    status: StatusBoard,
}

/// A segment sent and still in the window.
struct Sent {
    id: ObjectId,
    manifest: Vec<u8>,
}

impl Ingest {
    fn run(self, tx: &mpsc::Sender<Batch>, stop: &CancellationToken) {
        if let Err(e) = self.stream(tx, stop) {
            let _ = tx.blocking_send(Batch::Failed(e));
        }
    }

    fn stream(&self, tx: &mpsc::Sender<Batch>, stop: &CancellationToken) -> Result<(), SeedError> {
        let mut reader = open(&self.input)?;
        let mut segmenter = Segmenter::new(self.segment, MAX_SEGMENT_BYTES);
        // A restarted broadcaster goes on from a higher sequence number
        // (tenths of a second since the epoch): hubs refuse a sequence that
        // runs backwards.
        let mut seq = unix_ms() / 100;
        let mut window = VecDeque::new();
        let mut discontinuity = true;
        // The media clock of a file input: each segment is released when a
        // live encoder would have finished it.
        let pace = matches!(self.input, Input::File(_));
        let started = Instant::now();
        let mut media = Duration::ZERO;
        let mut buf = vec![0u8; READ_SIZE];
        let mut last_quiet_warning = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                    ) =>
                {
                    if last_quiet_warning.is_none_or(|t: Instant| t.elapsed() >= QUIET_WARN_EVERY) {
                        warn!(input = %self.cfg.input, "no input for a second: is the source sending?");
                        last_quiet_warning = Some(Instant::now());
                    }
                    continue;
                }
                Err(source) => return Err(SeedError::Read { path: self.cfg.input.clone().into(), source }),
            };
            let segments = if n == 0 {
                std::mem::replace(&mut segmenter, Segmenter::new(self.segment, MAX_SEGMENT_BYTES)).finish()
            } else {
                segmenter.push(&buf[..n])
            };
            for s in segments {
                let duration = match s.duration_90khz {
                    0 => self.segment,
                    d => Duration::from_micros(d * 1_000_000 / PCR_HZ),
                };
                media += duration;
                if pace {
                    let due = started + media;
                    while Instant::now() < due && !stop.is_cancelled() {
                        std::thread::sleep((due - Instant::now()).min(Duration::from_millis(100)));
                    }
                }
                let batch = self.emit(&s, seq, duration, discontinuity, &mut window);
                discontinuity = false;
                seq += 1;
                if tx.blocking_send(batch).is_err() {
                    return Ok(());
                }
            }
            if n == 0 {
                if !(self.cfg.loop_input && pace) {
                    info!("input ended");
                    return Ok(());
                }
                reader = open(&self.input)?;
                discontinuity = true;
            }
        }
    }

    /// Code and sign one segment; update the window and the origin's catalog.
    fn emit(
        &self,
        s: &Segment,
        seq: u64,
        duration: Duration,
        discontinuity: bool,
        window: &mut VecDeque<Sent>,
    ) -> Batch {
        let cut_ms = unix_ms();
        let deadline_ms = cut_ms + self.deadline.as_millis() as u64;
        let id = ObjectId::of(&s.bytes);
        let mut plan = ObjectPlan::new(
            self.cfg.name.clone(),
            id,
            s.bytes.len() as u64,
            self.cfg.chunk_size,
            self.cfg.symbol_size,
            seq,
            deadline_ms.div_ceil(1000) + 1,
        );
        plan.manifest.tracker = self.tracker;
        plan.manifest.live = Some(LiveSegment {
            seq,
            ingest_ms: cut_ms,
            deadline_ms,
            duration_us: (duration.as_micros() as u32).clamp(1, wire::MAX_SEGMENT_US),
            discontinuity,
        });
        let tag = self.signer.channel_tag();
        // The root's statements (the revocation list) with every segment.
        let mut datagrams = self.signer.statements().to_vec();
        datagrams.push(self.signer.manifest_datagram(&plan.manifest));
        for index in 0..plan.chunk_count() {
            let r = plan.chunk_range(index);
            let chunk = &s.bytes[r.start as usize..r.end as usize];
            let prepared = PreparedChunk::prepare(&self.signer, &plan.manifest, index, chunk);
            datagrams.extend(prepared.round_datagrams(tag, self.cfg.fec_overhead, 0));
        }
        let end = self.signer.manifest_datagram(&Manifest { round_end: true, ..plan.manifest.clone() });
        datagrams.push(end.clone());
        self.catalog.add_segment(plan, Arc::new(s.bytes.clone()));
        window.push_back(Sent { id, manifest: end });
        while window.len() > self.cfg.window.max(1) as usize {
            // A looped input repeats a segment's bytes, so its id: retired
            // only when no later segment in the window has it.
            if let Some(old) = window.pop_front().filter(|old| window.iter().all(|w| w.id != old.id)) {
                self.catalog.retire(&old.id);
            }
        }
        self.status.update(|st| {
            st.objects += 1;
            st.object_bytes += s.bytes.len() as u64;
        });
        Batch::Segment {
            datagrams,
            window: window.iter().map(|w| w.manifest.clone()).collect(),
            bytes: s.bytes.len() as u64,
        }
    }
}

/// Open the input for reading.
fn open(input: &Input) -> Result<Box<dyn Read + Send>, SeedError> {
    let failed = |path: String| move |source| SeedError::Read { path: path.into(), source };
    Ok(match input {
        Input::File(path) => Box::new(std::fs::File::open(path).map_err(failed(path.display().to_string()))?),
        Input::Stdin => Box::new(std::io::stdin()),
        Input::Udp(addr) => Box::new(UdpInput::bind(*addr).map_err(failed(format!("udp://{addr}")))?),
    })
}

/// MPEG-TS over UDP (as `ffmpeg -f mpegts udp://...` sends it): each datagram
/// holds whole packets.
struct UdpInput {
    socket: std::net::UdpSocket,
    pending: Vec<u8>,
}

impl UdpInput {
    fn bind(addr: SocketAddr) -> std::io::Result<UdpInput> {
        let socket = std::net::UdpSocket::bind(match addr.ip() {
            ip if ip.is_multicast() && ip.is_ipv4() => SocketAddr::new([0, 0, 0, 0].into(), addr.port()),
            _ => addr,
        })?;
        if let std::net::IpAddr::V4(group) = addr.ip() {
            if group.is_multicast() {
                socket.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED)?;
            }
        }
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        Ok(UdpInput { socket, pending: Vec::new() })
    }
}

impl Read for UdpInput {
    /// Never 0 (a UDP input has no end); a quiet second is a `TimedOut`
    /// error, so the caller can look at its stop token.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            let mut d = vec![0u8; 65_536];
            let n = self.socket.recv(&mut d)?;
            d.truncate(n);
            self.pending = d;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl LiveConfig {
    /// Where node.key is kept.
    pub fn state_dir(&self) -> &std::path::Path {
        self.state_dir.as_deref().unwrap_or(&self.keys)
    }
}
