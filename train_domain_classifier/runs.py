"""Run folders and checkpoints of the domain classifier.

Layout of one run: <log_dir>/<YYYY-MM-DD_HH-MM>/
  checkpoints/model_0001.pth ...   one file per epoch (model, optimizer, scheduler, epoch,
                                   arch, input_size, seed, classes, config, history)
  best.json                        the epoch with the best validation accuracy
  log.csv, config.json, split.json, tensorboard/
Every file is written to a temporary name and renamed, so a killed run leaves whole files.
"""
import logging
import re
import time
from pathlib import Path

import torch

from model import files
from model.errors import UserError

log = logging.getLogger("domain_classifier")

CHECKPOINT_RE = re.compile(r"^model_(\d{4,})\.pth$")
RUN_RE = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}(_\d+)?$")
BEST_FILE = "best.json"


def checkpoint_path(run_dir, epoch):
    return Path(run_dir) / "checkpoints" / f"model_{epoch:04d}.pth"


def new_run_dir(log_dir):
    """<log_dir>/<YYYY-MM-DD_HH-MM>, with _2, _3 ... if a run started in the same minute."""
    log_dir = files.ensure_writable_dir(log_dir)
    stamp = time.strftime("%Y-%m-%d_%H-%M")
    for n in range(1, 10_000):
        candidate = log_dir / (stamp if n == 1 else f"{stamp}_{n}")
        if files.create_new_dir(candidate):  # atomic: runs started together differ
            files.ensure_writable_dir(candidate / "checkpoints")
            return candidate
    raise UserError(f"too many runs named {stamp}* in {log_dir}")


def list_checkpoints(run_dir):
    """[(epoch, path)] sorted by epoch."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def save_checkpoint(path, state):
    with files.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path):
    """The checkpoint dict, loaded with weights_only=True; UserError if missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: torch raises many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"cannot read checkpoint {path} (corrupt or not a torch file): "
                        f"{type(e).__name__}: {first[:200]}") from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        raise UserError(f"{path} is not a domain classifier checkpoint (no model/arch entries)")
    return state


def check_arch(state, arch, source):
    if arch is not None and arch != state["arch"]:
        raise UserError(f"architecture mismatch: {source} holds a {state['arch']} model, "
                        f"--arch asks for {arch}")


def run_dirs(log_dir):
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return []
    return sorted(p for p in log_dir.iterdir() if p.is_dir() and RUN_RE.match(p.name))


def read_best(run_dir):
    path = Path(run_dir) / BEST_FILE
    if not path.is_file():
        return None
    best = files.read_json(path, "best-checkpoint record")
    candidate = Path(run_dir) / best.get("checkpoint", "")
    return candidate if candidate.is_file() else None


def resolve_checkpoint(spec, log_dir, prefer_best=True):
    """(checkpoint path, why) for a file, a run folder, or None = the newest run in log_dir.

    For a folder: its best checkpoint (best.json) if prefer_best, else its last one."""
    if spec is None:
        runs = [r for r in run_dirs(log_dir) if list_checkpoints(r)]
        if not runs:
            raise UserError(f"no training run with checkpoints in {log_dir}; train first or "
                            f"give --checkpoint")
        run_dir = runs[-1]
        why = f"newest run {run_dir.name}"
    else:
        spec = Path(spec)
        if spec.is_file() or spec.suffix == ".pth":
            return spec, "given"
        if not spec.is_dir():
            raise UserError(f"checkpoint or run folder not found: {spec}")
        run_dir = spec.parent if spec.name == "checkpoints" else spec
        why = f"run {run_dir.name}"
    if prefer_best and (best := read_best(run_dir)) is not None:
        return best, f"{why}, best epoch"
    found = list_checkpoints(run_dir)
    if not found:
        raise UserError(f"no checkpoints (model_NNNN.pth) in {run_dir / 'checkpoints'}")
    return found[-1][1], f"{why}, last epoch"


def run_dir_of(checkpoint):
    """The run folder of a checkpoint inside <run>/checkpoints/, else the file's folder."""
    checkpoint = Path(checkpoint)
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent
