//! Bytes ↔ Arrow: decoding records of an external source (JSON or CSV values, text or
//! JSON keys) into rows of a relation, and encoding rows as JSON for sinks and for
//! INSERT into a Kafka-backed relation.
//!
//! Decoding is two steps. Each record is first split into one text cell per column (a
//! JSON number becomes its text, a nested object its JSON text, a CSV field itself);
//! then each column's cells are cast to the column's type with Arrow's cast kernels, the
//! same conversions SQL `CAST(text AS type)` does. A record whose cell does not convert,
//! which lacks a NOT NULL column, or which is not JSON at all becomes a [`BadRecord`]
//! with a reason; the others become rows. One bad record never fails the batch.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::catalog::{CatalogEntry, SqlType};
use crate::dataflow::ChangeBatch;
use crate::error::{Error, Result};

/// How a record's value is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// One JSON object per record; fields match columns by name.
    Json,
    /// One CSV line per record; fields in column order; an empty field is NULL.
    Csv,
}

impl ValueFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(ValueFormat::Json),
            "csv" => Ok(ValueFormat::Csv),
            other => Err(Error::invalid_with(
                "22023",
                format!("unknown format '{other}' (expected 'json' or 'csv')"),
            )),
        }
    }
}

/// How a record's key is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// The key is ignored.
    None,
    /// The key bytes are the text of the (single) key column.
    Text,
    /// The key is JSON: an object with the key columns, or a scalar for one key column.
    Json,
}

impl KeyFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(KeyFormat::None),
            "text" | "string" | "kafka" => Ok(KeyFormat::Text),
            "json" => Ok(KeyFormat::Json),
            other => Err(Error::invalid_with(
                "22023",
                format!("unknown key_format '{other}' (expected 'text', 'json' or 'none')"),
            )),
        }
    }
}

/// One record as it came from the source (borrowing the client's buffers).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawRecord<'a> {
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// The record's own timestamp (milliseconds since 1970), if it has one.
    pub timestamp_ms: Option<i64>,
    pub partition: i32,
    pub offset: i64,
}

/// A record that could not be turned into a row, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BadRecord {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// The rows decoded from a batch of records.
pub struct Decoded {
    /// Rows (+1) and, for upsert tables, tombstones (−1, only key columns set).
    pub changes: ChangeBatch,
    pub bad: Vec<BadRecord>,
    /// The partition each row came from.
    pub partitions: Vec<i32>,
}

/// Decodes records into rows of one relation.
pub struct Decoder {
    schema: SchemaRef,
    names: Vec<String>,
    nullable: Vec<bool>,
    varchar_len: Vec<Option<u64>>,
    by_name: HashMap<String, usize>,
    value_format: ValueFormat,
    key_format: KeyFormat,
    key_columns: Vec<usize>,
    /// Filled from the record timestamp when the value does not carry it.
    timestamp_column: Option<usize>,
    /// Tombstones delete by key (upsert tables); otherwise a null value is a bad record.
    tombstones: bool,
}

impl Decoder {
    pub fn new(
        entry: &CatalogEntry,
        value_format: ValueFormat,
        key_format: KeyFormat,
        key_columns: Vec<usize>,
        timestamp_column: Option<usize>,
        tombstones: bool,
    ) -> Result<Self> {
        if key_format == KeyFormat::Text && key_columns.len() > 1 {
            return Err(Error::invalid_with(
                "22023",
                "key_format 'text' needs exactly one key column; use key_format = 'json'",
            ));
        }
        Ok(Self {
            schema: entry.schema(),
            names: entry.columns.iter().map(|c| c.name.clone()).collect(),
            nullable: entry.columns.iter().map(|c| c.nullable).collect(),
            varchar_len: entry
                .columns
                .iter()
                .map(|c| match c.sql_type {
                    Some(SqlType::Varchar(n)) => n,
                    _ => None,
                })
                .collect(),
            by_name: entry
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect(),
            value_format,
            key_format,
            key_columns,
            timestamp_column,
            tombstones,
        })
    }

    fn column(&self, name: &str) -> Option<usize> {
        if let Some(c) = self.by_name.get(name) {
            return Some(*c);
        }
        // Only a name with upper case can match in lower case: no allocation per
        // unknown field of every record otherwise.
        if name.chars().any(char::is_uppercase) {
            return self.by_name.get(&name.to_lowercase()).copied();
        }
        None
    }

    /// Decode a batch of records. Never fails because of a record's contents.
    /// The relation's schema: what decoded rows look like.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn decode<'a>(&self, records: &[RawRecord<'a>]) -> Result<Decoded> {
        let width = self.names.len();
        // Text cells go straight into one string column per relation column; cells
        // borrow from the record bytes where they can (no allocation per field).
        let mut text: Vec<StringBuilder> = (0..width)
            .map(|_| StringBuilder::with_capacity(records.len(), records.len() * 8))
            .collect();
        let mut diffs: Vec<i64> = Vec::with_capacity(records.len());
        let mut origin: Vec<usize> = Vec::with_capacity(records.len());
        let mut bad = vec![];
        let mut row: Vec<Option<Cow<'a, str>>> = vec![None; width];
        for (i, r) in records.iter().enumerate() {
            row.iter_mut().for_each(|c| *c = None);
            match self.split(r, &mut row) {
                Ok(diff) => {
                    for (b, cell) in text.iter_mut().zip(&row) {
                        b.append_option(cell.as_deref());
                    }
                    diffs.push(diff);
                    origin.push(i);
                }
                Err(reason) => bad.push(BadRecord {
                    partition: r.partition,
                    offset: r.offset,
                    reason,
                }),
            }
        }
        drop(row);
        // Cast column by column; remember the first failure of each row.
        let n = diffs.len();
        let mut failure: Vec<Option<String>> = vec![None; n];
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(width);
        let opts = CastOptions {
            safe: true,
            ..Default::default()
        };
        for (c, mut builder) in text.into_iter().enumerate() {
            let text: StringArray = builder.finish();
            let target = self.schema.field(c).data_type();
            let arr = if target == &DataType::Utf8 {
                Arc::new(text.clone()) as ArrayRef
            } else {
                // A cast that fails as a whole (rather than per value) must not stall
                // the source: every value of the column then counts as unreadable.
                cast_with_options(&text, target, &opts)
                    .unwrap_or_else(|_| datafusion::arrow::array::new_null_array(target, n))
            };
            let check_nulls = !self.nullable[c] && arr.null_count() > 0;
            let check_cast = arr.null_count() > text.null_count();
            if !(check_nulls || check_cast || self.varchar_len[c].is_some()) {
                columns.push(arr);
                continue;
            }
            for row in 0..n {
                if failure[row].is_some() {
                    continue;
                }
                let is_tombstone = diffs[row] < 0;
                if text.is_valid(row) && arr.is_null(row) {
                    failure[row] = Some(format!(
                        "column \"{}\": cannot read {:?} as {}",
                        self.names[c],
                        text.value(row),
                        crate::catalog::types::arrow_display_name(target)
                    ));
                } else if arr.is_null(row)
                    && !self.nullable[c]
                    && (!is_tombstone || self.key_columns.contains(&c))
                {
                    failure[row] = Some(format!("column \"{}\" is missing or null", self.names[c]));
                } else if let Some(max) = self.varchar_len[c] {
                    if text.is_valid(row) && text.value(row).chars().count() as u64 > max {
                        failure[row] = Some(format!(
                            "column \"{}\": value too long for varchar({max})",
                            self.names[c]
                        ));
                    }
                }
            }
            columns.push(arr);
        }
        let all_good = failure.iter().all(Option::is_none);
        let partitions: Vec<i32> = origin
            .iter()
            .zip(&failure)
            .filter(|(_, f)| f.is_none())
            .map(|(o, _)| records[*o].partition)
            .collect();
        let keep: datafusion::arrow::array::BooleanArray =
            failure.iter().map(|f| Some(f.is_none())).collect();
        for (row, f) in failure.into_iter().enumerate() {
            if let Some(reason) = f {
                let r = &records[origin[row]];
                bad.push(BadRecord {
                    partition: r.partition,
                    offset: r.offset,
                    reason,
                });
            }
        }
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        let (data, diffs) = if all_good {
            (data, Int64Array::from(diffs))
        } else {
            let data = filter_record_batch(&data, &keep)?;
            let diffs: Int64Array = diffs
                .iter()
                .zip(keep.values().iter())
                .filter(|(_, k)| *k)
                .map(|(d, _)| Some(*d))
                .collect();
            (data, diffs)
        };
        bad.sort_by_key(|b| (b.partition, b.offset));
        Ok(Decoded {
            changes: ChangeBatch::new(data, diffs),
            bad,
            partitions,
        })
    }

    /// Fill one record's text cells; its diff, or why it cannot be a row.
    fn split<'a>(
        &self,
        r: &RawRecord<'a>,
        row: &mut [Option<Cow<'a, str>>],
    ) -> std::result::Result<i64, String> {
        let diff = match r.value {
            None => {
                if !self.tombstones {
                    return Err(
                        "record has no value (a tombstone) but the relation is not a keyed table"
                            .into(),
                    );
                }
                -1
            }
            Some(bytes) => {
                match self.value_format {
                    ValueFormat::Json => self.json_value(bytes, row)?,
                    ValueFormat::Csv => self.csv_value(bytes, row)?,
                }
                1
            }
        };
        // Key columns come from the record key when it has one.
        if self.key_format != KeyFormat::None && !self.key_columns.is_empty() {
            match r.key {
                Some(key) => self.key_cells(key, row)?,
                None if diff < 0 => return Err("tombstone without a key".into()),
                None => {}
            }
        }
        if let (Some(c), Some(ts)) = (self.timestamp_column, r.timestamp_ms) {
            if row[c].is_none() {
                row[c] = Some(Cow::Owned(millis_to_text(ts)));
            }
        }
        Ok(diff)
    }

    fn json_value<'a>(
        &self,
        bytes: &'a [u8],
        row: &mut [Option<Cow<'a, str>>],
    ) -> std::result::Result<(), String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        RowSeed { dec: self, row }
            .deserialize(&mut de)
            .and_then(|_| de.end())
            .map_err(|e| {
                if e.is_data() {
                    "value is not a JSON object".to_string()
                } else {
                    format!("value is not valid JSON: {e}")
                }
            })
    }

    /// The text of one JSON value for `column` (`None` for null).
    fn raw_cell<'a>(&self, column: usize, raw: &'a RawValue) -> Option<Cow<'a, str>> {
        let t = raw.get();
        match t.as_bytes().first() {
            Some(b'n') => None,
            Some(b'"') => {
                let inner = &t[1..t.len() - 1];
                if inner.contains('\\') {
                    serde_json::from_str::<String>(t).ok().map(Cow::Owned)
                } else {
                    Some(Cow::Borrowed(inner))
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                // A number in a timestamp column is milliseconds since 1970.
                if matches!(
                    self.schema.field(column).data_type(),
                    DataType::Timestamp(_, _) | DataType::Date32
                ) {
                    if let Ok(ms) = t.parse::<i64>() {
                        return Some(Cow::Owned(millis_to_text(ms)));
                    }
                }
                Some(Cow::Borrowed(t))
            }
            // true, false, objects and arrays: their JSON text.
            _ => Some(Cow::Borrowed(t)),
        }
    }

    fn csv_value<'a>(
        &self,
        bytes: &[u8],
        row: &mut [Option<Cow<'a, str>>],
    ) -> std::result::Result<(), String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Err("empty CSV record".into()),
            Err(e) => return Err(format!("value is not valid CSV: {e}")),
        }
        if record.len() != row.len() {
            return Err(format!(
                "CSV record has {} fields, expected {}",
                record.len(),
                row.len()
            ));
        }
        for (c, field) in record.iter().enumerate() {
            row[c] = (!field.is_empty()).then(|| Cow::Owned(field.to_string()));
        }
        Ok(())
    }

    fn key_cells<'a>(
        &self,
        key: &'a [u8],
        row: &mut [Option<Cow<'a, str>>],
    ) -> std::result::Result<(), String> {
        match self.key_format {
            KeyFormat::None => Ok(()),
            KeyFormat::Text => {
                let s =
                    std::str::from_utf8(key).map_err(|_| "key is not UTF-8 text".to_string())?;
                row[self.key_columns[0]] = Some(Cow::Borrowed(s));
                Ok(())
            }
            KeyFormat::Json => {
                let raw: &RawValue = serde_json::from_slice(key)
                    .map_err(|e| format!("key is not valid JSON: {e}"))?;
                if raw.get().starts_with('{') {
                    let mut keyed: Vec<Option<Cow<'a, str>>> = vec![None; row.len()];
                    let mut de = serde_json::Deserializer::from_slice(key);
                    RowSeed {
                        dec: self,
                        row: &mut keyed,
                    }
                    .deserialize(&mut de)
                    .map_err(|e| format!("key is not valid JSON: {e}"))?;
                    for c in &self.key_columns {
                        if let Some(v) = keyed[*c].take() {
                            row[*c] = Some(v);
                        }
                    }
                    Ok(())
                } else if self.key_columns.len() == 1 {
                    let c = self.key_columns[0];
                    row[c] = self.raw_cell(c, raw);
                    Ok(())
                } else {
                    Err("key is a JSON scalar but the relation has several key columns".into())
                }
            }
        }
    }
}

/// Streams a JSON object's fields into a row's cells, borrowing from the input.
struct RowSeed<'d, 'r, 'a> {
    dec: &'d Decoder,
    row: &'r mut [Option<Cow<'a, str>>],
}

impl<'de, 'd, 'r> DeserializeSeed<'de> for RowSeed<'d, 'r, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'd, 'r> Visitor<'de> for RowSeed<'d, 'r, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<(), A::Error> {
        while let Some(KeyText(k)) = m.next_key()? {
            match self.dec.column(&k) {
                Some(c) => {
                    let raw: &'de RawValue = m.next_value()?;
                    self.row[c] = self.dec.raw_cell(c, raw);
                }
                None => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key: borrowed unless it has escapes.
struct KeyText<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(KeyText(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `2024-05-01 12:00:00.123` (UTC) for milliseconds since 1970.
fn millis_to_text(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string(),
        None => ms.to_string(),
    }
}

/// Encodes rows as JSON objects (one per row, column name → value).
pub struct JsonEncoder {
    names: Vec<String>,
}

impl JsonEncoder {
    pub fn new(schema: &SchemaRef) -> Self {
        Self {
            names: schema
                .fields()
                .iter()
                .map(|f| serde_json::to_string(f.name()).unwrap_or_else(|_| "\"?\"".into()))
                .collect(),
        }
    }

    /// One JSON object per row of `batch`, restricted to `columns` (all when `None`).
    pub fn encode(&self, batch: &RecordBatch, columns: Option<&[usize]>) -> Result<Vec<String>> {
        let all: Vec<usize> = (0..batch.num_columns()).collect();
        let columns = columns.unwrap_or(&all);
        let opts = FormatOptions::default().with_display_error(true);
        let formatters = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(batch.column(*c).as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let mut s = String::from("{");
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&self.names[*c]);
                s.push(':');
                json_value(batch.column(*c), &formatters[i], row, &mut s);
            }
            s.push('}');
            out.push(s);
        }
        Ok(out)
    }
}

/// Append one value as JSON: numbers and booleans bare, NaN/Infinity and NULL as null,
/// everything else (text, dates, timestamps, intervals) as a string.
fn json_value(col: &ArrayRef, f: &ArrayFormatter, row: usize, out: &mut String) {
    use std::fmt::Write as _;
    if col.is_null(row) {
        out.push_str("null");
        return;
    }
    match col.data_type() {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(_, _) => {
            let _ = write!(out, "{}", f.value(row));
        }
        DataType::Float32 | DataType::Float64 => {
            let v = match col.data_type() {
                DataType::Float32 => col
                    .as_primitive::<datafusion::arrow::datatypes::Float32Type>()
                    .value(row) as f64,
                _ => col
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .value(row),
            };
            if v.is_finite() {
                let _ = write!(out, "{v}");
            } else {
                out.push_str("null");
            }
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            // Space-separated like Postgres, which eddy's decoder and most tools read.
            let text = f.value(row).to_string().replacen('T', " ", 1);
            out.push_str(&serde_json::to_string(&text).unwrap_or_default());
        }
        _ => {
            let text = f.value(row).to_string();
            out.push_str(&serde_json::to_string(&text).unwrap_or_default());
        }
    }
}

/// One CSV line per row (no header; NULL is an empty field), as the CSV decoder reads it.
pub fn encode_csv(batch: &RecordBatch) -> Result<Vec<String>> {
    let opts = FormatOptions::default().with_display_error(true);
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(vec![]);
        let fields: Vec<String> = batch
            .columns()
            .iter()
            .zip(&formatters)
            .map(|(c, f)| {
                if c.is_null(row) {
                    String::new()
                } else {
                    f.value(row).to_string()
                }
            })
            .collect();
        w.write_record(&fields)
            .map_err(|e| Error::internal(format!("CSV encoding: {e}")))?;
        let bytes = w
            .into_inner()
            .map_err(|e| Error::internal(format!("CSV encoding: {e}")))?;
        let line = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\n')
            .to_string();
        out.push(line);
    }
    Ok(out)
}

/// The key of each row as text: the single key column's text, or a JSON object of the
/// key columns.
pub fn encode_keys(
    batch: &RecordBatch,
    key_columns: &[usize],
    format: KeyFormat,
) -> Result<Vec<Option<String>>> {
    if key_columns.is_empty() || format == KeyFormat::None {
        return Ok(vec![None; batch.num_rows()]);
    }
    if format == KeyFormat::Text && key_columns.len() == 1 {
        let opts = FormatOptions::default().with_display_error(true);
        let col = batch.column(key_columns[0]);
        let f = ArrayFormatter::try_new(col.as_ref(), &opts)?;
        return Ok((0..batch.num_rows())
            .map(|r| (!col.is_null(r)).then(|| f.value(r).to_string()))
            .collect());
    }
    let enc = JsonEncoder::new(&batch.schema());
    Ok(enc
        .encode(batch, Some(key_columns))?
        .into_iter()
        .map(Some)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, ObjectKind};

    fn entry(cols: &[(&str, DataType, bool)], pk: Vec<usize>) -> CatalogEntry {
        CatalogEntry {
            id: 1,
            name: "t".into(),
            kind: ObjectKind::Table,
            columns: cols
                .iter()
                .map(|(n, t, null)| Column {
                    name: n.to_string(),
                    data_type: t.clone(),
                    nullable: *null,
                    sql_type: None,
                })
                .collect(),
            primary_key: pk,
            sql: String::new(),
            depends_on: vec![],
            options: Default::default(),
            append_only: false,
            watermark: None,
            plan_version: 0,
        }
    }

    fn rec<'a>(offset: i64, key: Option<&'a str>, value: Option<&'a str>) -> RawRecord<'a> {
        RawRecord {
            key: key.map(str::as_bytes),
            value: value.map(str::as_bytes),
            timestamp_ms: Some(1_700_000_000_000),
            partition: 0,
            offset,
        }
    }

    fn rows(d: &Decoded) -> Vec<String> {
        d.changes.to_sorted_strings()
    }

    #[test]
    fn json_rows_bad_records_are_skipped_with_reasons() {
        let e = entry(
            &[
                ("id", DataType::Int64, false),
                ("name", DataType::Utf8, true),
                ("price", DataType::Float64, true),
            ],
            vec![],
        );
        let d = Decoder::new(&e, ValueFormat::Json, KeyFormat::None, vec![], None, false).unwrap();
        let out = d
            .decode(&[
                rec(0, None, Some(r#"{"id": 1, "name": "a", "price": 2.5}"#)),
                rec(1, None, Some(r#"{"id": "x"}"#)),
                rec(2, None, Some("not json")),
                rec(3, None, Some(r#"{"name": "no id"}"#)),
                rec(
                    4,
                    None,
                    Some(r#"{"ID": 2, "extra": true, "name": {"n": 1}}"#),
                ),
                rec(5, None, None),
            ])
            .unwrap();
        // A nested object keeps its JSON text as written.
        assert_eq!(rows(&out), vec!["1 a 2.5 +1", "2 {\"n\": 1} NULL +1"]);
        let offsets: Vec<i64> = out.bad.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, vec![1, 2, 3, 5]);
        assert!(
            out.bad[0].reason.contains("cannot read \"x\""),
            "{:?}",
            out.bad
        );
        assert!(out.bad[1].reason.contains("not valid JSON"));
        assert!(out.bad[2].reason.contains("\"id\" is missing"));
    }

    #[test]
    fn upsert_keys_and_tombstones_come_from_the_record_key() {
        let e = entry(
            &[
                ("id", DataType::Int64, false),
                ("city", DataType::Utf8, true),
            ],
            vec![0],
        );
        let d = Decoder::new(&e, ValueFormat::Json, KeyFormat::Text, vec![0], None, true).unwrap();
        let out = d
            .decode(&[
                rec(0, Some("7"), Some(r#"{"city": "Oslo"}"#)),
                rec(1, Some("8"), None),
                rec(2, None, None),
            ])
            .unwrap();
        assert_eq!(rows(&out), vec!["7 Oslo +1", "8 NULL -1"]);
        assert_eq!(out.bad.len(), 1);
        assert!(out.bad[0].reason.contains("tombstone without a key"));
    }

    #[test]
    fn csv_and_timestamps() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let e = entry(
            &[
                ("a", DataType::Int32, true),
                ("b", DataType::Utf8, true),
                ("at", ts, true),
            ],
            vec![],
        );
        let d = Decoder::new(
            &e,
            ValueFormat::Csv,
            KeyFormat::None,
            vec![],
            Some(2),
            false,
        )
        .unwrap();
        let out = d
            .decode(&[
                rec(0, None, Some("1,\"x, y\",2024-05-01 10:00:00")),
                rec(1, None, Some("2,,")),
                rec(2, None, Some("3,too,many,fields")),
            ])
            .unwrap();
        assert_eq!(
            rows(&out),
            vec![
                "1 x, y 2024-05-01T10:00:00 +1",
                "2 NULL 2023-11-14T22:13:20 +1"
            ]
        );
        assert_eq!(out.bad.len(), 1);
    }

    #[test]
    fn json_encoding_round_trips_through_the_decoder() {
        let e = entry(
            &[
                ("id", DataType::Int64, false),
                ("name", DataType::Utf8, true),
                ("ok", DataType::Boolean, true),
                ("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
                ("amount", DataType::Decimal128(10, 2), true),
            ],
            vec![0],
        );
        let d = Decoder::new(&e, ValueFormat::Json, KeyFormat::Text, vec![0], None, true).unwrap();
        let input = d
            .decode(&[rec(
                0,
                Some("5"),
                Some(r#"{"name": "q\"uote", "ok": true, "at": "2024-01-02 03:04:05.5", "amount": "12.30"}"#),
            )])
            .unwrap();
        assert!(input.bad.is_empty(), "{:?}", input.bad);
        let enc = JsonEncoder::new(&e.schema());
        let json = enc.encode(&input.changes.data, None).unwrap();
        assert_eq!(
            json,
            vec![
                r#"{"id":5,"name":"q\"uote","ok":true,"at":"2024-01-02 03:04:05.500","amount":12.30}"#
            ]
        );
        let keys = encode_keys(&input.changes.data, &[0], KeyFormat::Text).unwrap();
        assert_eq!(keys, vec![Some("5".to_string())]);
        let again = d.decode(&[rec(1, None, Some(&json[0]))]).unwrap();
        assert_eq!(rows(&again), rows(&input));
    }
}
