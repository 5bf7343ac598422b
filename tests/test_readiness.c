/* tests/test_readiness.c: descriptor readiness (io/readiness.c on the
 * epoll backend; the same tests run on io_uring): many connections with
 * random cancellation and every byte counted, one reader and one writer on
 * one descriptor, descriptor numbers closed with close(2) and reused,
 * deadlines and cancellation of idle waits, the peer's end after the last
 * data (no new edge says so), and the fd count after it all. */
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft/weft.h>

#include "test.h"
#include "test_util.h"

static uint8_t pattern(int conn, uint64_t i) { return (uint8_t)(i * 7 + (uint64_t)conn * 13 + (i >> 9)); }

/* A cancelled wait was counted; withdraw the request (the task goes on). */
static void cancelled(_Atomic int *seen) {
  atomic_fetch_add(seen, 1);
  weft_uncancel(weft_current());
}

/* Before returning: withdraw requests that came after the last wait. */
static void uncancel_all(void) {
  while (weft_uncancel(weft_current()) > 0) {
  }
}

/* ------------------------------------------------------------ many connections, random cancels */

enum { CONNS = 24 };

typedef struct conn {
  int id;
  int rfd, wfd;            /* raw ends (a socketpair): weft_recv / weft_send */
  weft_stream *rs, *ws;    /* or streams over TCP (owned descriptors) */
  uint64_t total;          /* bytes the writer sends */
  _Atomic uint64_t received;
  _Atomic uint64_t bad;
  _Atomic int cancels_seen;
  weft_task reader, writer;
  _Atomic int reader_done, writer_done;
} conn;

static conn conns[CONNS];
static _Atomic int started; /* tasks that began: a task cancelled before it starts never runs */

static int writer_task(void *arg) {
  conn *c = arg;
  atomic_fetch_add(&started, 1);
  uint64_t sent = 0, x = (uint64_t)c->id * 0x9E3779B97F4A7C15ull + 1;
  uint8_t buf[8192];
  while (sent < c->total) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t n = 1 + (size_t)(x % sizeof buf);
    if (n > c->total - sent) n = (size_t)(c->total - sent);
    for (size_t i = 0; i < n; i++) buf[i] = pattern(c->id, sent + i);
    ssize_t r;
    if (c->ws) {
      r = weft_stream_write(c->ws, buf, n);
      if (r == 0) r = weft_stream_drain(c->ws);
      if (r == 0) r = (ssize_t)n;
      if (r == -ECANCELED) { /* the bytes stay buffered: written once */
        cancelled(&c->cancels_seen);
        r = (ssize_t)n;
      }
    } else {
      r = weft_send(c->wfd, buf, n, 0);
      if (r == -ECANCELED) {
        cancelled(&c->cancels_seen);
        continue; /* a readiness wait moved nothing: send again */
      }
    }
    if (r <= 0) return (int)(r < 0 ? r : -EIO);
    sent += (uint64_t)r;
  }
  if (c->ws) {
    int rc;
    while ((rc = weft_stream_drain(c->ws)) == -ECANCELED) cancelled(&c->cancels_seen);
    if (rc) return rc;
    while ((rc = weft_stream_write_eof(c->ws)) == -ECANCELED) cancelled(&c->cancels_seen);
    if (rc) return rc;
  } else {
    shutdown(c->wfd, SHUT_WR);
  }
  atomic_store(&c->writer_done, 1);
  uncancel_all();
  return 0;
}

static int reader_task(void *arg) {
  conn *c = arg;
  atomic_fetch_add(&started, 1);
  uint8_t buf[6000];
  uint64_t got = 0;
  for (;;) {
    ssize_t r = c->rs ? weft_stream_read(c->rs, buf, sizeof buf) : weft_recv(c->rfd, buf, sizeof buf, 0);
    if (r == -ECANCELED) {
      cancelled(&c->cancels_seen);
      continue;
    }
    if (r < 0) return (int)r;
    if (r == 0) break;
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != pattern(c->id, got + (uint64_t)i)) atomic_fetch_add(&c->bad, 1);
    got += (uint64_t)r;
    atomic_store(&c->received, got);
  }
  atomic_store(&c->reader_done, 1);
  uncancel_all();
  return 0;
}

static int canceller_task(void *arg) {
  (void)arg;
  uint64_t x = 0x1234567;
  int rounds = 0;
  while (atomic_load(&started) < 2 * CONNS) weft_yield();
  for (;;) {
    bool all = true;
    for (int i = 0; i < CONNS; i++)
      if (!atomic_load(&conns[i].reader_done) || !atomic_load(&conns[i].writer_done)) all = false;
    if (all || rounds++ > 200000) return 0;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    conn *c = &conns[x % CONNS];
    if ((x >> 20) & 1) {
      if (!atomic_load(&c->reader_done)) weft_cancel(c->reader);
    } else {
      if (!atomic_load(&c->writer_done)) weft_cancel(c->writer);
    }
    if ((x >> 40) % 8 == 0)
      weft_sleep_ns((int64_t)((x >> 33) % 200000));
    else
      weft_yield();
  }
}

/* Socket buffers of a sixteenth of a connection's transfer on both ends: the
 * transfer must wait for room and for data over and over, so that the
 * canceller's requests land in waits. (With the default buffers, under ASan,
 * where a connection moves 256 KiB, one run in ~15 saw no cancelled wait
 * at all; 4 KiB buffers made the test 30x slower.) */
static void sized_buffers(int fd, int sz) {
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz), 0);
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz), 0);
}

static int tcp_pair(int lfd, const weft_addr *a, int bufsz, int *client, int *server) {
  *client = weft_connect_addr(a, WEFT_NO_DEADLINE);
  if (*client < 0) return *client;
  *server = weft_accept(lfd, NULL);
  if (*server < 0) return *server;
  sized_buffers(*client, bufsz);
  sized_buffers(*server, bufsz);
  return 0;
}

static int many_main(void *arg) {
  bool streams = arg != NULL;
  int fds0 = count_fds();
  uint64_t per = (uint64_t)(test_sanitized() ? 256 : 2048) * 1024 * (uint64_t)test_stress_scale();
  int lfd = -1;
  weft_addr a;
  if (streams) {
    ASSERT_EQ(weft_addr_parse(&a, "127.0.0.1:0"), 0);
    lfd = weft_listen(&a, 64, 0);
    ASSERT_GE(lfd, 0);
    ASSERT_EQ(weft_sockname(lfd, &a), 0);
  }
  for (int i = 0; i < CONNS; i++) {
    conn *c = &conns[i];
    memset(c, 0, sizeof *c);
    c->id = i;
    c->total = per + (uint64_t)i * 1000;
    if (streams) {
      int cl, sv;
      ASSERT_EQ(tcp_pair(lfd, &a, (int)(per / 16), &cl, &sv), 0);
      ASSERT_EQ(weft_stream_from_fd(cl, &c->ws), 0);
      ASSERT_EQ(weft_stream_from_fd(sv, &c->rs), 0);
    } else {
      int sv[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
      c->wfd = sv[0];
      c->rfd = sv[1];
    }
  }
  atomic_store(&started, 0);
  for (int i = 0; i < CONNS; i++) {
    conns[i].reader = weft_spawn(reader_task, &conns[i]);
    conns[i].writer = weft_spawn(writer_task, &conns[i]);
  }
  weft_task canc = weft_spawn(canceller_task, NULL);
  int cancels = 0;
  for (int i = 0; i < CONNS; i++) {
    conn *c = &conns[i];
    /* a request that came after the task's last uncancel makes it end
     * "cancelled": the flags say whether it finished its work */
    int rw = weft_join(c->writer), rr = weft_join(c->reader);
    ASSERT_TRUE(rw == 0 || (rw == -ECANCELED && atomic_load(&c->writer_done)));
    ASSERT_TRUE(rr == 0 || (rr == -ECANCELED && atomic_load(&c->reader_done)));
    weft_task_release(c->writer);
    weft_task_release(c->reader);
    ASSERT_UEQ(atomic_load(&c->received), c->total);
    ASSERT_UEQ(atomic_load(&c->bad), 0);
    cancels += atomic_load(&c->cancels_seen);
  }
  ASSERT_EQ(weft_join(canc), 0);
  weft_task_release(canc);
  ASSERT_GT(cancels, 0); /* the cancels did land in waits */
  for (int i = 0; i < CONNS; i++) {
    conn *c = &conns[i];
    if (streams) {
      ASSERT_EQ(weft_stream_wait_closed(c->ws), 0);
      ASSERT_EQ(weft_stream_wait_closed(c->rs), 0);
    } else {
      ASSERT_EQ(weft_close(c->wfd), 0);
      close(c->rfd); /* close(2) behind the runtime's back: allowed for a raw descriptor */
    }
  }
  if (lfd >= 0) close(lfd);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(raw_sockets_random_cancels_count_every_byte) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(many_main, NULL, &c), 0);
}

TEST(streams_random_cancels_count_every_byte) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(many_main, (void *)1, &c), 0);
}

TEST(streams_random_cancels_migrating_tasks) {
  weft_config c = cfg_workers(3);
  c.test_migrate = 1; /* every wake resumes the task on another worker than its last */
  ASSERT_EQ(weft_run(many_main, (void *)1, &c), 0);
}

/* ------------------------------------------------------------ one reader and one writer on one descriptor */

typedef struct duplex {
  int fd;     /* both tasks use it */
  int peer;   /* echoes in a task of its own */
  uint64_t total;
  uint64_t got, bad;
} duplex;

static int duplex_writer(void *arg) {
  duplex *d = arg;
  uint8_t buf[4096];
  for (uint64_t sent = 0; sent < d->total;) {
    size_t n = sizeof buf;
    if (n > d->total - sent) n = (size_t)(d->total - sent);
    for (size_t i = 0; i < n; i++) buf[i] = pattern(1, sent + i);
    ssize_t r = weft_send(d->fd, buf, n, 0);
    if (r <= 0) return (int)(r < 0 ? r : -EIO);
    sent += (uint64_t)r;
  }
  return 0;
}

static int duplex_reader(void *arg) {
  duplex *d = arg;
  uint8_t buf[3000];
  while (d->got < d->total) {
    ssize_t r = weft_recv(d->fd, buf, sizeof buf, 0);
    if (r <= 0) return (int)(r < 0 ? r : -EIO);
    for (ssize_t i = 0; i < r; i++)
      if (buf[i] != pattern(1, d->got + (uint64_t)i)) d->bad++;
    d->got += (uint64_t)r;
  }
  return 0;
}

/* The peer echoes slowly (small reads, yields), so that both the writer
 * (full socket buffer) and the reader (empty) wait on the same descriptor
 * at the same time, often. */
static int duplex_echo(void *arg) {
  duplex *d = arg;
  uint8_t buf[1500];
  for (uint64_t done = 0; done < d->total;) {
    ssize_t r = weft_recv(d->peer, buf, sizeof buf, 0);
    if (r <= 0) return (int)(r < 0 ? r : -EIO);
    size_t off = 0;
    while (off < (size_t)r) {
      ssize_t w = weft_send(d->peer, buf + off, (size_t)r - off, 0);
      if (w <= 0) return (int)(w < 0 ? w : -EIO);
      off += (size_t)w;
    }
    done += (uint64_t)r;
    if ((done & 0xffff) < 1500) weft_yield();
  }
  return 0;
}

static int duplex_main(void *arg) {
  (void)arg;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
  int small = 4096;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  static duplex d;
  d = (duplex){.fd = sv[0], .peer = sv[1], .total = (uint64_t)(test_sanitized() ? 2 : 16) << 20};
  weft_task e = weft_spawn(duplex_echo, &d);
  weft_task r = weft_spawn(duplex_reader, &d);
  weft_task w = weft_spawn(duplex_writer, &d);
  ASSERT_EQ(weft_join(w), 0);
  ASSERT_EQ(weft_join(r), 0);
  ASSERT_EQ(weft_join(e), 0);
  weft_task_release(w);
  weft_task_release(r);
  weft_task_release(e);
  ASSERT_UEQ(d.got, d.total);
  ASSERT_UEQ(d.bad, 0);
  ASSERT_EQ(weft_close(sv[0]), 0);
  ASSERT_EQ(weft_close(sv[1]), 0);
  return 0;
}

TEST(one_reader_and_one_writer_on_one_descriptor) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(duplex_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ numbers closed behind our back and reused */

static int late_writer(void *arg) {
  int fd = (int)(intptr_t)arg;
  weft_sleep_ns(2000000);
  return write(fd, "z", 1) == 1 ? 0 : -errno;
}

static int reuse_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  for (int round = 0; round < 50; round++) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    /* a wait registers the read end... */
    weft_task t = weft_spawn(late_writer, (void *)(intptr_t)p[1]);
    char c;
    ASSERT_EQ(weft_read(p[0], &c, 1), 1);
    ASSERT_EQ(weft_join(t), 0);
    weft_task_release(t);
    /* ...and then the numbers are closed with close(2) (round % 3 == 0),
     * handed to a stream that owns and closes them, or closed with
     * weft_close; the next round gets the same numbers for new pipes */
    if (round % 3 == 0) {
      close(p[0]);
      close(p[1]);
    } else if (round % 3 == 1) {
      weft_stream *s;
      ASSERT_EQ(weft_stream_from_fd(p[0], &s), 0);
      t = weft_spawn(late_writer, (void *)(intptr_t)p[1]);
      ASSERT_EQ(weft_stream_read(s, &c, 1), 1);
      ASSERT_EQ(weft_join(t), 0);
      weft_task_release(t);
      ASSERT_EQ(weft_stream_wait_closed(s), 0);
      close(p[1]);
    } else {
      ASSERT_EQ(weft_close(p[0]), 0);
      ASSERT_EQ(weft_close(p[1]), 0);
    }
  }
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(closed_and_reused_numbers_do_not_hang) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(reuse_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ idle waits: deadline, cancel, then data */

static int idle_reader(void *arg) {
  int fd = (int)(intptr_t)arg;
  char c;
  return (int)weft_read(fd, &c, 1);
}

static int idle_main(void *arg) {
  (void)arg;
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
  char c;
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_read_until(p[0], &c, 1, t0 + 20000000), -ETIMEDOUT);
  ASSERT_GE(weft_now_ns() - t0, 20000000);
  ASSERT_EQ(weft_poll(p[0], POLLIN, weft_now_ns() + 5000000), -ETIMEDOUT);
  weft_task t = weft_spawn(idle_reader, (void *)(intptr_t)p[0]);
  weft_sleep_ns(5000000);
  weft_cancel(t);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  /* the registration is still there: data after the cancels is seen */
  t = weft_spawn(idle_reader, (void *)(intptr_t)p[0]);
  weft_sleep_ns(2000000);
  ASSERT_EQ(write(p[1], "k", 1), 1);
  ASSERT_EQ(weft_join(t), 1);
  weft_task_release(t);
  ASSERT_EQ(weft_poll(p[1], POLLOUT, WEFT_NO_DEADLINE) & POLLOUT, POLLOUT);
  ASSERT_EQ(weft_close(p[0]), 0);
  ASSERT_EQ(weft_close(p[1]), 0);
  return 0;
}

TEST(idle_waits_time_out_and_cancel_then_see_data) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(idle_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ the end after the last data */

/* The peer sends a little and closes at once: the event that reports the
 * data also reports the end; a stream's short receive must not make the
 * next one wait for an edge that never comes. */
static int end_main(void *arg) {
  (void)arg;
  for (int round = 0; round < 200; round++) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    weft_stream *s;
    ASSERT_EQ(weft_stream_from_fd(sv[0], &s), 0);
    if (round & 1) { /* data and end before the first read */
      ASSERT_EQ(write(sv[1], "abc", 3), 3);
      close(sv[1]);
    } else {
      weft_task t = weft_spawn(late_writer, (void *)(intptr_t)sv[1]);
      char c;
      ASSERT_EQ(weft_stream_read(s, &c, 1), 1);
      ASSERT_EQ(weft_join(t), 0);
      weft_task_release(t);
      ASSERT_EQ(write(sv[1], "bc", 2), 2);
      close(sv[1]);
    }
    char buf[64];
    ssize_t n = weft_stream_read_all(s, buf, sizeof buf);
    ASSERT_EQ(n, round & 1 ? 3 : 2);
    ASSERT_EQ(weft_stream_read(s, buf, sizeof buf), 0);
    ASSERT_EQ(weft_stream_wait_closed(s), 0);
  }
  return 0;
}

TEST(end_of_stream_after_the_last_data_is_seen) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(end_main, NULL, &c), 0);
}

TEST_MAIN()
