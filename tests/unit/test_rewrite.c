/* Unit tests of DataRow and COPY row rewriting under column actions. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pgveil/action.h"
#include "pgveil/copy_rewrite.h"
#include "pgveil/mask.h"
#include "pgveil/pg_msg_backend.h"
#include "pgveil/row_rewrite.h"

static pv_action_t act(const char *spec) {
  pv_action_t a;
  char err[128];
  size_t off;
  if (pv_action_parse(spec, strlen(spec), &a, err, sizeof err, &off) != PV_OK)
    abort();
  return a;
}

/* Builds a DataRow of n text fields (NULL pointer = SQL NULL). */
static size_t datarow(uint8_t *buf, const char **vals, uint16_t n) {
  uint8_t *p = buf + 5;
  pv_put_u16(p, n);
  p += 2;
  for (uint16_t i = 0; i < n; i++) {
    if (!vals[i]) {
      pv_put_u32(p, UINT32_MAX);
      p += 4;
      continue;
    }
    size_t l = strlen(vals[i]);
    pv_put_u32(p, (uint32_t)l);
    memcpy(p + 4, vals[i], l);
    p += 4 + l;
  }
  buf[0] = 'D';
  pv_put_u32(buf + 1, (uint32_t)(p - buf - 1));
  return (size_t)(p - buf);
}

/* Field i of a DataRow as a C string in out ("<NULL>" for NULL). */
static const char *field(const uint8_t *msg, size_t n, uint16_t i, char *out) {
  pv_msg_t m = {.type = 'D', .len = (uint32_t)(n - 5), .body = msg + 5};
  const uint8_t *v;
  int32_t len;
  if (pv_datarow_field(&m, i, &v, &len) != PV_OK)
    return "<ERR>";
  if (len < 0)
    return "<NULL>";
  memcpy(out, v, (size_t)len);
  out[len] = 0;
  return out;
}

static pv_action_t A_MASK, A_WITHHOLD, A_CLEAR, A_HASH;
static pv_mask_key_t KEY;

static void setup(void) {
  A_MASK = act("mask(keep_last=2)");
  A_WITHHOLD = act("withhold");
  A_CLEAR = act("clear");
  A_HASH = act("hash");
  const uint8_t secret[32] = "0123456789abcdef0123456789abcdef";
  if (pv_mask_key_derive(secret, sizeof secret, "marketing", &KEY) != PV_OK)
    abort();
}

/* columns: id (clear), phone (mask), ssn (withhold), email (gated:
 * clear with consent, otherwise hash; subject is column 0) */
static void make_actions(pv_row_actions_t *ra, pv_col_action_t *cols) {
  memset(cols, 0, 4 * sizeof *cols);
  for (int i = 0; i < 4; i++) {
    cols[i].type_oid = PV_OID_TEXT;
    cols[i].typmod = -1;
    cols[i].subject_col = -1;
    cols[i].column_id = "public.customers.x";
    cols[i].key = &KEY;
  }
  cols[1].action = &A_MASK;
  cols[2].action = &A_WITHHOLD;
  cols[3].action = &A_CLEAR;
  cols[3].otherwise = &A_HASH;
  cols[3].subject_col = 0;
  ra->ncols = 4;
  ra->nacted = 3;
  ra->ngated = 1;
  ra->cols = cols;
}

static void test_datarow(void) {
  pv_row_actions_t ra;
  pv_col_action_t cols[4];
  make_actions(&ra, cols);
  const char *vals[4] = {"42", "555-0142", "123-45-6789", "ann@ex.com"};
  uint8_t in[256], out[512];
  char tmp[128];
  size_t n = datarow(in, vals, 4), need = 0;
  pv_msg_t m = {.type = 'D', .len = (uint32_t)(n - 5), .body = in + 5};
  int w = pv_rewrite_datarow(&ra, NULL, &m, out, sizeof out, &need);
  CHECK(w > 0);
  CHECK_EQ(pv_get_u32(out + 1), (uint32_t)w - 1);
  CHECK_STR(field(out, (size_t)w, 0, tmp), "42");
  CHECK_STR(field(out, (size_t)w, 1, tmp), "******42");
  CHECK_STR(field(out, (size_t)w, 2, tmp), "<NULL>");
  const char *h = field(out, (size_t)w, 3, tmp);
  CHECK(strcmp(h, "ann@ex.com") != 0);
  CHECK_EQ(strlen(h), strlen("ann@ex.com"));
  CHECK(h[3] == '@');
  /* with consent for column 3: clear */
  uint8_t consent[4] = {0, 0, 0, 1};
  w = pv_rewrite_datarow(&ra, consent, &m, out, sizeof out, &need);
  CHECK_STR(field(out, (size_t)w, 3, tmp), "ann@ex.com");
  /* too small: PV_ELIMIT and the size needed */
  CHECK_EQ(pv_rewrite_datarow(&ra, NULL, &m, out, 10, &need), PV_ELIMIT);
  CHECK(need > 10);
  /* wrong field count: PV_EPROTO */
  n = datarow(in, vals, 3);
  m.len = (uint32_t)(n - 5);
  CHECK_EQ(pv_rewrite_datarow(&ra, NULL, &m, out, sizeof out, &need),
           PV_EPROTO);
  /* NULL stays NULL under mask */
  const char *nulls[4] = {"1", NULL, NULL, NULL};
  n = datarow(in, nulls, 4);
  m.len = (uint32_t)(n - 5);
  w = pv_rewrite_datarow(&ra, NULL, &m, out, sizeof out, &need);
  CHECK_STR(field(out, (size_t)w, 1, tmp), "<NULL>");
}

static int copy_row(const pv_row_actions_t *ra, const pv_copy_opts_t *f,
                    const char *row, char *out) {
  uint8_t tmp[256];
  size_t need;
  int n = pv_copy_rewrite_row(ra, NULL, f, (const uint8_t *)row, strlen(row),
                              (uint8_t *)out, 1024, &need, tmp, sizeof tmp);
  if (n >= 0)
    out[n] = 0;
  return n;
}

static void test_copy_text(void) {
  pv_row_actions_t ra;
  pv_col_action_t cols[4];
  make_actions(&ra, cols);
  cols[3].otherwise = &A_WITHHOLD;
  pv_copy_opts_t f;
  pv_copy_opts_default(&f, false);
  char out[1024];
  CHECK(copy_row(&ra, &f, "7\t555\\t0142\t123\tx@y\n", out) > 0);
  /* phone unescaped to "555<TAB>0142" (8 chars), masked to 6 stars + 42 */
  CHECK_STR(out, "7\t******42\t\\N\t\\N\n");
  CHECK(copy_row(&ra, &f, "7\t\\N\t123\tx@y\n", out) > 0);
  CHECK_STR(out, "7\t\\N\t\\N\t\\N\n");
  /* too few fields, no line end: refused */
  CHECK_EQ(copy_row(&ra, &f, "7\t1\t2\n", out), PV_EPROTO);
  CHECK_EQ(copy_row(&ra, &f, "7\t1\t2\t3", out), PV_EPROTO);
  /* a masked value with a backslash is escaped again */
  pv_action_t keep = act("mask(keep_first=2)");
  cols[1].action = &keep;
  CHECK(copy_row(&ra, &f, "7\ta\\\\bcd\t1\t2\n", out) > 0);
  CHECK_STR(out, "7\ta\\\\***\t\\N\t\\N\n");
}

static void test_copy_csv(void) {
  pv_row_actions_t ra;
  pv_col_action_t cols[4];
  make_actions(&ra, cols);
  cols[3].otherwise = &A_WITHHOLD;
  pv_copy_opts_t f;
  pv_copy_opts_default(&f, true);
  char out[1024];
  CHECK(copy_row(&ra, &f, "7,\"55,\"\"0142\",123,\"a\nb\"\n", out) > 0);
  /* phone = 55,"0142 (8 chars) -> ******42, quoted on output */
  CHECK_STR(out, "7,\"******42\",,\n");
  /* clear fields are copied verbatim, quoted or not */
  cols[1].action = NULL;
  CHECK(copy_row(&ra, &f, "\"7\",\"x,y\",1,2\n", out) > 0);
  CHECK_STR(out, "\"7\",\"x,y\",,\n");
  uint8_t tmp[64];
  size_t vlen;
  bool isnull;
  const char *row = "\"7\",\"x,y\",,2\n";
  CHECK_EQ(pv_copy_field(&f, (const uint8_t *)row, strlen(row), 1, tmp,
                         sizeof tmp, &vlen, &isnull),
           PV_OK);
  CHECK_EQ(vlen, 3);
  CHECK(memcmp(tmp, "x,y", 3) == 0);
  CHECK_EQ(pv_copy_field(&f, (const uint8_t *)row, strlen(row), 2, tmp,
                         sizeof tmp, &vlen, &isnull),
           PV_OK);
  CHECK(isnull);
  CHECK_EQ(copy_row(&ra, &f, "7,\"unterminated,1,2\n", out), PV_EPROTO);
}

int main(void) {
  setup();
  RUN(test_datarow);
  RUN(test_copy_text);
  RUN(test_copy_csv);
  return check_exit("test_rewrite");
}
