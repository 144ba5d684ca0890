-- q17: auction statistics report. Per (auction, day): bids per price rank and min, max,
-- average and total price.
--
-- Reference: Flink's and RisingWave's q17 (the same query).
-- eddy's form: the same aggregates, grouped by CAST(date_time AS DATE) instead of
-- DATE_FORMAT / TO_CHAR (see q10.sql). avg(price) is double precision in eddy (Flink:
-- BIGINT, Postgres: numeric).

CREATE MATERIALIZED VIEW q17 AS
SELECT auction,
       CAST(date_time AS DATE) AS day,
       count(*) AS total_bids,
       count(*) FILTER (WHERE price < 10000) AS rank1_bids,
       count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       min(price) AS min_price,
       max(price) AS max_price,
       avg(price) AS avg_price,
       sum(price) AS sum_price
FROM bid
GROUP BY auction, CAST(date_time AS DATE);
