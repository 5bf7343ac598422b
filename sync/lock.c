/* sync/lock.c: asyncio.Lock across workers: FIFO hand-off, no barging.
 *
 * THE STATE WORD `state` holds the owner and one flag:
 *
 *   bits 63..2  the owner: a task record, or (bit 1 set) the address of a
 *               thread-local token of a thread outside any task; 0 = free
 *   bit  1      FOREIGN  the owner is a thread, not a task
 *   bit  0      WAITERS  the wait list is not empty
 *
 * Fast paths (one atomic operation each, no spinlock, no system call):
 * acquire is CAS 0 -> self, release is CAS self -> 0. Both fail whenever
 * WAITERS is set, so that a release with waiters and every acquire while
 * tasks wait go through the slow paths, under the spinlock `guard`.
 *
 * INVARIANTS, under guard: WAITERS is set exactly when the list is not
 * empty, and it is set or cleared only under guard. While WAITERS is set
 * nobody changes `state` without guard (both fast-path CASes expect WAITERS
 * clear), so the slow paths may store it plainly.
 *
 * NO BARGING. A release that finds WAITERS hands the lock over inside the
 * state word: `state` becomes the oldest waiter (plus WAITERS if more
 * wait), then that waiter is woken. Between the two, the lock already
 * belongs to the woken task: a newcomer finds it held, and finds WAITERS
 * set if others wait, and queues behind them (asyncio's FIFO guarantee).
 *
 * CANCELLATION. A waiter woken with CANCEL whose node is still linked was
 * not chosen: it unlinks itself (clearing WAITERS if it was the last) and
 * returns -ECANCELED. One whose node was unlinked was chosen by a release at
 * the same moment and owns the lock: it passes it on (a release) before
 * returning -ECANCELED, so a cancelled waiter never takes the lock with it.
 *
 * SPINNING. A newcomer that finds the lock held by a running task and no
 * waiters spins for a short while (SPIN_ROUNDS) before queueing: a critical
 * section is usually a few nanoseconds, and queueing costs two task
 * switches and, once anyone waits, a hand-off per acquisition (a convoy).
 * Spinning never takes the lock from a waiter: it stops as soon as WAITERS
 * is set, and the CAS it retries expects a free lock with no waiters. It is
 * skipped when the owner is not running (it was just handed the lock and
 * has not run yet, or it waits for something else while holding it).
 *
 * Rejected: a plain-store release with a separate waiter count (a store
 * then a load of another word needs a full fence on both sides, which costs
 * what the CAS costs); waking the first waiter and letting it compete
 * (Go's normal mode: fast, but it is barging, which DESIGN.md rules out).
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
#include "sync/lock.h"

enum { WAITERS = 1u, FOREIGN = 2u, FLAGS = 3u };
enum { SPIN_ROUNDS = 64 };

typedef struct lock_impl {
  _Atomic uintptr_t state; /* owner | FOREIGN | WAITERS (above) */
  weft__spinlock guard;    /* guards `waiters` and every change of WAITERS */
  weft__waitlist waiters;  /* under guard */
} lock_impl;

_Static_assert(sizeof(lock_impl) <= sizeof(weft_lock), "weft_lock's storage is too small");
_Static_assert(_Alignof(lock_impl) <= _Alignof(weft_lock), "weft_lock's alignment is too small");
_Static_assert(_Alignof(weft__task) >= 4, "task records must leave the state word's two flag bits free");

static inline lock_impl *impl(weft_lock *l) { return (lock_impl *)(void *)l->opaque; }

/* The token of a thread outside any task (its address is the identity). */
static __thread uint64_t thread_token;

/* Who the caller is: its task, or its thread's token. */
static inline uintptr_t self_token(void) {
  weft__task *t = weft__sync_current();
  return t ? (uintptr_t)t : ((uintptr_t)&thread_token | FOREIGN);
}

int weft_lock_init(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__store(&l->state, 0, RELAXED);
  weft__spin_init(&l->guard);
  weft__waitlist_init(&l->waiters);
  return 0;
}

int weft_lock_destroy(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__spin_lock(&l->guard);
  bool busy = weft__load(&l->state, RELAXED) != 0; /* held, or waited for (WAITERS) */
  weft__spin_unlock(&l->guard);
  if (busy) {
    weft__debug_misuse("weft_lock_destroy on a lock that is held or waited for");
    return -EBUSY;
  }
  return 0;
}

bool weft_lock_locked(weft_lock *lk) {
  return weft__load(&impl(lk)->state, RELAXED) != 0; /* relaxed: a snapshot */
}

bool weft__lock_held_by_self(weft_lock *lk) {
  /* relaxed: only the caller itself makes the owner field equal to itself */
  return (weft__load(&impl(lk)->state, RELAXED) & ~(uintptr_t)WAITERS) == self_token();
}

/* Caller holds guard and owns the lock; WAITERS is set or the list is
 * empty. Hand the lock to the oldest waiter, or free it. Unlocks guard. */
static void pass_on_and_unlock(lock_impl *l) {
  weft__wakeup wake;
  bool have = weft__waitlist_pop(&l->waiters, &wake);
  uintptr_t next = have ? ((uintptr_t)wake.task | (l->waiters.len ? WAITERS : 0)) : 0;
  /* release: pairs with the acquire CAS of a newcomer's fast path (when the
   * lock is freed): it sees this owner's critical section. The new owner
   * (when handed over) is ordered by guard's unlock and the wake's CAS. */
  weft__store(&l->state, next, RELEASE);
  weft__spin_unlock(&l->guard);
  if (have) weft__wakeup_fire(&wake);
}

int weft_lock_try_acquire(weft_lock *lk) {
  lock_impl *l = impl(lk);
  uintptr_t expect = 0;
  /* acquire: pairs with the release CAS/store that freed the lock */
  return weft__cas(&l->state, &expect, self_token(), ACQUIRE, RELAXED) ? 0 : -EAGAIN;
}

/* Whether a newcomer should keep spinning on state s. */
static inline bool worth_spinning(uintptr_t s) {
  if (s & WAITERS) return false; /* queue behind them: no barging */
  if (s & FOREIGN) return true;  /* a thread: it runs (or the OS will run it) */
  weft__task *owner = (weft__task *)(s & ~(uintptr_t)FLAGS);
  /* relaxed: a hint; records are type-stable, so a stale owner is harmless */
  return WEFT__WS_STATE(weft__load(&owner->ws, RELAXED)) == WEFT__TS_RUNNING;
}

/* The slow path of acquire: spin a little, then queue. */
static int acquire_slow(lock_impl *l, weft__task *self, bool cancellable) {
  for (int i = 0; i < SPIN_ROUNDS; i++) {
    uintptr_t s = weft__load(&l->state, RELAXED);
    if (s == 0) {
      /* acquire: pairs with the release that freed it */
      if (weft__cas(&l->state, &s, (uintptr_t)self, ACQUIRE, RELAXED)) return 0;
    }
    if (s != 0 && !worth_spinning(s)) break;
    weft__cpu_relax();
  }
  weft__spin_lock(&l->guard);
  int64_t seq = weft__wait_prepare(cancellable);
  weft__waiting_on(self, WEFT__WAITING_LOCK);
  if (seq < 0) {
    weft__spin_unlock(&l->guard);
    return (int)seq;
  }
  uintptr_t s = weft__load(&l->state, RELAXED);
  for (;;) {
    if (s == 0) { /* freed meanwhile (no waiters: WAITERS is only set under guard) */
      /* acquire: pairs with the release that freed it */
      if (weft__cas(&l->state, &s, (uintptr_t)self, ACQUIRE, RELAXED)) {
        weft__wait_abandon();
        weft__spin_unlock(&l->guard);
        return 0;
      }
      continue;
    }
    if (s & WAITERS) break;
    /* relaxed: the owner's fast release may race; it fails from now on */
    if (weft__cas(&l->state, &s, s | WAITERS, RELAXED, RELAXED)) break;
  }
  weft__waitlist_push(&l->waiters, self, (uint32_t)seq);
  weft__spin_unlock(&l->guard);
  if (weft__wait_commit((uint32_t)seq) == WEFT__WAKE_NORMAL) return 0; /* handed over */
  weft__spin_lock(&l->guard);
  if (self->waiter.linked) { /* not chosen: leave the list */
    weft__waitlist_remove(&l->waiters, self);
    if (l->waiters.len == 0) {
      uintptr_t cur = weft__load(&l->state, RELAXED); /* stable: WAITERS is set */
      weft__store(&l->state, cur & ~(uintptr_t)WAITERS, RELAXED);
    }
    weft__spin_unlock(&l->guard);
    return -ECANCELED;
  }
  /* Chosen by a release at the moment the cancel arrived: the lock is ours;
   * pass it on rather than keep it. */
  pass_on_and_unlock(l);
  return -ECANCELED;
}

int weft_lock_acquire(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__task *self = weft__sync_current();
  if (weft__unlikely(!self)) {
    weft__debug_misuse("weft_lock_acquire outside a task (use weft_lock_try_acquire)");
    return -EINVAL;
  }
  /* A load first: when the lock is taken (a convoy of waiters), a failing
   * locked CAS would cost as much as a successful one. acquire on the CAS:
   * pairs with the release CAS/store that freed the lock. */
  uintptr_t expect = weft__load(&l->state, RELAXED);
  if (weft__likely(expect == 0 && weft__cas(&l->state, &expect, (uintptr_t)self, ACQUIRE, RELAXED))) return 0;
  if ((expect & ~(uintptr_t)WAITERS) == (uintptr_t)self) {
    weft__debug_misuse("weft_lock_acquire by the task that holds the lock");
    return -EDEADLK;
  }
  return acquire_slow(l, self, true);
}

void weft__lock_acquire_uncancellable(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__task *self = weft__task_self();
  uintptr_t expect = 0;
  /* acquire: as in weft_lock_acquire */
  if (weft__cas(&l->state, &expect, (uintptr_t)self, ACQUIRE, RELAXED)) return;
  (void)acquire_slow(l, self, false); /* not cancellable: returns 0 */
}

int weft_lock_release(weft_lock *lk) {
  lock_impl *l = impl(lk);
  uintptr_t me = self_token();
  /* A load first, as in acquire. release on the CAS: pairs with the acquire
   * CAS of the next owner's fast path. */
  uintptr_t expect = weft__load(&l->state, RELAXED);
  if (weft__likely(expect == me && weft__cas(&l->state, &expect, 0, RELEASE, RELAXED))) return 0;
  if ((expect & ~(uintptr_t)WAITERS) != me) {
    weft__debug_misuse("weft_lock_release by a task or thread that does not hold the lock");
    return -EPERM;
  }
  /* WAITERS is set: hand over under guard. */
  weft__spin_lock(&l->guard);
  pass_on_and_unlock(l);
  return 0;
}
