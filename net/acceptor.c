/* net/acceptor.c: multishot accept on io_uring: one IORING_OP_ACCEPT with
 * IORING_ACCEPT_MULTISHOT (kernel 5.19) armed on a listener, its
 * completions queued for one waiting task (net/server.c's accept loop).
 *
 * WHY. A single-shot accept costs a submission and a completion per
 * connection, and the listener is unwatched between the completion and
 * the next submission; a multishot accept stays armed: the kernel posts
 * one completion per connection (IORING_CQE_F_MORE set while it stays
 * armed) and nothing is submitted again until it ends.
 *
 * THREADS. The acceptor's task pins itself to its worker (the ring's
 * owner) in init and unpins in fini, so the completion callback (the
 * owner's reap: its scheduler context, or a flush inside a task on that
 * thread) and the task run on one thread: the fields need no atomics or
 * lock (as io/op.c's weft__uop). The wake's release CAS on the task's
 * wait word publishes what the callback queued.
 *
 * THE QUEUE. Every completion's result (an accepted fd, or a negative
 * errno) is appended to `res[head, tail)` in arrival order, growing the
 * array (doubling; weft__realloc, never under a lock) when full; if that
 * allocation fails, an accepted fd is closed there (the client sees a
 * reset, as if the backlog had overflowed) and an error takes the newest
 * entry's place as -ENOMEM (a connection there is closed the same way).
 * The callback wakes the task when it is waiting (`waiting`, `seq`:
 * registered by next/fini, cleared by the wake). A completion
 * without IORING_CQE_F_MORE is the operation's last: `armed` drops and
 * the operation record (`op`, inside the acceptor) is the kernel's no
 * more.
 *
 * RE-ARMING. next() returns queued results first; with nothing queued it
 * re-arms when the operation ended (the kernel ends a multishot accept on
 * an error, which was queued and returned, or when it could not post a
 * completion) and waits. A kernel without multishot accept answers the
 * first arm with -EINVAL: next() then returns -EOPNOTSUPP (before any
 * connection was accepted) and the caller falls back to single-shot
 * accepts; -EINVAL after a success is a real error (the listener).
 * -EAGAIN (a non-blocking listener on a kernel that does not poll for
 * it) re-arms after a POLLIN wait.
 *
 * THE DESCRIPTOR LIMIT. The kernel reads RLIMIT_NOFILE when the accept is
 * prepared, so a multishot accept keeps the limit of its arming: a limit
 * lowered later applies from the next re-arm (after the next error, the
 * EMFILE back-off's included). Servers set their limit at start-up.
 *
 * THE BUFFER RULE (io/op.h). The operation names the acceptor (user_data)
 * and no buffer (no peer address is asked for). fini, on every path,
 * submits IORING_OP_ASYNC_CANCEL for it while it is armed and waits, not
 * cancellably, for its last completion; then it closes the fds still
 * queued (connections the server will not handle) and unpins. The cancel's
 * own completion goes to a static sink (it may come after fini returned).
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft/core.h>
#include <weft/io.h>

#include "core/alloc.h"
#include "core/task.h"
#include "core/worker.h"
#include "io/op.h"
#include "net/acceptor.h"

#define QUEUE_START 16

static void sink_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)op; (void)res; (void)flags;
}
static weft__io_op sink_op = {sink_complete};

/* The owner's reap: queue the result, wake the waiting task. */
static void acceptor_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  weft__acceptor *a = (weft__acceptor *)op;
  if (!(flags & IORING_CQE_F_MORE)) a->armed = false;
  if (a->tail == a->cap) {
    if (a->head > 0) { /* compact first: the task consumed from the front */
      memmove(a->res, a->res + a->head, (a->tail - a->head) * sizeof *a->res);
      a->tail -= a->head;
      a->head = 0;
    }
    if (a->tail == a->cap) {
      size_t ncap = a->cap ? a->cap * 2 : QUEUE_START;
      int *nr = weft__realloc(a->res, a->cap * sizeof *a->res, ncap * sizeof *a->res);
      if (nr) {
        a->res = nr;
        a->cap = ncap;
      }
    }
  }
  if (a->tail < a->cap) {
    a->res[a->tail++] = res;
  } else if (res >= 0) {
    close(res); /* no room (allocation failed): refuse this connection */
  } else if (a->tail > 0) {
    /* keep the error's end visible in the newest entry; a connection there
     * is refused as above (it leaked when overwritten) */
    if (a->res[a->tail - 1] >= 0) close(a->res[a->tail - 1]);
    a->res[a->tail - 1] = -ENOMEM;
  }
  if (a->waiting) {
    a->waiting = false;
    weft__wake(a->task, a->seq, WEFT__WAKE_NORMAL);
  }
}

int weft__acceptor_init(weft__acceptor *a, int lfd) {
  memset(a, 0, sizeof *a);
  weft__worker *w = weft__worker_self();
  if (!w || !w->current || w->reactor.backend != WEFT_BACKEND_URING) return -EINVAL;
  a->op.complete = acceptor_complete;
  a->lfd = lfd;
  a->task = w->current;
  a->w = w;
  weft_pin(); /* completions and the task on the ring's owner, until fini */
  return 0;
}

/* Submit the multishot accept. 0, or -ENOMEM when the ring refused the
 * flush (the caller backs off). */
static int arm(weft__acceptor *a) {
  struct io_uring_sqe *sqe = weft__reactor_sqe(&a->w->reactor, &a->op);
  if (!sqe) return -ENOMEM;
  io_uring_prep_multishot_accept(sqe, a->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  a->armed = true;
  a->arms++;
  return 0;
}

/* Wait for the callback's next wake. Returns the wake reason. */
static uint32_t wait_completion(weft__acceptor *a, bool cancellable) {
  int64_t seq = weft__wait_prepare(cancellable);
  if (seq < 0) return WEFT__WAKE_CANCEL; /* a pending request, delivered */
  weft__waiting_on(a->task, WEFT__WAITING_IO);
  a->seq = (uint32_t)seq;
  a->waiting = true;
  uint32_t why = weft__wait_commit(a->seq);
  a->waiting = false; /* a cancel ended the wait: the callback must not wake a later one */
  return why;
}

int weft__acceptor_next(weft__acceptor *a) {
  for (;;) {
    if (a->head < a->tail) {
      int r = a->res[a->head++];
      if (a->head == a->tail) a->head = a->tail = 0;
      if (r >= 0) {
        a->accepted++;
        return r;
      }
      if (r == -EINVAL && a->accepted == 0 && !a->armed) return -EOPNOTSUPP; /* no multishot accept here */
      if (r == -EAGAIN) {
        int p = weft_poll(a->lfd, POLLIN, INT64_MAX);
        if (p < 0) return p;
        continue;
      }
      return r;
    }
    if (!a->armed) {
      int rc = weft__io_cancel_point(); /* a cancellation point even when nothing waits */
      if (rc) return rc;
      rc = arm(a);
      if (rc) return rc;
    }
    if (wait_completion(a, true) == WEFT__WAKE_CANCEL) return -ECANCELED;
  }
}

void weft__acceptor_fini(weft__acceptor *a) {
  if (!a->w) return;
  if (a->armed) {
    struct io_uring_sqe *c = weft__reactor_sqe(&a->w->reactor, &sink_op);
    if (c) io_uring_prep_cancel64(c, (uint64_t)(uintptr_t)&a->op, 0);
    if (!c) {
      /* no entry (the kernel refused a flush): shutting the listener
       * down ends a pending accept (-EINVAL) without the ring; the
       * server closes the listener next anyway */
      shutdown(a->lfd, SHUT_RDWR);
    }
    while (a->armed) wait_completion(a, false);
  }
  for (size_t i = a->head; i < a->tail; i++)
    if (a->res[i] >= 0) close(a->res[i]);
  weft__free(a->res, a->cap * sizeof *a->res);
  a->res = NULL;
  a->head = a->tail = a->cap = 0;
  a->w = NULL;
  weft_unpin();
}
