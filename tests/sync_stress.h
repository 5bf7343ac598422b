/* tests/sync_stress.h: helpers shared by the synchronisation tests: a
 * runtime configuration, a small random generator, and the canceller that
 * cancels a third of a set of tasks at random moments. */
#ifndef WEFT_TESTS_SYNC_STRESS_H
#define WEFT_TESTS_SYNC_STRESS_H

#include <stdatomic.h>
#include <stdint.h>

#include <weft/weft.h>

static inline weft_config cfg_workers(unsigned n) {
  weft_config c = {0};
  c.workers = n;
  return c;
}

static inline uint64_t rng_step(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* The canceller: until *stop, cancel a random task among victims[0..n-1],
 * then sleep 0-50 us (or yield). Counts the cancel requests made. */
typedef struct canceller_arg {
  weft_task *victims;
  int n;
  atomic_int *stop;
  long requests;
} canceller_arg;

static int canceller_task(void *arg) {
  canceller_arg *c = arg;
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)weft_now_ns();
  while (!atomic_load(c->stop)) {
    int i = (int)(rng_step(&rng) % (uint64_t)c->n);
    if (weft_cancel(c->victims[i]) == 1) c->requests++;
    uint64_t r = rng_step(&rng) % 4;
    if (r == 0)
      weft_yield();
    else
      weft_sleep_ns((int64_t)(rng_step(&rng) % 50000));
  }
  return 0;
}

#endif
