/* core/gather.c: asyncio.gather, asyncio.wait and asyncio.as_completed, on
 * the collector of core/await.c (one allocation per call, one done node
 * per awaitable, one wakeup of the caller when its condition holds).
 *
 * gather: want = n, stop on the first negative status unless
 * RETURN_EXCEPTIONS. Cancelled while waiting: cancel every awaitable not
 * done and wait for all of them, passing each further cancel of the caller
 * on to those not done and absorbing it (asyncio's _GatheringFuture.cancel
 * at every Task.cancel, then the one outer CancelledError), report
 * -ECANCELED.
 *
 * wait: want = 1 (FIRST_COMPLETED) or n, stop on an "exception" for
 * FIRST_EXCEPTION; an optional deadline; cancels nothing, ever.
 *
 * as_completed: the collector lives across calls; the iterator yields
 * order[] (the completion order recorded by the callbacks) one by one, each
 * next() waiting for want = yielded + 1.
 */
#include <errno.h>

#include <weft/task.h>

#include "core/await.h"
#include "core/task.h"

static void fill_results(weft__collector *c, int *status, void **value) {
  for (size_t i = 0; i < c->n; i++) {
    void *v = NULL;
    int st = weft__sub_result(&c->subs[i], &v);
    if (status) status[i] = st;
    if (value) value[i] = v;
  }
}

int weft_gather(const weft_awaitable *aws, size_t n, int *status, void **value, int flags) {
  if (!weft__task_self() || (flags & ~WEFT_GATHER_RETURN_EXCEPTIONS)) return -EINVAL;
  if (n == 0) return 0;
  bool collect_all = flags & WEFT_GATHER_RETURN_EXCEPTIONS;
  weft__collector *c;
  int rc = weft__collector_new(aws, n, collect_all ? WEFT__STOP_NEVER : WEFT__STOP_ON_FAILURE, &c);
  if (rc) return rc;
  rc = weft__collector_wait(c, INT64_MAX, true);
  if (rc == -ECANCELED) {
    weft__spin_lock(&c->lock);
    c->stop_on = WEFT__STOP_NEVER; /* now wait for all of them */
    c->stop_hit = false;
    weft__spin_unlock(&c->lock);
    /* every cancellation of the caller is forwarded to the awaitables not
     * done (asyncio: Task.cancel -> _GatheringFuture.cancel, each time) and
     * is absorbed by that: the caller reports one -ECANCELED */
    do {
      for (size_t i = 0; i < n; i++)
        if (!weft__sub_done(&c->subs[i])) weft_aw_cancel(aws[i]);
    } while (weft__collector_wait(c, INT64_MAX, true) == -ECANCELED); /* no deadline: 0 or -ECANCELED */
    /* A cancel that came after the last forward (the last awaitable's
     * end, or its done callbacks, raced with it: the wait above saw every
     * one done and did not consume it) is absorbed too: asyncio finds the
     * gathering future done and raises its one CancelledError at this
     * await, so nothing is left for the caller's next wait. The caller
     * runs, so only it consumes (a request made after this is kept). */
    weft__cancel_consume(weft__task_self());
  }
  fill_results(c, status, value);
  if (rc == 0 && !collect_all) {
    weft__spin_lock(&c->lock);
    if (c->stop_hit) rc = c->first_failure;
    weft__spin_unlock(&c->lock);
  }
  weft__collector_end(c);
  return rc;
}

int weft_wait(const weft_awaitable *aws, size_t n, int mode, int64_t timeout_ns, bool *done) {
  if (!weft__task_self() || n == 0 || timeout_ns < 0) return -EINVAL;
  if (mode != WEFT_ALL_COMPLETED && mode != WEFT_FIRST_COMPLETED && mode != WEFT_FIRST_EXCEPTION) return -EINVAL;
  int64_t deadline = INT64_MAX;
  if (timeout_ns != WEFT_FOREVER) {
    int64_t now = weft_now_ns();
    deadline = timeout_ns > INT64_MAX - 1 - now ? INT64_MAX - 1 : now + timeout_ns;
  }
  weft__collector *c;
  int rc = weft__collector_new(aws, n, mode == WEFT_FIRST_EXCEPTION ? WEFT__STOP_ON_EXCEPTION : WEFT__STOP_NEVER, &c);
  if (rc) return rc;
  weft__spin_lock(&c->lock); /* callbacks read want under the lock */
  c->want = mode == WEFT_FIRST_COMPLETED ? 1 : n;
  weft__spin_unlock(&c->lock);
  rc = weft__collector_wait(c, deadline, true);
  int count = 0;
  for (size_t i = 0; i < n; i++) {
    bool d = weft__sub_done(&c->subs[i]);
    if (done) done[i] = d;
    count += d;
  }
  weft__collector_end(c);
  if (rc == -ECANCELED || rc == -ENOMEM) return rc;
  return count; /* a timeout is not an error: the pending set says so */
}

/* ------------------------------------------------------------ as_completed */

typedef struct ac_impl {
  weft__collector *c;
  size_t yielded;
  int64_t deadline;
} ac_impl;

#include "core/alloc.h"

int weft_as_completed_init(weft_as_completed *it, const weft_awaitable *aws, size_t n, int64_t timeout_ns) {
  if (!it) return -EINVAL;
  it->impl = NULL;
  if (!weft__task_self() || timeout_ns < 0) return -EINVAL;
  ac_impl *a = weft__alloc(sizeof *a);
  if (!a) return -ENOMEM;
  int rc = weft__collector_new(aws, n, WEFT__STOP_NEVER, &a->c);
  if (rc) {
    weft__free(a, sizeof *a);
    return rc;
  }
  a->yielded = 0;
  a->deadline = INT64_MAX;
  if (timeout_ns != WEFT_FOREVER) {
    int64_t now = weft_now_ns();
    a->deadline = timeout_ns > INT64_MAX - 1 - now ? INT64_MAX - 1 : now + timeout_ns;
  }
  it->impl = a;
  return 0;
}

/* Whether more awaitables have ended than next() returned: every one
 * returned has ended, so then one that ended is not returned yet. */
static bool ended_not_returned(weft__collector *c, size_t yielded) {
  size_t ended = 0;
  for (size_t i = 0; i < c->n; i++) ended += weft__sub_done(&c->subs[i]);
  return ended > yielded;
}

int weft_as_completed_next(weft_as_completed *it) {
  ac_impl *a = it ? it->impl : NULL;
  if (!a || !weft__task_self()) return -EINVAL;
  weft__collector *c = a->c;
  if (a->yielded == c->n) return -ENOENT;
  weft__spin_lock(&c->lock); /* callbacks read want under the lock */
  c->want = a->yielded + 1;
  weft__spin_unlock(&c->lock);
  int rc = weft__collector_wait(c, a->deadline, true);
  if (rc == -ETIMEDOUT && ended_not_returned(c, a->yielded)) {
    /* One has finished (its status is final: weft_aw_done says so) but
     * its node is not recorded yet: it was subscribed while its finisher
     * still ran earlier done callbacks, and is taken up behind them
     * (core/task.c, core/future.c). The finisher is running and will
     * record it, so wait for that without the deadline: -ETIMEDOUT is
     * only for when none that finished remains (weft/task.h). */
    rc = weft__collector_wait(c, INT64_MAX, true);
  }
  if (rc) return rc;
  weft__spin_lock(&c->lock);
  uint32_t idx = c->order[a->yielded++];
  weft__spin_unlock(&c->lock);
  return (int)idx;
}

void weft_as_completed_destroy(weft_as_completed *it) {
  ac_impl *a = it ? it->impl : NULL;
  if (!a) return;
  weft__collector_end(a->c);
  weft__free(a, sizeof *a);
  it->impl = NULL;
}
