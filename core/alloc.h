/* core/alloc.h: the runtime's own allocations.
 *
 * In a release build these go to jemalloc through its non-standard entry
 * points (mallocx, sdallocx), linked privately into libweft: the host program
 * keeps its own malloc, and memory from one allocator is never given to the
 * other. Rule: library code never calls malloc/free/strdup directly, and
 * never frees memory that libc allocated. Sanitizer builds use libc's
 * allocator so that the sanitizers see every allocation.
 *
 * Test builds (WEFT_TEST_HOOKS) can make the nth allocation fail, to test
 * the out-of-memory paths (weft__fault_alloc_after).
 */
#ifndef WEFT_CORE_ALLOC_H
#define WEFT_CORE_ALLOC_H

#include <stddef.h>

void *weft__alloc(size_t size);          /* NULL on failure */
void *weft__zalloc(size_t size);         /* zeroed; NULL on failure */
void *weft__alloc_aligned(size_t align, size_t size); /* align: a power of two */
void *weft__realloc(void *p, size_t old_size, size_t new_size);
void weft__free(void *p, size_t size);   /* size: as allocated, or 0 if unknown or aligned; NULL is fine */

#ifdef WEFT_TEST_HOOKS
/* Make the allocation after n more succeed fail (n < 0: never). */
void weft__fault_alloc_after(long n);
/* For allocators outside this file (the task record chunks): true when the
 * injected failure is due now (counts as one allocation). */
int weft__fault_injected(void);
#else
static inline int weft__fault_injected(void) { return 0; }
#endif

#endif
