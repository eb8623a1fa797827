/* Owns getting audit lines from the workers into the audit file: one
 * bounded lock-free queue per worker, a writer thread that drains them,
 * fsyncs once a second and reopens the file on request (SIGUSR1). Must
 * never block a worker: a full queue drops the line and counts it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgveil/audit.h"
#include "pgveil/log.h"

#define POLL_MS 20    /* how often the writer looks at the queues */
#define FSYNC_MS 1000 /* at most this long between write and fsync */
#define OUTBUF 65536  /* bytes gathered before one write(2) */
#define DROP_WARN_EVERY 1000

/* Single producer (one worker), single consumer (the writer). Records are
 * a 4-byte length then the line, wrapping around the end of buf. head and
 * tail only grow; tail - head is what is queued. */
typedef struct {
  _Alignas(64) atomic_size_t head; /* written by the writer */
  _Alignas(64) atomic_size_t tail; /* written by the producer */
  char *buf;
  size_t cap;
} queue_t;

struct pv_audit {
  queue_t *queues;
  unsigned nqueues;
  char path[4096];
  int fd;
  bool is_stdout;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop; /* under mu */
  atomic_bool reopen;
  atomic_ullong dropped;
  char out[OUTBUF];
  size_t outlen;
  bool dirty, write_failed;
};

static void ring_put(queue_t *q, size_t at, const void *p, size_t n) {
  size_t off = at % q->cap, first = q->cap - off < n ? q->cap - off : n;
  memcpy(q->buf + off, p, first);
  memcpy(q->buf, (const char *)p + first, n - first);
}

static void ring_get(const queue_t *q, size_t at, void *p, size_t n) {
  size_t off = at % q->cap, first = q->cap - off < n ? q->cap - off : n;
  memcpy(p, q->buf + off, first);
  memcpy((char *)p + first, q->buf, n - first);
}

int pv_audit_submit(pv_audit_t *a, unsigned queue, const char *line,
                    size_t len) {
  queue_t *q = &a->queues[queue % a->nqueues];
  size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
  size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
  uint32_t n = (uint32_t)len;
  if (len > PV_AUDIT_LINE_MAX || q->cap - (tail - head) < 4 + len) {
    unsigned long long d = atomic_fetch_add(&a->dropped, 1);
    if (d % DROP_WARN_EVERY == 0)
      pv_log(PV_LOG_WARN,
             "audit log queue full: %llu entries dropped so far (the writer "
             "cannot keep up with %s)",
             d + 1, a->path);
    return PV_ELIMIT;
  }
  ring_put(q, tail, &n, 4);
  ring_put(q, tail + 4, line, len);
  atomic_store_explicit(&q->tail, tail + 4 + len, memory_order_release);
  return PV_OK;
}

static void flush_out(pv_audit_t *a) {
  size_t off = 0;
  while (off < a->outlen && a->fd >= 0) {
    ssize_t w = write(a->fd, a->out + off, a->outlen - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      if (!a->write_failed)
        pv_log(PV_LOG_ERROR, "audit log %s: write failed: %s", a->path,
               strerror(errno));
      a->write_failed = true;
      break;
    }
    off += (size_t)w;
    a->write_failed = false;
  }
  if (a->outlen)
    a->dirty = true;
  a->outlen = 0;
}

static void drain(pv_audit_t *a) {
  for (unsigned i = 0; i < a->nqueues; i++) {
    queue_t *q = &a->queues[i];
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    while (head != tail) {
      uint32_t n;
      ring_get(q, head, &n, 4);
      if (a->outlen + n > OUTBUF)
        flush_out(a);
      ring_get(q, head + 4, a->out + a->outlen, n);
      a->outlen += n;
      head += 4 + (size_t)n;
      atomic_store_explicit(&q->head, head, memory_order_release);
    }
  }
  flush_out(a);
}

static int open_file(pv_audit_t *a, char *err, size_t errcap) {
  if (a->is_stdout) {
    a->fd = STDOUT_FILENO;
    return PV_OK;
  }
  int fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    snprintf(err, errcap, "cannot open audit log %s: %s", a->path,
             strerror(errno));
    return PV_EIO;
  }
  a->fd = fd;
  return PV_OK;
}

static void sync_file(pv_audit_t *a) {
  if (a->dirty && a->fd >= 0 && !a->is_stdout)
    (void)fsync(a->fd);
  a->dirty = false;
}

/* Rotation: whatever was queued goes to the old file, the rest to a new
 * one at the same path. A failed open keeps the old descriptor. */
static void reopen(pv_audit_t *a) {
  drain(a);
  sync_file(a);
  if (a->is_stdout)
    return;
  int old = a->fd;
  char err[512];
  if (open_file(a, err, sizeof err) != PV_OK) {
    pv_log(PV_LOG_ERROR, "SIGUSR1: %s; still writing to the old file", err);
    return;
  }
  close(old);
  pv_log(PV_LOG_INFO, "audit log reopened: %s", a->path);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *writer_main(void *arg) {
  pv_audit_t *a = arg;
  uint64_t last_sync = now_ms();
  pthread_mutex_lock(&a->mu);
  while (!a->stop) {
    pthread_mutex_unlock(&a->mu);
    drain(a);
    if (atomic_exchange(&a->reopen, false))
      reopen(a);
    if (now_ms() - last_sync >= FSYNC_MS) {
      sync_file(a);
      last_sync = now_ms();
    }
    pthread_mutex_lock(&a->mu);
    if (a->stop)
      break;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += POLL_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&a->cv, &a->mu, &until);
  }
  pthread_mutex_unlock(&a->mu);
  drain(a);
  sync_file(a);
  return NULL;
}

static void audit_free(pv_audit_t *a) {
  if (!a)
    return;
  for (unsigned i = 0; a->queues && i < a->nqueues; i++)
    free(a->queues[i].buf);
  free(a->queues);
  if (a->fd >= 0 && !a->is_stdout)
    close(a->fd);
  free(a);
}

int pv_audit_start(const char *path, unsigned nqueues, size_t queue_bytes,
                   pv_audit_t **out, char *err, size_t errcap) {
  *out = NULL;
  if (!path || !path[0] || nqueues == 0 || strlen(path) >= 4096 ||
      queue_bytes < 4 + PV_AUDIT_LINE_MAX) {
    snprintf(err, errcap, "invalid audit log settings");
    return PV_EINVAL;
  }
  pv_audit_t *a = calloc(1, sizeof *a);
  if (!a)
    goto oom;
  a->fd = -1;
  strcpy(a->path, path);
  a->is_stdout = strcmp(path, "-") == 0;
  a->nqueues = nqueues;
  a->queues = calloc(nqueues, sizeof *a->queues);
  if (!a->queues)
    goto oom;
  for (unsigned i = 0; i < nqueues; i++) {
    a->queues[i].cap = queue_bytes;
    if (!(a->queues[i].buf = malloc(queue_bytes)))
      goto oom;
  }
  int rc = open_file(a, err, errcap);
  if (rc) {
    audit_free(a);
    return rc;
  }
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  if (pthread_create(&a->thread, NULL, writer_main, a) != 0) {
    snprintf(err, errcap, "cannot start the audit writer thread");
    audit_free(a);
    return PV_ENOMEM;
  }
  *out = a;
  return PV_OK;
oom:
  audit_free(a);
  snprintf(err, errcap, "out of memory");
  return PV_ENOMEM;
}

void pv_audit_reopen(pv_audit_t *a) {
  if (a)
    atomic_store(&a->reopen, true);
}

uint64_t pv_audit_dropped(const pv_audit_t *a) {
  return a ? atomic_load(&((pv_audit_t *)a)->dropped) : 0;
}

void pv_audit_stop(pv_audit_t *a) {
  if (!a)
    return;
  pthread_mutex_lock(&a->mu);
  a->stop = true;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
  pthread_join(a->thread, NULL);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  audit_free(a);
}
