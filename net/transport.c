/* net/transport.c: asyncio's transports and protocols (weft/protocol.h):
 * one driver task per connection calls the protocol's callbacks.
 *
 * THE DRIVER. A transport's driver task pins itself to its worker for its
 * whole life (the server's connection task, or a task create_connection
 * spawns), so that its reactor operations, their completions and the
 * driver itself all run on one thread. It loops: look at the shared state,
 * deliver what was received (callbacks), flush the write buffer, check the
 * watermarks, arm the reactor, and wait until something happens. Callbacks
 * run only in the driver, one at a time, so their order is the driver's
 * program order: connection_made before the loop, connection_lost after it
 * (teardown), exactly once, also when the loop ends by cancellation.
 *
 * RECEIVING. io_uring: one IORING_OP_RECV (RECVMSG for datagrams) in flight
 * at a time, into the transport's buffer (or the buffered protocol's
 * get_buffer memory), submitted by the driver and left in flight while the
 * driver wakes for other reasons; its completion records the result and
 * kicks the driver. A result that arrives while reading is paused stays
 * there until resume_reading. A receive that completes with -EAGAIN (the
 * ring may do so on a non-blocking socket, as net/socket.c notes) is
 * followed by a POLLIN poll on the same op, then a new receive. epoll: one
 * edge-triggered registration
 * (EPOLLIN|EPOLLOUT|EPOLLRDHUP) for the transport's life; its completion
 * records the ready bits and kicks the driver, which receives with
 * non-blocking recv(2) until the socket is drained (EAGAIN, or a short
 * read on TCP: the kernel then had no more, and new data or the peer's end
 * makes a new edge; unless the edge seen already said the end (RDHUP, HUP,
 * ERR) was queued behind the data: then it reads on until the end).
 *
 * THE SHARED STATE (under `lock`, a spinlock held for a few instructions,
 * never across a system call, a wake or an allocation): the write buffer (a
 * list of chunks and its size), the SEND TOKEN, the flags that other tasks
 * set (closing, aborting, eof_req, read_paused, werr, dead), the watermarks,
 * `kick`, and the driver's waiter {task, seq}. Anyone who changes something
 * the driver must act on sets `kick` and, if the driver is waiting, takes
 * the waiter and wakes it after unlocking. The driver clears `kick` when it
 * looks at the state and does not sleep while it is set (it is checked
 * under the lock between registering the wait and committing it), so no
 * change is missed.
 *
 * THE SEND TOKEN. At most one task sends at a time: the one that took the
 * token under the lock (a writer's direct send, or the driver's flush).
 * A write with nothing buffered and the token free takes it and sends from
 * the caller's memory (MSG_DONTWAIT: a plain system call, never a
 * suspension); the remainder, if any, becomes a chunk put at the HEAD of
 * the list (writes that came meanwhile were appended behind it, since the
 * token was held), so bytes keep the writers' order. A write that finds
 * bytes buffered or the token taken copies into a new chunk (allocated
 * before taking the lock) and appends it. On io_uring the driver sends
 * with ring operations instead (a stream's own writes, from callbacks,
 * included: they are appended and flushed at once): one IORING_OP_SEND/
 * SENDMSG at a time, which holds the token until its completion (on the
 * driver's thread) consumes what went; the send then costs no system call
 * of its own, it is submitted with the worker's next batch. It is
 * MSG_DONTWAIT: a socket with no room completes it at once with -EAGAIN
 * (the driver then waits for POLLOUT, as after a short send) instead of
 * leaving it waiting in the kernel for room, which a peer that never reads
 * never makes, so the driver learns at once what the kernel took (the
 * watermarks wait for that: see watermarks()). (Measured with
 * bench/echo_cpu.py: see docs/benchmarks.md.) A datagram endpoint's
 * callbacks send as other tasks do (a direct send): its buffer is bounded
 * (-ENOBUFS past high) and must hold only what the kernel did not take,
 * while datagrams appended behind the one ring send in flight would fill
 * it with the socket empty (a callback's 47th 1400-byte datagram was
 * refused); for the same reason a datagram sender that finds datagrams
 * buffered and the token free sends them (in order) before its own, as
 * the driver's flush would. Only the token holder consumes chunks from the
 * head and frees them (after unlocking); appenders touch only the tail.
 * The driver's teardown closes the socket only once the token is free and
 * `dead` is set under the lock, so no send can reach a closed (or reused)
 * descriptor number. get_extra_info does not use the descriptor at all:
 * "peername" and "sockname" were read when the transport was made, and
 * "socket" is the number, given only while not `dead`.
 *
 * TLS. A TLS transport (weft/tls.h's context given to create_connection_tls
 * or create_server) has a TLS layer of net/tls.c (OpenSSL with a socket BIO
 * of recv/send(MSG_DONTWAIT)), used by the driver ALONE: the handshake runs
 * first in the driver (weft_poll waits, before the epoll registration);
 * then the driver calls SSL_read/SSL_write/SSL_shutdown without waiting
 * (weft__tls_step) and waits for readiness the transport's way: on io_uring
 * a POLLIN poll in the receive's slot (rop) instead of a RECV (OpenSSL
 * receives itself), the same POLLOUT (wop); on epoll the same edge
 * registration. `ready & EPOLLIN` says the socket may hold bytes; SSL_read
 * clears it when it wants more (WANT_READ: its recv got EAGAIN). Writes: the
 * driver's own (callbacks) encrypt at once from the caller's memory when
 * nothing is buffered; other tasks' are appended and the driver encrypts
 * them (the SSL object is not shared, so writers never suspend on it). What
 * OpenSSL could not finish sending stays first in the buffer, so that its
 * retry passes the same bytes (OpenSSL's rule). close: the buffer, then
 * close_notify (waiting for POLLOUT if need be), then the close; abort: no
 * close_notify. Rejected: encrypting in each writer under a weft_lock (a
 * write would suspend), and memory BIOs fed by ring RECV/SEND (a second
 * copy of each record and a second buffer per connection; net/tls.c's
 * first comment).
 *
 * TEARDOWN. The driver marks the transport dead (later calls get -EPIPE),
 * cancels its in-flight ring operations and waits for their completions
 * (the buffer rule of io/op.h: the kernel may use the receive buffer and
 * the chunks being sent until then), waits for the token (another task's
 * send(2) in progress), unwatches the descriptor (epoll), closes it
 * (SO_LINGER 0 after abort), frees the
 * buffer, calls connection_lost, and drops its reference. These waits are
 * not cancellable: a cancellation that arrives then stays pending.
 *
 * Rejected: calling callbacks straight from the completion (the scheduler
 * context, as uvloop does): a callback could then run on any worker at any
 * time, and a write from a callback would have to be forwarded; the driver
 * task keeps weft's model (a task per connection) and callbacks may spawn.
 * A background flusher task per transport: a second task per connection,
 * and callbacks (resume_writing) would then run in two tasks.
 */
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <fcntl.h>

#include <weft/protocol.h>
#include <weft/sync.h>
#include <weft/tls.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/runtime.h"
#include "core/spinlock.h"
#include "core/task.h"
#include "core/worker.h"
#include "io/op.h"
#include "io/readiness.h"
#include "io/reactor.h"
#include "net/net.h"

#define RECV_SIZE (16 * 1024) /* as a stream's first read buffer: a receive in flight holds it, idle or not */
#define DGRAM_RECV_SIZE (64 * 1024) /* the largest UDP datagram (65507 bytes over IPv4) fits */
#define DEFAULT_HIGH (64 * 1024)
#define FLUSH_IOVS 16

typedef struct chunk {
  struct chunk *next;
  size_t pos, len;  /* data[pos, len) is not sent yet */
  weft_addr to;     /* a datagram's destination (len 0: the connected peer) */
  char data[];
} chunk;

static size_t chunk_size(const chunk *c) { return sizeof *c + c->len; }

/* A TLS transport's facts for get_extra_info: set by the driver after the
 * handshake, before connection_made (immutable from then on), except
 * `reason`, which the driver writes under the transport's lock when the
 * TLS layer fails. */
typedef struct tls_info {
  const char *cipher, *version; /* OpenSSL's static strings */
  char alpn[256];
  unsigned char *peer_der;      /* the peer's certificate (DER), or NULL */
  size_t peer_len;
  char reason[160];             /* why the TLS layer failed ("" while it did not) */
} tls_info;

enum { DGRAM_ERRS = 16 };

struct weft_transport {
  /* immutable once the driver runs */
  int fd;
  bool dgram;
  bool tcp;             /* a TCP socket: a short read means drained (epoll) */
  bool debug;           /* debug mode: check that callbacks do not suspend */
  weft__task *driver;   /* the driver task (set before connection_made) */
  bool buffered;        /* the protocol receives through get_buffer/buffer_updated */
  weft_protocol p;
  weft_datagram_protocol dp;
  size_t rsize;
  struct weft__tls *tls; /* the TLS layer (net/tls.c), or NULL: plain; only the driver calls it */
  weft_tls_ctx *tls_ctx;
  tls_info *info;        /* TLS only */
  int64_t hs_deadline;   /* the handshake ends by then (and by the context's timeout) */
  weft_addr peer;        /* a connected datagram endpoint's peer (len 0: not connected) */
  /* get_extra_info's "peername"/"sockname", read once when the transport
   * is made (as asyncio's _SelectorTransport does), so that they outlive
   * the descriptor: a held transport answers them after connection_lost
   * too. The error, if the kernel gave one (an unconnected datagram
   * endpoint's peer: -ENOTCONN), is kept instead. */
  weft_addr peername, sockname;
  int peername_err, sockname_err;
  int made_err;          /* the handshake's error (set before `made`) */
  _Atomic unsigned refs;
  weft_event made;      /* set once connection_made has run (create_connection waits) */

  /* the driver's (its worker's thread: the driver and its completions) */
  int backend;
  char *rbuf;
  weft__io_op rop, wop, eop; /* uring receive, uring POLLOUT, the epoll registration */
  weft__io_op sop;      /* uring: the one send in flight (it holds the send token) */
  bool rinflight, winflight, sinflight;
  struct iovec siov[FLUSH_IOVS]; /* the in-flight send's buffers, message and size */
  struct msghdr smsg;
  size_t swant;
  bool rdone;           /* uring: a receive completed, not yet delivered */
  bool rpoll, rpolling; /* uring: the last receive said -EAGAIN: poll for POLLIN next / the poll is in flight */
  int32_t rres;
  char *rdst;           /* where the in-flight/completed receive went */
  struct msghdr rmsg;   /* datagrams (uring) */
  struct iovec riov;
  weft_addr rfrom;
  uint32_t ready;       /* epoll: EPOLLIN/EPOLLOUT seen since the driver last drained; TLS on
                           io_uring: EPOLLIN, a POLLIN came since OpenSSL last wanted to read */
  bool tls_read_wants_out;  /* TLS: SSL_read wanted the socket writable */
  bool tls_write_wants_in;  /* TLS: SSL_write wanted the socket readable */
  bool tls_notified;        /* TLS: close_notify sent (or it never can be) */
  bool watched;         /* epoll: registered */
  bool need_out;        /* a send by the driver met a full socket: wait for POLLOUT */
  bool read_eof;        /* the peer's end of stream was delivered */
  bool writing_paused;  /* pause_writing was called last (not resume) */
  bool eof_sent;

  /* shared: under lock */
  weft__spinlock lock;
  chunk *head, *tail;
  size_t wsize;
  bool token;
  /* buffered datagrams' failed sends, for error_received, in order (one
   * call each, as asyncio's); a sender stops sending buffered datagrams
   * while it is full, until the driver has reported them (DGRAM ERRORS) */
  int dgram_errs[DGRAM_ERRS];
  unsigned dgram_nerr;
  bool kick;
  weft__task *wtask;
  uint32_t wseq;
  bool closing, aborting, eof_req, read_paused, dead;
  int werr;
  size_t high, low;
};

static void sink_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)op;
  (void)res;
  (void)flags;
}
static weft__io_op cancel_sink = {sink_complete};

/* ------------------------------------------------------------ kicking the driver */

typedef struct wakeup {
  weft__task *task;
  uint32_t seq;
} wakeup;

/* Under the lock: note a change for the driver and take its waiter. */
static void kick_locked(weft_transport *t, wakeup *w) {
  t->kick = true;
  if (t->wtask) {
    w->task = t->wtask;
    w->seq = t->wseq;
    t->wtask = NULL;
  }
}

static void fire(wakeup *w) {
  if (w->task) weft__wake(w->task, w->seq, WEFT__WAKE_NORMAL);
}

static void kick(weft_transport *t) {
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  kick_locked(t, &w);
  weft__spin_unlock(&t->lock);
  fire(&w);
}

/* The driver waits until kicked (or cancelled, when cancellable). */
static uint32_t drv_wait(weft_transport *t, bool cancellable) {
  weft__task *self = weft__task_self();
  int64_t seq = weft__wait_prepare(cancellable);
  if (seq < 0) return WEFT__WAKE_CANCEL; /* a pending request, now delivered */
  weft__waiting_on(self, WEFT__WAITING_IO);
  weft__spin_lock(&t->lock);
  if (t->kick) {
    weft__spin_unlock(&t->lock);
    weft__wait_abandon();
    return WEFT__WAKE_NORMAL;
  }
  t->wtask = self;
  t->wseq = (uint32_t)seq;
  weft__spin_unlock(&t->lock);
  uint32_t why = weft__wait_commit((uint32_t)seq);
  if (why != WEFT__WAKE_NORMAL) {
    weft__spin_lock(&t->lock);
    if (t->wtask == self) t->wtask = NULL;
    weft__spin_unlock(&t->lock);
  }
  return why;
}

/* ------------------------------------------------------------ completions (the driver's thread) */

static void rop_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  weft_transport *t = (weft_transport *)((char *)op - offsetof(weft_transport, rop));
  t->rinflight = false;
  if (t->rpolling) { /* the POLLIN after an -EAGAIN (or TLS's readiness poll): receive again */
    t->rpolling = false;
    if (t->tls) {
      t->ready |= EPOLLIN;
      weft__tls_readable(t->tls); /* (the driver is not running: it is pinned to this thread) */
    }
    kick(t);
    return;
  }
  t->rres = res;
  t->rdone = true;
  kick(t);
}

static void wop_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  (void)res;
  weft_transport *t = (weft_transport *)((char *)op - offsetof(weft_transport, wop));
  t->winflight = false;
  t->need_out = false; /* writable (or an error the next send reports) */
  if (t->tls_read_wants_out) { /* SSL_read waited for this */
    t->tls_read_wants_out = false;
    t->ready |= EPOLLIN;
    weft__tls_readable(t->tls);
  }
  kick(t);
}

static void eop_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  weft_transport *t = (weft_transport *)((char *)op - offsetof(weft_transport, eop));
  uint32_t ev = (uint32_t)res;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    t->ready |= EPOLLIN;
    if (t->tls) weft__tls_readable(t->tls); /* (the driver is not running: it is pinned to this thread) */
  }
  if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) t->ready |= EPOLLRDHUP; /* an end is queued behind the data */
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) t->ready |= EPOLLOUT;
  kick(t);
}

/* ------------------------------------------------------------ callbacks */

/* Debug mode: a callback must not suspend; the task's wait sequence number
 * moves on each suspension, so compare it around the call. */
static uint32_t cb_seq(const weft_transport *t) {
  if (!t->debug) return 0;
  weft__task *self = weft__task_self();
  return WEFT__WS_SEQ(weft__load(&self->ws, RELAXED)); /* relaxed: our own word, written by us */
}

static void cb_check(const weft_transport *t, uint32_t before) {
  if (t->debug && cb_seq(t) != before) weft__debug_misuse("a protocol callback suspended (weft/protocol.h)");
}

#define CALLBACK(t, call)        \
  do {                           \
    uint32_t seq_ = cb_seq(t);   \
    call;                        \
    cb_check(t, seq_);           \
  } while (0)

static weft_datagram_transport *as_dgram(weft_transport *t) { return (weft_datagram_transport *)t; }
static weft_transport *from_dgram(weft_datagram_transport *d) { return (weft_transport *)d; }

static void cb_made(weft_transport *t) {
  if (t->dgram) {
    if (t->dp.connection_made) CALLBACK(t, t->dp.connection_made(as_dgram(t), t->dp.user));
  } else if (t->p.connection_made) {
    CALLBACK(t, t->p.connection_made(t, t->p.user));
  }
}

static void cb_lost(weft_transport *t, int err) {
  if (t->dgram) {
    if (t->dp.connection_lost) CALLBACK(t, t->dp.connection_lost(as_dgram(t), err, t->dp.user));
  } else if (t->p.connection_lost) {
    CALLBACK(t, t->p.connection_lost(t, err, t->p.user));
  }
}

static void cb_error(weft_transport *t, int err) {
  if (t->dp.error_received) CALLBACK(t, t->dp.error_received(as_dgram(t), err, t->dp.user));
}

/* Deliver n received bytes (or a datagram) at t->rdst. */
static void cb_data(weft_transport *t, size_t n) {
  if (t->dgram) {
    if (t->dp.datagram_received) CALLBACK(t, t->dp.datagram_received(as_dgram(t), t->rdst, n, &t->rfrom, t->dp.user));
  } else if (t->buffered) {
    CALLBACK(t, t->p.buffer_updated(t, n, t->p.user));
  } else if (t->p.data_received) {
    CALLBACK(t, t->p.data_received(t, t->rdst, n, t->p.user));
  }
}

/* The peer's end of stream: returns true to keep the transport open. */
static bool cb_eof(weft_transport *t) {
  bool keep = false;
  if (t->p.eof_received) CALLBACK(t, keep = t->p.eof_received(t, t->p.user));
  return keep;
}

/* Where the next receive goes: the transport's buffer, or the buffered
 * protocol's memory. 0, or -ENOBUFS (get_buffer gave nothing). */
static int recv_target(weft_transport *t, size_t *len) {
  if (!t->buffered) {
    t->rdst = t->rbuf;
    *len = t->rsize;
    return 0;
  }
  size_t n = 0;
  void *p = NULL;
  CALLBACK(t, p = t->p.get_buffer(t, t->rsize, &n, t->p.user));
  if (!p || n == 0) return -ENOBUFS;
  t->rdst = p;
  *len = n > WEFT_IO_MAX ? WEFT_IO_MAX : n;
  return 0;
}

/* ------------------------------------------------------------ the shared state */

typedef struct snapshot {
  bool closing, aborting, paused;
  bool undecided; /* the buffer is above high and pause_writing not called: no delivery until watermarks() */
  int werr;
} snapshot;

static snapshot look(weft_transport *t) {
  weft__spin_lock(&t->lock);
  t->kick = false;
  snapshot s = {t->closing, t->aborting, t->read_paused,
                !t->dgram && !t->writing_paused && t->wsize > t->high, t->werr};
  weft__spin_unlock(&t->lock);
  return s;
}

/* After a callback: did the state change so that reading must stop (for
 * now: the buffer went above high, pause_writing is due)? */
static bool must_stop_reading(weft_transport *t) {
  weft__spin_lock(&t->lock);
  bool stop = t->closing || t->aborting || t->read_paused || t->werr ||
              (!t->dgram && !t->writing_paused && t->wsize > t->high);
  weft__spin_unlock(&t->lock);
  return stop;
}

static void free_chunks(chunk *c) {
  while (c) {
    chunk *next = c->next;
    weft__free(c, chunk_size(c));
    c = next;
  }
}

/* Under the lock: the error a write gets now, or 0. */
static int write_refused(const weft_transport *t) {
  if (t->werr) return t->werr;
  if (t->closing || t->aborting || t->dead || t->eof_req) return -EPIPE;
  return 0;
}

/* Release the send token; kick the driver if there is something to flush
 * or it waits for the token (teardown). */
static void release_token(weft_transport *t) {
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  t->token = false;
  if (t->head || t->closing || t->aborting || t->dead || t->eof_req || t->werr) kick_locked(t, &w);
  weft__spin_unlock(&t->lock);
  fire(&w);
}

/* A send that never suspends (MSG_DONTWAIT). Returns the bytes sent,
 * -EAGAIN when the socket is full, or another negative errno. */
static ssize_t send_now(int fd, const struct iovec *iov, int iovcnt, const weft_addr *to) {
  for (;;) {
    ssize_t n;
    if (iovcnt == 1 && !to) {
      n = send(fd, iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
      if (to && to->len) {
        m.msg_name = (void *)&to->u;
        m.msg_namelen = to->len;
      }
      n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return -EAGAIN;
    return -errno;
  }
}

/* Under t->lock: queue chunk c (total bytes) at the end of the write buffer. */
static void append_locked(weft_transport *t, chunk *c, size_t total) {
  if (t->tail)
    t->tail->next = c;
  else
    t->head = c;
  t->tail = c;
  t->wsize += total;
}

/* A chunk holding the bytes of iov from offset `skip` on. */
static chunk *chunk_from(const struct iovec *iov, int iovcnt, size_t total, size_t skip, const weft_addr *to) {
  size_t len = total - skip;
  chunk *c = weft__alloc(sizeof *c + len);
  if (!c) return NULL;
  c->next = NULL;
  c->pos = 0;
  c->len = len;
  if (to)
    c->to = *to;
  else
    c->to.len = 0;
  size_t off = 0;
  for (int i = 0; i < iovcnt; i++) {
    size_t l = iov[i].iov_len;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    memcpy(c->data + off, (const char *)iov[i].iov_base + skip, l - skip);
    off += l - skip;
    skip = 0;
  }
  return c;
}

static void consume_locked(weft_transport *t, ssize_t sent, size_t want, chunk **done);

/* DGRAM ERRORS. A buffered datagram whose send fails is dropped and its
 * error queued for the driver's error_received, one call per failure (as
 * asyncio's flush reports each). The queue is bounded: a sender (the
 * token holder: only it sends, one datagram at a time) sends a buffered
 * datagram only while the queue has room for its error, so nothing is
 * lost; when it is full, the datagrams wait in the buffer until the driver
 * has reported (it then flushes again). Under the lock. */
static void dgram_err_locked(weft_transport *t, int err) {
  if (t->dgram_nerr < DGRAM_ERRS) t->dgram_errs[t->dgram_nerr++] = err;
}
static bool dgram_errs_full(weft_transport *t) {
  weft__spin_lock(&t->lock);
  bool full = t->dgram_nerr == DGRAM_ERRS;
  weft__spin_unlock(&t->lock);
  return full;
}

/* A datagram sender holding the send token (any task): send the buffered
 * datagrams from the head while the kernel takes them. Only the token
 * holder takes chunks off the head (appenders touch the tail), so the head
 * chunk stays while it is sent; a failed one is dropped and its error left
 * for the driver's error_received, as the driver's flush does. Returns
 * true when the buffer is empty, false when the socket is full. */
static bool send_buffered_dgrams(weft_transport *t) {
  for (;;) {
    weft__spin_lock(&t->lock);
    chunk *c = t->head;
    weft__spin_unlock(&t->lock);
    if (!c) return true;
    if (dgram_errs_full(t)) return false; /* as if the socket were full: the driver reports, then sends */
    struct iovec iov = {.iov_base = c->data, .iov_len = c->len};
    ssize_t n = send_now(t->fd, &iov, 1, &c->to);
    if (n == -EAGAIN) return false;
    chunk *done = NULL;
    wakeup w = {0};
    weft__spin_lock(&t->lock);
    if (n < 0) {
      dgram_err_locked(t, (int)n);
      kick_locked(t, &w);
    }
    consume_locked(t, 0, 0, &done); /* (a datagram: the head chunk, whole; need_out is not touched) */
    weft__spin_unlock(&t->lock);
    fire(&w);
    free_chunks(done);
  }
}

static int flush(weft_transport *t);
static int tls_write(weft_transport *t, const struct iovec *iov, int iovcnt, size_t total);

/* write/writev/sendto: see THE SEND TOKEN above. */
static int write_iov(weft_transport *t, const struct iovec *iov, int iovcnt, size_t total, const weft_addr *to) {
  if (t->tls) return tls_write(t, iov, iovcnt, total);
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  int rc = write_refused(t);
  if (rc) {
    weft__spin_unlock(&t->lock);
    return rc;
  }
  if (t->backend == WEFT_BACKEND_URING && !t->dgram && weft__task_self() == t->driver) {
    /* the driver itself (a callback) on io_uring: buffer, and let the
     * ring send it with its next batch (flush_ring); not a datagram (THE
     * SEND TOKEN above) */
    weft__spin_unlock(&t->lock);
    chunk *c = chunk_from(iov, iovcnt, total, 0, to);
    if (!c) return -ENOMEM;
    weft__spin_lock(&t->lock);
    rc = write_refused(t); /* a close from another task meanwhile */
    if (!rc && t->dgram && t->wsize + total > t->high) rc = -ENOBUFS;
    if (!rc) append_locked(t, c, total);
    weft__spin_unlock(&t->lock);
    if (rc) {
      weft__free(c, chunk_size(c));
      return rc;
    }
    flush(t); /* a fatal error is latched in werr: the driver ends the connection */
    return 0;
  }
  /* datagrams buffered and nobody sending (two senders met on the token,
   * or the socket was full): send them first, in order, while the kernel
   * takes them, then this one at once. Appending behind them instead left
   * every later sendto buffered until the driver ran, so that busy tasks
   * filled the bounded buffer (-ENOBUFS) with the socket empty. */
  bool drain = t->dgram && !t->token && t->head;
  if (!t->token && (!t->head || drain)) {
    t->token = true;
    weft__spin_unlock(&t->lock);
    if (drain && !send_buffered_dgrams(t)) { /* the socket is full: this one goes behind them */
      chunk *c = chunk_from(iov, iovcnt, total, 0, to);
      weft__spin_lock(&t->lock);
      rc = !c ? -ENOMEM : t->wsize + total > t->high ? -ENOBUFS : 0;
      if (!rc) append_locked(t, c, total);
      t->token = false;
      kick_locked(t, &w); /* the driver waits for room */
      weft__spin_unlock(&t->lock);
      fire(&w);
      if (c && rc) weft__free(c, chunk_size(c));
      return rc;
    }
    ssize_t n = send_now(t->fd, iov, iovcnt, to);
    bool full = n == -EAGAIN;
    if (full) n = 0;
    if (!full && n == (ssize_t)total) {
      release_token(t);
      return 0;
    }
    if (n < 0) {
      if (!t->dgram) { /* the connection is broken: the driver ends it */
        weft__spin_lock(&t->lock);
        if (!t->werr) t->werr = (int)n;
        weft__spin_unlock(&t->lock);
      }
      release_token(t);
      return (int)n;
    }
    /* the kernel took n < total (datagrams: nothing, the socket is full):
     * buffer the rest at the head, still holding the token */
    chunk *c = chunk_from(iov, iovcnt, total, (size_t)n, to);
    weft__spin_lock(&t->lock);
    if (c && t->dgram && t->wsize + total > t->high) { /* datagrams: a bounded buffer */
      rc = -ENOBUFS;
    } else if (!c) {
      rc = -ENOMEM;
      if (!t->dgram && !t->werr) t->werr = -ENOMEM; /* part of the bytes went: the stream is broken */
    } else {
      c->next = t->head;
      t->head = c;
      if (!t->tail) t->tail = c;
      t->wsize += c->len;
    }
    t->token = false;
    kick_locked(t, &w);
    weft__spin_unlock(&t->lock);
    fire(&w);
    if (rc == -ENOBUFS) weft__free(c, chunk_size(c));
    return rc;
  }
  weft__spin_unlock(&t->lock);
  chunk *c = chunk_from(iov, iovcnt, total, 0, to);
  if (!c) return -ENOMEM;
  weft__spin_lock(&t->lock);
  rc = write_refused(t);
  if (!rc && t->dgram && t->wsize + total > t->high) rc = -ENOBUFS;
  if (!rc) {
    append_locked(t, c, total);
    if (!t->token || t->wsize > t->high) kick_locked(t, &w);
  }
  weft__spin_unlock(&t->lock);
  fire(&w);
  if (rc) weft__free(c, chunk_size(c));
  return rc;
}

/* Under the lock, the token holder on the driver's thread (the driver's
 * flush or its send's completion): take the first `sent` of `want` bytes
 * off the head of the buffer (a datagram leaves whole, sent or failed);
 * the chunks to free after unlocking go to *done. A stream that took less
 * than wanted is full: wait for POLLOUT. */
static void consume_locked(weft_transport *t, ssize_t sent, size_t want, chunk **done) {
  if (t->dgram) {
    chunk *c = t->head;
    t->head = c->next;
    if (!t->head) t->tail = NULL;
    c->next = *done;
    *done = c;
    t->wsize -= c->len;
    return;
  }
  size_t left = (size_t)sent;
  while (left) {
    chunk *c = t->head;
    size_t k = c->len - c->pos;
    if (left < k) {
      c->pos += left;
      t->wsize -= left;
      break;
    }
    left -= k;
    t->wsize -= k;
    t->head = c->next;
    if (!t->head) t->tail = NULL;
    c->next = *done;
    *done = c;
  }
  if ((size_t)sent < want) t->need_out = true;
}

/* The driver: take the token and gather the head of the buffer into iov
 * (a datagram: its one chunk and address). Returns the iovec count, 0 when
 * there is nothing to send or the token is taken. */
static int gather(weft_transport *t, struct iovec *iov, size_t *want, weft_addr **to) {
  int n = 0;
  *want = 0;
  *to = NULL;
  weft__spin_lock(&t->lock);
  if (t->token || !t->head) {
    weft__spin_unlock(&t->lock);
    return 0;
  }
  t->token = true;
  for (chunk *c = t->head; c && n < (t->dgram ? 1 : FLUSH_IOVS); c = c->next, n++) {
    iov[n].iov_base = c->data + c->pos;
    iov[n].iov_len = c->len - c->pos;
    *want += iov[n].iov_len;
    if (t->dgram) *to = &c->to; /* the chunk stays until it is consumed */
  }
  weft__spin_unlock(&t->lock);
  return n;
}

/* A send's outcome (the syscall's, or the ring's completion): consume,
 * release the token. Returns 0, or the stream's fatal error (latched in
 * werr). A failed datagram is dropped and its error queued for the driver
 * to report (error_received runs in the driver only: DGRAM ERRORS). */
static int sent_locked_release(weft_transport *t, ssize_t sent, size_t want, bool kick_driver) {
  chunk *done = NULL;
  int fatal = 0;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  /* above high with pause_writing not called: the driver waits for this
   * outcome to decide (watermarks), delivering nothing meanwhile */
  bool undecided = !t->dgram && !t->writing_paused && t->wsize > t->high;
  if (sent == -EAGAIN) {
    t->need_out = true;
  } else if (sent < 0 && !t->dgram) {
    if (!t->werr) t->werr = (int)sent;
    fatal = (int)sent;
  } else {
    if (sent < 0) dgram_err_locked(t, (int)sent);
    consume_locked(t, sent < 0 ? 0 : sent, want, &done);
  }
  t->token = false;
  /* the completion wakes the driver only when it has something to do:
   * more to send (or POLLOUT to arm), an end to act on, an error to
   * report, pause_writing to decide, resume_writing to call */
  if (kick_driver && (t->head || t->need_out || t->closing || t->dead || t->werr || t->dgram_nerr || t->eof_req ||
                      undecided || (t->writing_paused && t->wsize <= t->low)))
    kick_locked(t, &w);
  weft__spin_unlock(&t->lock);
  fire(&w);
  free_chunks(done);
  return fatal;
}

/* io_uring: the in-flight send completed (on the driver's thread). */
static void sop_complete(weft__io_op *op, int32_t res, uint32_t flags) {
  (void)flags;
  weft_transport *t = (weft_transport *)((char *)op - offsetof(weft_transport, sop));
  t->sinflight = false;
  if (res == -ECANCELED) res = 0; /* teardown cancelled it: nothing more goes */
  sent_locked_release(t, res, t->swant, true);
}

/* io_uring: submit the head of the buffer as the transport's one send
 * operation (the token stays taken until its completion). Returns true
 * when submitted, false when there was nothing to send (or no entry: the
 * caller then sends with a system call). */
static bool flush_ring(weft_transport *t) {
  weft_addr *to;
  int n = gather(t, t->siov, &t->swant, &to);
  if (!n) return false;
  struct io_uring_sqe *sqe = weft__reactor_sqe(&weft__worker_self()->reactor, &t->sop);
  if (!sqe) { /* give the token back untouched */
    weft__spin_lock(&t->lock);
    t->token = false;
    weft__spin_unlock(&t->lock);
    return false;
  }
  if (n == 1 && !t->dgram) {
    io_uring_prep_send(sqe, t->fd, t->siov[0].iov_base, t->siov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
  } else {
    t->smsg = (struct msghdr){.msg_iov = t->siov, .msg_iovlen = (size_t)n};
    if (to && to->len) {
      t->smsg.msg_name = &to->u;
      t->smsg.msg_namelen = to->len;
    }
    io_uring_prep_sendmsg(sqe, t->fd, &t->smsg, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  t->sinflight = true;
  return true;
}

/* The driver: send what is buffered, as long as the socket takes it: on
 * io_uring as one send operation at a time (submitted with the ring's next
 * batch: no system call of its own), on epoll (or when the ring has no
 * entry) with non-blocking system calls. Returns 0, or a stream's fatal
 * send error. */
static int tls_flush(weft_transport *t);

static int flush(weft_transport *t) {
  if (t->tls) return tls_flush(t);
  if (t->dgram && dgram_errs_full(t)) return 0; /* the driver reports first (DGRAM ERRORS) */
  if (t->backend == WEFT_BACKEND_URING) {
    if (t->need_out || t->sinflight) return 0;
    if (flush_ring(t)) return 0;
  }
  while (!t->need_out) {
    if (t->dgram && dgram_errs_full(t)) return 0; /* (DGRAM ERRORS) */
    struct iovec iov[FLUSH_IOVS];
    size_t want;
    weft_addr *to;
    int n = gather(t, iov, &want, &to);
    if (!n) return 0;
    ssize_t sent = send_now(t->fd, iov, n, to);
    int rc = sent_locked_release(t, sent, want, false);
    if (rc) return rc;
  }
  return 0;
}

/* ------------------------------------------------------------ TLS (see TLS at the top) */

/* Under the lock: note the outcome of an SSL_write that is not done
 * (-EAGAIN: what the socket must become) or failed (latched in werr). */
static void tls_write_stalled_locked(weft_transport *t, ssize_t n, unsigned want) {
  if (n == -EAGAIN) {
    if (want == POLLOUT)
      t->need_out = true;
    else
      t->tls_write_wants_in = true;
  } else if (!t->werr) {
    t->werr = (int)n;
  }
}

/* write/writev on a TLS transport. The driver (a callback) with nothing
 * buffered encrypts from the caller's memory at once (SSL_write, partial
 * writes: a record at a time) and buffers what the socket did not take;
 * the bytes of a record OpenSSL could not finish sending stay first in the
 * buffer, so that the retry passes them again (weft__tls_step's rule).
 * Any other task only appends (the SSL object is the driver's alone) and
 * kicks the driver. */
static int tls_write(weft_transport *t, const struct iovec *iov, int iovcnt, size_t total) {
  bool driver = weft__task_self() == t->driver;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  int rc = write_refused(t);
  bool direct = !rc && driver && iovcnt == 1 && !t->token && !t->head && !t->need_out;
  if (direct) t->token = true;
  weft__spin_unlock(&t->lock);
  if (rc) return rc;
  size_t sent = 0;
  if (direct) {
    ssize_t n = 0;
    unsigned want = 0;
    while (sent < total) {
      n = weft__tls_step(t->tls, WEFT__TLS_WRITE, (char *)iov[0].iov_base + sent, total - sent, &want);
      if (n < 0) break;
      sent += (size_t)n;
    }
    chunk *c = n < 0 && n != -EAGAIN ? NULL : sent < total ? chunk_from(iov, iovcnt, total, sent, NULL) : NULL;
    weft__spin_lock(&t->lock);
    if (n < 0) tls_write_stalled_locked(t, n, want);
    if (c) { /* the rest at the head: writes from other tasks were appended behind it meanwhile */
      c->next = t->head;
      t->head = c;
      if (!t->tail) t->tail = c;
      t->wsize += c->len;
    } else if (sent < total && n == -EAGAIN) {
      n = -ENOMEM;
      if (!t->werr) t->werr = -ENOMEM; /* part of the bytes went: the stream is broken */
    }
    t->token = false;
    weft__spin_unlock(&t->lock);
    return n < 0 && n != -EAGAIN ? (int)n : 0;
  }
  chunk *c = chunk_from(iov, iovcnt, total, 0, NULL);
  if (!c) return -ENOMEM;
  weft__spin_lock(&t->lock);
  rc = write_refused(t);
  if (!rc) {
    append_locked(t, c, total);
    kick_locked(t, &w); /* (the driver itself: it looks again before it waits) */
  }
  weft__spin_unlock(&t->lock);
  fire(&w);
  if (rc) weft__free(c, chunk_size(c));
  return rc;
}

/* The driver: encrypt and send what is buffered, a chunk at a time (a
 * record at a time), until the socket is full. 0 or the fatal error. */
static int tls_flush(weft_transport *t) {
  t->tls_write_wants_in = false; /* try again: a read may have happened since */
  while (!t->need_out && !t->tls_write_wants_in) {
    weft__spin_lock(&t->lock);
    chunk *c = t->token ? NULL : t->head;
    if (c) t->token = true;
    weft__spin_unlock(&t->lock);
    if (!c) return 0;
    unsigned want = 0;
    ssize_t n = weft__tls_step(t->tls, WEFT__TLS_WRITE, c->data + c->pos, c->len - c->pos, &want);
    chunk *done = NULL;
    weft__spin_lock(&t->lock);
    if (n < 0)
      tls_write_stalled_locked(t, n, want);
    else
      consume_locked(t, n, (size_t)n, &done); /* a partial write is a record, not a full socket */
    t->token = false;
    int fatal = n < 0 && n != -EAGAIN ? (int)n : 0;
    weft__spin_unlock(&t->lock);
    free_chunks(done);
    if (fatal) return fatal;
  }
  return 0;
}

/* The driver: send close_notify once (nothing after an abort or when the
 * layer is dead: weft__tls_step then does nothing). true when done, false
 * when it waits for POLLOUT. */
static bool tls_notify(weft_transport *t) {
  if (t->tls_notified) return true;
  unsigned want = 0;
  ssize_t r = weft__tls_step(t->tls, WEFT__TLS_SHUTDOWN, NULL, 0, &want);
  if (r == -EAGAIN && want == POLLOUT) {
    t->need_out = true;
    return false;
  }
  t->tls_notified = true; /* sent, or it cannot be: the close goes on */
  return true;
}

/* The driver, after the handshake: what get_extra_info gives. */
static int tls_fill_info(weft_transport *t) {
  tls_info *i = t->info;
  i->cipher = weft__tls_cipher(t->tls);
  i->version = weft__tls_version(t->tls);
  if (weft__tls_alpn(t->tls, i->alpn, sizeof i->alpn) < 0) i->alpn[0] = 0;
  return weft__tls_peer_der(t->tls, &i->peer_der, &i->peer_len);
}

/* The driver: keep the TLS layer's reason of failure for get_extra_info. */
static void tls_keep_reason(weft_transport *t) {
  if (!t->tls) return;
  const char *why = weft__tls_reason(t->tls);
  size_t n = strnlen(why, sizeof t->info->reason - 1);
  weft__spin_lock(&t->lock);
  memcpy(t->info->reason, why, n);
  t->info->reason[n] = 0;
  weft__spin_unlock(&t->lock);
}

/* The driver: report the failed sends of buffered datagrams (DGRAM
 * ERRORS), in order. Returns whether it reported any (the queue had room
 * again: the caller flushes again). */
static bool report_dgram_errors(weft_transport *t) {
  if (!t->dgram) return false;
  int errs[DGRAM_ERRS];
  weft__spin_lock(&t->lock);
  unsigned n = t->dgram_nerr;
  memcpy(errs, t->dgram_errs, n * sizeof errs[0]);
  t->dgram_nerr = 0;
  weft__spin_unlock(&t->lock);
  for (unsigned i = 0; i < n; i++) cb_error(t, errs[i]);
  return n > 0;
}

/* The driver: call pause_writing/resume_writing at the watermarks.
 * Returns true when it called one (the state the loop looked at moved).
 *
 * pause_writing means that the kernel did not take what was written
 * (asyncio's write() sends first and buffers only the rest). On io_uring a
 * callback's write goes out as the ring send in flight, submitted with the
 * worker's next batch, and its bytes stay in wsize until the completion:
 * counting them would pause (and at once resume) for a large write the
 * kernel takes whole. So the pause waits for that completion (which kicks
 * the driver, sent_locked_release) before counting the in-flight bytes: a
 * short send leaves the rest in wsize and need_out set, and the next call
 * pauses. Meanwhile the loop delivers nothing (snapshot.undecided), so no
 * callback starts above high without pause_writing, as before. Resume
 * counts every byte not yet sent, in flight or not. */
static bool watermarks(weft_transport *t) {
  if (t->dgram) return false;
  weft__spin_lock(&t->lock);
  size_t size = t->wsize, high = t->high, low = t->low;
  weft__spin_unlock(&t->lock);
  size_t inflight = t->sinflight ? t->swant : 0; /* the driver's own fields: its thread runs the completion */
  if (!t->writing_paused && size - (inflight < size ? inflight : size) > high) {
    t->writing_paused = true;
    if (t->p.pause_writing) CALLBACK(t, t->p.pause_writing(t, t->p.user));
    return true;
  }
  if (t->writing_paused && size <= low) {
    t->writing_paused = false;
    if (t->p.resume_writing) CALLBACK(t, t->p.resume_writing(t, t->p.user));
    return true;
  }
  return false;
}

/* ------------------------------------------------------------ receiving */

enum { READ_IDLE = 0, READ_AGAIN = 1 }; /* or a fatal negative errno */

/* The end of the peer's stream (delivered while not paused). */
static int on_eof(weft_transport *t) {
  t->read_eof = true;
  if (!cb_eof(t)) weft_transport_close(t);
  return READ_AGAIN;
}

static bool fatal_dgram_error(int e) { return e == -EBADF || e == -ENOTSOCK || e == -EINVAL || e == -EFAULT; }

/* Deliver one receive's result. READ_IDLE/READ_AGAIN or a fatal error. */
static int deliver(weft_transport *t, ssize_t n) {
  if (t->dgram) {
    if (n >= 0) {
      cb_data(t, (size_t)n);
    } else if (n != -ECANCELED && n != -EAGAIN) {
      if (fatal_dgram_error((int)n)) return (int)n;
      cb_error(t, (int)n);
    }
    return READ_AGAIN;
  }
  if (n > 0) {
    cb_data(t, (size_t)n);
    return READ_AGAIN;
  }
  if (n == 0) return on_eof(t);
  if (n == -ECANCELED || n == -EAGAIN || n == -EINTR) return READ_AGAIN;
  return (int)n; /* ECONNRESET, ...: the connection is over */
}

/* io_uring: deliver a completed receive (reading is not paused). */
static int uring_read(weft_transport *t) {
  if (!t->rdone) return READ_IDLE;
  t->rdone = false;
  if (t->rres == -EAGAIN) { /* the ring may say so on a non-blocking socket: poll first */
    t->rpoll = true;
    return READ_IDLE;
  }
  if (t->dgram) t->rfrom.len = t->rres >= 0 ? t->rmsg.msg_namelen : 0;
  return deliver(t, t->rres);
}

/* epoll: receive until drained, or until a callback changed the state. */
static int epoll_read(weft_transport *t) {
  while (t->ready & EPOLLIN) {
    size_t len;
    int rc = recv_target(t, &len);
    if (rc) return rc;
    ssize_t n;
    if (t->dgram) {
      t->riov = (struct iovec){.iov_base = t->rdst, .iov_len = len};
      memset(&t->rfrom, 0, sizeof t->rfrom);
      t->rmsg = (struct msghdr){.msg_name = &t->rfrom.u, .msg_namelen = sizeof t->rfrom.u, .msg_iov = &t->riov,
                                .msg_iovlen = 1};
      n = recvmsg(t->fd, &t->rmsg, MSG_DONTWAIT);
      if (n >= 0) t->rfrom.len = t->rmsg.msg_namelen;
    } else {
      n = recv(t->fd, t->rdst, len, MSG_DONTWAIT);
    }
    if (n < 0) n = -errno;
    if (n == -EAGAIN || n == -EWOULDBLOCK) {
      t->ready &= ~(uint32_t)EPOLLIN;
      return READ_IDLE;
    }
    if (n == -EINTR) continue;
    if (n > 0 && t->tcp && (size_t)n < len && !(t->ready & EPOLLRDHUP))
      t->ready &= ~(uint32_t)EPOLLIN; /* drained: new data or an end makes a new edge */
    rc = deliver(t, n);
    if (rc < 0) return rc;
    if (t->read_eof) return READ_AGAIN;
    if (must_stop_reading(t)) return READ_AGAIN;
  }
  return READ_IDLE;
}

/* TLS, both backends: decrypt and deliver while the socket may hold bytes
 * (ready & EPOLLIN: an edge or a POLLIN since OpenSSL last wanted to read)
 * or a callback changed the state. OpenSSL reads a record at a time with
 * recv(2) (its BIO, net/tls.c); WANT_READ means the socket is drained. */
static int tls_read(weft_transport *t) {
  while (t->ready & EPOLLIN) {
    size_t len;
    int rc = recv_target(t, &len);
    if (rc) return rc;
    if (t->ready & EPOLLRDHUP) /* epoll: the edge said an end is queued behind the data: a short
                                  read does not mean drained, read on until the end */
      weft__tls_readable(t->tls);
    unsigned want = 0;
    ssize_t n = weft__tls_step(t->tls, WEFT__TLS_READ, t->rdst, len, &want);
    if (n == -EAGAIN) {
      t->ready &= ~(uint32_t)EPOLLIN;
      if (want == POLLOUT) { /* a record OpenSSL must send first (a TLS 1.3 key update's answer) */
        t->tls_read_wants_out = true;
        t->need_out = true;
      }
      return READ_IDLE;
    }
    rc = deliver(t, n);
    if (rc < 0) return rc;
    if (t->read_eof) return READ_AGAIN;
    if (must_stop_reading(t)) return READ_AGAIN;
  }
  return READ_IDLE;
}

/* io_uring: submit what the driver waits for: a receive (unless paused,
 * closing, at end of stream, or one is in flight or undelivered) and a
 * POLLOUT when a flush met a full socket. 0 or a fatal error. */
static int uring_arm(weft_transport *t, const snapshot *s) {
  weft__reactor *r = &weft__worker_self()->reactor;
  bool reading = !s->paused && !s->closing && !t->read_eof;
  if (t->tls && !t->rinflight && ((reading && !(t->ready & EPOLLIN)) || t->tls_write_wants_in)) {
    struct io_uring_sqe *sqe = weft__reactor_sqe(r, &t->rop); /* TLS: readiness only (OpenSSL receives) */
    if (!sqe) return -EAGAIN;
    io_uring_prep_poll_add(sqe, t->fd, POLLIN);
    t->rpolling = true;
    t->rinflight = true;
  }
  if (!t->tls && !t->rinflight && !t->rdone && reading && t->rpoll) {
    struct io_uring_sqe *sqe = weft__reactor_sqe(r, &t->rop);
    if (!sqe) return -EAGAIN;
    io_uring_prep_poll_add(sqe, t->fd, POLLIN);
    t->rpoll = false;
    t->rpolling = true;
    t->rinflight = true;
  }
  if (!t->tls && !t->rinflight && !t->rdone && reading) {
    size_t len;
    int rc = recv_target(t, &len);
    if (rc) return rc;
    struct io_uring_sqe *sqe = weft__reactor_sqe(r, &t->rop);
    if (!sqe) return -EAGAIN;
    if (t->dgram) {
      t->riov = (struct iovec){.iov_base = t->rdst, .iov_len = len};
      memset(&t->rfrom, 0, sizeof t->rfrom);
      t->rmsg = (struct msghdr){.msg_name = &t->rfrom.u, .msg_namelen = sizeof t->rfrom.u, .msg_iov = &t->riov,
                                .msg_iovlen = 1};
      io_uring_prep_recvmsg(sqe, t->fd, &t->rmsg, 0);
    } else {
      io_uring_prep_recv(sqe, t->fd, t->rdst, len, 0);
    }
    t->rinflight = true;
  }
  if (t->need_out && !t->winflight) {
    struct io_uring_sqe *sqe = weft__reactor_sqe(r, &t->wop);
    if (!sqe) return -EAGAIN;
    io_uring_prep_poll_add(sqe, t->fd, POLLOUT);
    t->winflight = true;
  }
  return 0;
}

/* ------------------------------------------------------------ the driver */

static void transport_free(weft_transport *t) {
  weft_event_destroy(&t->made);
  if (t->rbuf) weft__free(t->rbuf, t->rsize);
  weft__tls_free(t->tls);
  if (t->info) {
    if (t->info->peer_der) weft__free(t->info->peer_der, t->info->peer_len);
    weft__free(t->info, sizeof *t->info);
  }
  weft__free(t, sizeof *t);
}

static void teardown(weft_transport *t, int err) {
  weft__spin_lock(&t->lock);
  t->closing = true;
  t->dead = true; /* from now on nobody takes the token or uses the descriptor */
  /* The waits below wait for a kick; one left set since the loop's last
   * look (a callback's close, another task's call, a pending cancel)
   * would make every drv_wait return at once: a spin that never yields,
   * so the worker (ours: we are pinned) never reaps the completions
   * waited for. Each wait clears it under the lock before checking what
   * it waits for (a completion runs only while we wait; another task
   * releases the token and kicks under this lock). */
  t->kick = false;
  weft__spin_unlock(&t->lock);
  if (t->backend == WEFT_BACKEND_URING) { /* cancel our operations and wait for their completions */
    weft__reactor *r = &weft__worker_self()->reactor;
    weft__io_op *ops[3] = {t->rinflight ? &t->rop : NULL, t->winflight ? &t->wop : NULL,
                           t->sinflight ? &t->sop : NULL};
    for (int i = 0; i < 3; i++) {
      if (!ops[i]) continue;
      struct io_uring_sqe *sqe = weft__reactor_sqe(r, &cancel_sink);
      if (sqe)
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)ops[i], 0);
      else
        shutdown(t->fd, SHUT_RDWR); /* no entry: end the operations another way */
    }
    while (t->rinflight || t->winflight || t->sinflight) {
      drv_wait(t, false);
      weft__spin_lock(&t->lock);
      t->kick = false; /* (the completions run on this thread: none between here and the check) */
      weft__spin_unlock(&t->lock);
    }
  } else if (t->watched) {
    weft__epoll_unwatch(&weft__worker_self()->reactor, t->fd);
  }
  chunk *drop;
  for (;;) { /* wait until no other task sends */
    weft__spin_lock(&t->lock);
    t->kick = false; /* a release after this check kicks again (release_token: under the lock) */
    bool busy = t->token;
    if (!busy) {
      drop = t->head;
      t->head = t->tail = NULL;
      t->wsize = 0;
    }
    weft__spin_unlock(&t->lock);
    if (!busy) break;
    drv_wait(t, false);
  }
  bool aborting;
  weft__spin_lock(&t->lock);
  aborting = t->aborting;
  weft__spin_unlock(&t->lock);
  if (aborting && !t->dgram) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(t->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  close(t->fd);
  free_chunks(drop);
  tls_keep_reason(t);
  cb_lost(t, err);
}

/* The driver's loop (see the top of the file). Returns after teardown;
 * drops the driver's reference. */
static void drive(weft_transport *t) {
  weft_pin();
  t->backend = weft__io_backend();
  t->driver = weft__task_self();
  int err = 0;
  if (t->tls) { /* the handshake first (it waits with weft_poll: before the epoll registration below) */
    err = weft__tls_handshake(t->tls, t->fd, t->tls_ctx, t->hs_deadline);
    if (!err) err = tls_fill_info(t);
    t->made_err = err;
    t->ready |= EPOLLIN; /* OpenSSL tries a read first */
  }
  if (!err && t->backend == WEFT_BACKEND_EPOLL) {
    /* a registration of io/readiness.c's (connect's wait, the handshake's
     * polls) would clash with the driver's own */
    weft__fd_forget(t->fd);
    err = weft__epoll_watch_edge(&weft__worker_self()->reactor, t->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP, &t->eop);
    t->watched = err == 0;
  }
  if (!t->made_err) cb_made(t); /* (a failed handshake: connection_lost alone, weft/protocol.h) */
  weft_event_set(&t->made);
  while (!err) {
    snapshot s = look(t);
    if (s.aborting) break;
    if (s.werr) {
      err = s.werr;
      break;
    }
    /* above high with pause_writing not called: decide first, before
     * delivering or sending more, unless a ring send is in flight (its
     * completion kicks us: watermarks()); so the wait for it is one send's
     * and not a run of them that other tasks' writes keep going. Then look
     * again whatever watermarks did: another task's send may have brought
     * the size under high since look(), and this snapshot's `undecided`
     * would skip a delivery that nothing kicks us for again */
    if (s.undecided && !t->sinflight) {
      watermarks(t);
      continue;
    }
    if (t->backend == WEFT_BACKEND_EPOLL && (t->ready & EPOLLOUT)) {
      t->need_out = false;
      t->ready &= ~(uint32_t)EPOLLOUT; /* a flush that fills the socket waits for the next edge */
      if (t->tls_read_wants_out) { /* SSL_read waited for this */
        t->tls_read_wants_out = false;
        t->ready |= EPOLLIN;
        weft__tls_readable(t->tls);
      }
    }
    if (!s.closing && !s.paused && !t->read_eof && !s.undecided) {
      int rc = t->tls ? tls_read(t) : t->backend == WEFT_BACKEND_URING ? uring_read(t) : epoll_read(t);
      if (rc < 0) {
        err = rc;
        break;
      }
      if (rc == READ_AGAIN) { /* a callback ran: pause_writing if it is due, look again */
        watermarks(t);
        continue;
      }
    }
    int rc = flush(t);
    if (rc < 0) {
      err = rc;
      break;
    }
    if (report_dgram_errors(t)) continue; /* the sends it held back go now */
    if (watermarks(t)) continue; /* pause_writing may end an `undecided`: deliver what waits */
    weft__spin_lock(&t->lock);
    bool empty = !t->head && !t->token;
    bool eof_now = t->eof_req && empty && !t->eof_sent;
    weft__spin_unlock(&t->lock);
    if (eof_now && (!t->tls || tls_notify(t))) { /* TLS: close_notify first */
      t->eof_sent = true;
      shutdown(t->fd, SHUT_WR);
    }
    if (s.closing && empty && (!t->tls || tls_notify(t))) break;
    if (t->backend == WEFT_BACKEND_URING) {
      rc = uring_arm(t, &s);
      if (rc < 0) {
        err = rc;
        break;
      }
    }
    if (drv_wait(t, true) == WEFT__WAKE_CANCEL) {
      err = -ECANCELED;
      break;
    }
  }
  teardown(t, err);
  weft_event_set(&t->made); /* a connection that failed before connection_made still releases the creator */
  weft_unpin();
  weft_transport_release(t);
}

static int check_protocol(const weft_protocol *p) {
  if (!p) return -EINVAL;
  if (!p->get_buffer != !p->buffer_updated) return -EINVAL;
  if (p->get_buffer && p->data_received) return -EINVAL;
  return 0;
}

/* A transport over fd (which it owns from now on, also on error), with one
 * reference (the driver's). */
static int transport_new(weft_transport **out, int fd, bool dgram, const weft_protocol *p,
                         const weft_datagram_protocol *dp, size_t rsize) {
  weft_transport *t = weft__zalloc(sizeof *t);
  if (!t) {
    close(fd);
    return -ENOMEM;
  }
  t->fd = fd;
  t->dgram = dgram;
  if (p) t->p = *p;
  if (dp) t->dp = *dp;
  t->buffered = !dgram && p->get_buffer;
  t->rsize = rsize ? rsize : RECV_SIZE;
  if (dgram && t->rsize < DGRAM_RECV_SIZE) t->rsize = DGRAM_RECV_SIZE; /* a whole datagram, never truncated */
  if (!t->buffered) {
    t->rbuf = weft__alloc(t->rsize);
    if (!t->rbuf) {
      weft__free(t, sizeof *t);
      close(fd);
      return -ENOMEM;
    }
  }
  int type = 0, proto = 0;
  socklen_t len = sizeof type;
  getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
  len = sizeof proto;
  getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len);
  t->tcp = type == SOCK_STREAM && proto == IPPROTO_TCP;
  t->peername_err = weft_peername(fd, &t->peername);
  t->sockname_err = weft_sockname(fd, &t->sockname);
  t->debug = weft__debug_on();
  t->sop.complete = sop_complete;
  t->rop.complete = rop_complete;
  t->wop.complete = wop_complete;
  t->eop.complete = eop_complete;
  weft__spin_init(&t->lock);
  t->high = DEFAULT_HIGH;
  t->low = DEFAULT_HIGH / 4;
  weft_event_init(&t->made);
  weft__store(&t->refs, 1, RELAXED); /* not shared yet */
  *out = t;
  return 0;
}

/* Make t a TLS transport (before its driver starts): client (server_name
 * as weft__tls_new's) or server. On error t is freed (its socket closed). */
static int transport_tls(weft_transport *t, weft_tls_ctx *ctx, bool server, const char *server_name,
                         int64_t deadline) {
  int rc = -ENOMEM;
  t->info = weft__zalloc(sizeof *t->info);
  if (t->info) rc = weft__tls_new(&t->tls, t->fd, ctx, server, server_name);
  if (rc) {
    close(t->fd);
    transport_free(t);
    return rc;
  }
  t->tls_ctx = ctx;
  t->hs_deadline = deadline;
  return 0;
}

static int driver_main(void *arg) {
  drive(arg);
  return 0;
}

/* Start a driver task for t (holding one more reference for the caller
 * when out is not NULL), wait for connection_made. */
static int start_driver(weft_transport *t, weft_transport **out) {
  weft_transport_hold(t); /* the caller's, while it waits */
  weft_spawn_opts so = {.name = "weft-transport", .detached = true};
  weft_task h = weft_spawn_ex(driver_main, t, &so);
  if (!h.rec) {
    close(t->fd);
    transport_free(t);
    return -ENOMEM;
  }
  int rc = weft_event_wait(&t->made);
  if (rc == 0) rc = t->made_err; /* the handshake's error (written before `made` was set) */
  if (rc == -ECANCELED && t->tls) {
    /* our wait was cancelled, maybe during the handshake: it waits with
     * weft_poll, which abort's kick does not reach, so it would go on to
     * the handshake timeout (and call connection_made if it got through).
     * Cancel the driver: the handshake then ends with connection_lost
     * (-ECANCELED) alone (weft/protocol.h). Its handle is detached: a
     * driver that has ended already answers -ESRCH (core/task.c's ref). */
    weft_cancel(h);
  }
  if (rc < 0 || !out) {
    if (rc < 0) weft_transport_abort(t);
    weft_transport_release(t);
    return rc < 0 ? rc : 0;
  }
  *out = t;
  return 0;
}

static int connect_fd(int fd, const weft_protocol *p, weft_tls_ctx *tls, const char *server_name, int64_t deadline,
                      weft_transport **out) {
  weft_transport *t;
  int rc = transport_new(&t, fd, false, p, NULL, 0);
  if (!rc && tls) rc = transport_tls(t, tls, false, server_name, deadline);
  if (rc) return rc;
  return start_driver(t, out);
}

int weft_create_connection(const char *host, uint16_t port, const weft_protocol *p, int64_t deadline,
                           weft_transport **out) {
  int rc = check_protocol(p);
  if (rc) return rc;
  if (!weft__task_self()) return -EINVAL;
  int fd = weft_connect_host(host, port, deadline, NULL);
  if (fd < 0) return fd;
  return connect_fd(fd, p, NULL, NULL, deadline, out);
}

int weft_create_connection_tls(const char *host, uint16_t port, const weft_protocol *p, weft_tls_ctx *ctx,
                               const char *server_name, int64_t deadline, weft_transport **out) {
  int rc = check_protocol(p);
  if (rc) return rc;
  if (!host || !ctx || weft__tls_ctx_is_server(ctx) || !weft__task_self()) return -EINVAL;
  int fd = weft_connect_host(host, port, deadline, NULL);
  if (fd < 0) return fd;
  return connect_fd(fd, p, ctx, server_name ? server_name : host, deadline, out);
}

int weft_create_unix_connection(const char *path, const weft_protocol *p, int64_t deadline, weft_transport **out) {
  int rc = check_protocol(p);
  if (rc) return rc;
  if (!weft__task_self()) return -EINVAL;
  weft_addr a;
  rc = weft_addr_unix(&a, path);
  if (rc) return rc;
  int fd = weft_connect_addr(&a, deadline);
  if (fd < 0) return fd;
  return connect_fd(fd, p, NULL, NULL, deadline, out);
}

int weft_connect_accepted_socket(int fd, const weft_protocol *p, weft_transport **out) {
  if (fd < 0) return -EBADF;
  int rc = check_protocol(p);
  if (!rc && !weft__task_self()) rc = -EINVAL;
  int type = 0;
  socklen_t len = sizeof type;
  if (!rc && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) rc = -errno;
  if (!rc && type != SOCK_STREAM) rc = -EINVAL;
  /* a listening socket, or one never connected: no connection (its reads
   * would end it at once with -ENOTCONN, after connection_made) */
  int acc = 0;
  len = sizeof acc;
  if (!rc && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc) rc = -EINVAL;
  weft_addr peer;
  if (!rc && weft_peername(fd, &peer) == -ENOTCONN) rc = -ENOTCONN;
  int fl = rc ? 0 : fcntl(fd, F_GETFL);
  if (!rc && (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) rc = -errno;
  if (rc) {
    close(fd);
    return rc;
  }
  return connect_fd(fd, p, NULL, NULL, WEFT__NO_DEADLINE, out);
}

/* ------------------------------------------------------------ servers */

static void serve_conn(int fd, const weft_server_opts *opts, weft__fnptr ctx, void *arg) {
  weft_protocol_factory factory = (weft_protocol_factory)ctx;
  weft_protocol p = {0};
  if (factory(&p, arg) < 0 || check_protocol(&p) < 0) {
    close(fd);
    return;
  }
  weft_transport *t;
  if (transport_new(&t, fd, false, &p, NULL, opts->limit) < 0) return;
  if (opts->tls && transport_tls(t, opts->tls, true, NULL, WEFT__NO_DEADLINE) < 0) return;
  drive(t);
}

static int create_server(weft_server **out, const weft_addr *a, weft_protocol_factory factory, void *arg,
                         const weft_server_opts *opts) {
  return weft__start_server_fd(out, a, serve_conn, (weft__fnptr)factory, arg, opts);
}

int weft_create_server(weft_server **out, const char *host, uint16_t port, weft_protocol_factory factory, void *arg,
                       const weft_server_opts *opts) {
  if (!out || !factory) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  weft_addr a;
  int n = weft__server_resolve(host, port, &a);
  if (n < 0) return n;
  return create_server(out, &a, factory, arg, opts);
}

int weft_create_unix_server(weft_server **out, const char *path, weft_protocol_factory factory, void *arg,
                            const weft_server_opts *opts) {
  if (!out || !factory) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  weft_addr a;
  int rc = weft_addr_unix(&a, path);
  if (rc) return rc;
  weft__unix_remove_stale(&a);
  return create_server(out, &a, factory, arg, opts);
}

/* ------------------------------------------------------------ the transport's calls */

int weft_transport_write(weft_transport *t, const void *data, size_t len) {
  if (!t || (!data && len) || len > (size_t)SSIZE_MAX || t->dgram) return -EINVAL;
  if (!len) return 0;
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  return write_iov(t, &iov, 1, len, NULL);
}

int weft_transport_writev(weft_transport *t, const struct iovec *iov, int iovcnt) {
  if (!t || t->dgram || iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt)) return -EINVAL;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (!iov[i].iov_base && iov[i].iov_len) return -EINVAL;
    if (iov[i].iov_len > (size_t)SSIZE_MAX - total) return -EINVAL;
    total += iov[i].iov_len;
  }
  if (!total) return 0;
  return write_iov(t, iov, iovcnt, total, NULL);
}

int weft_transport_write_eof(weft_transport *t) {
  if (!t || t->dgram) return -EINVAL;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  int rc = t->closing || t->aborting || t->dead ? -EPIPE : 0;
  if (!rc && !t->eof_req) {
    t->eof_req = true;
    kick_locked(t, &w);
  }
  weft__spin_unlock(&t->lock);
  fire(&w);
  return rc;
}

bool weft_transport_can_write_eof(const weft_transport *t) { return t && !t->dgram; }

void weft_transport_close(weft_transport *t) {
  if (!t) return;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  if (!t->closing) {
    t->closing = true;
    kick_locked(t, &w);
  }
  weft__spin_unlock(&t->lock);
  fire(&w);
}

void weft_transport_abort(weft_transport *t) {
  if (!t) return;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  if (!t->aborting && !t->dead) {
    t->aborting = true;
    t->closing = true;
    kick_locked(t, &w);
  }
  weft__spin_unlock(&t->lock);
  fire(&w);
}

bool weft_transport_is_closing(weft_transport *t) {
  if (!t) return true;
  weft__spin_lock(&t->lock);
  bool c = t->closing || t->dead || t->aborting || t->werr; /* a send error ends it too (asyncio's _fatal_error) */
  weft__spin_unlock(&t->lock);
  return c;
}

/* A TLS fact into out[len]: its length (a string's without the NUL it is
 * given), or -EINVAL (too small), -ENOENT (not a TLS name, or no TLS). */
static int tls_extra_info(weft_transport *t, const char *name, void *out, size_t len) {
  tls_info *i = t->info;
  if (!i) return -ENOENT;
  if (!strcmp(name, "peercert")) {
    if (len < i->peer_len) return -EINVAL;
    if (i->peer_len) memcpy(out, i->peer_der, i->peer_len);
    return (int)i->peer_len;
  }
  char reason[sizeof i->reason];
  const char *str;
  if (!strcmp(name, "cipher")) {
    str = i->cipher ? i->cipher : "";
  } else if (!strcmp(name, "tls_version")) {
    str = i->version ? i->version : "";
  } else if (!strcmp(name, "alpn")) {
    str = i->alpn;
  } else if (!strcmp(name, "tls_error")) {
    weft__spin_lock(&t->lock);
    memcpy(reason, i->reason, sizeof reason);
    weft__spin_unlock(&t->lock);
    str = reason;
  } else {
    return -ENOENT;
  }
  size_t n = strlen(str);
  if (len < n + 1) return -EINVAL;
  memcpy(out, str, n + 1);
  return (int)n;
}

int weft_transport_get_extra_info(weft_transport *t, const char *name, void *out, size_t len) {
  if (!t || !name || !out) return -EINVAL;
  int which;
  if (!strcmp(name, "peername"))
    which = 0;
  else if (!strcmp(name, "sockname"))
    which = 1;
  else if (!strcmp(name, "socket"))
    which = 2;
  else
    return tls_extra_info(t, name, out, len);
  if (len < (which == 2 ? sizeof(int) : sizeof(weft_addr))) return -EINVAL;
  if (which == 0) { /* immutable since the transport was made: valid while the handle is */
    memcpy(out, &t->peername, sizeof t->peername);
    return t->peername_err;
  }
  if (which == 1) {
    memcpy(out, &t->sockname, sizeof t->sockname);
    return t->sockname_err;
  }
  weft__spin_lock(&t->lock);
  bool dead = t->dead; /* the descriptor is closed (its number maybe reused) once dead */
  weft__spin_unlock(&t->lock);
  if (dead) return -EBADF;
  memcpy(out, &t->fd, sizeof(int));
  return 0;
}

static int set_paused(weft_transport *t, bool paused) {
  if (!t || t->dgram) return -EINVAL;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  int rc = t->closing || t->dead ? -EPIPE : 0;
  if (!rc && t->read_paused != paused) {
    t->read_paused = paused;
    if (!paused) kick_locked(t, &w);
  }
  weft__spin_unlock(&t->lock);
  fire(&w);
  return rc;
}

int weft_transport_pause_reading(weft_transport *t) { return set_paused(t, true); }
int weft_transport_resume_reading(weft_transport *t) { return set_paused(t, false); }

bool weft_transport_is_reading(weft_transport *t) {
  if (!t) return false;
  weft__spin_lock(&t->lock);
  bool r = !t->read_paused && !t->closing && !t->dead;
  weft__spin_unlock(&t->lock);
  return r;
}

int weft_transport_set_write_buffer_limits(weft_transport *t, size_t high, size_t low) {
  if (!t) return -EINVAL;
  /* asyncio's defaults: high 64 KiB, or 4 * low when only low is given
   * (saturating: a high of SIZE_MAX never pauses); low high / 4 */
  if (high == WEFT_TRANSPORT_DEFAULT)
    high = low == WEFT_TRANSPORT_DEFAULT ? DEFAULT_HIGH : low > SIZE_MAX / 4 ? SIZE_MAX : 4 * low;
  if (low == WEFT_TRANSPORT_DEFAULT) low = high / 4;
  if (low > high) return -EINVAL;
  wakeup w = {0};
  weft__spin_lock(&t->lock);
  t->high = high;
  t->low = low;
  kick_locked(t, &w);
  weft__spin_unlock(&t->lock);
  fire(&w);
  return 0;
}

void weft_transport_get_write_buffer_limits(weft_transport *t, size_t *high, size_t *low) {
  if (!t) return;
  weft__spin_lock(&t->lock);
  if (high) *high = t->high;
  if (low) *low = t->low;
  weft__spin_unlock(&t->lock);
}

size_t weft_transport_get_write_buffer_size(weft_transport *t) {
  if (!t) return 0;
  weft__spin_lock(&t->lock);
  size_t n = t->wsize;
  weft__spin_unlock(&t->lock);
  return n;
}

void weft_transport_hold(weft_transport *t) {
  if (t) weft__fetch_add(&t->refs, 1, RELAXED); /* relaxed: the holder already has a reference (as any refcount) */
}

void weft_transport_release(weft_transport *t) {
  if (!t) return;
  /* acq_rel: the last release sees every other holder's writes before freeing */
  if (weft__fetch_sub(&t->refs, 1, ACQ_REL) == 1) transport_free(t);
}

/* ------------------------------------------------------------ datagrams */

int weft_create_datagram_endpoint(const weft_addr *local, const weft_addr *remote, const weft_datagram_protocol *p,
                                  weft_datagram_transport **out) {
  if (!p || (!local && !remote)) return -EINVAL;
  if (local && (!local->len || local->len > sizeof local->u)) return -EINVAL;
  if (remote && (!remote->len || remote->len > sizeof remote->u)) return -EINVAL;
  int family = local ? local->u.sa.sa_family : remote->u.sa.sa_family;
  if (local && remote && local->u.sa.sa_family != remote->u.sa.sa_family) return -EINVAL;
  if (family != AF_INET && family != AF_INET6) return -EINVAL;
  if (!weft__task_self()) return -EINVAL;
  int fd = local ? weft_udp_bind(local) : weft_socket(family, SOCK_DGRAM, 0);
  if (fd < 0) return fd;
  if (remote && connect(fd, &remote->u.sa, remote->len) < 0) { /* UDP: no handshake, no wait */
    int e = -errno;
    close(fd);
    return e;
  }
  weft_transport *t;
  int rc = transport_new(&t, fd, true, NULL, p, 0);
  if (rc) return rc;
  if (remote) t->peer = *remote;
  weft_transport *got = NULL;
  rc = start_driver(t, out ? &got : NULL);
  if (rc == 0 && out) *out = as_dgram(got);
  return rc;
}

/* The same IP address and port. */
static bool same_addr(const weft_addr *a, const weft_addr *b) {
  if (a->u.sa.sa_family != b->u.sa.sa_family) return false;
  if (a->u.sa.sa_family == AF_INET)
    return a->u.in4.sin_port == b->u.in4.sin_port && a->u.in4.sin_addr.s_addr == b->u.in4.sin_addr.s_addr;
  if (a->u.sa.sa_family == AF_INET6)
    return a->u.in6.sin6_port == b->u.in6.sin6_port &&
           !memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, sizeof a->u.in6.sin6_addr);
  return a->len == b->len && !memcmp(&a->u, &b->u, a->len);
}

int weft_datagram_sendto(weft_datagram_transport *d, const void *data, size_t len, const weft_addr *addr) {
  weft_transport *t = from_dgram(d);
  if (!t || !t->dgram || (!data && len) || len > (size_t)SSIZE_MAX) return -EINVAL;
  if (addr && (!addr->len || addr->len > sizeof addr->u)) return -EINVAL;
  if (addr && t->peer.len && !same_addr(addr, &t->peer)) return -EINVAL; /* asyncio: ValueError */
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  return write_iov(t, &iov, 1, len, addr ? addr : &(weft_addr){.len = 0});
}

void weft_datagram_close(weft_datagram_transport *d) { weft_transport_close(from_dgram(d)); }
void weft_datagram_abort(weft_datagram_transport *d) { weft_transport_abort(from_dgram(d)); }
bool weft_datagram_is_closing(weft_datagram_transport *d) { return weft_transport_is_closing(from_dgram(d)); }
int weft_datagram_get_extra_info(weft_datagram_transport *d, const char *name, void *out, size_t len) {
  return weft_transport_get_extra_info(from_dgram(d), name, out, len);
}
size_t weft_datagram_get_write_buffer_size(weft_datagram_transport *d) {
  return weft_transport_get_write_buffer_size(from_dgram(d));
}
void weft_datagram_hold(weft_datagram_transport *d) { weft_transport_hold(from_dgram(d)); }
void weft_datagram_release(weft_datagram_transport *d) { weft_transport_release(from_dgram(d)); }
