/* core/atomic.h: every atomic operation of the runtime goes through here.
 *
 * One place to hook a ThreadSanitizer build, a randomised-scheduling test
 * build or a model checker. Each call names its memory order explicitly, and
 * the call site says which other operation it pairs with and why the order
 * is enough (see STYLE.md, habit 7). No implicit seq_cst anywhere.
 */
#ifndef WEFT_CORE_ATOMIC_H
#define WEFT_CORE_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define RELEASE memory_order_release
#define ACQ_REL memory_order_acq_rel
#define SEQ_CST memory_order_seq_cst

#define weft__load(p, o) atomic_load_explicit((p), (o))
#define weft__store(p, v, o) atomic_store_explicit((p), (v), (o))
#define weft__xchg(p, v, o) atomic_exchange_explicit((p), (v), (o))
/* Compare-and-swap: *expected is updated with the current value on failure. */
#define weft__cas(p, expected, desired, ok, fail) \
  atomic_compare_exchange_strong_explicit((p), (expected), (desired), (ok), (fail))
#define weft__cas_weak(p, expected, desired, ok, fail) \
  atomic_compare_exchange_weak_explicit((p), (expected), (desired), (ok), (fail))
#define weft__fetch_add(p, v, o) atomic_fetch_add_explicit((p), (v), (o))
#define weft__fetch_sub(p, v, o) atomic_fetch_sub_explicit((p), (v), (o))
#define weft__fetch_or(p, v, o) atomic_fetch_or_explicit((p), (v), (o))
#define weft__fetch_and(p, v, o) atomic_fetch_and_explicit((p), (v), (o))
#define weft__fence(o) atomic_thread_fence(o)

/* A hint to the CPU inside a spin loop. */
static inline void weft__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

#define WEFT_CACHELINE 64
#define weft__likely(x) __builtin_expect(!!(x), 1)
#define weft__unlikely(x) __builtin_expect(!!(x), 0)

#endif
