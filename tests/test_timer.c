/* tests/test_timer.c: the timer heap (core/timer.c) against sorted references.
 *
 * Every test compares the heap with a plain reference (qsort, or a sorted
 * array kept by insertion) under the same total order as the heap, so the
 * pop sequence is checked entry by entry, ties included. Random inputs come
 * from a fixed seed (printed on failure through the asserts' context), so a
 * failure replays. Build with -DWEFT_TEST_HOOKS for the -ENOMEM test.
 */
#include "core/timer.h"

#include "core/alloc.h"
#include "tests/test.h"

/* splitmix64: small, fast, good enough for test inputs; deterministic. */
static uint64_t rng_state;
static uint64_t rng(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The heap's documented order: deadline, seq (serial order), kind, task address. */
static int cmp_entry(const void *pa, const void *pb) {
  const weft__timer_entry *a = pa, *b = pb;
  if (a->deadline != b->deadline) return a->deadline < b->deadline ? -1 : 1;
  if (a->seq != b->seq) return (int32_t)(a->seq - b->seq) < 0 ? -1 : 1; /* (serial order: core/timer.c) */
  if (a->kind != b->kind) return a->kind < b->kind ? -1 : 1;
  if (a->task != b->task) return (uintptr_t)a->task < (uintptr_t)b->task ? -1 : 1;
  return 0;
}

static void assert_same(const weft__timer_entry *a, const weft__timer_entry *b) {
  ASSERT_EQ(a->deadline, b->deadline);
  ASSERT_UEQ(a->seq, b->seq);
  ASSERT_UEQ(a->kind, b->kind);
  ASSERT_PTR_EQ(a->task, b->task);
}

/* The heap property over the whole array: no child orders before its parent. */
static void assert_heap(const weft__timer_heap *h) {
  for (size_t i = 1; i < h->len; i++) ASSERT_TRUE(cmp_entry(&h->v[(i - 1) / 4], &h->v[i]) <= 0);
}

static weft__timer_entry random_entry(uint64_t deadline_range, size_t i) {
  weft__timer_entry e;
  e.deadline = (int64_t)(rng() % deadline_range);
  e.task = (void *)(uintptr_t)(i * 64 + 64); /* distinct, aligned like records */
  e.seq = (uint32_t)(rng() % 4);             /* few values: ties reach the later keys */
  e.kind = (uint32_t)(rng() % 2);
  return e;
}

/* Liveness for the compaction tests: task address / 64 - 1 indexes alive[]. */
static unsigned char *alive;
static bool live_by_index(const weft__timer_entry *e) { return alive[(uintptr_t)e->task / 64 - 1]; }
static bool live_all(const weft__timer_entry *e) { return true; }

/* Insert n random entries, pop them in random batch sizes, compare with qsort. */
static void check_sorted(size_t n, uint64_t deadline_range, uint64_t seed) {
  rng_state = seed;
  weft__timer_heap h;
  weft__timer_init(&h, NULL);
  weft__timer_entry *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
  ASSERT_TRUE(ref && out);
  for (size_t i = 0; i < n; i++) {
    ref[i] = random_entry(deadline_range, i);
    ASSERT_EQ(weft__timer_insert(&h, ref[i]), 0);
  }
  ASSERT_UEQ(h.len, n);
  assert_heap(&h);
  qsort(ref, n, sizeof *ref, cmp_entry);
  ASSERT_EQ(weft__timer_next(&h), ref[0].deadline);
  size_t got = 0;
  while (got < n) {
    size_t want = 1 + rng() % 100;
    size_t k = weft__timer_pop_expired(&h, INT64_MAX, out + got, want);
    ASSERT_UEQ(k, want < n - got ? want : n - got);
    got += k;
  }
  for (size_t i = 0; i < n; i++) assert_same(&out[i], &ref[i]);
  ASSERT_UEQ(h.len, 0);
  ASSERT_EQ(weft__timer_next(&h), INT64_MAX);
  weft__timer_fini(&h);
  free(ref);
  free(out);
}

TEST(timer_order_random_wide) { check_sorted(100000, UINT64_C(1) << 62, 1); }

/* Deadlines from 0..99: almost every pop is decided by the tie-breaks. */
TEST(timer_order_random_many_ties) { check_sorted(100000, 100, 2); }

TEST(timer_empty) {
  weft__timer_heap h;
  weft__timer_init(&h, live_all);
  weft__timer_entry out[4];
  ASSERT_EQ(weft__timer_next(&h), INT64_MAX);
  ASSERT_UEQ(weft__timer_pop_expired(&h, INT64_MAX, out, 4), 0);
  weft__timer_compact(&h);
  ASSERT_UEQ(h.len, 0);
  weft__timer_fini(&h);
  weft__timer_fini(&h); /* fini twice is harmless: the heap is empty and reusable */
}

/* pop_expired returns only deadline <= now, and at most max. */
TEST(timer_pop_respects_now_and_max) {
  weft__timer_heap h;
  weft__timer_init(&h, NULL);
  for (int i = 0; i < 10; i++)
    ASSERT_EQ(weft__timer_insert(&h, (weft__timer_entry){.deadline = i * 10, .task = (void *)64}), 0);
  weft__timer_entry out[16];
  ASSERT_UEQ(weft__timer_pop_expired(&h, -1, out, 16), 0);
  ASSERT_UEQ(weft__timer_pop_expired(&h, 25, out, 16), 3); /* 0, 10, 20 */
  ASSERT_EQ(out[2].deadline, 20);
  ASSERT_UEQ(weft__timer_pop_expired(&h, 1000, out, 2), 2); /* 30, 40 */
  ASSERT_EQ(out[0].deadline, 30);
  ASSERT_EQ(weft__timer_next(&h), 50);
  ASSERT_UEQ(weft__timer_pop_expired(&h, 1000, out, 0), 0);
  ASSERT_UEQ(h.len, 5);
  weft__timer_fini(&h);
}

/* seq is a 32-bit counter that wraps (a worker's callback FIFO counter
 * does after 2^32 callbacks): entries due together pop in the counter's
 * order across the wrap, so that call_soon (deadline 0, every entry a tie)
 * stays FIFO. Before: 0 and 1 popped before 0xfffffffe. */
TEST(timer_seq_order_across_its_wrap) {
  weft__timer_heap h;
  weft__timer_init(&h, NULL);
  const uint32_t seqs[] = {0xfffffffeu, 0xffffffffu, 0u, 1u, 2u};
  for (size_t i = 0; i < 5; i++)
    ASSERT_EQ(weft__timer_insert(&h, (weft__timer_entry){.deadline = 0, .task = (void *)64, .seq = seqs[4 - i]}), 0);
  weft__timer_entry out[5];
  ASSERT_UEQ(weft__timer_pop_expired(&h, 0, out, 5), 5);
  for (size_t i = 0; i < 5; i++) ASSERT_UEQ(out[i].seq, seqs[i]);
  weft__timer_fini(&h);
}

/* The same entries inserted in two different orders pop in the same order. */
TEST(timer_ties_deterministic) {
  enum { N = 5000 };
  static weft__timer_entry e[N], a[N], b[N];
  rng_state = 3;
  for (size_t i = 0; i < N; i++) e[i] = random_entry(10, i);
  weft__timer_heap h1, h2;
  weft__timer_init(&h1, NULL);
  weft__timer_init(&h2, NULL);
  for (size_t i = 0; i < N; i++) ASSERT_EQ(weft__timer_insert(&h1, e[i]), 0);
  for (size_t i = N; i-- > 0;) ASSERT_EQ(weft__timer_insert(&h2, e[i]), 0);
  ASSERT_UEQ(weft__timer_pop_expired(&h1, INT64_MAX, a, N), N);
  ASSERT_UEQ(weft__timer_pop_expired(&h2, INT64_MAX, b, N), N);
  for (size_t i = 0; i < N; i++) assert_same(&a[i], &b[i]);
  weft__timer_fini(&h1);
  weft__timer_fini(&h2);
}

/* Inserts and pops interleaved, with a moving clock, against a sorted array
 * kept by insertion (the reference pops its prefix). */
TEST(timer_interleaved_vs_reference) {
  enum { OPS = 200000, CAP = 8192 };
  static weft__timer_entry ref[CAP], out[64];
  size_t nref = 0;
  rng_state = 4;
  weft__timer_heap h;
  weft__timer_init(&h, NULL);
  int64_t now = 0;
  size_t next_id = 0;
  for (int op = 0; op < OPS; op++) {
    if (nref < CAP && rng() % 100 < 52) {
      weft__timer_entry e = random_entry(2000, next_id++);
      e.deadline += now;
      ASSERT_EQ(weft__timer_insert(&h, e), 0);
      size_t pos = nref;
      while (pos > 0 && cmp_entry(&ref[pos - 1], &e) > 0) pos--;
      memmove(&ref[pos + 1], &ref[pos], (nref - pos) * sizeof *ref);
      ref[pos] = e;
      nref++;
    } else {
      now += (int64_t)(rng() % 50);
      size_t max = 1 + rng() % 64;
      size_t k = weft__timer_pop_expired(&h, now, out, max);
      size_t want = 0;
      while (want < nref && want < max && ref[want].deadline <= now) want++;
      ASSERT_UEQ(k, want);
      for (size_t i = 0; i < k; i++) assert_same(&out[i], &ref[i]);
      memmove(ref, ref + k, (nref - k) * sizeof *ref);
      nref -= k;
    }
    ASSERT_UEQ(h.len, nref);
    ASSERT_EQ(weft__timer_next(&h), nref ? ref[0].deadline : INT64_MAX);
  }
  assert_heap(&h);
  weft__timer_fini(&h);
}

/* Kill a random subset, compact: exactly the survivors remain, in order,
 * and the heap property holds. */
TEST(timer_compact_keeps_exactly_survivors) {
  enum { N = 100000 };
  rng_state = 5;
  alive = malloc(N);
  weft__timer_entry *ref = malloc(N * sizeof *ref), *out = malloc(N * sizeof *out);
  ASSERT_TRUE(alive && ref && out);
  weft__timer_heap h;
  weft__timer_init(&h, live_by_index);
  for (size_t i = 0; i < N; i++) alive[i] = 1;
  size_t nref = 0;
  weft__timer_entry *all = malloc(N * sizeof *all);
  ASSERT_TRUE(all);
  for (size_t i = 0; i < N; i++) {
    all[i] = random_entry(1000000, i);
    h.compact_at = SIZE_MAX; /* this test compacts by hand */
    ASSERT_EQ(weft__timer_insert(&h, all[i]), 0);
  }
  for (size_t i = 0; i < N; i++) {
    alive[i] = rng() % 3 == 0; /* about a third survive */
    if (alive[i]) ref[nref++] = all[i];
  }
  weft__timer_compact(&h);
  ASSERT_UEQ(h.len, nref);
  ASSERT_UEQ(h.compact_at, nref * 2 > 1024 ? nref * 2 : 1024);
  assert_heap(&h);
  qsort(ref, nref, sizeof *ref, cmp_entry);
  ASSERT_UEQ(weft__timer_pop_expired(&h, INT64_MAX, out, N), nref);
  for (size_t i = 0; i < nref; i++) assert_same(&out[i], &ref[i]);

  /* All dead: the heap empties, compact_at falls back to its floor. */
  for (size_t i = 0; i < 5000; i++) ASSERT_EQ(weft__timer_insert(&h, all[i]), 0);
  memset(alive, 0, N);
  weft__timer_compact(&h);
  ASSERT_UEQ(h.len, 0);
  ASSERT_UEQ(h.compact_at, 1024);
  weft__timer_fini(&h);
  free(all);
  free(ref);
  free(out);
  free(alive);
}

/* Automatic compaction: with most timers cancelled (the usual fate of a
 * timeout), the heap stays proportional to the live ones, compact_at
 * follows max(1024, 2 * len after compaction), and the live entries all
 * come out in order. */
TEST(timer_auto_compaction) {
  enum { N = 300000 };
  rng_state = 6;
  alive = calloc(N, 1);
  weft__timer_entry *all = malloc(N * sizeof *all), *out = malloc(N * sizeof *out);
  ASSERT_TRUE(alive && all && out);
  weft__timer_heap h;
  weft__timer_init(&h, live_by_index);
  ASSERT_UEQ(h.compact_at, 1024);
  size_t live_count = 0, max_len = 0, compactions = 0;
  for (size_t i = 0; i < N; i++) {
    all[i] = random_entry(1000000, i);
    alive[i] = 1;
    live_count++;
    size_t before_len = h.len, before_at = h.compact_at;
    ASSERT_EQ(weft__timer_insert(&h, all[i]), 0);
    if (before_len >= before_at) {
      compactions++;
      /* the compaction left len - 1 entries (the new one came after) */
      ASSERT_UEQ(h.compact_at, 2 * (h.len - 1) > 1024 ? 2 * (h.len - 1) : 1024);
    }
    if (h.len > max_len) max_len = h.len;
    /* cancel 19 of every 20 timers lazily, a random earlier one */
    if (rng() % 20 != 0) {
      size_t j = rng() % (i + 1);
      if (alive[j]) {
        alive[j] = 0;
        live_count--;
      }
    }
  }
  ASSERT_GT(compactions, 5);
  /* Bound: at most 2 * max(1024, 2 * live) entries between compactions. */
  ASSERT_LE(max_len, 4 * (live_count + 1024));
  size_t k = weft__timer_pop_expired(&h, INT64_MAX, out, N);
  ASSERT_UEQ(h.len, 0); /* all popped */
  size_t seen_live = 0;
  for (size_t i = 0; i < k; i++) {
    if (i) ASSERT_TRUE(cmp_entry(&out[i - 1], &out[i]) <= 0);
    if (live_by_index(&out[i])) seen_live++;
  }
  ASSERT_UEQ(seen_live, live_count); /* no live entry was ever dropped */
  weft__timer_fini(&h);
  free(all);
  free(out);
  free(alive);
}

/* Without a live() function the heap never drops anything, but compact_at
 * still moves so the check is not repeated on every insert. */
TEST(timer_no_live_fn_never_drops) {
  weft__timer_heap h;
  weft__timer_init(&h, NULL);
  for (int i = 0; i < 5000; i++)
    ASSERT_EQ(weft__timer_insert(&h, (weft__timer_entry){.deadline = 5000 - i, .task = (void *)64}), 0);
  ASSERT_UEQ(h.len, 5000);
  ASSERT_GE(h.compact_at, 5000);
  weft__timer_compact(&h);
  ASSERT_UEQ(h.len, 5000);
  weft__timer_entry out[2];
  ASSERT_UEQ(weft__timer_pop_expired(&h, INT64_MAX, out, 2), 2);
  ASSERT_EQ(out[0].deadline, 1);
  ASSERT_EQ(out[1].deadline, 2);
  weft__timer_fini(&h);
}

/* 1e6 entries in, 1e6 out in order: finishes (O(n log n)); no timing assert. */
TEST(timer_million) {
  size_t n = test_sanitized() ? 300000 : 1000000;
  rng_state = 7;
  weft__timer_heap h;
  weft__timer_init(&h, live_all);
  for (size_t i = 0; i < n; i++) ASSERT_EQ(weft__timer_insert(&h, random_entry(UINT64_C(1) << 40, i)), 0);
  ASSERT_UEQ(h.len, n);
  weft__timer_entry out[256], prev = {.deadline = INT64_MIN};
  size_t total = 0, k;
  while ((k = weft__timer_pop_expired(&h, INT64_MAX, out, 256)) > 0) {
    for (size_t i = 0; i < k; i++) {
      ASSERT_TRUE(cmp_entry(&prev, &out[i]) <= 0);
      prev = out[i];
    }
    total += k;
  }
  ASSERT_UEQ(total, n);
  weft__timer_fini(&h);
}

#ifdef WEFT_TEST_HOOKS
/* Fill to a capacity boundary, fail the growth: -ENOMEM, and the heap holds
 * exactly what it held (checked by popping against a sorted reference). */
static void check_enomem_at(size_t n) {
  rng_state = 8 + n;
  weft__timer_heap h;
  weft__timer_init(&h, live_all);
  weft__timer_entry *ref = malloc((n + 1) * sizeof *ref), *out = malloc((n + 1) * sizeof *out);
  ASSERT_TRUE(ref && out);
  for (size_t i = 0; i < n; i++) {
    ref[i] = random_entry(1000, i);
    ASSERT_EQ(weft__timer_insert(&h, ref[i]), 0);
  }
  ASSERT_UEQ(h.len, h.cap); /* the next insert must grow */
  weft__timer_entry *v_before = h.v;
  size_t cap_before = h.cap;
  weft__fault_alloc_after(0);
  ASSERT_EQ(weft__timer_insert(&h, random_entry(1000, n)), -ENOMEM);
  weft__fault_alloc_after(-1);
  ASSERT_UEQ(h.len, n);
  ASSERT_UEQ(h.cap, cap_before);
  ASSERT_UEQ((uintptr_t)h.v, (uintptr_t)v_before);
  assert_heap(&h);
  /* still usable: the next insert succeeds */
  ref[n] = random_entry(1000, n + 1);
  ASSERT_EQ(weft__timer_insert(&h, ref[n]), 0);
  qsort(ref, n + 1, sizeof *ref, cmp_entry);
  ASSERT_UEQ(weft__timer_pop_expired(&h, INT64_MAX, out, n + 1), n + 1);
  for (size_t i = 0; i <= n; i++) assert_same(&out[i], &ref[i]);
  weft__timer_fini(&h);
  free(ref);
  free(out);
}

TEST(timer_enomem_first_insert) {
  weft__timer_heap h;
  weft__timer_init(&h, live_all);
  weft__fault_alloc_after(0);
  ASSERT_EQ(weft__timer_insert(&h, (weft__timer_entry){.deadline = 1}), -ENOMEM);
  weft__fault_alloc_after(-1);
  ASSERT_UEQ(h.len, 0);
  ASSERT_EQ(weft__timer_next(&h), INT64_MAX);
  ASSERT_EQ(weft__timer_insert(&h, (weft__timer_entry){.deadline = 1}), 0);
  ASSERT_EQ(weft__timer_next(&h), 1);
  weft__timer_fini(&h);
}

TEST(timer_enomem_leaves_heap_intact) {
  check_enomem_at(64);   /* first growth */
  check_enomem_at(1024); /* growth right after an automatic compaction (all live) */
  check_enomem_at(8192);
}
#endif

TEST_MAIN()
