/* core/arch/switch_x86_64.S: the context switch for System V x86-64.
 *
 * weft__ctx_switch(void **save_sp, void *load_sp)   rdi = save_sp, rsi = load_sp
 *
 * Saves what the ABI says a callee must preserve and nothing else: rbx, rbp,
 * r12-r15, and the control parts of the FP state (MXCSR: rounding, masks,
 * FTZ/DAZ; the x87 control word: precision, rounding, masks). The caller-saved
 * registers (rax, rcx, rdx, rsi, rdi, r8-r11, every xmm/ymm/zmm, the x87
 * stack) are dead across a call by the ABI, so the C compiler has already
 * spilled whatever it needs. The direction flag is clear at every call (ABI).
 *
 * Frame at a saved sp, lowest address first (core/fiber.c's initial frame
 * writes the same layout; core/fiber.h has the table):
 *   [0]  MXCSR (stmxcsr, 4 bytes)   [4] x87 CW (fnstcw, 2 bytes)  [6] pad
 *   [8]  r15  [16] r14  [24] r13  [32] r12  [40] rbx  [48] rbp
 *   [56] return address
 * The call pushed the return address onto a 16-byte aligned stack, so after
 * the six pushes and the 8-byte FP slot the saved sp is 16-byte aligned again:
 * the initial frame relies on that (see the trampoline).
 *
 * MXCSR is restored whole, sticky exception flags included, so
 * fetestexcept() in a fiber sees that fiber's flags; the x87 status word is
 * not saved (fnstenv/fldenv cost ~100 cycles; nothing in the runtime reads
 * x87 exception flags).
 *
 * Signals: between storing rsp and loading the new one nothing is live below
 * rsp on either stack (the call made this a non-leaf point, so there is no
 * red-zone data), so a signal may arrive at any instruction.
 *
 * CFI: the frame is described as an ordinary push/pop sequence. Both stacks
 * hold the same layout, so the description stays true after rsp is swapped
 * and a debugger stopped anywhere in here unwinds into the right caller.
 *
 * Not supported: CET shadow stacks (the `ret` into another stack would
 * fault); this file carries no GNU property note, so a binary linked with it
 * is marked as not shadow-stack capable and the kernel never enables it.
 */

        .text

        .globl  weft__ctx_switch
        .hidden weft__ctx_switch
        .type   weft__ctx_switch, @function
        .p2align 4
weft__ctx_switch:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        pushq   $0                      /* the control-word slot, zeroed so it compares whole */
        .cfi_adjust_cfa_offset 8
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movl    (%rsp), %eax            /* the control words, to compare after the switch */
        movzwl  4(%rsp), %ecx           /* (two loads the size of their stores: forwarded) */

        movq    %rsp, (%rdi)            /* *save_sp = rsp: from here on, this stack is resumable */
        movq    %rsi, %rsp              /* the other context's frame, same layout */

        /* Load the control words only when they differ: ldmxcsr and fldcw
         * are slow (fldcw was 47% of a yield's switch, measured with perf),
         * and nearly every context runs with the defaults. */
        cmpl    (%rsp), %eax
        je      1f
        ldmxcsr (%rsp)
1:      cmpw    4(%rsp), %cx
        je      2f
        fldcw   4(%rsp)
2:
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
        ret
        .cfi_endproc
        .size   weft__ctx_switch, .-weft__ctx_switch

/* weft__fiber_trampoline: where a made fiber's first switch "returns" to.
 *
 * On arrival rsp = saved sp + 64, 16-byte aligned (core/fiber.c puts the
 * frame at a 16-byte aligned top), so the call below pushes its return
 * address onto an aligned stack and start sees (rsp + 8) % 16 == 0 at entry,
 * as the ABI requires. rbp was popped as 0: frame-pointer walkers stop here.
 * r14 = start, r13 = arg, r12 = entry; start(arg, entry) never returns (a
 * normal build passes the user's entry itself as start, which ignores the
 * second argument). `.cfi_undefined rip` tells unwinders (gdb, libgcc,
 * libunwind, the sanitizers' slow unwinder) that this frame is the outermost.
 */
        .globl  weft__fiber_trampoline
        .hidden weft__fiber_trampoline
        .type   weft__fiber_trampoline, @function
        .p2align 4
weft__fiber_trampoline:
        .cfi_startproc
        .cfi_undefined %rip
        movq    %r13, %rdi
        movq    %r12, %rsi
        call    *%r14
        ud2                             /* start returned: a fiber must end with weft__fiber_switch_final */
        .cfi_endproc
        .size   weft__fiber_trampoline, .-weft__fiber_trampoline

        .section .note.GNU-stack, "", @progbits
