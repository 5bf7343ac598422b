/* sync/cond.c: asyncio.Condition on a weft_lock, across workers.
 *
 * State under the spinlock `guard`: the waiters. A waiter registers (under
 * guard) BEFORE it releases the lock, so a notifier, who must hold the lock,
 * either runs before the waiter released it (and cannot have notified yet)
 * or finds the waiter in the list: no notification falls between the
 * release and the wait.
 *
 * notify(n) unlinks up to n waiters under guard and wakes them after
 * unlocking (in batches; new waiters cannot arrive meanwhile, since the
 * notifier holds the lock they need). A woken waiter takes the lock back
 * in a wait that cancellation does not end, so wait returns with the lock
 * held, cancelled or not (asyncio re-acquires in a loop that swallows
 * cancellations, then re-raises). A notified waiter touches the condition
 * no more (only its lock, which the caller keeps): as pthread_cond_destroy
 * allows, the condition may be destroyed and its memory reused once
 * destroy returns 0, before the waiters notify woke have run.
 *
 * CANCELLATION. A waiter woken with CANCEL whose node was unlinked was
 * chosen by a notify at the same moment: it passes the notification to the
 * oldest remaining waiter, so a notification is never lost to a cancelled
 * waiter.
 */
#include <errno.h>
#include <limits.h>

#include <weft/sync.h>

#include "core/atomic.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"
#include "sync/lock.h"

typedef struct cond_impl {
  weft_lock *lock;        /* immutable after init */
  weft__spinlock guard;
  weft__waitlist waiters; /* under guard */
} cond_impl;

_Static_assert(sizeof(cond_impl) <= sizeof(weft_cond), "weft_cond's storage is too small");
_Static_assert(_Alignof(cond_impl) <= _Alignof(weft_cond), "weft_cond's alignment is too small");

static inline cond_impl *impl(weft_cond *c) { return (cond_impl *)(void *)c->opaque; }

int weft_cond_init(weft_cond *cv, weft_lock *lock) {
  if (!cv) return -EINVAL;
  if (!lock) {
    weft__debug_misuse("weft_cond_init without a lock");
    return -EINVAL;
  }
  cond_impl *c = impl(cv);
  c->lock = lock;
  weft__spin_init(&c->guard);
  weft__waitlist_init(&c->waiters);
  return 0;
}

int weft_cond_destroy(weft_cond *cv) {
  cond_impl *c = impl(cv);
  weft__spin_lock(&c->guard);
  size_t n = c->waiters.len;
  weft__spin_unlock(&c->guard);
  if (n) {
    weft__debug_misuse("weft_cond_destroy while tasks wait on it");
    return -EBUSY;
  }
  return 0;
}

int weft_cond_wait(weft_cond *cv) {
  cond_impl *c = impl(cv);
  weft__task *self = weft__task_self();
  if (!self) {
    weft__debug_misuse("weft_cond_wait outside a task");
    return -EINVAL;
  }
  weft_lock *lock = c->lock; /* read now: after a notify, the condition may be gone (below) */
  if (!weft__lock_held_by_self(lock)) {
    weft__debug_misuse("weft_cond_wait without holding the lock");
    return -EPERM;
  }
  weft__spin_lock(&c->guard);
  int64_t seq = weft__wait_prepare(true);
  weft__waiting_on(self, WEFT__WAITING_COND);
  if (seq < 0) { /* a pending cancel: the lock was never released */
    weft__spin_unlock(&c->guard);
    return (int)seq;
  }
  weft__waitlist_push(&c->waiters, self, (uint32_t)seq);
  weft__spin_unlock(&c->guard);
  weft_lock_release(lock); /* held (checked above): cannot fail */
  uint32_t why = weft__wait_commit((uint32_t)seq);
  int rc = 0;
  if (why != WEFT__WAKE_NORMAL) {
    rc = -ECANCELED;
    weft__wakeup wake;
    bool have = false;
    weft__spin_lock(&c->guard);
    if (self->waiter.linked)
      weft__waitlist_remove(&c->waiters, self);
    else /* notified at the moment of the cancel: the notification goes on */
      have = weft__waitlist_pop(&c->waiters, &wake);
    weft__spin_unlock(&c->guard);
    if (have) weft__wakeup_fire(&wake);
  }
  weft__lock_acquire_uncancellable(lock);
  return rc;
}

int weft_cond_wait_for(weft_cond *cv, bool (*pred)(void *arg), void *arg) {
  if (!pred) {
    weft__debug_misuse("weft_cond_wait_for without a predicate");
    return -EINVAL;
  }
  if (!weft__lock_held_by_self(impl(cv)->lock)) {
    weft__debug_misuse("weft_cond_wait_for without holding the lock");
    return -EPERM;
  }
  while (!pred(arg)) {
    int rc = weft_cond_wait(cv);
    if (rc < 0) return rc;
  }
  return 0;
}

int weft_cond_notify(weft_cond *cv, int n) {
  cond_impl *c = impl(cv);
  if (n < 0) {
    weft__debug_misuse("weft_cond_notify with a negative count");
    return -EINVAL;
  }
  if (!weft__lock_held_by_self(c->lock)) {
    weft__debug_misuse("weft_cond_notify without holding the lock");
    return -EPERM;
  }
  int woken = 0;
  while (woken < n) {
    enum { BATCH = 32 };
    weft__wakeup wake[BATCH];
    int k = 0;
    weft__spin_lock(&c->guard);
    while (k < BATCH && woken + k < n && weft__waitlist_pop(&c->waiters, &wake[k])) k++;
    weft__spin_unlock(&c->guard);
    for (int i = 0; i < k; i++) weft__wakeup_fire(&wake[i]);
    woken += k;
    if (k < BATCH) break; /* the list ran out, or n was reached */
  }
  return woken;
}

int weft_cond_notify_all(weft_cond *cv) { return weft_cond_notify(cv, INT_MAX); }
