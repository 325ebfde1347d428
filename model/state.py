"""What a training run leaves in its folder, and the check that a state belongs to this run.

Files in the output folder (default training/weights<effect>/):
  weights.{epoch:04d}.h5  the network after each epoch, Keras 2 layout by layer name (what
                          the evaluation loads; model.network.save_weights);
  train_state.h5          the latest complete training state: every model variable, every
                          optimizer variable (iteration counter, momenta/moments, loss scale)
                          and a JSON record (epoch, batch within the epoch, iteration, the
                          run's signature, the history of finished epochs, the running sums of
                          the current epoch);
  log.csv                 one row per finished epoch, rewritten from the state's history, so a
                          resumed run never repeats a row;
  run.json                the arguments and seed of the run; logs/ TensorBoard scalars.
Every file is written to a temporary name and renamed (model.files.atomic_path): a kill at
any moment leaves the previous complete file.

The signature is what a resumed run must share with the run that wrote the state: flags that
change the sample stream or the arithmetic, and a fingerprint of the training data.
"""
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from model.errors import UserError
from model.files import atomic_path, remove_stale_temporaries_in, write_csv
from model.hdf5 import stored_params

log = logging.getLogger(__name__)

STATE_FILE = "train_state.h5"
LOG_FILE = "log.csv"
RUN_FILE = "run.json"
TENSORBOARD_DIR = "logs"
STATE_FORMAT = "pose-train-state"
STATE_VERSION = 1
CSV_HEADER = ["epoch", "iteration", "lr", "train_loss", "val_loss", "val_loss_last_stage",
              "seconds", "samples_per_s"]


@dataclass
class TrainState:
    """Where a run stands: `epoch` epochs finished, `batch` batches of epoch `epoch` done,
    `iteration` optimizer steps in all."""
    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    signature: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    running: dict = field(default_factory=lambda: {"loss_sum": 0.0, "steps": 0,
                                                   "seconds": 0.0})


def _variables_to_group(group, variables):
    for i, v in enumerate(variables):
        ds = group.create_dataset(str(i), data=np.asarray(v.numpy()))
        ds.attrs["path"] = v.path


def save_state(path, model, optimizer, state):
    """Write the complete training state atomically (model variables, optimizer variables,
    the JSON record)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = STATE_FORMAT
            f.attrs["version"] = STATE_VERSION
            f.attrs["record"] = json.dumps(asdict(state))
            _variables_to_group(f.create_group("model"), model.weights)
            _variables_to_group(f.create_group("optimizer"), optimizer.variables)
            f.flush()
            # The rename must not overtake the data: a kill or power cut right after it
            # would otherwise leave a complete-looking name over a partial file.
            os.fsync(f.id.get_vfd_handle())
    return path


def read_state_record(path):
    """The TrainState of a state file without its arrays (UserError if unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != STATE_FORMAT:
                raise UserError(f"{path} is not a training state file")
            return TrainState(**json.loads(f.attrs["record"]))
    except OSError as e:
        raise UserError(f"cannot read training state {path}: {e}") from None


def _assign_group(group, variables, what, path):
    if len(group) != len(variables):
        raise UserError(f"training state {path} has {len(group)} {what} variables, this run "
                        f"has {len(variables)}: it was written by another configuration")
    arrays = [group[str(i)][()] for i in range(len(variables))]
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != tuple(a.shape):
            raise UserError(f"training state {path}: {what} variable {v.path} has shape "
                            f"{tuple(a.shape)} in the file, {tuple(v.shape)} in this run")
    for v, a in zip(variables, arrays):
        v.assign(a)


def load_state(path, model, optimizer):
    """Restore model and optimizer variables (the optimizer must be built); returns the
    TrainState."""
    state = read_state_record(path)
    with h5py.File(path, "r") as f:
        _assign_group(f["model"], model.weights, "model", path)
        _assign_group(f["optimizer"], optimizer.variables, "optimizer", path)
    return state


def is_state_file(path):
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == STATE_FORMAT
    except OSError:
        return False


def load_state_weights(model, path):
    """The model variables of another run's train_state.h5, matched by variable path (all
    of them, batch normalisation included: how an expert warm-starts from another)."""
    with h5py.File(path, "r") as f:
        arrays = {f["model"][k].attrs["path"]: f["model"][k][()] for k in f["model"]}
    pending = []
    for v in model.weights:
        if v.path not in arrays:
            raise UserError(f"training state {path} has no variable {v.path}: it was trained "
                            "with another configuration or batch normalisation setting")
        if tuple(arrays[v.path].shape) != tuple(v.shape):
            raise UserError(f"layer {v.path.split('/')[0]}: training state {path} has "
                            f"{v.path} of shape {tuple(arrays[v.path].shape)}, the model "
                            f"expects {tuple(v.shape)}")
        pending.append((v, arrays[v.path]))
    for v, a in pending:
        v.assign(a)
    log.info("initial weights: %d variables from training state %s", len(pending), path)


def remove_stale_temporaries(folder):
    """Temporary files that killed writes left in the run folder: only those of processes
    that have exited (model.files), never a live run's (a second run started on the same
    folder, a checkpoint being written)."""
    return remove_stale_temporaries_in(folder)


def write_log(path, history):
    """log.csv: one row per finished epoch of `history` (the state's), CSV_HEADER columns."""
    write_csv(path, [[h[k] for k in CSV_HEADER] for h in history], CSV_HEADER)


# ------------------------------------------------------------------------------------------
# The run's signature

def data_fingerprint(*hdf5_files):
    """A short hash of what the training data was made from: the inputs each HDF5 file records
    (annotation files, split), or its size and time if it records none. A run resumed on rebuilt
    data would mix two datasets, and a finished one would not be retrained."""
    parts = []
    for path in hdf5_files:
        if path is None or not Path(path).is_file():
            parts.append(None)
            continue
        st = Path(path).stat()
        parts.append(stored_params(path) or [st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_signature(cfg, network, schedule, batch_norm, target_dist):
    """What a resumed run must share with the state it resumes: a TrainConfig's flags as
    resolved (network configuration, schedule, batch norm, target_dist) and the data."""
    return {"config": network.name, "effect": cfg.effect,
            "batch_size": int(cfg.batch_size), "schedule": schedule.name,
            "lr": float(schedule.base_lr if cfg.lr is None else cfg.lr),
            "weight_decay": float(schedule.weight_decay if cfg.weight_decay is None
                                  else cfg.weight_decay),
            "seed": int(cfg.seed), "steps_per_epoch": int(cfg.steps_per_epoch),
            "mixed_precision": ("float16" if cfg.mixed_precision is True
                                else cfg.mixed_precision or False),
            "augment": bool(cfg.augment), "effect_stage": cfg.effect_stage,
            "batch_norm": batch_norm, "target_dist": target_dist,
            "data": data_fingerprint(cfg.train_hdf5, cfg.val_hdf5)}


def check_resume(state, signature, state_path):
    """UserError naming every difference between a state's signature and this run's."""
    # A key the state does not record (written before the key existed) is not compared.
    recorded = dict(state.signature)
    if recorded.get("mixed_precision") is True:   # written when true meant float16
        recorded["mixed_precision"] = "float16"
    if recorded and "effect_stage" not in recorded:   # written when effects went on the crop
        recorded["effect_stage"] = "crop"
    diff = [f"{k} {recorded[k]!r} (now {v!r})" for k, v in signature.items()
            if k in recorded and recorded[k] != v]
    if diff:
        raise UserError(f"{state_path} belongs to another run: " + ", ".join(diff)
                        + "; rerun with the same flags, --resume false to start over, or "
                          "another --out_dir")
