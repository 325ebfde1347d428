"""The training run behind train.py: configuration, resume, epochs, checkpoints and logs."""
import logging
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from model import files, paths
from model.errors import UserError
from model.recipes import FORK_CLASSIFIER
from train_domain_classifier import data, engine, runs
from train_domain_classifier.network import build_classifier, load_model_state

log = logging.getLogger("domain_classifier")

# The fork's recipe (docs/recipe.md section 7, model.recipes.FORK_CLASSIFIER). A resumed run
# keeps all of these from its checkpoint; giving one that differs is an error that names it.
# input_mode "resize" is the fork's whole-image resize; "crop" is this project's addition
# (see data.py), view_size its whole-image size (0 = 2 x input_size).
RECIPE = {"arch": FORK_CLASSIFIER.arch, "input_size": FORK_CLASSIFIER.input_size,
          "input_mode": FORK_CLASSIFIER.input_mode, "view_size": 0,
          "batch_size": FORK_CLASSIFIER.batch_size, "lr": FORK_CLASSIFIER.lr,
          "weight_decay": FORK_CLASSIFIER.weight_decay,
          "milestones": list(FORK_CLASSIFIER.milestones), "gamma": FORK_CLASSIFIER.gamma,
          "val_fraction": FORK_CLASSIFIER.val_fraction, "max_images": 0, "seed": 0}
# Settings a resumed run may change (more epochs, other workers, data moved elsewhere).
FREE = {"epochs": FORK_CLASSIFIER.epochs, "workers": 2,
        "coco_root": str(paths.DEFAULT_COCO_ROOT), "log_dir": str(paths.DOMAIN_LOG_DIR),
        "cache_dir": None, "keep_last": 0, "device": "auto", "pretrained": "auto"}
CSV_HEADER = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
              "seconds"]


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def resolve_config(given, resume=None):
    """Full configuration from the flags given (None = not given) and a resumed checkpoint.

    Returns (config, checkpoint state or None, checkpoint path or None)."""
    given = {k: _plain(v) for k, v in given.items()}
    state = path = None
    if resume is not None:
        path, _ = runs.resolve_checkpoint(resume, given.get("log_dir") or FREE["log_dir"],
                                          prefer_best=False)
        state = runs.load_checkpoint(path)
        stored = state.get("config", {})
        runs.check_arch(state, given.get("arch"), path)
        config = {}
        for key, default in RECIPE.items():
            value = stored.get(key, default)
            if given.get(key) is not None and given[key] != value:
                raise UserError(f"--{key} {given[key]} differs from the resumed run's {value} "
                                f"({path}); leave it out to continue that run")
            config[key] = value
        for key, default in FREE.items():
            config[key] = given[key] if given.get(key) is not None else stored.get(key, default)
    else:
        config = {k: given[k] if given.get(k) is not None else v for k, v in RECIPE.items()}
        config.update({k: given[k] if given.get(k) is not None else v for k, v in FREE.items()})
    if config["epochs"] < 1 or config["batch_size"] < 1 or config["input_size"] < 16:
        raise UserError("--epochs and --batch_size must be >= 1 and --input_size >= 16")
    if config["input_mode"] == "resize" and config["view_size"] not in (0, config["input_size"]):
        raise UserError("--view_size applies to --input_mode crop only")
    # Stored resolved, so a checkpoint names the size its network is validated at.
    config["view_size"] = data.resolve_view_size(config["input_mode"], config["input_size"],
                                                 config["view_size"])
    return config, state, path


def summary_writer(folder, purge_step):
    # torch.utils.tensorboard imports the tensorboard package, which loads all of TensorFlow
    # (seconds and hundreds of MB per process) unless its "no TensorFlow" marker module exists;
    # event files are written the same either way.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(folder), purge_step=purge_step)


def prepare_data(config, d):
    """Split, caches (built once per node, see _node_caches) and the two datasets."""
    start = time.time()
    refs = data.load_image_refs(config["coco_root"], data.TRAIN_SPLIT)
    train_refs, val_refs = data.split_images(refs, config["val_fraction"], config["seed"],
                                             config["max_images"])
    cache_dir = Path(config["cache_dir"] or Path(config["log_dir"]) / "cache")
    size, mode = config["input_size"], config["input_mode"]
    train_size = data.cache_size(mode, size, config["view_size"], train=True)
    val_size = data.cache_size(mode, size, config["view_size"], train=False)
    (train_npy, train_ok), (val_npy, val_ok) = _node_caches(
        d, lambda build: [data.open_cache(train_refs, train_size, cache_dir, config["workers"],
                                          build, "training images"),
                          data.open_cache(val_refs, val_size, cache_dir, config["workers"],
                                          build, "validation images")])
    if not train_ok.any() or not val_ok.any():
        raise UserError("no decodable images left for training or validation")
    train_ds = data.EffectDataset(train_npy, np.flatnonzero(train_ok), size, train=True,
                                  input_mode=mode)
    val_ds = data.EffectDataset(val_npy, np.flatnonzero(val_ok), size, train=False,
                                input_mode=mode)
    split = {"seed": config["seed"], "val_fraction": config["val_fraction"],
             "train_image_ids": [r.image_id for r, ok in zip(train_refs, train_ok) if ok],
             "val_image_ids": [r.image_id for r, ok in zip(val_refs, val_ok) if ok],
             "skipped_image_ids": [r.image_id for r, ok in zip(train_refs + val_refs,
                                                               np.r_[train_ok, val_ok]) if not ok]}
    log.info("data: %d training images (%d samples), %d validation images (%d samples), "
             "%d skipped, %.1f s", len(split["train_image_ids"]), len(train_ds),
             len(split["val_image_ids"]), len(val_ds), len(split["skipped_image_ids"]),
             time.time() - start)
    return train_ds, val_ds, split


def _node_caches(d, open_caches):
    """open_caches(build) on every process, each node's caches built once.

    Global rank 0 builds first while every other process waits; then the first process of
    every other node (LOCAL_RANK 0) opens them, building them if its node does not see rank
    0's files (a --log_dir or --cache_dir per host, no shared file system), while that node's
    other processes wait; then they memory-map them. A single process just builds or opens."""
    if not d.active:
        return open_caches(True)
    caches = open_caches(True) if d.main else None
    engine.barrier(d)
    if d.local_main and not d.main:
        caches = open_caches(True)
    engine.barrier(d)
    return caches if caches is not None else open_caches(False)


def train(config, state=None, resume_path=None):
    d = engine.setup_distributed(config["device"])
    try:
        return _train(config, state, resume_path, d)
    finally:
        engine.cleanup_distributed(d)


def _train(config, state, resume_path, d):
    started = time.time()
    seed = config["seed"]
    torch.manual_seed(seed)
    run_dir = _run_dir(config, state, resume_path, d)
    train_ds, val_ds, split = prepare_data(config, d)

    # Building the image cache draws from torch's RNG (DataLoader base seeds): reseed, so the
    # initial weights do not depend on whether the cache already existed.
    torch.manual_seed(seed)
    model = build_classifier(config["arch"], "none" if state else config["pretrained"])
    if state is not None:
        load_model_state(model, state["model"], resume_path)
    model.to(d.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"],
                                  weight_decay=config["weight_decay"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, config["milestones"],
                                                     gamma=config["gamma"])
    start_epoch, history, best = _start_or_resume(config, state, resume_path, run_dir, split,
                                                  optimizer, scheduler, d)
    if start_epoch >= config["epochs"]:
        log.info("nothing to do: the run already has %d epochs", start_epoch)
        return run_dir
    loop = _EpochLoop(config, d, run_dir, model, optimizer, scheduler, history, best)
    loop.start(train_ds, val_ds, start_epoch)
    for epoch in range(start_epoch + 1, config["epochs"] + 1):
        loop.run_epoch(epoch)
    loop.finish()
    engine.check_same_weights(d, model)
    best = loop.best
    log.info("done in %.1f s: best epoch %d, validation accuracy %.4f, loss %.4f (%s)",
             time.time() - started, best["epoch"], best["val_accuracy"], best["val_loss"],
             run_dir / best["checkpoint"])
    return run_dir


def _run_dir(config, state, resume_path, d):
    """The resumed run's folder (its stale temporary files removed), or a new one."""
    if state is not None:
        run_dir = runs.run_dir_of(resume_path)
        if d.main:  # a kill during a write leaves its temporary file behind
            for folder in (run_dir, run_dir / "checkpoints"):
                files.remove_stale_temporaries_in(folder)
    else:
        run_dir = engine.broadcast_object(d, runs.new_run_dir(config["log_dir"]) if d.main
                                          else None)
    return Path(run_dir)


def _start_or_resume(config, state, resume_path, run_dir, split, optimizer, scheduler, d):
    """(epochs done, history, best): a resumed run's, with its optimizer and schedule restored;
    for a new run nothing, after writing its config.json and split.json."""
    if state is None:
        if d.main:
            files.write_json(run_dir / "config.json", dict(config, world_size=d.world), indent=1)
            files.write_json(run_dir / "split.json", split)
        return 0, [], None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    start_epoch, history, best = state["epoch"], list(state["history"]), state.get("best")
    log.info("resumed %s at epoch %d of %d", resume_path, start_epoch, config["epochs"])
    if d.main and best is not None:  # best.json may name an epoch of the abandoned future
        files.write_json(run_dir / runs.BEST_FILE, best, indent=1)
    return start_epoch, history, best


class _EpochLoop:
    """The epochs of a run: train, validate, step the schedule, then (rank 0) checkpoint,
    best.json, log.csv, TensorBoard and pruning."""

    def __init__(self, config, d, run_dir, model, optimizer, scheduler, history, best):
        self.config, self.d, self.run_dir = config, d, run_dir
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.history, self.best = history, best
        self.net = model
        if d.active:
            self.net = DistributedDataParallel(
                model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)

    def start(self, train_ds, val_ds, start_epoch):
        config, d, seed = self.config, self.d, self.config["seed"]
        self.sampler = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank,
                                          shuffle=True, seed=seed)
        self.generator = torch.Generator()
        # Dropping the ragged last batch avoids a 1-sample BatchNorm batch; kept when it is all.
        self.train_loader = engine.make_loader(
            train_ds, config["batch_size"], config["workers"], self.sampler, self.generator,
            drop_last=len(self.sampler) >= config["batch_size"])
        self.val_loader = engine.make_loader(engine.shard(val_ds, d), config["batch_size"],
                                             config["workers"])
        self.criterion = engine.make_criterion()
        self.writer = (summary_writer(self.run_dir / "tensorboard", start_epoch + 1)
                       if d.main else None)
        log.info("training %s at %d px (%s%s) on %s x %d process(es), batch %d per process, "
                 "epochs %d..%d, seed %d -> %s", config["arch"], config["input_size"],
                 config["input_mode"], f" of a {config['view_size']} px view"
                 if config["input_mode"] == "crop" else "", d.device.type, d.world,
                 config["batch_size"], start_epoch + 1, config["epochs"], seed, self.run_dir)

    def run_epoch(self, epoch):
        t0 = time.time()
        self.sampler.set_epoch(epoch)
        s = engine.epoch_seed(self.config["seed"], epoch, self.d.rank)
        self.generator.manual_seed(s)
        torch.manual_seed(s)
        lr = self.optimizer.param_groups[0]["lr"]
        tr = engine.train_one_epoch(self.net, self.train_loader, self.criterion, self.optimizer,
                                    self.d, desc=f"epoch {epoch}")
        engine.sync_buffers(self.model, self.d)
        va = engine.evaluate(self.model, self.val_loader, self.d)
        self.scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": tr["loss"],
               "train_accuracy": tr["accuracy"], "val_loss": va["loss"],
               "val_accuracy": va["accuracy"], "seconds": round(time.time() - t0, 3),
               "train_samples": tr["samples"], "val_samples": va["samples"]}
        self.history.append(row)
        ckpt = runs.checkpoint_path(self.run_dir, epoch)
        best = self.best
        improved = best is None or (va["accuracy"], -va["loss"]) > (best["val_accuracy"],
                                                                     -best["val_loss"])
        if improved:
            self.best = {"epoch": epoch, "val_accuracy": va["accuracy"], "val_loss": va["loss"],
                         "checkpoint": str(ckpt.relative_to(self.run_dir)),
                         "seed": self.config["seed"]}
        if self.d.main:
            self._save(epoch, row, va, ckpt, improved)
        log.info("epoch %d/%d  lr %.1e  train loss %.4f acc %.4f  val loss %.4f acc %.4f  "
                 "%.1f s -> %s%s", epoch, self.config["epochs"], lr, tr["loss"],
                 tr["accuracy"], va["loss"], va["accuracy"], row["seconds"], ckpt.name,
                 " (best)" if improved else "")

    def _save(self, epoch, row, va, ckpt, improved):
        config, run_dir = self.config, self.run_dir
        runs.save_checkpoint(ckpt, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch, "arch": config["arch"],
            "input_size": config["input_size"], "input_mode": config["input_mode"],
            "view_size": config["view_size"], "seed": config["seed"],
            "classes": list(data.CLASS_NAMES), "config": config, "history": self.history,
            "best": self.best, "val": va})
        if improved:
            files.write_json(run_dir / runs.BEST_FILE, self.best, indent=1)
        files.write_csv(run_dir / "log.csv",
                        [[r[k] for k in CSV_HEADER] for r in self.history], CSV_HEADER)
        for key in CSV_HEADER[1:-1]:
            self.writer.add_scalar(key.replace("_", "/", 1), row[key], epoch)
        self.writer.flush()
        _prune(run_dir, config["keep_last"], self.best["epoch"])

    def finish(self):
        if self.writer is not None:
            self.writer.close()


def _prune(run_dir, keep_last, best_epoch):
    if keep_last <= 0:
        return
    found = runs.list_checkpoints(run_dir)
    for epoch, path in found[:-keep_last]:
        if epoch != best_epoch:
            path.unlink(missing_ok=True)
