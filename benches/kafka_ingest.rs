//! Kafka ingest benchmark (docs/benchmarks.md, "Ingest from Kafka"): how fast eddy
//! turns a topic into an up-to-date GROUP BY view, next to the ceiling — the rate at
//! which rdkafka alone consumes and JSON-decodes the same topic, in the same run.
//!
//! 1. A real broker (Tansu) gets `EDDY_BENCH_RECORDS` JSON records (default 500,000)
//!    over 4 partitions: `{"k": i % 1000, "v": i, "note": "..."}`.
//! 2. Ceiling: one thread with an rdkafka `BaseConsumer` reads every record from the
//!    beginning and parses each value with serde_json.
//! 3. eddy (release binary): `CREATE STREAM ... WITH (kafka_topic ...)` and
//!    `CREATE MATERIALIZED VIEW ... GROUP BY k`; time until the view has counted every
//!    record, and the CPU time eddy used meanwhile (from /proc), for events/s per core.
//!
//! Run: `cargo bench --bench kafka_ingest`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

async fn produce(broker: &str, topic: &str, n: u64) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut start = 0;
    while start < n {
        let end = (start + 20_000).min(n);
        let values: Vec<String> = (start..end)
            .map(|i| {
                format!(
                    r#"{{"k": {}, "v": {i}, "note": "record number {i} of the benchmark"}}"#,
                    i % 1000
                )
            })
            .collect();
        let pending: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let r: FutureRecord<'_, str, str> = FutureRecord::to(topic)
                    .payload(v.as_str())
                    .partition(((start as usize + j) % PARTITIONS as usize) as i32);
                p.send(r, Duration::from_secs(60))
            })
            .collect();
        for r in futures::future::join_all(pending).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
        start = end;
    }
}

/// The ceiling: consume and JSON-decode every record on one thread.
fn ceiling(broker: &str, topic: &str, n: u64) -> (f64, f64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "bench-ceiling")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let start = Instant::now();
    let cpu0 = cpu_seconds(std::process::id());
    let mut seen = 0u64;
    let mut checksum = 0i64;
    while seen < n {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if let Some(v) = m.payload() {
                let parsed: serde_json::Value = serde_json::from_slice(v).expect("json");
                checksum += parsed["v"].as_i64().unwrap_or(0);
            }
            seen += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(std::process::id()) - cpu0;
    assert_eq!(checksum, (n as i64 - 1) * n as i64 / 2);
    (secs, cpu)
}

#[tokio::main]
async fn main() {
    let n = env_u64("EDDY_BENCH_RECORDS", 500_000);
    let broker = common::Broker::start();
    let addr = broker.addr();
    let eddy = common::Eddy::start_with(&["--kafka-brokers", &addr]);
    let client = eddy.connect().await;
    // Let eddy create the topic (and check the broker), then fill it.
    client
        .batch_execute(&format!(
            "CREATE STREAM warmup (x INT) WITH (kafka_topic = 'events', partitions = {PARTITIONS}); \
             DROP STREAM warmup;"
        ))
        .await
        .expect("create topic");
    let t = Instant::now();
    produce(&addr, "events", n).await;
    println!("produced {n} records in {:.1} s", t.elapsed().as_secs_f64());

    let (secs, cpu) = ceiling(&addr, "events", n);
    let ceiling_rate = n as f64 / secs;
    let ceiling_per_core = n as f64 / cpu.max(1e-9);

    let cpu0 = cpu_seconds(eddy.pid());
    let t = Instant::now();
    client
        .batch_execute(
            "CREATE STREAM events (k BIGINT, v BIGINT, note TEXT) WITH (kafka_topic = 'events');
             CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k;",
        )
        .await
        .expect("create");
    // Poll the source's committed record count (cheap: no query planning, so the
    // polling does not eat into eddy's CPU time); the view is updated in the same epoch.
    loop {
        let msgs = client.simple_query("SHOW SOURCES").await.expect("show");
        let counted: u64 = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(6).and_then(|v| v.parse().ok()),
                _ => None,
            })
            .unwrap_or(0);
        if counted >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let eddy_secs = t.elapsed().as_secs_f64();
    let eddy_cpu = cpu_seconds(eddy.pid()) - cpu0;
    let total: i64 = client
        .query_one("SELECT sum(total)::bigint FROM per_k", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(
        total,
        (n as i64 - 1) * n as i64 / 2,
        "every record exactly once"
    );
    let eddy_rate = n as f64 / eddy_secs;
    let eddy_per_core = n as f64 / eddy_cpu.max(1e-9);
    println!("| | records | seconds | events/s | CPU s | events/s per core |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| rdkafka + serde_json (ceiling) | {n} | {secs:.2} | {ceiling_rate:.0} | {cpu:.2} | {ceiling_per_core:.0} |"
    );
    println!(
        "| eddy: stream -> GROUP BY view | {n} | {eddy_secs:.2} | {eddy_rate:.0} | {eddy_cpu:.2} | {eddy_per_core:.0} |"
    );
    println!(
        "eddy / ceiling: {:.0}% of the wall-clock rate, {:.0}% per core",
        100.0 * eddy_rate / ceiling_rate,
        100.0 * eddy_per_core / ceiling_per_core
    );
}
