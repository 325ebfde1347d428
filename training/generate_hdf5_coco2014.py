"""Write the compact training / validation HDF5 files from COCO 2014 (docs/recipe.md section 4).

Split: the first min(--val_holdout, half of val2014) images of val2014, in annotation order,
form val_dataset_2014.h5; train_dataset_2014.h5 holds train2014 plus the rest of val2014
(train2014 alone with --train_only true). One sample per main person. Every image is stored
once as its original JPEG bytes and mask_miss once as PNG bytes (see model/hdf5.py for
the layout). Bad images are skipped with a reason and counted. Files are written to a
temporary name and renamed when complete; a file already written from the same inputs and
flags is kept."""
import argparse
import os

from model import cli, coco, hdf5, paths
from model.machine import usable_cpus


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_coco_root(parser)
    parser.add_argument("--out_dir", type=os.path.abspath, default=str(paths.DATASET_DIR),
                        help="folder of train_dataset_2014.h5 and val_dataset_2014.h5 "
                             "(default: %(default)s)")
    parser.add_argument("--train_only", type=cli.str2bool, default=False,
                        help="true: train on train2014 alone; false: also on the val2014 "
                             "images that are not held out (default: %(default)s)")
    parser.add_argument("--val_holdout", type=int, default=coco.VAL_HOLDOUT,
                        help="val2014 images held out as validation, capped at half of "
                             "val2014 (default: %(default)s, the reference's count)")
    parser.add_argument("--workers", type=int, default=usable_cpus(),
                        help="worker processes reading and checking images "
                             "(default: all cores, %(default)s)")
    parser.add_argument("--overwrite", type=cli.str2bool, default=False,
                        help="rewrite files even if complete for these inputs "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.val_holdout < 0:
        parser.error("--val_holdout must be >= 0")
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


@cli.main_guard
def main(argv=None):
    args = parse_args(argv)
    cli.check_writable_dir(args.out_dir)   # created once the inputs are checked
    reports = hdf5.generate_hdf5(args.coco_root, args.out_dir, args.train_only,
                                 args.val_holdout, args.workers, args.overwrite)
    for split, r in reports.items():
        state = "kept (already complete)" if r.get("kept") else "written"
        skipped = sum(r["skipped"].values())
        print(f"{split}: {r['path']} {state}: {r['samples']} samples, {r['images']} images, "
              f"{r['bytes'] / 1e6:.1f} MB, {r['ratio']:.1f}x smaller than the reference "
              f"layout, {skipped} images skipped")


if __name__ == "__main__":
    main()
