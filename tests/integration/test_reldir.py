# The guard's relation directory against a real PostgreSQL loaded with the
# leak corpus schema: runs the C test tests/unit/test_reldir_pg.c (control
# thread, views and matviews over protected tables, unqualified names
# across schemas, DDL through NOTIFY and the periodic check, limits).
import os
import subprocess

import pytest

from pgserver import REPO, SUPERUSER, clean_env

BUILD = os.environ.get("PGVEIL_BUILD_DIR", os.path.join(REPO, "build"))
LEAK_SCHEMA = os.environ.get(
    "PGVEIL_LEAK_SCHEMA",
    os.path.join(REPO, "tests", "leakcases", "corpus", "schema.sql"))


def test_reldir_against_postgres(pg):
    binary = os.path.join(BUILD, "tests", "test_reldir_pg")
    if not os.path.exists(binary):
        pytest.skip("%s not built (make %s)" % (binary, os.path.relpath(binary, REPO)))
    assert os.path.exists(LEAK_SCHEMA), "leak corpus schema missing: %s" % LEAK_SCHEMA
    db = "reldir_test"
    pg.sql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db)
    pg.createdb(db)
    dsn = "host=%s port=%d user=%s dbname=%s" % (pg.host, pg.port, SUPERUSER, db)
    p = subprocess.run([binary], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env({"PGVEIL_TEST_DSN": dsn,
                                      "PGVEIL_LEAK_SCHEMA": os.path.abspath(LEAK_SCHEMA)}),
                       timeout=120)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "test_reldir_pg:" in out and " 0 failed" in out, out
    assert "skipped" not in out, out
