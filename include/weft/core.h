/* weft/core.h: runtimes, tasks, cancellation, sleeping.
 *
 * The model is asyncio's: weft_run() is asyncio.run(), weft_spawn() is
 * create_task(), weft_join() is `await task`, weft_cancel() is task.cancel(),
 * weft_sleep_ns() is asyncio.sleep(). Tasks are stackful: any C function can
 * suspend, deep inside a call chain, without colouring its callers.
 *
 * Threads. A task runs on one of N worker threads and may resume on another
 * worker after any suspension; do not keep the address of a thread-local, or
 * errno, across a suspending call (weft_pin() keeps a task on its worker).
 *
 * Errors. Negative errno values, as the kernel returns them:
 *   -ECANCELED  the calling task was cancelled while it was suspended
 *   -ETIMEDOUT  a timeout expired
 *   -EINVAL     misuse: a suspending call outside a task, a bad argument
 *   -ESRCH      a task handle whose task was already released (stale handle)
 *   -EBUSY      the result of a task that is not done yet
 *   -ENOMEM     out of memory
 */
#ifndef WEFT_CORE_H
#define WEFT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exported from libweft; everything else in the library is hidden. */
#ifndef WEFT_API
#define WEFT_API __attribute__((visibility("default")))
#endif

/* A task's body. A return value >= 0 is the task's result; a negative errno
 * is its error (the role of an exception). Larger results go through arg. */
typedef int (*weft_fn)(void *arg);

struct weft_task_rec; /* opaque, type-stable: records are recycled, never unmapped while their
                        * runtime lives (weft_runtime_shutdown unmaps them) */

/* A task handle: a small value, copied freely. The generation detects a
 * handle whose task was released and recycled: such a handle gets -ESRCH. */
typedef struct weft_task {
  struct weft_task_rec *rec;
  uint64_t gen;
} weft_task;

/* The null handle, returned by spawn on failure. The calls below that take
 * a handle answer it with -EINVAL (the bool ones with false). */
#define WEFT_TASK_NULL ((weft_task){0, 0})
static inline bool weft_task_is_null(weft_task t) { return t.rec == 0; }

/* ------------------------------------------------------------ configuration */

enum weft_backend {
  WEFT_BACKEND_AUTO = 0, /* io_uring, or epoll where io_uring cannot be set up; WEFT_BACKEND=epoll|uring overrides */
  WEFT_BACKEND_URING = 1,
  WEFT_BACKEND_EPOLL = 2,
};

/* A zero-initialised weft_config means every default. */
typedef struct weft_config {
  unsigned workers;          /* worker threads, at most 126; 0 = CPUs in the affinity mask and cgroup quota, at most 126
                                (WEFT_WORKERS overrides) */
  size_t stack_size;         /* default task stack; 0 = 64 KiB; at least 16 KiB, at most 1 GiB
                                (up to 896 bytes at its top are left unused, so that tasks' first
                                frames spread over the cache's sets: core/stack.h). A task gets at
                                least this; pooled stacks are mapped twice as large (address space
                                only until touched) so that a child joined inline gets as much.
                                An overflow into the guard page below a stack is reported by task
                                name; a frame larger than that page (a big array, alloca) can skip
                                it into another task's stack unreported: compile such code with
                                -fstack-clash-protection (docs/guide.md, Debugging) */
  unsigned ring_entries;     /* io_uring submission entries per worker; 0 = 256; at most 32768 (1 is taken as 2:
                                an operation and its deadline are submitted together) */
  unsigned blocking_threads; /* most threads of the blocking pool; 0 = 64; at most 4096 */
  int64_t blocking_idle_ns;  /* idle time after which a blocking thread exits; 0 = 10 s; negative: -EINVAL */
  int debug;                 /* 0 = from WEFT_DEBUG (unset, empty or starting with '0': off; any other value: on);
                                1 = checks and reports (see below) */
  int backend;               /* enum weft_backend */
  /* Test setting (also WEFT_TEST_MIGRATE=1 and WEFT_TEST_SEED=N): every
   * suspension resumes on a different worker and run order is shuffled from
   * a seed printed on stderr, so that code keeping a thread-local address or
   * errno across a suspension fails in tests and a failure can be replayed. */
  int test_migrate;
  uint64_t test_seed;        /* 0 = from the clock (printed) */
} weft_config;

/* Debug mode (debug=1 or WEFT_DEBUG=1) reports on stderr: a task that runs
 * more than 100 ms without suspending (name and worker), a callback
 * (call_soon, call_later, call_at and their runtime_ variants) that runs as
 * long (worker), tasks still alive at shutdown, and misuse (a suspending call
 * outside a task, a task joining itself, a stale handle). */

/* ------------------------------------------------------------ running */

/* asyncio.run: start a runtime, run main(arg) as its first task, then cancel
 * the tasks still alive and wait for them, stop the workers and return main's
 * status. Blocks the calling thread, which must not be a worker.
 * Tasks spawned meanwhile (by a cancelled task's cleanup, a done callback,
 * a call_later callback) are cancelled and waited for as well, until none
 * is left: unlike asyncio.run, which leaves such late tasks pending, the
 * run does not end while something keeps spawning replacements (a
 * supervisor that restarts its tasks as they end must stop doing so once
 * cancelled). The same holds for weft_runtime_shutdown.
 * Errors: -EINVAL main NULL, a bad configuration (a message says which
 * field) or a call from inside a task; -ENOMEM; the reactor's setup error;
 * pthread_create's error (-EAGAIN) for a worker thread; -EINTR main ended
 * with -ECANCELED after a SIGINT cancelled it (weft/process.h). */
WEFT_API int weft_run(weft_fn main, void *arg, const weft_config *cfg);

/* An explicit runtime, for programs that own their main thread. */
typedef struct weft_runtime weft_runtime;

/* Create and start a runtime. Any thread (not a worker). Errors as weft_run
 * (-EINVAL also for out NULL; never -EINTR).
 * Like weft_run, it sets SIGPIPE to SIG_IGN when the program left it at
 * SIG_DFL (Python does the same at startup), so that a write to a pipe or
 * socket whose reader is gone returns -EPIPE instead of killing the
 * process; a SIGPIPE disposition the program chose is left alone. */
WEFT_API int weft_runtime_new(weft_runtime **out, const weft_config *cfg);

/* Submit fn(arg) as a new task from any thread (a worker's task included).
 * *out receives a handle that the caller owns (release it, or pass it to
 * weft_runtime_wait, which releases it). out may be NULL: the task is then
 * detached. Any thread. Errors: -EINVAL rt or fn NULL; -ENOMEM; -ESHUTDOWN
 * the runtime is stopping.
 * A submission may race with the start of weft_runtime_shutdown: it is
 * refused, or its task is counted (and cancelled) by the shutdown. It must
 * not be able to start after weft_runtime_shutdown returned: the runtime
 * is freed then. */
WEFT_API int weft_runtime_submit(weft_runtime *rt, weft_fn fn, void *arg, weft_task *out);

/* Block the calling thread (not a worker's task) until t is done, release
 * the handle and return t's status (run_coroutine_threadsafe(...).result()).
 * A thread that is waiting when weft_runtime_shutdown is called gets its
 * task's outcome (-ECANCELED when the shutdown cancelled it), and the
 * shutdown returns only after the wait has returned; a wait must not begin
 * after shutdown was called (the handle dies with the runtime).
 * Errors: -EINVAL called from a task, rt NULL or the null handle; -ESRCH
 * stale handle. */
WEFT_API int weft_runtime_wait(weft_runtime *rt, weft_task t);

/* Submit fn(arg) and wait for its status: weft_runtime_submit + weft_runtime_wait
 * (-EINVAL, submitting nothing, from a task). It may race with the start of
 * weft_runtime_shutdown as a submission may: refused (-ESHUTDOWN), or its
 * task is cancelled and shutdown waits for the call to return. */
WEFT_API int weft_runtime_call(weft_runtime *rt, weft_fn fn, void *arg);

/* Cancel every task still alive, wait for all of them and for the threads
 * blocked in weft_runtime_wait/_call to return, stop the workers and
 * free the runtime. Blocks. Any thread but the runtime's own workers and
 * the threads of its blocking pool (a function it runs by weft_to_thread,
 * which the shutdown would wait for).
 * The handles of its tasks die with it (the records are unmapped): one
 * still held must not be used after (weft_task_release included; asyncio's
 * task objects outlive their loop, weft's do not).
 * Returns 0, or -EINVAL when called from one of its tasks or pool threads
 * (or rt NULL). */
WEFT_API int weft_runtime_shutdown(weft_runtime *rt);

/* The backend a runtime uses: WEFT_BACKEND_URING or WEFT_BACKEND_EPOLL
 * (-EINVAL for NULL). */
WEFT_API int weft_runtime_backend(const weft_runtime *rt);

/* ------------------------------------------------------------ tasks */

typedef struct weft_spawn_opts {
  const char *name;   /* copied (up to 31 bytes); NULL = "task-<id>" */
  size_t stack_size;  /* 0 = the runtime's default; at least 16 KiB */
  bool detached;      /* the caller owns no handle: the record is recycled as soon as the task
                       * ends. The handle weft_spawn_ex returns then only tells success from
                       * failure: do not release it; join and cancel through it answer -ESRCH
                       * once the task has ended (its record may already be another task's) */
} weft_spawn_opts;

/* create_task: start fn(arg) as a new task on the calling task's runtime.
 * The caller owns the returned handle: join it any number of times, then give
 * it up with weft_task_release (or spawn detached). Does not suspend; makes
 * no system call while memory is available.
 * Returns the null handle with errno set on failure: ENOMEM (the runtime goes
 * on), EINVAL (called outside a task, or a bad option).
 * Placement: the newest spawn stays on the caller's worker, to run when the
 * caller next suspends (a chain of tasks that each spawn the next stays on
 * one warm worker); while every worker is busy, up to 16 recent spawns do.
 * Other workers cannot steal those until the caller suspends or spawns
 * again, as with Tokio's LIFO slot: a task that spawns and then computes
 * for long without suspending should weft_yield() between the two. */
WEFT_API weft_task weft_spawn(weft_fn fn, void *arg);
WEFT_API weft_task weft_spawn_ex(weft_fn fn, void *arg, const weft_spawn_opts *opts);

/* Spawn detached: returns 0, -ENOMEM or -EINVAL. */
WEFT_API int weft_spawn_detached(weft_fn fn, void *arg);

/* await task: suspend until t is done and return its status (its return
 * value, or -ECANCELED when it ended by cancellation). Any number of tasks
 * may join one task; joining frees nothing. As in asyncio, cancelling the
 * joiner cancels t too, and the joiner then receives t's outcome (usually
 * -ECANCELED). Suspends. Errors: -ESRCH stale handle; -EDEADLK t is the
 * caller; -EINVAL outside a task. */
WEFT_API int weft_join(weft_task t);

/* Give up the handle: the record is recycled once the task is done too.
 * Any thread. Errors: -ESRCH stale handle. */
WEFT_API int weft_task_release(weft_task t);

/* task.cancel(): request cancellation. The request is delivered at t's
 * current or next suspension point, which returns -ECANCELED; t may clean
 * up, go on, and suspend again. Returns 1 when a request was made, 0 when t
 * is already done, -ESRCH for a stale handle. Any thread. */
WEFT_API int weft_cancel(weft_task t);

/* task.cancelling(): the number of cancel requests not withdrawn, or
 * -ESRCH (stale handle). Any thread. */
WEFT_API int weft_cancelling(weft_task t);

/* task.uncancel(): withdraw one request; returns the remaining count. When it
 * reaches 0, a request not yet delivered is dropped as well; a request made
 * after that decrement stands (called from t itself, as asyncio means it to
 * be; from another thread, one made at that very moment may be dropped
 * with it). Any thread. Errors: -ESRCH (stale handle). */
WEFT_API int weft_uncancel(weft_task t);

/* The calling task's handle (not owned: do not release it), or the null
 * handle outside a task. */
WEFT_API weft_task weft_current(void);

WEFT_API bool weft_task_done(weft_task t);      /* false for a stale handle */
WEFT_API bool weft_task_cancelled(weft_task t); /* done and ended by cancellation */

/* The result of a done task; -EBUSY while it runs; -ESRCH stale handle. */
WEFT_API int weft_task_status(weft_task t);

/* Set or read the task's name (names are for reports: at most 31 bytes kept).
 * set returns 0 or -ESRCH; get copies the name into buf (truncated to len;
 * buf may be NULL when len is 0) and returns its length, or -ESRCH, or
 * -EINVAL for buf NULL with len > 0. */
WEFT_API int weft_task_set_name(weft_task t, const char *name);
WEFT_API int weft_task_get_name(weft_task t, char *buf, size_t len);

/* Run cb(t, arg) once t is done, on the thread that finishes t (or at once,
 * on the caller's thread, when t is done and its callbacks have run).
 * Callbacks run in the order they were added, as in asyncio: one added
 * while the finishing thread still runs earlier ones is run by that thread
 * after them, not at once. Callbacks must not block or suspend. Any
 * thread. Errors: -EINVAL cb NULL; -ENOMEM; -ESRCH.
 * t counts as done (weft_join returns, weft_task_done is true) as soon as
 * its status is published, which may be before its callbacks have run: as
 * in asyncio, where a done task's callbacks are only scheduled. */
typedef void (*weft_done_cb)(weft_task t, void *arg);
WEFT_API int weft_task_add_done_callback(weft_task t, weft_done_cb cb, void *arg);
/* task.remove_done_callback(): remove every registration of (cb, arg) that
 * has not started to run; returns how many were removed (0 once t's
 * finisher has taken them up, as in asyncio once they are scheduled). Does
 * not suspend. Any thread. Errors: -ESRCH (stale handle). */
WEFT_API int weft_task_remove_done_callback(weft_task t, weft_done_cb cb, void *arg);

enum weft_task_state {
  WEFT_TASK_RUNNABLE = 0, /* queued, or not yet started */
  WEFT_TASK_RUNNING = 1,
  WEFT_TASK_SUSPENDED = 2,
  WEFT_TASK_DONE = 3,
};

typedef struct weft_task_info {
  weft_task task;         /* not owned */
  char name[32];
  int state;              /* enum weft_task_state */
  int worker;             /* the worker it last ran on, -1 if never */
  int cancelling;
  const char *waiting_on; /* what a suspended task waits on ("join", "sleep", ...; see weft/task.h), else "" */
} weft_task_info;

/* all_tasks(): fill out[] with up to n live tasks of the calling task's
 * runtime (or of rt, with weft_runtime_tasks, from any thread) and return how
 * many are alive in all (which may exceed n). weft's own tasks are listed
 * too, named "weft-..." (weft_run's SIGINT watch "weft-signal-watch", a
 * server's "weft-accept" and "weft-conn" handlers, "weft-reaper", ...). out may be NULL when n is 0.
 * Errors: -EINVAL weft_tasks outside a worker, rt NULL, out NULL with n > 0. */
WEFT_API int weft_tasks(weft_task_info *out, size_t n);
WEFT_API int weft_runtime_tasks(weft_runtime *rt, weft_task_info *out, size_t n);

/* ------------------------------------------------------------ time */

/* CLOCK_MONOTONIC, in nanoseconds. Any thread. */
WEFT_API int64_t weft_now_ns(void);

/* asyncio.sleep: suspend for ns nanoseconds; 0 yields (the task goes behind
 * the other runnable tasks). Suspends. Errors: -ECANCELED, -EINVAL (negative
 * or overflowing duration, outside a task), -ENOMEM (the worker's timer heap
 * could not grow). */
WEFT_API int weft_sleep_ns(int64_t ns);

/* Suspend until the CLOCK_MONOTONIC deadline (a past deadline yields).
 * Suspends. Errors: -ECANCELED; -EINVAL outside a task; -ENOMEM. */
WEFT_API int weft_sleep_until(int64_t deadline_ns);

/* sleep(0): let the other runnable tasks run. Timers due on the caller's
 * worker fire first, so the tasks they wake run before the caller resumes
 * (or are taken by an idle worker). Suspends (a cancellation point).
 * Errors: -ECANCELED; -EINVAL outside a task. */
WEFT_API int weft_yield(void);

/* ------------------------------------------------------------ blocking calls */

/* Flags of weft_to_thread_ex. */
#define WEFT_TO_THREAD_DETACH 1u /* on cancellation return at once; fn runs to its end unobserved */

/* asyncio.to_thread: run fn(arg) on the runtime's pool of blocking threads
 * and suspend until it returns; returns fn's status. fn sees the caller's
 * task-local values (weft_taskvar_get) as they were at the call. fn may block its
 * thread (a system call, a lock, a library without an async API); it must
 * not call weft's suspending functions. The pool is created on first use,
 * grows on demand up to weft_config.blocking_threads (default 64), lets a
 * thread go after weft_config.blocking_idle_ns without work (default 10 s),
 * and is joined at shutdown. Its queue is bounded (16 calls per allowed
 * thread): a caller that finds it full suspends, first come first served,
 * until there is room. Suspends.
 *
 * Cancellation never kills a thread. A call still queued is taken out of
 * the queue and fn never runs. A call already running: weft_to_thread
 * waits (not cancellably) until fn returns, so that fn may use memory the
 * caller owns, then returns -ECANCELED (fn's status is dropped, as
 * asyncio's); with WEFT_TO_THREAD_DETACH it returns -ECANCELED at once and
 * fn finishes on its own (arg must then outlive it).
 * Errors: -ECANCELED; -EINVAL outside a task, fn NULL or unknown flags;
 * -ENOMEM (DETACH only: the call's record); -EAGAIN no pool thread could
 * be started. */
WEFT_API int weft_to_thread(weft_fn fn, void *arg);
WEFT_API int weft_to_thread_ex(weft_fn fn, void *arg, unsigned flags);

/* ------------------------------------------------------------ workers */

/* Keep the calling task on its current worker until the matching unpin
 * (pins nest). For libraries that keep thread-local state across
 * suspensions. Errors: -EINVAL outside a task (and, for unpin, without a
 * matching pin). */
WEFT_API int weft_pin(void);
WEFT_API int weft_unpin(void);

/* The calling thread's worker index (0..n-1), or -1 outside the workers. */
WEFT_API int weft_worker_id(void);

/* The number of workers of the calling task's runtime, or 0 outside one. */
WEFT_API int weft_worker_count(void);

#ifdef __cplusplus
}
#endif

#endif
