/* tests/test_queue.c: weft_queue's kinds (LIFO, priority), join/task_done,
 * shutdown (graceful, immediate), bad input, foreign threads, and stress
 * tests with cancellation on 4 workers (every item got exactly once), and a
 * queue, lock and semaphore shared by the tasks of two runtimes. The
 * FIFO basics are in test_sync.c. */
#include <pthread.h>
#include <stdatomic.h>

#include <weft/weft.h>

#include "sync_stress.h"
#include "task_util.h"
#include "test.h"

static int cmp_int(const void *a, const void *b) {
  intptr_t x = (intptr_t)a, y = (intptr_t)b;
  return (x > y) - (x < y);
}

TEST(queue_bad_input) {
  weft_queue q;
  ASSERT_EQ(weft_queue_init(&q, (size_t)-1), -EINVAL); /* a negative maxsize */
  ASSERT_EQ(weft_queue_init_lifo(&q, (size_t)-5), -EINVAL);
  ASSERT_EQ(weft_queue_init_priority(&q, 0, NULL), -EINVAL);
  ASSERT_EQ(weft_queue_init_ex(&q, 0, (enum weft_queue_kind)7, NULL), -EINVAL);
  ASSERT_EQ(weft_queue_init(&q, 2), 0);
  void *it;
  ASSERT_EQ(weft_queue_put(&q, (void *)1), -EINVAL); /* outside a task */
  ASSERT_EQ(weft_queue_get(&q, &it), -EINVAL);
  ASSERT_EQ(weft_queue_join(&q), -EINVAL);
  ASSERT_EQ(weft_queue_task_done(&q), -EOVERFLOW); /* nothing was put */
  ASSERT_EQ(weft_queue_destroy(&q), 0);
}

/* ------------------------------------------------------------ putter hand-over */

static weft_queue HQ;

static int handover_putter(void *arg) { return weft_queue_put(&HQ, arg); }

/* On one worker, so that the woken putter has not run when main looks. */
static int handover_main(void *arg) {
  (void)arg;
  void *it;
  ASSERT_EQ(weft_queue_init(&HQ, 1), 0);
  /* A get that frees the slot puts the waiting putter's item in for it. */
  ASSERT_EQ(weft_queue_put(&HQ, (void *)1), 0);
  weft_task p = weft_spawn(handover_putter, (void *)2);
  weft_sleep_ns(1000000); /* it waits: full */
  ASSERT_EQ(weft_queue_get(&HQ, &it), 0);
  ASSERT_PTR_EQ(it, (void *)1);
  ASSERT_TRUE(weft_queue_full(&HQ)); /* its item is in already */
  ASSERT_EQ(weft_queue_get_nowait(&HQ, &it), 0);
  ASSERT_PTR_EQ(it, (void *)2);
  ASSERT_EQ(weft_join(p), 0);
  weft_task_release(p);
  /* A putter cancelled before the get: its item is not put. */
  ASSERT_EQ(weft_queue_put(&HQ, (void *)3), 0);
  p = weft_spawn(handover_putter, (void *)4);
  weft_sleep_ns(1000000);
  weft_cancel(p); /* it has not run since: still in the list */
  ASSERT_EQ(weft_queue_get(&HQ, &it), 0);
  ASSERT_PTR_EQ(it, (void *)3);
  ASSERT_EQ(weft_queue_get_nowait(&HQ, &it), -EAGAIN);
  ASSERT_EQ(weft_join(p), -ECANCELED);
  weft_task_release(p);
  /* Two putters: each get moves the oldest one's item in, in order. */
  ASSERT_EQ(weft_queue_put(&HQ, (void *)5), 0);
  weft_task a = weft_spawn(handover_putter, (void *)6);
  weft_sleep_ns(1000000);
  weft_task b = weft_spawn(handover_putter, (void *)7);
  weft_sleep_ns(1000000);
  for (intptr_t want = 5; want <= 7; want++) {
    ASSERT_EQ(weft_queue_get(&HQ, &it), 0);
    ASSERT_PTR_EQ(it, (void *)want);
  }
  ASSERT_EQ(weft_join(a), 0);
  ASSERT_EQ(weft_join(b), 0);
  weft_task_release(a);
  weft_task_release(b);
  for (int k = 0; k < 6; k++) ASSERT_EQ(weft_queue_task_done(&HQ), 0); /* 6 items were put (not 4) */
  ASSERT_EQ(weft_queue_task_done(&HQ), -EOVERFLOW);
  ASSERT_EQ(weft_queue_destroy(&HQ), 0);
  return 0;
}

static int handover_getter(void *arg) {
  (void)arg;
  void *it;
  int rc = weft_queue_get(&HQ, &it);
  return rc < 0 ? rc : (int)(intptr_t)it;
}

/* On one worker: a put into an empty queue hands the item to the oldest
 * waiting getter, unless that getter was cancelled first. */
static int getter_handover_main(void *arg) {
  (void)arg;
  void *it;
  ASSERT_EQ(weft_queue_init(&HQ, 4), 0);
  weft_task a = weft_spawn(handover_getter, NULL);
  weft_sleep_ns(1000000); /* it waits: empty */
  weft_task b = weft_spawn(handover_getter, NULL);
  weft_sleep_ns(1000000);
  ASSERT_EQ(weft_queue_put(&HQ, (void *)11), 0);
  ASSERT_EQ(weft_queue_qsize(&HQ), 0); /* handed to a, not buffered */
  ASSERT_EQ(weft_queue_put(&HQ, (void *)12), 0);
  ASSERT_EQ(weft_queue_qsize(&HQ), 0); /* handed to b */
  ASSERT_EQ(weft_join(a), 11);
  ASSERT_EQ(weft_join(b), 12);
  weft_task_release(a);
  weft_task_release(b);
  /* cancelled before the put: the item is buffered, and goes to the next getter */
  a = weft_spawn(handover_getter, NULL);
  weft_sleep_ns(1000000);
  b = weft_spawn(handover_getter, NULL);
  weft_sleep_ns(1000000);
  weft_cancel(a); /* it has not run since: still in the list */
  ASSERT_EQ(weft_queue_put(&HQ, (void *)13), 0);
  ASSERT_EQ(weft_join(a), -ECANCELED);
  ASSERT_EQ(weft_join(b), 13); /* a passed the wakeup on */
  weft_task_release(a);
  weft_task_release(b);
  ASSERT_EQ(weft_queue_get_nowait(&HQ, &it), -EAGAIN);
  for (int k = 0; k < 3; k++) ASSERT_EQ(weft_queue_task_done(&HQ), 0);
  ASSERT_EQ(weft_queue_task_done(&HQ), -EOVERFLOW);
  ASSERT_EQ(weft_queue_destroy(&HQ), 0);
  return 0;
}

TEST(queue_put_hands_the_item_to_a_waiting_getter) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(getter_handover_main, NULL, &c), 0);
}

TEST(queue_get_puts_a_waiting_putters_item_for_it) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(handover_main, NULL, &c), 0);
}

TEST(queue_lifo_and_priority_order) {
  weft_queue q;
  void *it;
  ASSERT_EQ(weft_queue_init_lifo(&q, 0), 0);
  for (intptr_t i = 0; i < 100; i++) ASSERT_EQ(weft_queue_put_nowait(&q, (void *)i), 0); /* grows */
  for (intptr_t i = 99; i >= 0; i--) {
    ASSERT_EQ(weft_queue_get_nowait(&q, &it), 0);
    ASSERT_EQ((intptr_t)it, i);
  }
  ASSERT_EQ(weft_queue_get_nowait(&q, &it), -EAGAIN);
  ASSERT_EQ(weft_queue_destroy(&q), 0);

  ASSERT_EQ(weft_queue_init_lifo(&q, 3), 0);
  for (intptr_t i = 0; i < 3; i++) ASSERT_EQ(weft_queue_put_nowait(&q, (void *)i), 0);
  ASSERT_TRUE(weft_queue_full(&q));
  ASSERT_EQ(weft_queue_put_nowait(&q, (void *)9), -EAGAIN);
  ASSERT_EQ(weft_queue_get_nowait(&q, &it), 0);
  ASSERT_EQ((intptr_t)it, 2);
  ASSERT_EQ(weft_queue_destroy(&q), 0);

  ASSERT_EQ(weft_queue_init_priority(&q, 0, cmp_int), 0);
  uint64_t rng = 7;
  enum { N = 1000 };
  for (int i = 0; i < N; i++) ASSERT_EQ(weft_queue_put_nowait(&q, (void *)(intptr_t)(rng_step(&rng) % 500)), 0);
  ASSERT_EQ(weft_queue_qsize(&q), N);
  intptr_t last = -1;
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(weft_queue_get_nowait(&q, &it), 0);
    ASSERT_GE((intptr_t)it, last);
    last = (intptr_t)it;
  }
  ASSERT_TRUE(weft_queue_empty(&q));
  ASSERT_EQ(weft_queue_destroy(&q), 0);

  /* bounded priority queue; a big bounded queue starts small and grows */
  ASSERT_EQ(weft_queue_init_priority(&q, 4, cmp_int), 0);
  intptr_t in[4] = {5, 1, 4, 2};
  for (int i = 0; i < 4; i++) ASSERT_EQ(weft_queue_put_nowait(&q, (void *)in[i]), 0);
  ASSERT_EQ(weft_queue_put_nowait(&q, (void *)0), -EAGAIN);
  intptr_t want[4] = {1, 2, 4, 5};
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(weft_queue_get_nowait(&q, &it), 0);
    ASSERT_EQ((intptr_t)it, want[i]);
  }
  ASSERT_EQ(weft_queue_destroy(&q), 0);
  ASSERT_EQ(weft_queue_init(&q, 5000), 0);
  for (intptr_t i = 0; i < 5000; i++) ASSERT_EQ(weft_queue_put_nowait(&q, (void *)i), 0);
  ASSERT_EQ(weft_queue_put_nowait(&q, (void *)1), -EAGAIN);
  for (intptr_t i = 0; i < 5000; i++) {
    ASSERT_EQ(weft_queue_get_nowait(&q, &it), 0);
    ASSERT_EQ((intptr_t)it, i);
  }
  ASSERT_EQ(weft_queue_destroy(&q), 0);
}

/* Growth races: a bounded queue larger than its first buffer, filled by
 * many tasks at once (a putter that drops the lock to grow may find the
 * queue full, or already grown, when it comes back). */
static weft_queue GQ;
static atomic_long grow_put;

static int grow_filler(void *arg) {
  (void)arg;
  for (;;) {
    int rc = weft_queue_put_nowait(&GQ, (void *)1);
    if (rc == -EAGAIN) return 0;
    if (rc != 0) return rc;
    atomic_fetch_add(&grow_put, 1);
  }
}

static int grow_main(void *arg) {
  (void)arg;
  size_t sizes[] = {1500, 2049, 5000};
  for (int k = 0; k < 3; k++) {
    for (int round = 0; round < 20; round++) {
      ASSERT_EQ(weft_queue_init(&GQ, sizes[k]), 0);
      atomic_store(&grow_put, 0);
      weft_task t[8];
      for (int i = 0; i < 8; i++) t[i] = weft_spawn(grow_filler, NULL);
      for (int i = 0; i < 8; i++) {
        ASSERT_EQ(weft_join(t[i]), 0);
        weft_task_release(t[i]);
      }
      ASSERT_EQ(atomic_load(&grow_put), (long)sizes[k]);
      ASSERT_EQ(weft_queue_qsize(&GQ), sizes[k]);
      ASSERT_TRUE(weft_queue_full(&GQ));
      ASSERT_EQ(weft_queue_destroy(&GQ), 0);
    }
  }
  return 0;
}

TEST(queue_bounded_growth_under_concurrent_puts) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(grow_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ join / task_done */

static weft_queue Q;
static atomic_int joined;

static int joiner(void *arg) {
  (void)arg;
  int rc = weft_queue_join(&Q);
  if (rc == 0) atomic_fetch_add(&joined, 1);
  return rc;
}

static int worker_task(void *arg) {
  (void)arg;
  for (;;) {
    void *it;
    int rc = weft_queue_get(&Q, &it);
    if (rc < 0) return rc == -ESHUTDOWN ? 0 : rc;
    weft_yield();
    if (weft_queue_task_done(&Q) != 0) return -1;
  }
}

static int join_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_queue_init(&Q, 0), 0);
  atomic_store(&joined, 0);
  ASSERT_EQ(weft_queue_join(&Q), 0); /* nothing unfinished */
  for (intptr_t i = 1; i <= 3; i++) ASSERT_EQ(weft_queue_put(&Q, (void *)i), 0);
  weft_task j[3];
  for (int i = 0; i < 3; i++) j[i] = weft_spawn(joiner, NULL);
  weft_sleep_ns(2000000);
  ASSERT_EQ(atomic_load(&joined), 0);
  ASSERT_EQ(weft_queue_destroy(&Q), -EBUSY); /* joiners wait */
  void *it;
  for (int i = 0; i < 3; i++) ASSERT_EQ(weft_queue_get(&Q, &it), 0);
  ASSERT_EQ(weft_queue_task_done(&Q), 0);
  ASSERT_EQ(weft_queue_task_done(&Q), 0);
  weft_sleep_ns(1000000);
  ASSERT_EQ(atomic_load(&joined), 0); /* one still unfinished */
  ASSERT_EQ(weft_queue_task_done(&Q), 0);
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(weft_join(j[i]), 0);
    weft_task_release(j[i]);
  }
  ASSERT_EQ(atomic_load(&joined), 3);
  ASSERT_EQ(weft_queue_task_done(&Q), -EOVERFLOW); /* one too many */

  /* workers: join returns once they marked every item done */
  weft_task w[4];
  for (int i = 0; i < 4; i++) w[i] = weft_spawn(worker_task, NULL);
  for (intptr_t i = 0; i < 1000; i++) ASSERT_EQ(weft_queue_put(&Q, (void *)i), 0);
  ASSERT_EQ(weft_queue_join(&Q), 0);
  ASSERT_TRUE(weft_queue_empty(&Q));
  /* a cancelled joiner leaves */
  ASSERT_EQ(weft_queue_put_nowait(&Q, (void *)1), 0);
  weft_task jc = weft_spawn(joiner, NULL);
  weft_sleep_ns(1000000);
  weft_cancel(jc);
  int st = weft_join(jc); /* cancelled, or the workers finished the item first */
  ASSERT_TRUE(st == -ECANCELED || st == 0);
  weft_task_release(jc);
  ASSERT_EQ(weft_queue_join(&Q), 0);
  ASSERT_EQ(weft_queue_shutdown(&Q, false), 0);
  for (int i = 0; i < 4; i++) {
    ASSERT_EQ(weft_join(w[i]), 0);
    weft_task_release(w[i]);
  }
  ASSERT_EQ(weft_queue_destroy(&Q), 0);
  return 0;
}

TEST(queue_join_and_task_done) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(join_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ shutdown */

static int blocked_get(void *arg) {
  (void)arg;
  void *it;
  return weft_queue_get(&Q, &it);
}

static int blocked_put(void *arg) {
  return weft_queue_put(&Q, arg);
}

static int shutdown_main(void *arg) {
  (void)arg;
  void *it;
  /* graceful: gets drain, then fail; puts fail; a blocked getter wakes */
  ASSERT_EQ(weft_queue_init(&Q, 2), 0);
  weft_task g = weft_spawn(blocked_get, NULL);
  weft_sleep_ns(1000000);
  ASSERT_EQ(weft_queue_shutdown(&Q, false), 0);
  ASSERT_EQ(weft_join(g), -ESHUTDOWN);
  weft_task_release(g);
  ASSERT_TRUE(weft_queue_is_shutdown(&Q));
  ASSERT_EQ(weft_queue_put(&Q, (void *)1), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_put_nowait(&Q, (void *)1), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_get_nowait(&Q, &it), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_shutdown(&Q, false), 0); /* again: harmless */
  ASSERT_EQ(weft_queue_destroy(&Q), 0);

  ASSERT_EQ(weft_queue_init(&Q, 2), 0);
  ASSERT_EQ(weft_queue_put(&Q, (void *)1), 0);
  ASSERT_EQ(weft_queue_put(&Q, (void *)2), 0);
  weft_task p = weft_spawn(blocked_put, (void *)3); /* full: waits */
  weft_sleep_ns(1000000);
  ASSERT_EQ(weft_queue_shutdown(&Q, false), 0);
  ASSERT_EQ(weft_join(p), -ESHUTDOWN); /* nothing put */
  weft_task_release(p);
  ASSERT_EQ(weft_queue_get(&Q, &it), 0);
  ASSERT_EQ((intptr_t)it, 1);
  ASSERT_EQ(weft_queue_get_nowait(&Q, &it), 0);
  ASSERT_EQ((intptr_t)it, 2);
  ASSERT_EQ(weft_queue_get(&Q, &it), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_destroy(&Q), 0);

  /* immediate: the items are dropped, join returns, gets fail at once */
  ASSERT_EQ(weft_queue_init(&Q, 0), 0);
  atomic_store(&joined, 0);
  for (intptr_t i = 0; i < 5; i++) ASSERT_EQ(weft_queue_put(&Q, (void *)i), 0);
  ASSERT_EQ(weft_queue_get(&Q, &it), 0); /* one taken, not yet done */
  weft_task j = weft_spawn(joiner, NULL);
  weft_sleep_ns(1000000);
  ASSERT_EQ(weft_queue_shutdown(&Q, true), 0);
  ASSERT_EQ(weft_queue_qsize(&Q), 0);
  weft_sleep_ns(1000000);
  ASSERT_EQ(atomic_load(&joined), 0); /* the item taken is still unfinished */
  ASSERT_EQ(weft_queue_task_done(&Q), 0);
  ASSERT_EQ(weft_join(j), 0);
  weft_task_release(j);
  ASSERT_EQ(weft_queue_get(&Q, &it), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_task_done(&Q), -EOVERFLOW);
  ASSERT_EQ(weft_queue_destroy(&Q), 0);
  return 0;
}

TEST(queue_shutdown_graceful_and_immediate) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(shutdown_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ foreign threads */

static void *thread_put(void *arg) {
  usleep(5000);
  ASSERT_EQ(weft_queue_put_nowait(arg, (void *)42), 0); /* wakes the getter */
  return NULL;
}

static void *thread_get(void *arg) {
  void *it;
  while (weft_queue_get_nowait(arg, &it) == -EAGAIN) usleep(100);
  ASSERT_EQ((intptr_t)it, 7); /* the oldest */
  return NULL;
}

static int foreign_main(void *arg) {
  (void)arg;
  weft_queue q;
  weft_queue_init(&q, 1);
  pthread_t th;
  pthread_create(&th, NULL, thread_put, &q);
  void *it;
  ASSERT_EQ(weft_queue_get(&q, &it), 0);
  ASSERT_EQ((intptr_t)it, 42);
  pthread_join(th, NULL);
  ASSERT_EQ(weft_queue_put(&q, (void *)7), 0);
  pthread_create(&th, NULL, thread_get, &q);
  ASSERT_EQ(weft_queue_put(&q, (void *)43), 0); /* full until the thread takes 7 */
  ASSERT_EQ(weft_queue_get(&q, &it), 0);
  ASSERT_EQ((intptr_t)it, 43);
  pthread_join(th, NULL);
  ASSERT_EQ(weft_queue_destroy(&q), 0);
  return 0;
}

/* task_done and shutdown from a thread wake a joiner and a getter. */
static void *thread_done_and_shutdown(void *arg) {
  void *it;
  while (weft_queue_get_nowait(arg, &it) == -EAGAIN) usleep(100);
  usleep(5000);
  ASSERT_EQ(weft_queue_task_done(arg), 0); /* releases the joiner */
  usleep(5000);
  ASSERT_EQ(weft_queue_shutdown(arg, false), 0); /* wakes the getter */
  return NULL;
}

static weft_queue *TQ;
static int tq_getter(void *arg) {
  (void)arg;
  void *it;
  return weft_queue_get(TQ, &it);
}

static int foreign_join_main(void *arg) {
  (void)arg;
  weft_queue q;
  weft_queue_init(&q, 0);
  TQ = &q;
  ASSERT_EQ(weft_queue_put(&q, (void *)1), 0);
  pthread_t th;
  pthread_create(&th, NULL, thread_done_and_shutdown, &q);
  ASSERT_EQ(weft_queue_join(&q), 0);
  weft_task g = weft_spawn(tq_getter, NULL);
  ASSERT_EQ(weft_join(g), -ESHUTDOWN);
  weft_task_release(g);
  pthread_join(th, NULL);
  ASSERT_EQ(weft_queue_destroy(&q), 0);
  return 0;
}

TEST(queue_task_done_and_shutdown_from_a_foreign_thread) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_join_main, NULL, &c), 0);
}

TEST(queue_nowait_calls_from_a_foreign_thread) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ stress */

static struct {
  weft_queue q;
  long per_producer;
  atomic_uchar *seen;  /* [producers * per_producer] */
  atomic_long got, cancelled_puts, cancelled_gets;
} St;

enum { PRODUCERS = 12, CONSUMERS = 12 };

/* Item i of producer p is p * per_producer + i + 1 (0 ends a consumer). */
static int stress_producer(void *arg) {
  long p = (long)(intptr_t)arg;
  for (long i = 0; i < St.per_producer; i++) {
    void *item = (void *)(intptr_t)(p * St.per_producer + i + 1);
    int rc;
    while ((rc = weft_queue_put(&St.q, item)) == -ECANCELED) atomic_fetch_add(&St.cancelled_puts, 1);
    if (rc != 0) return -100;
  }
  return 0;
}

static int stress_consumer(void *arg) {
  (void)arg;
  for (;;) {
    void *it;
    int rc = weft_queue_get(&St.q, &it);
    if (rc == -ECANCELED) {
      atomic_fetch_add(&St.cancelled_gets, 1);
      continue;
    }
    if (rc != 0) return -100;
    intptr_t v = (intptr_t)it;
    if (v == 0) return 0;
    if (atomic_fetch_add(&St.seen[v - 1], 1) != 0) return -101; /* twice */
    atomic_fetch_add(&St.got, 1);
  }
}

static int stress_run(size_t maxsize, enum weft_queue_kind kind) {
  St.per_producer = (test_sanitized() ? 8000 : 100000) * test_stress_scale() / sync_migrate_div();
  long total = PRODUCERS * St.per_producer;
  St.seen = calloc((size_t)total, 1);
  atomic_store(&St.got, 0);
  atomic_store(&St.cancelled_puts, 0);
  atomic_store(&St.cancelled_gets, 0);
  ASSERT_EQ(weft_queue_init_ex(&St.q, maxsize, kind, cmp_int), 0);
  weft_task prod[PRODUCERS], cons[CONSUMERS], victims[(PRODUCERS + CONSUMERS) / 3];
  int nv = 0;
  for (int i = 0; i < CONSUMERS; i++) {
    cons[i] = weft_spawn(stress_consumer, NULL);
    if (i % 3 == 0) victims[nv++] = cons[i];
  }
  for (int i = 0; i < PRODUCERS; i++) {
    prod[i] = weft_spawn(stress_producer, (void *)(intptr_t)i);
    if (i % 3 == 0) victims[nv++] = prod[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, nv, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  long never_ran = 0;
  for (int i = 0; i < PRODUCERS; i++) {
    int st = weft_join(prod[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    if (st == -ECANCELED) { /* cancelled before it started: put its items here */
      never_ran++;
      for (long k = 0; k < St.per_producer; k++)
        ASSERT_EQ(weft_queue_put(&St.q, (void *)(intptr_t)(i * St.per_producer + k + 1)), 0);
    }
    weft_task_release(prod[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  /* Let the consumers drain every item before the end markers go in: in a
   * LIFO or priority queue (NULL is the smallest) a marker would be taken
   * before the items under it, and its consumer would leave them there.
   * Eight consumers are never cancelled, so the queue empties. */
  for (int waited = 0; !weft_queue_empty(&St.q); waited++) {
    ASSERT_TRUE(waited < 300000); /* 30 s */
    weft_sleep_ns(100000);
  }
  /* One end marker per consumer; a consumer cancelled before it started
   * never takes its marker, so stop once every consumer is done (a
   * blocking put could wait forever on a bounded queue). */
  for (int i = 0; i < CONSUMERS; i++) {
    for (;;) {
      int rc = weft_queue_put_nowait(&St.q, NULL);
      if (rc == 0) break;
      ASSERT_EQ(rc, -EAGAIN);
      bool all_done = true;
      for (int k = 0; k < CONSUMERS; k++) all_done = all_done && weft_task_done(cons[k]);
      if (all_done) break;
      weft_sleep_ns(100000);
    }
  }
  for (int i = 0; i < CONSUMERS; i++) {
    int st = weft_join(cons[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(cons[i]);
  }
  /* consumers cancelled before they started left their end markers */
  void *it;
  while (weft_queue_get_nowait(&St.q, &it) == 0) ASSERT_PTR_EQ(it, NULL);
  ASSERT_EQ(atomic_load(&St.got), total);
  for (long i = 0; i < total; i++) ASSERT_EQ(atomic_load(&St.seen[i]), 1);
  ASSERT_EQ(weft_queue_destroy(&St.q), 0); /* no waiter left behind */
  free(St.seen);
  fprintf(stderr, "queue stress maxsize=%zu kind=%d: %ld items, %ld cancelled puts, %ld cancelled gets, %ld requests\n",
          maxsize, (int)kind, total, atomic_load(&St.cancelled_puts), atomic_load(&St.cancelled_gets), atomic_load(&ca.requests));
  (void)never_ran;
  return 0;
}

static int stress_main(void *arg) {
  (void)arg;
  ASSERT_EQ(stress_run(1, WEFT_QUEUE_FIFO), 0);
  ASSERT_EQ(stress_run(16, WEFT_QUEUE_FIFO), 0);
  ASSERT_EQ(stress_run(0, WEFT_QUEUE_FIFO), 0);
  ASSERT_EQ(stress_run(8, WEFT_QUEUE_PRIORITY), 0);
  ASSERT_EQ(stress_run(4, WEFT_QUEUE_LIFO), 0);
  return 0;
}

TEST(queue_stress_with_cancellation_4_workers) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ getter hand-over vs order and shutdown
 * (each failed before: the hand-over gave a waiting getter the first item
 * put whatever the queue kind, and survived an immediate shutdown). */

static weft_queue RQ;
static int rq_getter(void *arg) {
  (void)arg;
  void *it;
  int rc = weft_queue_get(&RQ, &it);
  return rc < 0 ? rc : (int)(intptr_t)it;
}

/* asyncio.PriorityQueue: a getter waiting on an empty queue, two puts
 * before it runs (5 then 1): the getter gets 1, the smallest (asyncio's
 * woken getter takes the best item when it runs). */
static int handover_order_main(void *arg) {
  int kind = (int)(intptr_t)arg;
  if (kind == WEFT_QUEUE_PRIORITY)
    ASSERT_EQ(weft_queue_init_priority(&RQ, 0, cmp_int), 0);
  else
    ASSERT_EQ(weft_queue_init_lifo(&RQ, 0), 0);
  weft_task g = weft_spawn(rq_getter, NULL);
  weft_sleep_ns(1000000); /* it waits: empty */
  ASSERT_EQ(weft_queue_put_nowait(&RQ, (void *)5), 0);
  ASSERT_EQ(weft_queue_put_nowait(&RQ, (void *)1), 0);
  int got = weft_join(g);
  weft_task_release(g);
  void *it = NULL;
  ASSERT_EQ(weft_queue_get_nowait(&RQ, &it), 0);
  ASSERT_EQ(got, 1);          /* asyncio: the smallest / the newest */
  ASSERT_PTR_EQ(it, (void *)5);
  ASSERT_EQ(weft_queue_destroy(&RQ), 0);
  return 0;
}

TEST(priority_queue_waiting_getter_gets_the_smallest) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(handover_order_main, (void *)(intptr_t)WEFT_QUEUE_PRIORITY, &c), 0);
}

TEST(lifo_queue_waiting_getter_gets_the_newest) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(handover_order_main, (void *)(intptr_t)WEFT_QUEUE_LIFO, &c), 0);
}

/* Python 3.13: put_nowait into an empty queue with a waiting getter, then
 * shutdown(immediate=True) before the getter runs: the item is dropped (and
 * counted done once the getter has run: join then returns at once), the
 * getter raises QueueShutDown. */
static int handover_shutdown_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_queue_init(&RQ, 0), 0);
  weft_task g = weft_spawn(rq_getter, NULL);
  weft_sleep_ns(1000000); /* it waits: empty */
  ASSERT_EQ(weft_queue_put_nowait(&RQ, (void *)7), 0);
  ASSERT_EQ(weft_queue_shutdown(&RQ, true), 0);
  int got = weft_join(g);
  weft_task_release(g);
  int unfinished_zero = weft_queue_task_done(&RQ) == -EOVERFLOW; /* asyncio: 0 unfinished after the drop */
  ASSERT_EQ(got, -ESHUTDOWN);
  ASSERT_TRUE(unfinished_zero);
  ASSERT_EQ(weft_queue_destroy(&RQ), 0);
  return 0;
}

TEST(shutdown_immediate_drops_an_item_handed_to_a_waiting_getter) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(handover_shutdown_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ foreign producers, shutdown from a thread
 * Two threads outside the runtime put_nowait every item into a bounded
 * queue (retrying on -EAGAIN) while getters on both workers wait, a third
 * of them cancelled at random moments; then a thread shuts the queue down
 * (graceful): the getters drain it and fail with -ESHUTDOWN. Every item is
 * got exactly once and no waiter is left behind. */

enum { FP_THREADS = 2, FP_GETTERS = 12 };
static struct {
  weft_queue q;
  long per_thread;
  atomic_uchar *seen;
  atomic_long got, cancelled, dup;
  atomic_int puts_done;
} Fp;

static void *fp_producer(void *arg) {
  long base = (long)(intptr_t)arg * Fp.per_thread;
  for (long k = 0; k < Fp.per_thread; k++) {
    int rc;
    while ((rc = weft_queue_put_nowait(&Fp.q, (void *)(intptr_t)(base + k + 1))) == -EAGAIN) sched_yield();
    if (rc) abort();
  }
  atomic_fetch_add(&Fp.puts_done, 1);
  return NULL;
}

static void *fp_shutdown(void *arg) {
  (void)arg;
  while (atomic_load(&Fp.puts_done) < FP_THREADS) usleep(200);
  if (weft_queue_shutdown(&Fp.q, false) != 0) abort();
  return NULL;
}

static int fp_getter(void *arg) {
  (void)arg;
  for (;;) {
    void *it;
    int rc = weft_queue_get(&Fp.q, &it);
    if (rc == -ECANCELED) {
      atomic_fetch_add(&Fp.cancelled, 1);
      continue;
    }
    if (rc == -ESHUTDOWN) return 0;
    if (rc) return rc;
    long i = (long)(intptr_t)it - 1;
    if (i < 0 || i >= FP_THREADS * Fp.per_thread || atomic_fetch_add(&Fp.seen[i], 1) != 0) atomic_fetch_add(&Fp.dup, 1);
    atomic_fetch_add(&Fp.got, 1);
    weft_queue_task_done(&Fp.q);
  }
}

static int foreign_producers_main(void *arg) {
  size_t maxsize = (size_t)(intptr_t)arg;
  Fp.per_thread = tu_iters(20000) / sync_migrate_div();
  long total = FP_THREADS * Fp.per_thread;
  Fp.seen = calloc((size_t)total, 1);
  atomic_store(&Fp.got, 0);
  atomic_store(&Fp.cancelled, 0);
  atomic_store(&Fp.dup, 0);
  atomic_store(&Fp.puts_done, 0);
  ASSERT_EQ(weft_queue_init(&Fp.q, maxsize), 0);
  weft_task g[FP_GETTERS], victims[FP_GETTERS / 3];
  for (int i = 0; i < FP_GETTERS; i++) {
    g[i] = weft_spawn(fp_getter, NULL);
    if (i % 3 == 0) victims[i / 3] = g[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, FP_GETTERS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  pthread_t th[FP_THREADS + 1];
  for (int i = 0; i < FP_THREADS; i++) pthread_create(&th[i], NULL, fp_producer, (void *)(intptr_t)i);
  pthread_create(&th[FP_THREADS], NULL, fp_shutdown, NULL);
  for (int i = 0; i < FP_GETTERS; i++) {
    int st = weft_join(g[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED); /* -ECANCELED: cancelled before it started */
    weft_task_release(g[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  for (int i = 0; i <= FP_THREADS; i++) pthread_join(th[i], NULL);
  ASSERT_EQ(atomic_load(&Fp.dup), 0);
  ASSERT_EQ(atomic_load(&Fp.got), total);
  for (long i = 0; i < total; i++) ASSERT_EQ(atomic_load(&Fp.seen[i]), 1);
  ASSERT_EQ(weft_queue_task_done(&Fp.q), -EOVERFLOW); /* every item marked done once */
  ASSERT_TRUE(weft_queue_empty(&Fp.q));
  ASSERT_EQ(weft_queue_destroy(&Fp.q), 0); /* no waiter left behind */
  free(Fp.seen);
  fprintf(stderr, "foreign producers maxsize=%zu: %ld items, %ld cancelled gets\n", maxsize, total,
          atomic_load(&Fp.cancelled));
  return 0;
}

TEST_T(queue_foreign_producers_and_shutdown_with_cancelled_getters_on_2_workers, 60) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_producers_main, (void *)(intptr_t)1, &c), 0);
  ASSERT_EQ(weft_run(foreign_producers_main, (void *)(intptr_t)4, &c), 0);
  ASSERT_EQ(weft_run(foreign_producers_main, (void *)(intptr_t)0, &c), 0);
}

/* ------------------------------------------------------------ two runtimes
 * A queue, a lock and a semaphore shared by the tasks of two runtimes in
 * one process: putters on one, getters on the other, every task taking the
 * lock and a permit around each item. */

static struct {
  weft_queue q;
  weft_lock lock;
  weft_sem sem;
  long per_task, counter;
  atomic_long got, held;
  atomic_uchar *seen;
} Tr;
enum { TR_TASKS = 4 };

static int tr_critical(void) {
  int rc = weft_sem_acquire(&Tr.sem);
  if (rc) return rc;
  if (atomic_fetch_add(&Tr.held, 1) >= 2) return -300;
  rc = weft_lock_acquire(&Tr.lock);
  if (rc) return rc;
  long v = Tr.counter;
  if (v % 7 == 0) weft_yield();
  Tr.counter = v + 1;
  if (weft_lock_release(&Tr.lock)) return -200;
  atomic_fetch_sub(&Tr.held, 1);
  return weft_sem_release(&Tr.sem);
}

static int tr_putter(void *arg) {
  long base = (long)(intptr_t)arg * Tr.per_task;
  for (long k = 0; k < Tr.per_task; k++) {
    int rc = tr_critical();
    if (rc) return rc;
    rc = weft_queue_put(&Tr.q, (void *)(intptr_t)(base + k + 1));
    if (rc) return rc;
  }
  return 0;
}

static int tr_getter(void *arg) {
  (void)arg;
  for (;;) {
    void *it;
    int rc = weft_queue_get(&Tr.q, &it);
    if (rc == -ESHUTDOWN) return 0;
    if (rc) return rc;
    long i = (long)(intptr_t)it - 1;
    if (i < 0 || i >= TR_TASKS * Tr.per_task || atomic_fetch_add(&Tr.seen[i], 1) != 0) return -400;
    atomic_fetch_add(&Tr.got, 1);
    rc = tr_critical();
    if (rc) return rc;
  }
}

TEST_T(primitives_shared_by_the_tasks_of_two_runtimes, 60) {
  Tr.per_task = tu_iters(5000) / sync_migrate_div();
  long total = TR_TASKS * Tr.per_task;
  Tr.seen = calloc((size_t)total, 1);
  Tr.counter = 0;
  ASSERT_EQ(weft_queue_init(&Tr.q, 2), 0);
  ASSERT_EQ(weft_lock_init(&Tr.lock), 0);
  ASSERT_EQ(weft_sem_init(&Tr.sem, 2), 0);
  weft_config c = cfg_workers(2);
  weft_runtime *ra, *rb;
  ASSERT_EQ(weft_runtime_new(&ra, &c), 0);
  ASSERT_EQ(weft_runtime_new(&rb, &c), 0);
  weft_task p[TR_TASKS], g[TR_TASKS];
  for (int i = 0; i < TR_TASKS; i++) {
    ASSERT_EQ(weft_runtime_submit(ra, tr_putter, (void *)(intptr_t)i, &p[i]), 0);
    ASSERT_EQ(weft_runtime_submit(rb, tr_getter, NULL, &g[i]), 0);
  }
  for (int i = 0; i < TR_TASKS; i++) ASSERT_EQ(weft_runtime_wait(ra, p[i]), 0);
  ASSERT_EQ(weft_queue_shutdown(&Tr.q, false), 0);
  for (int i = 0; i < TR_TASKS; i++) ASSERT_EQ(weft_runtime_wait(rb, g[i]), 0);
  ASSERT_EQ(weft_runtime_shutdown(ra), 0);
  ASSERT_EQ(weft_runtime_shutdown(rb), 0);
  ASSERT_EQ(atomic_load(&Tr.got), total);
  ASSERT_EQ(Tr.counter, 2 * total);
  ASSERT_EQ(weft_sem_value(&Tr.sem), 2);
  ASSERT_TRUE(!weft_lock_locked(&Tr.lock));
  ASSERT_EQ(weft_lock_destroy(&Tr.lock), 0);
  ASSERT_EQ(weft_sem_destroy(&Tr.sem), 0);
  ASSERT_EQ(weft_queue_destroy(&Tr.q), 0);
  free(Tr.seen);
}

/* ------------------------------------------------------------ shutdown racing blocked gets and puts
 * Putters blocked on a full queue and getters blocked on an empty one, on
 * several workers, a third of them cancelled at random moments, while a
 * thread outside the runtime shuts the queue down (graceful then
 * immediate, or immediate at once). Every item is got at most once, only
 * if its put returned 0; every put that returned 0 is got or dropped by the
 * immediate shutdown; nothing is left unfinished (join returns at once,
 * task_done is one too many) and no waiter is left behind. */

enum { SR_PUTTERS = 6, SR_GETTERS = 6 };
static struct {
  weft_queue q;
  long per_putter;
  atomic_uchar *put_ok, *seen;
  atomic_long puts, gets, bad;
  atomic_int shut_done;
  bool graceful_first;
} Sr;

static int sr_putter(void *arg) {
  long base = (long)(intptr_t)arg * Sr.per_putter;
  for (long k = 0; k < Sr.per_putter; k++) {
    int rc;
    while ((rc = weft_queue_put(&Sr.q, (void *)(intptr_t)(base + k + 1))) == -ECANCELED) {
    }
    if (rc == -ESHUTDOWN) return 0;
    if (rc) return rc;
    atomic_store(&Sr.put_ok[base + k], 1);
    atomic_fetch_add(&Sr.puts, 1);
  }
  return 0;
}

static int sr_getter(void *arg) {
  (void)arg;
  for (;;) {
    void *it;
    int rc = weft_queue_get(&Sr.q, &it);
    if (rc == -ECANCELED) continue;
    if (rc == -ESHUTDOWN) return 0;
    if (rc) return rc;
    long i = (long)(intptr_t)it - 1;
    if (i < 0 || i >= SR_PUTTERS * Sr.per_putter || atomic_fetch_add(&Sr.seen[i], 1) != 0)
      atomic_fetch_add(&Sr.bad, 1);
    atomic_fetch_add(&Sr.gets, 1);
    if (weft_queue_task_done(&Sr.q) != 0) atomic_fetch_add(&Sr.bad, 1);
    if (atomic_load(&Sr.gets) % 7 == 0) weft_yield();
  }
}

static void *sr_shutdown(void *arg) {
  long after = (long)(intptr_t)arg;
  while (atomic_load(&Sr.puts) < after) sched_yield();
  if (Sr.graceful_first) {
    if (weft_queue_shutdown(&Sr.q, false) != 0) abort();
    usleep(100);
  }
  if (weft_queue_shutdown(&Sr.q, true) != 0) abort();
  atomic_store(&Sr.shut_done, 1);
  return NULL;
}

static int sr_run(size_t maxsize, enum weft_queue_kind kind, bool graceful_first) {
  Sr.per_putter = tu_iters(20000) / sync_migrate_div();
  long total = SR_PUTTERS * Sr.per_putter;
  Sr.put_ok = calloc((size_t)total, 1);
  Sr.seen = calloc((size_t)total, 1);
  atomic_store(&Sr.puts, 0);
  atomic_store(&Sr.gets, 0);
  atomic_store(&Sr.bad, 0);
  Sr.graceful_first = graceful_first;
  ASSERT_EQ(weft_queue_init_ex(&Sr.q, maxsize, kind, cmp_int), 0);
  weft_task p[SR_PUTTERS], g[SR_GETTERS], victims[(SR_PUTTERS + SR_GETTERS) / 3];
  int nv = 0;
  for (int i = 0; i < SR_GETTERS; i++) {
    g[i] = weft_spawn(sr_getter, NULL);
    if (i % 3 == 0) victims[nv++] = g[i];
  }
  for (int i = 0; i < SR_PUTTERS; i++) {
    p[i] = weft_spawn(sr_putter, (void *)(intptr_t)i);
    if (i % 3 == 0) victims[nv++] = p[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, nv, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  pthread_t th;
  atomic_store(&Sr.shut_done, 0);
  pthread_create(&th, NULL, sr_shutdown, (void *)(intptr_t)(total / 2));
  while (!atomic_load(&Sr.shut_done)) weft_sleep_ns(200000); /* not pthread_join: it would block a worker */
  pthread_join(th, NULL);
  for (int i = 0; i < SR_PUTTERS; i++) {
    int st = weft_join(p[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(p[i]);
  }
  for (int i = 0; i < SR_GETTERS; i++) {
    int st = weft_join(g[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(g[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  ASSERT_EQ(atomic_load(&Sr.bad), 0);
  long dropped = 0;
  for (long i = 0; i < total; i++) {
    if (atomic_load(&Sr.seen[i])) ASSERT_EQ(atomic_load(&Sr.put_ok[i]), 1);
    dropped += atomic_load(&Sr.put_ok[i]) && !atomic_load(&Sr.seen[i]);
  }
  ASSERT_EQ(atomic_load(&Sr.gets) + dropped, atomic_load(&Sr.puts));
  ASSERT_EQ(weft_queue_qsize(&Sr.q), 0);
  ASSERT_EQ(weft_queue_join(&Sr.q), 0);                /* nothing unfinished */
  ASSERT_EQ(weft_queue_task_done(&Sr.q), -EOVERFLOW);
  void *it;
  ASSERT_EQ(weft_queue_get_nowait(&Sr.q, &it), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_put_nowait(&Sr.q, &it), -ESHUTDOWN);
  ASSERT_EQ(weft_queue_destroy(&Sr.q), 0); /* no waiter left behind */
  free(Sr.put_ok);
  free(Sr.seen);
  return 0;
}

static int sr_main(void *arg) {
  (void)arg;
  for (int graceful = 0; graceful < 2; graceful++) {
    ASSERT_EQ(sr_run(1, WEFT_QUEUE_FIFO, graceful), 0);
    ASSERT_EQ(sr_run(3, WEFT_QUEUE_FIFO, graceful), 0);
    ASSERT_EQ(sr_run(0, WEFT_QUEUE_FIFO, graceful), 0);
    ASSERT_EQ(sr_run(2, WEFT_QUEUE_LIFO, graceful), 0);
    ASSERT_EQ(sr_run(2, WEFT_QUEUE_PRIORITY, graceful), 0);
  }
  return 0;
}

TEST_T(queue_shutdown_immediate_races_blocked_gets_and_puts_on_3_workers, 60) {
  weft_config c = cfg_workers(3);
  ASSERT_EQ(weft_run(sr_main, NULL, &c), 0);
}


/* What weft_task_waiting_on reports for the three waits: a joiner was
 * reported as "queue put" before. */
static int waiting_on_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_queue_init(&Q, 1), 0);
  weft_task g = weft_spawn(blocked_get, NULL); /* empty: waits */
  for (int i = 0; i < 5000 && weft_task_waiting_on(g)[0] == 0; i++) weft_sleep_ns(1000000);
  ASSERT_STR_EQ(weft_task_waiting_on(g), "queue get");
  ASSERT_EQ(weft_queue_put_nowait(&Q, (void *)1), 0);
  ASSERT_EQ(weft_join(g), 0);
  weft_task_release(g);
  ASSERT_EQ(weft_queue_put_nowait(&Q, (void *)2), 0); /* full, 2 unfinished */
  weft_task j = weft_spawn(joiner, NULL);
  weft_task p = weft_spawn(blocked_put, (void *)3);
  weft_task all[] = {j, p};
  for (size_t k = 0; k < 2; k++)
    for (int i = 0; i < 5000 && weft_task_waiting_on(all[k])[0] == 0; i++) weft_sleep_ns(1000000);
  ASSERT_STR_EQ(weft_task_waiting_on(j), "wait");
  ASSERT_STR_EQ(weft_task_waiting_on(p), "queue put");
  ASSERT_EQ(weft_queue_task_done(&Q), 0); /* item 1 */
  ASSERT_EQ(weft_queue_shutdown(&Q, true), 0); /* drops item 2: none unfinished */
  ASSERT_EQ(weft_join(j), 0);
  ASSERT_EQ(weft_join(p), -ESHUTDOWN);
  weft_task_release(j);
  weft_task_release(p);
  ASSERT_EQ(weft_queue_task_done(&Q), -EOVERFLOW);
  ASSERT_EQ(weft_queue_destroy(&Q), 0);
  return 0;
}

TEST(queue_join_is_not_reported_as_a_put) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(waiting_on_main, NULL, &c), 0);
}

TEST_MAIN()
