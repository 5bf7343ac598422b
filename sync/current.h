/* sync/current.h: the calling task, for the primitives' fast paths.
 *
 * weft__task_self() costs two calls (it calls weft__worker_self(), which
 * must stay out of line so that no caller caches a thread-local address
 * across a switch). The primitives' fast paths call it once per operation
 * and never suspend between that call and the use, so one out-of-line call
 * (weft__worker_self) is enough: ~1-2 ns of a 15 ns lock round trip. */
#ifndef WEFT_SYNC_CURRENT_H
#define WEFT_SYNC_CURRENT_H

#include "core/task.h"
#include "core/worker.h"

static inline weft__task *weft__sync_current(void) {
  weft__worker *w = weft__worker_self();
  return w ? w->current : NULL;
}

#endif
