"""Every default location of the project, relative to the repository root.

Scripts run from any working directory: nothing here depends on the current directory."""
import os
from pathlib import Path

from model.domains import TEST_EFFECTS

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET_DIR = REPO_ROOT / "dataset"
DEFAULT_COCO_ROOT = DATASET_DIR / "COCO"
RESULTS_DIR = REPO_ROOT / "results"
EVAL_RESULTS_DIR = REPO_ROOT / "eval" / "results"
DOMAIN_CLASSIFIER_DIR = REPO_ROOT / "train_domain_classifier"
DOMAIN_RESULTS_DIR = DOMAIN_CLASSIFIER_DIR / "results"
DOMAIN_LOG_DIR = DOMAIN_CLASSIFIER_DIR / "log"

EVAL_BASE = "val2014_random1k"
EVAL_DATATYPES = tuple(EVAL_BASE + e for e in TEST_EFFECTS)


def annotation_file(coco_root, data_type):
    return Path(coco_root) / "annotations" / f"person_keypoints_{data_type}.json"


def image_dir(coco_root, data_type):
    return Path(coco_root) / "images" / data_type


def image_file_name(data_type, image_id):
    """COCO's file name; the domain-shifted sets keep the original val2014 names."""
    prefix = "val2014" if data_type.startswith("val2014") else data_type
    return f"COCO_{prefix}_{image_id:012d}.jpg"


def mask_dir(coco_root, split):
    """split is 'train' or 'val' -> <coco_root>/{train,val}mask2014."""
    return Path(coco_root) / f"{split}mask2014"


def hdf5_file(out_dir, split):
    return Path(out_dir) / f"{split}_dataset_2014.h5"


def expert_weights_dir(effect):
    return REPO_ROOT / "training" / f"weights{effect}"


def keras_weight_dirs():
    """Where Keras keeps downloaded weight files (e.g. ImageNet VGG19): $KERAS_HOME/models
    when KERAS_HOME is set (the Makefile and tests set it to .cache/keras), then
    ~/.keras/models."""
    dirs = [Path(os.environ["KERAS_HOME"]) / "models"] if os.environ.get("KERAS_HOME") else []
    return dirs + [Path.home() / ".keras" / "models"]
