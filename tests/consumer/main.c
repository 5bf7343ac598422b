/* tests/consumer/main.c: a program that uses an installed weft as any user
 * would (public headers only), built four ways by scripts/test_consumer.sh:
 * find_package(weft) and pkg-config, each against libweft.so and libweft.a.
 *
 * It checks two things:
 *  1. the runtime works: the main task spawns NTASKS tasks, joins them and
 *     prints the sum of their results;
 *  2. the host keeps its own malloc: jemalloc and liburing live inside libweft
 *     with their symbols local. The program is linked with --export-dynamic
 *     (ENABLE_EXPORTS / -rdynamic), so every global symbol of the executable
 *     is visible to dlsym: had libweft.a leaked jemalloc's symbols into the
 *     program, dlsym(RTLD_DEFAULT, "mallctl") would find it and "malloc"
 *     would resolve to the executable instead of libc. The same holds for
 *     libweft.so, whose exports the dynamic linker would find.
 * Exit status: 0 ok, 1 failure, 77 skip (the runtime cannot start here). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/weft.h>

#define NTASKS 64

static int square(void *arg) {
  long i = (long)arg;
  weft_yield(); /* suspend once, so the task may resume on another worker */
  return (int)(i * i);
}

static int main_task(void *arg) {
  long *sum = arg;
  weft_task t[NTASKS];
  for (long i = 0; i < NTASKS; i++) {
    t[i] = weft_spawn(square, (void *)i);
    if (weft_task_is_null(t[i])) {
      fprintf(stderr, "consumer: weft_spawn: %s\n", strerror(errno));
      return -ENOMEM;
    }
  }
  for (long i = 0; i < NTASKS; i++) {
    int r = weft_join(t[i]);
    if (r < 0) return r;
    *sum += r;
    weft_task_release(t[i]);
  }
  printf("consumer: backend %s, %d workers\n", weft_backend_name(weft_backend()), weft_worker_count());
  return 0;
}

/* The host's malloc must be glibc's, not the jemalloc inside libweft. */
static int check_host_malloc(void) {
  int bad = 0;
  void *mallctl = dlsym(RTLD_DEFAULT, "mallctl");
  if (mallctl) {
    Dl_info di;
    const char *where = dladdr(mallctl, &di) && di.dli_fname ? di.dli_fname : "?";
    fprintf(stderr, "consumer: FAIL: mallctl (jemalloc) is visible to the program, in %s\n", where);
    bad = 1;
  }
  void *m = dlsym(RTLD_DEFAULT, "malloc");
  Dl_info di;
  if (!m || !dladdr(m, &di) || !di.dli_fname || !strstr(di.dli_fname, "libc.so")) {
    fprintf(stderr, "consumer: FAIL: malloc resolves to %s, not libc\n",
            m && dladdr(m, &di) && di.dli_fname ? di.dli_fname : "(nothing)");
    bad = 1;
  }
  /* And the program's own allocations still work, interleaved with weft's. */
  char *p = malloc(100);
  if (!p) return 1;
  strcpy(p, "host");
  free(p);
  return bad;
}

int main(void) {
  if (strcmp(WEFT_VERSION_STRING, "") == 0) return 1;
  if (check_host_malloc()) return 1;

  long sum = 0;
  int r = weft_run(main_task, &sum, NULL);
  if (r == -ENOSYS || r == -EPERM) {
    fprintf(stderr, "consumer: SKIP: the runtime cannot start here (%s)\n", strerror(-r));
    return 77;
  }
  if (r != 0) {
    fprintf(stderr, "consumer: FAIL: weft_run returned %d (%s)\n", r, strerror(-r));
    return 1;
  }
  long want = 0;
  for (long i = 0; i < NTASKS; i++) want += i * i;
  printf("consumer: weft %s: sum of squares 0..%d = %ld\n", WEFT_VERSION_STRING, NTASKS - 1, sum);
  if (sum != want) {
    fprintf(stderr, "consumer: FAIL: expected %ld\n", want);
    return 1;
  }
  if (check_host_malloc()) return 1;
  printf("consumer: ok (host malloc is libc's)\n");
  return 0;
}
