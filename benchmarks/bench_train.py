"""Training throughput: samples/s and step time of a pose configuration (default the full
CMU model at 368 x 368) with and without mixed precision, and the input pipeline's rate
beside it, on whatever device TensorFlow sees.

    python benchmarks/bench_train.py --batch_size 16 --steps 20          # on a GPU
    python benchmarks/bench_train.py --batch_size 2 --steps 2            # on a CPU

The model step runs on random inputs of the crop size (its compute alone); the pipeline
(HDF5 -> augmentation -> effect -> targets, read ahead by --workers threads as in training)
needs --hdf5_dir/train_dataset_2014.h5. Results are printed and, with --out, written as JSON
(with the seed and the device)."""
import argparse
import os
import time
from pathlib import Path

from model import network, paths, train
from model.cli import UserError, add_seed, main_guard, str2bool
from model.files import write_json



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
    parser.add_argument("--mixed_precision", default="both", choices=["both", "true", "false"],
                        help="which precisions to time (default: %(default)s)")
    parser.add_argument("--distribute", default="none", choices=["none", "mirrored"],
                        help="mirrored: every visible GPU (default: %(default)s)")
    parser.add_argument("--hdf5_dir", type=Path, default=paths.DATASET_DIR,
                        help="folder of train_dataset_2014.h5 for the pipeline rate "
                             "(default: %(default)s)")
    parser.add_argument("--pipeline", type=str2bool, default=True,
                        help="also time the input pipeline (default: %(default)s)")
    parser.add_argument("--pipeline_batches", type=int, default=20,
                        help="batches timed in the pipeline (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="pipeline threads (default: %(default)s)")
    parser.add_argument("--effect", default="", choices=list(paths.EXPERT_EFFECTS),
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
    precisions = {"both": [False, True], "true": [True], "false": [False]}[args.mixed_precision]
    results = {"config": cfg.name, "input_size": cfg.input_size, "seed": args.seed,
               "device": train.device_description(), "model": {}}
    print(f"device: {results['device']}; config {cfg.name} at {cfg.input_size} x "
          f"{cfg.input_size}, batch {args.batch_size}, seed {args.seed}")
    for mixed in precisions:
        start = time.time()
        r = train.time_train_steps(cfg, args.batch_size, args.steps, args.warmup, mixed,
                                   args.seed, args.distribute)
        key = "mixed_float16" if mixed else "float32"
        results["model"][key] = r
        print(f"model {key:13s}: {r['step_s'] * 1000:9.1f} ms/step, "
              f"{r['samples_per_s']:8.2f} samples/s ({r['replicas']} replica(s), median of "
              f"{r['steps']} steps, {time.time() - start:.0f} s)")
    if args.pipeline:
        r = train.time_pipeline(hdf5, cfg, args.batch_size, args.pipeline_batches, args.workers,
                                args.effect, args.seed)
        results["pipeline"] = r
        print(f"pipeline ({args.workers} threads): {r['batch_s'] * 1000:9.1f} ms/batch, "
              f"{r['samples_per_s']:8.2f} samples/s")
    if args.out:
        write_json(args.out, results, indent=1)
        print(f"written {args.out}")


if __name__ == "__main__":
    main()
