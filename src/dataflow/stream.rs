//! [`StreamOperator`]: an append-only relation. It keeps its rows as Arrow batches (one
//! per epoch, small ones coalesced) and persists each epoch's rows as one Arrow IPC
//! value, so a stream costs one write per epoch rather than one per row.

use std::io::Cursor;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use super::snapshot::{RelationSnapshot, SnapshotData};
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};

/// Batches smaller than this are merged with their predecessor.
const COALESCE_ROWS: usize = 4096;

pub struct StreamOperator {
    name: String,
    schema: SchemaRef,
    batches: imbl::Vector<RecordBatch>,
    /// Rows appended since the last checkpoint.
    unsaved: Vec<RecordBatch>,
    next_seq: u64,
    rows: usize,
    /// `retention`: rows whose event time is this far below the watermark are
    /// forgotten (column index, microseconds).
    retention: Option<(usize, i64)>,
    /// With a retention: the largest event time of each batch (same order as
    /// `batches`), of the rows not yet saved, and of each saved chunk.
    batch_max: std::collections::VecDeque<i64>,
    unsaved_max: i64,
    saved: std::collections::VecDeque<(u64, i64)>,
    /// Saved chunks that expired, deleted at the next checkpoint.
    expired: Vec<u64>,
}

/// Which rows of `batch` have an event time at or above `cutoff` (µs), or none.
fn keep_from(
    batch: &RecordBatch,
    column: usize,
    cutoff: i64,
) -> Result<datafusion::arrow::array::BooleanArray> {
    Ok(super::watermark::micros(batch.column(column))?
        .into_iter()
        .map(|t| Some(t.is_none_or(|t| t >= cutoff)))
        .collect())
}

/// The largest event time in `column` of `batch` (µs; `i64::MIN` when none).
fn max_time(batch: &RecordBatch, column: usize) -> Result<i64> {
    Ok(super::watermark::micros(batch.column(column))?
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(i64::MIN))
}

impl StreamOperator {
    pub fn new(name: &str, schema: SchemaRef) -> Self {
        Self {
            name: name.to_string(),
            schema,
            batches: imbl::Vector::new(),
            unsaved: vec![],
            next_seq: 0,
            rows: 0,
            retention: None,
            batch_max: Default::default(),
            unsaved_max: i64::MIN,
            saved: Default::default(),
            expired: vec![],
        }
    }

    /// Forget rows whose event time (column `column`) is more than `retention_us`
    /// below the watermark. Pull queries and new views then see only the rest.
    pub fn with_retention(mut self, column: usize, retention_us: i64) -> Self {
        self.retention = Some((column, retention_us));
        self
    }

    fn append(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        let max = match self.retention {
            Some((c, _)) => max_time(&batch, c)?,
            None => i64::MIN,
        };
        match self.batches.back() {
            Some(last) if last.num_rows() + batch.num_rows() <= COALESCE_ROWS => {
                let merged = concat_batches(&self.schema, [last, &batch])?;
                self.batches.pop_back();
                self.batches.push_back(merged);
                if let Some(m) = self.batch_max.back_mut() {
                    *m = (*m).max(max);
                }
            }
            _ => {
                self.batches.push_back(batch);
                self.batch_max.push_back(max);
            }
        }
        Ok(())
    }
}

impl Operator for StreamOperator {
    fn name(&self) -> &'static str {
        "StreamOperator"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn state_description(&self) -> Option<String> {
        Some("append-only log of rows".into())
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        if batch.diffs.values().iter().any(|d| *d < 1) {
            return Err(Error::internal(format!(
                "stream {} received a retraction; streams are append-only",
                self.name
            )));
        }
        if batch.is_empty() {
            return Ok(());
        }
        // A row inserted n times at once (a join with duplicate partners) is n rows.
        let batch = if batch.diffs.values().iter().any(|d| *d > 1) {
            let idx: Vec<u32> = batch
                .diffs
                .values()
                .iter()
                .enumerate()
                .flat_map(|(i, d)| std::iter::repeat_n(i as u32, *d as usize))
                .collect();
            let expanded = batch.take(&datafusion::arrow::array::UInt32Array::from(idx))?;
            ChangeBatch::inserts(expanded.data)
        } else {
            batch
        };
        // The rows take this relation's column names (a view's input names its columns
        // as DataFusion does).
        let data = RecordBatch::try_new(self.schema.clone(), batch.data.columns().to_vec())?;
        if let Some((c, _)) = self.retention {
            self.unsaved_max = self.unsaved_max.max(max_time(&data, c)?);
        }
        self.unsaved.push(data.clone());
        self.append(data.clone())?;
        out.push(ChangeBatch::new(data, batch.diffs));
        Ok(())
    }

    fn wants_watermark(&self) -> bool {
        self.retention.is_some()
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Output) -> Result<()> {
        let Some((_, retention)) = self.retention else {
            return Ok(());
        };
        let cutoff = watermark.saturating_sub(retention);
        // Oldest batches first: a batch whose newest row is below the cutoff goes whole;
        // one with some rows below it keeps the others, and the walk stops at the first
        // batch with nothing to forget (rows arrive roughly in event-time order).
        while let (Some(max), Some((c, _))) = (self.batch_max.front().copied(), self.retention) {
            let Some(front) = self.batches.front().cloned() else {
                break;
            };
            if max < cutoff {
                self.batch_max.pop_front();
                self.batches.pop_front();
                self.rows -= front.num_rows();
                continue;
            }
            let keep = keep_from(&front, c, cutoff)?;
            if keep.true_count() == front.num_rows() {
                break;
            }
            let kept = datafusion::arrow::compute::filter_record_batch(&front, &keep)?;
            self.rows -= front.num_rows() - kept.num_rows();
            self.batches.pop_front();
            self.batches.push_front(kept);
            break;
        }
        while let Some((seq, _)) = self.saved.front().filter(|(_, m)| *m < cutoff) {
            self.expired.push(*seq);
            self.saved.pop_front();
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        for seq in self.expired.drain(..) {
            state.delete(&seq.to_be_bytes());
        }
        if self.unsaved.is_empty() {
            return Ok(());
        }
        // One IPC stream of all the batches since the last checkpoint, written into a
        // buffer sized up front (no copies on growth, no concatenation).
        let size: usize = self.unsaved.iter().map(|b| b.get_array_memory_size()).sum();
        let mut buf = Vec::with_capacity(size + 4096);
        {
            let mut w = StreamWriter::try_new(&mut buf, &self.schema)?;
            for b in &self.unsaved {
                w.write(b)?;
            }
            w.finish()?;
        }
        self.unsaved.clear();
        if self.retention.is_some() {
            self.saved.push_back((self.next_seq, self.unsaved_max));
            self.unsaved_max = i64::MIN;
        }
        state.put_vec(&self.next_seq.to_be_bytes(), buf);
        self.next_seq += 1;
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let mut loaded = vec![];
        let mut last_seq = None;
        state.for_each(&mut |k, v| {
            let seq: [u8; 8] = k
                .try_into()
                .map_err(|_| Error::Storage("corrupt stream key".into()))?;
            let seq = u64::from_be_bytes(seq);
            last_seq = Some(seq);
            let reader = StreamReader::try_new(Cursor::new(v), None)?;
            let mut max = i64::MIN;
            for b in reader {
                let b = b?;
                if let Some((c, _)) = self.retention {
                    max = max.max(max_time(&b, c)?);
                }
                loaded.push(b);
            }
            if self.retention.is_some() {
                self.saved.push_back((seq, max));
            }
            Ok(())
        })?;
        for b in loaded {
            let b = b.with_schema(self.schema.clone())?;
            self.append(b)?;
        }
        self.next_seq = last_seq.map_or(0, |s| s + 1);
        Ok(())
    }

    fn contents(&self) -> Option<Result<Vec<ChangeBatch>>> {
        Some(Ok(self
            .batches
            .iter()
            .cloned()
            .map(ChangeBatch::inserts)
            .collect()))
    }

    fn snapshot(&self) -> Option<RelationSnapshot> {
        Some(RelationSnapshot::new(
            self.schema.clone(),
            SnapshotData::Batches(self.batches.clone()),
        ))
    }

    fn state_entries(&self) -> usize {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;

    #[test]
    fn stream_appends_and_restores_from_its_log() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage = crate::storage::MemoryStorage::new();
        let mut op = StreamOperator::new("s", schema.clone());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 a +1\n2 b +1"), &mut out)
            .unwrap();
        checkpoint(&mut op, &storage, 5);
        op.process(0, changes(&schema, "1 a +1"), &mut out).unwrap();
        checkpoint(&mut op, &storage, 5);
        assert_eq!(contents(&op), vec!["1 a +2", "2 b +1"]);
        let mut restored = StreamOperator::new("s", schema.clone());
        restored.restore(&StateReader::new(5, &storage)).unwrap();
        assert_eq!(contents(&restored), vec!["1 a +2", "2 b +1"]);
        // New appends after a restore do not overwrite old log entries.
        restored
            .process(0, changes(&schema, "3 c +1"), &mut out)
            .unwrap();
        checkpoint(&mut restored, &storage, 5);
        let mut again = StreamOperator::new("s", schema.clone());
        again.restore(&StateReader::new(5, &storage)).unwrap();
        assert_eq!(contents(&again), vec!["1 a +2", "2 b +1", "3 c +1"]);
    }

    #[test]
    fn retention_forgets_rows_below_the_watermark_in_memory_and_on_disk() {
        let schema = schema(&[("k", I64), ("ts", TS)]);
        let storage = crate::storage::MemoryStorage::new();
        let mut op = StreamOperator::new("s", schema.clone()).with_retention(1, 10_000_000);
        assert!(op.wants_watermark());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 5 +1\n2 8 +1"), &mut out)
            .unwrap();
        checkpoint(&mut op, &storage, 5);
        // Enough rows for a batch of its own (small batches are merged).
        let many: String = (0..COALESCE_ROWS).map(|i| format!("{i} 50 +1\n")).collect();
        op.process(0, changes(&schema, &many), &mut out).unwrap();
        checkpoint(&mut op, &storage, 5);
        assert_eq!(op.state_entries(), COALESCE_ROWS + 2);
        // Watermark 18 s, retention 10 s: rows before 8 s go (5 s), 8 s stays.
        op.on_watermark(18_000_000, &mut out).unwrap();
        assert_eq!(op.state_entries(), COALESCE_ROWS + 1);
        op.on_watermark(19_000_000, &mut out).unwrap();
        assert_eq!(op.state_entries(), COALESCE_ROWS);
        assert!(out.iter().all(|b| b.diffs.values().iter().all(|d| *d > 0)));
        checkpoint(&mut op, &storage, 5);
        let mut back = StreamOperator::new("s", schema.clone()).with_retention(1, 10_000_000);
        back.restore(&StateReader::new(5, &storage)).unwrap();
        assert_eq!(back.state_entries(), COALESCE_ROWS);
        back.on_watermark(61_000_000, &mut out).unwrap();
        assert_eq!(back.state_entries(), 0);
    }

    #[test]
    fn a_row_inserted_twice_at_once_is_two_rows() {
        let schema = schema(&[("k", I64)]);
        let mut op = StreamOperator::new("s", schema.clone());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 +2\n2 +1"), &mut out)
            .unwrap();
        assert_eq!(contents(&op), vec!["1 +2", "2 +1"]);
        assert_eq!(op.state_entries(), 3);
        assert!(out.iter().all(|b| b.diffs.values().iter().all(|d| *d == 1)));
    }

    #[test]
    fn stream_rejects_retractions() {
        let schema = schema(&[("k", I64)]);
        let mut op = StreamOperator::new("s", schema.clone());
        assert!(op
            .process(0, changes(&schema, "1 -1"), &mut vec![])
            .is_err());
    }
}
