-- A view that joins streams keeps every row of each (joins are fully incremental):
-- eddy accepts it and says so with one WARNING per stream. A view over a stream
-- without a join gets none.
CREATE STREAM sj_a (k INT, v INT);
CREATE STREAM sj_b (k INT, w INT);
CREATE TABLE sj_t (k INT PRIMARY KEY, name TEXT);
CREATE MATERIALIZED VIEW sj_ab AS SELECT sj_a.k, v, w FROM sj_a JOIN sj_b ON sj_a.k = sj_b.k;
CREATE MATERIALIZED VIEW sj_at AS SELECT sj_a.k, v, name FROM sj_a JOIN sj_t ON sj_a.k = sj_t.k;
INSERT INTO sj_a VALUES (1, 10), (2, 20);
INSERT INTO sj_b VALUES (1, 100);
INSERT INTO sj_t VALUES (2, 'two');
SELECT * FROM sj_ab;
SELECT * FROM sj_at;
CREATE MATERIALIZED VIEW sj_count AS SELECT k, count(*) AS n FROM sj_a GROUP BY k;
-- A lookup join keeps only the table (no warning): each sj_a row meets sj_t as it is
-- when the row arrives, and is never revised.
CREATE MATERIALIZED VIEW sj_lookup AS SELECT sj_a.k, v, name FROM sj_a JOIN sj_t FOR SYSTEM_TIME AS OF PROCTIME() ON sj_a.k = sj_t.k;
UPDATE sj_t SET name = 'TWO' WHERE k = 2;
INSERT INTO sj_a VALUES (2, 21);
SELECT * FROM sj_lookup ORDER BY v;
