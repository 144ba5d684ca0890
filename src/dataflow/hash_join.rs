//! [`HashJoinOperator`]: incremental equi-join — inner, left/right/full outer, semi and
//! anti — with an optional residual (non-equi) predicate.
//!
//! Both inputs are kept in state, indexed by join key. A change on one side is joined
//! with the other side's current state: Δ(A⋈B) = ΔA⋈B + A'⋈ΔB, processed one side at
//! a time so that each pair is counted once.
//!
//! Outer, semi and anti joins need to know whether a row has any match. Each stored row
//! of a "tracked" side keeps `matches`: the number of rows of the other side (weighted by
//! multiplicity) that join with it, residual predicate included. Every output that
//! depends on it is a function of the state — `count × [matches = 0]` for a NULL-padded
//! outer row or an anti-join row, `count × [matches ≠ 0]` for a semi-join row — and the
//! operator always emits the difference of that function before and after a change.
//! So transient states inside an epoch cancel out and the output is exact under any
//! interleaving of insertions and retractions.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_plan::PhysicalExpr;

use super::expr::{evaluate, evaluate_predicate, EvalErrors};
use super::{ChangeBatch, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::rowcodec::RowCodec;

/// Which rows a join emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    LeftSemi,
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    /// Does the join emit matched (left, right) pairs?
    fn emits_pairs(self) -> bool {
        matches!(
            self,
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
        )
    }

    /// Must rows of `side` (0 = left) know how many matches they have?
    fn tracks(self, side: usize) -> bool {
        use JoinKind::*;
        match side {
            0 => matches!(self, Left | Full | LeftSemi | LeftAnti),
            _ => matches!(self, Right | Full | RightSemi | RightAnti),
        }
    }

    /// The multiplicity a row of `side` with `count` copies and `matches` matches
    /// contributes on its own (NULL-padded, semi or anti output).
    fn solo(self, side: usize, count: i64, matches: i64) -> i64 {
        use JoinKind::*;
        let unmatched = matches == 0;
        let out = match (self, side) {
            (Left, 0) | (Full, _) | (Right, 1) | (LeftAnti, 0) | (RightAnti, 1) => unmatched,
            (LeftSemi, 0) | (RightSemi, 1) => !unmatched,
            _ => false,
        };
        if out {
            count
        } else {
            0
        }
    }
}

/// An encoded key or row. Shared, not copied, between the index, the dirty list and
/// output rows under construction: a clone is a reference count.
type Bytes = Arc<[u8]>;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RowState {
    count: i64,
    matches: i64,
    /// Changed since the last checkpoint, and so on its side's `dirty` list.
    dirty: bool,
    /// Written by a checkpoint (or restored): storage has it. A row that leaves the
    /// index before any checkpoint wrote it leaves nothing to delete.
    persisted: bool,
}

/// The rows stored under one join key. Most keys of a windowed join hold one row (q7's
/// `(window_start, price)`, q8's `(id, window_start)`): that row is kept inline, and a
/// hash map is made only for a second row. (A map per key, made and freed with each
/// row, was a tenth of q7's time.)
#[derive(Debug)]
enum Bucket {
    One(Bytes, RowState),
    /// Also the empty bucket (an empty map allocates nothing).
    Many(HashMap<Bytes, RowState>),
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket::Many(HashMap::new())
    }
}

impl Bucket {
    fn is_empty(&self) -> bool {
        match self {
            Bucket::One(..) => false,
            Bucket::Many(m) => m.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Bucket::One(..) => 1,
            Bucket::Many(m) => m.len(),
        }
    }

    /// The rows and their states (no allocation: this runs for every probe).
    fn iter(&self) -> impl Iterator<Item = (&Bytes, &RowState)> + '_ {
        let (one, many) = match self {
            Bucket::One(r, st) => (Some((r, st)), None),
            Bucket::Many(m) => (None, Some(m.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn get(&self, row: &[u8]) -> Option<&RowState> {
        match self {
            Bucket::One(r, st) => (r.as_ref() == row).then_some(st),
            Bucket::Many(m) => m.get(row),
        }
    }

    fn get_mut(&mut self, row: &[u8]) -> Option<&mut RowState> {
        match self {
            Bucket::One(r, st) => (r.as_ref() == row).then_some(st),
            Bucket::Many(m) => m.get_mut(row),
        }
    }

    /// The state of `row`, `new` if the bucket lacks it.
    fn entry(&mut self, row: &Bytes, new: RowState) -> &mut RowState {
        match self {
            Bucket::Many(m) if m.is_empty() => *self = Bucket::One(row.clone(), new),
            Bucket::One(r, _) if r != row => {
                if let Bucket::One(r, st) = std::mem::take(self) {
                    let mut m = HashMap::with_capacity(2);
                    m.insert(r, st);
                    *self = Bucket::Many(m);
                }
            }
            _ => {}
        }
        match self {
            Bucket::One(_, st) => st,
            Bucket::Many(m) => m.entry(row.clone()).or_insert(new),
        }
    }

    fn remove(&mut self, row: &[u8]) -> Option<RowState> {
        match self {
            Bucket::One(r, _) if r.as_ref() == row => match std::mem::take(self) {
                Bucket::One(_, st) => Some(st),
                Bucket::Many(_) => None,
            },
            Bucket::One(..) => None,
            Bucket::Many(m) => m.remove(row),
        }
    }
}

/// Equal when they hold the same rows with the same states, however they are held.
impl PartialEq for Bucket {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(r, st)| other.get(r) == Some(st))
    }
}

#[derive(Default)]
struct Side {
    /// join key → row → state
    index: HashMap<Bytes, Bucket>,
    /// Rows changed since the last checkpoint, each listed when its `dirty` flag is set.
    /// A row that leaves and comes back is listed twice; the checkpoint writes it once. A list instead of a set: inserting
    /// every changed row into a hash set was a seventh of q4's time.
    dirty: Vec<(Bytes, Bytes)>,
    /// Rows that left the index since the last checkpoint and that storage has: their
    /// deletes. (Most rows of a time-bounded join leave before any checkpoint saw them,
    /// and write nothing.)
    gone: Vec<(Bytes, Bytes)>,
    rows: usize,
    /// With a time bound: stored rows by event time (µs), to expire them.
    by_time: BTreeMap<i64, Vec<(Bytes, Bytes)>>,
}

/// A time-bounded (interval) join: conditions `left.a - right.b >= lo` and/or
/// `left.c - right.d <= hi` (µs), each with one column per side. The column on the
/// far side of each condition follows the watermark W with a delay (see
/// `plan::event_time`): every change still to come on that side has a value of at
/// least `W - delay` (0 for an event-time column, a window's size less 1µs for its
/// start). So a left row with `a < W - delay + lo` and a right row with
/// `d < W - delay - hi` can meet no future row, and leave the state; what they emitted
/// stays (an outer row that never matched stays NULL-padded).
///
/// - `c.t BETWEEN s.t AND s.t + INTERVAL '1' MINUTE`: one pair of columns, both ends.
/// - Equal window starts (q7's join): one pair, `[0, 0]`: a window's rows leave once it
///   has closed.
/// - `B.t BETWEEN A.t AND A.expires` (q4): a bid leaves once the watermark passes its
///   time (`A.t - B.t <= 0`), an auction once it passes its `expires`
///   (`A.expires - B.t >= 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeBound {
    /// `left - right >= value`: how left rows expire.
    pub lo: Option<Expiry>,
    /// `left - right <= value`: how right rows expire.
    pub hi: Option<Expiry>,
}

/// One side of a [`TimeBound`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expiry {
    /// The condition's column in each input: the expiring side's own time, and the
    /// other side's column that follows the watermark.
    pub columns: [usize; 2],
    /// How far below the watermark the other side's column may still come (µs).
    pub delay: i64,
    /// The same for the expiring side's own column, when it follows the watermark.
    pub own_delay: Option<i64>,
    /// The bound on `left - right` (µs).
    pub value: i64,
}

impl TimeBound {
    /// How rows of `side` expire, if they do.
    fn expiry(&self, side: usize) -> Option<Expiry> {
        if side == 0 {
            self.lo
        } else {
            self.hi
        }
    }

    /// The rows of `side` older than this (by `expiry(side).columns[side]`) can meet no
    /// future row, at watermark `w`.
    fn cutoff(&self, side: usize, w: i64) -> Option<i64> {
        let e = self.expiry(side)?;
        let base = w.saturating_sub(e.delay);
        Some(if side == 0 {
            base.saturating_add(e.value)
        } else {
            base.saturating_sub(e.value)
        })
    }

    /// Can no change come any more for a row of `side` once it has expired? Always
    /// when the side only inserts; for a side that retracts (an aggregate's output),
    /// when its own column follows the watermark and the cutoff stays at or below
    /// `W - own delay`: a retraction carries the row's value, which is then late.
    pub fn expired_rows_stay_gone(&self, side: usize, append_only: bool) -> bool {
        let Some(e) = self.expiry(side) else {
            return true;
        };
        // The cutoff at W, less W, must be at most -own delay.
        append_only
            || e.own_delay.is_some_and(|own| {
                self.cutoff(side, 0)
                    .is_some_and(|offset| offset <= own.saturating_neg())
            })
    }

    /// The column of `side` its rows are timed by: the one they expire by, or else
    /// the one in the other side's condition (a NULL there matches nothing either).
    fn column(&self, side: usize) -> Option<usize> {
        self.expiry(side)
            .or(self.expiry(1 - side))
            .map(|e| e.columns[side])
    }
}

pub struct HashJoinOperator {
    kind: JoinKind,
    schema: SchemaRef,
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    key_types: Vec<DataType>,
    key_codec: RowCodec,
    row_codecs: [RowCodec; 2],
    null_rows: [Bytes; 2],
    input_schemas: [SchemaRef; 2],
    /// Residual predicate over (left columns ++ right columns).
    filter: Option<Arc<dyn PhysicalExpr>>,
    pair_schema: SchemaRef,
    /// When true, NULL keys match each other (IS NOT DISTINCT FROM).
    nulls_equal: bool,
    sides: [Side; 2],
    display: String,
    errors: Arc<EvalErrors>,
    /// A lookup join: rows of this side (a stream) are joined with the other side as it
    /// is at the end of their epoch, and are not kept — later changes of the other side
    /// never revise them.
    lookup: Option<usize>,
    /// The lookup side's rows of the current epoch, joined at its end.
    probes: Vec<ChangeBatch>,
    /// An interval join's bound: rows expire with the watermark.
    time_bound: Option<TimeBound>,
    /// See [`HashJoinOperator::with_semi_held_back`].
    semi_held_back: bool,
}

/// Output row under construction: left row, right row (None = NULLs), multiplicity.
type OutRow = (Option<Bytes>, Option<Bytes>, i64);

impl HashJoinOperator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        schema: SchemaRef,
        left: SchemaRef,
        right: SchemaRef,
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        nulls_equal: bool,
        display: String,
        errors: Arc<EvalErrors>,
    ) -> Result<Self> {
        let key_types = left_keys
            .iter()
            .map(|k| k.data_type(&left))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let codec_for = |s: &SchemaRef| {
            RowCodec::new(s.fields().iter().map(|f| f.data_type().clone()).collect())
        };
        let row_codecs = [codec_for(&left)?, codec_for(&right)?];
        let null_rows = [
            null_row(&row_codecs[0], &left)?,
            null_row(&row_codecs[1], &right)?,
        ];
        let mut fields: Vec<_> = left.fields().iter().cloned().collect();
        fields.extend(right.fields().iter().cloned());
        let pair_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            fields
                .into_iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            kind,
            schema,
            keys: [left_keys, right_keys],
            key_codec: RowCodec::new(key_types.clone())?,
            key_types,
            row_codecs,
            null_rows,
            input_schemas: [left, right],
            filter,
            pair_schema,
            nulls_equal,
            sides: [Side::default(), Side::default()],
            display,
            errors,
            lookup: None,
            probes: vec![],
            time_bound: None,
            semi_held_back: false,
        })
    }

    /// Does `side` hold back its unmatched (NULL-padded, anti) rows until they expire?
    /// In an interval join a side whose rows expire emits them once the watermark
    /// proves no match can come, instead of at once and retracted on a match. A semi
    /// join's rows come out when they match, at once: a first match is not undone by
    /// a later one, and a match that goes away (a retracted maximum in q7) is a
    /// change the view shows like any other.
    fn holds_back(&self, side: usize) -> bool {
        (self.kind.solo(side, 1, 0) != 0 || self.semi_held_back) && self.expires(side)
    }

    /// Do rows of `side` expire with the watermark?
    fn expires(&self, side: usize) -> bool {
        self.time_bound.is_some_and(|b| b.expiry(side).is_some())
    }

    /// Hold a time-bounded semi join's matched rows until they expire, as views
    /// created before plan version 2 did (their held rows are still to come out).
    pub fn with_semi_held_back(mut self, held: bool) -> Self {
        self.semi_held_back = held;
        self
    }

    /// Expire stored rows with the watermark (see [`TimeBound`]). No change may come
    /// for an expired row: the inputs are append-only, or (inner and semi joins) the
    /// bounded columns follow the watermark, retractions included.
    pub fn with_time_bound(mut self, bound: Option<TimeBound>) -> Self {
        self.time_bound = bound;
        self
    }

    /// Event times (µs) of a side's column in `data`, when the join is time-bounded.
    fn event_times(&self, side: usize, data: &RecordBatch) -> Result<Option<Vec<Option<i64>>>> {
        let Some(column) = self.time_bound.and_then(|b| b.column(side)) else {
            return Ok(None);
        };
        Ok(Some(super::watermark::micros(data.column(column))?))
    }

    /// Make this a lookup join probed by `side` (see the `lookup` field). Only inner
    /// joins and outer joins that preserve the probing side mean anything here.
    pub fn with_lookup(mut self, side: Option<usize>) -> Self {
        self.lookup = side;
        self
    }

    /// Encoded join keys of a batch from `side`; `None` where a key is NULL and NULLs
    /// match nothing.
    fn encode_keys(&self, side: usize, batch: &RecordBatch) -> Result<Vec<Option<Bytes>>> {
        let n = batch.num_rows();
        let mut cols = vec![];
        for (k, t) in self.keys[side].iter().zip(&self.key_types) {
            let a = evaluate(k, batch, &self.errors)?;
            cols.push(if a.data_type() != t { cast(&a, t)? } else { a });
        }
        let encoded = self.key_codec.encode_flat(&cols, n);
        let any_nulls = !self.nulls_equal && cols.iter().any(|c| c.null_count() > 0);
        Ok(encoded
            .iter()
            .enumerate()
            .map(|(i, k)| {
                if any_nulls && cols.iter().any(|c| c.is_null(i)) {
                    None
                } else {
                    Some(Bytes::from(k))
                }
            })
            .collect())
    }

    /// Evaluate the residual predicate on candidate pairs.
    fn check_pairs(
        &self,
        side: usize,
        delta: &RecordBatch,
        pairs: &[(usize, Bytes)],
    ) -> Result<Vec<bool>> {
        let Some(filter) = &self.filter else {
            return Ok(vec![true; pairs.len()]);
        };
        if pairs.is_empty() {
            return Ok(vec![]);
        }
        let idx = UInt32Array::from(pairs.iter().map(|(i, _)| *i as u32).collect::<Vec<_>>());
        let mine: Vec<ArrayRef> = delta
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::take(c.as_ref(), &idx, None))
            .collect::<std::result::Result<_, _>>()?;
        let other_rows: Vec<&[u8]> = pairs.iter().map(|(_, r)| r.as_ref()).collect();
        let theirs = self.row_codecs[1 - side].decode(&other_rows)?;
        let cols = if side == 0 {
            [mine, theirs].concat()
        } else {
            [theirs, mine].concat()
        };
        let batch = RecordBatch::try_new_with_options(
            self.pair_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(pairs.len())),
        )?;
        let mask = evaluate_predicate(filter, &batch, &self.errors)?;
        Ok((0..pairs.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect())
    }

    fn process_side(
        &mut self,
        side: usize,
        batch: &ChangeBatch,
        out: &mut Vec<OutRow>,
    ) -> Result<()> {
        let other = 1 - side;
        let keys = self.encode_keys(side, &batch.data)?;
        let rows: Vec<Bytes> = self.row_codecs[side]
            .encode_flat(batch.columns(), batch.num_rows())
            .iter()
            .map(Bytes::from)
            .collect();

        // Candidate pairs with the other side's current state.
        let mut pairs: Vec<(usize, Bytes)> = vec![];
        let mut pair_counts: Vec<i64> = vec![];
        for (i, key) in keys.iter().enumerate() {
            if let Some(bucket) = key.as_ref().and_then(|k| self.sides[other].index.get(k)) {
                for (r, st) in bucket.iter() {
                    pairs.push((i, r.clone()));
                    pair_counts.push(st.count);
                }
            }
        }
        let pass = self.check_pairs(side, &batch.data, &pairs)?;

        let mut my_matches = vec![0i64; batch.num_rows()];
        let track_other = self.kind.tracks(other);
        for (((i, their_row), their_count), ok) in pairs.iter().zip(&pair_counts).zip(&pass) {
            if !ok {
                continue;
            }
            let d = batch.diff(*i);
            my_matches[*i] += their_count;
            if self.kind.emits_pairs() {
                out.push(pair(
                    side,
                    rows[*i].clone(),
                    their_row.clone(),
                    d * their_count,
                ));
            }
            if track_other {
                let key = keys[*i]
                    .clone()
                    .ok_or_else(|| Error::internal("pair without key"))?;
                let held_back = self.holds_back(other);
                let s = &mut self.sides[other];
                let st = s
                    .index
                    .get_mut(&key)
                    .and_then(|b| b.get_mut(their_row))
                    .ok_or_else(|| Error::internal("join partner vanished"))?;
                let before = self.kind.solo(other, st.count, st.matches);
                st.matches += d;
                let after = self.kind.solo(other, st.count, st.matches);
                // An interval join's unmatched rows come out when they expire.
                if after != before && !held_back {
                    out.push(solo(other, their_row.clone(), after - before));
                }
                mark_dirty(st, &mut s.dirty, &key, their_row);
            }
        }

        // Apply this side's changes to its state, and its own solo outputs.
        let times = self.event_times(side, &batch.data)?;
        let expires = self.expires(side);
        for (i, (key, row)) in keys.into_iter().zip(rows).enumerate() {
            let d = batch.diff(i);
            let m = my_matches[i];
            let delta = self.kind.solo(side, d, m);
            // In an interval join a row without an event time matches nothing: final.
            let timeless = times.as_ref().is_some_and(|t| t[i].is_none());
            if delta != 0 && (!self.holds_back(side) || key.is_none() || timeless) {
                out.push(solo(side, row.clone(), delta));
            }
            // A row whose key can never match needs no state: its output is final. Nor
            // does a lookup join's probing row: it is never revised.
            let Some(key) = key else { continue };
            if timeless {
                continue;
            }
            if self.lookup == Some(side) {
                continue;
            }
            let s = &mut self.sides[side];
            let bucket = s.index.entry(key.clone()).or_default();
            let st = bucket.entry(
                &row,
                RowState {
                    count: 0,
                    matches: m,
                    dirty: false,
                    persisted: false,
                },
            );
            st.count += d;
            st.matches = m;
            if st.count == 0 {
                if st.persisted {
                    s.gone.push((key.clone(), row.clone()));
                }
                bucket.remove(&row);
                s.rows = s.rows.saturating_sub(1);
                if bucket.is_empty() {
                    s.index.remove(&key);
                }
                continue;
            }
            mark_dirty(st, &mut s.dirty, &key, &row);
            if st.count == d {
                s.rows += 1;
                // Timed only when this side's rows expire.
                if let Some(t) = times.as_ref().and_then(|t| t[i]).filter(|_| expires) {
                    s.by_time
                        .entry(t)
                        .or_default()
                        .push((key.clone(), row.clone()));
                }
            }
        }
        Ok(())
    }

    fn build_output(&self, rows: &[OutRow]) -> Result<ChangeBatch> {
        let pick = |side: usize, r: &OutRow| -> Bytes {
            let b = if side == 0 { &r.0 } else { &r.1 };
            b.clone().unwrap_or_else(|| self.null_rows[side].clone())
        };
        let mut cols: Vec<ArrayRef> = vec![];
        let want_left = !matches!(self.kind, JoinKind::RightSemi | JoinKind::RightAnti);
        let want_right = !matches!(self.kind, JoinKind::LeftSemi | JoinKind::LeftAnti);
        if want_left {
            let l: Vec<Bytes> = rows.iter().map(|r| pick(0, r)).collect();
            cols.extend(self.row_codecs[0].decode(&l)?);
        }
        if want_right {
            let r: Vec<Bytes> = rows.iter().map(|r| pick(1, r)).collect();
            cols.extend(self.row_codecs[1].decode(&r)?);
        }
        // Output fields may differ in nullability or (rarely) in type from the inputs.
        let cols = cols
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() != f.data_type() {
                    cast(&c, f.data_type())
                } else {
                    Ok(c)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(ChangeBatch::new(
            data,
            Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        ))
    }
}

fn pair(side: usize, mine: Bytes, theirs: Bytes, diff: i64) -> OutRow {
    if side == 0 {
        (Some(mine), Some(theirs), diff)
    } else {
        (Some(theirs), Some(mine), diff)
    }
}

fn solo(side: usize, row: Bytes, diff: i64) -> OutRow {
    if side == 0 {
        (Some(row), None, diff)
    } else {
        (None, Some(row), diff)
    }
}

fn null_row(codec: &RowCodec, schema: &SchemaRef) -> Result<Bytes> {
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    Ok(Bytes::from(codec.encode_rows(&cols, 1).remove(0)))
}

/// Flag a stored row as changed since the last checkpoint, listing it the first time.
/// (A row that leaves the index goes on its side's `gone` list instead, if storage has
/// it.)
fn mark_dirty(st: &mut RowState, list: &mut Vec<(Bytes, Bytes)>, key: &Bytes, row: &Bytes) {
    if !st.dirty {
        st.dirty = true;
        list.push((key.clone(), row.clone()));
    }
}

/// Storage key of one stored row, into `k`: side, key length, key, row.
fn state_key(k: &mut Vec<u8>, side: usize, key: &[u8], row: &[u8]) {
    k.clear();
    k.push(side as u8);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key);
    k.extend_from_slice(row);
}

impl Operator for HashJoinOperator {
    fn name(&self) -> &'static str {
        "HashJoinOperator"
    }

    fn preserves_append_only(&self) -> bool {
        // Outer, semi and anti joins retract rows as matches come and go.
        self.kind == JoinKind::Inner
    }

    fn describe(&self) -> String {
        if let Some(b) = self.time_bound {
            let secs = |e: Option<Expiry>| {
                e.map_or("unbounded".to_string(), |e| {
                    format!("{} s", e.value as f64 / 1e6)
                })
            };
            let same_columns = match (b.lo, b.hi) {
                (Some(lo), Some(hi)) => lo.columns == hi.columns,
                _ => true,
            };
            if same_columns {
                return format!(
                    "{} (interval: left.t - right.t in [{}, {}], state expires with the watermark)",
                    self.display,
                    secs(b.lo),
                    secs(b.hi)
                );
            }
            // Two conditions on different columns (q4's BETWEEN A.date_time AND A.expires).
            let name = |side: usize, e: Expiry| {
                self.input_schemas[side]
                    .field(e.columns[side])
                    .name()
                    .clone()
            };
            let cond = |e: Option<Expiry>, op: &str| {
                e.map(|e| {
                    format!(
                        "left.{} - right.{} {op} {}",
                        name(0, e),
                        name(1, e),
                        secs(Some(e))
                    )
                })
            };
            let conds: Vec<String> = [cond(b.lo, ">="), cond(b.hi, "<=")]
                .into_iter()
                .flatten()
                .collect();
            return format!(
                "{} (interval: {}, state expires with the watermark)",
                self.display,
                conds.join(", ")
            );
        }
        match self.lookup {
            Some(side) => format!(
                "{} (lookup: {} rows probe the {} side)",
                self.display,
                ["left", "right"][side],
                ["left", "right"][1 - side]
            ),
            None => self.display.clone(),
        }
    }

    fn state_description(&self) -> Option<String> {
        if let Some(side) = self.lookup {
            return Some(format!("{} rows by key only", ["left", "right"][1 - side]));
        }
        let track = |s| {
            if self.kind.tracks(s) {
                " with match counts"
            } else {
                ""
            }
        };
        Some(format!(
            "left rows by key{}, right rows by key{}",
            track(0),
            track(1)
        ))
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process(&mut self, port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        if port > 1 {
            return Err(Error::internal(format!("join has no input {port}")));
        }
        let batch = if batch.schema().fields().len() == self.input_schemas[port].fields().len() {
            batch.with_schema(self.input_schemas[port].clone())?
        } else {
            return Err(Error::internal(
                "join input has the wrong number of columns",
            ));
        };
        if self.lookup == Some(port) {
            if batch.diffs.values().iter().any(|d| *d < 0) {
                return Err(Error::internal(
                    "a retraction reached the probing side of a lookup join",
                ));
            }
            self.probes.push(batch);
            return Ok(());
        }
        let mut rows = vec![];
        self.process_side(port, &batch, &mut rows)?;
        if !rows.is_empty() {
            out.push(self.build_output(&rows)?);
        }
        Ok(())
    }

    /// A lookup join joins the epoch's probing rows with the other side as the epoch
    /// left it (so a table row and the stream rows of the same epoch always meet).
    fn end_epoch(&mut self, out: &mut Output) -> Result<()> {
        let Some(side) = self.lookup else {
            return Ok(());
        };
        let mut rows = vec![];
        for batch in std::mem::take(&mut self.probes) {
            self.process_side(side, &batch, &mut rows)?;
        }
        if !rows.is_empty() {
            out.push(self.build_output(&rows)?);
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
        let mut k = vec![];
        for side in 0..2 {
            let s = &mut self.sides[side];
            // Deletes first: a row that left and came back is written again below, and
            // the last write of a key wins.
            for (key, row) in s.gone.drain(..) {
                state_key(&mut k, side, &key, &row);
                state.delete(&k);
            }
            for (key, row) in s.dirty.drain(..) {
                match s.index.get_mut(&key).and_then(|b| b.get_mut(&row)) {
                    Some(st) if st.dirty => {
                        st.dirty = false;
                        st.persisted = true;
                        state_key(&mut k, side, &key, &row);
                        let mut v = [0u8; 16];
                        v[..8].copy_from_slice(&st.count.to_le_bytes());
                        v[8..].copy_from_slice(&st.matches.to_le_bytes());
                        state.put(&k, &v);
                    }
                    // Listed twice (it left and came back) and already written, or gone
                    // (its delete, if storage had it, is above).
                    Some(_) | None => {}
                }
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let bad = || Error::Storage("corrupt join state".into());
        let sides = &mut self.sides;
        state.for_each(&mut |k, v| {
            let side = *k.first().ok_or_else(bad)? as usize;
            if side > 1 || k.len() < 5 || v.len() != 16 {
                return Err(bad());
            }
            let klen = u32::from_be_bytes(k[1..5].try_into().map_err(|_| bad())?) as usize;
            let key = k.get(5..5 + klen).ok_or_else(bad)?;
            let row = &k[5 + klen..];
            let count = i64::from_le_bytes(v[..8].try_into().map_err(|_| bad())?);
            let matches = i64::from_le_bytes(v[8..].try_into().map_err(|_| bad())?);
            sides[side].index.entry_ref(key).or_default().entry(
                &Bytes::from(row),
                RowState {
                    count,
                    matches,
                    dirty: false,
                    persisted: true,
                },
            );
            sides[side].rows += 1;
            Ok(())
        })?;
        // An interval join finds its rows' times again, to keep expiring them.
        if self.time_bound.is_some() {
            for side in 0..2 {
                if !self.expires(side) {
                    continue;
                }
                let entries: Vec<(Bytes, Bytes)> = self.sides[side]
                    .index
                    .iter()
                    .flat_map(|(k, rows)| rows.iter().map(move |(r, _)| (k.clone(), r.clone())))
                    .collect();
                if entries.is_empty() {
                    continue;
                }
                let refs: Vec<&[u8]> = entries.iter().map(|(_, r)| r.as_ref()).collect();
                let cols = self.row_codecs[side].decode(&refs)?;
                let data = RecordBatch::try_new_with_options(
                    self.input_schemas[side].clone(),
                    cols,
                    &RecordBatchOptions::new().with_row_count(Some(entries.len())),
                )?;
                if let Some(times) = self.event_times(side, &data)? {
                    for ((key, row), t) in entries.into_iter().zip(times) {
                        if let Some(t) = t {
                            self.sides[side]
                                .by_time
                                .entry(t)
                                .or_default()
                                .push((key, row));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn state_entries(&self) -> usize {
        self.sides[0].rows + self.sides[1].rows
    }

    fn wants_watermark(&self) -> bool {
        self.time_bound.is_some()
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> Result<()> {
        let Some(b) = self.time_bound else {
            return Ok(());
        };
        let kind = self.kind;
        let mut released: Vec<OutRow> = vec![];
        let cutoffs = [b.cutoff(0, watermark), b.cutoff(1, watermark)];
        for (side, cutoff) in cutoffs.into_iter().enumerate() {
            let Some(cutoff) = cutoff else { continue };
            let held_back = self.holds_back(side);
            let s = &mut self.sides[side];
            let keep = s.by_time.split_off(&cutoff);
            for (_, rows) in std::mem::replace(&mut s.by_time, keep) {
                for (key, row) in rows {
                    let Some(bucket) = s.index.get_mut(&key) else {
                        continue;
                    };
                    if let Some(st) = bucket.remove(&row) {
                        s.rows = s.rows.saturating_sub(1);
                        // Held back until now: the row never matched (or matched, for
                        // a semi join) and never will change.
                        let n = kind.solo(side, st.count, st.matches);
                        if n != 0 && held_back {
                            released.push(solo(side, row.clone(), n));
                        }
                        if st.persisted {
                            s.gone.push((key.clone(), row));
                        }
                    }
                    if bucket.is_empty() {
                        s.index.remove(&key);
                    }
                }
            }
        }
        if !released.is_empty() {
            out.push(self.build_output(&released)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{binary, col};

    fn join(kind: JoinKind, residual: bool) -> (HashJoinOperator, SchemaRef, SchemaRef) {
        let l = schema(&[("k", I64), ("a", I64)]);
        let r = schema(&[("k2", I64), ("b", I64)]);
        let out = match kind {
            JoinKind::LeftSemi | JoinKind::LeftAnti => l.clone(),
            JoinKind::RightSemi | JoinKind::RightAnti => r.clone(),
            _ => schema(&[("k", I64), ("a", I64), ("k2", I64), ("b", I64)]),
        };
        let pair = schema(&[("k", I64), ("a", I64), ("k2", I64), ("b", I64)]);
        let filter = residual.then(|| {
            binary(
                col("a", &pair).unwrap(),
                Op::Lt,
                col("b", &pair).unwrap(),
                &pair,
            )
            .unwrap()
        });
        let op = HashJoinOperator::new(
            kind,
            out,
            l.clone(),
            r.clone(),
            vec![col("k", &l).unwrap()],
            vec![col("k2", &r).unwrap()],
            filter,
            false,
            String::new(),
            EvalErrors::new(),
        )
        .unwrap();
        (op, l, r)
    }

    /// a LEFT JOIN b ON a.k = b.k AND a.t BETWEEN b.t - 10 s AND b.t + 5 s: rows leave
    /// the state as the watermark passes, outputs stay.
    #[test]
    fn interval_join_expires_rows_with_the_watermark() {
        let l = schema(&[("k", I64), ("t", TS)]);
        let r = schema(&[("k2", I64), ("u", TS)]);
        let out = schema(&[("k", I64), ("t", TS), ("k2", I64), ("u", TS)]);
        let bound = TimeBound {
            lo: Some(Expiry {
                columns: [1, 1],
                delay: 0,
                own_delay: Some(0),
                value: -10_000_000,
            }),
            hi: Some(Expiry {
                columns: [1, 1],
                delay: 0,
                own_delay: Some(0),
                value: 5_000_000,
            }),
        };
        let make = || {
            HashJoinOperator::new(
                JoinKind::Left,
                out.clone(),
                l.clone(),
                r.clone(),
                vec![col("k", &l).unwrap()],
                vec![col("k2", &r).unwrap()],
                None,
                false,
                String::new(),
                EvalErrors::new(),
            )
            .unwrap()
            .with_time_bound(Some(bound))
        };
        let mut op = make();
        assert!(op.wants_watermark());
        let got = run_epoch(
            &mut op,
            vec![
                (0, changes(&l, "1 100 +1\n2 100 +1")),
                (1, changes(&r, "1 105 +1")),
            ],
        );
        // The unmatched left row (key 2) is held back: a match may still come.
        assert_eq!(got, vec![format!("1 {} 1 {} +1", ts(100), ts(105))]);
        assert_eq!(op.state_entries(), 3);
        // W = 109: left rows need t >= 99 (kept); right rows need u >= 104 (kept).
        op.on_watermark(109_000_000, &mut vec![]).unwrap();
        assert_eq!(op.state_entries(), 3);
        // W = 111: left rows before 101 go, right rows before 106 go. Now no match can
        // come for key 2: its NULL-padded row comes out, once; the matched row does not.
        let mut emitted = vec![];
        op.on_watermark(111_000_000, &mut emitted).unwrap();
        assert_eq!(
            consolidate(&emitted),
            vec![format!("2 {} NULL NULL +1", ts(100))]
        );
        assert_eq!(op.state_entries(), 0);
        // A left row without an event time can match nothing: NULL-padded at once.
        let out = run_epoch(&mut op, vec![(0, changes(&l, "5 NULL +1"))]);
        assert_eq!(out, vec!["5 NULL NULL NULL +1"]);
        assert_eq!(op.state_entries(), 0);
        // Deleted from storage at the next checkpoint; a restore finds the times again.
        let storage = crate::storage::memory::MemoryStorage::new();
        run_epoch(&mut op, vec![(0, changes(&l, "3 200 +1"))]);
        checkpoint(&mut op, &storage, 9);
        let mut back = make();
        back.restore(&StateReader::new(9, &storage)).unwrap();
        assert_eq!(back.state_entries(), 1);
        back.on_watermark(300_000_000, &mut vec![]).unwrap();
        assert_eq!(back.state_entries(), 0);
    }

    /// q4's form: a JOIN b ON a.k = b.k AND b.u BETWEEN a.t AND a.ends. Right rows
    /// expire by their own time once the watermark passes it (no later left row can
    /// start before them); left rows by `ends` (no later right row can come before
    /// it), whatever their `t`.
    #[test]
    fn each_side_expires_by_its_own_condition() {
        let l = schema(&[("k", I64), ("t", TS), ("ends", TS)]);
        let r = schema(&[("k2", I64), ("u", TS)]);
        let pair = schema(&[("k", I64), ("t", TS), ("ends", TS), ("k2", I64), ("u", TS)]);
        let filter = binary(
            binary(
                col("u", &pair).unwrap(),
                Op::GtEq,
                col("t", &pair).unwrap(),
                &pair,
            )
            .unwrap(),
            Op::And,
            binary(
                col("u", &pair).unwrap(),
                Op::LtEq,
                col("ends", &pair).unwrap(),
                &pair,
            )
            .unwrap(),
            &pair,
        )
        .unwrap();
        let mut op = HashJoinOperator::new(
            JoinKind::Inner,
            pair.clone(),
            l.clone(),
            r.clone(),
            vec![col("k", &l).unwrap()],
            vec![col("k2", &r).unwrap()],
            Some(filter),
            false,
            String::new(),
            EvalErrors::new(),
        )
        .unwrap()
        .with_time_bound(Some(TimeBound {
            // ends - u >= 0
            lo: Some(Expiry {
                columns: [2, 1],
                delay: 0,
                own_delay: None,
                value: 0,
            }),
            // t - u <= 0
            hi: Some(Expiry {
                columns: [1, 1],
                delay: 0,
                own_delay: Some(0),
                value: 0,
            }),
        }));
        let got = run_epoch(
            &mut op,
            vec![
                (0, changes(&l, "1 100 110 +1\n2 100 NULL +1")),
                (1, changes(&r, "1 105 +1")),
            ],
        );
        assert_eq!(
            got,
            vec![format!("1 {} {} 1 {} +1", ts(100), ts(110), ts(105))]
        );
        // The left row without an end can match nothing: not kept.
        assert_eq!(op.state_entries(), 2);
        // W = 106: the bid at 105 goes; the auction ending at 110 stays.
        op.on_watermark(106_000_000, &mut vec![]).unwrap();
        assert_eq!(op.state_entries(), 1);
        let got = run_epoch(&mut op, vec![(1, changes(&r, "1 108 +1"))]);
        assert_eq!(
            got,
            vec![format!("1 {} {} 1 {} +1", ts(100), ts(110), ts(108))]
        );
        // W = 111: the auction has ended, and the bid at 108 is past too.
        let mut emitted = vec![];
        op.on_watermark(111_000_000, &mut emitted).unwrap();
        assert!(emitted.is_empty());
        assert_eq!(op.state_entries(), 0);
    }

    /// q7's form: windowed rows semi-joined to their window's maximum on (window
    /// start, price), the maximum retracted and replaced as bids arrive. Window starts
    /// lag the watermark by the size less 1µs: a 10 s window's rows leave the state
    /// once the watermark reaches its end, and nothing comes out when they do.
    #[test]
    fn window_join_with_retractions_forgets_closed_windows() {
        let l = schema(&[("ws", TS), ("price", I64), ("id", I64)]);
        let r = schema(&[("ws2", TS), ("maxp", I64)]);
        let size = 10_000_000;
        let window = Expiry {
            columns: [0, 0],
            delay: size - 1,
            own_delay: Some(size - 1),
            value: 0,
        };
        let make = || {
            HashJoinOperator::new(
                JoinKind::LeftSemi,
                l.clone(),
                l.clone(),
                r.clone(),
                vec![col("ws", &l).unwrap(), col("price", &l).unwrap()],
                vec![col("ws2", &r).unwrap(), col("maxp", &r).unwrap()],
                None,
                false,
                String::new(),
                EvalErrors::new(),
            )
            .unwrap()
            .with_time_bound(Some(TimeBound {
                lo: Some(window),
                hi: Some(window),
            }))
        };
        let mut op = make();
        // A semi join's matched rows come out at once, not when they expire.
        let got = run_epoch(
            &mut op,
            vec![
                (0, changes(&l, "0 5 1 +1\n0 7 2 +1\n10 3 3 +1")),
                (1, changes(&r, "0 5 +1\n10 3 +1")),
            ],
        );
        assert_eq!(
            got,
            vec![format!("{} 5 1 +1", ts(0)), format!("{} 3 3 +1", ts(10))]
        );
        // The maximum of window 0 moves from 5 to 7: a retraction and an insertion.
        let got = run_epoch(&mut op, vec![(1, changes(&r, "0 5 -1\n0 7 +1"))]);
        assert_eq!(
            got,
            vec![format!("{} 5 1 -1", ts(0)), format!("{} 7 2 +1", ts(0))]
        );
        assert_eq!(op.state_entries(), 5);
        // 1µs before window 0 ends: a bid at the watermark still falls into it.
        let mut emitted = vec![];
        op.on_watermark(size - 1, &mut emitted).unwrap();
        assert_eq!(op.state_entries(), 5);
        // At its end window 0 is closed: its rows leave, silently; window 10 stays.
        op.on_watermark(size, &mut emitted).unwrap();
        assert!(consolidate(&emitted).is_empty());
        assert_eq!(op.state_entries(), 2);
        // Window 10 still follows its maximum.
        let got = run_epoch(&mut op, vec![(1, changes(&r, "10 3 -1\n10 4 +1"))]);
        assert_eq!(got, vec![format!("{} 3 3 -1", ts(10))]);
    }

    /// stream LEFT JOIN table FOR SYSTEM_TIME AS OF PROCTIME(): stream rows meet the
    /// table as their epoch leaves it, are not stored, and are never revised.
    #[test]
    fn lookup_join_never_revises_and_keeps_only_the_table() {
        let (op, l, r) = join(JoinKind::Left, false);
        let mut op = op.with_lookup(Some(0));
        // The table row and a stream row in the same epoch meet, whatever their order.
        let out = run_epoch(
            &mut op,
            vec![
                (0, changes(&l, "1 10 +1\n2 20 +1")),
                (1, changes(&r, "1 100 +1")),
            ],
        );
        assert_eq!(out, vec!["1 10 1 100 +1", "2 20 NULL NULL +1"]);
        // Table changes (an update, a new key) emit nothing: earlier rows stand.
        let out = run_epoch(
            &mut op,
            vec![(1, changes(&r, "1 100 -1\n1 111 +1\n2 200 +1"))],
        );
        assert!(out.is_empty());
        // New stream rows see the new table.
        let out = run_epoch(&mut op, vec![(0, changes(&l, "1 11 +1\n2 21 +1"))]);
        assert_eq!(out, vec!["1 11 1 111 +1", "2 21 2 200 +1"]);
        // Only the table is kept.
        assert_eq!(op.state_entries(), 2);
        // A deleted table row no longer matches.
        run_epoch(&mut op, vec![(1, changes(&r, "2 200 -1"))]);
        let out = run_epoch(&mut op, vec![(0, changes(&l, "2 22 +1"))]);
        assert_eq!(out, vec!["2 22 NULL NULL +1"]);
        // The probing side is a stream: a retraction there is a planning bug.
        assert!(op.process(0, changes(&l, "1 10 -1"), &mut vec![]).is_err());
    }

    #[test]
    fn inner_join_joins_changes_from_both_sides() {
        let (mut op, l, r) = join(JoinKind::Inner, false);
        let out = run_epoch(
            &mut op,
            vec![
                (0, changes(&l, "1 10 +1\n2 20 +1")),
                (1, changes(&r, "1 100 +1")),
            ],
        );
        assert_eq!(out, vec!["1 10 1 100 +1"]);
        let out = run_epoch(&mut op, vec![(1, changes(&r, "1 100 -1\n2 200 +2"))]);
        assert_eq!(out, vec!["1 10 1 100 -1", "2 20 2 200 +2"]);
        let out = run_epoch(&mut op, vec![(0, changes(&l, "2 20 -1"))]);
        assert_eq!(out, vec!["2 20 2 200 -2"]);
    }

    #[test]
    fn left_join_pads_unmatched_rows_and_retracts_padding_on_match() {
        let (mut op, l, r) = join(JoinKind::Left, false);
        let out = run_epoch(&mut op, vec![(0, changes(&l, "1 10 +1\nNULL 5 +1"))]);
        assert_eq!(out, vec!["1 10 NULL NULL +1", "NULL 5 NULL NULL +1"]);
        let out = run_epoch(&mut op, vec![(1, changes(&r, "1 100 +1\n1 101 +1"))]);
        assert_eq!(
            out,
            vec!["1 10 1 100 +1", "1 10 1 101 +1", "1 10 NULL NULL -1"]
        );
        let out = run_epoch(&mut op, vec![(1, changes(&r, "1 100 -1"))]);
        assert_eq!(out, vec!["1 10 1 100 -1"]);
        let out = run_epoch(&mut op, vec![(1, changes(&r, "1 101 -1"))]);
        assert_eq!(out, vec!["1 10 1 101 -1", "1 10 NULL NULL +1"]);
    }

    #[test]
    fn full_join_pads_both_sides() {
        let (mut op, l, r) = join(JoinKind::Full, false);
        let out = run_epoch(
            &mut op,
            vec![(0, changes(&l, "1 10 +1")), (1, changes(&r, "2 200 +1"))],
        );
        assert_eq!(out, vec!["1 10 NULL NULL +1", "NULL NULL 2 200 +1"]);
        let out = run_epoch(&mut op, vec![(0, changes(&l, "2 20 +1"))]);
        assert_eq!(out, vec!["2 20 2 200 +1", "NULL NULL 2 200 -1"]);
    }

    #[test]
    fn residual_predicate_decides_what_counts_as_a_match() {
        let (mut op, l, r) = join(JoinKind::Left, true);
        run_epoch(&mut op, vec![(0, changes(&l, "1 10 +1"))]);
        // b=5 has the key but fails a < b: the left row stays padded.
        let out = run_epoch(&mut op, vec![(1, changes(&r, "1 5 +1"))]);
        assert!(out.is_empty(), "{out:?}");
        let out = run_epoch(&mut op, vec![(1, changes(&r, "1 50 +1"))]);
        assert_eq!(out, vec!["1 10 1 50 +1", "1 10 NULL NULL -1"]);
    }

    #[test]
    fn semi_and_anti_joins_follow_match_existence() {
        let (mut semi, l, r) = join(JoinKind::LeftSemi, false);
        let (mut anti, _, _) = join(JoinKind::LeftAnti, false);
        for (op, first, second) in [
            (&mut semi, vec![], vec!["1 10 +1"]),
            (&mut anti, vec!["1 10 +1"], vec!["1 10 -1"]),
        ] {
            let out = run_epoch(op, vec![(0, changes(&l, "1 10 +1"))]);
            assert_eq!(out, first);
            // Two matches still mean one semi-join row.
            let out = run_epoch(op, vec![(1, changes(&r, "1 1 +1\n1 2 +1"))]);
            assert_eq!(out, second);
        }
    }

    #[test]
    fn changes_within_one_epoch_in_any_order_give_the_same_result() {
        let (mut a, l, r) = join(JoinKind::Full, false);
        let (mut b, _, _) = join(JoinKind::Full, false);
        let x = run_epoch(
            &mut a,
            vec![
                (0, changes(&l, "1 10 +1")),
                (1, changes(&r, "1 100 +1\n1 100 -1")),
            ],
        );
        let y = run_epoch(
            &mut b,
            vec![
                (1, changes(&r, "1 100 +1\n1 100 -1")),
                (0, changes(&l, "1 10 +1")),
            ],
        );
        assert_eq!(x, y);
        assert_eq!(x, vec!["1 10 NULL NULL +1"]);
    }

    #[test]
    fn join_state_survives_checkpoint_and_restore() {
        let storage = crate::storage::MemoryStorage::new();
        let (mut op, l, r) = join(JoinKind::Left, false);
        run_epoch(
            &mut op,
            vec![(0, changes(&l, "1 10 +1")), (1, changes(&r, "1 100 +1"))],
        );
        checkpoint(&mut op, &storage, 9);
        let (mut restored, _, _) = join(JoinKind::Left, false);
        restored.restore(&StateReader::new(9, &storage)).unwrap();
        let out = run_epoch(&mut restored, vec![(1, changes(&r, "1 100 -1"))]);
        assert_eq!(out, vec!["1 10 1 100 -1", "1 10 NULL NULL +1"]);
    }

    /// After each checkpoint the stored state equals the live one, whatever happened
    /// to a row in between: changed twice, gone, gone and back, matched and unmatched.
    #[test]
    fn each_checkpoint_stores_exactly_the_live_state() {
        let storage = crate::storage::MemoryStorage::new();
        let (mut op, l, r) = join(JoinKind::Left, false);
        let epochs: Vec<Vec<(usize, &str)>> = vec![
            vec![(0, "1 10 +1\n2 20 +1\n3 30 +1"), (1, "1 100 +1")],
            // 1 10 gone and back, 2 20 gone, 4 40 in and out, 3 30 twice.
            vec![
                (0, "1 10 -1\n2 20 -1\n4 40 +1\n3 30 +1"),
                (0, "1 10 +1\n4 40 -1"),
                (1, "1 100 -1\n3 300 +1"),
            ],
            // Matches change with no change to the row itself.
            vec![(1, "3 300 -1\n1 100 +1")],
            vec![],
        ];
        for (n, epoch) in epochs.into_iter().enumerate() {
            let inputs = epoch
                .into_iter()
                .map(|(port, text)| (port, changes(if port == 0 { &l } else { &r }, text)))
                .collect();
            run_epoch(&mut op, inputs);
            checkpoint(&mut op, &storage, 9);
            let (mut restored, _, _) = join(JoinKind::Left, false);
            restored.restore(&StateReader::new(9, &storage)).unwrap();
            for side in 0..2 {
                assert!(op.sides[side].dirty.is_empty());
                assert_eq!(
                    op.sides[side].index, restored.sides[side].index,
                    "side {side} after checkpoint {n}"
                );
                assert_eq!(op.sides[side].rows, restored.sides[side].rows);
            }
        }
        assert_eq!(
            op.sides[0].index.values().map(|b| b.len()).sum::<usize>(),
            2
        );
    }

    /// A row that comes and goes between two checkpoints writes nothing (no put, and no
    /// delete of a key storage never had); a row a checkpoint wrote is deleted by the
    /// next one, and one that left and came back is written again.
    #[test]
    fn rows_no_checkpoint_saw_leave_nothing_to_delete() {
        let (mut op, l, r) = join(JoinKind::Inner, false);
        run_epoch(&mut op, vec![(0, changes(&l, "1 10 +1\n2 20 +1"))]);
        run_epoch(&mut op, vec![(0, changes(&l, "2 20 -1"))]);
        let first = checkpoint_writes(&mut op);
        assert_eq!(first.len(), 1, "only 1 10: {first:?}");
        assert!(first[0].1);
        run_epoch(
            &mut op,
            vec![
                (0, changes(&l, "1 10 -1\n3 30 +1")),
                (1, changes(&r, "5 50 +1")),
            ],
        );
        run_epoch(&mut op, vec![(0, changes(&l, "3 30 -1"))]);
        let second = checkpoint_writes(&mut op);
        assert_eq!(second.len(), 2, "{second:?}");
        assert!(
            second.contains(&(first[0].0.clone(), false)),
            "1 10 deleted"
        );
        assert_eq!(second.iter().filter(|(_, put)| *put).count(), 1, "5 50 put");
        // Gone and back within one interval: the delete, then the put, which wins.
        run_epoch(&mut op, vec![(1, changes(&r, "5 50 -1"))]);
        run_epoch(&mut op, vec![(1, changes(&r, "5 50 +1"))]);
        let third = checkpoint_writes(&mut op);
        assert_eq!(third.len(), 1, "{third:?}");
        assert!(third[0].1);
        assert!(checkpoint_writes(&mut op).is_empty());
    }

    /// A bucket holds one row inline and a map from the second on; it finds, updates
    /// and removes rows the same either way, and compares by contents.
    #[test]
    fn a_bucket_holds_one_row_inline_and_more_in_a_map() {
        let st = |count| RowState {
            count,
            ..RowState::default()
        };
        let (a, b): (Bytes, Bytes) = (Bytes::from(&b"a"[..]), Bytes::from(&b"b"[..]));
        let mut bucket = Bucket::default();
        assert!(bucket.is_empty());
        bucket.entry(&a, st(1)).count += 1;
        assert!(matches!(bucket, Bucket::One(..)));
        assert_eq!(bucket.get(b"a").map(|s| s.count), Some(2));
        assert!(bucket.get(b"b").is_none() && bucket.remove(b"b").is_none());
        bucket.entry(&b, st(5));
        assert!(matches!(bucket, Bucket::Many(_)));
        assert_eq!(bucket.len(), 2);
        bucket.get_mut(b"b").expect("b").count = 6;
        let mut seen: Vec<(Vec<u8>, i64)> =
            bucket.iter().map(|(r, s)| (r.to_vec(), s.count)).collect();
        seen.sort();
        assert_eq!(seen, vec![(b"a".to_vec(), 2), (b"b".to_vec(), 6)]);
        assert_eq!(bucket.remove(b"b").map(|s| s.count), Some(6));
        // One row in a map equals the same row inline.
        let mut inline = Bucket::default();
        inline.entry(&a, st(2));
        assert_eq!(bucket, inline);
        inline.get_mut(b"a").expect("a").count = 3;
        assert_ne!(bucket, inline);
        assert_eq!(inline.remove(b"a").map(|s| s.count), Some(3));
        assert!(inline.is_empty() && inline.iter().next().is_none());
    }
}
