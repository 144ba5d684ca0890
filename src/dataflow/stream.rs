//! [`StreamOperator`]: an append-only relation, kept on disk.
//!
//! Each epoch's rows are one *chunk*: one Arrow IPC value written at the end of that
//! epoch, in the epoch's own commit (key `d<epoch>`, with `m<epoch>` holding its row
//! count and newest event time). After that the rows live on disk only — memory holds
//! the epoch in progress and a small index of chunks — so a stream's memory does not
//! grow with its length. Readers (pull queries, backfills of new views, snapshots for
//! subscriptions) decode the chunks from storage.
//!
//! The chunk is also the epoch's input-log entry for the stream: the log records only
//! that the stream was written ([`super::input_log`]), so a stream's rows are written
//! once, not once to the log and again at the next checkpoint. On restart, `restore`
//! loads the index of the chunks up to the checkpoint; the replay of the log reads the
//! later ones back ([`StreamOperator::logged_rows`]) and sends them through the views
//! again.
//!
//! An operator with no storage attached (the query of a `SUBSCRIBE`, which is never
//! checkpointed) keeps its chunks in memory instead.
//!
//! Some sources can produce the same rows again from a position: the built-in Nexmark
//! generator's row `n` is the same on every run. Such a source tags each batch with the
//! position of its first row ([`tag_regenerable`]), and a stream given a
//! [`Regenerate`] function stores an epoch whose batches are all tagged as those
//! positions only — a few bytes in the chunk's index entry instead of the rows. Readers
//! and the log replay call the function to get the rows back. A watermark that drops
//! late rows of a tagged batch re-tags it with the positions it kept
//! ([`retag_filtered`]). An epoch with any other batch (an `INSERT`) stores its rows as
//! usual.
//!
//! Such a source may also leave out columns that no reader reads now ([`omit_columns`]):
//! the runtime tells the stream which columns its views and subscribers read
//! ([`Operator::set_columns_read`]) and publishes it for the source as a hint. The
//! stream fills a left-out column in from the source before a batch goes to a reader
//! that reads it, and before the rows are read back (a new view's backfill) or stored
//! as rows, so no reader ever sees the placeholders.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use super::snapshot::{RelationSnapshot, SnapshotData};
use super::{ChangeBatch, ColumnSet, Operator, Output, StateReader, StateWriter};
use crate::error::{Error, Result};
use crate::storage::{keys, Storage};

const DATA: u8 = b'd';
const META: u8 = b'm';

fn chunk_key(kind: u8, epoch: u64) -> [u8; 9] {
    let mut k = [kind; 9];
    k[1..].copy_from_slice(&epoch.to_be_bytes());
    k
}

/// Produces rows `from..from + n` of a regenerable source again: exactly the rows the
/// source tagged with `from` ([`tag_regenerable`]), with the stream's columns — or, given
/// `columns`, only those (by index, in that order), which lets the source skip the work
/// of the others.
pub type Regenerate =
    Arc<dyn Fn(u64, usize, Option<&[usize]>) -> Result<RecordBatch> + Send + Sync>;

/// Schema metadata key of a batch's first row's position in its source, and its row
/// count (`"<from>,<rows>"`).
const REGENERATE_FROM: &str = "eddy.regenerate_from";

/// Schema metadata key of the columns a source left out of a tagged batch (their
/// indexes, comma-separated): no reader read them when it was made. The stream fills
/// them in from the source when a reader needs them ([`StreamOperator`]).
const OMITTED: &str = "eddy.omitted";

/// Marks `batch` as the rows of its source from position `from` on, which the source
/// can produce again (see the module documentation).
pub fn tag_regenerable(batch: RecordBatch, from: u64) -> Result<RecordBatch> {
    let n = batch.num_rows() as u64;
    with_tag(batch, &[(from, n)])
}

/// `batch` with its tag set to the source positions `runs` ((first row, count), in
/// row order; no tag when empty), its other metadata kept.
fn with_tag(batch: RecordBatch, runs: &[(u64, u64)]) -> Result<RecordBatch> {
    edit_metadata(batch, |meta| {
        meta.remove(REGENERATE_FROM);
        if !runs.is_empty() {
            let tag = runs
                .iter()
                .map(|(from, n)| format!("{from},{n}"))
                .collect::<Vec<_>>()
                .join(";");
            meta.insert(REGENERATE_FROM.to_string(), tag);
        }
    })
}

/// `batch` with its schema's metadata changed by `edit`.
fn edit_metadata(
    batch: RecordBatch,
    edit: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> Result<RecordBatch> {
    let mut meta = batch.schema_ref().metadata().clone();
    edit(&mut meta);
    let schema = batch.schema().as_ref().clone().with_metadata(meta);
    with_schema(&Arc::new(schema), &batch)
}

/// Marks the columns `columns` of a tagged batch as left out: their values are
/// placeholders, and the stream fills them in from the source if a reader needs them.
pub fn omit_columns(batch: RecordBatch, columns: &[usize]) -> Result<RecordBatch> {
    if columns.is_empty() {
        return Ok(batch);
    }
    let list = columns
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    edit_metadata(batch, |meta| {
        meta.insert(OMITTED.to_string(), list);
    })
}

/// The source positions of a tagged batch's rows, as runs in row order, if the tag
/// accounts for every row.
fn regenerable_runs(batch: &RecordBatch) -> Option<Vec<(u64, u64)>> {
    let tag = batch.schema_ref().metadata().get(REGENERATE_FROM)?;
    let runs = tag
        .split(';')
        .map(|run| {
            let (from, n) = run.split_once(',')?;
            Some((from.parse().ok()?, n.parse().ok()?))
        })
        .collect::<Option<Vec<(u64, u64)>>>()?;
    (runs.iter().map(|(_, n)| *n).sum::<u64>() == batch.num_rows() as u64).then_some(runs)
}

/// The columns a source left out of `batch` ([`omit_columns`]).
fn omitted_columns(batch: &RecordBatch) -> Result<Vec<usize>> {
    let Some(list) = batch.schema_ref().metadata().get(OMITTED) else {
        return Ok(vec![]);
    };
    list.split(',')
        .map(|c| {
            c.parse()
                .map_err(|_| Error::internal(format!("bad omitted column list {list:?}")))
        })
        .collect()
}

/// `filtered`: the rows of `batch` where `keep` is true. A tagged batch stays tagged,
/// with the positions of the rows kept (a watermark dropping late rows of a generated
/// batch leaves it regenerable); an untagged one, or one whose tag no longer accounts
/// for its rows, comes back untagged.
pub fn retag_filtered(
    batch: &RecordBatch,
    keep: &[bool],
    filtered: RecordBatch,
) -> Result<RecordBatch> {
    let Some(runs) = regenerable_runs(batch) else {
        return with_tag(filtered, &[]);
    };
    let positions = runs.iter().flat_map(|(from, n)| *from..*from + *n);
    let mut kept: Vec<(u64, u64)> = vec![];
    for (pos, k) in positions.zip(keep) {
        if !*k {
            continue;
        }
        match kept.last_mut() {
            Some((from, n)) if *from + *n == pos => *n += 1,
            _ => kept.push((pos, 1)),
        }
    }
    with_tag(filtered, &kept)
}

/// One epoch's rows.
#[derive(Clone)]
pub struct Chunk {
    epoch: u64,
    rows: usize,
    /// The oldest and newest event times among the rows (µs), with a retention
    /// (`i64::MAX`/`i64::MIN` when none).
    min: i64,
    max: i64,
    /// Rows kept in memory: with no storage attached, or rows stored by an older
    /// version of eddy (under `legacy`, an 8-byte sequence number).
    resident: Option<Arc<Vec<RecordBatch>>>,
    legacy: Option<u64>,
    /// The rows are the source's rows at these (position, count) runs, in order; only
    /// the positions are stored.
    runs: Option<Arc<Vec<(u64, u64)>>>,
}

/// A stream's rows as of one epoch: what a reader needs to decode them.
#[derive(Clone)]
pub struct StoredRows {
    schema: SchemaRef,
    store: Option<(Arc<dyn Storage>, u64)>,
    chunks: imbl::Vector<Chunk>,
    /// With a retention: rows whose event time (column) is below the cutoff are gone.
    cutoff: Option<(usize, i64)>,
    regenerate: Option<Regenerate>,
}

impl StoredRows {
    pub fn num_rows(&self) -> usize {
        self.chunks.iter().map(|c| c.rows).sum()
    }

    /// Decode every chunk (see [`StoredRows::into_batches`]).
    pub fn read(&self) -> Result<Vec<RecordBatch>> {
        self.clone().into_batches().collect()
    }

    /// [`StoredRows::into_batches`], with every column.
    pub fn into_batches(self) -> impl Iterator<Item = Result<RecordBatch>> + Send + 'static {
        self.into_projected(None)
    }

    /// The rows, one chunk read and decoded at a time as the iterator advances (a scan
    /// of a long stream holds one chunk in memory, not the stream). A chunk deleted
    /// since this snapshot was taken (its rows expired under the retention, or the
    /// stream was dropped) is skipped. With `projection`, only those columns (by index).
    pub fn into_projected(
        self,
        projection: Option<Vec<usize>>,
    ) -> impl Iterator<Item = Result<RecordBatch>> + Send + 'static {
        let mut next = 0;
        let mut ready: std::vec::IntoIter<RecordBatch> = vec![].into_iter();
        std::iter::from_fn(move || loop {
            if let Some(b) = ready.next() {
                return Some(Ok(b));
            }
            let c = self.chunks.get(next)?.clone();
            next += 1;
            match self.chunk(&c, projection.as_deref()) {
                Ok(batches) => ready = batches.into_iter(),
                Err(e) => {
                    next = self.chunks.len();
                    return Some(Err(e));
                }
            }
        })
    }

    fn chunk(&self, c: &Chunk, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
        // Rows below the retention's cutoff are filtered on their time column, so such a
        // chunk is read whole and projected after; a chunk stored as source positions is
        // otherwise generated with the projected columns only.
        let cutoff = self.cutoff.filter(|(_, t)| c.min < *t);
        let pushed = projection.filter(|_| cutoff.is_none() && c.resident.is_none());
        if let (Some([]), Some(runs)) = (pushed, &c.runs) {
            // No column (`count(*)`): the runs know how many rows there are.
            let schema = Arc::new(self.schema.project(&[])?);
            return runs
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(_, n)| {
                    let rows = RecordBatchOptions::new().with_row_count(Some(*n as usize));
                    Ok(RecordBatch::try_new_with_options(
                        schema.clone(),
                        vec![],
                        &rows,
                    )?)
                })
                .collect();
        }
        let (batches, projected) = match (&c.resident, &self.store) {
            (Some(b), _) => (b.as_ref().clone(), false),
            (None, _) if c.runs.is_some() => {
                let schema = match pushed {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => self.schema.clone(),
                };
                let batches = regenerate(&self.regenerate, c, pushed)?
                    .iter()
                    .map(|b| with_schema(&schema, b))
                    .collect::<Result<_>>()?;
                (batches, pushed.is_some())
            }
            (None, Some((storage, state_id))) => {
                match storage.get(&keys::state_key(*state_id, &chunk_key(DATA, c.epoch)))? {
                    Some(v) => (decode_chunk(&v, &self.schema)?, false),
                    None => (vec![], false),
                }
            }
            (None, None) => (vec![], false),
        };
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let b = match cutoff {
                Some((col, cutoff)) => filter_record_batch(&b, &keep_from(&b, col, cutoff)?)?,
                None => b,
            };
            if b.num_rows() > 0 {
                out.push(match projection {
                    Some(p) if !projected => b.project(p)?,
                    _ => b,
                });
            }
        }
        Ok(out)
    }
}

/// `batch`'s columns under `schema` (the source's tag and column names dropped).
fn with_schema(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        batch.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The rows of a chunk stored as positions (only `columns`, if given).
fn regenerate(
    f: &Option<Regenerate>,
    c: &Chunk,
    columns: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let (Some(f), Some(runs)) = (f, &c.runs) else {
        return Err(Error::Storage(format!(
            "the rows of epoch {} are stored as source positions, and the stream cannot produce them again",
            c.epoch
        )));
    };
    runs.iter()
        .map(|(from, n)| f(*from, *n as usize, columns))
        .collect()
}

fn decode_chunk(bytes: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    StreamReader::try_new(Cursor::new(bytes), None)?
        .map(|b| Ok(b?.with_schema(schema.clone())?))
        .collect()
}

/// A pending batch without some columns ([`StreamOperator`]'s `partial`).
struct Partial {
    /// Its index in `pending`.
    index: usize,
    /// Its rows' source positions.
    runs: Vec<(u64, u64)>,
    /// The columns left out.
    omitted: Vec<usize>,
}

pub struct StreamOperator {
    name: String,
    schema: SchemaRef,
    /// Rows appended in the epoch in progress; `persist_epoch` makes them a chunk.
    pending: Vec<RecordBatch>,
    /// For each batch of `pending` that lacks columns its source left out
    /// ([`omit_columns`]): its index in `pending`, source positions and the columns.
    /// Filled in before the rows are read or stored as rows.
    partial: Vec<Partial>,
    /// The columns this stream's readers read ([`Operator::set_columns_read`]).
    read: ColumnSet,
    /// With `regenerate`: the source positions of `pending`, while every batch of the
    /// epoch had one.
    pending_runs: Option<Vec<(u64, u64)>>,
    regenerate: Option<Regenerate>,
    chunks: imbl::Vector<Chunk>,
    rows: usize,
    /// `retention`: rows whose event time is this far below the watermark are
    /// forgotten (column index, microseconds).
    retention: Option<(usize, i64)>,
    cutoff: Option<i64>,
    /// Chunks that expired, deleted with the next epoch's commit.
    expired: Vec<Vec<u8>>,
    store: Option<(Arc<dyn Storage>, u64)>,
}

/// Which rows of `batch` have an event time at or above `cutoff` (µs), or none.
fn keep_from(
    batch: &RecordBatch,
    column: usize,
    cutoff: i64,
) -> Result<datafusion::arrow::array::BooleanArray> {
    Ok(super::watermark::micros(batch.column(column))?
        .into_iter()
        .map(|t| Some(t.is_none_or(|t| t >= cutoff)))
        .collect())
}

/// The oldest and newest event times in `column` of `batch` (µs; `(i64::MAX,
/// i64::MIN)` when none).
fn time_range(batch: &RecordBatch, column: usize) -> Result<(i64, i64)> {
    Ok(super::watermark::micros(batch.column(column))?
        .into_iter()
        .flatten()
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t))))
}

impl StreamOperator {
    pub fn new(name: &str, schema: SchemaRef) -> Self {
        Self {
            name: name.to_string(),
            schema,
            pending: vec![],
            partial: vec![],
            read: ColumnSet::ALL,
            pending_runs: Some(vec![]),
            regenerate: None,
            chunks: imbl::Vector::new(),
            rows: 0,
            retention: None,
            cutoff: None,
            expired: vec![],
            store: None,
        }
    }

    /// Forget rows whose event time (column `column`) is more than `retention_us`
    /// below the watermark. Pull queries and new views then see only the rest.
    pub fn with_retention(mut self, column: usize, retention_us: i64) -> Self {
        self.retention = Some((column, retention_us));
        self
    }

    /// The source's rows can be produced again: epochs of tagged batches store their
    /// positions, not their rows (see the module documentation).
    pub fn with_regenerate(mut self, f: Regenerate) -> Self {
        self.regenerate = Some(f);
        self
    }

    fn stored(&self) -> StoredRows {
        StoredRows {
            schema: self.schema.clone(),
            store: self.store.clone(),
            chunks: self.chunks.clone(),
            cutoff: self.retention.zip(self.cutoff).map(|((c, _), t)| (c, t)),
            regenerate: self.regenerate.clone(),
        }
    }

    /// `batch` with its columns `omitted` produced by the source (its rows are the
    /// source's at `runs`).
    fn complete(
        &self,
        batch: &RecordBatch,
        runs: &[(u64, u64)],
        omitted: &[usize],
    ) -> Result<RecordBatch> {
        let Some(f) = &self.regenerate else {
            return Err(Error::internal(format!(
                "stream {} received rows without some columns, and cannot produce them",
                self.name
            )));
        };
        let parts = runs
            .iter()
            .map(|(from, n)| f(*from, *n as usize, Some(omitted)))
            .collect::<Result<Vec<_>>>()?;
        let mut columns = batch.columns().to_vec();
        for (i, c) in omitted.iter().enumerate() {
            let arrays: Vec<&dyn datafusion::arrow::array::Array> =
                parts.iter().map(|p| p.column(i).as_ref()).collect();
            let filled = datafusion::arrow::compute::concat(&arrays)?;
            let slot = columns.get_mut(*c).ok_or_else(|| {
                Error::internal(format!("omitted column {c} of stream {}", self.name))
            })?;
            *slot = filled;
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Fill in the columns left out of the epoch's pending rows.
    fn complete_pending(&mut self) -> Result<()> {
        for p in std::mem::take(&mut self.partial) {
            let done = self.complete(&self.pending[p.index], &p.runs, &p.omitted)?;
            self.pending[p.index] = done;
        }
        Ok(())
    }

    fn chunk_of(&self, epoch: u64, batches: &[RecordBatch]) -> Result<Chunk> {
        let (mut min, mut max) = (i64::MAX, i64::MIN);
        if let Some((c, _)) = self.retention {
            for b in batches {
                let (lo, hi) = time_range(b, c)?;
                (min, max) = (min.min(lo), max.max(hi));
            }
        }
        Ok(Chunk {
            epoch,
            rows: batches.iter().map(|b| b.num_rows()).sum(),
            min,
            max,
            resident: None,
            legacy: None,
            runs: None,
        })
    }
}

/// A chunk's row count and time range, stored beside it (`m<epoch>`) so that a
/// restart reads the index without the rows; then, for a chunk stored as source
/// positions, its runs (position, count).
fn encode_meta(c: &Chunk) -> Vec<u8> {
    let runs = c.runs.as_deref().map_or(&[][..], |r| r.as_slice());
    let mut v = Vec::with_capacity(24 + 16 * runs.len());
    v.extend_from_slice(&(c.rows as u64).to_le_bytes());
    v.extend_from_slice(&c.min.to_le_bytes());
    v.extend_from_slice(&c.max.to_le_bytes());
    for (from, n) in runs {
        v.extend_from_slice(&from.to_le_bytes());
        v.extend_from_slice(&n.to_le_bytes());
    }
    v
}

fn decode_meta(epoch: u64, v: &[u8]) -> Result<Chunk> {
    let field = |i: usize| -> Result<[u8; 8]> {
        v.get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Storage("corrupt stream chunk index".into()))
    };
    let runs = (v.len() > 24).then(|| {
        (3..v.len() / 8)
            .step_by(2)
            .map(|i| {
                Ok((
                    u64::from_le_bytes(field(i)?),
                    u64::from_le_bytes(field(i + 1)?),
                ))
            })
            .collect::<Result<Vec<_>>>()
    });
    Ok(Chunk {
        epoch,
        rows: u64::from_le_bytes(field(0)?) as usize,
        min: i64::from_le_bytes(field(1)?),
        max: i64::from_le_bytes(field(2)?),
        resident: None,
        legacy: None,
        runs: runs.transpose()?.map(Arc::new),
    })
}

impl Operator for StreamOperator {
    fn name(&self) -> &'static str {
        "StreamOperator"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn state_description(&self) -> Option<String> {
        Some("append-only log of rows (on disk)".into())
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn attach_storage(&mut self, storage: &Arc<dyn Storage>, state_id: u64) {
        self.store = Some((storage.clone(), state_id));
    }

    fn logs_own_input(&self) -> bool {
        self.store.is_some()
    }

    fn logged_rows(&self, epoch: u64, state: &StateReader) -> Result<Vec<RecordBatch>> {
        if let Some(meta) = state.get(&chunk_key(META, epoch))? {
            let chunk = decode_meta(epoch, &meta)?;
            if chunk.runs.is_some() {
                return regenerate(&self.regenerate, &chunk, None);
            }
        }
        match state.get(&chunk_key(DATA, epoch))? {
            Some(v) => decode_chunk(&v, &self.schema),
            None => Err(Error::Storage(format!(
                "the rows stream {} received in epoch {epoch} are missing from storage",
                self.name
            ))),
        }
    }

    fn process(&mut self, _port: usize, batch: ChangeBatch, out: &mut Output) -> Result<()> {
        if batch.diffs.values().iter().any(|d| *d < 1) {
            return Err(Error::internal(format!(
                "stream {} received a retraction; streams are append-only",
                self.name
            )));
        }
        if batch.is_empty() {
            return Ok(());
        }
        // Rows the source can produce again (each once): note where they come from.
        let tagged = regenerable_runs(&batch.data)
            .filter(|_| self.regenerate.is_some() && self.store.is_some())
            .filter(|_| batch.diffs.values().iter().all(|d| *d == 1));
        let mut omitted = omitted_columns(&batch.data)?;
        if !omitted.is_empty() && tagged.is_none() {
            return Err(Error::internal(format!(
                "stream {} received rows without some columns that it cannot produce again",
                self.name
            )));
        }
        match (&tagged, self.pending_runs.as_mut()) {
            (Some(tagged), Some(runs)) => {
                for (from, n) in tagged {
                    match runs.last_mut() {
                        Some((start, len)) if *start + *len == *from => *len += n,
                        _ => runs.push((*from, *n)),
                    }
                }
            }
            _ => {
                // The epoch's rows will be stored as rows: they need every column.
                self.pending_runs = None;
                self.complete_pending()?;
            }
        }
        // A column a reader reads (or that the stream's retention reads) is filled in
        // now; the others only if the rows are read back while still pending.
        let time_column = self.retention.map(|(c, _)| c);
        let needed = omitted
            .iter()
            .any(|c| self.read.contains(*c) || Some(*c) == time_column);
        let batch = match &tagged {
            Some(runs) if !omitted.is_empty() && (needed || self.pending_runs.is_none()) => {
                let data = self.complete(&batch.data, runs, &omitted)?;
                omitted.clear();
                ChangeBatch::new(data, batch.diffs)
            }
            _ => batch,
        };
        // A row inserted n times at once (a join with duplicate partners) is n rows.
        let batch = if batch.diffs.values().iter().any(|d| *d > 1) {
            let idx: Vec<u32> = batch
                .diffs
                .values()
                .iter()
                .enumerate()
                .flat_map(|(i, d)| std::iter::repeat_n(i as u32, *d as usize))
                .collect();
            let expanded = batch.take(&datafusion::arrow::array::UInt32Array::from(idx))?;
            ChangeBatch::inserts(expanded.data)
        } else {
            batch
        };
        // The rows take this relation's column names (a view's input names its columns
        // as DataFusion does).
        let data = RecordBatch::try_new(self.schema.clone(), batch.data.columns().to_vec())?;
        self.rows += data.num_rows();
        if let Some(runs) = tagged.filter(|_| !omitted.is_empty()) {
            self.partial.push(Partial {
                index: self.pending.len(),
                runs,
                omitted,
            });
        }
        self.pending.push(data.clone());
        out.push(ChangeBatch::new(data, batch.diffs));
        Ok(())
    }

    /// Every epoch's rows are written with that epoch, so a checkpoint has nothing
    /// left to write for a stream (`checkpoint` keeps its default).
    fn persist_epoch(&mut self, epoch: u64, state: &mut StateWriter) -> Result<()> {
        if self.store.is_some() {
            for key in self.expired.drain(..) {
                state.delete(&key);
            }
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.pending_runs.is_none() {
            self.complete_pending()?;
        }
        // Stored as positions: the columns left out are never needed.
        self.partial.clear();
        let batches = std::mem::take(&mut self.pending);
        let runs = self.pending_runs.replace(vec![]);
        let mut chunk = self.chunk_of(epoch, &batches)?;
        if self.store.is_none() {
            chunk.resident = Some(Arc::new(batches));
            self.chunks.push_back(chunk);
            return Ok(());
        }
        if let Some(runs) = runs {
            // The source's positions, not its rows.
            chunk.runs = Some(Arc::new(runs));
            state.put_vec(&chunk_key(META, epoch), encode_meta(&chunk));
            self.chunks.push_back(chunk);
            return Ok(());
        }
        // One IPC stream of the epoch's batches, into a buffer sized up front.
        let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let mut buf = Vec::with_capacity(size + 4096);
        {
            let mut w = StreamWriter::try_new(&mut buf, &self.schema)?;
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        state.put_vec(&chunk_key(DATA, epoch), buf);
        state.put_vec(&chunk_key(META, epoch), encode_meta(&chunk));
        self.chunks.push_back(chunk);
        Ok(())
    }

    fn wants_watermark(&self) -> bool {
        self.retention.is_some()
    }

    fn on_watermark(&mut self, watermark: i64, _out: &mut Output) -> Result<()> {
        let Some((_, retention)) = self.retention else {
            return Ok(());
        };
        let cutoff = watermark.saturating_sub(retention);
        self.cutoff = Some(cutoff);
        // Oldest chunks first: a chunk whose newest row is below the cutoff goes whole
        // (from memory now, from disk with the next commit); the rows below it in the
        // others are hidden from readers. The walk stops at the first chunk that stays
        // (rows arrive roughly in event-time order).
        while let Some(front) = self.chunks.front().filter(|c| c.max < cutoff).cloned() {
            self.chunks.pop_front();
            self.rows -= front.rows;
            match front.legacy {
                Some(seq) => self.expired.push(seq.to_be_bytes().to_vec()),
                None if front.resident.is_none() => {
                    self.expired.push(chunk_key(DATA, front.epoch).to_vec());
                    self.expired.push(chunk_key(META, front.epoch).to_vec());
                }
                None => {}
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &StateReader) -> Result<()> {
        let upto = state.checkpoint_epoch();
        let mut legacy = vec![];
        state.for_each(&mut |k, v| {
            match (k.len(), k.first()) {
                // Written by eddy before chunks were per epoch: an 8-byte sequence number
                // and the rows.
                (8, _) => {
                    let seq = u64::from_be_bytes(
                        k.try_into()
                            .map_err(|_| Error::Storage("corrupt stream key".into()))?,
                    );
                    legacy.push((seq, decode_chunk(v, &self.schema)?));
                }
                (9, Some(&META)) => {
                    let epoch = u64::from_be_bytes(
                        k[1..]
                            .try_into()
                            .map_err(|_| Error::Storage("corrupt stream key".into()))?,
                    );
                    // Chunks after the checkpoint come back with the log replay.
                    if epoch <= upto {
                        self.chunks.push_back(decode_meta(epoch, v)?);
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        for (i, (seq, batches)) in legacy.into_iter().enumerate() {
            let mut chunk = self.chunk_of(0, &batches)?;
            chunk.resident = Some(Arc::new(batches));
            chunk.legacy = Some(seq);
            self.chunks.insert(i, chunk);
        }
        self.rows = self.chunks.iter().map(|c| c.rows).sum();
        Ok(())
    }

    fn contents(&self) -> Option<Result<Vec<ChangeBatch>>> {
        let read = || -> Result<Vec<ChangeBatch>> {
            let mut pending = self.pending.clone();
            for p in &self.partial {
                pending[p.index] = self.complete(&pending[p.index], &p.runs, &p.omitted)?;
            }
            Ok(self
                .stored()
                .read()?
                .into_iter()
                .chain(pending)
                .map(ChangeBatch::inserts)
                .collect())
        };
        Some(read())
    }

    fn omits_columns(&self) -> bool {
        self.regenerate.is_some() && self.store.is_some()
    }

    fn set_columns_read(&mut self, read: ColumnSet) {
        self.read = read;
    }

    fn snapshot(&self) -> Option<RelationSnapshot> {
        Some(RelationSnapshot::new(
            self.schema.clone(),
            SnapshotData::Stored(self.stored()),
        ))
    }

    fn state_entries(&self) -> usize {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::testing::*;
    use crate::storage::{MemoryStorage, WriteBatch};

    fn stored_op(schema: &SchemaRef, storage: &Arc<dyn Storage>) -> StreamOperator {
        let mut op = StreamOperator::new("s", schema.clone());
        op.attach_storage(storage, 5);
        op
    }

    /// End epoch `epoch`: its rows become a chunk, committed like the runtime does.
    fn persist(op: &mut StreamOperator, storage: &Arc<dyn Storage>, epoch: u64) {
        let mut wb = WriteBatch::new();
        op.persist_epoch(epoch, &mut StateWriter::new(5, &mut wb))
            .unwrap();
        storage.commit(wb).unwrap();
    }

    fn snapshot_rows(op: &StreamOperator) -> Vec<String> {
        let snap = op.snapshot().unwrap();
        let batches: Vec<ChangeBatch> = snap
            .batches()
            .unwrap()
            .iter()
            .cloned()
            .map(ChangeBatch::inserts)
            .collect();
        consolidate(&batches)
    }

    #[test]
    fn each_epoch_is_a_chunk_on_disk_and_memory_keeps_none_of_it() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut op = stored_op(&schema, &storage);
        assert!(op.logs_own_input());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 a +1\n2 b +1"), &mut out)
            .unwrap();
        // Before the epoch ends its rows are pending: contents has them, disk not yet.
        assert_eq!(contents(&op), vec!["1 a +1", "2 b +1"]);
        persist(&mut op, &storage, 3);
        assert!(op.pending.is_empty());
        assert!(op.chunks.iter().all(|c| c.resident.is_none()));
        op.process(0, changes(&schema, "1 a +1"), &mut out).unwrap();
        persist(&mut op, &storage, 4);
        // An epoch with no rows writes nothing.
        persist(&mut op, &storage, 5);
        assert_eq!(op.chunks.len(), 2);
        assert_eq!(contents(&op), vec!["1 a +2", "2 b +1"]);
        assert_eq!(snapshot_rows(&op), vec!["1 a +2", "2 b +1"]);
        assert_eq!(op.state_entries(), 3);
        // The replay reads an epoch's rows back from its chunk.
        let reader = StateReader::new(5, storage.as_ref());
        let logged = op.logged_rows(4, &reader).unwrap();
        assert_eq!(logged.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert!(op.logged_rows(9, &reader).is_err());
    }

    #[test]
    fn restore_loads_the_chunks_up_to_the_checkpoint_and_the_replay_adds_the_rest() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut op = stored_op(&schema, &storage);
        let mut out = vec![];
        op.process(0, changes(&schema, "1 a +1"), &mut out).unwrap();
        persist(&mut op, &storage, 1);
        op.process(0, changes(&schema, "2 b +1"), &mut out).unwrap();
        persist(&mut op, &storage, 2);
        // A crash after epoch 2 with the checkpoint at epoch 1.
        let mut back = stored_op(&schema, &storage);
        back.restore(&StateReader::new(5, storage.as_ref()).at_checkpoint(1))
            .unwrap();
        assert_eq!(contents(&back), vec!["1 a +1"]);
        // Replaying epoch 2 from its chunk ends where the first run did, and rewriting
        // the chunk is harmless.
        let reader = StateReader::new(5, storage.as_ref());
        for b in back.logged_rows(2, &reader).unwrap() {
            back.process(0, ChangeBatch::inserts(b), &mut out).unwrap();
        }
        persist(&mut back, &storage, 2);
        assert_eq!(contents(&back), vec!["1 a +1", "2 b +1"]);
        // New epochs go on from there; everything is there after another restart.
        back.process(0, changes(&schema, "3 c +1"), &mut out)
            .unwrap();
        persist(&mut back, &storage, 3);
        let mut again = stored_op(&schema, &storage);
        again
            .restore(&StateReader::new(5, storage.as_ref()))
            .unwrap();
        assert_eq!(contents(&again), vec!["1 a +1", "2 b +1", "3 c +1"]);
        assert_eq!(again.state_entries(), 3);
    }

    #[test]
    fn without_storage_the_chunks_stay_in_memory() {
        let schema = schema(&[("k", I64)]);
        let mut op = StreamOperator::new("s", schema.clone());
        assert!(!op.logs_own_input());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 +1"), &mut out).unwrap();
        let mut wb = WriteBatch::new();
        op.persist_epoch(1, &mut StateWriter::new(5, &mut wb))
            .unwrap();
        assert!(wb.is_empty());
        assert_eq!(snapshot_rows(&op), vec!["1 +1"]);
    }

    #[test]
    fn rows_stored_by_older_versions_are_read() {
        let schema = schema(&[("k", I64)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        // Before per-epoch chunks: one IPC value per checkpoint under a sequence number.
        let batch = changes(&schema, "7 +1").data;
        let mut buf = vec![];
        {
            let mut w = StreamWriter::try_new(&mut buf, &schema).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
        }
        let mut wb = WriteBatch::new();
        StateWriter::new(5, &mut wb).put(&0u64.to_be_bytes(), &buf);
        storage.commit(wb).unwrap();
        let mut op = stored_op(&schema, &storage);
        op.restore(&StateReader::new(5, storage.as_ref()).at_checkpoint(9))
            .unwrap();
        let mut out = vec![];
        op.process(0, changes(&schema, "8 +1"), &mut out).unwrap();
        persist(&mut op, &storage, 10);
        assert_eq!(contents(&op), vec!["7 +1", "8 +1"]);
    }

    /// A source whose row `i` is `(i, "r<i>")`, and how many rows it was asked for.
    fn counting_source(schema: &SchemaRef) -> (Regenerate, Arc<std::sync::atomic::AtomicU64>) {
        let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (schema, counter) = (schema.clone(), asked.clone());
        let f: Regenerate = Arc::new(move |from, n, columns: Option<&[usize]>| {
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            let text: String = (from..from + n as u64)
                .map(|i| format!("{i} r{i} +1\n"))
                .collect();
            let batch = tag_regenerable(changes(&schema, &text).data, from)?;
            Ok(match columns {
                Some(c) => batch.project(c)?,
                None => batch,
            })
        });
        (f, asked)
    }

    fn source_rows(f: &Regenerate, from: u64, n: usize) -> ChangeBatch {
        ChangeBatch::inserts(f(from, n, None).unwrap())
    }

    /// The rows of `op`'s chunks, columns `cols` only.
    fn projected(op: &StreamOperator, cols: Vec<usize>) -> Vec<RecordBatch> {
        op.stored()
            .into_projected(Some(cols))
            .collect::<Result<_>>()
            .unwrap()
    }

    fn has_key(storage: &Arc<dyn Storage>, kind: u8, epoch: u64) -> bool {
        StateReader::new(5, storage.as_ref())
            .get(&chunk_key(kind, epoch))
            .unwrap()
            .is_some()
    }

    #[test]
    fn an_epoch_of_regenerable_rows_stores_their_positions_and_reads_them_back() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let (f, asked) = counting_source(&schema);
        let mut op = stored_op(&schema, &storage).with_regenerate(f.clone());
        let mut out = vec![];
        // Epoch 1: two adjacent batches (one run), then a gap (a second run).
        op.process(0, source_rows(&f, 0, 3), &mut out).unwrap();
        op.process(0, source_rows(&f, 3, 2), &mut out).unwrap();
        op.process(0, source_rows(&f, 10, 1), &mut out).unwrap();
        // What the stream passes on is untagged, with the stream's schema.
        assert!(out.iter().all(|b| regenerable_runs(&b.data).is_none()));
        persist(&mut op, &storage, 1);
        assert!(!has_key(&storage, DATA, 1), "no rows stored");
        assert!(has_key(&storage, META, 1));
        let runs = op.chunks[0].runs.clone().unwrap();
        assert_eq!(runs.as_slice(), &[(0, 5), (10, 1)]);
        let want = vec![
            "0 r0 +1",
            "1 r1 +1",
            "10 r10 +1",
            "2 r2 +1",
            "3 r3 +1",
            "4 r4 +1",
        ];
        asked.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(snapshot_rows(&op), want);
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 6);
        let snap = op.snapshot().unwrap();
        assert!(snap.batches().unwrap().iter().all(|b| b.schema() == schema));
        // A read of some columns gets only those (no column at all: just the count).
        let proj: Vec<RecordBatch> = projected(&op, vec![1]);
        assert!(proj.iter().all(|b| b.num_columns() == 1
            && b.schema().field(0).name() == "v"
            && b.schema().metadata().is_empty()));
        assert_eq!(proj.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
        asked.store(0, std::sync::atomic::Ordering::Relaxed);
        let none: Vec<RecordBatch> = projected(&op, vec![]);
        assert_eq!(none.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
        assert_eq!(
            asked.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "counting needs no rows"
        );
        // The log replay of epoch 1, and a restart from a checkpoint after it.
        let reader = StateReader::new(5, storage.as_ref());
        let logged = op.logged_rows(1, &reader).unwrap();
        assert_eq!(logged.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
        let mut back = stored_op(&schema, &storage).with_regenerate(f.clone());
        back.restore(&reader).unwrap();
        assert_eq!(snapshot_rows(&back), want);
        assert_eq!(back.state_entries(), 6);
        // Replaying a regenerated epoch stores positions again.
        let mut replayed = stored_op(&schema, &storage).with_regenerate(f.clone());
        replayed
            .restore(&StateReader::new(5, storage.as_ref()).at_checkpoint(0))
            .unwrap();
        for b in logged {
            replayed
                .process(0, ChangeBatch::inserts(b), &mut out)
                .unwrap();
        }
        assert!(replayed.pending_runs.as_ref().is_some_and(|r| r.len() == 2));
        // Without the function, a stream stored as positions says so when read.
        let mut blind = stored_op(&schema, &storage);
        blind.restore(&reader).unwrap();
        let err = blind.stored().read().unwrap_err();
        assert!(err.to_string().contains("source positions"), "{err}");
    }

    #[test]
    fn an_epoch_with_any_other_rows_stores_its_rows() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let (f, _) = counting_source(&schema);
        let mut op = stored_op(&schema, &storage).with_regenerate(f.clone());
        let mut out = vec![];
        // Epoch 1: a generated batch and an INSERT.
        op.process(0, source_rows(&f, 0, 2), &mut out).unwrap();
        op.process(0, changes(&schema, "7 x +1"), &mut out).unwrap();
        persist(&mut op, &storage, 1);
        assert!(has_key(&storage, DATA, 1));
        // Epoch 2: a generated batch whose rows count twice (not the source's rows).
        let mut twice = source_rows(&f, 2, 1);
        twice.diffs = vec![2].into();
        op.process(0, twice, &mut out).unwrap();
        persist(&mut op, &storage, 2);
        assert!(has_key(&storage, DATA, 2));
        // Epoch 3: a generated batch a filter took rows from (a watermark dropping late
        // rows keeps the schema, and so the tag): not the source's rows any more.
        let tagged = f(3, 3, None).unwrap();
        let kept = filter_record_batch(
            &tagged,
            &datafusion::arrow::array::BooleanArray::from(vec![true, false, true]),
        )
        .unwrap();
        assert!(kept.schema().metadata().contains_key(REGENERATE_FROM));
        assert!(regenerable_runs(&kept).is_none());
        op.process(0, ChangeBatch::inserts(kept), &mut out).unwrap();
        persist(&mut op, &storage, 3);
        assert!(has_key(&storage, DATA, 3));
        // Epoch 4: generated only again, stored as positions.
        op.process(0, source_rows(&f, 6, 1), &mut out).unwrap();
        persist(&mut op, &storage, 4);
        assert!(!has_key(&storage, DATA, 4));
        let want = vec![
            "0 r0 +1", "1 r1 +1", "2 r2 +2", "3 r3 +1", "5 r5 +1", "6 r6 +1", "7 x +1",
        ];
        assert_eq!(snapshot_rows(&op), want);
        // A projected read of stored rows and positions alike.
        let keys: Vec<RecordBatch> = projected(&op, vec![0]);
        assert!(keys.iter().all(|b| b.num_columns() == 1));
        assert_eq!(keys.iter().map(|b| b.num_rows()).sum::<usize>(), 8);
        // A stream without the function stores tagged rows like any other.
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut plain = stored_op(&schema, &storage);
        plain.process(0, source_rows(&f, 0, 2), &mut out).unwrap();
        persist(&mut plain, &storage, 1);
        assert!(has_key(&storage, DATA, 1));
        assert_eq!(snapshot_rows(&plain), vec!["0 r0 +1", "1 r1 +1"]);
    }

    #[test]
    fn retention_forgets_rows_below_the_watermark_in_memory_and_on_disk() {
        let schema = schema(&[("k", I64), ("ts", TS)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut op = stored_op(&schema, &storage).with_retention(1, 10_000_000);
        assert!(op.wants_watermark());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 5 +1\n2 8 +1"), &mut out)
            .unwrap();
        persist(&mut op, &storage, 1);
        op.process(0, changes(&schema, "3 50 +1\n4 60 +1"), &mut out)
            .unwrap();
        persist(&mut op, &storage, 2);
        assert_eq!(op.state_entries(), 4);
        // Watermark 18 s, retention 10 s: rows before 8 s are hidden (5 s); the chunk
        // stays while it holds a row that is not.
        op.on_watermark(18_000_000, &mut out).unwrap();
        assert_eq!(op.chunks.len(), 2);
        assert_eq!(
            snapshot_rows(&op),
            vec![
                format!("2 {} +1", ts(8)),
                format!("3 {} +1", ts(50)),
                format!("4 {} +1", ts(60))
            ]
        );
        // Watermark 19 s: the first chunk goes, from disk with the next commit.
        op.on_watermark(19_000_000, &mut out).unwrap();
        assert_eq!(op.state_entries(), 2);
        assert!(out.iter().all(|b| b.diffs.values().iter().all(|d| *d > 0)));
        persist(&mut op, &storage, 3);
        let reader = StateReader::new(5, storage.as_ref());
        assert!(op.logged_rows(1, &reader).is_err());
        let mut back = stored_op(&schema, &storage).with_retention(1, 10_000_000);
        back.restore(&StateReader::new(5, storage.as_ref()))
            .unwrap();
        assert_eq!(back.state_entries(), 2);
        back.on_watermark(71_000_000, &mut out).unwrap();
        assert_eq!(back.state_entries(), 0);
        assert!(snapshot_rows(&back).is_empty());
    }

    #[test]
    fn a_row_inserted_twice_at_once_is_two_rows() {
        let schema = schema(&[("k", I64)]);
        let mut op = StreamOperator::new("s", schema.clone());
        let mut out = vec![];
        op.process(0, changes(&schema, "1 +2\n2 +1"), &mut out)
            .unwrap();
        assert_eq!(contents(&op), vec!["1 +2", "2 +1"]);
        assert_eq!(op.state_entries(), 3);
        assert!(out.iter().all(|b| b.diffs.values().iter().all(|d| *d == 1)));
    }

    #[test]
    fn stream_rejects_retractions() {
        let schema = schema(&[("k", I64)]);
        let mut op = StreamOperator::new("s", schema.clone());
        assert!(op
            .process(0, changes(&schema, "1 -1"), &mut vec![])
            .is_err());
    }

    /// A filter that re-tags what it kept ([`retag_filtered`], as the watermark does)
    /// leaves the rows regenerable: the epoch stores the positions of the kept rows.
    #[test]
    fn rows_a_watermark_dropped_keep_the_positions_of_the_rest() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let (f, _) = counting_source(&schema);
        let mut op = stored_op(&schema, &storage).with_regenerate(f.clone());
        let tagged = f(3, 5, None).unwrap();
        let keep = [true, false, true, true, false];
        let filtered = filter_record_batch(
            &tagged,
            &datafusion::arrow::array::BooleanArray::from(keep.to_vec()),
        )
        .unwrap();
        let kept = retag_filtered(&tagged, &keep, filtered).unwrap();
        assert_eq!(regenerable_runs(&kept), Some(vec![(3, 1), (5, 2)]));
        let mut out = vec![];
        op.process(0, ChangeBatch::inserts(kept), &mut out).unwrap();
        persist(&mut op, &storage, 1);
        assert!(!has_key(&storage, DATA, 1), "positions, not rows");
        assert_eq!(snapshot_rows(&op), vec!["3 r3 +1", "5 r5 +1", "6 r6 +1"]);
        // An untagged batch stays untagged.
        let plain = changes(&schema, "1 a +1\n2 b +1").data;
        let filtered = filter_record_batch(
            &plain,
            &datafusion::arrow::array::BooleanArray::from(vec![false, true]),
        )
        .unwrap();
        let kept = retag_filtered(&plain, &[false, true], filtered).unwrap();
        assert!(regenerable_runs(&kept).is_none());
    }

    /// `rows` from the source at `from` with column 1 left out (placeholders "?").
    fn without_v(f: &Regenerate, from: u64, n: usize) -> ChangeBatch {
        use datafusion::arrow::array::{ArrayRef, StringArray};
        let full = f(from, n, None).unwrap();
        let placeholder: ArrayRef = Arc::new(StringArray::from(vec!["?"; n]));
        let batch =
            RecordBatch::try_new(full.schema(), vec![full.column(0).clone(), placeholder]).unwrap();
        ChangeBatch::inserts(omit_columns(batch, &[1]).unwrap())
    }

    fn values(out: &[ChangeBatch]) -> Vec<String> {
        consolidate(out)
    }

    /// A batch whose source left out a column: passed on as it is while no reader
    /// reads the column, filled in from the source once one does, and always filled in
    /// when the rows are read back (a new view's backfill) or stored as rows.
    #[test]
    fn columns_the_source_left_out_are_filled_in_when_read() {
        let schema = schema(&[("k", I64), ("v", STR)]);
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let (f, asked) = counting_source(&schema);
        let mut op = stored_op(&schema, &storage).with_regenerate(f.clone());
        assert!(op.omits_columns());
        // Readers read column 0 only: the placeholders pass.
        op.set_columns_read(ColumnSet::of([0]));
        let mut out = vec![];
        op.process(0, without_v(&f, 0, 2), &mut out).unwrap();
        assert_eq!(values(&out), vec!["0 ? +1", "1 ? +1"]);
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
        // A new reader's backfill reads the epoch's pending rows: filled in.
        assert_eq!(contents(&op), vec!["0 r0 +1", "1 r1 +1"]);
        // Now a reader reads column 1: the next batch is filled in before it goes on.
        op.set_columns_read(ColumnSet::of([0, 1]));
        let mut out = vec![];
        op.process(0, without_v(&f, 2, 2), &mut out).unwrap();
        assert_eq!(values(&out), vec!["2 r2 +1", "3 r3 +1"]);
        persist(&mut op, &storage, 1);
        assert!(!has_key(&storage, DATA, 1), "positions, not rows");
        assert_eq!(
            snapshot_rows(&op),
            vec!["0 r0 +1", "1 r1 +1", "2 r2 +1", "3 r3 +1"]
        );
        // An epoch that mixes a partial batch with an INSERT stores rows: complete ones,
        // whichever came first.
        op.set_columns_read(ColumnSet::NONE);
        let mut out = vec![];
        op.process(0, without_v(&f, 4, 1), &mut out).unwrap();
        op.process(0, changes(&schema, "9 x +1"), &mut out).unwrap();
        op.process(0, without_v(&f, 5, 1), &mut out).unwrap();
        assert_eq!(values(&out), vec!["4 ? +1", "5 r5 +1", "9 x +1"]);
        persist(&mut op, &storage, 2);
        assert!(has_key(&storage, DATA, 2));
        let mut back = stored_op(&schema, &storage);
        back.restore(&StateReader::new(5, storage.as_ref()))
            .unwrap();
        let stored = StateReader::new(5, storage.as_ref());
        let logged = back.logged_rows(2, &stored).unwrap();
        let logged: Vec<ChangeBatch> = logged.into_iter().map(ChangeBatch::inserts).collect();
        assert_eq!(consolidate(&logged), vec!["4 r4 +1", "5 r5 +1", "9 x +1"]);
        // A batch without columns and without positions cannot be completed: an error,
        // not placeholders stored as rows.
        let bare = omit_columns(changes(&schema, "1 a +1").data, &[1]).unwrap();
        assert!(op.process(0, ChangeBatch::inserts(bare), &mut out).is_err());
    }
}
