//! Kafka: sources (a stream or upsert table fed by a topic), the producer behind
//! `INSERT` into a Kafka-backed relation, and sinks.
//!
//! A source is one thread with an rdkafka consumer that reads every partition of its
//! topic by manual assignment (no consumer-group join). It polls a batch of records,
//! decodes it ([`crate::format`]) and hands the rows to the dataflow together with the
//! next offset of each partition and the count of bad records; the dataflow commits
//! both in the same atomic write as the epoch that applies the rows. eddy's own
//! offsets are therefore the truth: after a crash the source resumes exactly where the
//! last committed epoch left off — nothing lost, nothing counted twice — and Kafka
//! consumer-group offsets are never consulted.
//!
//! When the broker is unreachable the source keeps retrying (librdkafka reconnects by
//! itself; a source that cannot even get metadata backs off up to 10 s) and shows the
//! error in `SHOW SOURCES`; when the broker returns it catches up from its offsets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::catalog::{CatalogEntry, ObjectKind};
use crate::dataflow::runtime::DataflowHandle;
use crate::dataflow::subscribe::{SubscriptionEvent, SubscriptionReceiver};
use crate::dataflow::watermark::{WatermarkState, WatermarkTracker};
use crate::error::{Error, Result};
use crate::format::{BadRecord, Decoder, KeyFormat, RawRecord, ValueFormat};
use crate::storage::{keys, Storage, WriteBatch};
use datafusion::arrow::datatypes::SchemaRef;

/// How eddy reaches Kafka (`--kafka-brokers`, `--kafka-option`).
#[derive(Clone, Debug, Default)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`; `None` when eddy runs without Kafka.
    pub brokers: Option<String>,
    /// librdkafka properties passed through (`security.protocol`, `sasl.*`, `ssl.*`).
    pub options: Vec<(String, String)>,
}

impl KafkaConfig {
    fn client_config(&self) -> Result<ClientConfig> {
        let Some(brokers) = &self.brokers else {
            return Err(Error::invalid_with(
                "55000",
                "eddy is not connected to Kafka: start it with --kafka-brokers host:port \
                 (or EDDY_KAFKA_BROKERS)",
            ));
        };
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("client.id", "eddy")
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.max.ms", "5000")
            .set("log_level", "3");
        for (k, v) in &self.options {
            c.set(k, v);
        }
        Ok(c)
    }
}

/// Timeout for metadata and admin requests made while a user waits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most recent bad records kept per source.
const RECENT_ERRORS: usize = 100;

/// The options of a Kafka-backed stream or table, parsed from its WITH clause.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub topic: String,
    pub value_format: ValueFormat,
    pub key_format: KeyFormat,
    pub key_columns: Vec<usize>,
    pub timestamp_column: Option<usize>,
    pub partitions: Option<i32>,
    pub start: StartOffset,
}

/// Where a source starts reading a partition it has no offset for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StartOffset {
    Earliest,
    Latest,
    /// The first record at or after this time (milliseconds since 1970).
    Timestamp(i64),
}

/// The WITH options eddy understands on a Kafka-backed stream or table.
pub const SOURCE_OPTIONS: &[&str] = &[
    "kafka_topic",
    "format",
    "value_format",
    "key_format",
    "key_columns",
    "timestamp",
    "partitions",
    "start_offset",
    "idle_timeout",
    "retention",
];

impl SourceOptions {
    /// Parse and check the options of `entry` (which has `kafka_topic`).
    pub fn from_entry(entry: &CatalogEntry) -> Result<Self> {
        let o = &entry.options;
        check_known_options(o, SOURCE_OPTIONS, &format!("a Kafka {}", entry.kind.noun()))?;
        let topic = topic_option(o)?;
        let value_format = ValueFormat::parse(
            o.get("format")
                .or_else(|| o.get("value_format"))
                .map_or("json", String::as_str),
        )?;
        let column = |name: &str, what: &str| {
            let n = option_ident(name);
            entry
                .column_index(&n)
                .ok_or_else(|| Error::UndefinedColumn {
                    message: format!("{what} column \"{n}\" does not exist"),
                    position: None,
                })
        };
        let key_columns: Vec<usize> = if entry.kind == ObjectKind::Table {
            if o.contains_key("key_columns") {
                return Err(Error::invalid_with(
                    "22023",
                    "a Kafka table is keyed by its PRIMARY KEY; key_columns is for streams",
                ));
            }
            if entry.primary_key.is_empty() {
                return Err(Error::invalid_with(
                    "42P16",
                    format!(
                        "Kafka table \"{}\" needs a PRIMARY KEY: each record upserts the row \
                         with its key (use CREATE STREAM for an append-only topic)",
                        entry.name
                    ),
                ));
            }
            entry.primary_key.clone()
        } else {
            match o.get("key_columns") {
                Some(list) => list
                    .split(',')
                    .map(|c| column(c, "key"))
                    .collect::<Result<_>>()?,
                None => vec![],
            }
        };
        let key_format = key_format_option(o, key_columns.len())?;
        let timestamp_column = match o.get("timestamp") {
            Some(c) => {
                let i = column(c, "timestamp")?;
                if !matches!(
                    entry.columns[i].data_type,
                    datafusion::arrow::datatypes::DataType::Timestamp(_, _)
                ) {
                    return Err(Error::invalid_with(
                        "42804",
                        format!(
                            "timestamp column \"{}\" must be a TIMESTAMP",
                            entry.columns[i].name
                        ),
                    ));
                }
                Some(i)
            }
            None => None,
        };
        let partitions = partitions_option(o)?;
        let start = match o.get("start_offset").map(|s| s.trim().to_string()) {
            None => StartOffset::Earliest,
            Some(s) if s.eq_ignore_ascii_case("earliest") => StartOffset::Earliest,
            Some(s) if s.eq_ignore_ascii_case("latest") => StartOffset::Latest,
            Some(s) => StartOffset::Timestamp(parse_time(&s).ok_or_else(|| {
                Error::invalid_with(
                    "22023",
                    format!(
                        "start_offset must be 'earliest', 'latest' or a timestamp \
                         ('2024-05-01 12:00:00' or milliseconds since 1970), not '{s}'"
                    ),
                )
            })?),
        };
        Ok(Self {
            topic,
            value_format,
            key_format,
            key_columns,
            timestamp_column,
            partitions,
            start,
        })
    }

    pub fn decoder(&self, entry: &CatalogEntry) -> Result<Decoder> {
        Decoder::new(
            entry,
            self.value_format,
            self.key_format,
            self.key_columns.clone(),
            self.timestamp_column,
            entry.kind == ObjectKind::Table,
        )
    }
}

/// Every option must be one of `known` (22023 names the unknown one).
pub(crate) fn check_known_options(
    options: &BTreeMap<String, String>,
    known: &[&str],
    what: &str,
) -> Result<()> {
    match options.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(Error::invalid_with(
            "22023",
            format!(
                "unknown option \"{k}\" for {what} (known: {})",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn topic_option(options: &BTreeMap<String, String>) -> Result<String> {
    options
        .get("kafka_topic")
        .filter(|t| !t.is_empty())
        .cloned()
        .ok_or_else(|| Error::invalid_with("22023", "kafka_topic must name a topic"))
}

/// `partitions = n`: create a missing topic with n partitions.
fn partitions_option(options: &BTreeMap<String, String>) -> Result<Option<i32>> {
    options
        .get("partitions")
        .map(|p| {
            p.parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::invalid_with(
                    "22023",
                    format!("partitions must be a positive integer, not '{p}'"),
                )
            })
        })
        .transpose()
}

/// `key_format`, defaulting by the number of key columns: none, text for one, JSON for
/// several.
fn key_format_option(options: &BTreeMap<String, String>, keys: usize) -> Result<KeyFormat> {
    let format = match options.get("key_format") {
        Some(f) => KeyFormat::parse(f)?,
        None if keys == 0 => KeyFormat::None,
        None if keys == 1 => KeyFormat::Text,
        None => KeyFormat::Json,
    };
    if format == KeyFormat::Text && keys > 1 {
        return Err(Error::invalid_with(
            "22023",
            "key_format 'text' needs exactly one key column; use key_format = 'json'",
        ));
    }
    Ok(format)
}

/// A column named in an option: folded to lower case unless double-quoted, as in SQL.
fn option_ident(name: &str) -> String {
    let name = name.trim();
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_lowercase(),
    }
}

fn parse_time(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A source's durable progress, committed with every epoch it feeds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SourceProgress {
    /// The next offset to read, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Records read (good and bad).
    pub records: u64,
    /// Records skipped because they did not decode.
    pub errors: u64,
    /// The most recent bad records.
    pub recent_errors: VecDeque<SourceError>,
    /// Event-time tracking, for a relation with a watermark.
    #[serde(default)]
    pub watermark: Option<WatermarkState>,
}

/// A source relation's watermark tracker, resumed from its committed progress.
pub(crate) fn tracker_for(
    entry: &CatalogEntry,
    progress: &SourceProgress,
) -> Option<WatermarkTracker> {
    let w = entry.watermark_install()?;
    Some(WatermarkTracker::new(
        &w.def,
        w.column,
        progress.watermark.clone().unwrap_or_default(),
    ))
}

/// Advance an idle source's watermark with the clock: commits the new watermark (no
/// rows) when it moved. Returns the progress committed then.
pub(crate) fn idle_tick(
    dataflow: &DataflowHandle,
    object_id: u32,
    schema: SchemaRef,
    committed: &SourceProgress,
    status: &Mutex<SourceStatus>,
    tracker: Option<&mut WatermarkTracker>,
) -> Result<Option<SourceProgress>> {
    let Some(t) = tracker else {
        return Ok(None);
    };
    let before = t.state().clone();
    if t.idle_tick().is_none() {
        return Ok(None);
    }
    // No rows: commit_rows commits just the raised watermark with the progress.
    let empty = crate::dataflow::ChangeBatch::empty(schema);
    match commit_rows(
        dataflow,
        object_id,
        empty,
        &|_| 0,
        committed.clone(),
        status,
        Some(&mut *t),
    ) {
        Ok(next) => Ok(Some(next)),
        Err(e) => {
            // Not committed: the next tick tries again from where the source was.
            t.reset(before);
            Err(e)
        }
    }
}

/// A record that was skipped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceError {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// When eddy read it (milliseconds since 1970).
    pub at_ms: i64,
}

fn progress_key(object_id: u32) -> Vec<u8> {
    let mut k = keys::SOURCE_PROGRESS_PREFIX.to_vec();
    k.extend_from_slice(object_id.to_string().as_bytes());
    k
}

/// The source a progress key belongs to, and its decoded progress (`SHOW CHECKPOINTS`
/// reads the positions a checkpoint recorded).
pub fn decode_progress_entry(key: &[u8], value: &[u8]) -> Option<(u32, SourceProgress)> {
    let id = std::str::from_utf8(key.strip_prefix(keys::SOURCE_PROGRESS_PREFIX)?)
        .ok()?
        .parse()
        .ok()?;
    Some((id, serde_json::from_slice(value).ok()?))
}

/// Load a source's committed progress.
pub fn load_progress(storage: &dyn Storage, object_id: u32) -> Result<SourceProgress> {
    match storage.get(&progress_key(object_id))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Storage(format!("corrupt progress of source {object_id}: {e}"))),
        None => Ok(SourceProgress::default()),
    }
}

/// The write that commits a source's progress with the epoch applying its rows.
pub fn progress_extra(object_id: u32, progress: &SourceProgress) -> Result<WriteBatch> {
    let mut extra = WriteBatch::new();
    extra.put(
        progress_key(object_id),
        serde_json::to_vec(progress).map_err(|e| Error::internal(e.to_string()))?,
    );
    Ok(extra)
}

/// Remove a source's progress, or a sink's position (DROP).
pub fn delete_progress(batch: &mut WriteBatch, object_id: u32) {
    batch.delete(progress_key(object_id));
    batch.delete(sink_position_key(object_id));
}

/// Where a sink records the last epoch the broker acknowledged completely.
fn sink_position_key(object_id: u32) -> Vec<u8> {
    keys::meta_key(&format!("sink/{object_id}"))
}

fn load_sink_position(storage: &dyn Storage, object_id: u32) -> Option<u64> {
    let v = storage.get(&sink_position_key(object_id)).ok()??;
    Some(u64::from_be_bytes(v.as_slice().try_into().ok()?))
}

/// How often at most a sink stores its position (each store is an fsync). A crash
/// re-sends at most the epochs of this window, which consumers recognise by their
/// `eddy-epoch` / `eddy-seq` headers.
const SINK_POSITION_INTERVAL: Duration = Duration::from_millis(200);

/// What `SHOW SOURCES` shows of a running source.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    pub topic: String,
    /// `running`, or what is wrong (broker unreachable, ...).
    pub state: String,
    /// Committed progress.
    pub progress: SourceProgress,
    /// The high watermark of each partition, as last reported by the broker.
    pub high_watermarks: BTreeMap<i32, i64>,
}

/// Collects per-partition high watermarks from librdkafka's statistics.
struct StatsContext {
    topic: String,
    status: Arc<Mutex<SourceStatus>>,
}

impl ClientContext for StatsContext {
    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            let mut s = self.status.lock();
            for (p, part) in &t.partitions {
                if *p >= 0 && part.hi_offset >= 0 {
                    s.high_watermarks.insert(*p, part.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

/// A running source: its thread and what it reports.
pub struct KafkaSource {
    stop: Arc<AtomicBool>,
    pub status: Arc<Mutex<SourceStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaSource {
    /// Start reading `entry`'s topic from `progress`, feeding the dataflow.
    pub fn start(
        config: &KafkaConfig,
        entry: &CatalogEntry,
        progress: SourceProgress,
        dataflow: DataflowHandle,
    ) -> Result<Self> {
        let options = SourceOptions::from_entry(entry)?;
        let decoder = options.decoder(entry)?;
        let client = config.client_config()?;
        let status = Arc::new(Mutex::new(SourceStatus {
            topic: options.topic.clone(),
            state: "starting".into(),
            progress: progress.clone(),
            high_watermarks: BTreeMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = SourceWorker {
            object_id: entry.id,
            name: entry.name.clone(),
            options,
            decoder,
            client,
            dataflow,
            status: status.clone(),
            stop: stop.clone(),
            tracker: tracker_for(entry, &progress),
            committed: progress,
        };
        let thread = std::thread::Builder::new()
            .name(format!("eddy-source-{}", entry.name))
            .spawn(move || worker.run())
            .map_err(|e| Error::internal(format!("cannot start source thread: {e}")))?;
        Ok(Self {
            stop,
            status,
            thread: Some(thread),
        })
    }

    /// A source run by another connector's thread (the Nexmark generator).
    pub fn from_parts(
        stop: Arc<AtomicBool>,
        status: Arc<Mutex<SourceStatus>>,
        thread: JoinHandle<()>,
    ) -> Self {
        Self {
            stop,
            status,
            thread: Some(thread),
        }
    }

    /// Stop the source (its thread finishes its current batch and exits).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Most records decoded and applied in one epoch.
const MAX_BATCH: usize = 20_000;

struct SourceWorker {
    object_id: u32,
    name: String,
    options: SourceOptions,
    decoder: Decoder,
    client: ClientConfig,
    dataflow: DataflowHandle,
    status: Arc<Mutex<SourceStatus>>,
    stop: Arc<AtomicBool>,
    /// Progress as of the last committed epoch.
    committed: SourceProgress,
    tracker: Option<WatermarkTracker>,
}

impl SourceWorker {
    fn set_state(&self, state: impl Into<String>) {
        self.status.lock().state = state.into();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        while !self.stopped() {
            match self.connect() {
                Ok((consumer, partitions)) => {
                    backoff = Duration::from_millis(200);
                    self.set_state("running");
                    info!(source = %self.name, topic = %self.options.topic, partitions = partitions.len(), "source running");
                    if let Err(e) = self.consume(&consumer, partitions) {
                        warn!(source = %self.name, "source error, reconnecting: {e}");
                        self.set_state(format!("error: {e}"));
                    }
                }
                Err(e) => {
                    warn!(source = %self.name, "cannot start reading Kafka, retrying in {backoff:?}: {e}");
                    self.set_state(format!("retrying: {e}"));
                    self.sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(&self) -> Result<(BaseConsumer<StatsContext>, Vec<i32>)> {
        let mut c = self.client.clone();
        c.set("group.id", format!("eddy-{}", self.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // A stored offset that retention already deleted: go on from the oldest
            // record still there (never silently jump to the end).
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("statistics.interval.ms", "1000");
        let consumer: BaseConsumer<StatsContext> = c
            .create_with_context(StatsContext {
                topic: self.options.topic.clone(),
                status: self.status.clone(),
            })
            .map_err(kafka_err)?;
        let partitions = partitions_of(&consumer, &self.options.topic)?;
        self.assign(&consumer, &partitions)?;
        Ok((consumer, partitions))
    }

    /// Assign every partition at its committed offset (or the start position).
    fn assign(&self, consumer: &BaseConsumer<StatsContext>, partitions: &[i32]) -> Result<()> {
        let topic = &self.options.topic;
        let mut tpl = TopicPartitionList::new();
        let mut by_time = TopicPartitionList::new();
        for p in partitions {
            let offset = match (self.committed.offsets.get(p), self.options.start) {
                (Some(o), _) => Offset::Offset(*o),
                (None, StartOffset::Earliest) => Offset::Beginning,
                (None, StartOffset::Latest) => Offset::End,
                (None, StartOffset::Timestamp(t)) => {
                    by_time
                        .add_partition_offset(topic, *p, Offset::Offset(t))
                        .map_err(kafka_err)?;
                    continue;
                }
            };
            tpl.add_partition_offset(topic, *p, offset)
                .map_err(kafka_err)?;
        }
        if by_time.count() > 0 {
            let found = consumer
                .offsets_for_times(by_time, REQUEST_TIMEOUT)
                .map_err(kafka_err)?;
            for e in found.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::End,
                };
                tpl.add_partition_offset(topic, e.partition(), offset)
                    .map_err(kafka_err)?;
            }
        }
        consumer.assign(&tpl).map_err(kafka_err)
    }

    fn consume(
        &mut self,
        consumer: &BaseConsumer<StatsContext>,
        mut known: Vec<i32>,
    ) -> Result<()> {
        if let Some(t) = self.tracker.as_mut() {
            t.set_partitions(known.iter().copied());
        }
        let mut last_metadata = Instant::now();
        let mut last_error: Option<Instant> = None;
        while !self.stopped() {
            // Messages stay in librdkafka's buffers until the batch is applied.
            let mut messages: Vec<BorrowedMessage<'_>> = Vec::with_capacity(1024);
            let deadline = Instant::now() + Duration::from_millis(5);
            let mut wait = Duration::from_millis(100);
            while messages.len() < MAX_BATCH {
                match consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        let p = m.partition();
                        let next = self.committed.offsets.get(&p).copied().unwrap_or(0);
                        // Already applied (a re-read after reconnecting): skip.
                        if m.offset() < next {
                            continue;
                        }
                        messages.push(m);
                    }
                    Some(Err(e)) => {
                        // librdkafka retries by itself; say so, at most once a second.
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                            warn!(source = %self.name, "Kafka: {e}");
                            self.set_state(format!("error: {e}"));
                            last_error = Some(Instant::now());
                        }
                        break;
                    }
                }
                // Reading the clock per record is measurable: check every 64.
                if messages.len() % 64 == 0 && Instant::now() >= deadline {
                    break;
                }
                wait = Duration::ZERO;
            }
            if messages.is_empty() {
                match idle_tick(
                    &self.dataflow,
                    self.object_id,
                    self.decoder.schema(),
                    &self.committed,
                    &self.status,
                    self.tracker.as_mut(),
                ) {
                    Ok(Some(next)) => self.committed = next,
                    Ok(None) => {}
                    Err(e) => warn!(source = %self.name, "cannot advance the watermark: {e}"),
                }
            }
            if !messages.is_empty() {
                if last_error.take().is_some() {
                    self.set_state("running");
                }
                let records: Vec<RawRecord<'_>> = messages
                    .iter()
                    .map(|m| RawRecord {
                        key: m.key(),
                        value: m.payload(),
                        timestamp_ms: m.timestamp().to_millis(),
                        partition: m.partition(),
                        offset: m.offset(),
                    })
                    .collect();
                self.apply(&records)?;
            }
            // New partitions are picked up (read from their beginning).
            if last_metadata.elapsed() > Duration::from_secs(5) {
                last_metadata = Instant::now();
                if let Ok(ps) = partitions_of(consumer, &self.options.topic) {
                    if ps.len() > known.len() {
                        info!(source = %self.name, from = known.len(), to = ps.len(), "topic has new partitions");
                        // A partition created after the source started is read from its
                        // beginning, whatever start_offset says.
                        for p in ps.iter().filter(|p| !known.contains(p)) {
                            self.committed.offsets.entry(*p).or_insert(0);
                        }
                        known = ps;
                        if let Some(t) = self.tracker.as_mut() {
                            t.set_partitions(known.iter().copied());
                        }
                        self.assign(consumer, &known)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Decode a batch and apply it, committing the new offsets with it.
    fn apply(&mut self, records: &[RawRecord<'_>]) -> Result<()> {
        match apply_batch(
            &self.dataflow,
            self.object_id,
            &self.decoder,
            records,
            &self.committed,
            &self.status,
            self.tracker.as_mut(),
        ) {
            Ok(next) => {
                self.committed = next;
                Ok(())
            }
            Err(e) => {
                // Nothing of this batch was applied: reconnect and read it again from
                // the committed offsets.
                self.sleep(Duration::from_secs(1));
                Err(e)
            }
        }
    }
}

/// Decode a batch of records and apply it, committing the progress after it (next
/// offsets, counts, the latest bad records) in the same epoch. Returns that progress,
/// which `SHOW SOURCES` then shows; on an error nothing was applied.
pub(crate) fn apply_batch(
    dataflow: &DataflowHandle,
    object_id: u32,
    decoder: &Decoder,
    records: &[RawRecord<'_>],
    committed: &SourceProgress,
    status: &Mutex<SourceStatus>,
    tracker: Option<&mut WatermarkTracker>,
) -> Result<SourceProgress> {
    let decoded = decoder.decode(records)?;
    let mut next = committed.clone();
    for r in records {
        let o = next.offsets.entry(r.partition).or_insert(0);
        *o = (*o).max(r.offset + 1);
    }
    next.records += records.len() as u64;
    next.errors += decoded.bad.len() as u64;
    let at_ms = now_ms();
    for BadRecord {
        partition,
        offset,
        reason,
    } in decoded.bad
    {
        if next.recent_errors.len() == RECENT_ERRORS {
            next.recent_errors.pop_front();
        }
        next.recent_errors.push_back(SourceError {
            partition,
            offset,
            reason,
            at_ms,
        });
    }
    let partitions = decoded.partitions;
    commit_rows(
        dataflow,
        object_id,
        decoded.changes,
        &|i| partitions.get(i).copied().unwrap_or(0),
        next,
        status,
        tracker,
    )
}

/// Apply rows with the progress they bring the source to, in one epoch; then show that
/// progress in `SHOW SOURCES`. With a watermark `tracker`, late rows are dropped first
/// (`partition(i)`: row i's partition) and the watermark is committed with the rows.
pub(crate) fn commit_rows(
    dataflow: &DataflowHandle,
    object_id: u32,
    changes: crate::dataflow::ChangeBatch,
    partition: &dyn Fn(usize) -> i32,
    next: SourceProgress,
    status: &Mutex<SourceStatus>,
    mut tracker: Option<&mut WatermarkTracker>,
) -> Result<SourceProgress> {
    let pending = submit_rows(
        dataflow,
        object_id,
        changes,
        partition,
        next,
        tracker.as_deref_mut(),
    )?;
    pending.wait(status, tracker)
}

/// A batch of a source's rows sent to the dataflow and not yet acknowledged
/// ([`submit_rows`]): the source can prepare its next batch meanwhile.
pub(crate) struct PendingWrite {
    reply: tokio::sync::oneshot::Receiver<Result<u64>>,
    next: SourceProgress,
    /// The watermark tracker as it was before these rows, to go back to if they fail.
    rollback: Option<crate::dataflow::watermark::WatermarkState>,
}

/// The first half of [`commit_rows`]: filter the rows by the watermark and send them
/// with their progress; [`PendingWrite::wait`] is the second.
pub(crate) fn submit_rows(
    dataflow: &DataflowHandle,
    object_id: u32,
    mut changes: crate::dataflow::ChangeBatch,
    partition: &dyn Fn(usize) -> i32,
    mut next: SourceProgress,
    tracker: Option<&mut WatermarkTracker>,
) -> Result<PendingWrite> {
    let mut time = None;
    let mut rollback = None;
    if let Some(t) = tracker {
        let before = t.state().clone();
        changes = match t.filter(changes, partition) {
            Ok(c) => c,
            Err(e) => {
                t.reset(before);
                return Err(e);
            }
        };
        next.watermark = Some(t.state().clone());
        time = Some(t.time());
        rollback = Some(before);
    }
    let extra = progress_extra(object_id, &next)?;
    let reply = dataflow.send_write_source(object_id, changes, extra, time);
    Ok(PendingWrite {
        reply,
        next,
        rollback,
    })
}

impl PendingWrite {
    /// The source's progress once these rows are committed.
    pub(crate) fn progress(&self) -> &SourceProgress {
        &self.next
    }

    /// Wait for the write without touching the source's status or watermark: for a
    /// batch sent after one that failed. Its progress if it was applied anyway.
    pub(crate) fn discard(self) -> Option<SourceProgress> {
        match futures::executor::block_on(self.reply) {
            Ok(Ok(_)) => Some(self.next),
            _ => None,
        }
    }

    /// Wait until the rows are committed; on failure the tracker goes back to where it
    /// was, since the same rows will come again and must meet the same watermark.
    pub(crate) fn wait(
        self,
        status: &Mutex<SourceStatus>,
        tracker: Option<&mut WatermarkTracker>,
    ) -> Result<SourceProgress> {
        let applied = futures::executor::block_on(self.reply)
            .map_err(|_| Error::internal("dataflow runtime dropped a request"))
            .and_then(|r| r);
        if let Err(e) = applied {
            if let (Some(t), Some(before)) = (tracker, self.rollback) {
                t.reset(before);
            }
            return Err(e);
        }
        status.lock().progress = self.next.clone();
        Ok(self.next)
    }
}

/// The partition ids of `topic`; an error when the topic does not exist.
fn partitions_of<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(kafka_err)?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Error::Kafka(format!("topic \"{topic}\" does not exist")))?;
    if let Some(e) = t.error() {
        return Err(Error::Kafka(format!("topic \"{topic}\": {e:?}")));
    }
    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ps.is_empty() {
        return Err(Error::Kafka(format!("topic \"{topic}\" does not exist")));
    }
    ps.sort_unstable();
    Ok(ps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_columns_fold_like_sql_identifiers() {
        assert_eq!(option_ident(" UserId "), "userid");
        assert_eq!(option_ident("\"UserId\""), "UserId");
        assert_eq!(option_ident("\"a\"\"b\""), "a\"b");
    }

    #[test]
    fn start_offsets_parse() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1970-01-01 00:00:01"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01"), Some(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01+01:00"), Some(-3_599_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    /// An epoch's records are numbered (`eddy-seq`) the same however the operators
    /// ordered its changes, as after a replay in another process.
    #[test]
    fn sink_records_do_not_depend_on_the_order_of_changes() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |rows: &[(i64, i64, i64)]| {
            let data = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                ],
            )
            .unwrap();
            crate::dataflow::ChangeBatch::new(
                data,
                Int64Array::from_iter_values(rows.iter().map(|r| r.2)),
            )
        };
        let changes = [(1, 10, 1), (2, 20, -1), (3, 30, 1), (1, 9, -1), (4, 40, 1)];
        let mut reversed = changes;
        reversed.reverse();
        for upsert in [true, false] {
            let opts = SinkOptions {
                topic: "t".into(),
                key_columns: vec![0],
                key_format: KeyFormat::Text,
                upsert,
                partitions: None,
            };
            let a = sink_records(&opts, &[batch(&changes)]).unwrap();
            let b = sink_records(&opts, &[batch(&reversed[..2]), batch(&reversed[2..])]).unwrap();
            assert_eq!(a, b, "upsert: {upsert}");
        }
        let upsert = SinkOptions {
            topic: "t".into(),
            key_columns: vec![0],
            key_format: KeyFormat::Text,
            upsert: true,
            partitions: None,
        };
        let keys: Vec<Option<String>> = sink_records(&upsert, &[batch(&changes)])
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            ["1", "2", "3", "4"].map(|k| Some(k.to_string())).to_vec()
        );
    }
}

fn kafka_err(e: KafkaError) -> Error {
    Error::Kafka(e.to_string())
}

/// eddy's connection to Kafka: configuration, the shared producer, running sources.
pub struct Kafka {
    config: KafkaConfig,
    producer: Mutex<Option<FutureProducer>>,
    sources: Mutex<HashMap<u32, KafkaSource>>,
    sinks: Mutex<HashMap<u32, KafkaSink>>,
}

impl Kafka {
    pub fn new(config: KafkaConfig) -> Self {
        Self {
            config,
            producer: Mutex::new(None),
            sources: Mutex::new(HashMap::new()),
            sinks: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Make sure `topic` exists (creating it with `partitions` when given): the check
    /// CREATE STREAM/TABLE/SINK makes before anything is created.
    pub async fn ensure_topic(&self, topic: &str, partitions: Option<i32>) -> Result<usize> {
        let client = self.config.client_config()?;
        let brokers = self.config.brokers.clone().unwrap_or_default();
        let topic_name = topic.to_string();
        let probe = client.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<Option<usize>> {
            let consumer: BaseConsumer = probe.create().map_err(kafka_err)?;
            let md = consumer
                .fetch_metadata(Some(&topic_name), REQUEST_TIMEOUT)
                .map_err(|e| {
                    Error::invalid_with("08001", format!("cannot reach Kafka at {brokers}: {e}"))
                })?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic_name && t.error().is_none())
                .map(|t| t.partitions().len())
                .filter(|n| *n > 0))
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
        if let Some(n) = found {
            return Ok(n);
        }
        let Some(partitions) = partitions else {
            return Err(Error::invalid_with(
                "42704",
                format!(
                    "Kafka topic \"{topic}\" does not exist; create it, or add partitions = N \
                     to the WITH options to have eddy create it"
                ),
            ));
        };
        let admin: AdminClient<DefaultClientContext> = client.create().map_err(kafka_err)?;
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
            )
            .await
            .map_err(kafka_err)?;
        for r in results {
            if let Err((t, code)) = r {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(Error::Kafka(format!("cannot create topic \"{t}\": {code}")));
                }
            }
        }
        info!(topic, partitions, "created Kafka topic");
        Ok(partitions as usize)
    }

    /// Start (or restart) the source of a Kafka-backed relation. A source that cannot
    /// start (eddy runs without brokers) is still listed, with the reason, by
    /// `SHOW SOURCES`, and its committed progress and errors stay visible.
    pub fn start_source(
        &self,
        entry: &CatalogEntry,
        progress: SourceProgress,
        dataflow: DataflowHandle,
    ) -> Result<()> {
        let source = match KafkaSource::start(&self.config, entry, progress.clone(), dataflow) {
            Ok(s) => s,
            Err(e) => {
                let status = SourceStatus {
                    topic: entry
                        .options
                        .get("kafka_topic")
                        .cloned()
                        .unwrap_or_default(),
                    state: format!("not running: {e}"),
                    progress,
                    high_watermarks: BTreeMap::new(),
                };
                self.sources.lock().insert(
                    entry.id,
                    KafkaSource {
                        stop: Arc::new(AtomicBool::new(true)),
                        status: Arc::new(Mutex::new(status)),
                        thread: None,
                    },
                );
                return Err(e);
            }
        };
        if let Some(mut old) = self.sources.lock().insert(entry.id, source) {
            old.stop();
        }
        Ok(())
    }

    /// Track a source started by another connector (listed by SHOW SOURCES, stopped
    /// by DROP like a Kafka source).
    pub fn register_source(&self, object_id: u32, source: KafkaSource) {
        if let Some(mut old) = self.sources.lock().insert(object_id, source) {
            old.stop();
        }
    }

    /// Stop a source (DROP); waits for its thread to finish its batch.
    pub async fn stop_source(&self, object_id: u32) {
        let source = self.sources.lock().remove(&object_id);
        if let Some(mut s) = source {
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
        }
    }

    /// Status of every running source, by object id.
    pub fn source_status(&self) -> HashMap<u32, SourceStatus> {
        self.sources
            .lock()
            .iter()
            .map(|(id, s)| (*id, s.status.lock().clone()))
            .collect()
    }

    fn producer(&self) -> Result<FutureProducer> {
        let mut p = self.producer.lock();
        if let Some(p) = &*p {
            return Ok(p.clone());
        }
        let mut c = self.config.client_config()?;
        c.set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .set("enable.idempotence", "false");
        let producer: FutureProducer = c.create().map_err(kafka_err)?;
        *p = Some(producer.clone());
        Ok(producer)
    }

    /// Produce records (key, value; `None` value = tombstone) and wait until the broker
    /// has acknowledged every one.
    pub async fn produce(
        &self,
        topic: &str,
        records: Vec<(Option<String>, Option<String>)>,
    ) -> Result<()> {
        let producer = self.producer()?;
        produce_all(&producer, topic, None, &records).await
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        for (_, mut s) in self.sources.lock().drain() {
            s.stop();
        }
    }
}

/// The WITH options of a Kafka sink.
pub const SINK_OPTIONS: &[&str] = &["kafka_topic", "format", "key", "key_format", "partitions"];

/// How a sink writes a relation's changes.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    pub topic: String,
    /// Key columns (indices into the relation): `key = 'a,b'`, else the table's primary
    /// key; an upsert sink without either is keyed by the whole row.
    pub key_columns: Vec<usize>,
    pub key_format: KeyFormat,
    /// Upsert stream (value = new row, tombstone on delete) rather than plain records.
    pub upsert: bool,
    pub partitions: Option<i32>,
}

impl SinkOptions {
    /// Parse a sink's options against the relation it reads.
    pub fn parse(options: &BTreeMap<String, String>, from: &CatalogEntry) -> Result<Self> {
        check_known_options(options, SINK_OPTIONS, "a sink")?;
        let topic = topic_option(options)?;
        if let Some(f) = options.get("format") {
            if ValueFormat::parse(f)? != ValueFormat::Json {
                return Err(Error::not_supported(
                    "sinks write JSON only (format = 'json')",
                ));
            }
        }
        let key_columns: Vec<usize> = match options.get("key") {
            Some(list) => list
                .split(',')
                .map(|c| {
                    let n = option_ident(c);
                    from.column_index(&n).ok_or_else(|| Error::UndefinedColumn {
                        message: format!("key column \"{n}\" does not exist in \"{}\"", from.name),
                        position: None,
                    })
                })
                .collect::<Result<_>>()?,
            None => from.primary_key.clone(),
        };
        let upsert = !from.append_only;
        let key_columns = if upsert && key_columns.is_empty() {
            (0..from.columns.len()).collect()
        } else {
            key_columns
        };
        let key_format = key_format_option(options, key_columns.len())?;
        let partitions = partitions_option(options)?;
        Ok(Self {
            topic,
            key_columns,
            key_format,
            upsert,
            partitions,
        })
    }
}

/// What `SHOW SINKS` shows of a running sink.
#[derive(Clone, Debug, Default)]
pub struct SinkStatus {
    pub topic: String,
    pub state: String,
    /// Records produced and acknowledged since eddy started.
    pub records: u64,
    /// The last epoch whose changes are all acknowledged by the broker.
    pub epoch: u64,
    /// An append-only sink restarted without the history to resume from: changes made
    /// between its last acknowledged epoch and its restart were not sent.
    pub gap: bool,
}

/// Turn one epoch's changes into Kafka records (key, value; `None` value = tombstone).
///
/// Upsert sinks consolidate by key first: a key with a +1 row ends up as that row, a
/// key with only −1 rows as a tombstone; an update (−old +new) is one record.
/// Append-only sinks write every inserted row.
///
/// The records come out sorted (by key, then value), not in the order the operators
/// happened to emit them: a record's `eddy-seq` header is its position here, and an
/// epoch recomputed after a restart (the input log's replay) must number its records
/// the same way.
pub fn sink_records(
    opts: &SinkOptions,
    batches: &[crate::dataflow::ChangeBatch],
) -> Result<Vec<(Option<String>, Option<String>)>> {
    let mut out = vec![];
    for b in batches {
        if b.is_empty() {
            continue;
        }
        let values = crate::format::JsonEncoder::new(&b.schema()).encode(&b.data, None)?;
        let keys = crate::format::encode_keys(&b.data, &opts.key_columns, opts.key_format)?;
        let diffs = b.diffs.values();
        if !opts.upsert {
            for ((k, v), d) in keys.into_iter().zip(values).zip(diffs.iter()) {
                for _ in 0..(*d).max(0) {
                    out.push((k.clone(), Some(v.clone())));
                }
            }
            continue;
        }
        for ((k, v), d) in keys.into_iter().zip(values).zip(diffs.iter()) {
            out.push((k, (*d > 0).then_some(v)));
        }
    }
    if !opts.upsert {
        out.sort_unstable();
        return Ok(out);
    }
    // Per key, the final state: any insertion wins over retractions of the same key.
    let mut order: Vec<Option<String>> = vec![];
    let mut last: HashMap<Option<String>, Option<String>> = HashMap::new();
    for (k, v) in out {
        match last.get_mut(&k) {
            Some(slot) => {
                if v.is_some() {
                    *slot = v;
                }
            }
            None => {
                order.push(k.clone());
                last.insert(k, v);
            }
        }
    }
    order.sort_unstable();
    Ok(order
        .into_iter()
        .map(|k| {
            let v = last.remove(&k).flatten();
            (k, v)
        })
        .collect())
}

/// A running sink: a task that subscribes to its relation and produces every epoch.
pub struct KafkaSink {
    pub status: Arc<Mutex<SinkStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kafka {
    /// Start a sink reading `from_id`. `first_start`: the sink was just created, so it
    /// begins with the relation's current contents whatever its kind.
    pub fn start_sink(
        &self,
        sink: &CatalogEntry,
        opts: SinkOptions,
        from_id: u32,
        dataflow: DataflowHandle,
        storage: Arc<dyn Storage>,
        first_start: bool,
    ) -> Result<()> {
        let producer = self.producer()?;
        let status = Arc::new(Mutex::new(SinkStatus {
            topic: opts.topic.clone(),
            state: "starting".into(),
            ..Default::default()
        }));
        let st = status.clone();
        let run = SinkRun {
            name: sink.name.clone(),
            id: sink.id,
            from_id,
            opts,
            dataflow,
            storage,
            producer,
            status: st,
        };
        let task = tokio::spawn(async move {
            run.run(first_start).await;
        });
        self.sinks
            .lock()
            .insert(sink.id, KafkaSink { status, task });
        Ok(())
    }

    pub fn stop_sink(&self, sink_id: u32) {
        self.sinks.lock().remove(&sink_id);
    }

    pub fn sink_status(&self) -> HashMap<u32, SinkStatus> {
        self.sinks
            .lock()
            .iter()
            .map(|(id, s)| (*id, s.status.lock().clone()))
            .collect()
    }
}

/// What a running sink task holds.
struct SinkRun {
    name: String,
    id: u32,
    from_id: u32,
    opts: SinkOptions,
    dataflow: DataflowHandle,
    storage: Arc<dyn Storage>,
    producer: FutureProducer,
    status: Arc<Mutex<SinkStatus>>,
}

impl SinkRun {
    /// Subscribe where the sink left off: after a restart, `AS OF` the last epoch the
    /// broker acknowledged (the relation's changes since are kept for resumes across
    /// restarts). A sink that never stored a position has not finished sending the
    /// relation's contents: it starts over with them. When the history is gone, an
    /// upsert sink re-sends the relation's contents (idempotent for a reader of the
    /// topic) and an append-only sink goes on from now — which can miss rows, so it says
    /// so in its state.
    async fn subscribe(&self, first_start: bool) -> Result<SubscriptionReceiver> {
        let position = (!first_start)
            .then(|| load_sink_position(self.storage.as_ref(), self.id))
            .flatten();
        let first_start = first_start || position.is_none();
        if let Some(epoch) = position {
            match self
                .dataflow
                .subscribe(self.from_id, false, Some(epoch))
                .await
            {
                Ok(rx) => {
                    info!(sink = %self.name, epoch, "sink resumes after the last acknowledged epoch");
                    self.status.lock().epoch = epoch;
                    return Ok(rx);
                }
                Err(e) => warn!(sink = %self.name, "cannot resume AS OF {epoch}: {e}"),
            }
        }
        let snapshot = first_start || self.opts.upsert;
        let rx = self
            .dataflow
            .subscribe(self.from_id, snapshot, None)
            .await?;
        if !first_start && !self.opts.upsert {
            self.status.lock().gap = true;
        }
        Ok(rx)
    }

    /// Store the last fully acknowledged epoch (off the async threads: it fsyncs).
    async fn store_position(&self, epoch: u64) {
        let storage = self.storage.clone();
        let key = sink_position_key(self.id);
        let stored = tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::new();
            batch.put(key, epoch.to_be_bytes().to_vec());
            storage.commit(batch).and_then(|_| storage.flush())
        })
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(sink = %self.name, "cannot store the sink's position: {e}"),
            Err(e) => warn!(sink = %self.name, "cannot store the sink's position: {e}"),
        }
    }

    async fn run(self, first_start: bool) {
        let SinkRun {
            name,
            opts,
            producer,
            status,
            ..
        } = &self;
        let mut first_start = first_start;
        let mut backoff = Duration::from_millis(200);
        // The first acknowledged epoch is stored at once: from then on a restart resumes
        // instead of starting over.
        let mut stored_at = Instant::now()
            .checked_sub(SINK_POSITION_INTERVAL)
            .unwrap_or_else(Instant::now);
        let mut unstored: Option<u64> = None;
        loop {
            let mut rx = match self.subscribe(first_start).await {
                Ok(rx) => rx,
                Err(e) => {
                    warn!(sink = %name, "cannot subscribe: {e}");
                    status.lock().state = format!("error: {e}");
                    return;
                }
            };
            first_start = false;
            status.lock().state = "running".into();
            loop {
                let event = match rx.next().await {
                    Ok(e) => e,
                    Err(e) => {
                        if e.to_string().contains("dropped") {
                            return;
                        }
                        // Cut off while the broker was slow: resume after the last
                        // acknowledged epoch.
                        warn!(sink = %name, "sink subscription ended, resuming: {e}");
                        if let Some(epoch) = unstored.take() {
                            self.store_position(epoch).await;
                            stored_at = Instant::now();
                        }
                        break;
                    }
                };
                let (epoch, batches) = match event {
                    SubscriptionEvent::Changes { epoch, batches } => (epoch, batches),
                    SubscriptionEvent::Progress { .. } => {
                        if stored_at.elapsed() >= SINK_POSITION_INTERVAL {
                            if let Some(epoch) = unstored.take() {
                                self.store_position(epoch).await;
                                stored_at = Instant::now();
                            }
                        }
                        continue;
                    }
                };
                let records = match sink_records(opts, &batches) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(sink = %name, "cannot encode changes: {e}");
                        status.lock().state = format!("error: {e}");
                        continue;
                    }
                };
                // Retry until the broker takes the whole epoch: records go out in epoch
                // order.
                loop {
                    match produce_all(producer, &opts.topic, Some(epoch), &records).await {
                        Ok(()) => {
                            backoff = Duration::from_millis(200);
                            let mut s = status.lock();
                            s.records += records.len() as u64;
                            s.epoch = epoch;
                            s.state = "running".into();
                            break;
                        }
                        Err(e) => {
                            warn!(sink = %name, "cannot produce, retrying in {backoff:?}: {e}");
                            status.lock().state = format!("retrying: {e}");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                if stored_at.elapsed() >= SINK_POSITION_INTERVAL {
                    self.store_position(epoch).await;
                    stored_at = Instant::now();
                    unstored = None;
                } else {
                    unstored = Some(epoch);
                }
            }
        }
    }
}

/// Produce records and wait until the broker acknowledged every one. (`send` enqueues
/// when first polled, so the futures are polled together.)
///
/// A sink's records (`epoch` given) carry the headers `eddy-epoch` (the epoch of the
/// change) and `eddy-seq` (the record's position among the epoch's records), both
/// decimal text: after a crash a sink may re-send the epochs since it last stored its
/// position, and a consumer can drop the (epoch, seq) pairs it has already seen.
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    epoch: Option<u64>,
    records: &[(Option<String>, Option<String>)],
) -> Result<()> {
    let mut pending = Vec::with_capacity(records.len());
    let epoch_text = epoch.map(|e| e.to_string());
    for (seq, (key, value)) in records.iter().enumerate() {
        let mut r: FutureRecord<'_, str, str> = FutureRecord::to(topic);
        if let Some(epoch_text) = &epoch_text {
            let seq_text = seq.to_string();
            r = r.headers(
                OwnedHeaders::new_with_capacity(2)
                    .insert(Header {
                        key: "eddy-epoch",
                        value: Some(epoch_text),
                    })
                    .insert(Header {
                        key: "eddy-seq",
                        value: Some(&seq_text),
                    }),
            );
        }
        if let Some(k) = key {
            r = r.key(k.as_str());
        }
        if let Some(v) = value {
            r = r.payload(v.as_str());
        }
        pending.push(producer.send(r, Duration::from_secs(30)));
    }
    for r in futures::future::join_all(pending).await {
        r.map_err(|(e, _)| Error::Kafka(format!("cannot produce to \"{topic}\": {e}")))?;
    }
    Ok(())
}
