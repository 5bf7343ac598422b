/* net/ring_send.h: one send left in flight on a worker's ring while its
 * task goes on (net/stream.c's writes on io_uring); the protocol and its
 * invariants are in net/ring_send.c. */
#ifndef WEFT_NET_RING_SEND_H
#define WEFT_NET_RING_SEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/atomic.h"
#include "core/task.h"
#include "io/reactor.h"

struct weft__worker;

typedef struct weft__ring_send {
  weft__io_op op;               /* first: the completion's user_data */
  struct weft__worker *w;       /* the ring it went to: immutable while in flight */
  char *buf;                    /* the bytes' buffer (the caller's; the kernel's while in flight) */
  size_t cap;                   /* its size (the caller's bookkeeping) */
  size_t off, len;              /* the bytes submitted: buf[off, off + len) */
  int32_t res;                  /* the completion's result: written before DONE is published */
  _Atomic uint32_t state;       /* generation << 2 | IDLE, WAITING or DONE (ring_send.c) */
  _Atomic(weft__task *) wtask;  /* the waiter (WAITING): relaxed, published by the state CAS */
  _Atomic uint32_t wseq;
} weft__ring_send;

/* From a task on io_uring: submit buf[off, off + len) as one send
 * (MSG_WAITALL|MSG_NOSIGNAL) on the calling task's ring, and return at
 * once: the buffer is the kernel's until the completion was seen (done, or
 * wait). false when nothing was submitted (not on io_uring with
 * DEFER_TASKRUN, or the ring refused the flush). */
bool weft__ring_send_start(weft__ring_send *rs, int fd, char *buf, size_t cap, size_t off, size_t len);

/* Any thread, never waits: whether the completion came; *res then holds
 * its result (bytes sent, or a negative errno). */
bool weft__ring_send_done(weft__ring_send *rs, int32_t *res);

/* From a task, on any worker: wait until the completion came. cancel_now:
 * cancel the send first. A cancel request or the deadline (WEFT__NO_DEADLINE:
 * none) cancels it; either way the call returns only after its completion
 * (the buffer is the caller's again). Returns the wake that ended the
 * first wait: WEFT__WAKE_NORMAL, _CANCEL (the request is delivered) or
 * _TIMER. Suspends. */
uint32_t weft__ring_send_wait(weft__ring_send *rs, int64_t deadline, bool cancel_now);

#endif
