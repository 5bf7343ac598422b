/* bench/echo_client.c: the load client of the tcp_echo workload
 * (BENCHMARKS.md), the same program for every server measured.
 *
 *     echo_client port=PORT [conns=64] [size=64] [seconds=5] [system=NAME] [workers=N]
 *
 * Opens `conns` connections to 127.0.0.1:PORT; on each, sends a `size`-byte
 * message, waits for all of its echo, checks every byte, and sends the next,
 * for `seconds`. One thread, non-blocking sockets, level-triggered epoll, so
 * that the client costs the same whatever the server. Each message carries
 * its connection and sequence number, so a byte echoed to the wrong
 * connection or out of order fails the check. Prints the JSON line of
 * BENCHMARKS.md (system and workers are the server's, as given) with
 * value = messages echoed per second; exits 1 with "ERROR: ..." when a check
 * fails or a connection breaks, 2 on a bad command line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  uint64_t seq;        /* the message in flight */
  size_t sent, recvd;  /* bytes of it */
  unsigned char *out, *in;
} conn;

static long port = -1, conns = 64, size = 64, seconds = 5, workers = 0;
static const char *system_name = "unknown";

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "ERROR: tcp_echo: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
  exit(1);
}

/* The message of connection c, number seq: a pattern from both. */
static void fill(conn *c, long index) {
  uint64_t x = ((uint64_t)index << 40) ^ c->seq ^ 0x9e3779b97f4a7c15ull;
  for (long i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->out[i] = (unsigned char)x;
  }
  c->sent = c->recvd = 0;
}

static int arg_long(const char *a, const char *key, long *v) {
  size_t k = strlen(key);
  if (strncmp(a, key, k) != 0 || a[k] != '=') return 0;
  char *end;
  *v = strtol(a + k + 1, &end, 10);
  if (*end || end == a + k + 1 || *v < 0) {
    fprintf(stderr, "echo_client: %s must be a non-negative integer\n", key);
    exit(2);
  }
  return 1;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (arg_long(argv[i], "port", &port) || arg_long(argv[i], "conns", &conns) ||
        arg_long(argv[i], "size", &size) || arg_long(argv[i], "seconds", &seconds) ||
        arg_long(argv[i], "workers", &workers))
      continue;
    if (strncmp(argv[i], "system=", 7) == 0) {
      system_name = argv[i] + 7;
      continue;
    }
    fprintf(stderr, "usage: echo_client port=PORT [conns=64] [size=64] [seconds=5] [system=NAME] [workers=N]\n");
    return 2;
  }
  if (port <= 0 || port > 65535 || conns < 1 || size < 1 || seconds < 1) {
    fprintf(stderr, "echo_client: need port in 1..65535, conns >= 1, size >= 1, seconds >= 1\n");
    return 2;
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  conn *cs = calloc((size_t)conns, sizeof *cs);
  if (!cs) die("out of memory");
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  for (long i = 0; i < conns; i++) {
    conn *c = &cs[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(c->fd, F_SETFL, O_NONBLOCK) != 0) die("fcntl");
    c->out = malloc((size_t)size);
    c->in = malloc((size_t)size);
    if (!c->out || !c->in) die("out of memory");
    fill(c, i);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
  }

  uint64_t messages = 0;
  struct epoll_event evs[256];
  double t0 = now_s(), end = t0 + (double)seconds;
  for (;;) {
    double t = now_s();
    if (t >= end) break;
    int n = epoll_wait(ep, evs, 256, (int)((end - t) * 1000) + 1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int k = 0; k < n; k++) {
      long i = (long)evs[k].data.u64;
      conn *c = &cs[i];
      if (evs[k].events & (EPOLLERR | EPOLLHUP)) die("connection closed by the server");
      if ((evs[k].events & EPOLLOUT) && c->sent < (size_t)size) {
        ssize_t w = send(c->fd, c->out + c->sent, (size_t)size - c->sent, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) die("send");
        if (w > 0) c->sent += (size_t)w;
        if (c->sent == (size_t)size) {
          struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
          if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl");
        }
      }
      if (evs[k].events & EPOLLIN) {
        ssize_t r = recv(c->fd, c->in + c->recvd, (size_t)size - c->recvd, 0);
        if (r == 0) die("the server closed a connection");
        if (r < 0 && errno != EAGAIN) die("recv");
        if (r > 0) {
          if (c->recvd + (size_t)r > c->sent) {
            errno = 0;
            die("echoed more bytes than were sent");
          }
          if (memcmp(c->in + c->recvd, c->out + c->recvd, (size_t)r) != 0) {
            errno = 0;
            die("an echoed byte differs from the one sent");
          }
          c->recvd += (size_t)r;
          if (c->recvd == (size_t)size) {
            messages++;
            c->seq++;
            fill(c, i);
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = (uint64_t)i};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl");
          }
        }
      }
    }
  }
  double wall = now_s() - t0;
  if (messages == 0) {
    errno = 0;
    die("no message was echoed");
  }
  long rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    long pages;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  printf("{\"workload\":\"tcp_echo\",\"system\":\"%s\",\"workers\":%ld,\"value\":%.6g,\"unit\":\"msgs/s\","
         "\"wall_s\":%.6f,\"rss_kb\":%ld,\"params\":\"conns=%ld size=%ld seconds=%ld\",\"messages\":%llu}\n",
         system_name, workers, (double)messages / wall, wall, rss * (sysconf(_SC_PAGESIZE) / 1024), conns, size,
         seconds, (unsigned long long)messages);
  for (long i = 0; i < conns; i++) {
    close(cs[i].fd);
    free(cs[i].out);
    free(cs[i].in);
  }
  free(cs);
  close(ep);
  return 0;
}
