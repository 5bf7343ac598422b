/* bench/peers/uv_bench.c: the timer, blocking-pool and file workloads of
 * BENCHMARKS.md on libuv (a single-threaded callback loop in C, with its
 * default 4-thread pool), for bench/compare.py.
 *
 *     uv_bench WORKLOAD [key=value ...]     WORKLOAD: timers to_thread file_read
 *     uv_bench serve_echo|serve_http port=PORT [max_s=S]
 *
 * Each workload checks its own result (every timer fired `times` times, the
 * sum of the pool's results, every byte count) and exits 1 with "ERROR: ..."
 * on stderr when the work was not done; the last line on stdout is the JSON
 * line of BENCHMARKS.md, system "libuv", workers 1. A bad command line exits 2.
 * The servers listen on 127.0.0.1:PORT until SIGTERM/SIGINT or S seconds
 * (default 60): serve_echo echoes every byte (uv_try_write, a queued
 * uv_write for what does not fit), serve_http answers every HTTP/1.1 request
 * (ended by its blank line) with "Hello, World!", keep-alive.
 * Build: cc -O2 uv_bench.c $(pkg-config --cflags --libs libuv)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define MAX_PARAMS 4

typedef struct param {
  const char *key;
  long value;
} param;

static param P[MAX_PARAMS];
static const char *file_path = "/tmp/weft_bench_file.bin";
static uv_loop_t *loop;

static long get(const char *key) {
  for (int i = 0; i < MAX_PARAMS && P[i].key; i++)
    if (strcmp(P[i].key, key) == 0) return P[i].value;
  fprintf(stderr, "uv_bench: internal: no parameter %s\n", key);
  exit(2);
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

static long rss_kb(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void fail(const char *workload, const char *msg) {
  fprintf(stderr, "ERROR: %s: %s\n", workload, msg);
  exit(1);
}

/* ------------------------------------------------------------ timers */
typedef struct timer_task {
  uv_timer_t t;
  long left;
} timer_task;

static long timers_done;

static void on_timer(uv_timer_t *t) {
  timer_task *tt = (timer_task *)t;
  if (--tt->left == 0) {
    timers_done++;
    uv_close((uv_handle_t *)t, NULL);
  } else {
    uv_timer_start(t, on_timer, (uint64_t)get("ms"), 0);
  }
}

static double run_timers(char *extra, size_t extra_len) {
  long tasks = get("tasks"), ms = get("ms"), times = get("times");
  timer_task *v = calloc((size_t)tasks, sizeof *v);
  if (!v) fail("timers", "out of memory");
  double c0 = cpu_s(), t0 = now_s();
  for (long i = 0; i < tasks; i++) {
    uv_timer_init(loop, &v[i].t);
    v[i].left = times;
    uv_timer_start(&v[i].t, on_timer, (uint64_t)ms, 0);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  double wall = now_s() - t0;
  if (timers_done != tasks) fail("timers", "not every timer task finished");
  snprintf(extra, extra_len, ",\"cpu_s\":%.6f", cpu_s() - c0);
  free(v);
  return wall;
}

/* ------------------------------------------------------------ to_thread */
typedef struct call {
  uv_work_t w;
  long arg, result;
} call;

static long calls_next, calls_total, calls_done;
static long long calls_sum;

static void work_identity(uv_work_t *w) {
  call *c = (call *)w;
  c->result = c->arg;
}

static void after_call(uv_work_t *w, int status);

static void submit_call(call *c) {
  c->arg = calls_next++;
  if (uv_queue_work(loop, &c->w, work_identity, after_call) != 0) fail("to_thread", "uv_queue_work failed");
}

static void after_call(uv_work_t *w, int status) {
  call *c = (call *)w;
  if (status != 0) fail("to_thread", "a call was cancelled");
  calls_sum += c->result;
  calls_done++;
  if (calls_next < calls_total) submit_call(c);
}

static double run_to_thread(char *extra, size_t extra_len) {
  calls_total = get("calls");
  long conc = get("concurrency");
  if (conc < 1) conc = 1;
  call *v = calloc((size_t)conc, sizeof *v);
  if (!v) fail("to_thread", "out of memory");
  double t0 = now_s();
  for (long i = 0; i < conc && calls_next < calls_total; i++) submit_call(&v[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  double wall = now_s() - t0;
  if (calls_done != calls_total || calls_sum != (long long)calls_total * (calls_total - 1) / 2)
    fail("to_thread", "the sum of the results is wrong");
  free(v);
  (void)extra;
  (void)extra_len;
  return wall;
}

/* ------------------------------------------------------------ file_read */
typedef struct reader {
  uv_fs_t req;
  char *buf;
} reader;

static long reads_left, reads_block, reads_nblocks;
static long long bytes_read;
static int file_fd;
static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void on_read(uv_fs_t *req);

static void submit_read(reader *r) {
  reads_left--;
  int64_t off = (int64_t)(next_rand() % (uint64_t)reads_nblocks) * reads_block;
  uv_buf_t b = uv_buf_init(r->buf, (unsigned)reads_block);
  if (uv_fs_read(loop, &r->req, file_fd, &b, 1, off, on_read) != 0) fail("file_read", "uv_fs_read failed");
}

static void on_read(uv_fs_t *req) {
  reader *r = (reader *)req;
  if (req->result != reads_block) fail("file_read", "a short or failed read");
  bytes_read += req->result;
  uv_fs_req_cleanup(req);
  if (reads_left > 0) submit_read(r);
}

static double run_file_read(char *extra, size_t extra_len) {
  long tasks = get("tasks"), size = get("size_mb") << 20, reads = get("reads");
  reads_block = get("block_kb") << 10;
  if (reads_block <= 0 || size < reads_block) fail("file_read", "block_kb must be > 0 and fit in size_mb");
  reads_nblocks = size / reads_block;
  file_fd = open(file_path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (file_fd < 0 || fstat(file_fd, &st) != 0 || st.st_size < size) fail("file_read", "the input file is missing or too small");
  reads_left = reads;
  reader *v = calloc((size_t)tasks, sizeof *v);
  if (!v) fail("file_read", "out of memory");
  for (long i = 0; i < tasks; i++)
    if (!(v[i].buf = malloc((size_t)reads_block))) fail("file_read", "out of memory");
  double t0 = now_s();
  for (long i = 0; i < tasks && reads_left > 0; i++) submit_read(&v[i]);
  uv_run(loop, UV_RUN_DEFAULT);
  double wall = now_s() - t0;
  if (bytes_read != (long long)reads * reads_block) fail("file_read", "byte count is wrong");
  for (long i = 0; i < tasks; i++) free(v[i].buf);
  free(v);
  close(file_fd);
  (void)extra;
  (void)extra_len;
  return wall;
}


/* ------------------------------------------------------------ servers */
static const char HTTP_RESPONSE[] = "HTTP/1.1 200 OK\r\nServer: uv_bench\r\nContent-Type: text/plain\r\n"
                                    "Content-Length: 13\r\n\r\nHello, World!";
static int serving_http;

typedef struct client {
  uv_tcp_t tcp;
  int crlf;         /* http: how much of "\r\n\r\n" the last bytes matched */
  char buf[65536];
} client;

typedef struct write_req {
  uv_write_t req;
  char *data;
} write_req;

static void on_closed(uv_handle_t *h) { free(h); }

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  client *c = (client *)h;
  (void)hint;
  *b = uv_buf_init(c->buf, sizeof c->buf);
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  (void)status;
  free(w->data);
  free(w);
}

/* Write len bytes now as far as the socket takes them, queue the rest. */
static void send_bytes(client *c, const char *data, size_t len) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  if (n < 0) n = 0;
  if ((size_t)n == len) return;
  write_req *w = malloc(sizeof *w);
  char *copy = malloc(len - (size_t)n);
  if (!w || !copy) {
    fprintf(stderr, "uv_bench: out of memory\n");
    exit(1);
  }
  memcpy(copy, data + n, len - (size_t)n);
  w->data = copy;
  b = uv_buf_init(copy, (unsigned)(len - (size_t)n));
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) on_written(&w->req, -1);
}

static void on_data(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  client *c = (client *)s;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_closed);
    return;
  }
  if (!serving_http) {
    send_bytes(c, b->base, (size_t)n);
    return;
  }
  static const char END[] = "\r\n\r\n";
  size_t requests = 0;
  for (ssize_t i = 0; i < n; i++) {
    char ch = b->base[i];
    c->crlf = ch == END[c->crlf] ? c->crlf + 1 : (ch == '\r' ? 1 : 0);
    if (c->crlf == 4) {
      requests++;
      c->crlf = 0;
    }
  }
  if (requests == 1) {
    send_bytes(c, HTTP_RESPONSE, sizeof HTTP_RESPONSE - 1);
  } else if (requests > 1) { /* pipelined: one write for all the answers */
    size_t one = sizeof HTTP_RESPONSE - 1;
    char *all = malloc(one * requests);
    if (!all) exit(1);
    for (size_t r = 0; r < requests; r++) memcpy(all + r * one, HTTP_RESPONSE, one);
    send_bytes(c, all, one * requests);
    free(all);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  client *c = calloc(1, sizeof *c);
  if (!c) exit(1);
  uv_tcp_init(loop, &c->tcp);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_data);
}

static void on_stop(uv_signal_t *sig, int signum) {
  (void)signum;
  uv_stop(sig->loop);
}

static void on_deadline(uv_timer_t *t) { uv_stop(t->loop); }

static int serve(int http, long port, long max_s) {
  serving_http = http;
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  uv_tcp_init(loop, &server);
  int rc = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
  if (rc != 0) {
    fprintf(stderr, "ERROR: uv_bench: listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
    return 1;
  }
  uv_signal_t term, intr;
  uv_timer_t deadline;
  uv_signal_init(loop, &term);
  uv_signal_init(loop, &intr);
  uv_signal_start(&term, on_stop, SIGTERM);
  uv_signal_start(&intr, on_stop, SIGINT);
  uv_timer_init(loop, &deadline);
  uv_timer_start(&deadline, on_deadline, (uint64_t)max_s * 1000, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}

static int serve_main(int argc, char **argv) {
  long port = -1, max_s = 60;
  for (int a = 2; a < argc; a++) {
    char *end;
    if (strncmp(argv[a], "port=", 5) == 0) {
      port = strtol(argv[a] + 5, &end, 10);
      if (*end || port <= 0 || port > 65535) port = -1;
    } else if (strncmp(argv[a], "max_s=", 6) == 0) {
      max_s = strtol(argv[a] + 6, &end, 10);
      if (*end || max_s < 1) max_s = -1;
    } else if (strncmp(argv[a], "workers=", 8) != 0) {
      port = -1;
    }
  }
  if (port < 0 || max_s < 0) {
    fprintf(stderr, "usage: uv_bench serve_echo|serve_http port=PORT [max_s=S]\n");
    return 2;
  }
  loop = uv_default_loop();
  return serve(strcmp(argv[1], "serve_http") == 0, port, max_s);
}

/* ------------------------------------------------------------ main */
typedef struct workload {
  const char *name, *unit;
  double (*run)(char *extra, size_t extra_len); /* returns wall seconds */
  param defaults[MAX_PARAMS];
} workload;

static const workload WORKLOADS[] = {
    {"timers", "x_ideal", run_timers, {{"tasks", 100000}, {"ms", 10}, {"times", 10}}},
    {"to_thread", "calls/s", run_to_thread, {{"calls", 100000}, {"concurrency", 64}}},
    {"file_read", "GB/s", run_file_read, {{"tasks", 64}, {"size_mb", 256}, {"block_kb", 64}, {"reads", 200000}}},
};

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "serve_echo") == 0 || strcmp(argv[1], "serve_http") == 0))
    return serve_main(argc, argv);
  const workload *w = NULL;
  for (size_t i = 0; argc > 1 && i < sizeof WORKLOADS / sizeof *WORKLOADS; i++)
    if (strcmp(argv[1], WORKLOADS[i].name) == 0) w = &WORKLOADS[i];
  if (!w) {
    fprintf(stderr, "usage: uv_bench timers|to_thread|file_read [key=value ...]\n"
                    "       uv_bench serve_echo|serve_http port=PORT [max_s=S]\n");
    return 2;
  }
  memcpy(P, w->defaults, sizeof P);
  for (int a = 2; a < argc; a++) {
    char *eq = strchr(argv[a], '=');
    if (!eq) {
      fprintf(stderr, "uv_bench: bad argument %s (want key=value)\n", argv[a]);
      return 2;
    }
    size_t klen = (size_t)(eq - argv[a]);
    if (klen == 4 && strncmp(argv[a], "file", 4) == 0) {
      file_path = eq + 1;
      continue;
    }
    if (klen == 7 && strncmp(argv[a], "workers", 7) == 0) continue; /* one loop: accepted, reported as 1 */
    int known = 0;
    for (int i = 0; i < MAX_PARAMS && P[i].key; i++) {
      if (strlen(P[i].key) == klen && strncmp(argv[a], P[i].key, klen) == 0) {
        char *end;
        long v = strtol(eq + 1, &end, 10);
        if (*end || end == eq + 1 || v < 0) {
          fprintf(stderr, "uv_bench: %s must be a non-negative integer\n", P[i].key);
          return 2;
        }
        P[i].value = v;
        known = 1;
      }
    }
    if (!known) {
      fprintf(stderr, "uv_bench: unknown parameter %.*s for %s\n", (int)klen, argv[a], w->name);
      return 2;
    }
  }
  loop = uv_default_loop();
  char extra[128] = "";
  double wall = w->run(extra, sizeof extra);
  double value;
  if (strcmp(w->name, "timers") == 0)
    value = wall / ((double)get("ms") * (double)get("times") / 1000.0);
  else if (strcmp(w->name, "to_thread") == 0)
    value = (double)get("calls") / wall;
  else
    value = (double)bytes_read / wall / 1e9;
  char params[160];
  size_t len = 0;
  params[0] = 0;
  for (int i = 0; i < MAX_PARAMS && P[i].key; i++)
    len += (size_t)snprintf(params + len, sizeof params - len, "%s%s=%ld", i ? " " : "", P[i].key, P[i].value);
  printf("{\"workload\":\"%s\",\"system\":\"libuv\",\"workers\":1,\"value\":%.6g,\"unit\":\"%s\",\"wall_s\":%.6f,"
         "\"rss_kb\":%ld,\"params\":\"%s\"%s}\n",
         w->name, value, w->unit, wall, rss_kb(), params, extra);
  uv_loop_close(loop);
  return 0;
}
