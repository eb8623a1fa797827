# Minimal raw PostgreSQL v3 wire-protocol client for tests drivers can't express.
# Builds and reads messages only; no pooling, no TLS, no retries.
"""Raw protocol client: message builders, a framed reader, trust/md5/SCRAM auth.

Used by the integration tests to send byte sequences no driver produces
(1-byte writes, oversized messages, Execute without Describe, SSLRequest and
GSSENCRequest probes) and to see every message the server side sends back.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import time

PROTO_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


class ProtocolError(Exception):
    pass


class ServerError(Exception):
    """An ErrorResponse; .fields maps field codes ('C', 'M', ...) to text."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__("%s %s: %s" % (fields.get("S", "?"), fields.get("C", "?"),
                                        fields.get("M", "")))

    @property
    def sqlstate(self):
        return self.fields.get("C")


# -- message builders (frontend) ---------------------------------------------

def cstr(s):
    if isinstance(s, str):
        s = s.encode()
    return s + b"\0"


def msg(tag, payload=b""):
    return tag + struct.pack("!I", len(payload) + 4) + payload


def startup(user, database=None, version=PROTO_3_0, **params):
    body = struct.pack("!I", version)
    kv = {"user": user}
    if database:
        kv["database"] = database
    kv.update(params)
    for k, v in kv.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST)


def gssenc_request():
    return struct.pack("!II", 8, GSSENC_REQUEST)


def cancel_request(pid, key):
    if isinstance(key, int):
        key = struct.pack("!I", key)
    return struct.pack("!III", 12 + len(key), CANCEL_REQUEST, pid) + key


def query(sql):
    return msg(b"Q", cstr(sql))


def parse(sql, name="", param_oids=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(param_oids))
               + b"".join(struct.pack("!I", o) for o in param_oids))


def bind(params=(), portal="", stmt="", param_formats=(), result_formats=()):
    body = cstr(portal) + cstr(stmt)
    body += struct.pack("!H", len(param_formats))
    body += b"".join(struct.pack("!H", f) for f in param_formats)
    body += struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            if isinstance(p, str):
                p = p.encode()
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(result_formats))
    body += b"".join(struct.pack("!H", f) for f in result_formats)
    return msg(b"B", body)


def describe(kind, name=""):
    return msg(b"D", kind + cstr(name))


def execute(portal="", max_rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!I", max_rows))


def close(kind, name=""):
    return msg(b"C", kind + cstr(name))


def sync():
    return msg(b"S")


def flush():
    return msg(b"H")


def terminate():
    return msg(b"X")


def copy_data(data):
    return msg(b"d", data)


def copy_done():
    return msg(b"c")


# -- message decoders (backend) ----------------------------------------------

def parse_fields(payload):
    """ErrorResponse / NoticeResponse body -> {code: text}."""
    out = {}
    i = 0
    while i < len(payload) and payload[i] != 0:
        code = chr(payload[i])
        j = payload.index(b"\0", i + 1)
        out[code] = payload[i + 1:j].decode(errors="replace")
        i = j + 1
    return out


def parse_row_description(payload):
    (n,) = struct.unpack_from("!H", payload, 0)
    pos = 2
    cols = []
    for _ in range(n):
        j = payload.index(b"\0", pos)
        name = payload[pos:j].decode()
        pos = j + 1
        table, attnum, typ, typlen, typmod, fmt = struct.unpack_from("!IhIhiH", payload, pos)
        pos += 18
        cols.append(dict(name=name, table=table, attnum=attnum, type=typ,
                         typlen=typlen, typmod=typmod, format=fmt))
    return cols


def parse_data_row(payload):
    (n,) = struct.unpack_from("!H", payload, 0)
    pos = 2
    vals = []
    for _ in range(n):
        (ln,) = struct.unpack_from("!i", payload, pos)
        pos += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(payload[pos:pos + ln])
            pos += ln
    if pos != len(payload):
        raise ProtocolError("DataRow length mismatch")
    return vals


class Result:
    """What one query cycle (up to ReadyForQuery) returned."""

    def __init__(self):
        self.messages = []      # [(tag, payload)]
        self.sets = []          # [{'cols': [...] or None, 'rows': [...], 'tag': str}]
        self.errors = []        # [fields]
        self.notices = []
        self.status = None      # ReadyForQuery status byte

    def _cur(self):
        if not self.sets or self.sets[-1].get("done"):
            self.sets.append({"cols": None, "rows": [], "tag": None})
        return self.sets[-1]

    def rows(self, i=0):
        return [s for s in self.sets if s["rows"] or s["cols"]][i]["rows"]


# -- connection --------------------------------------------------------------

class Conn:
    """A raw protocol connection. Owner: the test; close() when done."""

    def __init__(self, host, port, timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.params = {}
        self.pid = None
        self.key = None
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def send_bytewise(self, data, pause=0.0005):
        """One send() per byte: every message split at every byte boundary."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if pause:
                time.sleep(pause)

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by peer (%d of %d bytes buffered)"
                               % (len(self.buf), n))
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_byte(self):
        return self.recv_exact(1)

    def read_msg(self):
        hdr = self.recv_exact(5)
        tag = hdr[:1]
        (ln,) = struct.unpack("!I", hdr[1:])
        if ln < 4:
            raise ProtocolError("bad length %d for %r" % (ln, tag))
        return tag, self.recv_exact(ln - 4)

    def read_until_eof(self, limit_seconds=15.0):
        """Read and discard until EOF; returns the messages seen (tag, payload)
        that are not DataRows, the DataRow count and whether EOF came."""
        deadline = time.monotonic() + limit_seconds
        others, rows = [], 0
        while time.monotonic() < deadline:
            try:
                tag, payload = self.read_msg()
            except EOFError:
                return others, rows, True
            except (ConnectionResetError, BrokenPipeError):
                return others, rows, True
            except socket.timeout:
                break
            if tag == b"D":
                rows += 1
            else:
                others.append((tag, payload))
        return others, rows, False

    # -- startup and authentication --------------------------------------
    def startup(self, user="postgres", database="test", password=None,
                bytewise=False, **params):
        pkt = startup(user, database, **params)
        if bytewise:
            self.send_bytewise(pkt)
        else:
            self.send(pkt)
        while True:
            tag, payload = self.read_msg()
            if tag == b"R":
                self._auth(payload, user, password)
            elif tag == b"S":
                k, v, _ = payload.split(b"\0", 2)
                self.params[k.decode()] = v.decode()
            elif tag == b"K":
                self.pid = struct.unpack_from("!I", payload)[0]
                self.key = payload[4:]
            elif tag == b"Z":
                return self
            elif tag == b"E":
                raise ServerError(parse_fields(payload))
            elif tag in (b"N", b"v"):
                pass
            else:
                raise ProtocolError("unexpected %r during startup" % tag)

    def _auth(self, payload, user, password):
        (code,) = struct.unpack_from("!I", payload)
        if code == 0:
            return
        if password is None:
            raise ProtocolError("server asked for a password (auth code %d)" % code)
        if code == 3:
            self.send(msg(b"p", cstr(password)))
        elif code == 5:
            salt = payload[4:8]
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + salt).hexdigest()
            self.send(msg(b"p", cstr("md5" + outer)))
        elif code == 10:
            mechs = payload[4:].split(b"\0")
            if b"SCRAM-SHA-256" not in mechs:
                raise ProtocolError("no SCRAM-SHA-256 in %r" % mechs)
            self._scram(password)
        else:
            raise ProtocolError("unsupported auth code %d" % code)

    def _scram(self, password):
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = "n=,r=" + cnonce
        first = ("n,," + first_bare).encode()
        self.send(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
        tag, payload = self.read_msg()
        if tag == b"E":
            raise ServerError(parse_fields(payload))
        code = struct.unpack_from("!I", payload)[0]
        if tag != b"R" or code != 11:
            raise ProtocolError("expected SASLContinue, got %r %r" % (tag, payload[:4]))
        server_first = payload[4:].decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(cnonce):
            raise ProtocolError("server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iters)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        final_wo_proof = "c=biws,r=" + nonce
        auth_msg = ",".join([first_bare, server_first, final_wo_proof]).encode()
        sig = hmac.new(stored_key, auth_msg, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        final = (final_wo_proof + ",p=" + base64.b64encode(proof).decode()).encode()
        self.send(msg(b"p", final))
        tag, payload = self.read_msg()
        if tag == b"E":
            raise ServerError(parse_fields(payload))
        if tag != b"R" or struct.unpack_from("!I", payload)[0] != 12:
            raise ProtocolError("expected SASLFinal, got %r" % tag)

    # -- query cycles ----------------------------------------------------
    def read_result(self, raise_error=False):
        """Read messages up to and including ReadyForQuery."""
        res = Result()
        while True:
            tag, payload = self.read_msg()
            res.messages.append((tag, payload))
            if tag == b"T":
                cur = res._cur()
                if cur["cols"] is not None or cur["rows"]:
                    cur["done"] = True
                    cur = res._cur()
                cur["cols"] = parse_row_description(payload)
            elif tag == b"D":
                res._cur()["rows"].append(parse_data_row(payload))
            elif tag == b"C":
                cur = res._cur()
                cur["tag"] = payload[:-1].decode()
                cur["done"] = True
            elif tag == b"s":
                res._cur()["done"] = True
            elif tag == b"E":
                res.errors.append(parse_fields(payload))
            elif tag == b"N":
                res.notices.append(parse_fields(payload))
            elif tag == b"Z":
                res.status = payload
                break
        if raise_error and res.errors:
            raise ServerError(res.errors[0])
        return res

    def simple(self, sql, raise_error=True):
        self.send(query(sql))
        return self.read_result(raise_error)


def connect(host, port, user="postgres", database="test", password=None,
            timeout=30.0, **params):
    c = Conn(host, port, timeout)
    try:
        c.startup(user, database, password, **params)
    except Exception:
        c.close()
        raise
    return c
