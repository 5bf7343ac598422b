/* core/blocking.c: the blocking-thread pool and weft_to_thread.
 *
 * PROTOCOL. One pthread mutex guards the pool: the FIFO of queued jobs, the
 * thread counts, the room wait list and every job's state. A job lives on
 * the submitting task's stack (mode DETACH: allocated) and moves
 *     QUEUED --thread, under lock--> RUNNING --thread, under lock--> DONE
 * The thread copies the waiter's {task, seq} under the lock when it marks
 * the job DONE and wakes it after unlocking (weft__wake_many: its release
 * CAS on the task's wait word publishes the status, and is the
 * release/acquire pair ThreadSanitizer sees); it never touches the job
 * after that unlock, because the task may already have returned and
 * reused its stack. A completion is woken before the thread runs another
 * function or idles: never held behind a later call, which may block for
 * any time, or block on what the finished call's task does next (deferring
 * completions behind calls predicted short hung such a pair: a review,
 * tests/test_rev_fut.c).
 *
 * Cancellation of the waiting task (woken with CANCEL), under the lock:
 *  - QUEUED: the job is unlinked; the function never runs: -ECANCELED;
 *  - DONE: the completion raced with the cancel (its wake lost): the
 *    status is there;
 *  - RUNNING: the thread cannot be stopped. WAIT/RESULT: the task prepares
 *    a new, non-cancellable wait and stores its seq in the job (the thread
 *    reads it under the same lock), then waits for DONE. DETACH: the job is
 *    marked abandoned and the thread frees it when the function returns.
 *
 * Threads. No thread exists until the first call. A submitter that finds
 * no thread spinning or sleeping starts one (up to max_threads), else it
 * signals a sleeping one, else it leaves the job to the spinning one; a
 * thread that takes a job and finds more queued behind it does the same
 * for them (find_hand), since the spinner runs one job at a time and
 * several submitters may have left theirs to it. A
 * thread with nothing to do spins for up to SPIN_NS (one spinner at a
 * time), watching `queued_hint`, so that a steady stream of short calls
 * costs no futex wake per call; then it sleeps on `work` for idle_ns and
 * leaves if it timed out with nothing to do. A signaller claims a sleeper
 * (sleeping--, wakeups++), so a burst of submissions signals distinct
 * sleepers and starts new threads once none is left. (Measured, to_thread
 * with 64 callers of an instant function, 2 CPUs: the pool grows to ~40
 * threads, most of them asleep; capped at 1 thread 233k calls/s, at 4
 * 400k-500k, uncapped 450k-650k; starting one thread at a time changed
 * nothing measurable, so the simpler rule stayed.)
 *
 * Back-pressure. At most `cap` jobs are queued (not counting running ones).
 * A submitter that finds the queue full, or other submitters already
 * waiting for room, suspends in the FIFO `room` list. Whoever frees a slot
 * (a thread taking a job, a cancelled job leaving the queue) reserves it
 * for the oldest room waiter and wakes it; a waiter chosen and cancelled at
 * the same moment passes the reservation on (core/waitlist.h).
 *
 * Shutdown (weft__blocking_fini, after every task ended): `stopping` is
 * set and the sleepers are woken; threads leave once the queue is empty
 * (only abandoned DETACH jobs can still be running then); fini waits on
 * `gone` until the thread count is zero, then joins the last thread to
 * leave: each leaving thread names itself in `last_leaver` under its last
 * lock and joins the one named before it after unlocking, so every thread
 * is joined, the last by fini. A leaving thread touches nothing of the
 * pool after its last unlock. Before (detached threads, the count alone):
 * weft_run returned while a pool thread was still exiting, and
 * LeakSanitizer's check at exit could run after ASan had retired the
 * thread and before glibc freed its resolver state (28 bytes from
 * getaddrinfo's res_send, test_net_socket under ASan, 1 run in 8).
 *
 * Rejected: one condition-variable signal per submission (libuv's pool):
 * a futex wake per call, and on 2 CPUs every call then pays a switch to a
 * thread; a lock-free queue: the mutex is held for a few instructions and
 * cancellation (unlinking a queued job) is simple under it.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/core.h>

#include "core/alloc.h"
#include "core/blocking.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/taskext.h"

#define SPIN_NS 50000 /* how long an idle thread watches for work before sleeping */
#define DONE_BATCH 16  /* completions woken together */

enum { JOB_QUEUED = 0, JOB_RUNNING = 1, JOB_DONE = 2 };

typedef struct weft__blocking_job {
  struct weft__blocking_job *next, *prev; /* under lock, while queued */
  int (*fn)(void *);                       /* immutable */
  void *arg;                               /* immutable */
  int status;                              /* under lock: the function's return */
  int state;                               /* under lock: JOB_* */
  weft__task *task;                        /* immutable: the waiter */
  uint32_t seq;                            /* under lock: the waiter's current wait */
  bool heap;                               /* immutable: allocated here (DETACH) */
  bool abandoned;                          /* under lock: the waiter left; the thread frees it */
  weft__ctx *ctx;                          /* immutable: the caller's task-local values (a reference), NULL = none */
} job;

static void job_free(job *j) {
  weft__ctx_unref(j->ctx);
  if (j->heap) weft__free(j, sizeof *j);
}

/* ------------------------------------------------------------ life */

int weft__blocking_init(weft__blocking_pool *p, unsigned max_threads, int64_t idle_ns) {
  memset(p, 0, sizeof *p);
  p->max_threads = max_threads ? max_threads : 1;
  p->cap = p->max_threads * WEFT__BLOCKING_QUEUE_PER_THREAD;
  p->idle_ns = idle_ns;
  weft__waitlist_init(&p->room);
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca)) return -ENOMEM;
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  /* adaptive: spins briefly before sleeping in the kernel; the lock is
   * held for a few instructions, and a plain mutex turned most contended
   * acquisitions into futex calls (to_thread: 0.75 futex calls per call) */
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
  int e = pthread_mutex_init(&p->lock, &ma);
  pthread_mutexattr_destroy(&ma);
  if (!e) {
    e = pthread_cond_init(&p->work, &ca);
    if (!e) {
      e = pthread_cond_init(&p->gone, NULL);
      if (e) pthread_cond_destroy(&p->work);
    }
    if (e) pthread_mutex_destroy(&p->lock);
  }
  pthread_condattr_destroy(&ca);
  if (e) return -e;
  p->cond_ok = true;
  return 0;
}

void weft__blocking_fini(weft__blocking_pool *p) {
  if (!p->cond_ok) return;
  pthread_mutex_lock(&p->lock);
  p->stopping = true;
  pthread_cond_broadcast(&p->work);
  while (p->threads > 0) pthread_cond_wait(&p->gone, &p->lock);
  bool join_last = p->has_leaver;
  pthread_t last = p->last_leaver;
  p->has_leaver = false;
  pthread_mutex_unlock(&p->lock);
  /* the last to leave (it joins the one before it, and so on): after
   * this no thread of the pool exists */
  if (join_last) pthread_join(last, NULL);
  pthread_cond_destroy(&p->gone);
  pthread_cond_destroy(&p->work);
  pthread_mutex_destroy(&p->lock);
  p->cond_ok = false;
}

void weft__blocking_stats_get(weft__runtime *rt, weft__blocking_stats *out) {
  weft__blocking_pool *p = &rt->blocking;
  pthread_mutex_lock(&p->lock);
  *out = (weft__blocking_stats){.threads = p->threads,
                                .queued = p->queued,
                                .peak_threads = p->peak_threads,
                                .peak_queued = p->peak_queued,
                                .room_waiters = (unsigned)p->room.len,
                                .started = p->started};
  pthread_mutex_unlock(&p->lock);
}

/* ------------------------------------------------------------ the queue (caller holds p->lock) */

static void set_hint(weft__blocking_pool *p) {
  /* relaxed: a hint for spinners, who re-check under the lock */
  weft__store(&p->queued_hint, p->queued, RELAXED);
}

static void push_job(weft__blocking_pool *p, job *j) {
  j->next = NULL;
  j->prev = p->tail;
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  p->queued++;
  if (p->queued > p->peak_queued) p->peak_queued = p->queued;
  set_hint(p);
}

static void unlink_job(weft__blocking_pool *p, job *j) {
  if (j->prev)
    j->prev->next = j->next;
  else
    p->head = j->next;
  if (j->next)
    j->next->prev = j->prev;
  else
    p->tail = j->prev;
  p->queued--;
  set_hint(p);
}

/* A slot may have freed: reserve it for the oldest room waiter. Returns
 * whether *w holds a wakeup to fire after unlocking. */
static bool give_room(weft__blocking_pool *p, weft__wakeup *w) {
  if (p->room.len == 0 || p->queued + p->reserved >= p->cap) return false;
  if (!weft__waitlist_pop(&p->room, w)) return false;
  p->reserved++;
  return true;
}

/* ------------------------------------------------------------ threads */

static void *pool_thread(void *arg);

/* Caller holds p->lock; a job is queued: unless a thread spins (it will
 * take it), claim a sleeper and signal it, or count in a new thread, which
 * the caller starts after unlocking (returns true). */
static bool find_hand(weft__blocking_pool *p) {
  if (p->spinning > 0) return false;
  if (p->sleeping > 0) {
    p->sleeping--;
    p->wakeups++;
    pthread_cond_signal(&p->work);
    return false;
  }
  if (p->threads >= p->max_threads) return false;
  p->threads++;
  p->started++;
  if (p->threads > p->peak_threads) p->peak_threads = p->threads;
  return true;
}

/* Start one thread; the caller counted it in p->threads already. */
static int start_thread(weft__blocking_pool *p) {
  pthread_attr_t attr;
  pthread_t th;
  if (pthread_attr_init(&attr)) return -ENOMEM;
  int e = pthread_create(&th, &attr, pool_thread, p);
  pthread_attr_destroy(&attr);
  return -e;
}

static void spin_for_work(weft__blocking_pool *p) {
  int64_t until = weft_now_ns() + SPIN_NS;
  for (unsigned i = 1;; i++) {
    if (weft__load(&p->queued_hint, RELAXED)) return; /* relaxed: re-checked under the lock */
    weft__cpu_relax();
    if (i % 64 == 0) {
      sched_yield(); /* 2 CPUs: let the submitters run */
      if (weft_now_ns() >= until) return;
    }
  }
}

/* The completion a thread has not yet fired (after unlocking): fired
 * before it runs the next function or idles. */
typedef struct done_batch {
  weft__wakeup_pair w[DONE_BATCH];
  size_t n;
} done_batch;

static void flush_done(done_batch *d) {
  if (d->n) weft__wake_many(d->w, d->n);
  d->n = 0;
}

/* The pool the calling thread belongs to (NULL: none); this thread's own:
 * weft_runtime_shutdown asks, to refuse a call from one of its threads,
 * which would wait for itself (the job's task waits for the job, and the
 * pool's fini for the thread). */
static _Thread_local const weft__blocking_pool *tls_pool;

bool weft__blocking_on_pool_thread(const weft__blocking_pool *p) { return tls_pool == p; }

static void *pool_thread(void *arg) {
  weft__blocking_pool *p = arg;
  tls_pool = p;
  done_batch done = {.n = 0};
  weft__wakeup room;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    job *j = p->head;
    if (j) {
      unlink_job(p, j);
      j->state = JOB_RUNNING;
      bool have_room = give_room(p, &room);
      /* Jobs left behind this one: their submitters may have left them to
       * this thread while it spun (find_hand), and it now runs a call
       * that may block for any time: find them another thread as a
       * submitter would (else they wait behind this call while the pool
       * may grow; a pair of calls that wait on each other never ended).
       * Not for jobs that signalled sleepers are already on their way to. */
      bool start = p->queued > p->wakeups && find_hand(p);
      pthread_mutex_unlock(&p->lock);
      if (start && start_thread(p) < 0) {
        pthread_mutex_lock(&p->lock);
        p->threads--; /* this thread counts: the jobs still get run */
        p->started--;
        pthread_mutex_unlock(&p->lock);
      }
      if (have_room) weft__wakeup_fire(&room);
      /* never hold a finished call's completion across another call: the
       * next function may block for any time (a prediction from the last
       * one's length cannot tell), and it may block on what the finished
       * call's task does next (a review found that hang) */
      if (done.n) flush_done(&done);
      weft__thread_ctx = j->ctx; /* asyncio.to_thread: fn sees the caller's context */
      int status = j->fn(j->arg);
      weft__thread_ctx = NULL; /* before DONE: the caller may free the job then */
      pthread_mutex_lock(&p->lock);
      j->status = status;
      j->state = JOB_DONE;
      if (j->abandoned) {
        job_free(j); /* DETACH: its task left (weft__free makes no syscall on the fast path) */
      } else {
        done.w[done.n++] = (weft__wakeup_pair){j->task, j->seq};
      }
      continue;
    }
    if (done.n) { /* fire the completions before idling */
      pthread_mutex_unlock(&p->lock);
      flush_done(&done);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    if (p->stopping) break;
    if (p->spinning == 0) {
      p->spinning++;
      pthread_mutex_unlock(&p->lock);
      spin_for_work(p);
      pthread_mutex_lock(&p->lock);
      p->spinning--;
      if (p->head || p->stopping) continue;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int64_t dl = p->idle_ns > INT64_MAX - now ? INT64_MAX : now + p->idle_ns; /* a huge idle time: never */
    ts.tv_sec = dl / 1000000000;
    ts.tv_nsec = dl % 1000000000;
    p->sleeping++;
    int rc = pthread_cond_timedwait(&p->work, &p->lock, &ts);
    if (p->wakeups > 0) {
      p->wakeups--; /* a signaller claimed a sleeper (and counted it out) */
    } else {
      p->sleeping--;
      if (rc == ETIMEDOUT && !p->head) break; /* idle for idle_ns: leave */
    }
  }
  p->threads--;
  bool join_prev = p->has_leaver;
  pthread_t prev = p->last_leaver;
  p->last_leaver = pthread_self(); /* joined by the next thread to leave, or by fini */
  p->has_leaver = true;
  if (p->threads == 0) pthread_cond_broadcast(&p->gone);
  pthread_mutex_unlock(&p->lock);
  if (join_prev) pthread_join(prev, NULL); /* it is past its last unlock: it only exits */
  return NULL;
}

/* ------------------------------------------------------------ submitting */

/* Wait (suspended) for a free queue slot. Caller holds the lock and holds
 * it again on return 0; on -ECANCELED the lock is released. */
static int wait_for_room(weft__blocking_pool *p, weft__task *self) {
  for (;;) {
    if (p->queued + p->reserved < p->cap && p->room.len == 0) return 0;
    int64_t seq = weft__wait_prepare(true);
    weft__waiting_on(self, WEFT__WAITING_THREAD);
    if (seq < 0) {
      pthread_mutex_unlock(&p->lock);
      return (int)seq;
    }
    weft__waitlist_push(&p->room, self, (uint32_t)seq);
    pthread_mutex_unlock(&p->lock);
    uint32_t why = weft__wait_commit((uint32_t)seq);
    pthread_mutex_lock(&p->lock);
    bool chosen = !self->waiter.linked;
    weft__waitlist_remove(&p->room, self);
    if (chosen) {
      p->reserved--; /* the slot reserved for us: ours to use or to pass on */
      if (why != WEFT__WAKE_CANCEL) return 0;
    }
    if (why == WEFT__WAKE_CANCEL) {
      weft__wakeup w;
      bool pass = give_room(p, &w);
      pthread_mutex_unlock(&p->lock);
      if (pass) weft__wakeup_fire(&w);
      return -ECANCELED;
    }
  }
}

int weft__blocking_call(int (*fn)(void *), void *arg, int mode) {
  weft__task *self = weft__task_self();
  if (!self || !fn) return -EINVAL;
  weft__blocking_pool *p = &self->rt->blocking;
  job local, *j = &local;
  if (mode == WEFT__BLOCKING_DETACH) {
    j = weft__alloc(sizeof *j);
    if (!j) return -ENOMEM;
  }
  weft__task_ext *ext = weft__ext_peek(self);
  /* a reference: the caller's later set() copies instead of writing in place
   * (DETACH: it may run while fn still does) */
  *j = (job){.fn = fn, .arg = arg, .task = self, .heap = j != &local, .ctx = weft__ctx_ref(ext ? ext->ctx : NULL)};

  pthread_mutex_lock(&p->lock);
  int rc = wait_for_room(p, self);
  if (rc < 0) {
    job_free(j);
    return rc;
  }
  int64_t seq = weft__wait_prepare(true);
  weft__waiting_on(self, WEFT__WAITING_THREAD);
  if (seq < 0) {
    weft__wakeup w;
    bool pass = give_room(p, &w); /* we may have been handed a slot */
    pthread_mutex_unlock(&p->lock);
    if (pass) weft__wakeup_fire(&w);
    job_free(j);
    return (int)seq;
  }
  j->seq = (uint32_t)seq;
  j->state = JOB_QUEUED;
  push_job(p, j);
  bool start = find_hand(p);
  pthread_mutex_unlock(&p->lock);
  if (start && start_thread(p) < 0) {
    pthread_mutex_lock(&p->lock);
    p->threads--;
    p->started--;
    if (p->threads == 0 && j->state == JOB_QUEUED) {
      /* nobody can run it: give up (the wait prepared above is abandoned) */
      unlink_job(p, j);
      weft__wakeup w;
      bool pass = give_room(p, &w);
      pthread_mutex_unlock(&p->lock);
      weft__wait_abandon();
      if (pass) weft__wakeup_fire(&w);
      job_free(j);
      return -EAGAIN;
    }
    pthread_mutex_unlock(&p->lock);
  }

  uint32_t why = weft__wait_commit((uint32_t)seq);
  if (why != WEFT__WAKE_CANCEL) {
    int status = j->status; /* published by the waker's release CAS */
    job_free(j);
    return status;
  }
  /* Cancelled (the request is delivered). */
  pthread_mutex_lock(&p->lock);
  if (j->state == JOB_QUEUED) {
    unlink_job(p, j);
    weft__wakeup w;
    bool pass = give_room(p, &w);
    pthread_mutex_unlock(&p->lock);
    if (pass) weft__wakeup_fire(&w);
    job_free(j);
    return -ECANCELED;
  }
  if (j->state == JOB_RUNNING) {
    if (mode == WEFT__BLOCKING_DETACH) {
      j->abandoned = true; /* the thread frees it */
      pthread_mutex_unlock(&p->lock);
      return -ECANCELED;
    }
    /* wait for the function, not cancellable: it may use memory the
     * caller owns (arg) */
    int64_t seq2 = weft__wait_prepare(false);
    weft__waiting_on(self, WEFT__WAITING_THREAD);
    j->seq = (uint32_t)seq2;
    pthread_mutex_unlock(&p->lock);
    weft__wait_commit((uint32_t)seq2);
    pthread_mutex_lock(&p->lock); /* acquire: the status written under it */
  }
  int status = j->status; /* DONE */
  pthread_mutex_unlock(&p->lock);
  job_free(j);
  if (mode == WEFT__BLOCKING_RESULT) {
    /* the result wins; the request stays for the next suspension.
     * relaxed: the flag carries no data (as weft_join's restore) */
    weft__store(&self->cancel_pending, 1, RELAXED);
    return status;
  }
  return -ECANCELED;
}

/* ------------------------------------------------------------ the public call */

int weft_to_thread_ex(weft_fn fn, void *arg, unsigned flags) {
  if (!weft__task_self()) {
    weft__debug_misuse("weft_to_thread outside a task");
    return -EINVAL;
  }
  if (!fn || (flags & ~(unsigned)WEFT_TO_THREAD_DETACH)) return -EINVAL;
  return weft__blocking_call(fn, arg, (flags & WEFT_TO_THREAD_DETACH) ? WEFT__BLOCKING_DETACH : WEFT__BLOCKING_WAIT);
}

int weft_to_thread(weft_fn fn, void *arg) { return weft_to_thread_ex(fn, arg, 0); }
