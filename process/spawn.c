/* process/spawn.c: starting a child: create_subprocess_exec and _shell.
 *
 * HOW. The calling task prepares everything that may allocate or fail in
 * the parent (pipes, /dev/null, the PATH to search), then runs the clone
 * on the blocking pool (weft__blocking_call), because
 * CLONE_VFORK suspends the calling thread until the child has exec'd, and
 * a worker must never block. The pool thread:
 *   1. blocks every signal (raw rt_sigprocmask: glibc's wrappers keep its
 *      own two signals open), so that no handler of the parent runs in the
 *      child, which shares the parent's memory until exec;
 *   2. clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD|SIGCHLD): no copy of the
 *      page tables (posix_spawn's technique), and a pidfd for the handle,
 *      created O_CLOEXEC by the kernel. The child runs on an array in the
 *      pool thread's own frame (musl's posix_spawn does the same): the
 *      thread is suspended until the child has exec'd or exited, so the
 *      array is the child's alone meanwhile, and its pages stay mapped
 *      from one spawn to the next. (An mmap'ed stack per spawn, before,
 *      cost an mmap, a munmap whose TLB flush reaches every CPU running
 *      one of the parent's threads, and page faults in every child that
 *      zero the fresh stack pages: process/README.md's figures.)
 *   3. restores its mask once clone returned (the child has exec'd or
 *      exited).
 *
 * THE CHILD runs only raw system calls (syscall(2): no libc state, and no
 * sanitizer interceptor, which would update the parent's shadow state
 * through the shared memory): it resets every handled signal (and
 * SIGPIPE) to SIG_DFL, empties its signal mask, starts a session or joins
 * a process group, changes directory, moves the given descriptors to 0, 1,
 * 2 (dup3 clears O_CLOEXEC on the copies), marks every other descriptor
 * close-on-exec (close_range, or one by one where that is refused), and
 * execs, searching PATH when the file has no '/'. On failure it writes
 * its errno into the request (shared memory: CLONE_VM) and exits 127;
 * the parent, resumed by CLONE_VFORK only after that exit, reads the
 * errno, reaps the child and returns -errno: a missing executable is the
 * spawn call's -ENOENT.
 *
 * THE SIGNAL RESET. Until exec the child shares the parent's memory, so
 * none of the parent's handlers may run in it once its mask is emptied:
 * each caught signal goes back to SIG_DFL first. Which signals are
 * caught, the child reads from its own /proc/self/status (SigCgt, and
 * SigIgn for SIGPIPE): clone without CLONE_SIGHAND gave it a private copy
 * of the parent's dispositions, which nothing but the child changes, so
 * the masks are exact. That is an open, a read and a close, plus one
 * rt_sigaction per caught signal (a handful), instead of asking the
 * kernel about all 64 signals one system call each (glibc's posix_spawn
 * does that, and so did this file): about 60 fewer system calls in the
 * window where the spawning thread waits (process/README.md). Without a
 * readable /proc (a chroot, a foreign pid namespace) the child falls back
 * to the 64 questions.
 *
 * Rejected: posix_spawn + pidfd_open (a second system call, a window in
 * which the pid could be reaped and reused by someone calling wait(-1),
 * and exec errors only through glibc's own pipe); fork (copies page tables:
 * slow from a large multi-threaded process); serialising the spawns (one
 * clone at a time) and the clone on the worker (no pool hand-off):
 * measured, neither made spawn_process faster here, and the second blocks
 * a worker for the exec (process/README.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <weft/io.h>
#include <weft/process.h>

#include "core/alloc.h"
#include "core/blocking.h"
#include "io/op.h"
#include "process/process.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The child's stack, in the pool thread's frame: the child's deepest path
 * is child_main -> child_search (a PATH_MAX buffer) -> syscall, or
 * reset_signals -> signals_to_reset (a 4 KiB buffer), or cloexec_above_2
 * (1 KiB): under 10 KiB; pool threads have the default thread stack
 * (RLIMIT_STACK, 8 MiB unless lowered). */
#define CHILD_STACK (32 * 1024)
#define MAX_ARGS 65536
#define DEFAULT_PATH "/bin:/usr/bin"

extern char **environ;

/* The kernel's struct sigaction (x86_64 and aarch64 both have sa_restorer). */
struct ksigaction {
  void *handler;
  unsigned long flags;
  void *restorer;
  unsigned long mask;
};

struct spawn_req {
  const char *file;
  char *const *argv;
  char *const *envp;
  const char *cwd;
  const char *path;  /* PATH to search when file has no '/', or NULL */
  int src[3];        /* the child's 0, 1, 2: a descriptor, or -1 to keep */
  bool err_to_out;   /* 2 = a copy of 1 */
  unsigned flags;
  pid_t pgid;
  /* results */
  int child_errno;   /* written by the child (shared memory) before it exits */
  pid_t pid;
  int pidfd;
};

/* ------------------------------------------------------------ the child */

/* No sanitizer code in the child: it shares the parent's memory (and its
 * thread's TLS), so a sanitizer's bookkeeping there would corrupt the
 * parent's. */
#if defined(__has_attribute)
#if __has_attribute(disable_sanitizer_instrumentation)
#define NOSAN_EXTRA __attribute__((disable_sanitizer_instrumentation))
#endif
#endif
#ifndef NOSAN_EXTRA
#define NOSAN_EXTRA
#endif
#define NOSAN __attribute__((no_sanitize("address", "thread", "undefined"), noinline)) NOSAN_EXTRA

/* glibc's clone under its other name: ThreadSanitizer intercepts `clone`
 * (as a fork, which breaks with CLONE_VM); the child here needs no
 * sanitizer bookkeeping (see NOSAN). */
extern int __clone(int (*fn)(void *), void *stack, int flags, void *arg, ...);

NOSAN static long ksys(long nr, long a, long b, long c, long d) {
  long r = syscall(nr, a, b, c, d);
  return r < 0 ? -(long)errno : r;
}

NOSAN static size_t kstrlen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

NOSAN static int child_exec(struct spawn_req *r, const char *file) {
  return (int)-ksys(SYS_execve, (long)file, (long)r->argv, (long)r->envp, 0);
}

/* PATH search (execvpe's rules, without the ENOEXEC shell fallback): the
 * first EACCES is kept when no later entry succeeds. */
NOSAN static int child_search(struct spawn_req *r) {
  char buf[PATH_MAX];
  size_t flen = kstrlen(r->file);
  int err = ENOENT;
  bool seen_eacces = false;
  const char *p = r->path;
  for (;;) {
    const char *end = p;
    while (*end && *end != ':') end++;
    size_t dlen = (size_t)(end - p);
    if (dlen + 1 + flen + 1 <= sizeof buf) {
      size_t k = 0;
      if (dlen == 0) buf[k++] = '.'; /* an empty entry is the current directory */
      for (size_t i = 0; i < dlen; i++) buf[k++] = p[i];
      buf[k++] = '/';
      for (size_t i = 0; i <= flen; i++) buf[k++] = r->file[i];
      long e = ksys(SYS_execve, (long)buf, (long)r->argv, (long)r->envp, 0);
      if (e == -EACCES) seen_eacces = true;
      else if (e != -ENOENT && e != -ENOTDIR && e != -ESTALE && e != -ENAMETOOLONG) return (int)-e;
    } else {
      err = ENAMETOOLONG;
    }
    if (!*end) break;
    p = end + 1;
  }
  return seen_eacces ? EACCES : err;
}

/* The hexadecimal mask on the line of buf[0..n) that starts with key
 * (e.g. "SigCgt:"), in *mask; false when there is no such line. */
NOSAN static bool status_mask(const char *buf, long n, const char *key, unsigned long *mask) {
  size_t klen = kstrlen(key);
  for (long i = 0; i < n; i++) {
    if (i > 0 && buf[i - 1] != '\n') continue;
    size_t j = 0;
    while (j < klen && i + (long)j < n && buf[i + (long)j] == key[j]) j++;
    if (j < klen) continue;
    long k = i + (long)klen;
    while (k < n && (buf[k] == '\t' || buf[k] == ' ')) k++;
    unsigned long v = 0;
    int digits = 0;
    for (; k < n && digits <= 16; k++, digits++) {
      char c = buf[k];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) break;
      v = v << 4 | (unsigned long)d;
    }
    if (digits == 0 || digits > 16 || k >= n || buf[k] != '\n') return false; /* cut short or not a mask */
    *mask = v;
    return true;
  }
  return false;
}

/* The signals to set to SIG_DFL (bit s-1 for signal s): the caught ones
 * and SIGPIPE if ignored, from /proc/self/status. False if it cannot be
 * read. */
NOSAN static bool signals_to_reset(unsigned long *out) {
  char buf[4096];
  long fd = ksys(SYS_openat, AT_FDCWD, (long)"/proc/self/status", O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return false;
  long n = ksys(SYS_read, fd, (long)buf, sizeof buf, 0);
  ksys(SYS_close, fd, 0, 0, 0);
  unsigned long caught, ignored;
  if (n <= 0 || !status_mask(buf, n, "SigCgt:", &caught) || !status_mask(buf, n, "SigIgn:", &ignored))
    return false;
  *out = caught | (ignored & 1UL << (SIGPIPE - 1));
  return true;
}

/* Handlers back to SIG_DFL (SIGPIPE too; other ignored signals stay
 * ignored, as exec would keep them). Every signal is blocked meanwhile. */
NOSAN static void reset_signals(void) {
  unsigned long reset = ~0UL;
  bool known = signals_to_reset(&reset);
  for (int s = 1; s < 65; s++) {
    if (s == SIGKILL || s == SIGSTOP || !(reset & 1UL << (s - 1))) continue;
    if (!known) { /* ask the kernel */
      struct ksigaction old;
      if (ksys(SYS_rt_sigaction, s, 0, (long)&old, 8) < 0) continue;
      if (old.handler == (void *)SIG_DFL) continue;
      if (old.handler == (void *)SIG_IGN && s != SIGPIPE) continue;
    }
    struct ksigaction dfl = {(void *)SIG_DFL, 0, 0, 0};
    ksys(SYS_rt_sigaction, s, (long)&dfl, 0, 8);
  }
}

/* close_range's CLOEXEC where it is refused (a kernel before 5.11: ENOSYS;
 * a container's seccomp profile older than the call: EPERM), as Python's
 * close_fds does without it: each descriptor above 2 that /proc/self/fd
 * lists, or without /proc every number under the RLIMIT_NOFILE soft limit.
 * (Leaving them, before, handed every descriptor the program opened
 * without O_CLOEXEC to every child: test_process
 * child_gets_only_0_1_2_without_close_range.) */
struct kdirent64 {
  unsigned long long ino;
  long long off;
  unsigned short reclen;
  unsigned char type;
  char name[];
};

NOSAN static void cloexec_above_2(void) {
  long dir = ksys(SYS_openat, AT_FDCWD, (long)"/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (dir >= 0) {
    _Alignas(8) char buf[1024];
    long n;
    while ((n = ksys(SYS_getdents64, dir, (long)buf, sizeof buf, 0)) > 0) {
      for (long at = 0; at < n;) {
        struct kdirent64 *d = (struct kdirent64 *)(buf + at);
        at += d->reclen;
        long fd = 0;
        const char *c = d->name;
        for (; *c >= '0' && *c <= '9'; c++) fd = fd * 10 + (*c - '0');
        if (c == d->name || *c || fd <= 2 || fd == dir) continue; /* ".", "..", the directory's own */
        ksys(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC, 0);
      }
    }
    ksys(SYS_close, dir, 0, 0, 0);
    if (n == 0) return; /* listed to its end */
  }
  unsigned long long lim[2]; /* struct rlimit64: soft, hard */
  if (ksys(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)lim) < 0) return;
  for (unsigned long long fd = 3; fd < lim[0] && fd <= INT_MAX; fd++)
    ksys(SYS_fcntl, (long)fd, F_SETFD, FD_CLOEXEC, 0);
}

NOSAN static int child_main(void *arg) {
  struct spawn_req *r = arg;
  long e;
  /* signals: the parent's handlers off, then an empty mask */
  reset_signals();
  unsigned long none = 0;
  ksys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, 8);
  if (r->flags & WEFT_PROCESS_NEW_SESSION) {
    if ((e = ksys(SYS_setsid, 0, 0, 0, 0)) < 0) goto fail;
  }
  if (r->flags & WEFT_PROCESS_SETPGID) {
    if ((e = ksys(SYS_setpgid, 0, r->pgid, 0, 0)) < 0) goto fail;
  }
  if (r->cwd && (e = ksys(SYS_chdir, (long)r->cwd, 0, 0, 0)) < 0) goto fail;
  /* move sources that sit on 0..2 (but not on their own target) out of the way */
  for (int i = 0; i < 3; i++) {
    int s = r->src[i];
    if (s >= 0 && s < 3 && s != i) {
      if ((e = ksys(SYS_fcntl, s, F_DUPFD_CLOEXEC, 3, 0)) < 0) goto fail;
      for (int j = i; j < 3; j++)
        if (r->src[j] == s) r->src[j] = (int)e;
    }
  }
  for (int i = 0; i < 3; i++) {
    int s = r->src[i];
    if (s < 0) continue;
    if (s == i)
      e = ksys(SYS_fcntl, i, F_SETFD, 0, 0); /* keep it across exec */
    else
      e = ksys(SYS_dup3, s, i, 0, 0);
    if (e < 0) goto fail;
  }
  if (r->err_to_out && (e = ksys(SYS_dup3, 1, 2, 0, 0)) < 0) goto fail;
  /* every other descriptor closes at exec, also those the program opened
   * without O_CLOEXEC (subprocess's close_fds=True); this child's own table */
  if (ksys(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC, 0) < 0) cloexec_above_2();
  bool has_slash = false;
  for (const char *c = r->file; *c; c++)
    if (*c == '/') has_slash = true;
  if (has_slash || !r->path) {
    r->child_errno = child_exec(r, r->file);
  } else {
    r->child_errno = child_search(r);
  }
  ksys(SYS_exit_group, 127, 0, 0, 0);
  return 127;
fail:
  r->child_errno = (int)-e;
  ksys(SYS_exit_group, 127, 0, 0, 0);
  return 127;
}

/* ------------------------------------------------------------ the parent */

/* On a pool thread: the clone, and the reaping of a child whose exec
 * failed. Returns 0 or a negative errno. */
static int do_clone(void *arg) {
  struct spawn_req *r = arg;
  unsigned long all = ~0UL, old = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, 8);
  int pidfd = -1;
  r->child_errno = 0;
  _Alignas(16) char stack[CHILD_STACK]; /* grows down: the child starts at its end */
  pid_t pid = __clone(child_main, stack + sizeof stack, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, r,
                    &pidfd);
  int e = errno;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, 8);
  if (pid < 0) return -e;
  if (r->child_errno) {
    siginfo_t si;
    while (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    close(pidfd);
    return -r->child_errno;
  }
  r->pid = pid;
  r->pidfd = pidfd;
  return 0;
}

static const char *path_of(char *const *env) {
  if (!env) return getenv("PATH");
  for (size_t i = 0; env[i]; i++)
    if (!strncmp(env[i], "PATH=", 5)) return env[i] + 5;
  return NULL;
}

static bool bad_mode(int m, bool is_err) {
  if (m == WEFT_STDIO_STDOUT) return !is_err;
  return m < WEFT_STDIO_INHERIT || m > WEFT_STDIO_FD;
}

static int count_list(char *const *v, size_t *n) {
  size_t i = 0;
  while (v[i]) {
    if (++i > MAX_ARGS) return -E2BIG;
  }
  *n = i;
  return 0;
}

static void close_if(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

int weft_process_exec(weft_process **out, const char *file, char *const argv[], const weft_process_opts *opts) {
  static const weft_process_opts none;
  if (!opts) opts = &none;
  if (!out || !file || !argv || !argv[0]) return -EINVAL;
  *out = NULL;
  if (opts->flags & ~(unsigned)(WEFT_PROCESS_NEW_SESSION | WEFT_PROCESS_SETPGID)) return -EINVAL;
  if (weft__io_backend() < 0) return -EINVAL;
  const int modes[3] = {opts->stdin_mode, opts->stdout_mode, opts->stderr_mode};
  const int given[3] = {opts->stdin_fd, opts->stdout_fd, opts->stderr_fd};
  for (int i = 0; i < 3; i++) {
    if (bad_mode(modes[i], i == 2)) return -EINVAL;
    if (modes[i] == WEFT_STDIO_FD && given[i] < 0) return -EINVAL;
  }
  size_t n;
  int rc = count_list(argv, &n);
  if (rc) return rc;
  if (opts->env && (rc = count_list(opts->env, &n))) return rc;

  int parent_end[3] = {-1, -1, -1}, child_end[3] = {-1, -1, -1}, devnull = -1;
  struct spawn_req r = {.file = file, .argv = argv, .envp = opts->env ? opts->env : environ, .cwd = opts->cwd,
                        .flags = opts->flags, .pgid = opts->pgid, .src = {-1, -1, -1}};
  r.path = path_of(opts->env);
  if (!r.path) r.path = DEFAULT_PATH;
  weft_process *p = NULL;
  for (int i = 0; i < 3; i++) {
    switch (modes[i]) {
    case WEFT_STDIO_PIPE: {
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) < 0) {
        rc = -errno;
        goto fail;
      }
      parent_end[i] = i == 0 ? fds[1] : fds[0];
      child_end[i] = i == 0 ? fds[0] : fds[1];
      r.src[i] = child_end[i];
      if (i == 0) weft__process_ignore_sigpipe();
      break;
    }
    case WEFT_STDIO_DEVNULL:
      if (devnull < 0 && (devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
        rc = -errno;
        goto fail;
      }
      r.src[i] = devnull;
      break;
    case WEFT_STDIO_FD: r.src[i] = given[i]; break;
    case WEFT_STDIO_STDOUT: r.err_to_out = true; break;
    default: break;
    }
  }
  p = weft__zalloc(sizeof *p);
  if (!p) {
    rc = -ENOMEM;
    goto fail;
  }
  rc = weft__blocking_call(do_clone, &r, WEFT__BLOCKING_RESULT);
  for (int i = 0; i < 3; i++) close_if(&child_end[i]);
  close_if(&devnull);
  if (rc) goto fail;
  p->pid = r.pid;
  p->pidfd = r.pidfd;
  weft_stream **streams[3] = {&p->in, &p->out, &p->err};
  for (int i = 0; i < 3; i++) {
    if (parent_end[i] < 0) continue;
    int fl = fcntl(parent_end[i], F_GETFL);
    if (fl >= 0) fcntl(parent_end[i], F_SETFL, fl | O_NONBLOCK);
    int fd = parent_end[i];
    parent_end[i] = -1;
    int e = weft_stream_from_fd(fd, streams[i]); /* owns fd, also on error */
    if (e) {
      weft_process_kill(p);
      weft_process_free(p); /* reaps in the background */
      for (int j = i + 1; j < 3; j++) close_if(&parent_end[j]);
      return e;
    }
  }
  *out = p;
  return 0;
fail:
  for (int i = 0; i < 3; i++) {
    close_if(&child_end[i]);
    close_if(&parent_end[i]);
  }
  close_if(&devnull);
  if (p) weft__free(p, sizeof *p);
  return rc;
}

int weft_process_shell(weft_process **out, const char *cmd, const weft_process_opts *opts) {
  if (!cmd) return -EINVAL;
  char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
  return weft_process_exec(out, "/bin/sh", argv, opts);
}
