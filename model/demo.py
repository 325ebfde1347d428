"""The demo's sources, outputs and frame loop (eval/demo.py is its command line).

Sources: one image, a folder of images, a video file, a camera. Every image or frame goes
through a predictor (model.demo_predict: one network, or the experts' ensemble), is drawn
(model.demo_draw) and written with its OpenPose-style JSON (model.inference.people_json plus
`person_id` and, for the ensemble, the domain and each person's disagreement).

- image: <out>/<name>_pose.png and <out>/<name>.json.
- folder: <out>/<folder>/<stem>_pose.png and <stem>.json per image (sorted by file name;
  stems two files share get their extension: a_png), then <out>/<folder>_coco_results.json
  (COCO keypoint results, image_id = the file's index in sorted order) and
  <out>/<folder>_coco_images.json (those ids' file names and sizes, and the files skipped).
  A rerun keeps every image whose JSON exists and parses and rebuilds the COCO files from
  the per-image JSONs.
- video or camera: <out>/<name>_pose.avi (MJPG) and <out>/<name>_json/<name>_<frame>.json,
  both staged under temporary names and put in place when the last frame is done, with
  track ids from model.tracking.Tracker.
Every file is written atomically (model.files).
"""
import json
import logging
import os
import shutil
import time
from pathlib import Path

import cv2
from tqdm import tqdm

from model import decode, files, inference, predict_set
from model.cli import ensure_writable_dir
from model.demo_draw import draw_frame
from model.demo_predict import StageTimer
from model.errors import UserError
from model.images import read_image_checked
from model.skeleton import CMU_PARTS
from model.tracking import Tracker

log = logging.getLogger("demo")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_REASONS = 3            # skipped files named in the log and the summary line
STAGES = ("read", "classifier", "network", "decoding", "uncertainty", "tracking",
          "drawing and writing")
CAMERA_MAX_FRAMES = 300


def frame_record(prediction, frame, image_hw, ids=None):
    """The JSON of one image or frame: model.inference.people_json with each person's
    `person_id` (-1 without tracking, as OpenPose writes it) and the predictor's fields."""
    record = inference.people_json(prediction.people, frame, image_hw)
    ids = [-1] * len(prediction.people) if ids is None else ids
    record.update(prediction.frame_info)
    record["people"] = [{"person_id": int(i), **p, **extra} for i, p, extra in
                        zip(ids, record["people"], prediction.person_info)]
    return record


def png_bytes(image):
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise UserError("cannot encode the drawn image as PNG")
    return png.tobytes()


def report(what, count, people, seconds, timer):
    """The frame rate line and the time per frame of every stage that ran."""
    rate = count / seconds if seconds > 0 else float("inf")
    print(f"{count} {what}, {people} people, {seconds:.2f} s: {rate:.2f} frames per second")
    parts = [f"{stage} {1000 * timer.seconds[stage] / max(count, 1):.1f} ms"
             for stage in STAGES if stage in timer.seconds]
    print("per frame: " + ", ".join(parts))


def timed_frames(frames, timer):
    """Iterate `frames`, charging the time of producing each one to "read"."""
    it = iter(frames)
    while True:
        with timer("read"):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


# ------------------------------------------------------------------------------ one image

def load_image(path):
    """(BGR image, seconds it took to read) of --image; UserError naming an unreadable one."""
    start = time.perf_counter()
    image, reason = predict_set.read_image_or_reason(path)
    if image is None:
        raise UserError(reason)
    return image, time.perf_counter() - start


def run_image(path, image, read_seconds, predictor, out):
    """The demo on one image already read by load_image."""
    out = ensure_writable_dir(out)
    timer, start = StageTimer(), time.perf_counter() - read_seconds
    timer.seconds["read"] = read_seconds
    prediction = predictor(image, timer)
    with timer("drawing and writing"):
        drawn = draw_frame(image, prediction.people, None, prediction.uncertain)
        files.write_bytes(out / f"{path.stem}_pose.png", png_bytes(drawn))
        files.write_json(out / f"{path.stem}.json",
                         frame_record(prediction, 0, image.shape[:2]), indent=1)
    report("frame(s)", 1, len(prediction.people), time.perf_counter() - start, timer)
    print(f"written: {out / (path.stem + '_pose.png')} and {out / (path.stem + '.json')}")


# ------------------------------------------------------------------------------ a folder

def list_images(folder):
    """The image files of a folder (IMAGE_SUFFIXES, any case), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    found = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not found:
        raise UserError(f"no images in {folder} (looked for "
                        f"{', '.join(s[1:] for s in IMAGE_SUFFIXES)}, any case)")
    return found


def output_stems(paths):
    """The output name of each file: its stem, or stem_extension where stems repeat."""
    stems = [p.stem for p in paths]
    return [f"{p.stem}_{p.suffix[1:].lower()}" if stems.count(p.stem) > 1 else p.stem
            for p in paths]


def read_record(path, file_name):
    """The per-image JSON of a finished image, or None when missing, unparsable or not this
    file's."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("file_name") != file_name
            or record.get("parts") != list(CMU_PARTS)
            or not isinstance(record.get("people"), list)):
        return None
    return record


def coco_results(records):
    """COCO keypoint results of the per-image records {image index: record}."""
    results = []
    for index, record in sorted(records.items()):
        results.extend(decode.people_to_coco(record["people"], index))
    return results


def _skip_note(skipped):
    shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:MAX_REASONS])
    more = f"; and {len(skipped) - MAX_REASONS} more" if len(skipped) > MAX_REASONS else ""
    return f"{len(skipped)} file(s) could not be read and were skipped ({shown}{more})"


def _predict_folder(images, stems, todo, predictor, dest, timer):
    """Predict, draw and write every image index of `todo`; returns (skipped, people)."""
    skipped, people = [], 0
    reads = ((i, read_image_checked(images[i])) for i in todo)
    for i, (image, reason) in tqdm(timed_frames(reads, timer), total=len(todo),
                                   desc="images", unit="img"):
        if image is None:
            skipped.append((images[i].name, reason))
            continue
        prediction = predictor(image, timer)
        with timer("drawing and writing"):
            drawn = draw_frame(image, prediction.people, None, prediction.uncertain)
            files.write_bytes(dest / f"{stems[i]}_pose.png", png_bytes(drawn))
            record = frame_record(prediction, 0, image.shape[:2])
            record.update(file_name=images[i].name, image_id=i)
            files.write_json(dest / f"{stems[i]}.json", record, indent=1)
        people += len(prediction.people)
    return skipped, people


def run_folder(folder, predictor, out):
    """The demo on every image of a folder, continuing an interrupted run."""
    images = list_images(folder)
    out = ensure_writable_dir(out)
    name = Path(folder).resolve().name
    dest, stems = out / name, output_stems(images)
    done = [i for i in range(len(images))
            if read_record(dest / f"{stems[i]}.json", images[i].name) is not None]
    todo = sorted(set(range(len(images))) - set(done))
    log.info("%d image(s) in %s: %d already done (kept), %d to predict", len(images), folder,
             len(done), len(todo))
    timer, start = StageTimer(), time.perf_counter()
    skipped, people = _predict_folder(images, stems, todo, predictor, dest, timer)
    seconds = time.perf_counter() - start
    records = {i: r for i in range(len(images))
               if (r := read_record(dest / f"{stems[i]}.json", images[i].name)) is not None}
    if skipped:
        log.warning("%s", _skip_note(skipped))
    mapping = {"folder": str(Path(folder).resolve()),
               "images": [{"id": i, "file_name": images[i].name, "width": r["width"],
                           "height": r["height"]} for i, r in sorted(records.items())],
               "skipped": [{"file_name": n, "reason": r} for n, r in skipped]}
    files.write_json(out / f"{name}_coco_images.json", mapping, indent=1)
    results = coco_results(records)
    files.write_json(out / f"{name}_coco_results.json", results)
    report("image(s) predicted", len(todo) - len(skipped), people, seconds, timer)
    print(f"{len(records)} of {len(images)} image(s) done ({len(done)} kept from an earlier "
          f"run), {len(results)} people in {out / (name + '_coco_results.json')}")
    if skipped:
        print(f"skipped: {_skip_note(skipped)}")
    print(f"written: {dest}/ and {out / (name + '_coco_images.json')}")


# ------------------------------------------------------------------------------ video

def open_capture(video=None, camera=None):
    """(cv2.VideoCapture, name, what) of a video file or a camera index."""
    if video is not None:
        if not Path(video).is_file():
            raise UserError(f"video not found: {video}")
        cap, name, what = cv2.VideoCapture(str(video)), Path(video).stem, str(video)
    else:
        cap, name, what = cv2.VideoCapture(camera), f"camera{camera}", f"camera {camera}"
    if not cap.isOpened():
        raise UserError(f"cannot open {what}")
    return cap, name, what


def capture_frames(cap, limit):
    """The frames of an opened capture (at most `limit`), releasing it at the end."""
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


class VideoOutput:
    """The drawn video and the per-frame JSONs, staged beside their final names and put in
    place by finish(); discard() removes what was staged."""

    def __init__(self, out, name, fps):
        self.video = out / f"{name}_pose.avi"
        self.json_dir = out / f"{name}_json"
        self.partial = out / f".{name}_pose.partial.avi"    # VideoWriter needs the suffix
        self.partial_json = out / f".{name}_json.partial"
        self.name, self.fps, self.writer = name, fps, None
        shutil.rmtree(self.partial_json, ignore_errors=True)

    def write(self, frame_index, drawn, record):
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"MJPG"),
                                          self.fps, (drawn.shape[1], drawn.shape[0]))
            if not self.writer.isOpened():
                raise UserError(f"cannot write the video {self.partial}")
        self.writer.write(drawn)
        files.write_json(self.partial_json / f"{self.name}_{frame_index:06d}.json", record)

    def close(self):
        if self.writer is not None:
            self.writer.release()

    def discard(self):
        self.close()
        self.partial.unlink(missing_ok=True)
        shutil.rmtree(self.partial_json, ignore_errors=True)

    def finish(self):
        self.close()
        os.replace(self.partial, self.video)
        shutil.rmtree(self.json_dir, ignore_errors=True)
        os.replace(self.partial_json, self.json_dir)


def _video_loop(frames, predictor, tracker, output, timer):
    """Predict, track, draw and write every frame; returns (frames, people)."""
    count = people = 0
    for frame in timed_frames(frames, timer):
        prediction = predictor(frame, timer)
        with timer("tracking"):
            ids = tracker.update(prediction.people, count)
        with timer("drawing and writing"):
            drawn = draw_frame(frame, prediction.people, ids, prediction.uncertain)
            output.write(count, drawn, frame_record(prediction, count, frame.shape[:2], ids))
        count += 1
        people += len(prediction.people)
    return count, people


def run_video(predictor, out, video=None, camera=None, max_frames=None,
              tracker=None):
    """The demo on a video file or a camera; the frames are tracked by `tracker`."""
    cap, name, what = open_capture(video, camera)
    out = ensure_writable_dir(out)
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if video is not None else 0
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    limit = max_frames or (CAMERA_MAX_FRAMES if camera is not None else None)
    expected = min(declared, limit) if limit else declared
    frames = capture_frames(cap, limit)
    bar = tqdm(frames, total=expected or None, desc=name, unit="frame",
               disable=video is None)
    output, timer = VideoOutput(out, name, fps), StageTimer()
    tracker = tracker or Tracker()
    start = time.perf_counter()
    try:
        count, people = _video_loop(bar, predictor, tracker, output, timer)
    except BaseException:
        output.discard()          # never leave a video that looks complete
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if count == 0:
        output.discard()
        declares = f" (its container declares {declared} frames)" if declared else ""
        raise UserError(f"no frame could be read from {what}{declares}")
    if declared and count < expected:
        log.warning("%s declares %d frames but only %d could be read", what, declared, count)
    output.finish()
    report("frame(s)", count, people, seconds, timer)
    print(f"{tracker.next_id} track(s); written: {output.video} and {output.json_dir}")
