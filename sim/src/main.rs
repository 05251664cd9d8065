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
    },
}

fn main() {
    match Cli::parse().command {
        Command::Forest { hubs, stripes, churn, seed, churn_secs } => {
            if !(2..=hubcast_protocol::forest::MAX_STRIPES).contains(&stripes)
                || !(0.0..=1.0).contains(&churn)
            {
                eprintln!("--stripes must be 2..=16 and --churn 0..=1");
                std::process::exit(2);
            }
            let mut cfg = ForestSimConfig::new(hubs, stripes, churn, seed);
            cfg.churn_secs = churn_secs;
            let started = Instant::now();
            let r = forest_sim::run(&cfg);
            println!(
                "{{\"hubs\":{},\"stripes\":{},\"churn\":{},\"seed\":{},\"max_height\":{},\"height_bound\":{:.1},\
                 \"invariant_violations\":{},\"upload_download_max_gap_stripes\":{},\"hubs_gap_over_one\":{},\
                 \"failures\":{},\"joins\":{},\"messages_per_failure_p50\":{},\"messages_per_failure_p99\":{},\
                 \"messages_per_join_p50\":{},\"stall_seconds_total\":{},\"longest_stall_seconds\":{},\"degraded_seconds_total\":{},\
                 \"special_nodes\":{},\"messages_total\":{},\"wall_seconds\":{:.2}}}",
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
                started.elapsed().as_secs_f64()
            );
        }
    }
}
