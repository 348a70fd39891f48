#!/usr/bin/env bash
# Runs `vlk demo` at its defaults (about 6 minutes on 2 cores) into a temporary directory and
# checks that the model learned: zero-shot colour x shape accuracy at least 90% on seen pairs and
# at least 30% on held-out pairs (chance is 2.1%; the demo measures about 99% and 65%), and a
# report with both charts and metrics.json. Usage: scripts/demo-check.sh [path/to/vlk]
set -euo pipefail
vlk=${1:-target/release/vlk}
run=$(mktemp -d)/run
trap 'rm -rf "$(dirname "$run")"' EXIT
start=$(date +%s)
"$vlk" demo --device cpu --out "$run" --json > "$run.json"
echo "demo: $(( $(date +%s) - start )) s"
python3 - "$run.json" <<'PY'
import json, os, sys
summary = json.load(open(sys.argv[1]))
zs = summary["metrics"]["zero_shot"]
seen, held = zs["seen"]["colour_shape"], zs["held_out"]["colour_shape"]
t2i = summary["metrics"]["retrieval"]["text_to_image"]["r1"]
print(f"demo: seen {100 * seen:.1f}%, held-out {100 * held:.1f}%, text-to-image R@1 {100 * t2i:.1f}%")
for name in ["training.png", "zero_shot.png", "metrics.json"]:
    path = os.path.join(summary["report"], name)
    if not os.path.getsize(path):
        sys.exit(f"demo: {path} is empty")
if seen < 0.9 or held < 0.3:
    sys.exit("demo: the model did not learn enough (want >= 90% seen, >= 30% held-out)")
PY
