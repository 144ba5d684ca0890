-- psql client-side features that only need the simple query protocol.
\timing on
SELECT 1 AS one;
\timing off
\set n 5
SELECT :n + 1 AS six, :'n' AS quoted;
SELECT 42 AS answer, 'hi' AS greeting \gset
\echo :answer :greeting
SELECT 1 AS a, 'x' AS b \gx
\pset format unaligned
SELECT 1 AS a, 'x' AS b;
\pset format csv
SELECT 1 AS a, 'x,y' AS b, NULL::text AS c;
\pset format aligned
\pset null '(null)'
SELECT NULL::int AS n, '' AS empty;
\pset null ''
\pset tuples_only on
SELECT 'only the value' AS v;
\pset tuples_only off
CREATE TABLE pf_t (k INT PRIMARY KEY, v TEXT);
INSERT INTO pf_t VALUES (1, 'a'), (2, 'b'), (3, 'c');
SELECT count(*) AS cnt, count(*) > 0 AS nonempty FROM pf_t \gset
\echo rows: :cnt
\if :nonempty
\echo the table is not empty
\endif
SELECT k, v FROM pf_t ORDER BY k DESC \g
