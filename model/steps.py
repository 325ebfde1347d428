"""The steps of the whole experiment (run_experiment.py), as the command lines a user would type.

Three parts, in the order they run:
  data_steps        synthetic mini-COCO -> masks -> HDF5 -> the domain-shifted evaluation sets
  training_steps    the base network -> (groups run two at a time) the domain classifier,
                    its validation and its domain probabilities for every evaluation set;
                    each of the three experts and the generalist, fine-tuned from the base
  evaluation_steps  (groups run two at a time) the robustness sweep; per evaluation set:
                    the three experts, the generalist and the gamma baseline, the routed and
                    the fused ensemble, then the experts' disagreement (uncertainty)
Each builder takes the runner's resolved flags `a` (see run_experiment.parse_args), the output
folders `d` (output_dirs) and the Runner (model.experiment), and returns a list of Steps
(evaluation_steps: a list of such lists, see Runner.run_groups; training_steps: both). A
step's outputs are the files that prove it finished; its `redo` flags make its script redo
finished work when the step reruns (see model.experiment).
"""
import contextlib
import io
import json
import logging
import math
from pathlib import Path

from model import paths, synthetic
from model.domains import (BASE, EFFECT_NAMES, ENSEMBLE, ENSEMBLE_FUSE, NORMAL, NORMAL_GAMMA,
                           TRAINED_MODELS, weights_effect)
from model.errors import UserError
from model.experiment import NOT_RUN, Step
from model.runs import METRICS_CSV, RunLayout, robustness_folder, run_folder
from model.train_cli import build_parser

log = logging.getLogger("run_experiment")

SCRIPT = {
    "synthetic": paths.DATASET_DIR / "make_synthetic_coco.py",
    "masks": paths.REPO_ROOT / "training" / "generate_masks_coco2014.py",
    "hdf5": paths.REPO_ROOT / "training" / "generate_hdf5_coco2014.py",
    "domains": paths.DATASET_DIR / "make_domain_datasets.py",
    "train_pose": paths.REPO_ROOT / "training" / "train_pose.py",
    "train_classifier": paths.DOMAIN_CLASSIFIER_DIR / "train.py",
    "validate_classifier": paths.DOMAIN_CLASSIFIER_DIR / "validate.py",
    "classify": paths.DOMAIN_CLASSIFIER_DIR / "ensemble.py",
    "eval": paths.REPO_ROOT / "eval" / "eval_coco2014_single_scale.py",
    "ensemble": paths.REPO_ROOT / "train_expert_classifier" / "ensemble.py",
    "uncertainty": paths.REPO_ROOT / "eval" / "util_ainu.py",
    "robustness": paths.REPO_ROOT / "eval" / "robustness.py",
}
# The two ensembles: ensemble.py's --method and the model name their evaluation runs under.
ENSEMBLE_METHODS = (("route", ENSEMBLE), ("fuse", ENSEMBLE_FUSE))


def output_dirs(a):
    """Where each stage writes: the repository's defaults, or all under --output_root."""
    root = a.output_root
    if root is None:
        return {"hdf5": paths.DATASET_DIR, "weights": paths.expert_weights_dir,
                "classifier_log": paths.DOMAIN_LOG_DIR, "domain": paths.DOMAIN_RESULTS_DIR,
                "eval": paths.EVAL_RESULTS_DIR, "results": paths.RESULTS_DIR}
    return {"hdf5": root / "hdf5", "weights": lambda e: root / f"weights{e}",
            "classifier_log": root / "classifier_log", "domain": root / "domain_results",
            "eval": root / "eval_results", "results": root / "results"}


def num_eval_images(coco_root, data_type):
    """Images the evaluation script takes by default: all of the set, at most 1000."""
    with open(paths.annotation_file(coco_root, data_type)) as f:
        return min(len(json.load(f)["images"]), 1000)


# ------------------------------------------------------------------------------ checks

def _train_pose_error(argv):
    """The one-line error of train_pose.py's own flag parser on argv, or None if it takes it."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args([str(x) for x in argv])
    except SystemExit as e:
        if e.code:
            lines = err.getvalue().strip().splitlines()
            return lines[-1].split("error: ", 1)[-1] if lines else "invalid flags"
    return None


def check_flags(a, d):
    """UserError, before step 1, for any flag the steps' scripts would refuse later (the
    classifier's architecture is checked by run_experiment.py, which may import torch)."""
    counts = {"num_train": 1, "num_val": 1, "val_holdout": 1, "num_eval": 1,
              "pose_epochs": 1, "finetune_epochs": 0, "robustness_images": 1, "pose_steps": 0,
              "finetune_steps": 0, "pose_batch": 1,
              "classifier_epochs": 1, "classifier_input_size": 1, "classifier_keep_last": 0,
              "classifier_workers": 0}
    for name, least in counts.items():
        if getattr(a, name) < least:
            raise UserError(f"--{name} must be >= {least}, got {getattr(a, name)}")
    try:
        milestones = [int(m) for m in a.classifier_milestones.split()]
    except ValueError:
        raise UserError(f"--classifier_milestones must be whole numbers, got "
                        f"{a.classifier_milestones!r}") from None
    if any(m < 1 for m in milestones):
        raise UserError(f"--classifier_milestones must be >= 1, got {a.classifier_milestones!r}")
    if not 0 < a.classifier_val_fraction < 1:
        raise UserError(f"--classifier_val_fraction must be in (0, 1), got "
                        f"{a.classifier_val_fraction}")
    if not 0 <= a.fuse_skip_below < 1:
        raise UserError(f"--fuse_skip_below must be in [0, 1), got {a.fuse_skip_below}")
    if not (a.scale_search > 0 and math.isfinite(a.scale_search)):
        raise UserError(f"--scale_search must be a positive number, got {a.scale_search}")
    if not a.synthetic and not paths.annotation_file(a.coco_root, "val2014").is_file():
        raise UserError(f"--coco_root {a.coco_root} holds no "
                        f"{paths.annotation_file(a.coco_root, 'val2014').relative_to(a.coco_root)}"
                        f"; download COCO 2014 or use --synthetic true")
    for step in expert_steps(a, d):
        problem = _train_pose_error(step.command[2:])
        if problem:
            raise UserError(f"train_pose.py refuses the flags of step {step.name} "
                            f"(--pose_extra {a.pose_extra!r}): {problem}")


# ------------------------------------------------------------------------------ data

def data_steps(a, d, runner):
    steps = []
    if a.synthetic:
        steps.append(Step("synthetic_coco", [
            "python", SCRIPT["synthetic"], "--coco_root", a.coco_root, "--num_train",
            a.num_train, "--num_val", a.num_val, "--seed", a.seed],
            [paths.annotation_file(a.coco_root, "val2014")],
            stamp=f"generator {synthetic.GENERATOR_VERSION}", redo=["--force", "true"]))
    holdout, overwrite = ["--val_holdout", a.val_holdout], ["--overwrite", "true"]
    return steps + [
        Step("masks", ["python", SCRIPT["masks"], "--coco_root", a.coco_root], redo=overwrite),
        Step("hdf5", ["python", SCRIPT["hdf5"], "--coco_root", a.coco_root, "--out_dir",
                      d["hdf5"], *holdout],
             [paths.hdf5_file(d["hdf5"], s) for s in ("train", "val")], redo=overwrite),
        Step("domain_datasets", ["python", SCRIPT["domains"], "--coco_root", a.coco_root,
                                 "--num", a.num_eval, "--seed", a.seed, *holdout],
             [paths.annotation_file(a.coco_root, t) for t in paths.EVAL_DATATYPES],
             redo=overwrite),
    ]


# ------------------------------------------------------------------------------ training

def trained_models(a):
    """The weight folders train_pose.py writes, in training order: the base network (when
    the models fine-tune from it), the three experts and the generalist."""
    return ((BASE,) if a.finetune_epochs else ()) + TRAINED_MODELS


def model_epochs(a, model):
    """Every model of the AP table trains equally long from the same start: the base network
    trains --pose_epochs on normal data, then each expert and the generalist fine-tune from it
    for --finetune_epochs (the normal expert too, on normal data); with --finetune_epochs 0
    each trains --pose_epochs from scratch."""
    return a.pose_epochs if model == BASE or a.finetune_epochs == 0 else a.finetune_epochs


def model_steps_per_epoch(a, model):
    """train_pose.py --steps_per_epoch of `model`: --finetune_steps for the fine-tuning runs,
    --pose_steps for the base network or a model trained from scratch (0 = one pass)."""
    fine_tuned = model != BASE and a.finetune_epochs > 0
    return a.finetune_steps if fine_tuned else a.pose_steps


def expert_weights(a, d, model):
    return d["weights"](model) / f"weights.{model_epochs(a, model):04d}.h5"


class RemainingTime:
    """Watches the first training step and logs, once its first epoch is in its log.csv, an
    estimate of the experiment's remaining time: the training steps still to run, each taking
    the developers' time of such a step (the first model's later steps one after another,
    the other models' two runs at a time) scaled by this machine's first epoch against
    theirs, plus, on the synthetic demo, the evaluation steps scaled by the same ratio
    (their time depends on the number of evaluation images, not on the epochs, so on real
    COCO only training is estimated)."""
    # The developers' demo (BENCHMARKS.md: the 23 min 48 s run with AVX2 kernels), in
    # seconds: the base network's first epoch, start-up included; each later step of the
    # base network; the wall time of the groups of fine-tunings (and the classifier's) per
    # fine-tuning step; every step after the fine-tunings.
    REFERENCE_EPOCH_S, REFERENCE_BASE_STEP_S = 112.0, 0.783
    REFERENCE_FINETUNE_STEP_S, REFERENCE_AFTER_TRAINING_S = 0.987, 251.0

    def __init__(self, a, d):
        models = trained_models(a)
        self.models = [(model_epochs(a, m), model_steps_per_epoch(a, m)) for m in models]
        self.log_csv = d["weights"](models[0]) / "log.csv"
        self.synthetic = a.synthetic
        self.rows_before = self._rows()
        self.done = False

    def _rows(self):
        """The iteration at the end of each epoch in the first model's log.csv so far."""
        try:
            return [int(row.split(",")[1]) for row in self.log_csv.read_text().splitlines()[1:]]
        except (OSError, ValueError, IndexError):
            return []

    def remaining_steps(self, epochs_done, epoch_steps):
        """Training steps still to run: (the first model's, the others'); a model whose
        steps per epoch are 0 (one pass) has epochs as long as the first model's."""
        (epochs, _), *others = self.models
        return (epochs - epochs_done) * epoch_steps, sum(
            e * (per_epoch or epoch_steps) for e, per_epoch in others)

    def __call__(self, seconds):
        rows = self._rows()
        if self.done or len(rows) <= len(self.rows_before):
            return
        self.done = True
        epoch_steps = rows[-1] - (rows[-2] if len(rows) > 1 else 0)
        first, others = self.remaining_steps(len(rows), epoch_steps)
        ratio = seconds / self.REFERENCE_EPOCH_S
        training = ratio * (first * self.REFERENCE_BASE_STEP_S
                            + others * self.REFERENCE_FINETUNE_STEP_S)
        text = (f"first epoch took {seconds:.0f} s: about {training / 60:.0f} min of training "
                f"left ({first + others} steps)")
        if self.synthetic:
            after = self.REFERENCE_AFTER_TRAINING_S * ratio
            text += (f", then about {after / 60:.0f} min of evaluation steps: "
                     f"about {(training + after) / 60:.0f} min in all")
        log.info("estimate: %s", text)


def expert_steps(a, d, watch=None):
    steps = []
    for m in trained_models(a):
        warm = ["--weights", d["weights"](BASE) / "train_state.h5"] if m != BASE else []
        steps.append(Step(f"train_{EFFECT_NAMES[m]}", [
            "python", SCRIPT["train_pose"], "--effect", NORMAL if m == BASE else m,
            "--config", a.config, "--epochs", model_epochs(a, m), "--steps_per_epoch",
            model_steps_per_epoch(a, m), "--batch_size", a.pose_batch, "--hdf5_dir", d["hdf5"],
            "--out_dir", d["weights"](m), "--seed", a.seed, "--progress", "false", *warm,
            *a.pose_extra.split()], [expert_weights(a, d, m)], redo=["--resume", "false"],
            watch=None if steps else watch))
    return steps


def classifier_recipe(a):
    """The settings of a classifier run (its config.json) that this runner chose."""
    return {"arch": a.classifier_arch, "input_size": a.classifier_input_size,
            "input_mode": a.classifier_input_mode, "val_fraction": a.classifier_val_fraction,
            "milestones": [int(m) for m in a.classifier_milestones.split()], "seed": a.seed}


def classifier_training_step(a, log_dir, runner):
    """A new classifier run, or the continuation of the newest one (see the comment below)."""
    train = Step("train_classifier", [
        "python", SCRIPT["train_classifier"], "--coco_root", a.coco_root,
        "--arch", a.classifier_arch, "--epochs", a.classifier_epochs,
        "--input_size", a.classifier_input_size, "--milestones",
        *a.classifier_milestones.split(), "--seed", a.seed, "--log_dir", log_dir,
        "--input_mode", a.classifier_input_mode, "--val_fraction",
        a.classifier_val_fraction, "--keep_last", a.classifier_keep_last,
        "--workers", a.classifier_workers])
    runs = sorted(p for p in log_dir.glob("*") if (p / "checkpoints").is_dir()) \
        if log_dir.is_dir() else []
    # Continue the newest run only if the classifier step never finished here (an interrupted
    # first run) and the run has this recipe, or if it is what the step finished with. Any
    # other rerun (other settings, new data) starts a new run; old runs stay as they are.
    if runs and _same_recipe(runs[-1], classifier_recipe(a)):
        resume = Step("train_classifier", ["python", SCRIPT["train_classifier"], "--resume",
                                           runs[-1], "--epochs", a.classifier_epochs,
                                           "--workers", a.classifier_workers])
        if runner.is_done(resume) or runner.reason_to_run(train) == NOT_RUN:
            return resume
    return train


def _same_recipe(run_dir, recipe):
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return all(config.get(k) == v for k, v in recipe.items())


def training_steps(a, d, runner):
    """(steps, groups): the base network (the experts start from it), on every core; then
    groups that need nothing from one another (Runner.run_groups): the classifier's training,
    validation and predictions, and each expert and the generalist alone. With
    --finetune_epochs 0 there is no base network: every model is a group of its own."""
    log_dir = Path(d["classifier_log"])
    validation = d["results"] / "classifier_validation"
    experts = expert_steps(a, d, watch=RemainingTime(a, d))
    base = experts[:1] if a.finetune_epochs else []
    classifier = [
        classifier_training_step(a, log_dir, runner),
        Step("validate_classifier", ["python", SCRIPT["validate_classifier"], "--log_dir",
                                     log_dir, "--coco_root", a.coco_root, "--out_dir",
                                     validation], [validation / "metrics.json"]),
    ]
    classifier += [Step(f"classify_{t}", ["python", SCRIPT["classify"], "--coco_dataType",
                                           t, "--coco_root", a.coco_root, "--log_dir", log_dir,
                                           "--out_dir", d["domain"]],
                         [d["domain"] / f"{t}.json"]) for t in paths.EVAL_DATATYPES]
    return base, [classifier] + [[step] for step in experts[len(base):]]


# ------------------------------------------------------------------------------ evaluation

def evaluation_steps(a, d, runner):
    """Groups of steps that need nothing from one another (Runner.run_groups): the robustness
    sweep, then one per evaluation set, in order."""
    # The sweep is one long step that keeps the threads it started with; first, it ends
    # beside a set's short steps, and what runs alone at the end are short steps that take
    # the freed core (demo, AVX2: it ran 77 s alone on one thread as the last group).
    return [[robustness_step(a, d)]] + [set_steps(a, d, t) for t in paths.EVAL_DATATYPES]


def set_steps(a, d, t):
    """Evaluation set t: its models, the two ensembles, then the experts' disagreement."""
    # The image count names the run folders; given explicitly, runs of an earlier, other
    # sized set (say, before --num_val changed) are never mistaken for this one's.
    num = num_eval_images(a.coco_root, t)
    common = ["--coco_root", a.coco_root, "--results_dir", d["eval"], "--fir_img_num", num]

    def metrics(effect):
        return [run_folder(d["eval"], t, effect, num) / METRICS_CSV]
    # The experts, then the two baselines: the generalist and the normal expert's weights
    # behind a test-time gamma correction.
    steps = [Step(f"eval_{t}_{EFFECT_NAMES[e]}", [
        "python", SCRIPT["eval"], "--effect", e, "--coco_dataType", t, "--config", a.config,
        "--scale_mode", a.scale_mode, "--scale_search", a.scale_search,
        "--weights", expert_weights(a, d, weights_effect(e)), "--seed", a.seed, *common],
        metrics(e)) for e in TRAINED_MODELS + (NORMAL_GAMMA,)]
    for method, effect in ENSEMBLE_METHODS:
        steps.append(Step(f"ensemble_{method}_{t}", [
            "python", SCRIPT["ensemble"], "--coco_dataType", t, "--method", method,
            "--domain_results", d["domain"] / f"{t}.json", *common,
            *(["--skip_below", a.fuse_skip_below] if method == "fuse" else [])]))
        steps.append(Step(f"eval_{t}_{EFFECT_NAMES[effect]}", [
            "python", SCRIPT["eval"], "--effect", effect, "--coco_dataType", t,
            "--compute_keypoint", "False", "--eval_compute_keypoint", "True",
            "--seed", a.seed, *common], metrics(effect)))
    # The stamp names the analysis' output format: results of an older one are redone.
    steps.append(Step(f"uncertainty_{t}", ["python", SCRIPT["uncertainty"],
                                            "--coco_dataType", t, *common],
                      [RunLayout(d["eval"]).uncertainty_file(t, num, "-pose.csv")],
                      stamp="detection and pose layers"))
    return steps


def robustness_step(a, d):
    """The severity sweep on the first --robustness_images images of the normal set."""
    num = min(a.robustness_images, num_eval_images(a.coco_root, paths.EVAL_BASE))
    weights = [x for m in TRAINED_MODELS
               for x in (f"--weights_{EFFECT_NAMES[m]}", expert_weights(a, d, m))]
    return Step("robustness", [
        "python", SCRIPT["robustness"], "--coco_root", a.coco_root, "--coco_dataType",
        paths.EVAL_BASE, "--num_images", num, "--config", a.config, "--scale_mode",
        a.scale_mode, "--scale_search", a.scale_search, *weights, "--classifier_log_dir",
        d["classifier_log"], "--results_dir", d["eval"], "--fuse_skip_below",
        a.fuse_skip_below, "--seed", a.seed, "--progress", "false"],
        [robustness_folder(d["eval"], paths.EVAL_BASE, num) / "robustness.json"],
        redo=["--overwrite", "true"])
