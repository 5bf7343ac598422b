/* core/inject.c: the global inject queue (see inject.h).
 *
 * PROTOCOL: a singly-linked intrusive FIFO (head, tail) under one mutex.
 * Every operation takes the lock once, whatever the batch size.
 *
 * INVARIANTS (all under q->lock):
 *   - head == NULL  <=>  tail == NULL  <=>  len == 0;
 *   - tail->next == NULL; the chain from head has exactly len nodes;
 *   - once closed, nothing is appended again and the queue stays empty
 *     (close hands the remainder back to the caller).
 *
 * len is an atomic copy of the count, stored under the lock after every
 * change and read without it as a hint (weft__inject_is_empty): relaxed on
 * both sides, because nothing is read through it. A consumer that sees
 * len > 0 takes the lock to pop, and the mutex orders the nodes; one that
 * sees a stale 0 is covered by the wake-up protocol (a pusher that makes the
 * queue non-empty also unparks a worker, in the worker/park code).
 *
 * REJECTED: a lock-free MPMC list (Michael-Scott) needs safe memory
 * reclamation or type-stable nodes plus ABA counters, and batches would cost
 * one CAS per node; this queue is off the hot path (overflow, outside
 * submissions, periodic polling), where one uncontended lock per batch is
 * cheaper and far simpler.
 */
#include "core/inject.h"

#include <assert.h>

/* Caller holds q->lock. relaxed: see the opening comment (a hint; the mutex
 * orders the list itself). */
static inline void set_len(weft__inject *q, size_t n) { weft__store(&q->len, n, RELAXED); }

/* Caller holds q->lock. relaxed: only writers (under the lock) change it, so
 * reading it under the lock sees the latest value. */
static inline size_t get_len(weft__inject *q) { return weft__load(&q->len, RELAXED); }

void weft__inject_init(weft__inject *q) {
  /* adaptive: spins briefly before sleeping in the kernel. The lock is held
   * for a few pointer moves, and with a plain mutex a spawner overflowing
   * into this queue while a thief popped from it turned a third of their
   * acquisitions into futex calls (spawn_many, 2 workers: 2,500 futex
   * calls per million tasks). Cannot fail on Linux. */
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(&q->lock, &ma);
  pthread_mutexattr_destroy(&ma);
  q->head = q->tail = NULL;
  weft__store(&q->len, 0, RELAXED); /* relaxed: not shared yet */
  q->closed = false;
}

void weft__inject_destroy(weft__inject *q) {
  /* The nodes belong to the caller; the queue owns no memory. */
  pthread_mutex_destroy(&q->lock);
}

bool weft__inject_push_batch(weft__inject *q, weft__link *first, weft__link *last, size_t n) {
  if (n == 0) return true;
  assert(first != NULL && last != NULL);
  last->next = NULL;
  pthread_mutex_lock(&q->lock);
  if (q->closed) {
    pthread_mutex_unlock(&q->lock);
    return false;
  }
  if (q->tail)
    q->tail->next = first;
  else
    q->head = first;
  q->tail = last;
  set_len(q, get_len(q) + n);
  pthread_mutex_unlock(&q->lock);
  return true;
}

bool weft__inject_push(weft__inject *q, weft__link *node) {
  return weft__inject_push_batch(q, node, node, 1);
}

size_t weft__inject_pop_batch(weft__inject *q, weft__link **out, size_t max) {
  /* relaxed: a hint (see the opening comment), to skip the lock when empty */
  if (max == 0 || weft__load(&q->len, RELAXED) == 0) return 0;
  pthread_mutex_lock(&q->lock);
  size_t n = 0;
  weft__link *h = q->head;
  while (n < max && h) {
    out[n++] = h;
    h = h->next;
  }
  q->head = h;
  if (!h) q->tail = NULL;
  assert(get_len(q) >= n);
  set_len(q, get_len(q) - n);
  pthread_mutex_unlock(&q->lock);
  for (size_t i = 0; i < n; i++) out[i]->next = NULL; /* the nodes are the caller's now */
  return n;
}

weft__link *weft__inject_pop(weft__inject *q) {
  weft__link *node = NULL;
  return weft__inject_pop_batch(q, &node, 1) ? node : NULL;
}

weft__link *weft__inject_close(weft__inject *q) {
  pthread_mutex_lock(&q->lock);
  q->closed = true;
  weft__link *rest = q->head; /* tail->next == NULL: already terminated */
  q->head = q->tail = NULL;
  set_len(q, 0);
  pthread_mutex_unlock(&q->lock);
  return rest;
}
