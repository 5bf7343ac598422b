/* core/inject.h: the runtime's global queue of runnable tasks.
 *
 * It takes the overflow of the workers' deques (in batches) and the tasks
 * submitted or woken by threads outside the runtime. It is a mutex-protected
 * intrusive FIFO list: it sits off the hot path (a worker touches it on
 * overflow, when its own deque is empty, and every few dozen ticks so it
 * never starves), and a batch costs one lock. The length is also kept in an
 * atomic so that "is it empty?" costs no lock.
 */
#ifndef WEFT_CORE_INJECT_H
#define WEFT_CORE_INJECT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/atomic.h"
#include "core/link.h"

typedef struct weft__inject {
  pthread_mutex_t lock;
  weft__link *head, *tail;   /* under lock */
  _Atomic size_t len;        /* written under lock; read anywhere (a hint) */
  bool closed;               /* under lock: pushes are refused after close */
} weft__inject;

void weft__inject_init(weft__inject *q);
void weft__inject_destroy(weft__inject *q);

/* Any thread: append the chain first..last (n nodes, linked by next, last->next
 * ignored). Returns false if the queue is closed (nothing appended). */
bool weft__inject_push_batch(weft__inject *q, weft__link *first, weft__link *last, size_t n);
bool weft__inject_push(weft__inject *q, weft__link *node);

/* Any thread: take up to max nodes from the head into out[]; returns the count. */
size_t weft__inject_pop_batch(weft__inject *q, weft__link **out, size_t max);
weft__link *weft__inject_pop(weft__inject *q);

/* Any thread: no more pushes; returns what remains, as a chain (NULL-terminated). */
weft__link *weft__inject_close(weft__inject *q);

static inline bool weft__inject_is_empty(weft__inject *q) {
  /* relaxed: a hint; a pusher that races with this check also unparks a worker */
  return weft__load(&q->len, RELAXED) == 0;
}

#endif
