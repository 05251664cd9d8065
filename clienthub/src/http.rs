//! The hub's local HTTP listener: `/api/status` (JSON), `/metrics`
//! (Prometheus text), a small status page at `/`, and live channels:
//! `/live/NAME/index.m3u8` (an HLS media playlist), `/live/NAME/SEQ.ts` (one
//! segment) and `/live/NAME.ts` (a continuous MPEG-TS stream from the live
//! edge). Only verified segments are served.

use crate::live::LiveBoard;
use crate::status::{HubStatus, StatusBoard};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::fmt::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub status: StatusBoard,
    pub live: LiveBoard,
}

impl AppState {
    fn snapshot(&self) -> HubStatus {
        let mut s = self.status.snapshot();
        s.live = self.live.status();
        s
    }
}

/// A progressive reader that gets no new segment for this long is ended.
const LIVE_IDLE: Duration = Duration::from_secs(30);

pub async fn serve(listener: tokio::net::TcpListener, state: AppState, cancel: CancellationToken) {
    let app = Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .route("/live/{name}/{file}", get(live_file))
        .route("/live/{file}", get(live_stream))
        .with_state(state);
    let shutdown = async move { cancel.cancelled().await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!("HTTP listener stopped: {e}");
    }
}

async fn api_status(State(s): State<AppState>) -> Json<HubStatus> {
    Json(s.snapshot())
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics(&s.snapshot()))
}

fn not_found(what: String) -> Response {
    (StatusCode::NOT_FOUND, what).into_response()
}

/// `index.m3u8`, or `SEQ.ts`.
async fn live_file(State(s): State<AppState>, Path((name, file)): Path<(String, String)>) -> Response {
    if file == "index.m3u8" {
        return match s.live.playlist(&name) {
            Some(p) => (
                [
                    (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                p,
            )
                .into_response(),
            None => not_found(format!("no live channel `{name}` heard on this hub\n")),
        };
    }
    let Some(seq) = file.strip_suffix(".ts").and_then(|q| q.parse::<u64>().ok()) else {
        return not_found(format!("`{file}`: ask for index.m3u8 or SEQ.ts\n"));
    };
    match s.live.segment(&name, seq) {
        Some(bytes) => ([(header::CONTENT_TYPE, "video/mp2t")], bytes).into_response(),
        None => {
            not_found(format!("segment {seq} of `{name}` is not held here (missed, not yet, or no longer)\n"))
        }
    }
}

/// `NAME.ts`: the newest playable segment, then each one after it as it
/// becomes playable (missed ones skipped), until the channel goes quiet.
async fn live_stream(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    let Some(name) = file.strip_suffix(".ts").map(str::to_owned) else {
        return not_found(format!("`{file}`: ask for NAME.ts or NAME/index.m3u8\n"));
    };
    let Some(changes) = s.live.watch(&name) else {
        return not_found(format!("no live channel `{name}` heard on this hub\n"));
    };
    let state = (s.live, name, None::<u64>, changes);
    let stream = futures_util::stream::unfold(state, |(live, name, last, mut changes)| async move {
        loop {
            if let Some((seq, bytes)) = live.next_segment(&name, last) {
                return Some((Ok::<_, std::convert::Infallible>(bytes), (live, name, Some(seq), changes)));
            }
            match tokio::time::timeout(LIVE_IDLE, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    });
    ([(header::CONTENT_TYPE, "video/mp2t")], Body::from_stream(stream)).into_response()
}

pub fn render_metrics(s: &HubStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, rows: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let b = s.bytes;
    metric(
        "hubcast_verified_bytes_total",
        "Verified symbol bytes received, by source.",
        "counter",
        &[
            ("{source=\"multicast\"}".into(), b.multicast),
            ("{source=\"peer\"}".into(), b.peer),
            ("{source=\"origin\"}".into(), b.origin),
            ("{source=\"bridge\"}".into(), b.bridge),
        ],
    );
    metric(
        "hubcast_datagrams_received_total",
        "Datagrams read from the socket.",
        "counter",
        &[(String::new(), s.datagrams.received)],
    );
    let drops: Vec<(String, u64)> =
        s.drops.iter().map(|(r, n)| (format!("{{reason=\"{r}\"}}"), *n)).collect();
    metric("hubcast_datagrams_dropped_total", "Datagrams not used, by reason.", "counter", &drops);
    metric(
        "hubcast_chunks_stored",
        "Verified chunks in the store.",
        "gauge",
        &[(String::new(), s.chunks.stored)],
    );
    let complete = s.objects.iter().filter(|o| o.complete).count() as u64;
    metric("hubcast_objects", "Objects known.", "gauge", &[(String::new(), s.objects.len() as u64)]);
    metric(
        "hubcast_objects_complete",
        "Objects complete in the store.",
        "gauge",
        &[(String::new(), complete)],
    );
    metric(
        "hubcast_store_errors_total",
        "Store write or read failures.",
        "counter",
        &[(String::new(), s.store_errors)],
    );
    let live: Vec<(String, u64)> = s
        .live
        .iter()
        .flat_map(|c| {
            [("on_time", c.on_time), ("late", c.late), ("missed", c.missed)]
                .map(|(state, n)| (format!("{{channel=\"{}\",state=\"{state}\"}}", c.name), n))
        })
        .collect();
    metric(
        "hubcast_live_segments_total",
        "Live segments by how they arrived: on time, late (after the playout deadline) or missed.",
        "counter",
        &live,
    );
    out
}

async fn page(State(s): State<AppState>) -> Html<String> {
    let s = s.snapshot();
    let mut rows = String::new();
    for c in &s.live {
        let name = escape(&c.name);
        let _ = write!(
            rows,
            "<tr><td>live: <a href=\"/live/{name}/index.m3u8\">{name}</a></td><td>{:.0} s</td><td>{} ready</td><td>on time {}, late {}, missed {}</td></tr>",
            c.buffered_secs, c.segments_ready, c.on_time, c.late, c.missed
        );
    }
    for o in &s.objects {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td></tr>",
            escape(&o.name),
            o.size,
            o.chunks_stored,
            o.chunks,
            if o.complete { "complete" } else { "receiving" }
        );
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>hubcast hub</title>\
         <h1>hubcast hub</h1><p>channel {} on {}</p>\
         <p>verified bytes: multicast {}, peer {}, origin {}, bridge {}</p>\
         <table border=1 cellpadding=4><tr><th>object</th><th>bytes</th><th>chunks</th><th>state</th></tr>{}</table>",
        escape(&s.channel),
        escape(&s.group),
        s.bytes.multicast,
        s.bytes.peer,
        s.bytes.origin,
        s.bytes.bridge,
        rows
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
