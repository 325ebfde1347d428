"""Write mask_miss / mask_all PNGs for every COCO 2014 image (docs/recipe.md section 4).

<coco_root>/{train,val}mask2014/mask_miss_%012d.png: 255 = compute the loss, 0 = ignore
(people without keypoints, crowd regions no labelled person covers; several crowds united).
<coco_root>/{train,val}mask2014/mask_all_%012d.png: 255 = any person or crowd region.
Files are written atomically, so a rerun skips every image whose two masks are complete PNGs
of the image's size (a cheap header-and-trailer check); a truncated, empty, missing or
wrong-size file has its pair written again, counted in the summary. --overwrite rewrites
every pair (after the annotations changed, existing masks are stale)."""
import argparse

from model import cli, coco, masks
from model.machine import usable_cpus


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_coco_root(parser)
    parser.add_argument("--data_types", nargs="+", default=list(coco.SOURCES),
                        choices=coco.SOURCES,
                        help="annotation sets to process (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=usable_cpus(),
                        help="worker processes (default: all cores, %(default)s)")
    parser.add_argument("--overwrite", type=cli.str2bool, default=False,
                        help="rewrite masks that exist (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


@cli.main_guard
def main(argv=None):
    args = parse_args(argv)
    report = masks.generate_masks(args.coco_root, args.data_types, args.workers,
                                  args.overwrite)
    for source, r in report.items():
        redone = sum(r["redone"].values())
        print(f"{source}: {r['images']} images, {r['written']} mask pairs written "
              f"({redone} of them replaced damaged files), {r['existing']} already complete, "
              f"{r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
