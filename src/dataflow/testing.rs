//! Fixtures for operator tests: literal change batches in a compact text form, in the
//! spirit of RisingWave's `StreamChunk::from_pretty` and DBSP's `zset!`.
//!
//! `changes(&schema, "1 a +1\n2 NULL -1")` is two rows; the last token of each line is
//! the multiplicity, `NULL` is a null value.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{ChangeBatch, Operator, StateRuns};
use crate::storage::{Storage, WriteBatch};

pub const I64: DataType = DataType::Int64;
pub const STR: DataType = DataType::Utf8;
pub const F64: DataType = DataType::Float64;
pub const BOOL: DataType = DataType::Boolean;
/// Timestamps (microseconds, no zone), written in fixtures as whole seconds.
pub const TS: DataType =
    DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None);

/// How a TS fixture value of `secs` seconds prints in `to_sorted_strings`.
pub fn ts(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

pub fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

pub fn changes(schema: &SchemaRef, text: &str) -> ChangeBatch {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect();
    let ncols = schema.fields().len();
    let mut cols: Vec<ArrayRef> = vec![];
    for c in 0..ncols {
        let vals: Vec<Option<&str>> = lines
            .iter()
            .map(|l| {
                assert_eq!(
                    l.len(),
                    ncols + 1,
                    "row {l:?} needs {ncols} values and a diff"
                );
                if l[c] == "NULL" {
                    None
                } else {
                    Some(l[c])
                }
            })
            .collect();
        let arr: ArrayRef = match schema.field(c).data_type() {
            DataType::Int64 => Arc::new(
                vals.iter()
                    .map(|v| v.map(|v| v.parse::<i64>().unwrap()))
                    .collect::<Int64Array>(),
            ),
            DataType::Float64 => Arc::new(
                vals.iter()
                    .map(|v| v.map(|v| v.parse::<f64>().unwrap()))
                    .collect::<Float64Array>(),
            ),
            DataType::Boolean => Arc::new(
                vals.iter()
                    .map(|v| v.map(|v| v == "true"))
                    .collect::<BooleanArray>(),
            ),
            DataType::Utf8 => Arc::new(vals.iter().cloned().collect::<StringArray>()),
            DataType::Timestamp(_, None) => Arc::new(
                vals.iter()
                    .map(|v| v.map(|v| v.parse::<i64>().unwrap() * 1_000_000))
                    .collect::<datafusion::arrow::array::TimestampMicrosecondArray>(),
            ),
            t => panic!("fixture type {t} not supported"),
        };
        cols.push(arr);
    }
    let data = RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(lines.len())),
    )
    .unwrap();
    let diffs: Int64Array = lines
        .iter()
        .map(|l| Some(l[ncols].parse::<i64>().unwrap()))
        .collect();
    ChangeBatch::new(data, diffs)
}

/// Consolidate changes: sum multiplicities per row, drop zeros, sort.
pub fn consolidate(batches: &[ChangeBatch]) -> Vec<String> {
    let mut sums: std::collections::BTreeMap<String, i64> = Default::default();
    for b in batches {
        for line in b.to_sorted_strings() {
            let (row, diff) = line.rsplit_once(' ').unwrap();
            *sums.entry(row.to_string()).or_default() += diff.parse::<i64>().unwrap();
        }
    }
    sums.into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|(r, d)| format!("{r} {d:+}"))
        .collect()
}

/// Feed one epoch of input to `op` and return its consolidated output.
pub fn run_epoch(op: &mut dyn Operator, inputs: Vec<(usize, ChangeBatch)>) -> Vec<String> {
    let mut out = vec![];
    for (port, b) in inputs {
        op.process(port, b, &mut out).unwrap();
    }
    op.end_epoch(&mut out).unwrap();
    consolidate(&out)
}

/// The relation operator's current contents, consolidated.
pub fn contents(op: &dyn Operator) -> Vec<String> {
    consolidate(&op.contents().unwrap().unwrap())
}

pub fn checkpoint(op: &mut dyn Operator, storage: &dyn Storage, state_id: u64) {
    // As the runtime does: the checkpoint's writes become a run, merged with older
    // runs when a tier fills up.
    let mut runs = StateRuns::load(storage, state_id, op.logs_own_input()).unwrap();
    let epoch = runs.last_seq().map_or(1, |s| s + 1);
    let mut wb = WriteBatch::new();
    runs.checkpoint(op, epoch, storage, &mut wb).unwrap();
    storage.commit(wb).unwrap();
}

/// What one checkpoint of `op` writes, without storing it: (key, is a put), in key
/// order (a delete is not a put).
pub fn checkpoint_writes(op: &mut dyn Operator) -> Vec<(Vec<u8>, bool)> {
    let mut wb = WriteBatch::new();
    let mut run = crate::storage::runs::RunBuilder::default();
    op.checkpoint(&mut super::StateWriter::into_run(1, &mut wb, &mut run))
        .expect("checkpoint");
    let bytes = run.finish();
    let mut c = crate::storage::runs::RunCursor::new(&bytes).expect("run");
    let mut out = vec![];
    while let Some((k, v)) = c.next_entry().expect("entry") {
        out.push((k.to_vec(), v.is_some()));
    }
    out
}
