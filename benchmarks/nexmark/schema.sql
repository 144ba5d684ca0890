-- Nexmark input for the queries in this directory: three streams fed by eddy's built-in
-- generator, plus the side-input table of q13.
--
-- Placeholders: the harness replaces each placeholder below (a name in double braces)
-- textually before running the file; see README.md, "Running". The comments name them
-- without braces so that a substitution leaves the comments alone:
--
--   bid_events, auction_events, person_events
--       rows each stream generates before it stops (max_events). For a run of N Nexmark
--       events keep the generator's mix (bid 92 %, auction 6 %, person 2 %): N*92/100,
--       N*6/100, N*2/100. The three streams then cover the same span of event time.
--   bid_rate, auction_rate, person_rate
--       rows per second of each stream (event_rate); 0 = as fast as eddy applies them
--       (throughput runs). For an open-loop run at R events/s: R*92/100, R*6/100,
--       R*2/100.
--   real_time
--       false: the events' own times (below); true: each event is stamped with the wall
--       clock when it is generated (use_real_time), for measuring freshness.
--
-- Columns are the generator's (src/connector/nexmark/generator.rs). Times are the
-- events' own: 10,000 events per second of event time from 2023-11-14 22:13:20 UTC,
-- whatever the rate.

CREATE STREAM bid (
    auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, url TEXT,
    date_time TIMESTAMP, extra TEXT,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
    WITH (connector = 'nexmark', table = 'bid',
          event_rate = {{bid_rate}}, use_real_time = {{real_time}},
          max_events = {{bid_events}});

CREATE STREAM auction (
    id BIGINT, item_name TEXT, description TEXT, initial_bid BIGINT, reserve BIGINT,
    date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra TEXT,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
    WITH (connector = 'nexmark', table = 'auction',
          event_rate = {{auction_rate}}, use_real_time = {{real_time}},
          max_events = {{auction_events}});

CREATE STREAM person (
    id BIGINT, name TEXT, email_address TEXT, credit_card TEXT, city TEXT, state TEXT,
    date_time TIMESTAMP, extra TEXT,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
    WITH (connector = 'nexmark', table = 'person',
          event_rate = {{person_rate}}, use_real_time = {{real_time}},
          max_events = {{person_events}});

-- q13's side input: 10,000 keys, key k has value k as text (Flink's and RisingWave's
-- side input has the same shape; q13 joins it on mod(auction, 10000)).
CREATE TABLE side_input (key BIGINT PRIMARY KEY, value TEXT);
INSERT INTO side_input SELECT v, CAST(v AS TEXT) FROM generate_series(0, 9999) AS s(v);
