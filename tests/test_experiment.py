"""End to end: run_experiment.py on a tiny synthetic set runs every stage, writes every output
in a form the next stage and a reader can parse, and a rerun skips every finished step."""
import json
import subprocess
import sys

import cv2
import pytest

from model import evaluation, paths
from model.evaluation import METRICS_CSV, RESULTS_JSON, run_folder

TINY = ["--num_train", "16", "--num_val", "16", "--pose_epochs", "1", "--finetune_epochs", "1",
        "--pose_steps", "2", "--pose_batch", "4", "--classifier_epochs", "1",
        "--classifier_milestones", "1", "--classifier_input_size", "32"]


def run(tmp_path):
    argv = [sys.executable, str(paths.REPO_ROOT / "run_experiment.py"), "--coco_root",
            str(tmp_path / "coco"), "--output_root", str(tmp_path / "out"), *TINY]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_runner_writes_every_output_and_resumes(tmp_path):
    log = run(tmp_path)
    out, coco = tmp_path / "out", tmp_path / "coco"
    assert "step 'synthetic_coco'" not in log            # no failure line
    for effect in paths.EXPERT_EFFECTS:
        assert (out / f"weights{effect}" / "weights.0001.h5").is_file()
    for data_type in paths.EVAL_DATATYPES:
        num = len(json.loads(paths.annotation_file(coco, data_type).read_text())["images"])
        assert num > 0
        probs = json.loads((out / "domain_results" / f"{data_type}.json").read_text())
        assert len(probs) == num and all(len(p["effect_prob"]) == 3 for p in probs)
        for effect in paths.EVAL_MODELS:
            folder = run_folder(out / "eval_results", data_type, effect, num)
            metrics = evaluation.read_metrics(folder / METRICS_CSV)
            assert 0.0 <= metrics[("all", "AP")] <= 1.0
            assert isinstance(json.loads((folder / RESULTS_JSON).read_text()), list)
        stem = f"{data_type}-three-model-epoch100-open-pose-single-scale-{num}"
        assert (out / "eval_results" / f"{stem}.csv").read_text().count("\n") >= 20  # 19 limbs
        json.loads((out / "eval_results" / f"{stem}-quality.json").read_text())
    summary = (out / "results" / "summary.md").read_text()
    assert "## Keypoint AP" in summary and "## Checks" in summary
    data = json.loads((out / "results" / "summary.json").read_text())
    assert set(data["ap"]) and data["settings"]["seed"] == 0
    # Defaults that depend on --config are recorded as they ran, not as None.
    assert {k: data["settings"][k] for k in ("classifier_input_mode", "scale_mode",
                                               "scale_search", "fuse_skip_below")} == \
        {"classifier_input_mode": "crop", "scale_mode": "boxsize", "scale_search": 1.5,
         "fuse_skip_below": 0.05}
    pngs = sorted((out / "results").glob("*.png"))
    assert pngs and all(cv2.imread(str(p)) is not None for p in pngs)

    # A rerun finds every step complete and only rewrites the summary.
    again = run(tmp_path)
    assert "done in" not in again.replace("experiment finished", "")
    assert again.count("already complete, skipped") == len(data["timings"])


def test_a_rerun_redoes_a_changed_step_and_everything_after_it(tmp_path):
    from model.experiment import Runner, Step

    def step(name, stamp=""):
        out = tmp_path / f"{name}.txt"
        code = f"import pathlib; p = pathlib.Path({str(out)!r}); p.write_text(p.read_text() + 'x' " \
               f"if p.exists() else 'x')"
        return Step(name, ["python", "-c", code], [out], stamp)

    def runs(steps):
        Runner(tmp_path / "steps").run_all(steps)
        return [(tmp_path / f"{s.name}.txt").read_text().count("x") for s in steps]

    assert runs([step("a"), step("b"), step("c")]) == [1, 1, 1]
    assert runs([step("a"), step("b"), step("c")]) == [1, 1, 1]          # all complete
    assert runs([step("a"), step("b", "v2"), step("c")]) == [1, 2, 2]    # b's stamp changed
    (tmp_path / "a.txt").unlink()                                         # a's output lost
    assert runs([step("a"), step("b", "v2"), step("c")]) == [1, 3, 3]
