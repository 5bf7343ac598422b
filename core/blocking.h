/* core/blocking.h: the blocking-thread pool (core/blocking.c): where the
 * runtime runs what must block a thread (weft_to_thread, file operations on
 * the epoll backend, and later name resolution and subprocess helpers), so
 * that the workers never block.
 *
 * A job is submitted by a task, which suspends until a pool thread has run
 * it (weft__blocking_call). The pool belongs to the runtime: created with
 * no threads, it starts its first thread on first use, grows on demand up
 * to cfg.blocking_threads, lets a thread go after cfg.blocking_idle_ns
 * without work, and is joined at shutdown (weft__blocking_fini). Its queue
 * is bounded (WEFT__BLOCKING_QUEUE_PER_THREAD per allowed thread): a
 * submitter that finds it full suspends in FIFO order until there is room.
 */
#ifndef WEFT_CORE_BLOCKING_H
#define WEFT_CORE_BLOCKING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/atomic.h"
#include "core/waitlist.h"

#define WEFT__BLOCKING_QUEUE_PER_THREAD 16

/* What a cancellation of the waiting task does once the job is running
 * (a job still queued is always taken out of the queue and never runs):
 *  WAIT     the task waits for the function, then returns -ECANCELED
 *           (asyncio's to_thread: the result is dropped, the request is
 *           delivered);
 *  RESULT   the task waits for the function and returns its status; the
 *           request stays pending for the next suspension (I/O: bytes that
 *           moved are never lost);
 *  DETACH   the task returns -ECANCELED at once; the job (allocated by the
 *           pool) runs to its end on its own and is freed there. */
enum { WEFT__BLOCKING_WAIT = 0, WEFT__BLOCKING_RESULT = 1, WEFT__BLOCKING_DETACH = 2 };

struct weft__blocking_job;

typedef struct weft__blocking_pool {
  pthread_mutex_t lock;
  pthread_cond_t work;          /* sleeping threads wait here for jobs */
  pthread_cond_t gone;          /* fini waits here for the threads to leave */
  struct weft__blocking_job *head, *tail; /* under lock: queued jobs, FIFO */
  unsigned queued;              /* under lock */
  unsigned reserved;            /* under lock: queue slots promised to woken room waiters */
  unsigned cap;                 /* immutable: the queue's bound */
  unsigned max_threads;         /* immutable */
  int64_t idle_ns;              /* immutable */
  unsigned threads;             /* under lock: threads alive */
  unsigned sleeping;            /* under lock: threads waiting on `work`, not yet claimed by a signaller */
  unsigned wakeups;             /* under lock: signals sent and not yet consumed by a waking thread */
  unsigned spinning;            /* under lock: threads looking for work without sleeping */
  unsigned peak_threads;        /* under lock: statistics for tests */
  unsigned peak_queued;         /* under lock */
  uint64_t started;             /* under lock: threads ever started */
  bool stopping;                /* under lock: fini has begun */
  bool has_leaver;              /* under lock: last_leaver names a thread not yet joined */
  pthread_t last_leaver;        /* under lock: the last thread to leave; joined by the next one or fini */
  bool cond_ok;                 /* init succeeded (fini checks) */
  weft__waitlist room;          /* under lock: submitters waiting for a free slot */
  _Atomic unsigned queued_hint; /* written under lock, read by spinners (relaxed: a hint) */
} weft__blocking_pool;

typedef struct weft__blocking_stats {
  unsigned threads, queued, peak_threads, peak_queued, room_waiters;
  uint64_t started;
} weft__blocking_stats;

struct weft_runtime;

/* The runtime's life: init at runtime creation (no thread), fini after the
 * workers stopped (every task has ended; lets running detached jobs finish
 * and waits for every thread to leave). */
int weft__blocking_init(weft__blocking_pool *p, unsigned max_threads, int64_t idle_ns);
void weft__blocking_fini(weft__blocking_pool *p);

/* The calling task runs fn(arg) on a pool thread and suspends until it
 * returned; returns its status. mode: WEFT__BLOCKING_*. Suspends.
 * Errors: -ECANCELED (see the modes), -EINVAL outside a task, -ENOMEM
 * (DETACH: the job record), -EAGAIN (no pool thread could be started). */
int weft__blocking_call(int (*fn)(void *), void *arg, int mode);

/* Whether the calling thread is one of p's threads (a weft_to_thread
 * function, or another blocking job, runs on it). Any thread. */
bool weft__blocking_on_pool_thread(const weft__blocking_pool *p);

/* A snapshot for the tests. Any thread. */
void weft__blocking_stats_get(struct weft_runtime *rt, weft__blocking_stats *out);

#endif
