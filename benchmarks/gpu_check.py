"""The GPU check: the project's speed measurements on one GPU machine, in one JSON file.

    benchmarks/gpu_check.sh [--out results/gpu_check.json]    # installs, then runs this
    python benchmarks/gpu_check.py --dry_run true --out /tmp/gpu.json    # tiny, on the CPU

Parts, in this order, each in its own process with its own time limit (an error or a time-out
is recorded in the part and the next part runs): `data` (a small synthetic mini-COCO, its masks
and HDF5, written by the project's scripts), `pipeline` (input pipeline samples/s, 1 thread and
one per core), `train_float32`, `train_bfloat16` (the full model's training step at 368 x 368,
batches 10 and 32; bfloat16 is Keras' mixed_bfloat16), `classifier` (the domain classifier's
ResNet-50 training step at 112 px, batch 32, in PyTorch), `export` (random He-scaled weights and
their ONNX export by model/export.py, on the CPU), `inference_tensorflow` and
`inference_onnxruntime` (ms per image at 368 x 368 and 640 x 480; ONNX Runtime on its CUDA
provider) and `train_bfloat16_xla` (the bfloat16 step compiled by XLA, last because its
compilation takes longest). The file also holds nvidia-smi's output, the CPU model, the package
versions of both environments, the settings and the seed. It is rewritten after every part with
"complete": false, and once more with true at the end.

The dry run (--dry_run true) runs the same parts with a one-stage network at 64 px, batches 1
and 2, one timed step each, and ONNX Runtime on the CPU: a check of the machinery in a minute.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))    # `model` without an installed package (the GPU environments)

from model.cli import add_seed, main_guard, str2bool  # noqa: E402
from model.errors import UserError  # noqa: E402
from model.files import ensure_writable_dir, write_json  # noqa: E402
from model.machine import describe, describe_line, lscpu_fields, usable_cpus  # noqa: E402

FORMAT = 1
# (name, environment, sees the GPU, time limit in s on a GPU machine)
PARTS = (("data", "tf", False, 120), ("pipeline", "tf", False, 90),
         ("train_float32", "tf", True, 180), ("train_bfloat16", "tf", True, 180),
         ("classifier", "torch", True, 120), ("export", "tf", False, 180),
         ("inference_tensorflow", "tf", True, 120), ("inference_onnxruntime", "tf", True, 120),
         ("train_bfloat16_xla", "tf", True, 300))
DRY_RUN_LIMIT_S = 90
MIN_PART_S = 10           # a part is not started with less time than this left
# Packages whose installed versions are recorded, per environment.
PACKAGES = {"tf": ("tensorflow", "tensorflow-cpu", "keras", "numpy", "h5py", "onnx", "tf2onnx",
                   "onnxruntime", "onnxruntime-gpu", "openvino", "opencv-python-headless"),
            "torch": ("torch", "torchvision", "numpy")}


def make_settings(dry_run, seed, work_dir):
    """Everything the parts read. On a GPU: the full model at its 368 px crop, batches 10 (the
    recipe's) and 32, 10 timed steps after 2 untimed ones; the fork's classifier recipe
    (ResNet-50, 112 px, batch 32). The dry run: a one-stage network at 64 px, tiny sizes."""
    cores = usable_cpus()
    common = {"dry_run": bool(dry_run), "seed": int(seed), "cores": cores,
              "work_dir": str(work_dir), "pipeline_workers": sorted({1, cores}),
              "data_workers": 1 if dry_run else cores, "require_gpu": not dry_run}
    if not dry_run:
        return {**common, "pose_config": "full", "train_batches": [10, 32], "train_steps": 10,
                "train_warmup": 2, "synthetic_train": 40, "synthetic_val": 10,
                "pipeline_batch": 10, "pipeline_batches": 150,
                "inference_sizes": {"368x368": [368, 368], "640x480": [480, 640]},
                "inference_repeats": 10, "onnxruntime_provider": "CUDAExecutionProvider",
                "classifier": {"steps": 20, "warmup": 3}}
    return {**common,
            # XLA's CPU compiler at its lowest optimisation: the same code path, seconds faster.
            "xla_flags": "--xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true",
            "pose_config": {"name": "dry_run", "num_stages": 1, "width": 0.0625,
                            "input_size": 64, "stage_kernel": 3},
            "train_batches": [1, 2], "train_steps": 1, "train_warmup": 1,
            "synthetic_train": 6, "synthetic_val": 4, "pipeline_batch": 2, "pipeline_batches": 2,
            "inference_sizes": {"64x64": [64, 64], "80x64": [64, 80]}, "inference_repeats": 1,
            "onnxruntime_provider": "CPUExecutionProvider",
            "classifier": {"arch": "tiny", "input_size": 32, "batch_size": 2, "steps": 1,
                           "warmup": 1}}


def error_text(e):
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]


# ------------------------------------------------------------------------- one part (child)
class Recorder:
    """A part's results, one guarded measurement at a time, written after each one so a part
    stopped at its time limit keeps what it had measured."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = {"results": {}, "errors": {}, "info": {}}
        write_json(self.path, self.data, indent=1)

    def info(self, **values):
        self.data["info"].update(values)
        write_json(self.path, self.data, indent=1)

    def measure(self, key, fn, *args, **kwargs):
        """fn's value, recorded under `key`; None (and the error under `key`) if it raised."""
        return self.attempt(key, fn, *args, keep=True, **kwargs)

    def attempt(self, key, fn, *args, keep=False, **kwargs):
        """fn's value (recorded when `keep`); None and the error recorded if it raised."""
        try:
            value = fn(*args, **kwargs)
        except Exception as e:  # one failed measurement must not stop the others
            self.data["errors"][key] = error_text(e)
            value = None
        else:
            if keep:
                self.data["results"][key] = value
        write_json(self.path, self.data, indent=1)
        return value


def pose_config(settings):
    from model import network
    spec = settings["pose_config"]
    return network.get_config(spec) if isinstance(spec, str) else network.PoseConfig(**spec)


def run_script(args):
    """Seconds a project script took; RuntimeError with its last output line if it failed."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr + proc.stdout).strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"{Path(str(args[0])).name} exited {proc.returncode}: {lines[-1]}")
    return {"seconds": time.perf_counter() - start}


def part_data(s, work, rec):
    coco, cores = work / "COCO", str(s["data_workers"])
    rec.measure("synthetic", run_script, [
        REPO / "dataset/make_synthetic_coco.py", "--coco_root", coco, "--num_train",
        s["synthetic_train"], "--num_val", s["synthetic_val"], "--seed", s["seed"],
        "--workers", cores, "--preview_images", "0"])
    rec.measure("masks", run_script, [REPO / "training/generate_masks_coco2014.py",
                                      "--coco_root", coco, "--workers", cores])
    rec.measure("hdf5", run_script, [REPO / "training/generate_hdf5_coco2014.py", "--coco_root",
                                     coco, "--out_dir", work, "--workers", cores])
    import h5py
    with h5py.File(training_hdf5(work), "r") as f:
        rec.info(train_images=int(f.attrs["num_images"]), train_samples=int(f.attrs["num_samples"]))


def training_hdf5(work):
    from model import paths
    hdf5 = paths.hdf5_file(work, "train")
    if not hdf5.is_file():
        raise UserError(f"no training HDF5 at {hdf5}: the data part did not write it")
    return hdf5


def part_pipeline(s, work, rec):
    from bench_train import time_pipeline
    hdf5 = training_hdf5(work)
    for workers in s["pipeline_workers"]:
        rec.measure(f"workers_{workers}", time_pipeline, hdf5, pose_config(s),
                    s["pipeline_batch"], s["pipeline_batches"], workers, seed=s["seed"])


def tensorflow_info(settings):
    """TensorFlow's build and device; UserError when a GPU run finds no GPU (the full model
    would then train on the CPU until the part's time limit)."""
    import tensorflow as tf
    from bench_train import device_description
    build = tf.sysconfig.get_build_info()
    if settings["require_gpu"] and not tf.config.list_physical_devices("GPU"):
        raise UserError(f"TensorFlow {tf.__version__} sees no GPU (built for CUDA "
                        f"{build.get('cuda_version')}, cuDNN {build.get('cudnn_version')})")
    return {"device": device_description(), "tensorflow": tf.__version__,
            "cuda_build": build.get("cuda_version"), "cudnn_build": build.get("cudnn_version"),
            "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled()}


def part_train(precision, jit_compile):
    def part(s, work, rec):
        import gc

        import keras
        from bench_train import time_train_steps
        rec.info(**tensorflow_info(s))
        for batch in s["train_batches"]:
            rec.measure(f"batch_{batch}", time_train_steps, pose_config(s), batch,
                        s["train_steps"], s["train_warmup"], precision, jit_compile, s["seed"])
            keras.backend.clear_session()      # the next batch's model gets the memory
            gc.collect()
    return part


def weights_file(s, work):
    """Random He-scaled weights of the configuration (caffe.random_layers' seed 0: the same
    file whichever part makes it first)."""
    from bench_inference import random_weights
    path = work / "random.h5"
    return path if path.is_file() else random_weights(pose_config(s), work)


def part_export(s, work, rec):
    import onnxruntime as ort

    from model import export
    # export_onnx compares its file with Keras on every provider ONNX Runtime offers; with
    # onnxruntime-gpu that would be TensorRT or CUDA (TF32) against Keras on the CPU, beyond
    # its 1e-4 tolerance. This process sees no GPU: both sides in float32 on the CPU.
    ort.get_available_providers = lambda: ["CPUExecutionProvider"]
    start = time.perf_counter()
    weights = rec.attempt("weights", weights_file, s, work)
    if weights is None:
        return
    rec.info(weights_s=time.perf_counter() - start)
    start = time.perf_counter()
    difference = rec.measure("max_relative_difference_vs_keras", export.export_onnx,
                             pose_config(s), weights, work / "pose.onnx")
    if difference is not None:
        rec.info(export_s=time.perf_counter() - start,
                 onnx_bytes=(work / "pose.onnx").stat().st_size)


def sizes_of(s):
    return {name: tuple(hw) for name, hw in s["inference_sizes"].items()}


def part_inference_tensorflow(s, work, rec):
    from bench_inference import tensorflow_backends, time_backends
    rec.info(**tensorflow_info(s), repeats=s["inference_repeats"], batch=1, unit="ms / image")
    backends = tensorflow_backends(pose_config(s), weights_file(s, work))
    for size, hw in sizes_of(s).items():
        rec.measure(size, lambda: time_backends(backends, {size: hw}, s["inference_repeats"],
                                                s["seed"])[size])


def part_inference_onnxruntime(s, work, rec):
    import onnxruntime as ort
    from bench_inference import onnxruntime_backend, time_backends
    provider = s["onnxruntime_provider"]
    rec.info(onnxruntime=ort.__version__, device=ort.get_device(), provider_asked=provider,
             available=ort.get_available_providers(), repeats=s["inference_repeats"], batch=1,
             unit="ms / image")
    onnx_path = work / "pose.onnx"
    if not onnx_path.is_file():
        raise UserError(f"no ONNX model at {onnx_path}: the export part did not write it")
    if provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
        # Loads CUDA and cuDNN from the environment's nvidia-* packages, which are on no
        # library path.
        rec.attempt("preload_dlls", ort.preload_dlls)
    session = rec.attempt("session", onnxruntime_backend, onnx_path, provider)
    if session is None:
        return
    call, used = session
    rec.info(providers_used=used)
    for size, hw in sizes_of(s).items():
        rec.measure(size, lambda: time_backends({"ONNX Runtime": call}, {size: hw},
                                                s["inference_repeats"], s["seed"])[size])


def time_classifier_steps(arch, input_size, batch_size, steps=10, warmup=2, seed=0, lr=1e-3,
                          weight_decay=1e-4):
    """The domain classifier's training step (train_domain_classifier.engine.training_step,
    AdamW as train.py) on random images of `input_size` on the first CUDA device, else the
    CPU: {"images_per_s", "step_s" (median), "first_step_s", ...}."""
    import numpy as np
    import torch

    from train_domain_classifier import engine
    from train_domain_classifier.network import build_classifier
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_classifier(arch, "none").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    images = torch.randn(batch_size, 3, input_size, input_size).to(device)
    labels = torch.randint(0, 3, (batch_size,)).to(device)
    criterion = engine.make_criterion()
    times = []
    for _ in range(max(1, warmup) + steps):
        start = time.perf_counter()
        # training_step reads the loss back (.item()): the step has finished on the device
        engine.training_step(model, images, labels, criterion, optimizer)
        times.append(time.perf_counter() - start)
    step = float(np.median(times[max(1, warmup):]))
    return {"images_per_s": batch_size / step, "step_s": step, "first_step_s": times[0],
            "steps": steps, "warmup": max(1, warmup), "arch": arch, "input_size": input_size,
            "batch_size": batch_size, "device": str(device),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


def part_classifier(s, work, rec):
    import torch

    from model.recipes import FORK_CLASSIFIER
    spec = {"arch": FORK_CLASSIFIER.arch, "input_size": FORK_CLASSIFIER.input_size,
            "batch_size": FORK_CLASSIFIER.batch_size, **s["classifier"]}
    cuda = torch.cuda.is_available()
    if s["require_gpu"] and not cuda:
        raise UserError(f"torch {torch.__version__} sees no CUDA device (built for CUDA "
                        f"{torch.version.cuda}; does the driver support it?)")
    rec.info(torch=torch.__version__, cuda_build=torch.version.cuda,
             cudnn=torch.backends.cudnn.version() if cuda else None,
             cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
             device=torch.cuda.get_device_name(0) if cuda else f"CPU ({usable_cpus()} usable)")
    rec.measure(f"{spec['arch']}_{spec['input_size']}px_batch_{spec['batch_size']}",
                time_classifier_steps, seed=s["seed"], lr=FORK_CLASSIFIER.lr,
                weight_decay=FORK_CLASSIFIER.weight_decay, **spec)


PART_FUNCTIONS = {"data": part_data, "pipeline": part_pipeline,
                  "train_float32": part_train("float32", False),
                  "train_bfloat16": part_train("bfloat16", False),
                  "train_bfloat16_xla": part_train("bfloat16", True),
                  "classifier": part_classifier, "export": part_export,
                  "inference_tensorflow": part_inference_tensorflow,
                  "inference_onnxruntime": part_inference_onnxruntime}


def run_one_part(name, settings_file, out):
    settings = json.loads(Path(settings_file).read_text())
    rec = Recorder(out)
    try:
        PART_FUNCTIONS[name](settings, Path(settings["work_dir"]), rec)
    except Exception as e:  # the part could not go on: say why in its record
        rec.data["error"] = error_text(e)
        write_json(rec.path, rec.data, indent=1)
        raise


# ------------------------------------------------------------------------- the whole check
def command_output(args, timeout=60):
    """{"output": stdout} of a system command, or {"error": why not}."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": error_text(e)}
    if proc.returncode:
        return {"error": f"{args[0]} exited {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()[:300]}"}
    return {"output": proc.stdout}


def system_info():
    fields = lscpu_fields()
    cpu = describe(fields)
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit,pcie.link.gen.max"
    return {"cpu_model": cpu["cpu_model"], "cpu": describe_line(cpu),
            "lscpu": {k: v for k, v in fields.items() if k != "Flags"},
            **{k: cpu[k] for k in ("cpus", "cores", "threads_per_core", "usable")},
            "platform": platform.platform(),
            "python": platform.python_version(), "nvidia_smi": command_output(["nvidia-smi"]),
            "nvidia_smi_query": command_output(["nvidia-smi", f"--query-gpu={query}",
                                                "--format=csv"])}


_VERSIONS = ("import importlib.metadata as m, json, sys\n"
             "def v(p):\n    try:\n        return m.version(p)\n"
             "    except m.PackageNotFoundError:\n        return None\n"
             "print(json.dumps({'python': sys.version.split()[0], "
             "**{p: v(p) for p in sys.argv[1:] if v(p)}}))\n")


def versions(python, packages):
    """Installed versions in the environment of `python`, read without importing them."""
    out = command_output([python, "-c", _VERSIONS, *packages])
    return json.loads(out["output"]) if "output" in out else out


def read_install_info(path):
    """The installer's key=value lines (benchmarks/gpu_check.sh), {} without a file."""
    if not path:
        return {}
    lines = Path(path).read_text().splitlines()
    info = dict(line.split("=", 1) for line in lines if "=" in line)
    return {k: int(v) if v.isdigit() else v for k, v in info.items()}


def part_environment(cuda, settings):
    env = dict(os.environ)
    if settings.get("xla_flags"):
        env.setdefault("XLA_FLAGS", settings["xla_flags"])
    # PyTorch's OpenMP threads spin while they wait (as train_domain_classifier/train.py).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = "-1"     # CPU parts: never touch (or wait for) the GPU
    return env


def tail(path, lines=15, chars=3000):
    text = Path(path).read_text(errors="replace") if Path(path).is_file() else ""
    return "\n".join(text.strip().splitlines()[-lines:])[-chars:]


def run_part(name, python, cuda, limit, settings, settings_file, work):
    """One part in its own process, killed at `limit` seconds: its record."""
    out, log = work / f"part_{name}.json", work / f"part_{name}.log"
    start = time.time()
    with open(log, "w") as log_file:
        proc = subprocess.Popen([python, __file__, "--part", name, "--settings", settings_file,
                                 "--part_out", out], stdout=log_file, stderr=subprocess.STDOUT,
                                env=part_environment(cuda, settings), start_new_session=True)
        try:
            status = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            if proc.poll() is None:            # time-out, or this process was interrupted
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    record = json.loads(out.read_text()) if out.is_file() else {"results": {}, "errors": {}}
    record.update(seconds=round(time.time() - start, 2), limit_s=limit, exit_status=status)
    if status is None:
        record["error"] = f"stopped at its time limit of {limit} s"
    elif status and not record.get("error"):
        record["error"] = (tail(log, 1) or f"exited {status}")[:500]
    if record.get("error") or record.get("errors"):
        record["log_tail"] = tail(log)
    record.setdefault("error", None)
    record["ok"] = not record["error"] and not record["errors"]
    return record


def run_check(args, work):
    settings = make_settings(args.dry_run, args.seed, work)
    settings_file = work / "settings.json"
    write_json(settings_file, settings, indent=1)
    started = args.started or time.time()
    deadline = started + args.budget_s
    install = read_install_info(args.install_info)
    pythons = {"tf": args.tf_python, "torch": args.torch_python}
    report = {"format": FORMAT, "complete": False, "dry_run": bool(args.dry_run),
              "seed": args.seed, "started": datetime.datetime.fromtimestamp(started).isoformat(
                  timespec="seconds"), "budget_s": args.budget_s, "install": install,
              "system": system_info(),
              "versions": {env: versions(python, PACKAGES[env]) for env, python in pythons.items()},
              "settings": settings, "parts": {}}
    for i, (name, env, cuda, limit) in enumerate(PARTS, 1):
        limit = args.part_limit_s or (DRY_RUN_LIMIT_S if args.dry_run else limit)
        left = int(deadline - time.time())
        if install.get(f"{env}_error"):
            record = {"error": f"not run: the {env} environment did not install "
                               f"({install[f'{env}_error']})"}
        elif left < MIN_PART_S:
            record = {"error": f"not run: the total time limit of {args.budget_s:g} s was reached"}
        else:
            record = run_part(name, pythons[env], cuda, min(limit, left), settings,
                              settings_file, work)
        record.setdefault("ok", False)
        report["parts"][name] = record
        print(f"[{i}/{len(PARTS)}] {name}: " + ("ok" if record["ok"] else "ERROR " + "; ".join(
            [record["error"]] if record.get("error") else
            [f"{k}: {v}" for k, v in record["errors"].items()]))
              + (f" ({record['seconds']:.0f} s)" if "seconds" in record else ""), flush=True)
        write_json(args.out, report, indent=1)
    report.update(complete=True, wall_s=round(time.time() - started, 1))
    write_json(args.out, report, indent=1)
    return report


def summary_lines(report):
    """The headline numbers of a report, one line each."""
    parts, lines = report["parts"], []
    for name in ("train_float32", "train_bfloat16", "train_bfloat16_xla"):
        for key, r in parts[name].get("results", {}).items():
            lines.append(f"{name} {key}: {r['samples_per_s']:.1f} samples/s "
                         f"({r['step_s'] * 1000:.1f} ms/step)")
    for key, r in parts["pipeline"].get("results", {}).items():
        lines.append(f"pipeline {key}: {r['samples_per_s']:.1f} samples/s")
    for name in ("inference_tensorflow", "inference_onnxruntime"):
        for size, row in parts[name].get("results", {}).items():
            lines += [f"{backend} {size}: {ms:.1f} ms / image" for backend, ms in row.items()]
    for key, r in parts["classifier"].get("results", {}).items():
        lines.append(f"classifier {key}: {r['images_per_s']:.1f} images/s")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "results" / "gpu_check.json",
                   help="the JSON file to write (default: %(default)s)")
    p.add_argument("--dry_run", type=str2bool, default=False,
                   help="tiny sizes, one step each, ONNX Runtime on the CPU (default: false)")
    p.add_argument("--budget_s", type=float, default=None,
                   help="total seconds from --started; a part with less left is not run "
                        "(default: 480, dry run 600)")
    p.add_argument("--part_limit_s", type=int, default=None,
                   help="time limit of every part (default: each part's own; dry run "
                        f"{DRY_RUN_LIMIT_S})")
    p.add_argument("--started", type=float, default=None,
                   help="epoch seconds the check started (the installer's; default: now)")
    p.add_argument("--tf_python", default=sys.executable,
                   help="python of the TensorFlow environment (default: this one)")
    p.add_argument("--torch_python", default=sys.executable,
                   help="python of the PyTorch environment (default: this one)")
    p.add_argument("--install_info", type=Path, default=None,
                   help="key=value lines the installer wrote (recorded; *_error skips parts)")
    p.add_argument("--work_dir", type=Path, default=None,
                   help="scratch folder, removed at the end (default: a temporary one)")
    p.add_argument("--part", choices=list(PART_FUNCTIONS), help=argparse.SUPPRESS)
    p.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--part_out", type=Path, help=argparse.SUPPRESS)
    add_seed(p)
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 600.0 if args.dry_run else 480.0
    if args.budget_s <= 0:
        raise UserError(f"--budget_s must be > 0, got {args.budget_s:g}")
    if args.part_limit_s is not None and args.part_limit_s < 1:
        raise UserError(f"--part_limit_s must be >= 1, got {args.part_limit_s}")
    for flag in ("tf_python", "torch_python"):
        if not os.access(getattr(args, flag), os.X_OK):
            raise UserError(f"--{flag} {getattr(args, flag)} is not an executable python")
    if args.install_info is not None and not args.install_info.is_file():
        raise UserError(f"--install_info {args.install_info} not found")
    return args


@main_guard
def main(argv=None):
    args = parse_args(argv)
    if args.part:                      # one part, in the process run_part started
        return run_one_part(args.part, args.settings, args.part_out)
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder, not a file")
    ensure_writable_dir(args.out.parent)
    if args.work_dir is not None:
        ensure_writable_dir(args.work_dir)
    with tempfile.TemporaryDirectory(prefix="gpu_check_", dir=args.work_dir) as work:
        report = run_check(args, Path(work))
    for line in summary_lines(report):
        print(line)
    failed = [name for name, part in report["parts"].items() if not part["ok"]]
    print(f"written {args.out} ({report['wall_s']:.0f} s; "
          + (f"with errors in: {', '.join(failed)})" if failed else "every part ok)"))


if __name__ == "__main__":
    main()
