//! The hub's modules import each other in one direction only: the driver
//! (`hub`) on top, the dispatcher below it, the services below that, the
//! store at the bottom. A circle (peers -> bridge -> peers, as there was)
//! makes the house hard to see; this test fails on one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules of `src` (a file `x.rs` or a folder `x/`), each with the
/// other top-level modules its code names as `crate::y`. Comments are left out.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(src).expect("src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_owned();
        if matches!(name.as_str(), "lib" | "main") {
            continue;
        }
        if path.is_dir() {
            for f in std::fs::read_dir(&path).expect("module folder") {
                files.push((name.clone(), f.expect("entry").path()));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push((name, path));
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("source");
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name != *module && modules.contains(&name) {
                    g.get_mut(module).expect("module").insert(name);
                }
            }
        }
    }
    g
}

/// A circle through `from`, if there is one.
fn circle(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in &g[at] {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_owned()];
    walk(g, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_module_of_the_hub_imports_one_that_imports_it() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(g.len() > 10 && g["hub"].contains("peers"), "the graph was read: {g:?}");
    let circles: Vec<Vec<String>> = g.keys().filter_map(|m| circle(&g, m)).collect();
    assert!(circles.is_empty(), "import circles: {circles:?}");
}

#[test]
fn the_check_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("peers".into(), ["bridge".to_owned()].into());
    g.insert("bridge".into(), ["peers".to_owned()].into());
    g.insert("store".into(), BTreeSet::new());
    assert_eq!(circle(&g, "peers"), Some(vec!["peers".into(), "bridge".into(), "peers".into()]));
    assert_eq!(circle(&g, "store"), None);
}
