//! The channel's catalog at the broadcaster (`hubcast_protocol::catalog`):
//! an entry for every seeded file, with its metadata from `--catalog FILE`
//! (or what the file itself says: its name, type and time), paged, written
//! under the state directory as objects of the channel, and a root to sign.
//!
//! The metadata file (TOML), one `[[item]]` per file, by its name in the
//! channel (as the hubs list it):
//!
//! ```toml
//! [[item]]
//! path = "films/a film.mp4"
//! title = "A film"
//! description = "What it is about."
//! tags = ["film", "kids"]
//! content_type = "video/mp4"   # default: from the name's extension
//! ```

use crate::ingest::SourceFile;
use hubcast_protocol::catalog::{self, Entry, PageRef};
use hubcast_protocol::wire::CatalogRoot;
use hubcast_protocol::ObjectId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tracing::warn;

/// A page's bytes, at most, as the broadcaster cuts them: a quarter of a
/// 1 MiB chunk, so that a hub reading one page reads one chunk.
pub const PAGE_BYTES: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
pub enum CatalogBuildError {
    #[error("--catalog {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--catalog {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("--catalog: the item for `{name}` does not fit the catalog's limits (title ≤ 300 bytes, description ≤ 4000, ≤ 16 tags of ≤ 64 bytes, a content type of printable ASCII): {source}")]
    Limits {
        name: String,
        #[source]
        source: catalog::CatalogError,
    },
    #[error("writing the catalog under {path}: {source} (is --state-dir writable?)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    #[serde(default)]
    item: Vec<MetaItem>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaItem {
    path: String,
    title: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    content_type: Option<String>,
}

/// A catalog ready to send: its objects (the index first) and its root.
pub struct Built {
    pub files: Vec<SourceFile>,
    pub root: CatalogRoot,
}

/// The catalog of `files`, version `version`, its objects written under
/// `state/catalog/VERSION/` (older versions' folders removed).
pub fn build(
    files: &[SourceFile],
    meta: Option<&Path>,
    state: &Path,
    version: u64,
    expiry: u64,
) -> Result<Built, CatalogBuildError> {
    let mut meta = read_meta(meta)?;
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        let m = meta.remove(&f.name);
        let published = std::fs::metadata(&f.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let last_part = f.name.rsplit('/').next().unwrap_or(&f.name).to_owned();
        let e = Entry {
            id: f.id,
            name: f.name.clone(),
            size: f.size,
            published,
            on_demand: f.on_demand,
            content_type: m
                .as_ref()
                .and_then(|m| m.content_type.clone())
                .unwrap_or_else(|| hubcast_daemon::content_type(&f.name)),
            title: m.as_ref().and_then(|m| m.title.clone()).unwrap_or(last_part),
            description: m.as_ref().and_then(|m| m.description.clone()).unwrap_or_default(),
            tags: m.map(|m| m.tags).unwrap_or_default(),
        };
        e.check().map_err(|source| CatalogBuildError::Limits { name: f.name.clone(), source })?;
        entries.push(e);
    }
    for name in meta.keys() {
        warn!(path = %name, "--catalog names a file that is not seeded: left out");
    }
    // Seeded files come sorted by name, as pages must be.
    entries.sort_by(|a, b| a.name.cmp(&b.name));

    let root_dir = state.join("catalog");
    let dir = root_dir.join(version.to_string());
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| CatalogBuildError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(werr(&dir))?;
    if let Ok(old) = std::fs::read_dir(&root_dir) {
        for e in old.flatten().filter(|e| e.path() != dir) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let mut out = Vec::new();
    let mut refs = Vec::new();
    for (i, page) in catalog::encode_pages(&entries, PAGE_BYTES).iter().enumerate() {
        let name = catalog::page_name(version, i);
        let file = write(&dir, &format!("{i:05}"), &name, page).map_err(werr(&dir))?;
        let count = u32::from_be_bytes([page[4], page[5], page[6], page[7]]);
        refs.push(PageRef { id: file.id, entries: count });
        out.push(file);
    }
    let index_bytes = catalog::encode_index(&refs);
    let index = write(&dir, "index", &catalog::index_name(version), &index_bytes).map_err(werr(&dir))?;
    let root = CatalogRoot {
        version,
        expiry,
        entries: entries.len() as u64,
        pages: refs.len() as u32,
        index_id: index.id,
        index_size: index.size,
    };
    out.insert(0, index);
    Ok(Built { files: out, root })
}

fn write(dir: &Path, file: &str, name: &str, bytes: &[u8]) -> std::io::Result<SourceFile> {
    let path = dir.join(file);
    std::fs::write(&path, bytes)?;
    let id = ObjectId::archive(name, blake3::hash(bytes).as_bytes());
    Ok(SourceFile { path, name: name.to_owned(), size: bytes.len() as u64, id, on_demand: false })
}

fn read_meta(path: Option<&Path>) -> Result<HashMap<String, MetaItem>, CatalogBuildError> {
    let Some(path) = path else { return Ok(HashMap::new()) };
    let text = std::fs::read_to_string(path)
        .map_err(|source| CatalogBuildError::Read { path: path.to_owned(), source })?;
    let parsed: MetaFile = toml::from_str(&text)
        .map_err(|e| CatalogBuildError::Parse { path: path.to_owned(), message: e.to_string() })?;
    let mut items = HashMap::new();
    for item in parsed.item {
        let name = item.path.trim_start_matches('/').to_owned();
        if items.insert(name.clone(), item).is_some() {
            return Err(CatalogBuildError::Parse {
                path: path.to_owned(),
                message: format!("`{name}` has two items"),
            });
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_lists_every_file_with_its_metadata_and_its_pages_check_out() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("films")).unwrap();
        std::fs::write(src.join("films/a film.mp4"), b"film").unwrap();
        std::fs::write(src.join("films/notes.txt"), b"").unwrap();
        let files = crate::ingest::collect(&[src.join("films")], &[]).unwrap();
        let meta = tmp.path().join("catalog.toml");
        std::fs::write(
            &meta,
            "[[item]]\npath = \"films/a film.mp4\"\ntitle = \"A film\"\ntags = [\"film\", \"kids\"]\n\
             [[item]]\npath = \"films/gone.mp4\"\ntitle = \"not seeded\"\n",
        )
        .unwrap();
        let state = tmp.path().join("state");
        let old = build(&files, None, &state, 41, 1000).unwrap();
        let built = build(&files, Some(&meta), &state, 42, 1000).unwrap();
        assert!(!old.files[0].path.exists(), "an older version's objects are removed");
        assert_eq!((built.root.version, built.root.entries, built.root.pages), (42, 2, 1));
        assert_eq!(built.files[0].name, ".hubcast/catalog/42/index");
        assert_eq!(built.root.index_id, built.files[0].id);

        let index = catalog::decode_index(&std::fs::read(&built.files[0].path).unwrap()).unwrap();
        assert_eq!(index, [PageRef { id: built.files[1].id, entries: 2 }]);
        let page = std::fs::read(&built.files[1].path).unwrap();
        assert_eq!(ObjectId::archive(&built.files[1].name, blake3::hash(&page).as_bytes()), index[0].id);
        let entries = catalog::decode_page(&page).unwrap();
        assert_eq!(entries[0].title, "A film");
        assert_eq!(entries[0].tags, ["film", "kids"]);
        assert_eq!(entries[0].content_type, "video/mp4");
        assert_eq!((entries[1].name.as_str(), entries[1].title.as_str()), ("films/notes.txt", "notes.txt"));
        assert_eq!((entries[1].size, entries[1].content_type.as_str()), (0, "text/plain"));

        // Metadata past the limits is refused, naming the item.
        std::fs::write(
            &meta,
            format!("[[item]]\npath = \"films/notes.txt\"\ntitle = \"{}\"\n", "x".repeat(301)),
        )
        .unwrap();
        let e = build(&files, Some(&meta), &state, 43, 1000).err().unwrap();
        assert!(e.to_string().contains("films/notes.txt"), "{e}");
        std::fs::write(&meta, "[[item]]\npath = \"a\"\ncolour = \"red\"\n").unwrap();
        assert!(matches!(build(&files, Some(&meta), &state, 44, 1000), Err(CatalogBuildError::Parse { .. })));
    }
}
