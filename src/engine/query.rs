//! Reads: ad-hoc SELECT over a consistent snapshot, SHOW, DESCRIBE and EXPLAIN output.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast;

use super::dml::bind;
use super::session::{ExecResult, Params};
use super::Database;
use crate::catalog::{CatalogEntry, ObjectKind};
use crate::dataflow::runtime::CheckpointInfo;
use crate::error::{Error, Result};
use crate::plan::PlanContext;

impl Database {
    /// Run a query over the latest published snapshot: every relation it reads is seen
    /// as of the same epoch.
    pub(crate) async fn query(&self, stmt: &ast::Statement, params: &Params) -> Result<ExecResult> {
        let snapshot = self.dataflow.snapshots().current();
        let catalog = self.catalog();
        let (stmt, renames) = with_postgres_names(stmt);
        let plan = {
            let ctx = PlanContext::new(&self.state, &catalog, Some(&snapshot))
                .with_param_types(&params.types);
            ctx.plan_statement(&stmt)?
        };
        check_read_only(&plan)?;
        let plan = bind(plan, params)?;
        let state = self.statement_state();
        let optimized = state.optimize(&plan)?;
        let physical = state.create_physical_plan(&optimized).await?;
        let schema = physical.schema();
        let batches = datafusion::physical_plan::collect(physical, state.task_ctx()).await?;
        if renames.is_empty() {
            return Ok(ExecResult::Rows { schema, batches });
        }
        let schema = rename_fields(&schema, &renames);
        // Duplicate names are fine in a result: relabel the columns as they are.
        let batches = batches
            .into_iter()
            .map(|b| {
                let n = b.num_rows();
                datafusion::arrow::array::RecordBatch::try_new_with_options(
                    schema.clone(),
                    b.columns().to_vec(),
                    &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(ExecResult::Rows { schema, batches })
    }

    /// Parameter types and (for queries) result schema, for the extended protocol.
    pub(crate) fn describe_query(
        &self,
        stmt: &ast::Statement,
        with_result: bool,
        declared: &[Option<DataType>],
    ) -> Result<(Vec<Option<DataType>>, Option<SchemaRef>)> {
        let snapshot = self.dataflow.snapshots().current();
        let catalog = self.catalog();
        let ctx =
            PlanContext::new(&self.state, &catalog, Some(&snapshot)).with_param_types(declared);
        let (stmt, renames) = with_postgres_names(stmt);
        let plan = ctx.plan_statement(&stmt)?;
        let types = plan.get_parameter_types()?;
        let mut ordered: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .filter_map(|(k, t)| {
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, t))
            })
            .collect();
        ordered.sort_by_key(|(i, _)| *i);
        let n = ordered.last().map_or(0, |(i, _)| *i);
        let mut params = vec![None; n];
        for (i, t) in ordered {
            if i >= 1 {
                params[i - 1] = t;
            }
        }
        let result = with_result
            .then(|| rename_fields(&Arc::new(plan.schema().as_arrow().clone()), &renames));
        Ok((params, result))
    }

    pub(crate) fn show_objects(&self, kind: ObjectKind) -> Result<ExecResult> {
        if kind == ObjectKind::Sink {
            return self.show_sinks();
        }
        let catalog = self.catalog();
        let mut names: Vec<&str> = catalog
            .entries()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.as_str())
            .collect();
        names.sort();
        let schema = show_objects_schema();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(names))])?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// `SHOW SINKS`: each sink, what it reads, where it writes and how far it got.
    pub(crate) fn show_sinks(&self) -> Result<ExecResult> {
        use datafusion::arrow::array::Int64Array;
        let catalog = self.catalog();
        let status = self.kafka.sink_status();
        let mut sinks: Vec<&CatalogEntry> = catalog
            .entries()
            .filter(|e| e.kind == ObjectKind::Sink)
            .collect();
        sinks.sort_by(|a, b| a.name.cmp(&b.name));
        type Columns = (
            Vec<String>,
            Vec<String>,
            Vec<String>,
            Vec<i64>,
            Vec<i64>,
            Vec<String>,
        );
        let mut cols: Columns = Default::default();
        for s in sinks {
            let st = status.get(&s.id).cloned().unwrap_or_default();
            cols.0.push(s.name.clone());
            cols.1.push(
                s.depends_on
                    .first()
                    .and_then(|id| catalog.get_by_id(*id))
                    .map(|e| e.name.clone())
                    .unwrap_or_default(),
            );
            cols.2
                .push(s.options.get("kafka_topic").cloned().unwrap_or_default());
            cols.3.push(st.records as i64);
            cols.4.push(st.epoch as i64);
            cols.5.push(match (st.state.is_empty(), st.gap) {
                (true, _) => "not running".into(),
                (false, false) => st.state,
                (false, true) => format!(
                    "{} (restarted without the history to resume from: changes made while it was down were not sent)",
                    st.state
                ),
            });
        }
        let schema = sinks_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(cols.0)),
                Arc::new(StringArray::from(cols.1)),
                Arc::new(StringArray::from(cols.2)),
                Arc::new(Int64Array::from(cols.3)),
                Arc::new(Int64Array::from(cols.4)),
                Arc::new(StringArray::from(cols.5)),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    pub(crate) fn show_epoch(&self) -> Result<ExecResult> {
        let epoch = self.dataflow.snapshots().current().epoch;
        let schema = epoch_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(datafusion::arrow::array::Int64Array::from(vec![
                epoch as i64,
            ]))],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    pub(crate) async fn show_subscriptions(&self) -> Result<ExecResult> {
        let names = self.catalog().names_by_id();
        let mut rows: Vec<(String, i64)> = self
            .dataflow
            .stats()
            .await?
            .into_iter()
            .filter(|(_, _, subs)| *subs > 0)
            .map(|(id, _, subs)| {
                (
                    names.get(&id).cloned().unwrap_or_else(|| "(query)".into()),
                    subs as i64,
                )
            })
            .collect();
        rows.sort();
        let schema = subscriptions_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(datafusion::arrow::array::Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// `SHOW SOURCES`: one row per partition of every Kafka source.
    pub(crate) fn show_sources(&self) -> Result<ExecResult> {
        use datafusion::arrow::array::{Int32Array, Int64Array};
        let names = self.catalog().names_by_id();
        let mut status: Vec<_> = self.kafka.source_status().into_iter().collect();
        status.sort_by_key(|(id, _)| names.get(id).cloned());
        let (mut src, mut topic, mut part, mut off, mut hw, mut lag, mut recs, mut errs, mut state) = (
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        for (id, s) in status {
            let name = names.get(&id).cloned().unwrap_or_default();
            let mut partitions: Vec<i32> = s.progress.offsets.keys().copied().collect();
            partitions.extend(s.high_watermarks.keys().copied());
            partitions.sort_unstable();
            partitions.dedup();
            let rows: Vec<Option<i32>> = if partitions.is_empty() {
                vec![None]
            } else {
                partitions.into_iter().map(Some).collect()
            };
            for p in rows {
                let o = p.and_then(|p| s.progress.offsets.get(&p).copied());
                let h = p.and_then(|p| s.high_watermarks.get(&p).copied());
                src.push(name.clone());
                topic.push(s.topic.clone());
                part.push(p);
                off.push(o);
                hw.push(h);
                lag.push(h.map(|h| (h - o.unwrap_or(0)).max(0)));
                recs.push(s.progress.records as i64);
                errs.push(s.progress.errors as i64);
                state.push(s.state.clone());
            }
        }
        let schema = sources_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(src)),
                Arc::new(StringArray::from(topic)),
                Arc::new(Int32Array::from(part)),
                Arc::new(Int64Array::from(off)),
                Arc::new(Int64Array::from(hw)),
                Arc::new(Int64Array::from(lag)),
                Arc::new(Int64Array::from(recs)),
                Arc::new(Int64Array::from(errs)),
                Arc::new(StringArray::from(state)),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// `SHOW CHECKPOINTS`: the most recent checkpoints, newest first, with the source
    /// offsets each one's state reflects (where the sources resume after a crash, before
    /// the input log's replay moves them on).
    pub(crate) fn show_checkpoints(&self) -> Result<ExecResult> {
        use datafusion::arrow::array::{Float64Array, Int64Array, TimestampMillisecondArray};
        let names = self.catalog().names_by_id();
        let recent: Vec<CheckpointInfo> = self
            .dataflow
            .metrics()
            .recent_checkpoints
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default();
        let offsets: Vec<Option<String>> = recent
            .iter()
            .map(|c| {
                let parts: Vec<String> = c
                    .positions
                    .iter()
                    .filter_map(|(k, v)| {
                        crate::connector::kafka::decode_progress_entry(k.as_bytes(), v.as_bytes())
                    })
                    .filter_map(|(id, p)| {
                        let name = names.get(&id)?;
                        let offs: Vec<String> = p
                            .offsets
                            .iter()
                            .map(|(part, o)| format!("{part}:{o}"))
                            .collect();
                        Some(format!("{name}[{}]", offs.join(",")))
                    })
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
            .collect();
        let schema = checkpoints_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    recent.iter().map(|c| c.epoch as i64),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    recent.iter().map(|c| c.at_ms as i64),
                )),
                Arc::new(StringArray::from_iter_values(
                    recent.iter().map(|c| &c.reason),
                )),
                Arc::new(Float64Array::from_iter(
                    recent.iter().map(|c| c.duration_ms),
                )),
                Arc::new(Int64Array::from_iter_values(
                    recent.iter().map(|c| c.bytes as i64),
                )),
                Arc::new(Int64Array::from_iter_values(
                    recent.iter().map(|c| c.keys as i64),
                )),
                Arc::new(StringArray::from(offsets)),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// `SHOW WATERMARKS`: each relation with an event-time column and each view fed
    /// by one: its watermark, and the rows that came too late for it (dropped).
    pub(crate) async fn show_watermarks(&self) -> Result<ExecResult> {
        use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
        let report = self.dataflow.watermarks().await?;
        let catalog = self.catalog();
        let seconds = |us: u64| format!("{} s", us as f64 / 1e6);
        let mut rows = vec![];
        for (id, wm, late) in report {
            let Some(e) = catalog.get_by_id(id) else {
                continue;
            };
            let w = e.watermark.as_ref();
            rows.push((
                e.name.clone(),
                e.kind.noun().to_string(),
                wm,
                late as i64,
                w.map(|w| w.column.clone()),
                w.map(|w| seconds(w.lateness_us as u64)),
                w.map(|w| match w.idle_timeout_ms {
                    Some(ms) => seconds(ms * 1000),
                    None => "never".into(),
                }),
            ));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let schema = watermarks_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
                Arc::new(TimestampMicrosecondArray::from_iter(
                    rows.iter().map(|r| r.2),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.4.clone()))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.5.clone()))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.6.clone()))),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    /// `SHOW SOURCE ERRORS [FOR name]`: the most recent records each source skipped.
    pub(crate) fn show_source_errors(&self, only: Option<&str>) -> Result<ExecResult> {
        use datafusion::arrow::array::{Int32Array, Int64Array, TimestampMillisecondArray};
        let catalog = self.catalog();
        if let Some(n) = only {
            match catalog.get(n) {
                Some(e) if (e.is_kafka() && e.kind != ObjectKind::Sink) || e.is_nexmark() => {}
                Some(_) => {
                    return Err(Error::wrong_object_type(format!(
                        "\"{n}\" is not a Kafka source"
                    )))
                }
                None => {
                    return Err(Error::UndefinedRelation {
                        name: n.into(),
                        position: None,
                    })
                }
            }
        }
        let names = catalog.names_by_id();
        let mut rows = vec![];
        for (id, s) in self.kafka.source_status() {
            let name = names.get(&id).cloned().unwrap_or_default();
            if only.is_some_and(|n| n != name) {
                continue;
            }
            for e in s.progress.recent_errors {
                rows.push((name.clone(), e));
            }
        }
        rows.sort_by(|a, b| {
            (&a.0, a.1.partition, a.1.offset).cmp(&(&b.0, b.1.partition, b.1.offset))
        });
        let schema = source_errors_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    rows.iter().map(|r| r.1.partition).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1.offset).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1.reason.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMillisecondArray::from(
                    rows.iter().map(|r| r.1.at_ms).collect::<Vec<_>>(),
                )),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }

    pub(crate) fn describe(&self, name: &str) -> Result<ExecResult> {
        let catalog = self.catalog();
        let e = catalog.get(name).ok_or_else(|| Error::UndefinedRelation {
            name: name.into(),
            position: None,
        })?;
        let names: Vec<&str> = e.columns.iter().map(|c| c.name.as_str()).collect();
        let types: Vec<String> = e.columns.iter().map(|c| c.type_name()).collect();
        let nullable: Vec<bool> = e.columns.iter().map(|c| c.nullable).collect();
        let pk: Vec<bool> = (0..e.columns.len())
            .map(|i| e.primary_key.contains(&i))
            .collect();
        let schema = describe_schema();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(StringArray::from(types)),
                Arc::new(BooleanArray::from(nullable)),
                Arc::new(BooleanArray::from(pk)),
            ],
        )?;
        Ok(ExecResult::Rows {
            schema,
            batches: vec![batch],
        })
    }
}

/// A query with its outermost columns named as Postgres names them, and the renames
/// to apply to its result (see `sql::naming`).
fn with_postgres_names(
    stmt: &ast::Statement,
) -> (ast::Statement, std::collections::HashMap<String, String>) {
    match stmt {
        ast::Statement::Query(q) => {
            let mut q = q.clone();
            let renames = crate::sql::naming::postgres_column_names(&mut q);
            (ast::Statement::Query(q), renames)
        }
        other => (other.clone(), Default::default()),
    }
}

/// The schema with internal column names replaced by their display names.
pub(crate) fn rename_fields(
    schema: &SchemaRef,
    renames: &std::collections::HashMap<String, String>,
) -> SchemaRef {
    if renames.is_empty() {
        return schema.clone();
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match renames.get(f.name()) {
                Some(n) => f.as_ref().clone().with_name(n),
                None => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Ad-hoc statements that reach DataFusion must not change anything behind eddy's back.
fn check_read_only(plan: &LogicalPlan) -> Result<()> {
    match plan {
        LogicalPlan::Dml(_)
        | LogicalPlan::Ddl(_)
        | LogicalPlan::Copy(_)
        | LogicalPlan::Statement(_) => {
            Err(Error::not_supported(format!("{} here", plan.display())))
        }
        _ => Ok(()),
    }
}

pub(crate) fn show_objects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]))
}

pub(crate) fn epoch_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "epoch",
        DataType::Int64,
        false,
    )]))
}

pub(crate) fn sinks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("from", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("records", DataType::Int64, false),
        Field::new("epoch", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
    ]))
}

pub(crate) fn sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
        Field::new("high_watermark", DataType::Int64, true),
        Field::new("lag", DataType::Int64, true),
        Field::new("records", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("state", DataType::Utf8, false),
    ]))
}

pub(crate) fn source_errors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new(
            "at",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

pub(crate) fn watermarks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new(
            "watermark",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("event_time", DataType::Utf8, true),
        Field::new("lateness", DataType::Utf8, true),
        Field::new("idle_timeout", DataType::Utf8, true),
    ]))
}

pub(crate) fn checkpoints_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new(
            "at",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("reason", DataType::Utf8, false),
        Field::new("duration_ms", DataType::Float64, true),
        Field::new("bytes", DataType::Int64, false),
        Field::new("keys", DataType::Int64, false),
        Field::new("offsets", DataType::Utf8, true),
    ]))
}

pub(crate) fn subscriptions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("relation", DataType::Utf8, false),
        Field::new("subscribers", DataType::Int64, false),
    ]))
}

pub(crate) fn describe_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Boolean, false),
        Field::new("primary_key", DataType::Boolean, false),
    ]))
}

pub(crate) fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "QUERY PLAN",
        DataType::Utf8,
        false,
    )]))
}

pub(crate) fn explain_rows(text: &str) -> Result<ExecResult> {
    let schema = explain_schema();
    let text = text.replace("count(Int64(1))", "count(*)");
    let lines: Vec<&str> = text.lines().collect();
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(lines))])?;
    Ok(ExecResult::Rows {
        schema,
        batches: vec![batch],
    })
}
