//! Event time survives `kill -9`: a stream's watermark and late-row count, and the
//! windowed views over it, come back after a crash exactly as an uninterrupted run would
//! have them.
//!
//! eddy gets an INSERT-written stream with a watermark (5 s of lateness, no idle
//! advance, so everything is a function of the rows alone) and three views over its
//! one-minute tumbling windows:
//!
//! - `final_counts`: EMIT ON WINDOW CLOSE;
//! - `recent_counts`: EMIT CHANGES, WITH (retention = '2 minutes');
//! - `recent_final`: EMIT ON WINDOW CLOSE, WITH (retention = '2 minutes').
//!
//! Rows (mostly increasing event times with jitter, some far in the past, some exactly
//! on the lateness boundary) go in through INSERT statements of random size; eddy is
//! killed with SIGKILL after some of them and restarted on the same data directory. The
//! test computes the expected state from the same rows, in arrival order:
//!
//! - a row is late iff its `ts` is below the running maximum (over the rows before it)
//!   minus the lateness; late rows are dropped (not in `count(*)`) and counted
//!   (`late_rows` in SHOW WATERMARKS);
//! - the watermark is the largest `ts` minus the lateness;
//! - EMIT ON WINDOW CLOSE views hold the windows with `window_end <=` the watermark;
//! - the retention views drop windows whose `window_end` is more than the retention
//!   below the watermark.
//!
//! One run never checkpoints (`--checkpoint-interval never`: after the DDL, everything
//! is replayed from the input log); the other uses the default interval and also crashes
//! after a checkpoint with writes after it. Both check that a row late relative to the
//! pre-crash watermark is still dropped after the restart (the tracker's state survived),
//! and that a stream with `idle_timeout = '1 second'` closes its last window after a few
//! quiet seconds, with no further insert (one run across a restart, one without).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, NaiveDate, NaiveDateTime};
use common::{eventually, Eddy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// `WATERMARK FOR ts AS ts - INTERVAL '5 seconds'`.
const LATENESS: i64 = 5;
/// The views' `retention = '2 minutes'`.
const RETENTION: i64 = 120;
/// TUMBLE(..., INTERVAL '1 minute').
const WINDOW: i64 = 60;

const SETUP: &str = "
CREATE STREAM ev (k INT, v BIGINT, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never');
CREATE MATERIALIZED VIEW final_counts AS
  SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s
  FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end
  EMIT ON WINDOW CLOSE;
CREATE MATERIALIZED VIEW recent_counts WITH (retention = '2 minutes') AS
  SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s
  FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end;
CREATE MATERIALIZED VIEW recent_final WITH (retention = '2 minutes') AS
  SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s
  FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end
  EMIT ON WINDOW CLOSE;
";

const VIEWS: [&str; 3] = ["final_counts", "recent_counts", "recent_final"];

/// Event times are seconds since this (a whole minute, so windows align with it).
fn base() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 5, 1)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap()
}

fn ts_text(secs: i64) -> String {
    (base() + ChronoDuration::seconds(secs))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[derive(Clone, Copy, Debug)]
struct Row {
    k: i32,
    v: i64,
    /// Seconds after `base()`.
    ts: i64,
}

/// What an uninterrupted run computes from the rows, in arrival order.
#[derive(Default)]
struct Model {
    max: Option<i64>,
    kept: Vec<Row>,
    late: u64,
}

impl Model {
    fn watermark(&self) -> Option<i64> {
        self.max.map(|m| m - LATENESS)
    }

    fn push(&mut self, r: Row) {
        if self.watermark().is_some_and(|w| r.ts < w) {
            self.late += 1;
        } else {
            self.max = Some(self.max.map_or(r.ts, |m| m.max(r.ts)));
            self.kept.push(r);
        }
    }

    /// (k, window start) -> (count, sum) over the kept rows.
    fn windows(&self) -> BTreeMap<(i32, i64), (i64, i64)> {
        let mut w: BTreeMap<(i32, i64), (i64, i64)> = BTreeMap::new();
        for r in &self.kept {
            let start = r.ts.div_euclid(WINDOW) * WINDOW;
            let e = w.entry((r.k, start)).or_default();
            e.0 += 1;
            e.1 += r.v;
        }
        w
    }

    /// The rows of a view: `closed_only` for EMIT ON WINDOW CLOSE, `retained` for a
    /// retention.
    fn view(&self, closed_only: bool, retained: bool) -> Vec<String> {
        let wm = self.watermark();
        let mut out: Vec<String> = self
            .windows()
            .into_iter()
            .filter(|((_, start), _)| {
                let end = start + WINDOW;
                let closed = wm.is_some_and(|w| end <= w);
                let kept = wm.is_none_or(|w| end >= w - RETENTION);
                (!closed_only || closed) && (!retained || kept)
            })
            .map(|((k, start), (n, s))| {
                format!("{k},{},{},{n},{s}", ts_text(start), ts_text(start + WINDOW))
            })
            .collect();
        out.sort();
        out
    }

    fn expected(&self, view: &str) -> Vec<String> {
        match view {
            "final_counts" => self.view(true, false),
            "recent_counts" => self.view(false, true),
            "recent_final" => self.view(true, true),
            _ => unreachable!(),
        }
    }
}

/// Generates rows, feeding each to the model as it goes (the order eddy sees them in).
struct Feed {
    rng: StdRng,
    clock: i64,
    model: Model,
}

impl Feed {
    fn new(seed: u64) -> Feed {
        Feed {
            rng: StdRng::seed_from_u64(seed),
            clock: 0,
            model: Model::default(),
        }
    }

    fn row(&mut self) -> Row {
        let r = &mut self.rng;
        self.clock += r.random_range(0..=5);
        let k = r.random_range(0..3);
        let v = r.random_range(1..100);
        let ts = match (r.random_range(0..20), self.model.max) {
            // Far in the past.
            (0, _) => self.clock - r.random_range(30..300),
            // Exactly on the watermark (in time) or just below it (late).
            (1, Some(m)) => m - LATENESS,
            (2, Some(m)) => m - LATENESS - 1,
            _ => self.clock + r.random_range(-12..=2),
        };
        let row = Row { k, v, ts };
        self.model.push(row);
        row
    }

    /// One INSERT of 1..=12 rows.
    fn statement(&mut self) -> String {
        let n = self.rng.random_range(1..=12);
        let rows: Vec<Row> = (0..n).map(|_| self.row()).collect();
        insert_sql("ev", &rows)
    }

    /// Rows chosen by the test (fed to the model too).
    fn rows(&mut self, rows: &[Row]) -> String {
        for r in rows {
            self.model.push(*r);
        }
        insert_sql("ev", rows)
    }
}

fn insert_sql(table: &str, rows: &[Row]) -> String {
    let values: Vec<String> = rows
        .iter()
        .map(|r| format!("({}, {}, '{}')", r.k, r.v, ts_text(r.ts)))
        .collect();
    format!("INSERT INTO {table} VALUES {}", values.join(", "))
}

async fn rows(c: &Client, sql: &str) -> Vec<String> {
    let mut out = vec![];
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        if let SimpleQueryMessage::Row(r) = m {
            out.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    out.sort();
    out
}

/// SHOW WATERMARKS: name -> (watermark, late_rows).
async fn watermarks(c: &Client) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    for m in c.simple_query("SHOW WATERMARKS").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            let name = r.get("name").unwrap().to_string();
            let wm = r.get("watermark").unwrap_or("NULL").to_string();
            let late: i64 = r.get("late_rows").unwrap().parse().unwrap();
            out.insert(name, (wm, late));
        }
    }
    out
}

/// Everything eddy shows must be what the model computed.
async fn check(c: &Client, m: &Model, when: &str) {
    for v in VIEWS {
        let got = rows(
            c,
            &format!("SELECT k, window_start, window_end, n, s FROM {v}"),
        )
        .await;
        let want = m.expected(v);
        assert_eq!(
            got,
            want,
            "{when}: view {v} (watermark {:?})",
            m.watermark().map(ts_text)
        );
    }
    assert_eq!(
        rows(c, "SELECT count(*) FROM ev").await,
        vec![m.kept.len().to_string()],
        "{when}: count(*) of ev (the rows that were not late)"
    );
    let wm = m.watermark().map_or("NULL".to_string(), ts_text);
    let shown = watermarks(c).await;
    assert_eq!(
        shown.get("ev"),
        Some(&(wm.clone(), m.late as i64)),
        "{when}: SHOW WATERMARKS for ev (watermark, late_rows); all: {shown:?}"
    );
    for v in VIEWS {
        // Late rows never reach the views: none of their windows changes after closing.
        assert_eq!(
            shown.get(v),
            Some(&(wm.clone(), 0)),
            "{when}: SHOW WATERMARKS for {v}; all: {shown:?}"
        );
    }
}

async fn run_statements(c: &Client, feed: &mut Feed, n: usize) {
    for _ in 0..n {
        let sql = feed.statement();
        c.batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// After a crash, the first rows meet the watermark from before it: a row just below it
/// is late (a fresh tracker, with no watermark, would keep it), one exactly on it is not.
async fn late_after_restart(c: &Client, feed: &mut Feed, when: &str) {
    let wm = feed
        .model
        .watermark()
        .expect("a watermark before the crash");
    let late_before = feed.model.late;
    let kept_before = feed.model.kept.len();
    let sql = feed.rows(&[
        Row {
            k: 0,
            v: 1000,
            ts: wm - 1,
        },
        Row {
            k: 1,
            v: 1000,
            ts: wm - 3600,
        },
        Row {
            k: 2,
            v: 1000,
            ts: wm,
        },
    ]);
    assert_eq!(feed.model.late, late_before + 2);
    assert_eq!(feed.model.kept.len(), kept_before + 1);
    c.batch_execute(&sql).await.unwrap();
    check(
        c,
        &feed.model,
        &format!("{when}: rows late for the pre-crash watermark"),
    )
    .await;
}

/// Move the watermark exactly onto a minute: the window ending there has closed
/// (`window_end <= watermark`), and the one ending exactly the retention below it is
/// still retained (only windows ending *more* than the retention below go).
async fn watermark_on_a_boundary(c: &Client, feed: &mut Feed, when: &str) {
    let wm = feed.model.watermark().expect("a watermark");
    let target = (wm.div_euclid(WINDOW) + 1) * WINDOW;
    let sql = feed.rows(&[Row {
        k: 0,
        v: 7,
        ts: target + LATENESS,
    }]);
    assert_eq!(feed.model.watermark(), Some(target));
    let windows = feed.model.windows();
    assert!(
        windows.keys().any(|(_, start)| start + WINDOW == target),
        "{when}: a window ends on the watermark"
    );
    assert!(
        windows
            .keys()
            .any(|(_, start)| start + WINDOW == target - RETENTION),
        "{when}: a window ends exactly the retention below the watermark"
    );
    c.batch_execute(&sql).await.unwrap();
    check(
        c,
        &feed.model,
        &format!("{when}: watermark on a window boundary"),
    )
    .await;
}

fn data_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    (dir, data)
}

const IDLE_SETUP: &str = "
CREATE STREAM quiet (k INT, v BIGINT, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2 seconds') WITH (idle_timeout = '1 second');
CREATE MATERIALIZED VIEW quiet_final AS
  SELECT window_start, window_end, count(*) AS n, sum(v) AS s
  FROM TUMBLE(quiet, ts, INTERVAL '1 minute') GROUP BY window_start, window_end
  EMIT ON WINDOW CLOSE;
";

/// The rows of `quiet`: the last window, [10:01, 10:02), has 2 rows; its end is 7 s
/// past the watermark they leave (10:01:55 - 2 s = 10:01:53).
const IDLE_ROWS: &str = "INSERT INTO quiet VALUES
  (1, 1, '2024-05-01 10:00:10'), (1, 2, '2024-05-01 10:00:50'),
  (1, 4, '2024-05-01 10:01:20'), (1, 8, '2024-05-01 10:01:55')";

/// With the rows of `quiet` in: nothing more is inserted, and idleness must close the
/// last window (the watermark moves on with the wall clock after 1 s of quiet).
async fn idle_closes_the_last_window(c: &Client, when: &str) {
    let last = "2024-05-01 10:01:00,2024-05-01 10:02:00,2,12".to_string();
    let closed = eventually(Duration::from_secs(40), || async {
        rows(c, "SELECT window_start, window_end, n, s FROM quiet_final")
            .await
            .contains(&last)
    })
    .await;
    let all = vec![
        "2024-05-01 10:00:00,2024-05-01 10:01:00,2,3".to_string(),
        last,
    ];
    assert!(
        closed,
        "{when}: the idle watermark did not close the last window of quiet; quiet_final: {:?}, \
         SHOW WATERMARKS: {:?}",
        rows(c, "SELECT window_start, window_end, n, s FROM quiet_final").await,
        watermarks(c).await
    );
    assert_eq!(
        rows(c, "SELECT window_start, window_end, n, s FROM quiet_final").await,
        all,
        "{when}: quiet_final"
    );
    let shown = watermarks(c).await;
    let (wm, late) = shown
        .get("quiet")
        .cloned()
        .expect("quiet in SHOW WATERMARKS");
    assert!(
        wm.as_str() >= "2024-05-01 10:02:00",
        "{when}: the watermark of quiet ({wm}) is past the last window's end"
    );
    assert_eq!(late, 0, "{when}: late rows of quiet");
    // A row for the closed window is now late; the view keeps its final row.
    c.batch_execute("INSERT INTO quiet VALUES (1, 100, '2024-05-01 10:01:59')")
        .await
        .unwrap();
    assert_eq!(
        watermarks(c).await["quiet"].1,
        1,
        "{when}: late rows of quiet"
    );
    assert_eq!(
        rows(c, "SELECT window_start, window_end, n, s FROM quiet_final").await,
        all,
        "{when}: quiet_final after a late row"
    );
    assert_eq!(rows(c, "SELECT count(*) FROM quiet").await, vec!["4"]);
}

/// No checkpoint after the DDL: each restart rebuilds everything from the input log.
#[tokio::test(flavor = "multi_thread")]
async fn event_time_survives_kill_9_without_checkpoints() {
    const NEVER: &[&str] = &["--checkpoint-interval", "never"];
    let (_dir, data) = data_dir();
    let mut feed = Feed::new(1);
    let mut eddy = Eddy::start_in(&data, NEVER);
    let c = eddy.connect().await;
    c.batch_execute(SETUP).await.unwrap();
    run_statements(&c, &mut feed, 25).await;
    watermark_on_a_boundary(&c, &mut feed, "before the first crash").await;
    check(&c, &feed.model, "before the first crash").await;
    assert!(feed.model.late > 0, "the rows include late ones");
    let reasons: Vec<String> = rows(&c, "SHOW CHECKPOINTS")
        .await
        .iter()
        .map(|l| l.split(',').nth(2).unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons.iter().all(|r| r == "ddl"),
        "only the DDL checkpointed: {reasons:?}"
    );
    drop(c);

    eddy.kill9();
    let mut eddy = Eddy::start_in(&data, NEVER);
    let c = eddy.connect().await;
    check(&c, &feed.model, "after the first crash (log replayed)").await;
    late_after_restart(&c, &mut feed, "after the first crash").await;
    run_statements(&c, &mut feed, 20).await;
    check(&c, &feed.model, "before the second crash").await;
    drop(c);

    // A second crash replays the whole log again, the new writes included.
    eddy.kill9();
    let mut eddy = Eddy::start_in(&data, NEVER);
    let c = eddy.connect().await;
    check(&c, &feed.model, "after the second crash").await;
    late_after_restart(&c, &mut feed, "after the second crash").await;
    run_statements(&c, &mut feed, 10).await;
    check(&c, &feed.model, "after more rows").await;

    // Idleness across a crash: the rows go in, eddy dies, and after the restart the
    // watermark moves on by itself until the last window closes.
    c.batch_execute(IDLE_SETUP).await.unwrap();
    c.batch_execute(IDLE_ROWS).await.unwrap();
    assert_eq!(
        rows(&c, "SELECT window_start, window_end, n, s FROM quiet_final").await,
        vec!["2024-05-01 10:00:00,2024-05-01 10:01:00,2,3"],
        "quiet: only the first window has closed so far"
    );
    drop(c);
    eddy.kill9();
    let eddy = Eddy::start_in(&data, NEVER);
    let c = eddy.connect().await;
    idle_closes_the_last_window(&c, "after a crash").await;
    // The rest was not disturbed by the idle stream.
    check(&c, &feed.model, "at the end").await;
}

/// The default checkpoint interval (1 s): crashes land after a checkpoint with writes
/// after it, so a restart restores the checkpoint and replays the log's tail.
#[tokio::test(flavor = "multi_thread")]
async fn event_time_survives_kill_9_with_checkpoints() {
    let (_dir, data) = data_dir();
    let mut feed = Feed::new(2);
    let mut eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    c.batch_execute(SETUP).await.unwrap();
    run_statements(&c, &mut feed, 20).await;
    // Let a periodic checkpoint happen, then write more before the crash.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run_statements(&c, &mut feed, 10).await;
    check(&c, &feed.model, "before the first crash").await;
    assert!(feed.model.late > 0, "the rows include late ones");
    drop(c);

    eddy.kill9();
    let mut eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    check(&c, &feed.model, "after the first crash").await;
    late_after_restart(&c, &mut feed, "after the first crash").await;
    run_statements(&c, &mut feed, 15).await;
    // An explicit checkpoint, then more writes, then the crash.
    c.batch_execute("CHECKPOINT").await.unwrap();
    run_statements(&c, &mut feed, 10).await;
    watermark_on_a_boundary(&c, &mut feed, "before the second crash").await;
    drop(c);

    eddy.kill9();
    let eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    check(&c, &feed.model, "after the second crash").await;
    late_after_restart(&c, &mut feed, "after the second crash").await;

    // Idleness without a crash.
    c.batch_execute(IDLE_SETUP).await.unwrap();
    c.batch_execute(IDLE_ROWS).await.unwrap();
    assert_eq!(
        rows(&c, "SELECT window_start, window_end, n, s FROM quiet_final").await,
        vec!["2024-05-01 10:00:00,2024-05-01 10:01:00,2,3"],
        "quiet: only the first window has closed so far"
    );
    idle_closes_the_last_window(&c, "without a crash").await;
    check(&c, &feed.model, "at the end").await;
}
