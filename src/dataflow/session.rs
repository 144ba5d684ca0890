//! [`SessionWindowOperator`]: `SESSION(rel, ts, gap)` — puts each row into the session
//! of its key: a run of events of that key in which consecutive event times are less
//! than `gap` apart. A session starts at its first event and ends at its last event
//! plus the gap; each row comes out with `window_start` and `window_end` appended.
//!
//! Sessions move as rows arrive: a row between two sessions merges them, a retraction
//! can split one. The operator keeps each key's rows ordered by event time; at the end
//! of an epoch it recomputes the sessions of the keys that changed and emits, for every
//! row whose session changed, the retraction of its old windowed row and its new one.
//! Once the watermark passes a session's end nothing can join it any more (later rows
//! are at or above the watermark, so at least a gap after its last event), and its rows
//! leave the state; what they emitted stays.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::expr::{evaluate, EvalErrors};
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::rowcodec::RowCodec;

/// One key's rows: (event time µs, encoded row) → multiplicity.
type KeyRows = BTreeMap<(i64, Bytes), i64>;

pub struct SessionWindowOperator {
    /// Input columns, then window_start and window_end.
    schema: SchemaRef,
    input_schema: SchemaRef,
    ts_col: usize,
    gap_us: i64,
    key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    key_codec: RowCodec,
    row_codec: RowCodec,
    keys: HashMap<Bytes, KeyRows>,
    pending: Vec<ChangeBatch>,
    /// (key, time, row) entries changed since the last checkpoint.
    /// Rows changed since the last checkpoint, each with whether storage has it (its
    /// presence when first changed): one that comes and goes in between writes nothing.
    dirty: HashMap<(Bytes, i64, Bytes), bool>,
    display: String,
    errors: Arc<EvalErrors>,
}

/// The sessions of one key's rows: for each row, (start, end).
fn sessions(rows: &KeyRows, gap: i64) -> HashMap<(i64, Bytes), (i64, i64)> {
    let mut out = HashMap::with_capacity(rows.len());
    let mut current: Vec<(i64, Bytes)> = vec![];
    let mut start: i64 = 0;
    let mut last: i64 = 0;
    let mut flush = |members: &mut Vec<(i64, Bytes)>, start: i64, last: i64| {
        for m in members.drain(..) {
            out.insert(m, (start, last.saturating_add(gap)));
        }
    };
    for ((t, row), count) in rows {
        if *count <= 0 {
            continue;
        }
        if !current.is_empty() && *t >= last.saturating_add(gap) {
            flush(&mut current, start, last);
        }
        if current.is_empty() {
            start = *t;
        }
        last = *t;
        current.push((*t, row.clone()));
    }
    if !current.is_empty() {
        flush(&mut current, start, last);
    }
    out
}

impl SessionWindowOperator {
    pub fn new(
        input_schema: SchemaRef,
        schema: SchemaRef,
        ts_col: usize,
        gap_us: i64,
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        display: String,
        errors: Arc<EvalErrors>,
    ) -> Result<Self> {
        if gap_us <= 0 {
            return Err(Error::invalid_with(
                "22023",
                "the session gap must be positive",
            ));
        }
        let key_types = key_exprs
            .iter()
            .map(|e| e.data_type(&input_schema))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let row_types = input_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Self {
            schema,
            ts_col,
            gap_us,
            key_codec: RowCodec::new(key_types)?,
            row_codec: RowCodec::new(row_types)?,
            input_schema,
            key_exprs,
            keys: HashMap::new(),
            pending: vec![],
            dirty: HashMap::new(),
            display,
            errors,
        })
    }

    /// Windowed output rows: (encoded input row, start, end, multiplicity).
    fn build(&self, rows: &[(Bytes, i64, i64, i64)]) -> Result<ChangeBatch> {
        let encoded: Vec<&[u8]> = rows.iter().map(|(r, _, _, _)| r.as_ref()).collect();
        let mut cols: Vec<ArrayRef> = self.row_codec.decode(&encoded)?;
        let ts_type = self.schema.field(cols.len()).data_type().clone();
        for pick in [1, 2] {
            let arr = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| {
                if pick == 1 {
                    r.1
                } else {
                    r.2
                }
            }));
            cols.push(cast(&arr, &ts_type)?);
        }
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(ChangeBatch::new(
            data,
            Int64Array::from_iter_values(rows.iter().map(|r| r.3)),
        ))
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &'static str {
        "SessionWindowOperator"
    }

    fn describe(&self) -> String {
        self.display.clone()
    }

    fn state_description(&self) -> Option<String> {
        Some("rows of open sessions, by key and event time".into())
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        if !batch.is_empty() {
            self.pending
                .push(batch.with_schema(self.input_schema.clone())?);
        }
        Ok(())
    }

    fn end_epoch(&mut self, out: &mut Output) -> Result<()> {
        // Group the epoch's changes by key.
        let mut changes: HashMap<Bytes, Vec<(i64, Bytes, i64)>> = HashMap::new();
        for batch in std::mem::take(&mut self.pending) {
            let n = batch.num_rows();
            let key_cols = self
                .key_exprs
                .iter()
                .map(|e| evaluate(e, &batch.data, &self.errors))
                .collect::<Result<Vec<_>>>()?;
            let keys = if key_cols.is_empty() {
                vec![Vec::new(); n]
            } else {
                self.key_codec.encode_rows(&key_cols, n)
            };
            let rows = self.row_codec.encode_rows(batch.columns(), n);
            let ts = super::watermark::micros(batch.data.column(self.ts_col))?;
            for (i, (key, row)) in keys.into_iter().zip(rows).enumerate() {
                // A row without an event time is in no session.
                let Some(t) = ts[i] else {
                    continue;
                };
                changes.entry(Bytes::from(key)).or_default().push((
                    t,
                    Bytes::from(row),
                    batch.diff(i),
                ));
            }
        }
        let mut emitted: Vec<(Bytes, i64, i64, i64)> = vec![];
        for (key, list) in changes {
            let rows = self.keys.entry(key.clone()).or_default();
            let old = rows.clone();
            for (t, row, d) in list {
                let c = rows.entry((t, row.clone())).or_insert(0);
                // Counts of zero leave the map: a zero here was just inserted.
                let present = *c != 0;
                *c += d;
                if *c == 0 {
                    rows.remove(&(t, row.clone()));
                }
                self.dirty.entry((key.clone(), t, row)).or_insert(present);
            }
            // Old windowed rows out, new ones in; unchanged ones cancel.
            let mut net: HashMap<(Bytes, i64, i64), i64> = HashMap::new();
            for (sign, state) in [(-1i64, &old), (1, &*rows)] {
                for ((t, row), (s, e)) in sessions(state, self.gap_us) {
                    let c = state.get(&(t, row.clone())).copied().unwrap_or(0);
                    *net.entry((row, s, e)).or_default() += sign * c;
                }
            }
            if rows.is_empty() {
                self.keys.remove(&key);
            }
            let mut changed: Vec<_> = net.into_iter().filter(|(_, d)| *d != 0).collect();
            changed.sort_by_key(|(_, d)| *d);
            emitted.extend(changed.into_iter().map(|((r, s, e), d)| (r, s, e, d)));
        }
        if !emitted.is_empty() {
            out.push(self.build(&emitted)?);
        }
        Ok(())
    }

    fn wants_watermark(&self) -> bool {
        true
    }

    /// Sessions that ended at or before the watermark are final: their rows go.
    fn on_watermark(&mut self, watermark: i64, _out: &mut Output) -> Result<()> {
        let gap = self.gap_us;
        let dirty = &mut self.dirty;
        self.keys.retain(|key, rows| {
            // A key's first session ends at the earliest a gap after its first row:
            // most keys have none to close, and skip recomputing their sessions (Nexmark
            // q11 with a watermark: 1.34x events per CPU-second).
            let first = rows.keys().next().map_or(i64::MAX, |(t, _)| *t);
            if first.saturating_add(gap) > watermark {
                return !rows.is_empty();
            }
            let closed: Vec<(i64, Bytes)> = sessions(rows, gap)
                .into_iter()
                .filter(|(_, (_, end))| *end <= watermark)
                .map(|(k, _)| k)
                .collect();
            for k in closed {
                rows.remove(&k);
                dirty.entry((key.clone(), k.0, k.1)).or_insert(true);
            }
            !rows.is_empty()
        });
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        for ((key, t, row), stored) in std::mem::take(&mut self.dirty) {
            let mut k = Vec::with_capacity(12 + key.len() + row.len());
            k.extend_from_slice(&(key.len() as u32).to_be_bytes());
            k.extend_from_slice(&key);
            k.extend_from_slice(&t.to_be_bytes());
            k.extend_from_slice(&row);
            match self.keys.get(&key).and_then(|r| r.get(&(t, row.clone()))) {
                Some(c) => state.put(&k, &c.to_le_bytes()),
                None if stored => state.delete(&k),
                None => {}
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let keys = &mut self.keys;
        state.for_each(&mut |k, v| {
            let bad = || Error::Storage("corrupt session state".into());
            let klen =
                u32::from_be_bytes(k.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?)
                    as usize;
            let key = k.get(4..4 + klen).ok_or_else(bad)?;
            let t = i64::from_be_bytes(
                k.get(4 + klen..12 + klen)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            let row = k.get(12 + klen..).ok_or_else(bad)?;
            let c = i64::from_le_bytes(v.try_into().map_err(|_| bad())?);
            keys.entry(Bytes::copy_from_slice(key))
                .or_default()
                .insert((t, Bytes::copy_from_slice(row)), c);
            Ok(())
        })
    }

    fn state_entries(&self) -> usize {
        self.keys.values().map(|r| r.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;
    use datafusion::physical_expr::expressions::col;

    /// SESSION(rel, t, 10 s) per k, over (k, t).
    fn op() -> (SessionWindowOperator, SchemaRef) {
        let input = schema(&[("k", I64), ("t", TS)]);
        let out = schema(&[
            ("k", I64),
            ("t", TS),
            ("window_start", TS),
            ("window_end", TS),
        ]);
        let keys = vec![col("k", &input).unwrap()];
        let op = SessionWindowOperator::new(
            input.clone(),
            out,
            1,
            10_000_000,
            keys,
            String::new(),
            EvalErrors::new(),
        )
        .unwrap();
        (op, input)
    }

    fn row(k: i64, t: i64, s: i64, e: i64, d: &str) -> String {
        format!("{k} {} {} {} {d}", ts(t), ts(s), ts(e))
    }

    #[test]
    fn rows_join_split_and_merge_sessions_per_key() {
        let (mut op, s) = op();
        // k=1: 100 and 105 together (5 s apart); 200 alone. k=2: its own session.
        let out = run_epoch(
            &mut op,
            vec![(0, changes(&s, "1 100 +1\n1 105 +1\n1 200 +1\n2 101 +1"))],
        );
        assert_eq!(
            out,
            vec![
                row(1, 100, 100, 115, "+1"),
                row(1, 105, 100, 115, "+1"),
                row(1, 200, 200, 210, "+1"),
                row(2, 101, 101, 111, "+1"),
            ]
        );
        // 112 extends the first session (112 < 105 + 10): its rows move to the longer one.
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 112 +1"))]);
        assert_eq!(
            out,
            vec![
                row(1, 100, 100, 115, "-1"),
                row(1, 100, 100, 122, "+1"),
                row(1, 105, 100, 115, "-1"),
                row(1, 105, 100, 122, "+1"),
                row(1, 112, 100, 122, "+1"),
            ]
        );
        // Retracting 105 splits it: 100 alone (100 + 10 <= 112).
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 105 -1"))]);
        assert_eq!(
            out,
            vec![
                row(1, 100, 100, 110, "+1"),
                row(1, 100, 100, 122, "-1"),
                row(1, 105, 100, 122, "-1"),
                row(1, 112, 112, 122, "+1"),
                row(1, 112, 100, 122, "-1"),
            ]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(op.state_entries(), 4);
    }

    #[test]
    fn closed_sessions_leave_the_state_and_survive_a_restart() {
        let (mut op, s) = self::op();
        run_epoch(&mut op, vec![(0, changes(&s, "1 100 +1\n1 200 +1"))]);
        let storage = crate::storage::memory::MemoryStorage::new();
        checkpoint(&mut op, &storage, 4);
        // Watermark 110: the session [100, 110) is final; [200, 210) stays.
        op.on_watermark(110_000_000, &mut vec![]).unwrap();
        assert_eq!(op.state_entries(), 1);
        checkpoint(&mut op, &storage, 4);
        let (mut back, _) = self::op();
        back.restore(&StateReader::new(4, &storage)).unwrap();
        assert_eq!(back.state_entries(), 1);
        // A new row joins the open session as before.
        let out = run_epoch(&mut back, vec![(0, changes(&s, "1 205 +1"))]);
        assert_eq!(
            out,
            vec![
                row(1, 200, 200, 210, "-1"),
                row(1, 200, 200, 215, "+1"),
                row(1, 205, 200, 215, "+1"),
            ]
        );
    }

    /// A row that comes and goes between two checkpoints (retracted, or its session
    /// closed) writes nothing; one a checkpoint wrote is deleted by the next.
    #[test]
    fn rows_no_checkpoint_saw_leave_nothing_to_delete() {
        let (mut op, s) = self::op();
        run_epoch(
            &mut op,
            vec![(0, changes(&s, "1 100 +1\n2 100 +1\n3 100 +1"))],
        );
        run_epoch(&mut op, vec![(0, changes(&s, "2 100 -1"))]);
        let first = checkpoint_writes(&mut op);
        assert_eq!(first.iter().filter(|(_, put)| *put).count(), 2, "{first:?}");
        assert_eq!(first.len(), 2, "no delete for 2: {first:?}");
        // 4 comes and its session closes before the next checkpoint; 1's closes too.
        run_epoch(&mut op, vec![(0, changes(&s, "4 101 +1"))]);
        op.on_watermark(200_000_000, &mut vec![]).unwrap();
        let second = checkpoint_writes(&mut op);
        assert_eq!(second.len(), 2, "deletes of 1 and 3 only: {second:?}");
        assert!(second.iter().all(|(_, put)| !put));
        assert!(checkpoint_writes(&mut op).is_empty());
    }
}
