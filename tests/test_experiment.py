"""End to end: run_experiment.py on a tiny synthetic set runs every stage, writes every output
in a form the next stage and a reader can parse, and a rerun skips every finished step. Then
the step runner's rules, and the defaults the runner takes from the recipe of --config."""
import json
import os
import subprocess
import sys

import cv2
import pytest

from model import domains, paths, steps
from model.errors import UserError
from model.experiment import Runner, Step
from model.recipes import RECIPES
from model.runs import METRICS_CSV, RESULTS_JSON, read_metrics, run_folder

TINY = ["--num_train", "16", "--num_val", "16", "--pose_epochs", "1", "--finetune_epochs", "1",
        "--pose_steps", "2", "--pose_batch", "4", "--classifier_epochs", "1",
        "--classifier_milestones", "1", "--classifier_input_size", "32",
        "--robustness_images", "2"]


# The repository's own output places, which --output_root must leave alone (of dataset/,
# which holds scripts too, only the HDF5 files and the COCO folder).
REPO_OUTPUTS = [paths.DEFAULT_COCO_ROOT, paths.RESULTS_DIR, paths.EVAL_RESULTS_DIR,
                paths.DOMAIN_LOG_DIR, paths.DOMAIN_RESULTS_DIR,
                *(paths.expert_weights_dir(e) for e in (domains.BASE,) + domains.TRAINED_MODELS)]


def repo_state():
    """(size, mtime) of every file in the repository's output places, and git's view of them
    (tracked or not)."""
    files = [p for d in REPO_OUTPUTS if d.is_dir() for p in d.rglob("*")]
    files += list(paths.DATASET_DIR.glob("*.h5"))
    listing = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(files)
               if p.is_file()}
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--",
                             *map(str, REPO_OUTPUTS)], cwd=paths.REPO_ROOT,
                            capture_output=True, text=True).stdout
    return listing, status


def run(tmp_path):
    """The runner with --output_root only: the synthetic data goes to <out>/COCO."""
    argv = [sys.executable, str(paths.REPO_ROOT / "run_experiment.py"), "--output_root",
            str(tmp_path / "out"), *TINY]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_the_runner_writes_every_output_and_resumes(tmp_path):
    before = repo_state()
    log = run(tmp_path)
    out = tmp_path / "out"
    coco = out / "COCO"
    assert repo_state() == before          # nothing under the repository changed
    assert "step 'synthetic_coco'" not in log            # no failure line
    for model in (domains.BASE,) + domains.TRAINED_MODELS:
        assert (out / f"weights{model}" / "weights.0001.h5").is_file()
    for data_type in paths.EVAL_DATATYPES:
        num = len(json.loads(paths.annotation_file(coco, data_type).read_text())["images"])
        assert num > 0
        probs = json.loads((out / "domain_results" / f"{data_type}.json").read_text())
        assert len(probs) == num and all(len(p["effect_prob"]) == 3 for p in probs)
        for effect in domains.EVAL_MODELS:
            folder = run_folder(out / "eval_results", data_type, effect, num)
            metrics = read_metrics(folder / METRICS_CSV)
            assert 0.0 <= metrics[("all", "AP")] <= 1.0
            assert isinstance(json.loads((folder / RESULTS_JSON).read_text()), list)
        stem = f"{data_type}-three-model-epoch100-open-pose-single-scale-{num}"
        assert (out / "eval_results" / f"{stem}.csv").read_text().count("\n") >= 20  # 19 limbs
        json.loads((out / "eval_results" / f"{stem}-quality.json").read_text())
    sweep = json.loads((out / "eval_results" / "robustness-val2014_random1k-2" /
                        "robustness.json").read_text())
    assert sweep["num_images"] == 2
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


def counting_step(folder, name, stamp="", redo=()):
    """A step that appends a line with its extra arguments to <name>.txt each time it runs,
    and fails while <name>.fail exists."""
    out, fail = folder / f"{name}.txt", folder / f"{name}.fail"
    code = (f"import pathlib, sys; p = pathlib.Path({str(out)!r}); "
            f"p.write_text((p.read_text() if p.exists() else '') + ' '.join(sys.argv[1:]) + '\\n'); "
            f"sys.exit(pathlib.Path({str(fail)!r}).exists())")
    return Step(name, ["python", "-c", code], [out], stamp, list(redo))


def runs_of(folder, name):
    """The extra arguments of each run of counting_step `name` so far."""
    path = folder / f"{name}.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_a_rerun_redoes_a_changed_step_and_everything_after_it(tmp_path):
    def step(name, stamp=""):
        return counting_step(tmp_path, name, stamp)

    def runs(steps):
        Runner(tmp_path / "steps").run_all(steps)
        return [len(runs_of(tmp_path, s.name)) for s in steps]

    assert runs([step("a"), step("b"), step("c")]) == [1, 1, 1]
    assert runs([step("a"), step("b"), step("c")]) == [1, 1, 1]          # all complete
    assert runs([step("a"), step("b", "v2"), step("c")]) == [1, 2, 2]    # b's stamp changed
    (tmp_path / "a.txt").unlink()                                         # a's output lost
    assert runs([step("a"), step("b", "v2"), step("c")]) == [1, 3, 3]


def test_a_step_that_reruns_after_it_finished_gets_its_redo_flags(tmp_path):
    """A first run resumes whatever the script finds; a rerun of a finished step redoes its
    work, and stays a redo after an interruption, as do the steps after it."""
    steps = [counting_step(tmp_path, n, redo=["--redo"]) for n in "abc"]
    Runner(tmp_path / "steps").run_all(steps)
    assert [runs_of(tmp_path, n) for n in "abc"] == [[""], [""], [""]]
    steps[0].stamp = "new data"
    (tmp_path / "b.fail").touch()                      # b is killed while it redoes its work
    with pytest.raises(UserError, match="step 'b' failed"):
        Runner(tmp_path / "steps").run_all(steps)
    (tmp_path / "b.fail").unlink()
    runner = Runner(tmp_path / "steps")
    runner.run(steps[0])                               # complete since the failed run
    assert runner.timings[-1][2] == "skipped"
    assert runner.reason_to_run(steps[1]) == "its redo was interrupted"
    runner.run(steps[1])
    assert runner.reason_to_run(steps[2]) == "an earlier step ran after it"
    runner.run(steps[2])
    assert [runs_of(tmp_path, n) for n in "abc"] == [["", "--redo"], ["", "--redo", "--redo"],
                                                     ["", "--redo"]]


def test_the_runner_measures_steal_only_over_steps_that_ran(tmp_path, monkeypatch):
    ticks = iter([(10, 1000), (40, 1600)])          # (steal, busy) at start and at the end
    monkeypatch.setattr("model.machine.cpu_times", lambda: next(ticks))
    runner = Runner(tmp_path / "steps")
    assert runner.steal_percent() is None            # nothing ran yet
    runner.run(counting_step(tmp_path, "a"))
    assert runner.steal_percent() == 5.0             # 30 of 600 busy ticks
    ticks = iter([(0, 0)])
    again = Runner(tmp_path / "steps")
    again.run(counting_step(tmp_path, "a"))          # complete: skipped
    assert again.timings[-1][2] == "skipped" and again.steal_percent() is None


def test_the_runner_says_why_a_step_runs(tmp_path):
    a, b = counting_step(tmp_path, "a"), counting_step(tmp_path, "b")
    assert Runner(tmp_path / "steps").reason_to_run(a) == "not run before"
    Runner(tmp_path / "steps").run_all([a, b])
    runner = Runner(tmp_path / "steps")
    assert runner.reason_to_run(a) is None
    runner.run(a)                                       # skipped: b is still complete after it
    assert runner.is_done(b)
    assert runner.reason_to_run(counting_step(tmp_path, "a", "v2")) == "its stamp changed"
    a.command[-1] += "  # edited"
    assert runner.reason_to_run(a) == "its command changed"
    (tmp_path / "b.txt").unlink()
    assert runner.reason_to_run(b) == f"output missing: {tmp_path / 'b.txt'}"
    for garbage in ("{not json", "[1, 2]"):
        (tmp_path / "steps" / "b.json").write_text(garbage)
        assert runner.reason_to_run(b) == "its marker is unreadable"
    assert Runner(tmp_path / "steps", force=True).reason_to_run(b) == "--force"
    runner.run(counting_step(tmp_path, "a", "v2"))
    assert runner.reason_to_run(counting_step(tmp_path, "c")) == "not run before"
    (tmp_path / "b.txt").write_text("x\n")
    Runner(tmp_path / "steps").run_all([counting_step(tmp_path, "a"), b])
    runner = Runner(tmp_path / "steps")
    runner.run(counting_step(tmp_path, "a", "v3"))
    assert runner.reason_to_run(b) == "an earlier step ran after it"


def timed_step(folder, name, seconds=0.5, fail=False):
    """A step that prints its name, notes when it started and ended in <name>.times and then
    exits 1 if `fail`."""
    out = folder / f"{name}.times"
    code = (f"import os, pathlib, sys, time; t = time.time(); time.sleep({seconds}); "
            f"print('output of {name}', os.environ.get('OMP_NUM_THREADS')); "
            f"pathlib.Path({str(out)!r}).write_text(f'{{t}} {{time.time()}}'); "
            f"sys.exit({int(fail)})")
    return Step(name, ["python", "-c", code], [out])


def interval(folder, name):
    return [float(x) for x in (folder / f"{name}.times").read_text().split()]


def test_groups_run_side_by_side_each_in_order(tmp_path, capsys):
    groups = [[timed_step(tmp_path, "a1"), timed_step(tmp_path, "a2")],
              [timed_step(tmp_path, "b1", 1.0)]]
    runner = Runner(tmp_path / "steps")
    timings = runner.run_groups(groups, processes=2)
    assert [t[0] for t in timings] == ["a1", "a2", "b1"]       # the order of the groups
    a1, a2, b1 = (interval(tmp_path, n) for n in ("a1", "a2", "b1"))
    assert a1[1] <= a2[0]                                      # a group runs in order
    assert a1[0] < b1[1] and b1[0] < a1[1]                     # beside the other group
    printed = capsys.readouterr().out
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert all(f"output of {n} {threads}" in printed for n in ("a1", "a2", "b1"))
    # A rerun skips them all; a changed step reruns what follows it in its group only.
    again = Runner(tmp_path / "steps")
    assert [t[2] for t in again.run_groups(groups, 2)] == ["skipped"] * 3
    groups[0][0] = timed_step(tmp_path, "a1", 0.1)
    third = Runner(tmp_path / "steps")
    assert [t[2] for t in third.run_groups(groups, 2)] == ["ran", "ran", "skipped"]


def test_the_last_group_left_takes_every_core(tmp_path, capsys, monkeypatch):
    """On 2 cores: one thread per step while two groups run, both for a step that starts
    once its group is the only one left: the cores this process may use (its affinity,
    which taskset or a container's cpuset may make fewer than the machine's)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    groups = [[timed_step(tmp_path, "long1", 1.0), timed_step(tmp_path, "long2", 0.1)],
              [timed_step(tmp_path, "short", 0.1)]]
    Runner(tmp_path / "steps").run_groups(groups, processes=2)
    printed = capsys.readouterr().out
    assert "output of long1 1" in printed and "output of short 1" in printed
    assert "output of long2 2" in printed


def test_a_failed_group_stops_new_ones_after_the_running_ones_end(tmp_path):
    groups = [[timed_step(tmp_path, "bad", 0.1, fail=True)],
              [timed_step(tmp_path, "slow", 1.0)],
              [timed_step(tmp_path, "later", 0.1)]]
    with pytest.raises(UserError, match="step 'bad' failed"):
        Runner(tmp_path / "steps").run_groups(groups, processes=2)
    assert (tmp_path / "slow.times").is_file()          # it ran to its end
    assert not (tmp_path / "later.times").exists()      # it never started


# ----------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize("config", sorted(RECIPES))
def test_flags_left_out_take_the_recipe_of_the_config(config, run_experiment_script):
    recipe, c = RECIPES[config], RECIPES[config].classifier
    a = run_experiment_script.parse_args(["--config", config])
    assert (a.classifier_arch, a.classifier_epochs, a.classifier_input_size,
            a.classifier_input_mode, a.classifier_val_fraction) == \
        (c.arch, c.epochs, c.input_size, c.input_mode, c.val_fraction)
    assert [int(m) for m in a.classifier_milestones.split()] == list(c.milestones)
    assert (a.scale_mode, (a.scale_search,)) == (recipe.eval_scale_mode, recipe.eval_scale_search)


def test_flags_given_win_and_unknown_configs_are_refused(run_experiment_script):
    script = run_experiment_script
    a = script.parse_args(["--config", "full", "--classifier_arch", "tiny",
                           "--classifier_milestones", "2 4", "--scale_search", "2"])
    assert (a.classifier_arch, a.classifier_milestones, a.scale_search) == ("tiny", "2 4", 2.0)
    assert a.classifier_epochs == RECIPES["full"].classifier.epochs
    with pytest.raises(UserError, match="unknown configuration 'medium'"):
        script.parse_args(["--config", "medium"])


def test_the_demo_trains_the_classifier_with_the_small_recipe(tmp_path, run_experiment_script):
    """The demo's classifier command line, spelled out: the small recipe's classifier."""
    script = run_experiment_script
    a = script.parse_args(["--coco_root", str(tmp_path / "coco"), "--output_root",
                           str(tmp_path / "out")])
    d = steps.output_dirs(a)
    base, groups = steps.training_steps(a, d, Runner(tmp_path / "markers"))
    # The base network alone, then the classifier's training and predictions beside each
    # fine-tuning.
    assert [s.name for s in base] == ["train_base"]
    assert [[s.name for s in g] for g in groups] == [
        ["train_classifier", "validate_classifier",
         *(f"classify_{t}" for t in paths.EVAL_DATATYPES)],
        ["train_normal"], ["train_dark"], ["train_motion_blur"], ["train_mixed"]]
    found = {s.name: s for s in base + sum(groups, [])}
    command = [str(x) for x in found["train_classifier"].command[2:]]
    assert command == ["--coco_root", str(tmp_path / "coco"), "--arch", "tiny",
                       "--epochs", "40", "--input_size", "64", "--milestones", "30",
                       "--seed", "0", "--log_dir", str(tmp_path / "out" / "classifier_log"),
                       "--input_mode", "crop", "--val_fraction", "0.2", "--keep_last", "2",
                       "--workers", "0"]
    assert [s.name for s in steps.expert_steps(a, d)] == \
        ["train_base", "train_normal", "train_dark", "train_motion_blur", "train_mixed"]


def test_a_watched_step_is_watched_while_it_runs(tmp_path):
    from model.experiment import run_watched
    seen = []
    code = "import time; time.sleep(0.5)"
    assert run_watched([sys.executable, "-c", code], seen.append, every=0.1) == 0
    assert len(seen) >= 2 and seen == sorted(seen) and seen[0] > 0
    assert run_watched([sys.executable, "-c", "import sys; sys.exit(3)"]) == 3


def test_the_first_epoch_gives_an_estimate_of_the_remaining_time(tmp_path, caplog,
                                                                 run_experiment_script):
    a = run_experiment_script.parse_args(["--output_root", str(tmp_path / "out"),
                                          "--pose_epochs", "6", "--finetune_epochs", "2",
                                          "--finetune_steps", "50"])
    d = steps.output_dirs(a)
    log_csv = d["weights"](domains.BASE) / "log.csv"
    log_csv.parent.mkdir(parents=True)
    log_csv.write_text("epoch,iteration\n")
    estimate = steps.RemainingTime(a, d)
    with caplog.at_level("INFO", logger="run_experiment"):
        estimate(30.0)                       # no epoch finished yet: nothing
        assert not caplog.records
        log_csv.write_text("epoch,iteration\n1,118\n")
        estimate(60.0)
        estimate(61.0)                       # said once
    (record,) = caplog.records
    ref = steps.RemainingTime
    ratio = 60 / ref.REFERENCE_EPOCH_S             # this machine against the developers'
    first, others = 5 * 118, 4 * 2 * 50           # the base's 5 epochs, 4 fine-tunings
    left = first + others
    training = (first * ref.REFERENCE_BASE_STEP_S + others * ref.REFERENCE_FINETUNE_STEP_S) \
        * ratio
    after = ref.REFERENCE_AFTER_TRAINING_S * ratio
    assert f"about {training / 60:.0f} min of training left ({left} steps)" in record.message
    assert f"about {(training + after) / 60:.0f} min in all" in record.message
    # A resumed base run (2 epochs in its log before) counts what is left of it; fine-tunings
    # of one pass each (--finetune_steps 0) are as long as its epochs.
    a.finetune_steps = 0
    log_csv.write_text("epoch,iteration\n1,118\n2,236\n")
    resumed = steps.RemainingTime(a, d)
    log_csv.write_text("epoch,iteration\n1,118\n2,236\n3,354\n")
    with caplog.at_level("INFO", logger="run_experiment"):
        resumed(50.0)
    assert f"({3 * 118 + 4 * 2 * 118} steps)" in caplog.records[-1].message


def test_the_fine_tunings_take_finetune_steps(tmp_path, run_experiment_script):
    def per_epoch(*flags):
        a = run_experiment_script.parse_args(["--output_root", str(tmp_path / "out"), *flags])
        found = {s.name: [str(x) for x in s.command] for s in
                 steps.expert_steps(a, steps.output_dirs(a))}
        return {name: c[c.index("--steps_per_epoch") + 1] for name, c in found.items()}
    assert set(per_epoch().values()) == {"0"}                  # one pass each (the default)
    assert per_epoch("--finetune_steps", "60", "--pose_steps", "100") == {
        "train_base": "100", "train_normal": "60", "train_dark": "60",
        "train_motion_blur": "60", "train_mixed": "60"}
