//! What a client was told is committed survives `kill -9`: the catalog, table and stream
//! rows, and the state of materialized views.

mod common;

use common::Eddy;

async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut out = vec![];
    for m in c.simple_query(sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    out
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE TABLE t (k INT PRIMARY KEY, v TEXT);
         CREATE STREAM s (a INT, b TEXT);
         CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n, max(k) AS hi FROM t;
         CREATE MATERIALIZED VIEW sv AS SELECT b, sum(a) AS total FROM s GROUP BY b;",
    )
    .await
    .unwrap();
    for i in 0..50 {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&i, &format!("v{i}")])
            .await
            .unwrap();
    }
    c.batch_execute("UPDATE t SET v = 'changed' WHERE k < 10; DELETE FROM t WHERE k >= 40;")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO s VALUES (1, 'x'), (2, 'y'), (3, 'x')")
        .await
        .unwrap();
    let before = (
        rows(&c, "SELECT * FROM t ORDER BY k").await,
        rows(&c, "SELECT * FROM v").await,
        rows(&c, "SELECT * FROM s ORDER BY a").await,
        rows(&c, "SELECT * FROM sv ORDER BY b").await,
    );
    drop(c);

    // No clean shutdown: SIGKILL right after the last acknowledgement.
    let eddy = eddy.restart();
    let c = eddy.connect().await;
    let after = (
        rows(&c, "SELECT * FROM t ORDER BY k").await,
        rows(&c, "SELECT * FROM v").await,
        rows(&c, "SELECT * FROM s ORDER BY a").await,
        rows(&c, "SELECT * FROM sv ORDER BY b").await,
    );
    assert_eq!(before, after);
    assert_eq!(after.1, vec!["40,39"]);
    assert_eq!(after.3, vec!["x,4", "y,2"]);

    // Views keep maintaining from their restored state.
    c.batch_execute("INSERT INTO t VALUES (100, 'new'); INSERT INTO s VALUES (10, 'y');")
        .await
        .unwrap();
    assert_eq!(rows(&c, "SELECT * FROM v").await, vec!["41,100"]);
    assert_eq!(
        rows(&c, "SELECT * FROM sv ORDER BY b").await,
        vec!["x,4", "y,12"]
    );
    let names = rows(&c, "SHOW TABLES").await;
    assert_eq!(names, vec!["t"]);
}

#[tokio::test]
async fn dropped_objects_stay_dropped_after_restart() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE TABLE a (k INT); CREATE MATERIALIZED VIEW va AS SELECT count(*) AS n FROM a;
         CREATE TABLE b (k INT); INSERT INTO b VALUES (1);
         DROP TABLE a CASCADE;",
    )
    .await
    .unwrap();
    drop(c);
    let eddy = eddy.restart();
    let c = eddy.connect().await;
    assert_eq!(rows(&c, "SHOW TABLES").await, vec!["b"]);
    assert!(rows(&c, "SHOW MATERIALIZED VIEWS").await.is_empty());
    // The name is free again, and new ids do not collide with old state.
    c.batch_execute("CREATE TABLE a (k INT); INSERT INTO a VALUES (7);")
        .await
        .unwrap();
    assert_eq!(rows(&c, "SELECT * FROM a").await, vec!["7"]);
}

#[tokio::test]
async fn a_corrupt_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // redb expects its own file format here; give it garbage.
    std::fs::write(data.join("eddy.redb"), vec![0xAB; 8192]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "eddy must refuse to start on a corrupt data directory"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open"), "stderr: {stderr}");
}

#[tokio::test]
async fn writes_since_the_last_checkpoint_are_replayed_after_kill_9() {
    // No periodic checkpoints: after the DDL, everything lives in the input log until
    // the restart replays it.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut eddy = Eddy::start_in(&data, &["--checkpoint-interval", "never"]);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE TABLE t (k INT PRIMARY KEY, g INT);
         CREATE MATERIALIZED VIEW per_g AS SELECT g, count(*) AS n FROM t GROUP BY g;
         CREATE STREAM s (x INT);
         CREATE MATERIALIZED VIEW sx AS SELECT sum(x) AS total FROM s;
         CREATE MATERIALIZED VIEW sp AS SELECT x * 2 AS y FROM s WHERE x > 1;",
    )
    .await
    .unwrap();
    for i in 0..200 {
        c.execute("INSERT INTO t VALUES ($1, $2)", &[&i, &(i % 7)])
            .await
            .unwrap();
    }
    c.batch_execute("DELETE FROM t WHERE g = 3; UPDATE t SET g = 0 WHERE g = 1; INSERT INTO s VALUES (1), (2), (3);")
        .await
        .unwrap();
    let before = (
        rows(&c, "SELECT * FROM per_g ORDER BY g").await,
        rows(&c, "SELECT * FROM sx").await,
        rows(&c, "SELECT * FROM sp ORDER BY y").await,
        rows(&c, "SELECT * FROM s ORDER BY x").await,
    );
    drop(c);
    eddy.kill9();
    let eddy = Eddy::start_in(&data, &["--checkpoint-interval", "never"]);
    let c = eddy.connect().await;
    let after = (
        rows(&c, "SELECT * FROM per_g ORDER BY g").await,
        rows(&c, "SELECT * FROM sx").await,
        rows(&c, "SELECT * FROM sp ORDER BY y").await,
        rows(&c, "SELECT * FROM s ORDER BY x").await,
    );
    assert_eq!(before, after);
    assert_eq!(after.3, vec!["1", "2", "3"]);
    assert_eq!(after.1, vec!["6"]);
    assert_eq!(after.2, vec!["4", "6"]);
    assert_eq!(rows(&c, "SELECT count(*) FROM t").await, vec!["171"]);
    // SHOW CHECKPOINTS: the last one before the crash (a DDL), remembered across the
    // restart (the replay itself does not checkpoint: eddy serves first); CHECKPOINT
    // adds one on request.
    let reasons = |r: Vec<String>| -> Vec<String> {
        r.iter()
            .map(|l| l.split(',').nth(2).unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(reasons(rows(&c, "SHOW CHECKPOINTS").await), vec!["ddl"]);
    c.batch_execute("CHECKPOINT").await.unwrap();
    let shown = rows(&c, "SHOW CHECKPOINTS").await;
    assert_eq!(reasons(shown.clone())[0], "requested", "{shown:?}");
    let epoch: Vec<&str> = shown[0].split(',').collect();
    assert_eq!(
        epoch[0],
        rows(&c, "SHOW EPOCH").await[0],
        "the checkpoint is as of the latest epoch"
    );
    // A second crash before any checkpoint replays the same log again (and the new
    // write): nothing is lost or applied twice.
    c.execute("INSERT INTO t VALUES (1000, 3)", &[])
        .await
        .unwrap();
    drop(c);
    let mut eddy = eddy;
    eddy.kill9();
    let eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    assert_eq!(rows(&c, "SELECT count(*) FROM t").await, vec!["172"]);
    assert_eq!(rows(&c, "SELECT n FROM per_g WHERE g = 3").await, vec!["1"]);
    // The stream's rows (stored once, as the log of their epochs) are neither lost nor
    // doubled by the two replays.
    assert_eq!(
        rows(&c, "SELECT * FROM s ORDER BY x").await,
        vec!["1", "2", "3"]
    );
    assert_eq!(
        rows(&c, "SELECT * FROM sp ORDER BY y").await,
        vec!["4", "6"]
    );
}

/// A view that reads one subquery twice shares its operators (plan version 1): its
/// state comes back from a checkpoint and from the log after `kill -9`, and equals the
/// same query run in batch.
#[tokio::test]
async fn a_view_sharing_a_subquery_survives_kill_9() {
    const QUERY: &str = "SELECT a.k, a.n \
        FROM (SELECT k, count(*) AS n FROM t GROUP BY k) AS a \
        JOIN (SELECT max(b.n) AS top FROM (SELECT k, count(*) AS n FROM t GROUP BY k) AS b) AS m \
        ON a.n = m.top";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut eddy = Eddy::start_in(&data, &["--checkpoint-interval", "never"]);
    let c = eddy.connect().await;
    c.batch_execute(&format!(
        "CREATE TABLE t (k INT, v INT);
         INSERT INTO t SELECT i % 5, i FROM generate_series(1, 40) AS s(i);
         CREATE MATERIALIZED VIEW hot AS {QUERY};"
    ))
    .await
    .unwrap();
    let explain = rows(&c, "EXPLAIN hot").await.join("\n");
    assert!(explain.contains("(shared: shown above)"), "{explain}");
    // After the DDL's checkpoint: only logged writes, replayed at the restart.
    c.batch_execute("DELETE FROM t WHERE k = 0 AND v > 30; INSERT INTO t VALUES (3, 100);")
        .await
        .unwrap();
    async fn check(c: &tokio_postgres::Client) -> Vec<String> {
        let view = rows(c, "SELECT * FROM hot ORDER BY k").await;
        let batch = rows(c, &format!("SELECT * FROM ({QUERY}) AS q ORDER BY k")).await;
        assert_eq!(view, batch);
        view
    }
    assert_eq!(check(&c).await, vec!["3,9"]);
    drop(c);
    eddy.kill9();
    let mut eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    assert_eq!(check(&c).await, vec!["3,9"]);
    // Restored from a checkpoint this time, then changed again.
    c.batch_execute("CHECKPOINT; INSERT INTO t VALUES (1, 101), (1, 102);")
        .await
        .unwrap();
    drop(c);
    eddy.kill9();
    let eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    assert_eq!(check(&c).await, vec!["1,10"]);
    c.batch_execute("DELETE FROM t WHERE k = 1 AND v > 100;")
        .await
        .unwrap();
    assert_eq!(check(&c).await, vec!["3,9"]);
}

/// A generator-fed stream killed mid-way continues from its committed position: after
/// the restart it holds exactly the rows an uninterrupted run produces. The stream
/// stores the generator's positions, not its rows, so reading it (a pull query, a view
/// created later, the log replay) generates the rows again: they must be the same.
#[tokio::test(flavor = "multi_thread")]
async fn nexmark_generator_resumes_exactly_once_after_kill_9() {
    const CREATE: &str = "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, \
         channel TEXT, url TEXT, date_time TIMESTAMP, extra TEXT) \
         WITH (connector = 'nexmark', table = 'bid', event_rate = 3000, max_events = 6000);
         CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(price) AS s FROM bid;";
    const STORED: &str = "SELECT count(*), sum(auction), sum(bidder), sum(price), \
         count(DISTINCT channel), sum(length(url)), sum(length(extra)), max(extra), \
         min(date_time), max(date_time) FROM bid";
    const LATE: &str = "CREATE MATERIALIZED VIEW late AS \
         SELECT channel, count(*) AS n, sum(price) AS s FROM bid GROUP BY channel";

    // Uninterrupted reference run.
    let reference = Eddy::start();
    let c = reference.connect().await;
    c.batch_execute(CREATE).await.unwrap();
    wait_for_rows(&c, 6000).await;
    let expected = rows(&c, "SELECT n, s FROM totals").await;
    let stored = rows(&c, STORED).await;
    // Read back (generated again) = what the view saw as the rows arrived.
    assert_eq!(
        rows(&c, "SELECT count(*), sum(price) FROM bid").await,
        expected
    );
    c.batch_execute(LATE).await.unwrap();
    let late = rows(&c, "SELECT * FROM late ORDER BY channel").await;
    drop(c);
    drop(reference);

    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute(CREATE).await.unwrap();
    wait_for_rows(&c, 1000).await;
    drop(c);
    let eddy = eddy.restart();
    let c = eddy.connect().await;
    wait_for_rows(&c, 6000).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rows(&c, "SELECT n, s FROM totals").await, expected);
    assert_eq!(expected[0].split(',').next(), Some("6000"), "{expected:?}");
    assert_eq!(rows(&c, STORED).await, stored);
    c.batch_execute(LATE).await.unwrap();
    assert_eq!(rows(&c, "SELECT * FROM late ORDER BY channel").await, late);
    drop(c);
    // Once more, with everything generated: the restart reads the stream back again.
    let eddy = eddy.restart();
    let c = eddy.connect().await;
    assert_eq!(rows(&c, STORED).await, stored);
    assert_eq!(rows(&c, "SELECT * FROM late ORDER BY channel").await, late);
}

async fn wait_for_rows(c: &tokio_postgres::Client, n: i64) {
    for _ in 0..600 {
        let r = c.query_one("SELECT count(*) FROM bid", &[]).await.unwrap();
        if r.get::<_, i64>(0) >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the generator did not reach {n} rows");
}

/// A tmpfs of a fixed size, mounted for the test's lifetime (needs root; CI runs as root).
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot resize the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// A full disk: the write that does not fit fails with 53100 (disk_full) and a clear
/// message, eddy stops taking writes but keeps serving reads, and after space is freed a
/// restart has every acknowledged row (the last good commit is intact).
#[tokio::test]
async fn a_full_disk_fails_the_write_and_keeps_the_last_good_state() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "24m") else {
        // Not root (or no mount here): this test needs a small filesystem of its own.
        // Said loudly rather than failed: the rest of the suite does not need root.
        eprintln!("SKIPPED a_full_disk_fails_the_write_and_keeps_the_last_good_state: cannot mount a tmpfs here (not root?)");
        return;
    };
    let data = disk.dir.join("data");
    let mut eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE TABLE t (k INT PRIMARY KEY, s TEXT);
         CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM t;",
    )
    .await
    .unwrap();
    let mut acknowledged = 0;
    let err = loop {
        match c
            .execute(
                "INSERT INTO t VALUES ($1, repeat('x', 200000))",
                &[&acknowledged],
            )
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 1000, "24 MB never filled up");
    };
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53100", "{db:?}");
    assert!(db.message().contains("No space left"), "{}", db.message());
    assert!(acknowledged > 0);
    // Reads still work and show exactly what was acknowledged; writes are refused.
    assert_eq!(
        rows(&c, "SELECT n FROM n").await,
        vec![acknowledged.to_string()]
    );
    assert!(c
        .execute("INSERT INTO t VALUES (-1, 'y')", &[])
        .await
        .is_err());
    // Space comes back; a restart recovers the last good state and takes writes again.
    drop(c);
    eddy.kill9();
    disk.resize("256m");
    let eddy = Eddy::start_in(&data, &[]);
    let c = eddy.connect().await;
    assert_eq!(
        rows(&c, "SELECT count(*), (SELECT n FROM n) FROM t").await,
        vec![format!("{acknowledged},{acknowledged}")]
    );
    c.execute("INSERT INTO t VALUES (-1, 'y')", &[])
        .await
        .unwrap();
    assert_eq!(
        rows(&c, "SELECT n FROM n").await,
        vec![(acknowledged + 1).to_string()]
    );
    drop(c);
    drop(eddy);
}
