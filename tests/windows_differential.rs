//! Differential test of event time: watermarks, late rows and windowed views, with
//! PostgreSQL as the oracle.
//!
//! eddy gets a stream with a watermark and views over its windows:
//!
//! ```sql
//! CREATE STREAM ev (k INT, v BIGINT, ts TIMESTAMP,
//!   WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never');
//! CREATE MATERIALIZED VIEW tumble_eowc AS SELECT k, window_start, window_end, count(*) AS n,
//!   sum(v) AS s FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end
//!   EMIT ON WINDOW CLOSE;
//! -- ... and the same with EMIT CHANGES, and HOP(ev, ts, 30 s, 2 min) both ways
//! ```
//!
//! A random sequence of events (keys 0..5 and a few NULLs, random values, timestamps
//! mostly increasing with up to ~20 s of jitter, some far in the past, some exactly on
//! the lateness boundary, a few NULL) goes to eddy in INSERT statements of random size.
//! The same rows go to a PostgreSQL table `ev (seq, k, v, ts)`, where `seq` is the
//! arrival order: the rows of one INSERT arrive in VALUES order, statements in the order
//! they run. (`idle_timeout = 'never'` keeps eddy's watermark from advancing with the
//! wall clock, so everything is a function of the rows alone.)
//!
//! The oracle, as PostgreSQL views over that table:
//!
//! - The watermark a row meets on arrival is the largest `ts` of the rows before it,
//!   minus the lateness: `max(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING
//!   AND 1 PRECEDING) - INTERVAL '5 seconds'` (NULL before any row with a `ts`: nothing
//!   is late then). A row is late iff `ts < that watermark`; NULL `ts` is never late.
//!   A late row never raises the maximum (it is below it), so taking the maximum over
//!   *all* earlier rows, late ones included, is the same as over the kept ones.
//! - Late rows are dropped: `ev_kept` is every row that is not late; `ev_late` the rest.
//! - The current watermark is `max(ts) - 5 s` over all rows.
//! - TUMBLE's windows are `date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01')`
//!   plus one minute; HOP's (slide 30 s, size 2 min) are that bin shifted back by 0..3
//!   slides (`generate_series`), each two minutes long. A row with a NULL `ts` is kept
//!   (it counts in `SELECT count(*) FROM ev`) but belongs to no window (docs/sql.md,
//!   "Event time: watermarks, late rows, emit modes"), so `tumbled` and `hopped` leave
//!   it out.
//! - An `EMIT CHANGES` view holds every window over `ev_kept`, closed or open; an
//!   `EMIT ON WINDOW CLOSE` view holds exactly the windows with `window_end <=` the
//!   current watermark, with their final values.
//!
//! After every few batches (and a FLUSH) these must agree: each windowed view, an ad-hoc
//! windowed query, `SELECT count(*) FROM ev` (kept rows only), and `SHOW WATERMARKS`'s
//! `watermark` and `late_rows` for `ev` (and it must list every view fed by `ev`). Then
//! eddy is killed (-9) and restarted: everything must still agree, and keep agreeing as
//! more rows (late ones included) arrive.
//!
//! Seeds are fixed so a failure reproduces; `EDDY_DIFF_SEEDS=7,8` picks others. A failure
//! prints the seed, what differs (rows only eddy has, rows only PostgreSQL has) and the
//! statements since the previous comparison.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration as ChronoDuration, NaiveDate, NaiveDateTime};
use common::{normalize, rows, Eddy, Postgres};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The lateness of the stream's watermark, in milliseconds (`ts - INTERVAL '5 seconds'`).
const LATENESS_MS: i64 = 5_000;

const EDDY_STREAM: &str = "CREATE STREAM ev (k INT, v BIGINT, ts TIMESTAMP, \
     WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never')";

/// The oracle's base table and the arrival-order views every check builds on.
const PG_SETUP: &str = "
CREATE TABLE ev (seq BIGINT PRIMARY KEY, k INT, v BIGINT, ts TIMESTAMP);
CREATE VIEW ev_arrivals AS
  SELECT seq, k, v, ts,
         max(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - INTERVAL '5 seconds' AS wm_at_arrival
  FROM ev;
CREATE VIEW ev_kept AS
  SELECT seq, k, v, ts FROM ev_arrivals
  WHERE ts IS NULL OR wm_at_arrival IS NULL OR ts >= wm_at_arrival;
CREATE VIEW ev_late AS
  SELECT seq, k, v, ts FROM ev_arrivals WHERE ts < wm_at_arrival;
CREATE VIEW current_wm AS SELECT max(ts) - INTERVAL '5 seconds' AS wm FROM ev;
CREATE VIEW tumbled AS
  SELECT k, v, ts,
         date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01') AS window_start,
         date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01') + INTERVAL '1 minute' AS window_end
  FROM ev_kept WHERE ts IS NOT NULL;
CREATE VIEW hopped AS
  SELECT k, v, ts,
         date_bin(INTERVAL '30 seconds', ts, TIMESTAMP '1970-01-01') - i * INTERVAL '30 seconds' AS window_start,
         date_bin(INTERVAL '30 seconds', ts, TIMESTAMP '1970-01-01') - i * INTERVAL '30 seconds' + INTERVAL '2 minutes' AS window_end
  FROM ev_kept CROSS JOIN generate_series(0, 3) AS i WHERE ts IS NOT NULL;
";

/// (name, eddy view, PostgreSQL oracle). Each becomes an eddy MATERIALIZED VIEW and a
/// PostgreSQL VIEW of the same name, compared as `SELECT * FROM name`.
const VIEWS: &[(&str, &str, &str)] = &[
    (
        "tumble_eowc",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end \
         EMIT ON WINDOW CLOSE",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM tumbled \
         GROUP BY k, window_start, window_end \
         HAVING window_end <= (SELECT wm FROM current_wm)",
    ),
    (
        "tumble_changes",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM tumbled \
         GROUP BY k, window_start, window_end",
    ),
    (
        "hop_eowc",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM HOP(ev, ts, INTERVAL '30 seconds', INTERVAL '2 minutes') \
         GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM hopped \
         GROUP BY k, window_start, window_end \
         HAVING window_end <= (SELECT wm FROM current_wm)",
    ),
    (
        "hop_changes_global",
        "SELECT window_start, window_end, count(*) AS n, min(v) AS lo, max(v) AS hi \
         FROM HOP(ev, ts, INTERVAL '30 seconds', INTERVAL '2 minutes') \
         GROUP BY window_start, window_end",
        "SELECT window_start, window_end, count(*) AS n, min(v) AS lo, max(v) AS hi \
         FROM hopped GROUP BY window_start, window_end",
    ),
];

/// (what, eddy query, PostgreSQL query): compared as multisets of rows.
const QUERIES: &[(&str, &str, &str)] = &[
    (
        "count of ev",
        "SELECT count(*) FROM ev",
        "SELECT count(*) FROM ev_kept",
    ),
    (
        "ad-hoc TUMBLE over ev",
        "SELECT window_start, count(*) AS n, sum(v) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start",
        "SELECT window_start, count(*) AS n, sum(v) AS s FROM tumbled GROUP BY window_start",
    ),
];

/// The oracle for `SHOW WATERMARKS`' row of `ev`: `watermark | late_rows`.
const PG_WATERMARK: &str = "SELECT (SELECT wm FROM current_wm), (SELECT count(*) FROM ev_late)";

/// One event, as generated.
#[derive(Clone, Debug)]
struct Event {
    k: Option<i32>,
    v: i64,
    /// Milliseconds after `BASE`.
    ts: Option<i64>,
}

/// Time zero of the generated timestamps (not aligned to any window on purpose).
fn base() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 5, 1)
        .unwrap()
        .and_hms_opt(9, 58, 37)
        .unwrap()
}

/// Where `base()` falls in a 30 s period of the Unix epoch (ms): HOP's windows start
/// every 30 s and TUMBLE's every minute, both aligned to the epoch.
fn base_offset_in_30s() -> i64 {
    base().and_utc().timestamp_millis().rem_euclid(30_000)
}

fn ts_literal(ms: i64) -> String {
    let t = base() + ChronoDuration::milliseconds(ms);
    format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.3f"))
}

struct Generator {
    rng: StdRng,
    /// The event-time "now" that most rows are near (ms after BASE).
    clock: i64,
    /// The largest ts generated so far (what eddy's watermark is computed from).
    max_ts: Option<i64>,
}

impl Generator {
    fn event(&mut self) -> Event {
        let r = &mut self.rng;
        // Time moves on by 0-3 whole seconds per row, and now and then jumps by minutes,
        // which closes windows.
        self.clock += r.random_range(0..=3) * 1000;
        if r.random_bool(0.03) {
            self.clock += r.random_range(60..=240) * 1000;
        }
        let reference = self.max_ts.unwrap_or(self.clock);
        let ts = match r.random_range(0..100) {
            // NULL: kept, never late, in no window.
            0..=3 => None,
            // Far in the past: late (unless nothing has a ts yet).
            4..=8 => Some(reference - r.random_range(30..=900) * 1000),
            // Exactly on the watermark: not late.
            9..=11 => Some(reference - LATENESS_MS),
            // Just under it: late.
            12..=13 => Some(reference - LATENESS_MS - [1, 1000][r.random_range(0..2)]),
            // The 30 s boundary nearest the clock (a window's first instant), or 5 s
            // after it (the watermark lands exactly on a window's end).
            14..=17 => {
                let abs = base_offset_in_30s() + self.clock + 15_000;
                let boundary = self.clock + 15_000 - abs.rem_euclid(30_000);
                Some(boundary + [0, LATENESS_MS][r.random_range(0..2)])
            }
            // Out of order by up to 20 s: late when more than 5 s behind the maximum.
            18..=44 => Some(self.clock - r.random_range(0..=20) * 1000),
            // Near the clock.
            _ => Some(self.clock + r.random_range(-2..=2) * 1000),
        };
        // Now and then a fraction of a second (a few milliseconds before or after the
        // whole second the row would have had).
        let ts = match ts {
            Some(t) if r.random_bool(0.08) => Some(t + r.random_range(-999..=999)),
            t => t,
        };
        if let Some(t) = ts {
            self.max_ts = Some(self.max_ts.map_or(t, |m| m.max(t)));
        }
        let k = if r.random_bool(0.04) {
            None
        } else {
            Some(r.random_range(0..5))
        };
        let v = r.random_range(-1000..=1000);
        Event { k, v, ts }
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".to_string(), |v| v.to_string())
}

/// The INSERT statements for eddy and for PostgreSQL (with arrival numbers from `seq`).
fn insert_statements(events: &[Event], seq: &mut i64) -> (String, String) {
    let mut e = vec![];
    let mut p = vec![];
    for ev in events {
        let ts = ev.ts.map_or_else(|| "NULL".to_string(), ts_literal);
        let (k, v) = (opt(ev.k), ev.v);
        e.push(format!("({k}, {v}, {ts})"));
        p.push(format!("({seq}, {k}, {v}, {ts})"));
        *seq += 1;
    }
    (
        format!("INSERT INTO ev VALUES {}", e.join(", ")),
        format!("INSERT INTO ev VALUES {}", p.join(", ")),
    )
}

/// `SHOW WATERMARKS` as one map (column name -> normalized value) per row.
async fn show_watermarks(e: &Client) -> Result<Vec<BTreeMap<String, String>>, String> {
    let msgs = e
        .simple_query("SHOW WATERMARKS")
        .await
        .map_err(|err| match err.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => err.to_string(),
        })?;
    let mut out = vec![];
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            let row = r
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name().to_string(), normalize(r.get(i))))
                .collect();
            out.push(row);
        }
    }
    Ok(out)
}

async fn must_rows(c: &Client, who: &str, sql: &str) -> Vec<String> {
    match rows(c, sql).await {
        Ok(r) => r,
        Err(err) => panic!("{who}: `{sql}` failed: {err}"),
    }
}

/// One thing that differs: what, and the rows each side has that the other lacks.
struct Mismatch {
    what: String,
    only_eddy: Vec<String>,
    only_pg: Vec<String>,
    eddy: Vec<String>,
    pg: Vec<String>,
}

/// Multiset differences of two sorted row lists.
fn diff(got: &[String], want: &[String]) -> (Vec<String>, Vec<String>) {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for g in got {
        *count.entry(g).or_default() += 1;
    }
    for w in want {
        *count.entry(w).or_default() -= 1;
    }
    let mut only_got = vec![];
    let mut only_want = vec![];
    for (row, n) in count {
        for _ in 0..n.max(0) {
            only_got.push(row.to_string());
        }
        for _ in 0..(-n).max(0) {
            only_want.push(row.to_string());
        }
    }
    (only_got, only_want)
}

/// Statistics that show the workload exercised what it should.
#[derive(Default)]
struct Coverage {
    rounds: usize,
    /// Rounds in which each view / query was non-empty in the oracle.
    nonempty: BTreeMap<String, usize>,
    late_rows: i64,
    closed_windows: usize,
}

/// Compare everything once; the mismatches found.
async fn compare(e: &Client, p: &Client, cov: &mut Coverage) -> Vec<Mismatch> {
    e.simple_query("FLUSH").await.expect("eddy: FLUSH");
    let mut out = vec![];
    let mut check = |what: String, got: Vec<String>, want: Vec<String>, cov: &mut Coverage| {
        if !want.is_empty() {
            *cov.nonempty.entry(what.clone()).or_default() += 1;
        }
        if got != want {
            let (only_eddy, only_pg) = diff(&got, &want);
            out.push(Mismatch {
                what,
                only_eddy,
                only_pg,
                eddy: got,
                pg: want,
            });
        }
    };
    for (name, _, _) in VIEWS {
        let sql = format!("SELECT * FROM {name}");
        let got = must_rows(e, "eddy", &sql).await;
        let want = must_rows(p, "postgres", &sql).await;
        if name.ends_with("eowc") {
            cov.closed_windows = cov.closed_windows.max(want.len());
        }
        check(format!("view {name}"), got, want, cov);
    }
    for (what, eq, pq) in QUERIES {
        let got = must_rows(e, "eddy", eq).await;
        let want = must_rows(p, "postgres", pq).await;
        check(format!("{what}: eddy `{eq}`"), got, want, cov);
    }

    // SHOW WATERMARKS: one row for ev, with its watermark and late rows, and one for
    // every view fed by it. A view's watermark is its input's; its late_rows counts
    // changes to windows it had already closed, and there are none here (a row that
    // could change a closed window is below the watermark, so ev drops it).
    let want_ev = must_rows(p, "postgres", PG_WATERMARK).await;
    if let Some(late) = want_ev.first().and_then(|w| w.rsplit(" | ").next()) {
        cov.late_rows = late.parse().unwrap_or(0);
    }
    let wm = want_ev
        .first()
        .and_then(|w| w.split(" | ").next())
        .unwrap_or("NULL")
        .to_string();
    let mut want: Vec<String> = vec![format!("ev | {}", want_ev.join(""))];
    want.extend(VIEWS.iter().map(|(n, _, _)| format!("{n} | {wm} | 0")));
    want.sort();
    let got = match show_watermarks(e).await {
        Err(err) => vec![format!("SHOW WATERMARKS failed: {err}")],
        Ok(wms) => {
            let mut got: Vec<String> = wms
                .iter()
                .map(|r| {
                    let col = |c: &str| {
                        r.get(c)
                            .cloned()
                            .unwrap_or_else(|| format!("<no column {c}>"))
                    };
                    format!(
                        "{} | {} | {}",
                        col("name"),
                        col("watermark"),
                        col("late_rows")
                    )
                })
                .collect();
            got.sort();
            got
        }
    };
    check(
        "SHOW WATERMARKS: name | watermark | late_rows (ev and every view fed by it)".into(),
        got,
        want,
        cov,
    );
    cov.rounds += 1;
    out
}

/// Panic with the seed, what differs and the statements since the last comparison.
fn report(seed: u64, when: &str, mismatches: &[Mismatch], recent: &[String]) {
    if mismatches.is_empty() {
        return;
    }
    let mut msg = format!(
        "seed {seed}: {} check(s) differ {when} (EDDY_DIFF_SEEDS={seed} reproduces)\n",
        mismatches.len()
    );
    for m in mismatches {
        msg.push_str(&format!("--- {}\n", m.what));
        for r in &m.only_eddy {
            msg.push_str(&format!("  only in eddy:       {r}\n"));
        }
        for r in &m.only_pg {
            msg.push_str(&format!("  only in postgres:   {r}\n"));
        }
        if m.eddy.len() + m.pg.len() <= 40 {
            msg.push_str(&format!(
                "  eddy:     {:?}\n  postgres: {:?}\n",
                m.eddy, m.pg
            ));
        }
    }
    msg.push_str(
        "statements (PostgreSQL's, first column = arrival seq) since the previous comparison:\n",
    );
    for s in recent {
        msg.push_str(&format!("  {s};\n"));
    }
    panic!("{msg}");
}

/// Send `n` random batches to both; compare every `every` batches and after the last.
#[allow(clippy::too_many_arguments)]
async fn run_batches(
    seed: u64,
    phase: &str,
    e: &Client,
    p: &Client,
    g: &mut Generator,
    seq: &mut i64,
    n: usize,
    every: usize,
    cov: &mut Coverage,
) {
    let mut recent: Vec<String> = vec![];
    for batch in 0..n {
        let size = match g.rng.random_range(0..10) {
            0 => 1,
            1..=6 => g.rng.random_range(2..=8),
            _ => g.rng.random_range(9..=30),
        };
        let events: Vec<Event> = (0..size).map(|_| g.event()).collect();
        let (es, ps) = insert_statements(&events, seq);
        if let Err(err) = e.simple_query(&es).await {
            panic!("seed {seed} {phase} batch {batch}: eddy rejected `{es}`: {err:?}");
        }
        p.simple_query(&ps)
            .await
            .unwrap_or_else(|err| panic!("postgres rejected `{ps}`: {err:?}"));
        recent.push(ps);
        if (batch + 1) % every == 0 || batch + 1 == n {
            let m = compare(e, p, cov).await;
            report(seed, &format!("{phase}, after batch {batch}"), &m, &recent);
            recent.clear();
        }
    }
}

async fn create_views(seed: u64, e: &Client, p: &Client) {
    e.batch_execute(EDDY_STREAM)
        .await
        .unwrap_or_else(|err| panic!("eddy rejected `{EDDY_STREAM}`: {err:?}"));
    p.batch_execute(PG_SETUP).await.unwrap();
    for (name, eq, pq) in VIEWS {
        e.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {eq}"))
            .await
            .unwrap_or_else(|err| panic!("seed {seed}: eddy rejected view {name}: {err:?}"));
        p.batch_execute(&format!("CREATE VIEW {name} AS {pq}"))
            .await
            .unwrap_or_else(|err| panic!("postgres rejected oracle {name}: {err:?}"));
    }
}

async fn run_seed(seed: u64) {
    let eddy = Eddy::start();
    let pg = Postgres::start();
    let e = eddy.connect().await;
    let p = pg.connect().await;
    create_views(seed, &e, &p).await;
    let mut g = Generator {
        rng: StdRng::seed_from_u64(seed),
        clock: 0,
        max_ts: None,
    };
    let mut seq = 1i64;
    let mut cov = Coverage::default();

    // Before any row: no watermark, nothing late, every view empty.
    let m = compare(&e, &p, &mut cov).await;
    report(seed, "before any row", &m, &[]);

    run_batches(seed, "first run", &e, &p, &mut g, &mut seq, 90, 3, &mut cov).await;

    // The workload must exercise what the test is about.
    let rows_sent = seq - 1;
    let weak: Vec<String> = VIEWS
        .iter()
        .map(|(n, _, _)| format!("view {n}"))
        .filter(|n| cov.nonempty.get(n).copied().unwrap_or(0) < cov.rounds / 2)
        .collect();
    assert!(
        weak.is_empty(),
        "seed {seed}: views rarely non-empty, the test is too weak: {weak:?}"
    );
    assert!(
        cov.late_rows >= 10 && cov.late_rows < rows_sent / 2,
        "seed {seed}: {} late rows of {rows_sent}: the workload should make some, not most, rows late",
        cov.late_rows
    );
    assert!(
        cov.closed_windows >= 10,
        "seed {seed}: only {} closed windows: the workload should close many",
        cov.closed_windows
    );
    eprintln!(
        "seed {seed}: {rows_sent} rows, {} late, {} comparisons, up to {} closed windows per view",
        cov.late_rows, cov.rounds, cov.closed_windows
    );

    // kill -9 and restart: views, counts and the watermark are restored ...
    drop(e);
    let eddy = eddy.restart();
    let e = eddy.connect().await;
    let m = compare(&e, &p, &mut cov).await;
    report(seed, "after kill -9 and restart", &m, &[]);
    // ... and late rows are still judged against the restored watermark.
    run_batches(
        seed,
        "after restart",
        &e,
        &p,
        &mut g,
        &mut seq,
        15,
        3,
        &mut cov,
    )
    .await;
}

fn seeds() -> Vec<u64> {
    match std::env::var("EDDY_DIFF_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_watermarks_match_postgres() {
    for seed in seeds() {
        run_seed(seed).await;
    }
}
