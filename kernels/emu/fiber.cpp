// Fiber stacks and context switching (see fiber.h).
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace vlk_emu {

static size_t page_size() {
  static const size_t p = size_t(sysconf(_SC_PAGESIZE));
  return p;
}

Stack stack_alloc(size_t size) {
  const size_t page = page_size();
  size = (size + page - 1) / page * page;
  void* m = mmap(nullptr, size + page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED || mprotect(m, page, PROT_NONE) != 0) {
    std::perror("vlk_emu: fiber stack mmap (fewer VLK_EMU_THREADS or a smaller VLK_EMU_STACK_KB may help)");
    std::abort();
  }
  return Stack{static_cast<char*>(m), size};
}

bool Stack::contains_guard(const void* p) const {
  const char* c = static_cast<const char*>(p);
  return base && c >= base && c < base + page_size();
}

// Top of the usable stack, moved down by a per-fiber multiple of 64 bytes.
static char* stack_top(const Stack& stack, unsigned color) {
  return stack.base + page_size() + stack.size - (color * 64 + color / 64 * 16) % 4096;
}

#if VLK_EMU_ASM_SWITCH
// vlk_emu_ctx_switch(void** save_sp, void* new_sp): push the System V
// callee-saved registers, swap stack pointers, pop and return into the other
// context. MXCSR and the x87 control word are not switched: all fibers share
// the worker's floating-point mode and kernels do not change it. A new context's stack is laid out to look like one that was
// switched away from, with the fiber entry as the return address.
asm(R"(
  .text
  .p2align 4
  .globl vlk_emu_ctx_switch
  .hidden vlk_emu_ctx_switch
  .type vlk_emu_ctx_switch, @function
vlk_emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size vlk_emu_ctx_switch, .-vlk_emu_ctx_switch
)");
extern "C" void vlk_emu_ctx_switch(void** save_sp, void* new_sp);

void context_init(Context& ctx, const Stack& stack, unsigned color, void (*entry)()) {
  // top is 16-byte aligned; entry is "returned into" with rsp = top - 8, which
  // is the alignment a call instruction would leave.
  uintptr_t top = reinterpret_cast<uintptr_t>(stack_top(stack, color));
  void** sp = reinterpret_cast<void**>(top & ~uintptr_t(15));
  *--sp = nullptr;                           // fake return address of entry
  *--sp = reinterpret_cast<void*>(entry);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
  ctx.sp = sp;
}

void context_switch(Context& from, Context& to) { vlk_emu_ctx_switch(&from.sp, to.sp); }
#else
void context_init(Context& ctx, const Stack& stack, unsigned color, void (*entry)()) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.base + page_size();
  ctx.uc.uc_stack.ss_size = size_t(stack_top(stack, color) - (stack.base + page_size()));
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
}

void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

}  // namespace vlk_emu
