/* core/inbox.c: a worker's MPSC inbox (see inbox.h).
 *
 * PROTOCOL: a Treiber stack that is only ever pushed node by node and
 * emptied whole.
 *   push (any thread):   old = head; do { node->next = old; }
 *                        while (!CAS(head, old -> node, release));
 *   take_all (owner):    list = exchange(head, NULL, acquire); reverse it.
 *
 * INVARIANTS
 *   - head is NULL or the newest node; following next gives older nodes,
 *     ending in NULL; a node is in at most one inbox at a time.
 *   - The order of the chain is the modification order of head, i.e. the
 *     order in which the pushes' CASes took effect; take_all reverses it,
 *     so the consumer sees pushes oldest first, and successive take_all
 *     calls see successive batches. In particular the pushes of any one
 *     producer come out in the order it made them.
 *
 * MEMORY ORDERS
 *   - push's CAS is release: it publishes node->next (a plain store) and
 *     everything the producer wrote into the node before pushing. The
 *     consumer's exchange (acquire) reads the newest head value; every push
 *     CAS is an RMW, so the CAS that wrote that value continues the release
 *     sequence of every earlier push's CAS, and the exchange synchronizes
 *     with all of them: the whole chain is visible.
 *   - A failed CAS reloads head relaxed: the producer only stores the value
 *     into node->next and never dereferences it.
 *   - No ABA: a push needs only node->next == head at the moment its CAS
 *     takes effect, and the CAS checks exactly that. If in between the
 *     consumer took everything and the same address was pushed again, head
 *     == old still means old is the current newest node, and linking to it
 *     is still right (a pop-one Treiber stack has ABA because it reads
 *     old->next; nothing here does).
 *
 * PROGRESS: push is lock-free, take_all wait-free.
 *
 * REJECTED: a Vyukov intrusive MPSC queue (FIFO without the reversal) has a
 * window where a producer preempted between its exchange and its link
 * store hides every later node from the consumer; the reversal here costs
 * one pass over a batch the consumer walks anyway.
 */
#include "core/inbox.h"

#include <assert.h>
#include <stddef.h>

void weft__inbox_init(weft__inbox *b) {
  weft__store(&b->head, NULL, RELAXED); /* relaxed: not shared yet */
}

bool weft__inbox_push(weft__inbox *b, weft__link *node) {
  assert(node != NULL);
  /* relaxed: only stored into node->next below; the CAS checks it */
  weft__link *old = weft__load(&b->head, RELAXED);
  do {
    node->next = old;
    /* release: pairs with the acquire exchange in take_all, publishing
     * node->next and the node's contents; failure relaxed: see above. */
  } while (!weft__cas_weak(&b->head, &old, node, RELEASE, RELAXED));
  return old == NULL;
}

weft__link *weft__inbox_take_all(weft__inbox *b) {
  /* acquire: pairs with the release CAS of every push in the chain (they
   * form one release sequence, see the opening comment). */
  weft__link *h = weft__xchg(&b->head, NULL, ACQUIRE);
  weft__link *prev = NULL;
  while (h) { /* reverse: newest-first -> oldest-first */
    weft__link *next = h->next;
    h->next = prev;
    prev = h;
    h = next;
  }
  return prev;
}
