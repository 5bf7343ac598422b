/* io/fd.h: what io/fd.c and io/file.c share: the read/write core on both
 * backends, buffer checks, and the blocking-pool job that runs a file
 * system call on the epoll backend (io/file.c). */
#ifndef WEFT_IO_FD_H
#define WEFT_IO_FD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct iovec;
struct statx;

/* The read/write of every public call: checks fd, iovcnt, off; both
 * backends. Suspends. */
ssize_t weft__io_rw(int fd, const struct iovec *iov, int iovcnt, int64_t off, bool wr, int64_t deadline);

/* Check a buffer and clamp its length to WEFT_IO_MAX: 0 or -EINVAL. */
int weft__io_buf(const void *buf, size_t *len);

/* A system call run on the blocking pool (epoll backend), with the
 * blocking pool's RESULT cancellation: a queued job is dropped
 * (-ECANCELED), a running one is waited for and its result returned. */
enum {
  WEFT__SYS_PREADV, WEFT__SYS_PWRITEV, WEFT__SYS_OPENAT, WEFT__SYS_CLOSE, WEFT__SYS_FSYNC,
  WEFT__SYS_FDATASYNC, WEFT__SYS_FALLOCATE, WEFT__SYS_STATX, WEFT__SYS_UNLINKAT, WEFT__SYS_MKDIRAT,
  WEFT__SYS_RENAMEAT,
};

typedef struct weft__sysjob {
  int op;                    /* WEFT__SYS_* */
  int fd, fd2, flags, iovcnt;
  int64_t off, len;
  const struct iovec *iov;
  const char *path, *path2;
  mode_t mode;
  unsigned mask;
  struct statx *stx;
} weft__sysjob;

int weft__sysjob_run(weft__sysjob *j);

#endif
