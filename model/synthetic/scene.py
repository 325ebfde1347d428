"""A synthetic photograph: background, crowds, people, an occluder, camera blur and noise,
and its COCO annotations.

Every image is drawn from its own numpy Generator seeded with (seed, split, index), so a set
is byte-identical for a seed whatever the number of worker processes.
* 0 to 6 people per image, person height mostly 40-70 % of the image height (25-80 % in all),
  on a cluttered background (boxes, ellipses, polygons, lines, striped patches).
* Visibility: 2 visible; 1 hidden behind a person or object drawn in front (or the far ear of
  a turned head); 0 unlabelled (outside the image, random omissions) with x = y = 0.
* Like photographs, not every image is sharp: 20 % are defocused (Gaussian, sigma 0.6-2 px),
  20 % shaken (a 3-12 px line blur in any direction), the rest as drawn; this draw has its own
  random stream, so the annotations do not depend on it.
* Tiny people and mostly hidden people are annotated with num_keypoints = 0; crowd regions are
  groups of small people annotated once with iscrowd = 1 and an RLE mask; some images have no
  people at all (a fixed share, so even a small set has every case: see _scene_plan).

Segmentation = the outline of the whole drawn body of the person (occluded parts included,
holes filled, clipped to the image), bbox and area from that mask; a keypoint is occluded when
it lies in the mask of a person drawn later. Annotations of an image are listed in drawing
order: crowds first, then people from back to front.
"""
import math

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from model import paths, skeleton
from model.synthetic.person import body_geometry, extent, random_color, sample_person, translate
from model.synthetic.render import SCALE, SHIFT, fixed_point, render_person

SPLITS = ("train2014", "val2014")
JPEG_QUALITY = 92
MIN_SIZE, MAX_SIZE = 320, 640            # image width and height range, px
# Image ids: disjoint ranges per split so the split of an id is unambiguous.
_ID_BASE = {"train2014": 1_000_000, "val2014": 2_000_000}
_SPLIT_CODE = {"train2014": 1, "val2014": 2}
MAX_IMAGES = 999_999
_ANN_PER_IMAGE = 100                     # annotation id = image id * 100 + rank in image

CUT_BY_BORDER_P = 0.06
UNANNOTATED_P = 0.03                     # a person the "annotator" skipped: num_keypoints 0
MOSTLY_HIDDEN = 0.25                     # visible fraction below which keypoints are dropped
DROP_VISIBLE_P, DROP_OCCLUDED_P = 0.02, 0.25
# Real photographs are not all sharp: defocus and camera or subject motion soften a share of
# COCO's images by a few pixels. With every synthetic image crisp, the experts learn outlines
# only: the normal expert lost all of its AP (0.587 -> 0.000) on the 30 px motion-blur set,
# where the fork's normal expert kept 0.044 of 0.509 on real COCO, and with two of three
# experts blind there is nothing for their disagreement to measure.
DEFOCUS_P, SHAKE_P = 0.2, 0.2
DEFOCUS_SIGMA = (0.6, 2.0)               # Gaussian blur, px
SHAKE_LENGTH = (3, 12)                   # line blur in any direction, px
# Random omissions hit only the leaves of the limb tree (eyes, ears, wrists, ankles): a dropped
# shoulder or hip would cut a person into pieces that PAF assembly can only return apart, which
# measures the annotation, not the decoder (with drops anywhere, 20 % of people were cut).
DROPPABLE = np.isin(np.arange(skeleton.NUM_COCO), [
    skeleton.COCO_KEYPOINTS.index(n) for n in (
        "left_eye", "right_eye", "left_ear", "right_ear",
        "left_wrist", "right_wrist", "left_ankle", "right_ankle")])


# ----------------------------------------------------------------------------- scene

def _background(rng, w, h):
    c1 = random_color(rng, sat=(0.0, 0.7), val=(0.25, 0.95))
    c2 = random_color(rng, sat=(0.0, 0.7), val=(0.25, 0.95))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] * math.cos(angle)
            + np.arange(h, dtype=np.float32)[:, None] * math.sin(angle))
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    img = c1.astype(np.float32) * (1 - ramp[..., None]) + c2.astype(np.float32) * ramp[..., None]
    cells = int(rng.integers(3, 12))
    low = rng.random((cells, cells, 3)).astype(np.float32)
    img += (cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC) - 0.5) * rng.uniform(20, 70)
    img = np.clip(img, 0, 255).astype(np.uint8)

    # Clutter that is not a person: boxes, ellipses, polygons, thin lines, striped patches.
    layer = img.copy()
    for _ in range(int(rng.integers(8, 30))):
        color = tuple(float(c) for c in random_color(rng, sat=(0.0, 0.9), val=(0.1, 1.0)))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.04, 0.3) * min(w, h)
        shape = rng.integers(5)
        if shape == 0:
            cv2.rectangle(layer, fixed_point((cx - size / 2, cy - size * rng.uniform(0.2, 1))),
                          fixed_point((cx + size / 2, cy + size * rng.uniform(0.2, 1))), color, -1,
                          cv2.LINE_8, SHIFT)
        elif shape == 1:
            axes = (int(size / 2) + 1, int(size * rng.uniform(0.15, 0.5)) + 1)
            cv2.ellipse(layer, (int(cx), int(cy)), axes,
                        rng.uniform(0, 180), 0, 360, color, -1)
        elif shape == 2:
            pts = np.array([cx, cy]) + rng.uniform(-size / 2, size / 2,
                                                   (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(layer, [np.array([fixed_point(p) for p in pts], np.int32)], color,
                         cv2.LINE_8, SHIFT)
        elif shape == 3:
            d = rng.uniform(-1, 1, 2) * size
            cv2.line(layer, fixed_point((cx, cy)), fixed_point((cx + d[0], cy + d[1])), color,
                     int(rng.integers(1, 4)), cv2.LINE_AA, SHIFT)
        else:
            x0, y0 = int(cx), int(cy)
            x1, y1 = min(w, x0 + int(size)), min(h, y0 + int(size * rng.uniform(0.3, 1)))
            period = int(rng.integers(3, 12))
            yy, xx = np.mgrid[y0:y1, x0:x1]
            stripes = ((xx + yy if rng.random() < 0.5 else xx) // period) % 2 == 1
            layer[y0:y1, x0:x1][stripes] = np.array(color, np.uint8)
    blend = rng.uniform(0.55, 0.9)
    img = cv2.addWeighted(layer, blend, img, 1.0 - blend, 0.0)
    sigma = rng.uniform(0.6, 1.8)
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _draw_occluder(rng, image):
    """An object in front of the people (a table or fence, or a boulder); returns its mask."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.6:
        top = int(h * rng.uniform(0.72, 0.9))
        x0 = int(rng.uniform(0, 0.5) * w)
        x1 = min(w - 1, int(x0 + rng.uniform(0.3, 0.7) * w))
        cv2.rectangle(mask, (x0, top), (x1, h - 1), 1, -1)
    else:
        centre = (int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.5, 0.95) * h))
        axes = (int(rng.uniform(0.08, 0.2) * w), int(rng.uniform(0.06, 0.15) * h))
        cv2.ellipse(mask, centre, axes, rng.uniform(-20, 20), 0, 360, 1, -1)
    sel = mask.astype(bool)
    ys, xs = np.nonzero(sel)
    base = random_color(rng, sat=(0.1, 0.8), val=(0.25, 0.9))
    period = int(rng.integers(4, 14))
    grain = 0.8 + 0.2 * ((ys // period) % 2 if rng.random() < 0.5 else (xs // period) % 2)
    image[ys, xs] = np.clip(base[None] * grain[:, None], 0, 255).astype(np.uint8)
    edge = sel & ~cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    image[edge] = (base * 0.3).astype(np.uint8)
    return sel


def _draw_crowd(rng, image):
    """A group of small people drawn behind everyone else; returns the union of their masks."""
    h, w = image.shape[:2]
    union = np.zeros((h, w), bool)
    width = rng.uniform(0.22, 0.45) * w
    person_h = rng.uniform(0.06, 0.11) * h
    cx = rng.uniform(width / 2, w - width / 2)
    feet = rng.uniform(0.35, 0.9) * h
    count, rows = int(rng.integers(8, 17)), int(rng.integers(2, 4))
    for k in range(count):
        row = rows - 1 - (k * rows) // count               # back rows first
        height = person_h * rng.uniform(0.85, 1.15) * (1 - 0.12 * row)
        kind = ("standing", "walking", "arms_raised")[int(rng.integers(3))]
        person = sample_person(rng, height, kind=kind, allow_lying=False)
        geo = body_geometry(person)
        ext = extent(person, geo)
        offset = (rng.uniform(cx - width / 2, cx + width / 2),
                  feet - row * 0.35 * person_h - ext[3])
        drawn = render_person(image, person, translate(geo, offset))
        if drawn is not None:
            x0, y0, m = drawn
            union[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] |= m
    return union


def _scene_plan(index, rng):
    """(people, crowd regions, whether the last person is a tiny extra). A fixed share of the
    images, chosen by index, is empty or holds crowds or a tiny person, so that even a
    16-image set has every case."""
    if index % 12 == 5:
        return 0, 0, False
    crowds = 2 if index % 20 == 13 else 1 if index % 10 == 3 else 0
    people = 1 + int(rng.choice(6, p=(0.24, 0.24, 0.2, 0.14, 0.1, 0.08)))
    tiny = index % 8 == 2 and people < 6
    return people + tiny, crowds, tiny


def _place(rng, ext, w, h, centres, cut):
    """Offset for the neck: inside the image (or partly outside when `cut`), spread out from
    the people already placed (best of four candidates)."""
    bw, bh = ext[2] - ext[0], ext[3] - ext[1]
    slack = 0.4 if cut else 0.0
    lo = np.array([-ext[0] - slack * bw, -ext[1] - slack * bh])
    hi = np.array([w - ext[2] + slack * bw, h - ext[3] + slack * bh])
    mid = (lo + hi) / 2
    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)      # a person larger than the image
    best, best_score = None, -1.0
    for _ in range(4):
        cand = rng.uniform(lo, hi)
        centre = cand + (ext[:2] + ext[2:]) / 2
        score = min((float(np.linalg.norm(centre - c)) / bh for c in centres), default=math.inf)
        if score > best_score:
            best, best_score, best_centre = cand, score, centre
    centres.append(best_centre)
    return best


def _polygons(mask, x0, y0):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE, offset=(int(x0), int(y0)))
    polygons = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.7, True)
        if len(c) >= 3:
            polygons.append([int(v) for v in c.reshape(-1)])
    return polygons


def _mask_box(mask, x0, y0):
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return [float(x0 + cols[0]), float(y0 + rows[0]),
            float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def line_kernel(length, angle):
    """Normalised blur kernel of a straight motion `length` px long at `angle` radians."""
    size = int(length) | 1
    kernel = np.zeros((size, size), np.float32)
    c, dx, dy = size // 2, math.cos(angle) * (length - 1) / 2, math.sin(angle) * (length - 1) / 2
    cv2.line(kernel, (round((c - dx) * SCALE), round((c - dy) * SCALE)),
             (round((c + dx) * SCALE), round((c + dy) * SCALE)), 1.0, 1, cv2.LINE_AA, SHIFT)
    return kernel / kernel.sum()


def camera_blur(rng, image):
    """Defocus (DEFOCUS_P of the images) or shake (SHAKE_P) of a photograph, else as is."""
    u = rng.random()
    if u < DEFOCUS_P:
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(*DEFOCUS_SIGMA))
    if u < DEFOCUS_P + SHAKE_P:
        kernel = line_kernel(rng.uniform(*SHAKE_LENGTH), rng.uniform(0, math.pi))
        return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return image


def image_id(split, index):
    return _ID_BASE[split] + index


def _draw_people(rng, image, n_people, tiny_forced):
    """Sample, place and draw the people of an image from back to front (lower feet are
    nearer, drawn later). Returns (tiny, geometry, (x0, y0, mask)) of each person drawn."""
    h, w = image.shape[:2]
    placed, centres = [], []
    for k in range(n_people):
        tiny = (tiny_forced and k == n_people - 1) or rng.random() < 0.06
        if tiny:
            height = rng.uniform(0.07, 0.14) * h
        elif rng.random() < 0.75:
            height = rng.uniform(0.40, 0.70) * h
        else:
            height = rng.uniform(0.25, 0.80) * h
        person = sample_person(rng, height, max_lying_height=0.85 * w)
        geo = body_geometry(person)
        ext = extent(person, geo)
        offset = _place(rng, ext, w, h, centres, cut=rng.random() < CUT_BY_BORDER_P)
        depth = ext[3] + offset[1] + rng.normal(0, 0.05 * h)   # lower feet: nearer, drawn later
        placed.append((depth, k, tiny, person, translate(geo, offset)))
    placed.sort(key=lambda item: (item[0], item[1]))
    drawn = []
    for _, _, tiny, person, geo in placed:
        result = render_person(image, person, geo)
        if result is not None:                              # entirely outside: not in the image
            drawn.append((tiny, geo, result))
    return drawn


def _people_annotations(rng, drawn, front, w, h):
    """COCO annotations (without ids) of the drawn people, back to front. Visibility is
    decided from front to back: whatever is drawn later covers what is behind it."""
    people_anns = []
    for tiny, geo, (x0, y0, mask) in reversed(drawn):
        kp = geo["keypoints"]
        xi, yi = np.rint(kp[:, 0]).astype(np.int64), np.rint(kp[:, 1]).astype(np.int64)
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
        v = np.where(inside, geo["self_vis"], 0)
        covered = np.zeros(len(kp), bool)
        covered[inside] = front[yi[inside], xi[inside]]
        v = np.where(covered & (v > 0), 1, v)
        region = front[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
        visible_fraction = (mask & ~region).sum() / mask.sum()
        region |= mask
        drop = np.where(DROPPABLE, rng.random(len(kp)), 1.0)
        v = np.where((v == 2) & (drop < DROP_VISIBLE_P), 0, v)
        v = np.where((v == 1) & (drop < DROP_OCCLUDED_P), 0, v)
        if tiny or visible_fraction < MOSTLY_HIDDEN or rng.random() < UNANNOTATED_P:
            v[:] = 0
        keypoints = []
        for (x, y), vis in zip(kp, v):
            keypoints += [round(float(x), 2), round(float(y), 2), int(vis)] if vis else [0, 0, 0]
        people_anns.append(dict(
            iscrowd=0, num_keypoints=int((v > 0).sum()), keypoints=keypoints,
            bbox=_mask_box(mask, x0, y0), area=float(mask.sum()),
            segmentation=_polygons(mask, x0, y0) or None))
    people_anns.reverse()
    return people_anns


def _crowd_annotation(union, h, w):
    """The iscrowd = 1 annotation (without ids) of a crowd region, its mask as an RLE."""
    rle = mask_utils.encode(np.asfortranarray(union.astype(np.uint8)))
    return dict(iscrowd=1, num_keypoints=0, keypoints=[0] * (3 * skeleton.NUM_COCO),
                bbox=[float(v) for v in mask_utils.toBbox(rle)],
                area=float(mask_utils.area(rle)),
                segmentation={"size": [h, w], "counts": rle["counts"].decode("ascii")})


def _annotation_records(img_id, anns):
    """anns with their ids and category; a sliver without a polygon gets its box as one."""
    records = []
    for rank, ann in enumerate(anns):
        if ann["segmentation"] is None:                     # a sliver: its box as the polygon
            x, y, bw, bh = ann["bbox"]
            ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        records.append({"id": img_id * _ANN_PER_IMAGE + rank + 1, "image_id": img_id,
                        "category_id": skeleton.PERSON_CATEGORY["id"], **ann})
    return records


def render_image(seed, split, index):
    """Draw image `index` of `split`. Returns (BGR image, COCO image record, annotations)."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    w, h = (int(v) for v in rng.integers(MIN_SIZE, MAX_SIZE + 1, 2))
    image = _background(rng, w, h)
    n_people, n_crowds, tiny_forced = _scene_plan(index, rng)
    crowds = [_draw_crowd(rng, image) for _ in range(n_crowds)]
    drawn = _draw_people(rng, image, n_people, tiny_forced)
    front = (_draw_occluder(rng, image) if drawn and rng.random() < 0.12
             else np.zeros((h, w), bool))
    noise = rng.standard_normal((h, w, 3), np.float32) * rng.uniform(1.5, 4)
    # Its own generator: the annotations stay those of the same seed without the camera.
    noisy = camera_blur(np.random.default_rng([seed, _SPLIT_CODE[split], index, 1]),
                        image.astype(np.float32)) + noise
    image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    people_anns = _people_annotations(rng, drawn, front, w, h)

    img_id = image_id(split, index)
    anns = [_crowd_annotation(union, h, w) for union in crowds] + people_anns
    record = {"id": img_id, "file_name": paths.image_file_name(split, img_id),
              "width": w, "height": h, "license": 1}
    return image, record, _annotation_records(img_id, anns)


def encode_jpeg(image):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
