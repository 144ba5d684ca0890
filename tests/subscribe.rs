//! Push subscriptions with real clients: psql streaming COPY (SUBSCRIBE ...) in a
//! terminal and Ctrl-C, tokio-postgres copy_out, cursors, consolidation against the view,
//! slow and disconnected subscribers, resume AS OF, and a thousand subscribers.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use common::Eddy;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Rows of a simple query: (column names, values).
async fn query(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut out = vec![];
    for m in c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        if let SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    out
}

async fn epoch(c: &Client) -> i64 {
    query(c, "SHOW EPOCH").await[0][0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn psql_streams_copy_subscribe_live_and_ctrl_c_ends_it() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE TABLE t (k INT PRIMARY KEY, g TEXT, v INT);
         INSERT INTO t VALUES (1, 'a', 10);
         CREATE MATERIALIZED VIEW per_g AS SELECT g, sum(v) AS total FROM t GROUP BY g;",
    )
    .await
    .unwrap();
    // psql in a terminal (via `script`), as a person runs it: its output is line-buffered,
    // so rows appear the moment eddy sends them.
    let out_path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let cmd = format!(
        "psql -X -h 127.0.0.1 -p {} -U eddy -c 'COPY (SUBSCRIBE per_g) TO STDOUT'",
        eddy.port
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-f", "-c", &cmd])
        .arg(&*out_path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run psql under script");
    let read = |p: &std::path::Path| {
        let mut s = String::new();
        let _ = std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    let wait_for = |needle: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if read(&out_path).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(
        wait_for("\t1\ta\t10"),
        "snapshot row not shown: {:?}",
        read(&out_path)
    );
    c.batch_execute("INSERT INTO t VALUES (2, 'b', 5)")
        .await
        .unwrap();
    let sent = Instant::now();
    assert!(
        wait_for("\t1\tb\t5"),
        "change not streamed: {:?}",
        read(&out_path)
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "change took {:?}",
        sent.elapsed()
    );
    c.batch_execute("UPDATE t SET v = 11 WHERE k = 1")
        .await
        .unwrap();
    assert!(
        wait_for("\t-1\ta\t10") && wait_for("\t1\ta\t11"),
        "update not streamed: {:?}",
        read(&out_path)
    );
    // Ctrl-C: psql sends a cancel request; eddy ends the COPY like Postgres does.
    if let Some(stdin) = child.stdin.as_mut() {
        use std::io::Write;
        let _ = stdin.write_all(&[3]);
        let _ = stdin.flush();
    }
    assert!(
        wait_for("canceling statement due to user request"),
        "no cancel message: {:?}",
        read(&out_path)
    );
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.try_wait().unwrap();
    let _ = child.kill();
    assert!(status.is_some(), "psql did not exit after Ctrl-C");
    // The server is fine and the subscription is gone.
    let start = Instant::now();
    while !query(&c, "SHOW SUBSCRIPTIONS").await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "subscription not freed after cancel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tokio_postgres_copy_out_receives_each_epoch_as_it_commits() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x');")
        .await
        .unwrap();
    let sub = eddy.connect().await;
    let stream = sub.copy_out("COPY (SUBSCRIBE t) TO STDOUT").await.unwrap();
    futures::pin_mut!(stream);
    let mut seen = String::new();
    let mut next_line = async |seen: &mut String| -> String {
        loop {
            if let Some(i) = seen.find('\n') {
                let line = seen[..i].to_string();
                seen.drain(..=i);
                return line;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("a row within 5s")
                .expect("stream open")
                .unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    let first = next_line(&mut seen).await;
    assert!(first.ends_with("\t1\t1\tx"), "{first}");
    for i in 2..6 {
        c.execute("INSERT INTO t VALUES ($1, 'y')", &[&i])
            .await
            .unwrap();
        let line = next_line(&mut seen).await;
        assert!(line.ends_with(&format!("\t1\t{i}\ty")), "{line}");
    }
}

/// Fetch from a subscription cursor until a progress row at or after `until` arrives;
/// apply the data rows to `state` (row → multiplicity). Returns the last progress epoch.
async fn catch_up(c: &Client, cursor: &str, until: i64, state: &mut BTreeMap<String, i64>) -> i64 {
    let start = Instant::now();
    let mut last = 0;
    loop {
        let rows = query(c, &format!("FETCH ALL {cursor} WITH (timeout = '200ms')")).await;
        let mut done = false;
        for r in rows {
            let epoch: i64 = r[0].as_ref().unwrap().parse().unwrap();
            let progressed = r[1].as_deref() == Some("t");
            if progressed {
                done |= epoch >= until;
                last = last.max(epoch);
                continue;
            }
            let diff: i64 = r[2].as_ref().unwrap().parse().unwrap();
            let row = r[3..]
                .iter()
                .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join("|");
            *state.entry(row).or_default() += diff;
        }
        state.retain(|_, d| *d != 0);
        if done {
            return last;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no progress to epoch {until}"
        );
    }
}

async fn view_state(c: &Client, sql: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for r in query(c, sql).await {
        let row = r
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
            .collect::<Vec<_>>()
            .join("|");
        *m.entry(row).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn consolidated_subscription_equals_the_view_at_every_epoch() {
    let eddy = Eddy::start();
    let w = eddy.connect().await;
    w.batch_execute(
        "CREATE TABLE a (id INT PRIMARY KEY, g INT, x INT);
         CREATE TABLE b (id INT PRIMARY KEY, aid INT, y INT);
         CREATE MATERIALIZED VIEW agg AS SELECT g, count(*) AS n, sum(x) AS sx, max(x) AS mx FROM a GROUP BY g;
         CREATE MATERIALIZED VIEW j AS SELECT a.id, a.g, b.y FROM a LEFT JOIN b ON a.id = b.aid;",
    )
    .await
    .unwrap();
    let r = eddy.connect().await;
    r.batch_execute(
        "BEGIN;
         DECLARE s1 CURSOR FOR SUBSCRIBE agg WITH (PROGRESS = true);
         DECLARE s2 CURSOR FOR SUBSCRIBE j WITH (PROGRESS = true);",
    )
    .await
    .unwrap();
    let (mut st1, mut st2) = (BTreeMap::new(), BTreeMap::new());
    for seed in 1..=3u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        for step in 0..60 {
            let id = rng.random_range(0..30);
            let stmt = match rng.random_range(0..6) {
                0 | 1 => format!(
                    "INSERT INTO a VALUES ({id}, {}, {})",
                    rng.random_range(0..4),
                    rng.random_range(-9..9)
                ),
                2 => format!(
                    "UPDATE a SET x = {} WHERE id = {id}",
                    rng.random_range(-9..9)
                ),
                3 => format!("DELETE FROM a WHERE id = {id}"),
                4 => format!(
                    "INSERT INTO b VALUES ({}, {id}, {})",
                    rng.random_range(0..60),
                    rng.random_range(0..100)
                ),
                _ => format!("DELETE FROM b WHERE aid = {id}"),
            };
            let _ = w.simple_query(&stmt).await; // duplicate keys fail; that is fine
            if step % 5 == 4 {
                let e = epoch(&w).await;
                catch_up(&r, "s1", e, &mut st1).await;
                catch_up(&r, "s2", e, &mut st2).await;
                assert_eq!(
                    st1,
                    view_state(&w, "SELECT g, n, sx, mx FROM agg").await,
                    "seed {seed} step {step}: agg"
                );
                assert_eq!(
                    st2,
                    view_state(&w, "SELECT id, g, y FROM j").await,
                    "seed {seed} step {step}: j"
                );
            }
        }
    }
    assert!(!st1.is_empty() && !st2.is_empty());
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_and_resumes_as_of_its_last_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let eddy = Eddy::start_in(&tmp.path().join("data"), &["--subscribe-buffer-rows", "50"]);
    let w = eddy.connect().await;
    w.batch_execute("CREATE TABLE t (k INT PRIMARY KEY)")
        .await
        .unwrap();
    let r = eddy.connect().await;
    r.batch_execute("BEGIN; DECLARE s CURSOR FOR SUBSCRIBE t WITH (PROGRESS = true);")
        .await
        .unwrap();
    // Take the (empty) snapshot and its progress mark: the last epoch this client saw.
    let rows = query(&r, "FETCH ALL s WITH (timeout = '500ms')").await;
    let last: i64 = rows
        .iter()
        .filter(|r| r[1].as_deref() == Some("t"))
        .map(|r| r[0].as_ref().unwrap().parse::<i64>().unwrap())
        .max()
        .unwrap();
    // 100 rows arrive while the client does not read: more than its buffer holds.
    for i in 0..4 {
        w.batch_execute(&format!(
            "INSERT INTO t SELECT x FROM generate_series({}, {}) AS s(x)",
            i * 25,
            i * 25 + 24
        ))
        .await
        .unwrap();
    }
    let err = r
        .simple_query("FETCH ALL s WITH (timeout = '1s')")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53400");
    assert!(db.message().contains("AS OF"), "{}", db.message());
    // The dataflow and other sessions were never held up.
    assert_eq!(
        query(&w, "SELECT count(*) FROM t").await[0][0].as_deref(),
        Some("100")
    );
    drop(r);
    // Resume from the last epoch it saw: exactly the 100 rows it missed, in chunks that
    // fit its buffer this time (it reads as they come).
    let r2 = eddy.connect().await;
    r2.batch_execute(&format!(
        "BEGIN; DECLARE s CURSOR FOR SUBSCRIBE t WITH (SNAPSHOT = false, PROGRESS = true) AS OF {last};"
    ))
    .await
    .unwrap_or_else(|e| panic!("resume failed: {e:?}"));
    let mut got = BTreeMap::new();
    catch_up(&r2, "s", epoch(&w).await, &mut got).await;
    assert_eq!(got.len(), 100, "resumed with exactly the missed rows");
    assert!(got.values().all(|d| *d == 1));
    // An epoch older than the retained history is a clear error.
    let e = r2
        .simple_query(
            "COMMIT; BEGIN; DECLARE z CURSOR FOR SUBSCRIBE t WITH (SNAPSHOT = false) AS OF 1;",
        )
        .await
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("retained since"),
        "{e:?}"
    );
}

/// The server is killed while a subscriber is attached; after the restart the client
/// resumes AS OF the last epoch it saw and gets exactly what it missed — changes from
/// before the last checkpoint (stored subscription history) and after it (the input
/// log's replay) — then continues live.
#[tokio::test]
async fn a_subscriber_resumes_as_of_its_last_epoch_after_kill_9() {
    // No interval checkpoints (the test decides what is checkpointed), and a checkpoint
    // in almost every epoch (changes made in a checkpoint's own epoch must be stored).
    for interval in ["never", "1ms"] {
        resume_after_kill_9(interval).await;
    }
}

async fn resume_after_kill_9(interval: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let eddy = Eddy::start_in(&dir, &["--checkpoint-interval", interval]);
    let w = eddy.connect().await;
    w.batch_execute(
        "CREATE TABLE t (k INT PRIMARY KEY, v INT);
         CREATE MATERIALIZED VIEW agg AS SELECT k % 3 AS g, count(*) AS n, sum(v) AS s FROM t GROUP BY k % 3;",
    )
    .await
    .unwrap();
    let r = eddy.connect().await;
    r.batch_execute("BEGIN; DECLARE s CURSOR FOR SUBSCRIBE agg WITH (PROGRESS = true);")
        .await
        .unwrap();
    let view = "SELECT g, n, s FROM agg";
    w.batch_execute("INSERT INTO t SELECT x, x FROM generate_series(1, 20) AS s(x)")
        .await
        .unwrap();
    let mut state = BTreeMap::new();
    let last = catch_up(&r, "s", epoch(&w).await, &mut state).await;
    assert_eq!(state, view_state(&w, view).await);
    // Missed by the client: some changes covered by a checkpoint, some only logged.
    w.batch_execute("UPDATE t SET v = v * 10 WHERE k <= 5; CHECKPOINT;")
        .await
        .unwrap();
    w.batch_execute("DELETE FROM t WHERE k > 15; INSERT INTO t VALUES (100, 7)")
        .await
        .unwrap();
    let mut eddy = eddy;
    eddy.kill9();
    // The attached subscriber notices: its connection is gone.
    assert!(r
        .simple_query("FETCH ALL s WITH (timeout = '1s')")
        .await
        .is_err());
    let eddy = eddy.restart_with(&["--checkpoint-interval", interval]);
    let w = eddy.connect().await;
    let r = eddy.connect().await;
    r.batch_execute(&format!(
        "BEGIN; DECLARE s CURSOR FOR SUBSCRIBE agg WITH (SNAPSHOT = false, PROGRESS = true) AS OF {last};"
    ))
    .await
    .unwrap_or_else(|e| panic!("resume after restart failed: {e:?}"));
    catch_up(&r, "s", epoch(&w).await, &mut state).await;
    assert_eq!(
        state,
        view_state(&w, view).await,
        "after the restart ({interval})"
    );
    // And it goes on live.
    w.batch_execute("INSERT INTO t VALUES (101, 1), (102, 2)")
        .await
        .unwrap();
    catch_up(&r, "s", epoch(&w).await, &mut state).await;
    assert_eq!(state, view_state(&w, view).await, "live after the resume");
}

#[tokio::test]
async fn a_disconnected_subscriber_is_freed() {
    let eddy = Eddy::start();
    let w = eddy.connect().await;
    w.batch_execute("CREATE TABLE t (k INT PRIMARY KEY)")
        .await
        .unwrap();
    let r = eddy.connect().await;
    let mut decl = String::from("BEGIN;");
    for i in 0..10 {
        decl.push_str(&format!("DECLARE c{i} CURSOR FOR SUBSCRIBE t;"));
    }
    r.batch_execute(&decl).await.unwrap();
    assert_eq!(
        query(&w, "SHOW SUBSCRIPTIONS").await,
        vec![vec![Some("t".into()), Some("10".into())]]
    );
    drop(r); // the connection closes
    let start = Instant::now();
    while !query(&w, "SHOW SUBSCRIPTIONS").await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "subscriptions of a closed connection were not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_all_receive_every_change() {
    let eddy = Eddy::start();
    let w = eddy.connect().await;
    w.batch_execute(
        "CREATE TABLE t (k INT PRIMARY KEY, g INT);
         CREATE MATERIALIZED VIEW v1 AS SELECT g, count(*) AS n FROM t GROUP BY g;
         CREATE MATERIALIZED VIEW v2 AS SELECT k FROM t WHERE g = 1;",
    )
    .await
    .unwrap();
    // 50 connections x 20 cursors, on three relations.
    let mut readers = vec![];
    for conn in 0..50 {
        let c = eddy.connect().await;
        let mut decl = String::from("BEGIN;");
        for i in 0..20 {
            let rel = ["t", "v1", "v2"][(conn * 20 + i) % 3];
            decl.push_str(&format!(
                "DECLARE c{i} CURSOR FOR SUBSCRIBE {rel} WITH (SNAPSHOT = false);"
            ));
        }
        c.batch_execute(&decl).await.unwrap();
        readers.push(c);
    }
    let subs: i64 = query(&w, "SHOW SUBSCRIPTIONS")
        .await
        .iter()
        .map(|r| r[1].as_ref().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(subs, 1000);
    w.batch_execute("INSERT INTO t VALUES (1, 1), (2, 1), (3, 2)")
        .await
        .unwrap();
    let mut tasks = vec![];
    for (conn, c) in readers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let rel = ["t", "v1", "v2"][(conn * 20 + i) % 3];
                let want = match rel {
                    "t" => 3,
                    "v1" => 2,
                    _ => 2,
                };
                let mut got = 0;
                let start = Instant::now();
                while got < want {
                    got += query(&c, &format!("FETCH ALL c{i} WITH (timeout = '500ms')"))
                        .await
                        .len();
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "{rel}: {got} of {want} rows"
                    );
                }
                assert_eq!(got, want, "{rel}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A generated stream whose only view reads a few columns gets its rows from the
/// generator without `extra` (drawing it is most of an event's cost). A subscriber to
/// the stream itself still receives every column of every row: the snapshot and the
/// live rows together equal the stream read back in full.
#[tokio::test]
async fn a_subscriber_to_a_generated_stream_gets_the_columns_no_view_reads() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE STREAM bid (auction BIGINT, price BIGINT, extra TEXT)
             WITH (connector = 'nexmark', table = 'bid', event_rate = 2000, max_events = 6000);
         CREATE MATERIALIZED VIEW prices AS SELECT price FROM bid;",
    )
    .await
    .unwrap();
    // Some rows first, generated while no reader reads `extra`.
    let started = Instant::now();
    let count = async |c: &Client| -> i64 {
        query(c, "SELECT count(*) FROM bid").await[0][0]
            .as_deref()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    while count(&c).await < 5 {
        assert!(started.elapsed() < Duration::from_secs(30), "no rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sub = eddy.connect().await;
    let stream = sub
        .copy_out("COPY (SUBSCRIBE bid) TO STDOUT")
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let mut text = String::new();
    while text.lines().count() < 6000 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("rows within 20s")
            .expect("stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // Each line: epoch, diff, then the row.
    let mut got: Vec<String> = text
        .lines()
        .map(|l| l.splitn(3, '\t').nth(2).unwrap_or_default().to_string())
        .collect();
    assert!(
        got.iter().all(|l| !l.ends_with("\\N")),
        "a row without extra"
    );
    let all = c
        .copy_out("COPY (SELECT * FROM bid) TO STDOUT")
        .await
        .unwrap();
    futures::pin_mut!(all);
    let mut full = String::new();
    while let Some(chunk) = all.next().await {
        full.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let mut want: Vec<String> = full.lines().map(str::to_string).collect();
    got.sort();
    want.sort();
    assert_eq!(want.len(), 6000);
    assert!(got == want, "the subscription differs from the stream");
}
