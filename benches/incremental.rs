//! Incremental view maintenance benchmark (docs/benchmarks.md, "Incremental views").
//!
//! 1. Update cost is independent of data size: a table of N rows (10k, 100k, 1M) behind
//!    a GROUP BY view and a join view; single-row UPDATEs by primary key. Reports the
//!    engine time per update (operators only, and with the storage commit), the
//!    statement latency, and the time DataFusion needs to recompute the same two queries
//!    from scratch over the same data — in the same run, as a ratio.
//! 2. Bulk throughput: M rows (default 10M) inserted into a stream, in batches, through
//!    a GROUP BY view with 100k groups: rows/s of engine time (one core: the dataflow runs
//!    on one thread), state size on disk and in memory per group.
//!
//! Run: `cargo bench --bench incremental` (env `EDDY_BENCH_SIZES=10000,100000,1000000`,
//! `EDDY_BENCH_BULK_ROWS=10000000`, `EDDY_BENCH_UPDATES=200`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::engine::{Database, DatabaseConfig, ExecResult, Session};

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

async fn exec(s: &mut Session, sql: &str) -> ExecResult {
    let mut last = None;
    for stmt in eddy::sql::parse(sql).expect("parse") {
        last = Some(
            s.execute(&stmt, &eddy::engine::Params::none())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        );
    }
    last.expect("a statement")
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Both storage engines through eddy's `Storage` trait: 5 atomic commits of 200k small
/// keys (the shape of a checkpoint), then RSS.
fn storage_compare() {
    use eddy::storage::{StorageEngine, WriteBatch};
    println!("| engine | keys per commit | commit (median of 5) | keys/s |");
    println!("|---|---|---|---|");
    for engine in [StorageEngine::Redb, StorageEngine::Sled] {
        let dir = tempfile::tempdir().expect("tmp");
        let store = eddy::storage::open(engine, dir.path()).expect("open");
        let mut times = vec![];
        for round in 0..5u8 {
            let mut b = WriteBatch::new();
            for i in 0..200_000u64 {
                let mut k = b"s/".to_vec();
                k.extend_from_slice(&(i * 7919 % 200_000).to_be_bytes());
                b.put(k, vec![round; 40]);
            }
            let t = Instant::now();
            store.commit(b).expect("commit");
            store.flush().expect("flush");
            times.push(t.elapsed().as_secs_f64());
        }
        let m = pct(&mut times, 0.5);
        println!(
            "| {engine:?} | 200000 | {:.2} s | {:.0} |",
            m,
            200_000.0 / m
        );
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            let path = e.path();
            total += if path.is_dir() {
                dir_size(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Engine {
    process: u64,
    commit: u64,
}

fn engine(db: &Database) -> Engine {
    let m = db.dataflow().metrics();
    Engine {
        process: m.process_ns.load(Ordering::Relaxed),
        commit: m.commit_ns.load(Ordering::Relaxed),
    }
}

async fn update_cost(n: u64, updates: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Database::open(DatabaseConfig {
        data_dir: Some(dir.path().join("data")),
        ..Default::default()
    })
    .await
    .expect("open");
    let mut s = Session::new(db.clone());
    let groups = (n / 10).max(1);
    exec(
        &mut s,
        "CREATE TABLE t (k BIGINT PRIMARY KEY, g BIGINT, v BIGINT)",
    )
    .await;
    exec(&mut s, "CREATE TABLE d (g BIGINT PRIMARY KEY, name TEXT)").await;
    exec(
        &mut s,
        &format!(
            "INSERT INTO d SELECT x, 'name' || x FROM generate_series(0, {}) AS s(x)",
            groups - 1
        ),
    )
    .await;
    let load = Instant::now();
    let chunk = 100_000u64.min(n);
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n) - 1;
        exec(&mut s, &format!("INSERT INTO t SELECT x, x % {groups}, x FROM generate_series({start}, {end}) AS s(x)")).await;
        start = end + 1;
    }
    let load_s = load.elapsed().as_secs_f64();
    exec(
        &mut s,
        "CREATE MATERIALIZED VIEW v_agg AS SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g",
    )
    .await;
    exec(
        &mut s,
        "CREATE MATERIALIZED VIEW v_join AS SELECT t.k, t.v, d.name FROM t JOIN d ON t.g = d.g",
    )
    .await;

    let explain = std::env::var("EDDY_BENCH_EXPLAIN").is_ok();
    let show = |r: ExecResult| match r {
        ExecResult::Rows { batches, .. } => batches
            .iter()
            .flat_map(|b| {
                let c = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .cloned();
                c.map(|c| {
                    c.iter()
                        .flatten()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("{other:?}"),
    };
    if explain {
        eprintln!(
            "before updates:\n{}\n{}",
            show(exec(&mut s, "EXPLAIN ANALYZE v_agg").await),
            show(exec(&mut s, "EXPLAIN ANALYZE v_join").await)
        );
    }
    let mut engine_ms = vec![];
    let mut with_commit_ms = vec![];
    let mut stmt_ms = vec![];
    let mut x: u64 = 12345;
    for _ in 0..updates {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = (x >> 33) % n;
        let before = engine(&db);
        let t0 = Instant::now();
        exec(&mut s, &format!("UPDATE t SET v = v + 1 WHERE k = {k}")).await;
        stmt_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let after = engine(&db);
        let p = (after.process - before.process) as f64 / 1e6;
        engine_ms.push(p);
        with_commit_ms.push(p + (after.commit - before.commit) as f64 / 1e6);
    }
    if explain {
        eprintln!(
            "after updates:\n{}\n{}",
            show(exec(&mut s, "EXPLAIN ANALYZE v_agg").await),
            show(exec(&mut s, "EXPLAIN ANALYZE v_join").await)
        );
    }
    // Check the views really changed: the sum over v_agg equals the table's sum.
    let check = |r: ExecResult| match r {
        ExecResult::Rows { batches, .. } => {
            format!("{:?}", batches.first().map(|b| b.column(0).clone()))
        }
        other => format!("{other:?}"),
    };
    let a = check(exec(&mut s, "SELECT sum(s) FROM v_agg").await);
    let b = check(exec(&mut s, "SELECT sum(v) FROM t").await);
    assert_eq!(a, b, "v_agg disagrees with its table");

    // DataFusion recomputing both views from scratch over the same snapshot. The first
    // run decodes the snapshot into Arrow; the timed runs reuse it (fair to DataFusion).
    let q_agg = "SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g";
    let q_join = "SELECT t.k, t.v, d.name FROM t JOIN d ON t.g = d.g";
    exec(&mut s, q_agg).await;
    exec(&mut s, q_join).await;
    let mut recompute_ms = vec![];
    for _ in 0..3 {
        let t0 = Instant::now();
        exec(&mut s, q_agg).await;
        exec(&mut s, q_join).await;
        recompute_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let e50 = pct(&mut engine_ms, 0.5);
    let e99 = pct(&mut engine_ms, 0.99);
    let c50 = pct(&mut with_commit_ms, 0.5);
    let s50 = pct(&mut stmt_ms, 0.5);
    let r = pct(&mut recompute_ms, 0.5);
    println!(
        "| {n:>9} | {load_s:>6.1} s | {e50:>7.3} ms | {e99:>7.3} ms | {c50:>7.2} ms | {s50:>7.2} ms | {r:>9.1} ms | {:>8.0}x |",
        r / e50
    );
}

async fn bulk(rows: u64, groups: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let in_memory = std::env::var("EDDY_BENCH_MEMORY").is_ok();
    let db = Database::open(DatabaseConfig {
        data_dir: (!in_memory).then(|| data.clone()),
        ..Default::default()
    })
    .await
    .expect("open");
    let mut s = Session::new(db.clone());
    exec(&mut s, "CREATE STREAM e (k BIGINT, v BIGINT)").await;
    exec(&mut s, "CREATE MATERIALIZED VIEW per_key AS SELECT k, count(*) AS n, sum(v) AS s, max(v) AS mx FROM e GROUP BY k").await;
    let rss0 = rss_bytes();
    let before = engine(&db);
    let wall = Instant::now();
    let batch = 100_000u64;
    let mut start = 0;
    while start < rows {
        let end = (start + batch).min(rows) - 1;
        exec(
            &mut s,
            &format!(
                "INSERT INTO e SELECT x % {groups}, x FROM generate_series({start}, {end}) AS s(x)"
            ),
        )
        .await;
        start = end + 1;
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let after = engine(&db);
    let process_s = (after.process - before.process) as f64 / 1e9;
    let commit_s = (after.commit - before.commit) as f64 / 1e9;
    match exec(&mut s, "SELECT count(*), sum(n) FROM per_key").await {
        ExecResult::Rows { batches, .. } => {
            let b = &batches[0];
            let shown = format!("{:?} {:?}", b.column(0), b.column(1));
            let distinct = groups.min(rows);
            assert!(
                shown.contains(&distinct.to_string()) && shown.contains(&rows.to_string()),
                "view contents wrong: {shown}"
            );
        }
        other => panic!("{other:?}"),
    }
    let rss = rss_bytes().saturating_sub(rss0);
    let disk = dir_size(&data);
    println!("| rows | groups | wall | engine (operators) | engine + commit | rows/s (operators) | rows/s (with commit) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {rows} | {groups} | {wall_s:.1} s | {process_s:.2} s | {:.2} s | {:.0} | {:.0} |",
        process_s + commit_s,
        rows as f64 / process_s,
        rows as f64 / (process_s + commit_s)
    );
    println!();
    println!(
        "State: {:.1} MiB on disk for the stream's rows plus view and aggregate state; peak RSS of the process {:.1} MiB.",
        disk as f64 / 1048576.0,
        peak_rss_bytes() as f64 / 1048576.0
    );
    let _ = rss;
    drop(db);
    // Per-group state: the same view over a table with one row per group.
    let dir2 = tempfile::tempdir().expect("tmp");
    let data2 = dir2.path().join("data");
    let db2 = Database::open(DatabaseConfig {
        data_dir: Some(data2.clone()),
        ..Default::default()
    })
    .await
    .expect("open");
    let mut s2 = Session::new(db2.clone());
    exec(&mut s2, "CREATE STREAM e (k BIGINT, v BIGINT)").await;
    let disk0 = dir_size(&data2);
    let rss0 = rss_bytes();
    exec(&mut s2, "CREATE MATERIALIZED VIEW per_key AS SELECT k, count(*) AS n, sum(v) AS s, max(v) AS mx FROM e GROUP BY k").await;
    exec(
        &mut s2,
        &format!(
            "INSERT INTO e SELECT x, x FROM generate_series(0, {}) AS s(x)",
            groups - 1
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let disk1 = dir_size(&data2);
    let rss1 = rss_bytes();
    println!(
        "Per group (aggregate + view, {groups} groups, count/sum/max): {:.0} bytes on disk (incl. the stream's own rows), {:.0} bytes of RSS.",
        (disk1.saturating_sub(disk0)) as f64 / groups as f64,
        (rss1.saturating_sub(rss0)) as f64 / groups as f64
    );
    drop(db2);
}

fn main() {
    let sizes = env_list("EDDY_BENCH_SIZES", &[10_000, 100_000, 1_000_000]);
    let updates = env_list("EDDY_BENCH_UPDATES", &[200])[0];
    let bulk_rows = env_list("EDDY_BENCH_BULK_ROWS", &[10_000_000])[0];
    let groups = env_list("EDDY_BENCH_GROUPS", &[100_000])[0];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!("## Update cost vs. table size ({updates} single-row UPDATEs by key, GROUP BY view + join view)");
        println!();
        println!("| table rows | load | engine p50 | engine p99 | + commit p50 | UPDATE p50 | DataFusion recompute | ratio |");
        println!("|---|---|---|---|---|---|---|---|");
        for n in sizes {
            update_cost(n, updates).await;
        }
        println!();
        println!("## Bulk insert through a GROUP BY view");
        println!();
        bulk(bulk_rows, groups).await;
        println!();
        println!("## Storage engines (a checkpoint-shaped commit)");
        println!();
        storage_compare();
    });
    let _ = Arc::new(());
}
