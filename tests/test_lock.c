/* tests/test_lock.c: weft_lock (asyncio.Lock): ownership, FIFO order among
 * waiters, overtaking in normal mode and hand-off mode against starvation,
 * cancellation, calls from foreign threads, and a stress
 * test with cancellations on 4 workers; event, semaphore and condition
 * against foreign threads and cancels. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <weft/weft.h>

#include "sync_stress.h"
#include "test.h"

/* ------------------------------------------------------------ basics and bad input */

static weft_lock L;

static int release_other(void *arg) {
  (void)arg;
  return weft_lock_release(&L); /* held by main: not ours */
}

static int basics_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_init(&L), 0);
  ASSERT_TRUE(!weft_lock_locked(&L));
  ASSERT_EQ(weft_lock_release(&L), -EPERM); /* not held */
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  ASSERT_TRUE(weft_lock_locked(&L));
  ASSERT_EQ(weft_lock_acquire(&L), -EDEADLK); /* not reentrant */
  ASSERT_EQ(weft_lock_try_acquire(&L), -EAGAIN);
  ASSERT_EQ(weft_lock_destroy(&L), -EBUSY); /* held */
  weft_task t = weft_spawn(release_other, NULL);
  ASSERT_EQ(weft_join(t), -EPERM);
  weft_task_release(t);
  ASSERT_TRUE(weft_lock_locked(&L));
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_lock_release(&L), -EPERM);
  ASSERT_EQ(weft_lock_try_acquire(&L), 0);
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(lock_basics_and_misuse) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(basics_main, NULL, &c), 0);
}

TEST(lock_acquire_outside_a_task_is_einval) {
  weft_lock l;
  weft_lock_init(&l);
  ASSERT_EQ(weft_lock_acquire(&l), -EINVAL);
  ASSERT_EQ(weft_lock_try_acquire(&l), 0); /* a thread may try and release */
  ASSERT_EQ(weft_lock_release(&l), 0);
  ASSERT_EQ(weft_lock_destroy(&l), 0);
}

/* Debug mode prints misuse on stderr. */
TEST(lock_misuse_is_printed_in_debug_mode) {
  setenv("WEFT_DEBUG", "1", 1);
  char path[] = "/tmp/weft_test_misuse_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  unlink(path);
  int saved = dup(2);
  dup2(fd, 2);
  weft_lock l;
  weft_lock_init(&l);
  int rc = weft_lock_release(&l);
  weft_sem s;
  int rc2 = weft_sem_init(&s, -1);
  fflush(stderr);
  dup2(saved, 2);
  ASSERT_EQ(rc, -EPERM);
  ASSERT_EQ(rc2, -EINVAL);
  char buf[512] = {0};
  ASSERT_GT(pread(fd, buf, sizeof buf - 1, 0), 0);
  ASSERT_TRUE(strstr(buf, "weft: misuse: weft_lock_release") != NULL);
  ASSERT_TRUE(strstr(buf, "weft: misuse: weft_sem_init") != NULL);
  close(fd);
}

/* ------------------------------------------------------------ FIFO, overtaking, hand-off */

/* The mode every test's lock is initialised in (tests run in both). */
static unsigned lock_mode = WEFT_LOCK_FIFO;

static int order[8];
static atomic_int order_n;

static int fifo_waiter(void *arg) {
  int me = (int)(intptr_t)arg;
  int rc = weft_lock_acquire(&L);
  if (rc < 0) return rc;
  order[atomic_fetch_add(&order_n, 1)] = me;
  weft_yield(); /* hold it across a suspension */
  return weft_lock_release(&L);
}

/* Waiters are served in the order they queued. On one worker, also the two
 * modes: a running task may take the lock before the woken waiter runs
 * (normal mode); the woken waiter, losing after more than 1 ms of waiting,
 * switches hand-off mode on, and then the lock goes to it directly. */
static int fifo_main(void *arg) {
  bool one_worker = arg != NULL;
  ASSERT_EQ(weft_lock_init_mode(&L, lock_mode), 0);
  atomic_store(&order_n, 0);
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  weft_task t[5];
  for (int i = 0; i < 5; i++) {
    t[i] = weft_spawn(fifo_waiter, (void *)(intptr_t)i);
    weft_sleep_ns(1000000); /* it queues before the next one */
  }
  ASSERT_EQ(weft_lock_destroy(&L), -EBUSY);
  ASSERT_EQ(weft_lock_release(&L), 0);
  if (one_worker && lock_mode == WEFT_LOCK_FIFO) {
    /* No barging: the lock went to waiter 0, which has not run yet;
     * nobody may take it now, and a newcomer queues behind the five. */
    ASSERT_TRUE(weft_lock_locked(&L));
    ASSERT_EQ(atomic_load(&order_n), 0);
    ASSERT_EQ(weft_lock_try_acquire(&L), -EAGAIN);
    ASSERT_EQ(weft_lock_destroy(&L), -EBUSY);
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    ASSERT_EQ(atomic_load(&order_n), 5);
    ASSERT_EQ(weft_lock_release(&L), 0);
  } else if (one_worker) {
    /* Normal mode: waiter 0 was woken and has not run yet; the lock is
     * free, and the running task may take it first. */
    ASSERT_TRUE(!weft_lock_locked(&L));
    ASSERT_EQ(weft_lock_destroy(&L), -EBUSY); /* a woken waiter is on its way */
    ASSERT_EQ(weft_lock_try_acquire(&L), 0);
    weft_yield(); /* waiter 0 runs, loses, queues again at the front: it waited > 1 ms */
    ASSERT_EQ(atomic_load(&order_n), 0);
    ASSERT_EQ(weft_lock_release(&L), 0);
    /* Hand-off mode: handed to waiter 0, which has not run yet; nobody
     * may take it now. */
    ASSERT_TRUE(weft_lock_locked(&L));
    ASSERT_EQ(weft_lock_try_acquire(&L), -EAGAIN);
    ASSERT_EQ(weft_lock_acquire(&L), 0); /* queues behind the 5 */
    ASSERT_EQ(atomic_load(&order_n), 5);
    ASSERT_EQ(weft_lock_release(&L), 0);
  }
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(atomic_load(&order_n), 5);
  for (int i = 0; i < 5; i++) ASSERT_EQ(order[i], i);
  ASSERT_TRUE(!weft_lock_locked(&L));
  ASSERT_EQ(weft_lock_try_acquire(&L), 0); /* back to the fast path */
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(lock_fifo_handoff_without_barging) {
  lock_mode = WEFT_LOCK_FIFO;
  weft_config c1 = cfg_workers(1);
  ASSERT_EQ(weft_run(fifo_main, &c1, &c1), 0);
  weft_config c2 = cfg_workers(2);
  ASSERT_EQ(weft_run(fifo_main, NULL, &c2), 0);
}

TEST(lock_overtake_fifo_among_waiters_overtaking_and_handoff) {
  lock_mode = WEFT_LOCK_OVERTAKE;
  weft_config c1 = cfg_workers(1);
  ASSERT_EQ(weft_run(fifo_main, &c1, &c1), 0);
  weft_config c2 = cfg_workers(2);
  ASSERT_EQ(weft_run(fifo_main, NULL, &c2), 0);
  lock_mode = WEFT_LOCK_FIFO;
}

TEST(lock_init_mode_rejects_bad_input) {
  weft_lock l;
  ASSERT_EQ(weft_lock_init_mode(&l, 7), -EINVAL);
  ASSERT_EQ(weft_lock_init_mode(NULL, WEFT_LOCK_FIFO), -EINVAL);
  ASSERT_EQ(weft_lock_init(NULL), -EINVAL);
  ASSERT_EQ(weft_lock_init_mode(&l, WEFT_LOCK_OVERTAKE), 0);
  ASSERT_EQ(weft_lock_try_acquire(&l), 0);
  ASSERT_EQ(weft_lock_release(&l), 0);
  ASSERT_EQ(weft_lock_destroy(&l), 0);
}

/* ------------------------------------------------------------ starvation */

/* Bargers take the lock again and again, holding it across a yield, so
 * that a woken waiter always finds it taken (in normal mode it would lose
 * forever). Each victim must still get the lock VICTIM_ROUNDS times before
 * the bargers give up (after 20 s): hand-off mode serves it after ~1 ms. */
enum { BARGERS = 3, VICTIMS = 2, VICTIM_ROUNDS = 20 };

static struct {
  atomic_int victims_done;
  atomic_long barges;
  atomic_long max_wait_ns;
  atomic_int deadline_hit;
  long counter; /* under the lock */
} SV;

static int barger(void *arg) {
  (void)arg;
  int64_t deadline = weft_now_ns() + 20 * 1000000000ll;
  long n = 0;
  while (atomic_load(&SV.victims_done) < VICTIMS) {
    if (weft_now_ns() > deadline) {
      atomic_store(&SV.deadline_hit, 1);
      break;
    }
    int rc = weft_lock_acquire(&L);
    if (rc < 0) return rc;
    SV.counter++;
    weft_yield(); /* hold it across a suspension */
    if (weft_lock_release(&L) != 0) return -1;
    n++;
  }
  atomic_fetch_add(&SV.barges, n);
  return 0;
}

static int victim(void *arg) {
  (void)arg;
  for (int i = 0; i < VICTIM_ROUNDS; i++) {
    int64_t t0 = weft_now_ns();
    int rc = weft_lock_acquire(&L);
    if (rc < 0) return rc;
    long w = (long)(weft_now_ns() - t0), m = atomic_load(&SV.max_wait_ns);
    while (w > m && !atomic_compare_exchange_weak(&SV.max_wait_ns, &m, w)) {
    }
    SV.counter++;
    if (weft_lock_release(&L) != 0) return -1;
    weft_sleep_ns(100000); /* let the bargers run alone a while */
  }
  atomic_fetch_add(&SV.victims_done, 1);
  return 0;
}

static int starvation_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_init_mode(&L, lock_mode), 0);
  atomic_store(&SV.victims_done, 0);
  atomic_store(&SV.barges, 0);
  atomic_store(&SV.max_wait_ns, 0);
  atomic_store(&SV.deadline_hit, 0);
  SV.counter = 0;
  weft_task b[BARGERS], v[VICTIMS];
  for (int i = 0; i < BARGERS; i++) b[i] = weft_spawn(barger, NULL);
  weft_sleep_ns(2000000); /* the bargers own the lock */
  for (int i = 0; i < VICTIMS; i++) v[i] = weft_spawn(victim, NULL);
  for (int i = 0; i < VICTIMS; i++) {
    ASSERT_EQ(weft_join(v[i]), 0);
    weft_task_release(v[i]);
  }
  for (int i = 0; i < BARGERS; i++) {
    ASSERT_EQ(weft_join(b[i]), 0);
    weft_task_release(b[i]);
  }
  ASSERT_EQ(atomic_load(&SV.deadline_hit), 0); /* the victims were served while the bargers ran */
  ASSERT_EQ(SV.counter, atomic_load(&SV.barges) + VICTIMS * VICTIM_ROUNDS);
  ASSERT_TRUE(!weft_lock_locked(&L));
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  fprintf(stderr, "lock starvation: %ld barging acquisitions, longest victim wait %.3f ms\n",
          atomic_load(&SV.barges), (double)atomic_load(&SV.max_wait_ns) / 1e6);
  return 0;
}

TEST(lock_waiter_is_not_starved_by_running_acquirers) {
  for (int m = 0; m < 2; m++) {
    lock_mode = m ? WEFT_LOCK_OVERTAKE : WEFT_LOCK_FIFO;
    weft_config c1 = cfg_workers(1);
    ASSERT_EQ(weft_run(starvation_main, NULL, &c1), 0);
    weft_config c2 = cfg_workers(2);
    ASSERT_EQ(weft_run(starvation_main, NULL, &c2), 0);
  }
  lock_mode = WEFT_LOCK_FIFO;
}

/* ------------------------------------------------------------ cancellation */

static int plain_waiter(void *arg) {
  (void)arg;
  int rc = weft_lock_acquire(&L);
  if (rc < 0) return rc;
  return weft_lock_release(&L) == 0 ? 7 : -1;
}

static int cancel_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_init_mode(&L, lock_mode), 0);
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  weft_task a = weft_spawn(plain_waiter, NULL);
  weft_sleep_ns(1000000);
  weft_task b = weft_spawn(plain_waiter, NULL);
  weft_sleep_ns(1000000);
  weft_cancel(a);
  ASSERT_EQ(weft_join(a), -ECANCELED);
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_join(b), 7); /* the lock went to b, not lost with a */
  weft_task_release(a);
  weft_task_release(b);
  /* the last waiter cancelled: the WAITERS flag goes with it, so the fast
   * paths work again */
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  weft_task c = weft_spawn(plain_waiter, NULL);
  weft_sleep_ns(1000000);
  weft_cancel(c);
  ASSERT_EQ(weft_join(c), -ECANCELED);
  weft_task_release(c);
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_TRUE(!weft_lock_locked(&L));
  ASSERT_EQ(weft_lock_try_acquire(&L), 0);
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(lock_cancelled_waiter_does_not_take_the_lock) {
  for (int m = 0; m < 2; m++) {
    lock_mode = m ? WEFT_LOCK_OVERTAKE : WEFT_LOCK_FIFO;
    weft_config c = cfg_workers(2);
    ASSERT_EQ(weft_run(cancel_main, NULL, &c), 0);
  }
  lock_mode = WEFT_LOCK_FIFO;
}

/* A waiter cancelled while it is being handed the lock: cancel it right
 * after the release, many times; every round must end with the lock free. */
static int handoff_race_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_init_mode(&L, lock_mode), 0);
  int rounds = test_sanitized() ? 300 : 2000;
  int got = 0, cancelled = 0;
  for (int r = 0; r < rounds; r++) {
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    weft_task w = weft_spawn(plain_waiter, NULL);
    while (weft_task_done(w) == false && !weft_lock_locked(&L)) weft_yield();
    for (int i = 0; i < (r % 7); i++) weft_yield(); /* let it queue, sometimes */
    ASSERT_EQ(weft_lock_release(&L), 0);
    weft_cancel(w);
    int st = weft_join(w);
    ASSERT_TRUE(st == 7 || st == -ECANCELED);
    if (st == 7) got++; else cancelled++;
    weft_task_release(w);
    ASSERT_EQ(weft_lock_try_acquire(&L), 0); /* nobody kept it */
    ASSERT_EQ(weft_lock_release(&L), 0);
  }
  ASSERT_EQ(got + cancelled, rounds);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(lock_waiter_cancelled_at_handoff_passes_it_on) {
  for (int m = 0; m < 2; m++) {
    lock_mode = m ? WEFT_LOCK_OVERTAKE : WEFT_LOCK_FIFO;
    weft_config c = cfg_workers(2);
    ASSERT_EQ(weft_run(handoff_race_main, NULL, &c), 0);
  }
  lock_mode = WEFT_LOCK_FIFO;
}

/* ------------------------------------------------------------ foreign threads */

static atomic_int thread_holds;

static void *thread_holder(void *arg) {
  (void)arg;
  while (weft_lock_try_acquire(&L) != 0) usleep(100);
  atomic_store(&thread_holds, 1);
  usleep(20000);
  ASSERT_EQ(weft_lock_release(&L), 0); /* wakes the waiting task */
  ASSERT_EQ(weft_lock_release(&L), -EPERM);
  return NULL;
}

static void *thread_bad_release(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_release(&L), -EPERM); /* held by a task */
  return NULL;
}

static int foreign_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_init_mode(&L, lock_mode), 0);
  atomic_store(&thread_holds, 0);
  pthread_t th;
  pthread_create(&th, NULL, thread_holder, NULL);
  while (!atomic_load(&thread_holds)) weft_sleep_ns(100000);
  ASSERT_EQ(weft_lock_release(&L), -EPERM); /* the thread holds it */
  ASSERT_EQ(weft_lock_acquire(&L), 0);      /* suspends until the thread releases */
  pthread_join(th, NULL);
  pthread_create(&th, NULL, thread_bad_release, NULL);
  pthread_join(th, NULL);
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(lock_try_acquire_and_release_from_a_foreign_thread) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ stress */

static struct {
  weft_lock lock;
  long counter; /* plain: only under the lock */
  atomic_long acquired, cancelled;
  int iters;
} S;

static int stress_task(void *arg) {
  uint64_t rng = (uint64_t)(intptr_t)arg * 0x2545F4914F6CDD1Dull + 1;
  long mine = 0, cancels = 0;
  for (int i = 0; i < S.iters; i++) {
    int rc = weft_lock_acquire(&S.lock);
    if (rc == -ECANCELED) {
      cancels++;
      continue;
    }
    if (rc != 0) return -1000 + rc;
    long v = S.counter;
    if (rng_step(&rng) % 16 == 0) weft_yield(); /* hold it across a suspension (may be cancelled) */
    S.counter = v + 1;
    mine++;
    if (weft_lock_release(&S.lock) != 0) return -2000;
  }
  atomic_fetch_add(&S.acquired, mine);
  atomic_fetch_add(&S.cancelled, cancels);
  return 0;
}

static int stress_main(void *arg) {
  (void)arg;
  enum { TASKS = 48 };
  ASSERT_EQ(weft_lock_init_mode(&S.lock, lock_mode), 0);
  S.counter = 0;
  S.iters = (int)((test_sanitized() ? 8000 : 150000) * test_stress_scale() / sync_migrate_div());
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(stress_task, (void *)(intptr_t)(i + 1));
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  long never_ran = 0; /* cancelled before they started: the body never runs */
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    never_ran += st == -ECANCELED;
    weft_task_release(t[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  ASSERT_EQ(S.counter, atomic_load(&S.acquired)); /* every increment under the lock kept */
  ASSERT_EQ(atomic_load(&S.acquired) + atomic_load(&S.cancelled), (TASKS - never_ran) * S.iters);
  ASSERT_GT(atomic_load(&ca.requests), 0);
  ASSERT_TRUE(!weft_lock_locked(&S.lock)); /* free, no waiter left behind */
  ASSERT_EQ(weft_lock_destroy(&S.lock), 0);
  fprintf(stderr, "lock stress: %ld acquisitions, %ld cancelled acquires, %ld cancel requests\n",
          atomic_load(&S.acquired), atomic_load(&S.cancelled), atomic_load(&ca.requests));
  return 0;
}

TEST(lock_stress_with_cancellation_2_workers) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
}

TEST(lock_stress_with_cancellation_4_workers) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
}

TEST(lock_overtake_stress_with_cancellation_2_workers) {
  lock_mode = WEFT_LOCK_OVERTAKE;
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
  lock_mode = WEFT_LOCK_FIFO;
}

TEST(lock_overtake_stress_with_cancellation_4_workers) {
  lock_mode = WEFT_LOCK_OVERTAKE;
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
  lock_mode = WEFT_LOCK_FIFO;
}

/* ------------------------------------------------------------ lock, event, semaphore, condition against foreign threads and cancels */

static int sx_workers(void) {
  const char *w = getenv("WEFT_TEST_WORKERS");
  return w && *w ? atoi(w) : 2;
}

/* Wait until task t suspends waiting on `what` (bounded). */
static void sx_wait_on(weft_task t, const char *what) {
  for (int i = 0; i < 20000; i++) {
    if (strcmp(weft_task_waiting_on(t), what) == 0) return;
    weft_sleep_ns(50000);
  }
  TEST_FAIL("task never waited on %s", what);
}

/* -------- lock: FIFO order among waiters with cancels in the middle */
static atomic_int sx_order[64];
static atomic_int sx_order_n;
static int sx_ordered_waiter(void *arg) {
  int rc = weft_lock_acquire(&L);
  if (rc < 0) return rc;
  sx_order[atomic_fetch_add(&sx_order_n, 1)] = (int)(intptr_t)arg;
  weft_yield();
  return weft_lock_release(&L) == 0 ? 0 : -1;
}
/* arg != NULL: a thread outside the runtime holds the lock (try_acquire)
 * while the tasks queue, and releases it when told to. */
static atomic_int sx_holder_state; /* 1 holds, 2 release now, 3 released */
static void *sx_fifo_holder(void *arg) {
  (void)arg;
  if (weft_lock_try_acquire(&L) != 0) abort();
  atomic_store(&sx_holder_state, 1);
  while (atomic_load(&sx_holder_state) != 2) usleep(100);
  if (weft_lock_release(&L) != 0) abort();
  atomic_store(&sx_holder_state, 3);
  return NULL;
}
static int sx_fifo_cancel_main(void *arg) {
  bool foreign = arg != NULL;
  enum { N = 24 };
  for (int round = 0; round < 20; round++) {
    ASSERT_EQ(weft_lock_init_mode(&L, WEFT_LOCK_FIFO), 0);
    atomic_store(&sx_order_n, 0);
    pthread_t th;
    if (foreign) {
      atomic_store(&sx_holder_state, 0);
      pthread_create(&th, NULL, sx_fifo_holder, NULL);
      while (atomic_load(&sx_holder_state) != 1) weft_sleep_ns(50000);
      ASSERT_EQ(weft_lock_try_acquire(&L), -EAGAIN);
    } else {
      ASSERT_EQ(weft_lock_acquire(&L), 0);
    }
    weft_task t[N];
    for (int i = 0; i < N; i++) {
      t[i] = weft_spawn(sx_ordered_waiter, (void *)(intptr_t)i);
      sx_wait_on(t[i], "lock");
    }
    for (int i = round % 3; i < N; i += 3) weft_cancel(t[i]);
    if (round % 2) weft_sleep_ns(200000); /* let the cancelled ones leave, sometimes */
    if (foreign) {
      atomic_store(&sx_holder_state, 2);
      pthread_join(th, NULL);
    } else {
      ASSERT_EQ(weft_lock_release(&L), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
      int st = weft_join(t[i]);
      ASSERT_TRUE(st == 0 || st == -ECANCELED);
      if (i % 3 != round % 3) ASSERT_EQ(st, 0);
      ok += st == 0;
      weft_task_release(t[i]);
    }
    ASSERT_EQ(atomic_load(&sx_order_n), ok);
    for (int i = 1; i < ok; i++) ASSERT_LT(sx_order[i - 1], sx_order[i]);
    ASSERT_TRUE(!weft_lock_locked(&L));
    ASSERT_EQ(weft_lock_destroy(&L), 0);
  }
  return 0;
}
TEST_T(lock_waiters_keep_fifo_order_around_cancelled_ones, 30) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_fifo_cancel_main, NULL, &c), 0);
}
TEST_T(lock_waiters_behind_a_foreign_holder_keep_fifo_order_around_cancelled_ones, 30) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_fifo_cancel_main, (void *)1, &c), 0);
}

/* -------- lock: foreign threads' try_acquire/release racing with tasks (and cancels) */
static struct {
  weft_lock lock;
  long counter;
  atomic_long task_acq, thread_acq, cancelled;
  atomic_int stop;
  int iters;
} FR;
static int sx_fr_task(void *arg) {
  uint64_t rng = (uint64_t)(intptr_t)arg * 0x9E3779B97F4A7C15ull + 7;
  long mine = 0, c = 0;
  int64_t end = weft_now_ns() + 1500 * 1000000LL;
  for (int i = 0; i < FR.iters && weft_now_ns() < end; i++) {
    int rc = weft_lock_acquire(&FR.lock);
    if (rc == -ECANCELED) { c++; continue; }
    if (rc) return -100 + rc;
    long v = FR.counter;
    if (rng_step(&rng) % 8 == 0) weft_yield();
    FR.counter = v + 1;
    mine++;
    if (weft_lock_release(&FR.lock) != 0) return -200;
  }
  atomic_fetch_add(&FR.task_acq, mine);
  atomic_fetch_add(&FR.cancelled, c);
  return 0;
}
static void *sx_fr_thread(void *arg) {
  (void)arg;
  long mine = 0;
  while (!atomic_load(&FR.stop)) {
    if (weft_lock_try_acquire(&FR.lock) != 0) { for (int k = 0; k < 50; k++) __asm__ volatile("" ::: "memory"); continue; }
    long v = FR.counter;
    for (int k = 0; k < 20; k++) __asm__ volatile("" ::: "memory");
    FR.counter = v + 1;
    mine++;
    if (weft_lock_release(&FR.lock) != 0) abort();
  }
  atomic_fetch_add(&FR.thread_acq, mine);
  return NULL;
}
static unsigned sx_mode;
static int sx_fr_main(void *arg) {
  (void)arg;
  enum { TASKS = 24, THREADS = 2 };
  ASSERT_EQ(weft_lock_init_mode(&FR.lock, sx_mode), 0);
  FR.counter = 0;
  atomic_store(&FR.task_acq, 0); atomic_store(&FR.thread_acq, 0); atomic_store(&FR.cancelled, 0);
  atomic_store(&FR.stop, 0);
  FR.iters = (int)(40000 / sync_migrate_div());
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, sx_fr_thread, NULL);
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(sx_fr_task, (void *)(intptr_t)(i + 1));
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  atomic_store(&FR.stop, 1);
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  ASSERT_EQ(FR.counter, atomic_load(&FR.task_acq) + atomic_load(&FR.thread_acq));
  ASSERT_TRUE(!weft_lock_locked(&FR.lock));
  ASSERT_EQ(weft_lock_destroy(&FR.lock), 0);
  fprintf(stderr, "rv foreign: task %ld thread %ld cancelled %ld\n", atomic_load(&FR.task_acq),
          atomic_load(&FR.thread_acq), atomic_load(&FR.cancelled));
  return 0;
}
TEST_T(lock_foreign_threads_race_tasks_and_cancels_exactly, 60) {
  for (int m = 0; m < 2; m++) {
    sx_mode = m ? WEFT_LOCK_OVERTAKE : WEFT_LOCK_FIFO;
    weft_config c = cfg_workers((unsigned)sx_workers());
    ASSERT_EQ(weft_run(sx_fr_main, NULL, &c), 0);
  }
}

/* -------- event: foreign set then clear at once wakes every earlier waiter */
static weft_event RE;
static atomic_int re_done, re_bad;
static int sx_ev_waiter(void *arg) {
  (void)arg;
  int rc = weft_event_wait(&RE);
  if (rc) atomic_fetch_add(&re_bad, 1);
  atomic_fetch_add(&re_done, 1);
  return rc;
}
static void *sx_set_clear(void *arg) {
  (void)arg;
  weft_event_set(&RE);
  weft_event_clear(&RE);
  return NULL;
}
static int sx_ev_main(void *arg) {
  (void)arg;
  enum { N = 80 };
  for (int round = 0; round < 30; round++) {
    ASSERT_EQ(weft_event_init(&RE), 0);
    atomic_store(&re_done, 0);
    atomic_store(&re_bad, 0);
    weft_task t[N];
    for (int i = 0; i < N; i++) t[i] = weft_spawn(sx_ev_waiter, NULL);
    for (int i = 0; i < N; i++) sx_wait_on(t[i], "event");
    pthread_t th;
    pthread_create(&th, NULL, sx_set_clear, NULL);
    pthread_join(th, NULL);
    int64_t end = weft_now_ns() + 3000 * 1000000LL;
    while (atomic_load(&re_done) < N && weft_now_ns() < end) weft_sleep_ns(100000);
    ASSERT_EQ(atomic_load(&re_done), N);
    ASSERT_EQ(atomic_load(&re_bad), 0);
    for (int i = 0; i < N; i++) {
      ASSERT_EQ(weft_join(t[i]), 0);
      weft_task_release(t[i]);
    }
    ASSERT_EQ(weft_event_destroy(&RE), 0);
  }
  return 0;
}
TEST_T(event_set_then_clear_from_a_foreign_thread_wakes_every_earlier_waiter, 60) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_ev_main, NULL, &c), 0);
}

/* -------- semaphore: storm with cancels and foreign releases/try_acquires: value back exactly */
static weft_sem RS;
static atomic_long rs_held, rs_acq, rs_cancel;
static atomic_int rs_stop;
static int sx_sem_task(void *arg) {
  uint64_t rng = (uint64_t)(intptr_t)arg * 0x2545F4914F6CDD1Dull + 3;
  int64_t end = weft_now_ns() + 1500 * 1000000LL;
  long n = 0, c = 0;
  for (int i = 0; i < (int)(20000 / sync_migrate_div()) && weft_now_ns() < end; i++) {
    int rc = weft_sem_acquire(&RS);
    if (rc == -ECANCELED) { c++; continue; }
    if (rc) return -100 + rc;
    long h = atomic_fetch_add(&rs_held, 1) + 1;
    if (h > 3) return -300;
    if (rng_step(&rng) % 8 == 0) weft_yield();
    atomic_fetch_sub(&rs_held, 1);
    n++;
    if (weft_sem_release(&RS) != 0) return -200;
  }
  atomic_fetch_add(&rs_acq, n);
  atomic_fetch_add(&rs_cancel, c);
  return 0;
}
static void *sx_sem_thread(void *arg) {
  (void)arg;
  while (!atomic_load(&rs_stop)) {
    if (weft_sem_try_acquire(&RS) == 0) {
      long h = atomic_fetch_add(&rs_held, 1) + 1;
      if (h > 3) abort();
      atomic_fetch_sub(&rs_held, 1);
      int rc = weft_sem_release(&RS);
      if (rc) { fprintf(stderr, "foreign sem release %d\n", rc); abort(); }
    }
  }
  return NULL;
}
static int sx_sem_main(void *arg) {
  bool bounded = arg != NULL;
  enum { TASKS = 24 };
  ASSERT_EQ(bounded ? weft_sem_init_bounded(&RS, 3) : weft_sem_init(&RS, 3), 0);
  atomic_store(&rs_held, 0); atomic_store(&rs_acq, 0); atomic_store(&rs_cancel, 0); atomic_store(&rs_stop, 0);
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, sx_sem_thread, NULL);
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(sx_sem_task, (void *)(intptr_t)(i + 1));
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]);
    if (!(st == 0 || st == -ECANCELED)) TEST_FAIL("sem task %d: %d", i, st);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  atomic_store(&rs_stop, 1);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  ASSERT_EQ(weft_sem_value(&RS), 3);
  ASSERT_TRUE(!weft_sem_locked(&RS));
  if (bounded) ASSERT_EQ(weft_sem_release(&RS), -EOVERFLOW);
  ASSERT_EQ(weft_sem_value(&RS), 3);
  ASSERT_EQ(weft_sem_destroy(&RS), 0);
  fprintf(stderr, "rv sem: %ld acq, %ld cancelled\n", atomic_load(&rs_acq), atomic_load(&rs_cancel));
  return 0;
}
static void *sx_overflow_thread(void *arg) {
  int *rc = arg;
  *rc = weft_sem_release(&RS);
  return NULL;
}
static int sx_bounded_foreign_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_sem_init_bounded(&RS, 2), 0);
  pthread_t th;
  int rc = 0;
  pthread_create(&th, NULL, sx_overflow_thread, &rc);
  pthread_join(th, NULL);
  ASSERT_EQ(rc, -EOVERFLOW);
  ASSERT_EQ(weft_sem_value(&RS), 2);
  ASSERT_EQ(weft_sem_acquire(&RS), 0);
  pthread_create(&th, NULL, sx_overflow_thread, &rc);
  pthread_join(th, NULL);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(weft_sem_value(&RS), 2);
  ASSERT_EQ(weft_sem_destroy(&RS), 0);
  return 0;
}
TEST_T(semaphore_storm_with_cancels_and_foreign_threads_ends_at_its_value, 60) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_sem_main, NULL, &c), 0);
  ASSERT_EQ(weft_run(sx_sem_main, (void *)1, &c), 0);
  ASSERT_EQ(weft_run(sx_bounded_foreign_main, NULL, &c), 0);
}

/* -------- condition: notify(n) wakes exactly n; notify_all with cancels */
static weft_cond RC;
static atomic_int rc_woke, rc_cancelled;
static int rc_ticket; /* under L */
static bool sx_pred(void *arg) { return rc_ticket > 0 && arg; }
static int sx_cond_waiter(void *arg) {
  int rc = weft_lock_acquire(&L);
  if (rc) return rc;
  rc = arg ? weft_cond_wait_for(&RC, sx_pred, (void *)1) : weft_cond_wait(&RC);
  if (!weft_lock_locked(&L)) return -500;
  if (rc == 0) {
    if (arg) rc_ticket--;
    atomic_fetch_add(&rc_woke, 1);
  } else if (rc == -ECANCELED) {
    atomic_fetch_add(&rc_cancelled, 1);
  }
  if (weft_lock_release(&L) != 0) return -600;
  return rc;
}
static int sx_cond_main(void *arg) {
  (void)arg;
  enum { N = 20 };
  for (int round = 0; round < 15; round++) {
    ASSERT_EQ(weft_lock_init_mode(&L, round % 2 ? WEFT_LOCK_OVERTAKE : WEFT_LOCK_FIFO), 0);
    ASSERT_EQ(weft_cond_init(&RC, &L), 0);
    atomic_store(&rc_woke, 0);
    atomic_store(&rc_cancelled, 0);
    rc_ticket = 0;
    weft_task t[N];
    for (int i = 0; i < N; i++) t[i] = weft_spawn(sx_cond_waiter, NULL);
    for (int i = 0; i < N; i++) sx_wait_on(t[i], "condition");
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    ASSERT_EQ(weft_cond_notify(&RC, 7), 7);
    ASSERT_EQ(weft_cond_destroy(&RC), -EBUSY);
    ASSERT_EQ(weft_lock_release(&L), 0);
    int64_t end = weft_now_ns() + 2000 * 1000000LL;
    while (atomic_load(&rc_woke) < 7 && weft_now_ns() < end) weft_sleep_ns(100000);
    weft_sleep_ns(2000000);
    ASSERT_EQ(atomic_load(&rc_woke), 7);
    /* cancel a few, notify_all at once */
    for (int i = 0; i < N; i += 4) weft_cancel(t[i]);
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    int all = weft_cond_notify_all(&RC);
    ASSERT_TRUE(all >= 0 && all <= N - 7);
    ASSERT_EQ(weft_lock_release(&L), 0);
    int ok = 0, can = 0;
    for (int i = 0; i < N; i++) {
      int st = weft_join(t[i]);
      ASSERT_TRUE(st == 0 || st == -ECANCELED);
      ok += st == 0; can += st == -ECANCELED;
      weft_task_release(t[i]);
    }
    ASSERT_EQ(ok + can, N);
    ASSERT_EQ(atomic_load(&rc_woke), ok);
    ASSERT_TRUE(!weft_lock_locked(&L));
    ASSERT_EQ(weft_cond_destroy(&RC), 0);
    ASSERT_EQ(weft_lock_destroy(&L), 0);
  }
  /* wait_for with tickets: notify(1) per ticket, each ticket consumed once */
  ASSERT_EQ(weft_lock_init(&L), 0);
  ASSERT_EQ(weft_cond_init(&RC, &L), 0);
  atomic_store(&rc_woke, 0);
  rc_ticket = 0;
  weft_task t[N];
  for (int i = 0; i < N; i++) t[i] = weft_spawn(sx_cond_waiter, (void *)1);
  for (int i = 0; i < N; i++) sx_wait_on(t[i], "condition");
  for (int k = 0; k < N; k++) {
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    rc_ticket++;
    ASSERT_EQ(weft_cond_notify(&RC, 1), 1);
    ASSERT_EQ(weft_lock_release(&L), 0);
    int64_t end = weft_now_ns() + 2000 * 1000000LL;
    while (atomic_load(&rc_woke) < k + 1 && weft_now_ns() < end) weft_sleep_ns(50000);
    ASSERT_EQ(atomic_load(&rc_woke), k + 1);
  }
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(rc_ticket, 0);
  ASSERT_EQ(weft_cond_destroy(&RC), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}
TEST_T(condition_notify_n_wakes_exactly_n_and_notify_all_survives_cancels, 60) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_cond_main, NULL, &c), 0);
}

/* -------- destroy with waiters: -EBUSY, nothing changed */
static weft_sem DS;
static weft_event DE;
static int sx_sem_waiter(void *arg) { (void)arg; return weft_sem_acquire(&DS); }
static int sx_evw(void *arg) { (void)arg; return weft_event_wait(&DE); }
static int sx_destroy_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_lock_init(&L), 0);
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  weft_task a = weft_spawn(plain_waiter, NULL);
  sx_wait_on(a, "lock");
  ASSERT_EQ(weft_lock_destroy(&L), -EBUSY);
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_join(a), 7);
  weft_task_release(a);
  ASSERT_EQ(weft_lock_destroy(&L), 0);

  ASSERT_EQ(weft_sem_init(&DS, 0), 0);
  a = weft_spawn(sx_sem_waiter, NULL);
  sx_wait_on(a, "semaphore");
  ASSERT_EQ(weft_sem_destroy(&DS), -EBUSY);
  ASSERT_EQ(weft_sem_release(&DS), 0);
  ASSERT_EQ(weft_join(a), 0);
  weft_task_release(a);
  ASSERT_EQ(weft_sem_value(&DS), 0);
  ASSERT_EQ(weft_sem_destroy(&DS), 0);

  ASSERT_EQ(weft_event_init(&DE), 0);
  a = weft_spawn(sx_evw, NULL);
  sx_wait_on(a, "event");
  ASSERT_EQ(weft_event_destroy(&DE), -EBUSY);
  weft_event_set(&DE);
  ASSERT_EQ(weft_join(a), 0);
  weft_task_release(a);
  ASSERT_EQ(weft_event_destroy(&DE), 0);
  return 0;
}
TEST_T(destroying_a_primitive_with_waiters_is_ebusy_and_changes_nothing, 30) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_destroy_main, NULL, &c), 0);
}

/* -------- event: a thread outside the runtime sets and clears it while
 * tasks on the workers wait, a third of them cancelled at random moments;
 * after the thread's last set every waiter returns, and none is left. */
static weft_event SE;
static atomic_int se_final;
static atomic_long se_woke, se_cancelled;
static int sx_se_waiter(void *arg) {
  (void)arg;
  long w = 0, c = 0;
  for (;;) {
    int rc = weft_event_wait(&SE);
    if (rc == -ECANCELED) {
      c++;
      continue;
    }
    if (rc) return rc;
    w++;
    if (atomic_load(&se_final)) break;
    weft_yield();
  }
  atomic_fetch_add(&se_woke, w);
  atomic_fetch_add(&se_cancelled, c);
  return 0;
}
static void *sx_se_thread(void *arg) {
  (void)arg;
  uint64_t rng = 0x51ed27;
  long rounds = 2000 / sync_migrate_div();
  for (long i = 0; i < rounds; i++) {
    weft_event_set(&SE);
    usleep((useconds_t)(rng_step(&rng) % 50));
    weft_event_clear(&SE);
    usleep((useconds_t)(rng_step(&rng) % 100));
  }
  atomic_store(&se_final, 1);
  weft_event_set(&SE);
  return NULL;
}
static int sx_se_main(void *arg) {
  (void)arg;
  enum { TASKS = 12 };
  ASSERT_EQ(weft_event_init(&SE), 0);
  atomic_store(&se_final, 0);
  atomic_store(&se_woke, 0);
  atomic_store(&se_cancelled, 0);
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(sx_se_waiter, NULL);
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  for (int i = 0; i < TASKS; i++) sx_wait_on(t[i], "event"); /* all wait before the thread starts */
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  pthread_t th;
  pthread_create(&th, NULL, sx_se_thread, NULL);
  pthread_join(th, NULL);
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]); /* hangs (test timeout) if the last set missed a waiter */
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(t[i]);
  }
  ASSERT_TRUE(weft_event_is_set(&SE));
  ASSERT_EQ(weft_event_destroy(&SE), 0);
  fprintf(stderr, "rv event: %ld woken, %ld cancelled\n", atomic_load(&se_woke), atomic_load(&se_cancelled));
  return 0;
}
TEST_T(event_set_and_clear_from_a_foreign_thread_with_cancelled_waiters, 60) {
  weft_config c = cfg_workers((unsigned)sx_workers());
  ASSERT_EQ(weft_run(sx_se_main, NULL, &c), 0);
}

TEST_MAIN()
