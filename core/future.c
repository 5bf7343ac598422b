/* core/future.c: asyncio.Future: a one-shot {status, pointer} slot.
 *
 * State, under the spinlock: `state` (PENDING, then DONE once, for good),
 * status and value (written once, before DONE), and the list of done nodes
 * (weft__done_node, as a task's done list: awaiting tasks' join nodes in
 * their records, callback nodes). `state` is also read without the lock
 * (done(), result()), with acquire, pairing with the release store that
 * completes the future under the lock, so a reader that sees DONE sees
 * status and value.
 *
 * Completing: under the lock, check PENDING (else -EALREADY), write status,
 * value, DONE; then, in batches, unlink up to BATCH nodes under the lock,
 * copying what each needs, and after unlocking wake the waiters and run the
 * callbacks, so nothing touches a node after the lock that unlinked it was
 * released (a woken waiter may return and reuse its node at once). Every
 * awaiter is woken before the first callback runs (weft/task.h), those
 * that came after a callback included: the first batches take the waiter
 * nodes only.
 *
 * Callback order: from the first batch that holds a callback until the
 * list is found empty again, `draining` is set (under the lock), and a
 * subscription (weft_future_add_done_callback, the await layer) appends
 * its node instead of being told "done": the completing thread runs it
 * behind the callbacks added before it, in the order of adding, as
 * asyncio's call_soon does. Only the completer's own callbacks can keep it
 * looping, and each is added by someone once, so the batches end. Awaiting
 * tasks are not held back: done() and result() answer from `state`.
 *
 * An awaiting task woken by a cancellation re-takes the lock: if its node is
 * still linked it was not chosen: it unlinks it and, as asyncio does when
 * the awaiting task is cancelled, cancels the future and returns
 * -ECANCELED. If the node was unlinked the future completed at that moment:
 * it takes the result and keeps its cancellation pending for its next
 * suspension (as weft_join does).
 *
 * LIFETIME: the awaiters are woken (and the callbacks run) before the
 * completing call has finished with the future: `busy` counts completions
 * in progress, and weft_future_destroy waits for it to reach 0, so memory
 * may be freed or reused once destroy returned 0.
 *
 * Public callbacks (weft_future_add_done_callback) live in an allocated
 * pub_cb whose node calls a trampoline; the trampoline frees it. Nodes of
 * combinators (core/await.c) belong to them (`keep`).
 */
#include <errno.h>
#include <sched.h>

#include <weft/task.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/future.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/taskext.h"

enum { PENDING = 0, DONE = 1 };

typedef struct future_impl {
  weft__spinlock lock;
  _Atomic int state;       /* written under lock (release); read anywhere (acquire) */
  int status;              /* under lock; final once DONE */
  _Atomic int busy;        /* completions in progress: complete() counts itself in and out */
  void *value;             /* under lock; final once DONE */
  weft__done_node *head;   /* under lock */
  weft__done_node *tail;   /* under lock */
  uint32_t n_nodes;        /* under lock */
  bool draining;           /* under lock: done, and the completer still runs callbacks */
} future_impl;

_Static_assert(sizeof(future_impl) <= sizeof(weft_future), "weft_future's storage is too small");
_Static_assert(_Alignof(future_impl) <= _Alignof(weft_future), "weft_future's alignment is too small");

static inline future_impl *impl(weft_future *f) { return (future_impl *)(void *)f->opaque; }
static inline const future_impl *cimpl(const weft_future *f) { return (const future_impl *)(const void *)f->opaque; }

int weft_future_init(weft_future *f) {
  if (!f) return -EINVAL;
  future_impl *x = impl(f);
  weft__spin_init(&x->lock);
  weft__store(&x->state, PENDING, RELAXED);
  x->status = 0;
  x->value = NULL;
  x->head = x->tail = NULL;
  x->n_nodes = 0;
  x->draining = false;
  weft__store(&x->busy, 0, RELAXED);
  return 0;
}

int weft_future_destroy(weft_future *f) {
  future_impl *x = impl(f);
  /* a completion still finishing on another thread (it woke the awaiters
   * first): let it stop touching the future. acquire: pairs with the
   * release decrement at the end of complete() */
  for (int spins = 0; weft__load(&x->busy, ACQUIRE) != 0; spins++) {
    weft__cpu_relax();
    if (spins > 64) sched_yield();
  }
  weft__spin_lock(&x->lock);
  size_t n = x->n_nodes;
  weft__spin_unlock(&x->lock);
  return n ? -EBUSY : 0;
}

/* Under lock. */
static void append(future_impl *x, weft__done_node *n) {
  n->next = NULL;
  n->linked = true;
  if (x->tail)
    x->tail->next = n;
  else
    x->head = n;
  x->tail = n;
  x->n_nodes++;
}

/* Under lock. */
static bool unlink_node(future_impl *x, weft__done_node *n) {
  if (!n->linked) return false;
  weft__done_node **pp = &x->head, *prev = NULL;
  while (*pp && *pp != n) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  if (!*pp) return false;
  *pp = n->next;
  if (x->tail == n) x->tail = prev;
  n->linked = false;
  x->n_nodes--;
  return true;
}

static int complete(weft_future *f, int status, void *value) {
  future_impl *x = impl(f);
  /* relaxed: ordered before the DONE store (release) and the wakes, which
   * is how destroy's caller learns the future is done */
  weft__fetch_add(&x->busy, 1, RELAXED);
  weft__spin_lock(&x->lock);
  if (weft__load(&x->state, RELAXED) != PENDING) {
    weft__spin_unlock(&x->lock);
    weft__fetch_sub(&x->busy, 1, RELEASE); /* release: pairs with destroy's acquire */
    return -EALREADY;
  }
  x->status = status;
  x->value = value;
  /* release: pairs with the acquire loads of state in done()/result() */
  weft__store(&x->state, DONE, RELEASE);
  enum { BATCH = 32 };
  /* The awaiters first, those behind a callback included (weft/task.h: the
   * callbacks run after the waiters are woken). None joins the list any
   * more (await checks state under the lock), so each batch unlinks the
   * waiter nodes from the head on, stepping over the callbacks, until a
   * walk reaches the end. Meanwhile `draining` is set while callbacks wait
   * their turn, so that a callback added now runs behind them. */
  for (;;) {
    weft__task *waiters[BATCH];
    uint32_t seqs[BATCH];
    int n = 0;
    weft__done_node *prev = NULL, *next;
    for (weft__done_node *node = x->head; node && n < BATCH; node = next) {
      next = node->next;
      if (!node->waiter) {
        prev = node;
        continue;
      }
      if (prev)
        prev->next = next;
      else
        x->head = next;
      if (x->tail == node) x->tail = prev;
      node->linked = false;
      x->n_nodes--;
      waiters[n] = node->waiter;
      seqs[n] = node->seq;
      n++;
    }
    if (n == 0) break; /* (locked) */
    bool rest = x->head != NULL;
    x->draining = rest;
    weft__spin_unlock(&x->lock);
    for (int i = 0; i < n; i++) weft__wake(waiters[i], seqs[i], WEFT__WAKE_NORMAL);
    if (!rest) { /* nothing else was waiting: the last touch of the future */
      weft__fetch_sub(&x->busy, 1, RELEASE); /* release: pairs with destroy's acquire */
      return 0;
    }
    weft__spin_lock(&x->lock);
    if (n < BATCH) break; /* the walk reached the end: every awaiter is woken */
  }
  /* Then the callbacks, in order (only callback nodes are left). */
  for (;;) {
    weft__task *waiters[BATCH];
    uint32_t seqs[BATCH];
    weft_done_cb cbs[BATCH];
    void *args[BATCH];
    int n = 0;
    bool callbacks = false;
    while (x->head && n < BATCH) {
      weft__done_node *node = x->head;
      x->head = node->next;
      node->linked = false;
      x->n_nodes--;
      waiters[n] = node->waiter;
      seqs[n] = node->seq;
      cbs[n] = node->cb;
      args[n] = node->cb_arg;
      callbacks |= node->waiter == NULL;
      n++;
    }
    if (!x->head) x->tail = NULL;
    bool last = !x->head && !callbacks;
    x->draining = !last;
    weft__spin_unlock(&x->lock);
    for (int i = 0; i < n; i++) {
      if (waiters[i])
        weft__wake(waiters[i], seqs[i], WEFT__WAKE_NORMAL);
      else
        cbs[i](WEFT_TASK_NULL, args[i]);
    }
    if (!last) {
      weft__spin_lock(&x->lock);
      if (x->head) continue; /* added meanwhile (or left by a full batch): behind them, in order */
      x->draining = false;
      weft__spin_unlock(&x->lock);
    }
    /* the last touch of the future: release pairs with destroy's acquire */
    weft__fetch_sub(&x->busy, 1, RELEASE);
    return 0;
  }
}

int weft_future_set(weft_future *f, int status, void *value) { return complete(f, status, value); }

int weft_future_cancel(weft_future *f) { return complete(f, -ECANCELED, NULL) == 0 ? 1 : 0; }

bool weft_future_done(const weft_future *f) {
  /* acquire: pairs with the release in complete() */
  return weft__load((_Atomic int *)&cimpl(f)->state, ACQUIRE) == DONE;
}

bool weft_future_cancelled(const weft_future *f) {
  return weft_future_done(f) && cimpl(f)->status == -ECANCELED;
}

int weft_future_result(const weft_future *f, void **value) {
  if (!weft_future_done(f)) return -EBUSY;
  if (value) *value = cimpl(f)->value;
  return cimpl(f)->status;
}

int weft__future_status(weft_future *f) { return impl(f)->status; }

int weft__future_subscribe(weft_future *f, weft__done_node *n) {
  future_impl *x = impl(f);
  weft__spin_lock(&x->lock);
  if (weft__load(&x->state, RELAXED) == DONE && !x->draining) {
    weft__spin_unlock(&x->lock);
    return 1;
  }
  append(x, n);
  weft__spin_unlock(&x->lock);
  return 0;
}

bool weft__future_unsubscribe(weft_future *f, weft__done_node *n) {
  future_impl *x = impl(f);
  weft__spin_lock(&x->lock);
  bool was = unlink_node(x, n);
  weft__spin_unlock(&x->lock);
  return was;
}

int weft_future_await(weft_future *f, void **value) {
  future_impl *x = impl(f);
  weft__task *self = weft__task_self();
  if (!self) return -EINVAL;
  bool restore_pending = false;
  /* acquire: pairs with the release in complete() */
  if (weft__load(&x->state, ACQUIRE) != DONE) {
    weft__spin_lock(&x->lock);
    if (weft__load(&x->state, RELAXED) != DONE) {
      int64_t seq = weft__wait_prepare(true);
      if (seq < 0) {
        weft__spin_unlock(&x->lock);
        /* asyncio: the cancelled awaiter cancels the future; if it was
         * completed meanwhile, its result is returned and the
         * cancellation stays pending */
        if (complete(f, -ECANCELED, NULL) != 0) restore_pending = true;
        goto out;
      }
      weft__done_node *node = &self->join_node;
      *node = (weft__done_node){.waiter = self, .seq = (uint32_t)seq};
      weft__waiting_on(self, WEFT__WAITING_FUTURE);
      append(x, node);
      weft__spin_unlock(&x->lock);
      if (weft__wait_commit((uint32_t)seq) != WEFT__WAKE_NORMAL) {
        weft__spin_lock(&x->lock);
        bool was_linked = unlink_node(x, node);
        weft__spin_unlock(&x->lock);
        /* not chosen: cancel the future, unless another completion came
         * first; chosen (unlinked by the completer) or beaten: take its
         * result and keep the cancellation for the next suspension */
        if (!was_linked || complete(f, -ECANCELED, NULL) != 0) restore_pending = true;
      }
    } else {
      weft__spin_unlock(&x->lock);
    }
  }
out:
  /* relaxed: the flag carries no data */
  if (restore_pending) weft__store(&self->cancel_pending, 1, RELAXED);
  return weft_future_result(f, value);
}

/* ---- public done callbacks ---- */

typedef struct pub_cb {
  weft__done_node node; /* keep: this struct is freed by the trampoline */
  weft_future *f;
  weft_future_cb cb;
  void *arg;
  weft__ctx *ctx; /* its adder's task-local values (a reference, NULL = none) */
} pub_cb;

/* It runs with its adder's values, not those of the task that completes
 * the future (core/taskext.h, DONE CALLBACKS). */
static void pub_tramp(weft_task unused, void *arg) {
  (void)unused;
  pub_cb *p = arg;
  weft__ctx_saved saved = weft__ctx_cb_enter(p->ctx);
  p->cb(p->f, p->arg);
  weft__ctx_cb_leave(saved);
  weft__ctx_unref(p->ctx);
  weft__free(p, sizeof *p);
}

int weft_future_add_done_callback(weft_future *f, weft_future_cb cb, void *arg) {
  if (!cb) return -EINVAL;
  pub_cb *p = weft__zalloc(sizeof *p);
  if (!p) return -ENOMEM;
  p->f = f;
  p->cb = cb;
  p->arg = arg;
  p->ctx = weft__ctx_capture();
  p->node.cb = pub_tramp;
  p->node.cb_arg = p;
  p->node.keep = true;
  if (weft__future_subscribe(f, &p->node)) pub_tramp(WEFT_TASK_NULL, p); /* done: run it now */
  return 0;
}

int weft_future_remove_done_callback(weft_future *f, weft_future_cb cb, void *arg) {
  future_impl *x = impl(f);
  int removed = 0;
  for (;;) {
    pub_cb *found = NULL;
    weft__spin_lock(&x->lock);
    for (weft__done_node *n = x->head; n; n = n->next) {
      if (n->waiter || n->cb != pub_tramp) continue;
      pub_cb *p = n->cb_arg;
      if (p->cb == cb && p->arg == arg) {
        unlink_node(x, n);
        found = p;
        break;
      }
    }
    weft__spin_unlock(&x->lock);
    if (!found) return removed;
    weft__ctx_unref(found->ctx);
    weft__free(found, sizeof *found); /* after unlocking: nothing allocates or frees under a spinlock */
    removed++;
  }
}
