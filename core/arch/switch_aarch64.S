/* core/arch/switch_aarch64.S: the context switch for AAPCS64 (Linux).
 *
 * weft__ctx_switch(void **save_sp, void *load_sp)   x0 = save_sp, x1 = load_sp
 *
 * Saves what AAPCS64 says a callee must preserve: x19-x28, the frame pointer
 * x29, the link register x30 (our return address), the low 64 bits of v8-v15
 * (d8-d15; the upper halves are caller-saved by the ABI), and FPCR (rounding
 * mode, FZ, DN, AH...). FPSR (the cumulative exception flags) is not saved:
 * like the x87 status word on x86-64, nothing in the runtime reads it, and
 * msr fpsr is not free. x16/x17/x18 and every other register are dead across
 * a call.
 *
 * Frame at a saved sp, lowest address first (core/fiber.c's initial frame
 * writes the same layout; core/fiber.h has the table), 176 bytes:
 *   [0]  x19 x20  [16] x21 x22  [32] x23 x24  [48] x25 x26  [64] x27 x28
 *   [80] x29 [88] x30
 *   [96] d8 d9  [112] d10 d11  [128] d12 d13  [144] d14 d15
 *   [160] FPCR  [168] pad
 * sp is always 16-byte aligned on AArch64 (Linux enables the sp alignment
 * check), and 176 is a multiple of 16, so the saved sp is aligned.
 *
 * FPCR is written only when it differs from the current value: msr fpcr is
 * a self-synchronising write on several cores (tens of cycles), while nearly
 * every switch is between contexts with the same, default, FPCR.
 *
 * Signals: no red zone on AArch64, and sp never points above live data, so
 * a signal may arrive at any instruction.
 *
 * CFI: the frame is described once; both stacks hold the same layout, so the
 * description stays true after sp is swapped.
 *
 * BTI/PAC: when the compiler's branch protection is on, ctx_switch starts
 * with a landing pad and the file carries the GNU property note, so linking
 * it does not turn BTI off for the whole binary. The return address is
 * stored unsigned: it was produced by the caller's `bl`, and the trampoline
 * is reached by `ret`, which BTI does not check.
 */

#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define WEFT__BTI_C hint #34 /* bti c */
#define WEFT__PROP_BTI 1
#else
#define WEFT__BTI_C
#define WEFT__PROP_BTI 0
#endif
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define WEFT__PROP_PAC 2
#else
#define WEFT__PROP_PAC 0
#endif

        .text

        .globl  weft__ctx_switch
        .hidden weft__ctx_switch
        .type   weft__ctx_switch, %function
        .p2align 4
weft__ctx_switch:
        .cfi_startproc
        WEFT__BTI_C
        sub     sp, sp, #176
        .cfi_def_cfa_offset 176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        .cfi_offset x19, -176
        .cfi_offset x20, -168
        .cfi_offset x21, -160
        .cfi_offset x22, -152
        .cfi_offset x23, -144
        .cfi_offset x24, -136
        .cfi_offset x25, -128
        .cfi_offset x26, -120
        .cfi_offset x27, -112
        .cfi_offset x28, -104
        .cfi_offset x29, -96
        .cfi_offset x30, -88
        .cfi_offset d8, -80
        .cfi_offset d9, -72
        .cfi_offset d10, -64
        .cfi_offset d11, -56
        .cfi_offset d12, -48
        .cfi_offset d13, -40
        .cfi_offset d14, -32
        .cfi_offset d15, -24
        mrs     x9, fpcr
        str     x9, [sp, #160]

        mov     x10, sp
        str     x10, [x0]               /* *save_sp = sp: from here on, this stack is resumable */
        mov     sp, x1                  /* the other context's frame, same layout */

        ldr     x10, [sp, #160]
        cmp     x9, x10                 /* x9 = the FPCR in force now */
        b.eq    1f
        msr     fpcr, x10
1:
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #176
        .cfi_def_cfa_offset 0
        .cfi_restore x19
        .cfi_restore x20
        .cfi_restore x21
        .cfi_restore x22
        .cfi_restore x23
        .cfi_restore x24
        .cfi_restore x25
        .cfi_restore x26
        .cfi_restore x27
        .cfi_restore x28
        .cfi_restore x29
        .cfi_restore x30
        .cfi_restore d8
        .cfi_restore d9
        .cfi_restore d10
        .cfi_restore d11
        .cfi_restore d12
        .cfi_restore d13
        .cfi_restore d14
        .cfi_restore d15
        ret
        .cfi_endproc
        .size   weft__ctx_switch, .-weft__ctx_switch

/* weft__fiber_trampoline: where a made fiber's first switch "returns" to.
 *
 * On arrival sp = saved sp + 176, 16-byte aligned (core/fiber.c puts the
 * frame at a 16-byte aligned top). x29 was popped as 0, so frame-pointer
 * walkers stop here; `.cfi_undefined x30` tells DWARF unwinders (gdb,
 * libgcc, the sanitizers) that this frame is the outermost.
 * x19 = start, x20 = arg, x21 = entry; start(arg, entry) never returns (a
 * normal build passes the user's entry itself as start, which ignores the
 * second argument).
 */
        .globl  weft__fiber_trampoline
        .hidden weft__fiber_trampoline
        .type   weft__fiber_trampoline, %function
        .p2align 4
weft__fiber_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        mov     x0, x20
        mov     x1, x21
        blr     x19
        brk     #0x3e8                  /* start returned: a fiber must end with weft__fiber_switch_final */
        .cfi_endproc
        .size   weft__fiber_trampoline, .-weft__fiber_trampoline

#if WEFT__PROP_BTI || WEFT__PROP_PAC
        /* GNU_PROPERTY_AARCH64_FEATURE_1_AND: this file is BTI/PAC compatible. */
        .pushsection .note.gnu.property, "a"
        .p2align 3
        .word   4                       /* n_namesz */
        .word   16                      /* n_descsz */
        .word   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .word   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
        .word   4                       /* pr_datasz */
        .word   (WEFT__PROP_BTI | WEFT__PROP_PAC)
        .word   0                       /* pad to 8 */
        .popsection
#endif

        .section .note.GNU-stack, "", %progbits
