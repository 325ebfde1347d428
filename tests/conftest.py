"""Test-wide settings: caches inside the repo, quiet TensorFlow, a small synthetic COCO."""
import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
for var, sub in (("KERAS_HOME", "keras"), ("TORCH_HOME", "torch"), ("MPLCONFIGDIR", "matplotlib")):
    os.environ.setdefault(var, str(_REPO / ".cache" / sub))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
