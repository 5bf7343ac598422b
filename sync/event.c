/* sync/event.c: asyncio.Event across workers.
 *
 * State: `set` and the waiters, under the spinlock. A waiter checks `set`
 * under the lock before registering, and set() changes it under the lock
 * before taking the waiters, so a waiter either sees the flag or is on the
 * list when set() takes the waiters: no waiter misses a set. set() wakes in
 * batches copied out under the lock (see core/waitlist.h) and never holds
 * the lock across a wake. Between batches a clear() and new waiters may
 * come, and they must keep waiting: set() records the list's tail as
 * `wake_last`, the newest waiter it owes a wake, and wakes from the head up
 * to it. Waiters are appended at the tail, so those up to wake_last are
 * exactly the ones that waited before the set. A later set() moves
 * wake_last to the newer tail (it owes those too); a waiter that leaves
 * (cancelled) while it is wake_last hands the mark to the waiter before it
 * (none: everything owed was woken). Any set() in progress wakes until it
 * takes wake_last itself or finds it NULL. (Before: set() marked each owed
 * waiter in a walk back from the tail, a pointer chase through every
 * waiter's cold task record before the first wake: with 100,000 waiters,
 * a third of the wake-all time.) is_set() reads the flag without the lock.
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
  weft__waiter *wake_last; /* under lock: the newest waiter a set() owes a wake, or NULL */
} event_impl;

_Static_assert(sizeof(event_impl) <= sizeof(weft_event), "weft_event's storage is too small");
_Static_assert(_Alignof(event_impl) <= _Alignof(weft_event), "weft_event's alignment is too small");

static inline event_impl *impl(weft_event *ev) { return (event_impl *)(void *)ev->opaque; }

int weft_event_init(weft_event *ev) {
  if (!ev) return -EINVAL;
  event_impl *e = impl(ev);
  weft__spin_init(&e->lock);
  weft__store(&e->set, 0, RELAXED);
  weft__waitlist_init(&e->waiters);
  e->wake_last = NULL;
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
  if (e->waiters.tail) e->wake_last = e->waiters.tail; /* owed: everyone waiting now */
  for (;;) {
    enum { BATCH = 32 };
    weft__wakeup wake[BATCH];
    int n = 0;
    while (n < BATCH && e->wake_last) {
      bool last = e->waiters.head == e->wake_last;
      weft__waitlist_pop(&e->waiters, &wake[n++]);
      if (last) e->wake_last = NULL;
    }
    bool more = e->wake_last != NULL;
    weft__spin_unlock(&e->lock);
    for (int i = 0; i < n; i++) weft__wakeup_fire(&wake[i]);
    if (!more) return;
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
  weft__spin_unlock(&e->lock);
  if (weft__wait_commit((uint32_t)seq) == WEFT__WAKE_NORMAL) return 0;
  weft__spin_lock(&e->lock);
  if (self->waiter.linked && e->wake_last == &self->waiter) e->wake_last = self->waiter.prev;
  weft__waitlist_remove(&e->waiters, self);
  weft__spin_unlock(&e->lock);
  return -ECANCELED;
}
