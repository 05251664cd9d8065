//! The control law in a fluid model of a channel: 1,000 hubs, rounds of
//! [`crate::feedback::ROUND`], the real [`RateControl`], [`BehindMeter`] and
//! [`FecControl`]. Per round each hub receives a share of the datagrams (its
//! random loss, and a bottleneck if it has one), decodes what the FEC lets it,
//! and its peers repair the rest at most at its repair capacity; what is left
//! is its backlog.

use super::*;
use crate::feedback::{FecControl, ROUND};
use std::time::Instant;

const MBIT: f64 = 1e6 / 8.0;

#[derive(Clone, Copy)]
struct HubModel {
    /// Random loss, share.
    loss: f64,
    /// Datagrams it can take, bytes/s (a bottleneck on its path).
    cap: f64,
    /// What its peers can repair for it, bytes/s of content.
    repair: f64,
}

impl HubModel {
    const PLAIN: HubModel = HubModel { loss: 0.05, cap: f64::INFINITY, repair: 100.0 * MBIT };
}

/// Rates of each round, bytes/s, and the FEC of each round.
fn run(hubs: &[HubModel], rounds: usize, start_mbit: f64, max_mbit: f64) -> (Vec<f64>, Vec<f64>) {
    let t0 = Instant::now();
    let mut rate =
        RateControl::new((start_mbit * MBIT) as u64, (10.0 * MBIT) as u64, (max_mbit * MBIT) as u64);
    let mut fec = FecControl::new(t0, 0.05, 0.5, 820);
    let mut meters = vec![BehindMeter::default(); hubs.len()];
    let mut backlog = vec![0.0f64; hubs.len()];
    let dt = ROUND.as_secs_f64();
    let (mut rates, mut fecs) = (Vec::new(), Vec::new());
    // Hubs' verdicts at a round's end reach the broadcaster in the next round.
    let mut told = Verdict::default();
    for n in 0..rounds {
        let now = t0 + ROUND * n as u32;
        fec.handle_timeout(now);
        let r = rate.rate() as f64;
        let f = fec.overhead(820);
        rates.push(r);
        fecs.push(f);
        rate.handle_verdict(told);
        told = Verdict::default();
        let content = r / (1.0 + f);
        for (i, h) in hubs.iter().enumerate() {
            let got = (1.0 - h.loss) * (h.cap / r).min(1.0);
            let missed = content * (1.0 - (got * (1.0 + f)).min(1.0)) * dt;
            backlog[i] = (backlog[i] + missed - h.repair * dt).max(0.0);
            let loss = ((1.0 - got) * 100.0).round() as u8;
            let v = meters[i].end_round(backlog[i] as u64, Some(loss), false);
            (told.behind, told.congested) = (told.behind | v.behind, told.congested | v.congested);
            if let Some(l) = meters[i].fec_loss() {
                fec.handle_report(now, l);
            }
        }
        rate.end_round();
    }
    (rates, fecs)
}

/// Mean, and (max − min) ÷ mean, of the last `n` rounds.
fn settled(rates: &[f64], n: usize) -> (f64, f64) {
    let tail = &rates[rates.len() - n..];
    let mean = tail.iter().sum::<f64>() / n as f64;
    let (lo, hi) = tail.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    (mean, (hi - lo) / mean)
}

/// The content a hub misses per second at rate `r` and FEC `f`, bytes/s.
fn missed_per_sec(h: &HubModel, r: f64, f: f64) -> f64 {
    let got = (1.0 - h.loss) * (h.cap / r).min(1.0);
    r / (1.0 + f) * (1.0 - (got * (1.0 + f)).min(1.0))
}

/// The highest rate at which `h`'s peers repair all it misses, bytes/s.
fn sustained(h: &HubModel, f: f64) -> f64 {
    let (mut lo, mut hi) = (MBIT, 100_000.0 * MBIT);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if missed_per_sec(h, mid, f) <= h.repair {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// 1,000 hubs, one of them behind a path of 200 Mbit/s that no peer
/// repairs: the rate settles at that width, and the FEC stays what the
/// others' random loss needs.
#[test]
fn one_narrow_path_settles_the_rate_at_its_width_without_raising_the_fec() {
    let mut hubs = vec![HubModel::PLAIN; 1000];
    hubs[0] = HubModel { loss: 0.05, cap: 200.0 * MBIT, repair: 0.0 };
    let (rates, fecs) = run(&hubs, 150, 100.0, 2000.0);
    let (mean, swing) = settled(&rates, 60);
    let width = sustained(&hubs[0], *fecs.last().unwrap());
    println!(
        "narrow path: settled at {:.0} Mbit/s ({:.3} of what it takes, {:.0}), swing {:.2}, FEC {:.3}",
        mean / MBIT,
        mean / width,
        width / MBIT,
        swing,
        fecs.last().unwrap()
    );
    assert!((mean / width - 1.0).abs() <= 0.10, "{:.0} against {:.0}", mean / MBIT, width / MBIT);
    assert!(swing <= 0.20, "swing {swing:.2}");
    // Sized for 5%, not for the narrow path's loss above the rate it takes.
    assert!(fecs[fecs.len() - 60..].iter().all(|f| *f <= 0.12), "{:?}", &fecs[fecs.len() - 60..]);
    // Slow start ends a round after the rate passes the width, and the
    // overshoot is short: two rounds above 2 × the width at most.
    assert!(rates.iter().filter(|r| **r > 2.0 * width).count() <= 2, "{rates:?}");
}

/// One hub of 1,000 takes 100 Mbit/s of the multicast; its peers repair up
/// to 100 Mbit/s for it. The rate goes to what that repair sustains, not
/// down to the slow hub's width.
#[test]
fn a_slow_hub_its_peers_repair_does_not_drag_the_rate_down() {
    let mut hubs = vec![HubModel::PLAIN; 1000];
    hubs[0] = HubModel { loss: 0.05, cap: 100.0 * MBIT, repair: 100.0 * MBIT };
    let (rates, fecs) = run(&hubs, 150, 100.0, 2000.0);
    let (mean, swing) = settled(&rates, 60);
    let with_repair = sustained(&hubs[0], *fecs.last().unwrap());
    println!(
        "slow hub: settled at {:.0} Mbit/s ({:.3} of what its peers sustain, {:.0}; its own width 100), swing {:.2}",
        mean / MBIT,
        mean / with_repair,
        with_repair / MBIT,
        swing
    );
    assert!((mean / with_repair - 1.0).abs() <= 0.10, "{:.0} against {:.0}", mean / MBIT, with_repair / MBIT);
    assert!(mean >= 1.5 * 100.0 * MBIT);
    assert!(swing <= 0.20, "swing {swing:.2}");
}

/// Every hub loses 20% at random and nothing is narrow: the rate climbs to
/// `--rate-max` and stays there; the FEC covers the 20%.
#[test]
fn random_loss_alone_does_not_lower_the_rate() {
    let hubs = vec![HubModel { loss: 0.20, ..HubModel::PLAIN }; 1000];
    let (rates, fecs) = run(&hubs, 40, 100.0, 1000.0);
    let at_max = rates.iter().position(|r| *r >= 1000.0 * MBIT).expect("reaches the maximum");
    println!("20% random loss: at --rate-max after {at_max} rounds, FEC {:.3}", fecs.last().unwrap());
    assert!(rates[at_max..].iter().all(|r| *r == 1000.0 * MBIT), "{rates:?}");
    assert!(at_max <= 5, "slow start doubles: {at_max} rounds");
    assert!(*fecs.last().unwrap() > 0.25);
}

#[test]
fn the_rate_stays_within_its_bounds() {
    let mut c = RateControl::new(5, 10, 100);
    assert_eq!(c.rate(), 10, "the start is clamped");
    for _ in 0..10 {
        c.end_round();
    }
    assert_eq!(c.rate(), 100);
    for _ in 0..100 {
        c.handle_verdict(Verdict { behind: true, congested: false });
        c.end_round();
    }
    assert_eq!(c.rate(), 10);
    assert!(!c.in_slow_start());
}

#[test]
fn a_hubs_fec_loss_is_its_lowest_and_none_while_its_path_is_narrow() {
    let mut m = BehindMeter::default();
    assert_eq!(m.end_round(0, Some(20), false), Verdict::default());
    assert_eq!(m.fec_loss(), None, "one round says nothing");
    assert_eq!(m.end_round(0, Some(21), false), Verdict::default());
    assert_eq!(m.fec_loss(), Some(20));
    // The loss rises with the rate: congested, and the FEC is not asked to
    // cover it for BASELINE_ROUNDS.
    assert_eq!(m.end_round(0, Some(40), false), Verdict { behind: false, congested: true });
    // While the rounds at 20% are remembered, 40% is still a rise; then
    // BASELINE_ROUNDS more with none, and the loss is its own again.
    let mut rounds = 0;
    while m.fec_loss() == Some(0) {
        m.end_round(0, Some(40), false);
        rounds += 1;
        assert!(rounds <= 2 * BASELINE_ROUNDS, "the narrow path is forgotten");
    }
    assert_eq!(m.fec_loss(), Some(40));
    assert!(rounds > BASELINE_ROUNDS, "{rounds} rounds");
    // Behind: the backlog grows by GROWTH_MIN two rounds running; or the
    // receive path overflows.
    m.end_round(GROWTH_MIN, Some(40), false);
    assert!(m.end_round(2 * GROWTH_MIN, Some(40), false).behind);
    assert!(!m.end_round(2 * GROWTH_MIN, Some(40), false).behind);
    assert!(m.end_round(2 * GROWTH_MIN, Some(40), true).behind);
}
