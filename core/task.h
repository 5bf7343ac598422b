/* core/task.h: the task record and the wait protocol every suspension uses.
 *
 * THE WAIT-STATE WORD. Each task has one 64-bit atomic word `ws`:
 *
 *   bits 63..32  seq     the wait sequence number: incremented by the task
 *                        itself each time it prepares a wait; never reset,
 *                        not even when the record is recycled
 *   bits 15..8   reason  why the wait ended (WEFT__WAKE_*), set by the waker
 *   bit  4       cancellable  whether WEFT__WAKE_CANCEL may end this wait
 *   bits 3..0    state   WEFT__TS_*
 *
 * States and who moves them:
 *   RUNNING  --task: prepare-->        WAITING   (registered in some wait
 *                                                 list or timer, not yet
 *                                                 switched out)
 *   WAITING  --scheduler, after the
 *              task switched out-->    PARKED    ("publish after switch")
 *   WAITING  --waker-->                NOTIFIED  (the scheduler sees it after
 *                                                 the switch and resumes the
 *                                                 task at once)
 *   PARKED   --waker-->                RUNNABLE  (and the waker enqueues it)
 *   RUNNABLE/NOTIFIED --scheduler-->   RUNNING   (reason copied to the task)
 *   FRESH    --scheduler, or a joiner
 *              taking it off its own
 *              spawn stack-->           RUNNING   (see "inline joins" in task.c)
 *
 * A waker names the seq it was given when the waiter registered; wakes for
 * any other seq, or for a task that is not WAITING/PARKED, do nothing and
 * return false. Hence: a wake that races with a suspend either finds the
 * task PARKED and enqueues it, or turns WAITING into NOTIFIED so that the
 * suspend returns at once (no lost wakeup); a stale wake (an old timer, a
 * wait list that lost a race with a cancellation) never ends a later wait;
 * exactly one waker wins each wait (the CAS), so the winner knows it owns
 * the wakeup and a loser can pass what it carried to someone else.
 *
 * CANCELLATION (asyncio's): weft_cancel() counts the request (`cancelling`),
 * sets `cancel_pending`, then wakes the task with WEFT__WAKE_CANCEL if it is
 * in a cancellable wait. prepare() stores WAITING and then reads
 * cancel_pending; cancel stores cancel_pending and then reads ws; both with
 * seq_cst, so at least one of them sees the other (Dekker): either prepare
 * aborts the wait, or cancel wakes it. A request is delivered (pending
 * cleared) when a wait returns -ECANCELED; requests made before delivery
 * coalesce, as in asyncio.
 *
 * RECORDS are type-stable: allocated in slabs that live as long as the
 * runtime, recycled through free lists, never unmapped, so a stale pointer
 * (in a timer entry, a stale handle) always points at a task record. The
 * handle's generation and the reference count share the `ref` word:
 * bits 63..32 generation, bits 31..0 references (one for the handle unless
 * detached, one for the running task, temporary ones for joiners and
 * cancellers). The last reference to go bumps the generation and recycles
 * the record, so a stale handle gets -ESRCH.
 */
#ifndef WEFT_CORE_TASK_H
#define WEFT_CORE_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <weft/core.h>

#include "core/atomic.h"
#include "core/fiber.h"
#include "core/link.h"
#include "core/stack.h"

enum {
  WEFT__TS_RUNNING = 0,
  WEFT__TS_WAITING = 1,
  WEFT__TS_PARKED = 2,
  WEFT__TS_NOTIFIED = 3,
  WEFT__TS_RUNNABLE = 4,
  WEFT__TS_FRESH = 5, /* spawned, queued, never run (a joiner may run it inline) */
};

enum {
  WEFT__WAKE_NONE = 0,
  WEFT__WAKE_NORMAL = 1,  /* what was waited for happened */
  WEFT__WAKE_CANCEL = 2,  /* a cancellation request */
  WEFT__WAKE_TIMER = 3,   /* the wait's deadline passed */
};

#define WEFT__WS_STATE(w) ((uint32_t)((w)&0xfu))
#define WEFT__WS_CANCELLABLE(w) (((w) >> 4) & 1u)
#define WEFT__WS_REASON(w) ((uint32_t)(((w) >> 8) & 0xffu))
#define WEFT__WS_SEQ(w) ((uint32_t)((w) >> 32))
#define WEFT__WS_MAKE(seq, reason, cancellable, state)                                     \
  (((uint64_t)(uint32_t)(seq) << 32) | ((uint64_t)(reason) << 8) | ((uint64_t)(cancellable) << 4) | \
   (uint64_t)(state))

/* What a task asks of the context that resumes after it switched out
 * (passed through its worker: weft__switch_out / weft__finish_switch). */
enum {
  WEFT__INTENT_PARK = 1,  /* it prepared a wait: CAS WAITING -> PARKED */
  WEFT__INTENT_YIELD = 2, /* put it behind the other runnable tasks */
  WEFT__INTENT_EXIT = 3,  /* it ended: recycle its stack, drop its reference */
};

/* A node of a task's done list: a joining task (on its stack) or a done
 * callback (allocated). Linked under the task's done lock. */
typedef struct weft__done_node {
  struct weft__done_node *next;
  struct weft_task_rec *waiter; /* a joining task, or NULL for a callback */
  uint32_t seq;                 /* the joiner's wait seq */
  bool linked;                  /* under the done lock: still in the list */
  bool keep;                    /* a callback node owned by its callback's code (core/await.c):
                                   the finisher does not free it */
  weft_done_cb cb;              /* a callback */
  void *cb_arg;
} weft__done_node;

/* The done word: a tiny lock and three flags (see core/task.c, "done list").
 *   bit 0  LOCKED     the done list is being changed
 *   bit 1  DONE       the task has ended, status is final, and every done
 *                     callback added so far has run
 *   bit 2  WAITERS    the done list is not empty
 *   bit 3  FINISHING  the task has ended and status is final, but the
 *                     finishing thread still runs its callbacks: a callback
 *                     added now joins the list behind them (FIFO)
 * "Ended" (status final: join, done(), status(), cancel) is DONE or
 * FINISHING. A task ending with no waiters needs one CAS (0 -> DONE). */
enum { WEFT__DL_LOCKED = 1u, WEFT__DL_DONE = 2u, WEFT__DL_WAITERS = 4u, WEFT__DL_FINISHING = 8u };
enum { WEFT__DL_ENDED = WEFT__DL_DONE | WEFT__DL_FINISHING };

/* A task's place in a primitive's wait list (core/waitlist.h): under that
 * primitive's lock. A task waits in at most one list at a time. */
typedef struct weft__waiter {
  struct weft__waiter *next, *prev;
  struct weft_task_rec *task;
  uint32_t seq;
  bool linked;
  uint8_t mark; /* the primitive's own use, under its lock (the barrier: its round ended) */
  void *item;   /* the primitive's own use, under its lock (the queue: a waiting putter's item) */
} weft__waiter;

struct weft_runtime;

typedef struct weft_task_rec {
  weft__link link;              /* run-queue / inbox / free-list link: owner of that queue */
  weft__fiber fiber;            /* owner: the thread running or resuming it */
  weft__stack *stack;           /* NULL until first run; the running thread */
  weft_fn fn;                   /* set at spawn, read at first run */
  void *arg;
  struct weft_runtime *rt;     /* set at spawn */
  _Atomic uint64_t ws;          /* the wait-state word (above) */
  _Atomic uint64_t ref;         /* generation << 32 | references */
  _Atomic uint32_t done;        /* WEFT__DL_* */
  union {                       /* a task waits in one place at a time: */
    weft__waiter waiter;        /* in a primitive's list (under that primitive's lock), or */
    weft__done_node join_node;  /* in another task's done list (under its done lock) */
  };
  weft__done_node *done_list;   /* under the done lock: joiners and callbacks, FIFO */
  weft__done_node *done_tail;
  int status;                   /* the result: written before DONE is set (release) */
  _Atomic int cancelling;       /* cancel requests not withdrawn */
  _Atomic int cancel_pending;   /* a request not yet delivered */
  uint32_t wake_reason;         /* the running thread: why the last wait ended */
  uint8_t started;              /* the running thread */
  uint8_t detached;             /* set at spawn */
  _Atomic int8_t last_worker;   /* relaxed: for listings and the migrate test mode */
  _Atomic uint8_t waiting_on;   /* WEFT__WAITING_*: the task (relaxed) at each wait; dumps read it racily */
  int pin_count;                /* the task itself */
  int pin_worker;               /* the task itself; read by wakers only while pinned */
  _Atomic int pinned;           /* release by the task when pinning; acquire by wakers */
  int shield_depth;             /* the task itself: >0 = waits are not cancellable */
  uint32_t stack_size;          /* requested at spawn (0 = default; at most 1 GiB) */
  _Atomic(struct weft__task_ext *) ext; /* out-of-line state, allocated lazily, kept for
                                   the record's lifetime (core/taskext.h) */
  _Atomic uint64_t name[4];     /* 31 bytes + NUL, word by word (relaxed: listings read it racily) */
  _Atomic uint64_t id;          /* set at spawn (before ref, release): unique per incarnation */
  _Atomic uint8_t alive;        /* 1 between spawn and recycle: listings */
  _Atomic uint8_t handle_held;  /* 1 until the spawner's handle is released (release only once) */
  _Atomic uint32_t name_seq;    /* odd while a name is stored: a seqlock over name[] (core/task.c) */
  _Atomic(struct weft_task_rec *) inline_child; /* the task this one runs inline now (cancel forwards to it) */
  struct weft_task_rec *arena_next; /* the arena's list of every record (immutable once linked) */
} weft__task;

/* What a task waits on (for dumps: weft_task_waiting_on). A wait site
 * stores one after weft__wait_prepare, which resets it to OTHER. */
enum {
  WEFT__WAITING_OTHER = 0, /* some wait that did not say */
  WEFT__WAITING_JOIN,
  WEFT__WAITING_SLEEP,
  WEFT__WAITING_EVENT,
  WEFT__WAITING_QUEUE_GET,
  WEFT__WAITING_QUEUE_PUT,
  WEFT__WAITING_FUTURE,
  WEFT__WAITING_GATHER,   /* gather, wait, as_completed, shield */
  WEFT__WAITING_TASKGROUP,
  WEFT__WAITING_IO,
  WEFT__WAITING_LOCK,
  WEFT__WAITING_COND,
  WEFT__WAITING_SEM,
  WEFT__WAITING_BARRIER,
  WEFT__WAITING_THREAD,   /* to_thread: the blocking pool (room in its queue, or the call) */
  WEFT__WAITING_COUNT_,
};
static inline void weft__waiting_on(weft__task *t, unsigned what) {
  weft__store(&t->waiting_on, (uint8_t)what, RELAXED); /* relaxed: for reports only */
}

#if !defined(WEFT_TSAN) && !defined(WEFT_ASAN) && defined(__x86_64__)
/* spawn_many's speed depends on it (sanitizer builds have larger fibers) */
_Static_assert(sizeof(weft__task) == 256, "the task record must stay 256 bytes");
#endif

/* ---- wait protocol (see above); the calling task is the current one ---- */

/* Begin a wait: returns its seq, or -ECANCELED when a cancel request is
 * pending and the wait is cancellable (the request is then delivered).
 * The caller registers {self, seq} where wakers will find it, then commits. */
int64_t weft__wait_prepare(bool cancellable);

/* Abandon a prepared wait without switching (the condition became true
 * while registering). The caller unregisters first. */
void weft__wait_abandon(void);

/* Switch out until woken for this seq. Returns the wake reason
 * (WEFT__WAKE_*). On WEFT__WAKE_CANCEL the request is delivered. */
uint32_t weft__wait_commit(uint32_t seq);

/* Whether t's wait number seq has not ended yet (no waker, canceller or
 * timer has won it). A snapshot: it may end right after. Any thread. */
static inline bool weft__wait_pending(weft__task *t, uint32_t seq) {
  /* relaxed: a hint; the caller's wake (a CAS) decides */
  uint64_t w = weft__load(&t->ws, RELAXED);
  uint32_t st = WEFT__WS_STATE(w);
  return WEFT__WS_SEQ(w) == seq && (st == WEFT__TS_WAITING || st == WEFT__TS_PARKED);
}

/* Wake t's wait number seq. Any thread. Returns true when this call ended
 * the wait (it won), false when the wait had already ended or is stale, or
 * reason is CANCEL and the wait is not cancellable. */
bool weft__wake(weft__task *t, uint32_t seq, uint32_t reason);

/* weft__wake(t, seq, NORMAL) for the completion of an operation that
 * pinned t to the calling worker (io/op.h). When it makes t runnable and
 * that pin is t's only one (pin_count 1: the task pinned nothing itself),
 * it drops the pin before queueing t, so that t may resume on another
 * worker (an idle one steals it) rather than always on this one; it then
 * sets *unpinned (the caller's record, read by t once resumed). A wake that
 * finds t still switching out (NOTIFIED) leaves the pin: t resumes here at
 * once. Only the worker t is pinned to calls it. */
bool weft__wake_unpinning(weft__task *t, uint32_t seq, bool *unpinned);

/* Wake many waits with reason NORMAL, as weft__wake each; the tasks made
 * runnable are queued together (one inject-queue lock and one worker
 * notification from a thread outside the runtime). All of one runtime.
 * Any thread. */
typedef struct weft__wakeup_pair {
  struct weft_task_rec *task;
  uint32_t seq;
} weft__wakeup_pair;
void weft__wake_many(const weft__wakeup_pair *w, size_t n);

/* The calling task, or NULL outside a task. */
weft__task *weft__task_self(void);

/* Sleep the calling task until deadline (CLOCK_MONOTONIC ns) in a wait that
 * a wake with reason NORMAL/CANCEL may end earlier. Used by sleep and by
 * timed waits. Returns the wake reason. cancellable: as prepare. */
int64_t weft__wait_prepare_deadline(bool cancellable, int64_t deadline);

/* Spawn from any thread into rt (weft_runtime_submit: the caller has
 * checked rt->stopping); detached when out is NULL. 0 or a negative errno. */
int weft__spawn_external(struct weft_runtime *rt, weft_fn fn, void *arg, weft_task *out);

/* Spawn (as weft_spawn_ex) onto worker `worker` of the calling task's
 * runtime: the task starts there pinned (pin_count 1) and calls
 * weft_unpin() when it may move (net/server.c places connection handlers
 * round-robin with it). NULL handle with errno EINVAL (outside a task, no
 * such worker) or ENOMEM. */
weft_task weft__spawn_pinned(unsigned worker, weft_fn fn, void *arg, const weft_spawn_opts *opts);

/* Deliver the pending cancel request: clear pending. */
void weft__cancel_consume(weft__task *t);

/* Take/drop a temporary reference through a handle: -ESRCH when stale. */
int weft__task_ref(weft_task h, weft__task **out);
void weft__task_unref(weft__task *t);

/* Subscribe a callback node (waiter NULL, cb set) to t's end: returns 1,
 * linking nothing, when t is done already, else 0. Unsubscribe: true when
 * the node was still linked (its callback will not run), false when t's end
 * unlinked it (its callback runs or ran). Any thread; t referenced. */
int weft__task_subscribe(weft__task *t, weft__done_node *n);
bool weft__task_unsubscribe(weft__task *t, weft__done_node *n);

/* The name of a WEFT__WAITING_* value (core/dump.c). */
const char *weft__waiting_on_name(unsigned what);

/* The scheduler's side (core/worker.c). */
void weft__task_entry(void *arg);
void weft__task_recycle(weft__task *t);

#endif
