//! eddy: a streaming SQL database. Continuous SQL over tables and streams, kept up to
//! date incrementally, served over the PostgreSQL wire protocol.
//!
//! A tour in the order data flows (see `docs/architecture.md` for the long version):
//!
//! - [`server`] speaks the Postgres protocol (pgwire): one [`engine::Session`] per
//!   connection, simple and extended queries, errors with SQLSTATEs.
//! - [`sql`] turns text into eddy's statements: sqlparser's PostgreSQL dialect plus
//!   eddy's own DDL (`CREATE STREAM`, `SHOW STREAMS`, `FLUSH`, ...).
//! - [`engine`] executes statements: DDL changes the [`catalog`] and the dataflow,
//!   DML computes changes against the latest snapshot, queries run on DataFusion.
//! - [`plan`] is the bridge to DataFusion: name resolution against the catalog, and
//!   lowering of optimized logical plans into incremental operators.
//! - [`dataflow`] is the incremental engine: operators over change batches (rows with
//!   +/− multiplicities), run epoch by epoch on one thread, publishing consistent
//!   snapshots of every relation after each epoch.
//! - [`storage`] persists everything (catalog, rows, operator state, the input log)
//!   through a small key-value trait, with redb underneath by default (sled optional):
//!   each epoch logs its inputs durably; checkpoints write the state that changed.
//!
//! Errors are one enum, [`error::Error`], split by who is at fault; the server maps it
//! to SQLSTATEs in one place.

pub mod catalog;
pub mod connector;
pub mod dataflow;
pub mod engine;
pub mod error;
pub mod format;
pub mod plan;
pub mod server;
pub mod sql;
pub mod storage;

/// eddy allocates many small, short-lived objects (rows, keys, batch buffers) on one
/// thread while others free snapshots; glibc's allocator fragments badly under that
/// load (slow `malloc`, RSS that never shrinks). mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The version eddy reports to clients as `server_version`. Clients parse the leading
/// number as the Postgres version whose protocol and catalog behaviour they expect.
pub const SERVER_VERSION: &str = "15.0 (eddy 0.1.0)";

/// What `SELECT version()` returns: tools look for "PostgreSQL <version>" in it.
pub const PG_VERSION_STRING: &str = "PostgreSQL 15.0 (eddy 0.1.0, a streaming SQL database)";
