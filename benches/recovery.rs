//! Recovery benchmark (docs/benchmarks.md, "Checkpoints and recovery"): how long a
//! restarted eddy takes until it serves again, with a million keys of aggregate state,
//! and how big that state is on disk.
//!
//! 1. A release `eddy` on a fresh data directory (`--checkpoint-interval never` unless
//!    `EDDY_CHECKPOINT_INTERVAL` says otherwise, so that the input log holds exactly the
//!    writes this benchmark makes after the checkpoint):
//!
//!    ```sql
//!    CREATE TABLE t (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT);
//!    INSERT INTO t SELECT x, x, x FROM generate_series(...) AS s(x);   -- 1M rows, 100k a statement
//!    CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k;
//!    ```
//!
//!    The view's DDL epoch backfills it and checkpoints everything (and `CHECKPOINT`
//!    forces one too, where the server has that statement).
//! 2. Each round writes a batch that the restart must replay — `UPDATE t SET v = v + 1`
//!    over `EDDY_BENCH_REPLAY_ROWS` rows (default 100,000), `EDDY_BENCH_REPLAY_BATCH`
//!    (10,000) rows a statement, one input-log entry each — then stops the server:
//!    `kill -9`, or SIGTERM (a clean shutdown, which checkpoints first). Rounds alternate
//!    between the two, `EDDY_BENCH_REPEATS` (3) of each.
//! 3. Restart on the same directory and time from spawn until a TCP + Postgres connection
//!    succeeds and `SELECT count(*), sum(n), sum(s) FROM per_k` returns the expected
//!    answer (restart-to-serving); the server's log lines (`installed dataflow`,
//!    `replayed the input log`, ...) are time-stamped as they arrive, for a breakdown.
//!    Also the restarted server's peak RSS (VmHWM) and the data directory's size.
//! 4. After the first kill -9, a copy of the data directory is opened with eddy's own
//!    storage layer to count what is in it: the checkpoint's state per operator and the
//!    input log's entries and bytes; opening the crashed copy also times redb's repair.
//!
//! Run: `cargo bench --bench recovery` (env `EDDY_BENCH_KEYS=1000000`,
//! `EDDY_BENCH_REPLAY_ROWS=100000`, `EDDY_BENCH_REPLAY_BATCH=10000`,
//! `EDDY_BENCH_REPEATS=3`, `EDDY_CHECKPOINT_INTERVAL=never`; `EDDY_BENCH_BIN=<path>` runs
//! that eddy binary instead of the one cargo built).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The eddy binary: the release build cargo made for this benchmark, or
/// `EDDY_BENCH_BIN` (a copy kept aside, so that a rebuild during a long run, or another
/// version for an A/B comparison, is under control).
fn eddy_bin() -> String {
    std::env::var("EDDY_BENCH_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_eddy").to_string())
}

/// Log messages of the server's startup that mark the end of a phase.
const MARKERS: &[&str] = &[
    "installed dataflow",
    "replaying the input log",
    "replayed the input log",
    "database open",
];

/// One eddy process, with the arrival times of its startup messages.
struct Server {
    child: Child,
    spawned: Instant,
    ready: Arc<Mutex<Option<Instant>>>,
    events: Arc<Mutex<Vec<(Instant, &'static str)>>>,
}

impl Server {
    fn spawn(data_dir: &Path, port: u16, interval: &str) -> Server {
        let ready = Arc::new(Mutex::new(None));
        let events = Arc::new(Mutex::new(vec![]));
        let spawned = Instant::now();
        let mut child = Command::new(eddy_bin())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--checkpoint-interval", interval, "--log", "info"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eddy");
        let stdout = child.stdout.take().expect("stdout");
        let r = ready.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("eddy ready on") {
                    *r.lock().unwrap() = Some(Instant::now());
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let ev = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let now = Instant::now();
                if let Some(m) = MARKERS.iter().find(|m| line.contains(*m)) {
                    ev.lock().unwrap().push((now, *m));
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("eddy: {line}");
                }
            }
        });
        Server {
            child,
            spawned,
            ready,
            events,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Seconds after spawn at which `marker` was logged: the first or the last time.
    fn at(&self, marker: &str, last: bool) -> Option<f64> {
        let ev = self.events.lock().unwrap();
        let mut it = ev.iter().filter(|(_, m)| *m == marker);
        let hit = if last { it.next_back() } else { it.next() };
        hit.map(|(t, _)| t.duration_since(self.spawned).as_secs_f64())
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit; the seconds it took (the final checkpoint).
    fn terminate(&mut self) -> f64 {
        let t = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        let secs = t.elapsed().as_secs_f64();
        assert!(exit.success(), "eddy exited with {exit} after SIGTERM");
        secs
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connect as soon as the server accepts a Postgres connection (polling every 5 ms).
async fn connect_when_up(port: u16, timeout: Duration) -> tokio_postgres::Client {
    let conn_str = format!("host=127.0.0.1 port={port} user=eddy dbname=eddy");
    let start = Instant::now();
    loop {
        match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return client;
            }
            Err(e) => {
                assert!(
                    start.elapsed() < timeout,
                    "eddy did not accept connections within {timeout:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// The values of the first row of a simple query, as text.
async fn row(client: &tokio_postgres::Client, sql: &str) -> Vec<Option<String>> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// What `SELECT count(*), sum(n), sum(s) FROM per_k` must return.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Expected {
    groups: i64,
    rows: i64,
    sum: i64,
}

async fn view_answer(client: &tokio_postgres::Client) -> Expected {
    let r = row(client, "SELECT count(*), sum(n), sum(s) FROM per_k").await;
    let num = |i: usize| -> i64 {
        r.get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    Expected {
        groups: num(0),
        rows: num(1),
        sum: num(2),
    }
}

/// Print every row of a `SHOW` statement, or say that the server does not have it.
async fn show_all(client: &tokio_postgres::Client, sql: &str, max_rows: usize) -> bool {
    match client.simple_query(sql).await {
        Ok(msgs) => {
            println!("`{sql}`:");
            let mut n = 0;
            for m in &msgs {
                if let SimpleQueryMessage::Row(r) = m {
                    n += 1;
                    if n > max_rows {
                        continue;
                    }
                    let cols: Vec<String> = r
                        .columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("{}={}", c.name(), r.get(i).unwrap_or("NULL")))
                        .collect();
                    println!("  {}", cols.join(", "));
                }
            }
            if n > max_rows {
                println!("  ... ({n} rows)");
            }
            true
        }
        Err(e) => {
            println!(
                "`{sql}` is not available on this server ({}); skipped.",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string())
            );
            false
        }
    }
}

/// (apparent bytes, allocated bytes) of everything under `p`.
fn dir_size(p: &Path) -> (u64, u64) {
    let mut total = (0, 0);
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                let (a, b) = dir_size(&path);
                total.0 += a;
                total.1 += b;
            } else if let Ok(m) = e.metadata() {
                total.0 += m.len();
                total.1 += m.blocks() * 512;
            }
        }
    }
    total
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let path = e.path();
        let dest = to.join(e.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy");
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// A `/proc/<pid>/status` field in bytes (VmHWM: peak RSS, VmRSS: now).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Open a copy of a data directory with eddy's storage layer and sum up what it holds:
/// keys and bytes per part (each operator's checkpointed state, the input log, ...).
fn inspect(dir: &Path, title: &str) {
    use eddy::storage::{open, StorageEngine};
    // First redb alone, to see whether the file needs a repair (a database that was not
    // closed cleanly) and how long opening it takes; then eddy's storage layer.
    let repaired = Arc::new(Mutex::new(false));
    let flag = repaired.clone();
    let t = Instant::now();
    let db = redb::Database::builder()
        .set_cache_size(128 * 1024 * 1024)
        .set_repair_callback(move |_| *flag.lock().unwrap() = true)
        .create(dir.join("eddy.redb"))
        .expect("open the copy with redb");
    let redb_s = t.elapsed().as_secs_f64();
    drop(db);
    let repaired = *repaired.lock().unwrap();
    let t = Instant::now();
    let store = open(StorageEngine::Redb, dir).expect("open the copy");
    let open_s = t.elapsed().as_secs_f64();
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    store
        .for_each_prefix(b"c/", &mut |k, v| {
            if let (Some(id), Ok(json)) = (
                k.get(2..6)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes),
                serde_json::from_slice::<serde_json::Value>(v),
            ) {
                names.insert(id, json["name"].as_str().unwrap_or("?").to_string());
            }
            Ok(())
        })
        .expect("scan catalog");
    // part -> (keys, key + value bytes)
    let mut parts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let t = Instant::now();
    store
        .for_each_prefix(b"", &mut |k, v| {
            let part = match k.get(..2) {
                Some(b"s/") if k.len() >= 10 => {
                    let id = u64::from_be_bytes(k[2..10].try_into().unwrap());
                    let (object, index) = ((id >> 32) as u32, id as u32);
                    let name = names.get(&object).map_or("?", String::as_str);
                    format!("state: {name} (object {object}), operator {index}")
                }
                Some(b"l/") => "input log".to_string(),
                Some(b"c/") => "catalog".to_string(),
                Some(b"m/") => "metadata".to_string(),
                Some(b"h/") => "subscription history".to_string(),
                _ => "other".to_string(),
            };
            let e = parts.entry(part).or_default();
            e.0 += 1;
            e.1 += (k.len() + v.len()) as u64;
            Ok(())
        })
        .expect("scan");
    let scan_s = t.elapsed().as_secs_f64();
    let (apparent, allocated) = dir_size(dir);
    println!();
    println!(
        "{title}: opening a copy with redb took {redb_s:.2} s ({}); then with eddy's storage layer {open_s:.2} s; a full scan {scan_s:.2} s.",
        if repaired {
            "redb repaired it: the database was not closed cleanly"
        } else {
            "no repair needed"
        }
    );
    println!(
        "Data directory: {:.1} MiB ({:.1} MiB allocated).",
        mib(apparent),
        mib(allocated)
    );
    println!();
    println!("| part | keys | key + value bytes | MiB |");
    println!("|---|---|---|---|");
    let (mut keys, mut bytes) = (0, 0);
    for (part, (k, b)) in &parts {
        keys += k;
        bytes += b;
        println!("| {part} | {k} | {b} | {:.1} |", mib(*b));
    }
    println!("| total | {keys} | {bytes} | {:.1} |", mib(bytes));
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn fmt_s(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2} s")
    } else {
        "–".into()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Kill9,
    Term,
}

/// One restart's figures, in seconds (NaN when a phase was not seen).
struct Restart {
    stop: Stop,
    shutdown: f64,
    first_restored: f64,
    all_restored: f64,
    replayed: f64,
    ready: f64,
    connected: f64,
    serving: f64,
    peak_rss: u64,
}

#[tokio::main]
async fn main() {
    let keys = env_u64("EDDY_BENCH_KEYS", 1_000_000).max(1);
    let replay_rows = env_u64("EDDY_BENCH_REPLAY_ROWS", 100_000).min(keys);
    let replay_batch = env_u64("EDDY_BENCH_REPLAY_BATCH", 10_000).max(1);
    let repeats = env_u64("EDDY_BENCH_REPEATS", 3).max(1);
    let interval = std::env::var("EDDY_CHECKPOINT_INTERVAL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "never".into());
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let port = free_port();
    let wait = Duration::from_secs(600);

    println!(
        "# Recovery with {keys} keys (--checkpoint-interval {interval}, {})",
        eddy_bin()
    );
    println!();
    let mut server = Server::spawn(&data, port, &interval);
    let client = connect_when_up(port, wait).await;
    println!(
        "Fresh start (empty data directory) to first connection: {:.3} s",
        server.spawned.elapsed().as_secs_f64()
    );

    client
        .batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, k BIGINT, v BIGINT)")
        .await
        .expect("create table");
    let t = Instant::now();
    let chunk = 100_000u64;
    let mut start = 0;
    while start < keys {
        let end = (start + chunk).min(keys) - 1;
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT x, x, x FROM generate_series({start}, {end}) AS s(x)"
            ))
            .await
            .expect("load");
        start = end + 1;
    }
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k",
        )
        .await
        .expect("create view");
    let view_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let forced = client.simple_query("CHECKPOINT").await;
    let checkpoint_s = t.elapsed().as_secs_f64();
    let k = keys as i64;
    let mut expected = Expected {
        groups: k,
        rows: k,
        sum: k * (k - 1) / 2,
    };
    assert_eq!(view_answer(&client).await, expected, "view after the load");
    println!("Load: {keys} rows in {load_s:.1} s; CREATE MATERIALIZED VIEW (backfill {keys} groups + checkpoint) {view_s:.1} s.");
    match forced {
        Ok(_) => println!("CHECKPOINT statement: {checkpoint_s:.2} s (nothing left to write after the view's DDL checkpoint)."),
        Err(e) => println!(
            "No CHECKPOINT statement on this server ({}); the view's DDL epoch checkpointed.",
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string())
        ),
    }
    let (apparent, allocated) = dir_size(&data);
    println!(
        "After the checkpoint: data directory {:.1} MiB ({:.1} MiB allocated); the loading server's peak RSS {:.0} MiB, RSS now {:.0} MiB.",
        mib(apparent),
        mib(allocated),
        mib(proc_status_bytes(server.pid(), "VmHWM")),
        mib(proc_status_bytes(server.pid(), "VmRSS"))
    );
    show_all(&client, "SHOW CHECKPOINTS", 5).await;
    let mut client = Some(client);

    let mut results: Vec<Restart> = vec![];
    let mut next_id = 0u64;
    let mut inspected = (false, false);
    for round in 0..2 * repeats {
        let stop = if round % 2 == 0 {
            Stop::Kill9
        } else {
            Stop::Term
        };
        let c = client.take().expect("client");
        // The writes the restart has to replay: UPDATEs of replay_rows rows, one input-log
        // entry per statement (the interval is `never` by default).
        let t = Instant::now();
        let mut left = replay_rows;
        let mut statements = 0;
        while left > 0 {
            let n = left.min(replay_batch).min(keys - next_id);
            c.batch_execute(&format!(
                "UPDATE t SET v = v + 1 WHERE id >= {next_id} AND id < {}",
                next_id + n
            ))
            .await
            .expect("update");
            statements += 1;
            next_id = (next_id + n) % keys;
            left -= n;
        }
        let update_s = t.elapsed().as_secs_f64();
        expected.sum += replay_rows as i64;
        assert_eq!(view_answer(&c).await, expected, "view after the updates");
        drop(c);
        let (before, _) = dir_size(&data);
        let shutdown = match stop {
            Stop::Kill9 => {
                server.kill9();
                f64::NAN
            }
            Stop::Term => server.terminate(),
        };
        let what = match stop {
            Stop::Kill9 => "kill -9",
            Stop::Term => "SIGTERM",
        };
        println!();
        println!(
            "Round {}: {statements} UPDATEs of {replay_rows} rows in {update_s:.1} s, data directory {:.1} MiB, then {what}{}.",
            round + 1,
            mib(before),
            if shutdown.is_finite() {
                format!(" (exited after {shutdown:.2} s)")
            } else {
                String::new()
            }
        );
        let first_of_kind = match stop {
            Stop::Kill9 => !std::mem::replace(&mut inspected.0, true),
            Stop::Term => !std::mem::replace(&mut inspected.1, true),
        };
        if first_of_kind {
            let copy = tmp.path().join(format!("copy{round}"));
            copy_dir(&data, &copy);
            inspect(&copy, &format!("Data directory after {what}"));
            let _ = std::fs::remove_dir_all(&copy);
        }

        server = Server::spawn(&data, port, &interval);
        let c = connect_when_up(port, wait).await;
        let connected = server.spawned.elapsed().as_secs_f64();
        let answer = view_answer(&c).await;
        let serving = server.spawned.elapsed().as_secs_f64();
        assert_eq!(answer, expected, "view after the restart");
        // Give the reader threads a moment to time-stamp the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready = (*server.ready.lock().unwrap())
            .map_or(f64::NAN, |t| t.duration_since(server.spawned).as_secs_f64());
        let first_restored = server.at("installed dataflow", false).unwrap_or(f64::NAN);
        let all_restored = server.at("installed dataflow", true).unwrap_or(f64::NAN);
        let replayed = server
            .at("replayed the input log", false)
            .unwrap_or(f64::NAN);
        let r = Restart {
            stop,
            shutdown,
            first_restored,
            all_restored,
            replayed,
            ready,
            connected,
            serving,
            peak_rss: proc_status_bytes(server.pid(), "VmHWM"),
        };
        println!(
            "Restart (s after spawn): table restored {}, view restored {}, log replayed and checkpointed {}, listening {}, connected {}, serving {}; peak RSS {:.0} MiB.",
            fmt_s(r.first_restored),
            fmt_s(r.all_restored),
            fmt_s(r.replayed),
            fmt_s(r.ready),
            fmt_s(r.connected),
            fmt_s(r.serving),
            mib(r.peak_rss)
        );
        if round < 2 {
            show_all(&c, "SHOW CHECKPOINTS", 3).await;
        }
        results.push(r);
        client = Some(c);
    }

    println!();
    println!("## Medians of {repeats} restarts each ({keys} keys, {replay_rows} rows updated before each stop)");
    println!();
    println!("Seconds after spawn, except shutdown (signal to exit).");
    println!();
    println!("| stop | shutdown | table restored | view restored | log replayed + checkpointed | listening | connected | serving (restart-to-serving) | peak RSS after restart |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (stop, name) in [(Stop::Kill9, "kill -9"), (Stop::Term, "SIGTERM")] {
        let rs: Vec<&Restart> = results.iter().filter(|r| r.stop == stop).collect();
        let m = |f: &dyn Fn(&Restart) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {:.0} MiB |",
            fmt_s(m(&|r| r.shutdown)),
            fmt_s(m(&|r| r.first_restored)),
            fmt_s(m(&|r| r.all_restored)),
            fmt_s(m(&|r| r.replayed)),
            fmt_s(m(&|r| r.ready)),
            fmt_s(m(&|r| r.connected)),
            fmt_s(m(&|r| r.serving)),
            mib(median(&rs.iter().map(|r| r.peak_rss as f64).collect::<Vec<_>>()) as u64)
        );
    }
    let (apparent, allocated) = dir_size(&data);
    println!();
    println!(
        "Data directory at the end: {:.1} MiB ({:.1} MiB allocated).",
        mib(apparent),
        mib(allocated)
    );
}
