#!/usr/bin/env bash
# Builds the emulator and its test kernels the way build.rs does (every source
# compiled as C++17 with the same flags, cuda_emu.h force-included, archived
# into a static library), links the test driver against it and runs it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
emu="$root/kernels/emu"
out="${VLK_EMU_TEST_DIR:-$(mktemp -d)}"
mkdir -p "$out"
CXX="${CXX:-g++}"
flags=(-x c++ -std=c++17 -O2 -g -fPIC -DVLK_EMU -include "$emu/cuda_emu.h" -I"$root/kernels"
       -Wall -Wextra -Wno-unknown-pragmas ${VLK_EMU_CXXFLAGS:-})  # e.g. -DVLK_EMU_UCONTEXT
objs=() pids=()
for src in "$emu"/*.cpp "$emu"/tests/*.cu "$emu"/tests/driver.cpp; do
  o="$out/$(basename "$src").o"
  "$CXX" "${flags[@]}" -c "$src" -o "$o" & pids+=($!)
  [ "$(basename "$src")" = driver.cpp ] || objs+=("$o")
done
for p in "${pids[@]}"; do wait "$p"; done
rm -f "$out/libvlk_emu.a"
ar rcs "$out/libvlk_emu.a" "${objs[@]}"
"$CXX" -o "$out/emu_tests" "$out/driver.cpp.o" "$out/libvlk_emu.a" -pthread
"$out/emu_tests"
