/* process/process.h: the process handle shared by process/spawn.c (which
 * creates it) and process/process.c (wait, signals, communicate, free).
 *
 * STATE. pid, pidfd and the three streams are written once by the spawn
 * call before the handle is returned, and are immutable until free.
 * `reaped` goes 0 -> 1 once, with a release store after `returncode` was
 * written (readers acquire it: any thread may ask for the return code).
 * `reaping` is a claim (CAS 0 -> 1) that lets exactly one task at a time
 * call waitid on the pidfd, so that two concurrent waiters never race for
 * the status (the loser would get ECHILD).
 */
#ifndef WEFT_PROCESS_PROCESS_H
#define WEFT_PROCESS_PROCESS_H

#include <sys/types.h>

#include <weft/process.h>

#include "core/atomic.h"
#include "core/task.h"

struct weft_process {
  pid_t pid;
  int pidfd;                 /* O_CLOEXEC (CLONE_PIDFD sets it) */
  weft_stream *in, *out, *err;
  int returncode;            /* valid once reaped */
  _Atomic int reaped;        /* 0 -> 1: release after returncode */
  _Atomic int reaping;       /* the waitid claim */
  weft__done_node reaper_end; /* free's reaper task's end: releases the handle (process.c, FREE) */
};

/* Try to reap without blocking: 1 reaped (now or before), 0 still
 * running (or another task holds the claim), or a negative errno. */
int weft__process_try_reap(weft_process *p);

/* Set SIGPIPE to SIG_IGN if it is SIG_DFL (once per process). */
void weft__process_ignore_sigpipe(void);

#endif
