/* core/idle.h: which workers are searching for work, which are parked, and
 * when to wake one (after Tokio's idle.rs).
 *
 * state (one atomic word): bits 0..15 searching workers, bits 16..31
 * unparked workers. sleepers: the parked workers' ids, under `lock` (taken
 * only on the park and unpark paths, never on the hot paths).
 *
 * Rules:
 *  1. At most half the workers (rounded up) search at once.
 *  2. Work made stealable (pushed to a deque or the inject queue) calls
 *     notify: it wakes a parked worker only if none is searching and some
 *     worker is parked: one relaxed load on the hot path; no wake at all
 *     while every worker is busy or one is already looking. A worker
 *     pushing to its own deque (notify_local) notifies only when work
 *     appears or every 16 pushes, and from its scheduler context only
 *     from the second task on (the first is what it runs next:
 *     core/worker.c push_back_unpinned); it too fences before the load
 *     (the pair of rule 4: without it a push and a parking worker's
 *     re-check could miss each other).
 *  3. A searcher that finds work stops searching; if it was the last
 *     searcher it notifies, so that the rest of the work is found too.
 *  4. Every worker that parks re-checks every queue after registering as
 *     parked, and notifies if it sees work. Not only the last searcher:
 *     a worker refused by rule 1 may be deciding to park while a push's
 *     notify saw a searcher, and that searcher, stopping on other work,
 *     saw nobody parked yet (its rule-3 notify woke no one). Without the
 *     re-check, the pushed task waited for its worker's current task to
 *     end while a free worker slept (tests/test_wakeup.c).
 * A worker woken by notify starts out counted as searching.
 */
#ifndef WEFT_CORE_IDLE_H
#define WEFT_CORE_IDLE_H

#include <pthread.h>
#include <stdbool.h>

#include "core/atomic.h"

typedef struct weft__idle {
  _Alignas(WEFT_CACHELINE) _Atomic uint32_t state; /* searching | unparked << 16 */
  pthread_mutex_t lock;
  int *sleepers;      /* under lock: parked worker ids */
  unsigned n_sleepers; /* under lock */
  unsigned nworkers;
} weft__idle;

struct weft_runtime;
struct weft__worker;

int weft__idle_init(weft__idle *idle, unsigned nworkers);
void weft__idle_fini(weft__idle *idle);

/* OWNER worker: become a searcher; false when enough workers search (rule 1). */
bool weft__idle_begin_search(weft__idle *idle, struct weft__worker *w);
/* OWNER worker: found work; notifies when it was the last searcher (rule 3). */
void weft__idle_end_search(struct weft_runtime *rt, struct weft__worker *w);
/* Any thread: rule 2. */
void weft__idle_notify(struct weft_runtime *rt);
/* OWNER worker, after pushing to its own deque: rule 2, called only when
 * work appears or every 16 pushes (see core/worker.c push_back_unpinned). */
void weft__idle_notify_local(struct weft_runtime *rt);
/* OWNER worker: register as parked (then re-check the queues: rule 4). */
void weft__idle_park(weft__idle *idle, struct weft__worker *w);
/* OWNER worker after its park returned: if nobody unparked it (a timer, an
 * I/O completion), take itself off the sleepers (unparked, not searching).
 * Returns true when it had been unparked by notify (it is now a searcher). */
bool weft__idle_unparked(weft__idle *idle, struct weft__worker *w);
/* Any thread: unpark every worker (shutdown). */
void weft__idle_unpark_all(struct weft_runtime *rt);

#endif
