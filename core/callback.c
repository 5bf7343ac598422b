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
 * From outside the workers (weft_runtime_call_*) a tiny detached task is
 * submitted whose only job is to insert the entry on the worker it runs on.
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
};

static void cb_unref(weft_callback *h) {
  /* acq_rel: the last holder sees every other holder's uses before freeing */
  if (weft__fetch_sub(&h->refs, 1, ACQ_REL) == 1) {
    weft__ctx_unref(h->ctx);
    weft__free(h, sizeof *h);
  }
}

/* The task-local values of whoever schedules a callback now (asyncio's
 * call_soon runs it in a copy of the current context): the calling task's;
 * outside a task, the values the thread runs with (a callback's own, or a
 * weft_to_thread function's caller's); a new reference, or NULL. */
static weft__ctx *current_ctx(void) {
  weft__task *t = weft__task_self();
  if (!t) return weft__ctx_ref(weft__thread_ctx);
  weft__task_ext *e = weft__ext_peek(t);
  return e ? weft__ctx_ref(e->ctx) : NULL;
}

static weft_callback *cb_new(weft_callback_fn fn, void *arg, int64_t deadline, bool handle) {
  weft_callback *h = weft__alloc(sizeof *h);
  if (!h) return NULL;
  h->fn = fn;
  h->arg = arg;
  h->deadline = deadline;
  weft__store(&h->state, PENDING, RELAXED);
  weft__store(&h->refs, handle ? 2 : 1, RELAXED); /* relaxed: published by the heap insert / the spawn */
  h->ctx = current_ctx();
  return h;
}

/* OWNER: put h's entry (the reference passes to the heap). */
static int insert(weft__worker *w, weft_callback *h) {
  /* seq: a per-worker counter, so that entries due together run FIFO; kept
   * in the heap itself (never reset) */
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

int weft_runtime_call_soon(weft_runtime *rt, weft_callback_fn fn, void *arg, weft_callback **out) {
  return weft_runtime_call_at(rt, 0, fn, arg, out);
}

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
    h->fn(h->arg);
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
