//! How fast Nexmark events are made, on one thread: the `nexmark` crate's iterator
//! (an `Event` with a `String` per text field) against eddy's generator, which writes
//! the same events straight into Arrow arrays (`connector/nexmark/generator.rs`). Both
//! make the same events; the unit tests of the generator check that value for value.
//!
//! `cargo bench --bench nexmark_generator` (`EDDY_GEN_EVENTS`, default 2,000,000 per
//! table and run; `EDDY_GEN_RUNS`, default 3, alternating the two).

use std::hint::black_box;
use std::time::Instant;

use eddy::connector::nexmark::generator::{generate, BASE_TIME_MS};
use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};
use nexmark::EventGenerator;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds per event of the crate's iterator (touching every field).
fn crate_ns(table: EventType, n: u64) -> f64 {
    let started = Instant::now();
    let mut bytes = 0usize;
    for e in EventGenerator::new(NexmarkConfig {
        base_time: BASE_TIME_MS,
        ..Default::default()
    })
    .with_type_filter(table)
    .take(n as usize)
    {
        bytes += match e {
            Event::Bid(b) => b.url.len() + b.channel.len() + b.extra.len() + b.price,
            Event::Auction(a) => a.item_name.len() + a.description.len() + a.extra.len(),
            Event::Person(p) => p.name.len() + p.email_address.len() + p.extra.len(),
        };
    }
    black_box(bytes);
    started.elapsed().as_nanos() as f64 / n as f64
}

/// Nanoseconds per event of eddy's generator, in batches of 10,000 rows.
fn eddy_ns(table: EventType, n: u64) -> f64 {
    let started = Instant::now();
    let mut from = 0;
    while from < n {
        let rows = (n - from).min(10_000);
        let arrays = generate(table, from, rows as usize, true, None).expect("generate");
        black_box(arrays);
        from += rows;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env("EDDY_GEN_EVENTS", 2_000_000);
    let runs = env("EDDY_GEN_RUNS", 3).max(1);
    println!("| table | nexmark crate, ns/event | eddy, ns/event | ratio |");
    println!("|---|---|---|---|");
    for (name, table) in [
        ("bid", EventType::Bid),
        ("auction", EventType::Auction),
        ("person", EventType::Person),
    ] {
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..runs {
            a.push(crate_ns(table, n));
            b.push(eddy_ns(table, n));
        }
        let (a, b) = (median(a), median(b));
        println!("| {name} | {a:.0} | {b:.0} | {:.2}x |", a / b);
    }
}
