// What warp collectives compute once every lane of the mask has arrived:
// shuffles and votes (PTX shfl.sync / vote.sync semantics), mma.sync m16n8k16
// and ldmatrix (fragment layouts as in the PTX ISA; summarised in ptx.cuh).
#include <cstdio>
#include <cstring>

#include "cuda_emu.h"
#include "internal.h"

namespace vlk_emu {

const char* op_name(Op op) {
  switch (op) {
    case Op::None: return "(none)";
    case Op::ShflIdx: return "__shfl_sync";
    case Op::ShflUp: return "__shfl_up_sync";
    case Op::ShflDown: return "__shfl_down_sync";
    case Op::ShflXor: return "__shfl_xor_sync";
    case Op::Ballot: return "__ballot_sync";
    case Op::Any: return "__any_sync";
    case Op::All: return "__all_sync";
    case Op::SyncWarp: return "__syncwarp";
    case Op::MmaBf16: return "mma.sync.m16n8k16.bf16";
    case Op::MmaF16: return "mma.sync.m16n8k16.f16";
    case Op::Ldsm: return "ldmatrix";
    case Op::LdsmTrans: return "ldmatrix.trans";
  }
  return "?";
}

namespace {

// Source lane of a shuffle, following the PTX pseudo-code for shfl.sync with
// the c operand CUDA passes for `width`. Returns the lane itself when the
// source is outside the lane's segment (CUDA: "own value returned").
unsigned shfl_source(Op op, unsigned lane, int arg, int width) {
  const unsigned seg = unsigned(32 - width) & 31;   // c[12:8]
  const unsigned cval = op == Op::ShflUp ? 0 : 31;  // c[4:0]
  const unsigned b = unsigned(arg) & 31;
  const unsigned min_lane = lane & seg, max_lane = min_lane | (cval & ~seg);
  switch (op) {
    case Op::ShflUp: return int(lane) - int(b) >= int(max_lane) ? lane - b : lane;
    case Op::ShflDown: return lane + b <= max_lane ? lane + b : lane;
    case Op::ShflXor: return (lane ^ b) <= max_lane ? lane ^ b : lane;
    default: {
      const unsigned j = min_lane | (b & ~seg);
      return j <= max_lane ? j : lane;
    }
  }
}

float bf16(uint32_t reg, int hi) { return bf16_bits_to_float(uint16_t(reg >> (16 * hi))); }
float f16(uint32_t reg, int hi) { return half_bits_to_float(uint16_t(reg >> (16 * hi))); }

// D = A (16x16, row) * B (16x8, col) + C, products exact, f32 accumulation in k order.
void mma_m16n8k16(Lane* const lanes[32], float (*cvt)(uint32_t, int)) {
  float A[16][16], B[16][8], C[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l >> 2, t = l & 3;
    const Lane& L = *lanes[l];
    for (unsigned i = 0; i < 8; ++i)
      A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >= 4)] = cvt(L.a[i / 2], i & 1);
    for (unsigned i = 0; i < 4; ++i) B[2 * t + (i & 1) + 8 * (i >= 2)][g] = cvt(L.b[i / 2], i & 1);
    for (unsigned i = 0; i < 4; ++i) C[g + 8 * (i >= 2)][2 * t + (i & 1)] = L.c[i];
  }
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l >> 2, t = l & 3;
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned r = g + 8 * (i >= 2), c = 2 * t + (i & 1);
      float acc = C[r][c];
      for (unsigned k = 0; k < 16; ++k) acc += A[r][k] * B[k][c];
      std::memcpy(&lanes[l]->d[i], &acc, 4);
    }
  }
}

// Lanes 8j..8j+7 hold the row addresses of 8x8 b16 matrix j; lane l receives,
// per matrix, row l/4, columns 2(l%4) and 2(l%4)+1 (of the transpose for .trans).
bool ldmatrix(Lane* const lanes[32], bool trans, char* err, size_t errlen) {
  const int count = lanes[0]->arg;
  for (unsigned l = 0; l < 32; ++l) {
    if (lanes[l]->arg != count) {
      std::snprintf(err, errlen, "lanes 0 and %u use different matrix counts (.x%d vs .x%d)", l,
                    count, lanes[l]->arg);
      return false;
    }
  }
  for (unsigned r = 0; r < unsigned(8 * count); ++r) {
    if (reinterpret_cast<uintptr_t>(lanes[r]->ptr) % 16) {
      std::snprintf(err, errlen, "row address %p of lane %u is not 16-byte aligned", lanes[r]->ptr, r);
      return false;
    }
  }
  for (int j = 0; j < count; ++j) {
    uint16_t M[8][8];
    for (unsigned r = 0; r < 8; ++r) std::memcpy(M[r], lanes[8 * j + r]->ptr, 16);
    for (unsigned l = 0; l < 32; ++l) {
      const unsigned row = l >> 2, col = 2 * (l & 3);
      const uint16_t lo = trans ? M[col][row] : M[row][col];
      const uint16_t hi = trans ? M[col + 1][row] : M[row][col + 1];
      lanes[l]->d[j] = uint32_t(lo) | uint32_t(hi) << 16;
    }
  }
  return true;
}

}  // namespace

bool warp_compute(Op op, Lane* const lanes[32], unsigned need, char* err, size_t errlen) {
  switch (op) {
    case Op::ShflIdx: case Op::ShflUp: case Op::ShflDown: case Op::ShflXor: {
      uint64_t out[32];
      for (unsigned m = need; m; m &= m - 1) {
        const unsigned l = unsigned(__builtin_ctz(m));
        const int width = lanes[l]->width;
        if (width < 1 || width > 32 || (width & (width - 1))) {
          std::snprintf(err, errlen, "lane %u: width %d is not a power of two in [1, 32]", l, width);
          return false;
        }
        const unsigned src = shfl_source(op, l, lanes[l]->arg, width);
        if (!(need >> src & 1)) {
          std::snprintf(err, errlen, "lane %u reads lane %u, which does not take part (not in the "
                        "mask, or beyond the block)", l, src);
          return false;
        }
        out[l] = lanes[src]->val;
      }
      for (unsigned m = need; m; m &= m - 1) lanes[__builtin_ctz(m)]->out = out[__builtin_ctz(m)];
      return true;
    }
    case Op::Ballot: case Op::Any: case Op::All: {
      unsigned bits = 0;
      for (unsigned m = need; m; m &= m - 1)
        if (lanes[__builtin_ctz(m)]->val) bits |= 1u << __builtin_ctz(m);
      const uint64_t r = op == Op::Ballot ? bits : op == Op::Any ? bits != 0 : bits == need;
      for (unsigned m = need; m; m &= m - 1) lanes[__builtin_ctz(m)]->out = r;
      return true;
    }
    case Op::SyncWarp: return true;
    case Op::MmaBf16: case Op::MmaF16: case Op::Ldsm: case Op::LdsmTrans:
      if (need != ~0u) {
        std::snprintf(err, errlen, "needs all 32 lanes of the warp (.aligned), got 0x%08x", need);
        return false;
      }
      if (op == Op::Ldsm || op == Op::LdsmTrans) return ldmatrix(lanes, op == Op::LdsmTrans, err, errlen);
      mma_m16n8k16(lanes, op == Op::MmaBf16 ? bf16 : f16);
      return true;
    case Op::None: break;
  }
  std::snprintf(err, errlen, "unknown collective");
  return false;
}

}  // namespace vlk_emu
