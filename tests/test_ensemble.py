"""Routing, map fusion and the oracle of model.ensemble, and the ensemble script."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from model import ensemble as ens, predict_set
from model import inference, network
from model.errors import UserError
from model.domains import EXPERT_EFFECTS
from model.paths import annotation_file, image_dir, image_file_name
from model.runs import RunLayout

REPO = Path(__file__).resolve().parent.parent
DATA_TYPE = "val2014_random1k_dark"
N = 6


def test_routing_picks_the_argmax_expert():
    probs = {1: np.array([0.7, 0.2, 0.1]), 2: np.array([0.1, 0.3, 0.6]),
             3: np.array([0.2, 0.5, 0.3]), 4: np.array([0.4, 0.4, 0.2])}
    choice = ens.route_choice(probs, [1, 2, 3, 4])
    assert choice == {1: 0, 2: 2, 3: 1, 4: 0}          # a tie goes to the earlier expert
    rec = lambda i, e: {"image_id": i, "category_id": 1, "keypoints": [e] * 51, "score": 1.0}
    experts = [[rec(i, e) for i in (1, 2, 3, 4) for _ in range(e + 1)] for e in range(3)]
    picked = ens.select_records(experts, choice)
    assert sorted((r["image_id"], r["keypoints"][0]) for r in picked) == \
        [(1, 0), (2, 2), (2, 2), (2, 2), (3, 1), (3, 1), (4, 0)]


@pytest.fixture(scope="module")
def small_experts():
    """Three random-init networks of the small configuration (different seeds)."""
    return [network.build_pose_model("small", vgg19=None, seed=s) for s in range(3)]


def count_network_runs(monkeypatch, models):
    """{id(model): inputs it has run on} as inference.run_network is called from now on."""
    runs = {id(m): 0 for m in models}
    run_network = inference.run_network

    def counting(model, batch):
        runs[id(model)] += len(batch)
        return run_network(model, batch)

    monkeypatch.setattr(inference, "run_network", counting)
    return runs


def test_fused_set_weights_each_image_by_its_own_probabilities(small_experts, tmp_path,
                                                               monkeypatch):
    """predict_dataset with per-image weights (the fused ensemble) gives each image the
    weighted mean of the experts' maps, and runs an expert only on images it weighs."""

    rng = np.random.default_rng(0)
    probs = {1: [0.0, 1.0, 0.0], 2: [0.5, 0.3, 0.2], 3: [0.02, 0.9, 0.08], 4: [1.0, 0.0, 0.0]}
    weights = {i: ens.fusion_weights(p, skip_below=0.05) for i, p in probs.items()}
    images, pixels = [], {}
    for i in probs:
        pixels[i] = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), pixels[i])
        images.append({"id": i, "file_name": f"{i}.png", "height": 40, "width": 56})
    network = inference.run_network
    runs = count_network_runs(monkeypatch, small_experts)
    # the decoder step hands back the averaged maps instead of people
    monkeypatch.setattr(inference, "decode_maps", lambda heat, paf, hw, s: (heat, paf.dense()))
    monkeypatch.setattr(inference.decode, "people_to_coco",
                        lambda maps, image_id: [{"image_id": image_id, "score": 0, "maps": maps}])
    settings = inference.InferenceSettings(resolution=2)
    records, info = predict_set.predict_dataset(small_experts, images, tmp_path, settings,
                                              weights=weights.__getitem__, progress=False)
    assert info["image_ids"] == [1, 2, 3, 4]
    assert [runs[id(m)] for m in small_experts] == [2, 3, 2]   # zero weights are not run
    monkeypatch.setattr(inference, "run_network", network)
    for record in records:
        i = record["image_id"]
        alone = [inference.predict_maps(m, pixels[i], resolution=2) for m in small_experts]
        for k in (0, 1):                                         # heatmaps, PAFs
            expected = sum(w * a[k] for w, a in zip(weights[i], alone))
            np.testing.assert_allclose(record["maps"][k], expected, rtol=1e-5, atol=1e-6)


def test_fusion_weights_skip_unlikely_experts():
    assert ens.fusion_weights([0.5, 0.3, 0.2]).tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert ens.fusion_weights([0.9, 0.08, 0.02], skip_below=0.05).tolist() == \
        pytest.approx([0.9 / 0.98, 0.08 / 0.98, 0])
    assert ens.fusion_weights([0.34, 0.33, 0.33], skip_below=0.5).tolist() == [1, 0, 0]


def person(dx=0.0):
    xy = np.array([[30, 10], [34, 6], [26, 6], [38, 8], [22, 8], [45, 35], [15, 35], [52, 65],
                   [8, 65], [55, 92], [5, 92], [40, 95], [20, 95], [42, 130], [18, 130],
                   [43, 165], [17, 165]], np.float64)
    kp = np.full((17, 3), 2.0)
    kp[:, :2] = xy + [100 + dx, 50]
    return kp


def gt_ann(ann_id, image_id, kp):
    box = [kp[:, 0].min(), kp[:, 1].min(), np.ptp(kp[:, 0]), np.ptp(kp[:, 1])]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "num_keypoints": 17, "bbox": box, "area": 0.6 * box[2] * box[3],
            "keypoints": kp.ravel().tolist()}


def record(image_id, kp, score=1.0):
    kp = kp.copy()
    kp[:, 2] = 1
    return {"image_id": image_id, "category_id": 1, "keypoints": kp.ravel().tolist(),
            "score": score}


def test_image_score_and_oracle():
    gts = [gt_ann(1, 7, person()), gt_ann(2, 7, person(dx=200))]
    exact = [record(7, person()), record(7, person(dx=200))]
    assert ens.image_score(exact, gts) == pytest.approx(1)
    assert ens.image_score(exact[:1], gts) == pytest.approx(0.5)          # one missed
    extra = exact + [record(7, person(dx=400))]
    assert ens.image_score(extra, gts) == pytest.approx(2 / 3)            # one extra
    assert ens.image_score([], []) == 1 and ens.image_score(exact, []) == 0
    crowd = dict(gt_ann(3, 7, person(dx=400)), iscrowd=1)
    assert ens.image_score(exact, gts + [crowd]) == pytest.approx(1)      # ignored like COCOeval
    experts = [exact[:1], extra, exact]
    assert ens.oracle_choice(experts, {7: gts}, [7]) == {7: 2}


def test_domain_probabilities_must_cover_every_image(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"image_id": 1, "effect_prob": [0.2, 0.6, 0.2]},
                                {"image_id": 2, "effect_prob": [2, 1, 1]}]))
    probs = ens.load_domain_probs(path, [1, 2])
    assert probs[2].tolist() == [0.5, 0.25, 0.25]
    with pytest.raises(UserError, match="no entry for image id 3"):
        ens.load_domain_probs(path, [1, 2, 3, 4])
    path.write_text(json.dumps([{"image_id": 1, "effect_prob": [0.2, 0.8]}]))
    with pytest.raises(UserError, match="expected 3 non-negative"):
        ens.load_domain_probs(path, [1])


# ---------------------------------------------------------------- the script

def write_scene(tmp_path, probs=None, skip_effect=None):
    """N images of one or two people; the normal expert is exact on even images, the dark
    expert on odd ones, the motion-blur expert always 30 px off."""
    images, anns = [], []
    preds = {e: [] for e in EXPERT_EFFECTS}
    for i in range(N):
        image_id = 500 + i
        images.append({"id": image_id, "width": 640, "height": 480})
        for k in range(1 + i % 2):
            kp = person(dx=250 * k)
            anns.append(gt_ann(len(anns) + 1, image_id, kp))
            good = {"": i % 2 == 0, "_dark": i % 2 == 1, "_motion_blur": False}
            for e in EXPERT_EFFECTS:
                off = 0 if good[e] else (8 if e != "_motion_blur" else 30)
                preds[e].append(record(image_id, person(dx=250 * k + off)))
    coco_root = tmp_path / "coco"
    path = annotation_file(coco_root, DATA_TYPE)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "person"}]}))
    results = tmp_path / "results"
    for e in EXPERT_EFFECTS:
        if e != skip_effect:
            out = RunLayout(results).results_file(DATA_TYPE, e, N)
            out.parent.mkdir(parents=True)
            out.write_text(json.dumps(preds[e]))
    if probs is None:   # the classifier says: dark on odd images, normal on even ones
        probs = [{"image_id": 500 + i, "effect_prob": [0.1, 0.8, 0.1] if i % 2 else
                  [0.7, 0.2, 0.1]} for i in range(N)]
    domain = tmp_path / "domain.json"
    domain.write_text(json.dumps(probs))
    return coco_root, results, domain


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO / "train_expert_classifier/ensemble.py"),
                           *map(str, args)], capture_output=True, text=True, env=env, cwd="/")


def test_route_cli_writes_where_the_evaluation_reads(tmp_path):
    coco_root, results, domain = write_scene(tmp_path)
    r = run_cli("--coco_dataType", DATA_TYPE, "--results_dir", results, "--coco_root",
                coco_root, "--domain_results", domain)
    assert r.returncode == 0, r.stderr
    out = RunLayout(results).results_file(DATA_TYPE, "_ensemble", N)
    routed = json.loads(out.read_text())
    assert len(routed) == 9
    report = json.loads((out.parent / "ensemble_report.json").read_text())
    assert report["routed_images"] == {"normal": 3, "dark": 3, "motion_blur": 0}
    assert report["oracle_images"] == report["routed_images"]
    assert report["route_agrees_with_oracle"] == 1.0
    ap = {row["model"]: row["AP"] for row in report["comparison"]}
    assert ap["route"] == pytest.approx(1) and ap["oracle"] == pytest.approx(1)
    assert ap["normal"] < 1 and ap["motion_blur"] < ap["normal"]
    assert (out.parent / "ensemble_report.csv").is_file()
    assert (out.parent / ens.ORACLE_JSON).is_file()
    assert "route ensemble" in r.stdout


def test_route_bad_inputs(tmp_path):
    probs = [{"image_id": 500 + i, "effect_prob": [1, 0, 0]} for i in range(N) if i != 3]
    coco_root, results, domain = write_scene(tmp_path, probs=probs)
    r = run_cli("--coco_dataType", DATA_TYPE, "--results_dir", results, "--coco_root",
                coco_root, "--domain_results", domain)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "no entry for image id 503" in r.stderr
    assert "train_domain_classifier/ensemble.py --coco_dataType " + DATA_TYPE in r.stderr
    assert not RunLayout(results).results_file(DATA_TYPE, "_ensemble", N).exists()
    with pytest.raises(UserError, match="domain probabilities not found"):
        ens.run("route", DATA_TYPE, results, coco_root, tmp_path / "missing.json")

    coco_root, results, domain = write_scene(tmp_path / "b", skip_effect="_motion_blur")
    with pytest.raises(UserError, match="motion_blur model.*--effect _motion_blur"):
        ens.run("route", DATA_TYPE, results, coco_root, domain, num_images=N)
    with pytest.raises(UserError, match="no predictions of the motion_blur model"):
        ens.run("route", DATA_TYPE, results, coco_root, domain)
    r = run_cli("--coco_dataType", "nonsense", "--results_dir", results)
    assert r.returncode == 2 and "unknown --coco_dataType" in r.stderr


def test_fuse_cli_runs_the_three_networks(tmp_path, small_experts):

    coco_root, results, domain = write_scene(tmp_path)
    folder = image_dir(coco_root, DATA_TYPE)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N):
        if i != 4:      # image 504 is missing: skipped and counted
            cv2.imwrite(str(folder / image_file_name(DATA_TYPE, 500 + i)),   # annotated size
                        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    weights = []
    for k, model in enumerate(small_experts):
        weights.append(tmp_path / f"expert{k}.weights.h5")
        network.save_weights(model, weights[-1])
    r = run_cli("--coco_dataType", DATA_TYPE, "--method", "fuse", "--results_dir", results,
                "--coco_root", coco_root, "--domain_results", domain, "--config", "small",
                "--weights", *weights, "--skip_below", "0.15")
    assert r.returncode == 0, r.stderr
    out = RunLayout(results).results_file(DATA_TYPE, "_ensemble_fuse", N)
    assert isinstance(json.loads(out.read_text()), list)
    report = json.loads((out.parent / "ensemble_report.json").read_text())
    # normal 0.7 / dark 0.2 on even images, dark 0.8 alone on odd ones (0.1 < skip_below)
    assert report["expert_runs"] == {"normal": 2, "dark": 5, "motion_blur": 0}
    assert report["network_runs"] == 7 and report["skipped_images"][0][0] == 504
    assert report["weights"] == [str(w) for w in weights]
    assert {row["model"] for row in report["comparison"]} == \
        {"normal", "dark", "motion_blur", "fuse", "oracle"}


def test_fused_ensemble_takes_the_evaluation_of_an_image_that_weighs_one_expert(
        small_experts, tmp_path, monkeypatch):
    """An image whose whole fusion weight is on one expert takes that expert's people from its
    evaluation run, when the run predicted it with the same weight file, configuration,
    settings and backend; every other image runs its networks."""
    from model import eval_run

    # image 1: dark alone; 2: normal and dark; 3: normal alone, not in the normal run; 4: dark
    probs = {1: [0.02, 0.96, 0.02], 2: [0.5, 0.5, 0.0], 3: [1.0, 0.0, 0.0], 4: [0.0, 1.0, 0.0]}
    images = []
    for i in probs:
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((40, 56, 3), 90, np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "height": 40, "width": 56})
    weights, run_dirs = [], []
    for k, model in enumerate(small_experts):
        weights.append(tmp_path / f"expert{k}.weights.h5")
        network.save_weights(model, weights[-1])
    settings = inference.InferenceSettings(resolution=2)
    marker = {1: [record(1, person())], 4: []}      # no network gives these keypoints
    for k, ids in enumerate([[2], [1, 4], []]):     # the image ids each expert's run predicted
        run_dirs.append(tmp_path / f"run{k}")
        run_dirs[-1].mkdir()
        (run_dirs[-1] / "keypoint_results.json").write_text(json.dumps(
            [r for i in ids for r in marker.get(i, [record(i, person(dx=k))])]))
        key = eval_run.prediction_key("tensorflow", weights[k], "small", settings, [])
        (run_dirs[-1] / "run.json").write_text(json.dumps(
            {"image_ids": ids, "prediction_seconds": 3.0 * len(ids),
             "key": dict(key, image_ids=ids)}))
    runs = count_network_runs(monkeypatch, small_experts)

    def fuse():
        return ens.fuse_set("x", tmp_path, images, probs, ("small", settings), weights,
                            skip_below=0.05, progress=False, expert_runs=run_dirs)

    monkeypatch.setattr(ens, "image_dir", lambda root, data_type: tmp_path)
    loaded = []

    def load_model(backend, config, path):             # the networks counted above
        loaded.append(weights.index(Path(path)))
        return small_experts[loaded[-1]]

    monkeypatch.setattr(ens.backends, "load_model", load_model)
    records, seconds, info = fuse()
    assert [runs[id(m)] for m in small_experts] == [2, 1, 0]   # normal: 2, 3; dark: 2
    assert loaded == [0, 1] and info["loaded_models"] == ["normal", "dark"]  # no motion blur
    assert [r for r in records if r["image_id"] in (1, 4)] == marker[1]
    assert info["reused_images"] == {"normal": 0, "dark": 2, "motion_blur": 0}
    assert info["expert_runs"] == {"normal": 2, "dark": 3, "motion_blur": 0}
    assert info["network_runs"] == 3
    assert info["reused_seconds"] == 6.0 and seconds >= 6.0     # 3 s per image of that run
    # Images 1 and 4 alone, both taken from the dark run: no network is loaded or run.
    loaded.clear()
    records, _, info = ens.fuse_set("x", tmp_path, [images[0], images[3]], probs,
                                    ("small", settings), weights, skip_below=0.05,
                                    progress=False, expert_runs=run_dirs)
    assert loaded == [] and info["loaded_models"] == [] and info["network_runs"] == 0
    assert records == marker[1]
    # Retrained dark weights (another modification time) are another run: nothing reused.
    os.utime(weights[1], ns=(1, 1))
    runs.update({id(m): 0 for m in small_experts})
    _, _, info = fuse()
    assert [runs[id(m)] for m in small_experts] == [2, 3, 0]
    assert info["reused_images"]["dark"] == 0 and info["reused_seconds"] == 0.0
