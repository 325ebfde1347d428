"""The image domains of the experts: dark, motion blur and low resolution.

Defaults are the fork's parameters (docs/recipe.md section 7). Images are BGR uint8 arrays.
The same functions make the evaluation sets, the experts' training input and the domain
classifier's classes, so all three see the same domains.
"""
import copy

import cv2
import numpy as np

from model.domains import DARK, LOW_RESOLUTION, MOTION_BLUR, NORMAL

DARK_FACTOR = 0.5          # PIL ImageEnhance.Brightness(0.5)
BLUR_LENGTH = 30           # horizontal box blur, 30 px
RESOLUTION_FACTOR = 0.5    # (w // 2, h // 2), bilinear, not upscaled back


def darken(image, factor=DARK_FACTOR):
    """Brightness x factor, exactly as PIL's Brightness enhancer (a blend with black): the
    product in float32, truncated toward zero, clipped to 0..255."""
    scaled = image.astype(np.float32) * np.float32(factor)
    return np.clip(np.floor(scaled), 0, 255).astype(np.uint8)


def motion_blur_kernel(length=BLUR_LENGTH):
    """The fork's kernel: length x length, middle row 1/length (for cv2.filter2D)."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    return kernel


def motion_blur(image, length=BLUR_LENGTH):
    """Horizontal motion blur: every pixel becomes the mean of `length` pixels of its row
    (columns x - length // 2 .. x + (length - 1) // 2, borders reflected as in OpenCV).

    Same window as cv2.filter2D with motion_blur_kernel(length), whose other rows are zero,
    but as a 1-D box filter: exact rounding of the mean and about 50x faster than the
    filter2D call (which rounds 1-2 % of pixels one level off)."""
    return cv2.blur(image, (length, 1), anchor=(length // 2, 0))


def low_resolution_size(width, height, factor=RESOLUTION_FACTOR):
    return max(1, int(width * factor)), max(1, int(height * factor))


def low_resolution(image, factor=RESOLUTION_FACTOR):
    w, h = low_resolution_size(image.shape[1], image.shape[0], factor)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- test-time gamma correction
# The baseline "normal expert + gamma" (docs/recipe.md section 6): every image is brightened
# by the gamma that brings its mean luminance to that of normal training images, then given
# to the normal expert. The target lies between the 0.468 measured on the synthetic train2014
# (400 images, seed 0) and the 0.459 of ImageNet's mean colour (COCO's photographs are alike),
# so one value serves both.
GAMMA_TARGET = 0.46
GAMMA_MIN = 0.25          # the strongest correction: level 1/255 -> 0.25
LUMA_BGR = np.array([0.114, 0.587, 0.299])   # ITU-R BT.601, as cv2.COLOR_BGR2GRAY
_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def mean_luminance(image):
    """Mean BT.601 luminance of a BGR uint8 image in 0..1 (of the unrounded per-pixel luma)."""
    return float(image.reshape(-1, 3).mean(0) @ LUMA_BGR / 255.0)


def brightening_gamma(image, target=GAMMA_TARGET, min_gamma=GAMMA_MIN):
    """The gamma g in [min_gamma, 1] for which levels v -> 255 (v / 255)^g on every channel
    give the image the mean luminance `target`: 1 (no change) for an image at least that
    bright, min_gamma when even that stays darker (a black image).

    The corrected mean is a decreasing function of g, sum over levels of the luminance weight
    of each level times (v / 255)^g, computed from the three channels' histograms, so g is
    found by bisection to 1e-6 without touching the pixels again."""
    if image.size == 0:
        return 1.0
    counts = np.stack([np.bincount(image[..., c].ravel(), minlength=256)
                       for c in range(3)]).astype(np.float64)
    weight = LUMA_BGR @ counts / counts[0].sum()       # (256,): luminance share of each level

    def mean_after(g):
        return float(weight @ _LEVELS ** g)
    if mean_after(1.0) >= target:
        return 1.0
    if mean_after(min_gamma) <= target:
        return float(min_gamma)
    lo, hi = float(min_gamma), 1.0                     # mean_after(lo) > target > mean_after(hi)
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_after(mid) > target else (lo, mid)
    return 0.5 * (lo + hi)


def apply_gamma(image, gamma):
    """Levels v -> round(255 (v / 255)^gamma) on every channel (a new uint8 array)."""
    lut = np.rint(255.0 * _LEVELS ** float(gamma)).astype(np.uint8)
    return lut[image]


def gamma_correct(image, target=GAMMA_TARGET, min_gamma=GAMMA_MIN):
    """(corrected image, gamma): brightening_gamma's gamma applied to the image."""
    gamma = brightening_gamma(image, target, min_gamma)
    return apply_gamma(image, gamma), gamma


# Effects that keep the image geometry; the experts train on these.
PIXEL_EFFECTS = {NORMAL: lambda image: image, DARK: darken, MOTION_BLUR: motion_blur}
ALL_EFFECTS = dict(PIXEL_EFFECTS, **{LOW_RESOLUTION: low_resolution})


def apply_effect(image, effect):
    try:
        return ALL_EFFECTS[effect](image)
    except KeyError:
        raise ValueError(f"unknown effect {effect!r}; choose from {sorted(ALL_EFFECTS)}") from None


def scale_annotation(ann, sx, sy, new_height=None, new_width=None):
    """Copy of a COCO annotation with keypoints, bbox, area and segmentation scaled for an
    image resized by (sx, sy) with cv2.resize (model.effects.low_resolution).

    One map of the image plane, written in the two coordinate systems COCO uses:
    * keypoints are pixel-centre coordinates (pixel i at x = i, the project's convention):
      cv2.resize puts source x at x' = (x + 0.5) * sx - 0.5;
    * bbox and polygon vertices are continuous coordinates in which pixel i spans [i, i + 1]
      (how pycocotools rasterises polygons and computes boxes; [i - 0.5, i + 0.5] in keypoint
      coordinates): the same map is X' = X * sx there, and widths scale by sx.
    Unlabelled keypoints (v = 0) stay at (0, 0). Crowd RLEs are decoded, resized (nearest)
    and re-encoded at the new image size, which must then be given."""
    out = copy.deepcopy(ann)
    if out.get("keypoints"):
        kp = np.asarray(out["keypoints"], np.float64).reshape(-1, 3)
        labelled = kp[:, 2] > 0
        kp[labelled, 0] = (kp[labelled, 0] + 0.5) * sx - 0.5
        kp[labelled, 1] = (kp[labelled, 1] + 0.5) * sy - 0.5
        # visibility codes stay integers, as in COCO's files
        out["keypoints"] = [round(float(v), 2) if k % 3 < 2 else int(v)
                            for k, v in enumerate(kp.ravel())]
    if "bbox" in out:
        x, y, w, h = out["bbox"]
        out["bbox"] = [x * sx, y * sy, w * sx, h * sy]
    if "area" in out:
        out["area"] = float(out["area"]) * sx * sy
    seg = out.get("segmentation")
    if isinstance(seg, list):
        # malformed polygons (odd length) are dropped: they have no area to scale
        out["segmentation"] = [
            (np.asarray(poly, np.float64).reshape(-1, 2) * (sx, sy)).ravel().tolist()
            for poly in seg if len(poly) % 2 == 0]
    elif isinstance(seg, dict):
        # here only: the training pipeline and the classifier import this module without
        # needing pycocotools
        from pycocotools import mask as mask_utils
        if new_height is None or new_width is None:
            raise ValueError("resizing an RLE segmentation needs the new image size")
        rle = mask_utils.frPyObjects(seg, *seg["size"]) if isinstance(seg["counts"], list) else seg
        m = mask_utils.decode(rle)
        m = cv2.resize(m, (new_width, new_height), interpolation=cv2.INTER_NEAREST)
        enc = mask_utils.encode(np.asfortranarray(m))
        out["segmentation"] = {"size": [new_height, new_width],
                               "counts": enc["counts"].decode("ascii")}
    return out
