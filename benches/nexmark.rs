//! Nexmark benchmark (docs/benchmarks.md, "Nexmark"): the queries in
//! `benchmarks/nexmark/` over the built-in generator, each in a fresh release-build eddy.
//!
//! For each query: the three generator streams of `benchmarks/nexmark/schema.sql` and
//! the query's view are created in one batch (so the view follows the events as they
//! arrive), the generator runs at full speed (`event_rate = 0`) until it has produced
//! `EDDY_NEXMARK_EVENTS` events in Nexmark's mix (bids 92%, auctions 6%, persons 2%),
//! and the run ends when every event is applied to the view (`SHOW SOURCES`, then
//! `FLUSH`). Reported: events/s (wall clock), events per CPU-second of the eddy process
//! (its utime + stime: "per core"), eddy's CPU seconds, peak RSS (VmHWM), the size of
//! the data directory, and the view's row count — checked against the same query run
//! in batch by DataFusion over the same events.
//!
//! With `EDDY_NEXMARK_SOURCE=kafka` the same events are first produced as JSON to three
//! topics on a real broker (Tansu), and the streams read them from there (end to end:
//! rdkafka, JSON decoding, the engine). The run then also measures the ceiling: one
//! thread that only consumes and JSON-decodes the same records with rdkafka.
//!
//! With `EDDY_NEXMARK_RATE=R` the run is open loop instead: the generators make R events
//! per second in all (in the same mix), stamping each event with the wall clock when it
//! is made (`use_real_time = true`), and a client subscribed to the view
//! (`COPY (SUBSCRIBE q WITH (SNAPSHOT = false)) TO STDOUT`) times every inserted row by
//! its event-time column (`date_time`, `bid_date_time`, ...): freshness = arrival at the
//! subscriber - the event's time, reported as p50/p99/max after a 1-second warm-up.
//! Views without such a column (aggregates, windows) report CPU and memory only.
//!
//! Run: `cargo bench --bench nexmark` (env `EDDY_NEXMARK_EVENTS=1000000`,
//! `EDDY_NEXMARK_RUNS=1` (runs per query; the median by CPU time is reported),
//! `EDDY_NEXMARK_QUERIES=q0,q1,...` (default: every `qN.sql` but the quadratic q6),
//! `EDDY_NEXMARK_SOURCE=nexmark|kafka`, `EDDY_NEXMARK_RATE=events/s` (open loop, with
//! freshness), `EDDY_NEXMARK_CSV=path` to also write the
//! results as CSV for `benchmarks/nexmark/plot.py`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn queries_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benchmarks/nexmark")
}

/// The queries to run: `EDDY_NEXMARK_QUERIES`, or every `qN.sql` in numeric order.
fn queries() -> Vec<String> {
    if let Ok(list) = std::env::var("EDDY_NEXMARK_QUERIES") {
        return list
            .split(',')
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty())
            .collect();
    }
    let mut found: Vec<(u32, String)> = std::fs::read_dir(queries_dir())
        .expect("benchmarks/nexmark")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix('q')?.strip_suffix(".sql")?.parse().ok()?;
            Some((n, name.trim_end_matches(".sql").to_string()))
        })
        .collect();
    found.sort();
    // q6 is a rewrite of a window function whose cost is quadratic per key
    // (benchmarks/nexmark/README.md): a correctness check, not a throughput run.
    found
        .into_iter()
        .map(|(_, q)| q)
        .filter(|q| q != "q6")
        .collect()
}

/// Rows of each table for `events` events in Nexmark's mix (46:3:1).
fn split(events: u64) -> (u64, u64, u64) {
    let bids = events * 46 / 50;
    let auctions = events * 3 / 50;
    (bids, auctions, events - bids - auctions)
}

/// `schema.sql` with the row counts filled in; with a `rate` (events per second in all),
/// the generators run open loop at that rate and stamp events with the wall clock.
fn schema(events: u64, rate: Option<u64>) -> String {
    let (bids, auctions, persons) = split(events);
    let (bid_rate, auction_rate, person_rate) = split(rate.unwrap_or(0));
    std::fs::read_to_string(queries_dir().join("schema.sql"))
        .expect("benchmarks/nexmark/schema.sql")
        .replace("{{bid_events}}", &bids.to_string())
        .replace("{{auction_events}}", &auctions.to_string())
        .replace("{{person_events}}", &persons.to_string())
        .replace("{{bid_rate}}", &bid_rate.to_string())
        .replace("{{auction_rate}}", &auction_rate.to_string())
        .replace("{{person_rate}}", &person_rate.to_string())
        .replace(
            "{{real_time}}",
            if rate.is_some() { "true" } else { "false" },
        )
}

/// The schema reading Kafka topics `nx_bid`, `nx_auction`, `nx_person` instead of the
/// generator: each `WITH (connector = 'nexmark', ...)` becomes `WITH (kafka_topic = ...)`.
fn kafka_schema(events: u64) -> String {
    let mut s = schema(events, None);
    let marker = "WITH (connector = 'nexmark'";
    while let Some(i) = s.find(marker) {
        let j = i + s[i..].find(')').expect("WITH (...)");
        let clause = &s[i..=j];
        let table = clause
            .split("table = '")
            .nth(1)
            .and_then(|t| t.split('\'').next())
            .expect("table = '...'")
            .to_string();
        s.replace_range(i..=j, &format!("WITH (kafka_topic = 'nx_{table}')"));
    }
    s
}

/// One Nexmark event as the JSON the generator source decodes (times in ms).
fn event_json(e: &nexmark::event::Event) -> (&'static str, String) {
    use nexmark::event::Event;
    match e {
        Event::Person(p) => (
            "nx_person",
            serde_json::json!({"id": p.id, "name": p.name, "email_address": p.email_address,
                "credit_card": p.credit_card, "city": p.city, "state": p.state,
                "date_time": p.date_time, "extra": p.extra})
            .to_string(),
        ),
        Event::Auction(a) => (
            "nx_auction",
            serde_json::json!({"id": a.id, "item_name": a.item_name,
                "description": a.description, "initial_bid": a.initial_bid,
                "reserve": a.reserve, "date_time": a.date_time, "expires": a.expires,
                "seller": a.seller, "category": a.category, "extra": a.extra})
            .to_string(),
        ),
        Event::Bid(b) => (
            "nx_bid",
            serde_json::json!({"auction": b.auction, "bidder": b.bidder, "price": b.price,
                "channel": b.channel, "url": b.url, "date_time": b.date_time,
                "extra": b.extra})
            .to_string(),
        ),
    }
}

/// Produce `events` Nexmark events (the generator's own mix) to the three topics.
async fn preload(broker: &str, events: u64) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let mut generator = nexmark::EventGenerator::new(nexmark::config::NexmarkConfig {
        base_time: 1_700_000_000_000,
        ..Default::default()
    });
    let mut left = events;
    while left > 0 {
        let n = left.min(20_000);
        left -= n;
        let batch: Vec<(&str, String)> = generator
            .by_ref()
            .take(n as usize)
            .map(|e| event_json(&e))
            .collect();
        let pending: Vec<_> = batch
            .iter()
            .map(|(topic, v)| {
                p.send(
                    FutureRecord::<str, str>::to(topic).payload(v.as_str()),
                    Duration::from_secs(60),
                )
            })
            .collect();
        for r in futures::future::join_all(pending).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
    }
}

/// The ceiling: one thread that consumes and JSON-decodes every record of the three
/// topics with rdkafka. Returns (events/s, events per CPU-second of this process).
fn ceiling(broker: &str, events: u64) -> (f64, f64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "nexmark-ceiling")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in ["nx_bid", "nx_auction", "nx_person"] {
        let md = c
            .fetch_metadata(Some(t), Duration::from_secs(10))
            .expect("metadata");
        for topic in md.topics() {
            for p in topic.partitions() {
                tpl.add_partition_offset(t, p.id(), rdkafka::Offset::Beginning)
                    .expect("partition");
            }
        }
    }
    c.assign(&tpl).expect("assign");
    let cpu0 = common::cpu_seconds(std::process::id());
    let t = Instant::now();
    let (mut seen, mut fields) = (0u64, 0usize);
    while seen < events {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if let Some(v) = m.payload() {
                let parsed: serde_json::Value = serde_json::from_slice(v).expect("JSON");
                fields += parsed.as_object().map_or(0, |o| o.len());
            }
            seen += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds(std::process::id()) - cpu0;
    assert!(fields > 0);
    (events as f64 / secs, events as f64 / cpu.max(1e-9))
}

/// The query's `SELECT` (the text after `AS` of its `CREATE MATERIALIZED VIEW`).
fn select_of(view_sql: &str) -> String {
    let upper = view_sql.to_ascii_uppercase();
    let at = upper
        .find(" AS")
        .expect("CREATE MATERIALIZED VIEW qN AS ...");
    view_sql[at + 3..].trim().trim_end_matches(';').to_string()
}

/// Strip `--` comments (the files start with a description).
fn without_comments(sql: &str) -> String {
    sql.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Run {
    query: String,
    events: u64,
    secs: f64,
    cpu: f64,
    peak_rss: u64,
    disk: u64,
    rows: i64,
    /// Open-loop runs (`EDDY_NEXMARK_RATE`) of views with an event-time column.
    fresh: Option<Freshness>,
}

/// Freshness of one open-loop run: from an event's time (the wall clock when the
/// generator made it, `use_real_time`) to the view's row arriving at a subscriber.
struct Freshness {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Rows timed (inserted rows after the first second).
    rows: usize,
}

/// A subscriber to `view` that times each inserted row by the view's first event-time
/// column (`date_time`, `bid_date_time`, ...). `None` when the view has none (its rows
/// are aggregates or windows, whose times are not one event's).
struct Timer {
    latencies: std::sync::Arc<parking_lot::Mutex<Vec<u64>>>,
    last_arrival: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Timer {
    async fn start(eddy: &common::Eddy, view: &str) -> Option<Timer> {
        use futures::StreamExt;
        use std::sync::atomic::Ordering;
        let c = eddy.connect().await;
        let stmt = c.prepare(&format!("SELECT * FROM {view}")).await.ok()?;
        let column = stmt.columns().iter().position(|col| {
            *col.type_() == tokio_postgres::types::Type::TIMESTAMP
                && col.name().ends_with("date_time")
        })?;
        let copy = c
            .copy_out(&format!(
                "COPY (SUBSCRIBE {view} WITH (SNAPSHOT = false)) TO STDOUT"
            ))
            .await
            .expect("subscribe");
        // The first second is warm-up.
        let from_us = common::now_us() + 1_000_000;
        let latencies = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let last_arrival = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(common::now_us()));
        let (lat, last) = (latencies.clone(), last_arrival.clone());
        let task = tokio::spawn(async move {
            let _client = c;
            let mut copy = Box::pin(copy);
            let mut partial = Vec::new();
            while let Some(Ok(chunk)) = copy.next().await {
                let arrived = common::now_us();
                last.store(arrived, Ordering::Relaxed);
                partial.extend_from_slice(&chunk);
                let mut start = 0;
                let mut batch = vec![];
                while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
                    let line = &partial[start..start + nl];
                    start += nl + 1;
                    // COPY text: epoch, diff, then the view's columns.
                    let mut fields = line.split(|b| *b == b'\t');
                    let diff = fields.nth(1);
                    let time = fields.nth(column);
                    if diff != Some(b"1".as_slice()) {
                        continue;
                    }
                    let Some(t) = time
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .and_then(|t| {
                            t.replacen(' ', "T", 1)
                                .parse::<chrono::NaiveDateTime>()
                                .ok()
                        })
                    else {
                        continue;
                    };
                    let event_us = t.and_utc().timestamp_micros().max(0) as u64;
                    if event_us >= from_us {
                        batch.push(arrived.saturating_sub(event_us));
                    }
                }
                partial.drain(..start);
                lat.lock().extend(batch);
            }
        });
        Some(Timer {
            latencies,
            last_arrival,
            task,
        })
    }

    /// Wait until rows stop arriving (the subscriber has caught up), then summarize.
    async fn finish(self) -> Freshness {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::now_us().saturating_sub(self.last_arrival.load(Ordering::Relaxed)) < 500_000
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.task.abort();
        let mut l = std::mem::take(&mut *self.latencies.lock());
        l.sort_unstable();
        Freshness {
            p50_ms: common::pct(&l, 0.5),
            p99_ms: common::pct(&l, 0.99),
            max_ms: common::pct(&l, 1.0),
            rows: l.len(),
        }
    }
}

impl Run {
    fn per_second(&self) -> f64 {
        self.events as f64 / self.secs
    }

    /// Throughput per core: events per CPU-second of the eddy process.
    fn per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu.max(1e-9)
    }
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    match c.simple_query(sql).await {
        Ok(msgs) => msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
            .unwrap_or(-1),
        Err(e) => panic!("{sql}: {e}"),
    }
}

async fn run(query: &str, events: u64, broker: Option<&str>, rate: Option<u64>) -> Run {
    let sql = without_comments(
        &std::fs::read_to_string(queries_dir().join(format!("{query}.sql")))
            .unwrap_or_else(|e| panic!("{query}.sql: {e}")),
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let eddy = match broker {
        Some(b) => common::Eddy::start_in(&data, &["--kafka-brokers", b]),
        None => common::Eddy::start_in(&data, &[]),
    };
    let schema = match broker {
        Some(_) => kafka_schema(events),
        None => schema(events, rate),
    };
    let pid = eddy.pid();
    let c = eddy.connect().await;
    let cpu0 = common::cpu_seconds(pid);
    let t = Instant::now();
    c.batch_execute(&format!("{schema}\n{sql}"))
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let timer = match rate {
        Some(_) => Timer::start(&eddy, query).await,
        None => None,
    };
    let (bids, auctions, persons) = split(events);
    let want = bids + auctions + persons;
    loop {
        let msgs = c.simple_query("SHOW SOURCES").await.expect("SHOW SOURCES");
        // One row per partition; `records` is the source's total (so once per source).
        let per_source: std::collections::HashMap<String, u64> = msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                    r.get(0)?.to_string(),
                    r.get(6).and_then(|v| v.parse::<u64>().ok())?,
                )),
                _ => None,
            })
            .collect();
        let read: u64 = per_source.values().sum();
        if read >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.batch_execute("FLUSH").await.expect("FLUSH");
    let secs = t.elapsed().as_secs_f64();
    let fresh = match timer {
        Some(timer) => Some(timer.finish().await),
        None => None,
    };
    let cpu = common::cpu_seconds(pid) - cpu0;
    let peak = common::peak_rss(pid);
    let rows = count(&c, &format!("SELECT count(*) FROM {query}")).await;
    // SESSION windows only exist in views (a one-off query refuses them); q11 is
    // checked against a gaps-and-islands query in sql-tests/nexmark/queries.slt.
    if !sql.contains("SESSION(") {
        let batch = count(
            &c,
            &format!("SELECT count(*) FROM ({}) AS batch", select_of(&sql)),
        )
        .await;
        assert_eq!(
            rows, batch,
            "{query}: the view has {rows} rows, the same query in batch {batch}"
        );
    }
    let disk = common::dir_size(&data);
    Run {
        query: query.to_string(),
        events: want,
        secs,
        cpu,
        peak_rss: peak,
        disk,
        rows,
        fresh,
    }
}

#[tokio::main]
async fn main() {
    let events = common::env_u64("EDDY_NEXMARK_EVENTS", 1_000_000);
    let kafka = std::env::var("EDDY_NEXMARK_SOURCE").is_ok_and(|s| s == "kafka");
    // Open loop: the generators run at this many events per second in all, stamping
    // events with the wall clock, and a subscriber times the view's rows (freshness).
    let rate = std::env::var("EDDY_NEXMARK_RATE")
        .ok()
        .and_then(|r| r.parse::<u64>().ok())
        .filter(|r| *r > 0);
    assert!(
        !(kafka && rate.is_some()),
        "EDDY_NEXMARK_RATE runs the generator; for freshness through Kafka see `cargo bench --bench freshness`"
    );
    let broker = kafka.then(common::Broker::start);
    let addr = broker.as_ref().map(|b| b.addr());
    if let Some(addr) = &addr {
        preload(addr, events).await;
        let (rate, per_cpu) = ceiling(addr, events);
        println!(
            "ceiling (rdkafka + serde_json, one thread): {rate:.0} events/s, {per_cpu:.0} events per CPU-second"
        );
    }
    let mut results = vec![];
    if let Some(rate) = rate {
        println!("open loop at {rate} events/s; freshness = row at the subscriber - event time");
        println!(
            "| query | events | seconds | eddy CPU s | events per CPU-second | peak RSS | freshness p50 | p99 | max | rows timed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
    } else {
        println!(
            "| query | events | seconds | events/s | eddy CPU s | events per CPU-second | peak RSS | data dir | view rows |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    // Runs of one query vary with the disk (each epoch is flushed; a checkpoint may or
    // may not fall inside a short run): with several runs, the one with the median CPU
    // time is reported, and the range of events per CPU-second is printed too.
    let runs = common::env_u64("EDDY_NEXMARK_RUNS", 1).max(1);
    for q in queries() {
        let mut all = vec![];
        for _ in 0..runs {
            all.push(run(&q, events, addr.as_deref(), rate).await);
        }
        all.sort_by(|a, b| a.cpu.total_cmp(&b.cpu));
        if runs > 1 {
            println!(
                "  {q}: events per CPU-second over {runs} runs: {:.0} .. {:.0}",
                all[all.len() - 1].per_cpu_second(),
                all[0].per_cpu_second()
            );
        }
        let r = all.swap_remove(all.len() / 2);
        if rate.is_some() {
            let fresh = match &r.fresh {
                Some(f) => format!(
                    "{:.1} ms | {:.1} ms | {:.1} ms | {}",
                    f.p50_ms, f.p99_ms, f.max_ms, f.rows
                ),
                None => "— | — | — | no event-time column".to_string(),
            };
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.0} | {:.0} MB | {fresh} |",
                r.query,
                r.events,
                r.secs,
                r.cpu,
                r.per_cpu_second(),
                r.peak_rss as f64 / 1e6,
            );
            results.push(r);
            continue;
        }
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} MB | {:.0} MB | {} |",
            r.query,
            r.events,
            r.secs,
            r.per_second(),
            r.cpu,
            r.per_cpu_second(),
            r.peak_rss as f64 / 1e6,
            r.disk as f64 / 1e6,
            r.rows
        );
        results.push(r);
    }
    if let Ok(path) = std::env::var("EDDY_NEXMARK_CSV") {
        let mut csv = String::from(
            "query,events,seconds,events_per_s,cpu_s,events_per_cpu_s,peak_rss_bytes,data_dir_bytes,rows,freshness_p50_ms,freshness_p99_ms,freshness_max_ms\n",
        );
        for r in &results {
            let fresh = match &r.fresh {
                Some(f) => format!("{:.1},{:.1},{:.1}", f.p50_ms, f.p99_ms, f.max_ms),
                None => ",,".to_string(),
            };
            csv.push_str(&format!(
                "{},{},{:.3},{:.0},{:.3},{:.0},{},{},{},{fresh}\n",
                r.query,
                r.events,
                r.secs,
                r.per_second(),
                r.cpu,
                r.per_cpu_second(),
                r.peak_rss,
                r.disk,
                r.rows
            ));
        }
        std::fs::write(&path, csv).expect("write CSV");
        println!("wrote {path}");
    }
}
