//! The incremental engine: operators over change batches, run epoch by epoch.
//!
//! This module knows Arrow, not SQL. The planner (`crate::plan`) builds operators from a
//! DataFusion plan; the [`runtime`] runs them on one thread, one epoch at a time.
//!
//! The shared words:
//! - a **change** is a row with a signed multiplicity ([`ChangeBatch`]);
//! - an **epoch** is a set of input changes applied together: every operator sees all of
//!   an epoch's input before the epoch's results are published, so readers never see a
//!   half-applied epoch;
//! - a **relation** is a node whose contents users can read: a table, a stream or a
//!   materialized view. It publishes a [`snapshot::RelationSnapshot`] after each epoch;
//! - **state** is what an operator remembers between epochs. Operators keep it in memory
//!   and write what changed to storage at each checkpoint ([`StateWriter`]), in the same
//!   atomic commit as everything else of that epoch.
//!
//! The operator catalogue is the file listing: `filter`, `project`, `hash_agg`,
//! `hash_join`, `union`, `top_n`, `values`, `window` (emit on window close, retention),
//! `session` (SESSION windows),
//! and the relation operators `table`, `stream`, `materialize`. `watermark` tracks event
//! time where rows enter; operators that act on it say so with
//! [`Operator::wants_watermark`].

pub mod accumulators;
pub mod changes;
pub mod expr;
pub mod filter;
pub mod hash_agg;
pub mod hash_join;
pub mod input_log;
pub mod materialize;
pub mod project;
pub mod row_store;
pub mod runtime;
pub mod session;
pub mod snapshot;
pub mod stream;
pub mod subscribe;
pub mod table;
pub mod top_n;
pub mod union;
pub mod values;
pub mod watermark;
pub mod window;

#[cfg(test)]
pub mod testing;

use datafusion::arrow::datatypes::SchemaRef;

pub use changes::ChangeBatch;

use crate::error::Result;
use crate::storage::runs::RunBuilder;
use crate::storage::{keys, Storage, WriteBatch};

/// Where an operator's output goes: a list the runtime routes downstream.
pub type Output = Vec<ChangeBatch>;

/// One incremental operator. Only [`Operator::process`] is required; the other hooks
/// default to nothing (in the manner of Arroyo's operator trait).
pub trait Operator: Send {
    /// The operator's type name, e.g. `HashAggOperator` (same stem as its plan node).
    fn name(&self) -> &'static str;

    /// One line of detail for EXPLAIN: keys, expressions, join type...
    fn describe(&self) -> String {
        String::new()
    }

    /// What state the operator keeps, for EXPLAIN (`None` = stateless).
    fn state_description(&self) -> Option<String> {
        None
    }

    /// The schema of the rows this operator emits.
    fn output_schema(&self) -> SchemaRef;

    /// Apply changes arriving on input `port`, pushing any output to `out`.
    fn process(&mut self, port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()>;

    /// Called once at the end of each epoch in which this operator received input:
    /// operators that consolidate (aggregates, views) emit their net changes here.
    fn end_epoch(&mut self, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Write the state that changed since the last checkpoint.
    fn checkpoint(&mut self, _state: &mut StateWriter) -> Result<()> {
        Ok(())
    }

    /// Load state written by earlier checkpoints (called once, before any input).
    fn restore(&mut self, _state: &StateReader) -> Result<()> {
        Ok(())
    }

    /// The storage this operator's state lives in and its state id: called at install
    /// for every relation that is checkpointed (not for a subscription's query). An
    /// operator that reads its state back while running (a stream, whose rows stay on
    /// disk) keeps them.
    fn attach_storage(&mut self, _storage: &std::sync::Arc<dyn Storage>, _state_id: u64) {}

    /// Called at the end of every epoch in which this operator received input, before
    /// the epoch commits (and before a checkpoint of that epoch): state written here is
    /// durable with the epoch itself, not only at the next checkpoint.
    fn persist_epoch(&mut self, _epoch: u64, _state: &mut StateWriter) -> Result<()> {
        Ok(())
    }

    /// Does `persist_epoch` store the rows written to this relation, so that the input
    /// log need only say that it was written? Then [`Operator::logged_rows`] reads an
    /// epoch's rows back for the replay.
    fn logs_own_input(&self) -> bool {
        false
    }

    /// The rows this relation received in `epoch`, as `persist_epoch` stored them.
    fn logged_rows(
        &self,
        epoch: u64,
        _state: &StateReader,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        Err(crate::error::Error::internal(format!(
            "{} does not store its input (epoch {epoch})",
            self.name()
        )))
    }

    /// For relation operators: the full current contents, as inserts. Used to backfill a
    /// view created over existing data.
    fn contents(&self) -> Option<Result<Vec<ChangeBatch>>> {
        None
    }

    /// For relation operators: a read-only snapshot of the current contents.
    fn snapshot(&self) -> Option<snapshot::RelationSnapshot> {
        None
    }

    /// Does this operator act when the watermark of its input rises (closing windows,
    /// freeing their state)? Only then is [`Operator::on_watermark`] called.
    fn wants_watermark(&self) -> bool {
        false
    }

    /// The watermark of this operator's input rose to `watermark` (microseconds since
    /// 1970): no row with an event time below it will come. Called after `end_epoch`
    /// of the epoch that raised it.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> Result<()> {
        Ok(())
    }

    /// Rows dropped because they arrived for a window that had already closed.
    fn late_rows(&self) -> u64 {
        0
    }

    /// Number of entries of state kept in memory (for EXPLAIN ANALYZE-like stats).
    fn state_entries(&self) -> usize {
        0
    }

    /// Does this operator emit only insertions when all its inputs emit only insertions?
    /// (Filters and projections do; aggregates, which retract their old rows, do not.)
    /// The planner uses it to give operators over streams smaller state.
    fn preserves_append_only(&self) -> bool {
        false
    }

    /// The columns of input `port` this operator reads; `None`: all of them. A source
    /// that can leave out columns nobody reads asks the readers of its relation
    /// ([`Operator::set_columns_read`]).
    fn columns_read(&self, _port: usize) -> Option<ColumnSet> {
        None
    }

    /// Can this operator's output leave out columns its readers do not read? Only then
    /// does the runtime call [`Operator::set_columns_read`].
    fn omits_columns(&self) -> bool {
        false
    }

    /// Before each run, for operators that [`Operator::omits_columns`]: the columns its
    /// readers (downstream operators, subscribers) read now.
    fn set_columns_read(&mut self, _read: ColumnSet) {}
}

/// A set of column indexes, as a bit mask. Columns from 64 on are always in the set:
/// only the first 64 can be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnSet(u64);

impl ColumnSet {
    pub const ALL: ColumnSet = ColumnSet(u64::MAX);
    pub const NONE: ColumnSet = ColumnSet(0);

    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn of(columns: impl IntoIterator<Item = usize>) -> Self {
        let mut set = Self::NONE;
        for c in columns {
            set.insert(c);
        }
        set
    }

    pub fn insert(&mut self, column: usize) {
        if column >= 64 {
            return;
        }
        self.0 |= 1 << column;
    }

    pub fn contains(self, column: usize) -> bool {
        column >= 64 || self.0 & (1 << column) != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Writes one operator's state into the epoch's write batch. At a checkpoint
/// ([`Operator::checkpoint`]) the writes go into one sorted run ([`StateRuns`]); with an
/// epoch ([`Operator::persist_epoch`]) each is its own key under the operator's prefix,
/// so that it can be read back by key ([`StateReader::get`]).
pub struct StateWriter<'a> {
    state_id: u64,
    batch: &'a mut WriteBatch,
    run: Option<&'a mut RunBuilder>,
}

impl<'a> StateWriter<'a> {
    /// Writes that are keys of their own.
    pub fn new(state_id: u64, batch: &'a mut WriteBatch) -> Self {
        Self {
            state_id,
            batch,
            run: None,
        }
    }

    /// Writes gathered into `run`.
    pub fn into_run(state_id: u64, batch: &'a mut WriteBatch, run: &'a mut RunBuilder) -> Self {
        Self {
            state_id,
            batch,
            run: Some(run),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.run.as_deref_mut() {
            Some(run) => run.put(key, value),
            None => self
                .batch
                .put(keys::state_key(self.state_id, key), value.to_vec()),
        }
    }

    /// `put` without copying a value the caller built for it.
    pub fn put_vec(&mut self, key: &[u8], value: Vec<u8>) {
        match self.run.as_deref_mut() {
            Some(run) => run.put(key, &value),
            None => self.batch.put(keys::state_key(self.state_id, key), value),
        }
    }

    pub fn delete(&mut self, key: &[u8]) {
        match self.run.as_deref_mut() {
            Some(run) => run.delete(key),
            None => self.batch.delete(keys::state_key(self.state_id, key)),
        }
    }
}

/// The runs of one operator's checkpointed state (`storage::runs`), as the runtime
/// tracks them: it writes each checkpoint's run and merges runs in tiers.
#[derive(Debug, Default)]
pub struct StateRuns {
    state_id: u64,
    /// (sequence = epoch of the checkpoint that wrote it, size in bytes), oldest first.
    runs: Vec<(u64, u64)>,
    /// State written key by key by an earlier version of eddy: the oldest layer, folded
    /// into the runs (and deleted) by the first merge that reaches the bottom.
    legacy: bool,
}

impl StateRuns {
    /// The runs stored for `state_id` (at install, restored or not). `own_keys`: the
    /// operator also writes keys of its own with each epoch (a stream's chunks), which
    /// are not checkpointed state and must be left alone.
    pub fn load(storage: &dyn Storage, state_id: u64, own_keys: bool) -> Result<Self> {
        let prefix = keys::run_prefix(state_id);
        let mut runs = vec![];
        storage.for_each_prefix(&prefix, &mut |k, v| {
            let seq = k
                .get(prefix.len()..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| crate::error::Error::Storage("corrupt state run key".into()))?;
            runs.push((seq, v.len() as u64));
            Ok(())
        })?;
        let mut legacy = false;
        if !own_keys {
            let mut first = true;
            storage.for_each_prefix(&keys::state_prefix(state_id), &mut |_, _| {
                if first {
                    legacy = true;
                    first = false;
                }
                Ok(())
            })?;
        }
        Ok(Self {
            state_id,
            runs,
            legacy,
        })
    }

    /// Checkpoint `op` as of `epoch`: its writes become one run in `batch`, merged with
    /// older runs when a tier is full. `storage` holds the older runs.
    pub fn checkpoint(
        &mut self,
        op: &mut dyn Operator,
        epoch: u64,
        storage: &dyn Storage,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let mut run = RunBuilder::default();
        op.checkpoint(&mut StateWriter::into_run(self.state_id, batch, &mut run))?;
        if run.is_empty() {
            return Ok(());
        }
        let mut newest = run.finish();
        if self.runs.last().is_some_and(|(seq, _)| *seq >= epoch) {
            return Err(crate::error::Error::internal(format!(
                "state {} checkpointed twice at epoch {epoch}",
                self.state_id
            )));
        }
        self.runs.push((epoch, newest.len() as u64));
        let sizes = |runs: &[(u64, u64)]| runs.iter().map(|(_, b)| *b).collect::<Vec<_>>();
        while let Some(start) = crate::storage::runs::plan_merge(&sizes(&self.runs)) {
            let last = self.runs.len() - 1;
            let mut older = Vec::with_capacity(last - start + 1);
            let bottom = start == 0;
            if bottom && self.legacy {
                let mut legacy = RunBuilder::default();
                let prefix = keys::state_prefix(self.state_id);
                storage.for_each_prefix(&prefix, &mut |k, v| {
                    legacy.put(&k[prefix.len()..], v);
                    Ok(())
                })?;
                older.push(legacy.finish());
            }
            for (seq, _) in &self.runs[start..last] {
                let key = keys::run_key(self.state_id, *seq);
                older.push(storage.get(&key)?.ok_or_else(|| {
                    crate::error::Error::Storage(format!("state run {seq} is missing"))
                })?);
                batch.delete(key);
            }
            let mut inputs: Vec<&[u8]> = older.iter().map(Vec::as_slice).collect();
            inputs.push(&newest);
            let merged = crate::storage::runs::merge_runs(&inputs, bottom)?;
            drop(inputs);
            newest = merged;
            if bottom && self.legacy {
                batch.delete_prefix(keys::state_prefix(self.state_id));
                self.legacy = false;
            }
            self.runs.truncate(start);
            self.runs.push((epoch, newest.len() as u64));
        }
        batch.put(keys::run_key(self.state_id, epoch), newest);
        Ok(())
    }

    /// The sequence number of the newest run.
    pub fn last_seq(&self) -> Option<u64> {
        self.runs.last().map(|(seq, _)| *seq)
    }

    /// Number of runs (for tests and EXPLAIN).
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Reads one operator's state back after a restart.
pub struct StateReader<'a> {
    state_id: u64,
    storage: &'a dyn Storage,
    checkpoint: u64,
}

impl<'a> StateReader<'a> {
    pub fn new(state_id: u64, storage: &'a dyn Storage) -> Self {
        Self {
            state_id,
            storage,
            checkpoint: u64::MAX,
        }
    }

    /// Restoring the checkpoint of `epoch`: state an operator wrote with a later epoch
    /// (`persist_epoch`) is replayed from the log rather than loaded.
    pub fn at_checkpoint(mut self, epoch: u64) -> Self {
        self.checkpoint = epoch;
        self
    }

    /// The epoch of the checkpoint being restored (`u64::MAX` when not restoring one).
    pub fn checkpoint_epoch(&self) -> u64 {
        self.checkpoint
    }

    /// Visit every `(key, value)` of this operator's state in key order: its keys, with
    /// its checkpointed runs merged over them (a newer run's entry wins; deletes hide).
    pub fn for_each(&self, f: &mut crate::storage::KvVisitor) -> Result<()> {
        let prefix = keys::state_prefix(self.state_id);
        let n = prefix.len();
        let runs: Vec<Vec<u8>> = self
            .storage
            .scan_prefix(&keys::run_prefix(self.state_id))?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        if runs.is_empty() {
            return self
                .storage
                .for_each_prefix(&prefix, &mut |k, v| f(&k[n..], v));
        }
        let mut own = RunBuilder::default();
        self.storage.for_each_prefix(&prefix, &mut |k, v| {
            own.put(&k[n..], v);
            Ok(())
        })?;
        let own = own.finish();
        let mut cursors = std::iter::once(own.as_slice())
            .chain(runs.iter().map(Vec::as_slice))
            .map(crate::storage::runs::RunCursor::new)
            .collect::<Result<Vec<_>>>()?;
        crate::storage::runs::merge(&mut cursors, &mut |(k, v)| match v {
            Some(v) => f(k, v),
            None => Ok(()),
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.storage.get(&keys::state_key(self.state_id, key))
    }
}

#[cfg(test)]
mod state_tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::datatypes::Schema;

    use super::*;
    use crate::storage::MemoryStorage;

    /// An operator whose state is a map it writes at checkpoints (what changed since).
    #[derive(Default)]
    struct MapOp {
        map: BTreeMap<Vec<u8>, Vec<u8>>,
        dirty: Vec<Vec<u8>>,
    }

    impl MapOp {
        fn set(&mut self, k: &str, v: Option<&str>) {
            match v {
                Some(v) => self.map.insert(k.into(), v.into()),
                None => self.map.remove(k.as_bytes()),
            };
            self.dirty.push(k.into());
        }
    }

    impl Operator for MapOp {
        fn name(&self) -> &'static str {
            "MapOp"
        }
        fn output_schema(&self) -> SchemaRef {
            std::sync::Arc::new(Schema::empty())
        }
        fn process(&mut self, _: usize, _: ChangeBatch, _: &mut Output) -> Result<()> {
            Ok(())
        }
        fn checkpoint(&mut self, state: &mut StateWriter) -> Result<()> {
            for k in self.dirty.drain(..) {
                match self.map.get(&k) {
                    Some(v) => state.put(&k, v),
                    None => state.delete(&k),
                }
            }
            Ok(())
        }
        fn restore(&mut self, state: &StateReader) -> Result<()> {
            state.for_each(&mut |k, v| {
                self.map.insert(k.to_vec(), v.to_vec());
                Ok(())
            })
        }
    }

    fn restored(storage: &dyn Storage) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut back = MapOp::default();
        back.restore(&StateReader::new(7, storage)).unwrap();
        back.map
    }

    #[test]
    fn checkpoints_become_runs_that_merge_in_tiers_and_restore_exactly() {
        let storage = MemoryStorage::new();
        let mut op = MapOp::default();
        let mut runs = StateRuns::load(&storage, 7, false).unwrap();
        let mut most = 0;
        for epoch in 1..=40u64 {
            // Overwrite some keys, add new ones, delete a few.
            for i in 0..5 {
                op.set(
                    &format!("k{}", (epoch * 3 + i) % 23),
                    Some(&format!("v{epoch}")),
                );
            }
            if epoch % 3 == 0 {
                op.set(&format!("k{}", epoch % 23), None);
            }
            let mut wb = WriteBatch::new();
            runs.checkpoint(&mut op, epoch, &storage, &mut wb).unwrap();
            storage.commit(wb).unwrap();
            most = most.max(runs.len());
            assert_eq!(restored(&storage), op.map, "after checkpoint {epoch}");
            // What the runtime tracks is what is stored.
            let reloaded = StateRuns::load(&storage, 7, false).unwrap();
            assert_eq!(reloaded.runs, runs.runs);
        }
        // Merged as they went: never more runs than a few tiers' worth.
        assert!(most < 2 * crate::storage::runs::FANOUT, "{most} runs");
        // A checkpoint with nothing changed writes no run.
        let before = runs.len();
        let mut wb = WriteBatch::new();
        runs.checkpoint(&mut op, 41, &storage, &mut wb).unwrap();
        assert!(wb.is_empty());
        assert_eq!(runs.len(), before);
    }

    #[test]
    fn state_written_key_by_key_is_read_under_the_runs_and_folded_into_them() {
        let storage = MemoryStorage::new();
        // An earlier eddy wrote every entry as its own key.
        let mut wb = WriteBatch::new();
        let mut w = StateWriter::new(7, &mut wb);
        w.put(b"a", b"old");
        w.put(b"b", b"old");
        storage.commit(wb).unwrap();
        let mut op = MapOp::default();
        op.restore(&StateReader::new(7, &storage)).unwrap();
        let mut runs = StateRuns::load(&storage, 7, false).unwrap();
        op.set("a", Some("new"));
        op.set("b", None);
        let mut epoch = 1;
        let mut wb = WriteBatch::new();
        runs.checkpoint(&mut op, epoch, &storage, &mut wb).unwrap();
        storage.commit(wb).unwrap();
        assert_eq!(restored(&storage), op.map);
        // Once the runs merge down to the bottom, the old keys are gone.
        while !storage
            .scan_prefix(&keys::state_prefix(7))
            .unwrap()
            .is_empty()
        {
            epoch += 1;
            op.set(&format!("c{epoch}"), Some("x"));
            let mut wb = WriteBatch::new();
            runs.checkpoint(&mut op, epoch, &storage, &mut wb).unwrap();
            storage.commit(wb).unwrap();
            assert_eq!(restored(&storage), op.map);
            assert!(epoch < 20, "the old keys were never folded in");
        }
        assert_eq!(
            restored(&storage).get(b"a".as_slice()),
            Some(&b"new".to_vec())
        );
        assert!(!restored(&storage).contains_key(b"b".as_slice()));
    }
}
