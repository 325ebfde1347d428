"""The domain classifier (train_domain_classifier/): model, data, train/validate/ensemble CLIs.

The CLI tests use the session's synthetic mini-COCO (copied) with evaluation sets made by
model.evalsets.make_domain_datasets; the learning test draws its own 60 images with the
synthetic generator (the demo's kind of image); a few unit tests use small textured images
made here (cheaper, and file names can be chosen freely). Scripts run as subprocesses, the
package is imported directly."""
import csv
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import evalsets, paths
from model.domains import DARK, MOTION_BLUR, NORMAL
from model.effects import darken, motion_blur
from model.errors import UserError
from model.synthetic import generate_dataset
from model.torch_compat import torchvision
from train_domain_classifier import data, engine, inference, runs, trainer
from train_domain_classifier.network import (DomainClassifier, build_classifier,
                                            load_model_state)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "train_domain_classifier"
# Shared by the tiny run, the resume test and the DDP test: a 4-convolution network at 48 px.
TINY = ["--arch", "tiny", "--input_size", "48", "--batch_size", "8", "--workers", "0",
        "--val_fraction", "0.25", "--milestones", "2", "--seed", "3"]
EVAL_IDS = [7001, 7002, 7003, 7004, 7005]


def _texture(rng, w=160, h=120):
    """Gradient background, random shapes with hard edges, sensor-like noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c, base in enumerate(rng.uniform(40, 200, 3)):
        img[..., c] = base + rng.uniform(-60, 60) * xx / w + rng.uniform(-60, 60) * yy / h
    for _ in range(rng.integers(3, 8)):
        color = rng.uniform(0, 255, 3).tolist()
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(5, 60)),
                                          y0 + int(rng.integers(5, 60))), color, -1)
        else:
            cv2.circle(img, (x0, y0), int(rng.integers(3, 30)), color, -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_split(root, data_type, entries):
    folder = paths.image_dir(root, data_type)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for image_id, name, image in entries:
        if image is None:
            (folder / name).write_bytes(b"this is not a JPEG")
        else:
            cv2.imwrite(str(folder / name), image)
        images.append({"id": image_id, "file_name": name, "width": 160, "height": 120})
    ann = paths.annotation_file(root, data_type)
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))


def run_script(name, *args, check=True, timeout=240):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd="/", env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two cores are shared with other jobs: OpenMP threads spinning against them cost several
    times the CPU time of one thread (measured: 131 s instead of 25 s for the learning test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def coco(synthetic_coco, tmp_path_factory):
    """A copy of the synthetic mini-COCO (24 train2014 images) with the four evaluation sets
    of 5 held-out val2014 images; the _dark set lists one more, undecodable, image."""
    root = tmp_path_factory.mktemp("coco") / "coco"
    shutil.copytree(synthetic_coco, root)
    evalsets.make_domain_datasets(root, num=5, seed=0)
    ann_path = paths.annotation_file(root, "val2014_random1k_dark")
    ann = json.loads(ann_path.read_text())
    ann["images"].append({"id": 2999999, "file_name": "COCO_val2014_000002999999.jpg",
                          "width": 320, "height": 320})
    ann_path.write_text(json.dumps(ann))
    (paths.image_dir(root, "val2014_random1k_dark") / "COCO_val2014_000002999999.jpg"
     ).write_bytes(b"not a JPEG")
    return root


def annotation_ids(root, data_type):
    return [im["id"] for im in json.loads(paths.annotation_file(root, data_type).read_text())["images"]]


@pytest.fixture(scope="module")
def tiny_run(coco, tmp_path_factory):
    """An uninterrupted 4-epoch run (learning rate x0.1 after epoch 2)."""
    log_dir = tmp_path_factory.mktemp("runs")
    run_script("train.py", "--coco_root", coco, "--log_dir", log_dir, "--epochs", 4, *TINY)
    (run_dir,) = runs.run_dirs(log_dir)
    return run_dir


# ----------------------------------------------------------------------------- model and loss
def test_model_returns_logits_and_loss_reaches_zero_on_a_separable_batch():
    torch.manual_seed(0)
    model = build_classifier("tiny", "none")
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())
    assert isinstance(list(model.modules())[-1], nn.Linear)
    # class = dominant colour channel: perfectly separable
    labels = torch.arange(3).repeat(4)
    images = torch.randn(12, 3, 32, 32) * 0.1
    images[torch.arange(12), labels] += 2.0
    seen = []
    ce = engine.make_criterion()
    assert isinstance(ce, nn.CrossEntropyLoss)

    def criterion(logits, target):
        seen.append(logits.detach().clone())
        return ce(logits, target)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        engine.training_step(model, images, labels, criterion, optimizer)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    loss = F.cross_entropy(logits, labels).item()
    assert loss < 0.01
    # the criterion saw raw scores, not probabilities ...
    assert seen[-1].min() < 0 or seen[-1].max() > 1
    # ... and a second softmax would have floored the loss far above it (the fork's bug)
    assert F.cross_entropy(torch.softmax(logits, 1), labels).item() > 0.5


def test_imagenet_weights_from_torch_home_or_path(tmp_path, monkeypatch, caplog):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with caplog.at_level(logging.WARNING, logger="domain_classifier"):
        build_classifier("resnet18", "auto")
    assert "random initialisation" in caplog.text and "resnet18-f37072fd.pth" in caplog.text
    reference = torchvision.models.resnet18(weights=None)
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), hub / "checkpoints" / "resnet18-f37072fd.pth")
    for spec in ("auto", hub / "checkpoints" / "resnet18-f37072fd.pth"):
        model = build_classifier("resnet18", spec)
        assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
        assert torch.equal(model.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    with pytest.raises(UserError, match="do not fit arch resnet18"):
        build_classifier("resnet18", _tiny_state_file(tmp_path))


def _tiny_state_file(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(build_classifier("tiny", "none").backbone.state_dict(), path)
    return path


# ----------------------------------------------------------------------------- data
def test_split_is_seeded_disjoint_and_never_touches_the_evaluation_sets(coco):
    refs = data.load_image_refs(coco, "train2014")
    all_ids = set(annotation_ids(coco, "train2014"))
    assert {r.image_id for r in refs} == all_ids and len(all_ids) == 24
    train, val = data.split_images(refs, 0.25, seed=0)
    ids_t, ids_v = {r.image_id for r in train}, {r.image_id for r in val}
    assert len(ids_v) == 6 and not ids_t & ids_v and ids_t | ids_v == all_ids
    assert data.split_images(refs, 0.25, seed=0) == (train, val)
    assert {r.image_id for r in data.split_images(refs, 0.25, seed=1)[1]} != ids_v
    # the evaluation sets hold val2014 images: none is a training or validation image
    for data_type in paths.EVAL_DATATYPES:
        eval_ids = set(annotation_ids(coco, data_type))
        assert len(eval_ids) >= 5 and not eval_ids & (ids_t | ids_v)
    assert all(Path(r.path).parent.name == "train2014" for r in train + val)
    sub_train, sub_val = data.split_images(refs, 0.25, seed=0, max_images=8)
    assert len(sub_train) + len(sub_val) == 8 and len(sub_val) == 2


def test_image_ids_come_from_the_annotation_file(tmp_path):
    rng = np.random.default_rng(0)
    # file names 1..5, ids 7001..7005: an id parsed from a name would be wrong
    _write_split(tmp_path, "val2014_random1k", [
        (iid, f"COCO_val2014_{k + 1:012d}.jpg", _texture(rng)) for k, iid in enumerate(EVAL_IDS)])
    refs = data.load_image_refs(tmp_path, "val2014_random1k")
    assert [r.image_id for r in refs] == EVAL_IDS
    assert Path(refs[1].path).name == "COCO_val2014_000000000002.jpg"
    model = build_classifier("tiny", "none").eval()
    results, skipped = inference.predict_eval_set(model, {"input_size": 32}, tmp_path,
                                                  "val2014_random1k")
    assert [r["image_id"] for r in results] == EVAL_IDS and skipped == 0
    # a crop-mode network is fed the whole image at its view size, as in its validation
    crop_state = {"input_size": 32, "input_mode": "crop", "view_size": 56}
    resized = results
    results, _ = inference.predict_eval_set(model, crop_state, tmp_path, "val2014_random1k")
    assert results[3]["effect_prob"] != pytest.approx(resized[3]["effect_prob"], abs=1e-5)
    x = data.normalise(torch.from_numpy(data.prepare_image(cv2.imread(refs[3].path), NORMAL, 56)
                                        ).permute(2, 0, 1))
    with torch.no_grad():
        p = torch.softmax(model(x[None]), 1)[0].tolist()
    assert results[3]["effect_prob"] == pytest.approx(p, abs=1e-5)


def test_effect_is_applied_at_full_resolution_before_resizing():
    image = _texture(np.random.default_rng(5), 320, 240)
    blurred = data.prepare_image(image, MOTION_BLUR, 64)
    expected = cv2.cvtColor(cv2.resize(motion_blur(image), (64, 64),
                                       interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.array_equal(blurred, expected)
    small_then_blur = cv2.cvtColor(motion_blur(cv2.resize(image, (64, 64),
                                                          interpolation=cv2.INTER_AREA)),
                                   cv2.COLOR_BGR2RGB)
    assert np.abs(blurred.astype(int) - small_then_blur).mean() > 2
    dark = data.prepare_image(image, DARK, 64)
    assert np.array_equal(dark, cv2.cvtColor(cv2.resize(darken(image), (64, 64),
                                             interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))


def test_cache_balanced_classes_and_undecodable_images(tmp_path, caplog):
    rng = np.random.default_rng(2)
    _write_split(tmp_path, "train2014", [(1, "a.jpg", _texture(rng)), (2, "b.jpg", None),
                                         (3, "c.jpg", _texture(rng))])
    refs = data.load_image_refs(tmp_path, "train2014")
    with caplog.at_level(logging.WARNING, logger="domain_classifier"):
        npy, ok = data.open_cache(refs, 40, tmp_path / "cache")
    assert ok.tolist() == [True, False, True]
    assert "1 of 3 images could not be decoded" in caplog.text
    stamp = npy.stat().st_mtime_ns
    assert data.open_cache(refs, 40, tmp_path / "cache")[0] == npy and npy.stat().st_mtime_ns == stamp
    cached = np.load(npy)
    assert cached.shape == (3, 3, 40, 40, 3)
    assert np.array_equal(cached[0, 1], data.prepare_image(cv2.imread(refs[0].path), DARK, 40))
    rows = np.flatnonzero(ok)
    train_ds = data.EffectDataset(npy, rows, 32, train=True)
    assert np.bincount(train_ds.labels()).tolist() == [2, 2, 2]
    x, label = train_ds[4]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == 1
    val_ds = data.EffectDataset(npy, rows, 40, train=False)
    x, label = val_ds[5]
    rgb = cached[2, 2].astype(np.float32) / 255
    expected = (rgb - data.IMAGENET_MEAN) / data.IMAGENET_STD
    assert label == 2 and np.allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_crop_mode_trains_on_unresampled_crops_and_evaluates_the_whole_view(tmp_path):
    rng = np.random.default_rng(6)
    _write_split(tmp_path, "train2014", [(1, "a.jpg", _texture(rng, 320, 240))])
    refs = data.load_image_refs(tmp_path, "train2014")
    assert data.cache_size("crop", 32, 0, train=True) == 64
    assert data.cache_size("crop", 32, 80, train=False) == 80
    assert data.cache_size("resize", 32, 0, train=True) == 40
    assert data.cache_size("resize", 32, 0, train=False) == 32
    with pytest.raises(UserError, match="smaller than --input_size"):
        data.resolve_view_size("crop", 64, 48)
    npy, ok = data.open_cache(refs, 64, tmp_path / "cache")
    view = np.load(npy)[0, 2].astype(np.float32) / 255
    view = (view - data.IMAGENET_MEAN) / data.IMAGENET_STD           # (64, 64, 3) normalised
    train_ds = data.EffectDataset(npy, [0], 32, train=True, input_mode="crop")
    mirrored = view[:, ::-1]
    windows = {(y, x, f): mirrored[y:y + 32, 32 - x:64 - x] if f else view[y:y + 32, x:x + 32]
               for y in range(33) for x in range(33) for f in (0, 1)}
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        x, label = train_ds[2]
        assert label == 2 and x.shape == (3, 32, 32)
        crop = x.permute(1, 2, 0).numpy()
        # pixel for pixel one window of the view, possibly mirrored: no resampling that
        # would widen or narrow the blur
        match = [k for k, w in windows.items() if np.allclose(crop, w, atol=1e-5)]
        assert match, "a training crop is not a window of the cached view"
        seen.add(match[0])
    assert len(seen) > 6 and {k[2] for k in seen} == {0, 1}
    x, label = data.EffectDataset(npy, [0], 32, train=False, input_mode="crop")[2]
    assert x.shape == (3, 64, 64) and np.allclose(x.permute(1, 2, 0).numpy(), view, atol=1e-5)
    # a checkpoint's mode decides what validation and prediction feed the network
    assert data.eval_size({"input_size": 32, "input_mode": "crop", "view_size": 64}) == 64
    assert data.eval_size({"input_size": 32}) == 32                  # older checkpoints: resize
    assert data.eval_size({"input_size": 32, "config": {"input_mode": "crop"}}) == 64


def test_empty_or_missing_data_is_one_clear_error(tmp_path):
    _write_split(tmp_path, "train2014", [])
    with pytest.raises(UserError, match="no images of person_keypoints_train2014.json found"):
        data.load_image_refs(tmp_path, "train2014")
    with pytest.raises(UserError, match="annotation file not found"):
        data.load_image_refs(tmp_path / "nowhere", "train2014")
    proc = run_script("train.py", "--coco_root", tmp_path, "--log_dir", tmp_path / "log",
                      *TINY, check=False)
    assert "no images of person_keypoints_train2014.json found" in error_line(proc)


# ----------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_light_backbone_learns_the_three_effects(tmp_path):
    """The demo's input (64 px crops of a 128 px view) with ResNet-18 from scratch on 40
    images of the synthetic generator (320-640 px, some defocused or shaken, which a 64 px
    whole-image resize confuses with the motion blur), validated on 60 samples (20 other
    images x 3 effects) seen whole at 128 px: chance is 33 %, 90 % cannot be reached by
    guessing. (This run measured 100 % at epoch 12; the same run in resize mode 88 %.)"""
    root = tmp_path / "coco"
    generate_dataset(root, num_train=60, num_val=0, seed=5, workers=1, progress=False)
    given = {"coco_root": root, "log_dir": tmp_path / "log", "arch": "resnet18",
             "pretrained": "none", "input_size": 64, "input_mode": "crop", "batch_size": 16,
             "epochs": 12, "milestones": [9], "val_fraction": 1 / 3, "workers": 0, "seed": 0}
    config, _, _ = trainer.resolve_config(given)
    assert config["view_size"] == 128
    run_dir = trainer.train(config)
    best = json.loads((run_dir / "best.json").read_text())
    assert best["val_accuracy"] >= 0.9
    # the saved weights, reloaded, really do that on the 60 validation samples, fed as the
    # checkpoint says (whole 128 px views)
    model, state, _ = inference.load_classifier(run_dir, None)
    assert (state["input_mode"], state["view_size"]) == ("crop", 128)
    dataset = inference.validation_dataset(state)
    assert dataset[0][0].shape == (3, 128, 128)
    metrics = inference.validate(model, dataset)
    assert metrics["samples"] == 60
    assert metrics["accuracy"] == pytest.approx(best["val_accuracy"])


# ----------------------------------------------------------------------------- train.py outputs
def test_one_checkpoint_per_epoch_with_full_state(tiny_run):
    names = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
    assert names == ["model_0001.pth", "model_0002.pth", "model_0003.pth", "model_0004.pth"]
    first = torch.load(tiny_run / "checkpoints" / "model_0001.pth", weights_only=True)
    last = runs.load_checkpoint(tiny_run / "checkpoints" / "model_0004.pth")
    for key in ("model", "optimizer", "scheduler", "epoch", "arch", "input_size", "seed",
                "classes", "config", "history", "best"):
        assert key in last
    assert (first["epoch"], last["epoch"]) == (1, 4)
    assert last["arch"] == "tiny" and last["input_size"] == 48 and last["seed"] == 3
    assert last["classes"] == ["normal", "dark", "motion_blur"]
    assert not torch.equal(first["model"]["head.4.weight"], last["model"]["head.4.weight"])
    assert [h["lr"] for h in last["history"]] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    assert last["scheduler"]["last_epoch"] == 4
    with open(tiny_run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    best = json.loads((tiny_run / "best.json").read_text())
    accuracies = [h["val_accuracy"] for h in last["history"]]
    assert best["val_accuracy"] == max(accuracies) and best["seed"] == 3
    assert (tiny_run / best["checkpoint"]).is_file()
    assert list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
    split = json.loads((tiny_run / "split.json").read_text())
    assert len(split["val_image_ids"]) == 6 and not set(split["val_image_ids"]) & set(
        split["train_image_ids"])
    assert json.loads((tiny_run / "config.json").read_text())["seed"] == 3


def test_resume_after_kill_restores_epoch_optimizer_and_scheduler(coco, tiny_run, tmp_path):
    log_dir = tmp_path / "log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "train.py"), "--coco_root", str(coco),
                             "--log_dir", str(log_dir), "--epochs", "4", *TINY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(log_dir.glob("*/checkpoints/model_0001.pth")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = runs.run_dirs(log_dir)
    done = [e for e, _ in runs.list_checkpoints(run_dir)]
    assert 1 in done and max(done) < 4, "the kill came too late to test a resume"
    resumed = run_script("train.py", "--resume", run_dir, "--log_dir", log_dir)
    assert f"at epoch {max(done)} of 4" in resumed.stderr
    assert runs.run_dirs(log_dir) == [run_dir]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert [e for e, _ in runs.list_checkpoints(run_dir)] == [1, 2, 3, 4]
    state = runs.load_checkpoint(runs.checkpoint_path(run_dir, 4))
    reference = runs.load_checkpoint(runs.checkpoint_path(tiny_run, 4))
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    assert state["scheduler"] == reference["scheduler"]
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    steps = [s["step"] for s in state["optimizer"]["state"].values()]
    assert steps == [s["step"] for s in reference["optimizer"]["state"].values()]
    # the killed-and-resumed run ends where the uninterrupted run ended
    for key, value in reference["model"].items():
        assert torch.allclose(state["model"][key].float(), value.float(), atol=1e-5), key


def test_resume_rejects_another_architecture(tiny_run):
    with pytest.raises(UserError, match="architecture mismatch.*tiny.*resnet18"):
        trainer.resolve_config({"arch": "resnet18"}, resume=tiny_run)
    with pytest.raises(UserError, match="--input_size 64 differs"):
        trainer.resolve_config({"input_size": 64}, resume=tiny_run)
    config, state, path = trainer.resolve_config({"epochs": 9}, resume=tiny_run)
    assert config["epochs"] == 9 and config["arch"] == "tiny" and path.name == "model_0004.pth"


def test_flags_left_out_take_the_forks_recipe(tmp_path):
    config, state, path = trainer.resolve_config({"log_dir": tmp_path})
    assert state is None and path is None
    assert {k: config[k] for k in ("arch", "input_size", "input_mode", "batch_size", "lr",
                                   "weight_decay", "milestones", "gamma", "val_fraction",
                                   "epochs")} == \
        {"arch": "resnet50", "input_size": 112, "input_mode": "resize", "batch_size": 32,
         "lr": 1e-3, "weight_decay": 1e-4, "milestones": [30, 60], "gamma": 0.1,
         "val_fraction": 0.1, "epochs": 100}
    assert config["view_size"] == 112 and config["seed"] == 0


def test_run_folders_and_checkpoint_pruning(tmp_path):
    first, second = runs.new_run_dir(tmp_path), runs.new_run_dir(tmp_path)
    assert first != second and runs.run_dirs(tmp_path) == [first, second]
    for epoch in range(1, 7):
        runs.save_checkpoint(runs.checkpoint_path(first, epoch), {"epoch": epoch})
    trainer._prune(first, keep_last=2, best_epoch=3)
    assert [e for e, _ in runs.list_checkpoints(first)] == [3, 5, 6]
    trainer._prune(first, keep_last=0, best_epoch=6)
    assert len(runs.list_checkpoints(first)) == 3


@pytest.mark.slow
def test_two_process_ddp_run(coco, tmp_path):
    log_dir = tmp_path / "log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPTS / "train.py"), "--coco_root", str(coco), "--log_dir", str(log_dir),
           "--epochs", "1", *TINY[:4], "--batch_size", "64", "--workers", "0",
           "--val_fraction", "0.25", "--seed", "3"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu x 2 process(es)" in proc.stderr
    (run_dir,) = runs.run_dirs(log_dir)
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    state = runs.load_checkpoint(runs.checkpoint_path(run_dir, 1))
    row = state["history"][0]
    # 18 training images x 3 = 54 samples split over two ranks of 27; validation counted once
    assert row["train_samples"] == 54 and row["val_samples"] == 18


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(coco, log_dirs):
    """torchrun --nnodes 2 --nproc_per_node 1, c10d rendezvous on 127.0.0.1: node n logs to
    log_dirs[n]. Returns the two nodes' stderr (asserting both succeeded)."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
         "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "t",
         "--local_addr", "127.0.0.1", str(SCRIPTS / "train.py"), "--coco_root", str(coco),
         "--log_dir", str(log_dir), "--epochs", "1", *TINY[:4], "--batch_size", "64",
         "--workers", "0", "--val_fraction", "0.25", "--max_images", "12", "--seed", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
        for log_dir in log_dirs]
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    return errs


@pytest.mark.parametrize("layout", ["shared", "per_node"])
def test_two_nodes_on_loopback_end_with_equal_weights(coco, tmp_path, layout):
    """(shared) one --log_dir for both nodes; (per_node) one each, as on two hosts without a
    shared file system: every node builds its own image cache on its LOCAL_RANK 0."""
    log_dirs = [tmp_path / "log"] * 2 if layout == "shared" else [tmp_path / "node0",
                                                                   tmp_path / "node1"]
    errs = _two_nodes(coco, log_dirs)
    prints = [re.findall(r"rank (\d) \(local rank 0\): final weights sha256 ([0-9a-f]{64})",
                         e) for e in errs]
    assert sorted(rank for (rank, _), in prints) == ["0", "1"], errs
    assert prints[0][0][1] == prints[1][0][1]
    assert "weights identical on all 2 processes" in "".join(errs)
    # Rank 0 (either node: c10d assigns the ranks) wrote the run, and its checkpoint holds
    # exactly those weights.
    node0 = [n for n, p in enumerate(prints) if p[0][0] == "0"][0]
    (run_dir,) = runs.run_dirs(log_dirs[node0])
    model = build_classifier("tiny", "none")
    model.load_state_dict(runs.load_checkpoint(runs.checkpoint_path(run_dir, 1))["model"])
    assert engine.weights_fingerprint(model) == prints[0][0][1]
    caches = {d: sorted(p.name for p in (d / "cache").glob("images_*.npy")) for d in log_dirs}
    assert all(len(names) == 2 for names in caches.values())    # training + validation
    if layout == "per_node":
        assert caches[log_dirs[0]] == caches[log_dirs[1]]
        assert runs.run_dirs(log_dirs[1 - node0]) == []          # only rank 0 writes runs
        for name in caches[log_dirs[0]]:
            assert (np.load(log_dirs[0] / "cache" / name) ==
                    np.load(log_dirs[1] / "cache" / name)).all()


# ----------------------------------------------------------------------------- validate.py
def test_validate_reports_metrics_csv_and_png(tiny_run, tmp_path):
    proc = run_script("validate.py", "--checkpoint", tiny_run, "--out_dir", tmp_path / "v",
                      "--workers", "0")
    best = json.loads((tiny_run / "best.json").read_text())
    assert Path(best["checkpoint"]).name in proc.stdout
    metrics = json.loads((tmp_path / "v" / "metrics.json").read_text())
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == 18
    assert (confusion.sum(1) == 6).all()
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 18)
    assert metrics["accuracy"] == pytest.approx(best["val_accuracy"])
    for k in range(3):
        if confusion[:, k].sum():
            assert metrics["precision"][k] == pytest.approx(confusion[k, k] / confusion[:, k].sum())
        assert metrics["recall"][k] == pytest.approx(confusion[k, k] / 6)
    with open(tmp_path / "v" / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["", "pred_normal", "pred_dark", "pred_motion_blur"]
    assert [list(map(int, r[1:])) for r in rows[1:]] == confusion.tolist()
    png = cv2.imread(str(tmp_path / "v" / "confusion.png"))
    assert png is not None and png.shape[0] > 100


def test_checkpoint_errors_are_one_clear_line(tiny_run, tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        inference.load_classifier(tmp_path / "missing.pth", None)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(runs.checkpoint_path(tiny_run, 1).read_bytes()[:500])
    with pytest.raises(UserError, match="corrupt or not a torch file"):
        runs.load_checkpoint(corrupt)
    with pytest.raises(UserError, match="architecture mismatch: .* holds a tiny model, --arch "
                                        "asks for resnet18"):
        inference.load_classifier(tiny_run, None, arch="resnet18")
    state = runs.load_checkpoint(runs.checkpoint_path(tiny_run, 1))
    with pytest.raises(UserError, match="do not fit arch resnet18"):
        load_model_state(DomainClassifier("resnet18"), state["model"], "x.pth")
    with pytest.raises(UserError, match="no training run with checkpoints"):
        runs.resolve_checkpoint(None, tmp_path)


# ----------------------------------------------------------------------------- ensemble.py
def test_ensemble_writes_probabilities_with_annotation_ids(coco, tiny_run, tmp_path):
    proc = run_script("ensemble.py", "--coco_dataType", "val2014_random1k_dark", "--coco_root",
                      coco, "--checkpoint", tiny_run, "--out_dir", tmp_path, "--workers", "0")
    assert "5 images, 1 skipped" in proc.stdout
    results = json.loads((tmp_path / "val2014_random1k_dark.json").read_text())
    expected_ids = annotation_ids(coco, "val2014_random1k_dark")
    assert [r["image_id"] for r in results] == expected_ids[:5]
    for r in results:
        assert set(r) == {"image_id", "effect_prob"} and len(r["effect_prob"]) == 3
        assert sum(r["effect_prob"]) == pytest.approx(1, abs=1e-5)
        assert min(r["effect_prob"]) >= 0
    # the other sets, including _resolution (a domain never trained on), in-process
    model, state, _ = inference.load_classifier(tiny_run, None)
    for data_type in paths.EVAL_DATATYPES:
        out, skipped = inference.predict_eval_set(model, state, coco, data_type)
        assert [r["image_id"] for r in out] == annotation_ids(coco, data_type)[:5]
        assert skipped == (1 if data_type.endswith(DARK) else 0)
        dist = inference.distribution(out)
        assert dist["images"] == 5 and sum(dist["counts"].values()) == 5
    # the probabilities are the network's softmax on the prepared image
    name = paths.image_file_name("val2014_random1k_dark", expected_ids[1])
    image = cv2.imread(str(paths.image_dir(coco, "val2014_random1k_dark") / name))
    x = data.normalise(torch.from_numpy(data.prepare_image(image, NORMAL, 48)).permute(2, 0, 1))
    with torch.no_grad():
        p = torch.softmax(model(x[None]), 1)[0].tolist()
    assert results[1]["effect_prob"] == pytest.approx(p, abs=1e-5)


def test_ensemble_rejects_an_unknown_data_type(coco, tmp_path):
    proc = run_script("ensemble.py", "--coco_dataType", "val2014_random1k_fog", "--coco_root",
                      coco, "--out_dir", tmp_path, check=False)
    line = error_line(proc)
    assert "unknown --coco_dataType 'val2014_random1k_fog'" in line
    assert "val2014_random1k_motion_blur" in line
    assert not list(tmp_path.iterdir())
