/* io/op.c: an operation's life on the calling task's worker: submit,
 * suspend, reap, and cancellation that waits for the kernel (the protocol
 * is in io/op.h); the cancels that weft_close sends to every ring first
 * (op.h, CLOSE). Everything here runs on the owner worker's thread: the
 * task is pinned there from before its submission until after its
 * completion was reaped, and the completion callbacks run in that
 * worker's reap (its scheduler context, or a flush inside a task on that
 * same thread). Hence `seq`, `res`, `done`, `pin_dropped`, `counted`,
 * `closed` and `fd_cancelled` of a weft__uop need no atomics, nor the
 * reactor's fd_cancels (the owner's alone): while the operation is in flight one thread
 * touches them; the completion's wake (a release CAS on the task's wait
 * word, then the run queue's release) publishes them to the task, which
 * may resume on another worker once the completion dropped its pin. The
 * reactor's fd_ops is atomic only because closers on other workers read
 * it; its owner alone writes it.
 */
#include <errno.h>
#include <liburing.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <weft/core.h>

#include "core/runtime.h"
#include "core/task.h"
#include "core/worker.h"
#include "io/op.h"

/* The completions nobody waits for (ASYNC_CANCEL's, LINK_TIMEOUT's): they
 * may arrive after their task returned, so they name this static op. */
static void sink_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)op; (void)res; (void)flags;
}
static weft__io_op sink_op = {sink_complete};

/* The kernel's internal "interrupted" code (include/linux/errno.h; not in
 * the user's errno.h). A blocking operation that the kernel runs on its
 * worker thread (a splice of a blocking pipe) and that a cancel interrupts
 * completes with it, where a read would say -EINTR: the same meaning. */
#define KERNEL_ERESTARTSYS 512

/* The result says a cancel interrupted the operation. */
static bool interrupted(int32_t res) { return res == -EINTR || res == -KERNEL_ERESTARTSYS; }

/* The reactor's count of operations in flight on descriptor number fd
 * (op.h, CLOSE). */
static _Atomic uint32_t *fd_ops_of(weft__worker *w, int fd) {
  return &w->reactor.fd_ops[(unsigned)fd & (WEFT__FD_OP_BUCKETS - 1)];
}

/* Owner: count an operation on a non-file descriptor in or out. */
static void count_fd_op(weft__worker *w, int fd, int by) {
  _Atomic uint32_t *c = fd_ops_of(w, fd);
  /* relaxed: the owner is the only writer; a closer's relaxed load only
   * asks whether to cancel on this ring (op.h, CLOSE: an operation it
   * cannot see yet races the close) */
  weft__store(c, weft__load(c, RELAXED) + (uint32_t)by, RELAXED);
}

/* The reactor's count of cancels by descriptor for number fd (op.h,
 * weft__uop_note_fd_cancel). */
static uint32_t *fd_cancels_of(weft__worker *w, int fd) {
  return &w->reactor.fd_cancels[(unsigned)fd & (WEFT__FD_OP_BUCKETS - 1)];
}

static void uop_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  weft__uop *u = (weft__uop *)op;
  u->res = res;
  /* A cancel ended it: weft_close's if one was submitted for its number
   * (or any) since the operation was; the cancel that ended it went to the
   * kernel before this reap, on this thread, after its note. A bucket
   * shared with another number only errs towards -EBADF, as before.
   * fd_cancelled: one for some number was (a dup's close, see uop_wait). */
  if (res == -ECANCELED || interrupted(res)) {
    weft__reactor *r = &u->w->reactor;
    u->closed = r->fd_cancels_any != u->fd_cancels_any ||
                (u->fd >= 0 && *fd_cancels_of(u->w, u->fd) != u->fd_cancels);
    u->fd_cancelled = r->fd_cancels_all != u->fd_cancels_all;
  }
  u->done = true;
  if (u->counted) count_fd_op(u->w, u->counted_fd, -1); /* the reap runs on the owner, u->w */
  if (u->movable) /* a file operation: the task need not resume here (op.h, PINNING) */
    weft__wake_unpinning(u->task, u->seq, &u->pin_dropped);
  else
    weft__wake(u->task, u->seq, WEFT__WAKE_NORMAL);
}

int weft__io_backend(void) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current) return -EINVAL;
  return w->reactor.backend;
}

int64_t weft__deadline_after(int64_t timeout_ns) {
  if (timeout_ns < 0) return WEFT__NO_DEADLINE;
  int64_t now = weft_now_ns();
  return timeout_ns > INT64_MAX - now ? WEFT__NO_DEADLINE : now + timeout_ns;
}

/* The cancel request was consumed by a wait, but the caller gets a real
 * result: keep the request for the next suspension (as weft_join). */
static void repend_cancel(weft__task *t) {
  weft__store(&t->cancel_pending, 1, RELAXED); /* relaxed: the flag carries no data */
}

static struct io_uring_sqe *uop_begin(weft__uop *u, int64_t deadline, bool timed, int *err) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current) {
    *err = -EINVAL;
    return NULL;
  }
  *u = (weft__uop){.op.complete = uop_complete, .task = w->current, .deadline = deadline, .w = w, .fd = -1,
                   .timed = timed && deadline != WEFT__NO_DEADLINE};
  weft_pin(); /* wakes now come back to this worker, the ring's owner */
  unsigned need = deadline != WEFT__NO_DEADLINE && !u->timed ? 2 : 1;
  if (weft__reactor_sq_room(&w->reactor, need) < 0) {
    weft_unpin();
    *err = -EAGAIN;
    return NULL;
  }
  int64_t seq = u->timed ? weft__wait_prepare_deadline(true, deadline) : weft__wait_prepare(true);
  weft__waiting_on(u->task, WEFT__WAITING_IO);
  if (seq < 0) { /* cancelled before submitting: nothing reaches the kernel */
    weft_unpin();
    *err = (int)seq;
    return NULL;
  }
  u->seq = (uint32_t)seq;
  struct io_uring_sqe *sqe = weft__reactor_sqe(&w->reactor, &u->op); /* room was made: no flush */
  if (!sqe) {
    weft__wait_abandon();
    weft_unpin();
    *err = -EAGAIN;
  }
  return sqe;
}

struct io_uring_sqe *weft__uop_begin(weft__uop *u, int64_t deadline, int *err) {
  return uop_begin(u, deadline, false, err);
}

struct io_uring_sqe *weft__uop_begin_timed(weft__uop *u, int64_t deadline, int *err) {
  return uop_begin(u, deadline, true, err);
}

int weft__uop_wait(weft__uop *u, struct io_uring_sqe *sqe) {
  weft__worker *w = u->w;
  struct __kernel_timespec ts;
  if (u->deadline != WEFT__NO_DEADLINE && !u->timed) {
    sqe->flags |= IOSQE_IO_LINK;
    /* a deadline below 0 has passed as 0 has: as it is, its timespec
     * (tv_nsec or tv_sec < 0) is refused by the kernel (-EINVAL), which
     * cancels the operation before it ran */
    int64_t d = u->deadline < 0 ? 0 : u->deadline;
    ts.tv_sec = d / 1000000000;
    ts.tv_nsec = d % 1000000000;
    struct io_uring_sqe *t = weft__reactor_sqe(&w->reactor, &sink_op); /* room made in begin */
    /* the timespec is read at submission, which happens before this
     * frame returns (the task waits for the operation's completion) */
    io_uring_prep_link_timeout(t, &ts, IORING_TIMEOUT_ABS);
  }
  /* the cancels by descriptor noted so far went to the kernel before this
   * entry (each is submitted right after its note): they cannot end it */
  u->fd = sqe->fd;
  if (u->fd >= 0) u->fd_cancels = *fd_cancels_of(w, u->fd);
  u->fd_cancels_any = w->reactor.fd_cancels_any;
  u->fd_cancels_all = w->reactor.fd_cancels_all;
  if (!u->movable && sqe->fd >= 0) { /* a socket's, a pipe's, a poll...: weft_close must cancel it (op.h, CLOSE) */
    u->counted = true;
    u->counted_fd = sqe->fd;
    count_fd_op(w, u->counted_fd, 1);
  }
  uint32_t why = weft__wait_commit(u->seq);
  if (why == WEFT__WAKE_CANCEL || why == WEFT__WAKE_TIMER) {
    /* Resumed on the owner (pinned). A cancel request is delivered; a
     * timer's wake is a timed operation's deadline (weft__uop_begin_timed). */
    if (!u->done) {
      int64_t seq2 = weft__wait_prepare(false);
      weft__waiting_on(u->task, WEFT__WAITING_IO);
      u->seq = (uint32_t)seq2; /* before any reap can run (the flush below may reap) */
      struct io_uring_sqe *c = weft__reactor_sqe(&weft__worker_self()->reactor, &sink_op);
      if (c) {
        io_uring_prep_cancel64(c, (uint64_t)(uintptr_t)&u->op, 0);
        u->cancel_sent = true;
      }
      /* no entry (the kernel refused a flush): the operation completes on
       * its own; wait for it all the same */
      weft__wait_commit(u->seq);
    }
    if (!u->pin_dropped) weft_unpin();
    int res = u->res;
    bool ended = res == -ECANCELED || (interrupted(res) && u->cancel_sent);
    if (why == WEFT__WAKE_TIMER) return ended ? -ETIMEDOUT : res;
    if (ended) return -ECANCELED;
    repend_cancel(u->task); /* it completed first: its result wins */
    return res;
  }
  if (!u->pin_dropped) weft_unpin(); /* else the completion dropped it: we may run anywhere now */
  /* a cancel the task did not ask for: its linked timeout, or weft_close's
   * (CLOSE); -ERESTARTSYS never reaches the caller, nor -EINTR: a write
   * on io_uring's worker thread (io/fd.c, WAITS IN THE KERNEL) that a cancel
   * interrupts before it moved a byte ends so (no signal reaches those
   * threads: they block all but SIGKILL and SIGSTOP) */
  if (u->res == -ECANCELED || interrupted(u->res)) {
    if (u->deadline != WEFT__NO_DEADLINE && weft_now_ns() >= u->deadline) return -ETIMEDOUT;
    /* Neither: no cancel by descriptor for its number ran on the ring
     * since the submission (`closed`, found by the completion on the
     * owner and passed to us by the wake): a close of another number of
     * the same file (dup: ASYNC_CANCEL_FD matches the file), or a cancel
     * nobody made. Seen on kernel 6.18, about once in 300 runs of
     * test_fd's read_until race under load: a pipe READ and its
     * LINK_TIMEOUT both completed -ECANCELED ~30 us after submission,
     * 300 us before the deadline, with no close. Nothing moved: a read or
     * write (retry_spurious) tries again (-EAGAIN: poll, then retry); a
     * poll (retry_dup) only after a cancel for another number (else
     * -EBADF: a kernel that cancelled every operation would make a read's
     * retries endless); others keep -EBADF. */
    if (!u->closed && (u->retry_spurious || (u->retry_dup && u->fd_cancelled))) return -EAGAIN;
    return -EBADF;
  }
  return u->res;
}

int weft__uop_poll(int fd, unsigned events, int64_t deadline) {
  for (;;) {
    weft__uop u;
    int err;
    struct io_uring_sqe *sqe = weft__uop_begin(&u, deadline, &err);
    if (!sqe) return err;
    u.retry_dup = true; /* a cancel for another number of the file (a close of a dup): wait again (uop_wait) */
    io_uring_prep_poll_add(sqe, fd, events);
    int res = weft__uop_wait(&u, sqe);
    if (res != -EAGAIN) return res;
  }
}

void weft__uop_note_fd_cancel(int fd) {
  weft__worker *w = weft__worker_self();
  if (!w) return;
  /* plain: the owner's counts; the operations the cancel ends are reaped
   * by this thread after it (uop_complete) */
  w->reactor.fd_cancels_all++;
  if (fd < 0)
    w->reactor.fd_cancels_any++;
  else
    ++*fd_cancels_of(w, fd);
}

/* On the calling task's worker: cancel every operation on fd on its ring
 * (op.h, CLOSE) and wait for the cancel's completion. */
static int cancel_fd_here(int fd) {
  weft__uop u;
  int err;
  struct io_uring_sqe *sqe = weft__uop_begin(&u, WEFT__NO_DEADLINE, &err);
  if (!sqe) return err;
  weft__uop_note_fd_cancel(fd);
  u.movable = true; /* it names no descriptor's file (not counted) and completes at once */
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  return weft__uop_wait(&u, sqe); /* how many it cancelled, or -ENOENT */
}

static int cancel_fd_task(void *arg) { return cancel_fd_here((int)(intptr_t)arg); }

/* The other workers' helpers are joined in groups of this many (handles
 * on the closer's stack). */
#define CANCEL_GROUP 16

void weft__uop_cancel_fd(int fd) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current) return;
  weft__runtime *rt = w->rt;
  unsigned self = (unsigned)w->id;
  /* relaxed: see count_fd_op */
  bool here = weft__load(fd_ops_of(w, fd), RELAXED) != 0;
  for (unsigned from = 0; from < rt->nworkers;) {
    weft_task helper[CANCEL_GROUP];
    int n = 0;
    for (; from < rt->nworkers && n < CANCEL_GROUP; from++) {
      /* relaxed: see count_fd_op */
      if (from == self || weft__load(fd_ops_of(rt->workers[from], fd), RELAXED) == 0) continue;
      /* no memory for the helper: that ring's waiters on fd are not woken
       * by this close (they are when the task that holds them is cancelled) */
      weft_task h = weft__spawn_pinned(from, cancel_fd_task, (void *)(intptr_t)fd, NULL);
      if (!weft_task_is_null(h)) helper[n++] = h;
    }
    if (here) { /* this ring's cancel while the helpers run theirs; no suspension before it, so
                   `self` is still the worker the task runs on */
      cancel_fd_here(fd);
      here = false;
    }
    for (int i = 0; i < n; i++) {
      weft_join(helper[i]);
      weft_task_release(helper[i]);
    }
  }
}

void weft__io_keep_cancel(void) {
  weft__task *t = weft__task_self();
  if (t) repend_cancel(t);
}

int weft__io_cancel_point(void) {
  weft__task *t = weft__task_self();
  /* relaxed: the request carries no data (as weft_yield) */
  if (t && t->shield_depth == 0 && weft__load(&t->cancel_pending, RELAXED)) {
    weft__cancel_consume(t);
    return -ECANCELED;
  }
  return 0;
}

/* ------------------------------------------------------------ epoll readiness */

int weft__epoll_wait_fd(int fd, uint32_t events, int64_t deadline) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current) return -EINVAL;
  weft__uop u = {.op.complete = uop_complete, .task = w->current, .deadline = deadline, .w = w};
  weft_pin(); /* the event is dispatched on this worker; unwatch runs here too */
  int64_t seq = deadline == WEFT__NO_DEADLINE ? weft__wait_prepare(true)
                                              : weft__wait_prepare_deadline(true, deadline);
  weft__waiting_on(u.task, WEFT__WAITING_IO);
  if (seq < 0) {
    weft_unpin();
    return (int)seq;
  }
  u.seq = (uint32_t)seq;
  int watched = fd, dup_fd = -1;
  int rc = weft__epoll_watch(&w->reactor, fd, events, &u.op);
  if (rc == -EEXIST) {
    /* another task of this worker watches this fd number: watch a
     * duplicate (a registration is per descriptor number and file) */
    dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    rc = dup_fd < 0 ? -errno : weft__epoll_watch(&w->reactor, dup_fd, events, &u.op);
    watched = dup_fd;
  }
  if (rc < 0) {
    weft__wait_abandon();
    if (dup_fd >= 0) close(dup_fd);
    weft_unpin();
    return rc;
  }
  uint32_t why = weft__wait_commit(u.seq);
  /* On this worker (pinned): its dispatch has run or will never run for
   * this registration once it is removed; no event is pending in
   * between (dispatch runs right after epoll_wait, before any task). */
  weft__epoll_unwatch(&weft__worker_self()->reactor, watched);
  if (dup_fd >= 0) close(dup_fd);
  weft_unpin();
  if (why == WEFT__WAKE_NORMAL) return u.res ? u.res : (int)events;
  if (why == WEFT__WAKE_TIMER) return u.done ? u.res : -ETIMEDOUT;
  return -ECANCELED; /* readiness moves no bytes: nothing is lost */
}
