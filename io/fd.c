/* io/fd.c: reads, writes, readiness, splice and tee on any descriptor,
 * on both backends (the protocol of an operation is in io/op.h).
 *
 * io_uring: IORING_OP_READ/WRITE(V) with the offset (-1 = the file
 * position); an O_NONBLOCK descriptor with nothing to move completes with
 * -EAGAIN, and the call then waits with IORING_OP_POLL_ADD and tries again,
 * so that weft_read never returns -EAGAIN.
 *
 * epoll: the non-blocking attempt first (preadv2/pwritev2 with RWF_NOWAIT,
 * which works on any descriptor whatever its O_NONBLOCK flag, and on a
 * cached regular file); on -EAGAIN the task waits for readiness
 * (io/readiness.h: the descriptor is registered once, edge-triggered, in
 * the epoll of the worker that first waited on it, and its readiness is
 * kept per direction; the attempt is skipped while that says the last
 * one found it not ready) and tries again. A descriptor epoll cannot
 * watch (a regular file whose data is not cached, -EPERM) is read on the
 * blocking pool (io/file.c's sysjob); a pollable descriptor without
 * RWF_NOWAIT support (EOPNOTSUPP: a tty, a FIFO, some character devices)
 * makes the plain read once poll, on the worker's thread just before it,
 * finds input (or at once when it is O_NONBLOCK), and waits for readiness
 * otherwise: EPOLL AND NOWAIT, at epoll_rw; and WAITS IN THE KERNEL.
 *
 * WAITS IN THE KERNEL. A tty has no RWF_NOWAIT, and its poll answer does
 * not bound the wait of the call that follows it. Its "writable" means
 * some room, not room for the write: the rest of a larger write waits in
 * the kernel for a reader. Its "readable" means one byte, while a read in
 * non-canonical mode with VMIN > 0 and VTIME > 0 (a serial line's usual
 * setting) waits for VMIN bytes, or VTIME after the last one. Run on a
 * worker's thread, such a wait stopped the worker and every task on it,
 * the terminal's other end included (test_fd a_tty_write_larger_than_its_
 * room_..., a_tty_read_waiting_for_vmin_...): io_uring issues a read or
 * write on a pollable file without RWF_NOWAIT support inline when poll
 * says ready (kernel 6.18), and epoll's plain call after readiness did the
 * same.
 *
 * Writes: a write at the file position goes first with RWF_NOWAIT, which
 * a file either honours (a pipe, a socket, a regular file: done, or
 * -EAGAIN, and the plain write follows, waiting as before) or refuses at
 * once (-EOPNOTSUPP). A refused write runs where it may wait: io_uring's
 * own worker thread (IOSQE_ASYNC; a cancel and weft_close interrupt it
 * there, -EINTR: io/op.c, and the deadline is the task's timer, which
 * cancels it: weft__uop_begin_timed), or epoll's blocking pool, where, as
 * Tokio's stdout on its blocking pool, neither can end it once it runs
 * (the caller's buffer is in use); except an O_NONBLOCK file's, which
 * cannot wait: epoll makes its plain write on the worker and waits for
 * readiness on EAGAIN (EPOLL AND NOWAIT). Cost: a write that must wait for
 * a pipe or socket makes one submission more.
 *
 * Reads: epoll asks a read that poll found input for no more than the
 * input there (FIONREAD), which a tty returns in any mode without waiting.
 * io_uring's reads stay plain: the same RWF_NOWAIT probe made a pipe
 * ping-pong's round trip 30% slower (a read waits far more often than a
 * write; one submission more each time, and a probe on the worker's
 * thread, a system call, cost more still), so a blocking tty with VMIN > 0
 * and VTIME > 0 holds an io_uring worker up to VTIME: io.h says so, and
 * that O_NONBLOCK (a serial port's usual async setting) avoids it. Either
 * backend: a second reader of the same blocking terminal, on another
 * worker or in another process, can take the input between the poll and
 * the read, which then waits on the worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <poll.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft/io.h>

#include "core/alloc.h"
#include "core/blocking.h"
#include "io/fd.h"
#include "io/op.h"
#include "io/readiness.h"

/* ------------------------------------------------------------ io_uring */

static ssize_t uring_rw(int fd, const struct iovec *iov, int iovcnt, int64_t off, bool wr, int64_t deadline) {
  /* a write at the file position: RWF_NOWAIT first, then as that answers
   * (WAITS IN THE KERNEL) */
  enum { PLAIN, NOWAIT, ASYNC } how = wr && off < 0 ? NOWAIT : PLAIN;
  for (;;) {
    weft__uop u;
    int err;
    struct io_uring_sqe *sqe =
        how == ASYNC ? weft__uop_begin_timed(&u, deadline, &err) : weft__uop_begin(&u, deadline, &err);
    if (!sqe) return err;
    uint64_t o = (uint64_t)off; /* -1: the file position */
    u.movable = off >= 0; /* positional: a file (or block device), no tie to this worker (io/op.h) */
    u.retry_spurious = true; /* a cancel not for fd (a close of a dup, or nobody's): poll and try again (io/op.c) */
    /* one buffer: the READ/WRITE opcodes take a 32-bit length */
    unsigned n = iov[0].iov_len > WEFT_IO_MAX ? (unsigned)WEFT_IO_MAX : (unsigned)iov[0].iov_len;
    if (iovcnt == 1 && wr)
      io_uring_prep_write(sqe, fd, iov[0].iov_base, n, o);
    else if (iovcnt == 1)
      io_uring_prep_read(sqe, fd, iov[0].iov_base, n, o);
    else if (wr)
      io_uring_prep_writev(sqe, fd, iov, (unsigned)iovcnt, o);
    else
      io_uring_prep_readv(sqe, fd, iov, (unsigned)iovcnt, o);
    if (how == NOWAIT) sqe->rw_flags = RWF_NOWAIT; /* (after the prep, which zeroes it) */
    if (how == ASYNC) sqe->flags |= IOSQE_ASYNC;
    int res = weft__uop_wait(&u, sqe);
    if (how == NOWAIT && (res == -EAGAIN || res == -EOPNOTSUPP)) { /* (-EAGAIN may be a spurious cancel's too) */
      how = res == -EAGAIN ? PLAIN : ASYNC;
      continue;
    }
    if (res != -EAGAIN) return res;
    int p = weft__uop_poll(fd, wr ? POLLOUT : POLLIN, deadline);
    if (p < 0) return p;
  }
}

/* ------------------------------------------------------------ epoll */

/* A non-blocking attempt moved part of the buffers: on a regular file (or
 * block device) that means part of the range was not cached, not that the
 * data ended: move the rest on the blocking pool, so that a file read is
 * short only at end of file, as on io_uring (several buffers too: a
 * weft_preadv returned only the cached part). Past the kernel's limit of
 * one call (WEFT_IO_MAX, io.h) nothing more is asked for. */
static ssize_t finish_on_pool(int fd, const struct iovec *iov, int iovcnt, int64_t off, bool wr, ssize_t r) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++) total += iov[i].iov_len; /* (the kernel took them: at most SSIZE_MAX) */
  if (total > WEFT_IO_MAX) total = WEFT_IO_MAX;
  struct stat st;
  if ((size_t)r >= total || fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) return r;
  if (!wr && off >= 0 && off + r >= st.st_size) return r; /* the end of the file */
  int i = 0;
  size_t skip = (size_t)r;
  while (skip >= iov[i].iov_len) skip -= iov[i++].iov_len; /* (r < total: i stays below iovcnt) */
  int n = iovcnt - i;
  struct iovec one, *rest = n == 1 ? &one : weft__alloc((size_t)n * sizeof *rest);
  if (!rest) return r; /* a short read, as the kernel's may be */
  size_t left = total - (size_t)r;
  int cnt = 0;
  for (int k = i; k < iovcnt && left; k++) {
    size_t from = k == i ? skip : 0, len = iov[k].iov_len - from;
    if (len > left) len = left;
    rest[cnt++] = (struct iovec){.iov_base = (char *)iov[k].iov_base + from, .iov_len = len};
    left -= len;
  }
  weft__sysjob j = {.op = wr ? WEFT__SYS_PWRITEV : WEFT__SYS_PREADV, .fd = fd, .iov = rest, .iovcnt = cnt,
                    .off = off < 0 ? -1 : off + r};
  int more = weft__sysjob_run(&j);
  if (rest != &one) weft__free(rest, (size_t)n * sizeof *rest);
  if (more == -ECANCELED) weft__io_keep_cancel(); /* r bytes moved: report them, keep the cancel */
  return more > 0 ? r + more : r; /* an error after some bytes moved: report the bytes */
}

/* A descriptor without RWF_NOWAIT (EOPNOTSUPP): may the plain call run on
 * the worker? Only where it cannot wait in the kernel: an O_NONBLOCK file
 * (it says EAGAIN itself; as on io_uring, a FIFO's read end that no writer
 * opened yet then reads 0, read(2)'s answer), or a read that poll, just
 * before it and on this thread, finds something to return (input, its
 * end, an error), asking no more than *most: the input there (FIONREAD;
 * a tty read waits for VMIN bytes otherwise: WAITS IN THE KERNEL). 0: make
 * the plain call; -EAGAIN: not ready (wait for readiness); 1: a blocking
 * write, or a file poll cannot tell (regular, block device, directory: a
 * tmpfs file has no RWF_NOWAIT), O_NONBLOCK or not: the blocking pool.
 * (EPOLL AND NOWAIT) */
static int plain_ok(int fd, bool wr, size_t *most) {
  struct stat st;
  *most = SIZE_MAX;
  if (fstat(fd, &st) != 0) return -errno;
  /* (poll says ready always; O_NONBLOCK does not stop a disk's wait) */
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode)) return 1;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (fl & O_NONBLOCK) return 0;
  if (wr) return 1;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n;
  while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR) {
  }
  if (n < 0) return -errno;
  if (n == 0) return -EAGAIN;
  int in;
  if (ioctl(fd, FIONREAD, &in) == 0 && in > 0) *most = (size_t)in; /* (0 or no answer: an end or an error, at once) */
  return 0;
}

/* iov cut to its first most bytes, in *one (a short read is a read's
 * right): the iovec to read into. */
static const struct iovec *at_most(const struct iovec *iov, int *iovcnt, size_t most, struct iovec *one) {
  size_t total = 0;
  for (int i = 0; i < *iovcnt; i++) total += iov[i].iov_len;
  if (total <= most) return iov;
  int i = 0;
  while (iov[i].iov_len == 0) i++; /* (total > most: one is not empty) */
  one->iov_base = iov[i].iov_base;
  one->iov_len = iov[i].iov_len < most ? iov[i].iov_len : most;
  *iovcnt = 1;
  return one;
}

/* EPOLL AND NOWAIT. A descriptor without RWF_NOWAIT (a tty, a FIFO, an
 * inotify descriptor, an eventfd's writes; EOPNOTSUPP) tells nothing of
 * its readiness by that refusal, so it must not clear READY: an owned
 * descriptor (a stream's) waits for an edge with no re-report (no MOD), and
 * a canonical tty holding two lines, of which a read returns one, gives
 * none: the stream waited with the second line there. Its plain call runs
 * on the worker only where it cannot wait there (plain_ok: an O_NONBLOCK
 * file; a read once poll finds input on this thread just before it, so
 * that no task of this worker can take that in between, as io_uring checks
 * poll before it issues such a read inline); a blocking write, which may
 * wait, goes to the blocking pool (WAITS IN THE KERNEL). An
 * O_NONBLOCK file's write went to the pool too, which returned its EAGAIN
 * to the caller (weft_write never returns -EAGAIN: io.h); it now waits for
 * readiness as any other. */
static ssize_t epoll_rw(int fd, const struct iovec *iov, int iovcnt, int64_t off, bool wr, int64_t deadline) {
  int nowait = RWF_NOWAIT;
  int rc = weft__io_cancel_point();
  if (rc) return rc;
  weft__ready rd;
  bool ready = weft__ready_begin(&rd, fd, wr ? WEFT__DIR_OUT : WEFT__DIR_IN);
  if (!ready) { /* nothing to move: the call returns 0 at once whatever the readiness (read(2)) */
    size_t any = 0;
    for (int i = 0; i < iovcnt; i++) any |= iov[i].iov_len;
    ready = any == 0;
  }
  for (;;) {
    int e = EAGAIN;
    size_t most = SIZE_MAX;
    int ok = ready && !nowait ? plain_ok(fd, wr, &most) : 0; /* (EPOLL AND NOWAIT) */
    if (ok < 0 && ok != -EAGAIN) return ok;
    if (ok == 1) { /* it may wait: on the pool (WAITS IN THE KERNEL), as a file epoll cannot watch */
      weft__sysjob j = {.op = wr ? WEFT__SYS_PWRITEV : WEFT__SYS_PREADV, .fd = fd, .iov = iov, .iovcnt = iovcnt, .off = off};
      return weft__sysjob_run(&j);
    }
    if (ready && ok == 0) {
      struct iovec one;
      int cnt = iovcnt;
      const struct iovec *v = most == SIZE_MAX ? iov : at_most(iov, &cnt, most, &one);
      ssize_t r = wr ? pwritev2(fd, v, cnt, off, nowait) : preadv2(fd, v, cnt, off, nowait);
      if (r > 0 && nowait) return finish_on_pool(fd, iov, iovcnt, off, wr, r);
      if (r >= 0) return r;
      e = errno;
      if (e == EINTR) continue;
      if (e == EOPNOTSUPP && nowait) { /* no RWF_NOWAIT: says nothing of readiness (EPOLL AND NOWAIT) */
        nowait = 0;
        continue;
      }
      if (e != EAGAIN) return -e;
    }
    if (ready) weft__ready_clear(&rd);
    if (deadline != WEFT__NO_DEADLINE && weft_now_ns() >= deadline) {
      /* "not ready" is advice (io/readiness.c: an event may be on its way
       * to the dispatch); with no time left to wait for it, try once: a
       * passed deadline returns what can move now, as io_uring's read
       * submitted before its LINK_TIMEOUT does */
      if (!ready) {
        ready = true;
        continue;
      }
      return -ETIMEDOUT;
    }
    rc = weft__ready_wait(&rd, deadline);
    if (rc == -EPERM) { /* not pollable (a regular file): the blocking pool */
      weft__sysjob j = {.op = wr ? WEFT__SYS_PWRITEV : WEFT__SYS_PREADV, .fd = fd, .iov = iov, .iovcnt = iovcnt, .off = off};
      return weft__sysjob_run(&j);
    }
    if (rc < 0) return rc;
    ready = true;
  }
}

/* The descriptor's readiness in one direction, or in both (a wait that
 * either direction's event ends: io/readiness.h's WEFT__DIR_BOTH). */
static int epoll_poll(int fd, unsigned events, int64_t deadline) {
  struct pollfd p = {.fd = fd, .events = (short)events};
  int rc = weft__io_cancel_point();
  if (rc) return rc;
  bool out = events & POLLOUT, in = events & (POLLIN | POLLPRI);
  weft__ready rd;
  weft__ready_begin(&rd, fd, in && out ? WEFT__DIR_BOTH : out ? WEFT__DIR_OUT : WEFT__DIR_IN);
  for (;;) {
    int n = poll(&p, 1, 0);
    if (n > 0) return (p.revents & POLLNVAL) ? -EBADF : p.revents;
    if (n < 0 && errno != EINTR) return -errno;
    if (n < 0) continue;
    if (deadline != WEFT__NO_DEADLINE && weft_now_ns() >= deadline) return -ETIMEDOUT;
    weft__ready_clear(&rd);
    rc = weft__ready_wait(&rd, deadline);
    if (rc == -EPERM) return (int)(events & (POLLIN | POLLOUT)); /* a regular file: always ready */
    if (rc < 0) return rc;
  }
}

/* ------------------------------------------------------------ shared */

ssize_t weft__io_rw(int fd, const struct iovec *iov, int iovcnt, int64_t off, bool wr, int64_t deadline) {
  int backend = weft__io_backend();
  if (backend < 0) return backend;
  if (fd < 0) return -EBADF;
  if (iovcnt < 1 || iovcnt > IOV_MAX || !iov) return -EINVAL;
  if (iovcnt == 1 && iov[0].iov_len > (size_t)SSIZE_MAX) return -EINVAL; /* uring_rw would clamp it */
  if (off < -1) return -EINVAL;
  if (backend == WEFT_BACKEND_URING) return uring_rw(fd, iov, iovcnt, off, wr, deadline);
  return epoll_rw(fd, iov, iovcnt, off, wr, deadline);
}

/* Check one buffer and clamp its length; 0 or -EINVAL. */
int weft__io_buf(const void *buf, size_t *len) {
  if (*len > (size_t)SSIZE_MAX) return -EINVAL;
  if (!buf && *len) return -EINVAL;
  if (*len > WEFT_IO_MAX) *len = WEFT_IO_MAX;
  return 0;
}

static ssize_t rw1(int fd, const void *buf, size_t len, int64_t off, bool wr, int64_t deadline) {
  int rc = weft__io_buf(buf, &len);
  if (rc) return rc;
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return weft__io_rw(fd, &iov, 1, off, wr, deadline);
}

ssize_t weft_read(int fd, void *buf, size_t len) { return rw1(fd, buf, len, -1, false, WEFT__NO_DEADLINE); }
ssize_t weft_write(int fd, const void *buf, size_t len) { return rw1(fd, buf, len, -1, true, WEFT__NO_DEADLINE); }
ssize_t weft_read_until(int fd, void *buf, size_t len, int64_t deadline) {
  return rw1(fd, buf, len, -1, false, deadline);
}
ssize_t weft_write_until(int fd, const void *buf, size_t len, int64_t deadline) {
  return rw1(fd, buf, len, -1, true, deadline);
}
ssize_t weft_pread(int fd, void *buf, size_t len, int64_t off) { return rw1(fd, buf, len, off, false, WEFT__NO_DEADLINE); }
ssize_t weft_pwrite(int fd, const void *buf, size_t len, int64_t off) {
  return rw1(fd, buf, len, off, true, WEFT__NO_DEADLINE);
}

ssize_t weft_pread_until(int fd, void *buf, size_t len, int64_t off, int64_t deadline) {
  return rw1(fd, buf, len, off, false, deadline);
}
ssize_t weft_pwrite_until(int fd, const void *buf, size_t len, int64_t off, int64_t deadline) {
  return rw1(fd, buf, len, off, true, deadline);
}

ssize_t weft_preadv(int fd, const struct iovec *iov, int iovcnt, int64_t off) {
  return weft__io_rw(fd, iov, iovcnt, off, false, WEFT__NO_DEADLINE);
}
ssize_t weft_pwritev(int fd, const struct iovec *iov, int iovcnt, int64_t off) {
  return weft__io_rw(fd, iov, iovcnt, off, true, WEFT__NO_DEADLINE);
}

int weft_poll(int fd, unsigned events, int64_t deadline) {
  int backend = weft__io_backend();
  if (backend < 0) return backend;
  if (fd < 0) return -EBADF;
  if (backend == WEFT_BACKEND_URING) return weft__uop_poll(fd, events, deadline);
  return epoll_poll(fd, events, deadline);
}

/* ------------------------------------------------------------ splice, tee */

/* An O_NONBLOCK pipe end makes the opcode complete with -EAGAIN: wait for
 * whichever end is not ready and try again (as uring_rw and epoll_splice),
 * so that neither backend returns -EAGAIN. */
static ssize_t uring_splice(int in, int64_t off_in, int out, int64_t off_out, size_t len, unsigned flags, bool is_tee) {
  for (;;) {
    weft__uop u;
    int err;
    struct io_uring_sqe *sqe = weft__uop_begin(&u, WEFT__NO_DEADLINE, &err);
    if (!sqe) return err;
    if (is_tee)
      io_uring_prep_tee(sqe, in, out, (unsigned)len, flags);
    else
      io_uring_prep_splice(sqe, in, off_in, out, off_out, (unsigned)len, flags);
    int res = weft__uop_wait(&u, sqe);
    if (res != -EAGAIN) return res;
    struct pollfd p[2] = {{.fd = in, .events = POLLIN}, {.fd = out, .events = POLLOUT}};
    if (poll(p, 2, 0) < 0 && errno != EINTR) return -errno;
    int rc;
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
      rc = weft__uop_poll(in, POLLIN, WEFT__NO_DEADLINE);
    else if (!(p[1].revents & (POLLOUT | POLLERR)))
      rc = weft__uop_poll(out, POLLOUT, WEFT__NO_DEADLINE);
    else
      rc = weft_yield(); /* both ready, yet EAGAIN (a race with another user): try again */
    if (rc < 0) return rc;
  }
}

/* SPLICE ENDS THAT BLOCK (epoll). SPLICE_F_NONBLOCK makes only the
 * pipe's side non-blocking: an end that is neither a pipe nor a socket is
 * read (copy_splice_read) or written (iter_file_splice_write) as a
 * blocking file, on the calling thread. A splice from a terminal with no
 * input, or into a terminal without room for it, waited there, stopping
 * the worker and every task on it (the terminal's writer, or reader, on
 * that worker: a deadlock; test_fd splice_with_a_tty_end_...). So such
 * an end decides where the try runs: a pollable
 * input (a tty, a character device) on the worker once poll, just before
 * it on this thread, finds input (as weft_read of a tty: EPOLL AND
 * NOWAIT); an output of that kind, or a regular file either way (whose
 * data may not be cached), on the blocking pool, where a write may wait
 * for room (WAITS IN THE KERNEL: a cancel does not end it once it runs).
 * io_uring runs every splice on the kernel's own worker thread. */
enum { END_NONBLOCK, END_POLL, END_POOL };

static int splice_end(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return END_NONBLOCK; /* (the call reports the error) */
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return END_NONBLOCK;
  return S_ISCHR(st.st_mode) ? END_POLL : END_POOL;
}

typedef struct splice_job {
  int in, out;
  int64_t off_in, off_out;
  size_t len;
  unsigned flags;
  bool is_tee;
} splice_job;

/* One try, the pipe's side non-blocking: the bytes moved or -errno. */
static int splice_try(void *arg) {
  splice_job *j = arg;
  loff_t oi = j->off_in, oo = j->off_out;
  ssize_t r = j->is_tee ? tee(j->in, j->out, j->len, j->flags | SPLICE_F_NONBLOCK)
                        : splice(j->in, j->off_in < 0 ? NULL : &oi, j->out, j->off_out < 0 ? NULL : &oo, j->len,
                                 j->flags | SPLICE_F_NONBLOCK);
  return r < 0 ? -errno : (int)r; /* (len <= WEFT_IO_MAX) */
}

/* epoll: the non-blocking call; on -EAGAIN wait for whichever end is not
 * ready (poll with no timeout says which) */
static ssize_t epoll_splice(int in, int64_t off_in, int out, int64_t off_out, size_t len, unsigned flags, bool is_tee) {
  int rc = weft__io_cancel_point();
  if (rc) return rc;
  splice_job j = {.in = in, .out = out, .off_in = off_in, .off_out = off_out, .len = len, .flags = flags, .is_tee = is_tee};
  int in_end = is_tee ? END_NONBLOCK : splice_end(in), out_end = is_tee ? END_NONBLOCK : splice_end(out);
  bool pool = in_end == END_POOL || out_end != END_NONBLOCK; /* (SPLICE ENDS THAT BLOCK) */
  weft__ready rin, rout; /* snapshots before each try (io/readiness.h) */
  weft__ready_begin(&rin, in, WEFT__DIR_IN);
  weft__ready_begin(&rout, out, WEFT__DIR_OUT);
  for (;;) {
    ssize_t r;
    struct pollfd p[2] = {{.fd = in, .events = POLLIN}, {.fd = out, .events = POLLOUT}};
    if (pool)
      r = weft__blocking_call(splice_try, &j, WEFT__BLOCKING_RESULT);
    else if (in_end == END_POLL && poll(p, 1, 0) == 0)
      r = -EAGAIN; /* no input: the read would wait on this thread */
    else
      r = splice_try(&j);
    if (r >= 0) return r;
    if (r == -EINTR) continue;
    if (r != -EAGAIN) return r;
    if (poll(p, 2, 0) < 0 && errno != EINTR) return -errno;
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      weft__ready_clear(&rin);
      rc = weft__ready_wait(&rin, WEFT__NO_DEADLINE);
    } else if (!(p[1].revents & (POLLOUT | POLLERR))) {
      weft__ready_clear(&rout);
      rc = weft__ready_wait(&rout, WEFT__NO_DEADLINE);
    } else {
      rc = weft_yield(); /* both ready, yet EAGAIN (a race with another user): try again */
    }
    if (rc < 0 && rc != -EPERM) return rc;
    weft__ready_begin(&rin, in, WEFT__DIR_IN); /* fresh snapshots for the next try */
    weft__ready_begin(&rout, out, WEFT__DIR_OUT);
  }
}

static ssize_t splice_common(int in, int64_t off_in, int out, int64_t off_out, size_t len, unsigned flags, bool is_tee) {
  int backend = weft__io_backend();
  if (backend < 0) return backend;
  if (in < 0 || out < 0) return -EBADF;
  if (len > (size_t)SSIZE_MAX || off_in < -1 || off_out < -1) return -EINVAL;
  if (len > WEFT_IO_MAX) len = WEFT_IO_MAX;
  if (backend == WEFT_BACKEND_URING) return uring_splice(in, off_in, out, off_out, len, flags, is_tee);
  return epoll_splice(in, off_in, out, off_out, len, flags, is_tee);
}

ssize_t weft_splice(int in, int64_t off_in, int out, int64_t off_out, size_t len, unsigned flags) {
  return splice_common(in, off_in, out, off_out, len, flags, false);
}

ssize_t weft_tee(int in, int out, size_t len, unsigned flags) { return splice_common(in, -1, out, -1, len, flags, true); }
