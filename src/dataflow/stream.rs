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
        }
    }

    fn append(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        match self.batches.back() {
            Some(last) if last.num_rows() + batch.num_rows() <= COALESCE_ROWS => {
                let merged = concat_batches(&self.schema, [last, &batch])?;
                self.batches.pop_back();
                self.batches.push_back(merged);
            }
            _ => self.batches.push_back(batch),
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
        if batch.diffs.values().iter().any(|d| *d != 1) {
            return Err(Error::internal(format!(
                "stream {} received a retraction; streams are append-only",
                self.name
            )));
        }
        if batch.is_empty() {
            return Ok(());
        }
        // The rows take this relation's column names (a view's input names its columns
        // as DataFusion does).
        let data = RecordBatch::try_new(self.schema.clone(), batch.data.columns().to_vec())?;
        self.unsaved.push(data.clone());
        self.append(data.clone())?;
        out.push(ChangeBatch::new(data, batch.diffs));
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
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
            last_seq = Some(u64::from_be_bytes(seq));
            let reader = StreamReader::try_new(Cursor::new(v), None)?;
            for b in reader {
                loaded.push(b?);
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
    fn stream_rejects_retractions() {
        let schema = schema(&[("k", I64)]);
        let mut op = StreamOperator::new("s", schema.clone());
        assert!(op
            .process(0, changes(&schema, "1 -1"), &mut vec![])
            .is_err());
    }
}
