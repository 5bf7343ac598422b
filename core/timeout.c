/* core/timeout.c: timeout scopes (asyncio.timeout / timeout_at) and
 * wait_for, built on cancel/uncancel counting exactly as asyncio's Timeout.
 *
 * A SCOPE is a struct on the task's stack, linked (innermost first) on the
 * task's out-of-line state (core/taskext.h) while entered. Its deadline is
 * an entry {deadline, task, scope seq, SCOPE} in the timer heap of the
 * worker it was armed on: nothing else, so a scope that never expires costs
 * no system call and leaving it costs O(1) (the entry goes stale and is
 * dropped when it fires or at compaction). Scope seqs come from the
 * record's counter, which never repeats (the ext outlives incarnations), and
 * a scope's `seq` is cleared whenever its entry stops counting (reschedule,
 * leave, expiry): a stale entry finds no scope with its seq and does nothing.
 *
 * States (under the ext lock; `state` is atomic so the task may read it
 * without the lock):
 *   ENTERED --timer fires (any worker)--> FIRING --cancel made--> EXPIRED
 *   (a deadline already past at enter/reschedule is armed as a due entry:
 *   it fires at the next timer pass; a task about to wait or yield expires
 *   its due scopes itself first: weft__timeout_expire_due)
 *   any --leave--> LEFT
 * Expiry: the timer, under the lock, finds the scope ENTERED with the
 * entry's seq and marks it FIRING; after unlocking it calls weft_cancel on
 * the task (which may wake it: a wake may write an eventfd, so not under a
 * spinlock), then marks it EXPIRED. leave() waits while a scope is FIRING
 * (the canceller is a few instructions from done), so by the time a scope is
 * unlinked its cancel request is either fully made (counted and delivered
 * or pending) or not made at all: uncancel in leave always withdraws exactly
 * the request this scope made, and no late wake can reach a wait the task
 * makes after leaving.
 *
 * LEAVE (asyncio's Timeout.__aexit__): if the scope expired, uncancel();
 * when that brings `cancelling` to or below its value at entry and the body
 * ended with -ECANCELED, the cancellation was this scope's: -ETIMEDOUT.
 * Otherwise rc passes through: a cancellation from elsewhere (cancelling
 * stays above the entry count) stays -ECANCELED, and of nested scopes that
 * expire together the inner one passes -ECANCELED up and the outer one
 * converts it. uncancel() to 0 also drops a request not yet delivered (a
 * body that finished without suspending again), so nothing leaks out.
 *
 * wait_for (Python 3.12) is a scope around an await: the await forwards the
 * scope's cancellation to the inner task/future and waits for it to end;
 * an inner result that arrives anyway wins (leave converts only -ECANCELED).
 */
#include <errno.h>

#include <weft/task.h>

#include "core/atomic.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/taskext.h"
#include "core/worker.h"

enum { LEFT = 0, ENTERED = 1, FIRING = 2, EXPIRED = 3 };

typedef struct weft__scope {
  struct weft__scope *next;  /* under ext lock: the enclosing scope */
  weft__task *task;          /* the task that entered it */
  int64_t deadline;          /* the task: WEFT_FOREVER = none */
  uint32_t seq;              /* under ext lock: the counting timer entry's seq, 0 = none */
  _Atomic int state;         /* written under ext lock; the task reads it anywhere */
  int cancelling_at_entry;   /* the task */
} weft__scope;

_Static_assert(sizeof(weft__scope) <= sizeof(weft_timeout), "weft_timeout's storage is too small");
_Static_assert(_Alignof(weft__scope) <= _Alignof(weft_timeout), "weft_timeout's alignment is too small");

static inline weft__scope *scope_of(weft_timeout *s) { return (weft__scope *)(void *)s->opaque; }

/* Under ext lock: the entered scope whose entry has seq, or NULL. */
static weft__scope *find(weft__task_ext *e, uint32_t seq) {
  for (weft__scope *s = e->scopes; s; s = s->next)
    if (s->seq == seq && weft__load(&s->state, RELAXED) == ENTERED) return s;
  return NULL;
}

/* The task itself, holding e->lock, sc linked and ENTERED: arm sc for
 * sc->deadline, then unlock.
 * The old entry, if any, goes stale (its seq is no longer sc's). */
static int arm_and_unlock(weft__task *self, weft__task_ext *e, weft__scope *sc) {
  sc->seq = 0;
  if (sc->deadline == WEFT_FOREVER) {
    weft__spin_unlock(&e->lock);
    return 0;
  }
  /* A deadline already past is armed like any other: the entry is due, and
   * it expires at the task's next suspension, together with every other
   * due scope, in deadline order, as asyncio's call_soon of the expiry does
   * (a wait or a yield, after which local tasks or the task itself may run
   * before the worker's next timer pass, expires its due scopes itself
   * first: weft__timeout_expire_due). (Expiring at once here made
   * nested scopes with one deadline disagree: under load the inner one,
   * entered after the deadline, cancelled the task before the outer's
   * entry could fire, and then the inner converted the cancellation.) */
  if (++e->scope_seq == 0) e->scope_seq = 1; /* 0 means "no entry" */
  uint32_t seq = e->scope_seq;
  sc->seq = seq;
  weft__spin_unlock(&e->lock);
  /* after unlocking: the heap may grow (nothing allocates under a spinlock) */
  weft__worker *w = weft__worker_self();
  weft__timer_entry ent = {.deadline = sc->deadline, .task = self, .seq = seq, .kind = WEFT__TIMER_SCOPE};
  if (weft__timer_insert(&w->timers, ent) < 0) {
    weft__spin_lock(&e->lock);
    sc->seq = 0;
    weft__spin_unlock(&e->lock);
    return -ENOMEM;
  }
  return 0;
}

static int enter_at(weft_timeout *s, int64_t deadline) {
  weft__task *self = weft__task_self();
  if (!self || !s) return -EINVAL;
  weft__task_ext *e = weft__ext_get(self);
  if (!e) return -ENOMEM;
  weft__scope *sc = scope_of(s);
  weft__spin_lock(&e->lock);
  for (weft__scope *x = e->scopes; x; x = x->next)
    if (x == sc) {
      weft__spin_unlock(&e->lock);
      return -EINVAL; /* re-entered */
    }
  sc->task = self;
  sc->deadline = deadline;
  sc->cancelling_at_entry = weft__load(&self->cancelling, RELAXED); /* relaxed: a count */
  weft__store(&sc->state, ENTERED, RELAXED);
  sc->next = e->scopes;
  e->scopes = sc;
  int rc = arm_and_unlock(self, e, sc);
  if (rc) {
    weft__spin_lock(&e->lock);
    e->scopes = sc->next;
    weft__store(&sc->state, LEFT, RELAXED);
    weft__spin_unlock(&e->lock);
  }
  return rc;
}

int weft_timeout_enter_at(weft_timeout *s, int64_t deadline) {
  return enter_at(s, deadline);
}

int weft_timeout_enter(weft_timeout *s, int64_t delay_ns) {
  if (delay_ns < 0) return -EINVAL;
  if (delay_ns == WEFT_FOREVER) return enter_at(s, WEFT_FOREVER);
  int64_t now = weft_now_ns(); /* one clock read per scope */
  return enter_at(s, delay_ns > INT64_MAX - 1 - now ? INT64_MAX - 1 : now + delay_ns);
}

int weft_timeout_reschedule(weft_timeout *s, int64_t deadline) {
  weft__task *self = weft__task_self();
  weft__scope *sc = s ? scope_of(s) : NULL;
  if (!self || !sc || sc->task != self) return -EINVAL;
  weft__task_ext *e = weft__ext_peek(self);
  if (!e) return -EINVAL;
  weft__spin_lock(&e->lock);
  bool ok = weft__load(&sc->state, RELAXED) == ENTERED;
  bool linked = false;
  for (weft__scope *x = e->scopes; x; x = x->next) linked |= x == sc;
  if (!ok || !linked) {
    weft__spin_unlock(&e->lock);
    return -EINVAL; /* expiring, expired or not entered */
  }
  sc->deadline = deadline;
  return arm_and_unlock(self, e, sc);
}

int weft_timeout_leave(weft_timeout *s, int rc) {
  weft__task *self = weft__task_self();
  weft__scope *sc = s ? scope_of(s) : NULL;
  if (!self || !sc || sc->task != self) return -EINVAL;
  weft__task_ext *e = weft__ext_peek(self);
  if (!e) return -EINVAL;
  weft__spin_lock(&e->lock);
  if (e->scopes != sc) {
    weft__spin_unlock(&e->lock);
    return -EINVAL; /* not entered, or not the innermost */
  }
  while (weft__load(&sc->state, RELAXED) == FIRING) {
    /* a timer on another worker is making the cancel request: let it finish */
    weft__spin_unlock(&e->lock);
    weft__cpu_relax();
    sched_yield();
    weft__spin_lock(&e->lock);
  }
  e->scopes = sc->next;
  int st = weft__load(&sc->state, RELAXED);
  sc->seq = 0;
  weft__store(&sc->state, st == EXPIRED ? EXPIRED : LEFT, RELAXED); /* expired() stays true after leaving */
  sc->task = NULL;
  weft__spin_unlock(&e->lock);
  if (st == EXPIRED) {
    int left = weft_uncancel(weft_current());
    if (left <= sc->cancelling_at_entry && rc == -ECANCELED) return -ETIMEDOUT;
  }
  return rc;
}

int64_t weft_timeout_when(const weft_timeout *s) {
  return ((const weft__scope *)(const void *)s->opaque)->deadline;
}

bool weft_timeout_expired(const weft_timeout *s) {
  if (!s) return false;
  const weft__scope *sc = (const weft__scope *)(const void *)s->opaque;
  int st = weft__load((_Atomic int *)&sc->state, RELAXED); /* relaxed: a report */
  return st == FIRING || st == EXPIRED;
}

/* Holding e->lock, sc ENTERED on t's list: expire sc (FIRING, the cancel,
 * EXPIRED), unlocking for the cancel; returns unlocked. */
static void expire_and_unlock(weft__task *t, weft__task_ext *e, weft__scope *sc) {
  weft__store(&sc->state, FIRING, RELAXED);
  sc->seq = 0;
  /* relaxed: t cannot end (or be recycled) while the scope is linked and
   * FIRING: leave() waits for us, so this generation stays current */
  weft_task h = {(struct weft_task_rec *)t, (uint32_t)(weft__load(&t->ref, RELAXED) >> 32)};
  weft__spin_unlock(&e->lock);
  weft_cancel(h);
  weft__spin_lock(&e->lock);
  weft__store(&sc->state, EXPIRED, RELAXED);
  weft__spin_unlock(&e->lock);
}

/* Expire every entered scope of t whose deadline is at most `by` (0: the
 * clock, read once, only if some scope has a deadline). Any thread: the
 * list is walked under the lock. */
static void expire_due_scopes(weft__task *t, weft__task_ext *e, int64_t by) {
  for (;;) {
    weft__scope *due = NULL;
    weft__spin_lock(&e->lock);
    for (weft__scope *sc = e->scopes; sc && !due; sc = sc->next) {
      if (sc->deadline == WEFT_FOREVER || weft__load(&sc->state, RELAXED) != ENTERED) continue;
      if (!by) by = weft_now_ns();
      if (sc->deadline <= by) due = sc;
    }
    if (!due) {
      weft__spin_unlock(&e->lock);
      return;
    }
    expire_and_unlock(t, e, due);
  }
}

/* OWNER worker, scheduler context: a SCOPE entry is due. */
void weft__timeout_fire(weft__task *t, uint32_t seq) {
  weft__task_ext *e = weft__ext_peek(t);
  if (!e) return;
  weft__spin_lock(&e->lock);
  weft__scope *sc = find(e, seq);
  if (!sc) {
    weft__spin_unlock(&e->lock);
    return; /* stale: left, rescheduled, or an earlier incarnation's */
  }
  int64_t deadline = sc->deadline;
  expire_and_unlock(t, e, sc);
  /* and every other scope of t due by then: their entries may sit in other
   * workers' heaps (the task moved between its enters), and a task woken by
   * this cancel could leave an inner scope before an outer one due at the
   * same time had fired: the inner would then convert instead of the outer */
  expire_due_scopes(t, e, deadline);
}

/* The task itself, about to yield, to wait (weft__wait_prepare), or to join
 * a fresh task inline (which runs it without a suspension, core/task.c
 * try_inline): expire its entered scopes that are due.
 * A yielding task is runnable at once, so it may resume before its worker's
 * next timer pass (every WEFT__GLOBAL_INTERVAL switches, or when nothing
 * local is left to run) or on another worker: timeout(0) followed by a
 * yield did not expire, where asyncio runs the expiry (scheduled with
 * call_soon) before the task's next step. Every due scope expires here, as
 * a timer pass expires every due entry, so of nested scopes due together
 * the outermost still converts. Their heap entries go stale. The list's
 * links are changed only by the task itself, so it reads them unlocked.
 * (An inline join did not expire either: wait_for(t, 0) on a task just
 * spawned ran it to its result instead of cancelling it; nor did a wait,
 * when the worker ran a local task that completed what it awaited before
 * its timer pass.) */
void weft__timeout_expire_due(weft__task *t) {
  weft__task_ext *e = weft__ext_peek(t);
  if (!e || !e->scopes) return;
  expire_due_scopes(t, e, 0);
}

bool weft__timeout_any_firing(weft__task_ext *e) {
  for (weft__scope *s = e->scopes; s; s = s->next)
    if (weft__load(&s->state, RELAXED) == FIRING) return true;
  return false;
}

/* OWNER worker: compaction's staleness test for a SCOPE entry. */
bool weft__timeout_entry_live(weft__task *t, uint32_t seq) {
  weft__task_ext *e = weft__ext_peek(t);
  if (!e) return false;
  weft__spin_lock(&e->lock);
  bool live = find(e, seq) != NULL;
  weft__spin_unlock(&e->lock);
  return live;
}

int weft_wait_for(weft_awaitable a, int64_t timeout_ns, void **value) {
  if (value) *value = NULL;
  if (timeout_ns < 0 || !weft__task_self()) return -EINVAL;
  if (timeout_ns == WEFT_FOREVER) return weft_await(a, value);
  weft_timeout scope;
  int rc = weft_timeout_enter(&scope, timeout_ns);
  if (rc) return rc;
  rc = weft_await(a, value);
  return weft_timeout_leave(&scope, rc);
}
