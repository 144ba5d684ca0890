//! Turning DataFusion and Arrow errors into eddy's [`Error`] — by who is at fault, so
//! the pgwire layer can give each the right SQLSTATE.

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};

use crate::error::Error;

pub fn from_datafusion(e: DataFusionError) -> Error {
    match e {
        DataFusionError::External(inner) => match inner.downcast::<Error>() {
            Ok(err) => *err,
            Err(other) => match other.downcast::<ArrowError>() {
                Ok(a) => from_arrow(*a),
                Err(other) => Error::Execution(other.to_string()),
            },
        },
        DataFusionError::ArrowError(a, _) => from_arrow(*a),
        DataFusionError::SchemaError(s, _) => match *s {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => {
                // `x.id` where no relation is called x: Postgres says the FROM entry is
                // missing (42P01), not that the column is.
                if let Some(q) = &field.relation {
                    let known = valid_fields
                        .iter()
                        .any(|f| f.relation.as_ref().is_some_and(|r| r.table() == q.table()));
                    if !known {
                        return Error::invalid_with(
                            "42P01",
                            format!("missing FROM-clause entry for table \"{}\"", q.table()),
                        );
                    }
                }
                Error::UndefinedColumn {
                    message: format!("column \"{}\" does not exist", field.name),
                    position: None,
                }
            }
            SchemaError::AmbiguousReference { field } => Error::invalid_with(
                "42702",
                format!("column reference \"{}\" is ambiguous", field.name),
            ),
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => {
                Error::invalid_with("42701", s.to_string())
            }
        },
        DataFusionError::NotImplemented(m) => Error::NotSupported(m),
        DataFusionError::SQL(p, _) => crate::sql::parse_error(*p),
        DataFusionError::Plan(m) => plan_error(m),
        DataFusionError::Context(ctx, inner) => {
            let inner = from_datafusion(*inner);
            match inner {
                Error::Execution(m) => Error::Execution(format!("{ctx}: {m}")),
                other => other,
            }
        }
        DataFusionError::Diagnostic(_, inner) => from_datafusion(*inner),
        DataFusionError::Collection(mut v) if !v.is_empty() => from_datafusion(v.remove(0)),
        DataFusionError::Execution(m) => execution_error(m),
        DataFusionError::ResourcesExhausted(m) => Error::invalid_with("53000", m),
        DataFusionError::Internal(m) => Error::Internal(m),
        other => Error::Execution(other.to_string()),
    }
}

fn plan_error(m: String) -> Error {
    let lower = m.to_lowercase();
    if lower.contains("not allowed in the where")
        || lower.contains("aggregate functions are not allowed")
    {
        return Error::invalid_with("42803", m);
    }
    if lower.contains("same schema length as the table")
        || lower.contains("inserting query must have")
    {
        return Error::invalid_with("42601", "INSERT has more expressions than target columns");
    }
    if lower.contains("cannot be cast")
        || lower.contains("cannot coerce")
        || lower.contains("no function matches")
        || lower.contains("does not support") && lower.contains("type")
        || lower.contains("failed to coerce")
        || lower.contains("type mismatch")
    {
        // 42804 datatype_mismatch / 42883 undefined_function
        if lower.contains("function") {
            return Error::invalid_with("42883", m);
        }
        return Error::invalid_with("42804", m);
    }
    if lower.contains("invalid function")
        || (lower.contains("function") && lower.contains("not found"))
    {
        return Error::invalid_with("42883", m);
    }
    if lower.contains("must appear in the group by")
        || lower.contains("projection references non-aggregate")
    {
        return Error::invalid_with("42803", m);
    }
    Error::invalid(m)
}

fn execution_error(m: String) -> Error {
    let lower = m.to_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        return Error::data("22012", "division by zero");
    }
    if lower.contains("overflow") {
        return Error::data("22003", m);
    }
    Error::Execution(m)
}

pub fn from_arrow(e: ArrowError) -> Error {
    match e {
        ArrowError::DivideByZero => Error::data("22012", "division by zero"),
        ArrowError::ArithmeticOverflow(m) => Error::data("22003", m),
        ArrowError::CastError(m) => {
            let lower = m.to_lowercase();
            if lower.contains("overflow")
                || lower.contains("too large")
                || lower.contains("out of range")
                || lower.contains("can't cast value")
                || lower.contains("is out of range")
            {
                Error::data("22003", format!("value out of range: {m}"))
            } else {
                Error::data("22P02", format!("invalid input syntax: {m}"))
            }
        }
        ArrowError::ParseError(m) => Error::data("22P02", format!("invalid input syntax: {m}")),
        ArrowError::InvalidArgumentError(m) => {
            let lower = m.to_lowercase();
            if lower.contains("too large to store") {
                Error::data("22003", "numeric field overflow")
            } else if lower.contains("overflow") || lower.contains("out of range") {
                Error::data("22003", format!("value out of range: {m}"))
            } else if lower.contains("non-nullable") {
                Error::Constraint {
                    code: "23502",
                    message: format!("null value violates not-null constraint: {m}"),
                }
            } else {
                Error::Execution(m)
            }
        }
        ArrowError::ExternalError(inner) => match inner.downcast::<Error>() {
            Ok(err) => *err,
            Err(other) => Error::Execution(other.to_string()),
        },
        other => Error::Execution(other.to_string()),
    }
}
