#!/usr/bin/env bash
# The prepared GPU check: the CUDA tests and the realistic-size benchmark on one GPU, figures in one JSON file.
#
#   bash benchmarks/gpu_check.sh                      # writes $OUT/gpu_check.json (or outputs/gpu_check.json)
#   bash benchmarks/gpu_check.sh /path/to/figures.json
#   DEVICE=cpu bash benchmarks/gpu_check.sh --quick   # the CPU fallback: checks the script itself in ~2 minutes
#
# Fits in 8 minutes on one GPU and downloads nothing but packages: the models are random, built from configs.
# Python: the repo's .venv if it has torch, else the system python if it imports torch (and the project's
# dependencies), else a venv made here on top of the system's site-packages (so a CUDA torch found there is
# kept) with `pip install -e .[test]`, which needs a package registry.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
FILE=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) FILE="$arg" ;;
  esac
done
FILE="${FILE:-${OUT:-outputs}/gpu_check.json}"
mkdir -p "$(dirname "$FILE")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

has() { "$1" -c "import torch, transformers, gymnasium, textenv, pytest" >/dev/null 2>&1; }
PY=""
for candidate in .venv/bin/python python3 python; do
  if command -v "$candidate" >/dev/null 2>&1 && has "$candidate"; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  echo "== no python with the project's dependencies: making .gpu-venv (system site-packages kept)"
  python3 -m venv --system-site-packages .gpu-venv
  .gpu-venv/bin/pip install -q -e ".[test]"
  PY=.gpu-venv/bin/python
fi
"$PY" -c "import peft" >/dev/null 2>&1 || "$PY" -m pip install -q "peft>=0.21" || echo "== peft missing: LoRA parts skip"

DEVICE="${DEVICE:-$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}"
"$PY" - "$DEVICE" > "$WORK/device.json" <<'EOF'
import json, sys, torch
dev = sys.argv[1]
info = {"device": dev, "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
if dev == "cuda":
    info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
print(json.dumps(info))
EOF
echo "== device: $(cat "$WORK/device.json")"

echo "== CUDA tests (pytest -k cuda; they skip without a GPU)"
set +e
timeout 240 "$PY" -m pytest -q -k cuda tests/ -p no:cacheprovider 2>&1 | tee "$WORK/tests.log" | tail -15
TESTS_RC=${PIPESTATUS[0]}
set -e

if [ "$QUICK" = 1 ]; then
  BENCH=(--layers 2 --num-envs 4 --new-tokens 4 --reps 1)
else
  BENCH=(--num-envs 16 --reps 3)
fi
THREADS=1
[ "$DEVICE" = cuda ] && THREADS=0
echo "== realistic-size benchmark on $DEVICE: ${BENCH[*]}"
set +e
timeout 330 "$PY" benchmarks/bench_realistic.py --device "$DEVICE" --threads "$THREADS" "${BENCH[@]}" \
  --out "$WORK/bench.json" 2>&1 | grep -v -E "Loading weights|Writing model shards" | tee "$WORK/bench.log" | tail -25
BENCH_RC=${PIPESTATUS[0]}
set -e

"$PY" - "$WORK" "$FILE" "$TESTS_RC" "$BENCH_RC" "$QUICK" <<'EOF'
import json, re, sys
from pathlib import Path
work, out, tests_rc, bench_rc, quick = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
log = (work / "tests.log").read_text()
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", log)}
bench = work / "bench.json"
figures = {"device": json.loads((work / "device.json").read_text()), "quick": quick,
           "cuda_tests": {"returncode": tests_rc, **counts},
           "benchmark": json.loads(bench.read_text()) if bench.exists() else None,
           "benchmark_returncode": bench_rc,
           "benchmark_log_tail": (work / "bench.log").read_text()[-3000:]}
out.write_text(json.dumps(figures, indent=2))
print(f"== figures written to {out}")
EOF
[ "$TESTS_RC" = 0 ] || [ "$TESTS_RC" = 5 ] || { echo "== CUDA tests failed (rc $TESTS_RC)"; exit 1; }
[ "$BENCH_RC" = 0 ] || { echo "== benchmark failed (rc $BENCH_RC)"; exit 1; }
