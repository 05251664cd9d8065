//! The HTTP listener both binaries run (a hub's status, metrics and live
//! channels; the broadcaster's status): axum routes served by hyper
//! directly, so that clients that connect and send nothing, or send a
//! request a byte at a time, cannot hold the listener.
//!
//! - Every connection must send a whole request head within
//!   [`HttpLimits::header_timeout`], the first one and each one after on a
//!   kept-alive connection (so an idle connection is closed after it too).
//! - At most [`HttpLimits::max_connections`] are open. A new one past that
//!   closes the open one whose last request began longest ago (one that never
//!   sent any counts from when it connected): a flood of idle connections
//!   pushes out its own, and a person opening the status page still gets in.
//! - Every connection task is owned: stopping the listener ends them all.

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// Bounds of an HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections open at once. Default 256.
    pub max_connections: usize,
    /// Time to send a request head, also while idle between requests.
    /// Default 10 s.
    pub header_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_connections: 256, header_timeout: Duration::from_secs(10) }
    }
}

/// What the listener did, and the connections it holds, for `/metrics`.
#[derive(Default)]
pub struct HttpCounters {
    pub accepted: AtomicU64,
    /// Closed to make room for a newer one at the cap.
    pub evicted: AtomicU64,
    /// Open connections: id → (when its last request began, its task).
    conns: Mutex<BTreeMap<u64, (Instant, AbortHandle)>>,
}

impl HttpCounters {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns().len()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Instant, AbortHandle)>> {
        // The map holds plain data: a panic elsewhere leaves it usable.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At the cap, close the connection whose last request began longest ago.
    fn make_room(&self, max: usize) {
        let mut conns = self.conns();
        while conns.len() >= max.max(1) {
            let Some((&oldest, _)) = conns.iter().min_by_key(|(_, (t, _))| *t) else { break };
            if let Some((_, handle)) = conns.remove(&oldest) {
                handle.abort();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Serve `app` on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    counters: Arc<HttpCounters>,
    cancel: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            // Reap finished connection tasks as they end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::debug!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        next_id += 1;
        let id = next_id;
        counters.make_room(limits.max_connections);
        let service =
            Touching { id, counters: counters.clone(), inner: TowerToHyperService::new(app.clone()) };
        let in_task = counters.clone();
        let header_timeout = limits.header_timeout;
        // Listed before its task can end: the task removes itself under the lock.
        let mut listed = counters.conns();
        let handle = tasks.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            in_task.conns().remove(&id);
        });
        listed.insert(id, (Instant::now(), handle));
        drop(listed);
    }
    tasks.shutdown().await;
}

/// The app, noting when each request on a connection begins.
#[derive(Clone)]
struct Touching<S> {
    id: u64,
    counters: Arc<HttpCounters>,
    inner: S,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Touching<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        if let Some((t, _)) = self.counters.conns().get_mut(&self.id) {
            *t = Instant::now();
        }
        self.inner.call(req)
    }
}
