/* tests/test_wakeup.c: no lost wake-ups in the idle protocol (core/idle.h):
 * a runnable task must not wait while a worker is parked.
 *
 * Each test measures how long a woken task took to run. A lost wake shows
 * as a stall: the task runs only when something unrelated ends (a blocked
 * worker gives up after STALL) or never. A slow but delivered wake on a
 * busy machine is only printed. A test hook (WEFT_TEST_HOOKS) delays a
 * worker for 0-20 us just before it registers as parked, as a preemption
 * would: this window hid a lost wake-up that appeared 11-79 times in
 * 2,000-5,000 rounds at 2 workers with the delay, never without it.
 * Workers: WEFT_TEST_WORKERS (default 2). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/runtime.h"
#include "core/task.h"

#include <weft/sync.h>
#include <weft/task.h>
#include <weft/weft.h>

#include "test.h"
#include "test_util.h"

#define MSEC 1000000LL
#define STALL (1000 * MSEC) /* a wake this late was lost */
#define SLOW (100 * MSEC)   /* printed, not fatal: the machine is shared */

static unsigned nworkers(void) {
  const char *s = getenv("WEFT_TEST_WORKERS");
  return s ? (unsigned)atoi(s) : 2;
}
static long rounds(long base) { return base * test_stress_scale(); }

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) { /* the test thread's (xorshift) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* ------------------------------------------------------- the park hook */

/* Before the runtime starts: the workers read the hook without a lock, and
 * thread creation orders this store before their loads. */
static void delay_parking(void) {
#ifdef WEFT_TEST_HOOKS
  weft__test_park_hook = test_park_delay;
#endif
}
static void stop_delaying(void) { /* after shutdown */
#ifdef WEFT_TEST_HOOKS
  weft__test_park_hook = NULL;
#endif
}

/* ------------------------------------------------------- latencies */

typedef struct {
  long n, slow, stalls;
  int64_t max;
} lat_t;
static void lat_add(lat_t *l, int64_t ns) {
  l->n++;
  if (ns > l->max) l->max = ns;
  if (ns > SLOW) l->slow++;
  if (ns >= STALL) l->stalls++;
}
static void lat_check(const char *name, const lat_t *l) {
  if (l->slow || l->stalls)
    fprintf(stderr, "%s: %ld rounds, max %.1f ms, %ld over %lld ms, %ld stalls\n", name, l->n, l->max / 1e6, l->slow,
            SLOW / MSEC, l->stalls);
  ASSERT_TRUE(l->n > 0);
  ASSERT_EQ(l->stalls, 0);
}

/* ------------------------------------------- a task beside a held worker */

/* A foreign thread submits a task that holds its worker's thread until a
 * second task, submitted right after, has run: just as the workers go
 * idle. The other worker is free, so the second task must run at once. */
static _Atomic int64_t probe_at;
static _Atomic int busy_done;
static int spin_task(void *arg) {
  spin_ns((int64_t)(intptr_t)arg);
  atomic_fetch_add(&busy_done, 1);
  return 0;
}
static int holder_task(void *arg) {
  (void)arg;
  for (int64_t t0 = weft_now_ns(); !atomic_load(&probe_at) && weft_now_ns() - t0 < STALL + 100 * MSEC;) {
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL); /* holds this worker's thread, as a long task does */
  }
  return 0;
}
static int probe_task(void *arg) {
  (void)arg;
  atomic_store(&probe_at, weft_now_ns());
  return 0;
}

TEST_T(a_task_submitted_beside_a_held_worker_runs_at_once, 300) {
  delay_parking();
  weft_config c = cfg_workers(nworkers());
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  lat_t l = {0};
  long n = rounds(1000);
  unsigned nw = nworkers();
  for (long r = 0; r < n && l.stalls < 3; r++) {
    atomic_store(&probe_at, 0);
    atomic_store(&busy_done, 0);
    for (unsigned i = 0; i < nw; i++)
      ASSERT_EQ(weft_runtime_submit(rt, spin_task, (void *)(intptr_t)(rnd() % 20000), NULL), 0);
    int64_t d = (int64_t)(rnd() % 40000);
    if (rnd() & 1) { /* just after every worker went idle, or while they do */
      while (atomic_load(&busy_done) < (int)nw) {
      }
      spin_ns(d / 8);
    } else {
      spin_ns(d);
    }
    weft_task h, p;
    ASSERT_EQ(weft_runtime_submit(rt, holder_task, NULL, &h), 0);
    int64_t t0 = weft_now_ns();
    ASSERT_EQ(weft_runtime_submit(rt, probe_task, NULL, &p), 0);
    ASSERT_EQ(weft_runtime_wait(rt, p), 0);
    ASSERT_EQ(weft_runtime_wait(rt, h), 0);
    lat_add(&l, atomic_load(&probe_at) - t0);
  }
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  stop_delaying();
  lat_check("beside a held worker", &l);
}

/* ------------------------------------------- a foreign thread's event set */

/* A foreign thread sets an event a task waits on, a few random
 * microseconds after the workers went idle. */
static weft_event ev;
static _Atomic int64_t woke_at;
static _Atomic int stop_waiting;
static int event_waiter(void *arg) {
  (void)arg;
  while (!atomic_load(&stop_waiting)) {
    weft_event_wait(&ev);
    weft_event_clear(&ev);
    atomic_store(&woke_at, weft_now_ns());
  }
  return 0;
}

TEST_T(an_event_set_from_a_foreign_thread_wakes_its_waiter_at_once, 300) {
  delay_parking();
  weft_config c = cfg_workers(nworkers());
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  weft_event_init(&ev);
  weft_task t;
  ASSERT_EQ(weft_runtime_submit(rt, event_waiter, NULL, &t), 0);
  lat_t l = {0};
  long n = rounds(1000);
  for (long r = 0; r < n; r++) {
    struct timespec ts = {0, (long)(rnd() % 300000)};
    nanosleep(&ts, NULL);
    atomic_store(&woke_at, 0);
    if (r == n - 1) atomic_store(&stop_waiting, 1);
    int64_t t0 = weft_now_ns();
    weft_event_set(&ev);
    while (!atomic_load(&woke_at) && weft_now_ns() - t0 < STALL) sched_yield();
    int64_t at = atomic_load(&woke_at);
    lat_add(&l, at ? at - t0 : STALL);
    if (!at) break; /* lost for good */
  }
  atomic_store(&stop_waiting, 1);
  weft_event_set(&ev);
  ASSERT_EQ(weft_runtime_wait(rt, t), 0);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  stop_delaying();
  lat_check("foreign event set", &l);
}

/* ------------------------------------------- a token around pinned tasks */

/* Pinned tasks, one per worker in turn, hand a token around with random
 * pauses (some holding the thread, so the others park): every hop wakes a
 * task on another worker through its inbox. */
#define RING 4
static weft_event ring_ev[RING];
static _Atomic int64_t ring_set_at[RING];
static _Atomic long ring_hops;
static long ring_limit;
static lat_t ring_lat;
static pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;
static int ring_task(void *arg) {
  int i = (int)(intptr_t)arg;
  weft_event_wait(&ring_ev[i]); /* ring_main pinned us where we belong */
  for (;;) {
    weft_event_clear(&ring_ev[i]);
    int64_t now = weft_now_ns();
    if (atomic_fetch_add(&ring_hops, 1) >= ring_limit) {
      for (int k = 0; k < RING; k++) weft_event_set(&ring_ev[k]);
      return 0;
    }
    pthread_mutex_lock(&ring_mu);
    lat_add(&ring_lat, now - atomic_load(&ring_set_at[i]));
    uint64_t r = rnd();
    pthread_mutex_unlock(&ring_mu);
    if (r % 4 == 0) {
      struct timespec ts = {0, (long)(r % 100000)};
      nanosleep(&ts, NULL);
    } else {
      spin_ns((int64_t)(r % 20000));
    }
    int j = (i + 1) % RING;
    atomic_store(&ring_set_at[j], weft_now_ns());
    weft_event_set(&ring_ev[j]);
    weft_event_wait(&ring_ev[i]);
  }
}
static int ring_main(void *arg) {
  (void)arg;
  weft_task t[RING];
  unsigned nw = (unsigned)weft_worker_count();
  for (int i = 0; i < RING; i++) {
    weft_event_init(&ring_ev[i]);
    t[i] = weft__spawn_pinned((unsigned)i % nw, ring_task, (void *)(intptr_t)i, NULL);
    ASSERT_TRUE(t[i].rec != NULL);
  }
  weft_sleep_ns(5 * MSEC);
  atomic_store(&ring_set_at[0], weft_now_ns());
  weft_event_set(&ring_ev[0]);
  for (int i = 0; i < RING; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  return 0;
}

TEST_T(a_token_passed_between_pinned_tasks_is_never_held_up, 300) {
  delay_parking();
  ring_limit = rounds(3000);
  weft_config c = cfg_workers(nworkers());
  ASSERT_EQ(weft_run(ring_main, NULL, &c), 0);
  stop_delaying();
  lat_check("pinned ring", &ring_lat);
}

/* ------------------------------------------- timers on an idle runtime */

/* A task sleeps a random short time while nothing else runs: its worker
 * must wake at the deadline, wherever the task moved. */
static int sleeper(void *arg) {
  lat_t *l = arg;
  long n = rounds(500);
  for (long r = 0; r < n; r++) {
    int64_t d = (int64_t)(rnd() % 2000000);
    int64_t t0 = weft_now_ns();
    weft_sleep_ns(d);
    lat_add(l, weft_now_ns() - t0 - d);
    if (r % 3 == 0) weft_yield(); /* maybe move */
  }
  return 0;
}

TEST_T(a_sleep_on_an_idle_runtime_ends_on_time, 300) {
  delay_parking();
  lat_t l = {0};
  weft_config c = cfg_workers(nworkers());
  ASSERT_EQ(weft_run(sleeper, &l, &c), 0);
  stop_delaying();
  lat_check("sleep on an idle runtime (oversleep)", &l);
}

/* weft_call_later from a worker whose timer heap was empty, which then
 * parks: the callback must fire at its deadline. */
static _Atomic int64_t fired_at;
static void fire(void *arg) {
  (void)arg;
  atomic_store(&fired_at, weft_now_ns());
}
static int arm_call_later(void *arg) {
  int64_t *due = arg;
  int64_t d = (int64_t)(rnd() % 1000000);
  atomic_store(&fired_at, 0);
  *due = weft_now_ns() + d;
  return weft_call_later(d, fire, NULL, NULL) < 0 ? -1 : 0;
}

TEST_T(a_call_later_armed_before_parking_fires_on_time, 300) {
  delay_parking();
  weft_config c = cfg_workers(nworkers());
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  lat_t l = {0};
  long n = rounds(500);
  for (long r = 0; r < n; r++) {
    int64_t due = 0;
    ASSERT_EQ(weft_runtime_call(rt, arm_call_later, &due), 0);
    while (!atomic_load(&fired_at) && weft_now_ns() - due < STALL) sched_yield();
    int64_t at = atomic_load(&fired_at);
    lat_add(&l, at ? at - due : STALL);
    if (!at) break;
    struct timespec ts = {0, (long)(rnd() % 200000)};
    nanosleep(&ts, NULL);
  }
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  stop_delaying();
  lat_check("call_later then park (late)", &l);
}

TEST_MAIN()
