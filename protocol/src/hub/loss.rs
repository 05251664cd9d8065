//! The hub machine's loss: measured from the multicast it hears, reported
//! to the origin (RFC 4654's suppressed feedback, [`LossReporter`]), and
//! announced to its island (what a `--remulticast` relay sizes for).

use super::*;

impl Hub {
    /// A multicast datagram of `chunk` was taken: count it against the loss
    /// of the origin's multicast, or of a relay's (never this hub's own), and
    /// remember a relayed chunk as one a bridge may feed again.
    pub(super) fn meter_multicast(
        &mut self,
        now: Instant,
        chunk: Option<(ObjectId, u32)>,
        relayed: bool,
        d: &[u8],
    ) {
        let Some(chunk) = chunk else { return };
        if relayed && !self.config.remulticast {
            self.fed.insert(now, chunk);
        }
        if let Some(esi) = wire::peek_esi(d) {
            match (relayed, self.config.remulticast) {
                (false, _) => self.loss.heard(chunk, esi),
                (true, false) => self.relay_loss.heard(chunk, esi),
                (true, true) => {} // its own relay
            }
        }
    }

    /// A new echo of the loss reports: a new round draws this hub's timer.
    pub(super) fn take_feedback(&mut self, now: Instant) {
        let Some(f) = self.receiver.feedback().filter(|f| Some(f.seq) != self.feedback_seq) else { return };
        self.feedback_seq = Some(f.seq);
        let loss = self.reportable_loss(now);
        self.reporter.handle_echo(now, f.echo, loss);
    }

    /// This hub's multicast loss, whole percent, when it may report it: it
    /// hears the origin, measures its loss and knows the origin service.
    fn reportable_loss(&self, now: Instant) -> Option<u8> {
        let may = self.config.peer_repair && self.tracker.is_some() && self.hears_origin(now);
        self.loss.known_percent().filter(|_| may)
    }

    /// Report the loss if the round's timer fired and the echo does not cover it.
    pub(super) fn report_loss(&mut self, now: Instant) {
        let loss = self.reportable_loss(now);
        self.reporter.handle_loss(now, loss);
        if let (Some(loss), Some(origin)) = (self.reporter.handle_timeout(now, loss), self.tracker) {
            self.out.push_back(Output::LossReport { origin, loss });
        }
    }

    /// The share of the origin's multicast symbols this hub loses, once
    /// enough have gone by ([`LossMeter`]).
    pub fn multicast_loss(&self) -> Option<f64> {
        self.loss.loss()
    }

    /// The loss this hub announces: of the origin's multicast while it
    /// hears it, else of a `--remulticast` relay on its LAN; whole percent.
    pub(super) fn lan_loss(&self, now: Instant) -> Option<u8> {
        if self.hears_origin(now) {
            self.loss.known_percent()
        } else {
            self.relay_loss.known_percent()
        }
    }

    /// Loss reports: sent, suppressed (the echo covered them), and the
    /// latest echo heard.
    pub fn loss_reports(&self) -> (u64, u64, Option<Echo>) {
        (self.reporter.sent, self.reporter.suppressed, self.reporter.echo())
    }
}
