"""The decoder: parity with a literal transcription of docs/recipe.md section 6, its rules on
hand-made cases, the coordinate convention, the resolution step and flips.

`literal_decode` below is the slow reference: one Python step per pixel test, candidate pair,
sample and (person, connection), exactly as section 6 reads, with the project's choices
(model.decode docstring) spelled out the long way. benchmarks/bench_decode.py loads it from
this file to time both in the same run.
"""
import math

import cv2
import numpy as np
import pytest
import scipy.ndimage

from model import decode, inference, targets
from model.skeleton import COCO_TO_CMU, LIMBS, NUM_PARTS

# ----------------------------------------------------------------------------- literal


def literal_decode(heatmaps, pafs, thre1=0.1, thre2=0.05, mid_num=10, min_parts=4,
                   min_mean_score=0.4):
    """Section 6, literally. Returns people as decode_poses does."""
    all_peaks = literal_peaks(heatmaps, thre1)
    candidate = [p for peaks in all_peaks for p in peaks]
    height = heatmaps.shape[0]
    connection_all = literal_connections(all_peaks, pafs, height, thre2, mid_num)
    rows = literal_assembly(connection_all, candidate)
    people = []
    for slots, total, count in rows:
        if count < min_parts or total / count < min_mean_score:
            continue
        keypoints = np.zeros((NUM_PARTS, 3))
        for p, pid in enumerate(slots):
            if pid != -1:
                x, y, s, _ = candidate[pid]
                keypoints[p] = (x, y, max(s, 1e-6))
        people.append({"keypoints": keypoints, "score": total, "num_parts": count})
    return people


def literal_peaks(heatmaps, thre1):
    """Per part: [(x, y, score, peak id)], ids running part by part."""
    all_peaks, counter = [], 0
    for part in range(NUM_PARTS):
        ori = heatmaps[:, :, part]
        smooth = scipy.ndimage.gaussian_filter(ori, sigma=3)
        left = np.zeros(smooth.shape)
        left[:, 1:] = smooth[:, :-1]
        right = np.zeros(smooth.shape)
        right[:, :-1] = smooth[:, 1:]
        up = np.zeros(smooth.shape)
        up[1:, :] = smooth[:-1, :]
        down = np.zeros(smooth.shape)
        down[:-1, :] = smooth[1:, :]
        is_peak = ((smooth >= left) & (smooth >= right) & (smooth >= up) & (smooth >= down)
                   & (smooth > thre1))
        ys, xs = np.nonzero(is_peak)
        peaks = []
        for x, y in zip(xs, ys):
            peaks.append((int(x), int(y), float(ori[y, x]), counter))
            counter += 1
        all_peaks.append(peaks)
    return all_peaks


def literal_connections(all_peaks, pafs, height, thre2, mid_num):
    """Per limb: the greedily matched [(peak id a, peak id b, limb score)]."""
    connection_all = []
    for k, (pa, pb) in enumerate(LIMBS):
        cand_a, cand_b = all_peaks[pa], all_peaks[pb]
        candidates = []
        for i, a in enumerate(cand_a):
            for j, b in enumerate(cand_b):
                vx, vy = b[0] - a[0], b[1] - a[1]
                norm = math.sqrt(vx * vx + vy * vy)
                if norm == 0:
                    continue
                ux, uy = vx / norm, vy / norm
                xs = np.linspace(a[0], b[0], num=mid_num)
                ys = np.linspace(a[1], b[1], num=mid_num)
                samples = []
                for x, y in zip(xs, ys):
                    px = float(pafs[int(round(y)), int(round(x)), 2 * k])
                    py = float(pafs[int(round(y)), int(round(x)), 2 * k + 1])
                    samples.append(px * ux + py * uy)
                samples = np.array(samples)
                score = samples.sum() / mid_num + min(0.5 * height / norm - 1, 0)
                enough = np.count_nonzero(samples > thre2) > 0.8 * mid_num
                if enough and score > 0:
                    candidates.append((i, j, score))
        candidates = sorted(candidates, key=lambda c: c[2], reverse=True)
        connections, used_a, used_b = [], set(), set()
        for i, j, score in candidates:
            if i in used_a or j in used_b:
                continue
            connections.append((cand_a[i][3], cand_b[j][3], score))
            used_a.add(i)
            used_b.add(j)
            if len(connections) >= min(len(cand_a), len(cand_b)):
                break
        connection_all.append(connections)
    return connection_all


# CMU's Python demo's limbSeq (0-based CMU part pairs): the order people are assembled in.
CMU_LIMB_SEQ = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
                (2, 16), (5, 17)]


def literal_assembly(connection_all, candidate):
    """[slots (18 peak ids or -1), total score, part count] of every person, limb by limb in
    CMU's limbSeq order; connection_all is indexed by PAF limb (the demo's mapIdx)."""
    rows = []  # [slots (18 peak ids or -1), total score, part count]
    for pa, pb in CMU_LIMB_SEQ:
        k = [tuple(int(v) for v in limb) for limb in LIMBS].index((pa, pb))
        redundant = {pa, pb} in ({2, 16}, {5, 17})
        for id_a, id_b, score in connection_all[k]:
            found = [r for r in range(len(rows))
                     if rows[r][0][pa] == id_a or rows[r][0][pb] == id_b]
            if len(found) == 1:
                row = rows[found[0]]
                has_a, has_b = row[0][pa] == id_a, row[0][pb] == id_b
                if has_a and has_b:
                    continue
                part, pid = (pb, id_b) if has_a else (pa, id_a)
                if row[0][part] != -1:
                    continue
                row[0][part] = pid
                row[1] += candidate[pid][2] + score
                row[2] += 1
            elif len(found) == 2:
                first, second = rows[found[0]], rows[found[1]]
                overlap = [p for p in range(NUM_PARTS)
                           if first[0][p] != -1 and second[0][p] != -1]
                if overlap:
                    continue
                for p in range(NUM_PARTS):
                    if second[0][p] != -1:
                        first[0][p] = second[0][p]
                first[1] = first[1] + second[1] + score
                first[2] += second[2]
                del rows[found[1]]
            elif not redundant:
                slots = [-1] * NUM_PARTS
                slots[pa], slots[pb] = id_a, id_b
                rows.append([slots, candidate[id_a][2] + candidate[id_b][2] + score, 2])
    return rows


# ----------------------------------------------------------------------------- scenes

# A standing person facing the camera (its right side on the image's left), CMU order, in
# units of its height, origin at the neck.
TEMPLATE = np.array([
    (0.0, -0.10), (0.0, 0.0), (-0.11, 0.0), (-0.14, 0.17), (-0.15, 0.32), (0.11, 0.0),
    (0.14, 0.17), (0.15, 0.32), (-0.07, 0.33), (-0.08, 0.58), (-0.08, 0.82), (0.07, 0.33),
    (0.08, 0.58), (0.08, 0.82), (-0.045, -0.14), (0.045, -0.14), (-0.09, -0.12), (0.09, -0.12),
])


def random_people(rng, num, hw, min_height=40, max_height=None, unlabelled=0.1,
                  cluster=False):
    """(num, 18, 3) CMU joints (visibility 2, or 0 at random) of jittered, rotated, scaled
    templates; `cluster` packs them side by side so that they touch and overlap."""
    h, w = hw
    max_height = max_height or 0.8 * h
    people = np.zeros((num, NUM_PARTS, 3))
    x0 = rng.uniform(0.1, 0.3) * w
    for n in range(num):
        height = rng.uniform(min_height, max_height)
        angle = rng.uniform(-0.4, 0.4)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = (TEMPLATE + rng.normal(0, 0.02, TEMPLATE.shape)) * height @ rot.T
        if cluster:
            centre = (x0 + n * rng.uniform(0.1, 0.25) * height % (0.8 * w),
                      rng.uniform(0.25 * height, h - 0.85 * height))
        else:
            centre = (rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.2 * height, h - 0.8 * height))
        people[n, :, :2] = pts + centre
        people[n, :, 2] = np.where(rng.random(NUM_PARTS) < unlabelled, 0, 2)
    inside = ((people[..., 0] >= 0) & (people[..., 0] <= w - 1)
              & (people[..., 1] >= 0) & (people[..., 1] <= h - 1))
    people[..., 2] = np.where(inside, people[..., 2], 0)
    people[people[..., 2] == 0, :2] = 0
    return people


def standing(centres, height):
    """(P, 18, 3) untilted template people with their necks at `centres`, all visible."""
    centres = np.asarray(centres, float)
    people = np.zeros((len(centres), NUM_PARTS, 3))
    people[..., :2] = TEMPLATE[None] * height + centres[:, None]
    people[..., 2] = 2
    return people


def render(people, hw, stride=1, noise=0.0, rng=None):
    """(heatmaps, pafs) of `people` from the ground-truth encoder, optionally with smooth
    noise like a network's (so thresholds and rejections are exercised)."""
    h, w = hw
    grid = (-(-h // stride), -(-w // stride))
    heat = targets.make_heatmaps(people, grid, stride=stride, sigma=7.0)
    paf = targets.make_pafs(people, grid, stride=stride, thickness=8.0 / stride)  # 8 px
    if noise:
        heat = heat + noise * scipy.ndimage.gaussian_filter(
            rng.normal(0, 1, heat.shape), (4, 4, 0)).astype(np.float32) * 4
        paf = paf + noise * scipy.ndimage.gaussian_filter(
            rng.normal(0, 1, paf.shape), (4, 4, 0)).astype(np.float32) * 4
    return heat.astype(np.float32), paf.astype(np.float32)


def assert_same_people(fast, slow):
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        np.testing.assert_array_equal(f["keypoints"], s["keypoints"])
        assert f["num_parts"] == s["num_parts"]
        assert f["score"] == pytest.approx(s["score"], rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("seed", range(4))
def test_parity_with_literal_implementation(seed):
    """Random scenes of 1 to 20 people, spread out or packed so they touch and overlap,
    clean and with noise: the fast decoder returns exactly the literal one's people."""
    rng = np.random.default_rng(seed)
    hw = (150, 200)
    people_seen = 0
    for scene in range(6):
        num = int(rng.integers(1, 21))
        people = random_people(rng, num, hw, min_height=30, max_height=120,
                               cluster=scene % 2 == 1)
        heat, paf = render(people, hw, noise=0.03 * (scene % 3), rng=rng)
        slow = literal_decode(heat, paf)
        fast = decode.decode_poses(heat, paf)
        assert_same_people(fast, slow)
        people_seen += len(slow)
    assert people_seen > 0


def test_parity_on_an_image_sized_scene():
    """The 640 x 480 case of the benchmark, at the resolution step's full-resolution output."""
    rng = np.random.default_rng(100)
    hw = (480, 640)
    people = random_people(rng, 12, hw, min_height=80, max_height=300, cluster=True)
    heat8, paf8 = render(people, hw, stride=8)
    maps = inference.to_working_grid(np.concatenate([heat8, paf8], 2), hw, 1.0, 1)
    heat, paf = maps[..., :19], maps[..., 19:]
    slow = literal_decode(heat, paf)
    assert len(slow) >= 8
    assert_same_people(decode.decode_poses(heat, paf), slow)


def test_parity_when_people_fill_only_part_of_the_map():
    """Peak finding smooths only the window around pixels above thre1 (decode.peak_window):
    a small person in a corner, one against the border and one narrow band of people give
    the literal decoder's people, and the window really is smaller than the map."""
    hw = (160, 220)
    corner = standing([(40, 20)], 70)
    edge = standing([(205, 40)], 110)                 # right arm and leg off the map
    band = standing([(100, 15), (112, 30)], 90)       # two overlapping people, a column band
    for people in (corner, edge, band):
        # Whole pixels: a joint at x.5 makes two exactly tied maxima, which float rounding of
        # the smoothing (scipy's or OpenCV's) breaks either way.
        people[..., :2] = np.round(people[..., :2])
        inside = ((people[..., 0] >= 0) & (people[..., 0] <= hw[1] - 1)
                  & (people[..., 1] >= 0) & (people[..., 1] <= hw[0] - 1))
        people[..., 2] = np.where(inside, 2, 0)
        heat, paf = render(people, hw)
        (y0, y1), (x0, x1) = decode.peak_window(heat, 0.1, (3.0, 3.0))
        assert (y1 - y0) * (x1 - x0) < hw[0] * hw[1]
        slow = literal_decode(heat, paf)
        assert len(slow) >= 1
        assert_same_people(decode.decode_poses(heat, paf), slow)
    assert decode.peak_window(np.zeros((20, 20, 19)), 0.1, (3.0, 3.0)) is None


@pytest.mark.parametrize("mid_num", [4, 20])
def test_parity_with_other_sample_counts(mid_num):
    """The probe samples depend on mid_num (how many failures reject a pair)."""
    rng = np.random.default_rng(11)
    hw = (150, 200)
    people = random_people(rng, 8, hw, min_height=30, max_height=120, cluster=True)
    heat, paf = render(people, hw, noise=0.03, rng=rng)
    slow = literal_decode(heat, paf, mid_num=mid_num)
    assert len(slow) >= 2
    assert_same_people(decode.decode_poses(heat, paf, mid_num=mid_num), slow)


def test_two_failing_samples_reject_a_limb_wherever_they_are():
    """score_pairs probes two inner samples of every pair first (two failures reject: more
    than 80 % of 10 must pass); pairs failing elsewhere are rejected by the full sampling,
    and one failure anywhere is allowed."""
    hw = (40, 60)
    a, b = np.array([[5, 20]]), np.array([[50, 20]])  # samples at x = 5, 10, ..., 50
    probes = np.rint(np.arange(1, 3) * 9 / 3).astype(int)
    assert probes.tolist() == [3, 6]

    def score(failing):
        paf = np.zeros(hw + (38,), np.float32)
        paf[:, :, 0] = 1.0
        for i in failing:
            paf[20, 5 + 5 * i, 0] = 0.0
        return decode.score_pairs(paf, np.array([0]), a, b, image_height=100)[0]

    assert score([]) == pytest.approx(1.0)
    for one in (0, 3, 6, 9):
        assert score([one]) == pytest.approx(0.9)
    for two in ([3, 6], [0, 9], [3, 9], [1, 2]):
        assert score(two) == -np.inf


# ----------------------------------------------------------------------------- conventions

def test_keypoints_come_back_at_the_rendered_pixels():
    """Maps rendered at full resolution (pixel centres at integers, model.targets) decode to
    the joints themselves: no half-pixel shift anywhere, and people_to_coco writes COCO order."""
    hw = (360, 480)
    people = standing([(80, 60), (230, 70), (390, 50)], 280)
    people[..., :2] = np.round(people[..., :2])
    heat, paf = render(people, hw)
    found = decode.decode_poses(heat, paf)
    assert len(found) == 3
    for person in found:
        kp = person["keypoints"]
        gt = min(people, key=lambda p: np.abs(p[:, :2] - kp[:, :2]).sum())
        np.testing.assert_array_equal(kp[:, :2], gt[:, :2])
        assert np.all(kp[:, 2] == pytest.approx(1.0))
    records = decode.people_to_coco(found, image_id=7)
    assert len(records) == 3
    for rec, person in zip(records, found):
        kp = np.array(rec["keypoints"]).reshape(17, 3)
        np.testing.assert_allclose(kp[:, :2], person["keypoints"][COCO_TO_CMU, :2])
        assert set(kp[:, 2]) == {1.0}
        assert rec["image_id"] == 7 and rec["category_id"] == 1
        assert rec["score"] == pytest.approx(person["score"], abs=1e-6)


def test_missing_parts_are_zero_in_people_and_records():
    hw = (360, 300)
    people = standing([(150, 60)], 300)
    people[0, 4] = 0  # right wrist not labelled
    heat, paf = render(people, hw)
    (person,) = decode.decode_poses(heat, paf)
    assert np.all(person["keypoints"][4] == 0)
    assert person["num_parts"] == 17
    kp = np.array(decode.people_to_coco([person], 1)[0]["keypoints"]).reshape(17, 3)
    right_wrist = list(COCO_TO_CMU).index(4)
    assert np.all(kp[right_wrist] == 0) and np.count_nonzero(kp[:, 2]) == 16


def test_deletion_rule_is_four_parts_and_mean_score_04():
    hw = (200, 200)
    base = np.zeros((1, NUM_PARTS, 3))
    base[0, :, :2] = np.round(TEMPLATE * 150 + (100, 30))  # no half-pixel plateaus
    three = base.copy()
    three[0, [1, 2, 3], 2] = 2          # neck, right shoulder, right elbow: 3 parts
    four = base.copy()
    four[0, [1, 2, 3, 4], 2] = 2        # + right wrist
    assert decode.decode_poses(*render(three, hw)) == []
    (person,) = decode.decode_poses(*render(four, hw))
    assert person["num_parts"] == 4
    # Faint maps: peaks of 0.15 and weak fields give a mean score below 0.4 ...
    full = base.copy()
    full[0, :, 2] = 2
    heat, paf = render(full, hw)
    heat, paf = heat * 0.15, paf * 0.2
    (strong,) = decode.decode_poses(*render(full, hw))
    assert strong["score"] / strong["num_parts"] > 0.4
    assert decode.decode_poses(heat, paf) == []
    # ... which the MATLAB thresholds (3 parts, 0.2) would keep.
    (faint,) = decode.decode_poses(heat, paf, min_parts=3, min_mean_score=0.2)
    assert 0.2 < faint["score"] / faint["num_parts"] < 0.4
    assert decode.MIN_PARTS == 4 and decode.MIN_MEAN_SCORE == 0.4


def _peaks(parts_xy):
    """A Peaks object from {part: [(x, y), ...]} with score 1."""
    rows = sorted((p, x, y) for p, pts in parts_xy.items() for x, y in pts)
    part = np.array([r[0] for r in rows])
    xy = np.array([(r[1], r[2]) for r in rows])
    return decode.Peaks(xy, part, np.ones(len(rows)), xy.astype(float))


def _connections(per_limb):
    out = []
    for k in range(len(LIMBS)):
        conns = per_limb.get(k, [])
        out.append((np.array([c[0] for c in conns], int), np.array([c[1] for c in conns], int),
                    np.array([c[2] for c in conns], float)))
    return out


def _limb(a, b):
    return next(k for k, (x, y) in enumerate(LIMBS) if (x, y) == (a, b))


def test_assembly_rules_on_hand_made_connections():
    # Peak ids: part 0 nose -> 0, 1 neck -> 1, 2 Rsho -> 2, 5 Lsho -> 3, 14 Reye -> 4,
    # 16 Rear -> 5 and 6 (two candidates).
    peaks = _peaks({0: [(10, 5)], 1: [(10, 10)], 2: [(5, 10)], 5: [(15, 10)], 14: [(8, 4)],
                    16: [(6, 5), (4, 6)]})
    # Shoulder-ear alone never starts a person.
    conns = _connections({_limb(2, 16): [(2, 5, 0.9)]})
    assert decode.assemble(peaks, conns, min_parts=2) == []
    # A chain neck-Rsho, neck-Lsho, neck-nose, nose-Reye, then Rsho-Rear and Reye-Rear with
    # a different ear peak: the eye-ear limb comes first in CMU's order and takes the ear
    # slot, the shoulder-ear connection is dropped.
    conns = _connections({_limb(1, 2): [(1, 2, 0.5)], _limb(1, 5): [(1, 3, 0.5)],
                          _limb(1, 0): [(1, 0, 0.5)], _limb(0, 14): [(0, 4, 0.5)],
                          _limb(2, 16): [(2, 5, 0.5)], _limb(14, 16): [(4, 6, 0.5)]})
    ((slots, score, count),) = decode.assemble(peaks, conns, min_parts=2)
    assert count == 6 and slots[16] == 6
    assert score == pytest.approx(6 * 1.0 + 5 * 0.5)
    # Two separate pieces joined by a connection merge when disjoint.
    conns = _connections({_limb(1, 2): [(1, 2, 0.5)], _limb(0, 14): [(0, 4, 0.5)],
                          _limb(1, 0): [(1, 0, 0.25)]})
    ((slots, score, count),) = decode.assemble(peaks, conns, min_parts=2)
    assert count == 4 and [slots[p] for p in (0, 1, 2, 14)] == [0, 1, 2, 4]
    assert score == pytest.approx(4 + 0.5 + 0.5 + 0.25)


def test_assembly_follows_cmus_limb_order():
    """ASSEMBLY_ORDER is CMU's limbSeq, each step mapped to its own PAF limb."""
    assert decode.ASSEMBLY_ORDER == tuple(CMU_LIMB_SEQ)
    assert sorted(decode.ASSEMBLY_LIMBS) == list(range(len(LIMBS)))
    for k, pair in zip(decode.ASSEMBLY_LIMBS, CMU_LIMB_SEQ):
        assert tuple(int(v) for v in LIMBS[k]) == pair
    # Indices into LIMBS (PAF channels 2k, 2k + 1): neck-Rsho is PAF limb 6, the shoulder-ear
    # limbs 9 and 13 come last.
    assert decode.ASSEMBLY_LIMBS[:2] == (6, 10) and decode.ASSEMBLY_LIMBS[-2:] == (9, 13)


def test_ear_through_the_eye_wins_over_a_shoulder_ear_connection():
    """Two people side by side; person B's right ear lies next to A's right shoulder and A's
    shoulder-ear field points at it. Assembled in PAF channel order (shoulder-ear limb 9
    before eye-ear limb 17), A takes B's ear, A's own ear is lost and B is left without one.
    In CMU's order the eye-ear limbs give each person its own ear first and the shoulder-ear
    connection, whose two ends then belong to two people, changes nothing."""
    # ids: nose 0 (A), 1 (B); neck 2, 3; Rsho 4, 5; Reye 6, 7; Rear 8 (A's), 9 (B's)
    peaks = _peaks({0: [(20, 10), (60, 10)], 1: [(20, 20), (60, 20)],
                    2: [(10, 20), (50, 20)], 14: [(18, 8), (58, 8)],
                    16: [(14, 9), (54, 9)]})
    limbs = {_limb(1, 2): [(2, 4, 0.8), (3, 5, 0.8)], _limb(1, 0): [(2, 0, 0.8), (3, 1, 0.8)],
             _limb(0, 14): [(0, 6, 0.8), (1, 7, 0.8)], _limb(14, 16): [(6, 8, 0.8), (7, 9, 0.8)]}
    limbs[_limb(2, 16)] = [(4, 9, 0.7)]        # A's shoulder -> B's ear
    conns = _connections(limbs)
    people = decode.assemble(peaks, conns, min_parts=2)
    ears = sorted((slots[1], slots[16]) for slots, _, _ in people)
    assert ears == [(2, 8), (3, 9)]            # each neck with its own ear
    assert all(count == 5 for _, _, count in people)
    # The same connections assembled in PAF channel order give the wrong people.
    original = decode.ASSEMBLY_LIMBS
    try:
        decode.ASSEMBLY_LIMBS = tuple(range(len(LIMBS)))
        wrong = decode.assemble(peaks, conns, min_parts=2)
    finally:
        decode.ASSEMBLY_LIMBS = original
    assert sorted((slots[1], slots[16]) for slots, _, _ in wrong) == [(2, 9), (3, -1)]
    # The literal transcription (CMU's order) agrees with the fast assembly.
    candidate = [(x, y, 1.0, i) for i, (x, y) in enumerate(peaks.xy.tolist())]
    literal = literal_assembly([list(zip(*(c.tolist() for c in limb))) for limb in conns],
                               candidate)
    assert sorted((r[0][1], r[0][16]) for r in literal) == [(2, 8), (3, 9)]


def test_conflicting_pieces_are_not_merged():
    # Two people each holding a right shoulder; a neck-nose connection links them.
    peaks = _peaks({0: [(10, 5)], 1: [(10, 10)], 2: [(5, 10), (6, 12)], 14: [(8, 4)]})
    # ids: nose 0, neck 1, Rsho 2 and 3, Reye 4
    conns = _connections({_limb(1, 2): [(1, 2, 0.5)], _limb(0, 14): [(0, 4, 0.5)],
                          _limb(2, 3): []})
    merged = decode.assemble(peaks, conns, min_parts=2)
    assert len(merged) == 2
    # A piece with its own Rsho (via an elbow) cannot merge with neck+Rsho.
    peaks = _peaks({1: [(10, 10)], 2: [(5, 10), (6, 12)], 3: [(4, 20)], 0: [(10, 5)]})
    # ids: nose 0, neck 1, Rsho 2, 3, Relb 4
    conns = _connections({_limb(1, 2): [(1, 2, 0.5)], _limb(2, 3): [(3, 4, 0.5)],
                          _limb(1, 0): [(1, 0, 0.5)]})
    people = decode.assemble(peaks, conns, min_parts=2)
    assert sorted(c for _, _, c in people) == [2, 3]


def test_greedy_matching_takes_best_scores_first():
    scores = np.array([[0.9, 0.8, -np.inf], [0.85, 0.1, 0.3], [-np.inf, -np.inf, -np.inf]])
    i, j, s = decode.greedy_match(scores)
    assert list(zip(i, j)) == [(0, 0), (1, 2)]
    np.testing.assert_allclose(s, [0.9, 0.3])
    # At most min(nA, nB) connections.
    i, _, _ = decode.greedy_match(np.ones((1, 4)))
    assert list(i) == [0]


def test_limb_score_distance_prior_and_sample_fraction():
    hw = (100, 100)
    paf = np.zeros(hw + (38,), np.float32)
    paf[:, :, 0] = 1.0   # limb 0 points along +x everywhere
    a = np.array([[10, 50]])
    b = np.array([[30, 50], [90, 50], [10, 80]])
    s = decode.score_limb(paf, 0, a, b, image_height=100)
    assert s[0, 0] == pytest.approx(1.0)                 # short: no penalty
    assert s[0, 1] == pytest.approx(1.0 + 0.5 * 100 / 80 - 1)   # longer than H/2
    assert s[0, 2] == -np.inf                            # perpendicular: rejected
    paf[50, 20:31, 0] = 0.0                              # 3 of 10 samples below thre2
    assert decode.score_limb(paf, 0, a, b[:1], 100)[0, 0] == -np.inf


# ----------------------------------------------------------------------------- resolution

def test_resolution_step_matches_the_reference_three_step_resize():
    """Upsample x8, crop the padding, resize to the image (the reference) == one resize."""
    rng = np.random.default_rng(5)
    h, w, scale = 301, 397, 0.75
    hs, ws = round(h * scale), round(w * scale)
    net = scipy.ndimage.gaussian_filter(rng.random((-(-hs // 8), -(-ws // 8), 5)),
                                        (1.5, 1.5, 0)).astype(np.float32)
    up = cv2.resize(net, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)[:hs, :ws]
    ref = cv2.resize(up, (w, h), interpolation=cv2.INTER_CUBIC)
    ours = inference.to_working_grid(net, (h, w), scale, resolution=1)
    assert ours.shape == ref.shape
    # The reference resizes twice (two rounds of cubic smoothing and its crop is off by the
    # rounding of the scaled size); the inner part agrees closely.
    assert np.abs(ours - ref)[8:-8, 8:-8].max() < 0.02
    # At scale 1 there is no second resize: identical to upsampling and cropping.
    net1 = scipy.ndimage.gaussian_filter(rng.random((-(-h // 8), -(-w // 8), 5)),
                                         (1.5, 1.5, 0)).astype(np.float32)
    up1 = cv2.resize(net1, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)[:h, :w]
    np.testing.assert_allclose(inference.to_working_grid(net1, (h, w), 1.0), up1, atol=1e-5)


@pytest.mark.parametrize("resolution", [2, 4])
def test_coarse_grid_with_refinement_finds_joints_within_a_pixel(resolution):
    """A stride-8 rendering taken to a coarse working grid: joints come back in image
    coordinates within a pixel (sub-pixel refinement), not only within r / 2."""
    rng = np.random.default_rng(6)
    hw = (480, 640)
    people = random_people(rng, 4, hw, min_height=200, max_height=300, unlabelled=0.0)
    heat8, paf8 = render(people, hw, stride=8)
    maps = inference.to_working_grid(np.concatenate([heat8, paf8], 2), hw, 1.0, resolution)
    _, pixel = inference.working_grid(hw, resolution)
    found = decode.decode_poses(maps[..., :19], maps[..., 19:], pixel_size=pixel, refine=True)
    assert len(found) == 4
    errors = []
    for person in found:
        kp = person["keypoints"]
        gt = min(people, key=lambda p: np.abs(p[:, :2] - kp[:, :2]).sum())
        errors.append(np.hypot(*(kp[:, :2] - gt[:, :2]).T))
    errors = np.concatenate(errors)
    # Without refinement the error would be up to r / 2 (median about 1.5 px at r = 4).
    assert np.median(errors) < 0.5 and errors.max() < 1.0


def test_grid_pafs_read_what_the_resampling_puts_there():
    """GridPafs at r > 1 reads the network maps at the requested pixels only; the values are
    those of to_working_grid (bilinear), scales, flips and weights included; at r = 1 it
    holds the cubic resampling itself. Also on CMU's PAF grid (cell j at 8j), where both
    read 3.5 / 8 cells further on (by taps at r > 1, by interpolation matrices densely)."""
    rng = np.random.default_rng(8)
    hw = (301, 397)
    for resolution, origin in ((2, 3.5), (3, 3.5), (1, 3.5), (2, 0.0), (1, 0.0)):
        grid = inference.GridPafs(hw, resolution)
        expected = 0.0
        for scale, flipped, weight in ((1.0, False, 0.5), (0.75, True, 0.3), (1.3, False, 0.2)):
            cells = (-(-round(hw[0] * scale) // 8), -(-round(hw[1] * scale) // 8))
            net = rng.normal(0, 1, cells + (38,)).astype(np.float32)
            grid.add(net, scale, flipped, weight, origin=origin)
            dense = inference.to_working_grid(net, hw, scale, resolution, origin=origin)
            expected = expected + weight * (inference.unflip_pafs(dense) if flipped else dense)
        assert grid.shape == expected.shape
        np.testing.assert_allclose(grid.dense(), expected, atol=1e-5)
        ys = rng.integers(0, expected.shape[0], (40, 10))
        xs = rng.integers(0, expected.shape[1], (40, 10))
        limbs = rng.integers(0, 19, (40, 1))
        vx, vy = grid.sample(limbs, xs, ys)
        np.testing.assert_allclose(vx, expected[ys, xs, 2 * limbs], atol=1e-4)
        np.testing.assert_allclose(vy, expected[ys, xs, 2 * limbs + 1], atol=1e-4)


def test_shifted_resampling_is_cv2s_resize_read_further_on():
    """to_working_grid on CMU's PAF grid: with a zero shift its separable resampling is
    cv2.resize (cubic and bilinear, borders included); with CMU's origin a linear ramp comes
    back (bilinearly, which reproduces ramps exactly) 3.5 input pixels along, i.e. where the
    targets' grid puts that value."""
    rng = np.random.default_rng(12)
    hw, scale = (301, 397), 0.75
    net = rng.normal(0, 1, (-(-round(hw[0] * scale) // 8), -(-round(hw[1] * scale) // 8), 4))
    net = net.astype(np.float32)
    for resolution in (1, 2):
        (h, w), (py, px) = inference.working_grid(hw, resolution)
        ours = inference._shifted_resample(net, (h, w), (8 / (py * scale), 8 / (px * scale)),
                                           0.0, cubic=resolution == 1)
        np.testing.assert_allclose(ours, inference.to_working_grid(net, hw, scale, resolution),
                                   atol=1e-4)
    # A ramp equal to the input pixel a cell describes: on CMU's grid cell j holds 8j.
    cells = (40, 50)
    ramp = np.broadcast_to((8.0 * np.arange(cells[1]))[None, :, None], cells + (1,))
    x = 2.0 * np.arange(10, 190) + 0.5          # image x of working pixels 10.. at r = 2
    out = inference.to_working_grid(ramp.astype(np.float32), (320, 400), 1.0, 2, origin=0.0)
    np.testing.assert_allclose(out[5, 10:190, 0], x, atol=1e-3)
    wrong = inference.to_working_grid(ramp.astype(np.float32), (320, 400), 1.0, 2)
    np.testing.assert_allclose(wrong[5, 10:190, 0], x - 3.5, atol=1e-3)


def test_decoding_with_grid_pafs_equals_decoding_resampled_pafs():
    rng = np.random.default_rng(9)
    hw = (480, 640)
    people = random_people(rng, 10, hw, min_height=100, max_height=300, cluster=True)
    heat8, paf8 = render(people, hw, stride=8, noise=0.03, rng=rng)
    settings = inference.InferenceSettings(resolution=2)
    heat, grid = inference.maps_to_grid(heat8, paf8, hw, 1.0, 2)
    assert heat.shape == (240, 320, 18) and isinstance(grid, inference.GridPafs)
    lazy = inference.decode_maps(heat, grid, hw, settings)
    dense = inference.decode_maps(heat, inference.to_working_grid(paf8, hw, 1.0, 2), hw, settings)
    assert len(lazy) == len(dense) >= 8
    for f, s in zip(lazy, dense):
        np.testing.assert_array_equal(f["keypoints"], s["keypoints"])
        assert f["score"] == pytest.approx(s["score"], abs=1e-4)


def test_flipped_maps_are_flipped_back():
    """Maps rendered for the mirrored image, flipped back, equal the image's own maps."""
    rng = np.random.default_rng(7)
    hw = (120, 161)
    people = random_people(rng, 2, hw, min_height=60, max_height=100, unlabelled=0.0)
    heat, paf = render(people, hw)
    mirrored = people.copy()
    mirrored[..., 0] = hw[1] - 1 - people[..., 0]
    mirrored = mirrored[:, inference.FLIP_CMU]   # a mirrored right arm is a left arm
    heat_m, paf_m = render(mirrored, hw)
    back_h, back_p = inference.unflip_maps(heat_m, paf_m)
    np.testing.assert_allclose(back_h, heat, atol=1e-5)
    np.testing.assert_allclose(back_p, paf, atol=1e-5)


def test_bad_map_shapes_are_rejected():
    with pytest.raises(ValueError, match="pafs must be"):
        decode.decode_poses(np.zeros((10, 10, 19)), np.zeros((10, 11, 38)))
    with pytest.raises(ValueError, match="heatmaps must be"):
        decode.decode_poses(np.zeros((10, 10)), np.zeros((10, 10, 38)))
    assert decode.decode_poses(np.zeros((10, 10, 19)), np.zeros((10, 10, 38))) == []
