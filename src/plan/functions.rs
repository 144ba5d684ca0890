//! Functions eddy adds to DataFusion: Postgres' semantics where DataFusion's differ
//! (checked integer arithmetic, rounding casts, bytea and interval text input), and the
//! session functions clients call (`version()`, `current_database()`, `pg_typeof()`).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Decimal128Array, Float32Array, Float64Array,
    IntervalMonthDayNanoBuilder, StringArray,
};
use datafusion::arrow::compute::kernels::numeric;
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, IntervalMonthDayNano};
use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, Result as DFResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::error::Error;

fn data_err(code: &'static str, msg: impl Into<String>) -> DataFusionError {
    DataFusionError::External(Box::new(Error::data(code, msg)))
}

/// Run `f` over the arguments as arrays; return a scalar if every argument was one.
fn map_arrays(
    args: &[ColumnarValue],
    f: impl Fn(&[ArrayRef]) -> DFResult<ArrayRef>,
) -> DFResult<ColumnarValue> {
    let all_scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let out = f(&arrays)?;
    if all_scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// The arithmetic operators eddy checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckedOp {
    Add,
    Sub,
    Mul,
    /// Floating-point division that fails on a zero divisor, as in Postgres.
    FloatDiv,
}

/// `a + b`, `a - b`, `a * b` on integers that fail with 22003 on overflow instead of
/// wrapping; `a / b` on floats that fails with 22012 on division by zero.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedArith {
    op: CheckedOp,
    signature: Signature,
}

impl CheckedArith {
    pub fn udf(op: CheckedOp) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            op,
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for CheckedArith {
    fn name(&self) -> &str {
        match self.op {
            CheckedOp::Add => "eddy_checked_add",
            CheckedOp::Sub => "eddy_checked_sub",
            CheckedOp::Mul => "eddy_checked_mul",
            CheckedOp::FloatDiv => "eddy_checked_div",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let op = self.op;
        map_arrays(&args.args, |a| {
            let (l, r) = (&a[0], &a[1]);
            let res = match op {
                CheckedOp::Add => numeric::add(l, r),
                CheckedOp::Sub => numeric::sub(l, r),
                CheckedOp::Mul => numeric::mul(l, r),
                CheckedOp::FloatDiv => {
                    let zero = match r.data_type() {
                        DataType::Float64 => r
                            .as_primitive::<Float64Type>()
                            .iter()
                            .any(|v| v == Some(0.0)),
                        DataType::Float32 => r
                            .as_primitive::<Float32Type>()
                            .iter()
                            .any(|v| v == Some(0.0)),
                        _ => false,
                    };
                    if zero {
                        return Err(data_err("22012", "division by zero"));
                    }
                    numeric::div(l, r)
                }
            };
            res.map_err(|e| match e {
                ArrowError::ArithmeticOverflow(_) => {
                    let what = match l.data_type() {
                        DataType::Int16 => "smallint",
                        DataType::Int32 => "integer",
                        _ => "bigint",
                    };
                    data_err("22003", format!("{what} out of range"))
                }
                other => DataFusionError::ArrowError(Box::new(other), None),
            })
        })
    }
}

/// Round a float (half to even, like Postgres' rint) or a decimal (half away from
/// zero) to a whole number, keeping its type: the first half of a cast to an integer.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RoundForCast {
    signature: Signature,
}

impl RoundForCast {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for RoundForCast {
    fn name(&self) -> &str {
        "eddy_round_for_cast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_arrays(&args.args, |a| {
            let x = &a[0];
            Ok(match x.data_type() {
                DataType::Float64 => Arc::new(
                    x.as_primitive::<Float64Type>()
                        .iter()
                        .map(|v| v.map(f64::round_ties_even))
                        .collect::<Float64Array>(),
                ),
                DataType::Float32 => Arc::new(
                    x.as_primitive::<Float32Type>()
                        .iter()
                        .map(|v| v.map(f32::round_ties_even))
                        .collect::<Float32Array>(),
                ),
                DataType::Decimal128(p, s) if *s > 0 => {
                    let d = x.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
                    let unit = 10i128.pow(*s as u32);
                    let rounded: Decimal128Array = d
                        .iter()
                        .map(|v| {
                            v.map(|v| {
                                let q = v / unit;
                                let r = v % unit;
                                let q = if 2 * r.abs() >= unit {
                                    q + v.signum()
                                } else {
                                    q
                                };
                                q * unit
                            })
                        })
                        .collect();
                    Arc::new(rounded.with_precision_and_scale(*p, *s)?)
                }
                _ => x.clone(),
            })
        })
    }
}

/// Text to bytea, reading Postgres' hex format (`\x0a1b`) and, otherwise, the escape
/// format (`\\` and `\nnn` octal escapes).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextToBytea {
    signature: Signature,
}

impl TextToBytea {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for TextToBytea {
    fn name(&self) -> &str {
        "eddy_text_to_bytea"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_arrays(&args.args, |a| {
            let s = datafusion::arrow::compute::cast(&a[0], &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            let mut b = BinaryBuilder::with_capacity(s.len(), s.value_data().len());
            for v in s.iter() {
                match v {
                    Some(v) => b.append_value(parse_bytea(v).map_err(|m| data_err("22P02", m))?),
                    None => b.append_null(),
                }
            }
            Ok(Arc::new(b.finish()) as ArrayRef)
        })
    }
}

/// Parse Postgres' bytea text input.
pub fn parse_bytea(s: &str) -> Result<Vec<u8>, String> {
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if digits.len() % 2 != 0 {
            return Err("invalid hexadecimal data: odd number of digits".into());
        }
        let val = |c: u8| -> Result<u8, String> {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| format!("invalid hexadecimal digit: \"{}\"", c as char))
        };
        return digits
            .chunks(2)
            .map(|p| Ok(val(p[0])? << 4 | val(p[1])?))
            .collect();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if v > 255 {
                return Err("invalid input syntax for type bytea".into());
            }
            out.push(v as u8);
            i += 4;
        } else {
            return Err("invalid input syntax for type bytea".into());
        }
    }
    Ok(out)
}

/// Text to interval, reading everything Postgres reads in its default style:
/// `1 year 2 mons 3 days 04:05:06.7`, `-1 day`, `02:00`, `1.5 hours`, `@ 1 minute ago`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextToInterval {
    signature: Signature,
}

impl TextToInterval {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for TextToInterval {
    fn name(&self) -> &str {
        "eddy_text_to_interval"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Interval(
            datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_arrays(&args.args, |a| {
            let s = datafusion::arrow::compute::cast(&a[0], &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            let mut b = IntervalMonthDayNanoBuilder::with_capacity(s.len());
            for v in s.iter() {
                match v {
                    Some(v) => b.append_value(parse_interval(v).map_err(|m| data_err("22007", m))?),
                    None => b.append_null(),
                }
            }
            Ok(Arc::new(b.finish()) as ArrayRef)
        })
    }
}

/// Parse a Postgres interval (postgres and ISO-8601-free verbose styles).
pub fn parse_interval(input: &str) -> Result<IntervalMonthDayNano, String> {
    let bad = || format!("invalid input syntax for type interval: \"{input}\"");
    let mut s = input.trim().to_lowercase();
    let mut ago = false;
    if let Some(rest) = s.strip_prefix('@') {
        s = rest.trim().to_string();
    }
    if let Some(rest) = s.strip_suffix("ago") {
        ago = true;
        s = rest.trim().to_string();
    }
    if s.is_empty() {
        return Err(bad());
    }
    let (mut months, mut days, mut nanos): (f64, f64, f64) = (0.0, 0.0, 0.0);
    let tokens: Vec<&str> = s.split_whitespace().collect();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if t.contains(':') {
            // [-]HH:MM[:SS[.frac]]
            let (neg, body) = match t.strip_prefix('-') {
                Some(b) => (true, b),
                None => (false, t.strip_prefix('+').unwrap_or(t)),
            };
            let parts: Vec<&str> = body.split(':').collect();
            if parts.len() < 2 || parts.len() > 3 {
                return Err(bad());
            }
            let h: f64 = parts[0].parse().map_err(|_| bad())?;
            let m: f64 = parts[1].parse().map_err(|_| bad())?;
            let sec: f64 = if parts.len() == 3 {
                parts[2].parse().map_err(|_| bad())?
            } else {
                0.0
            };
            let total = (h * 3600.0 + m * 60.0 + sec) * 1e9;
            nanos += if neg { -total } else { total };
            i += 1;
            continue;
        }
        // A number, optionally glued to its unit ("3days", "1h").
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (num, glued_unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit = if !glued_unit.is_empty() {
            glued_unit.to_string()
        } else if let Some(u) = tokens
            .get(i + 1)
            .filter(|u| u.chars().all(|c| c.is_ascii_alphabetic()))
        {
            i += 1;
            u.to_string()
        } else {
            // A bare number is seconds.
            "second".to_string()
        };
        i += 1;
        match unit.as_str() {
            "millennium" | "millennia" | "millenniums" => months += value * 12000.0,
            "century" | "centuries" | "c" => months += value * 1200.0,
            "decade" | "decades" | "dec" | "decs" => months += value * 120.0,
            "year" | "years" | "yr" | "yrs" | "y" => months += value * 12.0,
            "mon" | "mons" | "month" | "months" => months += value,
            "week" | "weeks" | "w" => days += value * 7.0,
            "day" | "days" | "d" => days += value,
            "hour" | "hours" | "hr" | "hrs" | "h" => nanos += value * 3600e9,
            "minute" | "minutes" | "min" | "mins" | "m" => nanos += value * 60e9,
            "second" | "seconds" | "sec" | "secs" | "s" => nanos += value * 1e9,
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => nanos += value * 1e6,
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" => nanos += value * 1e3,
            _ => return Err(bad()),
        }
    }
    // Fractional months and days spill into smaller units, as in Postgres.
    let whole_months = months.trunc();
    days += (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    nanos += (days - whole_days) * 86400e9;
    let sign = if ago { -1.0 } else { 1.0 };
    let nanos = (nanos * sign / 1000.0).round() * 1000.0;
    if !nanos.is_finite() || nanos.abs() > i64::MAX as f64 || whole_months.abs() > i32::MAX as f64 {
        return Err(format!("interval out of range: \"{input}\""));
    }
    Ok(IntervalMonthDayNano::new(
        (whole_months * sign) as i32,
        (whole_days * sign) as i32,
        nanos as i64,
    ))
}

/// A function of no arguments returning a constant string (`version()`,
/// `current_database()`, ...).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConstantText {
    name: &'static str,
    value: &'static str,
    signature: Signature,
}

impl ConstantText {
    pub fn udf(name: &'static str, value: &'static str) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name,
            value,
            signature: Signature::nullary(Volatility::Stable),
        })
    }
}

impl ScalarUDFImpl for ConstantText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            self.value.to_string(),
        ))))
    }
}

/// `pg_typeof(x)`: the Postgres name of the argument's type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgTypeof {
    signature: Signature,
}

impl PgTypeof {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let t = args
            .arg_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        let name = match &t {
            DataType::Null => "unknown".to_string(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".to_string(),
            DataType::Decimal128(_, _) => "numeric".to_string(),
            other => crate::catalog::types::arrow_display_name(other),
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// `mod(a, b)`: Postgres' name for `a % b`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Mod {
    signature: Signature,
}

impl Mod {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(arg_types[0].clone())
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DFResult<Vec<DataType>> {
        let t = datafusion::logical_expr::type_coercion::binary::comparison_coercion(
            &arg_types[0],
            &arg_types[1],
        )
        .unwrap_or_else(|| arg_types[0].clone());
        Ok(vec![t.clone(), t])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_arrays(&args.args, |a| {
            let zero = ScalarValue::new_zero(a[1].data_type())?.to_array_of_size(a[1].len())?;
            let is_zero = datafusion::arrow::compute::kernels::cmp::eq(&a[1], &zero)?;
            if is_zero.true_count() > 0 {
                return Err(data_err("22012", "division by zero"));
            }
            Ok(numeric::rem(&a[0], &a[1])?)
        })
    }
}

/// `length(x)`: characters of text, bytes of bytea (DataFusion's reads bytea as text).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Length {
    signature: Signature,
}

impl Length {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for Length {
    fn name(&self) -> &str {
        "length"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        map_arrays(&args.args, |a| {
            let x = &a[0];
            let out: datafusion::arrow::array::Int32Array = match x.data_type() {
                DataType::Binary => x
                    .as_binary::<i32>()
                    .iter()
                    .map(|v| v.map(|b| b.len() as i32))
                    .collect(),
                DataType::LargeBinary => x
                    .as_binary::<i64>()
                    .iter()
                    .map(|v| v.map(|b| b.len() as i32))
                    .collect(),
                DataType::BinaryView => x
                    .as_binary_view()
                    .iter()
                    .map(|v| v.map(|b| b.len() as i32))
                    .collect(),
                _ => {
                    let s = datafusion::arrow::compute::cast(x, &DataType::Utf8)?;
                    s.as_string::<i32>()
                        .iter()
                        .map(|v| v.map(|s| s.chars().count() as i32))
                        .collect()
                }
            };
            Ok(Arc::new(out) as ArrayRef)
        })
    }
}

/// Every function eddy registers.
pub fn all(version: &'static str) -> Vec<ScalarUDF> {
    vec![
        CheckedArith::udf(CheckedOp::Add),
        CheckedArith::udf(CheckedOp::Sub),
        CheckedArith::udf(CheckedOp::Mul),
        CheckedArith::udf(CheckedOp::FloatDiv),
        RoundForCast::udf(),
        TextToBytea::udf(),
        TextToInterval::udf(),
        ConstantText::udf("version", version),
        ConstantText::udf("current_database", "eddy"),
        ConstantText::udf("current_schema", "public"),
        PgTypeof::udf(),
        Mod::udf(),
        Length::udf(),
        SessionBound::udf(SESSION_START),
        SessionBound::udf(SESSION_END),
    ]
}

/// The placeholders `SESSION(rel, ts, gap)` expands into: `eddy_session_start(ts,
/// gap_us, keys...)` and `eddy_session_end(...)`. A session depends on the other rows of
/// its key, so no row-by-row function can compute it: materialized views replace the
/// placeholders with a `SessionWindowOperator`; anywhere else they are an error.
pub const SESSION_START: &str = "eddy_session_start";
pub const SESSION_END: &str = "eddy_session_end";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionBound {
    name: &'static str,
    signature: Signature,
}

impl SessionBound {
    pub fn udf(name: &'static str) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name,
            signature: Signature::variadic_any(Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for SessionBound {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            None,
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        Err(DataFusionError::External(Box::new(Error::not_supported(
            "SESSION windows in a one-off query: they are maintained in materialized views \
             and SUBSCRIBE (SELECT ...); create a view and read it",
        ))))
    }
}

/// Strings that are not valid text of a type are errors, never NULL.
pub fn strict_text_cast(s: &str, t: &DataType) -> Result<ScalarValue, String> {
    let arr: ArrayRef = Arc::new(StringArray::from(vec![s]));
    let opts = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let out =
        datafusion::arrow::compute::cast_with_options(&arr, t, &opts).map_err(|e| e.to_string())?;
    if out.is_null(0) {
        return Err(format!("invalid input syntax for type {t}: \"{s}\""));
    }
    ScalarValue::try_from_array(&out, 0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(m: i32, d: i32, us: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(m, d, us * 1000)
    }

    #[test]
    fn reads_postgres_interval_output_and_common_input() {
        assert_eq!(
            parse_interval("1 day 02:00:00").unwrap(),
            iv(0, 1, 7_200_000_000)
        );
        assert_eq!(parse_interval("02:00").unwrap(), iv(0, 0, 7_200_000_000));
        assert_eq!(
            parse_interval("1 year 2 mons 3 days 04:05:06.7").unwrap(),
            iv(14, 3, 14_706_700_000)
        );
        assert_eq!(parse_interval("-1 day").unwrap(), iv(0, -1, 0));
        assert_eq!(
            parse_interval("1 mon -2 days 03:00:00").unwrap(),
            iv(1, -2, 10_800_000_000)
        );
        assert_eq!(
            parse_interval("1.5 hours").unwrap(),
            iv(0, 0, 5_400_000_000)
        );
        assert_eq!(
            parse_interval("@ 3 minutes ago").unwrap(),
            iv(0, 0, -180_000_000)
        );
        assert_eq!(parse_interval("5 seconds").unwrap(), iv(0, 0, 5_000_000));
        assert_eq!(parse_interval("10").unwrap(), iv(0, 0, 10_000_000));
        assert!(parse_interval("one day").is_err());
        assert!(parse_interval("").is_err());
    }

    #[test]
    fn reads_bytea_hex_and_escape_formats() {
        assert_eq!(
            parse_bytea("\\xdeadBEEF").unwrap(),
            vec![0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(parse_bytea("ab\\\\c\\001").unwrap(), b"ab\\c\x01".to_vec());
        assert!(parse_bytea("\\xabc").is_err());
        assert!(parse_bytea("\\xzz").is_err());
    }
}
