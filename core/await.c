/* core/await.c: awaitables (a task or a future) and the collector that
 * waits for many of them at once: gather, wait, as_completed and shield are
 * built on it (core/gather.c, core/shield.c).
 *
 * THE COLLECTOR. One allocation holds a header and one weft__sub per
 * awaitable. Each sub's done node is subscribed to its awaitable's done
 * list (a task's, core/task.c, or a future's, core/future.c) as a callback
 * node marked `keep` (its memory belongs here). When an awaitable
 * completes, the completing thread runs on_done(): under the collector's
 * spinlock it appends the index to `order`, notes whether the status stops
 * the wait (stop_on), and if the waiting task is armed and its condition
 * now holds (n_done >= want, or a stop), disarms it and copies its {task,
 * seq}; after unlocking it wakes it (weft__wake: a stale seq does nothing)
 * and drops its reference on the collector.
 *
 * The waiting task re-reads the counters under the lock after every wakeup,
 * whatever woke it (a completion, a cancellation, its deadline): the
 * collector's state, not the wakeup, is the truth, so a wakeup racing with a
 * cancellation loses nothing.
 *
 * LIFETIME. refs = 1 (the waiting task) + 1 per linked node whose callback
 * has not run. At the end the waiting task unsubscribes each node still
 * linked: a node it unlinks will never see its callback run, so it drops
 * that node's reference itself; a node it finds unlinked belongs to a
 * callback that runs or ran, which drops its own. The last reference frees
 * the allocation, so a callback running late on another thread never
 * touches freed memory, and the caller may return at once (FIRST_COMPLETED,
 * a timeout, the first failure) without waiting for the stragglers.
 *
 * Tasks are referenced (weft__task_ref) from subscribe to end, so that
 * unsubscribing touches the same incarnation's done lock even if the user
 * released the handle meanwhile.
 */
#include "core/await.h"

#include <errno.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/future.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/worker.h"

static size_t alloc_size(size_t n) {
  return sizeof(weft__collector) + n * sizeof(weft__sub) + n * sizeof(uint32_t);
}

static void collector_unref(weft__collector *c) {
  /* acq_rel: release orders this holder's last use before the free; the
   * last holder's acquire sees every other holder's uses */
  if (weft__fetch_sub(&c->refs, 1, ACQ_REL) == 1) weft__free(c, alloc_size(c->n));
}

static bool stops(int stop_on, int status) {
  if (status >= 0) return false;
  if (stop_on == WEFT__STOP_ON_FAILURE) return true;
  if (stop_on == WEFT__STOP_ON_EXCEPTION) return status != -ECANCELED;
  return false;
}

static int sub_status(weft__sub *s) {
  /* after completion: a task's status is final once DONE (the completing
   * thread runs this after setting it; others read it after an acquire) */
  return s->task ? s->task->status : weft__future_status(s->future);
}

/* Record the completion of sub s. Any thread. Returns a wakeup to fire
 * after unlocking ({NULL} for none). */
static weft__task *record(weft__collector *c, weft__sub *s, uint32_t *seq) {
  weft__task *wake = NULL;
  int st = sub_status(s);
  weft__spin_lock(&c->lock);
  c->order[c->n_done++] = s->index;
  if (!c->stop_hit && stops(c->stop_on, st)) {
    c->stop_hit = true;
    c->first_failure = st;
  }
  if (c->armed && (c->n_done >= c->want || c->stop_hit)) {
    c->armed = false;
    wake = c->waiter;
    *seq = c->seq;
  }
  weft__spin_unlock(&c->lock);
  return wake;
}

/* The done callback of a sub's node: the completing thread. */
static void on_done(weft_task unused, void *arg) {
  (void)unused;
  weft__sub *s = arg;
  weft__collector *c = s->col;
  uint32_t seq = 0;
  weft__task *w = record(c, s, &seq);
  if (w) weft__wake(w, seq, WEFT__WAKE_NORMAL);
  collector_unref(c);
}

static int resolve(weft_awaitable a, weft__task *self, weft__sub *s) {
  s->task = NULL;
  s->future = NULL;
  if (a.kind == WEFT_AW_FUTURE) {
    if (!a.future) return -EINVAL;
    s->future = a.future;
    return 0;
  }
  if (a.kind != WEFT_AW_TASK) return -EINVAL;
  weft__task *t;
  int rc = weft__task_ref(a.task, &t);
  if (rc) return rc;
  if (t == self) {
    weft__task_unref(t);
    weft__debug_misuse("a task awaited itself");
    return -EDEADLK;
  }
  s->task = t;
  return 0;
}

int weft__collector_new(const weft_awaitable *aws, size_t n, int stop_on, weft__collector **out) {
  weft__task *self = weft__task_self();
  if (!self || (n && !aws)) return -EINVAL;
  if (n > UINT32_MAX) return -EINVAL;
  weft__collector *c = weft__alloc(alloc_size(n));
  if (!c) return -ENOMEM;
  weft__spin_init(&c->lock);
  weft__store(&c->refs, 1, RELAXED); /* relaxed: not shared yet */
  c->waiter = self;
  c->seq = 0;
  c->armed = false;
  c->stop_hit = false;
  c->stop_on = stop_on;
  c->first_failure = 0;
  c->want = n;
  c->n_done = 0;
  c->n = n;
  c->order = (uint32_t *)(void *)&c->subs[n];
  /* validate and reference everything first, so a bad entry fails cleanly */
  for (size_t i = 0; i < n; i++) {
    weft__sub *s = &c->subs[i];
    s->col = c;
    s->index = (uint32_t)i;
    s->linked = false;
    s->node = (weft__done_node){.cb = on_done, .cb_arg = s, .keep = true};
    int rc = resolve(aws[i], self, s);
    if (rc) {
      for (size_t j = 0; j < i; j++)
        if (c->subs[j].task) weft__task_unref(c->subs[j].task);
      weft__free(c, alloc_size(n));
      return rc;
    }
  }
  for (size_t i = 0; i < n; i++) {
    weft__sub *s = &c->subs[i];
    /* the node's reference first: its callback may run as soon as it is linked */
    weft__fetch_add(&c->refs, 1, RELAXED); /* relaxed: we hold a reference */
    int done = s->task ? weft__task_subscribe(s->task, &s->node) : weft__future_subscribe(s->future, &s->node);
    if (done) {
      weft__fetch_sub(&c->refs, 1, RELAXED); /* relaxed: ours again, not the last */
      uint32_t seq;
      (void)record(c, s, &seq); /* not armed: no wakeup */
    } else {
      s->linked = true;
    }
  }
  *out = c;
  return 0;
}

int weft__collector_wait(weft__collector *c, int64_t deadline, bool cancellable) {
  weft__task *self = weft__task_self();
  for (;;) {
    weft__spin_lock(&c->lock);
    if (c->n_done >= c->want || c->stop_hit) {
      weft__spin_unlock(&c->lock);
      return 0;
    }
    if (deadline != INT64_MAX && deadline <= weft_now_ns()) {
      weft__spin_unlock(&c->lock);
      return -ETIMEDOUT;
    }
    int64_t seq = weft__wait_prepare(cancellable);
    if (seq < 0) {
      weft__spin_unlock(&c->lock);
      return (int)seq;
    }
    weft__waiting_on(self, WEFT__WAITING_GATHER);
    c->waiter = self;
    c->seq = (uint32_t)seq;
    c->armed = true;
    weft__spin_unlock(&c->lock);
    if (deadline != INT64_MAX) {
      /* after unlocking: the heap may grow (nothing allocates under a
       * spinlock); a completion meanwhile made the commit return at once */
      weft__worker *w = weft__worker_self();
      weft__timer_entry e = {.deadline = deadline, .task = self, .seq = (uint32_t)seq, .kind = WEFT__TIMER_WAKE};
      if (weft__timer_insert(&w->timers, e) < 0) {
        weft__spin_lock(&c->lock);
        c->armed = false;
        weft__spin_unlock(&c->lock);
        weft__wait_abandon();
        return -ENOMEM;
      }
    }
    uint32_t why = weft__wait_commit((uint32_t)seq);
    weft__spin_lock(&c->lock);
    c->armed = false; /* whoever woke us: re-read the state */
    weft__spin_unlock(&c->lock);
    if (why == WEFT__WAKE_CANCEL) {
      /* a completion at the same moment still counts: the caller sees it
       * in the state; the cancellation is what it reports */
      return -ECANCELED;
    }
  }
}

bool weft__sub_done(weft__sub *s) {
  if (s->task) return weft__load(&s->task->done, ACQUIRE) & WEFT__DL_ENDED; /* acquire: pairs with the release setting DONE or FINISHING */
  return weft_future_done(s->future);
}

int weft__sub_result(weft__sub *s, void **value) {
  if (s->task) {
    if (value) *value = NULL;
    /* acquire: pairs with the release that set DONE or FINISHING: status is final */
    return (weft__load(&s->task->done, ACQUIRE) & WEFT__DL_ENDED) ? s->task->status : -EBUSY;
  }
  return weft_future_result(s->future, value);
}

void weft__collector_end(weft__collector *c) {
  for (size_t i = 0; i < c->n; i++) {
    weft__sub *s = &c->subs[i];
    if (s->linked) {
      bool was = s->task ? weft__task_unsubscribe(s->task, &s->node) : weft__future_unsubscribe(s->future, &s->node);
      if (was) collector_unref(c); /* its callback will never run: drop its reference (never the last: ours remains) */
    }
    if (s->task) weft__task_unref(s->task);
  }
  collector_unref(c);
}

/* ------------------------------------------------------------ the public awaitable calls */

bool weft_aw_done(weft_awaitable a) {
  if (a.kind == WEFT_AW_TASK) return weft_task_done(a.task);
  if (a.kind == WEFT_AW_FUTURE && a.future) return weft_future_done(a.future);
  return false;
}

int weft_aw_result(weft_awaitable a, void **value) {
  if (a.kind == WEFT_AW_TASK) {
    if (value) *value = NULL;
    return weft_task_status(a.task);
  }
  if (a.kind == WEFT_AW_FUTURE && a.future) return weft_future_result(a.future, value);
  return -EINVAL;
}

int weft_aw_cancel(weft_awaitable a) {
  if (a.kind == WEFT_AW_TASK) return weft_cancel(a.task);
  if (a.kind == WEFT_AW_FUTURE && a.future) return weft_future_cancel(a.future);
  return -EINVAL;
}

int weft_await(weft_awaitable a, void **value) {
  if (a.kind == WEFT_AW_TASK) {
    if (value) *value = NULL;
    return weft_join(a.task);
  }
  if (a.kind == WEFT_AW_FUTURE && a.future) return weft_future_await(a.future, value);
  return -EINVAL;
}
