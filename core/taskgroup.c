/* core/taskgroup.c: asyncio.TaskGroup.
 *
 * State, under the group's spinlock: the children's handles (owned by the
 * group, released at the end of leave), `running` (children whose done
 * callback has not finished), the first error and the count of failed
 * children, `aborting`, whether the group cancelled its parent, and the
 * parent's wait in leave ({task, seq}, armed).
 *
 * A child's done callback (on_child_done, on the thread that ends the
 * child) records a failure (a negative status other than -ECANCELED, as
 * asyncio ignores cancelled children); the first failure sets `aborting`,
 * cancels every child and, once, the parent (asyncio's
 * _parent_cancel_requested). Its very last act is `running--`: a lock-free
 * CAS while other children remain (the parent cannot finish meanwhile), or,
 * for what may be the last one, a decrement under the lock, where the
 * parent checks for 0 (and a wakeup of the parent copied out under it). So
 * once the parent sees running == 0 under the lock, no callback touches the
 * group again, and the group may live on the parent's stack. (Decrementing
 * under the lock always made the children's callbacks and the spawning
 * parent contend for it: the 10,000-child benchmark ran 3x slower than
 * spawn+join at 2 workers.)
 *
 * Spawning reserves a slot and a `running` count under the lock first (so
 * leave cannot finish meanwhile), spawns, stores the handle and subscribes a
 * pre-allocated done node (so the callback cannot fail to be registered).
 * The abort (`aborting`, set once) cancels each child exactly once, as
 * asyncio's _abort does: its single sweep reads slot i and advances `swept`
 * past it under one lock hold; a spawner storing its handle after
 * `aborting` was set cancels the child itself only when the sweep has
 * passed its slot (it read it empty), and otherwise leaves it to the sweep
 * (cancelling it on both sides counted the cancellation twice: the child's
 * weft_cancelling read 2). No slot is reserved once `aborting` is set, so
 * the sweep's end (i == n) covers every slot. The handle array grows
 * outside the lock (unlock, allocate, relock, re-check).
 *
 * Detached children (opts.detached): the caller keeps no handle, so the
 * group need not keep the record until leave. The child's done callback
 * (before its running--) takes its handle out of its slot (its done node
 * knows the slot: no search) under the lock,
 * puts the slot on the free list (reused by the next spawn) and releases
 * the handle, so a group that lives for long (an accept loop) holds memory
 * for the children alive, not for every child it ever spawned (asyncio's
 * TaskGroup drops a done task from its set). A sweep that read the handle
 * before and cancels it after the release gets -ESRCH (the generation),
 * which is what cancelling a done child amounts to anyway. Without this a
 * group spawning 50,000 children grew by ~14 MB of records held until
 * leave, linearly in the children.
 *
 * Leave follows asyncio's __aexit__ (3.12, with 3.13's rule for errors
 * during an outer cancellation): a failing body (rc < 0) aborts; the parent
 * waits until running == 0, a cancellation while waiting aborts (and is
 * propagated when it did not come from the group); then, if the group
 * cancelled the parent, uncancel() and, at 0, the cancellation was only
 * ours. Errors win and are returned (an outer cancellation is re-requested
 * so it is not lost); else a propagated cancellation gives -ECANCELED.
 */
#include <errno.h>

#include <weft/task.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/spinlock.h"
#include "core/task.h"

/* Magic values, so that a struct never entered (uninitialised memory) is
 * rarely taken for a group: the calls check state before they take the
 * lock, whose word in such memory may read as held forever. */
enum { UNUSED = 0, OPEN = 0x6f70656e, LEAVING = 0x6c656176, FINISHED = 0x66696e69 };

typedef struct group_impl {
  weft__spinlock lock;
  _Atomic int state;          /* written under lock; read without it first (relaxed: a hint the lock re-checks) */
  weft__task *parent;         /* immutable after enter */
  weft_task parent_h;         /* immutable after enter */
  weft_task *children;        /* under lock; slots [0, n) (a null handle: a spawn in progress or failed) */
  uint32_t n, cap;            /* under lock */
  uint32_t swept;             /* under lock: slots [0, swept) the abort's sweep has read */
  uint32_t free_slot;         /* under lock: the first free slot + 1 (0: none); a free slot holds
                                 {NULL, FREE_SLOT | the next free slot + 1} (detached children) */
  _Atomic uint32_t running;   /* children whose callback has not finished, + spawns in progress:
                                 incremented under lock; decremented without it except to 0 (child_gone) */
  int first_error;            /* under lock, when has_error */
  int n_failed;               /* under lock */
  bool has_error;             /* under lock */
  bool aborting;              /* under lock */
  bool parent_cancel_requested; /* under lock */
  bool armed;                 /* under lock: the parent waits in leave with {waiter, seq} */
  weft__task *waiter;         /* under lock */
  uint32_t seq;               /* under lock */
} group_impl;

_Static_assert(sizeof(group_impl) <= sizeof(weft_taskgroup), "weft_taskgroup's storage is too small");
_Static_assert(_Alignof(group_impl) <= _Alignof(weft_taskgroup), "weft_taskgroup's alignment is too small");

static inline group_impl *impl(weft_taskgroup *g) { return (group_impl *)(void *)g->opaque; }

/* The gen of a free slot's null handle (a spawn in progress or failed: gen 0). */
#define FREE_SLOT (1ull << 32)

int weft_taskgroup_enter(weft_taskgroup *g) {
  weft__task *self = weft__task_self();
  if (!self || !g) return -EINVAL;
  group_impl *x = impl(g);
  weft_task me = weft_current();
  /* g is usually uninitialised here (`weft_taskgroup g;`): enter reads
   * none of it (no "already entered" check, as asyncio's: telling an open
   * group from garbage means reading garbage, which memcheck reports in
   * every program that enters a group; task.h states the rule instead) */
  *x = (group_impl){0};
  weft__spin_init(&x->lock);
  x->parent = self;
  x->parent_h = me;
  weft__store(&x->state, OPEN, RELAXED); /* relaxed: published with g to those who spawn into it */
  return 0;
}

/* The abort's sweep: cancel every child (not the parent). Called once, by
 * whoever set `aborting`. Any thread; the group is alive (the caller is the
 * parent, or a callback that has not yet done running--). */
static void cancel_children(group_impl *x) {
  for (uint32_t i = 0;; i++) {
    weft__spin_lock(&x->lock);
    if (i >= x->n) {
      weft__spin_unlock(&x->lock);
      return;
    }
    weft_task h = x->children[i];
    x->swept = i + 1; /* a handle stored here from now on is its spawner's to cancel */
    weft__spin_unlock(&x->lock);
    if (!weft_task_is_null(h)) weft_cancel(h); /* a done child: 0, nothing happens */
  }
}

/* The last step of a child's accounting: running--, wake the parent when
 * it was the last. Nothing touches x after the unlock. */
static void child_gone(group_impl *x) {
  /* Not the last: a lock-free decrement is the last touch (the parent
   * cannot see 0 before the last child is gone). relaxed/release: the
   * child's results reach the parent through the done word it reads. */
  uint32_t n = weft__load(&x->running, RELAXED);
  while (n > 1)
    if (weft__cas_weak(&x->running, &n, n - 1, RELEASE, RELAXED)) return;
  weft__task *wake = NULL;
  uint32_t seq = 0;
  /* Maybe the last: decrement under the lock, where the parent checks for
   * 0, so that our unlock is our last touch of the group. acq_rel: the
   * parent's acquire of the lock sees every child's accounting. */
  weft__spin_lock(&x->lock);
  if (weft__fetch_sub(&x->running, 1, ACQ_REL) == 1 && x->armed) {
    x->armed = false;
    wake = x->waiter;
    seq = x->seq;
  }
  weft__spin_unlock(&x->lock);
  if (wake) weft__wake(wake, seq, WEFT__WAKE_NORMAL);
}

/* A child's done node (kept: on_child_done frees it), which knows the
 * child's slot, so that a detached child's end frees it without a search. */
typedef struct child_node {
  weft__done_node node;
  group_impl *x;
  uint32_t slot;
  bool detached;
} child_node;

/* A detached child is done: free its slot and give its record back (the
 * caller kept no handle). Before child_gone: x is alive. The slot holds h:
 * the spawner stored it before subscribing the node that calls this. */
static void drop_child(group_impl *x, weft_task h, uint32_t slot) {
  weft__spin_lock(&x->lock);
  x->children[slot] = (weft_task){NULL, FREE_SLOT | x->free_slot};
  x->free_slot = slot + 1;
  weft__spin_unlock(&x->lock);
  weft_task_release(h);
}

static void child_done(weft_task h, group_impl *x, uint32_t slot, bool detached) {
  /* done: status is final (we run on the finishing thread, or after seeing
   * DONE), and the group's handle keeps the record */
  int st = ((weft__task *)h.rec)->status;
  bool failed = st < 0 && st != -ECANCELED;
  bool abort_now = false, cancel_parent = false;
  if (failed) {
    weft__spin_lock(&x->lock);
    x->n_failed++;
    if (!x->has_error) {
      x->has_error = true;
      x->first_error = st;
    }
    if (!x->aborting && !x->parent_cancel_requested) {
      x->aborting = true;
      abort_now = true;
      x->parent_cancel_requested = true;
      cancel_parent = true;
    }
    weft__spin_unlock(&x->lock);
  }
  if (abort_now) cancel_children(x);
  if (cancel_parent) weft_cancel(x->parent_h);
  if (detached) drop_child(x, h, slot);
  child_gone(x);
}

/* The finisher copied the node's fields before the call: freeing it first
 * is safe (as any kept node's callback may). */
static void on_child_done(weft_task h, void *arg) {
  child_node c = *(child_node *)arg;
  weft__free(arg, sizeof c);
  child_done(h, c.x, c.slot, c.detached);
}

weft_task weft_taskgroup_spawn_ex(weft_taskgroup *g, weft_fn fn, void *arg, const weft_spawn_opts *opts) {
  if (!g || !fn || !weft__task_self()) {
    errno = EINVAL;
    return WEFT_TASK_NULL;
  }
  group_impl *x = impl(g);
  int st = weft__load(&x->state, RELAXED); /* relaxed: only a hint, re-checked under the lock */
  if (st != OPEN && st != LEAVING) { /* never entered (its lock word is garbage), or finished */
    errno = EINVAL;
    return WEFT_TASK_NULL;
  }
  /* the done node, allocated first so that registering it cannot fail;
   * its callback frees it (keep) */
  child_node *node = weft__zalloc(sizeof *node);
  if (!node) {
    errno = ENOMEM;
    return WEFT_TASK_NULL;
  }
  node->node.cb = on_child_done;
  node->node.cb_arg = node;
  node->node.keep = true;
  node->x = x;
  node->detached = opts && opts->detached;
  uint32_t slot;
  weft__spin_lock(&x->lock);
  for (;;) {
    st = weft__load(&x->state, RELAXED); /* relaxed: under the lock */
    if ((st != OPEN && st != LEAVING) || x->aborting || (st == LEAVING && weft__load(&x->running, RELAXED) == 0)) {
      weft__spin_unlock(&x->lock);
      weft__free(node, sizeof *node);
      errno = EINVAL; /* never entered, aborting, or finished */
      return WEFT_TASK_NULL;
    }
    if (x->free_slot || x->n < x->cap) break;
    uint32_t cap = x->cap, ncap = cap ? 2 * cap : 16;
    weft__spin_unlock(&x->lock);
    weft_task *a = weft__alloc(ncap * sizeof *a);
    weft__spin_lock(&x->lock);
    if (!a) {
      weft__spin_unlock(&x->lock);
      weft__free(node, sizeof *node);
      errno = ENOMEM;
      return WEFT_TASK_NULL;
    }
    weft_task *old = NULL;
    uint32_t old_cap = 0;
    if (x->cap == cap) { /* nobody grew it meanwhile */
      for (uint32_t i = 0; i < x->n; i++) a[i] = x->children[i];
      old = x->children;
      old_cap = cap;
      x->children = a;
      x->cap = ncap;
      a = NULL;
    }
    weft__spin_unlock(&x->lock);
    weft__free(a, ncap * sizeof *a);
    weft__free(old, old_cap * sizeof *old);
    weft__spin_lock(&x->lock);
  }
  if (x->free_slot) { /* a detached child's, given back */
    slot = x->free_slot - 1;
    x->free_slot = (uint32_t)x->children[slot].gen; /* the next free slot + 1 (FREE_SLOT cut off) */
  } else {
    slot = x->n++;
  }
  x->children[slot] = WEFT_TASK_NULL;
  node->slot = slot;
  weft__fetch_add(&x->running, 1, RELAXED); /* relaxed: under the lock, which publishes it */
  weft__spin_unlock(&x->lock);

  weft_spawn_opts o = opts ? *opts : (weft_spawn_opts){0};
  o.detached = false;
  weft_task h = weft_spawn_ex(fn, arg, &o);
  if (weft_task_is_null(h)) {
    int err = errno;
    weft__free(node, sizeof *node);
    child_gone(x); /* (the slot stays null) */
    errno = err;
    return WEFT_TASK_NULL;
  }
  weft__spin_lock(&x->lock);
  x->children[slot] = h;
  bool late = x->aborting && slot < x->swept; /* the sweep read this slot empty; else it will cancel h */
  weft__spin_unlock(&x->lock);
  if (late) weft_cancel(h);
  /* the group's handle keeps the record */
  if (weft__task_subscribe((weft__task *)h.rec, &node->node)) on_child_done(h, node); /* done already */
  return h;
}

weft_task weft_taskgroup_spawn(weft_taskgroup *g, weft_fn fn, void *arg) {
  return weft_taskgroup_spawn_ex(g, fn, arg, NULL);
}

/* The parent, in leave: abort once (cancel the children); returns whether
 * this call started the abort. */
static bool abort_group(group_impl *x) {
  weft__spin_lock(&x->lock);
  bool first = !x->aborting;
  x->aborting = true;
  weft__spin_unlock(&x->lock);
  if (first) cancel_children(x);
  return first;
}

int weft_taskgroup_leave(weft_taskgroup *g, int rc) {
  weft__task *self = weft__task_self();
  if (!self || !g) return -EINVAL;
  group_impl *x = impl(g);
  /* relaxed: only the entering task makes it OPEN, and only its leave
   * changes that; a group never entered must not reach the lock */
  if (weft__load(&x->state, RELAXED) != OPEN || x->parent != self) return -EINVAL;
  weft__spin_lock(&x->lock);
  if (weft__load(&x->state, RELAXED) != OPEN || x->parent != self) {
    weft__spin_unlock(&x->lock);
    return -EINVAL;
  }
  weft__store(&x->state, LEAVING, RELAXED); /* relaxed: under the lock */
  if (rc < 0 && rc != -ECANCELED && !x->has_error) { /* the body's error, in its turn */
    x->has_error = true;
    x->first_error = rc;
  }
  weft__spin_unlock(&x->lock);
  bool propagate_cancel = rc == -ECANCELED;
  if (rc < 0) abort_group(x); /* a failing body cancels the children */
  for (;;) {
    weft__spin_lock(&x->lock);
    if (weft__load(&x->running, ACQUIRE) == 0) { /* acquire: pairs with the children's decrements */
      weft__store(&x->state, FINISHED, RELAXED); /* relaxed: under the lock */
      weft__spin_unlock(&x->lock);
      break;
    }
    int64_t seq = weft__wait_prepare(true);
    uint32_t why = WEFT__WAKE_CANCEL;
    if (seq >= 0) {
      weft__waiting_on(self, WEFT__WAITING_TASKGROUP);
      x->waiter = self;
      x->seq = (uint32_t)seq;
      x->armed = true;
      weft__spin_unlock(&x->lock);
      why = weft__wait_commit((uint32_t)seq);
      weft__spin_lock(&x->lock);
      x->armed = false;
    }
    weft__spin_unlock(&x->lock);
    if (why == WEFT__WAKE_CANCEL) {
      /* cancelled while waiting: from outside unless the group aborts */
      if (abort_group(x)) propagate_cancel = true;
    }
  }
  /* every callback is finished: the rest is ours alone */
  for (uint32_t i = 0; i < x->n; i++)
    if (!weft_task_is_null(x->children[i])) weft_task_release(x->children[i]);
  weft__free(x->children, x->cap * sizeof *x->children);
  x->children = NULL;
  x->n = x->cap = x->free_slot = 0;
  weft_task me = weft_current();
  if (x->parent_cancel_requested && weft_uncancel(me) == 0) propagate_cancel = false;
  if (x->has_error) {
    if (weft_cancelling(me) > 0) { /* 3.13: keep an outer cancellation requested */
      weft_uncancel(me);
      weft_cancel(me);
    }
    return x->first_error;
  }
  return propagate_cancel ? -ECANCELED : 0;
}

int weft_taskgroup_failed(const weft_taskgroup *g) {
  if (!g) return -EINVAL;
  group_impl *x = (group_impl *)(void *)((weft_taskgroup *)g)->opaque;
  int st = weft__load(&x->state, RELAXED); /* relaxed: a hint; the lock orders the count */
  if (st != OPEN && st != LEAVING && st != FINISHED) return -EINVAL;
  weft__spin_lock(&x->lock);
  int n = x->n_failed;
  weft__spin_unlock(&x->lock);
  return n;
}
