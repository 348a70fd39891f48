#!/usr/bin/env bash
# Checks the kernels compiled into the vlk binary (needs no GPU):
#  - no register spills and no local-memory stack frame in the gemm and attention kernels;
#  - tensor-core instructions (HMMA) in the SASS of the sm_90a gemm and attention cubins.
# Usage: scripts/check-kernels.sh [path/to/vlk]   (default target/release/vlk)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vlk="${1:-$root/target/release/vlk}"
CUDA_HOME="$(bash "$root/scripts/cuda-toolchain.sh" | sed -n 's/^CUDA_HOME=//p')"
export PATH="$CUDA_HOME/bin:$PATH" NVDISASM_PATH="$CUDA_HOME/bin/nvdisasm"
out="$(mktemp -d)"
"$vlk" kernels --write-cubins "$out"
status=0
for module in gemm attention; do
  report="$out/$module.ptxas.txt"
  [ -s "$report" ] || { echo "FAIL: no ptxas report for $module (built without nvcc?)"; exit 1; }
  bad="$(grep -E '[1-9][0-9]* bytes (stack frame|spill stores|spill loads)' "$report" || true)"
  if [ -n "$bad" ]; then
    echo "FAIL: $module has spills or a stack frame:"; echo "$bad"; status=1
  fi
  hmma="$(cuobjdump --dump-sass "$out/$module.sm90a.cubin" | grep -c HMMA || true)"
  echo "$module: $hmma HMMA instructions in the sm_90a SASS; spills/stack: $([ -z "$bad" ] && echo none || echo FOUND)"
  [ "$hmma" -gt 0 ] || { echo "FAIL: no HMMA in $module"; status=1; }
done
exit $status
