/* core/deque.h: each worker's run queue, a bounded lock-free work-stealing
 * deque on Chase-Lev's array and indices.
 *
 * Roles: one OWNER (the worker) pushes at the bottom; the owner and any
 * number of THIEVES take from the top (the oldest item) with a CAS. The owner
 * takes FIFO rather than popping the bottom so that a task that yields goes
 * behind the others; the locality a LIFO pop would give comes from the
 * worker's LIFO slot instead (as in Go's runnext and Tokio's lifo_slot).
 * Items are non-NULL pointers.
 *
 * Invariants (the protocol and the memory-order argument are in deque.c):
 *   - top and bottom only grow (uint64: they never wrap in practice, so a
 *     CAS on top has no ABA);
 *   - top <= bottom and bottom - top <= capacity, as seen by the owner;
 *   - the live items are the indices [top, bottom), index i in slots[i & mask];
 *   - an item is handed to exactly one taker: the one whose CAS moves top
 *     past its index.
 *
 * This header is C only (_Atomic, _Alignas); C++ callers (the benchmarks)
 * declare the prototypes themselves and size their storage with
 * weft__deque_sizeof().
 */
#ifndef WEFT_CORE_DEQUE_H
#define WEFT_CORE_DEQUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/atomic.h"

#define WEFT_DEQUE_CAP 4096 /* a power of two. Go and Tokio use 256; yield_many
                            * (1,000 tasks yielding) ran 2.6x faster on 2 workers
                            * with 4,096, because 256 sent every round through
                            * the inject queue's lock. 32 KiB per worker. */

/* Push re-reads top (exact count) when its own copy says the deque holds at
 * most this many: small counts decide whether to wake a worker. */
#define WEFT_DEQUE_EXACT_LEN 16

typedef struct weft__deque {
  /* The next index to take. Owner and thieves: read anywhere, changed only by
   * a CAS (never a plain store after init), so every change is in the release
   * sequence of the CAS before it. */
  _Alignas(WEFT_CACHELINE) _Atomic uint64_t top;
  /* One past the newest item. Written by the owner only (release store);
   * read by the owner relaxed and by everyone else with acquire. */
  _Alignas(WEFT_CACHELINE) _Atomic uint64_t bottom;
  /* capacity - 1 (capacity may be shrunk by tests); written at init only. */
  uint32_t mask;
  /* The owner's copy of a top value it has observed (an acquire load, or
   * its own CAS): owner only, plain. top only grows, so the copy is a lower
   * bound, and "b - top_seen < capacity" proves the slot of index b free
   * (protocol (b) needs only that the owner observed such a top before its
   * store, not that it be the latest). Push then skips loading top, whose
   * line every thief's CAS takes away: with one spawner and fifteen thieves
   * that load was most of the spawner's push. */
  uint64_t top_seen;
  /* Written by the owner only (relaxed), read by any taker (relaxed) before
   * its CAS on top; a read that races with an overwrite is always followed
   * by a failing CAS (deque.c). */
  _Atomic(void *) slots[WEFT_DEQUE_CAP];
} weft__deque;

/* Initialise with the given capacity (a power of two, 2..WEFT_DEQUE_CAP).
 * Not thread-safe: publish the deque to other threads afterwards. */
void weft__deque_init(weft__deque *d, uint32_t capacity);

/* OWNER: push at the bottom. Returns 0 when full (nothing pushed; "full"
 * may be seen a moment early while a concurrent take is finishing), else
 * the item count after the push as far as the owner knows: exact when it is
 * at most WEFT_DEQUE_EXACT_LEN, an upper bound above that. */
uint32_t weft__deque_push(weft__deque *d, void *item);

/* OWNER: push n items (items[0] oldest) with one publication. Returns 0
 * when they do not all fit (nothing pushed), else the count after the push
 * (exact: top is re-read). */
uint32_t weft__deque_push_batch(weft__deque *d, void *const *items, uint32_t n);

/* OWNER: an upper bound of the item count, read from the owner's own copies
 * (no shared line touched): exact as of the last push or take_half that
 * re-read top. */
static inline uint32_t weft__deque_owner_len(const weft__deque *d) {
  /* relaxed: the owner's own store */
  uint64_t c = weft__load(&d->bottom, RELAXED) - d->top_seen;
  return c > d->mask ? d->mask + 1 : (uint32_t)c;
}

/* OWNER: claim the oldest half of the items (for the overflow into the
 * inject queue): ceil(len/2) of them, at most max, stored in out[] oldest
 * first; returns how many (0 when empty or max == 0). Thieves may race; each
 * item goes to exactly one taker. */
uint32_t weft__deque_take_half(weft__deque *d, void **out, uint32_t max);

/* OWNER or THIEF: take the oldest item, NULL when empty. */
void *weft__deque_take(weft__deque *d);

/* THIEF (another worker): claim the oldest ceil(len/2) of victim's items
 * (at most dst's free room + 1) with one CAS, put all but the newest of them
 * into dst, oldest first, and return the newest, to run at once; NULL when
 * there was nothing to steal. dst is the caller's own deque (the caller is
 * its OWNER) and should be empty; victim != dst. */
void *weft__deque_steal_half(weft__deque *victim, weft__deque *dst);

/* Any thread: an estimate of the item count, in 0..capacity (exact when
 * quiescent; for the owner, an upper bound: takers only lower it). */
uint32_t weft__deque_len(const weft__deque *d);

/* Any thread: the capacity given to init. */
static inline uint32_t weft__deque_capacity(const weft__deque *d) { return d->mask + 1; }

/* sizeof(weft__deque), for C++ callers that cannot include this header. */
size_t weft__deque_sizeof(void);

#endif
