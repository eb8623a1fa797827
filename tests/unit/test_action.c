/* Unit tests of the action spec parser and printer (rules/action.c). */
#include "check.h"

#include "pgveil/action.h"

static int parse(const char *s, pv_action_t *a, char *err, size_t *off) {
  return pv_action_parse(s, strlen(s), a, err, 200, off);
}

static void test_simple_names(void) {
  pv_action_t a;
  char err[200];
  size_t off;
  CHECK_EQ(parse("clear", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_CLEAR);
  CHECK_EQ(parse("  withhold  ", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_WITHHOLD);
  CHECK_EQ(parse("hash", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_HASH);
  CHECK_EQ(parse("hash()", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_HASH);
  CHECK_EQ(parse("hash(hex)", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_HASH_HEX);
  CHECK_EQ(parse("HASH ( HEX )", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_HASH_HEX);
  CHECK_EQ(parse("mask_email", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_MASK_EMAIL);
  CHECK_EQ(parse("withhold\n", &a, err, &off), PV_OK);
}

static void test_redact(void) {
  pv_action_t a;
  char err[200];
  size_t off;
  CHECK_EQ(parse("redact('[redacted]')", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_REDACT);
  CHECK_STR(a.redact, "[redacted]");
  CHECK_EQ(a.redact_len, 10);
  CHECK_EQ(parse("redact('it''s')", &a, err, &off), PV_OK);
  CHECK_STR(a.redact, "it's");
  CHECK_EQ(parse("redact('')", &a, err, &off), PV_OK);
  CHECK_EQ(a.redact_len, 0);
  CHECK_EQ(parse("redact('caf\xc3\xa9')", &a, err, &off), PV_OK);
  CHECK_EQ(a.redact_len, 5);
  /* Exactly PV_REDACT_MAX bytes is fine. */
  char spec[PV_REDACT_MAX + 32];
  strcpy(spec, "redact('");
  memset(spec + 8, 'x', PV_REDACT_MAX);
  strcpy(spec + 8 + PV_REDACT_MAX, "')");
  CHECK_EQ(parse(spec, &a, err, &off), PV_OK);
  CHECK_EQ(a.redact_len, PV_REDACT_MAX);
}

static void test_mask(void) {
  pv_action_t a;
  char err[200];
  size_t off;
  CHECK_EQ(parse("mask", &a, err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_MASK);
  CHECK_EQ(a.keep_first, 0);
  CHECK_EQ(a.keep_last, 0);
  CHECK_EQ(a.mask_char, '*');
  CHECK_EQ(parse("mask(keep_last=2, char='#')", &a, err, &off), PV_OK);
  CHECK_EQ(a.keep_first, 0);
  CHECK_EQ(a.keep_last, 2);
  CHECK_EQ(a.mask_char, '#');
  CHECK_EQ(parse("mask(1, 4, 'x')", &a, err, &off), PV_OK);
  CHECK_EQ(a.keep_first, 1);
  CHECK_EQ(a.keep_last, 4);
  CHECK_EQ(a.mask_char, 'x');
  CHECK_EQ(parse("mask(2, char = '''')", &a, err, &off), PV_OK);
  CHECK_EQ(a.keep_first, 2);
  CHECK_EQ(a.mask_char, '\'');
  CHECK_EQ(parse("mask(keep_first=1000,keep_last=+1000)", &a, err, &off),
           PV_OK);
  CHECK_EQ(a.keep_first, 1000);
  CHECK_EQ(a.keep_last, 1000);
}

static void test_generalize(void) {
  pv_action_t a;
  char err[200];
  size_t off;
  static const struct {
    const char *s;
    pv_generalize_t g;
  } cases[] = {{"generalize(year)", PV_GEN_YEAR},
               {"generalize(month)", PV_GEN_MONTH},
               {"generalize( decade )", PV_GEN_DECADE},
               {"generalize(zip3)", PV_GEN_ZIP3}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CHECK_EQ(parse(cases[i].s, &a, err, &off), PV_OK);
    CHECK_EQ(a.kind, PV_ACT_GENERALIZE);
    CHECK_EQ(a.gen, cases[i].g);
  }
  CHECK_EQ(parse("generalize(bucket=10)", &a, err, &off), PV_OK);
  CHECK_EQ(a.gen, PV_GEN_BUCKET);
  CHECK_EQ(a.bucket, 10);
  CHECK_EQ(parse("generalize(bucket=9223372036854775807)", &a, err, &off),
           PV_OK);
  CHECK_EQ(a.bucket, INT64_MAX);
}

/* Each error: its offset and a word of its message. */
static void expect_err(const char *spec, size_t want_off, const char *word,
                       int line) {
  pv_action_t a;
  char err[200];
  size_t off = 9999;
  int rc = pv_action_parse(spec, strlen(spec), &a, err, sizeof err, &off);
  if (rc != PV_ESYNTAX || off != want_off || !strstr(err, word)) {
    check_failures++;
    fprintf(stderr,
            "line %d: spec \"%s\": rc %d offset %zu msg \"%s\" (want offset "
            "%zu, \"%s\")\n",
            line, spec, rc, off, err, want_off, word);
  }
  check_count++;
}

#define ERR(spec, off, word) expect_err(spec, off, word, __LINE__)

static void test_errors(void) {
  ERR("", 0, "expected an action name");
  ERR("   ", 3, "expected an action name");
  ERR("(x)", 0, "expected an action name");
  ERR("hide", 0, "unknown action 'hide'");
  ERR("  scramble(1)", 2, "unknown action");
  ERR("hash(md5)", 5, "expected hex");
  ERR("hash(algo=hex)", 5, "unknown argument 'algo'");
  ERR("hash(hex, hex)", 10, "too many");
  ERR("mask(keep_middle=2)", 5, "unknown argument 'keep_middle'");
  ERR("mask(keep_first='2')", 16, "bad value for keep_first");
  ERR("mask(keep_first=-1)", 16, "keep_first must be >= 0");
  ERR("mask(keep_first=1001)", 16, "keep_first too large");
  ERR("mask(keep_last=5000)", 15, "keep_last too large");
  ERR("mask(keep_last=2, keep_last=3)", 18, "keep_last given twice");
  ERR("mask(char='ab')", 10, "one ASCII printable");
  ERR("mask(char='')", 10, "one ASCII printable");
  ERR("mask(char='\xc3\xa9')", 10, "one ASCII printable");
  ERR("mask(char=5)", 10, "one ASCII printable");
  ERR("mask(1, 2, '#', 4)", 16, "too many arguments");
  ERR("mask(keep_first=)", 16, "expected a value after '='");
  ERR("mask(keep_first=99999999999999999999)", 16, "out of range");
  ERR("mask(keep_first=12ab)", 18, "digits only");
  ERR("mask(keep_last=2", 16, "missing ')'");
  ERR("mask(keep_last=2 char='#')", 17, "expected ',' or ')'");
  ERR("mask(", 5, "missing ')'");
  ERR("mask(1,", 7, "missing ')'");
  ERR("mask(1) x", 8, "unexpected text");
  ERR("mask[1]", 4, "unexpected text");
  ERR("generalize", 10, "generalize needs one of");
  ERR("generalize()", 12, "generalize needs one of");
  ERR("generalize(week)", 11, "expected year, month, decade, zip3");
  ERR("generalize(bucket)", 11, "bucket needs a size");
  ERR("generalize(bucket=0)", 18, "bucket must be > 0");
  ERR("generalize(bucket=-5)", 18, "bucket must be > 0");
  ERR("generalize(bucket='5')", 18, "bad value for bucket");
  ERR("generalize(size=5)", 11, "unknown argument 'size'");
  ERR("generalize(year, month)", 17, "one argument");
  ERR("redact", 6, "redact needs a quoted constant");
  ERR("redact()", 8, "redact needs a quoted constant");
  ERR("redact(42)", 7, "expected a quoted string");
  ERR("redact('a', 'b')", 12, "too many arguments");
  ERR("redact(text='a')", 7, "unknown argument 'text'");
  ERR("redact('abc", 7, "unterminated string");
  ERR("redact('a\tb')", 9, "control character");
  ERR("redact('\xff')", 8, "invalid UTF-8");
  ERR("clear(1)", 6, "clear takes no arguments");
  ERR("withhold(x=1)", 9, "withhold takes no arguments");
  ERR("mask_email('a')", 11, "mask_email takes no arguments");
  ERR("mask(#)", 5, "bad value");

  char spec[PV_REDACT_MAX + 32];
  strcpy(spec, "redact('");
  memset(spec + 8, 'x', PV_REDACT_MAX + 1);
  strcpy(spec + 8 + PV_REDACT_MAX + 1, "')");
  ERR(spec, 7, "redact constant too long");
}

static void test_embedded_nul_and_len(void) {
  pv_action_t a;
  char err[200];
  size_t off;
  /* len bounds the spec: what follows is not read. */
  CHECK_EQ(pv_action_parse("hashXYZ", 4, &a, err, sizeof err, &off), PV_OK);
  CHECK_EQ(a.kind, PV_ACT_HASH);
  CHECK_EQ(pv_action_parse("hash\0(hex)", 10, &a, err, sizeof err, &off),
           PV_ESYNTAX);
  CHECK_EQ(off, 4);
  /* A tiny error buffer still works and stays terminated. */
  char tiny[4];
  CHECK_EQ(pv_action_parse("nope", 4, &a, tiny, sizeof tiny, &off), PV_ESYNTAX);
  CHECK_EQ(strlen(tiny), 3);
  CHECK_EQ(pv_action_parse("nope", 4, &a, NULL, 0, NULL), PV_ESYNTAX);
}

static void roundtrip(const char *spec, const char *canon) {
  pv_action_t a, b;
  char err[200], buf[600];
  size_t off;
  CHECK_EQ(parse(spec, &a, err, &off), PV_OK);
  size_t n = pv_action_format(&a, buf, sizeof buf);
  CHECK_EQ(n, strlen(canon));
  CHECK_STR(buf, canon);
  CHECK_EQ(parse(buf, &b, err, &off), PV_OK);
  CHECK(memcmp(&a, &b, sizeof a) == 0);
}

static void test_format(void) {
  roundtrip("clear", "clear");
  roundtrip("withhold()", "withhold");
  roundtrip("hash", "hash");
  roundtrip("hash( hex )", "hash(hex)");
  roundtrip("mask_email", "mask_email");
  roundtrip("redact('it''s')", "redact('it''s')");
  roundtrip("mask(keep_last=2)", "mask(keep_first=0, keep_last=2, char='*')");
  roundtrip("mask(3,1,'''')", "mask(keep_first=3, keep_last=1, char='''')");
  roundtrip("generalize(year)", "generalize(year)");
  roundtrip("generalize(month)", "generalize(month)");
  roundtrip("generalize(decade)", "generalize(decade)");
  roundtrip("generalize(zip3)", "generalize(zip3)");
  roundtrip("generalize(bucket = 250)", "generalize(bucket=250)");

  pv_action_t a;
  char err[200], small[8];
  size_t off;
  CHECK_EQ(parse("mask(keep_last=2)", &a, err, &off), PV_OK);
  CHECK_EQ(pv_action_format(&a, small, sizeof small), 7);
  CHECK_STR(small, "mask(ke");
  CHECK_STR(pv_action_name(PV_ACT_MASK_EMAIL), "mask_email");
  CHECK_STR(pv_action_name((pv_action_kind_t)99), "unknown");
}

int main(void) {
  RUN(test_simple_names);
  RUN(test_redact);
  RUN(test_mask);
  RUN(test_generalize);
  RUN(test_errors);
  RUN(test_embedded_nul_and_len);
  RUN(test_format);
  return check_exit("test_action");
}
