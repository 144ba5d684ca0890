-- q11: user sessions. How many bids each bidder makes per session, a session ending
-- after 10 seconds without a bid from that bidder.
--
-- Reference: Flink's q11:
--   SELECT B.bidder, count(*) AS bid_count,
--          SESSION_START(B.dateTime, INTERVAL '10' SECOND) AS starttime,
--          SESSION_END(B.dateTime, INTERVAL '10' SECOND) AS endtime
--   FROM bid B GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND)
-- eddy's form: the window table function in FROM (as TUMBLE/HOP), sessions per GROUP BY
-- key; window_start/window_end are the session's first event and last event + gap.

CREATE MATERIALIZED VIEW q11 AS
SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM SESSION(bid, date_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end;
