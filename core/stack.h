/* core/stack.h: task stacks, pooled per worker.
 *
 * A task gets its stack when it first runs, not when it is spawned, and
 * gives it back when it ends; the worker's pool hands out the most recently
 * returned stack first (hot: already faulted, in cache).
 *
 * Memory. Stacks of the runtime's default size are carved from slabs (one
 * mmap for many stacks: 16 in the first slab, doubling per slab up to 256,
 * so a million stacks need a few thousand mappings, far below
 * vm.max_map_count; neighbouring slabs usually merge into one mapping
 * anyway). Slab layout: [guard][stack][guard][stack]...; MADV_NOHUGEPAGE on
 * the slab, since a transparent huge page would make a 64 KiB stack cost
 * 2 MiB. Each stack's descriptor lives in the slab's record (one weft__alloc
 * per slab) and stays with its stack forever. A stack taken without memory
 * (fresh, or from the cold list) has its top page populated with
 * MADV_POPULATE_WRITE (measured on the development VM: a first-touch fault
 * ~17 us, populating ~4.5 us; weft__stack_get of a fresh stack ~6 us, of a
 * cold one ~4 us, of a hot one ~2 ns). Stacks larger than the default get a mapping of their
 * own (guard page included), unmapped when they are put back; a request
 * smaller than the default gets a default stack.
 *
 * Overflow. A stack's lowest page is a guard (mprotect PROT_NONE) while the
 * mapping budget allows: a quarter of vm.max_map_count, shared by the
 * process; one mprotect guard splits its mapping, so it is charged 2
 * mappings, given back when the stack's mapping goes. Beyond the budget,
 * MADV_GUARD_INSTALL (6.13+: no mapping cost) when WEFT_GUARD_INSTALL=1 asks
 * for it: it is not the default because on this project's VM (shadow
 * paging) it made every later access to the stacks around a guard cost
 * ~5 us (waking 100,000 idle tasks: 0.59 s against 0.06 s). Otherwise the
 * stack has no guard page: the scheduler checks the saved stack pointer on
 * every switch (weft__stack_check), and in debug mode a canary word at lo
 * (WEFT__STACK_CANARY: a constant XORed with lo, rewritten whenever the
 * stack gets memory) is checked too; the canary is not the default because
 * it touches one more page per stack (4 KiB of RSS, and a ~10 us first-touch
 * fault here). A fault in a guard page, or near a stack pointer that has
 * left the running stack downwards (a frame larger than the guard page; a
 * stack without a guard), is reported by name from an alternate signal
 * stack: "weft: task 'NAME' overflowed its N-byte stack (fault at 0x...)",
 * then abort(). A large frame that faults nowhere goes unseen: below a slab
 * stack's guard lie its neighbour's usable bytes, mapped read-write (code
 * built with -fstack-clash-protection touches the guard first). The scheduler checks the canary when a task ends too, so
 * that an overflow that returned is blamed on its task, not the next one.
 *
 * Giving memory back. A worker's pool keeps at most WEFT_STACK_HOT stacks
 * with their memory; when the worker is about to park (weft__stack_trim),
 * the surplus goes to the runtime's cold list after MADV_DONTNEED, one call
 * per address-contiguous run (the guard pages between neighbours are inside
 * the range: MADV_DONTNEED keeps both guard markers and PROT_NONE pages).
 * Slabs are unmapped at shutdown (weft__stack_shared_fini).
 *
 * Locking: a pool is touched only by its owner worker; the shared cold list
 * and slab list only under shared->lock, which is a leaf lock (nothing else
 * is taken while it is held, and no system call is made under it).
 */
#ifndef WEFT_CORE_STACK_H
#define WEFT_CORE_STACK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#define WEFT_STACK_HOT 64 /* stacks a worker keeps with their memory while parked */
/* A busy pool that reaches WEFT_STACK_HOT_MAX stacks (a worker where tasks end that began elsewhere:
 * server handlers woken on their descriptor's epoll worker; it never parks, so never trims) hands
 * all but WEFT_STACK_HOT of them, memory and all, to the runtime's warm list, where any worker's get
 * takes them before a cold stack; while the warm list holds WEFT_STACK_WARM_MAX the pool keeps the
 * rest, and a worker's trim before parking empties the warm list into its own trim.
 * Without this the hot list of such a worker grew without bound under load while the others
 * carved and faulted in fresh stacks (RSS +800 MB in 20 s of connection churn). */
#define WEFT_STACK_HOT_MAX (4 * WEFT_STACK_HOT)
#define WEFT_STACK_WARM_MAX 1024

typedef struct weft__stack {
  struct weft__stack *next; /* pool or cold-list link (owner of the list only) */
  char *lo;                 /* lowest usable byte (above the guard page) */
  size_t size;              /* usable bytes (a page multiple) */
  uint32_t flags;           /* WEFT__STACK_*; fixed when the stack is made */
  uint32_t color;           /* bytes left unused at the top: the first frame's offset (below) */
} weft__stack;

/* Stack colouring. Every stack's hot bytes (the saved registers and the few
 * frames above them) sit at the same depth below its top, and tops are page
 * aligned, so without an offset they all fall in the same few sets of the
 * L1 data cache (indexed by the address bits below the page size). A slab
 * stack starts its first frame WEFT__STACK_COLOR_STEP * (its index in the
 * slab mod WEFT__STACK_COLORS) bytes below its top: at most 896 bytes of
 * the stack, so a task that uses less than ~3 KiB still fits its top page
 * (RSS per idle task unchanged: idle_tasks 4,390 bytes per task with 4 or
 * 8 colours). A yielding task's hot bytes are about two cache lines (the
 * saved registers and the frame that called the switch), so 8 colours 128
 * bytes apart tile 1 KiB of each page without overlap, twice the sets of 4
 * colours 256 bytes apart. Measured (docs/benchmarks.md, "stack
 * colouring"): 4 colours of 256 bytes gained on yield_many (1,000 tasks)
 * over none, and 8 of 128 bytes gained again: yield_many at 1 worker with
 * 200 and 1,000 tasks 1.6-1.9x the rate of 4 colours, chained_spawn, fib,
 * ping_pong and idle_tasks unchanged. 16 of 64 bytes matched 8 on
 * yield_many and lost 3-5% on chained_spawn. A colour index decorrelated
 * from the page position ((i + i / 16) mod 8) was 20% slower than i mod 8. */
#define WEFT__STACK_COLORS 8
#define WEFT__STACK_COLOR_STEP 128

enum {
  WEFT__STACK_GUARD = 1u << 0,    /* a guard page sits below lo */
  WEFT__STACK_CANARY = 1u << 1,   /* no guard: a canary word at lo */
  WEFT__STACK_SLAB = 1u << 2,     /* carved from a slab (default size) */
  WEFT__STACK_MPROTECT = 1u << 3, /* the guard is mprotect'd: holds 2 of the mapping budget */
};

/* Per runtime: slabs, the cold list, the default size. */
typedef struct weft__stack_shared {
  pthread_mutex_t lock;
  size_t default_size;            /* the stack a task is promised by default (page multiple); fixed */
  size_t slot_size;               /* the usable bytes of a pooled stack: 2 x default_size, so that a
                                     task that has used at most default_size still has default_size
                                     left for a child it joins inline (core/task.c, try_inline); the
                                     upper half is address space only until used (MAP_NORESERVE) */
  bool canary;                    /* unguarded stacks get a canary word (debug mode; see "Overflow") */
  weft__stack *cold;              /* under lock: default-size stacks without memory */
  weft__stack *warm;              /* under lock: default-size stacks with memory, handed over by busy
                                     pools (WEFT_STACK_HOT_MAX) */
  _Atomic size_t n_warm;          /* written under lock; read without it as a hint (relaxed: nothing
                                     is read through it; the list is taken under the lock) */
  struct weft__stack_slab *slabs; /* under lock: every slab, unmapped at fini */
  size_t n_stacks;                /* under lock: stacks carved from all slabs */
  uint32_t slab_next;             /* under lock: stacks in the next slab (16..256) */
} weft__stack_shared;

/* Per worker (owner only). */
typedef struct weft__stack_pool {
  weft__stack_shared *shared;
  weft__stack *hot;           /* LIFO of default-size stacks with memory */
  size_t n_hot;
} weft__stack_pool;

/* default_size: 0 = 64 KiB; rounded up to pages. Errors: -EINVAL when
 * below 16 KiB or above 1 GiB; a pthread_mutex_init error, negated. */
int weft__stack_shared_init(weft__stack_shared *s, size_t default_size);
void weft__stack_shared_fini(weft__stack_shared *s); /* every stack must be back */

void weft__stack_pool_init(weft__stack_pool *p, weft__stack_shared *s);
void weft__stack_pool_fini(weft__stack_pool *p);     /* returns all to shared (memory given back) */

/* OWNER. A stack of at least size bytes (0 = default); NULL when out of
 * memory (nothing is leaked then). Hot path: a pop from the pool's list. */
weft__stack *weft__stack_get(weft__stack_pool *p, size_t size);
/* OWNER. Give a stack back (any worker's pool may take any stack of the
 * same shared). A stack larger than the default is unmapped here. */
void weft__stack_put(weft__stack_pool *p, weft__stack *s);
/* OWNER, before parking: give the memory of surplus stacks back (the warm list's too). */
void weft__stack_trim(weft__stack_pool *p);
/* Whether a trim has anything to give back (n_hot past WEFT_STACK_HOT, or warm stacks). */
bool weft__stack_trim_wanted(const weft__stack_pool *p);

#define WEFT__STACK_SIGNAL_ROOM 256 /* bytes weft__stack_check wants free below sp */
#define WEFT__STACK_CANARY_KEY UINT64_C(0x7765667473746b21) /* "weftstk!" */

static inline uint64_t weft__stack_canary_of(const weft__stack *s) {
  return WEFT__STACK_CANARY_KEY ^ (uint64_t)(uintptr_t)s->lo;
}

/* Whether sp lies inside s with room for a signal frame, i.e. in
 * (lo + 256, lo + size], and the canary (if any) holds. Inline: the
 * scheduler checks it at every switch. */
static inline bool weft__stack_check(const weft__stack *s, const void *sp) {
  uintptr_t a = (uintptr_t)sp, lo = (uintptr_t)s->lo;
  if (a <= lo + WEFT__STACK_SIGNAL_ROOM || a > lo + s->size) return false;
  if (s->flags & WEFT__STACK_CANARY) {
    uint64_t c;
    __builtin_memcpy(&c, s->lo, sizeof c);
    return c == weft__stack_canary_of(s);
  }
  return true;
}

/* Overflow reporting. install: once per process, any thread, idempotent
 * (SIGSEGV/SIGBUS handler, SA_ONSTACK; faults that are not stack overflows
 * go to the handler that was installed before, or the default action).
 * thread_init: a 64 KiB alternate signal stack for the calling thread
 * (idempotent; 0 or -ENOMEM or a sigaltstack error); thread_fini: restore
 * the thread's previous alternate stack and unmap ours.
 * set_running: what the calling thread runs now; name must stay valid
 * while it is set. Two thread-local stores, inline: cheap enough for every
 * switch. initial-exec TLS, so that the handler reads it with a plain load
 * (the general-dynamic model may call __tls_get_addr: not
 * async-signal-safe). Relaxed: written and read by the same thread (the
 * handler interrupts it). The two stores are not atomic together; a fault
 * between them is in scheduler code, not on a task stack. It stays set
 * between tasks: a scheduler fault is nowhere near that stack's guard. */
void weft__stack_guard_install(void);
int weft__stack_thread_init(void);
void weft__stack_thread_fini(void);

extern __thread _Atomic(const weft__stack *) weft__stack_running __attribute__((tls_model("initial-exec")));
extern __thread _Atomic(const char *) weft__stack_running_name __attribute__((tls_model("initial-exec")));

static inline void weft__stack_set_running(const weft__stack *s, const char *name) {
  atomic_store_explicit(&weft__stack_running_name, name, memory_order_relaxed);
  atomic_store_explicit(&weft__stack_running, s, memory_order_relaxed);
}

#ifdef WEFT_TEST_HOOKS
void weft__fault_mmap_after(long n); /* make the mmap after n more fail (n < 0: never) */
/* Force the guard fallbacks: no_install pretends MADV_GUARD_INSTALL answered
 * EINVAL (false: try it again); budget sets the mprotect mapping budget
 * (< 0: back to a quarter of vm.max_map_count). Affects stacks made later. */
void weft__stack_test_guard(bool no_install, long budget);
long weft__stack_test_guard_budget(void);        /* mappings left for mprotect guards */
unsigned long weft__stack_test_dontneed_calls(void); /* madvise(DONTNEED) calls made by trims */
#endif

#endif
