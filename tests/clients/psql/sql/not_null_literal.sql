-- Regression test for a fixed bug; the expected output is what Postgres prints.
-- An explicit NULL literal for a NOT NULL / PRIMARY KEY column must fail with
-- SQLSTATE 23502 (not_null_violation), as it does when the column is left out.
\set VERBOSITY verbose
CREATE TABLE nn_t (k INT PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO nn_t VALUES (1, NULL);
INSERT INTO nn_t VALUES (NULL, 'x');
INSERT INTO nn_t VALUES (2, 'ok'), (3, NULL);
SELECT * FROM nn_t ORDER BY k;
