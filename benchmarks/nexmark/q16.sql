-- q16: channel statistics report. q15's report per (channel, day), with the latest
-- minute of the day that had a bid.
--
-- Reference: Flink's and RisingWave's q16 (the same query).
-- eddy's form: the same aggregates; the day is CAST(date_time AS DATE) and the minute is
-- CAST(date_trunc('minute', max(date_time)) AS TIME) instead of
-- max(DATE_FORMAT(dateTime, 'HH:mm')) (the same value, typed; see q10.sql for why not
-- to_char).

CREATE MATERIALIZED VIEW q16 AS
SELECT channel,
       CAST(date_time AS DATE) AS day,
       CAST(date_trunc('minute', max(date_time)) AS TIME) AS minute,
       count(*) AS total_bids,
       count(*) FILTER (WHERE price < 10000) AS rank1_bids,
       count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       count(DISTINCT bidder) AS total_bidders,
       count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
       count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
       count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
       count(DISTINCT auction) AS total_auctions,
       count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
       count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
       count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions
FROM bid
GROUP BY channel, CAST(date_time AS DATE);
