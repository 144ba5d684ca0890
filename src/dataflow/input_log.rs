//! The input log: every epoch's writes to embedded tables and streams, kept durably
//! until the next checkpoint covers them.
//!
//! An epoch commits its *inputs* (one key, `l/<epoch>`) and flushes before anyone is
//! told it happened; the state those inputs produce in every operator is written only
//! at checkpoints. After a crash, eddy loads the state of the last checkpoint and
//! replays the logged epochs after it — the same inputs, in the same order, with the
//! same epoch numbers — so every view ends up exactly where it was. (For Kafka sources
//! the topic itself plays this role: the checkpoint stores offsets.)

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use super::watermark::SourceTime;
use super::ChangeBatch;
use crate::error::{Error, Result};
use crate::storage::keys;

const DIFF_COLUMN: &str = "__eddy_diff";

/// The key of an epoch's log entry; epochs sort in key order.
pub fn entry_key(epoch: u64) -> Vec<u8> {
    let mut k = keys::LOG_PREFIX.to_vec();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// The epoch of a log key.
pub fn epoch_of(key: &[u8]) -> Result<u64> {
    let raw = key
        .strip_prefix(keys::LOG_PREFIX)
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .ok_or_else(|| Error::Storage("corrupt input log key".into()))?;
    Ok(u64::from_be_bytes(raw))
}

/// Encode one epoch's writes: `(object id, changes)` in the order they were applied.
pub fn encode(writes: &[(u32, ChangeBatch)]) -> Result<Vec<u8>> {
    encode_entry(writes, &[], &[])
}

/// Encode one epoch's writes, the watermarks it raised and the relations written that
/// keep the epoch's rows themselves (streams: their chunk of the epoch is the log).
/// Both lists are trailers after the writes; entries without them decode with none.
pub fn encode_entry(
    writes: &[(u32, ChangeBatch)],
    watermarks: &[(u32, SourceTime)],
    in_state: &[u32],
) -> Result<Vec<u8>> {
    let mut out = encode_writes(writes)?;
    if !watermarks.is_empty() || !in_state.is_empty() {
        out.extend_from_slice(&(watermarks.len() as u32).to_le_bytes());
        for (object_id, t) in watermarks {
            out.extend_from_slice(&object_id.to_le_bytes());
            out.push(t.watermark.is_some() as u8);
            out.extend_from_slice(&t.watermark.unwrap_or(0).to_le_bytes());
            out.extend_from_slice(&t.late_rows.to_le_bytes());
        }
    }
    if !in_state.is_empty() {
        out.extend_from_slice(&(in_state.len() as u32).to_le_bytes());
        for object_id in in_state {
            out.extend_from_slice(&object_id.to_le_bytes());
        }
    }
    Ok(out)
}

fn encode_writes(writes: &[(u32, ChangeBatch)]) -> Result<Vec<u8>> {
    let size: usize = writes
        .iter()
        .map(|(_, c)| c.data.get_array_memory_size() + c.num_rows() * 8 + 4096)
        .sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for (object_id, changes) in writes {
        let mut fields: Vec<Field> = changes
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
        let schema = Arc::new(Schema::new(fields));
        let mut cols = changes.columns().to_vec();
        cols.push(Arc::new(changes.diffs.clone()));
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(changes.num_rows())),
        )?;
        // The IPC stream goes straight into `out`, after a length filled in below.
        out.extend_from_slice(&object_id.to_le_bytes());
        let len_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        {
            let mut w = StreamWriter::try_new(&mut out, &schema)?;
            w.write(&batch)?;
            w.finish()?;
        }
        let len = (out.len() - len_at - 8) as u64;
        out[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
    }
    Ok(out)
}

/// Decode an entry written by [`encode`] (its writes; the trailers are ignored).
pub fn decode(bytes: &[u8]) -> Result<Vec<(u32, ChangeBatch)>> {
    Ok(decode_entry(bytes)?.writes)
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if bytes.len() < n {
        return Err(Error::Storage("corrupt input log entry".into()));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

/// One epoch's log entry.
pub struct Entry {
    /// Writes, in the order they were applied.
    pub writes: Vec<(u32, ChangeBatch)>,
    /// The watermarks the epoch raised.
    pub watermarks: Vec<(u32, SourceTime)>,
    /// Relations written whose rows of the epoch are in their own state.
    pub in_state: Vec<u32>,
}

/// Decode an entry written by [`encode_entry`].
pub fn decode_entry(mut bytes: &[u8]) -> Result<Entry> {
    let bad = || Error::Storage("corrupt input log entry".into());
    let count = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| bad())?);
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let object_id = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| bad())?);
        let len = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().map_err(|_| bad())?) as usize;
        let ipc = take(&mut bytes, len)?;
        for batch in StreamReader::try_new(Cursor::new(ipc), None)? {
            let batch = batch?;
            let n = batch.num_columns();
            if n == 0 {
                return Err(bad());
            }
            let diffs = batch
                .column(n - 1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(bad)?;
            let schema = Arc::new(Schema::new(batch.schema().fields()[..n - 1].to_vec()));
            let data = RecordBatch::try_new_with_options(
                schema,
                batch.columns()[..n - 1].to_vec(),
                &datafusion::arrow::array::RecordBatchOptions::new()
                    .with_row_count(Some(diffs.len())),
            )?;
            out.push((object_id, ChangeBatch::new(data, diffs)));
        }
    }
    let mut watermarks = vec![];
    if !bytes.is_empty() {
        let n = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| bad())?);
        for _ in 0..n {
            let object_id = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| bad())?);
            let has = take(&mut bytes, 1)?[0] != 0;
            let wm = i64::from_le_bytes(take(&mut bytes, 8)?.try_into().map_err(|_| bad())?);
            let late_rows = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().map_err(|_| bad())?);
            watermarks.push((
                object_id,
                SourceTime {
                    watermark: has.then_some(wm),
                    late_rows,
                },
            ));
        }
    }
    let mut in_state = vec![];
    if !bytes.is_empty() {
        let n = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().map_err(|_| bad())?);
        for _ in 0..n {
            in_state.push(u32::from_le_bytes(
                take(&mut bytes, 4)?.try_into().map_err(|_| bad())?,
            ));
        }
    }
    Ok(Entry {
        writes: out,
        watermarks,
        in_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;

    #[test]
    fn log_entries_roundtrip_with_their_multiplicities() {
        let s = schema(&[("k", I64), ("v", STR)]);
        let writes = vec![
            (7, changes(&s, "1 a +1\n2 NULL -1")),
            (9, changes(&s, "3 c +2")),
        ];
        let back = decode(&encode(&writes).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, 7);
        assert_eq!(back[0].1.to_sorted_strings(), vec!["1 a +1", "2 NULL -1"]);
        assert_eq!(back[1].1.to_sorted_strings(), vec!["3 c +2"]);
        assert!(decode(&[1, 0, 0]).is_err());
        // With the watermarks the epoch raised.
        let t = SourceTime {
            watermark: Some(-5),
            late_rows: 3,
        };
        let none = SourceTime::default();
        let e = decode_entry(&encode_entry(&writes, &[(7, t), (9, none)], &[]).unwrap()).unwrap();
        assert_eq!(e.writes.len(), 2);
        assert_eq!(e.watermarks, vec![(7, t), (9, none)]);
        assert!(e.in_state.is_empty());
        let e = decode_entry(&encode_entry(&[], &[(7, t)], &[]).unwrap()).unwrap();
        assert!(e.writes.is_empty());
        assert_eq!(e.watermarks, vec![(7, t)]);
        // Streams written in the epoch, with and without watermarks.
        let e = decode_entry(&encode_entry(&writes, &[], &[3, 4]).unwrap()).unwrap();
        assert_eq!((e.writes.len(), e.watermarks.len()), (2, 0));
        assert_eq!(e.in_state, vec![3, 4]);
        let e = decode_entry(&encode_entry(&[], &[(7, t)], &[3]).unwrap()).unwrap();
        assert_eq!((e.watermarks, e.in_state), (vec![(7, t)], vec![3]));
        assert!(decode_entry(&[0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert_eq!(epoch_of(&entry_key(42)).unwrap(), 42);
    }
}
