-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- Result column names follow Postgres: an unnamed expression is "?column?",
-- a function call is named after the function, a cast after the cast source.
\timing off
CREATE TABLE cn_t (k INT PRIMARY KEY, v TEXT);
INSERT INTO cn_t VALUES (1, 'a'), (2, 'b');
SELECT 1;
SELECT count(*) FROM cn_t;
SELECT max(k), upper(v) FROM cn_t GROUP BY v ORDER BY 1;
SELECT k::text FROM cn_t ORDER BY 1;
SELECT true, 'x';
