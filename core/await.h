/* core/await.h: waiting for many awaitables at once (the collector behind
 * gather, wait, as_completed and shield; protocol in core/await.c). */
#ifndef WEFT_CORE_AWAIT_H
#define WEFT_CORE_AWAIT_H

#include <stddef.h>
#include <stdint.h>

#include <weft/task.h>

#include "core/spinlock.h"
#include "core/task.h"

typedef struct weft__sub {
  weft__done_node node;          /* linked into the awaitable's done list (keep) */
  struct weft__collector *col;   /* immutable */
  weft__task *task;              /* a task awaitable, referenced until the collector ends; else NULL */
  weft_future *future;           /* a future awaitable; else NULL */
  uint32_t index;                /* immutable: its place in the caller's array */
  bool linked;                   /* the waiting task only: subscribed and maybe not yet unsubscribed */
} weft__sub;

enum {
  WEFT__STOP_NEVER = 0,
  WEFT__STOP_ON_FAILURE = 1,       /* any negative status (gather) */
  WEFT__STOP_ON_EXCEPTION = 2,     /* a negative status other than -ECANCELED (wait FIRST_EXCEPTION) */
};

typedef struct weft__collector {
  weft__spinlock lock;
  _Atomic uint32_t refs;  /* 1 for the waiting task + 1 per linked node whose callback has not run */
  /* under lock: */
  weft__task *waiter;     /* armed: the waiting task's {task, seq} */
  uint32_t seq;
  bool armed;
  bool stop_hit;          /* a completion matched stop_on */
  int stop_on;            /* the waiting task, before subscribing: WEFT__STOP_* */
  int first_failure;      /* status of the first completion that matched stop_on */
  size_t want;            /* the waiting task: wake it when n_done reaches this */
  size_t n_done;          /* completions so far; order[0..n_done) their indices */
  size_t n;               /* immutable */
  uint32_t *order;        /* points into this allocation */
  weft__sub subs[];
} weft__collector;

/* Create a collector over aws[0..n): validates them, references the tasks
 * and subscribes to every awaitable (those already done are recorded at
 * once, in array order). Does not suspend. Errors: -EINVAL (bad awaitable,
 * outside a task), -ESRCH, -EDEADLK, -ENOMEM. */
int weft__collector_new(const weft_awaitable *aws, size_t n, int stop_on, weft__collector **out);

/* Suspend until n_done >= c->want or a stop, or until deadline
 * (INT64_MAX: none). cancellable: as weft__wait_prepare. Returns 0 when the
 * condition holds, -ETIMEDOUT, -ECANCELED, -ENOMEM. */
int weft__collector_wait(weft__collector *c, int64_t deadline, bool cancellable);

/* The result of sub i (valid once it completed). */
int weft__sub_result(weft__sub *s, void **value);
bool weft__sub_done(weft__sub *s);

/* End: unsubscribe what is still linked, drop the task references and the
 * waiting task's reference (the last reference frees the collector). */
void weft__collector_end(weft__collector *c);

#endif
