// bench/micro_timer.cc: the timer heap (core/timer.c) in isolation.
//
// BM_TimerHold/N: the "hold" model of priority-queue benchmarks. N timers
//   pending; each iteration pops the earliest (advancing the clock to its
//   deadline) and inserts a new one at clock + random(1..2N), so the heap
//   stays at N entries and every iteration is one pop + one insert.
// BM_TimerCancelCompact/N: the common fate of a timeout, cancelled before it
//   fires. Each iteration arms a timer and lazily cancels one (marks it
//   stale by bumping its task's sequence number; nothing is searched for),
//   with N live timers pending; the automatic compaction inside insert is
//   part of the measured cost, as it is in the runtime. One expired timer is
//   also popped per iteration so the clock moves.
// BM_TimerCompact/N: one explicit compaction of 2N entries of which half are
//   stale (O(n) filter + Floyd rebuild); reported per entry scanned.
//
// Deterministic inputs (fixed-seed splitmix64); nothing allocates in the
// timed loops except the heap's own doublings and compactions.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

extern "C" {
#include "core/timer.h"
}

namespace {

struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

// A task's current wait sequence number, indexed by the fake task id stored
// in the entry's task pointer. An entry is live while its seq matches.
std::vector<uint32_t> g_seq;

bool live_fn(const weft__timer_entry *e) {
  return g_seq[reinterpret_cast<uintptr_t>(e->task)] == e->seq;
}

weft__timer_entry make(int64_t deadline, size_t task) {
  weft__timer_entry e{};
  e.deadline = deadline;
  e.task = reinterpret_cast<void *>(task);
  e.seq = g_seq[task];
  e.kind = 0;
  return e;
}

void BM_TimerHold(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  Rng rng{42};
  g_seq.assign(n, 0);
  weft__timer_heap h;
  weft__timer_init(&h, live_fn);
  for (size_t i = 0; i < n; i++) weft__timer_insert(&h, make(static_cast<int64_t>(1 + rng.next() % (2 * n)), i));
  int64_t clock = 0;
  for (auto _ : state) {
    weft__timer_entry out;
    weft__timer_pop_expired(&h, INT64_MAX, &out, 1);
    clock = out.deadline;
    int rc = weft__timer_insert(&h, make(clock + 1 + static_cast<int64_t>(rng.next() % (2 * n)),
                                         reinterpret_cast<uintptr_t>(out.task)));
    benchmark::DoNotOptimize(rc);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["pending"] = static_cast<double>(h.len);
  weft__timer_fini(&h);
}
BENCHMARK(BM_TimerHold)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_TimerCancelCompact(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  // Task ids cycle through 4n slots; live_ids holds exactly the ids whose
  // entry is live (pos[id] is its index there, or NONE), so the live count
  // stays n: each iteration arms one and cancels one.
  const size_t slots = 4 * n, NONE = SIZE_MAX;
  Rng rng{43};
  g_seq.assign(slots, 0);
  std::vector<size_t> live_ids, pos(slots, NONE);
  live_ids.reserve(slots);
  auto forget = [&](size_t id) {
    size_t k = pos[id];
    if (k == NONE) return;
    pos[live_ids.back()] = k;
    live_ids[k] = live_ids.back();
    live_ids.pop_back();
    pos[id] = NONE;
  };
  auto arm = [&](weft__timer_heap *h, int64_t deadline, size_t id) {
    forget(id);
    g_seq[id]++;  // the slot's previous entry, if still in the heap, goes stale
    weft__timer_insert(h, make(deadline, id));
    pos[id] = live_ids.size();
    live_ids.push_back(id);
  };
  weft__timer_heap h;
  weft__timer_init(&h, live_fn);
  int64_t clock = 0;
  size_t next_id = 0;
  for (size_t i = 0; i < n; i++) arm(&h, 1 + static_cast<int64_t>(rng.next() % (4 * n)), next_id++);
  for (auto _ : state) {
    size_t nid;
    do nid = next_id++ % slots;  // a slot with no live timer (3n of the 4n are free)
    while (pos[nid] != NONE);
    arm(&h, clock + 1 + static_cast<int64_t>(rng.next() % (4 * n)), nid);
    // lazy cancel of a random live timer: O(1), no search in the heap
    size_t id = live_ids[rng.next() % live_ids.size()];
    forget(id);
    g_seq[id]++;
    // the clock moves: fire (or discard, if stale) the earliest
    weft__timer_entry out;
    if (weft__timer_pop_expired(&h, INT64_MAX, &out, 1)) {
      clock = out.deadline;
      if (live_fn(&out)) {  // fired: no longer pending, keep n live by arming anew
        size_t fid = reinterpret_cast<uintptr_t>(out.task);
        forget(fid);
        arm(&h, clock + 1 + static_cast<int64_t>(rng.next() % (4 * n)), fid);
      }
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["live"] = static_cast<double>(live_ids.size());
  state.counters["heap_len"] = static_cast<double>(h.len);
  weft__timer_fini(&h);
}
BENCHMARK(BM_TimerCancelCompact)->Arg(1000)->Arg(100000)->Arg(1000000);

void BM_TimerCompact(benchmark::State &state) {
  const size_t n = static_cast<size_t>(state.range(0));
  Rng rng{44};
  g_seq.assign(2 * n, 0);
  std::vector<weft__timer_entry> entries;
  for (size_t i = 0; i < 2 * n; i++) entries.push_back(make(static_cast<int64_t>(rng.next() % (4 * n)), i));
  for (size_t i = 0; i < 2 * n; i++)
    if (rng.next() & 1) g_seq[i]++;  // half stale
  weft__timer_heap h;
  weft__timer_init(&h, live_fn);
  for (auto _ : state) {
    state.PauseTiming();
    h.compact_at = SIZE_MAX;  // no automatic compaction while refilling
    h.len = 0;
    for (const auto &e : entries) weft__timer_insert(&h, e);
    state.ResumeTiming();
    weft__timer_compact(&h);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(2 * n));
  weft__timer_fini(&h);
}
BENCHMARK(BM_TimerCompact)->Arg(1000)->Arg(100000)->Arg(1000000);

}  // namespace

BENCHMARK_MAIN();
