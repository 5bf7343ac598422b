/* sync/queue.c: asyncio.Queue, LifoQueue and PriorityQueue across workers
 * (bounded or not), with join/task_done and Python 3.13's shutdown.
 *
 * State under the spinlock: a buffer of items, the waiting getters, the
 * waiting putters and the waiting joiners, the count of unfinished items
 * (put and not yet marked done) and the shutdown flag. The buffer is a ring
 * (FIFO: items from head), a stack (LIFO: head stays 0, items taken from
 * the end) or a binary min-heap ordered by the caller's cmp (PRIORITY: head
 * stays 0, the root is next). As in asyncio, a put stores the item and
 * wakes the oldest getter; the woken getter takes the next item when it
 * runs (if another task took it first, it waits again); and a get wakes
 * the oldest putter. Two shortcuts (below: GETTER and PUTTER HAND-OVER)
 * let the waker do the woken task's work for it when the woken task's
 * wait has not ended yet. A cancelled getter never loses an item (it never
 * held one, or it returns it) and a cancelled putter never inserts half of
 * one (it inserts only when it returns 0). A waiter that was chosen by a
 * wake (its node no longer linked) but was cancelled at the same moment
 * passes the wakeup on to the next waiter of its kind, if what it waited
 * for is still there.
 *
 * PUTTER HAND-OVER. A get that frees a slot while putters wait inserts
 * the oldest putter's item itself (the putter left it in its wait node,
 * t->waiter.item) and marks the node (mark = 1), then wakes the putter,
 * whose put has returned 0 by the time it runs. On a bounded queue with a
 * producer ahead of its consumer this halves the task switches: the
 * consumer takes the freed slot's next item at once instead of waiting for
 * the producer to run and put it (queue_throughput maxsize=1: one switch
 * per item instead of two, as Go's channels do). The getter skips it when
 * the putter's wait has already ended (cancelled first: as in asyncio, its
 * item is not put; it passes the wakeup on). A putter chosen this way and
 * cancelled at the same moment returns 0 (its item is in) and its cancel
 * request stays pending for its next wait. So full() may still be true
 * right after a get (asyncio: until the woken putter runs).
 *
 * GETTER HAND-OVER. A put into an empty queue while getters wait hands
 * the item to the oldest getter directly (its wait node's item, mark = 1)
 * instead of through the buffer, unless that getter's wait has already
 * ended (cancelled first: as above, the item goes into the buffer and the
 * getter passes the wakeup on). A getter chosen this way returns the item
 * without taking the lock again (wait_on's HANDED); one cancelled at the
 * same moment returns it too, its cancel request left pending. So no item
 * is lost to a cancelled getter: a getter either never got the item, or
 * returns it. Only into an EMPTY FIFO queue: items already buffered are
 * older and go first, and a LIFO or priority getter must take the newest
 * or smallest item there is when it runs, as asyncio's does (a second put
 * before it runs may bring a better one). A getter handed an item that
 * finds the queue shut down with immediate when it runs drops the item
 * (counted done), as the drain would have in asyncio, where the item was
 * still in the buffer, and fails with -ESHUTDOWN.
 *
 * JOIN. task_done bringing `unfinished` to 0 releases every joiner waiting
 * then: it marks their nodes (mark = 1, a walk back from the tail over the
 * unmarked ones) and pops marked nodes in batches, waking them after
 * unlocking; a joiner that arrives later (after a new put) is unmarked and
 * keeps waiting (the same scheme as sync/barrier.c).
 *
 * SHUTDOWN sets the flag (immediate: and drops the items, each counted as
 * done) and wakes every getter and putter; they re-check: a putter fails
 * with -ESHUTDOWN, a getter takes an item if one is left, else fails. No
 * task waits on a shut-down queue's getters or putters lists afterwards.
 *
 * Growth. The buffer starts at min(maxsize, 1024) slots (16 if unbounded)
 * and doubles up to maxsize, outside the lock (no allocation under a
 * spinlock): the putter unlocks, allocates, re-locks and re-checks. The
 * priority queue's cmp runs under the spinlock: it must be short and must
 * not call into weft.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <weft/sync.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"
#include "sync/current.h"

typedef struct queue_impl {
  weft__spinlock lock;
  int kind;                /* immutable: enum weft_queue_kind */
  weft_queue_cmp cmp;      /* immutable: PRIORITY's order */
  void **buf;              /* under lock: cap slots, count items (see above) */
  size_t cap, head, count;
  size_t maxsize;          /* 0 = unbounded; immutable */
  size_t unfinished;       /* under lock: items put and not yet marked done */
  _Atomic bool shut;       /* written under lock; read anywhere */
  _Atomic bool shut_now;   /* shut down with immediate: written under lock; read anywhere */
  weft__waitlist getters;  /* under lock */
  weft__waitlist putters;  /* under lock */
  weft__waitlist joiners;  /* under lock: released ones (mark 1) first */
} queue_impl;

_Static_assert(sizeof(queue_impl) <= sizeof(weft_queue), "weft_queue's storage is too small");
_Static_assert(_Alignof(queue_impl) <= _Alignof(weft_queue), "weft_queue's alignment is too small");

static inline queue_impl *impl(weft_queue *q) { return (queue_impl *)(void *)q->opaque; }

#define INITIAL_BOUNDED 1024
#define INITIAL_UNBOUNDED 16

int weft_queue_init_ex(weft_queue *q, size_t maxsize, enum weft_queue_kind kind, weft_queue_cmp cmp) {
  if (!q) return -EINVAL;
  if (maxsize > PTRDIFF_MAX) {
    weft__debug_misuse("weft_queue_init with a negative maxsize");
    return -EINVAL;
  }
  if (kind != WEFT_QUEUE_FIFO && kind != WEFT_QUEUE_LIFO && kind != WEFT_QUEUE_PRIORITY) {
    weft__debug_misuse("weft_queue_init_ex with an unknown kind");
    return -EINVAL;
  }
  if (kind == WEFT_QUEUE_PRIORITY && !cmp) {
    weft__debug_misuse("weft_queue_init_priority without a comparison");
    return -EINVAL;
  }
  queue_impl *x = impl(q);
  memset(x, 0, sizeof *x);
  weft__spin_init(&x->lock);
  x->kind = kind;
  x->cmp = cmp;
  x->maxsize = maxsize;
  x->cap = maxsize ? (maxsize < INITIAL_BOUNDED ? maxsize : INITIAL_BOUNDED) : INITIAL_UNBOUNDED;
  x->buf = weft__alloc(sizeof(void *) * x->cap);
  if (!x->buf) return -ENOMEM;
  weft__store(&x->shut, false, RELAXED); /* relaxed: init, before the queue is shared */
  weft__store(&x->shut_now, false, RELAXED); /* relaxed: init */
  weft__waitlist_init(&x->getters);
  weft__waitlist_init(&x->putters);
  weft__waitlist_init(&x->joiners);
  return 0;
}

int weft_queue_init(weft_queue *q, size_t maxsize) { return weft_queue_init_ex(q, maxsize, WEFT_QUEUE_FIFO, NULL); }
int weft_queue_init_lifo(weft_queue *q, size_t maxsize) { return weft_queue_init_ex(q, maxsize, WEFT_QUEUE_LIFO, NULL); }
int weft_queue_init_priority(weft_queue *q, size_t maxsize, weft_queue_cmp cmp) {
  return weft_queue_init_ex(q, maxsize, WEFT_QUEUE_PRIORITY, cmp);
}

int weft_queue_destroy(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  bool busy = x->getters.len || x->putters.len || x->joiners.len;
  weft__spin_unlock(&x->lock);
  if (busy) {
    weft__debug_misuse("weft_queue_destroy while tasks wait on it");
    return -EBUSY;
  }
  weft__free(x->buf, sizeof(void *) * x->cap);
  x->buf = NULL;
  return 0;
}

static inline bool is_full(queue_impl *x) { return x->maxsize && x->count >= x->maxsize; }

/* ---- the three buffers; caller holds the lock ---- */

static void heap_push(queue_impl *x, void *item) {
  size_t i = x->count++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (x->cmp(x->buf[parent], item) <= 0) break;
    x->buf[i] = x->buf[parent];
    i = parent;
  }
  x->buf[i] = item;
}

static void *heap_pop(queue_impl *x) {
  void *top = x->buf[0], *last = x->buf[--x->count];
  size_t n = x->count, i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && x->cmp(x->buf[c + 1], x->buf[c]) < 0) c++;
    if (x->cmp(last, x->buf[c]) <= 0) break;
    x->buf[i] = x->buf[c];
    i = c;
  }
  if (n) x->buf[i] = last;
  return top;
}

/* Room is there (count < cap). */
static inline void push_item(queue_impl *x, void *item) {
  if (weft__likely(x->kind == WEFT_QUEUE_FIFO)) {
    size_t i = x->head + x->count;
    if (i >= x->cap) i -= x->cap;
    x->buf[i] = item;
    x->count++;
  } else if (x->kind == WEFT_QUEUE_LIFO) {
    x->buf[x->count++] = item;
  } else {
    heap_push(x, item);
  }
}

/* An item is there (count > 0). */
static inline void *pop_item(queue_impl *x) {
  if (weft__likely(x->kind == WEFT_QUEUE_FIFO)) {
    void *item = x->buf[x->head];
    if (++x->head == x->cap) x->head = 0;
    x->count--;
    return item;
  }
  if (x->kind == WEFT_QUEUE_LIFO) return x->buf[--x->count];
  return heap_pop(x);
}

/* Caller holds the lock; count == cap and the queue is not full (cap <
 * maxsize, or unbounded). One attempt to double the buffer: unlock,
 * allocate, relock; installed only if nobody changed the buffer meanwhile.
 * Returns with the lock held: 0 (the caller re-checks everything: another
 * task may have grown, filled or shut the queue meanwhile) or -ENOMEM.
 * The items keep their order: a ring is unrolled from head, a stack or
 * heap (head 0) is copied as it is. */
static int grow(queue_impl *x) {
  size_t old_cap = x->cap, new_cap = old_cap * 2;
  if (x->maxsize && new_cap > x->maxsize) new_cap = x->maxsize;
  weft__spin_unlock(&x->lock);
  void **nb = weft__alloc(sizeof(void *) * new_cap);
  weft__spin_lock(&x->lock);
  if (!nb) return -ENOMEM;
  if (x->cap != old_cap || x->count < x->cap) { /* someone else grew it, or room appeared */
    weft__spin_unlock(&x->lock);
    weft__free(nb, sizeof(void *) * new_cap);
    weft__spin_lock(&x->lock);
    return 0;
  }
  for (size_t i = 0, j = x->head; i < x->count; i++) {
    nb[i] = x->buf[j];
    if (++j == x->cap) j = 0;
  }
  void **old = x->buf;
  x->buf = nb;
  x->cap = new_cap;
  x->head = 0;
  weft__spin_unlock(&x->lock);
  weft__free(old, sizeof(void *) * old_cap);
  weft__spin_lock(&x->lock);
  return 0;
}

/* Caller holds the lock; the queue is not shut down, not full, and has a
 * free slot (count < cap): insert and choose a getter to wake. */
static void insert_locked(queue_impl *x, void *item, weft__wakeup *wake, bool *have_wake) {
  x->unfinished++;
  *have_wake = weft__waitlist_pop(&x->getters, wake);
  if (*have_wake && x->count == 0 && x->kind == WEFT_QUEUE_FIFO && weft__wait_pending(wake->task, wake->seq)) {
    /* GETTER HAND-OVER (above): the item goes to the getter directly */
    weft__waiter *n = &wake->task->waiter; /* unlinked, but its task waits: stable under the lock */
    n->item = item;
    n->mark = 1;
    return;
  }
  push_item(x, item);
}

static inline bool is_shut(queue_impl *x) {
  return weft__load(&x->shut, RELAXED); /* relaxed: written under the lock, read under it */
}

int weft_queue_put_nowait(weft_queue *q, void *item) {
  queue_impl *x = impl(q);
  weft__wakeup wake;
  bool have_wake = false;
  int rc = 0;
  weft__spin_lock(&x->lock);
  for (;;) {
    if (is_shut(x)) {
      rc = -ESHUTDOWN;
      break;
    }
    if (is_full(x)) {
      rc = -EAGAIN;
      break;
    }
    if (x->count == x->cap) {
      rc = grow(x);
      if (rc) break;
      continue; /* re-check: the lock was dropped */
    }
    insert_locked(x, item, &wake, &have_wake);
    break;
  }
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  return rc;
}

/* Caller holds the lock and the queue has an item: take the next, choose
 * a putter to wake, unlock, wake it. The putter's item goes into the slot
 * just freed, on its behalf (PUTTER HAND-OVER, above), unless its wait has
 * ended already (a cancel came first: it then passes the wakeup on) or the
 * queue is shut down. */
static void *take_and_unlock(queue_impl *x) {
  weft__wakeup wake, gwake;
  bool have_gwake = false;
  void *it = pop_item(x);
  bool have_wake = weft__waitlist_pop(&x->putters, &wake);
  if (have_wake && !is_shut(x) && weft__wait_pending(wake.task, wake.seq)) {
    weft__waiter *n = &wake.task->waiter; /* unlinked, but its task waits: stable under the lock */
    insert_locked(x, n->item, &gwake, &have_gwake); /* room: an item was just taken */
    n->mark = 1;                                    /* its put is done */
  }
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  if (have_gwake) weft__wakeup_fire(&gwake);
  return it;
}

int weft_queue_get_nowait(weft_queue *q, void **item) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  if (x->count == 0) {
    int rc = is_shut(x) ? -ESHUTDOWN : -EAGAIN;
    weft__spin_unlock(&x->lock);
    return rc;
  }
  void *it = take_and_unlock(x);
  if (item) *item = it;
  return 0;
}

/* Wait on wl (lock held on entry). Returns HANDED, with the lock NOT
 * held, when a waker marked our node (mark = 1: a getter put our item in,
 * a putter handed us its item in waiter.item, or a task_done released a
 * joiner) and the wake that ended the wait was its: the waker wrote the
 * node under the lock before its wake, whose release CAS our resumption
 * acquires, and nobody touches an unlinked node after that, so the node
 * is read without relocking (a hop of ping_pong saves a lock round trip,
 * which on 2 workers is a cache miss). Otherwise returns with the lock
 * held: 0 when woken normally, -ECANCELED when cancelled (then *chosen
 * tells whether a waker had picked this waiter, and mark whether it had
 * done our work already). */
enum { HANDED = 1 };
static int wait_on(queue_impl *x, weft__waitlist *wl, weft__task *self, void *item, bool *chosen) {
  int64_t seq = weft__wait_prepare(true);
  if (seq < 0) {
    *chosen = false;
    return (int)seq;
  }
  weft__waiting_on(self, wl == &x->getters   ? WEFT__WAITING_QUEUE_GET
                         : wl == &x->putters ? WEFT__WAITING_QUEUE_PUT
                                             : WEFT__WAITING_OTHER); /* a joiner: not a put */
  weft__waitlist_push(wl, self, (uint32_t)seq);
  self->waiter.mark = 0;
  self->waiter.item = item; /* a putter's: a getter may insert it for us */
  weft__spin_unlock(&x->lock);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  if (why == WEFT__WAKE_NORMAL && self->waiter.mark) return HANDED;
  weft__spin_lock(&x->lock);
  *chosen = !self->waiter.linked;
  weft__waitlist_remove(wl, self);
  return why == WEFT__WAKE_CANCEL ? -ECANCELED : 0;
}

/* The calling task's cancel request, delivered by a wait whose work was
 * done anyway, is made pending again (io/op.c does the same). */
static void repend_cancel(weft__task *self) {
  weft__store(&self->cancel_pending, 1, RELAXED); /* relaxed: the flag carries no data */
}

/* A waiter of wl was cancelled (lock held). If a waker had chosen it and
 * what it waited for is still there, the wakeup goes to the next waiter of
 * wl: nothing is lost to a cancelled waiter. Unlocks; returns -ECANCELED. */
static int cancelled_and_unlock(queue_impl *x, weft__waitlist *wl, bool pass_on) {
  weft__wakeup wake;
  bool have_wake = pass_on && weft__waitlist_pop(wl, &wake);
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  return -ECANCELED;
}

int weft_queue_put(weft_queue *q, void *item) {
  queue_impl *x = impl(q);
  weft__task *self = weft__sync_current();
  if (!self) {
    weft__debug_misuse("weft_queue_put outside a task (use weft_queue_put_nowait)");
    return -EINVAL;
  }
  weft__wakeup wake;
  bool have_wake = false;
  weft__spin_lock(&x->lock);
  for (;;) {
    if (is_shut(x)) {
      weft__spin_unlock(&x->lock);
      return -ESHUTDOWN;
    }
    if (!is_full(x)) {
      if (x->count < x->cap) break;
      int rc = grow(x);
      if (rc) {
        weft__spin_unlock(&x->lock);
        return rc;
      }
      continue; /* re-check: the lock was dropped */
    }
    bool chosen;
    int rc = wait_on(x, &x->putters, self, item, &chosen);
    if (rc == HANDED) return 0; /* a getter put our item in */
    if (chosen && self->waiter.mark) { /* a getter put our item in, and we were cancelled at that moment */
      weft__spin_unlock(&x->lock);
      if (rc < 0) repend_cancel(self); /* cancelled at that moment: the put happened, the request stays */
      return 0;
    }
    if (rc < 0) return cancelled_and_unlock(x, &x->putters, chosen && !is_full(x) && !is_shut(x));
  }
  insert_locked(x, item, &wake, &have_wake);
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  return 0;
}

static void release_joiners_and_unlock(queue_impl *x);

/* A getter handed an item before a shutdown(immediate) that came before it
 * ran: the drain drops it, as asyncio's would (the item was still in its
 * buffer), counting it done. Caller holds the lock; unlocks. */
static void drop_handed_and_unlock(queue_impl *x) {
  if (x->unfinished && --x->unfinished == 0 && x->joiners.len) {
    release_joiners_and_unlock(x);
    return;
  }
  weft__spin_unlock(&x->lock);
}

int weft_queue_get(weft_queue *q, void **item) {
  queue_impl *x = impl(q);
  weft__task *self = weft__sync_current();
  if (!self) {
    weft__debug_misuse("weft_queue_get outside a task (use weft_queue_get_nowait)");
    return -EINVAL;
  }
  weft__spin_lock(&x->lock);
  while (x->count == 0) {
    if (is_shut(x)) {
      weft__spin_unlock(&x->lock);
      return -ESHUTDOWN;
    }
    bool chosen;
    int rc = wait_on(x, &x->getters, self, NULL, &chosen);
    if (rc == HANDED || (chosen && self->waiter.mark)) { /* a putter handed us its item */
      if (weft__unlikely(weft__load(&x->shut_now, RELAXED))) { /* relaxed: a hint; re-read under the lock */
        if (rc == HANDED) weft__spin_lock(&x->lock);
        if (is_shut(x) && weft__load(&x->shut_now, RELAXED)) {
          drop_handed_and_unlock(x);
          return rc < 0 ? rc : -ESHUTDOWN;
        }
        if (rc == HANDED) weft__spin_unlock(&x->lock);
      }
      if (rc != HANDED) {
        weft__spin_unlock(&x->lock);
        if (rc < 0) repend_cancel(self); /* cancelled at that moment: the get happened, the request stays */
      }
      if (item) *item = self->waiter.item;
      return 0;
    }
    if (rc < 0) return cancelled_and_unlock(x, &x->getters, chosen && x->count);
  }
  void *it = take_and_unlock(x);
  if (item) *item = it;
  return 0;
}

size_t weft_queue_qsize(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  size_t n = x->count;
  weft__spin_unlock(&x->lock);
  return n;
}

bool weft_queue_empty(weft_queue *q) { return weft_queue_qsize(q) == 0; }

bool weft_queue_full(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  bool f = is_full(x);
  weft__spin_unlock(&x->lock);
  return f;
}

/* ---- join / task_done ---- */

/* Caller holds the lock. Pops up to BATCH waiters of wl, all of them or
 * (marked_only) those at the head with a mark, into wake[]. */
enum { BATCH = 32 };
static int pop_batch(weft__waitlist *wl, weft__wakeup *wake, bool marked_only) {
  int k = 0;
  while (k < BATCH && wl->head && (!marked_only || wl->head->mark)) weft__waitlist_pop(wl, &wake[k++]);
  return k;
}

/* Caller holds the lock and unfinished is 0: release every joiner waiting
 * now (mark them, pop the marked ones in batches, wake them unlocked).
 * Unlocks. */
static void release_joiners_and_unlock(queue_impl *x) {
  for (weft__waiter *n = x->joiners.tail; n && !n->mark; n = n->prev) n->mark = 1;
  for (;;) {
    weft__wakeup wake[BATCH];
    int k = pop_batch(&x->joiners, wake, true);
    weft__spin_unlock(&x->lock);
    for (int i = 0; i < k; i++) weft__wakeup_fire(&wake[i]);
    if (k < BATCH) return;
    weft__spin_lock(&x->lock);
  }
}

int weft_queue_task_done(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  if (x->unfinished == 0) {
    weft__spin_unlock(&x->lock);
    weft__debug_misuse("weft_queue_task_done called more times than items were put");
    return -EOVERFLOW;
  }
  if (--x->unfinished == 0 && x->joiners.len) {
    release_joiners_and_unlock(x);
    return 0;
  }
  weft__spin_unlock(&x->lock);
  return 0;
}

int weft_queue_join(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__task *self = weft__sync_current();
  if (!self) {
    weft__debug_misuse("weft_queue_join outside a task");
    return -EINVAL;
  }
  weft__spin_lock(&x->lock);
  if (x->unfinished == 0) {
    weft__spin_unlock(&x->lock);
    return 0;
  }
  bool chosen;
  int rc = wait_on(x, &x->joiners, self, NULL, &chosen); /* woken only by a release */
  if (rc == HANDED) return 0;                                /* released, lock not held */
  weft__spin_unlock(&x->lock);
  return rc;
}

/* ---- shutdown ---- */

int weft_queue_shutdown(weft_queue *q, bool immediate) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  weft__store(&x->shut, true, RELAXED); /* under the lock: its readers hold it too */
  if (immediate) {
    weft__store(&x->shut_now, true, RELAXED); /* under the lock, as shut */
    size_t dropped = x->count;
    x->count = 0;
    x->head = 0;
    x->unfinished = dropped < x->unfinished ? x->unfinished - dropped : 0;
    if (x->unfinished == 0 && x->joiners.len) {
      release_joiners_and_unlock(x);
      weft__spin_lock(&x->lock);
    }
  }
  /* Wake every getter and putter; none can start waiting any more. */
  for (;;) {
    weft__wakeup wake[2 * BATCH];
    int kg = pop_batch(&x->getters, wake, false);
    int kp = pop_batch(&x->putters, wake + kg, false);
    weft__spin_unlock(&x->lock);
    for (int i = 0; i < kg + kp; i++) weft__wakeup_fire(&wake[i]);
    if (kg < BATCH && kp < BATCH) return 0;
    weft__spin_lock(&x->lock);
  }
}

bool weft_queue_is_shutdown(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  bool s = is_shut(x);
  weft__spin_unlock(&x->lock);
  return s;
}
