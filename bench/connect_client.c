/* bench/connect_client.c: a connection-rate load for the accept path (not
 * a BENCHMARKS.md workload: docs/io-choices.md's multishot accept row).
 *
 *     connect_client port=PORT [threads=4] [seconds=3]
 *
 * Each thread, for `seconds`: connect to 127.0.0.1:PORT (blocking), send
 * one byte, wait for its echo, close; repeat. Prints
 * {"connections": N, "seconds": S, "value": N/S} and exits 1 if a
 * connection failed (refused, reset, a wrong byte). Pair it with the echo
 * server and bench/server_cpu.py's CPU counting, or `ps -o cputime`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long port = -1, nthreads = 4, seconds = 3;
static double end_s;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
  pthread_t th;
  long done, failed;
} worker;

static void *run(void *arg) {
  worker *w = arg;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (now_s() < end_s) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char b = (char)w->done, r = 0;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || write(fd, &b, 1) != 1 ||
        read(fd, &r, 1) != 1 || r != b) {
      w->failed++;
    } else {
      w->done++;
    }
    if (fd >= 0) close(fd);
  }
  return NULL;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    char *v = strchr(argv[i], '=');
    if (!v) goto usage;
    long x = strtol(v + 1, NULL, 10);
    if (!strncmp(argv[i], "port=", 5)) port = x;
    else if (!strncmp(argv[i], "threads=", 8)) nthreads = x;
    else if (!strncmp(argv[i], "seconds=", 8)) seconds = x;
    else goto usage;
  }
  if (port <= 0 || port > 65535 || nthreads < 1 || nthreads > 256 || seconds < 1) goto usage;
  worker *ws = calloc((size_t)nthreads, sizeof *ws);
  double t0 = now_s();
  end_s = t0 + (double)seconds;
  for (long i = 0; i < nthreads; i++) pthread_create(&ws[i].th, NULL, run, &ws[i]);
  long done = 0, failed = 0;
  for (long i = 0; i < nthreads; i++) {
    pthread_join(ws[i].th, NULL);
    done += ws[i].done;
    failed += ws[i].failed;
  }
  double el = now_s() - t0;
  printf("{\"connections\": %ld, \"seconds\": %.3f, \"value\": %.1f}\n", done, el, (double)done / el);
  if (failed) {
    fprintf(stderr, "ERROR: %ld connections failed\n", failed);
    return 1;
  }
  return 0;
usage:
  fprintf(stderr, "usage: connect_client port=PORT [threads=4] [seconds=3]\n");
  return 2;
}
