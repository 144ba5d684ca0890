//! Event time: a source's watermark, and the rows that arrive too late for it.
//!
//! A relation declared with `WATERMARK FOR ts AS ts - INTERVAL 'L'` has a watermark: the
//! time up to which eddy assumes it has seen every event. It is the minimum over the
//! source's partitions of (the largest `ts` seen in that partition) − L, and it never
//! goes back. A row whose `ts` is below the watermark when it arrives is *late*: it is
//! dropped (it could change a window that was already closed and emitted) and counted.
//!
//! A partition that has sent nothing for the idle timeout does not hold the watermark
//! back; when every partition is idle, the watermark advances with the wall clock from
//! the last event time seen (so windows close when traffic stops, and a replay of old
//! data is not declared late wholesale).
//!
//! The tracker runs where rows enter eddy, once: in a Kafka or generator source's thread,
//! or in the dataflow runtime for tables and streams written with INSERT. What it lets
//! through and the watermark it reaches are what the input log records, so a replay
//! after a crash sees the same rows and the same watermarks without running it again;
//! its state ([`WatermarkState`]) is committed with every epoch it feeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use serde::{Deserialize, Serialize};

use super::ChangeBatch;
use crate::error::{Error, Result};

/// The idle timeout when a relation does not set `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `WATERMARK FOR` declared, as the catalog stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatermarkDef {
    /// The event-time column.
    pub column: String,
    /// The allowed lateness, in microseconds.
    pub lateness_us: i64,
    /// After this long without rows a partition stops holding the watermark back
    /// (`None`: never).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

/// A source's watermark and late-row count, as the dataflow runtime knows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTime {
    /// Microseconds since 1970; `None` until the source has one.
    pub watermark: Option<i64>,
    pub late_rows: u64,
}

/// How a watermarked relation is installed in the runtime.
#[derive(Clone, Debug)]
pub struct WatermarkInstall {
    pub def: WatermarkDef,
    /// Index of the event-time column.
    pub column: usize,
    /// Written with INSERT: the runtime tracks its watermark. Otherwise a source
    /// thread does, and sends the result with its writes.
    pub embedded: bool,
}

/// What a tracker has seen: committed with every epoch it feeds, so a restart resumes
/// exactly where the last applied rows left it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatermarkState {
    /// The largest event time seen per partition (microseconds since 1970).
    pub partitions: BTreeMap<i32, i64>,
    /// The watermark (microseconds since 1970); `None` until it can be computed.
    pub watermark: Option<i64>,
    /// Rows dropped because they arrived below the watermark.
    pub late_rows: u64,
}

impl WatermarkState {
    pub fn max_event_time(&self) -> Option<i64> {
        self.partitions.values().copied().max()
    }
}

/// Tracks one source's watermark and drops its late rows.
pub struct WatermarkTracker {
    /// Index of the event-time column in the rows.
    column: usize,
    lateness_us: i64,
    idle_timeout: Option<Duration>,
    state: WatermarkState,
    /// Partitions the source reads (they hold the watermark back until they send a row
    /// or go idle).
    known: BTreeSet<i32>,
    /// When each partition last sent a row (since this process started).
    last_seen: HashMap<i32, Instant>,
    started: Instant,
    /// When idleness last moved the watermark (each move costs its source an epoch:
    /// at most one a second).
    last_idle_advance: Option<Instant>,
}

/// Least time between two idleness advances of one source.
const IDLE_ADVANCE_EVERY: Duration = Duration::from_secs(1);

impl WatermarkTracker {
    pub fn new(def: &WatermarkDef, column: usize, state: WatermarkState) -> Self {
        Self {
            column,
            lateness_us: def.lateness_us,
            idle_timeout: def.idle_timeout_ms.map(Duration::from_millis),
            state,
            known: BTreeSet::new(),
            last_seen: HashMap::new(),
            started: Instant::now(),
            last_idle_advance: None,
        }
    }

    pub fn state(&self) -> &WatermarkState {
        &self.state
    }

    /// Go back to `state` (rows it let through were not applied after all).
    pub fn reset(&mut self, state: WatermarkState) {
        self.state = state;
    }

    /// The watermark and late rows, as the runtime is told them.
    pub fn time(&self) -> SourceTime {
        SourceTime {
            watermark: self.state.watermark,
            late_rows: self.state.late_rows,
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.state.watermark
    }

    /// The partitions the source reads: each holds the watermark back until it has
    /// sent a row or has been idle for the idle timeout.
    pub fn set_partitions(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.known.extend(partitions);
    }

    fn idle(&self, p: i32, now: Instant) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        let since = self.last_seen.get(&p).copied().unwrap_or(self.started);
        now.duration_since(since) >= timeout
    }

    /// The watermark the partitions allow now, ignoring idle ones (`None` when a busy
    /// partition has sent nothing yet, or every partition is idle).
    fn candidate(&self, idle: &BTreeSet<i32>) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut any = false;
        for p in self.known.iter().chain(self.state.partitions.keys()) {
            if idle.contains(p) {
                continue;
            }
            any = true;
            let max = *self.state.partitions.get(p)?;
            min = Some(min.map_or(max, |m| m.min(max)));
        }
        if !any {
            return None;
        }
        min.map(|m| m.saturating_sub(self.lateness_us))
    }

    fn advance(&mut self, to: Option<i64>) -> bool {
        match to {
            Some(w) if self.state.watermark.is_none_or(|old| w > old) => {
                self.state.watermark = Some(w);
                true
            }
            _ => false,
        }
    }

    /// Drop the late rows of a batch (in arrival order, the watermark rising as rows
    /// come), updating the watermark. `partition(i)` is row `i`'s partition.
    /// Retractions (an upsert table's deletes) are never late.
    pub fn filter(
        &mut self,
        batch: ChangeBatch,
        partition: impl Fn(usize) -> i32,
    ) -> Result<ChangeBatch> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let ts = micros(batch.data.column(self.column))?;
        let now = Instant::now();
        let mut idle: BTreeSet<i32> = self
            .known
            .iter()
            .chain(self.state.partitions.keys())
            .copied()
            .filter(|p| self.idle(*p, now))
            .collect();
        let mut keep: Vec<bool> = Vec::with_capacity(batch.num_rows());
        let mut late = 0u64;
        // Rows of one partition usually come together: note a partition as seen once
        // per run of its rows, not per row.
        let mut last_partition: Option<i32> = None;
        let diffs = batch.diffs.values();
        for (i, diff) in diffs.iter().enumerate() {
            let Some(t) = ts[i].filter(|_| *diff > 0) else {
                keep.push(true);
                continue;
            };
            if self.state.watermark.is_some_and(|w| t < w) {
                keep.push(false);
                late += 1;
                continue;
            }
            keep.push(true);
            let p = partition(i);
            if last_partition != Some(p) {
                idle.remove(&p);
                self.last_seen.insert(p, now);
                last_partition = Some(p);
            }
            let max = self.state.partitions.entry(p).or_insert(t);
            if t > *max || self.state.watermark.is_none() {
                *max = (*max).max(t);
                let c = self.candidate(&idle);
                self.advance(c);
            }
        }
        if late == 0 {
            return Ok(batch);
        }
        self.state.late_rows += late;
        let mask = BooleanArray::from(keep.clone());
        let data = filter_record_batch(&batch.data, &mask)?;
        // A generated batch stays regenerable: its tag now lists the rows kept.
        let data = super::stream::retag_filtered(&batch.data, &keep, data)?;
        let diffs = datafusion::arrow::compute::filter(&batch.diffs, &mask)?;
        Ok(ChangeBatch::new(
            data,
            diffs.as_primitive::<Int64Type>().clone(),
        ))
    }

    /// Advance the watermark for idleness (called now and then, between batches):
    /// idle partitions stop holding it back, and when every partition is idle it
    /// moves on with the wall clock from the largest event time seen. Returns the new
    /// watermark when it moved.
    pub fn idle_tick(&mut self) -> Option<i64> {
        let timeout = self.idle_timeout?;
        let now = Instant::now();
        if self
            .last_idle_advance
            .is_some_and(|t| now.duration_since(t) < IDLE_ADVANCE_EVERY)
        {
            return None;
        }
        let parts: BTreeSet<i32> = self
            .known
            .iter()
            .chain(self.state.partitions.keys())
            .copied()
            .collect();
        let idle: BTreeSet<i32> = parts
            .iter()
            .copied()
            .filter(|p| self.idle(*p, now))
            .collect();
        let to = if idle.len() < parts.len() {
            self.candidate(&idle)
        } else {
            // Everything is quiet: time passes as it does on the wall clock since the
            // last row (or since this process started).
            let last = self
                .last_seen
                .values()
                .max()
                .copied()
                .unwrap_or(self.started);
            let quiet = now.duration_since(last).saturating_sub(timeout);
            self.state.max_event_time().map(|m| {
                m.saturating_sub(self.lateness_us)
                    .saturating_add(quiet.as_micros() as i64)
            })
        };
        if !self.advance(to) {
            return None;
        }
        self.last_idle_advance = Some(now);
        self.state.watermark
    }
}

/// A timestamp column (any unit, any time zone) as microseconds since 1970, `None` for
/// NULL: how every event-time operator reads times. Other types are an internal error
/// (the planner only hands timestamps to them).
pub fn micros(column: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let as_micros = match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => column.clone(),
        DataType::Timestamp(_, _) => {
            cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?
        }
        other => {
            return Err(Error::internal(format!(
                "an event-time column has type {other}, not a timestamp"
            )))
        }
    };
    let t = as_micros.as_primitive::<TimestampMicrosecondType>();
    Ok((0..t.len())
        .map(|i| (!t.is_null(i)).then(|| t.value(i)))
        .collect())
}

/// Parse a lateness or timeout given as an interval (`'5 seconds'`, `'1 minute'`,
/// `'250 ms'`, `'00:00:05'`); `never`/`off` gives `None`.
pub fn parse_duration(s: &str) -> Result<Option<Duration>> {
    let t = s.trim().to_lowercase();
    if t == "never" || t == "off" || t == "none" {
        return Ok(None);
    }
    let bad = || {
        Error::invalid_with(
            "22007",
            format!("invalid duration \"{s}\": write it like '10 seconds', '500 ms' or 'never'"),
        )
    };
    let mut total = 0f64;
    let mut words = t.split_whitespace().peekable();
    if words.peek().is_none() {
        return Err(bad());
    }
    while let Some(w) = words.next() {
        // "5s", "5 s", "5 seconds"
        let split = w
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(w.len());
        let (num, unit) = w.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit = if unit.is_empty() {
            words.next().unwrap_or("seconds").to_string()
        } else {
            unit.to_string()
        };
        let scale = match unit.trim_end_matches(',') {
            "us" | "microsecond" | "microseconds" => 1e-6,
            "ms" | "millisecond" | "milliseconds" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return Err(bad()),
        };
        total += n * scale;
    }
    if !total.is_finite() || total < 0.0 {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs_f64(total)))
}

/// Render a watermark (microseconds since 1970) as a timestamp text.
pub fn format_micros(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
        .unwrap_or_else(|| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn def(lateness_s: i64, idle: Option<u64>) -> WatermarkDef {
        WatermarkDef {
            column: "ts".into(),
            lateness_us: lateness_s * 1_000_000,
            idle_timeout_ms: idle,
        }
    }

    fn batch(ts: &[Option<i64>], diffs: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]));
        let secs: Vec<Option<i64>> = ts.iter().map(|t| t.map(|s| s * 1_000_000)).collect();
        let data = RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMicrosecondArray::from(secs))],
        )
        .unwrap();
        ChangeBatch::new(data, Int64Array::from(diffs.to_vec()))
    }

    fn seconds(b: &ChangeBatch) -> Vec<Option<i64>> {
        let ts = b.data.column(0).as_primitive::<TimestampMicrosecondType>();
        (0..ts.len())
            .map(|i| (!ts.is_null(i)).then(|| ts.value(i) / 1_000_000))
            .collect()
    }

    #[test]
    fn rows_below_the_running_watermark_are_late() {
        let mut t = WatermarkTracker::new(&def(5, None), 0, WatermarkState::default());
        // max 100 -> wm 95; 94 is late, 96 is not; 110 -> wm 105; 104 late.
        let out = t
            .filter(
                batch(
                    &[Some(100), Some(94), Some(96), Some(110), Some(104), None],
                    &[1; 6],
                ),
                |_| 0,
            )
            .unwrap();
        assert_eq!(seconds(&out), vec![Some(100), Some(96), Some(110), None]);
        assert_eq!(t.watermark(), Some(105_000_000));
        assert_eq!(t.state().late_rows, 2);
        // A later batch continues from there; the watermark never goes back.
        let out = t
            .filter(batch(&[Some(105), Some(50)], &[1, 1]), |_| 0)
            .unwrap();
        assert_eq!(seconds(&out), vec![Some(105)]);
        assert_eq!(t.watermark(), Some(105_000_000));
        assert_eq!(t.state().late_rows, 3);
    }

    #[test]
    fn retractions_are_never_late() {
        let mut t = WatermarkTracker::new(&def(0, None), 0, WatermarkState::default());
        let out = t
            .filter(batch(&[Some(100), Some(1), Some(2)], &[1, -1, 1]), |_| 0)
            .unwrap();
        assert_eq!(seconds(&out), vec![Some(100), Some(1)]);
        assert_eq!(out.diffs.values().to_vec(), vec![1, -1]);
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let mut t = WatermarkTracker::new(&def(0, None), 0, WatermarkState::default());
        t.set_partitions([0, 1]);
        // Partition 1 has sent nothing: no watermark yet, nothing is late.
        let out = t
            .filter(batch(&[Some(100), Some(10)], &[1, 1]), |_| 0)
            .unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(t.watermark(), None);
        // Partition 1 at 50: watermark = min(100, 50) = 50; then a row of 40 on
        // partition 0 is late.
        let parts = [1, 0];
        let out = t
            .filter(batch(&[Some(50), Some(40)], &[1, 1]), |i| parts[i])
            .unwrap();
        assert_eq!(seconds(&out), vec![Some(50)]);
        assert_eq!(t.watermark(), Some(50_000_000));
        assert_eq!(t.state().partitions.get(&0), Some(&100_000_000));
    }

    #[test]
    fn idle_partitions_stop_holding_it_back_and_quiet_sources_follow_the_clock() {
        let mut t = WatermarkTracker::new(&def(0, Some(30)), 0, WatermarkState::default());
        t.set_partitions([0, 1]);
        t.filter(batch(&[Some(100)], &[1]), |_| 0).unwrap();
        assert_eq!(t.watermark(), None);
        std::thread::sleep(Duration::from_millis(50));
        // Partition 1 never sent anything and is idle; partition 0 too by now, so the
        // watermark is the last event time plus the quiet time after the timeout.
        let w = t.idle_tick().expect("advanced");
        assert!(w >= 100_000_000, "{w}");
        assert!(w < 101_000_000, "{w}");
        // At most one advance a second (each costs the source an epoch).
        assert_eq!(t.idle_tick(), None);
        std::thread::sleep(IDLE_ADVANCE_EVERY);
        let later = t.idle_tick().expect("keeps advancing");
        assert!(later > w);
    }

    #[test]
    fn no_idle_timeout_means_no_clock_advance() {
        let mut t = WatermarkTracker::new(&def(0, None), 0, WatermarkState::default());
        t.filter(batch(&[Some(100)], &[1]), |_| 0).unwrap();
        assert_eq!(t.idle_tick(), None);
        assert_eq!(t.watermark(), Some(100_000_000));
    }

    #[test]
    fn state_survives_a_restart() {
        let mut t = WatermarkTracker::new(&def(5, None), 0, WatermarkState::default());
        t.filter(batch(&[Some(100), Some(1)], &[1, 1]), |_| 0)
            .unwrap();
        let saved = serde_json::to_vec(t.state()).unwrap();
        let mut t2 =
            WatermarkTracker::new(&def(5, None), 0, serde_json::from_slice(&saved).unwrap());
        let out = t2
            .filter(batch(&[Some(94), Some(95)], &[1, 1]), |_| 0)
            .unwrap();
        assert_eq!(seconds(&out), vec![Some(95)]);
        assert_eq!(t2.state().late_rows, 2);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("5 seconds").unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_duration("250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("1 minute").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_duration("never").unwrap(), None);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }
}
