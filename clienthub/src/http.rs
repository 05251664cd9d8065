//! The hub's local HTTP listener: `/api/status` (JSON), `/metrics`
//! (Prometheus text) and a small status page at `/`.

use crate::status::{HubStatus, StatusBoard};
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use std::fmt::Write;
use tokio_util::sync::CancellationToken;

pub async fn serve(listener: tokio::net::TcpListener, status: StatusBoard, cancel: CancellationToken) {
    let app = Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/metrics", get(metrics))
        .with_state(status);
    let shutdown = async move { cancel.cancelled().await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!("HTTP listener stopped: {e}");
    }
}

async fn api_status(State(s): State<StatusBoard>) -> Json<HubStatus> {
    Json(s.snapshot())
}

async fn metrics(State(s): State<StatusBoard>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render_metrics(&s.snapshot()))
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
    out
}

async fn page(State(s): State<StatusBoard>) -> Html<String> {
    let s = s.snapshot();
    let mut rows = String::new();
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
