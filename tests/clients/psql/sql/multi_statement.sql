-- Several statements in one Query message (psql sends `a \; b` as one string).
\timing off
CREATE TABLE ms_t (k INT PRIMARY KEY, v TEXT) \; INSERT INTO ms_t VALUES (1, 'a'), (2, 'b') \; SELECT count(*) AS n FROM ms_t;
SELECT 1 AS a \; SELECT 'two' AS b \; SELECT k, v FROM ms_t ORDER BY k;
-- an error stops the rest of the string; statements before it are already applied
\set VERBOSITY verbose
INSERT INTO ms_t VALUES (3, 'c') \; SELECT 1 / 0 AS boom \; INSERT INTO ms_t VALUES (4, 'd');
SELECT k, v FROM ms_t ORDER BY k;
-- a transaction block inside one string
BEGIN \; INSERT INTO ms_t VALUES (5, 'e') \; COMMIT;
SELECT k, v FROM ms_t ORDER BY k;
-- statements on one line without \; are sent one by one
SELECT 'x' AS first; SELECT 'y' AS second;
