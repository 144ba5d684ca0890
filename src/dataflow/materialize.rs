//! [`MaterializeOperator`]: the contents of a materialized view, kept as a multiset of
//! rows. It consolidates each epoch's changes (a row inserted and deleted within one
//! epoch leaves no trace) and emits the net changes for views and subscribers that read
//! this view.

use hashbrown::HashMap;

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;

use super::row_store::RowStore;
use super::snapshot::RelationSnapshot;
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};

pub struct MaterializeOperator {
    name: String,
    store: RowStore,
    /// Rows touched in the current epoch, with their count before the epoch.
    touched: HashMap<Bytes, (Bytes, i64)>,
}

impl MaterializeOperator {
    pub fn new(name: &str, schema: SchemaRef) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            store: RowStore::new(schema, None)?,
            touched: HashMap::new(),
        })
    }
}

impl Operator for MaterializeOperator {
    fn name(&self) -> &'static str {
        "MaterializeOperator"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn state_description(&self) -> Option<String> {
        Some("view rows with counts".into())
    }

    fn output_schema(&self) -> SchemaRef {
        self.store.schema().clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        let (keys, rows) = self.store.encode(&batch.data);
        for ((k, r), d) in keys.into_iter().zip(rows).zip(batch.diffs.values().iter()) {
            let old = self.store.apply(k.clone(), r.clone(), *d)?;
            self.touched.entry(k).or_insert((r, old));
        }
        Ok(())
    }

    fn end_epoch(&mut self, out: &mut Output) -> Result<()> {
        let mut net: Vec<(Bytes, i64)> = Vec::with_capacity(self.touched.len());
        for (key, (row, old)) in self.touched.drain() {
            let new = self.store.get(&key).map_or(0, |r| r.count);
            if new < 0 {
                return Err(Error::internal(format!(
                    "view {} would hold a row {} times",
                    self.name, new
                )));
            }
            if new != old {
                net.push((row, new - old));
            }
        }
        if !net.is_empty() {
            // Retractions first: a subscriber applying changes in order never sees a
            // key twice.
            net.sort_by_key(|(_, d)| *d > 0);
            out.push(self.store.decode(&net)?);
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        self.store.checkpoint(state);
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        self.store.restore(state)
    }

    fn contents(&self) -> Option<Result<Vec<ChangeBatch>>> {
        Some(self.store.contents())
    }

    fn snapshot(&self) -> Option<RelationSnapshot> {
        Some(self.store.snapshot())
    }

    fn state_entries(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;

    #[test]
    fn materialize_consolidates_within_an_epoch() {
        let schema = schema(&[("k", I64)]);
        let mut op = MaterializeOperator::new("v", schema.clone()).unwrap();
        let out = run_epoch(
            &mut op,
            vec![(0, changes(&schema, "1 +1\n2 +1\n1 -1\n3 +2"))],
        );
        assert_eq!(out, vec!["2 +1", "3 +2"]);
        let out = run_epoch(&mut op, vec![(0, changes(&schema, "3 -1\n4 +1\n4 -1"))]);
        assert_eq!(out, vec!["3 -1"]);
        assert_eq!(contents(&op), vec!["2 +1", "3 +1"]);
    }

    #[test]
    fn materialize_rejects_negative_counts_at_epoch_end() {
        let schema = schema(&[("k", I64)]);
        let mut op = MaterializeOperator::new("v", schema.clone()).unwrap();
        let mut out = vec![];
        op.process(0, changes(&schema, "1 -1"), &mut out).unwrap();
        assert!(op.end_epoch(&mut out).is_err());
    }

    /// A view's row that comes and goes between two checkpoints writes nothing; one a
    /// checkpoint wrote is deleted by the next; the restored rows equal the live ones.
    #[test]
    fn rows_no_checkpoint_saw_leave_nothing_to_delete() {
        let written = |op: &mut MaterializeOperator| -> Vec<bool> {
            checkpoint_writes(op)
                .into_iter()
                .map(|(_, put)| put)
                .collect()
        };
        let schema = schema(&[("k", I64)]);
        let mut op = MaterializeOperator::new("v", schema.clone()).unwrap();
        run_epoch(&mut op, vec![(0, changes(&schema, "1 +1\n2 +1"))]);
        run_epoch(&mut op, vec![(0, changes(&schema, "2 -1"))]);
        assert_eq!(written(&mut op), vec![true], "only 1");
        run_epoch(&mut op, vec![(0, changes(&schema, "1 -1\n3 +1"))]);
        run_epoch(&mut op, vec![(0, changes(&schema, "3 -1\n1 +1\n1 -1"))]);
        assert_eq!(written(&mut op), vec![false], "1 deleted, 3 never written");
        assert!(written(&mut op).is_empty());
        // And through storage: what a restart reads back is the live contents.
        let storage = crate::storage::MemoryStorage::new();
        run_epoch(&mut op, vec![(0, changes(&schema, "5 +1\n6 +2"))]);
        checkpoint(&mut op, &storage, 3);
        run_epoch(
            &mut op,
            vec![(0, changes(&schema, "6 -1\n7 +1\n7 -1\n5 -1"))],
        );
        checkpoint(&mut op, &storage, 3);
        let mut back = MaterializeOperator::new("v", schema.clone()).unwrap();
        back.restore(&StateReader::new(3, &storage)).unwrap();
        assert_eq!(contents(&back), contents(&op));
        assert_eq!(contents(&back), vec!["6 +1"]);
    }
}
