/* sync/sem.c: asyncio.Semaphore and BoundedSemaphore across workers.
 *
 * THE STATE WORD `state` = permits << 1 | WAITERS:
 *   bits 63..1  the free permits
 *   bit  0      WAITERS  the wait list is not empty
 *
 * Fast paths (one CAS, no spinlock, no system call): acquire takes a permit
 * when there is one and WAITERS is clear; release adds one when WAITERS is
 * clear. INVARIANTS, under the spinlock `guard`: WAITERS is set exactly when
 * the list is not empty, only changed under guard, and set only when no
 * permit is free; so while WAITERS is set, permits == 0 and nobody changes
 * the word without guard (both fast paths expect WAITERS clear).
 *
 * NO BARGING. A release that finds WAITERS hands its permit directly to the
 * oldest waiter (the count stays 0), then wakes it: a newcomer finds no
 * permit and WAITERS set, and queues behind the others.
 *
 * CANCELLATION. A release skips a waiter whose wait has already ended
 * (cancelled, and not run since: it is still in the list), as asyncio's
 * _wake_up_next skips a cancelled future: it unlinks it without a mark and
 * gives the permit to the next one, or to the count. So the value, locked()
 * and a bounded semaphore's bound are right at once; before, the permit
 * travelled to the cancelled waiter, the value read 0 until it ran, a
 * release past the bound meanwhile passed the check, and the permit given
 * back then took the value above the bound. A release that chose a waiter
 * marks its node (mark = 1, under guard). A waiter woken with CANCEL whose
 * node was unlinked and marked was chosen at the same moment and holds a
 * permit: it releases it again (to the next waiter, or to the count)
 * before returning -ECANCELED, so no permit is lost to a cancelled waiter;
 * unlinked and unmarked, it was skipped and holds nothing.
 *
 * A bounded semaphore refuses a release that would take the count above
 * its initial value (-EOVERFLOW, asyncio's ValueError); with waiters the
 * count is 0, below any bound but 0.
 */
#include <errno.h>
#include <stdint.h>

#include <weft/sync.h>

#include "core/atomic.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"
#include "sync/current.h"

enum { WAITERS = 1 };
#define ONE ((uint64_t)2)
#define MAX_PERMITS ((int64_t)1 << 61)

typedef struct sem_impl {
  _Atomic uint64_t state;  /* permits << 1 | WAITERS (above) */
  int64_t bound;           /* immutable: the most permits, MAX_PERMITS if unbounded */
  weft__spinlock guard;    /* guards `waiters` and every change of WAITERS */
  weft__waitlist waiters;  /* under guard */
} sem_impl;

_Static_assert(sizeof(sem_impl) <= sizeof(weft_sem), "weft_sem's storage is too small");
_Static_assert(_Alignof(sem_impl) <= _Alignof(weft_sem), "weft_sem's alignment is too small");

static inline sem_impl *impl(weft_sem *s) { return (sem_impl *)(void *)s->opaque; }

static int init(weft_sem *sm, int64_t value, int64_t bound) {
  if (!sm) return -EINVAL;
  if (value < 0 || value > MAX_PERMITS) {
    weft__debug_misuse("weft_sem_init with a negative (or too large) value");
    return -EINVAL;
  }
  sem_impl *s = impl(sm);
  weft__store(&s->state, (uint64_t)value * ONE, RELAXED);
  s->bound = bound;
  weft__spin_init(&s->guard);
  weft__waitlist_init(&s->waiters);
  return 0;
}

int weft_sem_init(weft_sem *s, int64_t value) { return init(s, value, MAX_PERMITS); }
int weft_sem_init_bounded(weft_sem *s, int64_t value) { return init(s, value, value); }

int weft_sem_destroy(weft_sem *sm) {
  sem_impl *s = impl(sm);
  weft__spin_lock(&s->guard);
  size_t n = s->waiters.len;
  weft__spin_unlock(&s->guard);
  if (n) {
    weft__debug_misuse("weft_sem_destroy while tasks wait on it");
    return -EBUSY;
  }
  return 0;
}

int64_t weft_sem_value(weft_sem *sm) {
  return (int64_t)(weft__load(&impl(sm)->state, RELAXED) / ONE); /* relaxed: a snapshot */
}

bool weft_sem_locked(weft_sem *sm) {
  uint64_t s = weft__load(&impl(sm)->state, RELAXED); /* relaxed: a snapshot */
  return s < ONE || (s & WAITERS);
}

int weft_sem_try_acquire(weft_sem *sm) {
  sem_impl *s = impl(sm);
  uint64_t v = weft__load(&s->state, RELAXED);
  while (v >= ONE && !(v & WAITERS)) {
    /* acquire: pairs with the release CAS in weft_sem_release (what the
     * releaser did before giving the permit back is visible) */
    if (weft__cas_weak(&s->state, &v, v - ONE, ACQUIRE, RELAXED)) return 0;
  }
  return -EAGAIN;
}

/* Caller holds guard and a permit to give back, and WAITERS is set or the
 * list is empty: hand the permit to the oldest waiter, or count it.
 * Unlocks guard. */
static void give_and_unlock(sem_impl *s) {
  weft__wakeup wake;
  bool have;
  /* Skip the waiters whose wait has ended (CANCELLATION, above). A false
   * pending is final: the waiter pushed its seq under guard, which we hold. */
  while ((have = weft__waitlist_pop(&s->waiters, &wake)) && !weft__wait_pending(wake.task, wake.seq)) {
  }
  uint64_t v = weft__load(&s->state, RELAXED); /* stable while WAITERS is set */
  if (have) {
    wake.task->waiter.mark = 1; /* it holds the permit; read by it under guard if cancelled */
    if (s->waiters.len == 0) weft__store(&s->state, v & ~(uint64_t)WAITERS, RELAXED);
  } else if (v & WAITERS) {
    /* only skipped waiters were left: count the permit and clear WAITERS
     * in one store (the word is stable while WAITERS is set); release: as
     * in weft_sem_release */
    weft__store(&s->state, (v & ~(uint64_t)WAITERS) + ONE, RELEASE);
  } else {
    /* WAITERS clear: fast paths may race; release: as in weft_sem_release */
    weft__fetch_add(&s->state, ONE, RELEASE);
  }
  weft__spin_unlock(&s->guard); /* orders the hand-over for the woken waiter */
  if (have) weft__wakeup_fire(&wake);
}

int weft_sem_acquire(weft_sem *sm) {
  sem_impl *s = impl(sm);
  weft__task *self = weft__sync_current();
  if (weft__unlikely(!self)) {
    weft__debug_misuse("weft_sem_acquire outside a task (use weft_sem_try_acquire)");
    return -EINVAL;
  }
  if (weft__likely(weft_sem_try_acquire(sm) == 0)) return 0;
  weft__spin_lock(&s->guard);
  int64_t seq = weft__wait_prepare(true);
  weft__waiting_on(self, WEFT__WAITING_SEM);
  if (seq < 0) {
    weft__spin_unlock(&s->guard);
    return (int)seq;
  }
  uint64_t v = weft__load(&s->state, RELAXED);
  for (;;) {
    if (v >= ONE && !(v & WAITERS)) { /* a permit came back meanwhile */
      /* acquire: as in try_acquire */
      if (weft__cas(&s->state, &v, v - ONE, ACQUIRE, RELAXED)) {
        weft__wait_abandon();
        weft__spin_unlock(&s->guard);
        return 0;
      }
      continue;
    }
    if (v & WAITERS) break;
    /* relaxed: releases on the fast path may race; they fail from now on */
    if (weft__cas(&s->state, &v, v | WAITERS, RELAXED, RELAXED)) break;
  }
  weft__waitlist_push(&s->waiters, self, (uint32_t)seq);
  self->waiter.mark = 0; /* set by the release that chooses us */
  weft__spin_unlock(&s->guard);
  if (weft__wait_commit((uint32_t)seq) == WEFT__WAKE_NORMAL) return 0; /* a permit was handed over */
  weft__spin_lock(&s->guard);
  if (self->waiter.linked) {
    weft__waitlist_remove(&s->waiters, self);
    if (s->waiters.len == 0) {
      uint64_t cur = weft__load(&s->state, RELAXED); /* stable: WAITERS is set */
      weft__store(&s->state, cur & ~(uint64_t)WAITERS, RELAXED);
    }
    weft__spin_unlock(&s->guard);
    return -ECANCELED;
  }
  if (!self->waiter.mark) { /* skipped by a release: we hold nothing */
    weft__spin_unlock(&s->guard);
    return -ECANCELED;
  }
  give_and_unlock(s); /* chosen as the cancel arrived: the permit goes on */
  return -ECANCELED;
}

int weft_sem_release(weft_sem *sm) {
  sem_impl *s = impl(sm);
  uint64_t v = weft__load(&s->state, RELAXED);
  for (;;) {
    if ((int64_t)(v / ONE) >= s->bound) {
      weft__debug_misuse("weft_sem_release past the semaphore's bound");
      return -EOVERFLOW;
    }
    if (v & WAITERS) break;
    /* release: pairs with the acquire CAS of the task that takes this
     * permit (what was done under the permit is visible to it) */
    if (weft__cas_weak(&s->state, &v, v + ONE, RELEASE, RELAXED)) return 0;
  }
  weft__spin_lock(&s->guard);
  v = weft__load(&s->state, RELAXED);
  if (!(v & WAITERS)) { /* the waiters left (cancelled) meanwhile: count the permit */
    weft__spin_unlock(&s->guard);
    return weft_sem_release(sm);
  }
  give_and_unlock(s);
  return 0;
}
