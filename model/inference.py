"""Images -> network maps -> people: preprocessing, the resolution step, flips and scales
(docs/recipe.md section 6); a whole evaluation set goes through model.predict_set.

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

PAF grids: a network whose PAF cell j describes input pixel 8j + o with o other than the
targets' 3.5 (CMU's released network: o = 0, model.network.CMU_PAF_ORIGIN) has its PAFs read
(3.5 - o) / 8 cells further on in the same single resampling, so its fields land where the
heatmaps' peaks are. The model says which grid it has (`paf_origin`, recorded in its weight
file or ONNX metadata); run_network tags the PAFs it returns with it (NetworkPafs) and
GridPafs.add reads the tag.
"""
import logging
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from model import decode, network
from model.errors import UserError
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


def grid_shift(origin, stride=STRIDE):
    """Cells by which maps whose cell j lies at input pixel stride * j + origin are read
    further on than maps on the targets' grid (cell j at stride * j + (stride - 1) / 2)."""
    return ((stride - 1) / 2 - float(origin)) / stride


def to_working_grid(maps, image_hw, scale, resolution=1, stride=STRIDE,
                    origin=network.TARGETS_PAF_ORIGIN):
    """The resolution step: (h, w, C) network maps of the padded input at `scale` ->
    (Hw, Ww, C) float32 on the working grid of the image (module docstring). `origin`: the
    input pixel of cell 0 (heatmaps and the targets' PAFs: 3.5; CMU's PAFs: 0)."""
    (hw, ww), (py, px) = working_grid(image_hw, resolution)
    shift = grid_shift(origin, stride)
    if shift != 0:
        return _shifted_resample(np.asarray(maps, np.float32), (hw, ww),
                                 (stride / (py * scale), stride / (px * scale)), shift,
                                 cubic=resolution == 1)
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


def _bilinear_taps(n_src, n_dst, factor, shift=0.0):
    """cv2.resize's bilinear taps along one axis (fx = factor, size n_src -> n_dst, the
    output cropped or edge-padded to n_dst like to_working_grid), read `shift` source pixels
    further on (grid_shift): (i0, i1, w) per output pixel, value = (1 - w) * src[i0] +
    w * src[i1]."""
    size = int(round(n_src * factor))
    d = np.minimum(np.arange(n_dst), size - 1)           # edge padding repeats the last pixel
    src = (d + 0.5) / factor - 0.5 + shift
    i0 = np.floor(src).astype(np.intp)
    w = src - i0
    # Outside the source cv2 replicates the edge pixel (weight 0 on the missing neighbour).
    outside = (i0 < 0) | (i0 >= n_src - 1)
    i0 = np.clip(i0, 0, n_src - 1)
    w[outside] = 0.0
    return i0, np.minimum(i0 + 1, n_src - 1), w


CUBIC_A = -0.75          # cv2.resize's bicubic kernel parameter


def _cubic_taps(n_src, n_dst, factor, shift):
    """cv2.resize's bicubic taps along one axis, read `shift` source pixels further on:
    (indices (n_dst, 4), weights (n_dst, 4)), the border replicated like cv2's."""
    size = int(round(n_src * factor))
    d = np.minimum(np.arange(n_dst), size - 1)
    src = (d + 0.5) / factor - 0.5 + shift
    i0 = np.floor(src).astype(np.intp)
    f = (src - i0)[:, None]
    a = CUBIC_A
    t = np.concatenate([f + 1, f, 1 - f, 2 - f], axis=1)     # distance to each tap
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    weights = np.where(t <= 1, near, far)
    index = np.clip(i0[:, None] + np.arange(-1, 3), 0, n_src - 1)
    return index, weights.astype(np.float32)


def _shifted_resample(maps, out_hw, factors, shift, cubic):
    """to_working_grid's resampling read `shift` cells further on, separably (cv2.resize
    has no offset): cubic at r = 1, bilinear otherwise."""
    squeeze = maps.ndim == 2
    maps = maps[..., None] if squeeze else maps
    taps = []
    for n_src, n_dst, factor in zip(maps.shape[:2], out_hw, factors):
        if cubic:
            taps.append(_cubic_taps(n_src, n_dst, factor, shift))
        else:
            i0, i1, w = _bilinear_taps(n_src, n_dst, factor, shift)
            taps.append((np.stack([i0, i1], 1), np.stack([1 - w, w], 1).astype(np.float32)))
    # Each axis as one matrix product with its (n_dst, n_src) interpolation matrix: BLAS
    # beats gathering the taps several times over.
    my, mx = (_tap_matrix(index, weights, n) for (index, weights), n in zip(taps, maps.shape))
    h, w, c = maps.shape
    cols = maps.transpose(0, 2, 1).reshape(h * c, w) @ mx.T              # (h * C, Ww)
    out = (my @ cols.reshape(h, -1)).reshape(len(my), c, -1)             # (Hw, C, Ww)
    out = out.transpose(0, 2, 1)
    return np.ascontiguousarray(out[..., 0] if squeeze else out, dtype=np.float32)


def _tap_matrix(index, weights, n_src):
    """(n_dst, n_src) float32 matrix of per-row taps (clipped indices add up)."""
    matrix = np.zeros((len(index), n_src), np.float32)
    np.add.at(matrix, (np.repeat(np.arange(len(index)), index.shape[1]), index.ravel()),
              weights.ravel())
    return matrix


class _PafSource(NamedTuple):
    """One network output's PAFs as GridPafs reads them (r > 1)."""
    maps: np.ndarray          # (h, w, 38) as the network gave them
    scale: float
    flipped: bool
    weight: float
    planes: np.ndarray        # the same values as flat planes (limb, x|y, row, column)
    area: int                 # h * w, the size of one plane
    taps: tuple               # row offsets, row weights, columns, column weights (see add)
    origin: float             # input pixel of PAF cell 0 (model.network.TARGETS_PAF_ORIGIN)


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

    def add(self, pafs, scale, flipped=False, weight=1.0, stride=STRIDE, origin=None):
        """Add `weight` x the PAFs of a network output at `scale` (of the mirrored image when
        `flipped`) whose cell 0 lies at input pixel `origin` (None: the NetworkPafs tag of
        `pafs`, else the targets' grid)."""
        if origin is None:
            origin = getattr(pafs, "origin", network.TARGETS_PAF_ORIGIN)
        pafs = np.asarray(pafs, np.float32)
        if self.resolution == 1:
            grid = to_working_grid(pafs, self.image_hw, scale, 1, stride, origin)
            if flipped:
                grid = unflip_pafs(grid)
            self._dense = grid * weight if self._dense is None else self._dense + grid * weight
            return
        (py, px), (hw, ww) = self.pixel, self.shape[:2]
        h, w = pafs.shape[:2]
        shift = grid_shift(origin, stride)
        y0, y1, fy = _bilinear_taps(h, hw, stride / (py * scale), shift)
        x0, x1, fx = _bilinear_taps(w, ww, stride / (px * scale), shift)
        if flipped:   # working column u of the image is column ww - 1 - u of the mirror
            x0, x1, fx = x0[::-1], x1[::-1], fx[::-1]
        # Flat planes: np.take with flat indices is several times faster than fancy indexing
        # of the (h, w, 38) array.
        planes = pafs.reshape(h, w, NUM_LIMBS, 2).transpose(2, 3, 0, 1).ravel()
        taps = (y0 * w, y1 * w, (1 - fy).astype(np.float32), fy.astype(np.float32),
                x0, x1, (1 - fx).astype(np.float32), fx.astype(np.float32))
        self._sources.append(_PafSource(pafs, float(scale), bool(flipped), float(weight),
                                        planes, h * w, taps, float(origin)))

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
            grid = to_working_grid(src.maps, self.image_hw, src.scale, self.resolution,
                                   origin=src.origin)
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


class NetworkPafs(np.ndarray):
    """PAFs as a network gave them, tagged with `origin`, the input pixel of their cell 0
    (kept by indexing and views, so paf[k] of a batch still says which grid it is on)."""

    def __array_finalize__(self, obj):
        self.origin = getattr(obj, "origin", network.TARGETS_PAF_ORIGIN)


def paf_origin(model):
    """The input pixel of PAF cell 0 of `model`'s maps: its `paf_origin` (model.network and
    model.backends set it from the weight file or ONNX metadata), else the targets' 3.5."""
    return float(getattr(model, "paf_origin", network.TARGETS_PAF_ORIGIN))


def run_network(model, batch):
    """(pafs, heatmaps) numpy arrays of a float32 (B, H, W, 3) batch; the PAFs are
    NetworkPafs tagged with the model's PAF grid. A Keras model loaded from a weight file
    runs through its frozen inference function (network.freeze_inference), another one
    through its compiled predict function (predict_on_batch: a tf.function that relaxes to
    any input shape after the second one; the same maps as an eager call, 4.6x faster for the
    small configuration at 368 x 280 on 2 cores, BENCHMARKS.md); other backends are called."""
    if getattr(model, "frozen_inference", None) is not None:
        outputs = model.frozen_inference(batch)
    elif hasattr(model, "predict_on_batch"):
        outputs = model.predict_on_batch(batch)
    else:
        outputs = model(batch, training=False)
    paf, heat = (np.asarray(o, np.float32) for o in outputs)
    paf = paf.view(NetworkPafs)
    paf.origin = paf_origin(model)
    return paf, heat


def as_models(models, weights):
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


def network_outputs(models, image, settings):
    """[(scale, flipped, [(pafs, heatmaps) of each model])] of one BGR image: every input of
    network_inputs through every model, once (the demo, the robustness sweep and the
    resolution benchmark decode several ways from them)."""
    inputs = network_inputs(np.ascontiguousarray(image), settings)
    return [(scale, flipped, [run_network(m, batch[None]) for m in models])
            for scale, flipped, batch in inputs]


def average_maps(outputs, image_hw, settings, model_weights):
    """(part heatmaps, GridPafs) on the working grid from network_outputs: the mean over the
    inputs of the models' maps weighted by `model_weights` (summing to 1; a model of weight
    0 is left out)."""
    used = [w > 0 for w in model_weights]
    acc = Accumulator(image_hw, settings.resolution, len(outputs) * sum(used))
    for scale, flipped, per_model in outputs:
        for (paf, heatmaps), w, use in zip(per_model, model_weights, used):
            if use:
                acc.add(paf[0], heatmaps[0], scale, flipped, w / len(outputs))
    return acc.heat, acc.paf


def decode_outputs(outputs, image_hw, settings, model_weights):
    heat, pafs = average_maps(outputs, image_hw, settings, model_weights)
    return decode_maps(heat, pafs, image_hw, settings)


class Accumulator:
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


def _average(models, image, settings, weights):
    """(part heatmaps, GridPafs): the weighted mean of one BGR image's maps."""
    models, weights = as_models(models, weights)
    return average_maps(network_outputs(models, image, settings), image.shape[:2], settings,
                        weights)


def predict_maps(models, image, scales=(1.0,), flip=False, weights=None, *,
                 scale_mode="native", boxsize=DEFAULT_BOXSIZE, resolution=1):
    """(part heatmaps (Hw, Ww, 18), pafs (Hw, Ww, 38)) float32 of one BGR image: the
    weighted mean over `models` (one Keras test model or a list; `weights` default equal) of
    the mean over scales and flips, on the working grid (the image itself for resolution=1).

    One image at a time; a whole set (the evaluation, the fused ensemble with per-image
    weights) goes through predict_dataset, which batches and pipelines the same steps."""
    settings = InferenceSettings(tuple(scales), scale_mode, boxsize, flip, resolution)
    heat, pafs = _average(models, image, settings, weights)
    return heat, pafs.dense()


def decode_maps(heatmaps, pafs, image_hw, settings=InferenceSettings()):
    """People of one image from its working-grid maps (coordinates in image pixels):
    part heatmaps (Hw, Ww, 18 or 19) and PAFs as an (Hw, Ww, 38) array or a GridPafs."""
    _, pixel_size = working_grid(image_hw, settings.resolution)
    return decode.decode_poses(heatmaps, pafs, settings.thre1, settings.thre2,
                               settings.mid_num, pixel_size=pixel_size,
                               refine=settings.resolution > 1)


def predict_people(models, image, settings=InferenceSettings(), weights=None):
    """People (model.decode format) of one BGR image."""
    heat, pafs = _average(models, image, settings, weights)
    return decode_maps(heat, pafs, image.shape[:2], settings)


def people_json(people, frame, image_hw):
    """The demo's JSON of one frame: people with 18 CMU keypoints (x, y, score; zeros for
    missing parts) in image pixels, pixel centres at integers."""
    return {"frame": int(frame), "width": int(image_hw[1]), "height": int(image_hw[0]),
            "parts": list(CMU_PARTS),
            "people": [{"score": round(float(p["score"]), 4), "num_parts": int(p["num_parts"]),
                        "keypoints": np.round(p["keypoints"], 2).tolist()} for p in people]}
