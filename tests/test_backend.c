/* tests/test_backend.c: the backend choice where io_uring is refused
 * (issue 5, item 5). Each test runs in its own forked process (tests/test.h),
 * so a seccomp filter installed here refuses io_uring_setup to that test
 * alone, before anything in the process has probed for io_uring: the
 * situation of a program started under a container's seccomp profile
 * (EPERM), or on a kernel built without io_uring (ENOSYS). The suite's
 * WEFT_BACKEND is unset first: these tests are about the automatic choice. */
#include <fcntl.h>
#include <stddef.h>
#include <sys/syscall.h>

#include <weft/core.h>
#include <weft/io.h>

#include "seccomp_util.h"
#include "test.h"

/* Make io_uring_setup fail with err in this process from now on. */
static void refuse_io_uring(int err) { refuse_syscall(__NR_io_uring_setup, err, 4, 0, 0); }

/* stderr into a temporary file until restore_stderr; returns the saved fd. */
static int capture_stderr(FILE **file) {
  fflush(stderr);
  *file = tmpfile();
  ASSERT_TRUE(*file != NULL);
  int saved = dup(2);
  ASSERT_TRUE(saved >= 0);
  ASSERT_EQ(dup2(fileno(*file), 2), 2);
  return saved;
}

/* Restore stderr; returns what was written meanwhile (static buffer). */
static const char *restore_stderr(int saved, FILE *file) {
  static char text[4096];
  fflush(stderr);
  ASSERT_EQ(dup2(saved, 2), 2);
  close(saved);
  rewind(file);
  size_t n = fread(text, 1, sizeof text - 1, file);
  text[n] = 0;
  fclose(file);
  return text;
}

/* The main task: the backend it runs on, and proof that I/O works there (a
 * pipe read that must wait for its writer, and a file read). */
static int backend_seen;
static int writer(void *arg) {
  int fd = (int)(intptr_t)arg;
  weft_sleep_ns(2000000);
  return (int)weft_write(fd, "ping", 4);
}
static int io_main(void *arg) {
  (void)arg;
  backend_seen = weft_backend();
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -errno;
  weft_task w = weft_spawn(writer, (void *)(intptr_t)p[1]);
  char buf[8] = {0};
  ssize_t n = weft_read(p[0], buf, sizeof buf);
  int wst = weft_join(w);
  weft_task_release(w);
  weft_close(p[0]);
  weft_close(p[1]);
  if (n != 4 || memcmp(buf, "ping", 4) != 0 || wst != 4) return -EIO;
  char self[4096];
  ssize_t m = weft_read_file("/proc/self/stat", self, sizeof self); /* a short file: it fits */
  return m > 0 ? 0 : (int)(m < 0 ? m : -EIO);
}

/* AUTO with io_uring_setup refused by err: epoll, said once on stderr. */
static void falls_back(int err) {
  unsetenv("WEFT_BACKEND");
  refuse_io_uring(err);
  FILE *f;
  int saved = capture_stderr(&f);
  int rc = weft_run(io_main, NULL, NULL);
  int rc2 = weft_run(io_main, NULL, NULL); /* a second runtime: no second report */
  const char *text = restore_stderr(saved, f);
  fputs(text, stderr);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(rc2, 0);
  ASSERT_EQ(backend_seen, WEFT_BACKEND_EPOLL);
  ASSERT_TRUE(strstr(text, "weft: backend epoll (io_uring unavailable here)") != NULL);
  const char *first = strstr(text, "weft: backend");
  ASSERT_TRUE(strstr(first + 1, "weft: backend") == NULL); /* reported once per process */
}

TEST(auto_falls_back_to_epoll_when_seccomp_refuses_io_uring) { falls_back(EPERM); }

TEST(auto_falls_back_to_epoll_when_the_kernel_has_no_io_uring) { falls_back(ENOSYS); }

TEST(an_explicit_runtime_reports_the_backend_it_chose) {
  unsetenv("WEFT_BACKEND");
  refuse_io_uring(EPERM);
  weft_runtime *rt = NULL;
  weft_config cfg = {.workers = 2, .backend = WEFT_BACKEND_AUTO};
  ASSERT_EQ(weft_runtime_new(&rt, &cfg), 0);
  ASSERT_EQ(weft_runtime_backend(rt), WEFT_BACKEND_EPOLL);
  ASSERT_EQ(weft_runtime_call(rt, io_main, NULL), 0);
  ASSERT_EQ(backend_seen, WEFT_BACKEND_EPOLL);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
}

/* Asking for io_uring where it is refused is an error, not a silent
 * fallback; the configuration and the environment both ask. */
TEST(asking_for_io_uring_where_it_is_refused_is_an_error) {
  unsetenv("WEFT_BACKEND");
  refuse_io_uring(EPERM);
  weft_config cfg = {.backend = WEFT_BACKEND_URING};
  ASSERT_EQ(weft_run(io_main, NULL, &cfg), -EPERM);
  setenv("WEFT_BACKEND", "uring", 1);
  ASSERT_EQ(weft_run(io_main, NULL, NULL), -EPERM);
  /* and the environment's epoll wins over a configuration's io_uring */
  setenv("WEFT_BACKEND", "epoll", 1);
  ASSERT_EQ(weft_run(io_main, NULL, &cfg), 0);
  ASSERT_EQ(backend_seen, WEFT_BACKEND_EPOLL);
}

TEST_MAIN()
