/* core/callback.c: call_soon, call_later, call_at.
 *
 * A callback is a small allocated handle {fn, arg, state, refs} and an entry
 * {deadline, handle, FIFO seq, CALLBACK} in a worker's timer heap; the
 * worker runs it from weft__worker_run_timers, in its scheduler context
 * (w->current == NULL: suspending calls there return -EINVAL; spawning,
 * cancelling, setting events and futures work). call_soon is an entry due
 * at once (deadline 0); entries due together run in queueing order (the
 * per-worker seq breaks deadline ties, core/timer.h).
 *
 * weft_runtime_call_at (from any thread) submits a tiny task whose only job
 * is to insert the entry on the worker it runs on.
 *
 * weft_runtime_call_soon is asyncio's call_soon_threadsafe: its callbacks
 * run one at a time in the order of the calls, from whatever threads. They
 * wait in the runtime's FIFO (rt->soon_head/tail, under soon_lock), and one
 * DRAIN at a time runs them: `soon_draining` is set by the call that finds
 * no drain scheduled, which submits a task that inserts a drain callback on
 * its worker. The drain takes the list, runs up to DRAIN_BATCH callbacks
 * in order, puts the rest back at the front, and, when the list is not
 * empty then (the rest, or calls made meanwhile, a callback's own
 * included), queues itself again (a call_soon on the same worker, so that
 * tasks there run between batches); it clears soon_draining only under the
 * lock with the list empty. So no two drains exist at once, every callback
 * has run before a later one starts, and a call made after another's
 * return runs after it (it is appended behind it). Before (an entry per call, inserted by a task on
 * whichever worker took it): callbacks of one thread ran out of order and
 * side by side on two workers (test_callback's order tests).
 * The FIFO holds the entry's reference; a drain or a submission that
 * finds no memory drops the list (DROPPED: cancel says 1, weft/task.h),
 * and so does shutdown (weft__callback_soon_fini).
 *
 * state: PENDING --fire: CAS--> RUNNING --> RAN;  PENDING --cancel: CAS--> CANCELLED;
 * PENDING --dropped unqueued (runtime variant): CAS--> DROPPED --cancel: CAS--> CANCELLED.
 * Exactly one of fire and cancel wins the CAS, so cancel() returning 1
 * means the callback never runs. refs: the user's handle (when asked for)
 * + the heap entry (or the submitting task, until it inserts the entry); the
 * last release frees. Compaction drops a cancelled entry (and its
 * reference); teardown drops every remaining entry without running it.
 */
#include <errno.h>

#include <weft/task.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/taskext.h"
#include "core/worker.h"

enum { PENDING = 0, RUNNING = 1, RAN = 2, CANCELLED = 3, DROPPED = 4 /* never queued: it will not run */ };

struct weft_callback {
  weft_callback_fn fn;   /* immutable */
  void *arg;             /* immutable */
  int64_t deadline;      /* immutable */
  _Atomic int state;     /* CAS: fire vs cancel */
  _Atomic int refs;      /* acq_rel decrements: the last frees */
  weft__ctx *ctx;        /* immutable: the scheduler's task-local values then (a reference), NULL = none */
  weft_callback *next;   /* in the runtime's call_soon FIFO: under rt->soon_lock */
};

enum { DRAIN_BATCH = 256 }; /* callbacks a drain runs before tasks get a turn */

static void cb_unref(weft_callback *h) {
  /* acq_rel: the last holder sees every other holder's uses before freeing */
  if (weft__fetch_sub(&h->refs, 1, ACQ_REL) == 1) {
    weft__ctx_unref(h->ctx);
    weft__free(h, sizeof *h);
  }
}

static weft_callback *cb_new(weft_callback_fn fn, void *arg, int64_t deadline, bool handle) {
  weft_callback *h = weft__alloc(sizeof *h);
  if (!h) return NULL;
  h->fn = fn;
  h->arg = arg;
  /* a deadline before 0 is as due as call_soon's 0: queued behind the
   * call_soons before it, as the doc's "due at the same time" says (it
   * sorted ahead of them) */
  h->deadline = deadline < 0 ? 0 : deadline;
  weft__store(&h->state, PENDING, RELAXED);
  weft__store(&h->refs, handle ? 2 : 1, RELAXED); /* relaxed: published by the heap insert / the spawn */
  /* the values of whoever schedules it now (asyncio's call_soon runs it in
   * a copy of the current context): the calling task's; outside a task (or
   * in a done callback), the values the thread runs with (a callback's own,
   * or a weft_to_thread function's caller's); a new reference, or NULL */
  h->ctx = weft__ctx_capture();
  return h;
}

/* OWNER: put h's entry (the reference passes to the heap). */
static int insert(weft__worker *w, weft_callback *h) {
  /* seq: a per-worker counter, so that entries due together run FIFO; kept
   * in the heap itself (never reset; it wraps, and the heap compares it in
   * serial order: core/timer.h) */
  static _Thread_local uint32_t fifo;
  weft__timer_entry e = {.deadline = h->deadline, .task = h, .seq = ++fifo, .kind = WEFT__TIMER_CALLBACK};
  return weft__timer_insert(&w->timers, e);
}

int weft_call_at(int64_t deadline, weft_callback_fn fn, void *arg, weft_callback **out) {
  weft__worker *w = weft__worker_self();
  if (!w || !fn) return -EINVAL;
  weft_callback *h = cb_new(fn, arg, deadline, out != NULL);
  if (!h) return -ENOMEM;
  if (insert(w, h) < 0) {
    weft__ctx_unref(h->ctx);
    weft__free(h, sizeof *h);
    return -ENOMEM;
  }
  if (out) *out = h;
  return 0;
}

int weft_call_soon(weft_callback_fn fn, void *arg, weft_callback **out) { return weft_call_at(0, fn, arg, out); }

int weft_call_later(int64_t delay_ns, weft_callback_fn fn, void *arg, weft_callback **out) {
  if (delay_ns < 0) return -EINVAL;
  int64_t now = weft_now_ns();
  return weft_call_at(delay_ns > INT64_MAX - now ? INT64_MAX : now + delay_ns, fn, arg, out);
}

/* Mark a callback that was never queued (a cancel meanwhile stays CANCELLED).
 * acq_rel: pairs with cancel's CAS. */
static void drop(weft_callback *h) {
  int expect = PENDING;
  (void)weft__cas(&h->state, &expect, DROPPED, ACQ_REL, ACQUIRE);
}

/* The submitted task of weft_runtime_call_*: insert the entry here. It
 * never suspends, so it cannot be cancelled once it runs: it ends with 0 or
 * -ENOMEM when it ran, and with -ECANCELED only when it never ran. */
static int submit_task(void *arg) {
  weft_callback *h = arg;
  if (insert(weft__worker_self(), h) < 0) {
    drop(h); /* out of memory: it will not run */
    cb_unref(h);
    return -ENOMEM;
  }
  return 0;
}

/* The submitted task's end: if it never ran (cancelled before it started:
 * the runtime shutting down), the heap's reference is dropped here. When it
 * ran, h is not touched: the entry it inserted may have fired and freed h
 * already (ThreadSanitizer caught an earlier version reading a flag in h
 * here). t is valid: the done callback's, or our own handle's. */
static void submit_done(weft_task t, void *arg) {
  weft_callback *h = arg;
  if (weft_task_status(t) == -ECANCELED) { /* never ran (see submit_task) */
    drop(h);
    cb_unref(h);
  }
}

int weft_runtime_call_at(weft_runtime *rt, int64_t deadline, weft_callback_fn fn, void *arg, weft_callback **out) {
  if (!rt || !fn) return -EINVAL;
  weft_callback *h = cb_new(fn, arg, deadline, out != NULL);
  if (!h) return -ENOMEM;
  /* the end-of-task node first, so that nothing can fail once submitted
   * (the task's end frees it: keep = false) */
  weft__done_node *node = weft__zalloc(sizeof *node);
  if (!node) {
    weft__ctx_unref(h->ctx);
    weft__free(h, sizeof *h);
    return -ENOMEM;
  }
  node->cb = submit_done;
  node->cb_arg = h;
  /* counted as a submission in flight until we are done with the task's
   * record: a shutdown racing with this call waits for us, instead of
   * unmapping the record between the submission and the subscribe and
   * release below (a review found that use after free). seq_cst: the
   * Dekker pair with shutdown's store of stopping, as in weft_runtime_submit */
  weft__fetch_add(&rt->submitting, 1, SEQ_CST);
  weft_task t;
  int rc = weft_runtime_submit(rt, submit_task, h, &t);
  if (rc < 0) {
    weft__fetch_sub(&rt->submitting, 1, RELEASE); /* release: as in weft_runtime_submit */
    weft__free(node, sizeof *node);
    weft__ctx_unref(h->ctx);
    weft__free(h, sizeof *h);
    return rc;
  }
  if (out) *out = h; /* (before the task may end: submit_done may drop the heap's reference, never the user's) */
  if (weft__task_subscribe((weft__task *)t.rec, node)) { /* our handle keeps the record */
    /* t is done already: submit_done touches h only if t never ran */
    weft__free(node, sizeof *node);
    submit_done(t, h);
  }
  weft_task_release(t);
  /* release: pairs with shutdown's load: our uses of the record come first */
  weft__fetch_sub(&rt->submitting, 1, RELEASE);
  return 0;
}

/* ---------------------------------------------------------- runtime_call_soon's FIFO */

/* Drop a detached chain of FIFO callbacks: none of them will run. */
static void drop_chain(weft_callback *h) {
  while (h) {
    weft_callback *next = h->next;
    drop(h);
    cb_unref(h);
    h = next;
  }
}

/* The drain ends (nothing left, or no memory): clear soon_draining and take
 * what is left (NULL when the list is empty). */
static weft_callback *drain_end(weft__runtime *rt) {
  weft__spin_lock(&rt->soon_lock);
  weft_callback *left = rt->soon_head;
  rt->soon_head = rt->soon_tail = NULL;
  rt->soon_draining = false;
  weft__spin_unlock(&rt->soon_lock);
  return left;
}

/* The drain (a callback: scheduler context, owner). It alone pops the FIFO
 * while soon_draining is set, so the callbacks run in order, one at a time. */
static void drain_cb(void *arg) {
  weft__runtime *rt = arg;
  for (;;) {
    weft__spin_lock(&rt->soon_lock);
    weft_callback *chain = rt->soon_head;
    if (!chain) { /* empty: the drain ends; the next call schedules another */
      rt->soon_draining = false;
      weft__spin_unlock(&rt->soon_lock);
      return;
    }
    weft_callback *chain_tail = rt->soon_tail;
    rt->soon_head = rt->soon_tail = NULL;
    weft__spin_unlock(&rt->soon_lock);
    for (int n = 0; chain && n < DRAIN_BATCH; n++) {
      weft_callback *h = chain;
      chain = h->next;
      weft__callback_fire(h); /* runs it unless cancelled; drops the FIFO's reference */
    }
    weft__spin_lock(&rt->soon_lock);
    if (chain) { /* a full batch: put the rest back in front of newer calls */
      chain_tail->next = rt->soon_head; /* (no walk: a backlog of n would cost n^2/DRAIN_BATCH) */
      if (!rt->soon_head) rt->soon_tail = chain_tail;
      rt->soon_head = chain;
    }
    if (!rt->soon_head) { /* all run, none came meanwhile: the drain ends */
      rt->soon_draining = false;
      weft__spin_unlock(&rt->soon_lock);
      return;
    }
    weft__spin_unlock(&rt->soon_lock);
    /* the rest, or calls made meanwhile, run at the next turn: the worker's
     * tasks run first (taking them now kept a callback that calls
     * weft_runtime_call_soon again running forever, as asyncio's loop does
     * not: what a callback queues runs at the next iteration) */
    if (weft_call_soon(drain_cb, rt, NULL) == 0) return;
    /* no memory for the next turn: go on draining now */
  }
}

/* The task a call that starts a drain submits: queue the drain on the
 * worker it runs on. It does not suspend: it ends with 0 or -ENOMEM when it
 * ran, -ECANCELED only when shutdown cancelled it before it ran (then the
 * FIFO is dropped by weft__callback_soon_fini). */
static int drain_start_task(void *arg) {
  weft__runtime *rt = arg;
  if (weft_call_soon(drain_cb, rt, NULL) == 0) return 0;
  drop_chain(drain_end(rt)); /* no memory: nothing can run them */
  return -ENOMEM;
}

int weft_runtime_call_soon(weft_runtime *rt, weft_callback_fn fn, void *arg, weft_callback **out) {
  if (!rt || !fn) return -EINVAL;
  weft_callback *h = cb_new(fn, arg, 0, out != NULL);
  if (!h) return -ENOMEM;
  h->next = NULL;
  /* seq_cst, the increment and the load: the Dekker pair with shutdown's
   * store of stopping and its load of submitting (as in
   * weft_runtime_submit): either this call sees stopping, or shutdown waits
   * until it has appended (and submitted the drain), so that the workers
   * are still there to run it or weft__callback_soon_fini drops it */
  weft__fetch_add(&rt->submitting, 1, SEQ_CST);
  if (weft__load(&rt->stopping, SEQ_CST)) {
    weft__fetch_sub(&rt->submitting, 1, RELEASE); /* release: as below */
    weft__ctx_unref(h->ctx);
    weft__free(h, sizeof *h);
    return -ESHUTDOWN;
  }
  weft__spin_lock(&rt->soon_lock);
  if (rt->soon_tail)
    rt->soon_tail->next = h;
  else
    rt->soon_head = h;
  rt->soon_tail = h;
  bool start = !rt->soon_draining;
  rt->soon_draining = true;
  weft__spin_unlock(&rt->soon_lock);
  int rc = 0;
  if (out) *out = h; /* the handle's reference (cb_new counted it) */
  if (start && (rc = weft__spawn_external(rt, drain_start_task, rt, NULL)) < 0) {
    /* no memory for the drain: nothing can run the list, this call's
     * callback included (the others returned 0: they are DROPPED) */
    drop_chain(drain_end(rt));
    if (out) {
      *out = NULL;
      cb_unref(h);
    }
  }
  /* release: pairs with shutdown's load: the drain's task is counted */
  weft__fetch_sub(&rt->submitting, 1, RELEASE);
  return rc;
}

void weft__callback_soon_fini(weft__runtime *rt) { drop_chain(drain_end(rt)); }

int weft_callback_cancel(weft_callback *h) {
  if (!h) return -EINVAL;
  int expect = PENDING;
  /* acq_rel: pairs with fire's CAS: exactly one wins */
  if (weft__cas(&h->state, &expect, CANCELLED, ACQ_REL, ACQUIRE)) return 1;
  /* dropped without running (its submission never ran, or had no memory):
   * it will not run, and this is the first cancel */
  return expect == DROPPED && weft__cas(&h->state, &expect, CANCELLED, ACQ_REL, ACQUIRE) ? 1 : 0;
}

void weft_callback_release(weft_callback *h) {
  if (h) cb_unref(h);
}

void weft__callback_fire(void *handle) {
  weft_callback *h = handle;
  int expect = PENDING;
  /* acq_rel: pairs with cancel's CAS */
  if (weft__cas(&h->state, &expect, RUNNING, ACQ_REL, ACQUIRE)) {
    /* it runs with its scheduler's values: weft_taskvar_get reads them
     * outside a task, and a task it spawns starts with them */
    weft__ctx *saved = weft__thread_ctx;
    weft__thread_ctx = h->ctx;
    /* debug mode: the monitor times each callback as a task (a drain's
     * callbacks one by one: the drain is itself one), as asyncio's
     * slow_callback_duration does; relaxed: only this worker stores it */
    weft__worker *w = weft__worker_self();
    weft__task *prev = w && w->rt->debug ? weft__load(&w->running, RELAXED) : NULL;
    if (weft__unlikely(w && w->rt->debug)) weft__debug_set_running(w, WEFT__RUNNING_CALLBACK);
    h->fn(h->arg);
    if (weft__unlikely(w && w->rt->debug)) weft__debug_set_running(w, prev);
    weft__thread_ctx = saved;
    weft__store(&h->state, RAN, RELEASE); /* release: a report only */
  }
  cb_unref(h);
}

bool weft__callback_entry_live(void *handle) {
  weft_callback *h = handle;
  if (weft__load(&h->state, ACQUIRE) != CANCELLED) return true; /* acquire: pairs with cancel's CAS */
  cb_unref(h); /* compaction drops the entry: its reference goes with it */
  return false;
}

void weft__callback_drop_entries(weft__timer_heap *heap) {
  for (size_t i = 0; i < heap->len; i++)
    if (heap->v[i].kind == WEFT__TIMER_CALLBACK) cb_unref(heap->v[i].task);
  heap->len = 0;
}
