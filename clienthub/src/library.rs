//! The channel's catalog at the hub, on the store worker's side: the signed
//! root kept, its index and pages assembled once they are all stored, and
//! the entries queried for `/api/catalog`.
//!
//! What is trusted chains to the root's signature: the index must be the
//! object the root names (its id binds its name and content), each page
//! the object the index names. A catalog object that does not check out is
//! logged and counted, and the catalog stays as it was.

use crate::status::StatusBoard;
use crate::store::Store;
use hubcast_protocol::catalog::{self, CatalogError, Entry, PageRef};
use hubcast_protocol::wire::{CatalogRoot, Manifest};
use hubcast_protocol::ObjectId;
use std::collections::HashMap;
use tracing::{info, warn};

/// Why a catalog version could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("catalog object {0}: {1}")]
    Bad(ObjectId, CatalogError),
    #[error("catalog object {0} does not match its id (name or content)")]
    Mismatch(ObjectId),
    #[error("the catalog's index does not agree with its root ({0})")]
    Disagrees(&'static str),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A query of the catalog (`/api/catalog`).
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Words that must all appear in the name, title or description (any case).
    pub q: Option<String>,
    /// A tag the entry must carry.
    pub tag: Option<String>,
    /// Only entries this hub holds complete (`true`) or does not (`false`).
    pub held: Option<bool>,
    /// The name the previous page ended at.
    pub cursor: Option<String>,
    pub limit: usize,
}

/// What a query found.
#[derive(Debug, serde::Serialize)]
pub struct Found {
    pub version: u64,
    /// Entries in the whole catalog.
    pub entries: u64,
    pub items: Vec<Item>,
    /// Pass as `cursor` for the next page; none at the end.
    pub next: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub published: u64,
    pub on_demand: bool,
    pub content_type: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    /// This hub holds it complete.
    pub held: bool,
}

/// Entries a query returns at most.
pub const MAX_LIMIT: usize = 500;

#[derive(Default)]
pub struct Library {
    /// The newest root verified, whose version is not assembled yet.
    pending: Option<CatalogRoot>,
    /// Its index, once read.
    index: Option<Vec<PageRef>>,
    /// The version assembled, and its entries.
    version: u64,
    entries: u64,
    /// `--keep tagged`: the tags whose pushed objects the hub takes.
    tags: Option<Vec<String>>,
}

impl Library {
    /// The catalog the store holds, shown in the status.
    pub fn open(store: &Store, status: &StatusBoard, tags: Option<Vec<String>>) -> Library {
        let (version, entries) = store.catalog_version().unwrap_or_default();
        status.with_catalog(|c| (c.version, c.entries) = (version, entries));
        Library { version, entries, tags, ..Library::default() }
    }

    /// With `--keep tagged`: the pushed objects the catalog's entries with
    /// one of the tags name, less those evicted (taken again only when
    /// asked). `None` without `--keep tagged`, or when the store fails.
    pub fn chosen(&self, store: &Store) -> Option<Vec<ObjectId>> {
        let tags = self.tags.as_ref()?;
        let evicted: std::collections::HashSet<ObjectId> = store.evicted().ok()?.into_iter().collect();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let picks = |e: &Entry| {
                !e.on_demand && !evicted.contains(&e.id) && e.tags.iter().any(|t| tags.contains(t))
            };
            let (found, next) = store.catalog_scan(cursor.as_deref(), usize::MAX, picks).ok()?;
            out.extend(found.into_iter().map(|e| e.id));
            match next {
                Some(n) => cursor = Some(n),
                None => return Some(out),
            }
        }
    }

    /// A root newer than the one held: kept in the store, then assembled
    /// when its objects are all there. True when a new version is the
    /// catalog now.
    pub fn on_root(
        &mut self,
        store: &mut Store,
        status: &StatusBoard,
        root: CatalogRoot,
        datagram: &[u8],
        manifests: &mut HashMap<ObjectId, Manifest>,
    ) -> bool {
        if let Err(e) = store.put_catalog_root(datagram, hubcast_daemon::unix_ms() / 1000) {
            warn!("the catalog's root could not be stored: {e}");
        }
        if root.version <= self.version {
            return false;
        }
        (self.pending, self.index) = (Some(root), None);
        self.try_assemble(store, status, manifests)
    }

    /// A catalog object completed: perhaps the last one the pending version
    /// waited for. True when a new version is the catalog now.
    pub fn on_object(
        &mut self,
        store: &mut Store,
        status: &StatusBoard,
        manifests: &mut HashMap<ObjectId, Manifest>,
    ) -> bool {
        self.try_assemble(store, status, manifests)
    }

    fn try_assemble(
        &mut self,
        store: &mut Store,
        status: &StatusBoard,
        manifests: &mut HashMap<ObjectId, Manifest>,
    ) -> bool {
        let Some(root) = self.pending else { return false };
        match self.assemble(store, root, manifests) {
            Ok(false) => false,
            Ok(true) => {
                self.pending = None;
                self.index = None;
                status.with_catalog(|c| (c.version, c.entries) = (self.version, self.entries));
                info!(version = self.version, entries = self.entries, "the channel's catalog is up to date");
                remove_older_catalogs(store, manifests, self.version);
                true
            }
            Err(e) => {
                // The root stays pending: a damaged chunk is fetched again
                // and this is tried at the next catalog object.
                status.with_catalog(|c| c.refused += 1);
                warn!(version = root.version, "the catalog could not be assembled: {e}");
                self.index = None;
                false
            }
        }
    }

    /// `Ok(true)` once version `root.version` is the catalog; `Ok(false)`
    /// while objects of it are missing.
    fn assemble(
        &mut self,
        store: &mut Store,
        root: CatalogRoot,
        manifests: &HashMap<ObjectId, Manifest>,
    ) -> Result<bool, AssembleError> {
        if self.index.is_none() {
            let name = catalog::index_name(root.version);
            let Some(bytes) = read_object(store, manifests, root.index_id, &name, catalog::MAX_INDEX_BYTES)?
            else {
                return Ok(false);
            };
            let pages = catalog::decode_index(&bytes).map_err(|e| AssembleError::Bad(root.index_id, e))?;
            let entries: u64 = pages.iter().map(|p| u64::from(p.entries)).sum();
            if pages.len() != root.pages as usize || entries != root.entries {
                return Err(AssembleError::Disagrees("page or entry count"));
            }
            self.index = Some(pages);
        }
        let Some(pages) = self.index.as_ref() else { return Ok(false) };
        let held = |(i, p): (usize, &PageRef)| {
            manifests
                .get(&p.id)
                .is_some_and(|m| m.name == catalog::page_name(root.version, i) && store.is_complete(m))
        };
        if !pages.iter().enumerate().all(held) {
            return Ok(false);
        }
        let pages = pages.clone();
        let mut last: Option<String> = None;
        let mut read = pages.iter().enumerate().map(|(i, p)| {
            let name = catalog::page_name(root.version, i);
            let bytes = read_object(store, manifests, p.id, &name, catalog::MAX_PAGE_BYTES)?
                .ok_or(AssembleError::Disagrees("a page went missing"))?;
            let entries = catalog::decode_page(&bytes).map_err(|e| AssembleError::Bad(p.id, e))?;
            if entries.len() != p.entries as usize {
                return Err(AssembleError::Disagrees("a page's entry count"));
            }
            // Names rise across pages too: one name, one entry.
            if last.as_ref().zip(entries.first()).is_some_and(|(l, f)| *l >= f.name) {
                return Err(AssembleError::Bad(p.id, CatalogError::Unordered));
            }
            last = entries.last().map(|e| e.name.clone());
            Ok(entries)
        });
        // Read through a store borrowed apart from the write: pages are read
        // first, a page at a time, then written in one commit.
        let mut all = Vec::new();
        for page in &mut read {
            all.push(page?);
        }
        let count = store.replace_catalog::<AssembleError>(root.version, all.into_iter().map(Ok))??;
        (self.version, self.entries) = (root.version, count);
        Ok(true)
    }

    /// Entries that match `query`, with whether this hub holds each.
    pub fn query(
        &self,
        store: &Store,
        status: &StatusBoard,
        query: &Query,
    ) -> Result<Found, crate::store::StoreError> {
        let words: Vec<String> =
            query.q.as_deref().unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
        let held = |id: &ObjectId| status.object(id).is_some_and(|o| o.complete);
        let keep = |e: &Entry| {
            let text = || format!("{}\n{}\n{}", e.name, e.title, e.description).to_lowercase();
            (words.is_empty() || {
                let t = text();
                words.iter().all(|w| t.contains(w.as_str()))
            }) && query.tag.as_ref().is_none_or(|t| e.tags.iter().any(|x| x == t))
                && query.held.is_none_or(|h| held(&e.id) == h)
        };
        let limit = query.limit.clamp(1, MAX_LIMIT);
        let (entries, next) = store.catalog_scan(query.cursor.as_deref(), limit, keep)?;
        let items = entries
            .into_iter()
            .map(|e| Item {
                id: e.id.to_hex(),
                held: held(&e.id),
                name: e.name,
                size: e.size,
                published: e.published,
                on_demand: e.on_demand,
                content_type: e.content_type,
                title: e.title,
                description: e.description,
                tags: e.tags,
            })
            .collect();
        Ok(Found { version: self.version, entries: self.entries, items, next })
    }
}

/// A catalog object's bytes, checked against its id, if it is stored whole.
fn read_object(
    store: &mut Store,
    manifests: &HashMap<ObjectId, Manifest>,
    id: ObjectId,
    name: &str,
    max: usize,
) -> Result<Option<Vec<u8>>, AssembleError> {
    let Some(m) = manifests.get(&id) else { return Ok(None) };
    if m.name != name || m.size > max as u64 {
        return Err(AssembleError::Mismatch(id));
    }
    if !store.is_complete(m) {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(m.size as usize);
    for index in 0..hubcast_protocol::sender::chunk_count(m.size, m.chunk_size) {
        match store.read_chunk(&id, index)? {
            Some(chunk) => bytes.extend_from_slice(&chunk),
            // Found damaged: dropped, and fetched again.
            None => return Ok(None),
        }
    }
    if ObjectId::archive(name, blake3::hash(&bytes).as_bytes()) != id {
        return Err(AssembleError::Mismatch(id));
    }
    Ok(Some(bytes))
}

/// The objects of catalogs older than `version`: no longer needed.
fn remove_older_catalogs(store: &mut Store, manifests: &mut HashMap<ObjectId, Manifest>, version: u64) {
    let prefix = format!("{}{version}/", catalog::CATALOG_PREFIX);
    let old: Vec<ObjectId> = manifests
        .values()
        .filter(|m| catalog::is_catalog_name(&m.name) && !m.name.starts_with(&prefix))
        .map(|m| m.object_id)
        .collect();
    for id in old {
        match store.remove_object(&id) {
            Ok(()) => {
                manifests.remove(&id);
            }
            Err(e) => warn!(object = %id, "an old catalog object could not be removed: {e}"),
        }
    }
}
