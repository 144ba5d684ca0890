-- q20: expand bid with auction. Every bid on an auction of category 10, with the
-- auction's columns: a stream-stream join with a filter on one side.
--
-- Reference: Flink's and RisingWave's q20 (the same query).
-- eddy's form: the same query (with `A.`/`B.` on every column; the column names are
-- eddy's snake_case ones).

CREATE MATERIALIZED VIEW q20 AS
SELECT B.auction, B.bidder, B.price, B.channel, B.url,
       B.date_time AS bid_date_time, B.extra AS bid_extra,
       A.item_name, A.description, A.initial_bid, A.reserve,
       A.date_time AS auction_date_time, A.expires, A.seller, A.category,
       A.extra AS auction_extra
FROM bid AS B
INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10;
