"""A training run's settings (TrainConfig) and what they resolve to (RunPlan), checked before
TensorFlow starts: bad input is refused in well under a second instead of after the few
seconds TensorFlow takes to load, so this module and its imports stay free of it.

Every default that depends on the configuration (schedule, batch normalisation, init,
target_dist) is read from the configuration's recipe (model.recipes).
"""
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model import network
from model.augment import EFFECT_STAGES, AugmentParams
from model.domains import NORMAL, TRAINED_MODELS
from model.errors import UserError
from model.files import ensure_writable_dir
from model.hdf5 import Hdf5Samples
from model.paths import expert_weights_dir
from model.recipes import get_recipe
from model.schedules import get_schedule
from model.state import run_signature

DISTRIBUTE = ("none", "mirrored", "multiworker")
INITS = ("auto", "caffe", "he")
# --mixed_precision: False (float32), or the compute dtype of Keras' mixed policy. float16
# trains with dynamic loss scaling; bfloat16 has float32's exponent range and needs none.
MIXED_PRECISION = ("false", "float16", "bfloat16")
KERAS_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
# Old command lines and configurations: "true" (and True) meant float16.
_PRECISION_ALIASES = {**dict.fromkeys(("true", "t", "1", "yes", "y", "on", "mixed_float16"),
                                      "float16"),
                      **dict.fromkeys(("f", "0", "no", "n", "off", "none"), "false"),
                      "mixed_bfloat16": "bfloat16"}


def resolve_mixed_precision(value):
    """False, "float16" or "bfloat16" for a --mixed_precision value (True and "true" are
    float16); UserError for anything else."""
    if value is None or value is False:
        return False
    text = "float16" if value is True else _PRECISION_ALIASES.get(str(value).strip().lower(),
                                                                  str(value).strip().lower())
    if text not in MIXED_PRECISION:
        raise UserError(f"unknown --mixed_precision {value!r}; choose from "
                        f"{', '.join(MIXED_PRECISION)}")
    return False if text == "false" else text


@dataclass
class TrainConfig:
    """Everything a run depends on (the command line's flags)."""
    config: str = "small"
    effect: str = NORMAL               # an expert's effect, or MIXED (the generalist)
    effect_stage: str = "source"       # effect on the source image or on the crop (augment)
    epochs: int = 10
    batch_size: int = 10
    schedule: str = "auto"
    lr: float = None
    weight_decay: float = None
    seed: int = 0
    steps_per_epoch: int = 0           # 0: one pass over the training data per epoch
    workers: int = 1
    mixed_precision: object = False    # False, "float16" or "bfloat16" (True = float16)
    distribute: str = "none"
    collective_timeout: float = 300.0  # multiworker: seconds to wait for the cluster / a peer
    devices: list = None               # MirroredStrategy devices (default: all GPUs)
    weights: str = None                # initial weights (Keras file, converted CMU, VGG19)
    train_hdf5: str = None
    val_hdf5: str = None
    out_dir: str = None
    save_every: int = 1000             # iterations between mid-epoch states (0: epoch ends)
    resume: bool = True
    augment: bool = True
    init: str = "auto"                 # see resolve_init
    batch_norm: object = "auto"        # True, False or "auto" (see resolve_batch_norm)
    input_norm: str = "folded"         # conv1_1's parametrisation (model.network.INPUT_NORMS)
    target_dist: float = None          # see augment_params
    tensorboard: bool = True
    progress: bool = True


@dataclass(frozen=True)
class RunPlan:
    """A TrainConfig resolved once by check_inputs."""
    network: network.PoseConfig
    schedule: object                   # model.schedules.Schedule
    batch_norm: bool
    init: str                          # "caffe" or "he"
    augment: AugmentParams
    signature: dict                    # model.state.run_signature
    out_dir: Path
    train_samples: Hdf5Samples
    val_samples: Hdf5Samples


def resolve_schedule(name, config):
    """The Schedule of --schedule; "auto" (or empty) = the configuration's recipe's."""
    if name in (None, "", "auto"):
        name = get_recipe(network.get_config(config)).schedule
    return get_schedule(name)


def resolve_batch_norm(batch_norm, config):
    """True/False as given; "auto"/None: the configuration's recipe's."""
    if batch_norm in (None, "auto"):
        return get_recipe(network.get_config(config)).batch_norm
    return bool(batch_norm)


def resolve_init(init, config, weights):
    """"caffe" (normal 0.01 + ImageNet VGG19 when found) or "he"; "auto" = the recipe's, whose
    "auto" is: caffe when initial weights are given or VGG19 fits and is found, else he."""
    if init not in INITS:
        raise UserError(f"unknown --init {init!r}; choose from {', '.join(INITS)}")
    if init == "auto":
        init = get_recipe(network.get_config(config)).init
    if init != "auto":
        return init
    if weights is not None:
        return "caffe"
    cfg = network.get_config(config)
    return "caffe" if cfg.width == 1.0 and network.find_vgg19_weights() else "he"


def augment_params(config, target_dist=None, effect_stage="source"):
    """Augmentation of a configuration: docs/recipe.md section 5 at its crop size, the main
    person scaled to `target_dist` (default: the recipe's) of the crop, the effect at
    `effect_stage` (model.augment.EFFECT_STAGES)."""
    cfg = network.get_config(config)
    if target_dist is None:
        target_dist = get_recipe(cfg).target_dist
    return AugmentParams(crop_size=cfg.input_size, target_dist=float(target_dist),
                         effect_stage=effect_stage)


def probe_writable(folder):
    """UserError unless a file can really be created in `folder` (root ignores mode bits,
    so os.access alone says yes on a read-only mount)."""
    folder = ensure_writable_dir(folder)   # a file in the way, no permission: one line
    try:
        fd, name = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UserError(f"checkpoint folder {folder} is not writable: "
                        f"{e.strerror or e}") from None
    return folder


def _check_flags(cfg):
    """The checks that need no file."""
    if cfg.effect not in TRAINED_MODELS:
        raise UserError(f"unknown effect {cfg.effect!r}; choose from {TRAINED_MODELS}")
    if cfg.effect_stage not in EFFECT_STAGES:
        raise UserError(f"unknown --effect_stage {cfg.effect_stage!r}; choose from "
                        f"{', '.join(EFFECT_STAGES)}")
    for name in ("epochs", "batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.steps_per_epoch < 0 or cfg.save_every < 0 or cfg.workers < 0:
        raise UserError("--steps_per_epoch, --save_every and --workers must be >= 0")
    if cfg.lr is not None and not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be a positive number, got {cfg.lr}")
    cfg.mixed_precision = resolve_mixed_precision(cfg.mixed_precision)
    if cfg.distribute not in DISTRIBUTE:
        raise UserError(f"unknown --distribute {cfg.distribute!r}; choose from {DISTRIBUTE}")
    if not (cfg.collective_timeout > 0 and math.isfinite(cfg.collective_timeout)):
        raise UserError(f"--collective_timeout must be a positive number of seconds, got "
                        f"{cfg.collective_timeout}")
    if cfg.distribute == "multiworker":
        check_tf_config(os.environ.get("TF_CONFIG"))


def check_tf_config(text):
    """The TF_CONFIG of a multi-worker run, parsed and checked (UserError naming what is
    wrong): {"cluster": {"worker": ["host:port", ...], ...}, "task": {"type", "index"}}."""
    if not text:
        raise UserError("--distribute multiworker needs the TF_CONFIG environment variable "
                        "(cluster and this worker's task); see README")
    try:
        tf_config = json.loads(text)
    except ValueError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UserError('TF_CONFIG has no "cluster" (e.g. {"worker": ["host1:12345", '
                        '"host2:12345"]})')
    for job, tasks in cluster.items():
        if (not isinstance(tasks, list) or not tasks
                or not all(isinstance(t, str) and t.rpartition(":")[2].isdigit() for t in tasks)):
            raise UserError(f'TF_CONFIG cluster job "{job}" must list "host:port" addresses, '
                            f"got {tasks!r}")
    task = tf_config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise UserError('TF_CONFIG has no "task" with "type" and "index" (this process\'s '
                        'place in the cluster, e.g. {"type": "worker", "index": 0})')
    job, index = task["type"], task["index"]
    if job not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[job]):
        raise UserError(f"TF_CONFIG task {job!r} {index!r} is not in its cluster "
                        f"({', '.join(f'{j}: {len(t)}' for j, t in cluster.items())})")
    return tf_config


def _open_data(cfg):
    """(train samples, val samples) of the run's HDF5 files, checked against the flags."""
    for what, p in (("training", cfg.train_hdf5), ("validation", cfg.val_hdf5)):
        if p is None or not Path(p).is_file():
            raise UserError(f"{what} HDF5 not found: {p} (write it with "
                            "training/generate_hdf5_coco2014.py, or pass --hdf5_dir)")
    train = Hdf5Samples(cfg.train_hdf5)
    val = Hdf5Samples(cfg.val_hdf5)
    if cfg.batch_size > len(train):
        raise UserError(f"--batch_size {cfg.batch_size} is larger than the training data "
                        f"({len(train)} samples in {cfg.train_hdf5})")
    if len(val) == 0:
        raise UserError(f"the validation HDF5 {cfg.val_hdf5} has no samples")
    return train, val


def check_inputs(cfg):
    """Every check that needs no TensorFlow, before anything is built (UserError on bad
    input); returns the RunPlan."""
    pcfg = network.get_config(cfg.config)
    schedule = resolve_schedule(cfg.schedule, pcfg)
    init = resolve_init(cfg.init, pcfg, cfg.weights)
    _check_flags(cfg)
    network.check_input_norm(cfg.input_norm)
    train, val = _open_data(cfg)
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise UserError(f"--weights file not found: {cfg.weights}")
    out = Path(cfg.out_dir) if cfg.out_dir else expert_weights_dir(cfg.effect)
    probe_writable(out)
    batch_norm = resolve_batch_norm(cfg.batch_norm, pcfg)
    params = augment_params(pcfg, cfg.target_dist, cfg.effect_stage)
    signature = dict(run_signature(cfg, pcfg, schedule, batch_norm, params.target_dist),
                     input_norm=cfg.input_norm)
    return RunPlan(pcfg, schedule, batch_norm, init, params, signature, out, train, val)
