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
}

/// Writes one operator's state into the epoch's write batch, under its own prefix.
pub struct StateWriter<'a> {
    state_id: u64,
    batch: &'a mut WriteBatch,
}

impl<'a> StateWriter<'a> {
    pub fn new(state_id: u64, batch: &'a mut WriteBatch) -> Self {
        Self { state_id, batch }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.batch
            .put(keys::state_key(self.state_id, key), value.to_vec());
    }

    /// `put` without copying a value the caller built for it.
    pub fn put_vec(&mut self, key: &[u8], value: Vec<u8>) {
        self.batch.put(keys::state_key(self.state_id, key), value);
    }

    pub fn delete(&mut self, key: &[u8]) {
        self.batch.delete(keys::state_key(self.state_id, key));
    }

    /// Drop every key of this operator's state (before this batch's puts).
    pub fn clear(&mut self) {
        self.batch.delete_prefix(keys::state_prefix(self.state_id));
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

    /// Visit every `(key, value)` of this operator's state in key order.
    pub fn for_each(&self, f: &mut crate::storage::KvVisitor) -> Result<()> {
        let prefix = keys::state_prefix(self.state_id);
        let n = prefix.len();
        self.storage
            .for_each_prefix(&prefix, &mut |k, v| f(&k[n..], v))
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.storage.get(&keys::state_key(self.state_id, key))
    }
}
