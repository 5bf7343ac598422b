/* process/process.c: a child's handle: wait, return code, signals,
 * communicate, free.
 *
 * WAITING. The child's pidfd becomes readable when it exits; a waiting
 * task polls it on its worker's reactor (weft_poll: an io_uring POLL_ADD,
 * or epoll), so no thread blocks, then reaps with waitid(P_PIDFD, WNOHANG).
 * Concurrent waiters take turns through the `reaping` claim
 * (process/process.h): one calls waitid, the others yield and see `reaped`.
 *
 * COMMUNICATE. stdin's writer and stderr's reader run as child tasks
 * while the calling task reads stdout, so a child that fills one pipe
 * while the parent waits on another cannot deadlock. Every path joins
 * both child tasks before returning (they use the caller's buffers).
 * A timeout is a timeout scope around the whole call; cancellation (or the
 * scope's expiry) reaches whichever suspension the calling task is in,
 * which then cancels the child tasks and, unless asked not to, SIGKILLs
 * the child.
 *
 * FREE. A child not reaped yet is left to a reaper task that waits for it
 * the same way (no zombie outlives the runtime's life unless the runtime
 * shuts down first: the reaper is cancelled then, tries once more and
 * gives up, documented in weft/process.h). The handle (its pidfd, its
 * memory) is released by a callback on the reaper's end, not by its body:
 * a shutdown that cancels the reaper before it has started keeps the body
 * from running at all (asyncio's rule for a task cancelled before it
 * starts), which left the pidfd open and the handle leaked for good.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft/io.h>
#include <weft/process.h>
#include <weft/task.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/task.h"
#include "io/op.h"
#include "process/process.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

enum { REAP_RUNNING = 0, REAP_DONE = 1, REAP_BUSY = 2 };

/* Returns REAP_DONE, REAP_RUNNING, REAP_BUSY (another task holds the
 * claim), or a negative errno. */
static int try_reap(weft_process *p) {
  if (weft__load(&p->reaped, ACQUIRE)) return REAP_DONE; /* pairs with the release below */
  int free_claim = 0;
  /* acquire: pairs with the release that gives the claim back, so that this
   * task sees the previous claimer's writes (reaped, returncode) */
  if (!weft__cas(&p->reaping, &free_claim, 1, ACQUIRE, RELAXED)) return REAP_BUSY;
  int rc = REAP_RUNNING;
  if (weft__load(&p->reaped, ACQUIRE)) {
    rc = REAP_DONE;
  } else {
    siginfo_t si;
    si.si_pid = 0;
    int r;
    while ((r = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r < 0) {
      rc = -errno; /* ECHILD: SIGCHLD is SIG_IGN and the kernel reaped it */
    } else if (si.si_pid != 0) {
      p->returncode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
      weft__store(&p->reaped, 1, RELEASE); /* pairs with the acquire loads of reaped */
      rc = REAP_DONE;
    }
  }
  weft__store(&p->reaping, 0, RELEASE); /* pairs with the acquire CAS above */
  return rc;
}

int weft__process_try_reap(weft_process *p) { return try_reap(p); }

pid_t weft_process_pid(const weft_process *p) { return p ? p->pid : -EINVAL; }
weft_stream *weft_process_stdin(weft_process *p) { return p ? p->in : NULL; }
weft_stream *weft_process_stdout(weft_process *p) { return p ? p->out : NULL; }
weft_stream *weft_process_stderr(weft_process *p) { return p ? p->err : NULL; }

int weft_process_wait_until(weft_process *p, int64_t deadline, int *returncode) {
  if (!p) return -EINVAL;
  int rc = weft__io_backend();
  if (rc < 0) return rc;
  for (;;) {
    rc = try_reap(p);
    if (rc < 0) return rc;
    if (rc == REAP_DONE) break;
    if (rc == REAP_BUSY) {
      rc = weft_yield();
      if (rc < 0) return rc;
      continue;
    }
    rc = weft_poll(p->pidfd, POLLIN, deadline);
    if (rc < 0) return rc;
  }
  if (returncode) *returncode = p->returncode;
  return 0;
}

int weft_process_wait(weft_process *p, int *returncode) {
  return weft_process_wait_until(p, WEFT__NO_DEADLINE, returncode);
}

/* A child that has exited is reaped here (waitid WNOHANG does not block),
 * as Popen.poll does: asyncio's returncode is set once the child exits,
 * awaited or not (it stayed -EBUSY until a wait, before). The handle is
 * the caller's (never const storage), so the cast is sound. */
int weft_process_returncode(const weft_process *p, int *returncode) {
  if (!p) return -EINVAL;
  int rc = try_reap((weft_process *)p);
  if (rc < 0) return rc;
  if (rc != REAP_DONE) return -EBUSY; /* running, or another thread reaps it now */
  if (returncode) *returncode = p->returncode; /* try_reap's acquire load of reaped ordered it */
  return 0;
}

int weft_process_send_signal(weft_process *p, int sig) {
  if (!p || sig < 0 || sig >= 65) return -EINVAL;
  if (weft__load(&p->reaped, ACQUIRE)) return -ESRCH; /* pairs with the release in try_reap */
  if (syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) < 0) return -errno;
  return 0;
}

int weft_process_terminate(weft_process *p) { return weft_process_send_signal(p, SIGTERM); }
int weft_process_kill(weft_process *p) { return weft_process_send_signal(p, SIGKILL); }

/* ------------------------------------------------------------ communicate */

typedef struct comm {
  weft_process *p;
  weft_communicate *c;
} comm;

/* Read s to its end into buf (cap bytes; the rest is dropped, counted). */
static int read_to_end(weft_stream *s, char *buf, size_t cap, size_t *len) {
  char sink[4096];
  for (;;) {
    ssize_t n = *len < cap ? weft_stream_read(s, buf + *len, cap - *len) : weft_stream_read(s, sink, sizeof sink);
    if (n < 0) return (int)n;
    if (n == 0) return 0;
    *len += (size_t)n;
  }
}

static int stderr_task(void *arg) {
  comm *m = arg;
  return read_to_end(m->p->err, m->c->err, m->c->err_cap, &m->c->err_len);
}

static int stdin_task(void *arg) {
  comm *m = arg;
  weft_stream *s = m->p->in;
  int rc = 0;
  if (m->c->input_len) rc = weft_stream_write(s, m->c->input, m->c->input_len);
  if (!rc) rc = weft_stream_write_eof(s); /* drains, then closes the pipe: the child reads EOF */
  if (rc == -EPIPE || rc == -ECONNRESET) rc = 0; /* the child did not read it all: not an error */
  return rc;
}

/* Join t whatever cancellations arrive (it uses our frame), release it and
 * return its status. */
static int finish(weft_task t) {
  if (!t.rec) return 0;
  int st;
  do {
    st = weft_join(t);
  } while (st == -ECANCELED && !weft_task_done(t));
  if (weft_task_done(t)) st = weft_task_status(t);
  weft_task_release(t);
  return st;
}

static void stop(weft_task t) {
  if (t.rec) weft_cancel(t);
}

/* A cancel request of the caller that a join of a child task used up: the
 * join passes it on to the child (weft_join's rule, asyncio's), and a
 * child already woken by its own end (a reader at end of stream, a writer
 * whose last bytes went) ends without suspending again, with its status,
 * not -ECANCELED; the join returns that and the request is gone, so the
 * call went on to the next join or the wait, which may never end (a child
 * that closed its pipes and lives on; the deadline's request is one of
 * these). As asyncio's gather (cancelled: CancelledError whatever its
 * children returned), such a request is made pending again, unless the
 * call reports -ECANCELED already. `asked`: the caller's requests when the
 * call began, less one not yet delivered then (it is still to report).
 * relaxed: the count and flag of the calling task, whose joins ordered the
 * canceller's count before its wake (as weft_join's restore) */
static int requests_now(weft__task *self) {
  return weft__load(&self->cancelling, RELAXED) - (weft__load(&self->cancel_pending, RELAXED) ? 1 : 0);
}

static void keep_cancel(weft__task *self, int asked, int rc) {
  if (rc != -ECANCELED && weft__load(&self->cancelling, RELAXED) > asked)
    weft__store(&self->cancel_pending, 1, RELAXED);
}

static int comm_body(weft_process *p, weft_communicate *c) {
  comm m = {p, c};
  weft_task tin = {0}, terr = {0};
  weft__task *self = weft__task_self();
  int asked = requests_now(self);
  int rc = 0;
  if (p->in) {
    weft_spawn_opts so = {.name = "weft-stdin-writer"};
    tin = weft_spawn_ex(stdin_task, &m, &so);
    if (!tin.rec) rc = -errno;
  }
  if (!rc && p->err) {
    weft_spawn_opts so = {.name = "weft-stderr-reader"};
    terr = weft_spawn_ex(stderr_task, &m, &so);
    if (!terr.rec) rc = -errno;
  }
  if (!rc && p->out) rc = read_to_end(p->out, c->out, c->out_cap, &c->out_len);
  if (rc) {
    stop(terr);
    stop(tin);
  }
  int e = finish(terr);
  if (!rc && e < 0) {
    rc = e;
    stop(tin);
  }
  keep_cancel(self, asked, rc); /* the next join passes it on to the writer */
  int w = finish(tin);
  if (!rc && w < 0) rc = w;
  keep_cancel(self, asked, rc); /* the wait returns it */
  if (!rc) rc = weft_process_wait(p, &c->returncode);
  return rc;
}

int weft_process_communicate(weft_process *p, weft_communicate *c) {
  if (!p || !c || (!c->out && c->out_cap) || (!c->err && c->err_cap) || (!c->input && c->input_len))
    return -EINVAL;
  /* an input no write takes (the writer would fail before it closes the
   * child's stdin, and the read of its stdout wait for ever), unknown flags */
  if (c->input_len > (size_t)SSIZE_MAX || (c->flags & ~(unsigned)WEFT_COMMUNICATE_LEAVE_RUNNING)) return -EINVAL;
  if (c->input_len && !p->in) return -EINVAL;
  if (weft__io_backend() < 0) return -EINVAL;
  c->out_len = c->err_len = 0;
  bool timed = c->deadline_ns != 0 && c->deadline_ns != WEFT_NO_DEADLINE;
  weft_timeout to;
  int rc = 0;
  if (timed && (rc = weft_timeout_enter_at(&to, c->deadline_ns))) return rc;
  rc = comm_body(p, c);
  if (timed) rc = weft_timeout_leave(&to, rc);
  if ((rc == -ECANCELED || rc == -ETIMEDOUT) && !(c->flags & WEFT_COMMUNICATE_LEAVE_RUNNING)) {
    weft_process_kill(p);
    try_reap(p); /* usually still running: wait or free reaps it */
  }
  if (!rc && (c->out_len > c->out_cap || c->err_len > c->err_cap)) rc = -ENOBUFS;
  return rc;
}

/* ------------------------------------------------------------ free */

static void release(weft_process *p) {
  close(p->pidfd);
  weft__free(p, sizeof *p);
}

static int reaper_task(void *arg) {
  weft_process *p = arg;
  for (;;) {
    int rc = try_reap(p);
    if (rc != REAP_RUNNING && rc != REAP_BUSY) break;
    rc = rc == REAP_BUSY ? weft_yield() : weft_poll(p->pidfd, POLLIN, WEFT_NO_DEADLINE);
    if (rc == -ECANCELED) { /* the runtime shuts down: one last try */
      try_reap(p);
      break;
    }
  }
  return 0; /* reaper_ended releases p */
}

/* The reaper task's end, whether its body ran or not (a callback node:
 * on the thread that finishes it, after its last touch of p; the finisher
 * copied the node's fields before the call, so freeing it here is safe). */
static void reaper_ended(weft_task t, void *arg) {
  (void)t;
  release(arg);
}

int weft_process_close_pipe(weft_process *p, int which) {
  if (!p || which < 0 || which > 2) return -EINVAL;
  weft_stream **s = which == 0 ? &p->in : which == 1 ? &p->out : &p->err;
  if (!*s) return -EBADF;
  weft_stream *st = *s;
  *s = NULL;
  weft_stream_close(st);
  int rc = weft_stream_wait_closed(st);
  return rc == -EPIPE || rc == -ECONNRESET ? 0 : rc;
}

int weft_process_free(weft_process *p) {
  if (!p) return -EINVAL;
  weft_stream **streams[3] = {&p->in, &p->out, &p->err};
  bool cancelled = false;
  for (int i = 0; i < 3; i++) {
    if (!*streams[i]) continue;
    weft_stream_close(*streams[i]);
    if (weft_stream_wait_closed(*streams[i]) == -ECANCELED) cancelled = true;
    *streams[i] = NULL;
  }
  /* a cancellation that cut stdin's flush short was delivered there: keep
   * it for the caller's next suspension (it was dropped before: test_process
   * a_cancel_during_free_stays_requested). relaxed: the flag carries no
   * data (as weft_join's restore) */
  if (cancelled && weft__task_self()) weft__store(&weft__task_self()->cancel_pending, 1, RELAXED);
  int rc = try_reap(p);
  if (rc == REAP_RUNNING || rc == REAP_BUSY) {
    weft_spawn_opts so = {.name = "weft-reaper"};
    weft_task t = weft_spawn_ex(reaper_task, p, &so);
    if (t.rec) {
      /* its end releases p (1: it ended already, and releases nothing);
       * our handle keeps the record until the node is linked */
      p->reaper_end = (weft__done_node){.cb = reaper_ended, .cb_arg = p, .keep = true};
      int ended = weft__task_subscribe((weft__task *)t.rec, &p->reaper_end);
      weft_task_release(t);
      if (!ended) return 0; /* the handle is not ours to use */
    }
  }
  release(p);
  return 0;
}

/* ------------------------------------------------------------ SIGPIPE */

static void ignore_sigpipe_once(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO)) {
    struct sigaction ign = {0};
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);
  }
}

void weft__process_ignore_sigpipe(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, ignore_sigpipe_once);
}
