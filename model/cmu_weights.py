"""CMU's released COCO model in one command: download, verify, convert, check, install.

    model/get_cmu_model.sh            (= python -m model.cmu_weights)

1. Prints CMU's licence terms for the weights (they are not this project's to relicense).
2. Downloads `pose_iter_440000.caffemodel` (about 200 MB) and its deploy prototxt into
   --download_dir, resumably: an interrupted transfer continues from its `.part` file on the
   next run (HTTP Range). Sources: $CMU_MODEL_BASE_URL/pose_iter_440000.caffemodel (default:
   CMU's model server) and $CMU_PROTOTXT_URL (default: the prototxt in CMU's repository).
3. Verifies the caffemodel's MD5 against the published one ($CMU_MODEL_MD5 overrides it, for
   a model other than CMU's); a mismatching file is removed so that a rerun fetches it anew.
4. Converts it to Keras weights of the full configuration (model/caffe.py, no Caffe needed).
5. Runs the converted Keras model and OpenCV's DNN (reading CMU's prototxt and caffemodel)
   on one image and requires the same maps (to 1e-3 of their range).
6. Only then moves the weights to --out (default training/weights/weights.0100.h5, where
   eval/eval_coco2014_single_scale.py --effect "" and eval/demo.py look without flags) and
   writes <out>.json beside it: source, MD5, the check's numbers, the PAF grid, the licence.
The weight file records CMU's PAF grid (cell j at input pixel 8j, model.network
CMU_PAF_ORIGIN), which inference honours. A rerun with everything in place does nothing
(a file installed before the grid was recorded gets the record); --force true redoes the
conversion.
"""
import argparse
import hashlib
import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from model import caffe, network, paths
from model.cli import ensure_writable_dir, main_guard, str2bool
from model.errors import UserError
from model.files import atomic_path, write_json

log = logging.getLogger(__name__)

CAFFEMODEL = "pose_iter_440000.caffemodel"
PROTOTXT = "pose_deploy_linevec.prototxt"
DEFAULT_BASE_URL = "http://posefs1.perception.cs.cmu.edu/OpenPose/models/pose/coco"
DEFAULT_PROTOTXT_URL = ("https://raw.githubusercontent.com/CMU-Perceptual-Computing-Lab/"
                        "openpose/master/models/pose/coco/" + PROTOTXT)
# MD5 of CMU's pose_iter_440000.caffemodel, as published with OpenPose's model list.
CMU_MD5 = "5156d31f670511fce9b4e28b403f2939"
DEFAULT_OUT = paths.expert_weights_dir("") / "weights.0100.h5"
DEFAULT_DOWNLOAD_DIR = paths.REPO_ROOT / ".cache" / "cmu_model"
CHECK_SIZE = (184, 160)           # (height, width) of the image both networks run on
CHECK_TOLERANCE = 1e-3            # max |Keras - OpenCV| / max |OpenCV|, per output
CHUNK = 1 << 20
LICENCE = """\
CMU's OpenPose models are released for academic or non-profit, non-commercial research
use only; commercial use needs a licence from Carnegie Mellon University (see the LICENSE
file of CMU's OpenPose repository, github.com/CMU-Perceptual-Computing-Lab/openpose). By
downloading and using the weights you accept those terms. This project's code is separate
from the weights and does not change their terms."""


def sources():
    """(caffemodel URL, prototxt URL, expected MD5) from the environment or the defaults."""
    base = os.environ.get("CMU_MODEL_BASE_URL", DEFAULT_BASE_URL).rstrip("/")
    return (f"{base}/{CAFFEMODEL}", os.environ.get("CMU_PROTOTXT_URL", DEFAULT_PROTOTXT_URL),
            os.environ.get("CMU_MODEL_MD5", CMU_MD5).strip().lower())


def md5sum(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url, offset):
    """The HTTP response for `url` from byte `offset` on; UserError when it cannot be had."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code == 416:                       # nothing left past `offset`: already complete
            return None
        raise UserError(f"the server refused {url} (HTTP {e.code} {e.reason}); is "
                        "CMU_MODEL_BASE_URL / CMU_PROTOTXT_URL right?") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach {url} ({reason}); check the network or point "
                        "CMU_MODEL_BASE_URL at a mirror, then rerun to resume") from None


def download(url, dest):
    """`dest` from `url`, continuing a `dest.part` left by an interrupted run."""
    dest = Path(dest)
    if dest.is_file():
        log.info("%s: already downloaded", dest.name)
        return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    response = _open(url, offset)
    if response is not None:
        with response:
            if offset and response.status != 206:   # the server ignored Range: start over
                offset = 0
            log.info("%s: %s from %s", dest.name,
                     f"resuming at {offset:,} bytes" if offset else "downloading", url)
            _copy(response, part, offset, url)
    os.replace(part, dest)
    return dest


def _copy(response, part, offset, url):
    total = response.headers.get("Content-Length")
    expected = offset + int(total) if total and total.isdigit() else None
    with open(part, "r+b" if offset else "wb") as f, \
            tqdm(total=expected, initial=offset, unit="B", unit_scale=True,
                 desc=part.name[:-len(".part")], leave=False) as bar:
        f.seek(offset)
        f.truncate()
        try:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
        except (OSError, http.client.HTTPException) as e:
            raise UserError(f"download of {url} interrupted ({e}); {f.tell():,} bytes kept "
                            f"in {part}, rerun to resume") from None
        size = f.tell()
    if expected is not None and size < expected:
        raise UserError(f"download of {url} stopped at {size:,} of {expected:,} bytes "
                        f"(kept in {part}); rerun to resume")


def verify(path, expected_md5):
    """UserError (and the file removed, so a rerun downloads it again) unless MD5 matches."""
    actual = md5sum(path)
    if actual != expected_md5:
        Path(path).unlink()
        raise UserError(f"{path.name} has MD5 {actual}, expected {expected_md5}: the file is "
                        "corrupt or not CMU's model; it was removed, rerun to download it again")
    return actual


def check_image(height, width):
    """A fixed, seeded test image with structure at every scale (a gradient, noise, shapes)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / width, 255 * y / height, 128 + 0 * x], -1)
    image = image + rng.normal(0, 20, image.shape)
    cv2.circle(image, (width // 2, height // 3), height // 8, (30, 200, 90), -1)
    cv2.rectangle(image, (width // 3, height // 2), (2 * width // 3, height - 10),
                  (220, 60, 40), -1)
    return np.clip(image, 0, 255).astype(np.uint8)


def opencv_maps(prototxt, caffemodel, image, config="full"):
    """OpenCV DNN's last-stage (PAF, heatmaps) as H x W x C for a float32 BGR image; the Caffe
    net takes the normalised image as NCHW (it has no normalisation layer)."""
    cfg = network.get_config(config)
    try:
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    except cv2.error as e:
        raise UserError(f"OpenCV cannot read {prototxt} with {caffemodel}: "
                        f"{str(e).strip().splitlines()[-1]}") from None
    net.setInput(np.ascontiguousarray((image / 256.0 - 0.5).transpose(2, 0, 1)[None],
                                      dtype=np.float32))
    names = [f"Mconv7_stage{cfg.num_stages}_L{b}" for b in (1, 2)]
    return [o[0].transpose(1, 2, 0) for o in net.forward(names)]


def compare_with_opencv(weights, prototxt, caffemodel, config="full"):
    """{output: relative max difference} of the Keras model with `weights` against OpenCV's
    DNN with CMU's prototxt and caffemodel, on check_image."""
    image = check_image(*CHECK_SIZE).astype(np.float32)
    model = network.build_pose_model(config, weights=str(weights), vgg19=None)
    ours = [np.asarray(o)[0] for o in model(image[None])]
    theirs = opencv_maps(prototxt, caffemodel, image, config)
    result = {}
    for name, a, b in zip(("paf", "heatmaps"), ours, theirs):
        if a.shape != b.shape:
            raise UserError(f"{name}: Keras gives maps of shape {a.shape}, OpenCV {b.shape}")
        result[name] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
    return result


def install(out=DEFAULT_OUT, download_dir=DEFAULT_DOWNLOAD_DIR, force=False):
    """The whole path (module docstring). Returns the record written beside `out`."""
    out, download_dir = Path(out), Path(download_dir)
    record_path = out.with_name(out.name + ".json")
    model_url, prototxt_url, md5 = sources()
    if not force and out.is_file() and _recorded_md5(record_path) == md5:
        record = json.loads(record_path.read_text())
        if network.file_conventions(out, defaults=False)["paf_origin"] is None:
            record = _record_paf_grid(out, record_path, record)
            log.info("%s: CMU's PAF grid recorded (cell j at input pixel 8j)", out)
        else:
            log.info("%s is already CMU's converted model (MD5 %s); nothing to do", out, md5)
        return record
    ensure_writable_dir(download_dir)
    ensure_writable_dir(out.parent)
    caffemodel = download(model_url, download_dir / CAFFEMODEL)
    verify(caffemodel, md5)
    prototxt = download(prototxt_url, download_dir / PROTOTXT)
    staged = out.with_name(".converting-" + out.name)
    try:
        t0 = time.time()
        caffe.convert_caffemodel(caffemodel, staged, "full")
        check = compare_with_opencv(staged, prototxt, caffemodel)
        if max(check.values()) > CHECK_TOLERANCE:
            raise UserError(f"the converted model differs from OpenCV's run of the caffemodel "
                            f"({check}; tolerance {CHECK_TOLERANCE}); nothing was installed")
        log.info("converted and checked against OpenCV DNN in %.1f s: %s", time.time() - t0,
                 ", ".join(f"{k} {v:.1e}" for k, v in check.items()))
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    record = {"weights": str(out), "config": "full", "source": model_url, "md5": md5,
              "prototxt": prototxt_url, "opencv_check": {"image_hw": list(CHECK_SIZE),
                                                         "max_relative_difference": check,
                                                         "tolerance": CHECK_TOLERANCE},
              "paf_origin": network.CMU_PAF_ORIGIN, "licence": LICENCE}
    write_json(record_path, record)
    return record


def _record_paf_grid(out, record_path, record):
    """Add CMU's PAF grid to weights converted before files recorded it (a copy with the
    attribute, renamed over the file) and to their record; returns the record."""
    with atomic_path(out) as tmp:
        shutil.copyfile(out, tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["paf_origin"] = network.CMU_PAF_ORIGIN
    record = dict(record, paf_origin=network.CMU_PAF_ORIGIN)
    write_json(record_path, record)
    return record


def _recorded_md5(record_path):
    try:
        return json.loads(Path(record_path).read_text()).get("md5")
    except (OSError, ValueError, AttributeError):
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="converted Keras weights (default: %(default)s)")
    p.add_argument("--download_dir", type=Path, default=DEFAULT_DOWNLOAD_DIR,
                   help="where the caffemodel and prototxt are kept (default: %(default)s)")
    p.add_argument("--force", type=str2bool, default=False,
                   help="convert and check again even if --out is already CMU's model")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    print(LICENCE, flush=True)
    record = install(args.out, args.download_dir, args.force)
    print(f"CMU's COCO model is ready: {record['weights']} (configuration full). "
          "eval/demo.py and eval/eval_coco2014_single_scale.py --effect '' use it by default.")


if __name__ == "__main__":
    main()
