/* examples/https_hello.c: examples/http_hello.c over TLS: an HTTP/1.1
 * keep-alive server that answers every request with "Hello, World!", each
 * connection a TLS stream (weft/tls.h: the server's opts.tls; ALPN
 * "http/1.1"). The handler is http_hello's, unchanged.
 *
 *     https_hello --cert PEM --key PEM [--host H] [--port P] [--workers N] [--max-s S]
 *
 * A client whose TLS handshake fails or stalls for 10 s is reset without
 * reaching the handler.
 *
 * A request ends at its blank line (bodies are not read: the workload sends
 * none); pipelined requests are answered in order, each with its own
 * response, as the reader hands them out one at a time. A client silent
 * for 30 s is dropped. A request head
 * longer than 8 KiB gets "431" and the connection is closed; a client that
 * closes mid-request is dropped. Signals and shutdown as in echo_server.c:
 * SIGINT/SIGTERM are blocked before the runtime starts and awaited with
 * sigtimedwait by the main thread, which then shuts the server down.
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
static int port = 8080, workers = 0, max_s = 0;
static weft_server *server;
static const char *cert, *key;
static weft_tls_ctx *tls;

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nServer: weft\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\n\r\nHello, World!";
static const char TOO_LARGE[] = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n";

static int serve(weft_stream *s, void *arg) {
  (void)arg;
  weft_set_nodelay(weft_stream_fd(s), true);
  weft_stream_set_limit(s, 8192);
  weft_stream_set_timeout(s, 30 * 1000000000LL); /* an idle client is dropped after 30 s */
  char head[8192];
  for (;;) {
    ssize_t n = weft_stream_readuntil(s, "\r\n\r\n", 4, head, sizeof head, NULL);
    if (n == -ENOBUFS) {
      weft_stream_write(s, TOO_LARGE, sizeof TOO_LARGE - 1);
      return 0; /* the server flushes and closes */
    }
    if (n < 0) return 0; /* end of stream (maybe mid-request), reset, cancelled */
    if (weft_stream_write(s, RESPONSE, sizeof RESPONSE - 1) < 0) return 0;
    if (weft_stream_buffered(s) && weft_stream_drain(s) < 0) return 0;
  }
}

static int start(void *arg) {
  (void)arg;
  weft_tls_opts o = {.cert_file = cert, .key_file = key, .alpn = "http/1.1", .handshake_timeout_ns = 10000000000LL};
  int rc = weft_tls_ctx_new(&tls, true, &o);
  if (rc < 0) {
    fprintf(stderr, "https_hello: bad certificate or key (%s; WEFT_DEBUG=1 prints OpenSSL's reason)\n", strerror(-rc));
    return rc;
  }
  rc = weft_start_server(&server, host, (uint16_t)port, serve, NULL, &(weft_server_opts){.tls = tls});
  if (rc < 0) fprintf(stderr, "https_hello: cannot listen on %s:%d: %s\n", host, port, strerror(-rc));
  return rc;
}

static int stop(void *arg) {
  (void)arg;
  int cancelled = weft_server_shutdown(server, weft_now_ns() + 2000000000LL);
  weft_server_free(server);
  weft_tls_ctx_free(tls);
  return cancelled;
}

static void usage(void) {
  fprintf(stderr, "usage: https_hello --cert PEM --key PEM [--host H] [--port P] [--workers N] [--max-s S]\n");
  exit(2);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) usage();
    if (!strcmp(argv[i], "--host")) host = argv[++i];
    else if (!strcmp(argv[i], "--port")) port = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--workers")) workers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--max-s")) max_s = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--cert")) cert = argv[++i];
    else if (!strcmp(argv[i], "--key")) key = argv[++i];
    else usage();
  }
  if (!cert || !key || port < 0 || port > 65535 || workers < 0 || max_s < 0) usage();
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
    fprintf(stderr, "https_hello: %s\n", strerror(-rc));
    return 1;
  }
  if (weft_runtime_call(rt, start, NULL) < 0) {
    weft_tls_ctx_free(tls);
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
