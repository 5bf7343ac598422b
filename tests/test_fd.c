/* tests/test_fd.c: reads, writes, readiness, splice/tee on pipes and
 * eventfds; cancellation at every point of an operation's life; deadlines;
 * bad input. Runs on whichever backend WEFT_BACKEND selects (the suite
 * runs on both). */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

#include <weft/weft.h>

#include "test.h"
#include "test_util.h"

/* ------------------------------------------------------------ basics */

static int pipe_fds[2];

static int reader_task(void *arg) {
  char *buf = arg;
  return (int)weft_read(pipe_fds[0], buf, 64);
}

static int pipe_main(void *arg) {
  int nonblock = (int)(intptr_t)arg;
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0)), 0);
  char buf[64] = {0};
  weft_task r = weft_spawn(reader_task, buf);
  weft_sleep_ns(5000000); /* the reader waits: nothing written yet */
  ASSERT_TRUE(!weft_task_done(r));
  ASSERT_EQ(weft_write(pipe_fds[1], "hello", 5), 5);
  ASSERT_EQ(weft_join(r), 5);
  ASSERT_EQ(memcmp(buf, "hello", 5), 0);
  weft_task_release(r);
  /* end of file once the writer is closed */
  ASSERT_EQ(weft_close(pipe_fds[1]), 0);
  ASSERT_EQ(weft_read(pipe_fds[0], buf, 64), 0);
  ASSERT_EQ(weft_close(pipe_fds[0]), 0);
  return 0;
}

TEST(pipe_read_waits_for_the_writer) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(pipe_main, (void *)0, &c), 0);
}

TEST(nonblocking_pipe_read_waits_too) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(pipe_main, (void *)1, &c), 0);
}

static int eventfd_main(void *arg) {
  (void)arg;
  int fd = eventfd(0, EFD_CLOEXEC);
  uint64_t v = 7, got = 0;
  ASSERT_EQ(weft_write(fd, &v, 8), 8);
  ASSERT_EQ(weft_write(fd, &v, 8), 8);
  ASSERT_EQ(weft_read(fd, &got, 8), 8);
  ASSERT_EQ(got, 14);
  ASSERT_EQ(weft_read_until(fd, &got, 8, weft_now_ns() + 10000000), -ETIMEDOUT);
  ASSERT_EQ(weft_close(fd), 0);
  return 0;
}

TEST(eventfd_read_write) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(eventfd_main, NULL, &c), 0);
}

static int poll_main(void *arg) {
  (void)arg;
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(weft_poll(p[0], POLLIN, weft_now_ns() + 5000000), -ETIMEDOUT);
  int out = weft_poll(p[1], POLLOUT, WEFT_NO_DEADLINE);
  ASSERT_TRUE(out > 0 && (out & POLLOUT));
  ASSERT_EQ(weft_write(p[1], "x", 1), 1);
  int in = weft_poll(p[0], POLLIN, WEFT_NO_DEADLINE);
  ASSERT_TRUE(in > 0 && (in & POLLIN));
  char c;
  ASSERT_EQ(weft_read(p[0], &c, 1), 1);
  ASSERT_EQ(weft_close(p[1]), 0);
  int hup = weft_poll(p[0], POLLIN, WEFT_NO_DEADLINE);
  ASSERT_TRUE(hup > 0 && (hup & POLLHUP));
  ASSERT_EQ(weft_close(p[0]), 0);
  ASSERT_EQ(weft_poll(p[0], POLLIN, WEFT_NO_DEADLINE), -EBADF); /* closed */
  return 0;
}

TEST(poll_reports_in_out_hup_and_times_out) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(poll_main, NULL, &c), 0);
}

static int deadline_main(void *arg) {
  (void)arg;
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  char buf[16];
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_read_until(p[0], buf, sizeof buf, t0 + 20000000), -ETIMEDOUT);
  ASSERT_GE(weft_now_ns() - t0, 20000000);
  ASSERT_EQ(weft_pread_until(p[0], buf, sizeof buf, -1, weft_now_ns() + 5000000), -ETIMEDOUT);
  /* the timed-out reads consumed nothing */
  ASSERT_EQ(weft_write(p[1], "abc", 3), 3);
  ASSERT_EQ(weft_read_until(p[0], buf, sizeof buf, weft_now_ns() + 1000000000), 3);
  ASSERT_EQ(memcmp(buf, "abc", 3), 0);
  /* a deadline already past: data ready still returns it, or times out */
  ASSERT_EQ(weft_write(p[1], "d", 1), 1);
  ssize_t r = weft_read_until(p[0], buf, sizeof buf, t0);
  ASSERT_TRUE(r == 1 || r == -ETIMEDOUT);
  if (r == -ETIMEDOUT) ASSERT_EQ(weft_read(p[0], buf, sizeof buf), 1);
  /* a full pipe: the write times out */
  fcntl(p[1], F_SETPIPE_SZ, 4096);
  static char big[1 << 16];
  ssize_t w = weft_write_until(p[1], big, sizeof big, weft_now_ns() + 1000000000);
  ASSERT_GT(w, 0);
  ASSERT_EQ(weft_pwrite_until(p[1], big, sizeof big, -1, weft_now_ns() + 5000000), -ETIMEDOUT);
  weft_close(p[0]);
  weft_close(p[1]);
  return 0;
}

TEST(read_until_times_out_without_consuming) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(deadline_main, NULL, &c), 0);
}

static int splice_main(void *arg) {
  (void)arg;
  int a[2], b[2];
  ASSERT_EQ(pipe2(a, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(b, O_CLOEXEC), 0);
  ASSERT_EQ(weft_write(a[1], "splice!", 7), 7);
  ASSERT_EQ(weft_tee(a[0], b[1], 7, 0), 7); /* copy, a keeps its data */
  char buf[16] = {0};
  ASSERT_EQ(weft_read(b[0], buf, sizeof buf), 7);
  ASSERT_EQ(memcmp(buf, "splice!", 7), 0);
  ASSERT_EQ(weft_splice(a[0], -1, b[1], -1, 7, 0), 7); /* move */
  memset(buf, 0, sizeof buf);
  ASSERT_EQ(weft_read(b[0], buf, sizeof buf), 7);
  ASSERT_EQ(memcmp(buf, "splice!", 7), 0);
  ASSERT_EQ(weft_splice(-1, -1, b[1], -1, 7, 0), -EBADF);
  for (int i = 0; i < 2; i++) {
    weft_close(a[i]);
    weft_close(b[i]);
  }
  return 0;
}

TEST(splice_and_tee_between_pipes) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(splice_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ cancellation */

static int self_cancel_main(void *arg) {
  (void)arg;
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(weft_write(p[1], "z", 1), 1);
  weft_cancel(weft_current());
  char c;
  ASSERT_EQ(weft_read(p[0], &c, 1), -ECANCELED); /* before submission */
  ASSERT_EQ(weft_read(p[0], &c, 1), 1);           /* the byte is still there */
  weft_close(p[0]);
  weft_close(p[1]);
  return 0;
}

TEST(cancel_before_submission_submits_nothing) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(self_cancel_main, NULL, &c), 0);
}

static int in_flight_main(void *arg) {
  (void)arg;
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  char buf[64];
  weft_task r = weft_spawn(reader_task, buf);
  weft_sleep_ns(5000000);
  weft_cancel(r);
  ASSERT_EQ(weft_join(r), -ECANCELED);
  weft_task_release(r);
  /* the cancelled read took nothing */
  ASSERT_EQ(weft_write(pipe_fds[1], "0123456789", 10), 10);
  char got[16];
  ASSERT_EQ(weft_read(pipe_fds[0], got, sizeof got), 10);
  ASSERT_EQ(memcmp(got, "0123456789", 10), 0);
  weft_close(pipe_fds[0]);
  weft_close(pipe_fds[1]);
  return 0;
}

TEST(cancel_in_flight_waits_for_the_kernel) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(in_flight_main, NULL, &c), 0);
}

/* Races: a reader, and at the same moment a byte written and a cancel
 * from another task (on any worker). Every byte is either returned by the
 * read or still in the pipe; a read that got its byte sees the cancel at
 * its next suspension. */
typedef struct race {
  int fd;
  atomic_int result; /* bytes read, or -ECANCELED */
  atomic_int next_cancelled;
} race;

static int race_reader(void *arg) {
  race *r = arg;
  char c;
  ssize_t n = weft_read(r->fd, &c, 1);
  atomic_store(&r->result, (int)n);
  /* a read that won keeps the cancel (now, or once the canceller runs)
   * for a later suspension */
  for (int i = 0; n == 1 && i < 5000; i++)
    if (weft_sleep_ns(1000000) == -ECANCELED) {
      atomic_store(&r->next_cancelled, 1);
      break;
    }
  return 0;
}

static int race_canceller(void *arg) {
  weft_task *t = arg;
  weft_cancel(*t);
  return 0;
}

static int race_main(void *arg) {
  (void)arg;
  int rounds = (test_sanitized() ? 150 : 600) * (int)test_stress_scale();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  int got = 0, cancelled = 0, left = 0;
  for (int i = 0; i < rounds; i++) {
    race r = {.fd = p[0]};
    atomic_store(&r.result, 99);
    weft_task t = weft_spawn(race_reader, &r);
    if (i % 3) weft_sleep_ns(0); /* sometimes in flight, sometimes not yet */
    weft_task c = weft_spawn(race_canceller, &t);
    ASSERT_EQ(weft_write(p[1], "b", 1), 1);
    weft_join(c);
    weft_task_release(c);
    weft_join(t);
    weft_task_release(t);
    int res = atomic_load(&r.result);
    if (res == 1) {
      got++;
      ASSERT_EQ(atomic_load(&r.next_cancelled), 1);
    } else if (res == -ECANCELED || res == 99) {
      /* (99: cancelled before its body ran) the byte stays in the pipe */
      cancelled++;
      char b;
      ASSERT_EQ(read(p[0], &b, 1), 1);
      left++;
    } else {
      TEST_FAIL("read returned %d", res);
    }
  }
  char b;
  ASSERT_EQ(read(p[0], &b, 1), -1); /* nothing left over: every byte accounted */
  ASSERT_EQ(got + left, rounds);
  fprintf(stderr, "race: %d reads won, %d cancelled\n", got, cancelled);
  weft_close(p[0]);
  weft_close(p[1]);
  return 0;
}

TEST(cancel_racing_with_completion_loses_no_byte) {
  weft_config c = cfg_workers(4);
  ASSERT_EQ(weft_run(race_main, NULL, &c), 0);
}

/* Many readers blocked on pipes, more than the ring has entries, all
 * cancelled from another worker: each returns -ECANCELED, nothing leaks. */
typedef struct fd_buf {
  int fd;
  char buf[8];
} fd_buf;

static int fd_reader(void *arg) {
  fd_buf *b = arg;
  return (int)weft_read(b->fd, b->buf, sizeof b->buf);
}

static int many_blocked_main(void *arg) {
  (void)arg;
  enum { N = 64 };
  int fds0 = count_fds();
  static int p[N][2];
  static fd_buf bufs[N];
  weft_task t[N];
  for (int i = 0; i < N; i++) ASSERT_EQ(pipe2(p[i], O_CLOEXEC), 0);
  for (int i = 0; i < N; i++) {
    bufs[i].fd = p[i][0];
    t[i] = weft_spawn(fd_reader, &bufs[i]);
  }
  weft_sleep_ns(10000000);
  for (int i = 0; i < N; i += 2) ASSERT_EQ(weft_write(p[i][1], "w", 1), 1); /* half complete */
  weft_sleep_ns(10000000);
  for (int i = 0; i < N; i++) weft_cancel(t[i]);
  for (int i = 0; i < N; i++) {
    int rc = weft_join(t[i]);
    ASSERT_EQ(rc, i % 2 ? -ECANCELED : 1);
    weft_task_release(t[i]);
  }
  for (int i = 0; i < N; i++) {
    weft_close(p[i][0]);
    weft_close(p[i][1]);
  }
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(many_blocked_reads_more_than_ring_entries_cancelled) {
  weft_config c = cfg_workers(2);
  c.ring_entries = 4;
  ASSERT_EQ(weft_run(many_blocked_main, NULL, &c), 0);
}

/* Two tasks of one worker read the same pipe (epoll: one registration per
 * descriptor number, so the second watches a duplicate). */
static int same_fd_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  fd_buf a = {.fd = p[0]}, b = {.fd = p[0]};
  weft_task ta = weft_spawn(fd_reader, &a), tb = weft_spawn(fd_reader, &b);
  weft_sleep_ns(5000000);
  ASSERT_EQ(weft_write(p[1], "1", 1), 1);
  weft_sleep_ns(5000000);
  ASSERT_EQ(weft_write(p[1], "2", 1), 1);
  ASSERT_EQ(weft_join(ta), 1);
  ASSERT_EQ(weft_join(tb), 1);
  ASSERT_EQ(a.buf[0] + b.buf[0], '1' + '2');
  weft_task_release(ta);
  weft_task_release(tb);
  weft_close(p[0]);
  weft_close(p[1]);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(two_readers_of_one_descriptor_on_one_worker) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(same_fd_main, NULL, &c), 0);
}

/* Shutdown cancels a task blocked in a read that would never complete. */
static int forever_reader(void *arg) {
  fd_buf *b = arg;
  return (int)weft_read(b->fd, b->buf, sizeof b->buf);
}

TEST(shutdown_cancels_reads_in_flight) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  weft_runtime *rt;
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  static fd_buf bufs[8];
  weft_task t[8];
  for (int i = 0; i < 8; i++) {
    bufs[i].fd = p[0];
    ASSERT_EQ(weft_runtime_submit(rt, forever_reader, &bufs[i], &t[i]), 0);
  }
  usleep(20000);
  for (int i = 0; i < 8; i++) ASSERT_TRUE(!weft_task_done(t[i]));
  for (int i = 0; i < 8; i++) weft_task_release(t[i]);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0); /* returns: every read was cancelled */
  close(p[0]);
  close(p[1]);
}

/* ------------------------------------------------------------ bad input */

static int bad_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  char buf[8];
  ASSERT_EQ(weft_read(-1, buf, 8), -EBADF);
  ASSERT_EQ(weft_write(-5, buf, 8), -EBADF);
  ASSERT_EQ(weft_poll(-1, POLLIN, WEFT_NO_DEADLINE), -EBADF);
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(weft_read(p[0], buf, (size_t)SSIZE_MAX + 1), -EINVAL);
  ASSERT_EQ(weft_write(p[1], NULL, 4), -EINVAL);
  ASSERT_EQ(weft_preadv(p[0], NULL, 1, -1), -EINVAL);
  struct iovec iov = {buf, 8};
  ASSERT_EQ(weft_preadv(p[0], &iov, 0, -1), -EINVAL);
  ASSERT_EQ(weft_preadv(p[0], &iov, IOV_MAX + 1, -1), -EINVAL);
  ASSERT_EQ(weft_pread(p[0], buf, 8, -2), -EINVAL);
  ASSERT_EQ(weft_close(p[0]), 0);
  ASSERT_EQ(weft_close(p[1]), 0);
  ASSERT_EQ(weft_read(p[0], buf, 8), -EBADF); /* closed */
  ASSERT_EQ(weft_write(p[1], buf, 8), -EBADF);
  ASSERT_EQ(weft_close(p[0]), -EBADF);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(bad_input_gets_an_errno) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(bad_main, NULL, &c), 0);
  char buf[4];
  ASSERT_EQ(weft_read(0, buf, 4), -EINVAL); /* outside a task */
  ASSERT_EQ(weft_poll(0, POLLIN, 0), -EINVAL);
}

TEST_MAIN()
