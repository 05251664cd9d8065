//! One scan of the seeded paths made ready to send: the catalog built over
//! it, the carousel's objects (the catalog's, then the pushed files) and the
//! announced ones (on demand), each with its plan. A rescan that finds the
//! files changed makes the next generation, with a higher sequence number
//! and catalog version; a file that did not change keeps its object id, so
//! hubs keep what they hold of it.

use crate::config::SeedConfig;
use crate::ingest::SourceFile;
use crate::seed::SeedError;
use crate::unix_now;
use hubcast_keys::NodeAddr;
use hubcast_protocol::sender::ObjectPlan;
use hubcast_protocol::verify::Signer;
use hubcast_protocol::wire::{CatalogRoot, Manifest};

pub struct Generation {
    /// What the scan found, as it found it (a rescan compares against it).
    pub scanned: Vec<SourceFile>,
    /// The carousel's objects, in its order, and their plans.
    pub files: Vec<SourceFile>,
    pub plans: Vec<ObjectPlan>,
    /// On demand: announced, sent by the origin when hubs ask.
    pub announced_files: Vec<SourceFile>,
    pub announced: Vec<ObjectPlan>,
    pub catalog_root: CatalogRoot,
    /// The manifests' sequence number, and the catalog's version.
    pub seq: u64,
}

impl Generation {
    /// Build the catalog over `scanned` (written under the state folder) and
    /// plan every object; the manifests name `tracker`. The sequence number
    /// is the time in ms, above `after` (the generation before's).
    pub fn build(
        cfg: &SeedConfig,
        scanned: Vec<SourceFile>,
        tracker: Option<NodeAddr>,
        after: u64,
    ) -> Result<Generation, SeedError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let seq = now_ms.max(after + 1);
        let expiry = unix_now() + cfg.expiry_secs;
        // The catalog goes first: its index, then its pages, objects like the
        // files; its signed root goes with the manifests. Its version is the
        // manifests' sequence number: a restarted broadcaster's is higher.
        let catalog =
            crate::channel_catalog::build(&scanned, cfg.catalog.as_deref(), cfg.state_dir(), seq, expiry)?;
        let (announced_files, mut files): (Vec<SourceFile>, Vec<SourceFile>) =
            scanned.iter().cloned().partition(|f| f.on_demand);
        files.splice(0..0, catalog.files);
        let plan = |f: &SourceFile| {
            let mut p =
                ObjectPlan::new(f.name.clone(), f.id, f.size, cfg.chunk_size, cfg.symbol_size, seq, expiry);
            p.manifest.tracker = tracker;
            // The carousel never sends it: every round has passed it.
            (p.manifest.on_demand, p.manifest.round_end) = (f.on_demand, f.on_demand);
            p
        };
        let plans = files.iter().map(plan).collect();
        let announced = announced_files.iter().map(plan).collect();
        Ok(Generation { scanned, files, plans, announced_files, announced, catalog_root: catalog.root, seq })
    }

    /// The seeded files (not the catalog's own objects) and their bytes.
    pub fn seeded(&self) -> (usize, u64) {
        (self.scanned.len(), self.scanned.iter().map(|f| f.size).sum())
    }

    /// What the carousel mixes in: the carousel objects' manifests, the
    /// catalog's root, then the on-demand objects' manifests (the order the
    /// producer re-signs them in).
    pub fn manifests(&self, signer: &Signer) -> Vec<Vec<u8>> {
        self.mixed_in(signer, false, None)
    }

    /// What a lingering broadcaster repeats: the same, every carousel
    /// object's copy marked round end (the carousel has passed it), so hubs
    /// tell an idle channel from lost multicast and a late joiner learns
    /// what went by.
    /// Signed to expire at `expiry` (the generation may be older than a
    /// manifest's lifetime by the time the carousel is done).
    pub fn heartbeat(&self, signer: &Signer, expiry: u64) -> Vec<Vec<u8>> {
        self.mixed_in(signer, true, Some(expiry))
    }

    fn mixed_in(&self, signer: &Signer, passed: bool, expiry: Option<u64>) -> Vec<Vec<u8>> {
        let manifest = |p: &ObjectPlan, round_end: bool| {
            let m = &p.manifest;
            Manifest { round_end, expiry: expiry.unwrap_or(m.expiry), ..m.clone() }
        };
        let mut out: Vec<Vec<u8>> =
            self.plans.iter().map(|p| signer.manifest_datagram(&manifest(p, passed))).collect();
        let root = CatalogRoot { expiry: expiry.unwrap_or(self.catalog_root.expiry), ..self.catalog_root };
        out.push(signer.catalog_root_datagram(&root));
        out.extend(
            self.announced.iter().map(|p| signer.manifest_datagram(&manifest(p, p.manifest.round_end))),
        );
        out
    }

    /// Every object the origin service may resend, with its file.
    pub fn origin_objects(&self) -> (Vec<ObjectPlan>, Vec<SourceFile>) {
        let plans = self.plans.iter().chain(&self.announced).cloned().collect();
        let files = self.files.iter().chain(&self.announced_files).cloned().collect();
        (plans, files)
    }
}
