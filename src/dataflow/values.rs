//! [`ValuesOperator`]: a constant relation (`SELECT 1`, `VALUES (...)`). It has no
//! input; its rows reach the operators above it once, when the view is created.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::{ChangeBatch, Operator, Output};
use crate::error::Result;

pub struct ValuesOperator {
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
}

impl ValuesOperator {
    pub fn new(schema: SchemaRef, rows: Vec<RecordBatch>) -> Self {
        Self { schema, rows }
    }
}

impl Operator for ValuesOperator {
    fn name(&self) -> &'static str {
        "ValuesOperator"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        let n: usize = self.rows.iter().map(|b| b.num_rows()).sum();
        format!("{n} row(s)")
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: usize, _batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    fn contents(&self) -> Option<Result<Vec<ChangeBatch>>> {
        Some(Ok(self
            .rows
            .iter()
            .cloned()
            .map(ChangeBatch::inserts)
            .collect()))
    }
}
