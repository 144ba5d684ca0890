//! Lowering: a DataFusion [`LogicalPlan`] (already type-checked and optimized) becomes a
//! [`Subgraph`] of eddy's incremental operators. Each plan node maps to the operator with
//! the same stem — Filter → `FilterOperator`, Aggregate → `HashAggOperator`, Join →
//! `HashJoinOperator` — and expressions become DataFusion physical expressions.
//!
//! Anything without an incremental operator is rejected here, at CREATE time, with
//! SQLSTATE 0A000 and the name of the construct.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, JoinType, NullEquality};
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Distinct, Expr, ExprSchemable, LogicalPlan, SortExpr};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::PhysicalExpr;

use super::context::RelationTable;
use super::event_time::{join_time_bound, legacy, time_columns};
use crate::dataflow::accumulators::{AggKind, AggSpec};
use crate::dataflow::expr::EvalErrors;
use crate::dataflow::filter::FilterOperator;
use crate::dataflow::hash_agg::HashAggOperator;
use crate::dataflow::hash_join::{HashJoinOperator, JoinKind};
use crate::dataflow::materialize::MaterializeOperator;
use crate::dataflow::project::ProjectOperator;
use crate::dataflow::runtime::{NodeInput, NodeSpec, Subgraph};
use crate::dataflow::session::SessionWindowOperator;
use crate::dataflow::stream::StreamOperator;
use crate::dataflow::top_n::TopNOperator;
use crate::dataflow::union::UnionOperator;
use crate::dataflow::values::ValuesOperator;
use crate::dataflow::window::WindowOperator;
use crate::dataflow::Operator;
use crate::error::{Error, Result};
use crate::storage::rowcodec::{self, SortOrder};

/// Lowers one view's plan.
pub struct Lowering<'a> {
    state: &'a SessionState,
    nodes: Vec<NodeSpec>,
    errors: Arc<EvalErrors>,
    /// Relations whose changes are only insertions (streams, views over them).
    append_only_relations: std::collections::HashSet<u32>,
    /// Whether each node of the subgraph emits only insertions.
    node_append_only: Vec<bool>,
    /// EMIT ON WINDOW CLOSE / retention of the view's windows.
    window: Option<ViewWindow>,
    /// With plan version 1 and later: the operators already built for each subplan,
    /// so that a subquery written twice (q5's windowed count, once per side of its
    /// join) is computed once and read by both consumers.
    shared: Option<std::collections::HashMap<LogicalPlan, (NodeInput, SchemaRef)>>,
    /// The `crate::catalog::PLAN_VERSION` to lower as.
    plan_version: u32,
}

/// Does `plan` read one relation marked for a lookup join (through projections,
/// filters and aliases)?
pub(crate) fn reads_for_lookup(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source)
            .ok()
            .and_then(|p| {
                let any: &dyn std::any::Any = p.as_ref();
                any.downcast_ref::<RelationTable>().map(|t| t.lookup)
            })
            .unwrap_or(false),
        LogicalPlan::Projection(p) => reads_for_lookup(&p.input),
        LogicalPlan::Filter(f) => reads_for_lookup(&f.input),
        LogicalPlan::SubqueryAlias(s) => reads_for_lookup(&s.input),
        _ => false,
    }
}

/// How a windowed view emits and keeps its windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewWindow {
    /// EMIT ON WINDOW CLOSE: a window's rows appear once, final, when it closes.
    pub on_close: bool,
    /// Windows ending more than this (µs) below the watermark leave the view.
    pub retention_us: Option<i64>,
}

impl<'a> Lowering<'a> {
    pub fn new(state: &'a SessionState, errors: Arc<EvalErrors>) -> Self {
        Self {
            state,
            nodes: vec![],
            errors,
            append_only_relations: Default::default(),
            node_append_only: vec![],
            window: None,
            shared: None,
            plan_version: 0,
        }
    }

    /// Lower as `crate::catalog::PLAN_VERSION` `version` did (a view is restored with
    /// the version it was created with, since its operators' state is stored by
    /// position).
    pub fn with_plan_version(mut self, version: u32) -> Self {
        self.shared = (version >= 1).then(Default::default);
        self.plan_version = version;
        self
    }

    /// Emit the view's windows on close and/or drop them after a retention.
    pub fn with_window(mut self, window: Option<ViewWindow>) -> Self {
        self.window = window;
        self
    }

    /// Lower `plan` into the subgraph of view `object_id` called `name`, ending in a
    /// `MaterializeOperator`.
    pub fn lower_view(
        mut self,
        object_id: u32,
        name: &str,
        plan: &LogicalPlan,
        column_names: &[String],
    ) -> Result<Subgraph> {
        let (input, schema) = self.lower(plan)?;
        if column_names.len() != schema.fields().len() {
            return Err(Error::internal("view column names do not match its plan"));
        }
        // The view's rows carry the names users see (Postgres names, not DataFusion's).
        let schema: SchemaRef = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .zip(column_names)
                .map(|(f, n)| f.as_ref().clone().with_name(n))
                .collect::<Vec<_>>(),
        ));
        let input = match self.window {
            Some(w) => {
                let end = column_names
                    .iter()
                    .position(|n| n == "window_end")
                    .ok_or_else(|| {
                        Error::invalid_with(
                            "42P10",
                            "EMIT ON WINDOW CLOSE and retention need the view to output the window's \
                             end: add window_end to the SELECT list (and to GROUP BY)",
                        )
                    })?;
                let op = WindowOperator::new(schema.clone(), end, w.on_close, w.retention_us)?;
                self.push(Box::new(op), vec![input])
            }
            None => input,
        };
        // A view whose rows can only be added (it filters and projects streams) keeps
        // them like a stream: Arrow batches, one write per checkpoint, no per-row keys.
        let op: Box<dyn Operator> = if self.is_append_only(&input) {
            Box::new(StreamOperator::new(name, schema))
        } else {
            for f in schema.fields() {
                if !rowcodec::is_supported(f.data_type()) {
                    return Err(Error::not_supported(format!(
                        "column \"{}\" of type {} in a materialized view",
                        f.name(),
                        f.data_type()
                    )));
                }
            }
            Box::new(MaterializeOperator::new(name, schema)?)
        };
        self.push(op, vec![input]);
        let append_only = self.output_append_only();
        Ok(Subgraph {
            object_id,
            nodes: self.nodes,
            append_only,
            transient: false,
            watermark: None,
        })
    }

    /// The relations that only ever insert (for state-saving plans over streams).
    pub fn with_append_only_relations(mut self, ids: std::collections::HashSet<u32>) -> Self {
        self.append_only_relations = ids;
        self
    }

    fn is_append_only(&self, input: &NodeInput) -> bool {
        match input {
            NodeInput::Relation(id) => self.append_only_relations.contains(id),
            NodeInput::Local(i) => self.node_append_only.get(*i).copied().unwrap_or(false),
        }
    }

    /// Whether the view lowered last emits only insertions.
    pub fn output_append_only(&self) -> bool {
        self.node_append_only.last().copied().unwrap_or(false)
    }

    fn push(&mut self, op: Box<dyn Operator>, inputs: Vec<NodeInput>) -> NodeInput {
        let append_only =
            op.preserves_append_only() && inputs.iter().all(|i| self.is_append_only(i));
        self.nodes.push(NodeSpec { op, inputs });
        self.node_append_only.push(append_only);
        NodeInput::Local(self.nodes.len() - 1)
    }

    fn physical(&self, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(create_physical_expr(
            e,
            schema,
            self.state.execution_props(),
            &PhysicalPlanningContext::default(),
        )?)
    }

    /// A projection computing `eddy_session_start/end(ts, gap, keys...)` (SESSION
    /// windows): push a SessionWindowOperator over `input` and return it, its schema
    /// (the input's plus the session bounds), and the projection's expressions reading
    /// the bounds as columns.
    fn session_window(
        &mut self,
        p: &datafusion::logical_expr::Projection,
        input: NodeInput,
        in_schema: &SchemaRef,
    ) -> Result<Option<(NodeInput, DFSchema, Vec<Expr>)>> {
        use datafusion::common::tree_node::Transformed;
        use datafusion::common::ScalarValue;
        let mut call: Option<Vec<Expr>> = None;
        for e in &p.expr {
            let _ = e.apply(|x| {
                if let Expr::ScalarFunction(f) = x {
                    if f.name() == super::functions::SESSION_START
                        || f.name() == super::functions::SESSION_END
                    {
                        call.get_or_insert_with(|| f.args.clone());
                    }
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            });
        }
        let Some(args) = call else {
            return Ok(None);
        };
        let in_df = p.input.schema();
        let ts_col = match args.first() {
            Some(Expr::Column(c)) => in_df.index_of_column(c)?,
            _ => return Err(Error::not_supported("SESSION over a computed time column")),
        };
        let gap = match args.get(1) {
            Some(Expr::Literal(ScalarValue::Int64(Some(g)), _)) => *g,
            _ => return Err(Error::internal("SESSION without its gap")),
        };
        let keys = args[2..]
            .iter()
            .map(|k| self.physical(k, in_df))
            .collect::<Result<Vec<_>>>()?;
        let ts_field = in_schema.field(ts_col).clone();
        let mut fields: Vec<Field> = in_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(
            ts_field
                .clone()
                .with_name("__session_start")
                .with_nullable(true),
        );
        fields.push(ts_field.with_name("__session_end").with_nullable(true));
        let out: SchemaRef = Arc::new(Schema::new(fields));
        let display = format!(
            "gap {} s, per [{}]",
            gap as f64 / 1e6,
            args[2..]
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let op = SessionWindowOperator::new(
            in_schema.clone(),
            out.clone(),
            ts_col,
            gap,
            keys,
            display,
            self.errors.clone(),
        )?;
        let node = self.push(Box::new(op), vec![input]);
        // The input's columns keep their qualified names; the bounds are two more.
        let mut qualified: Vec<(Option<datafusion::common::TableReference>, Arc<Field>)> =
            in_df.iter().map(|(q, f)| (q.cloned(), f.clone())).collect();
        qualified.push((None, Arc::new(out.field(out.fields().len() - 2).clone())));
        qualified.push((None, Arc::new(out.field(out.fields().len() - 1).clone())));
        let df = DFSchema::new_with_metadata(qualified, Default::default())?;
        let exprs = p
            .expr
            .iter()
            .map(|e| {
                e.clone()
                    .transform(|x| {
                        Ok(match &x {
                            Expr::ScalarFunction(f)
                                if f.name() == super::functions::SESSION_START =>
                            {
                                Transformed::yes(Expr::Column(
                                    datafusion::common::Column::from_name("__session_start"),
                                ))
                            }
                            Expr::ScalarFunction(f)
                                if f.name() == super::functions::SESSION_END =>
                            {
                                Transformed::yes(Expr::Column(
                                    datafusion::common::Column::from_name("__session_end"),
                                ))
                            }
                            _ => Transformed::no(x),
                        })
                    })
                    .map(|t| t.data)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Some((node, df, exprs)))
    }

    /// `WHERE rn <= n` over `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) AS rn` (top-N
    /// per group, e.g. per window): a TopNOperator per partition that also numbers its
    /// rows. Other conditions of the WHERE apply after it.
    fn top_n_per_partition(
        &mut self,
        f: &datafusion::logical_expr::Filter,
        out_schema: SchemaRef,
    ) -> Result<Option<(NodeInput, SchemaRef)>> {
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::{BinaryExpr, Operator as Op, WindowFunctionDefinition};
        let LogicalPlan::Window(w) = f.input.as_ref() else {
            return Ok(None);
        };
        let [Expr::WindowFunction(wf)] = w.window_expr.as_slice() else {
            return Ok(None);
        };
        let is_row_number =
            matches!(&wf.fun, WindowFunctionDefinition::WindowUDF(u) if u.name() == "row_number");
        if !is_row_number || !wf.params.args.is_empty() {
            return Ok(None);
        }
        let rn_name = w
            .schema
            .field(w.input.schema().fields().len())
            .name()
            .clone();
        let is_rn = |e: &Expr| matches!(e, Expr::Column(c) if c.name == rn_name);
        let bound = |e: &Expr| match e {
            Expr::Literal(v, _) => match v {
                ScalarValue::UInt64(Some(n)) => Some(*n as i128),
                ScalarValue::Int64(Some(n)) => Some(*n as i128),
                ScalarValue::Int32(Some(n)) => Some(*n as i128),
                _ => None,
            },
            _ => None,
        };
        let mut limit: Option<usize> = None;
        let mut rest: Vec<Expr> = vec![];
        for c in datafusion::logical_expr::utils::split_conjunction(&f.predicate) {
            let n = match c {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_rn(left) => {
                    match (op, bound(right)) {
                        (Op::LtEq, Some(n)) => Some(n),
                        (Op::Lt, Some(n)) => Some(n - 1),
                        (Op::Eq, Some(1)) => Some(1),
                        _ => None,
                    }
                }
                Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_rn(right) => {
                    match (op, bound(left)) {
                        (Op::GtEq, Some(n)) => Some(n),
                        (Op::Gt, Some(n)) => Some(n - 1),
                        (Op::Eq, Some(1)) => Some(1),
                        _ => None,
                    }
                }
                _ => None,
            };
            match n {
                Some(n) => {
                    let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
                    limit = Some(limit.map_or(n, |l| l.min(n)));
                }
                None => rest.push(c.clone()),
            }
        }
        let Some(limit) = limit else {
            return Ok(None);
        };
        let (input, in_schema) = self.lower(&w.input)?;
        let df = w.input.schema();
        let partition = wf
            .params
            .partition_by
            .iter()
            .map(|e| self.physical(e, df))
            .collect::<Result<Vec<_>>>()?;
        let mut keys = vec![];
        for s in &wf.params.order_by {
            keys.push((
                self.physical(&s.expr, df)?,
                SortOrder::new(!s.asc, s.nulls_first),
            ));
        }
        let display = format!(
            "row_number() per [{}] order=[{}] <= {limit}",
            wf.params
                .partition_by
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            wf.params
                .order_by
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        let numbered = nullable(w.schema.as_arrow());
        let append_only = self.is_append_only(&input);
        let op = TopNOperator::new(
            in_schema,
            keys,
            partition,
            limit,
            0,
            display,
            self.errors.clone(),
        )?
        .with_row_number(numbered.clone())
        .with_append_only(append_only);
        let mut node = self.push(Box::new(op), vec![input]);
        if let Some(pred) = datafusion::logical_expr::utils::conjunction(rest) {
            reject_subqueries(&pred)?;
            let p = self.physical(&pred, &w.schema)?;
            let op =
                FilterOperator::new(out_schema.clone(), p, pred.to_string(), self.errors.clone());
            node = self.push(Box::new(op), vec![node]);
        }
        Ok(Some((node, out_schema)))
    }

    /// Lower a plan node; returns where its changes come from and their schema. An
    /// identical subplan lowered before is not lowered again (when sharing is on): its
    /// operators get one more consumer.
    fn lower(&mut self, plan: &LogicalPlan) -> Result<(NodeInput, SchemaRef)> {
        if let Some(done) = self.shared.as_ref().and_then(|m| m.get(plan)) {
            return Ok(done.clone());
        }
        let lowered = self.lower_new(plan)?;
        if let Some(m) = self.shared.as_mut() {
            m.insert(plan.clone(), lowered.clone());
        }
        Ok(lowered)
    }

    fn lower_new(&mut self, plan: &LogicalPlan) -> Result<(NodeInput, SchemaRef)> {
        let out_schema = nullable(plan.schema().as_arrow());
        match plan {
            LogicalPlan::TableScan(scan) => {
                let provider = source_as_provider(&scan.source)?;
                let any: &dyn std::any::Any = provider.as_ref();
                let table = any.downcast_ref::<RelationTable>().ok_or_else(|| {
                    Error::not_supported(format!(
                        "reading {} in a materialized view",
                        scan.table_name
                    ))
                })?;
                if !scan.filters.is_empty() {
                    return Err(Error::internal("filters were pushed into a scan"));
                }
                let full = nullable(&provider.schema());
                let mut input = NodeInput::Relation(table.object_id);
                let mut schema = full.clone();
                if let Some(proj) = &scan.projection {
                    if proj.len() != full.fields().len()
                        || proj.iter().enumerate().any(|(i, p)| i != *p)
                    {
                        let df = DFSchema::try_from(full.as_ref().clone())?;
                        let exprs = proj
                            .iter()
                            .map(|i| self.physical(&Expr::Column(df.columns()[*i].clone()), &df))
                            .collect::<Result<Vec<_>>>()?;
                        let names: Vec<_> =
                            proj.iter().map(|i| full.field(*i).name().clone()).collect();
                        schema = Arc::new(Schema::new(
                            proj.iter()
                                .map(|i| full.field(*i).clone())
                                .collect::<Vec<_>>(),
                        ));
                        let op = ProjectOperator::new(
                            schema.clone(),
                            exprs,
                            names.join(", "),
                            self.errors.clone(),
                        );
                        input = self.push(Box::new(op), vec![input]);
                    }
                }
                if let Some(fetch) = scan.fetch {
                    let op = TopNOperator::new(
                        schema.clone(),
                        vec![],
                        vec![],
                        fetch,
                        0,
                        format!("limit {fetch}"),
                        self.errors.clone(),
                    )?;
                    input = self.push(Box::new(op), vec![input]);
                }
                Ok((input, schema))
            }
            LogicalPlan::Projection(p) => {
                let (input, in_schema) = self.lower(&p.input)?;
                let identity = p.expr.len() == in_schema.fields().len()
                    && p.expr.iter().enumerate().all(|(i, e)| match e {
                        Expr::Column(c) => p.input.schema().index_of_column(c).ok() == Some(i),
                        _ => false,
                    });
                if identity {
                    return Ok((input, out_schema));
                }
                // SESSION windows: a SessionWindowOperator computes the placeholders'
                // values (it needs every row of a key), then the projection reads them.
                let (input, in_df, exprs) =
                    match self.session_window(p, input.clone(), &in_schema)? {
                        Some((input, df, exprs)) => (input, df, exprs),
                        None => (input, p.input.schema().as_ref().clone(), p.expr.clone()),
                    };
                let exprs = exprs
                    .iter()
                    .map(|e| self.physical(e, &in_df))
                    .collect::<Result<Vec<_>>>()?;
                let display = p
                    .expr
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let op =
                    ProjectOperator::new(out_schema.clone(), exprs, display, self.errors.clone());
                Ok((self.push(Box::new(op), vec![input]), out_schema))
            }
            LogicalPlan::Filter(f) => {
                reject_subqueries(&f.predicate)?;
                if let Some(lowered) = self.top_n_per_partition(f, out_schema.clone())? {
                    return Ok(lowered);
                }
                let (input, _) = self.lower(&f.input)?;
                let pred = self.physical(&f.predicate, f.input.schema())?;
                let op = FilterOperator::new(
                    out_schema.clone(),
                    pred,
                    f.predicate.to_string(),
                    self.errors.clone(),
                );
                Ok((self.push(Box::new(op), vec![input]), out_schema))
            }
            LogicalPlan::Aggregate(a) => {
                let (input, _) = self.lower(&a.input)?;
                let in_df = a.input.schema();
                let mut keys = vec![];
                for g in &a.group_expr {
                    if matches!(g, Expr::GroupingSet(_)) {
                        return Err(Error::not_supported(
                            "GROUPING SETS, ROLLUP and CUBE in a materialized view",
                        ));
                    }
                    keys.push(self.physical(g, in_df)?);
                }
                let mut aggs = vec![];
                for (i, e) in a.aggr_expr.iter().enumerate() {
                    let out_type = out_schema.field(a.group_expr.len() + i).data_type().clone();
                    aggs.push(self.agg_spec(e, in_df, out_type)?);
                }
                let display = format!(
                    "group=[{}] aggs=[{}]",
                    a.group_expr
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    aggs.iter()
                        .map(|a| a.display.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let append_only = self.is_append_only(&input);
                // A group key that follows the watermark with delay D (a window's start
                // or end, see `plan::event_time`) lets the aggregate free closed
                // windows' groups: key v is closed once the watermark reaches v + D + 1
                // (for window_start, the window's end). A column named window_end
                // closes at its value otherwise (SESSION's).
                let keys_delay = time_columns(plan);
                let close_key = keys_delay
                    .iter()
                    .take(a.group_expr.len())
                    .enumerate()
                    .find_map(|(k, d)| Some((k, (*d)?.checked_add(1)?)))
                    .or_else(|| {
                        a.group_expr
                            .iter()
                            .position(|g| matches!(g, Expr::Column(c) if c.name == "window_end"))
                            .map(|k| (k, 0))
                    });
                let op = HashAggOperator::new(
                    out_schema.clone(),
                    keys,
                    aggs,
                    display,
                    self.errors.clone(),
                )?
                .with_append_only(append_only)
                .with_close_key(close_key);
                Ok((self.push(Box::new(op), vec![input]), out_schema))
            }
            LogicalPlan::Distinct(Distinct::All(inner)) => {
                let (input, in_schema) = self.lower(inner)?;
                let df = inner.schema();
                let keys = df
                    .columns()
                    .into_iter()
                    .map(|c| self.physical(&Expr::Column(c), df))
                    .collect::<Result<Vec<_>>>()?;
                let op = HashAggOperator::new(
                    in_schema.clone(),
                    keys,
                    vec![],
                    "distinct".into(),
                    self.errors.clone(),
                )?;
                Ok((self.push(Box::new(op), vec![input]), in_schema))
            }
            LogicalPlan::Distinct(Distinct::On(_)) => {
                Err(Error::not_supported("DISTINCT ON in a materialized view"))
            }
            LogicalPlan::Join(j) => {
                if j.null_aware {
                    return Err(Error::not_supported(
                        "NOT IN (subquery) in a materialized view; use NOT EXISTS",
                    ));
                }
                let kind = match j.join_type {
                    JoinType::Inner => JoinKind::Inner,
                    JoinType::Left => JoinKind::Left,
                    JoinType::Right => JoinKind::Right,
                    JoinType::Full => JoinKind::Full,
                    JoinType::LeftSemi => JoinKind::LeftSemi,
                    JoinType::LeftAnti => JoinKind::LeftAnti,
                    JoinType::RightSemi => JoinKind::RightSemi,
                    JoinType::RightAnti => JoinKind::RightAnti,
                    other => {
                        return Err(Error::not_supported(format!(
                            "{other} join in a materialized view"
                        )))
                    }
                };
                let (left, lschema) = self.lower(&j.left)?;
                let (right, rschema) = self.lower(&j.right)?;
                // `t FOR SYSTEM_TIME AS OF PROCTIME()`: the other side probes t.
                let lookup = match (reads_for_lookup(&j.left), reads_for_lookup(&j.right)) {
                    (false, false) => None,
                    (false, true) if matches!(kind, JoinKind::Inner | JoinKind::Left) => Some(0),
                    (true, false) if matches!(kind, JoinKind::Inner | JoinKind::Right) => Some(1),
                    _ => {
                        return Err(Error::not_supported(
                            "this lookup join: FOR SYSTEM_TIME AS OF PROCTIME() needs an inner \
                             or LEFT join whose other side is a stream",
                        ))
                    }
                };
                // A time-bounded join forgets rows the watermark has passed. Both inputs
                // append-only: an expired row is never retracted. Inner and semi joins
                // also take inputs that retract (q5's and q7's windowed aggregates): a
                // retraction carries the bounded column too, so it comes at or above
                // the watermark (minus the column's delay), where nothing has expired
                // (see `plan::event_time`); and these joins hold back no output.
                let append_only = [self.is_append_only(&left), self.is_append_only(&right)];
                let retracting_ok = matches!(
                    kind,
                    JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
                );
                // Views created before plan version 2 keep the interval joins they had.
                let v2 = self.plan_version >= 2;
                let bound = if v2 {
                    join_time_bound(j)
                } else {
                    legacy::legacy_join_time_bound(j)
                };
                let time_bound = bound.filter(|_| lookup.is_none()).filter(|b| {
                    if retracting_ok && v2 {
                        (0..2).all(|side| b.expired_rows_stay_gone(side, append_only[side]))
                    } else {
                        append_only[0] && append_only[1]
                    }
                });
                if let Some(side) = lookup {
                    if !self.is_append_only(if side == 0 { &left } else { &right }) {
                        return Err(Error::not_supported(
                            "a lookup join probed by a table or a view that retracts rows: \
                             the rows probing FOR SYSTEM_TIME AS OF PROCTIME() must come from a stream",
                        ));
                    }
                }
                let mut lkeys = vec![];
                let mut rkeys = vec![];
                for (l, r) in &j.on {
                    lkeys.push(self.physical(l, j.left.schema())?);
                    rkeys.push(self.physical(r, j.right.schema())?);
                }
                let filter = match &j.filter {
                    Some(f) => {
                        reject_subqueries(f)?;
                        let both = j.left.schema().join(j.right.schema())?;
                        Some(self.physical(f, &both)?)
                    }
                    None => None,
                };
                let display = format!(
                    "{} on [{}]{}",
                    j.join_type,
                    j.on.iter()
                        .map(|(l, r)| format!("{l} = {r}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    j.filter
                        .as_ref()
                        .map(|f| format!(" filter {f}"))
                        .unwrap_or_default()
                );
                let op = HashJoinOperator::new(
                    kind,
                    out_schema.clone(),
                    lschema,
                    rschema,
                    lkeys,
                    rkeys,
                    filter,
                    j.null_equality == NullEquality::NullEqualsNull,
                    display,
                    self.errors.clone(),
                )?
                .with_lookup(lookup)
                .with_time_bound(time_bound)
                .with_semi_held_back(!v2);
                Ok((self.push(Box::new(op), vec![left, right]), out_schema))
            }
            LogicalPlan::Union(u) => {
                let mut inputs = vec![];
                for i in &u.inputs {
                    inputs.push(self.lower(i)?.0);
                }
                let op = UnionOperator::new(out_schema.clone(), inputs.len());
                Ok((self.push(Box::new(op), inputs), out_schema))
            }
            LogicalPlan::Sort(s) => match s.fetch {
                Some(n) => self.top_n(&s.input, &s.expr, n, 0, out_schema),
                // A view is a set of rows: ORDER BY without LIMIT orders nothing.
                None => self.lower(&s.input),
            },
            LogicalPlan::Limit(l) => {
                let skip = match l.get_skip_type()? {
                    SkipType::Literal(n) => n,
                    SkipType::UnsupportedExpr => {
                        return Err(Error::not_supported("a non-constant OFFSET"))
                    }
                };
                let fetch = match l.get_fetch_type()? {
                    FetchType::Literal(Some(n)) => n,
                    FetchType::Literal(None) => usize::MAX,
                    FetchType::UnsupportedExpr => {
                        return Err(Error::not_supported("a non-constant LIMIT"))
                    }
                };
                match l.input.as_ref() {
                    LogicalPlan::Sort(s) => self.top_n(&s.input, &s.expr, fetch, skip, out_schema),
                    other => self.top_n(other, &[], fetch, skip, out_schema),
                }
            }
            LogicalPlan::SubqueryAlias(s) => {
                let (input, _) = self.lower(&s.input)?;
                Ok((input, out_schema))
            }
            LogicalPlan::Values(v) => {
                let empty = DFSchema::empty();
                let one = RecordBatch::try_new_with_options(
                    Arc::new(Schema::empty()),
                    vec![],
                    &RecordBatchOptions::new().with_row_count(Some(1)),
                )?;
                let mut rows = vec![];
                for row in &v.values {
                    let mut cols = vec![];
                    for (c, e) in row.iter().enumerate() {
                        let a = self.physical(e, &empty)?.evaluate(&one)?.into_array(1)?;
                        let want = out_schema.field(c).data_type();
                        cols.push(if a.data_type() != want {
                            datafusion::arrow::compute::cast(&a, want)?
                        } else {
                            a
                        });
                    }
                    rows.push(RecordBatch::try_new(out_schema.clone(), cols)?);
                }
                let op = ValuesOperator::new(out_schema.clone(), rows);
                Ok((self.push(Box::new(op), vec![]), out_schema))
            }
            LogicalPlan::EmptyRelation(e) => {
                let rows = if e.produce_one_row {
                    vec![RecordBatch::try_new_with_options(
                        out_schema.clone(),
                        vec![],
                        &RecordBatchOptions::new().with_row_count(Some(1)),
                    )?]
                } else {
                    vec![]
                };
                let op = ValuesOperator::new(out_schema.clone(), rows);
                Ok((self.push(Box::new(op), vec![]), out_schema))
            }
            LogicalPlan::Window(_) => Err(Error::not_supported(
                "window functions (OVER ...) in a materialized view",
            )),
            LogicalPlan::Subquery(_) => {
                Err(Error::not_supported("this subquery in a materialized view"))
            }
            LogicalPlan::Unnest(_) => Err(Error::not_supported("UNNEST in a materialized view")),
            LogicalPlan::RecursiveQuery(_) => Err(Error::not_supported(
                "WITH RECURSIVE in a materialized view",
            )),
            other => Err(Error::not_supported(format!(
                "{} in a materialized view",
                other.display()
            ))),
        }
    }

    fn top_n(
        &mut self,
        input_plan: &LogicalPlan,
        sort: &[SortExpr],
        limit: usize,
        offset: usize,
        out_schema: SchemaRef,
    ) -> Result<(NodeInput, SchemaRef)> {
        let (input, in_schema) = self.lower(input_plan)?;
        let df = input_plan.schema();
        let mut keys = vec![];
        for s in sort {
            keys.push((
                self.physical(&s.expr, df)?,
                SortOrder::new(!s.asc, s.nulls_first),
            ));
        }
        let display = format!(
            "order=[{}] limit {}{}",
            sort.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if limit == usize::MAX {
                "all".to_string()
            } else {
                limit.to_string()
            },
            if offset > 0 {
                format!(" offset {offset}")
            } else {
                String::new()
            }
        );
        let op = TopNOperator::new(
            in_schema,
            keys,
            vec![],
            limit,
            offset,
            display,
            self.errors.clone(),
        )?;
        Ok((self.push(Box::new(op), vec![input]), out_schema))
    }

    fn agg_spec(
        &self,
        e: &Expr,
        input: &DFSchema,
        output_type: datafusion::arrow::datatypes::DataType,
    ) -> Result<AggSpec> {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            other => other,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
            return Err(Error::internal(format!(
                "aggregate expression {e} is not an aggregate function"
            )));
        };
        let name = func.name().to_lowercase();
        let mut kind = AggKind::from_name(&name).ok_or_else(|| {
            Error::not_supported(format!(
                "aggregate function {name}() in a materialized view"
            ))
        })?;
        let args = &params.args;
        // count(*) is planned as count(1): no argument to look at.
        if kind == AggKind::Count
            && !params.distinct
            && args.len() == 1
            && matches!(&args[0], Expr::Literal(v, _) if !v.is_null())
        {
            kind = AggKind::CountStar;
        }
        if !params.order_by.is_empty() {
            let by_arg = kind == AggKind::StringAgg
                && params.order_by.len() == 1
                && params.order_by[0].asc
                && args.first() == Some(&params.order_by[0].expr);
            if !by_arg
                && !matches!(
                    kind,
                    AggKind::Min
                        | AggKind::Max
                        | AggKind::Sum
                        | AggKind::Count
                        | AggKind::CountStar
                )
            {
                return Err(Error::not_supported(format!(
                    "ORDER BY inside {name}() other than by its own argument ascending"
                )));
            }
        }
        let phys_args = args
            .iter()
            .map(|a| self.physical(a, input))
            .collect::<Result<Vec<_>>>()?;
        let input_type = match args.first() {
            Some(a) => a.to_field(input)?.1.data_type().clone(),
            None => datafusion::arrow::datatypes::DataType::Null,
        };
        let filter = match &params.filter {
            Some(f) => Some(self.physical(f, input)?),
            None => None,
        };
        AggSpec::new(
            kind,
            params.distinct,
            phys_args,
            filter,
            input_type,
            output_type,
            e.to_string(),
        )
    }
}

/// Operators emit nullable columns: a computed value may be NULL where the planner
/// proved it could not be (an expression that failed under the streaming error policy).
fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ))
}

fn reject_subqueries(e: &Expr) -> Result<()> {
    let mut found = None;
    e.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::SetComparison(_)
        ) {
            found = Some(e.to_string());
            return Ok(datafusion::common::tree_node::TreeNodeRecursion::Stop);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    match found {
        Some(s) => Err(Error::not_supported(format!(
            "the subquery {s} in a materialized view (it could not be turned into a join)"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::datatypes::DataType;

    use super::*;
    use crate::catalog::{Catalog, CatalogEntry, Column, ObjectKind};
    use crate::plan::context::{base_session_state, PlanContext};
    use crate::sql::Statement;
    use crate::storage::WriteBatch;

    /// The operators of `view` (a CREATE MATERIALIZED VIEW) over a table `t (k, v)`,
    /// lowered as plan version `version` did.
    fn operators(view: &str, version: u32) -> Vec<(&'static str, Vec<NodeInput>)> {
        let mut catalog = Catalog::default();
        let mut batch = WriteBatch::new();
        let id = catalog.allocate_id(&mut batch);
        let column = |name: &str| Column {
            name: name.into(),
            data_type: DataType::Int64,
            nullable: true,
            sql_type: None,
        };
        let table = CatalogEntry {
            id,
            name: "t".into(),
            kind: ObjectKind::Table,
            columns: vec![column("k"), column("v")],
            primary_key: vec![],
            sql: String::new(),
            depends_on: vec![],
            options: BTreeMap::new(),
            append_only: false,
            watermark: None,
            plan_version: 0,
        };
        catalog.insert(table, &mut batch).unwrap();
        let Statement::CreateView(v) = crate::sql::parse_one(view).unwrap() else {
            panic!("not a view: {view}");
        };
        let state = base_session_state();
        let plan = PlanContext::new(&state, &catalog, None)
            .plan_query(&v.query)
            .unwrap();
        let names: Vec<String> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let subgraph = Lowering::new(&state, EvalErrors::new())
            .with_plan_version(version)
            .lower_view(99, "v", &plan, &names)
            .unwrap();
        subgraph
            .nodes
            .iter()
            .map(|n| (n.op.name(), n.inputs.clone()))
            .collect()
    }

    /// q5's shape: the same grouped count on both sides of a join.
    const TWICE: &str = "CREATE MATERIALIZED VIEW v AS \
        SELECT a.k, a.n FROM (SELECT k, count(*) AS n FROM t GROUP BY k) AS a \
        JOIN (SELECT max(b.n) AS top FROM (SELECT k, count(*) AS n FROM t GROUP BY k) AS b) AS m \
        ON a.n = m.top";

    fn count(ops: &[(&str, Vec<NodeInput>)], name: &str) -> usize {
        ops.iter().filter(|(n, _)| *n == name).count()
    }

    #[test]
    fn an_identical_subquery_is_lowered_once_and_read_twice() {
        let ops = operators(TWICE, 1);
        // One count per key (and one max), not two counts.
        assert_eq!(count(&ops, "HashAggOperator"), 2, "{ops:?}");
        let agg = ops
            .iter()
            .position(|(n, _)| *n == "HashAggOperator")
            .unwrap();
        let readers = ops
            .iter()
            .filter(|(_, ins)| ins.contains(&NodeInput::Local(agg)))
            .count();
        assert!(readers >= 2, "the shared count feeds both sides: {ops:?}");
    }

    #[test]
    fn views_of_plan_version_0_keep_one_operator_set_per_occurrence() {
        // Their state was stored per operator position: a restart must lower them as
        // they were lowered when created.
        let ops = operators(TWICE, 0);
        assert_eq!(count(&ops, "HashAggOperator"), 3, "{ops:?}");
        assert!(operators(TWICE, 1).len() < ops.len());
    }
}
