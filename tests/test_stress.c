/* tests/test_stress.c: the scheduler under load on every worker, counting
 * every item: spawns, wakes and steals across workers, cancellations racing
 * with wakeups, tasks migrating at every suspension. Meant for
 * ThreadSanitizer (zero reports) as much as for the normal build; sized by
 * WEFT_STRESS (ci: seconds; long: 10x). */
#include <stdatomic.h>

#include <weft/weft.h>

#include "test.h"

static long scaled(long ci) {
  long n = ci * test_stress_scale();
  return test_sanitized() ? n / 10 : n;
}

static weft_config cfg(unsigned workers, int migrate) {
  weft_config c = {0};
  c.workers = workers;
  c.test_migrate = migrate;
  return c;
}

/* ------------------------------------------------------------ spawns and steals */

static _Atomic long leaves;

/* A tree of tasks: fan-out spreads them over the workers through steals. */
static int tree(void *arg) {
  long depth = (long)(intptr_t)arg;
  if (depth == 0) {
    atomic_fetch_add(&leaves, 1);
    return 1;
  }
  weft_task a = weft_spawn(tree, (void *)(intptr_t)(depth - 1));
  weft_task b = weft_spawn(tree, (void *)(intptr_t)(depth - 1));
  if (weft_task_is_null(a) || weft_task_is_null(b)) return -ENOMEM;
  int ra = weft_join(a), rb = weft_join(b);
  weft_task_release(a);
  weft_task_release(b);
  return ra < 0 ? ra : rb < 0 ? rb : ra + rb;
}

static _Atomic long flat_done;
static int bump(void *arg) {
  (void)arg;
  atomic_fetch_add(&flat_done, 1);
  return 0;
}

static int spawn_storm_main(void *arg) {
  long n = (long)(intptr_t)arg;
  /* detached flat spawns (overflowing the deque into the inject queue) */
  for (long i = 0; i < n; i++) ASSERT_EQ(weft_spawn_detached(bump, NULL), 0);
  while (atomic_load(&flat_done) < n) weft_sleep_ns(100000);
  ASSERT_EQ(atomic_load(&flat_done), n);
  /* a fork-join tree */
  long depth = 1;
  while ((1L << depth) < n / 4) depth++;
  weft_task t = weft_spawn(tree, (void *)(intptr_t)depth);
  ASSERT_EQ(weft_join(t), 1L << depth);
  weft_task_release(t);
  ASSERT_EQ(atomic_load(&leaves), 1L << depth);
  return 0;
}

TEST_T(spawn_storm_counts_every_task, 300) {
  weft_config c = cfg(2, 0);
  ASSERT_EQ(weft_run(spawn_storm_main, (void *)(intptr_t)scaled(400000), &c), 0);
}

TEST_T(spawn_storm_more_workers_than_cpus, 300) {
  weft_config c = cfg(4, 0);
  ASSERT_EQ(weft_run(spawn_storm_main, (void *)(intptr_t)scaled(200000), &c), 0);
}

/* ------------------------------------------------------------ wakes across workers */

typedef struct pair {
  weft_queue ping, pong;
  long rounds;
} pair;

static int pinger(void *arg) {
  pair *p = arg;
  for (long i = 0; i < p->rounds; i++) {
    void *it;
    if (weft_queue_put(&p->ping, (void *)(intptr_t)(i + 1))) return -1;
    if (weft_queue_get(&p->pong, &it)) return -2;
    if ((intptr_t)it != i + 1) return -3;
  }
  return 0;
}

static int ponger(void *arg) {
  pair *p = arg;
  for (long i = 0; i < p->rounds; i++) {
    void *it;
    if (weft_queue_get(&p->ping, &it)) return -4;
    if (weft_queue_put(&p->pong, it)) return -5;
  }
  return 0;
}

static int ping_pong_main(void *arg) {
  long rounds = (long)(intptr_t)arg;
  enum { PAIRS = 16 };
  pair p[PAIRS];
  weft_task t[2 * PAIRS];
  for (int i = 0; i < PAIRS; i++) {
    weft_queue_init(&p[i].ping, 1);
    weft_queue_init(&p[i].pong, 1);
    p[i].rounds = rounds;
    t[2 * i] = weft_spawn(pinger, &p[i]);
    t[2 * i + 1] = weft_spawn(ponger, &p[i]);
  }
  for (int i = 0; i < 2 * PAIRS; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  for (int i = 0; i < PAIRS; i++) {
    ASSERT_EQ(weft_queue_destroy(&p[i].ping), 0);
    ASSERT_EQ(weft_queue_destroy(&p[i].pong), 0);
  }
  return 0;
}

TEST_T(wakes_across_workers, 300) {
  weft_config c = cfg(2, 0);
  ASSERT_EQ(weft_run(ping_pong_main, (void *)(intptr_t)scaled(20000), &c), 0);
}

TEST_T(wakes_with_migration_at_every_suspension, 300) {
  weft_config c = cfg(3, 1);
  ASSERT_EQ(weft_run(ping_pong_main, (void *)(intptr_t)scaled(5000), &c), 0);
}

/* ------------------------------------------------------------ cancellation racing with wakeups */

typedef struct race {
  weft_event ev;
  weft_queue q;
  _Atomic long started, got, woke, cancelled_ev, cancelled_q, cancelled_sleep, slept;
} race;

static int race_waiter(void *arg) {
  race *r = arg;
  atomic_fetch_add(&r->started, 1);
  int rc = weft_event_wait(&r->ev);
  if (rc == 0) atomic_fetch_add(&r->woke, 1);
  else if (rc == -ECANCELED) atomic_fetch_add(&r->cancelled_ev, 1);
  else return -1;
  void *it;
  rc = weft_queue_get(&r->q, &it);
  if (rc == 0) atomic_fetch_add(&r->got, 1);
  else if (rc == -ECANCELED) atomic_fetch_add(&r->cancelled_q, 1);
  else return -2;
  rc = weft_sleep_ns(50000);
  if (rc == 0) atomic_fetch_add(&r->slept, 1);
  else if (rc == -ECANCELED) atomic_fetch_add(&r->cancelled_sleep, 1);
  else return -3;
  return 0;
}

static int race_main(void *arg) {
  long n = (long)(intptr_t)arg;
  race *r = calloc(1, sizeof *r);
  weft_event_init(&r->ev);
  weft_queue_init(&r->q, 0);
  weft_task *t = calloc((size_t)n, sizeof *t);
  for (long i = 0; i < n; i++) t[i] = weft_spawn(race_waiter, r);
  weft_sleep_ns(1000000);
  /* set the event while cancelling a third of the tasks */
  uint64_t x = 88172645463325252ull;
  for (long i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if (i == n / 2) weft_event_set(&r->ev);
    if (x % 3 == 0) weft_cancel(t[i]);
    if (i % 64 == 0) weft_yield();
  }
  weft_event_set(&r->ev);
  /* feed the queue one item per task; cancel more meanwhile */
  for (long i = 0; i < n; i++) {
    ASSERT_EQ(weft_queue_put(&r->q, (void *)1), 0);
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if (x % 5 == 0) weft_cancel(t[(long)(x >> 8) % n]);
    if (i % 32 == 0) weft_yield();
  }
  long unstarted = 0; /* cancelled before it ran: its body never ran (asyncio) */
  for (long i = 0; i < n; i++) {
    int rc = weft_join(t[i]);
    if (rc == -ECANCELED) unstarted++;
    else ASSERT_EQ(rc, 0);
    weft_task_release(t[i]);
  }
  /* exact accounting: every task that ran passed each stage exactly once,
   * and every item is either taken by a getter or still in the queue */
  long ran = atomic_load(&r->started);
  ASSERT_EQ(ran + unstarted, n);
  ASSERT_EQ(atomic_load(&r->woke) + atomic_load(&r->cancelled_ev), ran);
  ASSERT_EQ(atomic_load(&r->got) + atomic_load(&r->cancelled_q), ran);
  ASSERT_EQ(atomic_load(&r->slept) + atomic_load(&r->cancelled_sleep), ran);
  ASSERT_EQ(atomic_load(&r->got) + (long)weft_queue_qsize(&r->q), n);
  ASSERT_EQ(weft_event_destroy(&r->ev), 0);
  ASSERT_EQ(weft_queue_destroy(&r->q), 0);
  free(t);
  free(r);
  return 0;
}

TEST_T(cancellation_races_with_wakeups, 300) {
  weft_config c = cfg(2, 0);
  for (int round = 0; round < 5; round++) ASSERT_EQ(weft_run(race_main, (void *)(intptr_t)scaled(20000), &c), 0);
}

TEST_T(cancellation_races_with_migration, 300) {
  weft_config c = cfg(3, 1);
  ASSERT_EQ(weft_run(race_main, (void *)(intptr_t)scaled(10000), &c), 0);
}

/* ------------------------------------------------------------ many joiners, cancelled joiners */

static int slow_value(void *arg) {
  weft_sleep_ns(200000);
  return (int)(intptr_t)arg;
}

typedef struct joinctx {
  weft_task target;
  _Atomic long ok, cancelled;
} joinctx;

static int joiner(void *arg) {
  joinctx *j = arg;
  int rc = weft_join(j->target);
  if (rc == 7) atomic_fetch_add(&j->ok, 1);
  else if (rc == -ECANCELED) atomic_fetch_add(&j->cancelled, 1);
  else return -1;
  return 0;
}

static int joiners_main(void *arg) {
  long n = (long)(intptr_t)arg;
  for (int round = 0; round < 20; round++) {
    joinctx j = {0};
    j.target = weft_spawn(slow_value, (void *)7);
    weft_task *t = calloc((size_t)n, sizeof *t);
    for (long i = 0; i < n; i++) t[i] = weft_spawn(joiner, &j);
    weft_yield();
    if (round % 4 == 3) weft_cancel(t[n / 2]); /* forwards to the target: everyone sees -ECANCELED */
    long unstarted = 0; /* a joiner cancelled before it ran never joined */
    for (long i = 0; i < n; i++) {
      int rc = weft_join(t[i]);
      if (rc == -ECANCELED) unstarted++;
      else ASSERT_EQ(rc, 0);
      weft_task_release(t[i]);
    }
    ASSERT_LE(unstarted, 1);
    ASSERT_EQ(atomic_load(&j.ok) + atomic_load(&j.cancelled) + unstarted, n);
    int st = weft_join(j.target);
    if (st == 7) ASSERT_EQ(atomic_load(&j.ok) + unstarted, n);
    else ASSERT_EQ(atomic_load(&j.cancelled), n);
    weft_task_release(j.target);
    free(t);
  }
  return 0;
}

TEST_T(many_joiners_one_task, 300) {
  weft_config c = cfg(2, 0);
  ASSERT_EQ(weft_run(joiners_main, (void *)(intptr_t)scaled(2000), &c), 0);
}

TEST_MAIN()
