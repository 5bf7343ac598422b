/* tests/test_util.h: small helpers that many weft tests share (the harness
 * itself is tests/test.h, which knows nothing of weft). */
#ifndef WEFT_TESTS_TEST_UTIL_H
#define WEFT_TESTS_TEST_UTIL_H

#include <dirent.h>

#include <weft/core.h>

/* A configuration with n workers, every other field default. */
static inline weft_config cfg_workers(unsigned n) {
  weft_config c = {0};
  c.workers = n;
  return c;
}

/* Open descriptors of this process (the directory's own excluded): tests
 * compare it before and after, so that no error path leaks one. */
static inline int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

#endif
