//! `clienthub status --watch`: a running hub's progress, redrawn every
//! interval until Ctrl-C. On a terminal each object is a progress bar
//! (indicatif) under a line of totals; elsewhere (a log, a pipe) the plain
//! status is printed again each time.

use crate::status::human_bytes;
use crate::status_client::{get, progress_note, render};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

/// Poll `addr` every `interval`, forever.
pub fn watch(addr: SocketAddr, interval: Duration) -> ! {
    if !std::io::stdout().is_terminal() {
        loop {
            match fetch(addr) {
                Ok(v) => println!("{}", render(&v)),
                Err(e) => println!("{e}"),
            }
            std::thread::sleep(interval);
        }
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
    let header = multi.add(ProgressBar::new_spinner());
    header.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    loop {
        match fetch(addr) {
            Ok(v) => {
                header.set_message(totals(&v));
                for o in v["objects"].as_array().into_iter().flatten() {
                    let id = o["id"].as_str().unwrap_or_default().to_owned();
                    let bar = bars.entry(id).or_insert_with(|| multi.add(object_bar()));
                    draw(bar, o);
                }
            }
            Err(e) => header.set_message(e),
        }
        std::thread::sleep(interval);
    }
}

fn fetch(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let body = get(addr, "/api/status").map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("{addr} answered with no status: {e}"))
}

/// The line above the bars: where the bytes came from, and the feed.
fn totals(v: &serde_json::Value) -> String {
    let u = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let b = &v["bytes"];
    let objects = v["objects"].as_array().map_or(0, Vec::len);
    let complete = v["objects"].as_array().into_iter().flatten().filter(|o| o["complete"] == true).count();
    format!(
        "{} on {}: {complete}/{objects} objects complete; verified multicast {}, peer {}, origin {}, bridge {}; feed {}",
        &v["channel"].as_str().unwrap_or("?").chars().take(16).collect::<String>(),
        v["group"].as_str().unwrap_or("?"),
        human_bytes(u(&b["multicast"])),
        human_bytes(u(&b["peer"])),
        human_bytes(u(&b["origin"])),
        human_bytes(u(&b["bridge"])),
        v["feed"]["mode"].as_str().unwrap_or("?"),
    )
}

fn object_bar() -> ProgressBar {
    let bar = ProgressBar::new(1);
    let style = ProgressStyle::with_template("{prefix:40!} [{bar:25}] {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn draw(bar: &ProgressBar, o: &serde_json::Value) {
    let size = o["size"].as_u64().unwrap_or(0);
    bar.set_prefix(o["name"].as_str().unwrap_or("?").to_owned());
    bar.set_length(size.max(1));
    if o["complete"] == true {
        bar.set_position(size.max(1));
        bar.set_message(format!("complete, {}", human_bytes(size)));
    } else {
        bar.set_position(o["bytes_stored"].as_u64().unwrap_or(0));
        bar.set_message(progress_note(o));
    }
}
