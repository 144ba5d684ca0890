//! INSERT, UPDATE and DELETE on embedded tables and streams.
//!
//! DataFusion plans each statement (column lists, casts to the column types, WHERE
//! clauses, parameters); eddy runs the plan over the latest snapshot, checks the
//! constraints, and turns the result into one batch of changes — retractions of the old
//! rows, insertions of the new — that the dataflow applies as one epoch. A statement
//! that violates a constraint changes nothing.

use std::collections::HashSet;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::sql::sqlparser::ast;

use super::session::{ExecResult, Params};
use super::Database;
use crate::catalog::{CatalogEntry, ObjectKind, SqlType};
use crate::dataflow::snapshot::RelationSnapshot;
use crate::dataflow::ChangeBatch;
use crate::error::{Error, Result};
use crate::plan::PlanContext;

impl Database {
    /// Reject what eddy does not do yet, and fill in what Postgres fills in: `INSERT
    /// INTO t VALUES (1)` into a two-column table sets the remaining column to NULL.
    fn normalize_dml(&self, stmt: &ast::Statement) -> Result<ast::Statement> {
        let mut stmt = stmt.clone();
        match &mut stmt {
            ast::Statement::Insert(ins) => {
                if ins.returning.is_some() {
                    return Err(Error::not_supported("INSERT ... RETURNING"));
                }
                if ins.on.is_some() {
                    return Err(Error::not_supported(
                        "INSERT ... ON CONFLICT; use UPDATE, or DELETE then INSERT",
                    ));
                }
                // The source's columns are matched by position, so repeated names
                // (`SELECT x, x % 10, x`) must not trip DataFusion's unique-name rule.
                if let Some(source) = &mut ins.source {
                    crate::sql::naming::postgres_column_names(source);
                }
                if ins.columns.is_empty() {
                    if let (ast::TableObject::TableName(name), Some(source)) =
                        (&ins.table, &ins.source)
                    {
                        if let ast::SetExpr::Values(values) = source.body.as_ref() {
                            let width = values
                                .rows
                                .iter()
                                .map(|r| r.content.len())
                                .max()
                                .unwrap_or(0);
                            let catalog = self.catalog();
                            if let Some(entry) = crate::sql::object_name(name)
                                .ok()
                                .and_then(|n| catalog.get(&n).cloned())
                            {
                                if width < entry.columns.len()
                                    && values.rows.iter().all(|r| r.content.len() == width)
                                {
                                    ins.columns = entry.columns[..width]
                                        .iter()
                                        .map(|c| {
                                            ast::ObjectName::from(vec![ast::Ident::with_quote(
                                                '"',
                                                c.name.clone(),
                                            )])
                                        })
                                        .collect();
                                }
                            }
                        }
                    }
                }
            }
            ast::Statement::Update(u) => {
                if u.returning.is_some() {
                    return Err(Error::not_supported("UPDATE ... RETURNING"));
                }
                if u.from.is_some() {
                    return Err(Error::not_supported("UPDATE ... FROM"));
                }
            }
            ast::Statement::Delete(d) => {
                if d.returning.is_some() {
                    return Err(Error::not_supported("DELETE ... RETURNING"));
                }
                if d.using.is_some() {
                    return Err(Error::not_supported("DELETE ... USING"));
                }
            }
            _ => {}
        }
        Ok(stmt)
    }

    /// Plan a DML statement against the latest snapshot.
    fn plan_dml(
        &self,
        stmt: &ast::Statement,
        params: &Params,
    ) -> Result<(DmlStatement, CatalogEntry)> {
        let stmt = &self.normalize_dml(stmt)?;
        let snapshot = self.dataflow.snapshots().current();
        let catalog = self.catalog();
        let plan = {
            let ctx = PlanContext::new(&self.state, &catalog, Some(&snapshot))
                .with_param_types(&params.types);
            ctx.plan_statement(stmt)?
        };
        let plan = bind(plan, params)?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(Error::internal("DML statement did not plan to a DML plan"));
        };
        let entry = catalog
            .get(dml.table_name.table())
            .cloned()
            .ok_or_else(|| Error::UndefinedRelation {
                name: dml.table_name.table().into(),
                position: None,
            })?;
        let verb = match dml.op {
            WriteOp::Insert(_) => "insert into",
            WriteOp::Update => "update",
            WriteOp::Delete => "delete from",
            _ => "write to",
        };
        if entry.is_kafka() && !matches!(dml.op, WriteOp::Insert(_)) {
            return Err(Error::not_supported(format!(
                "cannot {verb} {} \"{}\": it is fed by Kafka topic \"{}\"; produce an upsert \
                 or a tombstone to the topic instead (INSERT produces to it)",
                entry.kind.noun(),
                entry.name,
                entry.options.get("kafka_topic").map_or("", String::as_str)
            )));
        }
        match entry.kind {
            ObjectKind::Table => {}
            ObjectKind::Stream if matches!(dml.op, WriteOp::Insert(_)) => {}
            ObjectKind::Stream => {
                return Err(Error::wrong_object_type(format!(
                    "cannot {verb} stream \"{}\": streams are append-only",
                    entry.name
                )))
            }
            kind => {
                return Err(Error::wrong_object_type(format!(
                    "cannot {verb} {} \"{}\"",
                    kind.noun(),
                    entry.name
                )))
            }
        }
        Ok((dml, entry))
    }

    fn table_snapshot(&self, id: u32) -> Option<std::sync::Arc<RelationSnapshot>> {
        self.dataflow.snapshots().current().get(id).cloned()
    }

    pub(crate) async fn insert(
        &self,
        stmt: &ast::Statement,
        params: &Params,
    ) -> Result<ExecResult> {
        let w = self.write_lock.lock().await;
        let (dml, entry) = self.plan_dml(stmt, params)?;
        let rows = self.run_plan(&dml.input).await?;
        let batch = conform(&entry, &rows)?;
        if entry.is_kafka() {
            // Producing can wait on the broker: other writers need not.
            drop(w);
            return self.produce(&entry, &batch).await;
        }
        if !entry.primary_key.is_empty() {
            if let Some(snap) = self.table_snapshot(entry.id) {
                check_new_keys(&entry, &snap, &batch, &HashSet::new())?;
            }
        }
        let n = batch.num_rows();
        if n > 0 {
            self.dataflow
                .write(entry.id, ChangeBatch::inserts(batch))
                .await?;
        }
        Ok(ExecResult::Command {
            tag: "INSERT 0".into(),
            rows: Some(n),
        })
    }

    /// INSERT into a Kafka-backed relation: produce the rows to its topic (in its value
    /// format, keyed by its key columns) and return once the broker acknowledged them.
    /// They reach the relation, and its views, through the source like any record.
    async fn produce(&self, entry: &CatalogEntry, batch: &RecordBatch) -> Result<ExecResult> {
        use crate::connector::kafka::SourceOptions;
        use crate::format::{encode_csv, encode_keys, JsonEncoder, ValueFormat};
        let options = SourceOptions::from_entry(entry)?;
        let values = match options.value_format {
            ValueFormat::Json => JsonEncoder::new(&batch.schema()).encode(batch, None)?,
            ValueFormat::Csv => encode_csv(batch)?,
        };
        let keys = encode_keys(batch, &options.key_columns, options.key_format)?;
        let n = values.len();
        let records = keys.into_iter().zip(values.into_iter().map(Some)).collect();
        self.kafka.produce(&options.topic, records).await?;
        Ok(ExecResult::Command {
            tag: "INSERT 0".into(),
            rows: Some(n),
        })
    }

    pub(crate) async fn update(
        &self,
        stmt: &ast::Statement,
        params: &Params,
    ) -> Result<ExecResult> {
        let _w = self.write_lock.lock().await;
        let (dml, entry) = self.plan_dml(stmt, params)?;
        // The plan is Projection(new values) over the rows to change; run both.
        let LogicalPlan::Projection(p) = dml.input.as_ref() else {
            return Err(Error::internal("UPDATE input is not a projection"));
        };
        if p.input.schema().fields().len() != entry.columns.len() {
            return Err(Error::not_supported("UPDATE ... FROM"));
        }
        let old = conform(&entry, &self.run_plan(&p.input).await?)?;
        let new = conform(&entry, &self.run_plan(&dml.input).await?)?;
        let n = old.num_rows();
        if !entry.primary_key.is_empty() {
            if let Some(snap) = self.table_snapshot(entry.id) {
                let freed: HashSet<Bytes> = encode_keys(&entry, &snap, &old)?.into_iter().collect();
                check_new_keys(&entry, &snap, &new, &freed)?;
            }
        }
        if n > 0 {
            let schema = entry.schema();
            let changes = ChangeBatch::concat(
                &schema,
                &[ChangeBatch::deletes(old), ChangeBatch::inserts(new)],
            )?;
            self.dataflow.write(entry.id, changes).await?;
        }
        Ok(ExecResult::Command {
            tag: "UPDATE".into(),
            rows: Some(n),
        })
    }

    pub(crate) async fn delete(
        &self,
        stmt: &ast::Statement,
        params: &Params,
    ) -> Result<ExecResult> {
        let _w = self.write_lock.lock().await;
        let (dml, entry) = self.plan_dml(stmt, params)?;
        let old = conform(&entry, &self.run_plan(&dml.input).await?)?;
        let n = old.num_rows();
        if n > 0 {
            self.dataflow
                .write(entry.id, ChangeBatch::deletes(old))
                .await?;
        }
        Ok(ExecResult::Command {
            tag: "DELETE".into(),
            rows: Some(n),
        })
    }

    /// Optimize, plan physically and run a logical plan to completion.
    pub(crate) async fn run_plan(&self, plan: &LogicalPlan) -> Result<Vec<RecordBatch>> {
        let state = self.statement_state();
        let optimized = state.optimize(plan)?;
        let physical = state.create_physical_plan(&optimized).await?;
        Ok(datafusion::physical_plan::collect(physical, state.task_ctx()).await?)
    }
}

/// Substitute `$n` parameters.
pub(crate) fn bind(plan: LogicalPlan, params: &Params) -> Result<LogicalPlan> {
    if params.values.is_empty() {
        return Ok(plan);
    }
    Ok(plan.with_param_values(params.values.clone())?)
}

/// Turn planned rows into a batch of the table's schema, enforcing NOT NULL and
/// varchar lengths.
fn conform(entry: &CatalogEntry, rows: &[RecordBatch]) -> Result<RecordBatch> {
    let schema: SchemaRef = entry.schema();
    let mut cols: Vec<ArrayRef> = vec![];
    let n: usize = rows.iter().map(|b| b.num_rows()).sum();
    for (i, col) in entry.columns.iter().enumerate() {
        let parts: Vec<ArrayRef> = rows
            .iter()
            .map(|b| {
                let a = b.column(i).clone();
                if a.data_type() != &col.data_type {
                    // Strict: a value that does not fit is an error, never a NULL.
                    let opts = datafusion::arrow::compute::CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    datafusion::arrow::compute::cast_with_options(&a, &col.data_type, &opts)
                } else {
                    Ok(a)
                }
            })
            .collect::<std::result::Result<_, _>>()?;
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        let arr = if refs.is_empty() {
            datafusion::arrow::array::new_empty_array(&col.data_type)
        } else {
            datafusion::arrow::compute::concat(&refs)?
        };
        // Casts between decimals do not always check the target precision.
        if let DataType::Decimal128(p, s) = col.data_type {
            arr.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>()
                .validate_decimal_precision(p)
                .map_err(|_| {
                    let _ = s;
                    Error::data("22003", "numeric field overflow")
                })?;
        }
        if !col.nullable && arr.null_count() > 0 {
            return Err(Error::Constraint {
                code: "23502",
                message: format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    col.name, entry.name
                ),
            });
        }
        if let (Some(SqlType::Varchar(Some(max))), DataType::Utf8) =
            (&col.sql_type, arr.data_type())
        {
            let s = arr.as_string::<i32>();
            if s.iter().flatten().any(|v| v.chars().count() as u64 > *max) {
                return Err(Error::data(
                    "22001",
                    format!("value too long for type character varying({max})"),
                ));
            }
        }
        cols.push(arr);
    }
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    Ok(concat_batches(&schema, [&batch])?)
}

fn key_columns(entry: &CatalogEntry, batch: &RecordBatch) -> Vec<ArrayRef> {
    entry
        .primary_key
        .iter()
        .map(|i| batch.column(*i).clone())
        .collect()
}

fn encode_keys(
    entry: &CatalogEntry,
    snap: &RelationSnapshot,
    batch: &RecordBatch,
) -> Result<Vec<Bytes>> {
    let codec = snap
        .key_codec()
        .ok_or_else(|| Error::internal("keyed table without a key codec"))?;
    Ok(codec
        .encode_rows(&key_columns(entry, batch), batch.num_rows())
        .into_iter()
        .map(Bytes::from)
        .collect())
}

/// New rows may not repeat a key among themselves, nor reuse a key still present in the
/// table (keys in `freed` are being removed by the same statement).
fn check_new_keys(
    entry: &CatalogEntry,
    snap: &RelationSnapshot,
    new: &RecordBatch,
    freed: &HashSet<Bytes>,
) -> Result<()> {
    let keys = encode_keys(entry, snap, new)?;
    let mut seen = HashSet::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let taken = !seen.insert(k.clone()) || (snap.get_by_key(k).is_some() && !freed.contains(k));
        if taken {
            let cols = key_columns(entry, new);
            let opts = FormatOptions::default().with_null("NULL");
            let vals: Vec<String> = cols
                .iter()
                .map(|c| {
                    ArrayFormatter::try_new(c.as_ref(), &opts)
                        .map(|f| f.value(i).to_string())
                        .unwrap_or_default()
                })
                .collect();
            let names: Vec<&str> = entry
                .primary_key
                .iter()
                .map(|i| entry.columns[*i].name.as_str())
                .collect();
            return Err(Error::Constraint {
                code: "23505",
                message: format!(
                    "duplicate key value violates unique constraint \"{}_pkey\": Key ({})=({}) already exists",
                    entry.name,
                    names.join(", "),
                    vals.join(", ")
                ),
            });
        }
    }
    Ok(())
}
