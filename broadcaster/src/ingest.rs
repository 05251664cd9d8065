//! Ingest: turn the paths given to `seed` into objects.
//!
//! A file is one object named by its file name. A folder contributes every file
//! below it, named by its path relative to the folder's parent, with `/`
//! separators (`seed photos/` yields `photos/2024/a.jpg`). Symlinks are not
//! followed. Each file is read once here for its content hash; its object id
//! binds that hash to its name ([`ObjectId::archive`]), so every path is an
//! object of its own even where contents are equal.

use hubcast_protocol::ObjectId;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A file to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
    pub id: ObjectId,
    /// Announced, not sent on the carousel (`seed --on-demand`).
    pub on_demand: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: the name is not UTF-8; rename it to seed it")]
    NotUtf8(PathBuf),
    #[error("{0}: the name is longer than {max} bytes", max = hubcast_protocol::wire::MAX_NAME_LEN)]
    NameTooLong(PathBuf),
    #[error("{0}: names under `.hubcast/` are the channel's own (its catalog): rename it to seed it")]
    Reserved(PathBuf),
    #[error("{0}: two seeded paths give the same name `{1}`")]
    DuplicateName(PathBuf, String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
    move |source| IngestError::Io { path: path.to_owned(), source }
}

/// Walk `paths` (pushed) and `on_demand` (announced) and hash every file.
/// Result is sorted by name; a name given twice is refused.
pub fn collect(paths: &[PathBuf], on_demand: &[PathBuf]) -> Result<Vec<SourceFile>, IngestError> {
    Scanner::default().scan(paths, on_demand)
}

/// Walks the seeded paths again and again (a rescan), hashing only the
/// files that are new or changed since the scan before: a file whose path,
/// size and modification time are as they were keeps its id.
#[derive(Default)]
pub struct Scanner {
    known: Known,
}

impl Scanner {
    /// [`collect`], remembering what it hashed.
    pub fn scan(&mut self, paths: &[PathBuf], on_demand: &[PathBuf]) -> Result<Vec<SourceFile>, IngestError> {
        let seen = gather(paths, on_demand, &self.known)?;
        self.known = seen.iter().filter_map(|(f, at)| Some((f.path.clone(), ((*at)?, f.clone())))).collect();
        Ok(seen.into_iter().map(|(f, _)| f).collect())
    }
}

/// Path → its modification time when it was hashed (read before hashing:
/// a file that changes meanwhile is hashed again at the next scan), and
/// what that gave.
type Known = HashMap<PathBuf, (std::time::SystemTime, SourceFile)>;

/// Every file, and its modification time as read before hashing it.
type Seen = Vec<(SourceFile, Option<std::time::SystemTime>)>;

fn gather(paths: &[PathBuf], on_demand: &[PathBuf], known: &Known) -> Result<Seen, IngestError> {
    let mut files = Vec::new();
    for (p, demand) in paths.iter().map(|p| (p, false)).chain(on_demand.iter().map(|p| (p, true))) {
        let meta = fs::symlink_metadata(p).map_err(io_err(p))?;
        let base = p.parent().unwrap_or(Path::new(""));
        let from = files.len();
        if meta.is_dir() {
            walk(p, base, known, &mut files)?;
        } else {
            files.push(describe(p, base, known)?);
        }
        for (f, _) in &mut files[from..] {
            f.on_demand = demand;
        }
    }
    files.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    for w in files.windows(2) {
        if w[0].0.name == w[1].0.name {
            return Err(IngestError::DuplicateName(w[1].0.path.clone(), w[1].0.name.clone()));
        }
    }
    Ok(files)
}

fn walk(dir: &Path, base: &Path, known: &Known, out: &mut Seen) -> Result<(), IngestError> {
    let mut entries: Vec<_> =
        fs::read_dir(dir).map_err(io_err(dir))?.collect::<Result<_, _>>().map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let ty = e.file_type().map_err(io_err(&path))?;
        if ty.is_dir() {
            walk(&path, base, known, out)?;
        } else if ty.is_file() {
            out.push(describe(&path, base, known)?);
        }
    }
    Ok(())
}

fn describe(
    path: &Path,
    base: &Path,
    known: &Known,
) -> Result<(SourceFile, Option<std::time::SystemTime>), IngestError> {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let parts: Option<Vec<&str>> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_str()),
            _ => None,
        })
        .collect();
    let name = parts.ok_or_else(|| IngestError::NotUtf8(path.to_owned()))?.join("/");
    if name.len() > hubcast_protocol::wire::MAX_NAME_LEN {
        return Err(IngestError::NameTooLong(path.to_owned()));
    }
    if name.starts_with(".hubcast/") {
        return Err(IngestError::Reserved(path.to_owned()));
    }
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let modified = meta.modified().ok();
    let same = |(at, f): &(std::time::SystemTime, SourceFile)| {
        f.size == meta.len() && modified == Some(*at) && f.name == name
    };
    if let Some((_, f)) = known.get(path).filter(|k| same(k)) {
        return Ok((SourceFile { on_demand: false, ..f.clone() }, modified));
    }
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = blake3::Hasher::new();
    let size = io::copy(&mut file, &mut hasher).map_err(io_err(path))?;
    let id = ObjectId::archive(&name, hasher.finalize().as_bytes());
    Ok((SourceFile { path: path.to_owned(), name, size, id, on_demand: false }, modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_keep_their_name_and_nesting() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sample");
        fs::create_dir_all(root.join("nested/deeper")).unwrap();
        fs::write(root.join("empty.txt"), b"").unwrap();
        fs::write(root.join("nested/deeper/x.bin"), b"xyz").unwrap();
        fs::write(dir.path().join("lone.txt"), b"lone").unwrap();
        let files = collect(&[root.clone(), dir.path().join("lone.txt")], &[]).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["lone.txt", "sample/empty.txt", "sample/nested/deeper/x.bin"]);
        assert_eq!(files[2].size, 3);
        let xyz = *blake3::hash(b"xyz").as_bytes();
        assert_eq!(files[2].id, ObjectId::archive("sample/nested/deeper/x.bin", &xyz));
        assert!(matches!(collect(&[root.clone(), root.clone()], &[]), Err(IngestError::DuplicateName(..))));
        // Pushed and announced alike: one name, one object.
        assert!(matches!(
            collect(std::slice::from_ref(&root), std::slice::from_ref(&root)),
            Err(IngestError::DuplicateName(..))
        ));
        let lone = dir.path().join("lone.txt");
        let files = collect(&[], std::slice::from_ref(&lone)).unwrap();
        assert!(files[0].on_demand, "announced, not pushed");
    }

    #[test]
    fn equal_contents_under_two_names_are_two_objects_and_a_reseed_keeps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dup");
        fs::create_dir_all(root.join("sub")).unwrap();
        for name in ["a", "b", "e1", "e2", "sub/a"] {
            let content: &[u8] = if name.starts_with('e') { b"" } else { b"same" };
            fs::write(root.join(name), content).unwrap();
        }
        let files = collect(std::slice::from_ref(&root), &[]).unwrap();
        let mut ids: Vec<ObjectId> = files.iter().map(|f| f.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "every path is its own object");
        assert_eq!(collect(&[root], &[]).unwrap(), files, "a second walk gives the same ids");
    }

    #[test]
    fn a_rescan_hashes_only_what_changed_and_sees_new_and_gone_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("chan");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("a"), b"first").unwrap();
        let mut scanner = Scanner::default();
        let first = scanner.scan(std::slice::from_ref(&root), &[]).unwrap();
        assert_eq!(first.len(), 1);
        // Unchanged: the same file, taken from what the scan before hashed.
        assert_eq!(scanner.scan(std::slice::from_ref(&root), &[]).unwrap(), first);
        // A new file, and a changed one (another size): both hashed.
        fs::write(root.join("b"), b"new").unwrap();
        fs::write(root.join("a"), b"changed!").unwrap();
        let second = scanner.scan(std::slice::from_ref(&root), &[]).unwrap();
        let names: Vec<&str> = second.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["chan/a", "chan/b"]);
        assert_eq!(second[0].id, ObjectId::archive("chan/a", blake3::hash(b"changed!").as_bytes()));
        assert_eq!(second[1].id, ObjectId::archive("chan/b", blake3::hash(b"new").as_bytes()));
        fs::remove_file(root.join("b")).unwrap();
        assert_eq!(scanner.scan(std::slice::from_ref(&root), &[]).unwrap().len(), 1, "a removed file goes");
    }
}
