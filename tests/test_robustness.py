"""The severity sweep (model.robustness, eval/robustness.py, model.report.robustness):
corruption parameters and their pixels, mPC / rPC, the ensembles derived from the experts'
maps, a whole sweep with ideal stand-in networks, resuming, the script and its bad flags."""
import csv
import hashlib
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from model import effects, evaluation, inference, network, paths, predict_set
from model import robustness as rb
from model.domains import DARK, EFFECT_NAMES, ENSEMBLE, ENSEMBLE_FUSE, MIXED, MOTION_BLUR, NORMAL
from model.errors import UserError
from model.evalsets import make_domain_datasets
from model.images import read_image
from model.report import robustness as report
from test_evaluation import people_of, render_net

SCRIPT = paths.REPO_ROOT / "eval" / "robustness.py"
BASE = paths.EVAL_BASE
N = 3


@pytest.fixture(scope="module")
def coco_root(synthetic_coco, tmp_path_factory):
    """The synthetic mini-COCO with its four evaluation sets (8 held-out images, 2 of them
    without people)."""
    root = tmp_path_factory.mktemp("robustness") / "coco"
    shutil.copytree(synthetic_coco, root)
    make_domain_datasets(root, num=8, seed=0, val_holdout=8)
    return root


@pytest.fixture(scope="module")
def clean(coco_root):
    return evaluation.load_annotations(paths.annotation_file(coco_root, BASE))


# ------------------------------------------------------------------ corruptions

def test_severities_hold_the_forks_setting_and_are_checked():
    assert rb.DEFAULT_SEVERITIES[rb.DARKNESS][2] == effects.DARK_FACTOR == 0.5
    assert rb.DEFAULT_SEVERITIES[rb.BLUR][2] == effects.BLUR_LENGTH == 30
    assert rb.DEFAULT_SEVERITIES[rb.LOW_RES][2] == effects.RESOLUTION_FACTOR == 0.5
    assert rb.check_severities(rb.BLUR, ["10", "20.0", 30]) == (10, 20, 30)
    assert rb.check_severities(rb.DARKNESS, ["1", "0.5"]) == (1.0, 0.5)
    bad = [(rb.DARKNESS, [], r"--dark_factors needs at least one value"),
           (rb.DARKNESS, ["0.5", "0"], r"factors must be in \(0, 1\], got 0"),
           (rb.LOW_RES, ["1.5"], r"--resolution_factors: factors must be in \(0, 1\], got 1.5"),
           (rb.LOW_RES, ["nan"], r"'nan' is not a finite number"),
           (rb.DARKNESS, ["dark"], r"--dark_factors: 'dark' is not a number"),
           (rb.BLUR, ["2.5"], r"blur lengths must be whole numbers >= 1, got 2.5"),
           (rb.BLUR, ["0"], r"whole numbers >= 1, got 0"),
           (rb.BLUR, ["20", "10"], r"harsher with the severity \(strictly increasing\)"),
           (rb.DARKNESS, ["0.5", "0.5"], r"strictly decreasing\), got 0.5 0.5")]
    for corruption, values, message in bad:
        with pytest.raises(UserError, match=message):
            rb.check_severities(corruption, values)


def jpeg(image):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_corruptions_apply_the_effects_with_their_parameter():
    flat = np.full((48, 64, 3), 200, np.uint8)
    assert (rb.corrupt(flat, rb.DARKNESS, 0.35) == 70).all()      # floor(200 x 0.35)
    assert (rb.corrupt(flat, rb.DARKNESS, 0.8) == 160).all()
    assert rb.corrupt(flat, rb.LOW_RES, 0.25).shape == (12, 16, 3)
    assert rb.corrupt(flat, rb.CLEAN, None) is flat
    step = np.zeros((16, 40, 3), np.uint8)
    step[:, 20:] = 200
    blurred = effects.motion_blur(step, 10)
    # a 10 px box over columns x - 5 .. x + 4: a ramp of 20 per column across the edge
    np.testing.assert_array_equal(blurred[0, 15:26, 0], np.arange(0, 201, 20))
    np.testing.assert_array_equal(rb.corrupt(step, rb.BLUR, 10), jpeg(blurred))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), np.uint8)
    np.testing.assert_array_equal(rb.corrupt(image, rb.LOW_RES, 0.65),
                                  jpeg(effects.low_resolution(image, 0.65)))
    assert effects.low_resolution_size(53, 37, 0.65) == (34, 24)


def test_the_forks_severity_gives_the_evaluation_sets_pixels(coco_root, clean):
    """Severity 3 of each corruption reproduces val2014_random1k_dark / _motion_blur /
    _resolution byte for byte, annotations included for low resolution."""
    sets = {rb.DARKNESS: DARK, rb.BLUR: MOTION_BLUR, rb.LOW_RES: "_resolution"}
    ids = [im["id"] for im in clean.dataset["images"][:N]]
    for corruption, effect in sets.items():
        parameter = rb.DEFAULT_SEVERITIES[corruption][rb.FORK_SEVERITY - 1]
        stored = evaluation.load_annotations(paths.annotation_file(coco_root, BASE + effect))
        sizes = {}
        for im in clean.dataset["images"][:N]:
            image = read_image(paths.image_dir(coco_root, BASE) / im["file_name"])
            sizes[im["id"]] = image.shape[:2]
            expected = read_image(paths.image_dir(coco_root, BASE + effect) / im["file_name"])
            np.testing.assert_array_equal(rb.corrupt(image, corruption, parameter), expected)
        gt = rb.corrupted_ground_truth(clean, sizes, corruption, parameter)
        if corruption != rb.LOW_RES:
            assert gt is clean
            continue
        for i in ids:
            assert (gt.imgs[i]["width"], gt.imgs[i]["height"]) == \
                (stored.imgs[i]["width"], stored.imgs[i]["height"])
            ours = sorted(gt.imgToAnns[i], key=lambda a: a["id"])
            theirs = sorted(stored.imgToAnns[i], key=lambda a: a["id"])
            for a, b in zip(ours, theirs, strict=True):
                np.testing.assert_allclose(a["keypoints"], b["keypoints"])
                np.testing.assert_allclose(a["bbox"], b["bbox"])
                assert a["area"] == pytest.approx(b["area"])


# ------------------------------------------------------------------ mPC and rPC

def test_mpc_and_rpc_on_given_numbers():
    clean = {"a": 0.8, "b": 0.0}
    corrupted = {"a": {"x": [0.6, 0.4], "y": [0.2, 0.2, 0.2]}, "b": {"x": [0.1, 0.3], "y": [0.0]}}
    m = rb.robustness_metrics(clean, corrupted)
    assert m["per_corruption"]["x"]["a"] == pytest.approx({"mPC": 0.5, "rPC": 0.625})
    assert m["per_corruption"]["y"]["a"] == pytest.approx({"mPC": 0.2, "rPC": 0.25})
    # the mean over corruptions of each corruption's mean over its severities
    assert m["mPC"]["a"] == pytest.approx(0.35) and m["rPC"]["a"] == pytest.approx(0.4375)
    assert m["mPC"]["b"] == pytest.approx(0.1) and m["rPC"]["b"] is None   # clean AP 0


# ------------------------------------------------------------------ one image

class Counting:
    """A model that counts the images it is run on."""

    def __init__(self, model):
        self.model, self.images = model, 0

    def __call__(self, batch, training=False):
        self.images += len(batch)
        return self.model(batch, training=training)


def he_scaled_model(seed):
    """A small network with He-scaled random kernels: maps far from zero, many people."""
    model = network.build_pose_model("small", vgg19=None, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if len(layer.weights) == 2:
            kernel, bias = layer.get_weights()
            std = np.sqrt(2.0 / np.prod(kernel.shape[:3]))
            layer.set_weights([(rng.standard_normal(kernel.shape) * std).astype(np.float32),
                               (rng.standard_normal(bias.shape) * 0.1).astype(np.float32)])
    return model


def test_each_network_runs_once_and_the_ensembles_come_from_its_maps(tmp_path):
    """Experts' people equal the evaluation's (predict_dataset) on the same image; the routed
    ensemble is the chosen expert's people, the fused one with a one-hot weight too; a soft
    weight gives predict_dataset's fused people."""
    models = [Counting(he_scaled_model(seed)) for seed in range(3)]
    models.append(Counting(models[0].model))        # the generalist's place
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    settings = inference.InferenceSettings(resolution=2)
    run = [NORMAL, DARK, MOTION_BLUR, MIXED]
    people, chosen, weights = rb.predict_image(models, run, image, np.array([0.1, 0.3, 0.6]),
                                               settings, skip_below=0.2)
    assert [m.images for m in models] == [1, 1, 1, 1]
    assert chosen == 2 and weights.tolist() == pytest.approx([0, 1 / 3, 2 / 3])
    expected = {}
    for m, effect in enumerate(run):
        expected[effect], _ = predict_set.predict_dataset(
            models[m], [{"id": 7, "file_name": "x.png"}], tmp_path, settings, progress=False)
        assert expected[effect], "the He-scaled random networks find people"
    fused, _ = predict_set.predict_dataset(models[:3], [{"id": 7, "file_name": "x.png"}],
                                         tmp_path, settings, weights=lambda i: weights,
                                         progress=False)
    to_records = {e: sorted(rb.decode.people_to_coco(p, 7), key=lambda r: -r["score"])
                  for e, p in people.items()}
    for effect in run:
        assert to_records[effect] == expected[effect]
    assert to_records[ENSEMBLE] == expected[MOTION_BLUR]
    assert len(to_records[ENSEMBLE_FUSE]) == len(fused)
    for ours, theirs in zip(to_records[ENSEMBLE_FUSE], fused):
        np.testing.assert_allclose(ours["keypoints"], theirs["keypoints"], atol=0.02)
    one_hot, _, _ = rb.predict_image(models, run, image, np.array([0.0, 1.0, 0.0]), settings)
    dark = rb.decode.people_to_coco(one_hot[DARK], 7)
    assert dark and rb.decode.people_to_coco(one_hot[ENSEMBLE_FUSE], 7) == dark
    assert rb.decode.people_to_coco(one_hot[ENSEMBLE], 7) == dark


# ------------------------------------------------------------------ a whole sweep

def input_key(x):
    return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()


class IdealNetwork:
    """Recognises each network input of the sweep by its bytes and returns the ideal stride-8
    maps of its image's people shifted by `shift` px (none at all when `empty`): an expert
    whose AP is known to be high, lower or zero at every severity."""

    def __init__(self, table, shift=0.0, empty=False):
        self.table, self.shift, self.empty, self.images = table, shift, empty, 0

    def __call__(self, batch, training=False):
        self.images += len(batch)
        pafs, heats = [], []
        for x in np.asarray(batch):
            joints = self.table[input_key(x)].copy()
            if self.empty:
                joints = joints[:0]
            joints[..., 0] = np.where(joints[..., 2] > 0, joints[..., 0] + self.shift, 0)
            paf, heat = render_net(joints, x.shape[:2])
            pafs.append(paf)
            heats.append(heat)
        return np.stack(pafs), np.stack(heats)


class StandIns:
    """PoseNetworks' interface over given models."""

    def __init__(self, models, names=(NORMAL, DARK, MOTION_BLUR, MIXED)):
        self._models, self.effects = list(models), list(names)
        self.weights = {e: f"{EFFECT_NAMES[e]}.h5" for e in self.effects}

    @property
    def models(self):
        return self._models

    def identity(self):
        return dict(self.weights)


class FixedClassifier:
    path = "fixed"

    def __init__(self, probs):
        self.probs, self.images = np.asarray(probs, np.float64), 0

    def __call__(self, image):
        self.images += 1
        return self.probs

    def identity(self):
        return {"fixed": self.probs.tolist()}


def input_table(coco_root, clean, plan):
    """{input key: CMU joints of its image's people in input pixels} for every chunk."""
    table = {}
    for corruption, _, parameter in plan.chunks():
        for im in plan.images:
            image = read_image(paths.image_dir(coco_root, BASE) / im["file_name"])
            gt = rb.corrupted_ground_truth(clean, {im["id"]: image.shape[:2]}, corruption,
                                           parameter)
            corrupted = rb.corrupt(image, corruption, parameter)
            for scale, _, x in inference.network_inputs(corrupted, plan.settings):
                joints = people_of(gt, im["id"]).copy()
                joints[..., :2] = np.where(joints[..., 2:] > 0,
                                           (joints[..., :2] + 0.5) * scale - 0.5, 0)
                table[input_key(x)] = joints
    return table


def small_plan(coco_root, blur=(30,), skip_below=0.2):
    severities = {rb.DARKNESS: (0.5,), rb.BLUR: blur, rb.LOW_RES: (0.5,)}
    return rb.make_plan(coco_root, BASE, N, inference.InferenceSettings(), "small",
                        skip_below, seed=5, severities=severities)


def test_a_sweep_scores_every_model_and_resumes(coco_root, clean, tmp_path):
    plan = small_plan(coco_root, blur=(30, 40))
    table = input_table(coco_root, clean, plan)
    nets = StandIns([IdealNetwork(table, shift=4.0), IdealNetwork(table),
                     IdealNetwork(table, empty=True), IdealNetwork(table, shift=10.0)])
    classifier = FixedClassifier([0.15, 0.7, 0.15])   # the dark expert; fused: dark alone
    out = tmp_path / "sweep"
    r = rb.run_sweep(plan, nets, classifier, out, progress=False)
    assert [m.images for m in nets.models] == [5 * N] * 4 and classifier.images == 5 * N
    assert r["chunks_run"] == 5 and r["num_images"] == N == r["images_evaluated"]
    assert r["seed"] == 5 and r["models"] == ["normal", "dark", "motion_blur", "mixed",
                                              "ensemble", "ensemble_fuse"]
    ap = r["ap"]
    assert ap["dark"]["clean"] >= 0.7                     # ideal maps, decoded (3 images)
    for c in rb.CORRUPTIONS:
        for k in range(len(plan.severities[c])):
            assert ap["ensemble"][c][k] == ap["ensemble_fuse"][c][k] == ap["dark"][c][k]
            assert ap["dark"][c][k] > ap["normal"][c][k] > ap["mixed"][c][k] > 0
            assert ap["motion_blur"][c][k] == 0
    assert r["mPC"]["dark"] == pytest.approx(np.mean(
        [ap["dark"][rb.DARKNESS][0], np.mean(ap["dark"][rb.BLUR]), ap["dark"][rb.LOW_RES][0]]))
    assert r["rPC"]["dark"] == pytest.approx(r["mPC"]["dark"] / ap["dark"]["clean"])
    assert r["routed_images"]["motion_blur/2"] == {"normal": 0, "dark": N, "motion_blur": 0}
    assert r["timing"]["corrupted_images"] == 5 * N
    with open(out / rb.CSV_NAME, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["corruption", "severity", "parameter", "model", "AP"]
    assert len(rows) == 1 + 5 * 6
    assert ["motion_blur", "2", "40", "dark", f"{ap['dark'][rb.BLUR][1]:.4f}"] in rows
    assert ["clean", "0", "", "ensemble", f"{ap['ensemble']['clean']:.4f}"] in rows
    assert json.loads((out / rb.JSON_NAME).read_text())["ap"] == ap
    chunk = json.loads((out / "chunks" / "low_resolution_1.json").read_text())
    assert chunk["parameter"] == 0.5 and chunk["seed"] == 5 and len(chunk["image_ids"]) == N

    # A rerun keeps every finished chunk; a new severity is the only chunk computed.
    idle = StandIns([None] * 4)
    again = rb.run_sweep(plan, idle, FixedClassifier([0.15, 0.7, 0.15]), out, progress=False)
    assert again["chunks_run"] == 0 and again["ap"] == ap
    plan = small_plan(coco_root, blur=(30, 50))
    table.update(input_table(coco_root, clean, plan))
    for m in nets.models:
        m.images = 0
    third = rb.run_sweep(plan, nets, classifier, out, progress=False)
    assert third["chunks_run"] == 1 and [m.images for m in nets.models] == [N] * 4
    assert third["ap"]["dark"][rb.BLUR][0] == ap["dark"][rb.BLUR][0]

    # Another annotation file (a regenerated set) invalidates every chunk.
    annotations = paths.annotation_file(coco_root, BASE)
    stat = annotations.stat()
    os.utime(annotations, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert rb.run_sweep(plan, nets, classifier, out, progress=False)["chunks_run"] == 5
    finally:
        os.utime(annotations, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    lines = report.robustness_markdown(out)
    assert lines[0] == report.HEADING and f"first {N} images" in lines[2]
    row = next(line for line in lines if line.startswith("| dark expert |"))
    assert row.split(" | ")[1:4] == [f"{third['ap']['dark']['clean']:.3f}",
                                     f"{third['mPC']['dark']:.3f}",
                                     f"{100 * third['rPC']['dark']:.1f} %"]
    assert any(line.startswith("| motion blur | 50 | 2 |") for line in lines)
    assert any(line.startswith("| darkness | 0.5 | 1 |") for line in lines)
    png = report.write_figure(third, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_finds_the_sweep(tmp_path):
    notes = []
    assert report.load_robustness(tmp_path, notes) is None
    sweep = {"models": ["normal"], "ap": {}, "mPC": {}, "rPC": {}}
    for name, n in (("robustness-val2014_random1k-3", 3), ("robustness-val2014_random1k-9", 9),
                    ("robustness-val2014_random1k_dark-20", 20)):
        (tmp_path / name).mkdir()
        (tmp_path / name / rb.JSON_NAME).write_text(json.dumps(dict(sweep, num_images=n)))
    assert report.load_robustness(tmp_path, notes)["num_images"] == 9
    (tmp_path / "robustness-val2014_random1k-9" / rb.JSON_NAME).write_text("{")
    assert report.load_robustness(tmp_path, notes) is None and "not valid JSON" in notes[0]


# ------------------------------------------------------------------ the script

def load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("robustness_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def script_inputs(tmp_path_factory):
    """Random small networks (near-zero maps: nothing to decode, so the run is quick) and an
    untrained tiny classifier run."""
    import torch
    from train_domain_classifier import runs
    from train_domain_classifier.network import DomainClassifier
    root = tmp_path_factory.mktemp("robustness_inputs")
    flags, model = [], network.build_pose_model("small", vgg19=None, seed=0)
    for effect in (NORMAL, DARK, MOTION_BLUR):      # one network serves as all three
        path = root / f"{EFFECT_NAMES[effect]}.h5"
        network.save_weights(model, path)
        flags += [rb.WEIGHT_FLAGS[effect], path]
    torch.manual_seed(0)
    run_dir = root / "classifier_log" / "2026-01-01_00-00"
    runs.save_checkpoint(runs.checkpoint_path(run_dir, 1), {
        "model": DomainClassifier("tiny").state_dict(), "arch": "tiny", "input_size": 32,
        "epoch": 1, "seed": 0})
    return flags + ["--classifier_log_dir", run_dir.parent, "--config", "small"]


def test_the_script_writes_its_outputs_and_resumes(coco_root, script_inputs, tmp_path,
                                                   monkeypatch, capsys):
    monkeypatch.setattr(paths, "expert_weights_dir", lambda effect: tmp_path / "none")
    flags = ["--coco_root", coco_root, "--num_images", 1, "--dark_factors", 0.5,
             "--blur_lengths", 30, "--resolution_factors", 0.5, "--results_dir", tmp_path,
             "--progress", "false", *script_inputs]
    script = load_script()
    script.main([str(f) for f in flags])
    printed = capsys.readouterr().out
    out = tmp_path / f"robustness-{BASE}-1"
    assert {p.name for p in out.iterdir()} >= {"robustness.csv", "robustness.json",
                                              "robustness.png", "chunks"}
    r = json.loads((out / "robustness.json").read_text())
    assert r["num_images"] == 1 and r["seed"] == 0 and r["chunks_run"] == 4
    # no generalist weights: a note, and five models
    assert "note: generalist skipped" in printed and "mixed" not in r["models"]
    assert any("generalist skipped" in n for n in r["notes"])
    assert "(4 of 4 chunks computed now)" in printed and "| routed ensemble |" in printed
    script.main([str(f) for f in flags])
    assert "(0 of 4 chunks computed now)" in capsys.readouterr().out


def test_bad_flags_are_one_line(coco_root, script_inputs, tmp_path, capsys):
    script = load_script()
    base = ["--coco_root", str(coco_root), "--out_dir", str(tmp_path / "out"),
            *map(str, script_inputs)]
    cases = [(["--dark_factors"], "error: --dark_factors needs at least one value"),
             (["--blur_lengths", "10", "2.5"], "blur lengths must be whole numbers >= 1"),
             (["--resolution_factors", "0.5", "0"], "factors must be in (0, 1], got 0"),
             (["--num_images", "0"], "--num_images must be between 1 and 8"),
             (["--weights_dark", str(tmp_path / "none.h5")],
              f"error: dark weights not found: {tmp_path / 'none.h5'} (--weights_dark)"),
             (["--classifier_log_dir", str(tmp_path / "no_runs")],
              "error: no domain classifier: no training run with checkpoints in"),
             (["--coco_dataType", "val2014"], "unknown --coco_dataType"),
             (["--fuse_skip_below", "1"], "--fuse_skip_below must be in [0, 1)")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            script.main(base + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], (extra, err)
    assert not (tmp_path / "out").exists()
