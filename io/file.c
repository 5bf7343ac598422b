/* io/file.c: file-system calls (open, close, fsync, fallocate, statx,
 * unlink, mkdir, rename), the full-length loops and the whole-file
 * helpers, on both backends (the protocol of an operation is in io/op.h).
 *
 * io_uring: one opcode per call (IORING_OP_OPENAT, CLOSE, FSYNC, FALLOCATE,
 * STATX, UNLINKAT, MKDIRAT, RENAMEAT; reads and writes are io/fd.c's).
 * epoll: the same system call runs on the blocking pool (core/blocking.h,
 * RESULT mode: a cancelled call still queued never runs; one already
 * running is waited for and its result returned, so an opened descriptor
 * is never lost and a buffer is never written after the call returned).
 *
 * weft_close wakes the tasks waiting on the descriptor first, on every
 * worker (io/op.h CLOSE on io_uring, io/readiness.c on epoll): they return
 * -EBADF.
 *
 * Cleanup paths (a whole-file helper failing after its open) close with
 * close(2) directly: a pending cancellation must not make the close itself
 * fail and leak the descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft/io.h>

#include "core/blocking.h"
#include "io/fd.h"
#include "io/op.h"
#include "io/readiness.h"

/* ------------------------------------------------------------ the pool's side (epoll) */

static int sysjob_fn(void *arg) {
  weft__sysjob *j = arg;
  long r;
  switch (j->op) {
    case WEFT__SYS_PREADV: r = preadv2(j->fd, j->iov, j->iovcnt, j->off, 0); break;
    case WEFT__SYS_PWRITEV: r = pwritev2(j->fd, j->iov, j->iovcnt, j->off, 0); break;
    case WEFT__SYS_OPENAT: r = openat(j->fd, j->path, j->flags, j->mode); break;
    case WEFT__SYS_CLOSE: r = close(j->fd); break;
    case WEFT__SYS_FSYNC: r = fsync(j->fd); break;
    case WEFT__SYS_FDATASYNC: r = fdatasync(j->fd); break;
    case WEFT__SYS_FALLOCATE: r = fallocate(j->fd, j->flags, j->off, j->len); break;
    case WEFT__SYS_STATX: r = statx(j->fd, j->path, j->flags, j->mask, j->stx); break;
    case WEFT__SYS_UNLINKAT: r = unlinkat(j->fd, j->path, j->flags); break;
    case WEFT__SYS_MKDIRAT: r = mkdirat(j->fd, j->path, j->mode); break;
    case WEFT__SYS_RENAMEAT: r = renameat(j->fd, j->path, j->fd2, j->path2); break;
    default: return -EINVAL;
  }
  return r < 0 ? -errno : (int)r;
}

int weft__sysjob_run(weft__sysjob *j) { return weft__blocking_call(sysjob_fn, j, WEFT__BLOCKING_RESULT); }

/* ------------------------------------------------------------ one call, either backend */

/* async: on io_uring, issue it on the kernel's worker thread (IOSQE_ASYNC),
 * where it may wait (A FIFO'S OPEN). */
static int file_call_on(weft__sysjob *j, bool async) {
  int backend = weft__io_backend();
  if (backend < 0) return backend;
  if (backend != WEFT_BACKEND_URING) return weft__sysjob_run(j);
  weft__uop u;
  int err;
  struct io_uring_sqe *sqe = weft__uop_begin(&u, WEFT__NO_DEADLINE, &err);
  if (!sqe) return err;
  u.movable = true; /* a file-system call: no tie to this worker (io/op.h) */
  switch (j->op) {
    case WEFT__SYS_OPENAT: io_uring_prep_openat(sqe, j->fd, j->path, j->flags, j->mode); break;
    case WEFT__SYS_CLOSE: io_uring_prep_close(sqe, j->fd); break;
    case WEFT__SYS_FSYNC: io_uring_prep_fsync(sqe, j->fd, 0); break;
    case WEFT__SYS_FDATASYNC: io_uring_prep_fsync(sqe, j->fd, IORING_FSYNC_DATASYNC); break;
    case WEFT__SYS_FALLOCATE: io_uring_prep_fallocate(sqe, j->fd, j->flags, (uint64_t)j->off, (uint64_t)j->len); break;
    case WEFT__SYS_STATX: io_uring_prep_statx(sqe, j->fd, j->path, j->flags, j->mask, j->stx); break;
    case WEFT__SYS_UNLINKAT: io_uring_prep_unlinkat(sqe, j->fd, j->path, j->flags); break;
    case WEFT__SYS_MKDIRAT: io_uring_prep_mkdirat(sqe, j->fd, j->path, j->mode); break;
    case WEFT__SYS_RENAMEAT: io_uring_prep_renameat(sqe, j->fd, j->path, j->fd2, j->path2, 0); break;
    default: io_uring_prep_nop(sqe); break; /* not reached: reads and writes are io/fd.c's */
  }
  if (async) sqe->flags |= IOSQE_ASYNC;
  return weft__uop_wait(&u, sqe);
}

static int file_call(weft__sysjob *j) { return file_call_on(j, false); }

/* ------------------------------------------------------------ the calls */

/* A FIFO'S OPEN. io_uring issues an open inline with O_NONBLOCK added
 * (and taken off the file after; kernel 6.18's io_openat2), so that it
 * cannot wait on the submitting thread; a FIFO's write end opened so with
 * no reader fails -ENXIO, where openat(2) waits for a reader (and epoll's,
 * on the blocking pool, does). So that answer to an open that did not ask
 * for O_NONBLOCK is asked again on the kernel's worker thread, which runs
 * the open as openat(2) and may wait there (a cancel interrupts it:
 * -ECANCELED, io/op.c). Any other -ENXIO (a socket's path, a device
 * without its driver) comes back the same, one submission later. A FIFO's
 * read end opened inline does not wait for a writer (open(2) would): its
 * reads then wait for one's bytes, or its end, as they would after. */
int weft_openat(int dirfd, const char *path, int flags, mode_t mode) {
  if (!path) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_OPENAT, .fd = dirfd, .path = path, .flags = flags | O_CLOEXEC, .mode = mode};
  int fd = file_call(&j);
  if (fd == -ENXIO && !(flags & O_NONBLOCK) && weft__io_backend() == WEFT_BACKEND_URING) fd = file_call_on(&j, true);
  return fd;
}

int weft_open(const char *path, int flags, mode_t mode) { return weft_openat(AT_FDCWD, path, flags, mode); }

int weft_close(int fd) {
  if (fd < 0) return -EBADF;
  /* epoll: drop its registration and wake its waiters, who return -EBADF
   * without another try (io/readiness.c, CLOSE AND REUSE) */
  weft__fd_forget(fd);
  weft__sysjob j = {.op = WEFT__SYS_CLOSE, .fd = fd};
  /* not cancellable: a cancel must not leave the descriptor open (io.h:
   * "gone either way"); a pending request stays for the next suspension */
  weft__task *t = weft__task_self();
  if (t) t->shield_depth++;
  /* io_uring: end the operations on fd on every ring first: they hold the
   * file, and the close alone would not end them (io/op.h, CLOSE) */
  if (weft__io_backend() == WEFT_BACKEND_URING) weft__uop_cancel_fd(fd);
  int rc = file_call(&j);
  if (t) t->shield_depth--;
  return rc;
}

int weft_fsync(int fd) {
  if (fd < 0) return -EBADF;
  weft__sysjob j = {.op = WEFT__SYS_FSYNC, .fd = fd};
  return file_call(&j);
}

int weft_fdatasync(int fd) {
  if (fd < 0) return -EBADF;
  weft__sysjob j = {.op = WEFT__SYS_FDATASYNC, .fd = fd};
  return file_call(&j);
}

int weft_fallocate(int fd, int mode, int64_t off, int64_t len) {
  if (fd < 0) return -EBADF;
  if (off < 0 || len <= 0) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_FALLOCATE, .fd = fd, .flags = mode, .off = off, .len = len};
  return file_call(&j);
}

int weft_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *out) {
  if (!path || !out) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_STATX, .fd = dirfd, .path = path, .flags = flags, .mask = mask, .stx = out};
  return file_call(&j);
}

int weft_unlink(const char *path) {
  if (!path) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_UNLINKAT, .fd = AT_FDCWD, .path = path};
  return file_call(&j);
}

int weft_rmdir(const char *path) {
  if (!path) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_UNLINKAT, .fd = AT_FDCWD, .path = path, .flags = AT_REMOVEDIR};
  return file_call(&j);
}

int weft_mkdir(const char *path, mode_t mode) {
  if (!path) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_MKDIRAT, .fd = AT_FDCWD, .path = path, .mode = mode};
  return file_call(&j);
}

int weft_rename(const char *from, const char *to) {
  if (!from || !to) return -EINVAL;
  weft__sysjob j = {.op = WEFT__SYS_RENAMEAT, .fd = AT_FDCWD, .path = from, .fd2 = AT_FDCWD, .path2 = to};
  return file_call(&j);
}

/* ------------------------------------------------------------ full-length loops */

static ssize_t full(int fd, void *buf, size_t len, int64_t off, size_t *done, bool wr) {
  if (len > (size_t)SSIZE_MAX || (!buf && len)) return -EINVAL;
  if (off < -1) return -EINVAL;
  if (len == 0) { /* one call of nothing: its checks (io.h: a bad descriptor, outside a task) */
    ssize_t r = wr ? weft_pwrite(fd, buf, 0, off) : weft_pread(fd, buf, 0, off);
    if (done) *done = 0;
    return r < 0 ? r : 0;
  }
  size_t got = 0;
  ssize_t rc = 0;
  while (got < len) {
    size_t chunk = len - got;
    if (chunk > WEFT_IO_MAX) chunk = WEFT_IO_MAX;
    int64_t at = off < 0 ? -1 : off + (int64_t)got;
    ssize_t r = wr ? weft_pwrite(fd, (const char *)buf + got, chunk, at) : weft_pread(fd, (char *)buf + got, chunk, at);
    if (r < 0) {
      rc = r;
      break;
    }
    if (r == 0) {
      if (wr) rc = -EIO; /* a write that moves nothing would loop forever */
      break;             /* a read: end of file */
    }
    got += (size_t)r;
  }
  if (done) *done = got;
  return rc < 0 ? rc : (ssize_t)got;
}

ssize_t weft_pread_full(int fd, void *buf, size_t len, int64_t off, size_t *done) {
  return full(fd, buf, len, off, done, false);
}

ssize_t weft_pwrite_full(int fd, const void *buf, size_t len, int64_t off, size_t *done) {
  return full(fd, (void *)buf, len, off, done, true);
}

/* ------------------------------------------------------------ whole files */

/* Both at the file position (-1), which a fresh descriptor has at 0, not
 * at offset 0: a file that takes no offset (a FIFO; a seq_file in /proc,
 * which takes no pwrite) fails -ESPIPE on epoll, while io_uring ignores
 * the offset there. */

ssize_t weft_read_file(const char *path, void *buf, size_t cap) {
  if (cap > (size_t)SSIZE_MAX || (!buf && cap)) return -EINVAL;
  int fd = weft_open(path, O_RDONLY, 0);
  if (fd < 0) return fd;
  ssize_t n = weft_pread_full(fd, buf, cap, -1, NULL);
  if (n >= 0 && (size_t)n == cap) {
    char extra;
    ssize_t m = weft_pread(fd, &extra, 1, -1);
    if (m > 0) n = -EFBIG;
    if (m < 0) n = m;
  }
  close(fd); /* not cancellable (see above) */
  return n;
}

int weft_write_file(const char *path, const void *buf, size_t len, mode_t mode) {
  if (len > (size_t)SSIZE_MAX || (!buf && len)) return -EINVAL;
  int fd = weft_open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0) return fd;
  ssize_t n = weft_pwrite_full(fd, buf, len, -1, NULL);
  int rc = close(fd) < 0 ? -errno : 0; /* not cancellable (see above) */
  return n < 0 ? (int)n : rc;
}
