/* io/epoll.c: the epoll backend of the reactor, for where io_uring is
 * refused. Parks in epoll_pwait2 (nanosecond timeout; epoll_wait's
 * milliseconds are too coarse for timers) with the wake eventfd
 * registered. Three kinds of registration share the epoll, told apart by
 * data.ptr: NULL the wake eventfd; a pointer with bit 0 set a descriptor's
 * slot (io/readiness.c: edge-triggered, kept while the descriptor lives);
 * any other pointer an op (the one-shot watch of io/op.c's fallback, and
 * net/transport.c's edge-triggered driver). */
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "io/reactor.h"
#include "io/readiness.h"

typedef struct epoll_state {
  int epfd;
  unsigned registered; /* owner: the ops' registrations (one-shot and the transports') */
  _Atomic unsigned slots; /* io/readiness.c's registrations added here and not deleted: an upper
                             bound (the kernel drops those of closed files silently) */
} epoll_state;

int weft__epoll_init(weft__reactor *r) {
  epoll_state *e = weft__zalloc(sizeof *e);
  if (!e) return -ENOMEM;
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0) {
    int err = -errno;
    weft__free(e, sizeof *e);
    return err;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, r->wake_fd, &ev) < 0) {
    int err = -errno;
    close(e->epfd);
    weft__free(e, sizeof *e);
    return err;
  }
  r->impl = e;
  return 0;
}

void weft__epoll_fini(weft__reactor *r) {
  epoll_state *e = r->impl;
  close(e->epfd);
  weft__free(e, sizeof *e);
  r->impl = NULL;
}

static void dispatch(weft__reactor *r, struct epoll_event *evs, int n) {
  for (int i = 0; i < n; i++) {
    weft__io_op *op = evs[i].data.ptr;
    if (!op) {
      uint64_t v;
      while (read(r->wake_fd, &v, sizeof v) < 0 && errno == EINTR) {
      }
      weft__reactor_rearm(r); /* the unpark was consumed: allow the next one */
      continue;
    }
    if ((uintptr_t)op & 1u)
      weft__ready_event((struct weft__fdslot *)((uintptr_t)op & ~(uintptr_t)1), evs[i].events);
    else
      op->complete(op, (int32_t)evs[i].events, 0);
  }
}

void weft__epoll_poll(weft__reactor *r) {
  epoll_state *e = r->impl;
  /* relaxed: a count, no data; a registration made on another thread and
   * not yet seen here is reported by the next park at the latest */
  if (e->registered == 0 && weft__load(&e->slots, RELAXED) == 0 && r->inflight == 0) return;
  struct epoll_event evs[64];
  int n = epoll_wait(e->epfd, evs, 64, 0);
  if (n > 0) dispatch(r, evs, n);
}

void weft__epoll_park(weft__reactor *r, int64_t deadline) {
  epoll_state *e = r->impl;
  struct epoll_event evs[64];
  int n;
  if (deadline == INT64_MAX) {
    n = epoll_pwait2(e->epfd, evs, 64, NULL, NULL);
  } else {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left = deadline - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
    if (left < 0) left = 0;
    struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
    n = epoll_pwait2(e->epfd, evs, 64, &ts, NULL);
  }
  if (n > 0) dispatch(r, evs, n);
}

/* OWNER: watch fd for events, once (EPOLLONESHOT): op->complete(op,
 * revents, 0) runs when it is ready. Returns 0 or -errno (EEXIST: this fd
 * number is already watched here; EPERM: epoll cannot watch it). */
int weft__epoll_watch(weft__reactor *r, int fd, uint32_t events, weft__io_op *op) {
  epoll_state *e = r->impl;
  struct epoll_event ev = {.events = events | EPOLLONESHOT, .data.ptr = op};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  e->registered++;
  return 0;
}

/* OWNER: watch fd for events, edge-triggered and for good (EPOLLET, no
 * EPOLLONESHOT): op->complete(op, revents, 0) runs at each edge until
 * unwatch. For an owner that keeps one registration for a descriptor's
 * life (net/transport.c's driver) instead of one per wait. */
int weft__epoll_watch_edge(weft__reactor *r, int fd, uint32_t events, weft__io_op *op) {
  epoll_state *e = r->impl;
  struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = op};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  e->registered++;
  return 0;
}

/* OWNER: stop watching fd (after its event, or on cancellation). */
void weft__epoll_unwatch(weft__reactor *r, int fd) {
  epoll_state *e = r->impl;
  (void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL); /* ENOENT/EBADF: the fd was closed meanwhile */
  e->registered--;
}

/* ------------------------------------------------------------ descriptor slots (io/readiness.c) */

#define SLOT_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET)

/* ANY THREAD (epoll_ctl is thread-safe): register fd for good, edge-
 * triggered, naming slot. 0 or -errno (EEXIST, EPERM, EBADF, ENOMEM). */
int weft__epoll_reg_add(weft__reactor *r, int fd, struct weft__fdslot *slot) {
  epoll_state *e = r->impl;
  struct epoll_event ev = {.events = SLOT_EVENTS, .data.ptr = (void *)((uintptr_t)slot | 1u)};
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  weft__fetch_add(&e->slots, 1, RELAXED); /* relaxed: a count (see poll) */
  return 0;
}

/* ANY THREAD: re-state fd's registration (the kernel re-reports its
 * current readiness): 0, or -ENOENT when this number's file is not the
 * registered one any more. */
int weft__epoll_reg_mod(weft__reactor *r, int fd, struct weft__fdslot *slot) {
  epoll_state *e = r->impl;
  struct epoll_event ev = {.events = SLOT_EVENTS, .data.ptr = (void *)((uintptr_t)slot | 1u)};
  return epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

/* ANY THREAD: drop fd's registration (before it is closed). */
void weft__epoll_reg_del(weft__reactor *r, int fd) {
  epoll_state *e = r->impl;
  if (epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL) == 0)
    weft__fetch_sub(&e->slots, 1, RELAXED); /* relaxed: a count (see poll) */
}
