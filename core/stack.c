/* core/stack.c: task stacks (protocol in stack.h).
 *
 * Who touches what:
 *  - weft__stack_pool: its owner worker only (hot list, n_hot). No locks.
 *  - weft__stack_shared: cold, slabs, n_stacks, slab_next under s->lock, a
 *    leaf lock held only for list splices (never across a system call);
 *    default_size is fixed after init.
 *  - a weft__stack descriptor: by whoever holds the stack (a task's worker,
 *    or the list it is on). Descriptors of slab stacks live in the slab's
 *    record and are never freed before weft__stack_shared_fini.
 *  - process-wide state (below): the page size and the guard/populate
 *    fallback switches, all set once and then only read, plus the mprotect
 *    guard budget, a counter.
 *
 * Life of a default-size stack:
 *   carved (fresh, no memory) -> cold list -> get: prepare() (populate the
 *   top page, write the canary) -> task -> put: hot list -> get: reused as
 *   is ... -> trim: MADV_DONTNEED, cold list -> ... -> shared_fini: unmapped.
 * The first stack of a new slab skips the cold list; the others go there,
 * so "cold" means exactly "has no memory yet".
 *
 * Overflow reporting runs in a signal handler, so it reads only
 * thread-local atomics set by weft__stack_set_running, the page size and the
 * chained handlers (both written before the handler is installed), and
 * calls only write(2), sigaction(2), raise(3) and abort(3), which are
 * async-signal-safe.
 *
 * Rejected:
 *  - one mapping per stack (simple, and what most coroutine libraries do):
 *    a million tasks would need two million mappings with mprotect guards,
 *    thirty times vm.max_map_count;
 *  - sorting the trim surplus in an array: that would allocate while the
 *    worker is about to park; the hot list is merge-sorted in place instead;
 *  - keeping stacks larger than the default in a pool: they are rare, and a
 *    size-keyed cache would hold memory nobody asks for again.
 */
#include "core/stack.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/task.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif

#define DEFAULT_SIZE ((size_t)64 << 10)
#define MIN_SIZE ((size_t)16 << 10)
#define MAX_SIZE ((size_t)1 << 30)
#define SLAB_FIRST 16u
#define SLAB_MAX 256u
#define ALTSTACK_SIZE ((size_t)64 << 10)
#define GUARD_COST 2    /* mappings an mprotect guard adds: itself + the split-off rest */

struct weft__stack_slab {
  struct weft__stack_slab *next; /* shared->slabs, under shared->lock */
  char *base;                    /* the mapping: n x (guard page + slot_size) */
  size_t len;
  uint32_t n;
  weft__stack st[];              /* the slab's stacks' descriptors */
};

/* ---------------------------------------------------------------- process-wide state */

/* Written once by proc_init (under pthread_once) before any stack exists or
 * the handler is installed; read-only afterwards. */
static size_t page_size;
static long budget_initial;

/* Relaxed: a sticky hint. Two threads racing past it both try the madvise
 * and both get EINVAL; no data is published through it. */
static _Atomic int no_guard_install;
static _Atomic int no_populate;

/* Mappings left for mprotect guards. Relaxed fetch_sub/fetch_add: a counter
 * only, it orders nothing; it may dip below zero briefly while a loser
 * gives its charge back. */
static _Atomic long guard_budget;

static pthread_once_t proc_once = PTHREAD_ONCE_INIT;

/* vm.max_map_count, read with open/read (no stdio: nothing to allocate). */
static long read_max_map_count(void) {
  long v = 65530;
  int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return v;
  char buf[32];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return v;
  long r = 0;
  for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) r = r * 10 + (buf[i] - '0');
  return r > 0 ? r : v;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Should a stack's top page be populated with madvise before first use, or
 * faulted in by the first touch? Timed once per process, best of 4 each.
 * Populate pays only where a fault is expensive: on this project's VM (a
 * shadow-paging guest) a first-touch fault costs ~9 us and MADV_POPULATE_WRITE
 * ~2.4 us. Where they cost about the same (~1 us each on a 16-core KVM
 * machine), the fault is better, because it takes only the mapping's own
 * lock while madvise takes the mmap lock every worker shares: timers at 16
 * workers there used 3.16 s of CPU populating and 2.21 s faulting. */
static bool populate_pays(void) {
  enum { N = 4 };
  char *m = mmap(NULL, 2 * N * page_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (m == MAP_FAILED) return false;
  int64_t fault = INT64_MAX, pop = INT64_MAX;
  bool ok = true;
  for (int i = 0; i < N && ok; i++) {
    int64_t t0 = mono_ns();
    ((volatile char *)m)[(size_t)i * page_size] = 1;
    int64_t d = mono_ns() - t0;
    if (d < fault) fault = d;
    t0 = mono_ns();
    ok = madvise(m + (size_t)(N + i) * page_size, page_size, MADV_POPULATE_WRITE) == 0; /* EINVAL before 5.14 */
    d = mono_ns() - t0;
    if (d < pop) pop = d;
  }
  munmap(m, 2 * N * page_size);
  return ok && 2 * pop < fault;
}

static void proc_init(void) {
  long ps = sysconf(_SC_PAGESIZE);
  page_size = ps > 0 ? (size_t)ps : 4096;
  int saved = errno;
  weft__store(&no_populate, !populate_pays(), RELAXED); /* before any stack: no pair needed */
  errno = saved;
  /* A quarter of vm.max_map_count, but never more than a quarter of its
   * default (65530): the same guard coverage on every machine (the first
   * ~8,000 stacks), because each mprotect guard takes the mmap lock for
   * writing, which stalls every other worker's page faults and populates.
   * Measured on a 16-core machine whose max_map_count let every stack have
   * one: timers (100,000 tasks, 16 workers) made 98,000 mprotect calls, and
   * the kernel's mmap-lock spinning (osq_lock, rwsem_spin_on_owner) was a
   * quarter of the run's CPU. */
  long maps = read_max_map_count();
  budget_initial = (maps < 65530 ? maps : 65530) / 4;
  weft__store(&guard_budget, budget_initial, RELAXED); /* before any stack: no pair needed */
  const char *gi = getenv("WEFT_GUARD_INSTALL"); /* see make_guard */
  weft__store(&no_guard_install, !(gi && *gi == '1'), RELAXED);
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* ---------------------------------------------------------------- mmap + fault injection */

#ifdef WEFT_TEST_HOOKS
static _Atomic long mmap_countdown = -1; /* relaxed: a test knob, no data hangs on it */
static _Atomic unsigned long dontneed_calls; /* relaxed: a statistic */

void weft__fault_mmap_after(long n) { weft__store(&mmap_countdown, n, RELAXED); }

static bool mmap_fault(void) {
  long n = weft__load(&mmap_countdown, RELAXED);
  while (n >= 0)
    if (weft__cas_weak(&mmap_countdown, &n, n - 1, RELAXED, RELAXED)) return n == 0;
  return false;
}

void weft__stack_test_guard(bool no_install, long budget) {
  pthread_once(&proc_once, proc_init);
  weft__store(&no_guard_install, no_install, RELAXED);
  weft__store(&guard_budget, budget < 0 ? budget_initial : budget, RELAXED);
}

long weft__stack_test_guard_budget(void) { return weft__load(&guard_budget, RELAXED); }
unsigned long weft__stack_test_dontneed_calls(void) { return weft__load(&dontneed_calls, RELAXED); }
#define COUNT_DONTNEED() weft__fetch_add(&dontneed_calls, 1, RELAXED)
#else
static inline bool mmap_fault(void) { return false; }
#define COUNT_DONTNEED() ((void)0)
#endif

/* MAP_NORESERVE: a stack's untouched pages are address space only, not
 * commit charge. MAP_STACK: documents the use (and implies no THP on 6.7+). */
static char *map_stack_area(size_t len) {
  if (mmap_fault()) return NULL;
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* ---------------------------------------------------------------- guards, canaries, memory */

/* Make the page at g a guard for the stack above it; returns the stack's
 * guard flags. Order of preference in stack.h. */
static uint32_t make_guard(weft__stack_shared *sh, char *g) {
  /* mprotect first: measured on this project's VM (shadow paging), a
   * MADV_GUARD_INSTALL guard made later accesses to the stacks around it
   * cost ~5 us each (waking 100,000 idle tasks: 0.59 s against 0.06 s), so
   * it is used only when asked for (WEFT_GUARD_INSTALL=1), where it is
   * cheap: hardware-virtualised or bare-metal machines. */
  /* relaxed: the budget is a counter and publishes nothing (see guard_budget) */
  if (weft__fetch_sub(&guard_budget, GUARD_COST, RELAXED) >= GUARD_COST) {
    if (mprotect(g, page_size, PROT_NONE) == 0) return WEFT__STACK_GUARD | WEFT__STACK_MPROTECT;
  }
  weft__fetch_add(&guard_budget, GUARD_COST, RELAXED); /* not spent after all */
  if (!weft__load(&no_guard_install, RELAXED)) { /* relaxed: a sticky hint, pairs with nothing */
    if (madvise(g, page_size, MADV_GUARD_INSTALL) == 0) return WEFT__STACK_GUARD;
    /* EINVAL: the kernel does not know the advice (or cannot guard this
     * kind of mapping, e.g. under mlockall): stop asking. Any other error
     * (ENOMEM for page tables) is this stack's alone. */
    if (errno == EINVAL) weft__store(&no_guard_install, 1, RELAXED);
  }
  /* No guard: the scheduler checks the stack pointer at every switch. A
   * canary word at the bottom catches more (an overflow that returned
   * before switching) but touches one more page per stack (4 KiB of RSS
   * and a first-touch fault): it is on in debug mode (sh->canary). */
  return sh->canary ? WEFT__STACK_CANARY : 0;
}

/* The stack's mapping is going away: its mprotect guard's mappings go too. */
static void release_guard(const weft__stack *s) {
  if (s->flags & WEFT__STACK_MPROTECT) weft__fetch_add(&guard_budget, GUARD_COST, RELAXED);
}


/* A stack without memory is about to be used: fault its top page in with
 * one system call instead of a page fault at the task's first instruction
 * where that is cheaper (populate_pays), and write the canary (MADV_DONTNEED
 * zeroed it). */
static void prepare(weft__stack *s) {
  if (!weft__load(&no_populate, RELAXED)) { /* relaxed: a sticky hint, pairs with nothing */
    int saved = errno;
    if (madvise(s->lo + s->size - page_size, page_size, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
      weft__store(&no_populate, 1, RELAXED); /* before 5.14: the first touch faults it in */
    errno = saved;
  }
  if (s->flags & WEFT__STACK_CANARY) {
    uint64_t c = weft__stack_canary_of(s);
    memcpy(s->lo, &c, sizeof c);
  }
}

/* ---------------------------------------------------------------- shared, pool */

int weft__stack_shared_init(weft__stack_shared *s, size_t default_size) {
  pthread_once(&proc_once, proc_init);
  if (default_size == 0) default_size = DEFAULT_SIZE;
  if (default_size < MIN_SIZE || default_size > MAX_SIZE) return -EINVAL;
  int rc = pthread_mutex_init(&s->lock, NULL);
  if (rc) return -rc;
  s->default_size = round_up(default_size, page_size);
  s->slot_size = 2 * s->default_size;
  s->cold = NULL;
  s->warm = NULL;
  weft__store(&s->n_warm, 0, RELAXED); /* before the workers start */
  s->slabs = NULL;
  s->n_stacks = 0;
  s->slab_next = SLAB_FIRST;
  s->canary = true; /* the runtime turns it off outside debug mode */
  return 0;
}

void weft__stack_shared_fini(weft__stack_shared *s) {
  while (s->warm) { /* with memory, but the slabs are unmapped below */
    weft__stack *w = s->warm;
    s->warm = w->next;
    w->next = s->cold;
    s->cold = w;
  }
  weft__store(&s->n_warm, 0, RELAXED);
#ifndef NDEBUG
  size_t n_cold = 0;
  for (weft__stack *c = s->cold; c; c = c->next) n_cold++;
  assert(n_cold == s->n_stacks && "weft__stack_shared_fini: a stack was not given back");
#endif
  struct weft__stack_slab *sl = s->slabs;
  while (sl) {
    struct weft__stack_slab *next = sl->next;
    for (uint32_t i = 0; i < sl->n; i++) release_guard(&sl->st[i]);
    munmap(sl->base, sl->len);
    weft__free(sl, sizeof *sl + sl->n * sizeof sl->st[0]);
    sl = next;
  }
  s->slabs = NULL;
  s->cold = NULL;
  s->n_stacks = 0;
  pthread_mutex_destroy(&s->lock);
}

void weft__stack_pool_init(weft__stack_pool *p, weft__stack_shared *s) {
  p->shared = s;
  p->hot = NULL;
  p->n_hot = 0;
}

static void trim_to(weft__stack_pool *p, size_t keep, bool give_back);

void weft__stack_pool_fini(weft__stack_pool *p) {
  /* The runtime is stopping and will unmap the slabs: no madvise here (it
   * would cost a system call and a TLB shootdown per run for nothing).
   * The warm list goes to the cold list the same way. */
  trim_to(p, 0, false);
  p->hot = NULL;
  weft__stack_shared *sh = p->shared;
  pthread_mutex_lock(&sh->lock);
  while (sh->warm) {
    weft__stack *w = sh->warm;
    sh->warm = w->next;
    w->next = sh->cold;
    sh->cold = w;
  }
  weft__store(&sh->n_warm, 0, RELAXED); /* relaxed: n_warm is a hint outside the lock (see stack.h) */
  pthread_mutex_unlock(&sh->lock);
}

/* A new slab of n default stacks. The first is returned (without memory);
 * the others go to the cold list. NULL, with nothing leaked, when the
 * record or the mapping cannot be had. */
static weft__stack *carve(weft__stack_shared *sh, uint32_t n) {
  size_t slot = page_size + sh->slot_size;
  size_t rec = sizeof(struct weft__stack_slab) + n * sizeof(weft__stack);
  struct weft__stack_slab *sl = weft__alloc(rec);
  if (!sl) return NULL;
  char *base = map_stack_area(n * slot);
  if (!base) {
    weft__free(sl, rec);
    return NULL;
  }
  (void)madvise(base, n * slot, MADV_NOHUGEPAGE); /* best effort: see stack.h */
  sl->base = base;
  sl->len = n * slot;
  sl->n = n;
  for (uint32_t i = 0; i < n; i++) {
    weft__stack *st = &sl->st[i];
    st->lo = base + i * slot + page_size;
    st->size = sh->slot_size;
    st->color = (i % WEFT__STACK_COLORS) * WEFT__STACK_COLOR_STEP; /* stack.h: colouring */
    st->flags = WEFT__STACK_SLAB | make_guard(sh, base + i * slot);
    /* lowest address first off the cold list: neighbours get used together */
    st->next = i + 1 < n ? &sl->st[i + 1] : NULL;
  }
  pthread_mutex_lock(&sh->lock);
  sl->next = sh->slabs;
  sh->slabs = sl;
  if (n > 1) {
    sl->st[n - 1].next = sh->cold;
    sh->cold = &sl->st[1];
  }
  sh->n_stacks += n;
  if (sh->slab_next < SLAB_MAX) sh->slab_next = n * 2 < SLAB_MAX ? n * 2 : SLAB_MAX;
  pthread_mutex_unlock(&sh->lock);
  sl->st[0].next = NULL;
  return &sl->st[0];
}

/* A stack larger than the default: its own mapping, guard page at the bottom. */
static weft__stack *map_custom(weft__stack_shared *sh, size_t size) {
  if (size > MAX_SIZE) return NULL;
  size = round_up(size, page_size);
  weft__stack *s = weft__alloc(sizeof *s);
  if (!s) return NULL;
  char *base = map_stack_area(size + page_size);
  if (!base) {
    weft__free(s, sizeof *s);
    return NULL;
  }
  (void)madvise(base, size + page_size, MADV_NOHUGEPAGE);
  s->next = NULL;
  s->lo = base + page_size;
  s->size = size;
  s->color = 0; /* a larger-than-default stack: rare, its own mapping */
  s->flags = make_guard(sh, base);
  prepare(s);
  return s;
}

weft__stack *weft__stack_get(weft__stack_pool *p, size_t size) {
  weft__stack_shared *sh = p->shared;
  if (weft__unlikely(size > sh->default_size)) return map_custom(sh, size);
  weft__stack *s = p->hot;
  if (weft__likely(s != NULL)) {
    p->hot = s->next;
    p->n_hot--;
    s->next = NULL;
    return s;
  }
  pthread_mutex_lock(&sh->lock);
  s = sh->warm;
  if (s) { /* memory and all, as a hot one: reused as is */
    sh->warm = s->next;
    weft__store(&sh->n_warm, weft__load(&sh->n_warm, RELAXED) - 1, RELAXED); /* under lock */
    pthread_mutex_unlock(&sh->lock);
    s->next = NULL;
    return s;
  }
  s = sh->cold;
  if (s) sh->cold = s->next;
  uint32_t n = sh->slab_next;
  pthread_mutex_unlock(&sh->lock);
  if (!s) {
    s = carve(sh, n);
    if (!s) return NULL;
  }
  s->next = NULL;
  prepare(s);
  return s;
}

/* A busy pool past WEFT_STACK_HOT_MAX: keep the WEFT_STACK_HOT most recent
 * and hand the rest, with their memory, to the warm list, where any
 * worker's get takes them first. When the warm list is full nobody is
 * taking stacks: the pool keeps them until its idle trim (giving memory back
 * here would cost a madvise per hand-over on the path where many tasks end
 * at once). */
static void hand_over(weft__stack_pool *p) {
  weft__stack_shared *sh = p->shared;
  /* relaxed: a hint; the list itself is changed under the lock */
  if (weft__load(&sh->n_warm, RELAXED) >= WEFT_STACK_WARM_MAX) return;
  weft__stack **link = &p->hot;
  for (size_t i = 0; i < WEFT_STACK_HOT; i++) link = &(*link)->next;
  weft__stack *rest = *link, *tail = rest;
  size_t n = p->n_hot - WEFT_STACK_HOT;
  while (tail->next) tail = tail->next;
  *link = NULL;
  p->n_hot = WEFT_STACK_HOT;
  pthread_mutex_lock(&sh->lock);
  tail->next = sh->warm;
  sh->warm = rest;
  weft__store(&sh->n_warm, weft__load(&sh->n_warm, RELAXED) + n, RELAXED); /* under lock */
  pthread_mutex_unlock(&sh->lock);
}

void weft__stack_put(weft__stack_pool *p, weft__stack *s) {
  if (weft__likely(s->flags & WEFT__STACK_SLAB)) {
    assert(s->size == p->shared->slot_size);
    s->next = p->hot;
    p->hot = s;
    if (weft__unlikely(++p->n_hot > WEFT_STACK_HOT_MAX)) hand_over(p);
    return;
  }
  /* The thread's running stack stays set between tasks (stack.h): not to
   * a descriptor freed here, which the fault handler would read. Relaxed:
   * the same thread's TLS (see set_running). */
  if (weft__load(&weft__stack_running, RELAXED) == s) weft__stack_set_running(NULL, NULL);
  release_guard(s);
  munmap(s->lo - page_size, s->size + page_size);
  weft__free(s, sizeof *s);
}

/* ---------------------------------------------------------------- trim */

/* Merge two lists sorted by lo. */
static weft__stack *merge(weft__stack *a, weft__stack *b) {
  weft__stack head, *t = &head;
  while (a && b) {
    if ((uintptr_t)a->lo < (uintptr_t)b->lo) {
      t->next = a;
      a = a->next;
    } else {
      t->next = b;
      b = b->next;
    }
    t = t->next;
  }
  t->next = a ? a : b;
  return head.next;
}

/* Sort the first n (>= 1) stacks of *rest by lo; *rest moves past them.
 * Recursion depth log2(n); no allocation (the worker is about to park). */
static weft__stack *sort_n(weft__stack **rest, size_t n) {
  if (n == 1) {
    weft__stack *s = *rest;
    *rest = s->next;
    s->next = NULL;
    return s;
  }
  weft__stack *a = sort_n(rest, n / 2);
  weft__stack *b = sort_n(rest, n - n / 2);
  return merge(a, b);
}

static void dontneed(char *lo, char *hi) {
  COUNT_DONTNEED();
  int saved = errno;
  (void)madvise(lo, (size_t)(hi - lo), MADV_DONTNEED); /* cannot fail on a mapped private range */
  errno = saved;
}

/* Keep the keep most recently returned stacks; the rest lose their memory
 * and go to the cold list. */
static void trim_to(weft__stack_pool *p, size_t keep, bool give_back) {
  if (p->n_hot <= keep) return;
  weft__stack **link = &p->hot;
  for (size_t i = 0; i < keep; i++) link = &(*link)->next;
  weft__stack *rest = *link;
  size_t n = p->n_hot - keep;
  *link = NULL;
  p->n_hot = keep;

  /* Address order turns neighbours into runs: one madvise per run. A run
   * continues when the next stack's guard page starts where the previous
   * stack ends (same slab, or adjacent slabs: either way the range is
   * mapped throughout, guard pages included). */
  weft__stack *sorted = sort_n(&rest, n), *tail = NULL;
  char *run_lo = NULL, *run_hi = NULL;
  for (weft__stack *s = sorted; s; s = s->next) {
    if (!give_back) {
      tail = s;
      continue;
    }
    if (run_hi && s->lo - page_size == run_hi) {
      run_hi = s->lo + s->size;
    } else {
      if (run_hi) dontneed(run_lo, run_hi);
      run_lo = s->lo;
      run_hi = s->lo + s->size;
    }
    tail = s;
  }
  if (give_back) dontneed(run_lo, run_hi);

  weft__stack_shared *sh = p->shared;
  pthread_mutex_lock(&sh->lock);
  tail->next = sh->cold;
  sh->cold = sorted;
  pthread_mutex_unlock(&sh->lock);
}

void weft__stack_trim(weft__stack_pool *p) {
  weft__stack_shared *sh = p->shared;
  if (weft__load(&sh->n_warm, RELAXED)) { /* the warm list too: appended, so trimmed (relaxed: a hint) */
    pthread_mutex_lock(&sh->lock);
    weft__stack *w = sh->warm;
    size_t n = weft__load(&sh->n_warm, RELAXED);
    sh->warm = NULL;
    weft__store(&sh->n_warm, 0, RELAXED);
    pthread_mutex_unlock(&sh->lock);
    weft__stack **link = &p->hot;
    while (*link) link = &(*link)->next;
    *link = w;
    p->n_hot += n;
  }
  trim_to(p, WEFT_STACK_HOT, true);
}

bool weft__stack_trim_wanted(const weft__stack_pool *p) {
  return p->n_hot > WEFT_STACK_HOT || weft__load(&p->shared->n_warm, RELAXED); /* relaxed: a hint */
}

/* ---------------------------------------------------------------- check */

/* ---------------------------------------------------------------- overflow reporting */

/* What this thread runs now. initial-exec TLS: reading it in the signal
 * handler is a plain load off the thread pointer (the general-dynamic model
 * may call __tls_get_addr, which may allocate: not async-signal-safe).
 * Relaxed: written and read by the same thread (the handler interrupts it),
 * so no other thread's view matters. The two stores of set_running are not
 * atomic together; a fault between them is in scheduler code, not on a task
 * stack, so it cannot be mistaken for an overflow of the new stack. */
__thread _Atomic(const weft__stack *) weft__stack_running __attribute__((tls_model("initial-exec")));
__thread _Atomic(const char *) weft__stack_running_name __attribute__((tls_model("initial-exec")));

/* The calling thread's alternate signal stack (thread_init/fini only). */
static __thread char *altstack_map;
static __thread stack_t altstack_prev;

/* The handlers found at install; written before ours is installed, then
 * read-only (read by the handler). */
static struct sigaction prev_segv, prev_bus;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;


static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
  while (*s && at < cap) buf[at++] = *s++;
  return at;
}

static size_t put_dec(char *buf, size_t at, size_t cap, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do tmp[n++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (n && at < cap) buf[at++] = tmp[--n];
  return at;
}

static size_t put_hex(char *buf, size_t at, size_t cap, uint64_t v) {
  char tmp[16];
  size_t n = 0;
  do tmp[n++] = "0123456789abcdef"[v & 15];
  while ((v >>= 4) != 0);
  while (n && at < cap) buf[at++] = tmp[--n];
  return at;
}

/* In the signal handler: report the overflow of s at addr and abort. */
__attribute__((noreturn)) static void report_overflow(const weft__stack *s, const char *name, uintptr_t addr) {
  char buf[512];
  size_t cap = sizeof buf, n = 0, name_max = 200;
  n = put_str(buf, n, cap, "weft: task '");
  if (!name) name = "?";
  if (!*name) {
    /* no name set: the default, "task-<id>", as weft_task_get_name gives it
     * (name is the record's name field: core/task.c, weft__stack_set_running) */
    const weft__task *t = (const weft__task *)(const void *)(name - offsetof(weft__task, name));
    n = put_str(buf, n, cap, "task-");
    n = put_dec(buf, n, cap, weft__load(&((weft__task *)t)->id, RELAXED));
  }
  while (*name && name_max--) buf[n++] = *name++; /* a runaway name is cut, not trusted */
  n = put_str(buf, n, cap, "' overflowed its ");
  n = put_dec(buf, n, cap, s->size);
  n = put_str(buf, n, cap, "-byte stack (fault at 0x");
  n = put_hex(buf, n, cap, addr);
  n = put_str(buf, n, cap, ")\n");
  for (size_t off = 0; off < n;) {
    ssize_t w = write(STDERR_FILENO, buf + off, n - off);
    if (w > 0)
      off += (size_t)w;
    else if (w < 0 && errno == EINTR)
      continue;
    else
      break;
  }
  abort();
}

/* Not an overflow: hand the signal to whoever had it before us. */
static void chain(int sig, siginfo_t *si, void *uctx) {
  const struct sigaction *prev = sig == SIGSEGV ? &prev_segv : &prev_bus;
  if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
    prev->sa_sigaction(sig, si, uctx);
    return;
  }
  if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  /* Default action (an ignored SIGSEGV from a fault kills too): restore it
   * and return, so the faulting instruction runs again and the kernel
   * delivers the signal with its default action (core dump). A signal that
   * was sent, not caused (si_code <= 0), would not come back by itself: raise
   * it again; it stays pending until this handler returns. */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
  if (si->si_code <= 0) raise(sig);
}

/* The stack pointer of the context the fault interrupted. */
static uintptr_t fault_sp(const void *uctx) {
  const ucontext_t *uc = uctx;
#if defined(__x86_64__)
  return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
  return (uintptr_t)uc->uc_mcontext.sp;
#endif
}

/* An overflow of the running stack s: a fault in its guard page, or a
 * fault within a page of a stack pointer that has left s downwards. The
 * second catches a frame larger than the guard page (a big array or
 * alloca: without -fstack-clash-protection, the default of GCC here and of
 * clang, nothing touches the guard before the frame's lowest bytes, which
 * fault in whatever lies below) and, on a stack without a guard, a
 * recursion that runs on below it (through the slab's other stacks) and
 * faults before its next switch. Scheduler code (s stays set between
 * tasks) runs on its thread's own stack: a fault there is near its stack
 * pointer only when that stack overflowed. A signal that was sent
 * (si_code <= 0) has no fault address. */
static bool is_overflow(const weft__stack *s, uintptr_t a, uintptr_t sp) {
  uintptr_t lo = (uintptr_t)s->lo;
  if (a >= lo) return false;
  if ((s->flags & WEFT__STACK_GUARD) && lo - a <= page_size) return true;
  return sp < lo && a + page_size >= sp && a <= sp + page_size;
}

static void on_fault(int sig, siginfo_t *si, void *uctx) {
  int saved = errno;
  const weft__stack *s = weft__load(&weft__stack_running, RELAXED); /* pairs with set_running's store (same thread) */
  if (s && si->si_code > 0 && is_overflow(s, (uintptr_t)si->si_addr, fault_sp(uctx)))
    report_overflow(s, weft__load(&weft__stack_running_name, RELAXED), (uintptr_t)si->si_addr);
  chain(sig, si, uctx);
  errno = saved;
}

static void install(void) {
  pthread_once(&proc_once, proc_init); /* the handler reads page_size */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  /* Read the previous handler first, then install: the handler may run the
   * moment it is installed, and must find prev_* already written. */
  sigaction(SIGSEGV, NULL, &prev_segv);
  sigaction(SIGBUS, NULL, &prev_bus);
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
}

void weft__stack_guard_install(void) { pthread_once(&install_once, install); }

int weft__stack_thread_init(void) {
  if (altstack_map) return 0;
  pthread_once(&proc_once, proc_init);
  size_t len = page_size + ALTSTACK_SIZE;
  char *m = map_stack_area(len);
  if (!m) return -ENOMEM;
  /* A guard below the alternate stack too, so that an overflowing handler
   * faults instead of scribbling; a few threads, so the mapping is cheap. */
  if (madvise(m, page_size, MADV_GUARD_INSTALL) != 0) (void)mprotect(m, page_size, PROT_NONE);
  stack_t ss;
  memset(&ss, 0, sizeof ss);
  ss.ss_sp = m + page_size;
  ss.ss_size = ALTSTACK_SIZE;
  if (sigaltstack(&ss, &altstack_prev) != 0) {
    int e = errno;
    munmap(m, len);
    return -e;
  }
  altstack_map = m;
  return 0;
}

void weft__stack_thread_fini(void) {
  if (!altstack_map) return;
  stack_t ss = altstack_prev; /* a sanitizer's, or none */
  if (ss.ss_flags & SS_DISABLE) {
    memset(&ss, 0, sizeof ss);
    ss.ss_flags = SS_DISABLE;
  }
  ss.ss_flags &= SS_DISABLE; /* SS_ONSTACK is reported, never set */
  sigaltstack(&ss, NULL);
  munmap(altstack_map, page_size + ALTSTACK_SIZE);
  altstack_map = NULL;
}
