"""Bad input to the evaluation side: broken images in a set (skipped and counted, AP on the
rest), weight files that miss layers, NaN keypoints in the uncertainty step, every flag
of run_experiment.py checked before step 1 (--output_root puts the data under it too),
checkpoints of another run or damaged ones (redone with a note), and Ctrl-C during the
prediction (exit 130, a checkpoint the rerun continues from)."""
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest

from model import eval_run, evaluation, files, network, paths, predict_set, runs
from model.domains import EXPERT_EFFECTS
from model.errors import UserError
from model.skeleton import NUM_HEATMAPS, NUM_PAFS
from model.uncertainty_set import collect_people, finite_records

SET = "val2014_random1k"


class ZeroNetwork:
    """All-zero maps of the right shape; records the image sizes it was given."""

    def __init__(self):
        self.shapes = []

    def __call__(self, batch, training=False):
        b, h, w = np.asarray(batch).shape[:3]
        self.shapes.append((b, h, w))
        return (np.zeros((b, h // 8, w // 8, NUM_PAFS), np.float32),
                np.zeros((b, h // 8, w // 8, NUM_HEATMAPS), np.float32))


def script(*argv, cwd=None):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)
    return done, time.perf_counter() - start


def assert_one_line_error(done, *names):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(lines) == 1 and lines[0].startswith("error:")
    for name in names:
        assert name in lines[0]


def person(x0, y0, image_id, ann_id):
    kps = np.zeros((17, 3))
    kps[:, 0], kps[:, 1], kps[:, 2] = x0 + 3 * np.arange(17), y0 + 2 * np.arange(17), 2
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "keypoints": kps.ravel().tolist(), "num_keypoints": 17, "area": 3000.0,
            "bbox": [x0, y0, 60, 50]}


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory):
    """A 4-image evaluation set: 1 and 4 good, 2 truncated, 3 annotated at another size."""
    root = tmp_path_factory.mktemp("coco")
    folder = paths.image_dir(root, SET)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(1, 5):
        name = paths.image_file_name(SET, i)
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": name, "width": 96, "height": 64})
    data = (folder / images[1]["file_name"]).read_bytes()
    (folder / images[1]["file_name"]).write_bytes(data[: len(data) // 2])
    images[2].update(width=80, height=60)
    anns = [person(10, 5, i, i) for i in range(1, 5)]
    dataset = {"images": images, "annotations": anns,
               "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}
    ann = paths.annotation_file(root, SET)
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps(dataset))
    return SimpleNamespace(root=root, folder=folder, images=images, dataset=dataset)


# ------------------------------------------------------------------------ broken images

def test_truncated_and_resized_images_are_skipped_with_reasons(bad_set):
    net = ZeroNetwork()
    records, info = predict_set.predict_dataset(net, bad_set.images, bad_set.folder,
                                              progress=False)
    reasons = dict(info["skipped"])
    assert info["image_ids"] == [1, 4] and sorted(reasons) == [2, 3]
    assert reasons[2].startswith("corrupt or truncated image: ")
    assert reasons[3].startswith("image size 96x64 differs from the annotation (80x60): ")
    assert len(net.shapes) >= 1   # only the two good images reached the network


def test_good_images_give_the_plain_readers_pixels(bad_set):
    path = bad_set.folder / bad_set.images[0]["file_name"]
    image, reason = predict_set.read_set_image(path, bad_set.images[0])
    assert reason is None
    np.testing.assert_array_equal(image, predict_set.read_image_or_reason(path)[0])


def test_skipped_images_are_counted_and_ap_is_on_the_rest(bad_set, tmp_path):
    coco = evaluation.coco_from_dataset(bad_set.dataset)
    # perfect predictions of the two good images; none for the skipped ones
    records = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in bad_set.dataset["annotations"] if a["image_id"] in (1, 4)]
    skipped = [[2, "corrupt or truncated image: x"], [3, "image size 96x64 differs"]]
    (tmp_path / runs.RUN_JSON).write_text(json.dumps({"skipped": skipped}))
    rows = eval_run.evaluate(coco, records, [1, 4], 1.0, tmp_path)
    metrics = runs.read_metrics(tmp_path / runs.METRICS_CSV)
    assert metrics[("all", "AP")] == pytest.approx(1.0)
    assert metrics[("all", "skipped_images")] == 2
    assert ("skipped", "image 2: corrupt or truncated image: x", 1) in rows


def test_a_run_without_skipped_images_writes_no_skip_rows(bad_set, tmp_path):
    coco = evaluation.coco_from_dataset(bad_set.dataset)
    eval_run.evaluate(coco, [], [1, 4], None, tmp_path)
    text = (tmp_path / runs.METRICS_CSV).read_text()
    assert "skipped" not in text


# ------------------------------------------------------------------------ weight files

@pytest.fixture(scope="module")
def partial_weights(tmp_path_factory):
    """A Keras 2 layout weight file of the small configuration without Mconv7_stage2_L2
    (zeros of the right shapes)."""
    path = tmp_path_factory.mktemp("weights") / "weights.0001.h5"
    specs = [s for s in network.conv_layers("small") if s.name != "Mconv7_stage2_L2"]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([s.name.encode() for s in specs])
        for s in specs:
            g = f.create_group(s.name)
            names = [f"{s.name}/kernel:0", f"{s.name}/bias:0"]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            for n, shape in zip(names, s.keras_shapes()):
                g.create_dataset(n, data=np.zeros(shape, np.float32))
    return path


def test_the_inference_loader_names_the_first_missing_layer(partial_weights):
    assert network.missing_layers("small", partial_weights) == ["Mconv7_stage2_L2"]
    with pytest.raises(UserError, match="lacks layer Mconv7_stage2_L2 of the 'small'"):
        network.check_weight_coverage("small", partial_weights)


def test_evaluation_refuses_partial_weights_before_writing(bad_set, partial_weights, tmp_path):
    results = tmp_path / "results"
    done, _ = script(paths.REPO_ROOT / "eval" / "eval_coco2014_single_scale.py", "--config",
                     "small", "--weights", partial_weights, "--coco_root", bad_set.root,
                     "--results_dir", results)
    assert_one_line_error(done, "Mconv7_stage2_L2", "--allow_partial_weights")
    assert not results.exists()


def test_partial_weights_load_when_allowed(partial_weights):
    with pytest.raises(UserError, match="lacks layer Mconv7_stage2_L2"):
        network.load_pose_model("small", partial_weights)
    model = network.load_pose_model("small", partial_weights, allow_partial=True)
    assert model.get_layer("Mconv7_stage2_L1").get_weights()[0].max() == 0


# ------------------------------------------------------------------------ NaN keypoints

def write_expert_runs(results, dataset, nan_effect):
    """Each expert's run folder with the ground truth as its predictions; one record of
    `nan_effect` gets NaN keypoints."""
    for effect in EXPERT_EFFECTS:
        folder = runs.run_folder(results, SET, effect, len(dataset["images"]))
        folder.mkdir(parents=True)
        records = [{"image_id": a["image_id"], "category_id": 1, "score": 0.9,
                    "keypoints": list(a["keypoints"])} for a in dataset["annotations"]]
        if effect == nan_effect:
            records[0]["keypoints"][3] = math.nan
        (folder / runs.RESULTS_JSON).write_text(json.dumps(records))


def test_uncertainty_skips_and_counts_nan_predictions(bad_set, tmp_path):
    write_expert_runs(tmp_path, bad_set.dataset, EXPERT_EFFECTS[1])
    done, _ = script(paths.REPO_ROOT / "eval" / "util_ainu.py", "--coco_dataType", SET,
                     "--coco_root", bad_set.root, "--results_dir", tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "1 of 4 predictions of the dark model hold NaN or infinite values" in done.stdout
    quality = json.loads(next(tmp_path.glob("*-quality.json")).read_text())
    assert quality["counts"]["predictions_non_finite"] == 1
    assert quality["counts"]["people"] == 4


@pytest.mark.parametrize("bad", [math.nan, math.inf, "x"])
def test_finite_records_drops_every_non_number(bad):
    good = {"image_id": 1, "score": 0.5, "keypoints": [1.0] * 51}
    broken = dict(good, keypoints=[1.0] * 50 + [bad])
    assert finite_records([good, broken, dict(good, score=math.nan)]) == ([good], 2)


def test_nan_ground_truth_is_skipped_and_counted(bad_set):
    dataset = json.loads(json.dumps(bad_set.dataset))
    dataset["annotations"][0]["keypoints"][0] = math.nan
    coco = evaluation.coco_from_dataset(dataset)
    recs = [{"image_id": a["image_id"], "category_id": 1, "score": 0.9,
             "keypoints": a["keypoints"]} for a in bad_set.dataset["annotations"]]
    people = collect_people([1, 4], [recs] * 3, None, coco)
    assert people["counts"]["gt_people_non_finite"] == 1
    assert list(people["gt_id"]) == [-1, 4]


# ------------------------------------------------------------------------ runner flags

@pytest.mark.parametrize("flags, named", [
    (["--pose_epochs", "0"], "--pose_epochs must be >= 1"),
    (["--pose_batch", "-1"], "--pose_batch must be >= 1"),
    (["--num_eval", "0"], "--num_eval must be >= 1"),
    (["--classifier_epochs", "0"], "--classifier_epochs must be >= 1"),
    (["--fuse_skip_below", "1.5"], "--fuse_skip_below must be in [0, 1)"),
    (["--classifier_val_fraction", "1"], "--classifier_val_fraction must be in (0, 1)"),
    (["--classifier_milestones", "a b"], "--classifier_milestones must be whole numbers"),
    (["--scale_search", "0"], "--scale_search must be a positive number"),
    (["--config", "huge"], "unknown configuration 'huge'"),
    (["--pose_extra=--no_such_flag 1"], "unrecognized arguments: --no_such_flag"),
    (["--pose_extra=--schedule nope"], "argument --schedule: invalid choice: 'nope'"),
    (["--classifier_arch", "vgg"], "unknown --classifier_arch 'vgg'"),
    (["--synthetic", "false", "--coco_root", "missing"], "holds no annotations"),
])
def test_runner_refuses_a_bad_flag_before_step_one(tmp_path, flags, named):
    out = tmp_path / "out"
    done, _ = script(paths.REPO_ROOT / "run_experiment.py", "--output_root", out, *flags,
                     cwd=tmp_path)
    assert_one_line_error(done, named)
    assert not out.exists() and list(tmp_path.iterdir()) == []    # refused before step 1


def test_output_root_holds_the_data_unless_coco_root_is_given(tmp_path, run_experiment_script):
    runner = run_experiment_script
    assert runner.parse_args(["--output_root", str(tmp_path)]).coco_root == tmp_path / "COCO"
    given = runner.parse_args(["--output_root", str(tmp_path), "--coco_root", "/data/C"])
    assert str(given.coco_root) == "/data/C"
    assert runner.parse_args([]).coco_root == paths.DEFAULT_COCO_ROOT


# ------------------------------------------------------------------------ checkpoints

def resume_key(images, **changes):
    key = {"backend": "tensorflow", "weights": "w.h5",
           "weights_file": {"bytes": 10, "mtime_ns": 5}, "config": "small",
           "settings": {"flip": False}, "image_ids": [int(im["id"]) for im in images]}
    return dict(key, **changes)


def record(image_id):
    return {"image_id": image_id, "category_id": 1, "keypoints": [0] * 51, "score": 1.0}


def checkpoint(key, records=(1,), ids=(1, 2), seconds=1.0):
    return {"key": key, "records": [record(i) for i in records], "image_ids": list(ids),
            "seconds": seconds}


@pytest.mark.parametrize("content, note", [
    ("{not json", "is damaged (JSONDecodeError)"),
    ("[1, 2]", "is not a checkpoint of an evaluation"),
    (lambda k: checkpoint(dict(k, weights_file={"bytes": 11, "mtime_ns": 5})),
     "holds 2 images of a run with another weights_file"),
    (lambda k: checkpoint(dict(k, config="full", settings={"flip": True})),
     "holds 2 images of a run with another config, settings"),
    (lambda k: checkpoint(dict(k, correction={"target": 0.4})),
     "holds 2 images of a run with another correction"),
    (lambda k: checkpoint(k, records=(3,)),
     "is inconsistent: records hold people of images it does not list as predicted"),
    (lambda k: checkpoint(k, ids=(1, 9)),
     "is inconsistent: image_ids repeats images or names images outside this run"),
    (lambda k: checkpoint(k, ids=(1, 1)),
     "is inconsistent: image_ids repeats images or names images outside this run"),
    (lambda k: checkpoint(k, ids=("1", 2)), "is inconsistent: image_ids is not a list"),
    (lambda k: checkpoint(k, seconds=-1), "is inconsistent: seconds is not a duration"),
], ids=["not JSON", "not a dict", "weights retrained", "settings", "correction",
        "records of unlisted images", "foreign image", "repeated image", "string id",
        "negative seconds"])
def test_a_checkpoint_that_does_not_fit_is_redone_with_a_note(bad_set, tmp_path, caplog,
                                                              content, note):
    key = resume_key(bad_set.images)
    partial = tmp_path / runs.PARTIAL_JSON
    partial.write_text(content if isinstance(content, str) else json.dumps(content(key)))
    with caplog.at_level(logging.INFO, logger="eval"):
        done, todo = eval_run._resume_state(partial, key, bad_set.images)
    assert done == {"key": key, "records": [], "image_ids": [], "seconds": 0.0}
    assert todo == bad_set.images
    notes = [r.getMessage() for r in caplog.records if "starting over" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith(
        f"starting over, all 4 images to predict: {partial} {note}")
    assert not any("resuming" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("recorded", ["the same key", "a key without the weight file's stat"])
def test_a_checkpoint_of_this_run_is_resumed(bad_set, tmp_path, caplog, recorded):
    key = resume_key(bad_set.images)
    earlier = dict(key) if recorded == "the same key" else \
        {k: v for k, v in key.items() if k not in ("weights_file", "backend")}
    partial = tmp_path / runs.PARTIAL_JSON
    partial.write_text(json.dumps(checkpoint(earlier, seconds=2.5)))
    with caplog.at_level(logging.INFO, logger="eval"):
        done, todo = eval_run._resume_state(partial, key, bad_set.images)
    assert done["records"] == [record(1)] and done["image_ids"] == [1, 2]
    assert done["seconds"] == 2.5 and done["key"] == key
    assert [im["id"] for im in todo] == [3, 4]
    assert [r.getMessage() for r in caplog.records] == [
        "resuming: 2 of 4 images already predicted"]


def test_the_weights_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "w.h5"
    path.write_bytes(b"12345")
    first = eval_run.weights_fingerprint(path)
    assert first["bytes"] == 5 and eval_run.weights_fingerprint(path) == first
    path.write_bytes(b"123456")
    assert eval_run.weights_fingerprint(path)["bytes"] == 6


# ------------------------------------------------------------------------ Ctrl-C

EVAL_SCRIPT = paths.REPO_ROOT / "eval" / "eval_coco2014_single_scale.py"
LONG_SET_IMAGES = 80      # the first checkpoint comes after 25: 55 images left to interrupt


@pytest.fixture(scope="module")
def long_set(tmp_path_factory):
    """An evaluation set of LONG_SET_IMAGES good 96x64 images."""
    root = tmp_path_factory.mktemp("long_coco")
    folder = paths.image_dir(root, SET)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = []
    for i in range(1, LONG_SET_IMAGES + 1):
        name = paths.image_file_name(SET, i)
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": name, "width": 96, "height": 64})
    dataset = {"images": images, "annotations": [person(10, 5, i, i) for i in range(1, 5)],
               "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}]}
    ann = paths.annotation_file(root, SET)
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps(dataset))
    return SimpleNamespace(root=root, ids=[im["id"] for im in images])


def dead_pid():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def interrupt_when_checkpointed(argv, results, stderr_path):
    """Start the evaluation, send SIGINT once its first checkpoint exists; (exit, stderr)."""
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, LOGLEVEL="WARNING"))
        try:
            deadline = time.time() + 180
            while (time.time() < deadline and proc.poll() is None
                   and not list(results.glob(f"*/{runs.PARTIAL_JSON}"))):
                time.sleep(0.02)
            assert proc.poll() is None, "the prediction ended before it could be interrupted"
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            proc.kill()
    return proc.returncode, stderr_path.read_text()


@pytest.mark.slow
def test_ctrl_c_during_prediction_saves_a_checkpoint_the_rerun_continues(
        long_set, partial_weights, tmp_path):
    results = tmp_path / "results"
    argv = [sys.executable, str(EVAL_SCRIPT), "--config", "small", "--weights",
            str(partial_weights), "--allow_partial_weights", "true", "--coco_root",
            str(long_set.root), "--results_dir", str(results), "--eval_compute_keypoint",
            "false"]
    code, stderr = interrupt_when_checkpointed(argv, results, tmp_path / "stderr.txt")
    assert code == 130, stderr[-3000:]
    for bad in ("Traceback", "FATAL", "Exception ignored", "error:"):
        assert bad not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert lines[-1] == "interrupted" and stderr.count("interrupted") == 1
    run_dir = next(results.iterdir())
    partial = json.loads((run_dir / runs.PARTIAL_JSON).read_text())
    done = len(partial["image_ids"])
    assert 25 <= done < LONG_SET_IMAGES and partial["key"]["image_ids"] == long_set.ids
    assert not list(run_dir.glob(".*.tmp"))

    # a temporary of a killed run is swept on the rerun; a live process's is kept
    dead = run_dir / f".{runs.RESULTS_JSON}.{files.temporary_owner_tag(dead_pid())}.abc1.tmp"
    live = run_dir / f".{runs.RESULTS_JSON}.{files.temporary_owner_tag()}.def2.tmp"
    dead.write_text("[")
    live.write_text("[")
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming: {done} of {LONG_SET_IMAGES} images already predicted" in rerun.stderr
    assert f"predicting {LONG_SET_IMAGES - done} images" in rerun.stderr
    run = json.loads((run_dir / runs.RUN_JSON).read_text())
    assert run["image_ids"] == long_set.ids and not (run_dir / runs.PARTIAL_JSON).exists()
    assert not dead.exists() and live.exists()
