#!/usr/bin/env python
"""The whole domain-expert experiment, step by step (what `make demo` runs).

    python run_experiment.py                 # synthetic mini-COCO, small networks, CPU (the demo)
    python run_experiment.py --synthetic false --coco_root /data/COCO --config full \\
        --pose_epochs 100 --pose_steps 0 --pose_batch 10     # the recipe on real COCO 2014

--config picks the recipe (model.recipes): the network, the classifier's architecture, input,
epochs and milestones, and the evaluation scale all default to that recipe's values.

Steps: synthetic mini-COCO -> masks -> HDF5 -> domain-shifted evaluation sets -> the base
network -> the three experts and the generalist, each fine-tuned from it for the same steps,
two at a time, beside the domain classifier's training and predictions -> evaluation
of the 4 test domains x (3 experts + generalist + normal expert with a test-time gamma
correction + routed and fused ensembles) -> uncertainty for the 4 domains -> the robustness
sweep -> summary.
Every step is one of the project's scripts with the command line a user would type; the
runner prints it, times it and skips it on a rerun once it has finished (--force true redoes
everything). Results: <results>/summary.md and <results>/*.png.
"""
import argparse
import logging
import time
from pathlib import Path

from model import paths
from model.cli import add_seed, main_guard, str2bool
from model.experiment import Runner
from model.launcher import Launcher
from model.machine import usable_cpus
from model.recipes import RECIPES, get_recipe, per_config
from model.errors import UserError
from model.steps import (check_flags, data_steps, evaluation_steps, num_eval_images,
                         output_dirs, training_steps)
from model.report import write_summary

log = logging.getLogger("run_experiment")
# Images per evaluation set on the synthetic mini-COCO: all of its 125 held-out val2014 images.
# With 80 the pose-level uncertainty check on motion blur rested on 54-74 people found by two
# experts and its p-value fell either side of 0.01 from run to run (BENCHMARKS.md).
SYNTHETIC_EVAL_IMAGES = 125
# Steps run at once (model.experiment.Runner.run_groups): two fine-tunings, then two evaluation
# sets at a time; on 2 cores at least.
STEPS_AT_ONCE = min(2, usable_cpus())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco_root", type=Path, default=None,
                   help="COCO 2014 layout: images/, annotations/ (default: <output_root>/COCO "
                        f"with --output_root, else {paths.DEFAULT_COCO_ROOT})")
    add_seed(p)
    p.add_argument("--synthetic", type=str2bool, default=True,
                   help="generate the synthetic mini-COCO into --coco_root first")
    p.add_argument("--num_train", type=int, default=400, help="synthetic train2014 images")
    p.add_argument("--num_val", type=int, default=250, help="synthetic val2014 images")
    p.add_argument("--val_holdout", type=int, default=2645,
                   help="held-out val2014 images (capped at half of val2014)")
    p.add_argument("--num_eval", type=int, default=None,
                   help="images per evaluation set (default: 1000, the fork's; "
                        f"{SYNTHETIC_EVAL_IMAGES}, the held-out synthetic images, with "
                        "--synthetic true)")
    p.add_argument("--config", default="small",
                   help=f"recipe: network and defaults ({', '.join(RECIPES)})")
    p.add_argument("--pose_epochs", type=int, default=6,
                   help="epochs of the base network on normal images")
    p.add_argument("--finetune_epochs", type=int, default=1,
                   help="epochs of each expert and of the generalist, all warm-started from "
                        "the base network (the normal expert on normal images), so every "
                        "column of the AP table has the same budget; 0 = no base network: "
                        "each trains --pose_epochs from scratch")
    p.add_argument("--pose_steps", type=int, default=0,
                   help="steps per epoch; 0 = one pass over the training data")
    p.add_argument("--finetune_steps", type=int, default=0,
                   help="steps per epoch of each fine-tuning; 0 = one pass over the training "
                        "data")
    p.add_argument("--pose_batch", type=int, default=10)
    p.add_argument("--pose_extra", default="",
                   help="more flags for train_pose.py, e.g. '--schedule caffe'")
    # Flags whose default depends on --config take it from the recipe (model.recipes).
    p.add_argument("--classifier_arch", default=None,
                   help=f"train.py --arch (default: {per_config(lambda r: r.classifier.arch)})")
    p.add_argument("--classifier_epochs", type=int, default=None,
                   help=f"default: {per_config(lambda r: r.classifier.epochs)}")
    p.add_argument("--classifier_milestones", default=None,
                   help="epochs after which the classifier's lr drops x0.1 (space separated; "
                        f"default: {per_config(lambda r: _milestones(r.classifier))})")
    p.add_argument("--classifier_input_size", type=int, default=None,
                   help=f"default: {per_config(lambda r: r.classifier.input_size)}")
    p.add_argument("--classifier_workers", type=int, default=None,
                   help="train.py --workers (default: "
                        f"{per_config(lambda r: r.classifier.workers)})")
    p.add_argument("--classifier_keep_last", type=int, default=2,
                   help="train.py --keep_last: checkpoints kept besides the best one (a "
                        "ResNet-18 checkpoint with its optimizer state is 135 MB; 0 = all)")
    p.add_argument("--classifier_input_mode", default=None, choices=("resize", "crop"),
                   help="train.py --input_mode (default: "
                        f"{per_config(lambda r: r.classifier.input_mode)})")
    p.add_argument("--classifier_val_fraction", type=float, default=None,
                   help="train2014 images held out to validate the classifier (default: "
                        f"{per_config(lambda r: r.classifier.val_fraction)})")
    p.add_argument("--scale_mode", default=None, choices=("native", "boxsize"),
                   help="evaluation scale mode (default: "
                        f"{per_config(lambda r: r.eval_scale_mode)})")
    p.add_argument("--scale_search", type=float, default=None,
                   help="evaluation scale (default: "
                        f"{per_config(_single_scale)})")
    p.add_argument("--output_root", type=Path, default=None,
                   help="put every output (weights, HDF5, runs, results) under this folder "
                        "instead of the repository's default places")
    p.add_argument("--fuse_skip_below", type=float, default=0.05,
                   help="ensemble.py --skip_below for the fused ensemble: an expert the "
                        "classifier gives less than this probability is not run on the image")
    p.add_argument("--robustness_images", type=int, default=8,
                   help="images of the normal evaluation set in the severity sweep "
                        "(eval/robustness.py: 16 corrupted copies each)")
    p.add_argument("--force", type=str2bool, default=False, help="redo every step")
    return resolve_defaults(p.parse_args(argv))


def _milestones(classifier):
    """The --classifier_milestones spelling of a classifier recipe's milestones."""
    return " ".join(str(m) for m in classifier.milestones)


def _single_scale(recipe):
    """The runner evaluates at one scale: the ensembles and the uncertainty analysis read the
    single-scale run folders (model.runs)."""
    (scale,) = recipe.eval_scale_search
    return scale


def resolve_defaults(a):
    """Fill in every flag left to --config from its recipe, so the steps and the summary's
    settings table show what ran."""
    if a.coco_root is None:
        a.coco_root = (paths.DEFAULT_COCO_ROOT if a.output_root is None
                       else a.output_root / "COCO")
    if a.num_eval is None:
        a.num_eval = SYNTHETIC_EVAL_IMAGES if a.synthetic else 1000
    recipe = get_recipe(a.config)
    c = recipe.classifier
    for name, value in (("classifier_arch", c.arch), ("classifier_epochs", c.epochs),
                        ("classifier_milestones", _milestones(c)),
                        ("classifier_input_size", c.input_size),
                        ("classifier_input_mode", c.input_mode),
                        ("classifier_val_fraction", c.val_fraction),
                        ("classifier_workers", c.workers),
                        ("scale_mode", recipe.eval_scale_mode),
                        ("scale_search", _single_scale(recipe))):
        if getattr(a, name) is None:
            setattr(a, name, value)
    return a


def check_classifier_arch(arch):
    """train.py's --arch choices; its torch module is imported only for a name no recipe
    uses."""
    if arch in {r.classifier.arch for r in RECIPES.values()}:
        return
    from train_domain_classifier.network import ARCHS
    if arch not in ARCHS:
        raise UserError(f"unknown --classifier_arch {arch!r}; choose from {', '.join(ARCHS)}")


@main_guard
def main(argv=None):
    a = parse_args(argv)
    d = output_dirs(a)
    check_flags(a, d)
    check_classifier_arch(a.classifier_arch)
    start = time.time()
    runner = Runner(d["results"] / "steps", force=a.force, launcher=Launcher())
    # Later steps' commands depend on what earlier steps wrote (the classifier's run folder),
    # so each part is built just before it runs.
    runner.run_all(data_steps(a, d, runner))
    alone, groups = training_steps(a, d, runner)
    runner.run_all(alone)
    runner.run_groups(groups, processes=STEPS_AT_ONCE)
    runner.run_groups(evaluation_steps(a, d, runner), processes=STEPS_AT_ONCE)
    text = write_summary(coco_root=a.coco_root, eval_dir=d["eval"],
                         weights_dir=d["weights"], classifier_log_dir=d["classifier_log"],
                         domain_dir=d["domain"], out_dir=d["results"],
                         timings=runner.timings, steal_percent=runner.steal_percent(),
                         settings=vars(a),
                         num_images=num_eval_images(a.coco_root, paths.EVAL_BASE))
    print(text)
    log.info("experiment finished in %.1f s; summary: %s", time.time() - start,
             d["results"] / "summary.md")


if __name__ == "__main__":
    main()
