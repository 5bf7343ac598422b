/* net/acceptor.h: multishot accept on io_uring for one task (the protocol
 * and its invariants are in net/acceptor.c). Used by net/server.c's accept
 * loop; io_uring backend only. */
#ifndef WEFT_NET_ACCEPTOR_H
#define WEFT_NET_ACCEPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/task.h"
#include "io/reactor.h"

struct weft__worker;

typedef struct weft__acceptor {
  weft__io_op op;            /* first: the completion's user_data */
  int lfd;                   /* the listener (the caller's: not closed here) */
  bool armed;                /* the multishot accept is in the kernel: a last completion is to come */
  bool waiting;              /* the task waits for the callback's wake (seq) */
  uint32_t seq;
  int *res;                  /* results in arrival order: res[head, tail), cap entries */
  size_t head, tail, cap;
  uint64_t accepted;         /* fds returned by next */
  uint64_t arms;             /* submissions of the multishot accept (tests, statistics) */
  weft__task *task;          /* the one task using it (pinned to w) */
  struct weft__worker *w;    /* the ring's owner; NULL before init and after fini */
} weft__acceptor;

/* From the task that will call next/fini, on the io_uring backend: pin the
 * task to its worker and prepare (nothing is submitted yet). 0, or -EINVAL
 * outside a task or on the epoll backend. */
int weft__acceptor_init(weft__acceptor *a, int lfd);

/* Suspends (cancellable): the next accepted fd (SOCK_CLOEXEC|SOCK_NONBLOCK),
 * arming or re-arming the multishot accept as needed. Errors: the accept's
 * own (-EMFILE, -ENFILE, -ENOBUFS, -ENOMEM: back off and call again; the
 * next call re-arms), -ECANCELED (a cancel request, delivered; the accept
 * stays armed until fini), -EOPNOTSUPP (this kernel has no multishot
 * accept: nothing was accepted; accept single-shot instead). */
int weft__acceptor_next(weft__acceptor *a);

/* Cancel the multishot accept if armed and wait (not cancellably) for its
 * last completion, close the fds accepted and not yet returned, unpin.
 * Must be called before the task ends or the acceptor's memory goes. */
void weft__acceptor_fini(weft__acceptor *a);

#endif
