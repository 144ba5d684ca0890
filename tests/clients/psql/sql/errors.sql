-- Errors: message, SQLSTATE (VERBOSITY verbose) and the LINE/caret position marker.
\set VERBOSITY verbose
CREATE TABLE err_t (k INT PRIMARY KEY, v TEXT NOT NULL, s SMALLINT, vc VARCHAR(3));
INSERT INTO err_t VALUES (1, 'one', 1, 'abc');
CREATE STREAM err_s (a INT, b TEXT);
CREATE MATERIALIZED VIEW err_mv AS SELECT count(*) AS n FROM err_t;
-- syntax errors (42601) with a position
SELEC 1;
SELECT 1 +;
SELECT k FROM err_t WHERE;
-- unknown table (42P01), also on a later line
SELECT * FROM err_nope;
SELECT k
  FROM
    err_nope;
-- unknown column (42703)
SELECT nocol FROM err_t;
-- duplicate primary key (23505)
INSERT INTO err_t VALUES (1, 'again', 1, 'x');
-- NOT NULL (23502): a column left out, and an UPDATE to NULL
INSERT INTO err_t (k) VALUES (2);
UPDATE err_t SET v = NULL WHERE k = 1;
-- bad values: 22P02, 22003, 22001
INSERT INTO err_t VALUES ('abc', 'x', 1, 'x');
INSERT INTO err_t VALUES (3, 'x', 99999, 'x');
INSERT INTO err_t VALUES (4, 'x', 1, 'toolong');
-- division by zero (22012)
SELECT 1 / 0 AS x;
SELECT k / (k - 1) AS x FROM err_t;
-- streams are append-only (42809)
UPDATE err_s SET a = 1;
DELETE FROM err_s;
-- dependent objects (2BP01) and duplicates (42P07)
DROP TABLE err_t;
CREATE TABLE err_t (k INT PRIMARY KEY);
-- unsupported (0A000)
SET TIME ZONE 'Europe/Paris';
-- other verbosity levels
\set VERBOSITY default
SELECT * FROM err_nope;
\set VERBOSITY terse
SELECT * FROM err_nope;
\set VERBOSITY verbose
-- nothing above changed the data
SELECT * FROM err_t ORDER BY k;
SELECT * FROM err_mv;
