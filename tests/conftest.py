"""Test-wide settings: caches inside the repo, quiet TensorFlow, a small synthetic COCO."""
import importlib.util
import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
for var, sub in (("KERAS_HOME", "keras"), ("TORCH_HOME", "torch"), ("MPLCONFIGDIR", "matplotlib")):
    os.environ.setdefault(var, str(_REPO / ".cache" / sub))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


import pytest  # noqa: E402

from model.synthetic import generate_dataset  # noqa: E402  (after the environment above)

SYNTHETIC_TRAIN, SYNTHETIC_VAL, SYNTHETIC_SEED = 24, 16, 0


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory):
    """A small synthetic mini-COCO, generated once per session; returns its coco_root (Path).

    images/{train2014,val2014}/ and annotations/person_keypoints_{train,val}2014.json with
    24 train and 16 val images (seed 0). By construction it holds images without people,
    crowd regions (val has 3: images 3 and 13, the latter with two), people with
    num_keypoints=0 and occluded keypoints (see model.synthetic._scene_plan).
    Shared by every test of the session: treat it as read-only, copy it
    (shutil.copytree) before writing anything under it."""
    root = tmp_path_factory.mktemp("synthetic_coco")
    generate_dataset(root, num_train=SYNTHETIC_TRAIN, num_val=SYNTHETIC_VAL,
                     seed=SYNTHETIC_SEED, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def run_experiment_script():
    """run_experiment.py loaded as a module (a script, so from its file, not imported)."""
    spec = importlib.util.spec_from_file_location("run_experiment", _REPO / "run_experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
