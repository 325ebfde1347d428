#!/usr/bin/env python
"""The whole domain-expert experiment, step by step (what `make demo` runs).

    python run_experiment.py                 # synthetic mini-COCO, small networks, CPU (the demo)
    python run_experiment.py --synthetic false --coco_root /data/COCO --config full \\
        --pose_epochs 100 --pose_steps 0 --pose_batch 10 --classifier_arch resnet50 \\
        --classifier_epochs 100 --classifier_input_size 112    # the recipe on real COCO 2014

Steps: synthetic mini-COCO -> masks -> HDF5 -> domain-shifted evaluation sets -> the three
experts -> the domain classifier and its predictions -> evaluation of the 4 test domains x
(3 experts + routed ensemble + fused ensemble) -> uncertainty for the 4 domains -> summary.
Every step is one of the project's scripts with the command line a user would type; the
runner prints it, times it and skips it on a rerun once it has finished (--force true redoes
everything). Results: <results>/summary.md and <results>/*.png.
"""
import argparse
import json
import logging
import time
from pathlib import Path

from model import paths, synthetic
from model.cli import UserError, add_coco_root, add_seed, main_guard, str2bool
from model.experiment import NOT_RUN, Runner, Step

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
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_coco_root(p)
    add_seed(p)
    p.add_argument("--synthetic", type=str2bool, default=True,
                   help="generate the synthetic mini-COCO into --coco_root first")
    p.add_argument("--num_train", type=int, default=400, help="synthetic train2014 images")
    p.add_argument("--num_val", type=int, default=250, help="synthetic val2014 images")
    p.add_argument("--val_holdout", type=int, default=2645,
                   help="held-out val2014 images (capped at half of val2014)")
    p.add_argument("--num_eval", type=int, default=1000, help="images per evaluation set")
    p.add_argument("--config", default="small", help="pose network configuration")
    p.add_argument("--pose_epochs", type=int, default=8, help="epochs of the normal expert")
    p.add_argument("--finetune_epochs", type=int, default=2,
                   help="epochs of the dark and motion-blur experts, warm-started from the "
                        "normal expert; 0 = train them from scratch like the normal one")
    p.add_argument("--pose_steps", type=int, default=0,
                   help="steps per epoch; 0 = one pass over the training data")
    p.add_argument("--pose_batch", type=int, default=10)
    p.add_argument("--pose_extra", default="",
                   help="more flags for train_pose.py, e.g. '--schedule caffe'")
    p.add_argument("--classifier_arch", default="resnet18")
    p.add_argument("--classifier_epochs", type=int, default=12)
    p.add_argument("--classifier_milestones", default="9",
                   help="epochs after which the classifier's lr drops x0.1 (space separated)")
    p.add_argument("--classifier_input_size", type=int, default=64)
    p.add_argument("--classifier_keep_last", type=int, default=2,
                   help="train.py --keep_last: checkpoints kept besides the best one (a "
                        "ResNet-18 checkpoint with its optimizer state is 135 MB; 0 = all)")
    p.add_argument("--classifier_input_mode", default=None, choices=("resize", "crop"),
                   help="train.py --input_mode (default: crop for small, whose 64 px crops of "
                        "a 128 px view keep the motion blur visible; resize, the fork's, for full)")
    p.add_argument("--classifier_val_fraction", type=float, default=None,
                   help="train2014 images held out to validate the classifier (default: 0.2 "
                        "for small, 80 of the demo's 400 images; train.py's 0.1 for full)")
    p.add_argument("--scale_mode", default=None, choices=("native", "boxsize"),
                   help="evaluation scale mode (default: boxsize for small, native for full)")
    p.add_argument("--scale_search", type=float, default=None,
                   help="evaluation scale (default: 1.5 for small, whose crops hold the main "
                        "person at 0.9 of 184 px; 1.0 for full)")
    p.add_argument("--output_root", type=Path, default=None,
                   help="put every output (weights, HDF5, runs, results) under this folder "
                        "instead of the repository's default places")
    p.add_argument("--fuse_skip_below", type=float, default=0.05,
                   help="ensemble.py --skip_below for the fused ensemble: an expert the "
                        "classifier gives less than this probability is not run on the image")
    p.add_argument("--force", type=str2bool, default=False, help="redo every step")
    return resolve_defaults(p.parse_args(argv))


def resolve_defaults(a):
    """Fill in the settings whose default depends on --config, so the summary shows what ran."""
    if a.config not in ("small", "full"):
        raise UserError(f"--config must be small or full, got {a.config!r}")
    small = a.config == "small"
    for name, if_small, if_full in (("classifier_input_mode", "crop", "resize"),
                                    ("classifier_val_fraction", 0.2, 0.1),
                                    ("scale_mode", "boxsize", "native"),
                                    ("scale_search", 1.5, 1.0)):
        if getattr(a, name) is None:
            setattr(a, name, if_small if small else if_full)
    return a


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


def expert_epochs(a, effect):
    return a.pose_epochs if effect == "" or a.finetune_epochs == 0 else a.finetune_epochs


def expert_weights(a, d, effect):
    return d["weights"](effect) / f"weights.{expert_epochs(a, effect):04d}.h5"


def training_steps(a, d, runner):
    steps = []
    for e in paths.EXPERT_EFFECTS:
        warm = (["--weights", d["weights"]("") / "train_state.h5"]
                if e and a.finetune_epochs else [])
        steps.append(Step(f"train_expert{e or '_normal'}", [
            "python", SCRIPT["train_pose"], "--effect", e, "--config", a.config,
            "--epochs", expert_epochs(a, e), "--steps_per_epoch", a.pose_steps,
            "--batch_size", a.pose_batch, "--hdf5_dir", d["hdf5"], "--out_dir",
            d["weights"](e), "--seed", a.seed, "--progress", "false", *warm,
            *a.pose_extra.split()], [expert_weights(a, d, e)], redo=["--resume", "false"]))
    log_dir = Path(d["classifier_log"])
    train = ["python", SCRIPT["train_classifier"], "--coco_root", a.coco_root,
             "--arch", a.classifier_arch, "--epochs", a.classifier_epochs,
             "--input_size", a.classifier_input_size, "--milestones",
             *a.classifier_milestones.split(), "--seed", a.seed, "--log_dir", log_dir]
    recipe = {"arch": a.classifier_arch, "input_size": a.classifier_input_size,
              "input_mode": a.classifier_input_mode, "val_fraction": a.classifier_val_fraction,
              "milestones": [int(m) for m in a.classifier_milestones.split()], "seed": a.seed}
    train += ["--input_mode", a.classifier_input_mode, "--val_fraction",
              a.classifier_val_fraction, "--keep_last", a.classifier_keep_last]
    train = Step("train_classifier", train)
    runs = sorted(p for p in log_dir.glob("*") if (p / "checkpoints").is_dir()) \
        if log_dir.is_dir() else []
    # Continue the newest run only if the classifier step never finished here (an interrupted
    # first run) and the run has this recipe, or if it is what the step finished with. Any
    # other rerun (other settings, new data) starts a new run; old runs stay as they are.
    if runs and _same_recipe(runs[-1], recipe):
        resume = Step("train_classifier", ["python", SCRIPT["train_classifier"], "--resume",
                                           runs[-1], "--epochs", a.classifier_epochs])
        if runner.is_done(resume) or runner.reason_to_run(train) == NOT_RUN:
            train = resume
    validation = d["results"] / "classifier_validation"
    steps += [
        train,
        Step("validate_classifier", ["python", SCRIPT["validate_classifier"], "--log_dir",
                                     log_dir, "--coco_root", a.coco_root, "--out_dir",
                                     validation], [validation / "metrics.json"]),
    ]
    steps += [Step(f"classify_{t}", ["python", SCRIPT["classify"], "--coco_dataType", t,
                                     "--coco_root", a.coco_root, "--log_dir", log_dir,
                                     "--out_dir", d["domain"]], [d["domain"] / f"{t}.json"])
              for t in paths.EVAL_DATATYPES]
    return steps


def _same_recipe(run_dir, recipe):
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return all(config.get(k) == v for k, v in recipe.items())


def evaluation_steps(a, d, runner):
    from model.evaluation import METRICS_CSV, run_folder
    steps = []
    for t in paths.EVAL_DATATYPES:
        # The image count names the run folders; given explicitly, runs of an earlier, other
        # sized set (say, before --num_val changed) are never mistaken for this one's.
        num = num_eval_images(a.coco_root, t)
        common = ["--coco_root", a.coco_root, "--results_dir", d["eval"], "--fir_img_num", num]

        def metrics(effect, t=t, num=num):
            return [run_folder(d["eval"], t, effect, num) / METRICS_CSV]
        for e in paths.EXPERT_EFFECTS:
            steps.append(Step(f"eval_{t}{e or '_normal'}", [
                "python", SCRIPT["eval"], "--effect", e, "--coco_dataType", t, "--config",
                a.config, "--scale_mode", a.scale_mode, "--scale_search", a.scale_search,
                "--weights", expert_weights(a, d, e),
                "--seed", a.seed, *common], metrics(e)))
        for method, effect in (("route", "_ensemble"), ("fuse", "_ensemble_fuse")):
            steps.append(Step(f"ensemble_{method}_{t}", [
                "python", SCRIPT["ensemble"], "--coco_dataType", t, "--method", method,
                "--domain_results", d["domain"] / f"{t}.json", *common,
                *(["--skip_below", a.fuse_skip_below] if method == "fuse" else [])]))
            steps.append(Step(f"eval_{t}{effect}", [
                "python", SCRIPT["eval"], "--effect", effect, "--coco_dataType", t,
                "--compute_keypoint", "False", "--eval_compute_keypoint", "True",
                "--seed", a.seed, *common], metrics(effect)))
        steps.append(Step(f"uncertainty_{t}", ["python", SCRIPT["uncertainty"],
                                                "--coco_dataType", t, *common]))
    return steps


@main_guard
def main(argv=None):
    a = parse_args(argv)
    d = output_dirs(a)
    start = time.time()
    runner = Runner(d["results"] / "steps", force=a.force)
    # Later steps' commands depend on what earlier steps wrote (the classifier's run folder),
    # so each group is built just before it runs.
    for group in (data_steps, training_steps, evaluation_steps):
        runner.run_all(group(a, d, runner))
    from model.summary import write_summary
    text = write_summary(coco_root=a.coco_root, eval_dir=d["eval"],
                         weights_dir=d["weights"], classifier_log_dir=d["classifier_log"],
                         domain_dir=d["domain"], out_dir=d["results"],
                         timings=runner.timings, settings=vars(a),
                         num_images=num_eval_images(a.coco_root, paths.EVAL_BASE))
    print(text)
    log.info("experiment finished in %.1f s; summary: %s", time.time() - start,
             d["results"] / "summary.md")


if __name__ == "__main__":
    main()
