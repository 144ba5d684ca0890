//! Helpers shared by the integration tests: run a real `eddy` process on a free port
//! with its own data directory, kill it (gracefully or with SIGKILL), restart it on the
//! same data, and connect to it with tokio-postgres.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running eddy server.
pub struct Eddy {
    child: Child,
    pub addr: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Keeps a temporary data directory alive (and removes it at the end).
    _tmp: Option<tempfile::TempDir>,
}

impl Eddy {
    /// Start eddy with a fresh temporary data directory.
    pub fn start() -> Eddy {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let mut e = Self::start_in(&dir, &[]);
        e._tmp = Some(tmp);
        e
    }

    /// Start eddy on `data_dir` (existing data is recovered) with extra arguments.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Eddy {
        // Benchmarks compare two builds with EDDY_BENCH_BIN=/path/to/other/eddy.
        let bin = std::env::var("EDDY_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_eddy").to_string());
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env(
                "EDDY_LOG",
                std::env::var("EDDY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn eddy");
        let stdout = child.stdout.take().expect("eddy stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("eddy ready on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("eddy did not start within 60s");
            }
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        Eddy {
            child,
            addr,
            port,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// A libpq-style connection string for this server.
    pub fn conn_str(&self) -> String {
        format!("host=127.0.0.1 port={} user=eddy dbname=eddy", self.port)
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect to eddy");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// SIGKILL: no shutdown code runs, like a crash or `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kill and start again on the same data directory.
    pub fn restart(self) -> Eddy {
        self.restart_with(&[])
    }

    /// Kill and start again on the same data directory, with these arguments.
    pub fn restart_with(mut self, extra: &[&str]) -> Eddy {
        self.kill9();
        let tmp = self._tmp.take();
        let mut e = Self::start_in(&self.data_dir.clone(), extra);
        e._tmp = tmp;
        e
    }

    /// Start with a fresh temporary data directory and extra arguments.
    pub fn start_with(extra: &[&str]) -> Eddy {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("data");
        let mut e = Self::start_in(&dir, extra);
        e._tmp = Some(tmp);
        e
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has the process exited?
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A throwaway PostgreSQL server (the oracle for differential tests): its own cluster
/// in a temporary directory, on a free port, fsync off. Runs as the `postgres` user
/// when the tests run as root (Postgres refuses to run as root).
pub struct Postgres {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bindir = postgres_bindir().expect(
            "PostgreSQL server binaries not found (initdb/postgres); install the Debian package \
             `postgresql` (scripts/test.sh does this)",
        );
        let dir = tempfile::Builder::new()
            .prefix("eddy-pg")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("pgdata");
        let as_root = unsafe_is_root();
        if as_root {
            let _ = Command::new("chown")
                .arg("-R")
                .arg("postgres")
                .arg(dir.path())
                .status();
            let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        }
        let initdb = bindir.join("initdb");
        let status = user_command(as_root, &initdb)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let child = user_command(as_root, &bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let pg = Postgres {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "postgres did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        let conn_str = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let start = Instant::now();
        loop {
            match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    return client;
                }
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot connect to postgres: {e}"),
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // As root the child is `runuser`, not the postmaster: stop the postmaster itself
        // (its pid is the first line of postmaster.pid; SIGQUIT is an immediate shutdown,
        // fine for a throwaway cluster), or it outlives the test.
        let pid_file = self._dir.path().join("pgdata").join("postmaster.pid");
        if let Ok(text) = std::fs::read_to_string(pid_file) {
            if let Some(pid) = text.lines().next().map(str::trim).filter(|p| !p.is_empty()) {
                let _ = Command::new("kill").args(["-QUIT", pid]).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_command(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn postgres_bindir() -> Option<PathBuf> {
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() && p.join("postgres").exists() {
            return Some(p);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin"))
        .find(|b| b.join("initdb").exists())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A real Kafka-protocol broker (Tansu, in-memory storage) on a free port. The binary
/// comes from `EDDY_TANSU_BIN`, or `scripts/lib/ensure-tansu.sh` installs it.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let bin = match std::env::var("EDDY_TANSU_BIN") {
            Ok(b) if !b.is_empty() => b,
            _ => {
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/ensure-tansu.sh");
                let out = Command::new("bash")
                    .arg(script)
                    .stderr(Stdio::inherit())
                    .output()
                    .expect("run scripts/lib/ensure-tansu.sh");
                assert!(out.status.success(), "ensure-tansu.sh failed");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        };
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freeze the broker (SIGSTOP): connections hang, as in a network partition.
    pub fn pause(&self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status();
    }

    pub fn resume(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Comparing query results (eddy against PostgreSQL, or two runs).

/// Rows of a query as normalized strings, sorted (a multiset).
pub async fn rows(c: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let msgs = c
        .simple_query(sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        })?;
    let mut out = vec![];
    for m in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let vals: Vec<String> = (0..r.len()).map(|i| normalize(r.get(i))).collect();
            out.push(vals.join(" | "));
        }
    }
    out.sort();
    Ok(out)
}

/// Numbers compare by value (PostgreSQL may print `15.000` where eddy prints `15`).
pub fn normalize(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) => match s.parse::<f64>() {
            Ok(f) if s.contains('.') || s.contains('e') => {
                let r = (f * 1e6).round() / 1e6;
                if r == r.trunc() && r.abs() < 1e15 {
                    format!("{}", r as i64)
                } else {
                    format!("{r}")
                }
            }
            _ => s.to_string(),
        },
    }
}

// Measurement helpers for the benchmarks (benches/ include this module too).

/// A numeric setting from the environment (`1_000_000` allowed), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) a process has used so far, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (in parentheses): utime and stime are fields 11 and 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of all files below a directory.
pub fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Microseconds since 1970 by the wall clock.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The `p`-quantile (0..=1) of sorted microseconds, in milliseconds (NaN when empty).
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
