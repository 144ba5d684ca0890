//! Runs every `sql-tests/**/*.slt` file against a real eddy server over the Postgres
//! protocol. Each file gets its own server (and data directory), so files run in
//! parallel and cannot disturb each other.
//!
//! `cargo test --test sqllogictest -- <substring>` runs only the files whose path
//! contains the substring.
//!
//! Values of result columns named `epoch` (subscriptions, `SHOW EPOCH`) or `at` (`SHOW
//! SOURCE ERRORS`) are wall-clock times; tests see them as `<epoch>`.
//!
//! Files under `sql-tests/kafka/` each get a real Kafka-protocol broker (Tansu) and an
//! eddy connected to it; with `control substitution on` they can produce records with
//! `system ok` / `printf '...' | $PRODUCE topic` (this program, run as a producer).
//!
//! Files under `sql-tests/pending/` pin down known bugs with the behaviour Postgres has:
//! they are expected to fail. One that passes fails the run, so that it gets moved out
//! of `pending/` (the bug is fixed) rather than rotting there. Errors keep the server's message and SQLSTATE, so a test can
//! expect either: `statement error (42P01)` or `statement error does not exist`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::Eddy;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// An error as the server sent it.
#[derive(Debug)]
struct PgError {
    message: String,
    sqlstate: Option<String>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sqlstate {
            Some(s) => write!(f, "{} (SQLSTATE {s})", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PgError {
                message: db.message().to_string(),
                sqlstate: Some(db.code().code().to_string()),
            },
            None => PgError {
                message: e.to_string(),
                sqlstate: None,
            },
        }
    }
}

struct EddyDb {
    client: tokio_postgres::Client,
}

impl EddyDb {
    async fn connect(port: u16) -> Result<Self, PgError> {
        let conn_str = format!("host=127.0.0.1 port={port} user=eddy dbname=eddy");
        let (client, conn) = tokio_postgres::connect(&conn_str, NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { client })
    }
}

#[async_trait]
impl AsyncDB for EddyDb {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = vec![];
        let mut ncols = None;
        let mut count = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::Row(row) => {
                    let mut r = vec![];
                    for i in 0..row.len() {
                        // Epochs (and the `at` of SHOW SOURCE ERRORS) are wall-clock
                        // times: tests see a placeholder.
                        let is_epoch = row
                            .columns()
                            .get(i)
                            .is_some_and(|c| c.name() == "epoch" || c.name() == "at");
                        r.push(match row.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(_) if is_epoch => "<epoch>".to_string(),
                            Some(v) => v.to_string(),
                        });
                    }
                    rows.push(r);
                }
                SimpleQueryMessage::RowDescription(cols) => ncols = Some(cols.len()),
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match ncols {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "eddy"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    async fn run_command(
        mut command: std::process::Command,
    ) -> std::io::Result<std::process::Output> {
        tokio::process::Command::from(std::mem::replace(
            &mut command,
            std::process::Command::new("true"),
        ))
        .output()
        .await
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.sqlstate.clone()
    }
}

fn find_slt(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            find_slt(&p, out);
        } else if p.extension().is_some_and(|x| x == "slt") {
            out.push(p);
        }
    }
}

async fn run_file(path: PathBuf) -> Result<Duration, String> {
    let started = Instant::now();
    // Files under sql-tests/kafka/ get their own broker, and eddy connected to it.
    let kafka = path.components().any(|c| c.as_os_str() == "kafka");
    let broker = if kafka {
        Some(
            tokio::task::spawn_blocking(common::Broker::start)
                .await
                .map_err(|e| format!("broker: {e}"))?,
        )
    } else {
        None
    };
    let server = match &broker {
        Some(b) => Eddy::start_with(&["--kafka-brokers", &b.addr()]),
        None => Eddy::start(),
    };
    let port = server.port;
    let mut runner = sqllogictest::Runner::new(move || async move { EddyDb::connect(port).await });
    runner.set_var("EDDY_PORT".into(), port.to_string());
    runner.set_var("EDDY_ADDR".into(), server.addr.clone());
    if let Some(b) = &broker {
        runner.set_var("KAFKA_BROKERS".into(), b.addr());
        // This very program produces records: `$PRODUCE topic < lines`.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        runner.set_var(
            "PRODUCE".into(),
            format!("{} kafka-produce {}", exe.display(), b.addr()),
        );
    }
    let result = runner.run_file_async(&path).await;
    drop(server);
    drop(broker);
    result
        .map(|_| started.elapsed())
        .map_err(|e| e.display(true).to_string())
}

/// `kafka-produce BROKERS TOPIC`: produce each line of standard input as one record,
/// for `system ok` steps in .slt files. A line `KEY<TAB>VALUE` has a key; a value of
/// `<tombstone>` is a record without a value. Exits non-zero unless every record was
/// acknowledged.
fn kafka_produce(brokers: &str, topic: &str) -> std::io::Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::io::BufRead;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(std::io::Error::other)?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let (key, value) = match line.split_once('\t') {
            Some((k, v)) => (Some(k.to_string()), v.to_string()),
            None => (None, line.clone()),
        };
        let mut r: BaseRecord<'_, str, str> = BaseRecord::to(topic);
        if let Some(k) = &key {
            r = r.key(k.as_str());
        }
        if value != "<tombstone>" {
            r = r.payload(value.as_str());
        }
        producer
            .send(r)
            .map_err(|(e, _)| std::io::Error::other(e))?;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(std::io::Error::other)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("kafka-produce") && args.len() == 4 {
        if let Err(e) = kafka_produce(&args[2], &args[3]) {
            eprintln!("kafka-produce: {e}");
            std::process::exit(1);
        }
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql-tests");
    let mut files = vec![];
    find_slt(&root, &mut files);
    files.sort();
    files.retain(|f| {
        filter.is_empty()
            || filter
                .iter()
                .any(|s| f.to_string_lossy().contains(s.as_str()))
    });
    let parallel: usize = std::env::var("EDDY_SLT_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut handles = vec![];
        for f in files {
            let sem = sem.clone();
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire().await;
                let r = run_file(f.clone()).await;
                (f, r)
            }));
        }
        let mut out = vec![];
        for h in handles {
            match h.await {
                Ok(r) => out.push(r),
                Err(e) => out.push((PathBuf::from("?"), Err(format!("test task panicked: {e}")))),
            }
        }
        out
    });
    let (mut passed, mut failed, mut known) = (0, 0, 0);
    for (f, r) in &results {
        let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        let pending = name.starts_with("pending/");
        match (r, pending) {
            (Ok(d), false) => {
                passed += 1;
                println!("ok      {name} ({:.1}s)", d.as_secs_f64());
            }
            (Err(e), false) => {
                failed += 1;
                println!("FAILED  {name}\n{e}\n");
            }
            (Err(e), true) => {
                known += 1;
                let first = e.lines().take(3).collect::<Vec<_>>().join(" | ");
                println!("pending {name} (known bug, fails as expected: {first})");
            }
            (Ok(_), true) => {
                failed += 1;
                println!("FAILED  {name}: passes now — move it out of sql-tests/pending/");
            }
        }
    }
    println!("sqllogictest: {passed} passed, {failed} failed, {known} known bugs pending");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
