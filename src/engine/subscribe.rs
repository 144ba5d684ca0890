//! SUBSCRIBE: a session's view of a relation's change stream, as rows.
//!
//! Output columns: `epoch` (bigint: the epoch of the change, milliseconds since 1970),
//! then `progressed` (boolean, only `WITH (PROGRESS = true)`), then `diff` (+1 / -1; an
//! update is a -1 and a +1 in the same epoch), then the relation's columns. A progress
//! row has `progressed = true`, the epoch it certifies, and NULLs elsewhere. With
//! `ENVELOPE UPSERT (KEY (k))`, `diff` is replaced by `state` ('upsert' | 'delete') and
//! each key appears at most once per epoch with its new value (NULL values on delete).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    new_null_array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions,
    StringArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::Database;
use crate::catalog::ObjectKind;
use crate::dataflow::expr::EvalErrors;
use crate::dataflow::subscribe::{SubscriptionEvent, SubscriptionReceiver};
use crate::dataflow::ChangeBatch;
use crate::error::{Error, Result};
use crate::plan::{Lowering, PlanContext};
use crate::sql::{SubscribeStatement, SubscribeTarget};
use crate::storage::rowcodec::RowCodec;

/// Ids of transient objects (a subscription's own query) count down from here, far
/// from the catalog's ids.
const TRANSIENT_BASE: u32 = 0xF000_0000;
static NEXT_TRANSIENT: std::sync::atomic::AtomicU32 =
    std::sync::atomic::AtomicU32::new(TRANSIENT_BASE);

/// One live subscription.
pub struct Subscription {
    db: Arc<Database>,
    receiver: SubscriptionReceiver,
    /// The relation's columns.
    relation_schema: SchemaRef,
    /// The columns the subscription returns (epoch, diff, ... then the relation's).
    schema: SchemaRef,
    progress: bool,
    upsert: Option<(Vec<usize>, RowCodec)>,
    /// The subscription's own dataflow (for `SUBSCRIBE (SELECT ...)`), removed on drop.
    transient: Option<u32>,
    /// Rows produced but not yet returned (FETCH takes them in pieces).
    buffered: VecDeque<RecordBatch>,
    /// The latest epoch whose changes were all returned.
    pub last_complete_epoch: u64,
    /// The epoch of the last progress row emitted (`PROGRESS = true`).
    last_progress_row: Option<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(id) = self.transient {
            self.db.dataflow().drop_transient(id);
        }
    }
}

impl Database {
    /// Start a subscription.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        s: &SubscribeStatement,
    ) -> Result<Subscription> {
        let (object_id, schema, transient) = match &s.target {
            SubscribeTarget::Relation(name) => {
                let catalog = self.catalog();
                let e = catalog
                    .get(name)
                    .filter(|e| e.kind.is_relation())
                    .ok_or_else(|| Error::UndefinedRelation {
                        name: name.clone(),
                        position: None,
                    })?;
                let _ = ObjectKind::Table;
                (e.id, e.schema(), None)
            }
            SubscribeTarget::Query(q) => {
                let catalog = self.catalog();
                let id = NEXT_TRANSIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut query = q.clone();
                let renames = crate::sql::naming::postgres_column_names(&mut query);
                let plan = PlanContext::new(&self.state, &catalog, None).plan_query(&query)?;
                let names: Vec<String> = plan
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        renames
                            .get(f.name())
                            .cloned()
                            .unwrap_or_else(|| f.name().clone())
                    })
                    .collect();
                let mut subgraph = Lowering::new(&self.state, EvalErrors::new())
                    .with_plan_version(crate::catalog::PLAN_VERSION)
                    .with_append_only_relations(catalog.append_only_ids())
                    .lower_view(id, "subscription", &plan, &names)?;
                subgraph.transient = true;
                let schema = subgraph
                    .nodes
                    .last()
                    .map(|n| n.op.output_schema())
                    .ok_or_else(|| Error::internal("empty subscription dataflow"))?;
                self.dataflow
                    .install(subgraph, false, crate::storage::WriteBatch::new())
                    .await?;
                (id, schema, Some(id))
            }
        };
        let snapshot = s.snapshot.unwrap_or(s.as_of.is_none());
        if snapshot && s.as_of.is_some() {
            if let Some(id) = transient {
                self.dataflow.drop_transient(id);
            }
            return Err(Error::not_supported(
                "SNAPSHOT = true with AS OF; resume with SNAPSHOT = false",
            ));
        }
        let receiver = match self.dataflow.subscribe(object_id, snapshot, s.as_of).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(id) = transient {
                    self.dataflow.drop_transient(id);
                }
                return Err(e);
            }
        };
        let upsert = match &s.upsert_key {
            Some(cols) => {
                let mut idx = vec![];
                for c in cols {
                    idx.push(schema.index_of(c).map_err(|_| Error::UndefinedColumn {
                        message: format!("column \"{c}\" named in ENVELOPE UPSERT does not exist"),
                        position: None,
                    })?);
                }
                let codec = RowCodec::new(
                    idx.iter()
                        .map(|i| schema.field(*i).data_type().clone())
                        .collect(),
                )?;
                Some((idx, codec))
            }
            None => None,
        };
        let out_schema = output_schema(&schema, s.progress, upsert.is_some());
        let start = receiver.start_epoch;
        Ok(Subscription {
            db: self.clone(),
            receiver,
            relation_schema: schema,
            schema: out_schema,
            progress: s.progress,
            upsert,
            transient,
            buffered: VecDeque::new(),
            last_complete_epoch: start,
            last_progress_row: None,
        })
    }
}

impl Database {
    /// The columns a subscription would return, without starting it (Describe).
    pub(crate) fn subscribe_schema(&self, s: &SubscribeStatement) -> Result<SchemaRef> {
        let catalog = self.catalog();
        let schema = match &s.target {
            SubscribeTarget::Relation(name) => catalog
                .get(name)
                .filter(|e| e.kind.is_relation())
                .ok_or_else(|| Error::UndefinedRelation {
                    name: name.clone(),
                    position: None,
                })?
                .schema(),
            SubscribeTarget::Query(q) => {
                let mut query = q.clone();
                let renames = crate::sql::naming::postgres_column_names(&mut query);
                let plan = PlanContext::new(&self.state, &catalog, None).plan_query(&query)?;
                let schema = Arc::new(plan.schema().as_arrow().clone());
                crate::engine::query::rename_fields(&schema, &renames)
            }
        };
        Ok(output_schema(&schema, s.progress, s.upsert_key.is_some()))
    }
}

/// The columns a subscription returns.
pub fn output_schema(schema: &SchemaRef, progress: bool, upsert: bool) -> SchemaRef {
    let mut fields = vec![Field::new("epoch", DataType::Int64, false)];
    if progress {
        fields.push(Field::new("progressed", DataType::Boolean, false));
    }
    if upsert {
        fields.push(Field::new("state", DataType::Utf8, true));
    } else {
        fields.push(Field::new("diff", DataType::Int64, true));
    }
    fields.extend(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true)),
    );
    Arc::new(Schema::new(fields))
}

impl Subscription {
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next rows: one epoch's changes, or a progress row. `None` for an event that
    /// produces no rows (progress without `PROGRESS = true`); the caller loops.
    pub async fn next_event(&mut self) -> Result<Option<RecordBatch>> {
        if let Some(b) = self.buffered.pop_front() {
            return Ok(Some(b));
        }
        match self.receiver.next().await? {
            SubscriptionEvent::Changes { epoch, batches } => {
                let mut out = None;
                for b in batches.iter().filter(|b| !b.is_empty()) {
                    let rows = match &self.upsert {
                        Some(_) => None,
                        None => Some(self.rows(epoch, b)?),
                    };
                    if let Some(r) = rows {
                        self.buffered.push_back(r);
                    }
                }
                if self.upsert.is_some() && !batches.is_empty() {
                    let b = ChangeBatch::concat(&self.relation_schema, &batches)?;
                    if !b.is_empty() {
                        let r = self.upsert_rows(epoch, &b)?;
                        self.buffered.push_back(r);
                    }
                }
                if let Some(b) = self.buffered.pop_front() {
                    out = Some(b);
                }
                Ok(out)
            }
            SubscriptionEvent::Progress { epoch } => {
                self.last_complete_epoch = self.last_complete_epoch.max(epoch);
                // One progress row per distinct epoch, strictly increasing (a heartbeat
                // and an epoch can certify the same time).
                let fresh = self.last_progress_row.is_none_or(|last| epoch > last);
                if self.progress && fresh {
                    self.last_progress_row = Some(epoch);
                    Ok(Some(self.progress_row(epoch)?))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Put rows back (FETCH returned only part of a batch).
    pub fn unread(&mut self, batch: RecordBatch) {
        self.buffered.push_front(batch);
    }

    fn prefix(&self, epoch: u64, n: usize, progressed: bool) -> Vec<ArrayRef> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![epoch as i64; n]))];
        if self.progress {
            cols.push(Arc::new(BooleanArray::from(vec![progressed; n])));
        }
        cols
    }

    fn rows(&self, epoch: u64, b: &ChangeBatch) -> Result<RecordBatch> {
        let n = b.num_rows();
        let mut cols = self.prefix(epoch, n, false);
        cols.push(Arc::new(b.diffs.clone()));
        cols.extend(b.columns().iter().cloned());
        self.batch(cols, n)
    }

    fn progress_row(&self, epoch: u64) -> Result<RecordBatch> {
        let mut cols = self.prefix(epoch, 1, true);
        for f in self.schema.fields().iter().skip(cols.len()) {
            cols.push(new_null_array(f.data_type(), 1));
        }
        self.batch(cols, 1)
    }

    /// One row per key: its new value (`upsert`) or its deletion (`delete`).
    fn upsert_rows(&self, epoch: u64, b: &ChangeBatch) -> Result<RecordBatch> {
        let (key_cols, codec) = self
            .upsert
            .as_ref()
            .ok_or_else(|| Error::internal("not an upsert subscription"))?;
        let keys: Vec<ArrayRef> = key_cols.iter().map(|i| b.columns()[*i].clone()).collect();
        let encoded = codec.encode_rows(&keys, b.num_rows());
        // Per key, in first-seen order: the row of its insertion, if any, else a deletion.
        let mut order: Vec<Bytes> = vec![];
        let mut state: HashMap<Bytes, (Option<u32>, u32)> = HashMap::new();
        for (i, k) in encoded.into_iter().enumerate() {
            let k = Bytes::from(k);
            let e = state.entry(k.clone()).or_insert_with(|| {
                order.push(k.clone());
                (None, i as u32)
            });
            if b.diff(i) > 0 {
                e.0 = Some(i as u32);
            }
        }
        let mut take: Vec<u32> = vec![];
        let mut states: Vec<&str> = vec![];
        for k in &order {
            let (ins, any) = state[k];
            take.push(ins.unwrap_or(any));
            states.push(if ins.is_some() { "upsert" } else { "delete" });
        }
        let idx = UInt32Array::from(take);
        let picked = b.take(&idx)?;
        let n = picked.num_rows();
        let mut cols = self.prefix(epoch, n, false);
        cols.push(Arc::new(StringArray::from(states.clone())));
        for (c, col) in picked.columns().iter().enumerate() {
            if key_cols.contains(&c) {
                cols.push(col.clone());
            } else {
                // Deleted keys carry no value.
                let mask =
                    BooleanArray::from(states.iter().map(|s| *s == "upsert").collect::<Vec<_>>());
                cols.push(datafusion::arrow::compute::nullif(
                    col,
                    &datafusion::arrow::compute::not(&mask)?,
                )?);
            }
        }
        self.batch(cols, n)
    }

    fn batch(&self, cols: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}
