#!/usr/bin/env bash
# Collects what the GPU machine needs into dist/gpu/ (git-ignored, so name it in `carry`).
# Runs HERE, on the build machine, after:
#     cargo build --release
#     cargo test --release --no-run --test emu
# It builds nothing itself. Bundle contents:
#     vlk.gz        target/release/vlk, debug info stripped, gzipped
#     emu.gz        newest target/release/deps/emu-* (tests/emu.rs; honours VLK_TEST_DEVICE=cuda), likewise
#     torch_bench.py, gpu-check.sh, README.txt
# The binaries travel gzipped (the embedded cubins make them ~65 MB stripped, ~12 MB gzipped);
# gpu-check.sh unpacks them into a temporary folder there.
# Fails if dist/gpu exceeds 60 MiB (the device tool carries 64 MiB in all).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bundle="dist/gpu"
limit=$((60 * 1024 * 1024))

die() { echo "gpu-bundle: $*" >&2; exit 1; }

vlk_src="target/release/vlk"
[ -x "$vlk_src" ] || die "missing $vlk_src: run \`cargo build --release\` first"

# The newest executable emu-<hash> (not the .d dependency file).
emu_src="$(find target/release/deps -maxdepth 1 -type f -name 'emu-*' ! -name '*.d' -perm -u+x \
             -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)"
[ -n "$emu_src" ] || die "missing target/release/deps/emu-*: run \`cargo test --release --no-run --test emu\` first"

for f in scripts/torch_bench.py scripts/gpu-check.sh; do
  [ -f "$f" ] || die "missing $f"
done
command -v gzip >/dev/null || die "gzip not found"
command -v strip >/dev/null || command -v objcopy >/dev/null \
  || die "neither strip nor objcopy found (apt-get install binutils)"

# Staleness warnings (not fatal): sources newer than the binaries built from them.
newer_src="$(find src build.rs kernels Cargo.toml -newer "$vlk_src" -type f 2>/dev/null | head -n 3 | paste -sd " " - || true)"
[ -z "$newer_src" ] || echo "gpu-bundle: WARNING: sources newer than $vlk_src (rebuild?): $newer_src" >&2
newer_tests="$(find tests src kernels -newer "$emu_src" -type f 2>/dev/null | head -n 3 | paste -sd " " - || true)"
[ -z "$newer_tests" ] || echo "gpu-bundle: WARNING: sources newer than $emu_src (rerun cargo test --release --no-run --test emu?): $newer_tests" >&2
grep -q VLK_TEST_DEVICE "$emu_src" \
  || echo "gpu-bundle: WARNING: $emu_src does not mention VLK_TEST_DEVICE: its tests may run on the emulator only" >&2
grep -q torch_bench.py "$vlk_src" \
  || echo "gpu-bundle: WARNING: $vlk_src does not mention torch_bench.py: it predates vlk bench --vs torch" >&2

case "$bundle" in dist/gpu) rm -rf -- "$bundle" ;; *) die "unexpected bundle path $bundle" ;; esac
mkdir -p "$bundle"
tmp="$(mktemp -d)"
trap 'rm -rf -- "$tmp"' EXIT

pack() {  # pack SRC NAME: strip debug info, gzip into $bundle/NAME.gz
  if command -v strip >/dev/null; then strip --strip-debug -o "$tmp/$2" "$1"
  else objcopy --strip-debug "$1" "$tmp/$2"
  fi
  chmod +x "$tmp/$2"
  gzip -n -6 -c "$tmp/$2" > "$bundle/$2.gz"
  printf '  %-8s from %s: %s bytes, %s stripped, %s gzipped\n' "$2" "$1" \
    "$(stat -c %s "$1")" "$(stat -c %s "$tmp/$2")" "$(stat -c %s "$bundle/$2.gz")"
}

echo "gpu-bundle: packing into $bundle/"
pack "$vlk_src" vlk
pack "$emu_src" emu
cp scripts/torch_bench.py scripts/gpu-check.sh "$bundle/"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain --untracked-files=no 2>/dev/null | head -n 1)"
[ -z "$dirty" ] || commit="$commit+uncommitted changes"
cat > "$bundle/README.txt" <<EOF
vlk GPU bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $commit by scripts/gpu-bundle.sh.

Contents:
  vlk.gz                  target/release/vlk (debug info stripped, gzipped)
  emu.gz                  $emu_src: the tests of tests/emu.rs; with VLK_TEST_DEVICE=cuda
                          they check the kernels on the GPU against the CPU backend
  torch_bench.py          the PyTorch side of vlk bench --vs torch (eager, torch.compile, cuBLAS)
  gpu-check.sh            runs everything below on the GPU machine
  README.txt              this file

The one command (device tool, from the repo root; dist/gpu is git-ignored so carry it):
  run(command="bash scripts/gpu-check.sh dist/gpu", carry=["dist/gpu"], timeout_s=540)

gpu-check.sh prints nvidia-smi -L and the driver, unpacks the binaries into a temp folder, runs
  VLK_TEST_DEVICE=cuda ./emu                          -> \$OUT/device_tests.log
  ./vlk bench --device cuda --vs torch --out FILE    -> \$OUT/bench.json, table \$OUT/bench.txt
and prints a SUMMARY line; exits non-zero if the device tests failed. Each step runs even if an
earlier one failed. Time limits (seconds, environment): GPU_TEST_TIMEOUT=150 BENCH_TIMEOUT=330.
EOF

size="$(du -sb "$bundle" | cut -f1)"
echo "gpu-bundle: $bundle is $size bytes ($((size / 1024 / 1024)) MiB; limit 60 MiB)"
ls -l "$bundle"
if [ "$size" -gt "$limit" ]; then
  die "$bundle is $size bytes, over the 60 MiB limit"
fi
echo "gpu-bundle: ok. Run: run(command=\"bash scripts/gpu-check.sh dist/gpu\", carry=[\"dist/gpu\"], timeout_s=540)"
