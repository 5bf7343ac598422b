/* io/readiness.h: per-descriptor readiness on the epoll backend
 * (io/readiness.c; the protocol is that file's first comment).
 *
 * An operation on fd in one direction (WEFT__DIR_IN: receive, accept,
 * read; WEFT__DIR_OUT: send, write, connect; WEFT__DIR_BOTH: a poll of
 * both, which waits for an event in either) goes:
 *     weft__ready rd;
 *     bool ready = weft__ready_begin(&rd, fd, dir);   (before the try)
 *     for (;;) {
 *       if (ready) { r = the non-blocking call; if it moved or failed: done;
 *                    on EAGAIN: weft__ready_clear(&rd); }
 *       rc = weft__ready_wait(&rd, deadline);  (< 0: give up with rc)
 *       ready = true;
 *     }
 * The snapshot taken by begin (and refreshed by wait) must come before the
 * call whose EAGAIN it records: clear only succeeds if no readiness event
 * came since the snapshot, and wait sleeps only while none has come.
 */
#ifndef WEFT_IO_READINESS_H
#define WEFT_IO_READINESS_H

#include <stdbool.h>
#include <stdint.h>

/* BOTH: weft_poll of both directions (a wait woken by either). */
enum { WEFT__DIR_IN = 0, WEFT__DIR_OUT = 1, WEFT__DIR_BOTH = 2 };

struct weft__fdslot;
struct weft__fdtab;
struct weft__reactor;

typedef struct weft__ready {
  struct weft__fdslot *slot; /* NULL: no table slot (fd too large, no memory): one-shot watches */
  int fd;
  int dir;
  uint32_t tick;             /* the direction's tick at the snapshot (BOTH: IN's) */
  uint32_t tick_out;         /* BOTH: OUT's tick at the snapshot */
  uint32_t gen;              /* the slot's resets at begin: one since means fd was closed */
} weft__ready;

/* Snapshot fd's readiness in dir for an operation of the calling task
 * (epoll backend). Returns whether to try the call now (false: the last
 * try found it not ready and no event came since). */
bool weft__ready_begin(weft__ready *rd, int fd, int dir);

/* The call said EAGAIN: record that the descriptor was not ready at the
 * snapshot, unless an event came since. */
void weft__ready_clear(weft__ready *rd);

/* A stream socket's receive got less than asked: the same, unless the
 * peer's end or an error was reported (they stay readable). */
void weft__ready_drained(weft__ready *rd);

/* Suspend until a readiness event for rd's direction after its snapshot
 * (registering fd with the worker's epoll first if needed), or the
 * deadline. Returns 0 (try again; the snapshot is refreshed),
 * -ETIMEDOUT, -ECANCELED, -EPERM (epoll cannot watch fd: a regular
 * file), -EBADF (also: fd was closed, weft__fd_forget, or taken by a new
 * owner, weft__fd_own, since begin: do not try again, the number may
 * name another file now), or another epoll_ctl error. Suspends. */
int weft__ready_wait(weft__ready *rd, int64_t deadline);

/* The caller owns fd and will call weft__fd_forget before closing it (a
 * stream): its waits skip the per-wait check that the registration still
 * names the same file. Waiters found on the number (an older file's) are
 * woken and return -EBADF. Any thread inside a task; no-op elsewhere. */
void weft__fd_own(int fd);

/* fd is about to be closed (or handed to an owner that registers it
 * itself: net/transport.c): drop its registration and state; waiters on it
 * are woken and return -EBADF (io/readiness.c, CLOSE AND REUSE). No-op
 * outside a task of an epoll runtime. */
void weft__fd_forget(int fd);

/* io/epoll.c's dispatch: an event for a slot (data.ptr with bit 0 set). */
void weft__ready_event(struct weft__fdslot *slot, uint32_t events);

/* The runtime's table (core/runtime.c: made for the epoll backend). */
struct weft__fdtab *weft__fdtab_new(void);
void weft__fdtab_free(struct weft__fdtab *t);

#endif
