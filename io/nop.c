/* io/nop.c: a no-op through the calling worker's ring: the round trip
 * (submit, suspend, complete, resume) that every I/O operation pays, for
 * the microbenchmarks and the tests of the completion path.
 *
 * The task waits non-cancellably: the buffer rule (an operation's memory
 * belongs to the kernel until its completion is reaped) applies even to a
 * NOP; cancellable I/O comes with the file and descriptor operations. */
#include <errno.h>
#include <liburing.h>

#include <weft/core.h>

#include "core/task.h"
#include "core/worker.h"
#include "io/reactor.h"

typedef struct nop_op {
  weft__io_op op;
  weft__task *task;
  uint32_t seq;
  int32_t res;
} nop_op;

static void nop_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  nop_op *n = (nop_op *)op;
  n->res = res;
  weft__wake(n->task, n->seq, WEFT__WAKE_NORMAL); /* release CAS publishes res */
}

int weft__io_nop(void) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current) return -EINVAL;
  if (w->reactor.backend != WEFT_BACKEND_URING) return -EOPNOTSUPP;
  nop_op n = {.op.complete = nop_complete, .task = w->current, .res = 0};
  int64_t seq = weft__wait_prepare(false);
  n.seq = (uint32_t)seq;
  weft__waiting_on(w->current, WEFT__WAITING_IO);
  struct io_uring_sqe *sqe = weft__reactor_sqe(&w->reactor, &n.op);
  if (!sqe) {
    weft__wait_abandon();
    return -EAGAIN;
  }
  io_uring_prep_nop(sqe);
  weft__wait_commit(n.seq);
  return n.res;
}
