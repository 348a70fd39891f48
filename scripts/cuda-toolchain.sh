#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, cuobjdump, nvdisasm) from
# Python wheels into .cuda-venv at the repo root and prints CUDA_HOME.
# All compiler wheels must come from one release: a newer nvvm emits a PTX ISA
# that ptxas 13.0 rejects. cuobjdump/nvdisasm 13.5 are only used to read SASS,
# so they are installed without dependencies (they would drag in newer wheels).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cuda-venv"
core=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
tools=(nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37)

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"

# True when every name==version in "$@" is installed at exactly that version.
installed() {
  "$py" - "$@" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}

installed "${core[@]}" || "$py" -m pip install -q "${core[@]}"
installed "${tools[@]}" || "$py" -m pip install -q --no-deps "${tools[@]}"

cuda_home="$("$py" -c 'import nvidia.cu13 as m; print(list(m.__path__)[0])')"
echo "CUDA_HOME=$cuda_home"
