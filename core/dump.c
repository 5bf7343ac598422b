/* core/dump.c: introspection: what a task waits on, and task dumps
 * (asyncio's all_tasks() + print_stack(), without the stacks: a green
 * task's C stack cannot be unwound from outside it).
 *
 * A dump walks the record arena (every record ever made, type-stable)
 * taking a reference on each live task while it reads it (weft_tasks), so
 * it may run on any thread, the debug monitor's included, while the tasks
 * run: it is a snapshot, each field read with a relaxed load.
 *
 * SIGQUIT (debug mode): the handler only counts the signal; the debug
 * monitor thread of each debug runtime (core/debug.c), which wakes every
 * 20 ms, sees the count change and prints the dump of its runtime on
 * stderr. The handler is installed only if
 * SIGQUIT had its default action (a program's own handler is left alone),
 * and the default is restored when the last debug runtime stops.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <weft/task.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/runtime.h"
#include "core/task.h"

static const char *const waiting_names[WEFT__WAITING_COUNT_] = {
    [WEFT__WAITING_OTHER] = "wait",
    [WEFT__WAITING_JOIN] = "join",
    [WEFT__WAITING_SLEEP] = "sleep",
    [WEFT__WAITING_EVENT] = "event",
    [WEFT__WAITING_QUEUE_GET] = "queue get",
    [WEFT__WAITING_QUEUE_PUT] = "queue put",
    [WEFT__WAITING_FUTURE] = "future",
    [WEFT__WAITING_GATHER] = "gather",
    [WEFT__WAITING_TASKGROUP] = "taskgroup",
    [WEFT__WAITING_IO] = "io",
    [WEFT__WAITING_LOCK] = "lock",
    [WEFT__WAITING_COND] = "condition",
    [WEFT__WAITING_SEM] = "semaphore",
    [WEFT__WAITING_BARRIER] = "barrier",
    [WEFT__WAITING_THREAD] = "to_thread",
};

const char *weft__waiting_on_name(unsigned what) {
  return what < WEFT__WAITING_COUNT_ && waiting_names[what] ? waiting_names[what] : "wait";
}

const char *weft_task_waiting_on(weft_task h) {
  weft__task *t;
  if (weft__task_ref(h, &t)) return "";
  uint32_t st = WEFT__WS_STATE(weft__load(&t->ws, RELAXED)); /* relaxed: a report */
  /* a joiner running its child inline (core/task.c) stays RUNNING in its
   * own word while the child runs or sleeps on its stack: it waits on that
   * join. relaxed: a report */
  const char *s = "";
  if (st == WEFT__TS_PARKED || st == WEFT__TS_WAITING)
    s = weft__waiting_on_name(weft__load(&t->waiting_on, RELAXED));
  else if (st == WEFT__TS_RUNNING && weft__load(&t->inline_child, RELAXED))
    s = weft__waiting_on_name(WEFT__WAITING_JOIN);
  weft__task_unref(t);
  return s;
}

/* One line, formatted on the stack and written with write(2): 0, or the
 * write's error (a descriptor that takes no writes: closed, read-only).
 * Not dprintf: glibc's leaks its buffer when the write fails. */
static int put(int fd, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return -EIO;
  size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, buf + off, len - off);
    if (w > 0)
      off += (size_t)w;
    else if (w < 0 && errno == EINTR)
      continue;
    else
      return w < 0 ? -errno : -EIO;
  }
  return 0;
}

static int dump(weft_runtime *rt, int fd) {
  enum { MAX = 4096 };
  weft_task_info *info = weft__alloc(MAX * sizeof *info);
  if (!info) return -ENOMEM;
  int n = weft_runtime_tasks(rt, info, MAX);
  static const char *states[] = {"runnable", "running", "suspended", "done"};
  int alive = 0;
  for (int i = 0; i < n && i < MAX; i++) alive += info[i].state != WEFT_TASK_DONE;
  /* the live tasks, those not printed one by one included (the listing
   * counts every one, not only those it fills in): the first line says so
   * too (it said the printed ones only) */
  int live = n > MAX ? alive + (n - MAX) : alive;
  int rc = put(fd, "weft: %d live task(s):\n", live);
  for (int i = 0; !rc && i < n && i < MAX; i++) {
    weft_task_info *x = &info[i];
    if (x->state == WEFT_TASK_DONE) continue;
    /* the id (weft/task.h promises it; two tasks may share a name): the
     * record's, unless it ended and was recycled since the listing */
    char id[24] = "-";
    weft__task *t;
    if (!weft__task_ref(x->task, &t)) {
      /* relaxed: set at spawn, before the release that the ref's acquire pairs with */
      snprintf(id, sizeof id, "%llu", (unsigned long long)weft__load(&t->id, RELAXED));
      weft__task_unref(t);
    }
    rc = put(fd, "  #%-6s %-31s %-9s worker %-3d cancelling %d%s%s\n", id, x->name, states[x->state & 3], x->worker,
             x->cancelling, x->waiting_on[0] ? "  waiting on: " : "", x->waiting_on);
  }
  if (!rc && n > MAX) rc = put(fd, "  ... and %d more\n", n - MAX);
  weft__free(info, MAX * sizeof *info);
  if (rc) return rc; /* the caller's descriptor takes no writes: not a dump that went out */
  return live;
}

int weft_runtime_dump(weft_runtime *rt, int fd) {
  if (!rt || fd < 0) return -EINVAL;
  return dump(rt, fd);
}

int weft_tasks_dump(int fd) {
  weft__task *t = weft__task_self();
  if (!t || fd < 0) return -EINVAL;
  return dump(t->rt, fd);
}

/* ------------------------------------------------------------ SIGQUIT */

static _Atomic unsigned sigquit_count; /* bumped by the handler; each monitor dumps on a change */
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static int sig_users;                  /* under sig_lock: debug runtimes using the handler */
static bool sig_installed;             /* under sig_lock */

/* Whether a debug runtime uses the handler (stored under sig_lock, loaded
 * by the handler). A watch (weft/process.h) added over the handler restores
 * it when it goes, perhaps after the last debug runtime stopped: the signal
 * then takes its default action, as it would with no debug runtime.
 * relaxed, every access: it pairs with nothing, as no data hangs on it (a
 * signal racing the last stop takes either way, both right then) */
static _Atomic int sig_active;

static void on_sigquit(int sig) {
  if (!weft__load(&sig_active, RELAXED)) { /* relaxed: see sig_active */
    int saved = errno;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    raise(sig); /* blocked until the handler returns, then the default action */
    errno = saved;
    return;
  }
  /* relaxed: a counter that carries no data; a lock-free RMW is
   * async-signal-safe */
  weft__fetch_add(&sigquit_count, 1, RELAXED);
}

void weft__dump_sigquit_start(void) {
  pthread_mutex_lock(&sig_lock);
  if (sig_users++ == 0) {
    weft__store(&sig_active, 1, RELAXED); /* relaxed: see sig_active */
    struct sigaction old;
    if (sigaction(SIGQUIT, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO)) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = on_sigquit;
      sigemptyset(&sa.sa_mask);
      sa.sa_flags = SA_RESTART;
      sig_installed = sigaction(SIGQUIT, &sa, NULL) == 0;
    }
  }
  pthread_mutex_unlock(&sig_lock);
}

void weft__dump_sigquit_stop(void) {
  pthread_mutex_lock(&sig_lock);
  if (--sig_users == 0) weft__store(&sig_active, 0, RELAXED); /* relaxed: see sig_active */
  if (sig_users == 0 && sig_installed) {
    /* only while the handler is still ours: one that the program (or a
     * watch) installed meanwhile stays, as process/signal.c leaves one
     * installed during weft_run in place of its SIGINT handler */
    struct sigaction cur;
    if (sigaction(SIGQUIT, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == on_sigquit) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = SIG_DFL;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGQUIT, &sa, NULL);
    }
    sig_installed = false;
  }
  pthread_mutex_unlock(&sig_lock);
}

/* The debug monitor: print rt's dump if SIGQUIT came since *seen (which
 * starts as weft__dump_sigquit_count()). Every debug runtime's monitor
 * dumps its own runtime for one signal (a flag taken by one of them
 * showed one runtime only). */
unsigned weft__dump_sigquit_count(void) { return weft__load(&sigquit_count, RELAXED); }

void weft__dump_sigquit_poll(weft_runtime *rt, unsigned *seen) {
  unsigned c = weft__load(&sigquit_count, RELAXED);
  if (c == *seen) return;
  *seen = c;
  dump(rt, STDERR_FILENO);
}
