/* core/fiber.c: making, switching and retiring execution contexts.
 *
 * Protocol (per fiber made here):
 *   weft__fiber_make        -> the fiber is "fresh": its stack holds an
 *                              initial frame that the raw switch pops like
 *                              any saved frame, "returning" into
 *                              weft__fiber_trampoline (core/arch/switch_<arch>.S);
 *   weft__fiber_switch(x,f) -> first run: the trampoline calls entry(arg)
 *                              (through fiber_start in sanitizer builds);
 *   weft__fiber_switch(f,y) -> suspended, resumable by a switch to f from any
 *                              thread (the scheduler keeps it to one thread
 *                              at a time: "publish after switch");
 *   weft__fiber_switch_final(f,y) -> f never runs again; its stack frames are
 *                              abandoned, not unwound;
 *   weft__fiber_destroy(f)  -> releases the sanitizer state; the stack may be
 *                              remade or freed after it.
 * A thread's own fiber (weft__fiber_init_thread) has no initial frame: its
 * sp is written by the first switch away from it.
 *
 * The initial frame (layout in core/fiber.h, must match the .S files):
 * callee-saved registers carry start/arg/entry to the trampoline, the frame
 * pointer slot is 0 (frame-pointer walkers stop), the return-address slot
 * holds the trampoline, and the FP control slots hold the creator's FP
 * control state, so a task starts with the rounding mode and exception masks
 * of the thread that made it, not with whatever garbage the stack held.
 *
 * Sanitizers: announcements are compiled in only when WEFT__FIBER_TSAN /
 * WEFT__FIBER_ASAN are set (core/fiber.h), so a normal build's
 * weft__fiber_switch is a tail call into the assembly, with no branch on
 * sanitizer state.
 *   TSan: each made fiber gets a TSan fiber; every switch is
 *     __tsan_switch_to_fiber(to, 0) just before the raw switch. Flags 0 (not
 *     __tsan_switch_to_fiber_no_sync) makes the switch a happens-before edge
 *     from the fiber that leaves to the one that runs, which is exactly the
 *     ordering the hardware gives (same thread, program order); without it
 *     every hand-off of a task's data through the scheduler would need its
 *     own annotation.
 *   ASan: __sanitizer_start_switch_fiber before the raw switch (with the
 *     destination's stack bounds), __sanitizer_finish_switch_fiber right
 *     after it returns, on the resumed side, with that side's own fake-stack
 *     slot; a fresh fiber finishes the switch in fiber_start, before entry.
 *     The final switch passes NULL so ASan frees the dying fiber's fake
 *     stack. A thread's own fiber announces its real stack bounds
 *     (pthread_getattr_np), since ASan checks stack accesses against them.
 *     Frames abandoned by a final switch leave their redzones poisoned, so
 *     make and destroy unpoison the whole stack: a stack recycled through
 *     the pool must not inherit the previous task's poison.
 *
 * Rejected: ucontext (swapcontext saves the signal mask with a system call
 * per switch: ~100x slower); passing a value through the switch (no user
 * needs it, and memory is already synchronised by the call).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_getattr_np; the build defines it too */
#endif
#include "core/fiber.h"

#include <stdint.h>
#include <string.h>

#if defined(WEFT__FIBER_ASAN)
#include <pthread.h>
#endif

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "weft: core/fiber.c knows the initial frame of x86-64 and aarch64 only"
#endif

/* ---------------------------------------------------------------- sanitizer runtimes
 * Declared here rather than through the sanitizer interface headers, which
 * not every toolchain installs; the sanitizer runtimes define them. */
#if defined(WEFT__FIBER_TSAN)
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif
#if defined(WEFT__FIBER_ASAN)
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

/* ---------------------------------------------------------------- the initial frame */

#if defined(__x86_64__)
typedef struct initial_frame {
  uint32_t mxcsr;   /* [0]  ldmxcsr */
  uint16_t x87cw;   /* [4]  fldcw */
  uint16_t pad;     /* [6] */
  void *r15;        /* [8]  unused: 0 */
  void *r14;        /* [16] start */
  void *r13;        /* [24] arg */
  void *r12;        /* [32] entry */
  void *rbx;        /* [40] unused: 0 */
  void *rbp;        /* [48] 0: ends the frame-pointer chain */
  void *ret;        /* [56] weft__fiber_trampoline */
} initial_frame;
_Static_assert(sizeof(initial_frame) == 64, "must match core/arch/switch_x86_64.S");

/* MXCSR bits 0-5 are the sticky exception flags: a new fiber starts clean. */
#define MXCSR_FLAGS 0x3fu

static void frame_fill(initial_frame *fr, void *start, void *arg, void *entry) {
  uint32_t mxcsr;
  uint16_t cw;
  __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
  __asm__ __volatile__("fnstcw %0" : "=m"(cw));
  memset(fr, 0, sizeof *fr);
  fr->mxcsr = mxcsr & ~MXCSR_FLAGS;
  fr->x87cw = cw;
  fr->r14 = start;
  fr->r13 = arg;
  fr->r12 = entry;
  fr->ret = (void *)weft__fiber_trampoline;
}
#elif defined(__aarch64__)
typedef struct initial_frame {
  void *x19;        /* [0]  start */
  void *x20;        /* [8]  arg */
  void *x21;        /* [16] entry */
  void *x22_x28[7]; /* [24] unused: 0 */
  void *x29;        /* [80] 0: ends the frame-pointer chain */
  void *x30;        /* [88] weft__fiber_trampoline */
  double d8_d15[8]; /* [96] unused: 0 */
  uint64_t fpcr;    /* [160] msr fpcr */
  uint64_t pad;     /* [168] keeps the frame a multiple of 16 */
} initial_frame;
_Static_assert(sizeof(initial_frame) == 176, "must match core/arch/switch_aarch64.S");

static void frame_fill(initial_frame *fr, void *start, void *arg, void *entry) {
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  memset(fr, 0, sizeof *fr);
  fr->fpcr = fpcr;
  fr->x19 = start;
  fr->x20 = arg;
  fr->x21 = entry;
  fr->x30 = (void *)weft__fiber_trampoline;
}
#endif

#if defined(WEFT__FIBER_ASAN)
/* The trampoline's target in ASan builds: the first thing a fresh fiber does
 * is complete the switch that started it (no fake stack to restore yet),
 * before entry touches the stack. Never returns (entry must not). */
static void fiber_start(void *arg, void (*entry)(void *)) {
  __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
  entry(arg);
  __builtin_trap();
}
#endif

/* ---------------------------------------------------------------- API */

void weft__fiber_init_thread(weft__fiber *f) {
  memset(f, 0, sizeof *f);
#if defined(WEFT__FIBER_TSAN)
  f->tsan_fiber = __tsan_get_current_fiber();
  f->tsan_owned = 0;
#endif
#if defined(WEFT__FIBER_ASAN)
  /* ASan checks every stack access of the context it switches to against
   * the bounds announced for it; a thread's own stack is the one the kernel
   * or pthread_create gave it. */
  pthread_attr_t attr;
  void *addr = NULL;
  size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
  }
  f->asan_stack_lo = addr;
  f->asan_stack_size = size;
#endif
}

void weft__fiber_make(weft__fiber *f, void *lo, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
  initial_frame *fr = (initial_frame *)(top - sizeof(initial_frame));

  memset(f, 0, sizeof *f);
  f->stack_lo = lo;
  f->stack_size = size;
#if defined(WEFT__FIBER_ASAN)
  /* Before the frame is written: the stack may still carry a dead task's
   * poisoned redzones. */
  __asan_unpoison_memory_region(lo, size);
  f->asan_fake_stack = NULL;
  f->asan_stack_lo = lo;
  f->asan_stack_size = size;
  frame_fill(fr, (void *)fiber_start, arg, (void *)entry);
#else
  /* The trampoline calls start(arg, entry): with start = entry itself, the
   * user's function is the first frame on the fiber, no wrapper call. */
  frame_fill(fr, (void *)entry, arg, (void *)entry);
#endif
  f->sp = fr;
#if defined(WEFT__FIBER_TSAN)
  f->tsan_fiber = __tsan_create_fiber(0);
  f->tsan_owned = 1;
#endif
}

void weft__fiber_switch(weft__fiber *from, weft__fiber *to) {
#if defined(WEFT__FIBER_TSAN)
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#if defined(WEFT__FIBER_ASAN)
  __sanitizer_start_switch_fiber(&from->asan_fake_stack, to->asan_stack_lo, to->asan_stack_size);
#endif
  weft__ctx_switch(&from->sp, to->sp);
#if defined(WEFT__FIBER_ASAN)
  /* Back in from's context, possibly on another thread: restore its fake
   * stack. */
  __sanitizer_finish_switch_fiber(from->asan_fake_stack, NULL, NULL);
#endif
}

void weft__fiber_switch_final(weft__fiber *from, weft__fiber *to) {
#if defined(WEFT__FIBER_TSAN)
  /* The TSan fiber itself is destroyed later, by weft__fiber_destroy: TSan
   * cannot destroy the fiber it is running on. */
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#if defined(WEFT__FIBER_ASAN)
  __sanitizer_start_switch_fiber(NULL, to->asan_stack_lo, to->asan_stack_size);
#endif
  /* from->sp is still written: harmless, and the scheduler's stack checks
   * may read it. */
  weft__ctx_switch(&from->sp, to->sp);
  __builtin_trap(); /* something switched back to a finished fiber */
}

void weft__fiber_destroy(weft__fiber *f) {
#if defined(WEFT__FIBER_TSAN)
  if (f->tsan_owned && f->tsan_fiber) __tsan_destroy_fiber(f->tsan_fiber);
  f->tsan_fiber = NULL;
  f->tsan_owned = 0;
#endif
#if defined(WEFT__FIBER_ASAN)
  if (f->stack_lo) __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
  (void)f;
}
