//! The stripe forest at the scale the issue names: 10,000 desert hubs, four
//! stripes, 30% of them failing over ten simulated minutes (and as many
//! joining). Its invariants hold at the end, and a failure costs messages in
//! proportion to the trees' height, and the trees stay within two levels of
//! the height the same hubs reach without churn. Every hub sends within one
//! stripe of what it receives, and no hub stays stalled longer than a parent's
//! replacement takes.

use hubcast_protocol::forest_sim::{run, ForestSimConfig};

#[test]
fn ten_thousand_hubs_with_churn_keep_every_invariant() {
    let r = run(&ForestSimConfig::new(10_000, 4, 0.3, 1));
    assert_eq!(r.invariant_violations, 0, "{r:?}");
    assert_eq!(r.hubs, 10_000);
    assert_eq!(r.failures, 3_000);
    // O(height): in each of its f trees a failure costs the orphans' notices
    // (f + 1 children at most), the heir's replacement, and updates up the
    // tree's height.
    let per_tree = u64::from(r.max_height) + 4 + 1;
    assert!(r.messages_per_failure_p50 <= 2 * 4 * per_tree, "{r:?}");
    assert!(r.messages_per_failure_p99 <= 5 * 4 * per_tree, "{r:?}");
    assert_eq!(r.special_nodes, 0, "{r:?}");
    // Stalls last only while a parent is replaced: the failure noticed (1 s),
    // the heir or the grandparent found, at worst a search from the root after
    // ORPHAN_RETRY (2 s), and the next once-a-second sample.
    assert!(r.longest_stall_seconds <= 5, "{r:?}");
    // Upload equals download, one stripe at most apart, for every hub.
    assert!(r.upload_download_max_gap_stripes <= 1, "{r:?}");
    assert!(f64::from(r.max_height) <= 2.0 * (10_000f64).ln() / 4f64.ln() + 2.0, "{r:?}");
    // Repairs hand subtrees back to their depth (the ripple): none sinks.
    let built = run(&ForestSimConfig::new(10_000, 4, 0.0, 1));
    assert!(r.max_height <= built.max_height + 2, "churned {r:?}\nbuilt {built:?}");
    eprintln!("{r:?}");
}
