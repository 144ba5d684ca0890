//! A client session: its variables, its transaction state, and statement dispatch.
//!
//! Transactions: `BEGIN` / `COMMIT` / `ROLLBACK` are accepted because every driver sends
//! them, but eddy applies each statement atomically as it runs (as RisingWave does);
//! there is no multi-statement rollback. A `ROLLBACK` after writes says so in a
//! warning. After an error inside a transaction block, statements are refused until the
//! block ends, as in Postgres, so drivers' error handling behaves as they expect.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;

use super::Database;
use crate::error::{Error, Result};
use crate::sql::{ParsedStatement, ShowTarget, Statement};

/// Values bound to `$1, $2, ...`, and the types the client declared for them (a
/// declared type is planned as such; undeclared ones are inferred from context).
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub values: Vec<ScalarValue>,
    pub types: Vec<Option<DataType>>,
}

impl Params {
    pub fn none() -> Self {
        Self::default()
    }
}

/// The outcome of one statement.
#[derive(Debug)]
pub enum ExecResult {
    /// Rows to send to the client.
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// A command that returns no rows: its tag and, for DML, the row count.
    Command {
        tag: String,
        rows: Option<usize>,
    },
    /// Rows returned by FETCH (command tag `FETCH n`).
    Fetched {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// Rows for `COPY ... TO STDOUT`.
    CopyOut {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        format: crate::sql::CopyFormat,
    },
    TransactionStart,
    TransactionEnd {
        tag: &'static str,
    },
}

impl ExecResult {
    pub fn command(tag: &str) -> Self {
        ExecResult::Command {
            tag: tag.to_string(),
            rows: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Idle,
    InBlock {
        wrote: bool,
    },
    /// An error happened in the block; `wrote` remembers earlier writes.
    Failed {
        wrote: bool,
    },
}

/// Session variables every driver asks about, with Postgres-compatible values.
const DEFAULT_VARS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "serializable"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    ("search_path", "public"),
    ("server_encoding", "UTF8"),
    ("server_version", crate::SERVER_VERSION),
    ("server_version_num", "150000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "serializable"),
    ("transaction_read_only", "off"),
];

pub struct Session {
    db: Arc<Database>,
    vars: BTreeMap<String, String>,
    txn: TxnState,
    /// Messages for the client (NOTICE/WARNING), drained by the server after each
    /// statement.
    notices: Vec<Notice>,
    startup_applied: bool,
    /// Open cursors (DECLARE), by name.
    cursors: std::collections::HashMap<String, Cursor>,
}

/// An open cursor: a query's rows, or a live subscription.
struct Cursor {
    hold: bool,
    body: CursorState,
}

enum CursorState {
    Rows {
        schema: SchemaRef,
        batches: std::collections::VecDeque<RecordBatch>,
    },
    Subscription(Box<super::subscribe::Subscription>),
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl Session {
    pub fn new(db: Arc<Database>) -> Self {
        let vars = DEFAULT_VARS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            db,
            vars,
            txn: TxnState::Idle,
            notices: vec![],
            startup_applied: false,
            cursors: Default::default(),
        }
    }

    /// Take the session settings a client sent at connection time
    /// (`application_name`, ...). Called before each statement; applied once.
    pub fn apply_startup_params(&mut self, params: &std::collections::HashMap<String, String>) {
        if self.startup_applied {
            return;
        }
        self.startup_applied = true;
        if let Some(v) = params.get("application_name") {
            self.vars.insert("application_name".into(), v.clone());
        }
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn txn(&self) -> TxnState {
        self.txn
    }

    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    pub fn notice(&mut self, message: impl Into<String>) {
        self.notices.push(Notice {
            severity: "NOTICE",
            code: "00000",
            message: message.into(),
        });
    }

    pub fn warning(&mut self, message: impl Into<String>) {
        self.notices.push(Notice {
            severity: "WARNING",
            code: "01000",
            message: message.into(),
        });
    }

    /// Execute one statement with positional parameter values (`$1`, `$2`, ...).
    pub async fn execute(&mut self, stmt: &ParsedStatement, params: &Params) -> Result<ExecResult> {
        let ends_block = matches!(stmt.statement, Statement::Commit | Statement::Rollback);
        if matches!(self.txn, TxnState::Failed { .. }) && !ends_block {
            return Err(Error::Transaction {
                code: "25P02",
                message: "current transaction is aborted, commands ignored until end of transaction block".into(),
            });
        }
        let result = self.dispatch(stmt, params).await;
        match &result {
            Err(_) => {
                if let TxnState::InBlock { wrote } = self.txn {
                    self.txn = TxnState::Failed { wrote };
                }
            }
            Ok(_) if is_write(&stmt.statement) => {
                if let TxnState::InBlock { wrote } = &mut self.txn {
                    *wrote = true;
                }
            }
            _ => {}
        }
        result.map_err(|e| position_in_statement(e, stmt))
    }

    async fn dispatch(&mut self, stmt: &ParsedStatement, params: &Params) -> Result<ExecResult> {
        let db = self.db.clone();
        if !params.values.is_empty() && !accepts_params(&stmt.statement) {
            return Err(Error::invalid_with(
                "42P02",
                "this statement does not take parameters",
            ));
        }
        match &stmt.statement {
            Statement::CreateTable(c) | Statement::CreateStream(c) => {
                db.create_relation(self, c, &stmt.text).await
            }
            Statement::CreateView(v) => db.create_view(self, v, &stmt.text).await,
            Statement::CreateSink(s) => db.create_sink(self, s, &stmt.text).await,
            Statement::Drop(d) => db.drop_objects(self, d).await,
            Statement::Insert(s) => db.insert(s, params).await,
            Statement::Update(s) => db.update(s, params).await,
            Statement::Delete(s) => db.delete(s, params).await,
            Statement::Query(s) => db.query(s, params).await,
            Statement::ExplainQuery(s) => db.query(s, params).await,
            Statement::ExplainCreateView(v) => db.explain_create_view(v),
            Statement::ExplainObject { name, analyze } => db.explain_object(name, *analyze).await,
            Statement::Show(ShowTarget::Objects(kind)) => db.show_objects(*kind),
            Statement::Show(ShowTarget::Variable(name)) => self.show_variable(name),
            Statement::Show(ShowTarget::AllVariables) => Ok(self.show_all()),
            Statement::Show(ShowTarget::Epoch) => db.show_epoch(),
            Statement::Show(ShowTarget::Subscriptions) => db.show_subscriptions().await,
            Statement::Show(ShowTarget::Sources) => db.show_sources(),
            Statement::Show(ShowTarget::SourceErrors(name)) => db.show_source_errors(name.as_deref()),
            Statement::Show(ShowTarget::Checkpoints) => db.show_checkpoints(),
            Statement::Show(ShowTarget::Watermarks) => db.show_watermarks().await,
            Statement::Describe { name } => db.describe(name),
            Statement::Flush => {
                db.dataflow().sync().await?;
                Ok(ExecResult::command("FLUSH"))
            }
            Statement::Checkpoint => {
                db.dataflow().checkpoint("requested").await?;
                Ok(ExecResult::command("CHECKPOINT"))
            }
            Statement::Begin => {
                if matches!(self.txn, TxnState::InBlock { .. }) {
                    self.warning("there is already a transaction in progress");
                } else {
                    self.txn = TxnState::InBlock { wrote: false };
                }
                Ok(ExecResult::TransactionStart)
            }
            Statement::Commit | Statement::Rollback => {
                let was = self.txn;
                self.txn = TxnState::Idle;
                // Cursors end with their transaction unless declared WITH HOLD.
                self.cursors.retain(|_, c| c.hold);
                let rollback = matches!(stmt.statement, Statement::Rollback)
                    || matches!(was, TxnState::Failed { .. });
                match was {
                    TxnState::Idle => self.warning("there is no transaction in progress"),
                    TxnState::InBlock { wrote: true } | TxnState::Failed { wrote: true } if rollback => self.warning(
                        "eddy applies each statement when it runs; the writes made in this transaction were not rolled back",
                    ),
                    _ => {}
                }
                Ok(ExecResult::TransactionEnd {
                    tag: if rollback { "ROLLBACK" } else { "COMMIT" },
                })
            }
            Statement::Set { name, value } => {
                self.set_variable(name, value)?;
                Ok(ExecResult::command("SET"))
            }
            Statement::Reset { name } => {
                if name == "all" {
                    self.vars = DEFAULT_VARS
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                } else if let Some((_, v)) = DEFAULT_VARS.iter().find(|(k, _)| k == name) {
                    self.vars.insert(name.clone(), v.to_string());
                } else {
                    self.vars.remove(name);
                }
                Ok(ExecResult::command("RESET"))
            }
            Statement::NoOp { tag } => Ok(ExecResult::command(tag)),
            Statement::CopyQuery { query, format } => match db.query(query, params).await? {
                ExecResult::Rows { schema, batches } => Ok(ExecResult::CopyOut { schema, batches, format: *format }),
                other => Ok(other),
            },
            Statement::Declare { name, hold, body } => {
                self.declare(name, *hold, body, params).await
            }
            Statement::Fetch { name, count, timeout } => self.fetch(name, *count, *timeout).await,
            Statement::Close { name } => {
                match name {
                    Some(n) => {
                        if self.cursors.remove(n).is_none() {
                            return Err(Error::invalid_with("34000", format!("cursor \"{n}\" does not exist")));
                        }
                    }
                    None => self.cursors.clear(),
                }
                Ok(ExecResult::command("CLOSE CURSOR"))
            }
            Statement::Subscribe(_) | Statement::CopySubscribe { .. } => Err(Error::not_supported(
                "SUBSCRIBE here; run it as COPY (SUBSCRIBE ...) TO STDOUT, inside DECLARE ... CURSOR FOR SUBSCRIBE, \
                 or on its own with the simple query protocol",
            )),
        }
    }

    /// Start a subscription for this session.
    pub async fn subscribe(
        &mut self,
        s: &crate::sql::SubscribeStatement,
    ) -> Result<super::subscribe::Subscription> {
        self.db.clone().subscribe(s).await
    }

    async fn declare(
        &mut self,
        name: &str,
        hold: bool,
        body: &crate::sql::CursorBody,
        params: &Params,
    ) -> Result<ExecResult> {
        if !hold && !matches!(self.txn, TxnState::InBlock { .. }) {
            return Err(Error::Transaction {
                code: "25P01",
                message: "DECLARE CURSOR can only be used in transaction blocks".into(),
            });
        }
        if self.cursors.contains_key(name) {
            return Err(Error::invalid_with(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        let state = match body {
            crate::sql::CursorBody::Query(q) => match self.db.query(q, params).await? {
                ExecResult::Rows { schema, batches } => CursorState::Rows {
                    schema,
                    batches: batches.into(),
                },
                _ => return Err(Error::internal("cursor query returned no rows")),
            },
            crate::sql::CursorBody::Subscribe(s) => {
                CursorState::Subscription(Box::new(self.subscribe(s).await?))
            }
        };
        self.cursors
            .insert(name.to_string(), Cursor { hold, body: state });
        Ok(ExecResult::command("DECLARE CURSOR"))
    }

    /// FETCH: up to `count` rows (None: all). On a subscription, waits for at least one
    /// row (at most `timeout`, if given), then returns what is already there.
    async fn fetch(
        &mut self,
        name: &str,
        count: Option<usize>,
        timeout: Option<std::time::Duration>,
    ) -> Result<ExecResult> {
        let cursor = self.cursors.get_mut(name).ok_or_else(|| {
            Error::invalid_with("34000", format!("cursor \"{name}\" does not exist"))
        })?;
        let want = count.unwrap_or(usize::MAX);
        match &mut cursor.body {
            CursorState::Rows { schema, batches } => {
                let mut out = vec![];
                let mut got = 0;
                while got < want {
                    let Some(b) = batches.pop_front() else { break };
                    let take = (want - got).min(b.num_rows());
                    if take < b.num_rows() {
                        batches.push_front(b.slice(take, b.num_rows() - take));
                    }
                    got += take;
                    out.push(b.slice(0, take));
                }
                Ok(ExecResult::Fetched {
                    schema: schema.clone(),
                    batches: out,
                })
            }
            CursorState::Subscription(sub) => {
                let schema = sub.schema().clone();
                let mut out = vec![];
                let mut got = 0;
                let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
                while got < want {
                    // Wait for the first row (until the deadline); after that, only take
                    // what is already there.
                    let next = if got == 0 {
                        match deadline {
                            Some(d) => match tokio::time::timeout_at(d, sub.next_event()).await {
                                Ok(r) => r?,
                                Err(_) => break,
                            },
                            None => sub.next_event().await?,
                        }
                    } else {
                        match tokio::time::timeout(std::time::Duration::ZERO, sub.next_event())
                            .await
                        {
                            Ok(r) => r?,
                            Err(_) => break,
                        }
                    };
                    let Some(b) = next else { continue };
                    let take = (want - got).min(b.num_rows());
                    if take < b.num_rows() {
                        sub.unread(b.slice(take, b.num_rows() - take));
                    }
                    got += take;
                    out.push(b.slice(0, take));
                }
                Ok(ExecResult::Fetched {
                    schema,
                    batches: out,
                })
            }
        }
    }

    fn set_variable(&mut self, name: &str, value: &str) -> Result<()> {
        let v = value.trim().trim_matches('\'').to_string();
        match name {
            "timezone" => {
                let upper = v.to_uppercase();
                if !matches!(
                    upper.as_str(),
                    "UTC"
                        | "GMT"
                        | "ZULU"
                        | "Z"
                        | "+00:00"
                        | "00:00"
                        | "0"
                        | "DEFAULT"
                        | "LOCAL"
                        | "ETC/UTC"
                ) {
                    return Err(Error::not_supported(format!(
                        "time zone {v}: eddy sessions use UTC (timestamptz values are shown in UTC)"
                    )));
                }
                self.vars.insert(name.into(), "UTC".into());
            }
            "client_encoding" => {
                let upper = v.to_uppercase().replace('-', "");
                if upper != "UTF8" && upper != "UNICODE" && upper != "DEFAULT" {
                    return Err(Error::not_supported(format!(
                        "client encoding {v}; eddy speaks UTF8"
                    )));
                }
            }
            _ => {
                self.vars.insert(name.to_string(), v);
            }
        }
        Ok(())
    }

    fn show_variable(&self, name: &str) -> Result<ExecResult> {
        let value = self.vars.get(name).cloned().ok_or_else(|| {
            Error::invalid_with(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            )
        })?;
        let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![value]))],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    fn show_all(&self) -> ExecResult {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]));
        let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        let values: Vec<&str> = self.vars.values().map(String::as_str).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(values)),
            ],
        );
        match batch {
            Ok(b) => ExecResult::Rows {
                schema,
                batches: vec![b],
            },
            Err(_) => ExecResult::Rows {
                schema,
                batches: vec![],
            },
        }
    }

    /// Parameter types and result columns of a statement, without running it (the
    /// extended protocol's Describe).
    /// The columns of an open cursor (Postgres' cursors are portals: drivers Describe
    /// them by name after DECLARE).
    pub fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.cursors.get(name).map(|c| match &c.body {
            CursorState::Rows { schema, .. } => schema.clone(),
            CursorState::Subscription(s) => s.schema().clone(),
        })
    }

    pub fn describe(
        &self,
        stmt: &ParsedStatement,
        declared: &[Option<DataType>],
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        let r = match &stmt.statement {
            Statement::Query(s) | Statement::ExplainQuery(s) => {
                self.db.describe_query(s, true, declared)
            }
            Statement::Insert(s) | Statement::Update(s) | Statement::Delete(s) => {
                self.db.describe_query(s, false, declared)
            }
            Statement::Show(ShowTarget::Variable(name)) => Ok((
                vec![],
                Some(Arc::new(Schema::new(vec![Field::new(
                    name,
                    DataType::Utf8,
                    false,
                )]))),
            )),
            Statement::Show(ShowTarget::AllVariables) => Ok((vec![], Some(self.show_all_schema()))),
            Statement::Show(ShowTarget::Epoch) => Ok((vec![], Some(super::query::epoch_schema()))),
            Statement::Show(ShowTarget::Subscriptions) => {
                Ok((vec![], Some(super::query::subscriptions_schema())))
            }
            Statement::Show(ShowTarget::Sources) => {
                Ok((vec![], Some(super::query::sources_schema())))
            }
            Statement::Show(ShowTarget::SourceErrors(_)) => {
                Ok((vec![], Some(super::query::source_errors_schema())))
            }
            Statement::Show(ShowTarget::Checkpoints) => {
                Ok((vec![], Some(super::query::checkpoints_schema())))
            }
            Statement::Show(ShowTarget::Watermarks) => {
                Ok((vec![], Some(super::query::watermarks_schema())))
            }
            Statement::Show(ShowTarget::Objects(crate::catalog::ObjectKind::Sink)) => {
                Ok((vec![], Some(super::query::sinks_schema())))
            }
            Statement::Show(ShowTarget::Objects(_)) => {
                Ok((vec![], Some(super::query::show_objects_schema())))
            }
            Statement::Describe { .. } => Ok((vec![], Some(super::query::describe_schema()))),
            // DECLARE returns no rows; its query's parameters are the statement's.
            Statement::Declare {
                body: crate::sql::CursorBody::Query(q),
                ..
            } => self
                .db
                .describe_query(q, true, declared)
                .map(|(params, _)| (params, None)),
            Statement::Subscribe(s) => Ok((vec![], Some(self.db.subscribe_schema(s)?))),
            Statement::Fetch { name, .. } => Ok((vec![], self.cursor_schema(name))),
            Statement::ExplainCreateView(_) | Statement::ExplainObject { .. } => {
                Ok((vec![], Some(super::query::explain_schema())))
            }
            _ => Ok((vec![], None)),
        };
        r.map_err(|e| position_in_statement(e, stmt))
    }

    fn show_all_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, false),
        ]))
    }
}

fn is_write(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

fn accepts_params(s: &Statement) -> bool {
    matches!(
        s,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::ExplainQuery(_)
            | Statement::Declare {
                body: crate::sql::CursorBody::Query(_),
                ..
            }
    )
}

/// Errors about a name get the position of that name in the statement, as Postgres
/// reports it (1-based, in the whole query string).
fn position_in_statement(e: Error, stmt: &ParsedStatement) -> Error {
    let find = |needle: &str| -> Option<usize> {
        let hay = stmt.text.to_lowercase();
        let needle = needle.to_lowercase();
        let bytes = hay.as_bytes();
        let mut from = 0;
        while let Some(i) = hay[from..].find(&needle) {
            let at = from + i;
            let end = at + needle.len();
            let before_ok = at == 0 || !is_ident_byte(bytes[at - 1]);
            let after_ok = end >= bytes.len() || !is_ident_byte(bytes[end]);
            if before_ok && after_ok {
                return Some(stmt.offset + hay[..at].chars().count() + 1);
            }
            from = end;
        }
        None
    };
    match e {
        Error::UndefinedRelation {
            name,
            position: None,
        } => {
            let position = find(&name);
            Error::UndefinedRelation { name, position }
        }
        Error::UndefinedColumn {
            message,
            position: None,
        } => {
            let position = message.split('"').nth(1).and_then(|name| {
                let short = name.rsplit('.').next().unwrap_or(name);
                find(short)
            });
            Error::UndefinedColumn { message, position }
        }
        Error::Parse {
            message,
            position: None,
        } => Error::Parse {
            message,
            position: None,
        },
        other => other,
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'"'
}
