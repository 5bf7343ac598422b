/* tests/test_net_stream.c: the stream reader and writer: read, read_all,
 * readexactly (incomplete reads), readuntil/readline (limits, partial data
 * at end of stream, data left readable), at_eof, write/writev/drain with
 * back-pressure against a slow reader (every byte checked), write_eof,
 * close, peer resets, bad input; closing while another task waits in a
 * read (wait_closed, abort, close then join; sockets, TCP, pipes, datagram
 * sockets; a server's handler that left a reader behind); abort from
 * another task while a writer waits in write, writev, drain or write_eof
 * for a peer that does not read (Unix sockets, TCP, pipes; wait_closed
 * before or after the writer returned), and at random moments against a
 * writer's calls; no descriptor leaked. Runs on whichever backend WEFT_BACKEND selects. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pty.h>
#include <string.h>
#include <stdio.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include <termios.h>
#include <unistd.h>

#include <weft/weft.h>

#include "core/task.h"
#include "test.h"
#include "test_util.h"

/* A stream over one end of a socketpair; *peer gets the other end. */
static weft_stream *pair_stream(int *peer) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
  weft_stream *s;
  ASSERT_EQ(weft_stream_from_fd(sv[0], &s), 0);
  *peer = sv[1];
  return s;
}

typedef struct feed {
  int fd;
  const char *data;
  size_t len;
  size_t chunk;
  int64_t pause_ns;
  bool close_after;
} feed;

/* Send data in chunks with pauses (partial arrivals), then maybe close. */
static int feeder(void *arg) {
  feed *f = arg;
  for (size_t off = 0; off < f->len;) {
    size_t n = f->len - off < f->chunk ? f->len - off : f->chunk;
    ASSERT_EQ(weft_send_all(f->fd, f->data + off, n, NULL), (ssize_t)n);
    off += n;
    if (f->pause_ns) weft_sleep_ns(f->pause_ns);
  }
  if (f->close_after) ASSERT_EQ(weft_shutdown(f->fd, SHUT_WR), 0);
  return 0;
}

static int reader_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int peer;
  weft_stream *s = pair_stream(&peer);
  const char *text = "line one\nline two\r\nthird|part\nrest without newline";
  feed f = {.fd = peer, .data = text, .len = strlen(text), .chunk = 3, .pause_ns = 1000000, .close_after = true};
  weft_task t = weft_spawn(feeder, &f);
  char buf[128];
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 9);
  ASSERT_EQ(memcmp(buf, "line one\n", 9), 0);
  ASSERT_EQ(weft_stream_readuntil(s, "\r\n", 2, buf, sizeof buf, NULL), 10);
  ASSERT_EQ(memcmp(buf, "line two\r\n", 10), 0);
  size_t got;
  ASSERT_EQ(weft_stream_readexactly(s, buf, 6, &got), 6);
  ASSERT_EQ(got, 6);
  ASSERT_EQ(memcmp(buf, "third|", 6), 0);
  ASSERT_EQ(weft_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), 5);
  ASSERT_EQ(memcmp(buf, "part\n", 5), 0);
  ssize_t n = weft_stream_read(s, buf, 4); /* what is buffered, or one receive */
  ASSERT_TRUE(n >= 1 && n <= 4);
  ASSERT_EQ(weft_stream_readexactly(s, buf + n, 4 - (size_t)n, NULL), 4 - n);
  ASSERT_EQ(memcmp(buf, "rest", 4), 0);
  ASSERT_TRUE(!weft_stream_at_eof(s));
  /* readuntil at end of stream: -ENODATA with the partial bytes */
  memset(buf, 0, sizeof buf);
  ASSERT_EQ(weft_stream_readuntil(s, "\n", 1, buf, sizeof buf, &got), -ENODATA);
  ASSERT_EQ(got, strlen(" without newline"));
  ASSERT_STR_EQ(buf, " without newline");
  ASSERT_TRUE(weft_stream_at_eof(s));
  ASSERT_EQ(weft_stream_read(s, buf, sizeof buf), 0);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 0);
  ASSERT_EQ(weft_stream_readexactly(s, buf, 1, &got), -ENODATA);
  ASSERT_EQ(got, 0);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(readline_readuntil_readexactly_partial_arrivals) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(reader_main, NULL, &c), 0);
}

static int incomplete_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_send_all(peer, "12345", 5, NULL), 5);
  ASSERT_EQ(weft_shutdown(peer, SHUT_WR), 0);
  char buf[16] = {0};
  size_t got = 99;
  ASSERT_EQ(weft_stream_readexactly(s, buf, 10, &got), -ENODATA);
  ASSERT_EQ(got, 5);
  ASSERT_STR_EQ(buf, "12345");
  ASSERT_TRUE(weft_stream_at_eof(s));
  weft_stream_close(s);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  /* readline returns the partial last line at end of stream */
  s = pair_stream(&peer);
  ASSERT_EQ(weft_send_all(peer, "a\nbc", 4, NULL), 4);
  close(peer);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 2);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 2);
  ASSERT_EQ(memcmp(buf, "bc", 2), 0);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 0);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  return 0;
}

TEST(readexactly_incomplete_reports_the_bytes) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(incomplete_main, NULL, &c), 0);
}

static int limit_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_stream_set_limit(s, 1000), 0);
  ASSERT_EQ(weft_stream_set_limit(s, 0), -EINVAL);
  enum { N = 5000 };
  static char big[N + 2];
  for (int i = 0; i < N; i++) big[i] = (char)('a' + i % 26);
  big[N] = '\n';
  feed f = {.fd = peer, .data = big, .len = N + 1, .chunk = 700, .pause_ns = 500000, .close_after = true};
  weft_task t = weft_spawn(feeder, &f);
  static char buf[N + 2];
  /* no separator within the limit: -ENOBUFS, nothing consumed */
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), -ENOBUFS);
  ASSERT_EQ(weft_stream_readuntil(s, "\n", 1, buf, sizeof buf, NULL), -ENOBUFS);
  /* the data stays readable: all of it, in order */
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_EQ(weft_stream_set_limit(s, 1 << 20), 0);
  ASSERT_EQ(weft_stream_readuntil(s, "\n", 1, buf, 10, NULL), -ENOBUFS); /* does not fit in cap */
  ASSERT_EQ(weft_stream_read_all(s, buf, 100), -ENOBUFS);                 /* more than cap */
  ASSERT_EQ(memcmp(buf, big, 100), 0);
  ASSERT_EQ(weft_stream_read_all(s, buf + 100, sizeof buf - 100), N + 1 - 100);
  ASSERT_EQ(memcmp(buf, big, N + 1), 0);
  ASSERT_TRUE(weft_stream_at_eof(s));
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  /* a separator just within the limit is found; one past it is not */
  s = pair_stream(&peer);
  ASSERT_EQ(weft_stream_set_limit(s, 10), 0);
  ASSERT_EQ(weft_send_all(peer, "123456789\n12345678901\n", 22, NULL), 22);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 10);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), -ENOBUFS);
  ASSERT_EQ(weft_stream_readexactly(s, buf, 12, NULL), 12);
  ASSERT_EQ(memcmp(buf, "12345678901\n", 12), 0);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(readuntil_limit_overrun_leaves_the_data_readable) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(limit_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ writer */

typedef struct slow {
  int fd;
  size_t expect;
  _Atomic int64_t pause_ns; /* set by the writer while the reader runs (atomic: TSan saw the race) */
  size_t got;
  bool ok;
} slow;

/* Read in small pieces with pauses, checking the pattern. */
static int slow_reader(void *arg) {
  slow *r = arg;
  char buf[4096];
  r->ok = true;
  while (r->got < r->expect) {
    ssize_t n = weft_recv(r->fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != (char)((r->got + (size_t)i) * 13 + 1)) r->ok = false;
    r->got += (size_t)n;
    if (r->pause_ns) weft_sleep_ns(r->pause_ns);
  }
  return 0;
}

static int backpressure_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int peer;
  weft_stream *s = pair_stream(&peer);
  int small = 4096;
  ASSERT_EQ(weft_setsockopt(weft_stream_fd(s), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  ASSERT_EQ(weft_setsockopt(peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  ASSERT_EQ(weft_stream_set_watermarks(s, 32768, 8192), 0);
  ASSERT_EQ(weft_stream_set_watermarks(s, 1, 2), -EINVAL);
  size_t total = test_sanitized() ? 400000 : 2000000;
  slow r = {.fd = peer, .expect = total, .pause_ns = 0};
  /* the reader has not started: drain cannot finish */
  char chunk[5000];
  size_t off = 0;
  for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (char)((off + i) * 13 + 1);
  ASSERT_EQ(weft_stream_write(s, chunk, sizeof chunk), 0);
  off += sizeof chunk;
  weft_task t = weft_spawn(slow_reader, &r);
  size_t peak = 0;
  while (off < total) {
    size_t n = total - off < sizeof chunk ? total - off : sizeof chunk;
    for (size_t i = 0; i < n; i++) chunk[i] = (char)((off + i) * 13 + 1);
    if (off % 3) { /* writev with two pieces */
      struct iovec iov[2] = {{chunk, n / 2}, {chunk + n / 2, n - n / 2}};
      ASSERT_EQ(weft_stream_writev(s, iov, 2), 0);
    } else {
      ASSERT_EQ(weft_stream_write(s, chunk, n), 0);
    }
    off += n;
    size_t b = weft_stream_buffered(s);
    if (b > peak) peak = b;
    ASSERT_LE(b, 32768 + sizeof chunk); /* back-pressure bounds the buffer */
    if (off % 50000 < sizeof chunk) {
      r.pause_ns = 200000; /* the reader slows down now and then */
      ASSERT_EQ(weft_stream_drain(s), 0);
      ASSERT_EQ(weft_stream_buffered(s), 0);
      r.pause_ns = 0;
    }
  }
  ASSERT_GT(peak, 8192); /* the buffer did fill: the writer met the slow reader */
  ASSERT_EQ(weft_stream_write_eof(s), 0);
  ASSERT_EQ(weft_stream_write(s, "x", 1), -EPIPE);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_TRUE(r.ok);
  ASSERT_EQ(r.got, total);
  char c;
  ASSERT_EQ(weft_recv(peer, &c, 1, 0), 0); /* end of stream after write_eof */
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(drain_back_pressure_with_a_slow_reader) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(backpressure_main, NULL, &c), 0);
}

static int drain_task(void *arg) { return weft_stream_drain(arg); }

static int drain_waits_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_stream_set_watermarks(s, 1 << 30, 0), 0); /* writes never wait */
  static char big[1 << 20];
  ASSERT_EQ(weft_stream_write(s, big, sizeof big), 0);
  ASSERT_GT(weft_stream_buffered(s), 0);
  weft_task d = weft_spawn(drain_task, s);
  weft_sleep_ns(30000000);
  ASSERT_TRUE(!weft_task_done(d)); /* nobody reads: drain waits */
  /* cancelling a drain keeps what was not sent buffered */
  ASSERT_EQ(weft_cancel(d), 1);
  ASSERT_EQ(weft_join(d), -ECANCELED);
  weft_task_release(d);
  ASSERT_GT(weft_stream_buffered(s), 0);
  static char buf[65536];
  size_t got = 0;
  weft_task t = weft_spawn(drain_task, s);
  while (got < sizeof big) {
    ssize_t n = weft_recv(peer, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    got += (size_t)n;
  }
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_EQ(got, sizeof big);
  /* a closed stream refuses writes */
  weft_stream_close(s);
  ASSERT_EQ(weft_stream_write(s, "x", 1), -EPIPE);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  return 0;
}

TEST(drain_waits_for_the_reader_and_is_cancellable) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(drain_waits_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ resets */

static int reset_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_addr any, la;
  ASSERT_EQ(weft_addr_ip(&any, "127.0.0.1", 0), 0);
  int lfd = weft_listen(&any, 8, 0);
  ASSERT_EQ(weft_sockname(lfd, &la), 0);
  weft_stream *s;
  ASSERT_EQ(weft_open_connection("127.0.0.1", (uint16_t)weft_addr_port(&la), WEFT_NO_DEADLINE, &s), 0);
  int srv = weft_accept(lfd, NULL);
  ASSERT_GE(srv, 0);
  weft_addr p, l;
  ASSERT_EQ(weft_stream_peer(s, &p), 0);
  ASSERT_EQ(weft_addr_port(&p), weft_addr_port(&la));
  ASSERT_EQ(weft_stream_local(s, &l), 0);
  /* the peer resets (linger 0) in the middle of a read */
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  ASSERT_EQ(weft_setsockopt(srv, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  ASSERT_EQ(weft_send_all(srv, "partial", 7, NULL), 7);
  char buf[16];
  ASSERT_EQ(weft_stream_readexactly(s, buf, 3, NULL), 3);
  close(srv);
  ssize_t r = weft_stream_readexactly(s, buf, 10, NULL);
  ASSERT_TRUE(r == -ECONNRESET || r == -ENODATA);
  /* and a write to it fails with a reset or a broken pipe, latched */
  int w = 0;
  for (int i = 0; i < 10 && !w; i++) {
    w = weft_stream_write(s, "data", 4);
    if (!w) w = weft_stream_drain(s);
  }
  ASSERT_TRUE(w == -ECONNRESET || w == -EPIPE);
  ASSERT_EQ(weft_stream_write(s, "data", 4), w);
  ASSERT_EQ(weft_stream_drain(s), w);
  ASSERT_EQ(weft_stream_wait_closed(s), w);
  close(lfd);
  ASSERT_EQ(weft_open_connection("127.0.0.1", (uint16_t)weft_addr_port(&la), WEFT_NO_DEADLINE, &s), -ECONNREFUSED);
  ASSERT_EQ(weft_open_unix_connection("/tmp/weft-no-such.sock", WEFT_NO_DEADLINE, &s), -ENOENT);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(peer_reset_in_read_and_write) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(reset_main, NULL, &c), 0);
}

static int timeout_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_stream_set_timeout(s, -2), -EINVAL);
  ASSERT_EQ(weft_stream_set_timeout(s, 50000000), 0);
  char buf[16];
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), -ETIMEDOUT); /* an idle peer */
  ASSERT_GE(weft_now_ns() - t0, 40000000);
  ASSERT_EQ(weft_send_all(peer, "abc", 3, NULL), 3);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), -ETIMEDOUT); /* a partial line stays buffered */
  ASSERT_EQ(weft_send_all(peer, "\n", 1, NULL), 1);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 4);
  ASSERT_EQ(memcmp(buf, "abc\n", 4), 0);
  size_t got;
  ASSERT_EQ(weft_send_all(peer, "xy", 2, NULL), 2);
  ASSERT_EQ(weft_stream_readexactly(s, buf, 5, &got), -ETIMEDOUT);
  ASSERT_EQ(got, 2);
  ASSERT_EQ(weft_stream_set_timeout(s, -1), 0);
  ASSERT_EQ(weft_send_all(peer, "z", 1, NULL), 1);
  ASSERT_EQ(weft_stream_read(s, buf, sizeof buf), 1);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  return 0;
}

TEST(stream_timeout_for_an_idle_peer) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(timeout_main, NULL, &c), 0);
}

static int bad_main(void *arg) {
  (void)arg;
  weft_stream *s;
  ASSERT_EQ(weft_stream_from_fd(-1, &s), -EBADF);
  ASSERT_EQ(weft_stream_from_fd(0, NULL), -EINVAL);
  ASSERT_EQ(weft_open_connection("127.0.0.1", 1, WEFT_NO_DEADLINE, NULL), -EINVAL);
  int peer;
  s = pair_stream(&peer);
  char buf[4];
  ASSERT_EQ(weft_stream_read(s, NULL, 4), -EINVAL);
  ASSERT_EQ(weft_stream_readuntil(s, NULL, 1, buf, 4, NULL), -EINVAL);
  ASSERT_EQ(weft_stream_readuntil(s, "x", 0, buf, 4, NULL), -EINVAL);
  ASSERT_EQ(weft_stream_write(s, NULL, 4), -EINVAL);
  ASSERT_EQ(weft_stream_writev(s, NULL, 1), -EINVAL);
  ASSERT_EQ(weft_stream_read(s, buf, 0), 0);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  ASSERT_EQ(weft_stream_wait_closed(NULL), -EINVAL);
  return 0;
}

TEST(stream_bad_input) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(bad_main, NULL, &c), 0);
}

/* Lengths past SSIZE_MAX: buffers whose lengths add up past it (wrapping
 * to a small total) and a write appended behind buffered bytes. Before
 * net/stream.c checked them, the first spun forever on io_uring (the
 * total wrapped to 4, so the bytes were copied into the buffer, whose
 * capacity doubled to 0 and never reached the length) and the second on
 * both backends (the same doubling): both hung. */
static int huge_lengths_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  char b[4] = "abc";
  struct iovec v[2] = {{b, SIZE_MAX / 2 + 2}, {b, SIZE_MAX / 2 + 2}};
  ASSERT_EQ(weft_stream_writev(s, v, 2), -EINVAL);
  struct iovec w[2] = {{b, (size_t)SSIZE_MAX}, {b, 1}};
  ASSERT_EQ(weft_stream_writev(s, w, 2), -EINVAL);
  /* bytes the peer does not read stay buffered: the next write appends */
  ASSERT_EQ(weft_stream_set_watermarks(s, SIZE_MAX, 0), 0);
  static char big[4 << 20];
  ASSERT_EQ(weft_stream_write(s, big, sizeof big), 0);
  ASSERT_GT(weft_stream_buffered(s), 0);
  size_t had = weft_stream_buffered(s);
  ASSERT_EQ(weft_stream_write(s, b, (size_t)SSIZE_MAX), -ENOMEM); /* nothing of it kept */
  ASSERT_EQ(weft_stream_buffered(s), had);
  weft_stream_abort(s);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  return 0;
}

TEST_T(stream_lengths_past_ssize_max_are_refused, 30) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(huge_lengths_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ asyncio conformance
 * read_all keeping its bytes, the limit rule, readline at EOF, drain after a
 * reset (each failed before net/stream.c was fixed). */

/* read_all under set_timeout: the bytes it received into buf before the
 * timeout must stay readable (set_timeout's doc: "what arrived so far stays
 * buffered, except for readexactly's bytes"). */
static int cf_read_all_timeout_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_stream_set_timeout(s, 50000000), 0);
  ASSERT_EQ(weft_send_all(peer, "hello", 5, NULL), 5);
  char buf[64] = {0};
  ASSERT_EQ(weft_stream_read_all(s, buf, sizeof buf), -ETIMEDOUT);
  ASSERT_EQ(weft_stream_set_timeout(s, -1), 0);
  ASSERT_EQ(weft_send_all(peer, " world", 6, NULL), 6);
  ASSERT_EQ(weft_shutdown(peer, SHUT_WR), 0);
  memset(buf, 0, sizeof buf);
  ssize_t n = weft_stream_read_all(s, buf, sizeof buf);
  ASSERT_EQ(n, 11);
  ASSERT_STR_EQ(buf, "hello world");
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  return 0;
}

TEST(read_all_timeout_keeps_the_bytes_received) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(cf_read_all_timeout_main, NULL, &c), 0);
}

/* the same with a cancellation in the middle of read_all. */
typedef struct cf_ra { weft_stream *s; char buf[64]; _Atomic int started; } cf_ra;
static int cf_ra_task(void *arg) {
  cf_ra *r = arg;
  atomic_store(&r->started, 1);
  return (int)weft_stream_read_all(r->s, r->buf, sizeof r->buf);
}
static int cf_read_all_cancel_main(void *arg) {
  (void)arg;
  int peer;
  static cf_ra r;
  r.s = pair_stream(&peer);
  weft_task t = weft_spawn(cf_ra_task, &r);
  ASSERT_EQ(weft_send_all(peer, "hello", 5, NULL), 5);
  weft_sleep_ns(30000000);
  ASSERT_TRUE(!weft_task_done(t));
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  ASSERT_EQ(weft_send_all(peer, " world", 6, NULL), 6);
  ASSERT_EQ(weft_shutdown(peer, SHUT_WR), 0);
  char buf[64] = {0};
  ssize_t n = weft_stream_read_all(r.s, buf, sizeof buf);
  ASSERT_EQ(n, 11);
  ASSERT_EQ(weft_stream_wait_closed(r.s), 0);
  close(peer);
  return 0;
}

TEST(read_all_cancelled_keeps_the_bytes_received) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cf_read_all_cancel_main, NULL, &c), 0);
}

/* asyncio's readuntil raises LimitOverrunError only when the separator
 * STARTS past the limit (streams.py:639 `if isep > self._limit`): with
 * limit 10, "1234567890\n" (isep 10) is returned whole. */
static int cf_limit_boundary_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_stream_set_limit(s, 10), 0);
  ASSERT_EQ(weft_send_all(peer, "1234567890\n123456789\r\n", 22, NULL), 22);
  char buf[64];
  ssize_t n = weft_stream_readline(s, buf, sizeof buf);
  ASSERT_EQ(n, 11);
  n = weft_stream_readuntil(s, "\r\n", 2, buf, sizeof buf, NULL);
  ASSERT_EQ(n, 11);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  return 0;
}

TEST(readuntil_limit_counts_up_to_the_separator_as_asyncio) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(cf_limit_boundary_main, NULL, &c), 0);
}

/* readline at end of stream with a last line longer than cap: -ENOBUFS,
 * as readuntil (it returned a line cut at cap bytes before, which a caller
 * could not tell from a complete last line). */
static int cf_readline_eof_cap_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer);
  ASSERT_EQ(weft_send_all(peer, "abcdefgh", 8, NULL), 8);
  ASSERT_EQ(weft_shutdown(peer, SHUT_WR), 0);
  char buf[4];
  ssize_t n = weft_stream_readline(s, buf, sizeof buf);
  ASSERT_EQ(n, -ENOBUFS);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  return 0;
}

TEST(readline_last_line_longer_than_cap_is_enobufs) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(cf_readline_eof_cap_main, NULL, &c), 0);
}

/* drain after the peer reset the connection: asyncio raises
 * ConnectionResetError (streams.py:364 the reader's exception, or
 * :166 _drain_helper's 'Connection lost'). */
static int cf_drain_after_reset_main(void *arg) {
  (void)arg;
  weft_addr any, la;
  ASSERT_EQ(weft_addr_ip(&any, "127.0.0.1", 0), 0);
  int lfd = weft_listen(&any, 8, 0);
  ASSERT_EQ(weft_sockname(lfd, &la), 0);
  weft_stream *s;
  ASSERT_EQ(weft_open_connection("127.0.0.1", (uint16_t)weft_addr_port(&la), WEFT_NO_DEADLINE, &s), 0);
  int srv = weft_accept(lfd, NULL);
  ASSERT_GE(srv, 0);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  ASSERT_EQ(weft_setsockopt(srv, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(srv);
  char buf[16];
  ssize_t r = weft_stream_read(s, buf, sizeof buf);
  ASSERT_EQ(r, -ECONNRESET);
  int d = weft_stream_drain(s);
  ASSERT_TRUE(d == -ECONNRESET || d == -EPIPE);
  weft_stream_wait_closed(s);
  close(lfd);
  return 0;
}

TEST(drain_after_the_reader_met_a_reset_reports_it) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cf_drain_after_reset_main, NULL, &c), 0);
}

/* a multi-byte, self-overlapping separator arriving one byte
 * at a time, with a cancelled readuntil in the middle: nothing lost. */
typedef struct cf_ru { weft_stream *s; char buf[64]; } cf_ru;
static int cf_ru_task(void *arg) {
  cf_ru *r = arg;
  return (int)weft_stream_readuntil(r->s, "aab", 3, r->buf, sizeof r->buf, NULL);
}
static int cf_split_sep_cancel_main(void *arg) {
  (void)arg;
  int peer;
  static cf_ru r;
  r.s = pair_stream(&peer);
  weft_task t = weft_spawn(cf_ru_task, &r);
  const char *d1 = "xyaaaa";
  for (size_t i = 0; i < strlen(d1); i++) {
    ASSERT_EQ(weft_send_all(peer, d1 + i, 1, NULL), 1);
    weft_sleep_ns(2000000);
  }
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  const char *d2 = "bZZaab";
  for (size_t i = 0; i < strlen(d2); i++) {
    ASSERT_EQ(weft_send_all(peer, d2 + i, 1, NULL), 1);
    weft_sleep_ns(1000000);
  }
  char buf[64] = {0};
  ASSERT_EQ(weft_stream_readuntil(r.s, "aab", 3, buf, sizeof buf, NULL), 7);
  ASSERT_STR_EQ(buf, "xyaaaab");
  memset(buf, 0, sizeof buf);
  ASSERT_EQ(weft_stream_readuntil(r.s, "aab", 3, buf, sizeof buf, NULL), 5);
  ASSERT_STR_EQ(buf, "ZZaab");
  ASSERT_EQ(weft_stream_wait_closed(r.s), 0);
  close(peer);
  return 0;
}

TEST(split_overlapping_separator_with_a_cancelled_readuntil) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cf_split_sep_cancel_main, NULL, &c), 0);
}

/* A stream over a datagram socket (weft_stream_from_fd of a connected
 * SOCK_DGRAM or SOCK_SEQPACKET socket) reads the datagrams' bytes in order,
 * none cut: a receive drops what does not fit in the room it is given, and
 * the reader gave it whatever was left of its buffer (a readline over two
 * 9000-byte datagrams lost 1616 bytes and never found the newline; read(4)
 * of a 10-byte datagram dropped the other 6). An empty SOCK_DGRAM datagram
 * is no end of stream (it ended the stream: the bytes after it were never
 * read). Bounded by a receive time limit. */
static int dg_stream_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int types[2] = {SOCK_DGRAM, SOCK_SEQPACKET};
  for (int k = 0; k < 2; k++) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, types[k] | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    weft_stream *s;
    ASSERT_EQ(weft_stream_from_fd(sv[0], &s), 0);
    ASSERT_EQ(weft_stream_set_timeout(s, 2000000000), 0);
    static char a[9000], b[9001], buf[32768];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    b[9000] = '\n';
    ASSERT_EQ(send(sv[1], a, sizeof a, 0), (ssize_t)sizeof a);
    ASSERT_EQ(send(sv[1], b, sizeof b, 0), (ssize_t)sizeof b);
    ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 18001);
    ASSERT_EQ(memcmp(buf, a, sizeof a), 0);
    ASSERT_EQ(memcmp(buf + sizeof a, b, sizeof b), 0);
    /* a read shorter than the datagram: the rest stays readable */
    ASSERT_EQ(send(sv[1], "0123456789", 10, 0), 10);
    ASSERT_EQ(weft_stream_read(s, buf, 4), 4);
    ASSERT_EQ(memcmp(buf, "0123", 4), 0);
    ASSERT_EQ(weft_stream_read(s, buf, 16), 6);
    ASSERT_EQ(memcmp(buf, "456789", 6), 0);
    /* readexactly and read_all across and within datagrams */
    ASSERT_EQ(send(sv[1], "abcdef", 6, 0), 6);
    ASSERT_EQ(weft_stream_readexactly(s, buf, 2, NULL), 2);
    ASSERT_EQ(send(sv[1], "ghij", 4, 0), 4);
    ASSERT_EQ(weft_stream_readexactly(s, buf, 6, NULL), 6);
    ASSERT_EQ(memcmp(buf, "cdefgh", 6), 0);
    ASSERT_EQ(weft_stream_read(s, buf, 16), 2);
    ASSERT_EQ(memcmp(buf, "ij", 2), 0);
    if (types[k] == SOCK_DGRAM) { /* an empty datagram, then more */
      ASSERT_EQ(send(sv[1], "", 0, 0), 0);
      ASSERT_EQ(send(sv[1], "xyz", 3, 0), 3);
      ASSERT_EQ(weft_stream_read(s, buf, 16), 3);
      ASSERT_EQ(memcmp(buf, "xyz", 3), 0);
      ASSERT_TRUE(!weft_stream_at_eof(s));
    }
    ASSERT_EQ(send(sv[1], "klmnop", 6, 0), 6);
    if (types[k] == SOCK_SEQPACKET) ASSERT_EQ(shutdown(sv[1], SHUT_WR), 0);
    ASSERT_EQ(weft_stream_read_all(s, buf, 3), -ENOBUFS); /* more than cap: the rest stays readable */
    ASSERT_EQ(memcmp(buf, "klm", 3), 0);
    if (types[k] == SOCK_SEQPACKET) {
      ASSERT_EQ(weft_stream_read_all(s, buf, sizeof buf), 3); /* then the end */
      ASSERT_TRUE(weft_stream_at_eof(s));
    } else {
      ASSERT_EQ(weft_stream_read(s, buf, sizeof buf), 3);
    }
    ASSERT_EQ(memcmp(buf, "nop", 3), 0);
    ASSERT_EQ(weft_stream_wait_closed(s), 0);
    close(sv[1]);
  }
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(a_datagram_socket_stream_cuts_no_datagram) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(dg_stream_main, NULL, &c), 0);
}

/* A stream over a terminal in canonical mode: a read returns one line, so
 * a second line that came with the first stays there, and no new edge will
 * say so. On epoll a tty has no RWF_NOWAIT, and its EOPNOTSUPP cleared the
 * descriptor's readiness as an EAGAIN would: the stream, which owns its
 * descriptor (no re-report before a wait), waited with the line there
 * (before: -ETIMEDOUT from the second readline). Also a partial line:
 * nothing to read until its newline, and the worker's other tasks run
 * meanwhile (a tty read waits off the worker). Bounded by a receive time
 * limit. */
static _Atomic int tty_ticks;
static _Atomic int tty_stop;

static int tty_ticker(void *arg) {
  (void)arg;
  while (!atomic_load(&tty_stop)) {
    weft_sleep_ns(1000000);
    atomic_fetch_add(&tty_ticks, 1);
  }
  return 0;
}

static int tty_canon_main(void *arg) {
  (void)arg;
  int m, t;
  ASSERT_EQ(openpty(&m, &t, NULL, NULL, NULL), 0);
  struct termios tio;
  ASSERT_EQ(tcgetattr(t, &tio), 0);
  tio.c_lflag |= ICANON;
  tio.c_lflag &= ~(tcflag_t)ECHO; /* (else the master reads the lines back) */
  ASSERT_EQ(tcsetattr(t, TCSANOW, &tio), 0);
  weft_stream *s;
  ASSERT_EQ(weft_stream_from_fd(t, &s), 0);
  ASSERT_EQ(weft_stream_set_timeout(s, 2000000000), 0);
  char buf[64];
  ASSERT_EQ(write(m, "ab\ncd\n", 6), 6);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 3);
  ASSERT_EQ(memcmp(buf, "ab\n", 3), 0);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 3);
  ASSERT_EQ(memcmp(buf, "cd\n", 3), 0);
  /* a partial line: the reader waits for its end, the worker runs on */
  atomic_store(&tty_stop, 0);
  weft_task tk = weft_spawn(tty_ticker, NULL);
  ASSERT_TRUE(tk.rec != NULL);
  ASSERT_EQ(write(m, "ef", 2), 2);
  int before = atomic_load(&tty_ticks);
  ASSERT_EQ(weft_stream_set_timeout(s, 100000000), 0);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), -ETIMEDOUT);
  ASSERT_GT(atomic_load(&tty_ticks), before);
  ASSERT_EQ(write(m, "gh\n", 3), 3);
  ASSERT_EQ(weft_stream_set_timeout(s, 2000000000), 0);
  ASSERT_EQ(weft_stream_readline(s, buf, sizeof buf), 5);
  ASSERT_EQ(memcmp(buf, "efgh\n", 5), 0);
  atomic_store(&tty_stop, 1);
  ASSERT_EQ(weft_join(tk), 0);
  weft_task_release(tk);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(m);
  return 0;
}

TEST(a_canonical_tty_stream_reads_each_line_that_came_at_once) {
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(tty_canon_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ closing under a reader
 * wait_closed (and abort + wait_closed, and the server's end of a
 * handler) while another task, on the other worker, waits in a read on the
 * same stream: the read returns end of stream (read 0, readexactly and
 * readuntil -ENODATA with what they got, readline the partial line),
 * wait_closed returns only after it, and nothing touches freed memory (run
 * under ASan). Before net/stream.c woke the reader, the read hung on
 * io_uring (its receive held the socket) and on epoll came back from a
 * closed descriptor into the freed stream. Every test is bounded: a hang
 * fails by the harness's alarm. */

enum { RD_READ, RD_EXACTLY, RD_LINE, RD_UNTIL, RD_ALL };

typedef struct blocked_reader {
  weft_stream *s;
  int op;
  size_t want;      /* readexactly's n */
  char buf[64];
  size_t got;
  ssize_t result;
  _Atomic int started;
} blocked_reader;

static int blocked_reader_task(void *arg) {
  blocked_reader *r = arg;
  weft_unpin(); /* spawned pinned on the other worker: it reads from there */
  atomic_store(&r->started, 1);
  switch (r->op) {
  case RD_READ: r->result = weft_stream_read(r->s, r->buf, sizeof r->buf); break;
  case RD_EXACTLY: r->result = weft_stream_readexactly(r->s, r->buf, r->want, &r->got); break;
  case RD_LINE: r->result = weft_stream_readline(r->s, r->buf, sizeof r->buf); break;
  case RD_UNTIL: r->result = weft_stream_readuntil(r->s, "\r\n", 2, r->buf, sizeof r->buf, &r->got); break;
  default: r->result = weft_stream_read_all(r->s, r->buf, sizeof r->buf); break;
  }
  return 0;
}

/* Start r's read on the other worker and let it reach its wait. The
 * caller is pinned (its own calls stay on its worker). */
static weft_task start_blocked_reader(blocked_reader *r) {
  weft_task t = spawn_elsewhere_until_waiting(blocked_reader_task, r, &r->started);
  ASSERT_TRUE(t.rec != NULL);
  ASSERT_EQ(atomic_load(&r->started), 1);
  ASSERT_TRUE(!weft_task_done(t)); /* it waits for the peer */
  return t;
}

/* wait_closed (after abort when `abort`), timed: it must not wait for the
 * reader longer than its wake takes. */
static int close_timed(weft_stream *s, bool aborting) {
  int64_t t0 = weft_now_ns();
  if (aborting) weft_stream_abort(s);
  int rc = weft_stream_wait_closed(s);
  ASSERT_LT(weft_now_ns() - t0, 2000000000LL);
  return rc;
}

static void join_reader(weft_task t) {
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
}

static int wc_read_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_pin();
  int peer;
  static blocked_reader r;
  memset(&r, 0, sizeof r);
  r.s = pair_stream(&peer);
  r.op = RD_READ;
  weft_task t = start_blocked_reader(&r);
  ASSERT_EQ(close_timed(r.s, false), 0);
  join_reader(t);
  ASSERT_EQ(r.result, 0); /* end of stream */
  char c;
  ASSERT_EQ(weft_recv(peer, &c, 1, 0), 0); /* the peer sees our end */
  close(peer);
  weft_unpin();
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(wait_closed_wakes_a_reader_blocked_in_read, 30) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(wc_read_main, NULL, &c), 0);
}

static int wc_exactly_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_pin();
  int peer;
  static blocked_reader r;
  memset(&r, 0, sizeof r);
  r.s = pair_stream(&peer);
  r.op = RD_EXACTLY;
  r.want = 10;
  ASSERT_EQ(weft_send_all(peer, "abc", 3, NULL), 3);
  weft_task t = start_blocked_reader(&r); /* it has the 3 bytes and waits for 7 more */
  ASSERT_EQ(close_timed(r.s, false), 0);
  join_reader(t);
  ASSERT_EQ(r.result, -ENODATA); /* asyncio's IncompleteReadError, with what it got */
  ASSERT_EQ(r.got, 3);
  ASSERT_EQ(memcmp(r.buf, "abc", 3), 0);
  close(peer);
  weft_unpin();
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(wait_closed_ends_a_blocked_readexactly_with_its_partial_bytes, 30) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(wc_exactly_main, NULL, &c), 0);
}

/* abort + wait_closed on a TCP connection: readline gets its partial last
 * line, the peer gets a reset. readuntil the same with -ENODATA. */
static int wc_abort_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_pin();
  weft_addr any, la;
  ASSERT_EQ(weft_addr_ip(&any, "127.0.0.1", 0), 0);
  int lfd = weft_listen(&any, 8, 0);
  ASSERT_GE(lfd, 0);
  ASSERT_EQ(weft_sockname(lfd, &la), 0);
  for (int op = RD_LINE; op <= RD_UNTIL; op++) {
    static blocked_reader r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(weft_open_connection("127.0.0.1", (uint16_t)weft_addr_port(&la), WEFT_NO_DEADLINE, &r.s), 0);
    int srv = weft_accept(lfd, NULL);
    ASSERT_GE(srv, 0);
    r.op = op;
    ASSERT_EQ(weft_send_all(srv, "par", 3, NULL), 3);
    weft_task t = start_blocked_reader(&r);
    ASSERT_EQ(weft_stream_write(r.s, "unsent?", 7), 0); /* dropped or not: abort does not wait */
    ASSERT_EQ(close_timed(r.s, true), 0);
    join_reader(t);
    if (op == RD_LINE) {
      ASSERT_EQ(r.result, 3); /* the partial last line */
    } else {
      ASSERT_EQ(r.result, -ENODATA);
      ASSERT_EQ(r.got, 3);
    }
    ASSERT_EQ(memcmp(r.buf, "par", 3), 0);
    char buf[16];
    ssize_t n;
    while ((n = weft_recv(srv, buf, sizeof buf, 0)) > 0) {
    }
    ASSERT_EQ(n, -ECONNRESET); /* an abort is a reset */
    close(srv);
  }
  close(lfd);
  weft_unpin();
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(abort_then_wait_closed_wakes_a_reader_on_tcp, 30) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(wc_abort_main, NULL, &c), 0);
}

/* A pipe (a subprocess's stdout): no shutdown(2) there; and datagram
 * sockets. */
static int wc_pipe_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_pin();
  for (int op = RD_READ; op <= RD_ALL; op++) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    static blocked_reader r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(weft_stream_from_fd(p[0], &r.s), 0);
    r.op = op;
    r.want = 10;
    if (op != RD_READ) ASSERT_EQ(write(p[1], "xy", 2), 2); /* a read would return them at once */
    weft_task t = start_blocked_reader(&r);
    ASSERT_EQ(close_timed(r.s, false), 0);
    join_reader(t);
    switch (op) {
    case RD_READ: ASSERT_EQ(r.result, 0); break;
    case RD_EXACTLY: ASSERT_EQ(r.result, -ENODATA); ASSERT_EQ(r.got, 2); break;
    case RD_LINE: ASSERT_EQ(r.result, 2); break;
    case RD_UNTIL: ASSERT_EQ(r.result, -ENODATA); ASSERT_EQ(r.got, 2); break;
    default: ASSERT_EQ(r.result, 2); break; /* read_all: everything until end of stream */
    }
    if (op != RD_READ) ASSERT_EQ(memcmp(r.buf, "xy", 2), 0);
    /* the writer's end still works as a pipe whose reader went away */
    ASSERT_EQ(write(p[1], "z", 1), -1);
    ASSERT_EQ(errno, EPIPE); /* SIGPIPE is ignored by the runtime */
    close(p[1]);
  }
  /* datagram sockets: after shutdown(SHUT_RD) a SOCK_DGRAM receive still
   * says EAGAIN (a waiter on epoll hung); they go the pipe's way */
  int types[2] = {SOCK_DGRAM, SOCK_SEQPACKET};
  for (int k = 0; k < 2; k++) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, types[k] | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    static blocked_reader r;
    memset(&r, 0, sizeof r);
    ASSERT_EQ(weft_stream_from_fd(sv[0], &r.s), 0);
    r.op = RD_READ;
    weft_task t = start_blocked_reader(&r);
    ASSERT_EQ(close_timed(r.s, false), 0);
    join_reader(t);
    ASSERT_EQ(r.result, 0);
    close(sv[1]);
  }
  weft_unpin();
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(wait_closed_wakes_a_reader_of_a_pipe_or_a_datagram_socket, 60) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(wc_pipe_main, NULL, &c), 0);
}

/* The pattern for a reader that may be anywhere (in a read, between two,
 * not started): close() makes its reads return end of stream (waking one
 * that waits), so that it ends; join it; then wait_closed. Many rounds, the
 * close at a random moment against a reader that reads a trickle of data,
 * on sockets and pipes. */
typedef struct loop_reader {
  weft_stream *s;
  bool exactly;
  _Atomic long got;
  ssize_t last;
} loop_reader;

static int loop_reader_task(void *arg) {
  loop_reader *r = arg;
  char buf[8];
  for (;;) {
    ssize_t n = r->exactly ? weft_stream_readexactly(r->s, buf, sizeof buf, NULL)
                           : weft_stream_read(r->s, buf, sizeof buf);
    r->last = n;
    if (n <= 0) return 0;
    atomic_fetch_add(&r->got, n);
  }
}

static int close_join_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int rounds = test_sanitized() ? 60 : 300;
  int closed_waiting = 0, closed_running = 0; /* the reader at close(): waiting in a read, or not */
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int peer;
    bool pipe_kind = i % 3 == 2;
    static loop_reader r;
    memset(&r, 0, sizeof r);
    if (pipe_kind) {
      int p[2];
      ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
      ASSERT_EQ(weft_stream_from_fd(p[0], &r.s), 0);
      peer = p[1];
    } else {
      r.s = pair_stream(&peer);
    }
    r.exactly = (x >> 20) & 1;
    weft_task t = weft_spawn(loop_reader_task, &r);
    int sends = (int)(x % 5);
    for (int k = 0; k < sends; k++) {
      ASSERT_EQ(write(peer, "0123456789abc", 13), 13);
      if ((x >> (8 + k)) & 1) weft_yield();
    }
    int64_t spin = (int64_t)((x >> 32) % 200000);
    if ((x >> 40) & 1) spin_ns(spin);
    else if ((x >> 41) & 1) weft_sleep_ns(spin);
    bool waiting = weft_task_waiting_on(t)[0] != 0;
    weft_stream_close(r.s);
    if (waiting)
      closed_waiting++;
    else
      closed_running++;
    ASSERT_EQ(weft_join(t), 0); /* it ended: its reads returned end of stream */
    weft_task_release(t);
    ASSERT_TRUE(r.last == 0 || r.last == -ENODATA);
    ASSERT_EQ(weft_stream_wait_closed(r.s), 0);
    close(peer);
  }
  fprintf(stderr, "closed with the reader waiting %d times, running or not started %d times\n", closed_waiting,
          closed_running);
  ASSERT_GT(closed_waiting, 0);
  ASSERT_GT(closed_running, 0);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(close_ends_a_reader_anywhere_then_join_then_wait_closed, 120) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(close_join_main, NULL, &c), 0);
}

/* The server's side: a handler that hands its stream to a reader task
 * and waits elsewhere; shutdown cancels the handler, and the server's end
 * of the connection (an abort: bytes were left unsent) wakes the reader. */
typedef struct srv_reader {
  _Atomic int started;
  ssize_t result;
  weft_event done;
} srv_reader;
static srv_reader srv_r;

static int srv_reader_task(void *arg) {
  char buf[16];
  atomic_store(&srv_r.started, 1);
  srv_r.result = weft_stream_read(arg, buf, sizeof buf);
  weft_event_set(&srv_r.done);
  return 0;
}

static int reader_handing_handler(weft_stream *s, void *arg) {
  (void)arg;
  ASSERT_EQ(weft_stream_set_watermarks(s, 1 << 30, 0), 0);
  static char big[4 << 20];
  ASSERT_EQ(weft_stream_write(s, big, sizeof big), 0); /* the client never reads: it stays buffered */
  ASSERT_EQ(weft_spawn_detached(srv_reader_task, s), 0);
  wait_until_equal(&srv_r.started, 1);
  /* the reader waits for the client now. A loaded machine may run this
   * sleep past the shutdown: its cancel must end the handler here too (it
   * was ignored, and the handler then waited on `never` for good: a hang
   * under TSan in WEFT_STRESS=long beside other work) */
  if (weft_sleep_ns(50000000) < 0) return -ECANCELED;
  weft_event never;
  weft_event_init(&never);
  return weft_event_wait(&never); /* until shutdown cancels it */
}

static int server_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_event_init(&srv_r.done);
  weft_server *srv;
  ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, reader_handing_handler, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_GE(fd, 0);
  wait_until_equal(&srv_r.started, 1);
  weft_sleep_ns(100000000);
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_server_shutdown(srv, weft_now_ns()), 1); /* the handler is cancelled */
  ASSERT_LT(weft_now_ns() - t0, 2000000000LL);
  ASSERT_EQ(weft_event_wait(&srv_r.done), 0);
  ASSERT_EQ(srv_r.result, 0); /* end of stream */
  weft_server_free(srv);
  close(fd);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(server_shutdown_wakes_a_reader_the_handler_left_behind, 30) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(server_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ aborting under a writer */

/* abort() from another task while a writer waits in write, writev, drain
 * or write_eof for a peer that does not read (asyncio: transport.abort()
 * makes the pending drain raise ConnectionResetError): that call returns
 * -ECONNRESET at once, every later writer call too, wait_closed (also one
 * called while the writer is still inside) returns 0, and the peer sees a
 * reset (TCP) or the end. A wait_closed flushing for such a peer returns
 * 0 at once too. Unix socket pairs, TCP on loopback, pipes. */

enum { WR_DRAIN, WR_WRITE, WR_WRITEV, WR_EOF, WR_CLOSE, WR_COUNT }; /* WR_CLOSE: wait_closed's flush */
enum { K_UNIX, K_TCP, K_PIPE, K_COUNT };
static const char *const wr_names[WR_COUNT] = {"drain", "write", "writev", "write_eof", "wait_closed"};
static const char *const k_names[K_COUNT] = {"unix", "tcp", "pipe"};

#define BIG_LEN (4u << 20)
static char big[BIG_LEN];

typedef struct blocked_writer {
  weft_stream *s;
  int op;
  bool then;        /* make the later calls (write, drain, write_eof) after the blocked one */
  int result;
  int later[3];
  _Atomic int started;
} blocked_writer;

/* The blocking call (see WR_*), one call: for drain, write_eof and wait_closed the
 * caller has buffered the bytes first (with huge watermarks). */
static int writer_call(weft_stream *s, int op) {
  struct iovec iov[2] = {{big, BIG_LEN / 2}, {big + BIG_LEN / 2, BIG_LEN / 2}};
  switch (op) {
  case WR_WRITE: return weft_stream_write(s, big, BIG_LEN);
  case WR_WRITEV: return weft_stream_writev(s, iov, 2);
  case WR_DRAIN: return weft_stream_drain(s);
  case WR_EOF: return weft_stream_write_eof(s);
  default: weft_stream_close(s); return weft_stream_wait_closed(s);
  }
}

static int blocked_writer_task(void *arg) {
  blocked_writer *w = arg;
  weft_unpin(); /* spawned pinned on the other worker: it writes from there */
  atomic_store(&w->started, 1);
  w->result = writer_call(w->s, w->op);
  if (w->then) {
    w->later[0] = weft_stream_write(w->s, "x", 1);
    w->later[1] = weft_stream_drain(w->s);
    w->later[2] = weft_stream_write_eof(w->s);
  }
  return 0;
}

/* A stream of kind k whose peer (*peer) will not read: small kernel
 * buffers, so that the writer soon waits. *lfd: TCP's listener. */
static weft_stream *kind_stream(int k, int lfd, int *peer) {
  weft_stream *s;
  int small = 64 * 1024;
  if (k == K_UNIX) {
    s = pair_stream(peer);
  } else if (k == K_PIPE) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_EQ(weft_stream_from_fd(p[1], &s), 0);
    *peer = p[0];
    return s;
  } else {
    weft_addr la;
    ASSERT_EQ(weft_sockname(lfd, &la), 0);
    ASSERT_EQ(weft_open_connection("127.0.0.1", (uint16_t)weft_addr_port(&la), WEFT_NO_DEADLINE, &s), 0);
    *peer = weft_accept(lfd, NULL);
    ASSERT_GE(*peer, 0);
  }
  ASSERT_EQ(setsockopt(weft_stream_fd(s), SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  ASSERT_EQ(setsockopt(*peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  return s;
}

/* What the peer reads after the abort: its last read's result (the bytes
 * the kernel had before are read first). */
static ssize_t peer_end(int peer) {
  static char sink[1 << 16];
  ssize_t n;
  while ((n = weft_read(peer, sink, sizeof sink)) > 0) {
  }
  return n;
}

static int tcp_listener(void) {
  weft_addr any;
  ASSERT_EQ(weft_addr_ip(&any, "127.0.0.1", 0), 0);
  int lfd = weft_listen(&any, 8, 0);
  ASSERT_GE(lfd, 0);
  return lfd;
}

static int64_t longest_wake;

/* One case: kind k, call op; early: wait_closed right after the abort,
 * while the writer may still be inside (then joined), else join first,
 * check the later calls, then wait_closed. */
static void abort_writer_case(int k, int op, bool early, int lfd) {
  int peer;
  static blocked_writer w;
  memset(&w, 0, sizeof w);
  w.s = kind_stream(k, lfd, &peer);
  w.op = op;
  w.then = !early && op != WR_CLOSE;
  if (op == WR_DRAIN || op == WR_EOF || op == WR_CLOSE) { /* buffered here: the writer makes one call */
    ASSERT_EQ(weft_stream_set_watermarks(w.s, BIG_LEN * 2, 0), 0);
    ASSERT_EQ(weft_stream_write(w.s, big, BIG_LEN), 0);
  }
  weft_task t = spawn_elsewhere_until_waiting(blocked_writer_task, &w, &w.started);
  ASSERT_TRUE(t.rec != NULL);
  if (weft_task_done(t)) TEST_FAIL("%s %s: the writer did not wait (result %d)", k_names[k], wr_names[op], w.result);
  int64_t t0 = weft_now_ns();
  weft_stream_abort(w.s); /* (WR_CLOSE: the writer's wait_closed, flushing, waits for it to return) */
  if (early) {
    ASSERT_EQ(weft_stream_wait_closed(w.s), 0); /* waits for the writer to leave */
    ASSERT_LT(weft_now_ns() - t0, 1000000000LL);
  }
  int64_t took = join_release_since(t, t0);
  if (took > longest_wake) longest_wake = took;
  if (w.result != (op == WR_CLOSE ? 0 : -ECONNRESET) || took < 0 || took >= 1000000000LL)
    TEST_FAIL("%s %s%s: %d after %lld ms", k_names[k], wr_names[op], early ? " (early wait_closed)" : "", w.result,
              (long long)(took / 1000000));
  if (!early && op != WR_CLOSE) {
    for (int i = 0; i < 3; i++) ASSERT_EQ(w.later[i], -ECONNRESET); /* every later writer call */
    ASSERT_EQ(weft_stream_write(w.s, "y", 1), -ECONNRESET);
    ASSERT_EQ(weft_stream_wait_closed(w.s), 0);
  }
  ssize_t end = peer_end(peer);
  if (k == K_TCP)
    ASSERT_EQ(end, -ECONNRESET); /* an abort is a reset */
  else
    ASSERT_EQ(end, 0); /* no reset on a Unix socket or a pipe: the end */
  close(peer);
}

static int abort_writer_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_pin();
  int lfd = tcp_listener();
  for (int k = 0; k < K_COUNT; k++)
    for (int op = 0; op < WR_COUNT; op++)
      for (int early = 0; early < (op == WR_CLOSE ? 1 : 2); early++) abort_writer_case(k, op, early, lfd);
  fprintf(stderr, "the longest from abort to the writer's return: %.1f ms\n", (double)longest_wake / 1e6);
  close(lfd);
  weft_unpin();
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(abort_wakes_a_writer_blocked_for_a_peer_that_does_not_read, 60) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(abort_writer_main, NULL, &c), 0);
}

/* The abort at random moments against a writer's calls (before its
 * first, while it waits, between two, after its last), against a peer
 * that reads fast, slowly or not at all; each round: the writer stops at
 * its first error (-ECONNRESET) or ends, it is joined, wait_closed
 * returns 0, the peer sees the end. Sockets, TCP and pipes; no
 * descriptor leaked. */
typedef struct race_writer {
  weft_stream *s;
  uint64_t x;
  int calls, last;
  _Atomic int waiting; /* a call in progress (for the counts) */
} race_writer;

static int race_writer_task(void *arg) {
  race_writer *w = arg;
  uint64_t x = w->x;
  int n = 1 + (int)(x % 12);
  for (int i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t len = 1 + (size_t)(x % (192 * 1024));
    int rc;
    atomic_store(&w->waiting, 1);
    switch ((x >> 24) % 4) {
    case 0: rc = weft_stream_write(w->s, big, len); break;
    case 1: {
      struct iovec iov[2] = {{big, len / 2}, {big + len / 2, len - len / 2}};
      rc = weft_stream_writev(w->s, iov, 2);
      break;
    }
    case 2: rc = weft_stream_write(w->s, big, len); if (!rc) rc = weft_stream_drain(w->s); break;
    default: rc = weft_stream_drain(w->s); break;
    }
    atomic_store(&w->waiting, 0);
    w->calls++;
    w->last = rc;
    if (rc) return 0;
    if ((x >> 40) & 1) weft_yield();
  }
  w->last = weft_stream_write_eof(w->s);
  w->calls++;
  return 0;
}

typedef struct race_peer {
  int fd;
  int64_t pause_ns; /* between reads; < 0: read nothing until `go` */
  _Atomic int go;
  ssize_t end;
} race_peer;

static int race_peer_task(void *arg) {
  race_peer *p = arg;
  static char sink[1 << 16];
  if (p->pause_ns < 0)
    while (!atomic_load(&p->go)) weft_sleep_ns(1000000);
  ssize_t n;
  while ((n = weft_read(p->fd, sink, sizeof sink)) > 0)
    if (p->pause_ns > 0) weft_sleep_ns(p->pause_ns);
  p->end = n;
  return 0;
}

static int abort_race_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int lfd = tcp_listener();
  int rounds = (int)((test_sanitized() ? 400 : 1000) * test_stress_scale());
  int inside = 0, outside = 0, resets = 0;
  uint64_t x = 0x9E3779B97F4A7C15ull;
  int64_t t_start = weft_now_ns();
  for (int i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int k = i % K_COUNT;
    int peer;
    static race_writer w;
    static race_peer p;
    memset(&w, 0, sizeof w);
    memset(&p, 0, sizeof p);
    w.s = kind_stream(k, lfd, &peer);
    w.x = x | 1;
    p.fd = peer;
    p.pause_ns = (x >> 50) % 3 == 0 ? 0 : (x >> 50) % 3 == 1 ? 200000 : -1;
    weft_task tp = weft_spawn(race_peer_task, &p);
    weft_task tw = weft_spawn(race_writer_task, &w);
    int64_t delay = (int64_t)((x >> 20) % 3000000);
    if ((x >> 44) & 1) spin_ns(delay / 8);
    else weft_sleep_ns(delay);
    if (atomic_load(&w.waiting)) inside++;
    else outside++;
    weft_stream_abort(w.s);
    ASSERT_EQ(weft_join(tw), 0);
    weft_task_release(tw);
    if (w.last != 0 && w.last != -ECONNRESET) TEST_FAIL("round %d (%s): the writer's last call: %d", i, k_names[k], w.last);
    if (w.last == -ECONNRESET) resets++;
    ASSERT_EQ(weft_stream_write(w.s, "z", 1), -ECONNRESET);
    ASSERT_EQ(weft_stream_wait_closed(w.s), 0);
    atomic_store(&p.go, 1);
    ASSERT_EQ(weft_join(tp), 0); /* it read to the end */
    weft_task_release(tp);
    ASSERT_LE(p.end, 0);
    close(peer);
  }
  fprintf(stderr, "%d rounds in %lld ms: aborted with a call in progress %d times, between or outside %d; "
          "%d writers stopped by -ECONNRESET\n", rounds, (long long)((weft_now_ns() - t_start) / 1000000), inside,
          outside, resets);
  ASSERT_GT(inside, 0);
  ASSERT_GT(resets, 0);
  close(lfd);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST_T(abort_at_random_moments_against_a_writer_always_ends, 300) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(abort_race_main, NULL, &c), 0);
}

TEST_MAIN()
