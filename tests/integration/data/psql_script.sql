-- psql script run directly and through pgveil; outputs must be byte-identical.
-- The schema psqlt is dropped by the test before each run.
\set VERBOSITY verbose
\pset null '(null)'
CREATE SCHEMA psqlt;
SET search_path = psqlt, public;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2),
                    tags text[], meta jsonb, created date, blob bytea, note varchar(20));
INSERT INTO items
  SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || g % 3, 'x'], jsonb_build_object('k', g, 's', 'v' || g),
         date '2024-01-01' + g, decode(md5(g::text), 'hex'), CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END
  FROM generate_series(1, 500) g;
SELECT count(*), sum(price), min(created), max(name) FROM items;
SELECT * FROM items WHERE id <= 8 ORDER BY id;
-- several statements in one Query message, several result sets
SELECT 'one' AS first \; SELECT 2 AS second, 'two' AS label \; SELECT id, note FROM items WHERE id IN (6, 7, 14) ORDER BY id;
-- an error in the middle of a multi-statement Query
SELECT 'before' \; SELECT 1/0 \; SELECT 'never';
SELECT 'after error';
SELEC syntax_error;
SELECT * FROM no_such_table;
INSERT INTO items (id, name) VALUES (1, 'duplicate');
-- a failed transaction
BEGIN;
UPDATE items SET price = price + 1 WHERE id = 1;
SELECT 1/0;
SELECT 'in aborted transaction';
ROLLBACK;
SELECT price FROM items WHERE id = 1;
-- notices
DO $$ BEGIN RAISE NOTICE 'notice with % and %', 42, 'text'; RAISE WARNING 'a warning'; END $$;
-- unicode, NULLs, empty strings, escapes
SELECT 'żółw ✓ 日本' AS uni, NULL AS nothing, '' AS empty, E'tab\there\nnewline' AS esc;
-- \copy to a file and back
\copy items TO 'items.csv' WITH (FORMAT csv, HEADER)
CREATE TABLE items_copy (LIKE items);
\copy items_copy FROM 'items.csv' WITH (FORMAT csv, HEADER)
SELECT count(*), sum(price), sum(length(blob)) FROM items_copy;
-- \copy and COPY to stdout
\copy (SELECT id, name, tags, meta FROM items WHERE id <= 20 ORDER BY id) TO STDOUT
COPY (SELECT id, blob, note FROM items WHERE id BETWEEN 5 AND 15 ORDER BY id) TO STDOUT WITH (FORMAT csv);
-- COPY FROM STDIN inline data
CREATE TABLE inline_data (a int, b text);
COPY inline_data FROM STDIN;
1	one
2	two
3	\N
\.
SELECT * FROM inline_data ORDER BY a;
-- a COPY that fails midway
COPY inline_data FROM STDIN;
4	four
not_a_number	five
\.
SELECT count(*) FROM inline_data;
-- catalog describe commands
\d psqlt.items
\dt psqlt.*
-- a bigger result
SELECT g, md5(g::text) FROM generate_series(1, 3000) g;
-- prepared statements at the SQL level
PREPARE q(int) AS SELECT id, name, note FROM items WHERE id = $1;
EXECUTE q(3);
EXECUTE q(7);
DEALLOCATE q;
-- cursors
BEGIN;
DECLARE c CURSOR FOR SELECT id, name FROM items ORDER BY id;
FETCH 3 FROM c;
FETCH 2 FROM c;
CLOSE c;
COMMIT;
\pset format aligned
\x on
SELECT id, name, meta FROM items WHERE id = 2;
\x off
SELECT 'done' AS status;
