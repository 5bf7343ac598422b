/* tests/test_process.c: subprocesses: exec and shell, every stdio
 * combination, large outputs on both pipes, large input, exit codes and
 * signal deaths, a child that ignores SIGTERM, many concurrent children
 * across the workers (no zombie, no leaked descriptor), communicate's
 * cancellation and timeout, spawn errors, environment, working directory,
 * process groups, descriptors inherited, -EPIPE on a dead child's stdin,
 * closing stdout (close_pipe, free) while a task reads it, aborting stdin
 * while a task waits to write it (-ECONNRESET at once), the return code
 * of a child that exited without a wait, no inherited descriptor where
 * close_range is refused. Run on whichever backend WEFT_BACKEND names. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <weft/weft.h>

#include "core/task.h"
#include "seccomp_util.h"
#include "test.h"
#include "test_util.h"

#define MIB (1024 * 1024)

static void list_fds(const char *when) {
  char cmd[64];
  snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd >&2", (int)getpid());
  fprintf(stderr, "%s:\n", when);
  if (system(cmd)) {}
}

/* The descriptors the runtime opens lazily (the blocking pool's first
 * use opens an eventfd) exist before a test counts. */
static void warm_up(void) {
  weft_process *p;
  char *a[] = {"/bin/true", NULL};
  int rc;
  if (weft_process_exec(&p, a[0], a, NULL) || weft_process_wait(p, &rc) || rc) TEST_FAIL("warm-up");
  weft_process_free(p);
}

/* Children of this process, and how many of them are zombies. */
static int count_children(int *zombies) {
  DIR *d = opendir("/proc");
  int n = 0, z = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *rp = strrchr(buf, ')');
    char state;
    int ppid;
    if (!rp || sscanf(rp + 2, "%c %d", &state, &ppid) != 2) continue;
    if (ppid == getpid()) {
      n++;
      z += state == 'Z';
    }
  }
  closedir(d);
  if (zombies) *zombies = z;
  return n;
}

static int run(weft_fn fn, unsigned workers) {
  weft_config c = {0};
  c.workers = workers;
  return weft_run(fn, NULL, &c);
}

static int shell_rc(const char *cmd, int *rc) {
  weft_process *p;
  int e = weft_process_shell(&p, cmd, NULL);
  if (e) return e;
  e = weft_process_wait(p, rc);
  weft_process_free(p);
  return e;
}

/* ------------------------------------------------------------ basics */

static int basics_main(void *arg) {
  int rc = 99;
  char *t[] = {"true", NULL}, *f[] = {"/bin/false", NULL};
  weft_process *p;
  ASSERT_EQ(weft_process_exec(&p, "true", t, NULL), 0); /* PATH search */
  ASSERT_GT(weft_process_pid(p), 0);
  int now = weft_process_returncode(p, &rc); /* true may have exited (and is reaped) already */
  ASSERT_TRUE(now == -EBUSY || (now == 0 && rc == 0));
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0); /* again: at once */
  ASSERT_EQ(weft_process_returncode(p, &rc), 0);
  ASSERT_EQ(weft_process_send_signal(p, SIGTERM), -ESRCH);
  ASSERT_EQ(weft_process_free(p), 0);
  ASSERT_EQ(weft_process_exec(&p, "/bin/false", f, NULL), 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, 1);
  weft_process_free(p);
  ASSERT_EQ(shell_rc("exit 7", &rc), 0);
  ASSERT_EQ(rc, 7);
  ASSERT_EQ(shell_rc("kill -TERM $$", &rc), 0);
  ASSERT_EQ(rc, -SIGTERM);
  ASSERT_EQ(shell_rc("kill -KILL $$", &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  /* terminate and kill from the parent */
  char *sl[] = {"sleep", "10", NULL};
  ASSERT_EQ(weft_process_exec(&p, "sleep", sl, NULL), 0);
  ASSERT_EQ(weft_process_terminate(p), 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, -SIGTERM);
  weft_process_free(p);
  ASSERT_EQ(weft_process_exec(&p, "sleep", sl, NULL), 0);
  ASSERT_EQ(weft_process_send_signal(p, 0), 0);
  ASSERT_EQ(weft_process_send_signal(p, 65), -EINVAL);
  ASSERT_EQ(weft_process_kill(p), 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(p);
  /* the shell with pipes */
  weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE, .stderr_mode = WEFT_STDIO_PIPE};
  ASSERT_EQ(weft_process_shell(&p, "echo hello; echo oops >&2; exit 3", &o), 0);
  char out[64], err[64];
  weft_communicate c = {.out = out, .out_cap = sizeof out, .err = err, .err_cap = sizeof err};
  ASSERT_EQ(weft_process_communicate(p, &c), 0);
  ASSERT_EQ(c.returncode, 3);
  ASSERT_EQ(c.out_len, 6);
  ASSERT_TRUE(!memcmp(out, "hello\n", 6));
  ASSERT_EQ(c.err_len, 5);
  ASSERT_TRUE(!memcmp(err, "oops\n", 5));
  weft_process_free(p);
  return 0;
}

TEST(exec_shell_exit_codes_signals) { ASSERT_EQ(run(basics_main, 2), 0); }

/* ------------------------------------------------------------ many waiters */

static int waiter_task(void *arg) {
  int rc = -1;
  int e = weft_process_wait(arg, &rc);
  return e ? e : rc;
}

static int waiters_main(void *arg) {
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "sleep 0.2; exit 9", NULL), 0);
  weft_task t[8];
  for (int i = 0; i < 8; i++) t[i] = weft_spawn(waiter_task, p);
  for (int i = 0; i < 8; i++) {
    ASSERT_EQ(weft_join(t[i]), 9); /* every waiter sees the one status */
    weft_task_release(t[i]);
  }
  weft_process_free(p);
  return 0;
}

TEST(many_tasks_wait_for_one_child) { ASSERT_EQ(run(waiters_main, 4), 0); }

/* asyncio's Process.returncode is None while the child runs and its
 * status once it has exited, whether or not anyone awaited wait()
 * (weft/process.h: -EBUSY is "Python's None"). It stayed -EBUSY for ever
 * here until a wait reaped the child (found by review: a loop polling
 * returncode, as a Python program may, never ended). */
static int returncode_main(void *arg) {
  weft_process *p;
  int rc = 99;
  char *t[] = {"true", NULL};
  ASSERT_EQ(weft_process_exec(&p, "true", t, NULL), 0);
  for (int i = 0; i < 500 && weft_process_returncode(p, &rc) == -EBUSY; i++) ASSERT_EQ(weft_sleep_ns(10000000), 0);
  ASSERT_EQ(weft_process_returncode(p, &rc), 0);
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(weft_process_send_signal(p, SIGTERM), -ESRCH); /* reaped: no signal */
  rc = 99;
  ASSERT_EQ(weft_process_wait(p, &rc), 0); /* at once, the same status */
  ASSERT_EQ(rc, 0);
  weft_process_free(p);
  ASSERT_EQ(weft_process_shell(&p, "kill -KILL $$", NULL), 0);
  for (int i = 0; i < 500 && weft_process_returncode(p, &rc) == -EBUSY; i++) ASSERT_EQ(weft_sleep_ns(10000000), 0);
  ASSERT_EQ(weft_process_returncode(p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(p);
  char *sl[] = {"sleep", "10", NULL}; /* running: still "None" */
  ASSERT_EQ(weft_process_exec(&p, "sleep", sl, NULL), 0);
  ASSERT_EQ(weft_sleep_ns(50000000), 0);
  ASSERT_EQ(weft_process_returncode(p, &rc), -EBUSY);
  ASSERT_EQ(weft_process_kill(p), 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(p);
  int z;
  ASSERT_EQ(count_children(&z), 0);
  return 0;
}

TEST(returncode_once_exited_without_a_wait) { ASSERT_EQ(run(returncode_main, 2), 0); }

/* ------------------------------------------------------------ bad input */

static int errors_main(void *arg) {
  warm_up();
  int fds = count_fds();
  weft_process *p = (weft_process *)1;
  char *a[] = {"/nonexistent/weft-x", NULL};
  ASSERT_EQ(weft_process_exec(&p, a[0], a, NULL), -ENOENT);
  ASSERT_PTR_EQ(p, NULL);
  char *b[] = {"weft-no-such-program", NULL};
  ASSERT_EQ(weft_process_exec(&p, b[0], b, NULL), -ENOENT);
  char *c[] = {"/etc/passwd", NULL}; /* not executable */
  ASSERT_EQ(weft_process_exec(&p, c[0], c, NULL), -EACCES);
  char *d[] = {"true", NULL};
  weft_process_opts o = {.cwd = "/nonexistent-dir-weft", .stdout_mode = WEFT_STDIO_PIPE};
  ASSERT_EQ(weft_process_exec(&p, d[0], d, &o), -ENOENT);
  char *empty[] = {NULL};
  ASSERT_EQ(weft_process_exec(&p, "true", empty, NULL), -EINVAL);
  ASSERT_EQ(weft_process_exec(&p, "true", NULL, NULL), -EINVAL);
  ASSERT_EQ(weft_process_exec(&p, NULL, d, NULL), -EINVAL);
  ASSERT_EQ(weft_process_shell(&p, NULL, NULL), -EINVAL);
  weft_process_opts bad = {.stdin_mode = WEFT_STDIO_STDOUT};
  ASSERT_EQ(weft_process_exec(&p, "true", d, &bad), -EINVAL);
  weft_process_opts bad2 = {.stdout_mode = 9};
  ASSERT_EQ(weft_process_exec(&p, "true", d, &bad2), -EINVAL);
  weft_process_opts bad3 = {.stdout_mode = WEFT_STDIO_FD, .stdout_fd = -1};
  ASSERT_EQ(weft_process_exec(&p, "true", d, &bad3), -EINVAL);
  weft_process_opts bad4 = {.flags = 1u << 7}; /* an unknown flag: it started the child before */
  ASSERT_EQ(weft_process_exec(&p, "true", d, &bad4), -EINVAL);
  ASSERT_PTR_EQ(p, NULL);
  ASSERT_EQ(weft_process_wait(NULL, NULL), -EINVAL);
  ASSERT_EQ(weft_process_free(NULL), -EINVAL);
  ASSERT_EQ(weft_process_communicate(NULL, NULL), -EINVAL);
  /* input for a child whose stdin is not a pipe */
  ASSERT_EQ(weft_process_exec(&p, "true", d, NULL), 0);
  weft_communicate cm = {.input = "x", .input_len = 1};
  ASSERT_EQ(weft_process_communicate(p, &cm), -EINVAL);
  int rc;
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  weft_process_free(p);
  /* an input past SSIZE_MAX, unknown flags: refused before anything starts
   * (the input hung before: the writer failed without closing the child's
   * stdin, so cat never ended and neither did the read of its stdout) */
  char *cat[] = {"cat", NULL};
  weft_process_opts pipes = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE};
  ASSERT_EQ(weft_process_exec(&p, "cat", cat, &pipes), 0);
  weft_communicate huge = {.input = "x", .input_len = SIZE_MAX};
  ASSERT_EQ(weft_process_communicate(p, &huge), -EINVAL);
  weft_communicate flags = {.flags = 1u << 5};
  ASSERT_EQ(weft_process_communicate(p, &flags), -EINVAL);
  ASSERT_EQ(weft_process_returncode(p, &rc), -EBUSY); /* nothing was done to the child */
  char ob[8];
  weft_communicate ok = {.input = "x", .input_len = 1, .out = ob, .out_cap = sizeof ob};
  ASSERT_EQ(weft_process_communicate(p, &ok), 0);
  ASSERT_EQ(ok.out_len, 1);
  ASSERT_EQ(ok.returncode, 0);
  weft_process_free(p);
  ASSERT_EQ(count_fds(), fds);
  int z;
  ASSERT_EQ(count_children(&z), 0);
  return 0;
}

TEST(spawn_errors) {
  char *d[] = {"true", NULL};
  weft_process *p;
  ASSERT_EQ(weft_process_exec(&p, "true", d, NULL), -EINVAL); /* outside a task */
  ASSERT_EQ(run(errors_main, 2), 0);
}

/* ------------------------------------------------------------ stdio */

static char tmpdir[64];

static int tmpfile_with(const char *name, const char *content) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) TEST_FAIL("open %s: %s", path, strerror(errno));
  if (content && write(fd, content, strlen(content)) != (ssize_t)strlen(content)) TEST_FAIL("write");
  lseek(fd, 0, SEEK_SET);
  return fd;
}

static size_t read_fd(int fd, char *buf, size_t cap) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, cap - 1);
  if (n < 0) TEST_FAIL("read");
  buf[n] = 0;
  return (size_t)n;
}

static int stdio_main(void *arg) {
  /* fd 0, 1, 2 are files set up by the test */
  warm_up();
  int fds = count_fds();
  const int in_modes[] = {WEFT_STDIO_INHERIT, WEFT_STDIO_PIPE, WEFT_STDIO_DEVNULL, WEFT_STDIO_FD};
  const int out_modes[] = {WEFT_STDIO_INHERIT, WEFT_STDIO_PIPE, WEFT_STDIO_DEVNULL, WEFT_STDIO_FD};
  const int err_modes[] = {WEFT_STDIO_INHERIT, WEFT_STDIO_PIPE, WEFT_STDIO_DEVNULL, WEFT_STDIO_FD,
                           WEFT_STDIO_STDOUT};
  int combos = 0;
  for (int i = 0; i < 4; i++)
    for (int o = 0; o < 4; o++)
      for (int e = 0; e < 5; e++) {
        int in_fd = tmpfile_with("in", "fromfd\n");
        int out_fd = tmpfile_with("out", NULL);
        int err_fd = tmpfile_with("err", NULL);
        if (ftruncate(1, 0) || ftruncate(2, 0)) TEST_FAIL("ftruncate");
        lseek(1, 0, SEEK_SET);
        lseek(2, 0, SEEK_SET);
        lseek(0, 0, SEEK_SET);
        weft_process_opts opts = {.stdin_mode = in_modes[i], .stdout_mode = out_modes[o],
                                  .stderr_mode = err_modes[e], .stdin_fd = in_fd, .stdout_fd = out_fd,
                                  .stderr_fd = err_fd};
        weft_process *p;
        ASSERT_EQ(weft_process_shell(&p, "cat; echo E >&2", &opts), 0);
        ASSERT_TRUE((weft_process_stdin(p) != NULL) == (in_modes[i] == WEFT_STDIO_PIPE));
        ASSERT_TRUE((weft_process_stdout(p) != NULL) == (out_modes[o] == WEFT_STDIO_PIPE));
        ASSERT_TRUE((weft_process_stderr(p) != NULL) == (err_modes[e] == WEFT_STDIO_PIPE));
        char out[256] = {0}, err[256] = {0};
        weft_communicate c = {.out = out, .out_cap = sizeof out - 1, .err = err, .err_cap = sizeof err - 1};
        if (in_modes[i] == WEFT_STDIO_PIPE) {
          c.input = "frompipe\n";
          c.input_len = 9;
        }
        ASSERT_EQ(weft_process_communicate(p, &c), 0);
        ASSERT_EQ(c.returncode, 0);
        weft_process_free(p);
        const char *want_in = in_modes[i] == WEFT_STDIO_INHERIT ? "inherited\n"
                              : in_modes[i] == WEFT_STDIO_PIPE  ? "frompipe\n"
                              : in_modes[i] == WEFT_STDIO_FD    ? "fromfd\n"
                                                                : "";
        char where_out[512], where_err[512], buf1[256], buf2[256];
        /* what each destination should hold */
        char want_out[512], want_err[512];
        snprintf(want_out, sizeof want_out, "%s%s", want_in, err_modes[e] == WEFT_STDIO_STDOUT ? "E\n" : "");
        snprintf(want_err, sizeof want_err, "%s", err_modes[e] == WEFT_STDIO_STDOUT ? "" : "E\n");
        /* stdout's destination */
        where_out[0] = 0;
        if (out_modes[o] == WEFT_STDIO_PIPE) snprintf(where_out, sizeof where_out, "%.*s", (int)c.out_len, out);
        if (out_modes[o] == WEFT_STDIO_FD) read_fd(out_fd, where_out, sizeof where_out);
        if (out_modes[o] == WEFT_STDIO_INHERIT) read_fd(1, where_out, sizeof where_out);
        if (out_modes[o] == WEFT_STDIO_DEVNULL) strcpy(where_out, want_out);
        where_err[0] = 0;
        if (err_modes[e] == WEFT_STDIO_PIPE) snprintf(where_err, sizeof where_err, "%.*s", (int)c.err_len, err);
        if (err_modes[e] == WEFT_STDIO_FD) read_fd(err_fd, where_err, sizeof where_err);
        if (err_modes[e] == WEFT_STDIO_INHERIT) read_fd(2, where_err, sizeof where_err);
        if (err_modes[e] == WEFT_STDIO_DEVNULL || err_modes[e] == WEFT_STDIO_STDOUT) strcpy(where_err, want_err);
        if (strcmp(where_out, want_out) || strcmp(where_err, want_err)) {
          read_fd(1, buf1, sizeof buf1);
          read_fd(2, buf2, sizeof buf2);
          TEST_FAIL("stdin %d stdout %d stderr %d: out [%s] want [%s], err [%s] want [%s]", in_modes[i],
                    out_modes[o], err_modes[e], where_out, want_out, where_err, want_err);
        }
        close(in_fd);
        close(out_fd);
        close(err_fd);
        combos++;
      }
  ASSERT_EQ(combos, 80);
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST(stdio_every_combination) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/weft-test-proc-%d", (int)getpid());
  mkdir(tmpdir, 0700);
  int in = tmpfile_with("inh-in", "inherited\n");
  int out = tmpfile_with("inh-out", NULL);
  int err = tmpfile_with("inh-err", NULL);
  int saved_err = dup(2);
  FILE *f = fdopen(dup(saved_err), "w"); /* the asserts' messages go to the real stderr */
  setvbuf(f, NULL, _IONBF, 0);
  stderr = f;
  dup2(in, 0);
  dup2(out, 1);
  dup2(err, 2);
  close(in);
  close(out);
  close(err);
  int rc = run(stdio_main, 2);
  dup2(saved_err, 2);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  ASSERT_EQ(rc, 0);
}

/* ------------------------------------------------------------ big data */

static int big_main(void *arg) {
  /* 1 MiB on each pipe, stderr first: a parent reading stdout alone would deadlock */
  weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE, .stderr_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "yes b | head -c 1048576 >&2; yes a | head -c 1048576", &o), 0);
  char *out = malloc(MIB), *err = malloc(MIB);
  weft_communicate c = {.out = out, .out_cap = MIB, .err = err, .err_cap = MIB};
  ASSERT_EQ(weft_process_communicate(p, &c), 0);
  ASSERT_EQ(c.returncode, 0);
  ASSERT_EQ(c.out_len, MIB);
  ASSERT_EQ(c.err_len, MIB);
  for (size_t i = 0; i < MIB; i += 2) {
    if (out[i] != 'a' || err[i] != 'b' || out[i + 1] != '\n' || err[i + 1] != '\n') TEST_FAIL("byte %zu", i);
  }
  weft_process_free(p);
  /* output past the buffers: read and dropped, counted, -ENOBUFS */
  ASSERT_EQ(weft_process_shell(&p, "yes b | head -c 1048576 >&2; yes a | head -c 1048576", &o), 0);
  weft_communicate c2 = {.out = out, .out_cap = 1000, .err = err, .err_cap = 10};
  ASSERT_EQ(weft_process_communicate(p, &c2), -ENOBUFS);
  ASSERT_EQ(c2.out_len, MIB);
  ASSERT_EQ(c2.err_len, MIB);
  ASSERT_EQ(c2.returncode, 0);
  weft_process_free(p);
  /* input larger than the pipe buffer, echoed back while it is written */
  size_t n = 2 * MIB;
  char *in = malloc(n), *back = malloc(n + 1);
  for (size_t i = 0; i < n; i++) in[i] = (char)(i * 7 + (i >> 12));
  weft_process_opts o2 = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE};
  char *cat[] = {"cat", NULL};
  ASSERT_EQ(weft_process_exec(&p, "cat", cat, &o2), 0);
  weft_communicate c3 = {.input = in, .input_len = n, .out = back, .out_cap = n + 1};
  ASSERT_EQ(weft_process_communicate(p, &c3), 0);
  ASSERT_EQ(c3.out_len, n);
  ASSERT_TRUE(!memcmp(in, back, n));
  weft_process_free(p);
  /* a child that reads nothing: its input is dropped, not an error */
  ASSERT_EQ(weft_process_shell(&p, "exec </dev/null; exit 4", &o2), 0);
  weft_communicate c4 = {.input = in, .input_len = n, .out = back, .out_cap = n};
  ASSERT_EQ(weft_process_communicate(p, &c4), 0);
  ASSERT_EQ(c4.returncode, 4);
  weft_process_free(p);
  free(in);
  free(back);
  free(out);
  free(err);
  return 0;
}

TEST(large_outputs_and_input) { ASSERT_EQ(run(big_main, 2), 0); }

/* ------------------------------------------------------------ streams */

static int streams_main(void *arg) {
  warm_up();
  int fds = count_fds();
  weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "while read l; do echo \"got $l\"; done", &o), 0);
  weft_stream *in = weft_process_stdin(p), *out = weft_process_stdout(p);
  char line[64];
  for (int i = 0; i < 20; i++) {
    char msg[32], want[40];
    int len = snprintf(msg, sizeof msg, "line %d\n", i);
    ASSERT_EQ(weft_stream_write(in, msg, (size_t)len), 0);
    ASSERT_EQ(weft_stream_drain(in), 0);
    ssize_t n = weft_stream_readline(out, line, sizeof line);
    snprintf(want, sizeof want, "got %s", msg);
    ASSERT_EQ(n, (ssize_t)strlen(want));
    ASSERT_TRUE(!memcmp(line, want, (size_t)n));
  }
  ASSERT_EQ(weft_stream_write_eof(in), 0);
  ASSERT_EQ(weft_stream_write(in, "x", 1), -EPIPE);
  ASSERT_EQ(weft_stream_readline(out, line, sizeof line), 0); /* end of stream */
  int rc;
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, 0);
  weft_process_free(p);
  /* a dead child's stdin: -EPIPE, and this process is not killed by SIGPIPE */
  ASSERT_EQ(weft_process_shell(&p, "exit 0", &o), 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  static char big[256 * 1024];
  int w = weft_stream_write(weft_process_stdin(p), big, sizeof big);
  if (w == 0) w = weft_stream_drain(weft_process_stdin(p));
  ASSERT_EQ(w, -EPIPE);
  weft_process_free(p);
  if (count_fds() != fds) list_fds("after");
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST(pipes_as_streams_and_epipe) { ASSERT_EQ(run(streams_main, 2), 0); }

/* A task waiting in a read of the child's stdout while another closes
 * that pipe (close_pipe) or frees the process: the read returns end of
 * stream (readline: the partial line it had), and the closer returns once
 * the reader has left the stream (before net/stream.c woke the reader,
 * the read hung on io_uring and read a freed stream on epoll). */
typedef struct out_reader {
  weft_stream *s;
  ssize_t n;
  char buf[64];
  _Atomic int started;
} out_reader;

static int out_reader_task(void *arg) {
  out_reader *r = arg;
  atomic_store(&r->started, 1);
  r->n = weft_stream_readline(r->s, r->buf, sizeof r->buf);
  return 0;
}

/* Wait (up to 10 s) until the child runs sleep (its printf is done) and
 * the pipe read end fd holds no byte. */
static bool printed_and_taken(pid_t pid, int fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
  for (int i = 0; i < 2000; i++) {
    char comm[32] = {0};
    int cf = open(path, O_RDONLY | O_CLOEXEC);
    if (cf >= 0) {
      ssize_t n = read(cf, comm, sizeof comm - 1);
      close(cf);
      int left = -1;
      if (n > 0 && strcmp(comm, "sleep\n") == 0 && ioctl(fd, FIONREAD, &left) == 0 && left == 0) return true;
    }
    weft_sleep_ns(5000000);
  }
  return false;
}

static int close_under_reader_main(void *arg) {
  warm_up();
  int fds = count_fds();
  for (int how = 0; how < 2; how++) { /* 0 close_pipe, 1 weft_process_free */
    weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE};
    weft_process *p;
    ASSERT_EQ(weft_process_shell(&p, "printf partial; exec sleep 30", &o), 0);
    pid_t pid = weft_process_pid(p);
    static out_reader r;
    memset(&r, 0, sizeof r);
    r.s = weft_process_stdout(p);
    weft_task t = weft_spawn(out_reader_task, &r);
    wait_until_equal(&r.started, 1);
    /* it has "partial" and waits for the end of the line: the child has
     * printed (it runs sleep now) and the pipe is empty (only the reader
     * takes from it). A fixed 100 ms was not always enough for a shell to
     * start on a loaded machine: the close then found "partial" still in
     * the pipe, and the reader's end of stream came without it. */
    ASSERT_TRUE(printed_and_taken(pid, weft_stream_fd(r.s)));
    ASSERT_TRUE(!weft_task_done(t));
    int64_t t0 = weft_now_ns();
    if (how == 0)
      ASSERT_EQ(weft_process_close_pipe(p, 1), 0);
    else
      ASSERT_EQ(weft_process_free(p), 0); /* the child lives on: reaped in the background */
    ASSERT_LT(weft_now_ns() - t0, 2000000000LL);
    ASSERT_EQ(weft_join(t), 0);
    weft_task_release(t);
    ASSERT_EQ(r.n, 7);
    ASSERT_EQ(memcmp(r.buf, "partial", 7), 0);
    if (how == 0) {
      ASSERT_TRUE(weft_process_stdout(p) == NULL);
      ASSERT_EQ(weft_process_kill(p), 0);
      int rc;
      ASSERT_EQ(weft_process_wait(p, &rc), 0);
      ASSERT_EQ(rc, -SIGKILL);
      weft_process_free(p);
    } else {
      ASSERT_EQ(kill(pid, SIGKILL), 0);
    }
  }
  for (int i = 0; i < 500 && count_fds() != fds; i++) weft_sleep_ns(10000000); /* the reaper's pidfd */
  if (count_fds() != fds) list_fds("after");
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST_T(closing_stdout_wakes_a_task_reading_it, 60) { ASSERT_EQ(run(close_under_reader_main, 2), 0); }

/* ------------------------------------------------------------ SIGTERM ignored */

static int ignores_term_main(void *arg) {
  weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "trap '' TERM; echo ready; exec sleep 30", &o), 0);
  char line[16];
  ASSERT_EQ(weft_stream_readline(weft_process_stdout(p), line, sizeof line), 6);
  ASSERT_EQ(weft_process_terminate(p), 0);
  int rc = 99;
  ASSERT_EQ(weft_process_wait_until(p, weft_now_ns() + 300 * 1000000LL, &rc), -ETIMEDOUT);
  ASSERT_EQ(weft_process_returncode(p, &rc), -EBUSY);
  ASSERT_EQ(weft_process_kill(p), 0);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(p);
  return 0;
}

TEST(child_ignoring_sigterm_is_killed) { ASSERT_EQ(run(ignores_term_main, 2), 0); }

/* ------------------------------------------------------------ communicate cancelled */

typedef struct comm_arg {
  weft_process *p;
  weft_communicate c;
  char out[64];
} comm_arg;

static int comm_task(void *arg) {
  comm_arg *a = arg;
  return weft_process_communicate(a->p, &a->c);
}

static int cancel_main(void *arg) {
  weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE,
                         .stderr_mode = WEFT_STDIO_PIPE};
  comm_arg a = {0};
  int rc;
  /* cancelled: the child is killed */
  ASSERT_EQ(weft_process_shell(&a.p, "echo started; exec sleep 30", &o), 0);
  a.c.out = a.out;
  a.c.out_cap = sizeof a.out;
  weft_task t = weft_spawn(comm_task, &a);
  ASSERT_EQ(weft_sleep_ns(100 * 1000000LL), 0);
  ASSERT_GE(weft_cancel(t), 0);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  weft_task_release(t);
  ASSERT_EQ(weft_process_wait(a.p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(a.p);
  /* a timeout: -ETIMEDOUT, killed; what was read stays */
  ASSERT_EQ(weft_process_shell(&a.p, "echo started; exec sleep 30", &o), 0);
  memset(&a.c, 0, sizeof a.c);
  a.c.out = a.out;
  a.c.out_cap = sizeof a.out;
  a.c.deadline_ns = weft_now_ns() + 300 * 1000000LL;
  ASSERT_EQ(weft_process_communicate(a.p, &a.c), -ETIMEDOUT);
  ASSERT_EQ(a.c.out_len, 8);
  ASSERT_TRUE(!memcmp(a.out, "started\n", 8));
  ASSERT_EQ(weft_process_wait(a.p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(a.p);
  /* left running when asked */
  ASSERT_EQ(weft_process_shell(&a.p, "exec sleep 30", &o), 0);
  memset(&a.c, 0, sizeof a.c);
  a.c.deadline_ns = weft_now_ns() + 100 * 1000000LL;
  a.c.flags = WEFT_COMMUNICATE_LEAVE_RUNNING;
  ASSERT_EQ(weft_process_communicate(a.p, &a.c), -ETIMEDOUT);
  ASSERT_EQ(weft_sleep_ns(50 * 1000000LL), 0);
  ASSERT_EQ(weft_process_returncode(a.p, &rc), -EBUSY);
  ASSERT_EQ(weft_process_send_signal(a.p, 0), 0);
  ASSERT_EQ(weft_process_kill(a.p), 0);
  ASSERT_EQ(weft_process_wait(a.p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(a.p);
  return 0;
}

TEST(communicate_cancel_and_timeout) { ASSERT_EQ(run(cancel_main, 2), 0); }

/* ------------------------------------------------------------ env, cwd, groups, descriptors */

static int env_main(void *arg) {
  char *env[] = {"FOO=bar baz", NULL};
  weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE, .env = env, .cwd = "/tmp"};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "echo \"$FOO\"; pwd; echo \"${PATH-unset}\"", &o), 0);
  char out[256];
  weft_communicate c = {.out = out, .out_cap = sizeof out};
  ASSERT_EQ(weft_process_communicate(p, &c), 0);
  out[c.out_len] = 0;
  ASSERT_TRUE(!strncmp(out, "bar baz\n/tmp\n", 13));
  weft_process_free(p);
  /* the descriptors a child gets: 0, 1, 2 only (ls opens 3 for the directory) */
  weft_process_opts o2 = {.stdout_mode = WEFT_STDIO_PIPE};
  char *ls[] = {"ls", "/proc/self/fd", NULL};
  ASSERT_EQ(weft_process_exec(&p, "ls", ls, &o2), 0);
  weft_communicate c2 = {.out = out, .out_cap = sizeof out - 1};
  ASSERT_EQ(weft_process_communicate(p, &c2), 0);
  out[c2.out_len] = 0;
  /* the child has 0, 1, 2 and ls's own directory descriptor (the lowest
   * free one, 3): not even what this process has without FD_CLOEXEC (see
   * child_gets_only_0_1_2) */
  int listed = 0, above = 0;
  for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n")) {
    listed++;
    above += atoi(l) > 3;
  }
  ASSERT_EQ(listed, 4);
  ASSERT_EQ(above, 0);
  weft_process_free(p);
  /* process group and session */
  char *sl[] = {"sleep", "10", NULL};
  for (int k = 0; k < 2; k++) {
    weft_process_opts o3 = {.flags = k ? WEFT_PROCESS_NEW_SESSION : WEFT_PROCESS_SETPGID};
    ASSERT_EQ(weft_process_exec(&p, "sleep", sl, &o3), 0);
    pid_t pid = weft_process_pid(p);
    ASSERT_EQ(getpgid(pid), pid);
    if (k) ASSERT_EQ(getsid(pid), pid);
    else ASSERT_EQ(getsid(pid), getsid(0));
    int rc;
    ASSERT_EQ(weft_process_kill(p), 0);
    ASSERT_EQ(weft_process_wait(p, &rc), 0);
    weft_process_free(p);
  }
  return 0;
}

TEST(env_cwd_groups_and_inherited_descriptors) { ASSERT_EQ(run(env_main, 2), 0); }

/* ------------------------------------------------------------ signal dispositions */

/* The child reads which signals it catches from its own /proc/self/status
 * and sets those to SIG_DFL (process/spawn.c): a child must start with no
 * caught signal, an empty mask, SIGPIPE back to default, the other ignored
 * signals still ignored; the parent's own handlers must be untouched. */
static void on_usr1(int sig) { (void)sig; }

static unsigned long long status_field(const char *text, const char *key) {
  const char *at = strstr(text, key);
  if (!at) TEST_FAIL("no %s in the child's status", key);
  return strtoull(at + strlen(key), NULL, 16);
}

static int sigdfl_main(void *arg) {
  struct sigaction h = {0}, ign = {0}, old_usr1, old_usr2, old_pipe, now;
  h.sa_handler = on_usr1;
  ign.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGUSR1, &h, &old_usr1), 0);
  ASSERT_EQ(sigaction(SIGUSR2, &ign, &old_usr2), 0);
  ASSERT_EQ(sigaction(SIGPIPE, &ign, &old_pipe), 0);
  for (int round = 0; round < 3; round++) {
    weft_process *p;
    weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE};
    char *a[] = {"cat", "/proc/self/status", NULL};
    ASSERT_EQ(weft_process_exec(&p, "cat", a, &o), 0);
    char out[8192];
    weft_communicate c = {.out = out, .out_cap = sizeof out - 1};
    ASSERT_EQ(weft_process_communicate(p, &c), 0);
    ASSERT_EQ(c.returncode, 0);
    weft_process_free(p);
    out[c.out_len] = 0;
    ASSERT_EQ(status_field(out, "\nSigCgt:"), 0ULL);
    ASSERT_EQ(status_field(out, "\nSigBlk:"), 0ULL);
    unsigned long long ignored = status_field(out, "\nSigIgn:");
    ASSERT_TRUE(ignored & 1ULL << (SIGUSR2 - 1));   /* ignored stays ignored */
    ASSERT_TRUE(!(ignored & 1ULL << (SIGPIPE - 1))); /* but SIGPIPE is reset */
    ASSERT_EQ(sigaction(SIGUSR1, NULL, &now), 0);   /* the parent keeps its handler */
    ASSERT_TRUE(now.sa_handler == on_usr1);
    ASSERT_EQ(sigaction(SIGPIPE, NULL, &now), 0);
    ASSERT_TRUE(now.sa_handler == SIG_IGN);
  }
  sigaction(SIGUSR1, &old_usr1, NULL);
  sigaction(SIGUSR2, &old_usr2, NULL);
  sigaction(SIGPIPE, &old_pipe, NULL);
  return 0;
}

TEST(child_starts_with_default_handlers_and_empty_mask) { ASSERT_EQ(run(sigdfl_main, 2), 0); }

/* ------------------------------------------------------------ many children */

static atomic_int children_ok;

static int one_child(void *arg) {
  long i = (long)arg;
  weft_process *p;
  int rc = -1;
  if (i % 2) {
    char *a[] = {"/bin/true", NULL};
    if (weft_process_exec(&p, "/bin/true", a, NULL)) return -1;
    if (weft_process_wait(p, &rc)) return -1;
  } else {
    weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE, .stderr_mode = WEFT_STDIO_STDOUT};
    char *a[] = {"echo", "hi", NULL};
    if (weft_process_exec(&p, "echo", a, &o)) return -1;
    char out[8];
    weft_communicate c = {.out = out, .out_cap = sizeof out};
    if (weft_process_communicate(p, &c) || c.out_len != 3) return -1;
    rc = c.returncode;
  }
  weft_process_free(p);
  if (rc == 0) atomic_fetch_add(&children_ok, 1);
  return rc;
}

static int many_main(void *arg) {
  long n = (test_sanitized() ? 60 : 200) * test_stress_scale();
  warm_up();
  int fds = count_fds();
  weft_task *t = malloc(sizeof *t * (size_t)n);
  for (long i = 0; i < n; i++) {
    t[i] = weft_spawn(one_child, (void *)i);
    ASSERT_TRUE(t[i].rec != NULL);
  }
  for (long i = 0; i < n; i++) {
    ASSERT_EQ(weft_join(t[i]), 0);
    weft_task_release(t[i]);
  }
  free(t);
  ASSERT_EQ(atomic_load(&children_ok), n);
  int z;
  ASSERT_EQ(count_children(&z), 0);
  ASSERT_EQ(z, 0);
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST(many_concurrent_children_no_zombie_no_leak) { ASSERT_EQ(run(many_main, 4), 0); }

/* ------------------------------------------------------------ freed before wait */

static int free_main(void *arg) {
  weft_process *p;
  for (int i = 0; i < 10; i++) {
    ASSERT_EQ(weft_process_shell(&p, "sleep 0.1", NULL), 0);
    ASSERT_EQ(weft_process_free(p), 0); /* reaped in the background */
  }
  int z = 0, n = 1;
  for (int k = 0; k < 100 && n; k++) {
    ASSERT_EQ(weft_sleep_ns(50 * 1000000LL), 0);
    n = count_children(&z);
  }
  ASSERT_EQ(n, 0);
  return 0;
}

TEST(freed_before_wait_is_reaped) { ASSERT_EQ(run(free_main, 2), 0); }


/* ------------------------------------------------------------ asyncio conformance (found by review;
 * the inherited descriptors, the run end and the SIGINT take-over failed
 * before) */

/* asyncio (subprocess, close_fds=True by default): a descriptor this process
 * opened without O_CLOEXEC is not inherited; weft/process.h: "inherits no
 * descriptor but its three standard ones". */
static int cf_fds_main(void *arg) {
  (void)arg;
  int pfd[2];
  ASSERT_EQ(pipe(pfd), 0); /* no O_CLOEXEC, as a plain C program does */
  ASSERT_TRUE(pfd[0] > 2 && pfd[1] > 2);
  weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "ls /proc/$$/fd", &o), 0);
  char out[512];
  weft_communicate c = {.out = out, .out_cap = sizeof out - 1};
  ASSERT_EQ(weft_process_communicate(p, &c), 0);
  out[c.out_len] = 0;
  weft_process_free(p);
  int extra = 0;
  for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n"))
    if (atoi(l) > 2) extra++;
  close(pfd[0]);
  close(pfd[1]);
  ASSERT_EQ(extra, 0);
  return 0;
}
TEST_T(child_gets_only_0_1_2, 30) { ASSERT_EQ(run(cf_fds_main, 2), 0); }

/* The same where close_range(2) is refused: a kernel before 5.11 (ENOSYS)
 * or a container's seccomp profile that predates it (EPERM). The child
 * marked nothing close-on-exec then, and the program's descriptors opened
 * without O_CLOEXEC reached every child (found by review); it must fall
 * back to marking them one by one, as Python's close_fds does. */
static void refuse_close_range(int err) { refuse_syscall(436 /* close_range */, err, 3, ~0U, 0); }

TEST_T(child_gets_only_0_1_2_without_close_range, 30) {
  refuse_close_range(ENOSYS);
  ASSERT_EQ(run(cf_fds_main, 2), 0);
}

TEST_T(child_gets_only_0_1_2_where_seccomp_refuses_close_range, 30) {
  refuse_close_range(EPERM);
  ASSERT_EQ(run(cf_fds_main, 2), 0);
}

/* large input while the child writes large outputs on both pipes */
static int cf_big_main(void *arg) {
  (void)arg;
  size_t n = 3 * MIB;
  char *in = malloc(n), *out = malloc(n + 1), *err = malloc(n + 1);
  for (size_t i = 0; i < n; i++) in[i] = (char)(i * 13 + (i >> 10));
  weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE,
                         .stderr_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "tee /dev/stderr", &o), 0);
  weft_communicate c = {.input = in, .input_len = n, .out = out, .out_cap = n + 1, .err = err, .err_cap = n + 1};
  ASSERT_EQ(weft_process_communicate(p, &c), 0);
  ASSERT_EQ(c.returncode, 0);
  ASSERT_EQ(c.out_len, n);
  ASSERT_EQ(c.err_len, n);
  ASSERT_TRUE(!memcmp(in, out, n));
  ASSERT_TRUE(!memcmp(in, err, n));
  weft_process_free(p);
  /* the child writes a lot, reads nothing, exits */
  ASSERT_EQ(weft_process_shell(&p, "head -c 2000000 /dev/zero; head -c 1000000 /dev/zero >&2; exit 3", &o), 0);
  weft_communicate c2 = {.input = in, .input_len = n, .out = out, .out_cap = n + 1, .err = err, .err_cap = n + 1};
  ASSERT_EQ(weft_process_communicate(p, &c2), 0);
  ASSERT_EQ(c2.returncode, 3);
  ASSERT_EQ(c2.out_len, 2000000);
  ASSERT_EQ(c2.err_len, 1000000);
  weft_process_free(p);
  free(in); free(out); free(err);
  return 0;
}
TEST_T(communicate_large_input_and_both_outputs, 60) { ASSERT_EQ(run(cf_big_main, 2), 0); }

/* timeout while stdout is at its end but stderr still open; and a cancel
 * during the final wait: -ETIMEDOUT/-ECANCELED promptly, child killed, reaped, no zombie */
static int cf_timeout_main(void *arg) {
  (void)arg;
  weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE,
                         .stderr_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  ASSERT_EQ(weft_process_shell(&p, "exec 1>&-; exec sleep 30", &o), 0);
  weft_communicate c = {.deadline_ns = weft_now_ns() + 200 * 1000000LL};
  int64_t t0 = weft_now_ns();
  ASSERT_EQ(weft_process_communicate(p, &c), -ETIMEDOUT);
  ASSERT_LT(weft_now_ns() - t0, 2000 * 1000000LL);
  int rc;
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  weft_process_free(p);
  /* all pipes closed by the child, then it lives on: timeout in the wait */
  ASSERT_EQ(weft_process_shell(&p, "exec 0<&- 1>&- 2>&-; exec sleep 30", &o), 0);
  weft_communicate c2 = {.deadline_ns = weft_now_ns() + 200 * 1000000LL};
  t0 = weft_now_ns();
  ASSERT_EQ(weft_process_communicate(p, &c2), -ETIMEDOUT);
  ASSERT_LT(weft_now_ns() - t0, 2000 * 1000000LL);
  ASSERT_EQ(weft_process_wait(p, &rc), 0);
  ASSERT_EQ(rc, -SIGKILL);
  ASSERT_EQ(weft_process_send_signal(p, SIGTERM), -ESRCH);
  weft_process_free(p);
  int z;
  ASSERT_EQ(count_children(&z), 0);
  return 0;
}
TEST_T(communicate_timeout_with_pipes_closed_by_the_child, 30) { ASSERT_EQ(run(cf_timeout_main, 2), 0); }

/* asyncio idiom: a task cancelled by asyncio.run's end kills its child and
 * awaits proc.wait() (python3.11: reaped, returncode -9). Under weft_run the
 * child must be reaped too: no zombie after weft_run returns. */
static pid_t cf_child_pid;
static atomic_int cf_wait_rc = 99;
static int cf_owner(void *arg) {
  (void)arg;
  weft_process *p;
  char *a[] = {"sleep", "30", NULL};
  if (weft_process_exec(&p, "sleep", a, NULL)) return -1;
  cf_child_pid = weft_process_pid(p);
  int rc = weft_process_wait(p, NULL);
  if (rc == -ECANCELED) {
    weft_process_kill(p);
    int st;
    atomic_store(&cf_wait_rc, weft_process_wait(p, &st));
  }
  weft_process_free(p);
  return rc;
}
static int cf_owner_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(cf_owner, NULL);
  weft_task_release(t);
  return weft_sleep_ns(100 * 1000000LL);
}
TEST_T(a_task_cancelled_at_run_end_reaps_its_child, 30) {
  ASSERT_EQ(run(cf_owner_main, 2), 0);
  ASSERT_GT(cf_child_pid, 0);
  int z = 0;
  int n = count_children(&z);
  ASSERT_EQ(atomic_load(&cf_wait_rc), 0);
  ASSERT_EQ(n, 0);
}

/* the parent's 0, 1, 2 closed: pipes and /dev/null land on 0..2 */
static int cf_closed_std_main(void *arg) {
  (void)arg;
  weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE, .stdout_mode = WEFT_STDIO_PIPE,
                         .stderr_mode = WEFT_STDIO_STDOUT};
  weft_process *p;
  if (weft_process_shell(&p, "cat; echo E >&2; ls /proc/$$/fd | wc -l", &o)) return 10;
  char out[64];
  weft_communicate c = {.input = "hi\n", .input_len = 3, .out = out, .out_cap = sizeof out};
  if (weft_process_communicate(p, &c) || c.returncode) return 11;
  weft_process_free(p);
  if (c.out_len < 5 || memcmp(out, "hi\nE\n", 5)) return 12;
  weft_process_opts o2 = {.stdin_mode = WEFT_STDIO_DEVNULL, .stdout_mode = WEFT_STDIO_PIPE,
                          .stderr_mode = WEFT_STDIO_DEVNULL};
  if (weft_process_shell(&p, "cat; echo X; echo E >&2", &o2)) return 13;
  weft_communicate c2 = {.out = out, .out_cap = sizeof out};
  if (weft_process_communicate(p, &c2) || c2.returncode) return 14;
  weft_process_free(p);
  if (c2.out_len != 2 || memcmp(out, "X\n", 2)) return 15;
  return 0;
}
TEST_T(parent_with_0_1_2_closed, 30) {
  pid_t pid = fork();
  if (pid == 0) {
    close(0); close(1); close(2);
    _exit(run(cf_closed_std_main, 2));
  }
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  ASSERT_EQ(WEXITSTATUS(st), 0);
}

/* ------------------------------------------------------------ a cancel during free's flush
 * weft_process_free flushes the child's stdin (up to 10 s). A cancellation
 * that cut that flush short was delivered there and dropped: free returned
 * 0 and the task went on as if never cancelled (found by review: a
 * pipeline's worker then waited forever in a queue get, its task group with
 * it). The request must stay for the caller's next suspension. */
static int fc_free_rc = 1, fc_after_rc = 1;
static int fc_body(void *arg) {
  (void)arg;
  weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE};
  weft_process *p;
  char *a[] = {"sleep", "2", NULL}; /* never reads its stdin; free reaps it in the background */
  ASSERT_EQ(weft_process_exec(&p, a[0], a, &o), 0);
  static char blk[60000];
  ASSERT_EQ(weft_stream_write(weft_process_stdin(p), blk, sizeof blk), 0); /* fills the pipe */
  ASSERT_EQ(weft_stream_write(weft_process_stdin(p), blk, sizeof blk), 0); /* stays buffered */
  fc_free_rc = weft_process_free(p);     /* waits in the flush: cancelled there */
  fc_after_rc = weft_sleep_ns(5000 * 1000000LL);
  return fc_after_rc;
}
static int free_cancel_main(void *arg) {
  (void)arg;
  weft_task t = weft_spawn(fc_body, NULL);
  ASSERT_EQ(weft_sleep_ns(100 * 1000000LL), 0);
  ASSERT_EQ(weft_cancel(t), 1);
  ASSERT_EQ(weft_join(t), -ECANCELED);
  ASSERT_EQ(weft_task_release(t), 0);
  ASSERT_EQ(fc_free_rc, 0);
  ASSERT_EQ(fc_after_rc, -ECANCELED); /* before: 0 after 5 s, the cancellation lost */
  return 0;
}
TEST_T(a_cancel_during_free_stays_requested, 30) { ASSERT_EQ(run(free_cancel_main, 2), 0); }


/* ------------------------------------------------------------ a cancel swallowed by a reader's end
 * communicate joins its stderr reader (and stdin writer) tasks; a cancel
 * of the caller while it waits in that join is passed on to the reader
 * (weft_join's rule). A reader already woken by its end of stream (not
 * yet run) ends with 0 anyway, so the join returns 0: the caller's
 * cancellation was delivered and used up there, and communicate went on
 * to wait for a child that never exits (asyncio's gather reports
 * CancelledError whatever its children returned). Here the test's own
 * task waits for the same end of stream on stderr's descriptor, linked
 * before the reader, so that it runs (and cancels) first, and the
 * cancelled caller runs next (a wake from a task takes the LIFO slot),
 * before the reader: with one worker that order is the rule, not luck. */
static int sw_main(void *arg) {
  (void)arg;
  weft_process_opts o = {.stdout_mode = WEFT_STDIO_PIPE, .stderr_mode = WEFT_STDIO_PIPE};
  for (int i = 0; i < 5; i++) {
    comm_arg a = {0};
    ASSERT_EQ(weft_process_shell(&a.p, "exec 1>&-; sleep 0.1; exec 2>&-; exec sleep 30", &o), 0);
    weft_task t = weft_spawn(comm_task, &a);
    int errfd = weft_stream_fd(weft_process_stderr(a.p));
    ASSERT_GT(weft_poll(errfd, POLLIN, weft_now_ns() + 5000 * 1000000LL), 0); /* stderr's end */
    ASSERT_EQ(weft_cancel(t), 1);
    for (int k = 0; k < 200 && !weft_task_done(t); k++) weft_sleep_ns(10 * 1000000LL);
    bool ended = weft_task_done(t);
    if (!ended) weft_process_kill(a.p); /* before the fix: still waiting for the child */
    int st = weft_join(t);
    weft_task_release(t);
    int rc;
    ASSERT_EQ(weft_process_wait(a.p, &rc), 0);
    weft_process_free(a.p);
    if (!ended) TEST_FAIL("round %d: communicate went on after its cancellation (returned %d)", i, st);
    ASSERT_EQ(st, -ECANCELED);
    ASSERT_EQ(rc, -SIGKILL);
  }
  return 0;
}
TEST_T(communicate_cancelled_while_a_reader_ends, 60) { ASSERT_EQ(run(sw_main, 1), 0); }

/* ------------------------------------------------------------ freed as the runtime ends
 * weft_process_free leaves a child still running to a reaper task. When
 * the runtime shut down before that task had started, the shutdown's
 * cancellation kept its body from running at all (a task cancelled before
 * it starts never runs, asyncio's rule), and the body was what released
 * the handle: its pidfd stayed open in this process for good, its memory
 * leaked (LeakSanitizer saw it in a_cancel_during_free_stays_requested, 1
 * run in 2 under ASan on epoll). The child itself is left to the process
 * (weft/process.h). Here, on one worker, a task that spins holds the
 * worker from the end of main until the shutdown has cancelled the reaper
 * (it spawned last, so it runs first: the LIFO slot). */
static pid_t fe_pid;
static int fe_spin(void *arg) {
  (void)arg;
  spin_ns(300 * 1000000LL);
  return 0;
}
static int fe_main(void *arg) {
  (void)arg;
  weft_process *p;
  char *a[] = {"sleep", "0.5", NULL};
  ASSERT_EQ(weft_process_exec(&p, a[0], a, NULL), 0);
  fe_pid = weft_process_pid(p);
  ASSERT_EQ(weft_process_free(p), 0); /* spawns the reaper */
  weft_task t = weft_spawn(fe_spin, NULL);
  weft_task_release(t);
  return 0;
}
TEST_T(freed_as_the_runtime_ends_leaks_no_descriptor, 30) {
  int fds = count_fds();
  weft_config c = cfg_workers(1);
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  ASSERT_EQ(weft_runtime_call(rt, fe_main, NULL), 0);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0); /* while fe_spin holds the worker */
  int after = count_fds();
  int st;
  ASSERT_EQ(waitpid(fe_pid, &st, 0), fe_pid); /* the child weft left to this process */
  if (after != fds) list_fds("after the shutdown");
  ASSERT_EQ(after, fds);
}

/* ------------------------------------------------------------ abort under stdin's writer */

/* A task writing the child's stdin (a pipe) waits in write, drain or
 * write_eof for a child that does not read; another task, on the other
 * worker, aborts the stream: that call returns -ECONNRESET at once, and
 * every later writer call; close_pipe (close + wait_closed) returns. */
typedef struct stdin_writer {
  weft_stream *s;
  int op; /* 0 write, 1 drain, 2 write_eof */
  int result, later[2];
  _Atomic int started;
} stdin_writer;

#define STDIN_BIG (1 << 20)
static char stdin_big[STDIN_BIG];

static int stdin_writer_task(void *arg) {
  stdin_writer *w = arg;
  weft_unpin(); /* spawned pinned on the other worker */
  atomic_store(&w->started, 1);
  int rc = weft_stream_write(w->s, stdin_big, STDIN_BIG);
  if (!rc && w->op == 1) rc = weft_stream_drain(w->s);
  if (!rc && w->op == 2) rc = weft_stream_write_eof(w->s);
  w->result = rc;
  w->later[0] = weft_stream_write(w->s, "x", 1);
  w->later[1] = weft_stream_drain(w->s);
  return 0;
}

static int abort_stdin_main(void *arg) {
  warm_up();
  int fds = count_fds();
  weft_pin();
  for (int op = 0; op < 3; op++) {
    weft_process_opts o = {.stdin_mode = WEFT_STDIO_PIPE};
    weft_process *p;
    ASSERT_EQ(weft_process_shell(&p, "exec sleep 30", &o), 0);
    static stdin_writer w;
    memset(&w, 0, sizeof w);
    w.s = weft_process_stdin(p);
    w.op = op;
    if (op) ASSERT_EQ(weft_stream_set_watermarks(w.s, 2 * STDIN_BIG, 0), 0); /* the write only buffers */
    weft_task t = spawn_elsewhere_until_waiting(stdin_writer_task, &w, &w.started);
    ASSERT_TRUE(t.rec != NULL);
    if (weft_task_done(t)) TEST_FAIL("op %d: the writer did not wait (result %d)", op, w.result);
    int64_t t0 = weft_now_ns();
    weft_stream_abort(w.s);
    int64_t took = join_release_since(t, t0);
    if (w.result != -ECONNRESET || took < 0 || took >= 1000000000LL)
      TEST_FAIL("op %d: %d after %lld ms", op, w.result, (long long)(took / 1000000));
    ASSERT_EQ(w.later[0], -ECONNRESET);
    ASSERT_EQ(w.later[1], -ECONNRESET);
    ASSERT_EQ(weft_process_close_pipe(p, 0), 0);
    ASSERT_LT(weft_now_ns() - t0, 2000000000LL);
    ASSERT_EQ(weft_process_kill(p), 0);
    int rc;
    ASSERT_EQ(weft_process_wait(p, &rc), 0);
    ASSERT_EQ(rc, -SIGKILL);
    weft_process_free(p);
  }
  weft_unpin();
  for (int i = 0; i < 500 && count_fds() != fds; i++) weft_sleep_ns(10000000); /* the reaper's pidfd */
  if (count_fds() != fds) list_fds("after");
  ASSERT_EQ(count_fds(), fds);
  return 0;
}

TEST_T(abort_wakes_a_task_writing_a_child_that_does_not_read, 60) { ASSERT_EQ(run(abort_stdin_main, 2), 0); }

TEST_MAIN()
