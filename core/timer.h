/* core/timer.h: a worker's pending timers, a 4-ary min-heap of values.
 *
 * Owner worker only: no locks, no atomics. Entries are values
 * {deadline, task, seq, kind}: nothing is embedded in the task, so a task may
 * have stale entries in several workers' heaps at once (it timed out on one
 * worker, was woken by something else, migrated, slept again elsewhere). An
 * entry fires by waking its task for that wait sequence number; a stale one
 * finds the sequence moved on and does nothing (see core/task.h). Stale
 * entries are not searched for: cancelling a timed wait is O(1).
 *
 * Invariants (checked by the tests, not at run time):
 *  - v[0..len) is a 4-ary heap: no entry orders before its parent, under the
 *    order "deadline, then seq, then kind, then task address". seq compares
 *    in serial order (a before b when (int32_t)(a - b) < 0), so that a
 *    counter that wrapped still orders FIFO (call_soon: every deadline 0);
 *    that is a total order over any entries whose seqs lie within 2^31 of
 *    each other, and the deadline, compared first, keeps the heap's
 *    earliest entry first whatever the seqs. The tie-breaks make the order
 *    of equal deadlines deterministic: it depends only on the entries,
 *    never on the history of inserts and pops.
 *  - compact_at >= 1024 and is twice the length left by the last compaction
 *    (or 1024): insert compacts when len reaches it, so the heap is compacted
 *    whenever it has doubled since the last compaction. That keeps the
 *    amortised cost of compaction O(1) per insert and the memory
 *    proportional to the live timers (at most ~2x plus the stale entries of
 *    one doubling).
 *
 * Costs: insert and pop are O(log4 n) with at most one cache line of
 * children (4 x 24 bytes) read per level; compaction is O(n) (Floyd's
 * bottom-up heap construction). Why 4-ary: half the depth of a binary heap
 * for the same number of compares per level that fit one or two lines; pops,
 * which sift down, dominate a timer heap.
 *
 * Rejected: a timer wheel (O(1), but it needs a slot per tick and the
 * deadlines are arbitrary nanoseconds; the heap's log n is ~10 levels for a
 * million timers); intrusive heap nodes in the task (O(log n) removal, but a
 * task would then belong to one worker's heap at a time, which the migration
 * rules above do not give us).
 */
#ifndef WEFT_CORE_TIMER_H
#define WEFT_CORE_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weft__timer_entry {
  int64_t deadline; /* CLOCK_MONOTONIC ns */
  void *task;       /* struct weft__task * (records are type-stable) */
  uint32_t seq;     /* the task's wait sequence number when armed */
  uint32_t kind;    /* what to do on expiry (the caller's code) */
} weft__timer_entry;

/* Returns true when the entry still matters (its task still waits with seq).
 * Called only from insert (automatic compaction) and compact, on the owner. */
typedef bool (*weft__timer_live_fn)(const weft__timer_entry *e);

typedef struct weft__timer_heap {
  weft__timer_entry *v;     /* weft__alloc'd array of cap entries; NULL while cap == 0 */
  size_t len, cap;
  size_t compact_at;        /* compact when len reaches this (>= 1024) */
  weft__timer_live_fn live; /* staleness test used by compaction; NULL: never compact */
} weft__timer_heap;

/* Make an empty heap (allocates nothing). live may be NULL. */
void weft__timer_init(weft__timer_heap *h, weft__timer_live_fn live);
/* Free the array; the heap is empty and reusable afterwards. */
void weft__timer_fini(weft__timer_heap *h);

/* Add an entry. May first compact (when len has reached compact_at), which
 * drops only entries that no longer matter. Returns 0, or -ENOMEM when the
 * array could not grow: the entry is not added and the heap keeps every
 * entry it had (bar those a compaction dropped). */
int weft__timer_insert(weft__timer_heap *h, weft__timer_entry e);

/* The earliest deadline, or INT64_MAX when empty. */
static inline int64_t weft__timer_next(const weft__timer_heap *h) {
  return h->len ? h->v[0].deadline : INT64_MAX;
}

/* Remove and return in out[] up to max entries whose deadline <= now, earliest
 * first (ties in the heap's total order). Returns how many. Stale entries
 * are returned too: the caller's wakeup ignores them. */
size_t weft__timer_pop_expired(weft__timer_heap *h, int64_t now, weft__timer_entry *out, size_t max);

/* Drop every entry for which live() is false and rebuild the heap; O(n).
 * Sets compact_at = max(1024, 2 * len). May shrink the array. */
void weft__timer_compact(weft__timer_heap *h);

#endif
