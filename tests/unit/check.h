/* Minimal unit-test harness: CHECK(cond) records a failure and goes on;
 * RUN(fn) runs one test; main returns check_exit(). Header-only. */
#ifndef PGVEIL_TEST_CHECK_H
#define PGVEIL_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                            \
  do {                                                                         \
    check_count++;                                                             \
    if (!(cond)) {                                                             \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
    check_count++;                                                             \
    if (check_a_ != check_b_) {                                                \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",      \
              __FILE__, __LINE__, #a, check_a_, #b, check_b_);                 \
    }                                                                          \
  } while (0)

#define CHECK_STR(a, b)                                                        \
  do {                                                                         \
    const char *check_a_ = (a), *check_b_ = (b);                               \
    check_count++;                                                             \
    if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {          \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: CHECK_STR failed: \"%s\" != \"%s\"\n", __FILE__, \
              __LINE__, check_a_ ? check_a_ : "(null)",                        \
              check_b_ ? check_b_ : "(null)");                                 \
    }                                                                          \
  } while (0)

#define RUN(fn)                                                                \
  do {                                                                         \
    int check_before_ = check_failures;                                        \
    fn();                                                                      \
    if (check_failures != check_before_)                                       \
      fprintf(stderr, "FAIL %s\n", #fn);                                       \
  } while (0)

static inline int check_exit(const char *suite) {
  printf("%s: %d checks, %d failed\n", suite, check_count, check_failures);
  return check_failures ? 1 : 0;
}

#endif
