/* Owns row-plan tracking (include/pgveil/row_plan.h): statement and portal
 * maps, the FIFO of expected responses, refcounted column plans.
 * Pure: no I/O, no globals; allocates per statement, portal and
 * RowDescription, never per DataRow.
 *
 * Ordering model. Frontend messages mutate the maps in stream order (a Bind
 * must see the statement of the Parse just before it, long before the
 * server answers). The server may not apply them: a failed or skipped
 * Parse/Bind/Close is undone when its failure is known, newest first. A
 * sequence number (seq) per FIFO entry orders everything in the stream:
 * objects remember the seq that created them (born) and, once the server
 * no longer holds them, the seq where that became true (died). Anything
 * that refers to an object after it died gets no plan (fail closed).
 * Besides explicit messages, names change behind the protocol: the server
 * drops every portal at the end of a transaction (ReadyForQuery 'I'), and
 * SQL PREPARE / DECLARE / DISCARD ALL may re-bind a name (seen from the
 * CommandComplete tag). A name the tracker does not know costs an injected
 * Describe; a name it knows wrongly would cost a leak. */
#include "pgveil/row_plan.h"

#include <stdlib.h>
#include <string.h>

#include "pgveil/pg_msg_backend.h"
#include "pgveil/pg_msg_frontend.h"

/* ---- objects: prepared statements and portals --------------------------- */

enum { OBJ_STMT = 1, OBJ_PORTAL };
enum { SHAPE_UNKNOWN = 0, SHAPE_ROWS, SHAPE_NODATA };

/* Common head of statements and portals. Owner: whoever holds a reference
 * (the map while the name is bound, FIFO entries, portals for their
 * statement); freed by obj_release when refs reaches 0. */
typedef struct obj {
  uint32_t refs;
  uint8_t kind;
  bool dead; /* the server no longer has it (or never had it) */
  bool in_map;
  uint64_t born; /* seq of the entry that created it */
  uint64_t died; /* valid when dead */
  uint64_t hash;
  struct obj *next; /* hash chain */
  const char *name; /* NUL-terminated, stored after the struct */
} obj_t;

typedef struct {
  obj_t o;
  uint32_t describes; /* pending Describe(S) entries for it */
  uint8_t shape;
  pv_plan_t *rowdesc; /* SHAPE_ROWS: its columns, every format text */
  pv_plan_t *derived; /* last non-text plan derived for a portal */
} stmt_t;

typedef struct {
  obj_t o;
  uint32_t describes; /* pending Describe(P) entries for it */
  uint8_t shape;
  stmt_t *stmt;    /* reference; NULL when the name was unknown */
  pv_plan_t *plan; /* SHAPE_ROWS: the plan rows arrive in */
  uint16_t nfmt;   /* Bind's result format codes, big-endian int16 */
  uint8_t *fmt;
} portal_t;

/* Name -> object, chained hash table. Holds one reference per object. */
typedef struct {
  obj_t **b;
  size_t nb; /* power of two, or 0 before the first insert */
  size_t count;
  size_t named;
} map_t;

/* ---- FIFO entries -------------------------------------------------------- */

enum {
  E_QUERY = 1,
  E_PARSE,
  E_BIND,
  E_DESCRIBE_S,
  E_DESCRIBE_P,
  E_EXECUTE,
  E_CLOSE_S,
  E_CLOSE_P,
  E_SYNC,
  E_FUNC,
};
enum { COPY_NONE = 0, COPY_IN, COPY_OUT, COPY_BOTH };

/* One expected response. Owns a reference to every object and plan it
 * points at; released when popped or dropped. */
typedef struct {
  uint8_t kind;
  uint8_t copy;
  uint8_t copy_format;
  bool swallow;  /* reply to an injected Describe */
  bool resolved; /* EXECUTE: plan looked up */
  uint32_t stmt_index;
  uint64_t seq;
  stmt_t *stmt;          /* PARSE: new; DESCRIBE_S: target */
  stmt_t *stmt_prev;     /* PARSE: replaced; CLOSE_S: removed */
  portal_t *portal;      /* BIND: new; DESCRIBE_P, EXECUTE: target */
  portal_t *portal_prev; /* BIND: replaced; CLOSE_P: removed */
  pv_plan_t *plan;       /* QUERY: current result set; EXECUTE: resolved */
} entry_t;

struct pv_tracker {
  pv_tracker_limits_t lim;
  entry_t *ring; /* FIFO: ring[(head + i) % cap], i < len */
  size_t cap, head, len;
  uint64_t seq;
  uint64_t next_plan_id;
  map_t stmts, portals;
  bool skip; /* after an error with no Sync pending: until Sync */
  uint8_t tx;
  pv_be_field_t *fields; /* RowDescription scratch, grown on demand */
  size_t fields_cap;
  uint8_t *inject;
  size_t inject_cap;
};

/* ---- plans --------------------------------------------------------------- */

static void plan_release(pv_plan_t *p) {
  if (!p || --p->refs)
    return;
  if (p->ext_free)
    p->ext_free(p->ext);
  free(p);
}

static void plan_set(pv_plan_t **slot, pv_plan_t *p) {
  if (p)
    p->refs++;
  plan_release(*slot);
  *slot = p;
}

/* One block: the plan, its columns, then their names. */
static pv_plan_t *plan_alloc(pv_tracker_t *t, uint16_t ncols,
                             size_t names_len) {
  size_t sz =
      sizeof(pv_plan_t) + (size_t)ncols * sizeof(pv_plan_col_t) + names_len;
  pv_plan_t *p = calloc(1, sz);
  if (!p)
    return NULL;
  p->id = ++t->next_plan_id;
  p->ncols = ncols;
  p->cols = (pv_plan_col_t *)(p + 1);
  return p;
}

static char *plan_names(pv_plan_t *p) { return (char *)(p->cols + p->ncols); }

/* A plan from a decoded RowDescription; text_only for a Describe(S) reply,
 * whose format codes are not yet known. Returns NULL when out of memory. */
static pv_plan_t *plan_from_fields(pv_tracker_t *t, const pv_be_field_t *f,
                                   uint16_t n, bool text_only) {
  size_t names_len = 0;
  for (uint16_t i = 0; i < n; i++)
    names_len += strlen(f[i].name) + 1;
  pv_plan_t *p = plan_alloc(t, n, names_len);
  if (!p)
    return NULL;
  char *nm = plan_names(p);
  for (uint16_t i = 0; i < n; i++) {
    size_t l = strlen(f[i].name) + 1;
    memcpy(nm, f[i].name, l);
    p->cols[i] = (pv_plan_col_t){
        .table_oid = f[i].table_oid,
        .attnum = f[i].attnum,
        .type_oid = f[i].type_oid,
        .typmod = f[i].typmod,
        .name = nm,
    }; /* .format 0 (text) unless the reply's codes are known */
    if (!text_only)
      p->cols[i].format = f[i].format;
    nm += l;
  }
  return p;
}

/* A copy of base whose formats follow the Bind format codes b (already
 * checked against base's column count). */
static pv_plan_t *plan_with_formats(pv_tracker_t *t, const pv_plan_t *base,
                                    const pv_fe_bind_t *b) {
  size_t names_len = 0;
  for (uint16_t i = 0; i < base->ncols; i++)
    names_len += strlen(base->cols[i].name) + 1;
  pv_plan_t *p = plan_alloc(t, base->ncols, names_len);
  if (!p)
    return NULL;
  char *nm = plan_names(p);
  for (uint16_t i = 0; i < base->ncols; i++) {
    size_t l = strlen(base->cols[i].name) + 1;
    memcpy(nm, base->cols[i].name, l);
    p->cols[i] = base->cols[i];
    p->cols[i].name = nm;
    if (pv_fe_bind_result_format(b, base->ncols, i, &p->cols[i].format)) {
      free(p); /* checked by the caller first; never reached */
      return NULL;
    }
    nm += l;
  }
  return p;
}

/* ---- objects ------------------------------------------------------------- */

static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a: names are short */
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static void obj_release(obj_t *o) {
  if (!o || --o->refs)
    return;
  if (o->kind == OBJ_STMT) {
    stmt_t *s = (stmt_t *)o;
    plan_release(s->rowdesc);
    plan_release(s->derived);
  } else {
    portal_t *p = (portal_t *)o;
    obj_release(p->stmt ? &p->stmt->o : NULL);
    plan_release(p->plan);
    free(p->fmt);
  }
  free(o);
}

/* Allocates a zeroed object of sz bytes named name, with no reference. */
static obj_t *obj_new(size_t sz, uint8_t kind, const char *name,
                      uint64_t born) {
  size_t nl = strlen(name) + 1;
  obj_t *o = calloc(1, sz + nl);
  if (!o)
    return NULL;
  char *nm = (char *)o + sz;
  memcpy(nm, name, nl);
  o->kind = kind;
  o->name = nm;
  o->hash = name_hash(name);
  o->born = born;
  return o;
}

static void obj_kill(obj_t *o, uint64_t at) {
  if (o && !o->dead) {
    o->dead = true;
    o->died = at;
  }
}

/* True when o was gone on the server before stream position seq. */
static bool died_before(const obj_t *o, uint64_t seq) {
  return o->dead && o->died < seq;
}

static obj_t *map_find(const map_t *m, const char *name) {
  if (!m->nb)
    return NULL;
  uint64_t h = name_hash(name);
  for (obj_t *o = m->b[h & (m->nb - 1)]; o; o = o->next)
    if (o->hash == h && strcmp(o->name, name) == 0)
      return o;
  return NULL;
}

static void map_grow(map_t *m) {
  size_t nb = m->nb ? m->nb * 2 : 16;
  obj_t **b = calloc(nb, sizeof(obj_t *));
  if (!b)
    return; /* longer chains, still correct */
  for (size_t i = 0; i < m->nb; i++) {
    obj_t *o = m->b[i], *next;
    for (; o; o = next) {
      next = o->next;
      o->next = b[o->hash & (nb - 1)];
      b[o->hash & (nb - 1)] = o;
    }
  }
  free(m->b);
  m->b = b;
  m->nb = nb;
}

/* Binds o under its name (the caller made sure the name is free). Returns
 * PV_ENOMEM only when the table cannot exist at all. */
static int map_insert(map_t *m, obj_t *o) {
  if (m->count >= m->nb)
    map_grow(m);
  if (!m->nb)
    return PV_ENOMEM;
  size_t i = o->hash & (m->nb - 1);
  o->next = m->b[i];
  m->b[i] = o;
  o->in_map = true;
  o->refs++;
  m->count++;
  m->named += o->name[0] != '\0';
  return PV_OK;
}

/* Unbinds o; the map's reference passes to the caller. */
static void map_remove(map_t *m, obj_t *o) {
  obj_t **pp = &m->b[o->hash & (m->nb - 1)];
  while (*pp != o)
    pp = &(*pp)->next;
  *pp = o->next;
  o->next = NULL;
  o->in_map = false;
  m->count--;
  m->named -= o->name[0] != '\0';
}

/* Unbinds and kills every object created before seq: the server dropped
 * them on its own at that point of the stream. */
static void map_purge(map_t *m, uint64_t before, uint64_t at) {
  for (size_t i = 0; i < m->nb; i++) {
    obj_t *o = m->b[i], *next;
    for (; o; o = next) {
      next = o->next;
      if (o->born < before) {
        map_remove(m, o);
        obj_kill(o, at);
        obj_release(o);
      }
    }
  }
}

static void map_dispose(map_t *m) {
  for (size_t i = 0; i < m->nb; i++) {
    obj_t *o = m->b[i], *next;
    for (; o; o = next) {
      next = o->next;
      o->in_map = false;
      obj_release(o);
    }
  }
  free(m->b);
  *m = (map_t){0};
}

/* Replaces whatever name is bound to with nw; the old object's map
 * reference passes to *prev (NULL when the name was free). */
static int map_replace(map_t *m, obj_t *nw, obj_t **prev) {
  obj_t *old = map_find(m, nw->name);
  if (old)
    map_remove(m, old);
  *prev = old;
  return map_insert(m, nw);
}

/* ---- FIFO ---------------------------------------------------------------- */

static entry_t *ring_at(const pv_tracker_t *t, size_t i) {
  return &t->ring[(t->head + i) % t->cap];
}

/* Makes room for k more entries: PV_ELIMIT beyond max_pending. */
static int ring_reserve(pv_tracker_t *t, size_t k) {
  if (t->len + k > t->lim.max_pending)
    return PV_ELIMIT;
  if (t->len + k <= t->cap)
    return PV_OK;
  size_t cap = t->cap ? t->cap : 8;
  while (cap < t->len + k)
    cap *= 2;
  if (cap > t->lim.max_pending)
    cap = t->lim.max_pending;
  entry_t *r = malloc(cap * sizeof *r);
  if (!r)
    return PV_ENOMEM;
  for (size_t i = 0; i < t->len; i++)
    r[i] = *ring_at(t, i);
  free(t->ring);
  t->ring = r;
  t->cap = cap;
  t->head = 0;
  return PV_OK;
}

/* Appends a zeroed entry; ring_reserve must have succeeded. */
static entry_t *ring_push(pv_tracker_t *t, uint8_t kind) {
  entry_t *e = &t->ring[(t->head + t->len) % t->cap];
  t->len++;
  *e = (entry_t){.kind = kind, .seq = ++t->seq};
  return e;
}

static void entry_release(entry_t *e) {
  if (e->kind == E_DESCRIBE_S && e->stmt)
    e->stmt->describes--;
  if (e->kind == E_DESCRIBE_P && e->portal)
    e->portal->describes--;
  obj_release(e->stmt ? &e->stmt->o : NULL);
  obj_release(e->stmt_prev ? &e->stmt_prev->o : NULL);
  obj_release(e->portal ? &e->portal->o : NULL);
  obj_release(e->portal_prev ? &e->portal_prev->o : NULL);
  plan_release(e->plan);
  e->kind = 0;
}

static void ring_pop(pv_tracker_t *t) {
  entry_release(ring_at(t, 0));
  t->head = (t->head + 1) % t->cap;
  t->len--;
}

/* The server never applied nw (a Parse or Bind that failed or was skipped):
 * unbind it and give its name back to the object it replaced, unless that
 * one is gone too. Runs newest first, so chains of re-definitions unwind. */
static void undo_define(map_t *m, obj_t *nw, obj_t *prev) {
  obj_kill(nw, nw->born);
  if (!nw->in_map)
    return; /* a later, applied message re-bound the name */
  map_remove(m, nw);
  obj_release(nw);
  if (prev && !prev->dead && !prev->in_map)
    (void)map_insert(m, prev); /* the slot was just freed: cannot fail */
}

/* The server never applied a Close: bind the object again if its name is
 * still free. */
static void undo_close(map_t *m, obj_t *old) {
  if (old && !old->dead && !old->in_map && !map_find(m, old->name))
    (void)map_insert(m, old);
}

static void entry_undo(pv_tracker_t *t, entry_t *e) {
  switch (e->kind) {
  case E_PARSE:
    undo_define(&t->stmts, &e->stmt->o, e->stmt_prev ? &e->stmt_prev->o : NULL);
    break;
  case E_BIND:
    undo_define(&t->portals, &e->portal->o,
                e->portal_prev ? &e->portal_prev->o : NULL);
    break;
  case E_CLOSE_S:
    undo_close(&t->stmts, e->stmt_prev ? &e->stmt_prev->o : NULL);
    break;
  case E_CLOSE_P:
    undo_close(&t->portals, e->portal_prev ? &e->portal_prev->o : NULL);
    break;
  default:
    break;
  }
}

/* Drops the first n entries as never applied by the server. */
static void ring_fail(pv_tracker_t *t, size_t n) {
  for (size_t i = n; i-- > 0;) {
    entry_undo(t, ring_at(t, i));
    entry_release(ring_at(t, i));
  }
  t->head = (t->head + n) % (t->cap ? t->cap : 1);
  t->len -= n;
}

/* Index of the first entry of one of the kinds a/b/c, or t->len. */
static size_t ring_find(const pv_tracker_t *t, uint8_t a, uint8_t b,
                        uint8_t c) {
  for (size_t i = 0; i < t->len; i++) {
    uint8_t k = ring_at(t, i)->kind;
    if (k == a || k == b || k == c)
      return i;
  }
  return t->len;
}

/* ---- lifecycle ----------------------------------------------------------- */

pv_tracker_t *pv_tracker_new(const pv_tracker_limits_t *lim) {
  pv_tracker_t *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->lim = *lim;
  t->tx = 'I';
  /* The RowDescription scratch is grown on first use: a session that sits
   * idle must cost a few hundred bytes, not max_columns * 32. */
  return t;
}

void pv_tracker_free(pv_tracker_t *t) {
  if (!t)
    return;
  while (t->len)
    ring_pop(t);
  map_dispose(&t->stmts);
  map_dispose(&t->portals);
  free(t->ring);
  free(t->fields);
  free(t->inject);
  free(t);
}

size_t pv_tracker_pending(const pv_tracker_t *t) { return t->len; }
size_t pv_tracker_statements(const pv_tracker_t *t) { return t->stmts.count; }
size_t pv_tracker_portals(const pv_tracker_t *t) { return t->portals.count; }
uint8_t pv_tracker_tx_status(const pv_tracker_t *t) { return t->tx; }

/* ---- frontend ------------------------------------------------------------ */

static int fe_query(pv_tracker_t *t, const pv_msg_t *m) {
  pv_fe_query_t q;
  int rc = pv_fe_query_decode(m, &q);
  if (rc || (rc = ring_reserve(t, 1)))
    return rc;
  ring_push(t, E_QUERY);
  /* A simple Query destroys the unnamed statement and portal. */
  obj_t *o;
  if ((o = map_find(&t->stmts, "")) != NULL) {
    map_remove(&t->stmts, o);
    obj_release(o);
  }
  if ((o = map_find(&t->portals, "")) != NULL) {
    map_remove(&t->portals, o);
    obj_release(o);
  }
  return PV_OK;
}

/* PV_ELIMIT when binding a new named object would pass max. */
static int check_named(const map_t *m, const char *name, uint32_t max) {
  if (name[0] && m->named >= max && !map_find(m, name))
    return PV_ELIMIT;
  return PV_OK;
}

static int fe_parse(pv_tracker_t *t, const pv_msg_t *m) {
  pv_fe_parse_t p;
  int rc = pv_fe_parse_decode(m, &p);
  if (rc || (rc = check_named(&t->stmts, p.stmt, t->lim.max_statements)) ||
      (rc = ring_reserve(t, 1)))
    return rc;
  stmt_t *s = (stmt_t *)obj_new(sizeof *s, OBJ_STMT, p.stmt, t->seq + 1);
  if (!s)
    return PV_ENOMEM;
  entry_t *e = ring_push(t, E_PARSE);
  e->stmt = s;
  s->o.refs = 1;
  obj_t *prev;
  rc = map_replace(&t->stmts, &s->o, &prev);
  e->stmt_prev = (stmt_t *)prev;
  return rc;
}

static int fe_bind(pv_tracker_t *t, const pv_msg_t *m) {
  pv_fe_bind_t b;
  int rc = pv_fe_bind_decode(m, &b);
  if (rc || (rc = check_named(&t->portals, b.portal, t->lim.max_portals)) ||
      (rc = ring_reserve(t, 1)))
    return rc;
  portal_t *p =
      (portal_t *)obj_new(sizeof *p, OBJ_PORTAL, b.portal, t->seq + 1);
  if (!p)
    return PV_ENOMEM;
  if (b.nresult_formats) {
    p->fmt = malloc((size_t)b.nresult_formats * 2);
    if (!p->fmt) {
      free(p);
      return PV_ENOMEM;
    }
    memcpy(p->fmt, b.result_formats, (size_t)b.nresult_formats * 2);
    p->nfmt = b.nresult_formats;
  }
  stmt_t *s = (stmt_t *)map_find(&t->stmts, b.stmt);
  if (s) {
    s->o.refs++;
    p->stmt = s;
  }
  entry_t *e = ring_push(t, E_BIND);
  e->portal = p;
  p->o.refs = 1;
  obj_t *prev;
  rc = map_replace(&t->portals, &p->o, &prev);
  e->portal_prev = (portal_t *)prev;
  return rc;
}

static int fe_describe(pv_tracker_t *t, const pv_msg_t *m) {
  pv_fe_target_t d;
  int rc = pv_fe_describe_decode(m, &d);
  if (rc || (rc = ring_reserve(t, 1)))
    return rc;
  if (d.kind == 'S') {
    entry_t *e = ring_push(t, E_DESCRIBE_S);
    if ((e->stmt = (stmt_t *)map_find(&t->stmts, d.name)) != NULL) {
      e->stmt->o.refs++;
      e->stmt->describes++;
    }
  } else {
    entry_t *e = ring_push(t, E_DESCRIBE_P);
    if ((e->portal = (portal_t *)map_find(&t->portals, d.name)) != NULL) {
      e->portal->o.refs++;
      e->portal->describes++;
    }
  }
  return PV_OK;
}

/* True when nothing known or pending will tell the portal's row shape. */
static bool shape_unknown(const portal_t *p) {
  if (p->shape != SHAPE_UNKNOWN || p->describes)
    return false;
  return !p->stmt || (p->stmt->shape == SHAPE_UNKNOWN && !p->stmt->describes);
}

/* Queues Describe('P', name) ahead of the Execute, swallowing its reply. p
 * is the portal object, or NULL for a name the tracker does not know (an
 * SQL cursor, or a portal that does not exist: then the server's error
 * about it is the one the Execute would have caused). */
static int inject_describe(pv_tracker_t *t, portal_t *p, const char *name,
                           portal_t **out) {
  size_t need = PV_FRAME_HEADER + 2 + strlen(name);
  if (need > t->inject_cap) {
    uint8_t *nb = realloc(t->inject, need);
    if (!nb)
      return PV_ENOMEM;
    t->inject = nb;
    t->inject_cap = need;
  }
  if (!p) {
    p = (portal_t *)obj_new(sizeof *p, OBJ_PORTAL, name, t->seq + 1);
    if (!p)
      return PV_ENOMEM;
  }
  int n = pv_fe_describe_encode(t->inject, t->inject_cap, 'P', name);
  if (n < 0) {
    if (!p->o.refs)
      free(p);
    return n;
  }
  entry_t *e = ring_push(t, E_DESCRIBE_P);
  e->swallow = true;
  e->portal = p;
  p->o.refs++;
  p->describes++;
  *out = p;
  return n;
}

static int fe_execute(pv_tracker_t *t, const pv_msg_t *m, pv_fe_effect_t *eff) {
  pv_fe_execute_t x;
  int rc = pv_fe_execute_decode(m, &x);
  if (rc)
    return rc;
  portal_t *p = (portal_t *)map_find(&t->portals, x.portal);
  if (!p || shape_unknown(p)) {
    if ((rc = ring_reserve(t, 2)))
      return rc;
    int n = inject_describe(t, p, x.portal, &p);
    if (n < 0)
      return n;
    eff->inject = t->inject;
    eff->inject_len = (size_t)n;
  } else if ((rc = ring_reserve(t, 1))) {
    return rc;
  }
  entry_t *e = ring_push(t, E_EXECUTE);
  e->portal = p;
  p->o.refs++;
  return PV_OK;
}

static int fe_close(pv_tracker_t *t, const pv_msg_t *m) {
  pv_fe_target_t c;
  int rc = pv_fe_close_decode(m, &c);
  if (rc || (rc = ring_reserve(t, 1)))
    return rc;
  map_t *map = c.kind == 'S' ? &t->stmts : &t->portals;
  entry_t *e = ring_push(t, c.kind == 'S' ? E_CLOSE_S : E_CLOSE_P);
  obj_t *o = map_find(map, c.name);
  if (o)
    map_remove(map, o); /* the map's reference passes to the entry */
  if (c.kind == 'S')
    e->stmt_prev = (stmt_t *)o;
  else
    e->portal_prev = (portal_t *)o;
  return PV_OK;
}

static int fe_simple(pv_tracker_t *t, uint8_t kind) {
  int rc = ring_reserve(t, 1);
  if (rc)
    return rc;
  ring_push(t, kind);
  return PV_OK;
}

static bool fe_known(uint8_t type) {
  switch (type) {
  case PV_FE_QUERY:
  case PV_FE_PARSE:
  case PV_FE_BIND:
  case PV_FE_DESCRIBE:
  case PV_FE_EXECUTE:
  case PV_FE_CLOSE:
  case PV_FE_SYNC:
  case PV_FE_FLUSH:
  case PV_FE_TERMINATE:
  case PV_FE_COPY_DATA:
  case PV_FE_COPY_DONE:
  case PV_FE_COPY_FAIL:
  case PV_FE_FUNCTION_CALL:
  case PV_FE_PASSWORD:
    return true;
  default:
    return false;
  }
}

int pv_tracker_frontend(pv_tracker_t *t, const pv_msg_t *m,
                        pv_fe_effect_t *eff) {
  *eff = (pv_fe_effect_t){0};
  /* An unknown message would desynchronise the FIFO: refuse it. */
  if (!fe_known(m->type))
    return PV_EPROTO;
  if (t->skip && m->type != PV_FE_SYNC)
    return PV_OK; /* the server discards it too */
  switch (m->type) {
  case PV_FE_QUERY:
    return fe_query(t, m);
  case PV_FE_PARSE:
    return fe_parse(t, m);
  case PV_FE_BIND:
    return fe_bind(t, m);
  case PV_FE_DESCRIBE:
    return fe_describe(t, m);
  case PV_FE_EXECUTE:
    return fe_execute(t, m, eff);
  case PV_FE_CLOSE:
    return fe_close(t, m);
  case PV_FE_SYNC:
    t->skip = false;
    return fe_simple(t, E_SYNC);
  case PV_FE_FUNCTION_CALL:
    return fe_simple(t, E_FUNC);
  default: /* Flush, Terminate, COPY data, passwords: no response */
    return PV_OK;
  }
}

/* ---- backend ------------------------------------------------------------- */

/* The plan rows of portal p arrive in, building it from the statement's
 * columns and the Bind's format codes on first use. OUT: *out, NULL when
 * unknown. Returns PV_OK or PV_ENOMEM. */
static int portal_plan(pv_tracker_t *t, portal_t *p, pv_plan_t **out) {
  *out = NULL;
  if (p->shape != SHAPE_UNKNOWN) {
    *out = p->plan;
    return PV_OK;
  }
  stmt_t *s = p->stmt;
  /* A statement that died before the Bind is not the one the server bound. */
  if (!s || s->shape != SHAPE_ROWS || died_before(&s->o, p->o.born))
    return PV_OK;
  pv_fe_bind_t b = {.nresult_formats = p->nfmt, .result_formats = p->fmt};
  const pv_plan_t *base = s->rowdesc;
  bool text = true;
  for (uint16_t i = 0; i < base->ncols; i++) {
    int16_t f;
    if (pv_fe_bind_result_format(&b, base->ncols, i, &f))
      return PV_OK; /* the server refused this Bind: no rows should come */
    text &= f == 0;
  }
  pv_plan_t *plan = s->rowdesc;
  if (!text) {
    /* pgjdbc binds the same formats every time: reuse the last plan. */
    bool same = s->derived != NULL;
    for (uint16_t i = 0; same && i < base->ncols; i++) {
      int16_t f;
      same = pv_fe_bind_result_format(&b, base->ncols, i, &f) == PV_OK &&
             s->derived->cols[i].format == f;
    }
    if (!same) {
      pv_plan_t *d = plan_with_formats(t, base, &b);
      if (!d)
        return PV_ENOMEM;
      plan_set(&s->derived, d);
    }
    plan = s->derived;
  }
  plan_set(&p->plan, plan);
  p->shape = SHAPE_ROWS;
  *out = plan;
  return PV_OK;
}

/* The plan of the Execute entry e, looked up once. */
static int execute_plan(pv_tracker_t *t, entry_t *e, const pv_plan_t **out) {
  *out = NULL;
  if (!e->resolved) {
    e->resolved = true;
    pv_plan_t *p = NULL;
    if (!died_before(&e->portal->o, e->seq)) {
      int rc = portal_plan(t, e->portal, &p);
      if (rc)
        return rc;
    }
    plan_set(&e->plan, p);
  }
  *out = e->plan;
  return PV_OK;
}

static int be_datarow(pv_tracker_t *t, entry_t *h, const pv_msg_t *m,
                      pv_be_effect_t *eff) {
  eff->rows = PV_ROWS_DATAROW;
  if (m->len < 2)
    return PV_EPROTO;
  const pv_plan_t *plan = NULL;
  if (h && h->kind == E_QUERY) {
    plan = h->plan;
    eff->stmt_index = h->stmt_index;
  } else if (h && h->kind == E_EXECUTE) {
    int rc = execute_plan(t, h, &plan);
    if (rc)
      return rc;
  }
  /* A row whose field count disagrees with its plan is not that plan's:
   * the session fails closed. The full walk is the rewriter's job. */
  if (plan && pv_get_u16(m->body) != plan->ncols)
    plan = NULL;
  eff->plan = plan;
  return PV_OK;
}

static int be_rowdesc(pv_tracker_t *t, entry_t *h, const pv_msg_t *m,
                      pv_be_effect_t *eff) {
  uint16_t n;
  size_t want = m->len >= 2 ? pv_get_u16(m->body) : 0;
  if (want > t->lim.max_columns)
    want = t->lim.max_columns;
  if (want > t->fields_cap) {
    size_t cap = t->fields_cap ? t->fields_cap : 16;
    while (cap < want)
      cap *= 2;
    pv_be_field_t *f = realloc(t->fields, cap * sizeof *f);
    if (!f)
      return PV_ENOMEM;
    t->fields = f;
    t->fields_cap = cap;
  }
  int rc = pv_be_rowdesc_decode(m, t->fields, want, &n);
  if (rc)
    return rc;
  if (!h)
    return PV_EPROTO;
  pv_plan_t *p;
  switch (h->kind) {
  case E_QUERY:
    if (!(p = plan_from_fields(t, t->fields, n, false)))
      return PV_ENOMEM;
    plan_set(&h->plan, p);
    return PV_OK;
  case E_DESCRIBE_S: {
    stmt_t *s = h->stmt;
    if (s && !died_before(&s->o, h->seq)) {
      if (!(p = plan_from_fields(t, t->fields, n, true)))
        return PV_ENOMEM;
      plan_set(&s->rowdesc, p);
      plan_set(&s->derived, NULL);
      s->shape = SHAPE_ROWS;
    }
    ring_pop(t);
    return PV_OK;
  }
  case E_DESCRIBE_P: {
    portal_t *pt = h->portal;
    eff->swallow = h->swallow;
    if (pt && !died_before(&pt->o, h->seq)) {
      if (!(p = plan_from_fields(t, t->fields, n, false)))
        return PV_ENOMEM;
      plan_set(&pt->plan, p);
      pt->shape = SHAPE_ROWS;
    }
    ring_pop(t);
    return PV_OK;
  }
  default:
    return PV_EPROTO;
  }
}

static int be_nodata(pv_tracker_t *t, entry_t *h, pv_be_effect_t *eff) {
  if (h && h->kind == E_DESCRIBE_S) {
    stmt_t *s = h->stmt;
    if (s && !died_before(&s->o, h->seq)) {
      plan_set(&s->rowdesc, NULL);
      plan_set(&s->derived, NULL);
      s->shape = SHAPE_NODATA;
    }
  } else if (h && h->kind == E_DESCRIBE_P) {
    portal_t *p = h->portal;
    eff->swallow = h->swallow;
    if (p && !died_before(&p->o, h->seq)) {
      plan_set(&p->plan, NULL);
      p->shape = SHAPE_NODATA;
    }
  } else {
    return PV_EPROTO;
  }
  ring_pop(t);
  return PV_OK;
}

/* Pops the head when it is of kind a or b; PV_EPROTO otherwise. */
static int be_expect(pv_tracker_t *t, entry_t *h, uint8_t a, uint8_t b) {
  if (!h || (h->kind != a && h->kind != b))
    return PV_EPROTO;
  ring_pop(t);
  return PV_OK;
}

static bool tag_is(const char *tag, const char *word, bool prefix) {
  size_t l = strlen(word);
  return strncmp(tag, word, l) == 0 && (prefix || tag[l] == '\0');
}

/* SQL commands that re-bind a name behind the protocol's back: PREPARE a
 * statement name, DECLARE a portal name (DISCARD ALL drops both). Either
 * can only reuse a name the server no longer holds but the tracker may
 * still map, so every mapping made before entry h is forgotten. Commands
 * that only drop objects (DEALLOCATE, CLOSE, ROLLBACK TO) need nothing: a
 * stale name fails on the server, and is re-bound only through here or
 * through Parse/Bind. */
static void tag_purge(pv_tracker_t *t, const entry_t *h, const char *tag) {
  bool all = tag_is(tag, "DISCARD ALL", false);
  if (all || tag_is(tag, "PREPARE", false))
    map_purge(&t->stmts, h->seq, h->seq);
  if (all || tag_is(tag, "DECLARE CURSOR", false))
    map_purge(&t->portals, h->seq, h->seq);
}

/* End of one statement of a simple Query: the next gets a fresh plan. */
static void query_next(entry_t *h) {
  h->stmt_index++;
  plan_set(&h->plan, NULL);
  h->copy = COPY_NONE;
}

static int be_complete(pv_tracker_t *t, entry_t *h, const pv_msg_t *m) {
  const char *tag;
  int rc = pv_be_command_complete_decode(m, &tag);
  if (rc)
    return rc;
  if (!h || (h->kind != E_QUERY && h->kind != E_EXECUTE))
    return PV_EPROTO;
  tag_purge(t, h, tag);
  if (h->kind == E_QUERY)
    query_next(h);
  else
    ring_pop(t);
  return PV_OK;
}

static int be_empty(pv_tracker_t *t, entry_t *h) {
  if (h && h->kind == E_QUERY) {
    query_next(h);
    return PV_OK;
  }
  return be_expect(t, h, E_EXECUTE, E_EXECUTE);
}

static int be_copy_response(entry_t *h, const pv_msg_t *m) {
  uint8_t fmt;
  uint16_t ncols;
  const uint8_t *cols;
  int rc = pv_be_copy_response_decode(m, &fmt, &ncols, &cols);
  if (rc)
    return rc;
  if (!h || (h->kind != E_QUERY && h->kind != E_EXECUTE))
    return PV_EPROTO;
  h->copy = m->type == PV_BE_COPY_OUT  ? COPY_OUT
            : m->type == PV_BE_COPY_IN ? COPY_IN
                                       : COPY_BOTH;
  h->copy_format = fmt;
  return PV_OK;
}

static void be_copy_data(entry_t *h, pv_be_effect_t *eff) {
  if (!h || (h->kind != E_QUERY && h->kind != E_EXECUTE) || h->copy != COPY_OUT)
    return; /* COPY BOTH (replication) data is not rows */
  eff->rows = PV_ROWS_COPY_OUT;
  eff->copy_format = h->copy_format;
  eff->stmt_index = h->stmt_index;
}

static int be_ready(pv_tracker_t *t, const pv_msg_t *m) {
  uint8_t st;
  int rc = pv_be_ready_decode(m, &st);
  if (rc)
    return rc;
  t->tx = st;
  size_t i = ring_find(t, E_QUERY, E_FUNC, E_SYNC);
  if (i == t->len)
    return PV_OK;  /* nothing waits for it: keep the FIFO as it is */
  ring_fail(t, i); /* anything before it went unanswered */
  uint64_t seq = ring_at(t, 0)->seq;
  ring_pop(t);
  /* Out of any transaction block, the server holds no portal any more. */
  if (st == 'I')
    map_purge(&t->portals, seq, seq);
  return PV_OK;
}

static int be_error(pv_tracker_t *t, entry_t *h) {
  if (!h)
    return PV_OK;
  switch (h->kind) {
  case E_QUERY:
    /* The rest of the Query is skipped; the entry waits for
     * ReadyForQuery. */
    plan_set(&h->plan, NULL);
    h->copy = COPY_NONE;
    return PV_OK;
  case E_SYNC: /* e.g. a deferred constraint failing at commit */
  case E_FUNC:
    return PV_OK;
  default: {
    /* The server discards every message up to the next Sync. */
    size_t s = ring_find(t, E_SYNC, E_SYNC, E_SYNC);
    if (s == t->len)
      t->skip = true;
    ring_fail(t, s);
    return PV_OK;
  }
  }
}

int pv_tracker_backend(pv_tracker_t *t, const pv_msg_t *m,
                       pv_be_effect_t *eff) {
  *eff = (pv_be_effect_t){0};
  entry_t *h = t->len ? ring_at(t, 0) : NULL;
  switch (m->type) {
  case PV_BE_DATA_ROW:
    return be_datarow(t, h, m, eff);
  case PV_BE_ROW_DESCRIPTION:
    return be_rowdesc(t, h, m, eff);
  case PV_BE_NO_DATA:
    return be_nodata(t, h, eff);
  case PV_BE_PARAMETER_DESCRIPTION:
    return h && h->kind == E_DESCRIBE_S ? PV_OK : PV_EPROTO;
  case PV_BE_PARSE_COMPLETE:
    return be_expect(t, h, E_PARSE, E_PARSE);
  case PV_BE_BIND_COMPLETE:
    return be_expect(t, h, E_BIND, E_BIND);
  case PV_BE_CLOSE_COMPLETE:
    return be_expect(t, h, E_CLOSE_S, E_CLOSE_P);
  case PV_BE_PORTAL_SUSPENDED:
    return be_expect(t, h, E_EXECUTE, E_EXECUTE);
  case PV_BE_COMMAND_COMPLETE:
    return be_complete(t, h, m);
  case PV_BE_EMPTY_QUERY:
    return be_empty(t, h);
  case PV_BE_COPY_IN:
  case PV_BE_COPY_OUT:
  case PV_BE_COPY_BOTH:
    return be_copy_response(h, m);
  case PV_BE_COPY_DATA:
    be_copy_data(h, eff);
    return PV_OK;
  case PV_BE_COPY_DONE:
    if (h && (h->copy == COPY_OUT || h->copy == COPY_BOTH))
      h->copy = COPY_NONE;
    return PV_OK;
  case PV_BE_FUNCTION_RESULT:
    return h && h->kind == E_FUNC ? PV_OK : PV_EPROTO;
  case PV_BE_READY:
    return be_ready(t, m);
  case PV_BE_ERROR:
    return be_error(t, h);
  default: /* Notice, Notification, ParameterStatus, ...: no effect */
    return PV_OK;
  }
}
