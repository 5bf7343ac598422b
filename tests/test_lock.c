/* tests/test_lock.c: weft_lock (asyncio.Lock): ownership, FIFO order among
 * waiters, overtaking in normal mode and hand-off mode against starvation,
 * cancellation, calls from foreign threads, and a stress
 * test with cancellations on 4 workers. */
#include <pthread.h>
#include <stdatomic.h>

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

TEST_MAIN()
