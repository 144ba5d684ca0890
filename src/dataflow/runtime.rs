//! The dataflow runtime: one thread that owns every operator and runs epochs.
//!
//! Sessions send [`Command`]s (install a view, apply a table's changes, sync) over a
//! channel. The runtime takes everything that is waiting, runs it as one epoch —
//! operators in topological order, each seeing all of the epoch's input before it ends
//! the epoch — then writes the state every operator changed, plus the epoch number, in
//! one atomic storage commit, flushes it, publishes the new snapshots, and only then
//! answers the commands. A session whose INSERT returned can therefore read its write
//! in every view (read-your-writes), and after a crash nothing acknowledged is lost.
//!
//! Node ids grow as nodes are installed, and a node is always installed after its
//! inputs, so ascending id order is a topological order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::{debug, error, info};

use super::snapshot::{DatabaseSnapshot, RelationSnapshot, SnapshotStore};
use super::{ChangeBatch, Operator, StateReader, StateWriter};
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
}

impl Subgraph {
    pub fn single(object_id: u32, op: Box<dyn Operator>) -> Self {
        Self {
            object_id,
            nodes: vec![NodeSpec { op, inputs: vec![] }],
        }
    }

    /// Render the operator tree, root (output) first, for EXPLAIN. `relation_name`
    /// names the relations read from outside the subgraph.
    pub fn explain(&self, relation_name: &dyn Fn(u32) -> String) -> String {
        let mut out = String::new();
        if let Some(last) = self.nodes.len().checked_sub(1) {
            self.explain_node(last, 0, relation_name, &mut out);
        }
        out
    }

    fn explain_node(&self, i: usize, depth: usize, rel: &dyn Fn(u32) -> String, out: &mut String) {
        let node = &self.nodes[i];
        let indent = "  ".repeat(depth);
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
                NodeInput::Local(j) => self.explain_node(*j, depth + 1, rel, out),
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
    /// Apply changes to a table or stream.
    Write {
        object_id: u32,
        changes: ChangeBatch,
        reply: Reply<u64>,
    },
    /// Answer once everything sent before is applied (FLUSH).
    Sync { reply: Reply<u64> },
    /// Describe an installed object's operators (EXPLAIN).
    Explain {
        object_id: u32,
        names: HashMap<u32, String>,
        reply: Reply<String>,
    },
    /// Per-object statistics: state entries held in memory.
    Stats { reply: Reply<Vec<(u32, usize)>> },
}

pub type Reply<T> = oneshot::Sender<Result<T>>;

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
}

/// Counters the runtime keeps about its epochs (read by benchmarks and SHOW commands).
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    /// Epochs that committed something.
    pub epochs: AtomicU64,
    /// Time spent running operators (excluding the storage commit), total and last epoch.
    pub process_ns: AtomicU64,
    pub last_process_ns: AtomicU64,
    /// Time spent writing and flushing state, total and last epoch.
    pub commit_ns: AtomicU64,
    pub last_commit_ns: AtomicU64,
    /// Bytes of state written, total and last epoch.
    pub commit_bytes: AtomicU64,
    pub last_commit_bytes: AtomicU64,
}

/// The handle sessions use to talk to the runtime thread.
#[derive(Clone)]
pub struct DataflowHandle {
    tx: mpsc::Sender<Command>,
    snapshots: Arc<SnapshotStore>,
    metrics: Arc<RuntimeMetrics>,
}

impl DataflowHandle {
    pub fn snapshots(&self) -> &Arc<SnapshotStore> {
        &self.snapshots
    }

    pub fn metrics(&self) -> &Arc<RuntimeMetrics> {
        &self.metrics
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
        self.call(|reply| Command::Write {
            object_id,
            changes,
            reply,
        })
        .await
    }

    pub async fn sync(&self) -> Result<u64> {
        self.call(|reply| Command::Sync { reply }).await
    }

    pub async fn explain(&self, object_id: u32, names: HashMap<u32, String>) -> Result<String> {
        self.call(|reply| Command::Explain {
            object_id,
            names,
            reply,
        })
        .await
    }

    pub async fn stats(&self) -> Result<Vec<(u32, usize)>> {
        self.call(|reply| Command::Stats { reply }).await
    }
}

pub struct Runtime {
    storage: Arc<dyn Storage>,
    snapshots: Arc<SnapshotStore>,
    nodes: BTreeMap<u64, Node>,
    next_node: u64,
    /// Object id → node ids of its subgraph (last = output).
    objects: HashMap<u32, Vec<u64>>,
    /// Relation snapshots as last published.
    published: HashMap<u32, Arc<RelationSnapshot>>,
    epoch: u64,
    /// Set after a failed commit: memory is ahead of disk, so no more writes are taken.
    broken: Option<String>,
    metrics: Arc<RuntimeMetrics>,
}

const EPOCH_KEY: &str = "epoch";

impl Runtime {
    /// Start the runtime thread. Returns the handle and the last committed epoch.
    pub fn start(storage: Arc<dyn Storage>) -> Result<(DataflowHandle, u64)> {
        let epoch = match storage.get(&keys::meta_key(EPOCH_KEY))? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::Storage("corrupt epoch".into()))?,
            ),
            None => 0,
        };
        let snapshots = Arc::new(SnapshotStore::new());
        snapshots.publish(DatabaseSnapshot {
            epoch,
            relations: HashMap::new(),
        });
        let (tx, rx) = mpsc::channel();
        let metrics = Arc::new(RuntimeMetrics::default());
        let mut rt = Runtime {
            storage,
            snapshots: snapshots.clone(),
            nodes: BTreeMap::new(),
            next_node: 0,
            objects: HashMap::new(),
            published: HashMap::new(),
            epoch,
            broken: None,
            metrics: metrics.clone(),
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
            },
            epoch,
        ))
    }

    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut cmds = vec![first];
            // Group commit: everything already waiting joins this epoch.
            while cmds.len() < 4096 {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            self.run_epoch(cmds);
        }
        debug!("dataflow runtime stopped");
    }

    fn next_epoch(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        now.max(self.epoch + 1)
    }

    fn run_epoch(&mut self, cmds: Vec<Command>) {
        let started = Instant::now();
        let epoch = self.next_epoch();
        let mut batch = WriteBatch::new();
        let mut replies: Vec<Reply<u64>> = vec![];
        let mut touched: BTreeSet<u64> = BTreeSet::new();
        let mut dropped: Vec<u32> = vec![];
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
                    match self.install(subgraph, restore, &mut touched) {
                        Ok(ids) => {
                            batch.extend(catalog);
                            if !restore {
                                fresh.extend(ids);
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
                    self.remove(object_id, &mut touched);
                    batch.delete_prefix(keys::object_state_prefix(object_id));
                    batch.extend(catalog);
                    dropped.push(object_id);
                    replies.push(reply);
                }
                Command::Write {
                    object_id,
                    changes,
                    reply,
                } => {
                    if let Some(why) = &self.broken {
                        let _ = reply.send(Err(Error::Storage(why.clone())));
                        continue;
                    }
                    match self.objects.get(&object_id).and_then(|n| n.last()) {
                        Some(id) => {
                            if let Some(node) = self.nodes.get_mut(id) {
                                node.pending.push((0, changes));
                                touched.insert(*id);
                            }
                            replies.push(reply);
                        }
                        None => {
                            let _ = reply.send(Err(Error::internal(format!(
                                "write to object {object_id}, which has no operators"
                            ))));
                        }
                    }
                }
                Command::Sync { reply } => replies.push(reply),
                Command::Explain {
                    object_id,
                    names,
                    reply,
                } => {
                    let _ = reply.send(self.explain(object_id, &names));
                }
                Command::Stats { reply } => {
                    let stats = self
                        .objects
                        .iter()
                        .map(|(id, nodes)| {
                            let n = nodes
                                .iter()
                                .filter_map(|n| self.nodes.get(n))
                                .map(|n| n.op.state_entries())
                                .sum();
                            (*id, n)
                        })
                        .collect();
                    let _ = reply.send(Ok(stats));
                }
            }
        }

        let processed = self.propagate(&mut touched, fresh);

        // Checkpoint: every operator that saw input writes what changed.
        for id in &processed {
            if let Some(node) = self.nodes.get_mut(id) {
                if node.failed.is_some() {
                    continue;
                }
                if let Err(e) = node
                    .op
                    .checkpoint(&mut StateWriter::new(node.state_id, &mut batch))
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
        let processed_at = Instant::now();
        let durable = !batch.is_empty();
        let bytes = batch.size_bytes() as u64;
        if durable {
            batch.put(keys::meta_key(EPOCH_KEY), epoch.to_be_bytes().to_vec());
            let result = self
                .storage
                .commit(batch)
                .and_then(|_| self.storage.flush());
            if let Err(e) = result {
                let why = format!(
                    "the last write could not be committed ({e}); eddy has stopped accepting \
                     writes to protect the last good state — restart it"
                );
                error!("{why}");
                self.broken = Some(why.clone());
                for r in replies {
                    let _ = r.send(Err(Error::Storage(why.clone())));
                }
                return;
            }
            self.epoch = epoch;
            let m = &self.metrics;
            let process = processed_at.duration_since(started).as_nanos() as u64;
            let commit = processed_at.elapsed().as_nanos() as u64;
            m.epochs.fetch_add(1, Ordering::Relaxed);
            m.process_ns.fetch_add(process, Ordering::Relaxed);
            m.last_process_ns.store(process, Ordering::Relaxed);
            m.commit_ns.fetch_add(commit, Ordering::Relaxed);
            m.last_commit_ns.store(commit, Ordering::Relaxed);
            m.commit_bytes.fetch_add(bytes, Ordering::Relaxed);
            m.last_commit_bytes.store(bytes, Ordering::Relaxed);
        }

        // Publish: relations that changed get fresh snapshots; the rest are shared.
        for id in processed.iter().chain(touched.iter()) {
            if let Some(node) = self.nodes.get(id) {
                let is_output =
                    self.objects.get(&node.object_id).and_then(|n| n.last()) == Some(id);
                if is_output {
                    if let Some(s) = node.op.snapshot() {
                        self.published.insert(node.object_id, Arc::new(s));
                    }
                }
            }
        }
        for id in &dropped {
            self.published.remove(id);
        }
        self.snapshots.publish(DatabaseSnapshot {
            epoch: self.epoch,
            relations: self.published.clone(),
        });
        if durable {
            debug!(
                epoch,
                ms = started.elapsed().as_secs_f64() * 1000.0,
                "epoch committed"
            );
        }
        for r in replies {
            let _ = r.send(Ok(self.epoch));
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
        let mut ids = vec![];
        for (i, (spec, inputs)) in subgraph.nodes.into_iter().zip(resolved).enumerate() {
            let id = base + i as u64;
            let state_id = keys::state_id(object_id, i as u32);
            let mut op = spec.op;
            if restore {
                op.restore(&StateReader::new(state_id, self.storage.as_ref()))?;
            }
            for (port, input) in inputs.iter().enumerate() {
                if let Some(up) = self.nodes.get_mut(input) {
                    up.outputs.push((id, port));
                }
            }
            let mut node = Node {
                op,
                object_id,
                state_id,
                outputs: vec![],
                inputs: inputs.clone(),
                pending: vec![],
                failed: None,
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

    fn remove(&mut self, object_id: u32, touched: &mut BTreeSet<u64>) {
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
    /// pending. Returns the nodes that ran.
    fn propagate(&mut self, touched: &mut BTreeSet<u64>, fresh: BTreeSet<u64>) -> BTreeSet<u64> {
        let mut ran = BTreeSet::new();
        let mut ready: BTreeSet<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.pending.is_empty())
            .map(|(id, _)| *id)
            .collect();
        ready.extend(fresh);
        while let Some(id) = ready.pop_first() {
            let Some(node) = self.nodes.get_mut(&id) else {
                continue;
            };
            let inputs = std::mem::take(&mut node.pending);
            if node.failed.is_some() {
                continue;
            }
            let mut out = vec![];
            let mut result = Ok(());
            for (port, batch) in inputs {
                result = node.op.process(port, batch, &mut out);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                result = node.op.end_epoch(&mut out);
            }
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

    fn explain(&self, object_id: u32, names: &HashMap<u32, String>) -> Result<String> {
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
        if let Some(last) = ids.last() {
            self.explain_node(*last, 0, &local, &node_object, names, &mut out);
        }
        Ok(out)
    }

    fn explain_node(
        &self,
        id: u64,
        depth: usize,
        local: &HashMap<u64, usize>,
        node_object: &HashMap<u64, u32>,
        names: &HashMap<u32, String>,
        out: &mut String,
    ) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let indent = "  ".repeat(depth);
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
        if let Some(f) = &node.failed {
            out.push_str(&format!("  [FAILED: {f}]"));
        }
        out.push('\n');
        for input in &node.inputs {
            if local.contains_key(input) {
                self.explain_node(*input, depth + 1, local, node_object, names, out);
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
