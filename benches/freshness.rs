//! Freshness benchmark (docs/benchmarks.md, "Freshness of subscriptions"): how long from
//! an event being written to the change arriving at a subscribed client.
//!
//! A real eddy process (the release binary) with a stream and a view over it:
//!
//! ```sql
//! CREATE STREAM ev (id BIGINT, sent_us BIGINT, v BIGINT);
//! CREATE MATERIALIZED VIEW ev_out AS SELECT id, sent_us, v * 2 AS v2 FROM ev WHERE v >= 0;
//! ```
//!
//! One client subscribes with `COPY (SUBSCRIBE ev_out WITH (SNAPSHOT = false)) TO STDOUT`
//! (tokio-postgres `copy_out`); writer connections INSERT events at a fixed rate. The
//! schedule is open-loop: event `i` is due at `t0 + i / rate`, carries that due time in
//! `sent_us`, and is sent with the next batch after it falls due. Latency is measured
//! from the due time, so a writer that falls behind shows up as latency instead of
//! silently lowering the rate (no coordinated omission). The first second is warm-up.
//! The run also checks that every event arrived exactly once.
//!
//! With `EDDY_BENCH_SOURCE=kafka` the stream is fed by a topic on a real broker (Tansu,
//! one partition per writer) and the writers produce JSON records to it instead.
//!
//! Run: `cargo bench --bench freshness` (env `EDDY_BENCH_RATES=10000,100000` events/s,
//! `EDDY_BENCH_SECONDS=10`, `EDDY_BENCH_WRITERS=4`, `EDDY_BENCH_TICK_MS=5` — how often
//! each writer sends what fell due).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};

struct RunResult {
    rate: u64,
    sent: u64,
    received: u64,
    achieved: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    statements: u64,
}

async fn run(rate: u64, seconds: u64, writers: u64, tick: Duration, kafka: bool) -> RunResult {
    // With Kafka, events are produced to a topic on a real broker (Tansu) and reach the
    // stream through eddy's source; otherwise writers INSERT them over SQL.
    let broker = kafka.then(common::Broker::start);
    let eddy = match &broker {
        Some(b) => common::Eddy::start_with(&["--kafka-brokers", &b.addr()]),
        None => common::Eddy::start(),
    };
    let admin = eddy.connect().await;
    let name = format!("ev_{rate}");
    let with = if kafka {
        format!("WITH (kafka_topic = '{name}', partitions = {writers})")
    } else {
        String::new()
    };
    admin
        .batch_execute(&format!(
            "CREATE STREAM {name} (id BIGINT, sent_us BIGINT, v BIGINT) {with};
             CREATE MATERIALIZED VIEW {name}_out AS
               SELECT id, sent_us, v * 2 AS v2 FROM {name} WHERE v >= 0;"
        ))
        .await
        .expect("setup");
    let producer: Option<ThreadedProducer<DefaultProducerContext>> = broker.as_ref().map(|b| {
        ClientConfig::new()
            .set("bootstrap.servers", b.addr())
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "2000000")
            .create()
            .expect("producer")
    });
    let producer = producer.map(Arc::new);

    // The subscriber: parse COPY text lines `epoch \t diff \t id \t sent_us \t v2`.
    let sub = eddy.connect().await;
    let copy = sub
        .copy_out(&format!(
            "COPY (SUBSCRIBE {name}_out WITH (SNAPSHOT = false)) TO STDOUT"
        ))
        .await
        .expect("subscribe");
    let total = rate * seconds;
    let warmup_us = 1_000_000u64;
    let received = Arc::new(AtomicU64::new(0));
    let t0 = common::now_us() + 200_000; // writers start 200 ms from now
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut copy = Box::pin(copy);
            let mut lat = Vec::with_capacity(total as usize);
            let mut seen = vec![false; total as usize];
            let mut dups = 0u64;
            let mut partial = Vec::new();
            while let Some(chunk) = copy.next().await {
                let Ok(chunk) = chunk else { break };
                let arrived = common::now_us();
                partial.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
                    let line = &partial[start..start + nl];
                    start += nl + 1;
                    let mut f = line.split(|b| *b == b'\t');
                    let (_epoch, diff, id, sent) = (f.next(), f.next(), f.next(), f.next());
                    let parse = |x: Option<&[u8]>| {
                        x.and_then(|b| std::str::from_utf8(b).ok())
                            .and_then(|s| s.parse::<i64>().ok())
                    };
                    let (Some(diff), Some(id), Some(sent)) = (parse(diff), parse(id), parse(sent))
                    else {
                        continue;
                    };
                    assert_eq!(diff, 1, "a stream view only inserts");
                    let id = id as usize;
                    if id < seen.len() {
                        if seen[id] {
                            dups += 1;
                        }
                        seen[id] = true;
                    }
                    if sent as u64 >= t0 + warmup_us {
                        lat.push(arrived.saturating_sub(sent as u64));
                    }
                    if received.fetch_add(1, Ordering::Relaxed) + 1 == total {
                        return (lat, dups);
                    }
                }
                partial.drain(..start);
            }
            (lat, dups)
        })
    };

    // Writers: writer w owns events w, w + writers, ...; every tick it sends those due.
    let statements = Arc::new(AtomicU64::new(0));
    let mut handles = vec![];
    for w in 0..writers {
        let client = eddy.connect().await;
        let statements = statements.clone();
        let name = name.clone();
        let producer = producer.clone();
        handles.push(tokio::spawn(async move {
            let mut next = w; // next event id this writer owns
            let mut sql = String::new();
            loop {
                if next >= total {
                    break;
                }
                let now = common::now_us();
                let due_upto = if now < t0 {
                    0
                } else {
                    ((now - t0) as u128 * rate as u128 / 1_000_000) as u64
                };
                if let (Some(p), true) = (&producer, next < due_upto.min(total)) {
                    while next < due_upto.min(total) {
                        let due = t0 + next * 1_000_000 / rate;
                        sql.clear();
                        let _ = write!(
                            sql,
                            r#"{{"id":{next},"sent_us":{due},"v":{}}}"#,
                            next % 1000
                        );
                        let mut record: BaseRecord<'_, (), str> = BaseRecord::to(&name)
                            .payload(sql.as_str())
                            .partition(w as i32);
                        // The queue is large; when it is full, wait for the broker.
                        loop {
                            match p.send(record) {
                                Ok(()) => break,
                                Err((_, r)) => {
                                    record = r;
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                        }
                        next += writers;
                    }
                    statements.fetch_add(1, Ordering::Relaxed);
                } else if next < due_upto.min(total) {
                    sql.clear();
                    let _ = write!(sql, "INSERT INTO {name} VALUES ");
                    let mut first = true;
                    while next < due_upto.min(total) {
                        let due = t0 + next * 1_000_000 / rate;
                        if !first {
                            sql.push(',');
                        }
                        first = false;
                        let _ = write!(sql, "({next},{due},{})", next % 1000);
                        next += writers;
                    }
                    client.batch_execute(&sql).await.expect("insert");
                    statements.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(tick).await;
            }
        }));
    }
    for h in handles {
        h.await.expect("writer");
    }
    let finished_sending = common::now_us();
    let (mut lat, dups) = match tokio::time::timeout(Duration::from_secs(60), reader).await {
        Ok(r) => r.expect("reader"),
        Err(_) => panic!(
            "only {} of {total} events arrived within 60 s of the last INSERT",
            received.load(Ordering::Relaxed)
        ),
    };
    assert_eq!(dups, 0, "events delivered twice");
    let got = received.load(Ordering::Relaxed);
    assert_eq!(got, total, "every event arrives exactly once");
    lat.sort_unstable();
    let elapsed = (finished_sending.saturating_sub(t0)) as f64 / 1e6;
    RunResult {
        rate,
        sent: total,
        received: got,
        achieved: total as f64 / elapsed.max(1e-9),
        p50: common::pct(&lat, 0.50),
        p99: common::pct(&lat, 0.99),
        p999: common::pct(&lat, 0.999),
        max: lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0),
        statements: statements.load(Ordering::Relaxed),
    }
}

fn main() {
    let rates: Vec<u64> = std::env::var("EDDY_BENCH_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let seconds = common::env_u64("EDDY_BENCH_SECONDS", 10);
    let writers = common::env_u64("EDDY_BENCH_WRITERS", 4).max(1);
    let tick = Duration::from_millis(common::env_u64("EDDY_BENCH_TICK_MS", 5).max(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let kafka = std::env::var("EDDY_BENCH_SOURCE").is_ok_and(|s| s == "kafka");
    let via = if kafka {
        "Kafka produce (Tansu) -> source"
    } else {
        "INSERT"
    };
    println!(
        "freshness: {via} -> COPY (SUBSCRIBE ...) client, {seconds} s per rate, {writers} writers, tick {} ms",
        tick.as_millis()
    );
    println!(
        "| target events/s | achieved events/s | batches sent | p50 ms | p99 ms | p99.9 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for rate in rates {
        let r = rt.block_on(run(rate, seconds, writers, tick, kafka));
        assert_eq!(r.sent, r.received);
        println!(
            "| {:>7} | {:>9.0} | {:>6} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.rate, r.achieved, r.statements, r.p50, r.p99, r.p999, r.max
        );
    }
}
