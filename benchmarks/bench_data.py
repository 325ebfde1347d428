"""Data preparation benchmarks. One function per measurement.

  masks:  mask generation time per image (1 worker and --workers workers)
  hdf5:   compact HDF5 generation time per image, bytes per sample, and the ratio to the
          reference layout (one raw 6 x H x W uint8 record per main person) on the same input
  pipeline: model.pipeline.measure_throughput (read, decode, warp, effect, targets, one
          process, one OpenCV thread) per --pipeline_configs crop size, --pipeline_effects
          effect and PIPELINE_VARIANTS: samples per CPU-second and per wall second, CPU ms
          per sample per stage, share of samples decoded at each reduction

Each measurement function takes (coco_root, workers) and returns rows (metric, value, unit),
registered in MEASUREMENTS. Runs on a COCO-layout folder (--coco_root) or, with
--synthetic_train > 0, on a synthetic mini-COCO generated into a temporary folder first
(seeded, --seed). Nothing is written outside temporary folders. Prints a markdown table;
--out also writes it as JSON.
"""
import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from model import cli, paths
from model.coco import SOURCES
from model.domains import EXPERT_EFFECTS, TRAINED_MODELS
from model.errors import UserError
from model.files import write_json
from model.hdf5 import generate_hdf5
from model.machine import (cpu_times, describe, describe_line, steal_percent, steal_text,
                           usable_cpus)
from model.masks import generate_masks
from model.recipes import RECIPES
from model.synthetic import generate_dataset
from model.train_config import augment_params

# (effect_stage, reduced decoding): the earlier pipeline, the source stage alone, the default
PIPELINE_VARIANTS = (("crop", False), ("source", False), ("source", True))


def _annotations_only_root(coco_root, tmp):
    """A throw-away coco_root with the annotations linked and the images linked, so masks
    and HDF5 files are written into tmp, never into the measured data set."""
    root = Path(tmp) / "coco"
    root.mkdir()
    for sub in ("annotations", "images"):
        os.symlink(Path(coco_root, sub).resolve(), root / sub)
    return root


def _image_count(coco_root):
    return sum(len(json.loads(paths.annotation_file(coco_root, s).read_text())["images"])
               for s in SOURCES)


def bench_masks(coco_root, workers):
    """Seconds per image to write mask_miss and mask_all PNGs, 1 worker and `workers`."""
    rows = []
    images = _image_count(coco_root)
    for n in sorted({1, workers}):
        with tempfile.TemporaryDirectory() as tmp:
            root = _annotations_only_root(coco_root, tmp)
            start = time.perf_counter()
            generate_masks(root, workers=n)
            seconds = time.perf_counter() - start
        rows.append((f"masks, {n} worker{'s' if n > 1 else ''}", 1000 * seconds / images,
                     "ms / image"))
    return rows


def bench_hdf5(coco_root, workers):
    """Seconds per image to write both HDF5 files (masks made beforehand, not timed) and the
    bytes per sample against the reference layout."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = _annotations_only_root(coco_root, tmp)
        generate_masks(root, workers=workers)
        for n in sorted({1, workers}):
            out = Path(tmp) / f"h5_{n}"
            start = time.perf_counter()
            reports = generate_hdf5(root, out, workers=n)
            seconds = time.perf_counter() - start
            images = sum(r["images"] for r in reports.values())
            rows.append((f"hdf5, {n} worker{'s' if n > 1 else ''}", 1000 * seconds / images,
                         "ms / stored image"))
        samples = sum(r["samples"] for r in reports.values())
        size = sum(r["bytes"] for r in reports.values())
        ref = sum(r["reference_layout_bytes"] for r in reports.values())
        rows += [("hdf5 samples (main people)", samples, "samples"),
                 ("hdf5 stored images", images, "images"),
                 ("compact layout", size / samples / 1e3, "kB / sample"),
                 ("reference layout (raw 6 x H x W per sample)", ref / samples / 1e3,
                  "kB / sample"),
                 ("size ratio reference / compact", ref / size, "x")]
    return rows


def bench_pipeline(coco_root, workers, effects=EXPERT_EFFECTS, seed=0, configs=tuple(RECIPES)):
    """Throughput of the training input pipeline on the train HDF5 of coco_root (masks and
    HDF5 written to a temporary folder first, not timed), per configuration, effect and
    variant (PIPELINE_VARIANTS)."""
    from model.pipeline import measure_throughput  # imports TensorFlow: only when measured
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = _annotations_only_root(coco_root, tmp)
        generate_masks(root, workers=workers)
        reports = generate_hdf5(root, Path(tmp) / "h5", workers=workers)
        for config, effect, (stage, reduced) in itertools.product(configs, effects,
                                                                  PIPELINE_VARIANTS):
            r = measure_throughput(reports["train"]["path"], effect=effect, seed=seed,
                                   params=augment_params(config, effect_stage=stage),
                                   reduced_decode=reduced)
            rows += _pipeline_rows(r, config, effect, stage, reduced)
        rows.append(("pipeline samples measured", r["samples"], "samples"))
    return rows


def _pipeline_rows(r, config, effect, stage, reduced):
    name = (f"pipeline {config} {r['crop_size']}x{r['crop_size']}, effect {effect or 'none'}, "
            f"{stage} stage, {'reduced' if reduced else 'full-size'} decode")
    return ([(f"{name}, 1 process", r["samples_per_cpu_s"], "samples / CPU-s (per core)"),
             (f"{name}, 1 process, wall", r["samples_per_s"], "samples / s")]
            + [(f"{name}: {k}", ms, "CPU ms / sample")
               for k, ms in r["stage_cpu_ms_per_sample"].items()]
            + [(f"{name}: decoded at 1/{f}", share, "of samples")
               for f, share in r["decode_reductions"].items()])


MEASUREMENTS = {"masks": bench_masks, "hdf5": bench_hdf5, "pipeline": bench_pipeline}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_coco_root(parser)
    parser.add_argument("--measure", nargs="+", default=list(MEASUREMENTS),
                        choices=list(MEASUREMENTS), help="measurements (default: all)")
    parser.add_argument("--workers", type=int, default=usable_cpus(),
                        help="worker processes for the parallel runs (default: %(default)s)")
    parser.add_argument("--synthetic_train", type=int, default=0,
                        help="generate a synthetic set with this many train2014 images into a "
                             "temporary folder and measure on it (default: 0 = use --coco_root)")
    parser.add_argument("--synthetic_val", type=int, default=150,
                        help="val2014 images of that synthetic set (default: %(default)s)")
    cli.add_seed(parser)
    parser.add_argument("--pipeline_effects", nargs="+", default=list(EXPERT_EFFECTS),
                        choices=list(TRAINED_MODELS),
                        help="effects measured by the pipeline measurement (default: the "
                             "experts' three)")
    parser.add_argument("--pipeline_configs", nargs="+", default=list(RECIPES),
                        choices=list(RECIPES),
                        help="configurations (crop size, target_dist) the pipeline "
                             "measurement runs at (default: all)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


@cli.main_guard
def main(argv=None):
    args = parse_args(argv)
    tmp = None
    coco_root = args.coco_root
    ticks = cpu_times()
    try:
        if args.synthetic_train > 0:
            tmp = tempfile.mkdtemp(prefix="bench_data_")
            coco_root = Path(tmp) / "coco"
            generate_dataset(coco_root, args.synthetic_train, args.synthetic_val, args.seed,
                             workers=args.workers, progress=False)
        for source in SOURCES:
            if not paths.annotation_file(coco_root, source).is_file():
                raise UserError(f"no COCO data in {coco_root} (missing "
                                    f"{paths.annotation_file(coco_root, source).name}); pass "
                                    "--coco_root or --synthetic_train N")
        results = {"coco_root": str(coco_root), "images": _image_count(coco_root),
                   "workers": args.workers, "cpu": describe(),
                   "seed": args.seed if args.synthetic_train > 0 else None, "rows": []}
        for name in args.measure:
            options = ({"effects": args.pipeline_effects, "seed": args.seed,
                        "configs": args.pipeline_configs} if name == "pipeline" else {})
            results["rows"] += [list(r) for r in MEASUREMENTS[name](coco_root, args.workers,
                                                                     **options)]
        results["steal_percent"] = steal_percent(ticks)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{results['images']} images in {results['coco_root']}"
          f"{' (synthetic, seed %d)' % args.seed if args.synthetic_train > 0 else ''}, "
          f"CPU: {describe_line(results['cpu'])}; steal while it ran: "
          f"{steal_text(results['steal_percent'])}\n")
    print("| measurement | value | unit |\n|---|---:|---|")
    for metric, value, unit in results["rows"]:
        print(f"| {metric} | {value:,.2f} | {unit} |" if isinstance(value, float)
              else f"| {metric} | {value:,} | {unit} |")
    if args.out:
        write_json(args.out, results, indent=2)


if __name__ == "__main__":
    main()
