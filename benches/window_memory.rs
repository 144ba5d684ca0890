//! Window memory benchmark (issue: "50M events through a 1-minute tumbling window view
//! with 100k keys; peak RSS stays flat after the first windows close").
//!
//! A release-build eddy on a fresh data directory, the built-in Nexmark generator as the
//! source (no broker) at full speed, and:
//!
//! ```sql
//! CREATE STREAM bid (..., WATERMARK FOR date_time AS date_time - INTERVAL '4 seconds')
//!     WITH (connector = 'nexmark', table = 'bid', event_rate = 0,
//!           max_events = <events>, retention = '1 minute');
//! CREATE MATERIALIZED VIEW per_key WITH (retention = '5 minutes') AS
//!   SELECT (auction * 7 + bidder + price) % <keys> AS k, window_start, window_end,
//!          count(*) AS n, sum(price) AS s, max(price) AS mx
//!   FROM TUMBLE(bid, date_time, INTERVAL '1 minute') GROUP BY ...
//!   EMIT ON WINDOW CLOSE;
//! ```
//!
//! The key: the generator's bidders are mostly a few "hot" persons and recent ones
//! (`bidder % 100000` has only ~12,800 distinct values in a minute), `auction * 7 +
//! bidder` ~85,000; with the price mixed in a full minute (552,000 bids: the generator
//! makes 10,000 events per second of event time, 92% bids) has **~99,550 distinct keys
//! of 100,000** (99,531–99,570 in the full windows the 50M run checked; the run prints
//! the figure for each window it checks).
//!
//! Every second the bench samples eddy's resident memory (VmRSS), the bids applied
//! (`SHOW SOURCES`), the watermarks (`SHOW WATERMARKS`) and the data directory's size;
//! every 5 seconds the view's row count. It ends when every event is applied and the
//! view's watermark has passed the end of the last window (once the generator stops,
//! the idle timeout lets the watermark follow the wall clock). Printed: the samples, then
//! events/s, events per CPU-second, peak RSS (VmHWM), RSS at 20%, 50% and 100% of the
//! events, RSS(100%)/RSS(20%) (the flatness figure; 1.0 is flat), the median RSS of
//! each tenth of the events (single samples swing by ±20% within a window), the view's
//! rows, and a check of every window left in the view against the same aggregates
//! computed here from the generator (the windows expected are the closed ones whose end
//! is at least watermark − 5 minutes).
//!
//! Run: `cargo bench --bench window_memory` (env `EDDY_WINDOW_EVENTS=50000000`,
//! `EDDY_WINDOW_KEYS=100000`, `EDDY_WINDOW_CSV=path` to also write the samples as CSV).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

const MINUTE_MS: i64 = 60_000;
const VIEW_RETENTION_MS: i64 = 5 * MINUTE_MS;

fn sql(events: u64, keys: u64) -> String {
    format!(
        "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, url TEXT,
            date_time TIMESTAMP, extra TEXT,
            WATERMARK FOR date_time AS date_time - INTERVAL '4 seconds')
            WITH (connector = 'nexmark', table = 'bid', event_rate = 0, max_events = {events},
                  retention = '1 minute');
         CREATE MATERIALIZED VIEW per_key WITH (retention = '5 minutes') AS
           SELECT (auction * 7 + bidder + price) % {keys} AS k, window_start, window_end,
                  count(*) AS n, sum(price) AS s, max(price) AS mx
           FROM TUMBLE(bid, date_time, INTERVAL '1 minute')
           GROUP BY (auction * 7 + bidder + price) % {keys}, window_start, window_end
           EMIT ON WINDOW CLOSE;"
    )
}

/// The bids eddy's generator makes from the `offset`-th on
/// (src/connector/nexmark/generator.rs).
fn bids(offset: u64) -> impl Iterator<Item = nexmark::event::Bid> {
    nexmark::EventGenerator::new(nexmark::config::NexmarkConfig {
        base_time: 1_700_000_000_000,
        ..Default::default()
    })
    .with_type_filter(nexmark::event::EventType::Bid)
    .with_offset(offset)
    .filter_map(|e| match e {
        nexmark::event::Event::Bid(b) => Some(b),
        _ => None,
    })
}

fn bid_time(offset: u64) -> i64 {
    bids(offset).next().expect("a bid").date_time as i64
}

/// The rows of a statement as column name → text.
async fn query(c: &tokio_postgres::Client, sql: &str) -> Vec<HashMap<String, Option<String>>> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn field<T: std::str::FromStr>(row: &HashMap<String, Option<String>>, name: &str) -> Option<T> {
    row.get(name)?.as_deref()?.trim().parse().ok()
}

/// A timestamp as eddy prints it, in ms since 1970 (UTC).
fn parse_ts(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches("+00").trim_end_matches('Z');
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

fn show_ts(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("-".into(), |t| t.format("%H:%M:%S").to_string())
}

/// Resident memory of a process now (VmRSS), in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Sample {
    secs: f64,
    events: u64,
    rss: u64,
    disk: u64,
    cpu: f64,
    stream_wm: Option<i64>,
    view_wm: Option<i64>,
    late_rows: u64,
    view_rows: Option<i64>,
}

/// Per window: (bids, sum of prices, max price, distinct keys).
type Windows = BTreeMap<i64, (i64, i64, i64, usize)>;

/// The view's windows as the generator says they should be, for the windows starting at
/// `from` or later (up to the last event).
fn expected(from: i64, events: u64, keys: u64) -> Windows {
    // The first bid at or after `from` (times never decrease with the offset).
    let (mut lo, mut hi) = (0u64, events);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if bid_time(mid) < from {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut acc: BTreeMap<i64, (i64, i64, i64, HashSet<u64>)> = BTreeMap::new();
    for b in bids(lo).take((events - lo) as usize) {
        let w = acc
            .entry(b.date_time as i64 / MINUTE_MS * MINUTE_MS)
            .or_insert((0, 0, i64::MIN, HashSet::new()));
        w.0 += 1;
        w.1 += b.price as i64;
        w.2 = w.2.max(b.price as i64);
        w.3.insert((b.auction as u64 * 7 + b.bidder as u64 + b.price as u64) % keys);
    }
    acc.into_iter()
        .map(|(w, (n, s, mx, k))| (w, (n, s, mx, k.len())))
        .collect()
}

/// The windows in the view, as the same aggregates.
async fn actual(c: &tokio_postgres::Client) -> Windows {
    query(
        c,
        "SELECT CAST(window_start AS TEXT) AS w, count(*) AS keys, sum(n) AS n, sum(s) AS s,
                max(mx) AS mx FROM per_key GROUP BY window_start",
    )
    .await
    .iter()
    .map(|r| {
        let w = r.get("w").cloned().flatten().unwrap_or_default();
        let start = parse_ts(&w).unwrap_or_else(|| panic!("window_start {w:?}"));
        let get = |name: &str| field::<i64>(r, name).unwrap_or(-1);
        (start, (get("n"), get("s"), get("mx"), get("keys") as usize))
    })
    .collect()
}

#[tokio::main]
async fn main() {
    let events = common::env_u64("EDDY_WINDOW_EVENTS", 50_000_000);
    let keys = common::env_u64("EDDY_WINDOW_KEYS", 100_000).max(1);
    let last_event = bid_time(events - 1);
    let last_window_end = (last_event / MINUTE_MS + 1) * MINUTE_MS;
    println!(
        "{events} bids, {keys} keys, {:.1} minutes of event time ({} .. {} UTC)",
        (last_event - bid_time(0)) as f64 / MINUTE_MS as f64,
        show_ts(Some(bid_time(0))),
        show_ts(Some(last_event)),
    );

    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut eddy = common::Eddy::start_in(&data, &[]);
    let pid = eddy.pid();
    let c = eddy.connect().await;
    let cpu0 = common::cpu_seconds(pid);
    let t0 = Instant::now();
    c.batch_execute(&sql(events, keys))
        .await
        .unwrap_or_else(|e| panic!("CREATE: {e}"));

    println!("| s | events (M) | RSS MiB | data dir MiB | stream watermark | view watermark | late rows | view rows |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut samples: Vec<Sample> = vec![];
    let mut ingest: Option<(f64, f64)> = None; // (seconds, CPU seconds) to apply every event
    let mut last_change = Instant::now();
    let mut stalled = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0u64.. {
        tick.tick().await;
        assert!(!eddy.exited(), "eddy exited");
        let events_now: u64 = query(&c, "SHOW SOURCES")
            .await
            .iter()
            .find(|r| field::<String>(r, "source").as_deref() == Some("bid"))
            .and_then(|r| field(r, "records"))
            .unwrap_or(0);
        let wms = query(&c, "SHOW WATERMARKS").await;
        let wm = |name: &str| {
            wms.iter()
                .find(|r| field::<String>(r, "name").as_deref() == Some(name))
        };
        let ts = |r: Option<&HashMap<String, Option<String>>>| {
            r.and_then(|r| r.get("watermark").cloned().flatten())
                .and_then(|w| parse_ts(&w))
        };
        let view_rows = if i % 5 == 0 {
            Some(
                common::rows(&c, "SELECT count(*) FROM per_key")
                    .await
                    .expect("count")[0]
                    .parse()
                    .unwrap_or(-1),
            )
        } else {
            None
        };
        let s = Sample {
            secs: t0.elapsed().as_secs_f64(),
            events: events_now,
            rss: rss(pid),
            disk: common::dir_size(&data),
            cpu: common::cpu_seconds(pid) - cpu0,
            stream_wm: ts(wm("bid")),
            view_wm: ts(wm("per_key")),
            late_rows: wm("bid").and_then(|r| field(r, "late_rows")).unwrap_or(0),
            view_rows,
        };
        println!(
            "| {:.0} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} |",
            s.secs,
            s.events as f64 / 1e6,
            mib(s.rss),
            mib(s.disk),
            show_ts(s.stream_wm),
            show_ts(s.view_wm),
            s.late_rows,
            s.view_rows.map_or(String::new(), |n| n.to_string())
        );
        if samples
            .last()
            .is_none_or(|p| p.events != s.events || p.view_wm != s.view_wm)
        {
            last_change = Instant::now();
        }
        if ingest.is_none() && s.events >= events {
            ingest = Some((s.secs, s.cpu));
        }
        let done = s.events >= events && s.view_wm.is_some_and(|w| w >= last_window_end);
        samples.push(s);
        if done {
            break;
        }
        if last_change.elapsed() > Duration::from_secs(300) {
            println!("STALLED: no new events and no watermark progress for 300 s");
            stalled = true;
            break;
        }
    }

    // Figures.
    let last = samples.last().expect("samples");
    let (secs, cpu) = ingest.unwrap_or((last.secs, last.cpu));
    let at = |f: f64| {
        samples
            .iter()
            .find(|s| s.events as f64 >= f * events as f64)
            .unwrap_or(last)
    };
    let (r20, r50, r100) = (at(0.2).rss, at(0.5).rss, at(1.0).rss);
    let max_after_20 = samples
        .iter()
        .filter(|s| s.events as f64 >= 0.2 * events as f64)
        .map(|s| s.rss)
        .max()
        .unwrap_or(0);
    // RSS saws up and down within each window (rows arrive, windows close, checkpoints):
    // the median of each tenth of the events shows the trend better than single samples.
    let tenths: Vec<u64> = (0..10)
        .map(|d| {
            let mut r: Vec<u64> = samples
                .iter()
                .filter(|s| s.events * 10 / events.max(1) == d)
                .map(|s| s.rss)
                .collect();
            r.sort_unstable();
            r.get(r.len() / 2).copied().unwrap_or(0)
        })
        .collect();
    let view_rows = common::rows(&c, "SELECT count(*) FROM per_key")
        .await
        .expect("count")[0]
        .parse::<i64>()
        .unwrap_or(-1);
    println!();
    println!("events applied: {} in {secs:.1} s: {:.0} events/s, {:.0} events per CPU-second ({cpu:.1} CPU s)",
        last.events, last.events as f64 / secs, last.events as f64 / cpu.max(1e-9));
    println!("peak RSS (VmHWM): {:.0} MiB", mib(common::peak_rss(pid)));
    println!(
        "RSS at 20% / 50% / 100% of events: {:.0} / {:.0} / {:.0} MiB; max after 20%: {:.0} MiB",
        mib(r20),
        mib(r50),
        mib(r100),
        mib(max_after_20)
    );
    println!(
        "flatness RSS(100%)/RSS(20%): {:.2}",
        r100 as f64 / r20.max(1) as f64
    );
    println!(
        "median RSS per tenth of the events (MiB): {}; last tenth / third tenth: {:.2}",
        tenths
            .iter()
            .map(|r| format!("{:.0}", mib(*r)))
            .collect::<Vec<_>>()
            .join(" "),
        tenths[9] as f64 / tenths[2].max(1) as f64
    );
    println!(
        "data dir at the end: {:.0} MiB",
        mib(common::dir_size(&data))
    );
    println!("late rows: {}", last.late_rows);
    println!(
        "view rows: {view_rows} (view watermark {}, last window ends {})",
        show_ts(last.view_wm),
        show_ts(Some(last_window_end))
    );

    // The windows left in the view against the generator.
    let mut ok = !stalled;
    if let Some(wm) = last.view_wm {
        let from = (wm - VIEW_RETENTION_MS - MINUTE_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
        let want_all = expected(from, events, keys);
        let got = actual(&c).await;
        let wm_after = query(&c, "SHOW WATERMARKS")
            .await
            .iter()
            .find(|r| field::<String>(r, "name").as_deref() == Some("per_key"))
            .and_then(|r| r.get("watermark").cloned().flatten())
            .and_then(|w| parse_ts(&w))
            .unwrap_or(wm);
        // Closed (end <= watermark) and not yet dropped (end >= watermark - retention),
        // with the watermark read before or after the view was.
        let want_at = |wm: i64| -> Windows {
            want_all
                .iter()
                .filter(|(w, _)| **w + MINUTE_MS <= wm && **w + MINUTE_MS >= wm - VIEW_RETENTION_MS)
                .map(|(w, v)| (*w, *v))
                .collect()
        };
        println!("| window | bids | keys | view: bids | keys | sum | max |");
        println!("|---|---|---|---|---|---|---|");
        for (w, e) in &want_all {
            let g = got.get(w);
            let same = |f: fn(&(i64, i64, i64, usize)) -> String| match g {
                Some(g) if f(g) == f(e) => "ok".to_string(),
                Some(g) => f(g),
                None => "-".into(),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                show_ts(Some(*w)),
                e.0,
                e.3,
                g.map_or("-".into(), |g| if g.0 == e.0 {
                    "ok".into()
                } else {
                    g.0.to_string()
                }),
                same(|v| v.3.to_string()),
                same(|v| v.1.to_string()),
                same(|v| v.2.to_string()),
            );
        }
        if got != want_at(wm) && got != want_at(wm_after) {
            ok = false;
            let extra: Vec<String> = got
                .keys()
                .filter(|w| !want_all.contains_key(w))
                .map(|w| show_ts(Some(*w)))
                .collect();
            println!(
                "MISMATCH: the view's windows differ from the expected ones (watermark {} .. {}); windows the generator does not have: {extra:?}",
                show_ts(Some(wm)),
                show_ts(Some(wm_after))
            );
        }
    } else {
        ok = false;
        println!("no watermark for per_key");
    }

    if let Ok(path) = std::env::var("EDDY_WINDOW_CSV") {
        let mut csv = String::from(
            "seconds,events,rss_bytes,data_dir_bytes,cpu_s,stream_watermark_ms,view_watermark_ms,late_rows,view_rows\n",
        );
        let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
        for s in &samples {
            csv.push_str(&format!(
                "{:.3},{},{},{},{:.2},{},{},{},{}\n",
                s.secs,
                s.events,
                s.rss,
                s.disk,
                s.cpu,
                opt(s.stream_wm),
                opt(s.view_wm),
                s.late_rows,
                opt(s.view_rows)
            ));
        }
        std::fs::write(&path, csv).expect("write CSV");
    }
    assert!(
        ok,
        "the run did not finish or the view is wrong (see above)"
    );
}
