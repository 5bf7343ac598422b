/* io/reactor.h: a worker's reactor, the one place its thread blocks.
 *
 * Each worker owns one reactor (owner = that worker's thread, for every call
 * but weft__reactor_unpark). Two backends, one interface:
 *  - io_uring (io/uring.c): one ring per worker, created on the worker's own
 *    thread with SINGLE_ISSUER|DEFER_TASKRUN where the kernel has them
 *    (else COOP_TASKRUN, else plain). Submissions are batched: the scheduler
 *    enters the kernel at most once per pass (weft__reactor_poll), and not at
 *    all while nothing is queued or in flight.
 *  - epoll (io/epoll.c): chosen when io_uring cannot be set up (seccomp EPERM,
 *    ENOSYS, kernel.io_uring_disabled) or forced with WEFT_BACKEND=epoll.
 *
 * Parking: weft__reactor_park blocks until a completion, an unpark or the
 * deadline (the worker's next timer). Unparking writes the reactor's eventfd;
 * `unpark_armed` coalesces unparks so that a burst costs one write:
 *   unparker: make the work visible; if exchange(armed, 1) was 0: write(fd)
 *   owner:    whenever it consumes the eventfd (in park, or in a poll that
 *             reaps the wake read), store armed = 0 and a full fence
 *             (weft__reactor_rearm), then look for work. armed == 1 thus always means "a write is on its
 *             way to the owner": clearing it only in park would leave it
 *             set after a poll had eaten the write, and the next unpark
 *             would be skipped while the owner sleeps.
 * An unpark that sees armed == 1 knows the owner has not yet cleared it, so
 * the owner's search that follows the clear sees the unparker's work.
 *
 * Completions: every operation submitted carries a weft__io_op whose
 * complete() runs on the owner thread when its completion is reaped. It
 * records the result and wakes a task; it must not take a submission entry
 * (the io_uring reap advances the queue's head after its loop, and a full
 * submission queue's flush may reap again from inside it).
 */
#ifndef WEFT_IO_REACTOR_H
#define WEFT_IO_REACTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/atomic.h"

struct io_uring_sqe;

#define WEFT__FD_OP_BUCKETS 256 /* reactor.fd_ops: a power of two */

typedef struct weft__io_op {
  void (*complete)(struct weft__io_op *op, int32_t res, uint32_t flags);
} weft__io_op;

typedef struct weft__reactor {
  int backend;                 /* WEFT_BACKEND_URING or WEFT_BACKEND_EPOLL */
  int wake_fd;                 /* eventfd, written by unparkers */
  _Alignas(WEFT_CACHELINE) _Atomic int unpark_armed; /* see above */
  unsigned inflight;           /* owner: operations submitted, not yet completed (wake read excluded) */
  _Atomic unsigned long cq_overflows; /* owner stores (relaxed): reaps that found the kernel holding
                                         overflowed completions (IORING_FEAT_NODROP); read by tests */
  void *impl;                  /* the backend's state (struct io_uring, epoll fd, ...) */
  bool ring_sends;             /* io_uring: sends may stay in flight (weft__reactor_ring_sends) */
  /* owner stores (relaxed): io/op.c's operations in flight on a descriptor that is not a file's (not
     `movable`), counted by descriptor number modulo WEFT__FD_OP_BUCKETS; read by weft_close (io/op.h, CLOSE) */
  _Atomic uint32_t fd_ops[WEFT__FD_OP_BUCKETS];
  /* owner only: cancels by descriptor submitted on this ring (weft__uop_note_fd_cancel: weft_close's,
     a stream closer's), counted by the number they are for modulo WEFT__FD_OP_BUCKETS, those for any
     number, and all; read by the completion of an operation that ended -ECANCELED (io/op.c) */
  uint32_t fd_cancels[WEFT__FD_OP_BUCKETS];
  uint32_t fd_cancels_any;
  uint32_t fd_cancels_all;
} weft__reactor;

/* Resolve WEFT_BACKEND_AUTO (and the WEFT_BACKEND variable) to a backend
 * that works here, probing io_uring once per process. Any thread. */
int weft__backend_resolve(int requested, int *probe_error);

/* OWNER (call on the worker's own thread: the ring's single issuer). */
int weft__reactor_init(weft__reactor *r, int backend, unsigned entries);
void weft__reactor_fini(weft__reactor *r);

/* OWNER: submit what is queued and reap completions, without blocking;
 * makes no system call when nothing is queued or in flight. */
void weft__reactor_poll(weft__reactor *r);

/* OWNER: submit, then block until a completion, an unpark or the deadline
 * (CLOCK_MONOTONIC ns; INT64_MAX = none), and reap completions. */
void weft__reactor_park(weft__reactor *r, int64_t deadline);

/* Any thread: make the owner's park return (now or at its next park). */
void weft__reactor_unpark(weft__reactor *r);

/* OWNER, after consuming an unpark's write: allow the next one. The store
 * and the full fence are the owner's half of a StoreLoad pair with the
 * unparker's publish-then-exchange: the search that follows must see the
 * work of any unparker whose exchange found the flag still set. A seq_cst
 * store alone would not order the later relaxed loads on aarch64. */
static inline void weft__reactor_rearm(weft__reactor *r) {
  weft__store(&r->unpark_armed, 0, RELAXED);
  weft__fence(SEQ_CST);
}

/* OWNER, io_uring only: a submission entry for op (user_data set, inflight
 * counted). When the submission queue is full it is flushed first, so this
 * only fails (NULL) if the kernel refuses the flush. */
struct io_uring_sqe *weft__reactor_sqe(weft__reactor *r, weft__io_op *op);

/* OWNER: whether sends may be left in flight on this ring (net/ring_send.c):
 * io_uring on a kernel (6.0, probed once per ring) where a send with
 * MSG_WAITALL on a stream socket keeps sending until all is sent, waiting
 * for room in the socket, rather than stopping short with -EAGAIN. */
static inline bool weft__reactor_ring_sends(const weft__reactor *r) { return r->ring_sends; }

/* OWNER, epoll only (io/epoll.c): a one-shot watch of fd; op->complete
 * gets the ready events. Returns 0 or -errno (EEXIST: already watched
 * here; EPERM: not pollable). unwatch after the event or to give up. */
int weft__epoll_watch(weft__reactor *r, int fd, uint32_t events, weft__io_op *op);
void weft__epoll_unwatch(weft__reactor *r, int fd);

/* OWNER, epoll only: as watch, but edge-triggered and until unwatch
 * (op->complete runs at every edge). */
int weft__epoll_watch_edge(weft__reactor *r, int fd, uint32_t events, weft__io_op *op);

/* epoll only, ANY THREAD: io/readiness.c's registrations (edge-triggered,
 * for the descriptor's life, naming its slot); see io/epoll.c. */
struct weft__fdslot;
int weft__epoll_reg_add(weft__reactor *r, int fd, struct weft__fdslot *slot);
int weft__epoll_reg_mod(weft__reactor *r, int fd, struct weft__fdslot *slot);
void weft__epoll_reg_del(weft__reactor *r, int fd);

/* OWNER, io_uring only: make room for n submission entries (flushing the
 * queue if needed), so that a linked pair is not split across two
 * submissions. Returns 0 or the flush's error. */
int weft__reactor_sq_room(weft__reactor *r, unsigned n);

#endif
