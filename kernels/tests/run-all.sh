#!/usr/bin/env bash
# Runs every kernel family's C++ emulator test (each against its own double-precision reference).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/run.sh" gemm
bash "$here/run.sh" attention
bash "$here/run.sh" rownorm layernorm softmax denoise
bash "$here/run.sh" pointwise elementwise copy reduce embedding adamw
