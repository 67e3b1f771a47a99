#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one call (< 8 min on one modern GPU), into ONE JSON file:
#   1. bf16 train step of the full-size architecture, frozen (paper) vs frozen + feature cache  (bench_train_step.py)
#   2. embedding throughput of embed_dataset, full-size, bf16 autocast                           (bench_embed.py --full)
#   3. faiss-gpu search at 1M x 512: flat and IVF, queries/s and recall@10                       (bench_faiss_gpu.py)
#
#   bash benchmarks/gpu_suite.sh [OUT.json]          # default benchmarks/results/gpu_suite.json
#   bash benchmarks/gpu_suite.sh --dry-run [OUT]     # CPU, tiny sizes: checks the plumbing, not the figures
#
# Without a CUDA GPU (and not --dry-run) it stops at once with exit code 2 and one line. A step that fails or
# runs past its time limit is recorded in the JSON with its exit code and the tail of its log; the others run.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-benchmarks/results/gpu_suite.json}
PY=${PYTHON:-python}
if [ "$DRY" = 0 ]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_suite: error: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a GPU machine, or --dry-run" >&2
    exit 2
  fi
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_suite.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)

step() {  # name, time limit (s), command...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))" >>"$WORK/steps.txt"
  echo "[gpu_suite] $name: exit $rc after $(( $(date +%s) - t0 )) s"
}

if [ "$DRY" = 1 ]; then
  step train_step 900 "$PY" benchmarks/bench_train_step.py --device cpu --batch-size 2 --text-length 16 --steps 1 \
       --warmup 0 --skip-naive --studies 8 --output "$WORK/train_step.json"
  step embed 600 "$PY" benchmarks/bench_embed.py --device cpu --studies 16 --batch-size 8 --repeats 1 \
       --output "$WORK/embed.json"
  step faiss_gpu 300 "$PY" benchmarks/bench_faiss_gpu.py --cpu --rows 20000 --queries 500 --output "$WORK/faiss_gpu.json"
else
  # time limits add up to 7 min (under 8 with start-up): a hung step cannot hold the lent GPU
  step train_step 210 "$PY" benchmarks/bench_train_step.py --device cuda --batch-size 32 --steps 5 --warmup 2 \
       --output "$WORK/train_step.json"
  step embed 120 "$PY" benchmarks/bench_embed.py --full --device cuda --studies 256 --batch-size 64 --repeats 1 \
       --output "$WORK/embed.json"
  step faiss_gpu 90 "$PY" benchmarks/bench_faiss_gpu.py --output "$WORK/faiss_gpu.json"
fi

"$PY" - "$WORK" "$OUT" "$DRY" "$START" <<'PY'
import json, os, platform, subprocess, sys, time
from pathlib import Path

work, out, dry, start = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
steps = {}
for line in (work / "steps.txt").read_text().splitlines():
    name, rc, seconds = line.split()
    result = work / f"{name}.json"
    log = (work / f"{name}.log").read_text(errors="replace")
    steps[name] = {"exit_code": int(rc.split("=")[1]), "seconds": int(seconds),
                   "result": json.loads(result.read_text()) if result.is_file() else None,
                   "log_tail": log[-2000:] if int(rc.split("=")[1]) else None}
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    gpu = None
payload = {"benchmark": "gpu_suite", "dry_run": dry, "wall_s": int(time.time()) - start, "gpu": gpu,
           "host": platform.node(), "platform": platform.platform(), "steps": steps}
out.parent.mkdir(parents=True, exist_ok=True)
tmp = out.with_name(f".{out.name}.tmp")
tmp.write_text(json.dumps(payload, indent=2) + "\n")
os.replace(tmp, out)
print(f"[gpu_suite] {len(steps)} steps, {payload['wall_s']} s -> {out}")
sys.exit(0 if all(s["exit_code"] == 0 for s in steps.values()) else 1)
PY
