//! A built-in source of Nexmark events (persons, auctions, bids) from the `nexmark`
//! crate: `CREATE STREAM bid (...) WITH (connector = 'nexmark', table = 'bid', ...)`.
//! Demos and benchmarks need no broker.
//!
//! The generator is deterministic: event `n` of a table is the same on every run (a
//! fixed base time), so two runs, or eddy and a reference, see identical input. Events
//! go through the same JSON decoder as Kafka records, so columns are matched by name
//! and any subset of a table's columns (in any order, with compatible types) works. The
//! number of events generated is committed with each epoch, exactly like Kafka offsets:
//! after a restart the stream continues where the last committed epoch stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};
use nexmark::EventGenerator;
use parking_lot::Mutex;
use tracing::{info, warn};

use super::kafka::{apply_batch, KafkaSource, SourceProgress, SourceStatus};
use crate::catalog::{CatalogEntry, ObjectKind};
use crate::dataflow::runtime::DataflowHandle;
use crate::error::{Error, Result};
use crate::format::{Decoder, KeyFormat, RawRecord, ValueFormat};

/// The WITH options of a Nexmark stream.
pub const OPTIONS: &[&str] = &["connector", "table", "event_rate", "max_events"];

/// Fixed base time of generated events (2023-11-14 22:13:20 UTC): runs are repeatable.
const BASE_TIME_MS: u64 = 1_700_000_000_000;

/// Rows generated per epoch at most.
const BATCH: u64 = 10_000;

/// Parsed options of a Nexmark stream.
#[derive(Clone, Debug)]
pub struct NexmarkOptions {
    pub table: EventType,
    /// Rows per second; 0 generates as fast as eddy can take them.
    pub event_rate: u64,
    /// Stop after this many rows (`None`: never).
    pub max_events: Option<u64>,
}

impl NexmarkOptions {
    pub fn from_entry(entry: &CatalogEntry) -> Result<Self> {
        let o = &entry.options;
        if entry.kind != ObjectKind::Stream {
            return Err(Error::invalid_with(
                "42809",
                "the nexmark connector makes streams: use CREATE STREAM",
            ));
        }
        super::kafka::check_known_options(o, OPTIONS, "a nexmark stream")?;
        let table = match o.get("table").map(|t| t.to_ascii_lowercase()).as_deref() {
            Some("bid") => EventType::Bid,
            Some("auction") => EventType::Auction,
            Some("person") => EventType::Person,
            _ => {
                return Err(Error::invalid_with(
                    "22023",
                    "a nexmark stream needs table = 'bid', 'auction' or 'person'",
                ))
            }
        };
        let number = |name: &str| -> Result<Option<u64>> {
            match o.get(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                    Error::invalid_with(
                        "22023",
                        format!("{name} must be a non-negative integer, not '{v}'"),
                    )
                }),
            }
        };
        Ok(Self {
            table,
            event_rate: number("event_rate")?.unwrap_or(1000),
            max_events: number("max_events")?,
        })
    }
}

/// Start generating rows for `entry` from `progress` (partition 0's offset is the number
/// of rows generated so far).
pub fn start(
    entry: &CatalogEntry,
    progress: SourceProgress,
    dataflow: DataflowHandle,
) -> Result<KafkaSource> {
    let opts = NexmarkOptions::from_entry(entry)?;
    let decoder = Decoder::new(
        entry,
        ValueFormat::Json,
        KeyFormat::None,
        vec![],
        None,
        false,
    )?;
    let label = match opts.table {
        EventType::Bid => "nexmark:bid",
        EventType::Auction => "nexmark:auction",
        EventType::Person => "nexmark:person",
    };
    let status = Arc::new(Mutex::new(SourceStatus {
        topic: label.into(),
        state: "running".into(),
        progress: progress.clone(),
        high_watermarks: BTreeMap::new(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let (st, sp, id, name) = (status.clone(), stop.clone(), entry.id, entry.name.clone());
    let thread = std::thread::Builder::new()
        .name(format!("eddy-nexmark-{}", entry.name))
        .spawn(move || run(id, &name, opts, decoder, progress, dataflow, st, sp))
        .map_err(|e| Error::internal(format!("cannot start nexmark thread: {e}")))?;
    Ok(KafkaSource::from_parts(stop, status, thread))
}

#[allow(clippy::too_many_arguments)]
fn run(
    object_id: u32,
    name: &str,
    opts: NexmarkOptions,
    decoder: Decoder,
    mut committed: SourceProgress,
    dataflow: DataflowHandle,
    status: Arc<Mutex<SourceStatus>>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let first = committed.offsets.get(&0).copied().unwrap_or(0).max(0) as u64;
    let mut generated = first;
    let mut generator = events(opts.table, generated);
    info!(source = %name, from = generated, "nexmark generator running");
    let mut values: Vec<String> = Vec::with_capacity(BATCH as usize);
    while !stop.load(Ordering::Relaxed) {
        if opts.max_events.is_some_and(|m| generated >= m) {
            status.lock().state = "finished".into();
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        // How many rows are due by now at the configured rate.
        let due = if opts.event_rate == 0 {
            generated + BATCH
        } else {
            first + (started.elapsed().as_secs_f64() * opts.event_rate as f64) as u64
        };
        let mut n = due.saturating_sub(generated).min(BATCH);
        if let Some(m) = opts.max_events {
            n = n.min(m - generated);
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        values.clear();
        for _ in 0..n {
            match generator.next() {
                Some(e) => values.push(to_json(&e)),
                None => break,
            }
        }
        let records: Vec<RawRecord<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| RawRecord {
                key: None,
                value: Some(v.as_bytes()),
                timestamp_ms: None,
                partition: 0,
                offset: (generated + i as u64) as i64,
            })
            .collect();
        match apply_batch(
            &dataflow, object_id, &decoder, &records, &committed, &status,
        ) {
            Ok(next) => {
                generated += values.len() as u64;
                committed = next;
            }
            Err(e) => {
                // Not applied: generate the same rows again.
                warn!(source = %name, "nexmark: {e}");
                status.lock().state = format!("retrying: {e}");
                generator = events(opts.table, generated);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// The events of one table from its `offset`-th on (the same on every run).
fn events(table: EventType, offset: u64) -> EventGenerator {
    EventGenerator::new(NexmarkConfig {
        base_time: BASE_TIME_MS,
        ..Default::default()
    })
    .with_type_filter(table)
    .with_offset(offset)
}

/// One event as a JSON object with the Nexmark column names (times in ms since 1970).
fn to_json(e: &Event) -> String {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    match e {
        Event::Person(p) => format!(
            r#"{{"id":{},"name":{},"email_address":{},"credit_card":{},"city":{},"state":{},"date_time":{},"extra":{}}}"#,
            p.id,
            s(&p.name),
            s(&p.email_address),
            s(&p.credit_card),
            s(&p.city),
            s(&p.state),
            p.date_time,
            s(&p.extra)
        ),
        Event::Auction(a) => format!(
            r#"{{"id":{},"item_name":{},"description":{},"initial_bid":{},"reserve":{},"date_time":{},"expires":{},"seller":{},"category":{},"extra":{}}}"#,
            a.id,
            s(&a.item_name),
            s(&a.description),
            a.initial_bid,
            a.reserve,
            a.date_time,
            a.expires,
            a.seller,
            a.category,
            s(&a.extra)
        ),
        Event::Bid(b) => format!(
            r#"{{"auction":{},"bidder":{},"price":{},"channel":{},"url":{},"date_time":{},"extra":{}}}"#,
            b.auction,
            b.bidder,
            b.price,
            s(&b.channel),
            s(&b.url),
            b.date_time,
            s(&b.extra)
        ),
    }
}
