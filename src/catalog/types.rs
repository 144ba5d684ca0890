//! SQL column types: how a declared type maps to Arrow, and how a type is shown.

use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{self, ExactNumberInfo, TimezoneInfo};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A column type as declared in CREATE TABLE / CREATE STREAM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    /// `numeric(p, s)`; unconstrained numeric is stored as (38, 10), as DataFusion does.
    Numeric {
        precision: u8,
        scale: i8,
    },
    Text,
    Varchar(Option<u64>),
    Date,
    Timestamp,
    TimestampTz,
    Interval,
    Bytea,
}

/// The time zone eddy stores `timestamptz` values in (they are instants; display is UTC).
pub const UTC: &str = "+00:00";

impl SqlType {
    pub fn from_ast(t: &ast::DataType) -> Result<Self> {
        use ast::DataType as D;
        Ok(match t {
            D::Boolean | D::Bool => SqlType::Boolean,
            D::SmallInt(_) | D::Int2(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Int,
            D::BigInt(_) | D::Int8(_) => SqlType::BigInt,
            D::Real | D::Float4 => SqlType::Real,
            D::Double(_) | D::DoublePrecision | D::Float8 => SqlType::Double,
            D::Float(info) => match info {
                ExactNumberInfo::Precision(p) | ExactNumberInfo::PrecisionAndScale(p, _)
                    if *p <= 24 =>
                {
                    SqlType::Real
                }
                _ => SqlType::Double,
            },
            D::Numeric(info) | D::Decimal(info) | D::Dec(info) => match info {
                ExactNumberInfo::None => SqlType::Numeric {
                    precision: 38,
                    scale: 10,
                },
                ExactNumberInfo::Precision(p) => SqlType::Numeric {
                    precision: check_precision(*p)?,
                    scale: 0,
                },
                ExactNumberInfo::PrecisionAndScale(p, s) => {
                    let precision = check_precision(*p)?;
                    if *s < 0 || *s > precision as i64 {
                        return Err(Error::invalid_with(
                            "22023",
                            format!(
                                "NUMERIC scale {s} must be between 0 and precision {precision}"
                            ),
                        ));
                    }
                    SqlType::Numeric {
                        precision,
                        scale: *s as i8,
                    }
                }
            },
            D::Text | D::String(_) => SqlType::Text,
            D::Varchar(len) | D::CharacterVarying(len) | D::CharVarying(len) | D::Nvarchar(len) => {
                SqlType::Varchar(char_len(len))
            }
            D::Date => SqlType::Date,
            D::Timestamp(_, tz) => match tz {
                TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => SqlType::TimestampTz,
                _ => SqlType::Timestamp,
            },
            D::TimestampNtz(_) | D::Datetime(_) => SqlType::Timestamp,
            D::Interval { .. } => SqlType::Interval,
            D::Bytea => SqlType::Bytea,
            D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => {
                SqlType::TimestampTz
            }
            other => return Err(Error::not_supported(format!("type {other}"))),
        })
    }

    pub fn to_arrow(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Real => DataType::Float32,
            SqlType::Double => DataType::Float64,
            SqlType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            SqlType::Text | SqlType::Varchar(_) => DataType::Utf8,
            SqlType::Date => DataType::Date32,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            SqlType::Bytea => DataType::Binary,
        }
    }

    /// The Postgres name of the type, as `\d` and DESCRIBE show it.
    pub fn display_name(&self) -> String {
        match self {
            SqlType::Boolean => "boolean".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Int => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Real => "real".into(),
            SqlType::Double => "double precision".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Text => "text".into(),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::TimestampTz => "timestamp with time zone".into(),
            SqlType::Interval => "interval".into(),
            SqlType::Bytea => "bytea".into(),
        }
    }
}

fn check_precision(p: u64) -> Result<u8> {
    if (1..=38).contains(&p) {
        Ok(p as u8)
    } else {
        Err(Error::invalid_with(
            "22023",
            format!("NUMERIC precision {p} must be between 1 and 38"),
        ))
    }
}

fn char_len(len: &Option<ast::CharacterLength>) -> Option<u64> {
    match len {
        Some(ast::CharacterLength::IntegerLength { length, .. }) => Some(*length),
        _ => None,
    }
}

/// The Postgres name for an Arrow type (for view columns, which have no declared type).
pub fn arrow_display_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Null => "text".into(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_to_postgres_names() {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        let cases = [
            ("int", "integer"),
            ("BIGINT", "bigint"),
            ("numeric(10,2)", "numeric(10,2)"),
            ("varchar(5)", "character varying(5)"),
            ("timestamptz", "timestamp with time zone"),
            ("timestamp with time zone", "timestamp with time zone"),
            ("double precision", "double precision"),
        ];
        for (sql, want) in cases {
            let t = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(sql)
                .unwrap()
                .parse_data_type()
                .unwrap();
            assert_eq!(SqlType::from_ast(&t).unwrap().display_name(), want, "{sql}");
        }
    }
}
