"""Training augmentation: one affine transform per sample, crop around the main person.

docs/recipe.md section 5: the image is scaled so the main person is about target_dist * crop_size
pixels tall (target_dist / scale_provided), times a random multiplier in [scale_min,
scale_max] that is always applied (one Python reproduction never applied it), rotated by up
to +-max_rotate degrees, shifted by up to +-center_perturb crop pixels, cropped to
crop_size x crop_size around the main person and mirrored with probability flip_prob. All of
this is one 2x3 affine matrix M (source pixels -> crop pixels), so the image and the mask are
resampled once each (cv2.warpAffine) and the joints go through the same M.

Coordinates are OpenCV's pixel-centre coordinates (see model.targets): a source keypoint at
(x, y) lands at M @ (x, y, 1) in the crop. The mirror is folded into M as x -> (S - 1) - x,
the mirror of the crop's pixel grid, and the left/right parts swap labels
(model.skeleton.FLIP_CMU) so that a mirrored left wrist is labelled as a right wrist.

Joints that leave the crop keep their labels: their Gaussians and limbs are clipped by the
target grid, so a limb crossing the border still has its inside part. Unlabelled joints
(v = 0) keep (0, 0). The image is resampled bilinearly (the references used bicubic: 6x
slower here, no visible gain at the network's stride), border filled with grey `fill`; the
mask bilinearly with border 255 ("compute the loss": nothing is unknown outside the image).

The expert's effect goes on the source image before this transform (effect_stage "source",
the default): the fork's HDF5 held effected full-size images, and the evaluation sets blur the
full-size image too, so the 30 px blur shrinks with the image exactly as the person does.
effect_stage "crop" applies it to the S x S crop instead (30 px whatever the scale).

Reduced decoding: when M shrinks the image by 2x or more, the JPEG can be decoded at 1/f of
its size (f = 2, 4, 8: libjpeg's scaled decode, pixel i of the reduced grid covering full-size
pixels f*i .. f*i + f - 1, so its centre is at f*i + (f - 1) / 2). reduced_transform folds
that grid into M; the mask and the joints stay in full-size coordinates under M itself.
"""
import dataclasses
import math

import cv2
import numpy as np

from model.coco import BOX_SIZE
from model.skeleton import FLIP_CMU

# Where the expert's effect is applied: on the source image before the affine, or on the crop.
EFFECT_STAGES = ("source", "crop")
# The reductions libjpeg decodes at directly, largest first.
DECODE_REDUCTIONS = (8, 4, 2)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    crop_size: int = 368          # S: output crop is S x S
    target_dist: float = 0.6      # main person's height / S before the random multiplier
    scale_min: float = 0.5        # random scale multiplier range (uniform)
    scale_max: float = 1.1
    max_rotate: float = 40.0      # degrees, uniform in +-max_rotate
    center_perturb: float = 40.0  # crop pixels, uniform in +-center_perturb on each axis
    flip_prob: float = 0.5
    fill: int = 128               # image border (grey)
    effect_stage: str = "source"  # one of EFFECT_STAGES

    def __post_init__(self):
        if self.crop_size <= 0 or self.target_dist <= 0:
            raise ValueError("crop_size and target_dist must be positive")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError("need 0 < scale_min <= scale_max")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError("flip_prob must be in [0, 1]")
        if self.effect_stage not in EFFECT_STAGES:
            raise ValueError(f"effect_stage must be one of {EFFECT_STAGES}, got "
                             f"{self.effect_stage!r}")


def crop_transform(objpos, scale, angle_deg=0.0, shift=(0.0, 0.0), flip=False, crop_size=368):
    """2x3 affine source -> crop: objpos goes to the crop centre + shift, scaled and rotated
    about it, then mirrored if flip."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    linear = scale * np.array([[c, s], [-s, c]])
    centre = (crop_size - 1) / 2.0
    offset = np.array([centre + shift[0], centre + shift[1]]) - linear @ np.asarray(
        objpos, np.float64)
    M = np.concatenate([linear, offset[:, None]], axis=1)
    if flip:
        M[0] = -M[0]
        M[0, 2] += crop_size - 1
    return M


def _base_scale(scale_provided, params):
    scale_provided = float(scale_provided)
    if not (math.isfinite(scale_provided) and scale_provided > 0):
        raise ValueError(f"scale_provided must be positive, got {scale_provided}")
    # scale_provided is bbox height / 368 (the reference's box size): the main person ends up
    # target_dist * crop_size pixels tall, also for crops smaller than 368.
    return params.target_dist * params.crop_size / BOX_SIZE / scale_provided


def random_transform(rng, objpos, scale_provided, params=AugmentParams()):
    """(M, flip): the random affine transform of one sample. Draw order (fixed, so a seed
    reproduces a sample): scale multiplier, angle, shift x, shift y, flip."""
    multiplier = rng.uniform(params.scale_min, params.scale_max)
    angle = rng.uniform(-params.max_rotate, params.max_rotate)
    shift = rng.uniform(-params.center_perturb, params.center_perturb, size=2)
    flip = bool(rng.random() < params.flip_prob)
    scale = _base_scale(scale_provided, params) * multiplier
    return crop_transform(objpos, scale, angle, shift, flip, params.crop_size), flip


def center_transform(objpos, scale_provided, params=AugmentParams()):
    """The validation transform: main person centred at the target scale, nothing random."""
    return crop_transform(objpos, _base_scale(scale_provided, params),
                          crop_size=params.crop_size)


def transform_joints(joints, M, flip=False):
    """(P, 18, 3) joints through M; labelled ones move, unlabelled keep (0, 0); on flip the
    left and right parts swap."""
    joints = np.asarray(joints, np.float32)
    out = joints.copy()
    labelled = joints[..., 2] > 0
    xy = joints[..., :2].astype(np.float64) @ M[:, :2].T + M[:, 2]
    out[..., :2] = np.where(labelled[..., None], xy, joints[..., :2])
    if flip:
        out = out[:, FLIP_CMU]
    return out


def warp_image(image, M, params=AugmentParams()):
    """(S, S, 3) uint8 crop of a BGR image under M, grey outside the source."""
    size = (params.crop_size, params.crop_size)
    return cv2.warpAffine(image, M, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(params.fill,) * 3)


def warp_mask(mask_miss, M, params=AugmentParams()):
    """(S, S) uint8 crop of mask_miss under M, 255 ("compute the loss") outside the source."""
    size = (params.crop_size, params.crop_size)
    return cv2.warpAffine(mask_miss, M, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=255)


def transform_sample(sample, M, flip, params=AugmentParams()):
    """(image (S,S,3) uint8, mask_miss (S,S) uint8, joints (P,18,3) float32) under M."""
    return (warp_image(sample.image, M, params), warp_mask(sample.mask_miss, M, params),
            transform_joints(sample.joints, M, flip))


def augment(sample, rng, params=AugmentParams()):
    """Randomly transformed crop of a model.hdf5.Sample; deterministic given rng's state."""
    M, flip = random_transform(rng, sample.objpos, sample.scale_provided, params)
    return transform_sample(sample, M, flip, params)


def center_crop(sample, params=AugmentParams()):
    """The deterministic crop used without augmentation (validation)."""
    return transform_sample(sample, center_transform(sample.objpos, sample.scale_provided,
                                                     params), False, params)


def transform_scale(M):
    """The isotropic scale factor of an affine M made by crop_transform."""
    return math.sqrt(abs(np.linalg.det(M[:, :2])))


def decode_reduction(M):
    """The largest f of DECODE_REDUCTIONS (else 1) with f * scale(M) <= 1: decoding at 1/f
    then never needs upsampling by the warp (libjpeg's reduced decode averages each f x f
    block, a better pre-filter for the shrinking warp than none)."""
    scale = transform_scale(M)
    return next((f for f in DECODE_REDUCTIONS if f * scale <= 1.0 + 1e-9), 1)


def reduced_transform(M, reduction):
    """M for an image decoded at 1/reduction: reduced pixel (u, v) is full-size pixel
    (f u + (f - 1) / 2, f v + (f - 1) / 2)."""
    if reduction == 1:
        return M
    f = float(reduction)
    grid = np.array([[f, 0.0, (f - 1) / 2], [0.0, f, (f - 1) / 2], [0.0, 0.0, 1.0]])
    return M @ grid
