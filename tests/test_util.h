/* tests/test_util.h: small helpers that many weft tests share (the harness
 * itself is tests/test.h, which knows nothing of weft). */
#ifndef WEFT_TESTS_TEST_UTIL_H
#define WEFT_TESTS_TEST_UTIL_H

#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>

#include <weft/core.h>

/* A configuration with n workers, every other field default. */
static inline weft_config cfg_workers(unsigned n) {
  weft_config c = {0};
  c.workers = n;
  return c;
}

/* Open descriptors of this process (the directory's own excluded): tests
 * compare it before and after, so that no error path leaks one. */
static inline int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

/* Until *flag is non-zero, at most 5 s, yielding the thread: for plain
 * threads, and for callbacks, which must not suspend. */
static inline void spin_until_set(_Atomic int *flag) {
  for (int64_t t0 = weft_now_ns(); !atomic_load(flag) && weft_now_ns() - t0 < 5000000000LL;) sched_yield();
}

/* From a task: until *v == want, at most 5 s, in sleeps of 1 ms (the caller
 * asserts the value afterwards). */
static inline void wait_until_equal(_Atomic int *v, int want) {
  for (int i = 0; i < 5000 && atomic_load(v) != want; i++) weft_sleep_ns(1000000);
}

/* From a task: until task t waits (weft_task_waiting_on says on what) or
 * ended, at most 10 s, in sleeps of 1 ms; then 20 ms more (a task that
 * waits for a peer stays waiting: the caller checks it did not end). */
static inline void wait_until_waiting(weft_task t) {
  for (int i = 0; i < 10000 && !weft_task_done(t) && !weft_task_waiting_on(t)[0]; i++) weft_sleep_ns(1000000);
  weft_sleep_ns(20000000);
}

#ifdef WEFT_CORE_TASK_H /* weft__spawn_pinned: for tests that include core/task.h first */
/* From a task on a runtime of two workers: spawn fn(arg) pinned to the
 * other worker, wait until it has set *started, then until it waits
 * (wait_until_waiting); the caller checks weft_task_done(t) is false (a
 * writer that was to wait for a peer that does not read ended instead).
 * t.rec is NULL if the spawn failed. */
static inline weft_task spawn_elsewhere_until_waiting(weft_fn fn, void *arg, _Atomic int *started) {
  weft_task t = weft__spawn_pinned((unsigned)(1 - weft_worker_id()), fn, arg, NULL);
  if (!t.rec) return t;
  wait_until_equal(started, 1);
  wait_until_waiting(t);
  return t;
}
#endif

/* Join t (which must end with 0) and release it: the ns since t0, or -1
 * when the join failed. */
static inline int64_t join_release_since(weft_task t, int64_t t0) {
  int rc = weft_join(t);
  weft_task_release(t);
  return rc == 0 ? weft_now_ns() - t0 : -1;
}

/* Spin (holding the thread) for ns nanoseconds. */
static inline void spin_ns(int64_t ns) {
  for (int64_t t0 = weft_now_ns(); weft_now_ns() - t0 < ns;) {
  }
}

/* For weft__test_park_hook (WEFT_TEST_HOOKS): half the time, hold the
 * parking worker 0-20 us, as a preemption in that window would. */
static inline void test_park_delay(void) {
  static _Thread_local uint64_t x = 0x9e3779b97f4a7c15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  if (x % 2 == 0) spin_ns((int64_t)((x >> 8) % 20000));
}

#endif
