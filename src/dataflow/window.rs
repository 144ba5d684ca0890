//! [`WindowOperator`]: the last step of a windowed view — when its rows appear, and
//! when old windows leave.
//!
//! - `EMIT ON WINDOW CLOSE`: the changes of a window are held back until the watermark
//!   passes its `window_end`, then released consolidated (one final row per group),
//!   and never changed again: changes that arrive for a closed window are dropped and
//!   counted as late.
//! - `retention`: a window whose end is more than the retention below the watermark is
//!   removed from the view (its rows are retracted), so a view over an unbounded stream
//!   stays bounded.
//!
//! Rows whose `window_end` is NULL (events without an event time) belong to no window:
//! they pass straight through.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::datatypes::SchemaRef;

use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::rowcodec::RowCodec;

pub struct WindowOperator {
    schema: SchemaRef,
    /// Index of `window_end` in the rows.
    end_col: usize,
    on_close: bool,
    retention_us: Option<i64>,
    /// EMIT ON WINDOW CLOSE: changes of windows still open, by window end.
    pending: BTreeMap<i64, Vec<ChangeBatch>>,
    /// With a retention: the rows each window has in the view, by window end.
    emitted: BTreeMap<i64, Vec<ChangeBatch>>,
    /// Windows ending at or below this have closed.
    closed_upto: Option<i64>,
    late: u64,
    /// Window ends whose held rows changed since the last checkpoint.
    dirty: BTreeSet<(u8, i64)>,
    codec: RowCodec,
}

const PENDING: u8 = 0;
const EMITTED: u8 = 1;

impl WindowOperator {
    pub fn new(
        schema: SchemaRef,
        end_col: usize,
        on_close: bool,
        retention_us: Option<i64>,
    ) -> Result<Self> {
        let codec = RowCodec::new(
            schema
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect(),
        )?;
        Ok(Self {
            schema,
            end_col,
            on_close,
            retention_us,
            pending: BTreeMap::new(),
            emitted: BTreeMap::new(),
            closed_upto: None,
            late: 0,
            dirty: BTreeSet::new(),
            codec,
        })
    }

    /// Split a batch by window end (`None`: rows without one).
    fn by_window(&self, batch: &ChangeBatch) -> Result<Vec<(Option<i64>, ChangeBatch)>> {
        let ends = super::watermark::micros(batch.data.column(self.end_col))?;
        let mut groups: BTreeMap<Option<i64>, Vec<u32>> = BTreeMap::new();
        for (i, e) in ends.into_iter().enumerate() {
            groups.entry(e).or_default().push(i as u32);
        }
        if groups.len() == 1 {
            let (e, _) = groups
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal("empty"))?;
            return Ok(vec![(e, batch.clone())]);
        }
        groups
            .into_iter()
            .map(|(e, idx)| Ok((e, batch.take(&UInt32Array::from(idx))?)))
            .collect()
    }

    /// Net changes of `batches`: rows whose multiplicities cancel disappear.
    fn consolidate(&self, batches: &[ChangeBatch]) -> Result<Option<ChangeBatch>> {
        let all = ChangeBatch::concat(&self.schema, batches)?;
        let n = all.num_rows();
        let rows = self.codec.encode_rows(all.columns(), n);
        let mut net: HashMap<Bytes, (u32, i64)> = HashMap::new();
        for (i, r) in rows.into_iter().enumerate() {
            let e = net.entry(Bytes::from(r)).or_insert((i as u32, 0));
            e.1 += all.diff(i);
        }
        let mut keep: Vec<(u32, i64)> = net.into_values().filter(|(_, d)| *d != 0).collect();
        if keep.is_empty() {
            return Ok(None);
        }
        keep.sort_unstable();
        let taken = all.take(&UInt32Array::from(
            keep.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        ))?;
        Ok(Some(ChangeBatch::new(
            taken.data,
            Int64Array::from(keep.iter().map(|(_, d)| *d).collect::<Vec<_>>()),
        )))
    }

    fn remember(&mut self, end: i64, batch: ChangeBatch) {
        if self.retention_us.is_some() {
            self.emitted.entry(end).or_default().push(batch);
            self.dirty.insert((EMITTED, end));
        }
    }
}

impl Operator for WindowOperator {
    fn name(&self) -> &'static str {
        "WindowOperator"
    }

    fn describe(&self) -> String {
        let mut parts = vec![];
        if self.on_close {
            parts.push("emit on window close".to_string());
        }
        if let Some(r) = self.retention_us {
            parts.push(format!("retention {} s", r as f64 / 1e6));
        }
        parts.join(", ")
    }

    fn state_description(&self) -> Option<String> {
        Some("rows of open windows (and of retained windows, with a retention)".into())
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn wants_watermark(&self) -> bool {
        true
    }

    fn late_rows(&self) -> u64 {
        self.late
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.with_schema(self.schema.clone())?;
        for (end, part) in self.by_window(&batch)? {
            let Some(end) = end else {
                out.push(part);
                continue;
            };
            let closed = self.closed_upto.is_some_and(|c| end <= c);
            if self.on_close {
                if closed {
                    self.late += part.num_rows() as u64;
                    continue;
                }
                self.pending.entry(end).or_default().push(part);
                self.dirty.insert((PENDING, end));
            } else {
                out.push(part.clone());
                self.remember(end, part);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        self.closed_upto = Some(self.closed_upto.map_or(watermark, |c| c.max(watermark)));
        if self.on_close {
            let still_open = self.pending.split_off(&(watermark + 1));
            let closed = std::mem::replace(&mut self.pending, still_open);
            for (end, batches) in closed {
                self.dirty.insert((PENDING, end));
                if let Some(rows) = self.consolidate(&batches)? {
                    out.push(rows.clone());
                    self.remember(end, rows);
                }
            }
        }
        if let Some(r) = self.retention_us {
            let keep = self.emitted.split_off(&(watermark.saturating_sub(r)));
            let expired = std::mem::replace(&mut self.emitted, keep);
            for (end, batches) in expired {
                self.dirty.insert((EMITTED, end));
                if let Some(rows) = self.consolidate(&batches)? {
                    out.push(rows.negate());
                }
            }
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        for (kind, end) in std::mem::take(&mut self.dirty) {
            let mut key = vec![kind];
            key.extend_from_slice(&end.to_be_bytes());
            let held = if kind == PENDING {
                self.pending.get(&end)
            } else {
                self.emitted.get(&end)
            };
            let Some(batches) = held.filter(|b| !b.is_empty()) else {
                state.delete(&key);
                continue;
            };
            // One consolidated batch per window, with its multiplicities as a column.
            let Some(rows) = self.consolidate(batches)? else {
                state.delete(&key);
                continue;
            };
            let mut buf = Vec::new();
            let encoded = super::input_log::encode(&[(0, rows)])?;
            buf.extend_from_slice(&encoded);
            state.put_vec(&key, buf);
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let mut loaded: Vec<(u8, i64, ChangeBatch)> = vec![];
        state.for_each(&mut |k, v| {
            let corrupt = || Error::Storage("corrupt window state key".into());
            if k.len() != 9 {
                return Err(corrupt());
            }
            let end = i64::from_be_bytes(k[1..].try_into().map_err(|_| corrupt())?);
            for (_, b) in super::input_log::decode(v)? {
                loaded.push((k[0], end, b));
            }
            Ok(())
        })?;
        for (kind, end, b) in loaded {
            let b = b.with_schema(self.schema.clone())?;
            if kind == PENDING {
                self.pending.entry(end).or_default().push(b);
            } else {
                self.emitted.entry(end).or_default().push(b);
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.pending
            .values()
            .chain(self.emitted.values())
            .flatten()
            .map(|b| b.num_rows())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;

    fn op(on_close: bool, retention: Option<i64>) -> WindowOperator {
        let s = schema(&[("k", I64), ("window_end", TS), ("n", I64)]);
        WindowOperator::new(s, 1, on_close, retention.map(|r| r * 1_000_000)).unwrap()
    }

    fn input(op: &WindowOperator, text: &str) -> ChangeBatch {
        changes(&op.schema, text)
    }

    fn watermark(op: &mut WindowOperator, w: i64) -> Vec<String> {
        let mut out = vec![];
        op.on_watermark(w * 1_000_000, &mut out).unwrap();
        consolidate(&out)
    }

    #[test]
    fn on_close_holds_changes_until_the_watermark_passes_the_end() {
        let mut w = op(true, None);
        // Window ending at 60: a row, then its update (-old +new); window 120 too.
        let b = input(&w, "1 60 1 +1\n1 120 1 +1");
        assert!(run_epoch(&mut w, vec![(0, b)]).is_empty());
        let b = input(&w, "1 60 1 -1\n1 60 2 +1");
        assert!(run_epoch(&mut w, vec![(0, b)]).is_empty());
        // Watermark 59: nothing closes. 60: the window ending at 60 closes, final row.
        assert!(watermark(&mut w, 59).is_empty());
        assert_eq!(watermark(&mut w, 60), vec![format!("1 {} 2 +1", ts(60))]);
        // A change for the closed window is late: dropped, counted.
        let b = input(&w, "1 60 2 -1\n1 60 3 +1");
        assert!(run_epoch(&mut w, vec![(0, b)]).is_empty());
        assert_eq!(w.late_rows(), 2);
        // A window whose rows cancelled out emits nothing.
        let b = input(&w, "2 180 1 +1\n2 180 1 -1");
        run_epoch(&mut w, vec![(0, b)]);
        assert_eq!(watermark(&mut w, 1000), vec![format!("1 {} 1 +1", ts(120))]);
    }

    #[test]
    fn retention_retracts_old_windows() {
        let mut w = op(false, Some(100));
        let b = input(&w, "1 60 1 +1\n2 200 5 +1");
        // EMIT CHANGES: rows pass through at once.
        assert_eq!(
            run_epoch(&mut w, vec![(0, b)]),
            vec![format!("1 {} 1 +1", ts(60)), format!("2 {} 5 +1", ts(200))]
        );
        let b = input(&w, "1 60 1 -1\n1 60 4 +1");
        assert_eq!(
            run_epoch(&mut w, vec![(0, b)]),
            vec![format!("1 {} 1 -1", ts(60)), format!("1 {} 4 +1", ts(60))]
        );
        // Watermark 160: windows ending before 60 go; 60 stays (not strictly below).
        assert!(watermark(&mut w, 160).is_empty());
        assert_eq!(watermark(&mut w, 161), vec![format!("1 {} 4 -1", ts(60))]);
        assert_eq!(watermark(&mut w, 301), vec![format!("2 {} 5 -1", ts(200))]);
    }

    #[test]
    fn rows_without_a_window_pass_through() {
        let mut w = op(true, None);
        let b = input(&w, "1 NULL 1 +1");
        assert_eq!(
            run_epoch(&mut w, vec![(0, b)]),
            vec!["1 NULL 1 +1".to_string()]
        );
    }

    #[test]
    fn held_rows_survive_a_restart() {
        let storage = crate::storage::memory::MemoryStorage::new();
        let mut w = op(true, Some(1000));
        let b = input(&w, "1 60 1 +1\n1 120 7 +1");
        run_epoch(&mut w, vec![(0, b)]);
        assert_eq!(watermark(&mut w, 60), vec![format!("1 {} 1 +1", ts(60))]);
        checkpoint(&mut w, &storage, 1);
        let mut back = op(true, Some(1000));
        back.restore(&StateReader::new(1, &storage)).unwrap();
        assert_eq!(
            watermark(&mut back, 120),
            vec![format!("1 {} 7 +1", ts(120))]
        );
        assert_eq!(
            watermark(&mut back, 1061),
            vec![format!("1 {} 1 -1", ts(60))]
        );
    }
}
