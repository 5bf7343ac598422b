/* core/deque.c: the bounded work-stealing deque (see deque.h for the roles).
 *
 * PROTOCOL
 *
 * State: two monotonically increasing uint64 indices, top (next to take) and
 * bottom (next free), and a ring of capacity = mask + 1 slots; the live items
 * are the indices [top, bottom), index i in slots[i & mask].
 *
 *   push (owner):       t = top (acquire); if bottom - t == cap: full.
 *                       slots[bottom] = item (relaxed); bottom += 1 (release).
 *   take (anyone):      t = top (acquire); b = bottom (acquire); empty if b == t;
 *                       item = slots[t] (relaxed); CAS top t -> t+1 (acq_rel);
 *                       on failure start again from fresh loads.
 *   take_half (owner):  the same with n = ceil((b - t) / 2) slots read and one
 *                       CAS t -> t+n.
 *   steal_half (thief): the same read of the victim, but the n-1 older slots
 *                       are copied straight into the thief's own (empty)
 *                       deque's slots before the CAS; after a successful CAS
 *                       one release store of the thief's bottom publishes
 *                       them, and the newest is returned. A failed CAS leaves
 *                       the copies unpublished (bottom unchanged): harmless.
 *
 * This is Go's runqput/runqgrab/runqsteal shape (copy first, then commit with
 * a CAS on the head) expressed with C11 orders.
 *
 * INVARIANTS
 *
 *   I1  top and bottom never decrease. bottom is stored by the owner only;
 *       top is changed only by CAS (all RMWs, so each later CAS continues the
 *       release sequence of every earlier one).
 *   I2  An item is owned by exactly one taker: the thread whose CAS moves top
 *       from t to t+n owns the indices [t, t+n). Two CASes cannot both move top
 *       past the same index because top only grows and each CAS expects the
 *       exact old value.
 *   I3  The owner writes slot (i & mask) for index i only when it has seen
 *       top > i - cap, i.e. after the taker of index i - cap has committed.
 *
 * MEMORY ORDERS, AND WHY THEY SUFFICE
 *
 *   (a) Publication. The owner's relaxed slot store for index i is sequenced
 *       before its release store of bottom = i+1. A taker's acquire load of
 *       bottom that reads >= i+1 (a later store by the same thread: still the
 *       same release sequence in C11, and in any case each owner store is a
 *       release) synchronizes with it, so the slot value, and everything the
 *       owner wrote into the task before pushing it, is visible. A stale
 *       bottom only makes the deque look emptier than it is.
 *
 *   (b) Slot reuse (why push loads top with acquire and the CAS is release).
 *       A taker reads slot (t & mask) BEFORE its CAS. Suppose the owner then
 *       overwrites that slot with index t + cap. By I3 the owner first read
 *       top > t. If the taker's CAS t -> t+n succeeded, the value the owner
 *       read is that CAS's write or a later RMW in its release sequence, so
 *       the CAS (release) synchronizes with the owner's load (acquire): the
 *       taker's slot read happens before the overwrite and, by read-write
 *       coherence, cannot have returned the new value. Conversely, if the
 *       taker did read the new value, the write that made top > t precedes
 *       its CAS in top's modification order, the CAS finds top != t and
 *       fails. Either way a successful CAS returns the item that was pushed
 *       at that index. (With a relaxed load in push, or a relaxed CAS, C11
 *       would allow the taker to read the overwrite and still succeed: "load
 *       buffering". Real x86 never does this; the orders make it impossible
 *       everywhere, and they cost nothing on x86.) The same argument covers
 *       a taker that read inconsistent top and bottom (bottom - top > cap):
 *       it retries without using what it read, its CAS would fail anyway.
 *
 *   (c) The thief's own deque. steal_half writes the thief's slots before the
 *       CAS on the victim, so other thieves may be reading those slots of
 *       the thief's deque at the same time. The thief loads its own top with
 *       acquire before writing (the same I3 check as push: it writes index
 *       j only when j - cap < its top, i.e. after the CAS that took the
 *       slot's previous occupant), and
 *       publishes with a release store of its bottom, as push does; the items'
 *       contents reach a third thread transitively (owner -> thief -> next
 *       thief: happens-before is transitive).
 *
 *   (d) top then bottom. A taker loads top (acquire) then bottom (acquire).
 *       The CAS that wrote the top value t it read was made by a taker that
 *       had read a bottom >= t before it; the acquire makes that read happen
 *       before ours, so by read-read coherence we read bottom >= t: the
 *       count is never negative. The code still treats b <= t as empty and
 *       b - t > cap as "stale, retry".
 *
 *   (e) No seq_cst anywhere, no fence. Classic Chase-Lev needs a seq_cst fence
 *       in the owner's pop (store bottom-1, then load top) and in steal (load
 *       top, then bottom) because the owner takes the LAST item from the
 *       bottom without a CAS and must not race with a thief taking it from the
 *       top: that is a store-load (Dekker) pattern, which only seq_cst
 *       orders. Here the owner never pops the bottom: every removal, the
 *       owner's included, is a CAS on top, so the last item is decided by
 *       top's modification order alone (I2), and push is a plain producer
 *       (store slot; release bottom). No thread ever needs to see another's
 *       store before its own later load, so acquire/release is enough. The
 *       cost is that the owner's take is a CAS (a locked instruction on
 *       x86) instead of a plain load-and-store; the LIFO slot in the worker
 *       keeps the hottest task off this path.
 *       For callers: since push is only a release store, a push followed by
 *       a load elsewhere (the pusher checking for parked workers, against a
 *       parker that announced itself and then checks the deques) is a
 *       store-load pair that the deque does NOT order: the idle protocol
 *       brings its own seq_cst fences (core/idle.c).
 *
 * PROGRESS: push is wait-free; take, take_half and steal_half are lock-free
 * (a CAS fails only because another taker's CAS succeeded).
 *
 * REJECTED
 *   - Owner LIFO pop at the bottom (classic Chase-Lev): needs the seq_cst
 *     fences above, and a yielding task would run again before the others.
 *   - Tokio's packed (steal, real) head pair, which stops the owner from
 *     overwriting slots while a thief copies: it makes the thief claim before
 *     copying and release afterwards (two CASes per steal) and blocks other
 *     thieves meanwhile; copy-then-CAS needs one CAS, and a copy spoiled by a
 *     wrap-around is simply discarded by the failing CAS (b).
 *   - A growable array: overflow goes to the global inject queue in batches
 *     of half the deque (take_half), which also feeds idle workers.
 */
#include "core/deque.h"

#include <assert.h>

/* Load the owner's own bottom. Only the owner stores it, so the owner reads
 * its own latest store: relaxed suffices (coherence, same thread). */
static inline uint64_t owner_bottom(const weft__deque *d) {
  return weft__load(&d->bottom, RELAXED); /* relaxed: own store, see above */
}

void weft__deque_init(weft__deque *d, uint32_t capacity) {
  assert(capacity >= 2 && capacity <= WEFT_DEQUE_CAP && (capacity & (capacity - 1)) == 0);
  /* relaxed stores: the deque is not shared yet; whoever publishes the deque
   * to other threads (thread creation, a release store) orders these. */
  weft__store(&d->top, 0, RELAXED);
  weft__store(&d->bottom, 0, RELAXED);
  d->top_seen = 0;
  d->mask = capacity - 1;
  for (uint32_t i = 0; i < WEFT_DEQUE_CAP; i++) weft__store(&d->slots[i], NULL, RELAXED);
}

size_t weft__deque_sizeof(void) { return sizeof(weft__deque); }

uint32_t weft__deque_push(weft__deque *d, void *item) {
  assert(item != NULL);
  uint64_t b = owner_bottom(d);
  uint64_t t = d->top_seen;
  if (b - t > d->mask || b - t < WEFT_DEQUE_EXACT_LEN) {
    /* acquire: pairs with the release half of the takers' CAS on top, so the
     * read of the slot we may now overwrite (index b - cap) by the taker that
     * claimed it happened before our store below (protocol (b)). Skipped
     * while an earlier observed top (top_seen, also acquired) already proves
     * the slot free and the count is large enough not to need an exact value. */
    t = weft__load(&d->top, ACQUIRE);
    d->top_seen = t;
  }
  assert(b - t <= (uint64_t)d->mask + 1);
  if (b - t > d->mask) return 0; /* b - t == capacity: full */
  /* relaxed: published by the release store of bottom just below */
  weft__store(&d->slots[b & d->mask], item, RELAXED);
  /* release: pairs with the takers' acquire load of bottom: they see the
   * slot and the item's contents (protocol (a)). */
  weft__store(&d->bottom, b + 1, RELEASE);
  return (uint32_t)(b + 1 - t);
}

uint32_t weft__deque_push_batch(weft__deque *d, void *const *items, uint32_t n) {
  uint64_t b = owner_bottom(d);
  /* acquire: as in push (protocol (b)), for every slot written below */
  uint64_t t = weft__load(&d->top, ACQUIRE);
  d->top_seen = t;
  assert(b - t <= (uint64_t)d->mask + 1);
  if (n == 0 || b - t + n > (uint64_t)d->mask + 1) return 0;
  for (uint32_t i = 0; i < n; i++) {
    assert(items[i] != NULL);
    /* relaxed: published by the release store of bottom below */
    weft__store(&d->slots[(b + i) & d->mask], items[i], RELAXED);
  }
  /* release: as in push (protocol (a)), for all n slots at once */
  weft__store(&d->bottom, b + n, RELEASE);
  return (uint32_t)(b + n - t);
}

/* Read the current (top, bottom) pair of d for a taker; returns the count
 * b - t, or 0 when empty. A pair read across concurrent changes (count >
 * capacity: top is stale) is re-read (protocol (d)). */
static inline uint64_t load_range(const weft__deque *d, uint64_t *top_out) {
  for (;;) {
    /* acquire: pairs with the release half of the previous taker's CAS, so
     * the bottom we read next is at least the one that taker saw (d). */
    uint64_t t = weft__load(&d->top, ACQUIRE);
    /* acquire: pairs with the owner's release store in push/steal_half: the
     * slots below b are visible (a). */
    uint64_t b = weft__load(&d->bottom, ACQUIRE);
    *top_out = t;
    if ((int64_t)(b - t) <= 0) return 0;
    if (b - t <= (uint64_t)d->mask + 1) return b - t;
    weft__cpu_relax(); /* top moved on (and the owner pushed) between the loads */
  }
}

void *weft__deque_take(weft__deque *d) {
  uint64_t t;
  while (load_range(d, &t) != 0) {
    /* relaxed: bottom's acquire made the push visible; a racing overwrite
     * (wrap-around) makes the CAS below fail (protocol (b)). */
    void *item = weft__load(&d->slots[t & d->mask], RELAXED);
    /* acq_rel: release pairs with push's acquire load of top (the owner
     * may reuse the slot only after our read); acquire pairs with the
     * previous taker's release, as the load of top in load_range does.
     * On failure we simply start again from fresh loads. */
    if (weft__cas(&d->top, &t, t + 1, ACQ_REL, RELAXED)) return item;
    weft__cpu_relax();
  }
  return NULL;
}

uint32_t weft__deque_take_half(weft__deque *d, void **out, uint32_t max) {
  uint64_t t, n;
  while (max != 0 && (n = load_range(d, &t)) != 0) {
    n -= n / 2; /* ceil(n / 2): one item is taken too */
    if (n > max) n = max;
    for (uint64_t i = 0; i < n; i++)
      /* relaxed: the owner wrote these slots itself; thieves never write
       * them, and the owner is here, not in push */
      out[i] = weft__load(&d->slots[(t + i) & d->mask], RELAXED);
    /* acq_rel: as in take(); the release lets a later push reuse the slots
     * (b). */
    if (weft__cas(&d->top, &t, t + n, ACQ_REL, RELAXED)) {
      d->top_seen = t + n; /* our own CAS: see top_seen in deque.h */
      return (uint32_t)n;
    }
    weft__cpu_relax();
  }
  return 0;
}

void *weft__deque_steal_half(weft__deque *victim, weft__deque *dst) {
  assert(victim != dst);
  uint64_t db = owner_bottom(dst); /* we own dst */
  /* acquire: pairs with the release half of the CASes of the thieves that
   * took from dst, before we overwrite slots they read (protocol (c)). */
  uint64_t dt = weft__load(&dst->top, ACQUIRE);
  dst->top_seen = dt;
  uint64_t room = (uint64_t)dst->mask + 1 - (db - dt); /* dst should be empty: room = cap */
  assert(db - dt <= (uint64_t)dst->mask + 1);
  uint64_t t, n;
  while ((n = load_range(victim, &t)) != 0) {
    n -= n / 2;                     /* ceil(n / 2) */
    if (n > room + 1) n = room + 1; /* n - 1 into dst, one returned */
    for (uint64_t i = 0; i + 1 < n; i++) {
      /* relaxed both: the victim's slots were published by its bottom's
       * acquire (a) and a racing overwrite fails our CAS (b); our own slots
       * are published by the release store of dst->bottom below (c). */
      void *item = weft__load(&victim->slots[(t + i) & victim->mask], RELAXED);
      weft__store(&dst->slots[(db + i) & dst->mask], item, RELAXED);
    }
    /* relaxed: as above */
    void *last = weft__load(&victim->slots[(t + n - 1) & victim->mask], RELAXED);
    /* acq_rel: release pairs with the victim owner's acquire load of top in
     * push (it reuses these slots only after our reads); acquire pairs with
     * the previous taker's release, as in take(). */
    if (weft__cas(&victim->top, &t, t + n, ACQ_REL, RELAXED)) {
      if (n > 1)
        /* release: pairs with the acquire load of dst->bottom by whoever
         * takes from dst (us, or thieves): publishes the copied slots and,
         * transitively, the tasks' contents (c). */
        weft__store(&dst->bottom, db + n - 1, RELEASE);
      return last;
    }
    weft__cpu_relax();
  }
  return NULL;
}

uint32_t weft__deque_len(const weft__deque *d) {
  /* relaxed both: an estimate, nothing is read through it; two loads of
   * moving indices may be mutually stale, the clamps below cover that. */
  uint64_t t = weft__load(&d->top, RELAXED);
  uint64_t b = weft__load(&d->bottom, RELAXED);
  if ((int64_t)(b - t) <= 0) return 0;
  if (b - t > (uint64_t)d->mask + 1) return d->mask + 1;
  return (uint32_t)(b - t);
}
