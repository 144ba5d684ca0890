//! eddy's bridge to DataFusion's SQL planner: a [`ContextProvider`] that resolves table
//! names against eddy's catalog, and a [`RelationTable`] that lets DataFusion scan a
//! relation's snapshot.
//!
//! DataFusion plans everything (ad-hoc SELECTs, DML sources, view definitions); only
//! names come from here. Every relation resolved while planning one statement is read
//! from the same [`DatabaseSnapshot`], so a query over several relations sees one epoch.

use std::cell::RefCell;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::ScalarValue;
use datafusion::common::{DataFusionError, TableReference};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::logical_expr::{
    AggregateUDF, Expr, LogicalPlan, ScalarUDF, TableProviderFilterPushDown, TableSource,
    TableType, WindowUDF,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion::sql::planner::{ContextProvider, ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::ast;

use crate::catalog::{Catalog, CatalogEntry, ObjectKind};
use crate::dataflow::snapshot::{DatabaseSnapshot, RelationSnapshot, SnapshotData};
use crate::dataflow::stream::StoredRows;
use crate::error::{Error, Result};

/// The DataFusion session every plan starts from: eddy's configuration and DataFusion's
/// built-in functions. Cheap to share.
pub fn base_session_state() -> SessionState {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema("eddy", "public")
        .with_information_schema(false)
        .with_target_partitions(2)
        .with_create_default_catalog_and_schema(true);
    let opts = config.options_mut();
    opts.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    opts.sql_parser.enable_ident_normalization = true;
    // Postgres orders NULLs as larger than every value.
    opts.sql_parser.default_null_ordering = "nulls_max".into();
    opts.execution.time_zone = Some("+00:00".into());
    // `1.5` is an exact numeric, as in Postgres, not a float.
    opts.sql_parser.parse_float_as_decimal = true;
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_analyzer_rule(Arc::new(super::rewrite::PostgresSemantics::new()))
        .build();
    for f in super::functions::all(crate::PG_VERSION_STRING) {
        // Registering over an existing name (none today) would replace it.
        let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(f));
    }
    state
}

/// Resolves names for one statement.
pub struct PlanContext<'a> {
    state: &'a SessionState,
    catalog: &'a Catalog,
    /// Where scans read from; `None` when planning a view (only schemas matter).
    snapshot: Option<&'a DatabaseSnapshot>,
    /// Catalog objects the statement reads.
    used: RefCell<Vec<u32>>,
    /// Types the client declared for `$1, $2, ...` (None: infer).
    param_types: Vec<Option<DataType>>,
}

impl<'a> PlanContext<'a> {
    pub fn new(
        state: &'a SessionState,
        catalog: &'a Catalog,
        snapshot: Option<&'a DatabaseSnapshot>,
    ) -> Self {
        Self {
            state,
            catalog,
            snapshot,
            used: RefCell::new(vec![]),
            param_types: vec![],
        }
    }

    /// Plan `$n` placeholders with these types where given.
    pub fn with_param_types(mut self, types: &[Option<DataType>]) -> Self {
        self.param_types = types.to_vec();
        self
    }

    /// Objects resolved so far, without duplicates.
    pub fn used_objects(&self) -> Vec<u32> {
        let mut v = self.used.borrow().clone();
        v.sort();
        v.dedup();
        v
    }

    /// Plan a sqlparser statement into a (not yet optimized) logical plan.
    pub fn plan_statement(&self, statement: &ast::Statement) -> Result<LogicalPlan> {
        reject_multiset_operations(statement)?;
        // One copy of the statement (an INSERT's VALUES can be large), rewritten in place.
        let mut statement = statement.clone();
        super::windows::expand_window_functions(&mut statement)?;
        normalize_interval_literals(&mut statement)?;
        let sql_to_rel =
            SqlToRel::new_with_options(self, parser_options(self.state.config_options()));
        if self.param_types.iter().all(Option::is_none) {
            return Ok(sql_to_rel.sql_statement_to_plan(statement)?);
        }
        let fields = self
            .param_types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_ref().map(|t| {
                    Arc::new(datafusion::arrow::datatypes::Field::new(
                        format!("${}", i + 1),
                        t.clone(),
                        true,
                    ))
                })
            })
            .collect();
        let mut ctx =
            datafusion::sql::planner::PlannerContext::new().with_prepare_param_data_types(fields);
        Ok(sql_to_rel.sql_statement_to_plan_with_context(statement, &mut ctx)?)
    }

    /// Plan a view's query and run DataFusion's analyzer and optimizer over it.
    ///
    /// Functions whose value changes between calls (`now()`, `random()`) are rejected
    /// first: the optimizer would freeze them at creation time and the view would
    /// silently stop meaning what it says.
    pub fn plan_query(&self, query: &ast::Query) -> Result<LogicalPlan> {
        reject_view_constructs(query)?;
        let plan = self.plan_statement(&ast::Statement::Query(Box::new(query.clone())))?;
        reject_unstable_functions(&plan)?;
        Ok(self.state.optimize(&plan)?)
    }

    fn table_for(&self, entry: &CatalogEntry) -> Arc<RelationTable> {
        let snapshot = self.snapshot.map(|s| {
            s.get(entry.id)
                .cloned()
                .unwrap_or_else(|| Arc::new(RelationSnapshot::empty(entry.schema())))
        });
        Arc::new(RelationTable {
            object_id: entry.id,
            kind: entry.kind,
            schema: entry.schema(),
            primary_key: entry.primary_key.clone(),
            snapshot,
            lookup: false,
            event_time: entry.watermark.as_ref().map(|w| w.column.clone()),
        })
    }
}

/// DataFusion parses `INTERVAL '...'` literals itself and does not read Postgres' own
/// format (`'1 day 02:00:00'`). Parse them with eddy's reader and hand DataFusion an
/// equivalent it understands.
fn normalize_interval_literals(statement: &mut ast::Statement) -> Result<()> {
    use std::ops::ControlFlow;
    let mut failure: Option<Error> = None;
    let fmt = |p: datafusion::arrow::datatypes::IntervalMonthDayNano| {
        format!(
            "{} months {} days {} microseconds",
            p.months,
            p.days,
            p.nanoseconds / 1000
        )
    };
    // Post-order: an interval is normalized before a minus sign in front of it.
    let _ = ast::visit_expressions_mut(statement, |e| {
        match e {
            ast::Expr::Interval(iv) => {
                let plain = iv.leading_field.is_none()
                    && iv.last_field.is_none()
                    && iv.fractional_seconds_precision.is_none();
                if let (true, ast::Expr::Value(v)) = (plain, iv.value.as_mut()) {
                    if let ast::Value::SingleQuotedString(s) = &mut v.value {
                        match super::functions::parse_interval(s) {
                            Ok(p) => *s = fmt(p),
                            Err(m) => {
                                failure = Some(Error::data("22007", m));
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
            }
            // DataFusion negates an interval literal by prefixing its text with "-",
            // which would negate only the first unit: negate every unit here.
            ast::Expr::UnaryOp {
                op: ast::UnaryOperator::Minus,
                expr,
            } => {
                if let ast::Expr::Interval(iv) = expr.as_mut() {
                    if let ast::Expr::Value(v) = iv.value.as_mut() {
                        if let ast::Value::SingleQuotedString(s) = &v.value {
                            if let (Ok(p), None) =
                                (super::functions::parse_interval(s), &iv.leading_field)
                            {
                                let neg = datafusion::arrow::datatypes::IntervalMonthDayNano::new(
                                    -p.months,
                                    -p.days,
                                    -p.nanoseconds,
                                );
                                let mut iv = iv.clone();
                                if let ast::Expr::Value(v) = iv.value.as_mut() {
                                    v.value = ast::Value::SingleQuotedString(fmt(neg));
                                }
                                *e = ast::Expr::Interval(iv);
                            }
                        }
                    }
                }
            }
            // `1e15` is an exact numeric in Postgres; DataFusion turns exponent
            // notation into a decimal with a negative scale, which casts badly. Spell it out.
            ast::Expr::Value(v) => {
                if let ast::Value::Number(n, long) = &v.value {
                    match plain_decimal(n) {
                        Some(Some(plain)) => v.value = ast::Value::Number(plain, *long),
                        // Beyond 38 digits a decimal cannot hold it: a float can.
                        Some(None) => {
                            *e = ast::Expr::Cast {
                                kind: ast::CastKind::Cast,
                                expr: Box::new(ast::Expr::Value(
                                    ast::Value::SingleQuotedString(n.clone()).into(),
                                )),
                                data_type: ast::DataType::DoublePrecision,
                                array: false,
                                format: None,
                            };
                        }
                        None => {}
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `1.5e3` → `Some(Some("1500"))`, `2E-2` → `Some(Some("0.02"))`; `Some(None)` when
/// the exponent is too large to spell out; `None` for numbers without an exponent.
fn plain_decimal(n: &str) -> Option<Option<String>> {
    let (mantissa, exp) = n.split_once(['e', 'E'])?;
    let Ok(exp) = exp.parse::<i32>() else {
        return Some(None);
    };
    if exp.abs() > 30 {
        return Some(None);
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let point = int.len() as i32 + exp;
    let s = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    Some(Some(s))
}

/// DataFusion plans `INTERSECT ALL` and `EXCEPT ALL` as a plain semi and anti join,
/// which loses the multiplicities SQL gives them (`min(m, n)` and `max(m - n, 0)`
/// copies). A wrong answer is worse than none: refuse them, in any query.
fn reject_multiset_operations(statement: &ast::Statement) -> Result<()> {
    use std::ops::ControlFlow;
    struct Finder(Option<&'static str>);
    fn walk(body: &ast::SetExpr) -> Option<&'static str> {
        if let ast::SetExpr::SetOperation {
            left,
            op,
            set_quantifier,
            right,
        } = body
        {
            let all = matches!(
                set_quantifier,
                ast::SetQuantifier::All | ast::SetQuantifier::AllByName
            );
            match op {
                ast::SetOperator::Intersect if all => return Some("INTERSECT ALL"),
                ast::SetOperator::Except | ast::SetOperator::Minus if all => {
                    return Some("EXCEPT ALL")
                }
                _ => {}
            }
            return walk(left).or_else(|| walk(right));
        }
        None
    }
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
            match walk(&query.body) {
                Some(what) => {
                    self.0 = Some(what);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        }
    }
    let mut finder = Finder(None);
    let _ = ast::Visit::visit(statement, &mut finder);
    match finder.0 {
        Some(what) => Err(Error::not_supported(format!(
            "{what} (use {} without ALL, which removes duplicates)",
            what.trim_end_matches(" ALL")
        ))),
        None => Ok(()),
    }
}

/// Constructs a view cannot maintain, refused by the name the user wrote them with
/// (after planning they would surface as internal rewrites).
fn reject_view_constructs(query: &ast::Query) -> Result<()> {
    use std::ops::ControlFlow;
    struct Finder(Option<String>);
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
            fn walk(body: &ast::SetExpr) -> bool {
                match body {
                    ast::SetExpr::Select(s) => matches!(s.distinct, Some(ast::Distinct::On(_))),
                    ast::SetExpr::SetOperation { left, right, .. } => walk(left) || walk(right),
                    _ => false,
                }
            }
            if walk(&query.body) {
                self.0 = Some(
                    "DISTINCT ON in a materialized view (use GROUP BY, or ORDER BY ... LIMIT)"
                        .into(),
                );
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::Function(f) = expr {
                let name = f.name.to_string().to_ascii_lowercase();
                let name = name.rsplit('.').next().unwrap_or_default();
                if matches!(name, "generate_series" | "unnest" | "range") {
                    self.0 = Some(format!(
                        "set-returning function {name}() in a materialized view"
                    ));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder(None);
    let _ = ast::Visit::visit(query, &mut finder);
    match finder.0 {
        Some(what) => Err(Error::not_supported(what)),
        None => Ok(()),
    }
}

fn reject_unstable_functions(plan: &LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Volatility;
    let mut found: Option<String> = None;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        found = Some(f.func.name().to_string());
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    match found {
        Some(name) => Err(Error::not_supported(format!(
            "{name}() in a materialized view: its value changes over time, so the view could not be kept up to date"
        ))),
        None => Ok(()),
    }
}

fn parser_options(opts: &ConfigOptions) -> ParserOptions {
    let p = &opts.sql_parser;
    ParserOptions {
        parse_float_as_decimal: p.parse_float_as_decimal,
        enable_ident_normalization: p.enable_ident_normalization,
        enable_options_value_normalization: p.enable_options_value_normalization,
        support_varchar_with_length: p.support_varchar_with_length,
        map_string_types_to_utf8view: false,
        collect_spans: p.collect_spans,
        default_null_ordering: p.default_null_ordering.as_str().into(),
    }
}

impl ContextProvider for PlanContext<'_> {
    fn get_table_source(
        &self,
        name: TableReference,
    ) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let schema_ok = name.schema().is_none_or(|s| s == "public");
        let catalog_ok = name.catalog().is_none_or(|c| c == "eddy");
        let (table, lookup) = match name.table().strip_prefix(crate::sql::LOOKUP_PREFIX) {
            Some(t) => (t, true),
            None => (name.table(), false),
        };
        let entry = self
            .catalog
            .get(table)
            .filter(|e| e.kind.is_relation() && schema_ok && catalog_ok);
        match entry {
            Some(e) => {
                self.used.borrow_mut().push(e.id);
                let mut t = self.table_for(e);
                if lookup {
                    if let Some(t) = Arc::get_mut(&mut t) {
                        t.lookup = true;
                    }
                }
                Ok(provider_as_source(t))
            }
            None => Err(DataFusionError::External(Box::new(
                Error::UndefinedRelation {
                    name: table.to_string(),
                    position: None,
                },
            ))),
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_higher_order_meta(
        &self,
        name: &str,
    ) -> Option<Arc<datafusion::logical_expr::HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }

    fn get_table_function_source(
        &self,
        name: &str,
        args: Vec<Expr>,
    ) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let f = self
            .state
            .table_functions()
            .get(name)
            .cloned()
            .ok_or_else(|| DataFusionError::Plan(format!("table function '{name}' not found")))?;
        let provider = f.create_table_provider_with_args(
            datafusion::catalog::TableFunctionArgs::new(&args, self.state),
        )?;
        Ok(provider_as_source(provider))
    }
}

/// A relation as DataFusion sees it: a schema and, for queries, a snapshot to scan.
#[derive(Debug)]
pub struct RelationTable {
    pub object_id: u32,
    pub kind: ObjectKind,
    schema: SchemaRef,
    /// Primary-key columns: equality filters on all of them become point lookups.
    primary_key: Vec<usize>,
    snapshot: Option<Arc<RelationSnapshot>>,
    /// Read by a lookup join (`FOR SYSTEM_TIME AS OF PROCTIME()`).
    pub lookup: bool,
    /// The event-time column (`WATERMARK FOR`), if any.
    pub event_time: Option<String>,
}

impl std::fmt::Debug for RelationSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RelationSnapshot({} rows)", self.num_rows())
    }
}

impl RelationTable {
    pub fn snapshot(&self) -> Option<&Arc<RelationSnapshot>> {
        self.snapshot.as_ref()
    }

    fn key_names(&self) -> Vec<&str> {
        self.primary_key
            .iter()
            .map(|c| self.schema.field(*c).name().as_str())
            .collect()
    }

    /// If `filters` pin every primary-key column to constants (`k = 1`, `k IN (1, 2)`),
    /// the keys they select.
    fn pinned_keys(&self, filters: &[Expr]) -> Option<Vec<Vec<ScalarValue>>> {
        if self.primary_key.is_empty() {
            return None;
        }
        let mut conjuncts = vec![];
        for f in filters {
            split_conjunction(f, &mut conjuncts);
        }
        // For each key column, the values it may take.
        let mut choices: Vec<Vec<ScalarValue>> = vec![];
        for &col in &self.primary_key {
            let field = self.schema.field(col);
            let vals = conjuncts
                .iter()
                .find_map(|c| pinned_values(c, field.name()))?;
            let cast: Vec<ScalarValue> = vals
                .into_iter()
                .map(|v| v.cast_to(field.data_type()).ok())
                .collect::<Option<_>>()?;
            choices.push(cast);
        }
        // All combinations (IN lists of constants keep this small).
        let mut keys: Vec<Vec<ScalarValue>> = vec![vec![]];
        for vals in choices {
            let mut next = Vec::with_capacity(keys.len() * vals.len());
            for k in &keys {
                for v in &vals {
                    let mut k2 = k.clone();
                    k2.push(v.clone());
                    next.push(k2);
                }
            }
            if next.len() > 10_000 {
                return None;
            }
            keys = next;
        }
        Some(keys)
    }
}

fn split_conjunction<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::And => {
            split_conjunction(&b.left, out);
            split_conjunction(&b.right, out);
        }
        other => out.push(other),
    }
}

/// The constants `e` pins column `name` to: `name = c`, `c = name`, `name IN (c, ...)`.
fn pinned_values(e: &Expr, name: &str) -> Option<Vec<ScalarValue>> {
    let is_col = |e: &Expr| matches!(e, Expr::Column(c) if c.name == name);
    let lit = |e: &Expr| match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
        _ => None,
    };
    match e {
        Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Eq => {
            if is_col(&b.left) {
                lit(&b.right).map(|v| vec![v])
            } else if is_col(&b.right) {
                lit(&b.left).map(|v| vec![v])
            } else {
                None
            }
        }
        Expr::InList(l) if !l.negated && is_col(&l.expr) => l.list.iter().map(lit).collect(),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for RelationTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        match self.kind {
            ObjectKind::MaterializedView => TableType::View,
            _ => TableType::Base,
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Only reads of a keyed snapshot use filters: views are planned without a
        // snapshot, and their operators apply every filter themselves. Inexact keeps
        // DataFusion's own filter above the scan.
        let usable = self.snapshot.is_some() && !self.primary_key.is_empty();
        let names = self.key_names();
        Ok(filters
            .iter()
            .map(|f| {
                let mut conj = vec![];
                split_conjunction(f, &mut conj);
                if usable
                    && conj
                        .iter()
                        .any(|c| names.iter().any(|n| pinned_values(c, n).is_some()))
                {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.snapshot.as_ref().ok_or_else(|| {
            DataFusionError::Internal("relation scanned without a snapshot".into())
        })?;
        if let Some(keys) = self.pinned_keys(filters) {
            // Point lookups: O(log n) per key instead of decoding the whole relation.
            let batch = snapshot
                .lookup(&keys)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let exec = MemorySourceConfig::try_new_exec(
                &[vec![batch]],
                self.schema.clone(),
                projection.cloned(),
            )?;
            return Ok(exec);
        }

        if let SnapshotData::Stored(rows) = snapshot.data() {
            // A stream's rows are on disk: scan them a chunk at a time.
            snapshot
                .ensure_fresh()
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            // The projection goes down to the chunks: a generator-fed stream then
            // generates only the columns asked for.
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            let part = Arc::new(StoredScan {
                schema: schema.clone(),
                rows: rows.clone(),
                projection: projection.cloned(),
            });
            return Ok(Arc::new(StreamingTableExec::try_new(
                schema,
                vec![part],
                None,
                vec![],
                false,
                None,
            )?));
        }
        let batches = snapshot
            .batches()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let exec = MemorySourceConfig::try_new_exec(
            &[batches.as_ref().clone()],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// A scan of a stream's stored rows, decoded chunk by chunk as DataFusion pulls them:
/// columns `projection` (all without one), whose schema is `schema`.
struct StoredScan {
    schema: SchemaRef,
    rows: StoredRows,
    projection: Option<Vec<usize>>,
}

impl std::fmt::Debug for StoredScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredScan({} rows)", self.rows.num_rows())
    }
}

impl PartitionStream for StoredScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        let batches = self
            .rows
            .clone()
            .into_projected(self.projection.clone())
            .map(move |b| {
                let b = b.map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(datafusion::arrow::array::RecordBatch::try_new_with_options(
                    schema.clone(),
                    b.columns().to_vec(),
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(b.num_rows())),
                )?)
            });
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}
