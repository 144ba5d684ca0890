//! CREATE TABLE / STREAM / MATERIALIZED VIEW and DROP.
//!
//! Each creates or removes an object's dataflow and its catalog entry in one epoch, so
//! a crash leaves either both or neither.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{ColumnOption, TableConstraint};

use super::session::{ExecResult, Session};
use super::Database;
use crate::catalog::{CatalogEntry, Column, ObjectKind, SqlType};
use crate::dataflow::expr::EvalErrors;
use crate::dataflow::runtime::Subgraph;
use crate::dataflow::watermark::{parse_duration, WatermarkDef, DEFAULT_IDLE_TIMEOUT};
use crate::error::{Error, Result};
use crate::plan::{Lowering, PlanContext, ViewWindow};
use crate::sql::{normalize_ident, CreateRelation, CreateView, DropStatement, EmitMode};
use crate::storage::WriteBatch;
use datafusion::arrow::datatypes::DataType;

/// A planned view: its operators, columns, the objects it reads, and warnings.
type PlannedView = (Subgraph, Vec<Column>, Vec<u32>, Vec<String>);

/// A warning for each stream joined in `plan`: eddy's joins are fully incremental, so
/// they keep every row of a stream input (a later change on the other side may match
/// it), and that state grows with the stream — unless the join is a lookup join or a
/// time-bounded join of watermarked streams, whose state stays bounded. Accepted, not
/// refused: over bounded or slowly growing streams it is what the user wants, and the
/// warning says what it costs and how to bound it.
fn unbounded_stream_joins(
    plan: &datafusion::logical_expr::LogicalPlan,
    catalog: &crate::catalog::Catalog,
) -> Vec<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    let streams_under = |p: &LogicalPlan| -> Vec<String> {
        let mut out = vec![];
        let _ = p.apply(|n| {
            if let LogicalPlan::TableScan(s) = n {
                let name = s.table_name.table().to_string();
                if catalog.get(&name).is_some_and(|e| e.append_only) {
                    out.push(name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        out.sort();
        out.dedup();
        out
    };
    let mut streams: Vec<String> = vec![];
    let _ = plan.apply(|n| {
        if let LogicalPlan::Join(j) = n {
            // A lookup join keeps only the looked-up side.
            let lookup = crate::plan::lower::reads_for_lookup(&j.left)
                || crate::plan::lower::reads_for_lookup(&j.right);
            // So does a time-bounded join of watermarked streams (its state expires).
            let bounded = crate::plan::event_time::join_time_bound(j).is_some();
            if !lookup && !bounded {
                streams.extend(streams_under(&j.left));
                streams.extend(streams_under(&j.right));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    streams.sort();
    streams.dedup();
    streams
        .into_iter()
        .map(|s| {
            format!(
                "this view joins stream \"{s}\": eddy keeps every row of it, so that matches \
                 stay right when the other side changes, and the view's state grows with the \
                 stream; to join each stream row with a table as it is when the row arrives \
                 (never revised, no stream state), write the table as \
                 `t FOR SYSTEM_TIME AS OF PROCTIME()`; to join two streams with bounded state, \
                 give both a WATERMARK and bound the join in event time \
                 (`a.t BETWEEN b.t - INTERVAL '1 minute' AND b.t`)"
            )
        })
        .collect()
}

impl Database {
    pub(crate) async fn create_relation(
        &self,
        session: &mut Session,
        c: &CreateRelation,
        sql: &str,
    ) -> Result<ExecResult> {
        let tag = if c.kind == ObjectKind::Stream {
            "CREATE STREAM"
        } else {
            "CREATE TABLE"
        };
        let _w = self.write_lock.lock().await;
        if let Some(existing) = self.catalog().get(&c.name) {
            if c.if_not_exists {
                session.notice(format!("relation \"{}\" already exists, skipping", c.name));
                return Ok(ExecResult::command(tag));
            }
            let _ = existing;
            return Err(Error::DuplicateRelation(c.name.clone()));
        }
        let kafka = c.options.contains_key("kafka_topic");
        let nexmark = c
            .options
            .get("connector")
            .is_some_and(|v| v.eq_ignore_ascii_case("nexmark"));
        let event_time_option = |k: &str| k == "idle_timeout" || k == "retention";
        if let Some((k, _)) = c
            .options
            .iter()
            .find(|(k, _)| !event_time_option(k))
            .filter(|_| !kafka && !nexmark)
        {
            return Err(Error::invalid_with(
                "22023",
                format!(
                    "unknown option \"{k}\" for {} (a {} stored by eddy takes no options; \
                     kafka_topic = '...' makes it Kafka-backed)",
                    c.kind.noun(),
                    c.kind.noun()
                ),
            ));
        }
        let (columns, primary_key) = columns_of(c)?;
        let watermark = watermark_of(c, &columns)?;
        let mut catalog = (*self.catalog()).clone();
        let mut batch = WriteBatch::new();
        let id = catalog.allocate_id(&mut batch);
        let entry = CatalogEntry {
            id,
            name: c.name.clone(),
            kind: c.kind,
            columns,
            primary_key,
            sql: sql.to_string(),
            depends_on: vec![],
            options: c.options.clone(),
            append_only: c.kind == ObjectKind::Stream,
            watermark,
            plan_version: 0,
        };
        if nexmark {
            crate::connector::nexmark::NexmarkOptions::from_entry(&entry)?;
        }
        if kafka {
            // Check everything before creating anything: options, broker, topic.
            let options = crate::connector::kafka::SourceOptions::from_entry(&entry)?;
            options.decoder(&entry)?;
            self.kafka
                .ensure_topic(&options.topic, options.partitions)
                .await?;
        }
        let subgraph = super::relation_subgraph(&entry)?;
        let source_entry = kafka.then(|| entry.clone());
        let generator_entry = nexmark.then(|| entry.clone());
        catalog.insert(entry, &mut batch)?;
        self.dataflow.install(subgraph, false, batch).await?;
        self.set_catalog(catalog);
        if let Some(entry) = source_entry {
            self.kafka
                .start_source(&entry, Default::default(), self.dataflow.clone())?;
        }
        if let Some(entry) = generator_entry {
            let source = crate::connector::nexmark::start(
                &entry,
                Default::default(),
                self.dataflow.clone(),
            )?;
            self.kafka.register_source(entry.id, source);
        }
        Ok(ExecResult::command(tag))
    }

    pub(crate) async fn create_sink(
        &self,
        session: &mut Session,
        s: &crate::sql::CreateSink,
        sql: &str,
    ) -> Result<ExecResult> {
        let _w = self.write_lock.lock().await;
        if self.catalog().get(&s.name).is_some() {
            if s.if_not_exists {
                session.notice(format!("sink \"{}\" already exists, skipping", s.name));
                return Ok(ExecResult::command("CREATE SINK"));
            }
            return Err(Error::DuplicateRelation(s.name.clone()));
        }
        let mut catalog = (*self.catalog()).clone();
        let from = catalog
            .get(&s.from)
            .filter(|e| e.kind.is_relation())
            .cloned()
            .ok_or_else(|| Error::UndefinedRelation {
                name: s.from.clone(),
                position: None,
            })?;
        let opts = crate::connector::kafka::SinkOptions::parse(&s.options, &from)?;
        self.kafka
            .ensure_topic(&opts.topic, opts.partitions)
            .await?;
        let mut batch = WriteBatch::new();
        let id = catalog.allocate_id(&mut batch);
        let entry = CatalogEntry {
            id,
            name: s.name.clone(),
            kind: ObjectKind::Sink,
            columns: from.columns.clone(),
            primary_key: vec![],
            sql: sql.to_string(),
            depends_on: vec![from.id],
            options: s.options.clone(),
            append_only: from.append_only,
            watermark: None,
            plan_version: 0,
        };
        catalog.insert(entry.clone(), &mut batch)?;
        // A sink has no operators: its catalog entry is all there is to commit.
        self.storage.commit(batch)?;
        self.storage.flush()?;
        self.set_catalog(catalog);
        self.kafka.start_sink(
            &entry,
            opts,
            from.id,
            self.dataflow.clone(),
            self.storage.clone(),
            true,
        )?;
        Ok(ExecResult::command("CREATE SINK"))
    }

    pub(crate) async fn create_view(
        &self,
        session: &mut Session,
        v: &CreateView,
        sql: &str,
    ) -> Result<ExecResult> {
        let _w = self.write_lock.lock().await;
        if v.or_replace {
            return Err(Error::not_supported(
                "CREATE OR REPLACE MATERIALIZED VIEW; drop the view and create it again",
            ));
        }
        if self.catalog().get(&v.name).is_some() {
            if v.if_not_exists {
                session.notice(format!("relation \"{}\" already exists, skipping", v.name));
                return Ok(ExecResult::command("CREATE MATERIALIZED VIEW"));
            }
            return Err(Error::DuplicateRelation(v.name.clone()));
        }
        let mut catalog = (*self.catalog()).clone();
        let mut batch = WriteBatch::new();
        let id = catalog.allocate_id(&mut batch);
        let errors = EvalErrors::new();
        let (subgraph, columns, depends_on, warnings) =
            self.plan_view_with_warnings(&catalog, id, v, errors.clone())?;
        for w in warnings {
            session.warning(w);
        }
        let entry = CatalogEntry {
            id,
            name: v.name.clone(),
            kind: ObjectKind::MaterializedView,
            columns,
            primary_key: vec![],
            sql: sql.to_string(),
            depends_on,
            options: v.options.clone(),
            append_only: subgraph.append_only,
            watermark: None,
            plan_version: crate::catalog::PLAN_VERSION,
        };
        catalog.insert(entry, &mut batch)?;
        self.dataflow.install(subgraph, false, batch).await?;
        self.view_errors.write().insert(id, errors);
        self.set_catalog(catalog);
        Ok(ExecResult::command("CREATE MATERIALIZED VIEW"))
    }

    /// Plan a view: its operators, its columns and the objects it reads.
    fn plan_view(
        &self,
        catalog: &crate::catalog::Catalog,
        id: u32,
        v: &CreateView,
        errors: std::sync::Arc<EvalErrors>,
    ) -> Result<(Subgraph, Vec<Column>, Vec<u32>)> {
        let (subgraph, columns, used, _) = self.plan_view_with_warnings(catalog, id, v, errors)?;
        Ok((subgraph, columns, used))
    }

    /// [`Self::plan_view`], plus warnings for the user (joins whose state is unbounded).
    fn plan_view_with_warnings(
        &self,
        catalog: &crate::catalog::Catalog,
        id: u32,
        v: &CreateView,
        errors: std::sync::Arc<EvalErrors>,
    ) -> Result<PlannedView> {
        let ctx = PlanContext::new(&self.state, catalog, None);
        let mut query = v.query.clone();
        let renames = crate::sql::naming::postgres_column_names(&mut query);
        let plan = ctx.plan_query(&query)?;
        let warnings = unbounded_stream_joins(&plan, catalog);
        let mut seen = HashSet::new();
        let mut columns = vec![];
        for f in plan.schema().fields() {
            let name = renames.get(f.name()).unwrap_or(f.name());
            if !seen.insert(name.clone()) {
                return Err(Error::invalid_with(
                    "42701",
                                        format!("column \"{name}\" specified more than once; give the columns distinct names with AS"),
                ));
            }
            columns.push(Column {
                name: name.clone(),
                data_type: f.data_type().clone(),
                nullable: true,
                sql_type: None,
            });
        }
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let used = ctx.used_objects();
        let subgraph = Lowering::new(&self.state, errors)
            .with_plan_version(crate::catalog::PLAN_VERSION)
            .with_append_only_relations(catalog.append_only_ids())
            .with_window(view_window(v, catalog, &used)?)
            .lower_view(id, &v.name, &plan, &names)?;
        Ok((subgraph, columns, used, warnings))
    }

    pub(crate) fn explain_create_view(&self, v: &CreateView) -> Result<ExecResult> {
        let catalog = (*self.catalog()).clone();
        let (subgraph, _, _) = self.plan_view(&catalog, 0, v, EvalErrors::new())?;
        let names = catalog.names_by_id();
        let text = subgraph.explain(&|id| {
            names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("object {id}"))
        });
        super::query::explain_rows(&text)
    }

    pub(crate) async fn explain_object(&self, name: &str, analyze: bool) -> Result<ExecResult> {
        let (id, names) = {
            let catalog = self.catalog();
            let e = catalog.get(name).ok_or_else(|| Error::UndefinedRelation {
                name: name.into(),
                position: None,
            })?;
            (e.id, catalog.names_by_id())
        };
        let text = self.dataflow.explain(id, names, analyze).await?;
        super::query::explain_rows(&text)
    }

    pub(crate) async fn drop_objects(
        &self,
        session: &mut Session,
        d: &DropStatement,
    ) -> Result<ExecResult> {
        let tag = match d.kind {
            ObjectKind::Table => "DROP TABLE",
            ObjectKind::Stream => "DROP STREAM",
            ObjectKind::MaterializedView => "DROP MATERIALIZED VIEW",
            ObjectKind::Sink => "DROP SINK",
        };
        let _w = self.write_lock.lock().await;
        // Check everything first: a DROP of several names drops all or nothing.
        let mut to_drop: Vec<u32> = vec![];
        {
            let catalog = self.catalog();
            for name in &d.names {
                let Some(e) = catalog.get(name) else {
                    if d.if_exists {
                        session.notice(format!(
                            "{} \"{name}\" does not exist, skipping",
                            d.kind.noun()
                        ));
                        continue;
                    }
                    return Err(match d.kind {
                        ObjectKind::Table | ObjectKind::Stream | ObjectKind::MaterializedView => {
                            Error::UndefinedRelation {
                                name: name.clone(),
                                position: None,
                            }
                        }
                        ObjectKind::Sink => {
                            Error::invalid_with("42704", format!("sink \"{name}\" does not exist"))
                        }
                    });
                };
                if e.kind != d.kind {
                    return Err(Error::wrong_object_type(format!(
                        "\"{name}\" is a {}, not a {}; use DROP {}",
                        e.kind.noun(),
                        d.kind.noun(),
                        e.kind.noun().to_uppercase()
                    )));
                }
                let deps = catalog.dependents(e.id);
                let outside: Vec<u32> = deps
                    .iter()
                    .copied()
                    .filter(|x| !to_drop.contains(x))
                    .collect();
                if !outside.is_empty() && !d.cascade {
                    let detail = outside
                        .iter()
                        .filter_map(|x| catalog.get_by_id(*x))
                        .map(|x| {
                            format!(
                                "{} {} depends on {} {}",
                                x.kind.noun(),
                                x.name,
                                e.kind.noun(),
                                e.name
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(Error::DependentObjects(format!(
                        "cannot drop {} {} because other objects depend on it ({detail}); use DROP ... CASCADE to drop them too",
                        e.kind.noun(),
                        e.name
                    )));
                }
                for x in deps {
                    if !to_drop.contains(&x) {
                        to_drop.push(x);
                    }
                }
                if !to_drop.contains(&e.id) {
                    to_drop.push(e.id);
                }
            }
        }
        // Newest first: dependents go before what they read.
        to_drop.sort_by(|a, b| b.cmp(a));
        for id in to_drop {
            let mut catalog = (*self.catalog()).clone();
            let mut batch = WriteBatch::new();
            let removed = catalog.remove(id, &mut batch);
            if removed.as_ref().is_some_and(|r| r.kind == ObjectKind::Sink) {
                self.kafka.stop_sink(id);
                crate::connector::kafka::delete_progress(&mut batch, id);
            } else if removed
                .as_ref()
                .is_some_and(|r| r.is_kafka() || r.is_nexmark())
            {
                self.kafka.stop_source(id).await;
                crate::connector::kafka::delete_progress(&mut batch, id);
            }
            self.dataflow.drop_object(id, batch).await?;
            self.set_catalog(catalog);
            self.view_errors.write().remove(&id);
            if let Some(r) = removed {
                if !d.names.contains(&r.name) {
                    session.notice(format!("drop cascades to {} {}", r.kind.noun(), r.name));
                }
            }
        }
        Ok(ExecResult::command(tag))
    }
}

/// Columns and primary key of a CREATE TABLE / CREATE STREAM.
/// How a view emits and keeps its windows (`EMIT ON WINDOW CLOSE`, `WITH (retention)`),
/// checked: both need a watermark upstream.
pub(crate) fn view_window(
    v: &CreateView,
    catalog: &crate::catalog::Catalog,
    used: &[u32],
) -> Result<Option<ViewWindow>> {
    crate::connector::kafka::check_known_options(
        &v.options,
        &["retention"],
        "a materialized view",
    )?;
    let retention_us = match v.options.get("retention") {
        Some(r) => Some(
            parse_duration(r)?
                .ok_or_else(|| {
                    Error::invalid_with("22023", "retention must be a duration such as '1 hour'")
                })?
                .as_micros() as i64,
        ),
        None => None,
    };
    let on_close = v.emit == EmitMode::OnWindowClose;
    if !on_close && retention_us.is_none() {
        return Ok(None);
    }
    // Is there a watermarked table or stream under the view?
    let mut stack: Vec<u32> = used.to_vec();
    let mut seen = HashSet::new();
    let mut watermarked = false;
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(e) = catalog.get_by_id(id) {
            watermarked |= e.watermark.is_some();
            stack.extend(e.depends_on.iter().copied());
        }
    }
    if !watermarked {
        return Err(Error::invalid_with(
            "22023",
            format!(
                "{} needs event time: none of the relations under this view has a watermark \
                 (declare one with WATERMARK FOR column AS column - INTERVAL '...')",
                if on_close {
                    "EMIT ON WINDOW CLOSE"
                } else {
                    "retention"
                }
            ),
        ));
    }
    Ok(Some(ViewWindow {
        on_close,
        retention_us,
    }))
}

/// Check a `WATERMARK FOR` clause and the event-time options (`idle_timeout`,
/// `retention`) against the relation's columns.
fn watermark_of(c: &CreateRelation, columns: &[Column]) -> Result<Option<WatermarkDef>> {
    let Some(w) = &c.watermark else {
        if let Some(k) = ["idle_timeout", "retention"]
            .into_iter()
            .find(|k| c.options.contains_key(*k))
        {
            return Err(Error::invalid_with(
                "22023",
                format!("option \"{k}\" needs an event-time column: add WATERMARK FOR column AS column - INTERVAL '...'"),
            ));
        }
        return Ok(None);
    };
    let col =
        columns
            .iter()
            .find(|x| x.name == w.column)
            .ok_or_else(|| Error::UndefinedColumn {
                message: format!(
                    "column \"{}\" named in WATERMARK FOR does not exist",
                    w.column
                ),
                position: None,
            })?;
    if !matches!(col.data_type, DataType::Timestamp(_, _)) {
        return Err(Error::invalid_with(
            "42804",
            format!(
                "the watermark column \"{}\" must be a timestamp, not {}",
                w.column,
                col.type_name()
            ),
        ));
    }
    let duration = |name: &str| -> Result<Option<Option<std::time::Duration>>> {
        c.options.get(name).map(|v| parse_duration(v)).transpose()
    };
    let idle = match duration("idle_timeout")? {
        None => Some(DEFAULT_IDLE_TIMEOUT),
        Some(d) => d,
    };
    if let Some(r) = duration("retention")? {
        if c.kind != ObjectKind::Stream {
            return Err(Error::invalid_with(
                "22023",
                "retention applies to streams only (a table keeps one row per key)",
            ));
        }
        if r.is_none() {
            return Err(Error::invalid_with(
                "22023",
                "retention must be a duration such as '1 hour'",
            ));
        }
    }
    Ok(Some(WatermarkDef {
        column: w.column.clone(),
        lateness_us: w.lateness_us,
        idle_timeout_ms: idle.map(|d| d.as_millis() as u64),
    }))
}

fn columns_of(c: &CreateRelation) -> Result<(Vec<Column>, Vec<usize>)> {
    if c.columns.is_empty() {
        return Err(Error::invalid_with(
            "42P16",
            format!("{} \"{}\" needs at least one column", c.kind.noun(), c.name),
        ));
    }
    let mut columns: Vec<Column> = vec![];
    let mut pk: Vec<usize> = vec![];
    for (i, def) in c.columns.iter().enumerate() {
        let name = normalize_ident(&def.name);
        if columns.iter().any(|x| x.name == name) {
            return Err(Error::invalid_with(
                "42701",
                format!("column \"{name}\" specified more than once"),
            ));
        }
        let sql_type = SqlType::from_ast(&def.data_type)?;
        let mut nullable = true;
        for opt in &def.options {
            match &opt.option {
                ColumnOption::NotNull => nullable = false,
                ColumnOption::Null => {}
                ColumnOption::PrimaryKey(_) => {
                    if !pk.is_empty() {
                        return Err(Error::invalid_with(
                            "42P16",
                            format!(
                                "multiple primary keys for table \"{}\" are not allowed",
                                c.name
                            ),
                        ));
                    }
                    pk.push(i);
                }
                ColumnOption::Default(_) => {
                    return Err(Error::not_supported("DEFAULT values for columns"))
                }
                other => return Err(Error::not_supported(format!("column constraint {other}"))),
            }
        }
        columns.push(Column {
            name,
            data_type: sql_type.to_arrow(),
            nullable,
            sql_type: Some(sql_type),
        });
    }
    for con in &c.constraints {
        match con {
            TableConstraint::PrimaryKey(p) => {
                if !pk.is_empty() {
                    return Err(Error::invalid_with(
                        "42P16",
                        format!(
                            "multiple primary keys for table \"{}\" are not allowed",
                            c.name
                        ),
                    ));
                }
                for col in &p.columns {
                    let name = match &col.column.expr {
                        datafusion::sql::sqlparser::ast::Expr::Identifier(ident) => {
                            normalize_ident(ident)
                        }
                        other => {
                            return Err(Error::not_supported(format!(
                                "primary key expression {other}"
                            )))
                        }
                    };
                    let idx = columns.iter().position(|x| x.name == name).ok_or_else(|| {
                        Error::UndefinedColumn {
                            message: format!("column \"{name}\" named in key does not exist"),
                            position: None,
                        }
                    })?;
                    if pk.contains(&idx) {
                        return Err(Error::invalid_with(
                            "42701",
                            format!("column \"{name}\" appears twice in primary key constraint"),
                        ));
                    }
                    pk.push(idx);
                }
            }
            other => return Err(Error::not_supported(format!("table constraint {other}"))),
        }
    }
    if !pk.is_empty() && c.kind == ObjectKind::Stream {
        return Err(Error::invalid_with(
            "42P16",
            "a stream cannot have a primary key: streams are append-only; use CREATE TABLE for keyed data",
        ));
    }
    for i in &pk {
        columns[*i].nullable = false;
    }
    Ok((columns, pk))
}
