-- q0: passthrough. Every bid, projected to the columns the references emit; measures the
-- cost of ingesting and materializing a stream with no computation.
--
-- Reference: Flink's q0 (auction, bidder, price, dateTime, extra). RisingWave's q0 drops
-- `extra`; eddy follows Flink, whose figures NEXMARK.md compares against, so each row
-- carries the `extra` string (67 bytes on average in the generator's first bids).
-- eddy's form: the same query.

CREATE MATERIALIZED VIEW q0 AS
SELECT auction, bidder, price, date_time, extra
FROM bid;
