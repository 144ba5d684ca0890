//! [`ChangeBatch`]: the one thing that flows along dataflow edges.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter, filter_record_batch, take};
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;

/// A batch of changes: rows, each with a signed multiplicity. `+1` inserts a row, `-1`
/// deletes one; an update is `-old, +new`. A multiplicity can be any non-zero integer
/// (`+3` = three copies).
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    pub data: RecordBatch,
    pub diffs: Int64Array,
}

impl ChangeBatch {
    pub fn new(data: RecordBatch, diffs: Int64Array) -> Self {
        debug_assert_eq!(data.num_rows(), diffs.len());
        Self { data, diffs }
    }

    /// Every row of `data` inserted once.
    pub fn inserts(data: RecordBatch) -> Self {
        let diffs = Int64Array::from(vec![1i64; data.num_rows()]);
        Self { data, diffs }
    }

    /// Every row of `data` deleted once.
    pub fn deletes(data: RecordBatch) -> Self {
        let diffs = Int64Array::from(vec![-1i64; data.num_rows()]);
        Self { data, diffs }
    }

    pub fn empty(schema: SchemaRef) -> Self {
        Self {
            data: RecordBatch::new_empty(schema),
            diffs: Int64Array::from(Vec::<i64>::new()),
        }
    }

    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.data.num_rows() == 0
    }

    pub fn schema(&self) -> SchemaRef {
        self.data.schema()
    }

    pub fn columns(&self) -> &[ArrayRef] {
        self.data.columns()
    }

    pub fn diff(&self, row: usize) -> i64 {
        self.diffs.value(row)
    }

    /// Keep the rows where `mask` is true (null counts as false, as in WHERE).
    pub fn filter(&self, mask: &BooleanArray) -> Result<Self> {
        let mask = if mask.null_count() > 0 {
            datafusion::arrow::compute::prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        let data = filter_record_batch(&self.data, &mask)?;
        let diffs = filter(&self.diffs, &mask)?;
        let diffs = diffs
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| crate::error::Error::internal("diff column is not Int64"))?;
        Ok(Self { data, diffs })
    }

    /// The rows at `indices`, in that order.
    pub fn take(&self, indices: &datafusion::arrow::array::UInt32Array) -> Result<Self> {
        let cols = self
            .data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data = RecordBatch::try_new_with_options(
            self.data.schema(),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(indices.len())),
        )?;
        let diffs = take(&self.diffs, indices, None)?;
        let diffs = diffs
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| crate::error::Error::internal("diff column is not Int64"))?;
        Ok(Self { data, diffs })
    }

    /// The same rows with every multiplicity negated.
    pub fn negate(&self) -> Self {
        let diffs: Int64Array = self.diffs.iter().map(|d| d.map(|d| -d)).collect();
        Self {
            data: self.data.clone(),
            diffs,
        }
    }

    /// The same changes with the rows re-labelled by `schema` (same column types).
    pub fn with_schema(&self, schema: SchemaRef) -> Result<Self> {
        let data = RecordBatch::try_new_with_options(
            schema,
            self.data.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(self.data.num_rows())),
        )?;
        Ok(Self {
            data,
            diffs: self.diffs.clone(),
        })
    }

    /// Concatenate batches that share a schema.
    pub fn concat(schema: &SchemaRef, batches: &[ChangeBatch]) -> Result<Self> {
        if batches.len() == 1 {
            return Ok(batches[0].clone());
        }
        let data = concat_batches(schema, batches.iter().map(|b| &b.data))?;
        let diffs: Int64Array = batches
            .iter()
            .flat_map(|b| b.diffs.values().iter().copied())
            .map(Some)
            .collect();
        Ok(Self { data, diffs })
    }

    /// Rows as `(values..., diff)` strings, sorted: a compact form for tests and logs.
    pub fn to_sorted_strings(&self) -> Vec<String> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let opts = FormatOptions::default().with_null("NULL");
        let fmts: Vec<_> = self
            .data
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<_, _>>()
            .unwrap_or_default();
        let mut out: Vec<String> = (0..self.num_rows())
            .map(|r| {
                let mut s: Vec<String> = fmts.iter().map(|f| f.value(r).to_string()).collect();
                s.push(format!("{:+}", self.diff(r)));
                s.join(" ")
            })
            .collect();
        out.sort();
        out
    }
}

/// Shared handle to a schema, re-exported for operator code.
pub type Schema = Arc<datafusion::arrow::datatypes::Schema>;
