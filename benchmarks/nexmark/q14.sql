-- q14: calculation. Bids in a price range, converted to euros, with the time of day as
-- a category and the number of 'c's in `extra` (a user-defined function in the
-- references).
--
-- Reference: Flink's q14 (RisingWave's is the same without `extra`).
-- eddy's form: the same query with the UDF count_char(extra, 'c') inlined as
-- length(extra) - length(replace(extra, 'c', '')) (RisingWave's SQL UDF body; eddy has
-- no CREATE FUNCTION), and HOUR(dateTime) as extract(hour from date_time).

CREATE MATERIALIZED VIEW q14 AS
SELECT auction, bidder, 0.908 * price AS price,
       CASE
           WHEN extract(hour from date_time) >= 8 AND extract(hour from date_time) <= 18
               THEN 'dayTime'
           WHEN extract(hour from date_time) <= 6 OR extract(hour from date_time) >= 20
               THEN 'nightTime'
           ELSE 'otherTime'
       END AS bid_time_type,
       date_time, extra,
       length(extra) - length(replace(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
