//! The database: storage, catalog, the dataflow runtime and DataFusion, put together.
//! Sessions ([`session::Session`]) execute statements against it; each kind of statement
//! lives in its own file (`ddl`, `dml`, `query`).
//!
//! Writes (DDL and DML) are serialized by one lock and each waits until the epoch that
//! applied it is committed; reads take the latest published snapshot and never wait.

pub mod ddl;
pub mod dml;
pub mod query;
pub mod session;
pub mod subscribe;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::context::SessionState;
use parking_lot::RwLock;
use tracing::info;

use crate::catalog::{Catalog, CatalogEntry, ObjectKind};
use crate::connector::kafka::{Kafka, KafkaConfig};
use crate::dataflow::expr::EvalErrors;
use crate::dataflow::runtime::{DataflowHandle, Runtime, RuntimeConfig, Subgraph};
use crate::dataflow::stream::StreamOperator;
use crate::dataflow::table::TableOperator;
use crate::error::{Error, Result};
use crate::plan::{base_session_state, Lowering, PlanContext};
use crate::sql::{self, Statement};
use crate::storage::{MemoryStorage, Storage, StorageEngine, WriteBatch};

pub use session::{ExecResult, Params, Session};

/// How to open a database.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// Where state lives; `None` keeps everything in memory (nothing survives a restart).
    pub data_dir: Option<PathBuf>,
    /// How often operator state is checkpointed (`None`: only at DDL and shutdown).
    /// Between checkpoints only the inputs are logged; a restart replays them.
    pub checkpoint_interval: Option<std::time::Duration>,
    /// How long sources' rows may wait for the next epoch (see [`RuntimeConfig`]).
    pub source_epoch_interval: std::time::Duration,
    /// The on-disk engine (redb by default).
    pub storage: StorageEngine,
    /// Subscriber buffers and the history kept for `AS OF` resumes.
    pub subscribe: crate::dataflow::subscribe::SubscribeConfig,
    /// How to reach Kafka (no brokers: embedded only).
    pub kafka: KafkaConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            checkpoint_interval: RuntimeConfig::default().checkpoint_interval,
            source_epoch_interval: RuntimeConfig::default().source_epoch_interval,
            storage: StorageEngine::default(),
            subscribe: Default::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// One eddy database, shared by all sessions.
pub struct Database {
    storage: Arc<dyn Storage>,
    /// Copy-on-write: readers clone the `Arc`, DDL swaps in a new catalog.
    catalog: RwLock<Arc<Catalog>>,
    dataflow: DataflowHandle,
    state: SessionState,
    /// Serializes DDL and DML: each write reads the latest snapshot and is applied
    /// before the next one starts.
    write_lock: tokio::sync::Mutex<()>,
    /// Expression errors per view (the streaming error policy: NULL and counted).
    view_errors: RwLock<HashMap<u32, Arc<EvalErrors>>>,
    /// Kafka sources, sinks and the producer.
    kafka: Kafka,
}

/// The operator holding a table's rows: an upsert table when it is fed by Kafka.
pub(crate) fn table_operator(entry: &CatalogEntry) -> Result<Box<dyn crate::dataflow::Operator>> {
    if entry.is_kafka() {
        return Ok(Box::new(TableOperator::upsert(
            &entry.name,
            entry.schema(),
            entry.primary_key.clone(),
        )?));
    }
    let pk = (!entry.primary_key.is_empty()).then(|| entry.primary_key.clone());
    Ok(Box::new(TableOperator::new(
        &entry.name,
        entry.schema(),
        pk,
    )?))
}

/// The operator of a table or stream, with its watermark and retention.
pub(crate) fn relation_subgraph(entry: &CatalogEntry) -> Result<Subgraph> {
    let op: Box<dyn crate::dataflow::Operator> = match entry.kind {
        ObjectKind::Stream => {
            let mut op = StreamOperator::new(&entry.name, entry.schema());
            if entry.is_nexmark() {
                if let Some(f) = crate::connector::nexmark::regenerate(entry)? {
                    op = op.with_regenerate(f);
                }
            }
            let watermark = entry.watermark_install();
            match (entry.retention_us(), watermark) {
                (Some(r), Some(w)) => Box::new(op.with_retention(w.column, r)),
                _ => Box::new(op),
            }
        }
        _ => table_operator(entry)?,
    };
    Ok(Subgraph::single(entry.id, op).with_watermark(entry.watermark_install()))
}

impl Database {
    /// Open (or create) the database and restore every object's dataflow.
    pub async fn open(config: DatabaseConfig) -> Result<Arc<Self>> {
        let storage: Arc<dyn Storage> = match &config.data_dir {
            Some(dir) => crate::storage::open(config.storage, dir)?,
            None => Arc::new(MemoryStorage::new()),
        };
        let runtime_config = RuntimeConfig {
            checkpoint_interval: config.checkpoint_interval,
            subscribe: config.subscribe.clone(),
            source_epoch_interval: config.source_epoch_interval,
        };
        let (dataflow, epoch) = Runtime::start(storage.clone(), runtime_config)?;
        let catalog = Catalog::load(storage.as_ref())?;
        let db = Arc::new(Database {
            storage,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            dataflow,
            state: base_session_state(),
            write_lock: tokio::sync::Mutex::new(()),
            view_errors: RwLock::new(HashMap::new()),
            kafka: Kafka::new(config.kafka.clone()),
        });
        // Restore objects in creation order: a view's inputs are always older than it.
        for entry in catalog.entries().filter(|e| e.kind != ObjectKind::Sink) {
            let subgraph = db.build_subgraph(entry, &catalog)?;
            db.dataflow
                .install(subgraph, true, WriteBatch::new())
                .await?;
        }
        // State is as of the last checkpoint; the logged inputs after it bring every
        // relation back to the last acknowledged write.
        let replayed = db.dataflow.replay_log().await?;
        if replayed > 0 {
            info!(epochs = replayed, "replayed the input log");
        }
        // Sinks first, so that they see what the sources read next.
        for entry in catalog.entries().filter(|e| e.kind == ObjectKind::Sink) {
            let from = entry
                .depends_on
                .first()
                .and_then(|id| catalog.get_by_id(*id));
            let started = from
                .ok_or_else(|| Error::internal(format!("sink {} reads nothing", entry.name)))
                .and_then(|from| {
                    let opts = crate::connector::kafka::SinkOptions::parse(&entry.options, from)?;
                    db.kafka.start_sink(
                        entry,
                        opts,
                        from.id,
                        db.dataflow.clone(),
                        db.storage.clone(),
                        false,
                    )
                });
            if let Err(e) = started {
                tracing::error!(sink = %entry.name, "cannot start sink: {e}");
            }
        }
        // Kafka sources resume from the offsets committed with the last epoch.
        for entry in catalog
            .entries()
            .filter(|e| e.is_kafka() && e.kind != ObjectKind::Sink)
        {
            let progress = crate::connector::kafka::load_progress(db.storage.as_ref(), entry.id)?;
            if let Err(e) = db.kafka.start_source(entry, progress, db.dataflow.clone()) {
                tracing::error!(relation = %entry.name, "cannot start Kafka source: {e}");
            }
        }
        for entry in catalog.entries().filter(|e| e.is_nexmark()) {
            let progress = crate::connector::kafka::load_progress(db.storage.as_ref(), entry.id)?;
            match crate::connector::nexmark::start(entry, progress, db.dataflow.clone()) {
                Ok(source) => db.kafka.register_source(entry.id, source),
                Err(e) => {
                    tracing::error!(relation = %entry.name, "cannot start the generator: {e}")
                }
            }
        }
        *db.catalog.write() = Arc::new(catalog);
        info!(
            objects = db.catalog.read().entries().count(),
            epoch, "database open"
        );
        Ok(db)
    }

    pub fn dataflow(&self) -> &DataflowHandle {
        &self.dataflow
    }

    /// The current catalog (a snapshot: later DDL does not change it).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().clone()
    }

    /// Replace the catalog after a DDL statement's epoch committed.
    fn set_catalog(&self, catalog: Catalog) {
        *self.catalog.write() = Arc::new(catalog);
    }

    pub fn session_state(&self) -> &SessionState {
        &self.state
    }

    /// A DataFusion session for running one statement: `now()` and friends are fixed
    /// at the statement's start, as in Postgres.
    pub(crate) fn statement_state(&self) -> SessionState {
        let mut state = self.state.clone();
        let options = state.config_options().clone();
        state.execution_props_mut().mark_start_execution(options);
        state
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn kafka(&self) -> &Kafka {
        &self.kafka
    }

    pub fn view_errors(&self, id: u32) -> Option<Arc<EvalErrors>> {
        self.view_errors.read().get(&id).cloned()
    }

    /// The operators of a catalog object, rebuilt from its definition.
    fn build_subgraph(&self, entry: &CatalogEntry, catalog: &Catalog) -> Result<Subgraph> {
        match entry.kind {
            ObjectKind::Table | ObjectKind::Stream => relation_subgraph(entry),
            ObjectKind::MaterializedView => match sql::parse_one(&entry.sql)? {
                Statement::CreateView(v) => {
                    let ctx = PlanContext::new(&self.state, catalog, None);
                    let mut query = v.query.clone();
                    crate::sql::naming::postgres_column_names(&mut query);
                    let plan = ctx.plan_query(&query)?;
                    let errors = EvalErrors::new();
                    self.view_errors.write().insert(entry.id, errors.clone());
                    let names: Vec<String> = entry.columns.iter().map(|c| c.name.clone()).collect();
                    Lowering::new(&self.state, errors)
                        .with_plan_version(entry.plan_version)
                        .with_append_only_relations(catalog.append_only_ids())
                        .with_window(ddl::view_window(&v, catalog, &entry.depends_on)?)
                        .lower_view(entry.id, &entry.name, &plan, &names)
                }
                _ => Err(Error::Storage(format!(
                    "catalog entry of view {} is not a view definition",
                    entry.name
                ))),
            },
            ObjectKind::Sink => Err(Error::not_supported("sinks")),
        }
    }
}
