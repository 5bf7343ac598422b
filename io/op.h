/* io/op.h: one I/O operation of a task, from submission to the reaped
 * completion, cancellation and deadline included (io/op.c). The file and
 * descriptor operations (io/file.c, io/fd.c) are built on these calls.
 *
 * THE BUFFER RULE. The memory an operation names (its buffer, iovecs,
 * paths, the op record itself, which lives on the task's stack) belongs to
 * the kernel until its completion has been reaped. So a task waiting in an
 * operation never returns before that, cancellation included.
 *
 * PINNING. While an operation is in flight its task is pinned to the worker
 * that owns the ring (core/task.h pin_count/pin_worker): a wake of the task
 * before the completion (a cancel from any thread) resumes it on that
 * worker, which alone may submit to its ring (SINGLE_ISSUER) and alone reaps
 * its completions. The completion ends the operation; for a file operation
 * (`movable`: positional reads and writes, and io/file.c's calls) its wake
 * also drops the pin (weft__wake_unpinning, when the task pinned nothing
 * itself), so that the task is queued like any woken task and a worker
 * that runs out of work may steal it. A file's data is copied by whichever
 * thread submits the read, and nothing ties it to a worker; pinned through
 * the completion, tasks reading back to back stayed on one worker for ever,
 * and the split of the work was frozen at the first reads: file_read at 2
 * workers ran at ~9 or ~13 GB/s from one run to the next, by how the 64
 * tasks happened to be split at the start (14-16 GB/s now). Operations on
 * sockets, pipes and other descriptors stay pinned until the task resumes:
 * a connection's next operations go to the ring that has its socket hot,
 * and unpinning those too cost the servers at 2 workers 3-5% more CPU and
 * ~0.1 more system calls per message here (bench/server_cpu.py --count,
 * echo 12.93 against 12.50 us, http 12.76 against 12.09 us). The servers
 * spread connections when they accept them instead (net/server.c). A cancelled task therefore runs on the owner, submits
 * IORING_OP_ASYNC_CANCEL naming the operation on its own ring and waits,
 * not cancellably, for the operation's completion (the cancel's own
 * completion goes to a static sink op: it may arrive after the task
 * returned). No cross-thread forwarding of the cancel is needed: the
 * scheduler delivers the cancelled task itself to the owner. (Rejected:
 * forwarding a cancel request to the owner through a message and letting
 * the task resume anywhere: one more queue per worker and a second
 * completion to wait for, for the same guarantee.)
 *
 * Results: the operation's result, or -ECANCELED when the cancel took
 * effect. When the operation completed before the cancel took effect, its
 * real result is returned (bytes moved are never lost) and the cancel
 * request stays pending for the task's next suspension, as weft_join does.
 *
 * Deadlines (CLOCK_MONOTONIC ns, WEFT__NO_DEADLINE for none): io_uring
 * links an IORING_OP_LINK_TIMEOUT (absolute) to the operation; a timed-out
 * operation completes with -ECANCELED, reported as -ETIMEDOUT. The epoll
 * backend's readiness waits use the worker's timer heap.
 *
 * CLOSE (weft_close, io_uring). An operation in flight holds its own
 * reference to the file, so closing the number ends nothing: a receive on
 * an idle socket would wait for ever, on any ring. So weft_close first
 * cancels every operation on the descriptor on every ring that may have
 * one (weft__uop_cancel_fd): IORING_OP_ASYNC_CANCEL with
 * IORING_ASYNC_CANCEL_FD|ALL, submitted by each ring's owner (SINGLE_ISSUER):
 * the closer's own ring by the closer, each other one by a task pinned to
 * its worker, which the closer joins. Only then the close: the kernel turns
 * the number into a file when the cancel runs, so a cancel after the close
 * would find nothing (or another file with that number). A ring is skipped
 * when its reactor's fd_ops count for the number reads 0: the owner counts
 * the operations that are not `movable` (sockets, pipes, polls, accept...)
 * from submission to completion, by descriptor number (the submission's
 * fd, the one ASYNC_CANCEL_FD matches) modulo WEFT__FD_OP_BUCKETS; a
 * file's operations end by themselves. Buckets, not one count per ring:
 * weft_run's SIGINT watch (process/signal.c) keeps a read in flight on one
 * worker for ever, and a server's idle connections keep theirs; a close of
 * another number need not visit those rings. The count is read relaxed: an
 * operation whose submission the closer cannot see yet is one that started
 * concurrently with the close, the caller's own race (as a call made just
 * after the close would be). The waiter's operation completes with
 * -ECANCELED that its task did not ask for (no cancel, its deadline not
 * passed): the call returns -EBADF. The cancel matches the file, not the
 * number: it also ends operations on another number of the same file (a
 * dup), which stays open. So the owner counts each cancel by the number
 * it is for (reactor.fd_cancels, weft__uop_note_fd_cancel), and a read,
 * write (retry_spurious) or poll (retry_dup) that a cancel for another
 * number ended waits again, as on epoll, where a close wakes only the
 * waiters on its number (a read or write also after a cancel nobody made:
 * io/op.c; a poll then returns -EBADF, which bounds the read's retries).
 * Not reached: a splice or tee that the kernel runs on its own worker
 * thread, blocked reading a blocking pipe, when its input end is closed
 * (the cancel matches an operation's output descriptor; closing that one
 * interrupts it: -EBADF too).
 */
#ifndef WEFT_IO_OP_H
#define WEFT_IO_OP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/task.h"
#include "io/reactor.h"

#define WEFT__NO_DEADLINE INT64_MAX

struct io_uring_sqe;
struct weft__worker;

typedef struct weft__uop {
  weft__io_op op;               /* complete(): the owner's reap */
  weft__task *task;             /* the waiting task */
  uint32_t seq;                 /* its current wait (owner thread only: task and reap run there) */
  int32_t res;                  /* the completion's result */
  bool done;                    /* the completion was reaped */
  bool cancel_sent;             /* an ASYNC_CANCEL was submitted by the task */
  bool movable;                 /* set by the caller after begin: the completion may unpin the task */
  bool pin_dropped;             /* the completion's wake unpinned the task (weft__wake_unpinning) */
  bool counted;                 /* in the owner's reactor.fd_ops until the completion (CLOSE), */
  int counted_fd;               /* as this descriptor (the submission's fd) */
  int64_t deadline;
  struct weft__worker *w;       /* the owner */
  int fd;                       /* the submission's fd (-1: none) */
  uint32_t fd_cancels;          /* the owner's reactor.fd_cancels for fd, fd_cancels_any and */
  uint32_t fd_cancels_any;      /* fd_cancels_all at submission (owner thread only, as seq) */
  uint32_t fd_cancels_all;
  bool closed;                  /* the completion, -ECANCELED, found a cancel for fd (or any) since */
  bool fd_cancelled;            /* ... found a cancel by descriptor (for any number) since */
  bool retry_spurious;          /* set by the caller after begin: -EAGAIN for a cancel not for fd */
  bool retry_dup;               /* set by the caller after begin: -EAGAIN for a cancel for another number */
  bool timed;                   /* the deadline is the task's timer, not a LINK_TIMEOUT (begin_timed) */
} weft__uop;

/* The calling task's backend, or -EINVAL outside a task. */
int weft__io_backend(void);

/* io_uring: begin an operation: pin the task, prepare its (cancellable)
 * wait and return a submission entry to prepare (user_data set), or NULL
 * with *err (-ECANCELED: a cancel was pending: nothing submitted; -EINVAL
 * outside a task; -EAGAIN the ring refused the flush). */
struct io_uring_sqe *weft__uop_begin(weft__uop *u, int64_t deadline, int *err);

/* As weft__uop_begin, for an operation that a LINK_TIMEOUT cannot end: one
 * forced onto io_uring's worker threads (IOSQE_ASYNC, io/fd.c WRITES THAT
 * BLOCK), where on kernel 6.18 a linked timeout never fired for a tty write
 * that blocked after moving bytes (no completion, not even the timeout's),
 * while an ASYNC_CANCEL ended it. The deadline is the task's own timer;
 * its expiry submits that cancel, and the call returns what the operation
 * moved, or -ETIMEDOUT when it moved nothing. */
struct io_uring_sqe *weft__uop_begin_timed(weft__uop *u, int64_t deadline, int *err);

/* Owner, before submitting a cancel by descriptor (IORING_ASYNC_CANCEL_FD)
 * on its ring, for descriptor number fd (< 0: for any number, the cancel
 * naming the file by a duplicate): the operations it ends on fd read
 * -ECANCELED as the close's -EBADF (see CLOSE above). */
void weft__uop_note_fd_cancel(int fd);

/* io_uring: poll fd for events until the deadline, on the calling task's
 * ring: the events (> 0), -ETIMEDOUT, -ECANCELED, -EBADF (weft_close), or
 * the kernel's error. A cancel for another number of the same file (a
 * close of a dup) waits again. Suspends. */
int weft__uop_poll(int fd, unsigned events, int64_t deadline);

/* io_uring: after preparing the entry: suspend until the completion was
 * reaped (see above for cancellation and deadlines); unpin; the result. */
int weft__uop_wait(weft__uop *u, struct io_uring_sqe *sqe);

/* io_uring: cancel every operation on fd on every ring that may have one
 * in flight, and wait until the cancels have run (see CLOSE above); then
 * the caller closes fd. Suspends; not cancellable when the caller shields
 * itself (weft_close does). */
void weft__uop_cancel_fd(int fd);

/* epoll: wait until fd is ready for `events` (EPOLLIN/EPOLLOUT/...) or the
 * deadline, with a one-shot registration added and removed around the
 * wait: the fallback of io/readiness.h's per-descriptor registrations (a
 * descriptor another owner registered in this epoll, one past the table).
 * Returns the ready events (> 0), -ETIMEDOUT, -ECANCELED, or
 * -EPERM when epoll cannot watch fd (a regular file: always ready). */
int weft__epoll_wait_fd(int fd, uint32_t events, int64_t deadline);

/* A call that may complete without suspending (epoll's non-blocking
 * attempt) is a cancellation point all the same: -ECANCELED (delivered)
 * when a request is pending, else 0. */
int weft__io_cancel_point(void);

/* A call that consumed a cancel request (a nested wait returned
 * -ECANCELED) but returns a real result: keep the request pending for
 * the task's next suspension. */
void weft__io_keep_cancel(void);

/* A deadline from a relative timeout (ns; < 0: none). */
int64_t weft__deadline_after(int64_t timeout_ns);

#endif
