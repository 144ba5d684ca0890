-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- Numeric literals are exact (not read through float8), and a value too large for
-- numeric(p,s) fails with 22003 numeric_value_out_of_range.
\set VERBOSITY verbose
SELECT 1.1::numeric(20,18) AS a, 12345678901234567890.123::numeric(30,3) AS b;
CREATE TABLE num_t (k INT PRIMARY KEY, n NUMERIC(30,3), small NUMERIC(5,2));
INSERT INTO num_t VALUES (1, 12345678901234567890.123, 1.5);
INSERT INTO num_t VALUES (2, 0.001, 12345.678);
SELECT k, n, small FROM num_t ORDER BY k;
SELECT sum(n) AS total FROM num_t;
