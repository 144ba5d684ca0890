//! The sled implementation of [`Storage`]: one tree, atomic batches, explicit fsync.

use std::path::Path;

use super::{KvPairs, Storage, WriteBatch};
use crate::error::{Error, Result};

pub struct SledStorage {
    db: sled::Db,
}

impl SledStorage {
    /// Open (or create) the store in `dir`. A directory that sled cannot read gives a
    /// clear error naming the directory instead of a panic.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let db = sled::Config::new()
            .path(dir.join("state"))
            // sled's own background flush stays on as a backstop; durability points are
            // explicit `flush()` calls made by the runtime after each commit it acknowledges.
            .flush_every_ms(Some(1000))
            .cache_capacity(256 * 1024 * 1024)
            .open()
            .map_err(|e| {
                Error::Storage(format!("cannot open data directory {}: {e}", dir.display()))
            })?;
        Ok(Self { db })
    }
}

impl Storage for SledStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs> {
        let mut out = vec![];
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn for_each_prefix(&self, prefix: &[u8], f: &mut crate::storage::KvVisitor) -> Result<()> {
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn commit(&self, batch: WriteBatch) -> Result<()> {
        let mut b = sled::Batch::default();
        // sled batches have no range delete: expand prefixes into point deletes. The
        // point writes come after, so a prefix delete followed by a put keeps the put.
        for prefix in batch.prefixes_to_delete() {
            for k in self.db.scan_prefix(prefix).keys() {
                b.remove(k?);
            }
        }
        for (k, v) in batch.ops() {
            match v {
                Some(v) => b.insert(k.as_slice(), v.as_slice()),
                None => b.remove(k.as_slice()),
            }
        }
        self.db.apply_batch(b)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
