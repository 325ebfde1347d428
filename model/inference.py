"""Images -> network maps -> people: preprocessing, the resolution step, flips, scales and a
batched, pipelined run over an evaluation set (docs/recipe.md section 6).

Preprocessing: the image (BGR uint8) is resized by the scale s (cv2.resize, fx = fy = s,
cubic), padded right and bottom to a multiple of 8 with 128 (which the network's x/256 - 0.5
turns into 0) and fed as float32 0..255.

Scales: `scale_mode="native"` (the default, the fork's single scale) uses s = m for every m
of `scale_search`, so the default [1.0] feeds the image at its native resolution.
`scale_mode="boxsize"` uses s = m * boxsize / image height (section 6's multi-scale test, with
boxsize the configuration's training crop, CMU's 368): a network trained on people about
0.6 * input_size tall (the small configuration: 184) sees people of the size it learnt.

The resolution step: the network's stride-8 maps of the padded input are resampled straight
onto a working grid of ceil(H / r) x ceil(W / r) pixels for an image of H x W and
`resolution` r: one cv2.resize whose scale maps cell j's centre (input pixel 8j + 3.5, the
convention of model.targets) onto the image pixel it describes, so upsampling x8, cropping
the padding and resizing to the image, as the reference does in three steps, become one. With
r = 1 the grid is the image and the resampling cubic, as the reference's; r > 1 is a coarser
grid of pixel size H / ceil(H / r) (about r), resampled bilinearly (half the cost of cubic),
on which decoding is r^2 times cheaper; model.decode maps its peaks back to image
coordinates with sub-pixel refinement. On ideal maps of synthetic val, r = 2 keeps AP within
0.005 of r = 1 (see README). Only the 18 part heatmaps are resampled (the decoder never reads
the background). The PAFs are resampled whole only at r = 1; at r > 1 they stay at network
resolution in a GridPafs, which the decoder reads at its limb samples only, with the values
the bilinear resampling would have put on those pixels. Maps of all scales, flips and models
are averaged on the working grid (GridPafs sums its sources when read). A flipped input's
maps are flipped back with left and right parts swapped and the PAFs' x components negated.
"""
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from model import decode
from model.errors import UserError
from model.images import MISSING, UNREADABLE, read_image, read_image_checked
from model.skeleton import (CMU_PARTS, FLIP_CMU, LIMBS, NUM_HEATMAPS, NUM_LIMBS, NUM_PAFS,
                            NUM_PARTS)

log = logging.getLogger(__name__)

STRIDE = 8
PAD_VALUE = 128
SCALE_MODES = ("native", "boxsize")
DEFAULT_BOXSIZE = 368
# Working grid of the decoder in image pixels per map pixel (see the module docstring and
# README "Decoding"). On ideal stride-8 maps of synthetic val, 2 stays within 0.005 AP of full
# resolution (60 images: 0.0041; 150 images: 0.0017); 3 did not (60 images: 0.0081).
DEFAULT_RESOLUTION = 2

# Channel permutations of the maps of a horizontally flipped image.
HEATMAP_FLIP = np.concatenate([FLIP_CMU, [NUM_HEATMAPS - 1]])
_LIMB_INDEX = {(int(a), int(b)): k for k, (a, b) in enumerate(LIMBS)}
LIMB_FLIP = np.array([_LIMB_INDEX[(int(FLIP_CMU[a]), int(FLIP_CMU[b]))] for a, b in LIMBS])


@dataclass(frozen=True)
class InferenceSettings:
    """Everything that decides the maps and the people of an image, besides the models."""
    scale_search: tuple = (1.0,)
    scale_mode: str = "native"
    boxsize: int = DEFAULT_BOXSIZE
    flip: bool = False
    resolution: int = DEFAULT_RESOLUTION
    thre1: float = decode.THRE1
    thre2: float = decode.THRE2
    mid_num: int = decode.MID_NUM

    def __post_init__(self):
        if not self.scale_search or any(not (m > 0) for m in self.scale_search):
            raise UserError(f"scale_search needs positive values, got {list(self.scale_search)}")
        if self.scale_mode not in SCALE_MODES:
            raise UserError(f"unknown scale mode {self.scale_mode!r}; choose from {SCALE_MODES}")
        if int(self.resolution) < 1:
            raise UserError(f"resolution must be an integer >= 1, got {self.resolution}")

    def scales(self, image_height):
        """Absolute resize factors of an image of this height."""
        if self.scale_mode == "native":
            return [float(m) for m in self.scale_search]
        return [float(m) * self.boxsize / image_height for m in self.scale_search]


# ------------------------------------------------------------------------------ one image

def prepare_input(image, scale, stride=STRIDE, pad_value=PAD_VALUE):
    """(float32 (Hp, Wp, 3) padded input, (Hs, Ws) size of the resized image inside it)."""
    if round(image.shape[0] * scale) < 1 or round(image.shape[1] * scale) < 1:
        raise UserError(f"scale {scale:g} leaves nothing of a {image.shape[:2]} image")
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    hs, ws = image.shape[:2]
    hp, wp = -(-hs // stride) * stride, -(-ws // stride) * stride
    out = np.full((hp, wp, 3), pad_value, np.float32)
    out[:hs, :ws] = image
    return out, (hs, ws)


def working_grid(image_hw, resolution=1):
    """((Hw, Ww), (py, px)): the decoder's grid and its pixel size in image pixels."""
    h, w = int(image_hw[0]), int(image_hw[1])
    hw, ww = -(-h // int(resolution)), -(-w // int(resolution))
    return (hw, ww), (h / hw, w / ww)


def to_working_grid(maps, image_hw, scale, resolution=1, stride=STRIDE):
    """The resolution step: (h, w, C) network maps of the padded input at `scale` ->
    (Hw, Ww, C) float32 on the working grid of the image (module docstring)."""
    (hw, ww), (py, px) = working_grid(image_hw, resolution)
    # Working pixel u sits at image x = (u + 0.5) * px - 0.5, i.e. at network cell
    # (u + 0.5) * px * scale / stride - 0.5: exactly cv2.resize's mapping for fx below.
    interpolation = cv2.INTER_CUBIC if resolution == 1 else cv2.INTER_LINEAR
    out = cv2.resize(np.asarray(maps, np.float32), None, fx=stride / (px * scale),
                     fy=stride / (py * scale), interpolation=interpolation)
    if out.ndim == 2:
        out = out[..., None]
    out = out[:hw, :ww]
    if out.shape[0] < hw or out.shape[1] < ww:  # rounding of the resized size: edge pixels
        out = np.pad(out, ((0, hw - out.shape[0]), (0, ww - out.shape[1]), (0, 0)), "edge")
    return out


def _bilinear_taps(n_src, n_dst, factor):
    """cv2.resize's bilinear taps along one axis (fx = factor, size n_src -> n_dst, the
    output cropped or edge-padded to n_dst like to_working_grid): (i0, i1, w) per output
    pixel, value = (1 - w) * src[i0] + w * src[i1]."""
    size = int(round(n_src * factor))
    d = np.minimum(np.arange(n_dst), size - 1)           # edge padding repeats the last pixel
    src = (d + 0.5) / factor - 0.5
    i0 = np.floor(src).astype(np.intp)
    w = src - i0
    # Outside the source cv2 replicates the edge pixel (weight 0 on the missing neighbour).
    outside = (i0 < 0) | (i0 >= n_src - 1)
    i0 = np.clip(i0, 0, n_src - 1)
    w[outside] = 0.0
    return i0, np.minimum(i0 + 1, n_src - 1), w


class _PafSource(NamedTuple):
    """One network output's PAFs as GridPafs reads them (r > 1)."""
    maps: np.ndarray          # (h, w, 38) as the network gave them
    scale: float
    flipped: bool
    weight: float
    planes: np.ndarray        # the same values as flat planes (limb, x|y, row, column)
    area: int                 # h * w, the size of one plane
    taps: tuple               # row offsets, row weights, columns, column weights (see add)


class GridPafs:
    """The PAFs of one image on its working grid, as the decoder reads them: `sample(limb,
    xs, ys)` at integer working pixels, `dense()` for the whole grid, `shape` (Hw, Ww, 38).

    Maps of several scales, flips and models are added with their weights. At r = 1 each
    is resampled whole (cubic, the reference's path) and summed. At r > 1 the network's maps
    are kept and read bilinearly at the requested pixels only: the decoder reads mid_num
    points per candidate limb, a few thousand values, where resampling would compute
    38 x Hw x Ww of them. The value read is the one the bilinear resampling (to_working_grid)
    puts on that pixel (up to float rounding), so both give the same field."""

    def __init__(self, image_hw, resolution=1):
        self.image_hw, self.resolution = tuple(image_hw), int(resolution)
        (hw, ww), self.pixel = working_grid(image_hw, resolution)
        self.shape = (hw, ww, NUM_PAFS)
        self._dense = None      # r = 1: the weighted sum so far
        self._sources = []      # r > 1: _PafSource of every output added

    def add(self, pafs, scale, flipped=False, weight=1.0, stride=STRIDE):
        """Add `weight` x the PAFs of a network output at `scale` (of the mirrored image when
        `flipped`)."""
        pafs = np.asarray(pafs, np.float32)
        if self.resolution == 1:
            grid = to_working_grid(pafs, self.image_hw, scale, 1, stride)
            if flipped:
                grid = unflip_pafs(grid)
            self._dense = grid * weight if self._dense is None else self._dense + grid * weight
            return
        (py, px), (hw, ww) = self.pixel, self.shape[:2]
        h, w = pafs.shape[:2]
        y0, y1, fy = _bilinear_taps(h, hw, stride / (py * scale))
        x0, x1, fx = _bilinear_taps(w, ww, stride / (px * scale))
        if flipped:   # working column u of the image is column ww - 1 - u of the mirror
            x0, x1, fx = x0[::-1], x1[::-1], fx[::-1]
        # Flat planes: np.take with flat indices is several times faster than fancy indexing
        # of the (h, w, 38) array.
        planes = pafs.reshape(h, w, NUM_LIMBS, 2).transpose(2, 3, 0, 1).ravel()
        taps = (y0 * w, y1 * w, (1 - fy).astype(np.float32), fy.astype(np.float32),
                x0, x1, (1 - fx).astype(np.float32), fx.astype(np.float32))
        self._sources.append(_PafSource(pafs, float(scale), bool(flipped), float(weight),
                                        planes, h * w, taps))

    def sample(self, limb, xs, ys):
        """(vx, vy) float64 arrays shaped like xs: the field of `limb` (an int or an array
        broadcasting against xs) at working pixels (xs, ys)."""
        if self._dense is not None:
            return (self._dense[ys, xs, 2 * limb].astype(np.float64),
                    self._dense[ys, xs, 2 * limb + 1].astype(np.float64))
        vx, vy = np.zeros(np.shape(xs)), np.zeros(np.shape(xs))
        for src in self._sources:
            row0, row1, wy0, wy1, col0, col1, wx0, wx1 = src.taps
            # A mirrored image's maps hold the mirrored limb, its x component negated.
            k = LIMB_FLIP[limb] if src.flipped else np.asarray(limb)
            r0, r1, c0, c1 = row0[ys], row1[ys], col0[xs], col1[xs]
            gy0, gy1, gx0, gx1 = wy0[ys], wy1[ys], wx0[xs], wx1[xs]
            plane = k * (2 * src.area)
            i00, i01, i10, i11 = plane + r0 + c0, plane + r0 + c1, plane + r1 + c0, plane + r1 + c1
            values = []
            for component in (0, src.area):
                top = (src.planes.take(i00 + component) * gx0
                       + src.planes.take(i01 + component) * gx1)
                bottom = (src.planes.take(i10 + component) * gx0
                          + src.planes.take(i11 + component) * gx1)
                values.append(top * gy0 + bottom * gy1)
            vx += (-src.weight if src.flipped else src.weight) * values[0]
            vy += src.weight * values[1]
        return vx, vy

    def dense(self):
        """(Hw, Ww, 38) float32: the field on the whole grid."""
        if self.resolution == 1:
            return self._dense if self._dense is not None else np.zeros(self.shape, np.float32)
        out = np.zeros(self.shape, np.float32)
        for src in self._sources:
            grid = to_working_grid(src.maps, self.image_hw, src.scale, self.resolution)
            out += (unflip_pafs(grid) if src.flipped else grid) * src.weight
        return out


def heatmaps_to_grid(heatmaps, image_hw, scale, resolution=1):
    """The 18 part channels of network heatmaps on the working grid (the decoder does not
    read the background channel, so it is not resampled)."""
    parts = np.ascontiguousarray(np.asarray(heatmaps, np.float32)[..., :NUM_PARTS])
    return to_working_grid(parts, image_hw, scale, resolution)


def maps_to_grid(heatmaps, pafs, image_hw, scale, resolution=1):
    """Network heatmaps and PAFs of one input -> (part heatmaps (Hw, Ww, 18) float32 on the
    working grid, GridPafs)."""
    grid_pafs = GridPafs(image_hw, resolution)
    grid_pafs.add(pafs, scale)
    return heatmaps_to_grid(heatmaps, image_hw, scale, resolution), grid_pafs


def unflip_heatmaps(heatmaps):
    """Heatmaps (18 or 19 channels) predicted on a horizontally flipped image -> heatmaps
    of the image itself (left and right parts swapped)."""
    return np.ascontiguousarray(heatmaps[:, ::-1][..., HEATMAP_FLIP[:heatmaps.shape[2]]])


def unflip_pafs(pafs):
    """PAFs predicted on a horizontally flipped image -> PAFs of the image itself (left and
    right limbs swapped, x components negated)."""
    paf = pafs[:, ::-1].reshape(pafs.shape[:2] + (-1, 2))[:, :, LIMB_FLIP].copy()
    paf[..., 0] *= -1
    return paf.reshape(pafs.shape[:2] + (NUM_PAFS,))


def unflip_maps(heatmaps, pafs):
    """Maps predicted on a horizontally flipped image -> maps of the image itself."""
    return unflip_heatmaps(heatmaps), unflip_pafs(pafs)


def run_network(model, batch):
    """(pafs, heatmaps) numpy arrays of a float32 (B, H, W, 3) batch."""
    outputs = model(batch, training=False)
    paf, heat = (np.asarray(o, np.float32) for o in outputs)
    return paf, heat


def _as_models(models, weights):
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    if weights is None:
        weights = np.full(len(models), 1.0 / len(models))
    weights = np.asarray(weights, np.float64)
    if len(weights) != len(models) or weights.sum() <= 0 or (weights < 0).any():
        raise ValueError(f"need one non-negative weight per model, got {weights.tolist()}")
    return models, weights / weights.sum()


def _jobs(settings, image_hw):
    flips = (False, True) if settings.flip else (False,)
    return [(s, f) for s in settings.scales(image_hw[0]) for f in flips]


def network_inputs(image, settings):
    """[(scale, flipped, float32 padded input)] of one BGR image: every scale, each also
    mirrored when settings.flip."""
    inputs = []
    for scale, flipped in _jobs(settings, image.shape[:2]):
        source = np.ascontiguousarray(image[:, ::-1]) if flipped else image
        inputs.append((scale, flipped, prepare_input(source, scale)[0]))
    return inputs


class _Accumulator:
    """Running weighted mean of one image's maps on its working grid."""

    def __init__(self, image_hw, resolution, num_parts):
        self.image_hw, self.resolution = image_hw, resolution
        self.remaining = num_parts
        self.heat = None
        self.paf = GridPafs(image_hw, resolution)

    def add(self, paf, heat, scale, flipped, weight):
        h = heatmaps_to_grid(heat, self.image_hw, scale, self.resolution)
        if flipped:
            h = unflip_heatmaps(h)
        self.heat = h * weight if self.heat is None else self.heat + h * weight
        self.paf.add(paf, scale, flipped, weight)
        self.remaining -= 1
        return self.remaining == 0


def _accumulate(models, image, settings, weights):
    """The _Accumulator holding the weighted mean of one BGR image's maps."""
    models, weights = _as_models(models, weights)
    inputs = network_inputs(np.ascontiguousarray(image), settings)
    acc = _Accumulator(image.shape[:2], settings.resolution, len(inputs) * len(models))
    for scale, flipped, batch in inputs:
        for model, w in zip(models, weights):
            paf, heat = run_network(model, batch[None])
            acc.add(paf[0], heat[0], scale, flipped, w / len(inputs))
    return acc


def predict_maps(models, image, scales=(1.0,), flip=False, weights=None, *,
                 scale_mode="native", boxsize=DEFAULT_BOXSIZE, resolution=1):
    """(part heatmaps (Hw, Ww, 18), pafs (Hw, Ww, 38)) float32 of one BGR image: the
    weighted mean over `models` (one Keras test model or a list; `weights` default equal) of
    the mean over scales and flips, on the working grid (the image itself for resolution=1).

    One image at a time; a whole set (the evaluation, the fused ensemble with per-image
    weights) goes through predict_dataset, which batches and pipelines the same steps."""
    settings = InferenceSettings(tuple(scales), scale_mode, boxsize, flip, resolution)
    acc = _accumulate(models, image, settings, weights)
    return acc.heat, acc.paf.dense()


def decode_maps(heatmaps, pafs, image_hw, settings=InferenceSettings()):
    """People of one image from its working-grid maps (coordinates in image pixels):
    part heatmaps (Hw, Ww, 18 or 19) and PAFs as an (Hw, Ww, 38) array or a GridPafs."""
    _, pixel_size = working_grid(image_hw, settings.resolution)
    return decode.decode_poses(heatmaps, pafs, settings.thre1, settings.thre2,
                               settings.mid_num, pixel_size=pixel_size,
                               refine=settings.resolution > 1)


def predict_people(models, image, settings=InferenceSettings(), weights=None):
    """People (model.decode format) of one BGR image."""
    acc = _accumulate(models, image, settings, weights)
    return decode_maps(acc.heat, acc.paf, image.shape[:2], settings)


# ------------------------------------------------------------------------------ a whole set

_DONE = object()


def read_image_or_reason(path):
    """(BGR uint8 image, None) read by model.images (the stored pixel grid), or (None, reason)
    naming the file when it is missing or cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        return None, f"{MISSING} {path}"
    image = read_image(path)
    if image is None or image.size == 0:
        return None, f"{UNREADABLE} {path}"
    return image, None


def read_set_image(path, image_info):
    """(BGR uint8 image, None) or (None, reason naming the file) for an image of an evaluation
    set: read by model.images.read_image_checked, so a truncated file, or one whose size
    differs from the annotation's width and height (when the image dict has them), is
    refused instead of predicted on its grey remainder."""
    path = Path(path)
    size = ((int(image_info["width"]), int(image_info["height"]))
            if "width" in image_info and "height" in image_info else None)
    image, reason = read_image_checked(path, size)
    return (image, None) if image is not None else (None, f"{reason}: {path}")


class _Worker(threading.Thread):
    """A daemon thread whose exception is re-raised by `check()` in the caller's thread."""

    def __init__(self, target, name):
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self):
        try:
            self._target_fn()
        except BaseException as e:  # handed to the main thread
            self.error = e

    def check(self):
        if self.error is not None:
            raise self.error


def _per_image_weights(models, weights):
    """(models, weights_of): weights_of(image_id) gives the normalised model weights of an
    image, from fixed weights (default equal) or a function of the image id."""
    if callable(weights):
        models = _as_models(models, None)[0]
        return models, lambda image_id: _as_models(models, weights(image_id))[1]
    models, fixed = _as_models(models, weights)
    return models, lambda image_id: fixed


def _largest_first(images):
    """Images in order of decreasing size (then id): equal-sized inputs follow each other, so
    the network's batches fill."""
    return sorted(images, key=lambda im: (-int(im.get("height", 0)), -int(im.get("width", 0)),
                                          int(im["id"])))


class _SetPrediction:
    """One predict_dataset call. Three stages run side by side, joined by bounded queues:
    the loader thread reads and preprocesses images (load), the calling thread batches the
    inputs through the network (add_image, flush), the decoder thread averages each image's
    maps and decodes its people once all of them have arrived (decode_all)."""

    def __init__(self, models, weights_of, image_dir, settings, batch_size, checkpoint,
                 checkpoint_every):
        self.models, self.weights_of = models, weights_of
        self.image_dir, self.settings, self.batch_size = Path(image_dir), settings, batch_size
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.loaded = queue.Queue(maxsize=2 * batch_size)
        self.outputs = queue.Queue(maxsize=4 * batch_size)
        self.records, self.predicted, self.skipped = [], [], []
        self.accumulators = {}     # image id -> _Accumulator, until its last map arrives
        self.pending = []          # (image_id, image_hw, scale, flipped, input, model weights)
        self.network_seconds = 0.0
        self.start = time.perf_counter()
        self.decoder = None

    def load(self, order):
        """Loader thread: every image of `order` as an ("image", ...) or ("skip", ...) item."""
        for im in order:
            image, reason = read_set_image(self.image_dir / im["file_name"], im)
            if image is None:
                self.loaded.put(("skip", int(im["id"]), reason))
                continue
            self.loaded.put(("image", int(im["id"]), image.shape[:2],
                             network_inputs(image, self.settings)))
        self.loaded.put(_DONE)

    def decode_all(self):
        """Decoder thread: add each network output to its image's accumulator; decode an image
        when its accumulator is complete."""
        while True:
            item = self.outputs.get()
            if item is _DONE:
                return
            image_id, image_hw, paf, heat, scale, flipped, weight = item
            acc = self.accumulators[image_id]
            if acc.add(paf, heat, scale, flipped, weight):
                del self.accumulators[image_id]
                people = decode_maps(acc.heat, acc.paf, image_hw, self.settings)
                self.records.extend(decode.people_to_coco(people, image_id))
                self.predicted.append(image_id)
                if (self.checkpoint is not None
                        and len(self.predicted) % self.checkpoint_every == 0):
                    self.checkpoint(list(self.records), list(self.predicted),
                                    time.perf_counter() - self.start)

    def add_image(self, image_id, image_hw, inputs):
        """Queue one image's inputs for the network; a batch holds inputs of one shape."""
        w = self.weights_of(image_id)
        self.accumulators[image_id] = _Accumulator(image_hw, self.settings.resolution,
                                                   len(inputs) * int((w > 0).sum()))
        for scale, flipped, batch_input in inputs:
            if self.pending and (self.pending[0][4].shape != batch_input.shape
                                 or len(self.pending) >= self.batch_size):
                self.flush()
            self.pending.append((image_id, image_hw, scale, flipped, batch_input,
                                 w / len(inputs)))

    def flush(self):
        """Run every model on the pending inputs it has a weight for; hand the outputs to the
        decoder."""
        for m, model in enumerate(self.models):
            members = [p for p in self.pending if p[5][m] > 0]
            if not members:
                continue
            t0 = time.perf_counter()
            paf, heat = run_network(model, np.stack([p[4] for p in members]))
            self.network_seconds += time.perf_counter() - t0
            for k, (image_id, image_hw, scale, flipped, _, w) in enumerate(members):
                _put(self.outputs, (image_id, image_hw, paf[k], heat[k], scale, flipped, w[m]),
                     self.decoder)
        self.pending.clear()

    def run(self, order, progress):
        loader = _Worker(lambda: self.load(order), "loader")
        self.decoder = _Worker(self.decode_all, "decoder")
        loader.start()
        self.decoder.start()
        bar = tqdm(total=len(order), desc="predict", unit="img", disable=not progress)
        try:
            while True:
                item = _get(self.loaded, loader)
                if item is _DONE:
                    break
                bar.update(1)
                if item[0] == "skip":
                    self.skipped.append((item[1], item[2]))
                    log.warning("skipped image %d: %s", item[1], item[2])
                    continue
                self.add_image(*item[1:])
            if self.pending:
                self.flush()
            _put(self.outputs, _DONE, self.decoder)
            self.decoder.join()
            self.decoder.check()
        finally:
            bar.close()
        loader.check()


def predict_dataset(models, images, image_dir, settings=InferenceSettings(), weights=None,
                    batch_size=4, progress=True, checkpoint=None, checkpoint_every=25):
    """COCO keypoint records of every image of `images` (COCO image dicts: id, file_name,
    optional width/height) read from image_dir.

    Pipelined: a loader thread reads and preprocesses images while the network runs on
    batches of equal-sized inputs (images are taken in order of their size so that batches
    fill), and a decoder thread resamples, averages and decodes the maps beside it.

    weights: one weight per model for every image (default equal), or a function of the
    image id giving that image's weights (the fused ensemble's domain probabilities); a model
    whose weight is 0 for every image of a batch does not run on it.

    checkpoint(records, image_ids, seconds), when given, is called from the decoder thread
    with copies of the results so far every `checkpoint_every` images (to save them for a
    resumed run).

    Returns (records sorted by image id, info) with info = {"image_ids": predicted ids,
    "skipped": [(id, reason)], "seconds": wall time, "network_seconds": time in the network}."""
    models, weights_of = _per_image_weights(models, weights)
    batch_size = max(1, int(batch_size))
    order = _largest_first(images)
    run = _SetPrediction(models, weights_of, image_dir, settings, batch_size, checkpoint,
                         checkpoint_every)
    run.run(order, progress)
    records = run.records
    records.sort(key=lambda r: (r["image_id"], -r["score"]))
    info = {"image_ids": sorted(run.predicted), "skipped": run.skipped,
            "seconds": time.perf_counter() - run.start, "network_seconds": run.network_seconds}
    return records, info


def _get(q, worker):
    """q.get() that notices a dead producer instead of waiting forever."""
    while True:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            worker.check()
            if not worker.is_alive():
                return q.get_nowait() if not q.empty() else _DONE


def _put(q, item, worker):
    """q.put() that notices a dead consumer instead of waiting forever."""
    while True:
        try:
            return q.put(item, timeout=0.5)
        except queue.Full:
            worker.check()


# ------------------------------------------------------------------------------ demo output

def people_json(people, frame, image_hw):
    """The demo's JSON of one frame: people with 18 CMU keypoints (x, y, score; zeros for
    missing parts) in image pixels, pixel centres at integers."""
    return {"frame": int(frame), "width": int(image_hw[1]), "height": int(image_hw[0]),
            "parts": list(CMU_PARTS),
            "people": [{"score": round(float(p["score"]), 4), "num_parts": int(p["num_parts"]),
                        "keypoints": np.round(p["keypoints"], 2).tolist()} for p in people]}
