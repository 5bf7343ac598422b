/* core/worker.h: a worker thread and its scheduler loop.
 *
 * Each worker owns: a LIFO slot (the task it just woke: runs next, capped
 * at WEFT__LIFO_MAX runs in a row while other local work waits, so two
 * tasks waking each other cannot starve the rest), a spawn stack (tasks it
 * spawned, newest first, owner-only: joins run them inline), a bounded
 * work-stealing deque (core/deque.h; the owner claims its oldest tasks in
 * batches of WEFT__TAKE_BATCH), an inbox for tasks sent to it in
 * particular (pinned tasks, the migrate test mode), a pool of stacks, a
 * free list of task records, a timer heap and a reactor. Order of looking
 * for work:
 *   every WEFT__GLOBAL_INTERVAL ticks: the inject queue first (it never
 *   starves), the spawn stack spilled to the deque, due timers, a
 *   non-blocking reactor poll (at most one io_uring_enter, none when
 *   nothing is queued or in flight);
 *   LIFO slot -> spawn stack -> pinned list -> inbox -> own deque (the
 *   deque and the pinned side take turns while both have work) -> inject
 *   queue -> timers and reactor -> steal half of a random victim's deque
 *   (64 rounds) -> park.
 * A task that suspends switches straight to the next local task when there
 * is one (weft__switch_out); the scheduler context runs the rest.
 *
 * "Executed only by the owner" unless marked "any thread".
 */
#ifndef WEFT_CORE_WORKER_H
#define WEFT_CORE_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/atomic.h"
#include "core/deque.h"
#include "core/fiber.h"
#include "core/inbox.h"
#include "core/stack.h"
#include "core/task.h"
#include "core/timer.h"
#include "io/reactor.h"

#define WEFT__LIFO_MAX 3
/* A searching worker probes about this many victims' deques (rounds of a
 * pass over every other worker) before it parks: 64 rounds with 2 workers,
 * 5 with 16. A fixed 64 rounds, before, made an idle-ish 16-worker server
 * spend a third of its CPU scanning: tcp_echo at 16 workers, 23.2 -> 14.4
 * us of server CPU per message with 4 rounds (the task workloads unchanged). */
#define WEFT__SEARCH_PROBES 64
#define WEFT__TAKE_BATCH 8 /* oldest deque tasks the owner claims with one CAS */
#define WEFT__SPAWN_STACK 16 /* tasks spawned here and not yet stealable (see weft__schedule_spawn) */
#define WEFT__GLOBAL_INTERVAL 61
#define WEFT__TRIM_IDLE_NS 1000000000LL /* idle this long before giving stack memory back */

struct weft_runtime;

typedef struct weft__worker {
  struct weft_runtime *rt;   /* immutable */
  int id;                     /* immutable */
  pthread_t thread;           /* immutable once started */

  /* owner only */
  weft__fiber sched;          /* the scheduler loop's own context */
  weft__task *current;        /* the running task, NULL in the scheduler */
  weft__task *prev;           /* the task that just switched out: weft__finish_switch */
  int prev_intent;            /* and what it asked for (WEFT__INTENT_*) */
  weft__task *lifo;           /* the LIFO slot */
  weft__task *spawned_stack[WEFT__SPAWN_STACK]; /* newest last: run newest first, joined inline */
  int n_spawned_stack;
  weft__task *taken[WEFT__TAKE_BATCH]; /* claimed from the own deque, not yet run (owner only) */
  int n_taken, taken_next;
  weft__task *pinned_head;    /* pinned tasks ready to run here (migrate mode: all), FIFO by link.next */
  weft__task *pinned_tail;
  int lifo_streak;
  bool deque_turn;            /* take_local: the deque's turn before the pinned side (they alternate) */
  uint32_t tick;
  bool yield_timers;          /* a yield found a timer due (weft__worker_yield_timers) */
  bool parked_seen;           /* weft__schedule_spawn's hint: some worker was parked */
  bool notify_owed;           /* a wake deferred by push_back_unpinned (core/worker.c) */
  bool searching;
  uint64_t rng;               /* xorshift state: victims, the migrate test mode */
  weft__task *free_tasks;     /* a magazine of free records, linked by link.next (core/worker.c) */
  size_t n_free;              /* its count, at most MAG_TASKS */
  weft__task *spare;          /* a full magazine, or NULL */
  weft__stack_pool stacks;
  weft__timer_heap timers;
  weft__reactor reactor;
  int64_t idle_since;         /* when it last ran out of work (0 = busy): stack trimming */
  int64_t spawned_local;      /* mirrors of the atomics below, owner's copy */
  int64_t finished_local;

  /* shared */
  weft__deque deque;          /* owner pushes; anyone takes */
  weft__inbox inbox;          /* anyone pushes; owner takes */
  _Alignas(WEFT_CACHELINE) _Atomic int64_t spawned;  /* owner stores (release), shutdown reads */
  _Atomic int64_t finished;   /* owner stores (release), shutdown reads */
  _Atomic uint64_t switches;  /* owner stores (relaxed): the debug monitor samples it */
  _Atomic(weft__task *) running; /* owner stores (weft__debug_set_running): the debug monitor reads it */
  _Atomic int sleeping;       /* 1 while in (or about to enter) the reactor's park: see send_to */
  bool parked;                /* under rt->idle.lock: in the sleepers list */
  int start_error;            /* written by the worker before the start barrier */
} weft__worker;

/* The calling thread's worker, or NULL. Not inlinable: a task may resume on
 * another thread, so the compiler must not cache the thread-local's address
 * across a switch. */
struct weft__worker *weft__worker_self(void);

/* Make t runnable. From a worker thread of t's runtime it goes to that
 * worker (LIFO slot when `lifo`, else the back of the deque); from any other
 * thread to the inject queue, waking a worker. Pinned tasks go to their
 * worker's inbox; the migrate test mode sends every task to another worker.
 * Any thread. */
void weft__schedule(weft__task *t, bool lifo);

/* weft__schedule for n tasks of one runtime (not lifo); from a thread
 * outside the runtime the unpinned ones go to the inject queue in one
 * batch with one notification. Any thread. */
void weft__schedule_many(weft__task **t, size_t n);

/* A task spawned by the calling task goes onto its worker's spawn stack
 * (owner-only: not stealable, so that joining it soon runs it inline with no
 * stale queue entry, and the newest runs first: fork-join goes depth-first)
 * while every worker is busy; when a worker is parked it goes to the deque
 * instead, where the parked worker, notified, can steal it. A full spawn
 * stack moves its oldest entry to the deque (stealable: the oldest spawns
 * are the biggest pieces of fork-join work). Owner only. */
void weft__schedule_spawn(weft__worker *w, weft__task *t);

/* OWNER: take t off the spawn stack if it is there (a join about to run it
 * inline). */
bool weft__spawn_stack_remove(weft__worker *w, weft__task *t);

/* `running` while a callback (call_soon/call_later/call_at) runs on the
 * worker, in its scheduler context: timed as a task is, never dereferenced */
#define WEFT__RUNNING_CALLBACK ((weft__task *)(uintptr_t)1)

/* OWNER, debug mode only: t starts (or resumes) running on w, for the
 * debug monitor (core/debug.c): it names `running` and times it from the
 * last change of `switches`, so every change of the running task moves
 * the counter, a join that runs its child inline included (else the
 * joiner's time is added to the child's, and the child's to the joiner's).
 * release: pairs with the monitor's acquire: it reads the task's name,
 * initialised before the task reached this worker. */
static inline void weft__debug_set_running(weft__worker *w, weft__task *t) {
  weft__store(&w->running, t, RELEASE);
  weft__store(&w->switches, weft__load(&w->switches, RELAXED) + 1, RELAXED);
}

/* The calling task (the worker's current one) switches out with intent
 * (WEFT__INTENT_PARK or _YIELD): directly to the next local task when there
 * is one, else to the scheduler. Whichever context resumes finishes the
 * switch-out on its own stack (weft__finish_switch: park, requeue or
 * recycle the task that left), so the "publish after switch" rule holds
 * whoever that is. Every ~WEFT__GLOBAL_INTERVAL switches go through the
 * scheduler for its periodic pass. */
void weft__switch_out(weft__task *self, int intent);
/* The same, for a caller that has just read its worker w (weft__worker_self)
 * and self = w->current, with no suspension since: one call fewer on the
 * yield and wait paths. */
void weft__switch_out_from(weft__worker *w, weft__task *self, int intent);
void weft__finish_switch(weft__worker *w);

/* OWNER, before a yield: when w has a timer due at `now` (0: read the
 * clock, only if w has timers), make the switch go through the
 * scheduler's periodic pass, which fires due timers before the yielder can
 * run again (asyncio checks its timers at every loop iteration). Without
 * it a task that yields with nothing else local runs again at once, and a
 * timer due on its worker waited for the next periodic pass (one switch
 * in ~30) or a suspension: a sleeper stayed asleep behind a hog that had
 * yielded (tests/test_fairness.c). Costs nothing on a worker without
 * timers, and one clock read per yield on one with some (Go's scheduler
 * reads the clock on every pass where timers exist, too). */
static inline void weft__worker_yield_timers(weft__worker *w, int64_t now) {
  if (weft__likely(w->timers.len == 0)) return;
  if (!now) now = weft_now_ns();
  if (weft__timer_next(&w->timers) > now) return;
  /* direct_next bumps the tick to a multiple of the interval: no direct
   * switch, so the yielder's switch-out is finished by the scheduler,
   * which fires the timers before it requeues the yielder (behind the
   * tasks they woke; weft__finish_switch) */
  w->tick += WEFT__GLOBAL_INTERVAL - 1 - w->tick % WEFT__GLOBAL_INTERVAL;
  w->yield_timers = true;
}

/* The worker thread's main loop (pthread entry). */
void *weft__worker_main(void *arg);

/* Allocate a task record (owner worker, or NULL from other threads: global list). */
weft__task *weft__task_alloc(struct weft_runtime *rt, struct weft__worker *w);

/* The worker thread reports its start (0 or its reactor's error) (core/runtime.c). */
void weft__runtime_started(struct weft_runtime *rt, weft__worker *w);

/* Timer entry kinds (core/timer.h's `kind`): what an expired entry does.
 * Each kind has its own staleness rule, so that a stale entry never acts:
 *  WAKE      {task, wait seq}: weft__wake(task, seq, TIMER); stale when the
 *            task's wait seq moved on (core/task.h).
 *  SCOPE     {task, scope seq}: expire the task's timeout scope with that
 *            seq (core/timeout.c); stale when no entered scope of the task
 *            has it (scope seqs never repeat within a record: taskext.h).
 *  CALLBACK  {callback handle, FIFO seq}: run it unless cancelled
 *            (core/callback.c); the entry holds a reference on the handle. */
enum { WEFT__TIMER_WAKE = 0, WEFT__TIMER_SCOPE = 1, WEFT__TIMER_CALLBACK = 2 };

/* core/callback.c: run or drop a CALLBACK entry (owner, scheduler context);
 * the compaction test (drops the entry's reference when it says false); and
 * the teardown of a heap's remaining entries. */
void weft__callback_fire(void *handle);
bool weft__callback_entry_live(void *handle);
void weft__callback_drop_entries(weft__timer_heap *h);
/* Shutdown, workers joined: drop the weft_runtime_call_soon callbacks that
 * never ran. */
void weft__callback_soon_fini(struct weft_runtime *rt);

/* Run due timers (owner). */
void weft__worker_run_timers(weft__worker *w);

#endif
