#!/usr/bin/env bash
# Runs `vlk vqa train --data shapes` with no other flags (its defaults, a few minutes on 2 cores)
# into a temporary directory and checks that the model answers: exact match at least 60% on
# test images of seen colour-shape pairs and 50% on held-out ones (BENCHMARKS.md has the measured
# figures), a loadable model directory and a report. Usage: scripts/vqa-check.sh [path/to/vlk]
set -euo pipefail
vlk=${1:-target/release/vlk}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
start=$(date +%s)
"$vlk" vqa train --data shapes --out "$dir/run" --device cpu > "$dir/train.txt"
echo "vqa train: $(( $(date +%s) - start )) s"
cat "$dir/train.txt"
python3 - "$dir/run" <<'PY'
import json, os, sys
run = sys.argv[1]
for name in ["model/config.json", "model/model.safetensors", "model/tokenizer.json", "report/metrics.json", "report/training.png"]:
    if not os.path.getsize(os.path.join(run, name)):
        sys.exit(f"vqa: {name} is empty")
final = json.load(open(os.path.join(run, "report/metrics.json")))["summary"]["final"]
seen, held = final["seen"]["overall"]["exact_match"], final["held_out"]["overall"]["exact_match"]
if seen < 0.6 or held < 0.5:
    sys.exit(f"vqa: the model did not learn enough ({100 * seen:.1f}% / {100 * held:.1f}%; want >= 60% seen, >= 50% held-out)")
PY
