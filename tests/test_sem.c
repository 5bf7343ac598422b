/* tests/test_sem.c: weft_sem (asyncio.Semaphore, BoundedSemaphore): values,
 * bounds, FIFO hand-off, cancellation, foreign threads, and a stress test. */
#include <pthread.h>
#include <stdatomic.h>

#include <weft/weft.h>

#include "sync_stress.h"
#include "test.h"

static weft_sem S1;

TEST(sem_bad_input_and_bound) {
  weft_sem s;
  ASSERT_EQ(weft_sem_init(&s, -1), -EINVAL);
  ASSERT_EQ(weft_sem_init_bounded(&s, -5), -EINVAL);
  ASSERT_EQ(weft_sem_init(&s, INT64_MAX), -EINVAL);
  ASSERT_EQ(weft_sem_init_bounded(&s, 2), 0);
  ASSERT_EQ(weft_sem_value(&s), 2);
  ASSERT_EQ(weft_sem_release(&s), -EOVERFLOW); /* past the bound */
  ASSERT_EQ(weft_sem_try_acquire(&s), 0);
  ASSERT_EQ(weft_sem_try_acquire(&s), 0);
  ASSERT_EQ(weft_sem_try_acquire(&s), -EAGAIN);
  ASSERT_TRUE(weft_sem_locked(&s));
  ASSERT_EQ(weft_sem_acquire(&s), -EINVAL); /* outside a task */
  ASSERT_EQ(weft_sem_release(&s), 0);
  ASSERT_EQ(weft_sem_release(&s), 0);
  ASSERT_EQ(weft_sem_release(&s), -EOVERFLOW);
  ASSERT_EQ(weft_sem_value(&s), 2);
  ASSERT_EQ(weft_sem_destroy(&s), 0);
  ASSERT_EQ(weft_sem_init_bounded(&s, 0), 0);
  ASSERT_EQ(weft_sem_release(&s), -EOVERFLOW);
  ASSERT_EQ(weft_sem_init(&s, 0), 0);
  for (int i = 0; i < 10; i++) ASSERT_EQ(weft_sem_release(&s), 0); /* unbounded */
  ASSERT_EQ(weft_sem_value(&s), 10);
}

static int order[8];
static atomic_int order_n;

static int sem_waiter(void *arg) {
  int me = (int)(intptr_t)arg;
  int rc = weft_sem_acquire(&S1);
  if (rc < 0) return rc;
  order[atomic_fetch_add(&order_n, 1)] = me;
  return 0; /* keeps the permit */
}

static int fifo_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_sem_init(&S1, 1), 0);
  atomic_store(&order_n, 0);
  ASSERT_EQ(weft_sem_acquire(&S1), 0);
  weft_task t[5];
  for (int i = 0; i < 5; i++) {
    t[i] = weft_spawn(sem_waiter, (void *)(intptr_t)i);
    weft_sleep_ns(1000000);
  }
  ASSERT_EQ(weft_sem_destroy(&S1), -EBUSY);
  /* cancel waiter 2: it leaves the queue */
  weft_cancel(t[2]);
  ASSERT_EQ(weft_join(t[2]), -ECANCELED);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(weft_sem_release(&S1), 0); /* handed to the oldest waiter */
    ASSERT_EQ(weft_sem_value(&S1), 0);
    ASSERT_EQ(weft_sem_try_acquire(&S1), -EAGAIN); /* no barging */
    while (atomic_load(&order_n) < i + 1) weft_sleep_ns(100000); /* it runs */
  }
  for (int i = 0; i < 5; i++) {
    int st = weft_join(t[i]);
    ASSERT_EQ(st, i == 2 ? -ECANCELED : 0);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(atomic_load(&order_n), 4);
  ASSERT_EQ(order[0], 0);
  ASSERT_EQ(order[1], 1);
  ASSERT_EQ(order[2], 3);
  ASSERT_EQ(order[3], 4);
  ASSERT_EQ(weft_sem_value(&S1), 0);
  ASSERT_EQ(weft_sem_release(&S1), 0);
  ASSERT_EQ(weft_sem_value(&S1), 1);
  ASSERT_EQ(weft_sem_destroy(&S1), 0);
  return 0;
}

TEST(sem_fifo_handoff_and_cancelled_waiter) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(fifo_main, NULL, &c), 0);
}

/* A waiter cancelled as a permit is handed to it gives the permit back. */
static int handoff_race_main(void *arg) {
  (void)arg;
  int rounds = test_sanitized() ? 300 : 2000;
  ASSERT_EQ(weft_sem_init_bounded(&S1, 1), 0);
  atomic_store(&order_n, 0);
  for (int r = 0; r < rounds; r++) {
    ASSERT_EQ(weft_sem_acquire(&S1), 0);
    weft_task w = weft_spawn(sem_waiter, (void *)(intptr_t)0);
    for (int i = 0; i < (r % 5); i++) weft_yield();
    ASSERT_EQ(weft_sem_release(&S1), 0);
    weft_cancel(w);
    int st = weft_join(w);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(w);
    if (st == 0) ASSERT_EQ(weft_sem_release(&S1), 0); /* its permit */
    atomic_store(&order_n, 0);
    ASSERT_EQ(weft_sem_value(&S1), 1); /* the permit is back either way */
  }
  ASSERT_EQ(weft_sem_destroy(&S1), 0);
  return 0;
}

TEST(sem_waiter_cancelled_at_handoff_gives_the_permit_back) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(handoff_race_main, NULL, &c), 0);
}

/* On one worker: a waiter cancelled before a release (it has not run since)
 * is skipped, as asyncio's _wake_up_next skips a cancelled future: the
 * permit is counted at once, so the value, locked() and the bound are
 * right before the cancelled waiter runs. (Before, the permit went to the
 * cancelled waiter in transit, the value stayed 0, a second release passed
 * the bound check, and the waiter gave the first permit back on top: a
 * BoundedSemaphore(1) at 2.) */
static int cancelled_first_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_sem_init_bounded(&S1, 1), 0);
  atomic_store(&order_n, 0);
  ASSERT_EQ(weft_sem_acquire(&S1), 0);
  weft_task w = weft_spawn(sem_waiter, (void *)(intptr_t)0);
  weft_sleep_ns(1000000); /* it waits */
  weft_cancel(w);         /* it has not run since: still in the list */
  ASSERT_EQ(weft_sem_release(&S1), 0);
  ASSERT_EQ(weft_sem_value(&S1), 1); /* asyncio: 1, the cancelled waiter skipped */
  ASSERT_TRUE(!weft_sem_locked(&S1));
  ASSERT_EQ(weft_sem_release(&S1), -EOVERFLOW); /* past the bound of 1 */
  ASSERT_EQ(weft_join(w), -ECANCELED);
  weft_task_release(w);
  ASSERT_EQ(weft_sem_value(&S1), 1); /* never above the bound */
  ASSERT_EQ(weft_sem_try_acquire(&S1), 0);
  ASSERT_EQ(weft_sem_try_acquire(&S1), -EAGAIN);
  ASSERT_EQ(weft_sem_release(&S1), 0);
  ASSERT_EQ(weft_sem_destroy(&S1), 0);
  return 0;
}

TEST(sem_release_skips_a_waiter_cancelled_first) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(cancelled_first_main, NULL, &c), 0);
}

static void *release_from_thread(void *arg) {
  usleep(10000);
  ASSERT_EQ(weft_sem_release(arg), 0);
  return NULL;
}

static int foreign_main(void *arg) {
  (void)arg;
  weft_sem s;
  weft_sem_init(&s, 0);
  pthread_t th;
  pthread_create(&th, NULL, release_from_thread, &s);
  ASSERT_EQ(weft_sem_acquire(&s), 0); /* woken by the thread */
  pthread_join(th, NULL);
  ASSERT_EQ(weft_sem_value(&s), 0);
  ASSERT_EQ(weft_sem_destroy(&s), 0);
  return 0;
}

TEST(sem_release_from_a_foreign_thread_wakes_a_task) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ stress */

enum { PERMITS = 3 };

static struct {
  weft_sem sem;
  atomic_int inside, max_inside;
  atomic_long acquired, cancelled;
  int iters;
} St;

static int stress_task(void *arg) {
  uint64_t rng = (uint64_t)(intptr_t)arg * 0x2545F4914F6CDD1Dull + 1;
  long mine = 0, cancels = 0;
  for (int i = 0; i < St.iters; i++) {
    int rc = weft_sem_acquire(&St.sem);
    if (rc == -ECANCELED) {
      cancels++;
      continue;
    }
    if (rc != 0) return -100;
    int in = atomic_fetch_add(&St.inside, 1) + 1;
    int m = atomic_load(&St.max_inside);
    while (in > m && !atomic_compare_exchange_weak(&St.max_inside, &m, in)) {
    }
    if (rng_step(&rng) % 8 == 0) weft_yield();
    atomic_fetch_sub(&St.inside, 1);
    mine++;
    if (weft_sem_release(&St.sem) != 0) return -101;
  }
  atomic_fetch_add(&St.acquired, mine);
  atomic_fetch_add(&St.cancelled, cancels);
  return 0;
}

static int stress_main(void *arg) {
  (void)arg;
  enum { TASKS = 48 };
  ASSERT_EQ(weft_sem_init_bounded(&St.sem, PERMITS), 0);
  St.iters = (int)((test_sanitized() ? 6000 : 100000) * test_stress_scale() / sync_migrate_div());
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(stress_task, (void *)(intptr_t)(i + 1));
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  long never_ran = 0;
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    never_ran += st == -ECANCELED;
    weft_task_release(t[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  ASSERT_LE(atomic_load(&St.max_inside), PERMITS);
  ASSERT_EQ(atomic_load(&St.acquired) + atomic_load(&St.cancelled), (TASKS - never_ran) * St.iters);
  ASSERT_EQ(weft_sem_value(&St.sem), PERMITS); /* every permit back */
  ASSERT_EQ(weft_sem_destroy(&St.sem), 0);     /* no waiter left behind */
  fprintf(stderr, "sem stress: %ld acquisitions, %ld cancelled acquires, %ld cancel requests\n",
          atomic_load(&St.acquired), atomic_load(&St.cancelled), atomic_load(&ca.requests));
  return 0;
}

TEST(sem_stress_with_cancellation_4_workers) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
}

TEST_MAIN()
