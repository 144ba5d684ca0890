-- q7: highest bid. For each 10-second tumbling window, the bid(s) with the highest
-- price.
--
-- Reference: Flink's q7 (RisingWave's is the same with TUMBLE in FROM):
--   SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra FROM bid B
--   JOIN (SELECT MAX(price) AS maxprice, TUMBLE_END(dateTime, INTERVAL '10' SECOND)
--         AS dateTime FROM bid GROUP BY TUMBLE(dateTime, INTERVAL '10' SECOND)) B1
--   ON B.price = B1.maxprice
--   WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime
-- eddy's form: the windowed maximum joined back to the windowed bids on (window_start,
-- price) instead of on price with a BETWEEN on the times: the join key then covers the
-- window, so a bid is only ever matched with its own window's maximum (an equi-join
-- eddy's hash join serves by key). Difference: BETWEEN includes both ends, so in the
-- reference a bid made exactly at a window's end (which belongs to the next window) is
-- also reported for the earlier window if its price equals that window's maximum; here
-- each bid is compared with its own window only. Ties all come out, as in the
-- reference.

CREATE MATERIALIZED VIEW q7 AS
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) AS B
JOIN (
    SELECT window_start, max(price) AS maxprice
    FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
    GROUP BY window_start
) AS B1
ON B.window_start = B1.window_start AND B.price = B1.maxprice;
