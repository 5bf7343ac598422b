/* tests/test_inbox.c: the MPSC inbox (core/inbox.c).
 *
 * Unit tests: take_all returns the pushes oldest first; push reports whether
 * the inbox was empty. Stress: several producers, one consumer; every node is
 * taken exactly once, each producer's nodes arrive in exactly the order it
 * pushed them (no gap, no reordering), nodes carry a plain payload (a missing
 * release/acquire is a ThreadSanitizer report), and the number of pushes that
 * found the inbox empty equals the number of non-empty batches the consumer
 * took (each batch starts with exactly one such push: the wake-up signal).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "core/inbox.h"
#include "tests/test.h"

typedef struct node {
  weft__link link; /* first: a weft__link * is a node * */
  uint32_t producer, seq;
  uint64_t payload; /* plain: written before push, checked after take */
} node;

#define NODE(l) ((node *)(l))

/* ---- unit tests -------------------------------------------------------- */

TEST(empty) {
  weft__inbox b;
  weft__inbox_init(&b);
  ASSERT_TRUE(weft__inbox_is_empty(&b));
  ASSERT_PTR_EQ(weft__inbox_take_all(&b), NULL);
  ASSERT_TRUE(weft__inbox_is_empty(&b));
}

TEST(order_preserved) {
  weft__inbox b;
  node n[10];
  weft__inbox_init(&b);
  for (int i = 0; i < 10; i++) ASSERT_EQ(weft__inbox_push(&b, &n[i].link), i == 0); /* true: was empty */
  ASSERT_TRUE(!weft__inbox_is_empty(&b));
  weft__link *l = weft__inbox_take_all(&b);
  for (int i = 0; i < 10; i++) {
    ASSERT_PTR_EQ(l, &n[i].link);
    l = l->next;
  }
  ASSERT_PTR_EQ(l, NULL);
  ASSERT_TRUE(weft__inbox_is_empty(&b));
  ASSERT_PTR_EQ(weft__inbox_take_all(&b), NULL);
  /* again, after a take: the next push finds it empty */
  ASSERT_TRUE(weft__inbox_push(&b, &n[3].link));
  ASSERT_TRUE(!weft__inbox_push(&b, &n[1].link));
  l = weft__inbox_take_all(&b);
  ASSERT_PTR_EQ(l, &n[3].link);
  ASSERT_PTR_EQ(l->next, &n[1].link);
  ASSERT_PTR_EQ(l->next->next, NULL);
}

TEST(single_node) {
  weft__inbox b;
  node n;
  weft__inbox_init(&b);
  ASSERT_TRUE(weft__inbox_push(&b, &n.link));
  weft__link *l = weft__inbox_take_all(&b);
  ASSERT_PTR_EQ(l, &n.link);
  ASSERT_PTR_EQ(l->next, NULL);
}

/* ---- stress ------------------------------------------------------------ */

#define MAX_PRODUCERS 8

typedef struct stress {
  weft__inbox box;
  node *nodes;              /* producer p owns nodes[p * per .. (p+1) * per) */
  int producers;
  uint64_t per;
  _Atomic int go;
  uint64_t was_empty[MAX_PRODUCERS]; /* per producer: pushes that returned true */
} stress;

typedef struct arg {
  stress *s;
  int id;
} arg;

static uint64_t payload_of(uint32_t p, uint32_t i) { return ((uint64_t)p << 32 | i) * 0x9E3779B97F4A7C15ULL; }

static void *producer_main(void *ap) {
  arg *a = ap;
  stress *s = a->s;
  node *mine = s->nodes + (uint64_t)a->id * s->per;
  uint64_t was_empty = 0;
  while (!atomic_load_explicit(&s->go, memory_order_acquire)) sched_yield();
  for (uint64_t i = 0; i < s->per; i++) {
    mine[i].producer = (uint32_t)a->id;
    mine[i].seq = (uint32_t)i;
    mine[i].payload = payload_of((uint32_t)a->id, (uint32_t)i); /* plain: published by push */
    was_empty += weft__inbox_push(&s->box, &mine[i].link);
    if (i % 1024 == 1023) sched_yield();
  }
  s->was_empty[a->id] = was_empty; /* read after join */
  return NULL;
}

static void run_stress(int producers, uint64_t per) {
  per = per / (test_sanitized() ? 2 : 1);
  stress *s = calloc(1, sizeof *s);
  ASSERT_TRUE(s != NULL);
  s->nodes = calloc((size_t)(producers * per), sizeof *s->nodes);
  ASSERT_TRUE(s->nodes != NULL);
  s->producers = producers;
  s->per = per;
  weft__inbox_init(&s->box);
  pthread_t th[MAX_PRODUCERS];
  arg args[MAX_PRODUCERS];
  for (int p = 0; p < producers; p++) {
    args[p] = (arg){s, p};
    ASSERT_EQ(pthread_create(&th[p], NULL, producer_main, &args[p]), 0);
  }
  double t0 = test_now();
  atomic_store_explicit(&s->go, 1, memory_order_release);
  /* the consumer: this thread */
  uint64_t next[MAX_PRODUCERS] = {0}, total = (uint64_t)producers * per, got = 0, batches = 0, biggest = 0;
  int idle = 0;
  while (got < total) {
    weft__link *l = weft__inbox_take_all(&s->box);
    if (!l) {
      if (++idle % 8 == 0) sched_yield();
      continue;
    }
    uint64_t k = 0;
    batches++;
    for (; l; l = l->next) {
      node *n = NODE(l);
      if (n < s->nodes || n >= s->nodes + total) TEST_FAIL("node %p out of range", (void *)n);
      if (n->seq != next[n->producer])
        TEST_FAIL("producer %u: node %u arrived, expected %" PRIu64, n->producer, n->seq, next[n->producer]);
      if (n->payload != payload_of(n->producer, n->seq)) TEST_FAIL("node %u/%u: bad payload", n->producer, n->seq);
      next[n->producer]++;
      k++;
    }
    got += k;
    if (k > biggest) biggest = k;
  }
  for (int p = 0; p < producers; p++) ASSERT_EQ(pthread_join(th[p], NULL), 0);
  double dt = test_now() - t0;
  ASSERT_UEQ(got, total);
  ASSERT_PTR_EQ(weft__inbox_take_all(&s->box), NULL);
  uint64_t was_empty = 0;
  for (int p = 0; p < producers; p++) {
    ASSERT_UEQ(next[p], per);
    was_empty += s->was_empty[p];
  }
  ASSERT_UEQ(was_empty, batches);
  fprintf(stderr, "  %d producers: %" PRIu64 " nodes in %.2f s, %" PRIu64 " batches (largest %" PRIu64 ")\n", producers,
          total, dt, batches, biggest);
  free(s->nodes);
  free(s);
}

/* WEFT_STRESS=long repeats the runs (memory stays bounded). */
TEST(stress_mpsc) {
  for (long r = 0; r < test_stress_scale(); r++) {
    run_stress(3, 600000);
    run_stress(1, 600000);
    run_stress(6, 200000);
  }
}

TEST_MAIN()
