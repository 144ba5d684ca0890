//! Kafka end to end: a real broker (Tansu), a real eddy process, records produced and
//! consumed with rdkafka, results read over the Postgres protocol.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Broker, Eddy};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(30);

fn start(broker: &Broker) -> Eddy {
    Eddy::start_with(&["--kafka-brokers", &broker.addr()])
}

fn producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

/// Produce (partition, key, value) records and wait for every acknowledgement.
async fn produce(p: &FutureProducer, topic: &str, records: &[(i32, Option<&str>, Option<&str>)]) {
    let mut pending = vec![];
    for (partition, key, value) in records {
        let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic).partition(*partition);
        if let Some(k) = key {
            r = r.key(*k);
        }
        if let Some(v) = value {
            r = r.payload(*v);
        }
        pending.push(p.send(r, Duration::from_secs(10)));
    }
    for r in futures::future::join_all(pending).await {
        r.map_err(|(e, _)| e).expect("produce");
    }
}

/// Every record of `topic` (all partitions, from the beginning) until it goes quiet.
fn consume_all(
    broker: &Broker,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<String>, Option<String>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "eddy-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = vec![];
    let mut quiet = 0;
    while quiet < 20 {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = 0;
                out.push((
                    m.key().map(|k| String::from_utf8_lossy(k).to_string()),
                    m.payload().map(|v| String::from_utf8_lossy(v).to_string()),
                ));
            }
            _ => quiet += 1,
        }
    }
    out
}

async fn query_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    match client.simple_query(sql).await {
        Ok(msgs) => msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
        Err(_) => vec![],
    }
}

async fn wait_for(client: &tokio_postgres::Client, sql: &str, expected: Vec<Vec<&str>>) {
    let expected: Vec<Vec<String>> = expected
        .into_iter()
        .map(|r| r.into_iter().map(String::from).collect())
        .collect();
    let ok = eventually(WAIT, || async { query_rows(client, sql).await == expected }).await;
    assert!(
        ok,
        "{sql}: expected {expected:?}, last saw {:?}",
        query_rows(client, sql).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_stream_feeds_a_view_and_bad_records_are_skipped_and_reported() {
    let broker = Broker::start();
    let eddy = start(&broker);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE STREAM bids (auction BIGINT NOT NULL, price BIGINT, note TEXT) \
             WITH (kafka_topic = 'bids', format = 'json', partitions = 3);
         CREATE MATERIALIZED VIEW per_auction AS
             SELECT auction, count(*) AS n, sum(price) AS total FROM bids GROUP BY auction;",
    )
    .await
    .unwrap();
    let p = producer(&broker);
    let mut records = vec![];
    let values: Vec<String> = (0..90)
        .map(|i| {
            format!(
                r#"{{"auction": {}, "price": {}, "note": "n{i}"}}"#,
                i % 3,
                i
            )
        })
        .collect();
    for (i, v) in values.iter().enumerate() {
        records.push(((i % 3) as i32, None, Some(v.as_str())));
    }
    // Malformed: not JSON, wrong type, missing NOT NULL column.
    records.push((1, None, Some("{not json")));
    records.push((2, None, Some(r#"{"auction": "x", "price": 1}"#)));
    records.push((0, None, Some(r#"{"price": 5}"#)));
    produce(&p, "bids", &records).await;
    // Sum of i for i % 3 == r over 0..90: 30 values each.
    wait_for(
        &c,
        "SELECT auction, n, total FROM per_auction ORDER BY auction",
        vec![
            vec!["0", "30", "1305"],
            vec!["1", "30", "1335"],
            vec!["2", "30", "1365"],
        ],
    )
    .await;
    // The pipeline kept going after the bad records: one more good record arrives.
    produce(
        &p,
        "bids",
        &[(0, None, Some(r#"{"auction": 9, "price": 1}"#))],
    )
    .await;
    wait_for(
        &c,
        "SELECT n FROM per_auction WHERE auction = 9",
        vec![vec!["1"]],
    )
    .await;

    let errors = query_rows(&c, "SHOW SOURCE ERRORS FOR bids").await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors.iter().any(|e| e[3].contains("not valid JSON")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e[3].contains("cannot read \"x\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e[3].contains("\"auction\" is missing")),
        "{errors:?}"
    );
    let sources = query_rows(&c, "SHOW SOURCES").await;
    assert_eq!(sources.len(), 3, "one row per partition: {sources:?}");
    let offsets: i64 = sources.iter().map(|r| r[3].parse::<i64>().unwrap()).sum();
    assert_eq!(
        offsets, 94,
        "next offsets add up to every record: {sources:?}"
    );
    assert!(
        sources
            .iter()
            .all(|r| r[6] == "94" && r[7] == "3" && r[8] == "running"),
        "{sources:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_stream_and_insert_round_trip() {
    let broker = Broker::start();
    let eddy = start(&broker);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE STREAM events (id INT, name TEXT, at TIMESTAMP) \
             WITH (kafka_topic = 'events', format = 'csv', partitions = 1);
         CREATE STREAM clicks (id INT, url TEXT) WITH (kafka_topic = 'clicks', partitions = 2);",
    )
    .await
    .unwrap();
    let p = producer(&broker);
    produce(
        &p,
        "events",
        &[
            (0, None, Some("1,\"a, b\",2024-05-01 10:00:00")),
            (0, None, Some("2,,")),
            (0, None, Some("3,too,many,fields")),
        ],
    )
    .await;
    wait_for(
        &c,
        "SELECT id, name, at FROM events ORDER BY id",
        vec![
            vec!["1", "a, b", "2024-05-01 10:00:00"],
            vec!["2", "NULL", "NULL"],
        ],
    )
    .await;
    // INSERT produces to the topic; the rows come back through the source.
    let n = c
        .execute("INSERT INTO clicks VALUES (1, 'https://x'), (2, NULL)", &[])
        .await
        .unwrap();
    assert_eq!(n, 2);
    c.execute(
        "INSERT INTO events VALUES (4, 'd', '2024-05-02 00:00:00')",
        &[],
    )
    .await
    .unwrap();
    wait_for(
        &c,
        "SELECT id, url FROM clicks ORDER BY id",
        vec![vec!["1", "https://x"], vec!["2", "NULL"]],
    )
    .await;
    wait_for(&c, "SELECT name FROM events WHERE id = 4", vec![vec!["d"]]).await;
    let mut on_topic: Vec<String> = consume_all(&broker, "clicks", 2)
        .into_iter()
        .filter_map(|(_, v)| v)
        .collect();
    on_topic.sort();
    assert_eq!(
        on_topic,
        vec![r#"{"id":1,"url":"https://x"}"#, r#"{"id":2,"url":null}"#]
    );
    // Streams fed by Kafka take INSERT only.
    let err = c.execute("DELETE FROM clicks", &[]).await.unwrap_err();
    assert!(err.as_db_error().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_table_with_tombstones_and_an_upsert_sink_read_back() {
    let broker = Broker::start();
    let eddy = start(&broker);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, city TEXT) \
             WITH (kafka_topic = 'users', format = 'json', partitions = 2);
         CREATE MATERIALIZED VIEW per_city AS SELECT city, count(*) AS n FROM users GROUP BY city;
         CREATE SINK per_city_out FROM per_city WITH (kafka_topic = 'per_city', key = 'city', partitions = 1);",
    )
    .await
    .unwrap();
    let p = producer(&broker);
    produce(
        &p,
        "users",
        &[
            (0, Some("1"), Some(r#"{"city": "Oslo"}"#)),
            (1, Some("2"), Some(r#"{"id": 2, "city": "Lima"}"#)),
            (0, Some("3"), Some(r#"{"city": "Oslo"}"#)),
            (1, Some("4"), Some(r#"{"city": "Rome"}"#)),
        ],
    )
    .await;
    wait_for(
        &c,
        "SELECT city, n FROM per_city ORDER BY city",
        vec![vec!["Lima", "1"], vec!["Oslo", "2"], vec!["Rome", "1"]],
    )
    .await;
    // An upsert moves user 3; a tombstone deletes user 4 (Rome disappears).
    produce(
        &p,
        "users",
        &[
            (0, Some("3"), Some(r#"{"city": "Lima"}"#)),
            (1, Some("4"), None),
        ],
    )
    .await;
    wait_for(
        &c,
        "SELECT city, n FROM per_city ORDER BY city",
        vec![vec!["Lima", "2"], vec!["Oslo", "1"]],
    )
    .await;
    wait_for(
        &c,
        "SELECT id, city FROM users ORDER BY id",
        vec![vec!["1", "Oslo"], vec!["2", "Lima"], vec!["3", "Lima"]],
    )
    .await;
    // The sink topic, read as a table (last record per key wins, null deletes), equals
    // the view.
    let ok = eventually(WAIT, || async {
        let mut table: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (k, v) in consume_all(&broker, "per_city", 1) {
            table.insert(k.unwrap_or_default(), v);
        }
        let live: Vec<(String, String)> = table
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        live == vec![
            ("Lima".to_string(), r#"{"city":"Lima","n":2}"#.to_string()),
            ("Oslo".to_string(), r#"{"city":"Oslo","n":1}"#.to_string()),
        ]
    })
    .await;
    assert!(ok, "sink topic: {:?}", consume_all(&broker, "per_city", 1));
    let sinks = query_rows(&c, "SHOW SINKS").await;
    assert_eq!(
        sinks[0][..3],
        ["per_city_out", "per_city", "per_city"],
        "{sinks:?}"
    );
    // A Kafka table needs a primary key; a topic that does not exist needs partitions.
    let err = c
        .batch_execute("CREATE TABLE t (a INT) WITH (kafka_topic = 'users')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P16");
    let err = c
        .batch_execute("CREATE STREAM s (a INT) WITH (kafka_topic = 'nope')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42704");
    c.batch_execute("DROP SINK per_city_out; DROP MATERIALIZED VIEW per_city; DROP TABLE users;")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_resumes_from_committed_offsets_exactly_once() {
    let broker = Broker::start();
    let eddy = start(&broker);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE STREAM ev (k INT, v BIGINT) WITH (kafka_topic = 'ev', partitions = 2);
         CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(v) AS s FROM ev;",
    )
    .await
    .unwrap();
    let p = producer(&broker);
    let batch = |from: i64, to: i64| -> Vec<String> {
        (from..to)
            .map(|i| format!(r#"{{"k": {}, "v": {i}}}"#, i % 7))
            .collect()
    };
    let first = batch(0, 500);
    let recs: Vec<_> = first
        .iter()
        .enumerate()
        .map(|(i, v)| ((i % 2) as i32, None, Some(v.as_str())))
        .collect();
    produce(&p, "ev", &recs).await;
    wait_for(&c, "SELECT n, s FROM totals", vec![vec!["500", "124750"]]).await;
    drop(c);
    // Crash, produce while eddy is down, start again: everything counted once.
    let mut eddy = eddy;
    eddy.kill9();
    let second = batch(500, 1000);
    let recs: Vec<_> = second
        .iter()
        .enumerate()
        .map(|(i, v)| ((i % 2) as i32, None, Some(v.as_str())))
        .collect();
    produce(&p, "ev", &recs).await;
    let eddy = eddy.restart_with(&["--kafka-brokers", &broker.addr()]);
    let c = eddy.connect().await;
    wait_for(&c, "SELECT n, s FROM totals", vec![vec!["1000", "499500"]]).await;
    // And it stays there (nothing re-read later).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        query_rows(&c, "SELECT n FROM totals").await,
        vec![vec!["1000".to_string()]]
    );
    // A checkpoint records the offsets its state reflects (the next offset to read).
    c.batch_execute("CHECKPOINT").await.unwrap();
    let checkpoints = query_rows(&c, "SHOW CHECKPOINTS").await;
    assert_eq!(checkpoints[0][2], "requested", "{checkpoints:?}");
    assert_eq!(checkpoints[0][6], "ev[0:500,1:500]", "{checkpoints:?}");
    // Restarted without --kafka-brokers: the data is there, the source says why it
    // is not reading.
    drop(c);
    let eddy = eddy.restart_with(&[]);
    let c = eddy.connect().await;
    assert_eq!(
        query_rows(&c, "SELECT n FROM totals").await,
        vec![vec!["1000".to_string()]]
    );
    let sources = query_rows(&c, "SHOW SOURCES").await;
    assert!(!sources.is_empty(), "the source is listed");
    assert!(
        sources.iter().all(|r| r[8].starts_with("not running")),
        "{sources:?}"
    );
}

/// Every record of a topic with its `eddy-epoch` and `eddy-seq` headers, until quiet.
fn consume_with_headers(broker: &Broker, topic: &str) -> Vec<(i32, u64, u64, String)> {
    use rdkafka::message::Headers;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "eddy-test-header-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = vec![];
    let mut quiet = 0;
    while quiet < 20 {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = 0;
                let header = |name: &str| -> u64 {
                    let h = m.headers().expect("sink records carry headers");
                    let v = h
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .unwrap_or_else(|| panic!("no {name} header"));
                    String::from_utf8_lossy(v).parse().expect("a number")
                };
                out.push((
                    m.partition(),
                    header("eddy-epoch"),
                    header("eddy-seq"),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string(),
                ));
            }
            _ => quiet += 1,
        }
    }
    out
}

/// An append-only sink across crashes: after kill -9 it resumes after the last epoch
/// the broker acknowledged, so no record is missing — including rows committed while
/// the broker was unreachable, which the sink had not sent when eddy died; what it
/// re-sends is recognisable by the (epoch, seq) headers, and dropping those leaves
/// exactly the stream's rows.
#[tokio::test(flavor = "multi_thread")]
async fn append_only_sink_loses_nothing_across_kill_9() {
    let broker = Broker::start();
    let mut eddy = start(&broker);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE STREAM ev (k INT, v BIGINT);
         CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM ev;
         CREATE SINK ev_out FROM ev WITH (kafka_topic = 'sev_out', partitions = 1);",
    )
    .await
    .unwrap();
    let mut total: i64 = 0;
    for round in 0..5 {
        let c = eddy.connect().await;
        // Rounds 1 and 3: the broker is away, so the sink cannot send what commits.
        let broker_away = round % 2 == 1;
        if broker_away {
            broker.pause();
        }
        for _ in 0..3 {
            c.batch_execute(&format!(
                "INSERT INTO ev SELECT x % 5, x FROM generate_series({}, {}) AS s(x)",
                total,
                total + 99
            ))
            .await
            .unwrap();
            total += 100;
        }
        if round > 0 {
            eddy.kill9();
            broker.resume();
            eddy = eddy.restart_with(&["--kafka-brokers", &broker.addr()]);
        }
    }
    let c = eddy.connect().await;
    wait_for(&c, "SELECT n FROM n", vec![vec![&total.to_string()]]).await;
    let expected: Vec<i64> = (0..total).collect();
    let mut got = vec![];
    let ok = eventually(WAIT, || {
        let records = consume_with_headers(&broker, "sev_out");
        let mut seen = std::collections::HashSet::new();
        got = records
            .into_iter()
            .filter(|(part, epoch, seq, _)| seen.insert((*part, *epoch, *seq)))
            .map(|(_, _, _, v)| {
                let v: serde_json::Value = serde_json::from_str(&v).expect("JSON");
                v["v"].as_i64().expect("v")
            })
            .collect();
        got.sort_unstable();
        let done = got == expected;
        async move { done }
    })
    .await;
    let missing = expected.iter().filter(|v| !got.contains(v)).count();
    assert!(
        ok,
        "sink topic after dropping replays: {} records, {missing} of {total} missing, duplicates: {}",
        got.len(),
        got.len() + missing - total as usize
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_outage_mid_stream_then_catch_up() {
    let broker = Broker::start();
    let eddy = start(&broker);
    let c = eddy.connect().await;
    c.batch_execute(
        "CREATE STREAM ev (v BIGINT) WITH (kafka_topic = 'ev', partitions = 1);
         CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM ev;",
    )
    .await
    .unwrap();
    let p = producer(&broker);
    produce(
        &p,
        "ev",
        &[
            (0, None, Some(r#"{"v": 1}"#)),
            (0, None, Some(r#"{"v": 2}"#)),
        ],
    )
    .await;
    wait_for(&c, "SELECT n FROM totals", vec![vec!["2"]]).await;
    // The broker freezes: reads keep working, the source waits and retries.
    broker.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for(&c, "SELECT n FROM totals", vec![vec!["2"]]).await;
    broker.resume();
    produce(&p, "ev", &[(0, None, Some(r#"{"v": 3}"#))]).await;
    wait_for(&c, "SELECT n FROM totals", vec![vec!["3"]]).await;
    // eddy restarted while the broker is down: it starts, serves reads, and catches up
    // when the broker is back.
    drop(c);
    broker.pause();
    let eddy = eddy.restart_with(&["--kafka-brokers", &broker.addr()]);
    let c = eddy.connect().await;
    wait_for(&c, "SELECT n FROM totals", vec![vec!["3"]]).await;
    broker.resume();
    produce(&p, "ev", &[(0, None, Some(r#"{"v": 4}"#))]).await;
    wait_for(&c, "SELECT n FROM totals", vec![vec!["4"]]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_broker_at_create_is_a_clear_error() {
    let dead = common::free_port();
    let eddy = Eddy::start_with(&["--kafka-brokers", &format!("127.0.0.1:{dead}")]);
    let c = eddy.connect().await;
    let err = c
        .batch_execute("CREATE STREAM s (a INT) WITH (kafka_topic = 't', partitions = 1)")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "08001", "{db:?}");
    assert!(db.message().contains("cannot reach Kafka"), "{db:?}");
    // Nothing was created.
    assert!(query_rows(&c, "SHOW STREAMS").await.is_empty());
    // Without --kafka-brokers at all: 55000 and a hint.
    let plain = Eddy::start();
    let c = plain.connect().await;
    let err = c
        .batch_execute("CREATE STREAM s (a INT) WITH (kafka_topic = 't')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "55000");
}
