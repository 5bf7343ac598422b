/* examples/server_main.h: the main() the server examples share (echo_server,
 * echo_proto, http_hello, https_hello): flags, a clean stop on SIGINT/SIGTERM, the
 * runtime, the server.
 *
 *     NAME [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]
 *          [--cert PEM --key PEM]      (required when the example serves TLS)
 *
 * Listens on H:P (default 127.0.0.1 and the example's port), one handler task
 * per connection (or, with a protocol factory, one protocol and its driver
 * task per connection), on N workers (default: the CPUs available). Stopping: the
 * main thread blocks SIGINT and SIGTERM before the runtime starts (so every
 * worker inherits the mask) and waits for them with sigtimedwait (or S
 * seconds); then it shuts the server down (new connections refused,
 * handlers given 2 s, then cancelled) and the runtime. A header, not a
 * library: each example stays one program built from public headers only.
 */
#ifndef WEFT_EXAMPLES_SERVER_MAIN_H
#define WEFT_EXAMPLES_SERVER_MAIN_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/weft.h>

typedef struct example_server {
  const char *name;     /* the program, for messages */
  int port;             /* the default port */
  weft_conn_fn handler; /* one task per connection */
  weft_protocol_factory factory; /* instead of handler: a protocol per connection (weft/protocol.h) */
  bool tls;             /* TLS (--cert and --key required), ALPN http/1.1 */
} example_server;

static const example_server *ex_spec;
static const char *ex_host = "127.0.0.1", *ex_cert, *ex_key;
static int ex_port, ex_workers, ex_max_s, ex_placement = WEFT_PLACE_ROUND_ROBIN;
static weft_server *ex_server;
static weft_tls_ctx *ex_tls;

static int ex_start(void *arg) {
  (void)arg;
  weft_server_opts opts = {.placement = ex_placement};
  if (ex_spec->tls) {
    weft_tls_opts o = {.cert_file = ex_cert, .key_file = ex_key, .alpn = "http/1.1",
                       .handshake_timeout_ns = 10000000000LL}; /* a stalled handshake is reset after 10 s */
    int rc = weft_tls_ctx_new(&ex_tls, true, &o);
    if (rc < 0) {
      fprintf(stderr, "%s: bad certificate or key (%s; WEFT_DEBUG=1 prints OpenSSL's reason)\n", ex_spec->name,
              strerror(-rc));
      return rc;
    }
    opts.tls = ex_tls;
  }
  int rc = ex_spec->factory
               ? weft_create_server(&ex_server, ex_host, (uint16_t)ex_port, ex_spec->factory, NULL, &opts)
               : weft_start_server(&ex_server, ex_host, (uint16_t)ex_port, ex_spec->handler, NULL, &opts);
  if (rc < 0) fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", ex_spec->name, ex_host, ex_port, strerror(-rc));
  return rc;
}

static int ex_stop(void *arg) {
  (void)arg;
  int cancelled = weft_server_shutdown(ex_server, weft_now_ns() + 2000000000LL);
  weft_server_free(ex_server);
  return cancelled;
}

static void ex_usage(void) {
  fprintf(stderr, "usage: %s%s [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]\n",
          ex_spec->name, ex_spec->tls ? " --cert PEM --key PEM" : "");
  exit(2);
}

/* A flag's integer value in [lo, hi], or the usage and exit 2 (no silent 0
 * for "abc", as atoi would give). */
static int ex_int(const char *flag, const char *value, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(value, &end, 10);
  if (errno || end == value || *end || v < lo || v > hi) {
    fprintf(stderr, "%s: %s wants an integer from %ld to %ld, not \"%s\"\n", ex_spec->name, flag, lo, hi, value);
    ex_usage();
  }
  return (int)v;
}

static int example_server_main(const example_server *spec, int argc, char **argv) {
  ex_spec = spec;
  ex_port = spec->port;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc) ex_usage();
    const char *flag = argv[i], *value = argv[++i];
    if (!strcmp(flag, "--host")) ex_host = value;
    else if (!strcmp(flag, "--port")) ex_port = ex_int(flag, value, 0, 65535);
    else if (!strcmp(flag, "--workers")) ex_workers = ex_int(flag, value, 0, 126); /* weft_config.workers: at most 126 */
    else if (!strcmp(flag, "--max-s")) ex_max_s = ex_int(flag, value, 0, 1000000000);
    else if (!strcmp(flag, "--placement") && !strcmp(value, "rr")) ex_placement = WEFT_PLACE_ROUND_ROBIN;
    else if (!strcmp(flag, "--placement") && !strcmp(value, "local")) ex_placement = WEFT_PLACE_LOCAL;
    else if (!strcmp(flag, "--cert") && spec->tls) ex_cert = value;
    else if (!strcmp(flag, "--key") && spec->tls) ex_key = value;
    else ex_usage();
  }
  if (spec->tls && (!ex_cert || !ex_key)) ex_usage();
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
  weft_config cfg = {0};
  cfg.workers = (unsigned)ex_workers;
  weft_runtime *rt;
  int rc = weft_runtime_new(&rt, &cfg);
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", spec->name, strerror(-rc));
    return 1;
  }
  if (weft_runtime_call(rt, ex_start, NULL) < 0) {
    weft_runtime_shutdown(rt);
    weft_tls_ctx_free(ex_tls);
    return 1;
  }
  struct timespec limit = {.tv_sec = ex_max_s ? ex_max_s : 365 * 24 * 3600};
  int sig;
  do sig = sigtimedwait(&stop_set, NULL, &limit);
  while (sig < 0 && errno == EINTR);
  weft_runtime_call(rt, ex_stop, NULL);
  weft_runtime_shutdown(rt);
  weft_tls_ctx_free(ex_tls); /* after the runtime: no stream uses it any more */
  return 0;
}

#endif
