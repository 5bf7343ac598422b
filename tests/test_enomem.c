/* tests/test_enomem.c: an allocation-failure sweep over the public API.
 * For n = 0, 1, 2, ... the n-th allocation from now fails
 * (weft__fault_alloc_after); each call must then fail cleanly (-ENOMEM or
 * its documented errno) or succeed, lose nothing, leak nothing (the
 * harness's LeakSanitizer check under ASan, count_fds), and a retry
 * afterwards must succeed. */
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <weft/weft.h>

#include "test.h"
#include "test_util.h"
#include "net_test_util.h"

#ifdef WEFT_TEST_HOOKS
void weft__fault_alloc_after(long n);
#define HOOKS() ((void)0)
#else
static void weft__fault_alloc_after(long n) { (void)n; }
#define HOOKS() TEST_SKIP("needs -DWEFT_TEST_HOOKS")
#endif


#define MS (1000000LL)
#define SWEEP 24

static void fault(long n) { weft__fault_alloc_after(n); }
static void nofault(void) { weft__fault_alloc_after(-1); }

static int run1(weft_fn fn) {
  weft_config c = cfg_workers(1);
  return weft_run(fn, NULL, &c);
}

/* ------------------------------------------------------------ callbacks */

static _Atomic int cb_ran;
static void cb_count(void *arg) {
  (void)arg;
  atomic_fetch_add(&cb_ran, 1);
}

static int callbacks_main(void *arg) {
  (void)arg;
  for (long n = 0; n < SWEEP; n++) {
    atomic_store(&cb_ran, 0);
    weft_callback *h = NULL;
    fault(n);
    int rc = weft_call_later(1 * MS, cb_count, NULL, &h);
    nofault();
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("call_later n=%ld: %d", n, rc);
    weft_sleep_ns(5 * MS);
    ASSERT_EQ(atomic_load(&cb_ran), rc == 0 ? 1 : 0);
    if (h) weft_callback_release(h);
  }
  return 0;
}

TEST_T(callbacks_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(callbacks_main), 0);
}

static int noop_main(void *arg) {
  (void)arg;
  return 0;
}

TEST_T(runtime_call_soon_enomem, 60) {
  HOOKS();
  weft_runtime *rt;
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  ASSERT_EQ(weft_runtime_call(rt, noop_main, NULL), 0);
  for (long n = 0; n < SWEEP; n++) {
    atomic_store(&cb_ran, 0);
    weft_callback *h = NULL;
    fault(n);
    int rc = weft_runtime_call_soon(rt, cb_count, NULL, &h);
    nofault();
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("runtime_call_soon n=%ld: %d", n, rc);
    for (int i = 0; i < 500 && rc == 0 && atomic_load(&cb_ran) == 0; i++) usleep(1000);
    usleep(2000);
    /* rc == 0 and not run: allowed only if the submission had no memory
     * (a dropped callback: cancel says so) */
    bool dropped = false;
    if (rc == 0 && atomic_load(&cb_ran) == 0) {
      ASSERT_TRUE(h != NULL);
      int cr = weft_callback_cancel(h); /* 1: it will never run (dropped: weft/task.h) */
      if (cr != 1) TEST_FAIL("runtime_call_soon n=%ld returned 0 but the callback never ran (cancel: %d)", n, cr);
      dropped = true;
    }
    ASSERT_EQ(atomic_load(&cb_ran), rc == 0 && !dropped ? 1 : 0);
    if (h) weft_callback_release(h);
  }
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
}

/* ------------------------------------------------------------ taskvar */

static int taskvar_main(void *arg) {
  (void)arg;
  weft_taskvar v[12];
  for (int i = 0; i < 12; i++) weft_taskvar_init(&v[i], NULL);
  for (long n = 0; n < SWEEP; n++) {
    weft_task t = weft_spawn(noop_main, NULL); /* (a fresh task for each n: its own ext) */
    ASSERT_TRUE(!weft_task_is_null(t));
    weft_join(t);
    weft_task_release(t);
    int set = 0;
    fault(n);
    int rc = 0;
    for (int i = 0; i < 12 && rc == 0; i++) {
      rc = weft_taskvar_set(&v[i], (void *)(intptr_t)(i + 1 + 100 * n), NULL);
      if (rc == 0) set++;
    }
    nofault();
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("taskvar_set: %d", rc);
    for (int i = 0; i < set; i++) ASSERT_EQ((intptr_t)weft_taskvar_get(&v[i]), i + 1 + 100 * n);
    for (int i = set; i < 12; i++) ASSERT_EQ(weft_taskvar_set(&v[i], (void *)(intptr_t)(i + 1 + 100 * n), NULL), 0);
    for (int i = 0; i < 12; i++) ASSERT_EQ((intptr_t)weft_taskvar_get(&v[i]), i + 1 + 100 * n);
  }
  return 0;
}

TEST_T(taskvar_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(taskvar_main), 0);
}

/* ------------------------------------------------------------ combinators */

static int sleep_then(void *arg) {
  int rc = weft_sleep_ns(2 * MS);
  return rc < 0 ? rc : (int)(intptr_t)arg;
}

static int combinators_main(void *arg) {
  (void)arg;
  for (int which = 0; which < 6; which++) {
    for (long n = 0; n < SWEEP; n++) {
      weft_task ts[3];
      weft_awaitable aws[3];
      for (int i = 0; i < 3; i++) {
        ts[i] = weft_spawn(sleep_then, (void *)(intptr_t)(i + 1));
        ASSERT_TRUE(!weft_task_is_null(ts[i]));
        aws[i] = weft_aw_task(ts[i]);
      }
      int st[3];
      bool done[3];
      weft_as_completed it;
      fault(n);
      int rc;
      switch (which) {
      case 0: rc = weft_gather(aws, 3, st, NULL, 0); break;
      case 1: rc = weft_wait(aws, 3, WEFT_ALL_COMPLETED, 10000 * MS, done); break;
      case 2:
        rc = weft_as_completed_init(&it, aws, 3, 10000 * MS);
        if (rc == 0) {
          nofault();
          for (int k = 0; k < 3; k++) ASSERT_TRUE(weft_as_completed_next(&it) >= 0);
          weft_as_completed_destroy(&it);
        }
        break;
      case 3: rc = weft_wait_for(aws[0], 10000 * MS, NULL); break;
      case 4: rc = weft_shield(aws[0], NULL); break;
      default: rc = weft_await(aws[0], NULL); break;
      }
      nofault();
      if (rc < 0 && rc != -ENOMEM) TEST_FAIL("combinator %d n=%ld: %d", which, n, rc);
      for (int i = 0; i < 3; i++) {
        ASSERT_EQ(weft_join(ts[i]), i + 1);
        weft_task_release(ts[i]);
      }
    }
  }
  return 0;
}

TEST_T(combinators_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(combinators_main), 0);
}

/* ------------------------------------------------------------ task groups */

static _Atomic int tg_ran;
static int tg_child(void *arg) {
  (void)arg;
  weft_sleep_ns(1 * MS);
  atomic_fetch_add(&tg_ran, 1);
  return 0;
}

static int taskgroup_main(void *arg) {
  (void)arg;
  for (long n = 0; n < 3 * SWEEP; n++) {
    weft_taskgroup g;
    ASSERT_EQ(weft_taskgroup_enter(&g), 0);
    atomic_store(&tg_ran, 0);
    int ok = 0, failed = 0;
    fault(n);
    for (int i = 0; i < 40; i++) {
      weft_task t = weft_taskgroup_spawn(&g, tg_child, NULL);
      if (weft_task_is_null(t)) {
        if (errno != ENOMEM) TEST_FAIL("taskgroup_spawn n=%ld: errno %d", n, errno);
        failed++;
      } else {
        ok++;
      }
    }
    nofault();
    int rc = weft_taskgroup_leave(&g, 0);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(atomic_load(&tg_ran), ok);
    ASSERT_TRUE(failed <= 1 || n < 40);
  }
  return 0;
}

TEST_T(taskgroup_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(taskgroup_main), 0);
}

/* ------------------------------------------------------------ queue */

static int cmp_int(const void *a, const void *b) {
  intptr_t x = (intptr_t)a, y = (intptr_t)b;
  return x < y ? -1 : x > y;
}

static int queue_main(void *arg) {
  (void)arg;
  for (int kind = 0; kind < 3; kind++) {
    for (long n = 0; n < 6; n++) {
      weft_queue q;
      int rc = kind == 0 ? weft_queue_init(&q, 0) : kind == 1 ? weft_queue_init_lifo(&q, 0)
                                                           : weft_queue_init_priority(&q, 0, cmp_int);
      ASSERT_EQ(rc, 0);
      int put = 0, refused = 0;
      fault(n);
      for (int i = 1; i <= 2000; i++) {
        rc = (i & 1) ? weft_queue_put_nowait(&q, (void *)(intptr_t)i) : weft_queue_put(&q, (void *)(intptr_t)i);
        if (rc == 0)
          put++;
        else if (rc == -ENOMEM)
          refused++;
        else
          TEST_FAIL("put: %d", rc);
      }
      nofault();
      ASSERT_TRUE(refused <= 1);
      ASSERT_EQ(weft_queue_qsize(&q), put);
      void *it;
      int got = 0;
      while (weft_queue_get_nowait(&q, &it) == 0) got++;
      ASSERT_EQ(got, put);
      weft_queue_destroy(&q);
    }
  }
  return 0;
}

TEST_T(queue_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(queue_main), 0);
}

/* ------------------------------------------------------------ to_thread */

static int thr_fn(void *arg) {
  atomic_fetch_add((_Atomic int *)arg, 1);
  return 5;
}

static int to_thread_main(void *arg) {
  (void)arg;
  for (long n = 0; n < SWEEP; n++) {
    for (unsigned fl = 0; fl < 2; fl++) {
      _Atomic int ran = 0;
      fault(n);
      int rc = weft_to_thread_ex(thr_fn, &ran, fl);
      nofault();
      if (rc != 5 && rc != -ENOMEM && rc != -EAGAIN) TEST_FAIL("to_thread n=%ld fl=%u: %d", n, fl, rc);
      ASSERT_EQ(atomic_load(&ran), rc == 5 ? 1 : 0);
      ASSERT_EQ(weft_to_thread_ex(thr_fn, &ran, fl), 5);
    }
  }
  return 0;
}

TEST_T(to_thread_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(to_thread_main), 0);
}

/* ------------------------------------------------------------ files */

static int files_main(void *arg) {
  (void)arg;
  char path[64];
  snprintf(path, sizeof path, "/tmp/weft-rev-enomem-%d", (int)getpid());
  ASSERT_EQ(weft_write_file(path, "hello", 5, 0600), 0);
  int fds = count_fds();
  for (long n = 0; n < SWEEP; n++) {
    char buf[16];
    fault(n);
    ssize_t r = weft_read_file(path, buf, sizeof buf);
    nofault();
    if (r != 5 && r != -ENOMEM) TEST_FAIL("read_file n=%ld: %zd", n, r);
    fault(n);
    int fd = weft_open(path, O_RDONLY, 0);
    nofault();
    if (fd < 0 && fd != -ENOMEM) TEST_FAIL("open n=%ld: %d", n, fd);
    if (fd >= 0) {
      fault(n);
      ssize_t k = weft_pread(fd, buf, sizeof buf, 0);
      nofault();
      if (k != 5 && k != -ENOMEM) TEST_FAIL("pread n=%ld: %zd", n, k);
      ASSERT_EQ(weft_close(fd), 0);
    }
    ASSERT_EQ(count_fds(), fds);
  }
  unlink(path);
  return 0;
}

TEST_T(files_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(files_main), 0);
}

/* ------------------------------------------------------------ servers */

static int echo_conn(weft_stream *s, void *arg) {
  (void)arg;
  char line[256];
  for (;;) {
    ssize_t r = weft_stream_readline(s, line, sizeof line);
    if (r <= 0) return 0;
    if (weft_stream_write(s, line, (size_t)r) < 0) return 0;
    if (weft_stream_drain(s) < 0) return 0;
  }
}

/* One request on a fresh stream: 1 when echoed, 0 when the connection
 * failed (reset, EOF), never a hang. */
static int one_echo(uint16_t port, bool fault_client, long n) {
  weft_stream *s = NULL;
  if (fault_client) fault(n);
  int rc = weft_open_connection("127.0.0.1", port, weft_now_ns() + 5000 * MS, &s);
  if (fault_client) nofault();
  if (rc < 0) {
    if (rc != -ENOMEM) TEST_FAIL("open_connection n=%ld: %d", n, rc);
    return 0;
  }
  weft_stream_set_timeout(s, 5000 * MS);
  int ok = 0;
  if (fault_client) fault(n);
  rc = weft_stream_write(s, "ping\n", 5);
  if (rc == 0) rc = weft_stream_drain(s);
  char buf[16];
  ssize_t r = rc == 0 ? weft_stream_readline(s, buf, sizeof buf) : rc;
  if (fault_client) nofault();
  if (r == 5) ok = 1;
  else if (r == -ETIMEDOUT) TEST_FAIL("echo n=%ld: the server hung", n);
  weft_stream_close(s);
  weft_stream_wait_closed(s);
  return ok;
}

static int server_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  weft_server *srv;
  ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, echo_conn, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  uint16_t port = (uint16_t)weft_addr_port(&a);
  ASSERT_EQ(one_echo(port, false, 0), 1);
  for (long n = 0; n < SWEEP; n++) {
    /* the server side's allocations fail (the client allocates through the
     * hook too: its stream) */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fault(n);
    ASSERT_EQ(weft_connect(fd, &a, weft_now_ns() + 5000 * MS), 0);
    ssize_t w = weft_send(fd, "ping\n", 5, MSG_NOSIGNAL);
    char buf[16];
    ssize_t r = w == 5 ? weft_recv_until(fd, buf, sizeof buf, 0, weft_now_ns() + 3000 * MS) : w;
    nofault();
    if (r == -ETIMEDOUT) TEST_FAIL("server n=%ld: no answer, no close", n);
    close(fd);
    ASSERT_EQ(one_echo(port, false, n), 1); /* still serving */
    (void)one_echo(port, true, n);
    ASSERT_EQ(one_echo(port, false, n), 1);
  }
  ASSERT_EQ(weft_server_close(srv), 0);
  ASSERT_EQ(weft_server_wait_closed(srv), 0);
  weft_server_free(srv);
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST_T(server_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(server_main), 0);
}

/* start_server itself under the fault */
static int server_start_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  for (long n = 0; n < SWEEP; n++) {
    weft_server *srv = NULL;
    fault(n);
    int rc = weft_start_server(&srv, "127.0.0.1", 0, echo_conn, NULL, NULL);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("start_server n=%ld: %d", n, rc);
      ASSERT_EQ(count_fds(), fds);
      continue;
    }
    weft_addr a;
    ASSERT_EQ(weft_server_addr(srv, &a), 0);
    ASSERT_EQ(one_echo((uint16_t)weft_addr_port(&a), false, n), 1);
    ASSERT_EQ(weft_server_close(srv), 0);
    ASSERT_EQ(weft_server_wait_closed(srv), 0);
    weft_server_free(srv);
    ASSERT_EQ(count_fds(), fds);
  }
  return 0;
}

TEST_T(server_start_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(server_start_main), 0);
}

/* ------------------------------------------------------------ streams */

static int stream_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  for (long n = 0; n < SWEEP; n++) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    weft_stream *a, *b;
    fault(n);
    int rc = weft_stream_from_fd(sv[0], &a);
    nofault();
    if (rc) {
      ASSERT_EQ(rc, -ENOMEM);
      close(sv[1]);
      ASSERT_EQ(count_fds(), fds);
      continue;
    }
    ASSERT_EQ(weft_stream_from_fd(sv[1], &b), 0);
    weft_stream_set_timeout(a, 2000 * MS);
    weft_stream_set_timeout(b, 2000 * MS);
    /* a long line: the reader's buffer grows; a big write: the writer's */
    static char big[200000];
    memset(big, 'x', sizeof big);
    big[sizeof big - 1] = '\n';
    weft_stream_set_limit(b, sizeof big * 2);
    fault(n);
    rc = weft_stream_write(a, big, sizeof big);
    nofault();
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("write n=%ld: %d", n, rc);
    if (rc == -ENOMEM) ASSERT_EQ(weft_stream_write(a, big, sizeof big), 0); /* nothing was buffered: again */
    static char in[200000];
    /* the reader, faulted, while a task drains the writer */
    weft_task d = weft_spawn((weft_fn)(void *)weft_stream_drain, a);
    fault(n);
    ssize_t r = weft_stream_readline(b, in, sizeof in);
    nofault();
    if (r != (ssize_t)sizeof big && r != -ENOMEM) TEST_FAIL("readline n=%ld: %zd", n, r);
    if (r == -ENOMEM) {
      /* nothing lost: the whole line still comes */
      r = weft_stream_readline(b, in, sizeof in);
      ASSERT_EQ(r, (ssize_t)sizeof big);
    }
    ASSERT_EQ(weft_join(d), 0);
    weft_task_release(d);
    weft_stream_close(a);
    weft_stream_wait_closed(a);
    weft_stream_close(b);
    weft_stream_wait_closed(b);
    ASSERT_EQ(count_fds(), fds);
  }
  return 0;
}

TEST_T(stream_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(stream_main), 0);
}

/* read_all: bytes it took (from the buffer and from the socket, more than
 * the read buffer holds) must not be lost unseen when the read then fails
 * (its time limit) and the buffer cannot grow to hold them again: the next
 * read returns them, or fails with -ENOMEM (the bytes were dropped before:
 * the next read returned later bytes, a gap). */
static int read_all_main(void *arg) {
  (void)arg;
  enum { BIG = 40000 }; /* > the stream's first read buffer (16 KiB) */
  static char data[BIG], buf[4 * BIG], got[BIG];
  for (int i = 0; i < BIG; i++) data[i] = (char)('a' + i % 26);
  for (long n = 0; n < 6; n++) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    int sz = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    weft_stream *b;
    ASSERT_EQ(weft_stream_from_fd(sv[1], &b), 0);
    char one;
    weft_stream_set_timeout(b, 1 * MS);
    ASSERT_EQ(weft_stream_read(b, &one, 1), -ETIMEDOUT); /* epoll: the descriptor's registration allocates now */
    ASSERT_EQ(write(sv[0], data, BIG), BIG); /* no EOF: read_all ends with its time limit */
    weft_stream_set_timeout(b, 50 * MS);
    fault(n);
    ssize_t r = weft_stream_read_all(b, buf, sizeof buf);
    nofault();
    if (r != -ETIMEDOUT && r != -ENOMEM) TEST_FAIL("read_all n=%ld: %zd", n, r);
    /* every byte is still readable, or, when they could not be put back,
     * the stream fails at once: never a silent gap */
    size_t k = 0;
    ssize_t x = 0;
    while (k < BIG) {
      x = weft_stream_read(b, got + k, BIG - k);
      if (x <= 0) break;
      k += (size_t)x;
    }
    bool whole = k == BIG && memcmp(got, data, BIG) == 0, failed = k == 0 && x == -ENOMEM;
    if (!whole && !failed)
      TEST_FAIL("read_all n=%ld returned %zd and lost its bytes: %zu of %d readable afterwards", n, r, k, BIG);
    close(sv[0]);
    weft_stream_close(b);
    weft_stream_wait_closed(b);
  }
  return 0;
}

TEST_T(stream_read_all_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(read_all_main), 0);
}

/* ------------------------------------------------------------ transports */

static _Atomic int tp_made, tp_lost;
static void tp_made_cb(weft_transport *t, void *u) {
  (void)t, (void)u;
  atomic_fetch_add(&tp_made, 1);
}
static void tp_lost_cb(weft_transport *t, int err, void *u) {
  (void)t, (void)err, (void)u;
  atomic_fetch_add(&tp_lost, 1);
}
static void tp_data(weft_transport *t, const void *d, size_t len, void *u) {
  (void)u;
  if (weft_transport_write(t, d, len) < 0) weft_transport_abort(t); /* a write refused: end it (no silent drop) */
}
static int tp_factory(weft_protocol *out, void *arg) {
  (void)arg;
  *out = (weft_protocol){.data_received = tp_data};
  return 0;
}

static int transport_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  weft_server *srv;
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, tp_factory, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  uint16_t port = (uint16_t)weft_addr_port(&a);
  for (long n = 0; n < SWEEP; n++) {
    atomic_store(&tp_made, 0);
    atomic_store(&tp_lost, 0);
    weft_protocol p = {.connection_made = tp_made_cb, .connection_lost = tp_lost_cb, .data_received = NULL};
    weft_transport *t = NULL;
    fault(n);
    int rc = weft_create_connection("127.0.0.1", port, &p, weft_now_ns() + 5000 * MS, &t);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("create_connection n=%ld: %d", n, rc);
      ASSERT_EQ(atomic_load(&tp_made), 0);
    } else {
      ASSERT_EQ(atomic_load(&tp_made), 1);
      fault(n);
      rc = weft_transport_write(t, "abc", 3);
      nofault();
      if (rc != 0 && rc != -ENOMEM) TEST_FAIL("transport_write n=%ld: %d", n, rc);
      weft_transport_close(t);
      for (int i = 0; i < 2000 && !atomic_load(&tp_lost); i++) weft_sleep_ns(1 * MS);
      ASSERT_EQ(atomic_load(&tp_lost), 1);
      weft_transport_release(t);
    }
    /* the server side, faulted */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fault(n);
    ASSERT_EQ(weft_connect(fd, &a, weft_now_ns() + 5000 * MS), 0);
    ssize_t w = weft_send(fd, "ping", 4, MSG_NOSIGNAL);
    char buf[8];
    ssize_t r = w == 4 ? weft_recv_until(fd, buf, sizeof buf, 0, weft_now_ns() + 3000 * MS) : w;
    nofault();
    if (r == -ETIMEDOUT) TEST_FAIL("transport server n=%ld: no answer, no close", n);
    close(fd);
  }
  weft_sleep_ns(20 * MS);
  ASSERT_EQ(weft_server_close(srv), 0);
  ASSERT_EQ(weft_server_wait_closed(srv), 0);
  weft_server_free(srv);
  weft_sleep_ns(20 * MS);
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST_T(transport_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(transport_main), 0);
}

static _Atomic int dg_made, dg_lost;
static void dg_made_cb(weft_datagram_transport *t, void *u) {
  (void)t, (void)u;
  atomic_fetch_add(&dg_made, 1);
}
static void dg_lost_cb(weft_datagram_transport *t, int err, void *u) {
  (void)t, (void)err, (void)u;
  atomic_fetch_add(&dg_lost, 1);
}

static int datagram_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  weft_addr local;
  ASSERT_EQ(weft_addr_ip(&local, "127.0.0.1", 0), 0);
  for (long n = 0; n < SWEEP; n++) {
    atomic_store(&dg_made, 0);
    atomic_store(&dg_lost, 0);
    weft_datagram_protocol p = {.connection_made = dg_made_cb, .connection_lost = dg_lost_cb};
    weft_datagram_transport *t = NULL;
    fault(n);
    int rc = weft_create_datagram_endpoint(&local, NULL, &p, &t);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("datagram n=%ld: %d", n, rc);
      ASSERT_EQ(atomic_load(&dg_made), 0);
      ASSERT_EQ(count_fds(), fds);
      continue;
    }
    weft_addr me;
    ASSERT_EQ(weft_datagram_get_extra_info(t, "sockname", &me, sizeof me), 0);
    fault(n);
    rc = weft_datagram_sendto(t, "x", 1, &me);
    nofault();
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("sendto n=%ld: %d", n, rc);
    weft_datagram_close(t);
    for (int i = 0; i < 2000 && !atomic_load(&dg_lost); i++) weft_sleep_ns(1 * MS);
    ASSERT_EQ(atomic_load(&dg_lost), 1);
    weft_datagram_release(t);
    weft_sleep_ns(2 * MS);
    ASSERT_EQ(count_fds(), fds);
  }
  return 0;
}

TEST_T(datagram_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(datagram_main), 0);
}

/* ------------------------------------------------------------ processes */

static int process_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  for (long n = 0; n < SWEEP; n++) {
    char *argv[] = {"/bin/cat", NULL};
    weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE,
                           .stderr_mode = WEFT_STDIO_PIPE};
    weft_process *p = NULL;
    fault(n);
    int rc = weft_process_exec(&p, "/bin/cat", argv, &o);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("exec n=%ld: %d", n, rc);
      for (int i = 0; i < 2000 && count_fds() != fds; i++) weft_sleep_ns(1 * MS); /* the background reaper */
      if (count_fds() != fds) TEST_FAIL("exec n=%ld: -ENOMEM leaked %d descriptors", n, count_fds() - fds);
      continue;
    }
    char out[16];
    weft_communicate c = {.input = "hello", .input_len = 5, .out = out, .out_cap = sizeof out,
                          .deadline_ns = weft_now_ns() + 5000 * MS};
    fault(n);
    rc = weft_process_communicate(p, &c);
    nofault();
    if (rc == -ETIMEDOUT) TEST_FAIL("communicate n=%ld: hung", n);
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("communicate n=%ld: %d", n, rc);
    if (rc == 0) {
      ASSERT_EQ(c.out_len, 5);
      ASSERT_EQ(c.returncode, 0);
    } else {
      weft_process_kill(p);
    }
    ASSERT_EQ(weft_process_free(p), 0);
    for (int i = 0; i < 2000 && count_fds() != fds; i++) weft_sleep_ns(1 * MS); /* the background reaper */
    if (count_fds() != fds) TEST_FAIL("communicate n=%ld (rc %d): leaked %d descriptors", n, rc, count_fds() - fds);
  }
  return 0;
}

TEST_T(process_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(process_main), 0);
}

/* ------------------------------------------------------------ signals, TLS */

static int sig_fn(int signo, void *arg) {
  (void)signo, (void)arg;
  return 0;
}

static int signal_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  for (long n = 0; n < SWEEP; n++) {
    weft_signal_watch *w = NULL;
    fault(n);
    int rc = weft_signal_watch_add(&w, SIGUSR2, sig_fn, NULL);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("signal_watch_add n=%ld: %d", n, rc);
    } else {
      ASSERT_EQ(weft_signal_watch_remove(w), 0);
    }
  }
  weft_sleep_ns(5 * MS);
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST_T(signal_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(signal_main), 0);
}

static int tls_main(void *arg) {
  (void)arg;
  for (long n = 0; n < SWEEP; n++) {
    weft_tls_ctx *c = NULL;
    weft_tls_opts o = {.verify = 0, .alpn = "h2,http/1.1"};
    fault(n);
    int rc = weft_tls_ctx_new(&c, false, &o);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("tls_ctx_new n=%ld: %d", n, rc);
    } else {
      weft_tls_ctx_free(c);
    }
  }
  return 0;
}

TEST_T(tls_ctx_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(tls_main), 0);
}

/* ------------------------------------------------------------ batch 2 */

TEST_T(runtime_new_enomem, 120) {
  HOOKS();
  int fds = count_fds();
  for (long n = 0; n < 40; n++) {
    for (unsigned nw = 1; nw <= 2; nw++) {
      weft_runtime *rt = NULL;
      weft_config c = cfg_workers(nw);
      fault(n);
      int rc = weft_runtime_new(&rt, &c);
      nofault();
      if (rc < 0) {
        if (rc != -ENOMEM) TEST_FAIL("runtime_new n=%ld nw=%u: %d", n, nw, rc);
        if (count_fds() != fds) TEST_FAIL("runtime_new n=%ld nw=%u: -ENOMEM leaked %d fds", n, nw, count_fds() - fds);
        continue;
      }
      ASSERT_EQ(weft_runtime_call(rt, noop_main, NULL), 0);
      ASSERT_EQ(weft_runtime_shutdown(rt), 0);
      if (count_fds() != fds) TEST_FAIL("runtime n=%ld nw=%u: leaked %d fds", n, nw, count_fds() - fds);
    }
  }
}

static int tu_ret_sleep(void *arg) {
  (void)arg;
  weft_sleep_ns(1 * MS);
  return 7;
}

static int many_spawn_main(void *arg) {
  (void)arg;
  /* more tasks alive than the magazines hold: spawn must allocate records */
  enum { N = 3000 };
  static weft_task ts[N];
  for (long n = 0; n < 8; n++) {
    int ok = 0, fails = 0;
    fault(n);
    for (int i = 0; i < N; i++) {
      ts[ok] = weft_spawn(tu_ret_sleep, NULL);
      if (weft_task_is_null(ts[ok])) {
        if (errno != ENOMEM) TEST_FAIL("spawn n=%ld: errno %d", n, errno);
        fails++;
      } else {
        ok++;
      }
    }
    nofault();
    for (int i = 0; i < ok; i++) {
      int rc = weft_join(ts[i]);
      if (rc != 7 && rc != -ENOMEM) TEST_FAIL("join n=%ld: %d", n, rc);
      weft_task_release(ts[i]);
    }
    ASSERT_TRUE(fails <= 1);
  }
  return 0;
}

TEST_T(spawn_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(many_spawn_main), 0);
}

static int timeout_main(void *arg) {
  (void)arg;
  for (long n = 0; n < SWEEP; n++) {
    weft_task t = weft_spawn(noop_main, NULL);
    weft_join(t);
    weft_task_release(t);
    weft_timeout to;
    fault(n);
    int rc = weft_timeout_enter(&to, 1000 * MS);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("timeout_enter n=%ld: %d", n, rc);
      continue;
    }
    ASSERT_EQ(weft_sleep_ns(1 * MS), 0);
    fault(n);
    int r2 = weft_timeout_reschedule(&to, weft_now_ns() + 2000 * MS);
    nofault();
    if (r2 != 0 && r2 != -ENOMEM) TEST_FAIL("reschedule n=%ld: %d", n, r2);
    ASSERT_EQ(weft_timeout_leave(&to, 0), 0);
    /* the scope is gone: a short one still fires */
    ASSERT_EQ(weft_timeout_enter(&to, 2 * MS), 0);
    rc = weft_sleep_ns(1000 * MS);
    ASSERT_EQ(weft_timeout_leave(&to, rc), -ETIMEDOUT);
  }
  return 0;
}

TEST_T(timeout_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(timeout_main), 0);
}

static _Atomic int done_cbs;
static void done_cb(weft_task t, void *arg) {
  (void)t, (void)arg;
  atomic_fetch_add(&done_cbs, 1);
}
static void fdone_cb(weft_future *f, void *arg) {
  (void)f, (void)arg;
  atomic_fetch_add(&done_cbs, 1);
}

static int done_cb_main(void *arg) {
  (void)arg;
  for (long n = 0; n < 4; n++) {
    atomic_store(&done_cbs, 0);
    weft_task t = weft_spawn(sleep_then, (void *)1);
    weft_future f;
    ASSERT_EQ(weft_future_init(&f), 0);
    fault(n);
    int a = weft_task_add_done_callback(t, done_cb, NULL);
    int b = weft_future_add_done_callback(&f, fdone_cb, NULL);
    nofault();
    ASSERT_TRUE(a == 0 || a == -ENOMEM);
    ASSERT_TRUE(b == 0 || b == -ENOMEM);
    weft_join(t);
    weft_future_set(&f, 0, NULL);
    weft_sleep_ns(1 * MS);
    ASSERT_EQ(atomic_load(&done_cbs), (a == 0) + (b == 0));
    weft_task_release(t);
    weft_future_destroy(&f);
  }
  return 0;
}

TEST_T(done_callbacks_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(done_cb_main), 0);
}

/* happy eyeballs: "localhost" may give ::1 and 127.0.0.1 */
static int eyeballs_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  weft_server *srv;
  ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, echo_conn, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  uint16_t port = (uint16_t)weft_addr_port(&a);
  for (long n = 0; n < SWEEP; n++) {
    weft_stream *s = NULL;
    fault(n);
    int rc = weft_open_connection("localhost", port, weft_now_ns() + 5000 * MS, &s);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM) TEST_FAIL("open_connection(localhost) n=%ld: %d", n, rc);
      continue;
    }
    weft_stream_close(s);
    weft_stream_wait_closed(s);
  }
  weft_sleep_ns(20 * MS);
  ASSERT_EQ(one_echo(port, false, 0), 1);
  ASSERT_EQ(weft_server_close(srv), 0);
  ASSERT_EQ(weft_server_wait_closed(srv), 0);
  weft_server_free(srv);
  weft_sleep_ns(20 * MS);
  if (count_fds() != fds) TEST_FAIL("eyeballs: leaked %d fds", count_fds() - fds);
  return 0;
}

TEST_T(open_connection_localhost_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(eyeballs_main), 0);
}

/* a round-robin server on 2 workers: the pinned spawn's failure path */
static int rr_main(void *arg) {
  (void)arg;
  return server_main(arg);
}

TEST_T(server_round_robin_enomem, 120) {
  HOOKS();
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(rr_main, NULL, &c), 0);
}

/* TLS: a server with a TLS context, and a TLS client, under the fault */
static weft_tls_ctx *tls_srv_ctx, *tls_cli_ctx;

static int tls_conn_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  tls_srv_ctx = server_ctx(srv_pem, NULL, 0);
  tls_cli_ctx = client_ctx(ca_pem, NULL);
  weft_server *srv;
  weft_server_opts o = {.tls = tls_srv_ctx};
  ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, echo_conn, NULL, &o), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  uint16_t port = (uint16_t)weft_addr_port(&a);
  for (long n = 0; n < SWEEP; n++) {
    weft_stream *s = NULL;
    fault(n);
    int rc = weft_open_connection_tls("127.0.0.1", port, weft_now_ns() + 5000 * MS, tls_cli_ctx, "localhost", &s);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM && rc != -ECONNRESET && rc != -ECONNABORTED && rc != -EPIPE)
        TEST_FAIL("open_connection_tls n=%ld: %d", n, rc);
    } else {
      weft_stream_set_timeout(s, 3000 * MS);
      char buf[16];
      rc = weft_stream_write(s, "ping\n", 5);
      if (rc == 0) rc = weft_stream_drain(s);
      ssize_t r = rc == 0 ? weft_stream_readline(s, buf, sizeof buf) : rc;
      if (r == -ETIMEDOUT) TEST_FAIL("tls echo n=%ld: hung", n);
      weft_stream_close(s);
      weft_stream_wait_closed(s);
    }
    /* still serving, and a fresh client works */
    weft_stream *s2 = NULL;
    ASSERT_EQ(weft_open_connection_tls("127.0.0.1", port, weft_now_ns() + 5000 * MS, tls_cli_ctx, "localhost", &s2), 0);
    weft_stream_set_timeout(s2, 3000 * MS);
    char buf[16];
    ASSERT_EQ(weft_stream_write(s2, "ping\n", 5), 0);
    ASSERT_EQ(weft_stream_drain(s2), 0);
    ASSERT_EQ(weft_stream_readline(s2, buf, sizeof buf), 5);
    weft_stream_close(s2);
    weft_stream_wait_closed(s2);
  }
  ASSERT_EQ(weft_server_close(srv), 0);
  ASSERT_EQ(weft_server_wait_closed(srv), 0);
  weft_server_free(srv);
  weft_tls_ctx_free(tls_srv_ctx);
  weft_tls_ctx_free(tls_cli_ctx);
  weft_sleep_ns(20 * MS);
  if (count_fds() != fds) TEST_FAIL("tls: leaked %d fds", count_fds() - fds);
  return 0;
}

TEST_T(tls_connection_enomem, 120) {
  HOOKS();
  make_certs();
  ASSERT_EQ(run1(tls_conn_main), 0);
  remove_certs();
}

/* a TLS transport (the driver runs OpenSSL) */
static int tls_tp_main(void *arg) {
  (void)arg;
  tls_srv_ctx = server_ctx(srv_pem, NULL, 0);
  tls_cli_ctx = client_ctx(ca_pem, NULL);
  weft_server *srv;
  weft_server_opts o = {.tls = tls_srv_ctx};
  ASSERT_EQ(weft_create_server(&srv, "127.0.0.1", 0, tp_factory, NULL, &o), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  uint16_t port = (uint16_t)weft_addr_port(&a);
  for (long n = 0; n < SWEEP; n++) {
    atomic_store(&tp_made, 0);
    atomic_store(&tp_lost, 0);
    weft_protocol p = {.connection_made = tp_made_cb, .connection_lost = tp_lost_cb};
    weft_transport *t = NULL;
    fault(n);
    int rc = weft_create_connection_tls("127.0.0.1", port, &p, tls_cli_ctx, "localhost", weft_now_ns() + 5000 * MS, &t);
    nofault();
    if (rc < 0) {
      if (rc != -ENOMEM && rc != -ECONNRESET && rc != -ECONNABORTED) TEST_FAIL("create_connection_tls n=%ld: %d", n, rc);
      continue;
    }
    weft_transport_close(t);
    for (int i = 0; i < 2000 && !atomic_load(&tp_lost); i++) weft_sleep_ns(1 * MS);
    ASSERT_EQ(atomic_load(&tp_lost), 1);
    weft_transport_release(t);
  }
  ASSERT_EQ(weft_server_close(srv), 0);
  ASSERT_EQ(weft_server_wait_closed(srv), 0);
  weft_server_free(srv);
  weft_tls_ctx_free(tls_srv_ctx);
  weft_tls_ctx_free(tls_cli_ctx);
  return 0;
}

TEST_T(tls_transport_enomem, 120) {
  HOOKS();
  make_certs();
  ASSERT_EQ(run1(tls_tp_main), 0);
  remove_certs();
}

/* ------------------------------------------------------------ batch 3 */

/* a burst of connections while allocations fail: the accept queue grows
 * (io_uring's multishot acceptor), conn records, handler tasks */
static int burst_main(void *arg) {
  (void)arg;
  int fds = count_fds();
  weft_server *srv;
  ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, echo_conn, NULL, NULL), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  uint16_t port = (uint16_t)weft_addr_port(&a);
  enum { K = 48 };
  for (long n = 0; n < 12; n++) {
    int cs[K];
    for (int i = 0; i < K; i++) {
      cs[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      connect(cs[i], (struct sockaddr *)&a.u, a.len); /* EINPROGRESS: the burst */
    }
    fault(n);
    weft_sleep_ns(20 * MS);
    nofault();
    for (int i = 0; i < K; i++) {
      ASSERT_EQ(weft_poll(cs[i], POLLOUT, weft_now_ns() + 3000 * MS) >= 0, 1);
      ssize_t w = weft_send(cs[i], "ping\n", 5, MSG_NOSIGNAL);
      char buf[16];
      ssize_t r = w == 5 ? weft_recv_until(cs[i], buf, sizeof buf, 0, weft_now_ns() + 3000 * MS) : w;
      if (r == -ETIMEDOUT) TEST_FAIL("burst n=%ld conn %d: neither served nor closed", n, i);
      close(cs[i]);
    }
    ASSERT_EQ(one_echo(port, false, n), 1);
  }
  ASSERT_EQ(weft_server_close(srv), 0);
  ASSERT_EQ(weft_server_wait_closed(srv), 0);
  weft_server_free(srv);
  weft_sleep_ns(20 * MS);
  if (count_fds() != fds) TEST_FAIL("burst: leaked %d fds", count_fds() - fds);
  return 0;
}

TEST_T(server_burst_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(burst_main), 0);
}

/* stream writes: 0 means the bytes arrive, -ENOMEM means none was buffered */
static int wstream_reader(void *arg) {
  weft_stream *b = arg;
  static char in[1 << 16];
  long total = 0;
  for (;;) {
    ssize_t r = weft_stream_read(b, in, sizeof in);
    if (r <= 0) break;
    total += r;
  }
  return (int)(total / 1000);
}

static int wstream_main(void *arg) {
  (void)arg;
  static char chunk[100000];
  for (long n = 0; n < SWEEP; n++) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    weft_stream *a, *b;
    ASSERT_EQ(weft_stream_from_fd(sv[0], &a), 0);
    ASSERT_EQ(weft_stream_from_fd(sv[1], &b), 0);
    weft_task rd = weft_spawn(wstream_reader, b);
    long sent = 0;
    fault(n);
    for (int i = 0; i < 20; i++) {
      int rc = weft_stream_write(a, chunk, sizeof chunk);
      if (rc == 0) sent += sizeof chunk;
      else if (rc != -ENOMEM) break;
      if (i % 4 == 3) {
        rc = weft_stream_drain(a);
        if (rc == -ENOMEM) break; /* latched: the stream failed */
        if (rc) TEST_FAIL("drain n=%ld: %d", n, rc);
      }
    }
    nofault();
    int drc = weft_stream_drain(a);
    weft_stream_close(a);
    weft_stream_wait_closed(a);
    int got = weft_join(rd);
    weft_task_release(rd);
    if (drc == 0 && got != sent / 1000) TEST_FAIL("stream write n=%ld: wrote %ld, peer got %d000", n, sent, got);
    weft_stream_close(b);
    weft_stream_wait_closed(b);
  }
  return 0;
}

TEST_T(stream_write_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(wstream_main), 0);
}

static int resolve_main(void *arg) {
  (void)arg;
  for (long n = 0; n < SWEEP; n++) {
    weft_addr out[4];
    fault(n);
    int rc = weft_resolve("localhost", 80, 0, 0, out, 4);
    nofault();
    if (rc < 0 && rc != -ENOMEM) TEST_FAIL("resolve n=%ld: %d", n, rc);
    ASSERT_TRUE(weft_resolve("localhost", 80, 0, 0, out, 4) > 0);
  }
  return 0;
}

TEST_T(resolve_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(resolve_main), 0);
}

static int bigout_main(void *arg) {
  (void)arg;
  for (long n = 0; n < SWEEP; n++) {
    weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE, .stderr_mode = WEFT_STDIO_PIPE};
    weft_process *p = NULL;
    int rc = weft_process_shell(&p, "head -c 300000 /dev/zero; head -c 1000 /dev/zero >&2", &o);
    ASSERT_EQ(rc, 0);
    static char out[400000], err[2000];
    weft_communicate c = {.out = out, .out_cap = sizeof out, .err = err, .err_cap = sizeof err,
                          .deadline_ns = weft_now_ns() + 5000 * MS};
    fault(n);
    rc = weft_process_communicate(p, &c);
    nofault();
    if (rc == -ETIMEDOUT) TEST_FAIL("communicate n=%ld: hung", n);
    if (rc != 0 && rc != -ENOMEM) TEST_FAIL("communicate n=%ld: %d", n, rc);
    if (rc == 0) {
      ASSERT_EQ(c.out_len, 300000);
      ASSERT_EQ(c.err_len, 1000);
    } else {
      weft_process_kill(p);
    }
    ASSERT_EQ(weft_process_free(p), 0);
  }
  return 0;
}

TEST_T(process_communicate_big_enomem, 120) {
  HOOKS();
  ASSERT_EQ(run1(bigout_main), 0);
}

static int dump_main(void *arg) {
  (void)arg;
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  for (long n = 0; n < 4; n++) {
    fault(n);
    int rc = weft_tasks_dump(fd);
    nofault();
    if (rc < 0 && rc != -ENOMEM) TEST_FAIL("dump n=%ld: %d", n, rc);
  }
  close(fd);
  return 0;
}

TEST_T(dump_enomem, 60) {
  HOOKS();
  ASSERT_EQ(run1(dump_main), 0);
}

TEST_MAIN()
