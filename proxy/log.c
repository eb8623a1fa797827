/* Owns log-line formatting and the single write to stderr per line.
 * The only global is the minimum level, set once before threads start. */
#include "pgveil/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pv_log_level_t min_level = PV_LOG_INFO;

void pv_log_set_level(pv_log_level_t level) { min_level = level; }

static const char *level_name(pv_log_level_t l) {
  switch (l) {
  case PV_LOG_DEBUG:
    return "debug";
  case PV_LOG_INFO:
    return "info";
  case PV_LOG_WARN:
    return "warn";
  case PV_LOG_ERROR:
    return "error";
  }
  return "info";
}

void pv_log(pv_log_level_t level, const char *fmt, ...) {
  if (level < min_level)
    return;
  char line[2048], msg[1536];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* Quotes inside msg would break logfmt parsing: make them single. */
  for (char *p = msg; *p; p++)
    if (*p == '"' || *p == '\n')
      *p = *p == '"' ? '\'' : ' ';
  int n = snprintf(line, sizeof line,
                   "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s "
                   "msg=\"%s\"\n",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                   level_name(level), msg);
  if (n < 0)
    return;
  size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
  if (len && line[len - 1] != '\n')
    line[len - 1] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
