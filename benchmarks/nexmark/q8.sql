-- q8: monitor new users. People who registered and opened an auction in the same
-- 10-second tumbling window: a windowed stream-stream join.
--
-- Reference: RisingWave's q8 (Flink's is the same with TUMBLE in GROUP BY).
-- eddy's form: the same query. eddy has no time-bounded join: the join keeps every
-- window's groups (state grows with the streams; see docs/sql.md, "Windows").

CREATE MATERIALIZED VIEW q8 AS
SELECT P.id, P.name, P.starttime
FROM (
    SELECT id, name, window_start AS starttime, window_end AS endtime
    FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
    GROUP BY id, name, window_start, window_end
) P
JOIN (
    SELECT seller, window_start AS starttime, window_end AS endtime
    FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
    GROUP BY seller, window_start, window_end
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime;
