/* sync/event.c: asyncio.Event across workers.
 *
 * State: `set` and the waiters, under the spinlock. A waiter checks `set`
 * under the lock before registering, and set() changes it under the lock
 * before taking the waiters, so a waiter either sees the flag or is on the
 * list when set() takes the waiters: no waiter misses a set. set() wakes in
 * batches copied out under the lock (see core/waitlist.h) and never holds
 * the lock across a wake. Between batches a clear() and new waiters may
 * come: set() marks the waiters present when it ran (waiter.mark, a walk
 * back from the tail over the unmarked ones) and wakes only marked ones,
 * so a task that waits after a later clear() keeps waiting (the scheme of
 * sync/barrier.c). is_set() reads the flag without the lock.
 */
#include <errno.h>

#include <weft/sync.h>

#include "core/atomic.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"

typedef struct event_impl {
  weft__spinlock lock;
  _Atomic int set;         /* written under lock; read anywhere */
  weft__waitlist waiters;  /* under lock */
} event_impl;

_Static_assert(sizeof(event_impl) <= sizeof(weft_event), "weft_event's storage is too small");
_Static_assert(_Alignof(event_impl) <= _Alignof(weft_event), "weft_event's alignment is too small");

static inline event_impl *impl(weft_event *ev) { return (event_impl *)(void *)ev->opaque; }

int weft_event_init(weft_event *ev) {
  event_impl *e = impl(ev);
  weft__spin_init(&e->lock);
  weft__store(&e->set, 0, RELAXED);
  weft__waitlist_init(&e->waiters);
  return 0;
}

int weft_event_destroy(weft_event *ev) {
  event_impl *e = impl(ev);
  weft__spin_lock(&e->lock);
  size_t n = e->waiters.len;
  weft__spin_unlock(&e->lock);
  if (n) {
    weft__debug_misuse("weft_event_destroy while tasks wait on it");
    return -EBUSY;
  }
  return 0;
}

void weft_event_set(weft_event *ev) {
  event_impl *e = impl(ev);
  weft__spin_lock(&e->lock);
  /* release: pairs with the acquire in weft_event_wait/is_set's fast path */
  weft__store(&e->set, 1, RELEASE);
  /* The waiters now are the unmarked tail of the list (marked ones are
   * being woken by an earlier set): mark them, each once. */
  for (weft__waiter *n = e->waiters.tail; n && !n->mark; n = n->prev) n->mark = 1;
  for (;;) {
    enum { BATCH = 32 };
    weft__wakeup wake[BATCH];
    int n = 0;
    while (n < BATCH && e->waiters.head && e->waiters.head->mark) weft__waitlist_pop(&e->waiters, &wake[n++]);
    weft__spin_unlock(&e->lock);
    for (int i = 0; i < n; i++) weft__wakeup_fire(&wake[i]);
    if (n < BATCH) return;
    weft__spin_lock(&e->lock);
  }
}

void weft_event_clear(weft_event *ev) {
  event_impl *e = impl(ev);
  weft__spin_lock(&e->lock);
  weft__store(&e->set, 0, RELAXED); /* under the lock: waiters read it under the lock too */
  weft__spin_unlock(&e->lock);
}

bool weft_event_is_set(const weft_event *ev) {
  const event_impl *e = (const event_impl *)(const void *)ev->opaque;
  return weft__load((_Atomic int *)&e->set, ACQUIRE) != 0; /* acquire: pairs with set()'s release */
}

int weft_event_wait(weft_event *ev) {
  event_impl *e = impl(ev);
  weft__task *self = weft__task_self();
  if (!self) {
    weft__debug_misuse("weft_event_wait outside a task");
    return -EINVAL;
  }
  /* acquire: pairs with the release in set: what the setter wrote before set() is visible */
  if (weft__load(&e->set, ACQUIRE)) return 0;
  weft__spin_lock(&e->lock);
  if (weft__load(&e->set, RELAXED)) {
    weft__spin_unlock(&e->lock);
    return 0;
  }
  int64_t seq = weft__wait_prepare(true);
  if (seq < 0) {
    weft__spin_unlock(&e->lock);
    return (int)seq;
  }
  weft__waiting_on(self, WEFT__WAITING_EVENT);
  weft__waitlist_push(&e->waiters, self, (uint32_t)seq);
  self->waiter.mark = 0;
  weft__spin_unlock(&e->lock);
  if (weft__wait_commit((uint32_t)seq) == WEFT__WAKE_NORMAL) return 0;
  weft__spin_lock(&e->lock);
  weft__waitlist_remove(&e->waiters, self);
  weft__spin_unlock(&e->lock);
  return -ECANCELED;
}
