//! Durable state: a minimal ordered key-value trait, its sled and in-memory
//! implementations, and the order-preserving row encoding every layer above uses for
//! keys and rows.
//!
//! Everything eddy persists — the catalog, the rows of embedded tables and streams,
//! operator state, the epoch — goes through [`Storage`], so the backend can be swapped.
//! A [`WriteBatch`] is applied atomically: the dataflow runtime writes one batch per
//! checkpoint, so state and the inputs it reflects are always committed together.

pub mod keys;
pub mod memory;
pub mod redb_store;
pub mod rowcodec;
pub mod runs;
pub mod sled_store;

use crate::error::Result;

pub use memory::MemoryStorage;
pub use redb_store::RedbStorage;
pub use sled_store::SledStorage;

/// Which on-disk engine backs a data directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageEngine {
    /// redb: the default (see `redb_store` for why).
    #[default]
    Redb,
    Sled,
}

impl std::str::FromStr for StorageEngine {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "redb" => Ok(StorageEngine::Redb),
            "sled" => Ok(StorageEngine::Sled),
            other => Err(format!(
                "unknown storage engine {other:?}: use redb or sled"
            )),
        }
    }
}

/// Open the engine's store in `dir`.
pub fn open(engine: StorageEngine, dir: &std::path::Path) -> Result<std::sync::Arc<dyn Storage>> {
    Ok(match engine {
        StorageEngine::Redb => std::sync::Arc::new(RedbStorage::open(dir)?),
        StorageEngine::Sled => std::sync::Arc::new(SledStorage::open(dir)?),
    })
}

/// A set of writes applied atomically by [`Storage::commit`].
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    delete_prefixes: Vec<Vec<u8>>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Delete every key starting with `prefix` (applied before the point writes).
    pub fn delete_prefix(&mut self, prefix: impl Into<Vec<u8>>) {
        self.delete_prefixes.push(prefix.into());
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.delete_prefixes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Approximate bytes written by this batch.
    pub fn size_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum()
    }

    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }

    pub fn prefixes_to_delete(&self) -> &[Vec<u8>] {
        &self.delete_prefixes
    }

    /// Append all of `other`'s writes after this batch's.
    pub fn extend(&mut self, other: WriteBatch) {
        self.delete_prefixes.extend(other.delete_prefixes);
        self.ops.extend(other.ops);
    }
}

/// Key/value pairs returned by a scan, in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A callback visiting `(key, value)` pairs of a scan.
pub type KvVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// An ordered key-value store with atomic batches. Deliberately small (in the spirit
/// of toydb's `storage::Engine`): anything richer is built on top in eddy's own code.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs>;
    /// Visit pairs whose key starts with `prefix`, in key order, without collecting them.
    fn for_each_prefix(&self, prefix: &[u8], f: &mut KvVisitor) -> Result<()>;
    /// Apply every write of `batch` atomically: after a crash either all or none is there.
    fn commit(&self, batch: WriteBatch) -> Result<()>;
    /// Make every committed batch durable (fsync).
    fn flush(&self) -> Result<()>;
    /// Bytes used on disk (0 for memory).
    fn size_on_disk(&self) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same script run against both engines must give the same answers: the
    /// memory engine is the model the sled engine is checked against.
    fn exercise(s: &dyn Storage) -> Vec<String> {
        let mut log = vec![];
        let mut b = WriteBatch::new();
        b.put(b"a/1".to_vec(), b"x".to_vec());
        b.put(b"a/2".to_vec(), b"y".to_vec());
        b.put(b"b/1".to_vec(), b"z".to_vec());
        s.commit(b).unwrap();
        log.push(format!("{:?}", s.get(b"a/1").unwrap()));
        log.push(format!("{:?}", s.scan_prefix(b"a/").unwrap()));
        let mut b = WriteBatch::new();
        b.delete(b"a/1".to_vec());
        b.put(b"a/3".to_vec(), b"w".to_vec());
        s.commit(b).unwrap();
        log.push(format!("{:?}", s.scan_prefix(b"a/").unwrap()));
        let mut b = WriteBatch::new();
        b.delete_prefix(b"a/".to_vec());
        b.put(b"a/9".to_vec(), b"new".to_vec());
        s.commit(b).unwrap();
        log.push(format!("{:?}", s.scan_prefix(b"").unwrap()));
        let mut n = 0;
        s.for_each_prefix(b"b", &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        log.push(n.to_string());
        log
    }

    #[test]
    fn sled_and_memory_engines_agree() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStorage::open(dir.path()).unwrap();
        let mem = MemoryStorage::new();
        assert_eq!(exercise(&sled), exercise(&mem));
    }

    #[test]
    fn redb_and_memory_engines_agree() {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStorage::open(dir.path()).unwrap();
        let mem = MemoryStorage::new();
        assert_eq!(exercise(&redb), exercise(&mem));
        // Prefixes ending in 0xFF have no simple upper bound.
        let mut b = WriteBatch::new();
        b.put(vec![b'x', 0xFF, 1], b"1".to_vec());
        b.put(vec![b'x', 0xFF], b"2".to_vec());
        b.put(vec![b'y'], b"3".to_vec());
        redb.commit(b).unwrap();
        assert_eq!(redb.scan_prefix(&[b'x', 0xFF]).unwrap().len(), 2);
        let mut b = WriteBatch::new();
        b.delete_prefix(vec![b'x', 0xFF]);
        redb.commit(b).unwrap();
        assert_eq!(redb.scan_prefix(b"").unwrap().len(), 1 + exercise_len(&mem));
    }

    fn exercise_len(s: &dyn Storage) -> usize {
        s.scan_prefix(b"").unwrap().len()
    }

    #[test]
    fn redb_commit_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RedbStorage::open(dir.path()).unwrap();
            let mut b = WriteBatch::new();
            b.put(b"k".to_vec(), b"v".to_vec());
            s.commit(b).unwrap();
        }
        let s = RedbStorage::open(dir.path()).unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn sled_commit_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            let mut b = WriteBatch::new();
            b.put(b"k".to_vec(), b"v".to_vec());
            s.commit(b).unwrap();
            s.flush().unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    }
}
