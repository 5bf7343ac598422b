/* tests/test_protocol.c: transports and protocols (weft/protocol.h) over
 * TCP and Unix sockets: the callbacks' order (a recorded trace compared
 * with the documented one), every byte of random-sized writes checked,
 * eof_received half-open and not, flow control at the watermarks (a peer
 * that does not read), pause_reading/resume_reading, close from inside
 * data_received, abort with buffered data, connection_lost exactly once on
 * a peer's reset, server shutdown (cancellation) and a lost creator, the
 * buffered protocol receiving into the user's memory, writes from many
 * tasks on both workers at once, Python's asyncio as the independent peer,
 * bad input, asyncio's default watermarks, no descriptor leaked,
 * peername/sockname after the end, pause_writing only for bytes the kernel
 * did not take (io_uring's ring sends), close/abort with a flush to a peer
 * that never reads, nothing delivered after close/abort inside
 * data_received. The peers are weft's streams (or raw
 * sockets, or python3), never the code under test at both ends, except in
 * the client/server trace test. Runs on whichever backend WEFT_BACKEND
 * selects. Loopback only. */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <weft/weft.h>

#include "test.h"
#include "test_util.h"
#include "net_test_util.h"

/* ------------------------------------------------------------ order and integrity */

static size_t total_random(unsigned *seed, size_t *sizes, int n) {
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    sizes[i] = 1 + (size_t)(rand_r(seed) % 70000);
    total += sizes[i];
  }
  return total;
}

static int order_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  static server_recs s;
  s.tmpl = (rec){.echo = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  rec c;
  rec_init(&c);
  weft_protocol p = proto_of(&c);
  weft_transport *t;
  ASSERT_EQ(weft_create_connection("127.0.0.1", port, &p, WEFT_NO_DEADLINE, &t), 0);
  ASSERT_TRUE(weft_event_is_set(&c.made)); /* create_connection returns after connection_made */
  weft_addr peer, local;
  ASSERT_EQ(weft_transport_get_extra_info(t, "peername", &peer, sizeof peer), 0);
  ASSERT_EQ(weft_addr_port(&peer), port);
  ASSERT_EQ(weft_transport_get_extra_info(t, "sockname", &local, sizeof local), 0);
  int fd = -1;
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &fd, sizeof fd), 0);
  ASSERT_TRUE(fd >= 0);
  ASSERT_TRUE(weft_transport_can_write_eof(t));
  unsigned seed = 12345;
  enum { N = 40 };
  size_t sizes[N];
  size_t total = total_random(&seed, sizes, N);
  unsigned char *out = malloc(total);
  for (size_t i = 0; i < total; i++) out[i] = pattern(i * 7 + 3);
  size_t off = 0;
  for (int i = 0; i < N; i++) { /* writes of random sizes, sometimes two buffers at once */
    if (i % 3 == 0 && sizes[i] > 1) {
      struct iovec iov[2] = {{out + off, sizes[i] / 2}, {out + off + sizes[i] / 2, sizes[i] - sizes[i] / 2}};
      ASSERT_EQ(weft_transport_writev(t, iov, 2), 0);
    } else {
      ASSERT_EQ(weft_transport_write(t, out + off, sizes[i]), 0);
    }
    off += sizes[i];
    if (i % 8 == 0) weft_sleep_ns(1000000);
  }
  for (int k = 0; k < 20000 && atomic_load(&c.len) < total; k++) weft_sleep_ns(1000000);
  ASSERT_UEQ(atomic_load(&c.len), total);
  ASSERT_TRUE(memcmp(c.data, out, total) == 0);
  /* the client half-closes: the server's eof_received answers false, so
   * the server closes; the client sees end of stream and closes too */
  ASSERT_EQ(weft_transport_write_eof(t), 0);
  ASSERT_EQ(weft_transport_write(t, "x", 1), -EPIPE);
  ASSERT_EQ(weft_event_wait(&c.lost), 0);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_trace(&c, "MDEL");
  assert_trace(sr, "MDEL");
  ASSERT_EQ(c.lost_err, 0);
  ASSERT_EQ(sr->lost_err, 0);
  ASSERT_UEQ(atomic_load(&sr->len), total);
  ASSERT_TRUE(memcmp(sr->data, out, total) == 0);
  ASSERT_EQ(atomic_load(&c.lost_count), 1);
  ASSERT_EQ(atomic_load(&sr->lost_count), 1);
  /* a transport held past connection_lost reports it closed */
  ASSERT_TRUE(weft_transport_is_closing(t));
  ASSERT_EQ(weft_transport_write(t, "x", 1), -EPIPE);
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &fd, sizeof fd), -EBADF);
  weft_transport_release(t);
  rec_free(&c);
  rec_free(sr);
  weft_server_free(srv);
  free(out);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(callbacks_in_order_and_every_byte_checked) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(order_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ end of stream */

static int half_open_main(void *arg) {
  bool keep_open = arg != NULL;
  static server_recs s;
  s.tmpl = (rec){.keep_open_on_eof = keep_open, .eof_reply = keep_open ? "bye" : NULL};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", port, WEFT_NO_DEADLINE, &st), 0);
  ASSERT_EQ(weft_stream_write(st, "hello", 5), 0);
  ASSERT_EQ(weft_stream_write_eof(st), 0);
  char buf[16];
  ssize_t n = weft_stream_read_all(st, buf, sizeof buf);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  if (keep_open) { /* half open: the server wrote after the peer's end, then closed */
    ASSERT_EQ(n, 3);
    ASSERT_TRUE(memcmp(buf, "bye", 3) == 0);
  } else {
    ASSERT_EQ(n, 0);
  }
  assert_trace(sr, "MDEL");
  ASSERT_EQ(sr->lost_err, 0);
  ASSERT_UEQ(atomic_load(&sr->len), 5);
  ASSERT_EQ(weft_stream_wait_closed(st), 0);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(eof_received_closes) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(half_open_main, NULL, &c), 0);
}

TEST(eof_received_keeps_half_open) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(half_open_main, "keep", &c), 0);
}

/* ------------------------------------------------------------ flow control */

static int flow_main(void *arg) {
  bool do_abort = arg != NULL;
  size_t blob = test_sanitized() ? (size_t)8 << 20 : (size_t)32 << 20; /* far more than the socket buffers */
  static server_recs s;
  s.tmpl = (rec){.blob = blob, .high = 256 * 1024, .low = 64 * 1024};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", port, WEFT_NO_DEADLINE, &st), 0);
  rec *sr = server_rec(&s, 0);
  /* the peer does not read: the write buffer stays above high */
  weft_sleep_ns(200000000);
  ASSERT_EQ(atomic_load(&sr->pauses), 1);
  ASSERT_EQ(atomic_load(&sr->resumes), 0);
  size_t buffered = weft_transport_get_write_buffer_size(sr->t);
  ASSERT_TRUE(buffered > 256 * 1024);
  if (do_abort) {
    weft_transport_abort(sr->t);
    ASSERT_TRUE(weft_transport_is_closing(sr->t)); /* at once, as asyncio's abort */
    ASSERT_EQ(weft_event_wait(&sr->lost), 0);
    ASSERT_EQ(sr->lost_err, 0);
    ASSERT_EQ(weft_transport_get_write_buffer_size(sr->t), 0); /* dropped */
    assert_trace(sr, "MPL");
    /* the peer reads what was sent, then the reset */
    char *buf = malloc(1 << 20);
    size_t got = 0;
    ssize_t n;
    while ((n = weft_stream_read(st, buf, 1 << 20)) > 0) got += (size_t)n;
    ASSERT_TRUE(n == -ECONNRESET || n == 0);
    ASSERT_TRUE(got < blob);
    free(buf);
  } else {
    /* now read everything, checking every byte; the server closes once the
     * buffer is empty (close() from this task: cross-task) */
    weft_transport_close(sr->t);
    unsigned char *buf = malloc(1 << 20);
    size_t got = 0;
    for (;;) {
      ssize_t n = weft_stream_read(st, buf, 1 << 20);
      ASSERT_TRUE(n >= 0);
      if (n == 0) break;
      for (ssize_t i = 0; i < n; i++)
        if (buf[i] != pattern(got + (size_t)i)) TEST_FAIL("byte %zu differs", got + (size_t)i);
      got += (size_t)n;
    }
    ASSERT_UEQ(got, blob);
    free(buf);
    ASSERT_EQ(weft_event_wait(&sr->lost), 0);
    ASSERT_EQ(sr->lost_err, 0);
    ASSERT_EQ(atomic_load(&sr->pauses), 1);
    ASSERT_EQ(atomic_load(&sr->resumes), 1);
    assert_trace(sr, "MPRL");
  }
  ASSERT_EQ(atomic_load(&sr->lost_count), 1);
  weft_stream_wait_closed(st);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(flow_control_at_the_watermarks) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(flow_main, NULL, &c), 0);
}

TEST(abort_drops_buffered_data) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(flow_main, "abort", &c), 0);
}

/* ------------------------------------------------------------ pause_reading */

static int pause_main(void *arg) {
  (void)arg;
  static server_recs s;
  s.tmpl = (rec){.pause_in_made = true, .echo = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", port, WEFT_NO_DEADLINE, &st), 0);
  rec *sr = server_rec(&s, 0);
  ASSERT_TRUE(!weft_transport_is_reading(sr->t));
  ASSERT_EQ(weft_stream_write(st, "0123456789", 10), 0);
  ASSERT_EQ(weft_stream_drain(st), 0);
  weft_sleep_ns(150000000);
  ASSERT_UEQ(atomic_load(&sr->len), 0); /* paused: nothing delivered */
  ASSERT_EQ(weft_transport_resume_reading(sr->t), 0); /* from another task */
  ASSERT_TRUE(weft_transport_is_reading(sr->t));
  char buf[16];
  ASSERT_EQ(weft_stream_readexactly(st, buf, 10, NULL), 10);
  ASSERT_TRUE(memcmp(buf, "0123456789", 10) == 0);
  /* pause again: the end of stream is not delivered while paused either */
  ASSERT_EQ(weft_transport_pause_reading(sr->t), 0);
  ASSERT_EQ(weft_transport_pause_reading(sr->t), 0); /* idempotent */
  ASSERT_EQ(weft_stream_write_eof(st), 0);
  weft_sleep_ns(100000000);
  ASSERT_TRUE(!weft_event_is_set(&sr->lost));
  ASSERT_EQ(weft_transport_resume_reading(sr->t), 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_trace(sr, "MDEL");
  ASSERT_EQ(weft_transport_pause_reading(sr->t), -EPIPE);
  weft_stream_wait_closed(st);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(pause_reading_delivers_nothing_until_resumed) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(pause_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ close inside a callback */

static int close_in_data_main(void *arg) {
  (void)arg;
  static server_recs s;
  s.tmpl = (rec){.close_in_data = true, .echo = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", port, WEFT_NO_DEADLINE, &st), 0);
  ASSERT_EQ(weft_stream_write(st, "abc", 3), 0);
  ASSERT_EQ(weft_stream_drain(st), 0);
  char buf[16];
  ASSERT_EQ(weft_stream_read_all(st, buf, sizeof buf), 3); /* the echo was flushed before the close */
  ASSERT_TRUE(memcmp(buf, "abc", 3) == 0);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_trace(sr, "MDL");
  ASSERT_EQ(sr->lost_err, 0);
  weft_stream_wait_closed(st);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(close_from_inside_data_received) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(close_in_data_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ connection_lost once */

static int reset_main(void *arg) {
  (void)arg;
  static server_recs s;
  s.tmpl = (rec){.echo = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", port), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_TRUE(fd >= 0);
  ASSERT_EQ(weft_send(fd, "ping", 4, 0), 4);
  char buf[4];
  ASSERT_EQ(weft_recv(fd, buf, 4, MSG_WAITALL), 4);
  struct linger lg = {1, 0};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd); /* a reset */
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  ASSERT_EQ(sr->lost_err, -ECONNRESET);
  weft_sleep_ns(20000000);
  ASSERT_EQ(atomic_load(&sr->lost_count), 1);
  assert_trace(sr, "MDL");
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(connection_lost_once_on_peer_reset) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(reset_main, NULL, &c), 0);
}

static int shutdown_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  static server_recs s;
  s.tmpl = (rec){.echo = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  enum { N = 8 };
  weft_stream *st[N];
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(weft_open_connection("127.0.0.1", port, WEFT_NO_DEADLINE, &st[i]), 0);
    ASSERT_EQ(weft_stream_write(st[i], "x", 1), 0);
    char c;
    ASSERT_EQ(weft_stream_readexactly(st[i], &c, 1, NULL), 1);
  }
  ASSERT_EQ(weft_server_active(srv), N);
  /* the peers stay open: shutdown with a deadline now cancels every driver */
  ASSERT_EQ(weft_server_shutdown(srv, weft_now_ns()), N);
  ASSERT_EQ(weft_server_active(srv), 0);
  for (int i = 0; i < N; i++) {
    rec *sr = &s.recs[i];
    ASSERT_TRUE(weft_event_is_set(&sr->lost));
    ASSERT_EQ(sr->lost_err, -ECANCELED);
    ASSERT_EQ(atomic_load(&sr->lost_count), 1);
    assert_trace(sr, "MDL");
    char c;
    ASSERT_EQ(weft_stream_read(st[i], &c, 1), 0); /* the server side is closed */
    weft_stream_wait_closed(st[i]);
    rec_free(sr);
  }
  weft_server_free(srv);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(connection_lost_cancelled_on_server_shutdown) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(shutdown_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ buffered protocol */

static int buffered_main(void *arg) {
  (void)arg;
  size_t total = 300000;
  static server_recs s;
  unsigned char *mem = calloc(1, total + 1000);
  s.tmpl = (rec){.ubuf = mem, .ucap = total + 1000, .upiece = 777}; /* room left: get_buffer never fails here */
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", port, WEFT_NO_DEADLINE, &st), 0);
  unsigned char *out = malloc(total);
  for (size_t i = 0; i < total; i++) out[i] = pattern(i + 11);
  ASSERT_EQ(weft_stream_write(st, out, total), 0);
  ASSERT_EQ(weft_stream_write_eof(st), 0);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_trace(sr, "MDEL");
  ASSERT_UEQ(atomic_load(&sr->len), total);
  ASSERT_TRUE(memcmp(mem, out, total) == 0); /* received straight into the user's memory, in order */
  weft_stream_wait_closed(st);
  rec_free(sr);
  weft_server_free(srv);
  free(mem);
  free(out);
  return 0;
}

TEST(buffered_protocol_receives_into_user_memory) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(buffered_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ Unix sockets */

static int unix_main(void *arg) {
  (void)arg;
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-proto-%d.sock", (int)getpid());
  unlink(path);
  static server_recs s;
  s.tmpl = (rec){.echo = true};
  atomic_store(&s.n, 0);
  for (int i = 0; i < MAX_CONNS; i++) atomic_store(&s.set_up[i], 0);
  weft_server *srv;
  ASSERT_EQ(weft_create_unix_server(&srv, path, factory, &s, NULL), 0);
  rec c;
  rec_init(&c);
  weft_protocol p = proto_of(&c);
  weft_transport *t;
  ASSERT_EQ(weft_create_unix_connection(path, &p, WEFT_NO_DEADLINE, &t), 0);
  size_t total = 200000;
  unsigned char *out = malloc(total);
  for (size_t i = 0; i < total; i++) out[i] = pattern(i * 3);
  for (size_t off = 0; off < total; off += 10000) ASSERT_EQ(weft_transport_write(t, out + off, 10000), 0);
  for (int k = 0; k < 20000 && atomic_load(&c.len) < total; k++) weft_sleep_ns(1000000);
  ASSERT_UEQ(atomic_load(&c.len), total);
  ASSERT_TRUE(memcmp(c.data, out, total) == 0);
  weft_transport_close(t);
  ASSERT_EQ(weft_event_wait(&c.lost), 0);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_trace(&c, "MDL");
  assert_trace(sr, "MDEL");
  weft_transport_release(t);
  rec_free(&c);
  rec_free(sr);
  weft_server_free(srv);
  free(out);
  ASSERT_EQ(access(path, F_OK), -1);
  return 0;
}

TEST(unix_socket_transport) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(unix_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ writes from many tasks */

typedef struct writer_arg {
  weft_transport *t;
  int id, count;
} writer_arg;

/* Records "<id><seq:4>" of 5 bytes; each writer's records must arrive in
 * its own order. */
static int writer_main(void *arg) {
  writer_arg *w = arg;
  for (int i = 0; i < w->count; i++) {
    unsigned char rec5[5] = {(unsigned char)w->id, (unsigned char)(i >> 24), (unsigned char)(i >> 16),
                             (unsigned char)(i >> 8), (unsigned char)i};
    ASSERT_EQ(weft_transport_write(w->t, rec5, 5), 0);
    if (i % 64 == 0) weft_yield();
  }
  return 0;
}

static int many_writers_main(void *arg) {
  (void)arg;
  static server_recs s;
  s.tmpl = (rec){0};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  rec c;
  rec_init(&c);
  weft_protocol p = proto_of(&c);
  weft_transport *t;
  ASSERT_EQ(weft_create_connection("127.0.0.1", port, &p, WEFT_NO_DEADLINE, &t), 0);
  enum { W = 6 };
  int count = test_sanitized() ? 2000 : (int)(20000 * test_stress_scale());
  writer_arg wa[W];
  weft_task ts[W];
  for (int i = 0; i < W; i++) {
    wa[i] = (writer_arg){t, i, count};
    ts[i] = weft_spawn(writer_main, &wa[i]);
  }
  for (int i = 0; i < W; i++) {
    ASSERT_EQ(weft_join(ts[i]), 0);
    weft_task_release(ts[i]);
  }
  weft_transport_close(t);
  ASSERT_EQ(weft_event_wait(&c.lost), 0);
  ASSERT_EQ(c.lost_err, 0);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  size_t len = atomic_load(&sr->len);
  ASSERT_UEQ(len, (size_t)W * (size_t)count * 5);
  int next[W] = {0};
  for (size_t off = 0; off < len; off += 5) {
    unsigned char *r = sr->data + off;
    ASSERT_TRUE(r[0] < W);
    int seq = (r[1] << 24) | (r[2] << 16) | (r[3] << 8) | r[4];
    ASSERT_EQ(seq, next[r[0]]);
    next[r[0]]++;
  }
  weft_transport_release(t);
  rec_free(&c);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(writes_from_many_tasks_keep_each_writers_order) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(many_writers_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ Python's asyncio as the peer */

static char py_cmd[1024];
static int run_cmd(void *arg) {
  (void)arg;
  int rc = system(py_cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static const char *py_client =
    "import asyncio, os, sys\n"
    "async def main():\n"
    "    r, w = await asyncio.open_connection('127.0.0.1', int(sys.argv[1]))\n"
    "    data = os.urandom(300000)\n"
    "    got = bytearray()\n"
    "    for i in range(0, len(data), 7001):\n"
    "        w.write(data[i:i+7001]); await w.drain()\n"
    "    while len(got) < len(data):\n"
    "        b = await r.read(65536)\n"
    "        if not b: break\n"
    "        got += b\n"
    "    assert bytes(got) == data, 'echo differs'\n"
    "    w.write_eof()\n"
    "    assert await r.read() == b'', 'no end of stream'\n"
    "    w.close(); await w.wait_closed()\n"
    "asyncio.run(main())\n";

static int python_main(void *arg) {
  (void)arg;
  static server_recs s;
  s.tmpl = (rec){.echo = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  char script[64];
  snprintf(script, sizeof script, "/tmp/weft-proto-py-%d.py", (int)getpid());
  FILE *f = fopen(script, "w");
  ASSERT_TRUE(f != NULL);
  fputs(py_client, f);
  fclose(f);
  snprintf(py_cmd, sizeof py_cmd, "python3 %s %u", script, (unsigned)port);
  ASSERT_EQ(weft_to_thread(run_cmd, NULL), 0);
  unlink(script);
  rec *sr = server_rec(&s, 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_trace(sr, "MDEL");
  ASSERT_UEQ(atomic_load(&sr->len), 300000);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(python_asyncio_client_against_a_protocol_server) {
  if (system("python3 -c 'import asyncio' 2>/dev/null") != 0) TEST_SKIP("no python3");
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(python_main, NULL, &c), 0);
}

/* ------------------------------------------------------------ bad input */

static void nothing(weft_transport *t, const void *d, size_t n, void *u) {
  (void)t, (void)d, (void)n, (void)u;
}
static void *no_buffer(weft_transport *t, size_t h, size_t *n, void *u) {
  (void)t, (void)h, (void)n, (void)u;
  return NULL;
}

static int bad_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_protocol both = {.data_received = nothing, .get_buffer = no_buffer};
  weft_transport *t;
  ASSERT_EQ(weft_create_connection("127.0.0.1", 1, &both, WEFT_NO_DEADLINE, &t), -EINVAL);
  ASSERT_EQ(weft_create_connection("127.0.0.1", 1, NULL, WEFT_NO_DEADLINE, &t), -EINVAL);
  weft_protocol half = {.get_buffer = no_buffer};
  ASSERT_EQ(weft_create_connection("127.0.0.1", 1, &half, WEFT_NO_DEADLINE, &t), -EINVAL);
  weft_protocol plain = {.data_received = nothing};
  /* nobody listens on a port we held and closed */
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", 0), 0);
  int lfd = weft_listen(&a, 1, 0);
  weft_addr la;
  ASSERT_EQ(weft_sockname(lfd, &la), 0);
  close(lfd);
  ASSERT_EQ(weft_create_connection("127.0.0.1", (uint16_t)weft_addr_port(&la), &plain, WEFT_NO_DEADLINE, &t),
            -ECONNREFUSED);
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, NULL, NULL, NULL), -EINVAL);
  weft_server_opts o = {.tls = (weft_tls_ctx *)&o};
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, factory, NULL, &o), -EINVAL);
  ASSERT_EQ(weft_connect_accepted_socket(-1, &plain, &t), -EBADF);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  ASSERT_EQ(weft_connect_accepted_socket(pipefd[0], &plain, &t), -ENOTSOCK); /* and it was closed */
  close(pipefd[1]);
  /* a listening socket and one never connected: no connection to make a
   * transport over (before: 0, then connection_lost(-ENOTCONN)) */
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_TRUE(ls >= 0);
  ASSERT_EQ(weft_addr_ip(&la, "127.0.0.1", 0), 0);
  ASSERT_EQ(bind(ls, &la.u.sa, la.len), 0);
  ASSERT_EQ(listen(ls, 1), 0);
  ASSERT_EQ(weft_connect_accepted_socket(ls, &plain, &t), -EINVAL); /* and it was closed */
  int fresh = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_TRUE(fresh >= 0);
  ASSERT_EQ(weft_connect_accepted_socket(fresh, &plain, &t), -ENOTCONN);
  ASSERT_TRUE(fcntl(ls, F_GETFD) < 0 && fcntl(fresh, F_GETFD) < 0); /* both closed */
  ASSERT_EQ(weft_transport_write(NULL, "x", 1), -EINVAL);
  /* a real transport: calls with bad arguments */
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  rec c;
  rec_init(&c);
  weft_protocol p = proto_of(&c);
  ASSERT_EQ(weft_connect_accepted_socket(sv[0], &p, &t), 0);
  ASSERT_EQ(weft_transport_write(t, NULL, 1), -EINVAL);
  ASSERT_EQ(weft_transport_write(t, "x", 0), 0);
  ASSERT_EQ(weft_transport_writev(t, NULL, 1), -EINVAL);
  ASSERT_EQ(weft_transport_writev(t, NULL, -1), -EINVAL);
  ASSERT_EQ(weft_transport_set_write_buffer_limits(t, 10, 20), -EINVAL);
  ASSERT_EQ(weft_transport_set_write_buffer_limits(t, WEFT_TRANSPORT_DEFAULT, WEFT_TRANSPORT_DEFAULT), 0);
  size_t high, low;
  weft_transport_get_write_buffer_limits(t, &high, &low);
  ASSERT_UEQ(high, 65536);
  ASSERT_UEQ(low, 16384);
  int x;
  ASSERT_EQ(weft_transport_get_extra_info(t, "nonsense", &x, sizeof x), -ENOENT);
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &x, 1), -EINVAL);
  ASSERT_EQ(weft_transport_get_extra_info(t, "peername", &x, sizeof x), -EINVAL);
  ASSERT_EQ(weft_transport_write(t, "hi", 2), 0);
  char buf[2];
  ASSERT_EQ(weft_recv(sv[1], buf, 2, MSG_WAITALL), 2);
  weft_transport_close(t);
  weft_transport_close(t); /* idempotent */
  weft_transport_abort(t);  /* after close: still one connection_lost */
  ASSERT_EQ(weft_event_wait(&c.lost), 0);
  ASSERT_EQ(atomic_load(&c.lost_count), 1);
  ASSERT_EQ(weft_transport_write_eof(t), -EPIPE);
  ASSERT_EQ(weft_recv(sv[1], buf, 1, 0), 0);
  close(sv[1]);
  weft_transport_release(t);
  rec_free(&c);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(protocol_bad_input) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(bad_main, NULL, &c), 0);
  weft_protocol plain = {.data_received = nothing};
  weft_transport *t;
  ASSERT_EQ(weft_create_connection("127.0.0.1", 1, &plain, WEFT_NO_DEADLINE, &t), -EINVAL); /* outside a task */
}

/* ------------------------------------------------------------ debug mode */

static void sleepy_data(weft_transport *t, const void *d, size_t n, void *u) {
  (void)d, (void)n, (void)u;
  weft_sleep_ns(1000000); /* a misuse: callbacks must not suspend */
  weft_transport_close(t);
}

static int sleepy_factory(weft_protocol *out, void *arg) {
  (void)arg;
  *out = (weft_protocol){.data_received = sleepy_data};
  return 0;
}

static int debug_main(void *arg) {
  (void)arg;
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, sleepy_factory, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", (uint16_t)weft_addr_port(&a), WEFT_NO_DEADLINE, &st), 0);
  ASSERT_EQ(weft_stream_write(st, "x", 1), 0);
  char buf[4];
  ASSERT_EQ(weft_stream_read_all(st, buf, sizeof buf), 0); /* the server closed after the callback */
  weft_stream_wait_closed(st);
  weft_server_free(srv);
  return 0;
}

TEST(debug_mode_reports_a_callback_that_suspended) {
  setenv("WEFT_DEBUG", "1", 1); /* this forked test only */
  char path[] = "/tmp/weft-proto-dbg-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  fflush(stderr);
  int saved = dup(2);
  dup2(fd, 2);
  weft_config c = cfg_workers(2);
  int rc = weft_run(debug_main, NULL, &c);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  ASSERT_EQ(rc, 0);
  char text[8192] = {0};
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  close(fd);
  unlink(path);
  ASSERT_TRUE(n > 0);
  ASSERT_TRUE(strstr(text, "a protocol callback suspended") != NULL);
}


/* ------------------------------------------------------------ asyncio conformance (each failed before
 * net/transport.c was fixed) */

/* A write from another task fails (the peer reset the connection)
 * while reading is paused: asyncio's write() calls _fatal_error ->
 * connection_lost(exc). weft latched werr but did not wake the driver, so connection_lost never
 * came. */
static int paused_reset_main(void *arg) {
  (void)arg;
  static server_recs s;
  s.tmpl = (rec){.pause_in_made = true};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", port), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_TRUE(fd >= 0);
  rec *sr = server_rec(&s, 0);
  weft_sleep_ns(50000000);
  struct linger lg = {1, 0};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd); /* a reset, while the server's transport does not read */
  weft_sleep_ns(50000000);
  int rc = 0;
  for (int i = 0; i < 10 && rc == 0; i++) rc = weft_transport_write(sr->t, "hello", 5); /* from this task */
  ASSERT_TRUE(rc == -ECONNRESET || rc == -EPIPE);
  ASSERT_TRUE(weft_transport_is_closing(sr->t)); /* at once, as asyncio's _fatal_error */
  for (int k = 0; k < 5000 && !weft_event_is_set(&sr->lost); k++) weft_sleep_ns(1000000);
  if (!weft_event_is_set(&sr->lost))
    TEST_FAIL("write got %d, is_closing %d, but connection_lost was not called within 5 s", rc,
              (int)weft_transport_is_closing(sr->t));
  ASSERT_EQ(sr->lost_err, rc);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(a_write_error_while_reading_is_paused_ends_the_connection) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(paused_reset_main, NULL, &c), 0);
}

/* An echo server fed a flood by a peer that never reads: the header
 * promises pause_writing "after the callback during which the buffer went
 * above the high watermark" (asyncio: inside write()). */
typedef struct flood {
  _Atomic size_t max_unpaused; /* the largest buffer seen at a callback's entry, above high, with no pause yet */
  _Atomic int pauses, callbacks;
  size_t prev_exit;
  weft_event lost;
  weft_transport *t;
} flood;

static void fl_made(weft_transport *t, void *u) {
  flood *f = u;
  weft_transport_hold(t);
  f->t = t;
  int sz = 64 * 1024;
  int fd;
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &fd, sizeof fd), 0);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}
static void fl_data(weft_transport *t, const void *d, size_t n, void *u) {
  flood *f = u;
  size_t now = weft_transport_get_write_buffer_size(t);
  atomic_fetch_add(&f->callbacks, 1);
  if (f->prev_exit > 64 * 1024 && now > 64 * 1024 && atomic_load(&f->pauses) == 0 && now > atomic_load(&f->max_unpaused))
    atomic_store(&f->max_unpaused, now);
  ASSERT_EQ(weft_transport_write(t, d, n), 0);
  f->prev_exit = weft_transport_get_write_buffer_size(t);
}
static void fl_pause(weft_transport *t, void *u) {
  (void)t;
  atomic_fetch_add(&((flood *)u)->pauses, 1);
}
static void fl_lost(weft_transport *t, int err, void *u) {
  (void)t;
  (void)err;
  weft_event_set(&((flood *)u)->lost);
}
static flood the_flood;
static int flood_factory(weft_protocol *out, void *arg) {
  (void)arg;
  *out = (weft_protocol){.user = &the_flood, .connection_made = fl_made, .data_received = fl_data,
                         .pause_writing = fl_pause, .connection_lost = fl_lost};
  return 0;
}

static int flood_main(void *arg) {
  (void)arg;
  weft_event_init(&the_flood.lost);
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, flood_factory, NULL, NULL), 0);
  uint16_t port = port_of(srv);
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", port), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_TRUE(fd >= 0);
  int sz = 64 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  static char buf[64 * 1024];
  memset(buf, 'x', sizeof buf);
  size_t total = (size_t)16 << 20;
  int64_t t0 = weft_now_ns();
  for (size_t sent = 0; sent < total && weft_now_ns() - t0 < 5000000000LL;) { /* never reads */
    ssize_t n = weft_send(fd, buf, sizeof buf, 0);
    ASSERT_TRUE(n > 0);
    sent += (size_t)n;
  }
  weft_sleep_ns(100000000);
  size_t worst = atomic_load(&the_flood.max_unpaused);
  int pauses = atomic_load(&the_flood.pauses), cbs = atomic_load(&the_flood.callbacks);
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  ASSERT_EQ(weft_event_wait(&the_flood.lost), 0);
  weft_transport_release(the_flood.t);
  weft_server_free(srv);
  if (worst)
    TEST_FAIL("a data_received began with %zu bytes buffered (high 65536), above high since the previous "
              "callback, and pause_writing not called yet (%d callbacks, %d pauses by the end)",
              worst, cbs, pauses);
  return 0;
}

TEST(pause_writing_is_on_time_under_a_flood) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(flood_main, NULL, &c), 0);
}

/* A buffered protocol's get_buffer that closes the transport and returns
 * NULL (no room left) while the echo it wrote in buffer_updated is still
 * in flight as a ring send: the driver ends (connection_lost(-ENOBUFS)).
 * On io_uring it spun forever in teardown instead: close's kick was still
 * set, so teardown's wait for the cancelled send returned at once, again
 * and again, and the worker never reaped the completion. */
typedef struct nobuf {
  char buf[4096];
  bool full;
  int lost_err;
  _Atomic int lost_count;
  weft_event lost;
} nobuf;

static void *nb_get_buffer(weft_transport *t, size_t hint, size_t *len, void *u) {
  nobuf *nb = u;
  (void)hint;
  if (nb->full) {
    weft_transport_close(t);
    return NULL;
  }
  *len = sizeof nb->buf;
  return nb->buf;
}
static void nb_updated(weft_transport *t, size_t n, void *u) {
  nobuf *nb = u;
  ASSERT_EQ(weft_transport_write(t, nb->buf, n), 0); /* io_uring: a ring send, in flight when get_buffer runs */
  nb->full = true;
}
static void nb_lost(weft_transport *t, int err, void *u) {
  nobuf *nb = u;
  (void)t;
  nb->lost_err = err;
  atomic_fetch_add(&nb->lost_count, 1);
  weft_event_set(&nb->lost);
}
static nobuf the_nobuf;
static int nobuf_factory(weft_protocol *out, void *arg) {
  (void)arg;
  *out = (weft_protocol){.user = &the_nobuf, .get_buffer = nb_get_buffer, .buffer_updated = nb_updated,
                         .connection_lost = nb_lost};
  return 0;
}

static int nobuf_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_event_init(&the_nobuf.lost);
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, nobuf_factory, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", port_of(srv)), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_TRUE(fd >= 0);
  ASSERT_EQ(weft_send(fd, "hello", 5, 0), 5);
  weft_sleep_ns(50000000);
  (void)weft_send(fd, "again", 5, 0); /* epoll: the next receive asks get_buffer again */
  for (int k = 0; k < 5000 && !weft_event_is_set(&the_nobuf.lost); k++) weft_sleep_ns(1000000);
  if (!weft_event_is_set(&the_nobuf.lost)) TEST_FAIL("connection_lost was not called within 5 s");
  ASSERT_EQ(the_nobuf.lost_err, -ENOBUFS);
  ASSERT_EQ(atomic_load(&the_nobuf.lost_count), 1);
  char got[8];
  ASSERT_EQ(weft_recv(fd, got, sizeof got, 0), 5); /* the echo went out before the close */
  ASSERT_TRUE(memcmp(got, "hello", 5) == 0);
  close(fd);
  weft_server_free(srv);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

/* (a 20 s limit: the spinning driver held the worker, the 5 s check above could not run) */
TEST_T(get_buffer_closing_with_a_send_in_flight_ends_the_connection, 20) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(nobuf_main, NULL, &c), 0);
}

/* set_write_buffer_limits(high=None, low=L): asyncio makes high 4 * L
 * (transports.py, _FlowControlMixin._set_write_buffer_limits); weft made
 * it 64 KiB, so that a low above 64 KiB was refused (-EINVAL) and a low
 * under it kept high at 64 KiB. */
static int limits_main(void *arg) {
  (void)arg;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  rec c;
  rec_init(&c);
  weft_protocol p = proto_of(&c);
  weft_transport *t;
  ASSERT_EQ(weft_connect_accepted_socket(sv[0], &p, &t), 0);
  size_t high = 0, low = 0;
  ASSERT_EQ(weft_transport_set_write_buffer_limits(t, WEFT_TRANSPORT_DEFAULT, 100000), 0);
  weft_transport_get_write_buffer_limits(t, &high, &low);
  ASSERT_UEQ(high, 400000);
  ASSERT_UEQ(low, 100000);
  ASSERT_EQ(weft_transport_set_write_buffer_limits(t, WEFT_TRANSPORT_DEFAULT, 1000), 0);
  weft_transport_get_write_buffer_limits(t, &high, &low);
  ASSERT_UEQ(high, 4000);
  ASSERT_UEQ(low, 1000);
  ASSERT_EQ(weft_transport_set_write_buffer_limits(t, 1000, WEFT_TRANSPORT_DEFAULT), 0); /* low: high / 4 */
  weft_transport_get_write_buffer_limits(t, &high, &low);
  ASSERT_UEQ(high, 1000);
  ASSERT_UEQ(low, 250);
  weft_transport_close(t);
  ASSERT_EQ(weft_event_wait(&c.lost), 0);
  close(sv[1]);
  weft_transport_release(t);
  rec_free(&c);
  return 0;
}

TEST(write_buffer_limits_default_high_is_four_times_low) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(limits_main, NULL, &c), 0);
}

/* get_extra_info "peername"/"sockname" after the end: asyncio caches them
 * when the transport is made (_SelectorTransport.__init__), so they stay
 * readable after close and in connection_lost; weft asked the (closed)
 * descriptor and answered -EBADF. "socket" is -EBADF then (the number may
 * be reused). TCP both ends, then Unix. */
static void assert_same_addr(const weft_addr *a, const weft_addr *b) {
  ASSERT_UEQ(a->len, b->len);
  ASSERT_TRUE(a->len > 0 && memcmp(&a->u, &b->u, a->len) == 0);
}

static void names_of(weft_transport *t, weft_addr *peer, weft_addr *local) {
  ASSERT_EQ(weft_transport_get_extra_info(t, "peername", peer, sizeof *peer), 0);
  ASSERT_EQ(weft_transport_get_extra_info(t, "sockname", local, sizeof *local), 0);
}

static void assert_names_kept(weft_transport *t, const weft_addr *peer, const weft_addr *local) {
  weft_addr p2, l2;
  memset(&p2, 0xa5, sizeof p2);
  memset(&l2, 0xa5, sizeof l2);
  names_of(t, &p2, &l2);
  assert_same_addr(&p2, peer);
  assert_same_addr(&l2, local);
  int fd;
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &fd, sizeof fd), -EBADF);
}

static int names_main(void *arg) {
  bool unix_sock = arg != NULL;
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-proto-names-%d.sock", (int)getpid());
  static server_recs s;
  s.tmpl = (rec){0};
  weft_server *srv;
  rec c;
  rec_init(&c);
  weft_protocol p = proto_of(&c);
  weft_transport *t;
  if (unix_sock) {
    unlink(path);
    atomic_store(&s.n, 0);
    for (int i = 0; i < MAX_CONNS; i++) atomic_store(&s.set_up[i], 0);
    ASSERT_EQ(weft_create_unix_server(&srv, path, factory, &s, NULL), 0);
    ASSERT_EQ(weft_create_unix_connection(path, &p, WEFT_NO_DEADLINE, &t), 0);
  } else {
    uint16_t port = start(&srv, &s);
    ASSERT_EQ(weft_create_connection("127.0.0.1", port, &p, WEFT_NO_DEADLINE, &t), 0);
  }
  rec *sr = server_rec(&s, 0);
  weft_addr cpeer, clocal, speer, slocal;
  names_of(t, &cpeer, &clocal);
  names_of(sr->t, &speer, &slocal);
  if (!unix_sock) { /* each end's peer is the other's own address */
    assert_same_addr(&cpeer, &slocal);
    assert_same_addr(&speer, &clocal);
  }
  weft_transport_close(t); /* the server sees the end: eof_received false, it closes too */
  ASSERT_EQ(weft_event_wait(&c.lost), 0);
  ASSERT_EQ(weft_event_wait(&sr->lost), 0);
  assert_names_kept(t, &cpeer, &clocal);
  assert_names_kept(sr->t, &speer, &slocal);
  weft_transport_release(t);
  rec_free(&c);
  rec_free(sr);
  weft_server_free(srv);
  if (unix_sock) unlink(path);
  return 0;
}

TEST(peername_and_sockname_outlive_the_connection) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(names_main, NULL, &c), 0);
  ASSERT_EQ(weft_run(names_main, "unix", &c), 0);
}

/* A write from a callback that the kernel takes at once is not buffered
 * (asyncio's write() sends first and buffers only the rest), so it must not
 * call pause_writing. On io_uring the driver's own write goes out as a
 * ring send with the worker's next batch; its bytes counted against the
 * high watermark until that send completed, so a 256 KiB write into an
 * empty 2 MiB socket buffer called pause_writing and resume_writing. */
typedef struct bigw {
  _Atomic int pauses, resumes;
  size_t size;
  weft_transport *t;
  weft_event made, lost;
} bigw;

static void bw_made(weft_transport *t, void *u) {
  bigw *b = u;
  weft_transport_hold(t);
  b->t = t;
  int fd, sz = 1 << 20; /* the kernel doubles it: 2 MiB, room for all of it */
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &fd, sizeof fd), 0);
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz), 0);
  unsigned char *buf = malloc(b->size);
  for (size_t i = 0; i < b->size; i++) buf[i] = pattern(i);
  ASSERT_EQ(weft_transport_write(t, buf, b->size), 0);
  free(buf);
  weft_event_set(&b->made);
}
static void bw_pause(weft_transport *t, void *u) {
  (void)t;
  atomic_fetch_add(&((bigw *)u)->pauses, 1);
}
static void bw_resume(weft_transport *t, void *u) {
  (void)t;
  atomic_fetch_add(&((bigw *)u)->resumes, 1);
}
static void bw_lost(weft_transport *t, int err, void *u) {
  (void)t;
  (void)err;
  weft_event_set(&((bigw *)u)->lost);
}
static bigw the_bigw;
static int bigw_factory(weft_protocol *out, void *arg) {
  (void)arg;
  *out = (weft_protocol){.user = &the_bigw, .connection_made = bw_made, .pause_writing = bw_pause,
                         .resume_writing = bw_resume, .connection_lost = bw_lost};
  return 0;
}

static int bigw_main(void *arg) {
  (void)arg;
  bigw *b = &the_bigw;
  memset(b, 0, sizeof *b);
  b->size = 256 * 1024; /* 4 x high */
  weft_event_init(&b->made);
  weft_event_init(&b->lost);
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, bigw_factory, NULL, NULL), 0);
  weft_stream *st;
  ASSERT_EQ(weft_open_connection("127.0.0.1", port_of(srv), WEFT_NO_DEADLINE, &st), 0);
  ASSERT_EQ(weft_event_wait(&b->made), 0);
  unsigned char *buf = malloc(b->size);
  ASSERT_EQ(weft_stream_readexactly(st, buf, b->size, NULL), (ssize_t)b->size);
  for (size_t i = 0; i < b->size; i++)
    if (buf[i] != pattern(i)) TEST_FAIL("byte %zu differs", i);
  free(buf);
  for (int k = 0; k < 2000 && weft_transport_get_write_buffer_size(b->t) > 0; k++) weft_sleep_ns(1000000);
  ASSERT_UEQ(weft_transport_get_write_buffer_size(b->t), 0);
  int pauses = atomic_load(&b->pauses), resumes = atomic_load(&b->resumes);
  weft_transport_close(b->t);
  ASSERT_EQ(weft_event_wait(&b->lost), 0);
  weft_transport_release(b->t);
  weft_stream_wait_closed(st);
  weft_server_free(srv);
  if (pauses || resumes)
    TEST_FAIL("a 256 KiB write from connection_made into an empty 2 MiB socket buffer called pause_writing %d "
              "and resume_writing %d time(s); the kernel took it at once", pauses, resumes);
  return 0;
}

TEST(a_callback_write_the_kernel_takes_at_once_does_not_pause_writing) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(bigw_main, NULL, &c), 0);
}

/* A peer that never reads, while the transport is closing with megabytes
 * buffered: (a) the peer resets: connection_lost(the send's error) once,
 * the buffer dropped; (b) abort() after close(): the flush that can never
 * end is dropped, connection_lost(0) at once (asyncio's abort after close). */
static int stuck_close_main(void *arg) {
  bool peer_resets = arg != NULL;
  size_t blob = (size_t)8 << 20;
  static server_recs s;
  s.tmpl = (rec){.blob = blob, .high = 256 * 1024, .low = 64 * 1024};
  weft_server *srv;
  uint16_t port = start(&srv, &s);
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", port), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_TRUE(fd >= 0);
  rec *sr = server_rec(&s, 0);
  weft_sleep_ns(100000000);
  ASSERT_EQ(atomic_load(&sr->pauses), 1);
  weft_transport_close(sr->t); /* waits for a flush the peer never takes */
  weft_sleep_ns(50000000);
  ASSERT_TRUE(!weft_event_is_set(&sr->lost));
  ASSERT_TRUE(weft_transport_get_write_buffer_size(sr->t) > 256 * 1024);
  ASSERT_EQ(weft_transport_write(sr->t, "x", 1), -EPIPE); /* nothing queued after close */
  int64_t t0 = weft_now_ns();
  if (peer_resets) {
    struct linger lg = {1, 0};
    ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd);
    fd = -1;
  } else {
    weft_transport_abort(sr->t);
  }
  for (int k = 0; k < 5000 && !weft_event_is_set(&sr->lost); k++) weft_sleep_ns(1000000);
  if (!weft_event_is_set(&sr->lost)) TEST_FAIL("connection_lost was not called within 5 s");
  ASSERT_TRUE(weft_now_ns() - t0 < 2000000000LL);
  if (peer_resets)
    ASSERT_TRUE(sr->lost_err == -ECONNRESET || sr->lost_err == -EPIPE);
  else
    ASSERT_EQ(sr->lost_err, 0);
  weft_sleep_ns(20000000);
  ASSERT_EQ(atomic_load(&sr->lost_count), 1);
  assert_trace(sr, "MPL");
  ASSERT_UEQ(weft_transport_get_write_buffer_size(sr->t), 0);
  ASSERT_TRUE(weft_transport_is_closing(sr->t));
  ASSERT_TRUE(weft_transport_write(sr->t, "x", 1) < 0);
  if (fd >= 0) close(fd);
  rec_free(sr);
  weft_server_free(srv);
  return 0;
}

TEST(a_peer_that_never_reads_resets_during_the_closing_flush) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(stuck_close_main, "reset", &c), 0);
}

TEST(abort_after_close_drops_a_flush_that_cannot_end) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(stuck_close_main, NULL, &c), 0);
}

/* A callback's large write into a socket with no room at all: the kernel
 * takes nothing, so pause_writing is due, and reading goes on. On io_uring
 * a ring send to a full socket waits in the kernel for room (a peer that
 * never reads: forever) unless it is MSG_DONTWAIT; the watermarks wait for
 * the send's outcome before counting its bytes (the test above), so a send
 * left waiting there would hold back pause_writing and every
 * data_received. (A Unix socket pair; the test fills the transport's
 * socket behind its back first.) */
typedef struct fullw {
  _Atomic int pauses, datas;
  _Atomic size_t got;
  weft_event lost;
} fullw;

static void fw_data(weft_transport *t, const void *d, size_t n, void *u) {
  fullw *f = u;
  (void)d;
  if (atomic_fetch_add(&f->datas, 1) == 0) { /* the first: a write the kernel cannot take */
    static char big[256 * 1024];
    ASSERT_EQ(weft_transport_write(t, big, sizeof big), 0);
  }
  atomic_fetch_add(&f->got, n);
}
static void fw_pause(weft_transport *t, void *u) {
  (void)t;
  atomic_fetch_add(&((fullw *)u)->pauses, 1);
}
static void fw_lost(weft_transport *t, int err, void *u) {
  (void)t;
  (void)err;
  weft_event_set(&((fullw *)u)->lost);
}

static int fullw_main(void *arg) {
  (void)arg;
  static fullw f;
  memset(&f, 0, sizeof f);
  weft_event_init(&f.lost);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  weft_protocol p = {.user = &f, .data_received = fw_data, .pause_writing = fw_pause, .connection_lost = fw_lost};
  weft_transport *t;
  ASSERT_EQ(weft_connect_accepted_socket(sv[0], &p, &t), 0);
  int fd;
  ASSERT_EQ(weft_transport_get_extra_info(t, "socket", &fd, sizeof fd), 0);
  static char fill[65536];
  while (send(fd, fill, sizeof fill, MSG_DONTWAIT) > 0) {} /* no room left */
  while (send(fd, fill, 1, MSG_DONTWAIT) > 0) {}
  ASSERT_EQ(send(sv[1], "go", 2, 0), 2);
  for (int k = 0; k < 2000 && atomic_load(&f.datas) == 0; k++) weft_sleep_ns(1000000);
  ASSERT_EQ(atomic_load(&f.datas), 1);
  weft_sleep_ns(20000000);
  ASSERT_EQ(send(sv[1], "more", 4, 0), 4);
  for (int k = 0; k < 2000 && (atomic_load(&f.got) < 6 || !atomic_load(&f.pauses)); k++) weft_sleep_ns(1000000);
  int pauses = atomic_load(&f.pauses);
  size_t got = atomic_load(&f.got);
  weft_transport_abort(t);
  ASSERT_EQ(weft_event_wait(&f.lost), 0);
  weft_transport_release(t);
  close(sv[1]);
  if (pauses != 1 || got != 6)
    TEST_FAIL("after a 256 KiB write from data_received into a full socket: pause_writing %d time(s) (want 1), "
              "%zu of 6 bytes delivered", pauses, got);
  return 0;
}

TEST(a_callback_write_into_a_full_socket_pauses_writing_and_reading_goes_on) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(fullw_main, NULL, &c), 0);
}

/* close() or abort() inside the first data_received while the peer's
 * bytes keep coming (256 KiB, more than one receive): no data_received
 * after it (asyncio's close/abort remove the reader at once), writes and
 * write_eof refused, connection_lost(0) once and last. */
typedef struct endin {
  bool do_abort;
  _Atomic int datas, lost_count;
  int lost_err, after;
  weft_event lost;
} endin;

static void ei_data(weft_transport *t, const void *d, size_t n, void *u) {
  endin *e = u;
  (void)d;
  (void)n;
  if (atomic_fetch_add(&e->datas, 1) > 0) return;
  if (e->do_abort)
    weft_transport_abort(t);
  else
    weft_transport_close(t);
  ASSERT_TRUE(weft_transport_is_closing(t));
  ASSERT_TRUE(!weft_transport_is_reading(t));
  ASSERT_EQ(weft_transport_write(t, "x", 1), -EPIPE);
  ASSERT_EQ(weft_transport_write_eof(t), -EPIPE);
  ASSERT_UEQ(weft_transport_get_write_buffer_size(t), 0); /* nothing was queued */
}
static void ei_lost(weft_transport *t, int err, void *u) {
  endin *e = u;
  (void)t;
  e->lost_err = err;
  e->after = atomic_load(&e->datas);
  atomic_fetch_add(&e->lost_count, 1);
  weft_event_set(&e->lost);
}
static endin the_endin;
static int endin_factory(weft_protocol *out, void *arg) {
  (void)arg;
  *out = (weft_protocol){.user = &the_endin, .data_received = ei_data, .connection_lost = ei_lost};
  return 0;
}

static int endin_main(void *arg) {
  endin *e = &the_endin;
  memset(e, 0, sizeof *e);
  e->do_abort = arg != NULL;
  weft_event_init(&e->lost);
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, endin_factory, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_addr_ip(&a, "127.0.0.1", port_of(srv)), 0);
  int fd = weft_connect_addr(&a, WEFT_NO_DEADLINE);
  ASSERT_TRUE(fd >= 0);
  static char buf[256 * 1024];
  ssize_t n = weft_send(fd, buf, sizeof buf, 0);
  ASSERT_TRUE(n > 0 || n == -ECONNRESET || n == -EPIPE);
  ASSERT_EQ(weft_event_wait(&e->lost), 0);
  weft_sleep_ns(50000000);
  ASSERT_EQ(atomic_load(&e->datas), 1);
  ASSERT_EQ(e->after, 1);
  ASSERT_EQ(e->lost_err, 0);
  ASSERT_EQ(atomic_load(&e->lost_count), 1);
  close(fd);
  weft_server_free(srv);
  return 0;
}

TEST(no_data_received_after_close_or_abort_inside_data_received) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(endin_main, NULL, &c), 0);
  ASSERT_EQ(weft_run(endin_main, "abort", &c), 0);
}

TEST_MAIN()
