/* Unit tests for proxy/pg_frame.c: regular message framing at every split
 * point, size and length errors, startup-phase packets of every kind. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/pg_frame.h"

typedef struct {
  uint8_t b[4096];
  size_t n;
} buf_t;

static void put8(buf_t *b, uint8_t v) { b->b[b->n++] = v; }
static void put32(buf_t *b, uint32_t v) {
  pv_put_u32(b->b + b->n, v);
  b->n += 4;
}
static void putn(buf_t *b, const void *p, size_t n) {
  memcpy(b->b + b->n, p, n);
  b->n += n;
}
static void putstr(buf_t *b, const char *s) { putn(b, s, strlen(s) + 1); }

/* Appends one framed message; returns its offset in the stream. */
static size_t put_msg(buf_t *b, uint8_t type, const void *body, size_t len) {
  size_t at = b->n;
  put8(b, type);
  put32(b, (uint32_t)(len + 4));
  putn(b, body, len);
  return at;
}

/* A stream of five messages, one with an empty body. */
typedef struct {
  buf_t s;
  size_t off[6]; /* message starts, off[5] = end of stream */
  uint8_t type[5];
  uint32_t len[5];
} stream_t;

static void make_stream(stream_t *st) {
  static const uint8_t dr[] = {0, 2, 0, 0, 0, 1, '7', 0xff, 0xff, 0xff, 0xff};
  memset(st, 0, sizeof *st);
  st->off[0] = put_msg(&st->s, 'Q', "SELECT 1;", 10);
  st->off[1] = put_msg(&st->s, 'S', "", 0);
  st->off[2] = put_msg(&st->s, 'D', dr, sizeof dr);
  st->off[3] = put_msg(&st->s, 'Z', "I", 1);
  st->off[4] = put_msg(&st->s, 'C', "SELECT 1", 9);
  st->off[5] = st->s.n;
  const uint8_t types[5] = {'Q', 'S', 'D', 'Z', 'C'};
  const uint32_t lens[5] = {10, 0, sizeof dr, 1, 9};
  memcpy(st->type, types, sizeof types);
  memcpy(st->len, lens, sizeof lens);
}

/* Parses buf[0..k) to exhaustion and checks every result against st. */
static void check_prefix(const stream_t *st, size_t k) {
  /* A heap copy of exactly k bytes lets ASan catch any overread. */
  uint8_t *copy = malloc(k ? k : 1);
  memcpy(copy, st->s.b, k);
  size_t pos = 0;
  int idx = 0;
  for (;;) {
    pv_msg_t m;
    memset(&m, 0xAA, sizeof m);
    int rc = pv_frame_parse(copy + pos, k - pos, 1024, &m);
    if (rc == PV_EAGAIN) {
      CHECK(idx < 5 ? st->off[idx + 1] > k : pos == k);
      if (idx < 5 && k - pos >= PV_FRAME_HEADER) {
        CHECK_EQ(m.type, st->type[idx]);
        CHECK_EQ(m.len, st->len[idx]);
      }
      break;
    }
    CHECK(rc > 0);
    if (rc <= 0 || idx >= 5)
      break;
    CHECK_EQ(pos, st->off[idx]);
    CHECK_EQ(rc, st->off[idx + 1] - st->off[idx]);
    CHECK_EQ(m.type, st->type[idx]);
    CHECK_EQ(m.len, st->len[idx]);
    CHECK(m.body == copy + pos + PV_FRAME_HEADER);
    CHECK(memcmp(m.body, st->s.b + pos + PV_FRAME_HEADER, m.len) == 0);
    pos += (size_t)rc;
    idx++;
  }
  /* Exactly the messages wholly inside the prefix were framed. */
  int want = 0;
  while (want < 5 && st->off[want + 1] <= k)
    want++;
  CHECK_EQ(idx, want);
  free(copy);
}

static void test_frame_every_prefix(void) {
  stream_t st;
  make_stream(&st);
  for (size_t k = 0; k <= st.s.n; k++)
    check_prefix(&st, k);
}

/* A reader that appends chunks to a buffer and consumes whole messages, as
 * a session does; every two-chunk split must give the same messages. */
static void test_frame_every_split(void) {
  stream_t st;
  make_stream(&st);
  for (size_t cut = 0; cut <= st.s.n; cut++) {
    uint8_t acc[4096];
    size_t have = 0, start = 0;
    int idx = 0;
    size_t chunks[2][2] = {{0, cut}, {cut, st.s.n}};
    for (int c = 0; c < 2; c++) {
      memcpy(acc + have, st.s.b + chunks[c][0], chunks[c][1] - chunks[c][0]);
      have += chunks[c][1] - chunks[c][0];
      pv_msg_t m;
      int rc;
      while ((rc = pv_frame_parse(acc + start, have - start, 1024, &m)) > 0) {
        CHECK(idx < 5);
        if (idx >= 5)
          break;
        CHECK_EQ(m.type, st.type[idx]);
        CHECK_EQ(m.len, st.len[idx]);
        start += (size_t)rc;
        idx++;
      }
      CHECK_EQ(rc, PV_EAGAIN);
    }
    CHECK_EQ(idx, 5);
    CHECK_EQ(start, st.s.n);
  }
}

static void test_frame_one_byte_at_a_time(void) {
  stream_t st;
  make_stream(&st);
  size_t start = 0;
  int idx = 0;
  for (size_t have = 0; have <= st.s.n; have++) {
    pv_msg_t m;
    int rc = pv_frame_parse(st.s.b + start, have - start, 1024, &m);
    if (rc > 0) {
      CHECK_EQ(start + (size_t)rc, have);
      start = have;
      idx++;
    } else {
      CHECK_EQ(rc, PV_EAGAIN);
    }
  }
  CHECK_EQ(idx, 5);
}

static void test_frame_limits(void) {
  uint8_t h[5] = {'D'};
  pv_msg_t m;
  memset(&m, 0, sizeof m);
  /* Too big is reported from the header alone, body not yet there. */
  pv_put_u32(h + 1, 1004);
  CHECK_EQ(pv_frame_parse(h, 5, 100, &m), PV_ETOOBIG);
  CHECK_EQ(pv_frame_parse(h, 4, 100, &m), PV_EAGAIN);
  CHECK_EQ(pv_frame_parse(h, 5, 999, &m), PV_ETOOBIG);
  CHECK_EQ(pv_frame_parse(h, 5, 1000, &m), PV_EAGAIN);
  CHECK_EQ(m.type, 'D');
  CHECK_EQ(m.len, 1000);
  /* Lengths below 4, or negative as int32, are malformed. */
  uint32_t bad[] = {0, 1, 3, 0x80000000u, 0xffffffffu};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pv_put_u32(h + 1, bad[i]);
    CHECK_EQ(pv_frame_parse(h, 5, UINT32_MAX, &m), PV_EPROTO);
  }
  /* A huge limit must still yield a size that fits an int. */
  pv_put_u32(h + 1, 0x7fffffffu);
  CHECK_EQ(pv_frame_parse(h, 5, UINT32_MAX, &m), PV_ETOOBIG);
  /* Exactly 4: an empty body, complete with the header. */
  pv_put_u32(h + 1, 4);
  CHECK_EQ(pv_frame_parse(h, 5, 0, &m), 5);
  CHECK_EQ(m.len, 0);
  CHECK_EQ(pv_frame_parse(NULL, 0, 0, &m), PV_EAGAIN);
}

/* ---- startup packets ---- */

static void start_packet(buf_t *b, uint32_t code) {
  memset(b, 0, sizeof *b);
  put32(b, 0); /* length patched by end_packet */
  put32(b, code);
}
static void end_packet(buf_t *b) { pv_put_u32(b->b, (uint32_t)b->n); }

static int parse_startup(const buf_t *b, pv_param_t *params, size_t maxp,
                         pv_startup_t *out) {
  uint8_t *copy = malloc(b->n ? b->n : 1);
  memcpy(copy, b->b, b->n);
  int rc = pv_startup_parse(copy, b->n, 10000, params, maxp, out);
  /* Slices must point into the caller's buffer: re-run on the original. */
  free(copy);
  if (rc >= 0)
    rc = pv_startup_parse(b->b, b->n, 10000, params, maxp, out);
  return rc;
}

static void test_startup_normal(void) {
  buf_t b;
  start_packet(&b, 3u << 16);
  putstr(&b, "user");
  putstr(&b, "alice");
  putstr(&b, "database");
  putstr(&b, "crm");
  putstr(&b, "options");
  putstr(&b, "-c pgveil.purpose=marketing");
  putstr(&b, "application_name");
  putstr(&b, "a");
  putstr(&b, "application_name"); /* duplicates pass through */
  putstr(&b, "b");
  put8(&b, 0);
  end_packet(&b);
  pv_param_t params[8];
  pv_startup_t s;
  CHECK_EQ(parse_startup(&b, params, 8, &s), (int)b.n);
  CHECK_EQ(s.kind, PV_STARTUP_NORMAL);
  CHECK_EQ(s.version, 0x30000);
  CHECK_EQ(s.nparams, 5);
  CHECK(s.params == params);
  CHECK_STR(params[0].key, "user");
  CHECK_STR(params[0].val, "alice");
  CHECK_STR(params[2].val, "-c pgveil.purpose=marketing");
  CHECK_STR(params[3].val, "a");
  CHECK_STR(params[4].key, "application_name");
  CHECK_STR(params[4].val, "b");
  CHECK((const uint8_t *)params[1].key > b.b &&
        (const uint8_t *)params[1].key < b.b + b.n);
  /* Every strict prefix is partial, never an error. */
  for (size_t k = 0; k < b.n; k++)
    CHECK_EQ(pv_startup_parse(b.b, k, 10000, params, 8, &s), PV_EAGAIN);
  /* Too many parameters for the caller's array. */
  CHECK_EQ(pv_startup_parse(b.b, b.n, 10000, params, 4, &s), PV_ELIMIT);
  CHECK_EQ(pv_startup_parse(b.b, b.n, 10000, params, 5, &s), (int)b.n);
  /* Too big: reported once the length word is visible. */
  CHECK_EQ(pv_startup_parse(b.b, 4, (uint32_t)b.n - 1, params, 8, &s),
           PV_ETOOBIG);
  CHECK_EQ(pv_startup_parse(b.b, 3, (uint32_t)b.n - 1, params, 8, &s),
           PV_EAGAIN);
}

static void test_startup_version_32(void) {
  buf_t b;
  start_packet(&b, 3u << 16 | 2);
  putstr(&b, "user");
  putstr(&b, "bob");
  put8(&b, 0);
  end_packet(&b);
  pv_param_t params[2];
  pv_startup_t s;
  CHECK_EQ(parse_startup(&b, params, 2, &s), (int)b.n);
  CHECK_EQ(s.version, 0x30002);
  CHECK_EQ(s.nparams, 1);
  CHECK_STR(params[0].val, "bob");
}

static void test_startup_ssl_gssenc(void) {
  buf_t b;
  pv_startup_t s;
  start_packet(&b, PV_PROTO_SSL_CODE);
  end_packet(&b);
  CHECK_EQ(parse_startup(&b, NULL, 0, &s), 8);
  CHECK_EQ(s.kind, PV_STARTUP_SSL);
  start_packet(&b, PV_PROTO_GSSENC_CODE);
  end_packet(&b);
  CHECK_EQ(parse_startup(&b, NULL, 0, &s), 8);
  CHECK_EQ(s.kind, PV_STARTUP_GSSENC);
  /* Both are exactly 8 bytes. */
  start_packet(&b, PV_PROTO_SSL_CODE);
  put8(&b, 0);
  end_packet(&b);
  CHECK_EQ(parse_startup(&b, NULL, 0, &s), PV_EPROTO);
  start_packet(&b, PV_PROTO_GSSENC_CODE);
  put32(&b, 0);
  end_packet(&b);
  CHECK_EQ(parse_startup(&b, NULL, 0, &s), PV_EPROTO);
}

static void check_cancel_roundtrip(size_t key_len) {
  uint8_t key[PV_CANCEL_KEY_MAX], out[300];
  for (size_t i = 0; i < key_len; i++)
    key[i] = (uint8_t)(i * 7 + 1);
  int n = pv_cancel_encode(out, sizeof out, 4242, key, key_len);
  CHECK_EQ(n, 12 + (int)key_len);
  if (n <= 0)
    return;
  CHECK_EQ(pv_get_u32(out), (uint32_t)n);
  pv_startup_t s;
  CHECK_EQ(pv_startup_parse(out, (size_t)n, 10000, NULL, 0, &s), n);
  CHECK_EQ(s.kind, PV_STARTUP_CANCEL);
  CHECK_EQ(s.cancel_pid, 4242);
  CHECK_EQ(s.cancel_key_len, key_len);
  CHECK(s.cancel_key == out + 12);
  CHECK(memcmp(s.cancel_key, key, key_len) == 0);
  for (size_t k = 0; k < (size_t)n; k++)
    CHECK_EQ(pv_startup_parse(out, k, 10000, NULL, 0, &s), PV_EAGAIN);
  /* Every capacity below the size is refused. */
  for (size_t cap = 0; cap < (size_t)n; cap++)
    CHECK_EQ(pv_cancel_encode(out, cap, 4242, key, key_len), PV_ELIMIT);
}

static void test_startup_cancel(void) {
  check_cancel_roundtrip(4);
  check_cancel_roundtrip(32);
  check_cancel_roundtrip(256);
  uint8_t key[300] = {0}, out[400];
  CHECK_EQ(pv_cancel_encode(out, sizeof out, 1, key, 257), PV_EINVAL);
  CHECK_EQ(pv_cancel_encode(out, sizeof out, 1, key, 3), PV_EINVAL);
  /* Hand-built keys of 257 and 3 bytes are malformed. */
  size_t bad[] = {0, 3, 257};
  for (size_t i = 0; i < 3; i++) {
    buf_t b;
    start_packet(&b, PV_PROTO_CANCEL_CODE);
    put32(&b, 77);
    putn(&b, key, bad[i]);
    end_packet(&b);
    pv_startup_t s;
    CHECK_EQ(parse_startup(&b, NULL, 0, &s), PV_EPROTO);
  }
}

/* Builds a StartupMessage from raw body bytes after the version. */
static int startup_raw(uint32_t version, const void *body, size_t len) {
  buf_t b;
  start_packet(&b, version);
  putn(&b, body, len);
  end_packet(&b);
  pv_param_t params[8];
  pv_startup_t s;
  return parse_startup(&b, params, 8, &s);
}

static void test_startup_malformed(void) {
  static const char ok[] = "user\0alice\0";
  CHECK_EQ(startup_raw(3u << 16, ok, sizeof ok), 8 + (int)sizeof ok);
  /* Protocol major must be 3. */
  CHECK_EQ(startup_raw(2u << 16, ok, sizeof ok), PV_EPROTO);
  CHECK_EQ(startup_raw(4u << 16, ok, sizeof ok), PV_EPROTO);
  CHECK_EQ(startup_raw(1234u << 16 | 5677, ok, sizeof ok), PV_EPROTO);
  /* "user" is required. */
  CHECK_EQ(startup_raw(3u << 16, "database\0crm\0", 14), PV_EPROTO);
  CHECK_EQ(startup_raw(3u << 16, "", 1), PV_EPROTO);
  CHECK_EQ(startup_raw(3u << 16, "", 0), PV_EPROTO);
  /* Missing final NUL, unterminated value, unterminated key. */
  CHECK_EQ(startup_raw(3u << 16, "user\0alice\0", 11), PV_EPROTO);
  CHECK_EQ(startup_raw(3u << 16, "user\0alice", 10), PV_EPROTO);
  CHECK_EQ(startup_raw(3u << 16, "user", 4), PV_EPROTO);
  CHECK_EQ(startup_raw(3u << 16, "user\0\0", 6), PV_EPROTO);
  /* Bytes after the terminator. */
  CHECK_EQ(startup_raw(3u << 16, "user\0alice\0\0x", 13), PV_EPROTO);
  /* Lengths below 8. */
  uint8_t h[8] = {0, 0, 0, 7, 0, 3, 0, 0};
  pv_startup_t s;
  CHECK_EQ(pv_startup_parse(h, 8, 100, NULL, 0, &s), PV_EPROTO);
  pv_put_u32(h, 0);
  CHECK_EQ(pv_startup_parse(h, 4, 100, NULL, 0, &s), PV_EPROTO);
  pv_put_u32(h, 0x80000000u);
  CHECK_EQ(pv_startup_parse(h, 4, UINT32_MAX, NULL, 0, &s), PV_EPROTO);
}

static void test_startup_encode(void) {
  pv_param_t in[3] = {
      {"user", "alice"}, {"database", "crm"}, {"application_name", ""}};
  uint8_t out[256];
  int n = pv_startup_encode(out, sizeof out, 3u << 16 | 2, in, 3);
  size_t want = 8 + 5 + 6 + 9 + 4 + 17 + 1 + 1;
  CHECK_EQ(n, (int)want);
  CHECK_EQ(pv_get_u32(out), want);
  CHECK_EQ(out[want - 1], 0);
  pv_param_t p[3];
  pv_startup_t s;
  CHECK_EQ(pv_startup_parse(out, (size_t)n, 1000, p, 3, &s), n);
  CHECK_EQ(s.version, 0x30002);
  CHECK_EQ(s.nparams, 3);
  for (int i = 0; i < 3; i++) {
    CHECK_STR(p[i].key, in[i].key);
    CHECK_STR(p[i].val, in[i].val);
  }
  for (size_t cap = 0; cap < want; cap++)
    CHECK_EQ(pv_startup_encode(out, cap, 3u << 16, in, 3), PV_ELIMIT);
  CHECK_EQ(pv_startup_encode(out, want, 3u << 16, in, 3), (int)want);
  pv_param_t empty_key = {"", "x"};
  CHECK_EQ(pv_startup_encode(out, sizeof out, 3u << 16, &empty_key, 1),
           PV_EINVAL);
  pv_param_t null_val = {"user", NULL};
  CHECK_EQ(pv_startup_encode(out, sizeof out, 3u << 16, &null_val, 1),
           PV_EINVAL);
}

int main(void) {
  RUN(test_frame_every_prefix);
  RUN(test_frame_every_split);
  RUN(test_frame_one_byte_at_a_time);
  RUN(test_frame_limits);
  RUN(test_startup_normal);
  RUN(test_startup_version_32);
  RUN(test_startup_ssl_gssenc);
  RUN(test_startup_cancel);
  RUN(test_startup_malformed);
  RUN(test_startup_encode);
  return check_exit("test_pg_frame");
}
