/* weft/sync.h: synchronisation between tasks, safe across workers.
 *
 * These objects are plain structs the caller embeds (like pthread_mutex_t):
 * _init before use, _destroy after the last use, no allocation forced. Their
 * storage is opaque; the library checks at build time that its real layout
 * fits. Waiters are served FIFO, and a waiter cancelled at the moment it is
 * woken passes what it was given (a wakeup, an item) on to the next waiter.
 *
 * This header currently offers the event and the bounded FIFO queue that the
 * core runtime needs; the other primitives follow with the same conventions.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ event */

/* asyncio.Event: a flag that tasks wait on. */
typedef struct weft_event {
  uint64_t opaque[4]; /* 32 bytes, 8-byte aligned */
} weft_event;

/* Initialise (unset). Never fails; returns 0. */
WEFT_API int weft_event_init(weft_event *ev);
/* Destroy. Returns -EBUSY if tasks still wait on it (nothing is freed then). */
WEFT_API int weft_event_destroy(weft_event *ev);
/* Set the flag and wake every waiter. Any thread. Does not suspend. */
WEFT_API void weft_event_set(weft_event *ev);
/* Clear the flag. Any thread. */
WEFT_API void weft_event_clear(weft_event *ev);
/* Whether the flag is set. Any thread. */
WEFT_API bool weft_event_is_set(const weft_event *ev);
/* Suspend until the flag is set (returns 0 at once if it is).
 * Suspends. Errors: -ECANCELED; -EINVAL outside a task. */
WEFT_API int weft_event_wait(weft_event *ev);

/* ------------------------------------------------------------ queue */

/* asyncio.Queue of void * items. */
typedef struct weft_queue {
  uint64_t opaque[24]; /* 192 bytes, 8-byte aligned */
} weft_queue;

/* Initialise a FIFO queue holding at most maxsize items (0 = unbounded).
 * Errors: -ENOMEM. */
WEFT_API int weft_queue_init(weft_queue *q, size_t maxsize);
/* Destroy. Returns -EBUSY if tasks still wait on it (nothing is freed then). */
WEFT_API int weft_queue_destroy(weft_queue *q);
/* Put an item, suspending while the queue is full. Suspends.
 * Errors: -ECANCELED (nothing was put); -EINVAL outside a task. */
WEFT_API int weft_queue_put(weft_queue *q, void *item);
/* Take the oldest item, suspending while the queue is empty. Suspends.
 * Errors: -ECANCELED (no item was taken: a cancelled getter loses nothing). */
WEFT_API int weft_queue_get(weft_queue *q, void **item);
/* Without suspending: -EAGAIN when full (put) or empty (get). Any thread.
 * Errors: -ENOMEM (an unbounded queue could not grow). */
WEFT_API int weft_queue_put_nowait(weft_queue *q, void *item);
WEFT_API int weft_queue_get_nowait(weft_queue *q, void **item);
/* Items in the queue, and the predicates on that count. Any thread. */
WEFT_API size_t weft_queue_qsize(weft_queue *q);
WEFT_API bool weft_queue_empty(weft_queue *q);
WEFT_API bool weft_queue_full(weft_queue *q);

#ifdef __cplusplus
}
#endif

#endif
