//! Which columns of a plan follow the watermark, and what that lets operators forget.
//!
//! A column *follows the watermark with delay D* when every change a plan node emits
//! from now on (insertion or retraction) has a value of at least `W - D`, where `W` is
//! the node's watermark: the smallest watermark of the watermarked relations under it.
//! A stream's event-time column has delay 0: a stream only adds rows, and rows below
//! the watermark are dropped as late when they arrive. (A table's rows can be deleted
//! at any time, so its event-time column is left out.) The delay then follows the column through the
//! plan:
//!
//! - `t ± INTERVAL 'k'` (or a duration): delay `D ∓ k`.
//! - `date_bin(size, t)`, TUMBLE's and HOP's `window_start`: delay `D + size - 1µs`,
//!   since a bin starts less than `size` before `t`. HOP's k-th copy subtracts `k`
//!   slides more. `window_end`, the start plus the size, ends up with delay -1µs: every
//!   window a new row falls into ends after the watermark.
//!
//! (Times are whole microseconds, so "at least" is exact: a group whose key `v` has
//! `v < W - D` never changes again.)
//! - A union keeps a column that follows the watermark in every input, with the largest
//!   delay.
//! - An aggregate's group key keeps its delay: a group changes only when input for it
//!   arrives.
//!
//! Joins pass nothing through: a new row on one side meets stored rows of the other side
//! with any value.
//!
//! Operators use it to free state: an aggregate grouped by such a column frees a group
//! once `W - D` passes its key (see `HashAggOperator::with_close_key`), and a join whose key or condition bounds two such columns against each other
//! forgets rows that no future row can match (see [`TimeBound`]).

use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator as Op};

use super::context::RelationTable;
use crate::catalog::ObjectKind;
use crate::dataflow::hash_join::TimeBound;

/// For each output column of `plan`, its delay (µs) behind the watermark, or `None`
/// when it does not follow the watermark (see the module documentation).
pub(crate) fn time_columns(plan: &LogicalPlan) -> Vec<Option<i64>> {
    let width = plan.schema().fields().len();
    let none = || vec![None; width];
    match plan {
        LogicalPlan::TableScan(scan) => {
            let Some(name) = source_as_provider(&scan.source).ok().and_then(|p| {
                let any: &dyn std::any::Any = p.as_ref();
                any.downcast_ref::<RelationTable>()
                    .filter(|t| t.kind == ObjectKind::Stream)
                    .and_then(|t| t.event_time.clone())
            }) else {
                return none();
            };
            scan.projected_schema
                .fields()
                .iter()
                .map(|f| (f.name() == &name).then_some(0))
                .collect()
        }
        LogicalPlan::Filter(f) => time_columns(&f.input),
        LogicalPlan::SubqueryAlias(s) => time_columns(&s.input),
        LogicalPlan::Projection(p) => {
            let input = time_columns(&p.input);
            p.expr
                .iter()
                .zip(p.schema.fields())
                .map(|(e, f)| {
                    is_timestamp(f.data_type())
                        .then(|| expr_delay(e, &p.input, &input))
                        .flatten()
                })
                .collect()
        }
        LogicalPlan::Union(u) => {
            let inputs: Vec<Vec<Option<i64>>> = u.inputs.iter().map(|i| time_columns(i)).collect();
            if inputs.is_empty() {
                return none();
            }
            (0..width)
                .map(|c| {
                    inputs.iter().try_fold(i64::MIN, |acc, cols| {
                        cols.get(c).copied().flatten().map(|d| acc.max(d))
                    })
                })
                .collect()
        }
        LogicalPlan::Aggregate(a) => {
            let input = time_columns(&a.input);
            let mut out: Vec<Option<i64>> = a
                .group_expr
                .iter()
                .map(|g| expr_delay(g, &a.input, &input))
                .collect();
            out.resize(width, None);
            out
        }
        _ => none(),
    }
}

fn is_timestamp(t: &datafusion::arrow::datatypes::DataType) -> bool {
    matches!(t, datafusion::arrow::datatypes::DataType::Timestamp(_, _))
}

/// The delay of expression `e` over `input`, whose columns have delays `delays`.
fn expr_delay(e: &Expr, input: &LogicalPlan, delays: &[Option<i64>]) -> Option<i64> {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    match e {
        Expr::Column(c) => {
            let i = input.schema().index_of_column(c).ok()?;
            delays.get(i).copied().flatten()
        }
        Expr::Alias(a) => expr_delay(&a.expr, input, delays),
        // Casts that keep every microsecond (a coarser unit would round down).
        Expr::Cast(c)
            if matches!(
                c.field.data_type(),
                DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, _)
            ) =>
        {
            expr_delay(&c.expr, input, delays)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (d, k) = match (expr_delay(left, input, delays), fixed_micros(right)) {
                (Some(d), Some(k)) => (d, k),
                _ if *op == Op::Plus => (expr_delay(right, input, delays)?, fixed_micros(left)?),
                _ => return None,
            };
            match op {
                Op::Plus => d.checked_sub(k),
                Op::Minus => d.checked_add(k),
                _ => None,
            }
        }
        Expr::ScalarFunction(f) if f.func.name() == "date_bin" => {
            let size = fixed_micros(f.args.first()?)?;
            let d = expr_delay(f.args.get(1)?, input, delays)?;
            (size > 0).then(|| d.checked_add(size - 1)).flatten()
        }
        _ => None,
    }
}

/// A constant length of time in microseconds: an interval without months, or a
/// duration (also when still written as `arrow_cast(n, 'Duration(...)')`).
fn fixed_micros(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => scalar_micros(v),
        Expr::Alias(a) => fixed_micros(&a.expr),
        Expr::ScalarFunction(f) if f.func.name() == "arrow_cast" => {
            let Some(Expr::Literal(ScalarValue::Utf8(Some(t)), _)) = f.args.get(1) else {
                return None;
            };
            let Some(Expr::Literal(n, _)) = f.args.first() else {
                return None;
            };
            let n = match n {
                ScalarValue::Int64(Some(n)) => *n,
                ScalarValue::Int32(Some(n)) => i64::from(*n),
                _ => return None,
            };
            match t.as_str() {
                "Duration(Second)" => n.checked_mul(1_000_000),
                "Duration(Millisecond)" => n.checked_mul(1_000),
                "Duration(Microsecond)" => Some(n),
                "Duration(Nanosecond)" => Some(n / 1_000),
                _ => None,
            }
        }
        _ => None,
    }
}

fn scalar_micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => (v.days as i64)
            .checked_mul(86_400_000_000)?
            .checked_add(v.nanoseconds / 1000),
        ScalarValue::IntervalDayTime(Some(v)) => (v.days as i64)
            .checked_mul(86_400_000_000)?
            .checked_add(v.milliseconds as i64 * 1000),
        ScalarValue::DurationSecond(Some(s)) => s.checked_mul(1_000_000),
        ScalarValue::DurationMillisecond(Some(ms)) => ms.checked_mul(1_000),
        ScalarValue::DurationMicrosecond(Some(us)) => Some(*us),
        ScalarValue::DurationNanosecond(Some(ns)) => Some(ns / 1_000),
        _ => None,
    }
}

/// `col` or `col ± constant`: the column and the offset in microseconds.
fn column_plus_offset(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) => column_plus_offset(&c.expr),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (c, base) = column_plus_offset(left)?;
            let micros = fixed_micros(right)?;
            match op {
                Op::Plus => base.checked_add(micros).map(|o| (c, o)),
                Op::Minus => base.checked_sub(micros).map(|o| (c, o)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The bound a join's key and condition put on `left.t - right.t`, for a pair of
/// columns that follow the watermark (one per side), when there is one (see
/// [`TimeBound`]). Equal keys (`l.window_start = r.window_start`) bound the difference
/// to `[0, 0]`; `BETWEEN` and comparisons with interval offsets bound it on one or both
/// ends. Among several pairs, one bounded on both ends is preferred.
pub(crate) fn join_time_bound(j: &datafusion::logical_expr::Join) -> Option<TimeBound> {
    let delays = [time_columns(&j.left), time_columns(&j.right)];
    if delays.iter().any(|d| d.iter().all(Option::is_none)) {
        return None;
    }
    let schemas = [j.left.schema(), j.right.schema()];
    // (left.t + x) OP (right.t + y) for every conjunct and every key pair.
    let mut conjuncts: Vec<(Expr, Op, Expr)> =
        j.on.iter()
            .map(|(l, r)| (l.clone(), Op::Eq, r.clone()))
            .collect();
    if let Some(filter) = &j.filter {
        for e in datafusion::logical_expr::utils::split_conjunction(filter) {
            match e {
                Expr::Between(b) if !b.negated => {
                    conjuncts.push((*b.expr.clone(), Op::GtEq, *b.low.clone()));
                    conjuncts.push((*b.expr.clone(), Op::LtEq, *b.high.clone()));
                }
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    conjuncts.push((*left.clone(), *op, *right.clone()))
                }
                _ => {}
            }
        }
    }
    // Which side and column a column is, when that column follows the watermark.
    let locate = |c: &Column| -> Option<(usize, usize)> {
        (0..2).find_map(|side| {
            let i = schemas[side].index_of_column(c).ok()?;
            delays[side].get(i).copied().flatten().map(|_| (side, i))
        })
    };
    // (left column, right column) → (lo, hi)
    type Pair = (usize, usize);
    let mut bounds: Vec<(Pair, (Option<i64>, Option<i64>))> = vec![];
    for (a, op, b) in &conjuncts {
        let (Some((a, x)), Some((b, y))) = (column_plus_offset(a), column_plus_offset(b)) else {
            continue;
        };
        let (Some(a), Some(b)) = (locate(&a), locate(&b)) else {
            continue;
        };
        // a + x OP b + y, with a and b on opposite sides.
        let (cols, op, c) = match (a.0, b.0) {
            // left + x OP right + y  =>  left - right OP y - x
            (0, 1) => ((a.1, b.1), *op, y - x),
            // right + x OP left + y  =>  left - right OP' x - y (OP flipped)
            (1, 0) => match op.swap() {
                Some(o) => ((b.1, a.1), o, x - y),
                None => continue,
            },
            _ => continue,
        };
        let entry = match bounds.iter_mut().find(|(k, _)| *k == cols) {
            Some((_, e)) => e,
            None => {
                bounds.push((cols, (None, None)));
                &mut bounds.last_mut().expect("just pushed").1
            }
        };
        let (lo, hi) = entry;
        if matches!(op, Op::GtEq | Op::Gt | Op::Eq) {
            *lo = Some(lo.map_or(c, |l: i64| l.max(c)));
        }
        if matches!(op, Op::LtEq | Op::Lt | Op::Eq) {
            *hi = Some(hi.map_or(c, |h: i64| h.min(c)));
        }
    }
    let best = bounds
        .iter()
        .find(|(_, (lo, hi))| lo.is_some() && hi.is_some())
        .or_else(|| bounds.first())?;
    let ((l, r), (lo, hi)) = *best;
    Some(TimeBound {
        columns: [l, r],
        delays: [delays[0][l]?, delays[1][r]?],
        lo,
        hi,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};

    use super::*;
    use crate::catalog::{Catalog, CatalogEntry, Column as CatColumn};
    use crate::dataflow::watermark::WatermarkDef;
    use crate::plan::context::{base_session_state, PlanContext};
    use crate::sql::Statement;
    use crate::storage::WriteBatch;

    const SEC: i64 = 1_000_000;

    /// The optimized plan of `query` over a stream `s (k, v, t)` watermarked on `t`, a
    /// stream `u` like it without a watermark, and a table `tb` like `s` (watermarked,
    /// but a table).
    fn plan(query: &str) -> LogicalPlan {
        let mut catalog = Catalog::default();
        let mut batch = WriteBatch::new();
        let col = |name: &str, data_type: DataType| CatColumn {
            name: name.into(),
            data_type,
            nullable: true,
            sql_type: None,
        };
        for (name, kind, watermark) in [
            ("s", ObjectKind::Stream, true),
            ("u", ObjectKind::Stream, false),
            ("tb", ObjectKind::Table, true),
        ] {
            let id = catalog.allocate_id(&mut batch);
            let entry = CatalogEntry {
                id,
                name: name.into(),
                kind,
                columns: vec![
                    col("k", DataType::Int64),
                    col("v", DataType::Int64),
                    col("t", DataType::Timestamp(TimeUnit::Microsecond, None)),
                ],
                primary_key: vec![],
                sql: String::new(),
                depends_on: vec![],
                options: BTreeMap::new(),
                append_only: kind == ObjectKind::Stream,
                watermark: watermark.then(|| WatermarkDef {
                    column: "t".into(),
                    lateness_us: 0,
                    idle_timeout_ms: None,
                }),
                plan_version: 0,
            };
            catalog.insert(entry, &mut batch).unwrap();
        }
        let Statement::CreateView(v) =
            crate::sql::parse_one(&format!("CREATE MATERIALIZED VIEW x AS {query}")).unwrap()
        else {
            panic!("not a view")
        };
        let state = base_session_state();
        PlanContext::new(&state, &catalog, None)
            .plan_query(&v.query)
            .unwrap()
    }

    /// The delay of each named output column of `query`.
    fn delays(query: &str) -> Vec<(String, Option<i64>)> {
        let p = plan(query);
        p.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(time_columns(&p))
            .collect()
    }

    fn delay_of(query: &str, column: &str) -> Option<i64> {
        delays(query)
            .into_iter()
            .find(|(n, _)| n == column)
            .unwrap_or_else(|| panic!("no column {column}"))
            .1
    }

    /// The time bound of the (first) join in `query`'s plan.
    fn bound(query: &str) -> Option<TimeBound> {
        let mut found = None;
        plan(query)
            .apply(|n| {
                if let LogicalPlan::Join(j) = n {
                    found = Some(join_time_bound(j));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        found.expect("a join")
    }

    #[test]
    fn event_time_follows_the_watermark_through_filters_and_projections() {
        assert_eq!(delay_of("SELECT k, t FROM s WHERE v > 1", "t"), Some(0));
        assert_eq!(delay_of("SELECT k, t AS at FROM s", "at"), Some(0));
        assert_eq!(delay_of("SELECT k, t FROM s", "k"), None);
        assert_eq!(
            delay_of("SELECT t - INTERVAL '5' SECOND AS early FROM s", "early"),
            Some(5 * SEC)
        );
        assert_eq!(
            delay_of("SELECT t + INTERVAL '5' SECOND AS late FROM s", "late"),
            Some(-5 * SEC)
        );
        // No watermark, or a table (its rows can be deleted at any time): nothing.
        assert_eq!(delay_of("SELECT t FROM u", "t"), None);
        assert_eq!(delay_of("SELECT t FROM tb", "t"), None);
    }

    #[test]
    fn window_starts_lag_by_the_size_and_window_ends_lead() {
        let tumble = "SELECT * FROM TUMBLE(s, t, INTERVAL '10' SECOND)";
        assert_eq!(delay_of(tumble, "window_start"), Some(10 * SEC - 1));
        assert_eq!(delay_of(tumble, "window_end"), Some(-1));
        assert_eq!(delay_of(tumble, "t"), Some(0));
        // HOP: a union of 5 shifted copies; the largest delay wins.
        let hop = "SELECT * FROM HOP(s, t, INTERVAL '2' SECOND, INTERVAL '10' SECOND)";
        assert_eq!(delay_of(hop, "window_start"), Some(10 * SEC - 1));
        assert_eq!(delay_of(hop, "window_end"), Some(-1));
        // An aggregate's group keys keep their delay; its aggregates have none.
        let agg = "SELECT k, window_start, max(t) AS m \
                   FROM TUMBLE(s, t, INTERVAL '10' SECOND) GROUP BY k, window_start";
        assert_eq!(delay_of(agg, "window_start"), Some(10 * SEC - 1));
        assert_eq!(delay_of(agg, "m"), None);
        assert_eq!(delay_of(agg, "k"), None);
        // A union with a branch that does not follow the watermark: nothing.
        assert_eq!(
            delay_of("SELECT t FROM s UNION ALL SELECT t FROM u", "t"),
            None
        );
    }

    #[test]
    fn joins_are_bounded_by_equal_windows_and_by_time_conditions() {
        // q7's form: windowed rows joined to their window's maximum.
        let b = bound(
            "SELECT b.k FROM TUMBLE(s, t, INTERVAL '10' SECOND) AS b \
             JOIN (SELECT window_start, max(v) AS m FROM TUMBLE(s, t, INTERVAL '10' SECOND) \
                   GROUP BY window_start) AS w \
             ON b.window_start = w.window_start AND b.v = w.m",
        )
        .expect("bounded");
        assert_eq!((b.lo, b.hi), (Some(0), Some(0)));
        assert_eq!(b.delays, [10 * SEC - 1, 10 * SEC - 1]);
        // An interval join: left.t - right.t in [-60 s, 0].
        let b = bound(
            "SELECT a.k FROM s a JOIN s c ON a.k = c.k \
             AND c.t BETWEEN a.t AND a.t + INTERVAL '1' MINUTE",
        )
        .expect("bounded");
        assert_eq!((b.lo, b.hi, b.delays), (Some(-60 * SEC), Some(0), [0, 0]));
        // q4's form: one end only.
        let b = bound("SELECT a.k FROM s a JOIN s c ON a.k = c.k AND c.t >= a.t").expect("bounded");
        assert_eq!((b.lo, b.hi), (None, Some(0)));
        // No bound: a plain key, a stream without a watermark, a table.
        assert_eq!(bound("SELECT a.k FROM s a JOIN s c ON a.k = c.k"), None);
        assert_eq!(
            bound("SELECT a.k FROM s a JOIN u c ON a.k = c.k AND c.t >= a.t"),
            None
        );
        assert_eq!(
            bound("SELECT a.k FROM s a JOIN tb c ON a.k = c.k AND c.t >= a.t"),
            None
        );
    }
}
