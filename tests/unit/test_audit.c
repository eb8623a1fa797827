/* Unit tests of the audit log: JSON escaping of hostile strings, entry
 * lines (no value fields), fingerprints, explanations, and the writer
 * (queue, drop counter, reopen) against a temporary file. */
#include "check.h"

#include <stdlib.h>
#include <unistd.h>

#include "pgveil/audit.h"

static const char *esc(const char *s, size_t len) {
  static char out[512];
  pv_audit_json_escape(s, len, out, sizeof out);
  return out;
}

static void test_escape(void) {
  CHECK_STR(esc("plain", 5), "plain");
  CHECK_STR(esc("a\"b\\c", 5), "a\\\"b\\\\c");
  CHECK_STR(esc("l1\nl2\r\t", 7), "l1\\nl2\\r\\t");
  CHECK_STR(esc("\x01\x1f\x7f", 3), "\\u0001\\u001f\\u007f");
  CHECK_STR(esc("nul\0x", 5), "nul\\u0000x");
  /* valid UTF-8 kept, invalid bytes escaped one by one */
  CHECK_STR(esc("caf\xc3\xa9", 5), "caf\xc3\xa9");
  CHECK_STR(esc("\xff\xfe", 2), "\\u00ff\\u00fe");
  CHECK_STR(esc("\xc3(", 2), "\\u00c3(");
  CHECK_STR(esc("\xed\xa0\x80", 3), "\\u00ed\\u00a0\\u0080"); /* surrogate */
  CHECK_STR(esc("\xc0\xaf", 2), "\\u00c0\\u00af");            /* overlong */
  CHECK_STR(esc("\xe2\x80\xa8", 3), "\xe2\x80\xa8");
  /* "}\n{" injection stays inside one string on one line */
  const char *evil = "x\"}\n{\"event\":\"refused\"";
  const char *e = esc(evil, strlen(evil));
  CHECK(strchr(e, '\n') == NULL);
  CHECK_STR(e, "x\\\"}\\n{\\\"event\\\":\\\"refused\\\"");
  /* truncation: returns the full length, output NUL-terminated */
  char small[5];
  CHECK_EQ(pv_audit_json_escape("a\"bcdef", 7, small, sizeof small), 8);
  CHECK_EQ(strlen(small), 4);
}

static pv_guard_touch_t touch(const char *col, pv_action_kind_t k, bool consent,
                              pv_action_kind_t other) {
  pv_guard_touch_t t = {
      .schema = "public", .table = "customers", .column = col};
  t.action.kind = k;
  t.consent_required = consent;
  t.otherwise.kind = other;
  return t;
}

static void test_touched(void) {
  pv_guard_touch_t t[3] = {
      touch("email", PV_ACT_CLEAR, true, PV_ACT_HASH),
      touch("ssn", PV_ACT_WITHHOLD, false, PV_ACT_CLEAR),
      {.schema = "public", .table = "support_tickets", .column = "body"},
  };
  t[2].action.kind = PV_ACT_WITHHOLD;
  char out[1024];
  int n = pv_audit_format_touched(t, 3, out, sizeof out);
  CHECK(n > 0);
  CHECK_STR(out,
            "\"tables\":[\"public.customers\",\"public.support_tickets\"],"
            "\"columns\":[{\"table\":\"public.customers\",\"column\":\"email\","
            "\"action\":\"clear\",\"consent\":\"required\",\"otherwise\":"
            "\"hash\"},{\"table\":\"public.customers\",\"column\":\"ssn\","
            "\"action\":\"withhold\"},{\"table\":\"public.support_tickets\","
            "\"column\":\"body\",\"action\":\"withhold\"}]");
  /* too small: a shorter valid fragment, flagged */
  char small[140];
  CHECK_EQ(pv_audit_format_touched(t, 3, small, sizeof small), PV_ELIMIT);
  CHECK(strstr(small, "\"columns_truncated\":true") != NULL);
}

static void test_entry(void) {
  pv_guard_touch_t t = touch("ssn", PV_ACT_WITHHOLD, false, PV_ACT_CLEAR);
  char detail[512];
  CHECK(pv_audit_format_touched(&t, 1, detail, sizeof detail) > 0);
  pv_audit_entry_t e = {.event = PV_AUDIT_STATEMENT,
                        .time_ms = 1700000000123LL,
                        .session = 42,
                        .client = "127.0.0.1:5555",
                        .role = "crm\"app",
                        .database = "crm",
                        .application_name = NULL,
                        .purpose = "marketing",
                        .fingerprint = 0xabcdefULL,
                        .detail = detail,
                        .rows = 7};
  char line[2048];
  int n = pv_audit_format_entry(&e, line, sizeof line);
  CHECK(n > 0);
  CHECK_EQ((size_t)n, strlen(line));
  CHECK(line[n - 1] == '\n');
  CHECK_STR(line,
            "{\"event\":\"statement\",\"time\":\"2023-11-14T22:13:20.123Z\","
            "\"session\":42,\"client\":\"127.0.0.1:5555\",\"role\":"
            "\"crm\\\"app\",\"database\":\"crm\",\"application_name\":null,"
            "\"purpose\":\"marketing\",\"fingerprint\":\"0000000000abcdef\","
            "\"tables\":[\"public.customers\"],\"columns\":[{\"table\":"
            "\"public.customers\",\"column\":\"ssn\",\"action\":\"withhold\"}],"
            "\"rows\":7}\n");
  /* a refusal: reason, no rows */
  e.event = PV_AUDIT_REFUSED;
  e.reason = "pgveil: column \"ssn\" may not be used in WHERE";
  CHECK(pv_audit_format_entry(&e, line, sizeof line) > 0);
  CHECK(strstr(line, "\"event\":\"refused\"") != NULL);
  CHECK(strstr(line, "\"reason\":\"pgveil: column \\\"ssn\\\" may not") !=
        NULL);
  CHECK(strstr(line, "\"rows\"") == NULL);
  /* ledger: subjects and columns, hostile subject escaped */
  const char *cols[] = {"email", "phone"};
  const char *subj[] = {"17", "a\"\n"};
  pv_audit_entry_t l = {.event = PV_AUDIT_LEDGER,
                        .time_ms = 0,
                        .session = 1,
                        .role = "crm_app",
                        .purpose = "marketing",
                        .table = "public.customers",
                        .columns = cols,
                        .ncolumns = 2,
                        .subjects = subj,
                        .nsubjects = 2,
                        .part = 1};
  CHECK(pv_audit_format_entry(&l, line, sizeof line) > 0);
  CHECK(strstr(line, "\"columns\":[\"email\",\"phone\"],\"subjects\":[\"17\","
                     "\"a\\\"\\n\"],\"part\":1}\n") != NULL);
  CHECK(strchr(line, '\n') == line + strlen(line) - 1);
  /* does not fit */
  CHECK_EQ(pv_audit_format_entry(&e, line, 40), PV_ELIMIT);
}

static uint64_t fp(const char *s) { return pv_audit_fingerprint(s, strlen(s)); }

static void test_fingerprint(void) {
  uint64_t a = fp("SELECT email FROM customers WHERE id = 42");
  CHECK(a != 0);
  CHECK_EQ(a, fp("select  email\n FROM Customers where ID=7 -- hi"));
  CHECK_EQ(a, fp("SELECT email FROM customers WHERE id = $1"));
  CHECK_EQ(fp("SELECT * FROM t WHERE n = 'alice@example.com'"),
           fp("SELECT * FROM t WHERE n = 'o''brien'"));
  CHECK_EQ(fp("SELECT * FROM t WHERE n = E'a\\'b'"),
           fp("SELECT * FROM t WHERE n = E'zz'"));
  CHECK_EQ(fp("SELECT $$secret$$, $x$y$x$ /* c */"), fp("SELECT 1, 2"));
  CHECK(fp("SELECT email FROM customers") != fp("SELECT ssn FROM customers"));
  CHECK(fp("SELECT \"Email\" FROM t") != fp("SELECT \"email\" FROM t"));
  CHECK(fp("SELECT 1.5e-3") == fp("SELECT 2"));
}

static void test_explain(void) {
  pv_action_t hash = {.kind = PV_ACT_HASH}, clear = {.kind = PV_ACT_CLEAR},
              wh = {.kind = PV_ACT_WITHHOLD};
  pv_col_action_t cols[3] = {
      {.action = NULL, .subject_col = -1},
      {.action = &clear, .otherwise = &hash, .subject_col = 0},
      {.action = &wh, .subject_col = -1},
  };
  pv_row_actions_t ra = {.ncols = 3, .nacted = 2, .ngated = 1, .cols = cols};
  const char *names[] = {"id", "email", "ssn"};
  char out[256];
  size_t n = pv_audit_explain(&ra, names, "marketing", out, sizeof out);
  CHECK_EQ(n, strlen(out));
  CHECK_STR(out, "pgveil: email hashed (purpose marketing, without consent); "
                 "ssn withheld (purpose marketing)");
  char small[20];
  pv_audit_explain(&ra, names, "marketing", small, sizeof small);
  CHECK_STR(small, "pgveil: email ha...");
  pv_row_actions_t none = {.ncols = 1, .cols = cols};
  CHECK_EQ(pv_audit_explain(&none, names, "x", out, sizeof out), 0);
  CHECK_STR(out, "");
}

static size_t slurp(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
  return n;
}

static void test_writer(void) {
  char dir[] = "/tmp/pgveil-audit-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[128], moved[128], buf[65536];
  snprintf(path, sizeof path, "%s/audit.log", dir);
  snprintf(moved, sizeof moved, "%s/audit.log.1", dir);
  pv_audit_t *a = NULL;
  char err[256];
  CHECK_EQ(
      pv_audit_start(path, 2, 4 + PV_AUDIT_LINE_MAX + 64, &a, err, sizeof err),
      PV_OK);
  if (!a)
    return;
  CHECK_EQ(pv_audit_submit(a, 0, "{\"n\":1}\n", 8), PV_OK);
  CHECK_EQ(pv_audit_submit(a, 1, "{\"n\":2}\n", 8), PV_OK);
  usleep(200000);
  CHECK(rename(path, moved) == 0);
  pv_audit_reopen(a);
  usleep(200000);
  CHECK_EQ(pv_audit_submit(a, 0, "{\"n\":3}\n", 8), PV_OK);
  /* a full queue drops without blocking */
  static char big[PV_AUDIT_LINE_MAX];
  memset(big, 'x', sizeof big);
  int dropped = 0;
  for (int i = 0; i < 4; i++)
    dropped += pv_audit_submit(a, 1, big, sizeof big) == PV_ELIMIT;
  CHECK(dropped >= 1);
  CHECK_EQ(pv_audit_dropped(a), (uint64_t)dropped);
  pv_audit_stop(a);
  slurp(moved, buf, sizeof buf);
  CHECK(strstr(buf, "{\"n\":1}") && strstr(buf, "{\"n\":2}"));
  CHECK(!strstr(buf, "{\"n\":3}"));
  slurp(path, buf, sizeof buf);
  CHECK(strstr(buf, "{\"n\":3}") != NULL);
  unlink(path);
  unlink(moved);
  rmdir(dir);
  /* an unwritable path is an error with a message */
  CHECK_EQ(
      pv_audit_start("/nonexistent-dir/x.log", 1, 1 << 20, &a, err, sizeof err),
      PV_EIO);
  CHECK(strstr(err, "/nonexistent-dir/x.log") != NULL);
}

int main(void) {
  RUN(test_escape);
  RUN(test_touched);
  RUN(test_entry);
  RUN(test_fingerprint);
  RUN(test_explain);
  RUN(test_writer);
  return check_exit("test_audit");
}
