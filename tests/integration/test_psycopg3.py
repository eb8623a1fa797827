# psycopg 3 through pgveil: text, binary, prepared, pipeline, server cursors,
# executemany, COPY, LISTEN/NOTIFY. Owns tables pg3_* in database `test`.
import datetime
import decimal
import threading
import time

import psycopg
import pytest

ROWS_SQL = ("SELECT id, name, price, tags, meta, created, blob, note, flag, big, ts "
            "FROM pg3_items WHERE id BETWEEN %s AND %s ORDER BY id")


@pytest.fixture(scope="module")
def items(pg):
    pg.sql("DROP TABLE IF EXISTS pg3_items;"
           "CREATE TABLE pg3_items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[],"
           " meta jsonb, created date, blob bytea, note varchar(20), flag boolean, big bigint,"
           " ts timestamptz);"
           "INSERT INTO pg3_items SELECT g, 'item ' || g || ' żółw', g * 1.25, ARRAY['t' || g % 3, NULL],"
           " jsonb_build_object('k', g), date '2024-01-01' + g, decode(md5(g::text), 'hex'),"
           " CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END, g % 2 = 0, g::bigint * 10000000000,"
           " timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'"
           " FROM generate_series(1, 2000) g", dbname="test")
    return "pg3_items"


def expected_row(i):
    return (i, "item %d żółw" % i, decimal.Decimal(i) * decimal.Decimal("1.25"),
            ["t%d" % (i % 3), None], {"k": i}, datetime.date(2024, 1, 1) + datetime.timedelta(days=i),
            None, None if i % 7 == 0 else "n%d" % i, i % 2 == 0, i * 10000000000,
            datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(minutes=i))


def check_rows(rows, lo, hi):
    import hashlib
    assert len(rows) == hi - lo + 1
    for r in rows:
        exp = list(expected_row(r[0]))
        got = list(r)
        assert bytes(got[6]) == hashlib.md5(str(r[0]).encode()).digest()
        got[6] = None
        assert got[:10] == exp[:10]
        assert got[10] == exp[10]
    assert [r[0] for r in rows] == list(range(lo, hi + 1))


def test_text_results_equal_direct(items, direct, pgveil):
    with direct.connect() as d, pgveil.connect() as v:
        ref = d.execute(ROWS_SQL, (1, 500)).fetchall()
        got = v.execute(ROWS_SQL, (1, 500)).fetchall()
        assert got == ref
        check_rows(got, 1, 500)
        # parameterless query: psycopg sends a simple Query
        assert v.execute("SELECT count(*), sum(price) FROM pg3_items").fetchone() == \
            (2000, decimal.Decimal("2501250.00"))


def test_binary_results_equal_direct(items, direct, pgveil):
    with direct.connect() as d, pgveil.connect() as v:
        ref = d.cursor(binary=True).execute(ROWS_SQL, (1, 2000)).fetchall()
        cur = v.cursor(binary=True)
        got = cur.execute(ROWS_SQL, (1, 2000)).fetchall()
        assert all(col.type_code for col in cur.description)
        assert cur.pgresult.fformat(0) == 1  # really binary
        assert got == ref
        check_rows(got, 1, 2000)


def test_prepared_repeated(items, pgveil):
    with pgveil.connect() as v:
        for i in range(1, 31):
            row = v.execute("SELECT id, name, note FROM pg3_items WHERE id = %s", (i,), prepare=True).fetchone()
            assert row == (i, "item %d żółw" % i, None if i % 7 == 0 else "n%d" % i)
        for i in range(1, 11):
            cur = v.cursor(binary=True)
            rows = cur.execute(ROWS_SQL, (i, i + 5), prepare=True).fetchall()
            check_rows(rows, i, i + 5)
        n = v.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '_pg3_%%'").fetchone()[0]
        assert n >= 2  # the server really holds named statements


def test_pipeline_many_queries(items, pgveil):
    with pgveil.connect() as v:
        v.execute("DROP TABLE IF EXISTS pg3_pipe")
        v.execute("CREATE TABLE pg3_pipe (id int, v text)")
        curs = []
        with v.pipeline():
            for i in range(1, 301):
                v.execute("INSERT INTO pg3_pipe VALUES (%s, %s)", (i, "v%d" % i))
                curs.append((i, v.execute("SELECT id, name FROM pg3_items WHERE id = %s", (i,))))
            bcur = v.cursor(binary=True)
            bcur.execute(ROWS_SQL, (100, 199))
            total = v.execute("SELECT count(*), sum(id) FROM pg3_pipe")
        for i, c in curs:
            assert c.fetchall() == [(i, "item %d żółw" % i)]
        check_rows(bcur.fetchall(), 100, 199)
        assert total.fetchone() == (300, 45150)


def test_pipeline_error_then_recovery(items, pgveil):
    with pgveil.connect() as v:
        with v.pipeline() as p:
            a = v.execute("SELECT 1")
            v.execute("SELECT 1/0")
            # psycopg reads results while it queues: depending on timing the
            # error surfaces at the next execute or at sync; either way the
            # statement after the error is skipped by the server.
            skipped = None
            with pytest.raises(psycopg.errors.DivisionByZero):
                skipped = v.execute("SELECT 2")
                p.sync()
            later = [v.execute("SELECT %s::int * 2", (i,)) for i in range(50)]
            p.sync()
            assert a.fetchone() == (1,)
            if skipped is not None:
                with pytest.raises(psycopg.ProgrammingError):
                    skipped.fetchone()
            assert [c.fetchone()[0] for c in later] == [i * 2 for i in range(50)]
        # and a transaction aborted by the error inside a pipeline rolls back
        v.autocommit = False
        v.execute("DROP TABLE IF EXISTS pg3_pipe_tx")
        v.execute("CREATE TABLE pg3_pipe_tx (id int)")
        v.commit()
        with pytest.raises(psycopg.errors.UniqueViolation):
            with v.pipeline():
                v.execute("INSERT INTO pg3_pipe_tx VALUES (1)")
                v.execute("CREATE UNIQUE INDEX ON pg3_pipe_tx (id)")
                v.execute("INSERT INTO pg3_pipe_tx VALUES (1)")
                v.execute("INSERT INTO pg3_pipe_tx VALUES (2)")
        v.rollback()
        assert v.execute("SELECT count(*) FROM pg3_pipe_tx").fetchone() == (0,)
        v.rollback()


def test_server_side_cursors(items, pgveil):
    with pgveil.connect(autocommit=False) as v:
        cur = v.cursor("pg3_named")
        cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        seen, total = 0, 0
        while True:
            rows = cur.fetchmany(997)
            if not rows:
                break
            seen += len(rows)
            total += sum(r[0] for r in rows)
            assert rows[0][1] is not None and len(rows[0][1]) == 32
        assert (seen, total) == (20000, 20000 * 20001 // 2)
        cur.close()
        bcur = v.cursor("pg3_named_bin", binary=True)
        bcur.execute(ROWS_SQL, (1, 1000))
        rows = bcur.fetchmany(10) + bcur.fetchmany(990) + bcur.fetchall()
        check_rows(rows, 1, 1000)
        bcur.close()
        scur = v.cursor("pg3_scroll", scrollable=True)
        scur.execute("SELECT id, note FROM pg3_items ORDER BY id")
        scur.scroll(699)
        assert scur.fetchone() == (700, None)
        scur.scroll(-10)
        assert scur.fetchone() == (691, "n691")
        scur.close()
        v.commit()


def test_executemany(items, pgveil):
    with pgveil.connect() as v:
        v.execute("DROP TABLE IF EXISTS pg3_many")
        v.execute("CREATE TABLE pg3_many (id int PRIMARY KEY, v text, d numeric)")
        cur = v.cursor()
        cur.executemany("INSERT INTO pg3_many VALUES (%s, %s, %s)",
                        [(i, "v%d" % i, decimal.Decimal(i) / 4) for i in range(1, 1001)])
        assert v.execute("SELECT count(*), sum(id), sum(d), min(v), max(v) FROM pg3_many").fetchone() == \
            (1000, 500500, decimal.Decimal("125125.00"), "v1", "v999")
        cur.executemany("UPDATE pg3_many SET v = v || '!' WHERE id = %s RETURNING id, v",
                        [(i,) for i in (5, 6, 7)], returning=True)
        got = []
        while True:
            got.extend(cur.fetchall())
            if not cur.nextset():
                break
        assert got == [(5, "v5!"), (6, "v6!"), (7, "v7!")]


def test_copy_from_stdin_100k(pgveil):
    with pgveil.connect() as v:
        v.execute("DROP TABLE IF EXISTS pg3_copy")
        v.execute("CREATE TABLE pg3_copy (id int, v text, d numeric)")
        cur = v.cursor()
        with cur.copy("COPY pg3_copy (id, v, d) FROM STDIN") as cp:
            for i in range(100000):
                cp.write_row((i, "row %d\ttab" % i, decimal.Decimal(i) / 100))
        assert cur.rowcount == 100000
        assert v.execute("SELECT count(*), sum(id), sum(d), count(DISTINCT v) FROM pg3_copy").fetchone() == \
            (100000, 4999950000, decimal.Decimal("49999500.00"), 100000)
        assert v.execute("SELECT v FROM pg3_copy WHERE id = 77").fetchone() == ("row 77\ttab",)
        # binary COPY FROM
        v.execute("TRUNCATE pg3_copy")
        with cur.copy("COPY pg3_copy (id, v, d) FROM STDIN WITH (FORMAT binary)") as cp:
            cp.set_types(["int4", "text", "numeric"])
            for i in range(20000):
                cp.write_row((i, "b%d" % i, decimal.Decimal(i)))
        assert v.execute("SELECT count(*), sum(id), sum(d) FROM pg3_copy").fetchone() == \
            (20000, 199990000, decimal.Decimal(199990000))


def copy_out(ep, sql):
    with ep.connect() as c:
        buf = bytearray()
        with c.cursor().copy(sql) as cp:
            for chunk in cp:
                buf += chunk
        return bytes(buf)


@pytest.mark.parametrize("fmt", ["text", "csv", "binary"])
def test_copy_to_stdout_identical(items, direct, pgveil, fmt):
    sql = "COPY (SELECT * FROM pg3_items ORDER BY id) TO STDOUT WITH (FORMAT %s)" % fmt
    ref = copy_out(direct, sql)
    got = copy_out(pgveil, sql)
    assert len(ref) > 100000
    if fmt == "binary":
        assert ref.startswith(b"PGCOPY\n\xff\r\n\0")
    else:
        assert ref.count(b"\n") == 2000
    assert got == ref
    # a whole table, not a query
    assert copy_out(pgveil, "COPY pg3_items TO STDOUT") == copy_out(direct, "COPY pg3_items TO STDOUT")


def test_copy_from_error_midway(pgveil):
    with pgveil.connect() as v:
        v.execute("DROP TABLE IF EXISTS pg3_copy_err")
        v.execute("CREATE TABLE pg3_copy_err (id int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with v.cursor().copy("COPY pg3_copy_err FROM STDIN") as cp:
                for i in range(5000):
                    cp.write(b"%d\n" % i)
                cp.write(b"oops\n")
                for i in range(5000):
                    cp.write(b"%d\n" % i)
        assert v.execute("SELECT count(*) FROM pg3_copy_err").fetchone() == (0,)


def test_listen_notify(pgveil, direct):
    got = []
    with pgveil.connect() as listener, direct.connect() as d, pgveil.connect() as v:
        listener.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
        listener.execute("LISTEN pg3_chan")
        listener.execute('LISTEN "Mixed Case"')
        d.execute("NOTIFY pg3_chan, 'from direct: żółw'")
        v.execute("SELECT pg_notify('pg3_chan', %s)", ("from pgveil " + "x" * 5000,))
        v.execute("""NOTIFY "Mixed Case", ''""")
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            listener.execute("SELECT 1")
            time.sleep(0.05)
        assert got == [("pg3_chan", "from direct: żółw"),
                       ("pg3_chan", "from pgveil " + "x" * 5000),
                       ("Mixed Case", "")]


def test_listen_notify_generator(pgveil, direct):
    """A listener blocked in notifies() (idle, no query running) is woken."""
    with pgveil.connect() as listener:
        listener.execute("LISTEN pg3_gen")

        def send():
            time.sleep(0.5)
            with direct.connect() as d:
                for i in range(3):
                    d.execute("SELECT pg_notify('pg3_gen', %s)", ("msg %d" % i,))

        t = threading.Thread(target=send)
        t.start()
        payloads = []
        timer = threading.Timer(15, listener.cancel)  # safety net against a hang
        timer.start()
        try:
            for n in listener.notifies():
                payloads.append(n.payload)
                if len(payloads) == 3:
                    break
        finally:
            timer.cancel()
            t.join()
        assert payloads == ["msg 0", "msg 1", "msg 2"]


def test_transactions_and_savepoints(pgveil):
    with pgveil.connect(autocommit=False) as v:
        v.execute("DROP TABLE IF EXISTS pg3_tx")
        v.execute("CREATE TABLE pg3_tx (id int)")
        v.commit()
        with v.transaction():
            v.execute("INSERT INTO pg3_tx VALUES (1)")
            with pytest.raises(psycopg.errors.DivisionByZero):
                with v.transaction():
                    v.execute("INSERT INTO pg3_tx VALUES (2)")
                    v.execute("SELECT 1/0")
            v.execute("INSERT INTO pg3_tx VALUES (3)")
        assert v.execute("SELECT array_agg(id ORDER BY id) FROM pg3_tx").fetchone() == ([1, 3],)
        v.rollback()
        assert v.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_parameter_status_and_session_state(pgveil):
    with pgveil.connect(application_name="pg3 app-1") as v:
        assert v.info.parameter_status("application_name") == "pg3 app-1"
        assert v.info.parameter_status("server_encoding") == "UTF8"
        v.execute("SET application_name = 'renamed'")
        assert v.info.parameter_status("application_name") == "renamed"
        v.execute("SET TimeZone = 'Asia/Tokyo'")
        assert v.info.parameter_status("TimeZone") == "Asia/Tokyo"
        assert v.execute("SELECT current_setting('TimeZone')").fetchone() == ("Asia/Tokyo",)


def test_concurrent_clients(items, pgveil):
    errors = []

    def worker(k):
        try:
            with pgveil.connect() as c:
                for i in range(20):
                    lo = (k * 20 + i) % 1900 + 1
                    rows = c.execute(ROWS_SQL, (lo, lo + 9)).fetchall()
                    check_rows(rows, lo, lo + 9)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
