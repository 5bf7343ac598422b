/* net/socket.c: socket calls on both backends (an operation's life is in
 * io/op.h; the patterns are io/fd.c's).
 *
 * io_uring: each call is its opcode (IORING_OP_RECV, SEND, RECVMSG,
 * SENDMSG, ACCEPT, CONNECT) on the worker's ring, with the deadline linked
 * as a timeout. Our sockets are O_NONBLOCK, and io_uring may complete an
 * operation with -EAGAIN on such a socket: the call then waits with
 * IORING_OP_POLL_ADD and tries again, so that no call returns -EAGAIN. A
 * connect that reports -EINPROGRESS/-EALREADY is finished the same way
 * (POLLOUT, then SO_ERROR); so is one on epoll, where EALREADY means that
 * an earlier weft_connect on the socket timed out or was cancelled while
 * the kernel's connect went on: the new call waits for that one.
 *
 * epoll: the non-blocking system call first (MSG_DONTWAIT, accept4 on a
 * non-blocking listener, connect's EINPROGRESS); on EAGAIN the task waits
 * for readiness (io/readiness.h: the descriptor's edge-triggered
 * registration and readiness ticks) and tries again. The call is skipped
 * when the descriptor's readiness says the last try found it not ready
 * and no event came since; a stream's receive (weft__recv_stream) that
 * got less than asked records that the socket is empty, so the next one
 * waits without the try that would fail. The readiness wait is the
 * cancellation point; the call itself moves nothing the caller could lose.
 *
 * The memory an operation names (buffer, msghdr, peer address and its
 * length) lives with the caller (or on this task's stack) and the call
 * returns only after the completion was reaped (io/op.h's buffer rule).
 * Every socket made here is SOCK_CLOEXEC|SOCK_NONBLOCK; every send adds
 * MSG_NOSIGNAL.
 */
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <weft/net.h>

#include "io/fd.h"
#include "io/op.h"
#include "io/readiness.h"
#include "net/net.h"

enum { OP_RECV, OP_SEND, OP_RECVMSG, OP_SENDMSG, OP_ACCEPT };

typedef struct sock_op {
  int kind;
  int fd;
  void *buf;
  size_t len;
  int flags;
  struct msghdr *msg;
  struct sockaddr *sa; /* accept: the peer (may be NULL) */
  socklen_t *salen;
  bool stream; /* a stream socket's receive (weft__recv_stream): short means drained */
} sock_op;

static bool wants_out(int kind) { return kind == OP_SEND || kind == OP_SENDMSG; }

/* ------------------------------------------------------------ io_uring */

static ssize_t uring_sock(sock_op *o, int64_t deadline) {
  for (;;) {
    weft__uop u;
    int err;
    struct io_uring_sqe *sqe = weft__uop_begin(&u, deadline, &err);
    if (!sqe) return err;
    u.retry_dup = true; /* a cancel for another number of the file (a close of a dup): poll and try again (io/op.c) */
    switch (o->kind) {
    case OP_RECV: io_uring_prep_recv(sqe, o->fd, o->buf, o->len, o->flags); break;
    case OP_SEND: io_uring_prep_send(sqe, o->fd, o->buf, o->len, o->flags); break;
    case OP_RECVMSG: io_uring_prep_recvmsg(sqe, o->fd, o->msg, (unsigned)o->flags); break;
    case OP_SENDMSG: io_uring_prep_sendmsg(sqe, o->fd, o->msg, (unsigned)o->flags); break;
    default: io_uring_prep_accept(sqe, o->fd, o->sa, o->salen, SOCK_CLOEXEC | SOCK_NONBLOCK); break;
    }
    int res = weft__uop_wait(&u, sqe);
    if (res != -EAGAIN) return res;
    int p = weft__uop_poll(o->fd, wants_out(o->kind) ? POLLOUT : POLLIN, deadline);
    if (p < 0) return p;
  }
}

/* ------------------------------------------------------------ epoll */

static ssize_t sock_syscall(sock_op *o) {
  switch (o->kind) {
  case OP_RECV: return recv(o->fd, o->buf, o->len, o->flags | MSG_DONTWAIT);
  case OP_SEND: return send(o->fd, o->buf, o->len, o->flags | MSG_DONTWAIT);
  case OP_RECVMSG: return recvmsg(o->fd, o->msg, o->flags | MSG_DONTWAIT);
  case OP_SENDMSG: return sendmsg(o->fd, o->msg, o->flags | MSG_DONTWAIT);
  default: return accept4(o->fd, o->sa, o->salen, SOCK_CLOEXEC | SOCK_NONBLOCK);
  }
}

static ssize_t epoll_sock(sock_op *o, int64_t deadline) {
  int rc = weft__io_cancel_point();
  if (rc) return rc;
  weft__ready rd;
  bool ready = weft__ready_begin(&rd, o->fd, wants_out(o->kind) ? WEFT__DIR_OUT : WEFT__DIR_IN);
  for (;;) {
    if (ready) {
      ssize_t r = sock_syscall(o);
      if (r >= 0) {
        if (o->stream && r > 0 && (size_t)r < o->len) weft__ready_drained(&rd); /* emptied it */
        return r;
      }
      int e = errno;
      if (e == EINTR) continue;
      if (e != EAGAIN && e != EWOULDBLOCK) return -e;
      weft__ready_clear(&rd);
    }
    if (deadline != WEFT__NO_DEADLINE && weft_now_ns() >= deadline) {
      /* "not ready" is advice (io/readiness.c): with no time left to wait
       * for the event, try once, as io/fd.c's epoll_rw does */
      if (!ready) {
        ready = true;
        continue;
      }
      return -ETIMEDOUT;
    }
    rc = weft__ready_wait(&rd, deadline);
    if (rc < 0) return rc;
    ready = true;
  }
}

/* ------------------------------------------------------------ shared */

static ssize_t sock_run(sock_op *o, int64_t deadline) {
  int backend = weft__io_backend();
  if (backend < 0) return backend;
  if (o->fd < 0) return -EBADF;
  if (backend == WEFT_BACKEND_URING) return uring_sock(o, deadline);
  return epoll_sock(o, deadline);
}

static ssize_t recv_send(int kind, int fd, const void *buf, size_t len, int flags, int64_t deadline) {
  int rc = weft__io_buf(buf, &len);
  if (rc) return rc;
  if (kind == OP_SEND) flags |= MSG_NOSIGNAL;
  sock_op o = {.kind = kind, .fd = fd, .buf = (void *)buf, .len = len, .flags = flags};
  return sock_run(&o, deadline);
}

ssize_t weft_recv(int fd, void *buf, size_t len, int flags) {
  return recv_send(OP_RECV, fd, buf, len, flags, WEFT__NO_DEADLINE);
}
ssize_t weft__recv_stream(int fd, void *buf, size_t len, int64_t deadline) {
  int rc = weft__io_buf(buf, &len);
  if (rc) return rc;
  sock_op o = {.kind = OP_RECV, .fd = fd, .buf = buf, .len = len, .stream = true};
  return sock_run(&o, deadline);
}

ssize_t weft_send(int fd, const void *buf, size_t len, int flags) {
  return recv_send(OP_SEND, fd, buf, len, flags, WEFT__NO_DEADLINE);
}
ssize_t weft_recv_until(int fd, void *buf, size_t len, int flags, int64_t deadline) {
  return recv_send(OP_RECV, fd, buf, len, flags, deadline);
}
ssize_t weft_send_until(int fd, const void *buf, size_t len, int flags, int64_t deadline) {
  return recv_send(OP_SEND, fd, buf, len, flags, deadline);
}

ssize_t weft_send_all(int fd, const void *buf, size_t len, size_t *done) {
  size_t off = 0;
  if (done) *done = 0;
  if (len > (size_t)SSIZE_MAX || (!buf && len)) return -EINVAL;
  while (off < len) {
    ssize_t n = weft_send(fd, (const char *)buf + off, len - off, 0);
    if (n < 0) return n;
    off += (size_t)n;
    if (done) *done = off;
  }
  return (ssize_t)len;
}

ssize_t weft__recvmsg_until(int fd, struct msghdr *msg, int flags, int64_t deadline) {
  if (!msg) return -EINVAL;
  sock_op o = {.kind = OP_RECVMSG, .fd = fd, .msg = msg, .flags = flags};
  return sock_run(&o, deadline);
}

ssize_t weft__sendmsg_until(int fd, const struct msghdr *msg, int flags, int64_t deadline) {
  if (!msg) return -EINVAL;
  sock_op o = {.kind = OP_SENDMSG, .fd = fd, .msg = (struct msghdr *)msg, .flags = flags | MSG_NOSIGNAL};
  return sock_run(&o, deadline);
}

ssize_t weft_recvmsg(int fd, struct msghdr *msg, int flags) {
  /* descriptors received with SCM_RIGHTS are close-on-exec, as every one weft makes */
  return weft__recvmsg_until(fd, msg, flags | MSG_CMSG_CLOEXEC, WEFT__NO_DEADLINE);
}
ssize_t weft_sendmsg(int fd, const struct msghdr *msg, int flags) {
  return weft__sendmsg_until(fd, msg, flags, WEFT__NO_DEADLINE);
}

int weft_accept_until(int fd, weft_addr *peer, int64_t deadline) {
  weft_addr tmp;
  weft_addr *p = peer ? peer : &tmp;
  p->len = sizeof p->u;
  sock_op o = {.kind = OP_ACCEPT, .fd = fd, .sa = &p->u.sa, .salen = &p->len};
  ssize_t r = sock_run(&o, deadline);
  if (r < 0) p->len = 0;
  return (int)r;
}

int weft_accept(int fd, weft_addr *peer) { return weft_accept_until(fd, peer, WEFT__NO_DEADLINE); }

/* ------------------------------------------------------------ connect */

static int so_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  return -err;
}

/* A connect that went on in the kernel has ended (writable): its result,
 * from SO_ERROR, then, when that is 0, from connect() again, which moves
 * the socket to connected as io_uring's connect does (without it, a later
 * weft_connect found the socket still "connecting" and returned 0 on epoll
 * where io_uring returned -EISCONN). */
static int connect_result(int fd, const weft_addr *a) {
  int rc = so_error(fd);
  if (rc) return rc;
  if (connect(fd, &a->u.sa, a->len) == 0 || errno == EISCONN) return 0;
  return -errno;
}

static int check_addr(const weft_addr *a) {
  if (!a || !a->len || a->len > sizeof a->u) return -EINVAL;
  return 0;
}

/* A Unix-domain connect never reports EINPROGRESS: a full backlog gives
 * EAGAIN, and no readiness event says when room was made (the socket
 * itself polls writable at once, with SO_ERROR 0, while still not
 * connected). So connect() again, backing off from 1 ms to 50 ms, until
 * it connects, fails otherwise, or the deadline. The backoff is a sleep
 * that weft_close cannot wake: each retry first checks that fd is still
 * the socket it was (device and inode), and returns -EBADF when it was
 * closed meanwhile, never connecting a file that took the number. */
static int unix_connect(int fd, const weft_addr *a, int64_t deadline) {
  int64_t backoff = 1000000;
  struct stat st0; /* fd's identity, taken at the first EAGAIN */
  bool waited = false;
  for (;;) {
    int rc = weft__io_cancel_point();
    if (rc) return rc;
    struct stat st;
    if (waited && (fstat(fd, &st) < 0 || st.st_dev != st0.st_dev || st.st_ino != st0.st_ino)) return -EBADF;
    if (connect(fd, &a->u.sa, a->len) == 0) return 0;
    int e = errno;
    if (e == EINTR) continue;
    if (e != EAGAIN) return -e;
    if (!waited && fstat(fd, &st0) < 0) return -errno;
    waited = true;
    int64_t now = weft_now_ns();
    if (deadline != WEFT__NO_DEADLINE && now >= deadline) return -ETIMEDOUT;
    int64_t until = deadline != WEFT__NO_DEADLINE && deadline - now < backoff ? deadline : now + backoff;
    rc = weft_sleep_until(until);
    if (rc < 0) return rc;
    if (backoff < 50000000) backoff *= 2;
  }
}

int weft_connect(int fd, const weft_addr *a, int64_t deadline) {
  int rc = check_addr(a);
  if (rc) return rc;
  int backend = weft__io_backend();
  if (backend < 0) return backend;
  if (fd < 0) return -EBADF;
  if (a->u.sa.sa_family == AF_UNIX) return unix_connect(fd, a, deadline);
  if (backend == WEFT_BACKEND_URING) {
    weft__uop u;
    int err;
    struct io_uring_sqe *sqe = weft__uop_begin(&u, deadline, &err);
    if (!sqe) return err;
    io_uring_prep_connect(sqe, fd, &a->u.sa, a->len);
    rc = weft__uop_wait(&u, sqe);
    if (rc != -EINPROGRESS && rc != -EALREADY && rc != -EAGAIN) return rc;
    rc = weft__uop_poll(fd, POLLOUT, deadline);
    return rc < 0 ? rc : connect_result(fd, a);
  }
  rc = weft__io_cancel_point();
  if (rc) return rc;
  weft__ready rd;
  weft__ready_begin(&rd, fd, WEFT__DIR_OUT); /* the snapshot before the call (io/readiness.h) */
  if (connect(fd, &a->u.sa, a->len) == 0) return 0;
  /* EALREADY: a connect still under way (an earlier call timed out or was
   * cancelled; the kernel goes on): wait for it, as io_uring's path does */
  if (errno != EINPROGRESS && errno != EALREADY && errno != EINTR && errno != EAGAIN) return -errno;
  for (;;) { /* until writable: a wake says that an event came, not which (a reset returns -EBADF) */
    weft__ready_clear(&rd);
    rc = weft__ready_wait(&rd, deadline);
    if (rc < 0) return rc;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 0) != 0) break; /* ready, or poll's own error: SO_ERROR says */
  }
  return connect_result(fd, a);
}

int weft_connect_addr(const weft_addr *a, int64_t deadline) {
  int rc = check_addr(a);
  if (rc) return rc;
  int fd = weft_socket(a->u.sa.sa_family, SOCK_STREAM, 0);
  if (fd < 0) return fd;
  rc = weft_connect(fd, a, deadline);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  return fd;
}

/* ------------------------------------------------------------ plain calls */

int weft_socket(int family, int type, int protocol) {
  int fd = socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
  return fd < 0 ? -errno : fd;
}

int weft_shutdown(int fd, int how) {
  if (fd < 0) return -EBADF;
  return shutdown(fd, how) < 0 ? -errno : 0;
}

int weft_setsockopt(int fd, int level, int name, const void *val, socklen_t len) {
  if (fd < 0) return -EBADF;
  if (!val && len) return -EINVAL;
  return setsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
}

int weft_getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
  if (fd < 0) return -EBADF;
  if (!val || !len) return -EINVAL;
  return getsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
}

static int set_int(int fd, int level, int name, bool on) {
  int v = on;
  return weft_setsockopt(fd, level, name, &v, sizeof v);
}

int weft_set_nodelay(int fd, bool on) { return set_int(fd, IPPROTO_TCP, TCP_NODELAY, on); }
int weft_set_reuseaddr(int fd, bool on) { return set_int(fd, SOL_SOCKET, SO_REUSEADDR, on); }
int weft_set_reuseport(int fd, bool on) { return set_int(fd, SOL_SOCKET, SO_REUSEPORT, on); }

int weft_sockname(int fd, weft_addr *out) {
  if (fd < 0) return -EBADF;
  if (!out) return -EINVAL;
  memset(&out->u, 0, sizeof out->u); /* a Unix path filling sun_path has no terminator: the zeroes after it end it */
  out->len = sizeof out->u;
  if (getsockname(fd, &out->u.sa, &out->len) < 0) {
    out->len = 0;
    return -errno;
  }
  return 0;
}

int weft_peername(int fd, weft_addr *out) {
  if (fd < 0) return -EBADF;
  if (!out) return -EINVAL;
  memset(&out->u, 0, sizeof out->u); /* a Unix path filling sun_path has no terminator: the zeroes after it end it */
  out->len = sizeof out->u;
  if (getpeername(fd, &out->u.sa, &out->len) < 0) {
    out->len = 0;
    return -errno;
  }
  return 0;
}

int weft_listen(const weft_addr *a, int backlog, unsigned flags) {
  int rc = check_addr(a);
  if (rc) return rc;
  if (flags & ~WEFT_LISTEN_REUSEPORT) return -EINVAL;
  int fd = weft_socket(a->u.sa.sa_family, SOCK_STREAM, 0);
  if (fd < 0) return fd;
  if (a->u.sa.sa_family != AF_UNIX) {
    rc = weft_set_reuseaddr(fd, true);
    if (!rc && (flags & WEFT_LISTEN_REUSEPORT)) rc = weft_set_reuseport(fd, true);
    if (!rc && a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&a->u.in6.sin6_addr)) {
      int off = 0; /* the IPv6 wildcard takes IPv4 too (whatever net.ipv6.bindv6only says) */
      (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    }
  }
  if (!rc && bind(fd, &a->u.sa, a->len) < 0) rc = -errno;
  if (!rc && listen(fd, backlog <= 0 ? SOMAXCONN : backlog) < 0) rc = -errno;
  if (rc) {
    close(fd);
    return rc;
  }
  return fd;
}
