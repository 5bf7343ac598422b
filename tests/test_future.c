/* tests/test_future.c: futures (asyncio.Future) and the awaitable value. */
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "task_util.h"
#include "test_util.h"

static weft_future fut;

static int future_basics_main(void *arg) {
  (void)arg;
  weft_future f;
  weft_future_init(&f);
  void *v = (void *)1;
  ASSERT_TRUE(!weft_future_done(&f));
  ASSERT_EQ(weft_future_result(&f, &v), -EBUSY);
  ASSERT_EQ(weft_future_set(&f, 42, &f), 0);
  ASSERT_EQ(weft_future_set(&f, 1, NULL), -EALREADY);
  ASSERT_EQ(weft_future_cancel(&f), 0);
  ASSERT_TRUE(weft_future_done(&f));
  ASSERT_TRUE(!weft_future_cancelled(&f));
  ASSERT_EQ(weft_future_result(&f, &v), 42);
  ASSERT_PTR_EQ(v, &f);
  ASSERT_EQ(weft_future_await(&f, &v), 42);
  ASSERT_EQ(weft_future_destroy(&f), 0);

  weft_future_init(&f);
  ASSERT_EQ(weft_future_cancel(&f), 1);
  ASSERT_TRUE(weft_future_cancelled(&f));
  ASSERT_EQ(weft_future_set(&f, 0, NULL), -EALREADY);
  ASSERT_EQ(weft_future_await(&f, NULL), -ECANCELED);
  /* an error status is a status */
  weft_future_init(&f);
  ASSERT_EQ(weft_future_set(&f, -EIO, NULL), 0);
  ASSERT_EQ(weft_future_result(&f, NULL), -EIO);
  ASSERT_TRUE(!weft_future_cancelled(&f));
  return 0;
}
TEST(future_set_result_twice_and_cancel) { run_both(future_basics_main, NULL); }

static _Atomic int awaited_sum;
static int awaiter(void *arg) {
  void *v;
  int rc = weft_future_await(&fut, &v);
  if (rc >= 0 && v == arg) atomic_fetch_add(&awaited_sum, rc);
  return rc;
}

static int many_awaiters_main(void *arg) {
  (void)arg;
  weft_future_init(&fut);
  atomic_store(&awaited_sum, 0);
  enum { N = 50 };
  weft_task t[N];
  for (int i = 0; i < N; i++) t[i] = weft_spawn(awaiter, &fut);
  weft_sleep_ns(5 * MS);
  ASSERT_EQ(weft_future_destroy(&fut), -EBUSY);
  ASSERT_EQ(weft_future_set(&fut, 3, &fut), 0);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(weft_join(t[i]), 3);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(atomic_load(&awaited_sum), 3 * N);
  ASSERT_EQ(weft_future_destroy(&fut), 0);
  return 0;
}
TEST(future_many_awaiters) { run_both(many_awaiters_main, NULL); }

static void *foreign_setter(void *arg) {
  struct timespec ts = {0, 2000000};
  nanosleep(&ts, NULL);
  weft_future_set(arg, 11, arg);
  return NULL;
}

static int foreign_main(void *arg) {
  (void)arg;
  weft_future f;
  weft_future_init(&f);
  pthread_t th;
  pthread_create(&th, NULL, foreign_setter, &f);
  void *v = NULL;
  ASSERT_EQ(weft_future_await(&f, &v), 11);
  ASSERT_PTR_EQ(v, &f);
  pthread_join(th, NULL);
  return 0;
}
TEST(future_completed_from_a_foreign_thread) { run_both(foreign_main, NULL); }

static int cancelled_awaiter_main(void *arg) {
  (void)arg;
  weft_future_init(&fut);
  weft_task t = weft_spawn(awaiter, &fut);
  weft_sleep_ns(2 * MS);
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  /* asyncio: cancelling the task awaiting a future cancels the future */
  ASSERT_TRUE(weft_future_cancelled(&fut));
  weft_task_release(t);
  return 0;
}
TEST(future_cancelled_awaiter_cancels_the_future) { run_both(cancelled_awaiter_main, NULL); }

static _Atomic int cb_calls;
static void count_cb(weft_future *f, void *arg) {
  (void)f;
  atomic_fetch_add(&cb_calls, (int)(intptr_t)arg);
}

static int callbacks_main(void *arg) {
  (void)arg;
  weft_future f;
  weft_future_init(&f);
  atomic_store(&cb_calls, 0);
  ASSERT_EQ(weft_future_add_done_callback(&f, count_cb, (void *)1), 0);
  ASSERT_EQ(weft_future_add_done_callback(&f, count_cb, (void *)10), 0);
  ASSERT_EQ(weft_future_add_done_callback(&f, count_cb, (void *)10), 0);
  ASSERT_EQ(weft_future_add_done_callback(&f, NULL, NULL), -EINVAL);
  ASSERT_EQ(weft_future_destroy(&f), -EBUSY);
  ASSERT_EQ(weft_future_remove_done_callback(&f, count_cb, (void *)10), 2);
  ASSERT_EQ(weft_future_remove_done_callback(&f, count_cb, (void *)10), 0);
  ASSERT_EQ(atomic_load(&cb_calls), 0);
  weft_future_set(&f, 0, NULL);
  ASSERT_EQ(atomic_load(&cb_calls), 1);
  ASSERT_EQ(weft_future_add_done_callback(&f, count_cb, (void *)100), 0); /* done: runs at once */
  ASSERT_EQ(atomic_load(&cb_calls), 101);
  ASSERT_EQ(weft_future_destroy(&f), 0);
  return 0;
}
TEST(future_done_callbacks) { run_both(callbacks_main, NULL); }

/* A callback added from another thread while the completer runs an earlier
 * one runs after it, on the completer's thread (asyncio's FIFO order); an
 * awaiter is not held back meanwhile: result() answers at once. */
static struct {
  weft_future f;
  _Atomic int first_running, added, n;
  _Atomic int order[2];
  _Atomic int ran_at_once, result_during;
} ff;

static void ff_first(weft_future *f, void *arg) {
  (void)f;
  (void)arg;
  atomic_store(&ff.first_running, 1);
  spin_until_set(&ff.added);
  atomic_store(&ff.order[atomic_fetch_add(&ff.n, 1)], 1);
}

static void ff_second(weft_future *f, void *arg) {
  (void)f;
  (void)arg;
  atomic_store(&ff.order[atomic_fetch_add(&ff.n, 1)], 2);
}

static void *ff_adder(void *arg) {
  (void)arg;
  spin_until_set(&ff.first_running);
  atomic_store(&ff.result_during, weft_future_result(&ff.f, NULL));
  ASSERT_EQ(weft_future_add_done_callback(&ff.f, ff_second, NULL), 0);
  atomic_store(&ff.ran_at_once, atomic_load(&ff.n) != 0);
  atomic_store(&ff.added, 1);
  return NULL;
}

static int ff_main(void *arg) {
  (void)arg;
  memset(&ff, 0, sizeof ff);
  weft_future_init(&ff.f);
  ASSERT_EQ(weft_future_add_done_callback(&ff.f, ff_first, NULL), 0);
  pthread_t adder;
  ASSERT_EQ(pthread_create(&adder, NULL, ff_adder, NULL), 0);
  ASSERT_EQ(weft_future_set(&ff.f, 7, NULL), 0); /* runs both callbacks before returning */
  pthread_join(adder, NULL);
  ASSERT_EQ(atomic_load(&ff.n), 2);
  ASSERT_EQ(atomic_load(&ff.ran_at_once), 0);
  ASSERT_EQ(atomic_load(&ff.order[0]), 1);
  ASSERT_EQ(atomic_load(&ff.order[1]), 2);
  ASSERT_EQ(atomic_load(&ff.result_during), 7);
  ASSERT_EQ(weft_future_destroy(&ff.f), 0);
  return 0;
}
TEST(future_callbacks_added_while_completing_run_in_order) { run_both(ff_main, NULL); }

static int self_task(void *arg) {
  weft_task *me = arg;
  *me = weft_current();
  return weft_await(weft_aw_task(*me), NULL);
}

static int awaitable_main(void *arg) {
  (void)arg;
  weft_future f;
  weft_future_init(&f);
  weft_awaitable a = weft_aw_future(&f);
  ASSERT_TRUE(!weft_aw_done(a));
  ASSERT_EQ(weft_aw_result(a, NULL), -EBUSY);
  ASSERT_EQ(weft_aw_cancel(a), 1);
  ASSERT_EQ(weft_aw_result(a, NULL), -ECANCELED);
  weft_task t = weft_spawn(tu_return_arg, (void *)5);
  weft_awaitable b = weft_aw_task(t);
  ASSERT_EQ(weft_await(b, NULL), 5);
  ASSERT_TRUE(weft_aw_done(b));
  ASSERT_EQ(weft_aw_result(b, NULL), 5);
  ASSERT_EQ(weft_aw_cancel(b), 0);
  weft_task_release(t);
  /* a freed handle: -ESRCH, never a crash */
  ASSERT_EQ(weft_await(b, NULL), -ESRCH);
  ASSERT_EQ(weft_aw_result(b, NULL), -ESRCH);
  weft_awaitable bad = {0};
  ASSERT_EQ(weft_await(bad, NULL), -EINVAL);
  ASSERT_EQ(weft_aw_result(bad, NULL), -EINVAL);
  /* awaiting itself */
  weft_task me;
  weft_task s = weft_spawn(self_task, &me);
  ASSERT_EQ(weft_join(s), -EDEADLK);
  weft_task_release(s);
  return 0;
}
TEST(awaitable_values_and_bad_input) { run_both(awaitable_main, NULL); }

TEST(future_outside_a_task) {
  weft_future f;
  weft_future_init(&f);
  ASSERT_EQ(weft_future_await(&f, NULL), -EINVAL);
  ASSERT_EQ(weft_future_set(&f, 1, NULL), 0); /* any thread */
  ASSERT_EQ(weft_future_result(&f, NULL), 1);
}

/* Racy: a foreign thread completes futures while tasks await them and
 * others cancel the awaiters: every awaiter sees the value or -ECANCELED,
 * and a cancelled awaiter's future is cancelled or carries the value. */
enum { RACE_N = 8 };
static weft_future race_f[RACE_N];
static _Atomic int race_go;

static void *race_setter(void *arg) {
  (void)arg;
  while (!atomic_load(&race_go)) sched_yield();
  for (int i = 0; i < RACE_N; i++) weft_future_set(&race_f[i], i, NULL);
  return NULL;
}

static int race_awaiter(void *arg) { return weft_future_await(arg, NULL); }

static int race_main(void *arg) {
  (void)arg;
  long iters = tu_iters(300);
  for (long it = 0; it < iters; it++) {
    for (int i = 0; i < RACE_N; i++) weft_future_init(&race_f[i]);
    atomic_store(&race_go, 0);
    weft_task t[RACE_N];
    for (int i = 0; i < RACE_N; i++) t[i] = weft_spawn(race_awaiter, &race_f[i]);
    pthread_t th;
    pthread_create(&th, NULL, race_setter, NULL);
    weft_yield();
    atomic_store(&race_go, 1);
    for (int i = 0; i < RACE_N; i += 2) weft_cancel(t[i]);
    int rcs[RACE_N];
    for (int i = 0; i < RACE_N; i++) {
      rcs[i] = weft_join(t[i]);
      weft_task_release(t[i]);
    }
    pthread_join(th, NULL);
    for (int i = 0; i < RACE_N; i++) {
      /* a cancelled awaiter cancelled its future unless the value came first
       * (or it never started: the future got its value later) */
      int fr = weft_future_result(&race_f[i], NULL);
      if (rcs[i] == -ECANCELED)
        ASSERT_TRUE(fr == -ECANCELED || fr == i);
      else
        ASSERT_EQ(rcs[i], i);
      if (fr == -ECANCELED) ASSERT_EQ(rcs[i], -ECANCELED);
    }
    for (int i = 0; i < RACE_N; i++) ASSERT_EQ(weft_future_destroy(&race_f[i]), 0);
  }
  return 0;
}
TEST(future_stress_complete_vs_cancel) { run_both(race_main, NULL); }


/* ------------------------------------------------------------ review coverage: a future set from
 * a foreign thread, many awaiters, callback order and removal */

static weft_future rv_f;
static atomic_int rv_order[64];
static atomic_int rv_n;
static void rv_cb(weft_future *f, void *arg) {
  (void)f;
  int k = atomic_fetch_add(&rv_n, 1);
  if (k < 64) atomic_store(&rv_order[k], (int)(intptr_t)arg);
}
static void *rv_setter(void *arg) {
  (void)arg;
  usleep(5000);
  weft_future_set(&rv_f, 11, NULL);
  return NULL;
}
static int rv_awaiter(void *arg) {
  (void)arg;
  void *v;
  int rc = weft_future_await(&rv_f, &v);
  return rc;
}
static int rv_future_main(void *arg) {
  (void)arg;
  weft_future_init(&rv_f);
  atomic_store(&rv_n, 0);
  weft_task t[16];
  for (int i = 0; i < 16; i++) t[i] = weft_spawn(rv_awaiter, NULL);
  for (int i = 0; i < 5; i++) ASSERT_EQ(weft_future_add_done_callback(&rv_f, rv_cb, (void *)(intptr_t)i), 0);
  ASSERT_EQ(weft_future_add_done_callback(&rv_f, rv_cb, (void *)(intptr_t)2), 0);
  ASSERT_EQ(weft_future_remove_done_callback(&rv_f, rv_cb, (void *)(intptr_t)2), 2);
  pthread_t th;
  pthread_create(&th, NULL, rv_setter, NULL);
  for (int i = 0; i < 16; i++) ASSERT_EQ(weft_join(t[i]), 11);
  pthread_join(th, NULL);
  ASSERT_EQ(atomic_load(&rv_n), 4);
  int exp[4] = {0, 1, 3, 4};
  for (int i = 0; i < 4; i++) ASSERT_EQ(atomic_load(&rv_order[i]), exp[i]);
  ASSERT_EQ(weft_future_set(&rv_f, 1, NULL), -EALREADY);
  ASSERT_EQ(weft_future_cancel(&rv_f), 0);
  ASSERT_TRUE(!weft_future_cancelled(&rv_f));
  /* awaiting a done future with a pending cancel: the result, cancel kept */
  weft_cancel(weft_current());
  void *v;
  ASSERT_EQ(weft_future_await(&rv_f, &v), 11);
  ASSERT_EQ(weft_yield(), -ECANCELED);
  weft_uncancel(weft_current());
  for (int i = 0; i < 16; i++) weft_task_release(t[i]);
  ASSERT_EQ(weft_future_destroy(&rv_f), 0);
  return 0;
}
TEST(future_set_from_a_thread_awaiters_and_callback_order) { run_both(rv_future_main, NULL); }

/* set() wakes every awaiter before it runs the done callbacks (weft/task.h),
 * also the awaiters that came after a callback was added: a callback sees
 * none of them still waiting on the future. */
static weft_future wf_f;
static weft_task wf_awaiters[40];
static _Atomic int wf_still_waiting, wf_cb_ran;
static void wf_cb(weft_future *f, void *arg) {
  (void)f;
  (void)arg;
  for (int i = 0; i < 40; i++)
    if (strcmp(weft_task_waiting_on(wf_awaiters[i]), "future") == 0) atomic_fetch_add(&wf_still_waiting, 1);
  atomic_fetch_add(&wf_cb_ran, 1);
}
static int wf_awaiter(void *arg) { return weft_future_await(arg, NULL); }
static int wf_main(void *arg) {
  (void)arg;
  weft_future_init(&wf_f);
  atomic_store(&wf_still_waiting, 0);
  atomic_store(&wf_cb_ran, 0);
  ASSERT_EQ(weft_future_add_done_callback(&wf_f, wf_cb, NULL), 0);
  for (int i = 0; i < 40; i++) wf_awaiters[i] = weft_spawn(wf_awaiter, &wf_f);
  for (int i = 0; i < 40; i++)
    for (int k = 0; k < 5000 && strcmp(weft_task_waiting_on(wf_awaiters[i]), "future") != 0; k++) weft_sleep_ns(MS / 10);
  ASSERT_EQ(weft_future_add_done_callback(&wf_f, wf_cb, NULL), 0); /* behind the awaiters */
  ASSERT_EQ(weft_future_set(&wf_f, 5, NULL), 0);
  ASSERT_EQ(atomic_load(&wf_cb_ran), 2);
  ASSERT_EQ(atomic_load(&wf_still_waiting), 0);
  for (int i = 0; i < 40; i++) {
    ASSERT_EQ(weft_join(wf_awaiters[i]), 5);
    weft_task_release(wf_awaiters[i]);
  }
  ASSERT_EQ(weft_future_destroy(&wf_f), 0);
  return 0;
}
TEST(future_set_wakes_every_awaiter_before_the_callbacks) { run_both(wf_main, NULL); }

TEST_MAIN()
