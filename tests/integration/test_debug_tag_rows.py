# --debug-tag-rows: every text/varchar DataRow field comes back as
# "<column name>=<value>", proving each row met the right column plan on every
# protocol path. Owns table dt_rows. PGVEIL_TAG_SELFTEST=1 with PGVEIL_DIRECT=1
# runs these against plain PostgreSQL expecting untouched values.
import os
import struct

import pytest

import pgwire
from conftest import DIRECT, endpoint_of

SELFTEST = DIRECT and os.environ.get("PGVEIL_TAG_SELFTEST") == "1"
if DIRECT and not SELFTEST:
    pytestmark = pytest.mark.skip(reason="pgveil-only test (PGVEIL_DIRECT=1)")

LONG = "L" * 10000
# (n, a text, b varchar(30), c char(3))
DATA = [
    (10, "alpha", "x1", "c1"),
    (20, None, "x2", "c2"),
    (30, "", None, None),
    (40, "żółw ✓", "tab\there", "c4"),
    (50, LONG, "b=already", "c5"),
]
BY_N = {r[0]: r for r in DATA}


def tag(col, v):
    if v is None:
        return None
    return v if SELFTEST else "%s=%s" % (col, v)


def btag(col, v):
    t = tag(col, v)
    return None if t is None else t.encode()


def exp_row(n, cols):
    """Expected Python row for columns drawn from (n, a, b, c)."""
    r = BY_N[n]
    vals = {"n": r[0], "a": tag("a", r[1]), "b": tag("b", r[2]),
            "c": None if r[3] is None else r[3].ljust(3)}  # bpchar: never tagged
    return tuple(vals[c] for c in cols)


def exp_wire(n, cols, binary=False):
    """Expected raw field bytes for columns drawn from (n, a, b, c)."""
    r = BY_N[n]
    out = []
    for c in cols:
        if c == "n":
            out.append(struct.pack("!i", n) if binary else str(n).encode())
        elif c == "a":
            out.append(btag("a", r[1]))
        elif c == "b":
            out.append(btag("b", r[2]))
        elif c == "c":
            out.append(None if r[3] is None else r[3].ljust(3).encode())
    return out


NS = [r[0] for r in DATA]


@pytest.fixture(scope="module")
def tagged(pg, direct):
    pg.sql("DROP TABLE IF EXISTS dt_rows; CREATE TABLE dt_rows (n int, a text, b varchar(30), c char(3))",
           dbname="test")
    with direct.connect() as d:
        for r in DATA:
            d.execute("INSERT INTO dt_rows (n, a, b, c) VALUES (%s, %s, %s, %s)", r)
    if SELFTEST:
        yield direct
        return
    from pgserver import Pgveil
    proxy = Pgveil(pg.addr, ["--passthrough", "--debug-tag-rows"])
    try:
        proxy.start()
        yield endpoint_of(proxy)
    finally:
        proxy.cleanup()


def raw(ep):
    return pgwire.connect(ep.host, ep.port)


def test_simple_query(tagged):
    with raw(tagged) as c:
        res = c.simple("SELECT n, a, b, c FROM dt_rows ORDER BY n")
        assert res.rows() == [exp_wire(n, "nabc") for n in NS]


def test_multi_statement_query(tagged):
    with raw(tagged) as c:
        res = c.simple("SELECT a, n FROM dt_rows ORDER BY n; SELECT n, b, a FROM dt_rows ORDER BY n DESC;"
                       " SELECT count(*) FROM dt_rows; SELECT b FROM dt_rows WHERE n = 40")
        sets = [s for s in res.sets if s["cols"] is not None]
        assert len(sets) == 4
        assert sets[0]["rows"] == [exp_wire(n, "an") for n in NS]
        assert sets[1]["rows"] == [exp_wire(n, "nba") for n in reversed(NS)]
        assert sets[2]["rows"] == [[b"5"]]
        assert sets[3]["rows"] == [exp_wire(40, "b")]


def test_computed_text_columns(tagged):
    with raw(tagged) as c:
        res = c.simple("SELECT 'lit'::text AS lit, 'vv'::varchar AS vc, 7 AS seven, 'bp'::char(2) AS bp")
        assert res.rows() == [[btag("lit", "lit"), btag("vc", "vv"), b"7", b"bp"]]


def test_psycopg_text_and_binary(tagged):
    with tagged.connect() as v:
        rows = v.execute("SELECT n, a, b, c FROM dt_rows WHERE n >= %s ORDER BY n", (0,)).fetchall()
        assert rows == [exp_row(n, "nabc") for n in NS]
        cur = v.cursor(binary=True)
        rows = cur.execute("SELECT b, n, a FROM dt_rows WHERE n >= %s ORDER BY n", (0,)).fetchall()
        assert cur.pgresult.fformat(0) == 1
        assert rows == [exp_row(n, "bna") for n in NS]


def test_psycopg_prepared(tagged):
    with tagged.connect() as v:
        for _ in range(4):
            for n in NS:
                assert v.execute("SELECT a, b, n FROM dt_rows WHERE n = %s", (n,), prepare=True).fetchall() \
                    == [exp_row(n, "abn")]
        bcur = v.cursor(binary=True)
        for _ in range(4):
            assert bcur.execute("SELECT n, b FROM dt_rows WHERE n > %s ORDER BY n", (15,), prepare=True).fetchall() \
                == [exp_row(n, "nb") for n in NS[1:]]


def test_psycopg_pipeline(tagged):
    with tagged.connect() as v:
        expected, curs = [], []
        with v.pipeline():
            for i in range(30):
                n = NS[i % len(NS)]
                if i % 3 == 0:
                    cur = v.execute("SELECT a FROM dt_rows WHERE n = %s", (n,))
                    expected.append([exp_row(n, "a")])
                elif i % 3 == 1:
                    cur = v.cursor(binary=True)
                    cur.execute("SELECT n, b, a FROM dt_rows WHERE n = %s", (n,))
                    expected.append([exp_row(n, "nba")])
                else:
                    cur = v.execute("SELECT b, c FROM dt_rows WHERE n <= %s ORDER BY n", (n,))
                    expected.append([exp_row(m, "bc") for m in NS if m <= n])
                curs.append(cur)
        assert [c.fetchall() for c in curs] == expected


def test_server_side_cursor(tagged):
    with tagged.connect(autocommit=False) as v:
        cur = v.cursor("dt_named")
        cur.execute("SELECT b, n, a FROM dt_rows ORDER BY n")
        got = cur.fetchmany(2) + cur.fetchmany(2) + cur.fetchall()
        assert got == [exp_row(n, "bna") for n in NS]
        cur.close()
        bcur = v.cursor("dt_named_bin", binary=True)
        bcur.execute("SELECT a, n FROM dt_rows ORDER BY n")
        assert bcur.fetchmany(3) + bcur.fetchall() == [exp_row(n, "an") for n in NS]
        bcur.close()
        v.rollback()


def test_sql_prepare_execute(tagged):
    with raw(tagged) as c:
        c.simple("PREPARE dtp(int) AS SELECT n, a, b FROM dt_rows WHERE n >= $1 ORDER BY n")
        for lo in (0, 25):
            res = c.simple("EXECUTE dtp(%d)" % lo)
            assert res.rows() == [exp_wire(n, "nab") for n in NS if n >= lo]
        c.simple("DEALLOCATE dtp")
    with tagged.connect() as v:
        v.execute("PREPARE dtp2 AS SELECT b, a FROM dt_rows ORDER BY n")
        assert v.execute("EXECUTE dtp2").fetchall() == [exp_row(n, "ba") for n in NS]


def test_declare_fetch(tagged):
    with raw(tagged) as c:
        res = c.simple("BEGIN; DECLARE dtc CURSOR FOR SELECT a, n, b FROM dt_rows ORDER BY n; FETCH 2 FROM dtc")
        assert [s for s in res.sets if s["cols"]][0]["rows"] == [exp_wire(n, "anb") for n in NS[:2]]
        res = c.simple("FETCH ALL FROM dtc")
        assert res.rows() == [exp_wire(n, "anb") for n in NS[2:]]
        # MOVE back and FETCH again through the extended protocol
        c.send(pgwire.parse("FETCH BACKWARD 2 FROM dtc") + pgwire.bind() + pgwire.execute() + pgwire.sync())
        res = c.read_result(raise_error=True)
        assert [r for s in res.sets for r in s["rows"]] == [exp_wire(n, "anb") for n in (50, 40)]
        c.simple("COMMIT")


def collect_rows(res):
    return [r for s in res.sets for r in s["rows"]]


@pytest.mark.parametrize("fmt", [0, 1])
def test_execute_without_describe(tagged, fmt):
    """Parse/Bind/Execute/Sync with no Describe: no RowDescription ever reaches
    the client, pgveil must still know the columns."""
    with raw(tagged) as c:
        c.send(pgwire.parse("SELECT n, a, b FROM dt_rows WHERE n >= $1 ORDER BY n", param_oids=(23,))
               + pgwire.bind(["0"], result_formats=[fmt])
               + pgwire.execute() + pgwire.sync())
        res = c.read_result(raise_error=True)
        assert b"T" not in [t for t, _ in res.messages]
        assert collect_rows(res) == [exp_wire(n, "nab", fmt == 1) for n in NS]
        # a named statement bound many times, mixed formats per column
        c.send(pgwire.parse("SELECT b, n, a FROM dt_rows WHERE n = $1", name="dts", param_oids=(23,))
               + pgwire.sync())
        c.read_result(raise_error=True)
        for n in NS:
            c.send(pgwire.bind([str(n)], stmt="dts", result_formats=[fmt, 1, 0])
                   + pgwire.execute() + pgwire.sync())
            res = c.read_result(raise_error=True)
            b_, n_, a_ = exp_wire(n, "b", fmt == 1) + exp_wire(n, "n", True) + exp_wire(n, "a", False)
            assert collect_rows(res) == [[b_, n_, a_]]


def test_interleaved_portals_with_row_limits(tagged):
    """Two portals with different layouts, executed alternately with row
    limits (PortalSuspended), all before one Sync."""
    with raw(tagged) as c:
        c.send(pgwire.parse("SELECT a, n FROM dt_rows ORDER BY n", name="s1")
               + pgwire.parse("SELECT n, b, c FROM dt_rows ORDER BY n DESC", name="s2")
               + pgwire.sync())
        c.read_result(raise_error=True)
        c.send(pgwire.query("BEGIN"))
        c.read_result(raise_error=True)
        c.send(pgwire.bind(portal="p1", stmt="s1")
               + pgwire.bind(portal="p2", stmt="s2", result_formats=[1])
               + pgwire.execute("p1", 2) + pgwire.execute("p2", 3)
               + pgwire.execute("p1", 0) + pgwire.execute("p2", 0)
               + pgwire.sync())
        res = c.read_result(raise_error=True)
        tags = [t for t, _ in res.messages]
        assert tags.count(b"s") == 2  # two PortalSuspended
        rows = [pgwire.parse_data_row(p) for t, p in res.messages if t == b"D"]
        p1 = [exp_wire(n, "an") for n in NS]
        p2 = [exp_wire(n, "nbc", True) for n in reversed(NS)]
        assert rows == p1[:2] + p2[:3] + p1[2:] + p2[3:]
        c.simple("COMMIT")


def test_describe_statement_then_execute_many(tagged):
    """pgjdbc style: Describe the statement once, then Bind/Execute without
    Describe, pipelined before one Sync."""
    with raw(tagged) as c:
        c.send(pgwire.parse("SELECT a, b FROM dt_rows WHERE n = $1", name="jd", param_oids=(23,))
               + pgwire.describe(b"S", "jd") + pgwire.sync())
        res = c.read_result(raise_error=True)
        assert b"T" in [t for t, _ in res.messages]
        msgs = b"".join(pgwire.bind([str(n)], stmt="jd") + pgwire.execute() for n in NS)
        c.send(msgs + pgwire.sync())
        res = c.read_result(raise_error=True)
        assert collect_rows(res) == [exp_wire(n, "ab") for n in NS]


def test_error_in_pipeline_keeps_attribution(tagged):
    """An error skips to Sync; later rows still map to their own plans."""
    with raw(tagged) as c:
        c.send(pgwire.parse("SELECT a FROM dt_rows WHERE n = 10") + pgwire.bind() + pgwire.execute()
               + pgwire.parse("SELECT 1/0") + pgwire.bind() + pgwire.execute()
               + pgwire.parse("SELECT b FROM dt_rows") + pgwire.bind() + pgwire.execute()
               + pgwire.sync()
               + pgwire.parse("SELECT b, a FROM dt_rows WHERE n = 40") + pgwire.bind() + pgwire.execute()
               + pgwire.sync())
        first = c.read_result()
        assert [e["C"] for e in first.errors] == ["22012"]
        assert collect_rows(first) == [exp_wire(10, "a")]
        second = c.read_result(raise_error=True)
        assert collect_rows(second) == [exp_wire(40, "ba")]
