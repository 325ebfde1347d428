"""Maps -> people: peak finding, limb scoring and greedy assembly (docs/recipe.md section 6).

The algorithm is section 6's, vectorised: peaks of all parts at once (smoothing only the
window of the maps where a peak can be, peak_window), the candidate pairs of all limbs scored
in one NumPy pass (two probe samples per pair first: two failing samples already reject it),
greedy matching with one sort per limb and a loop over accepted connections, and assembly
with one step per accepted connection through a part -> person lookup. Every shortcut gives
exactly what the full computation gives. A literal slow transcription lives in
tests/test_decode.py; both return the same people (exact ties between neighbouring pixels
aside, which the smoothing's float rounding breaks either way: scipy's there, OpenCV's here).

Choices where the references differ or are silent (all tested):

* Deletion: people with fewer than 4 parts or a mean score below 0.4 are dropped
  (the Python reference's thresholds, MIN_PARTS / MIN_MEAN_SCORE; CMU's MATLAB uses 3 / 0.2).
  A person's score is the sum of its parts' heatmap peaks plus its connections' limb scores;
  the mean score is that sum over the number of parts.
* Assembly runs limb by limb in the order of CMU's demos (ASSEMBLY_ORDER: the torso and
  arms, the legs, the head, the two shoulder-ear limbs last), not in PAF channel order; each
  limb still reads its own PAF channels (2k, 2k + 1 of its index k in LIMBS). The order
  matters where an ear is reachable both ways: through the eye first, the ear an eye-ear
  limb found keeps the slot and a shoulder-ear connection only fills an ear left empty.
* Shoulder-ear limbs only add an ear to an existing person, never start one (CMU's rule for
  its two redundant limbs; the ears are reached through the eyes as well).
* A connection whose two parts already belong to two people merges them when their parts are
  disjoint; when they conflict, the connection is dropped. A connection that would put a
  second peak into a part slot that is already taken is dropped too. (CMU's Python demo
  overwrites the slot there and counts the part twice; dropping keeps every count right.)
* Peaks: Gaussian smoothing (sigma 3 image pixels, reflect border, radius 4 sigma), a
  4-neighbour local maximum (>=, zero outside the map) above thre1 on the smoothed map, the
  score read from the unsmoothed map. Peak ids run part by part, row-major inside a part.

Coordinates: maps are sampled at pixel centres with integer coordinates, the convention of
model.targets and of cv2.resize, so a peak at map pixel (u, v) is a joint at x = u, y = v in
the annotations' coordinates. Maps at a lower resolution than the image (inference's working
grid) pass `pixel_size` = image pixels per map pixel; coordinates are then mapped to
x = (u + 0.5) * pixel_size - 0.5, the same pixel-centre alignment cv2.resize uses.
"""
import math

import cv2
import numpy as np

from model.skeleton import COCO_TO_CMU, LIMBS, NUM_LIMBS, NUM_PARTS

THRE1 = 0.1          # peak threshold on the smoothed heatmap
THRE2 = 0.05         # PAF threshold of a limb sample
MID_NUM = 10         # samples along a candidate limb
PEAK_SIGMA = 3.0     # smoothing before peak finding, in image pixels
MIN_PARTS = 4        # the Python reference's deletion rule (MATLAB: 3 parts ...)
MIN_MEAN_SCORE = 0.4  # (... and 0.2)
# Fraction of a limb's samples that must exceed thre2.
SAMPLE_FRACTION = 0.8
# Shoulder-ear limbs: they attach an ear to a person but never create one.
REDUNDANT_LIMBS = frozenset(int(k) for k, (a, b) in enumerate(LIMBS)
                            if {int(a), int(b)} in ({2, 16}, {5, 17}))
# The order in which CMU's demos assemble people (their limbSeq, CMU part indices): the
# redundant shoulder-ear limbs last, so that they only fill an ear the eyes left empty.
ASSEMBLY_ORDER = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
                  (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
                  (2, 16), (5, 17))
# The same order as indices k into LIMBS (whose PAF channels are 2k and 2k + 1).
ASSEMBLY_LIMBS = tuple(next(k for k, (a, b) in enumerate(LIMBS) if (int(a), int(b)) == pair)
                       for pair in ASSEMBLY_ORDER)


def _pixel_size(pixel_size):
    """(py, px): image pixels per map pixel along y and x."""
    if np.ndim(pixel_size) == 0:
        return float(pixel_size), float(pixel_size)
    py, px = pixel_size
    return float(py), float(px)


def gaussian_radius(sigma):
    """Kernel half width that scipy.ndimage.gaussian_filter uses (truncate = 4)."""
    return int(4.0 * sigma + 0.5)


def smooth_heatmaps(heatmaps, sigma_yx):
    """Gaussian smoothing, border reflected like scipy's default: (h, w, C) contiguous, C = 18
    or 19. A 19th (background) channel is smoothed too, which is cheaper than copying the 18
    parts out of a contiguous 19-channel map; callers ignore it."""
    sy, sx = sigma_yx
    ksize = (2 * gaussian_radius(sx) + 1, 2 * gaussian_radius(sy) + 1)
    maps = np.asarray(heatmaps, dtype=np.float32)
    if not maps.flags.c_contiguous:
        maps = np.ascontiguousarray(maps[..., :NUM_PARTS])
    if sx <= 0 and sy <= 0:
        return maps
    out = cv2.GaussianBlur(maps, ksize, sigmaX=sx, sigmaY=sy, borderType=cv2.BORDER_REFLECT)
    return out.reshape(maps.shape)


def peak_window(heatmaps, thre1, sigma_yx):
    """((y0, y1), (x0, x1)): the part of the maps that peak finding must smooth, or None when
    no part value exceeds thre1.

    Smoothing averages values within a kernel radius R (positive weights summing to 1), so a
    smoothed value can exceed thre1 only within R of a pixel that does. B = the bounding box of
    those pixels: peaks lie within B + R, their neighbours within B + R + 1, and these are
    smoothed exactly from the window B + 2R + 1 (its cut edges reflect only values of pixels
    at most thre1, which cannot create a peak). With few people most of the map is skipped."""
    above = heatmaps[..., :NUM_PARTS] > thre1
    rows = np.flatnonzero(above.any(axis=(1, 2)))
    if len(rows) == 0:
        return None
    # (any over axis 0, then 1, is many times faster than any over axes (0, 2) at once)
    cols = np.flatnonzero(above[rows[0]:rows[-1] + 1].any(axis=0).any(axis=1))
    reach_y, reach_x = (2 * gaussian_radius(s) + 1 for s in sigma_yx)
    h, w = heatmaps.shape[:2]
    y0, y1 = max(rows[0] - reach_y, 0), min(rows[-1] + 1 + reach_y, h)
    x0, x1 = max(cols[0] - reach_x, 0), min(cols[-1] + 1 + reach_x, w)
    # A band of rows is a contiguous view, a band of columns must be copied first (about a
    # fifth of the cost of smoothing it): narrow the columns only when that pays clearly.
    if x1 - x0 > 0.75 * w:
        x0, x1 = 0, w
    return (y0, y1), (x0, x1)


class Peaks:
    """All peaks of one image, numbered part by part (ids are row indices of these arrays).

    xy: (N, 2) int map pixel (x, y); part: (N,); score: (N,) unsmoothed heatmap value;
    out_xy: (N, 2) float image coordinates (refined to sub-pixel when asked);
    start: (19,) the first id of every part (start[p]:start[p+1] are part p's peaks)."""

    def __init__(self, xy, part, score, out_xy):
        self.xy, self.part, self.score, self.out_xy = xy, part, score, out_xy
        self.start = np.searchsorted(part, np.arange(NUM_PARTS + 1))

    def of_part(self, p):
        return np.arange(self.start[p], self.start[p + 1])


def find_peaks(heatmaps, thre1=THRE1, sigma=PEAK_SIGMA, pixel_size=1.0, refine=False):
    """Section 6 peaks of the 18 part channels (a 19th, the background, is ignored)."""
    py, px = _pixel_size(pixel_size)
    heatmaps = np.asarray(heatmaps)
    sigma_yx = (sigma / py, sigma / px)
    window = peak_window(heatmaps, thre1, sigma_yx)
    if window is None:
        return _no_peaks()
    (y0, y1), (x0, x1) = window
    smooth = smooth_heatmaps(heatmaps[y0:y1, x0:x1], sigma_yx)
    h, w, n = smooth.shape
    # Only pixels above the threshold can be peaks: test their neighbours sparsely (flat
    # indices, one gather each) instead of comparing whole shifted copies of the maps. Up and
    # down first: they need no coordinates and leave about one pixel per blob column, so the
    # (slow) integer divisions that give x, for the left and right tests, run on few pixels.
    flat = smooth.ravel()
    above = smooth > thre1
    above[..., NUM_PARTS:] = False              # the background channel has no peaks
    index = np.flatnonzero(above)
    row = w * n
    up = _neighbour(flat, index, -row, index >= row)
    down = _neighbour(flat, index, row, index < flat.size - row)
    centre = flat[index]
    keep = (centre >= up) & (centre >= down)
    index, centre, up, down = index[keep], centre[keep], up[keep], down[keep]
    ys, rest = np.divmod(index, row)
    xs, ps = np.divmod(rest, n)
    left = _neighbour(flat, index, -n, xs > 0)
    right = _neighbour(flat, index, n, xs < w - 1)
    keep = (centre >= left) & (centre >= right)
    ys, xs, ps = ys[keep], xs[keep], ps[keep]
    order = np.lexsort((xs, ys, ps))            # part, then row, then column
    ys, xs, ps = ys[order] + y0, xs[order] + x0, ps[order]
    score = heatmaps[ys, xs, ps].astype(np.float64)
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    if refine and len(ys):
        # Vertex of the parabola through the smoothed values at the peak and its neighbours:
        # removes most of the quantisation of a coarse working grid.
        c = centre[keep][order].astype(np.float64)
        fx += _parabola_offset(left[keep][order], c, right[keep][order])
        fy += _parabola_offset(up[keep][order], c, down[keep][order])
    out_xy = np.stack([(fx + 0.5) * px - 0.5, (fy + 0.5) * py - 0.5], axis=1)
    return Peaks(np.stack([xs, ys], axis=1), ps, score, out_xy)


def _no_peaks():
    empty = np.zeros(0, np.intp)
    return Peaks(np.zeros((0, 2), np.intp), empty, np.zeros(0), np.zeros((0, 2)))


def _neighbour(flat, index, step, inside):
    """flat[index + step] where `inside`, else 0 (the reference's zero outside the map)."""
    values = np.zeros(len(index), flat.dtype)
    values[inside] = flat[index[inside] + step]
    return values


def _parabola_offset(before, centre, after):
    before, after = before.astype(np.float64), after.astype(np.float64)
    curvature = before - 2.0 * centre + after
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (before - after) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def paf_at(pafs, limb, xs, ys):
    """(vx, vy) float64 of `limb`'s field at map pixels (xs, ys): pafs is an (H, W, 38) array
    or an object with sample(limb, xs, ys) (model.inference.GridPafs, which reads the
    network's maps at those pixels instead of resampling them whole)."""
    if isinstance(pafs, np.ndarray):
        return (pafs[ys, xs, 2 * limb].astype(np.float64),
                pafs[ys, xs, 2 * limb + 1].astype(np.float64))
    return pafs.sample(limb, xs, ys)


def candidate_pairs(peaks):
    """Every candidate connection of every limb: (limb, id_a, id_b) int arrays ordered by
    limb, then A's peak, then B's (section 6's double loop, flattened for all limbs)."""
    first_a, first_b = peaks.start[LIMBS[:, 0]], peaks.start[LIMBS[:, 1]]
    num_a = peaks.start[LIMBS[:, 0] + 1] - first_a
    num_b = peaks.start[LIMBS[:, 1] + 1] - first_b
    count = num_a * num_b
    limb = np.repeat(np.arange(NUM_LIMBS), count)
    t = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    i, j = np.divmod(t, num_b[limb]) if len(t) else (t, t)
    return limb, first_a[limb] + i, first_b[limb] + j


def _samples_needed(mid_num):
    """How many of mid_num samples must exceed thre2: more than SAMPLE_FRACTION of them."""
    counts = np.arange(mid_num + 1)
    return int(counts[counts > SAMPLE_FRACTION * mid_num][0]) if mid_num > 0 else 1


def _along(pafs, limb, a, vec, unit, t):
    """PAF . unit direction at the points a + vec * t of each pair: (N, len(t))."""
    xs = np.rint(a[:, 0, None] + vec[:, 0, None] * t).astype(np.intp)
    ys = np.rint(a[:, 1, None] + vec[:, 1, None] * t).astype(np.intp)
    vx, vy = paf_at(pafs, limb[:, None], xs, ys)
    return vx * unit[:, 0, None] + vy * unit[:, 1, None]


def score_pairs(pafs, limb, a_xy, b_xy, image_height, thre2=THRE2, mid_num=MID_NUM):
    """Limb scores of candidate pairs: limb (N,) and their ends a_xy, b_xy (N, 2) map pixels
    -> (N,) float64, -inf where rejected.

    score = mean over mid_num samples of PAF . unit(B - A) + min(0.5 * H / |B - A| - 1, 0);
    a pair is kept when more than 80 % of the samples exceed thre2 and the score is > 0.
    All limbs are scored in one pass, so the cost is a few NumPy calls whatever the number
    of limbs and people."""
    limb = np.asarray(limb)
    a = a_xy.astype(np.float64)
    vec = b_xy.astype(np.float64) - a                            # (N, 2)
    norm = np.sqrt(vec[:, 0] * vec[:, 0] + vec[:, 1] * vec[:, 1])
    valid = norm > 0                                             # coincident peaks: no limb
    safe = np.where(valid, norm, 1.0)
    unit = vec / safe[:, None]
    t = np.arange(mid_num, dtype=np.float64) / max(mid_num - 1, 1)   # mid_num = 1: A alone
    # With 10 samples at most one may fail thre2, so two failing samples reject a pair: probe
    # that many evenly spread inner samples of every pair first and sample the whole limb only
    # for the pairs that survive (most pairs join parts of different people and fail). The
    # probes are samples of the full set, so the result is the same as sampling everything.
    needed = _samples_needed(mid_num)
    probes = mid_num - needed + 1
    if 0 < probes < mid_num:
        picks = np.rint(np.arange(1, probes + 1) * (mid_num - 1) / (probes + 1)).astype(int)
        failed = _along(pafs, limb, a, vec, unit, t[picks]) <= thre2
        valid &= ~failed.all(axis=1)
    score = np.full(len(limb), -np.inf)
    keep = np.flatnonzero(valid)
    if len(keep) == 0 or needed > mid_num:
        return score
    along = _along(pafs, limb[keep], a[keep], vec[keep], unit[keep], t)
    total = along.sum(axis=-1) / mid_num + np.minimum(0.5 * image_height / safe[keep] - 1.0, 0.0)
    passed = (along > thre2).sum(axis=-1) >= needed
    score[keep] = np.where(passed & (total > 0), total, -np.inf)
    return score


def score_limb(pafs, limb, a_xy, b_xy, image_height, thre2=THRE2, mid_num=MID_NUM):
    """score_pairs for every (A, B) pair of one limb: (nA, nB) float64, -inf where rejected."""
    na, nb = len(a_xy), len(b_xy)
    ia, ib = np.divmod(np.arange(na * nb), nb)
    scores = score_pairs(pafs, np.full(na * nb, limb), a_xy[ia], b_xy[ib], image_height,
                         thre2, mid_num)
    return scores.reshape(na, nb)


def greedy_match(scores):
    """Section 6's greedy matching: highest score first, each candidate used once, at most
    min(nA, nB) connections. Ties go to the lower (i, j), as the reference's stable sort.

    Returns (i, j, score) arrays in acceptance order. One sort, then a plain loop over the
    accepted candidates only (there are few: rejected pairs are -inf)."""
    flat = scores.ravel()
    candidates = np.flatnonzero(flat > -np.inf)
    order = candidates[np.argsort(-flat[candidates], kind="stable")]
    limit = min(scores.shape) if scores.size else 0
    used_i, used_j, accepted = set(), set(), []
    for index in order.tolist():
        i, j = divmod(index, scores.shape[1])
        if i in used_i or j in used_j:
            continue
        used_i.add(i)
        used_j.add(j)
        accepted.append((i, j, flat[index]))
        if len(accepted) >= limit:
            break
    if not accepted:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.float64)
    i, j, s = zip(*accepted)
    return np.array(i, np.intp), np.array(j, np.intp), np.array(s, np.float64)


def find_connections(peaks, pafs, image_height, thre2=THRE2, mid_num=MID_NUM):
    """Per limb: (idA, idB, score) arrays of the accepted connections (peak ids)."""
    limb, id_a, id_b = candidate_pairs(peaks)
    scores = score_pairs(pafs, limb, peaks.xy[id_a], peaks.xy[id_b], image_height, thre2,
                         mid_num)
    bounds = np.searchsorted(limb, np.arange(NUM_LIMBS + 1))
    connections = []
    for k, (pa, pb) in enumerate(LIMBS):
        ida, idb = peaks.of_part(pa), peaks.of_part(pb)
        block = scores[bounds[k]:bounds[k + 1]].reshape(len(ida), len(idb))
        i, j, s = greedy_match(block)
        connections.append((ida[i], idb[j], s))
    return connections


def assemble(peaks, connections, min_parts=MIN_PARTS, min_mean_score=MIN_MEAN_SCORE):
    """Connections (per limb, in LIMBS order) -> people, limb by limb in ASSEMBLY_ORDER:
    list of (slots (18,) peak ids or -1, total score, part count)."""
    people = {}        # creation number -> [slots list, score, count]; dicts keep order
    owner = {}         # peak id -> creation number of the person holding it
    created = 0
    for k in ASSEMBLY_LIMBS:
        ids_a, ids_b, conn_scores = connections[k]
        pa, pb = int(LIMBS[k][0]), int(LIMBS[k][1])
        for a, b, s in zip(ids_a.tolist(), ids_b.tolist(), conn_scores.tolist()):
            ra, rb = owner.get(a), owner.get(b)
            if ra is None and rb is None:
                if k in REDUNDANT_LIMBS:
                    continue
                slots = [-1] * NUM_PARTS
                slots[pa], slots[pb] = a, b
                people[created] = [slots, peaks.score[a] + peaks.score[b] + s, 2]
                owner[a] = owner[b] = created
                created += 1
            elif ra is not None and rb is not None:
                if ra == rb:
                    continue
                first, second = min(ra, rb), max(ra, rb)
                p1, p2 = people[first], people[second]
                if any(x >= 0 and y >= 0 for x, y in zip(p1[0], p2[0])):
                    continue
                for part, pid in enumerate(p2[0]):
                    if pid >= 0:
                        p1[0][part] = pid
                        owner[pid] = first
                p1[1] = p1[1] + p2[1] + s
                p1[2] += p2[2]
                del people[second]
            else:
                holder, part, pid = (ra, pb, b) if ra is not None else (rb, pa, a)
                person = people[holder]
                if person[0][part] >= 0:
                    continue
                person[0][part] = pid
                person[1] += peaks.score[pid] + s
                person[2] += 1
                owner[pid] = holder
    return [(slots, score, count) for slots, score, count in people.values()
            if count >= min_parts and score / count >= min_mean_score]


def decode_poses(heatmaps, pafs, thre1=THRE1, thre2=THRE2, mid_num=MID_NUM, *,
                 sigma=PEAK_SIGMA, pixel_size=1.0, refine=False,
                 min_parts=MIN_PARTS, min_mean_score=MIN_MEAN_SCORE):
    """Section 6 decoding of one image's maps.

    heatmaps: (H, W, 19 or 18) and pafs: (H, W, 38), float, at image resolution or at a
    working grid of `pixel_size` image pixels per map pixel (then sigma is still in image
    pixels and keypoints come back in image coordinates, see the module docstring). pafs may
    also be an object with `shape` and sample(limb, xs, ys) (model.inference.GridPafs).
    refine: sub-pixel peak positions (parabola through the smoothed neighbours) in the output;
    the limbs are always scored from the integer peaks.

    Returns a list of people in assembly order, each {"keypoints": (18, 3) float64 x, y,
    score in CMU order with zeros for missing parts (a found part's score is > 0), "score":
    total score (sum of the parts' peak values and the connections' limb scores),
    "num_parts": int}."""
    heatmaps = np.asarray(heatmaps)
    if not hasattr(pafs, "sample"):
        pafs = np.asarray(pafs)
    if heatmaps.ndim != 3 or heatmaps.shape[2] < NUM_PARTS:
        raise ValueError(f"heatmaps must be (H, W, 19), got {heatmaps.shape}")
    if pafs.shape != heatmaps.shape[:2] + (2 * NUM_LIMBS,):
        raise ValueError(f"pafs must be {heatmaps.shape[:2] + (2 * NUM_LIMBS,)}, "
                         f"got {pafs.shape}")
    peaks = find_peaks(heatmaps, thre1, sigma, pixel_size, refine)
    # The distance prior compares a limb's length with half the image height; both are in
    # map pixels here, so the ratio does not depend on the working resolution.
    connections = find_connections(peaks, pafs, heatmaps.shape[0], thre2, mid_num)
    people = []
    for slots, score, count in assemble(peaks, connections, min_parts, min_mean_score):
        keypoints = np.zeros((NUM_PARTS, 3))
        slots = np.asarray(slots)
        found = slots >= 0
        keypoints[found, :2] = peaks.out_xy[slots[found]]
        # A found part keeps a positive score even where a network's unsmoothed map dips to
        # zero under a smoothed peak: score > 0 is what marks a part as found.
        keypoints[found, 2] = np.maximum(peaks.score[slots[found]], 1e-6)
        people.append({"keypoints": keypoints, "score": float(score), "num_parts": int(count)})
    return people


def people_to_coco(people, image_id, category_id=1):
    """People -> COCO keypoint result records (17 keypoints in COCO order).

    x, y are written as decoded, without a shift: maps, targets and annotations share one
    pixel-centre convention (module docstring), so an unbiased decoder gives unbiased
    coordinates. Visibility is 1 for a found part and (0, 0, 0) for a missing one (COCOeval
    reads only x and y of detections). The record's score is the person's total score, which
    ranks confident and complete people first; COCOeval uses it only for that ranking."""
    records = []
    for person in people:
        kp = np.asarray(person["keypoints"], np.float64)[COCO_TO_CMU]
        found = kp[:, 2] > 0
        out = np.zeros((len(kp), 3))
        out[found, :2] = np.round(kp[found, :2], 2)
        out[found, 2] = 1
        score = float(person["score"])
        if not math.isfinite(score):
            continue
        records.append({"image_id": int(image_id), "category_id": int(category_id),
                        "keypoints": out.ravel().tolist(), "score": round(score, 6)})
    return records
