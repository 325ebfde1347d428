#!/usr/bin/env python
"""The whole domain-expert experiment, step by step (what `make demo` runs).

    python run_experiment.py                       # synthetic mini-COCO, small networks, CPU
    python run_experiment.py --coco_root /data/COCO --config full --synthetic false ...

Every step is one of the project's scripts with the command line a user would type; the
runner prints it, times it and skips it on a rerun when it already finished (--force true
redoes everything). Results: results/summary.md and results/*.png.
"""
import argparse
import logging
import time

from model import paths
from model.cli import add_coco_root, add_seed, main_guard, str2bool
from model.experiment import Runner, Step

log = logging.getLogger("run_experiment")


def parse_args():
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
    p.add_argument("--hdf5_dir", default=str(paths.DATASET_DIR), help="HDF5 folder")
    p.add_argument("--force", type=str2bool, default=False, help="redo every step")
    return p.parse_args()


def data_steps(a):
    steps = []
    if a.synthetic:
        steps.append(Step("synthetic_coco", [
            "python", paths.DATASET_DIR / "make_synthetic_coco.py", "--coco_root", a.coco_root,
            "--num_train", a.num_train, "--num_val", a.num_val, "--seed", a.seed],
            [paths.annotation_file(a.coco_root, "val2014")]))
    steps += [
        Step("masks", ["python", paths.REPO_ROOT / "training/generate_masks_coco2014.py",
                       "--coco_root", a.coco_root]),
        Step("hdf5", ["python", paths.REPO_ROOT / "training/generate_hdf5_coco2014.py",
                      "--coco_root", a.coco_root, "--out_dir", a.hdf5_dir,
                      "--val_holdout", a.val_holdout],
             [paths.hdf5_file(a.hdf5_dir, "train"), paths.hdf5_file(a.hdf5_dir, "val")]),
        Step("domain_datasets", ["python", paths.DATASET_DIR / "make_domain_datasets.py",
                                 "--coco_root", a.coco_root, "--num", a.num_eval,
                                 "--seed", a.seed, "--val_holdout", a.val_holdout],
             [paths.annotation_file(a.coco_root, t) for t in paths.EVAL_DATATYPES]),
    ]
    return steps


@main_guard
def main():
    a = parse_args()
    start = time.time()
    runner = Runner(paths.RESULTS_DIR / "steps", force=a.force)
    runner.run_all(data_steps(a))
    log.info("experiment finished in %.1f s", time.time() - start)


if __name__ == "__main__":
    main()
