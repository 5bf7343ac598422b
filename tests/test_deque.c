/* tests/test_deque.c: the work-stealing deque (core/deque.c).
 *
 * Unit tests check each operation's amounts and order on one thread, and a
 * randomised model test runs millions of operations on tiny capacities
 * against a reference FIFO, so the indices wrap the ring many times.
 *
 * Stress tests run one owner and several thieves and count every item: each
 * item must be taken exactly once (a per-item atomic counter, checked as it
 * is bumped and again at the end, with the total). Each item carries a plain
 * (non-atomic) payload written by the owner before the push and checked and
 * overwritten by the taker, so that a missing release/acquire pair or an
 * item handed out twice is a ThreadSanitizer report, not only a wrong count.
 * They also check an order invariant the protocol gives: the owner pushes
 * items in index order, and take/take_half/steal_half always move an
 * oldest-first prefix, so every deque holds an increasing sequence; hence
 * whatever one thread takes from one deque in a row is increasing, and the
 * items a thief finds in its own deque after a steal are increasing and
 * older than the one the steal returned. Small capacities (2, 4, 16) make
 * the full, overflow and wrap-around paths hot. WEFT_STRESS=long multiplies
 * the counts by 10 (in rounds: memory stays bounded); sanitizer builds
 * divide them by 2.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "core/deque.h"
#include "tests/test.h"


#define ITEM(i) ((void *)(uintptr_t)((uint64_t)(i) + 1))
#define VAL(p) ((uint64_t)(uintptr_t)(p)-1)

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* ---- unit tests -------------------------------------------------------- */

TEST(init_empty) {
  static weft__deque d;
  weft__deque_init(&d, WEFT_DEQUE_CAP);
  ASSERT_EQ(weft__deque_len(&d), 0);
  ASSERT_EQ(weft__deque_capacity(&d), WEFT_DEQUE_CAP);
  ASSERT_PTR_EQ(weft__deque_take(&d), NULL);
  void *out[4];
  ASSERT_EQ(weft__deque_take_half(&d, out, 4), 0);
  static weft__deque dst;
  weft__deque_init(&dst, 4);
  ASSERT_PTR_EQ(weft__deque_steal_half(&d, &dst), NULL);
  ASSERT_EQ(weft__deque_len(&dst), 0);
  ASSERT_TRUE(weft__deque_sizeof() == sizeof(weft__deque));
}

TEST(push_take_fifo) {
  static weft__deque d;
  for (uint32_t cap = 2; cap <= WEFT_DEQUE_CAP; cap *= 2) {
    weft__deque_init(&d, cap);
    for (uint32_t i = 0; i < cap; i++) {
      ASSERT_TRUE(weft__deque_push(&d, ITEM(i)));
      ASSERT_EQ(weft__deque_len(&d), i + 1);
    }
    ASSERT_TRUE(!weft__deque_push(&d, ITEM(cap))); /* full */
    ASSERT_EQ(weft__deque_len(&d), cap);
    for (uint32_t i = 0; i < cap; i++) ASSERT_PTR_EQ(weft__deque_take(&d), ITEM(i));
    ASSERT_PTR_EQ(weft__deque_take(&d), NULL);
    ASSERT_EQ(weft__deque_len(&d), 0);
  }
}

TEST(full_then_room_again) {
  static weft__deque d;
  weft__deque_init(&d, 4);
  for (int i = 0; i < 4; i++) ASSERT_TRUE(weft__deque_push(&d, ITEM(i)));
  ASSERT_TRUE(!weft__deque_push(&d, ITEM(99)));
  ASSERT_PTR_EQ(weft__deque_take(&d), ITEM(0));
  ASSERT_TRUE(weft__deque_push(&d, ITEM(4))); /* reuses slot 0 */
  ASSERT_TRUE(!weft__deque_push(&d, ITEM(99)));
  for (int i = 1; i <= 4; i++) ASSERT_PTR_EQ(weft__deque_take(&d), ITEM(i));
  ASSERT_PTR_EQ(weft__deque_take(&d), NULL);
}

TEST(take_half_amounts) {
  static weft__deque d;
  static const struct {
    uint32_t n, max, want;
  } cases[] = {{0, 8, 0},  {1, 8, 1},   {2, 8, 1},   {3, 8, 2},     {7, 8, 4},   {10, 100, 5},
               {10, 2, 2}, {10, 0, 0},  {256, 256, 128}, {256, 300, 128}, {255, 256, 128}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    weft__deque_init(&d, WEFT_DEQUE_CAP);
    for (uint32_t i = 0; i < cases[c].n; i++) ASSERT_TRUE(weft__deque_push(&d, ITEM(i)));
    void *out[300];
    uint32_t k = weft__deque_take_half(&d, out, cases[c].max);
    ASSERT_EQ(k, cases[c].want);
    for (uint32_t i = 0; i < k; i++) ASSERT_PTR_EQ(out[i], ITEM(i)); /* oldest first */
    ASSERT_EQ(weft__deque_len(&d), cases[c].n - k);
    for (uint32_t i = k; i < cases[c].n; i++) ASSERT_PTR_EQ(weft__deque_take(&d), ITEM(i));
    ASSERT_PTR_EQ(weft__deque_take(&d), NULL);
  }
}

/* Steal from a victim holding n items into an empty dst of capacity dcap:
 * the thief claims ceil(n/2), at most dcap + 1; dst gets all but the newest,
 * oldest first; the newest is returned. */
static void check_steal(uint32_t vcap, uint32_t n, uint32_t dcap, uint32_t start) {
  static weft__deque v, dst;
  weft__deque_init(&v, vcap);
  weft__deque_init(&dst, dcap);
  /* move the indices away from 0 so the copy wraps both rings */
  for (uint32_t i = 0; i < start; i++) {
    ASSERT_TRUE(weft__deque_push(&v, ITEM(0)));
    ASSERT_TRUE(weft__deque_push(&dst, ITEM(0)));
    ASSERT_PTR_EQ(weft__deque_take(&v), ITEM(0));
    ASSERT_PTR_EQ(weft__deque_take(&dst), ITEM(0));
  }
  for (uint32_t i = 0; i < n; i++) ASSERT_TRUE(weft__deque_push(&v, ITEM(i)));
  uint32_t want = n - n / 2;
  if (want > dcap + 1) want = dcap + 1;
  void *got = weft__deque_steal_half(&v, &dst);
  if (n == 0) {
    ASSERT_PTR_EQ(got, NULL);
    return;
  }
  ASSERT_PTR_EQ(got, ITEM(want - 1));
  ASSERT_EQ(weft__deque_len(&dst), want - 1);
  ASSERT_EQ(weft__deque_len(&v), n - want);
  for (uint32_t i = 0; i + 1 < want; i++) ASSERT_PTR_EQ(weft__deque_take(&dst), ITEM(i));
  ASSERT_PTR_EQ(weft__deque_take(&dst), NULL);
  for (uint32_t i = want; i < n; i++) ASSERT_PTR_EQ(weft__deque_take(&v), ITEM(i));
  ASSERT_PTR_EQ(weft__deque_take(&v), NULL);
}

TEST(steal_half_amounts) {
  check_steal(256, 0, 256, 0);
  check_steal(256, 1, 256, 0);   /* one item: returned, dst stays empty */
  check_steal(256, 2, 256, 0);   /* 1: returned */
  check_steal(256, 3, 256, 0);   /* 2: one into dst */
  check_steal(256, 10, 256, 0);  /* 5 */
  check_steal(256, 256, 256, 0); /* 128 */
  check_steal(256, 256, 4, 0);   /* bounded by dst: 4 into dst + 1 */
  check_steal(256, 256, 2, 0);   /* 2 + 1 */
  check_steal(16, 16, 16, 13);   /* wrapped victim and dst */
  check_steal(16, 15, 4, 7);
  check_steal(2, 2, 2, 1);
  check_steal(4, 4, 2, 3);
}

TEST(steal_half_into_nonempty_dst) {
  /* The contract asks for an empty dst; a non-empty one is still safe: the
   * steal is bounded by dst's free room + 1. */
  static weft__deque v, dst;
  weft__deque_init(&v, 256);
  weft__deque_init(&dst, 4);
  for (int i = 0; i < 10; i++) ASSERT_TRUE(weft__deque_push(&v, ITEM(i)));
  ASSERT_TRUE(weft__deque_push(&dst, ITEM(100)));
  ASSERT_TRUE(weft__deque_push(&dst, ITEM(101)));
  ASSERT_PTR_EQ(weft__deque_steal_half(&v, &dst), ITEM(2)); /* 2 into dst + 1 */
  ASSERT_EQ(weft__deque_len(&dst), 4);
  ASSERT_PTR_EQ(weft__deque_take(&dst), ITEM(100));
  ASSERT_PTR_EQ(weft__deque_take(&dst), ITEM(101));
  ASSERT_PTR_EQ(weft__deque_take(&dst), ITEM(0));
  ASSERT_PTR_EQ(weft__deque_take(&dst), ITEM(1));
  ASSERT_EQ(weft__deque_len(&v), 7);
  /* full dst: room 0, one item is still taken and returned */
  for (int i = 0; i < 4; i++) ASSERT_TRUE(weft__deque_push(&dst, ITEM(200 + i)));
  ASSERT_PTR_EQ(weft__deque_steal_half(&v, &dst), ITEM(3));
  ASSERT_EQ(weft__deque_len(&dst), 4);
  ASSERT_EQ(weft__deque_len(&v), 6);
}

TEST(len_tracks_operations) {
  static weft__deque d;
  weft__deque_init(&d, 8);
  void *out[8];
  for (int i = 0; i < 8; i++) ASSERT_TRUE(weft__deque_push(&d, ITEM(i)));
  ASSERT_EQ(weft__deque_len(&d), 8);
  ASSERT_EQ(weft__deque_take_half(&d, out, 8), 4);
  ASSERT_EQ(weft__deque_len(&d), 4);
  ASSERT_TRUE(weft__deque_take(&d) != NULL);
  ASSERT_EQ(weft__deque_len(&d), 3);
  for (int i = 0; i < 5; i++) ASSERT_TRUE(weft__deque_push(&d, ITEM(i)));
  ASSERT_EQ(weft__deque_len(&d), 8);
}

/* Single-threaded model test: random operations on two tiny deques (a and b,
 * each also used as the other's thief deque) checked against reference FIFOs,
 * for millions of operations, so the indices wrap the rings again and again. */
TEST(wrap_around_model) {
  static weft__deque dq[2];
  static uint64_t model[2][WEFT_DEQUE_CAP];
  const long ops = 2000000 * test_stress_scale() / (test_sanitized() ? 2 : 1);
  for (uint32_t caps = 0; caps < 3; caps++) {
    uint32_t cap[2] = {caps == 0 ? 2 : 4, caps == 2 ? 16 : 2};
    uint64_t head[2] = {0, 0}, tail[2] = {0, 0}; /* model indices */
    uint64_t next = 0, rng = 0x9E3779B97F4A7C15ULL + caps;
    for (int k = 0; k < 2; k++) weft__deque_init(&dq[k], cap[k]);
    for (long op = 0; op < ops; op++) {
      uint64_t r = rng_next(&rng);
      int k = (int)(r & 1);
      weft__deque *d = &dq[k];
      uint32_t n = (uint32_t)(tail[k] - head[k]);
      switch ((r >> 1) % 8) {
      case 0: case 1: case 2: { /* push */
        uint32_t got = weft__deque_push(d, ITEM(next));
        ASSERT_EQ(got != 0, n < cap[k]);
        if (got) {
          if (n + 1 <= WEFT_DEQUE_EXACT_LEN) ASSERT_EQ(got, n + 1); /* exact when small */
          ASSERT_TRUE(got >= n + 1);
          model[k][tail[k]++ % WEFT_DEQUE_CAP] = next++;
        }
        break;
      }
      case 3: { /* push_batch of 1..3: all or nothing, exact count */
        uint32_t m = (uint32_t)(r >> 8) % 3 + 1;
        void *items[3];
        for (uint32_t j = 0; j < m; j++) items[j] = ITEM(next + j);
        uint32_t got = weft__deque_push_batch(d, items, m);
        if (n + m > cap[k]) {
          ASSERT_EQ(got, 0);
        } else {
          ASSERT_EQ(got, n + m);
          for (uint32_t j = 0; j < m; j++) model[k][tail[k]++ % WEFT_DEQUE_CAP] = next++;
        }
        break;
      }
      case 4: case 5: { /* take */
        void *p = weft__deque_take(d);
        if (n == 0) {
          ASSERT_PTR_EQ(p, NULL);
        } else {
          ASSERT_UEQ(VAL(p), model[k][head[k]++ % WEFT_DEQUE_CAP]);
        }
        break;
      }
      case 6: { /* take_half */
        void *out[WEFT_DEQUE_CAP];
        uint32_t max = (uint32_t)(r >> 8) % 4 + 1;
        uint32_t got = weft__deque_take_half(d, out, max);
        uint32_t want = n - n / 2 < max ? n - n / 2 : max;
        ASSERT_EQ(got, want);
        for (uint32_t i = 0; i < got; i++) ASSERT_UEQ(VAL(out[i]), model[k][head[k]++ % WEFT_DEQUE_CAP]);
        break;
      }
      case 7: { /* the other deque, if empty, steals half of this one */
        int o = 1 - k;
        if (tail[o] != head[o]) break;
        void *p = weft__deque_steal_half(d, &dq[o]);
        if (n == 0) {
          ASSERT_PTR_EQ(p, NULL);
          break;
        }
        uint32_t want = n - n / 2;
        if (want > cap[o] + 1) want = cap[o] + 1;
        for (uint32_t i = 0; i + 1 < want; i++) model[o][tail[o]++ % WEFT_DEQUE_CAP] = model[k][head[k]++ % WEFT_DEQUE_CAP];
        ASSERT_UEQ(VAL(p), model[k][head[k]++ % WEFT_DEQUE_CAP]);
        break;
      }
      }
      ASSERT_EQ(weft__deque_len(&dq[0]), tail[0] - head[0]);
      ASSERT_EQ(weft__deque_len(&dq[1]), tail[1] - head[1]);
    }
    ASSERT_GT(next, (uint64_t)ops / 4); /* sanity: indices went around many times */
  }
}

/* ---- stress ------------------------------------------------------------ */

#define MAX_THIEVES 4
#define ROUND_ITEMS (1u << 19) /* items per round: bounds the memory whatever the scale */

/* What the deques carry in the stress tests. The owner writes payload with a
 * plain store before pushing and every taker reads it with a plain load: if
 * the deque failed to order the push before the take (a missing
 * release/acquire), ThreadSanitizer reports a race here, and on a weak
 * machine the check of the value fails. The taker then overwrites it (plain):
 * an item handed out twice is also a race. */
typedef struct item {
  uint64_t payload;     /* plain: owner writes before push, the one taker after */
  _Atomic uint32_t seen; /* times taken, this round */
  uint32_t pad;
} item;

typedef struct stress {
  weft__deque owner;              /* the victim: pushed by the owner thread */
  weft__deque thief[MAX_THIEVES]; /* each thief's own deque */
  int nthieves;
  int steal_mode;                 /* 1: steal_half; 0: take only */
  int work;                       /* busy-loop iterations per item a thief runs */
  int chain;                      /* thieves 1.. steal only from other thieves */
  item *items;                    /* this round's items */
  uint64_t n, base, salt;         /* this round: n items, global ids base.. */
  _Atomic uint64_t total;         /* items taken this round */
  _Atomic int go, ready;
  /* statistics, summed over rounds */
  _Atomic uint64_t steals, stolen_items, chained;
  uint64_t owner_takes, overflow_items;
} stress;

typedef struct thief_arg {
  stress *s;
  int id;
} thief_arg;

static uint64_t expected_payload(const stress *s, uint64_t i) { return (s->base + i) * 0x9E3779B97F4A7C15ULL ^ s->salt; }

/* Take possession of p; returns its index in this round. */
static uint64_t see(stress *s, void *p) {
  item *it = p;
  if (it < s->items || it >= s->items + s->n) TEST_FAIL("item %p out of range", p);
  uint64_t i = (uint64_t)(it - s->items);
  /* relaxed: a counter; the final check runs after pthread_join */
  uint32_t before = atomic_fetch_add_explicit(&it->seen, 1, memory_order_relaxed);
  if (before != 0) TEST_FAIL("item %" PRIu64 " taken twice", s->base + i);
  if (it->payload != expected_payload(s, i))
    TEST_FAIL("item %" PRIu64 ": payload %" PRIx64 ", pushed %" PRIx64, s->base + i, it->payload,
              expected_payload(s, i));
  it->payload = ~it->payload;
  return i;
}

static void add_total(stress *s, uint64_t k) {
  /* relaxed: only counts; termination reads it, join orders the rest */
  if (k) atomic_fetch_add_explicit(&s->total, k, memory_order_relaxed);
}

static uint64_t get_total(stress *s) { return atomic_load_explicit(&s->total, memory_order_relaxed); }

/* An item lost by the deque would leave the thieves waiting for ever: fail
 * with the count instead of waiting for the harness's timeout. */
typedef struct progress {
  uint64_t total;
  double since;
} progress;

static void check_progress(stress *s, progress *w) {
  uint64_t t = get_total(s);
  double now = test_now();
  if (t != w->total) {
    *w = (progress){t, now};
  } else if (now - w->since > 10.0) {
    TEST_FAIL("no progress for 10 s: %" PRIu64 " of %" PRIu64 " items taken (lost items?)", t, s->n);
  }
}

static void *thief_main(void *argp) {
  thief_arg *a = argp;
  stress *s = a->s;
  weft__deque *mine = &s->thief[a->id];
  uint64_t rng = (0x1234567ULL * (uint64_t)(a->id + 1)) ^ s->salt;
  uint64_t last_from_owner = 0; /* 1 + the newest index taken from s->owner */
  uint64_t steals = 0, stolen = 0, chained = 0;
  int idle = 0;
  progress watch = {0, test_now()};
  atomic_fetch_add_explicit(&s->ready, 1, memory_order_release);
  while (!atomic_load_explicit(&s->go, memory_order_acquire)) sched_yield();
  while (get_total(s) < s->n) {
    /* the owner or another thief (whose deque holds stolen items) */
    weft__deque *victim = &s->owner;
    uint64_t r = rng_next(&rng);
    if (s->chain && a->id > 0) { /* chain mode: only thief 0 steals from the owner */
      int o = (int)((r >> 8) % (uint64_t)(s->nthieves - 1));
      victim = &s->thief[o >= a->id ? o + 1 : o];
    } else if (s->nthieves > 1 && r % 2 == 0) {
      int o = (int)((r >> 8) % (uint64_t)s->nthieves);
      if (o != a->id) victim = &s->thief[o];
    }
    void *p;
    if (s->steal_mode) {
      ASSERT_EQ(weft__deque_len(mine), 0);
      p = weft__deque_steal_half(victim, mine);
    } else {
      p = weft__deque_take(victim);
    }
    if (!p) {
      if (++idle % 16 == 0) sched_yield();
      if (idle % 4096 == 0) check_progress(s, &watch);
      continue;
    }
    idle = 0;
    steals++;
    uint64_t v = see(s, p), k = 1;
    if (victim == &s->owner) {
      /* successive claims on one deque by one thread are increasing */
      if (v + 1 <= last_from_owner) TEST_FAIL("thief %d: %" PRIu64 " after %" PRIu64, a->id, v, last_from_owner - 1);
      last_from_owner = v + 1;
    } else {
      chained++;
    }
    /* chain mode: let the other thieves run while our deque is full */
    if (s->chain && weft__deque_len(mine) > 0) sched_yield();
    /* drain our own deque; others may steal from it meanwhile. What we find
     * is an increasing run of items older than p. */
    uint64_t prev = 0;
    void *q;
    ASSERT_LE(weft__deque_len(mine), weft__deque_capacity(mine));
    while ((q = weft__deque_take(mine)) != NULL) {
      /* "run" the item: keeps our deque non-empty long enough for others */
      for (volatile int spin = 0; spin < s->work; spin++) {
      }
      uint64_t w = see(s, q);
      if (w >= v) TEST_FAIL("thief %d: drained %" PRIu64 " not older than stolen %" PRIu64, a->id, w, v);
      if (w + 1 <= prev) TEST_FAIL("thief %d: drained %" PRIu64 " after %" PRIu64, a->id, w, prev - 1);
      prev = w + 1;
      k++;
    }
    stolen += k;
    add_total(s, k);
  }
  atomic_fetch_add_explicit(&s->steals, steals, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->stolen_items, stolen, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->chained, chained, memory_order_relaxed);
  return NULL;
}

/* The owner: pushes the round's items in order; on full, mostly yields to
 * let the thieves catch up and now and then overflows half (take_half), as
 * a worker does into the inject queue; now and then takes one itself or a
 * random-size half batch; at the end drains what is left. */
static void owner_run(stress *s) {
  weft__deque *d = &s->owner;
  uint64_t rng = 42 ^ s->salt, pending = 0, takes = 0, overflow = 0, last = 0;
  void *buf[WEFT_DEQUE_CAP];
#define OWNER_SEE(p)                                                                   \
  do {                                                                                 \
    uint64_t v_ = see(s, (p));                                                         \
    if (v_ + 1 <= last) TEST_FAIL("owner: %" PRIu64 " after %" PRIu64, v_, last - 1); \
    last = v_ + 1;                                                                     \
    pending++;                                                                         \
  } while (0)
  for (uint64_t i = 0; i < s->n; i++) {
    s->items[i].payload = expected_payload(s, i); /* plain: published by push */
    uint64_t rb = rng_next(&rng);
    if (rb % 4 == 0 && i + 4 <= s->n) { /* now and then a batch of 2..4 (the spawn path) */
      uint32_t m = (uint32_t)(rb >> 8) % 3 + 2;
      void *batch[4];
      for (uint32_t j = 0; j < m; j++) {
        s->items[i + j].payload = expected_payload(s, i + j);
        batch[j] = &s->items[i + j];
      }
      if (weft__deque_push_batch(d, batch, m)) {
        i += m - 1;
        continue;
      }
    }
    for (int tries = 1; !weft__deque_push(d, &s->items[i]); tries++) {
      /* full: mostly give the thieves a moment (a yield, so that they run
       * even when threads outnumber cores), now and then overflow */
      if (tries % 4 != 0) {
        sched_yield();
        continue;
      }
      uint32_t k = weft__deque_take_half(d, buf, WEFT_DEQUE_CAP);
      for (uint32_t j = 0; j < k; j++) OWNER_SEE(buf[j]);
      overflow += k;
    }
    uint64_t r = rng_next(&rng);
    if (r % 8 == 0) {
      void *p = weft__deque_take(d);
      if (p) {
        OWNER_SEE(p);
        takes++;
      }
    } else if (r % 64 == 1) {
      uint32_t k = weft__deque_take_half(d, buf, (uint32_t)(r >> 16) % 8 + 1);
      for (uint32_t j = 0; j < k; j++) OWNER_SEE(buf[j]);
      overflow += k;
    }
    if (pending >= 64) {
      add_total(s, pending);
      pending = 0;
    }
  }
  void *p;
  while ((p = weft__deque_take(d)) != NULL) OWNER_SEE(p);
#undef OWNER_SEE
  add_total(s, pending);
  s->owner_takes += takes;
  s->overflow_items += overflow;
}

/* n items in all (scaled), in rounds of at most ROUND_ITEMS; the deques keep
 * their indices from round to round. */
/* work > 0: chain mode (the thieves spin work iterations per item, and only
 * thief 0 steals from the owner). */
static void run_stress(const char *name, uint32_t owner_cap, const uint32_t *thief_caps, int nthieves,
                       int steal_mode, int work, uint64_t n) {
  n = n * (uint64_t)test_stress_scale() / (test_sanitized() ? 2 : 1);
  stress *s = calloc(1, sizeof *s);
  ASSERT_TRUE(s != NULL);
  s->items = calloc(n < ROUND_ITEMS ? n : ROUND_ITEMS, sizeof *s->items);
  ASSERT_TRUE(s->items != NULL);
  s->nthieves = nthieves;
  s->steal_mode = steal_mode;
  s->work = work;
  s->chain = work > 0;
  weft__deque_init(&s->owner, owner_cap);
  for (int t = 0; t < nthieves; t++) weft__deque_init(&s->thief[t], thief_caps[t]);
  double t0 = test_now();
  for (uint64_t base = 0; base < n; base += ROUND_ITEMS) {
    s->base = base;
    s->n = n - base < ROUND_ITEMS ? n - base : ROUND_ITEMS;
    s->salt = rng_next(&(uint64_t){base + 77});
    for (uint64_t i = 0; i < s->n; i++) atomic_init(&s->items[i].seen, 0);
    atomic_init(&s->total, 0);
    atomic_init(&s->go, 0);
    atomic_init(&s->ready, 0);
    pthread_t th[MAX_THIEVES];
    thief_arg args[MAX_THIEVES];
    for (int t = 0; t < nthieves; t++) {
      args[t] = (thief_arg){s, t};
      ASSERT_EQ(pthread_create(&th[t], NULL, thief_main, &args[t]), 0);
    }
    /* let every thief start, so that they compete from the first push */
    while (atomic_load_explicit(&s->ready, memory_order_acquire) < nthieves) sched_yield();
    atomic_store_explicit(&s->go, 1, memory_order_release);
    owner_run(s);
    for (int t = 0; t < nthieves; t++) ASSERT_EQ(pthread_join(th[t], NULL), 0);
    ASSERT_UEQ(get_total(s), s->n);
    for (uint64_t i = 0; i < s->n; i++) {
      if (atomic_load_explicit(&s->items[i].seen, memory_order_relaxed) != 1)
        TEST_FAIL("item %" PRIu64 " seen %u times", base + i, (unsigned)s->items[i].seen);
      ASSERT_UEQ(s->items[i].payload, ~expected_payload(s, i));
    }
    ASSERT_EQ(weft__deque_len(&s->owner), 0);
    for (int t = 0; t < nthieves; t++) ASSERT_EQ(weft__deque_len(&s->thief[t]), 0);
  }
  double dt = test_now() - t0;
  fprintf(stderr,
          "  %s: %" PRIu64 " items in %.2f s: owner took %" PRIu64 " singly + %" PRIu64
          " by take_half; thieves %" PRIu64 " items in %" PRIu64 " steals (%" PRIu64 " from thieves)\n",
          name, n, dt, s->owner_takes, s->overflow_items, (uint64_t)s->stolen_items, (uint64_t)s->steals,
          (uint64_t)s->chained);
  free(s->items);
  free(s);
}

TEST(stress_steal_half_cap256) {
  static const uint32_t caps[] = {256, 256, 256};
  run_stress("cap256", 256, caps, 3, 1, 0, 4000000);
}

TEST(stress_steal_half_cap16) {
  static const uint32_t caps[] = {16, 4, 2};
  run_stress("cap16", 16, caps, 3, 1, 0, 1000000);
}

TEST(stress_steal_half_cap4) {
  static const uint32_t caps[] = {4, 2};
  run_stress("cap4", 4, caps, 2, 1, 0, 500000);
}

TEST(stress_steal_half_cap2_one_thief) {
  static const uint32_t caps[] = {2};
  run_stress("cap2", 2, caps, 1, 1, 0, 400000);
}

TEST(stress_take_cap4) {
  static const uint32_t caps[] = {4, 4, 4};
  run_stress("take-cap4", 4, caps, 3, 0, 0, 400000);
}

/* Thieves that take a while per item, so that their deques stay non-empty,
 * and only thief 0 steals from the owner: the others steal from thieves, so
 * items go owner -> thief -> thief (-> thief), and the payload check needs
 * the happens-before to carry across every hop. */
TEST(stress_chained_steals) {
  static const uint32_t caps[] = {256, 16, 4};
  run_stress("chained", 256, caps, 3, 1, 50, 2000000);
}

TEST_MAIN()
