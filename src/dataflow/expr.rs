//! Expression evaluation for operators, with the streaming error policy.
//!
//! A SQL expression that fails on one row (division by zero, a bad cast) must not stop a
//! view or lose the other rows of the batch. Operators evaluate through
//! [`evaluate`]: when DataFusion fails on a batch, the batch is retried row by row, the
//! rows that fail evaluate to NULL, and each failure is counted in the view's
//! [`EvalErrors`] (visible to users), as RisingWave does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::concat;
use datafusion::physical_plan::PhysicalExpr;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Evaluation errors of one view: how many, and the latest message.
#[derive(Debug, Default)]
pub struct EvalErrors {
    count: AtomicU64,
    last: Mutex<Option<String>>,
}

impl EvalErrors {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn record(&self, message: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.last.lock() = Some(message);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<String> {
        self.last.lock().clone()
    }
}

/// Evaluate `expr` over `batch` into an array of `batch.num_rows()` values.
pub fn evaluate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    errors: &EvalErrors,
) -> Result<ArrayRef> {
    match expr
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
    {
        Ok(a) => Ok(a),
        Err(e) if batch.num_rows() <= 1 => {
            let dt = expr.data_type(&batch.schema())?;
            errors.record(Error::from(e).to_string());
            Ok(new_null_array(&dt, batch.num_rows()))
        }
        Err(_) => {
            let dt = expr.data_type(&batch.schema())?;
            let mut parts: Vec<ArrayRef> = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let row = batch.slice(i, 1);
                match expr.evaluate(&row).and_then(|v| v.into_array(1)) {
                    Ok(a) => parts.push(a),
                    Err(e) => {
                        errors.record(Error::from(e).to_string());
                        parts.push(new_null_array(&dt, 1));
                    }
                }
            }
            let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
            Ok(concat(&refs)?)
        }
    }
}

/// Evaluate a predicate; rows where it fails count as not matching.
pub fn evaluate_predicate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
    errors: &EvalErrors,
) -> Result<BooleanArray> {
    let a = evaluate(expr, batch, errors)?;
    a.as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| Error::internal(format!("predicate evaluated to {}", a.data_type())))
}
