#!/usr/bin/python3
"""Writes seed inputs for the fuzz_row_plan target: realistic conversations
(the scenarios of tests/unit/test_row_plan.c) as (direction byte, framed
message) pairs; direction 0 = client, 1 = server.

Usage: /usr/bin/python3 tests/fuzz/gen_seeds_row_plan.py [OUTDIR]

It writes the seed_* files; the found_* files beside them in the corpus are
inputs libFuzzer found that add the most coverage, kept as they are.
"""
import os
import struct
import sys


def cstr(s):
    return s.encode() + b"\0"


def msg(t, body=b""):
    return t.encode() + struct.pack("!I", len(body) + 4) + body


# ---- client --------------------------------------------------------------


def query(sql):
    return msg("Q", cstr(sql))


def parse(stmt, sql, oids=()):
    return msg("P", cstr(stmt) + cstr(sql) + struct.pack("!H", len(oids)) +
               b"".join(struct.pack("!I", o) for o in oids))


def bind(portal, stmt, params=(), rfmts=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", 0)
    body += struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(rfmts)) + b"".join(
        struct.pack("!h", f) for f in rfmts)
    return msg("B", body)


def describe(kind, name):
    return msg("D", kind.encode() + cstr(name))


def close(kind, name):
    return msg("C", kind.encode() + cstr(name))


def execute(portal, max_rows=0):
    return msg("E", cstr(portal) + struct.pack("!i", max_rows))


SYNC = msg("S")
FLUSH = msg("H")

# ---- server --------------------------------------------------------------

CUSTOMER = [("id", 16384, 1, 23, 0), ("email", 16384, 3, 25, 0),
            ("phone", 16384, 4, 1043, 0)]
A = [("a", 16390, 1, 23, 0)]
BC = [("b", 16390, 2, 25, 0), ("c", 0, 0, 25, 0)]


def rowdesc(fields, fmt=None):
    body = struct.pack("!H", len(fields))
    for name, table, att, typ, f in fields:
        body += cstr(name) + struct.pack("!IhIhih", table, att, typ, -1, -1,
                                         f if fmt is None else fmt)
    return msg("T", body)


def datarow(n, val=b"x"):
    return msg("D", struct.pack("!H", n) +
               b"".join(struct.pack("!i", len(val)) + val for _ in range(n)))


def complete(tag):
    return msg("C", cstr(tag))


def ready(s="I"):
    return msg("Z", s.encode())


def error(state="42P01"):
    return msg("E", b"SERROR\0C" + cstr(state) + b"Mboom\0\0")


def copy_resp(t, fmt, n):
    return msg(t, struct.pack("!bH", fmt, n) +
               b"".join(struct.pack("!h", fmt) for _ in range(n)))


def copy_data(b):
    return msg("d", b)


PARSE_OK, BIND_OK, CLOSE_OK = msg("1"), msg("2"), msg("3")
NO_DATA, SUSPENDED, EMPTY = msg("n"), msg("s"), msg("I")
PARAMS = msg("t", struct.pack("!H", 0))
COPY_DONE = msg("c")


def conv(*steps):
    """steps: ("F"|"B", [messages]) in stream order."""
    out = b""
    for who, msgs in steps:
        d = b"\x00" if who == "F" else b"\x01"
        out += b"".join(d + m for m in msgs)
    return out


def F(*m):
    return ("F", m)


def B(*m):
    return ("B", m)


def seeds():
    yield "simple_multi", conv(
        F(query("SELECT a FROM t; SELECT b, c FROM t; UPDATE t SET a = 1")),
        B(rowdesc(A), datarow(1), datarow(1), complete("SELECT 2"),
          rowdesc(BC), datarow(2), complete("SELECT 1"), complete("UPDATE 3"),
          ready()),
        F(query(";SELECT a")),
        B(EMPTY, rowdesc(A), datarow(1), complete("SELECT 1"), ready()))
    yield "describe_once_execute_many", conv(
        F(parse("S_1", "SELECT id, email, phone FROM customer WHERE id > $1",
                [23]), describe("S", "S_1"), SYNC),
        B(PARSE_OK, PARAMS, rowdesc(CUSTOMER), ready()),
        F(bind("", "S_1", [b"1"], [1]), execute(""), SYNC),
        B(BIND_OK, datarow(3), datarow(3), complete("SELECT 2"), ready()),
        F(bind("", "S_1", [b"2"], [1, 0, 1]), execute(""), SYNC),
        B(BIND_OK, datarow(3), complete("SELECT 1"), ready()),
        F(bind("", "S_1", [b"3"]), execute(""), SYNC),
        B(BIND_OK, datarow(3), complete("SELECT 1"), ready()))
    yield "inject_describe", conv(
        F(parse("", "SELECT id, email, phone FROM customer"), bind("", ""),
          execute(""), SYNC),
        B(PARSE_OK, BIND_OK, rowdesc(CUSTOMER), datarow(3), datarow(3),
          complete("SELECT 2"), ready()),
        F(parse("", "UPDATE customer SET phone = ''"), bind("", ""),
          execute(""), SYNC),
        B(PARSE_OK, BIND_OK, NO_DATA, complete("UPDATE 9"), ready()),
        F(execute("nosuch"), SYNC),
        B(error("34000"), ready()))
    pipe_f, pipe_b = [], [PARSE_OK]
    pipe_f.append(parse("q", "SELECT a, b, c"))
    for i in range(5):
        pipe_f += [bind("", "q", [], [i & 1]), describe("P", ""),
                   execute("")]
        pipe_b += [BIND_OK, rowdesc(A + BC, i & 1), datarow(3),
                   complete("SELECT 1")]
    yield "pipeline", conv(F(*pipe_f, SYNC), B(*pipe_b, ready()))
    yield "portal_suspended", conv(
        F(query("BEGIN")), B(complete("BEGIN"), ready("T")),
        F(parse("S_2", "SELECT id, email, phone FROM customer"),
          bind("C_1", "S_2"), describe("P", "C_1"), execute("C_1", 2), SYNC),
        B(PARSE_OK, BIND_OK, rowdesc(CUSTOMER), datarow(3), datarow(3),
          SUSPENDED, ready("T")),
        F(execute("C_1", 2), SYNC),
        B(datarow(3), datarow(3), SUSPENDED, ready("T")),
        F(execute("C_1", 2), SYNC),
        B(datarow(3), complete("SELECT 1"), ready("T")),
        F(query("COMMIT")), B(complete("COMMIT"), ready()),
        F(execute("C_1", 2), SYNC), B(error("34000"), ready()))
    yield "error_pipeline", conv(
        F(parse("s1", "SELECT a"), bind("", "s1"), describe("P", ""),
          execute(""), parse("s2", "SELEC"), bind("", "s2"),
          describe("P", ""), execute(""), SYNC,
          parse("s3", "SELECT b, c"), bind("", "s3"), describe("P", ""),
          execute(""), SYNC),
        B(PARSE_OK, BIND_OK, rowdesc(A), datarow(1), complete("SELECT 1"),
          error("42601"), ready(), PARSE_OK, BIND_OK, rowdesc(BC), datarow(2),
          complete("SELECT 1"), ready()))
    yield "error_flush", conv(
        F(parse("", "SELECT nosuch"), bind("", ""), describe("P", ""),
          execute(""), FLUSH),
        B(error("42703")),
        F(parse("x", "SELECT 1"), bind("", "x"), execute(""),
          query("SELECT 1"), FLUSH, SYNC),
        B(ready()),
        F(query("SELECT a; SELECT 1/0; SELECT a")),
        B(rowdesc(A), datarow(1), error("22012"), ready("E")))
    yield "failed_bind", conv(
        F(query("BEGIN")), B(complete("BEGIN"), ready("T")),
        F(parse("sa", "SELECT a"), describe("S", "sa"),
          parse("sbc", "SELECT b, c"), describe("S", "sbc"),
          bind("q", "sa"), SYNC, bind("q", "sbc"), SYNC, execute("q"), SYNC),
        B(PARSE_OK, PARAMS, rowdesc(A), PARSE_OK, PARAMS, rowdesc(BC),
          BIND_OK, ready("T"), error("42P03"), ready("E"), error("25P02"),
          ready("E")),
        F(query("ROLLBACK")), B(complete("ROLLBACK"), ready()))
    yield "reparse", conv(
        F(parse("st", "SELECT a"), describe("S", "st"), SYNC),
        B(PARSE_OK, PARAMS, rowdesc(A), ready()),
        F(bind("", "st"), execute(""), close("S", "st"),
          parse("st", "SELECT b, c"), describe("S", "st"), bind("p2", "st"),
          execute("p2"), SYNC),
        B(BIND_OK, datarow(1), datarow(1), complete("SELECT 2"), CLOSE_OK,
          PARSE_OK, PARAMS, rowdesc(BC), BIND_OK, datarow(2),
          complete("SELECT 1"), ready()))
    yield "sql_cursor_prepare", conv(
        F(query("BEGIN; DECLARE c CURSOR FOR SELECT a FROM t")),
        B(complete("BEGIN"), complete("DECLARE CURSOR"), ready("T")),
        F(query("FETCH 2 FROM c")),
        B(rowdesc(A), datarow(1), datarow(1), complete("FETCH 2"),
          ready("T")),
        F(query("FETCH 2 FROM c")),
        B(rowdesc(A), datarow(1), complete("FETCH 1"), ready("T")),
        F(execute("c", 5), SYNC),
        B(rowdesc(A), datarow(1), complete("FETCH 1"), ready("T")),
        F(query("CLOSE c; COMMIT")),
        B(complete("CLOSE CURSOR"), complete("COMMIT"), ready()),
        F(parse("s9", "SELECT a"), describe("S", "s9"), SYNC),
        B(PARSE_OK, PARAMS, rowdesc(A), ready()),
        F(query("PREPARE q AS SELECT b, c FROM t; EXECUTE q")),
        B(complete("PREPARE"), rowdesc(BC), datarow(2), complete("SELECT 1"),
          ready()),
        F(bind("", "s9"), execute(""), SYNC),
        B(BIND_OK, rowdesc(A), datarow(1), complete("SELECT 1"), ready()),
        F(query("DEALLOCATE q; DISCARD ALL")),
        B(complete("DEALLOCATE"), complete("DISCARD ALL"), ready()))
    yield "copy", conv(
        F(query("COPY customer TO STDOUT; SELECT a FROM t")),
        B(copy_resp("H", 0, 3), copy_data(b"1\ta@example.com\t555\n"),
          copy_data(b"2\tb@example.com\t556\n"), COPY_DONE,
          complete("COPY 2"), rowdesc(A), datarow(1), complete("SELECT 1"),
          ready()),
        F(query("COPY customer TO STDOUT (FORMAT binary)")),
        B(copy_resp("H", 1, 3), copy_data(b"PGCOPY\n\xff\r\n\0"), COPY_DONE,
          complete("COPY 1"), ready()),
        F(query("COPY t FROM STDIN")),
        B(copy_resp("G", 0, 2)),
        F(msg("d", b"1\tx\n"), msg("c")),
        B(complete("COPY 1"), ready()),
        F(parse("", "COPY t FROM STDIN"), bind("", ""), describe("P", ""),
          execute(""), SYNC),
        B(PARSE_OK, BIND_OK, NO_DATA, copy_resp("G", 0, 1)),
        F(msg("f", cstr("abort"))),
        B(error("57014"), ready()),
        F(query("START_REPLICATION SLOT s LOGICAL 0/0")),
        B(copy_resp("W", 0, 0), copy_data(b"w\0\0"), COPY_DONE))
    yield "malformed_server", conv(
        B(datarow(1)),
        F(query("SELECT a")),
        B(datarow(3), msg("T", b"\0\2a\0\0\0\0\1"), msg("D"), msg("1"),
          msg("Z"), msg("C"), msg("H"), msg("N", b"SNOTICE\0\0"),
          msg("S", cstr("a") + cstr("b")), rowdesc(A), datarow(2),
          datarow(1), complete("SELECT 1"), ready(), ready(), msg("2"),
          msg("n"), PARAMS, rowdesc(A), complete("x"), error()))
    yield "limits", conv(
        F(*[parse("S_%d" % i, "SELECT 1") for i in range(10)],
          *[bind("P_%d" % i, "S_0") for i in range(10)],
          *[execute("P_%d" % i) for i in range(10)],
          *[SYNC] * 30))
    yield "function_call", conv(
        F(msg("F", struct.pack("!IH", 1598, 0) + struct.pack("!HH", 0, 0))),
        B(msg("V", struct.pack("!i", 4) + b"abcd"), ready()))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "corpus", "fuzz_row_plan")
    os.makedirs(out, exist_ok=True)
    n = 0
    for name, data in seeds():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(data)
        n += 1
    print("wrote %d seeds to %s" % (n, out))


if __name__ == "__main__":
    main()
