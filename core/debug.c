/* core/debug.c: debug mode (weft_config.debug or WEFT_DEBUG=1).
 *
 * Reports, on stderr:
 *  - misuse (a suspending call outside a task, a task joining itself, a
 *    stale handle): always counted, printed in debug mode;
 *  - a task that runs more than 100 ms without suspending, or a callback
 *    (call_soon/call_later/call_at) that runs as long: a monitor thread
 *    samples each worker's switch counter every 20 ms; a counter that has
 *    not moved for 100 ms while a task runs is reported once, with the
 *    task's name and worker. The workers pay two relaxed stores per switch
 *    in debug mode and nothing otherwise;
 *  - tasks still alive at shutdown, with their names and states;
 *  - on SIGQUIT, a dump of every task (core/dump.c: the handler counts the
 *    signal; each debug runtime's monitor prints its own runtime's).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/alloc.h"
#include "core/runtime.h"
#include "core/worker.h"

void weft__task_name(weft__task *t, char out[32]);
void weft__dump_sigquit_start(void); /* core/dump.c */
void weft__dump_sigquit_stop(void);
unsigned weft__dump_sigquit_count(void);
void weft__dump_sigquit_poll(weft_runtime *rt, unsigned *seen);

static _Atomic int debug_env = -1; /* relaxed: a cached getenv */
/* Debug runtimes started and not yet stopped, for a misuse on a thread that
 * is no worker (the program's own, a blocking pool thread): which runtime
 * it misused is unknown there, so any debug one reports it. relaxed, every
 * access: it pairs with nothing, as no data hangs on it (a misuse racing a
 * runtime's start or stop may be reported or not either way) */
static _Atomic int debug_runtimes;

bool weft__debug_env(void) {
  int on = weft__load(&debug_env, RELAXED);
  if (on < 0) {
    const char *s = getenv("WEFT_DEBUG");
    on = s && *s && *s != '0';
    weft__store(&debug_env, on, RELAXED);
  }
  return on;
}

bool weft__debug_on(void) {
  if (weft__debug_env()) return true;
  weft__worker *w = weft__worker_self();
  return w ? w->rt->debug : weft__load(&debug_runtimes, RELAXED) > 0;
}

void weft__debug_misuse(const char *what) {
  if (weft__debug_on()) fprintf(stderr, "weft: misuse: %s\n", what);
}

#define SAMPLE_NS 20000000L
#define LONG_RUN_NS 100000000LL

static void *monitor_main(void *arg) {
  weft__runtime *rt = arg;
  unsigned n = rt->nworkers;
  uint64_t last_switches[WEFT__MAX_WORKERS];
  int64_t since[WEFT__MAX_WORKERS];
  bool reported[WEFT__MAX_WORKERS];
  for (unsigned i = 0; i < n; i++) {
    last_switches[i] = 0;
    since[i] = weft_now_ns();
    reported[i] = false;
  }
  pthread_mutex_lock(&rt->monitor_lock);
  while (!rt->monitor_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += SAMPLE_NS;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&rt->monitor_cond, &rt->monitor_lock, &ts);
    int64_t now = weft_now_ns();
    pthread_mutex_unlock(&rt->monitor_lock); /* (a dump takes a while: not under the lock) */
    weft__dump_sigquit_poll(rt, &rt->monitor_sigquits);
    pthread_mutex_lock(&rt->monitor_lock);
    if (rt->monitor_stop) break;
    for (unsigned i = 0; i < n; i++) {
      weft__worker *w = rt->workers[i];
      uint64_t sw = weft__load(&w->switches, RELAXED); /* relaxed: a sample */
      weft__task *t = weft__load(&w->running, ACQUIRE); /* pairs with run_task's release */
      if (sw != last_switches[i] || !t) {
        last_switches[i] = sw;
        since[i] = now;
        reported[i] = false;
        continue;
      }
      if (!reported[i] && now - since[i] >= LONG_RUN_NS) {
        if (t == WEFT__RUNNING_CALLBACK) {
          fprintf(stderr, "weft: debug: a callback has run for %lld ms on worker %u\n",
                  (long long)((now - since[i]) / 1000000), i);
        } else {
          char name[32];
          weft__task_name(t, name); /* records are type-stable: reading is safe */
          fprintf(stderr, "weft: debug: task '%s' has run for %lld ms on worker %u without suspending\n", name,
                  (long long)((now - since[i]) / 1000000), i);
        }
        reported[i] = true;
      }
    }
  }
  pthread_mutex_unlock(&rt->monitor_lock);
  return NULL;
}

int weft__debug_start(weft__runtime *rt) {
  pthread_mutex_init(&rt->monitor_lock, NULL);
  pthread_cond_init(&rt->monitor_cond, NULL);
  rt->monitor_stop = false;
  rt->monitor_sigquits = weft__dump_sigquit_count(); /* a signal from now on is this runtime's to dump */
  if (pthread_create(&rt->monitor, NULL, monitor_main, rt) != 0) {
    pthread_cond_destroy(&rt->monitor_cond);
    pthread_mutex_destroy(&rt->monitor_lock);
    return -EAGAIN;
  }
  rt->monitor_started = true;
  weft__fetch_add(&debug_runtimes, 1, RELAXED); /* relaxed: see debug_runtimes */
  weft__dump_sigquit_start();
  return 0;
}

void weft__debug_stop(weft__runtime *rt) {
  if (!rt->monitor_started) return;
  pthread_mutex_lock(&rt->monitor_lock);
  rt->monitor_stop = true;
  pthread_cond_signal(&rt->monitor_cond);
  pthread_mutex_unlock(&rt->monitor_lock);
  pthread_join(rt->monitor, NULL);
  weft__fetch_sub(&debug_runtimes, 1, RELAXED); /* relaxed: see debug_runtimes */
  weft__dump_sigquit_stop();
  pthread_cond_destroy(&rt->monitor_cond);
  pthread_mutex_destroy(&rt->monitor_lock);
  rt->monitor_started = false;
}

void weft__debug_report_alive(weft__runtime *rt) {
  enum { MAX = 64 };
  weft_task_info info[MAX];
  int n = weft_runtime_tasks(rt, info, MAX);
  static const char *states[] = {"runnable", "running", "suspended", "done"};
  int alive = 0;
  for (int i = 0; i < n && i < MAX; i++) alive += info[i].state != WEFT_TASK_DONE;
  if (alive == 0 && n <= MAX) return;
  fprintf(stderr, "weft: debug: task(s) still alive at shutdown (they will be cancelled):\n");
  for (int i = 0; i < n && i < MAX; i++)
    if (info[i].state != WEFT_TASK_DONE)
      fprintf(stderr, "weft: debug:   '%s' %s, last on worker %d\n", info[i].name, states[info[i].state & 3],
              info[i].worker);
  if (n > MAX) fprintf(stderr, "weft: debug:   ... and up to %d more\n", n - MAX);
}
