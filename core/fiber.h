/* core/fiber.h: an execution context (registers + stack) and the switch
 * between two of them, announced to the sanitizers.
 *
 * The switch itself is hand-written assembly (core/arch/switch_<arch>.S): it
 * saves the callee-saved registers and the floating-point control state the
 * ABI requires (x86-64: MXCSR control bits and the x87 control word;
 * aarch64: x19-x28, fp, lr, d8-d15 and FPCR) on the current stack, stores the
 * stack pointer into the `from` fiber, loads the `to` fiber's and returns
 * there. No system call, no signal mask: a switch costs a few nanoseconds.
 *
 * Sanitizer builds: every switch is announced to ThreadSanitizer
 * (__tsan_switch_to_fiber) and AddressSanitizer
 * (__sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber), so that
 * their reports stay true across task switches.
 *
 * Contract: a fiber is used by one thread at a time; the scheduler guarantees
 * it (see core/task.c, "publish after switch").
 */
#ifndef WEFT_CORE_FIBER_H
#define WEFT_CORE_FIBER_H

#include <stddef.h>

typedef struct weft__fiber {
  void *sp;          /* saved stack pointer while switched out */
  void *stack_lo;    /* lowest usable address of the stack (NULL for a thread's own) */
  size_t stack_size;
#if defined(WEFT_TSAN)
  void *tsan_fiber;  /* __tsan_create_fiber's handle, or the thread's own */
  int tsan_owned;    /* 1 when created here and destroyed by weft__fiber_destroy */
#endif
#if defined(WEFT_ASAN)
  void *asan_fake_stack; /* fake-stack save slot while switched out */
#endif
} weft__fiber;

/* Describe the calling OS thread's own context (a worker's scheduler loop),
 * so that fibers can switch back to it. */
void weft__fiber_init_thread(weft__fiber *f);

/* Prepare f to run entry(arg) on the stack [lo, lo+size) when first switched
 * to. entry must never return: it ends with weft__fiber_switch_final. */
void weft__fiber_make(weft__fiber *f, void *lo, size_t size, void (*entry)(void *), void *arg);

/* Save the current context in from and resume to. Returns when something
 * switches back to from. */
void weft__fiber_switch(weft__fiber *from, weft__fiber *to);

/* Like weft__fiber_switch, for a fiber that will never run again (its task
 * ended): sanitizers drop its state. Does not return. */
__attribute__((noreturn)) void weft__fiber_switch_final(weft__fiber *from, weft__fiber *to);

/* Release the sanitizer state of a fiber made with weft__fiber_make, after it
 * has switched away for the last time. */
void weft__fiber_destroy(weft__fiber *f);

/* The raw switch (assembly). Saves callee-saved registers on the current
 * stack, stores sp in *save_sp, switches to load_sp and restores from there.
 * Returns arg on the other side... see the .S files. */
void weft__ctx_switch(void **save_sp, void *load_sp);

#endif
