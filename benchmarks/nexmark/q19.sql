-- q19: auction top-N. The 10 highest bids of each auction, with their rank.
--
-- Reference: Flink's and RisingWave's q19 — the same query.
-- eddy plans `ROW_NUMBER() OVER (...) <= n` as a top-N per partition that numbers its
-- rows; over a stream it keeps only the 10 best bids of each auction. Ties on price are
-- broken by the rows' other columns, in column order (deterministic; the reference
-- picks arbitrarily).

CREATE MATERIALIZED VIEW q19 AS
SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction
                                            ORDER BY price DESC) AS rank_number
               FROM bid) t
WHERE rank_number <= 10;
