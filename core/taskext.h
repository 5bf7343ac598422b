/* core/taskext.h: the task record's out-of-line state, behind one pointer.
 *
 * The task record is 256 bytes and spawn speed depends on it, so state that
 * few tasks need lives in a weft__task_ext allocated the first time a task
 * needs it (a timeout scope entered, a task-local value set or inherited)
 * and then kept for the record's whole lifetime, across recycling: records
 * are type-stable, and so is their ext. Keeping it means the scope sequence
 * numbers of a record never repeat, so a stale timer entry (of a scope left
 * long ago, even by an earlier incarnation) never matches a live scope. The
 * runtime frees every ext at teardown (weft__task_ext_free_all).
 *
 * Who touches what:
 *  - lock guards `scopes` and the state of every scope on that list: the
 *    task (enter, leave, reschedule) and the timer that expires a scope
 *    (any worker: the entry stays in the heap of the worker where it was
 *    armed, and the task may have moved). A spinlock: held for a few
 *    instructions, never across a wake, a switch or an allocation.
 *  - scope_seq: the task itself, under lock.
 *  - ctx: the task itself; the spawner sets it on a child before the child
 *    is published (the run queue's release push orders it).
 * `ext` itself is written once (release) by whoever creates it: the task
 * itself or its spawner before publication; readers load it with acquire.
 */
#ifndef WEFT_CORE_TASKEXT_H
#define WEFT_CORE_TASKEXT_H

#include <stdint.h>

#include "core/spinlock.h"
#include "core/task.h"

struct weft__scope;
struct weft_runtime;

/* Task-local values: an immutable, reference-counted map (core/taskvar.c).
 * A spawn shares its parent's map (one increment); set() copies it when
 * shared (copy-on-write), as Python's contextvars share a Context. */
typedef struct weft__ctx {
  _Atomic uint32_t refs; /* acq_rel decrements: the last one frees */
  uint32_t n, cap;
  struct {
    uint64_t id;
    void *value;
  } v[];
} weft__ctx;

typedef struct weft__task_ext {
  weft__spinlock lock;
  uint32_t scope_seq;          /* under lock: the last sequence number given to a scope's timer */
  struct weft__scope *scopes;  /* under lock: entered timeout scopes, innermost first */
  weft__ctx *ctx;              /* the task itself: its task-local values, NULL = none */
} weft__task_ext;

static inline weft__task_ext *weft__ext_peek(weft__task *t) {
  return weft__load(&t->ext, ACQUIRE); /* acquire: pairs with the release in weft__ext_get */
}

/* t's ext, created when missing: by t itself, or by t's spawner before t is
 * published. NULL when out of memory. */
weft__task_ext *weft__ext_get(weft__task *t);

/* At the task's end (its own stack): drop its task-local values; scopes
 * still entered are a misuse (reported) and are unlinked. */
void weft__ext_task_end(weft__task *t);

/* Teardown (core/runtime.c): free every record's ext. */
void weft__ext_free_all(struct weft_runtime *rt);

/* core/taskvar.c */
void weft__ctx_unref(weft__ctx *c);
/* The task-local values a thread runs with outside a task: a pool thread
 * running weft_to_thread's function (asyncio.to_thread runs it in a copy of
 * the caller's context; core/blocking.c), and a worker running a callback
 * (the values of whoever scheduled it; core/callback.c); NULL otherwise.
 * Read by weft_taskvar_get outside a task, and by spawn. */
extern _Thread_local weft__ctx *weft__thread_ctx;
static inline weft__ctx *weft__ctx_ref(weft__ctx *c) {
  if (c) weft__fetch_add(&c->refs, 1, RELAXED); /* relaxed: the holder's reference keeps it alive */
  return c;
}

/* DONE CALLBACKS. A task's or a future's done callback runs with the values
 * of whoever added it, as they were then (asyncio's add_done_callback runs
 * it in a copy of the current context), not with those of the task whose
 * stack or thread it runs on (the one that ended, or that completed the
 * future): weft__thread_ctx_cb is set while one runs, and the values are
 * then weft__thread_ctx's, as outside a task (get reads them, set fails,
 * spawn and call_soon take them). capture: the caller's values for a
 * callback it adds now (a new reference, or NULL). */
extern _Thread_local bool weft__thread_ctx_cb;
weft__ctx *weft__ctx_capture(void);
typedef struct weft__ctx_saved {
  weft__ctx *ctx;
  bool cb;
} weft__ctx_saved;
static inline weft__ctx_saved weft__ctx_cb_enter(weft__ctx *c) {
  weft__ctx_saved s = {weft__thread_ctx, weft__thread_ctx_cb};
  weft__thread_ctx = c;
  weft__thread_ctx_cb = true;
  return s;
}
static inline void weft__ctx_cb_leave(weft__ctx_saved s) {
  weft__thread_ctx = s.ctx;
  weft__thread_ctx_cb = s.cb;
}

/* core/timeout.c: a timer entry of kind WEFT__TIMER_SCOPE fired (owner
 * worker, scheduler context), and the compaction test for such an entry. */
void weft__timeout_fire(weft__task *t, uint32_t seq);
/* core/timeout.c: the task itself, before it yields, prepares a wait or
 * joins a fresh task inline: expire its entered scopes whose deadline has
 * passed. */
void weft__timeout_expire_due(weft__task *t);
bool weft__timeout_entry_live(weft__task *t, uint32_t seq);
/* Under the ext lock: whether a timer is expiring one of e's scopes right now. */
bool weft__timeout_any_firing(weft__task_ext *e);

#endif
