#!/usr/bin/env bash
# Checks that the emulator test kernels (and so common.cuh and ptx.cuh) build
# with the real CUDA 13.0 compiler: PTX for sm_80, a cubin for sm_90a, and
# tensor-core instructions (HMMA) in the SASS of the mma kernels. Needs no GPU;
# installs the toolchain with scripts/cuda-toolchain.sh if necessary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CUDA_HOME="$(bash "$root/scripts/cuda-toolchain.sh" | sed -n 's/^CUDA_HOME=//p')"
export PATH="$CUDA_HOME/bin:$PATH" NVDISASM_PATH="$CUDA_HOME/bin/nvdisasm"
out="$(mktemp -d)"
for cu in "$root"/kernels/emu/tests/*.cu; do
  name="$(basename "$cu" .cu)"
  nvcc -std=c++17 -I"$root/kernels" -arch=sm_80 --ptx "$cu" -o "$out/$name.ptx"
  # -Xptxas -v: one line per kernel with its registers, shared memory and spills.
  nvcc -std=c++17 -I"$root/kernels" -gencode=arch=compute_90a,code=sm_90a --cubin -Xptxas -v \
    "$cu" -o "$out/$name.cubin" 2>&1 |
    awk '/Compiling entry function/ { k = $(NF - 2) }
         /spill/ { s = $0; sub(/^ */, "", s) }
         /Used/ { u = $0; sub(/.*: /, "", u); printf "  %-28s %s; %s\n", k, u, s }'
  echo "ok: $name.cu -> PTX (sm_80) and cubin (sm_90a)"
done
for k in t_mma_bf16 t_mma_f16 t_gemm_tile; do
  n="$(cuobjdump --dump-sass --function "$k" "$out/kernels.cubin" | grep -c HMMA || true)"
  cuobjdump --dump-sass --function "$k" "$out/kernels.cubin" | grep -m1 -o 'HMMA[.A-Z0-9]*' | sed "s/^/$k: /"
  [ "$n" -gt 0 ] || { echo "FAIL: no HMMA in $k"; exit 1; }
done
grep -q 'mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32' "$out/kernels.ptx"
grep -q 'ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16' "$out/kernels.ptx"
grep -q 'cp.async.cg.shared.global' "$out/kernels.ptx"
echo "ok: HMMA in the SASS, mma/ldmatrix/cp.async in the PTX ($out)"
