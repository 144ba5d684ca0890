-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- Interval input accepts Postgres' own output format ('1 day 02:00:00') and
-- a bare time ('02:00:00'); otherwise a value eddy prints cannot be read back.
\set VERBOSITY verbose
SELECT INTERVAL '02:00:00' AS a, INTERVAL '1 day 02:00:00' AS b, INTERVAL '-01:30:00' AS c,
       INTERVAL '1 year 2 mons 3 days 04:05:06.789' AS d;
CREATE TABLE iv_t (k INT PRIMARY KEY, iv INTERVAL);
INSERT INTO iv_t VALUES (1, '1 day 2 hours');
INSERT INTO iv_t SELECT 2, CAST(CAST(iv AS TEXT) AS INTERVAL) FROM iv_t WHERE k = 1;
SELECT k, iv FROM iv_t ORDER BY k;
