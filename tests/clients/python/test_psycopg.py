#!/usr/bin/env python3
"""psycopg 3 against a real eddy server.

    python test_psycopg.py [-k SUBSTRING] [-v]

Connects to EDDY_HOST/EDDY_PORT (default 127.0.0.1); when EDDY_PORT is not set it starts
its own eddy from EDDY_BIN (default: <repo>/target/debug/eddy, or $CARGO_TARGET_DIR).
Each test uses its own uniquely named objects. The last line printed is
`psycopg: N passed, N failed`; the exit status is 1 when anything failed.

Tests whose names end in `_bug` fail on eddy today: they state what Postgres does and
what eddy does instead (see the docstring of each). With EDDY_CLIENTS_KNOWN_BUGS=xfail
their failures are reported as `xfail` and not counted as failures (and one that passes
counts as a failure, so the marker is removed once the bug is fixed).
"""

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from decimal import Decimal

try:
    import psycopg
except ImportError:  # not installed here: use the venv run.sh keeps in the cache
    _cache = os.environ.get("EDDY_CACHE_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".cache")
    _venv_python = os.path.join(os.path.abspath(_cache), "clients", "venv", "bin", "python")
    if os.path.exists(_venv_python) and not os.environ.get("EDDY_PSYCOPG_REEXEC"):
        os.environ["EDDY_PSYCOPG_REEXEC"] = "1"
        os.execv(_venv_python, [_venv_python, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("psycopg is not installed: run tests/clients/run.sh once, or pip install 'psycopg[binary]'")
from psycopg import errors, pq
from psycopg.pq import Format, TransactionStatus

HOST = os.environ.get("EDDY_HOST", "127.0.0.1")
PORT = os.environ.get("EDDY_PORT")

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def dsn(**extra):
    parts = {
        "host": HOST,
        "port": PORT,
        "user": "eddy",
        "dbname": "eddy",
        "sslmode": "disable",
        "connect_timeout": "10",
    }
    parts.update(extra)
    return " ".join(f"{k}={v}" for k, v in parts.items())


def connect(autocommit=True, **extra):
    return psycopg.connect(dsn(**extra), autocommit=autocommit)


def eq(actual, expected, what=""):
    if actual != expected or type(actual) is not type(expected):
        raise AssertionError(
            f"{what + ': ' if what else ''}expected {expected!r} ({type(expected).__name__}), "
            f"got {actual!r} ({type(actual).__name__})"
        )


def raises(exc_class, sqlstate, fn, *args, **kwargs):
    """fn(*args) must raise exc_class with the given SQLSTATE; returns the exception."""
    try:
        fn(*args, **kwargs)
    except psycopg.Error as e:
        if not isinstance(e, exc_class) or e.sqlstate != sqlstate:
            raise AssertionError(
                f"expected {exc_class.__name__} ({sqlstate}), got {type(e).__name__} "
                f"({e.sqlstate}): {e}"
            ) from e
        return e
    raise AssertionError(f"expected {exc_class.__name__} ({sqlstate}), but nothing was raised")


def rows(conn, sql, params=None, **kw):
    return conn.execute(sql, params, **kw).fetchall()


# ---------------------------------------------------------------------------------------
# Connecting


@test
def connect_and_server_parameters():
    with connect() as conn:
        eq(conn.info.status, pq.ConnStatus.OK)
        eq(conn.info.transaction_status, TransactionStatus.IDLE)
        eq(conn.info.parameter_status("server_version"), "15.0 (eddy 0.1.0)")
        eq(conn.info.server_version, 150000)
        eq(conn.info.parameter_status("TimeZone"), "UTC")
        eq(conn.info.parameter_status("client_encoding"), "UTF8")
        eq(conn.info.parameter_status("DateStyle"), "ISO, MDY")
        eq(conn.info.parameter_status("integer_datetimes"), "on")
        eq(conn.info.parameter_status("standard_conforming_strings"), "on")
        eq(rows(conn, "SELECT 1 AS one"), [(1,)])
        eq(rows(conn, "SHOW server_version"), [("15.0 (eddy 0.1.0)",)])
        eq(rows(conn, "SHOW TIME ZONE"), [("UTC",)])


@test
def many_connections_in_sequence():
    for i in range(20):
        with connect() as conn:
            eq(rows(conn, "SELECT %s::int * 2 AS x", (i,)), [(i * 2,)])


@test
def set_and_show_session_variables():
    with connect() as conn:
        conn.execute("SET application_name = 'py-suite'")
        eq(rows(conn, "SHOW application_name"), [("py-suite",)])
        conn.execute("SET application_name TO 'other'")
        eq(rows(conn, "SHOW application_name"), [("other",)])
        e = raises(errors.FeatureNotSupported, "0A000", conn.execute, "SET TIME ZONE 'Europe/Paris'")
        if "UTC" not in str(e):
            raise AssertionError(f"message should say sessions use UTC: {e}")
        eq(rows(conn, "SHOW TIME ZONE"), [("UTC",)])


@test
def startup_application_name():
    """libpq sends application_name in the startup packet; Postgres reports it in
    SHOW application_name (and a ParameterStatus). eddy shows '' instead."""
    with connect(application_name="py-startup") as conn:
        eq(rows(conn, "SHOW application_name"), [("py-startup",)])


# ---------------------------------------------------------------------------------------
# Simple statements


@test
def create_insert_select_update_delete():
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE py_crud (k INT PRIMARY KEY, v TEXT, n BIGINT)")
        eq(cur.statusmessage, "CREATE TABLE")
        cur.execute("INSERT INTO py_crud VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)")
        eq(cur.statusmessage, "INSERT 0 3")
        eq(cur.rowcount, 3)
        cur.execute("SELECT k, v, n FROM py_crud ORDER BY k")
        eq(cur.fetchall(), [(1, "a", 10), (2, "b", 20), (3, "c", 30)])
        eq([c.name for c in cur.description], ["k", "v", "n"])
        eq([c.type_code for c in cur.description], [23, 25, 20])
        cur.execute("UPDATE py_crud SET n = n + 1 WHERE k >= 2")
        eq(cur.statusmessage, "UPDATE 2")
        eq(cur.rowcount, 2)
        cur.execute("DELETE FROM py_crud WHERE v = 'a'")
        eq(cur.statusmessage, "DELETE 1")
        cur.execute("SELECT k, v, n FROM py_crud ORDER BY k")
        eq(cur.fetchall(), [(2, "b", 21), (3, "c", 31)])
        cur.execute("DELETE FROM py_crud WHERE k = 99")
        eq(cur.statusmessage, "DELETE 0")
        eq(cur.rowcount, 0)
        cur.execute("SELECT k FROM py_crud WHERE k > 100")
        eq(cur.fetchall(), [])
        cur.execute("DROP TABLE py_crud")
        eq(cur.statusmessage, "DROP TABLE")


@test
def queries_joins_groups_subqueries():
    with connect() as conn:
        conn.execute("CREATE TABLE py_q_emp (id INT PRIMARY KEY, name TEXT, dept INT, pay INT)")
        conn.execute("CREATE TABLE py_q_dept (id INT PRIMARY KEY, title TEXT)")
        conn.execute("INSERT INTO py_q_dept VALUES (1, 'eng'), (2, 'ops'), (3, 'empty')")
        conn.execute(
            "INSERT INTO py_q_emp VALUES (1, 'ann', 1, 100), (2, 'bo', 1, 120), "
            "(3, 'cy', 2, 90), (4, 'di', NULL, 50)"
        )
        eq(
            rows(
                conn,
                "SELECT d.title, count(e.id) AS n, sum(e.pay) AS total "
                "FROM py_q_dept d LEFT JOIN py_q_emp e ON e.dept = d.id "
                "GROUP BY d.title ORDER BY d.title",
            ),
            [("empty", 0, None), ("eng", 2, 220), ("ops", 1, 90)],
        )
        eq(
            rows(
                conn,
                "SELECT name FROM py_q_emp WHERE pay > (SELECT avg(pay) FROM py_q_emp) ORDER BY name",
            ),
            [("ann",), ("bo",)],
        )
        eq(
            rows(
                conn,
                "SELECT name, upper(name) AS up, length(name) AS len, coalesce(dept, -1) AS d "
                "FROM py_q_emp WHERE name LIKE %s ORDER BY id",
                ("%i",),
            ),
            [("di", "DI", 2, -1)],
        )
        eq(
            rows(conn, "SELECT count(*) AS n, sum(value) AS s FROM generate_series(1, 1000)"),
            [(1000, 500500)],
        )


@test
def multiple_statements_in_one_query():
    with connect() as conn:
        cur = conn.execute("SELECT 1 AS a; SELECT 'two' AS b, 3 AS c")
        eq(cur.fetchall(), [(1,)])
        eq(cur.nextset(), True)
        eq(cur.fetchall(), [("two", 3)])
        eq(cur.nextset(), None)
        conn.execute(
            "CREATE TABLE py_multi (k INT PRIMARY KEY); INSERT INTO py_multi VALUES (1), (2)"
        )
        eq(rows(conn, "SELECT k FROM py_multi ORDER BY k"), [(1,), (2,)])


@test
def large_result():
    with connect() as conn:
        conn.execute("CREATE TABLE py_large (k INT PRIMARY KEY, v TEXT)")
        conn.execute(
            "INSERT INTO py_large SELECT CAST(value AS INT), 'row ' || CAST(value AS TEXT) "
            "FROM generate_series(1, 5000)"
        )
        cur = conn.execute("SELECT k, v FROM py_large ORDER BY k")
        got = cur.fetchall()
        eq(len(got), 5000)
        eq(got[0], (1, "row 1"))
        eq(got[-1], (5000, "row 5000"))
        eq(sum(k for k, _ in got), 5000 * 5001 // 2)
        cur = conn.cursor(binary=True)
        cur.execute("SELECT k, v FROM py_large WHERE k %% %s = 0 ORDER BY k", (1000,))
        eq(cur.fetchall(), [(i * 1000, f"row {i * 1000}") for i in range(1, 6)])


# ---------------------------------------------------------------------------------------
# Parameters (psycopg 3 sends $1 parameters with the extended protocol)


@test
def server_side_parameters():
    with connect() as conn:
        conn.execute("CREATE TABLE py_params (k INT PRIMARY KEY, v TEXT)")
        cur = conn.cursor()
        cur.execute("INSERT INTO py_params VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
        eq(cur.statusmessage, "INSERT 0 2")
        eq(rows(conn, "SELECT v FROM py_params WHERE k = %s", (2,)), [("two",)])
        eq(rows(conn, "SELECT k FROM py_params WHERE v = %(v)s", {"v": "one"}), [(1,)])
        eq(rows(conn, "SELECT %s::int + 1 AS x", (41,)), [(42,)])
        eq(rows(conn, "SELECT %s::text || %s::text AS x", ("ab", "cd")), [("abcd",)])
        eq(rows(conn, "SELECT k FROM py_params WHERE k IN (%s, %s) ORDER BY k", (2, 3)), [(2,)])
        cur.execute("UPDATE py_params SET v = %s WHERE k = %s", ("uno", 1))
        eq(cur.statusmessage, "UPDATE 1")
        cur.execute("DELETE FROM py_params WHERE k = %s", (2,))
        eq(cur.statusmessage, "DELETE 1")
        eq(rows(conn, "SELECT k, v FROM py_params ORDER BY k"), [(1, "uno")])
        # text params in both directions keep every character
        s = "it's \"quoted\"\n\ttab ünïcödé 🎉 \\ backslash"
        eq(rows(conn, "SELECT %s::text AS s", (s,)), [(s,)])
        eq(rows(conn, "SELECT %s::text AS a, %s::text AS b", ("", None)), [("", None)])


@test
def untyped_parameter_keeps_client_type():
    """`SELECT %s` with an int: psycopg sends the parameter typed (int2/int8), and Postgres
    reports that type for the column, so an int comes back as an int. eddy describes the
    column as text (OID 25) and returns '42'; with binary results it sends the 8-byte
    integer under a text column, which cannot be decoded."""
    with connect() as conn:
        eq(rows(conn, "SELECT %s AS x", (42,)), [(42,)])
        cur = conn.cursor(binary=True)
        cur.execute("SELECT %s AS x", (9000000000,))
        eq(cur.fetchall(), [(9000000000,)])


@test
def parameter_in_where_matches_every_column_type():
    with connect() as conn:
        conn.execute(
            "CREATE TABLE py_where (k INT PRIMARY KEY, b BOOLEAN, si SMALLINT, bi BIGINT, "
            "r REAL, d DOUBLE PRECISION, n NUMERIC(10,2), t TEXT, vc VARCHAR(10), dt DATE, "
            "ts TIMESTAMP, tz TIMESTAMPTZ)"
        )
        conn.execute(
            "INSERT INTO py_where VALUES (1, true, 12, 9000000000, 1.5, 0.25, 1.50, 'hello', "
            "'vc', '2024-01-01', '2024-01-01 10:00:00.5', '2024-01-01 10:00:00+00'), "
            "(2, false, 13, 1, 2.5, 0.5, 2.50, 'bye', 'x', '2024-01-02', '2024-01-02 10:00:00', "
            "'2024-01-02 10:00:00+00')"
        )
        probes = {
            "b": True,
            "si": 12,
            "bi": 9000000000,
            "r": 1.5,
            "d": 0.25,
            "n": Decimal("1.50"),
            "t": "hello",
            "vc": "vc",
            "dt": dt.date(2024, 1, 1),
            "ts": dt.datetime(2024, 1, 1, 10, 0, 0, 500000),
            "tz": dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        }
        for col, value in probes.items():
            eq(rows(conn, f"SELECT k FROM py_where WHERE {col} = %s", (value,)), [(1,)], col)


# ---------------------------------------------------------------------------------------
# Types: every supported type as a parameter and as a result, text and binary


TYPE_CASES = [
    # (column type, python value, expected oid)
    ("BOOLEAN", True, 16),
    ("BOOLEAN", False, 16),
    ("SMALLINT", -32768, 21),
    ("INT", 2147483647, 23),
    ("INT", -7, 23),
    ("BIGINT", 9007199254740993, 20),
    ("BIGINT", -9223372036854775808, 20),
    ("REAL", 0.25, 700),
    ("DOUBLE PRECISION", 1e20, 701),
    ("DOUBLE PRECISION", -0.1, 701),
    ("NUMERIC(10,2)", Decimal("12345678.91"), 1700),
    ("NUMERIC(10,2)", Decimal("-0.05"), 1700),
    ("NUMERIC(5,2)", Decimal("1.50"), 1700),
    ("TEXT", "héllo wörld", 25),
    ("TEXT", "", 25),
    ("DATE", dt.date(2024, 2, 29), 1082),
    ("DATE", dt.date(1999, 12, 31), 1082),
    ("TIMESTAMP", dt.datetime(2024, 1, 1, 10, 0, 0), 1114),
    ("TIMESTAMP", dt.datetime(1999, 12, 31, 23, 59, 59, 999999), 1114),
    ("TIMESTAMPTZ", dt.datetime(2024, 1, 1, 10, 0, tzinfo=dt.timezone.utc), 1184),
    ("BYTEA", b"\xde\xad\xbe\xef\x00\x01", 17),
    ("BYTEA", b"", 17),
]


def _type_roundtrip(binary_results):
    fails = []
    with connect() as conn:
        for i, (ctype, value, oid) in enumerate(TYPE_CASES):
            table = f"py_rt_{'b' if binary_results else 't'}_{i}"
            try:
                conn.execute(f"CREATE TABLE {table} (k INT PRIMARY KEY, x {ctype})")
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s), (%s, %s)", (1, value, 2, None))
                cur = conn.cursor(binary=binary_results)
                cur.execute(f"SELECT x FROM {table} ORDER BY k")
                got = cur.fetchall()
                eq(cur.description[0].type_code, oid, "column type oid")
                eq(cur.pgresult.fformat(0), int(Format.BINARY if binary_results else Format.TEXT), "format")
                eq(got, [(value,), (None,)])
                # and the same value as a typed parameter in a SELECT list
                cur.execute(f"SELECT CAST(%s AS {ctype}) AS x", (value,))
                eq(cur.fetchall(), [(value,)], "SELECT CAST(param)")
            except Exception as e:  # collect them all: one line per broken type
                fails.append(f"{ctype} {value!r}: {type(e).__name__}: {e}")
    if fails:
        raise AssertionError("\n    ".join([f"{len(fails)} type case(s) failed:"] + fails))


@test
def types_roundtrip_text_results():
    _type_roundtrip(binary_results=False)


@test
def types_roundtrip_binary_results():
    _type_roundtrip(binary_results=True)


@test
def varchar_and_text_formats_of_parameters():
    with connect() as conn:
        conn.execute("CREATE TABLE py_vc (k INT PRIMARY KEY, s VARCHAR(5))")
        conn.execute("INSERT INTO py_vc VALUES (%s, %s)", (1, "abcde"))
        eq(rows(conn, "SELECT s FROM py_vc"), [("abcde",)])
        raises(errors.StringDataRightTruncation, "22001", conn.execute,
               "INSERT INTO py_vc VALUES (%s, %s)", (2, "abcdef"))
        # %t forces text-format parameters, %b binary
        eq(rows(conn, "SELECT %t::int + %b::int AS x", (40, 2)), [(42,)])
        eq(rows(conn, "SELECT %t::date AS d", (dt.date(2024, 3, 1),)), [(dt.date(2024, 3, 1),)])
        eq(rows(conn, "SELECT %b::numeric(6,3) AS n", (Decimal("-12.345"),)), [(Decimal("-12.345"),)])
        eq(rows(conn, "SELECT %t::numeric(6,3) AS n", (Decimal("-12.345"),)), [(Decimal("-12.345"),)])


@test
def interval_results():
    with connect() as conn:
        sql = ("SELECT INTERVAL '1 day 2 hours' AS a, INTERVAL '3 months' AS b, "
               "INTERVAL '-90 minutes' AS c, INTERVAL '0 seconds' AS d, "
               "INTERVAL '4 days 1.5 seconds' AS e")
        want = [(dt.timedelta(days=1, hours=2), dt.timedelta(days=90),
                 dt.timedelta(minutes=-90), dt.timedelta(0),
                 dt.timedelta(days=4, seconds=1, microseconds=500000))]
        eq(rows(conn, sql), want, "text")
        cur = conn.cursor(binary=True)
        cur.execute(sql)
        eq(cur.fetchall(), want, "binary")
        eq(cur.description[0].type_code, 1186)
        conn.execute("CREATE TABLE py_iv (k INT PRIMARY KEY, iv INTERVAL)")
        conn.execute("INSERT INTO py_iv VALUES (1, '1 day 2 hours'), (2, '-5 minutes')")
        eq(rows(conn, "SELECT iv FROM py_iv ORDER BY k"),
           [(dt.timedelta(days=1, hours=2),), (dt.timedelta(minutes=-5),)])
        eq(rows(conn, "SELECT k FROM py_iv WHERE iv > INTERVAL '1 hour'"), [(1,)])


@test
def interval_parameter_binary():
    """psycopg sends a timedelta as a binary interval by default (%s). Postgres accepts it;
    eddy fails with 22P02 'cannot read binary parameter of type interval'."""
    with connect() as conn:
        conn.execute("CREATE TABLE py_ivb (k INT PRIMARY KEY, iv INTERVAL)")
        td = dt.timedelta(days=1, hours=2)
        conn.execute("INSERT INTO py_ivb VALUES (%s, %s)", (1, td))
        eq(rows(conn, "SELECT iv FROM py_ivb"), [(td,)])
        eq(rows(conn, "SELECT %s::interval AS x", (td,)), [(td,)])


@test
def interval_parameter_text():
    """With a text-format parameter (%t) psycopg sends '1 day 2:00:00', which Postgres
    reads as an interval. eddy rejects it in a SELECT (22P02), and in an INSERT it
    silently stores NULL instead of the value (or an error)."""
    with connect() as conn:
        conn.execute("CREATE TABLE py_ivt (k INT PRIMARY KEY, iv INTERVAL)")
        td = dt.timedelta(days=1, hours=2)
        try:
            conn.execute("INSERT INTO py_ivt VALUES (%t, %t)", (1, td))
        except psycopg.DataError:
            pass  # an error would at least not lose the value
        else:
            eq(rows(conn, "SELECT iv FROM py_ivt"), [(td,)], "value stored by INSERT")
        eq(rows(conn, "SELECT %t::interval AS x", (td,)), [(td,)])


@test
def bytea_text_parameter():
    """A bytea sent as a text parameter arrives in Postgres' hex format ('\\xdeadbeef').
    Postgres decodes it to 4 bytes; eddy stores the 10 characters of the hex string."""
    with connect() as conn:
        conn.execute("CREATE TABLE py_byt (k INT PRIMARY KEY, b BYTEA)")
        conn.execute("INSERT INTO py_byt VALUES (%s, %t)", (1, b"\xde\xad\xbe\xef"))
        eq(rows(conn, "SELECT b FROM py_byt"), [(b"\xde\xad\xbe\xef",)])


@test
def numeric_precision():
    with connect() as conn:
        conn.execute("CREATE TABLE py_num (k INT PRIMARY KEY, n NUMERIC(30,3))")
        big = Decimal("12345678901234567890.123")
        conn.execute("INSERT INTO py_num VALUES (%s, %s)", (1, big))
        conn.execute("INSERT INTO py_num VALUES (%s, %s)", (2, Decimal("0.001")))
        eq(rows(conn, "SELECT n FROM py_num ORDER BY k"), [(big,), (Decimal("0.001"),)])
        eq(rows(conn, "SELECT sum(n) AS s FROM py_num"), [(Decimal("12345678901234567890.124"),)])
        cur = conn.cursor(binary=True)
        cur.execute("SELECT n FROM py_num ORDER BY k")
        eq(cur.fetchall(), [(big,), (Decimal("0.001"),)])


@test
def numeric_literal_precision():
    """Postgres numeric literals are exact. eddy reads 12345678901234567890.123 through a
    float8 and stores 12345678901234567741.440."""
    with connect() as conn:
        conn.execute("CREATE TABLE py_numlit (k INT PRIMARY KEY, n NUMERIC(30,3))")
        conn.execute("INSERT INTO py_numlit VALUES (1, 12345678901234567890.123)")
        eq(rows(conn, "SELECT n FROM py_numlit"), [(Decimal("12345678901234567890.123"),)])
        eq(rows(conn, "SELECT 1.1::numeric(20,18) AS x"), [(Decimal("1.100000000000000000"),)])


@test
def binary_results_for_a_whole_row():
    with connect() as conn:
        conn.execute(
            "CREATE TABLE py_bin (k INT PRIMARY KEY, b BOOLEAN, si SMALLINT, bi BIGINT, r REAL, "
            "d DOUBLE PRECISION, n NUMERIC(5,2), t TEXT, vc VARCHAR(10), dt DATE, ts TIMESTAMP, "
            "tz TIMESTAMPTZ, iv INTERVAL, by BYTEA)"
        )
        conn.execute(
            "INSERT INTO py_bin VALUES (1, true, 12, 9000000000, 1.5, 1e20, 1.5, 'hello', 'vc', "
            "'2024-01-01', '2024-01-01 10:00:00', '2024-01-01 10:00:00+02', '1 day 2 hours', "
            "decode('deadbeef', 'hex')), "
            "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        )
        want = [
            (1, True, 12, 9000000000, 1.5, 1e20, Decimal("1.50"), "hello", "vc",
             dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, 10, 0),
             dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.timezone.utc),
             dt.timedelta(days=1, hours=2), b"\xde\xad\xbe\xef"),
            (2,) + (None,) * 13,
        ]
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute("SELECT * FROM py_bin ORDER BY k")
            got = cur.fetchall()
            fmt = int(Format.BINARY if binary else Format.TEXT)
            eq([cur.pgresult.fformat(i) for i in range(14)], [fmt] * 14, "result formats")
            eq(got, want, "binary" if binary else "text")
            # and through a parameterized statement
            cur.execute("SELECT * FROM py_bin WHERE k = %s", (1,))
            eq(cur.fetchall(), want[:1])


# ---------------------------------------------------------------------------------------
# Prepared statements


@test
def prepared_statement_reused():
    with connect() as conn:
        conn.execute("CREATE TABLE py_prep (k INT PRIMARY KEY, v TEXT)")
        for i in range(10):
            conn.execute("INSERT INTO py_prep VALUES (%s, %s)", (i, f"v{i}"), prepare=True)
        got = [rows(conn, "SELECT v FROM py_prep WHERE k = %s", (i,), prepare=True)
               for i in range(10)]
        eq(got, [[(f"v{i}",)] for i in range(10)])
        # the statements really are prepared server-side (named _pg3_N) and reused
        names = set(conn._prepared._names.values())
        if len(names) != 2:
            raise AssertionError(f"expected 2 prepared statements, psycopg has {names}")
        # default threshold: psycopg prepares after 5 executions of the same query
        for i in range(8):
            eq(rows(conn, "SELECT count(*) AS n FROM py_prep WHERE k < %s", (i,)), [(i,)])
        eq(len(set(conn._prepared._names.values())), 3)
        # a prepared statement keeps working after other statements and errors
        raises(errors.UndefinedTable, "42P01", conn.execute, "SELECT * FROM py_prep_nope")
        eq(rows(conn, "SELECT v FROM py_prep WHERE k = %s", (3,), prepare=True), [("v3",)])
        # results in binary from a prepared statement
        cur = conn.cursor(binary=True)
        cur.execute("SELECT k, v FROM py_prep WHERE k = %s", (4,), prepare=True)
        eq(cur.fetchall(), [(4, "v4")])


@test
def prepared_statement_sees_new_data():
    with connect() as conn:
        conn.execute("CREATE TABLE py_prep2 (k INT PRIMARY KEY)")
        for i in range(1, 6):
            conn.execute("INSERT INTO py_prep2 VALUES (%s)", (i,))
            eq(rows(conn, "SELECT count(*) AS n, max(k) AS m FROM py_prep2 WHERE k > %s", (0,),
                    prepare=True), [(i, i)])


@test
def executemany():
    with connect() as conn:
        conn.execute("CREATE TABLE py_many (k INT PRIMARY KEY, v TEXT, n NUMERIC(6,2))")
        cur = conn.cursor()
        data = [(i, f"row{i}", Decimal(i) / 4) for i in range(50)]
        cur.executemany("INSERT INTO py_many VALUES (%s, %s, %s)", data)
        eq(cur.rowcount, 50)
        eq(rows(conn, "SELECT count(*) AS n, sum(k) AS s, sum(n) AS t FROM py_many"),
           [(50, 1225, Decimal("306.25"))])
        eq(rows(conn, "SELECT v, n FROM py_many WHERE k = 7"), [("row7", Decimal("1.75"))])
        cur.executemany("UPDATE py_many SET v = %s WHERE k = %s", [("x", 1), ("y", 2)])
        eq(rows(conn, "SELECT k, v FROM py_many WHERE k < 3 ORDER BY k"),
           [(0, "row0"), (1, "x"), (2, "y")])
        cur.executemany("SELECT v FROM py_many WHERE k = %s", [(10,), (20,)], returning=True)
        got = [cur.fetchall()]
        while cur.nextset():
            got.append(cur.fetchall())
        eq(got, [[("row10",)], [("row20",)]])
        # a failing row stops executemany with the right error
        raises(errors.UniqueViolation, "23505", cur.executemany,
               "INSERT INTO py_many (k, v) VALUES (%s, %s)", [(100, "a"), (5, "dup")])
        eq(rows(conn, "SELECT v FROM py_many WHERE k = 5"), [("row5",)])


@test
def pipeline_mode():
    with connect() as conn:
        conn.execute("CREATE TABLE py_pipe (k INT PRIMARY KEY, v TEXT)")
        with conn.pipeline():
            c1 = conn.execute("INSERT INTO py_pipe VALUES (%s, %s)", (1, "a"))
            c2 = conn.execute("SELECT %s::int * 2 AS x", (21,))
            c3 = conn.execute("SELECT v FROM py_pipe WHERE k = %s", (1,))
            c4 = conn.execute("SELECT count(*) AS n FROM py_pipe")
        eq(c1.statusmessage, "INSERT 0 1")
        eq(c2.fetchall(), [(42,)])
        eq(c3.fetchall(), [("a",)])
        eq(c4.fetchall(), [(1,)])
        # an error inside a pipeline raises, and the connection recovers after it
        try:
            with conn.pipeline():
                conn.execute("SELECT 1 AS x")
                conn.execute("SELECT 1 / 0 AS boom")
                conn.execute("SELECT 3 AS y")
        except errors.DivisionByZero:
            pass
        else:
            raise AssertionError("DivisionByZero not raised from the pipeline")
        eq(rows(conn, "SELECT %s::text AS after", ("ok",)), [("ok",)])


@test
def fetch_styles_and_streaming():
    with connect() as conn:
        cur = conn.execute("SELECT CAST(value AS INT) AS v FROM generate_series(1, 5) ORDER BY v")
        eq(cur.rowcount, 5)
        eq(cur.fetchone(), (1,))
        eq(cur.fetchmany(2), [(2,), (3,)])
        eq(cur.fetchall(), [(4,), (5,)])
        eq(cur.fetchone(), None)
        # single-row mode (libpq streaming)
        got = list(conn.cursor().stream(
            "SELECT CAST(value AS INT) AS v FROM generate_series(1, 100) WHERE value > %s "
            "ORDER BY v", (10,)))
        eq(got, [(i,) for i in range(11, 101)])
        # an empty result still has a description
        cur = conn.execute("SELECT 1::int AS x WHERE false")
        eq([(c.name, c.type_code) for c in cur.description], [("x", 23)])
        eq(cur.fetchall(), [])
        # a 1 MB text value in both directions
        big = "é" * 500_000
        eq(rows(conn, "SELECT %s::text AS s, length(%s::text) AS n", (big, big)), [(big, 500_000)])
        # an empty query string
        cur = conn.execute("")
        eq(cur.pgresult.status, int(pq.ExecStatus.EMPTY_QUERY))


@test
def comment_only_query():
    """A query string holding only a comment: Postgres answers EmptyQueryResponse (as for
    ''). eddy sends no response at all before ReadyForQuery, and psycopg raises
    InternalError 'got no result from the query'."""
    with connect() as conn:
        cur = conn.execute("-- only a comment")
        eq(cur.pgresult.status, int(pq.ExecStatus.EMPTY_QUERY))


# ---------------------------------------------------------------------------------------
# Transactions


@test
def default_non_autocommit_mode():
    with connect(autocommit=False) as conn:
        eq(conn.info.transaction_status, TransactionStatus.IDLE)
        conn.execute("CREATE TABLE py_tx (k INT PRIMARY KEY, v TEXT)")
        # psycopg sent BEGIN before the statement
        eq(conn.info.transaction_status, TransactionStatus.INTRANS)
        conn.execute("INSERT INTO py_tx VALUES (%s, %s)", (1, "a"))
        conn.commit()
        eq(conn.info.transaction_status, TransactionStatus.IDLE)
        with connect() as other:
            eq(rows(other, "SELECT k, v FROM py_tx"), [(1, "a")])
        with conn.transaction():
            conn.execute("INSERT INTO py_tx VALUES (2, 'b')")
        eq(conn.info.transaction_status, TransactionStatus.IDLE)
        eq(rows(conn, "SELECT count(*) AS n FROM py_tx"), [(2,)])
        conn.commit()


@test
def rollback_warns_and_keeps_writes():
    with connect(autocommit=False) as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate, d.message_primary)))
        conn.execute("CREATE TABLE py_rb (k INT PRIMARY KEY)")
        conn.commit()
        eq(notices, [])
        conn.execute("SELECT count(*) FROM py_rb")
        conn.rollback()  # nothing written: no warning
        eq(notices, [])
        conn.execute("INSERT INTO py_rb VALUES (1)")
        conn.rollback()
        eq(len(notices), 1, "notices")
        eq(notices[0][:2], ("WARNING", "01000"))
        if "not rolled back" not in notices[0][2]:
            raise AssertionError(f"unexpected warning text: {notices[0][2]}")
        eq(rows(conn, "SELECT k FROM py_rb"), [(1,)])
        conn.rollback()


@test
def error_aborts_transaction_until_rollback():
    with connect(autocommit=False) as conn:
        conn.execute("CREATE TABLE py_abort (k INT PRIMARY KEY)")
        conn.commit()
        raises(errors.DivisionByZero, "22012", conn.execute, "SELECT 1 / 0 AS x")
        eq(conn.info.transaction_status, TransactionStatus.INERROR)
        raises(errors.InFailedSqlTransaction, "25P02", conn.execute, "SELECT 1")
        raises(errors.InFailedSqlTransaction, "25P02", conn.execute,
               "INSERT INTO py_abort VALUES (%s)", (1,))
        conn.rollback()
        eq(conn.info.transaction_status, TransactionStatus.IDLE)
        eq(rows(conn, "SELECT count(*) AS n FROM py_abort"), [(0,)])
        conn.rollback()
        # the context manager rolls back on an exception too
        try:
            with conn.transaction():
                conn.execute("SELECT * FROM py_abort_nope")
        except errors.UndefinedTable:
            pass
        else:
            raise AssertionError("UndefinedTable not raised")
        eq(conn.info.transaction_status, TransactionStatus.IDLE)
        eq(rows(conn, "SELECT 'fine' AS x"), [("fine",)])


@test
def rollback_after_error_warns_about_kept_writes():
    """A write before an error in a transaction block is kept by eddy, like any write.
    ROLLBACK after writes is documented to send a WARNING saying so, but when the block
    also had an error eddy sends none, so the client believes the write was undone."""
    with connect(autocommit=False) as conn:
        conn.execute("CREATE TABLE py_rbe (k INT PRIMARY KEY)")
        conn.commit()
        notices = []
        conn.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate)))
        conn.execute("INSERT INTO py_rbe VALUES (1)")
        raises(errors.DivisionByZero, "22012", conn.execute, "SELECT 1 / 0")
        conn.rollback()
        eq(rows(conn, "SELECT k FROM py_rbe"), [(1,)], "write kept")
        eq(notices, [("WARNING", "01000")])


# ---------------------------------------------------------------------------------------
# Errors


@test
def errors_have_classes_and_sqlstates():
    with connect() as conn:
        conn.execute("CREATE TABLE py_err (k INT PRIMARY KEY, v TEXT NOT NULL, s SMALLINT)")
        conn.execute("INSERT INTO py_err VALUES (1, 'one', 1)")
        conn.execute("CREATE STREAM py_err_s (a INT)")
        conn.execute("CREATE MATERIALIZED VIEW py_err_mv AS SELECT count(*) AS n FROM py_err")

        e = raises(errors.SyntaxError, "42601", conn.execute, "SELEC 1")
        eq(e.diag.statement_position, "1")
        eq(e.diag.severity, "ERROR")
        e = raises(errors.UndefinedTable, "42P01", conn.execute, "SELECT * FROM py_err_nope")
        eq(e.diag.message_primary, 'relation "py_err_nope" does not exist')
        eq(e.diag.statement_position, "15")
        e = raises(errors.UndefinedColumn, "42703", conn.execute, "SELECT nocol FROM py_err")
        eq(e.diag.message_primary, 'column "nocol" does not exist')
        eq(e.diag.statement_position, "8")
        raises(errors.UniqueViolation, "23505", conn.execute,
               "INSERT INTO py_err VALUES (1, 'dup', 1)")
        raises(errors.UniqueViolation, "23505", conn.execute,
               "INSERT INTO py_err VALUES (%s, %s, %s)", (1, "dup", 1))
        e = raises(errors.NotNullViolation, "23502", conn.execute,
                   "INSERT INTO py_err (k) VALUES (2)")
        eq(e.diag.message_primary,
           'null value in column "v" of relation "py_err" violates not-null constraint')
        raises(errors.NotNullViolation, "23502", conn.execute,
               "INSERT INTO py_err VALUES (%s, %s, %s)", (3, None, 1))
        raises(errors.NotNullViolation, "23502", conn.execute,
               "UPDATE py_err SET v = NULL WHERE k = 1")
        raises(errors.InvalidTextRepresentation, "22P02", conn.execute,
               "INSERT INTO py_err VALUES ('abc', 'x', 1)")
        raises(errors.InvalidTextRepresentation, "22P02", conn.execute,
               "SELECT k FROM py_err WHERE k = %t::int", ("abc",))
        raises(errors.NumericValueOutOfRange, "22003", conn.execute,
               "INSERT INTO py_err VALUES (4, 'x', 99999)")
        raises(errors.DivisionByZero, "22012", conn.execute, "SELECT 1 / 0 AS x")
        raises(errors.DivisionByZero, "22012", conn.execute, "SELECT %s::int / 0 AS x", (5,))
        raises(errors.WrongObjectType, "42809", conn.execute, "UPDATE py_err_s SET a = 1")
        raises(errors.WrongObjectType, "42809", conn.execute, "DELETE FROM py_err_s")
        raises(errors.DependentObjectsStillExist, "2BP01", conn.execute, "DROP TABLE py_err")
        raises(errors.DuplicateTable, "42P07", conn.execute, "CREATE TABLE py_err (k INT PRIMARY KEY)")
        raises(errors.FeatureNotSupported, "0A000", conn.execute, "SET TIME ZONE 'Asia/Tokyo'")
        # errors are all classes of psycopg.Error with the right DB-API parents
        e = raises(errors.UniqueViolation, "23505", conn.execute,
                   "INSERT INTO py_err VALUES (1, 'again', 1)")
        if not isinstance(e, psycopg.IntegrityError):
            raise AssertionError("UniqueViolation should be an IntegrityError")
        # the connection is fine after all that, and nothing changed
        eq(rows(conn, "SELECT k, v, s FROM py_err"), [(1, "one", 1)])
        eq(rows(conn, "SELECT n FROM py_err_mv"), [(1,)])
        conn.execute("DROP TABLE py_err CASCADE")
        raises(errors.UndefinedTable, "42P01", conn.execute, "SELECT * FROM py_err_mv")


@test
def not_null_literal_sqlstate():
    """An explicit NULL literal for a NOT NULL column: Postgres raises 23502
    (NotNullViolation). eddy raises XX000 'Column 'column2' is declared as non-nullable'."""
    with connect() as conn:
        conn.execute("CREATE TABLE py_nnl (k INT PRIMARY KEY, v TEXT NOT NULL)")
        raises(errors.NotNullViolation, "23502", conn.execute,
               "INSERT INTO py_nnl VALUES (1, NULL)")


@test
def numeric_overflow_sqlstate():
    """A value too large for numeric(5,2): Postgres raises 22003 (NumericValueOutOfRange,
    'numeric field overflow'). eddy raises XX000 from its optimizer."""
    with connect() as conn:
        conn.execute("CREATE TABLE py_nov (k INT PRIMARY KEY, n NUMERIC(5,2))")
        raises(errors.NumericValueOutOfRange, "22003", conn.execute,
               "INSERT INTO py_nov VALUES (1, 12345.678)")
        raises(errors.NumericValueOutOfRange, "22003", conn.execute,
               "INSERT INTO py_nov VALUES (%s, %s)", (2, Decimal("12345.678")))


# ---------------------------------------------------------------------------------------
# Materialized views and streams


@test
def materialized_view_follows_inserts():
    with connect() as conn:
        conn.execute("CREATE TABLE py_mv_src (id INT PRIMARY KEY, cat TEXT, amount BIGINT)")
        conn.execute(
            "CREATE MATERIALIZED VIEW py_mv AS SELECT cat, count(*) AS n, sum(amount) AS total "
            "FROM py_mv_src GROUP BY cat"
        )
        eq(rows(conn, "SELECT * FROM py_mv"), [])
        expected = {}
        for i in range(1, 31):
            cat = "abc"[i % 3]
            conn.execute("INSERT INTO py_mv_src VALUES (%s, %s, %s)", (i, cat, i * 10))
            n, total = expected.get(cat, (0, 0))
            expected[cat] = (n + 1, total + i * 10)
            # read-your-writes: the view reflects the insert as soon as it returns
            eq(rows(conn, "SELECT n, total FROM py_mv WHERE cat = %s", (cat,)),
               [expected[cat]], f"after insert {i}")
        eq(rows(conn, "SELECT cat, n, total FROM py_mv ORDER BY cat"),
           [(c, *expected[c]) for c in sorted(expected)])
        conn.execute("UPDATE py_mv_src SET amount = 0 WHERE cat = 'a'")
        eq(rows(conn, "SELECT n, total FROM py_mv WHERE cat = 'a'"), [(10, 0)])
        conn.execute("DELETE FROM py_mv_src WHERE cat = 'b'")
        eq(rows(conn, "SELECT cat FROM py_mv ORDER BY cat"), [("a",), ("c",)])
        eq(rows(conn, "SHOW MATERIALIZED VIEWS"), [("py_mv",)])
        eq(rows(conn, "DESCRIBE py_mv"),
           [("cat", "text", True, False), ("n", "bigint", True, False),
            ("total", "bigint", True, False)])
        plan = "\n".join(r[0] for r in rows(conn, "EXPLAIN py_mv"))
        if "py_mv" not in plan or "py_mv_src" not in plan:
            raise AssertionError(f"EXPLAIN should mention the view and its source:\n{plan}")


@test
def materialized_view_seen_by_other_connections():
    with connect() as writer, connect() as reader:
        writer.execute("CREATE TABLE py_mv2_src (k INT PRIMARY KEY, v INT)")
        writer.execute("CREATE MATERIALIZED VIEW py_mv2 AS SELECT max(v) AS m, count(*) AS n "
                       "FROM py_mv2_src")
        for i in range(1, 11):
            writer.execute("INSERT INTO py_mv2_src VALUES (%s, %s)", (i, i * i))
            eq(rows(reader, "SELECT m, n FROM py_mv2"), [(i * i, i)], f"after insert {i}")
        # a view over a join
        writer.execute("CREATE TABLE py_mv2_names (v INT PRIMARY KEY, name TEXT)")
        writer.execute("CREATE MATERIALIZED VIEW py_mv2_join AS SELECT s.k, n.name "
                       "FROM py_mv2_src s JOIN py_mv2_names n ON s.v = n.v")
        eq(rows(reader, "SELECT * FROM py_mv2_join"), [])
        writer.execute("INSERT INTO py_mv2_names VALUES (%s, %s), (%s, %s)", (4, "four", 9, "nine"))
        eq(rows(reader, "SELECT k, name FROM py_mv2_join ORDER BY k"), [(2, "four"), (3, "nine")])


@test
def stream_with_view():
    with connect() as conn:
        conn.execute("CREATE STREAM py_events (user_id INT, kind TEXT, at TIMESTAMP)")
        conn.execute("CREATE MATERIALIZED VIEW py_events_per_user AS "
                     "SELECT user_id, count(*) AS n, max(at) AS last_at FROM py_events GROUP BY user_id")
        cur = conn.cursor()
        cur.executemany("INSERT INTO py_events VALUES (%s, %s, %s)", [
            (1, "click", dt.datetime(2024, 1, 1, 10, 0)),
            (2, "view", dt.datetime(2024, 1, 1, 11, 0)),
            (1, "view", dt.datetime(2024, 1, 1, 12, 30)),
        ])
        eq(rows(conn, "SELECT user_id, n, last_at FROM py_events_per_user ORDER BY user_id"),
           [(1, 2, dt.datetime(2024, 1, 1, 12, 30)), (2, 1, dt.datetime(2024, 1, 1, 11, 0))])
        streams = [r[0] for r in rows(conn, "SHOW STREAMS")]
        if "py_events" not in streams:
            raise AssertionError(f"SHOW STREAMS: {streams}")
        raises(errors.WrongObjectType, "42809", conn.execute,
               "UPDATE py_events SET kind = %s", ("x",))
        raises(errors.WrongObjectType, "42809", conn.execute,
               "DELETE FROM py_events WHERE user_id = %s", (1,))
        eq(rows(conn, "SELECT count(*) AS n FROM py_events"), [(3,)])


@test
def show_describe_drop():
    with connect() as conn:
        conn.execute("CREATE TABLE py_sdd (k BIGINT PRIMARY KEY, v VARCHAR(20) NOT NULL, "
                     "n NUMERIC(8,3), ts TIMESTAMPTZ)")
        tables = [r[0] for r in rows(conn, "SHOW TABLES")]
        if "py_sdd" not in tables:
            raise AssertionError(f"SHOW TABLES: {tables}")
        cur = conn.execute("DESCRIBE py_sdd")
        eq([c.name for c in cur.description], ["name", "type", "nullable", "primary_key"])
        eq(cur.fetchall(), [
            ("k", "bigint", False, True),
            ("v", "character varying(20)", False, False),
            ("n", "numeric(8,3)", True, False),
            ("ts", "timestamp with time zone", True, False),
        ])
        conn.execute("DROP TABLE py_sdd")
        eq("py_sdd" in [r[0] for r in rows(conn, "SHOW TABLES")], False)
        conn.execute("DROP TABLE IF EXISTS py_sdd")
        raises(errors.UndefinedTable, "42P01", conn.execute, "DROP TABLE py_sdd")
        raises(errors.UndefinedTable, "42P01", conn.execute, "DESCRIBE py_sdd")
        eq(conn.execute("FLUSH").statusmessage, "FLUSH")


# ---------------------------------------------------------------------------------------
# Concurrency


@test
def concurrent_connections():
    with connect() as conn:
        conn.execute("CREATE TABLE py_conc (k INT PRIMARY KEY, w INT)")
        conn.execute("CREATE MATERIALIZED VIEW py_conc_mv AS SELECT w, count(*) AS n FROM py_conc GROUP BY w")
    errs = []

    def worker(w):
        try:
            with connect() as c:
                for i in range(25):
                    c.execute("INSERT INTO py_conc VALUES (%s, %s)", (w * 1000 + i, w))
                    got = c.execute("SELECT n FROM py_conc_mv WHERE w = %s", (w,)).fetchall()
                    if got != [(i + 1,)]:
                        raise AssertionError(f"worker {w} after insert {i}: {got}")
        except Exception as e:  # reported by the main thread
            errs.append(f"worker {w}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errs:
        raise AssertionError("; ".join(errs))
    with connect() as conn:
        eq(rows(conn, "SELECT w, n FROM py_conc_mv ORDER BY w"), [(w, 25) for w in range(4)])
        eq(rows(conn, "SELECT count(*) AS n FROM py_conc"), [(100,)])


# ---------------------------------------------------------------------------------------
# Push subscriptions: SUBSCRIBE through cursors (DECLARE/FETCH), COPY, AS OF, UPSERT


def now_ms():
    return int(time.time() * 1000)


def check_epochs(got, after, what=""):
    """Every row's epoch (its first column) is an int of milliseconds since 1970 near
    now, greater than `after`, and the epochs never go down; returns the last one."""
    last = after
    for r in got:
        e = r[0]
        if type(e) is not int:
            raise AssertionError(f"{what}: epoch {e!r} is not an int ({type(e).__name__})")
        if not after < e or abs(e - now_ms()) > 600_000:
            raise AssertionError(f"{what}: epoch {e} not after {after} / not near now {now_ms()}")
        if e < last:
            raise AssertionError(f"{what}: epoch went backwards ({last} then {e}) in {got}")
        last = e
    return last


def fetch(conn, cursor, n="ALL", timeout="2s"):
    """FETCH n FROM cursor WITH (timeout = ...): waits for at least one row (at most the
    timeout), then returns what is there."""
    return conn.execute(f"FETCH {n} FROM {cursor} WITH (timeout = '{timeout}')").fetchall()


def one_epoch(got, after, what):
    """The rows of one epoch, after `after`: returns (epoch, rows without the epoch,
    sorted)."""
    if not got:
        raise AssertionError(f"{what}: no rows")
    last = check_epochs(got, after, what)
    epochs = {r[0] for r in got}
    if len(epochs) != 1:
        raise AssertionError(f"{what}: expected one epoch, got {sorted(epochs)} in {got}")
    return last, sorted((r[1:] for r in got), key=repr)


def show_epoch(conn):
    (e,) = conn.execute("SHOW EPOCH").fetchone()
    if type(e) is not int:
        raise AssertionError(f"SHOW EPOCH returned {e!r}")
    return e


def subscriptions(conn, relation):
    return [r for r in rows(conn, "SHOW SUBSCRIPTIONS") if r[0] == relation]


def wait_subscriptions(conn, relation, want, seconds=3.0):
    """SHOW SUBSCRIPTIONS rows for `relation` become `want` within `seconds` (a
    subscription that ended is let go of at the next epoch or heartbeat, ~1 s)."""
    deadline = time.monotonic() + seconds
    while True:
        got = subscriptions(conn, relation)
        if got == want or time.monotonic() > deadline:
            eq(got, want, f"SHOW SUBSCRIPTIONS for {relation}")
            return
        time.sleep(0.05)


@test
def subscribe_cursor_follows_view_changes():
    with connect() as writer, connect() as reader:
        writer.execute("CREATE TABLE py_sub_t (k INT PRIMARY KEY, g TEXT, v INT)")
        writer.execute("INSERT INTO py_sub_t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'a', 5)")
        writer.execute("CREATE MATERIALIZED VIEW py_sub_v AS "
                       "SELECT g, sum(v) AS total, count(*) AS n FROM py_sub_t GROUP BY g")
        reader.execute("BEGIN")
        eq(reader.execute("DECLARE c CURSOR FOR SUBSCRIBE py_sub_v").statusmessage,
           "DECLARE CURSOR")
        eq(reader.info.transaction_status, TransactionStatus.INTRANS)

        # the snapshot: the view's contents as insertions, all in one epoch
        before = show_epoch(writer)
        cur = reader.execute("FETCH ALL FROM c WITH (timeout = '1s')")
        eq([(c.name, c.type_code) for c in cur.description],
           [("epoch", 20), ("diff", 20), ("g", 25), ("total", 20), ("n", 20)])
        eq(cur.statusmessage, "FETCH 2")
        epoch, got = one_epoch(cur.fetchall(), 0, "snapshot")
        eq(got, [(1, "a", 15, 2), (1, "b", 20, 1)], "snapshot")
        if epoch < before:
            raise AssertionError(f"snapshot epoch {epoch} is before SHOW EPOCH {before}")

        # nothing new: FETCH waits for its timeout, then returns no rows
        t0 = time.monotonic()
        cur = reader.execute("FETCH ALL FROM c WITH (timeout = '200ms')")
        waited = time.monotonic() - t0
        eq(cur.fetchall(), [])
        eq(cur.statusmessage, "FETCH 0")
        if not 0.15 <= waited < 5:
            raise AssertionError(f"FETCH with a 200ms timeout returned after {waited:.3f}s")

        # an UPDATE: a retraction and an insertion in one epoch, after the last one, and
        # SHOW EPOCH (after the write returned) is at least that epoch
        writer.execute("UPDATE py_sub_t SET v = 11 WHERE k = 1")
        shown = show_epoch(writer)
        epoch, got = one_epoch(fetch(reader, "c"), epoch, "update")
        eq(got, [(-1, "a", 15, 2), (1, "a", 16, 2)], "update")
        if epoch > shown:
            raise AssertionError(f"change at epoch {epoch} but SHOW EPOCH said {shown}")

        # an INSERT touching an existing group and a new one: one epoch
        writer.execute("INSERT INTO py_sub_t VALUES (%s, %s, %s), (%s, %s, %s)",
                       (4, "a", 1, 5, "c", 7))
        epoch, got = one_epoch(fetch(reader, "c"), epoch, "insert")
        eq(got, [(-1, "a", 16, 2), (1, "a", 17, 3), (1, "c", 7, 1)], "insert")

        # a DELETE that empties a group retracts its row
        writer.execute("DELETE FROM py_sub_t WHERE k = 2")
        epoch, got = one_epoch(fetch(reader, "c"), epoch, "delete")
        eq(got, [(-1, "b", 20, 1)], "delete")

        # a write that leaves the view as it was sends nothing (changes are
        # consolidated per epoch): the next FETCH sees only the write after it
        writer.execute("UPDATE py_sub_t SET g = 'a' WHERE k = 3")
        writer.execute("UPDATE py_sub_t SET v = 0 WHERE k = 5")
        epoch, got = one_epoch(fetch(reader, "c"), epoch, "after a no-op write")
        eq(got, [(-1, "c", 7, 1), (1, "c", 0, 1)], "after a no-op write")

        # FETCH n takes at most n rows; the rest wait for the next FETCH
        writer.execute("INSERT INTO py_sub_t VALUES (6, 'd', 1), (7, 'e', 2), (8, 'f', 3)")
        first = fetch(reader, "c", 2)
        eq(len(first), 2, f"FETCH 2 returned {first}")
        second = fetch(reader, "c", 2)
        eq(len(second), 1, f"the second FETCH 2 returned {second}")
        epoch, got = one_epoch(first + second, epoch, "three groups")
        eq(got, [(1, "d", 1, 1), (1, "e", 2, 1), (1, "f", 3, 1)], "three groups")
        eq(fetch(reader, "c", timeout="50ms"), [], "nothing left")

        eq(subscriptions(writer, "py_sub_v"), [("py_sub_v", 1)])
        reader.execute("COMMIT")
        # the cursor ended with its transaction
        raises(errors.InvalidCursorName, "34000", reader.execute, "FETCH 1 FROM c")
        reader.execute("ROLLBACK")
        wait_subscriptions(writer, "py_sub_v", [])
        eq(rows(reader, "SELECT g, total, n FROM py_sub_v ORDER BY g"),
           [("a", 17, 3), ("c", 0, 1), ("d", 1, 1), ("e", 2, 1), ("f", 3, 1)])


@test
def declare_cursor_over_select_fetch_forward():
    """What psycopg's named cursors send, by hand: DECLARE "name" CURSOR FOR SELECT in a
    transaction, then FETCH FORWARD n FROM "name" chunk by chunk (text and binary)."""
    with connect() as w, connect(autocommit=False) as conn:
        w.execute("CREATE TABLE py_dcur (k INT PRIMARY KEY, v TEXT)")
        w.execute("INSERT INTO py_dcur SELECT CAST(value AS INT), 'r' || CAST(value AS TEXT) "
                  "FROM generate_series(1, 25)")
        conn.execute('DECLARE "Py Cur" CURSOR FOR SELECT k, v FROM py_dcur WHERE k > 3 ORDER BY k')
        eq(conn.info.transaction_status, TransactionStatus.INTRANS)
        chunks = []
        for binary in (False, True, False, False):
            cur = conn.cursor(binary=binary)
            cur.execute('FETCH FORWARD 10 FROM "Py Cur"')
            eq([(c.name, c.type_code) for c in cur.description], [("k", 23), ("v", 25)])
            chunks.append((cur.statusmessage, cur.fetchall()))
        want = [(k, f"r{k}") for k in range(4, 26)]
        eq(chunks, [("FETCH 10", want[:10]), ("FETCH 10", want[10:20]), ("FETCH 2", want[20:]),
                    ("FETCH 0", [])])
        eq(conn.execute('CLOSE "Py Cur"').statusmessage, "CLOSE CURSOR")
        raises(errors.InvalidCursorName, "34000", conn.execute, 'FETCH 1 FROM "Py Cur"')
        conn.rollback()
        # the rows were read at DECLARE: later writes do not show up in the cursor
        conn.execute("DECLARE snap CURSOR FOR SELECT count(*) AS n FROM py_dcur")
        w.execute("INSERT INTO py_dcur VALUES (100, 'late')")
        eq(rows(conn, "FETCH ALL FROM snap"), [(25,)])
        conn.commit()


@test
def server_side_cursor_itersize():
    """psycopg's server-side cursor (conn.cursor(name=...)) sends DECLARE "name" CURSOR
    FOR ..., then a protocol Describe of the portal "name" to learn the columns, as
    Postgres makes every cursor a portal (was a bug: 26000 'Portal not found')."""
    with connect() as w, connect(autocommit=False) as conn:
        w.execute("CREATE TABLE py_named_t (k INT PRIMARY KEY, v TEXT)")
        w.execute("INSERT INTO py_named_t SELECT CAST(value AS INT), 'r' || CAST(value AS TEXT) "
                  "FROM generate_series(1, 25)")
        cur = conn.cursor(name="py_named")
        cur.itersize = 10
        cur.execute("SELECT k, v FROM py_named_t ORDER BY k")
        eq([(c.name, c.type_code) for c in cur.description], [("k", 23), ("v", 25)])
        it = iter(cur)
        eq(next(it), (1, "r1"))
        eq(list(it), [(k, f"r{k}") for k in range(2, 26)])
        cur.close()
        conn.commit()
        # fetchmany / fetchall on a named cursor, and one WITH HOLD outside a transaction
        with conn.cursor(name="py_named2") as cur:
            cur.execute("SELECT k FROM py_named_t WHERE k <= 5 ORDER BY k")
            eq(cur.fetchmany(2), [(1,), (2,)])
            eq(cur.fetchall(), [(3,), (4,), (5,)])
        conn.commit()


@test
def declare_cursor_with_parameters():
    """DECLARE ... CURSOR FOR SELECT ... WHERE k > $1 with a bound parameter (what
    psycopg's server-side cursors send for cur.execute(query, params)); was a bug: 42P02
    'this statement does not take parameters'."""
    with connect() as w, connect(autocommit=False) as conn:
        w.execute("CREATE TABLE py_dcur_p (k INT PRIMARY KEY)")
        w.execute("INSERT INTO py_dcur_p VALUES (1), (2), (3), (4)")
        conn.execute("DECLARE pc CURSOR FOR SELECT k FROM py_dcur_p WHERE k > %s ORDER BY k", (2,))
        eq(rows(conn, "FETCH ALL FROM pc"), [(3,), (4,)])
        conn.commit()


@test
def subscribe_copy_streams_live_and_cancels():
    with connect() as writer, connect() as reader:
        writer.execute("CREATE TABLE py_sub_copy (k INT PRIMARY KEY, v TEXT)")
        writer.execute("INSERT INTO py_sub_copy VALUES (1, 'one')")
        # if rows stopped arriving the reads below would block for ever: a watchdog
        # cancels the COPY after 10 s, which fails the test
        watchdog = threading.Timer(10, reader.cancel)
        watchdog.start()
        got = []
        error = None
        cur = reader.cursor()
        try:
            with cur.copy("COPY (SUBSCRIBE py_sub_copy) TO STDOUT") as cp:
                cp.set_types(["int8", "int8", "int4", "text"])
                it = cp.rows()
                got.append(next(it))  # the snapshot
                eq(got[0][1:], (1, 1, "one"), "snapshot row")
                check_epochs(got, 0, "snapshot")
                eq(subscriptions(writer, "py_sub_copy"), [("py_sub_copy", 1)])
                # a row written now arrives while the COPY is still running
                t0 = time.monotonic()
                writer.execute("INSERT INTO py_sub_copy VALUES (%s, %s)", (2, "two"))
                shown = show_epoch(writer)
                got.append(next(it))
                live = time.monotonic() - t0
                eq(got[1][1:], (1, 2, "two"), "inserted row")
                if live > 3:
                    raise AssertionError(f"the insert took {live:.1f}s to arrive")
                if got[1][0] > shown:
                    raise AssertionError(f"row epoch {got[1][0]} > SHOW EPOCH {shown}")
                writer.execute("UPDATE py_sub_copy SET v = 'uno' WHERE k = 1")
                got += [next(it), next(it)]
                check_epochs(got, 0, "copy rows")
                if got[2][0] != got[3][0] or got[2][0] <= got[1][0]:
                    raise AssertionError(f"update not in one new epoch: {got}")
                eq(sorted(r[1:] for r in got[2:]), [(-1, 1, "one"), (1, 1, "uno")], "update")
                watchdog.cancel()
                # cancel from another thread ends the COPY with 57014
                threading.Timer(0.2, reader.cancel).start()
                try:
                    for r in it:
                        got.append(r)
                except psycopg.Error as e:
                    error = e
        finally:
            watchdog.cancel()
        eq(len(got), 4, f"rows after the cancel: {got[4:]}")
        if not isinstance(error, errors.QueryCanceled) or error.sqlstate != "57014":
            raise AssertionError(f"expected QueryCanceled (57014), got {error!r}")
        # the connection is usable afterwards, and the subscription goes away
        eq(reader.info.transaction_status, TransactionStatus.IDLE)
        eq(rows(reader, "SELECT k, v FROM py_sub_copy ORDER BY k"), [(1, "uno"), (2, "two")])
        wait_subscriptions(writer, "py_sub_copy", [])
        # COPY of a query subscription, with the rows read as raw COPY text
        with reader.cursor().copy(
                "COPY (SUBSCRIBE (SELECT v FROM py_sub_copy WHERE k = 2)) TO STDOUT") as cp:
            line = bytes(cp.read())
            reader.cancel()
            error = None
            try:
                while cp.read():
                    pass
            except psycopg.Error as e:
                error = e
        if not isinstance(error, errors.QueryCanceled):
            raise AssertionError(f"the second COPY: expected QueryCanceled, got {error!r}")
        m = re.fullmatch(rb"(\d+)\t1\ttwo\n", line)
        if not m or abs(int(m.group(1)) - now_ms()) > 600_000:
            raise AssertionError(f"COPY text line {line!r}")
        eq(rows(reader, "SELECT 1 AS x"), [(1,)])


@test
def subscribe_resume_as_of_last_progress():
    with connect() as writer, connect() as reader:
        writer.execute("CREATE TABLE py_sub_res (k INT PRIMARY KEY, v TEXT)")
        writer.execute("INSERT INTO py_sub_res VALUES (1, 'one')")

        def read_until(cursor, epoch, progress_after):
            """FETCH until a progress row at or after `epoch`; checks that a progress
            row is never followed by a change at or before its epoch. Returns (changes
            without progress rows, last progress epoch)."""
            changes, progress = [], progress_after
            deadline = time.monotonic() + 5
            while progress < epoch:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no progress to {epoch}; last {progress}, {changes}")
                for r in fetch(reader, cursor, timeout="1500ms"):
                    e, progressed, *rest = r
                    if type(e) is not int or type(progressed) is not bool:
                        raise AssertionError(f"bad row {r}")
                    if progressed:
                        eq(rest, [None, None, None], "a progress row's other columns")
                        if e < progress:
                            raise AssertionError(f"progress went back: {progress} then {e}")
                        progress = e
                    else:
                        if e <= progress:
                            raise AssertionError(f"change {r} at or before progress {progress}")
                        changes.append((e, *rest))
            return changes, progress

        reader.execute("BEGIN")
        cur = reader.execute("DECLARE c CURSOR FOR SUBSCRIBE py_sub_res WITH (PROGRESS = true)")
        cur = reader.execute("FETCH 1 FROM c WITH (timeout = '1s')")
        eq([(c.name, c.type_code) for c in cur.description],
           [("epoch", 20), ("progressed", 16), ("diff", 20), ("k", 23), ("v", 25)])
        snapshot = cur.fetchall()
        eq([r[1:] for r in snapshot], [(False, 1, 1, "one")])
        changes, progress = read_until("c", snapshot[0][0], 0)
        eq(changes, [])
        writer.execute("INSERT INTO py_sub_res VALUES (2, 'two')")
        changes, progress = read_until("c", show_epoch(writer), progress)
        eq([r[1:] for r in changes], [(1, 2, "two")])
        if not snapshot[0][0] < changes[0][0] <= progress:
            raise AssertionError(f"epochs: snapshot {snapshot}, change {changes}, {progress}")
        reader.execute("COMMIT")

        # while nobody is subscribed: three writes in three epochs
        writer.execute("INSERT INTO py_sub_res VALUES (3, 'three')")
        writer.execute("UPDATE py_sub_res SET v = 'uno' WHERE k = 1")
        writer.execute("DELETE FROM py_sub_res WHERE k = 2")
        missed_until = show_epoch(writer)

        # resume AS OF the last progress seen: exactly the missed changes, no snapshot
        reader.execute("BEGIN")
        reader.execute(f"DECLARE r CURSOR FOR SUBSCRIBE py_sub_res "
                       f"WITH (SNAPSHOT = false, PROGRESS = true) AS OF {progress}")
        changes, _ = read_until("r", missed_until, progress)
        check_epochs(changes, progress, "resumed")
        by_epoch = {}
        for e, *rest in changes:
            by_epoch.setdefault(e, []).append(tuple(rest))
        eq([sorted(v) for v in by_epoch.values()],
           [[(1, 3, "three")], [(-1, 1, "one"), (1, 1, "uno")], [(-1, 2, "two")]], "missed")
        if max(by_epoch) > missed_until:
            raise AssertionError(f"changes after SHOW EPOCH {missed_until}: {changes}")
        # and it goes on live from there
        writer.execute("INSERT INTO py_sub_res VALUES (4, 'four')")
        live, _ = read_until("r", show_epoch(writer), missed_until)
        eq([r[1:] for r in live], [(1, 4, "four")])
        reader.execute("COMMIT")

        # AS OF without options has no snapshot either, and no progress column
        reader.execute("BEGIN")
        reader.execute(f"DECLARE r2 CURSOR FOR SUBSCRIBE py_sub_res AS OF {progress}")
        got = []
        while len(got) < 5:
            more = fetch(reader, "r2", timeout="1s")
            if not more:
                break
            got += more
        check_epochs(got, progress, "AS OF")
        eq(sorted(r[1:] for r in got),
           [(-1, 1, "one"), (-1, 2, "two"), (1, 1, "uno"), (1, 3, "three"), (1, 4, "four")])
        reader.execute("COMMIT")
        eq(rows(reader, "SELECT k, v FROM py_sub_res ORDER BY k"),
           [(1, "uno"), (3, "three"), (4, "four")])


@test
def subscribe_envelope_upsert_cursor():
    with connect() as writer, connect(autocommit=False) as reader:
        writer.execute("CREATE TABLE py_sub_up (k INT PRIMARY KEY, g TEXT, v INT)")
        writer.execute("INSERT INTO py_sub_up VALUES (1, 'a', 10), (2, 'b', 20), (3, 'a', 5)")
        writer.execute("CREATE MATERIALIZED VIEW py_sub_up_v AS "
                       "SELECT g, sum(v) AS total, count(*) AS n FROM py_sub_up GROUP BY g")
        # psycopg opens the transaction block itself (autocommit off)
        reader.execute("DECLARE u CURSOR FOR SUBSCRIBE py_sub_up_v ENVELOPE UPSERT (KEY (g))")
        eq(reader.info.transaction_status, TransactionStatus.INTRANS)
        cur = reader.execute("FETCH ALL FROM u WITH (timeout = '1s')")
        eq([(c.name, c.type_code) for c in cur.description],
           [("epoch", 20), ("state", 25), ("g", 25), ("total", 20), ("n", 20)])
        epoch, got = one_epoch(cur.fetchall(), 0, "snapshot")
        eq(got, [("upsert", "a", 15, 2), ("upsert", "b", 20, 1)], "snapshot")
        # an update: one row per key with the new value (not -1/+1)
        writer.execute("UPDATE py_sub_up SET v = 100 WHERE k = 1")
        epoch, got = one_epoch(fetch(reader, "u"), epoch, "update")
        eq(got, [("upsert", "a", 105, 2)], "update")
        # a key that disappears: 'delete', its non-key columns NULL
        writer.execute("DELETE FROM py_sub_up WHERE k = 2")
        epoch, got = one_epoch(fetch(reader, "u"), epoch, "delete")
        eq(got, [("delete", "b", None, None)], "delete")
        # moving a row to another group: the old key deleted, the new one upserted
        writer.execute("INSERT INTO py_sub_up VALUES (4, 'c', 1)")
        epoch, got = one_epoch(fetch(reader, "u"), epoch, "insert")
        eq(got, [("upsert", "c", 1, 1)], "insert")
        writer.execute("UPDATE py_sub_up SET g = 'z' WHERE k = 4")
        epoch, got = one_epoch(fetch(reader, "u"), epoch, "key change")
        eq(got, [("delete", "c", None, None), ("upsert", "z", 1, 1)], "key change")
        eq(fetch(reader, "u", timeout="100ms"), [])
        reader.commit()

        # a compound key on a table, without a snapshot, with progress rows
        reader.execute("DECLARE u2 CURSOR FOR SUBSCRIBE py_sub_up ENVELOPE UPSERT (KEY (k, g)) "
                       "WITH (SNAPSHOT = false, PROGRESS = true)")
        writer.execute("UPDATE py_sub_up SET v = v + 1 WHERE g = 'a'")
        shown = show_epoch(writer)
        got = []
        deadline = time.monotonic() + 5
        while not any(r[1] and r[0] >= shown for r in got) and time.monotonic() < deadline:
            got += fetch(reader, "u2")
        cur = reader.execute("FETCH ALL FROM u2 WITH (timeout = '10ms')")
        eq([c.name for c in cur.description], ["epoch", "progressed", "state", "k", "g", "v"])
        changes = [r for r in got if not r[1]]
        epoch, vals = one_epoch(changes, epoch, "compound key")
        eq(vals, [(False, "upsert", 1, "a", 101), (False, "upsert", 3, "a", 6)], "compound key")
        reader.commit()
        raises(errors.InvalidCursorName, "34000", reader.execute, "FETCH 1 FROM u2")
        reader.rollback()
        # a key column that does not exist
        raises(errors.UndefinedColumn, "42703", reader.execute,
               "DECLARE u3 CURSOR FOR SUBSCRIBE py_sub_up ENVELOPE UPSERT (KEY (nope))")
        reader.rollback()


# ---------------------------------------------------------------------------------------
# Runner


def find_repo():
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def start_own_server():
    """Start an eddy for a standalone run; returns (process, tmpdir)."""
    repo = find_repo()
    binary = os.environ.get("EDDY_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "eddy")
    if not os.path.isabs(binary):
        binary = os.path.join(repo, binary)
    tmp = tempfile.mkdtemp(prefix="eddy-psycopg-")
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(tmp, "data")],
        stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "eddy.log"), "wb"), text=True)
    line = proc.stdout.readline()
    m = re.match(r"eddy ready on [\d.]+:(\d+)$", line.strip())
    if not m:
        proc.kill()
        sys.exit(f"eddy did not start (first line {line!r}); see {tmp}/eddy.log")
    return proc, tmp, m.group(1)


def main():
    global PORT
    args = sys.argv[1:]
    verbose = "-v" in args
    pattern = args[args.index("-k") + 1] if "-k" in args else None
    proc = tmp = None
    if not PORT:
        proc, tmp, PORT = start_own_server()
    xfail_mode = os.environ.get("EDDY_CLIENTS_KNOWN_BUGS") == "xfail"
    passed = failed = xfailed = 0
    failures = []
    try:
        for fn in TESTS:
            if pattern and pattern not in fn.__name__:
                continue
            known_bug = fn.__name__.endswith("_bug")
            t0 = time.monotonic()
            try:
                fn()
            except Exception as e:
                if known_bug and xfail_mode:
                    xfailed += 1
                    print(f"xfail {fn.__name__} ({time.monotonic() - t0:.2f}s): {e}".splitlines()[0])
                    continue
                failed += 1
                failures.append(fn.__name__)
                print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.2f}s)")
                if fn.__doc__:
                    print("    known eddy bug: " + " ".join(fn.__doc__.split()))
                detail = traceback.format_exc() if verbose or not isinstance(e, AssertionError) \
                    else f"AssertionError: {e}\n"
                for line in detail.rstrip().splitlines():
                    print("    " + line)
            else:
                if known_bug and xfail_mode:
                    # strict: a fixed bug must lose its marker (rename the test)
                    failed += 1
                    failures.append(fn.__name__)
                    print(f"FAIL {fn.__name__}: XPASS, the bug is fixed: drop '_bug' from the name")
                    continue
                passed += 1
                print(f"ok   {fn.__name__} ({time.monotonic() - t0:.2f}s)")
            sys.stdout.flush()
    finally:
        if proc:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("failed: " + " ".join(failures))
    print(f"psycopg: {passed} passed, {failed} failed" + (f", {xfailed} xfail" if xfailed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
