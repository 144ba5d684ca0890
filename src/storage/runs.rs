//! Sorted runs: how operators' checkpointed state is laid out on disk.
//!
//! A checkpoint used to write every changed entry of an operator's state (a group of an
//! aggregate, a row of a join side) as its own key in the store. Each such key is a
//! B-tree insert with its page copies, and at a checkpoint every second that cost
//! dominated the stateful Nexmark queries. Instead, a checkpoint now writes all the
//! entries one operator changed as **one value**: a run, sorted by key, holding puts and
//! deletes (tombstones). An operator's state is the merge of its runs, newest winning —
//! a small log-structured merge tree inside one key range, in the manner of the LSM
//! engines that RisingWave (Hummock) and Flink (RocksDB) checkpoint into.
//!
//! Runs are merged in tiers (see [`plan_merge`]): whenever [`FANOUT`] runs of a similar
//! size have piled up, they become one, so an operator has O(log n) runs and each entry
//! is rewritten O(log n) times. A merge that reaches the oldest run drops tombstones.
//!
//! Layout of one run: `b"R1"`, then entries in key order, each `u32 key length (LE) |
//! key | u8 kind (1 put, 0 delete) | [u32 value length (LE) | value]`.

use crate::error::{Error, Result};

/// How many runs of one size tier are merged into one.
pub const FANOUT: usize = 4;

const MAGIC: &[u8] = b"R1";
const PUT: u8 = 1;
const DELETE: u8 = 0;

/// The entries one operator writes at one checkpoint, sorted into a run by
/// [`RunBuilder::finish`]. A key written twice keeps its last write.
/// A byte range of [`RunBuilder`]'s buffer: start, end.
type Span = (usize, usize);

#[derive(Default)]
pub struct RunBuilder {
    data: Vec<u8>,
    /// Per entry: where its key starts and ends in `data`, and its value's range
    /// (`None` for a delete).
    entries: Vec<(usize, usize, Option<Span>)>,
}

impl RunBuilder {
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let k = self.data.len();
        self.data.extend_from_slice(key);
        let v = self.data.len();
        self.data.extend_from_slice(value);
        self.entries.push((k, v, Some((v, self.data.len()))));
    }

    pub fn delete(&mut self, key: &[u8]) {
        let k = self.data.len();
        self.data.extend_from_slice(key);
        self.entries.push((k, self.data.len(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The run's bytes: entries sorted by key, the last write of a key winning.
    pub fn finish(self) -> Vec<u8> {
        let data = &self.data;
        // Sort (prefix, entry) pairs: the first 32 bytes of each key as big-endian
        // integers order most keys without touching `data` again (an indirect compare of
        // every pair was a tenth of a join's checkpoint). Ties fall back to the whole
        // keys, then to write order, so equal keys stay in write order and the last one
        // is the newest.
        let mut order: Vec<((u128, u128), usize)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (ks, ke, _))| (key_prefix(&data[*ks..*ke]), i))
            .collect();
        order.sort_unstable_by(|(pa, a), (pb, b)| {
            pa.cmp(pb).then_with(|| {
                let (ka, kb) = (&self.entries[*a], &self.entries[*b]);
                data[ka.0..ka.1]
                    .cmp(&data[kb.0..kb.1])
                    .then_with(|| a.cmp(b))
            })
        });
        let mut out = Vec::with_capacity(MAGIC.len() + data.len() + 9 * self.entries.len());
        out.extend_from_slice(MAGIC);
        for (i, (prefix, idx)) in order.iter().enumerate() {
            let (ks, ke, value) = self.entries[*idx];
            let key = &data[ks..ke];
            // A newer write of the same key follows: this one is superseded. (Keys
            // with different prefixes differ; only equal prefixes need the bytes.)
            if let Some((next_prefix, next)) = order.get(i + 1) {
                let (ns, ne, _) = self.entries[*next];
                if next_prefix == prefix && &data[ns..ne] == key {
                    continue;
                }
            }
            write_entry(&mut out, key, value.map(|(vs, ve)| &data[vs..ve]));
        }
        out
    }
}

/// How many leading key bytes [`key_prefix`] packs into integers.
const PREFIX: usize = 32;

/// The first [`PREFIX`] bytes of `key`, zero-padded, as two big-endian integers. When two
/// prefixes differ they order the keys as the byte strings do; when they are equal the
/// keys may still differ (past the prefix, or by trailing zero bytes), and
/// [`RunBuilder::finish`] compares the whole keys. Two integers, not one: a join's state
/// keys start with its side, the join key's length and the join key, so the first 16
/// bytes alone tie for every row of a key (q7's: every bid of a window).
fn key_prefix(key: &[u8]) -> (u128, u128) {
    let mut b = [0u8; PREFIX];
    let n = key.len().min(PREFIX);
    b[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = b.split_at(PREFIX / 2);
    let int = |half: &[u8]| {
        let mut a = [0u8; PREFIX / 2];
        a.copy_from_slice(half);
        u128::from_be_bytes(a)
    };
    (int(hi), int(lo))
}

fn write_entry(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    match value {
        Some(v) => {
            out.push(PUT);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        None => out.push(DELETE),
    }
}

/// Reads the entries of one run in key order.
pub struct RunCursor<'a> {
    rest: &'a [u8],
}

/// One entry of a run: a key and its value, `None` for a delete.
pub type Entry<'a> = (&'a [u8], Option<&'a [u8]>);

impl<'a> RunCursor<'a> {
    pub fn new(run: &'a [u8]) -> Result<Self> {
        let rest = run
            .strip_prefix(MAGIC)
            .ok_or_else(|| Error::Storage("corrupt state run: bad header".into()))?;
        Ok(Self { rest })
    }

    /// The next entry, or `None` at the end of the run.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = take_len(&mut self.rest)?;
        let kind = take(&mut self.rest, 1)?[0];
        let value = match kind {
            PUT => Some(take_len(&mut self.rest)?),
            DELETE => None,
            _ => return Err(Error::Storage("corrupt state run: bad entry kind".into())),
        };
        Ok(Some((key, value)))
    }
}

fn take<'a>(cur: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if cur.len() < n {
        return Err(Error::Storage("corrupt state run: truncated".into()));
    }
    let (head, rest) = cur.split_at(n);
    *cur = rest;
    Ok(head)
}

fn take_len<'a>(cur: &mut &'a [u8]) -> Result<&'a [u8]> {
    let mut n = [0u8; 4];
    n.copy_from_slice(take(cur, 4)?);
    take(cur, u32::from_le_bytes(n) as usize)
}

/// Merge sorted sources, given oldest first, visiting each key once with its newest
/// entry (a delete is visited as `None`, so that a merge that does not reach the oldest
/// run can keep it).
pub fn merge(
    sources: &mut [RunCursor<'_>],
    f: &mut dyn FnMut(Entry<'_>) -> Result<()>,
) -> Result<()> {
    let mut heads: Vec<Option<Entry<'_>>> = Vec::with_capacity(sources.len());
    for s in sources.iter_mut() {
        heads.push(s.next_entry()?);
    }
    loop {
        // The smallest key among the heads; on a tie the newest source (the highest
        // index) wins and the others skip theirs.
        let mut best: Option<usize> = None;
        for (i, h) in heads.iter().enumerate() {
            let Some((k, _)) = h else { continue };
            best = match best {
                Some(b) if heads[b].is_some_and(|(bk, _)| bk < *k) => Some(b),
                _ => Some(i),
            };
        }
        let Some(b) = best else { return Ok(()) };
        let Some((key, value)) = heads[b] else {
            return Ok(());
        };
        f((key, value))?;
        for (i, h) in heads.iter_mut().enumerate() {
            if h.is_some_and(|(k, _)| k == key) {
                *h = sources[i].next_entry()?;
            }
        }
    }
}

/// Merge `runs` (oldest first) into one run; `bottom`: the merge includes the oldest
/// run of the state, so deletes have nothing left to hide and are dropped.
pub fn merge_runs(runs: &[&[u8]], bottom: bool) -> Result<Vec<u8>> {
    let mut cursors = runs
        .iter()
        .map(|r| RunCursor::new(r))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(runs.iter().map(|r| r.len()).sum());
    out.extend_from_slice(MAGIC);
    merge(&mut cursors, &mut |(k, v)| {
        if v.is_some() || !bottom {
            write_entry(&mut out, k, v);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The size tier of a run: how many times [`FANOUT`] divides its size in 4 KiB pages.
fn tier(bytes: u64) -> u32 {
    let mut t = 0;
    let mut s = bytes / 4096;
    while s >= FANOUT as u64 {
        s /= FANOUT as u64;
        t += 1;
    }
    t
}

/// Which runs (sizes in bytes, oldest first) to merge now, if any: once the newest runs
/// hold [`FANOUT`] runs of the newest run's tier, they are merged together with the
/// smaller runs among them and below them. Returns the index of the first run to merge
/// (the merge takes it and every newer run); call again after merging, since the merged
/// run may complete a tier of its own.
pub fn plan_merge(sizes: &[u64]) -> Option<usize> {
    let t = tier(*sizes.last()?);
    let mut start = sizes.len();
    let mut full = 0;
    while start > 0 && tier(sizes[start - 1]) <= t {
        start -= 1;
        full += usize::from(tier(sizes[start]) == t);
    }
    (full >= FANOUT).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(run: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut c = RunCursor::new(run).unwrap();
        let mut out = vec![];
        while let Some((k, v)) = c.next_entry().unwrap() {
            out.push((k.to_vec(), v.map(<[u8]>::to_vec)));
        }
        out
    }

    #[test]
    fn a_run_is_sorted_and_keeps_the_last_write_of_a_key() {
        let mut b = RunBuilder::default();
        b.put(b"b", b"1");
        b.put(b"a", b"2");
        b.delete(b"c");
        b.put(b"b", b"3");
        let run = b.finish();
        assert_eq!(
            entries(&run),
            vec![
                (b"a".to_vec(), Some(b"2".to_vec())),
                (b"b".to_vec(), Some(b"3".to_vec())),
                (b"c".to_vec(), None),
            ]
        );
    }

    /// Keys that tie on the sort prefix (trailing zeros, a shared long start) still come
    /// out in byte order, and the last write of each key wins.
    #[test]
    fn keys_that_share_the_sort_prefix_are_ordered_by_their_bytes() {
        let long = |tail: &[u8]| [&[7u8; 40][..], tail].concat();
        let keys: Vec<Vec<u8>> = vec![
            b"ab\0".to_vec(),
            b"ab".to_vec(),
            b"ab\0\0".to_vec(),
            long(b"z"),
            long(b""),
            long(b"a\0"),
            long(b"a"),
            [&[7u8; 20][..], b"b"].concat(),
            [&[7u8; 20][..], b"a\0"].concat(),
            vec![7u8; 20],
            vec![],
            vec![0],
        ];
        let mut b = RunBuilder::default();
        for (i, k) in keys.iter().enumerate() {
            b.put(k, &[i as u8]);
        }
        // Written again: the later value must win.
        b.put(b"ab", b"last");
        b.delete(&long(b"a"));
        let got = entries(&b.finish());
        let mut want: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), Some(vec![i as u8])))
            .collect();
        want.sort();
        for (k, v) in &mut want {
            if k == b"ab" {
                *v = Some(b"last".to_vec());
            }
            if *k == long(b"a") {
                *v = None;
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn merging_keeps_the_newest_entry_and_drops_deletes_at_the_bottom() {
        let mut old = RunBuilder::default();
        old.put(b"a", b"old");
        old.put(b"b", b"old");
        old.put(b"d", b"old");
        let mut new = RunBuilder::default();
        new.put(b"a", b"new");
        new.delete(b"b");
        new.put(b"c", b"new");
        let (old, new) = (old.finish(), new.finish());
        let merged = merge_runs(&[&old, &new], true).unwrap();
        assert_eq!(
            entries(&merged),
            vec![
                (b"a".to_vec(), Some(b"new".to_vec())),
                (b"c".to_vec(), Some(b"new".to_vec())),
                (b"d".to_vec(), Some(b"old".to_vec())),
            ]
        );
        // Above an older run, a delete must survive the merge.
        let kept = merge_runs(&[&new], false).unwrap();
        assert!(entries(&kept).contains(&(b"b".to_vec(), None)));
    }

    #[test]
    fn runs_are_merged_in_tiers() {
        // Fewer than FANOUT runs: nothing to do.
        assert_eq!(plan_merge(&[10, 10, 10]), None);
        // FANOUT small runs: merged.
        assert_eq!(plan_merge(&[10, 10, 10, 10]), Some(0));
        // A big old run stays while small ones pile up above it.
        let big = 4096 * 1024;
        assert_eq!(plan_merge(&[big, 10, 10, 10]), None);
        assert_eq!(plan_merge(&[big, 10, 10, 10, 10]), Some(1));
        // Runs that grew into the big one's tier join it.
        assert_eq!(plan_merge(&[big, big, big, big]), Some(0));
        // A small old run below bigger ones is taken along once they merge.
        assert_eq!(plan_merge(&[10, big, big, big]), None);
        assert_eq!(plan_merge(&[10, big, big, big, big]), Some(0));
    }

    #[test]
    fn a_corrupt_run_is_an_error_not_a_panic() {
        assert!(RunCursor::new(b"XX").is_err());
        let mut c = RunCursor::new(b"R1\x05\x00\x00\x00ab").unwrap();
        assert!(c.next_entry().is_err());
    }
}
