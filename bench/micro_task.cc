// bench/micro_task.cc: the task API's combinators against doing the same
// by hand, each measured inside weft_run() (the pattern of micro_core.cc):
//
// BM_SpawnJoinByHand/workers:W  spawn N=10,000 tasks that return at once,
//                               then join and release each (the baseline).
// BM_Gather/workers:W           spawn the same N, weft_gather() them, release.
// BM_TaskGroup/workers:W        a task group: spawn N children, leave.
// BM_TimeoutScope               enter and leave a timeout scope that does not
//                               expire, around one weft_yield().
// BM_Yield                      the same weft_yield() alone (the scope's cost
//                               is the difference).
//
// One iteration = N tasks (items/s counts tasks) for the first three; the
// issue's bound is gather and task group <= 2x the by-hand time.
#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <weft/weft.h>

namespace {

constexpr int kTasks = 10000;

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

int noop_task(void *) { return 0; }

int by_hand_body(benchmark::State &state) {
  std::vector<weft_task> t(kTasks);
  for (auto _ : state) {
    for (int i = 0; i < kTasks; i++) t[i] = weft_spawn(noop_task, nullptr);
    for (int i = 0; i < kTasks; i++) {
      benchmark::DoNotOptimize(weft_join(t[i]));
      weft_task_release(t[i]);
    }
  }
  state.SetItemsProcessed(state.iterations() * kTasks);
  return 0;
}

int gather_body(benchmark::State &state) {
  std::vector<weft_task> t(kTasks);
  std::vector<weft_awaitable> a(kTasks);
  std::vector<int> st(kTasks);
  for (auto _ : state) {
    for (int i = 0; i < kTasks; i++) {
      t[i] = weft_spawn(noop_task, nullptr);
      a[i] = weft_aw_task(t[i]);
    }
    int rc = weft_gather(a.data(), kTasks, st.data(), nullptr, 0);
    if (rc != 0) {
      state.SkipWithError("weft_gather failed");
      break;
    }
    for (int i = 0; i < kTasks; i++) weft_task_release(t[i]);
  }
  state.SetItemsProcessed(state.iterations() * kTasks);
  return 0;
}

int taskgroup_body(benchmark::State &state) {
  for (auto _ : state) {
    weft_taskgroup g;
    weft_taskgroup_enter(&g);
    for (int i = 0; i < kTasks; i++) weft_taskgroup_spawn(&g, noop_task, nullptr);
    if (weft_taskgroup_leave(&g, 0) != 0) {
      state.SkipWithError("weft_taskgroup_leave failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kTasks);
  return 0;
}

int scope_body(benchmark::State &state) {
  for (auto _ : state) {
    weft_timeout to;
    weft_timeout_enter(&to, 3600LL * 1000000000LL);
    int rc = weft_yield();
    benchmark::DoNotOptimize(weft_timeout_leave(&to, rc));
  }
  state.SetItemsProcessed(state.iterations());
  return 0;
}

int yield_body(benchmark::State &state) {
  for (auto _ : state) benchmark::DoNotOptimize(weft_yield());
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_SpawnJoinByHand(benchmark::State &state) {
  run_in_weft(state, static_cast<unsigned>(state.range(0)), by_hand_body);
}
void BM_Gather(benchmark::State &state) { run_in_weft(state, static_cast<unsigned>(state.range(0)), gather_body); }
void BM_TaskGroup(benchmark::State &state) {
  run_in_weft(state, static_cast<unsigned>(state.range(0)), taskgroup_body);
}
void BM_TimeoutScope(benchmark::State &state) { run_in_weft(state, 1, scope_body); }
void BM_Yield(benchmark::State &state) { run_in_weft(state, 1, yield_body); }

BENCHMARK(BM_SpawnJoinByHand)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Gather)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TaskGroup)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TimeoutScope)->UseRealTime();
BENCHMARK(BM_Yield)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
