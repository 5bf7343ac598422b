/* tests/test_net_ring_send.c: stream writes left in flight on the ring
 * (net/ring_send.c) and what the writer sees of them.
 *
 * A writer whose peer does not read: its first small write is a ring send
 * stuck in the kernel, the next ones are buffered behind it; buffered()
 * counts both; a drain from another task on the other worker waits, is
 * cancelled (-ECANCELED, the bytes stay buffered: the ring send is
 * cancelled through a task on its ring's worker), and once the peer reads,
 * a drain sends everything in order, every byte checked. An abort with a
 * stuck ring send closes at once. Many small writes racing a reader on the
 * other worker keep their order. A writer draining after each write
 * resumes on its ring's worker. No descriptor leaks. On epoll the same
 * tests run the system-call path (the expectations hold for both). */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft/weft.h>

#include "core/task.h"
#include "test.h"
#include "test_util.h"

static weft_stream *pair_stream(int *peer, int sndbuf) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
  if (sndbuf) {
    ASSERT_EQ(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf), 0);
    ASSERT_EQ(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof sndbuf), 0);
  }
  weft_stream *s;
  ASSERT_EQ(weft_stream_from_fd(sv[0], &s), 0);
  *peer = sv[1];
  return s;
}

static char pattern(size_t i) { return (char)(i * 7 + (i >> 9) + 3); }

/* Fill the socket so that the next send cannot complete. */
static size_t fill_socket(weft_stream *s, size_t *off) {
  static char big[1 << 16];
  size_t put = 0;
  for (;;) {
    for (size_t i = 0; i < sizeof big; i++) big[i] = pattern(*off + i);
    ssize_t n = send(weft_stream_fd(s), big, sizeof big, MSG_DONTWAIT);
    if (n <= 0) break;
    *off += (size_t)n;
    put += (size_t)n;
  }
  return put;
}

static int drain_task(void *arg) { return weft_stream_drain(arg); }

/* Read exactly n bytes of the pattern from fd, starting at *off. */
static void read_checked(int fd, size_t *off, size_t n) {
  static char buf[65536];
  size_t got = 0;
  while (got < n) {
    size_t want = n - got < sizeof buf ? n - got : sizeof buf;
    ssize_t k = weft_recv(fd, buf, want, 0);
    ASSERT_GT(k, 0);
    for (ssize_t i = 0; i < k; i++)
      if (buf[i] != pattern(*off + (size_t)i)) TEST_FAIL("byte %zu differs", *off + (size_t)i);
    *off += (size_t)k;
    got += (size_t)k;
  }
}

static int stuck_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_pin(); /* the writes go to this worker's ring; the drain below runs on the other */
  int peer;
  weft_stream *s = pair_stream(&peer, 4096);
  size_t off = 0;
  size_t prefill = fill_socket(s, &off);
  ASSERT_GT(prefill, 0);
  /* small writes: the first goes to the ring (stuck), the rest behind it */
  char chunk[1000];
  size_t written = 0;
  for (int k = 0; k < 20; k++) {
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = pattern(off + written + i);
    ASSERT_EQ(weft_stream_write(s, chunk, sizeof chunk), 0);
    written += sizeof chunk;
  }
  weft_sleep_ns(10000000);
  ASSERT_EQ(weft_stream_buffered(s), written); /* nothing could be sent */
  /* a drain on the other worker waits, and is cancelled */
  weft_task d = weft__spawn_pinned((unsigned)(1 - weft_worker_id()), drain_task, s, NULL);
  ASSERT_TRUE(d.rec != NULL);
  weft_sleep_ns(30000000);
  ASSERT_TRUE(!weft_task_done(d));
  ASSERT_EQ(weft_cancel(d), 1);
  ASSERT_EQ(weft_join(d), -ECANCELED);
  weft_task_release(d);
  ASSERT_EQ(weft_stream_buffered(s), written); /* the cancelled bytes stay buffered, none lost */
  /* the reader reads: a drain (from yet another task) sends it all, in order */
  size_t roff = 0;
  d = weft_spawn(drain_task, s);
  read_checked(peer, &roff, prefill + written);
  ASSERT_EQ(weft_join(d), 0);
  weft_task_release(d);
  ASSERT_EQ(weft_stream_buffered(s), 0);
  /* and the stream goes on: a write, then a check */
  off += written;
  for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = pattern(off + i);
  ASSERT_EQ(weft_stream_write(s, chunk, sizeof chunk), 0);
  read_checked(peer, &roff, sizeof chunk);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  weft_unpin();
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(stuck_ring_send_drain_cancelled_then_everything_in_order) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(stuck_main, NULL, &c), 0);
}

static int abort_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int rounds = test_sanitized() ? 10 : 50;
  for (int r = 0; r < rounds; r++) {
    int peer;
    weft_stream *s = pair_stream(&peer, 4096);
    size_t off = 0;
    fill_socket(s, &off);
    ASSERT_EQ(weft_stream_write(s, "stuck", 5), 0);
    if (r % 2) weft_sleep_ns(1000000); /* sometimes submitted, sometimes not yet */
    weft_stream_abort(s);
    ASSERT_EQ(weft_stream_wait_closed(s), 0); /* the stuck send is cancelled: returns at once */
    close(peer);
  }
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(abort_cancels_a_stuck_ring_send) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(abort_main, NULL, &c), 0);
}

/* Many small writes, each drained or not, from a writer hopping between
 * workers (yields), a reader on the other side checking the order. */
typedef struct hop {
  weft_stream *s;
  size_t total;
} hop;

static int hopping_writer(void *arg) {
  hop *h = arg;
  char chunk[300];
  size_t off = 0;
  for (int k = 0; off < h->total; k++) {
    size_t n = (size_t)(1 + (k * 37) % (int)sizeof chunk);
    if (n > h->total - off) n = h->total - off;
    for (size_t i = 0; i < n; i++) chunk[i] = pattern(off + i);
    ASSERT_EQ(weft_stream_write(h->s, chunk, n), 0);
    off += n;
    if (k % 3 == 0) ASSERT_EQ(weft_stream_drain(h->s), 0);
    if (k % 5 == 0) weft_yield();
  }
  ASSERT_EQ(weft_stream_drain(h->s), 0);
  return 0;
}

static int order_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int peer;
  weft_stream *s = pair_stream(&peer, 0);
  hop h = {.s = s, .total = test_sanitized() ? 200000 : 2000000};
  weft_task w = weft_spawn(hopping_writer, &h);
  size_t roff = 0;
  read_checked(peer, &roff, h.total);
  ASSERT_EQ(weft_join(w), 0);
  weft_task_release(w);
  ASSERT_EQ(weft_stream_wait_closed(s), 0);
  close(peer);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(small_writes_keep_their_order_across_workers) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(order_main, NULL, &c), 0);
}

/* A writer that drains after each of 2,000 small writes waits for its ring
 * send on the ring's worker, and resumes there: it used to come back through the
 * deque, where the other worker, woken for it, often stole it (a server's
 * connection hopping between workers, a wake-up per message). io_uring
 * only: on epoll a drain that waits for room waits like any other task,
 * and may move. */
static int drainer(void *arg) {
  weft_stream *s = arg;
  int moves = 0;
  if (weft_backend() != WEFT_BACKEND_URING) return 0;
  char msg[64] = {0};
  for (int i = 0; i < 2000; i++) {
    int before = weft_worker_id();
    ASSERT_EQ(weft_stream_write(s, msg, sizeof msg), 0);
    ASSERT_EQ(weft_stream_drain(s), 0);
    if (weft_worker_id() != before) moves++;
  }
  return moves;
}

/* The peer's reader, a plain thread (a few hundred small messages fill the
 * socket's buffer: each takes a buffer of its own there). */
static void *peer_reader(void *arg) {
  int fd = *(int *)arg;
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  char buf[4096];
  while (read(fd, buf, sizeof buf) > 0) {
  }
  return NULL;
}

static int drainer_main(void *arg) {
  (void)arg;
  int peer;
  weft_stream *s = pair_stream(&peer, 0);
  pthread_t reader;
  ASSERT_EQ(pthread_create(&reader, NULL, peer_reader, &peer), 0);
  weft_task t = weft_spawn(drainer, s);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  ASSERT_EQ(weft_stream_wait_closed(s), 0); /* the reader sees the end */
  pthread_join(reader, NULL);
  close(peer);
  return 0;
}

TEST(a_drain_resumes_on_its_rings_worker) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(drainer_main, NULL, &c), 0);
}

/* A peer that resets while a ring send is stuck: the error latches and
 * every later write and drain reports it. */
static int reset_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int peer;
  weft_stream *s = pair_stream(&peer, 4096);
  size_t off = 0;
  fill_socket(s, &off);
  ASSERT_EQ(weft_stream_write(s, "abc", 3), 0);
  weft_sleep_ns(5000000);
  close(peer); /* the stuck send fails (EPIPE/ECONNRESET) */
  int rc = weft_stream_drain(s);
  ASSERT_TRUE(rc == -EPIPE || rc == -ECONNRESET);
  ASSERT_EQ(weft_stream_write(s, "x", 1), rc);
  ASSERT_EQ(weft_stream_wait_closed(s), rc);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(peer_reset_during_a_ring_send_latches) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(reset_main, NULL, &c), 0);
}

TEST_MAIN()
