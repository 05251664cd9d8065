//! A catalog of a million entries at a hub: what it costs to encode, parse
//! and store, the running hub's memory with it, and `/api/catalog`'s
//! latency, beside a plain scan of the same redb table (the building block)
//! in the same run.
//!
//! `cargo bench -p hubcast-tests --bench catalog`
//! (env: HUBCAST_BENCH_ENTRIES, default 1000000)
//!
//! The pages are made as the broadcaster makes them (256 KiB) and parsed
//! as the hub parses them; the store then holds them as a hub that
//! assembled them does, and a real `clienthub run` opens that store and
//! answers over HTTP. Memory: the hub's VmRSS and VmHWM (/proc/PID/status)
//! before and after the queries, and the same with an empty catalog.

use hubcast_clienthub::store::Store;
use hubcast_protocol::catalog::{self, Entry};
use hubcast_protocol::ObjectId;
use hubcast_tests::*;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn entries(n: usize) -> Vec<Entry> {
    let mut out: Vec<Entry> = (0..n)
        .map(|i| Entry {
            id: ObjectId(*blake3::hash(&(i as u64).to_be_bytes()).as_bytes()),
            name: format!("shows/s{:03}/episode-{i:07}.mp4", i % 500),
            size: 300 << 20,
            published: 1_765_000_000 + i as u64,
            on_demand: i % 3 == 0,
            content_type: "video/mp4".into(),
            title: format!("Episode {i} of show {}", i % 500),
            description: "An episode of a show, with a description as long as a guide's.".into(),
            tags: vec![format!("show-{}", i % 500), if i % 2 == 0 { "kids" } else { "news" }.into()],
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:") >> 10, kib("VmHWM:") >> 10)
}

/// Median and worst of `runs` requests of `path`, ms.
fn latency(http: std::net::SocketAddr, path: &str, runs: usize) -> Res<(f64, f64, usize)> {
    let mut ms = Vec::new();
    let mut items = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let body = hubcast_clienthub::status_client::get(http, path)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let v: serde_json::Value = serde_json::from_str(&body)?;
        items = v["items"].as_array().map_or(0, Vec::len);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[ms.len() - 1], items))
}

/// A hub on `store`, its HTTP address, once it answers.
fn hub(
    t: &std::path::Path,
    name: &str,
    store: &std::path::Path,
    fingerprint: &str,
) -> (Daemon, std::net::SocketAddr) {
    let http = free_port();
    let args = hub_args(fingerprint, unique_group(), store, &t.join(format!("out-{name}")), http);
    let hub = Daemon::spawn(name, &bin("clienthub"), &args, t);
    wait_for("the hub to answer", Duration::from_secs(120), || status(http));
    (hub, http)
}

fn main() -> Res<()> {
    let n: usize =
        std::env::var("HUBCAST_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let tmp = tempfile::tempdir()?;
    let t = tmp.path();
    let list = entries(n);

    let start = Instant::now();
    let pages = catalog::encode_pages(&list, 256 << 10);
    let encode = start.elapsed();
    let bytes: usize = pages.iter().map(Vec::len).sum();
    let start = Instant::now();
    let parsed: Vec<Vec<Entry>> = pages.iter().map(|p| catalog::decode_page(p)).collect::<Result<_, _>>()?;
    let parse = start.elapsed();
    assert_eq!(parsed.iter().map(Vec::len).sum::<usize>(), n);
    drop(list);

    let store_dir = t.join("store");
    let start = Instant::now();
    {
        let (mut store, _) = Store::open(&store_dir)?;
        let count = store.replace_catalog::<catalog::CatalogError>(1, parsed.into_iter().map(Ok))??;
        assert_eq!(count, n as u64);
    }
    let assemble = start.elapsed();
    let index_bytes = std::fs::metadata(store_dir.join("index.redb")).map_or(0, |m| m.len());

    // The building block: every row of the table read and decoded.
    let start = Instant::now();
    {
        let (store, _) = Store::open(&store_dir)?;
        let mut cursor: Option<String> = None;
        let mut rows = 0;
        loop {
            let (found, next) = store.catalog_scan(cursor.as_deref(), usize::MAX, |_| true)?;
            rows += found.len();
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(rows, n);
    }
    let scan = start.elapsed();

    let fingerprint = keygen(&t.join("keys"));
    let (empty_hub, empty_http) = hub(t, "hub-empty", &t.join("empty-store"), &fingerprint);
    let (big_hub, http) = hub(t, "hub-catalog", &store_dir, &fingerprint);
    std::thread::sleep(Duration::from_secs(1));
    let pid = big_hub.pid().ok_or("the hub with the catalog exited")?;
    let idle = memory(pid);
    let empty_idle = memory(empty_hub.pid().ok_or("the hub with no catalog exited")?);
    let middle = format!("shows/s250/episode-{:07}.mp4", n / 2);
    let queries = [
        ("first page of 50", "/api/catalog".to_owned()),
        (
            "500 from the middle",
            format!("/api/catalog?limit=500&cursor={}", hubcast_clienthub::get::percent_encode(&middle)),
        ),
        ("tag, 50", "/api/catalog?tag=show-7".to_owned()),
        (
            "search, its match past the 200,000 rows a page reads",
            format!("/api/catalog?q=episode%20{}%20of", n - 1),
        ),
        ("held=true (none)", "/api/catalog?held=true".to_owned()),
    ];
    println!("catalog of {n} entries: {} pages, {:.1} MiB", pages.len(), bytes as f64 / (1 << 20) as f64);
    println!(
        "encode {:.2} s ({:.0} ns/entry), parse {:.2} s ({:.0} ns/entry), store {:.2} s, index.redb {:.0} MiB",
        encode.as_secs_f64(),
        encode.as_nanos() as f64 / n as f64,
        parse.as_secs_f64(),
        parse.as_nanos() as f64 / n as f64,
        assemble.as_secs_f64(),
        index_bytes as f64 / (1 << 20) as f64
    );
    println!("baseline: a scan of every row of the table, decoded: {:.0} ms", scan.as_secs_f64() * 1e3);
    println!("| query | items | median ms | worst ms | median ÷ full scan |");
    println!("|---|---|---|---|---|");
    for (what, path) in &queries {
        let (median, worst, items) = latency(http, path, 20)?;
        println!(
            "| {what} | {items} | {median:.1} | {worst:.1} | {:.4} |",
            median / (scan.as_secs_f64() * 1e3)
        );
    }
    let after = memory(pid);
    let empty_after = memory(empty_hub.pid().ok_or("the hub with no catalog exited")?);
    latency(empty_http, "/api/catalog", 5)?;
    println!(
        "hub memory, MiB (RSS, peak): with the catalog idle {} / {}, after the queries {} / {}; \
         an empty catalog {} / {}, {} / {}",
        idle.0, idle.1, after.0, after.1, empty_idle.0, empty_idle.1, empty_after.0, empty_after.1
    );
    Ok(())
}
