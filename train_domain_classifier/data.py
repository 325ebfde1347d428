"""Images for the domain classifier: the split, the effected-image cache, the datasets.

Classes are the experts' effects in model.domains.EXPERT_EFFECTS order: 0 normal, 1 dark,
2 motion blur. Every image is shown once per class (exactly balanced). The effect is applied
by model.effects at the image's ORIGINAL resolution, as the evaluation sets are made (a 30 px
blur at full size is only a few pixels at 112), and only then resized.

Split: training and validation images both come from train2014 (seeded, `val_fraction` of
the images held out for validation). The evaluation sets val2014_random1k* are drawn from
val2014, so neither training nor validation images can be in them.

Two input modes (recorded in every checkpoint, so validation and prediction use the mode the
network was trained with):
  "resize" (the fork's): the whole image resized to input_size x input_size. Training adds a
           mild random resized crop from a cache stored 1.25x larger than the input.
  "crop":  the whole image resized to a larger "view" (view_size, default 2 x input_size).
           Training takes random input_size x input_size crops of the view, pixel for pixel
           (no resampling, so a blur keeps its width in pixels); validation and prediction feed
           the whole view to the fully convolutional backbone (global average pooling), which
           sees the blur at the same scale as in training. At 64 px input a 30 px blur on a
           500 px wide image is about 4 px wide in "resize" mode, about 8 px in the 128 px view.

Images are read by model.images, the reader of every stage (the stored pixel grid, EXIF
orientation ignored), so the classifier sees the pixels the pose network sees. Decoding,
applying the effect and resizing are done once per image and stored in a uint8
cache file (N, 3 classes, S, S, 3 RGB) that every epoch, every DataLoader worker and every
DDP process memory-maps.
"""
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model import files, paths
from model.domains import EFFECT_NAMES, EXPERT_EFFECTS, NORMAL
from model.errors import UserError
from model.effects import BLUR_LENGTH, DARK_FACTOR, PIXEL_EFFECTS
from model.images import read_image
from model.torch_compat import torchvision

log = logging.getLogger("domain_classifier")

CLASS_EFFECTS = EXPERT_EFFECTS                 # normal, dark, motion blur
CLASS_NAMES = tuple(EFFECT_NAMES[e] for e in CLASS_EFFECTS)
NUM_CLASSES = len(CLASS_EFFECTS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CACHE_SCALE = 1.25
# Mild random resized crop: area 64-100 % of the (1.25x) cached image, aspect 3:4 to 4:3.
CROP_SCALE = (0.64, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
# 2: images read by model.images (EXIF orientation ignored, where version 1 applied it).
CACHE_VERSION = 2
TRAIN_SPLIT = "train2014"
INPUT_MODES = ("resize", "crop")
VIEW_SCALE = 2           # crop mode: the default view is 2 x input_size


def resolve_view_size(input_mode, input_size, view_size=0):
    """The whole-image size of crop mode (0 = VIEW_SCALE x input_size); input_size for resize."""
    if input_mode not in INPUT_MODES:
        raise UserError(f"unknown input mode {input_mode!r}; choose from {', '.join(INPUT_MODES)}")
    if input_mode == "resize":
        return input_size
    view_size = view_size or VIEW_SCALE * input_size
    if view_size < input_size:
        raise UserError(f"--view_size {view_size} is smaller than --input_size {input_size}")
    return view_size


def cache_size(input_mode, input_size, view_size, train):
    """Side of the cached square images of a training or validation cache."""
    if input_mode == "crop":
        return resolve_view_size(input_mode, input_size, view_size)
    resolve_view_size(input_mode, input_size)
    return int(round(input_size * TRAIN_CACHE_SCALE)) if train else input_size


def input_mode(state):
    """A checkpoint's input mode (checkpoints written before input modes existed: "resize")."""
    return state.get("input_mode", state.get("config", {}).get("input_mode", "resize"))


def eval_size(state):
    """Side of the images a checkpoint's network is fed at validation and prediction."""
    return resolve_view_size(input_mode(state), state["input_size"],
                             state.get("view_size", state.get("config", {}).get("view_size", 0)))


@dataclass(frozen=True)
class ImageRef:
    image_id: int
    path: str


def load_image_refs(coco_root, data_type):
    """Images listed in the annotation file of `data_type` that exist on disk.

    Image ids come from the annotation file, never from file names. Listed images whose file
    is missing are skipped with a warning and a count."""
    ann_path = paths.annotation_file(coco_root, data_type)
    data = files.read_json(ann_path, "annotation file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise UserError(f"annotation file has no 'images' list: {ann_path}")
    folder = paths.image_dir(coco_root, data_type)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    present = set(os.listdir(folder))
    refs, missing = [], 0
    for entry in images:
        try:
            image_id = int(entry["id"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"an image entry without a valid 'id' in {ann_path}") from None
        name = entry.get("file_name") or paths.image_file_name(data_type, image_id)
        if name in present:
            refs.append(ImageRef(image_id, str(folder / name)))
        else:
            missing += 1
    if missing:
        log.warning("%d of %d images listed in %s are missing from %s: skipped",
                    missing, len(images), ann_path.name, folder)
    if not refs:
        raise UserError(f"no images of {ann_path.name} found in {folder} (empty data folder?)")
    return refs


def split_images(refs, val_fraction, seed, max_images=0):
    """Seeded split of `refs` into (train, validation), both sorted by image id.

    max_images > 0 first draws that many images (seeded) to train on a subset."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val_fraction must be between 0 and 1, got {val_fraction}")
    refs = sorted(refs, key=lambda r: r.image_id)
    order = np.random.default_rng(seed).permutation(len(refs))
    if max_images > 0:
        order = order[:max_images]
    if len(order) < 2:
        raise UserError(f"need at least 2 images to split into training and validation, "
                        f"got {len(order)}")
    n_val = min(max(1, int(round(val_fraction * len(order)))), len(order) - 1)
    val = sorted((refs[i] for i in order[:n_val]), key=lambda r: r.image_id)
    train = sorted((refs[i] for i in order[n_val:]), key=lambda r: r.image_id)
    return train, val


def prepare_image(bgr, effect, size):
    """Effect at the original resolution, then an area resize to size x size, as RGB."""
    image = PIXEL_EFFECTS[effect](bgr)
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def normalise(chw_uint8):
    """uint8 (3, H, W) RGB -> float32 normalised with ImageNet's per-channel statistics."""
    x = chw_uint8.float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------- the cache
class _PrepareDataset(Dataset):
    def __init__(self, refs, size):
        self.refs, self.size = refs, size

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        bgr = read_image(self.refs[i].path)
        if bgr is None:
            return i, None
        return i, np.stack([prepare_image(bgr, e, self.size) for e in CLASS_EFFECTS])


def _keep(item):
    return item


def cache_key(refs, size):
    """Hash of everything that decides the cache's content, file sizes and times included."""
    h = hashlib.sha1()
    h.update(json.dumps({"version": CACHE_VERSION, "size": size, "effects": CLASS_EFFECTS,
                         "dark": DARK_FACTOR, "blur": BLUR_LENGTH}).encode())
    for r in refs:
        try:
            st = os.stat(r.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        h.update(f"{r.image_id}|{os.path.abspath(r.path)}|{stamp}\n".encode())
    return h.hexdigest()[:16]


def cache_files(refs, size, cache_dir):
    key = cache_key(refs, size)
    return Path(cache_dir) / f"images_{size}px_{key}.npy", Path(cache_dir) / f"images_{size}px_{key}.json"


def open_cache(refs, size, cache_dir, workers=0, build=True, desc="cache"):
    """Return (npy path, ok mask per image), building the cache first if needed.

    Undecodable images get ok = False (skipped and counted). With build=False a missing cache
    is an error (DDP ranks other than 0 wait for rank 0 to build it)."""
    npy, meta = cache_files(refs, size, cache_dir)
    if meta.is_file() and npy.is_file():
        ok = np.asarray(files.read_json(meta, "cache index")["ok"], bool)
        log.info("%s: %d images at %d px from %s", desc, len(refs), size, npy)
        return npy, ok
    if not build:
        raise UserError(f"image cache {npy} was not built")
    start = time.time()
    log.info("%s: preparing %d images x %d classes at %d px -> %s",
             desc, len(refs), NUM_CLASSES, size, npy)
    ok = np.zeros(len(refs), bool)
    loader = DataLoader(_PrepareDataset(refs, size), batch_size=None, shuffle=False,
                        num_workers=workers, collate_fn=_keep, worker_init_fn=_quiet_worker)
    with files.atomic_path(npy) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(len(refs), NUM_CLASSES, size, size, 3))
        for i, stack in tqdm(loader, total=len(refs), desc=desc, unit="img", leave=False):
            if stack is not None:
                array[i] = stack
                ok[i] = True
        array.flush()
        del array
    bad = int((~ok).sum())
    if bad:
        log.warning("%s: %d of %d images could not be decoded: skipped", desc, bad, len(refs))
    files.write_json(meta, {"ok": ok.tolist(), "image_ids": [r.image_id for r in refs],
                            "paths": [r.path for r in refs], "size": size,
                            "classes": list(CLASS_NAMES), "skipped": bad})
    log.info("%s: done in %.1f s (%d usable, %d skipped)", desc, time.time() - start,
             int(ok.sum()), bad)
    return npy, ok


def _quiet_worker(worker_id):
    cv2.setNumThreads(1)   # workers already run in parallel; OpenCV threads would oversubscribe


# ----------------------------------------------------------------------------- datasets
class EffectDataset(Dataset):
    """(image, class) pairs from a cache: item i is image rows[i // 3] with effect i % 3.

    resize mode: training takes a mild random resized crop, evaluation the image resized to
    input_size. crop mode: training takes a random input_size crop without resampling,
    evaluation the whole cached view."""

    def __init__(self, cache_file, rows, input_size, train, input_mode="resize"):
        if input_mode not in INPUT_MODES:
            raise UserError(f"unknown input mode {input_mode!r}")
        self.cache_file = str(cache_file)
        self.rows = np.asarray(rows, np.int64)
        self.input_size = input_size
        self.train = train
        self.input_mode = input_mode
        self._array = None  # opened lazily so the dataset pickles into workers cheaply
        # Horizontal flips keep the horizontal motion blur horizontal; no rotations for that
        # reason.
        self.crop = torchvision.transforms.RandomResizedCrop(
            input_size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True)

    def __len__(self):
        return len(self.rows) * NUM_CLASSES

    def labels(self):
        return np.tile(np.arange(NUM_CLASSES), len(self.rows))

    @property
    def array(self):
        if self._array is None:
            self._array = np.load(self.cache_file, mmap_mode="r")
        return self._array

    def __getitem__(self, i):
        row, label = divmod(int(i), NUM_CLASSES)
        view = self.array[self.rows[row], label]
        if self.input_mode == "crop":
            if self.train:
                s = self.input_size
                y, x = (int(v) for v in torch.randint(0, view.shape[0] - s + 1, (2,)))
                view = view[y:y + s, x:x + s]
            image = torch.from_numpy(np.array(view)).permute(2, 0, 1)
            if self.train and torch.rand(()) < 0.5:
                image = image.flip(-1)
            return normalise(image), label
        image = torch.from_numpy(np.array(view)).permute(2, 0, 1)
        if self.train:
            image = self.crop(image)
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
        elif image.shape[-1] != self.input_size:
            image = torchvision.transforms.functional.resize(
                image, [self.input_size, self.input_size], antialias=True)
        return normalise(image), label

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_array"] = None
        return state


class ImageFileDataset(Dataset):
    """Images decoded from files as they are (no effect added): the evaluation sets, resized
    to `input_size`: a checkpoint's eval_size(), its view in crop mode.

    Item: (normalised image, index, ok); ok is False for an undecodable file."""

    def __init__(self, refs, input_size):
        self.refs, self.input_size = refs, input_size

    def __len__(self):
        return len(self.refs)

    def __getitem__(self, i):
        bgr = read_image(self.refs[i].path)
        if bgr is None:
            return torch.zeros(3, self.input_size, self.input_size), i, False
        rgb = prepare_image(bgr, NORMAL, self.input_size)
        return normalise(torch.from_numpy(rgb).permute(2, 0, 1)), i, True


def worker_init_fn(worker_id):
    """Seed NumPy from torch's per-worker seed (itself derived from the loader's generator)."""
    _quiet_worker(worker_id)
    np.random.seed(torch.initial_seed() % 2**32)
