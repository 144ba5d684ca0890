//! Arrow values ↔ Postgres wire values, in text and binary formats.
//!
//! Text output follows Postgres' own formatting (`t`/`f`, ISO timestamps, `1 day
//! 02:00:00` intervals, shortest-exact floats with Postgres' exponent rules), so that
//! psql output and sqllogictest expectations look like Postgres'.

use std::error::Error as StdError;
use std::fmt::Write;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, DurationMicrosecondType,
    DurationMillisecondType, DurationNanosecondType, DurationSecondType, Float16Type, Float32Type,
    Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, IntervalDayTimeType,
    IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions as ArrowFormat};
use datafusion::common::ScalarValue;
use pgwire::api::Type;
use pgwire::types::format::FormatOptions;
use pgwire::types::ToSqlText;
use postgres_types::{IsNull, ToSql};

/// Microseconds between 1970-01-01 and 2000-01-01 (Postgres' epoch).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_DAYS: i32 = 10_957;

/// The Postgres type for an Arrow type.
pub fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        _ => Type::TEXT,
    }
}

/// The Arrow type a parameter of Postgres type `t` is read as (`None`: leave it text
/// and let the planner coerce it).
pub fn arrow_type_for_param(t: &Type) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::NUMERIC => DataType::Decimal128(38, 10),
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        Type::BYTEA => DataType::Binary,
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        _ => return None,
    })
}

/// One value ready for the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    Null,
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// An exact decimal: unscaled value and scale.
    Numeric(i128, i8),
    Text(String),
    Bytea(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01.
    Timestamp(i64),
    TimestampTz(i64),
    /// Microseconds since midnight.
    Time(i64),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
}

/// Reads values of one column.
pub fn value_at(col: &ArrayRef, row: usize) -> PgValue {
    if col.is_null(row) {
        return PgValue::Null;
    }
    let c = col.as_ref();
    match col.data_type() {
        DataType::Null => PgValue::Null,
        DataType::Boolean => PgValue::Bool(c.as_boolean().value(row)),
        DataType::Int8 => PgValue::Int2(c.as_primitive::<Int8Type>().value(row) as i16),
        DataType::Int16 => PgValue::Int2(c.as_primitive::<Int16Type>().value(row)),
        DataType::UInt8 => PgValue::Int2(c.as_primitive::<UInt8Type>().value(row) as i16),
        DataType::Int32 => PgValue::Int4(c.as_primitive::<Int32Type>().value(row)),
        DataType::UInt16 => PgValue::Int4(c.as_primitive::<UInt16Type>().value(row) as i32),
        DataType::Int64 => PgValue::Int8(c.as_primitive::<Int64Type>().value(row)),
        DataType::UInt32 => PgValue::Int8(c.as_primitive::<UInt32Type>().value(row) as i64),
        DataType::UInt64 => PgValue::Numeric(c.as_primitive::<UInt64Type>().value(row) as i128, 0),
        DataType::Float16 => PgValue::Float4(c.as_primitive::<Float16Type>().value(row).to_f32()),
        DataType::Float32 => PgValue::Float4(c.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => PgValue::Float8(c.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, s) => {
            PgValue::Numeric(c.as_primitive::<Decimal128Type>().value(row), *s)
        }
        DataType::Utf8 => PgValue::Text(c.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => PgValue::Text(c.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => PgValue::Text(c.as_string_view().value(row).to_string()),
        DataType::Binary => PgValue::Bytea(c.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => PgValue::Bytea(c.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => PgValue::Bytea(c.as_binary_view().value(row).to_vec()),
        DataType::Date32 => PgValue::Date(c.as_primitive::<Date32Type>().value(row)),
        DataType::Date64 => {
            PgValue::Date((c.as_primitive::<Date64Type>().value(row) / 86_400_000) as i32)
        }
        DataType::Timestamp(unit, tz) => {
            let micros = match unit {
                TimeUnit::Second => c
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => c
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => c.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => c
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1000),
            };
            if tz.is_some() {
                PgValue::TimestampTz(micros)
            } else {
                PgValue::Timestamp(micros)
            }
        }
        DataType::Time32(TimeUnit::Second) => {
            PgValue::Time(c.as_primitive::<Time32SecondType>().value(row) as i64 * 1_000_000)
        }
        DataType::Time32(_) => {
            PgValue::Time(c.as_primitive::<Time32MillisecondType>().value(row) as i64 * 1000)
        }
        DataType::Time64(TimeUnit::Nanosecond) => {
            PgValue::Time(c.as_primitive::<Time64NanosecondType>().value(row) / 1000)
        }
        DataType::Time64(_) => PgValue::Time(c.as_primitive::<Time64MicrosecondType>().value(row)),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = c.as_primitive::<IntervalMonthDayNanoType>().value(row);
            PgValue::Interval {
                months: v.months,
                days: v.days,
                micros: v.nanoseconds / 1000,
            }
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = c.as_primitive::<IntervalDayTimeType>().value(row);
            PgValue::Interval {
                months: 0,
                days: v.days,
                micros: v.milliseconds as i64 * 1000,
            }
        }
        DataType::Interval(IntervalUnit::YearMonth) => PgValue::Interval {
            months: c.as_primitive::<IntervalYearMonthType>().value(row),
            days: 0,
            micros: 0,
        },
        DataType::Duration(unit) => {
            let micros = match unit {
                TimeUnit::Second => c.as_primitive::<DurationSecondType>().value(row) * 1_000_000,
                TimeUnit::Millisecond => {
                    c.as_primitive::<DurationMillisecondType>().value(row) * 1000
                }
                TimeUnit::Microsecond => c.as_primitive::<DurationMicrosecondType>().value(row),
                TimeUnit::Nanosecond => {
                    c.as_primitive::<DurationNanosecondType>().value(row) / 1000
                }
            };
            let day = 86_400_000_000i64;
            PgValue::Interval {
                months: 0,
                days: (micros / day) as i32,
                micros: micros % day,
            }
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            list_text(c, row)
        }
        _ => {
            // Lists, structs, maps: Arrow's display form, as text.
            let opts = ArrowFormat::default();
            match ArrayFormatter::try_new(c, &opts) {
                Ok(f) => PgValue::Text(f.value(row).to_string()),
                Err(_) => PgValue::Null,
            }
        }
    }
}

/// A list as Postgres prints an array: `{1,2,NULL}`, strings quoted when needed.
fn list_text(c: &dyn Array, row: usize) -> PgValue {
    let items: ArrayRef = match c.data_type() {
        DataType::List(_) => c.as_list::<i32>().value(row),
        DataType::LargeList(_) => c.as_list::<i64>().value(row),
        DataType::FixedSizeList(_, _) => c.as_fixed_size_list().value(row),
        _ => return PgValue::Null,
    };
    let mut out = String::from("{");
    for i in 0..items.len() {
        if i > 0 {
            out.push(',');
        }
        match value_at(&items, i).to_text() {
            None => out.push_str("NULL"),
            Some(s) => {
                let plain = !s.is_empty()
                    && !s.eq_ignore_ascii_case("null")
                    && !s
                        .chars()
                        .any(|ch| matches!(ch, ',' | '{' | '}' | '"' | '\\') || ch.is_whitespace());
                if plain
                    || matches!(
                        items.data_type(),
                        DataType::List(_) | DataType::LargeList(_)
                    )
                {
                    out.push_str(&s);
                } else {
                    out.push('"');
                    out.push_str(&s.replace('\\', "\\\\").replace('"', "\\\""));
                    out.push('"');
                }
            }
        }
    }
    out.push('}');
    PgValue::Text(out)
}

impl PgValue {
    /// The Postgres text form of the value (`None` for NULL).
    pub fn to_text(&self) -> Option<String> {
        Some(match self {
            PgValue::Null => return None,
            PgValue::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            PgValue::Int2(v) => v.to_string(),
            PgValue::Int4(v) => v.to_string(),
            PgValue::Int8(v) => v.to_string(),
            PgValue::Float4(v) => format_float(*v as f64, 6, Some(*v)),
            PgValue::Float8(v) => format_float(*v, 15, None),
            PgValue::Numeric(v, s) => format_numeric(*v, *s),
            PgValue::Text(s) => s.clone(),
            PgValue::Bytea(b) => {
                let mut s = String::with_capacity(2 + 2 * b.len());
                s.push_str("\\x");
                for byte in b {
                    let _ = write!(s, "{byte:02x}");
                }
                s
            }
            PgValue::Date(d) => format_date(*d),
            PgValue::Timestamp(us) => format_timestamp(*us),
            PgValue::TimestampTz(us) => format!("{}+00", format_timestamp(*us)),
            PgValue::Time(us) => format_time(*us),
            PgValue::Interval {
                months,
                days,
                micros,
            } => format_interval(*months, *days, *micros),
        })
    }

    fn to_binary(&self, out: &mut BytesMut) -> IsNull {
        match self {
            PgValue::Null => return IsNull::Yes,
            PgValue::Bool(b) => out.put_u8(*b as u8),
            PgValue::Int2(v) => out.put_i16(*v),
            PgValue::Int4(v) => out.put_i32(*v),
            PgValue::Int8(v) => out.put_i64(*v),
            PgValue::Float4(v) => out.put_f32(*v),
            PgValue::Float8(v) => out.put_f64(*v),
            PgValue::Numeric(v, s) => numeric_binary(*v, *s, out),
            PgValue::Text(s) => out.put_slice(s.as_bytes()),
            PgValue::Bytea(b) => out.put_slice(b),
            PgValue::Date(d) => out.put_i32(d - PG_EPOCH_DAYS),
            PgValue::Timestamp(us) | PgValue::TimestampTz(us) => out.put_i64(us - PG_EPOCH_MICROS),
            PgValue::Time(us) => out.put_i64(*us),
            PgValue::Interval {
                months,
                days,
                micros,
            } => {
                out.put_i64(*micros);
                out.put_i32(*days);
                out.put_i32(*months);
            }
        }
        IsNull::No
    }
}

impl ToSql for PgValue {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        Ok(self.to_binary(out))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for PgValue {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.to_text() {
            Some(s) => {
                out.put_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }
}

/// Postgres' float output (extra_float_digits ≥ 1): the shortest exact digits, in
/// plain notation when the decimal exponent is in [-4, precision), else `1.5e+20`.
fn format_float(v: f64, precision: i32, as_f32: Option<f32>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Shortest round-trip digits of the value at its own width.
    let sci = match as_f32 {
        Some(f) => format!("{f:e}"),
        None => format!("{v:e}"),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if exp < -4 || exp >= precision {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let n = digits.len() as i32;
    if exp >= n - 1 {
        format!("{sign}{digits}{}", "0".repeat((exp - (n - 1)) as usize))
    } else if exp >= 0 {
        let (int, frac) = digits.split_at((exp + 1) as usize);
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    }
}

fn format_numeric(v: i128, scale: i8) -> String {
    let negative = v < 0;
    let abs = v.unsigned_abs();
    let mut s = if scale <= 0 {
        let mut s = abs.to_string();
        if abs != 0 {
            s.push_str(&"0".repeat((-scale) as usize));
        }
        s
    } else {
        let scale = scale as usize;
        let digits = format!("{abs:0>width$}", width = scale + 1);
        let (int, frac) = digits.split_at(digits.len() - scale);
        format!("{int}.{frac}")
    };
    if scale == 10 {
        // Unconstrained NUMERIC is stored at scale 10: show the digits that matter.
        if let Some(dot) = s.find('.') {
            let trimmed = s.trim_end_matches('0').trim_end_matches('.').len().max(dot);
            s.truncate(trimmed);
        }
    }
    if negative && abs != 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// Postgres' binary NUMERIC: base-10000 digit groups, weight, sign, display scale.
fn numeric_binary(v: i128, scale: i8, out: &mut BytesMut) {
    let dscale = scale.max(0) as u32;
    let negative = v < 0;
    let mut abs = v.unsigned_abs();
    if scale < 0 {
        abs *= 10u128.pow((-scale) as u32);
    }
    let pow = 10u128.pow(dscale);
    let int = abs / pow;
    let frac = abs % pow;
    // Fraction padded to whole groups of four digits.
    let pad = (4 - dscale % 4) % 4;
    let frac_groups = (dscale + pad) / 4;
    let mut frac = frac * 10u128.pow(pad);
    let mut fgroups = vec![0i16; frac_groups as usize];
    for g in (0..frac_groups as usize).rev() {
        fgroups[g] = (frac % 10000) as i16;
        frac /= 10000;
    }
    let mut igroups = vec![];
    let mut i = int;
    while i > 0 {
        igroups.push((i % 10000) as i16);
        i /= 10000;
    }
    igroups.reverse();
    let mut weight = igroups.len() as i16 - 1;
    let mut digits: Vec<i16> = igroups.into_iter().chain(fgroups).collect();
    // Strip leading zero groups (adjusting the weight) and trailing ones.
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    out.put_i16(digits.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative && !digits.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(dscale as i16);
    for d in digits {
        out.put_i16(d);
    }
}

fn format_date(days: i32) -> String {
    match NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::Duration::days(days as i64)))
    {
        Some(d) if d.year() > 0 => d.format("%Y-%m-%d").to_string(),
        Some(d) => format!("{:04}-{} BC", 1 - d.year(), d.format("%m-%d")),
        None => days.to_string(),
    }
}

fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    match DateTime::from_timestamp(secs, 0) {
        Some(dt) => {
            let dt = dt.naive_utc();
            let mut s = if dt.year() > 0 {
                dt.format("%Y-%m-%d %H:%M:%S").to_string()
            } else {
                format!("{:04}-{}", 1 - dt.year(), dt.format("%m-%d %H:%M:%S"))
            };
            if frac != 0 {
                let f = format!("{frac:06}");
                s.push('.');
                s.push_str(f.trim_end_matches('0'));
            }
            if dt.year() <= 0 {
                s.push_str(" BC");
            }
            s
        }
        None => micros.to_string(),
    }
}

fn format_time(micros: i64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let mut s = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if frac != 0 {
        let f = format!("{frac:06}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// Postgres' `intervalstyle = postgres` output: `1 year 2 mons 3 days 04:05:06.7`.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut parts: Vec<String> = vec![];
    let years = months / 12;
    let mons = months % 12;
    let plural =
        |n: i64, one: &str, many: &str| format!("{n} {}", if n.abs() == 1 { one } else { many });
    if years != 0 {
        parts.push(plural(years as i64, "year", "years"));
    }
    if mons != 0 {
        parts.push(plural(mons as i64, "mon", "mons"));
    }
    if days != 0 {
        parts.push(plural(days as i64, "day", "days"));
    }
    if micros != 0 || parts.is_empty() {
        let neg = micros < 0;
        let t = micros.unsigned_abs();
        let secs = t / 1_000_000;
        let frac = t % 1_000_000;
        let mut s = format!(
            "{}{:02}:{:02}:{:02}",
            if neg { "-" } else { "" },
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        );
        if frac != 0 {
            let f = format!("{frac:06}");
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        parts.push(s);
    }
    parts.join(" ")
}

/// Decode a parameter sent by a client into a scalar. `ty` is the parameter's declared
/// type (from the client or inferred by eddy); text-format values of unknown type stay
/// text and are coerced by the planner.
pub fn decode_param(bytes: Option<&[u8]>, ty: &Type, binary: bool) -> Result<ScalarValue, String> {
    let target = arrow_type_for_param(ty);
    let Some(bytes) = bytes else {
        return Ok(match target {
            Some(t) => ScalarValue::try_from(&t).unwrap_or(ScalarValue::Null),
            None => ScalarValue::Utf8(None),
        });
    };
    if !binary {
        let s =
            std::str::from_utf8(bytes).map_err(|_| "parameter is not valid UTF-8".to_string())?;
        return match (target, ty) {
            (_, t) if *t == Type::INTERVAL => crate::plan::functions::parse_interval(s)
                .map(|v| ScalarValue::IntervalMonthDayNano(Some(v))),
            (Some(DataType::Binary), _) => {
                crate::plan::functions::parse_bytea(s).map(|b| ScalarValue::Binary(Some(b)))
            }
            (Some(DataType::Boolean), _) => parse_bool(s).map(|b| ScalarValue::Boolean(Some(b))),
            // A value that is not valid for its type is an error, never a NULL.
            (Some(t), _) => crate::plan::functions::strict_text_cast(s, &t)
                .map_err(|e| format!("invalid input for type {}: \"{s}\" ({e})", ty.name())),
            (None, _) => Ok(ScalarValue::Utf8(Some(s.to_string()))),
        };
    }
    let need = |n: usize| -> Result<(), String> {
        if bytes.len() == n {
            Ok(())
        } else {
            Err(format!(
                "binary parameter of type {} has {} bytes, expected {n}",
                ty.name(),
                bytes.len()
            ))
        }
    };
    Ok(match *ty {
        Type::BOOL => {
            need(1)?;
            ScalarValue::Boolean(Some(bytes[0] != 0))
        }
        Type::INT2 => {
            need(2)?;
            ScalarValue::Int16(Some(i16::from_be_bytes([bytes[0], bytes[1]])))
        }
        Type::INT4 => {
            need(4)?;
            ScalarValue::Int32(Some(i32::from_be_bytes(
                bytes.try_into().map_err(|_| "bad int4")?,
            )))
        }
        Type::INT8 => {
            need(8)?;
            ScalarValue::Int64(Some(i64::from_be_bytes(
                bytes.try_into().map_err(|_| "bad int8")?,
            )))
        }
        Type::FLOAT4 => {
            need(4)?;
            ScalarValue::Float32(Some(f32::from_be_bytes(
                bytes.try_into().map_err(|_| "bad float4")?,
            )))
        }
        Type::FLOAT8 => {
            need(8)?;
            ScalarValue::Float64(Some(f64::from_be_bytes(
                bytes.try_into().map_err(|_| "bad float8")?,
            )))
        }
        Type::DATE => {
            need(4)?;
            let d = i32::from_be_bytes(bytes.try_into().map_err(|_| "bad date")?);
            ScalarValue::Date32(Some(d + PG_EPOCH_DAYS))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            need(8)?;
            let us = i64::from_be_bytes(bytes.try_into().map_err(|_| "bad timestamp")?)
                + PG_EPOCH_MICROS;
            let tz = (*ty == Type::TIMESTAMPTZ).then(|| "+00:00".into());
            ScalarValue::TimestampMicrosecond(Some(us), tz)
        }
        Type::NUMERIC => numeric_from_binary(bytes)?,
        Type::INTERVAL => {
            need(16)?;
            let micros = i64::from_be_bytes(bytes[0..8].try_into().map_err(|_| "bad interval")?);
            let days = i32::from_be_bytes(bytes[8..12].try_into().map_err(|_| "bad interval")?);
            let months = i32::from_be_bytes(bytes[12..16].try_into().map_err(|_| "bad interval")?);
            ScalarValue::IntervalMonthDayNano(Some(
                datafusion::arrow::datatypes::IntervalMonthDayNano::new(
                    months,
                    days,
                    micros.saturating_mul(1000),
                ),
            ))
        }
        Type::BYTEA => ScalarValue::Binary(Some(bytes.to_vec())),
        _ => {
            ScalarValue::Utf8(Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                format!("cannot read binary parameter of type {}", ty.name())
            })?))
        }
    })
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("invalid input syntax for type boolean: \"{s}\"")),
    }
}

fn numeric_from_binary(b: &[u8]) -> Result<ScalarValue, String> {
    if b.len() < 8 {
        return Err("short binary numeric".into());
    }
    let rd = |i: usize| i16::from_be_bytes([b[i], b[i + 1]]);
    let ndigits = rd(0) as usize;
    let weight = rd(2) as i32;
    let sign = u16::from_be_bytes([b[4], b[5]]);
    let dscale = rd(6) as i32;
    if sign == 0xC000 {
        return Err("NaN is not supported for numeric parameters".into());
    }
    if b.len() < 8 + 2 * ndigits || dscale > 38 {
        return Err("malformed binary numeric".into());
    }
    // value = Σ digit_i × 10000^(weight - i); scaled by 10^dscale.
    let mut v: i128 = 0;
    for i in 0..ndigits {
        let d = rd(8 + 2 * i) as i128;
        let exp10 = 4 * (weight - i as i32) + dscale;
        let term = if exp10 >= 0 {
            d.checked_mul(
                10i128
                    .checked_pow(exp10 as u32)
                    .ok_or("numeric out of range")?,
            )
            .ok_or("numeric out of range")?
        } else {
            d / 10i128.pow((-exp10) as u32)
        };
        v = v.checked_add(term).ok_or("numeric out of range")?;
    }
    if sign == 0x4000 {
        v = -v;
    }
    Ok(ScalarValue::Decimal128(Some(v), 38, dscale as i8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(format_float(1e20, 15, None), "1e+20");
        assert_eq!(format_float(123456789012345.0, 15, None), "123456789012345");
        assert_eq!(
            format_float(1234567890123456.0, 15, None),
            "1.234567890123456e+15"
        );
        assert_eq!(format_float(0.1, 15, None), "0.1");
        assert_eq!(format_float(0.00001, 15, None), "1e-05");
        assert_eq!(format_float(0.0001, 15, None), "0.0001");
        assert_eq!(format_float(-2.5, 15, None), "-2.5");
        assert_eq!(format_float(1.0 / 3.0, 15, None), "0.3333333333333333");
        assert_eq!(
            PgValue::Float4(1234567.0).to_text().unwrap(),
            "1.234567e+06"
        );
        assert_eq!(PgValue::Float4(0.1).to_text().unwrap(), "0.1");
    }

    #[test]
    fn numerics_dates_and_intervals_print_like_postgres() {
        assert_eq!(format_numeric(150, 2), "1.50");
        assert_eq!(format_numeric(-5, 2), "-0.05");
        assert_eq!(format_numeric(15_000_000_000, 10), "1.5");
        assert_eq!(format_numeric(0, 10), "0");
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_timestamp(1_500_000), "1970-01-01 00:00:01.5");
        assert_eq!(
            format_interval(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_700_000),
            "1 year 2 mons 3 days 04:05:06.7"
        );
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, 1, 0), "1 day");
    }

    #[test]
    fn numeric_binary_roundtrips() {
        for (v, s) in [
            (12345i128, 2i8),
            (-1, 0),
            (0, 3),
            (100000000, 0),
            (1, 10),
            (-987654321012, 5),
        ] {
            let mut out = BytesMut::new();
            numeric_binary(v, s, &mut out);
            let back = numeric_from_binary(&out).unwrap();
            assert_eq!(
                back,
                ScalarValue::Decimal128(Some(v), 38, s),
                "{v} scale {s}"
            );
        }
    }
}
