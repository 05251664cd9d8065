//! Chunk data as files (tmp + fsync + rename + directory fsync, then a redb
//! commit of the index entry: what the hub does) against chunk data inside redb
//! (one durable commit per chunk), same durability, same run.
//!
//! `cargo bench -p hubcast-clienthub --bench store_layout`
//! (env HUBCAST_BENCH_DIR picks the disk; default: the system temp dir)

use redb::{Database, TableDefinition};
use std::io::Write;
use std::time::Instant;

const CHUNKS: usize = 64;
const CHUNK: usize = 1 << 20;
const INDEX: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("index");
const DATA: TableDefinition<u64, &[u8]> = TableDefinition::new("data");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("HUBCAST_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let hash = *blake3::hash(&chunk).as_bytes();
    let mut files_mbs = Vec::new();
    let mut redb_mbs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir_in(&base)?;
        std::fs::create_dir_all(dir.path().join("tmp"))?;
        std::fs::create_dir_all(dir.path().join("chunks"))?;
        let db = Database::create(dir.path().join("index.redb"))?;
        let t = Instant::now();
        for i in 0..CHUNKS as u64 {
            let tmp = dir.path().join("tmp").join(i.to_string());
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&chunk)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.path().join("chunks").join(i.to_string()))?;
            std::fs::File::open(dir.path().join("chunks"))?.sync_all()?;
            let w = db.begin_write()?;
            w.open_table(INDEX)?.insert(i, &hash)?;
            w.commit()?;
        }
        files_mbs.push((CHUNKS * CHUNK) as f64 / t.elapsed().as_secs_f64() / 1e6);

        let db = Database::create(dir.path().join("data.redb"))?;
        let t = Instant::now();
        for i in 0..CHUNKS as u64 {
            let w = db.begin_write()?;
            w.open_table(DATA)?.insert(i, chunk.as_slice())?;
            w.open_table(INDEX)?.insert(i, &hash)?;
            w.commit()?;
        }
        redb_mbs.push((CHUNKS * CHUNK) as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (f, r) = (median(files_mbs), median(redb_mbs));
    println!(
        "store layout: {CHUNKS} chunks of {CHUNK} bytes, each durable before the next, in {}",
        base.display()
    );
    println!("{:<50} {:>8} {:>7}", "", "MB/s", "ratio");
    println!("{:<50} {:>8.0} {:>7}", "files + redb index (the hub's store)", f, "1.00");
    println!("{:<50} {:>8.0} {:>7.2}", "chunk bytes inside redb", r, r / f);
    Ok(())
}
