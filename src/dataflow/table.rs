//! [`TableOperator`]: the rows of an embedded table, keyed by primary key (or a
//! multiset of rows when the table has none). Input is already-validated changes from
//! DML; output is the same changes, for the views that read the table.
//!
//! An upsert table (a changelog from Kafka) takes *upserts* instead: a +1 row replaces
//! whatever row has its key (the operator emits −old +new), a −1 row is a tombstone that
//! deletes the key (only its key columns matter). Keys that are not there and upserts
//! that change nothing emit nothing, so downstream views only ever see real changes.

use datafusion::arrow::datatypes::SchemaRef;

use super::row_store::RowStore;
use super::snapshot::RelationSnapshot;
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::Result;

pub struct TableOperator {
    name: String,
    store: RowStore,
    upsert: bool,
}

impl TableOperator {
    pub fn new(name: &str, schema: SchemaRef, primary_key: Option<Vec<usize>>) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            store: RowStore::new(schema, primary_key)?,
            upsert: false,
        })
    }

    /// A table fed by upserts and tombstones (needs a primary key).
    pub fn upsert(name: &str, schema: SchemaRef, primary_key: Vec<usize>) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            store: RowStore::new(schema, Some(primary_key))?,
            upsert: true,
        })
    }

    /// Turn upserts into changes against the current contents, applying them.
    fn apply_upserts(&mut self, batch: &ChangeBatch) -> Result<ChangeBatch> {
        let (keys, rows) = self.store.encode(&batch.data);
        let mut changes: Vec<(bytes::Bytes, i64)> = vec![];
        for ((key, row), diff) in keys.into_iter().zip(rows).zip(batch.diffs.values().iter()) {
            let old = self.store.get(&key).map(|s| s.row.clone());
            if *diff > 0 && old.as_ref() == Some(&row) {
                continue;
            }
            if let Some(old) = old {
                self.store.apply(key.clone(), old.clone(), -1)?;
                changes.push((old, -1));
            }
            if *diff > 0 {
                self.store.apply(key, row.clone(), 1)?;
                changes.push((row, 1));
            }
        }
        self.store.decode(&changes)
    }
}

impl Operator for TableOperator {
    fn name(&self) -> &'static str {
        "TableOperator"
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn state_description(&self) -> Option<String> {
        Some(if self.upsert {
            "rows by primary key (upserts)".into()
        } else if self.store.key_codec().is_some() {
            "rows by primary key".into()
        } else {
            "rows with counts".into()
        })
    }

    fn output_schema(&self) -> SchemaRef {
        self.store.schema().clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        if self.upsert {
            let changes = self.apply_upserts(&batch)?;
            if !changes.is_empty() {
                out.push(changes);
            }
            return Ok(());
        }
        self.store.apply_batch(&batch)?;
        out.push(batch);
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
    fn table_applies_updates_and_deletes_by_key() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let mut op = TableOperator::new("t", schema.clone(), Some(vec![0])).unwrap();
        let mut out = vec![];
        op.process(0, changes(&schema, "1 a +1\n2 b +1"), &mut out)
            .unwrap();
        op.process(0, changes(&schema, "1 a -1\n1 z +1\n2 b -1"), &mut out)
            .unwrap();
        assert_eq!(contents(&op), vec!["1 z +1"]);
        // Output is the input, unchanged: views downstream see every change.
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn upsert_table_replaces_and_deletes_by_key() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let mut op = TableOperator::upsert("t", schema.clone(), vec![0]).unwrap();
        let mut out = vec![];
        // Two upserts of key 1 in one batch: the second replaces the first.
        op.process(0, changes(&schema, "1 a +1\n2 b +1\n1 c +1"), &mut out)
            .unwrap();
        assert_eq!(contents(&op), vec!["1 c +1", "2 b +1"]);
        let first = ChangeBatch::concat(&schema, &out).unwrap();
        assert_eq!(
            first.to_sorted_strings(),
            vec!["1 a +1", "1 a -1", "1 c +1", "2 b +1"]
        );
        out.clear();
        // A tombstone (only the key matters), an unchanged upsert, a tombstone for a
        // key that is not there.
        op.process(
            0,
            changes(&schema, "2 NULL -1\n1 c +1\n9 NULL -1"),
            &mut out,
        )
        .unwrap();
        assert_eq!(contents(&op), vec!["1 c +1"]);
        let second = ChangeBatch::concat(&schema, &out).unwrap();
        assert_eq!(second.to_sorted_strings(), vec!["2 b -1"]);
    }

    #[test]
    fn table_without_key_is_a_multiset() {
        let schema = schema(&[("k", I64)]);
        let mut op = TableOperator::new("t", schema.clone(), None).unwrap();
        let mut out = vec![];
        op.process(0, changes(&schema, "1 +1\n1 +1\n2 +1"), &mut out)
            .unwrap();
        op.process(0, changes(&schema, "1 -1"), &mut out).unwrap();
        assert_eq!(contents(&op), vec!["1 +1", "2 +1"]);
    }

    #[test]
    fn table_state_survives_checkpoint_and_restore() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage = crate::storage::MemoryStorage::new();
        let mut op = TableOperator::new("t", schema.clone(), Some(vec![0])).unwrap();
        let mut out = vec![];
        op.process(0, changes(&schema, "1 a +1\n2 b +1\n3 c +1"), &mut out)
            .unwrap();
        checkpoint(&mut op, &storage, 1);
        op.process(0, changes(&schema, "2 b -1"), &mut out).unwrap();
        checkpoint(&mut op, &storage, 1);
        let mut restored = TableOperator::new("t", schema.clone(), Some(vec![0])).unwrap();
        restored.restore(&StateReader::new(1, &storage)).unwrap();
        assert_eq!(contents(&restored), vec!["1 a +1", "3 c +1"]);
    }
}
