/* weft/task.h: asyncio's high-level task API: futures, awaitables, gather,
 * wait, as_completed, wait_for, timeout scopes, shield, task groups,
 * callbacks (call_soon/call_later/call_at), task-local values, and task
 * dumps. Included from weft/weft.h; builds on weft/core.h.
 *
 * Errors (DESIGN.md's table): -ECANCELED the calling task was cancelled;
 * -ETIMEDOUT a timeout expired; -EBUSY the result of something not done yet;
 * -EALREADY a future completed twice; -EINVAL misuse or a bad argument (a
 * negative duration, a call outside a task, a closing task group, a timeout
 * scope left out of order); -ESRCH a stale task handle; -EDEADLK a task
 * awaiting itself; -ENOMEM.
 *
 * Durations are int64_t nanoseconds; WEFT_FOREVER (INT64_MAX) means "no
 * timeout". A negative duration is -EINVAL.
 */
#ifndef WEFT_TASK_H
#define WEFT_TASK_H

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* No timeout / no deadline. */
#define WEFT_FOREVER INT64_MAX

/* ------------------------------------------------------------ futures */

/* asyncio.Future: a one-shot result slot, an int status (>= 0 a value,
 * negative an errno, the role of an exception) and a pointer. Any task may
 * await it; any thread may complete it, once. A plain struct the caller
 * embeds: weft_future_init before use, weft_future_destroy after the last. */
typedef struct weft_future {
  uint64_t opaque[6]; /* 48 bytes, 8-byte aligned */
} weft_future;

/* Initialise (pending). Returns 0 (-EINVAL for NULL). */
WEFT_API int weft_future_init(weft_future *f);
/* Destroy, before the memory is freed or reused (also after it completed:
 * a completion finishing on another thread, whose awaiters already woke, is
 * waited for). -EBUSY while tasks await it or callbacks are registered
 * (nothing is changed then); 0 otherwise. */
WEFT_API int weft_future_destroy(weft_future *f);
/* set_result / set_exception: complete with status and value, wake every
 * awaiter, run the done callbacks (on the calling thread, after the waiters
 * are woken). Any thread; does not suspend. Errors: -EALREADY already done
 * (completed or cancelled): nothing changes. */
WEFT_API int weft_future_set(weft_future *f, int status, void *value);
/* future.cancel(): complete with -ECANCELED. Returns 1 when it cancelled,
 * 0 when the future was already done. Any thread. */
WEFT_API int weft_future_cancel(weft_future *f);
/* Any thread. */
WEFT_API bool weft_future_done(const weft_future *f);
WEFT_API bool weft_future_cancelled(const weft_future *f);
/* future.result(): the status of a done future (and its pointer in *value
 * when value is not NULL); -EBUSY when it is not done. Any thread. */
WEFT_API int weft_future_result(const weft_future *f, void **value);
/* await future: suspend until done; returns its status (and pointer). As in
 * asyncio, a cancelled awaiter cancels the future (use weft_shield to wait
 * without that). Suspends. Errors: -ECANCELED; -EINVAL outside a task. */
WEFT_API int weft_future_await(weft_future *f, void **value);
/* add_done_callback: cb(f, arg) runs once f is done, on the completing
 * thread (at once, on the caller's, when f is done and its callbacks have
 * run). Callbacks run in the order they were added, as in asyncio: one
 * added while the completing thread still runs earlier ones is run by that
 * thread after them, not at once. Callbacks must not suspend or block,
 * nor destroy f (destroy waits for the completion that runs them). Any
 * thread. Errors: -ENOMEM, -EINVAL (cb NULL). */
typedef void (*weft_future_cb)(weft_future *f, void *arg);
WEFT_API int weft_future_add_done_callback(weft_future *f, weft_future_cb cb, void *arg);
/* remove_done_callback: remove every registration of (cb, arg) not yet run;
 * returns how many were removed. Any thread. */
WEFT_API int weft_future_remove_done_callback(weft_future *f, weft_future_cb cb, void *arg);

/* ------------------------------------------------------------ awaitables */

/* Something a task can await: a task (through its handle, which the caller
 * keeps owning) or a future. Every combinator below takes an array of them.
 * Build them with weft_aw_task / weft_aw_future. */
enum weft_awaitable_kind { WEFT_AW_TASK = 1, WEFT_AW_FUTURE = 2 };
typedef struct weft_awaitable {
  int kind;             /* enum weft_awaitable_kind */
  weft_task task;       /* WEFT_AW_TASK */
  weft_future *future;  /* WEFT_AW_FUTURE */
} weft_awaitable;

static inline weft_awaitable weft_aw_task(weft_task t) {
  weft_awaitable a = {WEFT_AW_TASK, t, 0};
  return a;
}
static inline weft_awaitable weft_aw_future(weft_future *f) {
  weft_awaitable a = {WEFT_AW_FUTURE, WEFT_TASK_NULL, f};
  return a;
}

/* Whether it is done (false for a stale handle or a bad awaitable). Any thread. */
WEFT_API bool weft_aw_done(weft_awaitable a);
/* Its status when done (pointer in *value for futures; NULL for tasks);
 * -EBUSY when not done; -ESRCH stale handle; -EINVAL bad kind. Any thread. */
WEFT_API int weft_aw_result(weft_awaitable a, void **value);
/* Cancel it (weft_cancel or weft_future_cancel). 1 requested, 0 done. Any thread.
 * Errors: -ESRCH stale handle; -EINVAL bad kind. */
WEFT_API int weft_aw_cancel(weft_awaitable a);
/* await a: weft_join or weft_future_await (a cancelled awaiter cancels a).
 * Suspends. Errors: as those two; -EINVAL bad kind. */
WEFT_API int weft_await(weft_awaitable a, void **value);

/* ------------------------------------------------------------ gather, wait, as_completed */

enum {
  WEFT_GATHER_RETURN_EXCEPTIONS = 1, /* wait for all and collect every status */
};

/* asyncio.gather: wait for every awaitable; status[i] (and value[i] when
 * value is not NULL) receive each result, in order; an entry not done when
 * gather returns reads -EBUSY. Without WEFT_GATHER_RETURN_EXCEPTIONS the
 * first failure (a negative status, -ECANCELED included) is returned at
 * once and the others go on (nothing is cancelled); with it, gather waits
 * for all and returns 0. If the calling task is cancelled while waiting,
 * every awaitable not done is cancelled, gather waits for them to end and
 * returns -ECANCELED; a further cancel of the caller meanwhile is passed on
 * to those not done yet (as asyncio's gathering future does), or absorbed
 * when none is left, not kept for the caller's next wait. (asyncio does
 * so with return_exceptions; without it, its gather ends as soon as one
 * awaitable ends after the cancel, raising that one's CancelledError or
 * error while the others may still run: weft always waits for all and
 * returns -ECANCELED.) n == 0 returns 0 at once. Suspends.
 * Errors: the first failure; -ECANCELED; -ESRCH a stale handle; -EDEADLK
 * the caller's own task among them; -EINVAL outside a task, unknown flags
 * or a bad awaitable; -ENOMEM. */
WEFT_API int weft_gather(const weft_awaitable *aws, size_t n, int *status, void **value, int flags);

enum weft_wait_mode {
  WEFT_ALL_COMPLETED = 0,
  WEFT_FIRST_COMPLETED = 1,
  WEFT_FIRST_EXCEPTION = 2, /* a negative status other than -ECANCELED, or all done */
};

/* asyncio.wait: suspend until the mode's condition holds or timeout_ns
 * passes (WEFT_FOREVER: no timeout); cancels nothing. done[i] tells which
 * are done (the rest are the pending set; done may be NULL when only the
 * count matters). Returns how many are done (a
 * timeout is not an error: compare with n); an awaitable given twice counts
 * twice (asyncio makes a set of them). Suspends.
 * Errors: -ECANCELED (nothing cancelled); -EINVAL n == 0, a negative
 * timeout, a bad mode or awaitable, outside a task; -ESRCH; -EDEADLK; -ENOMEM. */
WEFT_API int weft_wait(const weft_awaitable *aws, size_t n, int mode, int64_t timeout_ns, bool *done);

/* asyncio.as_completed: an iterator over awaitables in the order they
 * finish. init (does not suspend), next (suspends), destroy (always, once). */
typedef struct weft_as_completed {
  void *impl;
} weft_as_completed;
/* Errors: -EINVAL (it NULL, negative timeout, outside a task, bad awaitable);
 * -ESRCH; -EDEADLK; -ENOMEM. The overall timeout counts from init. */
WEFT_API int weft_as_completed_init(weft_as_completed *it, const weft_awaitable *aws, size_t n, int64_t timeout_ns);
/* The index of the next awaitable to finish (its result: weft_aw_result),
 * in the order they finished. Suspends. Errors: -ENOENT every awaitable was
 * returned already; -ETIMEDOUT the overall timeout passed and none that
 * finished remains to be returned; -ECANCELED (nothing cancelled); -EINVAL
 * outside a task or an iterator not initialised; -ENOMEM (the timer of the
 * timeout could not be set). Unlike
 * asyncio, which makes a set of its arguments, an awaitable given twice is
 * two entries, each returned once. A timeout cancels nothing, and unlike
 * asyncio (TimeoutError on every next once the timeout passed) it drops
 * nothing: one that finishes after it is still returned by a later next. */
WEFT_API int weft_as_completed_next(weft_as_completed *it);
WEFT_API void weft_as_completed_destroy(weft_as_completed *it);

/* ------------------------------------------------------------ timeouts */

/* asyncio.timeout / timeout_at: a scope around any number of suspending
 * calls. When its deadline passes, the scope cancels its task (weft_cancel
 * on itself, from a timer); weft_timeout_leave then turns the resulting
 * -ECANCELED into -ETIMEDOUT, with asyncio's uncancel counting: a
 * cancellation from elsewhere stays -ECANCELED, and of nested scopes that
 * expire together only the outermost reports -ETIMEDOUT (the inner ones
 * pass -ECANCELED up to it). The struct lives on the caller's stack; enter
 * and leave in LIFO order in the same task, and leave before the frame ends:
 *
 *     weft_timeout to;
 *     weft_timeout_enter(&to, 100 * 1000000);
 *     int rc = do_things();          // suspending calls
 *     rc = weft_timeout_leave(&to, rc);
 *
 * A scope that does not expire costs no system call (an entry in the
 * worker's timer heap). */
typedef struct weft_timeout {
  uint64_t opaque[6]; /* 48 bytes, 8-byte aligned */
} weft_timeout;

/* Enter with a delay from now (WEFT_FOREVER: no deadline) or a CLOCK_MONOTONIC
 * deadline. A deadline already past (or a zero delay) is due at once: the
 * scope expires at the task's next suspension, which returns -ECANCELED
 * (as asyncio schedules the expiry with call_soon; a join that would run a
 * task not yet started inline counts, and cancels that task before it
 * runs); a body that never suspends sees no expiry. Does not suspend.
 * Errors: -EINVAL negative delay, s NULL, outside a task, a scope that is
 * entered already (re-entered); -ENOMEM (the scope is not entered). */
WEFT_API int weft_timeout_enter(weft_timeout *s, int64_t delay_ns);
WEFT_API int weft_timeout_enter_at(weft_timeout *s, int64_t deadline_ns);
/* Leave: rc is the body's outcome; returns -ETIMEDOUT when the scope
 * expired and rc is -ECANCELED caused by this scope alone, else rc.
 * Errors: -EINVAL not the calling task's innermost scope (nothing changes). */
WEFT_API int weft_timeout_leave(weft_timeout *s, int rc);
/* Move the deadline (WEFT_FOREVER: none), from the task that entered the
 * scope (asyncio lets any code do it). Errors: -EINVAL the scope has
 * expired already, is not entered, or the caller is another task; -ENOMEM. */
WEFT_API int weft_timeout_reschedule(weft_timeout *s, int64_t deadline_ns);
/* The deadline (WEFT_FOREVER: none), and whether the scope has expired
 * (false for NULL). */
WEFT_API int64_t weft_timeout_when(const weft_timeout *s);
WEFT_API bool weft_timeout_expired(const weft_timeout *s);

/* asyncio.wait_for (3.12): await a with a timeout (WEFT_FOREVER: none). On
 * expiry a is cancelled and waited for; then -ETIMEDOUT, unless a finished
 * with a result anyway (finishing at the same moment as the timeout, or
 * ignoring the cancellation): its result wins. A timeout of 0 returns a's
 * result when it is done, else cancels it. Suspends. Errors: a's failure;
 * -ETIMEDOUT; -ECANCELED (a is cancelled too); -EINVAL negative timeout,
 * bad awaitable, outside a task; -ESRCH; -EDEADLK; -ENOMEM (the timeout
 * could not be set: a is not awaited). */
WEFT_API int weft_wait_for(weft_awaitable a, int64_t timeout_ns, void **value);

/* asyncio.shield: await a, but when the calling task is cancelled, return
 * -ECANCELED at once and leave a running (it is not cancelled). An a that
 * is done already (weft_aw_done) gives its result at once, as weft_await
 * does, even to a caller with a cancel pending (which stays pending).
 * Suspends.
 * Errors: a's failure; -ECANCELED; -ESRCH; -EDEADLK; -EINVAL; -ENOMEM. */
WEFT_API int weft_shield(weft_awaitable a, void **value);

/* ------------------------------------------------------------ task groups */

/* asyncio.TaskGroup. A plain struct on the caller's stack:
 *
 *     weft_taskgroup g;
 *     weft_taskgroup_enter(&g);
 *     weft_taskgroup_spawn(&g, child, arg);   // any number
 *     int rc = body();
 *     rc = weft_taskgroup_leave(&g, rc);      // waits for every child
 *
 * The group owns its children's handles (valid until leave returns; do not
 * release them; a child spawned with opts.detached: see spawn). The first
 * child that fails (negative status other than -ECANCELED) cancels every
 * other child and the task that entered the group (the body's next
 * suspension returns -ECANCELED); a body that fails (leave's rc < 0)
 * cancels the children. */
typedef struct weft_taskgroup {
  uint64_t opaque[16]; /* 128 bytes, 8-byte aligned */
} weft_taskgroup;

/* Enter g (its memory may be uninitialised, or a group left before). Every
 * enter that returns 0 must be matched by a leave of the same task before g
 * is entered again or its memory is reused: enter overwrites g, and an
 * enter of an open group wipes it (its children still run and write to
 * it). Unlike asyncio's "already entered", that is not detected: telling
 * an open group from uninitialised memory would read that memory, which
 * valgrind's memcheck reports in every program that enters a group.
 * Errors: -EINVAL outside a task, or g NULL. */
WEFT_API int weft_taskgroup_enter(weft_taskgroup *g);
/* Spawn a child (from the body or from a child). Does not suspend. Returns
 * the null handle with errno EINVAL when the group is aborting (a child or
 * the body failed, or the entering task was cancelled in leave: asyncio
 * 3.12's "TaskGroup is shutting down"), finished or never entered, or for
 * g or fn NULL, a bad option or a call outside a task; ENOMEM; on these fn
 * never runs and arg stays the caller's. Each child is cancelled at most
 * once by the group's abort, even when it is spawned while the abort is
 * under way.
 * Memory: the group keeps each child's handle, and so its task record
 * (a few hundred bytes), until leave, so that the handle stays valid: a
 * group that lives for long and spawns without end (an accept loop) grows
 * by every child it spawned. With opts.detached the caller keeps no handle
 * (as weft_spawn_ex's: it only tells success from failure; do not release
 * it; join and cancel through it answer -ESRCH once the child has ended)
 * and the group gives the record back when the child ends, so it holds
 * memory for the children alive only, as asyncio's TaskGroup, which drops
 * a done task. The group still waits for, cancels and counts such a
 * child like any other. */
WEFT_API weft_task weft_taskgroup_spawn(weft_taskgroup *g, weft_fn fn, void *arg);
WEFT_API weft_task weft_taskgroup_spawn_ex(weft_taskgroup *g, weft_fn fn, void *arg, const weft_spawn_opts *opts);
/* Leave: wait for every child (a cancellation while waiting cancels the
 * children and waiting goes on), release them, and return: the first error
 * (a child's or the body's rc, in the order they happened: a body's error
 * comes before the children's that fail later, as in their cleanup after
 * the body's abort; asyncio's ExceptionGroup lists the body's last); else
 * -ECANCELED when the entering task was cancelled from outside the group
 * (never hidden: when an error is returned instead, that cancellation stays
 * requested, as in Python 3.13); else 0. Suspends. Errors: -EINVAL not
 * entered, or not the task that entered. */
WEFT_API int weft_taskgroup_leave(weft_taskgroup *g, int rc);
/* How many children failed (after leave: the total). Errors: -EINVAL g
 * NULL or never entered. */
WEFT_API int weft_taskgroup_failed(const weft_taskgroup *g);

/* ------------------------------------------------------------ callbacks */

/* call_soon / call_later / call_at: run fn(arg) once, in a worker's
 * scheduler context (not in a task: it must not suspend; it may spawn,
 * cancel, set events and futures). weft_call_* queue it on the calling
 * worker (from a task or a callback); weft_runtime_call_* from any thread.
 * Callbacks due at the same time run in the order they were queued on one
 * worker (a call_at deadline at or below 0 is call_soon's). weft_runtime_call_soon is call_soon_threadsafe: its callbacks run
 * one at a time, in the order of the calls (a call that returned before
 * another began, on any thread, runs first), on one worker at a time (which
 * one may change between bursts); they keep no order with other callbacks
 * or tasks. weft_runtime_call_at callbacks run at their deadlines on
 * whichever worker took them, in no order among equal deadlines (asyncio's
 * call_at neither). *out (when out is not
 * NULL) receives a handle to cancel it with; release it with
 * weft_callback_release. Callbacks still pending when the
 * runtime shuts down are dropped without running; so is a runtime_call_*
 * callback whose queueing on the worker later finds no memory (it returned
 * 0: weft_callback_cancel then says 1, it will not run). Errors: -EINVAL outside a
 * worker, negative delay, fn NULL; -ENOMEM; -ESHUTDOWN (runtime variant). */
typedef struct weft_callback weft_callback;
typedef void (*weft_callback_fn)(void *arg);
WEFT_API int weft_call_soon(weft_callback_fn fn, void *arg, weft_callback **out);
WEFT_API int weft_call_later(int64_t delay_ns, weft_callback_fn fn, void *arg, weft_callback **out);
WEFT_API int weft_call_at(int64_t deadline_ns, weft_callback_fn fn, void *arg, weft_callback **out);
WEFT_API int weft_runtime_call_soon(weft_runtime *rt, weft_callback_fn fn, void *arg, weft_callback **out);
WEFT_API int weft_runtime_call_at(weft_runtime *rt, int64_t deadline_ns, weft_callback_fn fn, void *arg,
                                  weft_callback **out);
/* Cancel: 1 when it will not run, 0 when it ran or is running. Any thread. */
WEFT_API int weft_callback_cancel(weft_callback *h);
/* Give up the handle (the callback still runs unless cancelled). Any thread. */
WEFT_API void weft_callback_release(weft_callback *h);

/* ------------------------------------------------------------ task-local values */

/* contextvars.ContextVar of void * values. A spawned task starts with a
 * copy of its spawner's values; setting a value in one task never changes
 * another's. A callback (call_soon/call_later/call_at, and the runtime_
 * variants) runs with the values of whoever scheduled it, as they were
 * then (asyncio copies the context at call_soon), and a task it spawns
 * starts with those; so does a done callback (weft_task_add_done_callback,
 * weft_future_add_done_callback) with the values of whoever added it, not
 * those of the task it runs in (the one that ended, or that completed the
 * future). A function run by weft_to_thread sees its caller's
 * values, and so do callbacks and tasks it schedules; a task spawned from
 * any other thread starts with none. Initialise a variable once (any
 * thread) before use. */
typedef struct weft_taskvar {
  uint64_t id;        /* set by init */
  void *default_value;
} weft_taskvar;

/* Returns 0 (-EINVAL for v NULL). */
WEFT_API int weft_taskvar_init(weft_taskvar *v, void *default_value);
/* The calling task's value, or the default (NULL for v NULL). Outside a
 * task: in a callback, the value of its scheduler at scheduling time (of
 * its adder at adding, in a done callback); in a
 * function run by weft_to_thread, the value of the task that called it, as
 * it was at the call (asyncio.to_thread copies the context); elsewhere the
 * default. */
WEFT_API void *weft_taskvar_get(const weft_taskvar *v);
/* Set the calling task's value; *old (when not NULL) receives the previous
 * one. Errors: -EINVAL outside a task (any done callback included, even one
 * run by a task) or an uninitialised variable; -ENOMEM. */
WEFT_API int weft_taskvar_set(weft_taskvar *v, void *value, void **old);

/* ------------------------------------------------------------ introspection */

/* What a suspended task waits on, as printed in dumps ("join", "sleep",
 * "future", "gather", "event", "queue get", ...), or "" when it is not
 * waiting. The weft_task_info of weft_tasks() carries it too. */
WEFT_API const char *weft_task_waiting_on(weft_task t);

/* Print every live task of the calling task's runtime (or of rt) on fd:
 * id, name, state, worker, cancel requests, what it waits on. Debug mode
 * (weft_config.debug) prints the same on stderr when the process receives
 * SIGQUIT (when SIGQUIT had its default action). Returns the number of live
 * tasks. Errors: -EINVAL fd < 0, rt NULL, or outside a task
 * (weft_tasks_dump); -ENOMEM; the write's error when fd takes none
 * (-EBADF a closed or read-only descriptor, -EPIPE, ...). */
WEFT_API int weft_tasks_dump(int fd);
WEFT_API int weft_runtime_dump(weft_runtime *rt, int fd);

#ifdef __cplusplus
}
#endif

#endif
