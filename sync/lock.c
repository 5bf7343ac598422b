/* sync/lock.c: asyncio.Lock across workers: a FIFO queue of waiters, in one
 * of two modes chosen at init (weft/sync.h):
 *  - WEFT_LOCK_FIFO (weft_lock_init, the default): asyncio's and DESIGN.md's
 *    semantics: FIFO, no barging. A release with waiters hands the lock to
 *    the oldest waiter; a newcomer finds it held and queues behind, also
 *    while the waiter it was handed to has not run yet. This is the
 *    HAND-OFF MODE below, switched on whenever the list is not empty.
 *  - WEFT_LOCK_OVERTAKE (opt-in): Go's sync.Mutex protocol: a normal mode
 *    that lets running tasks overtake a woken waiter, and a hand-off mode
 *    that a waiter starved for STARVING_NS switches on.
 *
 * THE STATE WORD `state` holds the holder and two flags:
 *
 *   bits 63..3  the holder: a task record, or (bit 1 set) the address of a
 *               thread-local token of a thread outside any task; 0 = free
 *   bit  2      WOKEN    a waiter was taken off the list and woken to try
 *                        again, and has not tried yet ("the woken waiter")
 *   bit  1      FOREIGN  the holder is a thread, not a task
 *   bit  0      WAITERS  the wait list is not empty
 *
 * Fast paths (one atomic operation each, no spinlock, no system call):
 * acquire CASes a free holder field to self (whatever the flags), release
 * CASes self back to 0 (keeping the flags), unless WAITERS is set and
 * WOKEN is not: then a waiter must be woken, under the spinlock `guard`.
 *
 * NORMAL MODE (WEFT_LOCK_OVERTAKE only). A release that finds waiters and no woken waiter frees the
 * lock, pops the oldest waiter, sets WOKEN and wakes it (onto the
 * releaser's worker, where it runs next: core/worker.c's LIFO slot). Later
 * releases see WOKEN and wake nobody: one wake is in flight at a time. The
 * woken waiter tries to take the lock (spinning while the holder runs);
 * meanwhile any running task may take the free lock first. A woken waiter
 * that loses clears WOKEN and queues again at the FRONT of the list, so the
 * waiters themselves are served in FIFO order; only running newcomers
 * overtake them. Why: with strict hand-off (weft up to here, and asyncio),
 * a saturated lock is a convoy: every acquisition is a hand-off, a wake and
 * a task switch, and the lock is idle while the next owner is switched in
 * (lock_contention, tasks=64 on 2 workers: 13-20M acquisitions/s, about
 * Go's figure in the quiet run, docs/benchmarks.md). Letting the running
 * task keep the lock makes it as cheap as an uncontended one: 51-65M.
 *
 * HAND-OFF MODE (`handoff`, under guard). In WEFT_LOCK_FIFO it is on
 * exactly while the list is not empty: the waiter that queues first switches
 * it on (under guard, with its push), and the release that empties the list,
 * or the cancelled last waiter, switches it off; no waiter is ever woken to
 * compete (WOKEN is never set). In WEFT_LOCK_OVERTAKE: a woken waiter that loses after
 * waiting STARVING_NS in all (since it first queued) switches it on as it
 * queues again. Then a release with waiters hands the lock over inside the
 * state word (`state` becomes the oldest waiter, plus WAITERS if more
 * wait) before waking it, and newcomers, finding it held, queue behind:
 * strict FIFO, as asyncio, until the list is empty or (OVERTAKE) a waiter
 * handed the lock had waited less than STARVING_NS (it switches the mode off). So no
 * waiter waits much longer than STARVING_NS once it runs, whatever stream
 * of running acquirers there is.
 *
 * INVARIANTS. Under guard: WAITERS is set exactly when the list is not
 * empty, and is changed only under guard; `handoff` implies a non-empty
 * list and no WOKEN. The state {free, WAITERS, no WOKEN} never occurs (a
 * waiter would wait for a release that never comes): WAITERS is set (by a
 * waiter queueing) only while the lock is held; WOKEN is cleared only with
 * the lock held, by the woken waiter taking it, or with the list empty; the
 * fast release frees the lock only when WOKEN is set or nobody waits. In
 * hand-off mode the lock is never free while the list is not empty (every
 * release with waiters hands it over), so nobody can overtake. The holder
 * and a guard holder are the only ones who change the word while it is
 * held (a woken waiter and newcomers CAS only a free holder field), so the
 * slow release, which holds both, may store it plainly.
 *
 * CANCELLATION. A waiter woken with CANCEL whose node is still linked was
 * not chosen: it unlinks itself (clearing WAITERS if it was the last) and
 * returns -ECANCELED. One whose node was unlinked was chosen at the same
 * moment: in hand-off mode it holds the lock and releases it (to the next
 * waiter); in normal mode it holds WOKEN's duty and passes it on (wakes
 * the next waiter if the lock is free, else clears WOKEN so that the
 * holder's release wakes one). The same for a woken waiter whose next wait
 * is refused by a pending cancel. A cancelled waiter never takes the lock,
 * nor the one wakeup in flight, with it.
 *
 * SPINNING. A task that finds the lock held by a running task spins for a
 * short while (SPIN_ROUNDS) before queueing: a critical section is usually
 * a few nanoseconds, and queueing costs two task switches. It is skipped
 * when the holder is not running (it was just handed the lock and has not
 * run yet, or it waits for something else while holding it), and in
 * hand-off mode (the lock is never free then).
 *
 * Rejected: strict FIFO hand-off alone (the convoy above: 13-20M
 * acquisitions/s on 2 workers); a plain-store release with a separate
 * waiter count (a store then a load of another word needs a full fence on
 * both sides, which costs what the CAS costs).
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

enum { WAITERS = 1u, FOREIGN = 2u, WOKEN = 4u, QUEUE_FLAGS = WAITERS | WOKEN };
enum { SPIN_ROUNDS = 64 };
#define STARVING_NS ((int64_t)1000000) /* 1 ms, as Go's sync.Mutex */

typedef struct lock_impl {
  _Atomic uintptr_t state; /* holder | WOKEN | FOREIGN | WAITERS (above) */
  _Atomic bool handoff;    /* hand-off mode: changed under guard; read racily as a hint (relaxed) */
  bool overtake;           /* WEFT_LOCK_OVERTAKE; set at init, read-only after */
  weft__spinlock guard;    /* guards `waiters`, every change of WAITERS, and `handoff` */
  weft__waitlist waiters;  /* under guard */
} lock_impl;

_Static_assert(sizeof(lock_impl) <= sizeof(weft_lock), "weft_lock's storage is too small");
_Static_assert(_Alignof(lock_impl) <= _Alignof(weft_lock), "weft_lock's alignment is too small");
_Static_assert(_Alignof(weft__task) >= 8, "task records must leave the state word's three flag bits free");

static inline lock_impl *impl(weft_lock *l) { return (lock_impl *)(void *)l->opaque; }

/* The token of a thread outside any task (its address is the identity). */
static __thread uint64_t thread_token;

/* Who the caller is: its task, or its thread's token. */
static inline uintptr_t self_token(void) {
  weft__task *t = weft__sync_current();
  return t ? (uintptr_t)t : ((uintptr_t)&thread_token | FOREIGN);
}

/* The holder field of a state word (the token, FOREIGN included); 0 = free. */
static inline uintptr_t holder(uintptr_t s) { return s & ~(uintptr_t)QUEUE_FLAGS; }

int weft_lock_init_mode(weft_lock *lk, unsigned mode) {
  if (!lk || (mode != WEFT_LOCK_FIFO && mode != WEFT_LOCK_OVERTAKE)) return -EINVAL;
  lock_impl *l = impl(lk);
  weft__store(&l->state, 0, RELAXED); /* relaxed: init, before the lock is shared */
  weft__store(&l->handoff, false, RELAXED); /* relaxed: init */
  l->overtake = mode == WEFT_LOCK_OVERTAKE;
  weft__spin_init(&l->guard);
  weft__waitlist_init(&l->waiters);
  return 0;
}

int weft_lock_init(weft_lock *lk) { return weft_lock_init_mode(lk, WEFT_LOCK_FIFO); }

int weft_lock_destroy(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__spin_lock(&l->guard);
  bool busy = weft__load(&l->state, RELAXED) != 0; /* held, waited for (WAITERS), or a woken waiter (WOKEN) */
  weft__spin_unlock(&l->guard);
  if (busy) {
    weft__debug_misuse("weft_lock_destroy on a lock that is held or waited for");
    return -EBUSY;
  }
  return 0;
}

bool weft_lock_locked(weft_lock *lk) {
  return holder(weft__load(&impl(lk)->state, RELAXED)) != 0; /* relaxed: a snapshot */
}

bool weft__lock_held_by_self(weft_lock *lk) {
  /* relaxed: only the caller itself makes the holder field equal to itself */
  return holder(weft__load(&impl(lk)->state, RELAXED)) == self_token();
}

/* Caller holds guard and the lock. Release it: in hand-off mode to the
 * oldest waiter, else free it and wake the oldest waiter (unless a woken
 * waiter is still on its way). Unlocks guard. */
static void release_and_unlock(lock_impl *l) {
  uintptr_t s = weft__load(&l->state, RELAXED); /* stable: we hold the lock and guard (INVARIANTS) */
  weft__wakeup wake;
  if ((s & WOKEN) || !weft__waitlist_pop(&l->waiters, &wake)) {
    /* release: pairs with the acquire CAS of whoever takes it next */
    weft__store(&l->state, s & QUEUE_FLAGS, RELEASE);
    weft__spin_unlock(&l->guard);
    return;
  }
  uintptr_t more = l->waiters.len ? WAITERS : 0;
  uintptr_t next;
  if (weft__load(&l->handoff, RELAXED)) { /* relaxed: under guard */
    next = (uintptr_t)wake.task | more;
    if (!more) weft__store(&l->handoff, false, RELAXED);
  } else {
    next = WOKEN | more;
  }
  /* release: pairs with the acquire CAS of the next owner (normal mode),
   * or with the handed-to waiter's acquire load of state after its wake
   * (hand-off mode): either sees this owner's critical section */
  weft__store(&l->state, next, RELEASE);
  weft__spin_unlock(&l->guard);
  weft__wakeup_fire(&wake);
}

/* Caller holds guard, has WOKEN's duty (it was the woken waiter) and does
 * not hold the lock; it gives up. If the lock is free nobody else will wake
 * a waiter: wake the next one in its place (WOKEN stays set). If it is
 * held, clear WOKEN: its holder's release then wakes one. Unlocks guard. */
static void pass_woken_and_unlock(lock_impl *l) {
  uintptr_t s = weft__load(&l->state, RELAXED);
  for (;;) {
    if (holder(s) == 0 && l->waiters.len) {
      uintptr_t next = l->waiters.len > 1 ? s : s & ~(uintptr_t)WAITERS;
      /* relaxed: a CAS that only checks the lock is still free (a release
       * sequence continues through it); the list is ordered by guard */
      if (!weft__cas(&l->state, &s, next, RELAXED, RELAXED)) continue;
      weft__wakeup wake;
      bool have = weft__waitlist_pop(&l->waiters, &wake); /* true: len was checked */
      weft__spin_unlock(&l->guard);
      if (have) weft__wakeup_fire(&wake);
      return;
    }
    /* relaxed: the holder's release CAS reads the latest word */
    if (weft__cas(&l->state, &s, s & ~(uintptr_t)WOKEN, RELAXED, RELAXED)) break;
  }
  weft__spin_unlock(&l->guard);
}

int weft_lock_try_acquire(weft_lock *lk) {
  lock_impl *l = impl(lk);
  uintptr_t me = self_token();
  uintptr_t s = weft__load(&l->state, RELAXED); /* relaxed: a first guess; the acquire CAS below validates it */
  while (holder(s) == 0) {
    /* acquire: pairs with the release CAS/store that freed the lock */
    if (weft__cas(&l->state, &s, s | me, ACQUIRE, RELAXED)) return 0;
  }
  return -EAGAIN;
}

/* Whether a task that wants the lock should keep spinning on state s (held). */
static inline bool worth_spinning(lock_impl *l, uintptr_t s) {
  if (weft__load(&l->handoff, RELAXED)) return false; /* relaxed: a hint; the lock is never free then */
  if (s & FOREIGN) return true;                        /* a thread: it runs (or the OS will run it) */
  weft__task *owner = (weft__task *)holder(s);
  /* relaxed: a hint; records are type-stable, so a stale holder is harmless */
  return WEFT__WS_STATE(weft__load(&owner->ws, RELAXED)) == WEFT__TS_RUNNING;
}

/* Try to take a free lock, spinning a little while its holder runs. The
 * woken waiter clears WOKEN as it takes it. */
static bool spin_take(lock_impl *l, weft__task *self, bool woken) {
  uintptr_t drop = woken ? WOKEN : 0;
  uintptr_t s = weft__load(&l->state, RELAXED); /* relaxed: a first guess; the CAS validates it */
  for (int i = 0; i < SPIN_ROUNDS; i++) {
    if (holder(s) == 0) {
      /* acquire: pairs with the release that freed it */
      if (weft__cas(&l->state, &s, (s & ~drop) | (uintptr_t)self, ACQUIRE, RELAXED)) return true;
      continue;
    }
    if (!worth_spinning(l, s)) return false;
    weft__cpu_relax();
    s = weft__load(&l->state, RELAXED); /* relaxed: polling; the CAS validates it */
  }
  return false;
}

/* The slow path of acquire: spin a little, queue, and (woken in normal
 * mode) try again, queueing at the front when we lose. */
static int acquire_slow(lock_impl *l, weft__task *self, bool cancellable) {
  bool woken = false; /* we are the woken waiter (WOKEN's duty is ours) */
  int64_t since = 0;  /* when we first queued */
  for (;;) {
    if (spin_take(l, self, woken)) return 0;
    bool starving = false;
    if (l->overtake) { /* FIFO mode never measures starvation */
      int64_t now = weft_now_ns(); /* outside guard (a vDSO call, but it may be a system call) */
      if (!since) since = now;
      starving = woken && now - since > STARVING_NS;
    }
    weft__spin_lock(&l->guard);
    int64_t seq = weft__wait_prepare(cancellable);
    weft__waiting_on(self, WEFT__WAITING_LOCK);
    if (seq < 0) {
      if (woken)
        pass_woken_and_unlock(l);
      else
        weft__spin_unlock(&l->guard);
      return (int)seq;
    }
    uintptr_t drop = woken ? WOKEN : 0;
    uintptr_t s = weft__load(&l->state, RELAXED); /* relaxed: under guard; the CASes below validate it */
    bool took = false;
    for (;;) {
      if (holder(s) == 0) { /* freed meanwhile */
        /* acquire: pairs with the release that freed it */
        if (weft__cas(&l->state, &s, (s & ~drop) | (uintptr_t)self, ACQUIRE, RELAXED)) {
          took = true;
          break;
        }
        continue;
      }
      /* relaxed: the holder's fast release may race; from now on it fails
       * (WAITERS without WOKEN) and takes guard, which orders our node */
      if (weft__cas(&l->state, &s, (s | WAITERS) & ~drop, RELAXED, RELAXED)) break;
    }
    if (took) {
      weft__wait_abandon();
      weft__spin_unlock(&l->guard);
      return 0;
    }
    if (woken) {
      weft__waitlist_push_front(&l->waiters, self, (uint32_t)seq); /* keep our place */
      if (starving) weft__store(&l->handoff, true, RELAXED);       /* relaxed: under guard */
    } else {
      weft__waitlist_push(&l->waiters, self, (uint32_t)seq);
      if (!l->overtake) weft__store(&l->handoff, true, RELAXED); /* relaxed: under guard */
    }
    woken = false;
    weft__spin_unlock(&l->guard);
    uint32_t why = weft__wait_commit((uint32_t)seq);
    if (why == WEFT__WAKE_NORMAL) {
      /* acquire: pairs with the release store that handed us the lock */
      if (holder(weft__load(&l->state, ACQUIRE)) == (uintptr_t)self) { /* hand-off mode */
        /* relaxed: a hint; switched off under guard */
        if (l->overtake && weft__load(&l->handoff, RELAXED) && weft_now_ns() - since < STARVING_NS) {
          weft__spin_lock(&l->guard);
          weft__store(&l->handoff, false, RELAXED); /* we did not starve: back to normal mode */
          weft__spin_unlock(&l->guard);
        }
        return 0;
      }
      woken = true; /* normal mode: try again */
      continue;
    }
    weft__spin_lock(&l->guard);
    if (self->waiter.linked) { /* not chosen: leave the list */
      weft__waitlist_remove(&l->waiters, self);
      if (l->waiters.len == 0) {
        weft__store(&l->handoff, false, RELAXED); /* relaxed: under guard */
        uintptr_t cur = weft__load(&l->state, RELAXED);
        /* relaxed: only the flag changes; the holder field may change
         * meanwhile (fast paths), hence the CAS */
        while (!weft__cas(&l->state, &cur, cur & ~(uintptr_t)WAITERS, RELAXED, RELAXED)) {
        }
      }
      weft__spin_unlock(&l->guard);
      return -ECANCELED;
    }
    /* Chosen at the moment the cancel arrived: pass on what we were given. */
    if (holder(weft__load(&l->state, RELAXED)) == (uintptr_t)self)
      release_and_unlock(l); /* hand-off mode: the lock */
    else
      pass_woken_and_unlock(l); /* normal mode: the wakeup */
    return -ECANCELED;
  }
}

int weft_lock_acquire(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__task *self = weft__sync_current();
  if (weft__unlikely(!self)) {
    weft__debug_misuse("weft_lock_acquire outside a task (use weft_lock_try_acquire)");
    return -EINVAL;
  }
  /* A load first: when the lock is taken, a failing locked CAS would cost
   * as much as a successful one. acquire on the CAS: pairs with the
   * release CAS/store that freed the lock. */
  uintptr_t s = weft__load(&l->state, RELAXED);
  if (weft__likely(holder(s) == 0 && weft__cas(&l->state, &s, s | (uintptr_t)self, ACQUIRE, RELAXED))) return 0;
  if (holder(s) == (uintptr_t)self) {
    weft__debug_misuse("weft_lock_acquire by the task that holds the lock");
    return -EDEADLK;
  }
  return acquire_slow(l, self, true);
}

void weft__lock_acquire_uncancellable(weft_lock *lk) {
  lock_impl *l = impl(lk);
  weft__task *self = weft__task_self();
  uintptr_t s = weft__load(&l->state, RELAXED); /* relaxed: a first guess; the acquire CAS validates it */
  /* acquire: as in weft_lock_acquire */
  if (holder(s) == 0 && weft__cas(&l->state, &s, s | (uintptr_t)self, ACQUIRE, RELAXED)) return;
  (void)acquire_slow(l, self, false); /* not cancellable: returns 0 */
}

int weft_lock_release(weft_lock *lk) {
  lock_impl *l = impl(lk);
  uintptr_t me = self_token();
  uintptr_t s = weft__load(&l->state, RELAXED); /* relaxed: a first guess; the release CAS (or guard) validates it */
  for (;;) {
    if (weft__unlikely(holder(s) != me)) {
      weft__debug_misuse("weft_lock_release by a task or thread that does not hold the lock");
      return -EPERM;
    }
    if ((s & QUEUE_FLAGS) == WAITERS) break; /* waiters, none woken: wake one, under guard */
    /* release: pairs with the acquire CAS of the next owner (fast path,
     * spin, or the woken waiter) */
    if (weft__likely(weft__cas(&l->state, &s, s & QUEUE_FLAGS, RELEASE, RELAXED))) return 0;
  }
  weft__spin_lock(&l->guard);
  release_and_unlock(l);
  return 0;
}
