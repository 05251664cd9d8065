//! Loss feedback on the broadcaster: hubs' reports (taken by the origin
//! service) set the carousel's FEC and, with `--rate auto`, its rate; the
//! echo of the round goes out on the data group a few times a second so that
//! hubs the echo covers stay quiet (`hubcast_protocol::feedback` and
//! `hubcast_protocol::rate` have the rules).

use crate::status::StatusBoard;
use hubcast_protocol::feedback::{Echo, FecControl, ECHO_EVERY};
use hubcast_protocol::rate::{RateControl, Verdict};
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
    control: Mutex<Control>,
    /// A report raised the round's worst, or said what no hub had said this
    /// round: echo now.
    raised: Notify,
}

struct Control {
    fec: FecControl,
    /// With `--rate auto`.
    rate: Option<RateControl>,
    rounds_behind: u64,
    rounds_congested: u64,
}

impl Control {
    /// Roll the FEC's rounds to `now`, and end the rate's with them.
    fn roll(&mut self, now: Instant) {
        let before = self.fec.echo().round;
        self.fec.handle_timeout(now);
        let ended = self.fec.echo().round.wrapping_sub(before);
        if let Some(rate) = self.rate.as_mut() {
            for _ in 0..ended.min(64) {
                let heard = rate.this_round();
                self.rounds_behind += u64::from(heard.behind);
                self.rounds_congested += u64::from(heard.congested);
                rate.end_round();
            }
        }
    }
}

impl Feedback {
    /// FEC between `min` and `max` (shares of K); `k`: a full chunk's K.
    /// `rate`: the control of `--rate auto`.
    pub fn new(min: f64, max: f64, k: u32, rate: Option<RateControl>) -> Arc<Feedback> {
        let fec = FecControl::new(Instant::now(), min, max, k);
        Arc::new(Feedback {
            control: Mutex::new(Control { fec, rate, rounds_behind: 0, rounds_congested: 0 }),
            raised: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A hub's report: its loss, whole percent (checked by the codec:
    /// 0..=100), and what it made of the last round.
    pub fn report(&self, loss: u8, verdict: Verdict) {
        let mut c = self.lock();
        c.roll(Instant::now());
        // A report of no loss (a hub saying a verdict) counts: the round is
        // not silent, and the FEC may come down.
        let raised = c.fec.handle_report(Instant::now(), loss) && loss > 0;
        let news = c.rate.as_mut().is_some_and(|r| {
            let news = !verdict.covered_by(r.this_round());
            r.handle_verdict(verdict);
            news
        });
        if raised || news {
            self.raised.notify_one();
        }
    }

    /// The repair overhead for the next chunk of `k` source symbols.
    pub fn overhead(&self, k: u32) -> f64 {
        let mut c = self.lock();
        c.roll(Instant::now());
        c.fec.overhead(k)
    }

    /// With `--rate auto`: the rate to send at now, bytes per second.
    pub fn rate(&self) -> Option<u64> {
        let mut c = self.lock();
        c.roll(Instant::now());
        c.rate.as_ref().map(RateControl::rate)
    }

    /// The round's echo, with what the status shows.
    fn round(&self) -> Round {
        let mut c = self.lock();
        c.roll(Instant::now());
        let mut echo = c.fec.echo();
        let rate = c.rate.as_ref().map(|r| {
            echo.rate_kbit =
                Some(u32::try_from(r.rate().saturating_mul(8) / 1000).unwrap_or(u32::MAX).max(1));
            echo.heard = r.this_round();
            RateNow {
                bytes_per_sec: r.rate(),
                slow_start: r.in_slow_start(),
                rounds_behind: c.rounds_behind,
                rounds_congested: c.rounds_congested,
            }
        });
        Round { echo, loss: c.fec.loss(), reports: c.fec.reports(), rate }
    }
}

/// The feedback round as the echo and the status give it.
struct Round {
    echo: Echo,
    loss: Option<u8>,
    reports: u64,
    rate: Option<RateNow>,
}

/// `--rate auto` now.
#[derive(Clone, Copy, PartialEq)]
struct RateNow {
    bytes_per_sec: u64,
    slow_start: bool,
    rounds_behind: u64,
    rounds_congested: u64,
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
    let mut last_rate = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = feedback.raised.notified() => {}
            _ = cancel.cancelled() => return,
        }
        let Round { echo, loss, reports, rate } = feedback.round();
        if let Some(r) = rate.filter(|r| last_rate != Some(r.bytes_per_sec)) {
            info!(
                mbit_per_sec = r.bytes_per_sec * 8 / 1_000_000,
                slow_start = r.slow_start,
                rounds_behind = r.rounds_behind,
                rounds_congested = r.rounds_congested,
                "--rate auto: the hubs' verdicts set the rate"
            );
            last_rate = Some(r.bytes_per_sec);
        }
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
            if let Some(r) = rate {
                let st = &mut s.rate;
                (st.bits_per_sec, st.slow_start, st.rounds_behind, st.rounds_congested) =
                    (r.bytes_per_sec * 8, r.slow_start, r.rounds_behind, r.rounds_congested);
            }
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
