#!/usr/bin/env bash
# Runs on the GPU machine, from the root of the copied tree, as ONE command:
#     bash scripts/gpu-check.sh dist/gpu        (the bundle made by scripts/gpu-bundle.sh)
# Steps (each runs even if an earlier one failed; failures are recorded):
#   1. nvidia-smi -L and the driver version;
#   2. the device tests: VLK_TEST_DEVICE=cuda ./emu (tests/emu.rs: kernel parity against the CPU)
#      -> $OUT/device_tests.log;
#   3. ./vlk bench-kernels --device cuda --json -> $OUT/vlk.json (stderr $OUT/vlk.log);
#   4. python3 torch_kernels_bench.py          -> $OUT/torch.json (stderr $OUT/torch.log);
#   5. merges 3 and 4 into $OUT/results.json, prints a table (also $OUT/results.txt) and a
#      SUMMARY line. Exit status: non-zero if the device tests failed (or did not run).
# Output folder: $OUT if set, else ./gpu-out. Time limits in seconds (environment):
#   GPU_TEST_TIMEOUT (150), VLK_BENCH_TIMEOUT (120), TORCH_BENCH_TIMEOUT (180),
#   TORCH_COMPILE_BUDGET (100: torch.compile rows are skipped after this many seconds).
# Extra arguments for the test binary: GPU_TEST_ARGS (e.g. "--test-threads=1"); PYTHON picks python3.
set -uo pipefail

bundle="${1:-dist/gpu}"
out="${OUT:-./gpu-out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
bundle="$(cd "$bundle" 2>/dev/null && pwd)" || { echo "gpu-check: no bundle folder ${1:-dist/gpu}" >&2; bundle=""; }
py="${PYTHON:-python3}"
t_tests="${GPU_TEST_TIMEOUT:-150}"
t_vlk="${VLK_BENCH_TIMEOUT:-120}"
t_torch="${TORCH_BENCH_TIMEOUT:-180}"
compile_budget="${TORCH_COMPILE_BUDGET:-100}"
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
torch_py="$bundle/torch_kernels_bench.py"
[ -n "$bundle" ] && [ -f "$torch_py" ] || torch_py="scripts/torch_kernels_bench.py"

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

# ---- 3. vlk timings
step "vlk bench-kernels --device cuda --json (timeout ${t_vlk}s)"
vlk_rc=127
if [ -n "$vlk" ]; then
  timeout -k 10 "$t_vlk" "$vlk" bench-kernels --device cuda --json > "$out/vlk.json" 2> "$out/vlk.log"
  vlk_rc=$?
  tail -n 15 "$out/vlk.log"
else
  echo "no vlk binary in '${1:-dist/gpu}'" | tee "$out/vlk.log"
fi
echo "vlk bench: $(verdict "$vlk_rc")"

# ---- 4. PyTorch timings (--out rewrites torch.json after every row, so a timeout keeps the rows so far)
step "torch_kernels_bench.py (timeout ${t_torch}s)"
torch_rc=127
if [ -f "$torch_py" ]; then
  PYTHONUNBUFFERED=1 timeout -k 10 "$t_torch" "$py" "$torch_py" --json --budget-s "$compile_budget" \
    --out "$out/torch.json" > /dev/null 2> "$out/torch.log"
  torch_rc=$?
  tail -n 40 "$out/torch.log"
else
  echo "torch_kernels_bench.py not found" | tee "$out/torch.log"
fi
echo "torch bench: $(verdict "$torch_rc")"

# ---- 5. merge and table
step "merge"
GPU_NAME="$gpu_name" DRIVER="$driver" TESTS_RC="$tests_rc" TESTS_LINE="$tests_line" VLK_RC="$vlk_rc" \
TORCH_RC="$torch_rc" "$py" - "$out/vlk.json" "$out/torch.json" "$out/results.json" "$out/results.txt" <<'PY'
import json, os, re, sys

vlk_path, torch_path, res_path, txt_path = sys.argv[1:5]
ORDER = ["gemm_bf16_n1024", "gemm_bf16_n4096", "gemm_bf16_n8192", "gemm_f32_n4096",
         "attn_fwd_bf16_d64", "attn_fwd_bf16_d128", "attn_fwd_causal_bf16_d64", "attn_fwd_causal_bf16_d128",
         "attn_bwd_bf16_d64", "attn_bwd_bf16_d128", "layernorm_fwd_bf16", "layernorm_bwd_bf16",
         "xent_fwd_bf16", "xent_bwd_bf16", "denoise_bf16", "copy_bf16"]
errors = []

def load(path, label):
    """A JSON list of row objects from path; tolerates text around the list. [] on failure."""
    try:
        text = open(path).read()
    except OSError as e:
        errors.append(f"{label}: cannot read {path}: {e}")
        return []
    try:
        data = json.loads(text)
    except ValueError:
        i, j = text.find("["), text.rfind("]")
        try:
            data = json.loads(text[i:j + 1]) if 0 <= i < j else None
        except ValueError:
            data = None
        if data is None:
            errors.append(f"{label}: {path} holds no JSON list ({len(text)} bytes)")
            return []
    if isinstance(data, dict):  # tolerate {"rows": [...]} / {"results": [...]}
        data = data.get("rows", data.get("results", []))
    if not isinstance(data, list):
        errors.append(f"{label}: {path}: not a JSON list")
        return []
    rows = [r for r in data if isinstance(r, dict) and isinstance(r.get("name"), str) and _num(r.get("ms"))]
    if len(rows) != len(data):
        errors.append(f"{label}: skipped {len(data) - len(rows)} entries without a name and a positive ms")
    return rows

def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0

def rate(r):
    """(value, unit) of a row: TFLOP/s for flops rows, GB/s for bytes rows; derived if missing."""
    if r is None:
        return None, ""
    if _num(r.get("flops")) or _num(r.get("tflops")):
        v = r.get("tflops") if _num(r.get("tflops")) else r["flops"] / (r["ms"] * 1e9)
        return float(v), "TFLOP/s"
    if _num(r.get("bytes")) or _num(r.get("gbps")):
        v = r.get("gbps") if _num(r.get("gbps")) else r["bytes"] / (r["ms"] * 1e6)
        return float(v), "GB/s"
    return None, ""

def dims(r):
    """The shape as a list of ints, whether given as [4, 16, 4096, 128] or "b4 h16 s4096 d128"."""
    sh = r.get("shape")
    if isinstance(sh, list):
        return [int(x) for x in sh if isinstance(x, (int, float))]
    return [int(x) for x in re.findall(r"\d+", sh)] if isinstance(sh, str) else []

def label(r):
    return r.get("impl", "?") + (f"/{r['variant']}" if r.get("variant") else "")

vlk_rows = [r for r in load(vlk_path, "vlk") if r.get("impl", "vlk") == "vlk"]
torch_rows = [r for r in load(torch_path, "torch") if r.get("impl") in ("torch", "torch.compile", "cublas")]

names = {r["name"] for r in vlk_rows} | {r["name"] for r in torch_rows}
names = [n for n in ORDER if n in names] + sorted(names - set(ORDER))
# The bandwidth ceiling: torch's copy_bf16 (a plain device-to-device copy); vlk's if torch has none.
copy_src = "torch"
copy_gbps = max((rate(r)[0] or 0.0 for r in torch_rows if r["name"] == "copy_bf16"), default=0.0) or None
if copy_gbps is None:
    copy_src = "vlk"
    copy_gbps = max((rate(r)[0] or 0.0 for r in vlk_rows if r["name"] == "copy_bf16"), default=0.0) or None
    if copy_gbps:
        errors.append("no torch copy_bf16 row: %copy uses vlk's copy_bf16 as the ceiling")

merged = []
for name in names:
    v = min((r for r in vlk_rows if r["name"] == name), key=lambda r: r["ms"], default=None)
    ts = [r for r in torch_rows if r["name"] == name]
    t = min(ts, key=lambda r: r["ms"], default=None)
    vr, unit = rate(v)
    tr, tunit = rate(t)
    unit = unit or tunit
    row = {"name": name, "dtype": (v or t).get("dtype"), "shape": (v or t).get("shape"), "unit": unit,
           "vlk": v, "torch_best": t, "torch_all": ts,
           "vlk_rate": vr, "torch_best_rate": tr,
           "speedup": (t["ms"] / v["ms"]) if v and t else None,
           "vlk_pct_copy_bw": None, "torch_pct_copy_bw": None}
    if v and t and dims(v) and dims(t) and dims(v) != dims(t):
        errors.append(f"{name}: shapes differ: vlk {v['shape']} vs torch {t['shape']}")
    if unit == "GB/s" and copy_gbps:
        row["vlk_pct_copy_bw"] = 100.0 * vr / copy_gbps if vr else None
        row["torch_pct_copy_bw"] = 100.0 * tr / copy_gbps if tr else None
    merged.append(row)

def f(x, fmt):
    return format(x, fmt) if isinstance(x, (int, float)) else "-"

lines = []
lines.append("speedup = best torch ms / vlk ms: > 1 means vlk is faster. "
             f"%copy = achieved GB/s over {copy_src} copy_bf16 ({f(copy_gbps, '.0f')} GB/s), memory-bound rows only.")
hdr = f"{'workload':<26} {'vlk ms':>9} {'vlk rate':>15} {'torch ms':>9} {'torch impl':<20} {'torch rate':>15} {'speedup':>8} {'vlk %copy':>9}"
lines.append(hdr)
lines.append("-" * len(hdr))
for r in merged:
    v, t, u = r["vlk"], r["torch_best"], r["unit"]
    lines.append(f"{r['name']:<26} {f(v and v['ms'], '9.4f'):>9} "
                 f"{(f(r['vlk_rate'], '.1f') + ' ' + u) if r['vlk_rate'] else '-':>15} "
                 f"{f(t and t['ms'], '9.4f'):>9} {label(t) if t else '-':<20} "
                 f"{(f(r['torch_best_rate'], '.1f') + ' ' + u) if r['torch_best_rate'] else '-':>15} "
                 f"{f(r['speedup'], '.2f') + 'x' if r['speedup'] else '-':>8} "
                 f"{f(r['vlk_pct_copy_bw'], '.0f') + '%' if r['vlk_pct_copy_bw'] else '-':>9}")
sp = [r["speedup"] for r in merged if r["speedup"]]
if sp:
    import math
    geo = math.exp(sum(math.log(x) for x in sp) / len(sp))
    lines.append(f"{len(sp)} workloads compared; geometric-mean speedup {geo:.2f}x "
                 f"({sum(x > 1 for x in sp)} faster than the best torch/cublas, {sum(x <= 1 for x in sp)} not)")
missing_v = [r["name"] for r in merged if not r["vlk"]]
missing_t = [r["name"] for r in merged if not r["torch_best"]]
if missing_v:
    lines.append("no vlk row: " + ", ".join(missing_v))
if missing_t:
    lines.append("no torch row: " + ", ".join(missing_t))
for e in errors:
    lines.append("note: " + e)
table = "\n".join(lines)
print(table)
with open(txt_path, "w") as fh:
    fh.write(table + "\n")

env = os.environ
def rc(k):
    try:
        return int(env.get(k, ""))
    except ValueError:
        return None
result = {
    "gpu": env.get("GPU_NAME"), "driver": env.get("DRIVER"),
    "device_tests": {"rc": rc("TESTS_RC"), "passed": rc("TESTS_RC") == 0, "summary": env.get("TESTS_LINE")},
    "vlk_bench_rc": rc("VLK_RC"), "torch_bench_rc": rc("TORCH_RC"),
    "copy_gbps": copy_gbps, "copy_gbps_from": copy_src if copy_gbps else None, "speedup_definition": "torch_ms / vlk_ms (>1: vlk faster)",
    "rows": merged, "notes": errors,
}
with open(res_path, "w") as fh:
    json.dump(result, fh, indent=1)
    fh.write("\n")
print(f"merged {len(merged)} workloads ({len(vlk_rows)} vlk rows, {len(torch_rows)} torch rows) -> {res_path}")
PY
merge_rc=$?

echo
echo "SUMMARY: device tests $(verdict "$tests_rc") [${tests_line%%$'\n'*}]; vlk bench $(verdict "$vlk_rc");" \
     "torch bench $(verdict "$torch_rc"); merge $(verdict "$merge_rc"); $((SECONDS - start_s)) s; files in $out"
[ "$tests_rc" -eq 0 ] || exit 1
exit 0
