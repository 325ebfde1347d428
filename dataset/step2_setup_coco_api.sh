#!/usr/bin/env bash
# Install the COCO API (pycocotools, the version pinned in requirements.txt) from the package
# registry into the project's environment and check that it imports.
#
# Usage: dataset/step2_setup_coco_api.sh
# Environment: VENV (default <repo>/.venv), the environment to install into (create it with
#              `make install`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${VENV:-$REPO/.venv}"
PY="$VENV/bin/python"

die() { echo "error: $*" >&2; exit "${2:-1}"; }

case "${1:-}" in
    -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (see --help)" 2 ;;
esac

[[ -x "$PY" ]] || die "no Python environment at $VENV: run 'make install' first (or set VENV)"
SPEC=$(grep -E '^pycocotools==' "$REPO/requirements.txt" | head -n 1) \
    || die "requirements.txt pins no pycocotools version"
echo "installing $SPEC into $VENV"
"$PY" -m pip install -q --disable-pip-version-check "$SPEC" \
    || die "pip could not install $SPEC (is the package registry reachable?)"
"$PY" - "$SPEC" <<'PY' || die "pycocotools is installed but does not import"
import sys
from importlib.metadata import version
from pycocotools import mask  # noqa: F401  (the compiled part)
from pycocotools.coco import COCO  # noqa: F401
from pycocotools.cocoeval import COCOeval  # noqa: F401
installed = version("pycocotools")
wanted = sys.argv[1].split("==")[1]
if installed != wanted:
    sys.exit(f"pycocotools {installed} imported, but {wanted} is pinned")
print(f"pycocotools {installed} imports fine")
PY
