"""Training throughput: samples/s and step time of a pose configuration (default the full
CMU model at 368 x 368) in float32 and Keras' mixed precisions (float16 with loss scaling,
bfloat16), optionally compiled with XLA, and the input pipeline's rate beside it, on
whatever device TensorFlow sees.

    python benchmarks/bench_train.py --batch_size 16 --steps 20 --jit_compile both     # GPU
    python benchmarks/bench_train.py --batch_size 2 --steps 2 --precisions float32 bfloat16

The model step runs on random inputs of the crop size (its compute alone); the pipeline
(HDF5 -> augmentation -> effect -> targets, read ahead by --workers threads as in training)
needs --hdf5_dir/train_dataset_2014.h5. Results are printed and, with --out, written as JSON
(with the seed and the device)."""
import argparse
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model import network, paths
from model.cli import add_seed, main_guard, str2bool
from model.domains import EXPERT_EFFECTS, NORMAL
from model.errors import UserError
from model.files import write_json
from model.machine import (cpu_times, describe, describe_line, steal_percent, steal_text,
                           usable_cpus)
from model.batchnorm import build_bn_training_model
from model.optim import make_optimizer
from model.pipeline import BatchStream, PoseBatches
from model.recipes import get_recipe
from model.train_config import KERAS_POLICIES, augment_params, resolve_schedule
from model.train_step import Stepper, make_strategy, output_names
from model.trainer import LOSS_SCALED, float32_outputs

PRECISIONS = ("float32", "float16", "bfloat16")


def device_description(cpu=None):
    """The GPUs TensorFlow sees, or the CPU (model.machine.describe_line of `cpu`)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                 for g in gpus]
        return f"{len(gpus)} GPU: {', '.join(names)}"
    return f"CPU: {describe_line(cpu)}"


def random_batch(pcfg, batch_size, names, seed):
    """Inputs and targets of the configuration's crop size, uniform noise (compute alone)."""
    rng = np.random.default_rng(seed)
    s, g = pcfg.input_size, pcfg.output_size
    inputs = {"image": rng.uniform(0, 255, (batch_size, s, s, 3)).astype(np.float32),
              "mask": np.ones((batch_size, g, g, 1), np.float32)}
    targets = {n: rng.random((batch_size, g, g, network.BRANCH_OUTPUTS[int(n[-1])]),
                             ).astype(np.float32) for n in names}
    return inputs, targets


def result_key(precision, jit_compile=False):
    """The name of one timing in the results: the Keras policy, "_xla" when compiled."""
    return KERAS_POLICIES.get(precision, "float32") + ("_xla" if jit_compile else "")


def build_for_timing(pcfg, batch_size, precision, strategy, seed, batch_norm=False):
    """Training model and built optimizer as model/trainer.py makes them for `precision`:
    the mixed policy while building, float32 outputs, loss scaling for float16 only."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    policy = KERAS_POLICIES.get(precision)
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = (build_bn_training_model(pcfg, seed=seed) if batch_norm else
                     network.build_pose_model(pcfg, training=True, vgg19=None, seed=seed))
            if policy:
                model = float32_outputs(model)
            opt = make_optimizer(resolve_schedule("auto", pcfg), None, batch_size, 10 ** 6,
                                 precision == LOSS_SCALED)
            opt.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, opt


def time_train_steps(config="full", batch_size=10, steps=5, warmup=1, precision="float32",
                     jit_compile=False, seed=0, distribute="none", batch_norm=None):
    """The model's training step alone, on random inputs of the configuration's crop size:
    {"step_s": median seconds per step, "samples_per_s", "first_step_s" (graph tracing, and
    the XLA compilation with jit_compile), "steps", "batch_size", "precision", ...}.
    batch_norm: the network with a BatchNormalization after each hidden convolution, as the
    small configuration trains (None: as the configuration's recipe trains)."""
    pcfg = network.get_config(config)
    if batch_norm is None:
        batch_norm = get_recipe(pcfg).batch_norm
    strategy = make_strategy(distribute)
    keras.utils.set_random_seed(seed)
    model, opt = build_for_timing(pcfg, batch_size, precision, strategy, seed, batch_norm)
    names = output_names(pcfg.num_stages)
    inputs, targets = random_batch(pcfg, batch_size, names, seed)
    stepper = Stepper(model, opt, strategy, batch_size, names, jit_compile=jit_compile)
    times = []
    # The first call traces (and compiles) the graph; train() returns numpy losses, so each
    # timed call includes the whole step on the device.
    for _ in range(max(1, warmup) + steps):
        t = time.perf_counter()
        stepper.train(inputs, targets)
        times.append(time.perf_counter() - t)
    first, step = times[0], float(np.median(times[max(1, warmup):]))
    return {"step_s": step, "samples_per_s": batch_size / step, "first_step_s": first,
            "steps": steps, "warmup": max(1, warmup), "batch_size": batch_size,
            "input_size": pcfg.input_size, "precision": precision,
            "policy": result_key(precision), "jit_compile": bool(jit_compile),
            "batch_norm": bool(batch_norm), "replicas": strategy.num_replicas_in_sync}


def time_pipeline(hdf5, config="full", batch_size=10, batches=10, workers=1, effect=NORMAL,
                  seed=0):
    """Input pipeline alone (HDF5 -> augmentation -> effect -> targets), read ahead by
    `workers` threads as in training: {"samples_per_s", "batch_s", "batches"}."""
    pcfg = network.get_config(config)
    data = PoseBatches(hdf5, batch_size, effect, pcfg.num_stages, augment_params(pcfg),
                       seed=seed)
    stream = BatchStream(data, workers)
    try:
        stream.get(0)                     # opens the file, warms caches
        start = time.perf_counter()
        n = 0
        for _, (inputs, _) in stream.iterate(1, 1 + batches):
            n += len(inputs["image"])
        seconds = time.perf_counter() - start
    finally:
        stream.close()
        data.close()
    return {"samples_per_s": n / seconds, "batch_s": seconds / batches, "batches": batches,
            "workers": workers, "batch_size": batch_size}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="full", choices=list(network.CONFIGS),
                        help="network configuration (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=10,
                        help="global batch (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed optimizer steps per precision (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first (graph tracing) (default: %(default)s)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "float16"],
                        choices=PRECISIONS, help="float16 = mixed_float16 with loss scaling, "
                        "bfloat16 = mixed_bfloat16 (default: %(default)s)")
    parser.add_argument("--jit_compile", default="false", choices=["false", "true", "both"],
                        help="XLA-compile the train step (default: %(default)s)")
    parser.add_argument("--batch_norm", type=str2bool, default=None,
                        help="time the network with batch normalisation (default: as the "
                             "configuration trains: small with, full without)")
    parser.add_argument("--distribute", default="none", choices=["none", "mirrored"],
                        help="mirrored: every visible GPU (default: %(default)s)")
    parser.add_argument("--hdf5_dir", type=Path, default=paths.DATASET_DIR,
                        help="folder of train_dataset_2014.h5 for the pipeline rate "
                             "(default: %(default)s)")
    parser.add_argument("--pipeline", type=str2bool, default=True,
                        help="also time the input pipeline (default: %(default)s)")
    parser.add_argument("--pipeline_batches", type=int, default=20,
                        help="batches timed in the pipeline (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(2, usable_cpus()),
                        help="pipeline threads (default: %(default)s)")
    parser.add_argument("--effect", default=NORMAL, choices=list(EXPERT_EFFECTS),
                        help="effect applied in the pipeline (default: '')")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    add_seed(parser)
    return parser.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    for flag in ("batch_size", "steps", "pipeline_batches"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    hdf5 = paths.hdf5_file(args.hdf5_dir, "train")
    if args.pipeline and not hdf5.is_file():
        raise UserError(f"training HDF5 not found: {hdf5} (write it with "
                        "training/generate_hdf5_coco2014.py, or pass --pipeline false)")
    cfg = network.get_config(args.config)
    jit = {"both": [False, True], "true": [True], "false": [False]}[args.jit_compile]
    cpu = describe()
    results = {"config": cfg.name, "input_size": cfg.input_size, "seed": args.seed,
               "device": device_description(cpu), "cpu": cpu, "model": {}}
    batch_norm = get_recipe(cfg).batch_norm if args.batch_norm is None else args.batch_norm
    results["batch_norm"] = batch_norm
    print(f"device: {results['device']}; config {cfg.name} at {cfg.input_size} x "
          f"{cfg.input_size}, batch {args.batch_size}, batch norm {batch_norm}, seed {args.seed}")
    for precision, compiled in [(p, j) for p in dict.fromkeys(args.precisions) for j in jit]:
        start, ticks = time.time(), cpu_times()
        r = time_train_steps(cfg, args.batch_size, args.steps, args.warmup, precision,
                             compiled, args.seed, args.distribute, batch_norm)
        # Steal: CPU time the hypervisor gave to other machines while this one computed.
        r["steal_percent"] = steal_percent(ticks)
        key = result_key(precision, compiled)
        results["model"][key] = r
        print(f"model {key:18s}: {r['step_s'] * 1000:9.1f} ms/step, "
              f"{r['samples_per_s']:8.2f} samples/s ({r['replicas']} replica(s), median of "
              f"{r['steps']} steps; first step {r['first_step_s']:.1f} s; "
              f"{time.time() - start:.0f} s; steal {steal_text(r['steal_percent'])})")
    if args.pipeline:
        r = time_pipeline(hdf5, cfg, args.batch_size, args.pipeline_batches, args.workers,
                          args.effect, args.seed)
        results["pipeline"] = r
        print(f"pipeline ({args.workers} threads): {r['batch_s'] * 1000:9.1f} ms/batch, "
              f"{r['samples_per_s']:8.2f} samples/s")
    if args.out:
        write_json(args.out, results, indent=1)
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
