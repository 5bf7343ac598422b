/* core/alloc.c: the runtime's allocator (see alloc.h for the rule). */
#include "core/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef WEFT_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#ifdef WEFT_TEST_HOOKS
static _Atomic long fail_countdown = -1; /* relaxed: a test knob, no data hangs on it */

void weft__fault_alloc_after(long n) { atomic_store_explicit(&fail_countdown, n, memory_order_relaxed); }

int weft__fault_injected(void);
static int injected_failure(void) { return weft__fault_injected(); }

int weft__fault_injected(void) {
  long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
  while (n >= 0) {
    if (atomic_compare_exchange_weak_explicit(&fail_countdown, &n, n - 1, memory_order_relaxed,
                                              memory_order_relaxed))
      return n == 0;
  }
  return 0;
}
#else
static inline int injected_failure(void) { return 0; }
#endif

void *weft__alloc(size_t size) {
  if (injected_failure()) return NULL;
#ifdef WEFT_USE_JEMALLOC
  return mallocx(size ? size : 1, 0);
#else
  return malloc(size ? size : 1);
#endif
}

void *weft__zalloc(size_t size) {
  if (injected_failure()) return NULL;
#ifdef WEFT_USE_JEMALLOC
  return mallocx(size ? size : 1, MALLOCX_ZERO);
#else
  return calloc(1, size ? size : 1);
#endif
}

void *weft__alloc_aligned(size_t align, size_t size) {
  if (injected_failure()) return NULL;
#ifdef WEFT_USE_JEMALLOC
  return mallocx(size ? size : 1, MALLOCX_ALIGN(align));
#else
  void *p = NULL;
  if (align < sizeof(void *)) align = sizeof(void *);
  if (posix_memalign(&p, align, size ? size : 1) != 0) return NULL;
  return p;
#endif
}

void *weft__realloc(void *p, size_t old_size, size_t new_size) {
  (void)old_size;
  if (injected_failure()) return NULL;
#ifdef WEFT_USE_JEMALLOC
  if (!p) return mallocx(new_size ? new_size : 1, 0);
  return rallocx(p, new_size ? new_size : 1, 0);
#else
  return realloc(p, new_size ? new_size : 1);
#endif
}

void weft__free(void *p, size_t size) {
  if (!p) return;
#ifdef WEFT_USE_JEMALLOC
  if (size)
    sdallocx(p, size, 0);
  else
    dallocx(p, 0);
#else
  (void)size;
  free(p);
#endif
}
