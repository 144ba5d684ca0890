-- q5: hot items. For each 10-second window starting every 2 seconds, the auction(s) with
-- the most bids in that window.
--
-- Reference: RisingWave's q5 (Flink's is the same with HOP in GROUP BY): count bids per
-- (auction, window), take the maximum count per window, and join the counts back to it.
-- eddy's form: the same query. eddy's HOP(relation, time_column, slide, size) takes the
-- same arguments as RisingWave's. Each bid falls into 5 windows. Ties all come out, as
-- in the reference (`num >= maxn`). The count per (auction, window) is written twice,
-- as in the reference; eddy computes it once and feeds both sides of the join from it
-- (EXPLAIN q5 shows the shared HashAggOperator once).

CREATE MATERIALIZED VIEW q5 AS
SELECT AuctionBids.auction, AuctionBids.num
FROM (
    SELECT bid.auction, count(*) AS num, window_start AS starttime
    FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
    GROUP BY bid.auction, window_start
) AS AuctionBids
JOIN (
    SELECT max(CountBids.num) AS maxn, CountBids.starttime_c
    FROM (
        SELECT count(*) AS num, window_start AS starttime_c
        FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
        GROUP BY bid.auction, window_start
    ) AS CountBids
    GROUP BY CountBids.starttime_c
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn;
