/* core/timer.c: the 4-ary min-heap of timer entries (protocol in timer.h).
 *
 * Owner worker only; nothing here is shared, so there are no atomics.
 *
 * Layout: the children of v[i] are v[4i+1 .. 4i+4], its parent v[(i-1)/4].
 * Sifts move a "hole" instead of swapping: each level costs one copy of an
 * entry instead of three.
 *
 * Growth: the array doubles through weft__realloc (from 64 entries). When
 * realloc fails the old array is still ours and untouched, so insert can
 * report -ENOMEM with the heap exactly as it was (after any compaction,
 * which drops only dead entries).
 *
 * Compaction (drop the entries whose live() is false, then Floyd's
 * bottom-up build) runs inside insert when len reaches compact_at, and then
 * compact_at = max(1024, 2 * len): since compact_at doubles only after the
 * live entries have, each compaction's O(n) is paid for by the n/2 inserts
 * before it.
 */
#include "core/timer.h"

#include <errno.h>

#include "core/alloc.h"

#define MIN_CAP 64            /* first allocation, entries */
#define MIN_COMPACT_AT 1024   /* never compact a heap smaller than this */

/* The heap's strict order (core/timer.h). Ties on the deadline are broken
 * on the other fields so that the pop order depends only on the set of
 * entries (deterministic, and reproducible against a sorted reference);
 * seq in serial order, FIFO across its wrap. */
static inline bool before(const weft__timer_entry *a, const weft__timer_entry *b) {
  if (a->deadline != b->deadline) return a->deadline < b->deadline;
  if (a->seq != b->seq) return (int32_t)(a->seq - b->seq) < 0;
  if (a->kind != b->kind) return a->kind < b->kind;
  return (uintptr_t)a->task < (uintptr_t)b->task;
}

/* Place e at hole i, moving it up past every parent it orders before. */
static void sift_up(weft__timer_entry *v, size_t i, weft__timer_entry e) {
  while (i > 0) {
    size_t parent = (i - 1) / 4;
    if (!before(&e, &v[parent])) break;
    v[i] = v[parent];
    i = parent;
  }
  v[i] = e;
}

/* Place e at hole i of v[0..n), moving it down below every smaller child. */
static void sift_down(weft__timer_entry *v, size_t n, size_t i, weft__timer_entry e) {
  for (;;) {
    size_t c = 4 * i + 1;
    if (c >= n) break;
    size_t end = n - c > 4 ? c + 4 : n;
    size_t m = c;
    for (size_t k = c + 1; k < end; k++)
      if (before(&v[k], &v[m])) m = k;
    if (!before(&v[m], &e)) break;
    v[i] = v[m];
    i = m;
  }
  v[i] = e;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

void weft__timer_init(weft__timer_heap *h, weft__timer_live_fn live) {
  h->v = NULL;
  h->len = 0;
  h->cap = 0;
  h->compact_at = MIN_COMPACT_AT;
  h->live = live;
}

void weft__timer_fini(weft__timer_heap *h) {
  weft__free(h->v, h->cap * sizeof *h->v);
  weft__timer_init(h, h->live);
}

/* Resize the array to cap entries (cap >= len). On failure nothing changes. */
static int resize(weft__timer_heap *h, size_t cap) {
  if (cap > SIZE_MAX / sizeof *h->v) return -ENOMEM;
  weft__timer_entry *v = weft__realloc(h->v, h->cap * sizeof *h->v, cap * sizeof *h->v);
  if (!v) return -ENOMEM;
  h->v = v;
  h->cap = cap;
  return 0;
}

int weft__timer_insert(weft__timer_heap *h, weft__timer_entry e) {
  if (h->len >= h->compact_at) {
    if (h->live)
      weft__timer_compact(h); /* sets compact_at */
    else
      h->compact_at = max_size(MIN_COMPACT_AT, 2 * h->len);
  }
  if (h->len == h->cap) {
    int rc = resize(h, h->cap ? 2 * h->cap : MIN_CAP);
    if (rc) return rc;
  }
  sift_up(h->v, h->len++, e);
  return 0;
}

size_t weft__timer_pop_expired(weft__timer_heap *h, int64_t now, weft__timer_entry *out, size_t max) {
  size_t n = 0;
  while (n < max && h->len && h->v[0].deadline <= now) {
    out[n++] = h->v[0];
    weft__timer_entry last = h->v[--h->len];
    if (h->len) sift_down(h->v, h->len, 0, last);
  }
  return n;
}

void weft__timer_compact(weft__timer_heap *h) {
  if (h->live) {
    size_t w = 0;
    for (size_t r = 0; r < h->len; r++)
      if (h->live(&h->v[r])) h->v[w++] = h->v[r];
    h->len = w;
  }
  /* Floyd: sift down every internal node, last parent first; O(n) in all
   * (most nodes are near the leaves and sift a level or two). */
  if (h->len > 1)
    for (size_t i = (h->len - 2) / 4 + 1; i-- > 0;) sift_down(h->v, h->len, i, h->v[i]);
  h->compact_at = max_size(MIN_COMPACT_AT, 2 * h->len);
  /* Give memory back when the array is more than twice what the heap will
   * grow to before the next compaction. A failed shrink keeps the old array. */
  if (h->cap > 2 * h->compact_at) (void)resize(h, h->compact_at);
}
