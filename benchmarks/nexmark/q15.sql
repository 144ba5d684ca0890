-- q15: bidding statistics report. Per day: bids, distinct bidders and distinct auctions,
-- overall and in three price ranks (FILTER).
--
-- Reference: Flink's and RisingWave's q15 (the same query).
-- eddy's form: the same aggregates, grouped by CAST(date_time AS DATE) (a `date`)
-- instead of DATE_FORMAT / TO_CHAR(date_time, 'YYYY-MM-DD') (text): eddy's to_char
-- does not take Postgres templates (see q10.sql).

CREATE MATERIALIZED VIEW q15 AS
SELECT CAST(date_time AS DATE) AS day,
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
GROUP BY CAST(date_time AS DATE);
