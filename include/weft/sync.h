/* weft/sync.h: synchronisation between tasks, safe across workers.
 *
 * asyncio's Lock, Event, Condition, Semaphore, BoundedSemaphore, Barrier and
 * Queue (FIFO, LIFO, priority), for tasks that run on many workers at once.
 *
 * These objects are plain structs the caller embeds (like pthread_mutex_t):
 * _init before use, _destroy after the last use, no allocation forced. Their
 * storage is opaque; the library checks at build time that its real layout
 * fits. Waiters are served FIFO, and a waiter cancelled at the moment it is
 * woken passes what it was given (the lock, a permit, a notification, a
 * wakeup) on to the next waiter: nothing is lost to a cancelled waiter.
 *
 * Threads. Suspending calls ("Suspends.") are made from a task and are
 * cancellation points: they return -ECANCELED when the task is cancelled
 * while it waits. Calls marked "Any thread" never suspend and may also be
 * made from threads outside the runtime (they wake the tasks they should).
 * An object may also be shared by the tasks of several runtimes in one
 * process: a waker schedules each woken task on that task's own runtime.
 *
 * Destroying an object that tasks still wait on returns -EBUSY and changes
 * nothing; debug mode (WEFT_DEBUG=1) also prints every misuse on stderr.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <weft/core.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ event */

/* asyncio.Event: a flag that tasks wait on. */
typedef struct weft_event {
  uint64_t opaque[5]; /* 40 bytes, 8-byte aligned */
} weft_event;

/* Initialise (unset). Returns 0 (-EINVAL for NULL). */
WEFT_API int weft_event_init(weft_event *ev);
/* Destroy. Errors: -EBUSY tasks still wait on it (nothing changes). */
WEFT_API int weft_event_destroy(weft_event *ev);
/* Set the flag and wake every task waiting now, those racing with the set
 * included. Any thread. Does not suspend. */
WEFT_API void weft_event_set(weft_event *ev);
/* Clear the flag. Any thread. */
WEFT_API void weft_event_clear(weft_event *ev);
/* Whether the flag is set. Any thread. */
WEFT_API bool weft_event_is_set(const weft_event *ev);
/* Suspend until the flag is set (returns 0 at once if it is).
 * Suspends. Errors: -ECANCELED; -EINVAL outside a task. */
WEFT_API int weft_event_wait(weft_event *ev);

/* ------------------------------------------------------------ lock */

/* asyncio.Lock: not reentrant, owned by the task (or thread) that took it.
 * Waiters are served in the order they queued. Uncontended, an acquire and
 * a release are one atomic operation each, with no system call. A task
 * that finds the lock held by a running task, with nobody queued, spins a
 * few dozen rounds before it queues.
 *
 * Two modes, chosen at init:
 *  - WEFT_LOCK_FIFO (weft_lock_init): asyncio's semantics. FIFO and no
 *    barging: a release with waiters hands the lock to the oldest one, and
 *    a newcomer waits while that waiter has not run yet.
 *  - WEFT_LOCK_OVERTAKE (weft_lock_init_mode), Go's sync.Mutex: a running
 *    task may take a free lock before a waiter that was woken for it has
 *    run; the woken waiter that loses goes back to the head of the queue.
 *    No waiter starves: one that loses after waiting more than 1 ms
 *    switches the lock to strict hand-off until the queue is empty or a
 *    waiter is served within 1 ms. Under saturation strict hand-off is a
 *    convoy (a wake and a task switch per acquisition, the lock idle in
 *    between): lock_contention on 2 workers ran at 13-20M acquisitions/s
 *    in FIFO mode and 51-68M in this one (docs/benchmarks.md). Choose it
 *    for locks around short critical sections that many tasks hammer, when
 *    strict arrival order among newcomers does not matter. */
typedef struct weft_lock {
  uint64_t opaque[6]; /* 48 bytes, 8-byte aligned */
} weft_lock;

enum { WEFT_LOCK_FIFO = 0, WEFT_LOCK_OVERTAKE = 1 };
/* Initialise (unlocked), in WEFT_LOCK_FIFO mode. Returns 0 (-EINVAL for NULL). */
WEFT_API int weft_lock_init(weft_lock *l);
/* Initialise (unlocked) in the given mode. Errors: -EINVAL (l NULL, or an
 * unknown mode). */
WEFT_API int weft_lock_init_mode(weft_lock *l, unsigned mode);
/* Destroy. Errors: -EBUSY tasks wait on it, or it is held (nothing changes). */
WEFT_API int weft_lock_destroy(weft_lock *l);
/* Take the lock, suspending while another task holds it. Suspends.
 * Errors: -ECANCELED (the lock was not taken); -EDEADLK the caller holds it
 * already; -EINVAL outside a task. */
WEFT_API int weft_lock_acquire(weft_lock *l);
/* Take the lock if it is free (in OVERTAKE mode possibly before a woken
 * waiter; see above). Any thread (a thread outside the runtime owns it
 * then, and must release it itself). Errors: -EAGAIN it is held (or being
 * handed to a waiter). */
WEFT_API int weft_lock_try_acquire(weft_lock *l);
/* Release the lock the caller holds; the oldest waiter, if any, owns it now
 * (FIFO, or OVERTAKE after starvation) or is woken to take it (OVERTAKE).
 * Any thread (the one that holds it). Errors: -EPERM the caller does not hold
 * it (unlocked, or held by another task or thread). */
WEFT_API int weft_lock_release(weft_lock *l);
/* Whether some task or thread holds it. Any thread. */
WEFT_API bool weft_lock_locked(weft_lock *l);

/* ------------------------------------------------------------ condition */

/* asyncio.Condition on a weft_lock (the caller owns both; the lock must
 * outlive the condition). */
typedef struct weft_cond {
  uint64_t opaque[6]; /* 48 bytes, 8-byte aligned */
} weft_cond;

/* Initialise on lock. Errors: -EINVAL c or lock is NULL. */
WEFT_API int weft_cond_init(weft_cond *c, weft_lock *lock);
/* Destroy. Errors: -EBUSY tasks wait on it. Once it returns 0 the memory
 * may be reused, even before the waiters a notify woke have run (they
 * touch only the lock; not so one cancelled at that very moment, which
 * passes the notification on through the condition). */
WEFT_API int weft_cond_destroy(weft_cond *c);
/* Release the lock, wait for a notification, take the lock again. The lock
 * is held again when wait returns, whatever it returns (the re-acquisition
 * is not cancellable: a cancel request that arrives during it stays pending
 * for the next suspension point). A notification given to a waiter cancelled
 * at the same moment goes to the next waiter. Suspends.
 * Errors: -ECANCELED; -EPERM the caller does not hold the lock; -EINVAL
 * outside a task. */
WEFT_API int weft_cond_wait(weft_cond *c);
/* Wait until pred(arg) is true (checked first, and after each wakeup, with
 * the lock held). Returns 0 once it is true. Suspends. Errors as wait, and
 * -EINVAL pred is NULL. */
WEFT_API int weft_cond_wait_for(weft_cond *c, bool (*pred)(void *arg), void *arg);
/* Wake up to n waiters (oldest first); returns how many were woken. The
 * caller holds the lock. Errors: -EPERM it does not; -EINVAL n < 0. */
WEFT_API int weft_cond_notify(weft_cond *c, int n);
/* Wake every waiter; returns how many. Errors: -EPERM as notify. */
WEFT_API int weft_cond_notify_all(weft_cond *c);

/* ------------------------------------------------------------ semaphores */

/* asyncio.Semaphore and BoundedSemaphore. FIFO: a task that has to wait
 * queues behind the waiters already there, and a release with waiters hands
 * its permit directly to the oldest one (no barging). */
typedef struct weft_sem {
  uint64_t opaque[6]; /* 48 bytes, 8-byte aligned */
} weft_sem;

/* Initialise with value permits (at most 2^61). Errors: -EINVAL value < 0
 * or too large, s NULL. */
WEFT_API int weft_sem_init(weft_sem *s, int64_t value);
/* A bounded semaphore: a release that would take the value above its initial
 * value fails with -EOVERFLOW. Errors: -EINVAL as weft_sem_init. */
WEFT_API int weft_sem_init_bounded(weft_sem *s, int64_t value);
/* Destroy. Errors: -EBUSY tasks wait on it. */
WEFT_API int weft_sem_destroy(weft_sem *s);
/* Take a permit, suspending while there is none. Suspends.
 * Errors: -ECANCELED (no permit was taken); -EINVAL outside a task. */
WEFT_API int weft_sem_acquire(weft_sem *s);
/* Take a permit if one is free and nobody waits. Any thread.
 * Errors: -EAGAIN. */
WEFT_API int weft_sem_try_acquire(weft_sem *s);
/* Give a permit back (to the oldest waiter, if any). Any thread.
 * Errors: -EOVERFLOW past the bound of a bounded semaphore, or past 2^61. */
WEFT_API int weft_sem_release(weft_sem *s);
/* The free permits now (0 while tasks wait). Any thread. */
WEFT_API int64_t weft_sem_value(weft_sem *s);
/* Whether an acquire would have to wait (locked() in asyncio). Any thread. */
WEFT_API bool weft_sem_locked(weft_sem *s);

/* ------------------------------------------------------------ barrier */

/* asyncio.Barrier: `parties` tasks meet; the last to arrive releases them
 * all and the barrier starts its next round. */
typedef struct weft_barrier {
  uint64_t opaque[8]; /* 64 bytes, 8-byte aligned */
} weft_barrier;

/* Errors: -EINVAL parties is 0 or above INT_MAX, b NULL. */
WEFT_API int weft_barrier_init(weft_barrier *b, unsigned parties);
/* Errors: -EBUSY tasks wait on it. Once it returns 0 the memory may be
 * reused, even before the waiters a round's end released have run (not so
 * one cancelled at that very moment, which leaves through the barrier). */
WEFT_API int weft_barrier_destroy(weft_barrier *b);
/* Wait until `parties` tasks have arrived in this round. Returns the
 * caller's arrival index (0 .. parties-1; the last to arrive gets parties-1
 * and does not suspend). A waiter cancelled before the round ends leaves it
 * (one more task must then arrive, as in asyncio). Suspends.
 * Errors: -EPIPE the barrier is broken (aborted, or reset while this task
 * waited): every waiter and every later wait get it until weft_barrier_reset;
 * -ECANCELED; -EINVAL outside a task. */
WEFT_API int weft_barrier_wait(weft_barrier *b);
/* Break the barrier: every waiter and every later wait return -EPIPE until
 * reset. Any thread. Returns 0. */
WEFT_API int weft_barrier_abort(weft_barrier *b);
/* Back to an empty round, not broken; tasks waiting now return -EPIPE.
 * Any thread. Returns 0. */
WEFT_API int weft_barrier_reset(weft_barrier *b);
/* Tasks waiting in the current round, the parties, and whether it is broken.
 * Any thread. */
WEFT_API unsigned weft_barrier_n_waiting(weft_barrier *b);
WEFT_API unsigned weft_barrier_parties(weft_barrier *b);
WEFT_API bool weft_barrier_broken(weft_barrier *b);

/* ------------------------------------------------------------ queue */

/* asyncio.Queue, LifoQueue and PriorityQueue of void * items. */
typedef struct weft_queue {
  uint64_t opaque[24]; /* 192 bytes, 8-byte aligned */
} weft_queue;

enum weft_queue_kind {
  WEFT_QUEUE_FIFO = 0,     /* asyncio.Queue: oldest first */
  WEFT_QUEUE_LIFO = 1,     /* asyncio.LifoQueue: newest first */
  WEFT_QUEUE_PRIORITY = 2, /* asyncio.PriorityQueue: smallest by cmp first */
};

/* The order of a priority queue: negative when a comes out before b, 0 when
 * either may come first, positive otherwise (qsort's convention). */
typedef int (*weft_queue_cmp)(const void *a, const void *b);

/* maxsize: the most items the queue holds; 0 = unbounded. maxsize is a
 * size_t: a negative maxsize converted to size_t (any value above
 * PTRDIFF_MAX) is rejected with -EINVAL. */

/* A FIFO queue. Errors: -ENOMEM; -EINVAL maxsize (above), q NULL (every
 * init). */
WEFT_API int weft_queue_init(weft_queue *q, size_t maxsize);
/* A queue of the given kind; cmp is required for WEFT_QUEUE_PRIORITY and
 * ignored otherwise. Errors: -ENOMEM; -EINVAL maxsize, an unknown kind, or
 * a priority queue without cmp. */
WEFT_API int weft_queue_init_ex(weft_queue *q, size_t maxsize, enum weft_queue_kind kind, weft_queue_cmp cmp);
/* Shorthands for init_ex. */
WEFT_API int weft_queue_init_lifo(weft_queue *q, size_t maxsize);
WEFT_API int weft_queue_init_priority(weft_queue *q, size_t maxsize, weft_queue_cmp cmp);
/* Destroy (the items still in it are dropped: the caller owns them).
 * Errors: -EBUSY tasks still wait on it (put, get or join; nothing is freed). */
WEFT_API int weft_queue_destroy(weft_queue *q);
/* Put an item, suspending while the queue is full. Suspends. A waiting
 * putter's item is put in for it by the get that frees a slot (unlike
 * asyncio, where the woken putter puts it when it runs: so full() may stay
 * true after a get); if the putter is cancelled at that very moment, put
 * returns 0 and the cancel request stays pending for its next wait.
 * Errors: -ECANCELED (nothing was put); -ESHUTDOWN the queue is shut down
 * (nothing was put); -ENOMEM; -EINVAL outside a task. */
WEFT_API int weft_queue_put(weft_queue *q, void *item);
/* Take the next item (into *item; item NULL: it is dropped), suspending
 * while the queue is empty. A put (or
 * put_nowait) that finds a getter waiting hands the item to it and not to
 * the queue (unlike asyncio, where the woken getter takes it when it runs):
 * qsize/empty do not count it, another task's get_nowait does not see it,
 * and a bounded queue takes up to maxsize more items besides those handed
 * over before it is full. Suspends.
 * Errors: -ECANCELED (no item was taken: a cancelled getter loses nothing);
 * -ESHUTDOWN the queue is shut down and empty; -EINVAL outside a task. */
WEFT_API int weft_queue_get(weft_queue *q, void **item);
/* Without suspending. Any thread. Errors: -EAGAIN full (put) or empty (get);
 * -ESHUTDOWN shut down (put), shut down and empty (get); -ENOMEM an
 * unbounded queue could not grow. */
WEFT_API int weft_queue_put_nowait(weft_queue *q, void *item);
WEFT_API int weft_queue_get_nowait(weft_queue *q, void **item);
/* Items in the queue, and the predicates on that count. Any thread. */
WEFT_API size_t weft_queue_qsize(weft_queue *q);
WEFT_API bool weft_queue_empty(weft_queue *q);
WEFT_API bool weft_queue_full(weft_queue *q);
/* Each put counts an unfinished item; task_done marks one finished.
 * Any thread. Errors: -EOVERFLOW more task_done calls than items put. */
WEFT_API int weft_queue_task_done(weft_queue *q);
/* Suspend until every item put has been marked done (returns at once when
 * none is unfinished). Suspends. Errors: -ECANCELED; -EINVAL outside a task. */
WEFT_API int weft_queue_join(weft_queue *q);
/* Python 3.13's Queue.shutdown: later puts fail with -ESHUTDOWN and wake
 * with it; gets return the items left, then -ESHUTDOWN. immediate: the items
 * left are dropped at once (each counts as done, so join returns; nothing
 * frees them: for items that own memory, shut down with immediate false
 * and empty the queue with get_nowait instead) and gets
 * fail at once; an item a put handed to a waiting getter that has not run
 * yet is dropped too, when that getter runs (its get fails). Calling it
 * again is harmless. Any thread. Returns 0. */
WEFT_API int weft_queue_shutdown(weft_queue *q, bool immediate);
/* Whether shutdown was called. Any thread. */
WEFT_API bool weft_queue_is_shutdown(weft_queue *q);

#ifdef __cplusplus
}
#endif

#endif
