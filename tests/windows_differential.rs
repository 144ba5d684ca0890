//! Differential test of event time: watermarks, late rows, windowed views, SESSION
//! windows, lookup joins and interval joins, with PostgreSQL as the oracle.
//!
//! eddy gets two streams with watermarks, a table, and views over them:
//!
//! ```sql
//! CREATE STREAM ev (k INT, v BIGINT, ts TIMESTAMP,
//!   WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never');
//! CREATE STREAM ev2 (k INT, w BIGINT, ts TIMESTAMP,
//!   WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never');
//! CREATE TABLE dim (k INT PRIMARY KEY, label TEXT);
//!
//! CREATE MATERIALIZED VIEW tumble_eowc AS SELECT k, window_start, window_end, count(*) AS n,
//!   sum(v) AS s FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end
//!   EMIT ON WINDOW CLOSE;
//! -- ... and the same with EMIT CHANGES, and HOP(ev, ts, 30 s, 2 min) both ways
//! CREATE MATERIALIZED VIEW session_changes AS SELECT k, window_start, window_end,
//!   count(*) AS n, sum(v) AS s FROM SESSION(ev, ts, INTERVAL '30 seconds')
//!   GROUP BY k, window_start, window_end;
//! -- ... and the same EMIT ON WINDOW CLOSE, and one session per gap over all keys
//! CREATE MATERIALIZED VIEW lookup_left AS SELECT e.k, e.v, d.label
//!   FROM ev e LEFT JOIN dim FOR SYSTEM_TIME AS OF PROCTIME() d ON e.k = d.k;
//! -- ... and an inner lookup join
//! CREATE MATERIALIZED VIEW interval_inner AS SELECT a.k, a.v, b.w FROM ev a JOIN ev2 b
//!   ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND a.ts + INTERVAL '20 seconds';
//! -- ... and the same as a LEFT and as a FULL join
//! ```
//!
//! A random sequence of events (keys 0..5 and a few NULLs, random values, timestamps
//! mostly increasing with up to ~20 s of jitter, some far in the past, some exactly on
//! the lateness boundary, some exactly one session gap (or 1 ms less) after the latest
//! row of their key, a few NULL) goes to eddy in INSERT statements of random size.
//! `ev2` gets events of the same kind, in its own statements, with its own clock that
//! follows `ev`'s (up to 40 s behind or 10 s ahead, now and then minutes ahead), some
//! exactly on (or 1 ms outside) the interval join's bounds around the latest `ev` row of
//! their key: each stream has its own watermark and its own late rows. Now and then a
//! row is sent twice in a row (streams are multisets). Between them come random
//! INSERT / UPDATE (of labels and of keys) / DELETE statements on `dim`, each followed by
//! a FLUSH, so every statement is its own epoch.
//!
//! The same rows go to PostgreSQL tables `ev (seq, k, v, ts)` and `ev2 (seq, k, w, ts)`,
//! where `seq` is the arrival order: the rows of one INSERT arrive in VALUES order,
//! statements in the order they run, and one counter numbers the rows of both streams and
//! the `dim` statements. (`idle_timeout = 'never'` keeps eddy's watermarks from advancing
//! with the wall clock, so everything is a function of the statements alone.)
//!
//! The oracle, as PostgreSQL views over those tables:
//!
//! - The watermark a row meets on arrival is the largest `ts` of the rows of its stream
//!   before it, minus the lateness: `max(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED
//!   PRECEDING AND 1 PRECEDING) - INTERVAL '5 seconds'` (NULL before any row with a `ts`:
//!   nothing is late then). A row is late iff `ts < that watermark`; NULL `ts` is never
//!   late. A late row never raises the maximum (it is below it), so taking the maximum
//!   over *all* earlier rows, late ones included, is the same as over the kept ones.
//! - Late rows are dropped: `ev_kept` is every row that is not late; `ev_late` the rest
//!   (and `ev2_kept`, `ev2_late` for `ev2`).
//! - A stream's current watermark is its `max(ts) - 5 s` over all rows. A view over both
//!   streams has the smaller of the two (none until both have one).
//! - TUMBLE's windows are `date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01')`
//!   plus one minute; HOP's (slide 30 s, size 2 min) are that bin shifted back by 0..3
//!   slides (`generate_series`), each two minutes long. A row with a NULL `ts` is kept
//!   (it counts in `SELECT count(*) FROM ev`) but belongs to no window (docs/sql.md,
//!   "Event time: watermarks, late rows, emit modes"), so `tumbled` and `hopped` leave
//!   it out.
//! - An `EMIT CHANGES` view holds every window over `ev_kept`, closed or open; an
//!   `EMIT ON WINDOW CLOSE` view holds exactly the windows with `window_end <=` the
//!   current watermark, with their final values.
//! - SESSION (gap 30 s), gaps and islands over the kept rows with a `ts`: per key (NULL
//!   is a key like any other, as in GROUP BY), ordered by `ts`, a row starts a session
//!   unless the previous row is less than 30 s before it (`lag`); a running sum of the
//!   starts numbers the sessions (over peers, so rows with equal `ts` share a session).
//!   `window_start` is a session's first `ts`, `window_end` its last plus 30 s. A closed
//!   session is final: a row that could extend it (`ts < window_end <= watermark`) is
//!   late, so the `EMIT ON WINDOW CLOSE` view holds the sessions with `window_end <=`
//!   the watermark.
//! - Lookup join: PostgreSQL runs the same `dim` statements, and after each one brings
//!   a history table `dim_hist (k, label, valid_from, valid_to)` up to date: versions
//!   that no longer match `dim` get `valid_to = ` the statement's seq, rows of `dim`
//!   without an open version get one from it. Each kept `ev` row joins the version of
//!   its key that was valid at its arrival (`valid_from < seq < valid_to`), and keeps
//!   that answer when `dim` changes later.
//! - Interval join: the matched pairs are those of the plain join of `ev_kept` and
//!   `ev2_kept` (state expiry must not lose any). In the outer joins an unmatched row
//!   comes out NULL-padded only once the watermark proves no partner can come
//!   (docs/sql.md, "Joining streams and tables"): the join's bound is `a.ts - b.ts in
//!   [-20 s, 10 s]`, so an `ev` row is released when `ts < watermark - 20 s`, an `ev2`
//!   row when `ts < watermark - 10 s` (the smaller watermark of the two); a row with a
//!   NULL key or `ts` matches nothing and comes out at once.
//!
//! After every few batches (and a FLUSH) these must agree: each view, an ad-hoc
//! windowed query, `SELECT count(*)` of each stream (kept rows only), `dim`, and `SHOW
//! WATERMARKS`' `watermark` and `late_rows` for `ev`, `ev2` and every view (which must all
//! be listed); and no view's EXPLAIN may show a FAILED operator (a failed view stops
//! and answers with stale rows; EXPLAIN says why). Two thirds of the way a CHECKPOINT is taken; at the end eddy is killed
//! (-9) and restarted (loading that checkpoint or a later one and replaying the log):
//! everything must still agree, and keep agreeing as more rows (late ones included) and
//! `dim` changes arrive; then once more (a second kill -9 and restart).
//!
//! Seeds are fixed so a failure reproduces; `EDDY_DIFF_SEEDS=7,8` picks others. A failure
//! prints the seed, what differs (rows only eddy has, rows only PostgreSQL has) and the
//! statements since the previous comparison.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration as ChronoDuration, NaiveDate, NaiveDateTime};
use common::{normalize, rows, Eddy, Postgres};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The lateness of the streams' watermarks, in milliseconds (`ts - INTERVAL '5 seconds'`).
const LATENESS_MS: i64 = 5_000;

/// eddy's streams and table.
const EDDY_SETUP: &[&str] = &[
    "CREATE STREAM ev (k INT, v BIGINT, ts TIMESTAMP, \
     WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never')",
    "CREATE STREAM ev2 (k INT, w BIGINT, ts TIMESTAMP, \
     WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (idle_timeout = 'never')",
    "CREATE TABLE dim (k INT PRIMARY KEY, label TEXT)",
];

/// The oracle's base tables and the arrival-order views every check builds on.
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

CREATE TABLE ev2 (seq BIGINT PRIMARY KEY, k INT, w BIGINT, ts TIMESTAMP);
CREATE VIEW ev2_arrivals AS
  SELECT seq, k, w, ts,
         max(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
           - INTERVAL '5 seconds' AS wm_at_arrival
  FROM ev2;
CREATE VIEW ev2_kept AS
  SELECT seq, k, w, ts FROM ev2_arrivals
  WHERE ts IS NULL OR wm_at_arrival IS NULL OR ts >= wm_at_arrival;
CREATE VIEW ev2_late AS
  SELECT seq, k, w, ts FROM ev2_arrivals WHERE ts < wm_at_arrival;
CREATE VIEW current_wm2 AS SELECT max(ts) - INTERVAL '5 seconds' AS wm FROM ev2;
-- A view over both streams: the smaller watermark, none until both have one.
CREATE VIEW join_wm AS
  SELECT CASE WHEN a.wm IS NULL OR b.wm IS NULL THEN NULL ELSE least(a.wm, b.wm) END AS wm
  FROM current_wm a, current_wm2 b;

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

-- SESSION(ev, ts, 30 s), gaps and islands. A row starts a session unless the previous
-- row of its key is less than 30 s before it; the running sum of starts (RANGE framing:
-- rows with equal ts are peers and get the same number) numbers the sessions.
CREATE VIEW session_rows AS
  SELECT k, v, ts, sum(starts) OVER (PARTITION BY k ORDER BY ts) AS sid
  FROM (SELECT k, v, ts,
               CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) < INTERVAL '30 seconds'
                    THEN 0 ELSE 1 END AS starts
        FROM ev_kept WHERE ts IS NOT NULL) x;
CREATE VIEW sessions AS
  SELECT k, min(ts) AS window_start, max(ts) + INTERVAL '30 seconds' AS window_end,
         count(*) AS n, sum(v) AS s
  FROM session_rows GROUP BY k, sid;
-- The same with one key for all rows.
CREATE VIEW global_session_rows AS
  SELECT v, ts, sum(starts) OVER (ORDER BY ts) AS sid
  FROM (SELECT v, ts,
               CASE WHEN ts - lag(ts) OVER (ORDER BY ts) < INTERVAL '30 seconds'
                    THEN 0 ELSE 1 END AS starts
        FROM ev_kept WHERE ts IS NOT NULL) x;
CREATE VIEW global_sessions AS
  SELECT min(ts) AS window_start, max(ts) + INTERVAL '30 seconds' AS window_end,
         count(*) AS n, max(v) AS hi
  FROM global_session_rows GROUP BY sid;

-- The lookup join's table, and every version each key had: valid from the seq of the
-- statement that made it to the seq of the one that changed it (NULL: still valid).
CREATE TABLE dim (k INT PRIMARY KEY, label TEXT);
CREATE TABLE dim_hist (k INT NOT NULL, label TEXT, valid_from BIGINT NOT NULL, valid_to BIGINT);
-- Each kept ev row with the version of its key valid when it arrived (dk NULL: none).
CREATE VIEW ev_dim AS
  SELECT e.seq, e.k, e.v, e.ts, h.k AS dk, h.label, h.valid_to
  FROM ev_kept e LEFT JOIN dim_hist h
    ON h.k = e.k AND h.valid_from < e.seq AND (h.valid_to IS NULL OR e.seq < h.valid_to);

-- The interval join: pairs of the plain join of the kept rows; unmatched rows of each
-- side, released (NULL-padded in an outer join) once the watermark proves no partner can
-- come (a.ts - b.ts in [-20 s, 10 s]: an ev row when ts < wm - 20 s, an ev2 row when
-- ts < wm - 10 s) or at once when the key or ts is NULL.
CREATE VIEW iv_pairs AS
  SELECT a.seq AS aseq, b.seq AS bseq, a.k, a.v, b.k AS bk, b.w
  FROM ev_kept a JOIN ev2_kept b
    ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND a.ts + INTERVAL '20 seconds';
CREATE VIEW iv_left_unmatched AS
  SELECT a.seq, a.k, a.v, a.ts,
         a.k IS NULL OR a.ts IS NULL
           OR coalesce(a.ts < (SELECT wm FROM join_wm) - INTERVAL '20 seconds', false) AS released
  FROM ev_kept a WHERE NOT EXISTS (SELECT 1 FROM iv_pairs p WHERE p.aseq = a.seq);
CREATE VIEW iv_right_unmatched AS
  SELECT b.seq, b.k, b.w, b.ts,
         b.k IS NULL OR b.ts IS NULL
           OR coalesce(b.ts < (SELECT wm FROM join_wm) - INTERVAL '10 seconds', false) AS released
  FROM ev2_kept b WHERE NOT EXISTS (SELECT 1 FROM iv_pairs p WHERE p.bseq = b.seq);
";

/// Bring `dim_hist` up to date after a statement on `dim` with arrival number `{seq}`:
/// close the versions `dim` no longer has, open one for each row without one.
const PG_DIM_HISTORY: &str = "
UPDATE dim_hist h SET valid_to = {seq}
  WHERE valid_to IS NULL AND NOT EXISTS
    (SELECT 1 FROM dim d WHERE d.k = h.k AND d.label IS NOT DISTINCT FROM h.label);
INSERT INTO dim_hist
  SELECT k, label, {seq}, NULL FROM dim d
  WHERE NOT EXISTS (SELECT 1 FROM dim_hist h WHERE h.k = d.k AND h.valid_to IS NULL);
";

/// Which watermark a view has: that of `ev`, or the smaller of `ev`'s and `ev2`'s.
#[derive(Clone, Copy, PartialEq)]
enum Fed {
    Ev,
    Both,
}

/// A view: it becomes an eddy MATERIALIZED VIEW and a PostgreSQL VIEW of the same name,
/// compared as `SELECT * FROM name`.
struct View {
    name: &'static str,
    eddy: &'static str,
    pg: &'static str,
    fed: Fed,
}

const VIEWS: &[View] = &[
    View {
        name: "tumble_eowc",
        eddy: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end \
         EMIT ON WINDOW CLOSE",
        pg: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM tumbled \
         GROUP BY k, window_start, window_end \
         HAVING window_end <= (SELECT wm FROM current_wm)",
        fed: Fed::Ev,
    },
    View {
        name: "tumble_changes",
        eddy: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end",
        pg: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM tumbled \
         GROUP BY k, window_start, window_end",
        fed: Fed::Ev,
    },
    View {
        name: "hop_eowc",
        eddy: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM HOP(ev, ts, INTERVAL '30 seconds', INTERVAL '2 minutes') \
         GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE",
        pg: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM hopped \
         GROUP BY k, window_start, window_end \
         HAVING window_end <= (SELECT wm FROM current_wm)",
        fed: Fed::Ev,
    },
    View {
        name: "hop_changes_global",
        eddy: "SELECT window_start, window_end, count(*) AS n, min(v) AS lo, max(v) AS hi \
         FROM HOP(ev, ts, INTERVAL '30 seconds', INTERVAL '2 minutes') \
         GROUP BY window_start, window_end",
        pg: "SELECT window_start, window_end, count(*) AS n, min(v) AS lo, max(v) AS hi \
         FROM hopped GROUP BY window_start, window_end",
        fed: Fed::Ev,
    },
    View {
        name: "session_changes",
        eddy: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM SESSION(ev, ts, INTERVAL '30 seconds') GROUP BY k, window_start, window_end",
        pg: "SELECT k, window_start, window_end, n, s FROM sessions",
        fed: Fed::Ev,
    },
    View {
        name: "session_eowc",
        eddy: "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
         FROM SESSION(ev, ts, INTERVAL '30 seconds') GROUP BY k, window_start, window_end \
         EMIT ON WINDOW CLOSE",
        pg: "SELECT k, window_start, window_end, n, s FROM sessions \
         WHERE window_end <= (SELECT wm FROM current_wm)",
        fed: Fed::Ev,
    },
    View {
        name: "session_global",
        eddy: "SELECT window_start, window_end, count(*) AS n, max(v) AS hi \
         FROM SESSION(ev, ts, INTERVAL '30 seconds') GROUP BY window_start, window_end",
        pg: "SELECT window_start, window_end, n, hi FROM global_sessions",
        fed: Fed::Ev,
    },
    View {
        name: "lookup_left",
        eddy: "SELECT e.k, e.v, d.label \
         FROM ev e LEFT JOIN dim FOR SYSTEM_TIME AS OF PROCTIME() d ON e.k = d.k",
        pg: "SELECT k, v, label FROM ev_dim",
        fed: Fed::Ev,
    },
    View {
        name: "lookup_inner",
        eddy: "SELECT e.k, e.v, e.ts, d.k AS dk, d.label \
         FROM ev e JOIN dim FOR SYSTEM_TIME AS OF PROCTIME() d ON e.k = d.k",
        pg: "SELECT k, v, ts, dk, label FROM ev_dim WHERE dk IS NOT NULL",
        fed: Fed::Ev,
    },
    View {
        name: "interval_inner",
        eddy: "SELECT a.k, a.v, b.w FROM ev a JOIN ev2 b ON a.k = b.k \
         AND b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND a.ts + INTERVAL '20 seconds'",
        pg: "SELECT k, v, w FROM iv_pairs",
        fed: Fed::Both,
    },
    View {
        name: "interval_left",
        eddy: "SELECT a.k, a.v, b.w FROM ev a LEFT JOIN ev2 b ON a.k = b.k \
         AND b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND a.ts + INTERVAL '20 seconds'",
        pg: "SELECT k, v, w FROM iv_pairs \
         UNION ALL SELECT k, v, NULL FROM iv_left_unmatched WHERE released",
        fed: Fed::Both,
    },
    View {
        name: "interval_full",
        eddy: "SELECT a.k, a.v, b.k AS bk, b.w FROM ev a FULL JOIN ev2 b ON a.k = b.k \
         AND b.ts BETWEEN a.ts - INTERVAL '10 seconds' AND a.ts + INTERVAL '20 seconds'",
        pg: "SELECT k, v, bk, w FROM iv_pairs \
         UNION ALL SELECT k, v, NULL, NULL FROM iv_left_unmatched WHERE released \
         UNION ALL SELECT NULL, NULL, k, w FROM iv_right_unmatched WHERE released",
        fed: Fed::Both,
    },
];

/// (what, eddy query, PostgreSQL query): compared as multisets of rows.
const QUERIES: &[(&str, &str, &str)] = &[
    (
        "count of ev",
        "SELECT count(*) FROM ev",
        "SELECT count(*) FROM ev_kept",
    ),
    (
        "count of ev2",
        "SELECT count(*) FROM ev2",
        "SELECT count(*) FROM ev2_kept",
    ),
    (
        "dim",
        "SELECT k, label FROM dim",
        "SELECT k, label FROM dim",
    ),
    (
        "ad-hoc TUMBLE over ev",
        "SELECT window_start, count(*) AS n, sum(v) AS s \
         FROM TUMBLE(ev, ts, INTERVAL '1 minute') GROUP BY window_start",
        "SELECT window_start, count(*) AS n, sum(v) AS s FROM tumbled GROUP BY window_start",
    ),
];

/// The oracle for `SHOW WATERMARKS`: `ev`'s watermark and late rows, `ev2`'s, and the
/// watermark of a view over both.
const PG_WATERMARKS: &str = "SELECT (SELECT wm FROM current_wm), (SELECT count(*) FROM ev_late), \
     (SELECT wm FROM current_wm2), (SELECT count(*) FROM ev2_late), (SELECT wm FROM join_wm)";

/// What the workload exercised so far, from the oracle (see [`Coverage`]).
const PG_COVERAGE: &str = "SELECT \
     (SELECT count(*) FROM sessions WHERE window_end <= (SELECT wm FROM current_wm)), \
     (SELECT count(*) FROM sessions WHERE n > 1), \
     (SELECT count(*) FROM ev_dim WHERE valid_to IS NOT NULL \
        OR (dk IS NULL AND k IN (SELECT k FROM dim))), \
     (SELECT count(*) FROM iv_pairs), \
     (SELECT count(*) FROM iv_left_unmatched WHERE NOT released), \
     (SELECT count(*) FROM iv_left_unmatched WHERE released AND k IS NOT NULL AND ts IS NOT NULL), \
     (SELECT count(*) FROM iv_right_unmatched WHERE released AND k IS NOT NULL AND ts IS NOT NULL)";

/// One event, as generated (`v` is `w` in `ev2`).
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

/// The event time of one stream.
#[derive(Default)]
struct Clock {
    /// The event-time "now" that most rows are near (ms after BASE).
    now: i64,
    /// The largest ts generated so far (what eddy's watermark is computed from).
    max_ts: Option<i64>,
    /// The largest ts of each key's rows that were not late.
    last: BTreeMap<Option<i32>, i64>,
}

/// Which stream.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Which {
    Ev,
    Ev2,
}

impl Which {
    fn table(self) -> &'static str {
        match self {
            Which::Ev => "ev",
            Which::Ev2 => "ev2",
        }
    }
}

/// Keys of `dim` are 0..DIM_KEYS: 5 and 6 never occur in the streams.
const DIM_KEYS: i32 = 7;

struct Generator {
    rng: StdRng,
    ev: Clock,
    ev2: Clock,
    /// Labels of `dim` are `L1`, `L2`, ...: each statement writes a new one.
    labels: u32,
}

impl Generator {
    fn event(&mut self, which: Which) -> Event {
        let k = if self.rng.random_bool(0.04) {
            None
        } else {
            Some(self.rng.random_range(0..5))
        };
        // The latest ts of this key in ev: what the row's session or interval is near.
        let anchor = self.ev.last.get(&k).copied();
        let Generator {
            rng: r, ev, ev2, ..
        } = self;
        let (c, jump) = match which {
            Which::Ev => (ev, 0.03),
            Which::Ev2 => (ev2, 0.01),
        };
        // Time moves on by 0-3 whole seconds per row, and now and then jumps by minutes,
        // which closes windows.
        c.now += r.random_range(0..=3) * 1000;
        if r.random_bool(jump) {
            c.now += r.random_range(60..=240) * 1000;
        }
        let reference = c.max_ts.unwrap_or(c.now);
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
                let abs = base_offset_in_30s() + c.now + 15_000;
                let boundary = c.now + 15_000 - abs.rem_euclid(30_000);
                Some(boundary + [0, LATENESS_MS][r.random_range(0..2)])
            }
            // Out of order by up to 20 s: late when more than 5 s behind the maximum.
            18..=44 => Some(c.now - r.random_range(0..=20) * 1000),
            // On the edges, relative to the key's latest row in ev. In ev: exactly the
            // session gap after it (a new session), 1 ms less (the same session), or the
            // gap plus the lateness (the watermark lands on the session's end). In ev2:
            // exactly on the interval join's bounds (a.ts + 20 s, a.ts - 10 s), or 1 ms
            // outside them.
            45..=49 => anchor
                .map(|t| {
                    let offsets: &[i64] = match which {
                        Which::Ev => &[30_000, 29_999, 30_000 + LATENESS_MS],
                        Which::Ev2 => &[20_000, -10_000, 20_001, -10_001],
                    };
                    // Time moves on to it (rows near the clock stay on time).
                    let t = t + offsets[r.random_range(0..offsets.len())];
                    c.now = c.now.max(t);
                    t
                })
                .or(Some(c.now)),
            // Near the clock.
            _ => Some(c.now + r.random_range(-2..=2) * 1000),
        };
        // Now and then a fraction of a second (a few milliseconds before or after the
        // whole second the row would have had).
        let ts = match ts {
            Some(t) if r.random_bool(0.08) => Some(t + r.random_range(-999..=999)),
            t => t,
        };
        if let Some(t) = ts {
            let late = c.max_ts.is_some_and(|m| t < m - LATENESS_MS);
            if !late {
                let last = c.last.entry(k).or_insert(t);
                *last = (*last).max(t);
            }
            c.max_ts = Some(c.max_ts.map_or(t, |m| m.max(t)));
        }
        let v = r.random_range(-1000..=1000);
        Event { k, v, ts }
    }

    /// Before a batch of `ev2`: its clock follows `ev`'s, from 40 s behind to 10 s ahead
    /// (it never goes back: after one of its own jumps it leads until `ev` catches up).
    fn follow(&mut self) {
        let offset = self.rng.random_range(-40..=10) * 1000;
        self.ev2.now = self.ev2.now.max(self.ev.now + offset);
    }

    /// A random statement on `dim`, valid given its current keys.
    fn dim_statement(&mut self, keys: &[i32]) -> String {
        let r = &mut self.rng;
        self.labels += 1;
        let label = format!("'L{}'", self.labels);
        let absent: Vec<i32> = (0..DIM_KEYS).filter(|k| !keys.contains(k)).collect();
        let any = r.random_range(0..DIM_KEYS);
        let choice = r.random_range(0..12);
        match choice {
            0..=3 if !absent.is_empty() => {
                let k = absent[r.random_range(0..absent.len())];
                let label = if r.random_bool(0.1) {
                    "NULL".into()
                } else {
                    label
                };
                match absent.iter().find(|&&o| o != k) {
                    Some(o) if r.random_bool(0.3) => {
                        format!("INSERT INTO dim VALUES ({k}, {label}), ({o}, 'other{o}')")
                    }
                    _ => format!("INSERT INTO dim VALUES ({k}, {label})"),
                }
            }
            4..=5 => format!("UPDATE dim SET label = {label} WHERE k = {any}"),
            6 => format!("UPDATE dim SET label = {label} WHERE k >= {any}"),
            7 => format!("UPDATE dim SET label = NULL WHERE k = {any}"),
            8 if !absent.is_empty() && !keys.is_empty() => {
                let from = keys[r.random_range(0..keys.len())];
                let to = absent[r.random_range(0..absent.len())];
                format!("UPDATE dim SET k = {to} WHERE k = {from}")
            }
            9 => format!("DELETE FROM dim WHERE k < {any}"),
            _ => format!("DELETE FROM dim WHERE k = {any}"),
        }
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".to_string(), |v| v.to_string())
}

/// The INSERT statements for eddy and for PostgreSQL (with arrival numbers from `seq`).
fn insert_statements(table: &str, events: &[Event], seq: &mut i64) -> (String, String) {
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
        format!("INSERT INTO {table} VALUES {}", e.join(", ")),
        format!("INSERT INTO {table} VALUES {}", p.join(", ")),
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

/// The columns of a one-row result.
async fn one_row(c: &Client, who: &str, sql: &str) -> Vec<String> {
    let r = must_rows(c, who, sql).await;
    r.first()
        .map(|r| r.split(" | ").map(str::to_string).collect())
        .unwrap_or_default()
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

/// Statistics that show the workload exercised what it should (largest values seen in
/// the oracle at any comparison).
#[derive(Default)]
struct Coverage {
    rounds: usize,
    /// Rounds in which each view / query was non-empty in the oracle.
    nonempty: BTreeMap<String, usize>,
    /// Rows sent to each stream, and statements run on `dim`.
    ev_rows: i64,
    ev2_rows: i64,
    dim_statements: usize,
    late_rows: i64,
    late_rows2: i64,
    closed_windows: usize,
    /// SESSION: sessions closed (window_end <= watermark), sessions of several rows.
    closed_sessions: i64,
    multi_row_sessions: i64,
    /// Lookup join: rows whose answer differs from what `dim` says now (joined with a
    /// version since changed or deleted, or with no row where `dim` has one now).
    stale_lookups: i64,
    /// Interval join: pairs; unmatched ev rows still held back; unmatched rows (with a
    /// key and a ts) released by the watermark, of ev and of ev2.
    pairs: i64,
    held_back: i64,
    released_left: i64,
    released_right: i64,
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
    for view in VIEWS {
        let sql = format!("SELECT * FROM {}", view.name);
        let got = must_rows(e, "eddy", &sql).await;
        let want = must_rows(p, "postgres", &sql).await;
        if view.name.starts_with("tumble_eowc") || view.name.starts_with("hop_eowc") {
            cov.closed_windows = cov.closed_windows.max(want.len());
        }
        check(format!("view {}", view.name), got, want, cov);
        // An operator that failed stops the view, which then answers with stale rows:
        // EXPLAIN says so (and why).
        let plan = must_rows(e, "eddy", &format!("EXPLAIN {}", view.name)).await;
        let failed: Vec<String> = plan.into_iter().filter(|l| l.contains("FAILED")).collect();
        check(
            format!("EXPLAIN {}: no failed operator", view.name),
            failed,
            vec![],
            cov,
        );
    }
    for (what, eq, pq) in QUERIES {
        let got = must_rows(e, "eddy", eq).await;
        let want = must_rows(p, "postgres", pq).await;
        check(format!("{what}: eddy `{eq}`"), got, want, cov);
    }

    // SHOW WATERMARKS: one row for each stream, with its watermark and late rows, and
    // one for every view fed by them. A view's watermark is its input's (the smaller of
    // the two for a view over both); its late_rows counts changes to windows it had
    // already closed, and there are none here (a row that could change a closed window
    // is below the watermark, so the stream drops it).
    let wms = one_row(p, "postgres", PG_WATERMARKS).await;
    let col = |i: usize| wms.get(i).cloned().unwrap_or_else(|| "NULL".into());
    let (wm, late, wm2, late2, wm_both) = (col(0), col(1), col(2), col(3), col(4));
    cov.late_rows = late.parse().unwrap_or(0);
    cov.late_rows2 = late2.parse().unwrap_or(0);
    let mut want: Vec<String> = vec![
        format!("ev | {wm} | {late}"),
        format!("ev2 | {wm2} | {late2}"),
    ];
    want.extend(VIEWS.iter().map(|v| {
        let w = match v.fed {
            Fed::Ev => &wm,
            Fed::Both => &wm_both,
        };
        format!("{} | {w} | 0", v.name)
    }));
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
        "SHOW WATERMARKS: name | watermark | late_rows (ev, ev2 and every view fed by them)".into(),
        got,
        want,
        cov,
    );

    let c: Vec<i64> = one_row(p, "postgres", PG_COVERAGE)
        .await
        .iter()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| c.get(i).copied().unwrap_or(0);
    cov.closed_sessions = cov.closed_sessions.max(at(0));
    cov.multi_row_sessions = cov.multi_row_sessions.max(at(1));
    cov.stale_lookups = cov.stale_lookups.max(at(2));
    cov.pairs = cov.pairs.max(at(3));
    cov.held_back = cov.held_back.max(at(4));
    cov.released_left = cov.released_left.max(at(5));
    cov.released_right = cov.released_right.max(at(6));
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
        "statements since the previous comparison (PostgreSQL's: the first column of ev and \
         ev2 rows is the arrival seq; each dim statement is marked with its seq):\n",
    );
    for s in recent {
        msg.push_str(&format!("  {s};\n"));
    }
    panic!("{msg}");
}

/// What one batch does, in a random order.
#[derive(Clone, Copy, Debug)]
enum Step {
    Insert(Which),
    Dim,
}

/// Send `n` random batches to both; compare every `every` batches and after the last.
/// A batch is an INSERT into `ev`, usually one into `ev2`, and often a statement on `dim`
/// (followed by a FLUSH), in random order.
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
        let mut steps = vec![Step::Insert(Which::Ev)];
        if g.rng.random_bool(0.6) {
            steps.push(Step::Insert(Which::Ev2));
        }
        if g.rng.random_bool(0.4) {
            steps.push(Step::Dim);
        }
        steps.shuffle(&mut g.rng);
        for step in steps {
            match step {
                Step::Insert(which) => {
                    let size = match which {
                        Which::Ev => match g.rng.random_range(0..10) {
                            0 => 1,
                            1..=6 => g.rng.random_range(2..=8),
                            _ => g.rng.random_range(9..=30),
                        },
                        Which::Ev2 => {
                            g.follow();
                            g.rng.random_range(1..=12)
                        }
                    };
                    let mut events: Vec<Event> = (0..size).map(|_| g.event(which)).collect();
                    // Now and then a row twice: views and join state are multisets.
                    for i in 1..events.len() {
                        if g.rng.random_bool(0.03) {
                            events[i] = events[i - 1].clone();
                        }
                    }
                    match which {
                        Which::Ev => cov.ev_rows += size,
                        Which::Ev2 => cov.ev2_rows += size,
                    }
                    let (es, ps) = insert_statements(which.table(), &events, seq);
                    if let Err(err) = e.simple_query(&es).await {
                        panic!("seed {seed} {phase} batch {batch}: eddy rejected `{es}`: {err:?}");
                    }
                    p.simple_query(&ps)
                        .await
                        .unwrap_or_else(|err| panic!("postgres rejected `{ps}`: {err:?}"));
                    recent.push(ps);
                }
                Step::Dim => {
                    let keys: Vec<i32> = must_rows(p, "postgres", "SELECT k FROM dim")
                        .await
                        .iter()
                        .filter_map(|k| k.parse().ok())
                        .collect();
                    let stmt = g.dim_statement(&keys);
                    let s = *seq;
                    *seq += 1;
                    cov.dim_statements += 1;
                    // One epoch of its own: a stream row inserted later sees it.
                    if let Err(err) = e.simple_query(&stmt).await {
                        panic!(
                            "seed {seed} {phase} batch {batch}: eddy rejected `{stmt}` \
                             (PostgreSQL's dim is {keys:?}): {err:?}"
                        );
                    }
                    e.simple_query("FLUSH").await.expect("eddy: FLUSH");
                    let history = PG_DIM_HISTORY.replace("{seq}", &s.to_string());
                    p.batch_execute(&format!("BEGIN; {stmt}; {history} COMMIT;"))
                        .await
                        .unwrap_or_else(|err| panic!("postgres rejected `{stmt}`: {err:?}"));
                    recent.push(format!("/* dim, seq {s} */ {stmt}"));
                }
            }
        }
        if (batch + 1) % every == 0 || batch + 1 == n {
            let m = compare(e, p, cov).await;
            report(seed, &format!("{phase}, after batch {batch}"), &m, &recent);
            recent.clear();
        }
    }
}

async fn create_views(seed: u64, e: &Client, p: &Client) {
    for stmt in EDDY_SETUP {
        e.batch_execute(stmt)
            .await
            .unwrap_or_else(|err| panic!("eddy rejected `{stmt}`: {err:?}"));
    }
    p.batch_execute(PG_SETUP).await.unwrap();
    for view in VIEWS {
        let name = view.name;
        e.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {}", view.eddy))
            .await
            .unwrap_or_else(|err| panic!("seed {seed}: eddy rejected view {name}: {err:?}"));
        p.batch_execute(&format!("CREATE VIEW {name} AS {}", view.pg))
            .await
            .unwrap_or_else(|err| panic!("postgres rejected oracle {name}: {err:?}"));
    }
    // The interval joins must be planned as such (state expiring with the watermark), or
    // this test would not exercise expiry; the lookup joins as lookups.
    for (name, marker) in [
        ("interval_inner", "state expires with the watermark"),
        ("interval_left", "state expires with the watermark"),
        ("interval_full", "state expires with the watermark"),
        ("lookup_left", "lookup:"),
        ("lookup_inner", "lookup:"),
    ] {
        let plan = must_rows(e, "eddy", &format!("EXPLAIN {name}"))
            .await
            .join("\n");
        assert!(
            plan.contains(marker),
            "EXPLAIN {name} does not show `{marker}`:\n{plan}"
        );
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
        ev: Clock::default(),
        ev2: Clock::default(),
        labels: 0,
    };
    let mut seq = 1i64;
    let mut cov = Coverage::default();

    // Before any row: no watermark, nothing late, every view empty.
    let m = compare(&e, &p, &mut cov).await;
    report(seed, "before any row", &m, &[]);

    // A checkpoint part-way, so that the restart below loads operator state from a
    // checkpoint and replays the epochs logged after it (eddy also checkpoints every
    // second on its own).
    run_batches(seed, "first run", &e, &p, &mut g, &mut seq, 60, 3, &mut cov).await;
    e.simple_query("CHECKPOINT")
        .await
        .expect("eddy: CHECKPOINT");
    run_batches(seed, "first run", &e, &p, &mut g, &mut seq, 30, 3, &mut cov).await;

    // The workload must exercise what the test is about.
    let weak: Vec<String> = VIEWS
        .iter()
        .map(|v| format!("view {}", v.name))
        .filter(|n| cov.nonempty.get(n).copied().unwrap_or(0) < cov.rounds / 2)
        .collect();
    assert!(
        weak.is_empty(),
        "seed {seed}: views rarely non-empty, the test is too weak: {weak:?}"
    );
    assert!(
        cov.late_rows >= 10 && cov.late_rows < cov.ev_rows / 2,
        "seed {seed}: {} late rows of {} in ev: the workload should make some, not most, rows late",
        cov.late_rows,
        cov.ev_rows
    );
    assert!(
        cov.late_rows2 >= 5 && cov.late_rows2 < cov.ev2_rows / 2,
        "seed {seed}: {} late rows of {} in ev2: the workload should make some, not most, rows late",
        cov.late_rows2,
        cov.ev2_rows
    );
    let thin: Vec<(&str, i64)> = [
        ("closed windows", cov.closed_windows as i64),
        ("closed sessions", cov.closed_sessions),
        ("sessions of several rows", cov.multi_row_sessions),
        ("lookups that dim has changed since", cov.stale_lookups),
        ("interval join pairs", cov.pairs),
        ("unmatched ev rows held back", cov.held_back),
        ("unmatched ev rows released", cov.released_left),
        ("unmatched ev2 rows released", cov.released_right),
    ]
    .into_iter()
    .filter(|(_, n)| *n < 10)
    .collect();
    assert!(
        thin.is_empty(),
        "seed {seed}: the workload should make at least 10 of each: {thin:?}"
    );
    eprintln!(
        "seed {seed}: ev {} rows ({} late), ev2 {} rows ({} late), {} dim statements, \
         {} comparisons; up to {} closed windows per view, {} closed sessions, \
         {} stale lookups, {} interval pairs, {} unmatched held back, {}+{} released",
        cov.ev_rows,
        cov.late_rows,
        cov.ev2_rows,
        cov.late_rows2,
        cov.dim_statements,
        cov.rounds,
        cov.closed_windows,
        cov.closed_sessions,
        cov.stale_lookups,
        cov.pairs,
        cov.held_back,
        cov.released_left,
        cov.released_right
    );

    // kill -9 and restart: views, counts, dim and the watermarks are restored ...
    drop(e);
    let eddy = eddy.restart();
    let e = eddy.connect().await;
    let m = compare(&e, &p, &mut cov).await;
    report(seed, "after kill -9 and restart", &m, &[]);
    // ... and late rows are still judged against the restored watermarks, the lookup
    // joins see the restored dim, and the interval joins' restored state still matches.
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

    // Once more, with state that was itself restored.
    drop(e);
    let eddy = eddy.restart();
    let e = eddy.connect().await;
    let m = compare(&e, &p, &mut cov).await;
    report(seed, "after a second kill -9 and restart", &m, &[]);
    run_batches(
        seed,
        "after the second restart",
        &e,
        &p,
        &mut g,
        &mut seq,
        6,
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
