//! Read-only snapshots of relations, published together after each epoch.
//!
//! The runtime replaces the whole [`DatabaseSnapshot`] at the end of an epoch; a reader
//! takes the current one (an `Arc` clone) and sees every relation as of the same epoch.
//! Decoding a snapshot into Arrow batches happens lazily, on the reader's thread, once
//! per snapshot.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use parking_lot::RwLock;

use super::row_store::{RowMap, CHUNK};
use crate::error::{Error, Result};
use crate::storage::rowcodec::RowCodec;

/// The data behind a relation snapshot.
#[derive(Clone)]
pub enum SnapshotData {
    /// Keyed rows with multiplicities (tables and views).
    Rows {
        codec: Arc<RowCodec>,
        key_codec: Option<Arc<RowCodec>>,
        map: RowMap,
    },
    /// Append-only batches held in memory.
    Batches(imbl::Vector<RecordBatch>),
    /// A stream's rows, read from storage when the snapshot is first read.
    Stored(super::stream::StoredRows),
}

/// One relation as of one epoch.
pub struct RelationSnapshot {
    pub schema: SchemaRef,
    data: SnapshotData,
    decoded: OnceLock<std::result::Result<Arc<Vec<RecordBatch>>, Error>>,
    /// Set when an operator of the relation (or upstream of it) failed: its contents
    /// are stale, and reading them is an error rather than a silent old answer.
    failure: Option<String>,
}

impl RelationSnapshot {
    pub fn new(schema: SchemaRef, data: SnapshotData) -> Self {
        Self {
            schema,
            data,
            decoded: OnceLock::new(),
            failure: None,
        }
    }

    /// Mark the snapshot as stale because an operator failed (`why`).
    pub fn with_failure(mut self, why: String) -> Self {
        self.failure = Some(why);
        self
    }

    pub fn empty(schema: SchemaRef) -> Self {
        Self::new(schema, SnapshotData::Batches(imbl::Vector::new()))
    }

    pub fn data(&self) -> &SnapshotData {
        &self.data
    }

    /// Number of rows (counting duplicates).
    pub fn num_rows(&self) -> usize {
        match &self.data {
            SnapshotData::Rows { map, .. } => map.values().map(|v| v.count.max(0) as usize).sum(),
            SnapshotData::Batches(b) => b.iter().map(|b| b.num_rows()).sum(),
            SnapshotData::Stored(s) => s.num_rows(),
        }
    }

    /// The contents as Arrow batches (decoded once, then shared).
    pub fn batches(&self) -> Result<Arc<Vec<RecordBatch>>> {
        self.ensure_fresh()?;
        self.decoded.get_or_init(|| self.decode()).clone()
    }

    /// An error when the relation is stale (an operator of it, or upstream, failed).
    pub fn ensure_fresh(&self) -> Result<()> {
        match &self.failure {
            Some(why) => Err(Error::internal(format!(
                "this relation stopped updating after an operator failed ({why}); \
                 its contents are stale — drop and re-create it (EXPLAIN shows the operator)"
            ))),
            None => Ok(()),
        }
    }

    fn decode(&self) -> Result<Arc<Vec<RecordBatch>>> {
        match &self.data {
            SnapshotData::Batches(b) => Ok(Arc::new(b.iter().cloned().collect())),
            SnapshotData::Stored(s) => Ok(Arc::new(s.read()?)),
            SnapshotData::Rows { codec, map, .. } => {
                let mut out = vec![];
                let mut chunk: Vec<Bytes> = Vec::with_capacity(CHUNK.min(map.len()));
                for v in map.values() {
                    for _ in 0..v.count.max(0) {
                        chunk.push(v.row.clone());
                    }
                    if chunk.len() >= CHUNK {
                        out.push(self.decode_rows(codec, &chunk)?);
                        chunk.clear();
                    }
                }
                if !chunk.is_empty() {
                    out.push(self.decode_rows(codec, &chunk)?);
                }
                Ok(Arc::new(out))
            }
        }
    }

    fn decode_rows(&self, codec: &RowCodec, rows: &[Bytes]) -> Result<RecordBatch> {
        let cols = codec.decode(rows)?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?)
    }

    /// Look a row up by its encoded primary key (keyed tables only).
    pub fn get_by_key(&self, key: &[u8]) -> Option<Bytes> {
        match &self.data {
            SnapshotData::Rows {
                key_codec: Some(_),
                map,
                ..
            } => map.get(key).map(|v| v.row.clone()),
            _ => None,
        }
    }

    /// The rows with the given primary keys (keyed tables only; missing keys are
    /// skipped).
    pub fn lookup(&self, keys: &[Vec<datafusion::common::ScalarValue>]) -> Result<RecordBatch> {
        let SnapshotData::Rows {
            codec,
            key_codec: Some(kc),
            map,
        } = &self.data
        else {
            return Err(Error::internal(
                "key lookup on a relation without a primary key",
            ));
        };
        let mut cols = vec![];
        for c in 0..kc.num_columns() {
            let vals = keys.iter().map(|k| k[c].clone());
            cols.push(datafusion::common::ScalarValue::iter_to_array(vals)?);
        }
        let encoded = if keys.is_empty() {
            vec![]
        } else {
            kc.encode_rows(&cols, keys.len())
        };
        let rows: Vec<Bytes> = encoded
            .iter()
            .filter_map(|k| map.get(k.as_slice()).map(|v| v.row.clone()))
            .collect();
        self.decode_rows(codec, &rows)
    }

    pub fn key_codec(&self) -> Option<&Arc<RowCodec>> {
        match &self.data {
            SnapshotData::Rows { key_codec, .. } => key_codec.as_ref(),
            _ => None,
        }
    }
}

/// Every relation as of one epoch.
#[derive(Clone, Default)]
pub struct DatabaseSnapshot {
    pub epoch: u64,
    pub relations: HashMap<u32, Arc<RelationSnapshot>>,
}

impl DatabaseSnapshot {
    pub fn get(&self, object_id: u32) -> Option<&Arc<RelationSnapshot>> {
        self.relations.get(&object_id)
    }
}

/// The latest published [`DatabaseSnapshot`], shared by the runtime (writer) and
/// sessions (readers).
#[derive(Default)]
pub struct SnapshotStore {
    current: RwLock<Arc<DatabaseSnapshot>>,
}

impl SnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn current(&self) -> Arc<DatabaseSnapshot> {
        self.current.read().clone()
    }

    pub fn publish(&self, snapshot: DatabaseSnapshot) {
        *self.current.write() = Arc::new(snapshot);
    }
}
