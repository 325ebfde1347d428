"""Where a training step of a pose configuration spends its time: each convolution of the plan
timed alone (forward and backward, as it trains: conv + batch norm + ReLU for the small
configuration), then whole training steps of variants of the configuration (input size,
refinement kernel, width) at the same batch, so that the cost of each choice is measured
rather than guessed from its FLOPs.

    python benchmarks/bench_layers.py --config small
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_layers.py --config small   # AVX2 kernels

A layer alone is timed on random inputs of its input shape, median of --repeats calls of one
tf.function (gradients with respect to its weights and its input, as backpropagation needs);
the per-call overhead (about 2-3 ms on 2 cores) is in every row, so the rows add up to more
than a whole step. GFLOP/s counts 3x the forward multiply-adds x 2 (forward, input gradient,
weight gradient). The CPU model and oneDNN's ISA limit are printed with the tables."""
import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import keras
import tensorflow as tf
from bench_train import time_train_steps

from model import batchnorm, network
from model.cli import add_seed, main_guard, str2bool
from model.errors import UserError
from model.files import write_json
from model.machine import cpu_times, describe, describe_line, steal_percent, steal_text
from model.recipes import get_recipe

# Variants of a configuration timed as whole steps: (label, PoseConfig field changes).
VARIANTS = (
    ("as configured", {}),
    ("refinement kernel 7", {"stage_kernel": 7}),
    ("refinement kernel 3", {"stage_kernel": 3}),
    ("input 160", {"input_size": 160}),
    ("input 152", {"input_size": 152}),
    ("width 0.1875", {"width": 0.1875}),
)


def layer_inputs(config):
    """(LayerSpec, input height = width) of every convolution of the plan."""
    cfg = network.get_config(config)
    size = {"image": cfg.input_size}
    for spec in network.layer_plan(cfg):
        s = size[spec.inputs[0]]
        size[spec.name] = (s + 1) // 2 if spec.kind == "pool" else s
        if spec.kind == "conv":
            yield spec, s


def training_gflop(spec, size, batch_size):
    """GFLOP of one layer's forward and backward pass: 3x the forward multiply-adds x 2."""
    return 6 * batch_size * size * size * spec.kernel ** 2 * spec.in_channels * spec.filters / 1e9


def time_layer(spec, size, batch_size, batch_norm, repeats, seed):
    """Median seconds of one forward + backward pass of the layer alone."""
    x = keras.Input((size, size, spec.in_channels))
    if batch_norm:
        y = batchnorm.conv_bn_relu(spec, x, seed, synchronized=False)
    else:
        y = keras.layers.Conv2D(spec.filters, spec.kernel, padding="same",
                                activation="relu" if spec.relu else None)(x)
    layer = keras.Model(x, y)
    data = tf.random.stateless_uniform((batch_size, size, size, spec.in_channels), (seed, 0))

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = layer(inputs, training=True)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, layer.trainable_variables + [inputs])

    times = []
    for _ in range(2 + repeats):
        start = time.perf_counter()
        [g.numpy() for g in step(data)]
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def profile_layers(config, batch_size, batch_norm, repeats, seed):
    rows = []
    for spec, size in layer_inputs(config):
        seconds = time_layer(spec, size, batch_size, batch_norm, repeats, seed)
        gflop = training_gflop(spec, size, batch_size)
        rows.append({"layer": spec.name, "size": size, "in": spec.in_channels,
                     "out": spec.filters, "kernel": spec.kernel, "ms": seconds * 1000,
                     "gflop": gflop, "gflop_per_s": gflop / seconds})
    return rows


def group_of(row):
    """The part of the network a layer belongs to, for the summary table."""
    if row["layer"].startswith("conv"):
        return f"backbone at {row['size']} px"
    return f"stage {row['layer'].split('_stage')[1][0]}, {row['kernel']}x{row['kernel']}"


def print_layers(rows):
    total_ms = sum(r["ms"] for r in rows)
    print(f"{'layer':22s} {'input':>5s} {'in->out':>9s} {'k':>2s} {'ms':>7s} {'GFLOP':>6s} "
          f"{'GFLOP/s':>8s} {'share':>6s}")
    for r in rows:
        print(f"{r['layer']:22s} {r['size']:5d} {r['in']:4d}->{r['out']:<4d} {r['kernel']:2d} "
              f"{r['ms']:7.1f} {r['gflop']:6.2f} {r['gflop_per_s']:8.1f} "
              f"{100 * r['ms'] / total_ms:5.1f}%")
    print(f"{'all layers':22s} {'':17s} {total_ms:7.1f} {sum(r['gflop'] for r in rows):6.2f}")
    groups = {}
    for r in rows:
        g = groups.setdefault(group_of(r), [0.0, 0.0])
        g[0] += r["ms"]
        g[1] += r["gflop"]
    print("\nby part:")
    for name, (ms, gflop) in groups.items():
        print(f"  {name:22s} {ms:7.1f} ms ({100 * ms / total_ms:4.1f} %), "
              f"{100 * gflop / sum(r['gflop'] for r in rows):4.1f} % of the FLOPs, "
              f"{gflop / ms * 1000:6.1f} GFLOP/s")


def time_variants(config, batch_size, steps, seed, batch_norm):
    base = network.get_config(config)
    out = []
    for label, changes in VARIANTS:
        cfg = dataclasses.replace(base, **changes)
        r = time_train_steps(cfg, batch_size, steps, 1, seed=seed, batch_norm=batch_norm)
        gflop = sum(training_gflop(spec, s, batch_size) for spec, s in layer_inputs(cfg))
        out.append({"variant": label, **changes, "ms_per_step": r["step_s"] * 1000,
                    "samples_per_s": r["samples_per_s"], "gflop_per_step": gflop})
        print(f"  {label:22s} {r['step_s'] * 1000:7.1f} ms/step {r['samples_per_s']:6.1f} "
              f"samples/s  {gflop:6.1f} GFLOP/step  {gflop / r['step_s']:6.1f} GFLOP/s",
              flush=True)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", choices=list(network.CONFIGS),
                        help="network configuration (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=10,
                        help="batch (default: %(default)s, the demo's)")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed calls per layer (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=6,
                        help="timed training steps per variant (default: %(default)s)")
    parser.add_argument("--batch_norm", type=str2bool, default=None,
                        help="layers with batch norm (default: the configuration's recipe)")
    parser.add_argument("--variants", type=str2bool, default=True,
                        help="also time whole steps of the variants (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    add_seed(parser)
    return parser.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    for flag in ("batch_size", "repeats", "steps"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    batch_norm = get_recipe(args.config).batch_norm if args.batch_norm is None \
        else args.batch_norm
    cpu = describe()
    print(f"CPU: {describe_line(cpu)}; "
          f"config {args.config}, batch {args.batch_size}, batch norm {batch_norm}, "
          f"seed {args.seed}\n")
    ticks = cpu_times()
    results = {"cpu": cpu, "config": args.config,
               "batch_size": args.batch_size, "batch_norm": batch_norm, "seed": args.seed,
               "layers": profile_layers(args.config, args.batch_size, batch_norm,
                                        args.repeats, args.seed)}
    print_layers(results["layers"])
    if args.variants:
        print(f"\nwhole training steps (random inputs, median of {args.steps}):")
        results["variants"] = time_variants(args.config, args.batch_size, args.steps,
                                            args.seed, batch_norm)
    results["steal_percent"] = steal_percent(ticks)
    print(f"\nsteal while it ran: {steal_text(results['steal_percent'])}")
    if args.out:
        write_json(args.out, results, indent=1)
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
