// bench/micro_sync.cc: the synchronisation primitives' costs, through the
// public API, each measured inside weft_run() (the pattern of micro_core.cc:
// the main task, pinned, runs the timed loop; real time):
//
// BM_LockUncontended         weft_lock_acquire + weft_lock_release, nobody else
// BM_LockTryRelease          weft_lock_try_acquire + weft_lock_release
// BM_SemUncontended          weft_sem_acquire + weft_sem_release
// BM_EventSetWaitClear       weft_event_set, weft_event_wait (set: returns at
//                            once), weft_event_clear
// BM_QueuePutGet/maxsize:N   weft_queue_put + weft_queue_get on one task (never
//                            suspends): N = 0 unbounded, 1, 1024
// BM_QueueNowait             weft_queue_put_nowait + weft_queue_get_nowait
// BM_CondNotifyNobody        weft_cond_notify(1) with the lock held, no waiter
// BM_QueuePairs/pairs/maxsize/workers
//                            throughput: `pairs` producer/consumer pairs, each
//                            producer puts 10,000 items into its own queue of
//                            `maxsize` and its consumer gets them; one
//                            iteration = spawn the pairs, move every item,
//                            join; items/s counts items moved.
#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <weft/core.h>
#include <weft/sync.h>

namespace {

struct Ctx {
  benchmark::State *state;
  int (*body)(benchmark::State &);
};

int pinned_main(void *arg) {
  auto *c = static_cast<Ctx *>(arg);
  weft_pin();
  int rc = c->body(*c->state);
  weft_unpin();
  return rc;
}

void run_in_weft(benchmark::State &state, unsigned workers, int (*body)(benchmark::State &)) {
  weft_config cfg{};
  cfg.workers = workers;
  Ctx c{&state, body};
  int rc = weft_run(pinned_main, &c, &cfg);
  if (rc < 0 && !state.error_occurred()) state.SkipWithError(("weft_run: " + std::string(strerror(-rc))).c_str());
}

// ------------------------------------------------------------ lock

int lock_body(benchmark::State &state) {
  weft_lock l;
  weft_lock_init(&l);
  for (auto _ : state) {
    benchmark::DoNotOptimize(weft_lock_acquire(&l));
    benchmark::DoNotOptimize(weft_lock_release(&l));
  }
  weft_lock_destroy(&l);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_LockUncontended(benchmark::State &state) { run_in_weft(state, 1, lock_body); }
BENCHMARK(BM_LockUncontended)->UseRealTime();

int lock_try_body(benchmark::State &state) {
  weft_lock l;
  weft_lock_init(&l);
  for (auto _ : state) {
    benchmark::DoNotOptimize(weft_lock_try_acquire(&l));
    benchmark::DoNotOptimize(weft_lock_release(&l));
  }
  weft_lock_destroy(&l);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_LockTryRelease(benchmark::State &state) { run_in_weft(state, 1, lock_try_body); }
BENCHMARK(BM_LockTryRelease)->UseRealTime();

// ------------------------------------------------------------ semaphore

int sem_body(benchmark::State &state) {
  weft_sem s;
  weft_sem_init(&s, 1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(weft_sem_acquire(&s));
    benchmark::DoNotOptimize(weft_sem_release(&s));
  }
  weft_sem_destroy(&s);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_SemUncontended(benchmark::State &state) { run_in_weft(state, 1, sem_body); }
BENCHMARK(BM_SemUncontended)->UseRealTime();

// ------------------------------------------------------------ event

int event_body(benchmark::State &state) {
  weft_event e;
  weft_event_init(&e);
  for (auto _ : state) {
    weft_event_set(&e);
    benchmark::DoNotOptimize(weft_event_wait(&e));
    weft_event_clear(&e);
  }
  weft_event_destroy(&e);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_EventSetWaitClear(benchmark::State &state) { run_in_weft(state, 1, event_body); }
BENCHMARK(BM_EventSetWaitClear)->UseRealTime();

// ------------------------------------------------------------ condition

int cond_body(benchmark::State &state) {
  weft_lock l;
  weft_cond c;
  weft_lock_init(&l);
  weft_cond_init(&c, &l);
  weft_lock_acquire(&l);
  for (auto _ : state) benchmark::DoNotOptimize(weft_cond_notify(&c, 1));
  weft_lock_release(&l);
  weft_cond_destroy(&c);
  weft_lock_destroy(&l);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_CondNotifyNobody(benchmark::State &state) { run_in_weft(state, 1, cond_body); }
BENCHMARK(BM_CondNotifyNobody)->UseRealTime();

// ------------------------------------------------------------ queue, one task

size_t g_maxsize;

int queue_body(benchmark::State &state) {
  weft_queue q;
  if (weft_queue_init(&q, g_maxsize) < 0) {
    state.SkipWithError("weft_queue_init failed");
    return 0;
  }
  void *item = nullptr;
  for (auto _ : state) {
    benchmark::DoNotOptimize(weft_queue_put(&q, &item));
    benchmark::DoNotOptimize(weft_queue_get(&q, &item));
  }
  weft_queue_destroy(&q);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_QueuePutGet(benchmark::State &state) {
  g_maxsize = static_cast<size_t>(state.range(0));
  run_in_weft(state, 1, queue_body);
}
BENCHMARK(BM_QueuePutGet)->ArgName("maxsize")->Arg(0)->Arg(1)->Arg(1024)->UseRealTime();

int queue_nowait_body(benchmark::State &state) {
  weft_queue q;
  weft_queue_init(&q, 1024);
  void *item = nullptr;
  for (auto _ : state) {
    benchmark::DoNotOptimize(weft_queue_put_nowait(&q, &item));
    benchmark::DoNotOptimize(weft_queue_get_nowait(&q, &item));
  }
  weft_queue_destroy(&q);
  state.SetItemsProcessed(state.iterations());
  return 0;
}
void BM_QueueNowait(benchmark::State &state) { run_in_weft(state, 1, queue_nowait_body); }
BENCHMARK(BM_QueueNowait)->UseRealTime();

// ------------------------------------------------------------ queue throughput

constexpr long kItemsPerPair = 10000;

struct Pair {
  weft_queue q;
  long bad = 0;
};

int producer_task(void *arg) {
  auto *p = static_cast<Pair *>(arg);
  for (long i = 1; i <= kItemsPerPair; i++)
    if (weft_queue_put(&p->q, reinterpret_cast<void *>(i)) < 0) return -ECANCELED;
  return 0;
}

int consumer_task(void *arg) {
  auto *p = static_cast<Pair *>(arg);
  for (long i = 1; i <= kItemsPerPair; i++) {
    void *v = nullptr;
    if (weft_queue_get(&p->q, &v) < 0) return -ECANCELED;
    if (reinterpret_cast<long>(v) != i) p->bad++;
  }
  return 0;
}

long g_pairs;

int pairs_body(benchmark::State &state) {
  std::vector<Pair> pairs(static_cast<size_t>(g_pairs));
  for (auto &p : pairs) weft_queue_init(&p.q, g_maxsize);
  std::vector<weft_task> tasks(2 * pairs.size());
  for (auto _ : state) {
    for (size_t i = 0; i < pairs.size(); i++) {
      tasks[2 * i] = weft_spawn(consumer_task, &pairs[i]);
      tasks[2 * i + 1] = weft_spawn(producer_task, &pairs[i]);
    }
    for (auto &t : tasks) {
      weft_join(t);
      weft_task_release(t);
    }
  }
  long bad = 0;
  for (auto &p : pairs) {
    bad += p.bad;
    weft_queue_destroy(&p.q);
  }
  if (bad) state.SkipWithError("items arrived out of order");
  state.SetItemsProcessed(state.iterations() * g_pairs * kItemsPerPair);
  return 0;
}
void BM_QueuePairs(benchmark::State &state) {
  g_pairs = state.range(0);
  g_maxsize = static_cast<size_t>(state.range(1));
  run_in_weft(state, static_cast<unsigned>(state.range(2)), pairs_body);
}
BENCHMARK(BM_QueuePairs)
    ->ArgNames({"pairs", "maxsize", "workers"})
    ->ArgsProduct({{1, 4}, {1, 1024}, {1, 2}})
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
