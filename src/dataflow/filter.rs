//! [`FilterOperator`]: keeps the changes whose row satisfies a predicate (WHERE, HAVING).
//! Stateless: a retraction passes exactly when its insertion did.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::expr::{evaluate_predicate, EvalErrors};
use super::{ChangeBatch, Operator, Output};
use crate::error::Result;

pub struct FilterOperator {
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    display: String,
    errors: Arc<EvalErrors>,
}

impl FilterOperator {
    pub fn new(
        schema: SchemaRef,
        predicate: Arc<dyn PhysicalExpr>,
        display: String,
        errors: Arc<EvalErrors>,
    ) -> Self {
        Self {
            schema,
            predicate,
            display,
            errors,
        }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &'static str {
        "FilterOperator"
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

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        let mask = evaluate_predicate(&self.predicate, &batch.data, &self.errors)?;
        let kept = batch.filter(&mask)?;
        if !kept.is_empty() {
            out.push(kept);
        }
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
    fn filter_passes_insertions_and_retractions_alike() {
        let s = schema(&[("k", I64), ("v", I64)]);
        let pred = binary(col("v", &s).unwrap(), Op::Gt, lit(10i64), &s).unwrap();
        let mut op = FilterOperator::new(s.clone(), pred, "v > 10".into(), EvalErrors::new());
        let out = run_epoch(
            &mut op,
            vec![(0, changes(&s, "1 5 +1\n2 20 +1\n3 30 -1\n4 NULL +1"))],
        );
        assert_eq!(out, vec!["2 20 +1", "3 30 -1"]);
    }
}
