/* examples/echo_server.c: a TCP echo server on weft's streams.
 *
 *     echo_server [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]
 *
 * Listens on H:P (default 127.0.0.1:7000) and echoes every byte on every
 * connection, one handler task per connection, on N workers (default: the
 * CPUs available). Stops cleanly on SIGINT or SIGTERM (or after S seconds):
 * the main thread blocks both signals before the runtime starts (so every
 * worker inherits the mask) and waits for them with sigtimedwait; then it
 * shuts the server down (new connections refused, handlers given 2 s, then
 * cancelled) and the runtime. This is the tcp_echo server of
 * ../shared/BENCHMARKS.md (bench/run serve_echo).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/weft.h>

static const char *host = "127.0.0.1";
static int port = 7000, workers = 0, max_s = 0;
static weft_server *server;
static int placement = WEFT_PLACE_ROUND_ROBIN;

/* Echo until end of stream: read what came, hand it back. A write sends at
 * once when the kernel takes it; drain is needed only for what it did not. */
static int echo(weft_stream *s, void *arg) {
  (void)arg;
  weft_set_nodelay(weft_stream_fd(s), true);
  char buf[16384];
  for (;;) {
    ssize_t n = weft_stream_read(s, buf, sizeof buf);
    if (n <= 0) return (int)n;
    if (weft_stream_write(s, buf, (size_t)n) < 0) return -1;
    if (weft_stream_buffered(s) && weft_stream_drain(s) < 0) return -1;
  }
}

static int start(void *arg) {
  (void)arg;
  int rc = weft_start_server(&server, host, (uint16_t)port, echo, NULL, &(weft_server_opts){.placement = placement});
  if (rc < 0) fprintf(stderr, "echo_server: cannot listen on %s:%d: %s\n", host, port, strerror(-rc));
  return rc;
}

static int stop(void *arg) {
  (void)arg;
  int cancelled = weft_server_shutdown(server, weft_now_ns() + 2000000000LL);
  weft_server_free(server);
  return cancelled;
}

static void usage(void) {
  fprintf(stderr, "usage: echo_server [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) usage();
    if (!strcmp(argv[i], "--host")) host = argv[++i];
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--workers")) workers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--max-s")) max_s = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--placement")) {
      const char *p = argv[++i];
      if (!strcmp(p, "rr")) placement = WEFT_PLACE_ROUND_ROBIN;
      else if (!strcmp(p, "local")) placement = WEFT_PLACE_LOCAL;
      else usage();
    }
    else usage();
  }
  if (port < 0 || port > 65535 || workers < 0 || max_s < 0) usage();
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
  weft_config cfg = {0};
  cfg.workers = (unsigned)workers;
  weft_runtime *rt;
  int rc = weft_runtime_new(&rt, &cfg);
  if (rc < 0) {
    fprintf(stderr, "echo_server: %s\n", strerror(-rc));
    return 1;
  }
  if (weft_runtime_call(rt, start, NULL) < 0) {
    weft_runtime_shutdown(rt);
    return 1;
  }
  struct timespec limit = {.tv_sec = max_s ? max_s : 365 * 24 * 3600};
  int sig;
  do sig = sigtimedwait(&stop_set, NULL, &limit);
  while (sig < 0 && errno == EINTR);
  weft_runtime_call(rt, stop, NULL);
  weft_runtime_shutdown(rt);
  return 0;
}
