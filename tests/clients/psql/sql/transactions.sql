-- BEGIN/COMMIT/ROLLBACK are accepted; statements apply immediately.
\timing off
\set VERBOSITY verbose
CREATE TABLE tx_t (k INT PRIMARY KEY, v TEXT);
BEGIN;
INSERT INTO tx_t VALUES (1, 'committed');
COMMIT;
BEGIN;
SELECT count(*) AS n FROM tx_t;
ROLLBACK;
-- ROLLBACK after writes warns and keeps them
BEGIN;
INSERT INTO tx_t VALUES (2, 'kept');
ROLLBACK;
SELECT * FROM tx_t ORDER BY k;
-- an error aborts the block until ROLLBACK/COMMIT (25P02)
BEGIN;
SELECT count(*) AS n FROM tx_t;
SELECT * FROM tx_nope;
SELECT 1 AS ignored;
INSERT INTO tx_t VALUES (4, 'ignored');
ROLLBACK;
SELECT * FROM tx_t ORDER BY k;
BEGIN;
SELECT 1 / 0 AS boom;
COMMIT;
SELECT 'usable again' AS state;
-- session variables (values only: header spellings are not the point here)
\pset tuples_only on
SET application_name = 'eddy-psql-suite';
SHOW application_name;
SHOW server_version;
SHOW TIME ZONE;
SET TIME ZONE 'UTC';
SHOW TIME ZONE;
SHOW DateStyle;
SHOW client_encoding;
