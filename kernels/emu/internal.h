// Declarations shared by the emulator's own .cpp files (not used by kernels).
#pragma once
#include <cstddef>

#include "runtime.h"

namespace vlk_emu {

const char* op_name(Op op);
// Computes the results of warp collective `op` for the lanes in `need` (all of
// which have arrived; lanes[j] is lane j's state). False, with a message in
// err, when the operation is malformed (e.g. reads a lane outside the mask).
bool warp_compute(Op op, Lane* const lanes[32], unsigned need, char* err, size_t errlen);
// Describes addr if it lies in the guard page of a checked allocation.
bool describe_address(const void* addr, char* buf, size_t len);

}  // namespace vlk_emu
