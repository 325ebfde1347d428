"""Write the synthetic mini-COCO (COCO 2014 layout), print its statistics and a preview PNG.

    python dataset/make_synthetic_coco.py --coco_root dataset/COCO --num_train 400 --num_val 150 --seed 0

A rerun with the same arguments keeps a complete set as it is (see model/synthetic/dataset.py)."""
import argparse
import logging
import time
from pathlib import Path

from model import synthetic
from model.cli import add_coco_root, add_seed, ensure_writable_dir, main_guard, str2bool
from model.errors import UserError
from model.machine import usable_cpus

log = logging.getLogger("make_synthetic_coco")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_coco_root(parser)
    parser.add_argument("--num_train", type=int, default=synthetic.DEFAULT_NUM_TRAIN,
                        help="train2014 images (default: %(default)s)")
    parser.add_argument("--num_val", type=int, default=synthetic.DEFAULT_NUM_VAL,
                        help="val2014 images (default: %(default)s)")
    add_seed(parser)
    parser.add_argument("--workers", type=int, default=min(2, usable_cpus()),
                        help="processes drawing images; the output does not depend on it "
                             "(default: %(default)s)")
    parser.add_argument("--preview", type=Path, default=None,
                        help="preview PNG with ground-truth skeletons "
                             "(default: <coco_root>/preview.png)")
    parser.add_argument("--preview_images", type=int, default=6,
                        help="images in the preview grid, 0 for none (default: %(default)s)")
    parser.add_argument("--force", type=str2bool, default=False,
                        help="redraw even when a complete set with the same parameters exists "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    for flag in ("num_train", "num_val", "seed", "preview_images"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    root = ensure_writable_dir(args.coco_root)
    preview = args.preview or root / "preview.png"
    if args.preview_images:
        ensure_writable_dir(preview.parent)
    start = time.time()
    log.info("synthetic mini-COCO into %s: %d train, %d val images, seed %d", root,
             args.num_train, args.num_val, args.seed)
    sets = synthetic.generate_dataset(root, args.num_train, args.num_val, args.seed,
                                      workers=args.workers, force=args.force)
    elapsed = time.time() - start
    print(f"synthetic mini-COCO in {root} (seed {args.seed}, generator version "
          f"{synthetic.GENERATOR_VERSION}), {elapsed:.1f} s")
    for split, data in sets.items():
        print(synthetic.format_statistics(split, synthetic.dataset_statistics(data)))
    if args.preview_images:
        split = "val2014" if sets["val2014"]["annotations"] else "train2014"
        if sets[split]["annotations"]:
            out = synthetic.make_preview(root, preview, split, args.preview_images)
            print(f"preview: {out}")
        else:
            log.info("no annotated image: no preview written")


if __name__ == "__main__":
    main()
