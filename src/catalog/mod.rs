//! The catalog: every table, stream, materialized view and sink, with its columns and
//! its definition. Entries are persisted (JSON, one key per object) in the same storage
//! as the data, and written in the same atomic commit as the object's dataflow, so the
//! catalog and the state never disagree after a crash.

pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{keys, Storage, WriteBatch};
pub use types::SqlType;

/// What kind of object a catalog entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    Table,
    Stream,
    MaterializedView,
    Sink,
}

impl ObjectKind {
    /// The noun used in messages: "table", "stream", "materialized view", "sink".
    pub fn noun(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::Stream => "stream",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Sink => "sink",
        }
    }

    /// Can users SELECT from it?
    pub fn is_relation(self) -> bool {
        !matches!(self, ObjectKind::Sink)
    }
}

/// One column of a relation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(with = "datatype_serde")]
    pub data_type: DataType,
    pub nullable: bool,
    /// The declared type, for tables and streams (views have none).
    #[serde(default)]
    pub sql_type: Option<SqlType>,
}

impl Column {
    pub fn type_name(&self) -> String {
        match &self.sql_type {
            Some(t) => t.display_name(),
            None => types::arrow_display_name(&self.data_type),
        }
    }
}

mod datatype_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DataType, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<DataType, D::Error> {
        let s = String::deserialize(d)?;
        DataType::from_str(&s).map_err(serde::de::Error::custom)
    }
}

/// A catalog object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: u32,
    pub name: String,
    pub kind: ObjectKind,
    pub columns: Vec<Column>,
    /// Primary-key column indices (tables only; empty = none).
    #[serde(default)]
    pub primary_key: Vec<usize>,
    /// The statement that created the object, as the user wrote it. Views are re-planned
    /// from it at startup.
    pub sql: String,
    /// Objects this one reads from.
    #[serde(default)]
    pub depends_on: Vec<u32>,
    /// WITH (...) options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Its changes are only ever insertions (streams, and views that only filter or
    /// project them): operators reading it can keep smaller state.
    #[serde(default)]
    pub append_only: bool,
    /// `WATERMARK FOR` (tables and streams with an event-time column).
    #[serde(default)]
    pub watermark: Option<crate::dataflow::watermark::WatermarkDef>,
    /// How a view's plan is lowered into operators ([`PLAN_VERSION`]). Operator state
    /// is stored by the operator's position in its view, so a restart must lower a view
    /// exactly as it was lowered when created: entries written before versions existed
    /// read as 0.
    #[serde(default)]
    pub plan_version: u32,
}

/// The lowering new views get. 0: every occurrence of a subquery gets its own
/// operators. 1: identical subqueries of one view share one set of operators (q5's two
/// copies of the same windowed count are computed once). 2: joins find their time
/// bounds through `plan::event_time` (window starts, each side by its own condition,
/// inputs that retract), and a time-bounded semi join emits a match at once instead of
/// when the row expires; earlier views keep their interval joins as they were, since
/// rows they held back are still to come out.
pub const PLAN_VERSION: u32 = 2;

impl CatalogEntry {
    /// The Arrow schema of the relation's rows. Every field is nullable at the Arrow
    /// level: NOT NULL is enforced by eddy before a write (with SQLSTATE 23502), and
    /// DataFusion must not reject plans (`SELECT NULL` into a key column, an outer
    /// join) before eddy can give that error.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Fed by (tables, streams) or writing to (sinks) a Kafka topic.
    pub fn is_kafka(&self) -> bool {
        self.options.contains_key("kafka_topic")
    }

    /// A stream fed by the built-in Nexmark generator.
    pub fn is_nexmark(&self) -> bool {
        self.options
            .get("connector")
            .is_some_and(|c| c.eq_ignore_ascii_case("nexmark"))
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// How the runtime tracks this relation's watermark: by itself for tables and
    /// streams written with INSERT, from the source thread otherwise.
    pub fn watermark_install(&self) -> Option<crate::dataflow::watermark::WatermarkInstall> {
        let def = self.watermark.clone()?;
        let column = self.column_index(&def.column)?;
        Some(crate::dataflow::watermark::WatermarkInstall {
            def,
            column,
            embedded: !self.is_kafka() && !self.is_nexmark(),
        })
    }

    /// A stream's `retention` (microseconds of event time below the watermark).
    pub fn retention_us(&self) -> Option<i64> {
        let r = self.options.get("retention")?;
        crate::dataflow::watermark::parse_duration(r)
            .ok()
            .flatten()
            .map(|d| d.as_micros() as i64)
    }
}

const NEXT_ID_KEY: &str = "next_object_id";

/// The in-memory catalog, loaded at startup and kept in step with storage.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    by_name: BTreeMap<String, u32>,
    entries: BTreeMap<u32, CatalogEntry>,
    next_id: u32,
}

impl Catalog {
    /// Load every persisted entry.
    pub fn load(storage: &dyn Storage) -> Result<Self> {
        let mut cat = Catalog {
            next_id: 1,
            ..Default::default()
        };
        if let Some(v) = storage.get(&keys::meta_key(NEXT_ID_KEY))? {
            cat.next_id = u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::Storage("corrupt object id counter".into()))?,
            );
        }
        for (_, v) in storage.scan_prefix(keys::CATALOG_PREFIX)? {
            let entry: CatalogEntry = serde_json::from_slice(&v)
                .map_err(|e| Error::Storage(format!("corrupt catalog entry: {e}")))?;
            cat.by_name.insert(entry.name.clone(), entry.id);
            cat.next_id = cat.next_id.max(entry.id + 1);
            cat.entries.insert(entry.id, entry);
        }
        Ok(cat)
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.by_name.get(name).and_then(|id| self.entries.get(id))
    }

    pub fn get_by_id(&self, id: u32) -> Option<&CatalogEntry> {
        self.entries.get(&id)
    }

    /// All entries in creation order (which is also dependency order).
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// Ids of relations whose changes are only insertions.
    pub fn append_only_ids(&self) -> std::collections::HashSet<u32> {
        self.entries
            .values()
            .filter(|e| e.append_only || e.kind == ObjectKind::Stream)
            .map(|e| e.id)
            .collect()
    }

    pub fn names_by_id(&self) -> HashMap<u32, String> {
        self.entries
            .values()
            .map(|e| (e.id, e.name.clone()))
            .collect()
    }

    /// Reserve an id for a new object; the returned batch persists the counter.
    pub fn allocate_id(&mut self, batch: &mut WriteBatch) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        batch.put(
            keys::meta_key(NEXT_ID_KEY),
            self.next_id.to_be_bytes().to_vec(),
        );
        id
    }

    /// Add an entry; its persistence goes into `batch`.
    pub fn insert(&mut self, entry: CatalogEntry, batch: &mut WriteBatch) -> Result<()> {
        if self.by_name.contains_key(&entry.name) {
            return Err(Error::DuplicateRelation(entry.name));
        }
        let json = serde_json::to_vec(&entry).map_err(|e| Error::internal(e.to_string()))?;
        batch.put(keys::catalog_key(entry.id), json);
        self.by_name.insert(entry.name.clone(), entry.id);
        self.entries.insert(entry.id, entry);
        Ok(())
    }

    /// Remove an entry; its deletion goes into `batch`.
    pub fn remove(&mut self, id: u32, batch: &mut WriteBatch) -> Option<CatalogEntry> {
        let entry = self.entries.remove(&id)?;
        self.by_name.remove(&entry.name);
        batch.delete(keys::catalog_key(id));
        Some(entry)
    }

    /// Objects that read from `id`, directly or through others, dependents first.
    pub fn dependents(&self, id: u32) -> Vec<u32> {
        let mut out = vec![];
        let mut frontier = vec![id];
        while let Some(cur) = frontier.pop() {
            for e in self.entries.values() {
                if e.depends_on.contains(&cur) && !out.contains(&e.id) {
                    out.push(e.id);
                    frontier.push(e.id);
                }
            }
        }
        // Later-created objects depend on earlier ones: drop newest first.
        out.sort_by(|a, b| b.cmp(a));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn entry(id: u32, name: &str, depends_on: Vec<u32>) -> CatalogEntry {
        CatalogEntry {
            id,
            name: name.into(),
            kind: ObjectKind::Table,
            columns: vec![Column {
                name: "ts".into(),
                data_type: SqlType::TimestampTz.to_arrow(),
                nullable: true,
                sql_type: Some(SqlType::TimestampTz),
            }],
            primary_key: vec![],
            sql: String::new(),
            depends_on,
            options: BTreeMap::new(),
            append_only: false,
            watermark: None,
            plan_version: 0,
        }
    }

    #[test]
    fn entries_written_before_plan_versions_read_as_version_0() {
        let mut json = serde_json::to_value(entry(7, "v", vec![])).unwrap();
        json.as_object_mut().unwrap().remove("plan_version");
        let old: CatalogEntry = serde_json::from_value(json).unwrap();
        assert_eq!(old.plan_version, 0);
    }

    #[test]
    fn catalog_roundtrips_through_storage_with_arrow_types() {
        let storage = MemoryStorage::new();
        let mut cat = Catalog::load(&storage).unwrap();
        let mut b = WriteBatch::new();
        let id = cat.allocate_id(&mut b);
        cat.insert(entry(id, "t", vec![]), &mut b).unwrap();
        storage.commit(b).unwrap();
        let again = Catalog::load(&storage).unwrap();
        assert_eq!(
            again.get("t").unwrap().columns,
            cat.get("t").unwrap().columns
        );
        let mut b = WriteBatch::new();
        assert_eq!(again.clone().allocate_id(&mut b), id + 1);
    }

    #[test]
    fn dependents_are_transitive_and_newest_first() {
        let mut cat = Catalog::default();
        let mut b = WriteBatch::new();
        cat.insert(entry(1, "t", vec![]), &mut b).unwrap();
        cat.insert(entry(2, "v1", vec![1]), &mut b).unwrap();
        cat.insert(entry(3, "v2", vec![2]), &mut b).unwrap();
        cat.insert(entry(4, "other", vec![]), &mut b).unwrap();
        assert_eq!(cat.dependents(1), vec![3, 2]);
        assert!(cat.insert(entry(5, "t", vec![]), &mut b).is_err());
    }
}
