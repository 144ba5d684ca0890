-- q9: winning bids. Each auction with its winning bid: the highest bid made while the
-- auction was open, the earliest one if several have that price.
--
-- Reference: Flink's q9 (RisingWave's is the same without bid_extra):
--   SELECT ... FROM (SELECT A.*, B.auction, B.bidder, B.price, B.dateTime AS bid_dateTime,
--     B.extra AS bid_extra, ROW_NUMBER() OVER (PARTITION BY A.id
--     ORDER BY B.price DESC, B.dateTime ASC) AS rownum
--   FROM auction A, bid B WHERE A.id = B.auction
--     AND B.dateTime BETWEEN A.dateTime AND A.expires) WHERE rownum <= 1
-- eddy's form: a rewrite, because window functions (OVER) are refused in views. The
-- in-range bids (in_range) are reduced to the top price per auction (top_price), then
-- to the earliest time of a bid at that price (first_at), and joined back. This is the
-- reference with RANK() instead of ROW_NUMBER(): if two in-range bids of an auction
-- share both the top price and the earliest time, both come out (the reference keeps
-- one of them, arbitrarily). Cost: eddy does not share the CTE, so the auction-bid join
-- is kept three times.

CREATE MATERIALIZED VIEW q9 AS
WITH in_range AS (
    SELECT A.id, A.item_name, A.description, A.initial_bid, A.reserve, A.date_time,
           A.expires, A.seller, A.category, A.extra,
           B.auction, B.bidder, B.price, B.date_time AS bid_date_time, B.extra AS bid_extra
    FROM auction A
    JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
),
top_price AS (
    SELECT id, max(price) AS price FROM in_range GROUP BY id
),
first_at AS (
    SELECT r.id, r.price, min(r.bid_date_time) AS bid_date_time
    FROM in_range r JOIN top_price t ON r.id = t.id AND r.price = t.price
    GROUP BY r.id, r.price
)
SELECT r.id, r.item_name, r.description, r.initial_bid, r.reserve, r.date_time,
       r.expires, r.seller, r.category, r.extra,
       r.auction, r.bidder, r.price, r.bid_date_time, r.bid_extra
FROM in_range r
JOIN first_at f
  ON r.id = f.id AND r.price = f.price AND r.bid_date_time = f.bid_date_time;
