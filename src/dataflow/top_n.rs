//! [`TopNOperator`]: `ORDER BY ... LIMIT n [OFFSET m]`, optionally per partition.
//!
//! State per partition: every row, ordered by the sort key (ties broken by the row's own
//! encoding, so the result is deterministic). Rows outside the top are kept so that a
//! deleted top row can be replaced. At the end of an epoch the operator compares each
//! touched partition's top rows before and after and emits the difference.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_plan::PhysicalExpr;

use super::expr::{evaluate, EvalErrors};
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::rowcodec::{RowCodec, SortOrder};

type Partition = BTreeMap<Vec<u8>, (Bytes, i64)>;

pub struct TopNOperator {
    schema: SchemaRef,
    sort_exprs: Vec<Arc<dyn PhysicalExpr>>,
    sort_codec: RowCodec,
    partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
    partition_codec: RowCodec,
    row_codec: RowCodec,
    limit: usize,
    offset: usize,
    partitions: HashMap<Bytes, Partition>,
    /// Partitions touched this epoch → their top rows before it.
    touched: HashMap<Bytes, Vec<(Bytes, i64)>>,
    /// Entries changed since the last checkpoint, each with whether storage has it (its
    /// presence when first changed): one that comes and goes in between writes nothing.
    dirty: HashMap<(Bytes, Vec<u8>), bool>,
    display: String,
    errors: Arc<EvalErrors>,
    /// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) <= n`: each row comes out with
    /// its position in its partition (a last UInt64 column, from 1); a row whose position
    /// changes is retracted and emitted again.
    out_schema: Option<SchemaRef>,
    /// The input only inserts: a row that falls out of the top can never come back, so
    /// only the top rows are kept.
    append_only: bool,
}

impl TopNOperator {
    /// Append each row's position in its partition (ROW_NUMBER) as the last column of
    /// `out_schema` (the input's columns plus one UInt64).
    pub fn with_row_number(mut self, out_schema: SchemaRef) -> Self {
        self.out_schema = Some(out_schema);
        self
    }

    /// The rows of a top list, one per copy, with their position (from 1).
    fn numbered(list: &[(Bytes, i64)]) -> Vec<(Bytes, u64)> {
        let mut out = vec![];
        for (row, count) in list {
            for _ in 0..(*count).max(0) {
                let n = out.len() as u64 + 1;
                out.push((row.clone(), n));
            }
        }
        out
    }
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        schema: SchemaRef,
        sort_exprs: Vec<(Arc<dyn PhysicalExpr>, SortOrder)>,
        partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
        limit: usize,
        offset: usize,
        display: String,
        errors: Arc<EvalErrors>,
    ) -> Result<Self> {
        let sort_types = sort_exprs
            .iter()
            .map(|(e, _)| e.data_type(&schema))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let orders = sort_exprs.iter().map(|(_, o)| *o).collect();
        let part_types = partition_exprs
            .iter()
            .map(|e| e.data_type(&schema))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let row_types = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Self {
            sort_codec: RowCodec::with_orders(sort_types, orders)?,
            sort_exprs: sort_exprs.into_iter().map(|(e, _)| e).collect(),
            partition_codec: RowCodec::new(part_types)?,
            partition_exprs,
            row_codec: RowCodec::new(row_types)?,
            schema,
            limit,
            offset,
            partitions: HashMap::new(),
            touched: HashMap::new(),
            dirty: HashMap::new(),
            display,
            errors,
            out_schema: None,
            append_only: false,
        })
    }

    /// Declare the input insert-only (see the `append_only` field).
    pub fn with_append_only(mut self, append_only: bool) -> Self {
        self.append_only = append_only;
        self
    }

    /// Append-only input: forget the rows of `parts` below their top.
    fn trim(&mut self, parts: &[Bytes]) {
        if !self.append_only {
            return;
        }
        let keep = self.offset.saturating_add(self.limit);
        for part in parts {
            let Some(p) = self.partitions.get_mut(part) else {
                continue;
            };
            let mut seen: usize = 0;
            let mut drop: Vec<Vec<u8>> = vec![];
            for (key, (_, count)) in p.iter() {
                if seen >= keep {
                    drop.push(key.clone());
                }
                seen = seen.saturating_add((*count).max(0) as usize);
            }
            for key in drop {
                p.remove(&key);
                self.dirty.entry((part.clone(), key)).or_insert(true);
            }
        }
    }

    fn top(&self, part: Option<&Partition>) -> Vec<(Bytes, i64)> {
        let mut out = vec![];
        let Some(p) = part else { return out };
        // LIMIT ALL is usize::MAX: saturate, do not wrap to -1.
        let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (mut skip, mut take) = (clamp(self.offset), clamp(self.limit));
        for (row, count) in p.values() {
            if take == 0 {
                break;
            }
            let mut c = (*count).max(0);
            let s = skip.min(c);
            skip -= s;
            c -= s;
            let t = take.min(c);
            if t > 0 {
                out.push((row.clone(), t));
                take -= t;
            }
        }
        out
    }

    fn encode(
        &self,
        exprs: &[Arc<dyn PhysicalExpr>],
        codec: &RowCodec,
        batch: &RecordBatch,
    ) -> Result<Vec<Vec<u8>>> {
        if exprs.is_empty() {
            return Ok(vec![vec![]; batch.num_rows()]);
        }
        let cols = exprs
            .iter()
            .map(|e| evaluate(e, batch, &self.errors))
            .collect::<Result<Vec<_>>>()?;
        Ok(codec.encode_rows(&cols, batch.num_rows()))
    }

    /// A partition's top rows as output keys: `(row, None)` with its count, or, when
    /// the operator numbers its rows, `(row, Some(n))` once per copy.
    fn output_rows(&self, list: &[(Bytes, i64)]) -> Vec<((Bytes, Option<u64>), i64)> {
        if self.out_schema.is_some() {
            Self::numbered(list)
                .into_iter()
                .map(|(r, n)| ((r, Some(n)), 1))
                .collect()
        } else {
            list.iter().map(|(r, c)| ((r.clone(), None), *c)).collect()
        }
    }

    fn end_epoch_inner(&mut self, out: &mut Output) -> Result<()> {
        let mut net: HashMap<(Bytes, Option<u64>), i64> = HashMap::new();
        for (part, before) in std::mem::take(&mut self.touched) {
            for (r, c) in self.output_rows(&before) {
                *net.entry(r).or_default() -= c;
            }
            for (r, c) in self.output_rows(&self.top(self.partitions.get(&part))) {
                *net.entry(r).or_default() += c;
            }
        }
        let mut rows: Vec<((Bytes, Option<u64>), i64)> =
            net.into_iter().filter(|(_, d)| *d != 0).collect();
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_by_key(|(_, d)| *d);
        let bytes: Vec<&[u8]> = rows.iter().map(|((r, _), _)| r.as_ref()).collect();
        let mut cols = self.row_codec.decode(&bytes)?;
        let schema = match &self.out_schema {
            Some(out_schema) => {
                cols.push(Arc::new(
                    datafusion::arrow::array::UInt64Array::from_iter_values(
                        rows.iter().map(|((_, n), _)| n.unwrap_or_default()),
                    ),
                ));
                out_schema.clone()
            }
            None => self.schema.clone(),
        };
        let data = RecordBatch::try_new_with_options(
            schema,
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        out.push(ChangeBatch::new(
            data,
            Int64Array::from_iter_values(rows.iter().map(|(_, d)| *d)),
        ));
        Ok(())
    }
}

impl Operator for TopNOperator {
    fn name(&self) -> &'static str {
        "TopNOperator"
    }

    fn describe(&self) -> String {
        self.display.clone()
    }

    fn state_description(&self) -> Option<String> {
        Some("all rows per partition, ordered by the sort key".into())
    }

    fn output_schema(&self) -> SchemaRef {
        self.out_schema
            .clone()
            .unwrap_or_else(|| self.schema.clone())
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, _out: &mut Output) -> Result<()> {
        let parts = self.encode(&self.partition_exprs, &self.partition_codec, &batch.data)?;
        let sorts = self.encode(&self.sort_exprs, &self.sort_codec, &batch.data)?;
        let rows = self
            .row_codec
            .encode_rows(batch.columns(), batch.num_rows());
        for (i, ((part, mut key), row)) in parts.into_iter().zip(sorts).zip(rows).enumerate() {
            let part = Bytes::from(part);
            if !self.touched.contains_key(&part) {
                let before = self.top(self.partitions.get(&part));
                self.touched.insert(part.clone(), before);
            }
            key.extend_from_slice(&row);
            let p = self.partitions.entry(part.clone()).or_default();
            let e = p
                .entry(key.clone())
                .or_insert_with(|| (Bytes::from(row), 0));
            // Counts of zero leave the partition: a zero here was just inserted.
            let present = e.1 != 0;
            e.1 += batch.diff(i);
            if e.1 == 0 {
                p.remove(&key);
            }
            if p.is_empty() {
                self.partitions.remove(&part);
            }
            self.dirty.entry((part, key)).or_insert(present);
        }
        Ok(())
    }

    fn end_epoch(&mut self, out: &mut Output) -> Result<()> {
        let parts: Vec<Bytes> = self.touched.keys().cloned().collect();
        self.end_epoch_inner(out)?;
        self.trim(&parts);
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        for ((part, key), stored) in self.dirty.drain() {
            let mut k = (part.len() as u32).to_be_bytes().to_vec();
            k.extend_from_slice(&part);
            k.extend_from_slice(&key);
            match self.partitions.get(&part).and_then(|p| p.get(&key)) {
                Some((row, count)) => {
                    let mut v = count.to_le_bytes().to_vec();
                    v.extend_from_slice(row);
                    state.put(&k, &v);
                }
                None if stored => state.delete(&k),
                None => {}
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let bad = || Error::Storage("corrupt top-n state".into());
        let parts = &mut self.partitions;
        state.for_each(&mut |k, v| {
            let plen =
                u32::from_be_bytes(k.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?)
                    as usize;
            let part = k.get(4..4 + plen).ok_or_else(bad)?;
            let key = &k[4 + plen..];
            let count =
                i64::from_le_bytes(v.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            parts
                .entry(Bytes::copy_from_slice(part))
                .or_default()
                .insert(key.to_vec(), (Bytes::copy_from_slice(&v[8..]), count));
            Ok(())
        })
    }

    fn state_entries(&self) -> usize {
        self.partitions.values().map(|p| p.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;
    use datafusion::physical_expr::expressions::col;

    fn top2_by_v_desc() -> (TopNOperator, SchemaRef) {
        let s = schema(&[("k", I64), ("v", I64)]);
        let sort = vec![(col("v", &s).unwrap(), SortOrder::new(true, false))];
        (
            TopNOperator::new(
                s.clone(),
                sort,
                vec![],
                2,
                0,
                String::new(),
                EvalErrors::new(),
            )
            .unwrap(),
            s,
        )
    }

    /// ROW_NUMBER() OVER (PARTITION BY g ORDER BY v DESC) <= 2, over (g, v).
    fn numbered(append_only: bool) -> (TopNOperator, SchemaRef) {
        let s = schema(&[("g", I64), ("v", I64)]);
        let out = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("g", I64, true),
            datafusion::arrow::datatypes::Field::new("v", I64, true),
            datafusion::arrow::datatypes::Field::new(
                "rn",
                datafusion::arrow::datatypes::DataType::UInt64,
                true,
            ),
        ]));
        let sort = vec![(col("v", &s).unwrap(), SortOrder::new(true, false))];
        let op = TopNOperator::new(
            s.clone(),
            sort,
            vec![col("g", &s).unwrap()],
            2,
            0,
            String::new(),
            EvalErrors::new(),
        )
        .unwrap()
        .with_row_number(out)
        .with_append_only(append_only);
        (op, s)
    }

    #[test]
    fn row_numbers_follow_rows_that_move_within_their_partition() {
        let (mut op, s) = numbered(false);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 10 +1\n1 20 +1\n2 5 +1"))]);
        assert_eq!(out, vec!["1 10 2 +1", "1 20 1 +1", "2 5 1 +1"]);
        // A new best row pushes the others down; the third falls out.
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 30 +1"))]);
        assert_eq!(
            out,
            vec!["1 10 2 -1", "1 20 1 -1", "1 20 2 +1", "1 30 1 +1"]
        );
        // Deleting the best brings the third back, renumbered.
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 30 -1"))]);
        assert_eq!(
            out,
            vec!["1 10 2 +1", "1 20 1 +1", "1 20 2 -1", "1 30 1 -1"]
        );
        assert_eq!(op.state_entries(), 3);
    }

    #[test]
    fn append_only_input_keeps_only_the_top_rows() {
        let (mut op, s) = numbered(true);
        run_epoch(
            &mut op,
            vec![(0, changes(&s, "1 10 +1\n1 20 +1\n1 30 +1\n1 5 +1"))],
        );
        assert_eq!(op.state_entries(), 2);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 25 +1\n1 1 +1"))]);
        assert_eq!(out, vec!["1 20 2 -1", "1 25 2 +1"]);
        assert_eq!(op.state_entries(), 2);
    }

    #[test]
    fn top_n_replaces_a_deleted_top_row_with_the_next_one() {
        let (mut op, s) = top2_by_v_desc();
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 10 +1\n2 30 +1\n3 20 +1"))]);
        assert_eq!(out, vec!["2 30 +1", "3 20 +1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "2 30 -1"))]);
        assert_eq!(out, vec!["1 10 +1", "2 30 -1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&s, "4 5 +1"))]);
        assert!(out.is_empty());
    }

    #[test]
    fn top_n_counts_duplicates_and_honours_offset() {
        let s = schema(&[("k", I64), ("v", I64)]);
        let sort = vec![(col("v", &s).unwrap(), SortOrder::default())];
        let mut op = TopNOperator::new(
            s.clone(),
            sort,
            vec![],
            2,
            1,
            String::new(),
            EvalErrors::new(),
        )
        .unwrap();
        let out = run_epoch(&mut op, vec![(0, changes(&s, "1 1 +1\n2 2 +2\n3 3 +1"))]);
        assert_eq!(out, vec!["2 2 +2"]);
    }

    #[test]
    fn top_n_per_partition() {
        let s = schema(&[("g", STR), ("v", I64)]);
        let sort = vec![(col("v", &s).unwrap(), SortOrder::new(true, false))];
        let mut op = TopNOperator::new(
            s.clone(),
            sort,
            vec![col("g", &s).unwrap()],
            1,
            0,
            String::new(),
            EvalErrors::new(),
        )
        .unwrap();
        let out = run_epoch(&mut op, vec![(0, changes(&s, "a 1 +1\na 2 +1\nb 5 +1"))]);
        assert_eq!(out, vec!["a 2 +1", "b 5 +1"]);
    }

    /// An entry that comes and goes between two checkpoints writes nothing; one a
    /// checkpoint wrote is deleted by the next.
    #[test]
    fn entries_no_checkpoint_saw_leave_nothing_to_delete() {
        let (mut op, s) = top2_by_v_desc();
        run_epoch(&mut op, vec![(0, changes(&s, "1 10 +1\n2 30 +1"))]);
        run_epoch(&mut op, vec![(0, changes(&s, "2 30 -1"))]);
        let first = checkpoint_writes(&mut op);
        assert_eq!(first.len(), 1, "only 1 10: {first:?}");
        assert!(first[0].1);
        run_epoch(&mut op, vec![(0, changes(&s, "3 20 +1\n1 10 -1"))]);
        run_epoch(&mut op, vec![(0, changes(&s, "3 20 -1"))]);
        assert_eq!(
            checkpoint_writes(&mut op),
            vec![(first[0].0.clone(), false)]
        );
        assert!(checkpoint_writes(&mut op).is_empty());
    }
}
