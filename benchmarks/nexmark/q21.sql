-- q21: add channel id. Bids from a known channel or whose URL carries a channel_id, with
-- the channel's id: a CASE and a regular expression per row.
--
-- Reference: RisingWave's q21 (Flink's is the same with REGEXP_EXTRACT(url, ..., 2)).
-- eddy's form: the same query. regexp_match returns the array of groups, and [2] is the
-- second group, as in Postgres (and RisingWave).

CREATE MATERIALIZED VIEW q21 AS
SELECT auction, bidder, price, channel,
       CASE
           WHEN lower(channel) = 'apple' THEN '0'
           WHEN lower(channel) = 'google' THEN '1'
           WHEN lower(channel) = 'facebook' THEN '2'
           WHEN lower(channel) = 'baidu' THEN '3'
           ELSE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2]
       END AS channel_id
FROM bid
WHERE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] IS NOT NULL
   OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu');
