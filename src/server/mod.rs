//! The PostgreSQL wire protocol (the only module that imports pgwire).
//!
//! Each TCP connection gets a [`Connection`]: its own [`Session`] behind an async mutex
//! (a connection runs one statement at a time), and the pgwire handlers for the simple
//! and extended query protocols. Errors become `ErrorResponse`s with the SQLSTATE from
//! `error::sqlstate`; notices and warnings from the session become `NoticeResponse`s.
//! A connection that fails or disconnects affects nobody else.

pub mod encode;
pub mod error;
pub mod stream;

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    ServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, NoopHandler,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::engine::session::Notice;
use crate::engine::{Database, ExecResult, Params, Session};
use crate::error::Error;
use crate::sql::{self, ParsedStatement};
use encode::{decode_param, pg_type, value_at};
use error::{error_info, to_pgwire};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Longest accepted query string, in bytes.
    pub max_statement_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_statement_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Accept Postgres clients on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    config: ServerConfig,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        db,
        config,
        manager: Arc::new(ConnectionManager::new()),
        pids: RandomPidSecretKeyGenerator::default(),
    });
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let conn = Arc::new(Connection::new(shared.clone(), addr));
        tokio::spawn(async move {
            debug!(%addr, "connection opened");
            if let Err(e) = pgwire::tokio::process_socket(socket, None, conn).await {
                debug!(%addr, "connection ended with an error: {e}");
            }
            debug!(%addr, "connection closed");
        });
    }
}

/// State shared by all connections.
struct Shared {
    db: Arc<Database>,
    config: ServerConfig,
    manager: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
}

/// One client connection: what `process_socket` drives.
pub struct Connection {
    inner: Arc<ConnInner>,
}

/// The connection's state; it implements every pgwire handler.
struct ConnInner {
    shared: Arc<Shared>,
    session: Mutex<Session>,
    parser: Arc<StatementParser>,
    addr: SocketAddr,
}

impl Connection {
    fn new(shared: Arc<Shared>, addr: SocketAddr) -> Self {
        let session = Mutex::new(Session::new(shared.db.clone()));
        let parser = Arc::new(StatementParser {
            max_bytes: shared.config.max_statement_bytes,
        });
        Self {
            inner: Arc::new(ConnInner {
                shared,
                session,
                parser,
                addr,
            }),
        }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.inner.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.inner.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.inner.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.inner.shared.manager.clone()))
    }

    fn copy_handler(&self) -> Arc<impl pgwire::api::copy::CopyHandler> {
        Arc::new(NoopHandler)
    }
}

/// Startup parameters reported to clients.
struct StartupParams;

impl ServerParameterProvider for StartupParams {
    fn server_parameters<C: ClientInfo>(&self, _client: &C) -> Option<HashMap<String, String>> {
        let mut p = HashMap::new();
        for (k, v) in [
            ("server_version", crate::SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "on"),
            ("application_name", ""),
        ] {
            p.insert(k.to_string(), v.to_string());
        }
        Some(p)
    }
}

#[async_trait]
impl StartupHandler for ConnInner {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            protocol_negotiation(client, startup).await?;
            save_startup_parameters_to_metadata(client, startup);
            let shared = &self.shared;
            let (pid, key) = shared.pids.generate(client);
            client.set_pid_and_secret_key(pid, key.clone());
            // Register for cancel requests: pgwire races each query against them.
            let (handle, guard) = shared.manager.register(pid, key);
            client
                .session_extensions()
                .insert::<Arc<ConnectionHandle>>(handle);
            client.session_extensions().insert(guard);
            finish_authentication(client, &StartupParams).await?;
            info!(addr = %self.addr, user = client.metadata().get("user").map(String::as_str).unwrap_or(""), "client connected");
        }
        Ok(())
    }
}

async fn send_notices<C>(client: &mut C, notices: Vec<Notice>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for n in notices {
        let info = ErrorInfo::new(n.severity.to_string(), n.code.to_string(), n.message);
        client
            .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                info,
            )))
            .await?;
    }
    Ok(())
}

fn too_long(len: usize, max: usize) -> PgWireError {
    to_pgwire(&Error::invalid_with(
        "54000",
        format!(
            "statement is too long: {len} bytes (the limit is {max}; see --max-statement-bytes)"
        ),
    ))
}

/// A statement the server must stream itself (it never completes on its own).
fn streaming(
    stmt: &ParsedStatement,
) -> Option<(
    crate::sql::SubscribeStatement,
    Option<crate::sql::CopyFormat>,
)> {
    match &stmt.statement {
        crate::sql::Statement::Subscribe(s) => Some((s.clone(), None)),
        crate::sql::Statement::CopySubscribe { subscribe, format } => {
            Some((subscribe.clone(), Some(*format)))
        }
        _ => None,
    }
}

impl ConnInner {
    /// Start a subscription and stream it until it ends; returns why it ended (an error
    /// for the client) or a failure to talk to the client.
    async fn run_stream<C>(
        &self,
        client: &mut C,
        s: &crate::sql::SubscribeStatement,
        mode: stream::StreamMode,
        format: &Format,
    ) -> PgWireResult<Error>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sub = {
            let mut session = self.session.lock().await;
            session.apply_startup_params(client.metadata());
            session.subscribe(s).await
        };
        match sub {
            Ok(sub) => stream::stream_subscription(client, sub, mode, format).await,
            Err(e) => Ok(e),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for ConnInner {
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // SUBSCRIBE and COPY (SUBSCRIBE ...) never finish: eddy writes them itself, one
        // epoch at a time. Everything else takes pgwire's usual path.
        let one = match sql::parse(&query.query) {
            Ok(mut v) if v.len() == 1 => v.pop(),
            _ => None,
        };
        let Some((s, copy)) = one.as_ref().and_then(streaming) else {
            return self._on_query(client, query).await;
        };
        if !matches!(
            client.state(),
            pgwire::api::PgWireConnectionState::ReadyForQuery
        ) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(pgwire::api::PgWireConnectionState::QueryInProgress);
        let mode = match copy {
            Some(f) => stream::StreamMode::Copy(f),
            None => stream::StreamMode::Rows { describe: true },
        };
        let ended = self
            .run_stream(client, &s, mode, &Format::UnifiedText)
            .await?;
        client.feed(stream::end_error(&ended)).await?;
        let status = client.transaction_status().to_error_state();
        client.set_transaction_status(status);
        client.set_state(pgwire::api::PgWireConnectionState::ReadyForQuery);
        client
            .send(PgWireBackendMessage::ReadyForQuery(
                pgwire::messages::response::ReadyForQuery::new(status),
            ))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let max = self.shared.config.max_statement_bytes;
        if query.len() > max {
            return Err(too_long(query.len(), max));
        }
        let statements = sql::parse(query).map_err(|e| to_pgwire(&e))?;
        if statements.is_empty() {
            // Only comments: Postgres answers with EmptyQueryResponse.
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut session = self.session.lock().await;
        session.apply_startup_params(client.metadata());
        let mut out = vec![];
        for stmt in statements {
            debug!(sql = %stmt.text, "execute");
            let result = session.execute(&stmt, &Params::none()).await;
            send_notices(client, session.take_notices()).await?;
            match result {
                Ok(r) => out.push(to_response(r, &Format::UnifiedText)?),
                Err(e) => {
                    debug!("statement failed: {e}");
                    out.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// Parses statements for the extended protocol: exactly one per Parse message.
pub struct StatementParser {
    max_bytes: usize,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = ParsedStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<ParsedStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if sql.len() > self.max_bytes {
            return Err(too_long(sql.len(), self.max_bytes));
        }
        let mut v = sql::parse(sql).map_err(|e| to_pgwire(&e))?;
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(to_pgwire(&Error::invalid_with(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ))),
        }
    }

    fn get_parameter_types(&self, _stmt: &ParsedStatement) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(
        &self,
        _stmt: &ParsedStatement,
        _format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

#[async_trait]
impl ExtendedQueryHandler for ConnInner {
    type Statement = ParsedStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    async fn on_execute<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(pgwire::api::store::Entry::Value(p)) => Some(p),
            _ => None,
        };
        let Some((portal, (s, copy))) =
            portal.and_then(|p| streaming(&p.statement.statement).map(|x| (p, x)))
        else {
            return self._on_execute(client, message).await;
        };
        let mode = match copy {
            Some(f) => stream::StreamMode::Copy(f),
            // The extended protocol described the rows at Describe.
            None => stream::StreamMode::Rows { describe: false },
        };
        let ended = self
            .run_stream(client, &s, mode, &portal.result_column_format)
            .await?;
        // An error in the extended protocol: pgwire reports it and waits for Sync.
        Err(to_pgwire(&ended))
    }

    /// Postgres' cursors are portals: after `DECLARE c CURSOR FOR ...`, drivers
    /// (psycopg's named cursors) Describe the portal `c`. Answer for open cursors that
    /// the protocol's own portal store does not hold.
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::extendedquery::TARGET_TYPE_BYTE_PORTAL;
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        if message.target_type == TARGET_TYPE_BYTE_PORTAL
            && client.portal_store().get_portal(name).is_none()
        {
            let schema = self.session.lock().await.cursor_schema(name);
            if let Some(schema) = schema {
                let response = DescribePortalResponse::new(fields(&schema, &Format::UnifiedText));
                return pgwire::api::query::send_describe_response(client, &response).await;
            }
        }
        self._on_describe(client, message).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<ParsedStatement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session.lock().await;
        let declared = declared_types(&stmt.parameter_types);
        let (params, schema) = session
            .describe(&stmt.statement, &declared)
            .map_err(|e| to_pgwire(&e))?;
        let n = params.len().max(stmt.parameter_types.len());
        let types = (0..n)
            .map(|i| {
                stmt.parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .or_else(|| params.get(i).cloned().flatten().map(|t| pg_type(&t)))
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        let fields = schema
            .map(|s| fields(&s, &Format::UnifiedText))
            .unwrap_or_default();
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<ParsedStatement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session.lock().await;
        let declared = declared_types(&portal.statement.parameter_types);
        let (_, schema) = session
            .describe(&portal.statement.statement, &declared)
            .map_err(|e| to_pgwire(&e))?;
        let fields = schema
            .map(|s| fields(&s, &portal.result_column_format))
            .unwrap_or_default();
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<ParsedStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = ParsedStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &portal.statement;
        let mut session = self.session.lock().await;
        session.apply_startup_params(client.metadata());
        let declared = declared_types(&stmt.parameter_types);
        let values = if portal.parameter_len() == 0 {
            vec![]
        } else {
            // Types: as declared by the client, else as eddy inferred them.
            let inferred = session
                .describe(&stmt.statement, &declared)
                .map(|(p, _)| p)
                .unwrap_or_default();
            let mut values: Vec<ScalarValue> = Vec::with_capacity(portal.parameter_len());
            for i in 0..portal.parameter_len() {
                let ty = stmt
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .or_else(|| inferred.get(i).cloned().flatten().map(|t| pg_type(&t)))
                    .unwrap_or(Type::TEXT);
                let raw = portal.parameters.get(i).cloned().flatten();
                let v = decode_param(raw.as_deref(), &ty, portal.parameter_format.is_binary(i))
                    .map_err(|m| to_pgwire(&Error::data("22P02", m)))?;
                values.push(v);
            }
            values
        };
        debug!(sql = %stmt.statement.text, params = values.len(), "execute (extended)");
        let params = Params {
            values,
            types: declared,
        };
        let result = session.execute(&stmt.statement, &params).await;
        send_notices(client, session.take_notices()).await?;
        match result {
            Ok(r) => to_response(r, &portal.result_column_format),
            Err(e) => Err(to_pgwire(&e)),
        }
    }
}

/// The Arrow types of the parameters the client declared (unknown → inferred).
fn declared_types(types: &[Option<Type>]) -> Vec<Option<datafusion::arrow::datatypes::DataType>> {
    types
        .iter()
        .map(|t| t.as_ref().and_then(encode::arrow_type_for_param))
        .collect()
}

fn fields(schema: &SchemaRef, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format.format_for(i),
            )
        })
        .collect()
}

fn to_response(r: ExecResult, format: &Format) -> PgWireResult<Response> {
    Ok(match r {
        ExecResult::Rows { schema, batches } => {
            let fields = Arc::new(fields(&schema, format));
            let mut rows = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
            let mut encoder = DataRowEncoder::new(fields.clone());
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    for (c, col) in batch.columns().iter().enumerate() {
                        let ty = &fields[c];
                        let v = value_at(col, row);
                        encoder.encode_field_with_type_and_format(
                            &v,
                            ty.datatype(),
                            ty.format(),
                            ty.format_options(),
                        )?;
                    }
                    rows.push(Ok(encoder.take_row()));
                }
            }
            Response::Query(QueryResponse::new(fields, futures::stream::iter(rows)))
        }
        ExecResult::Command { tag, rows } => {
            let mut t = Tag::new(&tag);
            if let Some(n) = rows {
                t = t.with_rows(n);
            }
            Response::Execution(t)
        }
        ExecResult::Fetched { schema, batches } => {
            let Response::Query(mut q) = to_response(ExecResult::Rows { schema, batches }, format)?
            else {
                return Err(PgWireError::ApiError("FETCH did not produce rows".into()));
            };
            q.set_command_tag("FETCH");
            Response::Query(q)
        }
        ExecResult::CopyOut {
            schema,
            batches,
            format: copy_format,
        } => {
            let n = schema.fields().len();
            let lines: Vec<PgWireResult<pgwire::messages::copy::CopyData>> = batches
                .iter()
                .flat_map(|b| stream::copy_lines(b, copy_format))
                .map(|l| Ok(pgwire::messages::copy::CopyData::new(l.into())))
                .collect();
            Response::CopyOut(pgwire::api::results::CopyResponse::new(
                0,
                n,
                futures::stream::iter(lines),
            ))
        }
        ExecResult::TransactionStart => Response::TransactionStart(Tag::new("BEGIN")),
        ExecResult::TransactionEnd { tag } => Response::TransactionEnd(Tag::new(tag)),
    })
}
