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
 *   wl[dir]      the tasks waiting for readiness in each direction, and
 *                wl[WEFT__DIR_BOTH] those waiting for either (weft_poll of
 *                both directions).
 * and, outside the lock, tick[dir] = count << 2 | CLOSED | READY per
 * direction, and gen, bumped by every reset (forget, own: see CLOSE AND
 * REUSE), stored under the lock and read by begin without it.
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
 * A reset bumps gen, under the lock, before it wakes the waiters; an
 * operation snapshots gen in begin, and a wait that finds it changed (at
 * its start, at the compare under the lock, or once woken) returns -EBADF
 * instead of "try again": the descriptor it was called on was closed, and
 * another try could reach a new file that took the number at once (the
 * close itself runs after the forget, on the blocking pool) or register
 * the old one again just before its close and sleep for ever. own counts
 * as a close for the waiters it finds: a new owner's file has the number,
 * so whatever they waited on is gone (the only waiters of that same file
 * would be tasks already using a descriptor handed to a stream, which its
 * owner does not allow). A task that is between its begin (or its wake)
 * and its system call when the close comes is a call racing the close,
 * the caller's own race, as with close(2) and threads.
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
  _Atomic uint32_t gen;     /* resets; stored under the lock, read by begin without it */
  struct weft__reactor *home;
  bool registering;
  bool owned;
  weft__waitlist wl[3];     /* by direction, and WEFT__DIR_BOTH */
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
  size_t left[3] = {0, 0, 0};
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
      if (mask & 3u) left[WEFT__DIR_BOTH] = s->wl[WEFT__DIR_BOTH].len; /* either direction wakes them */
      first = false;
    }
    for (int d = 0; d < 3; d++) {
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
    if (!left[0] && !left[1] && !left[2]) return;
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

/* rd's ticks, taken afresh (begin, and after a wait). */
static void snapshot(weft__ready *rd) {
  weft__fdslot *s = rd->slot;
  if (rd->dir == WEFT__DIR_BOTH) {
    rd->tick = weft__load(&s->tick[WEFT__DIR_IN], ACQUIRE); /* acquire: pairs with bump's release */
    rd->tick_out = weft__load(&s->tick[WEFT__DIR_OUT], ACQUIRE); /* acquire: likewise */
  } else {
    rd->tick = weft__load(&s->tick[rd->dir], ACQUIRE); /* acquire: pairs with bump's release */
  }
}

/* Whether a snapshot says READY (BOTH: in either direction). */
static bool snap_ready(const weft__ready *rd) {
  return (rd->tick | (rd->dir == WEFT__DIR_BOTH ? rd->tick_out : 0)) & READY;
}

bool weft__ready_begin(weft__ready *rd, int fd, int dir) {
  rd->fd = fd;
  rd->dir = dir;
  rd->slot = slot_of(fd, true);
  if (!rd->slot) {
    rd->tick = rd->tick_out = READY;
    return true;
  }
  /* relaxed: a reset that happened before this call (a weft_close, then
   * this call on the new file of that number) is seen by coherence; one
   * racing it is a close racing the call (see CLOSE AND REUSE) */
  rd->gen = weft__load(&rd->slot->gen, RELAXED);
  snapshot(rd);
  return snap_ready(rd);
}

/* Clear bits of direction d's tick if it still is *tick (the snapshot). */
static void clear_bits(weft__fdslot *s, int d, uint32_t *tick, uint32_t bits) {
  if (!(*tick & READY)) return;
  uint32_t seen = *tick;
  /* The CAS only has to fail when an event bumped the tick since the
   * snapshot (then the newer value is kept). acquire: pairs with bump's
   * release, so that a reset's gen, stored before its bump, is seen by
   * wait's first check when the failure sees the bump (acquire on success
   * too: C11 wants the failure order no stronger; a clear follows an
   * EAGAIN, no hot path) */
  if (weft__cas(&s->tick[d], &seen, *tick & ~bits, ACQUIRE, ACQUIRE))
    *tick &= ~bits;
  else
    *tick = seen;
}

void weft__ready_clear(weft__ready *rd) {
  if (!rd->slot) return;
  if (rd->dir == WEFT__DIR_BOTH) {
    clear_bits(rd->slot, WEFT__DIR_IN, &rd->tick, READY | CLOSED);
    clear_bits(rd->slot, WEFT__DIR_OUT, &rd->tick_out, READY | CLOSED);
  } else {
    clear_bits(rd->slot, rd->dir, &rd->tick, READY | CLOSED);
  }
}

void weft__ready_drained(weft__ready *rd) {
  if (rd->slot && rd->dir != WEFT__DIR_BOTH && !(rd->tick & CLOSED)) clear_bits(rd->slot, rd->dir, &rd->tick, READY);
}

/* Add fd's registration to r (the slot was claimed: registering, home r,
 * generation gen). On failure, or when a forget came meanwhile, the
 * waiters are woken to try again (they register themselves). */
static int add_registration(weft__fdslot *s, int fd, weft__reactor *r, uint32_t gen) {
  int rc = weft__epoll_reg_add(r, fd, s);
  weft__spin_lock(&s->lock);
  bool forgotten = weft__load(&s->gen, RELAXED) != gen; /* relaxed: stored under this lock */
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
      uint32_t gen = weft__load(&s->gen, RELAXED); /* relaxed: stored under this lock */
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

static uint32_t fallback_events(int dir) {
  return dir == WEFT__DIR_OUT ? EPOLLOUT : dir == WEFT__DIR_IN ? EPOLLIN | EPOLLPRI : EPOLLIN | EPOLLPRI | EPOLLOUT;
}

/* Under s's lock, or after a wake that a reset's release() made: whether a
 * reset came since rd's begin (the descriptor was closed). */
static bool was_reset(const weft__ready *rd) {
  /* relaxed: under the lock that stores it, or ordered after the store by
   * the wake (its CAS and the run queue's hand-off) */
  return weft__load(&rd->slot->gen, RELAXED) != rd->gen;
}

/* Under s's lock: whether rd's direction(s) moved since the snapshot. */
static bool ticks_moved(const weft__ready *rd) {
  weft__fdslot *s = rd->slot;
  /* relaxed: under the lock that bumps them */
  if (rd->dir != WEFT__DIR_BOTH) return weft__load(&s->tick[rd->dir], RELAXED) != rd->tick;
  return weft__load(&s->tick[WEFT__DIR_IN], RELAXED) != rd->tick ||
         weft__load(&s->tick[WEFT__DIR_OUT], RELAXED) != rd->tick_out;
}

int weft__ready_wait(weft__ready *rd, int64_t deadline) {
  weft__fdslot *s = rd->slot;
  if (!s) {
    int rc = weft__epoll_wait_fd(rd->fd, fallback_events(rd->dir), deadline);
    return rc < 0 ? rc : 0;
  }
  int d = rd->dir;
  /* a reset already seen (one that happened before: this task's own
   * weft_close, say); a racing one is caught under the lock below (it
   * bumps the ticks too) */
  if (was_reset(rd)) return -EBADF;
  if (snap_ready(rd)) { /* an event came after the EAGAIN (clear failed): try again */
    snapshot(rd);
    return 0;
  }
  weft__worker *w = weft__worker_self();
  int rc = ensure_registered(s, rd->fd, &w->reactor);
  if (rc == -EEXIST) { /* registered in this epoll by another owner: a one-shot watch of a dup */
    rc = weft__epoll_wait_fd(rd->fd, fallback_events(d), deadline);
    snapshot(rd);
    if (rc >= 0 && was_reset(rd)) return -EBADF; /* (not woken by the reset: only seen after) */
    return rc < 0 ? rc : 0;
  }
  if (rc < 0) return rc;
  weft__task *self = w->current;
  int64_t seq = deadline == WEFT__NO_DEADLINE ? weft__wait_prepare(true) : weft__wait_prepare_deadline(true, deadline);
  if (seq < 0) return (int)seq;
  weft__waiting_on(self, WEFT__WAITING_IO);
  weft__spin_lock(&s->lock);
  if (ticks_moved(rd)) {
    bool reset = was_reset(rd);
    weft__spin_unlock(&s->lock);
    weft__wait_abandon();
    snapshot(rd);
    return reset ? -EBADF : 0;
  }
  weft__waitlist_push(&s->wl[d], self, (uint32_t)seq);
  weft__spin_unlock(&s->lock);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  weft__spin_lock(&s->lock);
  weft__waitlist_remove(&s->wl[d], self); /* no-op when an event took it out */
  bool reset = was_reset(rd);
  weft__spin_unlock(&s->lock);
  snapshot(rd);
  if (why == WEFT__WAKE_CANCEL) return -ECANCELED; /* readiness moves no bytes: nothing is lost */
  if (why == WEFT__WAKE_TIMER) return -ETIMEDOUT;
  return reset ? -EBADF : 0;
}

/* Reset the slot (no registration, both directions READY, gen bumped:
 * the waiters woken return -EBADF); drop the registration unless an ADD is
 * in flight (that one undoes itself: gen). */
static void reset(weft__fdslot *s, int fd, bool own) {
  weft__spin_lock(&s->lock);
  weft__reactor *home = s->home;
  bool adding = s->registering;
  s->home = NULL;
  s->owned = own;
  /* relaxed: the lock orders it for the readers under it; the waiters
   * read it after the wake that follows (release(), below); begin's
   * lock-free load relies on coherence alone (see there) */
  weft__store(&s->gen, weft__load(&s->gen, RELAXED) + 1, RELAXED);
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
