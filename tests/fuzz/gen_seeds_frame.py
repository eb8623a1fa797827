#!/usr/bin/python3
"""Writes seed inputs for the fuzz_frame target: realistic protocol v3
streams (a startup packet, then framed messages in either direction).

Usage: /usr/bin/python3 tests/fuzz/gen_seeds_frame.py [OUTDIR]
"""
import os
import struct
import sys

SSL_CODE = 80877103
GSSENC_CODE = 80877104
CANCEL_CODE = 80877102


def cstr(s):
    return s.encode() + b"\0"


def msg(t, body=b""):
    return t.encode() + struct.pack("!I", len(body) + 4) + body


def startup(params, version=3 << 16):
    body = b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!II", 8 + len(body), version) + body


def cancel(pid, key):
    return struct.pack("!III", 12 + len(key), CANCEL_CODE, pid) + key


def query(sql):
    return msg("Q", cstr(sql))


def parse(stmt, sql, oids=()):
    return msg("P", cstr(stmt) + cstr(sql) + struct.pack("!H", len(oids)) +
               b"".join(struct.pack("!I", o) for o in oids))


def bind(portal, stmt, params, pfmts=(), rfmts=()):
    body = cstr(portal) + cstr(stmt)
    body += struct.pack("!H", len(pfmts)) + b"".join(
        struct.pack("!h", f) for f in pfmts)
    body += struct.pack("!H", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else \
            struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(rfmts)) + b"".join(
        struct.pack("!h", f) for f in rfmts)
    return msg("B", body)


def target(t, kind, name):
    return msg(t, kind.encode() + cstr(name))


def execute(portal, max_rows=0):
    return msg("E", cstr(portal) + struct.pack("!i", max_rows))


def rowdesc(fields):
    body = struct.pack("!H", len(fields))
    for name, table, att, typ, typlen, typmod, fmt in fields:
        body += cstr(name) + struct.pack("!IhIhih", table, att, typ, typlen,
                                         typmod, fmt)
    return msg("T", body)


def datarow(vals):
    body = struct.pack("!H", len(vals))
    for v in vals:
        body += struct.pack("!i", -1) if v is None else \
            struct.pack("!i", len(v)) + v
    return msg("D", body)


def errmsg(t, fields):
    return msg(t, b"".join(c.encode() + cstr(v) for c, v in fields) + b"\0")


def auth(sub, data=b""):
    return msg("R", struct.pack("!I", sub) + data)


def ready(s="I"):
    return msg("Z", s.encode())


def complete(tag):
    return msg("C", cstr(tag))


def copy_resp(t, fmt, cols):
    return msg(t, struct.pack("!bH", fmt, len(cols)) +
               b"".join(struct.pack("!h", c) for c in cols))


USER = [("user", "app"), ("database", "crm")]
CUSTOMER = [("id", 16384, 1, 23, 4, -1, 0),
            ("email", 16384, 3, 25, -1, -1, 0),
            ("phone", 16384, 4, 1043, -1, 36, 0)]


def seeds():
    yield "startup_query", startup(USER) + query("SELECT 1") + msg("X")
    yield "ssl_request", struct.pack("!II", 8, SSL_CODE)
    yield "gssenc_request", struct.pack("!II", 8, GSSENC_CODE)
    yield "cancel_key4", cancel(4242, b"\x01\x02\x03\x04")
    yield "cancel_key32", cancel(4242, bytes(range(32)))
    yield "cancel_key256", cancel(7, bytes(i & 0xff for i in range(256)))
    yield "startup_options_purpose", startup(
        USER + [("options", "-c pgveil.purpose=marketing"),
                ("application_name", "a"), ("application_name", "b")]) + \
        query("SELECT email FROM customer; SELECT 2;")
    yield "extended_unnamed", startup(USER) + \
        parse("", "SELECT email FROM customer WHERE id = $1", [23]) + \
        bind("", "", [b"42"]) + target("D", "P", "") + execute("") + msg("S")
    yield "extended_pipeline_32", startup(USER, 3 << 16 | 2) + \
        parse("s1", "SELECT * FROM customer WHERE id = $1", [23]) + \
        target("D", "S", "s1") + \
        bind("p1", "s1", [b"\x00\x00\x00\x2a"], [1], [0, 1, 0]) + \
        execute("p1", 10) + \
        bind("p2", "s1", [None], [], [1]) + execute("p2") + \
        target("C", "P", "p1") + target("C", "S", "s1") + msg("H") + msg("S")
    yield "backend_auth_ok", auth(0) + \
        msg("S", cstr("server_version") + cstr("15.6")) + \
        msg("K", struct.pack("!I", 1234) + b"\xde\xad\xbe\xef") + ready()
    yield "backend_rows", rowdesc(CUSTOMER) + \
        datarow([b"1", b"alice@example.com", b"+33 6 12 34 56 78"]) + \
        datarow([b"2", None, b""]) + complete("SELECT 2") + ready()
    yield "backend_error", errmsg("E", [
        ("S", "ERROR"), ("V", "ERROR"), ("C", "23505"),
        ("M", "duplicate key value violates unique constraint"),
        ("D", "Key (email)=(alice@example.com) already exists.")]) + \
        ready("E")
    yield "backend_error_no_sqlstate", errmsg("E", [
        ("S", "ERROR"), ("M", "no sqlstate here")]) + ready()
    yield "backend_scram", auth(10, cstr("SCRAM-SHA-256-PLUS") +
                                cstr("SCRAM-SHA-256") + b"\0") + \
        auth(11, b"r=abc,s=c2FsdA==,i=4096") + auth(12, b"v=c2ln") + auth(0)
    yield "backend_md5", auth(5, b"salt") + auth(0) + ready()
    yield "backend_copy_out", copy_resp("H", 0, [0, 0]) + \
        msg("d", b"1\talice@example.com\n") + msg("c") + \
        complete("COPY 1") + ready()
    yield "backend_copy_in_binary", copy_resp("G", 1, [1, 1, 0]) + ready("T")
    yield "backend_misc", errmsg("N", [
        ("S", "NOTICE"), ("C", "00000"), ("M", "hello")]) + \
        msg("A", struct.pack("!I", 99) + cstr("consent") + cstr("42")) + \
        msg("t", struct.pack("!HI", 1, 23)) + msg("n") + msg("s") + \
        msg("1") + msg("2") + msg("3") + msg("I")
    yield "backend_bad_datarow", rowdesc(CUSTOMER[:2]) + \
        datarow([b"1"]) + \
        msg("D", struct.pack("!Hi", 1, -2)) + \
        msg("D", struct.pack("!Hi", 1, 100) + b"x") + ready()
    yield "backend_key32_negotiate", auth(0) + \
        msg("K", struct.pack("!I", 77) + bytes(range(32))) + \
        msg("v", struct.pack("!II", 3 << 16 | 0, 1) + cstr("_pq_.x")) + ready()
    yield "bind_binary_params", startup(USER) + \
        parse("ins", "INSERT INTO customer VALUES ($1, $2)", [23, 25]) + \
        bind("", "ins", [b"\x00\x00\x00\x01", b"bob@example.com"], [1, 0],
             []) + execute("", 0) + msg("S")
    yield "function_call_and_copy_in", startup(USER) + \
        query("COPY customer FROM STDIN") + msg("d", b"3\tc@x.org\t\\N\n") + \
        msg("c") + query("SELECT 1") + msg("f", cstr("abort"))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_frame")
    os.makedirs(out, exist_ok=True)
    n = 0
    for name, data in seeds():
        with open(os.path.join(out, "seed_" + name), "wb") as f:
            f.write(data)
        n += 1
    print("wrote %d seeds to %s" % (n, out))


if __name__ == "__main__":
    main()
