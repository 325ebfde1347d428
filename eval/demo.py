"""Pose demo on an image, a folder of images, a video or a camera: skeletons in OpenPose
colours, one JSON per image or frame, track ids across frames, frames per second.

    python eval/demo.py --image photo.jpg --weights training/weights/weights.0100.h5
    python eval/demo.py --images photos/ --config small --scale_mode boxsize --scale_search 1.5
    python eval/demo.py --video clip.mp4 --config small --scale_mode boxsize --weights W.h5
    python eval/demo.py --camera 0 --max_frames 300
    python eval/demo.py --video clip.mp4 --config small --effect _ensemble    # the experts
    python eval/demo.py --image photo.jpg --backend onnxruntime --weights pose_full.onnx

Writes into --out (default results/demo/): <name>_pose.png and <name>.json for an image;
<folder>/<stem>_pose.png and <stem>.json per image of a folder plus
<folder>_coco_results.json (COCO keypoint results, image_id = index in sorted order) and
<folder>_coco_images.json (ids -> file names), resumable; <name>_pose.avi (MJPG) and
<name>_json/<name>_<frame:06d>.json for a video or camera, with a stable person_id per
person. With --effect _ensemble / _ensemble_fuse each JSON also holds the predicted domain,
its probabilities and each person's disagreement between the three experts; uncertain
people are drawn as dashed grey skeletons. Prints the frames per second and the time per
frame of reading, the network, decoding, tracking and drawing (+ writing).
"""
import argparse
from pathlib import Path

from model import demo, inference, network, paths, tracking
from model.cli import ensure_writable_dir, main_guard, str2bool
from model.demo_load import build_predictor
from model.demo_predict import DEFAULT_UNCERTAIN_ABOVE
from model.domains import DARK, ENSEMBLE, ENSEMBLE_FUSE, MOTION_BLUR, NORMAL, TRAINED_MODELS
from model.errors import UserError
from model.backends import BACKENDS, TENSORFLOW
from model.uncertainty import DEFAULT_MATCH_OKS

ENSEMBLES = (ENSEMBLE, ENSEMBLE_FUSE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="an image file")
    source.add_argument("--images", type=Path, metavar="DIR",
                        help="every image of a folder (jpg, jpeg, png, bmp, tif, tiff, webp)")
    source.add_argument("--video", type=Path, help="a video file")
    source.add_argument("--camera", type=int, help="a camera index (OpenCV)")
    p.add_argument("--effect", default=NORMAL, choices=TRAINED_MODELS + ENSEMBLES,
                   help="whose network: an expert ('' normal, _dark, _motion_blur; its "
                        "default weights), the generalist (_mixed, training/weights_mixed) "
                        "or the three experts with the domain classifier: "
                        "_ensemble (routed to the most probable domain's expert) or "
                        "_ensemble_fuse (maps fused by the domain probabilities)")
    p.add_argument("--weights", default=None,
                   help="the single network's file: Keras weights (default: the expert's, "
                        "training/weights<effect>/weights.0100.h5 or its newest checkpoint), "
                        "or with --backend onnxruntime/openvino an .onnx file exported with "
                        "python -m model.export")
    p.add_argument("--backend", default=TENSORFLOW, choices=BACKENDS,
                   help="what runs the single network (default: %(default)s)")
    for effect, name in ((NORMAL, "normal"), (DARK, "dark"), (MOTION_BLUR, "motion_blur")):
        p.add_argument(f"--weights_{name}", default=None,
                       help=f"ensemble: the {name} expert's Keras weights (default: "
                            f"training/weights{effect}/weights.0100.h5 or its newest)")
    p.add_argument("--classifier", default=None,
                   help="ensemble: the domain classifier, a run folder (its best epoch, else "
                        "its last) or a model_NNNN.pth (default: the newest run in "
                        f"{paths.DOMAIN_LOG_DIR})")
    p.add_argument("--uncertain_above", type=float, default=DEFAULT_UNCERTAIN_ABOVE,
                   help="ensemble: draw a person as uncertain (dashed grey) when the experts' "
                        "translational disagreement is above this or fewer than two experts "
                        "found it (default: %(default)s; on the demo's test sets half of the "
                        "people above it are wrong, 10 %% of those below)")
    p.add_argument("--match_oks", type=float, default=DEFAULT_MATCH_OKS,
                   help="ensemble: OKS that makes two experts' people the same person, as in "
                        "eval/util_ainu.py (default: %(default)s)")
    p.add_argument("--config", default="full", choices=sorted(network.CONFIGS))
    p.add_argument("--scale_search", type=float, nargs="+", default=[1.0])
    p.add_argument("--scale_mode", default="native", choices=inference.SCALE_MODES)
    p.add_argument("--flip", type=str2bool, default=False)
    p.add_argument("--resolution", type=int, default=inference.DEFAULT_RESOLUTION)
    p.add_argument("--track_min_oks", type=float, default=tracking.DEFAULT_MIN_OKS,
                   help="video: OKS a person needs with a track to keep its id "
                        "(default: %(default)s)")
    p.add_argument("--track_max_age", type=int, default=tracking.DEFAULT_MAX_AGE,
                   help="video: frames a track survives unseen (default: %(default)s)")
    p.add_argument("--max_frames", type=int, default=None,
                   help=f"stop after this many frames (camera default: {demo.CAMERA_MAX_FRAMES})")
    p.add_argument("--out", type=Path, default=paths.RESULTS_DIR / "demo",
                   help="output folder (default: %(default)s)")
    return p.parse_args(argv)


def check_args(args):
    """One line for every flag that does not fit, before anything loads."""
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max_frames must be >= 1")
    if not 0 < args.track_min_oks <= 1:
        raise UserError(f"--track_min_oks must be in (0, 1], got {args.track_min_oks}")
    if args.track_max_age < 0:
        raise UserError(f"--track_max_age must be >= 0, got {args.track_max_age}")
    if not 0 < args.match_oks <= 1:
        raise UserError(f"--match_oks must be in (0, 1], got {args.match_oks}")
    if args.uncertain_above < 0:
        raise UserError(f"--uncertain_above must be >= 0, got {args.uncertain_above}")
    ensemble_flags = [f"--{n}" for n in ("weights_normal", "weights_dark",
                                         "weights_motion_blur", "classifier")
                      if getattr(args, n) is not None]
    if args.effect in ENSEMBLES:
        if args.weights is not None or args.backend != "tensorflow":
            raise UserError(f"--effect {args.effect} runs the three experts' Keras weights: "
                            "give them with --weights_normal, --weights_dark, "
                            "--weights_motion_blur (--weights and --backend are for one network)")
    elif ensemble_flags:
        raise UserError(f"{ensemble_flags[0]} is for --effect {ENSEMBLE} or {ENSEMBLE_FUSE}")


@main_guard
def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    settings = inference.InferenceSettings(tuple(args.scale_search), args.scale_mode,
                                           network.CONFIGS[args.config].input_size, args.flip,
                                           args.resolution)
    if args.image is not None:                   # a bad input fails before anything loads
        image, read_seconds = demo.load_image(args.image)
    elif args.images is not None:
        demo.list_images(args.images)
    elif args.video is not None and not args.video.is_file():
        raise UserError(f"video not found: {args.video}")
    out = ensure_writable_dir(args.out)
    predictor = build_predictor(
        args.effect, settings, args.config, args.backend, args.weights,
        {NORMAL: args.weights_normal, DARK: args.weights_dark,
         MOTION_BLUR: args.weights_motion_blur}, args.classifier, args.match_oks,
        args.uncertain_above)
    if args.image is not None:
        demo.run_image(args.image, image, read_seconds, predictor, out)
    elif args.images is not None:
        demo.run_folder(args.images, predictor, out)
    else:
        demo.run_video(predictor, out, args.video, args.camera, args.max_frames,
                       tracking.Tracker(args.track_min_oks, args.track_max_age))


if __name__ == "__main__":
    main()
