/* tests/test_fairness.c: liveness and fairness of the scheduler.
 *
 * Each test measures how late something runnable runs and fails when it is
 * held behind unrelated work while it could run (the bounds are loose: the
 * failures they catch were seconds, or forever). Every wait has a
 * deadline.
 *
 * Known limits, measured and not tested here: a task woken into a worker's
 * LIFO slot, and that worker's due timers, wait while the worker runs a
 * long task that never suspends, even when another worker is idle (300 ms
 * behind a 300 ms computation); a yield fires the due timers (tested below). Go lets idle threads take both; Tokio's
 * LIFO slot is not stealable either. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/runtime.h"
#include "core/worker.h"

#include <weft/sync.h>
#include <weft/task.h>
#include <weft/weft.h>

#include "test.h"
#include "test_util.h"

#define MSEC 1000000LL

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}
static void report(const char *name, int64_t *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp64);
  fprintf(stderr, "%s: n=%d p50 %.3f ms p99 %.3f ms max %.3f ms\n", name, n, v[n / 2] / 1e6, v[(n * 99) / 100] / 1e6,
          v[n - 1] / 1e6);
}

/* ------------------------------------------- pinned tasks that yield */

/* Two pinned tasks yielding to each other on one worker. Every other task
 * of that worker (here: one woken by its timer) must still run within a
 * bounded number of switches. Before the fix the pinned list and the inbox
 * came before the deque in take_local, and a pinned task's yield re-queued
 * it to its own inbox: the two pinned tasks ran forever, the deque never. */
#define YIELD_FOR (3000 * MSEC)
static _Atomic int stop_yielding;
/* returns 1 when it gave up (nobody stopped it: the others starved) */
static int pinned_yielder(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_pin(), 0);
  int64_t t0 = weft_now_ns();
  while (!atomic_load(&stop_yielding) && weft_now_ns() - t0 < YIELD_FOR) weft_yield();
  weft_unpin();
  return !atomic_load(&stop_yielding);
}
static int plain_yielder(void *arg) {
  (void)arg;
  int64_t t0 = weft_now_ns();
  while (!atomic_load(&stop_yielding) && weft_now_ns() - t0 < YIELD_FOR) weft_yield();
  return !atomic_load(&stop_yielding);
}

typedef struct {
  weft_fn yielder;
  int nyielders;
  int rounds;
  int64_t lateness[200];
  int n;
  int gave_up;
} sleep_probe;

static int sleeper_main(void *arg) {
  sleep_probe *p = arg;
  atomic_store(&stop_yielding, 0);
  weft_task ys[8];
  for (int i = 0; i < p->nyielders; i++) ys[i] = weft_spawn(p->yielder, NULL);
  int64_t t0 = weft_now_ns();
  weft_yield(); /* let them start (and pin themselves here) */
  p->lateness[p->n++] = weft_now_ns() - t0; /* the yield's own wait counts too */
  int64_t t_start = weft_now_ns();
  for (int r = 1; r < p->rounds && weft_now_ns() - t_start < YIELD_FOR / 2; r++) {
    int64_t t0 = weft_now_ns();
    weft_sleep_ns(1 * MSEC);
    p->lateness[p->n++] = weft_now_ns() - t0 - 1 * MSEC;
  }
  atomic_store(&stop_yielding, 1);
  for (int i = 0; i < p->nyielders; i++) {
    p->gave_up += weft_join(ys[i]);
    weft_task_release(ys[i]);
  }
  return 0;
}

static void run_sleep_probe(const char *name, weft_fn yielder, int nyielders) {
  sleep_probe p = {.yielder = yielder, .nyielders = nyielders, .rounds = 100};
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(sleeper_main, &p, &c), 0);
  report(name, p.lateness, p.n);
  ASSERT_EQ(p.gave_up, 0);  /* the sleeper ran before the yielders' deadline */
  /* every round, or as many as fit in YIELD_FOR / 2 (1.5 s): a starved
   * sleeper makes one or two (its wake-ups waited 3 s before the fix); a
   * machine loaded four times over its CPUs, 62 of 100 */
  ASSERT_GE(p.n, p.rounds / 5);
  ASSERT_TRUE(p.lateness[p.n - 1] < 500 * MSEC);
}

/* two pinned tasks waking each other through events: past the LIFO cap
 * (WEFT__LIFO_MAX) the woken one went back to the inbox, ahead of the deque */
static weft_event pp_ev[2];
static _Atomic int pp_started;
static int64_t pp_deadline; /* one for both: each leaves only when the other will */
static int pinned_pinger(void *arg) {
  int i = atomic_fetch_add(&pp_started, 1) & 1;
  (void)arg;
  ASSERT_EQ(weft_pin(), 0);
  if (i == 0) weft_event_set(&pp_ev[1]);
  while (!atomic_load(&stop_yielding) && weft_now_ns() < pp_deadline) {
    weft_event_wait(&pp_ev[i]);
    weft_event_clear(&pp_ev[i]);
    weft_event_set(&pp_ev[1 - i]);
  }
  weft_event_set(&pp_ev[1 - i]);
  weft_unpin();
  return !atomic_load(&stop_yielding);
}
TEST_T(a_sleeper_beside_pinned_ping_pong_wakes_in_time, 20) {
  weft_event_init(&pp_ev[0]);
  weft_event_init(&pp_ev[1]);
  atomic_store(&pp_started, 0);
  pp_deadline = weft_now_ns() + YIELD_FOR;
  run_sleep_probe("sleep beside a pinned ping-pong pair", pinned_pinger, 2);
}

/* control: unpinned yielders (the deque is FIFO: the sleeper runs) */
TEST_T(a_sleeper_beside_plain_yielders_wakes_in_time, 20) { run_sleep_probe("sleep beside 2 plain yielders", plain_yielder, 2); }

TEST_T(a_sleeper_beside_pinned_yielders_wakes_in_time, 20) {
  run_sleep_probe("sleep beside 2 pinned yielders", pinned_yielder, 2);
}

/* The same starvation of a task that is ready at once (no timer): spawned
 * into the deque, then two pinned yielders keep the worker. */
static _Atomic int64_t ran_at;
static int mark_ran(void *arg) {
  (void)arg;
  atomic_store(&ran_at, weft_now_ns());
  return 0;
}
static int ready_main(void *arg) {
  int64_t *late = arg;
  atomic_store(&stop_yielding, 0);
  atomic_store(&ran_at, 0);
  int64_t t0 = weft_now_ns();
  weft_task y1 = weft_spawn(pinned_yielder, NULL), y2 = weft_spawn(pinned_yielder, NULL);
  weft_yield();
  weft_task m = weft_spawn(mark_ran, NULL);
  /* this task waits on an event nobody sets, with a deadline: it leaves
   * the worker to the others */
  weft_event ev;
  weft_event_init(&ev);
  weft_timeout s;
  for (int i = 0; i < 2000 && !atomic_load(&ran_at); i++) {
    ASSERT_EQ(weft_timeout_enter(&s, 1 * MSEC), 0);
    weft_timeout_leave(&s, weft_event_wait(&ev));
  }
  int64_t at = atomic_load(&ran_at);
  *late = (at ? at : weft_now_ns()) - t0;
  atomic_store(&stop_yielding, 1);
  weft_join(m);
  weft_task_release(m);
  weft_join(y1);
  weft_join(y2);
  weft_task_release(y1);
  weft_task_release(y2);
  return 0;
}
TEST_T(a_ready_task_beside_pinned_yielders_runs, 20) {
  int64_t late = 0;
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(ready_main, &late, &c), 0);
  fprintf(stderr, "ready task beside 2 pinned yielders: ran after %.3f ms\n", late / 1e6);
  ASSERT_TRUE(late < 500 * MSEC);
}

/* ------------------------------------------- to_thread completions */

/* A to_thread completion must not wait for an unrelated, later job that
 * the same pool thread runs next. The pool thread defers completions behind
 * a job predicted short (the one before ran < 5 us); when that job runs
 * long, the deferred completions wait for it all. */
static _Atomic int64_t gate_until;
static int job_gate(void *arg) { /* holds the one pool thread while the two jobs queue */
  (void)arg;
  while (weft_now_ns() < atomic_load(&gate_until)) {
  }
  return 0;
}
static int job_fast(void *arg) {
  (void)arg;
  return 7;
}
static int job_slow(void *arg) {
  (void)arg;
  struct timespec ts = {1, 0};
  nanosleep(&ts, NULL);
  return 0;
}
static _Atomic int64_t fast_done_at;
static int call_gate(void *arg) { return weft_to_thread(job_gate, arg); }
static int call_fast(void *arg) {
  (void)arg;
  int rc = weft_to_thread(job_fast, NULL);
  atomic_store(&fast_done_at, weft_now_ns());
  return rc;
}
static int call_slow(void *arg) { return weft_to_thread(job_slow, arg); }

#define NFAST 4
static int to_thread_main(void *arg) {
  int64_t *late = arg;
  atomic_store(&stop_yielding, 0);
  /* busy workers: waking a task is then an inject push, no unpark */
  weft_task y1 = weft_spawn(plain_yielder, NULL), y2 = weft_spawn(plain_yielder, NULL);
  atomic_store(&gate_until, weft_now_ns() + 30 * MSEC);
  weft_task g = weft_spawn(call_gate, NULL);
  weft_sleep_ns(5 * MSEC);
  weft_task f[NFAST];
  for (int i = 0; i < NFAST; i++) f[i] = weft_spawn(call_fast, NULL);
  weft_sleep_ns(5 * MSEC);
  weft_task s = weft_spawn(call_slow, NULL);
  for (int i = 0; i < NFAST; i++) ASSERT_EQ(weft_join(f[i]), 7);
  *late = atomic_load(&fast_done_at) - atomic_load(&gate_until); /* the last fast result */
  atomic_store(&stop_yielding, 1);
  weft_join(g);
  weft_join(s);
  weft_join(y1);
  weft_join(y2);
  weft_task_release(g);
  for (int i = 0; i < NFAST; i++) weft_task_release(f[i]);
  weft_task_release(s);
  weft_task_release(y1);
  weft_task_release(y2);
  return 0;
}
TEST_T(a_to_thread_result_does_not_wait_for_the_next_job, 20) {
  int64_t v[2];
  for (int i = 0; i < 2; i++) {
    weft_config c = cfg_workers(2);
    c.blocking_threads = 1;
    ASSERT_EQ(weft_run(to_thread_main, &v[i], &c), 0);
  }
  report("to_thread: last fast result after the gate job", v, 2);
  ASSERT_TRUE(v[1] < 500 * MSEC); /* held behind the 1 s job, it was 1 s */
}

/* ------------------------------------------- foreign submissions */

/* A foreign thread's submission while every worker runs yielding tasks:
 * served by the periodic pass (WEFT__GLOBAL_INTERVAL switches). */
static _Atomic int64_t probe_ran;
static int probe_fn(void *arg) {
  (void)arg;
  atomic_store(&probe_ran, weft_now_ns());
  return 0;
}
static int busy_main(void *arg) {
  (void)arg;
  weft_task y[4];
  for (int i = 0; i < 4; i++) y[i] = weft_spawn(plain_yielder, NULL);
  for (int i = 0; i < 4; i++) {
    weft_join(y[i]);
    weft_task_release(y[i]);
  }
  return 0;
}
TEST_T(a_foreign_submission_beside_yielding_workers_runs_soon, 20) {
  atomic_store(&stop_yielding, 0);
  weft_config c = cfg_workers(2);
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  weft_task m;
  ASSERT_EQ(weft_runtime_submit(rt, busy_main, NULL, &m), 0);
  struct timespec ts = {0, 20 * MSEC};
  nanosleep(&ts, NULL);
  int64_t v[200];
  int n = 0;
  for (; n < 200; n++) {
    atomic_store(&probe_ran, 0);
    int64_t t0 = weft_now_ns();
    weft_task p;
    ASSERT_EQ(weft_runtime_submit(rt, probe_fn, NULL, &p), 0);
    ASSERT_EQ(weft_runtime_wait(rt, p), 0);
    v[n] = atomic_load(&probe_ran) - t0;
  }
  atomic_store(&stop_yielding, 1);
  ASSERT_EQ(weft_runtime_wait(rt, m), 0);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  report("foreign submit beside 4 yielders on 2 workers", v, n);
  ASSERT_TRUE(v[n - 1] < 500 * MSEC);
}

/* ------------------------------------------- a local push beside a parking worker */

/* A task wakes two waiters (the second wake pushes the first out of the
 * LIFO slot to the deque: push_back_unpinned, notify_local) and then holds
 * its worker's thread. The other worker is just parking (the park hook
 * delays it 0-20 us). The pushed task must run on the free worker at once.
 * Without a fence between the push and notify_local's load of the idle
 * state, both sides could miss each other: 7 stalls of 200 ms in about
 * 560,000 rounds; a run here catches it about one time in twenty. */
#define HOLD_MAX (200 * MSEC)
static uint64_t lrng = 0x2545F4914F6CDD1Dull;
static uint64_t lrnd(void) {
  lrng ^= lrng << 13;
  lrng ^= lrng >> 7;
  lrng ^= lrng << 17;
  return lrng;
}
static weft_event lp_ev;
static _Atomic int lp_waiting;
static _Atomic int64_t lp_ran, lp_set_at;
static _Atomic int lp_parked_beside; /* a stall with another worker parked */
static int lp_waiter(void *arg) {
  (void)arg;
  atomic_fetch_add(&lp_waiting, 1);
  weft_event_wait(&lp_ev);
  int64_t z = 0;
  atomic_compare_exchange_strong(&lp_ran, &z, weft_now_ns());
  return 0;
}
static int lp_setter(void *arg) {
  spin_ns((int64_t)(intptr_t)arg);
  atomic_store(&lp_set_at, weft_now_ns());
  weft_event_set(&lp_ev);
  for (int64_t t0 = weft_now_ns(); !atomic_load(&lp_ran) && weft_now_ns() - t0 < HOLD_MAX;) {
  }
  if (!atomic_load(&lp_ran)) { /* a stall: where is everybody? */
    weft__worker *self = weft__worker_self();
    weft_runtime *rt = self->rt;
    uint32_t st = atomic_load(&rt->idle.state);
    /* a lost wake-up leaves a worker parked beside the work; one that is
     * not parked was only kept off a CPU (a loaded machine: seen under
     * TSan beside other test runs, the free worker "unparked" and not
     * sleeping for the whole 200 ms) */
    for (unsigned i = 0; i < rt->nworkers; i++)
      if (rt->workers[i] != self && atomic_load(&rt->workers[i]->sleeping)) atomic_store(&lp_parked_beside, 1);
    fprintf(stderr, "stall: setter on worker %d; idle state: %u searching, %u unparked\n", self->id, st & 0xffffu,
            st >> 16);
    for (unsigned i = 0; i < rt->nworkers; i++)
      fprintf(stderr, "  worker %u: sleeping %d, deque %u, inbox %s\n", i, atomic_load(&rt->workers[i]->sleeping),
              weft__deque_len(&rt->workers[i]->deque), weft__inbox_is_empty(&rt->workers[i]->inbox) ? "empty" : "not empty");
  }
  return 0;
}
static int lp_spin(void *arg) {
  spin_ns((int64_t)(intptr_t)arg);
  return 0;
}
TEST_T(a_task_pushed_beside_a_parking_worker_runs_at_once, 20) {
#ifndef WEFT_TEST_HOOKS
  TEST_SKIP("needs WEFT_TEST_HOOKS");
#else
  weft__test_park_hook = test_park_delay;
  weft_config c = cfg_workers(2);
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  long stalls = 0, descheduled = 0, n = 0, slow = 0;
  int64_t maxl = 0, t_end = weft_now_ns() + 3000 * MSEC * test_stress_scale();
  for (; n < 100000 && stalls < 3 && weft_now_ns() < t_end; n++) {
    weft_event_init(&lp_ev);
    atomic_store(&lp_parked_beside, 0);
    atomic_store(&lp_waiting, 0);
    atomic_store(&lp_ran, 0);
    weft_task w1, w2, st, sp;
    ASSERT_EQ(weft_runtime_submit(rt, lp_waiter, NULL, &w1), 0);
    ASSERT_EQ(weft_runtime_submit(rt, lp_waiter, NULL, &w2), 0);
    while (atomic_load(&lp_waiting) < 2) sched_yield();
    spin_ns(20000); /* the waiters have suspended */
    ASSERT_EQ(weft_runtime_submit(rt, lp_spin, (void *)(intptr_t)(lrnd() % 20000), &sp), 0);
    ASSERT_EQ(weft_runtime_submit(rt, lp_setter, (void *)(intptr_t)(lrnd() % 40000), &st), 0);
    ASSERT_EQ(weft_runtime_wait(rt, st), 0);
    int64_t ran = atomic_load(&lp_ran);
    int64_t late = ran ? ran - atomic_load(&lp_set_at) : HOLD_MAX;
    if (late > maxl) maxl = late;
    if (late > 10 * MSEC) slow++;
    if (late >= HOLD_MAX - MSEC) {
      if (atomic_exchange(&lp_parked_beside, 0))
        stalls++;
      else
        descheduled++;
    }
    ASSERT_EQ(weft_runtime_wait(rt, w1), 0);
    ASSERT_EQ(weft_runtime_wait(rt, w2), 0);
    ASSERT_EQ(weft_runtime_wait(rt, sp), 0);
    weft_event_destroy(&lp_ev);
  }
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  weft__test_park_hook = NULL;
  fprintf(stderr,
          "pushed beside a parking worker: %ld rounds, %ld over 10 ms, %ld stalls (a worker parked), %ld held "
          "200 ms with no worker parked (kept off a CPU), max %.3f ms\n",
          n, slow, stalls, descheduled, maxl / 1e6);
  ASSERT_EQ(stalls, 0);
#endif
}

/* ------------------------------------------- foreign call_at, shutdown */

/* weft_runtime_call_at from a foreign thread on an idle runtime: the
 * callback's worker parks with its deadline. */
static _Atomic int64_t cb_at;
static void cb_mark(void *arg) {
  (void)arg;
  atomic_store(&cb_at, weft_now_ns());
}
TEST_T(a_foreign_call_at_fires_on_time, 20) {
  int64_t v[40];
  int n = 0;
  for (unsigned nw = 1; nw <= 2; nw++) {
    weft_config c = cfg_workers(nw);
    weft_runtime *rt;
    ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
    for (int r = 0; r < 20; r++) {
      atomic_store(&cb_at, 0);
      int64_t dl = weft_now_ns() + (r % 5 + 1) * MSEC;
      ASSERT_EQ(weft_runtime_call_at(rt, dl, cb_mark, NULL, NULL), 0);
      while (!atomic_load(&cb_at) && weft_now_ns() - dl < 1000 * MSEC) sched_yield();
      int64_t at = atomic_load(&cb_at);
      v[n++] = (at ? at : weft_now_ns()) - dl;
    }
    ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  }
  report("foreign call_at lateness (1 and 2 workers)", v, n);
  ASSERT_TRUE(v[n - 1] < 500 * MSEC);
}

/* weft_run returns promptly while a detached task sleeps (its worker parked
 * with a far timer): shutdown cancels it. */
static int far_sleeper(void *arg) {
  (void)arg;
  return weft_sleep_ns(10000 * MSEC);
}
static int run_and_leave(void *arg) {
  (void)arg;
  weft_spawn_detached(far_sleeper, NULL);
  weft_sleep_ns(2 * MSEC);
  return 0;
}
TEST_T(weft_run_returns_while_a_worker_parks_on_a_far_timer, 20) {
  for (unsigned nw = 1; nw <= 2; nw++) {
    weft_config c = cfg_workers(nw);
    int64_t t0 = weft_now_ns();
    ASSERT_EQ(weft_run(run_and_leave, NULL, &c), 0);
    int64_t d = weft_now_ns() - t0;
    fprintf(stderr, "weft_run with a 10 s sleeper left (%u workers): %.3f ms\n", nw, d / 1e6);
    ASSERT_TRUE(d < 1000 * MSEC);
  }
}

/* ------------------------------------------- due timers at a yield */

/* A yield (weft_yield, or a sleep whose deadline has passed) fires its
 * worker's due timers before the yielder runs again. One worker: a sleeper
 * waits for T; the hog spins past T, yields once (a sleep until T, which
 * has passed) and spins HOG_SPIN more. The sleeper must run at the yield,
 * not after the second spin. Before the fix the timers ran only at the
 * scheduler's periodic pass (one switch in ~30 here) or when nothing local
 * was runnable, and the hog, alone in the queues, ran again at once. */
#define HOG_SPIN (300 * MSEC)
typedef struct {
  int64_t t;          /* the sleeper's deadline */
  _Atomic int64_t woke;
  _Atomic int64_t yielded;
} due_probe;
static int due_sleeper(void *arg) {
  due_probe *p = arg;
  weft_sleep_until(p->t);
  atomic_store(&p->woke, weft_now_ns());
  return 0;
}
static int due_hog(void *arg) {
  due_probe *p = arg;
  while (weft_now_ns() < p->t + 2 * MSEC) {
  }
  atomic_store(&p->yielded, weft_now_ns());
  if ((intptr_t)p->t & 1)
    weft_sleep_until(p->t); /* passed: a yield */
  else
    weft_yield();
  spin_ns(HOG_SPIN);
  return 0;
}
static int due_main(void *arg) {
  int64_t *late = arg;
  for (int r = 0; r < 6; r++) {
    due_probe p = {.t = weft_now_ns() + 20 * MSEC + r};
    weft_task s = weft_spawn(due_sleeper, &p);
    weft_yield(); /* the sleeper starts and arms its timer */
    weft_task h = weft_spawn(due_hog, &p);
    weft_join(s);
    weft_join(h);
    weft_task_release(s);
    weft_task_release(h);
    late[r] = atomic_load(&p.woke) - atomic_load(&p.yielded);
  }
  return 0;
}
TEST_T(a_yield_fires_its_workers_due_timers, 30) {
  int64_t late[6];
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(due_main, late, &c), 0);
  report("sleeper woken after the hog's yield", late, 6);
  ASSERT_TRUE(late[5] < HOG_SPIN / 2); /* sorted by report: the worst round */
}

TEST_MAIN()
