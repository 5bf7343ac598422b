/* core/shield.c: asyncio.shield: await an awaitable without passing the
 * caller's cancellation on to it.
 *
 * weft_join and weft_future_await forward a cancellation to what they wait
 * for (asyncio's `await`); shield waits through a collector of one
 * (core/await.c) instead, whose wait simply returns -ECANCELED when the
 * caller is cancelled: the inner task or future is not touched and goes on,
 * its done node is unsubscribed, and whoever else awaits it later gets its
 * result. A completion at the same moment as the cancellation: the caller
 * still reports -ECANCELED (asyncio: the outer future is cancelled first).
 */
#include <errno.h>

#include <weft/task.h>

#include "core/await.h"
#include "core/task.h"

int weft_shield(weft_awaitable a, void **value) {
  if (value) *value = NULL;
  if (!weft__task_self()) return -EINVAL;
  /* Done already: asyncio.shield returns the inner itself, whose await
   * does not suspend, so its result comes back even to a caller with a
   * cancel pending (which stays pending), as weft_await gives it. The
   * collector alone would wait for the recording of a task or future whose
   * status is final but whose finisher still runs earlier done callbacks
   * (a subscription made then is taken up behind them): a cancellation
   * point that join has not, and -ECANCELED for a done awaitable. */
  if (weft_aw_done(a)) return weft_aw_result(a, value);
  weft__collector *c;
  int rc = weft__collector_new(&a, 1, WEFT__STOP_NEVER, &c);
  if (rc) return rc;
  rc = weft__collector_wait(c, INT64_MAX, true);
  if (rc == 0) rc = weft__sub_result(&c->subs[0], value);
  weft__collector_end(c);
  return rc;
}
