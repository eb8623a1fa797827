# Fixtures for the rules suites (test_rules_*.py): the sample CRM database and
# a pgveil serving rules/examples/crm.yaml in front of it. Owns only what it starts.
"""Session fixtures for the masking tests.

`crm` loads rules/sql/crm_schema.sql, crm_data.sql, catalog_notify.sql (and
consent_notify.sql when it exists) into database `crm` of the session's
PostgreSQL, writes a secret file (mode 600) and starts pgveil with
`--rules rules/examples/crm.yaml --secret-file --control-dsn --workers 2`.
Imported by conftest.py so every test module sees the fixtures.
"""

import os
import shutil
import sys
import tempfile

import pytest

from pgserver import REPO, SUPERUSER, Endpoint, Pgveil

CRM_DB = "crm"
CRM_RULES = os.path.join(REPO, "rules", "examples", "crm.yaml")
SQL_DIR = os.path.join(REPO, "rules", "sql")
CRM_SQL = ["crm_schema.sql", "crm_data.sql", "catalog_notify.sql", "consent_notify.sql"]
SECRET = "pgveil-test-secret-0123456789abcdef\n"


class Crm:
    """What the rules tests talk to. Owner: the `crm` session fixture."""

    def __init__(self, pg, direct, pgveil, tmp):
        self.pg = pg
        self.direct = direct      # Endpoint: PostgreSQL itself
        self.pgveil = pgveil      # Endpoint: pgveil serving crm.yaml
        self.tmp = tmp            # scratch dir for this session (secret lives here)
        self.db = CRM_DB
        self.secret_path = os.path.join(tmp, "secret")

    @property
    def control_dsn(self):
        return "host=%s port=%d user=%s dbname=%s" % (self.pg.host, self.pg.port,
                                                     SUPERUSER, self.db)

    def serve_args(self, rules=CRM_RULES, workers=2):
        return ["--rules", rules, "--secret-file", self.secret_path,
                "--control-dsn", self.control_dsn, "--workers", str(workers)]


def load_crm(pg, db=CRM_DB):
    pg.sql('DROP DATABASE IF EXISTS "%s"' % db)
    pg.createdb(db)
    for name in CRM_SQL:
        path = os.path.join(SQL_DIR, name)
        if os.path.exists(path):
            pg.sql_file(path, dbname=db)


@pytest.fixture(scope="session")
def crm(pg):
    """The CRM database and pgveil with crm.yaml in front of it (a Crm)."""
    if os.environ.get("PGVEIL_DIRECT") == "1":
        pytest.skip("rules tests compare pgveil with PostgreSQL (PGVEIL_DIRECT=1)")
    load_crm(pg)
    tmp = tempfile.mkdtemp(prefix="pgveil-rules-")
    secret = os.path.join(tmp, "secret")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET)
    os.chmod(secret, 0o600)
    direct = Endpoint(pg.host, pg.port, None, "direct")
    env = Crm(pg, direct, None, tmp)
    proxy = Pgveil(pg.addr, env.serve_args())
    try:
        proxy.start()
        env.pgveil = Endpoint(proxy.host, proxy.port, proxy, "pgveil")
        yield env
    finally:
        rc = proxy.stop()
        logs = proxy.logs()
        proxy.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        if rc not in (0, None):
            sys.stderr.write("\npgveil (crm rules) exited %s; logs:\n%s\n" % (rc, logs[-4000:]))


# ---- What crm.yaml says: the expectation model ----------------------------
# Written out by hand on purpose (test_rules_masking.py checks it against the
# YAML), so a change to crm.yaml or to pgveil's reading of it shows up here.

import datetime  # noqa: E402
import decimal  # noqa: E402
import re  # noqa: E402

CUSTOMER_COLUMNS = ["id", "full_name", "email", "phone", "ssn", "birth_date", "street",
                    "city", "zip", "country", "notes", "lifetime_value", "created_at"]
CUSTOMERS_Q = "SELECT * FROM customers ORDER BY id LIMIT 20"

CLEAR = ("clear",)
WITHHOLD = ("withhold",)
HASH = ("hash",)
YEAR = ("year",)
ZIP3 = ("zip3",)


def MASK(n):
    return ("mask", n)


def BUCKET(n):
    return ("bucket", n)


def CONSENT(on, otherwise):
    """`action` for subjects who consented to the purpose, `otherwise` else."""
    return ("consent", on, otherwise)


# public.customers, per effective purpose; columns not named are clear.
CUSTOMER_RULES = {
    "none": {"full_name": WITHHOLD, "email": HASH, "phone": MASK(2), "ssn": WITHHOLD,
             "birth_date": YEAR, "street": WITHHOLD, "zip": ZIP3, "notes": WITHHOLD,
             "lifetime_value": BUCKET(1000)},
    "support": {"ssn": MASK(4), "notes": WITHHOLD},
    "marketing": {"full_name": CONSENT(CLEAR, HASH), "email": CONSENT(CLEAR, HASH),
                  "phone": CONSENT(CLEAR, WITHHOLD), "ssn": WITHHOLD, "birth_date": YEAR,
                  "street": WITHHOLD, "notes": WITHHOLD, "lifetime_value": BUCKET(1000)},
}

# label -> (role, declared purpose or None, effective purpose)
SESSIONS = {
    "none": ("postgres", None, "none"),
    "support": ("support_agent", "support", "support"),
    "marketing": ("crm_app", "marketing", "marketing"),
    "legacy": ("legacy_app", None, "support"),   # defaults.purpose_by_role
}


def purpose_options(label):
    purpose = SESSIONS[label][1]
    return "-c pgveil.purpose=%s" % purpose if purpose else None


def connect3(ep, label, **kw):
    import psycopg
    role, _, _ = SESSIONS[label]
    opts = purpose_options(label)
    if opts and ep.is_proxy:
        kw["options"] = opts
    return psycopg.connect(host=ep.host, port=ep.port, user=role, dbname=CRM_DB,
                           autocommit=True, connect_timeout=10, **kw)


def connect2(ep, label):
    import psycopg2
    role, _, _ = SESSIONS[label]
    kw = {}
    opts = purpose_options(label)
    if opts and ep.is_proxy:
        kw["options"] = opts
    c = psycopg2.connect(host=ep.host, port=ep.port, user=role, dbname=CRM_DB,
                         connect_timeout=10, **kw)
    c.autocommit = True
    return c


def action_for(label, column, subject, consented, strict_consent=True):
    """The action(s) a column of a row should get: a list of acceptable
    actions. Consent-gated entries: `otherwise` for subjects without
    consent, the consent action for the others (with strict_consent=False
    either one, for results where the subject cannot be known)."""
    act = CUSTOMER_RULES[SESSIONS[label][2]].get(column, CLEAR)
    if act[0] != "consent":
        return [act]
    if subject in consented:
        return [act[1]] if strict_consent else [act[1], act[2]]
    return [act[2]]


def _floor_bucket(d, n):
    q = (d / n).to_integral_value(rounding=decimal.ROUND_FLOOR) * n
    return q.quantize(decimal.Decimal(1).scaleb(d.as_tuple().exponent))


def hash_shape_ok(orig, got):
    """Format-preserving pseudonym: same character count, ASCII letters stay
    letters of the same case, digits stay digits, other ASCII characters stay,
    and it is not the original."""
    if not isinstance(got, str) or len(got) != len(orig) or got == orig:
        return False
    for a, b in zip(orig, got):
        if "a" <= a <= "z":
            ok = "a" <= b <= "z"
        elif "A" <= a <= "Z":
            ok = "A" <= b <= "Z"
        elif "0" <= a <= "9":
            ok = "0" <= b <= "9"
        elif ord(a) < 128:
            ok = a == b
        else:
            ok = "a" <= b <= "z"
        if not ok:
            return False
    return True


def apply_action(act, v):
    """(kind, expected): kind 'eq' (compare with expected, and also its str
    to catch a lost numeric scale) or 'hash' (shape check against v). Works
    on typed values (psycopg) and on text (str)."""
    kind = act[0]
    if v is None or kind == "clear":
        return ("eq", v)
    if kind == "withhold":
        return ("eq", None)
    if kind == "hash":
        return ("hash", v)
    if kind == "mask":
        n = act[1]
        return ("eq", "*" * (len(v) - n) + v[-n:] if len(v) > n else "*" * len(v))
    if kind == "year":
        if isinstance(v, datetime.date):
            return ("eq", datetime.date(v.year, 1, 1))
        assert re.match(r"^\d{4}-\d\d-\d\d$", v), v
        return ("eq", v[:4] + "-01-01")
    if kind == "zip3":
        return ("eq", v[:3] + re.sub(r"[A-Za-z0-9]|[^\x00-\x7f]", "*", v[3:]))
    if kind == "bucket":
        if isinstance(v, decimal.Decimal):
            return ("eq", _floor_bucket(v, act[1]))
        return ("eq", str(_floor_bucket(decimal.Decimal(v), act[1])))
    raise AssertionError("unknown action %r" % (act,))


def matches(act, v, got):
    kind, exp = apply_action(act, v)
    if kind == "hash":
        return hash_shape_ok(v, got)
    return got == exp and type(got) is type(exp) and str(got) == str(exp)


def check_rows(label, direct_rows, got_rows, consented, columns=CUSTOMER_COLUMNS,
               strict_consent=True, subject_col="id"):
    """Compares rows read through pgveil with the same rows read directly;
    returns a list of mismatch descriptions (empty: all as crm.yaml says)."""
    errors = []
    if len(direct_rows) != len(got_rows):
        return ["%s: %d rows through pgveil, %d direct" % (label, len(got_rows), len(direct_rows))]
    si = columns.index(subject_col)
    for drow, grow in zip(direct_rows, got_rows):
        if len(drow) != len(grow):
            errors.append("%s: row width %d vs %d" % (label, len(grow), len(drow)))
            continue
        subject = drow[si]
        subject = int(subject) if subject is not None else None
        for col, v, got in zip(columns, drow, grow):
            acts = action_for(label, col, subject, consented, strict_consent)
            if not any(matches(a, v, got) for a in acts):
                errors.append("%s: id=%s %s: direct %r, through pgveil %r, expected %s"
                              % (label, subject, col, v, got,
                                 " or ".join(repr(apply_action(a, v)) for a in acts)))
    return errors


def hashed_columns(label):
    """Columns hashed for every row under this session (consent-gated ones
    only for subjects without consent)."""
    out = []
    for col, act in CUSTOMER_RULES[SESSIONS[label][2]].items():
        if act == HASH or (act[0] == "consent" and act[2] == HASH):
            out.append(col)
    return out


def consented_subjects(direct, purpose):
    """Subjects with granted consent to `purpose`, read directly."""
    import psycopg
    with psycopg.connect(host=direct.host, port=direct.port, user=SUPERUSER, dbname=CRM_DB,
                         autocommit=True) as c:
        return {r[0] for r in c.execute(
            "SELECT subject_id FROM consent WHERE purpose = %s AND granted", (purpose,))}
