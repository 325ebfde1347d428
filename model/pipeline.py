"""Training batches for Keras: HDF5 samples -> augmentation -> expert's effect -> targets.

`PoseBatches` is a keras.utils.PyDataset. Batch k of an epoch holds the samples
order[k*B:(k+1)*B], where order is a permutation seeded by (seed, epoch) (or the identity
without shuffle), and sample i of epoch e is augmented with
np.random.default_rng([seed, e, i]). A batch is therefore a pure function of
(seed, epoch, batch index), whatever the number of workers, threads or processes, and
whatever order Keras requests batches in. (Keras' fit() additionally shuffles the order of
whole batches with Python's global `random` unless called with shuffle=False; the samples are
already shuffled here, so pass shuffle=False for a reproducible run.) Epochs are counted by
on_epoch_begin(), which fit() calls once per epoch before it requests that epoch's batches:
the first fit() epoch uses the epoch given at construction, each later one the next.
set_epoch() jumps to an epoch (resuming a run, or iterating by hand).

Per sample: one affine transform (model.augment; without augmentation a centred crop at the
target scale), the effect model.effects.PIXEL_EFFECTS[effect] applied to the augmented crop,
so one HDF5 serves all experts, and the 57-channel target of model.targets at stride 8.

Mask: the crop's mask_miss (255 = compute the loss) averaged over each stride x stride block
(cv2.INTER_AREA with an integer factor is an exact block mean) and divided by 255: a cell
whose pixels are partly ignored counts in the loss with that fraction instead of being
rounded in or out. Images without any ignored pixel skip the warp entirely (all ones).

A batch is (inputs, targets):
  inputs  = {"image": float32 (B, S, S, 3) BGR 0..255, "mask": float32 (B, S/8, S/8, 1)}
  targets = {"stage{k}_L1": PAF target * mask (B, S/8, S/8, 38),
             "stage{k}_L2": heatmap target * mask (B, S/8, S/8, 19)} for k = 1..num_stages,
the names of the training model's outputs (each is the same array: every stage learns the
same target).

BatchStream reads a PoseBatches across epochs for the training loop: batch i of the run is
batch i % P of data pass i // P (P = full batches per pass), so the whole sample stream of a
run is a pure function of (seed, i) and a run resumed at iteration i continues it exactly.
"""
import copy
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import keras
import numpy as np

from model.augment import (AugmentParams, center_transform, random_transform, transform_joints,
                           warp_image, warp_mask)
from model.domains import MOTION_BLUR, NORMAL
from model.draw import draw_people
from model.effects import PIXEL_EFFECTS
from model.errors import UserError
from model.hdf5 import Hdf5Samples
from model.skeleton import LIMBS, NUM_HEATMAPS, NUM_PAFS, NUM_PARTS, PART_COLORS
from model.targets import make_heatmaps, make_pafs, make_targets


def open_samples(data):
    """An HDF5 path -> model.hdf5.Hdf5Samples; a sequence of Samples is used as is."""
    if isinstance(data, (str, Path)):
        return Hdf5Samples(data)
    return data


def grid_mask(mask_miss, M, params, stride):
    """(S/stride, S/stride) float32 in [0, 1]: fraction of each cell's crop pixels where the
    loss is computed."""
    g = params.crop_size // stride
    if mask_miss.min() == 255:      # nothing ignored, and the crop's border is "compute" too
        return np.ones((g, g), np.float32)
    crop = warp_mask(mask_miss, M, params)
    return cv2.resize(crop, (g, g), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


class PoseBatches(keras.utils.PyDataset):
    """Batches of augmented samples and their masked targets; see the module docstring."""

    def __init__(self, data, batch_size, effect=NORMAL, num_stages=6, params=AugmentParams(),
                 seed=0, augment=True, shuffle=True, workers=1, use_multiprocessing=False,
                 max_queue_size=10, stride=8, sigma=7.0, paf_thickness=1.0, epoch=0):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        if effect not in PIXEL_EFFECTS:
            raise UserError(f"unknown training effect {effect!r}; choose from "
                            f"{sorted(PIXEL_EFFECTS)}")
        if int(batch_size) < 1 or int(num_stages) < 1:
            raise UserError(f"batch_size and num_stages must be >= 1, got {batch_size}, "
                            f"{num_stages}")
        if params.crop_size % stride:
            raise UserError(f"crop_size {params.crop_size} is not a multiple of stride {stride}")
        self.samples = open_samples(data)
        if len(self.samples) == 0:
            raise UserError("the dataset has no samples")
        self.batch_size = int(batch_size)
        self.effect = effect
        self.num_stages = int(num_stages)
        self.params = params
        self.seed = int(seed)
        self.augment = bool(augment)
        self.shuffle = bool(shuffle)
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.paf_thickness = float(paf_thickness)
        self.grid = params.crop_size // self.stride
        self.set_epoch(epoch)

    def set_epoch(self, epoch):
        """Make `epoch` the one whose batches __getitem__ returns (also for the next
        on_epoch_begin)."""
        epoch, n = int(epoch), len(self.samples)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        # One assignment, so a worker thread never sees one epoch's order with another's
        # number.
        self._state = (epoch, order)
        self._begun = False

    @property
    def epoch(self):
        return self._state[0]

    @property
    def order(self):
        """Dataset indices in this epoch's order: batch k holds order[k*B:(k+1)*B]."""
        return self._state[1]

    def on_epoch_begin(self):
        # Keras' fit() calls on_epoch_end() once more before the first epoch (when it resets
        # its iterator) but on_epoch_begin() exactly once per epoch, so epochs are counted
        # here: the first epoch is the one set at construction (or by set_epoch).
        if self._begun:
            self.set_epoch(self.epoch + 1)
        self._begun = True

    def __len__(self):
        return math.ceil(len(self.samples) / self.batch_size)

    def _crop(self, index, epoch):
        s = self.samples[int(index)]
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, int(index)])
            M, flip = random_transform(rng, s.objpos, s.scale_provided, self.params)
        else:
            M, flip = center_transform(s.objpos, s.scale_provided, self.params), False
        image = PIXEL_EFFECTS[self.effect](warp_image(s.image, M, self.params))
        return (image, grid_mask(s.mask_miss, M, self.params, self.stride),
                transform_joints(s.joints, M, flip), M, flip, s.image_id)

    def sample(self, index, epoch=None):
        """One dataset sample as the network sees it: dict of image (S,S,3) uint8 with the
        effect applied, mask (g,g) float32, targets (g,g,57) float32 NOT yet masked, joints
        (P,18,3) in crop pixels, M (2x3, source -> crop), flip, image_id."""
        epoch = self.epoch if epoch is None else int(epoch)
        image, mask, joints, M, flip, image_id = self._crop(index, epoch)
        targets = make_targets(joints, (self.grid, self.grid), self.stride, self.sigma,
                               self.paf_thickness)
        return {"image": image, "mask": mask, "targets": targets, "joints": joints, "M": M,
                "flip": flip, "image_id": image_id}

    def __getitem__(self, batch_index):
        if not 0 <= batch_index < len(self):
            raise IndexError(f"batch {batch_index} out of range ({len(self)} batches)")
        epoch, order = self._state
        indices = order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
        S, g, n = self.params.crop_size, self.grid, len(indices)
        images = np.empty((n, S, S, 3), np.float32)
        masks = np.empty((n, g, g, 1), np.float32)
        pafs = np.empty((n, g, g, NUM_PAFS), np.float32)
        heatmaps = np.empty((n, g, g, NUM_HEATMAPS), np.float32)
        for k, index in enumerate(indices):
            image, mask, joints, _, _, _ = self._crop(index, epoch)
            images[k] = image
            masks[k, ..., 0] = mask
            make_pafs(joints, (g, g), self.stride, self.paf_thickness, out=pafs[k])
            make_heatmaps(joints, (g, g), self.stride, self.sigma, out=heatmaps[k])
        pafs *= masks
        heatmaps *= masks
        outputs = {}
        for stage in range(1, self.num_stages + 1):
            outputs[f"stage{stage}_L1"] = pafs
            outputs[f"stage{stage}_L2"] = heatmaps
        return {"image": images, "mask": masks}, outputs

    def close(self):
        close = getattr(self.samples, "close", None)
        if close is not None:
            close()


def render_sample(item, stride=8):
    """A picture of one sample as the network sees it (for training/inspect_dataset.py):
    four S x S panels side by side, BGR uint8:
      1. the augmented crop with the effect, its skeletons, ignored cells tinted red;
      2. the 18 part heatmaps, each in its part's colour, over the dimmed crop;
      3. the 19 PAFs, each limb in its end part's colour with arrows along the field;
      4. the background channel (white = 1) and the mask (dark red = ignored).
    Maps are upsampled with cv2.resize (cell j lands at pixel j*stride + (stride-1)/2)."""
    image, mask, targets = item["image"], item["mask"], item["targets"]
    S = image.shape[0]
    up = lambda m: cv2.resize(m, (S, S), interpolation=cv2.INTER_LINEAR)
    ignored = up(mask)[..., None] < 0.5
    colors = np.asarray(PART_COLORS, np.float32)

    crop = draw_people(image, item["joints"], threshold=0)
    crop = np.where(ignored, (0.5 * crop + [0, 0, 127]).astype(np.uint8), crop)

    parts = up(targets[..., NUM_PAFS:NUM_PAFS + NUM_PARTS])             # (S, S, 18)
    strongest = parts.argmax(axis=2)
    value = parts.max(axis=2)[..., None]
    heat = (0.35 * image + value * colors[strongest]).clip(0, 255).astype(np.uint8)

    pafs = targets[..., :NUM_PAFS]
    length = np.hypot(pafs[..., 0::2], pafs[..., 1::2])                # (g, g, 19)
    limb_color = colors[LIMBS[:, 1]]
    paf = (0.35 * image + up(np.minimum(length, 1) @ limb_color).clip(0, 255)).clip(0, 255)
    paf = paf.astype(np.uint8)
    for i, j, limb in zip(*np.nonzero(length > 0.3)):
        start = np.array([j * stride + (stride - 1) / 2, i * stride + (stride - 1) / 2])
        end = start + 0.8 * stride * pafs[i, j, 2 * limb:2 * limb + 2]
        cv2.arrowedLine(paf, tuple(int(v) for v in np.round(start)),
                        tuple(int(v) for v in np.round(end)), (255, 255, 255), 1,
                        cv2.LINE_AA, tipLength=0.4)

    background = (255 * up(targets[..., -1])).clip(0, 255).astype(np.uint8)
    background = cv2.cvtColor(background, cv2.COLOR_GRAY2BGR)
    background = np.where(ignored, np.array([0, 0, 110], np.uint8), background)

    panel = np.concatenate([crop, heat, paf, background], axis=1)
    names = ("crop + skeletons (red: ignored)", "part heatmaps", "PAFs", "background / mask")
    for k, name in enumerate(names):
        cv2.putText(panel, name, (k * S + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def measure_throughput(data, effect=MOTION_BLUR, batch_size=10, num_batches=None, seed=0,
                       params=AugmentParams()):
    """Single-process speed of PoseBatches on `data` (HDF5 path or samples), OpenCV limited
    to one thread: samples per second of wall time and per second of this process's CPU
    time (= per core), and the CPU time per sample of each stage, measured in a second pass
    over the same samples."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        batches = PoseBatches(data, batch_size, effect=effect, num_stages=6, params=params,
                              seed=seed)
        n_batches = len(batches) if num_batches is None else min(num_batches, len(batches))
        batches[0]                      # warm-up: file open, first allocations
        wall, cpu = time.perf_counter(), time.process_time()
        samples = sum(len(batches[i][0]["image"]) for i in range(n_batches))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stages = dict.fromkeys(("read_decode", "warp_image", "effect", "mask", "targets"), 0.0)
        clock = [time.process_time()]

        def lap(stage):
            now = time.process_time()
            stages[stage] += now - clock[0]
            clock[0] = now

        g = batches.grid
        for index in batches.order[:samples]:
            clock[0] = time.process_time()
            s = batches.samples[int(index)]
            lap("read_decode")
            rng = np.random.default_rng([seed, 0, int(index)])
            M, flip = random_transform(rng, s.objpos, s.scale_provided, params)
            image = warp_image(s.image, M, params)
            lap("warp_image")
            PIXEL_EFFECTS[effect](image)
            lap("effect")
            grid_mask(s.mask_miss, M, params, batches.stride)
            lap("mask")
            make_targets(transform_joints(s.joints, M, flip), (g, g))
            lap("targets")
        batches.close()
    finally:
        cv2.setNumThreads(threads)
    per_sample_ms = {k: 1e3 * v / samples for k, v in stages.items()}
    return {"effect": effect, "crop_size": params.crop_size, "batch_size": batch_size,
            "seed": seed, "samples": samples, "wall_s": wall, "cpu_s": cpu,
            "samples_per_s": samples / wall, "samples_per_cpu_s": samples / cpu,
            "stage_cpu_ms_per_sample": per_sample_ms,
            "other_cpu_ms_per_sample": 1e3 * cpu / samples - sum(per_sample_ms.values())}


class BatchStream:
    """Batch i of the run = batch i % P of data pass i // P (P = full batches per pass), read
    ahead by `workers` threads (cv2 and h5py release the GIL). A batch depends on nothing
    but (seed, i), whatever the workers. Partial batches are never used, so every step has
    the same batch size (Caffe's normalisation) and one traced graph."""

    def __init__(self, batches, workers=1, prefetch=None):
        self.batches = batches
        self.per_pass = len(batches.samples) // batches.batch_size
        if self.per_pass < 1:
            raise UserError(f"batch size {batches.batch_size} is larger than the data "
                            f"({len(batches.samples)} samples)")
        self.workers = max(0, int(workers))
        self.prefetch = prefetch or max(2, 2 * self.workers)
        self._views = {}
        self._pool = ThreadPoolExecutor(self.workers) if self.workers else None
        self._pending = deque()

    def _view(self, data_pass):
        view = self._views.get(data_pass)
        if view is None:
            # A shallow copy shares the opened samples; set_epoch gives it its own order.
            view = copy.copy(self.batches)
            view.set_epoch(data_pass)
            self._views = {p: v for p, v in self._views.items() if p >= data_pass - 1}
            self._views[data_pass] = view
        return view

    def get(self, i):
        data_pass, index = divmod(int(i), self.per_pass)
        return self._view(data_pass)[index]

    def iterate(self, start, stop):
        """Yield (i, batch) for i in [start, stop)."""
        if self._pool is None:
            for i in range(start, stop):
                yield i, self.get(i)
            return
        self._pending.clear()
        nxt = start
        try:
            while nxt < stop and len(self._pending) < self.prefetch:
                # Views are made in this thread: set_epoch is not thread-safe.
                self._view(nxt // self.per_pass)
                self._pending.append((nxt, self._pool.submit(self.get, nxt)))
                nxt += 1
            while self._pending:
                i, future = self._pending.popleft()
                if nxt < stop:
                    self._view(nxt // self.per_pass)
                    self._pending.append((nxt, self._pool.submit(self.get, nxt)))
                    nxt += 1
                yield i, future.result()
        finally:
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
