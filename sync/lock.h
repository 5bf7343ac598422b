/* sync/lock.h: what the condition (sync/cond.c) needs of the lock. */
#ifndef WEFT_SYNC_LOCK_H
#define WEFT_SYNC_LOCK_H

#include <stdbool.h>

#include <weft/sync.h>

/* Whether the calling task (or thread) holds l. */
bool weft__lock_held_by_self(weft_lock *l);

/* Take l from a task, in a wait that cancellation does not end (a cancel
 * request stays pending). The condition takes its lock back this way. */
void weft__lock_acquire_uncancellable(weft_lock *l);

#endif
