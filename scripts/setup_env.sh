#!/usr/bin/env bash
# Create (or reuse) .venv and install cxr_mtclip with everything the demo and the tests need.
# torch/torchvision are pinned and installed first so pip never resolves an open-ended torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${CXR_MTCLIP_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
echo "[setup] installing torch==2.14.1 torchvision==0.29.1"
python -m pip install -q torch==2.14.1 torchvision==0.29.1
echo "[setup] installing cxr_mtclip[${CXR_MTCLIP_EXTRAS:-dev,hpo,dicom,demo,app}]"
python -m pip install -q -e ".[${CXR_MTCLIP_EXTRAS:-dev,hpo,dicom,demo,app}]"
