// User-level contexts ("fibers") on which the emulated CUDA threads of a block
// run. Switching is a hand-written callee-saved-register swap on x86-64
// (~16 ns; glibc's swapcontext costs ~470 ns because it saves the signal
// mask with a syscall) and ucontext elsewhere (or with -DVLK_EMU_UCONTEXT).
#pragma once
#include <cstddef>
#if defined(__x86_64__) && !defined(VLK_EMU_UCONTEXT)
#define VLK_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace vlk_emu {

struct Context {
#if VLK_EMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

// An mmap'd stack with a PROT_NONE guard page below it (stacks grow down).
struct Stack {
  char* base = nullptr;  // start of the guard page
  size_t size = 0;       // usable bytes above the guard
  bool contains_guard(const void* p) const;
};
// Stacks live as long as their worker thread, i.e. until the process exits.
Stack stack_alloc(size_t size);

// Makes `ctx` start entry() on `stack` when it is first switched to; entry
// must never return. `color` (e.g. the fiber's index) staggers the stack top
// so that the fibers' hot stack lines do not all map to the same cache sets.
void context_init(Context& ctx, const Stack& stack, unsigned color, void (*entry)());
// Saves the running context into `from` and resumes `to`.
void context_switch(Context& from, Context& to);

}  // namespace vlk_emu
