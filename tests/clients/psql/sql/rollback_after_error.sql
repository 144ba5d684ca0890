-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- A write made before an error in a transaction block is kept (eddy applies each
-- statement at once). The ROLLBACK that ends the block must say so with the same
-- WARNING as a ROLLBACK after writes without an error.
\set VERBOSITY verbose
CREATE TABLE rbe_t (k INT PRIMARY KEY, v TEXT);
BEGIN;
INSERT INTO rbe_t VALUES (1, 'written before the error');
SELECT 1 / 0 AS boom;
ROLLBACK;
SELECT * FROM rbe_t ORDER BY k;
