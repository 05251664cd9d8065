//! The stripe forest at the scale the issue names: 10,000 desert hubs, four
//! stripes, 30% of them failing over ten simulated minutes (and as many
//! joining). Its invariants hold at the end, and a failure costs messages in
//! proportion to the trees' height.

use hubcast_protocol::forest_sim::{run, ForestSimConfig};

#[test]
fn ten_thousand_hubs_with_churn_keep_every_invariant() {
    let r = run(&ForestSimConfig::new(10_000, 4, 0.3, 1));
    assert_eq!(r.invariant_violations, 0, "{r:?}");
    assert_eq!(r.hubs, 10_000);
    assert_eq!(r.failures, 3_000);
    // O(height): a failure's messages stay within a fixed multiple of it.
    assert!(r.messages_per_failure_p99 <= 20 * u64::from(r.max_height), "{r:?}");
    eprintln!("{r:?}");
}
