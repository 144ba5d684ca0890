//! [`TableOperator`]: the rows of an embedded table, keyed by primary key (or a
//! multiset of rows when the table has none). Input is already-validated changes from
//! DML; output is the same changes, for the views that read the table.

use datafusion::arrow::datatypes::SchemaRef;

use super::row_store::RowStore;
use super::snapshot::RelationSnapshot;
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::Result;

pub struct TableOperator {
    name: String,
    store: RowStore,
}

impl TableOperator {
    pub fn new(name: &str, schema: SchemaRef, primary_key: Option<Vec<usize>>) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            store: RowStore::new(schema, primary_key)?,
        })
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
        Some(if self.store.key_codec().is_some() {
            "rows by primary key".into()
        } else {
            "rows with counts".into()
        })
    }

    fn output_schema(&self) -> SchemaRef {
        self.store.schema().clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
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
