/* weft/io.h: files and descriptors, on the calling task's worker's reactor.
 *
 * Each worker owns one io_uring ring (or, where io_uring cannot be set up or
 * WEFT_BACKEND=epoll asks for it, one epoll instance with the same API).
 * Every call below suspends the calling task until the operation is done
 * (a task, not its thread, waits), and is a cancellation point.
 *
 * Backends. io_uring: every operation is one io_uring opcode on the
 * worker's ring. epoll: descriptor reads and writes are non-blocking
 * system calls (preadv2/pwritev2 with RWF_NOWAIT) retried when epoll says
 * the descriptor is ready; regular files, and the file-system calls (open,
 * fsync, statx, ...), run on the blocking-thread pool (weft_to_thread's).
 *
 * Cancellation. A cancelled operation is cancelled in the kernel
 * (IORING_OP_ASYNC_CANCEL) and the call returns only after the kernel (or
 * the pool thread) is done with the caller's buffer: never while it may
 * still be written. It returns -ECANCELED, or, when the operation completed
 * before the cancel took effect, its real result (bytes that moved are
 * never lost); the cancel request then stays pending and the task's next
 * suspension returns -ECANCELED.
 *
 * Deadlines. The _until calls (and weft_poll) take a CLOCK_MONOTONIC
 * deadline in ns (weft_now_ns() + timeout; WEFT_NO_DEADLINE = none): when
 * it passes first, the operation is cancelled as above and the call
 * returns -ETIMEDOUT (or the real result, if it completed first). A
 * deadline already passed (0, or below) still lets the call move what can
 * move at once. io_uring links an IORING_OP_LINK_TIMEOUT to the
 * operation; epoll bounds the readiness wait (a regular file's read on the
 * blocking pool is not interrupted once it runs). Any other call can be
 * bounded from outside with a task's cancellation.
 *
 * Offsets: int64_t, -1 = the file position (read/write advance it).
 * Lengths: a single call moves at most WEFT_IO_MAX bytes (the kernel's own
 * limit, 0x7ffff000) and may move fewer (partial results are returned as
 * they are); the _full calls loop until done.
 *
 * Errors, for every call: a negative errno. -EBADF a negative or closed
 * descriptor; -EINVAL a length past SSIZE_MAX, a NULL buffer with a
 * length, a NULL path, an offset below -1, a call outside a task; -ENAMETOOLONG a path too
 * long; -ECANCELED; -ETIMEDOUT (the _until calls); and the kernel's own
 * errors (-ENOENT, -EISDIR, ...). No call leaves a descriptor open on an
 * error path.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include <stdint.h>
#include <sys/types.h>

#include <weft/core.h>

struct iovec;
struct statx;

#ifdef __cplusplus
extern "C" {
#endif

/* The backend of the calling task's runtime (WEFT_BACKEND_URING or
 * WEFT_BACKEND_EPOLL), or -EINVAL outside a task. */
WEFT_API int weft_backend(void);

/* "io_uring" or "epoll", for reports. */
WEFT_API const char *weft_backend_name(int backend);

#define WEFT_NO_DEADLINE INT64_MAX
#define WEFT_IO_MAX ((size_t)0x7ffff000)

/* ------------------------------------------------------------ descriptors */

/* read(2)/write(2) on any descriptor (file, pipe, eventfd, socket, tty):
 * returns the bytes moved (0 at end of file), or a negative errno. On an
 * O_NONBLOCK descriptor the call still waits for readiness (it never
 * returns -EAGAIN). A length of 0 returns 0 (or an error) without waiting.
 * A write to a tty (or another descriptor without RWF_NOWAIT support: a
 * FIFO, an eventfd) that must wait for room waits off the workers: on
 * io_uring in the kernel's worker thread, where a deadline, a cancel or
 * weft_close ends it (the bytes it moved, else -ETIMEDOUT, -ECANCELED,
 * -EBADF); on epoll on the blocking pool, where none of those ends it once
 * it runs (as Tokio's stdout), unless the descriptor is O_NONBLOCK: then it
 * waits for readiness as a pipe's write does. A read of a blocking tty in
 * non-canonical mode with VMIN > 0 and VTIME > 0 returns the input there
 * on epoll; on io_uring the kernel makes that read on the worker's thread
 * once a byte came, where it waits for VMIN bytes or VTIME after the last
 * one, holding the worker: open such a terminal (a serial port) with
 * O_NONBLOCK, and the read waits for readiness off the thread and returns
 * the input there. On either backend a second reader of one blocking
 * terminal (another worker's task, another process) can take the input
 * between the readiness and the read, which then waits on the worker.
 * Suspends. */
WEFT_API ssize_t weft_read(int fd, void *buf, size_t len);
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t len);
WEFT_API ssize_t weft_read_until(int fd, void *buf, size_t len, int64_t deadline_ns);
WEFT_API ssize_t weft_write_until(int fd, const void *buf, size_t len, int64_t deadline_ns);

/* Wait until fd is ready: events and the result are poll(2) bits (POLLIN,
 * POLLOUT; POLLHUP and POLLERR are always reported). Returns the ready
 * bits (> 0), -ETIMEDOUT when the deadline passed first, or a negative
 * errno. Suspends. */
WEFT_API int weft_poll(int fd, unsigned events, int64_t deadline_ns);

/* splice(2) and tee(2) (one end at least a pipe; offsets -1 = none).
 * On epoll a splice into a tty or another character device, or from or
 * into a regular file, runs on the blocking pool (the kernel moves that
 * end's bytes as a blocking call would; a cancel does not end it once it
 * runs); io_uring runs every splice on the kernel's worker thread.
 * Suspends. */
WEFT_API ssize_t weft_splice(int fd_in, int64_t off_in, int fd_out, int64_t off_out, size_t len,
                             unsigned flags);
WEFT_API ssize_t weft_tee(int fd_in, int fd_out, size_t len, unsigned flags);

/* ------------------------------------------------------------ files */

/* openat(2) (dirfd AT_FDCWD for weft_open): the new descriptor (O_CLOEXEC
 * is always added), or a negative errno. Suspends. */
WEFT_API int weft_open(const char *path, int flags, mode_t mode);
WEFT_API int weft_openat(int dirfd, const char *path, int flags, mode_t mode);

/* close(2): 0 or a negative errno (the descriptor is gone either way,
 * except for -EINVAL outside a task: then nothing is closed). Suspends. Tasks waiting on the descriptor (for data, room, readiness or
 * a connection: reads and writes of pipes, sockets and terminals,
 * weft_poll, and weft/net.h's accept, recv, send, connect...), on any
 * worker, are woken first and return -EBADF; they never go on with a file
 * that takes the number next. Reads, writes and polls (weft_read,
 * weft_write, weft_poll, weft_recv, weft_send, weft_accept) waiting on
 * another descriptor of the same file (a dup), still open, go on waiting.
 * A regular file's read or write under way completes or returns -EBADF.
 * A call that starts while the close is under way races it, as with
 * close(2) and threads; close(2) called directly wakes nobody. */
WEFT_API int weft_close(int fd);

/* pread(2)/pwrite(2) at off (-1: the file position): the bytes moved, a
 * short count at end of file or when the kernel moved fewer. Suspends.
 * For files that can seek: on a pipe, socket or tty an offset >= 0 is
 * -ESPIPE on epoll (as pread(2); so is a pwrite at an offset to a /proc
 * file that takes only write(2), as /proc/self/comm) but ignored on
 * io_uring (the kernel's rule for streams), and weft_close does not wake such a call there: use
 * weft_read/weft_write (off -1) for them. */
WEFT_API ssize_t weft_pread(int fd, void *buf, size_t len, int64_t off);
WEFT_API ssize_t weft_pwrite(int fd, const void *buf, size_t len, int64_t off);
WEFT_API ssize_t weft_pread_until(int fd, void *buf, size_t len, int64_t off, int64_t deadline_ns);
WEFT_API ssize_t weft_pwrite_until(int fd, const void *buf, size_t len, int64_t off, int64_t deadline_ns);

/* Loop until len bytes moved: pread_full returns fewer only at end of
 * file; pwrite_full returns len. On an error after some bytes moved the
 * error is returned and *done (if not NULL) says how many moved (also on
 * success); pwrite_full returns -EIO when a write moves nothing. off -1:
 * the file position. Suspends. */
WEFT_API ssize_t weft_pread_full(int fd, void *buf, size_t len, int64_t off, size_t *done);
WEFT_API ssize_t weft_pwrite_full(int fd, const void *buf, size_t len, int64_t off, size_t *done);

/* preadv(2)/pwritev(2) (iovcnt at most IOV_MAX; off -1: the position).
 * Suspends. */
WEFT_API ssize_t weft_preadv(int fd, const struct iovec *iov, int iovcnt, int64_t off);
WEFT_API ssize_t weft_pwritev(int fd, const struct iovec *iov, int iovcnt, int64_t off);

/* fsync(2), fdatasync(2), fallocate(2). Suspends. */
WEFT_API int weft_fsync(int fd);
WEFT_API int weft_fdatasync(int fd);
WEFT_API int weft_fallocate(int fd, int mode, int64_t off, int64_t len);

/* statx(2) (dirfd AT_FDCWD and flags 0 for a plain path; AT_EMPTY_PATH
 * with path "" for dirfd itself). Suspends. */
WEFT_API int weft_statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *out);

/* unlink(2), rmdir(2), mkdir(2), rename(2) relative to the working
 * directory. Suspends. */
WEFT_API int weft_unlink(const char *path);
WEFT_API int weft_rmdir(const char *path);
WEFT_API int weft_mkdir(const char *path, mode_t mode);
WEFT_API int weft_rename(const char *from, const char *to);

/* The whole file at path into buf (at most cap bytes): its size, or
 * -EFBIG when it holds more than cap bytes (buf then holds the first cap).
 * Both whole-file calls move their bytes at the new descriptor's position,
 * so that files that take no offset (a FIFO, a /proc file that has no
 * pwrite) work on both backends. Suspends. */
WEFT_API ssize_t weft_read_file(const char *path, void *buf, size_t cap);

/* Create or truncate path (mode for a new file) and write len bytes:
 * 0 or a negative errno. Suspends. */
WEFT_API int weft_write_file(const char *path, const void *buf, size_t len, mode_t mode);

#ifdef __cplusplus
}
#endif

#endif
