"""Keypoint AP of the decoder's working grid r = 1 (image resolution, cubic) against r = 2 (the
default, bilinear with sub-pixel peaks) and any other --resolutions, from the same network
maps: each image goes through the network once and its maps are decoded at every r, so the
AP difference is the decoder's alone.

    python benchmarks/bench_resolution.py --config small [--effect E | --weights W.h5]
        [--output_root DIR] [--coco_root DIR] [--coco_dataType SET ...] [--num_images 100]
        [--resolutions 1 2] [--out FILE.md]

Defaults follow the repository's layout (training/weights<effect>/, dataset/COCO) or, with
--output_root, run_experiment.py's (<output_root>/weights<effect>/, <output_root>/COCO); the
sets default to the four evaluation sets, each evaluated on its first --num_images images.
Prints one row per set: AP at each r, the difference to r = 1 and the decoding time per image.
"""
import argparse
import dataclasses
import time
from pathlib import Path

from tqdm import tqdm

from model import cli, decode, evaluation, files, inference, network, paths
from model.domains import NORMAL
from model.errors import UserError
from model.images import read_image_checked
from model.recipes import get_recipe


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="full", choices=sorted(network.CONFIGS),
                   help="network configuration of the weights (default: %(default)s)")
    p.add_argument("--effect", default=NORMAL,
                   help="whose weights, without --weights: '' (normal), _dark, _motion_blur")
    p.add_argument("--weights", default=None,
                   help="Keras weight file (default: weights.0100.h5, else the newest "
                        "weights.NNNN.h5, of the --effect expert's folder)")
    p.add_argument("--output_root", type=Path, default=None,
                   help="run_experiment.py's --output_root: weights and COCO under it")
    p.add_argument("--coco_root", type=Path, default=None,
                   help="COCO layout (default: <output_root>/COCO, else "
                        f"{paths.DEFAULT_COCO_ROOT})")
    p.add_argument("--coco_dataType", nargs="+", default=list(paths.EVAL_DATATYPES),
                   help="evaluation sets (default: %(default)s)")
    p.add_argument("--num_images", type=int, default=100,
                   help="first images of each set (default: %(default)s)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[1, 2],
                   help="working grids to compare, the first is the reference (default: 1 2)")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    return p.parse_args(argv)


def evaluate_set(model, coco, images, image_dir, settings, resolutions):
    """{r: (AP, decoding ms per image)} of one set, the network run once per image."""
    records = {r: [] for r in resolutions}
    seconds = {r: 0.0 for r in resolutions}
    predicted = []
    for im in tqdm(images, desc=image_dir.name, unit="img", leave=False):
        size = (int(im["width"]), int(im["height"])) if "width" in im else None
        image, reason = read_image_checked(image_dir / im["file_name"], size)
        if image is None:
            raise UserError(f"{reason}: {image_dir / im['file_name']}")
        outputs = inference.network_outputs([model], image, settings)
        for r in resolutions:
            t0 = time.perf_counter()
            people = inference.decode_outputs(
                outputs, image.shape[:2], dataclasses.replace(settings, resolution=r), [1.0])
            seconds[r] += time.perf_counter() - t0
            records[r].extend(decode.people_to_coco(people, im["id"]))
        predicted.append(int(im["id"]))
    return {r: (evaluation.keypoint_stats(coco, records[r], predicted)[0]["AP"],
                1000.0 * seconds[r] / len(predicted)) for r in resolutions}


def table(results, resolutions):
    base = resolutions[0]
    head = (["set", "images"] + [f"AP r={r}" for r in resolutions]
            + [f"r={r} - r={base}" for r in resolutions[1:]]
            + [f"decode ms r={r}" for r in resolutions])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for data_type, (n, by_r) in results.items():
        cells = ([data_type, str(n)] + [f"{by_r[r][0]:.4f}" for r in resolutions]
                 + [f"{by_r[r][0] - by_r[base][0]:+.4f}" for r in resolutions[1:]]
                 + [f"{by_r[r][1]:.1f}" for r in resolutions])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def check(args):
    if args.num_images < 1:
        raise UserError(f"--num_images must be >= 1, got {args.num_images}")
    if len(set(args.resolutions)) < 2 or min(args.resolutions) < 1:
        raise UserError(f"--resolutions needs two or more different values >= 1, got "
                        f"{args.resolutions}")
    for data_type in args.coco_dataType:
        cli.check_data_type(data_type)


@cli.main_guard
def main(argv=None):
    args = parse_args(argv)
    check(args)
    coco_root = args.coco_root or (paths.DEFAULT_COCO_ROOT if args.output_root is None
                                   else args.output_root / "COCO")
    folder = None if args.output_root is None else args.output_root / f"weights{args.effect}"
    weights, note = network.find_weights(args.effect, args.weights, folder=folder)
    network.check_weight_coverage(args.config, weights)
    sets = {}
    for data_type in args.coco_dataType:      # every set is checked before the network loads
        coco = evaluation.load_annotations(paths.annotation_file(coco_root, data_type))
        sets[data_type] = (coco, evaluation.first_images(coco, args.num_images))
    model = network.load_pose_model(args.config, weights)
    recipe = get_recipe(args.config)
    settings = inference.InferenceSettings(tuple(recipe.eval_scale_search),
                                           recipe.eval_scale_mode,
                                           network.CONFIGS[args.config].input_size)
    print(f"weights {weights} ({note}), config {args.config}, scales "
          f"{list(settings.scale_search)} ({settings.scale_mode}), PAF origin "
          f"{inference.paf_origin(model)}", flush=True)
    results = {}
    for data_type, (coco, images) in sets.items():
        by_r = evaluate_set(model, coco, images, paths.image_dir(coco_root, data_type),
                            settings, args.resolutions)
        results[data_type] = (len(images), by_r)
    lines = table(results, args.resolutions)
    print("\n".join(lines))
    if args.out is not None:
        files.write_text(args.out, "\n".join([f"weights: {weights}", ""] + lines) + "\n")


if __name__ == "__main__":
    main()
