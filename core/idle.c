/* core/idle.c: searching and parked workers (the protocol is in idle.h).
 *
 * Memory order: every change of `state` is a seq_cst RMW, and notify reads
 * it with a seq_cst RMW (fetch_add 0) after a full fence, because notify
 * runs right after a push (a release store of the deque's bottom, or the
 * inject queue's unlock) and must not see the state from before a parking
 * worker's decrement while that worker misses the push: push-then-read and
 * decrement-then-recheck are the two halves of a StoreLoad (Dekker) pair.
 */
#include "core/idle.h"

#include <errno.h>

#include "core/alloc.h"
#include "core/runtime.h"
#include "core/worker.h"

#define SEARCHING(s) ((s)&0xffffu)
#define UNPARKED(s) ((s) >> 16)
#define ONE_UNPARKED (1u << 16)

int weft__idle_init(weft__idle *idle, unsigned nworkers) {
  idle->sleepers = weft__zalloc(sizeof(int) * nworkers);
  if (!idle->sleepers) return -ENOMEM;
  pthread_mutex_init(&idle->lock, NULL);
  idle->n_sleepers = 0;
  idle->nworkers = nworkers;
  weft__store(&idle->state, nworkers * ONE_UNPARKED, RELAXED); /* before the workers start */
  return 0;
}

void weft__idle_fini(weft__idle *idle) {
  pthread_mutex_destroy(&idle->lock);
  weft__free(idle->sleepers, sizeof(int) * idle->nworkers);
}

bool weft__idle_begin_search(weft__idle *idle, weft__worker *w) {
  if (w->searching) return true;
  uint32_t s = weft__load(&idle->state, SEQ_CST);
  if (2 * SEARCHING(s) >= idle->nworkers) return false; /* rule 1 */
  weft__fetch_add(&idle->state, 1, SEQ_CST);
  w->searching = true;
  return true;
}

void weft__idle_end_search(weft__runtime *rt, weft__worker *w) {
  if (!w->searching) return;
  w->searching = false;
  uint32_t prev = weft__fetch_sub(&rt->idle.state, 1, SEQ_CST);
  if (SEARCHING(prev) == 1) weft__idle_notify(rt); /* rule 3 */
}

static bool should_wake(weft__idle *idle, uint32_t s) {
  return SEARCHING(s) == 0 && UNPARKED(s) < idle->nworkers;
}

void weft__idle_notify_local(weft__runtime *rt) {
  /* The full fence is the pusher's half of rule 4's StoreLoad pair: without
   * it the deque push (a store) could pass this load (x86 store buffer),
   * while the parking worker's re-check missed the push: the worker slept
   * and the task waited for the pusher's current task, however long
   * ("a moment" only if that task is short: tests/test_rev_live.c stalled
   * 200 ms about once in 60,000 rounds). The load stays relaxed and
   * notify_local is called only when work appears or every 16 pushes. */
  weft__fence(SEQ_CST);
  if (!should_wake(&rt->idle, weft__load(&rt->idle.state, RELAXED))) return;
  weft__idle_notify(rt);
}

void weft__idle_notify(weft__runtime *rt) {
  weft__idle *idle = &rt->idle;
  /* seq_cst fence: the StoreLoad half of the pair described above */
  weft__fence(SEQ_CST);
  if (!should_wake(idle, weft__load(&idle->state, RELAXED))) return;
  pthread_mutex_lock(&idle->lock);
  uint32_t s = weft__load(&idle->state, SEQ_CST);
  if (!should_wake(idle, s) || idle->n_sleepers == 0) {
    pthread_mutex_unlock(&idle->lock);
    return;
  }
  int id = idle->sleepers[--idle->n_sleepers];
  weft__worker *x = rt->workers[id];
  x->parked = false;
  /* the woken worker starts out unparked and searching */
  weft__fetch_add(&idle->state, 1 + ONE_UNPARKED, SEQ_CST);
  pthread_mutex_unlock(&idle->lock);
  weft__reactor_unpark(&x->reactor);
}

void weft__idle_park(weft__idle *idle, weft__worker *w) {
  pthread_mutex_lock(&idle->lock);
  weft__fetch_sub(&idle->state, ONE_UNPARKED + (w->searching ? 1u : 0u), SEQ_CST);
  w->parked = true;
  idle->sleepers[idle->n_sleepers++] = w->id;
  pthread_mutex_unlock(&idle->lock);
  w->searching = false;
}

bool weft__idle_unparked(weft__idle *idle, weft__worker *w) {
  pthread_mutex_lock(&idle->lock);
  if (w->parked) {
    /* nobody woke it (a timer, a completion): take itself off the list */
    for (unsigned i = 0; i < idle->n_sleepers; i++) {
      if (idle->sleepers[i] == w->id) {
        idle->sleepers[i] = idle->sleepers[--idle->n_sleepers];
        break;
      }
    }
    w->parked = false;
    weft__fetch_add(&idle->state, ONE_UNPARKED, SEQ_CST);
    pthread_mutex_unlock(&idle->lock);
    return false;
  }
  pthread_mutex_unlock(&idle->lock);
  w->searching = true; /* notify counted it as searching */
  return true;
}

void weft__idle_unpark_all(weft__runtime *rt) {
  for (unsigned i = 0; i < rt->nworkers; i++) weft__reactor_unpark(&rt->workers[i]->reactor);
}
