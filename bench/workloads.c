/* bench/workloads.c: weft's implementation of the task workloads of
 * BENCHMARKS.md, one program for all of them:
 *
 *     weft_bench WORKLOAD [key=value ...]
 *
 * Each workload is one function, run as the main task of weft_run(); the
 * table `workloads` maps names to functions, units and parameters (with
 * their defaults, in BENCHMARKS.md's order). Semantics follow the Go peer
 * (../shared/peers/go/main.go) workload by workload, so that the figures can
 * be compared as ratios. The last line printed is the JSON line of
 * BENCHMARKS.md, in the Go peer's format.
 *
 * Only the public API is used: this program links libweft.so as a user's
 * program would. The work is checked (counters, values, the fib result);
 * a failed check prints "weft_bench: ERROR: ..." on stderr and exits 1; a
 * bad command line prints the usage and exits 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <weft/core.h>
#include <weft/io.h>
#include <weft/process.h>
#include <weft/sync.h>

#define MAX_PARAMS 4

typedef struct param {
  const char *key;
  long def;
  long min; /* smallest accepted value */
} param;

typedef struct bench bench;

typedef struct workload {
  const char *name;
  const char *unit;
  int (*run)(bench *b); /* called as the main task; 0, or fail(...) */
  param params[MAX_PARAMS]; /* in the table's order; key NULL ends the list */
} workload;

struct bench {
  const workload *w;
  long p[MAX_PARAMS]; /* the parameters' values, indexed as w->params */
  int workers;        /* weft_worker_count(), read in the main task */
  double value;
  double wall_s;
  char extra[128];    /* extra JSON members, each starting with ',' */
  char error[256];    /* set by fail() */
};

static bench B;

/* Record an error for main() to print; returns -1 for the caller to return. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(B.error, sizeof B.error, fmt, ap);
  va_end(ap);
  return -1;
}

static double seconds_since(int64_t t0_ns) { return (double)(weft_now_ns() - t0_ns) / 1e9; }

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

/* Current resident set size in bytes, from /proc/self/statm (as the peers). */
static long current_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, resident = -1;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
  }
  return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

/* Peak resident set size in KiB: VmHWM from /proc/self/status. */
static long peak_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* ------------------------------------------------------------ spawn_many */

static struct {
  _Alignas(64) atomic_long counter; /* alone on its line: every task adds to it */
  _Alignas(64) long n;
  weft_event done;
} sm;

static int spawn_many_task(void *arg) {
  (void)arg;
  /* acq_rel: the last adder sees every other task's add before it sets the event */
  if (atomic_fetch_add_explicit(&sm.counter, 1, memory_order_acq_rel) + 1 == sm.n) weft_event_set(&sm.done);
  return 0;
}

/* The main task is the spawner: n detached tasks, then it waits for the last. */
static int spawn_many(bench *b) {
  sm.n = b->p[0];
  const long n = sm.n; /* a local: the loop must not re-read a line that the
                        * tasks' adds keep taking away (it did: a quarter of
                        * the spawner's time at 16 workers) */
  int64_t t0 = weft_now_ns();
  for (long i = 0; i < n; i++) {
    int rc = weft_spawn_detached(spawn_many_task, NULL);
    if (rc < 0) return fail("spawn_many: weft_spawn_detached: %s", strerror(-rc));
  }
  weft_event_wait(&sm.done);
  b->wall_s = seconds_since(t0);
  long c = atomic_load(&sm.counter);
  if (c != sm.n) return fail("spawn_many counter %ld != %ld", c, sm.n);
  b->value = (double)sm.n / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ helpers: join many */

/* Spawn `count` tasks running fn(arg), join them all and release the handles. */
static int spawn_and_join(long count, weft_fn fn, void *(*arg_of)(long i), const char *what) {
  weft_task *t = calloc((size_t)count, sizeof *t);
  if (!t) return fail("%s: out of memory", what);
  int rc = 0;
  long spawned = 0;
  for (; spawned < count; spawned++) {
    t[spawned] = weft_spawn(fn, arg_of ? arg_of(spawned) : NULL);
    if (weft_task_is_null(t[spawned])) {
      rc = fail("%s: weft_spawn: %s", what, strerror(errno));
      break;
    }
  }
  for (long i = 0; i < spawned && rc < 0; i++) weft_cancel(t[i]); /* a partial set may never finish */
  for (long i = 0; i < spawned; i++) {
    int st = weft_join(t[i]);
    if (st < 0 && rc == 0) rc = fail("%s: task %ld ended with %s", what, i, strerror(-st));
    weft_task_release(t[i]);
  }
  free(t);
  return rc;
}

/* ------------------------------------------------------------ yield_many */

static struct {
  atomic_long total;
  long yields;
} ym;

static int yield_many_task(void *arg) {
  (void)arg;
  long local = 0;
  for (long i = 0; i < ym.yields; i++) {
    weft_yield();
    local++;
  }
  atomic_fetch_add_explicit(&ym.total, local, memory_order_relaxed); /* read after the joins */
  return 0;
}

static int yield_many(bench *b) {
  long tasks = b->p[0];
  ym.yields = b->p[1];
  int64_t t0 = weft_now_ns();
  if (spawn_and_join(tasks, yield_many_task, NULL, "yield_many") < 0) return -1;
  b->wall_s = seconds_since(t0);
  long total = atomic_load(&ym.total);
  if (total != tasks * ym.yields) return fail("yield_many total %ld != %ld", total, tasks * ym.yields);
  b->value = (double)total / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ ping_pong */

static struct {
  weft_queue *q; /* 2 per pair: q[2p] ping, q[2p+1] pong; each of maxsize 1 */
  long rounds;
  atomic_long trips;
  atomic_long bad;
} pp;

static void *pair_index(long i) { return (void *)(intptr_t)i; }

/* Task 2p is pair p's pinger, task 2p+1 its ponger. */
static int ping_pong_task(void *arg) {
  long i = (long)(intptr_t)arg;
  weft_queue *ping = &pp.q[i & ~1L], *pong = &pp.q[i | 1];
  if ((i & 1) == 0) {
    long n = 0, bad = 0;
    for (long r = 0; r < pp.rounds; r++) {
      void *v;
      if (weft_queue_put(ping, (void *)(intptr_t)r) < 0 || weft_queue_get(pong, &v) < 0) return -ECANCELED;
      if ((long)(intptr_t)v != r + 1) bad++;
      n++;
    }
    atomic_fetch_add(&pp.trips, n);
    atomic_fetch_add(&pp.bad, bad);
  } else {
    for (long r = 0; r < pp.rounds; r++) {
      void *v;
      if (weft_queue_get(ping, &v) < 0 || weft_queue_put(pong, (void *)((intptr_t)v + 1)) < 0) return -ECANCELED;
    }
  }
  return 0;
}

static int ping_pong(bench *b) {
  long pairs = b->p[0];
  pp.rounds = b->p[1];
  pp.q = calloc((size_t)(2 * pairs), sizeof *pp.q);
  if (!pp.q) return fail("ping_pong: out of memory");
  for (long i = 0; i < 2 * pairs; i++)
    if (weft_queue_init(&pp.q[i], 1) < 0) return fail("ping_pong: weft_queue_init failed");
  int64_t t0 = weft_now_ns();
  int rc = spawn_and_join(2 * pairs, ping_pong_task, pair_index, "ping_pong");
  b->wall_s = seconds_since(t0);
  for (long i = 0; i < 2 * pairs; i++) weft_queue_destroy(&pp.q[i]);
  free(pp.q);
  if (rc < 0) return rc;
  long trips = atomic_load(&pp.trips), bad = atomic_load(&pp.bad);
  if (bad != 0 || trips != pairs * pp.rounds)
    return fail("ping_pong trips %ld (want %ld), bad replies %ld", trips, pairs * pp.rounds, bad);
  b->value = (double)trips / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ queue_throughput */

static struct {
  weft_queue *q; /* one per pair, of maxsize */
  long items;    /* per pair */
  atomic_long got;
  atomic_long bad;
} qt;

/* Task 2p is pair p's producer (puts 1..items), task 2p+1 its consumer
 * (gets them, checking the order). */
static int queue_throughput_task(void *arg) {
  long i = (long)(intptr_t)arg;
  weft_queue *q = &qt.q[i / 2];
  if ((i & 1) == 0) {
    for (long k = 1; k <= qt.items; k++)
      if (weft_queue_put(q, (void *)(intptr_t)k) < 0) return -ECANCELED;
    return 0;
  }
  long bad = 0;
  for (long k = 1; k <= qt.items; k++) {
    void *v;
    if (weft_queue_get(q, &v) < 0) return -ECANCELED;
    bad += (long)(intptr_t)v != k;
  }
  atomic_fetch_add(&qt.got, qt.items);
  atomic_fetch_add(&qt.bad, bad);
  return 0;
}

/* `pairs` producer/consumer pairs, each moving `items` items through its
 * own queue of `maxsize` (the Go peer, bench/peers/go_queue: a buffered
 * channel of that capacity). */
static int queue_throughput(bench *b) {
  long pairs = b->p[0], maxsize = b->p[1];
  qt.items = b->p[2];
  qt.q = calloc((size_t)pairs, sizeof *qt.q);
  if (!qt.q) return fail("queue_throughput: out of memory");
  for (long i = 0; i < pairs; i++)
    if (weft_queue_init(&qt.q[i], (size_t)maxsize) < 0) return fail("queue_throughput: weft_queue_init failed");
  int64_t t0 = weft_now_ns();
  int rc = spawn_and_join(2 * pairs, queue_throughput_task, pair_index, "queue_throughput");
  b->wall_s = seconds_since(t0);
  for (long i = 0; i < pairs; i++) weft_queue_destroy(&qt.q[i]);
  free(qt.q);
  if (rc < 0) return rc;
  long got = atomic_load(&qt.got), bad = atomic_load(&qt.bad);
  if (bad != 0 || got != pairs * qt.items)
    return fail("queue_throughput: %ld items got (want %ld), %ld out of order", got, pairs * qt.items, bad);
  b->value = (double)got / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ chained_spawn */

static struct {
  long depth;
  atomic_long last;
  atomic_int spawn_error;
  weft_event done;
} cs;

/* Step i spawns step i+1 (detached) and ends; step `depth` signals the main task. */
static int chain_step(void *arg) {
  long i = (long)(intptr_t)arg;
  if (i == cs.depth) {
    atomic_store(&cs.last, i);
    weft_event_set(&cs.done);
    return 0;
  }
  int rc = weft_spawn_detached(chain_step, (void *)(intptr_t)(i + 1));
  if (rc < 0) {
    atomic_store(&cs.last, i);
    atomic_store(&cs.spawn_error, -rc);
    weft_event_set(&cs.done);
  }
  return 0;
}

static int chained_spawn(bench *b) {
  cs.depth = b->p[0];
  int64_t t0 = weft_now_ns();
  int rc = weft_spawn_detached(chain_step, (void *)(intptr_t)1);
  if (rc < 0) return fail("chained_spawn: weft_spawn_detached: %s", strerror(-rc));
  weft_event_wait(&cs.done);
  b->wall_s = seconds_since(t0);
  if (atomic_load(&cs.spawn_error))
    return fail("chained_spawn: weft_spawn_detached: %s", strerror(atomic_load(&cs.spawn_error)));
  long last = atomic_load(&cs.last);
  if (last != cs.depth) return fail("chained_spawn ended at %ld, want %ld", last, cs.depth);
  b->value = (double)cs.depth / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ fib */

static long fib_cutoff;

static long fib_plain(long k) { return k < 2 ? k : fib_plain(k - 1) + fib_plain(k - 2); }

/* fib(k) as a task: the result is the task's status (fib(46) still fits an
 * int); a negative status is an error, passed up. */
static int fib_task(void *arg) {
  long k = (long)(intptr_t)arg;
  if (k < 2) return (int)k;
  if (k < fib_cutoff) return (int)fib_plain(k);
  weft_task a = weft_spawn(fib_task, (void *)(intptr_t)(k - 1));
  if (weft_task_is_null(a)) return -errno;
  weft_task b = weft_spawn(fib_task, (void *)(intptr_t)(k - 2));
  int err = weft_task_is_null(b) ? -errno : 0;
  int ra = weft_join(a);
  weft_task_release(a);
  if (err) return err;
  int rb = weft_join(b);
  weft_task_release(b);
  if (ra < 0) return ra;
  if (rb < 0) return rb;
  return ra + rb;
}

/* The number of tasks fib_task(k) creates, counting the root. */
static long fib_task_count(long k, long cutoff) {
  long c_2 = 1, c_1 = 1; /* c[i-2], c[i-1] */
  if (k < 2) return 1;
  for (long i = 2; i <= k; i++) {
    long c = i < cutoff ? 1 : 1 + c_1 + c_2;
    c_2 = c_1;
    c_1 = c;
  }
  return c_1;
}

static long fib_expected(long k) {
  long a = 0, b = 1;
  for (long i = 0; i < k; i++) {
    long t = a + b;
    a = b;
    b = t;
  }
  return a;
}

static int fib(bench *b) {
  long k = b->p[0];
  fib_cutoff = b->p[1];
  if (k > 46) return fail("fib: k=%ld is too large (at most 46)", k);
  int64_t t0 = weft_now_ns();
  weft_task root = weft_spawn(fib_task, (void *)(intptr_t)k);
  if (weft_task_is_null(root)) return fail("fib: weft_spawn: %s", strerror(errno));
  int v = weft_join(root);
  weft_task_release(root);
  b->wall_s = seconds_since(t0);
  if (v < 0) return fail("fib: a task failed: %s", strerror(-v));
  if (v != fib_expected(k)) return fail("fib(%ld) = %d, want %ld", k, v, fib_expected(k));
  long tasks = fib_task_count(k, fib_cutoff);
  b->value = (double)tasks / b->wall_s;
  snprintf(b->extra, sizeof b->extra, ",\"tasks\":%ld", tasks);
  return 0;
}

/* ------------------------------------------------------------ timers */

static struct {
  int64_t sleep_ns;
  long times;
  atomic_long sleeps;
} tm;

static int timers_task(void *arg) {
  (void)arg;
  for (long i = 0; i < tm.times; i++) {
    int rc = weft_sleep_ns(tm.sleep_ns);
    if (rc < 0) return rc;
  }
  atomic_fetch_add_explicit(&tm.sleeps, tm.times, memory_order_relaxed); /* read after the joins */
  return 0;
}

static int timers(bench *b) {
  long tasks = b->p[0], ms = b->p[1];
  tm.times = b->p[2];
  tm.sleep_ns = ms * 1000000L;
  double cpu0 = cpu_seconds();
  int64_t t0 = weft_now_ns();
  if (spawn_and_join(tasks, timers_task, NULL, "timers") < 0) return -1;
  b->wall_s = seconds_since(t0);
  double cpu = cpu_seconds() - cpu0;
  long sleeps = atomic_load(&tm.sleeps);
  if (sleeps != tasks * tm.times) return fail("timers: %ld sleeps, want %ld", sleeps, tasks * tm.times);
  double ideal = (double)(ms * tm.times) / 1000;
  if (b->wall_s < ideal) return fail("timers: wall %.3fs shorter than ideal %.3fs", b->wall_s, ideal);
  b->value = b->wall_s / ideal;
  snprintf(b->extra, sizeof b->extra, ",\"cpu_s\":%.4f", cpu);
  return 0;
}

/* ------------------------------------------------------------ lock_contention */

static struct {
  weft_lock lock;
  long counter; /* plain: only under the lock */
  long iters;
} lc;

static int lock_contention_task(void *arg) {
  (void)arg;
  const long iters = lc.iters; /* a local, as the Go peer's: the lock's line moves between workers */
  for (long i = 0; i < iters; i++) {
    int rc = weft_lock_acquire(&lc.lock);
    if (rc < 0) return rc;
    lc.counter++;
    weft_lock_release(&lc.lock);
  }
  return 0;
}

/* `tasks` tasks each take the lock `iters` times and add 1 to a plain
 * counter under it (the Go peer: sync.Mutex). overtake=1: the lock in
 * WEFT_LOCK_OVERTAKE mode (Go's protocol); the default is weft_lock_init's
 * FIFO mode, the one BENCHMARKS.md's figure is quoted for. */
static int lock_contention(bench *b) {
  long tasks = b->p[0];
  lc.iters = b->p[1];
  if (b->p[2] != 0 && b->p[2] != 1) return fail("lock_contention: overtake must be 0 or 1");
  weft_lock_init_mode(&lc.lock, b->p[2] ? WEFT_LOCK_OVERTAKE : WEFT_LOCK_FIFO);
  int64_t t0 = weft_now_ns();
  if (spawn_and_join(tasks, lock_contention_task, NULL, "lock_contention") < 0) return -1;
  b->wall_s = seconds_since(t0);
  if (lc.counter != tasks * lc.iters) return fail("lock_contention counter %ld != %ld", lc.counter, tasks * lc.iters);
  if (weft_lock_destroy(&lc.lock) != 0) return fail("lock_contention: the lock is still held or waited for");
  b->value = (double)lc.counter / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ idle_tasks */

static struct {
  long n;
  weft_event ev;       /* the event every task waits on */
  weft_event all_done; /* set by the last task to finish */
  atomic_long started, woken, finished;
} it;

static int idle_task(void *arg) {
  (void)arg;
  atomic_fetch_add(&it.started, 1); /* just before parking */
  if (weft_event_wait(&it.ev) < 0) return -ECANCELED;
  atomic_fetch_add(&it.woken, 1);
  if (atomic_fetch_add(&it.finished, 1) + 1 == it.n) weft_event_set(&it.all_done);
  return 0;
}

/* Detached tasks (no handle array to count in the RSS), counted in and out. */
static int idle_tasks(bench *b) {
  it.n = b->p[0];
  long base = current_rss_bytes();
  int64_t t0 = weft_now_ns();
  for (long i = 0; i < it.n; i++) {
    int rc = weft_spawn_detached(idle_task, NULL);
    if (rc < 0) return fail("idle_tasks: weft_spawn_detached: %s", strerror(-rc));
  }
  while (atomic_load(&it.started) < it.n) weft_sleep_ns(1000000);
  weft_sleep_ns(50000000); /* let the last ones park on the event, as the peers do */
  if (atomic_load(&it.woken) != 0) return fail("idle_tasks: tasks woke before the event was set");
  long suspended = current_rss_bytes();
  if (base < 0 || suspended < 0) return fail("idle_tasks: cannot read /proc/self/statm");
  int64_t t1 = weft_now_ns();
  weft_event_set(&it.ev);
  weft_event_wait(&it.all_done);
  double wake_s = seconds_since(t1);
  b->wall_s = seconds_since(t0);
  long woken = atomic_load(&it.woken);
  if (woken != it.n) return fail("idle_tasks: %ld woke, want %ld", woken, it.n);
  b->value = (double)(suspended - base) / (double)it.n;
  snprintf(b->extra, sizeof b->extra, ",\"wake_s\":%.6f", wake_s);
  return 0;
}

/* ------------------------------------------------------------ to_thread */

static struct {
  long calls;          /* in all */
  atomic_long next;    /* calls handed out */
  atomic_long done;    /* calls that returned the right value */
} tt;

static int tt_fn(void *arg) { return (int)(intptr_t)arg + 1; } /* returns at once */

/* One of `concurrency` callers: takes call numbers until all are handed out. */
static int tt_caller(void *arg) {
  (void)arg;
  long ok = 0;
  for (;;) {
    long i = atomic_fetch_add_explicit(&tt.next, 1, memory_order_relaxed); /* a ticket counter */
    if (i >= tt.calls) break;
    int v = (int)(i & 0xffff);
    int rc = weft_to_thread(tt_fn, (void *)(intptr_t)v);
    if (rc < 0) return rc;
    if (rc == v + 1) ok++;
  }
  atomic_fetch_add_explicit(&tt.done, ok, memory_order_relaxed); /* read after the joins */
  return 0;
}

static int to_thread(bench *b) {
  tt.calls = b->p[0];
  long concurrency = b->p[1];
  int64_t t0 = weft_now_ns();
  if (spawn_and_join(concurrency, tt_caller, NULL, "to_thread") < 0) return -1;
  b->wall_s = seconds_since(t0);
  long done = atomic_load(&tt.done);
  if (done != tt.calls) return fail("to_thread: %ld calls returned the right value, want %ld", done, tt.calls);
  b->value = (double)done / b->wall_s;
  return 0;
}

/* ------------------------------------------------------------ spawn_process */

/* `concurrency` tasks each start and reap /bin/true until n children ran,
 * checking every exit status (as ../shared/peers/common/spawn_loop does
 * with posix_spawn + waitpid from threads). Besides the rate, the JSON
 * line gives the latency of the spawn call (weft_process_exec, from the
 * call until the child has exec'd: the part weft controls), 10th/50th/90th
 * percentile in microseconds. With concurrency=1 that is one spawn's own
 * cost (process/README.md compares them); with more, it includes the wait
 * for a CPU among the children already running. */
static struct {
  long n;
  atomic_long next, ok;
  int64_t *exec_ns; /* per ticket */
} sp;

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int sp_task(void *arg) {
  (void)arg;
  char *argv[] = {"/bin/true", NULL};
  long ok = 0;
  long ticket;
  while ((ticket = atomic_fetch_add_explicit(&sp.next, 1, memory_order_relaxed)) < sp.n) { /* a ticket counter */
    weft_process *p;
    int64_t t0 = weft_now_ns();
    int rc = weft_process_exec(&p, "/bin/true", argv, NULL), code = -1;
    sp.exec_ns[ticket] = weft_now_ns() - t0; /* read after the joins */
    if (rc) return rc;
    rc = weft_process_wait(p, &code);
    weft_process_free(p);
    if (rc) return rc;
    if (code == 0) ok++;
  }
  atomic_fetch_add_explicit(&sp.ok, ok, memory_order_relaxed); /* read after the joins */
  return 0;
}

static int spawn_process(bench *b) {
  sp.n = b->p[0];
  sp.exec_ns = calloc((size_t)sp.n, sizeof *sp.exec_ns);
  if (!sp.exec_ns) return fail("spawn_process: out of memory");
  int64_t t0 = weft_now_ns();
  if (spawn_and_join(b->p[1], sp_task, NULL, "spawn_process") < 0) return -1;
  b->wall_s = seconds_since(t0);
  long ok = atomic_load(&sp.ok);
  if (ok != sp.n) return fail("spawn_process: %ld children exited 0, want %ld", ok, sp.n);
  b->value = (double)ok / b->wall_s;
  qsort(sp.exec_ns, (size_t)sp.n, sizeof *sp.exec_ns, cmp_i64);
  snprintf(b->extra, sizeof b->extra, ",\"exec_us_p10\":%.0f,\"exec_us_p50\":%.0f,\"exec_us_p90\":%.0f",
           sp.exec_ns[sp.n / 10] / 1e3, sp.exec_ns[sp.n / 2] / 1e3, sp.exec_ns[sp.n * 9 / 10] / 1e3);
  free(sp.exec_ns);
  return 0;
}

/* ------------------------------------------------------------ file_read */

/* The input file: size_mb MiB in which every aligned 8-byte word holds its
 * own offset (little-endian), as the peers' common/mkfile writes it, so
 * that any block read can be checked; created when missing or too short. */
static const char *fr_path = "/tmp/weft_peer_file.bin";

static struct {
  int fd;
  long per_task, extra, nblocks, block;
  atomic_long total, bad;
} fr;

static int fr_task(void *arg) {
  long t = (long)(intptr_t)arg;
  long mine = fr.per_task + (t < fr.extra ? 1 : 0);
  unsigned char *buf = malloc((size_t)fr.block);
  if (!buf) return -ENOMEM;
  uint64_t x = (uint64_t)t * 0x9E3779B97F4A7C15ull + 12345;
  long bad = 0;
  for (long i = 0; i < mine; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int64_t off = (int64_t)(x % (uint64_t)fr.nblocks) * fr.block;
    ssize_t n = weft_pread_full(fr.fd, buf, (size_t)fr.block, off, NULL); /* as Go's ReadAt: all of it */
    uint64_t first, last;
    memcpy(&first, buf, 8);
    memcpy(&last, buf + fr.block - 8, 8);
    if (n != fr.block || first != (uint64_t)off || last != (uint64_t)(off + fr.block - 8)) bad++;
  }
  free(buf);
  atomic_fetch_add_explicit(&fr.bad, bad, memory_order_relaxed);   /* read after the joins */
  atomic_fetch_add_explicit(&fr.total, mine, memory_order_relaxed);
  return 0;
}

static int file_read(bench *b) {
  long tasks = b->p[0], size_mb = b->p[1], reads = b->p[3];
  fr.block = b->p[2] * 1024;
  fr.nblocks = (size_mb << 20) / fr.block;
  if (fr.nblocks < 1) return fail("file_read: size_mb smaller than one block");
  fr.fd = weft_open(fr_path, O_RDONLY, 0);
  if (fr.fd < 0) return fail("file_read: open %s: %s", fr_path, strerror(-fr.fd));
  fr.per_task = reads / tasks;
  fr.extra = reads % tasks;
  int64_t t0 = weft_now_ns();
  int rc = spawn_and_join(tasks, fr_task, pair_index, "file_read");
  b->wall_s = seconds_since(t0);
  weft_close(fr.fd);
  if (rc < 0) return rc;
  long total = atomic_load(&fr.total), bad = atomic_load(&fr.bad);
  if (bad || total != reads) return fail("file_read: %ld reads (want %ld), %ld bad blocks", total, reads, bad);
  b->value = (double)total * (double)fr.block / 1e9 / b->wall_s;
  return 0;
}

/* Before the runtime starts: make the file if it is missing or short, and
 * read it once so that the page cache is warm. */
static int file_read_prepare(long size_mb) {
  uint64_t want = (uint64_t)size_mb << 20;
  struct stat st;
  if (stat(fr_path, &st) != 0 || (uint64_t)st.st_size < want) {
    FILE *f = fopen(fr_path, "wb");
    if (!f) return -errno;
    static uint64_t chunk[8192];
    for (uint64_t off = 0; off < want; off += sizeof chunk) {
      for (size_t i = 0; i < 8192; i++) chunk[i] = off + 8 * i;
      if (fwrite(chunk, sizeof chunk, 1, f) != 1) {
        fclose(f);
        return -EIO;
      }
    }
    if (fclose(f) != 0) return -EIO;
  }
  int fd = open(fr_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  static char warm[1 << 20];
  while (read(fd, warm, sizeof warm) > 0) {
  }
  close(fd);
  return 0;
}

/* ------------------------------------------------------------ the table */

static const workload workloads[] = {
    {"spawn_many", "tasks/s", spawn_many, {{"n", 1000000, 1}}},
    {"yield_many", "yields/s", yield_many, {{"tasks", 1000, 1}, {"yields", 1000, 1}}},
    {"ping_pong", "roundtrips/s", ping_pong, {{"pairs", 1, 1}, {"rounds", 200000, 1}}},
    {"chained_spawn", "spawns/s", chained_spawn, {{"depth", 1000000, 1}}},
    {"fib", "tasks/s", fib, {{"k", 27, 0}, {"cutoff", 0, 0}}},
    {"timers", "x_ideal", timers, {{"tasks", 100000, 1}, {"ms", 10, 1}, {"times", 10, 1}}},
    {"queue_throughput", "items/s", queue_throughput, {{"pairs", 1, 1}, {"maxsize", 1, 1}, {"items", 1000000, 1}}},
    {"lock_contention", "acquisitions/s", lock_contention, {{"tasks", 64, 1}, {"iters", 20000, 1}, {"overtake", 0, 0}}},
    {"idle_tasks", "bytes/task", idle_tasks, {{"n", 100000, 1}}},
    {"to_thread", "calls/s", to_thread, {{"calls", 100000, 1}, {"concurrency", 64, 1}}},
    {"spawn_process", "processes/s", spawn_process, {{"n", 1000, 1}, {"concurrency", 32, 1}}},
    {"file_read", "GB/s", file_read, {{"tasks", 64, 1}, {"size_mb", 256, 1}, {"block_kb", 64, 1}, {"reads", 200000, 1}}},
};
#define N_WORKLOADS (sizeof workloads / sizeof workloads[0])

static int main_task(void *arg) {
  bench *b = arg;
  b->workers = weft_worker_count();
  return b->w->run(b);
}

static void usage(void) {
  fprintf(stderr, "usage: weft_bench WORKLOAD [key=value ...]   (every workload also takes workers=N; 0 = default)\n");
  for (size_t i = 0; i < N_WORKLOADS; i++) {
    fprintf(stderr, "  %-14s", workloads[i].name);
    for (const param *p = workloads[i].params; p < workloads[i].params + MAX_PARAMS && p->key; p++)
      fprintf(stderr, " %s=%ld", p->key, p->def);
    fputc('\n', stderr);
  }
  exit(2);
}

static bool parse_long(const char *s, long min, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min) return false;
  *out = v;
  return true;
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  for (size_t i = 0; i < N_WORKLOADS; i++)
    if (strcmp(argv[1], workloads[i].name) == 0) B.w = &workloads[i];
  if (!B.w) {
    fprintf(stderr, "weft_bench: unknown workload '%s'\n", argv[1]);
    usage();
  }
  const param *params = B.w->params;
  for (int i = 0; i < MAX_PARAMS; i++) B.p[i] = params[i].def;

  long workers = 0;
  for (int a = 2; a < argc; a++) {
    const char *eq = strchr(argv[a], '=');
    if (!eq) {
      fprintf(stderr, "weft_bench: bad argument '%s' (want key=value)\n", argv[a]);
      usage();
    }
    size_t klen = (size_t)(eq - argv[a]);
    bool ok = false, known = false;
    if (klen == 4 && strncmp(argv[a], "file", 4) == 0 && strcmp(B.w->name, "file_read") == 0) {
      fr_path = eq + 1; /* the one parameter that is not a number */
      continue;
    }
    if (klen == 7 && strncmp(argv[a], "workers", 7) == 0) {
      known = true;
      ok = parse_long(eq + 1, 0, &workers) && workers <= 4096;
    }
    for (int i = 0; i < MAX_PARAMS && params[i].key && !known; i++) {
      if (strlen(params[i].key) == klen && strncmp(argv[a], params[i].key, klen) == 0) {
        known = true;
        ok = parse_long(eq + 1, params[i].min, &B.p[i]);
      }
    }
    if (!known) {
      fprintf(stderr, "weft_bench: %s takes no parameter '%.*s'\n", B.w->name, (int)klen, argv[a]);
      usage();
    }
    if (!ok) {
      fprintf(stderr, "weft_bench: bad value in '%s'\n", argv[a]);
      usage();
    }
  }

  /* Events live outside the tasks and are destroyed after weft_run, when
   * every task (a setter still inside weft_event_set included) has ended. */
  weft_event *events[] = {&sm.done, &cs.done, &it.ev, &it.all_done};
  for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) weft_event_init(events[i]);

  if (B.w->run == file_read) {
    int prc = file_read_prepare(B.p[1]);
    if (prc < 0) {
      fprintf(stderr, "weft_bench: ERROR: file_read: cannot prepare %s: %s\n", fr_path, strerror(-prc));
      return 1;
    }
  }

  weft_config cfg = {0};
  cfg.workers = (unsigned)workers;
  int rc = weft_run(main_task, &B, &cfg);
  for (size_t i = 0; i < sizeof events / sizeof events[0]; i++) weft_event_destroy(events[i]);
  if (rc < 0 || B.error[0]) {
    fprintf(stderr, "weft_bench: ERROR: %s\n", B.error[0] ? B.error : strerror(-rc));
    return 1;
  }

  char pstr[256] = "";
  size_t len = 0;
  for (int i = 0; i < MAX_PARAMS && params[i].key; i++)
    len += (size_t)snprintf(pstr + len, sizeof pstr - len, "%s%s=%ld", i ? " " : "", params[i].key, B.p[i]);
  if (B.w->run == file_read) snprintf(pstr + len, sizeof pstr - len, " file=%s", fr_path);

  printf("{\"workload\":\"%s\",\"system\":\"weft\",\"workers\":%d,\"value\":%.6g,\"unit\":\"%s\","
         "\"wall_s\":%.6f,\"rss_kb\":%ld,\"params\":\"%s\"%s}\n",
         B.w->name, B.workers, B.value, B.w->unit, B.wall_s, peak_rss_kb(), pstr, B.extra);
  return 0;
}
