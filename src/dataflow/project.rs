//! [`ProjectOperator`]: computes output columns from each change's row (SELECT list).
//! Stateless; multiplicities pass through unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::PhysicalExpr;

use super::expr::{evaluate, EvalErrors};
use super::{ChangeBatch, ColumnSet, Operator, Output};
use crate::error::Result;

pub struct ProjectOperator {
    schema: SchemaRef,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    display: String,
    errors: Arc<EvalErrors>,
}

impl ProjectOperator {
    pub fn new(
        schema: SchemaRef,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        display: String,
        errors: Arc<EvalErrors>,
    ) -> Self {
        Self {
            schema,
            exprs,
            display,
            errors,
        }
    }
}

impl Operator for ProjectOperator {
    fn name(&self) -> &'static str {
        "ProjectOperator"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.display.clone()
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn columns_read(&self, _port: usize) -> Option<ColumnSet> {
        Some(ColumnSet::of(self.exprs.iter().flat_map(|e| {
            collect_columns(e).into_iter().map(|c| c.index())
        })))
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let cols = self
            .exprs
            .iter()
            .map(|e| evaluate(e, &batch.data, &self.errors))
            .collect::<Result<Vec<_>>>()?;
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        out.push(ChangeBatch::new(data, batch.diffs));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[test]
    fn project_computes_columns_and_keeps_multiplicities() {
        let s = schema(&[("k", I64), ("v", I64)]);
        let out_s = schema(&[("k", I64), ("v2", I64)]);
        let exprs = vec![
            col("k", &s).unwrap(),
            binary(col("v", &s).unwrap(), Op::Multiply, lit(2i64), &s).unwrap(),
        ];
        let mut op = ProjectOperator::new(out_s, exprs, "".into(), EvalErrors::new());
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 5 +1\n2 7 -2"))]);
        assert_eq!(out, vec!["1 10 +1", "2 14 -2"]);
    }

    /// What a projection reads of its input: the columns its expressions use (a
    /// generated stream leaves out the others).
    #[test]
    fn a_projection_reads_the_columns_its_expressions_use() {
        let s = schema(&[("a", I64), ("b", I64), ("c", I64), ("d", I64)]);
        let out_s = schema(&[("x", I64), ("y", I64)]);
        let exprs = vec![
            col("c", &s).unwrap(),
            binary(col("a", &s).unwrap(), Op::Plus, col("c", &s).unwrap(), &s).unwrap(),
        ];
        let op = ProjectOperator::new(out_s, exprs, "".into(), EvalErrors::new());
        let read = op.columns_read(0).unwrap();
        assert_eq!(read, ColumnSet::of([0, 2]));
        assert!(!read.contains(1) && !read.contains(3));
        // Columns past the mask's width always count as read.
        assert!(read.contains(64));
    }

    #[test]
    fn failing_rows_become_null_and_are_counted() {
        let s = schema(&[("k", I64), ("v", I64)]);
        let out_s = schema(&[("q", I64)]);
        let div = binary(lit(100i64), Op::Divide, col("v", &s).unwrap(), &s).unwrap();
        let errors = EvalErrors::new();
        let mut op = ProjectOperator::new(out_s, vec![div], "".into(), errors.clone());
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 5 +1\n2 0 +1\n3 10 +1"))]);
        assert_eq!(out, vec!["10 +1", "20 +1", "NULL +1"]);
        assert_eq!(errors.count(), 1);
        assert_eq!(errors.last().as_deref(), Some("division by zero"));
    }
}
