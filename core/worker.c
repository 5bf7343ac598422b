/* core/worker.c: a worker's scheduler loop, task placement and the task
 * record free lists (see worker.h for the order of looking for work).
 *
 * PUBLISH AFTER SWITCH. A task that waits switches out with intent PARK,
 * straight to the next local task or to its worker's scheduler context;
 * only then, on the stack of whichever context resumed, is the task's state
 * CASed WAITING -> PARKED (release; weft__finish_switch). A waker that wins
 * the task moves PARKED -> RUNNABLE and enqueues it; so a task becomes
 * runnable elsewhere only once its stack is completely switched out, and
 * one thread at a time runs on each stack. If a waker came first
 * (NOTIFIED), the CAS fails and the task goes to the LIFO slot to run next.
 * Switching task to task directly (weft__switch_out) halves the switches
 * of a yield or a hand-off; the scheduler context still runs every
 * WEFT__GLOBAL_INTERVAL switches (inject queue, timers, reactor) and
 * whenever nothing local is runnable.
 *
 * Where a woken or spawned task goes (weft__schedule):
 *  - pinned task: its own worker (LIFO slot or the owner-only pinned list
 *    when woken there; that worker's inbox from elsewhere); never a deque,
 *    so it is never stolen;
 *  - migrate test mode: another worker's inbox, chosen at random, and from
 *    there its owner-only list, so that it runs on that worker;
 *  - from a task of the same runtime: the LIFO slot; its previous occupant
 *    goes to the back of the deque (stealable: notify an idle worker);
 *  - from the scheduler (timers, completions): the back of the deque;
 *  - from any other thread: the inject queue, then notify.
 * A yield goes to the back of the deque: behind the other runnable tasks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "core/alloc.h"
#include "core/idle.h"
#include "core/inject.h"
#include "core/runtime.h"
#include "core/task.h"
#include "core/worker.h"
#include "core/taskext.h"

void weft__task_finish(weft__task *t, int status);
void weft__task_name(weft__task *t, char out[32]);

/* initial-exec: a plain load off the thread pointer (the general-dynamic
 * model called __tls_get_addr on every access: 5% of a yield) */
static __thread weft__worker *tls_worker __attribute__((tls_model("initial-exec")));

__attribute__((noinline)) weft__worker *weft__worker_self(void) {
  /* The empty asm keeps the compiler from assuming anything about the
   * thread pointer across calls: the task may have moved thread. */
  __asm__ __volatile__("" ::: "memory");
  return tls_worker;
}

static inline weft__task *task_of(weft__link *l) { return (weft__task *)((char *)l - offsetof(weft__task, link)); }

static uint64_t rng_next(weft__worker *w) {
  uint64_t x = w->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return w->rng = x;
}

/* ------------------------------------------------------------ task records */

/* Records come from 2 MiB chunks mapped for the runtime's lifetime and
 * advised MADV_HUGEPAGE: a spawn storm creates records faster than anything
 * else, and on this project's VM a first-touch fault costs ~10 us per 4 KiB
 * page against ~0.2 ms per 2 MiB huge page (measured: spawn_many with a
 * million queued tasks went from 0.85 s of faults to a few ms).
 *
 * Free records move in magazines, as in Bonwick's slab allocator: a worker
 * has two owner-only lists of at most MAG_TASKS records, `free_tasks` (it
 * allocates from and recycles into this one) and `spare` (a full one or
 * none), and trades whole magazines with the depot, a stack of full
 * magazines under arena_lock. A trade is O(1) whatever the magazine's size,
 * because a magazine's first record carries its count and the depot link
 * (fields a free record does not use: status and arg). So a spawner and the
 * workers that run and recycle its tasks meet at the lock once per
 * MAG_TASKS tasks each. Before, a refill of 32 records walked the list under
 * a plain mutex, and with 2 workers spawn_many turned a third of those
 * acquisitions into futex calls (measured with strace: ~1,000 per million
 * tasks on the arena lock alone).
 *
 * Threads outside the runtime allocate and recycle one record at a time
 * through the depot (a magazine of one). */
#define CHUNK_BYTES ((size_t)2 << 20)
#define MAG_TASKS 256
_Static_assert(MAG_TASKS * 256 <= CHUNK_BYTES / 2, "a chunk holds several magazines");

struct weft__task_slab { /* the header of a chunk */
  struct weft__task_slab *next;
  size_t used;            /* bytes carved, header included */
};

/* A magazine's head: its count and the next magazine in the depot. */
static inline int mag_count(weft__task *m) { return m->status; }
static inline weft__task *mag_next(weft__task *m) { return (weft__task *)m->arg; }
static inline void mag_set(weft__task *m, int count, weft__task *next) {
  m->status = count;
  m->arg = next;
}

/* Under arena_lock: push the magazine m (count set) onto the depot. */
static void depot_push(weft__runtime *rt, weft__task *m, int count) {
  mag_set(m, count, rt->depot);
  rt->depot = m;
}

/* Under arena_lock: n fresh records from the current chunk (or a new one),
 * linked into a magazine; NULL if no memory. */
static weft__task *carve_records(weft__runtime *rt, int n) {
  struct weft__task_slab *c = rt->slabs;
  size_t need = sizeof(weft__task) * (size_t)n;
  if (weft__fault_injected()) return NULL; /* test builds: the out-of-memory path */
  if (!c || c->used + need > CHUNK_BYTES) {
    /* map twice the size to align the chunk on 2 MiB, then trim */
    char *m = mmap(NULL, 2 * CHUNK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)m + CHUNK_BYTES - 1) & ~(uintptr_t)(CHUNK_BYTES - 1));
    if (a > m) munmap(m, (size_t)(a - m));
    if (a + CHUNK_BYTES < m + 2 * CHUNK_BYTES) munmap(a + CHUNK_BYTES, (size_t)(m + 2 * CHUNK_BYTES - (a + CHUNK_BYTES)));
    (void)madvise(a, CHUNK_BYTES, MADV_HUGEPAGE); /* best effort */
    c = (struct weft__task_slab *)(void *)a;
    c->next = rt->slabs;
    c->used = (sizeof *c + WEFT_CACHELINE - 1) & ~(size_t)(WEFT_CACHELINE - 1);
    rt->slabs = c;
  }
  weft__task *recs = (weft__task *)(void *)((char *)c + c->used); /* zeroed: fresh anonymous memory */
  c->used += need;
  for (int i = 0; i < n; i++) {
    recs[i].link.next = i + 1 < n ? &recs[i + 1].link : NULL;
    recs[i].arena_next = weft__load(&rt->all_tasks, RELAXED); /* relaxed: under arena_lock, the only writer */
    /* release: pairs with the acquire in list_tasks: the record's
     * arena_next and zeroed fields are visible to listers */
    weft__store(&rt->all_tasks, &recs[i], RELEASE);
  }
  mag_set(recs, n, NULL);
  return recs;
}

/* A magazine from the depot, or freshly carved; NULL if no memory. Its
 * count is mag_count(). */
static weft__task *depot_take(weft__runtime *rt) {
  pthread_mutex_lock(&rt->arena_lock);
  weft__task *m = rt->depot;
  if (m)
    rt->depot = mag_next(m);
  else
    m = carve_records(rt, MAG_TASKS);
  pthread_mutex_unlock(&rt->arena_lock);
  return m;
}

weft__task *weft__task_alloc(weft__runtime *rt, weft__worker *w) {
  if (w) {
    if (!w->free_tasks) {
      if (w->spare) {
        w->free_tasks = w->spare;
        w->n_free = (size_t)mag_count(w->spare);
        w->spare = NULL;
      } else {
        weft__task *m = depot_take(rt);
        if (!m) return NULL;
        w->free_tasks = m;
        w->n_free = (size_t)mag_count(m);
      }
    }
    weft__task *t = w->free_tasks;
    w->free_tasks = (weft__task *)t->link.next;
    w->n_free--;
    return t;
  }
  weft__task *m = depot_take(rt);
  if (!m) return NULL;
  int n = mag_count(m);
  if (n > 1) { /* the rest goes back as a magazine of n - 1 */
    weft__task *rest = (weft__task *)m->link.next;
    pthread_mutex_lock(&rt->arena_lock);
    depot_push(rt, rest, n - 1);
    pthread_mutex_unlock(&rt->arena_lock);
  }
  return m;
}

void weft__task_recycle(weft__task *t) {
  weft__runtime *rt = t->rt;
  weft__store(&t->alive, 0, RELAXED); /* relaxed: listings re-validate with a reference */
  weft__worker *w = weft__worker_self();
  if (w && w->rt == rt) {
    if (w->n_free == MAG_TASKS) { /* full: it becomes the spare; a full spare goes to the depot */
      if (w->spare) {
        pthread_mutex_lock(&rt->arena_lock);
        depot_push(rt, w->spare, MAG_TASKS);
        pthread_mutex_unlock(&rt->arena_lock);
      }
      mag_set(w->free_tasks, MAG_TASKS, NULL);
      w->spare = w->free_tasks;
      w->free_tasks = NULL;
      w->n_free = 0;
    }
    t->link.next = (weft__link *)w->free_tasks;
    w->free_tasks = t;
    w->n_free++;
    return;
  }
  t->link.next = NULL;
  pthread_mutex_lock(&rt->arena_lock);
  depot_push(rt, t, 1);
  pthread_mutex_unlock(&rt->arena_lock);
}

/* ------------------------------------------------------------ placement */

static bool is_pinned(weft__task *t) {
  /* acquire: pairs with the release in weft_pin: pin_worker is visible */
  return weft__load(&t->pinned, ACQUIRE) != 0;
}

#define OVERFLOW_BATCH 128

/* OWNER: the deque is full: move its older half (at most OVERFLOW_BATCH)
 * and t to the inject queue. */
static void overflow(weft__worker *w, weft__task *t) {
  void *batch[OVERFLOW_BATCH + 1]; /* on the caller's stack (maybe a task's): keep it small */
  uint32_t n = weft__deque_take_half(&w->deque, batch, OVERFLOW_BATCH);
  batch[n++] = t;
  for (uint32_t i = 0; i + 1 < n; i++) ((weft__task *)batch[i])->link.next = &((weft__task *)batch[i + 1])->link;
  weft__inject_push_batch(&w->rt->inject, &((weft__task *)batch[0])->link, &((weft__task *)batch[n - 1])->link, n);
}

static void push_back_unpinned(weft__worker *w, weft__task *t);

/* OWNER: t goes to the back of this worker's queue (pinned: the pinned list). */
static void push_back(weft__worker *w, weft__task *t) {
  if (is_pinned(t)) {
    t->link.next = NULL;
    weft__inbox_push(&w->inbox, &t->link);
    return;
  }
  push_back_unpinned(w, t);
}

/* push_back for a task the caller found unpinned (a pin changes only while
 * the task runs, and t does not run now). */
static void push_back_unpinned(weft__worker *w, weft__task *t) {
  uint32_t n = weft__deque_push(&w->deque, t);
  if (!n) overflow(w, t);
  /* Wake a parked worker when work appears where there was none, and then
   * every 16 pushes while a backlog grows, not at every push: a woken worker
   * that finds work wakes the next one itself (rule 3 of core/idle.h), and
   * reading the idle state is a cache miss whenever searching workers change
   * it (one spawner, 15 searching workers: those reads were a quarter of the
   * spawner's time). The wake when work appears is never missed against a
   * worker that is parking (weft__idle_notify_local fences: rule 4 of
   * core/idle.h); otherwise a task could wait for this worker's current
   * task, however long, while another worker slept.
   * In the scheduler context (no task runs here: completions reaped,
   * timers fired, a task that ended or yielded) the first task of an empty
   * deque is likely the one this worker runs next, not surplus: the wake is
   * owed instead, and run_task pays it only if the worker picked something
   * else (then the task waits behind work that may run long). From the
   * second task on it wakes as usual (Tokio's should_notify_others: more
   * than one runnable). Waking another worker for the first only moved it
   * there: chained_spawn at 2 workers ran at 10.0M spawns/s, against 17.8M
   * with this rule (and at 1 worker). */
  if (w->current) {
    if (n <= 1 || (n & 15) == 0) weft__idle_notify_local(w->rt);
  } else if (n == 1) {
    w->notify_owed = true;
  } else if (n == 0 || n == 2 || (n & 15) == 0) {
    w->notify_owed = false;
    weft__idle_notify_local(w->rt);
  }
}

/* Any thread: hand t to worker x in particular. */
static void send_to(weft__worker *x, weft__task *t) {
  weft__inbox_push(&x->inbox, &t->link);
  /* The inbox push is a release CAS; the owner, before parking, stores
   * sleeping and re-checks its inbox (seq_cst). The fence makes this side's
   * push-then-load a StoreLoad pair too, so one of the two sees the other. */
  weft__fence(SEQ_CST);
  if (weft__load(&x->sleeping, RELAXED)) weft__reactor_unpark(&x->reactor);
}

void weft__schedule(weft__task *t, bool lifo) {
  weft__runtime *rt = t->rt;
  weft__worker *w = weft__worker_self();
  if (w && w->rt != rt) w = NULL;
  if (is_pinned(t)) {
    weft__worker *pw = rt->workers[t->pin_worker];
    if (pw != w) {
      send_to(pw, t);
      return;
    }
  } else if (rt->migrate) {
    int last = weft__load(&t->last_worker, RELAXED); /* relaxed: a hint for the test mode */
    unsigned n = rt->nworkers, pick;
    uint64_t r = w ? rng_next(w) : (uint64_t)weft_now_ns() * 0x9e3779b97f4a7c15ull;
    pick = (unsigned)(r >> 33) % n;
    if (n > 1 && (int)pick == last) pick = (pick + 1) % n;
    send_to(rt->workers[pick], t);
    return;
  } else if (!w) {
    t->link.next = NULL;
    if (!weft__inject_push(&rt->inject, &t->link)) {
      /* closed: only after every task ended; cannot happen for a live task */
      abort();
    }
    weft__idle_notify(rt);
    return;
  }
  if (lifo && w->current) {
    weft__task *prev = w->lifo;
    w->lifo = t;
    if (!prev) return;
    t = prev;
  }
  push_back(w, t);
}

void weft__schedule_many(weft__task **ts, size_t n) {
  if (n == 0) return;
  weft__runtime *rt = ts[0]->rt;
  weft__worker *w = weft__worker_self();
  if (w && w->rt != rt) w = NULL;
  weft__link *first = NULL, *last = NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    weft__task *t = ts[i];
    if (w || rt->migrate || is_pinned(t)) {
      weft__schedule(t, false);
      continue;
    }
    t->link.next = NULL;
    if (last)
      last->next = &t->link;
    else
      first = &t->link;
    last = &t->link;
    k++;
  }
  if (!k) return;
  if (!weft__inject_push_batch(&rt->inject, first, last, k)) abort(); /* closed: only after every task ended */
  weft__idle_notify(rt);
}

static void publish_spawned(weft__worker *w);

void weft__schedule_spawn(weft__worker *w, weft__task *t) {
  weft__runtime *rt = w->rt;
  /* A policy hint, refreshed every 16 spawns: the idle state's line is
   * written by every worker that starts or ends a search, so loading it at
   * each spawn was a cache miss per spawn (relaxed: nothing is read through
   * it; a parked worker is notified by push_back) */
  if ((w->spawned_local & 15) == 0 || !w->parked_seen)
    w->parked_seen = (weft__load(&rt->idle.state, RELAXED) >> 16) < rt->nworkers;
  if (rt->migrate || !w->current) {
    weft__schedule(t, false);
    return;
  }
  if (w->n_spawned_stack > 0 && w->parked_seen) {
    /* A parked worker could run it, and this one already has another spawn
     * waiting: make it stealable (one pending spawn stays local, so a chain
     * of tasks that each spawn the next does not bounce between workers
     * through a wake-up each). */
    if (weft__deque_owner_len(&w->deque) < WEFT_DEQUE_EXACT_LEN) {
      weft__schedule(t, false);
      return;
    }
    /* A backlog is already stealable: publish the spawns in batches of
     * WEFT__SPAWN_STACK with one store of the deque's bottom, whose line
     * every searching worker reads (one spawner, 15 thieves: a push per
     * spawn made that store a cache-line transfer per spawn). */
    if (w->n_spawned_stack == WEFT__SPAWN_STACK) publish_spawned(w);
    w->spawned_stack[w->n_spawned_stack++] = t;
    return;
  }
  if (w->n_spawned_stack == WEFT__SPAWN_STACK) {
    weft__task *oldest = w->spawned_stack[0];
    memmove(&w->spawned_stack[0], &w->spawned_stack[1], sizeof(weft__task *) * (WEFT__SPAWN_STACK - 1));
    w->n_spawned_stack--;
    push_back(w, oldest);
  }
  w->spawned_stack[w->n_spawned_stack++] = t;
}

bool weft__spawn_stack_remove(weft__worker *w, weft__task *t) {
  for (int i = w->n_spawned_stack - 1; i >= 0; i--) {
    if (w->spawned_stack[i] != t) continue;
    memmove(&w->spawned_stack[i], &w->spawned_stack[i + 1], sizeof(weft__task *) * (size_t)(w->n_spawned_stack - 1 - i));
    w->n_spawned_stack--;
    return true;
  }
  return false;
}

/* OWNER: the spawn stack goes to the deque, oldest first, with one
 * publication (pinned tasks never enter the spawn stack: spawn_on pins only
 * through weft__schedule). */
static void publish_spawned(weft__worker *w) {
  int n = w->n_spawned_stack;
  w->n_spawned_stack = 0;
  uint32_t len = weft__deque_push_batch(&w->deque, (void *const *)w->spawned_stack, (uint32_t)n);
  if (!len) {
    for (int i = 0; i < n; i++) push_back(w, w->spawned_stack[i]);
    return;
  }
  if (len <= (uint32_t)n || (len & ~(uint32_t)15) != ((len - (uint32_t)n) & ~(uint32_t)15))
    weft__idle_notify_local(w->rt); /* as push_back: new work, or a 16 boundary crossed */
}

/* OWNER: make the spawn stack stealable (fairness: every global interval,
 * and before parking). */
static void spill_spawned(weft__worker *w) {
  for (int i = 0; i < w->n_spawned_stack; i++) push_back(w, w->spawned_stack[i]);
  w->n_spawned_stack = 0;
}

/* ------------------------------------------------------------ timers */

void weft__worker_run_timers(weft__worker *w) {
  if (w->timers.len == 0) return;
  int64_t now = weft_now_ns();
  weft__timer_entry due[64];
  size_t n;
  /* at most the entries there now: a callback that queues another one due
   * at once (call_soon from a callback) must not keep this loop going */
  size_t budget = w->timers.len;
  while (budget && weft__timer_next(&w->timers) <= now &&
         (n = weft__timer_pop_expired(&w->timers, now, due, budget < 64 ? budget : 64)) > 0) {
    budget -= n;
    for (size_t i = 0; i < n; i++) {
      switch (due[i].kind) {
        case WEFT__TIMER_WAKE:
          weft__wake(due[i].task, due[i].seq, WEFT__WAKE_TIMER);
          break;
        case WEFT__TIMER_SCOPE:
          weft__timeout_fire(due[i].task, due[i].seq);
          break;
        default:
          weft__callback_fire(due[i].task);
          break;
      }
    }
  }
}

/* ------------------------------------------------------------ running a task */

static void report_overflow(weft__task *t) {
  char name[32];
  weft__task_name(t, name);
  fprintf(stderr, "weft: task '%s' overflowed its %zu-byte stack (detected at a switch)\n", name,
          t->stack ? t->stack->size : (size_t)0);
  abort();
}

/* OWNER: the task that switched out for good; account for its end. */
static void task_ended(weft__worker *w, weft__task *t) {
  w->finished_local++;
  /* release: pairs with the acquire in weft__runtime_live */
  weft__store(&w->finished, w->finished_local, RELEASE);
  weft__task_unref(t); /* the running reference */
}

/* OWNER: make a dequeued task ready to be switched to (the first half of
 * running it). Returns false when it ended instead: no memory for its
 * stack (it ends with -ENOMEM, unrun). */
static bool prepare_run(weft__worker *w, weft__task *t) {
  /* acquire: pairs with the waker's release CAS (and the spawner's
   * release push): what they wrote for the task is visible to it */
  uint64_t ws = weft__load(&t->ws, ACQUIRE);
  uint32_t st = WEFT__WS_STATE(ws);
  enum { QUEUED = 1u << WEFT__TS_FRESH | 1u << WEFT__TS_RUNNABLE | 1u << WEFT__TS_NOTIFIED };
  if (weft__unlikely(!((1u << st) & QUEUED))) {
    fprintf(stderr, "weft: internal error: a queued task in state %u\n", st);
    abort();
  }
  /* relaxed: the task is ours now (dequeued): wakers ignore RUNNING */
  weft__store(&t->ws, WEFT__WS_MAKE(WEFT__WS_SEQ(ws), 0, 0, WEFT__TS_RUNNING), RELAXED);
  t->wake_reason = WEFT__WS_REASON(ws);
  if (weft__unlikely(!t->started)) {
    weft__stack *s = weft__stack_get(&w->stacks, t->stack_size);
    if (!s) {
      weft__task_finish(t, -ENOMEM);
      task_ended(w, t);
      return false;
    }
    t->stack = s;
    weft__fiber_make(&t->fiber, s->lo, s->size - s->color, weft__task_entry, t); /* stack.h: colouring */
    t->started = 1;
  }
  weft__store(&t->last_worker, (int8_t)w->id, RELAXED); /* relaxed: for reports */
  if (weft__unlikely(w->rt->debug)) weft__debug_set_running(w, t);
  weft__stack_set_running(t->stack, (const char *)t->name);
  return true;
}

/* OWNER: a task woken while it was still switching out (NOTIFIED): it runs
 * next, as if it had just been woken here. */
static void resume_soon(weft__worker *w, weft__task *t) {
  if (t->rt->migrate || is_pinned(t)) {
    weft__schedule(t, false);
    return;
  }
  weft__task *prev = w->lifo;
  w->lifo = t;
  if (prev) push_back(w, prev);
}

void weft__finish_switch(weft__worker *w) {
  weft__task *t = w->prev;
  if (!t) return;
  w->prev = NULL;
  switch (w->prev_intent) {
    case WEFT__INTENT_PARK: {
      if (weft__unlikely(!weft__stack_check(t->stack, t->fiber.sp))) report_overflow(t);
      uint64_t cur = weft__load(&t->ws, RELAXED);
      if (WEFT__WS_STATE(cur) == WEFT__TS_WAITING) {
        uint64_t parked = (cur & ~(uint64_t)0xf) | WEFT__TS_PARKED;
        /* release: the task's stack is switched out; pairs with the
         * waker's acquire, which may then resume it on another thread */
        if (weft__cas(&t->ws, &cur, parked, RELEASE, RELAXED)) return;
      }
      resume_soon(w, t); /* NOTIFIED: a waker came first */
      return;
    }
    case WEFT__INTENT_YIELD: {
      if (weft__unlikely(!weft__stack_check(t->stack, t->fiber.sp))) report_overflow(t);
      uint64_t cur = weft__load(&t->ws, RELAXED);
      weft__store(&t->ws, (cur & ~(uint64_t)0xf) | WEFT__TS_RUNNABLE, RELAXED); /* only we own it now */
      if (weft__unlikely(w->yield_timers) && !w->current) { /* the scheduler (weft__worker_yield_timers) */
        w->yield_timers = false;
        weft__worker_run_timers(w);
      }
      if (t->rt->migrate || is_pinned(t))
        weft__schedule(t, false);
      else
        push_back_unpinned(w, t);
      return;
    }
    case WEFT__INTENT_EXIT:
      /* An overflow that returned before the task switched again (debug
       * mode's canary) is the ending task's: checked here, not left for the
       * next task to get this stack, which would be blamed for it. */
      if (weft__unlikely(!weft__stack_check(t->stack, t->fiber.sp))) report_overflow(t);
      weft__fiber_destroy(&t->fiber);
      weft__stack_put(&w->stacks, t->stack);
      t->stack = NULL;
      task_ended(w, t);
      return;
    default:
      abort();
  }
}

/* OWNER, scheduler context: run t until control comes back here. */
static void run_task(weft__worker *w, weft__task *t) {
  if (w->notify_owed) { /* push_back_unpinned: t was not the task it deferred the wake for */
    w->notify_owed = false;
    if (weft__deque_len(&w->deque)) weft__idle_notify_local(w->rt);
  }
  if (!prepare_run(w, t)) return;
  w->current = t;
  w->prev = NULL;
  weft__fiber_switch(&w->sched, &t->fiber);
  /* back in the scheduler, perhaps after a chain of direct switches */
  if (weft__unlikely(w->rt->debug)) weft__store(&w->running, NULL, RELAXED);
  weft__finish_switch(w);
}

static weft__task *take_local(weft__worker *w);

/* OWNER, on the leaving task's stack: the next task to switch to directly,
 * or NULL to go through the scheduler (nothing local, or it is time for the
 * scheduler's periodic pass: the inject queue, timers, the reactor). */
static weft__task *direct_next(weft__worker *w) {
  if (++w->tick % WEFT__GLOBAL_INTERVAL == 0) return NULL;
  weft__task *t;
  while ((t = take_local(w)))
    if (prepare_run(w, t)) return t;
  return NULL;
}

/* The leaving task's side of a switch: record what the resuming context
 * must finish (weft__finish_switch), pick the next context, switch. */
static void leave(weft__worker *w, weft__task *self, int intent, bool final) {
  w->prev = self;
  w->prev_intent = intent;
  weft__task *next = direct_next(w);
  w->current = next;
  if (final) weft__fiber_switch_final(&self->fiber, next ? &next->fiber : &w->sched);
  weft__fiber_switch(&self->fiber, next ? &next->fiber : &w->sched);
}

void weft__switch_out(weft__task *self, int intent) { weft__switch_out_from(weft__worker_self(), self, intent); }

void weft__switch_out_from(weft__worker *w, weft__task *self, int intent) {
  leave(w, self, intent, false);
  /* Resumed, maybe on another worker: finish the switch-out of whoever
   * left the context that switched to us. */
  weft__finish_switch(weft__worker_self());
}

void weft__task_entry(void *arg) {
  weft__task *t = arg;
  weft__finish_switch(weft__worker_self()); /* we may have been switched to directly */
  int status;
  /* A task cancelled before it started never runs its body (asyncio). */
  if (weft__load(&t->cancel_pending, RELAXED)) {
    weft__cancel_consume(t);
    status = -ECANCELED;
  } else {
    status = t->fn(t->arg);
  }
  weft__task_finish(t, status);
  /* (an inline child never gets here: it returns into its joiner) */
  leave(weft__worker_self(), t, WEFT__INTENT_EXIT, true);
}

/* ------------------------------------------------------------ finding work */

/* OWNER: move the inbox into the local queues: pinned tasks to the pinned
 * list, others to the deque. Returns one task to run, or NULL. In the
 * migrate test mode every task goes to the pinned list (owner-only): in the
 * deque the worker it was sent away from could steal it back, and the mode
 * promises a move at every suspension. */
static weft__task *drain_inbox(weft__worker *w) {
  weft__link *l = weft__inbox_take_all(&w->inbox);
  weft__task *first = NULL;
  bool keep_here = w->rt->migrate;
  while (l) {
    weft__link *next = l->next;
    weft__task *t = task_of(l);
    if (!first) {
      first = t;
    } else if (keep_here || is_pinned(t)) {
      t->link.next = NULL;
      if (w->pinned_tail)
        w->pinned_tail->link.next = &t->link;
      else
        w->pinned_head = t;
      w->pinned_tail = t;
    } else if (!weft__deque_push(&w->deque, t)) {
      overflow(w, t);
    }
    l = next;
  }
  return first;
}

static weft__task *take_pinned(weft__worker *w) {
  weft__task *t = w->pinned_head;
  if (t) {
    w->pinned_head = t->link.next ? task_of(t->link.next) : NULL;
    if (!w->pinned_head) w->pinned_tail = NULL;
  }
  return t;
}

static weft__task *take_inject(weft__worker *w) {
  weft__runtime *rt = w->rt;
  if (weft__inject_is_empty(&rt->inject)) return NULL;
  /* take a fair share: one to run, some more into the deque */
  weft__link *batch[32];
  size_t want = weft__load(&rt->inject.len, RELAXED) / rt->nworkers + 1;
  if (want > 32) want = 32;
  uint32_t room = weft__deque_capacity(&w->deque) - weft__deque_len(&w->deque);
  if (want > room + 1) want = room + 1;
  size_t n = weft__inject_pop_batch(&rt->inject, batch, want);
  if (n == 0) return NULL;
  for (size_t i = 1; i < n; i++)
    if (!weft__deque_push(&w->deque, task_of(batch[i]))) overflow(w, task_of(batch[i]));
  if (n > 1) weft__idle_notify_local(rt);
  return task_of(batch[0]);
}

/* Is anything but the LIFO slot runnable here? (The LIFO cap exists for
 * fairness to these; with none, re-running the LIFO task is fair, and
 * pushing it to the deque would only wake another worker to steal it.) */
static bool other_local_work(weft__worker *w) {
  return w->n_spawned_stack || w->pinned_head || w->taken_next < w->n_taken ||
         !weft__inbox_is_empty(&w->inbox) || weft__deque_len(&w->deque) ||
         !weft__inject_is_empty(&w->rt->inject);
}

/* OWNER: start loading what switching to t (claimed from the own deque:
 * ours, so reading its saved stack pointer races with nobody) will touch
 * first: the top of its stack, where ctx_switch pops the saved registers and
 * the frames it returns through sit. A task woken after a long wait has a
 * cold stack page (a TLB miss and several cache misses); fetching it while
 * the task before it runs hid most of that. Measured on idle_tasks (100,000
 * tasks woken at once, 1 worker): the first touch of the resumed stack was
 * 60% of the wake time (perf annotate: ctx_switch's first load from the new
 * stack, and the returns above it). A fresh task's sp is stale or NULL:
 * prefetching it is harmless (a prefetch never faults). */
static inline void prefetch_resume(weft__task *t) {
  char *sp = t->fiber.sp;
  if (!sp) return;
  for (int i = 0; i < 4; i++) __builtin_prefetch(sp + 64 * i);
}

/* OWNER: the oldest task of the own deque. The owner claims up to
 * WEFT__TAKE_BATCH of the oldest at once (one CAS, take_half) and hands
 * them out from an owner-only array: on a yield-heavy worker the CAS per
 * take was a fifth of a yield's cost. The batch stays small so that
 * thieves lose little. */
static weft__task *take_from_deque(weft__worker *w) {
  if (w->taken_next < w->n_taken) {
    weft__task *t = w->taken[w->taken_next++];
    if (w->taken_next < w->n_taken) prefetch_resume(w->taken[w->taken_next]);
    return t;
  }
  uint32_t n = weft__deque_take_half(&w->deque, (void **)w->taken, WEFT__TAKE_BATCH);
  w->n_taken = (int)n;
  w->taken_next = n ? 1 : 0;
  if (n == 0) return NULL;
  for (uint32_t i = 1; i < n; i++) __builtin_prefetch(&w->taken[i]->fiber); /* their records */
  if (n > 1) prefetch_resume(w->taken[1]);
  return w->taken[0];
}

static weft__task *take_local(weft__worker *w) {
  weft__task *t;
  if (w->lifo) {
    t = w->lifo;
    w->lifo = NULL;
    if (w->lifo_streak < WEFT__LIFO_MAX || !other_local_work(w)) {
      w->lifo_streak++;
      return t;
    }
    push_back(w, t); /* it ran enough in a row while others wait: behind them */
  }
  w->lifo_streak = 0;
  if (w->n_spawned_stack) return w->spawned_stack[--w->n_spawned_stack];
  /* Pinned tasks (pinned list, inbox) and the deque take turns while both
   * have work. A pinned task that yields, or is woken here or by its I/O
   * completion, goes back to the pinned side: when that side always came
   * first, two pinned tasks yielding (or waking each other past the LIFO
   * cap) ran forever and the deque, timer wake-ups included, never ran
   * (tests/test_rev_live.c). */
  if (w->pinned_head || !weft__inbox_is_empty(&w->inbox)) {
    if ((w->deque_turn ^= 1) && (t = take_from_deque(w))) return t;
    if ((t = take_pinned(w))) return t;
    if (!weft__inbox_is_empty(&w->inbox) && (t = drain_inbox(w))) return t;
  }
  return take_from_deque(w);
}

static weft__task *steal(weft__worker *w) {
  weft__runtime *rt = w->rt;
  unsigned n = rt->nworkers;
  if (n < 2) return NULL;
  unsigned start = (unsigned)(rng_next(w) >> 33) % n;
  for (unsigned i = 0; i < n; i++) {
    weft__worker *v = rt->workers[(start + i) % n];
    if (v == w) continue;
    weft__task *t = weft__deque_steal_half(&v->deque, &w->deque);
    if (t) return t;
  }
  return take_inject(w);
}

/* Is any stealable work visible? (rule 4 of core/idle.h) */
static bool work_visible(weft__runtime *rt) {
  if (!weft__inject_is_empty(&rt->inject)) return true;
  for (unsigned i = 0; i < rt->nworkers; i++)
    if (weft__deque_len(&rt->workers[i]->deque)) return true;
  return false;
}

static void maintenance(weft__worker *w) {
  weft__worker_run_timers(w);
  weft__reactor_poll(&w->reactor);
}

static weft__task *find_work(weft__worker *w) {
  weft__task *t;
  /* test, then count: direct_next hands over to the scheduler exactly when
   * its count reaches a multiple of the interval, and the periodic pass
   * must then run (counting first here skipped it whenever several tasks
   * kept switching directly: timers and the inject queue starved) */
  if (w->tick++ % WEFT__GLOBAL_INTERVAL == 0) {
    spill_spawned(w);
    maintenance(w);
    if ((t = take_inject(w))) return t;
  }
  if ((t = take_local(w))) return t;
  if ((t = take_inject(w))) return t;
  maintenance(w);
  if ((t = take_local(w))) return t;
  return NULL;
}

static void park(weft__worker *w) {
  weft__runtime *rt = w->rt;
#ifdef WEFT_TEST_HOOKS
  if (weft__test_park_hook) weft__test_park_hook();
#endif
  weft__idle_park(&rt->idle, w);
  /* Rule 4 of core/idle.h, for every parking worker: the decrement in
   * weft__idle_park and this fence, then the load of each queue, are our
   * half of the StoreLoad pair whose other half is a pusher's store, fence
   * (weft__idle_notify) and load of the state. Either the pusher sees us
   * parked and wakes someone, or we see its work here. The fence is needed
   * beside the seq_cst RMW: on aarch64 a later relaxed load may be
   * satisfied before the RMW's store is visible. */
  weft__fence(SEQ_CST);
  if (work_visible(rt)) weft__idle_notify(rt);
  /* StoreLoad pair with send_to (see there): store, full fence, then load
   * the inbox. A seq_cst store alone would not do on aarch64, where a
   * later relaxed load may pass it (stlr then ldr). */
  weft__store(&w->sleeping, 1, RELAXED);
  weft__fence(SEQ_CST);
  if (weft__inbox_is_empty(&w->inbox) && !weft__load(&rt->stop, ACQUIRE)) {
    int64_t deadline = weft__timer_next(&w->timers);
    if (weft__stack_trim_wanted(&w->stacks)) {
      /* Give surplus stack memory back once the worker has been idle for
       * WEFT__TRIM_IDLE_NS, not at every park: busy workloads park
       * thousands of times a second (timers: between every expiry), and
       * each madvise costs a system call and a TLB shootdown on every CPU
       * (measured: 40% of the timers workload on 2 workers). */
      int64_t now = weft_now_ns();
      if (w->idle_since == 0) w->idle_since = now;
      if (now - w->idle_since >= WEFT__TRIM_IDLE_NS)
        weft__stack_trim(&w->stacks);
      else if (w->idle_since + WEFT__TRIM_IDLE_NS < deadline)
        deadline = w->idle_since + WEFT__TRIM_IDLE_NS;
    }
    weft__reactor_park(&w->reactor, deadline);
  }
  weft__store(&w->sleeping, 0, RELAXED);
  weft__reactor_rearm(&w->reactor); /* before looking for work: io/reactor.h */
  weft__idle_unparked(&rt->idle, w);
  weft__worker_run_timers(w);
}

void *weft__worker_main(void *arg) {
  weft__worker *w = arg;
  weft__runtime *rt = w->rt;
  tls_worker = w;
  weft__fiber_init_thread(&w->sched);
  weft__stack_thread_init();
  w->start_error = weft__reactor_init(&w->reactor, rt->backend, rt->cfg.ring_entries);
  /* a failed start ends this thread: its alternate signal stack goes with
   * it (it was left mapped, 68 KiB per failed worker: a program retrying
   * weft_runtime_new under EMFILE grew without bound) */
  if (w->start_error) weft__stack_thread_fini();
  weft__runtime_started(rt, w);
  if (w->start_error) return NULL;

  for (;;) {
    weft__task *t = find_work(w);
    if (!t && weft__idle_begin_search(&rt->idle, w)) {
      /* Search a little before parking: waking a parked worker costs a
       * system call here and 5-8 us there, so a burst of short tasks
       * should not park and unpark a worker between each of them. */
      unsigned victims = rt->nworkers > 1 ? rt->nworkers - 1 : 1;
      unsigned rounds = (WEFT__SEARCH_PROBES + victims - 1) / victims;
      for (unsigned round = 0; !t && round < rounds; round++) {
        if (round) weft__cpu_relax();
        t = steal(w);
        if (!t) t = take_local(w);
      }
      if (t) weft__idle_end_search(rt, w);
    }
    if (t) {
      if (w->searching) weft__idle_end_search(rt, w);
      w->idle_since = 0;
      run_task(w, t);
      continue;
    }
    /* acquire: pairs with the release store of stop in shutdown (step 3) */
    if (weft__load(&rt->stop, ACQUIRE) && weft__runtime_live(rt) == 0) break;
    park(w);
  }
  if (w->searching) weft__idle_end_search(rt, w);
  /* The reactor stays open until every worker has stopped: another thread
   * may still unpark this one (shutdown's unpark_all, a late notify), and a
   * closed eventfd's number could already belong to someone else's file.
   * free_runtime closes it after joining the threads. */
  weft__stack_pool_fini(&w->stacks);
  weft__stack_thread_fini();
  tls_worker = NULL;
  return NULL;
}
