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
  St.rounds = (int)((test_sanitized() ? 15000 : 150000) * test_stress_scale());
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

TEST_MAIN()
