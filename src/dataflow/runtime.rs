//! The dataflow runtime: one thread that owns every operator and runs epochs.
//!
//! Sessions send [`Command`]s (install a view, apply a table's changes, sync) over a
//! channel. The runtime takes everything that is waiting, runs it as one epoch —
//! operators in topological order, each seeing all of the epoch's input before it ends
//! the epoch — then makes the epoch durable, publishes the new snapshots, and only then
//! answers the commands. A session whose INSERT returned can therefore read its write
//! in every view (read-your-writes), and after a crash nothing acknowledged is lost.
//!
//! Durability has two parts. Every epoch commits its *inputs* to the input log
//! ([`input_log`]) and flushes. Every checkpoint interval (and at every DDL) the
//! operators write the state that changed since the last checkpoint, in one atomic
//! commit that also empties the log. So the cost of an epoch is proportional to its
//! input, and the cost of a checkpoint to what changed, not to total state. After a
//! crash the last checkpoint's state is loaded and the logged epochs are replayed.
//!
//! Node ids grow as nodes are installed, and a node is always installed after its
//! inputs, so ascending id order is a topological order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::{debug, error, info};

use super::snapshot::{DatabaseSnapshot, RelationSnapshot, SnapshotStore};
use super::subscribe::{
    History, SubscribeConfig, Subscriber, SubscriberShared, SubscriptionEvent, SubscriptionReceiver,
};
use super::watermark::{SourceTime, WatermarkInstall, WatermarkState, WatermarkTracker};
use super::{input_log, ChangeBatch, Operator, StateReader, StateRuns, StateWriter};
use crate::error::{Error, Result};
use crate::storage::{keys, Storage, WriteBatch};

/// Where a node's input comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeInput {
    /// Another node of the same subgraph, by index.
    Local(usize),
    /// The output of an existing relation (table, stream, view), by catalog object id.
    Relation(u32),
}

/// One operator of a subgraph and its inputs (input `i` feeds port `i`).
pub struct NodeSpec {
    pub op: Box<dyn Operator>,
    pub inputs: Vec<NodeInput>,
}

/// The operators that implement one catalog object. The last node is the object's
/// output: for tables, streams and views, the relation users read.
pub struct Subgraph {
    pub object_id: u32,
    pub nodes: Vec<NodeSpec>,
    /// The output only ever inserts (a stream, or a view that filters one).
    pub append_only: bool,
    /// Installed for one subscription (`SUBSCRIBE (SELECT ...)`): not in the catalog,
    /// never checkpointed, removed when the subscription ends.
    pub transient: bool,
    /// The relation has an event-time watermark (`WATERMARK FOR`).
    pub watermark: Option<WatermarkInstall>,
}

impl Subgraph {
    pub fn single(object_id: u32, op: Box<dyn Operator>) -> Self {
        let append_only = op.preserves_append_only();
        Self {
            object_id,
            nodes: vec![NodeSpec { op, inputs: vec![] }],
            append_only,
            transient: false,
            watermark: None,
        }
    }

    pub fn with_watermark(mut self, watermark: Option<WatermarkInstall>) -> Self {
        self.watermark = watermark;
        self
    }

    /// Render the operator tree, root (output) first, for EXPLAIN. `relation_name`
    /// names the relations read from outside the subgraph.
    pub fn explain(&self, relation_name: &dyn Fn(u32) -> String) -> String {
        let mut out = String::new();
        let mut seen = HashSet::new();
        if let Some(last) = self.nodes.len().checked_sub(1) {
            self.explain_node(last, 0, relation_name, &mut seen, &mut out);
        }
        out
    }

    fn explain_node(
        &self,
        i: usize,
        depth: usize,
        rel: &dyn Fn(u32) -> String,
        seen: &mut HashSet<usize>,
        out: &mut String,
    ) {
        let node = &self.nodes[i];
        let indent = "  ".repeat(depth);
        if !seen.insert(i) {
            out.push_str(&format!(
                "{indent}{} (shared: shown above)\n",
                node.op.name()
            ));
            return;
        }
        let detail = node.op.describe();
        out.push_str(&indent);
        out.push_str(node.op.name());
        if !detail.is_empty() {
            out.push(' ');
            out.push_str(&detail);
        }
        if let Some(state) = node.op.state_description() {
            out.push_str(&format!("  [state: {state}]"));
        }
        out.push('\n');
        for input in &node.inputs {
            match input {
                NodeInput::Local(j) => self.explain_node(*j, depth + 1, rel, seen, out),
                NodeInput::Relation(id) => {
                    out.push_str(&format!("{}  Read {}\n", indent, rel(*id)));
                }
            }
        }
    }
}

/// Requests to the runtime. Each carries a channel for its answer, sent once the epoch
/// that applied it is committed and published.
pub enum Command {
    /// Install a subgraph. With `restore`, operators load their state from storage (a
    /// restart); otherwise views are backfilled from their inputs' current contents.
    /// `catalog` holds catalog writes to commit atomically with the installation.
    Install {
        subgraph: Subgraph,
        restore: bool,
        catalog: WriteBatch,
        reply: Reply<u64>,
    },
    /// Remove an object's operators and state.
    Drop {
        object_id: u32,
        catalog: WriteBatch,
        reply: Reply<u64>,
    },
    /// Apply changes to a table or stream. `extra` is committed atomically with the
    /// epoch that applies them (a source's offsets: exactly once across restarts).
    Write {
        object_id: u32,
        changes: ChangeBatch,
        extra: WriteBatch,
        /// A source's watermark after these rows (sources that track their own).
        time: Option<SourceTime>,
        reply: Reply<u64>,
    },
    /// Answer once everything sent before is applied (FLUSH).
    Sync { reply: Reply<u64> },
    /// Describe an installed object's operators (EXPLAIN).
    Explain {
        object_id: u32,
        names: HashMap<u32, String>,
        /// Also show rows processed and time spent per operator.
        analyze: bool,
        reply: Reply<String>,
    },
    /// Per-object statistics: state entries held in memory, and subscribers.
    Stats {
        reply: Reply<Vec<(u32, usize, usize)>>,
    },
    /// Every watermarked relation and view: (object, watermark, late rows).
    Watermarks {
        reply: Reply<Vec<(u32, Option<i64>, u64)>>,
    },
    /// Write a checkpoint now.
    /// `reason` is what `SHOW CHECKPOINTS` says: requested, shutdown.
    Checkpoint {
        reason: &'static str,
        reply: Reply<u64>,
    },
    /// Replay the input log (startup).
    ReplayLog { reply: Reply<u64> },
    /// Subscribe to a relation's changes.
    Subscribe {
        object_id: u32,
        snapshot: bool,
        as_of: Option<u64>,
        reply: Reply<SubscriptionReceiver>,
    },
}

impl Command {
    /// Rows from a source (they carry its positions), which may wait for the epoch
    /// interval; everything else starts an epoch at once.
    fn source_rows(&self) -> Option<usize> {
        match self {
            Command::Write { extra, changes, .. } if !extra.is_empty() => Some(changes.num_rows()),
            _ => None,
        }
    }
}

/// Sources' rows that already make a large epoch do not wait for the epoch interval: a
/// source this far behind is catching up, and waiting would only idle the dataflow.
const PACE_ROWS: usize = 4096;

pub type Reply<T> = oneshot::Sender<Result<T>>;

/// Milliseconds since 1970 by the wall clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What rendering an installed object's operators for EXPLAIN needs.
struct ExplainCtx<'a> {
    /// Node ids of the object itself (the rest are other relations, shown as reads).
    local: &'a HashMap<u64, usize>,
    /// Output node → the object it belongs to.
    node_object: &'a HashMap<u64, u32>,
    names: &'a HashMap<u32, String>,
    analyze: bool,
}

struct Node {
    op: Box<dyn Operator>,
    object_id: u32,
    state_id: u64,
    /// (downstream node, port)
    outputs: Vec<(u64, usize)>,
    inputs: Vec<u64>,
    pending: Vec<(usize, ChangeBatch)>,
    /// Set when the operator failed: it and everything downstream stops updating.
    failed: Option<String>,
    /// Time spent in this operator and rows it received, since install (EXPLAIN).
    busy_ns: u64,
    rows_in: u64,
    /// The watermarked relations upstream of this node (its watermark is their minimum).
    wm_sources: Vec<u32>,
    /// The watermark last given to `on_watermark`.
    wm_seen: Option<i64>,
    /// The runs its checkpoints wrote (`storage::runs`).
    runs: StateRuns,
}

/// Counters the runtime keeps about its epochs and checkpoints (read by benchmarks
/// and `SHOW CHECKPOINTS`).
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    /// Epochs that changed something.
    pub epochs: AtomicU64,
    /// Time spent running operators, total and last epoch.
    pub process_ns: AtomicU64,
    pub last_process_ns: AtomicU64,
    /// Time spent making epochs durable (input log or checkpoint, and the flush).
    pub commit_ns: AtomicU64,
    pub last_commit_ns: AtomicU64,
    /// Bytes written to the input log.
    pub log_bytes: AtomicU64,
    /// Checkpoints taken since start, their total time and bytes.
    pub checkpoints: AtomicU64,
    pub checkpoint_ns: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    /// The most recent checkpoints, newest last (`SHOW CHECKPOINTS`).
    pub recent_checkpoints: Mutex<VecDeque<CheckpointInfo>>,
}

/// How many checkpoints `SHOW CHECKPOINTS` remembers.
const RECENT_CHECKPOINTS: usize = 20;

/// One checkpoint, as `SHOW CHECKPOINTS` reports it. The last one is also stored with
/// the checkpoint itself, so it is still known after a restart.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CheckpointInfo {
    pub epoch: u64,
    /// When it was committed (milliseconds since 1970).
    pub at_ms: u64,
    /// interval, ddl, requested (the CHECKPOINT statement) or shutdown.
    pub reason: String,
    /// Time to write and flush it; unknown for a checkpoint loaded from disk.
    #[serde(skip)]
    pub duration_ms: Option<f64>,
    /// Bytes and keys written by its commit.
    pub bytes: u64,
    pub keys: u64,
    /// The source positions the checkpointed state reflects: (progress key, value) as
    /// the sources wrote them.
    pub positions: Vec<(String, String)>,
}

/// How the runtime makes state durable.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// How often operator state is checkpointed; between checkpoints only the input log
    /// is written. `None`: only at DDL and at shutdown.
    pub checkpoint_interval: Option<Duration>,
    /// Subscriber buffers and `AS OF` history.
    pub subscribe: SubscribeConfig,
    /// Sources' rows wait for the next epoch until this long after the previous epoch
    /// began (each epoch is one durable commit, an fsync, so a source delivering small
    /// batches would otherwise pay one per batch). Client writes, DDL and FLUSH never wait.
    pub source_epoch_interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Some(Duration::from_secs(1)),
            subscribe: SubscribeConfig::default(),
            source_epoch_interval: Duration::from_millis(5),
        }
    }
}

/// How often idle subscribers get a progress mark (and dead ones are noticed).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How often INSERT-written relations are checked for idleness (their watermark then
/// advances with the clock).
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// The handle sessions use to talk to the runtime thread.
#[derive(Clone)]
pub struct DataflowHandle {
    tx: mpsc::Sender<Command>,
    snapshots: Arc<SnapshotStore>,
    metrics: Arc<RuntimeMetrics>,
    columns_read: ColumnsRead,
}

/// Per relation whose operator can leave out columns ([`Operator::omits_columns`]): the
/// columns its readers read, as of its last run ([`super::ColumnSet`] bits). Its source
/// reads it as a hint of what it may skip producing; the operator itself fills in what
/// a reader needs.
type ColumnsRead = Arc<Mutex<HashMap<u32, Arc<AtomicU64>>>>;

impl DataflowHandle {
    pub fn snapshots(&self) -> &Arc<SnapshotStore> {
        &self.snapshots
    }

    pub fn metrics(&self) -> &Arc<RuntimeMetrics> {
        &self.metrics
    }

    /// The columns the readers of relation `object_id` read, kept up to date by the
    /// runtime while the relation's operator runs (all columns until it has run; see
    /// [`Operator::omits_columns`]). A hint for its source: a batch that leaves out a
    /// column someone reads after all is completed by the relation's operator.
    pub fn columns_read(&self, object_id: u32) -> Arc<AtomicU64> {
        let mut map = self.columns_read.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(object_id)
            .or_insert_with(|| Arc::new(AtomicU64::new(super::ColumnSet::ALL.bits())))
            .clone()
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| Error::internal("dataflow runtime has stopped"))?;
        rx.await
            .map_err(|_| Error::internal("dataflow runtime dropped a request"))?
    }

    pub async fn install(
        &self,
        subgraph: Subgraph,
        restore: bool,
        catalog: WriteBatch,
    ) -> Result<u64> {
        self.call(|reply| Command::Install {
            subgraph,
            restore,
            catalog,
            reply,
        })
        .await
    }

    pub async fn drop_object(&self, object_id: u32, catalog: WriteBatch) -> Result<u64> {
        self.call(|reply| Command::Drop {
            object_id,
            catalog,
            reply,
        })
        .await
    }

    pub async fn write(&self, object_id: u32, changes: ChangeBatch) -> Result<u64> {
        self.write_with(object_id, changes, WriteBatch::new()).await
    }

    /// Apply changes and commit `extra` (e.g. a source's offsets) in the same epoch.
    pub async fn write_with(
        &self,
        object_id: u32,
        changes: ChangeBatch,
        extra: WriteBatch,
    ) -> Result<u64> {
        self.write_source(object_id, changes, extra, None).await
    }

    /// `write_with` for a source that tracks its own watermark: `time` is its watermark
    /// and late-row count after these rows.
    pub async fn write_source(
        &self,
        object_id: u32,
        changes: ChangeBatch,
        extra: WriteBatch,
        time: Option<SourceTime>,
    ) -> Result<u64> {
        self.call(|reply| Command::Write {
            object_id,
            changes,
            extra,
            time,
            reply,
        })
        .await
    }

    /// `write_source` without waiting: the reply comes on the returned channel (an
    /// error there if the runtime has stopped). A source thread prepares its next batch
    /// while the dataflow applies this one.
    pub fn send_write_source(
        &self,
        object_id: u32,
        changes: ChangeBatch,
        extra: WriteBatch,
        time: Option<SourceTime>,
    ) -> oneshot::Receiver<Result<u64>> {
        let (reply, rx) = oneshot::channel();
        // A stopped runtime drops the command, and with it `reply`: the receiver then
        // reports the failure.
        let _ = self.tx.send(Command::Write {
            object_id,
            changes,
            extra,
            time,
            reply,
        });
        rx
    }

    /// Watermarks and late rows of every relation that has them (SHOW WATERMARKS).
    pub async fn watermarks(&self) -> Result<Vec<(u32, Option<i64>, u64)>> {
        self.call(|reply| Command::Watermarks { reply }).await
    }

    pub async fn sync(&self) -> Result<u64> {
        self.call(|reply| Command::Sync { reply }).await
    }

    /// Write a checkpoint now (the CHECKPOINT statement: `requested`; a clean
    /// shutdown: `shutdown`).
    pub async fn checkpoint(&self, reason: &'static str) -> Result<u64> {
        self.call(|reply| Command::Checkpoint { reason, reply })
            .await
    }

    /// Replay the input log after the last checkpoint (once, at startup, after every
    /// object is installed with `restore`). Returns the number of epochs replayed.
    pub async fn replay_log(&self) -> Result<u64> {
        self.call(|reply| Command::ReplayLog { reply }).await
    }

    /// Subscribe to a relation: a snapshot (optional), then every epoch's changes and
    /// progress marks. `as_of` resumes after an epoch a previous subscriber saw.
    pub async fn subscribe(
        &self,
        object_id: u32,
        snapshot: bool,
        as_of: Option<u64>,
    ) -> Result<SubscriptionReceiver> {
        self.call(|reply| Command::Subscribe {
            object_id,
            snapshot,
            as_of,
            reply,
        })
        .await
    }

    /// Remove a transient object (a `SUBSCRIBE (SELECT ...)` query) without waiting.
    pub fn drop_transient(&self, object_id: u32) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.send(Command::Drop {
            object_id,
            catalog: WriteBatch::new(),
            reply,
        });
    }

    pub async fn explain(
        &self,
        object_id: u32,
        names: HashMap<u32, String>,
        analyze: bool,
    ) -> Result<String> {
        self.call(|reply| Command::Explain {
            object_id,
            names,
            analyze,
            reply,
        })
        .await
    }

    /// Per object: (id, state entries in memory, subscribers).
    pub async fn stats(&self) -> Result<Vec<(u32, usize, usize)>> {
        self.call(|reply| Command::Stats { reply }).await
    }
}

pub struct Runtime {
    storage: Arc<dyn Storage>,
    config: RuntimeConfig,
    snapshots: Arc<SnapshotStore>,
    nodes: BTreeMap<u64, Node>,
    next_node: u64,
    /// Object id → node ids of its subgraph (last = output).
    objects: HashMap<u32, Vec<u64>>,
    /// Relation snapshots as last published.
    published: HashMap<u32, Arc<RelationSnapshot>>,
    epoch: u64,
    /// Nodes whose state changed since the last checkpoint.
    dirty: BTreeSet<u64>,
    last_checkpoint: Instant,
    /// When the last epoch of commands began (sources' epochs are paced from it).
    last_epoch_start: Instant,
    /// True while replaying the log: no logging, no checkpoints until it is done.
    replaying: bool,
    /// Set after a failed commit: memory is ahead of disk, so no more writes are taken.
    broken: Option<String>,
    metrics: Arc<RuntimeMetrics>,
    columns_read: ColumnsRead,
    /// Subscribers per relation.
    subscribers: HashMap<u32, Vec<Subscriber>>,
    /// Recent changes of relations that have had subscribers (for `AS OF`).
    history: HashMap<u32, History>,
    /// The latest progress mark sent: the next epoch must be greater.
    progress_floor: u64,
    last_heartbeat: Instant,
    /// Objects installed for one subscription only: never checkpointed.
    transient: std::collections::HashSet<u32>,
    /// The latest committed source positions (progress keys written through `extra`).
    positions: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Relations with a watermark, and the watermark each has reached.
    watermarked: std::collections::HashSet<u32>,
    source_time: BTreeMap<u32, SourceTime>,
    /// Watermark trackers of relations written with INSERT (sources run their own).
    trackers: HashMap<u32, WatermarkTracker>,
    /// Watermarks raised between epochs (idle sources), applied by the next epoch.
    pending_time: Vec<(u32, SourceTime)>,
    last_idle_check: Instant,
    /// Relations that stopped updating because an operator (theirs or upstream) failed.
    stale: HashMap<u32, String>,
    /// The checkpoint that restored state comes from (its epoch).
    restored_checkpoint: u64,
    /// No interval checkpoint before the log is replayed: it would empty the log the
    /// restored state still needs.
    log_replayed: bool,
    /// Relations whose logged rows could not be read back (node, why), marked stale by
    /// the epoch being replayed.
    failed_in_replay: Vec<(u64, String)>,
}

const EPOCH_KEY: &str = "epoch";
const CHECKPOINT_KEY: &str = "checkpoint_epoch";
const CHECKPOINT_INFO_KEY: &str = "checkpoint_info";
/// The sources' watermarks as of the checkpoint (the log's epochs raise them further).
const WATERMARKS_KEY: &str = "watermarks";

/// Where an INSERT-written relation's watermark tracker keeps its state (committed with
/// every epoch that writes to it).
fn tracker_key(object_id: u32) -> Vec<u8> {
    keys::meta_key(&format!("wm/{object_id}"))
}

fn read_u64(storage: &dyn Storage, name: &str) -> Result<Option<u64>> {
    match storage.get(&keys::meta_key(name))? {
        Some(v) => Ok(Some(u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| Error::Storage(format!("corrupt {name}")))?,
        ))),
        None => Ok(None),
    }
}

/// The subscription histories the last checkpoint stored. The input log's replay then
/// appends the epochs after it, so a client can resume `AS OF` across a restart.
fn load_history(storage: &dyn Storage) -> Result<HashMap<u32, History>> {
    let mut out: HashMap<u32, History> = HashMap::new();
    for (k, v) in storage.scan_prefix(keys::HISTORY_PREFIX)? {
        let corrupt = || Error::Storage("corrupt subscription history key".into());
        let (object_id, entry) = keys::parse_history_key(&k).ok_or_else(corrupt)?;
        let h = out.entry(object_id).or_insert_with(|| History::new(0));
        match entry {
            None => {
                h.since = u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt())?);
            }
            Some(epoch) => {
                let batches = input_log::decode(&v)?.into_iter().map(|(_, b)| b).collect();
                // Keys sort by epoch, so entries arrive in order.
                h.epochs.push_back((epoch, Instant::now(), batches));
                h.persisted_upto = epoch;
            }
        }
    }
    for h in out.values_mut() {
        // Entries at or before `since` were expired but not yet deleted.
        while let Some((e, _, _)) = h.epochs.front() {
            if *e > h.since {
                break;
            }
            h.expired.push(*e);
            h.epochs.pop_front();
        }
        h.persisted_upto = h.persisted_upto.max(h.since);
    }
    Ok(out)
}

/// What one epoch does with its inputs.
#[derive(Default)]
struct EpochInputs {
    writes: Vec<(u32, ChangeBatch)>,
    /// Relations written in this epoch that store their rows themselves (streams): the
    /// log names them only.
    in_state: Vec<u32>,
    /// Watermarks raised in this epoch (the log records them with the writes).
    watermarks: Vec<(u32, SourceTime)>,
}

impl Runtime {
    /// Start the runtime thread. Returns the handle and the last committed epoch.
    pub fn start(
        storage: Arc<dyn Storage>,
        config: RuntimeConfig,
    ) -> Result<(DataflowHandle, u64)> {
        let epoch = read_u64(storage.as_ref(), EPOCH_KEY)?.unwrap_or(0);
        let snapshots = Arc::new(SnapshotStore::new());
        snapshots.publish(DatabaseSnapshot {
            epoch,
            relations: HashMap::new(),
        });
        let (tx, rx) = mpsc::channel();
        let metrics = Arc::new(RuntimeMetrics::default());
        if let Some(info) = storage.get(&keys::meta_key(CHECKPOINT_INFO_KEY))? {
            // Informational only: an unreadable record is not worth refusing to start.
            if let Ok(info) = serde_json::from_slice::<CheckpointInfo>(&info) {
                if let Ok(mut recent) = metrics.recent_checkpoints.lock() {
                    recent.push_back(info);
                }
            }
        }
        let positions = storage
            .scan_prefix(keys::SOURCE_PROGRESS_PREFIX)?
            .into_iter()
            .collect();
        let history = load_history(storage.as_ref())?;
        let source_time = match storage.get(&keys::meta_key(WATERMARKS_KEY))? {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| Error::Storage(format!("corrupt watermarks: {e}")))?,
            None => BTreeMap::new(),
        };
        let restored_checkpoint = read_u64(storage.as_ref(), CHECKPOINT_KEY)?.unwrap_or(0);
        let columns_read = ColumnsRead::default();
        let mut rt = Runtime {
            storage,
            config,
            snapshots: snapshots.clone(),
            nodes: BTreeMap::new(),
            next_node: 0,
            objects: HashMap::new(),
            published: HashMap::new(),
            epoch,
            dirty: BTreeSet::new(),
            last_checkpoint: Instant::now(),
            last_epoch_start: Instant::now(),
            replaying: false,
            broken: None,
            metrics: metrics.clone(),
            columns_read: columns_read.clone(),
            subscribers: HashMap::new(),
            history,
            progress_floor: epoch,
            last_heartbeat: Instant::now(),
            transient: Default::default(),
            positions,
            watermarked: Default::default(),
            source_time,
            trackers: HashMap::new(),
            pending_time: vec![],
            last_idle_check: Instant::now(),
            stale: HashMap::new(),
            restored_checkpoint,
            log_replayed: false,
            failed_in_replay: vec![],
        };
        std::thread::Builder::new()
            .name("eddy-dataflow".into())
            .spawn(move || rt.run(rx))
            .map_err(|e| Error::internal(format!("cannot start dataflow thread: {e}")))?;
        Ok((
            DataflowHandle {
                tx,
                snapshots,
                metrics,
                columns_read,
            },
            epoch,
        ))
    }

    fn checkpoint_due(&self) -> bool {
        match self.config.checkpoint_interval {
            Some(i) => {
                self.log_replayed && !self.dirty.is_empty() && self.last_checkpoint.elapsed() >= i
            }
            None => false,
        }
    }

    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        loop {
            // Sleep until a command comes or a checkpoint falls due (idle systems still
            // checkpoint, so the log they would replay stays short).
            let checkpoint_wait = self
                .config
                .checkpoint_interval
                .filter(|_| !self.dirty.is_empty())
                .map(|i| i.saturating_sub(self.last_checkpoint.elapsed()));
            let heartbeat_wait = (!self.subscribers.is_empty())
                .then(|| HEARTBEAT.saturating_sub(self.last_heartbeat.elapsed()));
            let idle_wait = (!self.trackers.is_empty())
                .then(|| IDLE_CHECK.saturating_sub(self.last_idle_check.elapsed()));
            let wake = [checkpoint_wait, heartbeat_wait, idle_wait]
                .into_iter()
                .flatten()
                .min();
            let first = match wake {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                },
            };
            if !self.trackers.is_empty() && self.last_idle_check.elapsed() >= IDLE_CHECK {
                self.idle_check();
            }
            let Some(first) = first else {
                if self.checkpoint_due() || !self.pending_time.is_empty() {
                    self.run_epoch(vec![], None);
                }
                if !self.subscribers.is_empty() && self.last_heartbeat.elapsed() >= HEARTBEAT {
                    self.heartbeat();
                }
                continue;
            };
            let mut cmds = vec![first];
            // Group commit: everything already waiting joins this epoch.
            while cmds.len() < 4096 {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            // Sources' rows alone wait for the epoch interval, gathering what else comes
            // (fewer, larger epochs: one fsync each), unless they are plenty already.
            let pace_until = self.last_epoch_start + self.config.source_epoch_interval;
            loop {
                let rows = cmds
                    .iter()
                    .map(Command::source_rows)
                    .try_fold(0, |n, r| r.map(|r| n + r));
                if cmds.len() >= 4096 || rows.is_none_or(|n| n >= PACE_ROWS) {
                    break;
                }
                let Some(wait) = pace_until.checked_duration_since(Instant::now()) else {
                    break;
                };
                match rx.recv_timeout(wait) {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            self.last_epoch_start = Instant::now();
            // A log replay runs on its own, after what came before it.
            let mut group = vec![];
            for c in cmds {
                if let Command::ReplayLog { reply } = c {
                    if !group.is_empty() {
                        self.run_epoch(std::mem::take(&mut group), None);
                    }
                    let _ = reply.send(self.replay_log());
                } else {
                    group.push(c);
                }
            }
            if !group.is_empty() {
                self.run_epoch(group, None);
            }
        }
        // Channel closed: everything was answered; leave a checkpoint behind so the next
        // start replays nothing.
        if !self.dirty.is_empty() && self.broken.is_none() {
            self.run_epoch(vec![], None);
            let mut batch = WriteBatch::new();
            let started = Instant::now();
            let info = self.write_checkpoint(&mut batch, self.epoch, "shutdown");
            if self
                .storage
                .commit(batch)
                .and_then(|_| self.storage.flush())
                .is_ok()
            {
                self.record_checkpoint(info, started.elapsed());
            }
        }
        debug!("dataflow runtime stopped");
    }

    /// Advance the watermarks of idle INSERT-written relations (applied by the next
    /// epoch, which logs them).
    fn idle_check(&mut self) {
        self.last_idle_check = Instant::now();
        if self.broken.is_some() {
            return;
        }
        for (id, t) in self.trackers.iter_mut() {
            if t.idle_tick().is_some() {
                self.pending_time.push((*id, t.time()));
            }
        }
    }

    /// A node's input watermark: the minimum over the watermarked relations upstream
    /// (`None` while one of them has none yet).
    fn node_watermark(&self, node: &Node) -> Option<i64> {
        let mut min: Option<i64> = None;
        for s in &node.wm_sources {
            let w = self.source_time.get(s)?.watermark?;
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        min
    }

    /// A raised watermark reached the runtime (from a source's write, a tracker, or the
    /// log being replayed).
    fn raise_time(&mut self, object_id: u32, time: SourceTime, inputs: &mut EpochInputs) {
        let entry = self.source_time.entry(object_id).or_default();
        let merged = SourceTime {
            watermark: entry.watermark.max(time.watermark),
            late_rows: entry.late_rows.max(time.late_rows),
        };
        if merged != *entry {
            *entry = merged;
            inputs.watermarks.retain(|(o, _)| *o != object_id);
            inputs.watermarks.push((object_id, merged));
        }
    }

    /// (object, watermark, late rows) for SHOW WATERMARKS: relations with a watermark
    /// and the views fed by one.
    fn watermark_report(&self) -> Vec<(u32, Option<i64>, u64)> {
        let mut out = vec![];
        for (object_id, ids) in &self.objects {
            if self.transient.contains(object_id) {
                continue;
            }
            let Some(last) = ids.last().and_then(|id| self.nodes.get(id)) else {
                continue;
            };
            if last.wm_sources.is_empty() {
                continue;
            }
            let (wm, late) = if self.watermarked.contains(object_id) {
                let t = self.source_time.get(object_id).copied().unwrap_or_default();
                (t.watermark, t.late_rows)
            } else {
                let late = ids
                    .iter()
                    .filter_map(|id| self.nodes.get(id))
                    .map(|n| n.op.late_rows())
                    .sum();
                (self.node_watermark(last), late)
            };
            out.push((*object_id, wm, late));
        }
        out.sort();
        out
    }

    fn next_epoch(&self) -> u64 {
        now_ms().max(self.epoch + 1).max(self.progress_floor + 1)
    }

    /// Tell every subscriber that time has advanced to now (nothing changed): clients see
    /// progress, and subscribers whose client went away are dropped.
    fn heartbeat(&mut self) {
        self.last_heartbeat = Instant::now();
        let mark = now_ms().max(self.epoch);
        self.progress_floor = self.progress_floor.max(mark);
        for subs in self.subscribers.values_mut() {
            subs.retain(|s| s.deliver(SubscriptionEvent::Progress { epoch: mark }));
        }
        self.subscribers.retain(|_, s| !s.is_empty());
    }

    /// Deliver an epoch's changes, then progress, to subscribers; remember history.
    /// (`recorded`: the history already has this epoch.)
    fn deliver(&mut self, epoch: u64, captured: HashMap<u32, Vec<ChangeBatch>>, recorded: bool) {
        if !recorded {
            self.record_history(epoch, &captured);
        }
        for (object_id, batches) in captured {
            if let Some(subs) = self.subscribers.get_mut(&object_id) {
                subs.retain(|s| {
                    s.deliver(SubscriptionEvent::Changes {
                        epoch,
                        batches: batches.clone(),
                    })
                });
            }
        }
        // Progress never goes backwards (a heartbeat may already have certified a
        // later time than an epoch that changed nothing durable).
        let mark = epoch.max(self.epoch).max(self.progress_floor);
        self.progress_floor = mark;
        for subs in self.subscribers.values_mut() {
            subs.retain(|s| s.deliver(SubscriptionEvent::Progress { epoch: mark }));
        }
        self.subscribers.retain(|_, s| !s.is_empty());
        self.last_heartbeat = Instant::now();
    }

    /// Add an epoch's changes to the histories of the relations that keep one.
    fn record_history(&mut self, epoch: u64, captured: &HashMap<u32, Vec<ChangeBatch>>) {
        let cfg = &self.config.subscribe;
        for (object_id, batches) in captured {
            if let Some(h) = self.history.get_mut(object_id) {
                h.push(epoch, batches.clone(), cfg.retention, cfg.retention_rows);
            }
        }
    }

    /// Register a subscriber on a relation (between epochs, so its snapshot and the
    /// changes that follow fit exactly).
    fn subscribe(
        &mut self,
        object_id: u32,
        snapshot: bool,
        as_of: Option<u64>,
    ) -> Result<SubscriptionReceiver> {
        let out = *self
            .objects
            .get(&object_id)
            .and_then(|n| n.last())
            .ok_or_else(|| Error::internal(format!("relation {object_id} has no dataflow")))?;
        let epoch = self.epoch;
        if !self.history.contains_key(&object_id) && !self.transient.contains(&object_id) {
            // The first subscriber: from now on the relation's changes are retained, and
            // stored at checkpoints. Record durably that the history starts here, so a
            // resume after a crash finds it (the epochs since the last checkpoint come
            // back with the log replay).
            let mut batch = WriteBatch::new();
            batch.put(
                keys::history_since_key(object_id),
                epoch.to_be_bytes().to_vec(),
            );
            self.storage
                .commit(batch)
                .and_then(|_| self.storage.flush())?;
        }
        let history = self.history.entry(object_id).or_insert_with(|| {
            let mut h = History::new(epoch);
            h.persisted_upto = epoch;
            h
        });
        let cfg = &self.config.subscribe;
        // The channel holds events; rows are bounded separately (max_pending_rows).
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
        let shared = Arc::new(SubscriberShared::default());
        let sub = Subscriber {
            tx,
            shared: shared.clone(),
            max_pending_rows: cfg.max_pending_rows,
        };
        let start_epoch = match as_of {
            Some(e) => {
                if e < history.since {
                    return Err(Error::invalid_with(
                        "22023",
                        format!(
                            "cannot resume AS OF {e}: changes are retained since epoch {} \
                             (see --subscribe-retention); subscribe again with a snapshot",
                            history.since
                        ),
                    ));
                }
                // Progress marks a client saw before a restart may be later than the last
                // epoch on disk, but never later than the clock.
                if e > epoch.max(self.progress_floor).max(now_ms()) {
                    return Err(Error::invalid_with(
                        "22023",
                        format!("AS OF {e} is in the future (the latest epoch is {epoch})"),
                    ));
                }
                // Every later epoch must be numbered after `e`.
                self.progress_floor = self.progress_floor.max(e);
                for (he, _, batches) in &history.epochs {
                    if *he > e
                        && !sub.deliver_catch_up(SubscriptionEvent::Changes {
                            epoch: *he,
                            batches: batches.clone(),
                        })
                    {
                        return Err(Error::internal(
                            "the subscriber went away during its catch-up",
                        ));
                    }
                }
                e
            }
            None => {
                if snapshot {
                    let contents = self
                        .nodes
                        .get(&out)
                        .and_then(|n| n.op.contents())
                        .transpose()?
                        .unwrap_or_default();
                    if !sub.deliver(SubscriptionEvent::Changes {
                        epoch,
                        batches: contents,
                    }) {
                        return Err(Error::invalid_with(
                            "53400",
                            "the snapshot exceeds the subscriber buffer; subscribe WITH (SNAPSHOT = false)",
                        ));
                    }
                }
                epoch
            }
        };
        let mark = epoch.max(self.progress_floor);
        self.progress_floor = mark;
        sub.deliver(SubscriptionEvent::Progress { epoch: mark });
        self.subscribers.entry(object_id).or_default().push(sub);
        Ok(SubscriptionReceiver {
            rx,
            shared,
            start_epoch,
        })
    }

    /// Replay every logged epoch (in order, with its own epoch number), then checkpoint.
    fn replay_log(&mut self) -> Result<u64> {
        self.log_replayed = true;
        let entries = self.storage.scan_prefix(keys::LOG_PREFIX)?;
        let n = entries.len() as u64;
        if n == 0 {
            return Ok(0);
        }
        info!(
            epochs = n,
            "replaying the input log after the last checkpoint"
        );
        self.replaying = true;
        for (k, v) in entries {
            let epoch = input_log::epoch_of(&k)?;
            let entry = input_log::decode_entry(&v)?;
            self.pending_time.extend(entry.watermarks);
            let mut writes = entry.writes;
            // A stream's rows of this epoch are its own chunk of this epoch.
            for object_id in entry.in_state {
                let (node_id, node) = self
                    .objects
                    .get(&object_id)
                    .and_then(|n| n.last())
                    .and_then(|id| Some((*id, self.nodes.get(id)?)))
                    .ok_or_else(|| {
                        Error::Storage(format!(
                            "the input log names relation {object_id}, which does not exist"
                        ))
                    })?;
                let state = StateReader::new(node.state_id, self.storage.as_ref());
                match node.op.logged_rows(epoch, &state) {
                    Ok(batches) => writes.extend(
                        batches
                            .into_iter()
                            .map(|b| (object_id, ChangeBatch::inserts(b))),
                    ),
                    // Rows that cannot be read back make the relation (and the views
                    // over it) stale, and say so when read; eddy still starts.
                    Err(e) => {
                        error!(object = object_id, "cannot replay epoch {epoch}: {e}");
                        self.failed_in_replay.push((node_id, e.to_string()));
                    }
                }
            }
            let cmds = writes
                .into_iter()
                .map(|(object_id, changes)| {
                    let (reply, _) = oneshot::channel();
                    Command::Write {
                        object_id,
                        changes,
                        extra: WriteBatch::new(),
                        time: None,
                        reply,
                    }
                })
                .collect();
            self.run_epoch(cmds, Some(epoch));
        }
        self.replaying = false;
        // The replayed state is dirty: the next checkpoint (after the interval, while
        // eddy already serves) stores it and empties the log. Until then a crash replays
        // the same log again, which ends in the same state.
        if let Some(why) = &self.broken {
            return Err(Error::Storage(why.clone()));
        }
        Ok(n)
    }

    /// Every dirty operator writes its state; the log before this epoch is covered.
    /// Returns what `SHOW CHECKPOINTS` will say of it once it is committed.
    fn write_checkpoint(
        &mut self,
        batch: &mut WriteBatch,
        epoch: u64,
        reason: &str,
    ) -> CheckpointInfo {
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            if let Some(node) = self.nodes.get_mut(id) {
                if node.failed.is_some() {
                    continue;
                }
                if let Err(e) =
                    node.runs
                        .checkpoint(node.op.as_mut(), epoch, self.storage.as_ref(), batch)
                {
                    error!(
                        object = node.object_id,
                        "checkpoint of {} failed: {e}",
                        node.op.name()
                    );
                    node.failed = Some(e.to_string());
                }
            }
        }
        self.write_history(batch);
        batch.delete_prefix(keys::LOG_PREFIX.to_vec());
        batch.put(keys::meta_key(CHECKPOINT_KEY), epoch.to_be_bytes().to_vec());
        if let Ok(json) = serde_json::to_vec(&self.source_time) {
            batch.put(keys::meta_key(WATERMARKS_KEY), json);
        }
        self.last_checkpoint = Instant::now();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let info = CheckpointInfo {
            epoch,
            at_ms: now_ms(),
            reason: reason.into(),
            duration_ms: None,
            bytes: batch.size_bytes() as u64,
            keys: batch.len() as u64,
            positions: self
                .positions
                .iter()
                .map(|(k, v)| (text(k), text(v)))
                .collect(),
        };
        if let Ok(json) = serde_json::to_vec(&info) {
            batch.put(keys::meta_key(CHECKPOINT_INFO_KEY), json);
        }
        info
    }

    /// A checkpoint was committed: remember it for `SHOW CHECKPOINTS`.
    fn record_checkpoint(&self, mut info: CheckpointInfo, took: Duration) {
        let m = &self.metrics;
        info.duration_ms = Some(took.as_secs_f64() * 1e3);
        m.checkpoints.fetch_add(1, Ordering::Relaxed);
        m.checkpoint_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        m.checkpoint_bytes.fetch_add(info.bytes, Ordering::Relaxed);
        debug!(
            epoch = info.epoch,
            bytes = info.bytes,
            ms = info.duration_ms,
            "checkpoint"
        );
        if let Ok(mut recent) = m.recent_checkpoints.lock() {
            recent.push_back(info);
            while recent.len() > RECENT_CHECKPOINTS {
                recent.pop_front();
            }
        }
    }

    /// Store the subscription histories' new epochs and delete the expired ones, so
    /// that `AS OF` resumes work after a restart (the log replay adds the epochs after
    /// this checkpoint). Subscriptions to a query (transient objects) cannot outlive the
    /// server and are not stored.
    fn write_history(&mut self, batch: &mut WriteBatch) {
        for (object_id, h) in self.history.iter_mut() {
            if self.transient.contains(object_id) {
                continue;
            }
            for e in h.expired.drain(..) {
                batch.delete(keys::history_entry_key(*object_id, e));
            }
            let upto = h.persisted_upto;
            for (epoch, _, batches) in h.epochs.iter().filter(|(e, _, _)| *e > upto) {
                let writes: Vec<(u32, ChangeBatch)> =
                    batches.iter().map(|b| (*object_id, b.clone())).collect();
                match input_log::encode(&writes) {
                    Ok(v) => batch.put(keys::history_entry_key(*object_id, *epoch), v),
                    Err(e) => {
                        // The stored history must not claim the epoch: after a restart it
                        // is complete only from here (in memory it stays complete).
                        error!(object = object_id, "cannot store subscription history: {e}");
                        h.stored_since = h.stored_since.max(*epoch);
                    }
                }
                h.persisted_upto = *epoch;
            }
            batch.put(
                keys::history_since_key(*object_id),
                h.since.max(h.stored_since).to_be_bytes().to_vec(),
            );
        }
    }

    /// Run one epoch. `replayed`: the epoch number of a logged epoch being replayed.
    fn run_epoch(&mut self, cmds: Vec<Command>, replayed: Option<u64>) {
        let started = Instant::now();
        let epoch = replayed.unwrap_or_else(|| self.next_epoch());
        let mut batch = WriteBatch::new();
        let mut replies: Vec<Reply<u64>> = vec![];
        let mut touched: BTreeSet<u64> = BTreeSet::new();
        let mut dropped: Vec<u32> = vec![];
        let mut inputs = EpochInputs::default();
        for (object_id, time) in std::mem::take(&mut self.pending_time) {
            if let Some(json) = self
                .trackers
                .get(&object_id)
                .and_then(|t| serde_json::to_vec(t.state()).ok())
            {
                batch.put(tracker_key(object_id), json);
            }
            self.raise_time(object_id, time, &mut inputs);
        }
        // Why this epoch must checkpoint, if it must.
        let mut force_checkpoint: Option<&'static str> = None;
        // Nodes installed in this epoch run even without input: a global aggregate
        // must emit its row (count 0) over an empty input.
        let mut fresh: BTreeSet<u64> = BTreeSet::new();

        for cmd in cmds {
            match cmd {
                Command::Install {
                    subgraph,
                    restore,
                    catalog,
                    reply,
                } => {
                    if let Some(why) = &self.broken {
                        let _ = reply.send(Err(Error::Storage(why.clone())));
                        continue;
                    }
                    let transient = subgraph.transient;
                    let object_id = subgraph.object_id;
                    match self.install(subgraph, restore, &mut touched) {
                        Ok(ids) => {
                            batch.extend(catalog);
                            if transient {
                                self.transient.insert(object_id);
                                fresh.extend(ids);
                            } else if !restore {
                                // The catalog entry and the backfilled state are written
                                // together, by a checkpoint.
                                fresh.extend(ids);
                                force_checkpoint = Some("ddl");
                            }
                            replies.push(reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Command::Drop {
                    object_id,
                    catalog,
                    reply,
                } => {
                    if let Some(ids) = self.objects.get(&object_id) {
                        for id in ids {
                            self.dirty.remove(id);
                        }
                    }
                    self.remove(object_id, &mut touched);
                    if self.trackers.remove(&object_id).is_some() {
                        batch.delete(tracker_key(object_id));
                    }
                    self.watermarked.remove(&object_id);
                    self.source_time.remove(&object_id);
                    self.stale.remove(&object_id);
                    for s in self.subscribers.remove(&object_id).unwrap_or_default() {
                        s.shared.relation_dropped.store(true, Ordering::Relaxed);
                    }
                    self.history.remove(&object_id);
                    if !self.transient.remove(&object_id) {
                        batch.delete_prefix(keys::object_state_prefix(object_id));
                        batch.delete_prefix(keys::object_run_prefix(object_id));
                        batch.delete_prefix(keys::history_prefix(object_id));
                        batch.extend(catalog);
                        force_checkpoint = Some("ddl");
                    }
                    dropped.push(object_id);
                    replies.push(reply);
                }
                Command::Write {
                    object_id,
                    mut changes,
                    extra,
                    time,
                    reply,
                } => {
                    if let Some(why) = &self.broken {
                        let _ = reply.send(Err(Error::Storage(why.clone())));
                        continue;
                    }
                    if let Some(time) = time {
                        self.raise_time(object_id, time, &mut inputs);
                    }
                    // Rows written with INSERT meet their relation's watermark here
                    // (once: a replay applies the rows the log kept).
                    if let Some(tracker) = self
                        .trackers
                        .get_mut(&object_id)
                        .filter(|_| !self.replaying)
                    {
                        let before = tracker.state().clone();
                        match tracker.filter(changes, |_| 0) {
                            Ok(kept) => changes = kept,
                            Err(e) => {
                                let _ = reply.send(Err(e));
                                continue;
                            }
                        }
                        if *tracker.state() != before {
                            let time = tracker.time();
                            if let Ok(json) = serde_json::to_vec(tracker.state()) {
                                batch.put(tracker_key(object_id), json);
                            }
                            self.raise_time(object_id, time, &mut inputs);
                        }
                    }
                    match self.objects.get(&object_id).and_then(|n| n.last()) {
                        Some(id) => {
                            if !changes.is_empty() {
                                if let Some(node) = self.nodes.get_mut(id) {
                                    if node.op.logs_own_input() {
                                        if !inputs.in_state.contains(&object_id) {
                                            inputs.in_state.push(object_id);
                                        }
                                    } else {
                                        inputs.writes.push((object_id, changes.clone()));
                                    }
                                    node.pending.push((0, changes));
                                    touched.insert(*id);
                                }
                            }
                            batch.extend(extra);
                            replies.push(reply);
                        }
                        None => {
                            let _ = reply.send(Err(Error::internal(format!(
                                "write to object {object_id}, which has no operators"
                            ))));
                        }
                    }
                }
                Command::Checkpoint { reason, reply } => {
                    force_checkpoint = Some(reason);
                    replies.push(reply);
                }
                Command::Subscribe {
                    object_id,
                    snapshot,
                    as_of,
                    reply,
                } => {
                    let _ = reply.send(self.subscribe(object_id, snapshot, as_of));
                }
                Command::Sync { reply } => replies.push(reply),
                Command::ReplayLog { reply } => {
                    let _ = reply.send(Err(Error::internal("log replay inside an epoch")));
                }
                Command::Explain {
                    object_id,
                    names,
                    analyze,
                    reply,
                } => {
                    let _ = reply.send(self.explain(object_id, &names, analyze));
                }
                Command::Stats { reply } => {
                    // Count live subscribers only: one whose receiver was dropped (a
                    // closed cursor) is otherwise removed at the next delivery.
                    for subs in self.subscribers.values_mut() {
                        subs.retain(|s| !s.tx.is_closed());
                    }
                    self.subscribers.retain(|_, s| !s.is_empty());
                    let stats = self
                        .objects
                        .iter()
                        .map(|(id, nodes)| {
                            let n = nodes
                                .iter()
                                .filter_map(|n| self.nodes.get(n))
                                .map(|n| n.op.state_entries())
                                .sum();
                            let subs = self.subscribers.get(id).map_or(0, |s| s.len());
                            (*id, n, subs)
                        })
                        .collect();
                    let _ = reply.send(Ok(stats));
                }
                Command::Watermarks { reply } => {
                    let _ = reply.send(Ok(self.watermark_report()));
                }
            }
        }

        let mut captured: HashMap<u32, Vec<ChangeBatch>> = HashMap::new();
        let processed = self.propagate(&mut touched, fresh, &mut captured);
        // Transient objects (one subscription's query) are never checkpointed.
        let transient = &self.transient;
        let nodes = &self.nodes;
        self.dirty.extend(processed.iter().copied().filter(|id| {
            nodes
                .get(id)
                .is_none_or(|n| !transient.contains(&n.object_id))
        }));
        // State that is durable with every epoch (a stream's rows), in this epoch's
        // commit.
        for id in &processed {
            if let Some(node) = self.nodes.get_mut(id) {
                if node.failed.is_some() || self.transient.contains(&node.object_id) {
                    continue;
                }
                if let Err(e) = node
                    .op
                    .persist_epoch(epoch, &mut StateWriter::new(node.state_id, &mut batch))
                {
                    error!(
                        object = node.object_id,
                        "{} could not store its epoch; the relation stops updating: {e}",
                        node.op.name()
                    );
                    node.failed = Some(e.to_string());
                }
            }
        }
        let processed_at = Instant::now();

        // Durability: a checkpoint (all dirty state) when one is due, otherwise just
        // this epoch's inputs in the log.
        // The positions sources commit with this epoch (SHOW CHECKPOINTS reports them).
        for (k, v) in batch.ops() {
            if k.starts_with(keys::SOURCE_PROGRESS_PREFIX) {
                match v {
                    Some(v) => self.positions.insert(k.clone(), v.clone()),
                    None => self.positions.remove(k),
                };
            }
        }
        let checkpoint_reason = if self.replaying {
            None
        } else if force_checkpoint.is_some() {
            force_checkpoint
        } else if self.checkpoint_due() {
            Some("interval")
        } else {
            None
        };
        let mut checkpoint_info = None;
        let mut log_bytes = 0;
        // A checkpoint stores the histories and empties the log, so this epoch's changes
        // must be in the histories before it is written (the epoch is durable: it is
        // labelled with its own number).
        let history_recorded = checkpoint_reason.is_some();
        if let Some(reason) = checkpoint_reason {
            self.record_history(epoch, &captured);
            checkpoint_info = Some(self.write_checkpoint(&mut batch, epoch, reason));
        } else if (!inputs.writes.is_empty()
            || !inputs.in_state.is_empty()
            || !inputs.watermarks.is_empty())
            && !self.replaying
        {
            match input_log::encode_entry(&inputs.writes, &inputs.watermarks, &inputs.in_state) {
                Ok(entry) => {
                    log_bytes = entry.len() as u64;
                    batch.put(input_log::entry_key(epoch), entry);
                }
                Err(e) => {
                    self.fail_all(replies, format!("cannot encode the input log: {e}"));
                    return;
                }
            }
        }
        let durable = !batch.is_empty();
        if durable {
            batch.put(keys::meta_key(EPOCH_KEY), epoch.to_be_bytes().to_vec());
            if let Err(e) = self
                .storage
                .commit(batch)
                .and_then(|_| self.storage.flush())
            {
                self.fail_all(
                    replies,
                    format!("the last write could not be committed ({e})"),
                );
                return;
            }
        }
        if durable || replayed.is_some() {
            self.epoch = self.epoch.max(epoch);
        }
        let m = &self.metrics;
        let process = processed_at.duration_since(started).as_nanos() as u64;
        let commit = processed_at.elapsed().as_nanos() as u64;
        if !processed.is_empty() || durable {
            m.epochs.fetch_add(1, Ordering::Relaxed);
            m.process_ns.fetch_add(process, Ordering::Relaxed);
            m.last_process_ns.store(process, Ordering::Relaxed);
            m.commit_ns.fetch_add(commit, Ordering::Relaxed);
            m.last_commit_ns.store(commit, Ordering::Relaxed);
            m.log_bytes.fetch_add(log_bytes, Ordering::Relaxed);
        }
        if let Some(info) = checkpoint_info {
            self.record_checkpoint(info, Duration::from_nanos(commit));
        }

        // Publish: relations that changed get fresh snapshots; the rest are shared.
        let mut changed = false;
        for id in processed.iter().chain(touched.iter()) {
            if let Some(node) = self.nodes.get(id) {
                let is_output =
                    self.objects.get(&node.object_id).and_then(|n| n.last()) == Some(id);
                if is_output {
                    if let Some(s) = node.op.snapshot() {
                        let s = match self.stale.get(&node.object_id) {
                            Some(why) => s.with_failure(why.clone()),
                            None => s,
                        };
                        self.published.insert(node.object_id, Arc::new(s));
                        changed = true;
                    }
                }
            }
        }
        // A node that failed in this epoch: its relation and every one downstream are
        // stale from now on, and say so when read.
        let mut failed: Vec<(u64, String)> = processed
            .iter()
            .filter_map(|id| Some((*id, self.nodes.get(id)?.failed.clone()?)))
            .collect();
        for (id, why) in std::mem::take(&mut self.failed_in_replay) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.failed = Some(why.clone());
            }
            failed.push((id, why));
        }
        for (start, why) in failed {
            let mut stack = vec![start];
            let mut seen = BTreeSet::new();
            while let Some(id) = stack.pop() {
                if !seen.insert(id) {
                    continue;
                }
                let Some(node) = self.nodes.get(&id) else {
                    continue;
                };
                stack.extend(node.outputs.iter().map(|(d, _)| *d));
                let is_output =
                    self.objects.get(&node.object_id).and_then(|n| n.last()) == Some(&id);
                if is_output {
                    self.stale.insert(node.object_id, why.clone());
                    if let Some(s) = node.op.snapshot() {
                        self.published
                            .insert(node.object_id, Arc::new(s.with_failure(why.clone())));
                        changed = true;
                    }
                }
            }
        }
        for id in &dropped {
            changed |= self.published.remove(id).is_some();
        }
        if changed || durable {
            self.snapshots.publish(DatabaseSnapshot {
                epoch: self.epoch,
                relations: self.published.clone(),
            });
        }
        // Subscribers see an epoch's changes once they are published (and durable).
        if !self.subscribers.is_empty() || !captured.is_empty() {
            let label = if durable || replayed.is_some() {
                epoch
            } else {
                self.epoch
            };
            self.deliver(label, captured, history_recorded);
        }
        for r in replies {
            let _ = r.send(Ok(self.epoch));
        }
    }

    /// After a failed commit memory is ahead of disk: refuse further writes.
    fn fail_all(&mut self, replies: Vec<Reply<u64>>, what: String) {
        let why = format!(
            "{what}; eddy has stopped accepting writes to protect the last good state — restart it"
        );
        error!("{why}");
        self.broken = Some(why.clone());
        for r in replies {
            let _ = r.send(Err(Error::Storage(why.clone())));
        }
    }

    /// Install a subgraph; returns its node ids.
    fn install(
        &mut self,
        subgraph: Subgraph,
        restore: bool,
        touched: &mut BTreeSet<u64>,
    ) -> Result<Vec<u64>> {
        let object_id = subgraph.object_id;
        if self.objects.contains_key(&object_id) {
            return Err(Error::internal(format!(
                "object {object_id} is already installed"
            )));
        }
        // Resolve inputs first, so a bad subgraph installs nothing.
        let base = self.next_node;
        let mut resolved: Vec<Vec<u64>> = vec![];
        for (i, spec) in subgraph.nodes.iter().enumerate() {
            let mut ins = vec![];
            for input in &spec.inputs {
                ins.push(match input {
                    NodeInput::Local(j) if *j < i => base + *j as u64,
                    NodeInput::Local(j) => {
                        return Err(Error::internal(format!("node {i} reads later node {j}")))
                    }
                    NodeInput::Relation(rel) => *self
                        .objects
                        .get(rel)
                        .and_then(|n| n.last())
                        .ok_or_else(|| {
                            Error::internal(format!("relation {rel} is not installed"))
                        })?,
                });
            }
            resolved.push(ins);
        }
        if let Some(w) = &subgraph.watermark {
            self.watermarked.insert(object_id);
            if w.embedded {
                let state: WatermarkState = match self.storage.get(&tracker_key(object_id))? {
                    Some(v) if restore => serde_json::from_slice(&v).map_err(|e| {
                        Error::Storage(format!("corrupt watermark state of {object_id}: {e}"))
                    })?,
                    _ => WatermarkState::default(),
                };
                self.trackers
                    .insert(object_id, WatermarkTracker::new(&w.def, w.column, state));
            }
        }
        let mut ids = vec![];
        for (i, (spec, inputs)) in subgraph.nodes.into_iter().zip(resolved).enumerate() {
            let id = base + i as u64;
            let state_id = keys::state_id(object_id, i as u32);
            let mut op = spec.op;
            if !subgraph.transient {
                op.attach_storage(&self.storage, state_id);
            }
            let runs = if restore {
                op.restore(
                    &StateReader::new(state_id, self.storage.as_ref())
                        .at_checkpoint(self.restored_checkpoint),
                )?;
                StateRuns::load(self.storage.as_ref(), state_id, op.logs_own_input())?
            } else {
                StateRuns::load(self.storage.as_ref(), state_id, true)?
            };
            for (port, input) in inputs.iter().enumerate() {
                if let Some(up) = self.nodes.get_mut(input) {
                    up.outputs.push((id, port));
                }
            }
            let mut wm_sources: Vec<u32> = inputs
                .iter()
                .filter_map(|i| self.nodes.get(i))
                .flat_map(|n| n.wm_sources.iter().copied())
                .collect();
            if inputs.is_empty() && self.watermarked.contains(&object_id) {
                wm_sources.push(object_id);
            }
            wm_sources.sort_unstable();
            wm_sources.dedup();
            let mut node = Node {
                op,
                object_id,
                state_id,
                outputs: vec![],
                inputs: inputs.clone(),
                pending: vec![],
                failed: None,
                busy_ns: 0,
                rows_in: 0,
                wm_sources,
                wm_seen: None,
                runs,
            };
            if !restore {
                // Backfill: a new operator first sees the current contents of the
                // existing relations it reads, and constant inputs.
                for (port, input) in spec.inputs.iter().enumerate() {
                    let source = match input {
                        NodeInput::Relation(_) => self.nodes.get(&inputs[port]).map(|n| &n.op),
                        NodeInput::Local(_) => None,
                    };
                    if let Some(contents) = source.and_then(|op| op.contents()) {
                        for b in contents? {
                            node.pending.push((port, b));
                        }
                    }
                }
                touched.insert(id);
            }
            self.nodes.insert(id, node);
            ids.push(id);
        }
        if !restore {
            // Constant sources (VALUES) inside the subgraph feed their consumers once.
            for &id in &ids {
                let contents = match self.nodes.get(&id) {
                    Some(n) if n.inputs.is_empty() && n.op.snapshot().is_none() => n.op.contents(),
                    _ => None,
                };
                if let Some(contents) = contents {
                    let contents = contents?;
                    let outputs = self
                        .nodes
                        .get(&id)
                        .map(|n| n.outputs.clone())
                        .unwrap_or_default();
                    for (down, port) in outputs {
                        if let Some(d) = self.nodes.get_mut(&down) {
                            for b in &contents {
                                d.pending.push((port, b.clone()));
                            }
                        }
                    }
                }
            }
        } else if let Some(last) = ids.last() {
            touched.insert(*last);
        }
        self.next_node = base + ids.len() as u64;
        info!(object_id, nodes = ids.len(), restore, "installed dataflow");
        self.objects.insert(object_id, ids.clone());
        Ok(ids)
    }

    /// The columns of node `id`'s output that its readers read: each downstream
    /// operator's [`Operator::columns_read`], and every column when the relation has
    /// subscribers or history. Published for the relation's source
    /// ([`DataflowHandle::columns_read`]).
    fn columns_read_by(&self, id: u64) -> super::ColumnSet {
        let Some(node) = self.nodes.get(&id) else {
            return super::ColumnSet::ALL;
        };
        let object_id = node.object_id;
        let watched =
            self.subscribers.contains_key(&object_id) || self.history.contains_key(&object_id);
        let read = if watched {
            super::ColumnSet::ALL
        } else {
            node.outputs
                .iter()
                .map(|(down, port)| {
                    self.nodes
                        .get(down)
                        .and_then(|d| d.op.columns_read(*port))
                        .unwrap_or(super::ColumnSet::ALL)
                })
                .fold(super::ColumnSet::NONE, super::ColumnSet::union)
        };
        if let Some(hint) = self
            .columns_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&object_id)
        {
            hint.store(read.bits(), Ordering::Relaxed);
        }
        read
    }

    fn remove(&mut self, object_id: u32, touched: &mut BTreeSet<u64>) {
        self.columns_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&object_id);
        let Some(ids) = self.objects.remove(&object_id) else {
            return;
        };
        for id in &ids {
            if let Some(node) = self.nodes.remove(id) {
                for input in node.inputs {
                    if let Some(up) = self.nodes.get_mut(&input) {
                        up.outputs.retain(|(d, _)| d != id);
                    }
                }
            }
            touched.remove(id);
        }
    }

    /// Run every node with pending input, in topological order, until nothing is
    /// pending. The output of each subscribed relation is collected into `captured`.
    fn propagate(
        &mut self,
        touched: &mut BTreeSet<u64>,
        fresh: BTreeSet<u64>,
        captured: &mut HashMap<u32, Vec<ChangeBatch>>,
    ) -> BTreeSet<u64> {
        let mut ran = BTreeSet::new();
        let mut ready: BTreeSet<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ready.extend(fresh);
        // Nodes whose input watermark rose run even without input.
        ready.extend(
            self.nodes
                .iter()
                .filter(|(_, n)| n.op.wants_watermark() && n.failed.is_none())
                .filter(|(_, n)| {
                    self.node_watermark(n)
                        .is_some_and(|w| n.wm_seen.is_none_or(|s| w > s))
                })
                .map(|(id, _)| *id),
        );
        while let Some(id) = ready.pop_first() {
            let (watermark, read) = match self.nodes.get(&id) {
                Some(n) => (
                    n.op.wants_watermark()
                        .then(|| self.node_watermark(n))
                        .flatten()
                        .filter(|w| n.wm_seen.is_none_or(|s| *w > s)),
                    n.op.omits_columns().then(|| self.columns_read_by(id)),
                ),
                None => (None, None),
            };
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            let inputs = std::mem::take(&mut node.pending);
            if node.failed.is_some() {
                continue;
            }
            if let Some(read) = read {
                node.op.set_columns_read(read);
            }
            let mut out = vec![];
            let mut result = Ok(());
            let t0 = Instant::now();
            for (port, batch) in inputs {
                node.rows_in += batch.num_rows() as u64;
                result = node.op.process(port, batch, &mut out);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                result = node.op.end_epoch(&mut out);
            }
            if let (Ok(()), Some(w)) = (&result, watermark) {
                result = node.op.on_watermark(w, &mut out);
                node.wm_seen = Some(w);
            }
            node.busy_ns += t0.elapsed().as_nanos() as u64;
            ran.insert(id);
            if let Err(e) = result {
                error!(
                    object = node.object_id,
                    "{} failed; the view stops updating: {e}",
                    node.op.name()
                );
                node.failed = Some(e.to_string());
                continue;
            }
            let object_id = node.object_id;
            let watched =
                self.subscribers.contains_key(&object_id) || self.history.contains_key(&object_id);
            if watched && self.objects.get(&object_id).and_then(|n| n.last()) == Some(&id) {
                captured
                    .entry(object_id)
                    .or_default()
                    .extend(out.iter().filter(|b| !b.is_empty()).cloned());
            }
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            let outputs = node.outputs.clone();
            for (down, port) in outputs {
                if let Some(d) = self.nodes.get_mut(&down) {
                    for b in out.iter().filter(|b| !b.is_empty()) {
                        d.pending.push((port, b.clone()));
                    }
                    if !d.pending.is_empty() {
                        ready.insert(down);
                    }
                }
            }
        }
        touched.extend(ran.iter().copied());
        ran
    }

    fn explain(
        &self,
        object_id: u32,
        names: &HashMap<u32, String>,
        analyze: bool,
    ) -> Result<String> {
        let ids = self
            .objects
            .get(&object_id)
            .ok_or_else(|| Error::internal(format!("object {object_id} has no dataflow")))?;
        let local: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let node_object: HashMap<u64, u32> = self
            .objects
            .iter()
            .filter_map(|(obj, ids)| ids.last().map(|last| (*last, *obj)))
            .collect();
        let mut out = String::new();
        let ctx = ExplainCtx {
            local: &local,
            node_object: &node_object,
            names,
            analyze,
        };
        let mut seen = HashSet::new();
        if let Some(last) = ids.last() {
            self.explain_node(*last, 0, &ctx, &mut seen, &mut out);
        }
        Ok(out)
    }

    fn explain_node(
        &self,
        id: u64,
        depth: usize,
        ctx: &ExplainCtx,
        seen: &mut HashSet<u64>,
        out: &mut String,
    ) {
        let ExplainCtx {
            local,
            node_object,
            names,
            analyze,
        } = ctx;
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let indent = "  ".repeat(depth);
        if !seen.insert(id) {
            out.push_str(&format!(
                "{indent}{} (shared: shown above)\n",
                node.op.name()
            ));
            return;
        }
        out.push_str(&indent);
        out.push_str(node.op.name());
        let detail = node.op.describe();
        if !detail.is_empty() {
            out.push(' ');
            out.push_str(&detail);
        }
        if let Some(state) = node.op.state_description() {
            out.push_str(&format!(
                "  [state: {state}; {} entries]",
                node.op.state_entries()
            ));
        }
        if *analyze {
            out.push_str(&format!(
                "  [rows in: {}, busy: {:.1} ms]",
                node.rows_in,
                node.busy_ns as f64 / 1e6
            ));
        }
        if let Some(f) = &node.failed {
            out.push_str(&format!("  [FAILED: {f}]"));
        }
        out.push('\n');
        for input in &node.inputs {
            if local.contains_key(input) {
                self.explain_node(*input, depth + 1, ctx, seen, out);
            } else {
                let name = node_object
                    .get(input)
                    .and_then(|o| names.get(o))
                    .cloned()
                    .unwrap_or_else(|| format!("node {input}"));
                out.push_str(&format!("{indent}  Read {name}\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::stream::StreamOperator;
    use crate::dataflow::testing::*;

    /// Passes rows through until it sees a negative value, then fails (a stand-in for
    /// an operator with a bug).
    struct Fragile(datafusion::arrow::datatypes::SchemaRef);

    impl Operator for Fragile {
        fn name(&self) -> &'static str {
            "Fragile"
        }
        fn output_schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
            self.0.clone()
        }
        fn process(
            &mut self,
            _port: usize,
            batch: ChangeBatch,
            out: &mut super::super::Output,
        ) -> Result<()> {
            if batch.to_sorted_strings().iter().any(|r| r.starts_with('-')) {
                return Err(Error::internal("fragile operator met a negative value"));
            }
            out.push(batch);
            Ok(())
        }
    }

    /// View `object_id` that keeps every row of relation `input` (stored like a stream).
    fn stream_view(
        object_id: u32,
        input: u32,
        s: &datafusion::arrow::datatypes::SchemaRef,
    ) -> Subgraph {
        Subgraph {
            object_id,
            nodes: vec![NodeSpec {
                op: Box::new(StreamOperator::new("view", s.clone())),
                inputs: vec![NodeInput::Relation(input)],
            }],
            append_only: true,
            transient: false,
            watermark: None,
        }
    }

    /// A runtime in memory with one stream (object 1) of one BIGINT column `v`.
    async fn runtime_with_stream(
        config: RuntimeConfig,
    ) -> (DataflowHandle, datafusion::arrow::datatypes::SchemaRef) {
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::MemoryStorage::new());
        let (rt, _) = Runtime::start(storage, config).unwrap();
        let s = schema(&[("v", I64)]);
        rt.install(
            Subgraph::single(1, Box::new(StreamOperator::new("src", s.clone()))),
            false,
            WriteBatch::new(),
        )
        .await
        .unwrap();
        (rt, s)
    }

    #[tokio::test]
    async fn a_failed_operator_makes_its_relation_and_those_downstream_refuse_reads() {
        let (rt, s) = runtime_with_stream(RuntimeConfig::default()).await;
        let view = Subgraph {
            object_id: 2,
            nodes: vec![
                NodeSpec {
                    op: Box::new(Fragile(s.clone())),
                    inputs: vec![NodeInput::Relation(1)],
                },
                NodeSpec {
                    op: Box::new(StreamOperator::new("v", s.clone())),
                    inputs: vec![NodeInput::Local(0)],
                },
            ],
            append_only: true,
            transient: false,
            watermark: None,
        };
        rt.install(view, false, WriteBatch::new()).await.unwrap();
        rt.install(stream_view(3, 2, &s), false, WriteBatch::new())
            .await
            .unwrap();
        rt.write(1, changes(&s, "1 +1")).await.unwrap();
        let snap = rt.snapshots().current();
        assert_eq!(snap.get(2).unwrap().batches().unwrap()[0].num_rows(), 1);
        rt.write(1, changes(&s, "-5 +1")).await.unwrap();
        let snap = rt.snapshots().current();
        // The source is fine; the view and the view on it say they are stale.
        assert!(snap.get(1).unwrap().batches().is_ok());
        for id in [2, 3] {
            let e = snap.get(id).unwrap().batches().unwrap_err();
            assert!(e.to_string().contains("stopped updating"), "{e}");
        }
        // Later writes do not make them look healthy again.
        rt.write(1, changes(&s, "2 +1")).await.unwrap();
        let snap = rt.snapshots().current();
        assert!(snap.get(3).unwrap().batches().is_err());
    }

    #[tokio::test]
    async fn a_stream_chunk_missing_at_replay_makes_the_stream_and_its_views_stale() {
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::MemoryStorage::new());
        let config = || RuntimeConfig {
            checkpoint_interval: None,
            ..RuntimeConfig::default()
        };
        let s = schema(&[("v", I64)]);
        let install = |rt: DataflowHandle, restore: bool| {
            let s = s.clone();
            async move {
                rt.install(
                    Subgraph::single(1, Box::new(StreamOperator::new("src", s.clone()))),
                    restore,
                    WriteBatch::new(),
                )
                .await
                .unwrap();
                rt.install(stream_view(2, 1, &s), restore, WriteBatch::new())
                    .await
                    .unwrap();
                rt
            }
        };
        let (rt, _) = Runtime::start(storage.clone(), config()).unwrap();
        let rt = install(rt, false).await;
        // After the DDL checkpoint: the rows are only in the stream's chunk, which the
        // log entry names.
        rt.write(1, changes(&s, "1 +1")).await.unwrap();
        // A crash: no shutdown checkpoint (that would empty the log).
        std::mem::forget(rt);
        let stream_state = keys::state_prefix(keys::state_id(1, 0));
        let mut wb = WriteBatch::new();
        for (k, _) in storage.scan_prefix(&stream_state).unwrap() {
            if k[stream_state.len()] == b'd' {
                wb.delete(k);
            }
        }
        assert!(!wb.is_empty());
        storage.commit(wb).unwrap();
        let (rt, _) = Runtime::start(storage.clone(), config()).unwrap();
        let rt = install(rt, true).await;
        assert_eq!(rt.replay_log().await.unwrap(), 1);
        let snap = rt.snapshots().current();
        for id in [1, 2] {
            let e = snap.get(id).unwrap().batches().unwrap_err();
            assert!(e.to_string().contains("missing from storage"), "{e}");
        }
    }

    /// A source's position, as sources commit it with their rows.
    fn position(n: u64) -> WriteBatch {
        let mut wb = WriteBatch::new();
        wb.put(b"test-source-position".to_vec(), n.to_be_bytes().to_vec());
        wb
    }

    #[tokio::test]
    async fn small_source_writes_wait_for_the_epoch_interval_and_client_writes_do_not() {
        let (rt, s) = runtime_with_stream(RuntimeConfig {
            source_epoch_interval: Duration::from_secs(1),
            ..RuntimeConfig::default()
        })
        .await;
        // Two small source batches 50 ms apart: the first waits for the interval, the
        // second joins it, and one epoch applies both.
        let (a, b) = tokio::join!(rt.write_with(1, changes(&s, "1 +1"), position(1)), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            rt.write_with(1, changes(&s, "2 +1"), position(2)).await
        });
        assert_eq!(a.unwrap(), b.unwrap());
        // A client write is never held back, and it takes a waiting source batch along.
        let started = Instant::now();
        let (src, client) =
            tokio::join!(rt.write_with(1, changes(&s, "3 +1"), position(3)), async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let t = Instant::now();
                (rt.write(1, changes(&s, "4 +1")).await, t.elapsed())
            });
        let (client, waited) = client;
        assert_eq!(src.unwrap(), client.unwrap());
        assert!(waited < Duration::from_millis(500), "{waited:?}");
        assert!(started.elapsed() < Duration::from_millis(900));
        // A source batch that is large already (a source catching up) does not wait.
        let many: String = (0..PACE_ROWS).map(|i| format!("{i} +1\n")).collect();
        let t = Instant::now();
        rt.write_with(1, changes(&s, many.trim_end()), position(4))
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        let snap = rt.snapshots().current();
        let rows: usize = snap
            .get(1)
            .unwrap()
            .batches()
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 4 + PACE_ROWS);
    }
}
