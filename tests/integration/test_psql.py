# psql and pg_dump through pgveil must produce exactly what PostgreSQL produces.
# Owns schema psqlt and database dumpdb in the test cluster.
import os
import subprocess

import pgserver

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "data", "psql_script.sql")


def run_script(pg, endpoint, tmp_path, tag):
    pg.sql("DROP SCHEMA IF EXISTS psqlt CASCADE", dbname="test")
    outfile = str(tmp_path / "items.csv")  # written by \copy, relative to cwd
    cmd = endpoint.psql_cmd("test") + ["-a", "-f", SCRIPT]
    p = subprocess.run(cmd, env=pgserver.clean_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120, cwd=str(tmp_path))
    with open(outfile, "rb") as f:
        copied = f.read()
    return p.returncode, p.stdout, copied


def test_psql_script_identical(pg, direct, pgveil, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "v").mkdir()
    rc_d, out_d, copy_d = run_script(pg, direct, tmp_path / "d", "direct")
    rc_v, out_v, copy_v = run_script(pg, pgveil, tmp_path / "v", "pgveil")
    text = out_d.decode()
    # The script really ran: results, errors, notices and copies are there.
    assert "ERROR:  22012: division by zero" in text
    assert "ERROR:  42601: syntax error at or near \"SELEC\"" in text
    assert "ERROR:  23505: duplicate key value violates unique constraint" in text
    assert "ERROR:  25P02" in text
    assert "NOTICE:  00000: notice with 42 and text" in text
    assert "żółw ✓ 日本" in text
    assert "(3000 rows)" in text
    assert "   500 | 156562.50 | 2024-01-02 | item 99" in text
    assert "COPY 500" in text and "COPY 3" in text
    assert 'ERROR:  22P02: invalid input syntax for type integer: "not_a_number"' in text
    assert text.rstrip().endswith("(1 row)")
    assert copy_d.count(b"\n") == 501
    assert rc_d == rc_v
    assert copy_v == copy_d
    if out_v != out_d:
        import difflib
        diff = "\n".join(difflib.unified_diff(text.splitlines(), out_v.decode(errors="replace").splitlines(),
                                              "direct", "pgveil", lineterm="", n=2))
        raise AssertionError("psql output differs:\n" + diff[:6000])
    pgveil.assert_alive()


def test_pg_dump_identical(pg, direct, pgveil, tmp_path):
    pg.sql("DROP DATABASE IF EXISTS dumpdb")
    pg.createdb("dumpdb")
    pg.sql("CREATE TABLE t1 (id int PRIMARY KEY, name text, amount numeric(8,2), at timestamptz);"
           "INSERT INTO t1 SELECT g, 'name ' || g, g / 3.0, timestamptz '2024-01-01 00:00+00' + g * interval '1 hour'"
           " FROM generate_series(1, 2000) g;"
           "CREATE VIEW v1 AS SELECT id, upper(name) AS uname FROM t1 WHERE id % 2 = 0;"
           "CREATE INDEX t1_name ON t1 (name);"
           "CREATE FUNCTION f1(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';"
           "COMMENT ON TABLE t1 IS 'dump me';", dbname="dumpdb")
    extra = []
    helptext = subprocess.run([pgserver.pg_bin("pg_dump"), "--help"], stdout=subprocess.PIPE).stdout
    if b"--restrict-key" in helptext:  # 15.14+: else a random key per dump
        extra = ["--restrict-key=pgveiltest"]
    outs = []
    for ep in (direct, pgveil):
        out = tmp_path / ("dump-%s.sql" % ep.label)
        p = subprocess.run([pgserver.pg_bin("pg_dump"), "-h", ep.host, "-p", str(ep.port),
                            "-U", "postgres", "-d", "dumpdb", "-f", str(out)] + extra,
                           env=pgserver.clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        assert p.returncode == 0, p.stderr.decode()
        outs.append(out.read_bytes())
    assert b"COPY public.t1 (id, name, amount, at) FROM stdin;" in outs[0]
    assert outs[0].count(b"\tname ") == 2000
    assert outs[1] == outs[0]
