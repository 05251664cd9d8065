//! Process plumbing shared by the `broadcaster` and `clienthub` binaries:
//! logging, stop signals, settings files, and the units of rates and sizes. No protocol logic lives here.

mod bucket;
pub mod http_server;
pub mod units;

pub use bucket::Bucket;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Wall-clock milliseconds since the Unix epoch (0 before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log to stderr through `tracing`; `RUST_LOG` sets the filter (default `info`).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().init(),
    }
}

/// Run a binary's body: logging first, then `body`; an error is printed as one
/// line (our errors carry their causes in their text) and the process exits 1.
pub async fn run_main<E: std::fmt::Display>(
    format: LogFormat,
    body: impl std::future::Future<Output = Result<(), E>>,
) {
    init_logging(format);
    if let Err(e) = body.await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A token cancelled on SIGINT or SIGTERM, for a daemon's tasks to stop on.
pub fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    cancel
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd's stop).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading settings {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("settings {path}: {source} (the keys and defaults are in docs/OPERATIONS.md)")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// The settings in a TOML file, or the defaults when no file is given.
pub fn load_settings<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, SettingsError> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path)
        .map_err(|source| SettingsError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|source| SettingsError::Parse { path: path.to_owned(), source })
}

/// The media type a player expects, from the name's extension. MPEG-TS is
/// `video/mp2t` to players (HLS); mime_guess's table says a DLNA name.
pub fn content_type(name: &str) -> String {
    let ext = std::path::Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("ts") || ext.eq_ignore_ascii_case("m2ts") {
        return "video/mp2t".into();
    }
    mime_guess::from_path(name).first_or_octet_stream().essence_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct S {
        rate: u32,
    }

    #[test]
    fn settings_load_from_a_file_or_default_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "rate = 5\n").unwrap();
        assert_eq!(load_settings::<S>(Some(&p)).unwrap(), S { rate: 5 });
        assert_eq!(load_settings::<S>(None).unwrap(), S::default());
        std::fs::write(&p, "rat = 5\n").unwrap();
        let e = load_settings::<S>(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("s.toml") && e.contains("OPERATIONS.md"), "{e}");
        let missing = dir.path().join("missing.toml");
        assert!(load_settings::<S>(Some(&missing)).unwrap_err().to_string().contains("missing.toml"));
    }

    #[test]
    fn media_types_come_from_the_name() {
        assert_eq!(content_type("films/a film.mp4"), "video/mp4");
        assert_eq!(content_type("x.ts"), "video/mp2t");
        assert_eq!(content_type("notes.txt"), "text/plain");
        assert_eq!(content_type("live/seg.M2TS"), "video/mp2t");
        assert_eq!(content_type("no-extension"), "application/octet-stream");
    }
}
