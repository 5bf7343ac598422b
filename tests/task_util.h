/* tests/task_util.h: helpers shared by the task-API tests (test_future.c,
 * test_gather.c, test_timeout.c, test_taskgroup.c, test_callback.c). */
#ifndef WEFT_TESTS_TASK_UTIL_H
#define WEFT_TESTS_TASK_UTIL_H

#include <stdatomic.h>
#include <unistd.h>

#include <weft/weft.h>

#include "test.h"

#define MS (1000000LL)

/* The worker counts every test runs at: 1, and the machine's CPU count (at
 * least 2, so that cross-worker paths run on a 1-CPU machine too). */
static inline unsigned tu_nproc(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 2 ? 2 : (unsigned)n;
}

/* Run main(arg) at workers=1 and workers=nproc; each run must return 0. */
static inline void run_both(weft_fn main, void *arg) {
  unsigned counts[2] = {1, tu_nproc()};
  for (int i = 0; i < 2; i++) {
    weft_config c = {0};
    c.workers = counts[i];
    int rc = weft_run(main, arg, &c);
    if (rc != 0) TEST_FAIL("run at workers=%u returned %d", counts[i], rc);
  }
}

static inline int tu_sleep_ms(void *arg) { return weft_sleep_ns((int64_t)(intptr_t)arg * MS); }
static inline int tu_return_arg(void *arg) { return (int)(intptr_t)arg; }
/* Sleeps arg ms; cancelled -> -ECANCELED. */
static inline int tu_sleep_then_7(void *arg) {
  int rc = weft_sleep_ns((int64_t)(intptr_t)arg * MS);
  return rc < 0 ? rc : 7;
}
/* Sleeps arg ms then fails with -EIO. */
static inline int tu_fail_after(void *arg) {
  int rc = weft_sleep_ns((int64_t)(intptr_t)arg * MS);
  return rc < 0 ? rc : -EIO;
}
static inline int tu_forever(void *arg) {
  (void)arg;
  return weft_sleep_ns(3600 * 1000 * MS);
}

/* Racy tests' iteration counts: a few seconds in ci mode, 10x in long
 * mode, smaller under a sanitizer. */
static inline long tu_iters(long base) {
  long n = base * test_stress_scale();
  return test_sanitized() ? n / 5 + 1 : n;
}

#endif
