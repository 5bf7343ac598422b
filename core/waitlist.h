/* core/waitlist.h: the FIFO list of suspended tasks that every primitive
 * (event, queue, lock, semaphore, ...) is built on.
 *
 * A waiter is a node embedded in the waiting task's record (t->waiter): a
 * task waits in at most one list at a time, and records are dense and
 * type-stable, so a waker walking a list touches a few record pages
 * instead of one stack page per waiter (measured on this project's VM: a
 * list of 100,000 nodes on the waiters' stacks cost 5 us per node to walk,
 * against 0.1 us in the records). The primitive's spinlock guards the list
 * and the primitive's own state. The pattern, for a waiter:
 *     lock; if (ready) {take; unlock; return}
 *     seq = weft__wait_prepare(cancellable); (on -ECANCELED: unlock, return)
 *     weft__waitlist_push(&wl, self, seq); unlock;
 *     why = weft__wait_commit(seq);
 *     lock; chosen = !self->waiter.linked; weft__waitlist_remove(&wl, self); ... unlock;
 * and for a waker:
 *     lock; n = weft__waitlist_pop(&wl, &wake) (copies {task, seq}, unlinks);
 *     unlock; weft__waitlist_wake(&wake);
 * A waker never touches a node after unlocking: the node's task may have
 * returned (cancelled) and be waiting somewhere else already. A waiter that wakes
 * with `linked` false was chosen by a waker; if it was cancelled at the
 * same moment (its wake reason is CANCEL), it passes what it was chosen for
 * to the next waiter, so nothing is lost to a cancelled waiter.
 */
#ifndef WEFT_CORE_WAITLIST_H
#define WEFT_CORE_WAITLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/task.h"

typedef struct weft__waitlist {
  weft__waiter *head, *tail;
  size_t len;
} weft__waitlist;

/* A wakeup copied out of a node under the lock. */
typedef struct weft__wakeup {
  weft__task *task;
  uint32_t seq;
} weft__wakeup;

static inline void weft__waitlist_init(weft__waitlist *wl) {
  wl->head = wl->tail = NULL;
  wl->len = 0;
}

/* Caller holds the primitive's lock in all of these. */
static inline void weft__waitlist_push(weft__waitlist *wl, weft__task *t, uint32_t seq) {
  weft__waiter *n = &t->waiter;
  n->task = t;
  n->seq = seq;
  n->linked = true;
  n->next = NULL;
  n->prev = wl->tail;
  if (wl->tail)
    wl->tail->next = n;
  else
    wl->head = n;
  wl->tail = n;
  wl->len++;
}

/* Link t at the head: a waiter that was woken to retry and lost keeps its
 * place ahead of those that queued after it (sync/lock.c). */
static inline void weft__waitlist_push_front(weft__waitlist *wl, weft__task *t, uint32_t seq) {
  weft__waiter *n = &t->waiter;
  n->task = t;
  n->seq = seq;
  n->linked = true;
  n->prev = NULL;
  n->next = wl->head;
  if (wl->head)
    wl->head->prev = n;
  else
    wl->tail = n;
  wl->head = n;
  wl->len++;
}

static inline void weft__waitlist_remove(weft__waitlist *wl, weft__task *t) {
  weft__waiter *n = &t->waiter;
  if (!n->linked) return;
  if (n->prev)
    n->prev->next = n->next;
  else
    wl->head = n->next;
  if (n->next)
    n->next->prev = n->prev;
  else
    wl->tail = n->prev;
  n->linked = false;
  wl->len--;
}

/* Unlink the oldest waiter and copy its wakeup; false when empty. */
static inline bool weft__waitlist_pop(weft__waitlist *wl, weft__wakeup *out) {
  weft__waiter *n = wl->head;
  if (!n) return false;
  weft__waitlist_remove(wl, n->task);
  out->task = n->task;
  out->seq = n->seq;
  return true;
}

/* After unlocking. Returns whether the wake ended the wait. */
static inline bool weft__wakeup_fire(const weft__wakeup *w) {
  return weft__wake(w->task, w->seq, WEFT__WAKE_NORMAL);
}

#endif
