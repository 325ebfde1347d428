"""Maps -> people: peak finding, limb scoring and greedy assembly (REFERENCE section 6).

The algorithm is section 6's, vectorised: peaks of all parts at once, every candidate pair of
a limb scored in one NumPy expression, greedy matching with one step per ACCEPTED connection,
and assembly with one step per accepted connection through a part -> person lookup. A literal
slow transcription lives in tests/test_decode.py; both return the same people.

Choices where the references differ or are silent (all tested):

* Deletion: people with fewer than 4 parts or a mean score below 0.4 are dropped
  (the Python reference's thresholds, MIN_PARTS / MIN_MEAN_SCORE; CMU's MATLAB uses 3 / 0.2).
  A person's score is the sum of its parts' heatmap peaks plus its connections' limb scores;
  the mean score is that sum over the number of parts.
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
    smooth = smooth_heatmaps(heatmaps, (sigma / py, sigma / px))
    h, w, n = smooth.shape
    # Only pixels above the threshold can be peaks: test their 4 neighbours sparsely (flat
    # indices, one gather each) instead of comparing whole shifted copies of the maps.
    flat = smooth.ravel()
    above = smooth > thre1
    above[..., NUM_PARTS:] = False              # the background channel has no peaks
    index = np.flatnonzero(above)
    ys, rest = np.divmod(index, w * n)
    xs, ps = np.divmod(rest, n)
    centre = flat[index]

    def neighbour(inside, step):
        values = np.zeros(len(index), np.float32)
        values[inside] = flat[index[inside] + step]
        return values

    left, right = neighbour(xs > 0, -n), neighbour(xs < w - 1, n)
    up, down = neighbour(ys > 0, -w * n), neighbour(ys < h - 1, w * n)
    keep = (centre >= left) & (centre >= right) & (centre >= up) & (centre >= down)
    ys, xs, ps = ys[keep], xs[keep], ps[keep]
    order = np.lexsort((xs, ys, ps))            # part, then row, then column
    ys, xs, ps = ys[order], xs[order], ps[order]
    score = heatmaps[ys, xs, ps].astype(np.float64)
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    if refine and len(ys):
        # Vertex of the parabola through the smoothed values at the peak and its neighbours:
        # removes most of the quantisation of a coarse working grid.
        c = centre[keep][order].astype(np.float64)
        l, r = left[keep][order], right[keep][order]
        u, d = up[keep][order], down[keep][order]
        fx += _parabola_offset(l, c, r)
        fy += _parabola_offset(u, c, d)
    out_xy = np.stack([(fx + 0.5) * px - 0.5, (fy + 0.5) * py - 0.5], axis=1)
    return Peaks(np.stack([xs, ys], axis=1), ps, score, out_xy)


def _parabola_offset(before, centre, after):
    before, after = before.astype(np.float64), after.astype(np.float64)
    curvature = before - 2.0 * centre + after
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (before - after) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def score_limb(pafs, limb, a_xy, b_xy, image_height, thre2=THRE2, mid_num=MID_NUM):
    """Limb scores of every (A, B) candidate pair: (nA, nB) float64, -inf where rejected.

    score = mean over mid_num samples of PAF . unit(B - A) + min(0.5 * H / |B - A| - 1, 0);
    a pair is kept when more than 80 % of the samples exceed thre2 and the score is > 0."""
    a = a_xy.astype(np.float64)[:, None, :]
    b = b_xy.astype(np.float64)[None, :, :]
    vec = b - a                                                  # (nA, nB, 2)
    norm = np.sqrt(vec[..., 0] * vec[..., 0] + vec[..., 1] * vec[..., 1])
    valid = norm > 0                                             # coincident peaks: no limb
    safe = np.where(valid, norm, 1.0)
    t = np.arange(mid_num, dtype=np.float64) / (mid_num - 1)
    xs = np.rint(a[..., 0, None] + vec[..., 0, None] * t).astype(np.intp)   # (nA, nB, mid)
    ys = np.rint(a[..., 1, None] + vec[..., 1, None] * t).astype(np.intp)
    vx = pafs[ys, xs, 2 * limb].astype(np.float64)
    vy = pafs[ys, xs, 2 * limb + 1].astype(np.float64)
    along = vx * (vec[..., 0] / safe)[..., None] + vy * (vec[..., 1] / safe)[..., None]
    score = along.sum(axis=-1) / mid_num + np.minimum(0.5 * image_height / safe - 1.0, 0.0)
    passed = (along > thre2).sum(axis=-1) > SAMPLE_FRACTION * mid_num
    return np.where(valid & passed & (score > 0), score, -np.inf)


def greedy_match(scores):
    """Section 6's greedy matching: highest score first, each candidate used once, at most
    min(nA, nB) connections. Ties go to the lower (i, j), as a stable sort would.

    Returns (i, j, score) arrays in acceptance order; one loop step per accepted pair."""
    scores = scores.copy()
    limit = min(scores.shape)
    rows, cols, values = [], [], []
    while len(rows) < limit:
        flat = int(np.argmax(scores))
        i, j = divmod(flat, scores.shape[1])
        best = scores[i, j]
        if best == -np.inf:
            break
        rows.append(i)
        cols.append(j)
        values.append(best)
        scores[i, :] = -np.inf
        scores[:, j] = -np.inf
    return np.array(rows, np.intp), np.array(cols, np.intp), np.array(values, np.float64)


def find_connections(peaks, pafs, image_height, thre2=THRE2, mid_num=MID_NUM):
    """Per limb: (idA, idB, score) arrays of the accepted connections (peak ids)."""
    connections = []
    for k, (pa, pb) in enumerate(LIMBS):
        ida, idb = peaks.of_part(pa), peaks.of_part(pb)
        if len(ida) == 0 or len(idb) == 0:
            connections.append((ida[:0], idb[:0], np.zeros(0)))
            continue
        scores = score_limb(pafs, k, peaks.xy[ida], peaks.xy[idb], image_height, thre2, mid_num)
        i, j, s = greedy_match(scores)
        connections.append((ida[i], idb[j], s))
    return connections


def assemble(peaks, connections, min_parts=MIN_PARTS, min_mean_score=MIN_MEAN_SCORE):
    """Connections -> people: list of (slots (18,) peak ids or -1, total score, part count)."""
    people = {}        # creation number -> [slots list, score, count]; dicts keep order
    owner = {}         # peak id -> creation number of the person holding it
    created = 0
    for k, (ids_a, ids_b, conn_scores) in enumerate(connections):
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
    pixels and keypoints come back in image coordinates, see the module docstring).
    refine: sub-pixel peak positions (parabola through the smoothed neighbours) in the output;
    the limbs are always scored from the integer peaks.

    Returns a list of people in assembly order, each {"keypoints": (18, 3) float64 x, y,
    score in CMU order with zeros for missing parts (a found part's score is > 0), "score": total score (sum of the parts'
    peak values and the connections' limb scores), "num_parts": int}."""
    heatmaps = np.asarray(heatmaps)
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
