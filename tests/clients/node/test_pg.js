#!/usr/bin/env node
// node-postgres (`pg`) against a real eddy server.
//
//   node test_pg.js [-k SUBSTRING] [-v]
//
// Connects to EDDY_HOST/EDDY_PORT (default 127.0.0.1); when EDDY_PORT is not set it starts
// its own eddy from EDDY_BIN (default: <repo>/target/debug/eddy, or $CARGO_TARGET_DIR).
// `pg` is found through NODE_PATH (run.sh points it at the cache) or ./node_modules.
// Each test uses its own uniquely named objects. The last line printed is
// `pg: N passed, N failed`; the exit status is 1 when anything failed.
//
// Tests given a third argument (the bug) fail on eddy today; their comment says what
// Postgres does instead. With EDDY_CLIENTS_KNOWN_BUGS=xfail their failures are reported
// as `xfail` and not counted (and one that passes counts as a failure, so the marker is
// removed once the bug is fixed).
'use strict';

process.env.TZ = 'UTC'; // node-pg turns dates and timestamps into local-time Date objects

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const pg = loadPg();

// `pg` from NODE_PATH or ./node_modules, else from the cache run.sh fills.
function loadPg() {
  try {
    return require('pg');
  } catch (e) {
    const cache = process.env.EDDY_CACHE_DIR || path.resolve(__dirname, '..', '..', '..', '.cache');
    return require(path.join(path.resolve(cache), 'clients', 'node', 'node_modules', 'pg'));
  }
}

const HOST = process.env.EDDY_HOST || '127.0.0.1';
let PORT = process.env.EDDY_PORT;

const tests = [];
function test(name, fn, bug) {
  tests.push({ name, fn, bug });
}

function config(extra = {}) {
  return {
    host: HOST,
    port: Number(PORT),
    user: 'eddy',
    database: 'eddy',
    ssl: false,
    connectionTimeoutMillis: 10000,
    ...extra,
  };
}

async function withClient(fn, extra) {
  const client = new pg.Client(config(extra));
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

// Expect `promise` to reject with a DatabaseError carrying `code`; returns the error.
async function rejectsWith(promise, code, messagePart) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected an error with SQLSTATE ${code}, but the query succeeded`);
  assert.ok(err instanceof pg.DatabaseError, `expected a pg.DatabaseError, got ${err}`);
  assert.equal(err.code, code, `SQLSTATE for "${err.message}"`);
  assert.equal(err.severity, 'ERROR');
  if (messagePart) assert.ok(err.message.includes(messagePart), `message: ${err.message}`);
  return err;
}

// ---------------------------------------------------------------------------------------

test('connect and simple queries', async () => {
  await withClient(async (c) => {
    const r = await c.query('SELECT 1 AS one, \'two\' AS two');
    assert.equal(r.command, 'SELECT');
    assert.equal(r.rowCount, 1);
    assert.deepEqual(r.rows, [{ one: '1', two: 'two' }]); // 1 is bigint: a string in node-pg
    assert.deepEqual(r.fields.map((f) => [f.name, f.dataTypeID]), [['one', 20], ['two', 25]]);
    const v = await c.query('SHOW server_version');
    assert.deepEqual(v.rows.map((x) => Object.values(x)), [['15.0 (eddy 0.1.0)']]);
    const tz = await c.query('SHOW TIME ZONE');
    assert.deepEqual(tz.rows.map((x) => Object.values(x)), [['UTC']]);
  });
});

test('create, insert, select, update, delete', async () => {
  await withClient(async (c) => {
    let r = await c.query('CREATE TABLE js_crud (k INT PRIMARY KEY, v TEXT, n BIGINT)');
    assert.equal(r.command, 'CREATE');
    r = await c.query("INSERT INTO js_crud VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)");
    assert.equal(r.command, 'INSERT');
    assert.equal(r.rowCount, 3);
    r = await c.query('SELECT k, v, n FROM js_crud ORDER BY k');
    assert.deepEqual(r.rows, [
      { k: 1, v: 'a', n: '10' },
      { k: 2, v: 'b', n: '20' },
      { k: 3, v: 'c', n: '30' },
    ]);
    r = await c.query('UPDATE js_crud SET n = n * 2 WHERE k <> 2');
    assert.equal(r.command, 'UPDATE');
    assert.equal(r.rowCount, 2);
    r = await c.query("DELETE FROM js_crud WHERE v = 'b'");
    assert.equal(r.command, 'DELETE');
    assert.equal(r.rowCount, 1);
    r = await c.query({ text: 'SELECT k, n FROM js_crud ORDER BY k', rowMode: 'array' });
    assert.deepEqual(r.rows, [[1, '20'], [3, '60']]);
    r = await c.query('SELECT k FROM js_crud WHERE k > 100');
    assert.deepEqual(r.rows, []);
    assert.equal(r.rowCount, 0);
  });
});

test('multiple statements in one query', async () => {
  await withClient(async (c) => {
    const rs = await c.query(
      "CREATE TABLE js_multi (k INT PRIMARY KEY); INSERT INTO js_multi VALUES (1), (2); " +
        "SELECT count(*) AS n FROM js_multi; SELECT 'x' AS s",
    );
    assert.equal(rs.length, 4);
    assert.deepEqual(rs.map((r) => r.command), ['CREATE', 'INSERT', 'SELECT', 'SELECT']);
    assert.deepEqual(rs[2].rows, [{ n: '2' }]);
    assert.deepEqual(rs[3].rows, [{ s: 'x' }]);
  });
});

test('parameterized queries ($1)', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_params (k INT PRIMARY KEY, v TEXT, n NUMERIC(10,2))');
    let r = await c.query('INSERT INTO js_params VALUES ($1, $2, $3), ($4, $5, $6)', [
      1, 'one', '1.5', 2, 'two', 2.25,
    ]);
    assert.equal(r.rowCount, 2);
    r = await c.query('SELECT v, n FROM js_params WHERE k = $1', [2]);
    assert.deepEqual(r.rows, [{ v: 'two', n: '2.25' }]);
    r = await c.query('SELECT k FROM js_params WHERE v = $1 OR v = $2 ORDER BY k', ['one', 'two']);
    assert.deepEqual(r.rows, [{ k: 1 }, { k: 2 }]);
    r = await c.query('SELECT $1::int + $2::int AS s', [40, '2']);
    assert.deepEqual(r.rows, [{ s: 42 }]); // int4 + int4 is int4
    r = await c.query('SELECT $1::text || $2::text AS s', ['ab', 'cd']);
    assert.deepEqual(r.rows, [{ s: 'abcd' }]);
    r = await c.query('UPDATE js_params SET v = $1 WHERE k = $2', ['uno', 1]);
    assert.equal(r.rowCount, 1);
    r = await c.query('DELETE FROM js_params WHERE k = $1', [2]);
    assert.equal(r.rowCount, 1);
    r = await c.query('SELECT k, v, n FROM js_params');
    assert.deepEqual(r.rows, [{ k: 1, v: 'uno', n: '1.50' }]);
    // NULL and tricky text as parameters
    const s = 'it\'s "quoted"\n\ttab ünïcödé 🎉 \\ backslash';
    r = await c.query('SELECT $1::text AS a, $2::text AS b, $3::text AS c', [s, null, '']);
    assert.deepEqual(r.rows, [{ a: s, b: null, c: '' }]);
    // many parameters
    const vals = Array.from({ length: 100 }, (_, i) => i);
    const list = vals.map((_, i) => `$${i + 1}::int`).join(' + ');
    r = await c.query(`SELECT ${list} AS total`, vals);
    assert.deepEqual(r.rows, [{ total: (99 * 100) / 2 }]);
  });
});

test('prepared named queries', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_prep (k INT PRIMARY KEY, v TEXT)');
    for (let i = 0; i < 10; i++) {
      const r = await c.query({
        name: 'js_prep_ins',
        text: 'INSERT INTO js_prep VALUES ($1, $2)',
        values: [i, `v${i}`],
      });
      assert.equal(r.rowCount, 1);
    }
    const got = [];
    for (let i = 0; i < 10; i += 3) {
      const r = await c.query({ name: 'q1', text: 'SELECT v FROM js_prep WHERE k = $1', values: [i] });
      got.push(r.rows);
    }
    assert.deepEqual(got, [[{ v: 'v0' }], [{ v: 'v3' }], [{ v: 'v6' }], [{ v: 'v9' }]]);
    // the prepared statement sees later writes
    await c.query({ name: 'js_prep_ins', text: 'INSERT INTO js_prep VALUES ($1, $2)', values: [10, 'v10'] });
    const r = await c.query({ name: 'q1', text: 'SELECT v FROM js_prep WHERE k = $1', values: [10] });
    assert.deepEqual(r.rows, [{ v: 'v10' }]);
    // an error does not break the prepared statements of the connection
    await rejectsWith(c.query('SELECT * FROM js_prep_nope'), '42P01');
    const again = await c.query({ name: 'q1', text: 'SELECT v FROM js_prep WHERE k = $1', values: [4] });
    assert.deepEqual(again.rows, [{ v: 'v4' }]);
    // a prepared query with no parameters and one with a syntax error
    const cnt = await c.query({ name: 'q_count', text: 'SELECT count(*) AS n FROM js_prep' });
    assert.deepEqual(cnt.rows, [{ n: '11' }]);
    await rejectsWith(c.query({ name: 'q_bad', text: 'SELEC 1' }), '42601');
    const ok = await c.query({ name: 'q_count', text: 'SELECT count(*) AS n FROM js_prep' });
    assert.deepEqual(ok.rows, [{ n: '11' }]);
  });
});

test('types in text format', async () => {
  await withClient(async (c) => {
    await c.query(
      'CREATE TABLE js_types (k INT PRIMARY KEY, b BOOLEAN, si SMALLINT, bi BIGINT, r REAL, ' +
        'd DOUBLE PRECISION, n NUMERIC(5,2), t TEXT, vc VARCHAR(10), dt DATE, ts TIMESTAMP, ' +
        'tz TIMESTAMPTZ, iv INTERVAL, by BYTEA)',
    );
    await c.query(
      'INSERT INTO js_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)',
      [
        1, true, -32768, '9007199254740993', 1.5, 1e20, '1.5', 'héllo', 'vc', '2024-02-29',
        '2024-01-01 10:00:00.5', new Date(Date.UTC(2024, 0, 1, 8, 0, 0)), '1 day 2 hours',
        Buffer.from([0xde, 0xad, 0xbe, 0xef]),
      ],
    );
    await c.query(
      'INSERT INTO js_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)',
      [2, null, null, null, null, null, null, null, null, null, null, null, null, null],
    );
    const r = await c.query('SELECT * FROM js_types ORDER BY k');
    assert.deepEqual(
      r.fields.map((f) => f.dataTypeID),
      [23, 16, 21, 20, 700, 701, 1700, 25, 25, 1082, 1114, 1184, 1186, 17],
    );
    const row = r.rows[0];
    assert.equal(row.k, 1);
    assert.equal(row.b, true);
    assert.equal(row.si, -32768);
    assert.equal(row.bi, '9007199254740993'); // int8 stays a string: no precision loss
    assert.equal(row.r, 1.5);
    assert.equal(row.d, 1e20);
    assert.equal(row.n, '1.50'); // numeric: a string, with its scale
    assert.equal(row.t, 'héllo');
    assert.equal(row.vc, 'vc');
    assert.ok(row.dt instanceof Date);
    assert.equal(row.dt.toISOString(), '2024-02-29T00:00:00.000Z');
    assert.equal(row.ts.toISOString(), '2024-01-01T10:00:00.500Z');
    assert.equal(row.tz.toISOString(), '2024-01-01T08:00:00.000Z');
    assert.deepEqual({ ...row.iv }, { days: 1, hours: 2 });
    assert.equal(row.iv.toPostgres(), '2 hours 1 days');
    assert.ok(Buffer.isBuffer(row.by));
    assert.equal(row.by.toString('hex'), 'deadbeef');
    assert.deepEqual(Object.values(r.rows[1]), [2, ...Array(13).fill(null)]);
  });
});

test('types in binary format', async () => {
  await withClient(async (c) => {
    await c.query(
      'CREATE TABLE js_bin (k INT PRIMARY KEY, b BOOLEAN, si SMALLINT, bi BIGINT, ' +
        't TEXT)',
    );
    await c.query(
      "INSERT INTO js_bin VALUES (1, false, 7, 9000000000, 'bin')",
    );
    // node-pg asks for binary results on the extended protocol when `binary: true`.
    // Only types whose pg-types binary parsers work: its float4/float8/timestamp/bytea
    // binary parsers give garbage against Postgres too (psycopg covers those in binary).
    const r = await c.query({ text: 'SELECT * FROM js_bin WHERE k = $1', values: [1], binary: true });
    assert.deepEqual(r.fields.map((f) => f.format), Array(5).fill('binary'));
    const row = r.rows[0];
    assert.equal(row.k, 1);
    assert.equal(row.b, false);
    assert.equal(row.si, 7);
    assert.equal(String(row.bi), '9000000000');
    assert.equal(row.t, 'bin');
  });
});

test('large result and many rows in one insert', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_large (k INT PRIMARY KEY, v TEXT)');
    const values = [];
    const params = [];
    for (let i = 1; i <= 1000; i++) {
      values.push(`($${2 * i - 1}, $${2 * i})`);
      params.push(i, `row ${i}`);
    }
    const ins = await c.query(`INSERT INTO js_large VALUES ${values.join(', ')}`, params);
    assert.equal(ins.rowCount, 1000);
    await c.query(
      "INSERT INTO js_large SELECT CAST(value AS INT), 'gen ' || CAST(value AS TEXT) " +
        'FROM generate_series(1001, 5000)',
    );
    const r = await c.query('SELECT k, v FROM js_large ORDER BY k');
    assert.equal(r.rowCount, 5000);
    assert.deepEqual(r.rows[0], { k: 1, v: 'row 1' });
    assert.deepEqual(r.rows[4999], { k: 5000, v: 'gen 5000' });
    assert.equal(r.rows.reduce((s, x) => s + x.k, 0), (5000 * 5001) / 2);
  });
});

test('errors carry SQLSTATE codes', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_err (k INT PRIMARY KEY, v TEXT NOT NULL, s SMALLINT)');
    await c.query("INSERT INTO js_err VALUES (1, 'one', 1)");
    await c.query('CREATE STREAM js_err_s (a INT)');
    await c.query('CREATE MATERIALIZED VIEW js_err_mv AS SELECT count(*) AS n FROM js_err');

    let e = await rejectsWith(c.query('SELEC 1'), '42601', 'syntax error');
    assert.equal(e.position, '1');
    e = await rejectsWith(c.query('SELECT * FROM js_err_nope'), '42P01');
    assert.equal(e.message, 'relation "js_err_nope" does not exist');
    assert.equal(e.position, '15');
    e = await rejectsWith(c.query('SELECT nocol FROM js_err'), '42703');
    assert.equal(e.message, 'column "nocol" does not exist');
    assert.equal(e.position, '8');
    await rejectsWith(c.query("INSERT INTO js_err VALUES (1, 'dup', 1)"), '23505', 'duplicate key');
    await rejectsWith(c.query('INSERT INTO js_err VALUES ($1, $2, $3)', [1, 'dup', 1]), '23505');
    e = await rejectsWith(c.query('INSERT INTO js_err (k) VALUES (2)'), '23502');
    assert.equal(e.message, 'null value in column "v" of relation "js_err" violates not-null constraint');
    await rejectsWith(c.query('INSERT INTO js_err VALUES ($1, $2, $3)', [3, null, 1]), '23502');
    await rejectsWith(c.query('UPDATE js_err SET v = NULL'), '23502');
    await rejectsWith(c.query("INSERT INTO js_err VALUES ('abc', 'x', 1)"), '22P02');
    await rejectsWith(c.query('INSERT INTO js_err VALUES ($1, $2, $3)', ['abc', 'x', 1]), '22P02');
    await rejectsWith(c.query('INSERT INTO js_err VALUES (4, $1, 99999)', ['x']), '22003');
    await rejectsWith(c.query('SELECT 1 / 0 AS x'), '22012', 'division by zero');
    await rejectsWith(c.query('SELECT $1::int / 0 AS x', [7]), '22012');
    await rejectsWith(c.query('UPDATE js_err_s SET a = 1'), '42809');
    await rejectsWith(c.query('DELETE FROM js_err_s'), '42809');
    await rejectsWith(c.query('DROP TABLE js_err'), '2BP01');
    await rejectsWith(c.query('CREATE TABLE js_err (k INT PRIMARY KEY)'), '42P07');
    await rejectsWith(c.query("SET TIME ZONE 'America/New_York'"), '0A000');
    // nothing above changed anything, and the connection still works
    const r = await c.query('SELECT k, v, s FROM js_err');
    assert.deepEqual(r.rows, [{ k: 1, v: 'one', s: 1 }]);
    const mv = await c.query('SELECT n FROM js_err_mv');
    assert.deepEqual(mv.rows, [{ n: '1' }]);
  });
});

test('notices and warnings reach the client', async () => {
  await withClient(async (c) => {
    const notices = [];
    c.on('notice', (n) => notices.push([n.severity, n.code, n.message]));
    await c.query('DROP TABLE IF EXISTS js_never_created');
    await c.query('CREATE TABLE js_notice (k INT PRIMARY KEY)');
    await c.query('BEGIN');
    await c.query('INSERT INTO js_notice VALUES (1)');
    const rb = await c.query('ROLLBACK');
    assert.equal(rb.command, 'ROLLBACK');
    assert.deepEqual(notices.map((n) => n.slice(0, 2)), [['NOTICE', '00000'], ['WARNING', '01000']]);
    assert.equal(notices[0][2], 'table "js_never_created" does not exist, skipping');
    assert.ok(notices[1][2].includes('not rolled back'), notices[1][2]);
    const r = await c.query('SELECT k FROM js_notice');
    assert.deepEqual(r.rows, [{ k: 1 }]); // eddy applies writes at once
  });
});

test('transaction blocks and 25P02', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_tx (k INT PRIMARY KEY)');
    assert.equal((await c.query('BEGIN')).command, 'BEGIN');
    await c.query('INSERT INTO js_tx VALUES ($1)', [1]);
    assert.equal((await c.query('COMMIT')).command, 'COMMIT');
    await c.query('BEGIN');
    await rejectsWith(c.query('SELECT * FROM js_tx_nope'), '42P01');
    await rejectsWith(c.query('SELECT 1'), '25P02', 'current transaction is aborted');
    await rejectsWith(c.query('INSERT INTO js_tx VALUES ($1)', [2]), '25P02');
    await rejectsWith(c.query({ name: 'q_tx', text: 'SELECT $1::int AS x', values: [1] }), '25P02');
    assert.equal((await c.query('COMMIT')).command, 'ROLLBACK'); // as in Postgres
    const r = await c.query('SELECT k FROM js_tx ORDER BY k');
    assert.deepEqual(r.rows, [{ k: 1 }]);
    const q = await c.query({ name: 'q_tx', text: 'SELECT $1::int AS x', values: [5] });
    assert.deepEqual(q.rows, [{ x: 5 }]);
  });
});

test('materialized view updated by inserts', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_mv_src (id INT PRIMARY KEY, cat TEXT, amount BIGINT)');
    await c.query(
      'CREATE MATERIALIZED VIEW js_mv AS SELECT cat, count(*) AS n, sum(amount) AS total ' +
        'FROM js_mv_src GROUP BY cat',
    );
    const want = {};
    for (let i = 1; i <= 30; i++) {
      const cat = 'xyz'[i % 3];
      await c.query('INSERT INTO js_mv_src VALUES ($1, $2, $3)', [i, cat, i * 10]);
      const [n, t] = want[cat] || [0, 0];
      want[cat] = [n + 1, t + i * 10];
      const r = await c.query({
        name: 'js_mv_one',
        text: 'SELECT n, total FROM js_mv WHERE cat = $1',
        values: [cat],
      });
      assert.deepEqual(r.rows, [{ n: String(want[cat][0]), total: String(want[cat][1]) }], `after insert ${i}`);
    }
    await c.query("UPDATE js_mv_src SET cat = 'x' WHERE cat = 'y'");
    await c.query('DELETE FROM js_mv_src WHERE id > 27');
    const r = await c.query({ text: 'SELECT cat, n, total FROM js_mv ORDER BY cat', rowMode: 'array' });
    assert.deepEqual(r.rows, [['x', '18', '2520'], ['z', '9', '1260']]);
    const views = await c.query('SHOW MATERIALIZED VIEWS');
    assert.ok(views.rows.some((x) => x.name === 'js_mv'), JSON.stringify(views.rows));
  });
});

test('stream with a view over it', async () => {
  await withClient(async (c) => {
    await c.query('CREATE STREAM js_clicks (user_id INT, page TEXT)');
    await c.query(
      'CREATE MATERIALIZED VIEW js_clicks_per_page AS SELECT page, count(*) AS hits FROM js_clicks GROUP BY page',
    );
    for (const [u, p] of [[1, '/a'], [2, '/a'], [1, '/b'], [3, '/a']]) {
      await c.query({ name: 'click', text: 'INSERT INTO js_clicks VALUES ($1, $2)', values: [u, p] });
    }
    const r = await c.query('SELECT page, hits FROM js_clicks_per_page ORDER BY page');
    assert.deepEqual(r.rows, [{ page: '/a', hits: '3' }, { page: '/b', hits: '1' }]);
    await rejectsWith(c.query('UPDATE js_clicks SET page = $1', ['/c']), '42809');
    const s = await c.query('SHOW STREAMS');
    assert.ok(s.rows.some((x) => x.name === 'js_clicks'), JSON.stringify(s.rows));
    const d = await c.query('DESCRIBE js_clicks');
    assert.deepEqual(d.rows, [
      { name: 'user_id', type: 'integer', nullable: true, primary_key: false },
      { name: 'page', type: 'text', nullable: true, primary_key: false },
    ]);
    const drop = await c.query('DROP STREAM js_clicks CASCADE');
    assert.equal(drop.command, 'DROP');
    await rejectsWith(c.query('SELECT * FROM js_clicks_per_page'), '42P01');
  });
});

test('pg.Pool: concurrent queries from several clients', async () => {
  const pool = new pg.Pool(config({ max: 5 }));
  try {
    await pool.query('CREATE TABLE js_pool (k INT PRIMARY KEY, w INT)');
    await pool.query('CREATE MATERIALIZED VIEW js_pool_mv AS SELECT w, count(*) AS n, sum(k) AS s FROM js_pool GROUP BY w');
    const workers = 5;
    const perWorker = 40;
    // every insert from every worker in flight at once; the pool spreads them over 5 clients
    const inserts = [];
    for (let w = 0; w < workers; w++) {
      for (let i = 0; i < perWorker; i++) {
        inserts.push(pool.query('INSERT INTO js_pool VALUES ($1, $2)', [w * 1000 + i, w]));
      }
    }
    const results = await Promise.all(inserts);
    assert.ok(results.every((r) => r.rowCount === 1));
    assert.equal(pool.totalCount, 5);
    // concurrent reads, each sees all the writes above
    const reads = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        pool.query('SELECT n, s FROM js_pool_mv WHERE w = $1', [i % workers])),
    );
    reads.forEach((r, i) => {
      const w = i % workers;
      const s = perWorker * w * 1000 + (perWorker * (perWorker - 1)) / 2;
      assert.deepEqual(r.rows, [{ n: String(perWorker), s: String(s) }], `read ${i}`);
    });
    // clients checked out explicitly, each in its own transaction block at once
    const clients = await Promise.all(Array.from({ length: 3 }, () => pool.connect()));
    try {
      await Promise.all(clients.map((cl) => cl.query('BEGIN')));
      await Promise.all(clients.map((cl, i) => cl.query('INSERT INTO js_pool VALUES ($1, $2)', [9000 + i, 9])));
      await Promise.all(clients.map((cl) => cl.query('COMMIT')));
    } finally {
      clients.forEach((cl) => cl.release());
    }
    const r = await pool.query('SELECT n FROM js_pool_mv WHERE w = 9');
    assert.deepEqual(r.rows, [{ n: '3' }]);
    const total = await pool.query('SELECT count(*) AS n FROM js_pool');
    assert.deepEqual(total.rows, [{ n: String(workers * perWorker + 3) }]);
  } finally {
    await pool.end();
  }
});

test('SET and SHOW application_name', async () => {
  await withClient(async (c) => {
    await c.query("SET application_name = 'js-set'");
    const r = await c.query('SHOW application_name');
    assert.deepEqual(r.rows.map((x) => Object.values(x)), [['js-set']]);
  });
});

test('startup application_name is reported by SHOW', async () => {
  // Regression (was a bug): node-pg sends application_name in the startup packet;
  // Postgres reports it in SHOW application_name.
  await withClient(async (c) => {
    const r = await c.query('SHOW application_name');
    assert.deepEqual(r.rows.map((x) => Object.values(x)), [['js-startup']]);
  }, { application_name: 'js-startup' });
});

test('count(*) and unnamed expressions use Postgres column names', async () => {
  // Regression (was a bug): Postgres names `count(*)` "count", `SELECT 1` "?column?",
  // `max(k)` "max"; node-pg code reads `rows[0].count`.
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_names (k INT PRIMARY KEY)');
    await c.query('INSERT INTO js_names VALUES (1), (2)');
    const r = await c.query('SELECT count(*), max(k) FROM js_names');
    assert.deepEqual(r.rows, [{ count: '2', max: 2 }]);
    const one = await c.query('SELECT 1');
    assert.deepEqual(one.fields.map((f) => f.name), ['?column?']);
  });
});

test('untyped $1 in a SELECT list is text', async () => {
  // node-pg sends every parameter untyped (OID 0) in text format: like Postgres, eddy
  // then types `SELECT $1` as text.
  await withClient(async (c) => {
    const r = await c.query('SELECT $1 AS x, $2 AS y', ['42', 'abc']);
    assert.deepEqual(r.rows, [{ x: '42', y: 'abc' }]);
    assert.deepEqual(r.fields.map((f) => f.dataTypeID), [25, 25]);
  });
});

test('text interval parameters are read like Postgres reads them', async () => {
  // Regression (was a bug): '1 day 02:00:00' (Postgres' own output) is valid interval
  // input, and an INSERT parameter never silently becomes NULL.
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_iv (k INT PRIMARY KEY, iv INTERVAL)');
    await c.query('INSERT INTO js_iv VALUES ($1, $2)', [1, '1 day 02:00:00']);
    const r = await c.query('SELECT iv FROM js_iv');
    assert.notEqual(r.rows[0].iv, null, 'the INSERT stored NULL');
    assert.deepEqual({ ...r.rows[0].iv }, { days: 1, hours: 2 });
  });
});

test('bytea text parameters use the hex format', async () => {
  // Regression (was a bug): '\\xdeadbeef' as a text parameter is hex, not 10 characters.
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_byt (k INT PRIMARY KEY, b BYTEA)');
    await c.query('INSERT INTO js_byt VALUES ($1, $2)', [1, '\\xdeadbeef']);
    const r = await c.query('SELECT b FROM js_byt');
    assert.equal(r.rows[0].b.toString('hex'), 'deadbeef');
  });
});

// ---------------------------------------------------------------------------------------
// Push subscriptions through cursors: DECLARE c CURSOR FOR SUBSCRIBE ...; FETCH ... WITH
// (timeout = ...). node-pg returns bigint (epoch, diff) as strings.

// The rows of one epoch later than `after` (a BigInt): returns [epoch, rows without the
// epoch column, sorted]. Epochs are milliseconds since 1970, near now.
function oneEpoch(rows, after, what) {
  assert.ok(rows.length > 0, `${what}: no rows`);
  const epochs = new Set();
  for (const r of rows) {
    assert.equal(typeof r[0], 'string', `${what}: epoch ${r[0]}`);
    assert.match(r[0], /^[0-9]+$/, `${what}: epoch ${r[0]}`);
    epochs.add(r[0]);
  }
  assert.equal(epochs.size, 1, `${what}: one epoch expected: ${JSON.stringify(rows)}`);
  const epoch = BigInt(rows[0][0]);
  assert.ok(epoch > after, `${what}: epoch ${epoch} not after ${after}`);
  const skew = Number(epoch) - Date.now();
  assert.ok(Math.abs(skew) < 600000, `${what}: epoch ${epoch} is not near now (${Date.now()})`);
  const rest = rows.map((r) => r.slice(1)).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  return [epoch, rest];
}

async function fetchRows(c, cursor, n = 'ALL', timeout = '2s') {
  const r = await c.query({ text: `FETCH ${n} FROM ${cursor} WITH (timeout = '${timeout}')`, rowMode: 'array' });
  assert.equal(r.command, 'FETCH');
  assert.equal(r.rowCount, r.rows.length);
  return r.rows;
}

async function showEpoch(c) {
  const r = await c.query({ text: 'SHOW EPOCH', rowMode: 'array' });
  assert.equal(r.rows.length, 1);
  assert.match(r.rows[0][0], /^[0-9]+$/);
  return BigInt(r.rows[0][0]);
}

// SHOW SUBSCRIPTIONS rows for these relations, as [relation, count] pairs.
async function subscriptions(c, relations) {
  const r = await c.query({ text: 'SHOW SUBSCRIPTIONS', rowMode: 'array' });
  assert.deepEqual(r.fields.map((f) => [f.name, f.dataTypeID]), [['relation', 25], ['subscribers', 20]]);
  return r.rows.filter((x) => relations.includes(x[0]));
}

// Poll SHOW SUBSCRIPTIONS until it shows `want` for these relations (at most 3 s: an
// ended subscription is let go of at the next epoch or heartbeat).
async function waitSubscriptions(c, relations, want) {
  const deadline = Date.now() + 3000;
  for (;;) {
    const got = await subscriptions(c, relations);
    if (JSON.stringify(got) === JSON.stringify(want) || Date.now() > deadline) {
      assert.deepEqual(got, want, `SHOW SUBSCRIPTIONS for ${relations}`);
      return;
    }
    await new Promise((res) => setTimeout(res, 50));
  }
}

test('SUBSCRIBE through a cursor: snapshot, then each change', async () => {
  await withClient(async (w) => {
    await withClient(async (s) => {
      await w.query('CREATE TABLE js_sub_t (k INT PRIMARY KEY, g TEXT, v INT)');
      await w.query("INSERT INTO js_sub_t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'a', 5)");
      await w.query(
        'CREATE MATERIALIZED VIEW js_sub_v AS SELECT g, sum(v) AS total, count(*) AS n FROM js_sub_t GROUP BY g',
      );
      assert.equal((await s.query('BEGIN')).command, 'BEGIN');
      const d = await s.query('DECLARE c CURSOR FOR SUBSCRIBE js_sub_v');
      assert.equal(d.command, 'DECLARE');

      // the snapshot, as insertions in one epoch
      const before = await showEpoch(w);
      const snap = await s.query({ text: "FETCH ALL FROM c WITH (timeout = '1s')", rowMode: 'array' });
      assert.deepEqual(
        snap.fields.map((f) => [f.name, f.dataTypeID]),
        [['epoch', 20], ['diff', 20], ['g', 25], ['total', 20], ['n', 20]],
      );
      assert.equal(snap.rowCount, 2);
      let [epoch, rows] = oneEpoch(snap.rows, 0n, 'snapshot');
      assert.deepEqual(rows, [['1', 'a', '15', '2'], ['1', 'b', '20', '1']]);
      assert.ok(epoch >= before, `snapshot epoch ${epoch} before SHOW EPOCH ${before}`);

      // nothing new: FETCH returns no rows after its timeout
      const t0 = Date.now();
      assert.deepEqual(await fetchRows(s, 'c', 'ALL', '200ms'), []);
      const waited = Date.now() - t0;
      assert.ok(waited >= 150 && waited < 5000, `FETCH with a 200ms timeout took ${waited}ms`);

      // UPDATE: -1 old, +1 new, one epoch, no later than SHOW EPOCH after the write
      await w.query('UPDATE js_sub_t SET v = $1 WHERE k = $2', [11, 1]);
      const shown = await showEpoch(w);
      [epoch, rows] = oneEpoch(await fetchRows(s, 'c'), epoch, 'update');
      assert.deepEqual(rows, [['-1', 'a', '15', '2'], ['1', 'a', '16', '2']]);
      assert.ok(epoch <= shown, `change at ${epoch}, SHOW EPOCH said ${shown}`);

      // INSERT into an existing group and a new one
      await w.query("INSERT INTO js_sub_t VALUES (4, 'a', 1), (5, 'c', 7)");
      [epoch, rows] = oneEpoch(await fetchRows(s, 'c'), epoch, 'insert');
      assert.deepEqual(rows, [['-1', 'a', '16', '2'], ['1', 'a', '17', '3'], ['1', 'c', '7', '1']]);

      // DELETE emptying a group
      await w.query('DELETE FROM js_sub_t WHERE k = 2');
      [epoch, rows] = oneEpoch(await fetchRows(s, 'c'), epoch, 'delete');
      assert.deepEqual(rows, [['-1', 'b', '20', '1']]);

      // FETCH through the extended protocol (a named prepared statement), twice
      await w.query('DELETE FROM js_sub_t WHERE g = $1', ['c']);
      const q = { name: 'js_sub_fetch', text: "FETCH ALL FROM c WITH (timeout = '2s')", rowMode: 'array' };
      let r = await s.query(q);
      assert.deepEqual(r.fields.map((f) => f.name), ['epoch', 'diff', 'g', 'total', 'n']);
      [epoch, rows] = oneEpoch(r.rows, epoch, 'delete (prepared FETCH)');
      assert.deepEqual(rows, [['-1', 'c', '7', '1']]);
      await w.query('UPDATE js_sub_t SET v = 0');
      r = await s.query(q);
      [epoch, rows] = oneEpoch(r.rows, epoch, 'update all (prepared FETCH)');
      assert.deepEqual(rows, [['-1', 'a', '17', '3'], ['1', 'a', '0', '3']]);

      assert.deepEqual(await fetchRows(s, 'c', 'ALL', '50ms'), []);
      assert.equal((await s.query('COMMIT')).command, 'COMMIT');
      await rejectsWith(s.query('FETCH 1 FROM c'), '34000', 'cursor "c" does not exist');
      await s.query('ROLLBACK');
      await waitSubscriptions(w, ['js_sub_v'], []);
    });
  });
});

test('SUBSCRIBE (SELECT ...) with a filter, counted by SHOW SUBSCRIPTIONS', async () => {
  await withClient(async (w) => {
    await withClient(async (s) => {
      await w.query('CREATE TABLE js_subq_t (k INT PRIMARY KEY, g TEXT, v INT)');
      await w.query("INSERT INTO js_subq_t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)");
      const rels = ['(query)', 'js_subq_t'];
      assert.deepEqual(await subscriptions(w, rels), []);
      await s.query('BEGIN');
      await s.query(
        'DECLARE q CURSOR FOR SUBSCRIBE (SELECT k, upper(g) AS up FROM js_subq_t WHERE v >= 20)',
      );
      assert.deepEqual(await subscriptions(w, rels), [['(query)', '1']]);
      const snap = await s.query({ text: "FETCH ALL q WITH (timeout = '1s')", rowMode: 'array' });
      assert.deepEqual(snap.fields.map((f) => [f.name, f.dataTypeID]), [['epoch', 20], ['diff', 20], ['k', 23], ['up', 25]]);
      let [epoch, rows] = oneEpoch(snap.rows, 0n, 'snapshot');
      assert.deepEqual(rows, [['1', 2, 'B'], ['1', 3, 'C']]);

      // a row entering the filter, one leaving it, one changing inside it: one epoch each
      await w.query('UPDATE js_subq_t SET v = 25 WHERE k = 1');
      [epoch, rows] = oneEpoch(await fetchRows(s, 'q'), epoch, 'enters');
      assert.deepEqual(rows, [['1', 1, 'A']]);
      await w.query('UPDATE js_subq_t SET v = 5 WHERE k = 2');
      [epoch, rows] = oneEpoch(await fetchRows(s, 'q'), epoch, 'leaves');
      assert.deepEqual(rows, [['-1', 2, 'B']]);
      await w.query("UPDATE js_subq_t SET g = 'x' WHERE k = 3");
      [epoch, rows] = oneEpoch(await fetchRows(s, 'q'), epoch, 'changes');
      assert.deepEqual(rows, [['-1', 3, 'C'], ['1', 3, 'X']]);
      // changes outside the filter send nothing: the next rows are the next change's
      await w.query('UPDATE js_subq_t SET v = 6 WHERE k = 2');
      await w.query("INSERT INTO js_subq_t VALUES (4, 'd', 0), (5, 'e', 50)");
      [epoch, rows] = oneEpoch(await fetchRows(s, 'q'), epoch, 'insert');
      assert.deepEqual(rows, [['1', 5, 'E']]);

      // a second subscription, to the table itself, in the same transaction
      await s.query('DECLARE t CURSOR FOR SUBSCRIBE js_subq_t WITH (SNAPSHOT = false)');
      assert.deepEqual(await subscriptions(w, rels), [['(query)', '1'], ['js_subq_t', '1']]);
      await w.query('DELETE FROM js_subq_t WHERE k = 5');
      [epoch, rows] = oneEpoch(await fetchRows(s, 't'), epoch, 'table delete');
      assert.deepEqual(rows, [['-1', 5, 'e', 50]]);
      assert.deepEqual(oneEpoch(await fetchRows(s, 'q'), 0n, 'query delete'), [epoch, [['-1', 5, 'E']]]);

      // both end at COMMIT, and SHOW SUBSCRIPTIONS drops back
      await s.query('COMMIT');
      await waitSubscriptions(w, rels, []);
      await rejectsWith(s.query('FETCH 1 FROM q'), '34000');
    });
  });
});

test('SHOW SUBSCRIPTIONS forgets a subscription when COMMIT ends it', async () => {
  // COMMIT ends a cursor's subscription before it returns; a SHOW SUBSCRIPTIONS after
  // it should not count it. (Checked five times, so that an epoch or heartbeat between
  // the two statements cannot make it pass by chance.)
  await withClient(async (w) => {
    await withClient(async (s) => {
      await w.query('CREATE TABLE js_subc_t (k INT PRIMARY KEY)');
      for (let i = 0; i < 5; i++) {
        await s.query('BEGIN');
        await s.query('DECLARE c CURSOR FOR SUBSCRIBE js_subc_t');
        assert.deepEqual(await subscriptions(w, ['js_subc_t']), [['js_subc_t', '1']]);
        await s.query('COMMIT');
        assert.deepEqual(await subscriptions(w, ['js_subc_t']), [], `after COMMIT ${i + 1}`);
      }
    });
  });
});

test('cursor errors: 25P01, 34000, 42P03, and WITH HOLD', async () => {
  await withClient(async (c) => {
    await c.query('CREATE TABLE js_curerr (k INT PRIMARY KEY)');
    await c.query('INSERT INTO js_curerr VALUES (1), (2), (3)');
    // DECLARE outside a transaction block: 25P01, in both protocols
    await rejectsWith(c.query('DECLARE c CURSOR FOR SUBSCRIBE js_curerr'), '25P01',
      'DECLARE CURSOR can only be used in transaction blocks');
    await rejectsWith(c.query({ name: 'js_decl', text: 'DECLARE c CURSOR FOR SUBSCRIBE js_curerr' }), '25P01');
    await rejectsWith(c.query('DECLARE c CURSOR FOR SELECT k FROM js_curerr'), '25P01');
    // FETCH / CLOSE of a cursor that does not exist: 34000
    let e = await rejectsWith(c.query('FETCH 1 FROM nope'), '34000');
    assert.equal(e.message, 'cursor "nope" does not exist');
    await rejectsWith(c.query({ text: "FETCH ALL nope WITH (timeout = '1s')", values: [] }), '34000');
    await rejectsWith(c.query({ name: 'js_fetch_nope', text: 'FETCH ALL FROM nope' }), '34000');
    await rejectsWith(c.query('CLOSE nope'), '34000');
    // inside a block the error aborts it, as any error does
    await c.query('BEGIN');
    await c.query('DECLARE c CURSOR FOR SUBSCRIBE js_curerr');
    e = await rejectsWith(c.query('DECLARE c CURSOR FOR SELECT 1'), '42P03');
    assert.equal(e.message, 'cursor "c" already exists');
    await rejectsWith(c.query("FETCH ALL FROM c WITH (timeout = '1s')"), '25P02');
    assert.equal((await c.query('COMMIT')).command, 'ROLLBACK');
    await rejectsWith(c.query('FETCH 1 FROM c'), '34000');
    // ROLLBACK ends cursors too
    await c.query('BEGIN');
    await c.query('DECLARE r CURSOR FOR SUBSCRIBE js_curerr');
    assert.equal((await fetchRows(c, 'r', 'ALL', '1s')).length, 3);
    await c.query('ROLLBACK');
    await rejectsWith(c.query('FETCH 1 FROM r'), '34000');
    // CLOSE ends one cursor within the block
    await c.query('BEGIN');
    await c.query('DECLARE r1 CURSOR FOR SELECT k FROM js_curerr ORDER BY k');
    assert.equal((await c.query('CLOSE r1')).command, 'CLOSE');
    await rejectsWith(c.query('FETCH 1 FROM r1'), '34000');
    await c.query('ROLLBACK');
    // WITH HOLD: allowed outside a block, and survives until CLOSE
    await c.query('DECLARE h CURSOR WITH HOLD FOR SELECT k FROM js_curerr ORDER BY k');
    let r = await c.query('FETCH 2 FROM h');
    assert.deepEqual(r.rows, [{ k: 1 }, { k: 2 }]);
    await c.query('BEGIN');
    await c.query('COMMIT');
    r = await c.query('FETCH ALL FROM h');
    assert.deepEqual(r.rows, [{ k: 3 }]);
    await c.query('CLOSE h');
    await rejectsWith(c.query('FETCH 1 FROM h'), '34000');
    // the connection is fine after all that
    r = await c.query('SELECT count(*) AS n FROM js_curerr');
    assert.deepEqual(r.rows, [{ n: '3' }]);
  });
});

// ---------------------------------------------------------------------------------------
// Runner

function startOwnServer() {
  const repo = path.resolve(__dirname, '..', '..', '..');
  let bin = process.env.EDDY_BIN ||
    path.join(process.env.CARGO_TARGET_DIR || 'target', 'debug', 'eddy');
  if (!path.isAbsolute(bin)) bin = path.join(repo, bin);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-node-'));
  const log = fs.openSync(path.join(tmp, 'eddy.log'), 'w');
  const proc = spawn(bin, ['--listen', '127.0.0.1:0', '--data-dir', path.join(tmp, 'data')], {
    stdio: ['ignore', 'pipe', log],
  });
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout });
    rl.once('line', (line) => {
      const m = /^eddy ready on [\d.]+:(\d+)$/.exec(line.trim());
      if (m) resolve({ proc, tmp, port: m[1] });
      else reject(new Error(`eddy did not start: ${line}`));
    });
    proc.once('exit', (code) => reject(new Error(`eddy exited (${code}); see ${tmp}/eddy.log`)));
  });
}

async function main() {
  const args = process.argv.slice(2);
  const verbose = args.includes('-v');
  const k = args.indexOf('-k');
  const pattern = k >= 0 ? args[k + 1] : null;
  let own = null;
  if (!PORT) {
    own = await startOwnServer();
    PORT = own.port;
  }
  const xfailMode = process.env.EDDY_CLIENTS_KNOWN_BUGS === 'xfail';
  let passed = 0;
  let failed = 0;
  let xfailed = 0;
  const failures = [];
  try {
    for (const t of tests) {
      if (pattern && !t.name.includes(pattern)) continue;
      const t0 = Date.now();
      const secs = () => ((Date.now() - t0) / 1000).toFixed(2);
      try {
        await Promise.race([
          t.fn(),
          new Promise((_, rej) => setTimeout(() => rej(new Error('timed out after 60s')), 60000).unref()),
        ]);
        if (t.bug && xfailMode) {
          // strict: a fixed bug must lose its marker
          failed++;
          failures.push(t.name);
          console.log(`FAIL ${t.name}: XPASS, the bug is fixed: remove its bug marker`);
          continue;
        }
        passed++;
        console.log(`ok   ${t.name} (${secs()}s)`);
      } catch (e) {
        if (t.bug && xfailMode) {
          xfailed++;
          console.log(`xfail ${t.name} (${secs()}s): ${t.bug}`);
          continue;
        }
        failed++;
        failures.push(t.name);
        console.log(`FAIL ${t.name} (${secs()}s)`);
        if (t.bug) console.log(`    known eddy bug: ${t.bug}`);
        const text = verbose || !(e instanceof assert.AssertionError) ? e.stack || String(e) : e.message;
        for (const line of String(text).split('\n')) console.log(`    ${line}`);
      }
    }
  } finally {
    if (own) {
      own.proc.kill('SIGTERM');
      fs.rmSync(own.tmp, { recursive: true, force: true });
    }
  }
  if (failures.length) console.log(`failed: ${failures.join(', ')}`);
  console.log(`pg: ${passed} passed, ${failed} failed` + (xfailed ? `, ${xfailed} xfail` : ''));
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.log(`FAIL runner: ${e.stack || e}`);
  console.log('pg: 0 passed, 1 failed');
  process.exitCode = 1;
});
