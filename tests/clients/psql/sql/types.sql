-- Text output of every supported type follows Postgres formatting.
\timing off
\pset null '(null)'
CREATE TABLE ty (
  k INT PRIMARY KEY, b BOOLEAN, si SMALLINT, bi BIGINT, r REAL, d DOUBLE PRECISION,
  n NUMERIC(5,2), t TEXT, vc VARCHAR(10), dt DATE, ts TIMESTAMP, tz TIMESTAMPTZ,
  iv INTERVAL, by BYTEA);
DESCRIBE ty;
INSERT INTO ty VALUES
  (1, true, 12, 9000000000, 1.5, 1e20, 1.5, 'hello', 'vc', '2024-01-01',
   '2024-01-01 10:00:00', '2024-01-01 10:00:00+02', '1 day 2 hours', decode('deadbeef', 'hex')),
  (2, false, -32768, -9223372036854775808, -0.25, 0.1, -999.99, '', 'ünïcödé', '1999-12-31',
   '1999-12-31 23:59:59.5', '2000-01-01 00:00:00+00', '3 months', decode('', 'hex')),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT * FROM ty ORDER BY k;
\x on
SELECT * FROM ty WHERE k = 1;
\x off
SELECT true AS t, false AS f, NULL::boolean AS n;
SELECT 1.5::real AS r, 1e20::float8 AS big, 1e-5::float8 AS small, 0.1::float8 AS tenth,
       123456789.125::float8 AS mid, 'NaN'::float8 AS nan, -2.5::float8 AS neg;
SELECT 1.5::numeric(5,2) AS a, 2::numeric(5,2) AS b, -0.5::numeric(4,3) AS c, 3.14159::numeric(10,3) AS d;
SELECT DATE '2024-02-29' AS d, TIMESTAMP '2024-01-01 10:00:00.123456' AS ts,
       TIMESTAMPTZ '2024-06-30 23:00:00-05' AS tz;
SELECT INTERVAL '1 day 2 hours' AS a, INTERVAL '3 months' AS b, INTERVAL '-90 minutes' AS c,
       INTERVAL '1 year 2 months 3 days 4 hours 5 minutes 6.789 seconds' AS d, INTERVAL '0 seconds' AS e;
SELECT decode('00ff10', 'hex') AS bytes, 'it''s' AS quote, E'tab\there' AS esc;
SELECT 9223372036854775807::bigint AS maxbig, 2147483647 AS maxint, 32767::smallint AS maxsmall;
-- arithmetic on the columns keeps types
SELECT k, si + 1 AS si1, bi / 2 AS half, n * 2 AS n2, dt + 1 AS tomorrow, ts + iv AS later
  FROM ty WHERE k = 1;
