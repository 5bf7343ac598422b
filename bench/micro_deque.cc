// bench/micro_deque.cc: Google Benchmark microbenchmarks of the work-stealing
// deque (core/deque.c).
//
//   BM_push_take          the owner pushes one item and takes it back (the
//                         cost of a spawn-and-run through the deque: a relaxed
//                         store, a release store and a CAS)
//   BM_push_take_batch    the owner pushes N then takes N (FIFO, no wrap stalls)
//   BM_take_half          fill, then overflow half with take_half (one CAS)
//   BM_steal_half_uncontended  one thread: steal half of a victim holding N
//                         into an empty deque, then drain it and push the
//                         items back (the thief's path without races, plus a
//                         take and a push per item moved)
//   BM_steal_half_one_thief    two threads: thread 0 is the owner pushing
//                         (overflowing half when full, as a worker does into
//                         the inject queue), thread 1 is a thief running
//                         steal_half into its own deque and draining it;
//                         counters report items moved per second on each side
//
// core/deque.h is C only (_Atomic, _Alignas are not C++17), so this file does
// not include it: it declares the few C entry points it uses and treats the
// deque as opaque storage sized with weft__deque_sizeof(). The C file must
// be compiled as C (g++ would compile a .c as C++), e.g. in one line:
//   g++ -O2 -I. -Iinclude bench/micro_deque.cc -x c core/deque.c -x none -lbenchmark -lpthread
// bench/CMakeLists.txt builds it like the other micro_*.cc, against the
// library's objects; it has its own main (BENCHMARK_MAIN), so linking
// -lbenchmark_main as well is harmless (the archive's main is not pulled in).
//
// On a machine with fewer free cores than threads, BM_steal_half_one_thief
// measures the scheduler more than the deque: the thief, alone on a core,
// empties the victim in a few halvings and then finds it empty ("empty"
// counter) until the owner runs again.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

extern "C" {
struct weft__deque; // opaque here: see the note above
void weft__deque_init(weft__deque *d, uint32_t capacity);
uint32_t weft__deque_push(weft__deque *d, void *item);
uint32_t weft__deque_take_half(weft__deque *d, void **out, uint32_t max);
void *weft__deque_take(weft__deque *d);
void *weft__deque_steal_half(weft__deque *victim, weft__deque *dst);
uint32_t weft__deque_len(const weft__deque *d);
size_t weft__deque_sizeof(void);
}

namespace {

constexpr uint32_t kCap = 256; // WEFT_DEQUE_CAP

// A deque in cache-line-aligned storage of the size the C side reports.
struct Deque {
  explicit Deque(uint32_t cap) {
    size_t size = (weft__deque_sizeof() + 63) / 64 * 64;
    d = static_cast<weft__deque *>(std::aligned_alloc(64, size));
    if (!d) std::abort();
    weft__deque_init(d, cap);
  }
  ~Deque() { std::free(d); }
  Deque(const Deque &) = delete;
  Deque &operator=(const Deque &) = delete;
  weft__deque *d;
};

inline void *item(uint64_t i) { return reinterpret_cast<void *>(static_cast<uintptr_t>(i * 8 + 8)); }

void BM_push_take(benchmark::State &state) {
  Deque q(kCap);
  uint64_t i = 0;
  for (auto _ : state) {
    weft__deque_push(q.d, item(i++));
    benchmark::DoNotOptimize(weft__deque_take(q.d));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_push_take);

void BM_push_take_batch(benchmark::State &state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  Deque q(kCap);
  uint64_t i = 0;
  for (auto _ : state) {
    for (uint32_t k = 0; k < n; k++) weft__deque_push(q.d, item(i++));
    for (uint32_t k = 0; k < n; k++) benchmark::DoNotOptimize(weft__deque_take(q.d));
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_push_take_batch)->Arg(16)->Arg(256);

void BM_take_half(benchmark::State &state) {
  Deque q(kCap);
  void *out[kCap];
  uint64_t i = 0, moved = 0;
  for (auto _ : state) {
    while (weft__deque_push(q.d, item(i))) i++;
    moved += weft__deque_take_half(q.d, out, kCap);
    benchmark::DoNotOptimize(out[0]);
  }
  state.SetItemsProcessed(static_cast<int64_t>(moved));
}
BENCHMARK(BM_take_half);

void BM_steal_half_uncontended(benchmark::State &state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  Deque victim(kCap), mine(kCap);
  for (uint32_t k = 0; k < n; k++) weft__deque_push(victim.d, item(k));
  uint64_t moved = 0;
  for (auto _ : state) {
    // steal ceil(n/2), then give them back so the victim holds n again
    void *p = weft__deque_steal_half(victim.d, mine.d);
    void *q;
    while ((q = weft__deque_take(mine.d)) != nullptr) {
      weft__deque_push(victim.d, q);
      moved++;
    }
    weft__deque_push(victim.d, p);
    moved++;
  }
  state.SetItemsProcessed(static_cast<int64_t>(moved));
}
BENCHMARK(BM_steal_half_uncontended)->Arg(8)->Arg(256);

// Shared by the two threads of BM_steal_half_one_thief; created by Setup
// (before the threads start) and destroyed by Teardown (after they stop).
Deque *g_owner, *g_thief;

void SetupSteal(const benchmark::State &state) {
  g_owner = new Deque(static_cast<uint32_t>(state.range(0)));
  g_thief = new Deque(kCap);
}

void TeardownSteal(const benchmark::State &) {
  delete g_owner;
  delete g_thief;
  g_owner = g_thief = nullptr;
}

void BM_steal_half_one_thief(benchmark::State &state) {
  if (state.thread_index() == 0) { // the owner
    std::vector<void *> out(kCap);
    uint64_t i = 0, pushed = 0, overflowed = 0;
    for (auto _ : state) {
      while (!weft__deque_push(g_owner->d, item(i)))
        overflowed += weft__deque_take_half(g_owner->d, out.data(), kCap);
      i++;
      pushed++;
    }
    state.counters["pushed"] = benchmark::Counter(static_cast<double>(pushed), benchmark::Counter::kIsRate);
    state.counters["overflowed"] = benchmark::Counter(static_cast<double>(overflowed), benchmark::Counter::kIsRate);
  } else { // the thief
    uint64_t stolen = 0, steals = 0, empty = 0;
    for (auto _ : state) {
      void *p = weft__deque_steal_half(g_owner->d, g_thief->d);
      if (!p) {
        empty++;
        continue;
      }
      steals++;
      stolen++;
      while ((p = weft__deque_take(g_thief->d)) != nullptr) {
        benchmark::DoNotOptimize(p);
        stolen++;
      }
    }
    state.counters["stolen"] = benchmark::Counter(static_cast<double>(stolen), benchmark::Counter::kIsRate);
    state.counters["steals"] = benchmark::Counter(static_cast<double>(steals), benchmark::Counter::kIsRate);
    state.counters["empty"] = benchmark::Counter(static_cast<double>(empty), benchmark::Counter::kIsRate);
  }
}
BENCHMARK(BM_steal_half_one_thief)
    ->Arg(256)
    ->Arg(16)
    ->Setup(SetupSteal)
    ->Teardown(TeardownSteal)
    ->Threads(2)
    ->UseRealTime();

} // namespace

BENCHMARK_MAIN();
