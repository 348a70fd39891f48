#!/usr/bin/env bash
# Builds and runs one kernel family's emulator test, the way build.rs compiles
# kernels (C++17, cuda_emu.h force-included):
#   bash kernels/tests/run.sh <family> [cu ...]
# compiles kernels/emu/*.cpp (objects cached in /tmp/vlk-emu-objs, rebuilt when
# any kernels/emu file is newer), the kernels named as [cu ...] (basenames without
# .cu, e.g. `copy reduce`; default: every kernels/<family>*.cu) and
# kernels/tests/<family>_test.cpp, links them with -pthread and runs the binary.
# Extra compiler flags: VLK_EMU_CXXFLAGS.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
family="${1:?usage: run.sh <family> [cu ...]}"
shift
CXX="${CXX:-g++}"
flags=(-x c++ -std=c++17 -O2 -fPIC -DVLK_EMU -include "$root/kernels/emu/cuda_emu.h"
       -I"$root/kernels" -Wno-unknown-pragmas ${VLK_EMU_CXXFLAGS:-})
cache=/tmp/vlk-emu-objs
mkdir -p "$cache"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

emu_objs=() pids=()
for src in "$root"/kernels/emu/*.cpp; do
  o="$cache/$(basename "$src").o"
  emu_objs+=("$o")
  if [ ! -e "$o" ] || [ -n "$(find "$root/kernels/emu" -maxdepth 1 -type f -newer "$o")" ]; then
    # Build to a private name, then rename: concurrent runs never see half an object.
    ( "$CXX" "${flags[@]}" -c "$src" -o "$o.$$" && mv -f "$o.$$" "$o" ) & pids+=($!)
  fi
done

if [ $# -gt 0 ]; then
  cus=()
  for k in "$@"; do cus+=("$root/kernels/$k.cu"); done
else
  cus=("$root"/kernels/"$family"*.cu)
fi
objs=()
for src in "${cus[@]}" "$root/kernels/tests/${family}_test.cpp"; do
  o="$out/$(basename "$src").o"
  objs+=("$o")
  "$CXX" "${flags[@]}" -c "$src" -o "$o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
"$CXX" -o "$out/${family}_test" "${objs[@]}" "${emu_objs[@]}" -pthread
"$out/${family}_test"
