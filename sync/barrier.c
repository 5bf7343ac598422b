/* sync/barrier.c: asyncio.Barrier across workers.
 *
 * State under the spinlock `guard`: the round's arrivals `count`, `broken`,
 * and one FIFO list of waiters. A round ends when its last party arrives
 * (passed), or by abort/reset (broken). When a round ends, its waiters are
 * the last `count - 1` (or `count`) nodes of the list, and each gets a mark
 * saying how it ended (ENDED_PASSED/ENDED_BROKEN), written under guard by a
 * walk back from the tail over those nodes only (so amortised one write per
 * arrival). Marked nodes are always at the head of the list: whoever ended a
 * round then pops marked nodes in batches and wakes them after unlocking
 * (never waking under the spinlock); the next round's waiters, unmarked,
 * queue behind them and are never woken by an older round's end. Several
 * enders may pop concurrently; each pops until the head is unmarked, so no
 * ended waiter is left behind.
 *
 * Unlike asyncio, there is no "draining" phase in which new arrivals wait
 * for the previous round's waiters to leave: the marks keep the rounds apart
 * in one list. A waiter reads its outcome from its own mark; one woken by
 * its round's end reads it without guard and never touches the barrier
 * again, so the barrier may be destroyed and its memory reused as soon as
 * destroy returns 0 (POSIX's rule for pthread_barrier_destroy).
 *
 * CANCELLATION. A waiter cancelled while its round fills leaves it (count
 * goes down by one, as in asyncio: another party must arrive). One whose
 * round ended at the same moment has nothing to pass on (every waiter of
 * the round is released anyway): it returns -ECANCELED.
 */
#include <errno.h>
#include <limits.h>

#include <weft/sync.h>

#include "core/atomic.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"

enum { WAITING = 0, ENDED_PASSED = 1, ENDED_BROKEN = 2 };

typedef struct barrier_impl {
  weft__spinlock guard;
  unsigned parties;         /* immutable */
  unsigned count;           /* under guard: arrivals in the current round */
  _Atomic unsigned waiting; /* written under guard: the round's waiters (for n_waiting) */
  _Atomic bool broken;      /* written under guard; read anywhere */
  weft__waitlist waiters;   /* under guard: ended (marked) rounds first, then the current one */
} barrier_impl;

_Static_assert(sizeof(barrier_impl) <= sizeof(weft_barrier), "weft_barrier's storage is too small");
_Static_assert(_Alignof(barrier_impl) <= _Alignof(weft_barrier), "weft_barrier's alignment is too small");

static inline barrier_impl *impl(weft_barrier *b) { return (barrier_impl *)(void *)b->opaque; }

int weft_barrier_init(weft_barrier *bb, unsigned parties) {
  if (!bb) return -EINVAL;
  if (parties == 0 || parties > INT_MAX) {
    weft__debug_misuse("weft_barrier_init with zero (or too many) parties");
    return -EINVAL;
  }
  barrier_impl *b = impl(bb);
  weft__spin_init(&b->guard);
  b->parties = parties;
  b->count = 0;
  weft__store(&b->waiting, 0, RELAXED);
  weft__store(&b->broken, false, RELAXED);
  weft__waitlist_init(&b->waiters);
  return 0;
}

int weft_barrier_destroy(weft_barrier *bb) {
  barrier_impl *b = impl(bb);
  weft__spin_lock(&b->guard);
  size_t n = b->waiters.len;
  weft__spin_unlock(&b->guard);
  if (n) {
    weft__debug_misuse("weft_barrier_destroy while tasks wait on it");
    return -EBUSY;
  }
  return 0;
}

/* Caller holds guard: end the current round with `how`, marking its
 * waiters (the unmarked tail of the list). */
static void end_round(barrier_impl *b, uint8_t how) {
  for (weft__waiter *n = b->waiters.tail; n && n->mark == WAITING; n = n->prev) n->mark = how;
  b->count = 0;
  weft__store(&b->waiting, 0, RELAXED);
}

/* Caller holds guard: pop the marked head nodes in batches and wake them
 * after unlocking. Unlocks guard. */
static void wake_ended_and_unlock(barrier_impl *b) {
  for (;;) {
    enum { BATCH = 32 };
    weft__wakeup wake[BATCH];
    int k = 0;
    while (k < BATCH && b->waiters.head && b->waiters.head->mark != WAITING)
      weft__waitlist_pop(&b->waiters, &wake[k++]);
    bool more = b->waiters.head && b->waiters.head->mark != WAITING;
    weft__spin_unlock(&b->guard);
    for (int i = 0; i < k; i++) weft__wakeup_fire(&wake[i]);
    if (!more) return;
    weft__spin_lock(&b->guard);
  }
}

int weft_barrier_wait(weft_barrier *bb) {
  barrier_impl *b = impl(bb);
  weft__task *self = weft__task_self();
  if (!self) {
    weft__debug_misuse("weft_barrier_wait outside a task");
    return -EINVAL;
  }
  weft__spin_lock(&b->guard);
  if (weft__load(&b->broken, RELAXED)) {
    weft__spin_unlock(&b->guard);
    return -EPIPE;
  }
  unsigned index = b->count;
  if (index + 1 == b->parties) { /* the last party: release the round */
    end_round(b, ENDED_PASSED);
    wake_ended_and_unlock(b);
    return (int)index;
  }
  int64_t seq = weft__wait_prepare(true);
  weft__waiting_on(self, WEFT__WAITING_BARRIER);
  if (seq < 0) {
    weft__spin_unlock(&b->guard);
    return (int)seq;
  }
  b->count++;
  weft__store(&b->waiting, b->count, RELAXED);
  weft__waitlist_push(&b->waiters, self, (uint32_t)seq);
  self->waiter.mark = WAITING;
  weft__spin_unlock(&b->guard);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  if (why == WEFT__WAKE_NORMAL) {
    /* Ended by its round: the ender marked and unlinked our node under
     * guard before its wake, whose release CAS our resumption acquires,
     * and nobody touches an unlinked node after that. Read the mark
     * without guard, and touch the barrier no more: destroy has returned
     * 0 since the node left the list, and the memory may be reused. */
    return self->waiter.mark == ENDED_PASSED ? (int)index : -EPIPE;
  }
  weft__spin_lock(&b->guard);
  uint8_t mark = self->waiter.mark;
  if (self->waiter.linked) { /* cancelled: leave the list (and the round, if it goes on) */
    weft__waitlist_remove(&b->waiters, self);
    if (mark == WAITING) {
      b->count--;
      weft__store(&b->waiting, b->count, RELAXED);
    }
  }
  weft__spin_unlock(&b->guard);
  return -ECANCELED;
}

/* End the current round broken, and leave the barrier broken or not. */
static void break_round(barrier_impl *b, bool stay_broken) {
  weft__spin_lock(&b->guard);
  end_round(b, ENDED_BROKEN);
  /* release: pairs with the acquire in weft_barrier_broken */
  weft__store(&b->broken, stay_broken, RELEASE);
  wake_ended_and_unlock(b);
}

int weft_barrier_abort(weft_barrier *b) {
  break_round(impl(b), true);
  return 0;
}

int weft_barrier_reset(weft_barrier *b) {
  break_round(impl(b), false);
  return 0;
}

unsigned weft_barrier_n_waiting(weft_barrier *b) { return weft__load(&impl(b)->waiting, RELAXED); }
unsigned weft_barrier_parties(weft_barrier *b) { return impl(b)->parties; }
bool weft_barrier_broken(weft_barrier *b) { return weft__load(&impl(b)->broken, ACQUIRE); }
