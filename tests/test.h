/* tests/test.h: the test harness.
 *
 * Each test file defines tests with TEST(name) { ... } and ends with
 * TEST_MAIN(). The executable runs every test (or those named on its command
 * line) each in its own forked process with a timeout, so that one crash or
 * hang fails one test and the others still run. Asserts print both operands.
 * A test that cannot run here calls TEST_SKIP(why): exit status 77.
 *
 * Stress tests size themselves with test_stress_scale(): WEFT_STRESS=ci (the
 * default: seconds on 2 cores, also under ThreadSanitizer) or long (a deeper
 * local run, 10x).
 */
#ifndef WEFT_TESTS_TEST_H
#define WEFT_TESTS_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef void (*test_fn)(void);
struct test_case {
  const char *name;
  test_fn fn;
  int timeout_s;
};

#define TEST_MAX 256
static struct test_case test_cases[TEST_MAX];
static int test_count;

static inline void test_register(const char *name, test_fn fn, int timeout_s) {
  if (test_count < TEST_MAX) test_cases[test_count++] = (struct test_case){name, fn, timeout_s};
}

/* TEST(name): a test with the default timeout (120 s, more under sanitizers). */
#define TEST(name) TEST_T(name, 120)
#define TEST_T(name, secs)                                                              \
  static void test_##name(void);                                                        \
  __attribute__((constructor)) static void test_reg_##name(void) {                     \
    test_register(#name, test_##name, secs);                                            \
  }                                                                                     \
  static void test_##name(void)

#define TEST_FAIL(...)                                                                  \
  do {                                                                                  \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                     \
    fprintf(stderr, __VA_ARGS__);                                                       \
    fprintf(stderr, "\n");                                                              \
    fflush(stderr);                                                                     \
    abort();                                                                            \
  } while (0)

#define TEST_SKIP(why)                                                                  \
  do {                                                                                  \
    fprintf(stderr, "skip: %s\n", why);                                                 \
    fflush(stderr);                                                                     \
    _exit(77);                                                                          \
  } while (0)

#define ASSERT_TRUE(c)                                                                  \
  do {                                                                                  \
    if (!(c)) TEST_FAIL("ASSERT_TRUE(%s) failed", #c);                                  \
  } while (0)

#define ASSERT_OP_(a, op, b, type, fmt)                                                 \
  do {                                                                                  \
    type a_ = (type)(a);                                                                \
    type b_ = (type)(b); /* separate: `T *a_, b_` would make b_ no pointer */           \
    if (!(a_ op b_))                                                                    \
      TEST_FAIL("ASSERT(%s %s %s) failed: " fmt " vs " fmt, #a, #op, #b, a_, b_);       \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT_OP_(a, ==, b, int64_t, "%" PRId64)
#define ASSERT_NE(a, b) ASSERT_OP_(a, !=, b, int64_t, "%" PRId64)
#define ASSERT_LT(a, b) ASSERT_OP_(a, <, b, int64_t, "%" PRId64)
#define ASSERT_LE(a, b) ASSERT_OP_(a, <=, b, int64_t, "%" PRId64)
#define ASSERT_GT(a, b) ASSERT_OP_(a, >, b, int64_t, "%" PRId64)
#define ASSERT_GE(a, b) ASSERT_OP_(a, >=, b, int64_t, "%" PRId64)
#define ASSERT_UEQ(a, b) ASSERT_OP_(a, ==, b, uint64_t, "%" PRIu64)
#define ASSERT_PTR_EQ(a, b) ASSERT_OP_(a, ==, b, const void *, "%p")
#define ASSERT_PTR_NE(a, b) ASSERT_OP_(a, !=, b, const void *, "%p")
#define ASSERT_STR_EQ(a, b)                                                             \
  do {                                                                                  \
    const char *a_ = (a), *b_ = (b);                                                    \
    if (strcmp(a_, b_) != 0) TEST_FAIL("ASSERT_STR_EQ(%s, %s): \"%s\" vs \"%s\"", #a, #b, a_, b_); \
  } while (0)

/* 1 for WEFT_STRESS=ci (default), 10 for WEFT_STRESS=long. */
static inline long test_stress_scale(void) {
  const char *s = getenv("WEFT_STRESS");
  return (s && strcmp(s, "long") == 0) ? 10 : 1;
}

/* Under a sanitizer the work per item is 5-20x slower: tests divide their counts. */
static inline int test_sanitized(void) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  return 1;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
  return 1;
#else
  return 0;
#endif
#else
  return 0;
#endif
}

/* Under AddressSanitizer: LeakSanitizer's check, run in each test's child
 * before it exits (it leaves with _exit, which skips the check at exit, so
 * without this no test could fail on a leak). Non-zero: leaks reported. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_LSAN 1
#endif
#endif
#ifdef TEST_LSAN
#include <sanitizer/lsan_interface.h>
static inline int test_leak_check(void) { return __lsan_do_recoverable_leak_check(); }
#else
static inline int test_leak_check(void) { return 0; }
#endif

static inline double test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int test_run_one(const struct test_case *tc) {
  double t0 = test_now();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    alarm((unsigned)(tc->timeout_s * (test_sanitized() ? 3 : 1) * (test_stress_scale() > 1 ? 10 : 1)));
    tc->fn();
    fflush(stdout);
    fflush(stderr);
    if (test_leak_check()) {
      fprintf(stderr, "%s: memory leaked (LeakSanitizer's report above)\n", tc->name);
      _exit(3);
    }
    _exit(0);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  double ms = (test_now() - t0) * 1e3;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    printf("ok   %-40s %8.1f ms\n", tc->name, ms);
    return 0;
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
    printf("skip %-40s\n", tc->name);
    return 0;
  }
  if (WIFSIGNALED(st))
    printf("FAIL %-40s signal %d%s\n", tc->name, WTERMSIG(st),
           WTERMSIG(st) == SIGALRM ? " (timeout)" : "");
  else
    printf("FAIL %-40s exit %d\n", tc->name, WEXITSTATUS(st));
  return 1;
}

static inline int test_main(int argc, char **argv) {
  int failed = 0, ran = 0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int i = 0; i < test_count; i++) {
    int want = argc < 2;
    for (int a = 1; a < argc; a++)
      if (strcmp(argv[a], test_cases[i].name) == 0) want = 1;
    if (!want) continue;
    ran++;
    failed += test_run_one(&test_cases[i]);
  }
  printf("%d/%d passed\n", ran - failed, ran);
  return failed ? 1 : (ran ? 0 : 77);
}

#define TEST_MAIN() \
  int main(int argc, char **argv) { return test_main(argc, argv); }

#endif
