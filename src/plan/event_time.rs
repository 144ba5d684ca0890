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
use crate::dataflow::hash_join::{Expiry, TimeBound};

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
        // SESSION's placeholders: a SessionWindowOperator re-emits a key's old rows
        // (retracted and inserted again) when its sessions merge or split, so none of
        // its columns follows the watermark.
        LogicalPlan::Projection(p) if p.expr.iter().any(is_session_window) => none(),
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

/// Does `e` call SESSION's placeholder functions?
fn is_session_window(e: &Expr) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = false;
    let _ = e.apply(|x| {
        if let Expr::ScalarFunction(f) = x {
            if f.name() == super::functions::SESSION_START
                || f.name() == super::functions::SESSION_END
            {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
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

/// The comparisons of a join's condition, `BETWEEN` split into its two ends.
fn filter_comparisons(j: &datafusion::logical_expr::Join) -> Vec<(Expr, Op, Expr)> {
    let mut out = vec![];
    let Some(filter) = &j.filter else {
        return out;
    };
    for e in datafusion::logical_expr::utils::split_conjunction(filter) {
        match e {
            Expr::Between(b) if !b.negated => {
                out.push((*b.expr.clone(), Op::GtEq, *b.low.clone()));
                out.push((*b.expr.clone(), Op::LtEq, *b.high.clone()));
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                out.push((*left.clone(), *op, *right.clone()))
            }
            _ => {}
        }
    }
    out
}

/// Bounds on `left - right` for a pair of columns.
type Bounds = (Option<i64>, Option<i64>);

/// For each pair of columns (left, right) that `conjuncts` compare (`a + x OP b + y`,
/// with `locate` giving a column's side and index, or `None` to ignore it), the bounds
/// on `left - right`: the largest lower and the smallest upper.
fn pair_bounds(
    conjuncts: &[(Expr, Op, Expr)],
    locate: impl Fn(&Column) -> Option<(usize, usize)>,
) -> Vec<([usize; 2], Bounds)> {
    let mut pairs: Vec<([usize; 2], Bounds)> = vec![];
    for (a, op, b) in conjuncts {
        let (Some((a, x)), Some((b, y))) = (column_plus_offset(a), column_plus_offset(b)) else {
            continue;
        };
        let (Some(a), Some(b)) = (locate(&a), locate(&b)) else {
            continue;
        };
        // a + x OP b + y, with a and b on opposite sides.
        let (cols, op, c) = match (a.0, b.0) {
            // left + x OP right + y  =>  left - right OP y - x
            (0, 1) => ([a.1, b.1], *op, y - x),
            // right + x OP left + y  =>  left - right OP' x - y (OP flipped)
            (1, 0) => match op.swap() {
                Some(o) => ([b.1, a.1], o, x - y),
                None => continue,
            },
            _ => continue,
        };
        if !matches!(op, Op::GtEq | Op::Gt | Op::Eq | Op::LtEq | Op::Lt) {
            continue;
        }
        let index = match pairs.iter().position(|(k, _)| *k == cols) {
            Some(i) => i,
            None => {
                pairs.push((cols, (None, None)));
                pairs.len() - 1
            }
        };
        let (lo, hi) = &mut pairs[index].1;
        if matches!(op, Op::GtEq | Op::Gt | Op::Eq) {
            *lo = Some(lo.map_or(c, |l: i64| l.max(c)));
        }
        if matches!(op, Op::LtEq | Op::Lt | Op::Eq) {
            *hi = Some(hi.map_or(c, |h: i64| h.min(c)));
        }
    }
    pairs
}

/// The bound a join's key and condition put on its two sides' times, when there is one
/// (see [`TimeBound`]). Each conjunct `left.a + x OP right.b + y` between timestamp
/// columns bounds `left.a - right.b`. A lower bound lets left rows expire when
/// `right.b` follows the watermark; an upper bound lets right rows expire when
/// `left.a` does. Equal keys (`l.window_start = r.window_start`) bound the difference
/// to `[0, 0]`. One pair of columns bounded on both ends is preferred; otherwise each
/// side takes the first condition that lets it expire (q4: bids by `B.date_time >=
/// A.date_time`, auctions by `B.date_time <= A.expires`).
pub(crate) fn join_time_bound(j: &datafusion::logical_expr::Join) -> Option<TimeBound> {
    let delays = [time_columns(&j.left), time_columns(&j.right)];
    if delays.iter().all(|d| d.iter().all(Option::is_none)) {
        return None;
    }
    let schemas = [j.left.schema(), j.right.schema()];
    // (left.t + x) OP (right.t + y) for every key pair and every conjunct.
    let mut conjuncts: Vec<(Expr, Op, Expr)> =
        j.on.iter()
            .map(|(l, r)| (l.clone(), Op::Eq, r.clone()))
            .collect();
    conjuncts.extend(filter_comparisons(j));
    // Which side and column a timestamp column is.
    let pairs = pair_bounds(&conjuncts, |c| {
        (0..2).find_map(|side| {
            let i = schemas[side].index_of_column(c).ok()?;
            is_timestamp(schemas[side].field(i).data_type()).then_some((side, i))
        })
    });
    // A lower bound expires left rows if the right column follows the watermark; an
    // upper bound expires right rows if the left column does.
    let expiry = |cols: [usize; 2], value: Option<i64>, far: usize| -> Option<Expiry> {
        Some(Expiry {
            columns: cols,
            delay: delays[far].get(cols[far]).copied().flatten()?,
            own_delay: delays[1 - far].get(cols[1 - far]).copied().flatten(),
            value: value?,
        })
    };
    let both = pairs
        .iter()
        .find_map(|(cols, (lo, hi))| Some((expiry(*cols, *lo, 1)?, expiry(*cols, *hi, 0)?)));
    let (lo, hi) = match both {
        Some((lo, hi)) => (Some(lo), Some(hi)),
        None => (
            pairs
                .iter()
                .find_map(|(cols, (lo, _))| expiry(*cols, *lo, 1)),
            pairs
                .iter()
                .find_map(|(cols, (_, hi))| expiry(*cols, *hi, 0)),
        ),
    };
    (lo.is_some() || hi.is_some()).then_some(TimeBound { lo, hi })
}

/// Views created before plan version 2 (`catalog::PLAN_VERSION`) keep the interval
/// joins they were lowered with.
pub(crate) mod legacy {
    use super::*;

    /// The name of the event-time column `plan` passes through from a watermarked relation
    /// (through filters, aliases and projections that keep the column as it is).
    fn legacy_side_event_time(plan: &LogicalPlan) -> Option<String> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let p = source_as_provider(&scan.source).ok()?;
                let any: &dyn std::any::Any = p.as_ref();
                let name = any.downcast_ref::<RelationTable>()?.event_time.clone()?;
                scan.projected_schema
                    .fields()
                    .iter()
                    .any(|f| f.name() == &name)
                    .then_some(name)
            }
            LogicalPlan::Filter(f) => legacy_side_event_time(&f.input),
            LogicalPlan::SubqueryAlias(s) => legacy_side_event_time(&s.input),
            LogicalPlan::Projection(p) => {
                let name = legacy_side_event_time(&p.input)?;
                p.expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(c) if c.name == name))
                    .then_some(name)
            }
            _ => None,
        }
    }

    /// The bound views created before plan version 2 were lowered with (kept so that a
    /// restarted view keeps its operators' behaviour, see `catalog::PLAN_VERSION`): read
    /// from the join's filter only (no equalities), between the two sides' event-time
    /// columns as they pass through filters, aliases and projections, one pair for both
    /// ends.
    pub(crate) fn legacy_join_time_bound(j: &datafusion::logical_expr::Join) -> Option<TimeBound> {
        let names = [
            legacy_side_event_time(&j.left)?,
            legacy_side_event_time(&j.right)?,
        ];
        let schemas = [j.left.schema(), j.right.schema()];
        let conjuncts: Vec<(Expr, Op, Expr)> = filter_comparisons(j)
            .into_iter()
            .filter(|(_, op, _)| *op != Op::Eq)
            .collect();
        // Only each side's event-time column counts.
        let pairs = pair_bounds(&conjuncts, |c| {
            (0..2).find_map(|side| {
                (c.name == names[side])
                    .then(|| schemas[side].index_of_column(c).ok())
                    .flatten()
                    .map(|i| (side, i))
            })
        });
        let (columns, (lo, hi)) = *pairs.first()?;
        let expiry = |value: Option<i64>| {
            value.map(|value| Expiry {
                columns,
                delay: 0,
                own_delay: Some(0),
                value,
            })
        };
        Some(TimeBound {
            lo: expiry(lo),
            hi: expiry(hi),
        })
    }
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

    /// The time bound of the (first) join in `query`'s plan, each expiry as (left
    /// column, right column, delay, own delay, value).
    type Named = (String, String, i64, Option<i64>, i64);
    fn bound(query: &str) -> Option<(Option<Named>, Option<Named>, TimeBound)> {
        let mut found = None;
        plan(query)
            .apply(|n| {
                if let LogicalPlan::Join(j) = n {
                    found = Some(join_time_bound(j).map(|b| {
                        let named = |e: Option<Expiry>| {
                            e.map(|e| {
                                (
                                    j.left.schema().field(e.columns[0]).name().clone(),
                                    j.right.schema().field(e.columns[1]).name().clone(),
                                    e.delay,
                                    e.own_delay,
                                    e.value,
                                )
                            })
                        };
                        (named(b.lo), named(b.hi), b)
                    }));
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
        // SESSION re-emits old rows as sessions merge: even the event time is out.
        let session = "SELECT k, t, window_start, count(*) AS n \
                       FROM SESSION(s, t, INTERVAL '10' SECOND) GROUP BY k, t, window_start";
        assert_eq!(delay_of(session, "t"), None);
        assert_eq!(delay_of(session, "window_start"), None);
        // A union with a branch that does not follow the watermark: nothing.
        assert_eq!(
            delay_of("SELECT t FROM s UNION ALL SELECT t FROM u", "t"),
            None
        );
    }

    #[test]
    fn joins_are_bounded_by_equal_windows_and_by_time_conditions() {
        let e = |l: &str, r: &str, delay: i64, own: Option<i64>, value: i64| {
            Some((l.to_string(), r.to_string(), delay, own, value))
        };
        // q7's form: windowed rows joined to their window's maximum.
        let (lo, hi, b) = bound(
            "SELECT b.k FROM TUMBLE(s, t, INTERVAL '10' SECOND) AS b \
             JOIN (SELECT window_start, max(v) AS m FROM TUMBLE(s, t, INTERVAL '10' SECOND) \
                   GROUP BY window_start) AS w \
             ON b.window_start = w.window_start AND b.v = w.m",
        )
        .expect("bounded");
        let w = 10 * SEC - 1;
        assert_eq!(lo, e("window_start", "window_start", w, Some(w), 0));
        assert_eq!(hi, e("window_start", "window_start", w, Some(w), 0));
        // The aggregate's side retracts, but a retraction of a closed window is late.
        assert!(b.expired_rows_stay_gone(0, true) && b.expired_rows_stay_gone(1, false));
        // An interval join: left.t - right.t in [-60 s, 0].
        let (lo, hi, _) = bound(
            "SELECT a.k FROM s a JOIN s c ON a.k = c.k \
             AND c.t BETWEEN a.t AND a.t + INTERVAL '1' MINUTE",
        )
        .expect("bounded");
        assert_eq!(lo, e("t", "t", 0, Some(0), -60 * SEC));
        assert_eq!(hi, e("t", "t", 0, Some(0), 0));
        // q4's form: right rows expire by c.t >= a.t, left rows by c.t <= a.ends.
        let (lo, hi, _) = bound(
            "SELECT a.k FROM (SELECT k, t, t + INTERVAL '1' HOUR AS ends FROM s) a \
             JOIN s c ON a.k = c.k AND c.t BETWEEN a.t AND a.ends",
        )
        .expect("bounded");
        assert_eq!(lo, e("ends", "t", 0, Some(-3600 * SEC), 0));
        assert_eq!(hi, e("t", "t", 0, Some(0), 0));
        // Rows of a side without a watermark expire by the other side's: a table's
        // rows could still be deleted then, which the planner checks.
        let (lo, hi, b) =
            bound("SELECT a.k FROM s a JOIN tb c ON a.k = c.k AND c.t >= a.t").expect("bounded");
        assert_eq!((lo, hi), (None, e("t", "t", 0, None, 0)));
        assert!(b.expired_rows_stay_gone(0, false) && !b.expired_rows_stay_gone(1, false));
        // No bound: a plain key; a condition whose far side does not follow the
        // watermark (a stream without one, a table).
        assert!(bound("SELECT a.k FROM s a JOIN s c ON a.k = c.k").is_none());
        assert!(bound("SELECT a.k FROM s a JOIN u c ON a.k = c.k AND c.t <= a.t").is_none());
        assert!(bound("SELECT a.k FROM s a JOIN tb c ON a.k = c.k AND c.t <= a.t").is_none());
    }

    /// Views of plan version 1 keep the bounds they were lowered with: interval
    /// conditions between event times only.
    #[test]
    fn views_of_plan_version_1_keep_their_interval_joins() {
        let legacy_bound = |query: &str| {
            let mut found = None;
            plan(query)
                .apply(|n| {
                    if let LogicalPlan::Join(j) = n {
                        found = Some((legacy::legacy_join_time_bound(j), join_time_bound(j)));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
                .unwrap();
            found.expect("a join")
        };
        let (old, new) = legacy_bound(
            "SELECT a.k FROM s a JOIN s c ON a.k = c.k \
             AND c.t BETWEEN a.t AND a.t + INTERVAL '1' MINUTE",
        );
        assert!(old.is_some());
        assert_eq!(old, new);
        let (old, new) = legacy_bound(
            "SELECT b.k FROM TUMBLE(s, t, INTERVAL '10' SECOND) AS b \
             JOIN (SELECT window_start, max(v) AS m FROM TUMBLE(s, t, INTERVAL '10' SECOND) \
                   GROUP BY window_start) AS w \
             ON b.window_start = w.window_start AND b.v = w.m",
        );
        assert_eq!(old, None);
        assert!(new.is_some());
    }
}
