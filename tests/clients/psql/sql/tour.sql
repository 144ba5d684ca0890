-- A small tour: a table, a materialized view over it, and the view following
-- inserts, updates and deletes (read-your-writes).
\timing off
CREATE TABLE tour_orders (id INT PRIMARY KEY, customer TEXT NOT NULL, amount INT);
INSERT INTO tour_orders VALUES (1, 'alice', 10), (2, 'bob', 20), (3, 'alice', 5);
CREATE MATERIALIZED VIEW tour_totals AS
  SELECT customer, sum(amount) AS total, count(*) AS n
  FROM tour_orders GROUP BY customer;
SELECT * FROM tour_totals ORDER BY customer;
INSERT INTO tour_orders VALUES (4, 'carol', 7);
SELECT * FROM tour_totals ORDER BY customer;
UPDATE tour_orders SET amount = 100 WHERE id = 2;
SELECT * FROM tour_totals ORDER BY customer;
UPDATE tour_orders SET customer = 'carol' WHERE customer = 'alice';
SELECT * FROM tour_totals ORDER BY customer;
DELETE FROM tour_orders WHERE amount < 10;
SELECT * FROM tour_totals ORDER BY customer;
SELECT * FROM tour_orders ORDER BY id;
-- plain queries over the table and the view
SELECT o.id, o.customer, t.total
  FROM tour_orders o JOIN tour_totals t ON o.customer = t.customer
  ORDER BY o.id;
SELECT customer FROM tour_orders WHERE amount = (SELECT max(amount) FROM tour_orders);
SELECT customer, upper(customer) AS shout, length(customer) AS len
  FROM tour_orders ORDER BY id DESC LIMIT 1;
-- INSERT ... SELECT
CREATE TABLE tour_archive (id INT PRIMARY KEY, customer TEXT);
INSERT INTO tour_archive SELECT id + 1000, customer FROM tour_orders;
SELECT * FROM tour_archive ORDER BY id;
-- catalog commands
SHOW TABLES;
SHOW MATERIALIZED VIEWS;
DESCRIBE tour_orders;
DESCRIBE tour_totals;
FLUSH;
DROP MATERIALIZED VIEW tour_totals;
DROP TABLE tour_orders;
DROP TABLE IF EXISTS tour_orders;
SHOW TABLES;
SHOW MATERIALIZED VIEWS;
