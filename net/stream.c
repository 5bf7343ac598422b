/* net/stream.c: asyncio's StreamReader/StreamWriter over one socket.
 *
 * OWNERSHIP. The reader's fields are touched only by the task reading, the
 * writer's only by the task writing (one of each at a time, as asyncio's
 * "one reader, one writer"), so no lock: the two halves share only the
 * immutable descriptor, and meet the closers (and an abort from any task)
 * in two atomic words, rstate and wstate (below).
 *
 * READER. rbuf[rpos, rend) holds received bytes not yet consumed; `eof`
 * says the peer's end of stream was seen. A read with nothing buffered
 * receives straight into the caller's buffer (no copy). readuntil buffers
 * until the separator appears, at most `limit` bytes (then -ENOBUFS,
 * nothing consumed: the data stays readable, as after asyncio's
 * LimitOverrunError). An optional time limit applies to each receive
 * (-ETIMEDOUT: what arrived stays buffered). The buffer starts at 16 KiB and grows (doubling)
 * only when a separator search needs more.
 *
 * WRITER. write copies into wbuf[wpos, wend) after one non-blocking send
 * (MSG_DONTWAIT: a plain system call, no suspension) when nothing is
 * buffered, so a small reply costs one send(2) and drain then has nothing
 * to do. RING SEND: on io_uring (plain sockets, a write of at most `low`
 * bytes into an empty buffer, no ring send in flight) the bytes are
 * copied into wbuf, which is handed to a send submitted on the ring and
 * not waited for (net/ring_send.c: it leaves with the worker's next
 * io_uring_enter, batched with the other tasks' I/O); the writer goes on
 * in the spare buffer (the previous ring send's, so that a ping-pong
 * allocates nothing). Bytes written while it is in flight are buffered
 * behind it and never sent before it ends. The next writer call settles
 * it when its completion came (accounting only), and drain, back-pressure
 * and wait_closed wait for it (cancellably: a cancel or deadline cancels
 * the send, and what it did not send goes back to the front of the
 * buffer); buffered() counts its bytes until the completion came.
 * Back-pressure: when the buffer passes `high`, the write itself sends
 * (suspending) until at most `low` is left; drain sends everything. A
 * send error (-EPIPE, -ECONNRESET) is latched in `werr` and returned by
 * every later write/drain. Cancellation and deadlines do not latch: the
 * bytes not sent stay buffered.
 *
 * TLS. A stream with a TLS layer (`tls`, net/tls.c) moves its bytes
 * through it instead of the socket calls: recv_some, flush_to and the
 * write's first attempt (a non-blocking TLS write of the buffered bytes,
 * since a TLS record may be retried only from the same bytes: they must
 * stay in wbuf until sent), write_eof (close_notify, then SHUT_WR) and
 * wait_closed (close_notify after the flush). Everything above those
 * calls (buffers, limits, watermarks) is the same for both. A read that
 * meets a peer's end without close_notify returns -ECONNRESET once and
 * leaves the stream at end of stream; the writer reports it too (rerr),
 * as after a plain stream's reset.
 *
 * ABORT (weft_stream_abort): the connection ends at once (ABORTING UNDER
 * A WRITER), every writer call from then on returns -ECONNRESET, and
 * wait_closed drops what is buffered, sends no close_notify, and closes
 * with SO_LINGER 0 (a reset).
 *
 * CLOSING UNDER A READER. close(), abort() and wait_closed may run while
 * the reading task, on another worker, is in a read
 * call waiting for the peer. The reader then returns end of stream (what
 * each call returns there: read 0, readexactly/readuntil -ENODATA with
 * what they got, readline the partial line), and wait_closed frees the
 * stream only after that call has returned. The two meet in `rstate`:
 *   R_IN      the reader: set (fetch_add) when a call first needs a
 *             receive, cleared (fetch_sub) as the call's last touch of
 *             the stream. A call served from the buffer never sets it.
 *   R_CLOSING the closer (close, abort or wait_closed: fetch_or): from
 *             now on every receive of the reader ends at once with end of
 *             stream, and every failed receive reads as end of stream
 *             (except a cancellation of the reader's own).
 *   R_WAITER  wait_closed waits for the reader to leave: `closer` and
 *             `closer_seq` name its wait (published by the CAS that sets
 *             the bit); the reader's clearing RMW that sees it wakes them.
 * The reader's add and the closer's or are RMWs of one word, so one of
 * them comes second and sees the other: a reader that entered first is in
 * the closer's old value (and is woken), one that enters later sees
 * R_CLOSING and does not receive. The wake (once: the closer whose
 * fetch_or sets R_WOKEN does it, since another task's abort may race with
 * the writer's close or wait_closed; it writes `rcancel`, which
 * wait_closed reads after writer_gone's acquire) must reach a receive
 * that is already waiting in the kernel and every later one:
 *   a stream socket: shutdown(SHUT_RD). A blocked recv (epoll: an
 *             EPOLLIN|EPOLLRDHUP edge through io/readiness.c; io_uring:
 *             the RECV's armed poll fires) and every later one return 0,
 *             a TLS layer's poll (weft_poll) returns POLLIN. The TLS layer
 *             is told first (weft__tls_stop), so that the end of stream
 *             its read then meets is not taken for the peer's truncation
 *             (which kills the session: no close_notify could follow).
 *   anything else (a pipe or a tty: no shutdown; a datagram socket: a
 *             SOCK_DGRAM receive says EAGAIN after it): the descriptor
 *             number is made to name a pipe whose write end is closed
 *             (dup3), so that every later read or receive ends at once
 *             (0, or an error that reads as end of stream); a receive
 *             already waiting holds the old file: on epoll the
 *             readiness waiters are woken (weft__fd_forget) and retry on
 *             the new file; on io_uring its operation is cancelled by
 *             file (ASYNC_CANCEL_FD, through a task on the reader's
 *             worker, `rworker`: the ring's single issuer). A write end
 *             shares the number, so a stream with bytes still to flush is
 *             woken by wait_closed after its flush rather than by close().
 * A read that begins after wait_closed returned uses freed memory: the
 * reader must not call again once it met end of stream, and a closer that
 * cannot tell whether the reader is between two calls closes first, joins
 * the reader (whose next read returns end of stream), then waits.
 * Costs: a reader call that receives makes two uncontended RMWs next to
 * its system call or ring operation; one served from the buffer checks a
 * plain flag; wait_closed makes one RMW and one load.
 * Rejected: cancelling the reader task (weft_cancel): the reader would see
 * a cancellation where asyncio's sees end of stream, and a request that
 * arrives after its read completed stays pending for whatever it waits on
 * next (the same holds for the writer below). Closing the descriptor to wake it: io_uring's operation holds the
 * file (no wake), and on epoll the reader retries on a number that may
 * already name another file. R_IN around every call, buffered reads too:
 * two RMWs for each readline of a parser that finds its lines in the
 * buffer, to cover a reader that is running, which the closer cannot tell
 * from one between two calls anyway.
 *
 * ABORTING UNDER A WRITER. close() and wait_closed are writer-side calls
 * (the writing task's, or another's while no writer call runs), but
 * abort() may come from any task at any time, also while the writer, on
 * another worker, waits in write/writev (back-pressure), drain or
 * write_eof for the peer to read (asyncio's abort makes that drain raise
 * ConnectionResetError). That call then returns -ECONNRESET, every later
 * writer call too, and wait_closed (then allowed from another task) frees
 * the stream only after the call and every abort call have returned. So
 * abort touches no plain field of the writer's (it used to set `closing`
 * and `aborting`): the writer, the aborters and wait_closed meet in
 * `wstate`, as the reader and the closer meet in rstate:
 *   W_IN      the writer: set (fetch_add) at the start of every writer
 *             call (write, writev, drain, write_eof; wait_closed's flush),
 *             cleared (fetch_sub) as the call's last touch of s
 *             (writer_leave, which also makes the call's error
 *             -ECONNRESET when W_ABORT is set). Every call, not only one
 *             that comes to wait (as R_IN): a write copying megabytes
 *             into its buffer is not waiting yet, and a wait_closed after
 *             another task's abort would free the stream under it.
 *   W_ABORT   set by the first abort; write_state, drain and write_eof
 *             check it (relaxed) before anything else, flush_to before
 *             each send.
 *   aborters  the bits from W_ABORTER up count the abort calls running:
 *             added by abort's CAS (with W_ABORT), subtracted as its last
 *             touch of s (aborter_leave).
 *   W_WAITER  wait_closed waits for W_IN and the aborters to go
 *             (writer_gone): `wcloser`/`wcloser_seq` name its wait,
 *             published by the CAS that sets the bit; the last leaver's
 *             RMW that sees it wakes them. wait_closed waits twice when
 *             aborted (first, before it touches the writer's half, for a
 *             writer call still in; last, before the free, for an abort
 *             that began meanwhile), and the bit stays set: a wake meant
 *             for the first wait may reach the second, so each wake only
 *             makes it look again.
 *   W_EOF     a pipe's write_eof is about to close fd: set by its RMW; the
 *             first of that RMW and the abort's CAS decides who has fd
 *             (the abort then leaves it alone; else write_eof leaves it
 *             for wait_closed to close).
 * The writer's add and the aborter's CAS are RMWs of one word: a writer
 * call that enters after the abort sees W_ABORT and sends nothing; one
 * that entered first is in the aborter's old value, and the abort wakes
 * it, for good (every later send fails too, so a writer between two waits
 * cannot miss it):
 *   a socket: a stream socket is reset first (TCP: connect(AF_UNSPEC),
 *             tcp_disconnect: a reset now, the kernel's queues dropped;
 *             a Unix socket says EINVAL), then every socket is shut both
 *             ways (shutdown(SHUT_RDWR)). Each wakes the socket's waiters:
 *             an epoll edge (EPOLLERR, EPOLLOUT or EPOLLHUP), io_uring's
 *             armed poll of a SEND, POLL_ADD or ring send in flight, which
 *             then fails or ends short; every later send fails. Done by
 *             the first abort whether a writer is in or not, so that
 *             nothing leaves after it. The TLS layer's writer waits in
 *             weft_poll on the socket: woken the same, its SSL_write then
 *             fails and the session dies (no close_notify after an abort
 *             anyway). R_CLOSING is set before, so that what this does to
 *             a waiting reader's receive reads as end of stream.
 *   a pipe or tty (W_IN, not W_EOF): as the reader's wake, the number is
 *             pointed at an empty pipe's read end (every later write fails
 *             with EBADF); on epoll the readiness waiters are woken
 *             (weft__fd_forget: -EBADF); on io_uring a write or poll in
 *             flight holds the old file: it is cancelled by that file
 *             (a duplicate taken before the swap) on the writer's ring,
 *             `wworker` (the writer's operations there are pinned: it
 *             does not move during the call), by a task (`wcancel`) that
 *             wait_closed joins.
 * Plain close() wakes no writer: asyncio's close lets the flush go on as
 * well (and wait_closed's flush is bounded by its 10 s); wait_closed's
 * own flush runs under W_IN, so an abort from another task ends it too.
 * An abort that begins after wait_closed's last writer_gone uses freed
 * memory: the aborting task must be done with the stream before
 * wait_closed begins (net.h), except for an abort already running.
 * Costs: every writer call makes two uncontended RMWs of a word in the
 * stream (next to a send, a ring submission or a copy); wait_closed a
 * few more.
 * Rejected: cancelling the writer task (see the reader's); an ASYNC_CANCEL
 * by file on a socket's ring (the reader's receive would be cancelled too,
 * and a writer between two operations, or on another worker than its ring
 * send's, would miss it, where the kernel's state cannot be missed);
 * shutdown(SHUT_RDWR) alone on TCP: its FIN queues behind the unsent bytes,
 * and a peer reading slowly would see them and a clean end before the
 * reset.
 *
 * NOT A SOCKET. A pipe, FIFO or tty (a subprocess's stdio,
 * process/spawn.c) works too: `sock` (fstat at creation) picks read/write
 * (weft_read/weft_write, and pwritev2(RWF_NOWAIT) for the first attempt)
 * instead of recv/send, and write_eof closes the descriptor (a pipe has no
 * half-close: the reader sees end of file once the write end is closed).
 * Writing to a pipe with no reader raises SIGPIPE unless it is ignored
 * (the subprocess code ignores it, as Python does). Because write_eof
 * changes `fd` there, a non-socket stream must not be read by one task
 * while another calls write_eof (a pipe end is only read or only written,
 * so the subprocess streams never do).
 *
 * DATAGRAMS. On a datagram socket (SOCK_DGRAM, SOCK_SEQPACKET: `bytes`
 * false) the stream reads the datagrams' bytes in order, each whole: a
 * receive cuts a datagram to the room it is given and drops the rest, so
 * each receive first peeks the next one's size (MSG_PEEK|MSG_TRUNC: a
 * second system call, or ring operation, per datagram) and makes room for
 * it (recv_datagram). An empty SOCK_DGRAM datagram adds nothing and is no
 * end of stream (a SOCK_SEQPACKET receive of 0 is its end, the kernel's
 * rule). Writes make no datagram boundaries: a write the kernel takes at
 * once is one datagram, buffered bytes leave as drain sends them.
 *
 * Rejected: a background flusher task per stream that sends on its own
 * (asyncio's transport): it needs the writer's buffer shared between two
 * tasks (a lock on every write) and a task per connection more; drain is
 * where asyncio programs wait anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft/net.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/task.h"
#include "io/op.h"
#include "io/readiness.h"
#include "net/net.h"
#include "net/ring_send.h"

#define RBUF_START (16 * 1024)
#define DEFAULT_LIMIT (64 * 1024)
#define DEFAULT_HIGH (64 * 1024)
#define DEFAULT_LOW (16 * 1024)
#define CLOSE_FLUSH_NS (10LL * 1000 * 1000 * 1000)

struct weft_stream {
  int fd;              /* immutable until wait_closed (or a non-socket's write_eof: -1) */
  bool sock;           /* immutable: fd is a socket (recv/send) rather than a pipe or file (read/write) */
  bool bytes;          /* immutable: a SOCK_STREAM socket, where a short receive means it was emptied */
  bool dgram;          /* immutable: a SOCK_DGRAM socket, where a receive of 0 is an empty datagram */
  /* reader: the reading task only */
  char *rbuf;
  size_t rcap, rpos, rend;
  size_t limit;
  int64_t timeout_ns;  /* each receive's time limit; < 0: none */
  bool eof;
  int rfail;           /* sticky: bytes taken could not be put back (unread); every read fails with it */
  bool rin;            /* this call set R_IN (the reading task only) */
  _Atomic int rworker; /* not a stream socket: the worker of this call's receives (a task moves only
                        * while it waits, and a receive resumes where it was submitted): stored by
                        * the reader before its R_IN add (relaxed, published by that release), read
                        * by the closer after an acquire that saw R_IN; io_uring's cancel by file */
  _Atomic uint32_t rstate; /* R_IN | R_CLOSING | R_WAITER: see CLOSING UNDER A READER */
  weft__task *closer;  /* wait_closed's wait for the reader: written before its release CAS sets */
  uint32_t closer_seq; /* R_WAITER, read by the reader after its acq_rel RMW saw the bit */
  _Atomic int rerr;    /* the reader met a reset (-ECONNRESET): the writer reports it too (asyncio's
                        * drain raises ConnectionResetError); written by the reading task, read by
                        * the writing one, which may run on another worker */
  /* writer: the writing task only */
  char *wbuf;
  size_t wcap, wpos, wend;
  char *wspare;        /* a ring send's buffer back from the kernel, for the next wbuf */
  size_t wspare_cap;
  size_t high, low;
  int werr;            /* a latched send error, or 0 */
  bool closing;        /* close() was called: writes get -EPIPE */
  bool eof_sent;       /* write_eof() shut the write side */
  bool rs_busy;        /* a ring send in flight, not yet settled */
  bool win;            /* this call set W_IN (the writing task only) */
  _Atomic int wworker; /* not a socket: the worker of this writer call's operations (as rworker: stored
                        * before the W_IN add, relaxed, published by that release; read by the aborter
                        * after its acquire CAS saw W_IN) */
  _Atomic uint32_t wstate; /* W_IN | W_WAITER | W_ABORT | W_EOF | aborters: see ABORTING UNDER A WRITER */
  _Atomic(weft__task *) wcloser; /* wait_closed's wait for the writer and the aborters: stored (relaxed)
                        * before its release CAS of W_WAITER, loaded (relaxed) by the last one to leave */
  _Atomic uint32_t wcloser_seq; /* after its acq_rel RMW saw the bit (atomic: wait_closed may wait twice,
                        * and a stale wake only makes it look again) */
  /* closers (close, abort, wait_closed) */
  weft_task rcancel;   /* the ring cancel task the reader's wake spawned (io_uring, not a socket),
                        * joined by wait_closed, so that its duplicate of the old file is closed by then;
                        * written by the closer that claimed the wake (R_WOKEN) */
  weft_task wcancel;   /* the same for the writer's wake (abort only) */
  weft__ring_send rs;  /* writer: that send (net/ring_send.c) */
  struct weft__tls *tls; /* the TLS layer, or NULL (set by start_tls before any transfer) */
};

int weft__stream_new(int fd, size_t limit, weft_stream **out) {
  weft_stream *s = weft__alloc(sizeof *s);
  if (!s) {
    close(fd);
    return -ENOMEM;
  }
  memset(s, 0, sizeof *s);
  weft__fd_own(fd); /* epoll: registered once, forgotten before the close (io/readiness.h) */
  s->fd = fd;
  s->sock = true;
  s->bytes = true;
  s->limit = limit ? limit : DEFAULT_LIMIT;
  s->timeout_ns = -1;
  s->high = DEFAULT_HIGH;
  s->low = DEFAULT_LOW;
  *out = s;
  return 0;
}

int weft_stream_from_fd(int fd, weft_stream **out) {
  if (!out) return -EINVAL;
  if (fd < 0) return -EBADF;
  struct stat st;
  bool sock = fstat(fd, &st) != 0 || S_ISSOCK(st.st_mode);
  int type = 0;
  socklen_t tlen = sizeof type;
  bool bytes = sock && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM;
  int rc = weft__stream_new(fd, 0, out);
  if (rc == 0) {
    (*out)->sock = sock;
    (*out)->bytes = bytes;
    (*out)->dgram = sock && !bytes && type == SOCK_DGRAM;
  }
  return rc;
}

int weft_open_connection(const char *host, uint16_t port, int64_t deadline, weft_stream **out) {
  if (!out) return -EINVAL;
  int fd = weft_connect_host(host, port, deadline, NULL);
  if (fd < 0) return fd;
  return weft__stream_new(fd, 0, out);
}

int weft_open_unix_connection(const char *path, int64_t deadline, weft_stream **out) {
  if (!out) return -EINVAL;
  weft_addr a;
  int rc = weft_addr_unix(&a, path);
  if (rc) return rc;
  int fd = weft_connect_addr(&a, deadline);
  if (fd < 0) return fd;
  return weft__stream_new(fd, 0, out);
}

int weft_stream_fd(const weft_stream *s) { return s ? s->fd : -EINVAL; }

int weft_stream_set_limit(weft_stream *s, size_t limit) {
  if (!s || !limit || limit > (size_t)SSIZE_MAX / 2) return -EINVAL;
  s->limit = limit;
  return 0;
}

int weft_stream_set_watermarks(weft_stream *s, size_t high, size_t low) {
  if (!s || low > high) return -EINVAL;
  s->high = high;
  s->low = low;
  return 0;
}

int weft_stream_set_timeout(weft_stream *s, int64_t timeout_ns) {
  if (!s || timeout_ns < -1) return -EINVAL;
  s->timeout_ns = timeout_ns;
  return 0;
}

/* ------------------------------------------------------------ reader */

enum { R_IN = 1u, R_CLOSING = 2u, R_WAITER = 4u, R_WOKEN = 8u }; /* rstate (CLOSING UNDER A READER) */

/* Before a receive: the first of a call sets R_IN. True when the stream is
 * closing (the receive is not made). */
static bool reader_enter(weft_stream *s) {
  if (s->rin) /* relaxed: an early stop only; the wake ends a receive that misses it */
    return weft__load(&s->rstate, RELAXED) & R_CLOSING;
  s->rin = true;
  if (!s->bytes) weft__store(&s->rworker, weft_worker_id(), RELAXED); /* published by the add */
  /* release: publishes rworker to the closer's acquire of R_IN. Its order
   * against the closer's fetch_or of R_CLOSING needs nothing more: two RMWs
   * of one word, the second reads the first's value */
  return weft__fetch_add(&s->rstate, R_IN, RELEASE) & R_CLOSING;
}

/* Every reader call's return: clear R_IN if this call set it, and wake a
 * wait_closed that waits for that. The RMW is the call's last touch of s
 * unless the closer waits (it frees s only once woken). */
static inline ssize_t reader_leave(weft_stream *s, ssize_t r) {
  if (weft__likely(!s->rin)) return r;
  s->rin = false;
  /* release: the reader's accesses to s happen before the closer's free
   * (pairs with the acquire in reader_gone); acquire: closer/closer_seq,
   * published by reader_gone's release CAS of R_WAITER */
  uint32_t old = weft__fetch_sub(&s->rstate, R_IN, ACQ_REL);
  if (old & R_WAITER) weft__wake(s->closer, s->closer_seq, WEFT__WAKE_NORMAL);
  return r;
}

/* A receive that failed (or found the end) while the stream is closing:
 * end of stream, unless it is a cancellation of the reader's own. On
 * io_uring a non-socket's receive is ended by the closer's ASYNC_CANCEL
 * (-ECANCELED, or -ETIMEDOUT under a time limit) without any request to
 * the task: a request still pending was not delivered by it (it stays for
 * the next suspension), and none ever made (cancelling 0) means ours. */
static ssize_t closing_result(weft_stream *s, ssize_t r) {
  if (r == -ECANCELED && s->bytes) return r; /* a socket's: always the task's own */
  if (r == -ECANCELED) {
    weft__task *self = weft__task_self();
    /* relaxed: the task's own flags (weft_cancel's stores are ordered by its
     * wake, which this task has seen if it delivered the request) */
    if (!weft__load(&self->cancel_pending, RELAXED) && weft__load(&self->cancelling, RELAXED) > 0) return r;
  }
  s->eof = true;
  return 0;
}

static void consume(weft_stream *s, void *dst, size_t n);

/* A datagram socket's receive (DATAGRAMS above): the next datagram, whole.
 * Its size is peeked first: a receive cuts a datagram to the buffer given
 * and drops the rest. One larger than n goes into rbuf, grown to hold it:
 * behind what is buffered when fill called (buf is rbuf + rend; fill counts
 * the bytes), else (a read into the caller's memory, made only when nothing
 * is buffered) as the buffer's contents, whose first n bytes go to buf. A
 * receive of 0 on SOCK_DGRAM is an empty datagram, not the end: the next
 * one is waited for. */
static ssize_t recv_datagram(weft_stream *s, char *buf, size_t n, int64_t deadline) {
  bool filling = s->rbuf && buf == s->rbuf + s->rend;
  for (;;) {
    ssize_t d = weft_recv_until(s->fd, NULL, 0, MSG_PEEK | MSG_TRUNC, deadline);
    if (d < 0) return d;
    char *dst = buf;
    size_t room = n;
    if ((size_t)d > n) {
      size_t used = filling ? s->rend : 0;
      if (used + (size_t)d > s->rcap) {
        size_t ncap = s->rcap ? s->rcap : RBUF_START;
        while (ncap < used + (size_t)d) ncap *= 2;
        char *nb = weft__realloc(s->rbuf, s->rcap, ncap);
        if (!nb) return -ENOMEM; /* nothing received: the datagram stays queued */
        s->rbuf = nb;
        s->rcap = ncap;
      }
      dst = s->rbuf + used;
      room = s->rcap - used;
    }
    ssize_t r = weft_recv_until(s->fd, dst, room, 0, deadline);
    if (r == 0 && s->dgram) continue; /* (a closer's wake makes the receive fail: no endless loop) */
    if (r <= 0 || dst == buf || filling) return r;
    s->rpos = 0; /* (the buffer was empty: used 0 above) */
    s->rend = (size_t)r;
    size_t k = (size_t)r < n ? (size_t)r : n;
    consume(s, buf, k);
    return (ssize_t)k;
  }
}

/* One receive, within the stream's time limit. Suspends. */
static ssize_t recv_some(weft_stream *s, void *buf, size_t n) {
  if (s->rfail) return s->rfail;
  if (weft__unlikely(reader_enter(s))) return closing_result(s, 0);
  int64_t deadline = weft__deadline_after(s->timeout_ns);
  ssize_t r;
  if (s->tls) {
    r = weft__tls_recv(s->tls, s->fd, buf, n, deadline);
  } else {
    r = !s->sock ? weft_read_until(s->fd, buf, n, deadline)
        : s->bytes ? weft__recv_stream(s->fd, buf, n, deadline)
                   : recv_datagram(s, buf, n, deadline);
  }
  /* relaxed: R_CLOSING only turns what the wake made of the receive into
   * end of stream (a receive that moved bytes keeps them). Where that is
   * not 0 already (io_uring's cancel: -ECANCELED), the closer's fetch_or
   * happens before this load: it precedes the spawn of the cancelling task
   * on this worker, whose cancel's completion wakes us there */
  if (weft__unlikely(r <= 0) && (weft__load(&s->rstate, RELAXED) & R_CLOSING)) return closing_result(s, r);
  if (r == -ECONNRESET) {
    /* relaxed: a sticky flag that publishes nothing else; the writer reads
     * it at its next write or drain (write_state). TLS too: the layer is
     * dead then (a reset, or an end without close_notify), and drain must
     * not report success on it (weft/net.h) */
    weft__store(&s->rerr, (int)r, RELAXED);
    if (s->tls) s->eof = true; /* reported once, then end of stream */
  }
  return r;
}

static size_t buffered(const weft_stream *s) { return s->rend - s->rpos; }

static void consume(weft_stream *s, void *dst, size_t n) {
  if (!n) return; /* rbuf may still be NULL */
  if (dst) memcpy(dst, s->rbuf + s->rpos, n);
  s->rpos += n;
  if (s->rpos == s->rend) s->rpos = s->rend = 0;
}

/* Receive once into the buffer (making room: compact, then grow): the
 * bytes received, 0 at end of stream, or a negative errno. */
static ssize_t fill(weft_stream *s) {
  if (s->eof) return 0;
  if (s->rend == s->rcap && s->rpos > 0) {
    memmove(s->rbuf, s->rbuf + s->rpos, buffered(s));
    s->rend -= s->rpos;
    s->rpos = 0;
  }
  if (s->rend == s->rcap) {
    size_t ncap = s->rcap ? s->rcap * 2 : RBUF_START;
    char *nb = weft__realloc(s->rbuf, s->rcap, ncap);
    if (!nb) return -ENOMEM;
    s->rbuf = nb;
    s->rcap = ncap;
  }
  ssize_t n = recv_some(s, s->rbuf + s->rend, s->rcap - s->rend);
  if (n > 0) s->rend += (size_t)n;
  if (n == 0) s->eof = true;
  return n;
}

static ssize_t read_some(weft_stream *s, void *buf, size_t n) {
  if (!buf && n) return -EINVAL;
  if (n == 0) return 0;
  if (n > WEFT_IO_MAX) n = WEFT_IO_MAX;
  if (buffered(s)) {
    size_t k = buffered(s) < n ? buffered(s) : n;
    consume(s, buf, k);
    return (ssize_t)k;
  }
  if (s->eof) return 0;
  ssize_t r = recv_some(s, buf, n);
  if (r == 0) s->eof = true;
  return r;
}

static ssize_t readexactly(weft_stream *s, void *buf, size_t n, size_t *got) {
  if (got) *got = 0;
  if ((!buf && n) || n > (size_t)SSIZE_MAX) return -EINVAL;
  size_t off = buffered(s) < n ? buffered(s) : n;
  consume(s, buf, off);
  if (got) *got = off;
  while (off < n) {
    if (s->eof) return -ENODATA;
    ssize_t r = recv_some(s, (char *)buf + off, n - off);
    if (r < 0) return r;
    if (r == 0) {
      s->eof = true;
      return -ENODATA;
    }
    off += (size_t)r;
    if (got) *got = off;
  }
  return (ssize_t)n;
}

/* Put n bytes back as the buffer's contents (it is empty): a read that
 * fails after it took them loses nothing. Should the buffer have to grow
 * and no memory be left, the stream fails instead (every later read:
 * -ENOMEM): a gap in the bytes must never pass unseen. Growing the buffer
 * ahead of what read_all takes would avoid this, at the cost of holding
 * twice what it reads. */
static void unread(weft_stream *s, const void *p, size_t n) {
  if (!n) return;
  if (n > s->rcap) {
    size_t ncap = s->rcap ? s->rcap : RBUF_START;
    while (ncap < n) ncap *= 2;
    char *nb = weft__realloc(s->rbuf, s->rcap, ncap);
    if (!nb) {
      s->rfail = -ENOMEM;
      return;
    }
    s->rbuf = nb;
    s->rcap = ncap;
  }
  memcpy(s->rbuf, p, n);
  s->rpos = 0;
  s->rend = n;
}

static ssize_t read_all(weft_stream *s, void *buf, size_t cap) {
  if ((!buf && cap) || cap > (size_t)SSIZE_MAX) return -EINVAL;
  size_t off = buffered(s) < cap ? buffered(s) : cap;
  consume(s, buf, off);
  for (;;) {
    if (buffered(s)) return -ENOBUFS; /* more than cap: the rest stays readable */
    if (off == cap) {                 /* full: is there more? */
      ssize_t r = fill(s);
      if (r < 0) {
        unread(s, buf, off);
        return r;
      }
      if (r == 0) return (ssize_t)off;
      return -ENOBUFS;
    }
    if (s->eof) return (ssize_t)off;
    ssize_t r = recv_some(s, (char *)buf + off, cap - off);
    if (r < 0) {
      unread(s, buf, off);
      return r;
    }
    if (r == 0) s->eof = true;
    off += (size_t)r;
  }
}

static const char *find(const char *hay, size_t hlen, const char *needle, size_t nlen) {
  if (nlen == 1) return memchr(hay, needle[0], hlen);
  return memmem(hay, hlen, needle, nlen);
}

static ssize_t readuntil(weft_stream *s, const void *sep, size_t seplen, void *buf, size_t cap, size_t *got,
                         bool line) {
  if (got) *got = 0;
  if (!sep || !seplen || (!buf && cap)) return -EINVAL;
  size_t searched = 0; /* bytes from rpos already known to hold no separator start */
  for (;;) {
    size_t have = buffered(s);
    const char *hit = have >= seplen ? find(s->rbuf + s->rpos + searched, have - searched, sep, seplen) : NULL;
    if (hit) {
      size_t len = (size_t)(hit - (s->rbuf + s->rpos)) + seplen;
      if (len - seplen > s->limit || len > cap) return -ENOBUFS; /* asyncio: isep > limit */
      consume(s, buf, len);
      if (got) *got = len;
      return (ssize_t)len;
    }
    if (have >= seplen && have + 1 - seplen > s->limit) return -ENOBUFS; /* asyncio's offset > limit */
    if (s->eof) {
      if (line && have > cap) return -ENOBUFS; /* a last line that does not fit: nothing consumed */
      size_t k = have < cap ? have : cap;
      consume(s, buf, k);
      if (got) *got = k;
      return -ENODATA;
    }
    searched = have >= seplen ? have - seplen + 1 : 0;
    ssize_t r = fill(s); /* may compact: `searched` counts from rpos, so it stays valid */
    if (r < 0) return r;
  }
}

/* The public reader calls: each leaves through reader_leave. */

ssize_t weft_stream_read(weft_stream *s, void *buf, size_t n) {
  if (!s) return -EINVAL;
  return reader_leave(s, read_some(s, buf, n));
}

ssize_t weft_stream_readexactly(weft_stream *s, void *buf, size_t n, size_t *got) {
  if (!s) {
    if (got) *got = 0;
    return -EINVAL;
  }
  return reader_leave(s, readexactly(s, buf, n, got));
}

ssize_t weft_stream_read_all(weft_stream *s, void *buf, size_t cap) {
  if (!s) return -EINVAL;
  return reader_leave(s, read_all(s, buf, cap));
}

ssize_t weft_stream_readuntil(weft_stream *s, const void *sep, size_t seplen, void *buf, size_t cap, size_t *got) {
  if (!s) {
    if (got) *got = 0;
    return -EINVAL;
  }
  return reader_leave(s, readuntil(s, sep, seplen, buf, cap, got, false));
}

ssize_t weft_stream_readline(weft_stream *s, void *buf, size_t cap) {
  size_t got = 0;
  if (!s) return -EINVAL;
  ssize_t r = readuntil(s, "\n", 1, buf, cap, &got, true);
  if (r == -ENODATA) r = (ssize_t)got;
  return reader_leave(s, r);
}

bool weft_stream_at_eof(const weft_stream *s) { return s && s->eof && s->rpos == s->rend; }

/* ------------------------------------------------------------ writer */

/* wstate (ABORTING UNDER A WRITER); W_ABORTER counts the abort calls
 * running, in the bits above the flags. */
enum { W_IN = 1u, W_WAITER = 2u, W_ABORT = 4u, W_EOF = 8u, W_ABORTER = 16u };
#define W_BUSY(st) ((st) & ~(uint32_t)(W_WAITER | W_ABORT | W_EOF)) /* a writer call or an abort is in */

/* The stream was aborted (relaxed: a flag that carries no data; a call
 * that misses it meets the abort's wake instead: ABORTING UNDER A WRITER). */
static bool aborted(const weft_stream *s) { return weft__load(&s->wstate, RELAXED) & W_ABORT; }

/* At a writer call's start (and wait_closed's flush): set W_IN. True when
 * the stream was aborted (the call stops: -ECONNRESET, nothing sent).
 * Nested calls (flush_to inside one) only check the flag. */
static bool writer_enter(weft_stream *s) {
  if (s->win) return aborted(s); /* an early stop only: the wake ends a wait that misses it */
  s->win = true;
  if (!s->sock) weft__store(&s->wworker, weft_worker_id(), RELAXED); /* published by the add */
  /* release: publishes wworker to the aborter's acquire CAS. Its order
   * against that CAS needs nothing more: two RMWs of one word, the second
   * reads the first's value */
  return weft__fetch_add(&s->wstate, W_IN, RELEASE) & W_ABORT;
}

/* The last of the writer call and the aborters to leave while wait_closed
 * waits (W_WAITER in old, nothing busy after this RMW) wakes it. */
static void writer_gone_wake(weft_stream *s, uint32_t old, uint32_t mine) {
  if (!(old & W_WAITER) || W_BUSY(old - mine)) return;
  /* relaxed: published by writer_gone's release CAS, which our acq_rel
   * RMW read (or a later value of); this load is our last touch of s */
  weft__task *t = weft__load(&s->wcloser, RELAXED);
  uint32_t seq = weft__load(&s->wcloser_seq, RELAXED);
  weft__wake(t, seq, WEFT__WAKE_NORMAL);
}

/* Every public writer call's return: clear W_IN (if this call set it), and
 * make an error of an aborted stream -ECONNRESET (asyncio's drain raises
 * ConnectionResetError after abort; a cancellation keeps -ECANCELED). The
 * RMW is the call's last touch of s unless wait_closed waits (it frees s
 * only once woken). */
static inline int writer_leave(weft_stream *s, int rc) {
  uint32_t old;
  if (weft__likely(!s->win)) {
    if (weft__likely(rc >= 0)) return rc;
    old = weft__load(&s->wstate, RELAXED); /* relaxed: the flag only picks the error code */
  } else {
    s->win = false;
    /* release: the writer's accesses to s happen before wait_closed's
     * (pairs with writer_gone's acquire); acquire: wcloser/wcloser_seq,
     * published by writer_gone's release CAS of W_WAITER */
    old = weft__fetch_sub(&s->wstate, W_IN, ACQ_REL);
    writer_gone_wake(s, old, W_IN);
    /* a call that met an abort returns -ECONNRESET, a success too (its
     * bytes are dropped with the buffer, or went into a reset connection):
     * so a writer that stops at its first error makes no call after the
     * abort's wait_closed may have freed s */
    if ((old & W_ABORT) && rc != -ECANCELED && rc != -EINVAL) rc = -ECONNRESET;
    return rc;
  }
  if (rc < 0 && (old & W_ABORT) && rc != -ECANCELED && rc != -EINVAL) rc = -ECONNRESET;
  return rc;
}

size_t weft_stream_buffered(const weft_stream *s) {
  if (!s) return 0;
  /* a ring send's bytes count until its completion was reaped (then
   * settling only does the accounting: it does not wait) */
  if (!s->rs_busy) return s->wend - s->wpos;
  int32_t res;
  size_t sent = weft__ring_send_done((weft__ring_send *)&s->rs, &res) && res > 0 ? (size_t)res : 0;
  return s->wend - s->wpos + s->rs.len - sent;
}

/* ------------------------------------------------------------ ring send */

/* Hand wbuf[wpos, wend) to a ring send (net/ring_send.c) and write on
 * into the spare buffer; false (nothing changed) when it was not
 * submitted. */
static bool ring_send_start(weft_stream *s) {
  if (!weft__ring_send_start(&s->rs, s->fd, s->wbuf, s->wcap, s->wpos, s->wend - s->wpos)) return false;
  s->rs_busy = true;
  s->wbuf = s->wspare; /* the kernel has the old one */
  s->wcap = s->wspare_cap;
  s->wspare = NULL;
  s->wspare_cap = 0;
  s->wpos = s->wend = 0;
  return true;
}

static bool latches(ssize_t err);

/* Settle the ring send in flight, if any: wait for its completion
 * and account for it (bytes sent leave the buffer; an error latches as a
 * send's). 0, or -ECANCELED / -ETIMEDOUT when a cancel request or the
 * deadline stopped it first (what it did not send stays buffered). */
static int ring_send_settle(weft_stream *s, int64_t deadline, bool cancel_now) {
  weft__ring_send *rs = &s->rs;
  if (!s->rs_busy) return 0;
  uint32_t why = weft__ring_send_wait(rs, deadline, cancel_now);
  s->rs_busy = false;
  int32_t res = 0;
  weft__ring_send_done(rs, &res); /* done after the wait */
  size_t sent = res > 0 ? (size_t)res : 0;
  if (res < 0 && res != -ECANCELED && res != -EINTR && res != -EAGAIN && latches(res)) s->werr = res;
  if (sent < rs->len && !s->werr) {
    /* stopped short (cancelled, timed out): the rest goes back in front
     * of what was written since, in the ring send's buffer */
    size_t rest = rs->len - sent, later = s->wend - s->wpos;
    memmove(rs->buf, rs->buf + rs->off + sent, rest);
    if (rest + later > rs->cap) {
      size_t ncap = rs->cap;
      while (ncap < rest + later) ncap *= 2;
      char *nb = weft__realloc(rs->buf, rs->cap, ncap);
      if (!nb) { /* cannot keep both: the stream fails as after a send error */
        s->werr = -ENOMEM;
        goto spare;
      }
      rs->buf = nb;
      rs->cap = ncap;
    }
    if (later) memcpy(rs->buf + rest, s->wbuf + s->wpos, later);
    weft__free(s->wspare, s->wspare_cap);
    s->wspare = s->wbuf;
    s->wspare_cap = s->wcap;
    s->wbuf = rs->buf;
    s->wcap = rs->cap;
    s->wpos = 0;
    s->wend = rest + later;
  } else {
  spare: /* its buffer is the next spare */
    if (!s->wspare) {
      s->wspare = rs->buf;
      s->wspare_cap = rs->cap;
    } else {
      weft__free(rs->buf, rs->cap);
    }
  }
  rs->buf = NULL;
  if (why == WEFT__WAKE_CANCEL) {
    if (res == -ECANCELED || res == -EINTR) return -ECANCELED;
    weft__store(&weft__task_self()->cancel_pending, 1, RELAXED); /* it completed first: the request stays pending (relaxed: as io/op.c) */
  } else if (why == WEFT__WAKE_TIMER && (res == -ECANCELED || res == -EINTR)) {
    return -ETIMEDOUT;
  }
  return 0;
}

static int append(weft_stream *s, const void *p, size_t n) {
  if (!n) return 0;
  if (s->wpos && s->wend + n > s->wcap) { /* compact first */
    memmove(s->wbuf, s->wbuf + s->wpos, s->wend - s->wpos);
    s->wend -= s->wpos;
    s->wpos = 0;
  }
  if (!s->wbuf && s->wspare) { /* a ring send's old buffer */
    s->wbuf = s->wspare;
    s->wcap = s->wspare_cap;
    s->wspare = NULL;
    s->wspare_cap = 0;
  }
  if (n > SIZE_MAX / 4 - s->wend) return -ENOMEM; /* the doubling below would wrap to 0 and spin */
  if (s->wend + n > s->wcap) {
    size_t ncap = s->wcap ? s->wcap : 4096;
    while (ncap < s->wend + n) ncap *= 2;
    char *nb = weft__realloc(s->wbuf, s->wcap, ncap);
    if (!nb) return -ENOMEM;
    s->wbuf = nb;
    s->wcap = ncap;
  }
  memcpy(s->wbuf + s->wend, p, n);
  s->wend += n;
  return 0;
}

static bool latches(ssize_t err) { return err != -ECANCELED && err != -ETIMEDOUT && err != -EINVAL; }

/* One send of wbuf's first n bytes (TLS: deadline 0 never waits, -EAGAIN). */
static ssize_t send_some(weft_stream *s, size_t n, int64_t deadline) {
  if (s->tls) return weft__tls_send(s->tls, s->fd, s->wbuf + s->wpos, n, deadline);
  if (!s->sock) return weft_write_until(s->fd, s->wbuf + s->wpos, n, deadline);
  return weft_send_until(s->fd, s->wbuf + s->wpos, n, 0, deadline);
}

/* TLS: what the kernel takes now of what is buffered, without waiting. */
static int tls_send_now(weft_stream *s) {
  while (s->wend > s->wpos) {
    ssize_t n = send_some(s, s->wend - s->wpos, 0);
    if (n == -EAGAIN) return 0;
    if (n < 0) {
      if (latches(n)) s->werr = (int)n;
      return (int)n;
    }
    s->wpos += (size_t)n;
  }
  s->wpos = s->wend = 0;
  return 0;
}

/* Send until at most `target` bytes stay buffered. Suspends. Called
 * under W_IN (a public writer call's, or wait_closed's): an abort wakes
 * its waits. */
static int flush_to(weft_stream *s, size_t target, int64_t deadline) {
  int rc = ring_send_settle(s, deadline, false);
  if (rc) return rc;
  if (s->werr) return s->werr;
  while (s->wend - s->wpos > target) {
    if (aborted(s)) return -ECONNRESET; /* (the abort's wake also makes the send fail) */
    ssize_t n = send_some(s, s->wend - s->wpos, deadline);
    if (n < 0) {
      if (latches(n)) s->werr = (int)n;
      return (int)n;
    }
    s->wpos += (size_t)n;
  }
  if (s->wpos == s->wend) s->wpos = s->wend = 0;
  return 0;
}

/* The writer's error: an abort, its own, or a reset the reader met
 * (relaxed: see rerr). */
static int write_state(weft_stream *s) {
  if (aborted(s)) return -ECONNRESET;
  if (!s->werr) s->werr = weft__load(&s->rerr, RELAXED);
  if (s->werr) return s->werr;
  if (s->closing || s->eof_sent) return -EPIPE;
  return 0;
}

static int writev_(weft_stream *s, const struct iovec *iov, int iovcnt) {
  if ((!iov && iovcnt) || iovcnt < 0 || iovcnt > IOV_MAX) return -EINVAL;
  int rc = write_state(s);
  if (rc) return rc;
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) {
    if (!iov[i].iov_base && iov[i].iov_len) return -EINVAL;
    if (iov[i].iov_len > (size_t)SSIZE_MAX - total) return -EINVAL; /* a total past SSIZE_MAX (no wrap) */
    total += iov[i].iov_len;
  }
  /* a ring send done: account for it now (no wait); one in flight: what
   * is written meanwhile is buffered behind it (sent by drain) */
  int32_t res;
  if (s->rs_busy && weft__ring_send_done(&s->rs, &res) && (rc = ring_send_settle(s, WEFT__NO_DEADLINE, false)))
    return rc;
  if ((rc = write_state(s))) return rc;
  size_t sent = 0;
  size_t had = s->wend - s->wpos; /* buffered before this call (append may compact: count from wpos) */
  bool was_empty = s->wend == s->wpos && !s->rs_busy;
  if (was_empty && total && total <= s->low && !s->tls && s->sock && weft__io_backend() == WEFT_BACKEND_URING) {
    /* nothing queued, on io_uring: copy, send on the ring without waiting */
    for (int i = 0; i < iovcnt; i++)
      if ((rc = append(s, iov[i].iov_base, iov[i].iov_len))) {
        s->wend = s->wpos; /* (it was empty) nothing of this call stays buffered */
        return rc;
      }
    ring_send_start(s); /* if the ring refused it, the bytes stay buffered for drain */
    return 0;
  }
  if (was_empty && total && !s->tls) { /* nothing queued: try the kernel at once */
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n = s->sock ? sendmsg(s->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL)
                        : pwritev2(s->fd, iov, iovcnt, -1, RWF_NOWAIT);
    if (n >= 0) {
      sent = (size_t)n;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != EOPNOTSUPP) {
      s->werr = -errno;
      return s->werr;
    }
  }
  bool went = sent > 0; /* part of it is in the kernel already */
  for (int i = 0; i < iovcnt; i++) { /* the rest into the buffer */
    size_t len = iov[i].iov_len;
    if (sent >= len) {
      sent -= len;
      continue;
    }
    rc = append(s, (const char *)iov[i].iov_base + sent, len - sent);
    if (rc) {
      if (went)
        s->werr = rc; /* a prefix was sent, the rest cannot be kept: the stream fails (as a transport's) */
      else
        s->wend = s->wpos + had; /* nothing of this call went or stays: a retry sends it once */
      return rc;
    }
    sent = 0;
  }
  if (s->tls && was_empty && (rc = tls_send_now(s))) return rc;
  if (weft_stream_buffered(s) > s->high) return flush_to(s, s->low, WEFT__NO_DEADLINE);
  return 0;
}

/* The public writer calls: each leaves through writer_leave. */

int weft_stream_writev(weft_stream *s, const struct iovec *iov, int iovcnt) {
  if (!s) return -EINVAL;
  return writer_leave(s, writer_enter(s) ? -ECONNRESET : writev_(s, iov, iovcnt));
}

int weft_stream_write(weft_stream *s, const void *buf, size_t len) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return weft_stream_writev(s, &iov, 1);
}

static int drain_(weft_stream *s) {
  if (aborted(s)) return -ECONNRESET;
  if (!s->werr) s->werr = weft__load(&s->rerr, RELAXED); /* relaxed: see rerr */
  if (s->werr) return s->werr;
  return flush_to(s, 0, WEFT__NO_DEADLINE);
}

int weft_stream_drain(weft_stream *s) {
  if (!s) return -EINVAL;
  return writer_leave(s, writer_enter(s) ? -ECONNRESET : drain_(s));
}

static int write_eof_(weft_stream *s) {
  if (aborted(s)) return -ECONNRESET;
  if (s->eof_sent) return 0;
  int rc = drain_(s);
  if (rc) return rc;
  s->eof_sent = true;
  if (s->tls && (rc = weft__tls_close_notify(s->tls, s->fd, WEFT__NO_DEADLINE))) return rc;
  if (!s->sock) { /* no half-close on a pipe: close it (reads then get -EBADF) */
    /* relaxed: only which of this RMW and the aborter's CAS comes first
     * matters (two RMWs of one word): an abort that came first may be
     * pointing fd at another file now, so fd stays for wait_closed to
     * close; one that comes later sees W_EOF and leaves fd alone */
    if (weft__fetch_or(&s->wstate, W_EOF, RELAXED) & W_ABORT) return -ECONNRESET;
    int fd = s->fd;
    s->fd = -1;
    weft__fd_forget(fd);
    return close(fd) < 0 ? -errno : 0;
  }
  return weft_shutdown(s->fd, SHUT_WR);
}

int weft_stream_write_eof(weft_stream *s) {
  if (!s) return -EINVAL;
  return writer_leave(s, writer_enter(s) ? -ECONNRESET : write_eof_(s));
}

/* ------------------------------------------------------------ closing under a reader */

/* On the reader's (or writer's) ring: cancel every operation on the file that arg's
 * descriptor (a duplicate of the stream's old one) names, waiting for the
 * cancel (the kernel resolves the number when it runs it); then close the
 * duplicate. */
static int ring_cancel_task(void *arg) {
  int fd = (int)(intptr_t)arg;
  weft__uop u;
  int err;
  struct io_uring_sqe *sqe = weft__uop_begin(&u, WEFT__NO_DEADLINE, &err);
  if (sqe) {
    weft__uop_note_fd_cancel(-1); /* the read or write (on the stream's number) ends, not retried (io/op.c) */
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    weft__uop_wait(&u, sqe);
  }
  close(fd);
  return 0;
}

/* Make fd name a pipe whose write end is closed (every later read there
 * ends at once). False when no descriptor could be had for it. */
static bool point_at_eof(int fd) {
  int eof[2];
  if (pipe2(eof, O_CLOEXEC) != 0) return false;
  close(eof[1]);
  bool ok = dup3(eof[0], fd, O_CLOEXEC) >= 0; /* atomic: no moment without a file at fd */
  close(eof[0]);
  return ok;
}

/* io_uring: spawn ring_cancel_task on worker w for the file `old` (a
 * duplicate it closes); the handle, or a null one (out of memory: the
 * operation ends when data, room or the end comes). */
static weft_task spawn_ring_cancel(int w, int old) {
  weft_spawn_opts o = {.name = "weft-stream-cancel"};
  weft_task t = weft__spawn_pinned((unsigned)w, ring_cancel_task, (void *)(intptr_t)old, &o);
  if (!t.rec) close(old);
  return t;
}

/* Wake a reader that is in a receive, for good (see CLOSING UNDER A
 * READER): every receive it has in flight or makes from now on ends. A
 * closer, after an acquire that saw R_IN (rworker); the first to claim
 * R_WOKEN does it (close or wait_closed and another task's abort may
 * race). Out of descriptors, a non-socket's wake is partial (documented in
 * net.h). */
static void reader_wake(weft_stream *s) {
  /* relaxed: the claim only needs the RMW's atomicity; what the claimer
   * writes (rcancel) reaches wait_closed through abort's release leave
   * (writer_gone's acquire) or is wait_closed's own */
  if (weft__fetch_or(&s->rstate, R_WOKEN, RELAXED) & R_WOKEN) return;
  int fd = s->fd;
  if (fd < 0) return; /* a pipe's write_eof closed it: a receive there fails at once (-EBADF) */
  if (s->bytes) {
    if (s->tls) weft__tls_stop(s->tls);
    shutdown(fd, SHUT_RD);
    return;
  }
  if (weft__io_backend() != WEFT_BACKEND_URING) {
    point_at_eof(fd);
    weft__fd_forget(fd); /* readiness waiters wake and retry, on the new file */
    return;
  }
  /* io_uring: a receive in flight holds the old file; cancel it by that
   * file (a duplicate keeps it named), on the ring it went to */
  int old = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (old < 0) return; /* out of descriptors: the receive ends when data or the end comes */
  point_at_eof(fd);    /* (failing, a receive submitted after the cancel waits for data or the end) */
  /* relaxed: published by the reader's release add, which our caller acquired */
  s->rcancel = spawn_ring_cancel(weft__load(&s->rworker, RELAXED), old);
}

/* close, wait_closed: from now on the reader's receives end; wake a
 * reader waiting in one now, unless the descriptor still has bytes to
 * flush (not a stream socket: the wake replaces the file; wait_closed
 * wakes it after the flush). aborting: the stream was aborted (nothing
 * will be flushed). */
static void closing_begin(weft_stream *s, bool aborting) {
  /* acq_rel: acquire pairs with the reader's release add (rworker); release
   * orders nothing the reader reads (R_CLOSING carries no data) but keeps
   * the RMW symmetric with reader_leave's for the reader that follows */
  uint32_t old = weft__fetch_or(&s->rstate, R_CLOSING, ACQ_REL);
  if ((old & R_IN) && !(old & R_WOKEN) && (s->bytes || aborting || s->wend == s->wpos)) reader_wake(s);
}

/* wait_closed, before freeing: wait until no reader call is in the
 * stream (waking it first if closing_begin could not). Not cancellable. */
static void reader_gone(weft_stream *s) {
  /* acquire: pairs with reader_leave's release: the reader's accesses to s
   * happen before our free */
  uint32_t st = weft__load(&s->rstate, ACQUIRE);
  if (!(st & R_IN)) return;
  reader_wake(s); /* (a no-op when a closer did it already) */
  weft__task *self = weft__task_self();
  int64_t seq = weft__wait_prepare(false);
  weft__waiting_on(self, WEFT__WAITING_IO);
  s->closer = self;
  s->closer_seq = (uint32_t)seq;
  for (;;) {
    if (!(st & R_IN)) { /* it left meanwhile (the failed CAS's acquire, as above) */
      weft__wait_abandon();
      return;
    }
    /* release: publishes closer/closer_seq to reader_leave's acq_rel RMW;
     * acquire on failure: as the load above */
    if (weft__cas(&s->rstate, &st, st | R_WAITER, RELEASE, ACQUIRE)) break;
  }
  weft__wait_commit((uint32_t)seq); /* not cancellable: only reader_leave's wake ends it */
  /* acquire: pairs with reader_leave's release RMW, which preceded its wake */
  st = weft__load(&s->rstate, ACQUIRE);
  (void)st; /* R_IN is clear: the reader woke us after clearing it */
}

/* wait_closed: wait until no writer call (another task's, after an abort)
 * and no abort call is in the stream (W_BUSY). Not cancellable. Called
 * twice by one wait_closed: a wake meant for the first wait may reach the
 * second, so each wake only makes it look again. */
static void writer_gone(weft_stream *s) {
  weft__task *self = weft__task_self();
  for (;;) {
    /* acquire: pairs with writer_leave's and aborter_leave's release RMWs:
     * their accesses to s happen before ours and our free */
    uint32_t st = weft__load(&s->wstate, ACQUIRE);
    if (!W_BUSY(st)) return;
    int64_t seq = weft__wait_prepare(false);
    weft__waiting_on(self, WEFT__WAITING_IO);
    weft__store(&s->wcloser, self, RELAXED); /* relaxed: published by the CAS below */
    weft__store(&s->wcloser_seq, (uint32_t)seq, RELAXED);
    for (;;) {
      if (!W_BUSY(st)) break;
      /* release: publishes wcloser/wcloser_seq to the leavers' acq_rel
       * RMWs; acquire on failure: as the load above */
      if (weft__cas(&s->wstate, &st, st | W_WAITER, RELEASE, ACQUIRE)) break;
    }
    if (!W_BUSY(st)) { /* they left meanwhile */
      weft__wait_abandon();
      return;
    }
    weft__wait_commit((uint32_t)seq); /* not cancellable: only a leaver's wake ends it */
  }
}

/* ------------------------------------------------------------ aborting under a writer */

/* abort's end: the aborter's last touch of s, unless wait_closed waits
 * (it frees s only once woken). */
static void aborter_leave(weft_stream *s) {
  /* release: the aborter's accesses to s (the wakes: rcancel, wcancel)
   * happen before wait_closed's (pairs with writer_gone's acquire);
   * acquire: wcloser/wcloser_seq, as writer_leave */
  uint32_t old = weft__fetch_sub(&s->wstate, W_ABORTER, ACQ_REL);
  writer_gone_wake(s, old, W_ABORTER);
}

/* The first abort's wakes (ABORTING UNDER A WRITER). ws: wstate before
 * its CAS (W_IN: a writer call was in; W_EOF: a pipe's write_eof owns fd). */
static void abort_wake(weft_stream *s, uint32_t ws) {
  /* first, as closing_begin: from now on the reader's receives end; the
   * wakes below come after it, so that a receive they end reads as end of
   * stream (acq_rel: as closing_begin) */
  uint32_t rs = weft__fetch_or(&s->rstate, R_CLOSING, ACQ_REL);
  bool reader = (rs & R_IN) && !(rs & R_WOKEN);
  if (s->sock) {
    int fd = s->fd; /* immutable for a socket until wait_closed */
    if (s->bytes) { /* TCP: a reset now, the queues dropped (tcp_disconnect); elsewhere EINVAL */
      struct sockaddr unspec = {.sa_family = AF_UNSPEC};
      /* The system call itself, not libc's connect: ThreadSanitizer's
       * connect() interceptor, on success, re-creates its model of the
       * descriptor (a write to the descriptor's state), which it then
       * reports as racing with the writer's send on the same number. Why
       * that report is not a race: connect(AF_UNSPEC) makes no new
       * descriptor (the number names the same file before and after); it
       * and a concurrent send or poll meet only in the kernel, under the
       * socket's lock; and it reads or writes no memory of the process
       * but its own stack's `unspec`. What the writer learns from it comes
       * through the kernel (the send fails, the poll fires), and what it
       * must see of ours through wstate's RMWs. */
      syscall(SYS_connect, fd, &unspec, (socklen_t)sizeof unspec);
    }
    shutdown(fd, SHUT_RDWR); /* every send fails from now on: a wait for room wakes */
    if (reader) reader_wake(s);
    return;
  }
  bool writer = (ws & W_IN) && !(ws & W_EOF);
  if (!writer) {
    if (reader) reader_wake(s);
    return;
  }
  int fd = s->fd; /* not W_EOF: write_eof leaves it alone (write_eof_) */
  bool uring = weft__io_backend() == WEFT_BACKEND_URING;
  /* io_uring: a write in flight holds the file: cancel it by that file
   * (a duplicate, taken before any wake replaces it), on its ring */
  int old = uring ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (reader) reader_wake(s); /* (a tty: read and written) */
  point_at_eof(fd); /* every later write fails (-EBADF: a read end) */
  if (!uring) {
    weft__fd_forget(fd); /* readiness waiters wake: -EBADF */
    return;
  }
  /* out of descriptors: the write ends when room comes (the old file is
   * released by point_at_eof when no operation holds it: a pipe's reader
   * then sees end of file) */
  if (old < 0) return;
  /* relaxed: published by the writer's release add, which our CAS acquired */
  s->wcancel = spawn_ring_cancel(weft__load(&s->wworker, RELAXED), old);
}

void weft_stream_close(weft_stream *s) {
  if (!s) return;
  s->closing = true;
  closing_begin(s, aborted(s));
}

void weft_stream_abort(weft_stream *s) {
  if (!s) return;
  uint32_t old = weft__load(&s->wstate, RELAXED); /* relaxed: the CAS checks it */
  /* acq_rel: acquire pairs with writer_enter's release add (wworker);
   * release orders nothing the writer reads (W_ABORT carries no data; the
   * wake is the kernel's). Its order against the writer's add and W_EOF:
   * RMWs of one word, the second reads the first's value */
  while (!weft__cas(&s->wstate, &old, (old | W_ABORT) + W_ABORTER, ACQ_REL, RELAXED)) {
  }
  if (!(old & W_ABORT)) abort_wake(s, old); /* the first abort wakes; later ones only count */
  aborter_leave(s);
}

int weft_stream_wait_closed(weft_stream *s) {
  if (!s) return -EINVAL;
  /* aborted: another task's writer call may still be in (being woken),
   * and the abort itself still running: the writer's half is ours once
   * they left (acquire: writer_gone's) */
  bool aborting = aborted(s);
  if (aborting) writer_gone(s);
  s->closing = true;
  closing_begin(s, aborting);
  int64_t deadline = weft__deadline_after(CLOSE_FLUSH_NS);
  int rc = 0;
  if (!aborting && writer_enter(s)) aborting = true; /* our flush under W_IN: an abort wakes it */
  int settled = ring_send_settle(s, deadline, aborting); /* the kernel is done with wbuf before it is freed */
  if (!aborting) {
    rc = s->werr ? s->werr : settled; /* cancelled or timed out: stop there, as flush_to would */
    if (!rc && s->wend > s->wpos) rc = flush_to(s, 0, deadline);
    if (!rc && s->tls && !s->eof_sent) rc = weft__tls_close_notify(s->tls, s->fd, deadline);
  }
  rc = writer_leave(s, rc);
  if (aborting || aborted(s)) { /* (an abort during the flush: the flush's error is the abort's) */
    rc = 0; /* nothing to flush: asyncio's wait_closed after abort returns normally */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* a reset (fails harmlessly on a non-socket) */
  }
  writer_gone(s);  /* an abort that began meanwhile has returned */
  reader_gone(s);  /* before the TLS layer, the descriptor and the buffers go */
  weft__task *self = weft__task_self();
  weft_task *cancels[2] = {&s->rcancel, &s->wcancel};
  for (int i = 0; i < 2; i++) {
    if (!cancels[i]->rec) continue;
    /* its duplicate of the old file is closed when it ends: wait, not cancellably */
    self->shield_depth++;
    weft_join(*cancels[i]);
    self->shield_depth--;
    weft_task_release(*cancels[i]);
  }
  weft__tls_free(s->tls);
  if (s->fd >= 0) {
    weft__fd_forget(s->fd);
    close(s->fd);
  }
  weft__free(s->rbuf, s->rcap);
  weft__free(s->wbuf, s->wcap);
  weft__free(s->wspare, s->wspare_cap);
  weft__free(s, sizeof *s);
  return rc;
}

int weft_stream_peer(const weft_stream *s, weft_addr *out) {
  if (!s) return -EINVAL;
  return weft_peername(s->fd, out);
}

int weft_stream_local(const weft_stream *s, weft_addr *out) {
  if (!s) return -EINVAL;
  return weft_sockname(s->fd, out);
}

/* ------------------------------------------------------------ TLS (net/tls.c) */

struct weft__tls *weft__stream_tls(const weft_stream *s) { return s->tls; }

int weft__stream_set_tls(weft_stream *s, struct weft__tls *t) {
  int rc = ring_send_settle(s, WEFT__NO_DEADLINE, false);
  if (rc) {
    weft__tls_free(t);
    return rc;
  }
  if (s->tls || s->closing || s->eof_sent || buffered(s) || s->wend > s->wpos) {
    weft__tls_free(t);
    return -EINVAL;
  }
  s->tls = t;
  return 0;
}
