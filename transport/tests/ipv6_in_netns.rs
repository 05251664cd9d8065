//! IPv6 multicast through our sockets. This host's loopback has no IPv6 multicast
//! route, so the test builds a throwaway network namespace with a veth pair and
//! re-runs itself inside it. Needs root and iproute2 (CI has both); without them
//! it says it was skipped.

use hubcast_transport::{multicast, Interface, MulticastConfig};
use std::process::Command;
use std::time::Duration;

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn an_ipv6_group_carries_datagrams_between_our_sockets() {
    if !is_root() || !ip(&["-V"]) {
        // CI runs as root with iproute2: there, a skip is a failure.
        assert!(
            std::env::var_os("HUBCAST_LAB_REQUIRED").is_none(),
            "HUBCAST_LAB_REQUIRED: needs root and iproute2"
        );
        eprintln!("SKIPPED: needs root and iproute2 to build a network namespace");
        return;
    }
    let ns = Namespace(format!("hcv6t{}", std::process::id()));
    let n = ns.0.as_str();
    assert!(ip(&["netns", "add", n]), "ip netns add");
    for args in [
        vec!["-n", n, "link", "set", "lo", "up"],
        vec!["-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        vec!["-n", n, "link", "set", "v0", "up"],
        vec!["-n", n, "link", "set", "v1", "up"],
        vec!["-n", n, "-6", "addr", "add", "fd00:4843::1/64", "dev", "v0", "nodad"],
    ] {
        assert!(ip(&args), "ip {args:?}");
    }
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("ip")
        .args(["netns", "exec", n])
        .arg(exe)
        .args(["--exact", "inside_namespace_ipv6_round_trip", "--ignored", "--nocapture"])
        .status()
        .expect("run the test inside the namespace");
    assert!(status.success(), "IPv6 multicast round trip failed inside the namespace");
}

#[test]
#[ignore = "run inside a namespace by an_ipv6_group_carries_datagrams_between_our_sockets"]
fn inside_namespace_ipv6_round_trip() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut cfg = MulticastConfig::new("[ff15::4843:1]:45102".parse().unwrap());
        cfg.interface = "v0".parse::<Interface>().unwrap();
        assert!(matches!(cfg.interface, Interface::V6Index(i) if i > 0));
        let r1 = multicast::receiver(&cfg).unwrap();
        let r2 = multicast::receiver(&cfg).unwrap();
        let s = multicast::sender(&cfg).unwrap();
        for i in 0u8..3 {
            s.send_to(&[i; 100], cfg.group).await.unwrap();
        }
        let mut buf = [0u8; 200];
        for r in [&r1, &r2] {
            for i in 0u8..3 {
                let n =
                    tokio::time::timeout(Duration::from_secs(5), r.recv(&mut buf)).await.unwrap().unwrap();
                assert_eq!(&buf[..n], &[i; 100][..]);
            }
        }
    });
}
