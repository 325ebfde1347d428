"""Training batches for Keras: HDF5 samples -> expert's effect -> augmentation -> targets.

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

Per sample: one affine transform M (model.augment; without augmentation a centred crop at
the target scale), the expert's effect (model.effects.PIXEL_EFFECTS) applied on the fly, so
one HDF5 serves all experts, and the 57-channel target of model.targets at stride 8.

The effect goes on the source image before the warp (params.effect_stage "source", the
default: as the fork's effected originals and the evaluation sets, the 30 px blur is scaled
with the image like the person), or on the warped crop ("crop"). The generalist's effect
MIXED gives each sample normal, dark or motion blur with equal probability, drawn from
np.random.default_rng([seed, epoch, i, MIXED_STREAM]): as reproducible as the augmentation,
and independent of it, so its crops are the experts' crops.

Reduced decoding (reduced_decode=True, HDF5 samples only): when M shrinks the image 2x or more
the JPEG is decoded at 1/2, 1/4 or 1/8 (model.augment.decode_reduction). The image is warped
by M folded with the reduced grid and the source effect is scaled with it (the 30 px blur is
30 / f px on a 1/f decode); mask and joints stay in stored-size coordinates under M, so the
targets are those of a full-size decode exactly and the crop differs by the decoder's
averaging only.

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
from functools import partial
from pathlib import Path

import cv2
import keras
import numpy as np

from model.augment import (AugmentParams, center_transform, decode_reduction, random_transform,
                           reduced_transform, transform_joints, warp_image, warp_mask)
from model.domains import DARK, EXPERT_EFFECTS, MIXED, MOTION_BLUR, NORMAL, TRAINED_MODELS
from model.draw import draw_people
from model.effects import BLUR_LENGTH, PIXEL_EFFECTS, darken, motion_blur
from model.errors import UserError
from model.hdf5 import Hdf5Samples
from model.skeleton import LIMBS, NUM_HEATMAPS, NUM_PAFS, NUM_PARTS, PART_COLORS
from model.targets import make_heatmaps, make_pafs, make_targets


def open_samples(data):
    """An HDF5 path -> model.hdf5.Hdf5Samples; a sequence of Samples is used as is."""
    if isinstance(data, (str, Path)):
        return Hdf5Samples(data)
    return data


# The fourth entry of the generalist's per-sample seed: a stream apart from the augmentation's.
MIXED_STREAM = 1
# darken is pointwise: its table over the 256 levels gives the same pixels, about 10x faster
# on a full-size image.
_DARK_TABLE = darken(np.arange(256, dtype=np.uint8))


def mixed_effect(seed, epoch, index):
    """The generalist's effect for sample `index` of `epoch`: one of EXPERT_EFFECTS, each with
    probability 1/3."""
    rng = np.random.default_rng([int(seed), int(epoch), int(index), MIXED_STREAM])
    return EXPERT_EFFECTS[int(rng.integers(len(EXPERT_EFFECTS)))]


def motion_blur_reduced(image, reduction):
    """The evaluation's horizontal BLUR_LENGTH px box blur of a full-size image, on the image
    decoded at 1/reduction: the same window in full-size pixels (columns X - L // 2 ..
    X + (L - 1) // 2 around full-size column X, model.effects.motion_blur), which is L / f
    reduced pixels long. A whole length is a plain box (cv2.blur; centred within a quarter of a
    reduced pixel of the full-size window); otherwise the end taps get their fractional
    overlap with the window."""
    if reduction == 1:
        return motion_blur(image)
    f, L = float(reduction), BLUR_LENGTH
    lo, hi = -(L // 2 + 0.5) / f, ((L - 1) // 2 + 0.5) / f    # window, reduced pixels
    if float(L / f).is_integer():
        n = L // reduction
        return cv2.blur(image, (n, 1), anchor=(n // 2, 0))
    taps = np.arange(math.floor(lo + 0.5), math.ceil(hi - 0.5) + 1)
    weights = np.clip(np.minimum(taps + 0.5, hi) - np.maximum(taps - 0.5, lo), 0, None)
    kernel = (weights / weights.sum()).astype(np.float32)[None]
    return cv2.sepFilter2D(image, -1, kernel, np.ones((1, 1), np.float32),
                           anchor=(int(-taps[0]), 0), borderType=cv2.BORDER_REFLECT_101)


def apply_training_effect(image, effect, reduction=1):
    """An expert's effect (NORMAL, DARK or MOTION_BLUR) on an image decoded at 1/reduction
    of its stored size (1 for a crop: there the blur is BLUR_LENGTH crop pixels)."""
    if effect == DARK:
        return cv2.LUT(image, _DARK_TABLE)
    if effect == MOTION_BLUR:
        return motion_blur_reduced(image, reduction)
    return PIXEL_EFFECTS[effect](image)


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
                 max_queue_size=10, stride=8, sigma=7.0, paf_thickness=1.0, epoch=0,
                 reduced_decode=True):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                         max_queue_size=max_queue_size)
        if effect not in TRAINED_MODELS:
            raise UserError(f"unknown training effect {effect!r}; choose from "
                            f"{sorted(TRAINED_MODELS)}")
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
        self.reduced_decode = bool(reduced_decode)
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

    def sample_effect(self, index, epoch=None):
        """The expert's effect sample `index` of `epoch` gets (MIXED: drawn per sample)."""
        if self.effect != MIXED:
            return self.effect
        return mixed_effect(self.seed, self.epoch if epoch is None else epoch, index)

    def transform(self, index, epoch, objpos, scale_provided):
        """(M, flip) of sample `index` in `epoch` (source -> crop, stored-size pixels)."""
        if self.augment:
            rng = np.random.default_rng([self.seed, epoch, int(index)])
            return random_transform(rng, objpos, scale_provided, self.params)
        return center_transform(objpos, scale_provided, self.params), False

    def read(self, index, epoch):
        """(Sample, M, flip): the transform is chosen from the sample's placement first, so
        an HDF5 image is decoded at the reduction it allows."""
        read = getattr(self.samples, "read", None)
        if self.reduced_decode and read is not None:
            M, flip = self.transform(index, epoch, *self.samples.placement(int(index)))
            return read(int(index), decode_reduction(M)), M, flip
        s = self.samples[int(index)]
        return (s, *self.transform(index, epoch, s.objpos, s.scale_provided))

    def crop_image(self, s, M, effect):
        """The (S, S, 3) uint8 crop of Sample s under M with `effect` at params.effect_stage."""
        reduction = getattr(s, "reduction", 1)
        if self.params.effect_stage == "crop":
            crop = warp_image(s.image, reduced_transform(M, reduction), self.params)
            return apply_training_effect(crop, effect)
        image = apply_training_effect(s.image, effect, reduction)
        return warp_image(image, reduced_transform(M, reduction), self.params)

    def _crop(self, index, epoch):
        s, M, flip = self.read(index, epoch)
        effect = self.sample_effect(index, epoch)
        image = self.crop_image(s, M, effect)
        return (image, grid_mask(s.mask_miss, M, self.params, self.stride),
                transform_joints(s.joints, M, flip), M, flip, s.image_id, effect)

    def sample(self, index, epoch=None):
        """One dataset sample as the network sees it: dict of image (S,S,3) uint8 with the
        effect applied, mask (g,g) float32, targets (g,g,57) float32 NOT yet masked, joints
        (P,18,3) in crop pixels, M (2x3, stored-size source -> crop), flip, image_id, effect
        (the one applied)."""
        epoch = self.epoch if epoch is None else int(epoch)
        image, mask, joints, M, flip, image_id, effect = self._crop(index, epoch)
        targets = make_targets(joints, (self.grid, self.grid), self.stride, self.sigma,
                               self.paf_thickness)
        return {"image": image, "mask": mask, "targets": targets, "joints": joints, "M": M,
                "flip": flip, "image_id": image_id, "effect": effect}

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
            image, mask, joints = self._crop(index, epoch)[:3]
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
                       params=AugmentParams(), reduced_decode=True):
    """Single-process speed of PoseBatches on `data` (HDF5 path or samples), OpenCV limited
    to one thread: samples per second of wall time and per second of this process's CPU
    time (= per core), and the CPU time per sample of each stage, measured in a second pass
    over the same samples (params.effect_stage says where the effect goes; reduced_decode as
    in PoseBatches, with the share of samples it decoded at 1/2, 1/4, 1/8)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        batches = PoseBatches(data, batch_size, effect=effect, num_stages=6, params=params,
                              seed=seed, reduced_decode=reduced_decode)
        n_batches = len(batches) if num_batches is None else min(num_batches, len(batches))
        batches[0]                      # warm-up: file open, first allocations
        wall, cpu = time.perf_counter(), time.process_time()
        samples = sum(len(batches[i][0]["image"]) for i in range(n_batches))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stages, reductions = _stage_times(batches, samples)
        batches.close()
    finally:
        cv2.setNumThreads(threads)
    per_sample_ms = {k: 1e3 * v / samples for k, v in stages.items()}
    return {"effect": effect, "effect_stage": params.effect_stage,
            "reduced_decode": bool(reduced_decode), "crop_size": params.crop_size,
            "batch_size": batch_size, "seed": seed, "samples": samples, "wall_s": wall,
            "cpu_s": cpu, "samples_per_s": samples / wall, "samples_per_cpu_s": samples / cpu,
            "stage_cpu_ms_per_sample": per_sample_ms,
            "other_cpu_ms_per_sample": 1e3 * cpu / samples - sum(per_sample_ms.values()),
            "decode_reductions": {str(f): n / samples for f, n in sorted(reductions.items())}}


def _stage_times(batches, samples):
    """CPU seconds of each stage over the first `samples` samples of epoch 0, in the order
    PoseBatches runs them, and how many samples were decoded at each reduction."""
    stages = dict.fromkeys(("read_decode", "effect", "warp_image", "mask", "targets"), 0.0)
    reductions = {}
    clock = [time.process_time()]

    def lap(stage):
        now = time.process_time()
        stages[stage] += now - clock[0]
        clock[0] = now

    g, params = batches.grid, batches.params
    for index in batches.order[:samples]:
        clock[0] = time.process_time()
        s, M, flip = batches.read(index, 0)
        lap("read_decode")
        reductions[s.reduction] = reductions.get(s.reduction, 0) + 1
        effect, M_image = batches.sample_effect(index, 0), reduced_transform(M, s.reduction)
        if params.effect_stage == "source":
            image = apply_training_effect(s.image, effect, s.reduction)
            lap("effect")
            warp_image(image, M_image, params)
            lap("warp_image")
        else:
            crop = warp_image(s.image, M_image, params)
            lap("warp_image")
            apply_training_effect(crop, effect)
            lap("effect")
        grid_mask(s.mask_miss, M, params, batches.stride)
        lap("mask")
        make_targets(transform_joints(s.joints, M, flip), (g, g))
        lap("targets")
    return stages, reductions


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
        # The generator runs in this thread, so views are made here: set_epoch is not
        # thread-safe.
        calls = (partial(self._view(i // self.per_pass).__getitem__, i % self.per_pass)
                 for i in range(start, stop))
        yield from zip(range(start, stop), self.read_ahead(calls))

    def read_ahead(self, calls):
        """Yield the results of `calls` (zero-argument functions, taken in this thread) in
        their order, `prefetch` of them running ahead in the workers (none: one by one)."""
        if self._pool is None:
            for call in calls:
                yield call()
            return
        pending = deque()
        try:
            for call in calls:
                pending.append(self._pool.submit(call))
                if len(pending) > self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
