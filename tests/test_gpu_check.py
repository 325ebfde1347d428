"""benchmarks/gpu_check.sh and gpu_check.py on the CPU: the dry run writes every part with
numbers, a machine without a GPU falls back to the dry run, and a part that fails, runs out
of time or finds the total time used up is recorded while the others still run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
CHECK = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

PART_NAMES = [p[0] for p in gpu_check.PARTS]


def run(args, env=None, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def no_gpu_path(tmp_path):
    """PATH with an nvidia-smi that finds no GPU, as on a machine with the driver tools but
    no device (the real one, where there is one, is shadowed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    fake.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_dry_run_measures_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    r = run(["bash", str(SCRIPT), "--dry_run", "--out", str(out)])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["complete"] and report["dry_run"] and report["seed"] == 0
    assert list(report["parts"]) == PART_NAMES
    for name, part in report["parts"].items():
        # every part must work on a CPU; a failure names itself here
        assert part["ok"], (name, part.get("error"), part.get("errors"), part.get("log_tail"))
        assert part["error"] is None and part["errors"] == {} and part["results"], name
    parts = report["parts"]
    s = report["settings"]
    for name in ("train_float32", "train_bfloat16", "train_bfloat16_xla"):
        results = parts[name]["results"]
        assert sorted(results) == [f"batch_{b}" for b in s["train_batches"]]
        for batch in s["train_batches"]:
            r_ = results[f"batch_{batch}"]
            assert positive(r_["samples_per_s"]) and r_["batch_size"] == batch
            assert r_["samples_per_s"] == pytest.approx(batch / r_["step_s"])
            assert r_["input_size"] == s["pose_config"]["input_size"]
        assert {r_["jit_compile"] for r_ in results.values()} == {name.endswith("_xla")}
    assert {r_["policy"] for r_ in parts["train_bfloat16"]["results"].values()} == {
        "mixed_bfloat16"}
    assert sorted(parts["pipeline"]["results"]) == sorted(
        f"workers_{w}" for w in s["pipeline_workers"])
    assert all(positive(r_["samples_per_s"]) for r_ in parts["pipeline"]["results"].values())
    assert all(positive(parts["data"]["results"][k]["seconds"])
               for k in ("synthetic", "masks", "hdf5"))
    assert parts["export"]["results"]["max_relative_difference_vs_keras"] < 1e-4
    for name, backends in (("inference_tensorflow", {"TensorFlow", "TensorFlow tf.function",
                                                     "TensorFlow frozen"}),
                           ("inference_onnxruntime", {"ONNX Runtime"})):
        results = parts[name]["results"]
        assert sorted(results) == sorted(s["inference_sizes"])
        for row in results.values():
            assert set(row) == backends and all(positive(ms) for ms in row.values())
    assert parts["inference_onnxruntime"]["info"]["providers_used"] == ["CPUExecutionProvider"]
    (classifier,) = parts["classifier"]["results"].values()
    assert positive(classifier["images_per_s"]) and classifier["arch"] == "tiny"
    system = report["system"]
    assert system["cpu_model"] and system["usable"] == len(os.sched_getaffinity(0))
    assert system["cpus"] == os.cpu_count() and system["cpu"].startswith(system["cpu_model"])
    assert "output" in system["nvidia_smi"] or "error" in system["nvidia_smi"]
    assert report["versions"]["tf"]["keras"] and report["versions"]["torch"]["torch"]
    assert f"written {out}" in r.stdout


def test_without_a_gpu_it_says_so_and_runs_the_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    # A budget of 1 s: the dry run's parts are all left out, so the test stays fast.
    r = run(["bash", str(SCRIPT), "--out", str(out), "--budget_s", "1"],
            env={"PATH": no_gpu_path(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == ("gpu_check: no NVIDIA GPU found (nvidia-smi lists "
                                        "none): running the CPU dry run instead")
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["complete"] and report["budget_s"] == 1
    assert list(report["parts"]) == PART_NAMES
    for part in report["parts"].values():
        assert not part["ok"]
        assert part["error"] == "not run: the total time limit of 1 s was reached"
    assert "error" in report["system"]["nvidia_smi"]


def test_a_part_past_its_time_limit_is_stopped_and_the_next_one_runs(tmp_path):
    out = tmp_path / "gpu.json"
    # 1 s per part: no part that imports TensorFlow or torch gets past its imports; the data
    # part (OpenCV and h5py on 15 samples) took 0.9 s on a fast machine, so it may finish.
    r = run([sys.executable, str(CHECK), "--dry_run", "true", "--out", str(out),
             "--part_limit_s", "1", "--budget_s", "120"])
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert list(report["parts"]) == PART_NAMES
    stopped = [name for name, part in report["parts"].items() if not part["ok"]]
    assert [name for name in PART_NAMES if name not in stopped] in ([], ["data"])
    for name in stopped:
        part = report["parts"][name]
        assert part["error"] == "stopped at its time limit of 1 s"
        assert part["exit_status"] is None and 1 <= part["seconds"] < 10
    assert "with errors in: " + ", ".join(stopped) in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--seed", "x"], "error: --seed must be a whole number, got 'x'"),
    (["--budget_s", "0"], "error: --budget_s must be a positive whole number of seconds, "
                          "got '0'"),
    (["--frobnicate"], "error: unknown argument: --frobnicate (see --help)"),
    (["--out"], "error: --out needs a value"),
])
def test_bad_arguments_are_one_line(args, message):
    r = run(["bash", str(SCRIPT), *args])
    assert r.returncode == 2 and r.stderr.strip() == message and r.stdout == ""


def test_out_that_is_a_folder_is_refused_before_anything_runs(tmp_path):
    r = run(["bash", str(SCRIPT), "--dry_run", "--out", str(tmp_path)])
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --out {tmp_path} is a folder, not a file"
    assert list(tmp_path.iterdir()) == []


def test_a_failing_measurement_is_recorded_and_the_rest_go_on(tmp_path):
    rec = gpu_check.Recorder(tmp_path / "part.json")
    assert rec.measure("bad", lambda: 1 / 0) is None
    assert rec.measure("good", lambda: {"samples_per_s": 2.5}) == {"samples_per_s": 2.5}
    assert rec.attempt("kept_out", lambda: object()) is not None   # not JSON, not recorded
    on_disk = json.loads((tmp_path / "part.json").read_text())
    assert on_disk["errors"] == {"bad": "ZeroDivisionError: division by zero"}
    assert on_disk["results"] == {"good": {"samples_per_s": 2.5}}
