/* tests/test_stack.c: task stacks and their pools (core/stack.c).
 *
 * Build with -DWEFT_TEST_HOOKS (fault injection, forced guard fallbacks).
 * Tests that must watch a process die (guard-page faults) fork a child,
 * capture its stderr through a pipe and check how it ended. Each TEST runs
 * in its own process already (tests/test.h), so process-wide state (the
 * installed handler, the guard fallback switches) starts fresh in each.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "core/stack.h"

#include <pthread.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "tests/test.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define ASAN_BUILD 1
#endif
#endif
#ifndef ASAN_BUILD
#define ASAN_BUILD 0
#endif

#ifndef WEFT_TEST_HOOKS
/* Without the hooks, the tests that need them skip (and the statistics read 0). */
static void weft__stack_test_guard(bool no_install, long budget) { TEST_SKIP("needs -DWEFT_TEST_HOOKS"); }
static long weft__stack_test_guard_budget(void) { return 0; }
static unsigned long weft__stack_test_dontneed_calls(void) { return 0; }
static void weft__fault_mmap_after(long n) { TEST_SKIP("needs -DWEFT_TEST_HOOKS"); }
static void weft__fault_alloc_after(long n) { TEST_SKIP("needs -DWEFT_TEST_HOOKS"); }
#endif

static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* Lines of /proc/self/maps: the process's mapping count. */
static long maps_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  ASSERT_TRUE(f != NULL);
  long n = 0;
  int c;
  while ((c = fgetc(f)) != EOF)
    if (c == '\n') n++;
  fclose(f);
  return n;
}

/* Resident pages of this process, from /proc/self/statm. */
static long rss_pages(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  ASSERT_TRUE(f != NULL);
  long size = 0, rss = 0;
  ASSERT_EQ(fscanf(f, "%ld %ld", &size, &rss), 2);
  fclose(f);
  return rss;
}

static void *page_of(const void *p) { return (void *)((uintptr_t)p & ~(uintptr_t)(page() - 1)); }

/* mincore: ENOMEM for an unmapped page, else bit 0 = resident. */
static bool is_mapped(const void *p) {
  unsigned char v;
  return mincore(page_of(p), page(), &v) == 0;
}
static bool is_resident(const void *p) {
  unsigned char v = 0;
  ASSERT_EQ(mincore(page_of(p), page(), &v), 0);
  return v & 1;
}

static bool has_flag(const weft__stack *s, uint32_t f) { return (s->flags & f) != 0; }

/* ---------------------------------------------------------------- children that die */

/* A word shared with forked children (they report an address through it). */
static volatile uintptr_t *shared_word;

static void make_shared_word(void) {
  void *m = mmap(NULL, page(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_TRUE(m != MAP_FAILED);
  shared_word = m;
  *shared_word = 0;
}

/* Run fn in a forked child with its stderr captured into err (NUL-ended).
 * Returns the child's wait status. */
static int run_child(void (*fn)(void), char *err, size_t cap) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    fn();
    _exit(0);
  }
  close(fds[1]);
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fds[0], err + n, cap - 1 - n);
    if (r > 0 && n + (size_t)r < cap - 1) {
      n += (size_t)r;
      continue;
    }
    if (r > 0) n += (size_t)r;
    if (r < 0 && errno == EINTR) continue;
    break;
  }
  err[n] = '\0';
  close(fds[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

static void expect_overflow_report(int st, const char *err, const char *name, size_t size, uintptr_t addr) {
  char want[256];
  snprintf(want, sizeof want, "weft: task '%s' overflowed its %zu-byte stack (fault at 0x%" PRIxPTR ")\n",
           name, size, addr);
  if (!strstr(err, want)) TEST_FAIL("child stderr lacks \"%s\"; got: \"%s\"", want, err);
  ASSERT_TRUE(WIFSIGNALED(st));
  ASSERT_EQ(WTERMSIG(st), SIGABRT);
}

/* A fault that is not an overflow: the default action (SIGSEGV), and no
 * overflow report. Under a sanitizer, its own SEGV handling (ASan's handler
 * is the previous one, which we chain to; TSan's sits below every handler)
 * reports the SEGV and exits instead. */
static void expect_plain_segv(int st, const char *err) {
  if (strstr(err, "weft: task")) TEST_FAIL("unexpected overflow report: \"%s\"", err);
  /* (with ASAN_OPTIONS=abort_on_error=1, as scripts/test.sh sets, the
   * sanitizer's report ends in SIGABRT instead of an exit status) */
  if (test_sanitized() && strstr(err, "SEGV") &&
      ((WIFEXITED(st) && WEXITSTATUS(st) != 0) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT)))
    return;
  if (!WIFSIGNALED(st)) TEST_FAIL("child did not die by a signal (status %#x): \"%s\"", st, err);
  ASSERT_EQ(WTERMSIG(st), SIGSEGV);
}

static weft__stack_shared child_sh;
static weft__stack_pool child_pool;

/* The set-up a worker thread does: alternate stack, handler, a pool. */
static weft__stack *child_setup(size_t size) {
  ASSERT_EQ(weft__stack_thread_init(), 0);
  weft__stack_guard_install();
  ASSERT_EQ(weft__stack_shared_init(&child_sh, 0), 0);
  weft__stack_pool_init(&child_pool, &child_sh);
  weft__stack *s = weft__stack_get(&child_pool, size);
  ASSERT_TRUE(s != NULL);
  return s;
}

static void child_write_below_lo(void) {
  weft__stack *s = child_setup(0);
  ASSERT_TRUE(has_flag(s, WEFT__STACK_GUARD));
  weft__stack_set_running(s, "overflower");
  *shared_word = (uintptr_t)(s->lo - 1);
  *(volatile char *)(s->lo - 1) = 1;
  _exit(3); /* not reached */
}

TEST(stack_guard_fault_reports_name) {
  make_shared_word();
  char err[4096];
  int st = run_child(child_write_below_lo, err, sizeof err);
  expect_overflow_report(st, err, "overflower", 2 * 65536, *shared_word);
}

/* Same, for a guard at the bottom of the guard page and in the second slab. */
static void child_write_guard_bottom_second_slab(void) {
  weft__stack *s = child_setup(0), *t = NULL;
  for (int i = 0; i < 20; i++) t = weft__stack_get(&child_pool, 0); /* into slab #2 (16 per first slab) */
  (void)s;
  weft__stack_set_running(t, "second-slab");
  *shared_word = (uintptr_t)(t->lo - page());
  *(volatile char *)(t->lo - page()) = 1;
  _exit(3);
}

TEST(stack_guard_fault_second_slab_bottom_of_guard) {
  make_shared_word();
  char err[4096];
  int st = run_child(child_write_guard_bottom_second_slab, err, sizeof err);
  expect_overflow_report(st, err, "second-slab", 2 * 65536, *shared_word);
}

/* A real overflow: run a recursive function on the pool's stack (ucontext
 * stands in for the scheduler's switch). The handler must run on the
 * alternate stack, since the task's own stack is exhausted. */
static volatile int recurse_forever = 1;
static int recurse(int depth) {
  volatile char frame[512];
  frame[0] = (char)depth;
  if (!recurse_forever) return frame[0];
  return recurse(depth + 1) + frame[0]; /* not a tail call */
}
static ucontext_t uc_main, uc_task;
static void task_entry(void) { recurse(0); }

static void child_real_overflow(void) {
  weft__stack *s = child_setup(0);
  *shared_word = (uintptr_t)s->lo;
  ASSERT_EQ(getcontext(&uc_task), 0);
  uc_task.uc_stack.ss_sp = s->lo;
  uc_task.uc_stack.ss_size = s->size;
  uc_task.uc_link = &uc_main;
  makecontext(&uc_task, task_entry, 0);
  weft__stack_set_running(s, "deep-recursion");
  swapcontext(&uc_main, &uc_task);
  _exit(3);
}

TEST(stack_guard_real_overflow_on_altstack) {
  make_shared_word();
  char err[4096];
  int st = run_child(child_real_overflow, err, sizeof err);
  const char *want = "weft: task 'deep-recursion' overflowed its 131072-byte stack (fault at 0x"; /* a pooled stack: 2 x the default */
  const char *at = strstr(err, want);
  if (!at) TEST_FAIL("child stderr lacks \"%s\"; got: \"%s\" (status %#x)", want, err, st);
  uintptr_t addr = (uintptr_t)strtoull(at + strlen(want), NULL, 16);
  ASSERT_TRUE(addr < *shared_word && addr >= *shared_word - page()); /* in the guard page */
  ASSERT_TRUE(WIFSIGNALED(st));
  ASSERT_EQ(WTERMSIG(st), SIGABRT);
}

/* A stack larger than the default, and one with an mprotect guard: both report. */
static void child_custom_guard(void) {
  weft__stack *s = child_setup(200000);
  ASSERT_UEQ(s->size, (200000 + page() - 1) / page() * page());
  weft__stack_set_running(s, "big");
  *shared_word = (uintptr_t)(s->lo - 8);
  *(volatile char *)(s->lo - 8) = 1;
  _exit(3);
}

TEST(stack_guard_fault_custom_size) {
  make_shared_word();
  char err[4096];
  int st = run_child(child_custom_guard, err, sizeof err);
  expect_overflow_report(st, err, "big", (200000 + page() - 1) / page() * page(), *shared_word);
}

static void child_mprotect_guard(void) {
  weft__stack *s = child_setup(0);
  ASSERT_TRUE(has_flag(s, WEFT__STACK_GUARD));
  ASSERT_TRUE(has_flag(s, WEFT__STACK_MPROTECT));
  weft__stack_set_running(s, "mprotected");
  *shared_word = (uintptr_t)(s->lo - 1);
  *(volatile char *)(s->lo - 1) = 1;
  _exit(3);
}

TEST(stack_guard_fault_mprotect_fallback) {
  weft__stack_test_guard(true, -1); /* inherited by the child */
  make_shared_word();
  char err[4096];
  int st = run_child(child_mprotect_guard, err, sizeof err);
  expect_overflow_report(st, err, "mprotected", 2 * 65536, *shared_word);
}

/* Faults that are not overflows of the running stack still crash as before. */
static void child_fault_unmapped(void) {
  weft__stack *s = child_setup(0);
  weft__stack_set_running(s, "innocent");
  char *p = mmap(NULL, page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(p, page());
  *(volatile char *)p = 1;
  _exit(3);
}

TEST(stack_fault_elsewhere_is_plain_segv) {
  char err[4096];
  int st = run_child(child_fault_unmapped, err, sizeof err);
  expect_plain_segv(st, err);
}

static void child_fault_other_guard(void) {
  weft__stack *s = child_setup(0);
  weft__stack *t = weft__stack_get(&child_pool, 0);
  weft__stack_set_running(s, "innocent");
  *(volatile char *)(t->lo - 1) = 1; /* t's guard, but t is not running here */
  _exit(3);
}

TEST(stack_fault_in_other_stacks_guard_is_plain_segv) {
  char err[4096];
  int st = run_child(child_fault_other_guard, err, sizeof err);
  expect_plain_segv(st, err);
}

static void child_fault_nothing_running(void) {
  weft__stack *s = child_setup(0);
  weft__stack_set_running(s, "done");
  weft__stack_set_running(NULL, NULL); /* between tasks */
  *(volatile char *)(s->lo - 1) = 1;
  _exit(3);
}

TEST(stack_fault_between_tasks_is_plain_segv) {
  char err[4096];
  int st = run_child(child_fault_nothing_running, err, sizeof err);
  expect_plain_segv(st, err);
}

/* A handler installed before ours still gets the faults that are not ours. */
static void prev_handler(int sig, siginfo_t *si, void *uc) {
  static const char msg[] = "previous handler\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  _exit(42);
}

static void child_chain(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = prev_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
  weft__stack *s = child_setup(0);
  weft__stack_set_running(s, "innocent");
  volatile char *volatile null_page = (volatile char *)8;
  *null_page = 1; /* a null-page fault */
  _exit(3);
}

TEST(stack_fault_chains_to_previous_handler) {
  char err[4096];
  int st = run_child(child_chain, err, sizeof err);
  ASSERT_TRUE(strstr(err, "previous handler") != NULL);
  ASSERT_TRUE(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 42);
}

/* ...and an overflow is still ours even then. */
static void child_chain_overflow(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = prev_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
  child_write_below_lo();
}

TEST(stack_overflow_reported_before_previous_handler) {
  make_shared_word();
  char err[4096];
  int st = run_child(child_chain_overflow, err, sizeof err);
  expect_overflow_report(st, err, "overflower", 2 * 65536, *shared_word);
}

/* Install from many threads at once: one handler, still working. */
static void *install_thread(void *arg) {
  weft__stack_guard_install();
  return NULL;
}

static void child_install_race(void) {
  pthread_t t[8];
  for (int i = 0; i < 8; i++) ASSERT_EQ(pthread_create(&t[i], NULL, install_thread, NULL), 0);
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  child_write_below_lo();
}

TEST(stack_guard_install_concurrent) {
  make_shared_word();
  char err[4096];
  int st = run_child(child_install_race, err, sizeof err);
  expect_overflow_report(st, err, "overflower", 2 * 65536, *shared_word);
}

/* A frame larger than the guard page (found by review): without
 * -fstack-clash-protection (GCC's default here, clang's) nothing touches
 * the guard; the frame's lowest bytes fault in whatever lies below. It is
 * still an overflow of the running stack (the stack pointer left it), and
 * must be reported by name, not crash as a plain SIGSEGV. What lies below
 * is made deterministic: a PROT_NONE reservation under the slab. */
static volatile size_t big_frame_bytes;
static void big_frame_entry(void) {
  volatile char *p = __builtin_alloca(big_frame_bytes);
  p[0] = 1; /* its lowest byte first: below the guard page */
  p[big_frame_bytes - 1] = 1;
}

static void child_big_frame(bool guarded) {
  if (!guarded) weft__stack_test_guard(true, 0); /* no guard at all: the canary */
  weft__stack *s = child_setup(0);
  ASSERT_TRUE(has_flag(s, WEFT__STACK_GUARD) == guarded);
  size_t gap = 64 * 1024;
  char *below = s->lo - page() - gap; /* s is the first stack of the slab: its guard is the slab's base */
  if (mmap(below, gap, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != below) {
    fprintf(stderr, "skip: the address space below the slab is taken\n");
    _exit(77);
  }
  big_frame_bytes = s->size + 16 * 1024; /* its lowest byte 16 KiB below the stack */
  *shared_word = (uintptr_t)below;
  ASSERT_EQ(getcontext(&uc_task), 0);
  uc_task.uc_stack.ss_sp = s->lo;
  uc_task.uc_stack.ss_size = s->size;
  uc_task.uc_link = &uc_main;
  makecontext(&uc_task, big_frame_entry, 0);
  weft__stack_set_running(s, "big-frame");
  swapcontext(&uc_main, &uc_task);
  _exit(3);
}
static void child_big_frame_guarded(void) { child_big_frame(true); }
static void child_big_frame_unguarded(void) { child_big_frame(false); }

TEST(stack_frame_larger_than_the_guard_is_reported) {
  for (int guarded = 1; guarded >= 0; guarded--) {
    make_shared_word();
    char err[4096];
    int st = run_child(guarded ? child_big_frame_guarded : child_big_frame_unguarded, err, sizeof err);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77) TEST_SKIP("the address space below the slab is taken");
    /* the fault: in the reservation below (a sanitizer's alloca may touch
     * its redzone first: the exact byte varies) */
    const char *want = "weft: task 'big-frame' overflowed its 131072-byte stack (fault at 0x";
    const char *at = strstr(err, want);
    if (!at) TEST_FAIL("guarded %d: child stderr lacks \"%s\"; got: \"%s\" (status %#x)", guarded, want, err, st);
    uintptr_t addr = (uintptr_t)strtoull(at + strlen(want), NULL, 16);
    ASSERT_TRUE(addr >= *shared_word && addr < *shared_word + 64 * 1024);
    ASSERT_TRUE(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGABRT);
  }
}

/* ---------------------------------------------------------------- pools */

TEST(stack_shared_init_sizes) {
  weft__stack_shared sh;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  ASSERT_UEQ(sh.default_size, 65536);
  weft__stack_shared_fini(&sh);
  ASSERT_EQ(weft__stack_shared_init(&sh, 100000), 0);
  ASSERT_UEQ(sh.default_size, (100000 + page() - 1) / page() * page());
  weft__stack_shared_fini(&sh);
  ASSERT_EQ(weft__stack_shared_init(&sh, 16384), 0);
  weft__stack_shared_fini(&sh);
  ASSERT_EQ(weft__stack_shared_init(&sh, 4096), -EINVAL);
  ASSERT_EQ(weft__stack_shared_init(&sh, (size_t)2 << 30), -EINVAL);
}

/* Colouring (stack.h): a slab's stacks cycle through WEFT__STACK_COLORS
 * distinct first-frame offsets, all inside the top page with room for a
 * task's first frames, so a task that uses under ~3 KiB still touches one
 * page. */
TEST(stack_colours_cycle_within_the_top_page) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  enum { N = 2 * WEFT__STACK_COLORS };
  weft__stack *s[N];
  for (int i = 0; i < N; i++) ASSERT_TRUE((s[i] = weft__stack_get(&p, 0)) != NULL);
  for (int i = 0; i < N; i++) {
    ASSERT_LE(s[i]->color, 1024u);
    ASSERT_UEQ(s[i]->color % 64, 0); /* whole cache lines */
    ASSERT_UEQ(s[i]->color, s[i % WEFT__STACK_COLORS]->color);
    for (int j = 0; j < i && j < WEFT__STACK_COLORS; j++)
      if (i < WEFT__STACK_COLORS) ASSERT_TRUE(s[i]->color != s[j]->color);
  }
  for (int i = 0; i < N; i++) weft__stack_put(&p, s[i]);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
}

TEST(stack_hot_lifo_reuse) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack *a = weft__stack_get(&p, 0), *b = weft__stack_get(&p, 0), *c = weft__stack_get(&p, 0);
  ASSERT_TRUE(a && b && c && a != b && b != c && a != c);
  ASSERT_UEQ(p.n_hot, 0);
  weft__stack_put(&p, a);
  weft__stack_put(&p, b);
  weft__stack_put(&p, c);
  ASSERT_UEQ(p.n_hot, 3);
  ASSERT_TRUE(weft__stack_get(&p, 0) == c); /* most recently returned first */
  ASSERT_TRUE(weft__stack_get(&p, 0) == b);
  weft__stack_put(&p, c);
  ASSERT_TRUE(weft__stack_get(&p, 0) == c);
  ASSERT_TRUE(weft__stack_get(&p, 0) == a);
  ASSERT_UEQ(p.n_hot, 0);
  /* A fresh slab hands out its stacks in address order (neighbours together). */
  ASSERT_TRUE(b->lo > a->lo && c->lo > b->lo);
  ASSERT_TRUE(b->lo - a->lo == (ptrdiff_t)(sh.slot_size + page()));
  weft__stack_put(&p, a);
  weft__stack_put(&p, b);
  weft__stack_put(&p, c);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
}

TEST(stack_default_and_custom_sizes) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack *d0 = weft__stack_get(&p, 0), *d1 = weft__stack_get(&p, 1),
              *dd = weft__stack_get(&p, sh.default_size);
  weft__stack *big = weft__stack_get(&p, sh.default_size + 1);
  ASSERT_TRUE(d0 && d1 && dd && big);
  for (weft__stack *s = d0; s; s = s == d0 ? d1 : s == d1 ? dd : NULL) {
    ASSERT_UEQ(s->size, sh.slot_size); /* a default-size request gets a pooled stack: twice the size */
    ASSERT_TRUE(has_flag(s, WEFT__STACK_SLAB));
    ASSERT_TRUE(has_flag(s, WEFT__STACK_GUARD)); /* mprotect within the budget */
  }
  ASSERT_UEQ(big->size, sh.default_size + page());
  ASSERT_TRUE(!has_flag(big, WEFT__STACK_SLAB));
  ASSERT_TRUE(has_flag(big, WEFT__STACK_GUARD));
  char *big_lo = big->lo;
  ASSERT_TRUE(is_mapped(big_lo));
  weft__stack_put(&p, big); /* unmapped right away, not pooled */
  ASSERT_TRUE(!is_mapped(big_lo));
  ASSERT_TRUE(!is_mapped(big_lo - page()));
  ASSERT_UEQ(p.n_hot, 0);
  weft__stack_put(&p, d0);
  weft__stack_put(&p, d1);
  weft__stack_put(&p, dd);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
}

/* The whole usable range can be written, and a fresh stack's top page is
 * resident before anything touched it (MADV_POPULATE_WRITE). */
TEST(stack_whole_range_writable_top_populated) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack *s[40];
  for (int i = 0; i < 40; i++) { /* across the first two slabs */
    s[i] = weft__stack_get(&p, i == 39 ? 3 * sh.default_size : 0);
    ASSERT_TRUE(s[i] != NULL);
    ASSERT_TRUE(is_resident(s[i]->lo + s[i]->size - 1));
    ASSERT_TRUE(!is_resident(s[i]->lo)); /* the rest is touched lazily */
    memset(s[i]->lo, 0x40 + i, s[i]->size);
  }
  for (int i = 0; i < 40; i++) {
    ASSERT_EQ(s[i]->lo[0], 0x40 + i);
    ASSERT_EQ(s[i]->lo[s[i]->size - 1], 0x40 + i);
    ASSERT_TRUE(weft__stack_check(s[i], s[i]->lo + s[i]->size));
  }
  for (int i = 0; i < 40; i++) weft__stack_put(&p, s[i]);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
}

TEST(stack_check_bounds) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack *s = weft__stack_get(&p, 0);
  ASSERT_TRUE(weft__stack_check(s, s->lo + s->size));
  ASSERT_TRUE(weft__stack_check(s, s->lo + 257));
  ASSERT_TRUE(!weft__stack_check(s, s->lo + 256)); /* no room for a signal frame */
  ASSERT_TRUE(!weft__stack_check(s, s->lo));
  ASSERT_TRUE(!weft__stack_check(s, s->lo - 8));
  ASSERT_TRUE(!weft__stack_check(s, s->lo + s->size + 1));
  weft__stack_put(&p, s);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
}

/* No guard at all (MADV_GUARD_INSTALL "missing", mprotect budget spent):
 * canary stacks, and a clobbered canary fails the check. The canary comes
 * back when a trimmed stack is taken again (MADV_DONTNEED zeroed it). */
TEST(stack_canary_fallback_detects_clobber) {
  weft__stack_test_guard(true, 0);
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack *s = weft__stack_get(&p, 0), *big = weft__stack_get(&p, 2 * sh.default_size);
  ASSERT_TRUE(s && big);
  ASSERT_TRUE(has_flag(s, WEFT__STACK_CANARY) && !has_flag(s, WEFT__STACK_GUARD));
  ASSERT_TRUE(has_flag(big, WEFT__STACK_CANARY) && !has_flag(big, WEFT__STACK_GUARD));
  ASSERT_TRUE(weft__stack_check(s, s->lo + s->size));
  ASSERT_TRUE(weft__stack_check(big, big->lo + big->size));
  memset(s->lo + 8, 0xff, s->size - 8); /* everything but the canary is usable */
  ASSERT_TRUE(weft__stack_check(s, s->lo + s->size));
  s->lo[3] ^= 0x10; /* an overflow reaches the bottom word */
  ASSERT_TRUE(!weft__stack_check(s, s->lo + s->size));
  big->lo[0] = 0;
  ASSERT_TRUE(!weft__stack_check(big, big->lo + big->size));
  weft__stack_put(&p, big);
  /* back to the cold list and out again: the canary is rewritten */
  weft__stack_put(&p, s);
  weft__stack_pool_fini(&p);
  weft__stack_pool_init(&p, &sh);
  weft__stack *again = weft__stack_get(&p, 0);
  ASSERT_TRUE(again == s);
  ASSERT_TRUE(weft__stack_check(again, again->lo + again->size));
  weft__stack_put(&p, again);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
  ASSERT_EQ(weft__stack_test_guard_budget(), 0);
}

/* The mprotect fallback spends a quarter of max_map_count at most (here a
 * small forced budget), then falls back to canaries; the budget comes back
 * when the mappings go. */
TEST(stack_mprotect_budget_respected) {
  const long budget = 64; /* 32 guards of 2 mappings each */
  weft__stack_test_guard(true, budget);
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 16384), 0);
  weft__stack_pool_init(&p, &sh);
  long maps0 = maps_count();
  enum { N = 200 };
  weft__stack *s[N];
  int guarded = 0, canaries = 0;
  for (int i = 0; i < N; i++) {
    s[i] = weft__stack_get(&p, 0);
    ASSERT_TRUE(s[i] != NULL);
    if (has_flag(s[i], WEFT__STACK_MPROTECT)) guarded++;
    if (has_flag(s[i], WEFT__STACK_CANARY)) canaries++;
  }
  /* slabs of 16, 32, 64, 128 stacks: 240 carved, the first 32 guarded */
  ASSERT_EQ(guarded, 32);
  ASSERT_EQ(canaries, N - 32);
  ASSERT_EQ(weft__stack_test_guard_budget(), 0);
  if (!test_sanitized()) ASSERT_LE(maps_count() - maps0, budget + 8); /* TSan maps shadow on demand */
  weft__stack *big = weft__stack_get(&p, 1 << 20); /* no budget left: a canary too */
  ASSERT_TRUE(has_flag(big, WEFT__STACK_CANARY));
  weft__stack_put(&p, big);
  for (int i = 0; i < N; i++) weft__stack_put(&p, s[i]);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
  ASSERT_EQ(weft__stack_test_guard_budget(), budget);
}

/* Trim keeps WEFT_STACK_HOT stacks and gives the memory of the rest back. */
TEST(stack_trim_gives_memory_back) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  enum { N = 1000 };
  static weft__stack *s[N];
  for (int i = 0; i < N; i++) {
    s[i] = weft__stack_get(&p, 0);
    ASSERT_TRUE(s[i] != NULL);
    memset(s[i]->lo, 1, s[i]->size);
  }
  for (int i = 0; i < N; i++) weft__stack_put(&p, s[i]);
  long before = rss_pages();
  unsigned long calls0 = weft__stack_test_dontneed_calls();
  weft__stack_trim(&p);
  long after = rss_pages();
  unsigned long calls = weft__stack_test_dontneed_calls() - calls0;
  ASSERT_UEQ(p.n_hot, WEFT_STACK_HOT);
  long expect = (long)((N - WEFT_STACK_HOT) * (sh.slot_size / page())); /* every page was touched */
  printf("  rss %ld -> %ld pages (expected drop >= %ld); %lu madvise calls for %d stacks\n", before, after,
         expect * 9 / 10, calls, N - WEFT_STACK_HOT);
  ASSERT_GE(before - after, expect * 9 / 10);
  /* contiguous runs coalesce: at most one call per slab (16, 32, ..., 256) */
  ASSERT_LE(calls, 8);
  /* the hot ones kept their memory; the cold ones read as zero when reused */
  weft__stack *h = weft__stack_get(&p, 0);
  ASSERT_EQ(h->lo[0], 1);
  for (int i = 1; i < WEFT_STACK_HOT; i++) weft__stack_get(&p, 0);
  weft__stack *c = weft__stack_get(&p, 0); /* from the cold list */
  ASSERT_TRUE(is_resident(c->lo + c->size - 1)); /* populated again */
  ASSERT_EQ(c->lo[c->size - 1], 0);
  ASSERT_EQ(c->lo[0], 0);
  ASSERT_TRUE(weft__stack_check(c, c->lo + c->size));
  /* give back the 65 taken: c, and the 64 hot ones, which were the 64 most
   * recently put (s[N-1] .. s[N-64]) */
  weft__stack_put(&p, c);
  for (int i = N - WEFT_STACK_HOT; i < N; i++) weft__stack_put(&p, s[i]);
  weft__stack_pool_fini(&p);
  ASSERT_UEQ(p.n_hot, 0);
  weft__stack_shared_fini(&sh); /* asserts every stack is back */
}

/* Trim with nothing to trim, or fewer than WEFT_STACK_HOT: nothing happens. */
TEST(stack_trim_below_hot_is_noop) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack_trim(&p);
  weft__stack *s = weft__stack_get(&p, 0);
  s->lo[0] = 7;
  weft__stack_put(&p, s);
  unsigned long calls0 = weft__stack_test_dontneed_calls();
  weft__stack_trim(&p);
  ASSERT_UEQ(weft__stack_test_dontneed_calls(), calls0);
  ASSERT_UEQ(p.n_hot, 1);
  ASSERT_EQ(weft__stack_get(&p, 0)->lo[0], 7);
  weft__stack_put(&p, s);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
}

/* 100,000 stacks alive at once: a few hundred slabs, and the mapping count
 * stays far below vm.max_map_count (guards cost no mapping). */
TEST(stack_100k_alive_few_mappings) {
  enum { N = 100000 };
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 16384), 0);
  weft__stack_pool_init(&p, &sh);
  weft__stack **s = malloc(N * sizeof *s);
  ASSERT_TRUE(s != NULL);
  long maps0 = maps_count();
  for (int i = 0; i < N; i++) {
    s[i] = weft__stack_get(&p, 0);
    ASSERT_TRUE(s[i] != NULL);
    s[i]->lo[s[i]->size - 1] = (char)i;
  }
  long maps1 = maps_count();
  printf("  %d stacks: %ld -> %ld mappings\n", N, maps0, maps1);
  /* one per slab, plus the mprotect guards of the budget (a quarter of
   * max_map_count, 65530): far below the limit. Not under a sanitizer: TSan
   * maps shadow memory for application mappings on demand. */
  if (!test_sanitized()) ASSERT_LE(maps1 - maps0, 1000 + 65530 / 4);
  for (int i = 0; i < N; i++) ASSERT_EQ(s[i]->lo[s[i]->size - 1], (char)i);
  char *first = s[0]->lo, *last = s[N - 1]->lo;
  for (int i = 0; i < N; i++) weft__stack_put(&p, s[i]);
  weft__stack_trim(&p);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
  /* the slabs are gone (checked by address: the allocator may map its own) */
  ASSERT_TRUE(!is_mapped(first) && !is_mapped(last));
  free(s);
}

/* ---------------------------------------------------------------- out of memory */

TEST(stack_mmap_failure_returns_null) {
  weft__stack_shared sh;
  weft__stack_pool p;
  ASSERT_EQ(weft__stack_shared_init(&sh, 0), 0);
  weft__stack_pool_init(&p, &sh);
  long maps0 = maps_count();
  weft__fault_mmap_after(0);
  ASSERT_TRUE(weft__stack_get(&p, 0) == NULL); /* a new slab */
  ASSERT_TRUE(sh.slabs == NULL && sh.cold == NULL);
  ASSERT_UEQ(sh.n_stacks, 0);
  weft__fault_mmap_after(0);
  ASSERT_TRUE(weft__stack_get(&p, 1 << 20) == NULL); /* a custom stack */
  weft__fault_mmap_after(0);
  ASSERT_EQ(weft__stack_thread_init(), -ENOMEM);
  weft__fault_alloc_after(0);
  ASSERT_TRUE(weft__stack_get(&p, 0) == NULL); /* the slab record */
  weft__fault_alloc_after(0);
  ASSERT_TRUE(weft__stack_get(&p, 1 << 20) == NULL); /* the descriptor */
  if (!test_sanitized()) ASSERT_EQ(maps_count(), maps0); /* TSan maps its own metadata */
  ASSERT_TRUE(sh.slabs == NULL && sh.cold == NULL);
  /* the next mmap after one more works: the first get succeeds, then a
   * slab of 16 feeds the next 15 from the cold list without mmap */
  weft__fault_mmap_after(1);
  weft__stack *a = weft__stack_get(&p, 0);
  ASSERT_TRUE(a != NULL);
  weft__stack *more[15];
  for (int i = 0; i < 15; i++) ASSERT_TRUE((more[i] = weft__stack_get(&p, 0)) != NULL);
  ASSERT_TRUE(weft__stack_get(&p, 0) == NULL); /* the 17th needs a second slab */
  weft__fault_mmap_after(-1);
  weft__stack *b = weft__stack_get(&p, 0);
  ASSERT_TRUE(b != NULL);
  ASSERT_UEQ(sh.n_stacks, 16 + 32); /* two slabs */
  weft__stack_put(&p, a);
  weft__stack_put(&p, b);
  for (int i = 0; i < 15; i++) weft__stack_put(&p, more[i]);
  weft__stack_pool_fini(&p);
  weft__stack_shared_fini(&sh);
#if ASAN_BUILD
  __lsan_do_leak_check(); /* the harness _exits: check for leaks here */
#endif
}

/* ---------------------------------------------------------------- alternate stack */

TEST(stack_thread_init_fini) {
  stack_t before, mine, after;
  ASSERT_EQ(sigaltstack(NULL, &before), 0);
  ASSERT_EQ(weft__stack_thread_init(), 0);
  ASSERT_EQ(weft__stack_thread_init(), 0); /* idempotent */
  ASSERT_EQ(sigaltstack(NULL, &mine), 0);
  ASSERT_TRUE(!(mine.ss_flags & SS_DISABLE));
  ASSERT_UEQ(mine.ss_size, 65536);
  ASSERT_TRUE(mine.ss_sp != before.ss_sp);
  weft__stack_thread_fini();
  ASSERT_EQ(sigaltstack(NULL, &after), 0);
  ASSERT_EQ(after.ss_flags & SS_DISABLE, before.ss_flags & SS_DISABLE);
  if (!(before.ss_flags & SS_DISABLE)) ASSERT_TRUE(after.ss_sp == before.ss_sp);
  ASSERT_TRUE(!is_mapped(mine.ss_sp));
  weft__stack_thread_fini(); /* harmless twice */
}

/* ---------------------------------------------------------------- two threads */

/* Two workers with their own pools over one shared: each gets stacks,
 * writes them, hands some to the other through a locked mailbox, puts the
 * ones it received into its own pool, and trims now and then, so the cold
 * list and the slab list are hit from both sides. Run under TSan. */
struct mailbox {
  pthread_mutex_t lock;
  weft__stack *items[4096];
  int n;
};
static weft__stack_shared mt_sh;
static struct mailbox mt_box[2];
static _Atomic int mt_done[2];

struct mt_arg {
  int id;
  long rounds;
};

/* Stamps in the top page only (populated by get): the test is about the
 * pools' bookkeeping, not page faults. */
static void stamp(weft__stack *s, int v) {
  s->lo[s->size - 1] = (char)v;
  s->lo[s->size - 200] = (char)v;
}
static void check_stamp(weft__stack *s, int v) {
  ASSERT_EQ(s->lo[s->size - 1], (char)v);
  ASSERT_EQ(s->lo[s->size - 200], (char)v);
}

static void *mt_worker(void *argp) {
  struct mt_arg *arg = argp;
  int me = arg->id, other = 1 - me;
  uint64_t rng = 0x1234567 + (uint64_t)me;
  weft__stack_pool p;
  weft__stack_pool_init(&p, &mt_sh);
  weft__stack *mine[256];
  for (long r = 0; r < arg->rounds; r++) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    int k = 1 + (int)((rng >> 33) % 200);
    for (int i = 0; i < k; i++) {
      size_t size = (i % 50 == 7) ? mt_sh.default_size * 2 : 0;
      mine[i] = weft__stack_get(&p, size);
      ASSERT_TRUE(mine[i] != NULL);
      ASSERT_TRUE(weft__stack_check(mine[i], mine[i]->lo + mine[i]->size));
      stamp(mine[i], me + 1);
    }
    /* half to the other worker, half back to my own pool */
    pthread_mutex_lock(&mt_box[other].lock);
    int i = 0;
    for (; i < k / 2 && mt_box[other].n < 4096; i++) mt_box[other].items[mt_box[other].n++] = mine[i];
    pthread_mutex_unlock(&mt_box[other].lock);
    for (; i < k; i++) weft__stack_put(&p, mine[i]);
    /* receive: the other's writes are visible through the mailbox lock */
    pthread_mutex_lock(&mt_box[me].lock);
    int n = mt_box[me].n;
    weft__stack *got[4096];
    memcpy(got, mt_box[me].items, (size_t)n * sizeof got[0]);
    mt_box[me].n = 0;
    pthread_mutex_unlock(&mt_box[me].lock);
    for (int j = 0; j < n; j++) {
      check_stamp(got[j], other + 1);
      weft__stack_put(&p, got[j]);
    }
    if (r % 3 == 0) weft__stack_trim(&p);
  }
  weft__store(&mt_done[me], 1, RELEASE); /* pairs with the acquire below: the last mailbox fill is done */
  while (!weft__load(&mt_done[other], ACQUIRE)) sched_yield();
  pthread_mutex_lock(&mt_box[me].lock);
  for (int j = 0; j < mt_box[me].n; j++) weft__stack_put(&p, mt_box[me].items[j]);
  mt_box[me].n = 0;
  pthread_mutex_unlock(&mt_box[me].lock);
  weft__stack_pool_fini(&p);
  return NULL;
}

TEST(stack_two_threads_exchange_and_trim) {
  ASSERT_EQ(weft__stack_shared_init(&mt_sh, 16384), 0);
  for (int i = 0; i < 2; i++) pthread_mutex_init(&mt_box[i].lock, NULL);
  long rounds = (test_sanitized() ? 200 : 1000) * test_stress_scale();
  pthread_t t[2];
  struct mt_arg args[2] = {{0, rounds}, {1, rounds}};
  for (int i = 0; i < 2; i++) ASSERT_EQ(pthread_create(&t[i], NULL, mt_worker, &args[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  size_t n_cold = 0;
  for (weft__stack *c = mt_sh.cold; c; c = c->next) n_cold++;
  ASSERT_UEQ(n_cold, mt_sh.n_stacks);
  printf("  %zu stacks carved over %ld rounds x 2 threads\n", mt_sh.n_stacks, rounds);
  weft__stack_shared_fini(&mt_sh);
}

/* Tasks that begin on one worker and end on another (server handlers woken on their
 * descriptor's epoll worker), with neither worker ever parking: the stacks pile up in the
 * ending worker's pool while the starting one carves fresh ones. The stacks in existence
 * (and the memory they hold) must stay bounded. */
TEST(stack_one_way_flow_stays_bounded) {
  weft__stack_shared sh;
  ASSERT_EQ(weft__stack_shared_init(&sh, 16384), 0);
  weft__stack_pool a, b;
  weft__stack_pool_init(&a, &sh);
  weft__stack_pool_init(&b, &sh);
  weft__stack *st[100];
  for (int r = 0; r < 500; r++) { /* 50,000 tasks: start on a, end on b */
    for (int i = 0; i < 100; i++) {
      st[i] = weft__stack_get(&a, 0);
      ASSERT_TRUE(st[i] != NULL);
    }
    for (int i = 0; i < 100; i++) weft__stack_put(&b, st[i]);
  }
  printf("  %zu stacks carved for 50000 one-way tasks (b holds %zu)\n", sh.n_stacks, b.n_hot);
  ASSERT_LE((int64_t)sh.n_stacks, 4096);
  weft__stack_pool_fini(&a);
  weft__stack_pool_fini(&b);
  weft__stack_shared_fini(&sh);
}

TEST_MAIN()
