/* net/connect.c: connect to a host name with happy eyeballs (RFC 8305,
 * simplified).
 *
 * The resolved addresses are reordered so that the families alternate
 * (the resolver's first family first). Attempt i runs as its own task
 * (socket + weft_connect_addr); the coordinator starts attempt i+1 when
 * attempt i has failed or 250 ms after starting attempt i (asyncio's
 * staggered_race: the failure of an earlier attempt, while attempt i is
 * still connecting, does not start i+1 early).
 * The first attempt to connect stores its descriptor as the winner; an
 * attempt that connects after a winner exists closes its own. Then the
 * coordinator cancels the attempts still running and joins every one of
 * them (they live on its stack), so nothing is left behind on any path,
 * the coordinator's own cancellation included. Those joins are not
 * cancellable: a request that comes during them stays pending and is
 * taken at the end (-ECANCELED, the winner closed), never swallowed by an
 * attempt that returns normally after the join forwarded it.
 *
 * State shared by the attempts and the coordinator: `winner`, `ended`,
 * `failed`, `err` and the coordinator's wait {task, seq}, under a spinlock;
 * an attempt that ends wakes the coordinator after unlocking (a stale seq is
 * ignored by weft__wake). The coordinator's wait has the next start as its
 * deadline (weft__wait_prepare_deadline; the timer is inserted before the
 * lock is taken, as nothing allocates under a spinlock).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <weft/net.h>

#include "core/spinlock.h"
#include "core/task.h"
#include "io/op.h"

#define HE_MAX WEFT_CONNECT_MAX_ADDRS
#define HE_STEP_NS (250 * 1000 * 1000LL)

typedef struct he_state {
  weft__spinlock lock;
  int winner;              /* under lock: the connected fd, or -1 */
  int winner_idx;          /* under lock */
  int ended;               /* under lock: attempts that returned */
  unsigned failed;         /* under lock: bit i: attempt i returned (he_wait reads it only while no winner) */
  int err;                 /* under lock: the latest real error */
  weft__task *waiter;      /* under lock: the coordinator while it waits */
  uint32_t seq;            /* under lock */
  int64_t deadline;        /* immutable */
} he_state;

typedef struct he_attempt {
  he_state *st;
  const weft_addr *addr;
  int idx;
} he_attempt;

static int attempt_main(void *arg) {
  he_attempt *a = arg;
  he_state *st = a->st;
  int fd = weft_connect_addr(a->addr, st->deadline);
  weft__spin_lock(&st->lock);
  if (fd >= 0 && st->winner < 0) {
    st->winner = fd;
    st->winner_idx = a->idx;
    fd = -1;
  } else if (fd < 0 && fd != -ECANCELED) {
    st->err = fd;
  }
  st->ended++;
  st->failed |= 1u << a->idx; /* the next attempt may start (he_wait) */
  weft__task *w = st->waiter;
  uint32_t seq = st->seq;
  st->waiter = NULL;
  weft__spin_unlock(&st->lock);
  if (fd >= 0) close(fd); /* connected, but another won */
  if (w) weft__wake(w, seq, WEFT__WAKE_NORMAL);
  return 0;
}

/* Alternate the families, keeping the order within each. */
static void interleave(weft_addr *a, int n) {
  weft_addr tmp[HE_MAX];
  int fam0 = a[0].u.sa.sa_family, k = 0, i0 = 0, i1 = 0;
  while (k < n) {
    while (i0 < n && a[i0].u.sa.sa_family != fam0) i0++;
    if (i0 < n) tmp[k++] = a[i0++];
    while (i1 < n && a[i1].u.sa.sa_family == fam0) i1++;
    if (i1 < n) tmp[k++] = a[i1++];
  }
  memcpy(a, tmp, sizeof(weft_addr) * (size_t)n);
}

/* Wait until a winner, all started attempts ended, the latest started
 * attempt failed while attempts are left to start (`more`), or `until`.
 * An earlier attempt that ends meanwhile wakes the wait, which goes on.
 * Returns -ECANCELED when the coordinator was cancelled, else 0. */
static int he_wait(he_state *st, int started, bool more, int64_t until) {
  for (;;) {
    int64_t seq = weft__wait_prepare_deadline(true, until);
    if (seq < 0) return seq == -ECANCELED ? -ECANCELED : 0;
    weft__spin_lock(&st->lock);
    if (st->winner >= 0 || st->ended == started || (more && (st->failed & (1u << (started - 1))))) {
      weft__spin_unlock(&st->lock);
      weft__wait_abandon(); /* the timer entry left behind is stale */
      return 0;
    }
    st->waiter = weft__task_self();
    st->seq = (uint32_t)seq;
    weft__spin_unlock(&st->lock);
    uint32_t why = weft__wait_commit((uint32_t)seq);
    weft__spin_lock(&st->lock);
    st->waiter = NULL;
    weft__spin_unlock(&st->lock);
    if (why == WEFT__WAKE_CANCEL) return -ECANCELED;
    if (why != WEFT__WAKE_NORMAL || weft_now_ns() >= until) return 0; /* the step or the deadline */
  }
}

int weft_connect_host(const char *host, uint16_t port, int64_t deadline, weft_addr *peer) {
  if (!weft__task_self()) return -EINVAL;
  weft_addr addrs[HE_MAX];
  int n = weft_resolve(host, port, AF_UNSPEC, 0, addrs, HE_MAX);
  if (n < 0) return n;
  interleave(addrs, n);
  return weft_connect_addrs(addrs, (size_t)n, deadline, peer);
}

int weft_connect_addrs(const weft_addr *addrs, size_t count, int64_t deadline, weft_addr *peer) {
  if (!weft__task_self() || !addrs || !count || count > HE_MAX) return -EINVAL;
  int n = (int)count;
  if (n == 1) { /* nothing to race */
    int fd = weft_connect_addr(&addrs[0], deadline);
    if (fd >= 0 && peer) *peer = addrs[0];
    return fd;
  }
  he_state st = {.winner = -1, .winner_idx = -1, .err = -ETIMEDOUT, .deadline = deadline};
  weft__spin_init(&st.lock);
  he_attempt att[HE_MAX];
  weft_task tasks[HE_MAX];
  int started = 0, rc = 0;
  for (;;) {
    if (started < n) {
      att[started] = (he_attempt){.st = &st, .addr = &addrs[started], .idx = started};
      tasks[started] = weft_spawn(attempt_main, &att[started]);
      if (!tasks[started].rec) {
        rc = -errno;
        break;
      }
      started++;
    }
    int64_t until = deadline;
    if (started < n) {
      int64_t now = weft_now_ns();
      if (now + HE_STEP_NS < until) until = now + HE_STEP_NS;
    }
    rc = he_wait(&st, started, started < n, until);
    if (rc) break;
    weft__spin_lock(&st.lock);
    bool won = st.winner >= 0, all_ended = st.ended == started;
    weft__spin_unlock(&st.lock);
    if (won || (all_ended && started == n)) break;
    if (weft_now_ns() >= deadline) break;
  }
  /* Cancel the rest and join everyone: the attempts use this stack. The
   * joins are not cancellable: a request for the coordinator that comes
   * now would be forwarded to an attempt (already cancelled), whose
   * ordinary return would swallow it; it stays pending instead, and is
   * taken below. */
  for (int i = 0; i < started; i++) weft_cancel(tasks[i]);
  weft__task *self = weft__task_self();
  self->shield_depth++;
  for (int i = 0; i < started; i++) {
    weft_join(tasks[i]);
    weft_task_release(tasks[i]);
  }
  self->shield_depth--;
  if (rc != -ECANCELED) rc = weft__io_cancel_point() ? -ECANCELED : rc;
  /* Every attempt ended: the state is ours alone now. */
  if (rc == -ECANCELED) {
    if (st.winner >= 0) close(st.winner);
    return -ECANCELED;
  }
  if (st.winner >= 0) {
    if (peer) *peer = addrs[st.winner_idx];
    return st.winner;
  }
  return rc ? rc : st.err;
}
