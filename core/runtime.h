/* core/runtime.h: the runtime: its workers, the shared queues, the task
 * record arena, and the start/stop protocol (core/runtime.c).
 *
 * Shutdown, in order (weft_runtime_shutdown and the end of weft_run):
 *  1. `stopping` is set: submissions from outside are refused (-ESHUTDOWN);
 *     those already past that check are waited for (`submitting`), so that
 *     step 2 counts their tasks.
 *  2. Every live task is cancelled, once (asyncio.run: its cleanup may
 *     suspend); the caller waits until the live count (sum of spawned - sum
 *     of finished, read finished-first so it never undercounts) reaches
 *     zero, cancelling the tasks spawned meanwhile; then until the threads
     blocked in weft_runtime_wait have left it (`waiting`).
 *  3. `stop` is set and every worker unparked; each worker leaves its loop
 *     once it has nothing to run, and the threads are joined.
 *  4. The blocking pool is stopped (its threads leave; only detached jobs
 *     can still be running) and the reactors, timer heaps, stacks and the
 *     record arena are freed.
 */
#ifndef WEFT_CORE_RUNTIME_H
#define WEFT_CORE_RUNTIME_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/core.h>

#include "core/atomic.h"
#include "core/blocking.h"
#include "core/idle.h"
#include "core/inject.h"
#include "core/spinlock.h"
#include "core/stack.h"
#include "core/task.h"
#include "core/worker.h"

struct weft__task_slab;

#define WEFT__MAX_WORKERS 126 /* a worker id fits the task's int8_t last_worker */

typedef struct weft_runtime {
  weft_config cfg;            /* resolved: every field has its real value */
  unsigned nworkers;
  int backend;
  weft__worker **workers;     /* immutable after start */
  weft__inject inject;
  weft__idle idle;
  weft__stack_shared stacks;
  weft__blocking_pool blocking;    /* to_thread and blocking I/O (core/blocking.h) */
  struct weft__fdtab *fdtab;       /* epoll backend: descriptor readiness (io/readiness.c); immutable */

  /* the task record arena: every record ever allocated, type-stable */
  pthread_mutex_t arena_lock;
  struct weft__task_slab *slabs;   /* under arena_lock */
  weft__task *depot;               /* under arena_lock: full magazines of free records
                                      (core/worker.c, "task records") */
  _Atomic(weft__task *) all_tasks; /* every record, pushed once, never removed */
  _Atomic uint64_t next_id;        /* task ids for default names */

  _Atomic int64_t ext_spawned;     /* tasks submitted from outside the workers */
  _Atomic int stopping;            /* step 1 */
  _Atomic long submitting;         /* external submissions past their check of stopping and not yet
                                      spawned: shutdown waits for them (weft_runtime_submit) */
  _Atomic long waiting;            /* threads in weft_runtime_wait: step 2 ends only once they have left
                                      (their release of the handle recycles its record into the arena) */
  _Atomic int stop;                /* step 3 */

  /* weft_runtime_call_soon's FIFO (core/callback.c): the callbacks not yet
   * run, oldest first, and whether a drain is scheduled or running */
  weft__spinlock soon_lock;
  struct weft_callback *soon_head; /* under soon_lock */
  struct weft_callback *soon_tail; /* under soon_lock */
  bool soon_draining;              /* under soon_lock */
  unsigned n_started;              /* under runtime.c's start_lock: workers that reported */

  /* test mode and debug */
  int migrate;
  uint64_t seed;
  int debug;
  pthread_t monitor;
  bool monitor_started;
  bool monitor_stop;               /* under monitor_lock */
  unsigned monitor_sigquits;       /* the monitor's: SIGQUITs counted when it started (core/dump.c) */
  pthread_mutex_t monitor_lock;
  pthread_cond_t monitor_cond;
} weft__runtime;

/* Live tasks now (step 2's count). Any thread. */
int64_t weft__runtime_live(weft__runtime *rt);

/* Debug reports (core/debug.c). */
/* Whether debug mode is on (WEFT_DEBUG=1, or the calling worker's runtime's debug). */
bool weft__debug_on(void);
/* Whether WEFT_DEBUG asks for debug mode: set, not empty, not starting
 * with '0' (read once). Any thread. */
bool weft__debug_env(void);
void weft__debug_misuse(const char *what);
int weft__debug_start(weft__runtime *rt);
void weft__debug_stop(weft__runtime *rt);
void weft__debug_report_alive(weft__runtime *rt);

#ifdef WEFT_TEST_HOOKS
/* Tests: called by weft_runtime_submit between its check of stopping and
 * its spawn (NULL: nothing), to hold a submission in that window. */
extern void (*weft__test_submit_hook)(void);
/* Tests: called by a worker that has decided to park, before it registers
 * as parked (NULL: nothing): a stand-in for a preemption in that window.
 * Set it before the runtime starts and clear it after shutdown. */
extern void (*weft__test_park_hook)(void);
/* Tests: called by weft_runtime_wait once its task is done, before it
 * releases the handle (NULL: nothing), to hold a waiter in that window. */
extern void (*weft__test_wait_hook)(void);
#endif

#endif
