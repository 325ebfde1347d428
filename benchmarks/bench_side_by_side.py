#!/usr/bin/env python
"""Fine-tunings one after another on every core against two at a time, the cores split, as
run_experiment.py runs them (model.experiment.Runner.run_groups).

    python benchmarks/bench_side_by_side.py      # after `make demo`: its HDF5 and base network
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_side_by_side.py --steps 30 --repeats 2

Each repeat times the same fine-tunings (train_pose.py --weights <base train_state.h5>, one
epoch of --steps steps, each domain once) both ways, in the same minute, and prints the wall
times and their ratio with the CPU model: a ratio above 1 means side by side is faster.
"""
import argparse
import logging
import tempfile
import time
from pathlib import Path

from model import paths
from model.domains import BASE
from model.cli import main_guard
from model.errors import UserError
from model.experiment import Runner, Step
from model.launcher import Launcher
from model.machine import cpu_times, describe_line, steal_percent, steal_text
from model.steps import SCRIPT

EFFECTS = ("_dark", "_motion_blur")


def fine_tuning(effect, args, out_dir):
    return Step(f"train{effect}", [
        "python", SCRIPT["train_pose"], "--effect", effect, "--config", args.config,
        "--epochs", 1, "--steps_per_epoch", args.steps, "--batch_size", args.batch_size,
        "--hdf5_dir", args.hdf5_dir, "--out_dir", out_dir / f"weights{effect}", "--seed", 0,
        "--progress", "false", "--weights", args.weights],
        [out_dir / f"weights{effect}" / "weights.0001.h5"])


def time_both(args, launcher, folder):
    """(seconds one after another, seconds side by side) of the same fine-tunings."""
    seconds = []
    for name, processes in (("sequential", 1), ("side_by_side", 2)):
        out = folder / name
        runner = Runner(out / "steps", force=True, launcher=launcher)
        start = time.time()
        runner.run_groups([[fine_tuning(e, args, out)] for e in EFFECTS], processes)
        seconds.append(time.time() - start)
    return seconds


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hdf5_dir", type=Path, default=paths.DATASET_DIR)
    p.add_argument("--weights", type=Path,
                   default=paths.expert_weights_dir(BASE) / "train_state.h5",
                   help="the base network's train_state.h5 the fine-tunings start from")
    p.add_argument("--config", default="small")
    p.add_argument("--steps", type=int, default=30, help="steps of each fine-tuning")
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("experiment").setLevel(logging.WARNING)
    for f in (args.hdf5_dir / "train_dataset_2014.h5", args.weights):
        if not f.is_file():
            raise UserError(f"{f} not found: run `make demo` first, or give --hdf5_dir and "
                             f"--weights")
    print(f"CPU: {describe_line()}; {len(EFFECTS)} fine-tunings of "
          f"{args.steps} steps, batch {args.batch_size}, --config {args.config}")
    launcher = Launcher()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            ticks = cpu_times()
            sequential, side_by_side = time_both(args, launcher, Path(tmp) / str(repeat))
            print(f"repeat {repeat + 1}: one after another {sequential:.1f} s, two at a time "
                  f"{side_by_side:.1f} s: {sequential / side_by_side:.2f}x; steal "
                  f"{steal_text(steal_percent(ticks))}", flush=True)


if __name__ == "__main__":
    main()
