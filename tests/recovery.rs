//! Recovery equivalence: eddy killed with SIGKILL at random moments while it reads Kafka
//! ends with exactly what an uninterrupted run computes, and with what PostgreSQL
//! computes from the same rows.
//!
//! For each seed, a deterministic workload (an inline splitmix64, no dependencies) of
//! 24k JSON events on a 3-partition topic (a Kafka STREAM, event times out of order over
//! five minutes, a few bad records) and 3k records on a 2-partition upsert topic (a
//! Kafka TABLE keyed by `user_id`: updates of the same key, tombstones, re-inserts) is
//! produced in 8 chunks twice, to fresh topics each time:
//!
//! - run A: one eddy, never interrupted;
//! - run B: a second eddy on a fresh data directory, killed with `kill -9` six times:
//!   five times after chunks chosen by the seed — right after the chunk is acknowledged
//!   (eddy is still consuming it), after a random delay, or before the next chunk, which
//!   is then produced while eddy is down — and once more after everything was applied;
//!   restarted on the same data each time, with a `--checkpoint-interval` chosen by the
//!   seed (100ms ... `never`, so that restarts both load checkpoints and replay the log).
//!
//! Three views are maintained (a TUMBLE window aggregate, a stream–table join aggregate,
//! a per-user aggregate) plus an upsert sink of the per-user view. Once a run has caught
//! up (in SHOW SOURCES every partition's committed offset and high watermark equal the
//! number of records produced to it), the test checks:
//!
//! - every view and the table are identical in A, in B and in PostgreSQL (the same
//!   queries over the same rows, `date_bin` for the windows);
//! - the sources' committed record and bad-record counts, and SHOW SOURCE ERRORS, are
//!   exact (every record applied once);
//! - the sink topic of each run, read from the beginning as a table (last value per key
//!   wins, a tombstone deletes), equals the per-user view;
//! - the sink's `eddy-epoch`/`eddy-seq` headers keep the promise of docs/concepts.md: a
//!   record sent again after a crash has the headers and the contents of the first copy,
//!   and a consumer that drops replays by those headers still has the view.
//!
//! Seeds are fixed so that the workload and the kill plan reproduce (the exact kill
//! timing cannot); `EDDY_RECOVERY_SEEDS=5,6` picks others.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{eventually, normalize, rows, Broker, Eddy, Postgres};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::{Client, SimpleQueryMessage};

const EVENTS: usize = 24_000;
const USERS: i64 = 400;
const USER_RECORDS: usize = 3_000;
const CHUNKS: usize = 8;
const EVENT_PARTITIONS: i32 = 3;
const USER_PARTITIONS: i32 = 2;
const SINK_PARTITIONS: i32 = 2;
/// 2024-05-01 12:00:00 UTC in milliseconds since 1970.
const BASE_MS: i64 = 1_714_564_800_000;
const CATCH_UP: Duration = Duration::from_secs(90);

/// The relations compared between runs and with PostgreSQL: (name, eddy query,
/// PostgreSQL query over the tables `events` and `users`).
const RELATIONS: &[(&str, &str, &str)] = &[
    (
        "per_minute",
        "SELECT * FROM per_minute",
        "SELECT date_bin('1 minute', ts, '1970-01-01') AS window_start, count(*) AS n, \
         sum(amount) AS total FROM events GROUP BY 1",
    ),
    (
        "per_region",
        "SELECT * FROM per_region",
        "SELECT u.region, count(*) AS n, sum(e.amount) AS total \
         FROM events e JOIN users u ON e.user_id = u.user_id GROUP BY u.region",
    ),
    (
        "per_user",
        "SELECT * FROM per_user",
        "SELECT user_id, count(*) AS n, sum(amount) AS total FROM events GROUP BY user_id",
    ),
    (
        "users",
        "SELECT * FROM users",
        "SELECT user_id, region FROM users",
    ),
];

fn ddl(tag: &str) -> String {
    format!(
        "CREATE STREAM events (user_id BIGINT NOT NULL, amount BIGINT, ts TIMESTAMP) \
             WITH (kafka_topic = '{tag}_events', format = 'json', partitions = {EVENT_PARTITIONS});
         CREATE TABLE users (user_id BIGINT PRIMARY KEY, region TEXT) \
             WITH (kafka_topic = '{tag}_users', format = 'json', key_format = 'text', \
                   partitions = {USER_PARTITIONS});
         CREATE MATERIALIZED VIEW per_minute AS
             SELECT window_start, count(*) AS n, sum(amount) AS total
             FROM TUMBLE(events, ts, INTERVAL '1' MINUTE) GROUP BY window_start;
         CREATE MATERIALIZED VIEW per_region AS
             SELECT u.region, count(*) AS n, sum(e.amount) AS total
             FROM events e JOIN users u ON e.user_id = u.user_id GROUP BY u.region;
         CREATE MATERIALIZED VIEW per_user AS
             SELECT user_id, count(*) AS n, sum(amount) AS total FROM events GROUP BY user_id;
         CREATE SINK per_user_out FROM per_user \
             WITH (kafka_topic = '{tag}_per_user', key = 'user_id', partitions = {SINK_PARTITIONS});"
    )
}

/// splitmix64: tiny, deterministic, good enough for a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64) as i64
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// One Kafka record, with the partition it goes to.
#[derive(Clone)]
struct Record {
    partition: i32,
    key: Option<String>,
    value: Option<String>,
}

struct Workload {
    events: Vec<Record>,
    users: Vec<Record>,
    /// The good events as PostgreSQL rows: user_id, amount, ts.
    pg_events: Vec<(i64, Option<i64>, String)>,
    /// The users table after every upsert and tombstone.
    pg_users: BTreeMap<i64, Option<String>>,
    bad_events: usize,
}

fn ts_text(ms: i64) -> String {
    let off = ms - BASE_MS;
    format!(
        "2024-05-01 12:{:02}:{:02}.{:03}",
        off / 60_000,
        off / 1000 % 60,
        off % 1000
    )
}

fn generate(seed: u64) -> Workload {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let regions = ["eu", "us", "apac", "latam", "africa"];

    // Users: first a row for most ids, then updates, tombstones and re-inserts. Record
    // keys are the user id as text; each key always goes to the same partition.
    let mut users = vec![];
    let mut pg_users: BTreeMap<i64, Option<String>> = BTreeMap::new();
    for i in 0..USER_RECORDS {
        let id = if i < USERS as usize {
            i as i64
        } else {
            rng.range(0, USERS + 20)
        };
        let partition = (id % USER_PARTITIONS as i64) as i32;
        let value = if i >= USERS as usize && rng.chance(12) {
            pg_users.remove(&id);
            None
        } else {
            let region = if rng.chance(3) {
                None
            } else {
                Some(regions[rng.below(regions.len() as u64) as usize].to_string())
            };
            let region_json = region
                .as_ref()
                .map_or("null".to_string(), |r| format!("\"{r}\""));
            let value = match rng.below(10) {
                // The key wins over a user_id in the value.
                0 => format!(
                    r#"{{"user_id": {}, "region": {region_json}}}"#,
                    id + 100_000
                ),
                1..=4 => format!(r#"{{"user_id": {id}, "region": {region_json}}}"#),
                _ => format!(r#"{{"region": {region_json}}}"#),
            };
            pg_users.insert(id, region);
            Some(value)
        };
        users.push(Record {
            partition,
            key: Some(id.to_string()),
            value,
        });
    }

    // Events: users beyond USERS + 20 never exist (no join partner); times are uniform
    // over five minutes, so consecutive records are out of order.
    let mut events = vec![];
    let mut pg_events = vec![];
    let mut bad_events = 0;
    for _ in 0..EVENTS {
        let partition = rng.below(EVENT_PARTITIONS as u64) as i32;
        if rng.below(4000) == 0 {
            let bad = [
                "{not json",
                r#"{"user_id": "x", "amount": 1}"#,
                r#"{"amount": 5, "ts": "2024-05-01 12:00:00"}"#,
                "[1, 2]",
            ][rng.below(4) as usize];
            events.push(Record {
                partition,
                key: None,
                value: Some(bad.to_string()),
            });
            bad_events += 1;
            continue;
        }
        let user_id = rng.range(0, USERS + 50);
        let amount = if rng.chance(2) {
            None
        } else {
            Some(rng.range(-50, 1000))
        };
        let ms = BASE_MS + rng.range(0, 5 * 60_000);
        let text = ts_text(ms);
        // Timestamps as text, or as milliseconds since 1970.
        let ts_json = if rng.chance(20) {
            ms.to_string()
        } else {
            format!("\"{text}\"")
        };
        let amount_json = amount.map_or("null".to_string(), |a| a.to_string());
        events.push(Record {
            partition,
            key: None,
            value: Some(format!(
                r#"{{"user_id": {user_id}, "amount": {amount_json}, "ts": {ts_json}}}"#
            )),
        });
        pg_events.push((user_id, amount, text));
    }
    Workload {
        events,
        users,
        pg_events,
        pg_users,
        bad_events,
    }
}

/// Chunk `c` of `CHUNKS` of a list of records.
fn chunk(records: &[Record], c: usize) -> &[Record] {
    let n = records.len();
    &records[c * n / CHUNKS..(c + 1) * n / CHUNKS]
}

fn producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produce records in order and wait for every acknowledgement.
async fn produce(p: &FutureProducer, topic: &str, records: &[Record]) {
    let mut pending = vec![];
    for r in records {
        let mut fr: FutureRecord<'_, str, str> = FutureRecord::to(topic).partition(r.partition);
        if let Some(k) = &r.key {
            fr = fr.key(k.as_str());
        }
        if let Some(v) = &r.value {
            fr = fr.payload(v.as_str());
        }
        pending.push(p.send(fr, Duration::from_secs(30)));
    }
    for r in futures::future::join_all(pending).await {
        r.map_err(|(e, _)| e).expect("produce");
    }
}

/// A record read back from a topic.
struct Read {
    partition: i32,
    key: Option<String>,
    value: Option<String>,
    /// The `eddy-epoch` and `eddy-seq` headers, as text.
    epoch: Option<String>,
    seq: Option<String>,
}

/// Every record of `topic` from the beginning until each partition reaches its end, in
/// offset order within each partition. The end is the high watermark a fetch reports
/// (partition EOF): tansu 0.6 answers ListOffsets(latest), which `fetch_watermarks`
/// uses, with the last batch's base offset + 1, not the end of the partition.
fn read_topic(broker: &Broker, topic: &str, partitions: i32) -> Vec<Read> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "eddy-recovery-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut at_end = vec![false; partitions as usize];
    let mut out = vec![];
    let start = Instant::now();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    while at_end.contains(&false) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reading {topic}: partitions at their end after 60s: {at_end:?}"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let header = |name: &str| {
                    m.headers()?
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value.map(text))
                };
                out.push(Read {
                    partition: m.partition(),
                    key: m.key().map(text),
                    value: m.payload().map(text),
                    epoch: header("eddy-epoch"),
                    seq: header("eddy-seq"),
                })
            }
            Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The sink topic, read back.
struct SinkContents {
    /// The topic read as a table — last record per key wins, a tombstone deletes — as
    /// normalized `user_id | n | total` rows, sorted.
    rows: Vec<String>,
    /// The same after dropping, per partition, every record whose (`eddy-epoch`,
    /// `eddy-seq`) was seen before: what the consumer docs/concepts.md describes gets.
    deduplicated: Vec<String>,
    records: usize,
    /// Records dropped as replays.
    replays: usize,
    /// Broken promises about the headers: per kind, how many and the first few.
    violations: BTreeMap<&'static str, (usize, Vec<String>)>,
}

/// Read the sink topic. Besides the table, check what docs/concepts.md promises of the
/// headers: every record has `eddy-epoch` and `eddy-seq`; a record sent again (after a
/// crash) carries the headers *and* the contents of the first copy; and, replays
/// dropped, each partition's epochs never go backwards.
fn sink_contents(broker: &Broker, topic: &str) -> Result<SinkContents, String> {
    let records = read_topic(broker, topic, SINK_PARTITIONS);
    let mut table: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut deduplicated: BTreeMap<String, Option<String>> = BTreeMap::new();
    type Seen = BTreeMap<(u64, u64), (Option<String>, Option<String>)>;
    let mut seen: BTreeMap<i32, Seen> = BTreeMap::new();
    let mut last_epoch: BTreeMap<i32, u64> = BTreeMap::new();
    let mut replays = 0;
    let mut violations: BTreeMap<&'static str, (usize, Vec<String>)> = BTreeMap::new();
    let mut violation = |kind: &'static str, example: String| {
        let (n, examples) = violations.entry(kind).or_default();
        *n += 1;
        if examples.len() < 3 {
            examples.push(example);
        }
    };
    for (i, r) in records.iter().enumerate() {
        let what = || {
            format!(
                "record {i} (partition {}, key {:?}, value {:?}, eddy-epoch {:?}, eddy-seq {:?})",
                r.partition, r.key, r.value, r.epoch, r.seq
            )
        };
        let Some(k) = &r.key else {
            return Err(format!("{}: a record without a key", what()));
        };
        table.insert(k.clone(), r.value.clone());
        let headers = (
            r.epoch.as_deref().map(str::parse::<u64>),
            r.seq.as_deref().map(str::parse::<u64>),
        );
        let (Some(Ok(epoch)), Some(Ok(seq))) = headers else {
            violation(
                "records without (numeric) eddy-epoch/eddy-seq headers",
                what(),
            );
            continue;
        };
        let contents = (r.key.clone(), r.value.clone());
        let partition_seen = seen.entry(r.partition).or_default();
        if let Some(first) = partition_seen.get(&(epoch, seq)) {
            replays += 1;
            if *first != contents {
                violation(
                    "records with the (eddy-epoch, eddy-seq) of an earlier record of their \
                     partition but other contents (a consumer dropping replays loses them)",
                    format!("{}; the earlier one: {first:?}", what()),
                );
            }
            continue;
        }
        partition_seen.insert((epoch, seq), contents);
        let last = last_epoch.entry(r.partition).or_default();
        if epoch < *last {
            violation(
                "records of a new (eddy-epoch, eddy-seq) whose epoch is before the last \
                 epoch seen on their partition (a consumer keeping the last epoch per \
                 partition takes them for replays)",
                format!("{}; epoch {last} was seen before", what()),
            );
        }
        *last = (*last).max(epoch);
        deduplicated.insert(k.clone(), r.value.clone());
    }
    Ok(SinkContents {
        rows: table_rows(table)?,
        deduplicated: table_rows(deduplicated)?,
        records: records.len(),
        replays,
        violations,
    })
}

/// A sink topic's key → last value, as sorted `user_id | n | total` rows.
fn table_rows(table: BTreeMap<String, Option<String>>) -> Result<Vec<String>, String> {
    let mut rows = vec![];
    for (k, v) in table {
        let Some(v) = v else { continue };
        let json: serde_json::Value =
            serde_json::from_str(&v).map_err(|e| format!("key {k}: bad JSON {v:?}: {e}"))?;
        let field = |name: &str| match json.get(name) {
            Some(serde_json::Value::Null) | None => "NULL".to_string(),
            Some(x) => normalize(Some(&x.to_string())),
        };
        if field("user_id") != k {
            return Err(format!("key {k} holds the row {v}"));
        }
        rows.push(format!(
            "{} | {} | {}",
            field("user_id"),
            field("n"),
            field("total")
        ));
    }
    rows.sort();
    Ok(rows)
}

/// Raw rows of a statement (SHOW ...), unsorted; NULL as "NULL".
async fn raw_rows(c: &Client, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let msgs = c.simple_query(sql).await.map_err(|e| e.to_string())?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// A readable difference of two sorted multisets of rows, or None when equal.
fn diff(what: &str, left: (&str, &[String]), right: (&str, &[String])) -> Option<String> {
    if left.1 == right.1 {
        return None;
    }
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for r in left.1 {
        *counts.entry(r).or_default() += 1;
    }
    for r in right.1 {
        *counts.entry(r).or_default() -= 1;
    }
    let only = |sign: i64| -> Vec<String> {
        counts
            .iter()
            .filter(|(_, n)| n.signum() == sign)
            .map(|(r, n)| {
                if n.abs() > 1 {
                    format!("{r}  (x{})", n.abs())
                } else {
                    r.to_string()
                }
            })
            .collect()
    };
    let (only_left, only_right) = (only(1), only(-1));
    let show = |v: &[String]| -> String {
        let mut s: String = v.iter().take(8).map(|r| format!("\n      {r}")).collect();
        if v.len() > 8 {
            s.push_str(&format!("\n      ... and {} more", v.len() - 8));
        }
        s
    };
    Some(format!(
        "{what}: {} has {} rows, {} has {} rows\n    only in {} ({}):{}\n    only in {} ({}):{}",
        left.0,
        left.1.len(),
        right.0,
        right.1.len(),
        left.0,
        only_left.len(),
        show(&only_left),
        right.0,
        only_right.len(),
        show(&only_right),
    ))
}

/// What one run ends with.
struct Outcome {
    relations: BTreeMap<&'static str, Vec<String>>,
    sink: Result<SinkContents, String>,
    /// (records, errors) committed by the events and users sources.
    events_counts: (i64, i64),
    users_counts: (i64, i64),
    /// (partition, offset) of the bad records SHOW SOURCE ERRORS lists.
    errors: Vec<(i64, i64)>,
    kills: usize,
}

/// How run B is interrupted after a chunk is acknowledged.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// kill -9 at once: eddy is still reading the chunk.
    Immediately,
    /// kill -9 after this many milliseconds.
    After(u64),
    /// kill -9, produce the next chunk while eddy is down, then restart.
    Down,
}

/// Run B's interruptions, chosen by the seed.
#[derive(Debug)]
struct Plan {
    /// What happens after each chunk.
    kills: Vec<Option<Kill>>,
    /// `--checkpoint-interval` of each start of eddy, in order (cycled): short ones to
    /// kill it in and around checkpoints, `never` so that a restart replays every epoch
    /// since the last DDL from the input log.
    checkpoints: Vec<&'static str>,
}

fn kill_plan(seed: u64) -> Plan {
    let mut rng = Rng(seed ^ 0x00c0_ffee);
    let mut kills: Vec<Option<Kill>> = vec![None; CHUNKS];
    // Five kills after distinct chunks; the first three are one of each kind.
    let first = rng.below(3);
    for n in 0..5 {
        let at = loop {
            let at = rng.below(CHUNKS as u64) as usize;
            if kills[at].is_none() {
                break at;
            }
        };
        let kind = if n < 3 { (first + n) % 3 } else { rng.below(3) };
        kills[at] = Some(match kind {
            0 => Kill::Immediately,
            1 => Kill::After(rng.range(20, 700) as u64),
            _ => Kill::Down,
        });
    }
    let checkpoints = (0..8)
        .map(|_| ["100ms", "300ms", "1s", "never"][rng.below(4) as usize])
        .collect();
    Plan { kills, checkpoints }
}

/// Start eddy (or restart it on the same data) with the next checkpoint interval.
struct Starter<'a> {
    broker: String,
    plan: Option<&'a Plan>,
    starts: usize,
}

impl Starter<'_> {
    fn args(&mut self) -> Vec<String> {
        let mut args = vec!["--kafka-brokers".to_string(), self.broker.clone()];
        if let Some(plan) = self.plan {
            let interval = plan.checkpoints[self.starts % plan.checkpoints.len()];
            args.extend(["--checkpoint-interval".to_string(), interval.to_string()]);
        }
        self.starts += 1;
        args
    }

    fn start(&mut self) -> Eddy {
        let args = self.args();
        Eddy::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn restart(&mut self, eddy: Eddy) -> Eddy {
        let args = self.args();
        eddy.restart_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// Records committed by the sources, at a first look after a restart (how far eddy
/// had got when it was killed, or a little further).
async fn committed(eddy: &Eddy) -> i64 {
    let c = eddy.connect().await;
    raw_rows(&c, "SHOW SOURCES")
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r[3].parse::<i64>().ok())
        .sum()
}

async fn run(broker: &Broker, tag: &str, w: &Workload, plan: Option<&Plan>) -> Outcome {
    let mut starter = Starter {
        broker: broker.addr(),
        plan,
        starts: 0,
    };
    let mut eddy = starter.start();
    let c = eddy.connect().await;
    c.batch_execute(&ddl(tag))
        .await
        .unwrap_or_else(|e| panic!("{tag}: DDL failed: {e:?}"));
    drop(c);
    let p = producer(broker);
    let (events_topic, users_topic) = (format!("{tag}_events"), format!("{tag}_users"));
    let mut produced: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut kills = 0;
    let mut down = false;
    let mut resumed_at = vec![];
    for i in 0..CHUNKS {
        let events = chunk(&w.events, i);
        produce(&p, &users_topic, chunk(&w.users, i)).await;
        produce(&p, &events_topic, events).await;
        for (topic, records) in [(&users_topic, chunk(&w.users, i)), (&events_topic, events)] {
            for r in records {
                *produced.entry((topic.clone(), r.partition)).or_default() += 1;
            }
        }
        let total: i64 = produced.values().sum();
        if down {
            eddy = starter.restart(eddy);
            resumed_at.push(format!("{}/{total}", committed(&eddy).await));
            down = false;
        }
        let kill = plan.and_then(|plan| plan.kills[i]);
        match kill {
            None => continue,
            Some(Kill::Immediately) => {}
            Some(Kill::After(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Some(Kill::Down) => {
                eddy.kill9();
                kills += 1;
                down = true;
                continue;
            }
        }
        eddy = starter.restart(eddy);
        kills += 1;
        resumed_at.push(format!("{}/{total}", committed(&eddy).await));
    }
    if down {
        eddy = starter.restart(eddy);
    }

    let c = eddy.connect().await;
    wait_caught_up(&c, tag, &produced).await;
    if plan.is_some() {
        // Once more with everything applied: the state comes back from disk alone.
        drop(c);
        eddy = starter.restart(eddy);
        kills += 1;
        eprintln!(
            "{tag}: {kills} kills; records committed at a first look after each restart \
             (of produced): {}",
            resumed_at.join(", ")
        );
    }
    let c = eddy.connect().await;
    wait_caught_up(&c, tag, &produced).await;
    let relations = stable_relations(&c, tag).await;

    // The sink follows the view a moment later.
    let sink_topic = format!("{tag}_per_user");
    let view = relations["per_user"].clone();
    let last = std::sync::Mutex::new(Err("not read".to_string()));
    let settled = eventually(Duration::from_secs(30), || async {
        let sink = sink_contents(broker, &sink_topic);
        let done = sink.as_ref().map_or(true, |s| s.rows == view);
        *last.lock().unwrap() = sink;
        done
    })
    .await;
    let sink = last.into_inner().unwrap();
    match &sink {
        Ok(s) if settled => eprintln!(
            "{tag}: sink topic: {} records, {} of them replays",
            s.records, s.replays
        ),
        _ => eprintln!(
            "{tag}: the sink topic did not converge to per_user within 30s; \
             SHOW SINKS: {:?}; SHOW EPOCH: {:?}; SHOW CHECKPOINTS: {:?}",
            raw_rows(&c, "SHOW SINKS").await,
            raw_rows(&c, "SHOW EPOCH").await,
            raw_rows(&c, "SHOW CHECKPOINTS").await,
        ),
    }

    let sources = raw_rows(&c, "SHOW SOURCES").await.expect("SHOW SOURCES");
    let counts = |name: &str| -> (i64, i64) {
        let r = sources
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{tag}: no source {name}: {sources:?}"));
        (r[6].parse().unwrap(), r[7].parse().unwrap())
    };
    let mut errors: Vec<(i64, i64)> = raw_rows(&c, "SHOW SOURCE ERRORS FOR events")
        .await
        .expect("SHOW SOURCE ERRORS")
        .iter()
        .map(|r| (r[1].parse().unwrap(), r[2].parse().unwrap()))
        .collect();
    errors.sort();
    Outcome {
        events_counts: counts("events"),
        users_counts: counts("users"),
        relations,
        sink,
        errors,
        kills,
    }
}

/// Wait until, in SHOW SOURCES, every partition's committed offset and high watermark
/// equal the number of records produced to it (lag 0, and no record more on the topic
/// than was produced).
async fn wait_caught_up(c: &Client, tag: &str, produced: &BTreeMap<(String, i32), i64>) {
    let last = std::sync::Mutex::new(vec![]);
    let caught_up = eventually(CATCH_UP, || async {
        let Ok(sources) = raw_rows(c, "SHOW SOURCES").await else {
            return false;
        };
        let ok = produced.iter().all(|((topic, p), n)| {
            sources.iter().any(|r| {
                &r[1] == topic
                    && r[2] == p.to_string()
                    && r[3] == n.to_string()
                    && r[4] == r[3]
                    && r[5] == "0"
            })
        });
        *last.lock().unwrap() = sources;
        ok
    })
    .await;
    assert!(
        caught_up,
        "{tag}: sources did not reach (topic, partition) -> records produced {produced:?} \
         within {CATCH_UP:?}; SHOW SOURCES: {:?}",
        last.lock().unwrap()
    );
}

/// Every compared relation, once FLUSH has run and two reads agree.
async fn stable_relations(c: &Client, tag: &str) -> BTreeMap<&'static str, Vec<String>> {
    let read = || async {
        let mut out = BTreeMap::new();
        for (name, sql, _) in RELATIONS {
            let r = rows(c, sql)
                .await
                .unwrap_or_else(|e| panic!("{tag}: {sql}: {e}"));
            out.insert(*name, r);
        }
        out
    };
    c.batch_execute("FLUSH").await.expect("FLUSH");
    let mut prev = read().await;
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read().await;
        if now == prev {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{tag}: the views keep changing after the sources caught up"
        );
        prev = now;
    }
}

/// The same queries in PostgreSQL over the workload's rows.
async fn oracle(pg: &Client, w: &Workload) -> BTreeMap<&'static str, Vec<String>> {
    pg.batch_execute(
        "DROP TABLE IF EXISTS events, users;
         CREATE TABLE events (user_id bigint NOT NULL, amount bigint, ts timestamp);
         CREATE TABLE users (user_id bigint PRIMARY KEY, region text);",
    )
    .await
    .unwrap();
    for rows in w.pg_events.chunks(2000) {
        let values: Vec<String> = rows
            .iter()
            .map(|(u, a, ts)| {
                let a = a.map_or("NULL".to_string(), |a| a.to_string());
                format!("({u}, {a}, '{ts}')")
            })
            .collect();
        pg.batch_execute(&format!("INSERT INTO events VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    let users: Vec<String> = w
        .pg_users
        .iter()
        .map(|(id, r)| match r {
            Some(r) => format!("({id}, '{r}')"),
            None => format!("({id}, NULL)"),
        })
        .collect();
    if !users.is_empty() {
        pg.batch_execute(&format!("INSERT INTO users VALUES {}", users.join(", ")))
            .await
            .unwrap();
    }
    let mut out = BTreeMap::new();
    for (name, _, sql) in RELATIONS {
        out.insert(*name, rows(pg, sql).await.unwrap());
    }
    out
}

fn seeds() -> Vec<u64> {
    match std::env::var("EDDY_RECOVERY_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2, 3],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_changes_no_result() {
    let broker = Broker::start();
    let pg_server = Postgres::start();
    let pg = pg_server.connect().await;
    let started = Instant::now();
    let mut failures = vec![];
    for seed in seeds() {
        let t = Instant::now();
        let w = generate(seed);
        let want = oracle(&pg, &w).await;
        // The workload must exercise every view.
        for (name, rows) in &want {
            assert!(
                rows.len() > 3,
                "seed {seed}: {name} is nearly empty: {rows:?}"
            );
        }
        let plan = kill_plan(seed);
        eprintln!(
            "seed {seed}: {} events ({} bad), {} user records, {} users at the end; \
             kill plan by chunk: {plan:?}",
            w.events.len(),
            w.bad_events,
            w.users.len(),
            w.pg_users.len()
        );
        let tag = |run: &str| format!("recovery_s{seed}_{run}_{}", std::process::id());
        let a = run(&broker, &tag("a"), &w, None).await;
        eprintln!("seed {seed}: run A done at {:?}", t.elapsed());
        let b = run(&broker, &tag("b"), &w, Some(&plan)).await;
        eprintln!(
            "seed {seed}: run B done at {:?} ({} kills)",
            t.elapsed(),
            b.kills
        );
        assert!(b.kills >= 3, "seed {seed}: only {} kills", b.kills);

        let mut problems = vec![];
        for (name, _, _) in RELATIONS {
            let (ra, rb, pg) = (&a.relations[name], &b.relations[name], &want[name]);
            problems.extend(diff(
                &format!("{name} (run B vs run A)"),
                ("run B (killed)", rb),
                ("run A", ra),
            ));
            problems.extend(diff(
                &format!("{name} (run A vs PostgreSQL)"),
                ("run A", ra),
                ("PostgreSQL", pg),
            ));
            if ra != pg {
                problems.extend(diff(
                    &format!("{name} (run B vs PostgreSQL)"),
                    ("run B (killed)", rb),
                    ("PostgreSQL", pg),
                ));
            }
        }
        for (label, o) in [("run A", &a), ("run B (killed)", &b)] {
            match &o.sink {
                Ok(sink) => {
                    problems.extend(diff(
                        &format!("sink topic read as a table vs per_user, {label}"),
                        ("sink topic", &sink.rows),
                        ("per_user", &o.relations["per_user"]),
                    ));
                    for (kind, (n, examples)) in &sink.violations {
                        problems.push(format!(
                            "{label}: sink topic: {n} {kind}, e.g.:\n      {}",
                            examples.join("\n      ")
                        ));
                    }
                    if sink.rows == o.relations["per_user"] {
                        problems.extend(diff(
                            &format!(
                                "sink topic read as a table after dropping replays by \
                                 (eddy-epoch, eddy-seq) vs per_user, {label}"
                            ),
                            ("sink topic, deduplicated", &sink.deduplicated),
                            ("per_user", &o.relations["per_user"]),
                        ));
                    }
                }
                Err(e) => problems.push(format!("{label}: sink topic: {e}")),
            }
            let events = (w.events.len() as i64, w.bad_events as i64);
            if o.events_counts != events {
                problems.push(format!(
                    "{label}: source events committed (records, errors) = {:?}, produced {events:?}",
                    o.events_counts
                ));
            }
            let users = (w.users.len() as i64, 0);
            if o.users_counts != users {
                problems.push(format!(
                    "{label}: source users committed (records, errors) = {:?}, produced {users:?}",
                    o.users_counts
                ));
            }
        }
        if a.errors != b.errors || a.errors.len() != w.bad_events {
            problems.push(format!(
                "SHOW SOURCE ERRORS FOR events (partition, offset): run A {:?}, run B {:?}, \
                 {} bad records produced",
                a.errors, b.errors, w.bad_events
            ));
        }
        let rows: usize = want.values().map(Vec::len).sum();
        if problems.is_empty() {
            eprintln!(
                "seed {seed}: ok, {rows} rows per run compared with PostgreSQL, in {:?}",
                t.elapsed()
            );
        } else {
            // Go on with the other seeds: the report says which ones fail, and how.
            let report = format!(
                "seed {seed} (kill plan {plan:?}): {} difference(s):\n  {}",
                problems.len(),
                problems.join("\n  ")
            );
            eprintln!(
                "seed {seed}: {} difference(s), reported at the end",
                problems.len()
            );
            failures.push(report);
        }
    }
    eprintln!("recovery: all seeds in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed:\n{}",
        failures.len(),
        seeds().len(),
        failures.join("\n")
    );
}
