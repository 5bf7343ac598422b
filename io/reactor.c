/* io/reactor.c: choosing the backend, and the calls common to both.
 *
 * The choice: WEFT_BACKEND=uring|epoll in the environment wins over the
 * configuration's WEFT_BACKEND_AUTO; AUTO probes io_uring once per process
 * (a tiny ring set up and torn down) and falls back to epoll when the
 * kernel refuses it (EPERM from seccomp or kernel.io_uring_disabled=2,
 * ENOSYS, EINVAL/ENOMEM on old or restricted kernels). Asking for io_uring
 * explicitly where it is refused is an error, not a silent fallback.
 */
#include "io/reactor.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <weft/core.h>

int weft__uring_init(weft__reactor *r, unsigned entries);
void weft__uring_fini(weft__reactor *r);
void weft__uring_poll(weft__reactor *r);
void weft__uring_park(weft__reactor *r, int64_t deadline);
int weft__epoll_init(weft__reactor *r);
void weft__epoll_fini(weft__reactor *r);
void weft__epoll_poll(weft__reactor *r);
void weft__epoll_park(weft__reactor *r, int64_t deadline);

static _Atomic int probed;      /* 0 unknown, 1 works, -errno refused (relaxed: idempotent probe) */

static int probe_uring(void) {
  int p = weft__load(&probed, RELAXED);
  if (p) return p > 0 ? 0 : p;
  struct io_uring ring;
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc == 0) io_uring_queue_exit(&ring);
  weft__store(&probed, rc == 0 ? 1 : rc, RELAXED);
  return rc;
}

int weft__backend_resolve(int requested, int *probe_error) {
  *probe_error = 0;
  const char *env = getenv("WEFT_BACKEND");
  if (env && *env) {
    if (strcmp(env, "epoll") == 0)
      requested = WEFT_BACKEND_EPOLL;
    else if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0)
      requested = WEFT_BACKEND_URING;
  }
  if (requested == WEFT_BACKEND_EPOLL) return WEFT_BACKEND_EPOLL;
  int rc = probe_uring();
  if (rc == 0) return WEFT_BACKEND_URING;
  if (requested == WEFT_BACKEND_URING) return rc;
  *probe_error = rc;
  return WEFT_BACKEND_EPOLL;
}

int weft__reactor_init(weft__reactor *r, int backend, unsigned entries) {
  memset(r, 0, sizeof *r);
  r->backend = backend;
  r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r->wake_fd < 0) return -errno;
  int rc = backend == WEFT_BACKEND_URING ? weft__uring_init(r, entries) : weft__epoll_init(r);
  if (rc) {
    close(r->wake_fd);
    r->wake_fd = -1;
  }
  return rc;
}

void weft__reactor_fini(weft__reactor *r) {
  if (r->wake_fd < 0) return;
  if (r->backend == WEFT_BACKEND_URING)
    weft__uring_fini(r);
  else
    weft__epoll_fini(r);
  close(r->wake_fd);
  r->wake_fd = -1;
}

void weft__reactor_poll(weft__reactor *r) {
  if (r->backend == WEFT_BACKEND_URING)
    weft__uring_poll(r);
  else
    weft__epoll_poll(r);
}

void weft__reactor_park(weft__reactor *r, int64_t deadline) {
  if (r->backend == WEFT_BACKEND_URING)
    weft__uring_park(r, deadline);
  else
    weft__epoll_park(r, deadline);
}

void weft__reactor_unpark(weft__reactor *r) {
  /* acq_rel: the exchange orders the unparker's work (made visible before
   * this call) before the owner's clear of the flag; see reactor.h */
  if (weft__xchg(&r->unpark_armed, 1, ACQ_REL)) return;
  uint64_t one = 1;
  ssize_t n;
  do {
    n = write(r->wake_fd, &one, sizeof one);
  } while (n < 0 && errno == EINTR);
  /* EAGAIN: the counter is saturated, so a wakeup is pending anyway */
}
