"""Disagreement, matching and the quality measures of model.uncertainty on hand-made people."""
import contextlib
import copy
import csv
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model import keypoints
from model import uncertainty as unc
from model.errors import UserError
from model.report import uncertainty as report_unc
from model.runs import RunLayout
from model.skeleton import COCO_KEYPOINTS, LIMB_NAMES, LIMBS, CMU_PARTS

RNG = np.random.default_rng(0)


def person(dx=0.0, dy=0.0, scale=1.0):
    """A standing COCO-ordered person, 17 keypoints all found, box about 60 x 160 px."""
    xy = np.array([
        [30, 10], [34, 6], [26, 6], [38, 8], [22, 8],          # nose, eyes, ears
        [45, 35], [15, 35], [52, 65], [8, 65], [55, 92], [5, 92],   # shoulders .. wrists
        [40, 95], [20, 95], [42, 130], [18, 130], [43, 165], [17, 165]], np.float64)
    kp = np.ones((17, 3))
    kp[:, :2] = xy * scale + [100 + dx, 50 + dy]
    return kp


def one(members):
    """disagreement() of a single person seen by the given experts (None = absent)."""
    present = np.array([[m is not None for m in members]])
    arr = np.stack([np.zeros((17, 3)) if m is None else m for m in members])[None]
    return {k: v[0] for k, v in unc.disagreement(arr, present).items()}


def test_identical_predictions_have_zero_disagreement():
    d = one([person(), person(), person()])
    assert d["translational"] == 0 and d["rotational"] == 0
    assert not d["flagged"] and d["num_experts"] == 3 and d["limbs_compared"] == 19
    assert np.all(d["limb_translational"] == 0) and np.all(d["limb_rotational"] == 0)


def test_known_shift_of_one_expert_gives_known_translational():
    shift = 12.0
    d = one([person(), person(), person(dx=shift)])
    # pairs: (0,1) 0, (0,2) 12, (1,2) 12; scale from the union box (60 + 12) x 159
    base = person()
    w = base[:, 0].max() - base[:, 0].min() + shift
    h = base[:, 1].max() - base[:, 1].min()
    assert d["translational"] == pytest.approx((0 + shift + shift) / 3 / np.sqrt(w * h))
    assert d["rotational"] == pytest.approx(0, abs=1e-12)   # a translation keeps every angle
    assert np.allclose(d["limb_translational"], (2 * shift / 3) / np.sqrt(w * h))


def test_limb_at_179_against_minus_179_degrees_differs_by_2_degrees():
    def nose_eye(angle_deg):
        kp = np.zeros((17, 3))
        kp[COCO_KEYPOINTS.index("nose")] = [100, 100, 1]
        a = np.deg2rad(angle_deg)
        kp[COCO_KEYPOINTS.index("right_eye")] = [100 + 20 * np.cos(a), 100 + 20 * np.sin(a), 1]
        return kp
    d = one([nose_eye(179), nose_eye(-179)])
    limb = LIMB_NAMES.index("nose-right_eye")
    # coco_to_cmu works in float32: about 1e-6 relative
    assert d["rotational"] == pytest.approx(2 / 180, rel=1e-4)
    assert d["limb_rotational"][limb] == pytest.approx(2 / 180, rel=1e-4)
    others = np.delete(d["limb_rotational"], limb)
    assert np.isnan(others).all() and d["limbs_compared"] == 1
    assert unc.wrap_angle(np.deg2rad(179) - np.deg2rad(-179)) == pytest.approx(np.deg2rad(2))
    assert unc.wrap_angle(np.deg2rad(-350)) == pytest.approx(np.deg2rad(10))


def test_missing_keypoints_are_ignored():
    a = person()
    b = person()
    lost = [COCO_KEYPOINTS.index(n) for n in ("left_wrist", "right_knee", "nose")]
    b[lost] = 0                                    # the writers' (0, 0, 0) for a missing part
    c = person()
    c[COCO_KEYPOINTS.index("left_ankle")] = [0, 0, 0.8]        # placeholder with a score
    c[COCO_KEYPOINTS.index("right_ankle"), 2] = 0               # coordinates left, score 0
    c[COCO_KEYPOINTS.index("right_ankle"), :2] += 500
    d = one([a, b, c])
    assert d["translational"] == 0 and d["rotational"] == 0
    # limbs touching a missing end are compared only by the pairs that have both ends
    names = dict(zip(LIMB_NAMES, d["limb_translational"]))
    assert names["right_hip-right_knee"] == 0 and names["left_knee-left_ankle"] == 0
    # right knee missing in b, right ankle in c: no pair has both ends of that limb
    assert np.isnan(names.pop("right_knee-right_ankle"))
    assert not np.isnan(list(names.values())).any()


def test_neck_is_the_shoulder_midpoint_not_the_nose():
    a, b = person(), person()
    b[COCO_KEYPOINTS.index("nose"), 0] += 10       # only the nose moves
    d = one([a, b])
    limb = dict(zip(LIMB_NAMES, d["limb_rotational"]))
    assert limb["neck-right_hip"] == 0 and limb["neck-right_shoulder"] == 0
    assert limb["neck-nose"] > 0 and limb["nose-right_eye"] > 0
    assert LIMB_NAMES[list(map(tuple, LIMBS.tolist())).index((1, 8))] == \
        f"{CMU_PARTS[1]}-{CMU_PARTS[8]}" == "neck-right_hip"


def test_person_of_one_expert_is_flagged_with_maximal_disagreement():
    d = one([None, person(), None])
    assert d["flagged"] and d["num_experts"] == 1
    assert d["translational"] == unc.MAX_DISAGREEMENT == d["rotational"]
    assert np.isnan(d["limb_translational"]).all()


def test_disagreement_stays_in_unit_range():
    members = person()[None, None].repeat(3, 1) + RNG.normal(0, 40, (50, 3, 17, 3)) * [1, 1, 0]
    d = unc.disagreement(members, np.ones((50, 3), bool))
    for key in ("translational", "rotational"):
        assert ((d[key] >= 0) & (d[key] <= 1)).all()


def test_prediction_oks_identical_and_partial():
    a = person()
    part = a.copy()
    part[11:] = 0                                   # the legs missing
    far = person(dx=400)
    oks = keypoints.prediction_oks(np.stack([a, far]), np.stack([a, part, far]))
    assert oks[0, 0] == pytest.approx(1) and oks[0, 1] == pytest.approx(1)
    assert oks[0, 2] < 1e-6 and oks[1, 2] == pytest.approx(1)
    assert keypoints.prediction_oks(np.zeros((1, 17, 3)), a[None])[0, 0] == 0


def test_matching_pairs_the_right_people_when_close_together():
    # Three people 25 px apart (overlapping boxes of 60 px width); each expert lists them in
    # another order with 3 px noise; a fourth person only the dark expert found.
    truth = [person(dx=25 * k) for k in range(3)]
    noisy = lambda k: truth[k] + np.r_[RNG.normal(0, 3, (17, 2)).T, [np.zeros(17)]].T
    orders = [[0, 1, 2], [2, 0, 1], [1, 2, 0]]
    people = [np.stack([noisy(k) for k in order]) for order in orders]
    people[1] = np.concatenate([people[1], person(dx=600)[None]])
    groups = unc.match_people(people)
    assert len(groups) == 4
    truth_of = [{idx: k for idx, k in enumerate(order)} for order in orders]
    for g in groups[:3]:
        assert len({truth_of[e][i] for e, i in enumerate(g)}) == 1
    assert groups[3].tolist() == [-1, 3, -1]
    members, present = unc.gather_members(people, groups)
    d = unc.disagreement(members, present)
    assert d["flagged"].tolist() == [False, False, False, True]
    assert (d["translational"][:3] < 0.1).all()


def test_matching_threshold_and_empty_experts():
    a = person()
    assert unc.match_people([np.zeros((0, 17, 3)), a[None], a[None]]).tolist() == [[-1, 0, 0]]
    assert unc.match_people([a[None], person(dx=300)[None]]).tolist() == [[0, -1], [-1, 0]]
    assert unc.match_people([np.zeros((0, 17, 3))] * 3).shape == (0, 3)


def test_coco_oks_equals_pycocotools():
    gts, dts = [], []
    for j in range(4):       # people with labelled keypoints, the ones COCOeval scores
        k = np.zeros((17, 3))
        k[:, :2] = RNG.uniform(50, 150, (17, 2))
        k[:, 2] = RNG.integers(0, 3, 17)
        k[j, 2] = 2
        k[k[:, 2] == 0, :2] = 0
        gts.append(dict(id=j + 1, image_id=1, category_id=1, keypoints=k.ravel().tolist(),
                        bbox=[40., 40., 120., 130.], area=float(RNG.uniform(3000, 9000)),
                        iscrowd=0, num_keypoints=int((k[:, 2] > 0).sum())))
    for i in range(5):
        k = np.ones((17, 3))
        k[:, :2] = RNG.uniform(30, 170, (17, 2))
        dts.append(dict(image_id=1, category_id=1, keypoints=k.ravel().tolist(),
                        score=1 - i / 10))
    gt = COCO()
    gt.dataset = dict(images=[dict(id=1, width=200, height=200)], annotations=gts,
                      categories=[dict(id=1, name="person")])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dts)), "keypoints")
        ev.evaluate()
    mine = keypoints.coco_oks(np.array([d["keypoints"] for d in dts]), gts)
    np.testing.assert_allclose(mine, np.array(ev.ious[(1, 1)]), atol=1e-12)


def test_correlation_and_ause_on_a_known_ranking():
    error = np.linspace(0, 1, 21)
    good = unc.correlation(error ** 2, error)             # monotone: Spearman exactly 1
    assert good["spearman_r"] == pytest.approx(1) and good["pearson_r"] > 0.9
    assert good["spearman_p"] < 1e-6 and good["n"] == 21
    bad = unc.correlation(-error, error)
    assert bad["pearson_r"] == pytest.approx(-1) and bad["spearman_r"] == pytest.approx(-1)

    f, curve, oracle = unc.sparsification(error ** 2, error)
    assert unc.ause(f, curve, oracle) == 0 and np.array_equal(curve, oracle)
    f, curve, oracle = unc.sparsification(-error, error)
    assert unc.ause(f, curve, oracle) > 0.2
    shuffled = RNG.permutation(21)
    f, c2, o2 = unc.sparsification(RNG.permutation(error)[shuffled.argsort()], error)
    assert 0 <= unc.ause(f, c2, o2) <= unc.ause(f, curve, oracle)


def test_sparsification_by_hand():
    # errors (0, 1): removing the wrong one first leaves 1, the oracle leaves 0
    f, curve, oracle = unc.sparsification([1.0, 0.0], [0.0, 1.0])
    assert f.tolist() == [0, 0.5] and curve.tolist() == [0.5, 1] and oracle.tolist() == [0.5, 0]
    assert unc.ause(f, curve, oracle) == pytest.approx(0.25)
    # equal uncertainties are removed as one block: their mean error, whatever their order
    f, curve, _ = unc.sparsification([1, 1, 0], [0.0, 0.6, 0.3])
    assert curve == pytest.approx([0.3, 0.3, 0.3])
    f, curve2, _ = unc.sparsification([1, 1, 0], [0.6, 0.0, 0.3])
    assert np.array_equal(curve, curve2)


def test_correlation_undefined_cases_are_reported():
    assert unc.correlation([1, 2], [1, 2])["pearson_r"] is None
    flat = unc.correlation([1, 1, 1, 1], [0, 1, 0, 1])
    assert flat["spearman_r"] is None and "constant uncertainty" in flat["note"]
    assert unc.correlation([1, np.nan, 2, 3], [1, 5, 2, 3])["n"] == 3


def test_rejection_keeps_the_least_uncertain():
    u = np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8])
    assert np.flatnonzero(~unc.kept_after_rejection(u, 0.2)).tolist() == [1, 3]
    assert unc.kept_after_rejection(u, 0.5).sum() == 5
    assert unc.kept_after_rejection(u, 0.0).all()


# ---------------------------------------------------------------- eval/util_ainu.py end to end

import json
import os
import subprocess
import sys
from pathlib import Path

from model.domains import EXPERT_EFFECTS
from model.paths import annotation_file

REPO = Path(__file__).resolve().parent.parent
DATA_TYPE = "val2014_random1k"
N_IMAGES = 14


def write_scene(tmp_path, with_gt=True, skip_effect=None, with_ensemble=True):
    """A results folder with the three experts' (and the routed ensemble's) predictions of
    N_IMAGES hand-made images, and a COCO root with their ground truth. Each person has its
    own noise level shared by the experts, so disagreement and error grow together; image 2
    has nobody found; the dark expert misses the second person of every image."""
    rng = np.random.default_rng(1)
    images, anns, preds = [], [], {e: [] for e in EXPERT_EFFECTS}
    for i in range(N_IMAGES):
        image_id = 1000 + i
        images.append({"id": image_id, "width": 640, "height": 480,
                       "file_name": f"COCO_val2014_{image_id:012d}.jpg"})
        for k in range(1 + i % 3):
            gt = person(dx=120 * k + 10 * i, dy=5 * k)
            xs, ys = gt[:, 0], gt[:, 1]
            box = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            gt_kp = gt.copy()
            gt_kp[:, 2] = 2
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "iscrowd": 0, "num_keypoints": 17, "bbox": box,
                         "area": 0.6 * box[2] * box[3],
                         "keypoints": gt_kp.ravel().tolist()})
            if i == 2:
                continue
            sigma = rng.uniform(0, 8)
            for e in EXPERT_EFFECTS:
                if e == "_dark" and k == 1:
                    continue
                kp = gt.copy()
                kp[:, :2] += rng.normal(0, sigma, (17, 2))
                preds[e].append({"image_id": image_id, "category_id": 1,
                                 "keypoints": kp.ravel().round(2).tolist(), "score": 0.9})
    coco_root = tmp_path / "coco"
    if with_gt:
        path = annotation_file(coco_root, DATA_TYPE)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "person"}]}))
    results = tmp_path / "results"
    for e in EXPERT_EFFECTS + (("_ensemble",) if with_ensemble else ()):
        if e == skip_effect:
            continue
        path = RunLayout(results).results_file(DATA_TYPE, e, N_IMAGES)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(preds["" if e == "_ensemble" else e]))
    return coco_root, results


def run_cli(script, *args):
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd="/")


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_analysis_with_ground_truth(tmp_path):
    coco_root, results = write_scene(tmp_path)
    s = report_unc.analyse(DATA_TYPE, results, coco_root)          # N found from the folder names
    c = s["counts"]
    assert s["num_images"] == N_IMAGES and c["images"] == N_IMAGES
    assert c["images_without_people"] == 1 and c["gt_people"] == 27
    people = sum(1 + i % 3 for i in range(N_IMAGES) if i != 2)
    assert c["people"] == people and c["gt_people_matched"] == people and c["flagged"] == 0
    stem = RunLayout(results).uncertainty_stem(DATA_TYPE, N_IMAGES)
    limbs = read_csv(stem.with_name(stem.name + ".csv"))
    assert limbs[0] == report_unc.LIMB_HEADER and [r[0] for r in limbs[1:20]] == list(LIMB_NAMES)
    assert len(limbs) == 22 and limbs[20][0].startswith("total")
    persons = read_csv(stem.with_name(stem.name + "-persons.csv"))
    assert persons[0] == report_unc.PERSON_HEADER and len(persons) == people + 1
    second = [r for r in persons[1:] if r[1] == "1"]   # the dark expert missed them
    assert all(r[2] == "normal+motion_blur" and r[3] == "2" for r in second)
    assert all(r[persons[0].index("oks_dark")] == "0.000000" for r in second)
    # the ensemble (a copy of the normal expert) has the normal expert's OKS
    col = persons[0].index
    assert people == 24 and all(r[col("oks_ensemble")] == r[col("oks_normal")] for r in persons[1:])
    # constructed so that disagreement grows with the error; every person is found by >= 2
    # experts and matched, so the pose level holds them all
    corr = s["pose"]["correlation"]["translational"]["normal"]
    assert corr["n"] == people == s["pose"]["people"]["normal"]
    assert corr["spearman_r"] > 0.5 and corr["spearman_p"] < 0.05
    error = 1 - np.array([float(r[col("oks_normal")]) for r in persons[1:]])
    worst = unc.ause(*unc.sparsification(-error, error))     # the reversed ranking
    assert 0 < s["pose"]["ause"]["translational"]["normal"] < 0.5 * worst
    # the dark expert predicted 16 of the 24: its pose level has those only
    assert s["pose"]["people"]["dark"] == 16
    # detection level: the dark expert's misses are the 8 second people
    d = s["detection"]
    assert d["people"] == people and d["found_by_fewer_than_two"] == 0
    assert d["share_found_by_fewer_than_two"] == 0 and d["gt_people_found_by_no_expert"] == 3
    dark = d["models"]["dark"]
    assert dark["misses"] == 8 and dark["cases"] == people
    assert dark["correct"] + dark["false_positives"] == 16
    assert [r[col("detection_dark")] for r in second] == ["miss"] * 8
    assert {r[col("detection_normal")] for r in persons[1:]} <= {"correct", "false_positive"}
    assert 0 <= dark["auroc"]["translational"] <= 1
    # the two layers' tables
    det_csv = read_csv(stem.with_name(stem.name + "-detection.csv"))
    assert det_csv[0] == report_unc.DETECTION_HEADER and det_csv[2][0] == "dark"
    assert det_csv[2][3:7] == [str(people), str(dark["correct"]),
                               str(dark["false_positives"]), "8"]
    pose_csv = read_csv(stem.with_name(stem.name + "-pose.csv"))
    assert pose_csv[0] == report_unc.POSE_HEADER and len(pose_csv) == 1 + 2 * 4
    assert pose_csv[1][:3] == ["translational", "normal", str(people)]
    assert float(pose_csv[1][5]) == pytest.approx(corr["spearman_r"], abs=1e-6)
    rc = [r for r in s["risk_coverage"] if r["measure"] == "translational"
          and r["model"] == "normal"]
    assert [r["rejected_fraction"] for r in rc] == [0, 0.1, 0.2, 0.3, 0.5]
    assert [r["people_kept"] for r in rc] == [24, 22, 19, 17, 12]
    # rejecting the most uncertain people leaves the more accurate ones; their predictions
    # alone are gone, so plain AP loses recall
    assert rc[0]["ap"] == rc[0]["ap_kept_people"] > 0.2
    assert rc[-1]["ap_kept_people"] > rc[0]["ap_kept_people"] and rc[-1]["ap"] < rc[0]["ap"]
    for suffix in ("-detection.csv", "-pose.csv", "-sparsification.csv",
                   "-sparsification.png", "-risk_coverage.csv", "-risk_coverage.png",
                   "-quality.json"):
        assert stem.with_name(stem.name + suffix).is_file()
    assert not list(results.glob(".*tmp"))                  # nothing half-written


def test_cli_without_ground_truth_and_without_ensemble(tmp_path):
    coco_root, results = write_scene(tmp_path, with_gt=False, with_ensemble=False)
    r = run_cli("eval/util_ainu.py", "--coco_dataType", DATA_TYPE, "--results_dir", results,
                "--coco_root", coco_root)
    assert r.returncode == 0, r.stderr
    assert "no ground truth" in r.stdout and "ensemble columns left empty" in r.stdout
    stem = RunLayout(results).uncertainty_stem(DATA_TYPE, N_IMAGES)
    q = json.loads(stem.with_name(stem.name + "-quality.json").read_text())
    assert "pose" not in q and "detection" not in q and q["counts"]["people"] > 0
    assert not stem.with_name(stem.name + "-detection.csv").exists()
    assert q["counts"]["images"] == N_IMAGES - 1       # no ground truth: images with predictions
    assert not stem.with_name(stem.name + "-sparsification.png").exists()
    persons = read_csv(stem.with_name(stem.name + "-persons.csv"))
    assert all(row[-8:] == [""] * 8 for row in persons[1:])     # OKS and detection cases


def test_cli_bad_inputs(tmp_path):
    coco_root, results = write_scene(tmp_path, skip_effect="_dark")
    r = run_cli("eval/util_ainu.py", "--coco_dataType", DATA_TYPE, "--results_dir", results,
                "--coco_root", coco_root, "--fir_img_num", N_IMAGES)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "dark model" in r.stderr
    assert "eval_coco2014_single_scale.py --effect _dark --coco_dataType " in r.stderr
    with pytest.raises(UserError, match="no predictions of the dark model .* --effect _dark"):
        report_unc.analyse(DATA_TYPE, results, coco_root)            # N looked up in the folder
    bad = RunLayout(results).results_file(DATA_TYPE, "_dark", N_IMAGES)
    bad.parent.mkdir(parents=True)
    bad.write_text('[{"image_id": 1, "keypoints": [1, 2]}]')
    with pytest.raises(UserError, match="record 0 is not a COCO keypoint result"):
        report_unc.analyse(DATA_TYPE, results, coco_root)
    bad.write_text('[{"image_id": 77, "score": 1, "keypoints": ' + str([1] * 51) + "}]")
    with pytest.raises(UserError, match="not in the annotations"):
        report_unc.analyse(DATA_TYPE, results, coco_root)
    for effect in EXPERT_EFFECTS:
        other = RunLayout(results).results_file(DATA_TYPE, effect, 5)
        other.parent.mkdir(parents=True)
        other.write_text("[]")
    with pytest.raises(UserError, match=r"several image counts \(5, 14\)"):
        RunLayout(results).find_num_images(DATA_TYPE)
    for effect, n in (("", 5), ("_dark", 7)):
        other = RunLayout(tmp_path / "other").results_file(DATA_TYPE, effect, n)
        other.parent.mkdir(parents=True)
        other.write_text("[]")
    with pytest.raises(UserError, match="cover different image counts"):
        RunLayout(tmp_path / "other").find_num_images(DATA_TYPE, ("", "_dark"))
    r = run_cli("eval/util_ainu.py", "--coco_dataType", "val2014_random2k",
                "--results_dir", results)
    assert r.returncode == 2 and "unknown --coco_dataType" in r.stderr


# ---------------------------------------------------------------- the two layers

import warnings

from model import uncertainty_set as unc_set


def test_auroc_by_hand():
    # errors score 0.9 and 0.4, correct detections 0.5, 0.1 and 0.4: of the 6 (error, correct)
    # pairs the error is higher in 0.9 > all three (3), 0.4 > 0.1 (1), 0.4 = 0.4 (a half)
    score = [0.9, 0.5, 0.4, 0.1, 0.4]
    error = [True, False, True, False, False]
    assert unc.auroc(score, error) == pytest.approx(4.5 / 6)
    assert unc.auroc([1, 2, 3, 4], [False, False, True, True]) == 1
    assert unc.auroc([1, 2, 3, 4], [True, True, False, False]) == 0
    assert unc.auroc([0.7] * 4, [True, False, True, False]) == 0.5        # all tied: chance
    assert unc.auroc([1, 2], [True, True]) is None and unc.auroc([], []) is None
    assert unc.auroc([np.nan, 1, 2], [False, False, True]) == 1            # NaN left out


def test_detection_cases_by_hand():
    predicted = [True, True, True, False, False, True]
    gt_id = [7, 8, -1, 9, -1, 10]
    oks = [0.8, 0.3, 0.0, 0.0, np.nan, 0.5]
    outcome = unc.detection_outcome(predicted, gt_id, oks)
    # matched at >= 0.5 / below 0.5 / no ground truth / not predicted / nothing / exactly 0.5
    assert outcome.tolist() == ["correct", "false_positive", "false_positive", "miss", "",
                                "correct"]
    judged = unc.judge_detection([0.1, 0.6, 0.9, 1.0, 1.0, 0.3], outcome)
    assert judged == {"cases": 5, "correct": 2, "false_positives": 2, "misses": 1,
                      "auroc": 1.0}
    judged = unc.judge_detection([0.1, 0.2], np.array(["correct", "correct"]))
    assert judged["auroc"] is None and judged["note"] == "AUROC undefined: no error"


def test_pose_level_needs_ten_people_and_never_warns():
    rng = np.random.default_rng(5)
    u, e = rng.uniform(size=9), rng.uniform(size=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # any warning fails the test
        judged, curve = unc.judge_pose(u, e)
        assert judged["n"] == 9 and curve is None and judged["ause"] is None
        assert judged["spearman_r"] is None and judged["note"] == "n/a: 9 people (fewer than 10)"
        judged, curve = unc.judge_pose(np.r_[u, 0.5], np.r_[e, 0.5])
        assert judged["n"] == 10 and judged["spearman_p"] is not None and len(curve[0]) == 10
        flat, _ = unc.judge_pose(u[:1].repeat(12), rng.uniform(size=12))
        assert flat["spearman_r"] is None and "constant uncertainty" in flat["note"]
        near = unc.correlation(1 + np.r_[np.zeros(11), 1e-15], rng.uniform(size=12))
        assert near["pearson_r"] is None and near["note"].startswith("correlation undefined")
    mask = unc.pose_people([3, 2, 1, 3, 2], [True, True, True, False, True], [1, 2, 3, 4, -1])
    assert mask.tolist() == [True, True, False, False, False]


def constructed_people(rng, n_both=40, n_single=40, pose_error=None):
    """A set where agreement on who is there and pose error are independent: n_both people
    found by all three experts (disagreement uniform in [0, 0.3], every model's error
    uniform in [0, 0.5] unless pose_error(u) is given) and n_single real people found by
    the dark expert alone (disagreement 1, flagged; the normal expert, the motion-blur
    expert and the ensemble did not predict them: error 1)."""
    n = n_both + n_single
    u = np.r_[rng.uniform(0, 0.3, n_both), np.ones(n_single)]
    err = rng.uniform(0, 0.5, (n_both, 4)) if pose_error is None else \
        np.clip(pose_error(u[:n_both]), 0, 1)[:, None].repeat(4, 1)
    oks = np.zeros((n, 4))
    oks[:n_both] = 1 - err
    oks[n_both:, 1] = 1 - rng.uniform(0, 0.5, n_single)           # the dark expert's
    predicted = np.zeros((n, 4), bool)
    predicted[:n_both] = True
    predicted[n_both:, 1] = True
    return {"image_id": np.arange(n), "translational": u, "rotational": u,
            "num_experts": np.r_[np.full(n_both, 3), np.ones(n_single, int)],
            "flagged": np.r_[np.zeros(n_both, bool), np.ones(n_single, bool)],
            "gt_id": np.arange(n), "oks": oks, "predicted": predicted, "records": [[]] * 4,
            "counts": {"gt_people": n, "gt_people_matched": n, "ensemble_unmatched": 0}}


def test_all_people_statistic_is_significant_by_construction_the_pose_level_is_not():
    people = constructed_people(np.random.default_rng(11))
    old = unc_set.all_people_layer(people)["correlation"]["translational"]["normal"]
    pose, curves = unc_set.pose_layer(people)
    new = pose["correlation"]["translational"]["normal"]
    # over all people the flagged misses (disagreement 1, error 1) make a "strong" correlation
    assert old["n"] == 80 and old["spearman_r"] > 0.8 and old["spearman_p"] < 1e-15
    # over the people the normal expert predicted and two experts found: nothing to find
    assert new["n"] == 40 == pose["people"]["normal"]
    assert abs(new["spearman_r"]) < 0.3 and new["spearman_p"] > 0.05
    assert set(curves["translational"]) == {"normal", "dark", "motion_blur", "ensemble"}
    # the dark expert predicted all 80, but the single-found ones are not in its pose level
    assert pose["people"]["dark"] == 40
    # the detection level is where the signal is: every miss scores 1, every hit below 0.3
    d = unc_set.detection_layer(people)
    assert d["share_found_by_fewer_than_two"] == 0.5
    assert d["models"]["normal"] == {"cases": 80, "correct": 40, "false_positives": 0,
                                     "misses": 40, "auroc": {"translational": 1.0,
                                                             "rotational": 1.0}}
    # and the dark expert, which found them, has no error to flag: AUROC undefined
    assert d["models"]["dark"]["auroc"]["translational"] is None


def test_pose_level_finds_a_real_ranking():
    rng = np.random.default_rng(11)
    people = constructed_people(rng, pose_error=lambda u: u + rng.normal(0, 0.05, len(u)))
    pose, _ = unc_set.pose_layer(people)
    new = pose["correlation"]["translational"]["normal"]
    assert new["n"] == 40 and new["spearman_r"] > 0.7 and new["spearman_p"] < 1e-6
    worst = unc.ause(*unc.sparsification(-people["translational"][:40],
                                         people["translational"][:40]))
    assert 0 <= pose["ause"]["translational"]["normal"] < 0.2 * worst
    few, curves = unc_set.pose_layer(constructed_people(rng, n_both=9))
    assert few["people"]["normal"] == 9 and curves["translational"] == {}
    assert few["correlation"]["translational"]["normal"]["spearman_r"] is None
    assert few["ause"]["translational"]["normal"] is None
