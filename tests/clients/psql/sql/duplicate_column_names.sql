-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- Postgres allows several result columns with the same name.
\set VERBOSITY verbose
CREATE TABLE dup_t (k INT PRIMARY KEY, v TEXT);
INSERT INTO dup_t VALUES (1, 'a');
SELECT 1 AS a, 2 AS a;
SELECT k, k FROM dup_t;
SELECT v AS x, upper(v) AS x FROM dup_t;
