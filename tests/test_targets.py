"""Ground-truth encoder: heatmaps, background and PAFs against hand-checked cases and a
literal per-cell reference implementation of the definitions in model/targets.py."""
import math

import cv2
import numpy as np
import pytest

from model.skeleton import LIMBS, NUM_PARTS, NUM_TARGET_CHANNELS
from model.targets import make_heatmaps, make_pafs, make_targets

# A standing person of height 1 (CMU order), facing the camera: right parts on image left.
TEMPLATE = np.array([
    (0, -.42), (0, -.3), (-.1, -.3), (-.13, -.15), (-.14, 0), (.1, -.3), (.13, -.15), (.14, 0),
    (-.06, .05), (-.07, .27), (-.07, .48), (.06, .05), (.07, .27), (.07, .48),
    (-.02, -.44), (.02, -.44), (-.04, -.43), (.04, -.43)])


def person(cx, cy, height, v=2):
    j = np.zeros((NUM_PARTS, 3))
    j[:, :2] = (cx, cy) + TEMPLATE * height
    j[:, 2] = v
    return j


def one_joint(part, x, y, v=2):
    j = np.zeros((1, NUM_PARTS, 3))
    j[0, part] = (x, y, v)
    return j


def cell_centre(i, stride):
    return i * stride + (stride - 1) / 2


def reference_heatmaps(joints, h, w, stride, sigma):
    """The definition, cell by cell."""
    out = np.zeros((h, w, 19))
    for i in range(h):
        for jj in range(w):
            x, y = cell_centre(jj, stride), cell_centre(i, stride)
            for p in joints:
                for k in range(NUM_PARTS):
                    if p[k, 2] > 0:
                        e = ((x - p[k, 0]) ** 2 + (y - p[k, 1]) ** 2) / (2 * sigma ** 2)
                        g = math.exp(-e) if e <= 4.6052 else 0.0
                        out[i, jj, k] = max(out[i, jj, k], g)
            out[i, jj, 18] = 1 - out[i, jj, :18].max()
    return out


def reference_pafs(joints, h, w, stride, thickness):
    total = np.zeros((h, w, 38))
    count = np.zeros((h, w, 19))
    for li, (a, b) in enumerate(LIMBS):
        for p in joints:
            if p[a, 2] <= 0 or p[b, 2] <= 0:
                continue
            d = p[b, :2] - p[a, :2]
            length = math.hypot(*d)
            if length == 0:
                continue
            u = d / length
            for i in range(h):
                for jj in range(w):
                    q = np.array([cell_centre(jj, stride), cell_centre(i, stride)]) - p[a, :2]
                    along = q @ u
                    perp = abs(q[0] * u[1] - q[1] * u[0])
                    if 0 <= along <= length and perp <= thickness * stride:
                        total[i, jj, 2 * li:2 * li + 2] += u
                        count[i, jj, li] += 1
    return total / np.maximum(count, 1).repeat(2, axis=2)


def test_peak_is_one_at_the_joint_cell_and_gaussian_around_it():
    stride, sigma = 8, 7.0
    x, y = cell_centre(5, stride), cell_centre(3, stride)
    hm = make_heatmaps(one_joint(4, x, y), (10, 12), stride, sigma)
    assert hm.shape == (10, 12, 19) and hm.dtype == np.float32
    assert hm[3, 5, 4] == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(hm[..., 4]), (10, 12)) == (3, 5)
    # one cell to the right is 8 px away; two cells diagonally 16*sqrt(2) px: below 0.01 -> 0
    assert hm[3, 6, 4] == pytest.approx(math.exp(-64 / 98), rel=1e-5)
    assert hm[5, 7, 4] == 0.0
    assert np.count_nonzero(np.delete(hm[..., :18], 4, axis=2)) == 0
    np.testing.assert_allclose(hm[..., 18], 1 - hm[..., 4], atol=1e-7)


def test_off_centre_joint_peaks_at_the_nearest_cell_below_one():
    hm = make_heatmaps(one_joint(0, 21.0, 13.0), (6, 6), 8, 7.0)
    # cells' centres are at 3.5, 11.5, 19.5, ...: nearest to (21, 13) is (row 1, col 2)
    assert np.unravel_index(np.argmax(hm[..., 0]), (6, 6)) == (1, 2)
    assert hm[1, 2, 0] == pytest.approx(math.exp(-(1.5 ** 2 + 1.5 ** 2) / 98), rel=1e-5)


def test_visibility_codes():
    j = np.zeros((1, NUM_PARTS, 3))
    j[0, 0] = (19.5, 19.5, 0)   # unlabelled: no target
    j[0, 1] = (19.5, 19.5, 1)   # occluded: still a target
    j[0, 2] = (19.5, 19.5, 2)
    hm = make_heatmaps(j, (6, 6))
    assert hm[..., 0].max() == 0
    assert hm[2, 2, 1] == pytest.approx(1) and hm[2, 2, 2] == pytest.approx(1)


def test_people_combine_by_max_not_sum():
    # two right wrists 16 px apart: between them each contributes exp(-64/98) = 0.52
    j = np.concatenate([one_joint(4, 27.5, 19.5), one_joint(4, 43.5, 19.5)])
    hm = make_heatmaps(j, (6, 8))
    assert hm[2, 3, 4] == pytest.approx(1) and hm[2, 5, 4] == pytest.approx(1)
    assert hm[2, 4, 4] == pytest.approx(math.exp(-64 / 98), rel=1e-5)
    assert hm.max() <= 1.0


def test_heatmaps_match_the_per_cell_definition_with_many_people():
    rng = np.random.default_rng(3)
    joints = np.stack([person(*rng.uniform(0, 160, 2), rng.uniform(40, 200)) for _ in range(4)])
    joints[..., 2] = rng.integers(0, 3, joints.shape[:2])
    joints[0, 3, :2] = (-30, 70)    # outside the grid, close enough for a tail inside
    joints[1, 5, :2] = (500, 500)   # far outside: no effect
    for stride, (h, w) in ((8, (20, 24)), (4, (30, 28))):
        got = make_heatmaps(joints, (h, w), stride, 7.0)
        np.testing.assert_allclose(got, reference_heatmaps(joints, h, w, stride, 7.0), atol=1e-6)


def test_stride_one_full_resolution():
    hm = make_heatmaps(one_joint(7, 30.0, 17.0), (40, 50), stride=1, sigma=7.0)
    assert hm[17, 30, 7] == pytest.approx(1.0)
    assert hm[17, 37, 7] == pytest.approx(math.exp(-0.5), rel=1e-5)
    assert np.unravel_index(np.argmax(hm[..., 7]), (40, 50)) == (17, 30)


def test_cv2_upsampling_puts_cell_values_at_their_pixel_centres():
    # The decoder upsamples with cv2.resize: cell j must land at pixel 8j + 3.5.
    hm = make_heatmaps(one_joint(0, cell_centre(4, 8), cell_centre(3, 8)), (8, 10))[..., 0]
    up = cv2.resize(hm, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)
    rows, cols = np.nonzero(up == up.max())
    assert set(rows) == {27, 28} and set(cols) == {35, 36}   # centre 27.5, 35.5


def test_paf_unit_vectors_along_limb_and_zero_elsewhere():
    j = np.zeros((1, NUM_PARTS, 3))
    # limb 0 is neck(1) -> right hip(8): horizontal along row 4, from col 2 to col 9
    j[0, 1] = (cell_centre(2, 8), cell_centre(4, 8), 2)
    j[0, 8] = (cell_centre(9, 8), cell_centre(4, 8), 2)
    paf = make_pafs(j, (10, 12))
    assert paf.shape == (10, 12, 38) and paf.dtype == np.float32
    on = np.zeros((10, 12), bool)
    on[3:6, 2:10] = True            # within 1 cell (8 px) of the segment, between its ends
    np.testing.assert_allclose(paf[on][:, 0], 1.0)
    np.testing.assert_allclose(paf[on][:, 1], 0.0)
    assert np.count_nonzero(paf[~on]) == 0
    assert np.count_nonzero(paf[..., 2:]) == 0


def test_paf_diagonal_limb_has_unit_length_in_limb_direction():
    j = np.zeros((1, NUM_PARTS, 3))
    j[0, 2] = (10, 90, 2)           # limb 7: right shoulder(2) -> right elbow(3)
    j[0, 3] = (150, 20, 1)
    paf = make_pafs(j, (16, 24))
    vec = paf[..., 14:16]
    norm = np.linalg.norm(vec, axis=-1)
    nonzero = norm > 0
    assert nonzero.sum() > 20
    np.testing.assert_allclose(norm[nonzero], 1.0, rtol=1e-6)
    u = np.array([140, -70]) / math.hypot(140, 70)
    np.testing.assert_allclose(vec[nonzero], np.broadcast_to(u, (nonzero.sum(), 2)), atol=1e-6)


def test_crossing_limbs_of_two_people_are_averaged():
    j = np.zeros((2, NUM_PARTS, 3))
    c = cell_centre(5, 8)
    j[0, 1] = (c - 32, c, 2)        # person 0: horizontal neck -> right hip
    j[0, 8] = (c + 32, c, 2)
    j[1, 1] = (c, c - 32, 2)        # person 1: vertical, crossing at cell (5, 5)
    j[1, 8] = (c, c + 32, 2)
    paf = make_pafs(j, (11, 11))
    np.testing.assert_allclose(paf[5, 5, 0:2], [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(paf[5, 2, 0:2], [1, 0], atol=1e-6)   # only person 0 here
    np.testing.assert_allclose(paf[2, 5, 0:2], [0, 1], atol=1e-6)   # only person 1 here


def test_zero_length_limb_is_skipped_without_nan():
    j = np.zeros((1, NUM_PARTS, 3))
    j[0, 1] = (40, 40, 2)
    j[0, 8] = (40, 40, 2)           # limb 0 has zero length
    j[0, 9] = (40, 90, 2)           # limb 1 (8 -> 9) is fine
    paf = make_pafs(j, (16, 16))
    assert np.isfinite(paf).all()
    assert np.count_nonzero(paf[..., 0:2]) == 0
    assert np.count_nonzero(paf[..., 2:4]) > 0


def test_pafs_match_the_per_cell_definition_with_many_people():
    rng = np.random.default_rng(5)
    joints = np.stack([person(*rng.uniform(0, 160, 2), rng.uniform(40, 200)) for _ in range(4)])
    joints[..., 2] = rng.integers(0, 3, joints.shape[:2])
    joints[3] = joints[2] + (4, 3, 0)   # near-duplicate person: overlaps everywhere
    for stride, (h, w), thick in ((8, (20, 24), 1.0), (4, (30, 28), 1.5)):
        got = make_pafs(joints, (h, w), stride, thick)
        np.testing.assert_allclose(got, reference_pafs(joints, h, w, stride, thick), atol=1e-6)


def test_make_targets_channel_order_and_empty_input():
    joints = person(100, 100, 150)[None]
    t = make_targets(joints, (23, 25), stride=8, sigma=7.0, paf_thickness=1.0)
    assert t.shape == (23, 25, NUM_TARGET_CHANNELS) and t.dtype == np.float32
    np.testing.assert_array_equal(t[..., :38], make_pafs(joints, (23, 25)))
    np.testing.assert_array_equal(t[..., 38:], make_heatmaps(joints, (23, 25)))
    empty = make_targets(np.zeros((0, NUM_PARTS, 3)), (4, 5))
    assert np.count_nonzero(empty[..., :56]) == 0 and (empty[..., 56] == 1).all()
    with pytest.raises(ValueError):
        make_targets(np.zeros((2, 17, 3)), (4, 5))
