-- q10: log to file system. Every bid with its day and hour:minute, which Flink uses as
-- the partitions of a file sink (PARTITIONED BY (dt, hm)).
--
-- Reference: Flink's q10 (DATE_FORMAT(dateTime, 'yyyy-MM-dd'), DATE_FORMAT(dateTime,
-- 'HH:mm')); RisingWave's uses TO_CHAR(date_time, 'YYYY-MM-DD') and 'HH:MI'.
-- eddy's form: the view only: eddy has no file sink (a Kafka sink, CREATE SINK ... FROM
-- q10, can write it out). The day and minute are typed, `date` and `time` (22:13:00
-- for Flink's '22:13'), rather than text: eddy's to_char does not take Postgres
-- templates (to_char(ts, 'YYYY-MM-DD') returns 'YYYY-MM-DD'; a known bug, see
-- sql-tests/pending/datetime_functions.slt), and the casts mean the same in Postgres.

CREATE MATERIALIZED VIEW q10 AS
SELECT auction, bidder, price, date_time, extra,
       CAST(date_time AS DATE) AS dt,
       CAST(date_trunc('minute', date_time) AS TIME) AS hm
FROM bid;
