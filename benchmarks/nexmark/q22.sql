-- q22: get URL directories. Every bid with the first three directories of its URL.
--
-- Reference: RisingWave's q22 (split_part(url, '/', 4..6)); Flink's uses
-- SPLIT_INDEX(url, '/', 3..5), which counts from 0.
-- eddy's form: the same query.

CREATE MATERIALIZED VIEW q22 AS
SELECT auction, bidder, price, channel,
       split_part(url, '/', 4) AS dir1,
       split_part(url, '/', 5) AS dir2,
       split_part(url, '/', 6) AS dir3
FROM bid;
