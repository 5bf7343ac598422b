/* core/inbox.h: a worker's inbox, a lock-free multi-producer single-consumer
 * stack of nodes that other threads send to that worker in particular (a
 * pinned task woken elsewhere; the test mode that moves every task to another
 * worker). Producers push with a CAS; the owner takes everything with one
 * exchange and gets the nodes back in push order.
 */
#ifndef WEFT_CORE_INBOX_H
#define WEFT_CORE_INBOX_H

#include <stdbool.h>
#include <stddef.h>

#include "core/atomic.h"
#include "core/link.h"

typedef struct weft__inbox {
  _Alignas(WEFT_CACHELINE) _Atomic(weft__link *) head;
} weft__inbox;

void weft__inbox_init(weft__inbox *b);

/* Any thread. Returns true when the inbox was empty before this push. */
bool weft__inbox_push(weft__inbox *b, weft__link *node);

/* OWNER: take every node, oldest first, as a NULL-terminated chain. */
weft__link *weft__inbox_take_all(weft__inbox *b);

static inline bool weft__inbox_is_empty(weft__inbox *b) {
  /* relaxed: a hint; the take that follows uses acquire */
  return weft__load(&b->head, RELAXED) == NULL;
}

#endif
