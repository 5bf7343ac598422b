/* process/signal.h: what weft_run (core/runtime.c) uses of
 * process/signal.c: a one-shot SIGINT watch that cancels the main task.
 * begin/end run as tasks of the runtime (weft_runtime_call). */
#ifndef WEFT_PROCESS_SIGNAL_H
#define WEFT_PROCESS_SIGNAL_H

#include <stdbool.h>

#include <weft/process.h>

typedef struct weft__run_sigint {
  weft_task main;             /* the task the first SIGINT cancels */
  weft_signal_watch *watch;
  _Atomic int interrupted;    /* a SIGINT cancelled main */
} weft__run_sigint;

/* A watch installed with SA_RESETHAND when oneshot (the kernel puts the
 * action back to SIG_DFL at the first delivery). */
int weft__signal_watch_add(weft_signal_watch **out, int signo, weft_signal_fn fn, void *arg, bool oneshot);

/* SIGINT is SIG_DFL and not blocked in the calling thread. */
bool weft__run_sigint_wanted(void);
int weft__run_sigint_begin(void *r);
int weft__run_sigint_end(void *r);

#endif
