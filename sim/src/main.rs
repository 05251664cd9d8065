//! `hubcast-sim forest --hubs 10000 --stripes 4 --churn 0.3 --seed 1`: the
//! P2PCast stripe forest of desert hubs over a simulated network
//! (hubcast_protocol::forest_sim), deterministic for a seed. Prints one JSON
//! line with what the run measured.

use clap::{Parser, Subcommand};
use hubcast_protocol::forest_sim::{self, ForestSimConfig};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "hubcast-sim", version, about = "hubcast's protocols at scale, simulated")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a stripe forest of desert hubs, churn it, check its invariants.
    Forest {
        /// Hubs that join (and stay, on average).
        #[arg(long, default_value_t = 10_000)]
        hubs: usize,
        /// Stripes (trees), f.
        #[arg(long, default_value_t = 4)]
        stripes: u8,
        /// Share of the hubs that fail during the churn period (as many join).
        #[arg(long, default_value_t = 0.3)]
        churn: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Length of the churn period, simulated seconds.
        #[arg(long, default_value_t = 600)]
        churn_secs: u64,
        /// Share of the hubs' messages lost through the build and the churn.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Runs, with seeds `seed`, `seed + 1`, ...: one JSON line each. The
        /// exit status is 1 if any run broke an invariant.
        #[arg(long, default_value_t = 1)]
        runs: u64,
    },
}

fn main() {
    match Cli::parse().command {
        Command::Forest { hubs, stripes, churn, seed, churn_secs, loss, runs } => {
            if !(2..=hubcast_protocol::forest::MAX_STRIPES).contains(&stripes)
                || !(0.0..=1.0).contains(&churn)
                || !(0.0..1.0).contains(&loss)
            {
                eprintln!("--stripes must be 2..=16, --churn 0..=1 and --loss 0..1");
                std::process::exit(2);
            }
            let mut broken = false;
            for seed in seed..seed + runs {
                let cfg =
                    ForestSimConfig { churn_secs, loss, ..ForestSimConfig::new(hubs, stripes, churn, seed) };
                broken |= forest(&cfg);
            }
            std::process::exit(i32::from(broken));
        }
    }
}

/// One run, printed as a JSON line; whether it broke an invariant.
fn forest(cfg: &ForestSimConfig) -> bool {
    let (hubs, stripes, churn, seed) = (cfg.hubs, cfg.stripes, cfg.churn, cfg.seed);
    let started = Instant::now();
    let r = forest_sim::run(cfg);
    println!(
                "{{\"hubs\":{},\"stripes\":{},\"churn\":{},\"seed\":{},\"max_height\":{},\"height_bound\":{:.1},\
                 \"invariant_violations\":{},\"upload_download_max_gap_stripes\":{},\"hubs_gap_over_one\":{},\
                 \"failures\":{},\"joins\":{},\"messages_per_failure_p50\":{},\"messages_per_failure_p99\":{},\
                 \"messages_per_join_p50\":{},\"stall_seconds_total\":{},\"longest_stall_seconds\":{},\"degraded_seconds_total\":{},\
                 \"special_nodes\":{},\"messages_total\":{},\"loss\":{},\"messages_lost\":{},\"samples\":{},\
                 \"safety_violations\":{},\"longest_loop_seconds\":{},\"starved\":{},\"stripe_mismatches\":{},\
                 \"wall_seconds\":{:.2}}}",
                r.hubs,
                r.stripes,
                churn,
                seed,
                r.max_height,
                2.0 * (hubs.max(2) as f64).ln() / f64::from(stripes).ln() + 2.0,
                r.invariant_violations,
                r.upload_download_max_gap_stripes,
                r.hubs_gap_over_one,
                r.failures,
                r.joins,
                r.messages_per_failure_p50,
                r.messages_per_failure_p99,
                r.messages_per_join_p50,
                r.stall_seconds_total,
                r.longest_stall_seconds,
                r.degraded_seconds_total,
                r.special_nodes,
                r.messages_total,
                cfg.loss,
                r.messages_lost,
                r.samples,
                r.safety_violations,
                r.longest_loop_seconds,
                r.starved,
                r.stripe_mismatches,
                started.elapsed().as_secs_f64()
            );
    // Loops on lossy links are broken by the watchdog; on clean links
    // none may form.
    r.invariant_violations > 0 || (cfg.loss == 0.0 && r.safety_violations > 0)
}
