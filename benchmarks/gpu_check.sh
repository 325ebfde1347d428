#!/usr/bin/env bash
# The GPU check in one command (BENCHMARKS.md, "GPU check"):
#
#   benchmarks/gpu_check.sh [--out results/gpu_check.json] [--budget_s 480] [--seed 0]
#                           [--env_dir .cache/gpu_check] [--dry_run]
#
# On a Linux machine with an NVIDIA GPU it makes two Python environments under --env_dir
# (reused by a rerun with the same pins): TensorFlow with CUDA (tensorflow[and-cuda], the
# version requirements.txt pins for tensorflow-cpu; onnxruntime-gpu; the other pins of
# requirements.txt) and PyTorch with CUDA (torch / torchvision at their pins, from the PyTorch
# index that matches the driver's CUDA version). The two are kept apart so that TensorFlow's
# CUDA 12 packages and torch's own CUDA packages cannot shadow one another. Then it runs
# benchmarks/gpu_check.py, which writes the one JSON file. --budget_s counts from the start,
# install included. Set TORCH_INDEX_URL to choose the PyTorch index, PYTHON the interpreter
# the environments are made from (default python3).
#
# --dry_run runs the same check on the CPU, in the current environment (.venv, or $PYTHON),
# with tiny sizes and no install. Without a GPU (nvidia-smi lists none) the script says so
# in one line and runs the dry run instead, exiting 0 when that worked. On a GPU machine the
# exit status is 1 when an environment did not install (its parts are recorded as not run).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STARTED=$(date +%s)
# The last onnxruntime-gpu built for CUDA 12 (1.27 and later are built for CUDA 13): it uses
# the CUDA 12 libraries that tensorflow[and-cuda] installs.
ORT_GPU="onnxruntime-gpu[cuda,cudnn]==1.26.0"

DRY=0
OUT="$REPO/results/gpu_check.json"
BUDGET=""
SEED=0
ENV_DIR="$REPO/.cache/gpu_check"

die() { echo "error: $*" >&2; exit 2; }
usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry_run) DRY=1 ;;
        --out|--budget_s|--seed|--env_dir)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --out) OUT="$2" ;; --budget_s) BUDGET="$2" ;; --seed) SEED="$2" ;;
                --env_dir) ENV_DIR="$2" ;;
            esac
            shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed must be a whole number, got '$SEED'"
[ -z "$BUDGET" ] || [[ "$BUDGET" =~ ^[1-9][0-9]*$ ]] \
    || die "--budget_s must be a positive whole number of seconds, got '$BUDGET'"
[ -d "$OUT" ] && die "--out $OUT is a folder, not a file"
# The first folder of --out that exists must be writable, before anything is installed.
parent="$(dirname "$OUT")"
while [ ! -e "$parent" ]; do parent="$(dirname "$parent")"; done
{ [ -d "$parent" ] && [ -w "$parent" ]; } \
    || die "cannot write --out $OUT ($parent is not a writable folder)"

export KERAS_HOME="${KERAS_HOME:-$REPO/.cache/keras}" TORCH_HOME="${TORCH_HOME:-$REPO/.cache/torch}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$REPO/.cache/matplotlib}" TF_CPP_MIN_LOG_LEVEL=2
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
CHECK=("$REPO/benchmarks/gpu_check.py" --out "$OUT" --seed "$SEED" --started "$STARTED")
[ -n "$BUDGET" ] && CHECK+=(--budget_s "$BUDGET")

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }
if [ "$DRY" = 0 ] && ! has_gpu; then
    echo "gpu_check: no NVIDIA GPU found (nvidia-smi lists none): running the CPU dry run instead"
    DRY=1
fi
if [ "$DRY" = 1 ]; then
    PY="${PYTHON:-}"
    if [ -z "$PY" ]; then
        if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
    fi
    exec "$PY" "${CHECK[@]}" --dry_run true
fi

# ---------------------------------------------------------------- the CUDA environments
pin() { sed -n "s/^$1==\([^ ;]*\).*/\1/p" "$REPO/requirements.txt" | head -1; }
# The newest CUDA the driver runs, from nvidia-smi's banner ("CUDA Version: 12.8").
driver_cuda="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -1)"
cuda_at_least() {
    awk -v have="${driver_cuda:-0.0}" -v want="$1" 'BEGIN { split(have, h, "."); split(want, w, ".")
        exit !(h[1] > w[1] || (h[1] == w[1] && h[2] >= w[2])) }'
}
if [ -n "${TORCH_INDEX_URL:-}" ]; then TORCH_INDEX="$TORCH_INDEX_URL"
elif cuda_at_least 13.0; then TORCH_INDEX="https://download.pytorch.org/whl/cu130"
elif cuda_at_least 12.8; then TORCH_INDEX="https://download.pytorch.org/whl/cu128"
else TORCH_INDEX="https://download.pytorch.org/whl/cu126"
fi

mkdir -p "$ENV_DIR" || die "cannot create --env_dir $ENV_DIR"
ENV_DIR="$(cd "$ENV_DIR" && pwd)"
grep -v -E '^(tensorflow-cpu|torch|torchvision|onnxruntime)==' "$REPO/requirements.txt" \
    > "$ENV_DIR/tf-requirements.txt"
printf 'tensorflow[and-cuda]==%s\n%s\n' "$(pin tensorflow-cpu)" "$ORT_GPU" \
    >> "$ENV_DIR/tf-requirements.txt"
# The domain classifier imports model/ (OpenCV, Pillow, h5py) besides torch.
: > "$ENV_DIR/torch-requirements.txt"
for p in numpy opencv-python-headless pillow tqdm h5py; do
    echo "$p==$(pin "$p")" >> "$ENV_DIR/torch-requirements.txt"
done

# install NAME REQUIREMENTS [pip arguments]: a venv at $ENV_DIR/NAME, skipped when its stamp
# (the requirements and arguments) matches; writes NAME.rc and NAME.seconds.
install() {
    local name="$1" reqs="$2" venv="$ENV_DIR/$1" start; shift 2
    start=$(date +%s)
    local stamp; stamp="$(cat "$reqs"; echo "$*")"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ]; then
        echo 0 > "$ENV_DIR/$name.rc"; echo 0 > "$ENV_DIR/$name.seconds"; return
    fi
    rm -f "$venv/.installed"
    local pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
    { "${PYTHON:-python3}" -m venv "$venv" \
        && { "${pip[@]}" -q --upgrade pip || true; } \
        && "${pip[@]}" -r "$reqs" "$@" \
        && printf '%s' "$stamp" > "$venv/.installed"; } > "$ENV_DIR/$name-install.log" 2>&1
    echo $? > "$ENV_DIR/$name.rc"
    echo $(( $(date +%s) - start )) > "$ENV_DIR/$name.seconds"
}

TORCH_PINS=("torch==$(pin torch)" "torchvision==$(pin torchvision)")
echo "gpu_check: installing the TensorFlow and PyTorch CUDA environments in $ENV_DIR" \
     "(driver CUDA ${driver_cuda:-unknown}; torch from $TORCH_INDEX or the default index)"
install tf "$ENV_DIR/tf-requirements.txt" &
# The PyTorch index is an extra index: a pin matches its +cuXXX builds, which sort above the
# default index's build of the same version; unreachable, it is skipped after a short wait.
install torch "$ENV_DIR/torch-requirements.txt" "${TORCH_PINS[@]}" \
    --extra-index-url "$TORCH_INDEX" --timeout 30 --retries 2 &
wait

INFO="$ENV_DIR/install.txt"
{
    echo "driver_cuda=${driver_cuda:-unknown}"
    echo "torch_index=$TORCH_INDEX"
    echo "onnxruntime_gpu=$ORT_GPU"
    for name in tf torch; do
        echo "${name}_env=$ENV_DIR/$name"
        echo "${name}_install_s=$(cat "$ENV_DIR/$name.seconds")"
        log="$ENV_DIR/$name-install.log"
        if [ "$(cat "$ENV_DIR/$name.rc")" != 0 ]; then
            last="$(grep -v '^\s*$' "$log" | tail -1)"
            echo "${name}_error=the install failed, see $log: ${last:-no output}"
            echo "gpu_check: the $name environment did not install; the end of $log:" >&2
            tail -5 "$log" >&2
        fi
    done
} > "$INFO"

# An environment that did not install: its parts are skipped, python3 stands in for it.
py_of() {
    if [ "$(cat "$ENV_DIR/$1.rc")" = 0 ]; then echo "$ENV_DIR/$1/bin/python"
    else command -v python3; fi
}
TF_PY="$(py_of tf)"
# XLA finds ptxas and libdevice in the nvidia-cuda-nvcc package of tensorflow[and-cuda].
nvcc_dir="$(ls -d "$ENV_DIR"/tf/lib/python3*/site-packages/nvidia/cuda_nvcc 2>/dev/null | head -1)"
if [ -n "$nvcc_dir" ]; then
    export XLA_FLAGS="${XLA_FLAGS:---xla_gpu_cuda_data_dir=$nvcc_dir}" PATH="$nvcc_dir/bin:$PATH"
fi
"$TF_PY" "${CHECK[@]}" --tf_python "$TF_PY" --torch_python "$(py_of torch)" \
    --install_info "$INFO"
status=$?
# The JSON names what did not install; the exit status says so too.
[ "$status" = 0 ] && grep -q '_error=' "$INFO" && status=1
exit "$status"
