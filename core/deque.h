/* core/deque.h: each worker's run queue, a bounded lock-free work-stealing
 * deque on Chase-Lev's array and indices.
 *
 * Roles: one OWNER (the worker) pushes at the bottom; the owner and any
 * number of THIEVES take from the top (the oldest item) with a CAS. The owner
 * takes FIFO rather than popping the bottom so that a task that yields goes
 * behind the others; the locality a LIFO pop would give comes from the
 * worker's LIFO slot instead (as in Go's runnext and Tokio's lifo_slot).
 * Items are non-NULL pointers.
 */
#ifndef WEFT_CORE_DEQUE_H
#define WEFT_CORE_DEQUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/atomic.h"

#define WEFT_DEQUE_CAP 256 /* a power of two */

typedef struct weft__deque {
  _Alignas(WEFT_CACHELINE) _Atomic uint64_t top; /* thieves and owner CAS it */
  _Alignas(WEFT_CACHELINE) _Atomic uint64_t bottom; /* written by the owner only */
  uint32_t mask;    /* capacity - 1 (capacity may be shrunk by test hooks) */
  _Atomic(void *) slots[WEFT_DEQUE_CAP];
} weft__deque;

/* Initialise with the given capacity (a power of two, 2..WEFT_DEQUE_CAP). */
void weft__deque_init(weft__deque *d, uint32_t capacity);

/* OWNER: push at the bottom. Returns false when full (nothing pushed). */
bool weft__deque_push(weft__deque *d, void *item);

/* OWNER: claim the oldest half of the items (for the overflow into the
 * inject queue): stores up to max of them in out[], oldest first, and returns
 * how many. Thieves may race; each item goes to exactly one taker. */
uint32_t weft__deque_take_half(weft__deque *d, void **out, uint32_t max);

/* OWNER or THIEF: take the oldest item, NULL when empty. */
void *weft__deque_take(weft__deque *d);

/* THIEF (another worker): move about half of victim's items into dst (the
 * thief's own deque, which must be empty, owned by the calling thread) and
 * return one more item to run at once; NULL when there was nothing to steal. */
void *weft__deque_steal_half(weft__deque *victim, weft__deque *dst);

/* Any thread: an estimate of the item count (exact when quiescent). */
uint32_t weft__deque_len(const weft__deque *d);

#endif
