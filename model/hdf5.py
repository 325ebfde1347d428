"""The compact HDF5 of the training samples: its writer and its reader.

One file per split (docs/recipe.md section 4 for the split and the main people), written to a
temporary name and renamed when complete:
    images/bytes    uint8 (total,)      every image once, its original file bytes (JPEG)
    images/offsets  int64 (I + 1,)      image k is bytes[offsets[k]:offsets[k + 1]]
    images/id, images/height, images/width (I,), images/source (I,) uint8 (0 train2014, 1 val2014)
    masks/bytes, masks/offsets          mask_miss as PNG bytes; an empty range means all 255
    samples/image_index int32 (N,)      row of images/* of the sample
    samples/objpos float32 (N, 2), samples/scale_provided float32 (N,)
    samples/num_people int32 (N,), samples/joints float32 (N, P, 18, 3) zero-padded to P people
Root attributes: format, format_version, split, params (JSON), summary (JSON),
reference_layout_bytes (bytes of the reference layout, one raw 6 x H x W record per sample),
num_images, num_samples.

Storing each image once as its file bytes (instead of the reference's raw 6 x H x W record per
person) makes the file about 50x smaller; the reader decodes with model.images, so training
sees the pixels every other stage sees.
"""
import collections
import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import h5py
import numpy as np

from model import paths
from model.coco import (SOURCES, VAL_HOLDOUT, format_counts, held_out_val_image_ids,
                        image_samples, load_coco_annotations)
from model.errors import UserError
from model.files import atomic_path, ensure_writable_dir, remove_stale_temporaries
from model.images import IMREAD_FLAGS, decode_image, inspect_image
from model.masks import encode_png, make_masks, mask_files, mask_fields
from model.pool import map_jobs
from model.skeleton import NUM_PARTS

log = logging.getLogger(__name__)

FORMAT = "openpose-coco-compact"
FORMAT_VERSION = 1
_BYTES_CHUNK = 1 << 16       # HDF5 chunk of the byte arrays: a read touches few extra bytes
_WRITE_IT = "write it again with training/generate_hdf5_coco2014.py"
# per table: (length attribute, extra entries, datasets)
_TABLES = (("num_images", 1, ("images/offsets", "masks/offsets")),
           ("num_images", 0, ("images/id", "images/height", "images/width", "images/source")),
           ("num_samples", 0, ("samples/image_index", "samples/objpos",
                               "samples/scale_provided", "samples/num_people",
                               "samples/joints")))
# the writer sets the root attributes last, num_samples last of all: the completion mark
_ATTRS = ("format", "format_version", "split", "params", "summary", "reference_layout_bytes",
          "num_images", "num_samples")


# ----------------------------------------------------------------------------- writing

@dataclasses.dataclass
class _ImageJob:
    image_id: int
    source: str
    image_path: Path
    mask_path: Path
    height: int
    width: int
    anns: list
    samples: list


def _note_image_format(fmt, mode, notes):
    if fmt == "PNG":
        notes["PNG data in the image file: stored as is"] += 1
    if mode in ("L", "LA", "1", "I;16", "I"):
        notes["grayscale image: 3 channels on read"] += 1


def _hdf5_job(job):
    """(image bytes, mask bytes, notes, problem) of one image, read and checked in a worker."""
    try:
        return _read_checked(job)
    except Exception as e:  # one odd image must not end a run of hours; it is reported
        return None, None, collections.Counter(), f"unexpected error ({type(e).__name__}: {e})"


def _read_checked(job):
    notes = collections.Counter()
    try:
        data = job.image_path.read_bytes()
    except FileNotFoundError:
        return None, None, notes, "missing image file"
    except OSError:
        return None, None, notes, "unreadable image file"
    problem, fmt, mode = inspect_image(data, job.width, job.height)
    if problem:
        return None, None, notes, problem
    _note_image_format(fmt, mode, notes)
    mask_bytes, mask = None, None
    try:
        mask_bytes = job.mask_path.read_bytes()
        mask = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
    except FileNotFoundError:
        notes["mask file missing: computed from the annotations"] += 1
    except OSError:
        notes["mask file unreadable: computed from the annotations"] += 1
        mask_bytes = None
    if mask is not None and mask.shape != (job.height, job.width):
        notes["mask file of the wrong size: computed from the annotations"] += 1
        mask = None
    elif mask is None and mask_bytes is not None:
        notes["mask file unreadable: computed from the annotations"] += 1
    if mask is None:
        mask = make_masks(job.anns, job.height, job.width, notes)[0]
        mask_bytes = encode_png(mask, binary=True)
    if (mask == 255).all():
        mask_bytes = b""
    return data, mask_bytes, notes, None


class _ByteArray:
    """An appendable 1-D uint8 HDF5 dataset with offsets, buffered to avoid tiny resizes."""

    def __init__(self, group):
        self.data = group.create_dataset("bytes", (0,), np.uint8, maxshape=(None,),
                                         chunks=(_BYTES_CHUNK,))
        self.group = group
        self.offsets = [0]
        self.buffer, self.buffered, self.written = [], 0, 0

    def append(self, blob):
        self.buffer.append(blob)
        self.buffered += len(blob)
        self.offsets.append(self.offsets[-1] + len(blob))
        if self.buffered >= 1 << 24:
            self.flush()

    def flush(self):
        if self.buffered:
            self.data.resize((self.written + self.buffered,))
            self.data[self.written:] = np.frombuffer(b"".join(self.buffer), np.uint8)
            self.written += self.buffered
        self.buffer, self.buffered = [], 0

    def close(self):
        self.flush()
        self.group.create_dataset("offsets", data=np.asarray(self.offsets, np.int64))


def plan_images(coco, source, image_ids, coco_root):
    """_ImageJob per image with at least one main person; (jobs, images without one)."""
    jobs, without = [], 0
    for image_id in image_ids:
        image = coco.image(image_id)
        anns = coco.anns[image_id]
        samples = image_samples(anns)
        if not samples:
            without += 1
            continue
        name = paths.image_file_name(source, image_id)
        jobs.append(_ImageJob(image_id, source, paths.image_dir(coco_root, source) / name,
                              mask_files(coco_root, source, image_id)[0], image["height"],
                              image["width"], [mask_fields(a) for a in anns], samples))
    return jobs, without


class _Rows:
    """The per-image and per-sample tables of a file, collected while the images stream in."""

    def __init__(self):
        self.images = {"id": [], "height": [], "width": [], "source": []}
        self.samples = {"image_index": [], "objpos": [], "scale_provided": [], "num_people": []}
        self.joints, self.reference_bytes = [], 0

    def add(self, job):
        index = len(self.images["id"])
        for key, value in (("id", job.image_id), ("height", job.height),
                           ("width", job.width), ("source", SOURCES.index(job.source))):
            self.images[key].append(value)
        for s in job.samples:
            self.samples["image_index"].append(index)
            self.samples["objpos"].append(s.objpos)
            self.samples["scale_provided"].append(s.scale_provided)
            self.samples["num_people"].append(len(s.joints))
            self.joints.append(s.joints)
            # the reference pads images narrower than 64 px to 64 px
            self.reference_bytes += 6 * job.height * max(job.width, 64)

    def write(self, f, max_people):
        """Write the tables into f. Returns the samples group and its joints dataset: held
        open until the file closes, they keep the file byte-identical to the earlier writer
        (HDF5 lays out object headers by when the objects close)."""
        for key, dtype in (("id", np.int64), ("height", np.int32), ("width", np.int32),
                           ("source", np.uint8)):
            f["images"].create_dataset(key, data=np.asarray(self.images[key], dtype))
        f["images/source"].attrs["names"] = json.dumps(SOURCES)
        n = len(self.joints)
        g = f.create_group("samples")
        g.create_dataset("image_index", data=np.asarray(self.samples["image_index"], np.int32))
        g.create_dataset("objpos", data=np.asarray(self.samples["objpos"], np.float32)
                         .reshape(n, 2))
        g.create_dataset("scale_provided",
                         data=np.asarray(self.samples["scale_provided"], np.float32))
        g.create_dataset("num_people", data=np.asarray(self.samples["num_people"], np.int32))
        padded = g.create_dataset("joints", (n, max_people, NUM_PARTS, 3), np.float32,
                                  chunks=(min(n, 256), max_people, NUM_PARTS, 3) if n
                                  else None)
        for lo in range(0, n, 4096):
            block = np.zeros((min(4096, n - lo), max_people, NUM_PARTS, 3), np.float32)
            for k, j in enumerate(self.joints[lo:lo + 4096]):
                block[k, :len(j)] = j
            padded[lo:lo + len(block)] = block
        return g, padded


def write_hdf5(path, jobs, workers=None, params=None, split=""):
    """Write the compact HDF5 of the planned images to `path` (atomically); return a report."""
    start = time.time()
    skipped, notes = collections.Counter(), collections.Counter()
    max_people = max((len(s.joints) for j in jobs for s in j.samples), default=1)
    rows = _Rows()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            images = _ByteArray(f.create_group("images"))
            masks = _ByteArray(f.create_group("masks"))
            # in job order: the file's rows follow the plan whatever the number of workers
            results = map_jobs(_hdf5_job, jobs, workers, f"hdf5 {split}".strip())
            for job, (data, mask_bytes, job_notes, problem) in zip(jobs, results):
                notes.update(job_notes)
                if problem:
                    skipped[problem] += 1
                    log.warning("skipped %s image %d: %s", job.source, job.image_id, problem)
                    continue
                images.append(data)
                masks.append(mask_bytes)
                rows.add(job)
            images.close()
            masks.close()
            rows.still_open = rows.write(f, max_people)   # held: see _Rows.write
            summary = {"skipped": dict(skipped), "notes": dict(notes)}
            f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "split": split,
                            "params": json.dumps(params or {}, sort_keys=True),
                            "summary": json.dumps(summary, sort_keys=True),
                            "reference_layout_bytes": rows.reference_bytes,
                            "num_images": len(rows.images["id"]),
                            "num_samples": len(rows.joints)})
    size = Path(path).stat().st_size
    return {"path": str(path), "images": len(rows.images["id"]), "samples": len(rows.joints),
            "skipped": dict(skipped), "notes": dict(notes), "bytes": size,
            "reference_layout_bytes": rows.reference_bytes,
            "ratio": rows.reference_bytes / size if size else float("nan"),
            "seconds": time.time() - start}


# ----------------------------------------------------------------------------- layout check

def layout_problem(f):
    """What an open compact HDF5 lacks to be complete and readable by this version, or None:
    format attributes first, then the datasets and their lengths."""
    fmt = f.attrs.get("format")
    if fmt is None:
        return ("is not a compact COCO HDF5 (no 'format' attribute: written by another "
                "program, or its writing never finished)")
    if fmt != FORMAT:
        return f"is not a compact COCO HDF5 (format {fmt!r}, expected {FORMAT!r})"
    version = f.attrs.get("format_version")
    if version != FORMAT_VERSION:
        return f"has format version {version}, this code reads version {FORMAT_VERSION}"
    for name in ("images/bytes", "masks/bytes") + tuple(n for t in _TABLES for n in t[2]):
        if not isinstance(f.get(name), h5py.Dataset):
            return f"has no dataset '{name}' (written by another version?)"
    for name in _ATTRS:
        if name not in f.attrs:
            return f"has no attribute '{name}' (its writing never finished)"
    for attr, extra, names in _TABLES:
        for name in names:
            if len(f[name]) != int(f.attrs[attr]) + extra:
                return (f"has {len(f[name])} entries in '{name}' for {int(f.attrs[attr])} "
                        f"{attr[4:]} (damaged?)")
    for group in ("images", "masks"):
        offsets, data = f[f"{group}/offsets"], f[f"{group}/bytes"]
        if len(offsets) and int(offsets[-1]) != len(data):
            return (f"has {len(data)} bytes in '{group}/bytes' where its offsets end at "
                    f"{int(offsets[-1])} (damaged?)")
    return None


def _open_problem(e):
    """One phrase for h5py's error on opening a file."""
    text = str(e)
    m = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if m:
        return (f"is truncated ({m.group(1)} of {m.group(2)} bytes: its copy or writing "
                "did not finish)")
    if "file signature not found" in text:
        return "is not an HDF5 file"
    return f"cannot be read as HDF5 ({text})"


def completion_problem(path):
    """Why the compact HDF5 at `path` is not complete (a phrase), or None when it is."""
    try:
        with h5py.File(path, "r") as f:
            return layout_problem(f)
    except OSError as e:
        return _open_problem(e)


def stored_params(path):
    """The params a compact HDF5 was written with, or None if it is not one."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
            return json.loads(f.attrs["params"])
    except (OSError, KeyError, ValueError):
        return None


def _file_stamp(path):
    st = Path(path).stat()
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def generate_hdf5(coco_root, out_dir, train_only=False, val_holdout=VAL_HOLDOUT, workers=None,
                  overwrite=False):
    """Write <out_dir>/{train,val}_dataset_2014.h5; a file written with the same inputs and
    parameters is kept unless overwrite. Returns {split: report}."""
    coco_root, out_dir = Path(coco_root), Path(out_dir)
    cocos = {s: load_coco_annotations(paths.annotation_file(coco_root, s)) for s in SOURCES}
    for source in SOURCES:
        if not paths.image_dir(coco_root, source).is_dir():
            raise UserError(f"image folder not found: {paths.image_dir(coco_root, source)} "
                            "(run dataset/step1_download_coco2014.sh or "
                            "dataset/make_synthetic_coco.py)")
    held = held_out_val_image_ids(cocos["val2014"], val_holdout)
    held_set = set(held)
    log.info("split: %d of %d val2014 images held out (val_holdout=%d, at most half); "
             "training on train2014%s", len(held), len(cocos["val2014"].dataset["images"]),
             val_holdout, "" if train_only else " + the rest of val2014")
    parts = {"train": [("train2014", cocos["train2014"].image_ids)],
             "val": [("val2014", [i for i in held if cocos["val2014"].has_image(i)])]}
    if not train_only:
        parts["train"].append(("val2014", [i for i in cocos["val2014"].image_ids
                                           if i not in held_set]))
    stamps = {s: _file_stamp(cocos[s].path) for s in SOURCES}
    ensure_writable_dir(out_dir)     # after the inputs are checked: a failed start leaves none
    reports = {}
    for split in ("train", "val"):
        out = paths.hdf5_file(out_dir, split)
        remove_stale_temporaries(out)
        params = {"format_version": FORMAT_VERSION, "val_holdout": int(val_holdout),
                  "train_only": bool(train_only) if split == "train" else False,
                  "annotations": stamps, "coco_root": str(coco_root.resolve())}
        if out.is_file() and not overwrite and _is_kept(out, params, split):
            reports[split] = dict(summarize_hdf5(out), kept=True)
            continue
        jobs, without = [], 0
        for source, ids in parts[split]:
            j, w = plan_images(cocos[source], source, ids, coco_root)
            jobs += j
            without += w
        log.info("hdf5 %s: start, %d images with main people (%d samples), %d images without",
                 split, len(jobs), sum(len(j.samples) for j in jobs), without)
        try:
            report = write_hdf5(out, jobs, workers, params, split)
        except OSError as e:   # disk full, permissions: the temporary file is already gone
            raise UserError(f"cannot write {out}: {e}") from None
        report["images_without_main_person"] = without
        log.info("hdf5 %s: end, %d samples of %d images, %.1f MB (reference layout %.1f MB, "
                 "%.1fx smaller), %.1f s", split, report["samples"], report["images"],
                 report["bytes"] / 1e6, report["reference_layout_bytes"] / 1e6,
                 report["ratio"], report["seconds"])
        log.info("hdf5 %s: skipped %s; notes: %s", split, format_counts(
            collections.Counter(report["skipped"])), format_counts(
            collections.Counter(report["notes"])))
        reports[split] = report
    return reports


def _is_kept(out, params, split):
    """True when `out` is complete (its completion mark is there) and was written with
    `params`; an incomplete file is logged and written again."""
    problem = completion_problem(out)
    if problem:
        log.warning("hdf5 %s: %s %s: written again", split, out, problem)
        return False
    if stored_params(out) != params:
        return False
    log.info("hdf5 %s: %s already complete with these inputs, kept", split, out)
    return True


def summarize_hdf5(path):
    """Sizes and counts of a written compact HDF5 (for logs and benchmarks)."""
    with h5py.File(path, "r") as f:
        ref = int(f.attrs["reference_layout_bytes"])
        out = {"path": str(path), "images": int(f.attrs["num_images"]),
               "samples": int(f.attrs["num_samples"]), "reference_layout_bytes": ref}
        out.update(json.loads(f.attrs["summary"]))
    out["bytes"] = Path(path).stat().st_size
    out["ratio"] = ref / out["bytes"]
    return out


# ----------------------------------------------------------------------------- reading

class Sample(NamedTuple):
    image: np.ndarray          # (H, W, 3) uint8 BGR
    mask_miss: np.ndarray      # (H, W) uint8, 255 = compute the loss, 0 = ignore
    joints: np.ndarray         # (P, 18, 3) float32 CMU order, x, y, COCO visibility; main first
    objpos: np.ndarray         # (2,) float32 main person's bbox centre
    scale_provided: float      # main person's bbox height / 368
    image_id: int
    # image decoded at 1 / reduction of the stored size (ceil of each side): its pixel i is
    # centred on stored pixel reduction * i + (reduction - 1) / 2 (model.augment); the mask,
    # the joints and objpos stay in stored-size coordinates
    reduction: int = 1


def _decode_mask(data):
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


# libjpeg decodes JPEGs at 1/2, 1/4, 1/8 directly (scaled inverse DCT: far less work).
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}
_JPEG_MAGIC = b"\xff\xd8"


def decode_reduced(data, reduction):
    """(BGR image, reduction used) of stored image bytes decoded at 1/reduction, as
    model.images.decode_image would decode them (orientation ignored) then shrink them.
    Only JPEG data is decoded reduced; anything else (PNG data in a .jpg file) is decoded at
    full size, reduction 1: OpenCV would decode it whole and resize it anyway. None if the
    bytes do not decode."""
    data = np.asarray(data, np.uint8)
    if reduction not in _REDUCED_FLAGS or bytes(data[:2]) != _JPEG_MAGIC:
        return decode_image(data), 1
    flags = (IMREAD_FLAGS & ~cv2.IMREAD_COLOR) | _REDUCED_FLAGS[reduction]
    return cv2.imdecode(data, flags), reduction


def _decoded(decode, data):
    """decode(data), None if the bytes are not an image (OpenCV raises on empty bytes)."""
    try:
        return decode(data) if len(data) else None
    except cv2.error:
        return None


class Hdf5Samples:
    """Samples of a compact HDF5, one per main person.

    The small per-sample arrays are read once; the file itself is opened lazily in each
    process (an h5py handle must not cross a fork), so instances can be handed to workers."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"HDF5 file not found: {self.path} "
                            "(write it with training/generate_hdf5_coco2014.py)")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise UserError(f"HDF5 file {self.path} {_open_problem(e)}: {_WRITE_IT}") from None
        try:
            with f:
                problem = layout_problem(f)
                if problem:
                    raise UserError(f"HDF5 file {self.path} {problem}: {_WRITE_IT}")
                self._image_offsets = f["images/offsets"][:]
                self._mask_offsets = f["masks/offsets"][:]
                self._image_ids = f["images/id"][:].astype(np.int64)
                self._heights = f["images/height"][:]
                self._widths = f["images/width"][:]
                self._image_index = f["samples/image_index"][:]
                self._objpos = f["samples/objpos"][:]
                self._scale = f["samples/scale_provided"][:]
                self._num_people = f["samples/num_people"][:]
                self.attrs = {k: (v.item() if hasattr(v, "item") else v)
                              for k, v in f.attrs.items()}
        except OSError as e:
            raise UserError(f"cannot read HDF5 file {self.path}: {e}") from None
        self.image_ids = self._image_ids[self._image_index]
        self._handle = None

    def _datasets(self):
        if self._handle is None or self._handle[0] != os.getpid():
            f = h5py.File(self.path, "r")
            self._handle = (os.getpid(), f, f["images/bytes"], f["masks/bytes"],
                            f["samples/joints"])
        return self._handle[2:]

    def __len__(self):
        return len(self._image_index)

    def _index(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range ({n} samples)")
        return int(i) % n

    def placement(self, i):
        """(objpos, scale_provided) of sample i, without reading the file: enough to choose
        the sample's transform, and with it the reduction to decode at."""
        i = self._index(i)
        return self._objpos[i].copy(), float(self._scale[i])

    def __getitem__(self, i):
        return self.read(i)

    def read(self, i, reduction=1):
        """Sample i, its image decoded at 1/reduction (2, 4 or 8; JPEG data only, see
        decode_reduced: Sample.reduction says what was used)."""
        i = self._index(i)
        k = int(self._image_index[i])
        try:
            image_bytes, mask_bytes, joints = self._datasets()
            image, used = _decoded(
                lambda data: decode_reduced(data, reduction),
                image_bytes[self._image_offsets[k]:self._image_offsets[k + 1]]) or (None, 1)
            lo, hi = self._mask_offsets[k], self._mask_offsets[k + 1]
            mask = None if hi == lo else _decoded(_decode_mask, mask_bytes[lo:hi])
            people = joints[i, :self._num_people[i]]
        except OSError as e:
            raise UserError(f"cannot read sample {i} (image {self._image_ids[k]}) of HDF5 file "
                            f"{self.path}: {e}") from None
        if image is None:
            raise self._damaged(i, k, "image")
        if hi == lo:
            mask = np.full((self._heights[k], self._widths[k]), 255, np.uint8)
        elif mask is None or mask.shape != (self._heights[k], self._widths[k]):
            raise self._damaged(i, k, "mask")
        return Sample(image, mask, people, self._objpos[i].copy(), float(self._scale[i]),
                      int(self._image_ids[k]), used)

    def _damaged(self, i, k, what):
        return UserError(f"HDF5 file {self.path}: the {what} of record {k} (image "
                         f"{self._image_ids[k]}, sample {i}) does not decode: {_WRITE_IT}")

    def close(self):
        if self._handle is not None and self._handle[0] == os.getpid():
            self._handle[1].close()
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def compact_ratio(path):
    """Bytes of the reference layout (one raw 6 x H x W record per sample) / bytes of the file."""
    return summarize_hdf5(path)["ratio"]
