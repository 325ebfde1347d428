"""Augmentation: image, mask and joints move together; flips swap left and right; the random
scale multiplier is applied; a seed reproduces a sample."""
import dataclasses

import cv2
import numpy as np
import pytest

from model.augment import (AugmentParams, augment, center_crop, center_transform,
                           crop_transform, decode_reduction, random_transform, reduced_transform,
                           transform_joints, transform_sample, transform_scale, warp_image)
from model.hdf5 import Sample
from model.skeleton import CMU_PARTS, FLIP_CMU, NUM_PARTS

TEMPLATE = np.array([
    (0, -.42), (0, -.3), (-.1, -.3), (-.13, -.15), (-.14, 0), (.1, -.3), (.13, -.15), (.14, 0),
    (-.06, .05), (-.07, .27), (-.07, .48), (.06, .05), (.07, .27), (.07, .48),
    (-.02, -.44), (.02, -.44), (-.04, -.43), (.04, -.43)])
RWRI, LWRI, RSHO, LSHO = (CMU_PARTS.index(n) for n in (
    "right_wrist", "left_wrist", "right_shoulder", "left_shoulder"))


def person(cx, cy, height):
    j = np.zeros((NUM_PARTS, 3), np.float32)
    j[:, :2] = (cx, cy) + TEMPLATE * height
    j[:, 2] = 2
    return j


def blob_sample(parts, centre=(250.0, 200.0), height=260.0, size=(400, 500)):
    """A black image with a Gaussian blob at each chosen part, one part per channel."""
    joints = person(*centre, height)[None]
    image = np.zeros(size + (3,), np.uint8)
    yy, xx = np.mgrid[:size[0], :size[1]]
    for channel, part in enumerate(parts):
        x, y = joints[0, part, :2]
        image[..., channel] = np.rint(250 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 32))
    return Sample(image, np.full(size, 255, np.uint8), joints,
                  np.array(centre, np.float32), height / 368, 1)


def centroid(channel):
    w = channel.astype(np.float64)
    yy, xx = np.mgrid[:w.shape[0], :w.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def test_blobs_land_where_the_transformed_joints_say():
    sample = blob_sample([RWRI, LSHO, 0])
    params = AugmentParams(flip_prob=0.0, fill=0)   # a grey border would bias centroids
    for seed in range(4):
        image, mask, joints = augment(sample, np.random.default_rng(seed), params)
        assert image.shape == (368, 368, 3) and image.dtype == np.uint8
        assert mask.shape == (368, 368) and mask.dtype == np.uint8
        for channel, part in enumerate([RWRI, LSHO, 0]):
            np.testing.assert_allclose(centroid(image[..., channel]), joints[0, part, :2],
                                       atol=0.3)


def test_flip_swaps_left_and_right_and_points_still_match():
    sample = blob_sample([RWRI, LWRI, RSHO])
    params = AugmentParams(flip_prob=1.0, max_rotate=0.0, fill=0)
    image, _, joints = augment(sample, np.random.default_rng(7), params)
    # the blob drawn at the source's right wrist is now labelled left wrist, and vice versa
    np.testing.assert_allclose(centroid(image[..., 0]), joints[0, LWRI, :2], atol=0.3)
    np.testing.assert_allclose(centroid(image[..., 1]), joints[0, RWRI, :2], atol=0.3)
    np.testing.assert_allclose(centroid(image[..., 2]), joints[0, LSHO, :2], atol=0.3)
    # a person facing the camera has its right side on the image's left, before and after
    assert sample.joints[0, RSHO, 0] < sample.joints[0, LSHO, 0]
    assert joints[0, RSHO, 0] < joints[0, LSHO, 0]
    assert joints[0, RWRI, 0] < joints[0, LWRI, 0]


def test_flip_is_a_mirror_of_the_unflipped_crop():
    sample = blob_sample([RWRI, LSHO, 0])
    M = crop_transform(sample.objpos, 1.1, 25.0, (5.0, -7.0), False)
    Mf = crop_transform(sample.objpos, 1.1, 25.0, (5.0, -7.0), True)
    a = transform_sample(sample, M, False)
    b = transform_sample(sample, Mf, True)
    # equal up to warpAffine's fixed-point rounding
    assert np.abs(a[0][:, ::-1].astype(int) - b[0]).max() <= 1
    np.testing.assert_allclose(b[2][0, FLIP_CMU, 0], 367 - a[2][0, :, 0], atol=1e-3)
    np.testing.assert_allclose(b[2][0, FLIP_CMU, 1], a[2][0, :, 1], atol=1e-3)


def test_the_scale_multiplier_is_applied_with_its_full_range():
    params = AugmentParams()
    objpos, scale_provided = np.array([300.0, 200.0]), 250 / 368
    multipliers = np.array([
        transform_scale(random_transform(np.random.default_rng(s), objpos, scale_provided,
                                         params)[0]) * scale_provided / params.target_dist
        for s in range(400)])
    assert multipliers.min() >= 0.5 - 1e-9 and multipliers.max() <= 1.1 + 1e-9
    assert multipliers.min() < 0.55 and multipliers.max() > 1.05
    assert abs(multipliers.mean() - 0.8) < 0.03
    # about uniform: each third of the range holds about a third of the draws
    counts = np.histogram(multipliers, bins=3, range=(0.5, 1.1))[0]
    assert counts.min() > 100


def test_rotation_flip_and_shift_ranges():
    params = AugmentParams()
    objpos = np.array([300.0, 200.0])
    flips, shifts, angles = [], [], []
    for s in range(300):
        M, flip = random_transform(np.random.default_rng(s), objpos, 0.5, params)
        flips.append(flip)
        centre = M @ np.r_[objpos, 1]
        if flip:
            centre[0] = 367 - centre[0]
            M = M * [[-1], [1]]
        shifts.append(centre - 183.5)
        angles.append(np.degrees(np.arctan2(M[0, 1], M[0, 0])))
    assert 0.4 < np.mean(flips) < 0.6
    assert np.abs(shifts).max() <= 40 + 1e-6 and np.abs(shifts).max() > 35
    assert np.abs(angles).max() <= 40 + 1e-6 and np.abs(angles).max() > 35


def test_person_height_in_the_centre_crop_is_target_dist():
    sample = blob_sample([0, 1, 2], height=120.0)
    image, mask, joints = center_crop(sample)
    # objpos at the crop centre, main person's height 0.6 * 368 (joints span 0.92 of height)
    M = center_transform(sample.objpos, sample.scale_provided)
    np.testing.assert_allclose(M @ np.r_[sample.objpos, 1], [183.5, 183.5])
    span = joints[0, :, 1].max() - joints[0, :, 1].min()
    assert span == pytest.approx(0.92 * 0.6 * 368, rel=1e-4)


def test_person_height_follows_a_smaller_crop_size():
    sample = blob_sample([0, 1, 2], height=120.0)
    _, _, joints = center_crop(sample, AugmentParams(crop_size=184))
    span = joints[0, :, 1].max() - joints[0, :, 1].min()
    assert span == pytest.approx(0.92 * 0.6 * 184, rel=1e-4)


def test_borders_are_grey_in_the_image_and_compute_in_the_mask():
    sample = blob_sample([0, 1, 2], centre=(40.0, 30.0), height=200.0, size=(60, 80))
    sample = sample._replace(mask_miss=np.zeros((60, 80), np.uint8))
    image, mask, _ = augment(sample, np.random.default_rng(0), AugmentParams(scale_min=1.0,
                                                                              scale_max=1.0))
    assert (image[0, 0] == 128).all() and mask[0, 0] == 255
    assert (mask == 0).any()   # the source's "ignore" region is still there inside


def test_joints_outside_keep_labels_and_unlabelled_stay_zero():
    joints = np.zeros((2, NUM_PARTS, 3), np.float32)
    joints[0] = person(100, 100, 200)
    joints[1, 3] = (5000, 5000, 1)      # far outside after any crop
    M = crop_transform((100, 100), 1.0)
    out = transform_joints(joints, M)
    assert out[1, 3, 2] == 1 and out[1, 3, 0] > 368
    assert (out[1, :3] == 0).all()      # unlabelled joints keep (0, 0, 0)
    assert out.dtype == np.float32


def test_same_seed_same_sample_different_seed_different_sample():
    sample = blob_sample([0, 1, 2])
    a = augment(sample, np.random.default_rng(11))
    b = augment(sample, np.random.default_rng(11))
    c = augment(sample, np.random.default_rng(12))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])


def test_params_are_validated_and_frozen():
    with pytest.raises(ValueError):
        AugmentParams(scale_min=1.2, scale_max=1.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentParams().crop_size = 10
    with pytest.raises(ValueError):
        random_transform(np.random.default_rng(0), (0, 0), 0.0)
    assert AugmentParams().effect_stage == "source"
    with pytest.raises(ValueError, match="effect_stage"):
        AugmentParams(effect_stage="before")


def test_decode_reduction_is_the_largest_that_never_upsamples():
    got = {scale: decode_reduction(crop_transform((50, 60), scale, 33.0, flip=True))
           for scale in (1.3, 1.0, 0.51, 0.5, 0.3, 0.25, 0.2, 0.125, 0.05)}
    assert got == {1.3: 1, 1.0: 1, 0.51: 1, 0.5: 2, 0.3: 2, 0.25: 4, 0.2: 4, 0.125: 8,
                   0.05: 8}


@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_reduced_transform_maps_reduced_pixels_through_their_full_size_centres(f):
    M = crop_transform((250, 200), 0.3, -21.0, (4.0, -3.0), True)
    Mr = reduced_transform(M, f)
    uv = np.array([[0.0, 0.0], [10.0, 3.0], [57.5, 41.25]])
    full = f * uv + (f - 1) / 2          # reduced pixel u covers full pixels f u .. f u + f - 1
    np.testing.assert_allclose(uv @ Mr[:, :2].T + Mr[:, 2], full @ M[:, :2].T + M[:, 2],
                               atol=1e-9)
    assert transform_scale(Mr) == pytest.approx(f * transform_scale(M))
    # a real 1/f image: a blob lands where the full-size one does
    sample = blob_sample([0, 1, 2])
    small = cv2.resize(sample.image, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA)
    params = AugmentParams(fill=0)
    M = crop_transform(sample.objpos, 0.9 / f, 12.0)
    a = warp_image(sample.image, M, params)
    b = warp_image(small, reduced_transform(M, f), params)
    for channel in range(3):
        np.testing.assert_allclose(centroid(b[..., channel]), centroid(a[..., channel]),
                                   atol=0.15)
