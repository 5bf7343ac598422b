/* tests/sync_stress.h: helpers shared by the synchronisation tests: a
 * runtime configuration, a small random generator, and the cancellers that
 * cancel tasks of a set (a third of a stress test's tasks) at random
 * moments: one task inside the runtime and one thread outside it (cancel is
 * an any-thread call; the thread gets CPU whatever the workers run). */
#ifndef WEFT_TESTS_SYNC_STRESS_H
#define WEFT_TESTS_SYNC_STRESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <weft/weft.h>

static inline weft_config cfg_workers(unsigned n) {
  weft_config c = {0};
  c.workers = n;
  return c;
}

/* WEFT_TEST_MIGRATE=1 sends every wakeup to another worker's inbox: a
 * suspension then costs ~100x more, so the stress tests shrink 20x. */
static inline long sync_migrate_div(void) {
  const char *m = getenv("WEFT_TEST_MIGRATE");
  return (m && *m && *m != '0') ? 20 : 1;
}

static inline uint64_t rng_step(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* The canceller: until *stop, cancel a random task among victims[0..n-1],
 * then yield (3 times in 4) or sleep 0-50 us. Counts the cancel requests made. */
typedef struct canceller_arg {
  weft_task *victims;
  int n;
  atomic_int *stop;
  atomic_long requests;
} canceller_arg;

static int canceller_task(void *arg) {
  canceller_arg *c = arg;
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)weft_now_ns();
  while (!atomic_load(c->stop)) {
    int i = (int)(rng_step(&rng) % (uint64_t)c->n);
    if (weft_cancel(c->victims[i]) == 1) atomic_fetch_add(&c->requests, 1);
    if (rng_step(&rng) % 4 != 0)
      weft_yield();
    else
      weft_sleep_ns((int64_t)(rng_step(&rng) % 50000));
  }
  return 0;
}

static void *canceller_thread(void *arg) {
  canceller_arg *c = arg;
  uint64_t rng = 0x2545F4914F6CDD1Dull ^ (uint64_t)weft_now_ns();
  while (!atomic_load(c->stop)) {
    int i = (int)(rng_step(&rng) % (uint64_t)c->n);
    if (weft_cancel(c->victims[i]) == 1) atomic_fetch_add(&c->requests, 1);
    usleep((useconds_t)(rng_step(&rng) % 200));
  }
  return NULL;
}

typedef struct cancellers {
  weft_task task;
  pthread_t thread;
} cancellers;

/* Start both cancellers on c (from a task). */
static inline cancellers cancellers_start(canceller_arg *c) {
  cancellers cs;
  cs.task = weft_spawn(canceller_task, c);
  pthread_create(&cs.thread, NULL, canceller_thread, c);
  return cs;
}

/* Stop both; returns the task canceller's status (0). */
static inline int cancellers_stop(canceller_arg *c, cancellers *cs) {
  atomic_store(c->stop, 1);
  pthread_join(cs->thread, NULL);
  int st = weft_join(cs->task);
  weft_task_release(cs->task);
  return st;
}

#endif
