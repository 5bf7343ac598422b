/* tests/seccomp_util.h: refuse one system call to the calling test's
 * process (each test runs in its own forked process, tests/test.h), as a
 * kernel without it (ENOSYS) or a container's seccomp profile that predates
 * it (EPERM) would. Skips the test where seccomp filters cannot be set. */
#ifndef WEFT_TESTS_SECCOMP_UTIL_H
#define WEFT_TESTS_SECCOMP_UTIL_H

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test.h"

#if defined(__x86_64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define THIS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* From now on, system call nr fails with err in this process; checked by
 * a direct call with the arguments a0..a2 (which must not succeed or block
 * if the filter did not hold). */
static inline void refuse_syscall(long nr, int err, long a0, long a1, long a2) {
#ifndef THIS_AUDIT_ARCH
  (void)nr, (void)err, (void)a0, (void)a1, (void)a2;
  TEST_SKIP("no seccomp architecture constant for this CPU");
#else
  struct sock_filter prog[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, THIS_AUDIT_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW), /* another ABI: leave it alone */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog fprog = {.len = sizeof prog / sizeof prog[0], .filter = prog};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) TEST_SKIP("prctl(PR_SET_NO_NEW_PRIVS) refused");
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) TEST_SKIP("seccomp filters refused here");
  /* the filter works: a direct call now fails as a refused kernel would */
  ASSERT_EQ(syscall(nr, a0, a1, a2), -1);
  ASSERT_EQ(errno, err);
#endif
}

#endif
