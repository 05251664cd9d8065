//! What the broadcaster has done, for `GET /api/status` on `--http`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Default, Serialize)]
pub struct BroadcasterStatus {
    /// The channel's trust fingerprint.
    pub fingerprint: String,
    pub group: String,
    /// `NODEID@ADDR` of the origin service (repair and tracker), if it runs:
    /// what hubs take as `--tracker`.
    pub origin_service: Option<String>,
    pub objects: usize,
    pub object_bytes: u64,
    pub carousel: CarouselStatus,
    pub origin_repair: OriginRepairStatus,
    pub tracker: TrackerStatus,
    pub fec: FecStatus,
    pub rate: RateStatus,
    pub certificate: CertificateStatus,
}

/// The signing certificate in use (crate::renewal).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CertificateStatus {
    pub serial: u64,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    /// 0 once it has ended.
    pub expires_in_secs: u64,
    /// New certificates taken without a restart (SIGHUP).
    pub renewals: u64,
    /// From a week before the end: what to do.
    pub warning: Option<String>,
    /// The root's revocation list carried (0: none).
    pub revocations_version: u64,
}

/// The carousel's rate: fixed, or as `--rate auto` sets it
/// (hubcast_protocol::rate).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RateStatus {
    pub auto: bool,
    /// Bits per second now.
    pub bits_per_sec: u64,
    /// With `--rate auto`: the bounds, still in slow start, and the rounds in
    /// which a hub said it was behind or congested.
    pub min_bits_per_sec: u64,
    pub max_bits_per_sec: u64,
    pub slow_start: bool,
    pub rounds_behind: u64,
    pub rounds_congested: u64,
}

/// The carousel's FEC as hubs' loss reports set it (hubcast_protocol::feedback).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FecStatus {
    /// Repair symbols per round now, as a share of K.
    pub overhead: f64,
    /// The operator's bounds (`--fec-overhead`, `--fec-max`).
    pub min: f64,
    pub max: f64,
    /// The worst loss reported this feedback round or the last, percent.
    pub loss_percent: Option<u8>,
    /// The feedback round, and the reports taken since the start.
    pub round: u32,
    pub reports: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TrackerStatus {
    /// Live hubs registered.
    pub hubs: usize,
    pub registrations: u64,
    pub reports: u64,
    pub queries: u64,
    /// Registrations and reports refused (full, unregistered, too many objects).
    pub refused: u64,
    /// Hubs forgotten after falling silent.
    pub expired: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CarouselStatus {
    pub datagrams: u64,
    pub bytes: u64,
    /// Symbol datagrams left out by `--simulate-loss`.
    pub simulated_drops: u64,
    /// Every round asked for has been sent.
    pub done: bool,
}

/// The origin's multicast repair (see hubcast_protocol::origin).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct OriginRepairStatus {
    /// NAKs accepted from hubs.
    pub naks: u64,
    /// NAKs for a chunk already waiting to be resent.
    pub merged: u64,
    /// NAKs for a chunk just resent with enough, or whose resend waits to go
    /// out: late.
    pub late: u64,
    /// Copies of NAKs and loss reports that came as datagrams (hubs send
    /// each three times), dropped before they count.
    pub copies: u64,
    /// NAKs refused: unknown object or chunk, too many waiting, over a hub's rate.
    pub refused: u64,
    /// Chunk resends on multicast.
    pub resends: u64,
    /// Resends of a chunk already resent (a hub lost the first one).
    pub resent_again: u64,
    pub symbols: u64,
    pub datagrams: u64,
    pub bytes: u64,
    /// What repair may send now, bytes per second: a share of the channel
    /// while the carousel sends, all of it once it is idle.
    pub budget_bytes_per_sec: u64,
    /// The worst multicast loss the NAKs of the last resend reported, percent.
    pub reported_loss: u8,
    /// Malformed messages from hubs (their streams were reset).
    pub bad_messages: u64,
}

/// The status, shared by the tasks that update it and the HTTP listener.
#[derive(Clone, Default)]
pub struct StatusBoard(Arc<Mutex<BroadcasterStatus>>);

impl StatusBoard {
    pub fn update(&self, f: impl FnOnce(&mut BroadcasterStatus)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    pub fn snapshot(&self) -> BroadcasterStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

pub async fn serve(listener: tokio::net::TcpListener, status: StatusBoard, cancel: CancellationToken) {
    let app = Router::new()
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .with_state(status);
    // Slow and idle clients are bounded as on a hub (hubcast_daemon::http_server).
    let limits = hubcast_daemon::http_server::HttpLimits::default();
    hubcast_daemon::http_server::serve(listener, app, limits, Default::default(), cancel).await;
}

async fn api_status(State(s): State<StatusBoard>) -> Json<BroadcasterStatus> {
    Json(s.snapshot())
}

async fn metrics(State(s): State<StatusBoard>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics(&s.snapshot()))
}

/// The status as Prometheus text.
pub fn render_metrics(s: &BroadcasterStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let c = &s.certificate;
    metric("hubcast_certificate_serial", "Serial of the signing certificate in use.", "gauge", c.serial);
    metric(
        "hubcast_certificate_not_after_seconds",
        "When the signing certificate in use ends, unix seconds.",
        "gauge",
        c.not_after,
    );
    metric(
        "hubcast_certificate_expires_in_seconds",
        "Seconds until the signing certificate in use ends (0: ended).",
        "gauge",
        c.expires_in_secs,
    );
    metric(
        "hubcast_certificate_expiring",
        "1 from a week before the signing certificate ends: run `broadcaster certify`.",
        "gauge",
        u64::from(c.warning.is_some()),
    );
    metric(
        "hubcast_certificate_renewals_total",
        "Certificates taken without a restart.",
        "counter",
        c.renewals,
    );
    metric("hubcast_carousel_bytes_total", "Bytes the carousel sent.", "counter", s.carousel.bytes);
    metric(
        "hubcast_carousel_datagrams_total",
        "Datagrams the carousel sent.",
        "counter",
        s.carousel.datagrams,
    );
    let r = &s.origin_repair;
    metric("hubcast_origin_repair_bytes_total", "Bytes origin repair multicast.", "counter", r.bytes);
    metric("hubcast_origin_repair_naks_total", "NAKs accepted from hubs.", "counter", r.naks);
    metric("hubcast_tracker_hubs", "Live hubs registered with the tracker.", "gauge", s.tracker.hubs as u64);
    out
}
