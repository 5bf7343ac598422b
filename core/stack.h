/* core/stack.h: task stacks, pooled per worker.
 *
 * A task gets its stack when it first runs, not when it is spawned, and
 * gives it back when it ends; the worker's pool hands out the most recently
 * returned stack first (hot: already faulted, in cache).
 *
 * Memory. Stacks of the runtime's default size are carved from slabs (one
 * mmap for many stacks, so a million stacks need a few thousand mappings,
 * far below vm.max_map_count). A fresh stack has its top page populated with
 * MADV_POPULATE_WRITE (a first-touch fault costs ~10 us on this kind of VM,
 * populating ~2 us). Stacks of other sizes get a mapping of their own.
 *
 * Overflow. Every stack's lowest page is a guard: MADV_GUARD_INSTALL where
 * the kernel has it (6.13+: a guard costs no mapping), else mprotect while
 * the mapping budget allows (a quarter of vm.max_map_count, shared by the
 * process), else none; stacks without a guard page get a canary word at
 * their bottom instead. The scheduler checks the saved stack pointer (and the
 * canary) on every switch. A fault in a guard page is reported by name from
 * an alternate signal stack: "weft: task 'NAME' overflowed its N-byte stack".
 *
 * Giving memory back. A worker's pool keeps at most WEFT_STACK_HOT stacks
 * with their memory; when the worker is about to park, the surplus goes to
 * the runtime's cold list with MADV_DONTNEED (contiguous runs in one call),
 * and stacks of other sizes are unmapped. Slabs are unmapped at shutdown.
 */
#ifndef WEFT_CORE_STACK_H
#define WEFT_CORE_STACK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEFT_STACK_HOT 64 /* stacks a worker keeps with their memory while parked */

typedef struct weft__stack {
  struct weft__stack *next; /* pool or cold-list link (owner of the list only) */
  char *lo;                 /* lowest usable byte (above the guard page) */
  size_t size;              /* usable bytes */
  uint32_t flags;           /* WEFT__STACK_* */
} weft__stack;

enum {
  WEFT__STACK_GUARD = 1u << 0,  /* a guard page sits below lo */
  WEFT__STACK_CANARY = 1u << 1, /* no guard: a canary word at lo */
  WEFT__STACK_SLAB = 1u << 2,   /* carved from a slab (default size) */
};

/* Per runtime: slabs, the cold list, the default size. */
typedef struct weft__stack_shared {
  pthread_mutex_t lock;
  size_t default_size;        /* usable bytes of a default stack (page multiple) */
  weft__stack *cold;          /* under lock: default-size stacks without memory */
  struct weft__stack_slab *slabs; /* under lock: every slab, unmapped at fini */
} weft__stack_shared;

/* Per worker (owner only). */
typedef struct weft__stack_pool {
  weft__stack_shared *shared;
  weft__stack *hot;           /* LIFO of default-size stacks with memory */
  size_t n_hot;
} weft__stack_pool;

int weft__stack_shared_init(weft__stack_shared *s, size_t default_size);
void weft__stack_shared_fini(weft__stack_shared *s); /* every stack must be back */

void weft__stack_pool_init(weft__stack_pool *p, weft__stack_shared *s);
void weft__stack_pool_fini(weft__stack_pool *p);     /* returns all to shared */

/* OWNER. A stack of at least size bytes (0 = default); NULL when out of memory. */
weft__stack *weft__stack_get(weft__stack_pool *p, size_t size);
/* OWNER. Give a stack back (any worker's pool may take any stack). */
void weft__stack_put(weft__stack_pool *p, weft__stack *s);
/* OWNER, before parking: give the memory of surplus stacks back. */
void weft__stack_trim(weft__stack_pool *p);

/* Whether sp lies inside s (with room for a signal frame) and the canary holds. */
bool weft__stack_check(const weft__stack *s, const void *sp);

/* Overflow reporting. install: once per process (SIGSEGV/SIGBUS handler,
 * chaining to any previous handler for faults that are not stack overflows).
 * thread_init: an alternate signal stack for the calling thread.
 * set_running: what the calling thread runs now (NULL between tasks). */
void weft__stack_guard_install(void);
int weft__stack_thread_init(void);
void weft__stack_thread_fini(void);
void weft__stack_set_running(const weft__stack *s, const char *name);

#ifdef WEFT_TEST_HOOKS
void weft__fault_mmap_after(long n); /* make the mmap after n more fail (n < 0: never) */
#endif

#endif
