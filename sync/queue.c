/* sync/queue.c: asyncio.Queue across workers (FIFO; bounded or not).
 *
 * State under the spinlock: a ring buffer of items, the waiting getters and
 * the waiting putters. As in asyncio, an item always goes through the
 * buffer: a put stores it and wakes the oldest getter; the woken getter
 * takes the oldest item when it runs (if another task took it first, it
 * waits again). Hence a cancelled getter never loses an item (it never held
 * one) and a cancelled putter never inserts half of one (it inserts only
 * when it returns 0). A waiter that was chosen by a wake (its node no
 * longer linked) but was cancelled at the same moment passes the wakeup on
 * to the next waiter of its kind, if what it waited for is still there.
 *
 * An unbounded queue grows its buffer outside the lock (no allocation under
 * a spinlock): the putter unlocks, allocates, re-locks and re-checks.
 */
#include <errno.h>
#include <string.h>

#include <weft/sync.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"

typedef struct queue_impl {
  weft__spinlock lock;
  void **buf;              /* under lock: cap slots, count items from head */
  size_t cap, head, count;
  size_t maxsize;          /* 0 = unbounded; immutable */
  weft__waitlist getters;  /* under lock */
  weft__waitlist putters;  /* under lock */
} queue_impl;

_Static_assert(sizeof(queue_impl) <= sizeof(weft_queue), "weft_queue's storage is too small");
_Static_assert(_Alignof(queue_impl) <= _Alignof(weft_queue), "weft_queue's alignment is too small");

static inline queue_impl *impl(weft_queue *q) { return (queue_impl *)(void *)q->opaque; }

int weft_queue_init(weft_queue *q, size_t maxsize) {
  queue_impl *x = impl(q);
  memset(x, 0, sizeof *x);
  weft__spin_init(&x->lock);
  x->maxsize = maxsize;
  x->cap = maxsize ? maxsize : 16;
  x->buf = weft__alloc(sizeof(void *) * x->cap);
  if (!x->buf) return -ENOMEM;
  weft__waitlist_init(&x->getters);
  weft__waitlist_init(&x->putters);
  return 0;
}

int weft_queue_destroy(weft_queue *q) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  bool busy = x->getters.len || x->putters.len;
  weft__spin_unlock(&x->lock);
  if (busy) return -EBUSY;
  weft__free(x->buf, sizeof(void *) * x->cap);
  x->buf = NULL;
  return 0;
}

static inline bool is_full(queue_impl *x) { return x->maxsize && x->count >= x->maxsize; }

/* Caller holds the lock and has room (count < cap). */
static inline void push_item(queue_impl *x, void *item) {
  x->buf[(x->head + x->count) % x->cap] = item;
  x->count++;
}

static inline void *pop_item(queue_impl *x) {
  void *item = x->buf[x->head];
  x->head = (x->head + 1) % x->cap;
  x->count--;
  return item;
}

/* Caller holds the lock; unbounded queue with count == cap. Returns with
 * the lock held and room made, or -ENOMEM (lock held). */
static int grow(queue_impl *x) {
  while (x->count == x->cap) {
    size_t old_cap = x->cap, new_cap = old_cap * 2;
    weft__spin_unlock(&x->lock);
    void **nb = weft__alloc(sizeof(void *) * new_cap);
    weft__spin_lock(&x->lock);
    if (!nb) return -ENOMEM;
    if (x->cap != old_cap || x->count < x->cap) { /* someone else grew it, or room appeared */
      weft__spin_unlock(&x->lock);
      weft__free(nb, sizeof(void *) * new_cap);
      weft__spin_lock(&x->lock);
      continue;
    }
    for (size_t i = 0; i < x->count; i++) nb[i] = x->buf[(x->head + i) % x->cap];
    void **old = x->buf;
    x->buf = nb;
    x->cap = new_cap;
    x->head = 0;
    weft__spin_unlock(&x->lock);
    weft__free(old, sizeof(void *) * old_cap);
    weft__spin_lock(&x->lock);
  }
  return 0;
}

/* Caller holds the lock: insert and choose a getter to wake. */
static int insert_locked(queue_impl *x, void *item, weft__wakeup *wake, bool *have_wake) {
  if (x->count == x->cap) {
    int rc = grow(x);
    if (rc) return rc;
  }
  push_item(x, item);
  *have_wake = weft__waitlist_pop(&x->getters, wake);
  return 0;
}

int weft_queue_put_nowait(weft_queue *q, void *item) {
  queue_impl *x = impl(q);
  weft__wakeup wake;
  bool have_wake = false;
  weft__spin_lock(&x->lock);
  int rc = is_full(x) ? -EAGAIN : insert_locked(x, item, &wake, &have_wake);
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  return rc;
}

/* Caller holds the lock and the queue has an item: take the oldest, choose
 * a putter to wake, unlock, wake it. */
static void *take_and_unlock(queue_impl *x) {
  weft__wakeup wake;
  void *it = pop_item(x);
  bool have_wake = weft__waitlist_pop(&x->putters, &wake);
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  return it;
}

int weft_queue_get_nowait(weft_queue *q, void **item) {
  queue_impl *x = impl(q);
  weft__spin_lock(&x->lock);
  if (x->count == 0) {
    weft__spin_unlock(&x->lock);
    return -EAGAIN;
  }
  void *it = take_and_unlock(x);
  if (item) *item = it;
  return 0;
}

/* Wait on wl (lock held on entry and on return). Returns 0 when woken
 * normally, -ECANCELED when cancelled (then *chosen tells whether a waker
 * had picked this waiter). */
static int wait_on(queue_impl *x, weft__waitlist *wl, weft__task *self, bool *chosen) {
  int64_t seq = weft__wait_prepare(true);
  if (seq < 0) {
    *chosen = false;
    return (int)seq;
  }
  weft__waiting_on(self, wl == &x->getters ? WEFT__WAITING_QUEUE_GET : WEFT__WAITING_QUEUE_PUT);
  weft__waitlist_push(wl, self, (uint32_t)seq);
  weft__spin_unlock(&x->lock);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  weft__spin_lock(&x->lock);
  *chosen = !self->waiter.linked;
  weft__waitlist_remove(wl, self);
  return why == WEFT__WAKE_CANCEL ? -ECANCELED : 0;
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
  weft__task *self = weft__task_self();
  if (!self) return -EINVAL;
  weft__wakeup wake;
  bool have_wake = false;
  weft__spin_lock(&x->lock);
  while (is_full(x)) {
    bool chosen;
    if (wait_on(x, &x->putters, self, &chosen) < 0)
      return cancelled_and_unlock(x, &x->putters, chosen && !is_full(x));
  }
  int rc = insert_locked(x, item, &wake, &have_wake);
  weft__spin_unlock(&x->lock);
  if (have_wake) weft__wakeup_fire(&wake);
  return rc;
}

int weft_queue_get(weft_queue *q, void **item) {
  queue_impl *x = impl(q);
  weft__task *self = weft__task_self();
  if (!self) return -EINVAL;
  weft__spin_lock(&x->lock);
  while (x->count == 0) {
    bool chosen;
    if (wait_on(x, &x->getters, self, &chosen) < 0)
      return cancelled_and_unlock(x, &x->getters, chosen && x->count);
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
