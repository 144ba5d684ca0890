-- q2: selection. The bids on every 123rd auction.
--
-- Reference: Flink's q2 (WHERE MOD(auction, 123) = 0). RisingWave's q2 lists five
-- auction ids instead (1007, 1020, 2001, 2019, 2087); Flink's predicate keeps a fixed
-- fraction of the bids at any scale, so eddy follows it.
-- eddy's form: the same query (`mod` is a function eddy adds; `auction % 123` is the
-- same).

CREATE MATERIALIZED VIEW q2 AS
SELECT auction, price
FROM bid
WHERE mod(auction, 123) = 0;
