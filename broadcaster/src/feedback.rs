//! Loss feedback on the broadcaster: hubs' reports (taken by the origin
//! service) set the carousel's FEC, and the echo of the round goes out on the
//! data group a few times a second so that hubs the echo covers stay quiet
//! (`hubcast_protocol::feedback` has the rules).

use crate::status::StatusBoard;
use hubcast_protocol::feedback::{FecControl, ECHO_EVERY};
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire::Feedback as FeedbackDatagram;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The feedback state the origin service, the carousel's producer and the
/// echo task share.
pub struct Feedback {
    control: Mutex<FecControl>,
    /// A report raised the round's worst: echo now.
    raised: Notify,
}

impl Feedback {
    /// FEC between `min` and `max` (shares of K); `k`: a full chunk's K.
    pub fn new(min: f64, max: f64, k: u32) -> Arc<Feedback> {
        Arc::new(Feedback {
            control: Mutex::new(FecControl::new(Instant::now(), min, max, k)),
            raised: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, FecControl> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hub's report, whole percent (checked by the codec: 1..=100).
    pub fn report(&self, loss: u8) {
        if self.lock().handle_report(Instant::now(), loss) {
            self.raised.notify_one();
        }
    }

    /// The repair overhead for the next chunk of `k` source symbols.
    pub fn overhead(&self, k: u32) -> f64 {
        let mut c = self.lock();
        c.handle_timeout(Instant::now());
        c.overhead(k)
    }
}

/// Send the round's echo every [`ECHO_EVERY`], and at once when a report
/// raises it, until `cancel`.
pub async fn echo(
    feedback: Arc<Feedback>,
    signer: Arc<Signer>,
    socket: Arc<tokio::net::UdpSocket>,
    group: SocketAddr,
    expiry_secs: u64,
    status: StatusBoard,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(ECHO_EVERY);
    let mut seq = crate::unix_ms();
    let mut last_error: Option<Instant> = None;
    let mut last_fec = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = feedback.raised.notified() => {}
            _ = cancel.cancelled() => return,
        }
        let (echo, loss, reports) = {
            let mut c = feedback.lock();
            c.handle_timeout(Instant::now());
            (c.echo(), c.loss(), c.reports())
        };
        if last_fec != Some(echo.fec_permille) {
            info!(
                loss_percent = loss.unwrap_or(0),
                fec = f64::from(echo.fec_permille) / 1000.0,
                "the hubs' loss reports set the FEC"
            );
            last_fec = Some(echo.fec_permille);
        }
        status.update(|s| {
            let f = &mut s.fec;
            (f.overhead, f.loss_percent, f.round, f.reports) =
                (f64::from(echo.fec_permille) / 1000.0, loss, echo.round, reports);
        });
        seq = seq.max(crate::unix_ms()).wrapping_add(1);
        let datagram = signer.feedback_datagram(&FeedbackDatagram {
            seq,
            expiry: crate::unix_now() + expiry_secs,
            echo,
        });
        if let Err(e) = socket.send_to(&datagram, group).await {
            if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                last_error = Some(Instant::now());
                warn!("sending the feedback echo to {group}: {e}");
            }
        }
    }
}
