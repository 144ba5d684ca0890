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
//! 4. With `EDDY_CHECKPOINT_INTERVAL=1s,10s,never` (a list), step 3 runs once per
//!    interval, each on a fresh eddy (`--checkpoint-interval <x>`) reading the same topic,
//!    and the run ends with the overhead of each interval against `never` (events/s and
//!    CPU per event). `EDDY_BENCH_ROUNDS` (default 1) repeats the list, rotating its order
//!    each round, and the summary takes medians. Without the variable the run is as
//!    before: one eddy with its default interval.
//!
//! Run: `cargo bench --bench kafka_ingest`
//! (`EDDY_BENCH_RECORDS=1000000 EDDY_CHECKPOINT_INTERVAL=1s,10s,never EDDY_BENCH_ROUNDS=3`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

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
    let cpu0 = common::cpu_seconds(std::process::id());
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
    let cpu = common::cpu_seconds(std::process::id()) - cpu0;
    assert_eq!(checksum, (n as i64 - 1) * n as i64 / 2);
    (secs, cpu)
}

/// Create the stream and the view on `client`'s eddy and time until the view has
/// counted all `n` records: (wall seconds, eddy CPU seconds). Checks that every record
/// was counted exactly once.
async fn ingest(client: &tokio_postgres::Client, pid: u32, n: u64) -> (f64, f64) {
    let cpu0 = common::cpu_seconds(pid);
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
    let eddy_cpu = common::cpu_seconds(pid) - cpu0;
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
    (eddy_secs, eddy_cpu)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// `EDDY_CHECKPOINT_INTERVAL` as a list (`1s,10s,never`), if set. eddy reads the same
/// variable, so with a list every eddy here gets `--checkpoint-interval` explicitly.
fn checkpoint_intervals() -> Option<Vec<String>> {
    let v = std::env::var("EDDY_CHECKPOINT_INTERVAL").ok()?;
    let list: Vec<String> = v
        .split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect();
    (!list.is_empty()).then_some(list)
}

#[tokio::main]
async fn main() {
    let n = common::env_u64("EDDY_BENCH_RECORDS", 500_000);
    let intervals = checkpoint_intervals();
    let broker = common::Broker::start();
    let addr = broker.addr();
    let setup_args: Vec<&str> = match &intervals {
        Some(list) => vec!["--kafka-brokers", &addr, "--checkpoint-interval", &list[0]],
        None => vec!["--kafka-brokers", &addr],
    };
    let eddy = common::Eddy::start_with(&setup_args);
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

    if let Some(intervals) = intervals {
        drop(client);
        drop(eddy);
        checkpoint_overhead(&addr, n, &intervals, (secs, cpu)).await;
        return;
    }

    let (eddy_secs, eddy_cpu) = ingest(&client, eddy.pid(), n).await;
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

/// Step 4: the eddy part once per checkpoint interval (and round), each on a fresh eddy
/// and data directory reading the same topic from its beginning.
async fn checkpoint_overhead(addr: &str, n: u64, intervals: &[String], ceiling: (f64, f64)) {
    let rounds = common::env_u64("EDDY_BENCH_ROUNDS", 1).max(1) as usize;
    let (c_secs, c_cpu) = ceiling;
    println!("| run | records | seconds | events/s | CPU s | events/s per core | CPU µs/event |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| rdkafka + serde_json (ceiling) | {n} | {c_secs:.2} | {:.0} | {c_cpu:.2} | {:.0} | {:.2} |",
        n as f64 / c_secs,
        n as f64 / c_cpu.max(1e-9),
        1e6 * c_cpu / n as f64
    );
    // Per interval: (events/s, CPU µs per event) of each round.
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); intervals.len()];
    for round in 0..rounds {
        for j in 0..intervals.len() {
            // Rotate the order each round, so that no interval always runs first.
            let i = (j + round) % intervals.len();
            let interval = &intervals[i];
            let eddy = common::Eddy::start_with(&[
                "--kafka-brokers",
                addr,
                "--checkpoint-interval",
                interval,
            ]);
            let client = eddy.connect().await;
            let (secs, cpu) = ingest(&client, eddy.pid(), n).await;
            drop(client);
            drop(eddy);
            let rate = n as f64 / secs;
            let us_per_event = 1e6 * cpu / n as f64;
            results[i].0.push(rate);
            results[i].1.push(us_per_event);
            println!(
                "| eddy, --checkpoint-interval {interval} (round {}) | {n} | {secs:.2} | {rate:.0} | {cpu:.2} | {:.0} | {us_per_event:.2} |",
                round + 1,
                n as f64 / cpu.max(1e-9)
            );
        }
    }
    let medians: Vec<(f64, f64)> = results
        .iter_mut()
        .map(|(r, c)| (median(r), median(c)))
        .collect();
    let base = intervals
        .iter()
        .position(|x| x == "never" || x == "0")
        .map(|i| medians[i]);
    println!();
    println!("Medians of {rounds} round(s); overhead against `never`:");
    println!();
    println!("| --checkpoint-interval | events/s | CPU µs/event | throughput vs never | CPU/event vs never |");
    println!("|---|---|---|---|---|");
    for (interval, (rate, cpu)) in intervals.iter().zip(&medians) {
        let (vs_rate, vs_cpu) = match base {
            Some((b_rate, b_cpu)) => (
                format!("{:+.1}%", 100.0 * (rate / b_rate - 1.0)),
                format!("{:+.1}%", 100.0 * (cpu / b_cpu - 1.0)),
            ),
            None => ("(no `never` run)".into(), "(no `never` run)".into()),
        };
        println!("| {interval} | {rate:.0} | {cpu:.2} | {vs_rate} | {vs_cpu} |");
    }
}
