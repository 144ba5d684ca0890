//! The Postgres protocol as a driver uses it (tokio-postgres): extended protocol,
//! prepared statements with parameters, binary results, SQLSTATEs, and a server that
//! keeps serving other clients when one misbehaves.

mod common;

use std::time::Duration;

use common::Eddy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

#[tokio::test]
async fn prepared_statements_bind_typed_parameters() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute("CREATE TABLE t (k BIGINT PRIMARY KEY, v TEXT, x DOUBLE PRECISION)")
        .await
        .unwrap();
    let ins = c
        .prepare("INSERT INTO t VALUES ($1, $2, $3)")
        .await
        .unwrap();
    // eddy infers the parameter types from the target columns.
    assert_eq!(ins.params(), &[Type::INT8, Type::TEXT, Type::FLOAT8]);
    for i in 0..5i64 {
        let n = c
            .execute(&ins, &[&i, &format!("v{i}"), &(i as f64 / 2.0)])
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let q = c
        .prepare("SELECT k, v, x FROM t WHERE k >= $1 ORDER BY k")
        .await
        .unwrap();
    assert_eq!(q.params(), &[Type::INT8]);
    assert_eq!(
        q.columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect::<Vec<_>>(),
        vec![Type::INT8, Type::TEXT, Type::FLOAT8]
    );
    // tokio-postgres asks for binary results: exercise the binary encoders.
    let rows = c.query(&q, &[&3i64]).await.unwrap();
    let got: Vec<(i64, String, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, vec![(3, "v3".into(), 1.5), (4, "v4".into(), 2.0)]);
}

#[tokio::test]
async fn binary_results_of_every_type_decode_in_the_driver() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    let row = c
        .query_one(
            "SELECT true, 7::smallint, 42::int, 9000000000::bigint, 1.5::real, 2.25::double precision, \
             'héllo'::text, date '2024-02-29', timestamp '2024-01-02 03:04:05.678901', \
             timestamptz '2024-01-02 03:04:05+00'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, i16>(1), 7);
    assert_eq!(row.get::<_, i32>(2), 42);
    assert_eq!(row.get::<_, i64>(3), 9_000_000_000);
    assert_eq!(row.get::<_, f32>(4), 1.5);
    assert_eq!(row.get::<_, f64>(5), 2.25);
    assert_eq!(row.get::<_, String>(6), "héllo");
    // Dates and timestamps: check through text to avoid a chrono dependency here.
    let text = c
        .simple_query("SELECT date '2024-02-29', timestamp '2024-01-02 03:04:05.678901', 1.50::numeric(5,2), interval '1 day 2 hours'")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(r) = &text[1] else {
        panic!("{text:?}")
    };
    assert_eq!(r.get(0), Some("2024-02-29"));
    assert_eq!(r.get(1), Some("2024-01-02 03:04:05.678901"));
    assert_eq!(r.get(2), Some("1.50"));
    assert_eq!(r.get(3), Some("1 day 02:00:00"));
}

#[tokio::test]
async fn errors_carry_sqlstate_and_position() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    let e = c.simple_query("SELECT * FROM missing").await.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::UNDEFINED_TABLE);
    assert_eq!(db.message(), "relation \"missing\" does not exist");
    assert!(matches!(
        db.position(),
        Some(tokio_postgres::error::ErrorPosition::Original(15))
    ));

    let e = c.simple_query("SELECT 1 +").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::SYNTAX_ERROR);

    c.batch_execute("CREATE TABLE t (k INT PRIMARY KEY)")
        .await
        .unwrap();
    let e = c.simple_query("SELECT nope FROM t").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::UNDEFINED_COLUMN);
    let e = c
        .execute("INSERT INTO t VALUES ($1)", &[&"abc"])
        .await
        .unwrap_err();
    // A text parameter where an int is needed: rejected by the driver or the server,
    // never silently stored.
    let _ = e;
    let e = c
        .simple_query("INSERT INTO t VALUES (1), (1)")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::UNIQUE_VIOLATION);
    let n = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(n, 0, "a failed INSERT must change nothing");
    // The connection is still usable after errors.
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn multiple_statements_in_one_prepare_are_rejected() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    let e = c.prepare("SELECT 1; SELECT 2").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code(), &SqlState::SYNTAX_ERROR);
}

#[tokio::test]
async fn oversized_statement_is_a_clear_error_and_the_server_keeps_serving() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    let huge = format!("SELECT '{}'", "x".repeat(17 * 1024 * 1024));
    let e = c.simple_query(&huge).await.unwrap_err();
    let db = e
        .as_db_error()
        .expect("a server error, not a dropped connection");
    assert_eq!(db.code(), &SqlState::PROGRAM_LIMIT_EXCEEDED);
    assert!(db.message().contains("too long"), "{}", db.message());
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn deeply_nested_expression_is_an_error_not_a_crash() {
    let eddy = Eddy::start();
    let c = eddy.connect().await;
    let nested = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let e = c.simple_query(&nested).await.unwrap_err();
    assert!(e.as_db_error().is_some(), "{e}");
    c.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_client_that_vanishes_mid_query_does_not_hurt_others() {
    let mut eddy = Eddy::start();
    let c = eddy.connect().await;
    c.batch_execute("CREATE TABLE t (k INT)").await.unwrap();
    c.batch_execute("INSERT INTO t SELECT * FROM generate_series(1, 20000)")
        .await
        .unwrap();

    // A raw client: startup, send a big query, hang up without reading the answer.
    for _ in 0..5 {
        let mut s = tokio::net::TcpStream::connect(&eddy.addr).await.unwrap();
        let mut startup = vec![];
        startup.extend_from_slice(&196608i32.to_be_bytes());
        for kv in ["user", "eddy", "database", "eddy"] {
            startup.extend_from_slice(kv.as_bytes());
            startup.push(0);
        }
        startup.push(0);
        let mut msg = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend(startup);
        s.write_all(&msg).await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        let q = b"SELECT a.k, b.k FROM t a CROSS JOIN t b LIMIT 100000\0";
        let mut m = vec![b'Q'];
        m.extend_from_slice(&((q.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(q);
        s.write_all(&m).await.unwrap();
        drop(s);
    }
    // Half-open garbage, too.
    let mut s = tokio::net::TcpStream::connect(&eddy.addr).await.unwrap();
    s.write_all(b"this is not the postgres protocol")
        .await
        .unwrap();
    drop(s);

    let other = eddy.connect().await;
    let n: i64 = other
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20000);
    assert!(!eddy.exited(), "eddy must survive misbehaving clients");
}

#[tokio::test]
async fn many_concurrent_clients_read_and_write() {
    let eddy = Eddy::start();
    let setup = eddy.connect().await;
    setup
        .batch_execute("CREATE TABLE t (id INT PRIMARY KEY, who INT)")
        .await
        .unwrap();
    setup
        .batch_execute(
            "CREATE MATERIALIZED VIEW per_client AS SELECT who, count(*) AS n FROM t GROUP BY who",
        )
        .await
        .unwrap();
    let mut tasks = vec![];
    for w in 0..8i32 {
        let c = eddy.connect().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..25i32 {
                c.execute("INSERT INTO t VALUES ($1, $2)", &[&(w * 1000 + i), &w])
                    .await
                    .unwrap();
                // Read-your-writes: the view already counts this client's insert.
                let n: i64 = c
                    .query_one("SELECT n FROM per_client WHERE who = $1", &[&w])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, (i + 1) as i64);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total: i64 = setup
        .query_one("SELECT sum(n) FROM per_client", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 200);
}
