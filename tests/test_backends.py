"""--backend onnxruntime / openvino in the evaluation and the fused ensemble: the same people
as TensorFlow on random-weight networks of the small configuration (weights with real
magnitudes, from converted random caffemodels), the backend in run.json and in the resume
key, the default .onnx beside the Keras weights, and one-line refusals of wrong files.

What agrees, measured on the 16 synthetic val images (a seed-3 network of the configuration's
earlier 7x7 refinement, about 1,270 people, since a random network finds many): OpenVINO's
records equal TensorFlow's on every image (same people, coordinates within 0.01 px, scores
within 1e-4 relative; 4 of 4 seeds tried; its maps equal Keras' bit for bit on this CPU);
ONNX Runtime's maps differ from Keras' by about 5e-6 relative, which flips the decoder's
thresholds on near ties: 15 of 16 images equal, one with 90 people instead of 89 (4 of them
different), and on other seeds 0.2-0.4 % of the people differ with equal counts. So the test
asserts exact agreement for OpenVINO and 99 % of the people identical (counts within 1 %) for
ONNX Runtime; the COCO AP/AR of all three agree to 3 decimals (0 here: random people)."""
import json
from dataclasses import asdict

import numpy as np
import pytest
from test_ensemble import run_cli
import test_evaluation
from test_evaluation import one_line_error, run_script
from test_export import converted_weights

from model import backends, evaluation, export, inference, paths, runs
from model import ensemble as ens
from model.errors import UserError
from model.runs import RunLayout

DATA_TYPE = "val2014_random1k"
COORD_TOL, SCORE_RTOL = 0.01 + 1e-9, 1e-4
eval_root = test_evaluation.eval_root      # the fixture: the synthetic val images as a set


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Three random small networks: [(Keras .h5, exported .onnx)] with seeds 9, 7, 5. Whether
    a random network's maps hold people is chance (seed 3 finds none on the set, these 900,
    238 and 213 on its first 8 images); the tests check that they found many."""
    root = tmp_path_factory.mktemp("backend_experts")
    out = []
    for seed in (9, 7, 5):
        weights = converted_weights(root, "small", seed=seed).rename(root / f"s{seed}.h5")
        onnx_path = root / f"s{seed}.onnx"
        export.export_onnx("small", weights, onnx_path)
        out.append((weights, onnx_path))
    return out


def by_image(records):
    out = {}
    for r in records:
        out.setdefault(int(r["image_id"]), []).append(
            np.array(r["keypoints"] + [r["score"]], np.float64))
    return {i: np.stack(v) for i, v in out.items()}


def identical_people(a, b):
    """How many people of record list `a` have an identical one in `b` (the same image, every
    keypoint value within 0.01, score within 1e-4 relative); and the per-image counts."""
    a, b = by_image(a), by_image(b)
    same = 0
    for image_id, ours in a.items():
        theirs = b.get(image_id, np.zeros((0, ours.shape[1])))
        if not len(theirs):
            continue
        coords = np.abs(ours[:, None, :-1] - theirs[None, :, :-1]).max(-1) <= COORD_TOL
        scores = (np.abs(ours[:, None, -1] - theirs[None, :, -1])
                  <= SCORE_RTOL * np.abs(ours[:, None, -1]))
        same += int((coords & scores).any(1).sum())
    counts = {i: (len(a.get(i, ())), len(b.get(i, ()))) for i in set(a) | set(b)}
    return same, counts


def assert_same_people(reference, other, exact):
    same, counts = identical_people(reference, other)
    same_back, _ = identical_people(other, reference)
    if exact:
        assert all(n == m for n, m in counts.values()), counts
        assert same == same_back == len(reference)
    else:
        assert abs(len(other) - len(reference)) <= 0.01 * len(reference)
        assert same >= 0.99 * len(reference) and same_back >= 0.99 * len(other)


def evaluate(root, results, backend, model_file, *extra):
    result = run_script("--coco_root", root, "--results_dir", results, "--config", "small",
                        "--weights", model_file, "--backend", backend, *extra)
    assert result.returncode == 0, result.stderr
    return RunLayout(results).folder(DATA_TYPE, "", 16)


@pytest.mark.slow
def test_evaluation_backends_give_the_same_people(eval_root, experts, tmp_path):
    h5, onnx_path = experts[0]
    folders = {b: evaluate(eval_root, tmp_path / b, b, h5 if b == "tensorflow" else onnx_path)
               for b in backends.BACKENDS}
    records = {b: json.loads((f / runs.RESULTS_JSON).read_text()) for b, f in folders.items()}
    metrics = {b: runs.read_metrics(f / runs.METRICS_CSV) for b, f in folders.items()}
    assert len(records["tensorflow"]) > 500                 # a random network finds many
    assert_same_people(records["tensorflow"], records["openvino"], exact=True)
    assert_same_people(records["tensorflow"], records["onnxruntime"], exact=False)
    for b, folder in folders.items():
        run = json.loads((folder / runs.RUN_JSON).read_text())
        assert run["flags"]["backend"] == b and run["config"] == "small"
        assert run["weights"] == str(h5 if b == "tensorflow" else onnx_path)
        for stat in evaluation.STAT_NAMES:
            assert round(metrics[b][("all", stat)], 3) == \
                round(metrics["tensorflow"][("all", stat)], 3)
        assert metrics[b][("all", "seconds_per_image")] > 0


def test_a_run_of_one_backend_is_not_resumed_by_another(eval_root, experts, tmp_path):
    """An interrupted run's partial results are resumed by the same backend only."""
    _, onnx_path = experts[0]
    ids = [im["id"] for im in json.loads(
        paths.annotation_file(eval_root, DATA_TYPE).read_text())["images"][:3]]
    settings = asdict(inference.InferenceSettings((1.5,), scale_mode="boxsize", boxsize=184))
    earlier = {"image_id": ids[0], "category_id": 1, "keypoints": [0] * 51, "score": 1.0}
    results = tmp_path / "results"
    run_dir = RunLayout(results).folder(DATA_TYPE, "", 3)
    run_dir.mkdir(parents=True)
    outcomes = {}
    for made_by in ("onnxruntime", "tensorflow"):
        key = {"backend": made_by, "weights": str(onnx_path), "config": "small",
               "settings": settings, "image_ids": ids}
        (run_dir / runs.PARTIAL_JSON).write_text(json.dumps(
            {"key": key, "records": [earlier], "image_ids": ids[:2], "seconds": 1.0}))
        result = run_script("--coco_root", eval_root, "--results_dir", results,
                            "--fir_img_num", 3, "--config", "small", "--weights", onnx_path,
                            "--backend", "onnxruntime")
        assert result.returncode == 0, result.stderr
        outcomes[made_by] = (result.stderr,
                             json.loads((run_dir / runs.RESULTS_JSON).read_text()))
    stderr, records = outcomes["onnxruntime"]
    assert "resuming: 2 of 3 images already predicted" in stderr and earlier in records
    stderr, records = outcomes["tensorflow"]
    assert "resuming" not in stderr and "another backend" in stderr
    assert earlier not in records and {r["image_id"] for r in records} <= set(ids)
    assert not (run_dir / runs.PARTIAL_JSON).exists()


def test_evaluation_refuses_wrong_files_in_one_line(eval_root, experts, tmp_path):
    h5, onnx_path = experts[0]
    results = tmp_path / "results"
    base = ["--coco_root", eval_root, "--results_dir", results, "--fir_img_num", 2]
    line = one_line_error(run_script(*base, "--config", "small", "--weights", h5,
                                     "--backend", "onnxruntime"))
    assert "is a Keras weight file, not an ONNX model" in line and "python -m model.export" in line
    line = one_line_error(run_script(*base, "--config", "full", "--weights", onnx_path,
                                     "--backend", "openvino"))
    assert "exported from configuration 'small', not 'full'" in line
    line = one_line_error(run_script(*base, "--weights", onnx_path, "--backend", "tensorrt"))
    assert "unknown --backend 'tensorrt'" in line and "onnxruntime" in line
    line = one_line_error(run_script(*base, "--config", "small", "--weights", onnx_path))
    assert "is an ONNX model; run it with --backend onnxruntime or openvino" in line
    text = tmp_path / "weights.onnx"
    text.write_text("not an onnx model")
    assert "not an ONNX model" in one_line_error(run_script(
        *base, "--config", "small", "--weights", text, "--backend", "onnxruntime"))
    assert not results.exists()


def test_default_onnx_beside_the_keras_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "expert_weights_dir", lambda effect: tmp_path / f"w{effect}")
    folder = tmp_path / "w_dark"
    folder.mkdir()
    (folder / "weights.0007.h5").write_bytes(b"")
    with pytest.raises(UserError) as err:
        backends.find_model_file("onnxruntime", "_dark", None, "small")
    assert str(folder / "weights.0100.onnx") in str(err.value)
    assert (f"python -m model.export --config small --weights {folder / 'weights.0007.h5'} "
            f"--out {folder / 'weights.0007.onnx'}") in str(err.value)
    for epoch in (3, 12):
        (folder / f"weights.{epoch:04d}.onnx").write_bytes(b"")
    path, note = backends.find_model_file("openvino", "_dark", None, "small")
    assert path.name == "weights.0012.onnx" and "newest" in note
    (folder / "weights.0100.onnx").write_bytes(b"")
    assert backends.find_model_file("onnxruntime", "_dark", None, "small")[0].name == \
        "weights.0100.onnx"
    assert backends.find_model_file("tensorflow", "_dark", None, "small")[0].name == \
        "weights.0007.h5"


def test_fuse_takes_the_onnx_beside_the_recorded_weights(tmp_path):
    results = tmp_path / "results"
    layout = RunLayout(results)
    for k, effect in enumerate(ens.EXPERT_EFFECTS):
        folder = layout.folder(DATA_TYPE, effect, 4)
        folder.mkdir(parents=True)
        (tmp_path / f"e{k}.h5").write_bytes(b"")
        (folder / runs.RUN_JSON).write_text(json.dumps(
            {"config": "small", "weights": str(tmp_path / f"e{k}.h5")}))
    tf = ens.fuse_plan(results, DATA_TYPE, 4)
    assert tf[0] == "small" and tf[2] == [str(tmp_path / f"e{k}.h5") for k in range(3)]
    with pytest.raises(UserError, match=r"no ONNX model e0.onnx lies beside it; export it "
                                        r"with python -m model.export --config small"):
        ens.fuse_plan(results, DATA_TYPE, 4, backend="onnxruntime")
    for k in range(3):
        (tmp_path / f"e{k}.onnx").write_bytes(b"")
    assert ens.fuse_plan(results, DATA_TYPE, 4, backend="openvino")[2] == \
        [str(tmp_path / f"e{k}.onnx") for k in range(3)]


def fuse(root, results, domain, backend, files):
    r = run_cli("--coco_dataType", DATA_TYPE, "--method", "fuse", "--results_dir", results,
                "--coco_root", root, "--domain_results", domain, "--config", "small",
                "--fir_img_num", 8, "--weights", *files, "--backend", backend)
    assert r.returncode == 0, r.stderr
    out = RunLayout(results).results_file(DATA_TYPE, "_ensemble_fuse", 8)
    return json.loads(out.read_text()), json.loads((out.parent / runs.RUN_JSON).read_text())


@pytest.mark.slow
def test_fused_ensemble_on_onnxruntime_gives_the_same_people(eval_root, experts, tmp_path):
    images = json.loads(paths.annotation_file(eval_root, DATA_TYPE).read_text())["images"]
    rng = np.random.default_rng(0)
    domain = tmp_path / "domain.json"
    domain.write_text(json.dumps([{"image_id": im["id"],
                                   "effect_prob": rng.dirichlet([1, 1, 1]).tolist()}
                                  for im in images]))
    tf, tf_run = fuse(eval_root, tmp_path / "tf", domain, "tensorflow", [h for h, _ in experts])
    ort, ort_run = fuse(eval_root, tmp_path / "ort", domain, "onnxruntime",
                        [o for _, o in experts])
    assert len(tf) > 100
    assert_same_people(tf, ort, exact=False)
    assert tf_run["backend"] == "tensorflow" and ort_run["backend"] == "onnxruntime"
    assert ort_run["weights"] == [str(o) for _, o in experts]

    # wrong files: one line, nothing written
    bad = tmp_path / "bad"
    keras, onnx_files = [h for h, _ in experts], [o for _, o in experts]
    for backend, config, files, message in [
            ("onnxruntime", "small", keras, "is a Keras weight file"),
            ("openvino", "full", onnx_files, "exported from configuration 'small', not 'full'"),
            ("tensorrt", "small", keras, "unknown --backend 'tensorrt'")]:
        r = run_cli("--coco_dataType", DATA_TYPE, "--method", "fuse", "--results_dir", bad,
                    "--coco_root", eval_root, "--domain_results", domain, "--config", config,
                    "--weights", *files, "--backend", backend)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert message in r.stderr
    assert not bad.exists()
