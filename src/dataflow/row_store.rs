//! [`RowStore`]: the contents of a keyed relation — a table by primary key, or a view
//! as a multiset of rows — shared by the table and materialize operators.
//!
//! Contents live in a persistent ordered map (`imbl::OrdMap`), so publishing a snapshot
//! after an epoch is an O(1) clone and readers never block the dataflow thread. Keys that
//! change are remembered until the next checkpoint writes them to storage.

use hashbrown::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use imbl::OrdMap;

use super::snapshot::{RelationSnapshot, SnapshotData};
use super::{ChangeBatch, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::rowcodec::RowCodec;

/// A row and how many copies of it are present.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRow {
    pub row: Bytes,
    pub count: i64,
}

pub type RowMap = OrdMap<Bytes, StoredRow>;

/// Rows of one relation, keyed either by a primary key or by the whole row.
#[derive(Clone)]
pub struct RowStore {
    schema: SchemaRef,
    row_codec: Arc<RowCodec>,
    /// Primary-key column indices; `None` keys each row by its full encoding (a multiset).
    key_columns: Option<Vec<usize>>,
    key_codec: Option<Arc<RowCodec>>,
    map: RowMap,
    /// Keys changed since the last checkpoint, each with whether storage has it: its
    /// presence in `map` when first changed, since storage holds `map` as of the last
    /// checkpoint. A key that comes and goes in between writes nothing.
    dirty: HashMap<Bytes, bool>,
}

impl RowStore {
    pub fn new(schema: SchemaRef, key_columns: Option<Vec<usize>>) -> Result<Self> {
        let types = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let row_codec = Arc::new(RowCodec::new(types)?);
        let key_codec = match &key_columns {
            Some(cols) => Some(Arc::new(RowCodec::new(
                cols.iter()
                    .map(|c| schema.field(*c).data_type().clone())
                    .collect(),
            )?)),
            None => None,
        };
        Ok(Self {
            schema,
            row_codec,
            key_columns,
            key_codec,
            map: OrdMap::new(),
            dirty: HashMap::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn row_codec(&self) -> &Arc<RowCodec> {
        &self.row_codec
    }

    pub fn key_codec(&self) -> Option<&Arc<RowCodec>> {
        self.key_codec.as_ref()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn map(&self) -> &RowMap {
        &self.map
    }

    /// Encode the rows of `batch` and their keys.
    pub fn encode(&self, batch: &RecordBatch) -> (Vec<Bytes>, Vec<Bytes>) {
        let n = batch.num_rows();
        let rows: Vec<Bytes> = self
            .row_codec
            .encode_rows(batch.columns(), n)
            .into_iter()
            .map(Bytes::from)
            .collect();
        let keys = match (&self.key_columns, &self.key_codec) {
            (Some(cols), Some(codec)) => {
                let key_cols: Vec<_> = cols.iter().map(|c| batch.column(*c).clone()).collect();
                codec
                    .encode_rows(&key_cols, n)
                    .into_iter()
                    .map(Bytes::from)
                    .collect()
            }
            _ => rows.clone(),
        };
        (keys, rows)
    }

    /// Apply one change; returns the count of the row before the change.
    pub fn apply(&mut self, key: Bytes, row: Bytes, diff: i64) -> Result<i64> {
        let mut present = false;
        let old = match self.map.get_mut(&key) {
            Some(existing) => {
                if existing.row != row {
                    // Only possible for keyed tables: a second row under a key that is
                    // still present, or a retraction of a row that is not there.
                    return Err(Error::internal(format!(
                        "change to key {:?} does not match the stored row",
                        key.as_ref()
                    )));
                }
                present = true;
                let old = existing.count;
                existing.count += diff;
                if existing.count == 0 {
                    self.map.remove(&key);
                }
                old
            }
            None => {
                if diff != 0 {
                    self.map.insert(key.clone(), StoredRow { row, count: diff });
                }
                0
            }
        };
        self.dirty.entry(key).or_insert(present);
        Ok(old)
    }

    /// Apply every change of `batch`.
    pub fn apply_batch(&mut self, batch: &ChangeBatch) -> Result<()> {
        let (keys, rows) = self.encode(&batch.data);
        for ((k, r), d) in keys.into_iter().zip(rows).zip(batch.diffs.values().iter()) {
            self.apply(k, r, *d)?;
        }
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Option<&StoredRow> {
        self.map.get(key)
    }

    /// Decode `rows` (with multiplicities) into a change batch.
    pub fn decode(&self, rows: &[(Bytes, i64)]) -> Result<ChangeBatch> {
        let bytes: Vec<&[u8]> = rows.iter().map(|(r, _)| r.as_ref()).collect();
        let cols = self.row_codec.decode(&bytes)?;
        let data = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        let diffs = Int64Array::from(rows.iter().map(|(_, d)| *d).collect::<Vec<_>>());
        Ok(ChangeBatch::new(data, diffs))
    }

    /// All rows as insertions, in chunks.
    pub fn contents(&self) -> Result<Vec<ChangeBatch>> {
        let mut out = vec![];
        let mut chunk: Vec<(Bytes, i64)> = Vec::with_capacity(CHUNK);
        for v in self.map.values() {
            chunk.push((v.row.clone(), v.count));
            if chunk.len() == CHUNK {
                out.push(self.decode(&chunk)?);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            out.push(self.decode(&chunk)?);
        }
        Ok(out)
    }

    pub fn snapshot(&self) -> RelationSnapshot {
        RelationSnapshot::new(
            self.schema.clone(),
            SnapshotData::Rows {
                codec: self.row_codec.clone(),
                key_codec: self.key_codec.clone(),
                map: self.map.clone(),
            },
        )
    }

    /// Write every key changed since the last checkpoint.
    pub fn checkpoint(&mut self, state: &mut StateWriter) {
        let keyed = self.key_columns.is_some();
        for (key, stored) in self.dirty.drain() {
            match self.map.get(&key) {
                Some(v) => {
                    let mut value = v.count.to_le_bytes().to_vec();
                    if keyed {
                        value.extend_from_slice(&v.row);
                    }
                    state.put(&key, &value);
                }
                None if stored => state.delete(&key),
                None => {}
            }
        }
    }

    pub fn restore(&mut self, state: &StateReader) -> Result<()> {
        let keyed = self.key_columns.is_some();
        let mut map = OrdMap::new();
        state.for_each(&mut |k, v| {
            if v.len() < 8 {
                return Err(Error::Storage("corrupt relation row: short value".into()));
            }
            let mut c = [0u8; 8];
            c.copy_from_slice(&v[..8]);
            let key = Bytes::copy_from_slice(k);
            let row = if keyed {
                Bytes::copy_from_slice(&v[8..])
            } else {
                key.clone()
            };
            map.insert(
                key,
                StoredRow {
                    row,
                    count: i64::from_le_bytes(c),
                },
            );
            Ok(())
        })?;
        self.map = map;
        self.dirty.clear();
        Ok(())
    }
}

/// Rows per decoded batch.
pub const CHUNK: usize = 8192;
