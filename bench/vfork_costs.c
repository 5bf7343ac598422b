/* bench/vfork_costs.c: what process/spawn.c's choices cost the thread that
 * spawns, without weft around them (process/README.md quotes its output).
 *
 *     build/release/bench/vfork_costs [rounds=3] [n=1000]
 *
 * Each case clones a CLONE_VM|CLONE_VFORK child that does the case's work
 * and exits (no exec: the exec is the same in every case), and times the
 * clone call: the parent is suspended until the child has exited, so the
 * time is the window in which the spawning thread waits. Another thread of
 * this process spins on the other CPU meanwhile (weft's workers), so that
 * a munmap has a second CPU to flush. Printed per case: the minimum (the
 * figure a loaded machine moves least) and the mean, in microseconds.
 *
 * Cases: nothing; the child asks the kernel for all 64 signal actions
 * (glibc's posix_spawn, and spawn.c before); the child reads
 * /proc/self/status and sets 4 actions (spawn.c now); the child touches
 * 6 KiB of a stack mmap'ed for it and munmap'ed after (spawn.c before)
 * against the same on a reused array (spawn.c now). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STACK (32 * 1024)

struct ksigaction {
  void *handler;
  unsigned long flags;
  void *restorer;
  unsigned long mask;
};

enum { NOTHING, ASK_64, STATUS_4, TOUCH_STACK, N_CASES };
static const char *names[N_CASES] = {
    "nothing", "64 rt_sigaction questions", "/proc/self/status + 4 rt_sigaction", "touch 6 KiB of stack"};

static int child(void *arg) {
  int what = (int)(long)arg;
  if (what == ASK_64) {
    for (int s = 1; s < 65; s++) {
      struct ksigaction old;
      if (s != SIGKILL && s != SIGSTOP) syscall(SYS_rt_sigaction, s, NULL, &old, 8);
    }
  } else if (what == STATUS_4) {
    char buf[4096];
    long fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      syscall(SYS_read, fd, buf, sizeof buf);
      syscall(SYS_close, fd);
    }
    struct ksigaction dfl = {SIG_DFL, 0, NULL, 0};
    for (int i = 0; i < 4; i++) syscall(SYS_rt_sigaction, SIGUSR1, &dfl, NULL, 8);
  } else if (what == TOUCH_STACK) {
    volatile char buf[6 * 1024];
    for (size_t i = 0; i < sizeof buf; i += 512) buf[i] = 1;
  }
  syscall(SYS_exit_group, 0);
  return 0;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static atomic_bool stop;
static void *spinner(void *arg) {
  (void)arg;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) sched_yield();
  return NULL;
}

/* One case n times: the clone's duration, min and mean. */
static void run(const char *label, int what, bool fresh_stack, int n) {
  static _Alignas(16) char reused[STACK];
  double best = 1e18, sum = 0;
  for (int i = 0; i < n; i++) {
    double t0 = now_us();
    char *stack = reused;
    if (fresh_stack) {
      stack = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
      if (stack == MAP_FAILED) exit(1);
    }
    pid_t pid = clone(child, stack + STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)(long)what);
    if (fresh_stack) munmap(stack, STACK);
    double us = now_us() - t0;
    if (pid < 0 || waitpid(pid, NULL, 0) != pid) exit(1);
    sum += us;
    if (us < best) best = us;
  }
  printf("| %s | %.1f | %.1f |\n", label, best, sum / n);
}

int main(int argc, char **argv) {
  int rounds = 3, n = 1000;
  for (int i = 1; i < argc; i++) {
    if (!strncmp(argv[i], "rounds=", 7)) rounds = atoi(argv[i] + 7);
    else if (!strncmp(argv[i], "n=", 2)) n = atoi(argv[i] + 2);
  }
  if (rounds < 1 || n < 1) {
    fprintf(stderr, "usage: vfork_costs [rounds=3] [n=1000]\n");
    return 2;
  }
  pthread_t t;
  if (pthread_create(&t, NULL, spinner, NULL)) return 1;
  printf("| case | min us | mean us |\n| --- | --- | --- |\n");
  for (int r = 0; r < rounds; r++) {
    for (int c = NOTHING; c < TOUCH_STACK; c++) run(names[c], c, false, n);
    run("touch 6 KiB of a reused stack", TOUCH_STACK, false, n);
    run("touch 6 KiB of a fresh mmap'ed stack, munmap", TOUCH_STACK, true, n);
  }
  atomic_store(&stop, true);
  pthread_join(t, NULL);
  return 0;
}
