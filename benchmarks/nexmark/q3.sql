-- q3: local item suggestion. Auctions of category 10 whose seller lives in Oregon, Idaho
-- or California: a stream-stream join (auction.seller = person.id) with filters.
--
-- Reference: Flink's and RisingWave's q3 (the same query).
-- eddy's form: the same query, with the states in lower case ('or', 'id', 'ca'): the
-- `nexmark` crate that feeds eddy's generator emits lower-case states (RisingWave's q3
-- does the same; Flink's generator emits 'OR', 'ID', 'CA').

CREATE MATERIALIZED VIEW q3 AS
SELECT P.name, P.city, P.state, A.id
FROM auction AS A
INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10
  AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca');
