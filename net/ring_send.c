/* net/ring_send.c: one send left in flight on a worker's ring while its
 * task goes on.
 *
 * WHY. A stream's write on io_uring used to be a send(2) system call (a
 * non-blocking attempt, then buffering). Submitted to the ring instead and
 * not waited for, the send goes to the kernel with the next
 * io_uring_enter of that worker, together with the receives and sends of
 * every other task that ran meanwhile: an echo or HTTP server then makes
 * no system call per message at all. Measured in docs/io-choices.md.
 *
 * THE KERNEL'S SIDE. IORING_OP_SEND with MSG_WAITALL on a stream socket
 * keeps sending until every byte is sent, waiting for room in the socket
 * (it poll-arms, also on our O_NONBLOCK sockets), so that a completion
 * reports everything sent or an error, or -ECANCELED (ASYNC_CANCEL) with
 * what it had not sent yet. weft__reactor_ring_sends admits only rings
 * with DEFER_TASKRUN (kernel 6.1), well past the kernels (5.18) where
 * MSG_WAITALL became a retry on stream sockets.
 *
 * THREADS. The submitting task does not pin itself: the completion is
 * reaped on the ring's owner (`w`) while the task that waits for it, if
 * any, may run on any worker (the writer may have moved, or be another
 * task: a stream has one writer at a time, not one writer for ever). So
 * the completion and the waiter meet in `state`:
 *   low two bits IDLE (in flight, nobody waits), WAITING (wtask/wseq name
 *   a wait), DONE (res is final); the bits above count the waiter's
 *   registrations, so that a completion that read wtask/wseq of an older
 *   registration fails its CAS (no ABA).
 *   waiter:     prepare a wait; store wtask, wseq (relaxed); CAS
 *               IDLE(g) -> WAITING(g+1) (release: publishes them) or, on
 *               DONE, abandon the wait; commit; woken by a cancel or a
 *               deadline: CAS WAITING(g+1) -> IDLE(g+1) (fails if DONE
 *               came: then the completion owns the wake, which is stale).
 *   completion: store res; load state (acquire: pairs with the waiter's
 *               release CAS); WAITING: read wtask/wseq, CAS -> DONE
 *               (acq_rel), then wake them; IDLE: CAS -> DONE (release:
 *               publishes res). Retried when the CAS fails.
 * The CAS to DONE is the completion's last touch of the record (the wake
 * after it uses local copies; a task record is never freed, and a stale
 * wake is ignored), so a waiter that sees DONE may free it at once.
 *
 * CANCELLING. ASYNC_CANCEL must be submitted on the owner's ring (single
 * issuer). A waiter on the owner submits it; one on another worker spawns
 * a small task pinned to the owner (weft__spawn_pinned) that submits it
 * and ends. Either way the waiter then waits, not cancellably, for DONE
 * (io/op.h's buffer rule). The cancel names the record's address only as
 * a number: when it arrives after the completion it finds nothing (or, at
 * worst, a later send from the same record, which then completes with
 * -ECANCELED and what it did not send stays buffered: nothing is lost).
 */
#include <errno.h>
#include <liburing.h>
#include <sys/socket.h>

#include <weft/core.h>

#include "core/task.h"
#include "core/worker.h"
#include "io/op.h"
#include "net/ring_send.h"

enum { IDLE = 0, WAITING = 1, DONE = 2, STATE_MASK = 3, GEN_ONE = 4 };

static void sink_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)op; (void)res; (void)flags;
}
static weft__io_op sink_op = {sink_complete};

/* The owner's reap. */
static void ring_send_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  weft__ring_send *rs = (weft__ring_send *)op;
  rs->res = res;
  /* acquire: pairs with the waiter's release CAS (wtask/wseq are its) */
  uint32_t st = weft__load(&rs->state, ACQUIRE);
  for (;;) {
    uint32_t done = (st & ~(uint32_t)STATE_MASK) | DONE;
    if ((st & STATE_MASK) == WAITING) {
      weft__task *t = weft__load(&rs->wtask, RELAXED); /* relaxed: published by the CAS we read */
      uint32_t seq = weft__load(&rs->wseq, RELAXED);
      /* acq_rel: publishes res to the waiter; fails if it re-registered */
      if (weft__cas(&rs->state, &st, done, ACQ_REL, ACQUIRE)) {
        weft__wake(t, seq, WEFT__WAKE_NORMAL);
        return;
      }
    } else if (weft__cas(&rs->state, &st, done, RELEASE, ACQUIRE)) { /* release: publishes res */
      return;
    }
  }
}

bool weft__ring_send_start(weft__ring_send *rs, int fd, char *buf, size_t cap, size_t off, size_t len) {
  weft__worker *w = weft__worker_self();
  if (!w || !w->current || !weft__reactor_ring_sends(&w->reactor)) return false;
  rs->op.complete = ring_send_complete;
  rs->w = w;
  rs->buf = buf;
  rs->cap = cap;
  rs->off = off;
  rs->len = len;
  rs->res = 0;
  weft__store(&rs->state, IDLE, RELAXED); /* relaxed: nothing else sees the record before the submission */
  weft__store(&rs->wtask, NULL, RELAXED);
  weft__store(&rs->wseq, 0, RELAXED);
  struct io_uring_sqe *sqe = weft__reactor_sqe(&w->reactor, &rs->op);
  if (!sqe) return false;
  io_uring_prep_send(sqe, fd, buf + off, len, MSG_NOSIGNAL | MSG_WAITALL);
  return true;
}

bool weft__ring_send_done(weft__ring_send *rs, int32_t *res) {
  /* acquire: pairs with the completion's CAS to DONE (res) */
  if ((weft__load(&rs->state, ACQUIRE) & STATE_MASK) != DONE) return false;
  *res = rs->res;
  return true;
}

/* One wait for DONE; returns why it ended (NORMAL: done). */
static uint32_t wait_once(weft__ring_send *rs, bool cancellable, int64_t deadline) {
  int64_t seq = deadline == WEFT__NO_DEADLINE ? weft__wait_prepare(cancellable)
                                              : weft__wait_prepare_deadline(cancellable, deadline);
  if (seq < 0) return WEFT__WAKE_CANCEL; /* a pending request, delivered */
  weft__task *self = weft__task_self();
  weft__waiting_on(self, WEFT__WAITING_IO);
  weft__store(&rs->wtask, self, RELAXED); /* relaxed: published by the CAS below */
  weft__store(&rs->wseq, (uint32_t)seq, RELAXED);
  uint32_t st = weft__load(&rs->state, ACQUIRE); /* acquire: DONE publishes res */
  uint32_t mine;
  for (;;) {
    if ((st & STATE_MASK) == DONE) {
      weft__wait_abandon();
      return WEFT__WAKE_NORMAL;
    }
    mine = ((st & ~(uint32_t)STATE_MASK) + GEN_ONE) | WAITING;
    /* release: publishes wtask/wseq to the completion */
    if (weft__cas(&rs->state, &st, mine, RELEASE, ACQUIRE)) break;
  }
  uint32_t why = weft__wait_commit((uint32_t)seq);
  if (why != WEFT__WAKE_NORMAL) {
    /* unregister, unless the completion took the wake (then DONE) */
    uint32_t idle = (mine & ~(uint32_t)STATE_MASK) | IDLE;
    weft__cas(&rs->state, &mine, idle, ACQ_REL, ACQUIRE); /* acq_rel: as the registration; acquire: DONE's res */
  }
  return why;
}

/* On the owner: submit an ASYNC_CANCEL naming `arg` (a record's address). */
static void submit_cancel(weft__worker *w, void *arg) {
  struct io_uring_sqe *c = weft__reactor_sqe(&w->reactor, &sink_op);
  if (c) io_uring_prep_cancel64(c, (uint64_t)(uintptr_t)arg, 0);
  /* no entry (the kernel refused a flush): the send ends on its own */
}

static int cancel_task(void *arg) {
  submit_cancel(weft__worker_self(), arg); /* pinned to the owner: its ring */
  return 0;
}

static void cancel(weft__ring_send *rs) {
  weft__worker *self = weft__worker_self();
  if (self == rs->w) {
    submit_cancel(self, &rs->op);
    return;
  }
  weft_spawn_opts o = {.name = "weft-send-cancel", .detached = true};
  weft__spawn_pinned((unsigned)rs->w->id, cancel_task, &rs->op, &o);
  /* not spawned (out of memory): the send ends on its own */
}

uint32_t weft__ring_send_wait(weft__ring_send *rs, int64_t deadline, bool cancel_now) {
  int32_t res;
  uint32_t why = WEFT__WAKE_NORMAL;
  /* A waiter on the ring's owner stays there while it waits, as a task in
   * a ring operation does (io/op.c): the completion then queues it on the
   * owner's own list. Unpinned, it went to the owner's deque, where it was
   * work for a parked worker to be woken for and steal: an echo server's
   * drain after each write, at 2 workers on 2 CPUs, made 0.3 context
   * switches per message and cost 25% more CPU per message. */
  bool pin = weft__worker_self() == rs->w;
  if (pin) weft_pin();
  if (!cancel_now) why = wait_once(rs, true, deadline);
  if (!weft__ring_send_done(rs, &res)) {
    cancel(rs);
    while (!weft__ring_send_done(rs, &res)) wait_once(rs, false, WEFT__NO_DEADLINE);
  }
  if (pin) weft_unpin();
  return why;
}
