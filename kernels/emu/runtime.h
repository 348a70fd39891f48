// Interface between the inline emulation code in cuda_emu.h / ptx.cuh and the
// emulator runtime (runtime.cpp): the state of the running CUDA thread and
// block, and the operations that may switch fibers or report an error.
#pragma once
#include <cstddef>
#include <cstdint>

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

extern "C" {
// Grid/block extent in the C launch ABI (see cuda_emu.h).
typedef struct { uint32_t x, y, z; } vlk_dim3;
}

namespace vlk_emu {

// Warp collectives. A lane stores its inputs in Lane, calls collective(), and
// finds its outputs in Lane when it returns.
enum class Op : uint8_t {
  None, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp,
  MmaBf16, MmaF16, Ldsm, LdsmTrans,
};

struct Lane {
  uint64_t val;       // shuffle value / vote predicate
  int arg, width;     // shuffle srcLane|delta|laneMask and width; ldmatrix: matrix count
  const void* ptr;    // ldmatrix row address
  uint32_t a[4], b[2];
  float c[4];
  uint64_t out;       // shuffle / vote result
  uint32_t d[4];      // ldmatrix registers or mma accumulators (as float bits)
};

// The parts of a CUDA thread and block that inline code reads directly.
struct ThreadState { uint3 tid; Lane lane; };
struct BlockState { uint3 idx; dim3 dim, grid; };

// The current fiber and block of this OS thread. __thread rather than
// thread_local: no dynamic-initialisation wrapper on every access.
extern __thread ThreadState* cur_thread;
extern __thread BlockState* cur_block;

// Block barrier; returns how many threads of the block passed a nonzero pred.
int syncthreads(const char* file, int line, int pred);
void collective(Op op, unsigned mask, const char* file, int line);
unsigned active_mask();
void cp_async(void* dst, const void* src, int cp_bytes, int src_bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int pending_groups);

// Runs body(ctx) as every thread of every block; returns 0 or fills err.
int launch(const char* name, void (*body)(void*), void* ctx, vlk_dim3 grid, vlk_dim3 block,
           size_t shmem, char* err, size_t errlen);

}  // namespace vlk_emu
