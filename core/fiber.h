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

/* Which sanitizer announcements are compiled in. The build defines WEFT_TSAN /
 * WEFT_ASAN; the compiler's own markers are honoured too, so that a file
 * compiled with -fsanitize=... but without the macro still agrees on the
 * struct layout below and still announces its switches. */
#if defined(WEFT_TSAN) || defined(__SANITIZE_THREAD__)
#define WEFT__FIBER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT__FIBER_TSAN 1
#endif
#endif
#if defined(WEFT_ASAN) || defined(__SANITIZE_ADDRESS__)
#define WEFT__FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT__FIBER_ASAN 1
#endif
#endif

/* One execution context. Owned by whoever owns the task (or the worker, for
 * a thread's own fiber); every field is touched only by the thread that is
 * switching into or out of it, which the scheduler makes exclusive. */
typedef struct weft__fiber {
  void *sp;          /* saved stack pointer while switched out; garbage while running */
  void *stack_lo;    /* lowest usable address of the stack (NULL for a thread's own) */
  size_t stack_size; /* usable bytes from stack_lo (0 for a thread's own) */
#if defined(WEFT__FIBER_TSAN)
  void *tsan_fiber;  /* __tsan_create_fiber's handle, or the thread's own */
  int tsan_owned;    /* 1 when created here and destroyed by weft__fiber_destroy */
#endif
#if defined(WEFT__FIBER_ASAN)
  void *asan_fake_stack;      /* fake-stack save slot while switched out */
  const void *asan_stack_lo;  /* the bounds announced when switching to this */
  size_t asan_stack_size;     /* fiber: stack_lo/size, or the thread's real stack */
#endif
} weft__fiber;

/* Describe the calling OS thread's own context (a worker's scheduler loop),
 * so that fibers can switch back to it. */
void weft__fiber_init_thread(weft__fiber *f);

/* Prepare f to run entry(arg) on the stack [lo, lo+size) when first switched
 * to. entry must never return: it ends with weft__fiber_switch_final. The
 * initial frame is written at the top of the stack (the top is rounded down
 * to 16 bytes; a few hundred bytes suffice for it); the fiber starts with
 * the caller's floating-point control state (rounding mode, exception masks,
 * FTZ/DAZ) and clear exception flags. Writes no memory outside the stack and
 * f, allocates nothing in normal builds. */
void weft__fiber_make(weft__fiber *f, void *lo, size_t size, void (*entry)(void *), void *arg);

/* Save the current context in from and resume to. Returns when something
 * switches back to from. */
void weft__fiber_switch(weft__fiber *from, weft__fiber *to);

/* Like weft__fiber_switch, for a fiber that will never run again (its task
 * ended): sanitizers drop its state. Does not return. */
__attribute__((noreturn)) void weft__fiber_switch_final(weft__fiber *from, weft__fiber *to);

/* Release the sanitizer state of a fiber made with weft__fiber_make, after it
 * has switched away for the last time (or was never run). Each make pairs
 * with exactly one destroy before the stack is remade or freed. A no-op for a
 * thread's own fiber and, in normal builds, for every fiber. */
void weft__fiber_destroy(weft__fiber *f);

/* The raw switch (assembly, core/arch/switch_<arch>.S). Pushes the
 * callee-saved registers and the FP control state on the current stack,
 * stores the resulting stack pointer in *save_sp, sets the stack pointer to
 * load_sp and pops the same frame from there, returning into whatever
 * context saved load_sp (or, on a fiber's first run, into the entry
 * trampoline that weft__fiber_make laid out). No value passes through the
 * switch; the caller passes data in memory, and the C compiler treats the
 * call as an opaque function call, so memory is synchronised for it.
 *
 * Frame at a saved sp (lowest address first; weft__fiber_make writes the
 * same layout, so a change here is a change in both files):
 *   x86-64 (64 bytes):  [0] MXCSR (u32) [4] x87 control word (u16) [6] pad
 *                       [8] r15 [16] r14 [24] r13 [32] r12 [40] rbx [48] rbp
 *                       [56] return address
 *   aarch64 (176 bytes): [0..72] x19-x28 [80] x29 [88] x30 (return address)
 *                       [96..152] d8-d15 [160] FPCR [168] pad
 * The saved sp is 16-byte aligned on both.
 *
 * A fiber can resume on a different OS thread than the one that switched it
 * out: code that straddles a switch must not keep the address of a
 * thread-local variable (the compiler may cache it) across it. */
void weft__ctx_switch(void **save_sp, void *load_sp);

/* The first-entry trampoline (assembly): never called, only "returned to" by
 * the first switch into a made fiber. Calls start(arg, entry) with an
 * ABI-aligned stack, with start/arg/entry taken from callee-saved registers
 * of the initial frame (x86-64: r14, r13, r12; aarch64: x19, x20, x21).
 * Terminates the unwinder's frame chain; traps if start returns. */
void weft__fiber_trampoline(void);

#endif
