/* tests/test_fiber.c: the context switch and fiber layer (core/fiber.h).
 *
 * What is protected: callee-saved registers and FP control state survive a
 * switch, each fiber keeps its own rounding mode and starts with its maker's,
 * a fresh fiber enters with an ABI-aligned stack, the unwinder stops at the
 * trampoline, a stack can be remade after a final switch, a fiber can resume
 * on another thread, and (under ThreadSanitizer) plain accesses ordered only
 * by switches are not reported as races.
 *
 * Stacks are mmap'ed here with a guard page, independent of core/stack.c.
 * Tests run each in a forked process (tests/test.h), so globals start zeroed
 * and a test may leave the FP state changed. No timings here: the switch
 * cost is measured in bench/.
 */
#include "core/fiber.h"

#include <execinfo.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/mman.h>

#include "test.h"

/* ---------------------------------------------------------------- helpers */

typedef struct tstack {
  char *map;
  size_t map_size;
  char *lo;
  size_t size;
} tstack;

/* Sanitizers and printf want more than the runtime's 64 KiB default. */
static size_t stack_bytes(void) { return test_sanitized() ? 512 * 1024 : 128 * 1024; }

static tstack stack_new(size_t size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  tstack s;
  s.map_size = size + page;
  s.map = mmap(NULL, s.map_size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  ASSERT_TRUE(s.map != MAP_FAILED);
  ASSERT_EQ(mprotect(s.map, page, PROT_NONE), 0); /* guard: an overflow faults */
  s.lo = s.map + page;
  s.size = size;
  return s;
}

static void stack_free(tstack *s) { ASSERT_EQ(munmap(s->map, s->map_size), 0); }

/* Sanitized builds run every instruction 5-20x slower. */
static long scaled(long n) { return test_sanitized() ? n / 20 + 1 : n; }

static weft__fiber g_main; /* the test thread's own context */

/* ---------------------------------------------------------------- ping-pong */

static weft__fiber g_pp;
static long g_value; /* plain, not atomic: ordered only by the switches */
static int g_done;

static void ping_entry(void *arg) {
  long n = (long)(intptr_t)arg;
  for (long i = 0; i < n; i++) {
    ASSERT_EQ(g_value, 2 * i + 1);
    g_value++;
    weft__fiber_switch(&g_pp, &g_main);
  }
  g_done = 1;
  weft__fiber_switch_final(&g_pp, &g_main);
}

/* Values pass both ways through plain globals; under TSan this is also the
 * "ordered only by the switch" test: any report fails the run. */
TEST(ping_pong) {
  long n = scaled(1000000);
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_pp, s.lo, s.size, ping_entry, (void *)(intptr_t)n);
  for (long i = 0; i < n; i++) {
    ASSERT_EQ(g_value, 2 * i);
    g_value++;
    weft__fiber_switch(&g_main, &g_pp);
  }
  ASSERT_EQ(g_value, 2 * n);
  ASSERT_EQ(g_done, 0);
  weft__fiber_switch(&g_main, &g_pp); /* the fiber leaves its loop and ends */
  ASSERT_EQ(g_done, 1);
  weft__fiber_destroy(&g_pp);
  stack_free(&s);
}

/* A fiber that ends without ever switching back mid-way, made and never
 * run, and destroyed: the minimal lifecycles. */
static void end_at_once(void *arg) {
  *(int *)arg = 1;
  weft__fiber_switch_final(&g_pp, &g_main);
}

TEST(lifecycle_minimal) {
  tstack s = stack_new(stack_bytes());
  int ran = 0;
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_pp, s.lo, s.size, end_at_once, &ran);
  weft__fiber_destroy(&g_pp); /* never run */
  ASSERT_EQ(ran, 0);
  weft__fiber_make(&g_pp, s.lo, s.size, end_at_once, &ran);
  weft__fiber_switch(&g_main, &g_pp);
  ASSERT_EQ(ran, 1);
  weft__fiber_destroy(&g_pp);
  stack_free(&s);
}

/* ---------------------------------------------------------------- many live values */

static weft__fiber g_churn;
static void yield_to_churn(void) { weft__fiber_switch(&g_main, &g_churn); }
static void yield_to_main(void) { weft__fiber_switch(&g_churn, &g_main); }
static void yield_none(void) {}

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* More live integers than there are callee-saved registers, and doubles that
 * live across the call (in d8-d15 on aarch64, spilled on x86-64): all must
 * come back intact from every yield. */
__attribute__((noinline)) static uint64_t churn(uint64_t seed, long rounds, void (*yield)(void),
                                                double *dout) {
  uint64_t a = seed, b = seed * 3 + 1, c = seed ^ 0x9e3779b97f4a7c15ull, d = ~seed, e = seed + 7,
           f = seed * 11, g = rotl(seed, 13), h = seed | 1, i2 = seed >> 3, j = seed * seed,
           k = seed - 5, l = seed ^ 0xff00ff00ull;
  double x = (double)(seed & 1023), y = 1.5, z = -2.25, w = 0.125, u = 3.0, v = 1e-3, p = 7.0,
         q = -0.5;
  for (long r = 0; r < rounds; r++) {
    a = a * 6364136223846793005ull + b;
    b ^= a >> 7;
    c += b * 3;
    d = rotl(d, 5) ^ c;
    e += d;
    f ^= e << 3;
    g += f;
    h = h * 31 + g;
    i2 ^= h;
    j += i2 >> 2;
    k -= j;
    l ^= k + a;
    x = x * 0.999 + (double)(a & 255);
    y = y * 1.001 - (double)(b & 15);
    z += x * 1e-6;
    w = w * 0.5 + y * 1e-3;
    u -= z * 1e-9;
    v += w;
    p = p * 0.75 + u * 1e-4;
    q += v * 1e-7;
    yield();
  }
  *dout = x + y + z + w + u + v + p + q;
  return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h ^ i2 ^ j ^ k ^ l;
}

static uint64_t g_churn_r;
static double g_churn_d;

static void churn_entry(void *arg) {
  long rounds = (long)(intptr_t)arg;
  g_churn_r = churn(0xfeedface, rounds, yield_to_main, &g_churn_d);
  weft__fiber_switch_final(&g_churn, &g_main);
}

TEST(callee_saved_many_live_values) {
  long rounds = scaled(20000);
  double d_main_ref, d_fib_ref, d_main;
  uint64_t r_main_ref = churn(0x12345678, rounds, yield_none, &d_main_ref);
  uint64_t r_fib_ref = churn(0xfeedface, rounds, yield_none, &d_fib_ref);
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_churn, s.lo, s.size, churn_entry, (void *)(intptr_t)rounds);
  uint64_t r_main = churn(0x12345678, rounds, yield_to_churn, &d_main);
  weft__fiber_switch(&g_main, &g_churn); /* the fiber's last yield returns; it ends */
  ASSERT_UEQ(r_main, r_main_ref);
  ASSERT_UEQ(g_churn_r, r_fib_ref);
  ASSERT_TRUE(d_main == d_main_ref);
  ASSERT_TRUE(g_churn_d == d_fib_ref);
  weft__fiber_destroy(&g_churn);
  stack_free(&s);
}

/* ---------------------------------------------------------------- registers, exactly
 *
 * test_regs_switch(in, out, from, to, sw): loads every callee-saved register
 * from in[], calls sw(from, to) (weft__fiber_switch; through a pointer,
 * because a symbol named only inside asm is invisible to gcc's LTO and would
 * be dropped), and when that returns
 * stores the same registers to out[]; its own callers' registers are saved
 * and restored around this, so it is an ordinary function to C.
 *   x86-64:  in/out = rbx, rbp, r12, r13, r14, r15
 *   aarch64: in/out = x19..x28, x29, d8..d15 (as raw bits)
 */
#if defined(__x86_64__)
#define NREGS 6
__asm__(".text\n"
        ".globl test_regs_switch\n"
        ".hidden test_regs_switch\n"
        ".type test_regs_switch, @function\n"
        ".p2align 4\n"
        "test_regs_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  pushq %rsi\n" /* out; 7 pushes + return address: rsp is 16-aligned for the call */
        "  movq 0(%rdi), %rbx\n"
        "  movq 8(%rdi), %rbp\n"
        "  movq 16(%rdi), %r12\n"
        "  movq 24(%rdi), %r13\n"
        "  movq 32(%rdi), %r14\n"
        "  movq 40(%rdi), %r15\n"
        "  movq %rdx, %rdi\n"
        "  movq %rcx, %rsi\n"
        "  call *%r8\n"
        "  popq %rax\n"
        "  movq %rbx, 0(%rax)\n"
        "  movq %rbp, 8(%rax)\n"
        "  movq %r12, 16(%rax)\n"
        "  movq %r13, 24(%rax)\n"
        "  movq %r14, 32(%rax)\n"
        "  movq %r15, 40(%rax)\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size test_regs_switch, .-test_regs_switch\n");
#elif defined(__aarch64__)
#define NREGS 19
__asm__(".text\n"
        ".globl test_regs_switch\n"
        ".hidden test_regs_switch\n"
        ".type test_regs_switch, %function\n"
        ".p2align 4\n"
        "test_regs_switch:\n"
        "  sub sp, sp, #176\n"
        "  stp x19, x20, [sp, #0]\n"
        "  stp x21, x22, [sp, #16]\n"
        "  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n"
        "  stp x27, x28, [sp, #64]\n"
        "  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  str x1, [sp, #160]\n"
        "  ldp x19, x20, [x0, #0]\n"
        "  ldp x21, x22, [x0, #16]\n"
        "  ldp x23, x24, [x0, #32]\n"
        "  ldp x25, x26, [x0, #48]\n"
        "  ldp x27, x28, [x0, #64]\n"
        "  ldr x29, [x0, #80]\n"
        "  ldp d8, d9, [x0, #88]\n"
        "  ldp d10, d11, [x0, #104]\n"
        "  ldp d12, d13, [x0, #120]\n"
        "  ldp d14, d15, [x0, #136]\n"
        "  mov x0, x2\n"
        "  mov x1, x3\n"
        "  blr x4\n"
        "  ldr x1, [sp, #160]\n"
        "  stp x19, x20, [x1, #0]\n"
        "  stp x21, x22, [x1, #16]\n"
        "  stp x23, x24, [x1, #32]\n"
        "  stp x25, x26, [x1, #48]\n"
        "  stp x27, x28, [x1, #64]\n"
        "  str x29, [x1, #80]\n"
        "  stp d8, d9, [x1, #88]\n"
        "  stp d10, d11, [x1, #104]\n"
        "  stp d12, d13, [x1, #120]\n"
        "  stp d14, d15, [x1, #136]\n"
        "  ldp x19, x20, [sp, #0]\n"
        "  ldp x21, x22, [sp, #16]\n"
        "  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n"
        "  ldp x27, x28, [sp, #64]\n"
        "  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  add sp, sp, #176\n"
        "  ret\n"
        ".size test_regs_switch, .-test_regs_switch\n");
#endif

void test_regs_switch(const uint64_t *in, uint64_t *out, weft__fiber *from, weft__fiber *to,
                      void (*sw)(weft__fiber *, weft__fiber *));

static weft__fiber g_regs;
static uint64_t g_regs_fiber_bad; /* count of mismatches seen by the fiber */

static void fill_pattern(uint64_t *v, uint64_t tag) {
  for (int i = 0; i < NREGS; i++) v[i] = 0x0101010101010101ull * (uint64_t)(i + 1) ^ (tag << 48) ^ (uint64_t)i;
}

static void regs_entry(void *arg) {
  long rounds = (long)(intptr_t)arg;
  uint64_t in[NREGS], out[NREGS];
  for (long r = 0; r < rounds; r++) {
    fill_pattern(in, 0xb000 + (uint64_t)r);
    test_regs_switch(in, out, &g_regs, &g_main, weft__fiber_switch);
    for (int i = 0; i < NREGS; i++) g_regs_fiber_bad += out[i] != in[i];
  }
  weft__fiber_switch_final(&g_regs, &g_main);
}

TEST(callee_saved_registers_exact) {
  long rounds = 100;
  uint64_t in[NREGS], out[NREGS];
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_regs, s.lo, s.size, regs_entry, (void *)(intptr_t)rounds);
  for (long r = 0; r < rounds; r++) {
    fill_pattern(in, 0xa000 + (uint64_t)r);
    /* main loads its pattern and switches; the fiber loads another pattern
     * and switches back; main checks its pattern survived. */
    test_regs_switch(in, out, &g_main, &g_regs, weft__fiber_switch);
    for (int i = 0; i < NREGS; i++) ASSERT_UEQ(out[i], in[i]);
  }
  weft__fiber_switch(&g_main, &g_regs); /* the fiber checks its last pattern and ends */
  ASSERT_UEQ(g_regs_fiber_bad, 0);
  weft__fiber_destroy(&g_regs);
  stack_free(&s);
}

/* ---------------------------------------------------------------- FP control state
 *
 * The rounding mode is set and read through the registers themselves (what
 * fesetround does: MXCSR.RC and the x87 CW on x86-64, FPCR.RMode on aarch64;
 * the test then needs no libm), and checked by arithmetic as well. */
enum { RM_NEAREST, RM_UP, RM_DOWN, RM_ZERO };

static void set_round(int m) {
#if defined(__x86_64__)
  static const unsigned rc[] = {0, 2, 1, 3}; /* nearest, up, down, zero */
  uint32_t csr;
  uint16_t cw;
  __asm__ __volatile__("stmxcsr %0" : "=m"(csr));
  csr = (csr & ~0x6000u) | (rc[m] << 13);
  __asm__ __volatile__("ldmxcsr %0" : : "m"(csr));
  __asm__ __volatile__("fnstcw %0" : "=m"(cw));
  cw = (uint16_t)((cw & ~0x0c00u) | (rc[m] << 10));
  __asm__ __volatile__("fldcw %0" : : "m"(cw));
#elif defined(__aarch64__)
  static const uint64_t rmode[] = {0, 1, 2, 3}; /* RN, RP, RM, RZ */
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  fpcr = (fpcr & ~(3ull << 22)) | (rmode[m] << 22);
  __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
#endif
}

/* The mode as the control register(s) say; -1 if x86's two disagree. */
static int reg_round(void) {
#if defined(__x86_64__)
  static const int from_rc[] = {RM_NEAREST, RM_DOWN, RM_UP, RM_ZERO};
  uint32_t csr;
  uint16_t cw;
  __asm__ __volatile__("stmxcsr %0" : "=m"(csr));
  __asm__ __volatile__("fnstcw %0" : "=m"(cw));
  int sse = from_rc[(csr >> 13) & 3], x87 = from_rc[(cw >> 10) & 3];
  return sse == x87 ? sse : -1;
#elif defined(__aarch64__)
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  return (int)((fpcr >> 22) & 3); /* same numbering as the enum */
#endif
}

/* The mode as arithmetic sees it: 1 + 0.75 ulp and -(1 + 0.75 ulp). */
static int classify(int pos_up, int neg_away) {
  if (pos_up && neg_away) return RM_NEAREST;
  if (pos_up) return RM_UP;
  if (neg_away) return RM_DOWN;
  return RM_ZERO;
}

static int arith_round(void) {
  volatile double one = 1.0, tiny = 0x1.8p-53; /* 0.75 ulp of 1.0 */
  double p = one + tiny, n = -one - tiny;
  return classify(p > 1.0, n < -1.0);
}

static int arith_round_x87(void) {
#if defined(__x86_64__)
  volatile long double one = 1.0L, tiny = 0x1.8p-64L; /* 0.75 ulp of 1.0L */
  long double p = one + tiny, n = -one - tiny;
  return classify(p > 1.0L, n < -1.0L);
#else
  return arith_round();
#endif
}

static void expect_round(int m, const char *who) {
  int r = reg_round(), a = arith_round(), x = arith_round_x87();
  if (r != m || a != m || x != m)
    TEST_FAIL("%s: rounding mode expected %d, registers say %d, arithmetic %d, x87 %d", who, m, r,
              a, x);
}

static weft__fiber g_fa, g_fb, g_fc;

static void fp_a(void *arg) {
  expect_round(RM_NEAREST, "A at entry");
  set_round(RM_UP);
  expect_round(RM_UP, "A after set");
  weft__fiber_switch(&g_fa, &g_main);
  expect_round(RM_UP, "A resumed after main");
  weft__fiber_switch(&g_fa, &g_fb);
  expect_round(RM_UP, "A resumed after B");
  weft__fiber_switch_final(&g_fa, &g_main);
}

static void fp_b(void *arg) {
  expect_round(RM_NEAREST, "B at entry");
  set_round(RM_DOWN);
  weft__fiber_switch(&g_fb, &g_fa);
  expect_round(RM_DOWN, "B resumed");
  weft__fiber_switch_final(&g_fb, &g_main);
}

static void fp_c(void *arg) {
  expect_round(RM_ZERO, "C at entry (made while main rounded toward zero)");
  weft__fiber_switch_final(&g_fc, &g_main);
}

TEST(fp_rounding_mode_is_per_fiber) {
  tstack sa = stack_new(stack_bytes()), sb = stack_new(stack_bytes()), sc = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  expect_round(RM_NEAREST, "main at start");
  weft__fiber_make(&g_fa, sa.lo, sa.size, fp_a, NULL);
  weft__fiber_make(&g_fb, sb.lo, sb.size, fp_b, NULL);
  set_round(RM_ZERO);
  weft__fiber_make(&g_fc, sc.lo, sc.size, fp_c, NULL); /* inherits toward-zero */
  set_round(RM_NEAREST);

  weft__fiber_switch(&g_main, &g_fa); /* A sets up, comes back */
  expect_round(RM_NEAREST, "main after A set up");
  weft__fiber_switch(&g_main, &g_fa); /* A -> B (sets down) -> A -> main, A ends */
  expect_round(RM_NEAREST, "main after A ended");
  weft__fiber_switch(&g_main, &g_fb); /* B checks down, ends */
  expect_round(RM_NEAREST, "main after B ended");
  set_round(RM_UP); /* C's mode was fixed at make, not at first run */
  weft__fiber_switch(&g_main, &g_fc);
  expect_round(RM_UP, "main after C ended");
  set_round(RM_NEAREST);

  weft__fiber_destroy(&g_fa);
  weft__fiber_destroy(&g_fb);
  weft__fiber_destroy(&g_fc);
  stack_free(&sa);
  stack_free(&sb);
  stack_free(&sc);
}

/* ---------------------------------------------------------------- entry alignment
 *
 * test_align_entry records the stack pointer at its first instruction, then
 * tail-calls align_entry_c. The ABI wants (rsp + 8) % 16 == 0 there on
 * x86-64 (a call just pushed the return address onto an aligned stack) and
 * sp % 16 == 0 on aarch64. */
void *g_entry_sp __attribute__((visibility("hidden"), used));
void align_entry_c(void *arg) __attribute__((visibility("hidden"), used));
void test_align_entry(void *arg);

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl test_align_entry\n"
        ".hidden test_align_entry\n"
        ".type test_align_entry, @function\n"
        ".p2align 4\n"
        "test_align_entry:\n"
        "  movq %rsp, g_entry_sp(%rip)\n"
        "  jmp align_entry_c\n"
        ".size test_align_entry, .-test_align_entry\n");
#define ENTRY_SP_OK(sp) ((((uintptr_t)(sp)) + 8) % 16 == 0)
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl test_align_entry\n"
        ".hidden test_align_entry\n"
        ".type test_align_entry, %function\n"
        ".p2align 4\n"
        "test_align_entry:\n"
        "  mov x9, sp\n"
        "  adrp x10, g_entry_sp\n"
        "  str x9, [x10, :lo12:g_entry_sp]\n"
        "  b align_entry_c\n"
        ".size test_align_entry, .-test_align_entry\n");
#define ENTRY_SP_OK(sp) (((uintptr_t)(sp)) % 16 == 0)
#endif

static weft__fiber g_al;
static int g_al_ran;

void align_entry_c(void *arg) {
  /* An aligned SSE/NEON local and a long double through varargs: code the
   * compiler emits assuming the ABI alignment (movaps on x86-64). */
  _Alignas(16) double v[2] = {1.25, (double)(uintptr_t)arg};
  char buf[64];
  snprintf(buf, sizeof buf, "%.2f %.1Lf", v[0] + v[1], (long double)v[1] * 2);
  g_al_ran = (int)strlen(buf);
  weft__fiber_switch_final(&g_al, &g_main);
}

TEST(entry_stack_alignment) {
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  /* Stack tops that are not 16-byte aligned are rounded down by make. */
  static const size_t trim[] = {0, 1, 4, 8, 12, 15, 16, 24};
  for (size_t t = 0; t < sizeof trim / sizeof trim[0]; t++) {
    g_entry_sp = NULL;
    g_al_ran = 0;
    weft__fiber_make(&g_al, s.lo, s.size - trim[t], test_align_entry, (void *)(uintptr_t)t);
    weft__fiber_switch(&g_main, &g_al);
    ASSERT_TRUE(g_entry_sp != NULL);
    if (!ENTRY_SP_OK(g_entry_sp))
      TEST_FAIL("trim %zu: misaligned stack at entry: %p", trim[t], g_entry_sp);
    ASSERT_TRUE((char *)g_entry_sp <= s.lo + s.size - trim[t]); /* aarch64: == top */
    ASSERT_TRUE((char *)g_entry_sp > s.lo + s.size - trim[t] - 1024);
    ASSERT_GT(g_al_ran, 0);
    weft__fiber_destroy(&g_al);
  }
  stack_free(&s);
}

/* ---------------------------------------------------------------- many fibers */

#define RING_N 1000
static weft__fiber g_ring[RING_N];
static long g_ring_turn; /* plain: which fiber runs next, ordered by switches */
static long g_ring_count[RING_N];
static long g_ring_rounds;

/* Fiber i hands over directly to fiber i+1; the last one to main, which
 * starts the next round at fiber 0. Fiber-to-fiber switches, not only
 * through main. */
static void ring_entry(void *arg) {
  long i = (long)(intptr_t)arg;
  weft__fiber *next = i + 1 < RING_N ? &g_ring[i + 1] : &g_main;
  for (long r = 0; r < g_ring_rounds; r++) {
    ASSERT_EQ(g_ring_turn, i);
    g_ring_turn = (i + 1) % RING_N;
    g_ring_count[i]++;
    if (r + 1 < g_ring_rounds) weft__fiber_switch(&g_ring[i], next);
  }
  weft__fiber_switch_final(&g_ring[i], next);
}

TEST(many_fibers_round_robin) {
  static tstack st[RING_N];
  g_ring_rounds = test_sanitized() ? 5 : 50;
  size_t sz = test_sanitized() ? 256 * 1024 : 64 * 1024;
  weft__fiber_init_thread(&g_main);
  for (long i = 0; i < RING_N; i++) {
    st[i] = stack_new(sz);
    weft__fiber_make(&g_ring[i], st[i].lo, st[i].size, ring_entry, (void *)(intptr_t)i);
  }
  for (long r = 0; r < g_ring_rounds; r++) {
    ASSERT_EQ(g_ring_turn, 0);
    weft__fiber_switch(&g_main, &g_ring[0]);
  }
  for (long i = 0; i < RING_N; i++) {
    ASSERT_EQ(g_ring_count[i], g_ring_rounds);
    weft__fiber_destroy(&g_ring[i]);
    stack_free(&st[i]);
  }
}

/* ---------------------------------------------------------------- FP and varargs on a fiber */

static weft__fiber g_va;
static char g_va_buf[256];
static double g_va_sum;

static double sum_doubles(int n, ...) {
  va_list ap;
  va_start(ap, n);
  double s = 0;
  for (int i = 0; i < n; i++) s += va_arg(ap, double);
  va_end(ap);
  return s;
}

static void va_entry(void *arg) {
  volatile double a = 3.14159, b = 2.5e10, c = -0.0625;
  volatile long double ld = 1.5L;
  snprintf(g_va_buf, sizeof g_va_buf, "%.3f %g %Lf %e %d %s", a, b, ld, c, 42, "end");
  weft__fiber_switch(&g_va, &g_main); /* and again after a switch */
  g_va_sum = sum_doubles(9, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, a); /* > 8 FP args: some on the stack */
  weft__fiber_switch_final(&g_va, &g_main);
}

TEST(fp_and_varargs_on_fiber_stack) {
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_va, s.lo, s.size, va_entry, NULL);
  weft__fiber_switch(&g_main, &g_va);
  ASSERT_STR_EQ(g_va_buf, "3.142 2.5e+10 1.500000 -6.250000e-02 42 end");
  weft__fiber_switch(&g_main, &g_va);
  ASSERT_TRUE(g_va_sum == 36.0 + 3.14159);
  weft__fiber_destroy(&g_va);
  stack_free(&s);
}

/* ---------------------------------------------------------------- stack reuse after a final switch */

static weft__fiber g_deep;
static int g_deep_reached;

static void deep_end(void) { weft__fiber_switch_final(&g_deep, &g_main); }
static void (*volatile g_deep_end)(void) = deep_end;

/* Recurse with arrays on the stack (ASan puts redzones around them) and end
 * the fiber from the deepest frame: the frames are abandoned, never unwound. */
__attribute__((noinline)) static void deep(int depth, volatile char *prev) {
  volatile char buf[200];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(depth + (int)i + (prev ? prev[0] : 0));
  if (depth > 0) {
    deep(depth - 1, buf);
    buf[0]++; /* not a tail call */
    return;
  }
  g_deep_reached++;
  g_deep_end(); /* through a pointer: gcc would call a noreturn base case "infinite recursion" */
}

static void deep_entry(void *arg) { deep((int)(intptr_t)arg, NULL); }

TEST(stack_remade_after_final_switch) {
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  for (int k = 0; k < 4; k++) {
    /* Deep first, shallower later: later fibers' frames land on memory the
     * earlier ones left poisoned in ASan's shadow. */
    weft__fiber_make(&g_deep, s.lo, s.size, deep_entry, (void *)(intptr_t)(100 - 30 * k));
    weft__fiber_switch(&g_main, &g_deep);
    ASSERT_EQ(g_deep_reached, k + 1);
    weft__fiber_destroy(&g_deep);
    /* Once destroyed, the stack is plain memory again: its owner may write
     * it (core/stack.c writes canaries); under ASan no stale redzone of an
     * abandoned frame may remain. */
    memset(s.lo, 0x5a, s.size);
  }
  stack_free(&s);
}

/* ---------------------------------------------------------------- migration between threads */

static weft__fiber g_mig;
static weft__fiber *g_mig_home; /* the context to go back to; set before each switch to g_mig */
static pthread_t g_mig_seen[3];
static int g_mig_data[64]; /* plain: written by the fiber on two threads */

/* pthread_self() is declared __attribute__((const)): the compiler may call
 * it once and reuse the result across a switch, which is wrong on a fiber
 * that moved. Any thread-local read across a switch has this hazard; code
 * that runs on fibers reads thread identity through a noinline function. */
__attribute__((noinline)) static pthread_t self_now(void) {
  pthread_t t = pthread_self();
  __asm__ __volatile__("" ::: "memory");
  return t;
}

static void mig_entry(void *arg) {
  for (int step = 0; step < 3; step++) {
    g_mig_seen[step] = self_now();
    for (int i = 0; i < 64; i++) g_mig_data[i] += step + 1;
    if (step < 2) weft__fiber_switch(&g_mig, g_mig_home);
  }
  weft__fiber_switch_final(&g_mig, g_mig_home);
}

static void *mig_thread(void *arg) {
  weft__fiber self;
  weft__fiber_init_thread(&self);
  g_mig_home = &self;
  weft__fiber_switch(&self, &g_mig); /* step 1 runs on this thread */
  return NULL;
}

TEST(fiber_resumes_on_another_thread) {
  tstack s = stack_new(stack_bytes());
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_mig, s.lo, s.size, mig_entry, NULL);
  g_mig_home = &g_main;
  weft__fiber_switch(&g_main, &g_mig); /* step 0 on the main thread */
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, NULL, mig_thread, NULL), 0);
  ASSERT_EQ(pthread_join(t, NULL), 0);
  g_mig_home = &g_main;
  weft__fiber_switch(&g_main, &g_mig); /* step 2 back on the main thread, then it ends */
  ASSERT_TRUE(pthread_equal(g_mig_seen[0], pthread_self()));
  ASSERT_TRUE(pthread_equal(g_mig_seen[1], t));
  ASSERT_TRUE(pthread_equal(g_mig_seen[2], pthread_self()));
  for (int i = 0; i < 64; i++) ASSERT_EQ(g_mig_data[i], 6);
  weft__fiber_destroy(&g_mig);
  stack_free(&s);
}

/* ---------------------------------------------------------------- unwinding stops */

static weft__fiber g_bt;
static int g_bt_frames;

__attribute__((noinline)) static void bt_inner(void) {
  void *pcs[64];
  g_bt_frames = backtrace(pcs, 64);
  __asm__ __volatile__("" ::: "memory");
}

static void bt_entry(void *arg) {
  bt_inner();
  weft__fiber_switch_final(&g_bt, &g_main);
}

/* An unwinder walking a fiber's stack must stop at the trampoline
 * (.cfi_undefined) instead of reading the words above the initial frame. */
TEST(backtrace_stops_at_trampoline) {
  tstack s = stack_new(stack_bytes());
  /* Garbage where the frames will be, and the end of the mapping right above
   * the initial frame: a walker that does not stop follows garbage or faults. */
  memset(s.lo, 0xa5, s.size);
  weft__fiber_init_thread(&g_main);
  weft__fiber_make(&g_bt, s.lo, s.size, bt_entry, NULL);
  weft__fiber_switch(&g_main, &g_bt);
  /* bt_inner, bt_entry, [fiber_start], trampoline; 0 where backtrace()
   * cannot unwind at all (some static builds). */
  ASSERT_LE(g_bt_frames, 6);
  weft__fiber_destroy(&g_bt);
  stack_free(&s);
}

TEST_MAIN()
