/* tests/test_net_accept.c: multishot accept (net/acceptor.c) and the
 * server's accept loop under bursts of connections.
 *
 * The acceptor directly (io_uring only: skipped on epoll): one submission
 * serves many connections; a cancelled wait returns -ECANCELED and fini
 * waits for the accept's last completion; fini closes the connections
 * accepted but not yet taken. The server (both backends; on io_uring with
 * the multishot accept and with the single-shot fallback): client threads
 * (plain blocking sockets, not weft) connect all at once, some send an id
 * and check its echo, some close at once; every connection is counted,
 * each id echoed once, and no descriptor is left open afterwards
 * (/proc/self/fd). A server closed while connections keep arriving leaks
 * none either. Loopback only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <weft/weft.h>

#include "net/acceptor.h"
#include "net/net.h"
#include "test.h"
#include "test_util.h"

static bool uring_backend(void) {
  const char *b = getenv("WEFT_BACKEND");
  return !(b && strcmp(b, "epoll") == 0);
}

/* A blocking client connection to 127.0.0.1:port, or -1. */
static int plain_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static uint16_t listener_port(int lfd) {
  weft_addr a;
  if (weft_sockname(lfd, &a) != 0) return 0;
  return (uint16_t)weft_addr_port(&a);
}

/* ------------------------------------------------------------ the acceptor */

static int acceptor_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_addr la;
  ASSERT_EQ(weft_addr_parse(&la, "127.0.0.1:0"), 0);
  int lfd = weft_listen(&la, 128, 0);
  ASSERT_GE(lfd, 0);
  uint16_t port = listener_port(lfd);
  weft__acceptor a;
  ASSERT_EQ(weft__acceptor_init(&a, lfd), 0);
  /* K connections in the backlog, then K accepts: one submission */
  enum { K = 20 };
  int cl[K], sv[K];
  for (int i = 0; i < K; i++) ASSERT_GE(cl[i] = plain_connect(port), 0);
  for (int i = 0; i < K; i++) {
    sv[i] = weft__acceptor_next(&a);
    if (sv[i] == -EOPNOTSUPP) TEST_SKIP("no multishot accept on this kernel");
    ASSERT_GE(sv[i], 0);
  }
  ASSERT_EQ(a.arms, 1);
  ASSERT_EQ(a.accepted, K);
  /* each accepted fd is a distinct connection: bytes cross the right pair */
  for (int i = 0; i < K; i++) {
    char b = (char)i, r = 0;
    ASSERT_EQ(write(cl[i], &b, 1), 1);
    ASSERT_EQ(weft_recv(sv[i], &r, 1, 0), 1);
    ASSERT_EQ(r, b);
  }
  for (int i = 0; i < K; i++) close(sv[i]);
  ASSERT_TRUE(a.armed); /* still the first submission */
  /* connections queued but never taken: fini closes them */
  for (int i = 0; i < K; i++) close(cl[i]);
  for (int i = 0; i < 4; i++) ASSERT_GE(cl[i] = plain_connect(port), 0);
  for (int i = 0; i < 50 && a.tail - a.head < 4; i++) weft_sleep_ns(2000000);
  ASSERT_EQ(a.tail - a.head, 4);
  weft__acceptor_fini(&a);
  ASSERT_TRUE(!a.armed);
  for (int i = 0; i < 4; i++) {
    char x;
    ASSERT_EQ(read(cl[i], &x, 1), 0); /* the server side was closed */
    close(cl[i]);
  }
  close(lfd);
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(acceptor_one_submission_for_many_connections) {
  if (!uring_backend()) TEST_SKIP("io_uring only");
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(acceptor_main, NULL, &c), 0);
}

typedef struct waiter_arg {
  weft__acceptor *a;
  int lfd;
  int result;
  _Atomic int waiting;
} waiter_arg;

static int next_waiter(void *arg) {
  waiter_arg *w = arg;
  ASSERT_EQ(weft__acceptor_init(w->a, w->lfd), 0);
  atomic_store(&w->waiting, 1);
  w->result = weft__acceptor_next(w->a);
  weft__acceptor_fini(w->a); /* cancels the armed accept, waits for its end */
  return 0;
}

static int cancel_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_addr la;
  ASSERT_EQ(weft_addr_parse(&la, "127.0.0.1:0"), 0);
  int rounds = test_sanitized() ? 20 : 100;
  for (int r = 0; r < rounds; r++) {
    int lfd = weft_listen(&la, 16, 0);
    ASSERT_GE(lfd, 0);
    weft__acceptor a;
    waiter_arg w = {.a = &a, .lfd = lfd};
    weft_task t = weft_spawn(next_waiter, &w);
    while (!atomic_load(&w.waiting)) weft_yield();
    if (r % 2) weft_sleep_ns(100000); /* sometimes in the wait, sometimes before it */
    /* sometimes a connection races the cancel */
    int cl = r % 3 == 0 ? plain_connect(listener_port(lfd)) : -1;
    weft_cancel(t);
    ASSERT_EQ(weft_join(t), 0);
    weft_task_release(t);
    if (w.result == -EOPNOTSUPP) TEST_SKIP("no multishot accept on this kernel");
    ASSERT_TRUE(w.result == -ECANCELED || w.result >= 0);
    if (w.result >= 0) close(w.result);
    if (cl >= 0) close(cl);
    close(lfd);
  }
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(acceptor_cancel_waits_for_the_last_completion) {
  if (!uring_backend()) TEST_SKIP("io_uring only");
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(cancel_main, NULL, &c), 0);
}

static int epoll_main(void *arg) {
  (void)arg;
  weft__acceptor a;
  ASSERT_EQ(weft__acceptor_init(&a, 0), -EINVAL); /* epoll: the server accepts single-shot */
  return 0;
}

TEST(acceptor_refuses_the_epoll_backend) {
  if (uring_backend()) TEST_SKIP("epoll only");
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(epoll_main, NULL, &c), 0);
}

/* The queue cannot grow (no memory) when the accept's error arrives: the
 * error replaced the newest queued result, an accepted descriptor that
 * nobody closed afterwards (a leak on every such failure). It is closed
 * now, as the connection the callback refuses when there is no room. */
#ifdef WEFT_TEST_HOOKS
void weft__fault_alloc_after(long n);

static int enomem_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  weft_addr la;
  ASSERT_EQ(weft_addr_parse(&la, "127.0.0.1:0"), 0);
  int lfd = weft_listen(&la, 64, 0);
  ASSERT_GE(lfd, 0);
  uint16_t port = listener_port(lfd);
  weft__acceptor a;
  ASSERT_EQ(weft__acceptor_init(&a, lfd), 0);
  enum { K = 17 };
  int cl[K];
  ASSERT_GE(cl[0] = plain_connect(port), 0);
  int sv = weft__acceptor_next(&a); /* armed; the queue has its first 16 entries */
  if (sv == -EOPNOTSUPP) TEST_SKIP("no multishot accept on this kernel");
  ASSERT_GE(sv, 0);
  close(sv);
  ASSERT_EQ(a.cap, 16);
  /* 16 connections the task does not take yet: the queue is full */
  for (int i = 1; i < K; i++) ASSERT_GE(cl[i] = plain_connect(port), 0);
  for (int i = 0; i < 500 && a.tail - a.head < 16; i++) weft_sleep_ns(2000000);
  ASSERT_EQ(a.tail - a.head, 16);
  ASSERT_EQ(a.tail, a.cap);
  /* the next completion finds no room and no memory: an error (the
   * listener shut down ends the multishot accept with -EINVAL) */
  weft__fault_alloc_after(0);
  ASSERT_EQ(shutdown(lfd, SHUT_RD), 0);
  for (int i = 0; i < 500 && a.armed; i++) weft_sleep_ns(2000000);
  weft__fault_alloc_after(-1);
  ASSERT_TRUE(!a.armed);
  int got = 0, r;
  while ((r = weft__acceptor_next(&a)) >= 0) {
    close(r);
    got++;
  }
  ASSERT_EQ(r, -ENOMEM); /* the error's place is kept */
  ASSERT_EQ(got, 15);
  weft__acceptor_fini(&a);
  for (int i = 0; i < K; i++) close(cl[i]);
  close(lfd);
  ASSERT_EQ(count_fds(), fds0); /* the descriptor the error replaced was closed */
  return 0;
}
#endif

TEST(acceptor_out_of_memory_leaks_no_descriptor) {
#ifdef WEFT_TEST_HOOKS
  if (!uring_backend()) TEST_SKIP("io_uring only");
  weft_config c = cfg_workers(1);
  ASSERT_EQ(weft_run(enomem_main, NULL, &c), 0);
#else
  TEST_SKIP("needs -DWEFT_TEST_HOOKS");
#endif
}

/* ------------------------------------------------------------ server bursts */

#define MAX_CONNS 4096
static _Atomic int echoed[MAX_CONNS];
static _Atomic int handlers_run;

/* Echo one 4-byte id (or nothing: the client closed at once), then wait for
 * the client's end. */
static int id_handler(weft_stream *s, void *arg) {
  (void)arg;
  atomic_fetch_add(&handlers_run, 1);
  uint32_t id;
  ssize_t n = weft_stream_readexactly(s, &id, sizeof id, NULL);
  if (n != (ssize_t)sizeof id) return 0;
  if (id < MAX_CONNS) atomic_fetch_add(&echoed[id], 1);
  if (weft_stream_write(s, &id, sizeof id) < 0 || weft_stream_drain(s) < 0) return -1;
  char x;
  weft_stream_read(s, &x, 1);
  return 0;
}

typedef struct client_thread {
  pthread_t th;
  uint16_t port;
  int first, count;
  int failures;
} client_thread;

static void *clients(void *arg) {
  client_thread *c = arg;
  for (int i = c->first; i < c->first + c->count; i++) {
    int fd = plain_connect(c->port);
    if (fd < 0) {
      c->failures++;
      continue;
    }
    if (i % 5 == 4) { /* an abrupt close: the handler sees end of stream */
      close(fd);
      continue;
    }
    uint32_t id = (uint32_t)i, back = 0;
    if (write(fd, &id, sizeof id) != (ssize_t)sizeof id || recv(fd, &back, sizeof back, MSG_WAITALL) != sizeof back ||
        back != id)
      c->failures++;
    close(fd);
  }
  return NULL;
}

typedef struct burst_arg {
  bool multishot;
  int conns;
} burst_arg;

static int burst_main(void *arg) {
  burst_arg *b = arg;
  weft__server_set_multishot(b->multishot);
  int fds0 = count_fds();
  weft_server *srv;
  weft_server_opts o = {.backlog = 1024};
  ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, id_handler, NULL, &o), 0);
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  enum { THREADS = 8 };
  client_thread ct[THREADS];
  int per = b->conns / THREADS;
  for (int i = 0; i < THREADS; i++) {
    ct[i] = (client_thread){.port = (uint16_t)weft_addr_port(&a), .first = i * per, .count = per};
    ASSERT_EQ(pthread_create(&ct[i].th, NULL, clients, &ct[i]), 0);
  }
  int total = per * THREADS;
  for (int i = 0; i < 6000 && (int)weft_server_accepted(srv) < total; i++) weft_sleep_ns(5000000);
  ASSERT_EQ(weft_server_accepted(srv), total);
  ASSERT_EQ(weft_server_shutdown(srv, weft_now_ns() + 20000000000LL), 0);
  for (int i = 0; i < THREADS; i++) {
    pthread_join(ct[i].th, NULL);
    ASSERT_EQ(ct[i].failures, 0);
  }
  weft_server_free(srv);
  ASSERT_EQ(atomic_load(&handlers_run), total);
  for (int i = 0; i < total; i++) ASSERT_EQ(atomic_load(&echoed[i]), i % 5 == 4 ? 0 : 1);
  ASSERT_EQ(count_fds(), fds0);
  weft__server_set_multishot(true);
  return 0;
}

static int burst_conns(void) { return (test_sanitized() ? 200 : 2000) * (test_stress_scale() > 1 ? 2 : 1); }

TEST(server_burst_every_connection_counted) {
  weft_config c = cfg_workers(2);
  burst_arg b = {.multishot = true, .conns = burst_conns()};
  ASSERT_EQ(weft_run(burst_main, &b, &c), 0);
}

TEST(server_burst_single_shot_fallback) {
  weft_config c = cfg_workers(2);
  burst_arg b = {.multishot = false, .conns = burst_conns() / 2};
  ASSERT_EQ(weft_run(burst_main, &b, &c), 0);
}

/* Close the server while connections keep arriving: the accept loop's
 * cancellation waits for the multishot accept's end, the connections it
 * had accepted and not handed out are closed, none leaks. */
static _Atomic int stop_connecting;

static void *connector(void *arg) {
  uint16_t port = *(uint16_t *)arg;
  while (!atomic_load(&stop_connecting)) {
    int fd = plain_connect(port);
    if (fd < 0) break; /* the listener closed */
    close(fd);
  }
  return NULL;
}

static int noop_handler(weft_stream *s, void *arg) {
  (void)s;
  (void)arg;
  return 0;
}

static int close_race_main(void *arg) {
  (void)arg;
  int fds0 = count_fds();
  int rounds = test_sanitized() ? 3 : 40;
  for (int r = 0; r < rounds; r++) {
    weft_server *srv;
    ASSERT_EQ(weft_start_server(&srv, "127.0.0.1", 0, noop_handler, NULL, NULL), 0);
    weft_addr a;
    ASSERT_EQ(weft_server_addr(srv, &a), 0);
    uint16_t port = (uint16_t)weft_addr_port(&a);
    atomic_store(&stop_connecting, 0);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) ASSERT_EQ(pthread_create(&th[i], NULL, connector, &port), 0);
    weft_sleep_ns(1000000 + (r % 5) * 500000);
    ASSERT_EQ(weft_server_shutdown(srv, weft_now_ns() + 5000000000LL), 0);
    atomic_store(&stop_connecting, 1);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    weft_server_free(srv);
  }
  ASSERT_EQ(count_fds(), fds0);
  return 0;
}

TEST(server_close_while_connections_arrive) {
  weft_config c = cfg_workers(2);
  ASSERT_EQ(weft_run(close_race_main, NULL, &c), 0);
}

TEST_MAIN()
