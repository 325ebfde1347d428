"""The run-folder layout (model/runs.py), the shared keypoint rules (model/keypoints.py), the
report tables (model/report/tables.py) and the summary's command line (python -m model.report)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model import evaluation, files, keypoints, runs
from model.errors import UserError
from model.inference import InferenceSettings
from model.report.tables import frame, markdown, write_csv
from model.runs import RunLayout
from model.skeleton import COCO_SIGMAS

REPO = Path(__file__).resolve().parent.parent
SET = "val2014_random1k_dark"


def test_folder_names_are_the_forks():
    layout = RunLayout("/r")
    assert layout.folder(SET, "", 1000) == Path(
        "/r/val2014_random1k_dark-normal-epoch100-open-pose-single-scale-1000")
    assert layout.folder(SET, "_ensemble_fuse", 7).name == \
        "val2014_random1k_dark-ensemble_fuse-epoch100-open-pose-single-scale-7"
    assert layout.uncertainty_file(SET, 7, "-quality.json").name == \
        "val2014_random1k_dark-three-model-epoch100-open-pose-single-scale-7-quality.json"
    single = InferenceSettings((1.5,), "boxsize", 184)
    assert layout.folder(SET, "_dark", 7, single) == layout.folder(SET, "_dark", 7)
    multi = InferenceSettings((0.5, 1.0), "boxsize", 184, flip=True)
    assert layout.folder(SET, "_dark", 7, multi).name.endswith("-7-boxsize-0.5_1-flip")
    assert runs.run_folder("/r", SET, "", 3) == layout.folder(SET, "", 3)


def test_reading_runs_and_finding_the_image_count(tmp_path):
    layout = RunLayout(tmp_path)
    with pytest.raises(UserError, match="--effect _dark --coco_dataType val2014_random1k_dark"):
        layout.read_results(SET, "_dark", 5)
    record = {"image_id": 1, "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}
    for effect in ("", "_dark", "_motion_blur"):
        files.write_json(layout.results_file(SET, effect, 5), [record])
    files.write_json(layout.results_file(SET, "", 9), [record])
    assert layout.read_results(SET, "_dark", 5) == [record]
    assert layout.find_num_images(SET) == 5              # 9 lacks two experts
    assert layout.image_counts(SET, ("", "_dark")) == {5: ["", "_dark"], 9: [""]}
    files.write_json(layout.results_file(SET, "", 5), [{"image_id": 1}])
    with pytest.raises(UserError, match="51 keypoint values"):
        layout.read_results(SET, "", 5)
    assert layout.read_settings(SET, "", 5) == {}
    files.write_json(layout.settings_file(SET, "", 5), {"image_ids": [3, 1, 2]})
    files.write_json(layout.settings_file(SET, "_dark", 5), {"image_ids": [1, 3]})
    assert layout.evaluated_image_ids(SET, 5, None, []) == [3, 1]


def test_metrics_round_trip(tmp_path):
    path = tmp_path / "m.csv"
    runs.write_metrics(path, [("all", "AP", 0.5), ("all", "num_images", 7),
                              ("crowded", "AP", 1 / 3)])
    assert path.read_text().splitlines() == ["subset,metric,value", "all,AP,0.500000",
                                             "all,num_images,7", "crowded,AP,0.333333"]
    assert runs.read_metrics(path) == {("all", "AP"): 0.5, ("all", "num_images"): 7.0,
                                       ("crowded", "AP"): 0.333333}


def test_one_found_rule_for_every_metric():
    kp = np.zeros((1, 17, 3))
    kp[0, :, :2] = 50
    kp[0, :, 2] = 1
    kp[0, 0] = [0, 0, 1]          # the placeholder, with a score
    kp[0, 1] = [40, 40, 0]        # coordinates but no score
    found = keypoints.found_mask(kp)[0]
    assert not found[0] and not found[1] and found[2:].all()
    gt = np.zeros((1, 17, 3))
    gt[0, :, :2], gt[0, :, 2] = 50, 2
    gt[0, 0, :2] = 0                       # a labelled nose at (0, 0): the placeholder misses it
    correct = evaluation.correct_keypoints(kp, gt, [100.0])[0, 0]
    assert correct.tolist() == found.tolist()


def test_the_two_oks_share_the_kernel():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(0, 100, (2, 17, 2)), np.ones((2, 17, 1))], -1)
    b = a + rng.normal(0, 3, a.shape) * [1, 1, 0]
    # against "ground truth" b with b's own box as the area, prediction_oks and oks_matrix
    # are the same sum over the same keypoints when every keypoint is found and labelled
    x0, y0, x1, y1 = keypoints.keypoint_box(b, np.ones((2, 17), bool))
    area = keypoints.box_area(x0, y0, x1, y1)
    coco = keypoints.oks_matrix(a, b, area)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    by_hand = np.exp(-d2 / (2 * COCO_SIGMAS) ** 2 / (area[None, :, None] + np.spacing(1))
                     / 2).mean(-1)
    np.testing.assert_allclose(coco, by_hand, rtol=1e-12)
    # between predictions the area is the union of the two boxes; with every keypoint found
    # by both, the sparser's count is 17 and the number is COCO's OKS at that area
    ea, eb = (keypoints.keypoint_box(p, np.ones((2, 17), bool)) for p in (a, b))
    union = keypoints.box_area(np.minimum(ea[0][:, None], eb[0][None]),
                               np.minimum(ea[1][:, None], eb[1][None]),
                               np.maximum(ea[2][:, None], eb[2][None]),
                               np.maximum(ea[3][:, None], eb[3][None]))
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(keypoints.prediction_oks(a[i], b[j])[0, 0],
                                       keypoints.oks_matrix(a[i:i + 1], b[j:j + 1],
                                                            [union[i, j]])[0, 0], rtol=1e-12)
    np.testing.assert_allclose(np.diag(keypoints.prediction_oks(b, b)), 1.0)


def test_tables_write_what_csv_writer_wrote(tmp_path):
    rows = [["a", "", 0.1, 3, None, "x,y"], ["total (all)", "0.250000", 0.0, 12, "", "z"]]
    header = ["name", "value", "fraction", "count", "gt", "text"]
    files.write_csv(tmp_path / "old.csv", rows, header)
    write_csv(tmp_path / "new.csv", frame(rows, header))
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
    assert markdown(frame([[1, "n/a"], [None, 0.5]], ["x", "y"])) == [
        "| x | y |", "|---|---|", "| 1 | n/a |", "| None | 0.5 |"]


def test_report_command_line(tmp_path):
    root = tmp_path / "out"
    files.write_csv(root / "eval_results" / runs.folder_name(
        "val2014_random1k", "normal", 4) / runs.METRICS_CSV, [["all", "AP", "0.612000"]],
        ["subset", "metric", "value"])
    result = subprocess.run([sys.executable, "-m", "model.report", "--output_root", str(root),
                             "--coco_root", str(tmp_path / "coco"), "--figures", "false"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (root / "results" / "summary.md").read_text()
    assert text in result.stdout and "## Checks: the results must mean something" in text
    assert "| normal | 0.612 | n/a | n/a | n/a | n/a |" in text
    data = json.loads((root / "results" / "summary.json").read_text())
    assert data["num_images"]["val2014_random1k"] == 4
    bad = subprocess.run([sys.executable, "-m", "model.report", "--num_images", "0"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "--num_images must be >= 1" in bad.stderr
