//! Differential test: PostgreSQL is the oracle for materialized views.
//!
//! The same random stream of INSERTs, UPDATEs and DELETEs goes to eddy tables and to
//! identical PostgreSQL tables. After every batch, each eddy materialized view must hold
//! exactly what the same query returns in PostgreSQL (where the view is a plain view).
//! The view shapes cover every operator eddy maintains: aggregates of every kind, HAVING
//! and FILTER, DISTINCT, UNION [ALL], top-N, inner/left/right/full joins with multiple
//! keys and residual predicates (NULLs included), 3-way joins, semi/anti joins from
//! EXISTS, scalar subqueries, aggregates over joins, joins over aggregates, views on
//! views, and a table without a primary key (a multiset).
//!
//! Seeds are fixed so a failure reproduces; `EDDY_DIFF_SEEDS=7,8` picks others.

mod common;

use std::collections::BTreeMap;

use common::{rows, Eddy, Postgres};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

const TABLES: &str = "
CREATE TABLE a (id INT PRIMARY KEY, g INT, x INT, s TEXT, flag BOOLEAN);
CREATE TABLE b (id INT PRIMARY KEY, aid INT, y INT, t TEXT);
CREATE TABLE c (k INT, v INT);
";

/// (name, query). Each becomes an eddy MATERIALIZED VIEW and a PostgreSQL VIEW.
const VIEWS: &[(&str, &str)] = &[
    ("agg_a", "SELECT g, count(*) AS n, count(x) AS nx, count(DISTINCT x) AS dx, sum(x) AS sx, min(x) AS mn, max(x) AS mx, bool_and(flag) AS ba, bool_or(flag) AS bo FROM a GROUP BY g"),
    ("avg_a", "SELECT g, avg(x) AS av, sum(DISTINCT x) AS sdx FROM a GROUP BY g"),
    ("having_a", "SELECT g, sum(x) AS s FROM a GROUP BY g HAVING count(*) > 2"),
    ("filter_a", "SELECT g, count(*) FILTER (WHERE x > 0) AS pos, sum(x) FILTER (WHERE flag) AS sf FROM a GROUP BY g"),
    ("global_a", "SELECT count(*) AS n, sum(x) AS s, min(x) AS mn, max(s) AS ms FROM a"),
    ("global_empty", "SELECT count(*) AS n, sum(y) AS s FROM b WHERE y > 1000000"),
    ("strings", "SELECT g, string_agg(s, ',' ORDER BY s) AS ss, min(s) AS mins FROM a GROUP BY g"),
    ("project", "SELECT id, CASE WHEN x > 0 THEN 'pos' ELSE 'neg' END AS sign, COALESCE(x, -1) * 2 AS x2, upper(s) AS us FROM a WHERE g IS NOT NULL"),
    ("inner_join", "SELECT a.id, a.x, b.id AS bid, b.y FROM a JOIN b ON a.id = b.aid"),
    ("left_join", "SELECT a.id, b.y, b.t FROM a LEFT JOIN b ON a.id = b.aid"),
    ("right_residual", "SELECT a.id, b.id AS bid FROM a RIGHT JOIN b ON a.id = b.aid AND a.x < b.y"),
    ("full_multikey", "SELECT a.id, a.g, b.id AS bid FROM a FULL JOIN b ON a.id = b.aid AND a.g = b.y % 5"),
    ("agg_over_join", "SELECT a.g, count(*) AS n, sum(b.y) AS sy, max(b.t) AS mt FROM a JOIN b ON a.id = b.aid GROUP BY a.g"),
    ("join_over_aggs", "SELECT x.g, x.n, y.total FROM (SELECT g, count(*) AS n FROM a GROUP BY g) x JOIN (SELECT aid % 5 AS g, sum(y) AS total FROM b GROUP BY aid % 5) y ON x.g = y.g"),
    ("three_way", "SELECT a.id, b.id AS bid, c.v FROM a JOIN b ON a.id = b.aid JOIN c ON c.k = b.id"),
    ("distinct_a", "SELECT DISTINCT g, flag FROM a"),
    ("union_d", "SELECT g FROM a UNION SELECT y % 5 FROM b"),
    ("union_all", "SELECT id FROM a WHERE x > 0 UNION ALL SELECT aid FROM b"),
    ("top5", "SELECT id, x FROM a ORDER BY x DESC NULLS LAST, id LIMIT 5"),
    ("top3_offset", "SELECT id, y FROM b ORDER BY y, id LIMIT 3 OFFSET 2"),
    ("semi", "SELECT id, g FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.aid = a.id)"),
    ("anti", "SELECT id FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.aid = a.id AND b.y > 0)"),
    ("in_sub", "SELECT id FROM a WHERE x IN (SELECT y FROM b)"),
    ("scalar_sub", "SELECT id, (SELECT max(y) FROM b WHERE b.aid = a.id) AS my FROM a"),
    ("multiset", "SELECT k, count(*) AS n, sum(v) AS s FROM c GROUP BY k"),
    ("multiset_rows", "SELECT k, v FROM c WHERE v > 0"),
    ("view_on_view", "SELECT g, n * 2 AS n2, mx FROM agg_a WHERE n > 1"),
    ("view_on_views", "SELECT v.g, v.n2, h.s FROM view_on_view v LEFT JOIN having_a h ON v.g = h.g"),
];

/// Rows of a view as normalized strings, sorted (a multiset). Reading a view must work.
async fn view_rows(c: &Client, who: &str, name: &str) -> Vec<String> {
    match rows(c, &format!("SELECT * FROM {name}")).await {
        Ok(r) => r,
        Err(e) => panic!("{who}: SELECT * FROM {name} failed: {e}"),
    }
}

struct World {
    rng: StdRng,
    a_ids: Vec<i32>,
    b_ids: Vec<i32>,
    next_id: i32,
}

impl World {
    fn maybe_null(&mut self, v: String) -> String {
        if self.rng.random_bool(0.1) {
            "NULL".into()
        } else {
            v
        }
    }

    fn a_row(&mut self, id: i32) -> String {
        let g = self.rng.random_range(0..5).to_string();
        let g = self.maybe_null(g);
        let x = self.rng.random_range(-30..60).to_string();
        let x = self.maybe_null(x);
        let s = format!(
            "'{}'",
            ["ant", "bee", "cat", "dog", "eel", "Fox", "gnu"][self.rng.random_range(0..7)]
        );
        let s = self.maybe_null(s);
        let flag = ["true", "false"][self.rng.random_range(0..2)].to_string();
        let flag = self.maybe_null(flag);
        format!("({id}, {g}, {x}, {s}, {flag})")
    }

    fn b_row(&mut self, id: i32) -> String {
        let aid = if !self.a_ids.is_empty() && self.rng.random_bool(0.8) {
            self.a_ids[self.rng.random_range(0..self.a_ids.len())].to_string()
        } else {
            self.rng.random_range(1000..1010).to_string()
        };
        let aid = self.maybe_null(aid);
        let y = self.rng.random_range(-20..100).to_string();
        let y = self.maybe_null(y);
        let t = format!("'t{}'", self.rng.random_range(0..6));
        format!("({id}, {aid}, {y}, {t})")
    }

    /// One random DML statement (valid for both databases).
    fn next_statement(&mut self) -> String {
        let r = self.rng.random_range(0..100);
        match r {
            0..=24 => {
                let id = self.next_id;
                self.next_id += 1;
                self.a_ids.push(id);
                let row = self.a_row(id);
                format!("INSERT INTO a VALUES {row}")
            }
            25..=44 => {
                let id = self.next_id;
                self.next_id += 1;
                self.b_ids.push(id);
                let row = self.b_row(id);
                format!("INSERT INTO b VALUES {row}")
            }
            45..=54 if !self.a_ids.is_empty() => {
                let id = self.a_ids[self.rng.random_range(0..self.a_ids.len())];
                let x = self.rng.random_range(-30..60);
                let g = self.rng.random_range(0..5);
                match self.rng.random_range(0..3) {
                    0 => format!("UPDATE a SET x = {x} WHERE id = {id}"),
                    1 => format!("UPDATE a SET g = {g}, flag = NOT flag WHERE id = {id}"),
                    _ => format!("UPDATE a SET x = x + 1 WHERE g = {g}"),
                }
            }
            55..=62 if !self.b_ids.is_empty() => {
                let id = self.b_ids[self.rng.random_range(0..self.b_ids.len())];
                let y = self.rng.random_range(-20..100);
                let aid = self
                    .a_ids
                    .get(self.rng.random_range(0..self.a_ids.len().max(1)))
                    .copied()
                    .unwrap_or(1);
                match self.rng.random_range(0..2) {
                    0 => format!("UPDATE b SET y = {y} WHERE id = {id}"),
                    _ => format!("UPDATE b SET aid = {aid} WHERE id = {id}"),
                }
            }
            63..=70 if !self.a_ids.is_empty() => {
                let i = self.rng.random_range(0..self.a_ids.len());
                let id = self.a_ids.swap_remove(i);
                format!("DELETE FROM a WHERE id = {id}")
            }
            71..=76 if !self.b_ids.is_empty() => {
                let i = self.rng.random_range(0..self.b_ids.len());
                let id = self.b_ids.swap_remove(i);
                format!("DELETE FROM b WHERE id = {id}")
            }
            77..=90 => {
                let k = if self.b_ids.is_empty() {
                    1
                } else {
                    self.b_ids[self.rng.random_range(0..self.b_ids.len())]
                };
                let v = self.rng.random_range(-5..10);
                let n = self.rng.random_range(1..3);
                let rows: Vec<String> = (0..n).map(|_| format!("({k}, {v})")).collect();
                format!("INSERT INTO c VALUES {}", rows.join(", "))
            }
            91..=95 => {
                let v = self.rng.random_range(-5..10);
                format!("DELETE FROM c WHERE v = {v}")
            }
            _ => {
                let g = self.rng.random_range(0..5);
                format!("DELETE FROM a WHERE g = {g} AND x < 0")
            }
        }
    }
}

async fn run_seed(seed: u64, batches: usize, ops_per_batch: usize) {
    let eddy = Eddy::start();
    let pg = Postgres::start();
    let e = eddy.connect().await;
    let p = pg.connect().await;
    e.batch_execute(TABLES).await.unwrap();
    p.batch_execute(TABLES).await.unwrap();
    for (name, q) in VIEWS {
        e.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {q}"))
            .await
            .unwrap_or_else(|err| panic!("eddy rejected view {name}: {err:?}"));
        p.batch_execute(&format!("CREATE VIEW {name} AS {q}"))
            .await
            .unwrap();
    }
    let mut w = World {
        rng: StdRng::seed_from_u64(seed),
        a_ids: vec![],
        b_ids: vec![],
        next_id: 1,
    };
    let mut log: Vec<String> = vec![];
    let mut compared_rows = 0usize;
    let mut nonempty: BTreeMap<&str, usize> = BTreeMap::new();
    for batch in 0..batches {
        for _ in 0..ops_per_batch {
            let stmt = w.next_statement();
            let re = e
                .simple_query(&stmt)
                .await
                .map(|_| ())
                .map_err(|x| x.to_string());
            let rp = p
                .simple_query(&stmt)
                .await
                .map(|_| ())
                .map_err(|x| x.to_string());
            assert_eq!(
                re.is_ok(),
                rp.is_ok(),
                "seed {seed}: `{stmt}` eddy: {re:?} postgres: {rp:?}"
            );
            log.push(stmt);
        }
        let mut mismatches = BTreeMap::new();
        for (name, _) in VIEWS {
            let got = view_rows(&e, "eddy", name).await;
            let want = view_rows(&p, "postgres", name).await;
            compared_rows += want.len();
            if !want.is_empty() {
                *nonempty.entry(name).or_default() += 1;
            }
            if got != want {
                mismatches.insert(*name, (got, want));
            }
        }
        if !mismatches.is_empty() {
            let recent: Vec<&String> = log.iter().rev().take(ops_per_batch).rev().collect();
            for (name, (got, want)) in &mismatches {
                eprintln!("seed {seed} batch {batch}: view {name} differs\n  eddy:     {got:?}\n  postgres: {want:?}");
            }
            panic!(
                "seed {seed}: {} view(s) differ after batch {batch}; last statements:\n{}",
                mismatches.len(),
                recent
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n")
            );
        }
    }
    // The workload must actually exercise the views: nearly all of them non-empty
    // most of the time (global_empty is empty by design).
    let empty_often: Vec<&&str> = VIEWS
        .iter()
        .map(|(n, _)| n)
        .filter(|n| **n != "global_empty" && nonempty.get(**n).copied().unwrap_or(0) < batches / 2)
        .collect();
    assert!(
        empty_often.is_empty(),
        "seed {seed}: views rarely non-empty, the test is too weak: {empty_often:?}"
    );
    eprintln!(
        "seed {seed}: {} statements, {compared_rows} view rows compared",
        log.len()
    );

    // Restart eddy (kill -9) and compare again: restored state must match too.
    drop(e);
    let eddy = eddy.restart();
    let e = eddy.connect().await;
    for (name, _) in VIEWS {
        let got = view_rows(&e, "eddy", name).await;
        let want = view_rows(&p, "postgres", name).await;
        assert_eq!(got, want, "seed {seed}: view {name} differs after restart");
    }
    // And keep going after the restart.
    for _ in 0..ops_per_batch {
        let stmt = w.next_statement();
        let _ = e.simple_query(&stmt).await;
        let _ = p.simple_query(&stmt).await;
    }
    for (name, _) in VIEWS {
        let got = view_rows(&e, "eddy", name).await;
        let want = view_rows(&p, "postgres", name).await;
        assert_eq!(
            got, want,
            "seed {seed}: view {name} differs after restart and more changes"
        );
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("EDDY_DIFF_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_match_postgres_under_random_changes() {
    for seed in seeds() {
        run_seed(seed, 40, 30).await;
    }
}
