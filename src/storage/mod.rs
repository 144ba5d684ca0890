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
pub mod rowcodec;
pub mod sled_store;

use crate::error::Result;

pub use memory::MemoryStorage;
pub use sled_store::SledStorage;

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

/// An ordered key-value store with atomic batches. Deliberately small (in the spirit
/// of toydb's `storage::Engine`): anything richer is built on top in eddy's own code.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<KvPairs>;
    /// Visit pairs whose key starts with `prefix`, in key order, without collecting them.
    fn for_each_prefix(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()>;
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
