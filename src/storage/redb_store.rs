//! The redb implementation of [`Storage`] — eddy's default backend.
//!
//! Why not sled, the backend eddy started with: measured on this project's machines
//! (docs/benchmarks.md, "Storage backends"), sled 0.34 applied batches of 200k small
//! keys at ~190k keys/s and its memory grew to 2 GB after a million such writes; redb
//! commits the same batches durably at ~900k keys/s in 40 MB. Checkpoints write every
//! key that changed, so this is the difference between state writes dominating an epoch
//! and not. sled remains available (`--storage sled`), behind the same trait and tested
//! against the same model.
//!
//! Every `commit` is one redb write transaction with immediate durability (fsync), so
//! `flush` has nothing left to do.

use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};

use super::{KvPairs, Storage, WriteBatch};
use crate::error::{Error, Result};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("eddy");

pub struct RedbStorage {
    db: redb::Database,
    path: std::path::PathBuf,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl RedbStorage {
    /// Open (or create) the store in `dir`. A file redb cannot read gives a clear error
    /// naming it instead of a panic.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("eddy.redb");
        let db = redb::Database::builder()
            .set_cache_size(128 * 1024 * 1024)
            .create(&path)
            .map_err(|e| {
                Error::Storage(format!("cannot open data directory {}: {e}", dir.display()))
            })?;
        // Create the table once, so readers never find it missing.
        let w = db.begin_write().map_err(err)?;
        w.open_table(TABLE).map_err(err)?;
        w.commit().map_err(err)?;
        Ok(Self { db, path })
    }

    fn scan(&self, prefix: &[u8], f: &mut crate::storage::KvVisitor) -> Result<()> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(TABLE).map_err(err)?;
        let range = match prefix_end(prefix) {
            Some(end) => t.range::<&[u8]>(prefix..end.as_slice()).map_err(err)?,
            None => t.range::<&[u8]>(prefix..).map_err(err)?,
        };
        for item in range {
            let (k, v) = item.map_err(err)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }
}

impl Storage for RedbStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(TABLE).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs> {
        let mut out = vec![];
        self.scan(prefix, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    fn for_each_prefix(&self, prefix: &[u8], f: &mut crate::storage::KvVisitor) -> Result<()> {
        self.scan(prefix, f)
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        let w = self.db.begin_write().map_err(err)?;
        {
            let mut t = w.open_table(TABLE).map_err(err)?;
            for prefix in batch.prefixes_to_delete() {
                match prefix_end(prefix) {
                    Some(end) => {
                        t.retain_in::<&[u8], _>(prefix.as_slice()..end.as_slice(), |_, _| false)
                    }
                    None => t.retain_in::<&[u8], _>(prefix.as_slice().., |_, _| false),
                }
                .map_err(err)?;
            }
            for (k, v) in batch.ops() {
                match v {
                    Some(v) => {
                        t.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                    }
                    None => {
                        t.remove(k.as_slice()).map_err(err)?;
                    }
                }
            }
        }
        w.commit().map_err(err)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}
