-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- bytea text input uses Postgres' hex format: '\xdeadbeef' is four bytes.
\timing off
SELECT '\xdeadbeef'::bytea AS hex, '\x'::bytea AS empty, decode('deadbeef', 'hex') AS decoded;
SELECT length('\xdeadbeef'::bytea) AS len;
CREATE TABLE by_t (k INT PRIMARY KEY, b BYTEA);
INSERT INTO by_t VALUES (1, '\x0001ff');
SELECT k, b, length(b) AS len FROM by_t;
SELECT k FROM by_t WHERE b = decode('0001ff', 'hex');
