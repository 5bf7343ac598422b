/* core/spinlock.h: the short lock that guards a wait list or a primitive's
 * state for a few instructions (never across a wake, a switch, a system
 * call or an allocation). Test-and-test-and-set; after a short spin it
 * yields the CPU, because on a 2-CPU machine the holder may be preempted. */
#ifndef WEFT_CORE_SPINLOCK_H
#define WEFT_CORE_SPINLOCK_H

#include <sched.h>

#include "core/atomic.h"

typedef struct weft__spinlock {
  _Atomic int locked;
} weft__spinlock;

static inline void weft__spin_init(weft__spinlock *l) { weft__store(&l->locked, 0, RELAXED); }

static inline void weft__spin_lock(weft__spinlock *l) {
  for (int spins = 0;; spins++) {
    /* acquire: pairs with the release in weft__spin_unlock */
    if (!weft__load(&l->locked, RELAXED) && !weft__xchg(&l->locked, 1, ACQUIRE)) return;
    weft__cpu_relax();
    if (spins > 64) {
      sched_yield();
      spins = 0;
    }
  }
}

static inline void weft__spin_unlock(weft__spinlock *l) {
  weft__store(&l->locked, 0, RELEASE); /* release: pairs with the acquire in weft__spin_lock */
}

#endif
