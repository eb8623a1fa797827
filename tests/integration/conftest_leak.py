# Session-scoped fixtures for the leak corpus database and a pgveil in front
# of it with tests/leakcases.yaml (used by test_leakcases and
# test_guard_extra).
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(REPO, "tests", "leakcases", "corpus")
RULES = os.path.join(REPO, "tests", "leakcases.yaml")
LEAK_TEST_SECRET = b"pgveil-leakcases-fixed-test-secret-0001"


@pytest.fixture(scope="session")
def leakdb(pg):
    pg.createdb("crm_lc")
    pg.sql_file(os.path.join(CORPUS, "schema.sql"), dbname="crm_lc")
    for f in ("catalog_notify.sql", "consent_notify.sql"):
        path = os.path.join(REPO, "rules", "sql", f)
        if os.path.exists(path):
            pg.sql_file(path, dbname="crm_lc")
    return "crm_lc"


@pytest.fixture(scope="session")
def leak_pgveil(pg, leakdb, tmp_path_factory):
    from pgserver import Pgveil
    # A fixed secret: the corpus's detector flags any 6 characters of any
    # canary anywhere in the output, and format-preserving pseudonyms are
    # random letters, so with about a thousand hashed names some secret will
    # by chance spell a 6-letter piece of some other customer's canary
    # (seen: a hashed full_name "Mvpx Gymiebfxzf Jipvts" vs an email
    # "...jipvts..."). That is a coincidence, not a disclosure; a fixed
    # secret keeps the test deterministic.
    secret = tmp_path_factory.mktemp("lc") / "secret"
    secret.write_bytes(LEAK_TEST_SECRET)
    os.chmod(secret, 0o600)
    dsn = "host=%s port=%d user=postgres dbname=%s" % (pg.host, pg.port, leakdb)
    proxy = Pgveil(pg.addr, ["--rules", RULES, "--secret-file", str(secret),
                             "--control-dsn", dsn, "--workers", "2"])
    proxy.start()
    yield proxy
    proxy.stop()
    proxy.cleanup()
