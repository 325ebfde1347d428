"""Post-processing time of one 640 x 480 image: network-resolution maps (80 x 60) -> COCO
keypoint records, the fast path (model.inference + model.decode) against the literal
transcription of docs/recipe.md section 6 (tests/test_decode.py), in the same run.

Scenes: 1, 5, 10 and 20 people rendered by the ground-truth encoder at stride 8 with smooth
noise like a network's, so both decoders see spurious peaks too. Both decoders must find the
same people at full resolution (checked on every scene); the table gives the median time.
A second table splits the fast path at its default resolution into its stages (resolution
step, peaks, limbs, assembly and records), each timed alone.

    python benchmarks/bench_decode.py [--repeats 5] [--seed 0] [--out FILE.md]
"""
import argparse
import importlib.util
import math
import statistics
import time

import cv2
import numpy as np

from model import cli, decode, files, inference, paths
from model.errors import UserError
from model.machine import cpu_times, describe_line, steal_percent, steal_text


def load_literal():
    """The literal decoder and the scene helpers of tests/test_decode.py (one copy only)."""
    path = paths.REPO_ROOT / "tests" / "test_decode.py"
    spec = importlib.util.spec_from_file_location("literal_decode_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def literal_postprocess(ref, net_heat, net_paf, hw, image_id):
    """The reference's steps: upsample x8 (cubic), crop the padding, decode, write COCO."""
    maps = cv2.resize(np.concatenate([net_heat, net_paf], 2), None, fx=8, fy=8,
                      interpolation=cv2.INTER_CUBIC)[:hw[0], :hw[1]]
    people = ref.literal_decode(maps[..., :19], maps[..., 19:])
    return decode.people_to_coco(people, image_id)


def fast_postprocess(net_heat, net_paf, hw, image_id, settings):
    heat, paf = inference.maps_to_grid(net_heat, net_paf, hw, 1.0, settings.resolution)
    people = inference.decode_maps(heat, paf, hw, settings)
    return decode.people_to_coco(people, image_id)


def stage_times(net_heat, net_paf, hw, settings):
    """Milliseconds of each stage of the fast path (the steps of decode_maps, one by one)."""
    (heat, pafs), t_grid = timed(inference.maps_to_grid, net_heat, net_paf, hw, 1.0,
                                 settings.resolution)
    _, pixel = inference.working_grid(hw, settings.resolution)
    peaks, t_peaks = timed(decode.find_peaks, heat, settings.thre1, decode.PEAK_SIGMA, pixel,
                           settings.resolution > 1)
    connections, t_limbs = timed(decode.find_connections, peaks, pafs, heat.shape[0],
                                 settings.thre2, settings.mid_num)
    _, t_people = timed(decode.assemble, peaks, connections)
    people = inference.decode_maps(heat, pafs, hw, settings)
    _, t_coco = timed(decode.people_to_coco, people, 1)
    return t_grid, t_peaks, t_limbs, t_people + t_coco


def timed(fn, *args, runs=3):
    """(result, milliseconds): the least CPU time of `runs` calls. CPU time of this process
    (single-threaded here) rather than wall time, because the machine is shared: other jobs
    stretch wall time but not the work done; the minimum drops cache and scheduler noise."""
    best = math.inf
    for _ in range(runs):
        start = time.process_time()
        out = fn(*args)
        best = min(best, time.process_time() - start)
    return out, best * 1000.0


def run(repeats, seed, resolution, counts=(1, 5, 10, 20), noise=0.03):
    ref = load_literal()
    hw = (480, 640)
    rng = np.random.default_rng(seed)
    full = inference.InferenceSettings(resolution=1)
    coarse = inference.InferenceSettings(resolution=resolution)
    rows, stages = [], []
    for count in counts:
        t_lit, t_full, t_fast, found, t_stages = [], [], [], [], []
        for _ in range(repeats):
            people = ref.random_people(rng, count, hw, min_height=100, max_height=300,
                                       cluster=count > 5)
            heat, paf = ref.render(people, hw, stride=8, noise=noise, rng=rng)
            lit, t = timed(literal_postprocess, ref, heat, paf, hw, 1, runs=1)
            t_lit.append(t)
            same, t = timed(fast_postprocess, heat, paf, hw, 1, full)
            t_full.append(t)
            if same != lit:
                raise SystemExit(f"fast and literal decoders disagree on a {count}-person scene")
            fast, t = timed(fast_postprocess, heat, paf, hw, 1, coarse)
            t_fast.append(t)
            found.append(len(fast))
            t_stages.append(stage_times(heat, paf, hw, coarse))
        med = [statistics.median(t) for t in (t_lit, t_full, t_fast)]
        rows.append((count, statistics.mean(found), *med))
        stages.append((count, *(statistics.median(t) for t in zip(*t_stages))))
    return rows, stages, coarse.resolution


def format_table(rows, resolution, repeats, seed):
    lines = [f"Post-processing of a 640x480 image from 80x60 maps to COCO records: CPU time, "
             f"median over {repeats} scenes (seed {seed}), one thread (CPU: "
             f"{describe_line()}):",
             "",
             "| people | found | literal (ms) | fast, full resolution (ms) | speed-up | "
             f"fast, resolution {resolution} (ms) | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for count, found, lit, full, fast in rows:
        lines.append(f"| {count} | {found:.1f} | {lit:.0f} | {full:.1f} | {lit / full:.0f}x | "
                     f"{fast:.1f} | {lit / fast:.0f}x |")
    return "\n".join(lines) + "\n"


def format_stages(stages, resolution):
    lines = [f"Where the time of the fast path goes at resolution {resolution} (ms, median, "
             "each stage timed alone):",
             "",
             "| people | resolution step | peaks | limbs | assembly + records |",
             "|---:|---:|---:|---:|---:|"]
    for count, *times in stages:
        lines.append(f"| {count} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    return "\n".join(lines) + "\n"


@cli.main_guard
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="scenes per people count")
    cli.add_seed(parser)
    parser.add_argument("--resolution", type=int, default=inference.DEFAULT_RESOLUTION,
                        help="working grid of the fast path, image pixels per map pixel "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    if args.repeats < 1:
        raise UserError("--repeats must be >= 1")
    cv2.setNumThreads(1)
    ticks = cpu_times()
    rows, stages, resolution = run(args.repeats, args.seed, args.resolution)
    table = (format_table(rows, resolution, args.repeats, args.seed) + "\n"
             + format_stages(stages, resolution)
             + f"\nsteal while it ran: {steal_text(steal_percent(ticks))}\n")
    print(table)
    if args.out:
        files.write_text(args.out, table)


if __name__ == "__main__":
    main()
