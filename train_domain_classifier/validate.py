"""Validate a domain classifier checkpoint on its run's validation images.

Reports loss, accuracy, per-class precision and recall and the confusion matrix, and writes
metrics.json, confusion.csv and confusion.png (default: <run>/validation/<checkpoint name>/).

  python train_domain_classifier/validate.py                       # newest run, best epoch
  python train_domain_classifier/validate.py --checkpoint <run>/checkpoints/model_0005.pth
"""
import argparse
import logging
from pathlib import Path

from model import paths
from model.cli import main_guard
from train_domain_classifier import inference, runs
from train_domain_classifier.data import CLASS_NAMES
from train_domain_classifier.network import ARCHS

log = logging.getLogger("domain_classifier")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help="a model_NNNN.pth, or a run folder (its best epoch, else its last); "
                        "default: the newest run in --log_dir")
    p.add_argument("--log_dir", type=Path, default=paths.DOMAIN_LOG_DIR,
                   help="folder of the training runs (default: %(default)s)")
    p.add_argument("--coco_root", type=Path, default=None,
                   help="COCO 2014 layout holding the run's train2014 images (default: the "
                        "training run's --coco_root, as recorded in the checkpoint)")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="expected architecture; an error if the checkpoint holds another")
    p.add_argument("--cache_dir", type=Path, default=None,
                   help="image cache (default: the training run's)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--out_dir", type=Path, default=None,
                   help="default: <run>/validation/<checkpoint name without .pth>")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    model, state, path = inference.load_classifier(args.checkpoint, args.log_dir, args.arch,
                                                   args.device)
    dataset = inference.validation_dataset(state, args.coco_root, args.cache_dir, args.workers)
    log.info("validating on %d samples (%d images x %d classes)", len(dataset),
             len(dataset.rows), len(CLASS_NAMES))
    metrics = inference.validate(model, dataset, args.batch_size, args.workers, args.device)
    out_dir = args.out_dir or runs.run_dir_of(path) / "validation" / Path(path).stem
    inference.write_validation(out_dir, metrics, path, state)
    print(f"checkpoint {path} (epoch {state.get('epoch')}, {state['arch']}, seed "
          f"{state.get('seed')})")
    print(f"validation: {metrics['samples']} samples  loss {metrics['loss']:.4f}  "
          f"accuracy {metrics['accuracy']:.4f}")
    print(f"{'class':<12} {'precision':>9} {'recall':>7}   confusion (rows true, cols predicted)")
    for name, prec, rec, row in zip(CLASS_NAMES, metrics["precision"], metrics["recall"],
                                    metrics["confusion"]):
        print(f"{name:<12} {prec:>9.4f} {rec:>7.4f}   {' '.join(f'{v:>6d}' for v in row)}")
    print(f"written: {out_dir}/metrics.json, confusion.csv, confusion.png")


if __name__ == "__main__":
    main()
