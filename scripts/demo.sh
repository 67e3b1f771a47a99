#!/usr/bin/env bash
# Install everything (venv, pinned torch, the package) and run the offline demo: phantom data ->
# composite-loss fine-tuning -> FAISS indexes -> both-direction retrieval -> metrics and t-SNE plots.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. "${CXR_MTCLIP_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cxr-mtclip demo --output-dir "${CXR_MTCLIP_DEMO_DIR:-demo_output}" "$@"
