/* io/uring.c: the io_uring backend of the reactor.
 *
 * One ring per worker, created on the worker's thread. Setup flags, best
 * first, each retried without when the kernel refuses it (EINVAL):
 *   SINGLE_ISSUER|COOP_TASKRUN|TASKRUN_FLAG (6.0): no IPI to run task work;
 *     the kernel raises IORING_SQ_TASKRUN in the SQ flags when completions
 *     wait for the owner to enter, and poll enters then;
 *   COOP_TASKRUN|TASKRUN_FLAG (5.19);
 *   none.
 * NOT DEFER_TASKRUN (6.1), although it saves the task-work interrupts: with
 * it the kernel runs at most ~20 deferred completions per io_uring_enter
 * that does not wait (IO_LOCAL_TW_DEFAULT_MAX), while a recv that finds its
 * data at submission completes at once. Under load the completions that
 * had to wait for data fall behind the ones that did not, and a few
 * connections starve: http_plaintext with 400 connections on one worker
 * (16-core machine, wrk -t4) had p50 3.0 ms but p99 476 ms and 115k req/s;
 * with COOP_TASKRUN p99 16 ms at 164k req/s, and at two workers p99 250 ms
 * -> 1.8 ms (docs/io-choices.md).
 * SUBMIT_ALL keeps submitting past a failed entry.
 *
 * The wake eventfd has a read always armed (wake_op); its completion ends
 * a park. poll enters the kernel only when something is queued or in
 * flight: with busy workers and no I/O there is no system call at all.
 * A full submission queue is flushed (io_uring_submit) and retried.
 */
#include <errno.h>
#include <liburing.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "io/reactor.h"

typedef struct uring_state {
  struct io_uring ring;
  weft__io_op wake_op;     /* the armed read of wake_fd */
  uint64_t wake_buf;
  bool wake_armed;
} uring_state;

static void wake_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)op; (void)res; (void)flags;
  /* re-armed by the reap loop's owner (arm_wake) */
}

static void arm_wake(weft__reactor *r) {
  uring_state *u = r->impl;
  if (u->wake_armed) return;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (!sqe) {
    io_uring_submit(&u->ring);
    sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return; /* next park will retry */
  }
  io_uring_prep_read(sqe, r->wake_fd, &u->wake_buf, sizeof u->wake_buf, 0);
  io_uring_sqe_set_data(sqe, &u->wake_op);
  u->wake_armed = true;
}

/* Whether sends may be left in flight on this ring (net/ring_send.c): a
 * kernel that knows IORING_OP_SEND_ZC (6.0) is well past 5.18, where a
 * send with MSG_WAITALL on a stream socket became a retry until all is
 * sent (waiting for room, also on an O_NONBLOCK socket) instead of a short
 * count or -EAGAIN. One probe per ring, at its creation. */
static bool probe_ring_sends(struct io_uring *ring) {
  struct io_uring_probe *p = io_uring_get_probe_ring(ring);
  bool ok = p && io_uring_opcode_supported(p, IORING_OP_SEND_ZC);
  if (p) io_uring_free_probe(p);
  return ok;
}

/* The kernel's largest completion queue (IORING_MAX_CQ_ENTRIES: twice
 * its largest submission queue, 32768); a larger cq_entries is -EINVAL
 * without IORING_SETUP_CLAMP (5.6), which the oldest kernels lack. */
#define MAX_CQ_ENTRIES 65536u

int weft__uring_init(weft__reactor *r, unsigned entries) {
  /* An operation and its LINK_TIMEOUT are submitted together
   * (weft__reactor_sq_room(r, 2)): a queue of one entry would flush for
   * ever waiting for room for two. */
  if (entries < 2) entries = 2;
  uring_state *u = weft__zalloc(sizeof *u);
  if (!u) return -ENOMEM;
  static const unsigned flag_sets[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
          IORING_SETUP_SUBMIT_ALL,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
      0,
  };
  int rc = -EINVAL;
  for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
    p.cq_entries = entries <= MAX_CQ_ENTRIES / 4 ? entries * 4 : MAX_CQ_ENTRIES;
    rc = io_uring_queue_init_params(entries, &u->ring, &p);
    if (rc == 0) break;
    if (rc != -EINVAL) break;
  }
  if (rc) {
    weft__free(u, sizeof *u);
    return rc;
  }
  u->wake_op.complete = wake_complete;
  r->impl = u;
  r->ring_sends = probe_ring_sends(&u->ring);
  arm_wake(r);
  io_uring_submit(&u->ring);
  return 0;
}

void weft__uring_fini(weft__reactor *r) {
  uring_state *u = r->impl;
  io_uring_queue_exit(&u->ring);
  weft__free(u, sizeof *u);
  r->impl = NULL;
}

/* Reap every completion now in the queue. Completions the kernel could
 * not post because the queue was full wait in its overflow list (the
 * ring has IORING_FEAT_NODROP: nothing is dropped) and are flushed into
 * the queue by the next io_uring_enter with GETEVENTS, which liburing's
 * submit calls add while IORING_SQ_CQ_OVERFLOW is set; the operations
 * stay counted in `inflight` until then, so poll keeps entering.
 * The head is advanced once, after the loop: so a completion's callback
 * must not take a submission entry (weft__reactor_sqe may reap when the
 * queue is full, and a nested reap would deliver these entries again).
 * None does: they record a result and wake a task, which submits. */
static unsigned reap(weft__reactor *r) {
  uring_state *u = r->impl;
  if (IO_URING_READ_ONCE(*u->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
    weft__store(&r->cq_overflows, weft__load(&r->cq_overflows, RELAXED) + 1, RELAXED); /* relaxed: a statistic */
  struct io_uring_cqe *cqe;
  unsigned head, n = 0;
  io_uring_for_each_cqe(&u->ring, head, cqe) {
    weft__io_op *op = io_uring_cqe_get_data(cqe);
    n++;
    if (op == &u->wake_op) {
      /* The unpark was consumed: allow the next one to write again. */
      u->wake_armed = false;
      weft__reactor_rearm(r);
      continue;
    }
    if (!op) continue;
    if (!(cqe->flags & IORING_CQE_F_MORE)) r->inflight--;
    op->complete(op, cqe->res, cqe->flags);
  }
  io_uring_cq_advance(&u->ring, n);
  if (!u->wake_armed) arm_wake(r);
  return n;
}

void weft__uring_poll(weft__reactor *r) {
  uring_state *u = r->impl;
  if (io_uring_sq_ready(&u->ring) == 0 && r->inflight == 0) return;
  /* TASKRUN: completions wait for task work that only an enter runs;
   * CQ_OVERFLOW: completions wait in the kernel's overflow list */
  if (io_uring_sq_ready(&u->ring) ||
      (IO_URING_READ_ONCE(*u->ring.sq.kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
    io_uring_submit_and_get_events(&u->ring);
  reap(r);
}

void weft__uring_park(weft__reactor *r, int64_t deadline) {
  uring_state *u = r->impl;
  if (!u->wake_armed) arm_wake(r);
  struct io_uring_cqe *cqe;
  if (io_uring_cq_ready(&u->ring) == 0) {
    if (deadline == INT64_MAX) {
      io_uring_submit_and_wait(&u->ring, 1);
    } else {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t left = deadline - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
      if (left > 0) {
        struct __kernel_timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
        io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
      } else {
        io_uring_submit_and_get_events(&u->ring);
      }
    }
  } else if (io_uring_sq_ready(&u->ring)) {
    io_uring_submit(&u->ring);
  }
  reap(r);
}

struct io_uring_sqe *weft__reactor_sqe(weft__reactor *r, weft__io_op *op) {
  uring_state *u = r->impl;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  while (!sqe) {
    /* a full submission queue is flushed and retried, never a failure */
    int rc = io_uring_submit(&u->ring);
    if (rc < 0 && rc != -EBUSY && rc != -EAGAIN && rc != -EINTR) return NULL;
    if (rc == -EBUSY || rc == -EAGAIN) reap(r); /* make room in the completion queue */
    sqe = io_uring_get_sqe(&u->ring);
  }
  io_uring_sqe_set_data(sqe, op);
  r->inflight++;
  return sqe;
}

int weft__reactor_sq_room(weft__reactor *r, unsigned n) {
  uring_state *u = r->impl;
  while (io_uring_sq_space_left(&u->ring) < n) {
    int rc = io_uring_submit(&u->ring);
    if (rc < 0 && rc != -EBUSY && rc != -EAGAIN && rc != -EINTR) return rc;
    if (rc == -EBUSY || rc == -EAGAIN) reap(r); /* make room in the completion queue */
  }
  return 0;
}
