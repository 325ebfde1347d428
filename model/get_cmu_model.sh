#!/usr/bin/env bash
# CMU's released COCO pose model in one command: prints the weights' licence terms, downloads
# pose_iter_440000.caffemodel and its deploy prototxt (resumable), checks the MD5, converts it
# to Keras weights, checks them against OpenCV's DNN and installs them as
# training/weights/weights.0100.h5. Flags: see --help (python -m model.cmu_weights).
# Environment: CMU_MODEL_BASE_URL (a mirror holding pose_iter_440000.caffemodel),
#              CMU_PROTOTXT_URL, CMU_MODEL_MD5 (only for a model other than CMU's).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$REPO/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m model.cmu_weights "$@"
