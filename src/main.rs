//! The `eddy` binary: starts a server with an embedded data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use eddy::engine::{Database, DatabaseConfig};
use eddy::server::{self, ServerConfig};
use tracing::{error, info};

/// eddy — a streaming SQL database that speaks the PostgreSQL protocol.
///
/// With no arguments eddy keeps its data in ./eddy-data and listens for Postgres
/// clients on 127.0.0.1:6860 (connect with `psql -h 127.0.0.1 -p 6860`).
#[derive(Parser, Debug)]
#[command(name = "eddy", version, about, long_about)]
struct Args {
    /// Directory for the catalog, table data and operator state.
    #[arg(long, env = "EDDY_DATA_DIR", default_value = "./eddy-data")]
    data_dir: PathBuf,

    /// Keep everything in memory instead of a data directory (nothing survives a restart).
    #[arg(long, env = "EDDY_IN_MEMORY", conflicts_with = "data_dir")]
    in_memory: bool,

    /// Address to listen on for PostgreSQL clients.
    #[arg(long, env = "EDDY_LISTEN", default_value = "127.0.0.1:6860")]
    listen: SocketAddr,

    /// How often operator state is checkpointed: `500ms`, `1s`, `10s`, or `never`
    /// (only at DDL and shutdown). Between checkpoints eddy logs only the inputs, and a
    /// restart replays them, so this bounds recovery time, not durability: every
    /// acknowledged write is on disk either way.
    #[arg(long, env = "EDDY_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    checkpoint_interval: Interval,

    /// How long a source's rows may wait for the next epoch after the previous one
    /// began (`0` = never): each epoch is one fsync, so a source delivering small
    /// batches pays one per batch without it. Client writes and DDL never wait.
    #[arg(long, env = "EDDY_SOURCE_EPOCH_INTERVAL", default_value = "5ms", value_parser = parse_interval)]
    source_epoch_interval: Interval,

    /// How long eddy keeps each subscribed relation's changes, so that a client can
    /// resume with `SUBSCRIBE ... AS OF <epoch>` after reconnecting (e.g. 5m, 30s).
    #[arg(long, env = "EDDY_SUBSCRIBE_RETENTION", default_value = "5m", value_parser = parse_interval)]
    subscribe_retention: Interval,

    /// Rows a subscriber may have waiting before it is cut off (a slow client never
    /// stalls the dataflow; it gets an error and can resume AS OF its last epoch).
    #[arg(long, env = "EDDY_SUBSCRIBE_BUFFER_ROWS", default_value_t = 1_000_000)]
    subscribe_buffer_rows: usize,

    /// At most this many changed rows are kept per relation for `AS OF` resumes (the
    /// oldest go first).
    #[arg(
        long,
        env = "EDDY_SUBSCRIBE_RETENTION_ROWS",
        default_value_t = 1_000_000
    )]
    subscribe_retention_rows: usize,

    /// Kafka bootstrap servers (`host:port[,host:port]`). Without it eddy runs embedded
    /// only, and Kafka-backed streams, tables and sinks cannot be created.
    #[arg(long, env = "EDDY_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,

    /// A librdkafka client property for every Kafka connection, e.g.
    /// `security.protocol=SASL_SSL` or `sasl.mechanism=PLAIN` (repeatable).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kafka_option)]
    kafka_options: Vec<(String, String)>,

    /// A file of librdkafka client properties (`key=value` lines, `#` comments), as in
    /// a Kafka client's .properties file; `--kafka-option` wins over it.
    #[arg(long, env = "EDDY_KAFKA_CONFIG", value_name = "FILE")]
    kafka_config: Option<PathBuf>,

    /// The on-disk storage engine: redb (default) or sled.
    #[arg(long, env = "EDDY_STORAGE", default_value = "redb")]
    storage: eddy::storage::StorageEngine,

    /// Longest accepted SQL text, in bytes.
    #[arg(long, env = "EDDY_MAX_STATEMENT_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_statement_bytes: usize,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as
    /// `eddy=debug,info`. Logs go to stderr.
    #[arg(long, env = "EDDY_LOG", default_value = "info")]
    log: String,
}

fn parse_kafka_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, not {s:?}")),
    }
}

/// Read a properties file of librdkafka settings.
fn read_kafka_config(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            parse_kafka_option(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// A checkpoint interval: a duration, or none.
#[derive(Clone, Debug)]
struct Interval(Option<Duration>);

fn parse_interval(s: &str) -> Result<Interval, String> {
    let s = s.trim();
    if s == "never" || s == "0" {
        return Ok(Interval(None));
    }
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 1s, 2m or never"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    };
    Ok(Interval(Some(Duration::from_secs_f64(secs))))
}

fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!("eddy: invalid --log filter {:?}: {e}", args.log);
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eddy")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("eddy: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    let data_dir = (!args.in_memory).then(|| args.data_dir.clone());
    let mut kafka_options = match &args.kafka_config {
        Some(path) => match read_kafka_config(path) {
            Ok(o) => o,
            Err(e) => {
                error!("{e}");
                return 2;
            }
        },
        None => vec![],
    };
    kafka_options.extend(args.kafka_options.iter().cloned());
    let mut brokers = args.kafka_brokers.clone();
    if brokers.is_none() {
        // bootstrap.servers in the config file counts as --kafka-brokers.
        brokers = kafka_options
            .iter()
            .find(|(k, _)| k == "bootstrap.servers")
            .map(|(_, v)| v.clone());
    }
    let config = DatabaseConfig {
        data_dir: data_dir.clone(),
        checkpoint_interval: args.checkpoint_interval.0,
        source_epoch_interval: args.source_epoch_interval.0.unwrap_or_default(),
        storage: args.storage,
        subscribe: eddy::dataflow::subscribe::SubscribeConfig {
            max_pending_rows: args.subscribe_buffer_rows,
            retention: args.subscribe_retention.0.unwrap_or_default(),
            retention_rows: args.subscribe_retention_rows,
        },
        kafka: eddy::connector::kafka::KafkaConfig {
            brokers,
            options: kafka_options,
        },
    };
    let db = match Database::open(config).await {
        Ok(db) => db,
        Err(e) => {
            error!("cannot open the database: {e}");
            return 1;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match &data_dir {
        Some(d) => info!(
            "eddy {} listening on {addr}, data in {}",
            env!("CARGO_PKG_VERSION"),
            d.display()
        ),
        None => info!(
            "eddy {} listening on {addr}, in memory",
            env!("CARGO_PKG_VERSION")
        ),
    }
    // Tests and scripts wait for this line on stdout to know the server is up.
    println!("eddy ready on {addr}");
    let config = ServerConfig {
        max_statement_bytes: args.max_statement_bytes,
    };
    tokio::select! {
        r = server::serve(listener, db.clone(), config) => {
            if let Err(e) = r {
                error!("server stopped: {e}");
                return 1;
            }
            0
        }
        _ = shutdown_signal() => {
            info!("shutting down");
            // Everything acknowledged is already durable; a final checkpoint means the
            // next start has nothing to replay.
            if let Err(e) = db.dataflow().checkpoint("shutdown").await {
                error!("final checkpoint failed (the input log will be replayed at the next start): {e}");
            }
            0
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
