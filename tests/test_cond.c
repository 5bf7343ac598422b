/* tests/test_cond.c: weft_cond (asyncio.Condition): wait/notify with the
 * lock, notify(n) and notify_all, wait_for, misuse, cancellation (the lock
 * is held again; a notification is passed on), and a stress test. */
#include <stdatomic.h>

#include <weft/weft.h>

#include "sync_stress.h"
#include "test.h"

static weft_lock L;
static weft_cond C;
static int items;         /* under L */
static int arrived;       /* under L: consumers that reached their wait */
static atomic_int woken;

static bool have_items(void *arg) {
  (void)arg;
  return items > 0;
}

static int consumer(void *arg) {
  (void)arg;
  if (weft_lock_acquire(&L) != 0) return -1;
  arrived++;
  int rc = weft_cond_wait_for(&C, have_items, NULL);
  if (rc == 0) {
    items--;
    atomic_fetch_add(&woken, 1);
  }
  /* held again whatever wait returned */
  if (weft_lock_release(&L) != 0) return -2;
  return rc;
}

static int notify_main(void *arg) {
  (void)arg;
  weft_lock_init(&L);
  ASSERT_EQ(weft_cond_init(&C, &L), 0);
  items = 0;
  atomic_store(&woken, 0);
  /* misuse */
  ASSERT_EQ(weft_cond_wait(&C), -EPERM);
  ASSERT_EQ(weft_cond_notify(&C, 1), -EPERM);
  ASSERT_EQ(weft_cond_notify_all(&C), -EPERM);
  ASSERT_EQ(weft_cond_wait_for(&C, have_items, NULL), -EPERM);
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  ASSERT_EQ(weft_cond_notify(&C, -1), -EINVAL);
  ASSERT_EQ(weft_cond_wait_for(&C, NULL, NULL), -EINVAL);
  ASSERT_EQ(weft_cond_notify(&C, 3), 0); /* nobody waits */
  ASSERT_EQ(weft_lock_release(&L), 0);

  weft_task t[5];
  arrived = 0;
  for (int i = 0; i < 5; i++) t[i] = weft_spawn(consumer, NULL);
  /* all five wait: each counted itself under L and then released L, which
   * only its wait does (items is 0) (a fixed sleep here was too short
   * under ThreadSanitizer on a loaded machine) */
  for (;;) {
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    if (arrived == 5) break;
    ASSERT_EQ(weft_lock_release(&L), 0);
    weft_sleep_ns(1000000);
  }
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_cond_destroy(&C), -EBUSY);
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  items = 5;
  ASSERT_EQ(weft_cond_notify(&C, 2), 2);
  ASSERT_EQ(weft_lock_release(&L), 0);
  for (int64_t t0 = weft_now_ns(); atomic_load(&woken) < 2;) {
    ASSERT_TRUE(weft_now_ns() - t0 < 10000000000LL);
    weft_sleep_ns(1000000);
  }
  weft_sleep_ns(2000000);
  ASSERT_EQ(atomic_load(&woken), 2); /* exactly two woke */
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  ASSERT_EQ(weft_cond_notify_all(&C), 3);
  ASSERT_EQ(weft_lock_release(&L), 0);
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(atomic_load(&woken), 5);
  ASSERT_EQ(items, 0);
  ASSERT_EQ(weft_cond_destroy(&C), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(cond_notify_n_and_all_wait_for_and_misuse) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(notify_main, NULL, &c), 0);
}

TEST(cond_init_without_lock_is_einval) {
  weft_cond c;
  ASSERT_EQ(weft_cond_init(&c, NULL), -EINVAL);
}

/* A cancelled waiter returns with the lock held; the notification given to
 * it at the same moment goes to the next waiter. */
static int cancel_main(void *arg) {
  (void)arg;
  weft_lock_init(&L);
  weft_cond_init(&C, &L);
  items = 0;
  atomic_store(&woken, 0);
  weft_task a = weft_spawn(consumer, NULL);
  weft_sleep_ns(1000000);
  weft_task b = weft_spawn(consumer, NULL);
  weft_sleep_ns(1000000);
  ASSERT_EQ(weft_lock_acquire(&L), 0);
  items = 1;
  ASSERT_EQ(weft_cond_notify(&C, 1), 1); /* chooses a ... */
  weft_cancel(a);                          /* ... which is cancelled at once */
  ASSERT_EQ(weft_lock_release(&L), 0);
  int sa = weft_join(a);
  ASSERT_TRUE(sa == -ECANCELED || sa == 0);
  if (sa == 0) { /* a's wake won: it took the item, and b still waits: release it */
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    ASSERT_EQ(items, 0);
    items = 1;
    weft_cond_notify_all(&C);
    weft_lock_release(&L);
  }
  /* else a was cancelled, and b got the notification a was given */
  ASSERT_EQ(weft_join(b), 0);
  ASSERT_EQ(items, 0);
  weft_task_release(a);
  weft_task_release(b);
  ASSERT_EQ(weft_cond_destroy(&C), 0);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST(cond_cancelled_waiter_holds_the_lock_and_passes_the_notification) {
  weft_config c = cfg_workers(2);
  for (int i = 0; i < 20; i++) ASSERT_EQ(weft_run(cancel_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ stress */

static struct {
  weft_lock lock;
  weft_cond cond;
  long tokens;    /* under lock */
  long consumed;  /* under lock */
  bool done;      /* under lock */
  long total;
} S;

static bool token_or_done(void *arg) {
  (void)arg;
  return S.tokens > 0 || S.done;
}

static int stress_consumer(void *arg) {
  (void)arg;
  for (;;) {
    int rc = weft_lock_acquire(&S.lock);
    if (rc == -ECANCELED) continue;
    if (rc != 0) return -100;
    rc = weft_cond_wait_for(&S.cond, token_or_done, NULL);
    if (!weft_lock_locked(&S.lock)) return -101;
    if (rc == 0 && S.tokens > 0) {
      S.tokens--;
      S.consumed++;
    }
    bool finished = rc == 0 && S.tokens == 0 && S.done;
    if (weft_lock_release(&S.lock) != 0) return -102;
    if (finished) return 0;
  }
}

static int stress_main(void *arg) {
  (void)arg;
  enum { TASKS = 30 };
  weft_lock_init(&S.lock);
  weft_cond_init(&S.cond, &S.lock);
  S.tokens = S.consumed = 0;
  S.done = false;
  S.total = (test_sanitized() ? 100000 : 1500000) * test_stress_scale() / sync_migrate_div();
  weft_task t[TASKS], victims[TASKS / 3];
  for (int i = 0; i < TASKS; i++) {
    t[i] = weft_spawn(stress_consumer, NULL);
    if (i % 3 == 0) victims[i / 3] = t[i];
  }
  atomic_int stop = 0;
  canceller_arg ca = {victims, TASKS / 3, &stop, 0};
  cancellers cs = cancellers_start(&ca);
  uint64_t rng = 12345;
  for (long i = 0; i < S.total; i++) {
    ASSERT_EQ(weft_lock_acquire(&S.lock), 0);
    S.tokens++;
    ASSERT_GE(weft_cond_notify(&S.cond, 1), 0); /* one notification per token */
    ASSERT_EQ(weft_lock_release(&S.lock), 0);
    if (rng_step(&rng) % 4 == 0) weft_yield();
  }
  /* Every token must be consumed with no further notification: a lost one
   * would leave a token behind while consumers sleep. */
  int64_t deadline = weft_now_ns() + 60 * 1000000000LL;
  for (;;) {
    ASSERT_EQ(weft_lock_acquire(&S.lock), 0);
    long left = S.tokens;
    ASSERT_EQ(weft_lock_release(&S.lock), 0);
    if (left == 0) break;
    ASSERT_TRUE(weft_now_ns() < deadline);
    weft_sleep_ns(1000000);
  }
  ASSERT_EQ(cancellers_stop(&ca, &cs), 0);
  ASSERT_EQ(weft_lock_acquire(&S.lock), 0);
  S.done = true;
  weft_cond_notify_all(&S.cond);
  ASSERT_EQ(weft_lock_release(&S.lock), 0);
  for (int i = 0; i < TASKS; i++) {
    int st = weft_join(t[i]);
    ASSERT_TRUE(st == 0 || st == -ECANCELED);
    weft_task_release(t[i]);
  }
  ASSERT_EQ(S.consumed, S.total);
  ASSERT_EQ(weft_cond_destroy(&S.cond), 0);
  ASSERT_EQ(weft_lock_destroy(&S.lock), 0);
  fprintf(stderr, "cond stress: %ld tokens, %ld cancel requests\n", S.total, atomic_load(&ca.requests));
  return 0;
}

TEST(cond_stress_with_cancellation_4_workers) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(stress_main, NULL, &c), 0);
}

/* POSIX's rule for pthread_cond_destroy: a condition nobody waits on any
 * more (destroy returned 0) may be destroyed and its memory reused at
 * once, before the waiters notify_all woke have run. Before, a woken
 * waiter read the condition's lock pointer again when it ran (here: from
 * the reused memory, and crashed). On one worker, so that the woken
 * waiter has not run when the memory is reused. */
static weft_cond *Cp;
static int cp_waiter(void *arg) {
  (void)arg;
  if (weft_lock_acquire(&L) != 0) return -1;
  arrived++;
  int rc = weft_cond_wait(Cp);
  if (!weft_lock_locked(&L)) return -2;
  if (weft_lock_release(&L) != 0) return -3;
  return rc;
}

static int destroy_after_notify_main(void *arg) {
  (void)arg;
  weft_lock_init(&L);
  Cp = malloc(sizeof *Cp);
  ASSERT_EQ(weft_cond_init(Cp, &L), 0);
  arrived = 0;
  weft_task a = weft_spawn(cp_waiter, NULL);
  for (;;) {
    ASSERT_EQ(weft_lock_acquire(&L), 0);
    if (arrived == 1) break;
    ASSERT_EQ(weft_lock_release(&L), 0);
    weft_sleep_ns(100000);
  }
  ASSERT_EQ(weft_cond_notify_all(Cp), 1);
  ASSERT_EQ(weft_cond_destroy(Cp), 0); /* nobody waits any more */
  memset(Cp, 0xa5, sizeof *Cp);        /* the memory is reused */
  ASSERT_EQ(weft_lock_release(&L), 0);
  ASSERT_EQ(weft_join(a), 0);
  weft_task_release(a);
  free(Cp);
  ASSERT_EQ(weft_lock_destroy(&L), 0);
  return 0;
}

TEST_T(cond_memory_reused_right_after_notify_all, 20) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(destroy_after_notify_main, NULL, &c), 0);
}

TEST_MAIN()
