#!/usr/bin/env bash
# Runs on the GPU machine, from the root of the copied tree, as ONE command:
#     bash scripts/gpu-check.sh dist/gpu        (the bundle made by scripts/gpu-bundle.sh)
# Steps (each runs even if an earlier one failed; failures are recorded):
#   1. nvidia-smi -L and the driver version;
#   2. the device tests: VLK_TEST_DEVICE=cuda ./emu (tests/emu.rs: kernel parity against the CPU)
#      -> $OUT/device_tests.log;
#   3. ./vlk bench --device cuda --vs torch (the GPU suite: GEMM beside cuBLAS, attention, layer
#      norm, softmax-xent, denoise, copy, ViT-B/32 towers and a training step, each beside PyTorch
#      eager and torch.compile where it applies, timed with CUDA events, L2 flushed between
#      repeats, vlk and torch interleaved) -> $OUT/bench.json (rewritten after every row),
#      the table -> $OUT/bench.txt, progress -> $OUT/bench.log; if PyTorch cannot start, the
#      same bench without it;
#   4. a SUMMARY line. Exit status: non-zero if the device tests failed (or did not run).
# Output folder: $OUT if set, else ./gpu-out. Time limits in seconds (environment):
#   GPU_TEST_TIMEOUT (150), BENCH_TIMEOUT (330); BENCH_BUDGET (1.5: seconds of timed runs per
#   workload and side). Extra arguments for the test binary: GPU_TEST_ARGS (e.g. "--test-threads=1");
#   extra ones for vlk bench: BENCH_ARGS (e.g. "--only gemm"); PYTHON picks python3.
set -uo pipefail

bundle="${1:-dist/gpu}"
out="${OUT:-./gpu-out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
bundle="$(cd "$bundle" 2>/dev/null && pwd)" || { echo "gpu-check: no bundle folder ${1:-dist/gpu}" >&2; bundle=""; }
py="${PYTHON:-python3}"
t_tests="${GPU_TEST_TIMEOUT:-150}"
t_bench="${BENCH_TIMEOUT:-330}"
budget="${BENCH_BUDGET:-1.5}"
start_s=$SECONDS

step() { echo; echo "=== $* ($((SECONDS - start_s)) s)"; }
# Describes an exit status: ok, timeout or rc=N.
verdict() { case "$1" in 0) echo ok ;; 124|137) echo "timeout(rc=$1)" ;; *) echo "failed(rc=$1)" ;; esac; }

# ---- 1. the machine
step "GPU"
gpu_name="unknown"; driver="unknown"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L || true
  q="$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>/dev/null | head -n 1)"
  echo "name, driver, memory, SM clock, memory clock: ${q:-?}"
  gpu_name="$(echo "$q" | cut -d, -f1 | sed 's/^ *//')"
  driver="$(echo "$q" | cut -d, -f2 | sed 's/^ *//')"
  echo "driver version: $driver"
else
  echo "nvidia-smi not found"
fi

# ---- unpack the binaries (vlk.gz/emu.gz, or plain vlk/emu) into a temp folder
work="$(mktemp -d "${TMPDIR:-/tmp}/vlk-gpu.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT
unpack() {  # unpack NAME: prints the path of the runnable binary, or nothing
  if [ -n "$bundle" ] && [ -f "$bundle/$1.gz" ]; then
    { gzip -dc "$bundle/$1.gz" 2>/dev/null \
        || "$py" -c 'import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), sys.stdout.buffer)' "$bundle/$1.gz"
    } > "$work/$1" && chmod +x "$work/$1" && echo "$work/$1"
  elif [ -n "$bundle" ] && [ -f "$bundle/$1" ]; then
    cp "$bundle/$1" "$work/$1" && chmod +x "$work/$1" && echo "$work/$1"
  fi
}
vlk="$(unpack vlk)"
emu="$(unpack emu)"
torch_py="$bundle/torch_bench.py"
[ -n "$bundle" ] && [ -f "$torch_py" ] || torch_py="scripts/torch_bench.py"

# ---- 2. device tests
step "device tests: VLK_TEST_DEVICE=cuda emu (timeout ${t_tests}s)"
tests_rc=127; tests_line="not run"
if [ -n "$emu" ]; then
  # shellcheck disable=SC2086  # GPU_TEST_ARGS is a list of words
  # From the repo root (as cargo runs tests), in case a test reads files of the tree.
  VLK_TEST_DEVICE=cuda RUST_BACKTRACE=1 timeout -k 10 "$t_tests" "$emu" ${GPU_TEST_ARGS:-} \
    > "$out/device_tests.log" 2>&1
  tests_rc=$?
  tests_line="$(grep -E '^test result:' "$out/device_tests.log" | tail -n 1)"
  log="$out/device_tests.log"
  grep -E '^test .* (FAILED|ok|ignored)$' "$log" | tail -n 40
  # Where the tests panicked (proptest repeats a panic while it shrinks: count them), and the first message.
  grep -E 'panicked at' "$log" | sed -E 's/ \([0-9]+\)//' | sort | uniq -c | sort -rn | head -n 15
  grep -m 1 -A 4 'panicked at' "$log"
  [ -n "$tests_line" ] || tests_line="no 'test result' line; log tail:"$'\n'"$(tail -n 5 "$out/device_tests.log")"
else
  echo "no emu binary in '${1:-dist/gpu}' (make the bundle with scripts/gpu-bundle.sh and carry dist/gpu)" | tee "$out/device_tests.log"
fi
echo "device tests: $(verdict "$tests_rc"): $tests_line"

# ---- 3. vlk bench beside PyTorch
step "vlk bench --device cuda --vs torch (timeout ${t_bench}s)"
bench_rc=127
if [ -n "$vlk" ]; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  PYTHONUNBUFFERED=1 timeout -k 10 "$t_bench" "$vlk" bench --device cuda --vs torch --python "$py" \
    --torch-script "$torch_py" --budget "$budget" --out "$out/bench.json" ${BENCH_ARGS:-} \
    > "$out/bench.txt" 2> "$out/bench.log"
  bench_rc=$?
  if [ "$bench_rc" -ne 0 ] && [ ! -s "$out/bench.json" ]; then
    # PyTorch could not start (or failed before the first row): keep vlk's own timings.
    echo "bench --vs torch gave no rows ($(tail -n 1 "$out/bench.log")); again without PyTorch"
    # shellcheck disable=SC2086
    timeout -k 10 "$t_bench" "$vlk" bench --device cuda --budget "$budget" --out "$out/bench.json" ${BENCH_ARGS:-} \
      > "$out/bench.txt" 2>> "$out/bench.log"
    bench_rc=$?
  fi
  cat "$out/bench.txt"
  tail -n 20 "$out/bench.log"
else
  echo "no vlk binary in '${1:-dist/gpu}'" | tee "$out/bench.log"
fi
echo "bench: $(verdict "$bench_rc")"

echo
echo "SUMMARY: device tests $(verdict "$tests_rc") [${tests_line%%$'\n'*}]; bench $(verdict "$bench_rc");" \
     "$((SECONDS - start_s)) s; files in $out"
[ "$tests_rc" -eq 0 ] || exit 1
exit 0
