//! `clienthub status`: fetch a running hub's `/api/status` and show it.
//! A plain HTTP/1.1 GET over loopback; the hub's listener is local by design.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StatusClientError {
    #[error("no hub answers on {0}: is `clienthub run --http {0}` running? ({1})")]
    Connect(SocketAddr, std::io::Error),
    #[error("reading the answer from {0}: {1}")]
    Read(SocketAddr, std::io::Error),
    #[error("{0} did not answer with a hubcast status ({1})")]
    BadAnswer(SocketAddr, String),
    #[error("--http `{0}`: give the hub's --http address: 127.0.0.1:8080, localhost:8080 or http://localhost:8080/ ({1})")]
    BadTarget(String, String),
}

/// The port a hub's HTTP listener is usually given.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Where `clienthub status --http` points: `host:port`, a host alone (port
/// 8080), or a URL (`http://host:port/...`; the path is ignored). A name is
/// resolved; the first address is taken.
pub fn resolve_target(target: &str) -> Result<SocketAddr, StatusClientError> {
    let bad = |why: &str| StatusClientError::BadTarget(target.to_owned(), why.to_owned());
    let rest = target.trim();
    let rest = match rest.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("the hub speaks http, not {scheme}"))),
        None => rest,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A bare IPv6 address, or a host without a port.
    let with_port = match authority.parse::<std::net::IpAddr>() {
        Ok(ip) => return Ok(SocketAddr::new(ip, DEFAULT_HTTP_PORT)),
        Err(_) if authority.contains(':') => authority.to_owned(),
        Err(_) => format!("{authority}:{DEFAULT_HTTP_PORT}"),
    };
    use std::net::ToSocketAddrs;
    let mut addrs = with_port.to_socket_addrs().map_err(|e| bad(&e.to_string()))?;
    addrs.next().ok_or_else(|| bad("the name has no address"))
}

/// GET `path` from `addr`; returns the body of a 200 answer.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, StatusClientError> {
    let mut s = hubcast_transport::tcp::connect(addr, Duration::from_secs(5))
        .map_err(|e| StatusClientError::Connect(addr, e))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .map_err(|e| StatusClientError::Connect(addr, e))?;
    let mut raw = Vec::new();
    s.take(64 << 20).read_to_end(&mut raw).map_err(|e| StatusClientError::Read(addr, e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| StatusClientError::BadAnswer(addr, "no headers".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(StatusClientError::BadAnswer(addr, head.lines().next().unwrap_or("").into()));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn a_url_host_port_or_hostname_all_name_the_hub() {
        let at = |s: &str| resolve_target(s).map(|a| a.to_string());
        assert_eq!(at("127.0.0.1:18771").unwrap(), "127.0.0.1:18771");
        assert_eq!(at("http://127.0.0.1:18771/").unwrap(), "127.0.0.1:18771");
        assert_eq!(at("http://127.0.0.1:18771/api/status").unwrap(), "127.0.0.1:18771");
        assert_eq!(at("127.0.0.1").unwrap(), "127.0.0.1:8080");
        assert_eq!(at("[::1]:9000").unwrap(), "[::1]:9000");
        let local = at("localhost:18771").unwrap();
        assert!(local == "127.0.0.1:18771" || local == "[::1]:18771", "{local}");
        assert!(at("http://localhost").unwrap().ends_with(":8080"));
        assert!(matches!(resolve_target("https://x:1"), Err(StatusClientError::BadTarget(..))));
        assert!(matches!(resolve_target("http:///"), Err(StatusClientError::BadTarget(..))));
    }
}

/// An incomplete object's progress: `45.0%, 2.1 MiB/s, 12 s left, by
/// multicast 5 peer 2`.
pub fn progress_note(o: &serde_json::Value) -> String {
    use crate::status::{human_bytes, human_secs};
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let by = &o["completed_by"];
    let sources: Vec<String> = ["multicast", "peer", "origin", "bridge"]
        .iter()
        .filter(|k| u(&by[**k]) > 0)
        .map(|k| format!("{k} {}", u(&by[*k])))
        .collect();
    let mut note = format!("{:.1}%", o["percent"].as_f64().unwrap_or(0.0));
    if u(&o["rate_bytes_per_sec"]) > 0 {
        note += &format!(", {}/s", human_bytes(u(&o["rate_bytes_per_sec"])));
    }
    if let Some(eta) = o["eta_secs"].as_u64() {
        note += &format!(", {} left", human_secs(eta));
    }
    if !sources.is_empty() {
        note += &format!(", by {}", sources.join(" "));
    }
    note
}

/// A human-readable view of a status JSON.
pub fn render(status: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let b = &status["bytes"];
    let _ = writeln!(out, "node {}", status["node_id"].as_str().unwrap_or("?"));
    let _ = writeln!(
        out,
        "channel {}  group {}",
        status["channel"].as_str().unwrap_or("?"),
        status["group"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "verified bytes: multicast {}  peer {}  origin {}  bridge {}",
        u(&b["multicast"]),
        u(&b["peer"]),
        u(&b["origin"]),
        u(&b["bridge"])
    );
    let t = &status["tracker"];
    let _ = match (t["addr"].as_str(), t["from"].as_str()) {
        (Some(addr), Some("manifest")) => writeln!(out, "tracker {addr} (named by the channel's manifests)"),
        (Some(addr), _) => writeln!(out, "tracker {addr} (--tracker)"),
        _ => writeln!(out, "tracker: none known yet (no manifest named one; --tracker sets it)"),
    };
    let f = &status["feed"];
    let _ = match (f["mode"].as_str(), f["bridge"].as_str()) {
        (Some("bridge"), Some(bridge)) => writeln!(out, "feed: from bridge {bridge} (no multicast heard)"),
        (Some("searching"), _) => {
            writeln!(
                out,
                "feed: no multicast heard, looking for a bridge (--bridge-peer, or the tracker's list)"
            )
        }
        _ => writeln!(out, "feed: multicast"),
    };
    if u(&f["subscriptions"]) + u(&f["refused"]) + u(&f["strikes"]) + u(&f["remulticast_bytes"]) > 0 {
        let _ = writeln!(
            out,
            "      subscriptions {}  ended {}  refused {}  strikes {}  bridges left {}  relayed on the LAN {} B",
            u(&f["subscriptions"]),
            u(&f["ended"]),
            u(&f["refused"]),
            u(&f["strikes"]),
            u(&f["bridges_banned"]),
            u(&f["remulticast_bytes"])
        );
    }
    let br = &status["bridge"];
    if br.is_object() {
        let _ = writeln!(
            out,
            "bridge: {}  subscribers {}  fed {} B  refused busy {}  back buffer {} chunks",
            if br["live"] == true {
                "serving"
            } else {
                "not serving (fed by a bridge, or never heard the channel)"
            },
            u(&br["subscribers"]),
            u(&br["fed_bytes"]),
            u(&br["refused_busy"]),
            u(&br["back_buffer_chunks"])
        );
    }
    let d = &status["datagrams"];
    let _ = writeln!(
        out,
        "datagrams: received {}  simulated loss {}  symbols verified {}",
        u(&d["received"]),
        u(&d["simulated_loss"]),
        u(&d["symbols_accepted"])
    );
    for c in status["live"].as_array().into_iter().flatten() {
        let ms = |v: &serde_json::Value| v.as_u64().map_or("-".into(), |n| format!("{n} ms"));
        let _ = writeln!(
            out,
            "live {}: segment {}  ready {} ({:.0} s)  on time {}  late {}  missed {}  latency p50 {} p99 {}",
            c["name"].as_str().unwrap_or("?"),
            u(&c["newest_seq"]),
            u(&c["segments_ready"]),
            c["buffered_secs"].as_f64().unwrap_or(0.0),
            u(&c["on_time"]),
            u(&c["late"]),
            u(&c["missed"]),
            ms(&c["latency_p50_ms"]),
            ms(&c["latency_p99_ms"]),
        );
    }
    let _ = writeln!(out, "{:<40} {:>12} {:>11}  state", "object", "bytes", "chunks");
    for o in status["objects"].as_array().into_iter().flatten() {
        let state = match (o["complete"].as_bool(), o["exported"].as_str()) {
            (Some(true), Some(p)) => format!("complete -> {p}"),
            (Some(true), None) => "complete".into(),
            _ => format!("receiving {}", progress_note(o)),
        };
        let chunks = format!("{}/{}", u(&o["chunks_stored"]), u(&o["chunks"]));
        let _ = writeln!(
            out,
            "{:<40} {:>12} {:>11}  {}",
            o["name"].as_str().unwrap_or("?"),
            u(&o["size"]),
            chunks,
            state
        );
    }
    let peers = status["peers"].as_array().map_or(&[][..], |p| p.as_slice());
    if !peers.is_empty() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<7} {:>8} {:>12} {:>12}  state",
            "peer", "addr", "via", "rtt", "from", "to"
        );
        for p in peers {
            let id = p["node_id"].as_str().unwrap_or("?");
            let rtt = p["rtt_ms"].as_f64().map_or("-".into(), |r| format!("{r:.1} ms"));
            let state = match (p["banned"].as_bool(), u(&p["strikes"])) {
                (Some(true), s) => format!("banned ({s} strikes)"),
                (_, 0) => "ok".into(),
                (_, s) => format!("{s} strikes"),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:<7} {:>8} {:>12} {:>12}  {}",
                id.get(..16).unwrap_or(id),
                p["addr"].as_str().unwrap_or("?"),
                p["via"].as_str().unwrap_or("?"),
                rtt,
                u(&p["bytes_from"]),
                u(&p["bytes_to"]),
                state
            );
        }
    }
    let harmful: Vec<String> = status["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| u(v) > 0 && *k != "duplicate" && *k != "already_complete")
        .map(|(k, v)| format!("{k}={}", u(v)))
        .collect();
    if !harmful.is_empty() {
        let _ = writeln!(out, "dropped: {}", harmful.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_says_where_the_feed_comes_from_and_what_a_bridge_serves() {
        let mut s = serde_json::to_value(crate::status::HubStatus::default()).unwrap();
        assert!(render(&s).contains("feed: multicast"));
        s["feed"]["mode"] = "bridge".into();
        s["feed"]["bridge"] = "ab12@10.0.0.1:4433".into();
        s["feed"]["subscriptions"] = 2.into();
        s["bridge"] = serde_json::json!({"live": true, "subscribers": 3, "fed_bytes": 99, "refused_busy": 1, "back_buffer_chunks": 7});
        let text = render(&s);
        assert!(text.contains("feed: from bridge ab12@10.0.0.1:4433"), "{text}");
        assert!(text.contains("subscriptions 2"), "{text}");
        assert!(text.contains("bridge: serving  subscribers 3  fed 99 B"), "{text}");
        s["live"] = serde_json::json!([{"name": "news", "newest_seq": 41, "segments_ready": 30, "buffered_secs": 30.0,
            "on_time": 40, "late": 1, "missed": 0, "latency_p50_ms": 4, "latency_p99_ms": null}]);
        let text = render(&s);
        assert!(text.contains("live news: segment 41  ready 30 (30 s)  on time 40  late 1  missed 0  latency p50 4 ms p99 -"), "{text}");
    }
}
