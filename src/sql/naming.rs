//! Result column names as Postgres gives them.
//!
//! DataFusion names an unaliased expression after its text (`count(*)`, `Int64(1)`) and
//! rejects two columns with the same name; Postgres names it after the function, column
//! or type (`count`, `?column?`, `int4`) and allows duplicates (`SELECT 1, 1`). Drivers
//! and applications depend on these names (`row.count` in node-postgres).
//!
//! [`postgres_column_names`] aliases the items of a query's outermost SELECT with their
//! Postgres names; where two would collide it uses a unique internal alias instead and
//! returns the renames to apply to the result's schema after planning.

use std::collections::{HashMap, HashSet};

use datafusion::sql::sqlparser::ast::{self, Expr, SelectItem, SetExpr};

use super::normalize_ident;

/// Prefix of internal aliases standing in for duplicate names.
const INTERNAL: &str = "__eddy_column_";

/// Alias the outermost SELECT's items with Postgres names. Returns internal alias →
/// display name, for the columns whose names DataFusion cannot carry (duplicates).
pub fn postgres_column_names(query: &mut ast::Query) -> HashMap<String, String> {
    let mut renames = HashMap::new();
    let Some(select) = outermost_select(&mut query.body) else {
        return renames;
    };
    let mut seen: HashSet<String> = HashSet::new();
    for (i, item) in select.projection.iter_mut().enumerate() {
        let (expr, display, is_plain_column) = match item {
            SelectItem::UnnamedExpr(e) => {
                let plain = matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
                (e.clone(), figure_colname(e).0, plain)
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                (expr.clone(), normalize_ident(alias), false)
            }
            // Names come from the relations; nothing to do.
            _ => continue,
        };
        let alias = if seen.insert(display.clone()) {
            if is_plain_column {
                // DataFusion already names a column reference after the column.
                continue;
            }
            display
        } else {
            let internal = format!("{INTERNAL}{i}");
            renames.insert(internal.clone(), display);
            internal
        };
        *item = SelectItem::ExprWithAlias {
            expr,
            alias: ast::Ident::with_quote('"', alias),
        };
    }
    renames
}

/// The SELECT whose items name a query's columns (the leftmost of a set operation).
fn outermost_select(body: &mut SetExpr) -> Option<&mut ast::Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::SetOperation { left, .. } => outermost_select(left),
        SetExpr::Query(q) => outermost_select(&mut q.body),
        _ => None,
    }
}

/// Postgres' `FigureColname`: a name and its strength (2: from a column or function,
/// 1: from a type, 0: `?column?`).
pub fn figure_colname(e: &Expr) -> (String, u8) {
    let unnamed = || ("?column?".to_string(), 0);
    match e {
        Expr::Identifier(i) => (normalize_ident(i), 2),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .map(|i| (normalize_ident(i), 2))
            .unwrap_or_else(unnamed),
        Expr::Function(f) => {
            let name = f
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize_ident)
                .unwrap_or_default();
            (name, 2)
        }
        Expr::Nested(inner) => figure_colname(inner),
        Expr::Cast {
            expr, data_type, ..
        } => {
            let (n, s) = figure_colname(expr);
            if s == 2 {
                (n, 2)
            } else {
                (pg_type_name(data_type), 1)
            }
        }
        Expr::TypedString(t) => (pg_type_name(&t.data_type), 1),
        Expr::Interval(_) => ("interval".into(), 1),
        Expr::Case { .. } => ("case".into(), 2),
        Expr::Exists { .. } => ("exists".into(), 2),
        Expr::Array(_) => ("array".into(), 2),
        Expr::Extract { .. } => ("extract".into(), 2),
        Expr::Substring { .. } => ("substring".into(), 2),
        Expr::Trim { .. } => ("btrim".into(), 2),
        Expr::Position { .. } => ("position".into(), 2),
        Expr::Overlay { .. } => ("overlay".into(), 2),
        Expr::Ceil { .. } => ("ceil".into(), 2),
        Expr::Floor { .. } => ("floor".into(), 2),
        Expr::AtTimeZone { .. } => ("timezone".into(), 2),
        Expr::Subquery(q) => {
            let mut q = q.clone();
            match outermost_select(&mut q.body).and_then(|s| s.projection.first().cloned()) {
                Some(SelectItem::UnnamedExpr(e)) => figure_colname(&e),
                Some(SelectItem::ExprWithAlias { alias, .. }) => (normalize_ident(&alias), 2),
                _ => unnamed(),
            }
        }
        _ => unnamed(),
    }
}

/// Postgres' internal name of a type, used to name a cast constant (`1::int` → int4).
fn pg_type_name(t: &ast::DataType) -> String {
    use ast::DataType as D;
    match t {
        D::Int(_) | D::Integer(_) | D::Int4(_) => "int4".into(),
        D::BigInt(_) | D::Int8(_) => "int8".into(),
        D::SmallInt(_) | D::Int2(_) => "int2".into(),
        D::Real | D::Float4 => "float4".into(),
        D::Double(_) | D::DoublePrecision | D::Float8 | D::Float(_) => "float8".into(),
        D::Numeric(_) | D::Decimal(_) | D::Dec(_) => "numeric".into(),
        D::Text | D::String(_) => "text".into(),
        D::Varchar(_) | D::CharacterVarying(_) | D::CharVarying(_) => "varchar".into(),
        D::Char(_) | D::Character(_) => "bpchar".into(),
        D::Boolean | D::Bool => "bool".into(),
        D::Date => "date".into(),
        D::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => {
            "timestamptz".into()
        }
        D::Timestamp(_, _) => "timestamp".into(),
        D::Interval { .. } => "interval".into(),
        D::Bytea => "bytea".into(),
        D::JSON => "json".into(),
        D::JSONB => "jsonb".into(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{parse_one, Statement};

    fn names(sql: &str) -> (Vec<String>, HashMap<String, String>) {
        let Statement::Query(stmt) = parse_one(sql).unwrap() else {
            panic!()
        };
        let ast::Statement::Query(mut q) = *stmt else {
            panic!()
        };
        let renames = postgres_column_names(&mut q);
        let select = outermost_select(&mut q.body).unwrap();
        let shown = select
            .projection
            .iter()
            .map(|i| match i {
                SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                SelectItem::UnnamedExpr(e) => format!("={e}"),
                other => other.to_string(),
            })
            .collect();
        (shown, renames)
    }

    #[test]
    fn names_follow_postgres() {
        let (n, r) = names("SELECT 1, count(*), x, t.y, x + 1, 1::int, w::text, CASE WHEN true THEN 1 END, Upper(z), a AS \"B\" FROM t");
        assert_eq!(
            n,
            vec![
                "?column?",
                "count",
                "=x",
                "=t.y",
                "__eddy_column_4",
                "int4",
                "w",
                "case",
                "upper",
                "B"
            ]
        );
        assert_eq!(
            r.get("__eddy_column_4").map(String::as_str),
            Some("?column?")
        );
    }

    #[test]
    fn duplicates_get_internal_aliases_that_map_back() {
        let (n, r) = names("SELECT k, k, 1 AS a, 2 AS a FROM t");
        assert_eq!(n, vec!["=k", "__eddy_column_1", "a", "__eddy_column_3"]);
        assert_eq!(r.len(), 2);
        assert_eq!(r["__eddy_column_1"], "k");
        assert_eq!(r["__eddy_column_3"], "a");
    }
}
