//! Retractable aggregate state: every accumulator accepts a value with a signed
//! multiplicity, so deleting a row undoes exactly what inserting it did.
//!
//! `min`/`max` keep a multiset of values (so deleting the current minimum finds the
//! next one); `DISTINCT` aggregates keep a multiset of distinct values; sums keep an
//! exact 128-bit integer for integer and decimal inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type};
use datafusion::common::ScalarValue;
use datafusion::physical_plan::PhysicalExpr;

use super::expr::{evaluate, evaluate_predicate, EvalErrors};
use crate::error::{Error, Result};
use crate::storage::rowcodec::{EncodedRows, RowCodec};

/// The aggregate functions eddy maintains incrementally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggKind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    BoolAnd,
    BoolOr,
    StringAgg,
}

impl AggKind {
    /// Map a DataFusion aggregate function name to a kind.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "avg" | "mean" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "bool_and" => AggKind::BoolAnd,
            "bool_or" => AggKind::BoolOr,
            "string_agg" => AggKind::StringAgg,
            _ => return None,
        })
    }
}

/// How the argument of an aggregate is prepared for its accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArgForm {
    /// No argument (`count(*)`).
    None,
    /// Exact integer (integers and decimals, as i128 at the input's scale).
    Exact,
    /// Floating point.
    Float,
    Bool,
    /// Only whether the value is NULL (`count(col)`).
    Present,
    /// Encoded with the row codec (min/max, DISTINCT, string_agg).
    Encoded,
}

/// One aggregate call of a GROUP BY: what to compute, over which argument.
pub struct AggSpec {
    pub kind: AggKind,
    pub distinct: bool,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub input_type: DataType,
    pub output_type: DataType,
    pub display: String,
    form: ArgForm,
    /// Scale of exact inputs (0 for integers).
    scale: i8,
    codec: Option<RowCodec>,
    /// The input never retracts (a stream): min/max keep one value, not a multiset.
    append_only: bool,
}

impl AggSpec {
    pub fn new(
        kind: AggKind,
        distinct: bool,
        args: Vec<Arc<dyn PhysicalExpr>>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        input_type: DataType,
        output_type: DataType,
        display: String,
    ) -> Result<Self> {
        use DataType::*;
        let exact = matches!(
            input_type,
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Decimal128(_, _)
        );
        let float = matches!(input_type, Float16 | Float32 | Float64);
        let form = match kind {
            AggKind::CountStar => ArgForm::None,
            _ if distinct => ArgForm::Encoded,
            AggKind::Count => ArgForm::Present,
            AggKind::Sum | AggKind::Avg if exact => ArgForm::Exact,
            AggKind::Sum | AggKind::Avg if float => ArgForm::Float,
            AggKind::Sum | AggKind::Avg => {
                return Err(Error::not_supported(format!("{display} over {input_type}")))
            }
            AggKind::BoolAnd | AggKind::BoolOr => ArgForm::Bool,
            AggKind::Min | AggKind::Max | AggKind::StringAgg => ArgForm::Encoded,
        };
        let scale = match input_type {
            Decimal128(_, s) => s,
            _ => 0,
        };
        let codec = match form {
            ArgForm::Encoded => Some(RowCodec::new(vec![input_type.clone()])?),
            _ => None,
        };
        Ok(Self {
            kind,
            distinct,
            args,
            filter,
            input_type,
            output_type,
            display,
            form,
            scale,
            codec,
            append_only: false,
        })
    }

    /// Declare that the input only ever inserts: `min`/`max` then keep just the current
    /// extreme instead of every value (state O(1) per group instead of O(values)).
    pub fn with_append_only(mut self, append_only: bool) -> Self {
        self.append_only = append_only;
        self
    }

    /// A fresh accumulator for one group.
    pub fn new_state(&self) -> AccState {
        if self.distinct {
            return AccState::Values(BTreeMap::new());
        }
        match self.kind {
            AggKind::CountStar | AggKind::Count => AccState::Count(0),
            AggKind::Sum | AggKind::Avg => match self.form {
                ArgForm::Float => AccState::FloatSum(FloatAcc::default()),
                _ => AccState::ExactSum { sum: 0, n: 0 },
            },
            AggKind::Min | AggKind::Max if self.append_only => AccState::Extreme(None),
            AggKind::Min | AggKind::Max | AggKind::StringAgg => AccState::Values(BTreeMap::new()),
            AggKind::BoolAnd | AggKind::BoolOr => AccState::Bools {
                trues: 0,
                falses: 0,
            },
        }
    }

    /// Evaluate and prepare this aggregate's argument over a batch.
    pub fn prepare(
        &self,
        batch: &datafusion::arrow::array::RecordBatch,
        errors: &EvalErrors,
    ) -> Result<Args> {
        let n = batch.num_rows();
        let mask = match &self.filter {
            Some(f) => Some(evaluate_predicate(f, batch, errors)?),
            None => None,
        };
        let values = match self.form {
            ArgForm::None => ArgValues::None,
            _ => {
                let arg = self
                    .args
                    .first()
                    .ok_or_else(|| Error::internal(format!("{} has no argument", self.display)))?;
                let a = evaluate(arg, batch, errors)?;
                match self.form {
                    ArgForm::Exact => {
                        let c = cast(&a, &DataType::Decimal128(38, self.scale))?;
                        ArgValues::Exact(c.as_primitive::<Decimal128Type>().clone())
                    }
                    ArgForm::Float => {
                        let c = cast(&a, &DataType::Float64)?;
                        ArgValues::Float(c.as_primitive().clone())
                    }
                    ArgForm::Bool => ArgValues::Bool(a.as_boolean().clone()),
                    ArgForm::Present => ArgValues::Present(a),
                    _ => {
                        let codec = self
                            .codec
                            .as_ref()
                            .ok_or_else(|| Error::internal("no codec"))?;
                        let encoded = codec.encode_flat(std::slice::from_ref(&a), n);
                        let delims = if self.kind == AggKind::StringAgg {
                            match self.args.get(1) {
                                Some(d) => {
                                    let d = cast(&evaluate(d, batch, errors)?, &DataType::Utf8)?;
                                    Some(d.as_string::<i32>().clone())
                                }
                                None => None,
                            }
                        } else {
                            None
                        };
                        ArgValues::Encoded {
                            values: encoded,
                            nulls: a,
                            delims,
                        }
                    }
                }
            }
        };
        Ok(Args { mask, values })
    }

    /// Add `diff` copies of row `row` of `args` to `state`.
    #[inline]
    pub fn update(&self, state: &mut AccState, args: &Args, row: usize, diff: i64) {
        if let Some(m) = &args.mask {
            if !m.is_valid(row) || !m.value(row) {
                return;
            }
        }
        match (&args.values, state) {
            (ArgValues::None, AccState::Count(c)) => *c += diff,
            (ArgValues::Present(a), AccState::Count(c)) if a.is_valid(row) => *c += diff,
            (
                ArgValues::Encoded {
                    values,
                    nulls,
                    delims,
                },
                st,
            ) => {
                if nulls.is_null(row) {
                    return;
                }
                let v = values.row(row);
                match st {
                    AccState::Count(c) => *c += diff,
                    AccState::Extreme(current) => {
                        // Append-only input: diff is positive (checked by the operator).
                        let better = match current {
                            None => true,
                            Some(c) if self.kind == AggKind::Min => v < c.as_slice(),
                            Some(c) => v > c.as_slice(),
                        };
                        if better {
                            match current {
                                Some(c) => {
                                    c.clear();
                                    c.extend_from_slice(v);
                                }
                                None => *current = Some(v.to_vec()),
                            }
                        }
                    }
                    AccState::Values(m) => {
                        if self.kind == AggKind::StringAgg {
                            // The delimiter that follows a value belongs to it.
                            let d = delims
                                .as_ref()
                                .filter(|d| d.is_valid(row))
                                .map_or("", |d| d.value(row));
                            let mut key = v.to_vec();
                            key.extend_from_slice(d.as_bytes());
                            key.extend_from_slice(&(d.len() as u32).to_be_bytes());
                            add_value(m, &key, diff);
                        } else {
                            add_value(m, v, diff);
                        }
                    }
                    _ => {}
                }
            }
            (ArgValues::Exact(a), AccState::ExactSum { sum, n }) if a.is_valid(row) => {
                *sum += a.value(row) * diff as i128;
                *n += diff;
            }
            (ArgValues::Float(a), AccState::FloatSum(acc)) if a.is_valid(row) => {
                acc.add(a.value(row), diff)
            }
            (ArgValues::Bool(a), AccState::Bools { trues, falses }) if a.is_valid(row) => {
                if a.value(row) {
                    *trues += diff;
                } else {
                    *falses += diff;
                }
            }
            _ => {}
        }
    }

    /// A copy of `state` that is cheap to keep and evaluates to the same value: a
    /// min/max multiset becomes its current extreme, a distinct count its count. The
    /// aggregate operator keeps one per group it touches in an epoch (what the group
    /// emitted before), instead of evaluating it.
    pub fn summary(&self, state: &AccState) -> AccState {
        match state {
            AccState::Values(m) => match self.kind {
                AggKind::Min => {
                    AccState::Extreme(m.iter().find(|(_, c)| **c > 0).map(|(k, _)| k.clone()))
                }
                AggKind::Max => AccState::Extreme(
                    m.iter()
                        .rev()
                        .find(|(_, c)| **c > 0)
                        .map(|(k, _)| k.clone()),
                ),
                AggKind::Count => AccState::Count(m.len() as i64),
                _ => state.clone(),
            },
            other => other.clone(),
        }
    }

    /// The values of `states` (summaries or full states) as one column of
    /// `output_type`, without a `ScalarValue` per group. `None` when this aggregate
    /// has no columnar form or a value does not fit the output type: the caller then
    /// evaluates the states one by one (and reports the ones that fail).
    pub fn evaluate_column(&self, states: &[&AccState]) -> Result<Option<ArrayRef>> {
        use datafusion::arrow::array::{
            BooleanBuilder, Decimal128Builder, Float64Builder, Int64Array,
        };
        // A count: a counter, or a distinct count's set of values.
        let count = |s: &AccState| match s {
            AccState::Count(c) => Some(*c),
            AccState::Values(m) if self.kind == AggKind::Count => Some(m.len() as i64),
            _ => None,
        };
        let natural: ArrayRef = match states.first() {
            None => return Ok(None),
            Some(first) if count(first).is_some() => {
                match states
                    .iter()
                    .map(|s| count(s))
                    .collect::<Option<Vec<i64>>>()
                {
                    Some(v) => Arc::new(Int64Array::from(v)),
                    None => return Ok(None),
                }
            }
            Some(AccState::ExactSum { .. }) => {
                let float_avg = self.kind == AggKind::Avg
                    && !matches!(self.output_type, DataType::Decimal128(_, _));
                if float_avg {
                    let mut b = Float64Builder::with_capacity(states.len());
                    for s in states {
                        let AccState::ExactSum { sum, n } = s else {
                            return Ok(None);
                        };
                        if *n == 0 {
                            b.append_null();
                        } else {
                            b.append_value(avg_exact_float(*sum, *n, self.scale));
                        }
                    }
                    Arc::new(b.finish())
                } else {
                    let scale = match (self.kind, &self.output_type) {
                        (AggKind::Avg, DataType::Decimal128(_, s)) => *s,
                        _ => self.scale,
                    };
                    let mut b = Decimal128Builder::with_capacity(states.len());
                    for s in states {
                        let AccState::ExactSum { sum, n } = s else {
                            return Ok(None);
                        };
                        if *n == 0 {
                            b.append_null();
                        } else if self.kind == AggKind::Avg {
                            b.append_value(avg_exact_decimal(*sum, *n, self.scale, scale));
                        } else {
                            b.append_value(*sum);
                        }
                    }
                    Arc::new(b.finish().with_precision_and_scale(38, scale)?)
                }
            }
            Some(AccState::FloatSum(_)) => {
                let mut b = Float64Builder::with_capacity(states.len());
                for s in states {
                    let AccState::FloatSum(acc) = s else {
                        return Ok(None);
                    };
                    match acc.value() {
                        None => b.append_null(),
                        Some(sum) if self.kind == AggKind::Avg => {
                            b.append_value(sum / acc.n as f64)
                        }
                        Some(sum) => b.append_value(sum),
                    }
                }
                Arc::new(b.finish())
            }
            Some(AccState::Bools { .. }) => {
                let mut b = BooleanBuilder::with_capacity(states.len());
                for s in states {
                    let AccState::Bools { trues, falses } = s else {
                        return Ok(None);
                    };
                    if trues + falses == 0 {
                        b.append_null();
                    } else if self.kind == AggKind::BoolAnd {
                        b.append_value(*falses == 0);
                    } else {
                        b.append_value(*trues > 0);
                    }
                }
                Arc::new(b.finish())
            }
            Some(AccState::Extreme(_)) => {
                let mut present: Vec<&[u8]> = Vec::with_capacity(states.len());
                let mut idx: Vec<Option<u32>> = Vec::with_capacity(states.len());
                for s in states {
                    match s {
                        AccState::Extreme(Some(k)) => {
                            idx.push(Some(present.len() as u32));
                            present.push(k);
                        }
                        AccState::Extreme(None) => idx.push(None),
                        _ => return Ok(None),
                    }
                }
                let values = self.decode_values(&present)?;
                if present.len() == states.len() {
                    values
                } else {
                    let idx = datafusion::arrow::array::UInt32Array::from(idx);
                    datafusion::arrow::compute::take(values.as_ref(), &idx, None)?
                }
            }
            // A count was taken above; other value sets have no columnar form.
            Some(AccState::Count(_) | AccState::Values(_)) => return Ok(None),
        };
        if natural.data_type() == &self.output_type {
            return Ok(Some(natural));
        }
        let opts = datafusion::arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        Ok(datafusion::arrow::compute::cast_with_options(&natural, &self.output_type, &opts).ok())
    }

    /// The aggregate's current value, of type `output_type`.
    pub fn evaluate(&self, state: &AccState) -> Result<ScalarValue> {
        let natural = match state {
            AccState::Count(c) => ScalarValue::Int64(Some(*c)),
            AccState::ExactSum { sum, n } => {
                if *n == 0 {
                    ScalarValue::Null
                } else if self.kind == AggKind::Avg {
                    avg_exact(*sum, *n, self.scale, &self.output_type)
                } else {
                    ScalarValue::Decimal128(Some(*sum), 38, self.scale)
                }
            }
            AccState::FloatSum(acc) => match acc.value() {
                None => ScalarValue::Null,
                Some(sum) if self.kind == AggKind::Avg => {
                    ScalarValue::Float64(Some(sum / acc.n as f64))
                }
                Some(sum) => ScalarValue::Float64(Some(sum)),
            },
            AccState::Bools { trues, falses } => {
                if trues + falses == 0 {
                    ScalarValue::Boolean(None)
                } else if self.kind == AggKind::BoolAnd {
                    ScalarValue::Boolean(Some(*falses == 0))
                } else {
                    ScalarValue::Boolean(Some(*trues > 0))
                }
            }
            AccState::Values(m) => self.evaluate_values(m)?,
            AccState::Extreme(None) => ScalarValue::Null,
            AccState::Extreme(Some(k)) => {
                ScalarValue::try_from_array(&self.decode_values(&[k])?, 0)?
            }
        };
        if natural.is_null() {
            return Ok(ScalarValue::try_from(&self.output_type)?);
        }
        Ok(natural.cast_to(&self.output_type)?)
    }

    fn decode_values(&self, keys: &[&[u8]]) -> Result<ArrayRef> {
        let codec = self
            .codec
            .as_ref()
            .ok_or_else(|| Error::internal("no codec"))?;
        let mut cursors: Vec<&[u8]> = keys.to_vec();
        Ok(codec.decode_from(&mut cursors)?.remove(0))
    }

    fn evaluate_values(&self, m: &BTreeMap<Vec<u8>, i64>) -> Result<ScalarValue> {
        // Between epochs every value's count is positive (a value leaves the map at 0,
        // and an input never retracts more copies than it inserted): the map's size is
        // the number of distinct values and its ends are the extremes. This runs twice
        // per touched group per epoch, so it must not walk the whole set.
        match self.kind {
            AggKind::Count => return Ok(ScalarValue::Int64(Some(m.len() as i64))),
            AggKind::Min | AggKind::Max => {
                let pick = if self.kind == AggKind::Min {
                    m.iter().find(|(_, c)| **c > 0)
                } else {
                    m.iter().rev().find(|(_, c)| **c > 0)
                };
                return match pick {
                    Some((k, _)) => Ok(ScalarValue::try_from_array(&self.decode_values(&[k])?, 0)?),
                    None => Ok(ScalarValue::Null),
                };
            }
            _ => {}
        }
        let live: Vec<&[u8]> = m
            .iter()
            .filter(|(_, c)| **c > 0)
            .map(|(k, _)| k.as_slice())
            .collect();
        match self.kind {
            AggKind::Count | AggKind::Min | AggKind::Max => Err(Error::internal(
                "count/min/max of a value set evaluated twice",
            )),
            AggKind::StringAgg => {
                if live.is_empty() {
                    return Ok(ScalarValue::Null);
                }
                let mut out = String::new();
                for (i, key) in m.iter().filter(|(_, c)| **c > 0).enumerate() {
                    let (k, count) = key;
                    let (value, delim) = split_string_agg_key(k)?;
                    let arr = self.decode_values(&[value])?;
                    let s = cast(&arr, &DataType::Utf8)?;
                    let s = s.as_string::<i32>().value(0).to_string();
                    let copies = if self.distinct { 1 } else { *count };
                    for j in 0..copies {
                        if i > 0 || j > 0 {
                            out.push_str(delim);
                        }
                        out.push_str(&s);
                    }
                }
                Ok(ScalarValue::Utf8(Some(out)))
            }
            AggKind::Sum | AggKind::Avg => {
                // DISTINCT sum/avg: fold the distinct values.
                if live.is_empty() {
                    return Ok(ScalarValue::Null);
                }
                let arr = self.decode_values(&live)?;
                let st = match self.input_type {
                    DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                        let f = cast(&arr, &DataType::Float64)?;
                        let f: &Float64Array = f.as_primitive();
                        let mut acc = FloatAcc::default();
                        for v in f.iter().flatten() {
                            acc.add(v, 1);
                        }
                        AccState::FloatSum(acc)
                    }
                    _ => {
                        let d = cast(&arr, &DataType::Decimal128(38, self.scale))?;
                        let d: &Decimal128Array = d.as_primitive();
                        AccState::ExactSum {
                            sum: d.iter().flatten().sum(),
                            n: d.len() as i64,
                        }
                    }
                };
                let plain = AggSpec::new(
                    self.kind,
                    false,
                    vec![],
                    None,
                    self.input_type.clone(),
                    self.output_type.clone(),
                    self.display.clone(),
                )?;
                plain.evaluate(&st)
            }
            AggKind::CountStar | AggKind::BoolAnd | AggKind::BoolOr => Err(Error::not_supported(
                format!("{} with DISTINCT", self.display),
            )),
        }
    }
}

fn split_string_agg_key(k: &[u8]) -> Result<(&[u8], &str)> {
    let bad = || Error::Storage("corrupt string_agg state".into());
    let n = k.len().checked_sub(4).ok_or_else(bad)?;
    let dlen = u32::from_be_bytes(k[n..].try_into().map_err(|_| bad())?) as usize;
    let start = n.checked_sub(dlen).ok_or_else(bad)?;
    let delim = std::str::from_utf8(&k[start..n]).map_err(|_| bad())?;
    Ok((&k[..start], delim))
}

/// avg of an exact sum: a float for integer input, a decimal (at the output's scale,
/// rounded half away from zero) for decimal input.
fn avg_exact(sum: i128, n: i64, scale: i8, output: &DataType) -> ScalarValue {
    match output {
        DataType::Decimal128(_, out_scale) => ScalarValue::Decimal128(
            Some(avg_exact_decimal(sum, n, scale, *out_scale)),
            38,
            *out_scale,
        ),
        _ => ScalarValue::Float64(Some(avg_exact_float(sum, n, scale))),
    }
}

/// `sum / n` as a double (the sum is at `scale`).
fn avg_exact_float(sum: i128, n: i64, scale: i8) -> f64 {
    sum as f64 / 10f64.powi(scale as i32) / n as f64
}

/// `sum / n` at `out_scale` (the sum is at `scale`), rounded half away from zero.
fn avg_exact_decimal(sum: i128, n: i64, scale: i8, out_scale: i8) -> i128 {
    let shift = (out_scale as i32 - scale as i32).max(0) as u32;
    let num = sum.saturating_mul(10i128.saturating_pow(shift));
    let d = n as i128;
    let q = num / d;
    let r = num % d;
    if 2 * r.abs() >= d.abs() {
        q + num.signum() * d.signum()
    } else {
        q
    }
}

/// Add `diff` copies of `v` to a multiset (a value whose count reaches 0 leaves it);
/// the key is copied only when it is new.
fn add_value(m: &mut BTreeMap<Vec<u8>, i64>, v: &[u8], diff: i64) {
    match m.get_mut(v) {
        Some(c) => {
            *c += diff;
            if *c == 0 {
                m.remove(v);
            }
        }
        None => {
            if diff != 0 {
                m.insert(v.to_vec(), diff);
            }
        }
    }
}

/// One aggregate's prepared argument over a batch.
pub struct Args {
    mask: Option<BooleanArray>,
    values: ArgValues,
}

enum ArgValues {
    None,
    Exact(Decimal128Array),
    Float(Float64Array),
    Bool(BooleanArray),
    Present(ArrayRef),
    Encoded {
        values: EncodedRows,
        nulls: ArrayRef,
        delims: Option<StringArray>,
    },
}

/// A retractable float sum. Finite values are summed with Neumaier's compensation, so
/// that deleting values gives back (to within rounding of the exact result) what the
/// remaining values sum to — `1e20 + 1 - 1e20` is 1, not 0. NaN and infinities are
/// counted, not added, so inserting and deleting one leaves no trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FloatAcc {
    pub sum: f64,
    pub comp: f64,
    /// Non-null values (with multiplicity).
    pub n: i64,
    pub nan: i64,
    pub pos_inf: i64,
    pub neg_inf: i64,
}

impl FloatAcc {
    pub fn add(&mut self, x: f64, diff: i64) {
        self.n += diff;
        if x.is_nan() {
            self.nan += diff;
        } else if x == f64::INFINITY {
            self.pos_inf += diff;
        } else if x == f64::NEG_INFINITY {
            self.neg_inf += diff;
        } else {
            let v = x * diff as f64;
            let t = self.sum + v;
            self.comp += if self.sum.abs() >= v.abs() {
                (self.sum - t) + v
            } else {
                (v - t) + self.sum
            };
            self.sum = t;
        }
    }

    /// The sum, or `None` when there are no values.
    pub fn value(&self) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        Some(if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) {
            f64::NAN
        } else if self.pos_inf > 0 {
            f64::INFINITY
        } else if self.neg_inf > 0 {
            f64::NEG_INFINITY
        } else {
            self.sum + self.comp
        })
    }
}

/// The state of one aggregate in one group.
#[derive(Clone, Debug, PartialEq)]
pub enum AccState {
    Count(i64),
    ExactSum {
        sum: i128,
        n: i64,
    },
    FloatSum(FloatAcc),
    Bools {
        trues: i64,
        falses: i64,
    },
    /// A multiset of encoded values.
    Values(BTreeMap<Vec<u8>, i64>),
    /// The smallest or largest encoded value so far (append-only min/max).
    Extreme(Option<Vec<u8>>),
}

impl AccState {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AccState::Count(c) => {
                out.push(0);
                out.extend_from_slice(&c.to_le_bytes());
            }
            AccState::ExactSum { sum, n } => {
                out.push(1);
                out.extend_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
            AccState::FloatSum(a) => {
                out.push(6);
                for v in [a.sum, a.comp] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                for v in [a.n, a.nan, a.pos_inf, a.neg_inf] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            AccState::Bools { trues, falses } => {
                out.push(3);
                out.extend_from_slice(&trues.to_le_bytes());
                out.extend_from_slice(&falses.to_le_bytes());
            }
            AccState::Extreme(v) => {
                out.push(5);
                match v {
                    Some(v) => {
                        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        out.extend_from_slice(v);
                    }
                    None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                }
            }
            AccState::Values(m) => {
                out.push(4);
                out.extend_from_slice(&(m.len() as u32).to_le_bytes());
                for (k, c) in m {
                    out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                    out.extend_from_slice(k);
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
        }
    }

    pub fn decode(cur: &mut &[u8]) -> Result<Self> {
        let tag = take::<1>(cur)?[0];
        Ok(match tag {
            0 => AccState::Count(i64::from_le_bytes(take::<8>(cur)?)),
            1 => AccState::ExactSum {
                sum: i128::from_le_bytes(take::<16>(cur)?),
                n: i64::from_le_bytes(take::<8>(cur)?),
            },
            // Written by eddy before compensated float sums.
            2 => AccState::FloatSum(FloatAcc {
                sum: f64::from_le_bytes(take::<8>(cur)?),
                n: i64::from_le_bytes(take::<8>(cur)?),
                ..Default::default()
            }),
            6 => AccState::FloatSum(FloatAcc {
                sum: f64::from_le_bytes(take::<8>(cur)?),
                comp: f64::from_le_bytes(take::<8>(cur)?),
                n: i64::from_le_bytes(take::<8>(cur)?),
                nan: i64::from_le_bytes(take::<8>(cur)?),
                pos_inf: i64::from_le_bytes(take::<8>(cur)?),
                neg_inf: i64::from_le_bytes(take::<8>(cur)?),
            }),
            3 => AccState::Bools {
                trues: i64::from_le_bytes(take::<8>(cur)?),
                falses: i64::from_le_bytes(take::<8>(cur)?),
            },
            4 => {
                let len = u32::from_le_bytes(take::<4>(cur)?);
                let mut m = BTreeMap::new();
                for _ in 0..len {
                    let klen = u32::from_le_bytes(take::<4>(cur)?) as usize;
                    if cur.len() < klen {
                        return Err(Error::Storage("corrupt aggregate state".into()));
                    }
                    let (k, rest) = cur.split_at(klen);
                    *cur = rest;
                    m.insert(k.to_vec(), i64::from_le_bytes(take::<8>(cur)?));
                }
                AccState::Values(m)
            }
            5 => {
                let len = u32::from_le_bytes(take::<4>(cur)?);
                if len == u32::MAX {
                    AccState::Extreme(None)
                } else {
                    let len = len as usize;
                    if cur.len() < len {
                        return Err(Error::Storage("corrupt aggregate state".into()));
                    }
                    let (v, rest) = cur.split_at(len);
                    *cur = rest;
                    AccState::Extreme(Some(v.to_vec()))
                }
            }
            _ => return Err(Error::Storage("corrupt aggregate state tag".into())),
        })
    }
}

fn take<const N: usize>(cur: &mut &[u8]) -> Result<[u8; N]> {
    if cur.len() < N {
        return Err(Error::Storage("corrupt aggregate state: truncated".into()));
    }
    let mut b = [0u8; N];
    b.copy_from_slice(&cur[..N]);
    *cur = &cur[N..];
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::col;

    /// The columnar output path ([`AggSpec::evaluate_column`]) and the per-group one
    /// ([`AggSpec::evaluate`]) must agree exactly: a view retracts a row built by one
    /// with a row built by the other when an epoch falls back to the slow path.
    #[test]
    fn columnar_and_per_group_values_agree_through_retractions() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(12, 2), true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
        ]));
        let n = 40;
        let ints: Vec<Option<i64>> = (0..n)
            .map(|r| (r % 7 != 3).then_some(r * 37 % 11 - 5))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ints.clone())),
                Arc::new(
                    Decimal128Array::from(
                        ints.iter()
                            .map(|v| v.map(|x| x as i128 * 1001))
                            .collect::<Vec<_>>(),
                    )
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
                ),
                Arc::new(Float64Array::from(
                    ints.iter()
                        .map(|v| v.map(|x| x as f64 / 3.0))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(
                    ints.iter().map(|v| v.map(|x| x > 0)).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        use AggKind::*;
        let specs: Vec<(AggKind, bool, &str, DataType)> = vec![
            (CountStar, false, "i", DataType::Int64),
            (Count, false, "i", DataType::Int64),
            (Count, true, "i", DataType::Int64),
            (Sum, false, "i", DataType::Int64),
            (Sum, false, "d", DataType::Decimal128(22, 2)),
            (Avg, false, "i", DataType::Float64),
            (Avg, false, "d", DataType::Decimal128(16, 6)),
            (Sum, false, "f", DataType::Float64),
            (Avg, false, "f", DataType::Float64),
            (Min, false, "i", DataType::Int64),
            (Max, false, "d", DataType::Decimal128(12, 2)),
            (Max, false, "f", DataType::Float64),
            (BoolAnd, false, "b", DataType::Boolean),
            (BoolOr, false, "b", DataType::Boolean),
        ];
        let errors = crate::dataflow::expr::EvalErrors::new();
        for (kind, distinct, arg, out) in specs {
            let field = schema.field_with_name(arg).unwrap();
            let args = if kind == CountStar {
                vec![]
            } else {
                vec![col(arg, &schema).unwrap()]
            };
            let spec = AggSpec::new(
                kind,
                distinct,
                args,
                None,
                field.data_type().clone(),
                out,
                format!("{kind:?}({arg})"),
            )
            .unwrap();
            let prepared = spec.prepare(&batch, &errors).unwrap();
            // Five groups: rows go in round robin, then some come out again; one group
            // ends empty (every row retracted), one never gets a row.
            let mut states: Vec<AccState> = (0..6).map(|_| spec.new_state()).collect();
            for r in 0..n as usize {
                spec.update(&mut states[r % 5], &prepared, r, 1);
            }
            for r in (0..n as usize).filter(|r| r % 3 == 0 || r % 5 == 4) {
                spec.update(&mut states[r % 5], &prepared, r, -1);
            }
            for summarized in [false, true] {
                let kept: Vec<AccState> = if summarized {
                    states.iter().map(|s| spec.summary(s)).collect()
                } else {
                    states.clone()
                };
                let refs: Vec<&AccState> = kept.iter().collect();
                let Some(column) = spec.evaluate_column(&refs).unwrap() else {
                    continue;
                };
                assert_eq!(column.data_type(), &spec.output_type, "{}", spec.display);
                for (g, s) in states.iter().enumerate() {
                    let one = spec.evaluate(s).unwrap();
                    let from_column = ScalarValue::try_from_array(&column, g).unwrap();
                    assert_eq!(one, from_column, "{} group {g}", spec.display);
                }
            }
        }
    }

    #[test]
    fn a_sum_that_does_not_fit_its_output_has_no_column() {
        let spec = AggSpec::new(
            AggKind::Sum,
            false,
            vec![],
            None,
            DataType::Int64,
            DataType::Int32,
            "sum".into(),
        )
        .unwrap();
        let big = AccState::ExactSum {
            sum: i64::MAX as i128,
            n: 1,
        };
        let small = AccState::ExactSum { sum: 5, n: 1 };
        assert!(spec.evaluate_column(&[&small]).unwrap().is_some());
        assert!(spec.evaluate_column(&[&small, &big]).unwrap().is_none());
    }

    #[test]
    fn float_sums_survive_retractions_exactly_enough() {
        let mut a = FloatAcc::default();
        for x in [0.1, 0.2, 0.3] {
            a.add(x, 1);
        }
        a.add(0.1, -1);
        a.add(0.2, -1);
        assert_eq!(a.value(), Some(0.3));
        let mut b = FloatAcc::default();
        b.add(1e20, 1);
        b.add(1.0, 1);
        b.add(1e20, -1);
        assert_eq!(b.value(), Some(1.0));
        // NaN and infinities come and go without trace.
        b.add(f64::NAN, 1);
        assert!(b.value().unwrap().is_nan());
        b.add(f64::NAN, -1);
        b.add(f64::INFINITY, 1);
        assert_eq!(b.value(), Some(f64::INFINITY));
        b.add(f64::INFINITY, -1);
        assert_eq!(b.value(), Some(1.0));
        b.add(1.0, -1);
        assert_eq!(b.value(), None);
    }
}
