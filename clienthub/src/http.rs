//! The hub's local HTTP listener: `/api/status` (JSON), `/metrics`
//! (Prometheus text), a small status page at `/`, and live channels:
//! `/live/NAME/index.m3u8` (an HLS media playlist), `/live/NAME/SEQ.ts` (one
//! segment) and `/live/NAME.ts` (a continuous MPEG-TS stream from the live
//! edge). Only verified segments are served. And the gateway
//! (`crate::gateway`): `/objects/{id}` and `/files/{path...}`, with `Range`.

use crate::live::LiveBoard;
use crate::status::{HubStatus, StatusBoard};
use crate::store_worker::Ask;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hubcast_daemon::http_server::HttpLimits;
use std::fmt::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub status: StatusBoard,
    pub live: LiveBoard,
    /// The listener's own counters (connections), for `/metrics`.
    pub http: std::sync::Arc<hubcast_daemon::http_server::HttpCounters>,
    /// Objects to players: `/objects/{id}`, `/files/{path...}`.
    pub gateway: crate::gateway::Gateway,
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

/// Serve until `cancel`, within [`HttpLimits`]' bounds: a slow or idle
/// client is closed after the header timeout, and a flood of connections
/// pushes out the oldest, so the status keeps answering.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, cancel: CancellationToken) {
    let state_counters = state.http.clone();
    let app = Router::new()
        .route("/", get(page))
        .route("/library", get(library))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .route("/live/{name}/{file}", get(live_file))
        .route("/live/{file}", get(live_stream))
        .route("/objects/{id}", get(object))
        .route("/files/{*path}", get(file))
        .route("/api/catalog", get(catalog))
        .route("/api/fetch/{*what}", post(fetch))
        .route("/api/pin/{*what}", post(pin))
        .route("/api/unpin/{*what}", post(unpin))
        .with_state(state);
    let counters = state_counters.clone();
    hubcast_daemon::http_server::serve(listener, app, HttpLimits::default(), counters, cancel).await;
}

/// `GET`/`HEAD` (axum routes both to `get`) of an object by id.
async fn object(
    State(s): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    crate::gateway::object(&s.gateway, &method, &headers, &id).await
}

/// `GET /library`: the catalog to browse, search and fetch from (plain
/// HTML; its script reads `/api/catalog` and `/api/status`).
async fn library() -> Html<&'static str> {
    Html(include_str!("library.html"))
}

/// `GET /api/catalog`: the channel's catalog, paged and filtered.
async fn catalog(
    State(s): State<AppState>,
    axum::extract::Query(p): axum::extract::Query<crate::gateway::CatalogParams>,
) -> Response {
    crate::gateway::catalog(&s.gateway, p).await
}

/// `POST /api/fetch/{id or name}` (with the token): hold it again.
async fn fetch(State(s): State<AppState>, headers: HeaderMap, Path(what): Path<String>) -> Response {
    crate::gateway::ask(&s.gateway, &headers, Ask::Fetch, &what).await
}

/// `POST /api/pin/{id or name}` (with the token): keep it whatever the quota.
async fn pin(State(s): State<AppState>, headers: HeaderMap, Path(what): Path<String>) -> Response {
    crate::gateway::ask(&s.gateway, &headers, Ask::Pin, &what).await
}

/// `POST /api/unpin/{id or name}` (with the token).
async fn unpin(State(s): State<AppState>, headers: HeaderMap, Path(what): Path<String>) -> Response {
    crate::gateway::ask(&s.gateway, &headers, Ask::Unpin, &what).await
}

/// `GET`/`HEAD` of an object by its name in the channel.
async fn file(
    State(s): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    crate::gateway::file(&s.gateway, &method, &headers, &path).await
}

async fn api_status(State(s): State<AppState>) -> Json<HubStatus> {
    Json(s.snapshot())
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let mut text = render_metrics(&s.snapshot());
    let h = &s.http;
    let _ = write!(
        text,
        "# TYPE hubcast_http_connections_total counter\nhubcast_http_connections_total {}\n\
         # TYPE hubcast_http_connections_open gauge\nhubcast_http_connections_open {}\n\
         # TYPE hubcast_http_connections_evicted_total counter\nhubcast_http_connections_evicted_total {}\n",
        h.accepted.load(Relaxed),
        h.open(),
        h.evicted.load(Relaxed)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
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
        "hubcast_trust_root_version",
        "Version of the channel's root trusted now (1: the configured one; one up per rotation followed).",
        "gauge",
        &[(String::new(), s.trust.root_version)],
    );
    metric(
        "hubcast_revocations_version",
        "Version of the root's revocation list held (0: none).",
        "gauge",
        &[(String::new(), s.trust.revocations_version)],
    );
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
        "hubcast_store_queue_bytes",
        "Bytes of verified chunks waiting for the store.",
        "gauge",
        &[(String::new(), s.chunks.store_queue_bytes)],
    );
    metric(
        "hubcast_store_queue_waits_total",
        "Times the receive loop waited for room in the store queue.",
        "counter",
        &[(String::new(), s.chunks.store_queue_waits)],
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

/// Seconds between the status page's refreshes.
const PAGE_REFRESH_SECS: u32 = 2;

/// The status page: what the hub holds and how far each object is, by
/// which path; it reloads itself every [`PAGE_REFRESH_SECS`].
async fn page(State(s): State<AppState>) -> Html<String> {
    use crate::status::{human_bytes, human_secs};
    let s = s.snapshot();
    let mut rows = String::new();
    for c in &s.live {
        let name = escape(&c.name);
        let _ = write!(
            rows,
            "<tr class=live><td>live: <a href=\"/live/{name}/index.m3u8\">{name}</a> \
             (<a href=\"/live/{name}.ts\">stream</a>)</td><td colspan=4>{:.0} s buffered, {} segments ready</td>\
             <td>on time {}, late {}, missed {}</td><td>playing</td></tr>",
            c.buffered_secs, c.segments_ready, c.on_time, c.late, c.missed
        );
    }
    for o in &s.objects {
        let by = &o.completed_by;
        let state = match (&o.exported, o.complete) {
            (Some(path), true) => format!("complete: {}", escape(path)),
            (None, true) => "complete".into(),
            _ if o.evicted => "evicted (--quota)".into(),
            _ => "receiving".into(),
        };
        let state = if o.pinned { format!("{state}, pinned") } else { state };
        // A held object opens in the browser (or a player) from its name.
        let name = match o.complete {
            true => {
                format!("<a href=\"/files/{}\">{}</a>", crate::get::percent_encode(&o.name), escape(&o.name))
            }
            false => escape(&o.name),
        };
        let _ = write!(
            rows,
            "<tr class=object><td>{name}</td><td><progress max=100 value={:.1}></progress> <span class=percent>{:.1}%</span></td>\
             <td>{} of {}</td><td class=rate>{}/s</td><td class=eta>{}</td>\
             <td>multicast {}, peer {}, origin {}, bridge {}</td><td class=state>{state}</td></tr>",
            o.percent,
            o.percent,
            human_bytes(o.bytes_stored),
            human_bytes(o.size),
            human_bytes(o.rate_bytes_per_sec),
            o.eta_secs.map_or("-".into(), human_secs),
            by.multicast,
            by.peer,
            by.origin,
            by.bridge,
        );
    }
    let b = &s.bytes;
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta http-equiv=refresh content={PAGE_REFRESH_SECS}>\
         <title>hubcast hub</title>\
         <style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left}}progress{{width:8em}}</style>\
         <h1>hubcast hub</h1>\
         <p>channel <code>{}</code> on {}, up {}. <a href=/library>library</a> · <a href=/api/status>status (JSON)</a> · <a href=/metrics>metrics</a></p>\
         <p>verified bytes by path: multicast {}, peer {}, origin {}, bridge {}</p>\
         <p class=store>held {} of a quota of {}; pinned {}, evicted {}, fetched on demand {}</p>\
         <table><tr><th>object</th><th>progress</th><th>stored</th><th>rate</th><th>time left</th>\
         <th>chunks completed by</th><th>state</th></tr>{}</table>",
        escape(&s.channel),
        escape(&s.group),
        human_secs(s.uptime_ms / 1000),
        human_bytes(b.multicast),
        human_bytes(b.peer),
        human_bytes(b.origin),
        human_bytes(b.bridge),
        human_bytes(s.chunks.held_bytes),
        s.chunks.quota_bytes.map_or("none (no --quota)".into(), human_bytes),
        s.chunks.pinned,
        s.chunks.evicted,
        s.chunks.fetches,
        rows
    ))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
