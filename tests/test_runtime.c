/* tests/test_runtime.c: tasks, joins, cancellation, sleeping, the runtime
 * API, configuration errors, debug reports, pinning and the migrate mode. */
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <weft/weft.h>

#include "core/alloc.h"
#include "core/runtime.h"
#include "core/task.h"
#include "test.h"
#include "test_util.h"

int weft__io_nop(void);

/* ------------------------------------------------------------ basics */

static int ret_arg(void *arg) { return (int)(intptr_t)arg; }

TEST(run_returns_main_status) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(ret_arg, (void *)(intptr_t)42, &c), 42);
  ASSERT_EQ(weft_run(ret_arg, (void *)(intptr_t)-EIO, &c), -EIO);
}

static int spawn_join_main(void *arg) {
  (void)arg;
  weft_task t[100];
  for (int i = 0; i < 100; i++) {
    t[i] = weft_spawn(ret_arg, (void *)(intptr_t)i);
    ASSERT_TRUE(!weft_task_is_null(t[i]));
  }
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(weft_join(t[i]), i);
    ASSERT_EQ(weft_join(t[i]), i); /* joining again is fine */
    ASSERT_TRUE(weft_task_done(t[i]));
    ASSERT_EQ(weft_task_status(t[i]), i);
    ASSERT_EQ(weft_task_release(t[i]), 0);
  }
  return 7;
}

TEST(spawn_join_many) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(spawn_join_main, NULL, &c), 7);
}

static int sleeper(void *arg) {
  int64_t ns = (int64_t)(intptr_t)arg;
  return weft_sleep_ns(ns);
}

static int stale_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(ret_arg, (void *)5);
  ASSERT_EQ(weft_join(t), 5);
  ASSERT_EQ(weft_task_release(t), 0);
  ASSERT_EQ(weft_task_release(t), -ESRCH); /* double release */
  /* The record is recycled once nothing refers to it any more (a stale
   * run-queue entry may hold it a little longer, see "inline joins" in
   * core/task.c); from then on the old handle is stale: -ESRCH, never
   * another task's result. */
  int rc = 5;
  for (int i = 0; i < 10000 && rc == 5; i++) {
    weft_task u = weft_spawn(ret_arg, (void *)1);
    weft_join(u);
    weft_task_release(u);
    weft_yield();
    rc = weft_join(t);
  }
  ASSERT_EQ(rc, -ESRCH);
  ASSERT_EQ(weft_cancel(t), -ESRCH);
  ASSERT_EQ(weft_task_status(t), -ESRCH);
  ASSERT_TRUE(!weft_task_done(t));
  ASSERT_EQ(weft_join(weft_current()), -EDEADLK);
  ASSERT_EQ(weft_join(WEFT_TASK_NULL), -EINVAL);
  return 0;
}

TEST(stale_handles_and_misuse) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(stale_main, NULL, &c), 0);
}

static int running_status_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(sleeper, (void *)(intptr_t)20000000);
  ASSERT_EQ(weft_task_status(t), -EBUSY);
  ASSERT_TRUE(!weft_task_done(t));
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  return 0;
}

TEST(status_of_running_task_is_ebusy) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(running_status_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ cancellation */

static _Atomic int body_ran;

static int mark_body(void *arg) {
  (void)arg;
  atomic_store(&body_ran, 1);
  return 0;
}

static int cancel_main(void *arg) {
  (void)arg;
  /* a sleeping task gets -ECANCELED */
  weft_task t = weft_spawn(sleeper, (void *)(intptr_t)10000000000LL);
  weft_sleep_ns(1000000);
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  ASSERT_TRUE(weft_task_cancelled(t));
  ASSERT_EQ(weft_cancel(t), 0); /* already done */
  weft_task_release(t);
  return 0;
}

/* Cancelled before it starts: the body never runs (asyncio). On one worker,
 * where nothing can start the child before the cancel (with two, another
 * worker may steal it and start it first: then it runs, as a started task
 * must, and WEFT_TEST_MIGRATE=1 makes that likely). */
static int cancel_unstarted_main(void *arg) {
  (void)arg;
  atomic_store(&body_ran, 0);
  weft_task t = weft_spawn(mark_body, NULL);
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  ASSERT_EQ(atomic_load(&body_ran), 0);
  weft_task_release(t);
  return 0;
}

TEST(cancel_sleeping_and_unstarted) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cancel_main, NULL, &c), 0);
  c = cfg_workers(1);
  ASSERT_EQ(weft_run(cancel_unstarted_main, NULL, &c), 0);
}

/* A task that catches its cancellation, cleans up with a suspension, and
 * returns a value; cancelling()/uncancel() counting. */
static int resilient(void *arg) {
  (void)arg;
  int rc = weft_sleep_ns(10000000000LL);
  if (rc != -ECANCELED) return -100;
  weft_task self = weft_current();
  if (weft_cancelling(self) != 2) return -101; /* two requests, one delivery */
  if (weft_sleep_ns(1000000) != 0) return -102; /* delivered: may suspend again */
  if (weft_uncancel(self) != 1) return -103;
  if (weft_uncancel(self) != 0) return -104;
  if (weft_yield() != 0) return -105;
  return 77;
}

static int cancel_count_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(resilient, NULL);
  weft_sleep_ns(2000000);
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), 77);
  weft_task_release(t);
  return 0;
}

/* One worker: the two requests land before the task can run again (on two,
 * another worker may wake it between them, or, under WEFT_TEST_MIGRATE=1,
 * not have started it within 2 ms, so that the first request ends it). */
TEST(cancel_is_a_request_with_a_count) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(cancel_count_main, NULL, &c), 0);
}

/* Cancelling a joiner cancels the task it awaits (asyncio's await task). */
static _Atomic int joiner_started;

static int join_inner(void *arg) {
  weft_task inner = *(weft_task *)arg;
  atomic_store(&joiner_started, 1);
  return weft_join(inner);
}

static int join_forward_main(void *arg) {
  (void)arg;
  weft_task inner = weft_spawn(sleeper, (void *)(intptr_t)10000000000LL);
  weft_task outer = weft_spawn(join_inner, &inner);
  /* the joiner must be inside its join: cancelled before it starts, it
   * would never run (asyncio) and never forward anything */
  while (!atomic_load(&joiner_started)) weft_sleep_ns(100000);
  weft_sleep_ns(1000000);
  weft_cancel(outer);
  ASSERT_EQ(weft_join(outer), -ECANCELED);
  ASSERT_TRUE(weft_task_cancelled(inner));
  weft_task_release(outer);
  weft_task_release(inner);
  return 0;
}

/* A joiner with a cancellation pending when it joins forwards it (asyncio:
 * a task whose cancel is pending cancels the future it then awaits), on the
 * inline path (inner not started) as on the waiting one. */
static int self_cancel_then_join(void *arg) {
  (void)arg;
  weft_task inner = weft_spawn(sleeper, (void *)(intptr_t)10000000000LL);
  weft_cancel(weft_current());
  int rc = weft_join(inner);
  int inner_cancelled = weft_task_cancelled(inner);
  weft_task_release(inner);
  if (rc != -ECANCELED) return -100;
  if (!inner_cancelled) return -101;
  if (weft_sleep_ns(1000) != 0) return -102; /* the request went to inner */
  return 0;
}

static int pending_forward_main(void *arg) {
  (void)arg;
  int64_t t0 = weft_now_ns();
  weft_task t = weft_spawn(self_cancel_then_join, NULL);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_LT(weft_now_ns() - t0, 5000000000LL); /* not the inner sleep's 10 s */
  return 0;
}

TEST(a_pending_cancel_is_forwarded_by_join) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(pending_forward_main, NULL, &c), 0);
  c.workers = 2;
  ASSERT_EQ(weft_run(pending_forward_main, NULL, &c), 0);
}

TEST(cancelling_a_joiner_cancels_the_awaited_task) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(join_forward_main, NULL, &c), 0);
}

static int yield_forever_counting(void *arg) {
  _Atomic long *n = arg;
  for (;;) {
    if (weft_yield() == -ECANCELED) return -ECANCELED;
    atomic_fetch_add(n, 1);
  }
}

static int cancel_yielder_main(void *arg) {
  (void)arg;
  _Atomic long n = 0;
  weft_task t = weft_spawn(yield_forever_counting, &n);
  while (atomic_load(&n) < 1000) weft_yield();
  weft_cancel(t);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  return 0;
}

TEST(yield_is_a_cancellation_point) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cancel_yielder_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ time */

static int sleep_main(void *arg) {
  (void)arg;
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_sleep_ns(20000000), 0);
  int64_t dt = weft_now_ns() - t0;
  ASSERT_GE(dt, 20000000);
  ASSERT_EQ(weft_sleep_ns(-1), -EINVAL);
  ASSERT_EQ(weft_sleep_ns(INT64_MAX), -EINVAL);
  ASSERT_EQ(weft_sleep_until(weft_now_ns() - 5), 0);
  ASSERT_EQ(weft_sleep_ns(0), 0);
  /* many concurrent sleepers wake in deadline order per worker, all finish */
  weft_task t[200];
  for (int i = 0; i < 200; i++) t[i] = weft_spawn(sleeper, (void *)(intptr_t)((i % 10) * 1000000));
  for (int i = 0; i < 200; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  return 0;
}

TEST(sleep_and_yield) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(sleep_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ yield order */

static int order_log[64];
static _Atomic int order_n;

static int yielder(void *arg) {
  int id = (int)(intptr_t)arg;
  for (int i = 0; i < 4; i++) {
    order_log[atomic_fetch_add(&order_n, 1)] = id;
    weft_yield();
  }
  return 0;
}

static int yield_order_main(void *arg) {
  (void)arg;
  weft_task a = weft_spawn(yielder, (void *)1);
  weft_task b = weft_spawn(yielder, (void *)2);
  weft_join(a);
  weft_join(b);
  weft_task_release(a);
  weft_task_release(b);
  /* one worker: a yield goes behind the other runnable task, so they alternate */
  int n = atomic_load(&order_n);
  ASSERT_EQ(n, 8);
  for (int i = 2; i < n; i++) ASSERT_TRUE(order_log[i] != order_log[i - 1]);
  return 0;
}

TEST(yield_goes_behind_the_others) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(yield_order_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ callbacks, names, listing */

static _Atomic int cb_calls;
static void done_cb(weft_task t, void *arg) {
  ASSERT_EQ(weft_task_status(t), 9);
  atomic_fetch_add(&cb_calls, (int)(intptr_t)arg);
}

static weft_event cb_go;
static int ret9_when_told(void *arg) {
  (void)arg;
  weft_event_wait(&cb_go);
  return 9;
}

static int callbacks_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(sleeper, (void *)(intptr_t)5000000);
  (void)t;
  weft_event_init(&cb_go);
  /* u finishes only once both callbacks are registered: both then run on
   * the thread that finishes it (callbacks_added_while_finishing_run_in_order
   * covers a callback added while u is finishing). */
  weft_task u = weft_spawn(ret9_when_told, NULL);
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)1), 0);
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)10), 0);
  weft_event_set(&cb_go);
  ASSERT_EQ(weft_join(u), 9);
  /* join returns once u is done, maybe while its finisher is still running
   * the callbacks on another worker: wait for them (bounded) */
  wait_until_equal(&cb_calls, 11);
  ASSERT_EQ(atomic_load(&cb_calls), 11);
  ASSERT_EQ(weft_event_destroy(&cb_go), 0);
  /* done: called at once, or, when u's finisher (on another worker) has
   * not yet marked u's callbacks all run, by that finisher after them */
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)100), 0);
  wait_until_equal(&cb_calls, 111);
  ASSERT_EQ(atomic_load(&cb_calls), 111);
  weft_task_release(u);
  weft_join(t);
  weft_task_release(t);
  return 0;
}

TEST(done_callbacks) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(callbacks_main, NULL, &c), 0);
}

static int remove_callbacks_main(void *arg) {
  (void)arg;
  atomic_store(&cb_calls, 0);
  weft_event_init(&cb_go);
  weft_task u = weft_spawn(ret9_when_told, NULL);
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)1), 0);
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)10), 0);
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)10), 0);
  ASSERT_EQ(weft_task_add_done_callback(u, done_cb, (void *)100), 0);
  ASSERT_EQ(weft_task_remove_done_callback(u, done_cb, (void *)10), 2); /* every registration */
  ASSERT_EQ(weft_task_remove_done_callback(u, done_cb, (void *)10), 0);
  ASSERT_EQ(weft_task_remove_done_callback(u, done_cb, (void *)7), 0); /* never added */
  weft_event_set(&cb_go);
  ASSERT_EQ(weft_join(u), 9);
  wait_until_equal(&cb_calls, 101);
  ASSERT_EQ(atomic_load(&cb_calls), 101);
  ASSERT_EQ(weft_task_remove_done_callback(u, done_cb, (void *)1), 0); /* already run */
  ASSERT_EQ(weft_event_destroy(&cb_go), 0);
  ASSERT_EQ(weft_task_release(u), 0);
  /* once the record is recycled the handle is stale (as in stale_main) */
  for (int i = 0; i < 10000 && weft_task_status(u) != -ESRCH; i++) {
    weft_task w = weft_spawn(ret_arg, (void *)1);
    weft_join(w);
    weft_task_release(w);
    weft_yield();
  }
  ASSERT_EQ(weft_task_remove_done_callback(u, done_cb, (void *)1), -ESRCH);
  return 0;
}

TEST(remove_done_callback) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(remove_callbacks_main, NULL, &c), 0);
}

/* A callback added from another thread while the finisher runs an earlier
 * one is queued behind it and run by the finisher, not at once by the
 * adder (asyncio's FIFO call_soon order). The first callback holds the
 * finisher (bounded) until the adder's call has returned. */
static struct {
  weft_task u;
  _Atomic int first_running, added, slot, n; /* n counts callbacks that stored their order[slot] */
  _Atomic int order[2];
  _Atomic int ran_at_once; /* the second callback had run when add returned */
  pthread_t first_thread, second_thread;
} fifo;

static void fifo_first(weft_task t, void *arg) {
  (void)t;
  (void)arg;
  fifo.first_thread = pthread_self();
  atomic_store(&fifo.first_running, 1);
  spin_until_set(&fifo.added);
  atomic_store(&fifo.order[atomic_fetch_add(&fifo.slot, 1)], 1);
  atomic_fetch_add(&fifo.n, 1); /* after the store: the checker reads order once n is 2 (it read a 0 once) */
}

static void fifo_second(weft_task t, void *arg) {
  (void)t;
  (void)arg;
  fifo.second_thread = pthread_self();
  atomic_store(&fifo.order[atomic_fetch_add(&fifo.slot, 1)], 2);
  atomic_fetch_add(&fifo.n, 1);
}

static void *fifo_adder(void *arg) {
  (void)arg;
  spin_until_set(&fifo.first_running);
  ASSERT_EQ(weft_task_add_done_callback(fifo.u, fifo_second, NULL), 0);
  atomic_store(&fifo.ran_at_once, atomic_load(&fifo.slot) != 0);
  atomic_store(&fifo.added, 1);
  return NULL;
}

static int fifo_callbacks_main(void *arg) {
  (void)arg;
  weft_event_init(&cb_go);
  fifo.u = weft_spawn(ret9_when_told, NULL);
  ASSERT_EQ(weft_task_add_done_callback(fifo.u, fifo_first, NULL), 0);
  pthread_t adder;
  ASSERT_EQ(pthread_create(&adder, NULL, fifo_adder, NULL), 0);
  weft_event_set(&cb_go);
  ASSERT_EQ(weft_join(fifo.u), 9);
  ASSERT_TRUE(weft_task_done(fifo.u)); /* done as soon as joined, callbacks or not */
  wait_until_equal(&fifo.n, 2);
  pthread_join(adder, NULL);
  ASSERT_EQ(atomic_load(&fifo.n), 2);
  ASSERT_EQ(atomic_load(&fifo.ran_at_once), 0);
  ASSERT_EQ(atomic_load(&fifo.order[0]), 1);
  ASSERT_EQ(atomic_load(&fifo.order[1]), 2);
  ASSERT_TRUE(pthread_equal(fifo.first_thread, fifo.second_thread)); /* the finisher ran both */
  ASSERT_EQ(weft_event_destroy(&cb_go), 0);
  weft_task_release(fifo.u);
  return 0;
}

TEST(callbacks_added_while_finishing_run_in_order) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(fifo_callbacks_main, NULL, &c), 0);
}

/* Stress: four threads add callbacks while the task finishes. Every
 * callback runs exactly once, and each thread's run in the order it added
 * them, whether the finisher ran them (appended while FINISHING) or the
 * adder did at once (after DONE, when all earlier ones had run). */
enum { RACE_ADDERS = 4 };
static struct {
  weft_task u;
  _Atomic int go, count, bad;
  _Atomic int last_seq[RACE_ADDERS];
  int per_adder;
} race;

static void race_cb(weft_task t, void *arg) {
  (void)t;
  intptr_t v = (intptr_t)arg;
  int who = (int)(v >> 20), seq = (int)(v & 0xfffff);
  if (atomic_load(&race.last_seq[who]) != seq - 1) atomic_fetch_add(&race.bad, 1);
  atomic_store(&race.last_seq[who], seq);
  atomic_fetch_add(&race.count, 1);
}

static void *race_adder(void *arg) {
  intptr_t who = (intptr_t)arg;
  spin_until_set(&race.go);
  for (int i = 1; i <= race.per_adder; i++)
    ASSERT_EQ(weft_task_add_done_callback(race.u, race_cb, (void *)(who << 20 | i)), 0);
  return NULL;
}

static int race_callbacks_main(void *arg) {
  (void)arg;
  race.per_adder = (int)(test_sanitized() ? 500 : 2000) * (int)test_stress_scale();
  for (int round = 0; round < 5; round++) {
    atomic_store(&race.go, 0);
    atomic_store(&race.count, 0);
    for (int i = 0; i < RACE_ADDERS; i++) atomic_store(&race.last_seq[i], 0);
    weft_event_init(&cb_go);
    race.u = weft_spawn(ret9_when_told, NULL);
    pthread_t th[RACE_ADDERS];
    for (intptr_t i = 0; i < RACE_ADDERS; i++) ASSERT_EQ(pthread_create(&th[i], NULL, race_adder, (void *)i), 0);
    atomic_store(&race.go, 1);
    weft_sleep_ns(100000 * round); /* let the adders get ahead of the finish by more each round */
    weft_event_set(&cb_go);
    ASSERT_EQ(weft_join(race.u), 9);
    for (int i = 0; i < RACE_ADDERS; i++) pthread_join(th[i], NULL);
    int want = RACE_ADDERS * race.per_adder;
    wait_until_equal(&race.count, want);
    ASSERT_EQ(atomic_load(&race.count), want);
    ASSERT_EQ(atomic_load(&race.bad), 0);
    ASSERT_EQ(weft_event_destroy(&cb_go), 0);
    weft_task_release(race.u);
  }
  return 0;
}

TEST(callbacks_added_during_the_finish_run_once_in_order) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(race_callbacks_main, NULL, &c), 0);
}

static int listing_main(void *arg) {
  (void)arg;
  weft_spawn_opts o = {.name = "the-sleeper"};
  weft_task t = weft_spawn_ex(sleeper, (void *)(intptr_t)10000000000LL, &o);
  weft_sleep_ns(2000000);
  char name[32];
  ASSERT_EQ(weft_task_get_name(t, name, sizeof name), 11);
  ASSERT_STR_EQ(name, "the-sleeper");
  ASSERT_EQ(weft_task_get_name(t, NULL, 0), 11);
  ASSERT_EQ(weft_task_get_name(t, NULL, sizeof name), -EINVAL); /* (before: 11, nothing written) */
  weft_task_info info[16];
  int n = weft_tasks(info, 16);
  ASSERT_GE(n, 2);
  bool found = false, me = false;
  for (int i = 0; i < n && i < 16; i++) {
    if (strcmp(info[i].name, "the-sleeper") == 0) {
      found = true;
      ASSERT_EQ(info[i].state, WEFT_TASK_SUSPENDED);
    }
    if (info[i].task.rec == weft_current().rec) {
      me = true;
      ASSERT_EQ(info[i].state, WEFT_TASK_RUNNING);
    }
  }
  ASSERT_TRUE(found);
  ASSERT_TRUE(me);
  ASSERT_EQ(weft_task_set_name(t, "renamed-task-with-a-very-long-name-indeed"), 0);
  weft_task_get_name(t, name, sizeof name);
  ASSERT_EQ(strlen(name), 31);
  weft_cancel(t);
  weft_join(t);
  weft_task_release(t);
  return 0;
}

TEST(names_and_listing) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(listing_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ bad input */

static int nothing(void *arg) {
  (void)arg;
  return 0;
}

TEST(bad_configuration_is_rejected) {
  weft_config c = {0};
  c.workers = 100000;
  ASSERT_EQ(weft_run(nothing, NULL, &c), -EINVAL);
  c = (weft_config){0};
  c.stack_size = 1;
  ASSERT_EQ(weft_run(nothing, NULL, &c), -EINVAL);
  c = (weft_config){0};
  c.stack_size = (size_t)1 << 40;
  ASSERT_EQ(weft_run(nothing, NULL, &c), -EINVAL);
  c = (weft_config){0};
  c.ring_entries = 1u << 20;
  ASSERT_EQ(weft_run(nothing, NULL, &c), -EINVAL);
  c = (weft_config){0};
  c.backend = 99;
  ASSERT_EQ(weft_run(nothing, NULL, &c), -EINVAL);
  ASSERT_EQ(weft_run(NULL, NULL, NULL), -EINVAL);
}

TEST(suspending_outside_a_task_is_einval) {
  ASSERT_EQ(weft_sleep_ns(1000), -EINVAL);
  ASSERT_EQ(weft_yield(), -EINVAL);
  ASSERT_EQ(weft_join(WEFT_TASK_NULL), -EINVAL);
  errno = 0;
  weft_task t = weft_spawn(nothing, NULL);
  ASSERT_TRUE(weft_task_is_null(t));
  ASSERT_EQ(errno, EINVAL);
  weft_event ev;
  weft_event_init(&ev);
  ASSERT_EQ(weft_event_wait(&ev), -EINVAL);
  ASSERT_EQ(weft_worker_id(), -1);
  ASSERT_EQ(weft_pin(), -EINVAL);
}

static int nested_run_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_run(nothing, NULL, NULL), -EINVAL);
  weft_spawn_opts o = {.stack_size = 100};
  errno = 0;
  weft_task t = weft_spawn_ex(nothing, NULL, &o);
  ASSERT_TRUE(weft_task_is_null(t));
  ASSERT_EQ(errno, EINVAL);
  ASSERT_TRUE(weft_task_is_null(weft_spawn(NULL, NULL)));
  /* out NULL with n > 0: -EINVAL (the listing wrote through it before) */
  ASSERT_EQ(weft_tasks(NULL, 4), -EINVAL);
  ASSERT_GT(weft_tasks(NULL, 0), 0);
  return 0;
}

TEST(misuse_inside_a_task) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(nested_run_main, NULL, &c), 0);
}

static int forever(void *arg);
TEST(runtime_tasks_without_room_is_einval) {
  weft_config c = cfg_workers(1);
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  weft_task t;
  ASSERT_EQ(weft_runtime_submit(rt, forever, NULL, &t), 0);
  while (weft_runtime_tasks(rt, NULL, 0) < 1) sched_yield();
  ASSERT_EQ(weft_runtime_tasks(rt, NULL, 4), -EINVAL); /* it wrote through NULL before */
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_runtime_wait(rt, t), -ECANCELED);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
}

#ifdef WEFT_TEST_HOOKS
static weft_event enomem_go;

static int wait_go(void *arg) {
  (void)arg;
  return weft_event_wait(&enomem_go);
}

#define ENOMEM_SPAWNS 2000 /* more than the records a worker and the depot cache (core/worker.c) */

static int enomem_main(void *arg) {
  (void)arg;
  weft_event_init(&enomem_go);
  /* exhaust the cached records first so spawn must allocate: the tasks wait
   * until the loop is over, so none is recycled meanwhile */
  int failures = 0;
  static weft_task ts[ENOMEM_SPAWNS];
  int n = 0;
  for (int i = 0; i < ENOMEM_SPAWNS; i++) {
    /* re-armed before every spawn: the one injected failure must reach the
     * spawn, not an allocation some other thread of the runtime happened to
     * make meanwhile (seen once in ~100 runs under ThreadSanitizer on a
     * loaded machine: no spawn failed) */
    weft__fault_alloc_after(0);
    errno = 0;
    weft_task t = weft_spawn(wait_go, NULL);
    if (weft_task_is_null(t)) {
      ASSERT_EQ(errno, ENOMEM);
      failures++;
      break;
    }
    ts[n++] = t;
  }
  weft__fault_alloc_after(-1);
  ASSERT_EQ(failures, 1);
  weft_event_set(&enomem_go);
  for (int i = 0; i < n; i++) {
    ASSERT_EQ(weft_join(ts[i]), 0);
    weft_task_release(ts[i]);
  }
  /* the runtime keeps running */
  weft_task t = weft_spawn(ret_arg, (void *)3);
  ASSERT_EQ(weft_join(t), 3);
  weft_task_release(t);
  return 0;
}

TEST(spawn_out_of_memory_returns_null) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(enomem_main, NULL, &c), 0);
}
#endif

/* ------------------------------------------------------------ runtime API */

static int add_one(void *arg) {
  _Atomic int *n = arg;
  weft_sleep_ns(100000);
  return atomic_fetch_add(n, 1) >= 0 ? 1 : 0;
}

struct submit_ctx {
  weft_runtime *rt;
  _Atomic int n;
};

static void *submitter(void *arg) {
  struct submit_ctx *c = arg;
  for (int i = 0; i < 200; i++) {
    weft_task t;
    ASSERT_EQ(weft_runtime_submit(c->rt, add_one, &c->n, &t), 0);
    ASSERT_EQ(weft_runtime_wait(c->rt, t), 1);
  }
  for (int i = 0; i < 200; i++) ASSERT_EQ(weft_runtime_submit(c->rt, add_one, &c->n, NULL), 0);
  return NULL;
}

static int forever(void *arg) {
  (void)arg;
  for (;;)
    if (weft_sleep_ns(1000000000) == -ECANCELED) return -ECANCELED;
}

TEST(explicit_runtime_from_threads) {
  weft_config c = cfg_workers(2);
  struct submit_ctx ctx = {0};
  ASSERT_EQ(weft_runtime_new(&ctx.rt, &c), 0);
  ASSERT_EQ(weft_runtime_call(ctx.rt, ret_arg, (void *)11), 11);
  weft_task lingering;
  ASSERT_EQ(weft_runtime_submit(ctx.rt, forever, NULL, &lingering), 0);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, submitter, &ctx);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  while (atomic_load(&ctx.n) < 1600) usleep(1000);
  ASSERT_EQ(atomic_load(&ctx.n), 1600);
  ASSERT_EQ(weft_task_release(lingering), 0);
  /* shutdown cancels the lingering task and waits for it */
  ASSERT_EQ(weft_runtime_shutdown(ctx.rt), 0);
}

/* ------------------------------------------------------------ pinning, migration */

static int pinned_task(void *arg) {
  (void)arg;
  if (weft_pin() != 0) return -1;
  int w = weft_worker_id();
  for (int i = 0; i < 200; i++) {
    if (i % 2)
      weft_sleep_ns(10000);
    else
      weft_yield();
    if (weft_worker_id() != w) return -2;
  }
  weft_unpin();
  return 0;
}

static int pin_main(void *arg) {
  (void)arg;
  weft_task t[8];
  for (int i = 0; i < 8; i++) t[i] = weft_spawn(pinned_task, NULL);
  for (int i = 0; i < 8; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(weft_unpin(), -EINVAL);
  return 0;
}

TEST(pinned_tasks_stay_on_their_worker) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(pin_main, NULL, &c), 0);
  c.test_migrate = 1;
  ASSERT_EQ(weft_run(pin_main, NULL, &c), 0);
}

/* A task woken in the scheduler's pass (here by its timer) behind local
 * work that runs long (a pinned task woken in the same pass, which then
 * spins) is taken by the idle worker, not left behind it. The worker puts
 * off the wake-up for the first task of its empty deque, which it usually
 * runs next (core/worker.c push_back_unpinned), and pays it when it picks
 * something else first, as here. */
static struct {
  int64_t deadline;
  _Atomic int64_t resumed;
  _Atomic bool hog_late; /* the hog started after its deadline: the premise failed, try again */
} behind;

static int hog_after_sleeper(void *arg) {
  (void)arg;
  /* A machine so loaded that the hog starts after its deadline makes its
   * sleep a yield: it then spins with the sleeper's timer due but not
   * fired (a worker runs its timers between tasks, not while one spins):
   * not what this test is about, so the round is run again. */
  if (weft_now_ns() >= behind.deadline) atomic_store(&behind.hog_late, true);
  weft_sleep_until(behind.deadline + 1); /* expires in the same pass, popped after the sleeper */
  int64_t end = weft_now_ns() + 400000000;
  while (weft_now_ns() < end) {
  }
  return 0;
}

static int timed_sleeper(void *arg) {
  (void)arg;
  weft_unpin(); /* started on the hog's worker, its timer there; free to move once woken */
  weft_sleep_until(behind.deadline);
  atomic_store(&behind.resumed, weft_now_ns());
  return 0;
}

static int behind_main(void *arg) {
  int *premise_failed = arg;
  unsigned x = (unsigned)weft_worker_id();
  behind.deadline = weft_now_ns() + 20000000;
  atomic_store(&behind.resumed, 0);
  atomic_store(&behind.hog_late, false);
  weft_task s = weft__spawn_pinned(x, timed_sleeper, NULL, NULL);
  weft_task h = weft__spawn_pinned(x, hog_after_sleeper, NULL, NULL);
  ASSERT_TRUE(s.rec && h.rec);
  ASSERT_EQ(weft_join(s), 0);
  int64_t late = atomic_load(&behind.resumed) - behind.deadline;
  ASSERT_EQ(weft_join(h), 0);
  weft_task_release(s);
  weft_task_release(h);
  if (atomic_load(&behind.hog_late)) {
    *premise_failed = 1;
    return 0;
  }
  if (late >= 200000000) fprintf(stderr, "woken %lld ms late, behind the hog\n", (long long)(late / 1000000));
  ASSERT_TRUE(late < 200000000);
  return 0;
}

TEST(a_task_woken_behind_a_long_local_task_is_stolen) {
  int premise_failed = 1;
  for (int round = 0; round < 10 && premise_failed; round++) {
    premise_failed = 0;
    weft_config c = cfg_workers(2);
    ASSERT_EQ(weft_run(behind_main, &premise_failed, &c), 0);
  }
  if (premise_failed) TEST_SKIP("the machine is too loaded to start two tasks within 20 ms");
}

static int migrating(void *arg) {
  (void)arg;
  int moves = 0;
  for (int i = 0; i < 100; i++) {
    int w = weft_worker_id();
    weft_yield();
    if (weft_worker_id() != w) moves++;
  }
  return moves;
}

/* Several tasks at once: a worker's inbox then holds more than one of them,
 * and none of those may run on the worker it left (they once went to the
 * stealable deque, where that worker could take them back). */
static int migrate_main(void *arg) {
  (void)arg;
  enum { N = 8 };
  weft_task t[N];
  for (int i = 0; i < N; i++) t[i] = weft_spawn(migrating, NULL);
  int moves = 0;
  for (int i = 0; i < N; i++) {
    moves += weft_join(t[i]);
    weft_task_release(t[i]);
  }
  return moves;
}

TEST(migrate_mode_moves_every_suspension) {
  weft_config c = cfg_workers(2);
  c.test_migrate = 1;
  c.test_seed = 12345;
  ASSERT_EQ(weft_run(migrate_main, NULL, &c), 8 * 100);
}

/* ------------------------------------------------------------ debug reports */

static int spin_hog(void *arg) {
  (void)arg;
  /* 500 ms against the 100 ms threshold: the monitor thread samples every
   * 20 ms and, on a loaded 2-CPU machine, may not run for tens of ms */
  int64_t end = weft_now_ns() + 500000000;
  while (weft_now_ns() < end) {
  }
  return 0;
}

static int debug_main(void *arg) {
  (void)arg;
  weft_spawn_opts o = {.name = "hog"};
  weft_task t = weft_spawn_ex(spin_hog, NULL, &o);
  weft_join(t);
  weft_task_release(t);
  weft_spawn_opts o2 = {.name = "left-behind"};
  weft_task u = weft_spawn_ex(forever, NULL, &o2);
  weft_sleep_ns(1000000);
  weft_task_release(u);
  return 0;
}

/* Run fn in a child with stderr captured; return what it wrote. */
static void capture_stderr(void (*fn)(void), char *out, size_t len, int *status) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 2);
    close(p[0]);
    fn();
    _exit(0);
  }
  close(p[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < len && (r = read(p[0], out + n, len - 1 - n)) > 0) n += (size_t)r;
  out[n] = 0;
  close(p[0]);
  while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
}

/* Run fn in a child that must exit 0; out gets its stderr. */
static void clean_run_stderr(void (*fn)(void), char *out, size_t len) {
  int st;
  capture_stderr(fn, out, len, &st);
  if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) TEST_FAIL("the child failed; its stderr: %s", out);
}

static void run_debug(void) {
  weft_config c = cfg_workers(2);
  c.debug = 1;
  weft_run(debug_main, NULL, &c);
}

TEST(debug_mode_reports_hogs_and_leftovers) {
  char buf[8192];
  clean_run_stderr(run_debug, buf, sizeof buf);
  if (!strstr(buf, "task 'hog' has run for")) TEST_FAIL("no hog report in: %s", buf);
  if (!strstr(buf, "'left-behind'")) TEST_FAIL("no leftover report in: %s", buf);
}

/* WEFT_DEBUG=yes turned the misuse reports on but not the runtime's debug
 * mode (the config read it as a number: 0), and WEFT_DEBUG=-1 failed the
 * run (found by review): one rule now, the misuse reports' */
static void run_debug_env(const char *value) {
  setenv("WEFT_DEBUG", value, 1);
  weft_config c = cfg_workers(2);
  int rc = weft_run(debug_main, NULL, &c);
  if (rc) {
    fprintf(stderr, "weft_run: %d\n", rc);
    _exit(4);
  }
}
static void run_debug_env_yes(void) { run_debug_env("yes"); }
static void run_debug_env_minus_one(void) { run_debug_env("-1"); }
static void run_debug_env_zero(void) { run_debug_env("0"); }

TEST(weft_debug_values_follow_one_rule) {
  char buf[8192];
  void (*on[])(void) = {run_debug_env_yes, run_debug_env_minus_one};
  for (int i = 0; i < 2; i++) {
    clean_run_stderr(on[i], buf, sizeof buf);
    if (!strstr(buf, "task 'hog' has run for")) TEST_FAIL("no hog report in: %s", buf);
  }
  clean_run_stderr(run_debug_env_zero, buf, sizeof buf);
  if (strstr(buf, "has run for")) TEST_FAIL("a report with WEFT_DEBUG=0: %s", buf);
}

static void spin_ms(int ms) {
  int64_t end = weft_now_ns() + (int64_t)ms * 1000000;
  while (weft_now_ns() < end) {
  }
}

static int spin_70ms(void *arg) {
  (void)arg;
  spin_ms(70);
  return 0;
}

/* 70 ms, then a join that runs a 70 ms child inline (one worker: nobody
 * steals it first), then 70 ms more: no task ran 100 ms without a switch */
static int inline_join_main(void *arg) {
  (void)arg;
  spin_ms(70);
  weft_spawn_opts o = {.name = "inline-child"};
  weft_task t = weft_spawn_ex(spin_70ms, NULL, &o);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  spin_ms(70);
  return 0;
}

static void run_debug_inline(void) {
  weft_config c = cfg_workers(1);
  c.debug = 1;
  weft_run(inline_join_main, NULL, &c);
}

TEST(debug_mode_times_an_inline_child_apart_from_its_joiner) {
  /* The monitor times wall clock: a worker thread that the loaded machine
   * takes off its CPU for 30 ms inside one 70 ms spin is a true report. So
   * a round with a report is tried again; one clean round of five passes
   * (before the fix every round reported the 140 ms of joiner and child). */
  char buf[8192];
  for (int round = 0;; round++) {
    clean_run_stderr(run_debug_inline, buf, sizeof buf);
    if (!strstr(buf, "has run for")) break;
    if (round == 4) TEST_FAIL("a task reported for its joiner's or child's time in 5 rounds: %s", buf);
  }
}

/* found by review: a callback that held its worker was never reported (it
 * runs in the scheduler, with no task running): asyncio's debug mode
 * reports a slow callback (slow_callback_duration) */
static void slow_cb(void *arg) {
  (void)arg;
  spin_ms(500); /* against the 100 ms threshold, as spin_hog */
}
static int slow_cb_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_call_soon(slow_cb, NULL, NULL), 0);
  return weft_sleep_ns(700000000);
}
static void run_debug_slow_cb(void) {
  weft_config c = cfg_workers(2);
  c.debug = 1;
  weft_run(slow_cb_main, NULL, &c);
}

TEST(debug_mode_reports_a_callback_that_holds_its_worker) {
  char buf[8192];
  clean_run_stderr(run_debug_slow_cb, buf, sizeof buf);
  if (!strstr(buf, "weft: debug: a callback has run for")) TEST_FAIL("no report in: %s", buf);
}

/* found by review: a misuse on the program's own thread (no worker's) was
 * reported only with WEFT_DEBUG=1, never with weft_config.debug = 1 */
static void run_debug_misuse_outside(void) {
  weft_config c = cfg_workers(1);
  c.debug = 1;
  weft_runtime *rt;
  if (weft_runtime_new(&rt, &c) != 0) _exit(2);
  if (weft_sleep_ns(1) != -EINVAL) _exit(3);
  weft_runtime_shutdown(rt);
}

TEST(debug_mode_reports_a_misuse_on_the_programs_thread) {
  char buf[8192];
  clean_run_stderr(run_debug_misuse_outside, buf, sizeof buf);
  if (!strstr(buf, "weft: misuse: weft_sleep outside a task")) TEST_FAIL("no misuse report in: %s", buf);
}

static int recurse(int depth) {
  volatile char pad[512];
  pad[0] = (char)depth;
  return depth <= 0 ? pad[0] : recurse(depth - 1) + pad[0];
}

static int overflow_task(void *arg) {
  (void)arg;
  return recurse(1 << 20);
}

static int overflow_main(void *arg) {
  (void)arg;
  weft_spawn_opts o = {.name = "deep-diver"};
  weft_task t = weft_spawn_ex(overflow_task, NULL, &o);
  weft_join(t);
  return 0;
}

static void run_overflow(void) {
  weft_config c = cfg_workers(1);
  weft_run(overflow_main, NULL, &c);
}

TEST(stack_overflow_is_reported_by_name) {
  if (test_sanitized()) TEST_SKIP("the sanitizers own SIGSEGV");
  char buf[8192];
  int st;
  capture_stderr(run_overflow, buf, sizeof buf, &st);
  ASSERT_TRUE(WIFSIGNALED(st));
  if (!strstr(buf, "task 'deep-diver' overflowed its")) TEST_FAIL("no overflow report in: %s", buf);
}

/* ------------------------------------------------------------ stack memory */

static long rss_pages(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, rss = -1;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = -1;
    fclose(f);
  }
  return rss;
}

static int deep_sleeper(void *arg) {
  (void)arg;
  volatile char buf[32 * 1024]; /* touch 8 pages of this task's stack */
  for (size_t i = 0; i < sizeof buf; i += 512) buf[i] = (char)i;
  return weft_sleep_ns(5000000) < 0 ? -1 : buf[1024] == (char)1024 ? 0 : -2;
}

static int trim_main(void *arg) {
  (void)arg;
  enum { N = 2000 };
  static weft_task t[N];
  for (int i = 0; i < N; i++) t[i] = weft_spawn(deep_sleeper, NULL);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  long busy = rss_pages();
  weft_sleep_ns(1600000000); /* every worker idle for more than a second */
  long idle = rss_pages();
  printf("  rss after the burst %ld pages, after 1.6 s idle %ld pages\n", busy, idle);
  /* 2000 stacks x 8 touched pages; each worker keeps WEFT_STACK_HOT (64) */
  ASSERT_LT(idle, busy - 2000 * 8 / 2);
  return 0;
}

TEST(idle_workers_give_stack_memory_back) {
  if (test_sanitized()) TEST_SKIP("the sanitizers' own memory use blurs RSS");
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(trim_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ I/O completion path */

static int nop_main(void *arg) {
  (void)arg;
  if (weft_backend() != WEFT_BACKEND_URING) return 0;
  for (int i = 0; i < 1000; i++) ASSERT_EQ(weft__io_nop(), 0);
  return 0;
}

TEST(uring_nop_round_trip) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(nop_main, NULL, &c), 0);
}

static int many_nops(void *arg) {
  (void)arg;
  for (int i = 0; i < 50; i++)
    if (weft__io_nop() != 0) return -1;
  return 0;
}

static int nop_pressure_main(void *arg) {
  (void)arg;
  if (weft_backend() != WEFT_BACKEND_URING) return 0;
  /* more operations in flight than ring entries (ring_entries = 8) */
  weft_task t[64];
  for (int i = 0; i < 64; i++) t[i] = weft_spawn(many_nops, NULL);
  for (int i = 0; i < 64; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  return 0;
}

TEST(more_operations_than_ring_entries) {
  weft_config c = cfg_workers(2);
  c.ring_entries = 8;
  ASSERT_EQ(weft_run(nop_pressure_main, NULL, &c), 0);
}


/* ------------------------------------------------------------ asyncio conformance (found by review;
 * the inherited descriptors, the run end and the SIGINT take-over failed
 * before) */

/* asyncio.run cancels each task left when main returns once and waits for
 * it: a task may clean up with awaits (python3.11: the cleanup's
 * asyncio.sleep(0.2) completes). */
static atomic_int cleanup_rc = 99;
static int cleans_up(void *arg) {
  (void)arg;
  int rc = weft_sleep_ns(100LL * 1000 * 1000000LL);
  if (rc != -ECANCELED) return rc;
  atomic_store(&cleanup_rc, weft_sleep_ns(200 * 1000000LL)); /* cleanup that suspends */
  return -ECANCELED;
}
static int leaves_a_task(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(cleans_up, NULL);
  weft_task_release(t);
  return weft_sleep_ns(50 * 1000000LL);
}
TEST_T(a_leftover_task_is_cancelled_once_and_may_clean_up, 20) {
  weft_config cfg = cfg_workers(2);
  ASSERT_EQ(weft_run(leaves_a_task, NULL, &cfg), 0);
  ASSERT_EQ(atomic_load(&cleanup_rc), 0);
}


/* ------------------------------------------------------------ found by review: a default-stack child
 * joined inline from a deep joiner (it overflowed: the joiner's stack had
 * only 16 KiB left), the overflow report's default name (it printed ''),
 * and weft_tasks listing done tasks (asyncio.all_tasks does not) */

/* Uses about `kib` KiB of stack through a recursion with real frames. */
static __attribute__((noinline)) int rv_burn(int kib) {
  volatile char buf[1024];
  buf[0] = (char)kib;
  buf[1023] = (char)kib;
  if (kib <= 1) return buf[0] + buf[1023];
  return rv_burn(kib - 1) + buf[0];
}
static int rv_child_burns(void *arg) {
  rv_burn((int)(intptr_t)arg);
  return 5;
}
/* the joiner first uses most of its stack, then spawns a default-stack
 * child that needs 40 KiB (within the documented 64 KiB default) */
static __attribute__((noinline)) int rv_join_deep(int kib) {
  volatile char buf[1024];
  buf[0] = 1;
  if (kib > 1) return rv_join_deep(kib - 1) + buf[0] - 1;
  weft_task c = weft_spawn(rv_child_burns, (void *)(intptr_t)40);
  int rc = weft_join(c);
  weft_task_release(c);
  return rc;
}
static int rv_deep_joiner(void *arg) {
  (void)arg;
  return rv_join_deep(40);
}
static int rv_inline_stack_main(void *arg) {
  (void)arg;
  weft_task j = weft_spawn(rv_deep_joiner, NULL);
  int rc = weft_join(j);
  weft_task_release(j);
  return rc;
}
/* core.h: stack_size 0 = the runtime's default (64 KiB): a default-stack
 * task may use 40 KiB whoever joins it */
TEST_T(a_default_stack_child_joined_from_a_deep_joiner, 20) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(rv_inline_stack_main, NULL, &c), 5);
}

/* Overflow of a task with the default name: reported by name (core/stack.h:
 * "weft: task 'NAME' overflowed its N-byte stack"), the name being the one
 * weft_task_get_name gives: "task-<id>". */
static char rv_expect[32];
static int rv_overflows(void *arg) {
  (void)arg;
  weft_task_get_name(weft_current(), rv_expect, sizeof rv_expect);
  fprintf(stderr, "expect '%s'\n", rv_expect);
  return rv_burn(1000); /* 1 MiB on a 64 KiB stack */
}
static int rv_overflow_main(void *arg) {
  weft_spawn_opts o = {.name = arg, .stack_size = 16384};
  weft_task t = weft_spawn_ex(rv_overflows, NULL, &o);
  return weft_join(t);
}
static void rv_overflow_report(const char *name, char *out, size_t cap) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 2);
    close(p[0]);
    weft_config c = cfg_workers(1);
    _exit(weft_run(rv_overflow_main, (void *)name, &c));
  }
  close(p[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < cap && (r = read(p[0], out + n, cap - 1 - n)) > 0) n += (size_t)r;
  out[n] = 0;
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}
TEST_T(an_overflow_is_reported_by_the_default_name, 30) {
  /* a sanitizer's own stack-overflow handling reports it its way (the
   * report's wording is covered by test_stack under the sanitizers) */
  if (test_sanitized()) TEST_SKIP("the sanitizer reports a deep recursion itself");
  char out[4096];
  rv_overflow_report("named-one", out, sizeof out);
  ASSERT_TRUE(strstr(out, "weft: task 'named-one' overflowed") != NULL);
  rv_overflow_report(NULL, out, sizeof out);
  char *e = strstr(out, "expect '");
  ASSERT_TRUE(e != NULL);
  char want[128];
  snprintf(want, sizeof want, "weft: task '%.*s' overflowed", (int)(strchr(e + 8, '\'') - (e + 8)), e + 8);
  ASSERT_TRUE(strstr(out, want) != NULL);
}

/* asyncio.all_tasks(): "Return a set of not yet finished Task objects";
 * guide.md maps it to weft_tasks. A done task whose handle is still held
 * is not alive. */
static int rv_all_tasks_main(void *arg) {
  (void)arg;
  weft_spawn_opts o = {.name = "finished-one"};
  weft_task t = weft_spawn_ex(ret_arg, (void *)1, &o);
  ASSERT_EQ(weft_join(t), 1);
  ASSERT_TRUE(weft_task_done(t));
  weft_task_info info[16];
  int n = weft_tasks(info, 16);
  for (int i = 0; i < n && i < 16; i++) ASSERT_TRUE(strcmp(info[i].name, "finished-one") != 0);
  weft_task_release(t);
  return 0;
}
TEST_T(the_listing_excludes_done_tasks, 20) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(rv_all_tasks_main, NULL, &c), 0);
}


/* ------------------------------------------------------------ a submission racing a shutdown
 * A submission that passed its check of `stopping` just before a shutdown
 * began spawned into the runtime after shutdown had freed it (found by
 * review; ASan: a use after free in carve_records). The test hook holds a
 * submission in that window while another thread shuts the runtime down:
 * shutdown must wait for it, count its task and cancel or run it. */
#ifdef WEFT_TEST_HOOKS
static sem_t hook_entered, hook_release;
static void hold_submission(void) {
  sem_post(&hook_entered);
  sem_wait(&hook_release);
}
static atomic_int held_ran;
static int held_task(void *arg) {
  (void)arg;
  atomic_store(&held_ran, 1);
  return 0;
}
struct held_ctx {
  weft_runtime *rt;
  int rc;
};
static void *held_submitter(void *arg) {
  struct held_ctx *c = arg;
  c->rc = weft_runtime_submit(c->rt, held_task, NULL, NULL);
  return NULL;
}
static void *shutter(void *arg) {
  weft_runtime_shutdown(arg);
  return NULL;
}
#endif
TEST(a_submission_racing_a_shutdown_is_waited_for) {
#ifndef WEFT_TEST_HOOKS
  TEST_SKIP("needs -DWEFT_TEST_HOOKS");
#else
  sem_init(&hook_entered, 0, 0);
  sem_init(&hook_release, 0, 0);
  weft_config c = cfg_workers(2);
  struct held_ctx ctx = {0};
  ASSERT_EQ(weft_runtime_new(&ctx.rt, &c), 0);
  weft__test_submit_hook = hold_submission;
  pthread_t sub, shut;
  pthread_create(&sub, NULL, held_submitter, &ctx);
  sem_wait(&hook_entered); /* past its check, not spawned yet */
  weft__test_submit_hook = NULL;
  pthread_create(&shut, NULL, shutter, ctx.rt);
  usleep(50000); /* shutdown has begun (and, before the fix, freed the runtime) */
  sem_post(&hook_release);
  pthread_join(sub, NULL);
  pthread_join(shut, NULL);
  ASSERT_EQ(ctx.rc, 0); /* accepted: its check came first */
  (void)atomic_load(&held_ran); /* ran, or was cancelled before it started: both fine */
#endif
}

/* ------------------------------------------------------------ overflow reports (found by review:
 * a canary clobbered by a task that then ended was blamed on the next task
 * to get its stack; an overflow without a guard page printed nothing; a
 * fault in scheduler code after a task with a stack of its own ended read
 * that stack's freed descriptor) */


/* An overflow that returns before its task switches again clobbers the
 * canary (debug mode, no guard page: the mapping budget spent). The task
 * then ends; the canary must be checked there, not left for the next task
 * that gets the stack, which was blamed for it. */
static __attribute__((noinline)) int sr_overrun(const char *lo) {
  /* an alloca that ends 256 bytes below lo, in the page under the stack
   * (no guard there: the budget is spent), every byte written */
  size_t n = (size_t)((char *)__builtin_frame_address(0) - lo) + 256;
  volatile char *v = __builtin_alloca(n);
  for (size_t i = 0; i < n; i++) v[i] = 1;
  return v[0];
}
static int sr_clobberer(void *arg) {
  (void)arg;
  sr_overrun(weft__task_self()->stack->lo);
  return 0; /* ends without another switch */
}
static int sr_innocent(void *arg) {
  (void)arg;
  weft_yield(); /* its first switch: the stack check */
  return 0;
}
static int sr_canary_main(void *arg) {
  (void)arg;
  weft_spawn_opts a = {.name = "clobberer"}, b = {.name = "innocent"};
  weft_task t = weft_spawn_ex(sr_clobberer, NULL, &a);
  weft_sleep_ns(20000000); /* it runs on its own stack, not inline */
  weft_join(t);
  weft_task u = weft_spawn_ex(sr_innocent, NULL, &b); /* gets the clobberer's stack back (hot, LIFO) */
  weft_sleep_ns(20000000);
  weft_join(u);
  return 0;
}
static void sr_run_canary(void) {
  weft__stack_test_guard(true, 0); /* no guard page: the canary */
  weft_config c = cfg_workers(1);
  c.debug = 1;
  weft_run(sr_canary_main, NULL, &c);
}
TEST_T(a_clobbered_canary_is_blamed_on_the_task_that_ended, 30) {
#ifndef WEFT_TEST_HOOKS
  TEST_SKIP("needs -DWEFT_TEST_HOOKS");
#else
  char out[8192];
  int st;
  capture_stderr(sr_run_canary, out, sizeof out, &st);
  if (!strstr(out, "weft: task 'clobberer' overflowed")) TEST_FAIL("not blamed on the clobberer: %s", out);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) TEST_FAIL("status %#x: %s", st, out);
#endif
}

/* Stacks without a guard page (the mapping budget spent; debug mode adds
 * the canary): a deep recursion runs on below its stack (through the
 * slab's other stacks, or the page under a stack of its own) and faults
 * before it switches again. It printed nothing (a plain SIGSEGV); the
 * handler knows it by the stack pointer, which has left the stack. */
static int sr_deep(void *arg) {
  (void)arg;
  return recurse(1 << 20);
}
static int sr_deep_main(void *arg) {
  weft_spawn_opts o = {.name = "deep-no-guard", .stack_size = (size_t)(uintptr_t)arg};
  weft_task t = weft_spawn_ex(sr_deep, NULL, &o);
  weft_sleep_ns(10000000); /* on its own stack, not inline */
  return weft_join(t);
}
static size_t sr_size;
static int sr_debug;
static void sr_run_deep(void) {
  weft__stack_test_guard(true, 0);
  weft_config c = cfg_workers(1);
  c.debug = sr_debug;
  weft_run(sr_deep_main, (void *)(uintptr_t)sr_size, &c);
}
TEST_T(an_overflow_without_a_guard_page_is_reported_by_name, 60) {
#ifndef WEFT_TEST_HOOKS
  TEST_SKIP("needs -DWEFT_TEST_HOOKS");
#else
  if (test_sanitized()) TEST_SKIP("the sanitizer reports a deep recursion itself");
  const size_t sizes[] = {0, 256 * 1024}; /* a slab stack, a stack of its own */
  for (int d = 0; d < 2; d++)
    for (int i = 0; i < 2; i++) {
      sr_size = sizes[i];
      sr_debug = d;
      char out[8192];
      int st;
      capture_stderr(sr_run_deep, out, sizeof out, &st);
      if (!strstr(out, "weft: task 'deep-no-guard' overflowed its"))
        TEST_FAIL("debug %d, stack_size %zu: no report (status %#x): %s", d, sizes[i], st, out);
      ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    }
#endif
}

/* A fault in scheduler context after a task with a stack of its own
 * (larger than the default: unmapped and freed when it ends) ended: the
 * handler must not read the freed stack descriptor. */
static void sr_null_deref(void *arg) {
  (void)arg;
  volatile char *volatile p = (volatile char *)8;
  *p = 1;
}
static int sr_big(void *arg) {
  (void)arg;
  return 0;
}
static int sr_uaf_main(void *arg) {
  (void)arg;
  weft_spawn_opts o = {.name = "big", .stack_size = 256 * 1024, .detached = true};
  weft_call_later(30000000, sr_null_deref, NULL, NULL);
  weft_spawn_ex(sr_big, NULL, &o);
  weft_sleep_ns(1000000000);
  return 0;
}
static void sr_run_uaf(void) {
  weft_config c = cfg_workers(1);
  weft_run(sr_uaf_main, NULL, &c);
}
TEST_T(a_scheduler_fault_after_a_big_stack_task_is_a_plain_segv, 30) {
  char out[16384];
  int st;
  capture_stderr(sr_run_uaf, out, sizeof out, &st);
  if (strstr(out, "weft: task")) TEST_FAIL("reported as an overflow: %s", out);
  if (strstr(out, "use-after-free")) TEST_FAIL("the handler read a freed descriptor: %s", out);
  if (test_sanitized() && strstr(out, "SEGV")) return;
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV) TEST_FAIL("status %#x: %s", st, out);
}

/* ------------------------------------------------------------ a thread waiting through a shutdown
 * A thread blocked in weft_runtime_wait on a task that the shutdown
 * cancels wakes once the task is done, then releases the handle, which
 * recycles the record into the runtime's arena (under its arena_lock).
 * Shutdown saw no live task and freed the runtime meanwhile (found by
 * review with a program's own TSan run: a race between free_runtime and
 * depot_push from weft_runtime_wait). The hook holds the woken waiter
 * before its release: shutdown must not return until the waiter has left. */
#ifdef WEFT_TEST_HOOKS
static atomic_int shutdown_returned, returned_under_waiter, waiter_held;
static void hold_waiter(void) {
  atomic_store(&waiter_held, 1);
  usleep(100000); /* the shutdown, unless it waits for us, returns meanwhile */
  atomic_store(&returned_under_waiter, atomic_load(&shutdown_returned));
}
struct wait_ctx {
  weft_runtime *rt;
  int rc;
  atomic_int submitted;
};
static void *blocked_waiter(void *arg) {
  struct wait_ctx *c = arg;
  weft_task t;
  ASSERT_EQ(weft_runtime_submit(c->rt, forever, NULL, &t), 0);
  atomic_store(&c->submitted, 1);
  c->rc = weft_runtime_wait(c->rt, t);
  return NULL;
}
static void *blocked_caller(void *arg) {
  struct wait_ctx *c = arg;
  atomic_store(&c->submitted, 1);
  c->rc = weft_runtime_call(c->rt, forever, NULL);
  return NULL;
}
#endif
TEST(a_thread_waiting_through_a_shutdown_is_waited_for) {
#ifndef WEFT_TEST_HOOKS
  TEST_SKIP("needs -DWEFT_TEST_HOOKS");
#else
  for (int round = 0; round < 2; round++) {
    weft_config c = cfg_workers(2);
    struct wait_ctx ctx = {0};
    atomic_store(&shutdown_returned, 0);
    atomic_store(&returned_under_waiter, 0);
    atomic_store(&waiter_held, 0);
    ASSERT_EQ(weft_runtime_new(&ctx.rt, &c), 0);
    weft__test_wait_hook = hold_waiter;
    pthread_t th;
    pthread_create(&th, NULL, round ? blocked_caller : blocked_waiter, &ctx);
    while (!atomic_load(&ctx.submitted)) usleep(1000);
    usleep(20000); /* the thread is blocked in the wait */
    ASSERT_EQ(weft_runtime_shutdown(ctx.rt), 0);
    atomic_store(&shutdown_returned, 1);
    pthread_join(th, NULL);
    weft__test_wait_hook = NULL;
    ASSERT_EQ(atomic_load(&waiter_held), 1);
    ASSERT_EQ(ctx.rc, -ECANCELED);
    ASSERT_EQ(atomic_load(&returned_under_waiter), 0); /* the runtime was not freed under it */
  }
#endif
}

/* ------------------------------------------------------------ a shutdown from the runtime's own pool
 * weft_runtime_shutdown may be called from any thread but the runtime's
 * workers: a weft_to_thread function of that runtime called it and never
 * returned (found by review). Its task waits for the function (or, with
 * DETACH, the pool's fini waits for the thread running it): the shutdown
 * waited for itself. It is refused there, as from a task. */
static weft_runtime *pool_rt;
static int shut_own_runtime(void *arg) {
  (void)arg;
  return weft_runtime_shutdown(pool_rt);
}
static int shut_from_pool_main(void *arg) {
  return weft_to_thread_ex(shut_own_runtime, NULL, (unsigned)(uintptr_t)arg);
}
TEST_T(a_shutdown_from_the_runtimes_own_pool_is_refused, 20) {
  for (unsigned flags = 0; flags <= WEFT_TO_THREAD_DETACH; flags++) {
    weft_config c = cfg_workers(2);
    ASSERT_EQ(weft_runtime_new(&pool_rt, &c), 0);
    ASSERT_EQ(weft_runtime_call(pool_rt, shut_from_pool_main, (void *)(uintptr_t)flags), -EINVAL);
    ASSERT_EQ(weft_runtime_shutdown(pool_rt), 0);
  }
}

/* ------------------------------------------------------------ a failed start's memory
 * A worker whose reactor could not be set up (here: no descriptor left,
 * -EMFILE) ended its thread without unmapping the alternate signal stack
 * it had mapped first (found by review): 68 KiB of address space per
 * failed worker, for a program that retries weft_runtime_new. */
static long vm_size_kib(void) {
  FILE *f = fopen("/proc/self/status", "re");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmSize:", 7) == 0) v = atol(line + 7);
  if (f) fclose(f);
  return v;
}
TEST_T(a_failed_start_unmaps_its_workers_signal_stacks, 60) {
#ifdef WEFT_TSAN
  TEST_SKIP("ThreadSanitizer keeps memory for every thread that ended");
#endif
  weft_config c = cfg_workers(2);
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0); /* the once-per-process setup, before measuring */
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  int lowest = dup(0); /* descriptors are allocated lowest first */
  ASSERT_GE(lowest, 0);
  close(lowest);
  struct rlimit old, lim;
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  lim = old;
  lim.rlim_cur = (rlim_t)lowest + 1; /* one descriptor: no worker's reactor can be set up */
  long before = vm_size_kib();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lim), 0);
  for (int i = 0; i < 100; i++) ASSERT_EQ(weft_runtime_new(&rt, &c), -EMFILE);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
  long grown = vm_size_kib() - before;
  ASSERT_LT(grown, 4096); /* 100 x 2 workers x 68 KiB leaked: 13600 */
}

TEST_MAIN()
