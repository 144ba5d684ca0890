-- q1: currency conversion. Every bid with its price converted from dollars to euros.
--
-- Reference: Flink's q1 (auction, bidder, 0.908 * price, dateTime, extra); RisingWave's
-- drops `extra`.
-- eddy's form: the same query. `0.908` is an exact numeric literal (as in Postgres), so
-- `price` is numeric (Flink: DECIMAL(23, 3)).

CREATE MATERIALIZED VIEW q1 AS
SELECT auction, bidder, 0.908 * price AS price, date_time, extra
FROM bid;
