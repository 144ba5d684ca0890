//! A built-in source of Nexmark events (persons, auctions, bids), the `nexmark` crate's
//! events: `CREATE STREAM bid (...) WITH (connector = 'nexmark', table = 'bid', ...)`.
//! Demos and benchmarks need no broker.
//!
//! The generator is deterministic: event `n` of a table is the same on every run (a
//! fixed base time), so two runs, or eddy and a reference, see identical input.
//! [`generator`] writes the events straight into Arrow arrays. Columns are matched by
//! name, and any subset of a table's columns (in any order, with castable types) works;
//! a batch that does not cast goes through the same JSON decoder as Kafka records, which
//! reports its bad rows one by one. The number of events generated is committed with
//! each epoch, exactly like Kafka offsets: after a restart the stream continues where
//! the last committed epoch stopped.

pub mod generator;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexmark::event::EventType;
use parking_lot::Mutex;
use tracing::{error, info, warn};

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{
    DataType, Int64Type, SchemaRef, TimeUnit, TimestampMillisecondType,
};

use super::kafka::{
    apply_batch, idle_tick, submit_rows, KafkaSource, PendingWrite, SourceProgress, SourceStatus,
};
use crate::catalog::{CatalogEntry, ObjectKind};
use crate::dataflow::runtime::DataflowHandle;
use crate::dataflow::stream::{omit_columns, tag_regenerable, Regenerate};
use crate::dataflow::watermark::WatermarkTracker;
use crate::dataflow::{ChangeBatch, ColumnSet};
use crate::error::{Error, Result};
use crate::format::{Decoder, KeyFormat, RawRecord, ValueFormat};
use generator::{columns, generate, Kind};

/// The WITH options of a Nexmark stream.
pub const OPTIONS: &[&str] = &[
    "connector",
    "table",
    "event_rate",
    "max_events",
    "use_real_time",
    "idle_timeout",
    "retention",
];

/// Rows generated per batch at most.
const BATCH: u64 = 10_000;

/// Batches sent to the dataflow and not yet committed, at most. The generator runs
/// ahead of the commits (an epoch's fsync), and batches that queue up while the
/// dataflow is busy join one epoch (one commit for several batches).
const IN_FLIGHT: usize = 3;

/// Parsed options of a Nexmark stream.
#[derive(Clone, Debug)]
pub struct NexmarkOptions {
    pub table: EventType,
    /// Rows per second; 0 generates as fast as eddy can take them.
    pub event_rate: u64,
    /// Stop after this many rows (`None`: never).
    pub max_events: Option<u64>,
    /// Stamp events with the wall clock at generation instead of the generator's own
    /// (repeatable) times: for measuring freshness, like RisingWave's
    /// `nexmark.use.real.time`.
    pub real_time: bool,
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
        let real_time = match o.get("use_real_time") {
            Some(v) => crate::sql::bool_option("use_real_time", v)?,
            None => false,
        };
        Ok(Self {
            table,
            event_rate: number("event_rate")?.unwrap_or(1000),
            max_events: number("max_events")?,
            real_time,
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
    let tracker = super::kafka::tracker_for(entry, &progress);
    let thread = std::thread::Builder::new()
        .name(format!("eddy-nexmark-{}", entry.name))
        .spawn(move || {
            run(
                id, &name, opts, decoder, progress, dataflow, st, sp, tracker,
            )
        })
        .map_err(|e| Error::internal(format!("cannot start nexmark thread: {e}")))?;
    Ok(KafkaSource::from_parts(stop, status, thread))
}

#[allow(clippy::too_many_arguments)]
fn run(
    object_id: u32,
    name: &str,
    opts: NexmarkOptions,
    decoder: Decoder,
    committed: SourceProgress,
    dataflow: DataflowHandle,
    status: Arc<Mutex<SourceStatus>>,
    stop: Arc<AtomicBool>,
    mut tracker: Option<WatermarkTracker>,
) {
    let started = Instant::now();
    // The generator has one partition: the watermark follows it, and advances with the
    // clock once it stops (max_events reached).
    if let Some(t) = tracker.as_mut() {
        t.set_partitions([0]);
    }
    let first = committed.offsets.get(&0).copied().unwrap_or(0).max(0) as u64;
    let mut pos = Position {
        generated: first,
        committed,
        inflight: VecDeque::new(),
    };
    let direct = DirectPath::new(opts.table, decoder.schema());
    let columns_read = dataflow.columns_read(object_id);
    info!(
        source = %name,
        from = first,
        direct = direct.is_some(),
        "nexmark generator running"
    );
    let mut values: Vec<String> = Vec::with_capacity(BATCH as usize);
    while !stop.load(Ordering::Relaxed) {
        let queued = pos.queued();
        let finished = opts.max_events.is_some_and(|m| queued >= m);
        // How many rows are due by now at the configured rate.
        let due = if opts.event_rate == 0 {
            queued + BATCH
        } else {
            first + (started.elapsed().as_secs_f64() * opts.event_rate as f64) as u64
        };
        let mut n = due.saturating_sub(queued).min(BATCH);
        if let Some(m) = opts.max_events {
            n = n.min(m.saturating_sub(queued));
        }
        if n == 0 && !pos.inflight.is_empty() {
            // Nothing to generate meanwhile: wait for the oldest batch in flight.
            pos.settle(name, &status, tracker.as_mut());
            continue;
        }
        if finished {
            status.lock().state = "finished".into();
            match idle_tick(
                &dataflow,
                object_id,
                decoder.schema(),
                &pos.committed,
                &status,
                tracker.as_mut(),
            ) {
                Ok(Some(next)) => pos.committed = next,
                Ok(None) => {}
                Err(e) => warn!(source = %name, "nexmark: cannot advance the watermark: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let from = pos.queued();
        let now = opts.real_time.then(crate::dataflow::runtime::now_ms);
        // Straight to Arrow when possible; a batch that does not cast goes through the
        // JSON decoder, which skips and reports its bad rows one by one.
        let generated = |extra| generate(opts.table, from, n as usize, extra, now);
        // Rows stamped with the clock cannot be generated again: the stream stores them.
        let tag = (!opts.real_time).then_some(from);
        // `extra` is most of an event's cost: drawn only when declared and read (the
        // stream fills it in for a reader that comes later; see `DirectPath::build`).
        let read = ColumnSet::from_bits(columns_read.load(Ordering::Relaxed));
        let extra = match direct.as_ref() {
            None => true,
            Some(d) => match d.extra_column() {
                None => false,
                Some(e) => tag.is_none() || read.contains(e),
            },
        };
        let built = generated(extra).and_then(|arrays| {
            match direct.as_ref().and_then(|d| d.build(&arrays, tag).ok()) {
                Some(rows) => Ok((arrays, Some(ChangeBatch::inserts(rows)))),
                // The JSON path takes whole rows.
                None if !extra => Ok((generated(true)?, None)),
                None => Ok((arrays, None)),
            }
        });
        let (arrays, direct_rows) = match built {
            Ok(b) => b,
            Err(e) => {
                pos.rewind(name, &status, &e);
                continue;
            }
        };
        // Room for this batch: at most IN_FLIGHT queued, and the JSON path below
        // applies its batch itself, after every batch sent before it.
        let room = match direct_rows {
            Some(_) if pos.inflight.len() < IN_FLIGHT => true,
            Some(_) => pos.settle(name, &status, tracker.as_mut()),
            None => pos.settle_all(name, &status, tracker.as_mut()),
        };
        if !room {
            // A batch before failed: this one follows rows that were not applied.
            continue;
        }
        if let Some(changes) = direct_rows {
            let mut next = pos.submitted().clone();
            next.offsets.insert(0, (pos.queued() + n) as i64);
            next.records += n;
            match submit_rows(
                &dataflow,
                object_id,
                changes,
                &|_| 0,
                next,
                tracker.as_mut(),
            ) {
                Ok(pending) => pos.inflight.push_back((pending, n)),
                Err(e) => {
                    // Not sent (the watermark filter failed): what was sent before
                    // stands; generate again from after it.
                    if pos.settle_all(name, &status, tracker.as_mut()) {
                        pos.rewind(name, &status, &e);
                    }
                }
            }
            continue;
        }
        values.clear();
        values.extend((0..n as usize).map(|i| to_json(opts.table, &arrays, i)));
        let records: Vec<RawRecord<'_>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| RawRecord {
                key: None,
                value: Some(v.as_bytes()),
                timestamp_ms: None,
                partition: 0,
                offset: (pos.generated + i as u64) as i64,
            })
            .collect();
        match apply_batch(
            &dataflow,
            object_id,
            &decoder,
            &records,
            &pos.committed,
            &status,
            tracker.as_mut(),
        ) {
            Ok(next) => pos.advance(n, next),
            Err(e) => pos.rewind(name, &status, &e),
        }
    }
    // Stopping: let the batches in flight finish, so their progress is known.
    pos.settle_all(name, &status, tracker.as_mut());
}

/// Where a generator source is. Up to [`IN_FLIGHT`] batches may be in flight: the
/// next batch is generated while the dataflow applies and commits the ones before, and
/// sent before they are committed. Rows still go in order (the dataflow takes commands
/// in order), and when a batch fails the source generates again from the committed
/// position.
///
/// That relies on failures of a sent write being sticky: the dataflow refuses every
/// write after a failed commit (until a restart), and a dropped relation refuses all of
/// them. So the batches sent after a failed one fail too, and none of them is applied
/// out of order.
struct Position {
    /// Rows committed.
    generated: u64,
    /// The progress committed with them.
    committed: SourceProgress,
    /// The batches sent and not yet committed, oldest first, with their row counts.
    inflight: VecDeque<(PendingWrite, u64)>,
}

impl Position {
    /// Rows generated so far, counting the batches in flight.
    fn queued(&self) -> u64 {
        self.generated + self.inflight.iter().map(|(_, n)| *n).sum::<u64>()
    }

    /// The progress once every batch sent is committed.
    fn submitted(&self) -> &SourceProgress {
        self.inflight
            .back()
            .map_or(&self.committed, |(pending, _)| pending.progress())
    }

    /// `rows` more rows are committed, with progress `next`.
    fn advance(&mut self, rows: u64, next: SourceProgress) {
        self.generated += rows;
        self.committed = next;
    }

    /// A batch was not applied: drop the batches sent after it and, after a pause,
    /// generate the same rows again from the committed position.
    fn rewind(&mut self, name: &str, status: &Mutex<SourceStatus>, e: &Error) {
        warn!(source = %name, "nexmark: {e}");
        for (pending, _) in std::mem::take(&mut self.inflight) {
            if let Some(next) = pending.discard() {
                // Cannot happen while failures are sticky (see above); if it does,
                // follow what was committed rather than apply its rows twice.
                error!(
                    source = %name,
                    "nexmark: a batch was applied after an earlier one failed; the failed batch's rows are skipped"
                );
                self.generated = next.offsets.get(&0).copied().unwrap_or(0).max(0) as u64;
                self.committed = next;
            }
        }
        status.lock().state = format!("retrying: {e}");
        std::thread::sleep(Duration::from_secs(1));
    }

    /// Wait for the oldest batch in flight, if any; false (and rewound) if it failed.
    fn settle(
        &mut self,
        name: &str,
        status: &Mutex<SourceStatus>,
        tracker: Option<&mut WatermarkTracker>,
    ) -> bool {
        let Some((pending, rows)) = self.inflight.pop_front() else {
            return true;
        };
        match pending.wait(status, tracker) {
            Ok(next) => {
                self.advance(rows, next);
                true
            }
            Err(e) => {
                self.rewind(name, status, &e);
                false
            }
        }
    }

    /// Wait for every batch in flight; false (and rewound) if one failed.
    fn settle_all(
        &mut self,
        name: &str,
        status: &Mutex<SourceStatus>,
        mut tracker: Option<&mut WatermarkTracker>,
    ) -> bool {
        while !self.inflight.is_empty() {
            if !self.settle(name, status, tracker.as_deref_mut()) {
                return false;
            }
        }
        true
    }
}

/// Generated columns to Arrow without JSON: each declared column picked from the
/// generator's arrays and cast to its declared type. Used when every declared column is
/// one of the table's and the casts exist; otherwise (and for a batch whose cast fails,
/// e.g. a value out of a narrower type's range) the rows go through the JSON decoder,
/// which reports bad rows one by one.
struct DirectPath {
    schema: SchemaRef,
    /// For each declared column, its position in the generator's columns.
    picks: Vec<usize>,
    /// The generator's position of `extra`.
    extra_pick: usize,
}

impl DirectPath {
    fn new(table: EventType, schema: SchemaRef) -> Option<Self> {
        let mut picks = vec![];
        for f in schema.fields() {
            let name = f.name().to_ascii_lowercase();
            let from = match generator::kind(table, &name)? {
                Kind::Int => DataType::Int64,
                Kind::Text => DataType::Utf8,
                Kind::Time => DataType::Timestamp(TimeUnit::Millisecond, None),
            };
            if !can_cast_types(&from, f.data_type()) {
                return None;
            }
            picks.push(columns(table).iter().position(|c| *c == name)?);
        }
        // `extra` is the generator's last column.
        let extra_pick = columns(table).len() - 1;
        Some(Self {
            schema,
            picks,
            extra_pick,
        })
    }

    /// The declared columns of a generated batch; with `from` (the batch's first row),
    /// tagged as rows the stream can have generated again instead of storing them.
    /// When `arrays` lack `extra` (not drawn because no reader reads it), a tagged
    /// batch's `extra` is nulls, marked as left out ([`omit_columns`]): the stream
    /// fills it in if a reader needs it after all.
    fn build(&self, arrays: &[ArrayRef], from: Option<u64>) -> Result<RecordBatch> {
        let omitted = self
            .extra_column()
            .filter(|_| arrays.len() <= self.extra_pick);
        if omitted.is_some() && from.is_none() {
            return Err(Error::internal("nexmark: extra left out of untagged rows"));
        }
        let n = arrays.first().map_or(0, |a| a.len());
        let out = (0..self.picks.len())
            .map(|i| match omitted {
                Some(e) if e == i => Ok(new_null_array(self.schema.field(i).data_type(), n)),
                _ => self.column(arrays, i),
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), out, &options)?;
        let batch = match from {
            Some(from) => tag_regenerable(batch, from)?,
            None => batch,
        };
        match omitted {
            Some(e) => omit_columns(batch, &[e]),
            None => Ok(batch),
        }
    }

    /// The declared column that is `extra`, if declared.
    fn extra_column(&self) -> Option<usize> {
        self.picks.iter().position(|p| *p == self.extra_pick)
    }

    /// Declared columns `columns` (by index) of `n` generated rows.
    fn build_columns(
        &self,
        arrays: &[ArrayRef],
        columns: &[usize],
        n: usize,
    ) -> Result<RecordBatch> {
        let out = columns
            .iter()
            .map(|i| self.column(arrays, *i))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::new(self.schema.project(columns)?),
            out,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Declared column `i`, cast to its declared type.
    fn column(&self, arrays: &[ArrayRef], i: usize) -> Result<ArrayRef> {
        let target = self.schema.field(i);
        let native = self
            .picks
            .get(i)
            .and_then(|pick| arrays.get(*pick))
            .ok_or_else(|| Error::internal("nexmark: a generated column is missing"))?;
        if native.data_type() == target.data_type() {
            return Ok(native.clone());
        }
        let opts = CastOptions {
            safe: false,
            ..Default::default()
        };
        cast_with_options(native, target.data_type(), &opts).map_err(|e| {
            Error::invalid_with(
                "22003",
                format!(
                    "nexmark column {} does not fit its type: {e}",
                    target.name()
                ),
            )
        })
    }

    /// Whether `extra` is declared (generating it is most of a bid's cost).
    fn extra(&self) -> bool {
        self.extra_column().is_some()
    }

    /// Whether any of declared columns `columns` is `extra`.
    fn needs_extra(&self, columns: &[usize]) -> bool {
        columns
            .iter()
            .any(|i| self.picks.get(*i) == Some(&self.extra_pick))
    }
}

/// For a stream of generated events: produces its rows again from their positions, so
/// the stream stores positions instead of rows. `None` for a stream whose rows cannot
/// be produced again: with `use_real_time` (stamped with the clock), or with columns
/// that go through the JSON decoder. A read of some columns only (a pull query's
/// projection) skips drawing `extra` when it is not among them.
pub fn regenerate(entry: &CatalogEntry) -> Result<Option<Regenerate>> {
    let opts = NexmarkOptions::from_entry(entry)?;
    if opts.real_time {
        return Ok(None);
    }
    let Some(direct) = DirectPath::new(opts.table, entry.schema()) else {
        return Ok(None);
    };
    let table = opts.table;
    Ok(Some(Arc::new(
        move |from, n, columns: Option<&[usize]>| match columns {
            None => {
                let arrays = generate(table, from, n, direct.extra(), None)?;
                direct.build(&arrays, Some(from))
            }
            Some(columns) => {
                let arrays = generate(table, from, n, direct.needs_extra(columns), None)?;
                direct.build_columns(&arrays, columns, n)
            }
        },
    )))
}

/// Row `row` of a generated batch (every column, `extra` included) as a JSON object
/// with the Nexmark column names (times in ms since 1970).
fn to_json(table: EventType, arrays: &[ArrayRef], row: usize) -> String {
    let mut out = String::from("{");
    for (i, (name, a)) in columns(table).iter().zip(arrays).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        if let Some(s) = a.as_string_opt::<i32>() {
            out.push_str(&serde_json::to_string(s.value(row)).unwrap_or_else(|_| "null".into()));
        } else if let Some(v) = a.as_primitive_opt::<Int64Type>() {
            out.push_str(&v.value(row).to_string());
        } else if let Some(v) = a.as_primitive_opt::<TimestampMillisecondType>() {
            out.push_str(&v.value(row).to_string());
        } else {
            out.push_str("null");
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;

    fn entry(cols: &[(&str, DataType)]) -> CatalogEntry {
        CatalogEntry {
            id: 1,
            name: "s".into(),
            kind: ObjectKind::Stream,
            columns: cols
                .iter()
                .map(|(n, t)| Column {
                    name: n.to_string(),
                    data_type: t.clone(),
                    nullable: true,
                    sql_type: None,
                })
                .collect(),
            primary_key: vec![],
            sql: String::new(),
            depends_on: vec![],
            options: Default::default(),
            append_only: true,
            watermark: None,
            plan_version: 0,
        }
    }

    /// The direct path builds exactly the rows the JSON path decodes.
    fn same_as_json(table: EventType, cols: &[(&str, DataType)]) {
        let e = entry(cols);
        let decoder = Decoder::new(&e, ValueFormat::Json, KeyFormat::None, vec![], None, false)
            .expect("decoder");
        let direct = DirectPath::new(table, decoder.schema()).expect("direct path applies");
        let arrays = generate(table, 17, 300, true, None).expect("generate");
        let json: Vec<String> = (0..300).map(|i| to_json(table, &arrays, i)).collect();
        let records: Vec<RawRecord<'_>> = json
            .iter()
            .enumerate()
            .map(|(i, v)| RawRecord {
                key: None,
                value: Some(v.as_bytes()),
                timestamp_ms: None,
                partition: 0,
                offset: i as i64,
            })
            .collect();
        let decoded = decoder.decode(&records).expect("decode");
        assert!(decoded.bad.is_empty());
        let built = ChangeBatch::inserts(direct.build(&arrays, None).expect("build"));
        assert_eq!(built.data, decoded.changes.data, "{table:?}");
        assert_eq!(built.diffs, decoded.changes.diffs);
    }

    /// Every column of `table`, declared with its natural SQL type.
    fn declared(table: EventType) -> Vec<(&'static str, DataType)> {
        columns(table)
            .iter()
            .map(|c| {
                let t = match generator::kind(table, c) {
                    Some(Kind::Int) => DataType::Int64,
                    Some(Kind::Text) => DataType::Utf8,
                    _ => DataType::Timestamp(TimeUnit::Microsecond, None),
                };
                (*c, t)
            })
            .collect()
    }

    #[test]
    fn direct_path_equals_the_json_decoder_for_every_table() {
        for table in [EventType::Bid, EventType::Auction, EventType::Person] {
            same_as_json(table, &declared(table));
        }
        // A subset, in another order, with other (castable) types.
        same_as_json(
            EventType::Bid,
            &[
                (
                    "date_time",
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                ),
                ("price", DataType::Float64),
                ("auction", DataType::Int64),
            ],
        );
    }

    #[test]
    fn a_column_the_table_lacks_uses_the_json_path() {
        let e = entry(&[("auction", DataType::Int64), ("nope", DataType::Int64)]);
        assert!(DirectPath::new(EventType::Bid, e.schema()).is_none());
    }

    #[test]
    fn a_value_that_does_not_fit_fails_the_batch_instead_of_wrapping() {
        let e = entry(&[("price", DataType::Int8)]);
        let direct = DirectPath::new(EventType::Bid, e.schema()).expect("castable");
        assert!(!direct.extra());
        let arrays = generate(EventType::Bid, 0, 100, false, None).expect("generate");
        assert!(direct.build(&arrays, None).is_err());
    }

    #[test]
    fn regenerating_some_columns_gives_the_same_values() {
        let mut cols = declared(EventType::Bid);
        cols[2].1 = DataType::Float64; // price, cast
        let mut e = entry(&cols);
        e.options = [
            ("connector".to_string(), "nexmark".to_string()),
            ("table".to_string(), "bid".to_string()),
        ]
        .into();
        let f = regenerate(&e).expect("options").expect("regenerable");
        let all = f(100, 500, None).expect("all");
        assert_eq!(all.num_columns(), 7);
        for cols in [vec![0, 2], vec![6, 1], vec![], vec![3, 4, 5], vec![2, 2]] {
            let some = f(100, 500, Some(&cols)).expect("some");
            assert_eq!(some.num_rows(), 500);
            assert_eq!(some.num_columns(), cols.len());
            for (j, c) in cols.iter().enumerate() {
                assert_eq!(some.column(j), all.column(*c), "{cols:?}");
                assert_eq!(some.schema().field(j), e.schema().field(*c));
            }
        }
        // Rows stamped with the clock cannot be generated again.
        e.options.insert("use_real_time".into(), "true".into());
        assert!(regenerate(&e).expect("options").is_none());
    }

    /// Without `extra` drawn, a tagged batch carries nulls in its place, marked as left
    /// out, and filling them in from the stream's function gives the full batch.
    #[test]
    fn a_batch_built_without_extra_marks_it_left_out() {
        let mut e = entry(&declared(EventType::Bid));
        e.options = [
            ("connector".to_string(), "nexmark".to_string()),
            ("table".to_string(), "bid".to_string()),
        ]
        .into();
        let direct = DirectPath::new(EventType::Bid, e.schema()).expect("direct");
        assert_eq!(direct.extra_column(), Some(6));
        let lean = generate(EventType::Bid, 40, 50, false, None).expect("generate");
        let batch = direct.build(&lean, Some(40)).expect("build");
        assert_eq!(batch.num_rows(), 50);
        assert_eq!(batch.column(6).null_count(), 50);
        assert_eq!(
            batch
                .schema()
                .metadata()
                .get("eddy.omitted")
                .map(String::as_str),
            Some("6")
        );
        // Untagged rows cannot be filled in later: not built without extra.
        assert!(direct.build(&lean, None).is_err());
        let f = regenerate(&e).expect("options").expect("regenerable");
        let full = f(40, 50, None).expect("full");
        for c in 0..6 {
            assert_eq!(batch.column(c), full.column(c));
        }
        assert_eq!(full.column(6).null_count(), 0);
        assert_eq!(
            f(40, 50, Some(&[6])).expect("extra").column(0),
            full.column(6)
        );
    }

    #[test]
    fn use_real_time_is_a_boolean() {
        let mut e = entry(&[("auction", DataType::Int64)]);
        e.options.insert("table".into(), "bid".into());
        assert!(!NexmarkOptions::from_entry(&e).expect("default").real_time);
        e.options.insert("use_real_time".into(), "TRUE".into());
        assert!(NexmarkOptions::from_entry(&e).expect("true").real_time);
        e.options
            .insert("use_real_time".into(), "yes please".into());
        let err = NexmarkOptions::from_entry(&e).expect_err("not a boolean");
        assert!(err.to_string().contains("use_real_time"), "{err}");
    }

    use std::sync::atomic::AtomicUsize;

    use datafusion::arrow::array::{Array, Int64Array};

    use crate::dataflow::runtime::{Runtime, RuntimeConfig, Subgraph};
    use crate::dataflow::stream::StreamOperator;
    use crate::storage::{KvPairs, KvVisitor, MemoryStorage, Storage, WriteBatch};

    /// Memory storage whose commits fail once `left` reaches zero (a disk filling up).
    struct FailingAfter {
        inner: MemoryStorage,
        left: AtomicUsize,
    }

    impl Storage for FailingAfter {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(key)
        }
        fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs> {
            self.inner.scan_prefix(prefix)
        }
        fn for_each_prefix(&self, prefix: &[u8], f: &mut KvVisitor) -> Result<()> {
            self.inner.for_each_prefix(prefix, f)
        }
        fn commit(&self, batch: WriteBatch) -> Result<()> {
            let left = self.left.load(Ordering::SeqCst);
            if left == 0 {
                return Err(Error::Storage("No space left on device (test)".into()));
            }
            self.left.store(left - 1, Ordering::SeqCst);
            self.inner.commit(batch)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn size_on_disk(&self) -> u64 {
            0
        }
    }

    /// Commits start failing while the generator has batches in flight: the stream keeps
    /// exactly the rows of the batches committed before the failure, in order, no row
    /// twice, and the source's committed position says so.
    #[test]
    fn a_failed_commit_with_batches_in_flight_keeps_a_gapless_prefix() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let storage = Arc::new(FailingAfter {
            inner: MemoryStorage::new(),
            left: AtomicUsize::new(12),
        });
        let (dataflow, _) = Runtime::start(storage.clone(), RuntimeConfig::default()).unwrap();
        let mut entry = entry(&[("auction", DataType::Int64)]);
        entry.options = [
            ("connector".to_string(), "nexmark".to_string()),
            ("table".to_string(), "bid".to_string()),
        ]
        .into();
        rt.block_on(dataflow.install(
            Subgraph::single(1, Box::new(StreamOperator::new("bid", entry.schema()))),
            false,
            WriteBatch::new(),
        ))
        .unwrap();
        let opts = NexmarkOptions::from_entry(&entry).unwrap();
        let decoder = Decoder::new(
            &entry,
            ValueFormat::Json,
            KeyFormat::None,
            vec![],
            None,
            false,
        )
        .unwrap();
        let status = Arc::new(Mutex::new(SourceStatus::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (dataflow, status, stop) = (dataflow.clone(), status.clone(), stop.clone());
            std::thread::spawn(move || {
                run(
                    1,
                    "bid",
                    opts,
                    decoder,
                    SourceProgress::default(),
                    dataflow,
                    status,
                    stop,
                    None,
                )
            })
        };
        let started = Instant::now();
        while !status.lock().state.starts_with("retrying") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no failure seen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let committed = status.lock().progress.clone();
        let batches = rt
            .block_on(async { dataflow.snapshots().current() })
            .get(1)
            .unwrap()
            .batches()
            .unwrap();
        let stored: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
            })
            .collect();
        let expected: Vec<i64> = nexmark::EventGenerator::new(nexmark::config::NexmarkConfig {
            base_time: generator::BASE_TIME_MS,
            ..Default::default()
        })
        .with_type_filter(EventType::Bid)
        .take(stored.len())
        .map(|e| match e {
            nexmark::event::Event::Bid(b) => b.auction as i64,
            _ => unreachable!(),
        })
        .collect();
        assert!(!stored.is_empty(), "some batches were committed first");
        assert_eq!(
            stored, expected,
            "the committed rows are the generator's prefix"
        );
        assert_eq!(
            committed.offsets.get(&0).copied(),
            Some(stored.len() as i64)
        );
        assert_eq!(committed.records, stored.len() as u64);
    }
}
