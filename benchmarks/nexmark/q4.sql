-- q4: average closing price per category. The closing price of an auction is its highest
-- bid made while it was open (between its date_time and expires); q4 averages the
-- closing prices of each category's auctions.
--
-- Reference: Flink's and RisingWave's q4 (the same query).
-- eddy's form: the same query, with the join written as JOIN ... ON. Like the references
-- it counts an auction as soon as it has a bid in range, not only once it has expired
-- (a view follows its input: the average changes as bids arrive). `avg` of bigint is
-- double precision in eddy (numeric in Postgres).

CREATE MATERIALIZED VIEW q4 AS
SELECT Q.category, avg(Q.final) AS avg
FROM (
    SELECT max(B.price) AS final, A.category
    FROM auction A
    JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
