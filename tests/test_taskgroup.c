/* tests/test_taskgroup.c: task groups (asyncio.TaskGroup). */
#include "task_util.h"
#include "test_util.h"

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

/* Spawn fn(arg), which sets group_entered once its group is open; cancel
 * it settle_ms later; its join's status (the task released). */
static int cancel_once_entered(weft_fn fn, void *arg, int64_t settle_ms) {
  atomic_store(&group_entered, 0);
  weft_task t = weft_spawn(fn, arg);
  while (!atomic_load(&group_entered)) weft_sleep_ns(1 * MS);
  weft_sleep_ns(settle_ms * MS);
  weft_cancel(t);
  int rc = weft_join(t);
  weft_task_release(t);
  return rc;
}

static int outer_cancel_main(void *arg) {
  (void)arg;
  for (int with_failure = 0; with_failure < 2; with_failure++)
    ASSERT_EQ(cancel_once_entered(group_body, (void *)(intptr_t)with_failure, 2), -ECANCELED);
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
  ASSERT_EQ(cancel_once_entered(leave_waiter, NULL, 1), -ECANCELED);
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
  ASSERT_EQ(weft_taskgroup_failed(NULL), -EINVAL);
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

/* Racy: spawners on every worker race their spawns against the abort that
 * a failing child starts. asyncio's _abort cancels each child once; a child
 * spawned while the abort's sweep ran was cancelled by both its spawner and
 * the sweep: weft_cancelling 2. Also at more workers than CPUs, so that a
 * spawner preempted between its slot and its store meets the abort more
 * often. The body checks every child through the group's handles (valid
 * until leave) once all have ended. */
enum { SR_SPAWNERS = 6, SR_PER_SPAWNER = 200 };
static weft_taskgroup *sr_group;
static weft_task sr_children[SR_SPAWNERS * SR_PER_SPAWNER];
static _Atomic int sr_spawned, sr_bad;
/* a child whose cleanup outlasts the abort's sweep (one that ended at the
 * first cancel took no second) */
static int sr_child(void *arg) {
  (void)arg;
  int rc = weft_sleep_ns(3600 * 1000 * MS);
  if (rc == -ECANCELED) weft_sleep_ns(2 * MS);
  return rc;
}
static int sr_spawner(void *arg) {
  (void)arg;
  for (int i = 0; i < SR_PER_SPAWNER; i++) {
    if (i % 16 == 15) weft_yield(); /* lets the failer in at 1 worker too */
    weft_task t = weft_taskgroup_spawn(sr_group, sr_child, NULL);
    if (weft_task_is_null(t)) {
      if (errno != EINVAL) atomic_fetch_add(&sr_bad, 1);
      break;
    }
    sr_children[atomic_fetch_add(&sr_spawned, 1)] = t;
  }
  return 0;
}
/* fails once arg children were spawned: while the spawners spawn */
static int sr_failer(void *arg) {
  while (atomic_load(&sr_spawned) < (int)(intptr_t)arg) weft_yield();
  return -EIO;
}

static int spawn_races_abort_main(void *arg) {
  (void)arg;
  long rounds = tu_iters(1000);
  double t0 = test_now();
  for (long r = 0; r < rounds && test_now() - t0 < 1.5; r++) {
    atomic_store(&sr_spawned, 0);
    atomic_store(&sr_bad, 0);
    weft_taskgroup g;
    sr_group = &g;
    ASSERT_EQ(weft_taskgroup_enter(&g), 0);
    weft_task spawners[SR_SPAWNERS];
    for (int i = 0; i < SR_SPAWNERS; i++) {
      spawners[i] = weft_taskgroup_spawn(&g, sr_spawner, NULL);
      ASSERT_TRUE(!weft_task_is_null(spawners[i]));
    }
    int target = (int)(r * 37 % (SR_SPAWNERS * SR_PER_SPAWNER / 2));
    ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn(&g, sr_failer, (void *)(intptr_t)target)));
    int rc = weft_sleep_ns(3600 * 1000 * MS);
    ASSERT_EQ(rc, -ECANCELED); /* the abort's sweep is over */
    /* every spawner ended (one cancelled before it ran spawns nothing), so
     * every spawn and its spawner's cancel is over; then every child ends */
    int n = 0;
    for (int spins = 0;; spins++) {
      ASSERT_LT(spins, 20000); /* 20 s */
      int s = 0;
      while (s < SR_SPAWNERS && weft_task_done(spawners[s])) s++;
      if (s == SR_SPAWNERS) {
        n = atomic_load(&sr_spawned);
        int i = 0;
        while (i < n && weft_task_done(sr_children[i])) i++;
        if (i == n) break;
      }
      weft_sleep_ns(1 * MS);
    }
    ASSERT_EQ(atomic_load(&sr_bad), 0);
    ASSERT_GE(n, target);
    for (int i = 0; i < n; i++) {
      ASSERT_TRUE(weft_task_cancelled(sr_children[i]));
      ASSERT_EQ(weft_cancelling(sr_children[i]), 1); /* cancelled exactly once */
    }
    ASSERT_EQ(weft_taskgroup_leave(&g, rc), -EIO);
    ASSERT_EQ(weft_taskgroup_failed(&g), 1);
    ASSERT_EQ(weft_cancelling(weft_current()), 0);
  }
  return 0;
}
TEST(taskgroup_stress_spawns_race_the_abort) {
  unsigned over = 8 * tu_nproc();
  unsigned counts[3] = {1, tu_nproc(), over > 64 ? 64 : over}; /* (at most 126 workers) */
  for (int i = 0; i < 3; i++) {
    weft_config c = {0};
    c.workers = counts[i];
    ASSERT_EQ(weft_run(spawn_races_abort_main, NULL, &c), 0);
  }
}

/* A group's memory enters anew after leave: by the same task, zeroed, and
 * after another task entered and left it. */
static int enter_and_leave(void *arg) {
  int rc = weft_taskgroup_enter(arg);
  return rc < 0 ? rc : weft_taskgroup_leave(arg, 0);
}
static int reenter_main(void *arg) {
  (void)arg;
  atomic_store(&finished, 0);
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn(&g, child_ok, (void *)5)));
  ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn(&g, child_ok, (void *)1)));
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0); /* waits for both children */
  ASSERT_EQ(atomic_load(&finished), 2);
  ASSERT_EQ(weft_taskgroup_enter(&g), 0); /* left: may be entered again */
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  /* zeroed memory, and a group another task entered and left */
  weft_taskgroup z = {{0}};
  ASSERT_EQ(weft_taskgroup_enter(&z), 0);
  ASSERT_EQ(weft_taskgroup_leave(&z, 0), 0);
  weft_task t = weft_spawn(enter_and_leave, &g);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  return 0;
}
TEST(taskgroup_memory_entered_again_after_leave) { run_both(reenter_main, NULL); }

/* Cancelled from outside while waiting in leave, with a child whose
 * cleanup fails: the error wins and the outer cancellation stays requested
 * (asyncio 3.13: uncancel + cancel, cancelling() stable). */
static int leave_waiter_fails(void *arg) {
  (void)arg;
  weft_taskgroup g;
  weft_taskgroup_enter(&g);
  weft_taskgroup_spawn(&g, fails_when_cancelled, NULL);
  atomic_store(&group_entered, 1);
  int rc = weft_taskgroup_leave(&g, 0);
  if (rc != -EIO || weft_taskgroup_failed(&g) != 1) return -EPROTO;
  if (weft_cancelling(weft_current()) != 1) return -EPROTO;
  if (weft_yield() != -ECANCELED) return -EPROTO;
  return -ECANCELED;
}
static int cancel_in_leave_fails_main(void *arg) {
  (void)arg;
  ASSERT_EQ(cancel_once_entered(leave_waiter_fails, NULL, 1), -ECANCELED);
  return 0;
}
TEST(taskgroup_cancelled_in_leave_with_failing_child) { run_both(cancel_in_leave_fails_main, NULL); }

/* A group never entered (its memory garbage, or zeroed) refuses every call
 * with EINVAL, as documented: the calls took its lock first, whose garbage
 * word read as held, and spun forever. */
static int never_entered_main(void *arg) {
  (void)arg;
  for (int fill = 0; fill < 3; fill++) {
    weft_taskgroup g;
    memset(&g, fill == 0 ? 0xff : fill == 1 ? 0xa5 : 0, sizeof g);
    errno = 0;
    ASSERT_TRUE(weft_task_is_null(weft_taskgroup_spawn(&g, child_ok, NULL)));
    ASSERT_EQ(errno, EINVAL);
    ASSERT_EQ(weft_taskgroup_leave(&g, 0), -EINVAL);
    ASSERT_EQ(weft_taskgroup_failed(&g), -EINVAL);
  }
  return 0;
}
TEST_T(taskgroup_never_entered_is_refused, 20) { run_both(never_entered_main, NULL); }

/* A group that lives for long (an accept loop) and spawns children whose
 * handles it does not keep (opts.detached) gives each child's record back
 * when the child ends, as asyncio's TaskGroup drops a done task: memory
 * follows the children alive, not every child spawned. opts.detached was
 * ignored: every record stayed until leave (30,000 nop children: ~9 MB,
 * and the first child's handle still read its status).
 * A detached child still counts: its failure aborts the group (cancelling
 * a detached sibling that waits) and is leave's error. */
static _Atomic int detached_ended;
static int detached_child(void *arg) {
  (void)arg;
  atomic_fetch_add(&detached_ended, 1);
  return 0;
}
static long rss_kb(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) TEST_FAIL("statm unreadable");
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}
static int detached_children_main(void *arg) {
  (void)arg;
  const int n = 30000;
  weft_spawn_opts o = {.detached = true};
  weft_taskgroup g;
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  atomic_store(&detached_ended, 0);
  weft_task first = weft_taskgroup_spawn_ex(&g, detached_child, NULL, &o);
  ASSERT_TRUE(!weft_task_is_null(first));
  wait_until_equal(&detached_ended, 1);
  for (int i = 0; i < 5000 && weft_task_status(first) != -ESRCH; i++) weft_sleep_ns(1 * MS);
  ASSERT_EQ(weft_task_status(first), -ESRCH); /* the group let go of the record */
  /* warm: stacks and records for the children alive at once */
  for (int i = 0; i < 2000; i++) {
    ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn_ex(&g, detached_child, NULL, &o)));
    if (i % 64 == 63) weft_yield();
  }
  wait_until_equal(&detached_ended, 2001);
  long rss0 = rss_kb();
  for (int i = 0; i < n; i++) {
    ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn_ex(&g, detached_child, NULL, &o)));
    if (i % 64 == 63) weft_yield();
  }
  wait_until_equal(&detached_ended, 2001 + n);
  ASSERT_EQ(atomic_load(&detached_ended), 2001 + n);
  long grown = rss_kb() - rss0;
  /* (not under a sanitizer: ThreadSanitizer keeps state for every fiber
   * that existed, AddressSanitizer a quarantine of what was freed) */
  if (!test_sanitized() && grown > 3 * 1024)
    TEST_FAIL("%d ended detached children grew the group by %ld KiB", n, grown);
  ASSERT_EQ(weft_taskgroup_leave(&g, 0), 0);
  ASSERT_EQ(weft_taskgroup_failed(&g), 0);

  /* a failing detached child aborts the group and cancels a detached sibling */
  ASSERT_EQ(weft_taskgroup_enter(&g), 0);
  weft_task waiter = weft_taskgroup_spawn_ex(&g, tu_forever, NULL, &o);
  ASSERT_TRUE(!weft_task_is_null(waiter));
  ASSERT_TRUE(!weft_task_is_null(weft_taskgroup_spawn_ex(&g, tu_fail_after, (void *)(intptr_t)1, &o)));
  int rc = weft_sleep_ns(10000 * MS);
  ASSERT_EQ(rc, -ECANCELED);
  ASSERT_EQ(weft_taskgroup_leave(&g, rc), -EIO);
  ASSERT_EQ(weft_taskgroup_failed(&g), 1);
  /* ended (cancelled) and given back: stale once the finisher, which may
   * still run its callbacks on another worker, lets go of it too */
  for (int i = 0; i < 5000 && weft_task_status(waiter) != -ESRCH; i++) weft_sleep_ns(1 * MS);
  ASSERT_EQ(weft_task_status(waiter), -ESRCH);
  return 0;
}
TEST(taskgroup_detached_children_are_not_kept_until_leave) { run_both(detached_children_main, NULL); }

TEST_MAIN()
