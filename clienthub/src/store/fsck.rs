//! `clienthub fsck`: a stopped hub's store checked whole.

use super::{OpenReport, Store, StoreError};
use hubcast_protocol::ObjectId;
use std::io;
use std::path::Path;

/// What `clienthub fsck` found and did.
#[derive(Debug, Default)]
pub struct FsckReport {
    pub open: OpenReport,
    /// Chunks whose bytes were read and checked against their hashes.
    pub checked: u64,
    pub bytes: u64,
    /// Found damaged: dropped from the index.
    pub damaged: Vec<(ObjectId, u32)>,
}

/// Check a stopped hub's store: what [`Store::open`] does at every start
/// (missing chunk files dropped from the index, strays moved aside, orphans
/// removed), then every chunk read and checked against its hash, the damaged
/// dropped. The hub fetches every dropped chunk from peers when it starts.
pub fn fsck(dir: &Path) -> Result<FsckReport, StoreError> {
    if !dir.join("index.redb").is_file() {
        return Err(StoreError::Io {
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no hub store here (no index.redb)"),
        });
    }
    let (mut store, open) = Store::open(dir)?;
    let mut report = FsckReport { open, ..FsckReport::default() };
    let mut after = None;
    loop {
        let step = store.scrub(after, FSCK_STEP_BYTES)?;
        report.checked += step.checked;
        report.bytes += step.bytes;
        report.damaged.extend(step.lost.iter().map(|(id, i, _)| (*id, *i)));
        if step.done {
            return Ok(report);
        }
        after = step.last;
    }
}

/// Bytes `fsck` checks per index read (bounds the keys held at once).
const FSCK_STEP_BYTES: u64 = 1 << 30;
