/* tests/test_timeout.c: timeout scopes (asyncio.timeout/timeout_at) and
 * wait_for, from asyncio's documented behaviour (Python 3.12), including
 * cancel counting through uncancel and the races between completion and
 * expiry. */
#include <pthread.h>

#include "task_util.h"

static int self_cancelling(void) { return weft_cancelling(weft_current()); }

/* No cancel request is left over: the next suspension is not cancelled. */
static void assert_clean(void) {
  ASSERT_EQ(self_cancelling(), 0);
  ASSERT_EQ(weft_yield(), 0);
}

static int scope_basic_main(void *arg) {
  (void)arg;
  weft_timeout to;
  ASSERT_EQ(weft_timeout_enter(&to, 1000 * MS), 0);
  ASSERT_EQ(weft_sleep_ns(1 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  ASSERT_TRUE(!weft_timeout_expired(&to));
  assert_clean();
  /* expiry */
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_timeout_enter(&to, 5 * MS), 0);
  int rc = weft_sleep_ns(10000 * MS);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
  ASSERT_TRUE(weft_timeout_expired(&to));
  ASSERT_TRUE(weft_now_ns() - t0 >= 5 * MS);
  assert_clean();
  /* any number of suspending calls inside */
  ASSERT_EQ(weft_timeout_enter(&to, 20 * MS), 0);
  for (rc = 0; rc == 0;) rc = weft_sleep_ns(1 * MS);
  ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
  assert_clean();
  return 0;
}
TEST(timeout_scope_expires_or_not) { run_both(scope_basic_main, NULL); }

static int in_scope(void *arg) {
  (void)arg;
  weft_timeout to;
  weft_timeout_enter(&to, 1000 * MS);
  int rc = weft_sleep_ns(5000 * MS);
  if (rc != -ECANCELED) return -EPROTO;
  rc = weft_timeout_leave(&to, rc);
  if (weft_timeout_expired(&to)) return -EPROTO;
  return rc;
}

static int external_cancel_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(in_scope, NULL);
  weft_sleep_ns(2 * MS);
  weft_cancel(t);
  ASSERT_EQ(weft_join(t), -ECANCELED); /* a cancellation from elsewhere stays -ECANCELED */
  weft_task_release(t);
  return 0;
}
TEST(timeout_scope_external_cancel_stays_cancelled) { run_both(external_cancel_main, NULL); }

static int nested_together_main(void *arg) {
  unsigned workers = (unsigned)weft_worker_count();
  (void)arg;
  for (int round = 0; round < 20; round++) {
    weft_timeout outer, inner;
    int64_t d = weft_now_ns() + 3 * MS;
    ASSERT_EQ(weft_timeout_enter_at(&outer, d), 0);
    ASSERT_EQ(weft_timeout_enter_at(&inner, d), 0);
    int rc = weft_sleep_ns(10000 * MS);
    ASSERT_EQ(rc, -ECANCELED);
    int ri = weft_timeout_leave(&inner, rc);
    int ro = weft_timeout_leave(&outer, ri);
    /* asyncio: the inner one passes CancelledError up, the outer one turns
     * it into TimeoutError (on one worker both fire in one timer pass;
     * across workers the task may leave the inner scope before its timer
     * fired, and then the inner did not expire at all) */
    if (workers == 1) {
      ASSERT_EQ(ri, -ECANCELED);
      ASSERT_TRUE(weft_timeout_expired(&inner));
    } else {
      ASSERT_TRUE(ri == -ECANCELED || ri == -ETIMEDOUT);
    }
    ASSERT_EQ(ro, -ETIMEDOUT);
    ASSERT_TRUE(weft_timeout_expired(&outer));
    assert_clean();
  }
  return 0;
}
TEST(timeout_nested_expire_together) { run_both(nested_together_main, NULL); }

static int nested_one_main(void *arg) {
  (void)arg;
  weft_timeout outer, inner;
  /* inner expires, outer goes on */
  ASSERT_EQ(weft_timeout_enter(&outer, 2000 * MS), 0);
  ASSERT_EQ(weft_timeout_enter(&inner, 3 * MS), 0);
  int rc = weft_sleep_ns(10000 * MS);
  ASSERT_EQ(weft_timeout_leave(&inner, rc), -ETIMEDOUT);
  ASSERT_EQ(weft_sleep_ns(1 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&outer, 0), 0);
  ASSERT_TRUE(!weft_timeout_expired(&outer));
  assert_clean();
  /* outer expires inside the inner one */
  ASSERT_EQ(weft_timeout_enter(&outer, 3 * MS), 0);
  ASSERT_EQ(weft_timeout_enter(&inner, 2000 * MS), 0);
  rc = weft_sleep_ns(10000 * MS);
  rc = weft_timeout_leave(&inner, rc);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_TRUE(!weft_timeout_expired(&inner));
  ASSERT_EQ(weft_timeout_leave(&outer, rc), -ETIMEDOUT);
  assert_clean();
  return 0;
}
TEST(timeout_nested_one_expires) { run_both(nested_one_main, NULL); }

static int reschedule_main(void *arg) {
  (void)arg;
  weft_timeout to;
  ASSERT_EQ(weft_timeout_enter(&to, WEFT_FOREVER), 0);
  ASSERT_EQ(weft_timeout_when(&to), WEFT_FOREVER);
  int64_t d = weft_now_ns() + 3 * MS;
  ASSERT_EQ(weft_timeout_reschedule(&to, d), 0);
  ASSERT_EQ(weft_timeout_when(&to), d);
  int rc = weft_sleep_ns(10000 * MS);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(weft_timeout_reschedule(&to, WEFT_FOREVER), -EINVAL); /* expired */
  ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
  assert_clean();
  /* pushed later: the first deadline's timer entry is stale and must not act */
  ASSERT_EQ(weft_timeout_enter(&to, 2 * MS), 0);
  ASSERT_EQ(weft_timeout_reschedule(&to, weft_now_ns() + 2000 * MS), 0);
  ASSERT_EQ(weft_sleep_ns(20 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  ASSERT_TRUE(!weft_timeout_expired(&to));
  /* pulled in to "never" */
  ASSERT_EQ(weft_timeout_enter(&to, 2 * MS), 0);
  ASSERT_EQ(weft_timeout_reschedule(&to, WEFT_FOREVER), 0);
  ASSERT_EQ(weft_sleep_ns(10 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  /* a stale entry of a scope left long ago does not hit a new scope */
  ASSERT_EQ(weft_timeout_enter(&to, 3 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  ASSERT_EQ(weft_timeout_enter(&to, 2000 * MS), 0);
  ASSERT_EQ(weft_sleep_ns(15 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  assert_clean();
  return 0;
}
TEST(timeout_reschedule_and_stale_entries) { run_both(reschedule_main, NULL); }

static int past_deadline_main(void *arg) {
  (void)arg;
  weft_timeout to;
  /* due at once, but the body never suspends: the expiry (like asyncio's
   * call_soon of it) never ran: no error, nothing left */
  ASSERT_EQ(weft_timeout_enter_at(&to, weft_now_ns() - 1), 0);
  ASSERT_TRUE(!weft_timeout_expired(&to));
  ASSERT_EQ(weft_timeout_leave(&to, 5), 5);
  ASSERT_TRUE(!weft_timeout_expired(&to));
  assert_clean();
  ASSERT_EQ(weft_timeout_enter(&to, 0), 0);
  int rc = weft_sleep_ns(1 * MS);
  ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
  assert_clean();
  /* the body catches the cancellation and returns normally: no conversion */
  ASSERT_EQ(weft_timeout_enter(&to, 2 * MS), 0);
  rc = weft_sleep_ns(1000 * MS);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  ASSERT_TRUE(weft_timeout_expired(&to));
  assert_clean();
  return 0;
}
TEST(timeout_past_deadline_and_swallowed) { run_both(past_deadline_main, NULL); }

static int scope_bad_input_main(void *arg) {
  (void)arg;
  weft_timeout a, b;
  ASSERT_EQ(weft_timeout_enter(&a, -1), -EINVAL);
  ASSERT_EQ(weft_timeout_enter(&a, 1000 * MS), 0);
  ASSERT_EQ(weft_timeout_enter(&a, 1000 * MS), -EINVAL); /* re-entered */
  ASSERT_EQ(weft_timeout_enter(&b, 1000 * MS), 0);
  ASSERT_EQ(weft_timeout_leave(&a, 0), -EINVAL); /* not the innermost */
  ASSERT_EQ(weft_timeout_leave(&b, 0), 0);
  ASSERT_EQ(weft_timeout_leave(&b, 0), -EINVAL); /* left already */
  ASSERT_EQ(weft_timeout_reschedule(&b, 0), -EINVAL);
  ASSERT_EQ(weft_timeout_leave(&a, 0), 0);
  assert_clean();
  return 0;
}
TEST(timeout_bad_input) {
  weft_timeout t;
  ASSERT_EQ(weft_timeout_enter(&t, 1), -EINVAL); /* outside a task */
  ASSERT_TRUE(!weft_timeout_expired(NULL)); /* read through NULL before */
  ASSERT_EQ(weft_taskgroup_failed(NULL), -EINVAL); /* the same */
  run_both(scope_bad_input_main, NULL);
}

/* cancel counts through uncancel, as asyncio's Task.cancelling/uncancel */
static int counts_main(void *arg) {
  (void)arg;
  weft_task me = weft_current();
  ASSERT_EQ(weft_cancel(me), 1);
  ASSERT_EQ(weft_cancel(me), 1);
  ASSERT_EQ(weft_cancelling(me), 2);
  ASSERT_EQ(weft_uncancel(me), 1);
  ASSERT_EQ(weft_yield(), -ECANCELED); /* still requested */
  ASSERT_EQ(weft_uncancel(me), 0);
  ASSERT_EQ(weft_uncancel(me), 0); /* never below zero */
  assert_clean();
  /* an outer request and an expiry together: the scope keeps -ECANCELED.
   * The scope expires only after the outer request was delivered (a 2 ms
   * scope that expired before the first sleep, under ASan on a loaded
   * machine, merged its request into the pending one, as asyncio's cancel
   * of a task with a cancel pending does: the second sleep returned 0) */
  weft_timeout to;
  ASSERT_EQ(weft_timeout_enter(&to, 100000 * MS), 0);
  ASSERT_EQ(weft_cancel(me), 1); /* "from elsewhere" */
  int rc = weft_sleep_ns(1000 * MS);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(weft_timeout_reschedule(&to, weft_now_ns() + 2 * MS), 0);
  rc = weft_sleep_ns(1000 * MS); /* the body goes on: the scope expires now */
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(self_cancelling(), 2);
  ASSERT_EQ(weft_timeout_leave(&to, rc), -ECANCELED);
  ASSERT_EQ(self_cancelling(), 1);
  ASSERT_EQ(weft_uncancel(me), 0);
  assert_clean();
  return 0;
}
TEST(timeout_cancel_counts_through_uncancel) { run_both(counts_main, NULL); }

/* Racy: a task withdraws its own last request (as timeout_leave and
 * taskgroup_leave do) while another thread cancels it. The other request
 * must stand: counted, and delivered at the task's next suspension. Before,
 * uncancel's "drop the request at 0" could clear the pending flag of a
 * cancel made between its decrement and that clear (the count said 1, no
 * suspension was ever cancelled: 8 per second here, with 30,000 races a
 * second). The canceller makes one request per round, when armed. */
static weft_task ur_task;
static atomic_int ur_armed, ur_stop;
static void *ur_canceller(void *arg) {
  (void)arg;
  while (!atomic_load_explicit(&ur_stop, memory_order_relaxed)) {
    if (atomic_load(&ur_armed)) {
      weft_cancel(ur_task);
      atomic_store(&ur_armed, 0); /* after the request is made */
    }
  }
  return NULL;
}
static int uncancel_race_main(void *arg) {
  (void)arg;
  ur_task = weft_current();
  atomic_store(&ur_stop, 0);
  atomic_store(&ur_armed, 1);
  pthread_t th;
  ASSERT_EQ(pthread_create(&th, NULL, ur_canceller, NULL), 0);
  long rounds = 0, lost = 0;
  int64_t end = weft_now_ns() + (test_sanitized() ? 1000 : 3000) * MS;
  while (weft_now_ns() < end && lost == 0) {
    for (int i = 0; i < 1000; i++) {
      weft_cancel(ur_task);
      weft_uncancel(ur_task);
      if (atomic_load(&ur_armed) || weft_cancelling(ur_task) == 0) continue;
      /* the other request is made, and was not withdrawn: it is delivered */
      rounds++;
      if (weft_yield() != -ECANCELED) lost++;
      while (weft_uncancel(ur_task) > 0) {
      }
      atomic_store(&ur_armed, 1);
    }
  }
  atomic_store(&ur_stop, 1);
  pthread_join(th, NULL);
  ASSERT_TRUE(rounds > 0);
  ASSERT_EQ(lost, 0);
  if (weft_cancelling(ur_task) > 0) { /* its last request, made after our last round */
    ASSERT_EQ(weft_yield(), -ECANCELED);
    ASSERT_EQ(weft_uncancel(ur_task), 0);
  }
  assert_clean();
  return 0;
}
TEST(uncancel_to_zero_keeps_a_cancel_made_meanwhile) {
  weft_config c = {.workers = 1};
  ASSERT_EQ(weft_run(uncancel_race_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ wait_for */

static int ignore_cancel(void *arg) {
  (void)arg;
  weft_sleep_ns(1000 * MS); /* cancelled: ignored */
  return 9;
}

static int swallow_then_cancelled(void *arg) {
  (void)arg;
  int rc = weft_sleep_ns(1000 * MS);
  if (rc != -ECANCELED) return -EPROTO;
  weft_sleep_ns(20 * MS); /* cleanup that takes a while */
  return -ECANCELED;
}

static weft_task wf_inner;
static atomic_int wf_started;
static int wf_outer(void *arg) {
  (void)arg;
  atomic_store(&wf_started, 1);
  return weft_wait_for(weft_aw_task(wf_inner), 1000 * MS, NULL);
}

static int wait_for_main(void *arg) {
  (void)arg;
  /* done before: its result, even with a zero timeout */
  weft_task t = weft_spawn(tu_return_arg, (void *)3);
  weft_join(t);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 0, NULL), 3);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 1000 * MS, NULL), 3);
  weft_task_release(t);
  assert_clean();
  /* finishes in time */
  t = weft_spawn(tu_sleep_then_7, (void *)2);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 2000 * MS, NULL), 7);
  weft_task_release(t);
  assert_clean();
  /* zero timeout, not done: cancelled, waited for, -ETIMEDOUT */
  t = weft_spawn(tu_forever, NULL);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 0, NULL), -ETIMEDOUT);
  ASSERT_EQ(weft_task_status(t), -ECANCELED);
  weft_task_release(t);
  assert_clean();
  /* expiry: the inner work is cancelled and has ended when wait_for returns */
  t = weft_spawn(tu_forever, NULL);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 3 * MS, NULL), -ETIMEDOUT);
  ASSERT_EQ(weft_task_status(t), -ECANCELED);
  weft_task_release(t);
  assert_clean();
  /* the inner work ignores the cancellation and returns a value: it wins */
  t = weft_spawn(ignore_cancel, NULL);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 3 * MS, NULL), 9);
  weft_task_release(t);
  assert_clean();
  /* the inner work takes its time to end: wait_for waits for it */
  int64_t t0 = weft_now_ns();
  t = weft_spawn(swallow_then_cancelled, NULL);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 3 * MS, NULL), -ETIMEDOUT);
  ASSERT_TRUE(weft_now_ns() - t0 >= 23 * MS);
  ASSERT_TRUE(weft_task_done(t));
  weft_task_release(t);
  assert_clean();
  /* an error passes through */
  t = weft_spawn(tu_fail_after, (void *)1);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 1000 * MS, NULL), -EIO);
  weft_task_release(t);
  /* the waiter cancelled from elsewhere: -ECANCELED, inner cancelled */
  wf_inner = weft_spawn(tu_forever, NULL);
  atomic_store(&wf_started, 0);
  weft_task o = weft_spawn(wf_outer, NULL);
  /* o must be in its wait_for (cancelled before it ran, it would never
   * start it: a fixed 2 ms was too short under ThreadSanitizer) */
  for (int64_t w0 = weft_now_ns(); !atomic_load(&wf_started);) {
    ASSERT_TRUE(weft_now_ns() - w0 < 10000 * MS);
    weft_sleep_ns(MS);
  }
  weft_sleep_ns(2 * MS);
  weft_cancel(o);
  ASSERT_EQ(weft_join(o), -ECANCELED);
  ASSERT_EQ(weft_task_status(wf_inner), -ECANCELED);
  weft_task_release(o);
  weft_task_release(wf_inner);
  /* a future */
  weft_future f;
  weft_future_init(&f);
  void *v;
  ASSERT_EQ(weft_wait_for(weft_aw_future(&f), 2 * MS, &v), -ETIMEDOUT);
  ASSERT_TRUE(weft_future_cancelled(&f));
  weft_future_init(&f);
  weft_future_set(&f, 1, &f);
  ASSERT_EQ(weft_wait_for(weft_aw_future(&f), 0, &v), 1);
  ASSERT_PTR_EQ(v, &f);
  assert_clean();
  return 0;
}
TEST(wait_for_cases) { run_both(wait_for_main, NULL); }

/* A task just spawned (not started, joinable inline) is not done: a zero
 * timeout cancels it before it runs (asyncio: wait_for(t, 0) cancels a task
 * not done; timeout(0) expires before the await's first step), where the
 * inline join used to run it to its result with no expiry. */
static _Atomic int fresh_ran;
static int fresh_returns_5(void *arg) {
  (void)arg;
  atomic_store(&fresh_ran, 1);
  return 5;
}

static int zero_timeout_fresh_main(void *arg) {
  (void)arg;
  if (getenv("WEFT_TEST_MIGRATE")) return 0; /* the child may run on another worker before the join */
  atomic_store(&fresh_ran, 0);
  weft_task t = weft_spawn(fresh_returns_5, NULL);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 0, NULL), -ETIMEDOUT);
  ASSERT_EQ(weft_task_status(t), -ECANCELED);
  ASSERT_EQ(atomic_load(&fresh_ran), 0);
  weft_task_release(t);
  assert_clean();
  /* the same with a scope around the join */
  t = weft_spawn(fresh_returns_5, NULL);
  weft_timeout to;
  ASSERT_EQ(weft_timeout_enter(&to, 0), 0);
  int rc = weft_join(t);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
  ASSERT_EQ(atomic_load(&fresh_ran), 0);
  weft_task_release(t);
  assert_clean();
  /* a scope not due still runs it inline to its result */
  t = weft_spawn(fresh_returns_5, NULL);
  ASSERT_EQ(weft_wait_for(weft_aw_task(t), 1000 * MS, NULL), 5);
  ASSERT_EQ(atomic_load(&fresh_ran), 1);
  weft_task_release(t);
  assert_clean();
  return 0;
}
TEST(wait_for_zero_timeout_cancels_a_fresh_task) { run_both(zero_timeout_fresh_main, NULL); }

/* The same when the await really suspends and what it awaits is completed
 * by a task that is runnable on the worker: a task that cannot be joined
 * inline (a larger stack than the default), or a future that a runnable
 * task sets. The worker runs local tasks before its next timer pass, so
 * the join returned 5 (wait_for(t, 0) gave t's result, t ran) and the
 * future's await its value: a due scope must expire at the suspension
 * itself, as asyncio's call_soon'd expiry runs before the awaiter's
 * wakeup. */
static int set_future_to_4(void *arg) { return weft_future_set(arg, 4, NULL); }

static int zero_timeout_runnable_main(void *arg) {
  (void)arg;
  if (getenv("WEFT_TEST_MIGRATE")) return 0; /* the child may run on another worker before the await */
  for (int i = 0; i < 20; i++) {
    atomic_store(&fresh_ran, 0);
    weft_spawn_opts o = {.stack_size = 256 * 1024};
    weft_task t = weft_spawn_ex(fresh_returns_5, NULL, &o);
    ASSERT_EQ(weft_wait_for(weft_aw_task(t), 0, NULL), -ETIMEDOUT);
    ASSERT_EQ(weft_task_status(t), -ECANCELED);
    ASSERT_EQ(atomic_load(&fresh_ran), 0);
    weft_task_release(t);
    assert_clean();
    /* a future set by a runnable task, with a scope due at once */
    weft_future f;
    weft_future_init(&f);
    t = weft_spawn(set_future_to_4, &f);
    weft_timeout to;
    ASSERT_EQ(weft_timeout_enter(&to, 0), 0);
    int rc = weft_future_await(&f, NULL);
    ASSERT_EQ(rc, -ECANCELED);
    ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
    ASSERT_TRUE(weft_future_cancelled(&f)); /* the cancelled await cancelled it */
    ASSERT_EQ(weft_join(t), -EALREADY);
    weft_task_release(t);
    ASSERT_EQ(weft_future_destroy(&f), 0);
    assert_clean();
  }
  return 0;
}
TEST(a_due_scope_expires_at_a_suspension_before_local_tasks_run) { run_both(zero_timeout_runnable_main, NULL); }

/* the waiter is cancelled from elsewhere at the moment its timeout expires:
 * the outer cancellation wins (-ECANCELED), as asyncio's uncancel count says */
static int cancel_at_expiry(void *arg) {
  (void)arg;
  weft_task inner = weft_spawn(tu_forever, NULL);
  weft_timeout to;
  weft_timeout_enter(&to, 2 * MS);
  weft_cancel(weft_current()); /* "from elsewhere", before the expiry */
  int rc = weft_join(inner); /* forwards: inner ends -ECANCELED */
  weft_sleep_ns(5 * MS);     /* (the cancellation was delivered: the scope expires during this) */
  rc = weft_timeout_leave(&to, rc);
  weft_task_release(inner);
  return rc;
}

static int cancel_and_expire_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(cancel_at_expiry, NULL);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  return 0;
}
TEST(wait_for_outer_cancel_and_expiry_together) { run_both(cancel_and_expire_main, NULL); }

/* Racy: the inner task finishes at the very deadline of the timeout. Every
 * outcome must be one of asyncio 3.12's: the value (the inner one returned
 * it) or -ETIMEDOUT (the inner one was cancelled); never -ECANCELED, and no
 * cancel request survives. */
static int until_then_7(void *arg) {
  int64_t d = *(int64_t *)arg;
  int rc = weft_sleep_until(d);
  return rc < 0 ? rc : 7;
}

static int race_main(void *arg) {
  (void)arg;
  long iters = tu_iters(1500);
  int wins = 0, timeouts = 0;
  for (long i = 0; i < iters; i++) {
    int64_t d = weft_now_ns() + 200000 + (i % 7) * 20000;
    weft_task t = weft_spawn(until_then_7, &d);
    if (i & 1) weft_yield(); /* sometimes the inner one starts first */
    weft_timeout to;
    ASSERT_EQ(weft_timeout_enter_at(&to, d + (i % 3) - 1), 0);
    int rc = weft_join(t);
    rc = weft_timeout_leave(&to, rc);
    int st = weft_task_status(t);
    if (rc == 7) {
      ASSERT_EQ(st, 7);
      wins++;
    } else {
      ASSERT_EQ(rc, -ETIMEDOUT);
      ASSERT_EQ(st, -ECANCELED);
      timeouts++;
    }
    ASSERT_EQ(self_cancelling(), 0);
    ASSERT_EQ(weft_yield(), 0);
    weft_task_release(t);
  }
  ASSERT_EQ(wins + timeouts, iters);
  fprintf(stderr, "workers=%d: result won %d times, timeout %d times\n", weft_worker_count(), wins, timeouts);
  return 0;
}
TEST(wait_for_stress_completion_vs_timeout) { run_both(race_main, NULL); }

/* Racy, across threads: a foreign thread completes the future around the
 * deadline. */
struct fut_race {
  weft_future f;
  int64_t at;
};
static void *late_setter(void *arg) {
  struct fut_race *r = arg;
  while (weft_now_ns() < r->at) {
  }
  weft_future_set(&r->f, 5, NULL);
  return NULL;
}

static int fut_race_main(void *arg) {
  (void)arg;
  long iters = tu_iters(300);
  long wins = 0;
  for (long i = 0; i < iters; i++) {
    struct fut_race r;
    weft_future_init(&r.f);
    int64_t timeout = 300000;
    r.at = weft_now_ns() + timeout + (i % 9 - 4) * 20000;
    pthread_t th;
    pthread_create(&th, NULL, late_setter, &r);
    int rc = weft_wait_for(weft_aw_future(&r.f), timeout, NULL);
    pthread_join(th, NULL);
    int fr = weft_future_result(&r.f, NULL);
    wins += rc == 5;
    if (rc == 5)
      ASSERT_EQ(fr, 5);
    else {
      ASSERT_EQ(rc, -ETIMEDOUT);
      ASSERT_EQ(fr, -ECANCELED);
    }
    ASSERT_EQ(self_cancelling(), 0);
    ASSERT_EQ(weft_yield(), 0);
  }
  fprintf(stderr, "workers=%d: result won %ld times, timeout %ld times\n", weft_worker_count(), wins, iters - wins);
  return 0;
}
TEST(wait_for_stress_foreign_completion_vs_timeout) { run_both(fut_race_main, NULL); }

/* Racy: nested scopes expiring together on a task that migrates. */
static int nested_race_task(void *arg) {
  long n = (long)(intptr_t)arg;
  for (long i = 0; i < n; i++) {
    weft_timeout outer, inner;
    int64_t d = weft_now_ns() + 100000;
    weft_timeout_enter_at(&outer, d);
    weft_timeout_enter_at(&inner, d + (i % 3) * 1000);
    int rc = 0;
    while (rc == 0) rc = weft_yield();
    int ri = weft_timeout_leave(&inner, rc);
    int ro = weft_timeout_leave(&outer, ri);
    if (ro != -ETIMEDOUT || (ri != -ECANCELED && ri != -ETIMEDOUT)) return -EPROTO;
    if (weft_cancelling(weft_current()) != 0) return -EPROTO;
    if (weft_yield() != 0) return -EPROTO;
  }
  return 0;
}

static int nested_race_main(void *arg) {
  (void)arg;
  enum { TASKS = 4 };
  weft_task t[TASKS];
  for (int i = 0; i < TASKS; i++) t[i] = weft_spawn(nested_race_task, (void *)(intptr_t)tu_iters(300));
  for (int i = 0; i < TASKS; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  return 0;
}
TEST(timeout_stress_nested_expiring_together) { run_both(nested_race_main, NULL); }


/* ------------------------------------------------------------ a due scope and a yield
 * timeout(0), or a past deadline, then a yield (weft_yield, sleep(0), a
 * sleep_until in the past): the scope expires at that yield, as asyncio's
 * call_soon'd expiry runs before the task's next step. Before, a yielding
 * task resumed before its worker's timer pass and the scope did not expire
 * (the first iteration failed, at 1 worker and at 2). */
static int due_scope_yield_main(void *arg) {
  (void)arg;
  for (int i = 0; i < 200; i++) {
    weft_timeout to;
    ASSERT_EQ(weft_timeout_enter(&to, 0), 0);
    int rc = i % 3 == 0 ? weft_yield() : i % 3 == 1 ? weft_sleep_ns(0) : weft_sleep_until(weft_now_ns() - 1);
    ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
    ASSERT_EQ(weft_cancelling(weft_current()), 0);
    /* nested, both due: only the outermost converts */
    weft_timeout outer, inner;
    ASSERT_EQ(weft_timeout_enter_at(&outer, weft_now_ns() - 1), 0);
    ASSERT_EQ(weft_timeout_enter(&inner, 0), 0);
    rc = weft_yield();
    rc = weft_timeout_leave(&inner, rc);
    ASSERT_EQ(rc, -ECANCELED);
    ASSERT_EQ(weft_timeout_leave(&outer, rc), -ETIMEDOUT);
    ASSERT_EQ(weft_cancelling(weft_current()), 0);
    /* a scope that is not due is left alone by the yield */
    ASSERT_EQ(weft_timeout_enter(&to, 10000 * MS), 0);
    ASSERT_EQ(weft_yield(), 0);
    ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
  }
  return 0;
}
TEST(a_due_scope_expires_at_a_yield) { run_both(due_scope_yield_main, NULL); }

TEST_MAIN()
