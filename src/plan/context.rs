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
use datafusion::common::{DataFusionError, TableReference};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::logical_expr::{
    AggregateUDF, Expr, LogicalPlan, ScalarUDF, TableSource, TableType, WindowUDF,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion::sql::planner::{ContextProvider, ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::ast;

use crate::catalog::{Catalog, CatalogEntry, ObjectKind};
use crate::dataflow::snapshot::{DatabaseSnapshot, RelationSnapshot};
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
    SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build()
}

/// Resolves names for one statement.
pub struct PlanContext<'a> {
    state: &'a SessionState,
    catalog: &'a Catalog,
    /// Where scans read from; `None` when planning a view (only schemas matter).
    snapshot: Option<&'a DatabaseSnapshot>,
    /// Catalog objects the statement reads.
    used: RefCell<Vec<u32>>,
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
        }
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
        let sql_to_rel =
            SqlToRel::new_with_options(self, parser_options(self.state.config_options()));
        Ok(sql_to_rel.sql_statement_to_plan(statement.clone())?)
    }

    /// Plan a view's query and run DataFusion's analyzer and optimizer over it.
    ///
    /// Functions whose value changes between calls (`now()`, `random()`) are rejected
    /// first: the optimizer would freeze them at creation time and the view would
    /// silently stop meaning what it says.
    pub fn plan_query(&self, query: &ast::Query) -> Result<LogicalPlan> {
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
            snapshot,
        })
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
        let entry = self
            .catalog
            .get(name.table())
            .filter(|e| e.kind.is_relation() && schema_ok && catalog_ok);
        match entry {
            Some(e) => {
                self.used.borrow_mut().push(e.id);
                Ok(provider_as_source(self.table_for(e)))
            }
            None => Err(DataFusionError::External(Box::new(
                Error::UndefinedRelation {
                    name: name.table().to_string(),
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
    snapshot: Option<Arc<RelationSnapshot>>,
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

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.snapshot.as_ref().ok_or_else(|| {
            DataFusionError::Internal("relation scanned without a snapshot".into())
        })?;
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
