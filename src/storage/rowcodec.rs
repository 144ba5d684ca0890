//! An order-preserving ("memcomparable") encoding of Arrow rows into bytes.
//!
//! Operators key their state by encoded rows, tables key their rows by encoded primary
//! keys, and the same bytes are the keys in sled. Comparing two encodings byte-wise
//! gives the same order as comparing the values (per column ascending or descending,
//! nulls first or last), and equal values have equal encodings — `-0.0` and `0.0` are
//! one key, as are all NaNs — so a byte string is a valid GROUP BY / join / DISTINCT key.
//!
//! Per column: a marker byte (null, or present) then, if present, the value:
//! fixed-width big-endian integers with the sign bit flipped, IEEE floats mapped to an
//! unsigned total order, strings and binaries escaped (`0x00` → `0x00 0xFF`) and
//! terminated by `0x00 0x01` so that a prefix sorts first. Descending columns invert the
//! value bytes. The format is eddy's own (not arrow-row's) because it is persisted.

use std::sync::Arc;

use datafusion::arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BinaryArray, BooleanArray,
    IntervalMonthDayNanoArray, LargeBinaryArray, LargeStringArray, NullArray, StringArray,
    StringViewArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{ArrowNativeType, DataType, IntervalMonthDayNano, IntervalUnit};

use crate::error::{Error, Result};

const NULL_FIRST: u8 = 0x00;
const PRESENT: u8 = 0x01;
const NULL_LAST: u8 = 0x02;

/// How one column sorts. The default is Postgres' `ASC NULLS LAST`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SortOrder {
    pub descending: bool,
    pub nulls_first: bool,
}

impl SortOrder {
    pub fn new(descending: bool, nulls_first: bool) -> Self {
        Self {
            descending,
            nulls_first,
        }
    }
}

/// The physical shape of a column, which decides its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    I128,
    MonthDayNano,
    Utf8,
    LargeUtf8,
    Utf8View,
    Binary,
    LargeBinary,
}

fn kind_of(dt: &DataType) -> Option<Kind> {
    use DataType::*;
    Some(match dt {
        Null => Kind::Null,
        Boolean => Kind::Bool,
        Int8 => Kind::I8,
        Int16 => Kind::I16,
        Int32 | Date32 | Time32(_) | Interval(IntervalUnit::YearMonth) => Kind::I32,
        Int64 | Date64 | Time64(_) | Timestamp(_, _) | Duration(_) => Kind::I64,
        UInt8 => Kind::U8,
        UInt16 => Kind::U16,
        UInt32 => Kind::U32,
        UInt64 => Kind::U64,
        Float32 => Kind::F32,
        Float64 => Kind::F64,
        Decimal128(_, _) => Kind::I128,
        Interval(IntervalUnit::MonthDayNano) => Kind::MonthDayNano,
        Utf8 => Kind::Utf8,
        LargeUtf8 => Kind::LargeUtf8,
        Utf8View => Kind::Utf8View,
        Binary => Kind::Binary,
        LargeBinary => Kind::LargeBinary,
        _ => return None,
    })
}

/// Whether eddy can keep values of this type in state.
pub fn is_supported(dt: &DataType) -> bool {
    kind_of(dt).is_some()
}

/// Encodes and decodes rows of a fixed list of column types.
#[derive(Clone, Debug)]
pub struct RowCodec {
    types: Vec<DataType>,
    kinds: Vec<Kind>,
    orders: Vec<SortOrder>,
}

impl RowCodec {
    /// A codec for `types`, every column ascending with nulls last.
    pub fn new(types: Vec<DataType>) -> Result<Self> {
        let orders = vec![SortOrder::default(); types.len()];
        Self::with_orders(types, orders)
    }

    pub fn with_orders(types: Vec<DataType>, orders: Vec<SortOrder>) -> Result<Self> {
        let kinds = types
            .iter()
            .map(|t| {
                kind_of(t).ok_or_else(|| {
                    Error::not_supported(format!("values of type {t} in keys or state"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            types,
            kinds,
            orders,
        })
    }

    pub fn types(&self) -> &[DataType] {
        &self.types
    }

    pub fn num_columns(&self) -> usize {
        self.types.len()
    }

    /// Encode every row of `columns` (all of the same length), one buffer per row.
    pub fn encode_rows(&self, columns: &[ArrayRef], num_rows: usize) -> Vec<Vec<u8>> {
        let flat = self.encode_flat(columns, num_rows);
        flat.iter().map(<[u8]>::to_vec).collect()
    }

    /// Encode every row of `columns` into one buffer (no allocation per row): the hot
    /// paths of operators look rows up by the slices of an [`EncodedRows`] and copy a
    /// key only when they keep it.
    pub fn encode_flat(&self, columns: &[ArrayRef], num_rows: usize) -> EncodedRows {
        let datas: Vec<ArrayData> = columns.iter().map(|c| c.to_data()).collect();
        let views: Vec<ColViewWithNulls<'_>> = columns
            .iter()
            .zip(&datas)
            .zip(&self.kinds)
            .map(|((c, d), k)| ColViewWithNulls::new(c.as_ref(), d, *k))
            .collect();
        let width: usize = views.iter().map(ColViewWithNulls::width_hint).sum();
        let mut data = Vec::with_capacity(num_rows * width);
        let mut offsets = Vec::with_capacity(num_rows + 1);
        offsets.push(0);
        for r in 0..num_rows {
            for (view, order) in views.iter().zip(&self.orders) {
                view.encode(r, *order, &mut data);
            }
            offsets.push(data.len());
        }
        EncodedRows { data, offsets }
    }

    /// Decode `rows` (each produced by this codec) into one array per column.
    pub fn decode<R: AsRef<[u8]>>(&self, rows: &[R]) -> Result<Vec<ArrayRef>> {
        let mut cursors: Vec<&[u8]> = rows.iter().map(|r| r.as_ref()).collect();
        self.decode_from(&mut cursors)
    }

    /// Decode this codec's columns from the front of each cursor, advancing them; the
    /// rest of each cursor is left for the caller (rows that concatenate two encodings).
    pub fn decode_from(&self, cursors: &mut [&[u8]]) -> Result<Vec<ArrayRef>> {
        let mut out = Vec::with_capacity(self.types.len());
        for c in 0..self.types.len() {
            out.push(self.decode_column(c, cursors)?);
        }
        Ok(out)
    }

    fn decode_column(&self, c: usize, cursors: &mut [&[u8]]) -> Result<ArrayRef> {
        let n = cursors.len();
        let dt = &self.types[c];
        let desc = self.orders[c].descending;
        let mut valid = Vec::with_capacity(n);
        // Read the marker of every row first; value decoders below skip null rows.
        let mut markers = |cursors: &mut [&[u8]]| -> Result<()> {
            for cur in cursors.iter_mut() {
                let m = take(cur, 1)?[0];
                valid.push(m == PRESENT);
            }
            Ok(())
        };
        markers(cursors)?;
        let nulls = if valid.iter().all(|v| *v) {
            None
        } else {
            Some(NullBuffer::new(BooleanBuffer::from(valid.clone())))
        };
        macro_rules! fixed {
            ($t:ty, $w:expr, $conv:expr) => {{
                let mut vals: Vec<$t> = Vec::with_capacity(n);
                for (cur, ok) in cursors.iter_mut().zip(&valid) {
                    if *ok {
                        let mut b = [0u8; $w];
                        b.copy_from_slice(take(cur, $w)?);
                        if desc {
                            b.iter_mut().for_each(|x| *x = !*x);
                        }
                        vals.push($conv(b));
                    } else {
                        vals.push(<$t>::default());
                    }
                }
                primitive(dt, vals, nulls)
            }};
        }
        match self.kinds[c] {
            Kind::Null => Ok(Arc::new(NullArray::new(n))),
            Kind::Bool => {
                let mut vals = Vec::with_capacity(n);
                for (cur, ok) in cursors.iter_mut().zip(&valid) {
                    if *ok {
                        let b = take(cur, 1)?[0];
                        vals.push((if desc { !b } else { b }) != 0);
                    } else {
                        vals.push(false);
                    }
                }
                Ok(Arc::new(BooleanArray::new(
                    BooleanBuffer::from(vals),
                    nulls,
                )))
            }
            Kind::I8 => fixed!(i8, 1, |b: [u8; 1]| (b[0] ^ 0x80) as i8),
            Kind::I16 => fixed!(i16, 2, |b| (u16::from_be_bytes(b) ^ 0x8000) as i16),
            Kind::I32 => fixed!(i32, 4, |b| (u32::from_be_bytes(b) ^ 0x8000_0000) as i32),
            Kind::I64 => fixed!(i64, 8, |b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64),
            Kind::U8 => fixed!(u8, 1, |b: [u8; 1]| b[0]),
            Kind::U16 => fixed!(u16, 2, u16::from_be_bytes),
            Kind::U32 => fixed!(u32, 4, u32::from_be_bytes),
            Kind::U64 => fixed!(u64, 8, u64::from_be_bytes),
            Kind::F32 => fixed!(f32, 4, |b| f32_from_key(u32::from_be_bytes(b))),
            Kind::F64 => fixed!(f64, 8, |b| f64_from_key(u64::from_be_bytes(b))),
            Kind::I128 => fixed!(i128, 16, |b| (u128::from_be_bytes(b) ^ (1u128 << 127))
                as i128),
            Kind::MonthDayNano => {
                let mut vals = Vec::with_capacity(n);
                for (cur, ok) in cursors.iter_mut().zip(&valid) {
                    if *ok {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(take(cur, 16)?);
                        if desc {
                            b.iter_mut().for_each(|x| *x = !*x);
                        }
                        let m = (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) ^ 0x8000_0000) as i32;
                        let d = (u32::from_be_bytes([b[4], b[5], b[6], b[7]]) ^ 0x8000_0000) as i32;
                        let mut nb = [0u8; 8];
                        nb.copy_from_slice(&b[8..16]);
                        let ns = (u64::from_be_bytes(nb) ^ (1 << 63)) as i64;
                        vals.push(Some(IntervalMonthDayNano::new(m, d, ns)));
                    } else {
                        vals.push(None);
                    }
                }
                Ok(Arc::new(IntervalMonthDayNanoArray::from(vals)))
            }
            Kind::Utf8 | Kind::LargeUtf8 | Kind::Utf8View | Kind::Binary | Kind::LargeBinary => {
                let mut bytes: Vec<u8> = Vec::new();
                let mut offsets: Vec<usize> = Vec::with_capacity(n + 1);
                offsets.push(0);
                for (cur, ok) in cursors.iter_mut().zip(&valid) {
                    if *ok {
                        unescape(cur, desc, &mut bytes)?;
                    }
                    offsets.push(bytes.len());
                }
                varlen(self.kinds[c], bytes, offsets, nulls)
            }
        }
    }
}

/// Rows encoded back to back in one buffer ([`RowCodec::encode_flat`]).
#[derive(Clone, Debug, Default)]
pub struct EncodedRows {
    data: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is row `i`.
    offsets: Vec<usize>,
}

impl EncodedRows {
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoding of row `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.offsets.windows(2).map(|w| &self.data[w[0]..w[1]])
    }
}

/// One column's values, looked up once per batch, for encoding row by row.
enum ColView<'a> {
    Null,
    Bool(&'a BooleanArray),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
    I128(&'a [i128]),
    MonthDayNano(&'a [IntervalMonthDayNano]),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
}

/// A column's values with its validity: `None` when every row is present.
struct ColViewWithNulls<'a> {
    values: ColView<'a>,
    nulls: Option<&'a NullBuffer>,
}

impl<'a> ColViewWithNulls<'a> {
    /// `data` is `col.to_data()`: fixed-width values are read from its first buffer
    /// (already sliced to the array's offset), whatever the logical type of that width
    /// (dates, times, timestamps and durations share their integers' layout).
    fn new(col: &'a dyn Array, data: &'a ArrayData, kind: Kind) -> Self {
        let values = match kind {
            Kind::Null => ColView::Null,
            Kind::Bool => ColView::Bool(col.as_boolean()),
            Kind::I8 => ColView::I8(data.buffer::<i8>(0)),
            Kind::I16 => ColView::I16(data.buffer::<i16>(0)),
            Kind::I32 => ColView::I32(data.buffer::<i32>(0)),
            Kind::I64 => ColView::I64(data.buffer::<i64>(0)),
            Kind::U8 => ColView::U8(data.buffer::<u8>(0)),
            Kind::U16 => ColView::U16(data.buffer::<u16>(0)),
            Kind::U32 => ColView::U32(data.buffer::<u32>(0)),
            Kind::U64 => ColView::U64(data.buffer::<u64>(0)),
            Kind::F32 => ColView::F32(data.buffer::<f32>(0)),
            Kind::F64 => ColView::F64(data.buffer::<f64>(0)),
            Kind::I128 => ColView::I128(data.buffer::<i128>(0)),
            Kind::MonthDayNano => ColView::MonthDayNano(data.buffer::<IntervalMonthDayNano>(0)),
            Kind::Utf8 => ColView::Utf8(col.as_string::<i32>()),
            Kind::LargeUtf8 => ColView::LargeUtf8(col.as_string::<i64>()),
            Kind::Utf8View => ColView::Utf8View(col.as_string_view()),
            Kind::Binary => ColView::Binary(col.as_binary::<i32>()),
            Kind::LargeBinary => ColView::LargeBinary(col.as_binary::<i64>()),
        };
        ColViewWithNulls {
            values,
            nulls: col.nulls(),
        }
    }
}

impl ColViewWithNulls<'_> {
    /// Bytes a present value usually takes (to size the buffer).
    fn width_hint(&self) -> usize {
        1 + match self.values {
            ColView::Null => 0,
            ColView::Bool(_) | ColView::I8(_) | ColView::U8(_) => 1,
            ColView::I16(_) | ColView::U16(_) => 2,
            ColView::I32(_) | ColView::U32(_) | ColView::F32(_) => 4,
            ColView::I64(_) | ColView::U64(_) | ColView::F64(_) => 8,
            ColView::I128(_) | ColView::MonthDayNano(_) => 16,
            _ => 16,
        }
    }

    /// Append the encoding of row `r` (marker, then the value) to `out`.
    #[inline]
    fn encode(&self, r: usize, order: SortOrder, out: &mut Vec<u8>) {
        if matches!(self.values, ColView::Null) || self.nulls.is_some_and(|n| n.is_null(r)) {
            out.push(if order.nulls_first {
                NULL_FIRST
            } else {
                NULL_LAST
            });
            return;
        }
        out.push(PRESENT);
        let start = out.len();
        match &self.values {
            ColView::Null => {}
            ColView::Bool(a) => out.push(a.value(r) as u8),
            ColView::I8(v) => out.push((v[r] as u8) ^ 0x80),
            ColView::I16(v) => out.extend_from_slice(&flip16(v[r])),
            ColView::I32(v) => out.extend_from_slice(&flip32(v[r])),
            ColView::I64(v) => out.extend_from_slice(&flip64(v[r])),
            ColView::U8(v) => out.push(v[r]),
            ColView::U16(v) => out.extend_from_slice(&v[r].to_be_bytes()),
            ColView::U32(v) => out.extend_from_slice(&v[r].to_be_bytes()),
            ColView::U64(v) => out.extend_from_slice(&v[r].to_be_bytes()),
            ColView::F32(v) => out.extend_from_slice(&f32_key(v[r])),
            ColView::F64(v) => out.extend_from_slice(&f64_key(v[r])),
            ColView::I128(v) => {
                out.extend_from_slice(&((v[r] as u128) ^ (1u128 << 127)).to_be_bytes())
            }
            ColView::MonthDayNano(v) => {
                out.extend_from_slice(&flip32(v[r].months));
                out.extend_from_slice(&flip32(v[r].days));
                out.extend_from_slice(&flip64(v[r].nanoseconds));
            }
            ColView::Utf8(a) => escape(a.value(r).as_bytes(), out),
            ColView::LargeUtf8(a) => escape(a.value(r).as_bytes(), out),
            ColView::Utf8View(a) => escape(a.value(r).as_bytes(), out),
            ColView::Binary(a) => escape(a.value(r), out),
            ColView::LargeBinary(a) => escape(a.value(r), out),
        }
        if order.descending {
            for b in &mut out[start..] {
                *b = !*b;
            }
        }
    }
}

fn take<'a>(cur: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if cur.len() < n {
        return Err(Error::Storage("corrupt encoded row: truncated".into()));
    }
    let (head, rest) = cur.split_at(n);
    *cur = rest;
    Ok(head)
}

fn flip16(v: i16) -> [u8; 2] {
    ((v as u16) ^ 0x8000).to_be_bytes()
}

fn flip32(v: i32) -> [u8; 4] {
    ((v as u32) ^ 0x8000_0000).to_be_bytes()
}

fn flip64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn f64_key(v: f64) -> [u8; 8] {
    // One key for 0.0 and -0.0, one for every NaN (SQL equality, Postgres' NaN = NaN).
    let v = if v == 0.0 {
        0.0
    } else if v.is_nan() {
        f64::NAN
    } else {
        v
    };
    let bits = v.to_bits();
    let key = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    key.to_be_bytes()
}

fn f64_from_key(key: u64) -> f64 {
    let bits = if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    };
    f64::from_bits(bits)
}

fn f32_key(v: f32) -> [u8; 4] {
    let v = if v == 0.0 {
        0.0
    } else if v.is_nan() {
        f32::NAN
    } else {
        v
    };
    let bits = v.to_bits();
    let key = if bits >> 31 == 1 {
        !bits
    } else {
        bits | (1 << 31)
    };
    key.to_be_bytes()
}

fn f32_from_key(key: u32) -> f32 {
    let bits = if key >> 31 == 1 {
        key & !(1 << 31)
    } else {
        !key
    };
    f32::from_bits(bits)
}

fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    // Text rarely holds NUL: copy it whole (the search is memchr's).
    if !bytes.contains(&0) {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

fn unescape(cur: &mut &[u8], desc: bool, out: &mut Vec<u8>) -> Result<()> {
    let x = |b: u8| if desc { !b } else { b };
    let mut i = 0;
    loop {
        let b = *cur.get(i).map(|b| x(*b)).as_ref().ok_or_else(truncated)?;
        if b != 0 {
            out.push(b);
            i += 1;
            continue;
        }
        let next = cur.get(i + 1).map(|b| x(*b)).ok_or_else(truncated)?;
        i += 2;
        match next {
            0xFF => out.push(0),
            0x01 => break,
            _ => return Err(Error::Storage("corrupt encoded row: bad escape".into())),
        }
    }
    *cur = &cur[i..];
    Ok(())
}

fn truncated() -> Error {
    Error::Storage("corrupt encoded row: unterminated string".into())
}

fn primitive<T: ArrowNativeType>(
    dt: &DataType,
    vals: Vec<T>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    let len = vals.len();
    let data = ArrayData::builder(dt.clone())
        .len(len)
        .add_buffer(Buffer::from_vec(vals))
        .nulls(nulls)
        .build()?;
    Ok(make_array(data))
}

fn varlen(
    kind: Kind,
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    let values = Buffer::from_vec(bytes);
    let as_i32 = || -> Result<OffsetBuffer<i32>> {
        let o: Vec<i32> = offsets
            .iter()
            .map(|o| i32::try_from(*o))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::execution("string column larger than 2 GiB"))?;
        Ok(OffsetBuffer::new(o.into()))
    };
    let as_i64 =
        || OffsetBuffer::<i64>::new(offsets.iter().map(|o| *o as i64).collect::<Vec<_>>().into());
    Ok(match kind {
        Kind::Utf8 => Arc::new(StringArray::try_new(as_i32()?, values, nulls)?),
        Kind::LargeUtf8 => Arc::new(LargeStringArray::try_new(as_i64(), values, nulls)?),
        Kind::Utf8View => {
            let s = StringArray::try_new(as_i32()?, values, nulls)?;
            Arc::new(StringViewArray::from_iter(s.iter()))
        }
        Kind::Binary => Arc::new(BinaryArray::try_new(as_i32()?, values, nulls)?),
        Kind::LargeBinary => Arc::new(LargeBinaryArray::try_new(as_i64(), values, nulls)?),
        _ => return Err(Error::internal("varlen decode of a fixed-width kind")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
        TimestampNanosecondArray,
    };

    fn roundtrip(cols: Vec<ArrayRef>) {
        let types = cols.iter().map(|c| c.data_type().clone()).collect();
        let codec = RowCodec::new(types).unwrap();
        let rows = codec.encode_rows(&cols, cols[0].len());
        let back = codec.decode(&rows).unwrap();
        for (a, b) in cols.iter().zip(back.iter()) {
            assert_eq!(a.to_data(), b.to_data());
        }
    }

    #[test]
    fn roundtrips_every_supported_kind_with_nulls() {
        roundtrip(vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(-5)])),
            Arc::new(StringArray::from(vec![Some("a\0b"), Some(""), None])),
            Arc::new(Float64Array::from(vec![
                Some(-1.5),
                Some(f64::INFINITY),
                None,
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(Date32Array::from(vec![Some(0), Some(19000), None])),
            Arc::new(
                TimestampNanosecondArray::from(vec![Some(1), None, Some(-1)])
                    .with_timezone("+00:00"),
            ),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, 2, 3)),
                None,
                Some(IntervalMonthDayNano::new(-1, 0, -9)),
            ])),
        ]);
    }

    #[test]
    fn sliced_columns_encode_like_whole_ones() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1),
            None,
            Some(3),
            Some(-4),
            None,
        ]));
        let strs: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("b\0"),
            None,
            Some("dd"),
            Some(""),
        ]));
        let codec = RowCodec::new(vec![DataType::Int64, DataType::Utf8]).unwrap();
        let whole = codec.encode_rows(&[ints.clone(), strs.clone()], 5);
        let sliced = codec.encode_flat(&[ints.slice(1, 3), strs.slice(1, 3)], 3);
        assert_eq!(sliced.len(), 3);
        let rows: Vec<&[u8]> = sliced.iter().collect();
        assert_eq!(
            rows,
            whole[1..4].iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        let back = codec.decode(&rows).unwrap();
        assert_eq!(back[0].to_data(), ints.slice(1, 3).to_data());
    }

    #[test]
    fn byte_order_matches_value_order() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![i64::MIN, -3, -1, 0, 1, 7, i64::MAX]));
        let codec = RowCodec::new(vec![DataType::Int64]).unwrap();
        let rows = codec.encode_rows(&[ints], 7);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));

        let floats: ArrayRef = Arc::new(Float64Array::from(vec![
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.5,
            3.0,
            f64::NAN,
        ]));
        let codec = RowCodec::new(vec![DataType::Float64]).unwrap();
        let rows = codec.encode_rows(&[floats], 6);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));

        let strs: ArrayRef = Arc::new(StringArray::from(vec!["", "a", "a\0", "ab", "b"]));
        let codec = RowCodec::new(vec![DataType::Utf8]).unwrap();
        let rows = codec.encode_rows(&[strs], 5);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn descending_and_null_placement() {
        let col: ArrayRef = Arc::new(StringArray::from(vec![Some("ab"), Some("abc"), None]));
        let desc =
            RowCodec::with_orders(vec![DataType::Utf8], vec![SortOrder::new(true, true)]).unwrap();
        let rows = desc.encode_rows(std::slice::from_ref(&col), 3);
        // NULLS FIRST, then "abc" before "ab" (descending).
        assert!(rows[2] < rows[1] && rows[1] < rows[0]);
        assert_eq!(desc.decode(&rows).unwrap()[0].to_data(), col.to_data());
    }

    #[test]
    fn negative_zero_and_nan_have_one_key_each() {
        let col: ArrayRef = Arc::new(Float64Array::from(vec![0.0, -0.0, f64::NAN, -f64::NAN]));
        let rows = RowCodec::new(vec![DataType::Float64])
            .unwrap()
            .encode_rows(&[col], 4);
        assert_eq!(rows[0], rows[1]);
        assert_eq!(rows[2], rows[3]);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let codec = RowCodec::new(vec![DataType::Int64, DataType::Utf8]).unwrap();
        assert!(codec.decode(&[vec![PRESENT, 1, 2]]).is_err());
        assert!(codec.decode(&[vec![NULL_LAST, PRESENT, b'a']]).is_err());
    }
}
