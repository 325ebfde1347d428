"""Make the domain-shifted evaluation sets val2014_random1k{,_dark,_motion_blur,_resolution}.

A seeded uniform sample of --num images drawn ONLY from the held-out val2014 images (the ones
training/generate_hdf5_coco2014.py never puts into training), with and without people, as
the fork drew uniformly from val2014 (COCOeval counts a detection on a person-free image as a
false positive, so leaving those images out would raise the AP); --people_only true draws
from the held-out images with a labelled person instead. Writes <coco_root>/images/<dataType>/
(original file names) and <coco_root>/annotations/person_keypoints_<dataType>.json (the
sampled images in drawn order and their annotations; "info" records the draw and the set's
composition: pool, people_only, seed, images without a labelled person). _resolution halves
the images and scales keypoints, boxes, areas and segmentations. A set whose annotation file
records the same draw from the same val2014 annotations is kept on a rerun (--overwrite true
rewrites it anyway)."""
import argparse

from model import cli, coco, domains, evalsets


class _SameEachTime(argparse.Action):
    """A boolean flag that may be repeated, but only with the same value: a command line
    assembled from several places must not ask for both pools."""

    def __call__(self, parser, namespace, value, option_string=None):
        seen = getattr(namespace, "_given_" + self.dest, None)
        if seen is not None and seen != value:
            parser.error(f"{option_string} given as both {str(seen).lower()} and "
                         f"{str(value).lower()}")
        setattr(namespace, "_given_" + self.dest, value)
        setattr(namespace, self.dest, value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_coco_root(parser)
    parser.add_argument("--num", type=int, default=1000,
                        help="images per set; the whole pool if it is smaller "
                             "(default: %(default)s)")
    cli.add_seed(parser)
    parser.add_argument("--val_holdout", type=int, default=coco.VAL_HOLDOUT,
                        help="held-out val2014 count, as given to generate_hdf5_coco2014.py "
                             "(default: %(default)s)")
    parser.add_argument("--people_only", type=cli.str2bool, default=False,
                        action=_SameEachTime,
                        help="draw only from held-out images with a labelled person instead "
                             "of from all of them (default: %(default)s)")
    parser.add_argument("--effects", nargs="+", default=list(domains.TEST_EFFECTS),
                        choices=domains.TEST_EFFECTS, metavar="EFFECT",
                        help="sets to write, by effect suffix ('' = unchanged) "
                             f"(default: all of {list(domains.TEST_EFFECTS)})")
    parser.add_argument("--overwrite", type=cli.str2bool, default=False,
                        help="rewrite the sets even if they record the same draw "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error("--num must be >= 1")
    if args.val_holdout < 0:
        parser.error("--val_holdout must be >= 0")
    return args


@cli.main_guard
def main(argv=None):
    args = parse_args(argv)
    result = evalsets.make_domain_datasets(args.coco_root, args.num, args.seed,
                                           args.val_holdout, args.effects, args.overwrite,
                                           args.people_only)
    n = len(result["image_ids"])
    pool = "with people" if result["people_only"] else "with and without people"
    print(f"sample of {n} images (seed {result['seed']}) drawn only from the "
          f"{result['pool']} held-out val2014 images {pool}: none of them is a training "
          f"image; {result['without_people']} of {n} have no labelled person")
    for data_type, state in result["sets"].items():
        print(f"{data_type}: {state}")


if __name__ == "__main__":
    main()
