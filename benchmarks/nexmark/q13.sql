-- q13: bounded side input join. Every bid with the value of a static side-input table
-- (side_input, created in schema.sql) keyed by mod(auction, 10000).
--
-- Reference: Flink's q13 (RisingWave's is the same):
--   FROM (SELECT *, PROCTIME() AS p_time FROM bid) B
--   JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON mod(B.auction, 10000) = S.key
-- eddy's form: a lookup join, `side_input FOR SYSTEM_TIME AS OF PROCTIME()` (RisingWave's
-- spelling): each bid meets side_input as it is when the bid arrives, and only
-- side_input is kept in the join's state.

CREATE MATERIALIZED VIEW q13 AS
SELECT B.auction, B.bidder, B.price, B.date_time, S.value
FROM bid B
JOIN side_input FOR SYSTEM_TIME AS OF PROCTIME() S ON mod(B.auction, 10000) = S.key;
