-- q18: find last bid. The latest bid of each (bidder, auction) pair: deduplication.
--
-- Reference: Flink's and RisingWave's q18 — the same query.
-- eddy plans `ROW_NUMBER() OVER (...) <= n` as a top-N per partition; over a stream it
-- keeps only each pair's current top row. Ties on date_time (the generator makes 10
-- events per millisecond) are broken by the rows' other columns, in column order, so
-- the result is deterministic (the reference picks one arbitrarily).

CREATE MATERIALIZED VIEW q18 AS
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction
                                   ORDER BY date_time DESC) AS rank_number
      FROM bid) t
WHERE rank_number <= 1;
