/* core/task.c: tasks: spawn, join, cancel, handles, names, done callbacks,
 * listings, sleeping, yielding, pinning, and the wait protocol of task.h.
 *
 * DONE LIST. A task's joiners and done callbacks hang on `done_list`,
 * guarded by the LOCKED bit of the `done` word (a spinlock held for a few
 * instructions, never across a wake or a callback). Ending:
 *   1. status is written, then DONE is set with a release CAS: from 0
 *      directly when nobody waits (the common case: one CAS), else under the
 *      lock, detaching the list;
 *   2. the detached nodes are processed in batches: under the lock each node
 *      is unlinked and its {waiter, seq} copied; after unlocking the waiters
 *      are woken and the callbacks run. Nodes live on the joiners' stacks, so
 *      nothing touches a node after the lock that unlinked it is released.
 * A joiner woken by a cancellation re-takes the lock: if its node is still
 * linked it removes it; if not, the task ended at that moment and the joiner
 * takes the result (and keeps its cancellation pending, as asyncio does when
 * the awaited future was already done).
 *
 * JOIN AND CANCELLATION (asyncio's `await task`): a joiner that is
 * cancelled forwards the cancellation to the task it awaits and goes on
 * waiting; it returns that task's outcome. weft_shield (later) is the way to
 * wait without forwarding.
 *
 * INLINE JOINS. Joining a task that has not started yet and still sits on
 * the joiner's worker's spawn stack (owner-only, core/worker.h) takes it off
 * and runs it right there, on the joiner's stack and thread, as a plain
 * call, when the joiner's stack has room: no stack to fault in, no switch,
 * and fork-join code (fib) runs depth-first like the recursion it is.
 * "Room" is the child's whole stack: its stack_size, or the default, which
 * it would have had on its own stack (a child given only what was left, at
 * least 16 KiB before, overflowed where it would have run fine: a review
 * found it). Pooled stacks are twice the default size (core/stack.h,
 * slot_size) so that a joiner that used no more than its own default still
 * has a default's room for its child: fib keeps its inline joins. Only
 * the owner touches the spawn stack, so taking a task off it is the whole
 * claim: no other queue holds an entry for it. (Claiming tasks from the
 * shared queues too was tried: it leaves a stale entry behind, and a task
 * with a stale entry in the intrusive inject queue can be queued there a
 * second time when it wakes, which breaks the list.) While the child runs
 * inline, the joiner's `inline_child` names it, so that cancelling the
 * joiner forwards to it as a cancelled join would.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <weft/core.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/taskext.h"
#include "core/worker.h"

/* ------------------------------------------------------------ references */

#define REF_GEN(r) ((uint32_t)((r) >> 32))
#define REF_CNT(r) ((uint32_t)(r))

int weft__task_ref(weft_task h, weft__task **out) {
  weft__task *t = (weft__task *)h.rec;
  if (!t) return -EINVAL;
  uint64_t r = weft__load(&t->ref, RELAXED); /* relaxed: the CAS below validates it */
  do {
    if (REF_GEN(r) != (uint32_t)h.gen || REF_CNT(r) == 0) return -ESRCH;
    /* acquire: pairs with the release of the store that initialised the
     * record at spawn, so the fields set at spawn are visible here */
  } while (!weft__cas_weak(&t->ref, &r, r + 1, ACQUIRE, RELAXED));
  *out = t;
  return 0;
}

void weft__task_unref(weft__task *t) {
  uint64_t r = weft__load(&t->ref, RELAXED), n; /* relaxed: the CAS below validates it */
  do {
    n = REF_CNT(r) == 1 ? ((uint64_t)(REF_GEN(r) + 1) << 32) : r - 1;
    /* acq_rel: release orders this holder's use of the record before the
     * recycle; the last holder's acquire sees every other holder's uses */
  } while (!weft__cas_weak(&t->ref, &r, n, ACQ_REL, RELAXED));
  if (REF_CNT(r) == 1) weft__task_recycle(t);
}

int weft_task_release(weft_task h) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  /* The handle's reference is dropped once: a second release of the same
   * handle finds the flag clear (-ESRCH) instead of dropping a reference
   * that belongs to someone else (the running task, a stale queue entry).
   * acq_rel: orders this holder's uses before the recycle, as unref. */
  bool held = weft__xchg(&t->handle_held, 0, ACQ_REL);
  if (held) weft__task_unref(t);
  weft__task_unref(t);
  return held ? 0 : -ESRCH;
}

/* ------------------------------------------------------------ the wait protocol */

weft__task *weft__task_self(void) {
  weft__worker *w = weft__worker_self();
  return w ? w->current : NULL;
}

void weft__cancel_consume(weft__task *t) {
  /* relaxed: the flag carries no data; the count is read separately */
  weft__store(&t->cancel_pending, 0, RELAXED);
}

int64_t weft__wait_prepare(bool cancellable) {
  weft__task *t = weft__task_self();
  /* Its own timeout scopes that are due expire first, as at a yield or an
   * inline join: asyncio runs an expiry scheduled with call_soon (a past
   * deadline) before the wakeup of any await that suspends after it. The
   * timer pass alone came too late: a worker runs its local tasks first,
   * so timeout(0) around an await of a runnable task (or of a future it
   * sets) got the result. Only a task that has an ext pays; the ext lock
   * is a leaf and the cancel of a running task wakes nothing, so callers
   * may hold their wait site's spinlock. relaxed: ext is set by this task
   * itself or by its spawner before publication. */
  if (weft__unlikely(weft__load(&t->ext, RELAXED) != NULL)) weft__timeout_expire_due(t);
  uint64_t w = weft__load(&t->ws, RELAXED); /* RUNNING: only this task writes ws now */
  uint32_t seq = WEFT__WS_SEQ(w) + 1;
  cancellable = cancellable && t->shield_depth == 0;
  /* seq_cst: the store of WAITING and the load of cancel_pending below form
   * one side of a Dekker pair with weft_cancel's store of cancel_pending and
   * load of ws (see task.h): at least one of the two sides sees the other. */
  weft__store(&t->ws, WEFT__WS_MAKE(seq, 0, cancellable, WEFT__TS_WAITING), SEQ_CST);
  weft__waiting_on(t, WEFT__WAITING_OTHER); /* the wait site names itself after this */
  if (cancellable && weft__load(&t->cancel_pending, SEQ_CST)) {
    /* Nobody knows this seq but a canceller (the caller registers it only
     * after prepare returns), so the only possible race is a CANCEL wake:
     * overwrite whatever it did. */
    weft__store(&t->ws, WEFT__WS_MAKE(seq, 0, 0, WEFT__TS_RUNNING), RELAXED);
    weft__cancel_consume(t);
    return -ECANCELED;
  }
  return seq;
}

void weft__wait_abandon(void) {
  weft__task *t = weft__task_self();
  uint64_t w = weft__load(&t->ws, RELAXED); /* relaxed: only this task changes seq */
  /* A waker may race: it can only CAS WAITING -> NOTIFIED, which this store
   * overwrites; after it, wakes for this seq find RUNNING and do nothing.
   * release: pairs with nothing in particular; a plain ordering point. */
  weft__store(&t->ws, WEFT__WS_MAKE(WEFT__WS_SEQ(w), 0, 0, WEFT__TS_RUNNING), RELEASE);
}

uint32_t weft__wait_commit(uint32_t seq) {
  weft__worker *w = weft__worker_self();
  weft__task *t = w->current; /* prepare succeeded: we are a task */
  weft__switch_out_from(w, t, WEFT__INTENT_PARK);
  /* Resumed (maybe on another worker): the scheduler copied the reason. */
  uint32_t reason = t->wake_reason;
  (void)seq;
  if (reason == WEFT__WAKE_CANCEL) weft__cancel_consume(t);
  return reason;
}

/* The CAS half of a wake: 0 lost, 1 won and the task is still switching
 * out (NOTIFIED: its scheduler resumes it), 2 won and the caller must
 * schedule it (RUNNABLE). */
static int wake_cas(weft__task *t, uint32_t seq, uint32_t reason) {
  /* acquire: pairs with the task's seq_cst store of WAITING in prepare, and
   * with the scheduler's release CAS to PARKED (the task's stack is then
   * completely switched out and may be resumed elsewhere) */
  uint64_t w = weft__load(&t->ws, ACQUIRE);
  for (;;) {
    if (WEFT__WS_SEQ(w) != seq) return 0;
    uint32_t st = WEFT__WS_STATE(w);
    if (st != WEFT__TS_WAITING && st != WEFT__TS_PARKED) return 0;
    if (reason == WEFT__WAKE_CANCEL && !WEFT__WS_CANCELLABLE(w)) return 0;
    uint32_t next = st == WEFT__TS_WAITING ? WEFT__TS_NOTIFIED : WEFT__TS_RUNNABLE;
    /* acq_rel: release publishes what the waker wrote for the task (an I/O
     * result, a queue item) to whoever resumes it; acquire as above */
    if (weft__cas(&t->ws, &w, WEFT__WS_MAKE(seq, reason, 0, next), ACQ_REL, ACQUIRE))
      return next == WEFT__TS_RUNNABLE ? 2 : 1;
  }
}

bool weft__wake(weft__task *t, uint32_t seq, uint32_t reason) {
  int won = wake_cas(t, seq, reason);
  if (won == 2) weft__schedule(t, true);
  return won != 0;
}

bool weft__wake_unpinning(weft__task *t, uint32_t seq, bool *unpinned) {
  int won = wake_cas(t, seq, WEFT__WAKE_NORMAL);
  if (won == 2) {
    if (t->pin_count == 1) {
      /* t is switched out (PARKED, now RUNNABLE) and not queued yet: its
       * pin fields, which only t itself changes while it runs, are ours
       * until the schedule below queues it (the queue's release publishes
       * them to whoever resumes it). release: as in weft_unpin. */
      t->pin_count = 0;
      weft__store(&t->pinned, 0, RELEASE);
      *unpinned = true;
    }
    weft__schedule(t, true);
  }
  return won != 0;
}

void weft__wake_many(const weft__wakeup_pair *w, size_t n) {
  weft__task *runnable[64];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (wake_cas(w[i].task, w[i].seq, WEFT__WAKE_NORMAL) != 2) continue;
    runnable[k++] = w[i].task;
    if (k == sizeof runnable / sizeof runnable[0]) {
      weft__schedule_many(runnable, k);
      k = 0;
    }
  }
  if (k) weft__schedule_many(runnable, k);
}

int64_t weft__wait_prepare_deadline(bool cancellable, int64_t deadline) {
  weft__worker *w = weft__worker_self();
  int64_t seq = weft__wait_prepare(cancellable);
  if (seq < 0) return seq;
  weft__timer_entry e = {.deadline = deadline, .task = w->current, .seq = (uint32_t)seq, .kind = 0};
  int rc = weft__timer_insert(&w->timers, e);
  if (rc < 0) {
    weft__wait_abandon();
    return rc;
  }
  return seq;
}

/* ------------------------------------------------------------ spawning */

static int check_stack_size(size_t sz) {
  if (sz == 0) return 0;
  if (sz < 16384 || sz > ((size_t)1 << 30)) return -EINVAL;
  return 0;
}

/* A name is 4 words: a reader that met a store between its words got a
 * name that nobody set (the head of the new one and the tail of the old).
 * name_seq is a seqlock over them: odd while one is stored. */
static void name_store(weft__task *t, const char *name, bool published) {
  uint64_t words[4] = {0, 0, 0, 0};
  if (name) {
    size_t n = strnlen(name, 31);
    memcpy(words, name, n);
  }
  if (!published) { /* at spawn: no reader holds the record (a ref fails until spawn ends) */
    for (int i = 0; i < 4; i++) weft__store(&t->name[i], words[i], RELAXED); /* relaxed: published with the record */
    return;
  }
  /* relaxed CAS to odd, then a release fence: pairs with name_load's
   * acquire fence, so that a reader that loaded any of the words below
   * then sees name_seq odd or moved on (another writer waits its turn) */
  uint32_t seq = weft__load(&t->name_seq, RELAXED);
  for (;;) {
    if (!(seq & 1) && weft__cas(&t->name_seq, &seq, seq + 1, RELAXED, RELAXED)) break;
    if (seq & 1) {
      weft__cpu_relax();
      seq = weft__load(&t->name_seq, RELAXED);
    }
  }
  weft__fence(RELEASE);
  for (int i = 0; i < 4; i++) weft__store(&t->name[i], words[i], RELAXED); /* relaxed: ordered by the fences */
  /* release: pairs with name_load's acquire of name_seq: a reader that sees
   * it even again sees every word */
  weft__store(&t->name_seq, seq + 2, RELEASE);
}

static void name_load(weft__task *t, char out[32]) {
  uint64_t words[4];
  for (;;) {
    /* acquire: pairs with name_store's release of the even value */
    uint32_t seq = weft__load(&t->name_seq, ACQUIRE);
    if (seq & 1) {
      weft__cpu_relax();
      continue;
    }
    for (int i = 0; i < 4; i++) words[i] = weft__load(&t->name[i], RELAXED); /* relaxed: ordered by the fences */
    /* acquire: pairs with name_store's release fence: a word stored after
     * the CAS to odd makes name_seq read odd or later here */
    weft__fence(ACQUIRE);
    if (weft__load(&t->name_seq, RELAXED) == seq) break; /* relaxed: ordered by the fence above */
  }
  memcpy(out, words, 32);
  out[31] = 0;
  if (out[0] == 0) snprintf(out, 32, "task-%llu", (unsigned long long)weft__load(&t->id, RELAXED));
}

/* Fill a fresh record (from a free list) for a new task. The record reaches
 * other threads through the run queue (release push) or the handle. */
static void task_init(weft__task *t, weft__runtime *rt, weft_fn fn, void *arg, const weft_spawn_opts *o,
                      uint64_t id) {
  t->fn = fn;
  t->arg = arg;
  t->rt = rt;
  t->stack = NULL;
  t->status = 0;
  t->done_list = t->done_tail = NULL;
  t->wake_reason = 0;
  t->started = 0;
  t->detached = o && o->detached;
  t->pin_count = 0;
  t->pin_worker = -1;
  t->shield_depth = 0;
  t->stack_size = o ? (uint32_t)o->stack_size : 0; /* checked: at most 1 GiB */
  /* relaxed, all of them: the record is published to other threads by the
   * release store of ref below (handle holders) and by the run queue's
   * release push (workers) */
  weft__store(&t->pinned, 0, RELAXED);
  weft__store(&t->cancelling, 0, RELAXED);
  weft__store(&t->cancel_pending, 0, RELAXED);
  weft__store(&t->done, 0, RELAXED);
  weft__store(&t->last_worker, -1, RELAXED);
  weft__store(&t->id, id, RELAXED);
  name_store(t, o ? o->name : NULL, false);
  uint64_t w = weft__load(&t->ws, RELAXED); /* keep seq: stale wakes must stay stale */
  weft__store(&t->ws, WEFT__WS_MAKE(WEFT__WS_SEQ(w), 0, 0, WEFT__TS_FRESH), RELAXED);
  weft__store(&t->inline_child, NULL, RELAXED);
  uint64_t r = weft__load(&t->ref, RELAXED); /* the generation was bumped at recycle */
  weft__store(&t->alive, 1, RELAXED);
  weft__store(&t->handle_held, !t->detached, RELAXED);
  /* release: pairs with the acquire CAS in weft__task_ref: a handle holder
   * that validates this generation sees the fields above */
  weft__store(&t->ref, ((uint64_t)REF_GEN(r) << 32) | (t->detached ? 1u : 2u), RELEASE);
}

/* pin_to >= 0: the task starts pinned to that worker (weft__spawn_pinned). */
static weft_task spawn_on(weft__runtime *rt, weft__worker *w, weft_fn fn, void *arg, const weft_spawn_opts *o,
                          int pin_to, int *err) {
  if (!fn || (o && check_stack_size(o->stack_size))) {
    *err = EINVAL;
    return WEFT_TASK_NULL;
  }
  weft__task *t = weft__task_alloc(rt, w);
  if (!t) {
    *err = ENOMEM;
    return WEFT_TASK_NULL;
  }
  /* task-local values: the child shares its spawner's map (copy-on-write,
   * core/taskvar.c); its ext is set before the child is published */
  weft__task *parent = w && !weft__thread_ctx_cb ? w->current : NULL; /* (in a done callback: its adder's) */
  weft__task_ext *pe = parent ? weft__ext_peek(parent) : NULL;
  /* outside a task (a callback, a weft_to_thread function): the values the
   * thread runs with (core/taskext.h) */
  weft__ctx *pctx = parent ? (pe ? pe->ctx : NULL) : weft__thread_ctx;
  if (weft__unlikely(pctx != NULL)) {
    weft__task_ext *ce = weft__ext_get(t);
    if (!ce) {
      t->rt = rt;            /* (a freshly carved record has none yet) */
      weft__task_recycle(t); /* never published: straight back to the free list */
      *err = ENOMEM;
      return WEFT_TASK_NULL;
    }
    ce->ctx = weft__ctx_ref(pctx);
  }
  uint64_t id;
  if (w) {
    id = (uint64_t)w->spawned_local * rt->nworkers + (uint64_t)w->id + 1;
    w->spawned_local++;
    /* release: pairs with the acquire in weft__runtime_live (read after the
     * finished counters), so a task counted as finished is counted as spawned */
    weft__store(&w->spawned, w->spawned_local, RELEASE);
  } else {
    /* release: as above */
    id = (uint64_t)weft__fetch_add(&rt->ext_spawned, 1, RELEASE) + 1;
    id = (id << 20) | 0xfffff; /* a different id space from the workers' */
  }
  task_init(t, rt, fn, arg, o, id);
  weft_task h = {(struct weft_task_rec *)t, REF_GEN(weft__load(&t->ref, RELAXED))}; /* relaxed: our own store */
  if (pin_to >= 0) {
    t->pin_count = 1;
    t->pin_worker = pin_to;
    /* release: pairs with the acquire in weft__schedule (is_pinned), which
     * reads pin_worker next; the worker that runs t gets the record through
     * its inbox's release push */
    weft__store(&t->pinned, 1, RELEASE);
    weft__schedule(t, false);
  } else if (w)
    weft__schedule_spawn(w, t);
  else
    weft__schedule(t, false);
  return o && o->detached ? (weft_task){(struct weft_task_rec *)t, h.gen} : h;
}

weft_task weft_spawn_ex(weft_fn fn, void *arg, const weft_spawn_opts *opts) {
  weft__worker *w = weft__worker_self();
  if (!w) {
    weft__debug_misuse("weft_spawn outside a task");
    errno = EINVAL;
    return WEFT_TASK_NULL;
  }
  int err = 0;
  weft_task h = spawn_on(w->rt, w, fn, arg, opts, -1, &err);
  if (weft_task_is_null(h)) errno = err;
  return h;
}

weft_task weft_spawn(weft_fn fn, void *arg) { return weft_spawn_ex(fn, arg, NULL); }

weft_task weft__spawn_pinned(unsigned worker, weft_fn fn, void *arg, const weft_spawn_opts *opts) {
  weft__worker *w = weft__worker_self();
  if (!w || worker >= w->rt->nworkers) {
    errno = EINVAL;
    return WEFT_TASK_NULL;
  }
  int err = 0;
  weft_task h = spawn_on(w->rt, w, fn, arg, opts, (int)worker, &err);
  if (weft_task_is_null(h)) errno = err;
  return h;
}

int weft_spawn_detached(weft_fn fn, void *arg) {
  weft_spawn_opts o = {.detached = true};
  weft__worker *w = weft__worker_self();
  if (!w) return -EINVAL;
  int err = 0;
  weft_task h = spawn_on(w->rt, w, fn, arg, &o, -1, &err);
  return weft_task_is_null(h) ? -err : 0;
}

/* Spawn from any thread (weft_runtime_submit). */
int weft__spawn_external(weft__runtime *rt, weft_fn fn, void *arg, weft_task *out) {
  weft_spawn_opts o = {.detached = out == NULL};
  weft__worker *w = weft__worker_self();
  if (w && w->rt != rt) w = NULL;
  int err = 0;
  weft_task h = spawn_on(rt, w, fn, arg, &o, -1, &err);
  if (weft_task_is_null(h)) return -err;
  if (out) *out = h;
  return 0;
}

/* ------------------------------------------------------------ the done list */

static uint32_t done_lock(weft__task *t) {
  uint32_t d = weft__load(&t->done, RELAXED); /* relaxed: the acquiring CAS below decides */
  for (int spins = 0;; spins++) {
    if (!(d & WEFT__DL_LOCKED)) {
      /* acquire: pairs with the release in done_unlock: the list as the last
       * holder left it */
      if (weft__cas_weak(&t->done, &d, d | WEFT__DL_LOCKED, ACQUIRE, RELAXED)) return d;
      continue;
    }
    weft__cpu_relax();
    if (spins > 64) {
      sched_yield();
      spins = 0;
    }
    d = weft__load(&t->done, RELAXED); /* relaxed: as above */
  }
}

static void done_unlock(weft__task *t, uint32_t flags) {
  /* release: publishes the list (and status, when DONE is among flags) */
  weft__store(&t->done, flags & ~WEFT__DL_LOCKED, RELEASE);
}

static void done_append(weft__task *t, weft__done_node *n) {
  n->next = NULL;
  n->linked = true;
  if (t->done_tail)
    t->done_tail->next = n;
  else
    t->done_list = n;
  t->done_tail = n;
}

static void done_remove(weft__task *t, weft__done_node *n) {
  weft__done_node **pp = &t->done_list, *prev = NULL;
  while (*pp && *pp != n) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  if (!*pp) return;
  *pp = n->next;
  if (t->done_tail == n) t->done_tail = prev;
  n->linked = false;
}

static weft_task handle_of(weft__task *t) {
  /* relaxed: a handle for the caller's own record (running or referenced) */
  return (weft_task){(struct weft_task_rec *)t, REF_GEN(weft__load(&t->ref, RELAXED))};
}

/* The task has returned: publish status, wake joiners, run callbacks. Runs
 * on the task's own stack, before its final switch (its running reference
 * keeps the record alive).
 *
 * Callbacks run in the order they were added, as asyncio's call_soon runs
 * them, even those added while earlier ones run: from the first batch that
 * holds a callback until the list is found empty again the word says
 * FINISHING, not DONE, and weft_task_add_done_callback (and the await
 * layer's subscriptions) append to the list instead of running at once;
 * this loop takes them up. Joiners and status readers treat FINISHING as
 * ended (asyncio: done() is true, and an await returns, before the done
 * callbacks have run). A batch of joiners only, with nothing behind it,
 * publishes DONE at once: the common join costs no extra lock round. */
void weft__task_finish(weft__task *t, int status) {
  if (weft__unlikely(weft__load(&t->ext, RELAXED) != NULL)) weft__ext_task_end(t); /* relaxed: our own */
  t->status = status;
  uint32_t d = 0;
  /* release: publishes status to every reader that acquires DONE */
  if (weft__cas(&t->done, &d, WEFT__DL_DONE, RELEASE, RELAXED)) return;
  d = done_lock(t);
  for (;;) {
    /* Take a batch of nodes: unlink them and copy what is needed. */
    enum { BATCH = 16 };
    weft__task *waiters[BATCH];
    uint32_t seqs[BATCH];
    weft_done_cb cbs[BATCH];
    void *cb_args[BATCH];
    weft__done_node *cb_nodes[BATCH];
    int n = 0;
    bool callbacks = false;
    while (t->done_list && n < BATCH) {
      weft__done_node *node = t->done_list;
      t->done_list = node->next;
      node->linked = false;
      waiters[n] = node->waiter;
      seqs[n] = node->seq;
      cbs[n] = node->cb;
      cb_args[n] = node->cb_arg;
      cb_nodes[n] = node->waiter || node->keep ? NULL : node; /* a kept node is its callback's */
      callbacks |= node->waiter == NULL;
      n++;
    }
    if (!t->done_list) t->done_tail = NULL;
    bool last = !t->done_list && !callbacks;
    /* release (the unlock): publishes status with either flag */
    done_unlock(t, last ? WEFT__DL_DONE : WEFT__DL_FINISHING | (t->done_list ? WEFT__DL_WAITERS : 0));
    for (int i = 0; i < n; i++) {
      if (waiters[i]) {
        weft__wake(waiters[i], seqs[i], WEFT__WAKE_NORMAL);
      } else {
        cbs[i](handle_of(t), cb_args[i]);
        if (cb_nodes[i]) weft__free(cb_nodes[i], sizeof(weft__done_node));
      }
    }
    if (last) break;
    d = done_lock(t);
    if (!t->done_list) {
      done_unlock(t, WEFT__DL_DONE); /* every callback added so far has run */
      break;
    }
  }
  (void)d;
}

/* ------------------------------------------------------------ subscriptions (core/await.c) */

/* While t is FINISHING the node is appended, not reported done: the finisher
 * takes it up behind the callbacks added before it (weft__task_finish). */
int weft__task_subscribe(weft__task *t, weft__done_node *n) {
  uint32_t d = done_lock(t);
  if (d & WEFT__DL_DONE) {
    done_unlock(t, d);
    return 1;
  }
  done_append(t, n);
  done_unlock(t, d | WEFT__DL_WAITERS);
  return 0;
}

bool weft__task_unsubscribe(weft__task *t, weft__done_node *n) {
  uint32_t d = done_lock(t);
  bool was_linked = n->linked;
  if (was_linked) done_remove(t, n);
  done_unlock(t, d | (t->done_list ? WEFT__DL_WAITERS : 0));
  return was_linked;
}

/* ------------------------------------------------------------ join, cancel */

static int cancel_rec(weft__task *t);

#define INLINE_MIN_ROOM (16 * 1024) /* stack the joiner must have left to run a child inline */

/* Run t, not started yet, inline on the calling task's stack (see "inline
 * joins" above). Returns false, having changed nothing, when it may not. */
static bool try_inline(weft__task *self, weft__task *t) {
  weft__worker *w = weft__worker_self();
  if (w->rt->migrate || !self->stack || t->stack_size > w->rt->stacks.default_size) return false;
  char here;
  /* the child may use as much stack as it would get on its own: its
   * stack_size, or the default (core.h), never just INLINE_MIN_ROOM */
  size_t need = t->stack_size ? t->stack_size : w->rt->stacks.default_size;
  if (need < INLINE_MIN_ROOM) need = INLINE_MIN_ROOM;
  if ((size_t)(&here - self->stack->lo) < need) return false;
  uint64_t ws = weft__load(&t->ws, ACQUIRE); /* acquire: pairs with the spawn's release publication */
  if (WEFT__WS_STATE(ws) != WEFT__TS_FRESH) return false;
  /* Only a task still on this worker's spawn stack: nobody else can start
   * it, and no queue keeps an entry for it. */
  if (!weft__spawn_stack_remove(w, t)) return false;
  /* Awaiting a task not done is a suspension in asyncio: the joiner's due
   * timeout scopes expire first, as at a yield (a timeout(0) or
   * wait_for(t, 0) around the join of a fresh task cancels it, below,
   * instead of running it to its result). Only a task that has an ext
   * pays. relaxed: ext is set by this task itself (weft__ext_get). */
  if (weft__unlikely(weft__load(&self->ext, RELAXED) != NULL)) weft__timeout_expire_due(self);
  weft__store(&t->ws, WEFT__WS_MAKE(WEFT__WS_SEQ(ws), 0, 0, WEFT__TS_RUNNING), RELAXED);
  /* The child borrows the joiner's stack and, for the sanitizers, its
   * fiber identity: if it suspends, the scheduler switches this very
   * context out and back in under the child's name. */
  t->started = 1;
  t->stack = self->stack;
  t->fiber = self->fiber;
  weft__store(&t->last_worker, (int8_t)w->id, RELAXED); /* relaxed: for reports */
  /* seq_cst: the Dekker pair with cancel_rec: a request made to the joiner
   * before this point is forwarded here, one made after is forwarded there */
  weft__store(&self->inline_child, t, SEQ_CST);
  if (weft__xchg(&self->cancel_pending, 0, SEQ_CST)) cancel_rec(t); /* t is not done: it takes it */
  w->current = t;
  weft__stack_set_running(t->stack, (const char *)t->name);
  if (weft__unlikely(w->rt->debug)) weft__debug_set_running(w, t);
  int status;
  if (weft__load(&t->cancel_pending, RELAXED)) { /* cancelled before it started: body never runs */
    weft__cancel_consume(t);
    status = -ECANCELED;
  } else {
    status = t->fn(t->arg);
  }
  w = weft__worker_self(); /* the child may have moved to another worker */
  weft__store(&self->inline_child, NULL, SEQ_CST); /* seq_cst: as the store above */
  t->stack = NULL;
  /* still as the child (w->current == t), as a task that ends on its own
   * stack: its done callbacks run in its name, not the joiner's (a
   * taskvar set in one changed the joiner's values) */
  weft__task_finish(t, status);
  w->current = self;
  weft__stack_set_running(self->stack, (const char *)self->name);
  if (weft__unlikely(w->rt->debug)) weft__debug_set_running(w, self);
  w->finished_local++;
  /* release: pairs with the acquire in weft__runtime_live */
  weft__store(&w->finished, w->finished_local, RELEASE);
  weft__task_unref(t); /* the running reference (the joiner holds its own) */
  return true;
}

int weft_join(weft_task h) {
  weft__task *self = weft__task_self();
  if (!self) {
    weft__debug_misuse("weft_join outside a task");
    return -EINVAL;
  }
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) {
    if (rc == -ESRCH) weft__debug_misuse("weft_join on a stale handle");
    return rc;
  }
  if (t == self) {
    weft__task_unref(t);
    weft__debug_misuse("a task joined itself");
    return -EDEADLK;
  }
  bool restore_pending = false;
  if (try_inline(self, t)) goto joined;
  for (;;) {
    /* acquire: pairs with the release that set DONE or FINISHING: status is final */
    if (weft__load(&t->done, ACQUIRE) & WEFT__DL_ENDED) break;
    uint32_t d = done_lock(t);
    if (d & WEFT__DL_ENDED) {
      done_unlock(t, d);
      break;
    }
    int64_t seq = weft__wait_prepare(true);
    if (seq < 0) {
      /* cancelled before waiting: forward it, as asyncio's Task.cancel does
       * to the future its task awaits, and wait on */
      done_unlock(t, d);
      weft_cancel(h);
      continue;
    }
    /* the node lives in the joiner's record (dense, type-stable), not on
     * its stack: see core/waitlist.h */
    weft__done_node *node = &self->join_node;
    *node = (weft__done_node){.waiter = self, .seq = (uint32_t)seq};
    weft__waiting_on(self, WEFT__WAITING_JOIN);
    done_append(t, node);
    done_unlock(t, d | WEFT__DL_WAITERS);
    uint32_t why = weft__wait_commit((uint32_t)seq);
    if (why == WEFT__WAKE_NORMAL) break;
    /* Cancelled while waiting (the request is now delivered). */
    d = done_lock(t);
    bool was_linked = node->linked;
    if (was_linked) done_remove(t, node);
    done_unlock(t, d | (t->done_list ? WEFT__DL_WAITERS : 0));
    if (!was_linked) {
      /* t ended at the same moment and its wake lost to ours: take its
       * result and keep the cancellation for the next suspension */
      restore_pending = true;
      break;
    }
    weft_cancel(h);
  }
joined:;
  int status = t->status;
  weft__task_unref(t);
  /* relaxed: the flag carries no data */
  if (restore_pending) weft__store(&self->cancel_pending, 1, RELAXED);
  return status;
}

/* Take a reference on a record whatever its generation, if it is live. */
static bool ref_live(weft__task *t) {
  uint64_t r = weft__load(&t->ref, RELAXED);
  do {
    if (REF_CNT(r) == 0) return false;
    /* acquire: as in weft__task_ref */
  } while (!weft__cas_weak(&t->ref, &r, r + 1, ACQUIRE, RELAXED));
  return true;
}

/* Cancel the task t (the caller holds a reference). Returns 1 when a
 * request was made, 0 when t is already done.
 *
 * If t runs a joined task inline (inline_child), the request goes to that
 * task instead, as a cancelled join forwards it: the request is stored in
 * t's cancel_pending first and then whoever of this canceller and t's
 * try_inline takes it back (exchange) forwards it, exactly once. The store
 * of cancel_pending and the load of inline_child here, and try_inline's
 * store of inline_child and exchange of cancel_pending, are seq_cst: a
 * Dekker pair, so at least one side sees the other. */
static int cancel_rec(weft__task *t) {
  /* acquire: pairs with the release that set DONE or FINISHING */
  if (weft__load(&t->done, ACQUIRE) & WEFT__DL_ENDED) return 0;
  /* seq_cst: with the store of cancel_pending below, one side of the pair
   * with weft_uncancel's clear of cancel_pending and reload of the count */
  weft__fetch_add(&t->cancelling, 1, SEQ_CST);
  /* seq_cst: Dekker pair with weft__wait_prepare (see task.h), and with
   * try_inline (above) */
  weft__store(&t->cancel_pending, 1, SEQ_CST);
  weft__task *c = weft__load(&t->inline_child, SEQ_CST);
  if (c && ref_live(c)) {
    /* still the same child (our reference keeps it from being recycled),
     * and the request still ours to forward */
    if (weft__load(&t->inline_child, SEQ_CST) == c && weft__xchg(&t->cancel_pending, 0, SEQ_CST)) {
      if (cancel_rec(c)) {
        weft__task_unref(c);
        return 1;
      }
      weft__store(&t->cancel_pending, 1, SEQ_CST); /* the child just ended: the request stays t's */
    }
    weft__task_unref(c);
  }
  uint64_t w = weft__load(&t->ws, SEQ_CST);
  uint32_t st = WEFT__WS_STATE(w);
  if ((st == WEFT__TS_WAITING || st == WEFT__TS_PARKED) && WEFT__WS_CANCELLABLE(w))
    weft__wake(t, WEFT__WS_SEQ(w), WEFT__WAKE_CANCEL);
  return 1;
}

int weft_cancel(weft_task h) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  int result = cancel_rec(t);
  weft__task_unref(t);
  return result;
}

int weft_cancelling(weft_task h) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  int n = weft__load(&t->cancelling, RELAXED); /* relaxed: a count, nothing hangs on it */
  weft__task_unref(t);
  return n;
}

int weft_uncancel(weft_task h) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  int n = weft__load(&t->cancelling, RELAXED); /* relaxed: a count; the CAS validates */
  while (n > 0 && !weft__cas_weak(&t->cancelling, &n, n - 1, RELAXED, RELAXED)) {
  }
  if (n > 0) n--;
  if (n == 0) {
    /* asyncio 3.13: uncancel to 0 drops the request not yet delivered. A
     * cancel made after our decrement must stand, but its store of
     * cancel_pending may come before this clear (it counts first): so
     * reload the count, and when t is the caller (which cannot deliver,
     * nor forward to an inline child, meanwhile) make it pending again.
     * seq_cst: cancel_rec increments and then stores pending, we store and
     * then reload: if our clear overwrote its store, we see its count.
     * (From another thread this cannot be told from a request delivered
     * meanwhile, so a cancel racing with it may still be dropped.) */
    weft__store(&t->cancel_pending, 0, SEQ_CST);
    if (t == weft__task_self() && weft__load(&t->cancelling, SEQ_CST) > 0) weft__store(&t->cancel_pending, 1, SEQ_CST);
  }
  weft__task_unref(t);
  return n;
}

weft_task weft_current(void) {
  weft__task *t = weft__task_self();
  return t ? handle_of(t) : WEFT_TASK_NULL;
}

bool weft_task_done(weft_task h) {
  weft__task *t;
  if (weft__task_ref(h, &t)) return false;
  bool d = weft__load(&t->done, ACQUIRE) & WEFT__DL_ENDED; /* acquire: pairs with the release that set DONE or FINISHING */
  weft__task_unref(t);
  return d;
}

int weft_task_status(weft_task h) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  /* acquire: pairs with the release that set DONE or FINISHING: status is final */
  int s = (weft__load(&t->done, ACQUIRE) & WEFT__DL_ENDED) ? t->status : -EBUSY;
  weft__task_unref(t);
  return s;
}

bool weft_task_cancelled(weft_task h) { return weft_task_status(h) == -ECANCELED; }

int weft_task_set_name(weft_task h, const char *name) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  name_store(t, name, true);
  weft__task_unref(t);
  return 0;
}

int weft_task_get_name(weft_task h, char *buf, size_t len) {
  if (!buf && len) return -EINVAL;
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  char name[32];
  name_load(t, name);
  weft__task_unref(t);
  if (buf && len) snprintf(buf, len, "%s", name);
  return (int)strlen(name);
}

void weft__task_name(weft__task *t, char out[32]) { name_load(t, out); }

/* A weft_task_add_done_callback's node: kept (freed by its trampoline), so
 * that it carries its adder's task-local values, which it runs with
 * (core/taskext.h, DONE CALLBACKS); the record's own join node leaves no
 * room for them in weft__done_node. */
typedef struct user_done_cb {
  weft__done_node node;
  weft_done_cb cb;
  void *arg;
  weft__ctx *ctx; /* a reference, NULL = none */
} user_done_cb;

static void user_done_tramp(weft_task t, void *arg) {
  user_done_cb *u = arg;
  weft__ctx_saved saved = weft__ctx_cb_enter(u->ctx);
  u->cb(t, u->arg);
  weft__ctx_cb_leave(saved);
  weft__ctx_unref(u->ctx);
  weft__free(u, sizeof *u);
}

int weft_task_add_done_callback(weft_task h, weft_done_cb cb, void *arg) {
  if (!cb) return -EINVAL;
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  user_done_cb *u = weft__zalloc(sizeof *u);
  if (!u) {
    weft__task_unref(t);
    return -ENOMEM;
  }
  u->cb = cb;
  u->arg = arg;
  u->ctx = weft__ctx_capture();
  weft__done_node *n = &u->node;
  n->cb = user_done_tramp;
  n->cb_arg = u;
  n->keep = true;
  uint32_t d = done_lock(t);
  if (d & WEFT__DL_DONE) {
    done_unlock(t, d);
    user_done_tramp(h, u);
  } else {
    done_append(t, n);
    done_unlock(t, d | WEFT__DL_WAITERS);
  }
  weft__task_unref(t);
  return 0;
}

int weft_task_remove_done_callback(weft_task h, weft_done_cb cb, void *arg) {
  weft__task *t;
  int rc = weft__task_ref(h, &t);
  if (rc) return rc;
  int removed = 0;
  for (;;) {
    user_done_cb *found = NULL;
    uint32_t d = done_lock(t);
    for (weft__done_node *n = t->done_list; n; n = n->next) {
      user_done_cb *u = n->cb == user_done_tramp ? n->cb_arg : NULL;
      if (u && u->cb == cb && u->arg == arg) {
        found = u;
        break;
      }
    }
    if (found) done_remove(t, &found->node);
    done_unlock(t, (d & ~(uint32_t)WEFT__DL_WAITERS) | (t->done_list ? WEFT__DL_WAITERS : 0));
    if (!found) break;
    weft__ctx_unref(found->ctx);
    weft__free(found, sizeof *found); /* after unlocking: the done lock is a spinlock */
    removed++;
  }
  weft__task_unref(t);
  return removed;
}

/* ------------------------------------------------------------ listing */

static int list_tasks(weft__runtime *rt, weft_task_info *out, size_t n) {
  int count = 0;
  /* acquire: pairs with the release push in the arena: each record's link */
  for (weft__task *t = weft__load(&rt->all_tasks, ACQUIRE); t; t = t->arena_next) {
    if (!weft__load(&t->alive, RELAXED)) continue;
    weft_task h = handle_of(t);
    weft__task *held;
    if (weft__task_ref(h, &held)) continue; /* recycled meanwhile */
    /* acquire: pairs with the release that set DONE or FINISHING */
    if (weft__load(&t->done, ACQUIRE) & WEFT__DL_ENDED) { /* asyncio.all_tasks: not yet finished only */
      weft__task_unref(held);
      continue;
    }
    if ((size_t)count < n) {
      weft_task_info *i = &out[count];
      i->task = h;
      name_load(t, i->name);
      /* acquire: pairs with the release that set DONE; the rest relaxed:
       * a listing is a snapshot for reports */
      uint32_t d = weft__load(&t->done, ACQUIRE);
      uint32_t st = WEFT__WS_STATE(weft__load(&t->ws, RELAXED));
      /* a joiner running its child inline stays RUNNING in its own word:
       * it is suspended in that join (weft_task_waiting_on) */
      bool inline_join = st == WEFT__TS_RUNNING && weft__load(&t->inline_child, RELAXED);
      i->state = (d & WEFT__DL_ENDED)                                   ? WEFT_TASK_DONE
                 : inline_join                                         ? WEFT_TASK_SUSPENDED
                 : (st == WEFT__TS_RUNNING || st == WEFT__TS_WAITING) ? WEFT_TASK_RUNNING
                 : st == WEFT__TS_PARKED                               ? WEFT_TASK_SUSPENDED
                                                                       : WEFT_TASK_RUNNABLE;
      i->worker = weft__load(&t->last_worker, RELAXED);
      i->cancelling = weft__load(&t->cancelling, RELAXED);
      i->waiting_on = i->state != WEFT_TASK_SUSPENDED ? ""
                      : inline_join ? weft__waiting_on_name(WEFT__WAITING_JOIN)
                                    : weft__waiting_on_name(weft__load(&t->waiting_on, RELAXED));
    }
    count++;
    weft__task_unref(held);
  }
  return count;
}

int weft_tasks(weft_task_info *out, size_t n) {
  weft__worker *w = weft__worker_self();
  if (!w || (!out && n)) return -EINVAL;
  return list_tasks(w->rt, out, n);
}

int weft_runtime_tasks(weft_runtime *rt, weft_task_info *out, size_t n) {
  if (!rt || (!out && n)) return -EINVAL;
  return list_tasks(rt, out, n);
}

/* ------------------------------------------------------------ time */

int64_t weft_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* weft_yield, with the time when the caller has just read it (0: not). */
static int yield_at(int64_t now) {
  weft__worker *w = weft__worker_self();
  weft__task *t = w ? w->current : NULL;
  if (!t) {
    weft__debug_misuse("weft_yield outside a task");
    return -EINVAL;
  }
  /* its own timeout scopes that are due expire first, as asyncio runs an
   * expiry scheduled with call_soon before the task's next step (a task
   * that never had a scope has no ext: one load) */
  if (weft__unlikely(weft__load(&t->ext, RELAXED) != NULL)) weft__timeout_expire_due(t);
  /* relaxed: delivery of a request needs no ordering with its data (none) */
  /* relaxed: the request carries no data; a request racing with this check
   * is seen after the switch (or at the next suspension) */
  if (t->shield_depth == 0 && weft__load(&t->cancel_pending, RELAXED)) {
    weft__cancel_consume(t);
    return -ECANCELED;
  }
  weft__worker_yield_timers(w, now); /* due timers fire before the yielder runs again */
  weft__switch_out_from(w, t, WEFT__INTENT_YIELD); /* w: read above, nothing suspended since */
  if (t->shield_depth == 0 && weft__load(&t->cancel_pending, RELAXED)) {
    weft__cancel_consume(t);
    return -ECANCELED;
  }
  return 0;
}

int weft_yield(void) { return yield_at(0); }

/* Sleep until a deadline known to be in the future. */
static int sleep_deadline(int64_t deadline) {
  int64_t seq = weft__wait_prepare_deadline(true, deadline);
  if (seq < 0) return (int)seq;
  weft__waiting_on(weft__task_self(), WEFT__WAITING_SLEEP);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  return why == WEFT__WAKE_CANCEL ? -ECANCELED : 0;
}

int weft_sleep_until(int64_t deadline) {
  weft__task *t = weft__task_self();
  if (!t) {
    weft__debug_misuse("weft_sleep outside a task");
    return -EINVAL;
  }
  int64_t now = weft_now_ns();
  if (deadline <= now) return yield_at(now);
  return sleep_deadline(deadline);
}

int weft_sleep_ns(int64_t ns) {
  if (ns < 0) return -EINVAL;
  if (!weft__task_self()) {
    weft__debug_misuse("weft_sleep outside a task");
    return -EINVAL;
  }
  if (ns == 0) return weft_yield();
  int64_t now = weft_now_ns();
  if (ns > INT64_MAX - now) return -EINVAL;
  return sleep_deadline(now + ns); /* one clock read per sleep */
}

/* ------------------------------------------------------------ pinning */

int weft_pin(void) {
  weft__task *t = weft__task_self();
  if (!t) return -EINVAL;
  if (t->pin_count++ == 0) {
    t->pin_worker = weft__worker_self()->id;
    /* release: pairs with the acquire in weft__schedule: a waker that sees
     * pinned sees pin_worker */
    weft__store(&t->pinned, 1, RELEASE);
  }
  return 0;
}

int weft_unpin(void) {
  weft__task *t = weft__task_self();
  if (!t || t->pin_count == 0) return -EINVAL;
  if (--t->pin_count == 0) weft__store(&t->pinned, 0, RELEASE); /* release: as in weft_pin */
  return 0;
}

int weft_worker_id(void) {
  weft__worker *w = weft__worker_self();
  return w ? w->id : -1;
}

int weft_worker_count(void) {
  weft__worker *w = weft__worker_self();
  return w ? (int)w->rt->nworkers : 0;
}
