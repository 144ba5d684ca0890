//! Window table functions in FROM: `TUMBLE(rel, ts, size)` and `HOP(rel, ts, slide,
//! size)`. Each adds `window_start` and `window_end` (start inclusive, end exclusive,
//! aligned to 1970-01-01 UTC) to every row of `rel`.
//!
//! They are expanded into plain SQL before DataFusion plans the statement, so every
//! operator the incremental engine has (projection, union, aggregate, join) maintains
//! windowed views too:
//!
//! - `TUMBLE` is a projection: `window_start = date_bin(size, ts)`.
//! - `HOP` puts each row into `size / slide` windows: a `UNION ALL` of that many
//!   projections, the k-th shifted back by k slides. `size` must be a multiple of
//!   `slide` (at most 100 windows per row).
//!
//! Sizes in months or years are rejected: a month has no fixed length. A row whose time
//! is NULL belongs to no window.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// Most windows `HOP` may put one row into.
const MAX_HOPS: i64 = 100;

/// Replace every `TUMBLE(...)` / `HOP(...)` / `SESSION(...)` in FROM with the subquery
/// it stands for.
pub fn expand_window_functions(statement: &mut ast::Statement) -> Result<()> {
    struct Expand {
        failure: Option<Error>,
    }
    impl VisitorMut for Expand {
        type Break = ();
        // SESSION needs its SELECT's GROUP BY (sessions are per key): expanded here,
        // before the table factors are visited.
        fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
            if let ast::SetExpr::Select(select) = q.body.as_mut() {
                if let Err(e) = expand_sessions(select) {
                    self.failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            match expand(tf) {
                Ok(Some(new)) => *tf = new,
                Ok(None) => {}
                Err(e) => {
                    self.failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Expand { failure: None };
    let _ = statement.visit(&mut v);
    match v.failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `SESSION(rel, ts, gap)` in this SELECT's FROM: sessions per GROUP BY key (the
/// grouping columns other than window_start and window_end).
fn expand_sessions(select: &mut ast::Select) -> Result<()> {
    let usage = "SESSION(relation, time_column, gap)";
    let has_session = select.from.iter().any(|twj| {
        std::iter::once(&twj.relation)
            .chain(twj.joins.iter().map(|j| &j.relation))
            .any(|tf| {
                matches!(tf, TableFactor::Table { name, args: Some(_), .. }
                    if name.to_string().eq_ignore_ascii_case("session"))
            })
    });
    if !has_session {
        return Ok(());
    }
    let keys: Vec<String> = match &select.group_by {
        ast::GroupByExpr::Expressions(exprs, _) => exprs
            .iter()
            .filter_map(|e| {
                let name = match e {
                    Expr::Identifier(i) => Some(i.clone()),
                    Expr::CompoundIdentifier(parts) => parts.last().cloned(),
                    _ => None,
                };
                match name {
                    Some(i)
                        if i.value.eq_ignore_ascii_case("window_start")
                            || i.value.eq_ignore_ascii_case("window_end") =>
                    {
                        None
                    }
                    Some(i) => Some(Ok(i.to_string())),
                    None => Some(Err(e.to_string())),
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::not_supported(format!(
                    "grouping a SESSION window by {e}: sessions are per key column; group by columns of the relation"
                ))
            })?,
        _ => vec![],
    };
    for twj in select.from.iter_mut() {
        let mut factors: Vec<&mut TableFactor> = vec![&mut twj.relation];
        factors.extend(twj.joins.iter_mut().map(|j| &mut j.relation));
        for tf in factors {
            let TableFactor::Table {
                name,
                alias,
                args: Some(args),
                ..
            } = tf
            else {
                continue;
            };
            if !name.to_string().eq_ignore_ascii_case("session") {
                continue;
            }
            let (exprs, relation) = window_args(&args.args, "SESSION", usage, 3)?;
            let ts = exprs[1].to_string();
            let gap = interval_micros(exprs[2], "gap")?;
            let args: Vec<String> = [ts.clone(), gap.to_string()]
                .into_iter()
                .chain(keys.iter().cloned())
                .collect();
            let args = args.join(", ");
            let sql = format!(
                "SELECT *, {start}({args}) AS window_start, {end}({args}) AS window_end \
                 FROM {relation} WHERE {ts} IS NOT NULL",
                start = super::functions::SESSION_START,
                end = super::functions::SESSION_END,
            );
            *tf = derived(&sql, alias.clone(), exprs[0])?;
        }
    }
    Ok(())
}

fn expand(tf: &TableFactor) -> Result<Option<TableFactor>> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = tf
    else {
        return Ok(None);
    };
    let func = name.to_string().to_lowercase();
    let (hop, usage) = match func.as_str() {
        "tumble" => (false, "TUMBLE(relation, time_column, size)"),
        "hop" => (true, "HOP(relation, time_column, slide, size)"),
        _ => return Ok(None),
    };
    let (exprs, relation) = window_args(
        &args.args,
        &func.to_uppercase(),
        usage,
        if hop { 4 } else { 3 },
    )?;
    let ts = exprs[1].to_string();
    let sql = if hop {
        let slide = interval_micros(exprs[2], "slide")?;
        let size = interval_micros(exprs[3], "size")?;
        if size % slide != 0 {
            return Err(Error::invalid_with(
                "22023",
                "HOP's size must be a whole multiple of its slide",
            ));
        }
        let n = size / slide;
        if n > MAX_HOPS {
            return Err(Error::invalid_with(
                "22023",
                format!("HOP puts each row into size/slide = {n} windows; at most {MAX_HOPS} are allowed"),
            ));
        }
        (0..n)
            .map(|k| {
                format!(
                    "SELECT *, date_bin(INTERVAL '{slide} microseconds', {ts}) - {} AS window_start, \
                     date_bin(INTERVAL '{slide} microseconds', {ts}) + {} AS window_end \
                     FROM {relation} WHERE {ts} IS NOT NULL",
                    micros(k * slide),
                    micros(size - k * slide)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    } else {
        let size = interval_micros(exprs[2], "size")?;
        format!(
            "SELECT *, date_bin(INTERVAL '{size} microseconds', {ts}) AS window_start, \
             date_bin(INTERVAL '{size} microseconds', {ts}) + {} AS window_end \
             FROM {relation} WHERE {ts} IS NOT NULL",
            micros(size)
        )
    };
    Ok(Some(derived(&sql, alias.clone(), exprs[0])?))
}

/// A fixed length of time as SQL: a duration, not an interval. Timestamp ± duration is
/// plain integer arithmetic on the column, where timestamp ± interval goes through a
/// calendar conversion per row (a tenth of the work of a HOP view's dataflow thread).
fn micros(us: i64) -> String {
    format!("arrow_cast({us}, 'Duration(Microsecond)')")
}

/// A window function's arguments (`n` of them, all plain expressions) and the relation
/// its first one names.
fn window_args<'a>(
    args: &'a [FunctionArg],
    func: &str,
    usage: &str,
    n: usize,
) -> Result<(Vec<&'a Expr>, String)> {
    let exprs: Vec<&Expr> = args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(Error::invalid_with("42601", format!("usage: {usage}"))),
        })
        .collect::<Result<_>>()?;
    if exprs.len() != n {
        return Err(Error::invalid_with(
            "42601",
            format!("{func} takes {n} arguments: {usage}"),
        ));
    }
    let relation = match exprs[0] {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => exprs[0].to_string(),
        _ => {
            return Err(Error::invalid_with(
                "42601",
                format!("the first argument of {func} must name a stream, table or view: {usage}"),
            ))
        }
    };
    Ok((exprs, relation))
}

/// The subquery a window function stands for. Without an alias the window keeps the
/// relation's name (`relation`, the function's first argument), so `rel.col` still works.
fn derived(sql: &str, alias: Option<ast::TableAlias>, relation: &Expr) -> Result<TableFactor> {
    let subquery = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| Error::internal(format!("window expansion did not parse: {e}")))?;
    let alias = alias.or_else(|| {
        let last = match relation {
            Expr::Identifier(i) => Some(i.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().cloned(),
            _ => None,
        };
        last.map(|name| ast::TableAlias {
            explicit: true,
            name,
            columns: vec![],
            at: None,
        })
    });
    Ok(TableFactor::Derived {
        lateral: false,
        subquery,
        alias,
        sample: None,
    })
}

/// The length of a window's interval literal in microseconds; months are refused.
fn interval_micros(e: &Expr, what: &str) -> Result<i64> {
    let micros = interval_literal_micros(e, &format!("window {what}"))?;
    if micros <= 0 {
        return Err(Error::invalid_with(
            "22023",
            format!("the window {what} must be positive"),
        ));
    }
    Ok(micros)
}

/// The length of an interval literal (`INTERVAL '5 seconds'`, `INTERVAL '5' SECOND`) in
/// microseconds. `what` names it in errors ("window size"); months are refused.
pub(crate) fn interval_literal_micros(e: &Expr, what: &str) -> Result<i64> {
    let bad = || {
        Error::invalid_with(
            "22023",
            format!("the {what} must be an interval literal such as INTERVAL '1 minute', not {e}"),
        )
    };
    let Expr::Interval(iv) = e else {
        return Err(bad());
    };
    let Expr::Value(v) = iv.value.as_ref() else {
        return Err(bad());
    };
    let ast::Value::SingleQuotedString(s) = &v.value else {
        return Err(bad());
    };
    let text = match &iv.leading_field {
        Some(f) => format!("{s} {f}"),
        None => s.clone(),
    };
    let p = super::functions::parse_interval(&text).map_err(|m| Error::data("22007", m))?;
    if p.months != 0 {
        return Err(Error::invalid_with(
            "22023",
            format!("a {what} in months or years is not supported (a month has no fixed length)"),
        ));
    }
    Ok(p.days as i64 * 86_400_000_000 + p.nanoseconds / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_sql(sql: &str) -> Result<String> {
        let mut stmt = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statement())
            .unwrap();
        expand_window_functions(&mut stmt)?;
        Ok(stmt.to_string())
    }

    #[test]
    fn tumble_becomes_a_projection_with_window_bounds() {
        let s = expand_sql(
            "SELECT window_start, count(*) FROM TUMBLE(bids, at, INTERVAL '1' MINUTE) GROUP BY window_start",
        )
        .unwrap();
        assert!(
            s.contains("date_bin(INTERVAL '60000000 microseconds', at) AS window_start"),
            "{s}"
        );
        assert!(s.contains("FROM bids WHERE at IS NOT NULL) AS bids"), "{s}");
    }

    #[test]
    fn hop_is_a_union_of_shifted_windows() {
        let s = expand_sql(
            "SELECT * FROM HOP(bids, at, INTERVAL '1 minute', INTERVAL '3 minutes') AS h",
        )
        .unwrap();
        assert_eq!(s.matches("UNION ALL").count(), 2, "{s}");
        assert!(
            s.contains("- arrow_cast(120000000, 'Duration(Microsecond)') AS window_start"),
            "{s}"
        );
        assert!(s.ends_with("AS h"), "{s}");
    }

    #[test]
    fn bad_windows_are_refused() {
        let e = expand_sql("SELECT * FROM TUMBLE(bids, at, INTERVAL '1 month')").unwrap_err();
        assert!(e.to_string().contains("months"), "{e}");
        let e =
            expand_sql("SELECT * FROM HOP(bids, at, INTERVAL '2 minutes', INTERVAL '3 minutes')")
                .unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let e = expand_sql("SELECT * FROM TUMBLE(bids, at)").unwrap_err();
        assert!(e.to_string().contains("3 arguments"), "{e}");
        // Other table functions are left alone.
        assert!(expand_sql("SELECT * FROM generate_series(1, 3)").is_ok());
    }
}
