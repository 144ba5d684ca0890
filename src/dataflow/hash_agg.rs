//! [`HashAggOperator`]: GROUP BY with retractable aggregates (also DISTINCT: a GROUP BY
//! over every column with no aggregates).
//!
//! State per group: the number of input rows and one accumulator per aggregate. Within
//! an epoch the operator only updates state; at the end of the epoch it emits, for each
//! group that changed, the retraction of the row it emitted before and the new row — so
//! downstream sees one `-old, +new` pair per group per epoch, however many inputs
//! touched it. A group whose row count drops to zero disappears (a global aggregate
//! without GROUP BY always has its one row, as in Postgres: `count(*)` of nothing is 0).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::physical_plan::PhysicalExpr;

use super::accumulators::{AccState, AggSpec};
use super::expr::{evaluate, EvalErrors};
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::rowcodec::RowCodec;

/// A group key: the group-by values encoded by the operator's [`RowCodec`].
///
/// Shared, not copied, between the map, the touched and dirty lists and the window
/// index: a clone is a reference count, not an allocation. (Measured against copies:
/// no difference within noise on q4, q5, q11 and q15.)
type Key = Arc<[u8]>;

struct Group {
    rows: i64,
    accs: Vec<AccState>,
    /// Set while the group is touched in the current epoch: what it emitted before the
    /// epoch (`None`: no row), as cheap summaries of its accumulators.
    before: Option<Option<Vec<AccState>>>,
    /// Changed since the last checkpoint, and so on the operator's `dirty` list.
    dirty: bool,
    /// Written by a checkpoint (or restored): storage has it. A group that goes away
    /// before any checkpoint wrote it leaves nothing to delete.
    persisted: bool,
}

pub struct HashAggOperator {
    schema: SchemaRef,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    key_codec: RowCodec,
    aggs: Vec<AggSpec>,
    groups: hashbrown::HashMap<Key, Group>,
    /// Groups touched this epoch, in the order first touched.
    touched: Vec<Key>,
    /// Groups changed since the last checkpoint, each listed when its `dirty` flag is
    /// set. A group that goes and comes back is listed twice; the checkpoint writes it
    /// once.
    dirty: Vec<Key>,
    /// Groups that went away since the last checkpoint and that storage has: their
    /// deletes. (Most groups of a window close before any checkpoint saw them, and
    /// write nothing.)
    gone: Vec<Key>,
    global: bool,
    initialized: bool,
    /// The input only inserts (aggregates may keep smaller state).
    append_only: bool,
    display: String,
    errors: Arc<EvalErrors>,
    /// (index, offset) of a group key that closes its group: a group whose key plus
    /// the offset is at or below the watermark is closed (a window's end with offset
    /// 0, its start with offset the window's size). Closed groups are freed.
    close_key: Option<(usize, i64)>,
    /// Groups by the time they close (only with `close_key`).
    by_end: BTreeMap<i64, Vec<Key>>,
    /// Windows ending at or below this are closed: their groups are gone, and input
    /// for them is dropped (counted as late).
    closed_upto: Option<i64>,
    late: u64,
}

/// One row of output under construction: the group's key, its aggregate values (as
/// summaries of its accumulators) and the multiplicity.
type OutRow = (Key, Vec<AccState>, i64);

impl HashAggOperator {
    pub fn new(
        schema: SchemaRef,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        aggs: Vec<AggSpec>,
        display: String,
        errors: Arc<EvalErrors>,
    ) -> Result<Self> {
        let key_types = schema
            .fields()
            .iter()
            .take(group_exprs.len())
            .map(|f| f.data_type().clone())
            .collect();
        let global = group_exprs.is_empty();
        Ok(Self {
            schema,
            key_codec: RowCodec::new(key_types)?,
            group_exprs,
            aggs,
            groups: hashbrown::HashMap::new(),
            touched: Vec::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            global,
            initialized: false,
            append_only: false,
            display,
            errors,
            close_key: None,
            by_end: BTreeMap::new(),
            closed_upto: None,
            late: 0,
        })
    }

    /// Group key `key.0` (a timestamp) plus `key.1` µs is when its group closes: free
    /// closed groups (see [`Operator::on_watermark`]). The planner passes a window's
    /// end with offset 0, or its start with the window's size.
    pub fn with_close_key(mut self, key: Option<(usize, i64)>) -> Self {
        self.close_key = key;
        self
    }

    /// When each row's group closes (µs), with a close key.
    fn window_ends(&self, key_cols: &[ArrayRef]) -> Result<Option<Vec<Option<i64>>>> {
        let Some((k, offset)) = self.close_key else {
            return Ok(None);
        };
        let col = key_cols
            .get(k)
            .ok_or_else(|| Error::internal("close key out of range"))?;
        let mut ends = super::watermark::micros(col)?;
        if offset != 0 {
            for e in ends.iter_mut().flatten() {
                *e = e.saturating_add(offset);
            }
        }
        Ok(Some(ends))
    }

    /// Declare the input append-only (see [`AggSpec::with_append_only`]).
    pub fn with_append_only(mut self, append_only: bool) -> Self {
        self.append_only = append_only;
        self.aggs = std::mem::take(&mut self.aggs)
            .into_iter()
            .map(|a| a.with_append_only(append_only))
            .collect();
        self
    }

    /// What a group emits: summaries of its accumulators, or `None` when it has no row
    /// (no input rows left, unless it is the one group of a global aggregate).
    fn output_of(aggs: &[AggSpec], global: bool, group: &Group) -> Option<Vec<AccState>> {
        if group.rows <= 0 && !global {
            return None;
        }
        Some(
            aggs.iter()
                .zip(&group.accs)
                .map(|(a, s)| a.summary(s))
                .collect(),
        )
    }

    fn evaluate_lenient(&self, agg: &AggSpec, state: &AccState) -> ScalarValue {
        match agg.evaluate(state) {
            Ok(v) => v,
            Err(e) => {
                // e.g. a sum that no longer fits its output type: NULL, and counted.
                self.errors.record(format!("{}: {e}", agg.display));
                ScalarValue::try_from(&agg.output_type).unwrap_or(ScalarValue::Null)
            }
        }
    }

    fn new_group(&self) -> Group {
        Group {
            rows: 0,
            accs: self.aggs.iter().map(|a| a.new_state()).collect(),
            before: None,
            dirty: false,
            persisted: false,
        }
    }

    fn build_output(&self, rows: &[OutRow]) -> Result<ChangeBatch> {
        let mut cols: Vec<ArrayRef> = if self.group_exprs.is_empty() {
            vec![]
        } else {
            let keys: Vec<&[u8]> = rows.iter().map(|(k, _, _)| k.as_ref()).collect();
            self.key_codec.decode(&keys)?
        };
        for (a, agg) in self.aggs.iter().enumerate() {
            let states: Vec<&AccState> = rows.iter().map(|(_, v, _)| &v[a]).collect();
            let arr = match agg.evaluate_column(&states)? {
                Some(arr) => arr,
                // No columnar form, or a value that does not fit: one by one, so that
                // the failing groups become NULL and are reported.
                None => {
                    let vals = states.iter().map(|s| self.evaluate_lenient(agg, s));
                    let arr = ScalarValue::iter_to_array(vals)?;
                    if arr.data_type() != &agg.output_type {
                        datafusion::arrow::compute::cast(&arr, &agg.output_type)?
                    } else {
                        arr
                    }
                }
            };
            let want = self.schema.field(self.group_exprs.len() + a).data_type();
            let arr = if arr.data_type() != want {
                datafusion::arrow::compute::cast(&arr, want)?
            } else {
                arr
            };
            cols.push(arr);
        }
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        let diffs = Int64Array::from(rows.iter().map(|(_, _, d)| *d).collect::<Vec<_>>());
        Ok(ChangeBatch::new(data, diffs))
    }
}

impl Operator for HashAggOperator {
    fn name(&self) -> &'static str {
        "HashAggOperator"
    }

    fn describe(&self) -> String {
        self.display.clone()
    }

    fn state_description(&self) -> Option<String> {
        let mut parts = vec!["row count".to_string()];
        for a in &self.aggs {
            parts.push(match a.new_state() {
                AccState::Values(_) => format!("{}: multiset of values", a.display),
                AccState::Extreme(_) => format!("{}: one value (append-only input)", a.display),
                _ => a.display.clone(),
            });
        }
        Some(format!("per group: {}", parts.join(", ")))
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        if self.append_only && batch.diffs.values().iter().any(|d| *d < 0) {
            return Err(Error::internal(
                "a retraction reached an aggregate planned for an append-only input",
            ));
        }
        let key_cols = self
            .group_exprs
            .iter()
            .map(|e| evaluate(e, &batch.data, &self.errors))
            .collect::<Result<Vec<_>>>()?;
        let keys = (!self.global).then(|| self.key_codec.encode_flat(&key_cols, n));
        let args = self
            .aggs
            .iter()
            .map(|a| a.prepare(&batch.data, &self.errors))
            .collect::<Result<Vec<_>>>()?;
        let ends = self.window_ends(&key_cols)?;
        let diffs = batch.diffs.values();
        let fresh = self.new_group();
        // The state is updated field by field below (the map, the touched list, the
        // window index), so borrow them apart.
        let Self {
            groups,
            touched,
            aggs,
            by_end,
            closed_upto,
            late,
            global,
            initialized,
            ..
        } = self;
        for (i, diff) in diffs.iter().copied().enumerate() {
            let end = ends.as_ref().and_then(|e| e[i]);
            if let (Some(e), Some(c)) = (end, *closed_upto) {
                if e <= c {
                    *late += 1;
                    continue;
                }
            }
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i));
            // The stored key, when the group is first touched this epoch.
            let (group, first_touch) = match groups.entry_ref(key) {
                hashbrown::hash_map::EntryRef::Occupied(o) => {
                    let k = o.get().before.is_none().then(|| o.key().clone());
                    (o.into_mut(), k)
                }
                hashbrown::hash_map::EntryRef::Vacant(v) => {
                    let o = v.insert_entry(Group {
                        rows: 0,
                        accs: fresh.accs.clone(),
                        before: None,
                        dirty: false,
                        persisted: false,
                    });
                    let k = o.key().clone();
                    if let Some(e) = end {
                        by_end.entry(e).or_default().push(k.clone());
                    }
                    (o.into_mut(), Some(k))
                }
            };
            if let Some(k) = first_touch {
                let emitted = if *initialized || !*global {
                    Self::output_of(aggs, *global, group)
                } else {
                    None
                };
                group.before = Some(emitted);
                touched.push(k);
            }
            group.rows += diff;
            for (a, agg) in aggs.iter().enumerate() {
                agg.update(&mut group.accs[a], &args[a], i, diff);
            }
        }
        Ok(())
    }

    fn end_epoch(&mut self, out: &mut Output) -> Result<()> {
        if self.global && !self.initialized {
            let key: Key = Key::from(&[][..]);
            let fresh = self.new_group();
            let g = self.groups.entry(key.clone()).or_insert(fresh);
            if g.before.is_none() {
                g.before = Some(None);
                self.touched.push(key);
            }
            self.initialized = true;
        }
        let mut rows: Vec<OutRow> = vec![];
        for key in std::mem::take(&mut self.touched) {
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            if g.rows < 0 {
                return Err(Error::internal(format!("group has {} rows", g.rows)));
            }
            let old = g.before.take().flatten();
            let new = Self::output_of(&self.aggs, self.global, g);
            let newly_dirty = !g.dirty;
            g.dirty = true;
            let removed = !self.global && g.rows == 0;
            if removed && g.persisted {
                self.gone.push(key.clone());
            }
            if removed {
                self.groups.remove(&key);
            }
            if old != new {
                if let Some(o) = old {
                    rows.push((key.clone(), o, -1));
                }
                if let Some(n) = new {
                    rows.push((key.clone(), n, 1));
                }
            }
            if newly_dirty && !removed {
                self.dirty.push(key);
            }
        }
        if !rows.is_empty() {
            rows.sort_by_key(|(_, _, d)| *d);
            out.push(self.build_output(&rows)?);
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        let mut buf = Vec::new();
        // Deletes first: a group that went and came back is written again below, and
        // the last write of a key wins.
        for key in self.gone.drain(..) {
            state.delete(&key);
        }
        for key in self.dirty.drain(..) {
            match self.groups.get_mut(&key) {
                Some(g) if g.dirty => {
                    g.dirty = false;
                    g.persisted = true;
                    buf.clear();
                    buf.extend_from_slice(&g.rows.to_le_bytes());
                    for a in &g.accs {
                        a.encode(&mut buf);
                    }
                    state.put(&key, &buf);
                }
                // Listed twice (it went and came back) and already written, or gone
                // (its delete, if storage had it, is above).
                Some(_) | None => {}
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let naggs = self.aggs.len();
        let mut groups = hashbrown::HashMap::new();
        state.for_each(&mut |k, v| {
            let mut cur = v;
            if cur.len() < 8 {
                return Err(Error::Storage("corrupt group state".into()));
            }
            let rows = i64::from_le_bytes(
                cur[..8]
                    .try_into()
                    .map_err(|_| Error::Storage("corrupt group".into()))?,
            );
            cur = &cur[8..];
            let mut accs = Vec::with_capacity(naggs);
            for _ in 0..naggs {
                accs.push(AccState::decode(&mut cur)?);
            }
            groups.insert(
                Key::from(k),
                Group {
                    rows,
                    accs,
                    before: None,
                    dirty: false,
                    persisted: true,
                },
            );
            Ok(())
        })?;
        self.initialized = !groups.is_empty();
        self.groups = groups;
        if self.close_key.is_some() && !self.groups.is_empty() {
            let keys: Vec<Key> = self.groups.keys().cloned().collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
            let cols = self.key_codec.decode(&refs)?;
            if let Some(ends) = self.window_ends(&cols)? {
                for (key, end) in keys.into_iter().zip(ends) {
                    if let Some(e) = end {
                        self.by_end.entry(e).or_default().push(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.groups.len()
    }

    fn wants_watermark(&self) -> bool {
        self.close_key.is_some()
    }

    fn late_rows(&self) -> u64 {
        self.late
    }

    /// Free the groups of windows that closed: their rows stay downstream (the view
    /// keeps each closed window's result), and nothing can change them any more.
    fn on_watermark(&mut self, watermark: i64, _out: &mut Output) -> Result<()> {
        self.closed_upto = Some(self.closed_upto.map_or(watermark, |c| c.max(watermark)));
        let open = self.by_end.split_off(&watermark.saturating_add(1));
        for (_, keys) in std::mem::replace(&mut self.by_end, open) {
            for key in keys {
                if self.groups.remove(&key).is_some_and(|g| g.persisted) {
                    self.gone.push(key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::accumulators::AggKind;
    use crate::dataflow::testing::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::physical_expr::expressions::col;

    fn agg(
        kind: AggKind,
        distinct: bool,
        arg: Option<&str>,
        input: &SchemaRef,
        out: DataType,
    ) -> AggSpec {
        let args = arg
            .map(|a| vec![col(a, input).unwrap()])
            .unwrap_or_default();
        let it = arg
            .map(|a| input.field_with_name(a).unwrap().data_type().clone())
            .unwrap_or(DataType::Null);
        AggSpec::new(kind, distinct, args, None, it, out, format!("{kind:?}")).unwrap()
    }

    /// GROUP BY k: count(*), sum(v), min(v), max(v), count(DISTINCT v)
    fn grouped() -> (HashAggOperator, SchemaRef) {
        let input = schema(&[("k", STR), ("v", I64)]);
        let output = schema(&[
            ("k", STR),
            ("n", I64),
            ("s", I64),
            ("lo", I64),
            ("hi", I64),
            ("d", I64),
        ]);
        let aggs = vec![
            agg(AggKind::CountStar, false, None, &input, DataType::Int64),
            agg(AggKind::Sum, false, Some("v"), &input, DataType::Int64),
            agg(AggKind::Min, false, Some("v"), &input, DataType::Int64),
            agg(AggKind::Max, false, Some("v"), &input, DataType::Int64),
            agg(AggKind::Count, true, Some("v"), &input, DataType::Int64),
        ];
        let keys = vec![col("k", &input).unwrap()];
        (
            HashAggOperator::new(output, keys, aggs, String::new(), EvalErrors::new()).unwrap(),
            input,
        )
    }

    /// After each checkpoint the stored groups equal the live ones, whatever happened
    /// to a group in between: changed twice, gone, gone and back.
    #[test]
    fn each_checkpoint_stores_exactly_the_live_groups() {
        let storage = crate::storage::memory::MemoryStorage::new();
        let (mut op, input) = grouped();
        let epochs = [
            vec!["a 1 +1\nb 2 +1\nc 3 +1"],
            // a gone and back (two epochs), b gone, d in and out, c changed twice.
            vec!["a 1 -1\nb 2 -1\nd 4 +1\nc 5 +1", "c 6 +1"],
            vec!["a 7 +1\nd 4 -1"],
            vec![],
        ];
        let summary = |op: &HashAggOperator| {
            let mut g: Vec<(Key, i64, Vec<AccState>)> = op
                .groups
                .iter()
                .map(|(k, g)| (k.clone(), g.rows, g.accs.clone()))
                .collect();
            g.sort_by(|x, y| x.0.cmp(&y.0));
            g
        };
        for (n, interval) in epochs.into_iter().enumerate() {
            for text in interval {
                run_epoch(&mut op, vec![(0, changes(&input, text))]);
            }
            checkpoint(&mut op, &storage, 4);
            let (mut back, _) = grouped();
            back.restore(&StateReader::new(4, &storage)).unwrap();
            assert!(op.dirty.is_empty());
            assert!(op.groups.values().all(|g| !g.dirty));
            assert_eq!(summary(&op), summary(&back), "after checkpoint {n}");
        }
        assert_eq!(op.groups.len(), 2);
    }

    /// A group that comes and goes between two checkpoints (a retraction to zero rows,
    /// or a window that closes) writes nothing; a group a checkpoint wrote is deleted
    /// by the next one.
    #[test]
    fn groups_no_checkpoint_saw_leave_nothing_to_delete() {
        let (mut op, input) = grouped();
        run_epoch(&mut op, vec![(0, changes(&input, "a 1 +1\nb 2 +1"))]);
        run_epoch(&mut op, vec![(0, changes(&input, "b 2 -1"))]);
        let first = checkpoint_writes(&mut op);
        assert_eq!(first.len(), 1, "only a: {first:?}");
        assert!(first[0].1);
        run_epoch(&mut op, vec![(0, changes(&input, "a 1 -1\nc 3 +1"))]);
        run_epoch(&mut op, vec![(0, changes(&input, "c 3 -1"))]);
        assert_eq!(
            checkpoint_writes(&mut op),
            vec![(first[0].0.clone(), false)]
        );
        assert!(checkpoint_writes(&mut op).is_empty());

        // Windows: one closes before any checkpoint, one after.
        let win = schema(&[("k", I64), ("window_end", TS), ("v", I64)]);
        let output = schema(&[("k", I64), ("window_end", TS), ("s", I64)]);
        let aggs = vec![agg(AggKind::Sum, false, Some("v"), &win, DataType::Int64)];
        let keys = vec![col("k", &win).unwrap(), col("window_end", &win).unwrap()];
        let mut op = HashAggOperator::new(output, keys, aggs, String::new(), EvalErrors::new())
            .unwrap()
            .with_close_key(Some((1, 0)));
        run_epoch(&mut op, vec![(0, changes(&win, "1 60 5 +1\n1 120 7 +1"))]);
        op.on_watermark(60_000_000, &mut vec![]).unwrap();
        let kept = checkpoint_writes(&mut op);
        assert_eq!(kept.len(), 1, "only the open window: {kept:?}");
        op.on_watermark(120_000_000, &mut vec![]).unwrap();
        assert_eq!(checkpoint_writes(&mut op), vec![(kept[0].0.clone(), false)]);
    }

    /// GROUP BY k, window_end: sum(v), with window_end as the window key.
    #[test]
    fn closed_windows_free_their_groups_and_ignore_later_changes() {
        let input = schema(&[("k", I64), ("window_end", TS), ("v", I64)]);
        let output = schema(&[("k", I64), ("window_end", TS), ("s", I64)]);
        let aggs = vec![agg(AggKind::Sum, false, Some("v"), &input, DataType::Int64)];
        let keys = vec![
            col("k", &input).unwrap(),
            col("window_end", &input).unwrap(),
        ];
        let mut op = HashAggOperator::new(output, keys, aggs, String::new(), EvalErrors::new())
            .unwrap()
            .with_close_key(Some((1, 0)));
        assert!(op.wants_watermark());
        let out = run_epoch(
            &mut op,
            vec![(
                0,
                changes(
                    &input,
                    "1 60 5 +1
1 120 7 +1
2 60 1 +1",
                ),
            )],
        );
        assert_eq!(out.len(), 3);
        // A retraction inside an open window still updates it.
        let out = run_epoch(
            &mut op,
            vec![(
                0,
                changes(
                    &input,
                    "1 60 5 -1
1 60 2 +1",
                ),
            )],
        );
        assert_eq!(
            out,
            vec![format!("1 {} 2 +1", ts(60)), format!("1 {} 5 -1", ts(60))]
        );
        assert_eq!(op.state_entries(), 3);
        // Watermark 60 s: both groups of the window ending at 60 are freed, silently.
        let mut out = vec![];
        op.on_watermark(60_000_000, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(op.state_entries(), 1);
        // Changes for the closed window are late: no group comes back.
        let out = run_epoch(&mut op, vec![(0, changes(&input, "1 60 3 +1\n1 120 3 +1"))]);
        assert_eq!(
            out,
            vec![
                format!("1 {} 10 +1", ts(120)),
                format!("1 {} 7 -1", ts(120))
            ]
        );
        assert_eq!(op.late_rows(), 1);
        assert_eq!(op.state_entries(), 1);
        // The freed groups are deleted from storage at the next checkpoint, and a
        // restore finds the open window's group by its end.
        let storage = crate::storage::memory::MemoryStorage::new();
        checkpoint(&mut op, &storage, 3);
        let input2 = schema(&[("k", I64), ("window_end", TS), ("v", I64)]);
        let output2 = schema(&[("k", I64), ("window_end", TS), ("s", I64)]);
        let aggs2 = vec![agg(
            AggKind::Sum,
            false,
            Some("v"),
            &input2,
            DataType::Int64,
        )];
        let keys2 = vec![
            col("k", &input2).unwrap(),
            col("window_end", &input2).unwrap(),
        ];
        let mut back =
            HashAggOperator::new(output2, keys2, aggs2, String::new(), EvalErrors::new())
                .unwrap()
                .with_close_key(Some((1, 0)));
        back.restore(&StateReader::new(3, &storage)).unwrap();
        assert_eq!(back.state_entries(), 1);
        back.on_watermark(120_000_000, &mut vec![]).unwrap();
        assert_eq!(back.state_entries(), 0);
    }

    /// GROUP BY window_start of 60 s windows (q5's and q7's form): the key closes at
    /// start + 60 s (the offset the planner passes), here and after a restore.
    #[test]
    fn window_start_keys_close_at_the_windows_end() {
        let input = schema(&[("k", I64), ("window_start", TS), ("v", I64)]);
        let output = schema(&[("k", I64), ("window_start", TS), ("n", I64)]);
        let make = || {
            let aggs = vec![agg(
                AggKind::Count,
                false,
                Some("v"),
                &input,
                DataType::Int64,
            )];
            let keys = vec![
                col("k", &input).unwrap(),
                col("window_start", &input).unwrap(),
            ];
            HashAggOperator::new(output.clone(), keys, aggs, String::new(), EvalErrors::new())
                .unwrap()
                .with_close_key(Some((1, 60_000_000)))
        };
        let mut op = make();
        run_epoch(&mut op, vec![(0, changes(&input, "1 0 5 +1\n1 60 7 +1"))]);
        let storage = crate::storage::memory::MemoryStorage::new();
        checkpoint(&mut op, &storage, 1);
        let mut back = make();
        back.restore(&StateReader::new(1, &storage)).unwrap();
        for op in [&mut op, &mut back] {
            // The window [0, 60) is open until the watermark reaches 60 s.
            op.on_watermark(59_999_999, &mut vec![]).unwrap();
            assert_eq!(op.state_entries(), 2);
            op.on_watermark(60_000_000, &mut vec![]).unwrap();
            assert_eq!(op.state_entries(), 1);
            // A change for it is late; the next window still counts.
            let out = run_epoch(op, vec![(0, changes(&input, "1 0 1 +1\n1 60 1 +1"))]);
            assert_eq!(
                out,
                vec![format!("1 {} 1 -1", ts(60)), format!("1 {} 2 +1", ts(60))]
            );
            assert_eq!(op.late_rows(), 1);
        }
    }

    #[test]
    fn group_by_emits_one_update_per_group_per_epoch() {
        let (mut op, s) = grouped();
        let out = run_epoch(&mut op, vec![(0, changes(&s, "a 1 +1\na 5 +1\nb 2 +1"))]);
        assert_eq!(out, vec!["a 2 6 1 5 2 +1", "b 1 2 2 2 1 +1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "a 7 +1"))]);
        assert_eq!(out, vec!["a 2 6 1 5 2 -1", "a 3 13 1 7 3 +1"]);
    }

    #[test]
    fn deleting_the_current_min_and_max_finds_the_next() {
        let (mut op, s) = grouped();
        run_epoch(
            &mut op,
            vec![(0, changes(&s, "a 1 +1\na 5 +1\na 3 +1\na 3 +1"))],
        );
        let out = run_epoch(&mut op, vec![(0, changes(&s, "a 1 -1\na 5 -1"))]);
        assert_eq!(out, vec!["a 2 6 3 3 1 +1", "a 4 12 1 5 3 -1"]);
    }

    #[test]
    fn group_disappears_when_its_last_row_is_deleted() {
        let (mut op, s) = grouped();
        run_epoch(&mut op, vec![(0, changes(&s, "a 1 +1\nb 2 +1"))]);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "a 1 -1"))]);
        assert_eq!(out, vec!["a 1 1 1 1 1 -1"]);
        assert_eq!(op.state_entries(), 1);
    }

    #[test]
    fn changes_that_cancel_within_an_epoch_emit_nothing() {
        let (mut op, s) = grouped();
        run_epoch(&mut op, vec![(0, changes(&s, "a 1 +1"))]);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "a 9 +1\na 9 -1"))]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn global_aggregate_has_a_row_even_when_empty() {
        let input = schema(&[("v", I64)]);
        let output = schema(&[("n", I64), ("s", I64)]);
        let aggs = vec![
            agg(AggKind::CountStar, false, None, &input, DataType::Int64),
            agg(AggKind::Sum, false, Some("v"), &input, DataType::Int64),
        ];
        let mut op =
            HashAggOperator::new(output, vec![], aggs, String::new(), EvalErrors::new()).unwrap();
        let out = run_epoch(&mut op, vec![]);
        assert_eq!(out, vec!["0 NULL +1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&input, "4 +1"))]);
        assert_eq!(out, vec!["0 NULL -1", "1 4 +1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&input, "4 -1"))]);
        assert_eq!(out, vec!["0 NULL +1", "1 4 -1"]);
    }

    #[test]
    fn append_only_min_max_keep_one_value_and_refuse_retractions() {
        let input = schema(&[("k", STR), ("v", I64)]);
        let output = schema(&[("k", STR), ("lo", I64), ("hi", I64)]);
        let aggs = vec![
            agg(AggKind::Min, false, Some("v"), &input, DataType::Int64),
            agg(AggKind::Max, false, Some("v"), &input, DataType::Int64),
        ];
        let keys = vec![col("k", &input).unwrap()];
        let mut op = HashAggOperator::new(output, keys, aggs, String::new(), EvalErrors::new())
            .unwrap()
            .with_append_only(true);
        assert!(op.state_description().unwrap().contains("one value"));
        let out = run_epoch(
            &mut op,
            vec![(0, changes(&input, "a 5 +1\na 2 +1\na NULL +1\nb 7 +1"))],
        );
        assert_eq!(out, vec!["a 2 5 +1", "b 7 7 +1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&input, "a 9 +1\na 3 +1"))]);
        assert_eq!(out, vec!["a 2 5 -1", "a 2 9 +1"]);
        // State survives a restart in its compact form.
        let storage = crate::storage::MemoryStorage::new();
        checkpoint(&mut op, &storage, 4);
        let mut restored = HashAggOperator::new(
            schema(&[("k", STR), ("lo", I64), ("hi", I64)]),
            vec![col("k", &input).unwrap()],
            vec![
                agg(AggKind::Min, false, Some("v"), &input, DataType::Int64),
                agg(AggKind::Max, false, Some("v"), &input, DataType::Int64),
            ],
            String::new(),
            EvalErrors::new(),
        )
        .unwrap()
        .with_append_only(true);
        restored.restore(&StateReader::new(4, &storage)).unwrap();
        assert_eq!(
            run_epoch(&mut restored, vec![(0, changes(&input, "b 1 +1"))]),
            vec!["b 1 7 +1", "b 7 7 -1"]
        );
        // A retraction would make the one kept value wrong: it is refused.
        assert!(op
            .process(0, changes(&input, "a 9 -1"), &mut vec![])
            .is_err());
    }

    #[test]
    fn aggregate_state_survives_checkpoint_and_restore() {
        let storage = crate::storage::MemoryStorage::new();
        let (mut op, s) = grouped();
        run_epoch(&mut op, vec![(0, changes(&s, "a 1 +1\na 5 +1\nb 2 +1"))]);
        checkpoint(&mut op, &storage, 3);
        run_epoch(&mut op, vec![(0, changes(&s, "b 2 -1"))]);
        checkpoint(&mut op, &storage, 3);
        let (mut restored, _) = grouped();
        restored.restore(&StateReader::new(3, &storage)).unwrap();
        let out = run_epoch(&mut restored, vec![(0, changes(&s, "a 1 -1"))]);
        assert_eq!(out, vec!["a 1 5 5 5 1 +1", "a 2 6 1 5 2 -1"]);
        assert_eq!(restored.state_entries(), 1);
    }
}
