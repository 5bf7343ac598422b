/* net/server.c: asyncio.start_server: a listener, an accept loop task, and
 * one handler task per connection.
 *
 * THE ACCEPT LOOP is one task per server: on io_uring one multishot
 * IORING_OP_ACCEPT (net/acceptor.c: armed once, re-armed when the kernel
 * ends it; the loop's task stays pinned to its worker meanwhile, and
 * close's cancellation waits for the accept's last completion), falling
 * back to single-shot weft_accept on kernels without it (before 5.19);
 * on epoll weft_accept (accept4 after EPOLLIN). Each connection gets a
 * detached handler task. Placement (opts.placement): ROUND_ROBIN (default)
 * starts handler i on worker i mod N (weft__spawn_pinned; the handler
 * unpins itself at once, so stealing may still move it later); LOCAL
 * spawns it like any task, on the accept loop's worker, where idle workers
 * may steal it. Under load every worker is busy and nobody steals, so with
 * LOCAL the handlers pile up on the accept loop's worker (a handler
 * resumes where its I/O completed): measured in docs/guide.md
 * ("Networking" in the guide). Not chosen (and not measured): one
 * listener per worker with SO_REUSEPORT, each accept loop pinned to its
 * worker for good (weft__spawn_pinned without the unpin): the kernel's
 * hash spreads a few connections unevenly, and close/shutdown would have N
 * loops to stop for no gain while one accept loop keeps up. Running out of
 * descriptors (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM) makes the loop
 * sleep 100 ms and try again rather than spin; the pending connection
 * stays in the backlog meanwhile.
 *
 * RAW CONNECTIONS (weft__start_server_fd, for net/transport.c's
 * create_server): the connection task calls fd_fn(fd) instead of making a
 * stream and calling a handler; the rest (placement, the list, shutdown's
 * cancellation) is the same.
 *
 * HANDLERS. Each connection has a record linked in the server's list
 * (under `lock`, a spinlock: a few instructions, no wake, no allocation)
 * from before its task is spawned until the task ends; `active` counts
 * them. A handler stores its own handle (weft_current) in its record when
 * it starts, and cancels itself if a shutdown's cancellation has begun
 * (`cancelling`), so no handler escapes a cancellation that began before
 * it ran. A handler that returns once the cancellation has begun leaves a
 * stream with bytes still unsent (a peer that does not read) aborted, not
 * flushed: wait_closed's 10 s flush would hold shutdown past its deadline.
 * shutdown copies the handles out under the lock into memory
 * allocated before taking it, and cancels them after unlocking (a handle
 * gone stale in between gets -ESRCH: harmless).
 *
 * WAITING FOR THE HANDLERS. wait_closed/shutdown wait on `waiters` (under
 * the lock) until `closed && active == 0`; the handler that makes it true
 * takes the waiters under the lock and wakes them after unlocking. The
 * last touch of the server by a handler is that unlock, so a waiter that
 * frees the server after waking touches nothing freed.
 *
 * CLOSING TWICE. Only the first close stops the accept loop; a close that
 * finds one under way waits on `waiters` too, until `closed` (the listener
 * is closed then): it returned at once before, with the listener still
 * open. The first close wakes every waiter when it sets `closed`; those
 * waiting for the handlers as well re-check and wait again.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <weft/net.h>
#include <weft/tls.h>

#include "core/alloc.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/waitlist.h"
#include "io/op.h"
#include "net/acceptor.h"
#include "net/net.h"

#define BACKOFF_NS (100LL * 1000 * 1000)

typedef struct conn_rec {
  struct conn_rec *next, *prev;  /* under srv->lock */
  struct weft_server *srv;
  weft_task task;                /* under srv->lock: set by the handler when it starts */
  bool started;                  /* under srv->lock */
  bool pinned;                   /* immutable: spawned pinned to its worker (round-robin) */
  int fd;
} conn_rec;

struct weft_server {
  int lfd;                      /* the listener; -1 once closed */
  weft_addr addr;               /* immutable */
  bool unlink_path;             /* immutable: a Unix path we created */
  dev_t path_dev;               /* immutable: the socket file we bound there, so that close removes */
  ino_t path_ino;               /* it only while it is ours (another server may have replaced it) */
  weft_conn_fn fn;              /* immutable */
  weft__conn_fd_fn fd_fn;       /* immutable: instead of fn, gets the socket (net/transport.c) */
  weft__fnptr fd_ctx;           /* immutable: passed to fd_fn (a protocol factory) */
  void *arg;
  weft_server_opts opts;        /* immutable */
  weft_task accept_task;        /* the closer's */
  unsigned next_worker;         /* the accept loop's: round-robin placement */
  _Atomic int close_started;    /* 0 -> 1 by the first close */
  _Atomic uint64_t accepted;    /* relaxed: statistics */
  weft__spinlock lock;
  conn_rec *conns;              /* under lock */
  size_t active;                /* under lock */
  bool closed;                  /* under lock: no more handlers will be added */
  bool cancelling;              /* under lock: shutdown is cancelling handlers */
  weft__waitlist waiters;       /* under lock: wait_closed/shutdown */
};

static void unlink_rec(weft_server *srv, conn_rec *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    srv->conns = r->next;
  if (r->next) r->next->prev = r->prev;
}

/* Caller holds the lock: take the waiters when the server became idle, or
 * all of them (`all`: close has just set `closed`). */
static int take_waiters(weft_server *srv, bool all, weft__wakeup *out, int max) {
  int n = 0;
  if (all || (srv->closed && srv->active == 0))
    while (n < max && weft__waitlist_pop(&srv->waiters, &out[n])) n++;
  return n;
}

/* Remove r and wake the waiters if that made the server idle (or all of
 * them: `all`). Loops so that any number of waiters is woken. */
static void wake_waiters(weft_server *srv, conn_rec *r, bool all) {
  enum { BATCH = 32 };
  weft__wakeup wake[BATCH];
  weft__spin_lock(&srv->lock);
  if (r) {
    unlink_rec(srv, r);
    srv->active--;
  }
  int n = take_waiters(srv, all, wake, BATCH);
  bool more = n == BATCH && srv->waiters.len;
  weft__spin_unlock(&srv->lock);
  for (int i = 0; i < n; i++) weft__wakeup_fire(&wake[i]);
  if (more) wake_waiters(srv, NULL, all);
}

static void finish_rec(weft_server *srv, conn_rec *r) { wake_waiters(srv, r, false); }

static int conn_main(void *arg) {
  conn_rec *r = arg;
  weft_server *srv = r->srv;
  weft__spin_lock(&srv->lock);
  r->task = weft_current();
  r->started = true;
  bool cancel = srv->cancelling;
  weft__spin_unlock(&srv->lock);
  if (r->pinned) weft_unpin(); /* placed: from now on the scheduler may move it */
  if (cancel) weft_cancel(weft_current());
  weft_stream *s;
  if (srv->fd_fn) {
    if (cancel)
      close(r->fd); /* cancelled before it began: no protocol is made */
    else
      srv->fd_fn(r->fd, &srv->opts, srv->fd_ctx, srv->arg); /* owns the socket from now on */
  } else if (weft__stream_new(r->fd, srv->opts.limit, &s) == 0) {
    if (!cancel && srv->opts.tls && weft_stream_start_tls(s, srv->opts.tls, true, NULL) != 0) {
      cancel = true; /* a failed handshake: close without calling the handler */
      weft_stream_abort(s);
    }
    if (!cancel) srv->fn(s, srv->arg);
    weft__spin_lock(&srv->lock);
    bool late = srv->cancelling;
    weft__spin_unlock(&srv->lock);
    /* shutdown's deadline has passed: bytes the peer is not taking are dropped (a reset), not
     * flushed for wait_closed's 10 s, which would hold shutdown past its deadline */
    if (late && weft_stream_buffered(s)) weft_stream_abort(s);
    weft_stream_wait_closed(s);
  }
  finish_rec(srv, r);
  weft__free(r, sizeof *r);
  return 0;
}

static void serve_one(weft_server *srv, int fd) {
  conn_rec *r = weft__alloc(sizeof *r);
  if (!r) {
    close(fd);
    return;
  }
  memset(r, 0, sizeof *r);
  r->srv = srv;
  r->fd = fd;
  weft__spin_lock(&srv->lock);
  r->next = srv->conns;
  if (srv->conns) srv->conns->prev = r;
  srv->conns = r;
  srv->active++;
  weft__spin_unlock(&srv->lock);
  weft_spawn_opts o = {.name = "weft-conn", .stack_size = srv->opts.stack_size, .detached = true};
  weft_task t;
  int nw = weft_worker_count();
  if (srv->opts.placement == WEFT_PLACE_ROUND_ROBIN && nw > 1) {
    r->pinned = true;
    t = weft__spawn_pinned(srv->next_worker++ % (unsigned)nw, conn_main, r, &o);
  } else {
    t = weft_spawn_ex(conn_main, r, &o);
  }
  if (!t.rec) {
    close(fd);
    finish_rec(srv, r);
    weft__free(r, sizeof *r);
  }
}

static bool out_of_resources(int e) { return e == -EMFILE || e == -ENFILE || e == -ENOBUFS || e == -ENOMEM; }

/* What the loop does with one accept result: 1 to go on, 0 or a negative
 * errno to end the loop with. */
static int on_accept(weft_server *srv, int fd) {
  if (fd >= 0) {
    weft__fetch_add(&srv->accepted, 1, RELAXED); /* relaxed: a statistic */
    serve_one(srv, fd);
    return 1;
  }
  if (fd == -ECANCELED) return 0;
  if (out_of_resources(fd)) {
    if (weft_sleep_ns(BACKOFF_NS) == -ECANCELED) return 0;
  } else if (fd == -EBADF || fd == -EINVAL || fd == -ENOTSOCK) {
    return fd; /* the listener is gone */
  }
  return 1; /* ECONNABORTED, EPROTO, EPERM (a firewall), ...: the next one */
}

static _Atomic bool multishot_accept = true;

void weft__server_set_multishot(bool on) {
  weft__store(&multishot_accept, on, RELAXED); /* relaxed: read by servers started later (a test switch) */
}

/* io_uring: one multishot accept (net/acceptor.c); -EOPNOTSUPP when the
 * kernel has none (the caller accepts single-shot). */
static int accept_multishot(weft_server *srv) {
  weft__acceptor a;
  int rc = weft__acceptor_init(&a, srv->lfd);
  if (rc) return -EOPNOTSUPP;
  do {
    int fd = weft__acceptor_next(&a);
    rc = fd == -EOPNOTSUPP ? fd : on_accept(srv, fd);
  } while (rc == 1);
  weft__acceptor_fini(&a); /* the kernel is done with it before we return */
  return rc;
}

static int accept_main(void *arg) {
  weft_server *srv = arg;
  /* relaxed: a test switch, set before the server starts */
  if (weft__io_backend() == WEFT_BACKEND_URING && weft__load(&multishot_accept, RELAXED)) {
    int rc = accept_multishot(srv);
    if (rc != -EOPNOTSUPP) return rc;
  }
  int rc;
  do rc = on_accept(srv, weft_accept(srv->lfd, NULL));
  while (rc == 1);
  return rc;
}

/* Remove the server's Unix path if the socket file there is still the one
 * it bound (Python 3.13's rule: a later server may have replaced it). */
static void unlink_ours(weft_server *srv) {
  struct stat st;
  if (srv->unlink_path && stat(srv->addr.u.un.sun_path, &st) == 0 && st.st_dev == srv->path_dev &&
      st.st_ino == srv->path_ino)
    unlink(srv->addr.u.un.sun_path);
}

static int start(weft_server **out, const weft_addr *a, weft_conn_fn fn, weft__conn_fd_fn fd_fn, weft__fnptr fd_ctx,
                 void *arg, const weft_server_opts *opts) {
  weft_server_opts o = opts ? *opts : (weft_server_opts){0};
  if (o.placement != WEFT_PLACE_ROUND_ROBIN && o.placement != WEFT_PLACE_LOCAL) return -EINVAL;
  /* checked here, not by each handler's spawn or stream: a server that took
   * them would close every connection it accepts, silently */
  if (o.stack_size && (o.stack_size < 16384 || o.stack_size > ((size_t)1 << 30))) return -EINVAL;
  if (o.limit > (size_t)SSIZE_MAX / 2) return -EINVAL; /* weft_stream_set_limit's bound */
  if (o.tls && !weft__tls_ctx_is_server(o.tls)) return -EINVAL;
  int lfd = weft_listen(a, o.backlog, o.reuseport ? WEFT_LISTEN_REUSEPORT : 0);
  if (lfd < 0) return lfd;
  weft_server *srv = weft__alloc(sizeof *srv);
  if (!srv) {
    close(lfd);
    return -ENOMEM;
  }
  memset(srv, 0, sizeof *srv);
  srv->lfd = lfd;
  srv->fn = fn;
  srv->fd_fn = fd_fn;
  srv->fd_ctx = fd_ctx;
  srv->arg = arg;
  srv->opts = o;
  weft__spin_init(&srv->lock);
  weft__waitlist_init(&srv->waiters);
  weft__store(&srv->close_started, 0, RELAXED);
  weft__store(&srv->accepted, 0, RELAXED);
  int rc = weft_sockname(lfd, &srv->addr);
  if (rc) srv->addr = *a;
  srv->unlink_path = a->u.sa.sa_family == AF_UNIX && a->u.un.sun_path[0] != 0;
  struct stat st;
  if (srv->unlink_path) {
    if (stat(a->u.un.sun_path, &st) == 0) {
      srv->path_dev = st.st_dev;
      srv->path_ino = st.st_ino;
    } else {
      srv->unlink_path = false; /* gone already: nothing of ours to remove */
    }
  }
  weft_spawn_opts so = {.name = "weft-accept"};
  srv->accept_task = weft_spawn_ex(accept_main, srv, &so);
  if (!srv->accept_task.rec) {
    rc = -errno;
    close(lfd);
    unlink_ours(srv);
    weft__free(srv, sizeof *srv);
    return rc ? rc : -ENOMEM;
  }
  *out = srv;
  return 0;
}

int weft__server_resolve(const char *host, uint16_t port, weft_addr *out) {
  if (!host || !*host) { /* every address: one dual-stack socket when there is IPv6 */
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) close(fd);
    return weft_addr_ip(out, fd >= 0 ? "::" : "0.0.0.0", port);
  }
  int n = weft_resolve(host, port, AF_UNSPEC, WEFT_RESOLVE_PASSIVE, out, 1);
  return n < 0 ? n : 0;
}

int weft_start_server(weft_server **out, const char *host, uint16_t port, weft_conn_fn fn, void *arg,
                      const weft_server_opts *opts) {
  if (!out || !fn) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  weft_addr a;
  int n = weft__server_resolve(host, port, &a);
  if (n < 0) return n;
  return start(out, &a, fn, NULL, NULL, arg, opts);
}

/* asyncio's create_unix_server: a socket file already at the path (left by
 * a server that died) is removed before binding; any other file stays (bind
 * then fails with -EADDRINUSE). */
void weft__unix_remove_stale(const weft_addr *a) {
  struct stat st;
  if (a->u.sa.sa_family == AF_UNIX && a->u.un.sun_path[0] && stat(a->u.un.sun_path, &st) == 0 &&
      S_ISSOCK(st.st_mode))
    unlink(a->u.un.sun_path);
}

int weft_start_unix_server(weft_server **out, const char *path, weft_conn_fn fn, void *arg,
                           const weft_server_opts *opts) {
  if (!out || !fn) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  weft_addr a;
  int rc = weft_addr_unix(&a, path);
  if (rc) return rc;
  weft__unix_remove_stale(&a);
  return start(out, &a, fn, NULL, NULL, arg, opts);
}

int weft__start_server_fd(weft_server **out, const weft_addr *a, weft__conn_fd_fn fd_fn, weft__fnptr fd_ctx,
                          void *arg, const weft_server_opts *opts) {
  if (!out || !a || !fd_fn) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  return start(out, a, NULL, fd_fn, fd_ctx, arg, opts);
}

int weft_server_addr(const weft_server *srv, weft_addr *out) {
  if (!srv || !out) return -EINVAL;
  *out = srv->addr;
  return 0;
}

size_t weft_server_active(weft_server *srv) {
  if (!srv) return 0;
  weft__spin_lock(&srv->lock);
  size_t n = srv->active;
  weft__spin_unlock(&srv->lock);
  return n;
}

uint64_t weft_server_accepted(weft_server *srv) {
  return srv ? weft__load(&srv->accepted, RELAXED) : 0; /* relaxed: a statistic */
}

/* A cancel request was delivered to a wait we do not report (the caller
 * gets a real result): keep it pending for the next suspension, as
 * io/op.c does. */
static void repend_cancel(void) {
  weft__store(&weft__task_self()->cancel_pending, 1, RELAXED); /* relaxed: the flag carries no data */
}

/* Join t whatever cancellations the caller receives meanwhile; returns
 * -ECANCELED if one arrived (delivered), else 0. */
static int join_through(weft_task t) {
  int rc = 0;
  while (weft_join(t) == -ECANCELED && !weft_task_done(t)) rc = -ECANCELED;
  weft_task_release(t);
  return rc;
}

/* Wait until closed (and idle, when `idle`) or the deadline: 0, -ETIMEDOUT
 * or -ECANCELED. */
static int wait_state(weft_server *srv, bool idle, int64_t deadline, bool cancellable) {
  weft__task *self = weft__task_self();
  if (!self) return -EINVAL;
  for (;;) {
    int64_t seq = deadline == WEFT__NO_DEADLINE ? weft__wait_prepare(cancellable)
                                                : weft__wait_prepare_deadline(cancellable, deadline);
    if (seq < 0) return (int)seq;
    weft__spin_lock(&srv->lock);
    if (srv->closed && (!idle || srv->active == 0)) {
      weft__spin_unlock(&srv->lock);
      weft__wait_abandon();
      return 0;
    }
    weft__waitlist_push(&srv->waiters, self, (uint32_t)seq);
    weft__spin_unlock(&srv->lock);
    uint32_t why = weft__wait_commit((uint32_t)seq);
    if (why == WEFT__WAKE_NORMAL) continue; /* re-check */
    weft__spin_lock(&srv->lock);
    weft__waitlist_remove(&srv->waiters, self);
    weft__spin_unlock(&srv->lock);
    if (why == WEFT__WAKE_CANCEL) return -ECANCELED;
    if (weft_now_ns() >= deadline) return -ETIMEDOUT;
  }
}

int weft_server_close(weft_server *srv) {
  if (!srv) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  int zero = 0;
  /* acq_rel: the first closer wins; later ones wait until it has closed the
   * listener (not cancellably, as the first one joins the accept loop; a
   * request that comes meanwhile stays pending) */
  if (!weft__cas(&srv->close_started, &zero, 1, ACQ_REL, RELAXED))
    return wait_state(srv, false, WEFT__NO_DEADLINE, false);
  weft_cancel(srv->accept_task);
  int rc = join_through(srv->accept_task);
  close(srv->lfd);
  srv->lfd = -1;
  unlink_ours(srv);
  weft__spin_lock(&srv->lock);
  srv->closed = true;
  weft__spin_unlock(&srv->lock);
  wake_waiters(srv, NULL, true); /* later closers; those waiting for the handlers re-check */
  if (rc) repend_cancel(); /* the request that arrived stays pending */
  return 0;
}

int weft_server_wait_closed(weft_server *srv) {
  if (!srv) return -EINVAL;
  return wait_state(srv, true, WEFT__NO_DEADLINE, true);
}

/* Cancel every handler; returns how many were cancelled. `cancelling` is
 * set only with the list in hand: with no memory for it (-ENOMEM) no
 * cancellation begins, and handlers that return are flushed as usual. */
static int cancel_handlers(weft_server *srv) {
  size_t cap = 0;
  weft_task *tasks = NULL;
  for (;;) {
    weft__spin_lock(&srv->lock);
    size_t n = srv->active;
    if (n <= cap) {
      srv->cancelling = true;
      size_t k = 0;
      for (conn_rec *r = srv->conns; r; r = r->next)
        if (r->started) tasks[k++] = r->task;
      weft__spin_unlock(&srv->lock);
      int cancelled = 0;
      for (size_t i = 0; i < k; i++) cancelled += weft_cancel(tasks[i]) == 1;
      weft__free(tasks, cap * sizeof *tasks);
      return cancelled + (int)(n - k); /* the unstarted ones cancel themselves */
    }
    weft__spin_unlock(&srv->lock);
    weft__free(tasks, cap * sizeof *tasks);
    cap = n + 16;
    tasks = weft__alloc(cap * sizeof *tasks);
    if (!tasks) return -ENOMEM;
  }
}

int weft_server_shutdown(weft_server *srv, int64_t deadline) {
  if (!srv) return -EINVAL;
  if (!weft__task_self()) {
    weft__debug_misuse("weft_server_shutdown (or weft_server_free) outside a task: nothing is done");
    return -EINVAL;
  }
  weft_server_close(srv);
  int rc = wait_state(srv, true, deadline, true);
  if (rc == 0) return 0;
  int n = cancel_handlers(srv);
  wait_state(srv, true, WEFT__NO_DEADLINE, false);
  if (rc == -ECANCELED) repend_cancel(); /* the caller's request stays pending */
  return n;
}

void weft_server_free(weft_server *srv) {
  if (!srv) return;
  /* -EINVAL: outside a task (srv is not NULL): the shutdown did not run and
   * the accept loop still uses srv, so it is left alone (freeing it was a
   * use after free: test_net_server free_outside_a_task_leaves_the_server) */
  if (weft_server_shutdown(srv, weft_now_ns()) == -EINVAL) return;
  weft__free(srv, sizeof *srv);
}
