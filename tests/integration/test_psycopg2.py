# psycopg2 through pgveil: plain queries, named (server-side) cursors, copy_expert.
# Owns tables pg2_* in database `test`.
import decimal
import io

import psycopg2
import psycopg2.extras
import pytest


@pytest.fixture(scope="module")
def pg2_table(pg):
    pg.sql("DROP TABLE IF EXISTS pg2_t;"
           "CREATE TABLE pg2_t (id int PRIMARY KEY, name text, amount numeric(10,2), note varchar(10));"
           "INSERT INTO pg2_t SELECT g, 'name ' || g, g / 4.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'x' || g END"
           " FROM generate_series(1, 5000) g", dbname="test")


def test_basic_queries(pg2_table, direct, pgveil):
    with pgveil.connect2() as v, direct.connect2() as d:
        vc, dc = v.cursor(), d.cursor()
        vc.execute("SELECT id, name, amount, note FROM pg2_t WHERE id <= %s ORDER BY id", (50,))
        dc.execute("SELECT id, name, amount, note FROM pg2_t WHERE id <= %s ORDER BY id", (50,))
        rows = vc.fetchall()
        assert rows == dc.fetchall()
        assert rows[4] == (5, "name 5", decimal.Decimal("1.25"), None)
        assert [c.name for c in vc.description] == ["id", "name", "amount", "note"]
        vc.execute("SELECT %s::text, %s::int, %s::numeric", ("żółw", 42, decimal.Decimal("1.5")))
        assert vc.fetchone() == ("żółw", 42, decimal.Decimal("1.5"))
        with pytest.raises(psycopg2.errors.UndefinedTable) as ei:
            vc.execute("SELECT * FROM pg2_missing")
        assert ei.value.pgcode == "42P01"
        v.rollback()
        vc.execute("INSERT INTO pg2_t VALUES (100001, 'new', 1, 'n') RETURNING id")
        assert vc.fetchone() == (100001,)
        v.rollback()
        vc.execute("SELECT count(*) FROM pg2_t")
        assert vc.fetchone() == (5000,)
        dict_cur = v.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        dict_cur.execute("SELECT id, note FROM pg2_t WHERE id = 3")
        assert dict_cur.fetchone() == {"id": 3, "note": "x3"}
        psycopg2.extras.execute_values(vc, "INSERT INTO pg2_t (id, name) VALUES %s",
                                       [(200000 + i, "ev%d" % i) for i in range(500)])
        vc.execute("SELECT count(*) FROM pg2_t WHERE id >= 200000")
        assert vc.fetchone() == (500,)
        v.rollback()


def test_named_cursors(pg2_table, pgveil):
    with pgveil.connect2() as v:
        cur = v.cursor(name="pg2_named")
        cur.itersize = 333
        cur.execute("SELECT id, name, note FROM pg2_t ORDER BY id")
        n, s = 0, 0
        for row in cur:
            n += 1
            s += row[0]
            assert row[1] == "name %d" % row[0]
        assert (n, s) == (5000, 5000 * 5001 // 2)
        cur.close()
        cur = v.cursor(name="pg2_named2", scrollable=True)
        cur.execute("SELECT id FROM pg2_t ORDER BY id")
        assert [r[0] for r in cur.fetchmany(3)] == [1, 2, 3]
        cur.scroll(100, mode="absolute")
        assert cur.fetchone() == (101,)
        cur.close()
        v.commit()


def test_copy_expert(pg2_table, direct, pgveil):
    sql_out = "COPY (SELECT * FROM pg2_t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
    outs = []
    for ep in (direct, pgveil):
        with ep.connect2() as c:
            buf = io.BytesIO()
            c.cursor().copy_expert(sql_out, buf)
            outs.append(buf.getvalue())
    assert outs[0].count(b"\n") == 5001
    assert outs[1] == outs[0]
    with pgveil.connect2() as v:
        cur = v.cursor()
        cur.execute("DROP TABLE IF EXISTS pg2_in; CREATE TABLE pg2_in (LIKE pg2_t)")
        cur.copy_expert("COPY pg2_in FROM STDIN WITH (FORMAT csv, HEADER)", io.BytesIO(outs[1]))
        cur.execute("SELECT count(*), sum(amount), count(note) FROM pg2_in")
        assert cur.fetchone() == (5000, decimal.Decimal("3125625.00"), 4000)
        cur.copy_from(io.StringIO("".join("%d\tcf%d\t1\t\\N\n" % (i, i) for i in range(10001, 10101))), "pg2_in")
        cur.execute("SELECT count(*) FROM pg2_in WHERE name LIKE 'cf%%'")
        assert cur.fetchone() == (100,)
        v.commit()
