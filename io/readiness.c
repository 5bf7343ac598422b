/* io/readiness.c: per-descriptor readiness on the epoll backend: each
 * descriptor is registered once, edge-triggered, and a task tries its
 * system call first and waits only when the call said EAGAIN.
 *
 * WHY. The one-shot watch it replaces (io/op.c's weft__epoll_wait_fd) cost
 * an epoll_ctl ADD and a DEL around every wait: two of the ~4 system calls
 * per echoed message (docs/io-choices.md). Here a descriptor that a stream
 * owns costs no epoll_ctl per wait at all, and any other descriptor one
 * (a MOD that re-checks the registration, below). As Tokio/mio and Go's
 * netpoll do it.
 *
 * THE TABLE. One slot per descriptor number, per runtime (rt->fdtab, made
 * for the epoll backend): chunks of 256 slots allocated on first use and
 * published with a CAS, kept until the runtime is freed (slots are
 * type-stable: an epoll event naming a slot is never a dangling pointer).
 * A slot holds, under its spinlock (a leaf; no system call, allocation or
 * wake under it):
 *   home         the reactor whose epoll holds the registration (NULL:
 *                none). The registration is EPOLLET with IN|OUT|RDHUP|PRI
 *                and data.ptr = slot|1, made by the first task that has to
 *                wait, into its own worker's epoll; events are dispatched
 *                by that worker (its poll or park), which wakes the
 *                waiters wherever they are (a woken task is queued on the
 *                waker's worker, so tasks follow their descriptors home).
 *   registering  a task is adding the registration now (outside the lock).
 *   owned        the descriptor's owner (a stream) will call
 *                weft__fd_forget before closing it.
 *   gen          bumped by forget: an ADD that straddles a forget is undone.
 *   wl[dir]      the tasks waiting for readiness in each direction.
 * and, outside the lock, tick[dir] = count << 2 | CLOSED | READY per
 * direction.
 *
 * THE TICK (the no-lost-wakeup rule). An event (dispatch) bumps the count
 * and sets READY, under the lock, then wakes every waiter of that
 * direction. An operation snapshots the tick BEFORE its system call; on
 * EAGAIN it clears READY with a CAS from the snapshot, which fails if an
 * event came since (then it tries again). To wait it registers (if
 * needed), prepares its wait, and under the lock compares the tick with
 * its snapshot: changed, it tries again; unchanged, it links itself in wl
 * and sleeps. A dispatch bumps under the same lock, so it either comes
 * before the compare (seen) or finds the waiter linked (woken). Edge-
 * triggered epoll reports every readiness change after the registration,
 * and the ADD (or MOD) itself reports the state at that moment, so
 * readiness that came between the EAGAIN and the registration is not lost
 * either. READY is advice: a wrong READY costs one EAGAIN, never a hang.
 * A stream socket's short receive also clears READY (the socket is empty),
 * so the next receive waits without the try that would fail, unless
 * CLOSED is set: an event with RDHUP, HUP or ERR sets CLOSED too (in both
 * directions for HUP and ERR), because the peer's end (or an error) stays
 * readable after the data before it was taken, and no new edge will say
 * so. An EAGAIN clears both (the kernel's own answer: a FIFO that got a
 * new writer), so a wrong CLOSED cannot make a task spin.
 *
 * CLOSE AND REUSE. Descriptors are plain ints that callers close with
 * close(2); the kernel drops a registration when the file is released,
 * and the number may come back for another file whose slot still names
 * the old home. So a wait on a slot that is not `owned` first re-checks
 * the registration with EPOLL_CTL_MOD (keyed by number and file: ENOENT
 * when the file changed; the MOD also re-reports the current state), and
 * registers afresh on ENOENT. An owned descriptor skips that check (no
 * system call per wait): its owner calls weft__fd_forget before close,
 * which drops the registration (DEL) and resets the slot; weft_close does
 * the same. weft__fd_own resets the slot too (the descriptor may have been
 * waited on before: connect). A descriptor registered in the same epoll
 * by someone else (net/transport.c's driver: ADD says EEXIST) and one past
 * the table fall back to the one-shot watch.
 *
 * CANCELLATION and deadlines: a waiter woken by a cancel or its timer
 * unlinks itself under the lock and returns -ECANCELED/-ETIMEDOUT. Nothing
 * is handed to a particular waiter (an event wakes them all and READY
 * stays set), so a waiter cancelled at the moment it is woken loses
 * nothing for the others.
 *
 * Rejected: EPOLLONESHOT re-armed with MOD for every descriptor (one
 * epoll_ctl per wait where owned descriptors need none; it is what the
 * not-owned path amounts to); moving a registration to the worker of each
 * new waiter (a DEL and an ADD whenever a task is stolen, where the wake
 * already brings the task to the registration's worker).
 */
#include "io/readiness.h"

#include <errno.h>
#include <sys/epoll.h>

#include "core/alloc.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"
#include "core/worker.h"
#include "io/op.h"
#include "io/reactor.h"

#define READY 1u
#define CLOSED 2u
#define TICK_ONE 4u /* the count's unit */
#define CHUNK_SHIFT 8
#define CHUNK_SLOTS (1u << CHUNK_SHIFT)
#define MAX_CHUNKS 4096 /* descriptors below 1M have slots */
#define WAKE_BATCH 32

typedef struct weft__fdslot {
  weft__spinlock lock;
  _Atomic uint32_t tick[2]; /* count << 2 | CLOSED | READY; changed under lock (events, resets) or by
                               CAS (clears) */
  struct weft__reactor *home;
  uint32_t gen;
  bool registering;
  bool owned;
  weft__waitlist wl[2];
} weft__fdslot;

struct weft__fdtab {
  _Atomic(weft__fdslot *) chunks[MAX_CHUNKS];
};

struct weft__fdtab *weft__fdtab_new(void) { return weft__zalloc(sizeof(struct weft__fdtab)); }

void weft__fdtab_free(struct weft__fdtab *t) {
  if (!t) return;
  for (unsigned i = 0; i < MAX_CHUNKS; i++) {
    weft__fdslot *c = weft__load(&t->chunks[i], RELAXED); /* relaxed: every worker thread was joined */
    if (c) weft__free(c, CHUNK_SLOTS * sizeof *c);
  }
  weft__free(t, sizeof *t);
}

/* The slot of fd in the calling task's runtime, made if missing (create)
 * or NULL: outside a task, not epoll, fd out of range, no memory. */
static weft__fdslot *slot_of(int fd, bool create) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current || fd < 0 || (unsigned)fd >= CHUNK_SLOTS * MAX_CHUNKS) return NULL;
  struct weft__fdtab *t = w->rt->fdtab;
  if (!t) return NULL;
  unsigned c = (unsigned)fd >> CHUNK_SHIFT;
  /* acquire: pairs with the release CAS that published the chunk, so its
   * initialised ticks are visible */
  weft__fdslot *chunk = weft__load(&t->chunks[c], ACQUIRE);
  if (!chunk) {
    if (!create) return NULL;
    weft__fdslot *n = weft__zalloc(CHUNK_SLOTS * sizeof *n);
    if (!n) return NULL;
    for (unsigned i = 0; i < CHUNK_SLOTS; i++) {
      weft__spin_init(&n[i].lock);
      for (int d = 0; d < 2; d++) weft__store(&n[i].tick[d], READY, RELAXED); /* relaxed: published by the CAS */
    }
    weft__fdslot *seen = NULL;
    /* release: publishes the initialised chunk (pairs with the acquire
     * load above); acquire on failure: the winner's chunk, likewise */
    if (weft__cas(&t->chunks[c], &seen, n, RELEASE, ACQUIRE)) {
      chunk = n;
    } else {
      weft__free(n, CHUNK_SLOTS * sizeof *n);
      chunk = seen;
    }
  }
  return &chunk[(unsigned)fd & (CHUNK_SLOTS - 1)];
}

/* Under the lock: an event for direction d (closed: it reported the end
 * or an error), or a reset (the bits start afresh). */
static void bump(weft__fdslot *s, int d, bool closed, bool reset) {
  uint32_t v = weft__load(&s->tick[d], RELAXED); /* relaxed: changed only under this lock, or by clear's CAS */
  uint32_t bits = READY | (closed ? CLOSED : 0) | (reset ? 0 : v & CLOSED);
  /* release: pairs with the acquire snapshot loads (begin, wait's refresh);
   * the tick carries no data, the order only keeps snapshots monotonic */
  weft__store(&s->tick[d], ((v & ~(READY | CLOSED)) + TICK_ONE) | bits, RELEASE);
}

/* Bump the directions in mask (bit d; closed: bit d + 2; reset) and wake
 * every task waiting in them, in batches (never waking under the lock);
 * waiters that link themselves after the bump saw it (they compare ticks)
 * and are not owed a wake, so at most the waiters present at the bump are
 * taken. */
static void release(weft__fdslot *s, unsigned mask, bool reset) {
  weft__wakeup_pair batch[WAKE_BATCH];
  size_t left[2] = {0, 0};
  bool first = true;
  for (;;) {
    size_t n = 0;
    weft__spin_lock(&s->lock);
    if (first) {
      for (int d = 0; d < 2; d++)
        if (mask & (1u << d)) {
          bump(s, d, mask & (4u << d), reset);
          left[d] = s->wl[d].len;
        }
      first = false;
    }
    for (int d = 0; d < 2; d++) {
      weft__wakeup wk;
      while (left[d] && n < WAKE_BATCH) {
        if (!weft__waitlist_pop(&s->wl[d], &wk)) {
          left[d] = 0;
          break;
        }
        left[d]--;
        batch[n].task = wk.task;
        batch[n].seq = wk.seq;
        n++;
      }
    }
    weft__spin_unlock(&s->lock);
    if (n) weft__wake_many(batch, n);
    if (!left[0] && !left[1]) return;
  }
}

void weft__ready_event(weft__fdslot *s, uint32_t events) {
  unsigned mask = 0;
  if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) mask |= 1u << WEFT__DIR_IN;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) mask |= 1u << WEFT__DIR_OUT;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) mask |= 4u << WEFT__DIR_IN;
  if (events & (EPOLLHUP | EPOLLERR)) mask |= 4u << WEFT__DIR_OUT;
  if (mask) release(s, mask, false);
}

bool weft__ready_begin(weft__ready *rd, int fd, int dir) {
  rd->fd = fd;
  rd->dir = dir;
  rd->slot = slot_of(fd, true);
  if (!rd->slot) {
    rd->tick = READY;
    return true;
  }
  rd->tick = weft__load(&rd->slot->tick[dir], ACQUIRE); /* acquire: pairs with bump's release */
  return rd->tick & READY;
}

static void clear_bits(weft__ready *rd, uint32_t bits) {
  if (!rd->slot || !(rd->tick & READY)) return;
  uint32_t seen = rd->tick;
  /* relaxed: the tick carries no data; the CAS only has to fail when an
   * event bumped it since the snapshot (then the newer value is kept) */
  if (weft__cas(&rd->slot->tick[rd->dir], &seen, rd->tick & ~bits, RELAXED, RELAXED))
    rd->tick &= ~bits;
  else
    rd->tick = seen;
}

void weft__ready_clear(weft__ready *rd) { clear_bits(rd, READY | CLOSED); }

void weft__ready_drained(weft__ready *rd) {
  if (!(rd->tick & CLOSED)) clear_bits(rd, READY);
}

/* Add fd's registration to r (the slot was claimed: registering, home r,
 * generation gen). On failure, or when a forget came meanwhile, the
 * waiters are woken to try again (they register themselves). */
static int add_registration(weft__fdslot *s, int fd, weft__reactor *r, uint32_t gen) {
  int rc = weft__epoll_reg_add(r, fd, s);
  weft__spin_lock(&s->lock);
  bool forgotten = s->gen != gen;
  s->registering = false;
  if (rc < 0 && !forgotten) s->home = NULL;
  weft__spin_unlock(&s->lock);
  if (rc == 0 && forgotten) weft__epoll_reg_del(r, fd); /* forget reset the slot: undo */
  if (rc < 0 || forgotten) release(s, 3u, false);
  return rc;
}

/* Make sure fd is registered somewhere (see the top of the file). 0, or
 * -EEXIST (someone else's registration in this epoll: fall back), -EPERM,
 * -EBADF, ... */
static int ensure_registered(weft__fdslot *s, int fd, weft__reactor *r) {
  for (int round = 0; round < 4; round++) {
    weft__spin_lock(&s->lock);
    weft__reactor *home = s->home;
    if (s->registering || (home && s->owned)) {
      weft__spin_unlock(&s->lock);
      return 0; /* being added (the ADD reports the state), or owned and live */
    }
    if (!home) {
      s->registering = true;
      s->home = r;
      uint32_t gen = s->gen;
      weft__spin_unlock(&s->lock);
      return add_registration(s, fd, r, gen);
    }
    weft__spin_unlock(&s->lock);
    int rc = weft__epoll_reg_mod(home, fd, s); /* still this file's? (and re-report its state) */
    if (rc != -ENOENT) return rc;
    /* the number was closed and reused behind our back: register afresh */
    weft__spin_lock(&s->lock);
    if (s->home == home && !s->registering) s->home = NULL;
    weft__spin_unlock(&s->lock);
  }
  return 0; /* others keep changing it: each of them registers */
}

static uint32_t fallback_events(int dir) { return dir == WEFT__DIR_OUT ? EPOLLOUT : EPOLLIN | EPOLLPRI; }

int weft__ready_wait(weft__ready *rd, int64_t deadline) {
  weft__fdslot *s = rd->slot;
  if (!s) {
    int rc = weft__epoll_wait_fd(rd->fd, fallback_events(rd->dir), deadline);
    return rc < 0 ? rc : 0;
  }
  int d = rd->dir;
  if (rd->tick & READY) { /* an event came after the EAGAIN (clear failed): try again */
    rd->tick = weft__load(&s->tick[d], ACQUIRE); /* acquire: pairs with bump's release */
    return 0;
  }
  weft__worker *w = weft__worker_self();
  int rc = ensure_registered(s, rd->fd, &w->reactor);
  if (rc == -EEXIST) { /* registered in this epoll by another owner: a one-shot watch of a dup */
    rc = weft__epoll_wait_fd(rd->fd, fallback_events(d), deadline);
    rd->tick = weft__load(&s->tick[d], ACQUIRE); /* acquire: as above */
    return rc < 0 ? rc : 0;
  }
  if (rc < 0) return rc;
  weft__task *self = w->current;
  int64_t seq = deadline == WEFT__NO_DEADLINE ? weft__wait_prepare(true) : weft__wait_prepare_deadline(true, deadline);
  if (seq < 0) return (int)seq;
  weft__waiting_on(self, WEFT__WAITING_IO);
  weft__spin_lock(&s->lock);
  if (weft__load(&s->tick[d], RELAXED) != rd->tick) { /* relaxed: under the lock that bumps it */
    weft__spin_unlock(&s->lock);
    weft__wait_abandon();
    rd->tick = weft__load(&s->tick[d], ACQUIRE); /* acquire: as above */
    return 0;
  }
  weft__waitlist_push(&s->wl[d], self, (uint32_t)seq);
  weft__spin_unlock(&s->lock);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  weft__spin_lock(&s->lock);
  weft__waitlist_remove(&s->wl[d], self); /* no-op when an event took it out */
  weft__spin_unlock(&s->lock);
  rd->tick = weft__load(&s->tick[d], ACQUIRE); /* acquire: as above */
  if (why == WEFT__WAKE_CANCEL) return -ECANCELED; /* readiness moves no bytes: nothing is lost */
  if (why == WEFT__WAKE_TIMER) return -ETIMEDOUT;
  return 0;
}

/* Reset the slot (no registration, both directions READY, waiters woken
 * to try again); drop the registration unless an ADD is in flight (that
 * one undoes itself: gen). */
static void reset(weft__fdslot *s, int fd, bool own) {
  weft__spin_lock(&s->lock);
  weft__reactor *home = s->home;
  bool adding = s->registering;
  s->home = NULL;
  s->owned = own;
  s->gen++;
  weft__spin_unlock(&s->lock);
  if (home && !adding) weft__epoll_reg_del(home, fd);
  release(s, 3u, true);
}

void weft__fd_own(int fd) {
  weft__fdslot *s = slot_of(fd, true);
  if (s) reset(s, fd, true);
}

void weft__fd_forget(int fd) {
  weft__fdslot *s = slot_of(fd, false);
  if (s) reset(s, fd, false);
}
