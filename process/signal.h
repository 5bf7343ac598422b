/* process/signal.h: what weft_run (core/runtime.c) uses of
 * process/signal.c: a one-shot SIGINT watch that cancels the main task.
 * begin/end run as tasks of the runtime (weft_runtime_call). */
#ifndef WEFT_PROCESS_SIGNAL_H
#define WEFT_PROCESS_SIGNAL_H

#include <stdbool.h>

#include <weft/process.h>

/* The watch is added before main is submitted (so that main never sees a
 * descriptor appear under it), then armed with main's handle. A SIGINT
 * that arrives in between is not lost: the watch's function and arm each
 * set their flag, then look at the other's (seq_cst: a Dekker pattern, at
 * least one of them sees both), and `cancelled` lets only one cancel. */
typedef struct weft__run_sigint {
  weft_task main;             /* the task the first SIGINT cancels: written before `armed` */
  weft_signal_watch *watch;
  _Atomic int armed;          /* main is set */
  _Atomic int interrupted;    /* a SIGINT arrived */
  _Atomic int cancelled;      /* main was cancelled (once) */
} weft__run_sigint;

/* A watch installed with SA_RESETHAND when oneshot (the kernel puts the
 * action back to SIG_DFL at the first delivery). */
int weft__signal_watch_add(weft_signal_watch **out, int signo, weft_signal_fn fn, void *arg, bool oneshot);

/* Shutdown, once every task of rt has ended (core/runtime.c): free the
 * watches of rt that were never removed. */
void weft__signal_runtime_end(weft_runtime *rt);

/* SIGINT is SIG_DFL and not blocked in the calling thread. */
bool weft__run_sigint_wanted(void);
int weft__run_sigint_begin(void *r);
int weft__run_sigint_end(void *r);
/* Give the watch main's handle. Any thread. */
void weft__run_sigint_arm(weft__run_sigint *r, weft_task main);

#endif
