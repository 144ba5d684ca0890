-- Streams are append-only; views over them update as rows arrive.
\timing off
\set VERBOSITY verbose
CREATE STREAM st_clicks (user_id INT, page TEXT, ms BIGINT);
SHOW STREAMS;
DESCRIBE st_clicks;
CREATE MATERIALIZED VIEW st_per_page AS
  SELECT page, count(*) AS hits, sum(ms) AS total_ms FROM st_clicks GROUP BY page;
SELECT * FROM st_per_page ORDER BY page;
INSERT INTO st_clicks VALUES (1, '/home', 10), (2, '/home', 30), (1, '/about', 5);
SELECT * FROM st_per_page ORDER BY page;
INSERT INTO st_clicks SELECT user_id + 10, page, ms * 2 FROM st_clicks WHERE page = '/about';
SELECT * FROM st_per_page ORDER BY page;
SELECT user_id, page, ms FROM st_clicks ORDER BY user_id, page;
UPDATE st_clicks SET page = '/x';
DELETE FROM st_clicks WHERE user_id = 1;
-- a view over a view
CREATE MATERIALIZED VIEW st_busy AS SELECT page FROM st_per_page WHERE hits >= 2;
SELECT * FROM st_busy ORDER BY page;
INSERT INTO st_clicks VALUES (3, '/about', 1);
SELECT * FROM st_busy ORDER BY page;
SHOW MATERIALIZED VIEWS;
DROP STREAM st_clicks;
DROP MATERIALIZED VIEW st_per_page;
DROP STREAM IF EXISTS st_clicks CASCADE;
SHOW STREAMS;
SHOW MATERIALIZED VIEWS;
