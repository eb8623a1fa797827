/* Structured log lines on stderr: "ts=... level=... msg=..." (logfmt), one
 * write(2) per line so threads don't interleave. Never pass protected
 * values to it. */
#ifndef PGVEIL_LOG_H
#define PGVEIL_LOG_H

typedef enum {
  PV_LOG_DEBUG,
  PV_LOG_INFO,
  PV_LOG_WARN,
  PV_LOG_ERROR
} pv_log_level_t;

/* Lines below this level are dropped; set once at startup. */
void pv_log_set_level(pv_log_level_t level);

/* fmt builds the msg value; extra key=value pairs may follow a " | "
 * separator in fmt's output and are kept as they are. */
void pv_log(pv_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
