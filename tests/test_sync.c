/* tests/test_sync.c: the core's event and bounded FIFO queue. */
#include <pthread.h>
#include <stdatomic.h>

#include <weft/weft.h>

#include "test.h"
#include "test_util.h"

/* ------------------------------------------------------------ event */

static weft_event ev;
static _Atomic int woke;

static int ev_waiter(void *arg) {
  (void)arg;
  int rc = weft_event_wait(&ev);
  if (rc == 0) atomic_fetch_add(&woke, 1);
  return rc;
}

static int event_main(void *arg) {
  (void)arg;
  weft_event_init(&ev);
  ASSERT_TRUE(!weft_event_is_set(&ev));
  weft_task t[100];
  for (int i = 0; i < 100; i++) t[i] = weft_spawn(ev_waiter, NULL);
  weft_sleep_ns(2000000);
  ASSERT_EQ(atomic_load(&woke), 0);
  ASSERT_EQ(weft_event_destroy(&ev), -EBUSY);
  weft_event_set(&ev);
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(atomic_load(&woke), 100);
  ASSERT_TRUE(weft_event_is_set(&ev));
  ASSERT_EQ(weft_event_wait(&ev), 0); /* set: returns at once */
  weft_event_clear(&ev);
  ASSERT_TRUE(!weft_event_is_set(&ev));
  /* a cancelled waiter returns -ECANCELED and leaves the list */
  weft_task c = weft_spawn(ev_waiter, NULL);
  weft_sleep_ns(1000000);
  weft_cancel(c);
  ASSERT_EQ(weft_join(c), -ECANCELED);
  weft_task_release(c);
  ASSERT_EQ(weft_event_destroy(&ev), 0);
  return 0;
}

TEST(event_set_wakes_every_waiter) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(event_main, NULL, &c), 0);
}

static void *set_from_thread(void *arg) {
  usleep(5000);
  weft_event_set(arg);
  return NULL;
}

static int foreign_set_main(void *arg) {
  (void)arg;
  weft_event e;
  weft_event_init(&e);
  pthread_t th;
  pthread_create(&th, NULL, set_from_thread, &e);
  ASSERT_EQ(weft_event_wait(&e), 0);
  pthread_join(th, NULL);
  weft_event_destroy(&e);
  return 0;
}

TEST(event_set_from_a_foreign_thread) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_set_main, NULL, &c), 0);
}

/* set wakes every waiter, including those that register while set runs:
 * each round, waiters arrive on every worker while a thread sets. */
static weft_event race_ev;
static atomic_int race_done;

static int race_waiter(void *arg) {
  (void)arg;
  int rc = weft_event_wait(&race_ev);
  if (rc == 0) atomic_fetch_add(&race_done, 1);
  return rc;
}

static void *race_setter(void *arg) {
  (void)arg;
  usleep(50);
  weft_event_set(&race_ev);
  return NULL;
}

static int race_main(void *arg) {
  (void)arg;
  enum { WAITERS = 200 };
  int rounds = test_sanitized() ? 20 : 100;
  for (int r = 0; r < rounds; r++) {
    weft_event_init(&race_ev);
    atomic_store(&race_done, 0);
    pthread_t th;
    pthread_create(&th, NULL, race_setter, NULL);
    weft_task t[WAITERS];
    for (int i = 0; i < WAITERS; i++) t[i] = weft_spawn(race_waiter, NULL);
    for (int i = 0; i < WAITERS; i++) {
      ASSERT_EQ(weft_join(t[i]), 0);
      weft_task_release(t[i]);
    }
    pthread_join(th, NULL);
    ASSERT_EQ(atomic_load(&race_done), WAITERS);
    ASSERT_EQ(weft_event_destroy(&race_ev), 0);
  }
  return 0;
}

TEST(event_set_wakes_waiters_racing_with_it) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(race_main, NULL, &c), 0);
}

/* set() owes a wake to the waiters present when it ran and to no later
 * one, even while the newest owed waiter is cancelled and the event is
 * cleared and waited on again during the set: a thread sets while the main
 * task cancels the newest waiter of generation 1, clears the event and
 * starts generation 2. Generation 2 must keep waiting until the next set. */
static weft_event gen_ev;
static atomic_int gen_woke[2], gen_arrived;

static int gen_waiter(void *arg) {
  int g = (int)(intptr_t)arg;
  if (g == 0) atomic_fetch_add(&gen_arrived, 1);
  int rc = weft_event_wait(&gen_ev);
  if (rc == 0) atomic_fetch_add(&gen_woke[g], 1);
  return rc;
}

static void *gen_setter(void *arg) {
  (void)arg;
  weft_event_set(&gen_ev);
  return NULL;
}

static int gen_main(void *arg) {
  (void)arg;
  enum { GEN1_MAX = 2000, GEN2 = 50, CANCEL = 10 };
  static weft_task g1[GEN1_MAX];
  weft_task g2[GEN2];
  /* gcc's ThreadSanitizer made 5 rounds of 2,000 a 70-second test */
  const int GEN1 = test_sanitized() ? 300 : GEN1_MAX;
  int rounds = test_sanitized() ? 2 : 20;
  for (int r = 0; r < rounds; r++) {
    weft_event_init(&gen_ev);
    atomic_store(&gen_woke[0], 0);
    atomic_store(&gen_woke[1], 0);
    atomic_store(&gen_arrived, 0);
    for (int i = 0; i < GEN1; i++) g1[i] = weft_spawn(gen_waiter, (void *)0);
    while (atomic_load(&gen_arrived) < GEN1) weft_sleep_ns(1000000);
    weft_sleep_ns(2000000); /* they all wait (a straggler is woken by the second set below) */
    pthread_t th;
    pthread_create(&th, NULL, gen_setter, NULL);
    /* once the flag is up, the set has begun and owes generation 1 only */
    for (int64_t t0 = weft_now_ns(); !weft_event_is_set(&gen_ev);) ASSERT_TRUE(weft_now_ns() - t0 < 10000000000LL);
    /* the newest leave the list while the set is under way (the yields let
     * them run here at once): one of them is likely the last waiter owed,
     * which must hand that mark on (event.c) */
    for (int i = GEN1 - CANCEL; i < GEN1; i++) weft_cancel(g1[i]);
    for (int i = 0; i < CANCEL; i++) weft_yield();
    weft_event_clear(&gen_ev);
    for (int i = 0; i < GEN2; i++) g2[i] = weft_spawn(gen_waiter, (void *)1);
    for (int i = 0; i < GEN2; i++) weft_yield(); /* they wait, maybe before the set is over */
    pthread_join(th, NULL);
    weft_sleep_ns(2000000);
    /* generation 2 waited after the clear: the earlier set owed it nothing */
    ASSERT_EQ(atomic_load(&gen_woke[1]), 0);
    weft_event_set(&gen_ev);
    int cancelled = 0;
    for (int i = 0; i < GEN1; i++) {
      int rc = weft_join(g1[i]);
      ASSERT_TRUE(rc == 0 || (i >= GEN1 - CANCEL && rc == -ECANCELED));
      cancelled += rc != 0;
      weft_task_release(g1[i]);
    }
    ASSERT_EQ(atomic_load(&gen_woke[0]), GEN1 - cancelled);
    for (int i = 0; i < GEN2; i++) {
      ASSERT_EQ(weft_join(g2[i]), 0);
      weft_task_release(g2[i]);
    }
    ASSERT_EQ(atomic_load(&gen_woke[1]), GEN2);
    ASSERT_EQ(weft_event_destroy(&gen_ev), 0);
  }
  return 0;
}

TEST(event_set_owes_only_earlier_waiters) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(gen_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ queue */

static int queue_basic_main(void *arg) {
  (void)arg;
  weft_queue q;
  ASSERT_EQ(weft_queue_init(&q, 3), 0);
  void *it;
  ASSERT_EQ(weft_queue_get_nowait(&q, &it), -EAGAIN);
  for (intptr_t i = 1; i <= 3; i++) ASSERT_EQ(weft_queue_put_nowait(&q, (void *)i), 0);
  ASSERT_TRUE(weft_queue_full(&q));
  ASSERT_EQ(weft_queue_put_nowait(&q, (void *)4), -EAGAIN);
  ASSERT_EQ(weft_queue_qsize(&q), 3);
  for (intptr_t i = 1; i <= 3; i++) {
    ASSERT_EQ(weft_queue_get(&q, &it), 0);
    ASSERT_EQ((intptr_t)it, i);
  }
  ASSERT_TRUE(weft_queue_empty(&q));
  ASSERT_EQ(weft_queue_destroy(&q), 0);
  /* unbounded: grows */
  ASSERT_EQ(weft_queue_init(&q, 0), 0);
  for (intptr_t i = 0; i < 10000; i++) ASSERT_EQ(weft_queue_put(&q, (void *)i), 0);
  for (intptr_t i = 0; i < 10000; i++) {
    ASSERT_EQ(weft_queue_get_nowait(&q, &it), 0);
    ASSERT_EQ((intptr_t)it, i);
  }
  ASSERT_TRUE(!weft_queue_full(&q));
  weft_queue_destroy(&q);
  return 0;
}

TEST(queue_fifo_bounded_and_unbounded) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(queue_basic_main, NULL, &c), 0);
}

static weft_queue pq, pq2;

static int producer(void *arg) {
  intptr_t base = (intptr_t)arg;
  for (intptr_t i = 0; i < 1000; i++)
    if (weft_queue_put(&pq, (void *)(base + i)) != 0) return -1;
  return 0;
}

static int blocking_main(void *arg) {
  (void)arg;
  weft_queue_init(&pq, 1);
  weft_task p[4];
  for (int i = 0; i < 4; i++) p[i] = weft_spawn(producer, (void *)(intptr_t)(i * 1000000));
  intptr_t last[4] = {-1, -1, -1, -1};
  for (int n = 0; n < 4000; n++) {
    void *it;
    ASSERT_EQ(weft_queue_get(&pq, &it), 0);
    intptr_t v = (intptr_t)it, who = v / 1000000, seq = v % 1000000;
    ASSERT_TRUE(seq > last[who]); /* each producer's items arrive in order */
    last[who] = seq;
  }
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(weft_join(p[i]), 0);
    weft_task_release(p[i]);
  }
  ASSERT_EQ(weft_queue_destroy(&pq), 0);
  return 0;
}

TEST(queue_put_blocks_while_full) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(blocking_main, NULL, &c), 0);
}

static int getter(void *arg) {
  (void)arg;
  void *it;
  int rc = weft_queue_get(&pq2, &it);
  return rc < 0 ? rc : (int)(intptr_t)it;
}

static int cancelled_getter_main(void *arg) {
  (void)arg;
  weft_queue_init(&pq2, 0);
  weft_task a = weft_spawn(getter, NULL);
  weft_task b = weft_spawn(getter, NULL);
  weft_sleep_ns(2000000);
  weft_cancel(a);
  ASSERT_EQ(weft_queue_put(&pq2, (void *)5), 0);
  ASSERT_EQ(weft_join(a), -ECANCELED);
  ASSERT_EQ(weft_join(b), 5); /* the item was not lost with a */
  weft_task_release(a);
  weft_task_release(b);
  ASSERT_TRUE(weft_queue_empty(&pq2));
  weft_queue_destroy(&pq2);
  return 0;
}

TEST(cancelled_getter_loses_no_item) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cancelled_getter_main, NULL, &c), 0);
}

/* Every init answers a NULL object with -EINVAL, as weft_lock_init does
 * (each but that one wrote through NULL before: SIGSEGV). Any thread. */
TEST(init_of_null_is_einval) {
  ASSERT_EQ(weft_future_init(NULL), -EINVAL);
  ASSERT_EQ(weft_event_init(NULL), -EINVAL);
  ASSERT_EQ(weft_lock_init(NULL), -EINVAL);
  weft_lock l;
  ASSERT_EQ(weft_lock_init(&l), 0);
  ASSERT_EQ(weft_cond_init(NULL, &l), -EINVAL);
  ASSERT_EQ(weft_sem_init(NULL, 1), -EINVAL);
  ASSERT_EQ(weft_sem_init_bounded(NULL, 1), -EINVAL);
  ASSERT_EQ(weft_barrier_init(NULL, 2), -EINVAL);
  ASSERT_EQ(weft_queue_init(NULL, 0), -EINVAL);
  ASSERT_EQ(weft_queue_init_lifo(NULL, 4), -EINVAL);
  ASSERT_EQ(weft_queue_init_priority(NULL, 0, NULL), -EINVAL);
  ASSERT_EQ(weft_lock_destroy(&l), 0);
}

TEST_MAIN()
