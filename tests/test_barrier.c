/* tests/test_barrier.c: weft_barrier (asyncio.Barrier): arrival indices,
 * rounds, abort and reset (-EPIPE), cancellation, bad input, and a stress
 * test of many rounds on 4 workers. */
#include <pthread.h>
#include <stdatomic.h>

#include <weft/weft.h>

#include "sync_stress.h"
#include "test.h"

static weft_barrier B;
static atomic_int seen[16];

static int party(void *arg) {
  (void)arg;
  int idx = weft_barrier_wait(&B);
  if (idx >= 0) atomic_fetch_add(&seen[idx], 1);
  return idx;
}

TEST(barrier_bad_input) {
  weft_barrier b;
  ASSERT_EQ(weft_barrier_init(&b, 0), -EINVAL);
  ASSERT_EQ(weft_barrier_init(&b, 1u << 31), -EINVAL);
  ASSERT_EQ(weft_barrier_init(&b, 1), 0);
  ASSERT_EQ(weft_barrier_wait(&b), -EINVAL); /* outside a task */
  ASSERT_EQ(weft_barrier_destroy(&b), 0);
}

static int indices_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_barrier_init(&B, 3), 0);
  ASSERT_EQ(weft_barrier_parties(&B), 3);
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 3; i++) atomic_store(&seen[i], 0);
    weft_task a = weft_spawn(party, NULL);
    weft_task b = weft_spawn(party, NULL);
    while (weft_barrier_n_waiting(&B) < 2) weft_sleep_ns(100000);
    ASSERT_EQ(weft_barrier_destroy(&B), -EBUSY);
    int mine = weft_barrier_wait(&B); /* the last: does not suspend */
    ASSERT_EQ(mine, 2);
    ASSERT_EQ(weft_join(a) + weft_join(b), 0 + 1);
    weft_task_release(a);
    weft_task_release(b);
    ASSERT_EQ(weft_barrier_n_waiting(&B), 0);
  }
  /* one party: every wait passes at once with index 0 */
  weft_barrier one;
  weft_barrier_init(&one, 1);
  ASSERT_EQ(weft_barrier_wait(&one), 0);
  ASSERT_EQ(weft_barrier_wait(&one), 0);
  ASSERT_EQ(weft_barrier_destroy(&one), 0);
  ASSERT_EQ(weft_barrier_destroy(&B), 0);
  return 0;
}

TEST(barrier_indices_and_rounds) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(indices_main, NULL, &c), 0);
}

static int abort_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_barrier_init(&B, 3), 0);
  weft_task a = weft_spawn(party, NULL);
  weft_task b = weft_spawn(party, NULL);
  while (weft_barrier_n_waiting(&B) < 2) weft_sleep_ns(100000);
  ASSERT_EQ(weft_barrier_abort(&B), 0);
  ASSERT_EQ(weft_join(a), -EPIPE);
  ASSERT_EQ(weft_join(b), -EPIPE);
  weft_task_release(a);
  weft_task_release(b);
  ASSERT_TRUE(weft_barrier_broken(&B));
  ASSERT_EQ(weft_barrier_wait(&B), -EPIPE); /* later waits too */
  ASSERT_EQ(weft_barrier_reset(&B), 0);
  ASSERT_TRUE(!weft_barrier_broken(&B));
  /* reset with waiters: they get -EPIPE; the barrier works afterwards */
  a = weft_spawn(party, NULL);
  while (weft_barrier_n_waiting(&B) < 1) weft_sleep_ns(100000);
  ASSERT_EQ(weft_barrier_reset(&B), 0);
  ASSERT_EQ(weft_join(a), -EPIPE);
  weft_task_release(a);
  ASSERT_TRUE(!weft_barrier_broken(&B));
  ASSERT_EQ(weft_barrier_n_waiting(&B), 0);
  a = weft_spawn(party, NULL);
  b = weft_spawn(party, NULL);
  while (weft_barrier_n_waiting(&B) < 2) weft_sleep_ns(100000);
  ASSERT_EQ(weft_barrier_wait(&B), 2);
  ASSERT_EQ(weft_join(a) + weft_join(b), 1);
  weft_task_release(a);
  weft_task_release(b);
  ASSERT_EQ(weft_barrier_destroy(&B), 0);
  return 0;
}

TEST(barrier_abort_and_reset_break_it) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(abort_main, NULL, &c), 0);
}

static int cancel_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_barrier_init(&B, 2), 0);
  weft_task a = weft_spawn(party, NULL);
  while (weft_barrier_n_waiting(&B) < 1) weft_sleep_ns(100000);
  weft_cancel(a);
  ASSERT_EQ(weft_join(a), -ECANCELED);
  weft_task_release(a);
  ASSERT_EQ(weft_barrier_n_waiting(&B), 0); /* it left the round */
  ASSERT_TRUE(!weft_barrier_broken(&B));
  a = weft_spawn(party, NULL);
  while (weft_barrier_n_waiting(&B) < 1) weft_sleep_ns(100000);
  ASSERT_EQ(weft_barrier_wait(&B), 1);
  ASSERT_EQ(weft_join(a), 0);
  weft_task_release(a);
  ASSERT_EQ(weft_barrier_destroy(&B), 0);
  return 0;
}

TEST(barrier_cancelled_waiter_leaves_the_round) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cancel_main, NULL, &c), 0);
}

/* abort from a thread outside the runtime wakes the waiting tasks */
static void *abort_from_thread(void *arg) {
  while (weft_barrier_n_waiting(arg) < 2) usleep(100);
  weft_barrier_abort(arg);
  return NULL;
}

static int foreign_abort_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_barrier_init(&B, 3), 0);
  pthread_t th;
  pthread_create(&th, NULL, abort_from_thread, &B);
  weft_task a = weft_spawn(party, NULL);
  weft_task b = weft_spawn(party, NULL);
  ASSERT_EQ(weft_join(a), -EPIPE);
  ASSERT_EQ(weft_join(b), -EPIPE);
  weft_task_release(a);
  weft_task_release(b);
  pthread_join(th, NULL);
  ASSERT_TRUE(weft_barrier_broken(&B));
  ASSERT_EQ(weft_barrier_destroy(&B), 0);
  return 0;
}

TEST(barrier_abort_from_a_foreign_thread) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(foreign_abort_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ stress */

enum { PARTIES = 8 };
static struct {
  weft_barrier b;
  int rounds;
  atomic_int *count; /* [rounds][PARTIES]: how many got each index */
} St;

static int stress_party(void *arg) {
  (void)arg;
  for (int r = 0; r < St.rounds; r++) {
    int idx = weft_barrier_wait(&St.b);
    if (idx < 0 || idx >= PARTIES) return -100;
    atomic_fetch_add(&St.count[r * PARTIES + idx], 1);
  }
  return 0;
}

static int stress_main(void *arg) {
  (void)arg;
  St.rounds = (int)((test_sanitized() ? 15000 : 150000) * test_stress_scale() / sync_migrate_div());
  St.count = calloc((size_t)St.rounds * PARTIES, sizeof *St.count);
  ASSERT_EQ(weft_barrier_init(&St.b, PARTIES), 0);
  weft_task t[PARTIES];
  for (int i = 0; i < PARTIES; i++) t[i] = weft_spawn(stress_party, NULL);
  for (int i = 0; i < PARTIES; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  for (int r = 0; r < St.rounds; r++)
    for (int i = 0; i < PARTIES; i++) ASSERT_EQ(atomic_load(&St.count[r * PARTIES + i]), 1);
  ASSERT_EQ(weft_barrier_destroy(&St.b), 0);
  free(St.count);
  return 0;
}

TEST(barrier_stress_rounds_4_workers) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
}

/* Rounds racing with resets, cancellations from a task and a thread, and a
 * final abort: no crash, no hang, every wait returns one of its documented
 * results, and no waiter is left behind. */
static struct {
  weft_barrier b;
  int iters;
  atomic_long passed, broken, cancelled, other;
} Sr;

static int racing_party(void *arg) {
  (void)arg;
  for (int i = 0; i < Sr.iters; i++) {
    int rc = weft_barrier_wait(&Sr.b);
    if (rc >= 0 && rc < 4)
      atomic_fetch_add(&Sr.passed, 1);
    else if (rc == -EPIPE)
      atomic_fetch_add(&Sr.broken, 1);
    else if (rc == -ECANCELED)
      atomic_fetch_add(&Sr.cancelled, 1);
    else
      atomic_fetch_add(&Sr.other, 1);
  }
  return 0;
}

static int racing_main(void *arg) {
  (void)arg;
  enum { TASKS = 12 };
  Sr.iters = (int)((test_sanitized() ? 3000 : 20000) * test_stress_scale() / sync_migrate_div());
  ASSERT_EQ(weft_barrier_init(&Sr.b, 4), 0);
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(racing_party, NULL);
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  uint64_t rng = 99;
  int64_t until = weft_now_ns() + (test_sanitized() ? 1500 : 1000) * 1000000LL;
  while (weft_now_ns() < until) {
    weft_sleep_ns((int64_t)(rng_step(&rng) % 200000));
    ASSERT_EQ(weft_barrier_reset(&Sr.b), 0);
  }
  ASSERT_EQ(weft_barrier_abort(&Sr.b), 0); /* the rest of the waits return -EPIPE */
  long never_ran = 0;
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    never_ran += st == -ECANCELED;
    weft_task_release(t[i]);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  long total = atomic_load(&Sr.passed) + atomic_load(&Sr.broken) + atomic_load(&Sr.cancelled);
  ASSERT_EQ(atomic_load(&Sr.other), 0);
  ASSERT_EQ(total, (TASKS - never_ran) * Sr.iters);
  ASSERT_GT(atomic_load(&Sr.passed), 0);
  ASSERT_EQ(weft_barrier_n_waiting(&Sr.b), 0);
  ASSERT_EQ(weft_barrier_destroy(&Sr.b), 0); /* nobody left waiting */
  fprintf(stderr, "barrier race: %ld passed, %ld broken, %ld cancelled\n", atomic_load(&Sr.passed),
          atomic_load(&Sr.broken), atomic_load(&Sr.cancelled));
  return 0;
}

TEST(barrier_stress_resets_and_cancellation_4_workers) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(racing_main, NULL, &c), 0);
}

/* Destroy right after the round: the waiters the round released have no
 * business with the barrier any more (destroy returned 0: nobody waits),
 * so its memory may be reused at once, before they run. Before, a
 * released waiter took the barrier's spinlock again when it ran, in the
 * reused memory (here: it spun forever on the garbage). On one worker, so
 * that the released waiter has not run when the memory is reused. */
static int party_on(void *arg) { return weft_barrier_wait(arg); }

static int destroy_after_round_main(void *arg) {
  (void)arg;
  for (int broken = 0; broken < 2; broken++) {
    weft_barrier *b = malloc(sizeof *b);
    ASSERT_EQ(weft_barrier_init(b, 2), 0);
    weft_task a = weft_spawn(party_on, b);
    while (weft_barrier_n_waiting(b) < 1) weft_sleep_ns(100000);
    if (broken)
      ASSERT_EQ(weft_barrier_abort(b), 0);
    else
      ASSERT_EQ(weft_barrier_wait(b), 1); /* the last party: a is released, and has not run */
    ASSERT_EQ(weft_barrier_destroy(b), 0);
    memset(b, 0xa5, sizeof *b); /* the memory is reused */
    ASSERT_EQ(weft_join(a), broken ? -EPIPE : 0);
    weft_task_release(a);
    free(b);
  }
  return 0;
}

TEST_T(barrier_memory_reused_right_after_the_round, 20) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(destroy_after_round_main, NULL, &c), 0);
}

TEST_MAIN()
