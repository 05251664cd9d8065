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

    /// A new echo of the loss reports: a new round ends the last one for
    /// the rate's meter, and draws this hub's timer.
    pub(super) fn take_feedback(&mut self, now: Instant) {
        let Some(f) = self.receiver.feedback().filter(|f| Some(f.seq) != self.feedback_seq) else { return };
        self.feedback_seq = Some(f.seq);
        if self.meter_round != Some(f.echo.round) {
            self.meter_round = Some(f.echo.round);
            let loss = self.loss.known_percent().filter(|_| self.hears_origin(now));
            self.verdict = self.keeping_up.end_round(self.receiver.backlog_bytes(), loss, self.overflowing);
            self.overflowing = false;
        }
        let loss = self.reportable_loss(now, f.echo.rate_kbit.is_some());
        self.reporter.handle_echo(now, f.echo, loss, self.verdict);
    }

    /// This hub's multicast loss, whole percent, when it may report it: it
    /// hears the origin, measures its loss and knows the origin service.
    /// Under `--rate auto` the lowest of the last rounds: loss above it comes
    /// with the rate, which the rate control removes ([`BehindMeter::fec_loss`]).
    fn reportable_loss(&self, now: Instant, auto_rate: bool) -> Option<u8> {
        let may = self.config.peer_repair && self.tracker.is_some() && self.hears_origin(now);
        let now = self.loss.known_percent();
        // Under `--rate auto`, 0 until two rounds say what is the FEC's: the
        // hub may still say it is behind or congested.
        let loss = if auto_rate { now.map(|_| self.keeping_up.fec_loss().unwrap_or(0)) } else { now };
        loss.filter(|_| may)
    }

    /// Report the loss if the round's timer fired and the echo does not cover it.
    pub(super) fn report_loss(&mut self, now: Instant) {
        let auto_rate = self.reporter.echo().is_some_and(|e| e.rate_kbit.is_some());
        let loss = self.reportable_loss(now, auto_rate);
        self.reporter.handle_loss(now, loss);
        if let (Some((loss, verdict)), Some(origin)) = (self.reporter.handle_timeout(now, loss), self.tracker)
        {
            self.out.push_back(Output::LossReport { origin, loss, verdict });
        }
    }

    /// The driver's receive path is near its bound, or dropped datagrams:
    /// counted against keeping up at the round's end.
    pub fn handle_overflow(&mut self) {
        self.overflowing = true;
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
