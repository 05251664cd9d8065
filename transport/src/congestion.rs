//! The congestion controller of hubs' QUIC connections: loss with no queue
//! behind it is taken for what a home's access link does at random, not for
//! congestion.
//!
//! NewReno and Cubic halve their window at every loss; BBR paces at the
//! delivery rate it measures, which random loss lowers every round (at 50%
//! it halves, and probing at 1.25 × does not win it back). On the network
//! lab's links, which drop a share of packets at random, a bridge's feed at
//! 50% loss carried 300 KB in four minutes with either.
//!
//! This controller tells the two kinds of loss apart by delay, as TCP Veno
//! does: a loss while the smoothed RTT is near the path's minimum (no queue
//! has built up) is random, and the window stays; a loss while a queue has
//! built up (the smoothed RTT above the minimum by a quarter, and by at least
//! [`QUEUE_FLOOR`]) is congestion, and the window halves, once per round
//! trip. The window doubles each round trip until a queue shows or
//! congestion halves it, then grows by one datagram per window acknowledged.
//! Persistent congestion (every packet lost for several probe timeouts)
//! resets it to the minimum, as RFC 9002 asks, when a queue had built up;
//! with none, it was a burst of random loss, and the window goes back to
//! the initial one with slow start to regrow it.
//!
//! The window never goes below [`MIN_DATAGRAMS`], 32 datagrams, the asking
//! side's fixed window: quinn sends no ACK while its congestion window (or
//! its pacer) holds back data it has to send, so at 50% loss each way a
//! bridge at two datagrams, with a feed's stream behind them, acknowledged
//! nothing until a probe timeout; its fed hub, whose nudges then filled its
//! own window, acknowledged nothing either, and the connection went silent
//! past its idle timeout (in the lab, every 20-120 s, at a window of 2-3
//! datagrams and an RTT of 40-200 ms on a 0.2 ms path).
//!
//! What bounds a hub's sending on a link that drops packets at random
//! without queueing is its own upload pacer (`--upload-rate`), as before;
//! on a congested one, too, below 32 datagrams a round trip.

use quinn::congestion::{Controller, ControllerFactory};
use quinn_proto::RttEstimator;
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Queueing delay below this is noise (timer granularity, a busy CPU).
pub const QUEUE_FLOOR: Duration = Duration::from_millis(5);
/// The window never grows past this (the connection's send window).
const MAX_WINDOW: u64 = 16 << 20;
/// Datagrams in the smallest window (RFC 9002: 2), and the initial one
/// (RFC 9002: 10): the asking side's fixed window (see the module's text).
pub const MIN_DATAGRAMS: u64 = crate::quic::ASKER_WINDOW;
const INITIAL_DATAGRAMS: u64 = MIN_DATAGRAMS;

/// Builds a [`QueueAware`] controller for each connection.
#[derive(Clone, Debug, Default)]
pub struct QueueAwareConfig;

impl ControllerFactory for QueueAwareConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(QueueAware::new(now, current_mtu))
    }
}

#[derive(Clone, Debug)]
pub struct QueueAware {
    mtu: u64,
    window: u64,
    /// Slow start ends here.
    ssthresh: u64,
    /// Bytes acknowledged toward the next datagram of growth.
    acked: u64,
    /// Losses of packets sent before this are of the reaction already made.
    recovery_start: Option<Instant>,
    /// Whether the last RTT sample showed a queue.
    queued: bool,
    random_losses: u64,
    congestion_losses: u64,
}

impl QueueAware {
    fn new(_now: Instant, mtu: u16) -> Self {
        let mtu = u64::from(mtu);
        QueueAware {
            mtu,
            window: INITIAL_DATAGRAMS * mtu,
            ssthresh: u64::MAX,
            acked: 0,
            recovery_start: None,
            queued: false,
            random_losses: 0,
            congestion_losses: 0,
        }
    }

    fn min_window(&self) -> u64 {
        MIN_DATAGRAMS * self.mtu
    }

    /// Loss events taken as random (no queue), and as congestion.
    pub fn losses(&self) -> (u64, u64) {
        (self.random_losses, self.congestion_losses)
    }
}

/// Whether a queue has built up on the path: the smoothed RTT above the
/// minimum by a quarter of it, and by at least [`QUEUE_FLOOR`].
pub fn queue_built(smoothed: Duration, min: Duration) -> bool {
    smoothed > min + (min / 4).max(QUEUE_FLOOR)
}

impl Controller for QueueAware {
    fn on_ack(&mut self, _now: Instant, sent: Instant, bytes: u64, app_limited: bool, rtt: &RttEstimator) {
        self.acked_with(sent, bytes, app_limited, queue_built(rtt.get(), rtt.min()));
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool, _lost_bytes: u64) {
        self.lost(now, sent, persistent);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.window = self.window.max(self.min_window());
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        INITIAL_DATAGRAMS * self.mtu
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl QueueAware {
    /// `bytes` sent at `sent` were acknowledged; `queued`: the RTT shows a queue.
    fn acked_with(&mut self, sent: Instant, bytes: u64, app_limited: bool, queued: bool) {
        self.queued = queued;
        if app_limited || self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        if self.queued && self.window < self.ssthresh {
            self.ssthresh = self.window; // a queue: slow start is over
        }
        if self.window < self.ssthresh {
            self.window += bytes;
        } else {
            self.acked += bytes;
            if self.acked >= self.window {
                self.acked -= self.window;
                self.window += self.mtu;
            }
        }
        self.window = self.window.min(MAX_WINDOW);
    }

    /// Packets sent at `sent` were lost.
    fn lost(&mut self, now: Instant, sent: Instant, persistent: bool) {
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        if persistent && !self.queued {
            // Every packet lost for several probe timeouts with no queue
            // behind them: a burst of random loss (half of every flight
            // lost both ways makes one every few seconds), not a queue. Back
            // to the initial window, and slow start regrows it; the minimum
            // with linear growth left a bridge's feed at a few KB/s.
            self.random_losses += 1;
            self.recovery_start = Some(now);
            self.window = self.window.min(INITIAL_DATAGRAMS * self.mtu);
            self.acked = 0;
            return;
        }
        if persistent {
            self.congestion_losses += 1;
            self.recovery_start = Some(now);
            self.window = self.min_window();
            self.ssthresh = self.ssthresh.min(self.window.max(self.min_window()));
            self.acked = 0;
            return;
        }
        if !self.queued {
            self.random_losses += 1;
            return;
        }
        self.congestion_losses += 1;
        self.recovery_start = Some(now);
        self.window = (self.window / 2).max(self.min_window());
        self.ssthresh = self.window;
        self.acked = 0;
    }
}

/// A window that never moves, for a connection whose side sends only small
/// control traffic: a fed hub's to its bridge (its request, keep-alive
/// nudges, acknowledgements and flow credit). In the lab at 50% loss each
/// way, [`QueueAware`] on that side read the delay of lost-and-resent frames
/// as a queue and shrank to two datagrams; the nudges then waited behind
/// lost ones, the bridge heard too little to answer, and feeds timed out.
/// Bounded by what the side sends, not by the window.
#[derive(Clone, Debug)]
pub struct Fixed {
    window: u64,
}

/// Builds a [`Fixed`] controller of `datagrams` full-size datagrams.
#[derive(Clone, Debug)]
pub struct FixedConfig {
    pub datagrams: u64,
}

impl ControllerFactory for FixedConfig {
    fn build(self: Arc<Self>, _now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Fixed { window: self.datagrams * u64::from(current_mtu) })
    }
}

impl Controller for Fixed {
    fn on_congestion_event(&mut self, _now: Instant, _sent: Instant, _persistent: bool, _lost_bytes: u64) {}

    fn on_mtu_update(&mut self, _new_mtu: u16) {}

    fn window(&self) -> u64 {
        self.window
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u16 = 1200;

    /// Acknowledge a window's worth, `rounds` times, one datagram at a time.
    fn grow(c: &mut QueueAware, t: &mut Instant, rounds: u32, queued: bool) {
        for _ in 0..rounds {
            *t += Duration::from_millis(10);
            for _ in 0..c.window.div_ceil(u64::from(MTU)) {
                c.acked_with(*t, MTU.into(), false, queued);
            }
        }
    }

    #[test]
    fn loss_without_a_queue_keeps_the_window_and_loss_with_one_halves_it() {
        let mut t = Instant::now();
        let mut c = QueueAware::new(t, MTU);
        grow(&mut c, &mut t, 5, false);
        let w = c.window;
        assert_eq!(w, 32 * 1200 * 32, "doubles per round trip in slow start");
        // Half the packets lost at random, every round trip: the window
        // keeps growing.
        for _ in 0..10 {
            c.lost(t, t, false);
            grow(&mut c, &mut t, 1, false);
        }
        assert!(c.window > w, "{} after random loss, from {w}", c.window);
        assert_eq!(c.losses(), (10, 0));
        // A queue builds: slow start ends, and the next loss halves.
        grow(&mut c, &mut t, 1, true);
        let w = c.window;
        t += Duration::from_millis(10);
        c.lost(t, t, false);
        assert_eq!(c.window, w / 2);
        // Losses of packets sent before the reaction are the same event.
        c.lost(t + Duration::from_millis(1), t - Duration::from_millis(1), false);
        assert_eq!((c.window, c.losses()), (w / 2, (10, 1)));
        // Past it, congestion growth: one datagram per window acknowledged.
        let w = c.window;
        grow(&mut c, &mut t, 3, true);
        assert_eq!(c.window, w + 3 * 1200);
        // Persistent congestion with a queue: the minimum.
        c.lost(t + Duration::from_secs(1), t + Duration::from_millis(500), true);
        assert_eq!(c.window, 32 * 1200);
        // And congestion never halves it below.
        grow(&mut c, &mut t, 1, true);
        t += Duration::from_secs(2);
        c.lost(t, t, false);
        assert_eq!(c.window, 32 * 1200, "the floor: quinn acknowledges nothing while the window is full");
    }

    #[test]
    fn persistent_loss_with_no_queue_goes_back_to_the_initial_window_and_slow_start() {
        let mut t = Instant::now();
        let mut c = QueueAware::new(t, MTU);
        grow(&mut c, &mut t, 5, false);
        t += Duration::from_secs(1);
        c.lost(t, t - Duration::from_millis(500), true);
        assert_eq!((c.window, c.losses()), (32 * 1200, (1, 0)));
        // Slow start again: doubling per round trip, not one datagram.
        grow(&mut c, &mut t, 2, false);
        assert_eq!(c.window, 128 * 1200);
    }

    #[test]
    fn a_queue_is_a_quarter_of_the_minimum_and_at_least_the_floor() {
        let ms = Duration::from_millis;
        assert!(!queue_built(ms(4), Duration::from_micros(100)), "CPU noise on loopback");
        assert!(queue_built(ms(6), Duration::from_micros(100)));
        assert!(!queue_built(ms(24), ms(20)));
        assert!(queue_built(ms(26), ms(20)));
        assert!(!queue_built(ms(240), ms(200)));
        assert!(queue_built(ms(251), ms(200)));
    }
}
