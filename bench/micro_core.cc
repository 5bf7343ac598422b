// bench/micro_core.cc: the runtime's basic costs, through the public API,
// each measured inside weft_run():
//
// BM_SpawnJoin/workers:N  spawn a task that returns at once, join it, release
//                         the handle.
// BM_Yield                two tasks on one worker yielding to each other: one
//                         iteration = one weft_yield() of the timed task (so
//                         two task switches).
// BM_WakeAcrossWorkers    a ping-pong over two weft_queue of maxsize 1 between
//                         two tasks pinned on different workers: one
//                         iteration = one round trip = two cross-worker wakes.
// BM_Sleep0               weft_sleep_ns(0) alone on its worker (a yield with
//                         nothing else to run).
// BM_SleepShort/ns:N      weft_sleep_ns(N): a timer inserted, fired and the
//                         task resumed; the time is N plus the overhead and
//                         the reactor's timer granularity.
// BM_IoNop                an io_uring NOP round trip (submit, suspend,
//                         complete, resume) through the internal
//                         weft__io_nop(); skipped on the epoll backend.
//
// Pattern: the benchmark function calls weft_run() once per Google Benchmark
// run; the main task runs the `for (auto _ : state)` loop. The timed task is
// pinned (weft_pin) so that the State is used from one thread only and its
// CPU timer reads that thread. Times are real time (UseRealTime), since the
// work of other tasks may run on other threads.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <weft/core.h>
#include <weft/sync.h>

extern "C" int weft__io_nop(void);  // io/nop.c: hidden in libweft.so, reached through the static objects

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

// Run body(state) as the main task of a fresh runtime with `workers` workers.
void run_in_weft(benchmark::State &state, unsigned workers, int (*body)(benchmark::State &)) {
  weft_config cfg{};
  cfg.workers = workers;
  Ctx c{&state, body};
  int rc = weft_run(pinned_main, &c, &cfg);
  if (rc < 0 && !state.error_occurred()) state.SkipWithError(("weft_run: " + std::string(strerror(-rc))).c_str());
}

int noop_task(void *) { return 0; }

// ------------------------------------------------------------ spawn + join

int spawn_join_body(benchmark::State &state) {
  for (auto _ : state) {
    weft_task t = weft_spawn(noop_task, nullptr);
    if (weft_task_is_null(t)) {
      state.SkipWithError("weft_spawn failed");
      break;
    }
    benchmark::DoNotOptimize(weft_join(t));
    weft_task_release(t);
  }
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_SpawnJoin(benchmark::State &state) {
  run_in_weft(state, static_cast<unsigned>(state.range(0)), spawn_join_body);
}
BENCHMARK(BM_SpawnJoin)->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime();

// ------------------------------------------------------------ yield

std::atomic<bool> g_stop;

int yielder_task(void *) {
  while (!g_stop.load(std::memory_order_relaxed)) weft_yield();
  return 0;
}

int yield_body(benchmark::State &state) {
  g_stop = false;
  weft_task partner = weft_spawn(yielder_task, nullptr);
  for (auto _ : state) weft_yield();
  g_stop = true;
  weft_join(partner);
  weft_task_release(partner);
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_Yield(benchmark::State &state) { run_in_weft(state, 1, yield_body); }
BENCHMARK(BM_Yield)->UseRealTime();

// ------------------------------------------------------------ wake across workers

struct PingPong {
  weft_queue ping, pong;
  int main_worker;
  std::atomic<int> partner_worker{-1};
};
PingPong *g_pp;

// Moves off the main task's worker (a yield puts it where an idle worker
// steals it), pins itself there, then echoes items until the null item.
int echo_task(void *) {
  for (int64_t end = weft_now_ns() + 2000000000; weft_worker_id() == g_pp->main_worker && weft_now_ns() < end;)
    weft_yield();
  weft_pin();
  g_pp->partner_worker.store(weft_worker_id(), std::memory_order_release);
  for (;;) {
    void *v = nullptr;
    if (weft_queue_get(&g_pp->ping, &v) < 0 || !v) break;
    weft_queue_put(&g_pp->pong, v);
  }
  weft_unpin();
  return 0;
}

int wake_body(benchmark::State &state) {
  PingPong pp;
  weft_queue_init(&pp.ping, 1);
  weft_queue_init(&pp.pong, 1);
  pp.main_worker = weft_worker_id();
  g_pp = &pp;
  weft_task partner = weft_spawn(echo_task, nullptr);
  // Suspend (not spin: a task spawned here may stay on this worker, not
  // stealable, until this task switches out) until the partner runs on
  // another worker.
  for (int64_t end = weft_now_ns() + 2000000000;
       pp.partner_worker.load(std::memory_order_acquire) < 0 && weft_now_ns() < end;)
    weft_sleep_ns(100000);
  int pw = pp.partner_worker.load(std::memory_order_acquire);
  bool crossed = pw >= 0 && pw != pp.main_worker;
  if (!crossed) state.SkipWithError("the partner task did not move to another worker within 2 s");
  uintptr_t i = 1;
  if (crossed) {
    for (auto _ : state) {
      void *v = nullptr;
      weft_queue_put(&pp.ping, reinterpret_cast<void *>(i));
      weft_queue_get(&pp.pong, &v);
      if (v != reinterpret_cast<void *>(i)) {
        state.SkipWithError("wrong reply");
        break;
      }
      i++;
    }
  }
  weft_queue_put(&pp.ping, nullptr);  // stop (the partner runs once the spin above ends in any case)
  weft_join(partner);
  weft_task_release(partner);
  weft_queue_destroy(&pp.ping);
  weft_queue_destroy(&pp.pong);
  state.counters["partner_worker"] = pp.partner_worker.load();
  state.counters["main_worker"] = weft_worker_id();
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_WakeAcrossWorkers(benchmark::State &state) { run_in_weft(state, 2, wake_body); }
BENCHMARK(BM_WakeAcrossWorkers)->UseRealTime();

// ------------------------------------------------------------ sleep / timers

int sleep0_body(benchmark::State &state) {
  for (auto _ : state) weft_sleep_ns(0);
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_Sleep0(benchmark::State &state) { run_in_weft(state, 1, sleep0_body); }
BENCHMARK(BM_Sleep0)->UseRealTime();

int64_t g_sleep_ns;

int sleep_short_body(benchmark::State &state) {
  for (auto _ : state) weft_sleep_ns(g_sleep_ns);
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_SleepShort(benchmark::State &state) {
  g_sleep_ns = state.range(0);
  run_in_weft(state, 1, sleep_short_body);
}
BENCHMARK(BM_SleepShort)->ArgName("ns")->Arg(1000)->Arg(100000)->UseRealTime();

// ------------------------------------------------------------ io_uring NOP

int io_nop_body(benchmark::State &state) {
  int rc = weft__io_nop();
  if (rc < 0) {
    state.SkipWithError(("weft__io_nop: " + std::string(strerror(-rc))).c_str());
    return 0;
  }
  for (auto _ : state) benchmark::DoNotOptimize(weft__io_nop());
  state.SetItemsProcessed(state.iterations());
  return 0;
}

void BM_IoNop(benchmark::State &state) { run_in_weft(state, 1, io_nop_body); }
BENCHMARK(BM_IoNop)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
