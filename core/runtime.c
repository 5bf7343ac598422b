/* core/runtime.c: configuration, start, weft_run, the explicit runtime API
 * and shutdown (the numbered steps are in runtime.h).
 *
 * Start: the workers are created one thread each; each sets up its own
 * reactor on its own thread (io_uring's SINGLE_ISSUER makes the creating
 * thread the ring's only submitter) and reports through a start barrier, so
 * that weft_runtime_new returns the first reactor error instead of a runtime
 * with a dead worker.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <weft/core.h>
#include <weft/io.h>

#include "core/alloc.h"
#include "core/runtime.h"
#include "io/readiness.h"
#include "process/process.h"
#include "process/signal.h"
#include "core/taskext.h"
#include "core/worker.h"
#include "io/reactor.h"

/* ------------------------------------------------------------ configuration */

/* CPUs this process may use: the affinity mask, capped by the cgroup v2
 * quota (cpu.max "QUOTA PERIOD"), rounded up; at least 1, at most
 * WEFT__MAX_WORKERS (a default must not fail on a machine with more CPUs). */
static unsigned default_workers(void) {
  unsigned n = 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    n = (unsigned)CPU_COUNT(&set);
  else {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (unsigned)c : 1;
  }
  FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
  if (f) {
    char quota[32];
    long period = 0;
    if (fscanf(f, "%31s %ld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0) {
      long q = atol(quota);
      unsigned cap = (unsigned)((q + period - 1) / period);
      if (cap >= 1 && cap < n) n = cap;
    }
    fclose(f);
  }
  if (n > WEFT__MAX_WORKERS) n = WEFT__MAX_WORKERS;
  return n ? n : 1;
}

static int bad_config(const char *what) {
  fprintf(stderr, "weft: invalid configuration: %s\n", what);
  return -EINVAL;
}

static long env_long(const char *name, long dflt) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  long v = strtol(s, &end, 10);
  return *end ? dflt : v;
}

/* Fill every field of out with its real value, or return -EINVAL with a
 * message naming the field. */
static int resolve_config(const weft_config *in, weft_config *out) {
  weft_config c = in ? *in : (weft_config){0};
  if (c.workers == 0) {
    long e = env_long("WEFT_WORKERS", 0);
    if (e < 0 || e > WEFT__MAX_WORKERS) return bad_config("WEFT_WORKERS must be between 1 and 126");
    c.workers = e > 0 ? (unsigned)e : default_workers();
  }
  if (c.workers > WEFT__MAX_WORKERS) return bad_config("workers must be between 1 and 126 (0 = one per CPU)");
  if (c.stack_size == 0) c.stack_size = 64 * 1024;
  if (c.stack_size < 16 * 1024 || c.stack_size > ((size_t)1 << 30))
    return bad_config("stack_size must be between 16 KiB and 1 GiB (0 = 64 KiB)");
  long page = sysconf(_SC_PAGESIZE);
  c.stack_size = (c.stack_size + (size_t)page - 1) & ~((size_t)page - 1);
  if (c.ring_entries == 0) c.ring_entries = 256;
  if (c.ring_entries > 32768) return bad_config("ring_entries must be at most 32768 (0 = 256)");
  if (c.blocking_threads == 0) c.blocking_threads = 64;
  if (c.blocking_threads > 4096) return bad_config("blocking_threads must be at most 4096 (0 = 64)");
  if (c.blocking_idle_ns < 0) return bad_config("blocking_idle_ns must not be negative");
  if (c.blocking_idle_ns == 0) c.blocking_idle_ns = 10 * (int64_t)1000000000;
  /* WEFT_DEBUG: the rule of the misuse reports (core/debug.c), so that
   * one value never turns on half of debug mode ("yes" was 0 here, while
   * it turned the misuse reports on; "-1" failed the run) */
  if (c.debug == 0) c.debug = weft__debug_env() ? 1 : 0;
  if (c.debug < 0) return bad_config("debug must not be negative");
  if (c.backend < WEFT_BACKEND_AUTO || c.backend > WEFT_BACKEND_EPOLL)
    return bad_config("backend must be WEFT_BACKEND_AUTO, _URING or _EPOLL");
  if (c.test_migrate == 0) c.test_migrate = (int)env_long("WEFT_TEST_MIGRATE", 0);
  if (c.test_seed == 0) c.test_seed = (uint64_t)env_long("WEFT_TEST_SEED", 0);
  *out = c;
  return 0;
}

/* ------------------------------------------------------------ start */

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;

void weft__runtime_started(weft__runtime *rt, weft__worker *w) {
  (void)w;
  pthread_mutex_lock(&start_lock);
  rt->n_started++;
  pthread_cond_broadcast(&start_cond);
  pthread_mutex_unlock(&start_lock);
}

int64_t weft__runtime_live(weft__runtime *rt) {
  int64_t finished = 0, spawned = 0;
  /* finished first: acquire pairs with the release stores of the counters;
   * a task counted finished here was counted spawned before it ran */
  for (unsigned i = 0; i < rt->nworkers; i++) finished += weft__load(&rt->workers[i]->finished, ACQUIRE);
  for (unsigned i = 0; i < rt->nworkers; i++) spawned += weft__load(&rt->workers[i]->spawned, ACQUIRE);
  spawned += weft__load(&rt->ext_spawned, ACQUIRE);
  return spawned - finished;
}

static void free_runtime(weft__runtime *rt) {
  weft__blocking_fini(&rt->blocking); /* every task has ended: only detached jobs may still run */
  weft__callback_soon_fini(rt);       /* runtime_call_soon callbacks never run */
  if (rt->workers) {
    for (unsigned i = 0; i < rt->nworkers; i++) {
      weft__worker *w = rt->workers[i];
      if (!w) continue;
      weft__reactor_fini(&w->reactor); /* every worker thread has been joined */
      weft__callback_drop_entries(&w->timers); /* pending callbacks never run */
      weft__timer_fini(&w->timers);
      weft__free(w, 0);
    }
    weft__free(rt->workers, sizeof(weft__worker *) * rt->nworkers);
  }
  weft__fdtab_free(rt->fdtab); /* after the reactors: no epoll names a slot any more */
  weft__ext_free_all(rt); /* the records' out-of-line state, before the records */
  while (rt->slabs) { /* the record chunks (core/worker.c): 2 MiB each */
    struct weft__task_slab *s = rt->slabs;
    rt->slabs = *(struct weft__task_slab **)s; /* next is the first field */
    munmap(s, (size_t)2 << 20);
  }
  weft__stack_shared_fini(&rt->stacks);
  weft__inject_destroy(&rt->inject);
  weft__idle_fini(&rt->idle);
  pthread_mutex_destroy(&rt->arena_lock);
  weft__free(rt, sizeof *rt);
}

static bool timer_live_fn(const weft__timer_entry *e);

static void stop_workers(weft__runtime *rt, unsigned started) {
  /* release: pairs with the workers' acquire load of stop */
  weft__store(&rt->stop, 1, RELEASE);
  weft__idle_unpark_all(rt);
  for (unsigned i = 0; i < started; i++) pthread_join(rt->workers[i]->thread, NULL);
}

int weft_runtime_new(weft_runtime **out, const weft_config *cfg) {
  if (!out) return -EINVAL;
  *out = NULL;
  if (weft__worker_self()) {
    weft__debug_misuse("weft_runtime_new (or weft_run) called from a task");
    return -EINVAL;
  }
  weft_config c;
  int rc = resolve_config(cfg, &c);
  if (rc) return rc;
  /* as Python at startup: a write to a pipe (or socket) whose reader is
   * gone returns -EPIPE instead of killing the process (io.h) */
  weft__process_ignore_sigpipe();
  int probe_err = 0;
  int backend = weft__backend_resolve(c.backend, &probe_err);
  if (backend < 0) return backend;

  weft__runtime *rt = weft__zalloc(sizeof *rt);
  if (!rt) return -ENOMEM;
  rt->cfg = c;
  rt->nworkers = c.workers;
  rt->backend = backend;
  rt->debug = c.debug;
  rt->migrate = c.test_migrate;
  {
    /* adaptive: the lock is held for an O(1) magazine trade; spinning
     * briefly keeps a spawner and its consumers out of the kernel */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&rt->arena_lock, &ma);
    pthread_mutexattr_destroy(&ma);
  }
  weft__inject_init(&rt->inject);
  weft__spin_init(&rt->soon_lock);
  if ((rc = weft__idle_init(&rt->idle, c.workers)) < 0) {
    weft__inject_destroy(&rt->inject);
    pthread_mutex_destroy(&rt->arena_lock);
    weft__free(rt, sizeof *rt);
    return rc;
  }
  if ((rc = weft__stack_shared_init(&rt->stacks, c.stack_size)) < 0) {
    weft__idle_fini(&rt->idle);
    weft__inject_destroy(&rt->inject);
    pthread_mutex_destroy(&rt->arena_lock);
    weft__free(rt, sizeof *rt);
    return rc;
  }
  if ((rc = weft__blocking_init(&rt->blocking, c.blocking_threads, c.blocking_idle_ns)) < 0) {
    weft__stack_shared_fini(&rt->stacks);
    weft__idle_fini(&rt->idle);
    weft__inject_destroy(&rt->inject);
    pthread_mutex_destroy(&rt->arena_lock);
    weft__free(rt, sizeof *rt);
    return rc;
  }
  rt->stacks.canary = c.debug > 0; /* see core/stack.h, "Overflow" */
  if (rt->migrate) {
    rt->seed = c.test_seed ? c.test_seed : (uint64_t)weft_now_ns();
    fprintf(stderr, "weft: test mode: tasks migrate at every suspension; seed %llu (WEFT_TEST_SEED=%llu replays)\n",
            (unsigned long long)rt->seed, (unsigned long long)rt->seed);
  } else {
    rt->seed = c.test_seed ? c.test_seed : 0x2545f4914f6cdd1dull;
  }
  weft__stack_guard_install();

  if (backend == WEFT_BACKEND_EPOLL && !(rt->fdtab = weft__fdtab_new())) {
    free_runtime(rt);
    return -ENOMEM;
  }
  rt->workers = weft__zalloc(sizeof(weft__worker *) * c.workers);
  if (!rt->workers) {
    free_runtime(rt);
    return -ENOMEM;
  }
  for (unsigned i = 0; i < c.workers; i++) {
    weft__worker *w = weft__alloc_aligned(WEFT_CACHELINE, sizeof *w);
    if (!w) {
      free_runtime(rt);
      return -ENOMEM;
    }
    memset(w, 0, sizeof *w);
    w->reactor.wake_fd = -1; /* not set up until its thread starts (reactor_fini checks) */
    rt->workers[i] = w;
    w->rt = rt;
    w->id = (int)i;
    w->rng = (rt->seed ^ (0x9e3779b97f4a7c15ull * (i + 1))) | 1;
    uint32_t cap = WEFT_DEQUE_CAP;
#ifdef WEFT_TEST_HOOKS
    long tc = env_long("WEFT_TEST_DEQUE_CAP", 0); /* shrink the deque so overflow paths run */
    if (tc >= 2 && tc <= WEFT_DEQUE_CAP && (tc & (tc - 1)) == 0) cap = (uint32_t)tc;
#endif
    weft__deque_init(&w->deque, cap);
    weft__inbox_init(&w->inbox);
    weft__stack_pool_init(&w->stacks, &rt->stacks);
    weft__timer_init(&w->timers, timer_live_fn);
  }

  unsigned started = 0;
  for (; started < c.workers; started++) {
    weft__worker *w = rt->workers[started];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int e = pthread_create(&w->thread, &attr, weft__worker_main, w);
    pthread_attr_destroy(&attr);
    if (e) {
      rc = -e;
      break;
    }
  }
  pthread_mutex_lock(&start_lock);
  while (rt->n_started < started) pthread_cond_wait(&start_cond, &start_lock);
  pthread_mutex_unlock(&start_lock);
  for (unsigned i = 0; i < started && rc == 0; i++)
    if (rt->workers[i]->start_error) rc = rt->workers[i]->start_error;
  if (rc) {
    stop_workers(rt, started);
    free_runtime(rt);
    return rc;
  }
  static _Atomic int reported; /* relaxed: only decides who prints once */
  if (!weft__xchg(&reported, 1, RELAXED))
    fprintf(stderr, "weft: backend %s%s\n", weft_backend_name(backend),
            probe_err ? " (io_uring unavailable here)" : "");
  if (rt->debug && weft__debug_start(rt) < 0) rt->debug = 0;
  *out = rt;
  return 0;
}

/* ------------------------------------------------------------ submit, wait */

#ifdef WEFT_TEST_HOOKS
void (*weft__test_submit_hook)(void); /* tests: called between a submission's check and its spawn */
void (*weft__test_park_hook)(void);   /* tests: called by a worker about to park */
void (*weft__test_wait_hook)(void);   /* tests: called by a thread's wait once its task is done */
#endif

int weft_runtime_submit(weft_runtime *rt, weft_fn fn, void *arg, weft_task *out) {
  if (!rt || !fn) return -EINVAL;
  /* seq_cst, the increment and the load: a Dekker pair with shutdown's
   * store of stopping and its load of submitting (seq_cst both): either
   * this submission sees stopping, or shutdown sees it in flight and waits
   * until its task is spawned (and counted as live). Checking stopping
   * alone let a submission spawn into a runtime already freed (ASan: a
   * use after free in carve_records, 2 runs in 3 of
   * submissions_racing_a_shutdown). */
  weft__fetch_add(&rt->submitting, 1, SEQ_CST);
  int rc = -ESHUTDOWN;
  if (!weft__load(&rt->stopping, SEQ_CST)) {
#ifdef WEFT_TEST_HOOKS
    if (weft__test_submit_hook) weft__test_submit_hook(); /* a test holds a submission here */
#endif
    rc = weft__spawn_external(rt, fn, arg, out);
  }
  /* release: pairs with shutdown's load: the spawn's counts are visible */
  weft__fetch_sub(&rt->submitting, 1, RELEASE);
  return rc;
}

/* A thread blocked in weft_runtime_wait. Its done node lives here, on the
 * waiting thread's stack (`keep`: the finisher does not free it, and it
 * copies what it needs from the node under the task's done lock, before
 * calling wake_thread), so waiting allocates nothing and cannot fail with
 * ENOMEM. (It allocated through weft_task_add_done_callback before: under
 * the tests' allocation-failure injection that failure could land here, on
 * weft_run's thread, which then shut the runtime down and cancelled the
 * main task that was still running.) */
typedef struct thread_waiter {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
  weft__done_node node;
} thread_waiter;

static void wake_thread(weft_task t, void *arg) {
  (void)t;
  thread_waiter *tw = arg;
  pthread_mutex_lock(&tw->lock);
  tw->done = true;
  pthread_cond_signal(&tw->cond);
  pthread_mutex_unlock(&tw->lock);
}

/* weft_runtime_wait, with rt->waiting counted by the caller. */
static int wait_counted(weft_runtime *rt, weft_task t) {
  (void)rt;
  weft__task *rec;
  int rc = weft__task_ref(t, &rec);
  if (rc) return rc;
  thread_waiter tw = {.done = false};
  pthread_mutex_init(&tw.lock, NULL);
  pthread_cond_init(&tw.cond, NULL);
  tw.node = (weft__done_node){.cb = wake_thread, .cb_arg = &tw, .keep = true};
  if (weft__task_subscribe(rec, &tw.node) == 0) { /* linked: wait for wake_thread */
    pthread_mutex_lock(&tw.lock);
    while (!tw.done) pthread_cond_wait(&tw.cond, &tw.lock);
    pthread_mutex_unlock(&tw.lock);
  }
#ifdef WEFT_TEST_HOOKS
  if (weft__test_wait_hook) weft__test_wait_hook(); /* a test holds the waiter here */
#endif
  weft__task_unref(rec);
  rc = weft_task_status(t);
  weft_task_release(t);
  pthread_cond_destroy(&tw.cond);
  pthread_mutex_destroy(&tw.lock);
  return rc;
}

/* A thread blocked here while a shutdown cancels its task wakes once the
 * task is done, after shutdown saw no live task: shutdown also waits for
 * `waiting` to drop to zero before it frees anything, since the release of
 * the handle recycles the record into the runtime's arena (before, it
 * freed the runtime under that release: test_runtime
 * a_thread_waiting_through_a_shutdown_is_waited_for). */
int weft_runtime_wait(weft_runtime *rt, weft_task t) {
  if (!rt) return -EINVAL;
  if (weft__worker_self()) {
    weft__debug_misuse("weft_runtime_wait called from a task (it blocks the thread): use weft_join");
    return -EINVAL;
  }
  /* relaxed: the caller began this wait before it called shutdown (the
   * contract), which orders the increment before shutdown's load */
  weft__fetch_add(&rt->waiting, 1, RELAXED);
  int rc = wait_counted(rt, t);
  /* release: pairs with shutdown's acquire load of waiting: this thread's
   * last use of the runtime comes before free_runtime */
  weft__fetch_sub(&rt->waiting, 1, RELEASE);
  return rc;
}

int weft_runtime_call(weft_runtime *rt, weft_fn fn, void *arg) {
  if (!rt || !fn) return -EINVAL;
  if (weft__worker_self()) {
    weft__debug_misuse("weft_runtime_call called from a task (it blocks the thread): use weft_join");
    return -EINVAL;
  }
  /* counted before the submission: a submission that is accepted is seen
   * by shutdown's step 1 (the submitting pair), which then comes after this
   * increment, so a shutdown racing this call waits for the wait too */
  weft__fetch_add(&rt->waiting, 1, RELAXED);
  weft_task t;
  int rc = weft_runtime_submit(rt, fn, arg, &t);
  if (rc == 0) rc = wait_counted(rt, t);
  /* release: pairs with shutdown's acquire load of waiting (as in wait) */
  weft__fetch_sub(&rt->waiting, 1, RELEASE);
  return rc;
}

int weft_runtime_backend(const weft_runtime *rt) { return rt ? rt->backend : -EINVAL; }

int weft_backend(void) {
  weft__worker *w = weft__worker_self();
  return w ? w->rt->backend : -EINVAL;
}

const char *weft_backend_name(int backend) {
  return backend == WEFT_BACKEND_URING ? "io_uring" : backend == WEFT_BACKEND_EPOLL ? "epoll" : "unknown";
}

/* ------------------------------------------------------------ shutdown */

static bool timer_live_fn(const weft__timer_entry *e) {
  if (e->kind == WEFT__TIMER_SCOPE) return weft__timeout_entry_live(e->task, e->seq);
  if (e->kind == WEFT__TIMER_CALLBACK) return weft__callback_entry_live(e->task);
  weft__task *t = e->task;
  uint64_t ws = weft__load(&t->ws, RELAXED); /* relaxed: a hint for compaction; wake re-checks */
  uint32_t st = WEFT__WS_STATE(ws);
  return WEFT__WS_SEQ(ws) == e->seq && (st == WEFT__TS_WAITING || st == WEFT__TS_PARKED);
}

/* The incarnations (task ids) that shutdown cancelled already: each task is
 * cancelled once, as asyncio.run's _cancel_all_tasks does, so that a task
 * may clean up with suspending calls (kill its child and wait for it);
 * later rounds cancel only the tasks spawned meanwhile. An open-addressing
 * set of id + 1; without memory every live task is cancelled again. */
typedef struct idset {
  uint64_t *v;
  size_t cap, n;
  bool failed;
} idset;

static bool idset_put(uint64_t *v, size_t cap, uint64_t key) {
  size_t m = cap - 1, i = (size_t)(key * 0x9E3779B97F4A7C15ull) & m;
  while (v[i]) {
    if (v[i] == key) return false;
    i = (i + 1) & m;
  }
  v[i] = key;
  return true;
}

static bool idset_has(const idset *s, uint64_t key) {
  if (!s->cap) return false;
  size_t m = s->cap - 1, i = (size_t)(key * 0x9E3779B97F4A7C15ull) & m;
  for (; s->v[i]; i = (i + 1) & m)
    if (s->v[i] == key) return true;
  return false;
}

static void idset_add(idset *s, uint64_t key) {
  if (s->failed) return;
  if ((s->n + 1) * 2 > s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 1024;
    uint64_t *nv = weft__zalloc(nc * sizeof *nv);
    if (!nv) {
      s->failed = true;
      return;
    }
    for (size_t i = 0; i < s->cap; i++)
      if (s->v[i]) idset_put(nv, nc, s->v[i]);
    weft__free(s->v, s->cap * sizeof *s->v);
    s->v = nv;
    s->cap = nc;
  }
  if (idset_put(s->v, s->cap, key)) s->n++;
}

static void cancel_all(weft__runtime *rt, idset *done) {
  /* acquire: pairs with the release push of records in the arena */
  for (weft__task *t = weft__load(&rt->all_tasks, ACQUIRE); t; t = t->arena_next) {
    if (!weft__load(&t->alive, RELAXED)) continue;
    /* acquire: pairs with the spawn's release of ref, after id was set: the
     * id read next is this generation's or a later one's */
    uint64_t r = weft__load(&t->ref, ACQUIRE);
    uint64_t key = weft__load(&t->id, RELAXED) + 1;
    if (!done->failed && idset_has(done, key)) continue; /* cancelled once already */
    weft_task h = {(struct weft_task_rec *)t, r >> 32};
    /* validates the generation; done tasks return 0. 1: the task had not
     * ended, so it was not recycled and key is its own id */
    if (weft_cancel(h) == 1) idset_add(done, key);
  }
}

int weft_runtime_shutdown(weft_runtime *rt) {
  if (!rt) return -EINVAL;
  weft__worker *self = weft__worker_self();
  if (self && self->rt == rt) {
    weft__debug_misuse("weft_runtime_shutdown called from one of its own tasks");
    return -EINVAL;
  }
  if (weft__blocking_on_pool_thread(&rt->blocking)) {
    /* step 2 would wait for the task that waits for this call, and step 4
     * for this thread to leave the pool: it never returned (even with
     * WEFT_TO_THREAD_DETACH) */
    weft__debug_misuse("weft_runtime_shutdown called from its own blocking pool (a weft_to_thread function)");
    return -EINVAL;
  }
  /* step 1. seq_cst, the store and the loads: the Dekker pair with
   * weft_runtime_submit (see there) */
  weft__store(&rt->stopping, 1, SEQ_CST);
  while (weft__load(&rt->submitting, SEQ_CST)) sched_yield(); /* a spawn in flight: a few microseconds */
  if (rt->debug) weft__debug_report_alive(rt);
  /* step 2 */
  long wait_ns = 20000;
  idset cancelled = {0};
  while (weft__runtime_live(rt) > 0) {
    cancel_all(rt, &cancelled);
    struct timespec ts = {0, wait_ns};
    nanosleep(&ts, NULL);
    if (wait_ns < 2000000) wait_ns *= 2;
  }
  weft__free(cancelled.v, cancelled.cap * sizeof *cancelled.v);
  /* acquire: pairs with the release decrement at the end of
   * weft_runtime_wait/_call: those threads are done with the runtime. Their
   * tasks are done, so they only have their handle's release left. */
  while (weft__load(&rt->waiting, ACQUIRE)) sched_yield();
  weft__signal_runtime_end(rt); /* the signal watches never removed (their tasks have ended) */
  if (rt->debug) weft__debug_stop(rt);
  /* step 3 */
  stop_workers(rt, rt->nworkers);
  /* step 4 */
  free_runtime(rt);
  return 0;
}

int weft_run(weft_fn main, void *arg, const weft_config *cfg) {
  if (!main) return -EINVAL;
  weft_runtime *rt;
  int rc = weft_runtime_new(&rt, cfg);
  if (rc) return rc;
  /* asyncio.run's KeyboardInterrupt: the first SIGINT cancels main
   * (process/signal.c; weft/process.h says when). The watch exists before
   * main starts, so main never sees its descriptor appear. */
  weft__run_sigint si = {0};
  bool watching = weft__run_sigint_wanted() && weft_runtime_call(rt, weft__run_sigint_begin, &si) == 0;
  weft_task t;
  rc = weft_runtime_submit(rt, main, arg, &t);
  if (rc == 0) {
    if (watching) weft__run_sigint_arm(&si, t);
    rc = weft_runtime_wait(rt, t);
  }
  if (watching) {
    weft_runtime_call(rt, weft__run_sigint_end, &si);
    /* relaxed: the end call joined the watch's task, and arm ran here */
    if (rc == -ECANCELED && weft__load(&si.interrupted, RELAXED)) rc = -EINTR;
  }
  weft_runtime_shutdown(rt);
  return rc;
}
