// bench/micro_fiber.cc: the raw context switch (core/fiber.c over
// core/arch/switch_<arch>.S), without a scheduler.
//
//   BM_ContextSwitch  the benchmark thread and one fiber switch back and forth;
//                     one iteration = two switches (there and back), so the
//                     cost of one switch is half the time per iteration
//   BM_FiberMake      lay out a fresh fiber's first frame on a (warm) stack and
//                     run it to its first switch back: what a task's first run
//                     costs beyond its stack
//
// In sanitizer builds every switch is also announced to TSan/ASan, which
// dominates; quote figures from the normal (Release) build only.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <sys/mman.h>

extern "C" {
#include "core/fiber.h"
}

namespace {

constexpr size_t kStack = 64 * 1024;

struct Pair {
  weft__fiber main, fib;
  bool stop = false;
};

void ping(void *arg) {
  Pair *p = static_cast<Pair *>(arg);
  while (!p->stop) weft__fiber_switch(&p->fib, &p->main);
  weft__fiber_switch_final(&p->fib, &p->main);
}

void *stack_alloc() {
  void *s = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) std::abort();
  return s;
}

void BM_ContextSwitch(benchmark::State &state) {
  Pair p;
  void *stack = stack_alloc();
  weft__fiber_init_thread(&p.main);
  weft__fiber_make(&p.fib, stack, kStack, ping, &p);
  weft__fiber_switch(&p.main, &p.fib); // first entry
  for (auto _ : state) weft__fiber_switch(&p.main, &p.fib);
  p.stop = true;
  weft__fiber_switch(&p.main, &p.fib); // lets it end
  weft__fiber_destroy(&p.fib);
  munmap(stack, kStack);
  // seconds per single switch (printed with an SI prefix: "12n" = 12 ns)
  state.counters["per_switch"] = benchmark::Counter(static_cast<double>(state.iterations()) * 2,
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_ContextSwitch);

void once(void *arg) {
  Pair *p = static_cast<Pair *>(arg);
  weft__fiber_switch_final(&p->fib, &p->main);
}

void BM_FiberMake(benchmark::State &state) {
  Pair p;
  void *stack = stack_alloc();
  weft__fiber_init_thread(&p.main);
  for (auto _ : state) {
    weft__fiber_make(&p.fib, stack, kStack, once, &p);
    weft__fiber_switch(&p.main, &p.fib);
    weft__fiber_destroy(&p.fib);
  }
  munmap(stack, kStack);
}
BENCHMARK(BM_FiberMake);

} // namespace

BENCHMARK_MAIN();
