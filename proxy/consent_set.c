/* Owns the consent set (include/pgveil/consent.h): subject canonicalisation,
 * the XXH3 open-addressing tables, snapshots and their holder, lookups.
 * Pure: no I/O, no globals, no allocation on the lookup path. */
#include "pgveil/consent.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#define HUGE_SZ ((size_t)2 << 20)
#define HUGE_MIN ((size_t)8 << 20)

enum {
  OID_NAME = 19,
  OID_INT8 = 20,
  OID_INT2 = 21,
  OID_INT4 = 23,
  OID_TEXT = 25,
  OID_UNKNOWN = 705,
  OID_BPCHAR = 1042,
  OID_VARCHAR = 1043,
  OID_UUID = 2950,
};

/* Slot words: K (the int64 subject, or the XXH3 of the key bytes), G
 * granted mask, R refused mask, then T (touched mask, deltas only), then
 * REF (arena offset << 16 | length, byte keys only). A slot is used iff
 * G | R (| T) is non-zero: no separate bitmap, so a probe touches one
 * place in memory. Hence a base set never clears an entry to nothing
 * (a load only records rows), and a delta entry always has T set. */
enum { W_K = 0, W_G = 1, W_R = 2 };

struct pv_consent_set {
  atomic_size_t refs;
  pv_consent_key_kind_t kind;
  bool is_delta;
  size_t w;   /* words per slot: 3..5 */
  size_t cap; /* slots */
  size_t n;   /* used slots (subjects) */
  size_t max_entries;
  uint64_t *slots;     /* cap * w words */
  size_t slots_mapped; /* bytes mmap'ed for slots; 0: malloc'ed */
  uint8_t *arena;      /* key bytes of UUID/TEXT sets */
  size_t arena_len, arena_cap;
};

struct pv_consent_clock {
  atomic_size_t refs;
  _Atomic uint64_t fresh_until_ms;
};

struct pv_consent_snap {
  atomic_size_t refs;
  pv_consent_set_t *base, *delta;
  pv_consent_clock_t *clock;
  uint64_t purposes_hash;
};

/* ---- Keys --------------------------------------------------------------- */

pv_consent_key_kind_t pv_consent_key_kind(uint32_t type_oid) {
  switch (type_oid) {
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
    return PV_CONSENT_KEY_INT;
  case OID_UUID:
    return PV_CONSENT_KEY_UUID;
  default:
    return PV_CONSENT_KEY_TEXT;
  }
}

static bool text_like(uint32_t oid) {
  return oid == OID_TEXT || oid == OID_VARCHAR || oid == OID_BPCHAR ||
         oid == OID_NAME || oid == OID_UNKNOWN;
}

/* Strict decimal int64, as int8in prints it (an optional sign). */
static bool parse_i64(const uint8_t *s, size_t len, int64_t *out) {
  size_t i = 0;
  bool neg = false;
  if (len && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    i = 1;
  }
  if (i == len || len - i > 19)
    return false;
  uint64_t v = 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return false;
    v = v * 10 + d;
  }
  if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
    return false;
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return true;
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* uuid_in's leniency: any case, optional braces, hyphens between groups
 * of four digits; exactly 32 hex digits. */
static bool parse_uuid(const uint8_t *s, size_t len, uint8_t out[16]) {
  if (len >= 2 && s[0] == '{' && s[len - 1] == '}') {
    s++;
    len -= 2;
  }
  size_t nd = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '-' && nd > 0 && nd % 4 == 0 && nd < 32 && i + 1 < len &&
        s[i + 1] != '-')
      continue;
    int h = hexval(s[i]);
    if (h < 0 || nd >= 32)
      return false;
    if (nd % 2 == 0)
      out[nd / 2] = (uint8_t)(h << 4);
    else
      out[nd / 2] |= (uint8_t)h;
    nd++;
  }
  return nd == 32;
}

static uint64_t be_u64(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* A binary int2/int4/int8 value, sign-extended. */
static bool binary_int(uint32_t oid, const uint8_t *val, size_t len,
                       int64_t *out) {
  size_t want = oid == OID_INT2   ? 2
                : oid == OID_INT4 ? 4
                : oid == OID_INT8 ? 8
                                  : 0;
  if (!want || len != want)
    return false;
  uint64_t v = be_u64(val, len);
  if (want < 8 && (v >> (want * 8 - 1)) & 1)
    v |= ~(uint64_t)0 << (want * 8);
  *out = (int64_t)v;
  return true;
}

static void uuid_text(const uint8_t u[16], uint8_t out[36]) {
  static const char hx[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out[o++] = '-';
    out[o++] = (uint8_t)hx[u[i] >> 4];
    out[o++] = (uint8_t)hx[u[i] & 15];
  }
}

static int key_text(uint32_t oid, int16_t format, const uint8_t *val,
                    size_t len, pv_consent_key_t *k) {
  if (format == 0 || text_like(oid)) {
    k->p = val;
    k->len = len;
    return len <= PV_CONSENT_KEY_MAX ? PV_OK : PV_EINVAL;
  }
  int64_t i;
  if (binary_int(oid, val, len, &i)) {
    int n = snprintf((char *)k->buf, sizeof k->buf, "%lld", (long long)i);
    k->p = NULL; /* in buf */
    k->len = (size_t)n;
    return PV_OK;
  }
  if (oid == OID_UUID && len == 16) {
    uuid_text(val, k->buf);
    k->p = NULL;
    k->len = 36;
    return PV_OK;
  }
  return PV_EINVAL;
}

int pv_consent_key_make(pv_consent_key_kind_t kind, uint32_t type_oid,
                        int16_t format, const uint8_t *val, int32_t len,
                        pv_consent_key_t *out) {
  out->i = 0;
  out->p = NULL;
  out->len = 0;
  if (len < 0 || (!val && len > 0) || (format != 0 && format != 1))
    return PV_EINVAL;
  size_t n = (size_t)len;
  bool as_text = format == 0 || text_like(type_oid);
  switch (kind) {
  case PV_CONSENT_KEY_INT:
    if (as_text)
      return parse_i64(val, n, &out->i) ? PV_OK : PV_EINVAL;
    return binary_int(type_oid, val, n, &out->i) ? PV_OK : PV_EINVAL;
  case PV_CONSENT_KEY_UUID:
    out->p = NULL; /* in buf */
    out->len = 16;
    if (as_text)
      return parse_uuid(val, n, out->buf) ? PV_OK : PV_EINVAL;
    if (type_oid != OID_UUID || n != 16)
      return PV_EINVAL;
    memcpy(out->buf, val, 16);
    return PV_OK;
  case PV_CONSENT_KEY_TEXT:
    return key_text(type_oid, format, val, n, out);
  }
  return PV_EINVAL;
}

/* The key bytes: p, or buf when p is NULL (a copied key stays valid). */
static const uint8_t *kbytes(const pv_consent_key_t *k) {
  return k->p ? k->p : k->buf;
}

/* ---- Tables ------------------------------------------------------------- */

static bool byte_keys(const pv_consent_set_t *s) {
  return s->kind != PV_CONSENT_KEY_INT;
}

static uint64_t key_hash(const pv_consent_set_t *s, const pv_consent_key_t *k) {
  if (!byte_keys(s))
    return XXH3_64bits(&k->i, sizeof k->i);
  return XXH3_64bits(kbytes(k), k->len);
}

/* Maps a hash onto [0, cap) without a power-of-two capacity (Lemire), so a
 * compacted table can sit at any load. */
static size_t slot_of(uint64_t h, size_t cap) {
  return (size_t)(((unsigned __int128)h * cap) >> 64);
}

static bool is_used(const uint64_t *sl, size_t w) {
  return (sl[W_G] | sl[W_R] | (w == 4 || w == 5 ? sl[3] : 0)) != 0;
}

static uint64_t *slot(const pv_consent_set_t *s, size_t i) {
  return s->slots + i * s->w;
}

static bool key_eq(const pv_consent_set_t *s, const uint64_t *sl, uint64_t h,
                   const pv_consent_key_t *k) {
  if (!byte_keys(s))
    return sl[W_K] == (uint64_t)k->i;
  if (sl[W_K] != h)
    return false;
  uint64_t ref = sl[s->w - 1];
  return (ref & 0xffff) == k->len &&
         memcmp(s->arena + (ref >> 16), kbytes(k), k->len) == 0;
}

/* The slot holding k, or (OUT: *free_at) where it would go; SIZE_MAX when
 * absent. The table always has a free slot (load <= 75%). */
static size_t find(const pv_consent_set_t *s, const pv_consent_key_t *k,
                   uint64_t h, size_t *free_at) {
  size_t i = slot_of(h, s->cap);
  for (;;) {
    const uint64_t *sl = slot(s, i);
    if (!is_used(sl, s->w)) {
      if (free_at)
        *free_at = i;
      return SIZE_MAX;
    }
    if (key_eq(s, sl, h, k))
      return i;
    if (++i == s->cap)
      i = 0;
  }
}

/* Zeroed slots. Big tables are mapped directly, 2 MiB aligned, and asked
 * to live on huge pages: a lookup is one random access, and with 4 KiB
 * pages it also misses the TLB (the load of 10M subjects was dominated by
 * it). A fresh mapping is zero already, so its pages are cleared by the
 * kernel as the inserts first touch them, overlapping the rows still
 * arriving, rather than all up front. OUT: *mapped, the bytes mapped (0:
 * from malloc). */
static int alloc_slots(size_t cap, size_t w, uint64_t **slots, size_t *mapped) {
  size_t bytes = cap * w * sizeof **slots;
  *mapped = 0;
  if (bytes < HUGE_MIN) {
    *slots = calloc(cap * w, sizeof **slots);
    return *slots ? PV_OK : PV_ENOMEM;
  }
  bytes = (bytes + HUGE_SZ - 1) & ~(HUGE_SZ - 1);
  uint8_t *p = mmap(NULL, bytes + HUGE_SZ, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return PV_ENOMEM;
  size_t head = (HUGE_SZ - (uintptr_t)p % HUGE_SZ) % HUGE_SZ;
  if (head)
    (void)munmap(p, head);
  if (HUGE_SZ - head)
    (void)munmap(p + head + bytes, HUGE_SZ - head);
  (void)madvise(p + head, bytes, MADV_HUGEPAGE); /* advice only */
  *slots = (uint64_t *)(void *)(p + head);
  *mapped = bytes;
  return PV_OK;
}

static void free_slots(uint64_t *slots, size_t mapped) {
  if (mapped)
    (void)munmap(slots, mapped);
  else
    free(slots);
}

/* Moves every entry into a table of newcap slots. */
static int rehash(pv_consent_set_t *s, size_t newcap) {
  uint64_t *ns;
  size_t mapped;
  if (alloc_slots(newcap, s->w, &ns, &mapped))
    return PV_ENOMEM;
  for (size_t i = 0; i < s->cap; i++) {
    const uint64_t *o = slot(s, i);
    if (!is_used(o, s->w))
      continue;
    uint64_t h = byte_keys(s) ? o[W_K] : XXH3_64bits(&o[W_K], sizeof o[W_K]);
    size_t j = slot_of(h, newcap);
    while (is_used(ns + j * s->w, s->w))
      if (++j == newcap)
        j = 0;
    memcpy(ns + j * s->w, o, s->w * sizeof *o);
  }
  free_slots(s->slots, s->slots_mapped);
  s->slots = ns;
  s->slots_mapped = mapped;
  s->cap = newcap;
  return PV_OK;
}

int pv_consent_set_new(pv_consent_key_kind_t kind, bool is_delta,
                       size_t cap_hint, size_t max_entries,
                       pv_consent_set_t **out) {
  *out = NULL;
  pv_consent_set_t *s = calloc(1, sizeof *s);
  if (!s)
    return PV_ENOMEM;
  atomic_init(&s->refs, 1);
  s->kind = kind;
  s->is_delta = is_delta;
  s->w = 3 + (is_delta ? 1 : 0) + (kind != PV_CONSENT_KEY_INT ? 1 : 0);
  s->cap = cap_hint * 10 / 7 + 16; /* no growth up to the hint */
  s->max_entries = max_entries;
  if (alloc_slots(s->cap, s->w, &s->slots, &s->slots_mapped)) {
    free(s);
    return PV_ENOMEM;
  }
  *out = s;
  return PV_OK;
}

pv_consent_set_t *pv_consent_set_ref(pv_consent_set_t *s) {
  if (s)
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

void pv_consent_set_release(pv_consent_set_t *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  free_slots(s->slots, s->slots_mapped);
  free(s->arena);
  free(s);
}

static int arena_add(pv_consent_set_t *s, const uint8_t *p, size_t len,
                     uint64_t *ref) {
  if (s->arena_len + len > s->arena_cap) {
    size_t nc = s->arena_cap ? s->arena_cap * 2 : 4096;
    while (nc < s->arena_len + len)
      nc *= 2;
    uint8_t *na = realloc(s->arena, nc);
    if (!na)
      return PV_ENOMEM;
    s->arena = na;
    s->arena_cap = nc;
  }
  memcpy(s->arena + s->arena_len, p, len);
  *ref = (uint64_t)s->arena_len << 16 | len;
  s->arena_len += len;
  return PV_OK;
}

/* Inserts k with empty masks at free slot `at` (from find); returns its
 * slot or SIZE_MAX with *rc. The caller sets a mask bit at once. */
static size_t insert(pv_consent_set_t *s, const pv_consent_key_t *k, uint64_t h,
                     size_t at, int *rc) {
  if (s->n >= s->max_entries) {
    *rc = PV_ELIMIT;
    return SIZE_MAX;
  }
  if ((s->n + 1) * 4 > s->cap * 3) {
    if ((*rc = rehash(s, (s->n + 1) * 2)))
      return SIZE_MAX;
    (void)find(s, k, h, &at);
  }
  uint64_t ref = 0;
  if (byte_keys(s) && (*rc = arena_add(s, kbytes(k), k->len, &ref)))
    return SIZE_MAX;
  uint64_t *sl = slot(s, at);
  memset(sl, 0, s->w * sizeof *sl);
  sl[W_K] = byte_keys(s) ? h : (uint64_t)k->i;
  if (byte_keys(s))
    sl[s->w - 1] = ref;
  s->n++;
  return at;
}

/* pv_consent_set_put with the key's hash h already computed. */
static int put_hashed(pv_consent_set_t *s, const pv_consent_key_t *key,
                      uint64_t h, int purpose, int value) {
  if (purpose < 0 || purpose >= PV_CONSENT_MAX_PURPOSES || value < -1 ||
      value > 1 || (byte_keys(s) && key->len > PV_CONSENT_KEY_MAX))
    return PV_EINVAL;
  uint64_t bit = (uint64_t)1 << purpose;
  size_t at = 0, i = find(s, key, h, &at);
  if (i == SIZE_MAX) {
    if (value == -1 && !s->is_delta)
      return PV_OK; /* absent stays absent */
    int rc = PV_OK;
    if ((i = insert(s, key, h, at, &rc)) == SIZE_MAX)
      return rc;
  } else if (value == -1 && !s->is_delta) {
    const uint64_t *o = slot(s, i);
    if (((o[W_G] | o[W_R]) & ~bit) == 0)
      return PV_EINVAL; /* would free a slot inside a probe chain */
  }
  uint64_t *sl = slot(s, i);
  sl[W_G] &= ~bit;
  sl[W_R] &= ~bit;
  if (value == 1)
    sl[W_G] |= bit;
  else if (value == 0)
    sl[W_R] |= bit;
  if (s->is_delta)
    sl[3] |= bit;
  return PV_OK;
}

int pv_consent_set_put(pv_consent_set_t *s, const pv_consent_key_t *key,
                       int purpose, int value) {
  if (byte_keys(s) && key->len > PV_CONSENT_KEY_MAX)
    return PV_EINVAL;
  return put_hashed(s, key, key_hash(s, key), purpose, value);
}

/* Rows per prefetch round: enough distinct subjects to keep a core's
 * outstanding-miss slots busy, few enough that the first prefetched lines
 * are still cached when their put runs. */
#define PUT_BATCH 64

int pv_consent_set_put_many(pv_consent_set_t *s, const pv_consent_put_t *puts,
                            size_t n, size_t *done) {
  uint64_t h[PUT_BATCH];
  *done = 0;
  for (size_t b = 0; b < n; b += PUT_BATCH) {
    size_t m = n - b < PUT_BATCH ? n - b : PUT_BATCH;
    for (size_t i = 0; i < m; i++) {
      const pv_consent_key_t *k = &puts[b + i].key;
      h[i] = byte_keys(s) && k->len > PV_CONSENT_KEY_MAX ? 0 : key_hash(s, k);
      __builtin_prefetch(slot(s, slot_of(h[i], s->cap)), 1);
    }
    for (size_t i = 0; i < m; i++) {
      const pv_consent_put_t *p = &puts[b + i];
      int rc = put_hashed(s, &p->key, h[i], p->purpose, p->value);
      if (rc)
        return rc;
      (*done)++;
    }
  }
  return PV_OK;
}

int pv_consent_set_compact(pv_consent_set_t *s) {
  size_t want = s->n * 10 / 7 + 16;
  /* Not for a few percent: a rehash briefly doubles the memory and costs
   * as much as the load's inserts (a table pre-sized from an estimate is
   * usually within it). */
  if (want + want / 16 >= s->cap)
    return PV_OK;
  return rehash(s, want);
}

int pv_consent_set_clone(const pv_consent_set_t *s, pv_consent_set_t **out) {
  *out = NULL;
  pv_consent_set_t *c = calloc(1, sizeof *c);
  if (!c)
    return PV_ENOMEM;
  *c = (pv_consent_set_t){.kind = s->kind,
                          .is_delta = s->is_delta,
                          .w = s->w,
                          .cap = s->cap,
                          .n = s->n,
                          .max_entries = s->max_entries};
  atomic_init(&c->refs, 1);
  size_t words = s->cap * s->w;
  c->slots = malloc(words * sizeof *c->slots);
  c->arena = s->arena_len ? malloc(s->arena_len) : NULL;
  if (!c->slots || (s->arena_len && !c->arena)) {
    pv_consent_set_release(c);
    return PV_ENOMEM;
  }
  memcpy(c->slots, s->slots, words * sizeof *c->slots);
  if (s->arena_len)
    memcpy(c->arena, s->arena, s->arena_len);
  c->arena_len = c->arena_cap = s->arena_len;
  *out = c;
  return PV_OK;
}

pv_consent_key_kind_t pv_consent_set_kind(const pv_consent_set_t *s) {
  return s->kind;
}

size_t pv_consent_set_count(const pv_consent_set_t *s) { return s ? s->n : 0; }

size_t pv_consent_set_bytes(const pv_consent_set_t *s) {
  if (!s)
    return 0;
  return sizeof *s + s->cap * s->w * sizeof(uint64_t) + s->arena_cap;
}

bool pv_consent_set_get(const pv_consent_set_t *s, const pv_consent_key_t *key,
                        uint64_t *granted, uint64_t *refused,
                        uint64_t *touched) {
  size_t i = find(s, key, key_hash(s, key), NULL);
  if (i == SIZE_MAX)
    return false;
  const uint64_t *sl = slot(s, i);
  *granted = sl[W_G];
  *refused = sl[W_R];
  *touched = s->is_delta ? sl[3] : ~(uint64_t)0;
  return true;
}

/* ---- Freshness ---------------------------------------------------------- */

int pv_consent_clock_new(pv_consent_clock_t **out) {
  *out = calloc(1, sizeof **out);
  if (!*out)
    return PV_ENOMEM;
  atomic_init(&(*out)->refs, 1);
  atomic_init(&(*out)->fresh_until_ms, 0);
  return PV_OK;
}

pv_consent_clock_t *pv_consent_clock_ref(pv_consent_clock_t *c) {
  if (c)
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void pv_consent_clock_release(pv_consent_clock_t *c) {
  if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
    free(c);
}

void pv_consent_clock_set(pv_consent_clock_t *c, uint64_t fresh_until_ms) {
  atomic_store_explicit(&c->fresh_until_ms, fresh_until_ms,
                        memory_order_release);
}

uint64_t pv_consent_clock_get(const pv_consent_clock_t *c) {
  return atomic_load_explicit(&((pv_consent_clock_t *)c)->fresh_until_ms,
                              memory_order_acquire);
}

/* ---- Snapshots ---------------------------------------------------------- */

int pv_consent_snap_new(pv_consent_set_t *base, pv_consent_set_t *delta,
                        pv_consent_clock_t *clock, uint64_t purposes_hash,
                        pv_consent_snap_t **out) {
  *out = NULL;
  if (!base || !clock ||
      (delta && (!delta->is_delta || delta->kind != base->kind)))
    return PV_EINVAL;
  pv_consent_snap_t *s = calloc(1, sizeof *s);
  if (!s)
    return PV_ENOMEM;
  atomic_init(&s->refs, 1);
  s->base = pv_consent_set_ref(base);
  s->delta = pv_consent_set_ref(delta);
  s->clock = pv_consent_clock_ref(clock);
  s->purposes_hash = purposes_hash;
  *out = s;
  return PV_OK;
}

pv_consent_snap_t *pv_consent_ref(pv_consent_snap_t *s) {
  if (s)
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

void pv_consent_release(pv_consent_snap_t *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  pv_consent_set_release(s->base);
  pv_consent_set_release(s->delta);
  pv_consent_clock_release(s->clock);
  free(s);
}

uint64_t pv_consent_purposes_hash(const pv_rules_t *rules) {
  /* Chained per name (no streaming state: its struct is opaque here). */
  uint64_t h = 0;
  for (size_t i = 0; rules && i < rules->npurposes; i++)
    h = XXH3_64bits_withSeed(rules->purposes[i].name,
                             strlen(rules->purposes[i].name), h + i + 1);
  return h;
}

bool pv_consent_stale(const pv_consent_snap_t *s, uint64_t now_ms) {
  return !s || now_ms >= pv_consent_clock_get(s->clock);
}

bool pv_consent_usable(const pv_consent_snap_t *s, const pv_rules_t *rules,
                       uint64_t now_ms) {
  return s && rules && !pv_consent_stale(s, now_ms) &&
         s->purposes_hash == pv_consent_purposes_hash(rules);
}

bool pv_consent_allowed(const pv_consent_snap_t *s, int purpose,
                        pv_consent_mode_t mode, uint32_t type_oid,
                        int16_t format, const uint8_t *val, int32_t len) {
  if (!s || purpose < 0 || purpose >= PV_CONSENT_MAX_PURPOSES)
    return false;
  pv_consent_key_t k;
  if (pv_consent_key_make(s->base->kind, type_oid, format, val, len, &k))
    return false; /* subject unknown: not consented, whatever the mode */
  uint64_t g = 0, r = 0, t, dg, dr, dt;
  if (!pv_consent_set_get(s->base, &k, &g, &r, &t))
    g = r = 0;
  if (s->delta && pv_consent_set_get(s->delta, &k, &dg, &dr, &dt)) {
    g = (g & ~dt) | dg;
    r = (r & ~dt) | dr;
  }
  uint64_t bit = (uint64_t)1 << purpose;
  if (mode == PV_CONSENT_OPT_OUT)
    return !(r & bit);
  return (g & bit) != 0;
}

size_t pv_consent_snap_subjects(const pv_consent_snap_t *s) {
  return s ? pv_consent_set_count(s->base) : 0;
}

size_t pv_consent_snap_delta(const pv_consent_snap_t *s) {
  return s ? pv_consent_set_count(s->delta) : 0;
}

size_t pv_consent_snap_bytes(const pv_consent_snap_t *s) {
  return s ? pv_consent_set_bytes(s->base) + pv_consent_set_bytes(s->delta) : 0;
}

/* ---- Holder ------------------------------------------------------------- */

int pv_consent_holder_init(pv_consent_holder_t *h) {
  h->cur = NULL;
  return pthread_mutex_init(&h->mu, NULL) ? PV_ENOMEM : PV_OK;
}

void pv_consent_holder_dispose(pv_consent_holder_t *h) {
  pv_consent_release(h->cur);
  h->cur = NULL;
  pthread_mutex_destroy(&h->mu);
}

pv_consent_snap_t *pv_consent_holder_acquire(pv_consent_holder_t *h) {
  pthread_mutex_lock(&h->mu);
  pv_consent_snap_t *s = pv_consent_ref(h->cur);
  pthread_mutex_unlock(&h->mu);
  return s;
}

void pv_consent_holder_publish(pv_consent_holder_t *h, pv_consent_snap_t *s) {
  pthread_mutex_lock(&h->mu);
  pv_consent_snap_t *old = h->cur;
  h->cur = s;
  pthread_mutex_unlock(&h->mu);
  pv_consent_release(old);
}
