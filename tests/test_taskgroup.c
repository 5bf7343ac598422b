/* tests/test_taskgroup.c: task groups (asyncio.TaskGroup). */
#include "task_util.h"

static _Atomic int finished;
static int child_ok(void *arg) {
  int rc = weft_sleep_ns((int64_t)(intptr_t)arg * MS);
  if (rc == 0) atomic_fetch_add(&finished, 1);
  return rc;
}

static int all_ok_main(void *arg) {
  (void)arg;
  atomic_store(&finished, 0);
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  for (int i = 0; i < 50; i++) ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn(&g, child_ok, (void *)(intptr_t)(i % 5))));
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0); /* waits for every child */
  ASSERT_EQ(atomic_load(&finished), 50);
  ASSERT_EQ(weft_taskgroup_failed(&g), 0);
  /* an empty group */
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  /* spawning into a finished group */
  errno = 0;
  ASSERT_TRUE(weft_task_is_null(weft_taskgroup_spawn(&g, child_ok, NULL)));
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), -EINVAL); /* left already */
  ASSERT_EQ(weft_cancelling(weft_current()), 0);
  return 0;
}
TEST(taskgroup_waits_for_all_children) { run_both(all_ok_main, NULL); }

static int child_fails(void *arg) {
  int rc = weft_sleep_ns((int64_t)(intptr_t)arg * MS);
  return rc < 0 ? rc : -EIO;
}
static int child_fails_other(void *arg) {
  int rc = weft_sleep_ns((int64_t)(intptr_t)arg * MS);
  return rc < 0 ? rc : -EPIPE;
}

static int child_failure_main(void *arg) {
  (void)arg;
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  weft_task a = weft_taskgroup_spawn(&g, tu_forever, NULL);
  weft_task b = weft_taskgroup_spawn(&g, tu_forever, NULL);
  weft_taskgroup_spawn(&g, child_fails, (void *)2);
  /* the body is cancelled by the failing child */
  int rc = weft_sleep_ns(10000 * MS);
  ASSERT_EQ(rc, -ECANCELED);
  /* spawning into an aborting group */
  errno = 0;
  ASSERT_TRUE(weft_task_is_null(weft_taskgroup_spawn(&g, child_ok, NULL)));
  ASSERT_EQ(errno, EINVAL);
  ASSERT_EQ(weft_taskgroup_leave(&g, rc), -EIO); /* the first error, not -ECANCELED */
  ASSERT_EQ(weft_taskgroup_failed(&g), 1);
  ASSERT_EQ(weft_cancelling(weft_current()), 0); /* the group's own cancel was withdrawn */
  ASSERT_EQ(weft_yield(), 0);
  (void)a;
  (void)b;
  return 0;
}
TEST(taskgroup_child_failure_cancels_siblings_and_body) { run_both(child_failure_main, NULL); }

/* the body fails while children are failing: every error counted, the
 * first one returned; the body's own error is one of them */
static int body_fails_main(void *arg) {
  (void)arg;
  for (int round = 0; round < 10; round++) {
    weft_taskgroup g;
    ASSERT_EQ(weft_taskgroup_enter(&g), 0);
    for (int i = 0; i < 4; i++) weft_taskgroup_spawn(&g, i & 1 ? child_fails : child_fails_other, (void *)1);
    weft_taskgroup_spawn(&g, tu_forever, NULL);
    /* the body fails around the same time as the children */
    weft_sleep_ns((round % 3) * MS);
    int rc = weft_taskgroup_leave(&g, -ENOSPC);
    ASSERT_TRUE(rc == -ENOSPC || rc == -EIO || rc == -EPIPE);
    int failed = weft_taskgroup_failed(&g);
    /* the children that failed did so before the body's failure cancelled them */
    ASSERT_TRUE(failed >= 0 && failed <= 4);
    if (rc == -ENOSPC) ASSERT_TRUE(failed >= 0);
    if (rc != -ENOSPC) ASSERT_TRUE(failed >= 1);
    ASSERT_EQ(weft_uncancel(weft_current()), 0);
    ASSERT_EQ(weft_yield(), 0);
  }
  /* a failing body cancels the children */
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  weft_task c = weft_taskgroup_spawn(&g, tu_forever, NULL);
  weft_yield();
  ASSERT_EQ(weft_taskgroup_leave(&g, -ENOSPC), -ENOSPC);
  ASSERT_EQ(weft_taskgroup_failed(&g), 0);
  (void)c;
  return 0;
}
TEST(taskgroup_body_fails_while_children_fail) { run_both(body_fails_main, NULL); }

/* a cancelled child is not a failure */
static int cancelled_child_main(void *arg) {
  (void)arg;
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  weft_task c = weft_taskgroup_spawn(&g, tu_forever, NULL);
  weft_taskgroup_spawn(&g, child_ok, (void *)2);
  weft_sleep_ns(1 * MS);
  weft_cancel(c);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  ASSERT_EQ(weft_taskgroup_failed(&g), 0);
  return 0;
}
TEST(taskgroup_cancelled_child_is_no_error) { run_both(cancelled_child_main, NULL); }

/* a group inside a cancelled task does not hide the outer cancellation */
static _Atomic int group_entered;
static int fails_when_cancelled(void *arg) {
  (void)arg;
  weft_sleep_ns(10000 * MS);
  return -EIO; /* its cleanup fails */
}
static int group_body(void *arg) {
  int with_failure = (int)(intptr_t)arg;
  weft_taskgroup g;
  weft_taskgroup_enter(&g);
  weft_taskgroup_spawn(&g, tu_forever, NULL);
  if (with_failure) weft_taskgroup_spawn(&g, fails_when_cancelled, NULL);
  atomic_store(&group_entered, 1);
  int rc = weft_sleep_ns(10000 * MS);
  rc = weft_taskgroup_leave(&g, rc);
  if (with_failure) {
    /* the error wins, but the outer cancellation stays requested */
    if (rc != -EIO) return -EPROTO;
    if (weft_cancelling(weft_current()) != 1) return -EPROTO;
    if (weft_yield() != -ECANCELED) return -EPROTO;
    return -ECANCELED;
  }
  return rc;
}

static int outer_cancel_main(void *arg) {
  (void)arg;
  for (int with_failure = 0; with_failure < 2; with_failure++) {
    atomic_store(&group_entered, 0);
    weft_task t = weft_spawn(group_body, (void *)(intptr_t)with_failure);
    while (!atomic_load(&group_entered)) weft_sleep_ns(1 * MS);
    weft_sleep_ns(2 * MS);
    weft_cancel(t);
    ASSERT_EQ(weft_join(t), -ECANCELED);
    weft_task_release(t);
  }
  return 0;
}
TEST(taskgroup_does_not_hide_outer_cancellation) { run_both(outer_cancel_main, NULL); }

/* the parent cancelled while waiting in leave: children cancelled, -ECANCELED */
static int leave_waiter(void *arg) {
  (void)arg;
  weft_taskgroup g;
  weft_taskgroup_enter(&g);
  weft_taskgroup_spawn(&g, tu_forever, NULL);
  atomic_store(&group_entered, 1);
  return weft_taskgroup_leave(&g, 0);
}

static int cancel_in_leave_main(void *arg) {
  (void)arg;
  atomic_store(&group_entered, 0);
  weft_task t = weft_spawn(leave_waiter, NULL);
  while (!atomic_load(&group_entered)) weft_sleep_ns(1 * MS);
  weft_sleep_ns(1 * MS);
  weft_cancel(t);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  return 0;
}
TEST(taskgroup_cancelled_in_leave) { run_both(cancel_in_leave_main, NULL); }

/* children spawn siblings into the group while it is leaving */
static weft_taskgroup *shared_group;
static int spawner_child(void *arg) {
  int depth = (int)(intptr_t)arg;
  weft_sleep_ns(1 * MS);
  if (depth > 0) {
    weft_task t = weft_taskgroup_spawn(shared_group, spawner_child, (void *)(intptr_t)(depth - 1));
    if (weft_task_is_null(t)) return -EPROTO;
  }
  atomic_fetch_add(&finished, 1);
  return 0;
}

static int nested_spawn_main(void *arg) {
  (void)arg;
  atomic_store(&finished, 0);
  weft_taskgroup g;
  shared_group = &g;
  weft_taskgroup_enter(&g);
  weft_taskgroup_spawn(&g, spawner_child, (void *)5);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  ASSERT_EQ(atomic_load(&finished), 6);
  return 0;
}
TEST(taskgroup_children_spawn_siblings) { run_both(nested_spawn_main, NULL); }

static int other_task_leaves(void *arg) { return weft_taskgroup_leave(arg, 0); }

static int bad_input_main(void *arg) {
  (void)arg;
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  weft_task t = weft_spawn(other_task_leaves, &g);
  ASSERT_EQ(weft_join(t), -EINVAL); /* not the task that entered */
  weft_task_release(t);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  return 0;
}
TEST(taskgroup_bad_input) {
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), -EINVAL); /* outside a task */
  run_both(bad_input_main, NULL);
}

/* Racy: many children failing and succeeding at once, a body cancelled from
 * outside at random moments: the group always ends, counts are consistent. */
static int racy_child(void *arg) {
  long k = (long)(intptr_t)arg;
  for (long i = 0; i < k % 4; i++)
    if (weft_yield() < 0) return -ECANCELED;
  return k % 5 == 0 ? -EIO : 0;
}

static int racy_body(void *arg) {
  long it = (long)(intptr_t)arg;
  weft_taskgroup g;
  weft_taskgroup_enter(&g);
  for (long i = 0; i < 8; i++) weft_taskgroup_spawn(&g, racy_child, (void *)(intptr_t)(it + i + 1));
  int rc = weft_yield();
  rc = weft_taskgroup_leave(&g, rc);
  int failed = weft_taskgroup_failed(&g);
  if (rc == -EIO && failed < 1) return -EPROTO;
  if (rc == 0 && failed != 0) return -EPROTO;
  return rc;
}

static int racy_main(void *arg) {
  (void)arg;
  long iters = tu_iters(2000);
  for (long it = 0; it < iters; it++) {
    weft_task t = weft_spawn(racy_body, (void *)(intptr_t)it);
    for (long y = 0; y < it % 3; y++) weft_yield();
    if (it & 1) weft_cancel(t);
    int rc = weft_join(t);
    ASSERT_TRUE(rc == 0 || rc == -EIO || rc == -ECANCELED);
    if (!(it & 1)) ASSERT_TRUE(rc != -ECANCELED);
    weft_task_release(t);
  }
  return 0;
}
TEST(taskgroup_stress_failures_and_cancellation) { run_both(racy_main, NULL); }

TEST_MAIN()
