/* core/timer.h: a worker's pending timers, a 4-ary min-heap of values.
 *
 * Owner worker only. Entries are values {deadline, task, seq}: nothing is
 * embedded in the task, so a task may have stale entries in several workers'
 * heaps at once (it timed out on one worker, was woken by something else,
 * migrated, slept again elsewhere). An entry fires by waking its task for
 * that wait sequence number; a stale one finds the sequence moved on and does
 * nothing (see core/task.h). Stale entries are not searched for: cancelling a
 * timed wait is O(1). Insert and pop are O(log n) (log base 4); the heap is
 * compacted (stale entries dropped, O(n)) whenever it has doubled since the
 * last compaction, which keeps the amortised cost O(log n) and the memory
 * proportional to the live timers.
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

/* Returns true when the entry still matters (its task still waits with seq). */
typedef bool (*weft__timer_live_fn)(const weft__timer_entry *e);

typedef struct weft__timer_heap {
  weft__timer_entry *v;
  size_t len, cap;
  size_t compact_at;        /* compact when len reaches this */
  weft__timer_live_fn live; /* staleness test used by compaction */
} weft__timer_heap;

void weft__timer_init(weft__timer_heap *h, weft__timer_live_fn live);
void weft__timer_fini(weft__timer_heap *h);

/* Add an entry. Returns 0 or -ENOMEM (the heap is unchanged then). */
int weft__timer_insert(weft__timer_heap *h, weft__timer_entry e);

/* The earliest deadline, or INT64_MAX when empty. */
static inline int64_t weft__timer_next(const weft__timer_heap *h) {
  return h->len ? h->v[0].deadline : INT64_MAX;
}

/* Remove and return in out[] up to max entries whose deadline <= now, earliest
 * first. Returns how many. */
size_t weft__timer_pop_expired(weft__timer_heap *h, int64_t now, weft__timer_entry *out, size_t max);

/* Drop every entry for which live() is false; O(n). */
void weft__timer_compact(weft__timer_heap *h);

#endif
