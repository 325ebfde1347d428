"""Pose demo on an image, a video or a camera: skeletons in OpenPose colours, one JSON per
frame, frames per second.

    python eval/demo.py --image photo.jpg --weights training/weights/weights.0100.h5
    python eval/demo.py --video clip.mp4 --config small --scale_mode boxsize --weights W.h5
    python eval/demo.py --camera 0 --max_frames 300

Writes into --out (default results/demo/): <name>_pose.png for an image (<name>_pose.avi,
MJPG, for a video or camera) and <name>_json/<name>_<frame:06d>.json per frame (an image:
<name>.json) with every person's 18 CMU keypoints (x, y, score) and score. Prints the frames
per second of the whole loop (read, network, decoding, drawing, writing).
"""
import argparse
import logging
import os
import time
from pathlib import Path

import cv2

from model import files, inference, paths
from model.cli import UserError, ensure_writable_dir, main_guard, str2bool
from model.draw import draw_people

log = logging.getLogger("demo")


def parse_args(argv=None):
    from model.network import CONFIGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="an image file")
    source.add_argument("--video", type=Path, help="a video file")
    source.add_argument("--camera", type=int, help="a camera index (OpenCV)")
    p.add_argument("--weights", default=None,
                   help="Keras weight file (default: the normal expert's, "
                        "training/weights/weights.0100.h5 or its newest checkpoint)")
    p.add_argument("--config", default="full", choices=sorted(CONFIGS))
    p.add_argument("--scale_search", type=float, nargs="+", default=[1.0])
    p.add_argument("--scale_mode", default="native", choices=inference.SCALE_MODES)
    p.add_argument("--flip", type=str2bool, default=False)
    p.add_argument("--resolution", type=int, default=inference.DEFAULT_RESOLUTION)
    p.add_argument("--max_frames", type=int, default=None,
                   help="stop after this many frames (camera default: 300)")
    p.add_argument("--out", type=Path, default=paths.RESULTS_DIR / "demo",
                   help="output folder (default: %(default)s)")
    return p.parse_args(argv)


def frames(args):
    """(name, fps, iterator of BGR frames) of the chosen source."""
    if args.image is not None:
        image, reason = inference.read_image(args.image)
        if image is None:
            raise UserError(reason)
        return args.image.stem, None, iter([image])
    if args.video is not None:
        if not args.video.is_file():
            raise UserError(f"video not found: {args.video}")
        cap, name = cv2.VideoCapture(str(args.video)), args.video.stem
    else:
        cap, name = cv2.VideoCapture(args.camera), f"camera{args.camera}"
    if not cap.isOpened():
        raise UserError(f"cannot open {args.video or f'camera {args.camera}'}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    limit = args.max_frames or (300 if args.camera is not None else None)

    def read():
        count = 0
        try:
            while limit is None or count < limit:
                ok, frame = cap.read()
                if not ok:
                    return
                count += 1
                yield frame
        finally:
            cap.release()
    return name, fps, read()


@main_guard
def main(argv=None):
    args = parse_args(argv)
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max_frames must be >= 1")
    from model.network import CONFIGS
    settings = inference.InferenceSettings(tuple(args.scale_search), args.scale_mode,
                                           CONFIGS[args.config].input_size, args.flip,
                                           args.resolution)
    name, fps, source = frames(args)
    out = ensure_writable_dir(args.out)
    weights, note = inference.find_weights("", args.weights)
    log.info("weights: %s (%s), config %s", weights, note, args.config)
    model = inference.load_pose_model(args.config, weights)

    json_dir = out / f"{name}_json"
    video_path = out / f"{name}_pose.avi"
    partial = out / f".{name}_pose.partial.avi"  # VideoWriter needs the .avi suffix
    writer, count, people_total = None, 0, 0
    start = time.perf_counter()
    try:
        for frame in source:
            people = inference.predict_people(model, frame, settings)
            drawn = draw_people(frame, [p["keypoints"] for p in people]
                                if people else [])
            record = inference.people_json(people, count, frame.shape[:2])
            if args.image is not None:
                files.write_json(out / f"{name}.json", record, indent=1)
                ok, png = cv2.imencode(".png", drawn)
                files.write_bytes(out / f"{name}_pose.png", png.tobytes())
            else:
                if writer is None:
                    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise UserError(f"cannot write the video {partial}")
                writer.write(drawn)
                files.write_json(json_dir / f"{name}_{count:06d}.json", record)
            count += 1
            people_total += len(people)
    except BaseException:
        partial.unlink(missing_ok=True)  # never leave a video that looks complete
        raise
    finally:
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    if count == 0:
        partial.unlink(missing_ok=True)
        raise UserError(f"no frame could be read from {args.video or f'camera {args.camera}'}")
    if writer is not None:
        os.replace(partial, video_path)
    written = out / f"{name}_pose.png" if args.image is not None else video_path
    print(f"{count} frame(s), {people_total} people, {seconds:.2f} s: "
          f"{count / seconds:.2f} frames per second")
    print(f"written: {written} and {out / (name + '.json') if args.image else json_dir}")


if __name__ == "__main__":
    main()
