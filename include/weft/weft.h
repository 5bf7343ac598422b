/* weft/weft.h: the umbrella header. Including it gives the whole public API.
 *
 * weft runs green tasks (stackful coroutines) on N worker threads that steal
 * work from each other, each with its own io_uring (or epoll) reactor, and
 * offers Python asyncio's programming model on top. Start with weft_run() in
 * weft/core.h. Conventions used by every header:
 *  - functions return 0 or a non-negative count on success and a negative
 *    errno on failure; nothing the caller must read is left in errno;
 *  - every call that can suspend the calling task says "Suspends." and is a
 *    cancellation point (-ECANCELED);
 *  - durations are int64_t nanoseconds, deadlines CLOCK_MONOTONIC nanoseconds;
 *  - calls marked "Any thread." may be made from threads outside the runtime.
 */
#ifndef WEFT_WEFT_H
#define WEFT_WEFT_H

#include <weft/version.h>
#include <weft/core.h>
#include <weft/task.h>
#include <weft/sync.h>
#include <weft/io.h>
#include <weft/net.h>
#include <weft/tls.h>
#include <weft/protocol.h>
#include <weft/process.h>

#endif
