//! The statements eddy executes. Queries and DML keep sqlparser's AST (DataFusion plans
//! them); eddy's own DDL has its own types.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast;

use crate::catalog::ObjectKind;

#[derive(Debug, Clone)]
pub enum Statement {
    CreateTable(CreateRelation),
    CreateStream(CreateRelation),
    CreateView(CreateView),
    CreateSink(CreateSink),
    Drop(DropStatement),
    /// SELECT / VALUES / WITH ...
    Query(Box<ast::Statement>),
    Insert(Box<ast::Statement>),
    Update(Box<ast::Statement>),
    Delete(Box<ast::Statement>),
    Show(ShowTarget),
    Describe {
        name: String,
    },
    /// EXPLAIN <query> (DataFusion's plan of an ad-hoc query).
    ExplainQuery(Box<ast::Statement>),
    /// EXPLAIN CREATE MATERIALIZED VIEW ...: the dataflow it would build.
    ExplainCreateView(CreateView),
    /// EXPLAIN [ANALYZE] <view>: the running dataflow of a view (with ANALYZE, rows and
    /// time per operator).
    ExplainObject {
        name: String,
        analyze: bool,
    },
    Flush,
    /// Write a checkpoint now (PostgreSQL's CHECKPOINT).
    Checkpoint,
    Begin,
    Commit,
    Rollback,
    Set {
        name: String,
        value: String,
    },
    Reset {
        name: String,
    },
    /// Accepted and ignored (DISCARD ALL, DEALLOCATE, ...); `tag` is the command tag.
    NoOp {
        tag: String,
    },
    /// `SUBSCRIBE ...` (also `SELECT ... EMIT CHANGES`): a never-ending result.
    Subscribe(SubscribeStatement),
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: the same, as COPY data (what psql shows live).
    CopySubscribe {
        subscribe: SubscribeStatement,
        format: CopyFormat,
    },
    /// `COPY (SELECT ...) TO STDOUT` / `COPY t TO STDOUT`.
    CopyQuery {
        query: Box<ast::Statement>,
        format: CopyFormat,
    },
    /// `DECLARE c CURSOR [WITH HOLD] FOR SELECT ... | SUBSCRIBE ...`
    Declare {
        name: String,
        hold: bool,
        body: CursorBody,
    },
    /// `FETCH [n | ALL] [FROM] c [WITH (timeout = '1s')]`
    Fetch {
        name: String,
        count: Option<usize>,
        timeout: Option<std::time::Duration>,
    },
    /// `CLOSE c` / `CLOSE ALL` (`None`).
    Close {
        name: Option<String>,
    },
}

/// What a subscription reads.
#[derive(Debug, Clone)]
pub enum SubscribeTarget {
    /// A table, stream or view, by name.
    Relation(String),
    /// A query, maintained for the subscription's lifetime.
    Query(Box<ast::Query>),
}

#[derive(Debug, Clone)]
pub struct SubscribeStatement {
    pub target: SubscribeTarget,
    /// Send the current contents first (default: yes, unless `AS OF`).
    pub snapshot: Option<bool>,
    /// Send a progress row after each epoch.
    pub progress: bool,
    /// Resume after this epoch.
    pub as_of: Option<u64>,
    /// `ENVELOPE UPSERT (KEY (...))`: rows are upserts and deletes by key.
    pub upsert_key: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
}

#[derive(Debug, Clone)]
pub enum CursorBody {
    Query(Box<ast::Statement>),
    Subscribe(SubscribeStatement),
}

/// CREATE TABLE / CREATE STREAM.
#[derive(Debug, Clone)]
pub struct CreateRelation {
    pub kind: ObjectKind,
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ast::ColumnDef>,
    pub constraints: Vec<ast::TableConstraint>,
    pub options: BTreeMap<String, String>,
    /// `WATERMARK FOR col AS col - INTERVAL '...'`.
    pub watermark: Option<WatermarkClause>,
}

/// The event-time column and its allowed lateness.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkClause {
    pub column: String,
    pub lateness_us: i64,
}

/// CREATE SINK name FROM relation WITH (...).
#[derive(Debug, Clone)]
pub struct CreateSink {
    pub name: String,
    pub if_not_exists: bool,
    pub from: String,
    pub options: BTreeMap<String, String>,
}

/// CREATE MATERIALIZED VIEW.
#[derive(Debug, Clone)]
pub struct CreateView {
    pub name: String,
    pub if_not_exists: bool,
    pub or_replace: bool,
    pub query: Box<ast::Query>,
    /// `EMIT ON WINDOW CLOSE` / `EMIT FINAL` after the query.
    pub emit: EmitMode,
    /// WITH (...) options (`retention`).
    pub options: BTreeMap<String, String>,
}

/// When a windowed view's rows appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// A window's row is updated as its events arrive (the default).
    #[default]
    Changes,
    /// A window's row appears once, final, when the watermark passes its end.
    OnWindowClose,
}

#[derive(Debug, Clone)]
pub struct DropStatement {
    pub kind: ObjectKind,
    pub names: Vec<String>,
    pub if_exists: bool,
    pub cascade: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShowTarget {
    Objects(ObjectKind),
    /// The latest published epoch (what a read would see now).
    Epoch,
    /// Relations with live subscriptions, and how many.
    Subscriptions,
    /// Kafka sources: offsets, lag, errors per partition.
    Sources,
    /// Records Kafka sources skipped, optionally of one source.
    SourceErrors(Option<String>),
    /// The most recent checkpoints: epoch, time, size, source offsets.
    Checkpoints,
    /// Watermarks of event-time relations and the views they feed.
    Watermarks,
    Variable(String),
    AllVariables,
}

impl Statement {
    /// The command tag Postgres would report, for statements that return no rows.
    pub fn tag(&self) -> &'static str {
        match self {
            Statement::CreateTable(_) => "CREATE TABLE",
            Statement::CreateStream(_) => "CREATE STREAM",
            Statement::CreateView(_) => "CREATE MATERIALIZED VIEW",
            Statement::CreateSink(_) => "CREATE SINK",
            Statement::Drop(d) => match d.kind {
                ObjectKind::Table => "DROP TABLE",
                ObjectKind::Stream => "DROP STREAM",
                ObjectKind::MaterializedView => "DROP MATERIALIZED VIEW",
                ObjectKind::Sink => "DROP SINK",
            },
            Statement::Insert(_) => "INSERT",
            Statement::Update(_) => "UPDATE",
            Statement::Delete(_) => "DELETE",
            Statement::Flush => "FLUSH",
            Statement::Checkpoint => "CHECKPOINT",
            Statement::Begin => "BEGIN",
            Statement::Commit => "COMMIT",
            Statement::Rollback => "ROLLBACK",
            Statement::Set { .. } => "SET",
            Statement::Reset { .. } => "RESET",
            Statement::Declare { .. } => "DECLARE CURSOR",
            Statement::Close { .. } => "CLOSE CURSOR",
            _ => "SELECT",
        }
    }
}
