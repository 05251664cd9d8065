//! Loss reports and the FEC they set, sans IO: RFC 4654's feedback
//! suppression carrying NORM's automatic parity.
//!
//! - **Rounds and the echo.** The broadcaster ([`FecControl`]) counts
//!   feedback rounds of [`ROUND`] and, every [`ECHO_EVERY`] and at once when
//!   it changes, multicasts a signed echo ([`Echo`], `wire::Feedback`): the
//!   round, and the worst loss any hub has reported in it so far.
//! - **Reports, suppressed.** A hub that hears the origin's multicast and
//!   knows its own loss ([`crate::loss::LossMeter`]) draws a timer when a
//!   round starts ([`LossReporter`]): RFC 4654's exponential timer,
//!   `T·(1 + log_N x)` over half the round, with N =
//!   [`RECEIVERS_BOUND`], biased so that lossier
//!   hubs answer sooner. When it fires, the hub reports only if the echo of
//!   the round does not already cover its loss. So with a million hubs at
//!   like loss a round draws a few reports, and the worst hub is always among
//!   them.
//! - **The FEC.** The carousel sizes each chunk it sends next for the worst
//!   loss of this round and the last ([`FecControl::overhead`]): enough
//!   symbols that a hub losing that share still receives K with about 98%
//!   odds (the sizing of origin resends, [`crate::origin::resend_size`]),
//!   within the operator's `--fec-min`/`--fec-max`. Two rounds without a
//!   report bring it back to the minimum.
//!
//! The reported figure moves only what the operator allowed: a forged report
//! (any hub may report) raises the FEC to `--fec-max` at most, and a forged
//! echo (unsigned bytes never get here: the echo is signed) cannot exist.

use crate::origin::resend_size;
use crate::rate::Verdict;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// A feedback round: reports of one round set the FEC for two.
pub const ROUND: Duration = Duration::from_secs(2);
/// Rounds that end with no report at all keep the loss last reported, this
/// many of them (30 s): silence is no news, not news of no loss. At 50% loss
/// a round's reports (each after an echo that may be lost, over QUIC that
/// may wait out its handshake) all failed now and then, and the FEC fell to
/// its minimum for a round or more; over a 256 MiB carousel it spent 20 s of
/// 30 there, and the origin resent 3 × the file.
pub const HOLD_SILENT_ROUNDS: u32 = 15;
/// How often the broadcaster repeats the echo (and at once when it changes).
pub const ECHO_EVERY: Duration = Duration::from_millis(250);
/// RFC 4654's N: an upper bound on the hubs of one channel. It sets how the
/// timers spread: larger, fewer answer early, and reports come later.
pub const RECEIVERS_BOUND: f64 = 1_000_000.0;
/// Share of the timer window set by the loss rather than by chance: a hub
/// losing 50% answers before one losing 5% nearly always.
const LOSS_BIAS: f64 = 0.3;
/// A hub whose loss is within this many points of the echo (or a tenth of
/// the echo, if more) does not report.
pub const SUPPRESS_WITHIN: u8 = 1;
/// Symbols beyond the loss's sizing (RaptorQ decodes K + 1 with ~99% odds).
const EXTRA: u32 = 1;

/// What the broadcaster says of the feedback round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The round, counted from the broadcaster's start.
    pub round: u32,
    /// How long a round lasts, ms: hubs spread their timers over half of it.
    pub round_ms: u16,
    /// The worst loss reported this round, whole percent; `None` before the
    /// first report.
    pub worst: Option<u8>,
    /// The FEC overhead the carousel applies now, per mille of K (what hubs
    /// show; they do not act on it).
    pub fec_permille: u16,
    /// The carousel's rate now, kbit/s, when `--rate auto` sets it (hubs
    /// then say whether they keep up); `None` for a rate the operator fixed.
    pub rate_kbit: Option<u32>,
    /// What hubs said of this round so far ([`crate::rate`]): a hub whose
    /// verdict this covers does not report it.
    pub heard: Verdict,
}

/// The broadcaster's side: rounds, the worst reports, and the FEC from them.
#[derive(Clone, Debug)]
pub struct FecControl {
    min: f64,
    max: f64,
    round: u32,
    round_started: Instant,
    this_round: Option<u8>,
    last_round: Option<u8>,
    /// Rounds ended with no report since the last that had one.
    silent_rounds: u32,
    /// K the FEC figure in the echo is given for (the channel's usual chunk).
    k: u32,
    reports: u64,
}

impl FecControl {
    /// Between `min` and `max` (shares of K, 0.0..); `k` is the source
    /// symbols of a full chunk, for the figure the echo shows.
    pub fn new(now: Instant, min: f64, max: f64, k: u32) -> Self {
        FecControl {
            min,
            max: max.max(min),
            round: 0,
            round_started: now,
            this_round: None,
            last_round: None,
            silent_rounds: 0,
            k: k.max(1),
            reports: 0,
        }
    }

    /// A hub reported `loss` (whole percent, ≤ 100). True when it raised the
    /// round's worst: the echo should go out now, to quiet the others.
    pub fn handle_report(&mut self, now: Instant, loss: u8) -> bool {
        self.handle_timeout(now);
        self.reports += 1;
        let loss = loss.min(100);
        let raised = self.this_round.is_none_or(|w| loss > w);
        if raised {
            self.this_round = Some(loss);
        }
        raised
    }

    /// Roll the rounds that have ended by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while now.saturating_duration_since(self.round_started) >= ROUND {
            self.round = self.round.wrapping_add(1);
            self.round_started += ROUND;
            match self.this_round.take() {
                Some(worst) => (self.last_round, self.silent_rounds) = (Some(worst), 0),
                None => {
                    self.silent_rounds = self.silent_rounds.saturating_add(1);
                    if self.silent_rounds > HOLD_SILENT_ROUNDS {
                        self.last_round = None;
                    }
                }
            }
        }
    }

    /// When the current round ends.
    pub fn poll_timeout(&self) -> Instant {
        self.round_started + ROUND
    }

    /// The loss the FEC is sized for now: the worst of this round and the
    /// last that had reports (within [`HOLD_SILENT_ROUNDS`]).
    pub fn loss(&self) -> Option<u8> {
        self.this_round.max(self.last_round)
    }

    /// The repair overhead for a chunk of `k` source symbols: enough that a
    /// hub losing [`FecControl::loss`] receives K with about 98% odds, within
    /// the operator's bounds (the carousel stops at N_max whatever this says).
    pub fn overhead(&self, k: u32) -> f64 {
        let Some(loss) = self.loss().filter(|l| *l > 0) else { return self.min };
        let k = k.max(1);
        let n = resend_size(k, f64::from(loss) / 100.0, EXTRA);
        (f64::from(n) / f64::from(k) - 1.0).clamp(self.min, self.max)
    }

    pub fn echo(&self) -> Echo {
        Echo {
            round: self.round,
            round_ms: ROUND.as_millis() as u16,
            worst: self.this_round,
            fec_permille: (self.overhead(self.k) * 1000.0).round() as u16,
            rate_kbit: None,
            heard: Verdict::default(),
        }
    }

    /// Reports taken since the start.
    pub fn reports(&self) -> u64 {
        self.reports
    }
}

/// The hub's side: when to report its loss, and whether the echo already
/// says it.
#[derive(Clone, Debug)]
pub struct LossReporter {
    rng: ChaCha8Rng,
    /// The round the timer is for, and when it fires.
    pending: Option<(u32, Instant)>,
    /// The latest echo heard.
    echo: Option<Echo>,
    /// What this hub made of the last round, under `--rate auto`.
    verdict: Verdict,
    /// The last round this hub drew a timer in (or found the echo covering it).
    drawn: Option<u32>,
    pub sent: u64,
    pub suppressed: u64,
}

impl LossReporter {
    pub fn new(seed: u64) -> Self {
        LossReporter {
            rng: ChaCha8Rng::seed_from_u64(seed),
            pending: None,
            echo: None,
            verdict: Verdict::default(),
            drawn: None,
            sent: 0,
            suppressed: 0,
        }
    }

    /// A verified echo of the origin's multicast came. `loss`: this hub's
    /// loss now, whole percent, when it knows it and may report (it hears
    /// the origin and knows where to send); `verdict`: what it made of the
    /// last round ([`crate::rate::BehindMeter`]), said only when the echo
    /// shows a rate set by `--rate auto`. A new round draws the timer; so
    /// does the first echo after the hub learned its loss mid-round (a hub
    /// that just joined does not wait for the next round). A hub behind or
    /// congested answers first.
    pub fn handle_echo(&mut self, now: Instant, echo: Echo, loss: Option<u8>, verdict: Verdict) {
        self.echo = Some(echo);
        self.verdict = if echo.rate_kbit.is_some() { verdict } else { Verdict::default() };
        if self.drawn == Some(echo.round) {
            return;
        }
        self.pending = None;
        let Some(loss) = loss.filter(|l| *l > 0 || !self.verdict.is_clear()) else { return };
        self.drawn = Some(echo.round);
        if !self.says_more(echo, loss) {
            self.suppressed += 1;
            return;
        }
        let urgency = if self.verdict.is_clear() { loss } else { 100 };
        let window = Duration::from_millis(u64::from(echo.round_ms) / 2);
        self.pending = Some((echo.round, now + window.mul_f64(self.delay_share(urgency))));
    }

    /// The hub may know its loss now: draw the round's timer if the last
    /// echo's round has none yet (a hub that just joined, or just measured
    /// enough, does not wait for the next echo).
    pub fn handle_loss(&mut self, now: Instant, loss: Option<u8>) {
        if let Some(echo) = self.echo.filter(|e| self.drawn != Some(e.round) && loss.is_some()) {
            self.handle_echo(now, echo, loss, self.verdict);
        }
    }

    /// The report would tell the broadcaster something `echo` does not.
    fn says_more(&self, echo: Echo, loss: u8) -> bool {
        (loss > 0 && !covered(echo, loss)) || !self.verdict.covered_by(echo.heard)
    }

    /// The timer's share of the window: RFC 4654's `1 + log_N x` (x uniform
    /// in (0, 1]: most hubs late, a few early), with part of the window set
    /// by the loss, worst first.
    fn delay_share(&mut self, loss: u8) -> f64 {
        let x: f64 = 1.0 - self.rng.gen::<f64>(); // (0, 1]
        let chance = (1.0 + x.ln() / RECEIVERS_BOUND.ln()).max(0.0);
        let by_loss = 1.0 - f64::from(loss.min(100)) / 100.0;
        LOSS_BIAS * by_loss + (1.0 - LOSS_BIAS) * chance
    }

    /// When the report timer fires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|(_, at)| at)
    }

    /// The timer fired (or any later moment): the loss to report, whole
    /// percent, and the verdict, unless the round's echo covers both by now
    /// or the hub can no longer report (`loss` is `None`).
    pub fn handle_timeout(&mut self, now: Instant, loss: Option<u8>) -> Option<(u8, Verdict)> {
        let (round, at) = self.pending?;
        if now < at {
            return None;
        }
        self.pending = None;
        let loss = loss.filter(|l| *l > 0 || !self.verdict.is_clear())?;
        if self.echo.filter(|e| e.round == round).is_some_and(|e| !self.says_more(e, loss)) {
            self.suppressed += 1;
            return None;
        }
        self.sent += 1;
        Some((loss, self.verdict))
    }

    /// The latest echo heard.
    pub fn echo(&self) -> Option<Echo> {
        self.echo
    }
}

/// The echo's worst covers `loss`: within [`SUPPRESS_WITHIN`] points or a
/// tenth of it, whichever is more (RFC 4654 suppresses within 10%; at 50%
/// loss the figure a hub measures wanders by a few points).
fn covered(echo: Echo, loss: u8) -> bool {
    echo.worst.is_some_and(|w| loss <= w.saturating_add(SUPPRESS_WITHIN.max(w / 10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(round: u32, worst: Option<u8>) -> Echo {
        Echo {
            round,
            round_ms: ROUND.as_millis() as u16,
            worst,
            fec_permille: 0,
            rate_kbit: None,
            heard: Verdict::default(),
        }
    }

    #[test]
    fn the_fec_covers_the_worst_report_of_two_rounds_within_bounds() {
        let t0 = Instant::now();
        let mut c = FecControl::new(t0, 0.05, 0.5, 820);
        assert_eq!(c.overhead(820), 0.05);
        assert!(c.handle_report(t0, 20));
        assert!(!c.handle_report(t0, 10), "a better hub does not raise it");
        let at20 = c.overhead(820);
        // Receiving K of n at 20% loss with ~98% odds: n·0.8 − 2·√(n·0.16) ≥ K.
        assert!((0.27..0.31).contains(&at20), "{at20}");
        assert_eq!(c.echo().worst, Some(20));
        // The next round still holds it; so do rounds with no report at all,
        // up to HOLD_SILENT_ROUNDS of them, and then it goes.
        c.handle_timeout(t0 + ROUND);
        assert_eq!((c.echo().round, c.echo().worst, c.overhead(820)), (1, None, at20));
        c.handle_timeout(t0 + ROUND * (1 + HOLD_SILENT_ROUNDS));
        assert_eq!(c.overhead(820), at20, "silence is no news");
        c.handle_timeout(t0 + ROUND * (2 + HOLD_SILENT_ROUNDS));
        assert_eq!(c.overhead(820), 0.05);
        // A round that reports less lowers it the round after.
        let t = t0 + ROUND * (2 + HOLD_SILENT_ROUNDS);
        c.handle_report(t, 20);
        c.handle_timeout(t + ROUND);
        c.handle_report(t + ROUND, 5);
        assert_eq!(c.overhead(820), at20, "the last round's worst still counts");
        c.handle_timeout(t + ROUND * 2);
        assert!(c.overhead(820) < at20, "{}", c.overhead(820));
        // The operator's ceiling holds at any loss.
        c.handle_report(t + ROUND * 2, 100);
        assert_eq!(c.overhead(820), 0.5);
        let mut fixed = FecControl::new(t0, 0.1, 0.1, 820);
        fixed.handle_report(t0, 50);
        assert_eq!(fixed.overhead(820), 0.1);
    }

    #[test]
    fn a_hub_the_echo_covers_stays_quiet() {
        let t0 = Instant::now();
        let mut r = LossReporter::new(1);
        r.handle_echo(t0, echo(5, None), Some(20), Verdict::default());
        let at = r.poll_timeout().expect("a timer for the round");
        assert!(at <= t0 + ROUND / 2);
        // Another hub reported 21% meanwhile: the echo says so.
        r.handle_echo(t0, echo(5, Some(21)), Some(20), Verdict::default());
        assert_eq!(r.handle_timeout(at, Some(20)), None);
        assert_eq!((r.sent, r.suppressed), (0, 1));
        // Next round: no one has spoken; this hub does.
        r.handle_echo(at, echo(6, None), Some(20), Verdict::default());
        let at = r.poll_timeout().unwrap();
        assert_eq!(r.handle_timeout(at, Some(20)), Some((20, Verdict::default())));
        assert_eq!(r.sent, 1);
        // A hub that cannot report (no loss known) draws no timer, until it
        // knows its loss: then at the next echo of the same round.
        r.handle_echo(at, echo(7, None), None, Verdict::default());
        assert_eq!(r.poll_timeout(), None);
        r.handle_loss(at, Some(30));
        assert!(r.poll_timeout().is_some());
    }

    #[test]
    fn a_hub_behind_says_so_under_an_automatic_rate_unless_the_echo_does() {
        let t0 = Instant::now();
        let behind = Verdict { behind: true, congested: false };
        let auto = |round, worst, heard| Echo { rate_kbit: Some(200_000), heard, ..echo(round, worst) };
        let mut r = LossReporter::new(2);
        // Its loss is covered; being behind is not: it answers, and first.
        r.handle_echo(t0, auto(1, Some(30), Verdict::default()), Some(5), behind);
        let at = r.poll_timeout().expect("a timer");
        assert!(at <= t0 + ROUND / 2);
        assert_eq!(r.handle_timeout(at, Some(5)), Some((5, behind)));
        // With no loss at all, too.
        r.handle_echo(at, auto(2, None, Verdict::default()), Some(0), behind);
        let at = r.poll_timeout().expect("a timer");
        assert_eq!(r.handle_timeout(at, Some(0)), Some((0, behind)));
        // Another hub said it this round: quiet.
        r.handle_echo(at, auto(3, None, behind), Some(0), behind);
        assert_eq!(r.poll_timeout(), None);
        // A rate the operator fixed: the verdict is not the broadcaster's concern.
        r.handle_echo(at, echo(4, None), Some(0), behind);
        assert_eq!(r.poll_timeout(), None);
        assert_eq!((r.sent, r.suppressed), (2, 1));
    }

    /// RFC 4654's point: a crowd at like loss sends a handful of reports a
    /// round, and the worst hub's report is among them. 10,000 hubs; the echo
    /// (sent at once when a report raises the worst) reaches all of them
    /// `delay` after the report leaves: a round trip of 50 ms, as across a
    /// national network.
    #[test]
    fn ten_thousand_hubs_send_a_handful_of_reports_and_the_worst_is_heard() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(50);
        for (round, seed) in [(1u32, 11u64), (2, 12), (3, 13)] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let losses: Vec<u8> = (0..10_000).map(|_| rng.gen_range(15..=20)).collect();
            let mut hubs: Vec<LossReporter> =
                (0..losses.len() as u64).map(|i| LossReporter::new(seed * 100_000 + i)).collect();
            for (h, l) in hubs.iter_mut().zip(&losses) {
                h.handle_echo(t0, echo(round, None), Some(*l), Verdict::default());
            }
            // Timers in order; a report reaches the others `delay` later.
            let mut fires: Vec<(Instant, usize)> =
                hubs.iter().enumerate().filter_map(|(i, h)| h.poll_timeout().map(|t| (t, i))).collect();
            fires.sort();
            let mut heard: Vec<(Instant, u8)> = Vec::new();
            let mut reports = Vec::new();
            for (at, i) in fires {
                let worst = heard.iter().filter(|(t, _)| *t + delay <= at).map(|(_, l)| *l).max();
                hubs[i].handle_echo(at, echo(round, worst), Some(losses[i]), Verdict::default());
                if let Some((l, _)) = hubs[i].handle_timeout(at, Some(losses[i])) {
                    heard.push((at, l));
                    reports.push(l);
                }
            }
            let worst = *losses.iter().max().unwrap();
            assert!(reports.len() <= 20, "round {round}: {} reports of 10,000 hubs", reports.len());
            assert!(reports.iter().max() >= Some(&(worst - SUPPRESS_WITHIN)), "{reports:?}");
        }
    }
}
