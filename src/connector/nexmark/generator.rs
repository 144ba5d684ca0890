//! Nexmark events generated straight into Arrow column buffers.
//!
//! The events are the `nexmark` crate's (version 0.2.0, its default configuration with a
//! fixed base time), value for value: each event seeds the same random number generator
//! with its id and draws the same numbers in the same order. What differs is where they
//! go. The crate builds a `String` for every text field (and clones the channel and URL
//! out of a shared table) and hands out one `Event` at a time; here the characters are
//! written into the column's byte buffer as they are drawn, and a batch comes out as
//! Arrow arrays. That is most of the source's cost in the benchmarks, where the
//! generator shares the core with the dataflow.
//!
//! Events are addressed by their position in their table (the crate's type-filtered
//! offset), so any range of rows can be generated again after a failure.
//!
//! The tests compare every field with the crate's over runs of events at several
//! offsets, including ones where the `f32` arithmetic of the crate's event times rounds.

use std::sync::{Arc, LazyLock};

use nexmark::config::NexmarkConfig;
use nexmark::event::EventType;
use rand08::rngs::SmallRng;
use rand08::seq::SliceRandom;
use rand08::{Rng, RngCore, SeedableRng};

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};

use crate::error::{Error, Result};

/// Fixed base time of generated events (2023-11-14 22:13:20 UTC): runs are repeatable.
pub const BASE_TIME_MS: u64 = 1_700_000_000_000;

/// The columns of each table, in the order [`generate`] returns them. `extra` is last in
/// every table (and the last value each event draws), so it can be left out.
pub fn columns(table: EventType) -> &'static [&'static str] {
    match table {
        EventType::Person => &[
            "id",
            "name",
            "email_address",
            "credit_card",
            "city",
            "state",
            "date_time",
            "extra",
        ],
        EventType::Auction => &[
            "id",
            "item_name",
            "description",
            "initial_bid",
            "reserve",
            "date_time",
            "expires",
            "seller",
            "category",
            "extra",
        ],
        EventType::Bid => &[
            "auction",
            "bidder",
            "price",
            "channel",
            "url",
            "date_time",
            "extra",
        ],
    }
}

/// The kind of a table column as [`generate`] builds it: `Int64`, `Utf8`, or
/// milliseconds since 1970.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Time,
}

/// The kind of `column` of `table`; `None` if the table has no such column.
pub fn kind(table: EventType, column: &str) -> Option<Kind> {
    if !columns(table).contains(&column) {
        return None;
    }
    Some(match (table, column) {
        (_, "date_time" | "expires") => Kind::Time,
        (_, "extra")
        | (EventType::Person, "name" | "email_address" | "credit_card" | "city" | "state")
        | (EventType::Auction, "item_name" | "description")
        | (EventType::Bid, "channel" | "url") => Kind::Text,
        _ => Kind::Int,
    })
}

/// Rows `from..from + n` of `table`, one array per column in [`columns`] order; without
/// `extra` the last column (`extra`) is neither drawn nor returned. With `now`, every
/// event happens at `now` (an auction keeps its length: `expires` moves with
/// `date_time`).
pub fn generate(
    table: EventType,
    from: u64,
    n: usize,
    extra: bool,
    now: Option<u64>,
) -> Result<Vec<ArrayRef>> {
    match table {
        EventType::Bid => rows::<Bids>(table, from, n, extra, now),
        EventType::Auction => rows::<Auctions>(table, from, n, extra, now),
        EventType::Person => rows::<Persons>(table, from, n, extra, now),
    }
}

/// The column buffers of one table: one event at a time in, Arrow arrays out.
trait Columns {
    fn with_capacity(n: usize, extra: bool) -> Self;
    /// Appends event `number` (the crate's `<Table>::new`).
    fn push(&mut self, cfg: &Config, number: usize, now: Option<u64>);
    /// The arrays, in [`columns`] order.
    fn finish(self, out: &mut Vec<ArrayRef>) -> Result<()>;
}

fn rows<C: Columns>(
    table: EventType,
    from: u64,
    n: usize,
    extra: bool,
    now: Option<u64>,
) -> Result<Vec<ArrayRef>> {
    let cfg = &*CONFIG;
    let mut c = C::with_capacity(n, extra);
    for row in from..from + n as u64 {
        c.push(cfg, cfg.event_number(table, row), now);
    }
    let mut out = Vec::with_capacity(columns(table).len());
    c.finish(&mut out)?;
    Ok(out)
}

/// Ratios the crate hard-codes: hot sellers, auctions and bidders are chosen from
/// batches of this many.
const HOT_BATCH: usize = 100;

/// The crate's number of channels besides the hot ones.
const CHANNELS: usize = 10_000;

// The crate's default configuration (`NexmarkConfig::default()`; a test checks that they
// agree), as constants: divisions by them compile to multiplications.
const PERSON_PROPORTION: usize = 1;
const AUCTION_PROPORTION: usize = 3;
const BID_PROPORTION: usize = 46;
/// People, auctions and bids per cycle of events.
const DENOMINATOR: usize = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
const ACTIVE_PEOPLE: usize = 1000;
const IN_FLIGHT_AUCTIONS: usize = 100;
const PERSON_ID_LEAD: usize = 10;
const AUCTION_ID_LEAD: usize = 10;
const FIRST_EVENT_ID: usize = 0;
const FIRST_EVENT_NUMBER: usize = 0;
const HOT_SELLER_RATIO: usize = 4;
const HOT_AUCTION_RATIO: usize = 2;
const HOT_BIDDER_RATIO: usize = 4;
const HOT_CHANNEL_RATIO: usize = 2;
const FIRST_AUCTION_ID: usize = 1000;
const FIRST_PERSON_ID: usize = 1000;
const FIRST_CATEGORY_ID: usize = 10;
const NUM_CATEGORIES: usize = 5;
const AVG_PERSON_BYTE_SIZE: usize = 200;
const AVG_AUCTION_BYTE_SIZE: usize = 500;
const AVG_BID_BYTE_SIZE: usize = 100;

/// The crate's default configuration: its name lists, and the event times.
struct Config {
    c: NexmarkConfig,
    /// Microseconds between events (the crate computes it in `f32`).
    delay_us: f32,
}

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let c = NexmarkConfig {
        base_time: BASE_TIME_MS,
        ..Default::default()
    };
    // A constant rate (first_rate == next_rate): one inter-event delay.
    let delay_us = c.us_per_unit as f32 / c.first_rate as f32 * c.num_event_generators as f32;
    Config { delay_us, c }
});

/// The crate's table of (channel, URL) for bids outside the hot channels.
static CHANNEL_URLS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    (0..CHANNELS)
        .map(|i| {
            let mut url = base_url(i as u64);
            let mut rng = SmallRng::seed_from_u64(i as u64);
            if rng.gen_range(0..10) > 0 {
                url.push_str("&channel_id=");
                url.push_str(&i64::abs((i as i32).reverse_bits() as i64).to_string());
            }
            (format!("channel-{i}"), url)
        })
        .collect()
});

fn base_url(seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut part = || {
        let len = rng.gen_range(3..5usize);
        (0..len)
            .map(|_| {
                if rng.gen_range(0..13) == 0 {
                    '_'
                } else {
                    rng.gen_range(b'a'..=b'z') as char
                }
            })
            .collect::<String>()
    };
    let (a, b, c) = (part(), part(), part());
    format!("https://www.nexmark.com/{a}/{b}/{c}/item.htm?query=1")
}

// The crate's formulas, kept general: with its defaults some of them are trivial
// (`% 1`, `min(0)`), and the constants let the compiler drop those parts.
#[allow(clippy::modulo_one, clippy::unnecessary_min_or_max)]
impl Config {
    /// The global event number of row `row` of `table`.
    fn event_number(&self, table: EventType, row: u64) -> usize {
        let o = row as usize;
        let global = match table {
            EventType::Person => o / PERSON_PROPORTION * DENOMINATOR + o % PERSON_PROPORTION,
            EventType::Auction => {
                o / AUCTION_PROPORTION * DENOMINATOR + PERSON_PROPORTION + o % AUCTION_PROPORTION
            }
            EventType::Bid => {
                o / BID_PROPORTION * DENOMINATOR
                    + PERSON_PROPORTION
                    + AUCTION_PROPORTION
                    + o % BID_PROPORTION
            }
        };
        FIRST_EVENT_NUMBER + global
    }

    fn timestamp(&self, event_number: usize) -> u64 {
        self.c.base_time + ((event_number as f32 * self.delay_us) / 1000.0).round() as u64
    }

    fn last_person(&self, event_id: usize) -> usize {
        let epoch = event_id / DENOMINATOR;
        let offset = (event_id % DENOMINATOR).min(PERSON_PROPORTION - 1);
        epoch * PERSON_PROPORTION + offset
    }

    fn next_person(&self, event_id: usize, rng: &mut SmallRng) -> usize {
        let people = self.last_person(event_id) + 1;
        let active = people.min(ACTIVE_PEOPLE);
        people - active + rng.gen_range(0..active + PERSON_ID_LEAD)
    }

    fn last_auction(&self, event_id: usize) -> usize {
        let mut epoch = event_id / DENOMINATOR;
        let mut offset = event_id % DENOMINATOR;
        if offset < PERSON_PROPORTION {
            // Only persons have such ids, and they never ask.
            epoch = epoch.saturating_sub(1);
            offset = AUCTION_PROPORTION - 1;
        } else if PERSON_PROPORTION + AUCTION_PROPORTION <= offset {
            offset = AUCTION_PROPORTION - 1;
        } else {
            offset -= PERSON_PROPORTION;
        }
        epoch * AUCTION_PROPORTION + offset
    }

    fn next_auction(&self, event_id: usize, rng: &mut SmallRng) -> usize {
        let max = self.last_auction(event_id);
        let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
        min + rng.gen_range(0..max - min + 1 + AUCTION_ID_LEAD)
    }
}

fn price(rng: &mut SmallRng) -> i64 {
    (10.0_f32.powf(rng.gen::<f32>() * 6.0) * 100.0).round() as usize as i64
}

/// The length of the `extra` padding that brings an event of `size` bytes to about
/// `average` bytes.
fn extra_len(rng: &mut SmallRng, size: usize, average: usize) -> usize {
    if size > average {
        return 0;
    }
    let want = average - size;
    let delta = (want + 2) / 5;
    want - delta
        + if delta == 0 {
            0
        } else {
            rng.gen_range(0..2 * delta)
        }
}

/// `rng.gen_range(b'a'..=b'z')`, computed as rand 0.8 does (a 32-bit draw times 26;
/// the high half is the letter unless the low half falls in the biased zone), written
/// out so that it inlines: drawing letters is most of the generator's time.
#[inline(always)]
fn letter(rng: &mut SmallRng) -> u8 {
    const RANGE: u32 = 26;
    const ZONE: u32 = u32::MAX - (u32::MAX - RANGE + 1) % RANGE;
    loop {
        let m = rng.next_u32() as u64 * RANGE as u64;
        if m as u32 <= ZONE {
            return b'a' + (m >> 32) as u8;
        }
    }
}

/// A text column being built: UTF-8 bytes and their end offsets.
struct Text {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Text {
    fn with_capacity(rows: usize, bytes_per_row: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            bytes: Vec::with_capacity(rows * bytes_per_row),
        }
    }

    /// Ends the current value.
    fn end(&mut self) {
        // A batch is at most a few MB (rows of under 1 KB, `BATCH` rows): the offsets
        // fit; `finish` checks that they did.
        self.offsets
            .push(i32::try_from(self.bytes.len()).unwrap_or(i32::MIN));
    }

    fn push(&mut self, s: &str) {
        self.bytes.extend_from_slice(s.as_bytes());
        self.end();
    }

    /// `len` random lower-case letters, drawn one by one like the crate's strings.
    fn letters(&mut self, rng: &mut SmallRng, len: usize) {
        // A local copy of the generator's state: through `rng` the compiler would store
        // the state back to memory after every byte written (the bytes might alias it).
        let mut local = rng.clone();
        self.bytes.extend((0..len).map(|_| letter(&mut local)));
        *rng = local;
    }

    fn finish(self) -> Result<ArrayRef> {
        if self.offsets.iter().any(|o| *o < 0) {
            return Err(Error::internal("nexmark: a batch's text exceeds 2 GiB"));
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        let array = StringArray::try_new(offsets, Buffer::from_vec(self.bytes), None)?;
        Ok(Arc::new(array))
    }
}

fn ints(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

fn times(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v))
}

struct Bids {
    auction: Vec<i64>,
    bidder: Vec<i64>,
    price: Vec<i64>,
    channel: Text,
    url: Text,
    date_time: Vec<i64>,
    extra: Option<Text>,
}

impl Columns for Bids {
    fn with_capacity(n: usize, extra: bool) -> Self {
        Self {
            auction: Vec::with_capacity(n),
            bidder: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            channel: Text::with_capacity(n, 12),
            url: Text::with_capacity(n, 80),
            date_time: Vec::with_capacity(n),
            extra: extra.then(|| Text::with_capacity(n, 70)),
        }
    }

    fn push(&mut self, cfg: &Config, number: usize, now: Option<u64>) {
        let c = &cfg.c;
        let id = FIRST_EVENT_ID + number;
        let rng = &mut SmallRng::seed_from_u64(id as u64);
        let auction = if 0 < rng.gen_range(0..HOT_AUCTION_RATIO) {
            (cfg.last_auction(id) / HOT_BATCH) * HOT_BATCH
        } else {
            cfg.next_auction(id, rng)
        };
        let bidder = if 0 < rng.gen_range(0..HOT_BIDDER_RATIO) {
            (cfg.last_person(id) / HOT_BATCH) * HOT_BATCH + 1
        } else {
            cfg.next_person(id, rng)
        };
        self.auction.push((auction + FIRST_AUCTION_ID) as i64);
        self.bidder.push((bidder + FIRST_PERSON_ID) as i64);
        self.price.push(price(rng));
        if rng.gen_range(0..HOT_CHANNEL_RATIO) > 0 {
            let i = rng.gen_range(0..c.hot_channels.len());
            self.channel.push(&c.hot_channels[i]);
            self.url.push(&c.hot_urls[i]);
        } else if let Some((channel, url)) = CHANNEL_URLS.choose(rng) {
            self.channel.push(channel);
            self.url.push(url);
        }
        self.date_time
            .push(now.unwrap_or_else(|| cfg.timestamp(number)) as i64);
        if let Some(extra) = self.extra.as_mut() {
            let len = extra_len(rng, 8 + 8 + 8 + 8, AVG_BID_BYTE_SIZE);
            extra.letters(rng, len);
            extra.end();
        }
    }

    fn finish(self, out: &mut Vec<ArrayRef>) -> Result<()> {
        out.push(ints(self.auction));
        out.push(ints(self.bidder));
        out.push(ints(self.price));
        out.push(self.channel.finish()?);
        out.push(self.url.finish()?);
        out.push(times(self.date_time));
        if let Some(extra) = self.extra {
            out.push(extra.finish()?);
        }
        Ok(())
    }
}

struct Auctions {
    id: Vec<i64>,
    item_name: Text,
    description: Text,
    initial_bid: Vec<i64>,
    reserve: Vec<i64>,
    date_time: Vec<i64>,
    expires: Vec<i64>,
    seller: Vec<i64>,
    category: Vec<i64>,
    extra: Option<Text>,
}

impl Columns for Auctions {
    fn with_capacity(n: usize, extra: bool) -> Self {
        Self {
            id: Vec::with_capacity(n),
            item_name: Text::with_capacity(n, 20),
            description: Text::with_capacity(n, 100),
            initial_bid: Vec::with_capacity(n),
            reserve: Vec::with_capacity(n),
            date_time: Vec::with_capacity(n),
            expires: Vec::with_capacity(n),
            seller: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            extra: extra.then(|| Text::with_capacity(n, 340)),
        }
    }

    fn push(&mut self, cfg: &Config, number: usize, now: Option<u64>) {
        let id = FIRST_EVENT_ID + number;
        let rng = &mut SmallRng::seed_from_u64(id as u64);
        self.id
            .push((cfg.last_auction(id) + FIRST_AUCTION_ID) as i64);
        self.item_name.letters(rng, 20);
        self.item_name.end();
        self.description.letters(rng, 100);
        self.description.end();
        let initial_bid = price(rng);
        self.initial_bid.push(initial_bid);
        self.reserve.push(initial_bid + price(rng));
        // The auction's length: up to twice the time until `in_flight_auctions` more
        // auctions have started.
        let time = cfg.timestamp(number);
        let events_ahead = (IN_FLIGHT_AUCTIONS * DENOMINATOR) / AUCTION_PROPORTION;
        let horizon = cfg.timestamp(number + events_ahead) - time;
        let length = 1 + rng.gen_range(0..(horizon * 2).max(1));
        let time = now.unwrap_or(time);
        self.date_time.push(time as i64);
        self.expires.push((time + length) as i64);
        let seller = if rng.gen_range(0..HOT_SELLER_RATIO) > 0 {
            (cfg.last_person(id) / HOT_BATCH) * HOT_BATCH
        } else {
            cfg.next_person(id, rng)
        };
        self.seller.push((seller + FIRST_PERSON_ID) as i64);
        self.category
            .push((FIRST_CATEGORY_ID + rng.gen_range(0..NUM_CATEGORIES)) as i64);
        if let Some(extra) = self.extra.as_mut() {
            let size = 8 + 20 + 100 + 8 + 8 + 8 + 8 + 8;
            let len = extra_len(rng, size, AVG_AUCTION_BYTE_SIZE);
            extra.letters(rng, len);
            extra.end();
        }
    }

    fn finish(self, out: &mut Vec<ArrayRef>) -> Result<()> {
        out.push(ints(self.id));
        out.push(self.item_name.finish()?);
        out.push(self.description.finish()?);
        out.push(ints(self.initial_bid));
        out.push(ints(self.reserve));
        out.push(times(self.date_time));
        out.push(times(self.expires));
        out.push(ints(self.seller));
        out.push(ints(self.category));
        if let Some(extra) = self.extra {
            out.push(extra.finish()?);
        }
        Ok(())
    }
}

struct Persons {
    id: Vec<i64>,
    name: Text,
    email_address: Text,
    credit_card: Text,
    city: Text,
    state: Text,
    date_time: Vec<i64>,
    extra: Option<Text>,
}

impl Columns for Persons {
    fn with_capacity(n: usize, extra: bool) -> Self {
        Self {
            id: Vec::with_capacity(n),
            name: Text::with_capacity(n, 12),
            email_address: Text::with_capacity(n, 17),
            credit_card: Text::with_capacity(n, 19),
            city: Text::with_capacity(n, 10),
            state: Text::with_capacity(n, 2),
            date_time: Vec::with_capacity(n),
            extra: extra.then(|| Text::with_capacity(n, 140)),
        }
    }

    fn push(&mut self, cfg: &Config, number: usize, now: Option<u64>) {
        let c = &cfg.c;
        let id = FIRST_EVENT_ID + number;
        let rng = &mut SmallRng::seed_from_u64(id as u64);
        self.id.push((cfg.last_person(id) + FIRST_PERSON_ID) as i64);
        let start = self.name.bytes.len();
        if let Some(first) = c.first_names.choose(rng) {
            self.name.bytes.extend_from_slice(first.as_bytes());
        }
        self.name.bytes.push(b' ');
        if let Some(last) = c.last_names.choose(rng) {
            self.name.bytes.extend_from_slice(last.as_bytes());
        }
        let name_len = self.name.bytes.len() - start;
        self.name.end();
        let e = &mut self.email_address;
        e.letters(rng, 7);
        e.bytes.push(b'@');
        e.letters(rng, 5);
        e.bytes.extend_from_slice(b".com");
        e.end();
        let card = &mut self.credit_card;
        for group in 0..4 {
            if group > 0 {
                card.bytes.push(b' ');
            }
            // Four digits, zero-padded (`{:04}` of 0..10000 in the crate).
            let v: i32 = rng.gen_range(0..10000);
            card.bytes
                .extend([v / 1000, v / 100 % 10, v / 10 % 10, v % 10].map(|d| b'0' + d as u8));
        }
        card.end();
        let city = c.us_cities.choose(rng).map_or("", |s| s.as_str());
        let state = c.us_states.choose(rng).map_or("", |s| s.as_str());
        self.city.push(city);
        self.state.push(state);
        self.date_time
            .push(now.unwrap_or_else(|| cfg.timestamp(number)) as i64);
        if let Some(extra) = self.extra.as_mut() {
            let size = 8 + name_len + 17 + 19 + city.len() + state.len();
            let len = extra_len(rng, size, AVG_PERSON_BYTE_SIZE);
            extra.letters(rng, len);
            extra.end();
        }
    }

    fn finish(self, out: &mut Vec<ArrayRef>) -> Result<()> {
        out.push(ints(self.id));
        out.push(self.name.finish()?);
        out.push(self.email_address.finish()?);
        out.push(self.credit_card.finish()?);
        out.push(self.city.finish()?);
        out.push(self.state.finish()?);
        out.push(times(self.date_time));
        if let Some(extra) = self.extra {
            out.push(extra.finish()?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use nexmark::event::Event;
    use nexmark::EventGenerator;

    /// The crate's events of `table` from row `from`, as (column, value) pairs in
    /// [`columns`] order, rendered as text.
    fn crate_rows(table: EventType, from: u64, n: usize) -> Vec<Vec<String>> {
        EventGenerator::new(NexmarkConfig {
            base_time: BASE_TIME_MS,
            ..Default::default()
        })
        .with_type_filter(table)
        .with_offset(from)
        .take(n)
        .map(|e| match e {
            Event::Person(p) => vec![
                p.id.to_string(),
                p.name,
                p.email_address,
                p.credit_card,
                p.city,
                p.state,
                p.date_time.to_string(),
                p.extra,
            ],
            Event::Auction(a) => vec![
                a.id.to_string(),
                a.item_name,
                a.description,
                a.initial_bid.to_string(),
                a.reserve.to_string(),
                a.date_time.to_string(),
                a.expires.to_string(),
                a.seller.to_string(),
                a.category.to_string(),
                a.extra,
            ],
            Event::Bid(b) => vec![
                b.auction.to_string(),
                b.bidder.to_string(),
                b.price.to_string(),
                b.channel,
                b.url,
                b.date_time.to_string(),
                b.extra,
            ],
        })
        .collect()
    }

    fn text(a: &ArrayRef, row: usize) -> String {
        if let Some(s) = a.as_string_opt::<i32>() {
            s.value(row).to_string()
        } else if let Some(i) = a.as_primitive_opt::<Int64Type>() {
            i.value(row).to_string()
        } else {
            a.as_primitive::<TimestampMillisecondType>()
                .value(row)
                .to_string()
        }
    }

    fn same_as_the_crate(table: EventType, from: u64, n: usize) {
        let ours = generate(table, from, n, true, None).expect("generate");
        let names = columns(table);
        assert_eq!(ours.len(), names.len());
        for a in &ours {
            assert_eq!(a.len(), n);
            assert_eq!(a.null_count(), 0);
        }
        for (i, want) in crate_rows(table, from, n).into_iter().enumerate() {
            for (c, (name, want)) in names.iter().zip(want).enumerate() {
                let got = text(&ours[c], i);
                assert_eq!(got, want, "{table:?} row {} column {name}", from + i as u64);
            }
        }
    }

    #[test]
    fn every_table_equals_the_crate_from_the_start() {
        same_as_the_crate(EventType::Bid, 0, 20_000);
        same_as_the_crate(EventType::Auction, 0, 3_000);
        same_as_the_crate(EventType::Person, 0, 2_000);
    }

    #[test]
    fn every_table_equals_the_crate_far_into_the_stream() {
        // Past 2^24 events the crate's event times are rounded in f32; at 100M events
        // the people and auctions are long past the ids' warm-up.
        for from in [16_777_000, 92_000_000, 1_000_000_007] {
            same_as_the_crate(EventType::Bid, from, 3_000);
            same_as_the_crate(EventType::Auction, from / 15, 500);
            same_as_the_crate(EventType::Person, from / 46, 300);
        }
    }

    #[test]
    fn the_constants_are_the_crates_defaults() {
        let c = NexmarkConfig::default();
        assert_eq!(
            [
                PERSON_PROPORTION,
                AUCTION_PROPORTION,
                BID_PROPORTION,
                ACTIVE_PEOPLE,
                IN_FLIGHT_AUCTIONS,
                PERSON_ID_LEAD,
                AUCTION_ID_LEAD,
                FIRST_EVENT_ID,
                FIRST_EVENT_NUMBER,
                HOT_SELLER_RATIO,
                HOT_AUCTION_RATIO,
                HOT_BIDDER_RATIO,
                HOT_CHANNEL_RATIO,
                FIRST_AUCTION_ID,
                FIRST_PERSON_ID,
                FIRST_CATEGORY_ID,
                NUM_CATEGORIES,
                AVG_PERSON_BYTE_SIZE,
                AVG_AUCTION_BYTE_SIZE,
                AVG_BID_BYTE_SIZE,
            ],
            [
                c.person_proportion,
                c.auction_proportion,
                c.bid_proportion,
                c.active_people,
                c.in_flight_auctions,
                c.person_id_lead,
                c.auction_id_lead,
                c.first_event_id,
                c.first_event_number,
                c.hot_seller_ratio,
                c.hot_auction_ratio,
                c.hot_bidder_ratio,
                c.hot_channel_ratio,
                c.first_auction_id,
                c.first_person_id,
                c.first_category_id,
                c.num_categories,
                c.avg_person_byte_size,
                c.avg_auction_byte_size,
                c.avg_bid_byte_size,
            ]
        );
        assert_eq!(
            (c.first_rate, c.next_rate, c.num_event_generators),
            (10_000, 10_000, 1)
        );
    }

    #[test]
    fn letters_are_rands_own() {
        let (mut a, mut b) = (SmallRng::seed_from_u64(7), SmallRng::seed_from_u64(7));
        for _ in 0..1_000_000 {
            assert_eq!(letter(&mut a), b.gen_range(b'a'..=b'z'));
        }
    }

    #[test]
    fn without_extra_the_other_columns_are_the_same() {
        for table in [EventType::Bid, EventType::Auction, EventType::Person] {
            let all = generate(table, 1234, 500, true, None).expect("all");
            let some = generate(table, 1234, 500, false, None).expect("some");
            assert_eq!(some.len(), all.len() - 1);
            for (a, b) in some.iter().zip(&all) {
                assert_eq!(a.as_ref(), b.as_ref());
            }
        }
    }

    #[test]
    fn now_stamps_every_table_and_keeps_auction_lengths() {
        let now = BASE_TIME_MS + 1_000_000_000;
        let times = |a: &ArrayRef| -> Vec<i64> {
            a.as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec()
        };
        for table in [EventType::Bid, EventType::Auction, EventType::Person] {
            let own = generate(table, 5, 50, true, None).expect("own");
            let stamped = generate(table, 5, 50, true, Some(now)).expect("stamped");
            let at = columns(table)
                .iter()
                .position(|c| *c == "date_time")
                .expect("date_time");
            assert!(times(&stamped[at]).iter().all(|t| *t == now as i64));
            assert!(times(&own[at]).iter().all(|t| *t != now as i64));
            for (c, name) in columns(table).iter().enumerate() {
                if *name == "expires" {
                    let (o, s) = (times(&own[c]), times(&stamped[c]));
                    let (od, sd) = (times(&own[at]), times(&stamped[at]));
                    for i in 0..o.len() {
                        assert!(o[i] > od[i]);
                        assert_eq!(s[i] - sd[i], o[i] - od[i]);
                    }
                } else if kind(table, name) != Some(Kind::Time) {
                    assert_eq!(own[c].as_ref(), stamped[c].as_ref(), "{table:?} {name}");
                }
            }
        }
    }

    #[test]
    fn kinds_follow_the_columns() {
        assert_eq!(kind(EventType::Bid, "url"), Some(Kind::Text));
        assert_eq!(kind(EventType::Bid, "price"), Some(Kind::Int));
        assert_eq!(kind(EventType::Auction, "expires"), Some(Kind::Time));
        assert_eq!(kind(EventType::Person, "state"), Some(Kind::Text));
        assert_eq!(kind(EventType::Bid, "id"), None);
        for table in [EventType::Bid, EventType::Auction, EventType::Person] {
            assert_eq!(columns(table).last(), Some(&"extra"));
            let arrays = generate(table, 0, 3, true, None).expect("generate");
            for (name, a) in columns(table).iter().zip(&arrays) {
                let want = match kind(table, name) {
                    Some(Kind::Int) => datafusion::arrow::datatypes::DataType::Int64,
                    Some(Kind::Text) => datafusion::arrow::datatypes::DataType::Utf8,
                    Some(Kind::Time) => datafusion::arrow::datatypes::DataType::Timestamp(
                        datafusion::arrow::datatypes::TimeUnit::Millisecond,
                        None,
                    ),
                    None => panic!("{name} has no kind"),
                };
                assert_eq!(a.data_type(), &want, "{table:?} {name}");
            }
        }
    }
}
