/* core/future.h: the future's internals that core/await.c needs. */
#ifndef WEFT_CORE_FUTURE_H
#define WEFT_CORE_FUTURE_H

#include <weft/task.h>

#include "core/task.h"

/* Subscribe a callback node (cb(WEFT_TASK_NULL, cb_arg) runs when f
 * completes): 1 when f is done already (nothing linked), else 0. Unsubscribe:
 * true when it was still linked (its callback will not run). Any thread. */
int weft__future_subscribe(weft_future *f, weft__done_node *n);
bool weft__future_unsubscribe(weft_future *f, weft__done_node *n);
/* The status of a done future (valid in its callbacks and after done). */
int weft__future_status(weft_future *f);

#endif
