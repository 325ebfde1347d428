"""Network time per image of the pose network in TensorFlow (Keras called eagerly, as a
tf.function graph, which Keras' predict_on_batch is, and frozen, network.freeze_inference,
which model/inference.py runs for a network loaded from a weight file), ONNX Runtime and
OpenVINO, in one run, and the post-processing time beside it.

    python benchmarks/bench_inference.py [--config full] [--repeats 5] [--new_sizes 10]
                                         [--threads N] [--out FILE.md]

Batch 1, at 368 x 368 (CMU's crop) and at 640 x 480 native (a VGA photo, fed as it is, the
fork's single scale), each the same image again and again; and, as an evaluation meets
them, --new_sizes images of sizes the backend has not seen, within 64 px of 368 x 280 (each
backend its own sizes, drawn alike: oneDNN keeps what it prepared for a size, whichever
backend asked). Weights are random (He-scaled): the time of a convolution does not
depend on its values. Each backend runs the same ONNX file exported from the same Keras
model (model/export.py), after one untimed warm-up call per size; the table gives the median
wall time of --repeats calls, so compare backends within one run: they take turns on the
same machine and load. Post-processing (maps at network resolution -> people -> COCO
records, model/inference.py + model/decode.py at the default working grid) is timed on a
640 x 480 scene of 5 people rendered by the ground-truth encoder with noise, as in
benchmarks/bench_decode.py. The CPU model and the thread settings are printed with the table.
Every call is timed until its maps are in host memory (NumPy), so a GPU's asynchronous
kernels are counted to their end. benchmarks/gpu_check.py times the same calls on a GPU,
with ONNX Runtime on its CUDA provider (`onnxruntime_backend`).
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from bench_decode import fast_postprocess, load_literal

from model import caffe, export, files, inference, network
from model.cli import main_guard
from model.errors import UserError
from model.launcher import limit_threads
from model.machine import cpu_times, describe_line, steal_percent, steal_text

SIZES = {"368x368": (368, 368), "640x480": (480, 640)}


def random_weights(config, folder):
    """He-scaled random weights of `config` as a Keras weight file (maps far from zero)."""
    model = caffe.write_caffemodel(Path(folder) / "random.caffemodel", caffe.random_layers(config))
    weights = Path(folder) / "random.h5"
    caffe.convert_caffemodel(model, weights, config)
    return weights


def median_ms(call, batch, repeats):
    call(batch)                                   # warm-up: graph building, allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def materialised(call):
    """`call` returning its outputs as NumPy arrays: on a GPU, the copy back waits for the
    kernels, so the time is the whole call's (on a CPU the copy costs next to nothing)."""
    return lambda batch: [np.asarray(o) for o in call(batch)]


def tensorflow_backends(config, weights):
    """The Keras model with `weights`, called eagerly, as a tf.function graph (what
    model/inference.py runs for a model built in code, through predict_on_batch) and frozen
    (what it runs for one loaded from a weight file)."""
    keras_model = network.build_pose_model(config, weights=str(weights), vgg19=None)
    graph = tf.function(lambda b: keras_model(b, training=False), reduce_retracing=True)
    return {"TensorFlow": materialised(lambda b: keras_model(b, training=False)),
            "TensorFlow tf.function": materialised(graph),
            "TensorFlow frozen": materialised(network.freeze_inference(keras_model))}


def onnxruntime_backend(onnx_path, provider="CPUExecutionProvider"):
    """(call, providers in use) of an ONNX Runtime session on `provider` alone: a provider
    that cannot start (no CUDA, missing libraries) is an error here, not a quiet fall-back
    to the CPU as in ONNX Runtime's own default."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=[provider])
    used = session.get_providers()
    if not used or used[0] != provider:
        raise RuntimeError(f"ONNX Runtime did not start {provider} (running on {used}; "
                           f"available: {ort.get_available_providers()})")
    name = session.get_inputs()[0].name
    return (lambda b: session.run(None, {name: np.ascontiguousarray(b, np.float32)})), used


def time_backends(backends, sizes=None, repeats=5, seed=0):
    """{size: {backend: median ms}} for batch-1 uniform noise images of each size (one image
    per size, the same for every backend)."""
    rng = np.random.default_rng(seed)
    results = {}
    for size, (h, w) in (sizes or SIZES).items():
        batch = rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32)
        results[size] = {name: median_ms(call, batch, repeats) for name, call in backends.items()}
    return results


def new_sizes_ms(backends, count, around=(280, 368), seed=0):
    """{backend: mean ms per image} of `count` calls, each on a size the backend has not
    seen, within 64 px of `around` (h, w) in steps of 8; the sizes are drawn once and dealt
    round-robin by area, so every backend gets sizes of about the same total area."""
    rng = np.random.default_rng(seed)
    steps = np.arange(-8, 9) * 8
    sizes = {(around[0] + int(dh), around[1] + int(dw))
             for dh, dw in rng.choice(steps, (40 * count * len(backends), 2))}
    sizes = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))[:count * len(backends)]
    if len(sizes) < count * len(backends):
        raise UserError(f"--new_sizes {count} needs more sizes than {len(sizes)}")
    out = {}
    for k, (name, call) in enumerate(backends.items()):
        mine = sizes[k::len(backends)]
        call(rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32))      # warm-up
        start = time.perf_counter()
        for h, w in mine:
            call(rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32))
        out[name] = (time.perf_counter() - start) / count * 1000.0
    return out


def postprocess_ms(repeats, seed=0):
    ref = load_literal()
    hw = (480, 640)
    rng = np.random.default_rng(seed)
    settings = inference.InferenceSettings()
    times = []
    for _ in range(repeats):
        people = ref.random_people(rng, 5, hw, min_height=100, max_height=300)
        heat, paf = ref.render(people, hw, stride=8, noise=0.03, rng=rng)
        start = time.perf_counter()
        fast_postprocess(heat, paf, hw, 1, settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def run(config, repeats, new_sizes):
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_weights(config, tmp)
        onnx_path = Path(tmp) / "pose.onnx"
        export.export_onnx(config, weights, onnx_path)
        backends = {**tensorflow_backends(config, weights),
                    "ONNX Runtime": export.OnnxPoseModel(onnx_path, config),
                    "OpenVINO": export.OpenVinoPoseModel(onnx_path, config),
                    "OpenVINO bf16": export.OpenVinoPoseModel(onnx_path, config, "bf16")}
        results = time_backends(backends, SIZES, repeats)
        if new_sizes:
            results[f"{new_sizes} new sizes near 368x280"] = new_sizes_ms(backends, new_sizes)
    threads = {"tensorflow_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
               "tensorflow_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
               "onnxruntime_intra_op": "0 (one per core)"}
    return results, threads


def format_table(config, results, post_ms, repeats, threads):
    names = list(next(iter(results.values())))
    lines = [f"Network time per image, configuration {config}, batch 1, median of {repeats} "
             f"(CPU: {describe_line()}; threads: {threads}):", "",
             "| input | " + " | ".join(f"{n} (ms)" for n in names)
             + " | " + " | ".join(f"TensorFlow / {n}" for n in names[1:]) + " |",
             "|---|" + "---:|" * (2 * len(names) - 1)]
    for size, row in results.items():
        tf_ms = row["TensorFlow"]
        lines.append(f"| {size} | " + " | ".join(f"{row[n]:.0f}" for n in names) + " | "
                     + " | ".join(f"{tf_ms / row[n]:.2f}x" for n in names[1:]) + " |")
    if any(size not in SIZES for size in results):
        lines += ["", "New sizes: the mean over calls that each met a size for the first time "
                      "(the row's sizes differ between backends, drawn alike)."]
    lines += ["", f"Post-processing of a 640x480 image with 5 people (maps -> COCO records, "
                  f"working grid {inference.DEFAULT_RESOLUTION}): {post_ms:.1f} ms (median)."]
    return "\n".join(lines) + "\n"


@main_guard
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="full", choices=sorted(network.CONFIGS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new_sizes", type=int, default=10,
                   help="images of sizes not seen before, timed once each (0: none)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per operation (default: all cores), as Runner.run_groups "
                        "gives each of its side-by-side steps")
    args = p.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        limit_threads(args.threads)
    if args.new_sizes < 0:
        raise UserError(f"--new_sizes must be >= 0, got {args.new_sizes}")
    ticks = cpu_times()
    results, threads = run(args.config, max(1, args.repeats), args.new_sizes)
    table = format_table(args.config, results, postprocess_ms(max(3, args.repeats)),
                         args.repeats, threads)
    table += f"\nsteal while it ran: {steal_text(steal_percent(ticks))}\n"
    print(table)
    if args.out:
        files.write_text(args.out, table)


if __name__ == "__main__":
    main()
