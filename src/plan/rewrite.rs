//! [`PostgresSemantics`]: an analyzer rule that runs after DataFusion's type coercion
//! and gives expressions Postgres' meaning where DataFusion's differs:
//!
//! - integer `+ - *` and unary `-` fail with 22003 on overflow (DataFusion wraps around);
//! - float division by zero fails with 22012 (DataFusion returns Infinity);
//! - casts from float or numeric to an integer round (DataFusion truncates);
//! - text → bytea reads Postgres' `\x..` hex format (DataFusion copies the bytes);
//! - text → interval reads Postgres' own output format (`1 day 02:00:00`).
//!
//! It runs for every plan — pull queries, DML and views — so a view computes exactly
//! what the same query computes ad hoc. Names of rewritten expressions are preserved,
//! so the plan above them is unaffected.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DFResult, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, Cast, Expr, ExprSchemable, LogicalPlan, Operator, ScalarUDF,
};
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::optimizer::utils::NamePreserver;

use super::functions::{CheckedArith, CheckedOp, RoundForCast, TextToBytea, TextToInterval};

#[derive(Debug)]
pub struct PostgresSemantics {
    add: Arc<ScalarUDF>,
    sub: Arc<ScalarUDF>,
    mul: Arc<ScalarUDF>,
    div: Arc<ScalarUDF>,
    round: Arc<ScalarUDF>,
    bytea: Arc<ScalarUDF>,
    interval: Arc<ScalarUDF>,
}

impl PostgresSemantics {
    pub fn new() -> Self {
        Self {
            add: Arc::new(CheckedArith::udf(CheckedOp::Add)),
            sub: Arc::new(CheckedArith::udf(CheckedOp::Sub)),
            mul: Arc::new(CheckedArith::udf(CheckedOp::Mul)),
            div: Arc::new(CheckedArith::udf(CheckedOp::FloatDiv)),
            round: Arc::new(RoundForCast::udf()),
            bytea: Arc::new(TextToBytea::udf()),
            interval: Arc::new(TextToInterval::udf()),
        }
    }

    fn call(f: &Arc<ScalarUDF>, args: Vec<Expr>) -> Expr {
        Expr::ScalarFunction(ScalarFunction::new_udf(f.clone(), args))
    }

    fn rewrite(&self, e: Expr, schema: &DFSchema) -> DFResult<Transformed<Expr>> {
        let is_int = |t: &DataType| {
            matches!(
                t,
                DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
            )
        };
        let is_float = |t: &DataType| matches!(t, DataType::Float32 | DataType::Float64);
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (lt, rt) = match (left.get_type(schema), right.get_type(schema)) {
                    (Ok(l), Ok(r)) => (l, r),
                    _ => {
                        return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                            left,
                            op,
                            right,
                        })))
                    }
                };
                let f = match op {
                    Operator::Plus if is_int(&lt) && lt == rt => Some(&self.add),
                    Operator::Minus if is_int(&lt) && lt == rt => Some(&self.sub),
                    Operator::Multiply if is_int(&lt) && lt == rt => Some(&self.mul),
                    Operator::Divide if is_float(&lt) && lt == rt => Some(&self.div),
                    _ => None,
                };
                match f {
                    Some(f) => Ok(Transformed::yes(Self::call(f, vec![*left, *right]))),
                    None => Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                        left,
                        op,
                        right,
                    }))),
                }
            }
            Expr::Cast(Cast { expr, field }) => {
                let data_type = field.data_type().clone();
                let from = match expr.get_type(schema) {
                    Ok(t) => t,
                    Err(_) => return Ok(Transformed::no(Expr::Cast(Cast { expr, field }))),
                };
                let textual = matches!(
                    from,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                );
                let rounds = is_int(&data_type)
                    && (is_float(&from) || matches!(from, DataType::Decimal128(_, s) if s > 0));
                if rounds {
                    let rounded = Self::call(&self.round, vec![*expr]);
                    return Ok(Transformed::yes(Expr::Cast(Cast {
                        expr: Box::new(rounded),
                        field,
                    })));
                }
                if textual && matches!(data_type, DataType::Binary) {
                    return Ok(Transformed::yes(Self::call(&self.bytea, vec![*expr])));
                }
                if textual && matches!(data_type, DataType::Interval(_)) {
                    let iv = Self::call(&self.interval, vec![*expr]);
                    return Ok(Transformed::yes(Expr::Cast(Cast {
                        expr: Box::new(iv),
                        field,
                    })));
                }
                Ok(Transformed::no(Expr::Cast(Cast { expr, field })))
            }
            // `-x` on an integer fails on the smallest value, as `0 - x` does.
            Expr::Negative(inner) => match inner.get_type(schema) {
                Ok(t) if is_int(&t) => match ScalarValue::new_zero(&t) {
                    Ok(zero) => Ok(Transformed::yes(Self::call(
                        &self.sub,
                        vec![Expr::Literal(zero, None), *inner],
                    ))),
                    Err(_) => Ok(Transformed::no(Expr::Negative(inner))),
                },
                _ => Ok(Transformed::no(Expr::Negative(inner))),
            },
            other => Ok(Transformed::no(other)),
        }
    }
}

impl Default for PostgresSemantics {
    fn default() -> Self {
        Self::new()
    }
}

impl AnalyzerRule for PostgresSemantics {
    fn name(&self) -> &str {
        "eddy_postgres_semantics"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DFResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            // Expressions of a node are evaluated over its inputs' columns.
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            if let LogicalPlan::TableScan(scan) = &plan {
                schema.merge(&scan.projected_schema);
            }
            let preserver = NamePreserver::new(&plan);
            let rewritten = plan.map_expressions(|expr| {
                let saved = preserver.save(&expr);
                expr.transform_up(|e| self.rewrite(e, &schema))
                    .map(|t| t.update_data(|e| saved.restore(e)))
            })?;
            if rewritten.transformed {
                rewritten.map_data(|p| p.recompute_schema())
            } else {
                Ok(rewritten)
            }
        })
        .map(|t| t.data)
    }
}
