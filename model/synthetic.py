"""Synthetic mini-COCO: articulated people on cluttered backgrounds, in the COCO 2014 layout.

Every image is drawn from its own numpy Generator seeded with (seed, split, index), so a set
is byte-identical for a seed whatever the number of worker processes. Writes

    <coco_root>/images/{train2014,val2014}/COCO_<split>_%012d.jpg
    <coco_root>/annotations/person_keypoints_<split>.json     (written last, atomically)

Content, chosen so that the whole pipeline is exercised and a small network can still learn it:
* 0 to 6 people per image, each a kinematic stick model (torso, neck, head, arms, hands,
  legs, feet) with consistent proportions, joint angles of one of five pose families
  (standing, walking, arms raised, action, sitting) and a few lying/leaning people; person
  height mostly 40-70 % of the image height (25-80 % in all).
* Every body part has a dark outline, so limbs are recognisable by shape whatever the
  clothing (solid, stripes, checks, noise, blotches), skin tone and background.
* Front view by default (the person's right side on the image left; eyes, nose and mouth on
  the face, the nose and eyes move with the head's yaw); about one person in ten is seen from
  the back (hair over the whole head, no face: nose and eyes unlabelled, right side on the
  image right).
* Visibility: 2 visible; 1 hidden behind a person or object drawn in front (or the far ear of
  a turned head); 0 unlabelled (outside the image, random omissions) with x = y = 0.
* Like photographs, not every image is sharp: 20 % are defocused (Gaussian, sigma 0.6-2 px),
  20 % shaken (a 3-12 px line blur in any direction), the rest as drawn; this draw has its own
  random stream, so the annotations do not depend on it.
* Tiny people and mostly hidden people are annotated with num_keypoints = 0; crowd regions are
  groups of small people annotated once with iscrowd = 1 and an RLE mask; some images have no
  people at all (a fixed share, so even a small set has every case: see _scene_plan).

Coordinates are pixel centres: pixel (column i, row j) is at x = i, y = j (OpenCV's drawing
convention, also that of the segmentation polygons). Segmentation = the outline of the whole
drawn body of the person (occluded parts included, holes filled, clipped to the image), bbox
and area from that mask; a keypoint is occluded when it lies in the mask of a person drawn
later. Annotations of an image are listed in drawing order: crowds first, then people from
back to front.
"""
import colorsys
import logging
import math
import multiprocessing
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model import paths, skeleton
from model.cli import UserError
from model.files import read_json, write_bytes, write_json

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3
DEFAULT_NUM_TRAIN = 400
DEFAULT_NUM_VAL = 150
SPLITS = ("train2014", "val2014")
JPEG_QUALITY = 92
MIN_SIZE, MAX_SIZE = 320, 640            # image width and height range, px
# Image ids: disjoint ranges per split so the split of an id is unambiguous.
_ID_BASE = {"train2014": 1_000_000, "val2014": 2_000_000}
_SPLIT_CODE = {"train2014": 1, "val2014": 2}
MAX_IMAGES = 999_999
_ANN_PER_IMAGE = 100                     # annotation id = image id * 100 + rank in image

# Label values of a person's raster; 0 is "not this person".
OUTLINE, SKIN, SHIRT, PANTS, SHOES, HAIR = 1, 2, 3, 4, 5, 6
_SHIFT = 3                               # OpenCV sub-pixel drawing: coordinates x 8
_SCALE = 1 << _SHIFT

POSE_KINDS = ("standing", "walking", "arms_raised", "action", "sitting")
POSE_WEIGHTS = (0.32, 0.20, 0.18, 0.16, 0.14)
BACK_VIEW_P = 0.10
LYING_P = 0.06
LEANING_P = 0.10
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

# Skin tones (RGB, light to dark) and hair colours; converted to BGR below.
_SKIN_RGB = np.array([(255, 224, 196), (245, 205, 170), (234, 192, 134), (224, 172, 105),
                      (198, 134, 66), (160, 105, 60), (128, 80, 45), (92, 58, 38)], np.float64)
_HAIR_RGB = np.array([(20, 16, 14), (60, 40, 25), (105, 70, 40), (190, 150, 90),
                      (150, 150, 150), (140, 60, 30), (230, 220, 200)], np.float64)
_PANTS_RGB = np.array([(40, 70, 130), (30, 30, 35), (190, 160, 110), (110, 110, 115),
                       (70, 90, 60), (120, 30, 40)], np.float64)
_SHOES_RGB = np.array([(25, 25, 25), (90, 55, 30), (235, 235, 235), (60, 60, 70)], np.float64)

# Proportions in units of the standing height (top of the head to the soles).
_PROPORTIONS = dict(head_r=0.062, neck=0.10, sho_w=0.105, hip_w=0.062, torso=0.29,
                    uarm=0.165, farm=0.145, hand=0.065, thigh=0.245, shin=0.235, foot=0.07)

# Face points on the head disk: (angle around the head from the face's centre, x factor,
# y offset in head radii). A point's camera angle is angle + yaw (+ 180 degrees seen from
# the back); its x is factor * sin(camera angle).
_FACE = {"nose": (0.0, 0.95, 0.18), "right_eye": (-35.0, 0.8, -0.10),
         "left_eye": (35.0, 0.8, -0.10), "right_ear": (-90.0, 1.0, 0.08),
         "left_ear": (90.0, 1.0, 0.08)}


# ----------------------------------------------------------------------------- sampling

def _deg(lo, hi, rng):
    return math.radians(rng.uniform(lo, hi))


def _random_color(rng, sat=(0.25, 1.0), val=(0.25, 1.0)):
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([b, g, r]) * 255.0


def _palette_color(rng, palette_rgb, jitter):
    return np.clip(palette_rgb[rng.integers(len(palette_rgb))][::-1]
                   + rng.uniform(-jitter, jitter, 3), 0, 255)


def _texture_spec(rng, base, kinds, weights, height):
    kind = kinds[rng.choice(len(kinds), p=weights)]
    second = (_random_color(rng) if rng.random() < 0.6
              else np.clip(base * rng.uniform(0.35, 0.7), 0, 255))
    return dict(kind=kind, colors=(base, second), period=max(3.0, rng.uniform(0.025, 0.06) * height),
                noise=rng.random((12, 12)).astype(np.float32), amp=rng.uniform(40, 90))


def _sample_arm(rng, kind):
    """(shoulder angle from hanging down, positive outwards; elbow bend; foreshortening of
    upper arm and forearm). Angles in radians."""
    if kind == "standing":
        if rng.random() < 0.15:                      # hand on the hip
            return _deg(30, 50, rng), _deg(-115, -85, rng), 1.0, 1.0
        return _deg(4, 28, rng), _deg(-25, 15, rng), 1.0, 1.0
    if kind == "walking":
        return _deg(0, 20, rng), _deg(-45, 0, rng), rng.uniform(0.75, 1), rng.uniform(0.6, 1)
    if kind == "raised":
        return _deg(110, 175, rng), _deg(-45, 45, rng), rng.uniform(0.85, 1), rng.uniform(0.8, 1)
    if kind == "action":
        return _deg(-15, 180, rng), _deg(-140, 140, rng), rng.uniform(0.7, 1), rng.uniform(0.6, 1)
    return _deg(5, 35, rng), _deg(-100, -20, rng), 1.0, rng.uniform(0.7, 1)     # sitting


def _sample_leg(rng, kind):
    """(hip angle from straight down, positive outwards; knee bend; foreshortening of thigh
    and shin)."""
    if kind == "walking":
        return _deg(-2, 14, rng), _deg(-12, 12, rng), rng.uniform(0.8, 1), rng.uniform(0.75, 1)
    if kind == "action":
        return _deg(0, 45, rng), _deg(-45, 35, rng), rng.uniform(0.75, 1), rng.uniform(0.75, 1)
    if kind == "sitting":                            # knees towards the camera: short thighs
        hip = _deg(15, 45, rng)
        return hip, _deg(-8, 15, rng) - hip, rng.uniform(0.25, 0.5), rng.uniform(0.85, 1)
    return _deg(2, 12, rng), _deg(-10, 2, rng), 1.0, 1.0


def sample_person(rng, height, kind=None, allow_lying=True, max_lying_height=None):
    """Pose, proportions and appearance of one person of standing height `height` px
    (a lying person is made smaller when taller than max_lying_height)."""
    kind = kind or POSE_KINDS[rng.choice(len(POSE_KINDS), p=POSE_WEIGHTS)]
    if kind == "arms_raised":
        which = rng.integers(3)                      # 0 both, 1 right, 2 left
        arm_kinds = ("raised" if which in (0, 1) else "standing",
                     "raised" if which in (0, 2) else "standing")
    else:
        arm_kinds = (kind, kind)
    leg_kind = "standing" if kind == "arms_raised" else kind
    back = bool(rng.random() < BACK_VIEW_P)
    theta = math.radians(float(np.clip(rng.normal(0, 4), -12, 12)))
    pose_draw = rng.random()
    if allow_lying and kind != "sitting" and pose_draw < LYING_P:
        theta = math.radians(rng.uniform(70, 100)) * (1 if rng.random() < 0.5 else -1)
        if max_lying_height is not None and height > max_lying_height:
            height = max_lying_height * rng.uniform(0.75, 1.0)
    elif pose_draw < LYING_P + LEANING_P:
        theta = _deg(-25, 25, rng)
    prop = {k: v * rng.uniform(0.95, 1.05) for k, v in _PROPORTIONS.items()}
    prop["sho_w"] *= rng.uniform(0.92, 1.08)
    skin = _palette_color(rng, _SKIN_RGB, 12)
    shirt = _texture_spec(rng, _random_color(rng, sat=(0.3, 1.0), val=(0.3, 1.0)),
                          ("solid", "hstripes", "vstripes", "checker", "noise", "blotch"),
                          (0.4, 0.15, 0.1, 0.1, 0.15, 0.1), height)
    pants_base = (_palette_color(rng, _PANTS_RGB, 15) if rng.random() < 0.7
                  else _random_color(rng, sat=(0.2, 0.9), val=(0.2, 0.8)))
    pants = _texture_spec(rng, pants_base, ("solid", "noise"), (0.7, 0.3), height)
    return dict(
        kind=kind, height=float(height), back=back, theta=theta,
        lean=_deg(-8, 8, rng), tilt=_deg(-15, 15, rng),
        yaw=_deg(-30, 30, rng) if back else (_deg(-12, 12, rng) if rng.random() < 0.5
                                             else _deg(-42, 42, rng)),
        arms=[_sample_arm(rng, arm_kinds[0]), _sample_arm(rng, arm_kinds[1])],
        legs=[_sample_leg(rng, leg_kind), _sample_leg(rng, leg_kind)],
        hand_bend=[_deg(-20, 20, rng), _deg(-20, 20, rng)],
        foot_out=[_deg(20, 50, rng), _deg(20, 50, rng)],
        prop=prop,
        arm_w=rng.uniform(0.045, 0.062) * height, leg_w=rng.uniform(0.062, 0.085) * height,
        neck_w=0.05 * height, outline=max(1.0, round(rng.uniform(0.005, 0.009) * height)),
        outline_color=np.clip(rng.uniform(10, 50) + rng.uniform(-8, 8, 3), 0, 255),
        skin=skin, hair=_palette_color(rng, _HAIR_RGB, 10), bald=bool(rng.random() < 0.08),
        hairline=_deg(12, 32, rng), shirt=shirt, pants=pants,
        shoes=_palette_color(rng, _SHOES_RGB, 10),
        sleeves=int(rng.choice(3, p=(0.1, 0.45, 0.45))),      # 0 none, 1 short, 2 long
        shorts=bool(rng.random() < 0.25),
    )


# ----------------------------------------------------------------------------- geometry

def body_geometry(person):
    """Joint positions of a person with the neck at the origin (global rotation applied).

    Returns a dict: 'keypoints' (17, 2) COCO order, 'self_vis' (17,) visibility before other
    people are considered (2 visible, 1 hidden by the own head, 0 not labelled: the face of a
    back view), and the extra points and axes the renderer needs."""
    h, pr = person["height"], person["prop"]
    tau = person["lean"]
    u = np.array([math.sin(tau), math.cos(tau)])          # torso axis, pointing down
    v = np.array([u[1], -u[0]])                           # image right for an upright body
    s_right = 1.0 if person["back"] else -1.0             # image side of the person's right

    def direction(angle, side):
        return math.cos(angle) * u + math.sin(angle) * side * v

    neck = np.zeros(2)
    sho = [neck + s_right * pr["sho_w"] * h * v, neck - s_right * pr["sho_w"] * h * v]
    pelvis = neck + pr["torso"] * h * u
    hip = [pelvis + s_right * pr["hip_w"] * h * v, pelvis - s_right * pr["hip_w"] * h * v]
    elbow, wrist, hand, knee, ankle, toe = [], [], [], [], [], []
    for s, side in ((0, s_right), (1, -s_right)):
        a, b, fu, ff = person["arms"][s]
        elbow.append(sho[s] + pr["uarm"] * h * fu * direction(a, side))
        wrist.append(elbow[s] + pr["farm"] * h * ff * direction(a + b, side))
        hand.append(wrist[s] + pr["hand"] * h * direction(a + b + person["hand_bend"][s], side))
        hip_angle, bend, ft, fs = person["legs"][s]
        knee.append(hip[s] + pr["thigh"] * h * ft * direction(hip_angle, side))
        ankle.append(knee[s] + pr["shin"] * h * fs * direction(hip_angle + bend, side))
        toe.append(ankle[s] + pr["foot"] * h
                   * direction(hip_angle + bend + person["foot_out"][s], side))

    head_down = -(math.cos(person["tilt"]) * (-u) + math.sin(person["tilt"]) * v)
    head_right = np.array([head_down[1], -head_down[0]])
    head = neck - pr["neck"] * h * head_down
    r = pr["head_r"] * h
    face, face_vis = {}, {}
    turn = person["yaw"] + (math.pi if person["back"] else 0.0)
    for name, (angle, fx, dy) in _FACE.items():
        cam = math.radians(angle) + turn
        face[name] = head + r * (fx * math.sin(cam) * head_right + dy * head_down)
        if name.endswith("ear"):
            face_vis[name] = 2 if math.cos(cam) > -0.35 else 1
        elif person["back"]:
            face_vis[name] = 0                            # a face seen from behind: not labelled
        else:
            face_vis[name] = 2 if math.cos(cam) > 0.05 else 1

    named = {"nose": face["nose"], "left_eye": face["left_eye"], "right_eye": face["right_eye"],
             "left_ear": face["left_ear"], "right_ear": face["right_ear"],
             "left_shoulder": sho[1], "right_shoulder": sho[0], "left_elbow": elbow[1],
             "right_elbow": elbow[0], "left_wrist": wrist[1], "right_wrist": wrist[0],
             "left_hip": hip[1], "right_hip": hip[0], "left_knee": knee[1], "right_knee": knee[0],
             "left_ankle": ankle[1], "right_ankle": ankle[0]}
    keypoints = np.array([named[n] for n in skeleton.COCO_KEYPOINTS])
    self_vis = np.array([face_vis.get(n, 2) for n in skeleton.COCO_KEYPOINTS], np.int64)

    c, s = math.cos(person["theta"]), math.sin(person["theta"])
    rot = np.array([[c, -s], [s, c]])
    turn_pts = lambda p: np.asarray(p) @ rot.T           # noqa: E731  rotation about the neck
    return dict(keypoints=turn_pts(keypoints), self_vis=self_vis, neck=neck,
                head=turn_pts(head), head_r=r, head_down=turn_pts(head_down),
                head_right=turn_pts(head_right), axis=turn_pts(u),
                hand=turn_pts(np.array(hand)), toe=turn_pts(np.array(toe)),
                face_vis=face_vis, face={k: turn_pts(p) for k, p in face.items()})


def translate(geo, offset):
    offset = np.asarray(offset, np.float64)
    out = dict(geo)
    for key in ("keypoints", "neck", "head", "hand", "toe"):
        out[key] = geo[key] + offset
    out["face"] = {k: p + offset for k, p in geo["face"].items()}
    return out


def _extent(person, geo):
    """Bounding box (x0, y0, x1, y1) of everything drawn for the person."""
    pts = np.concatenate([geo["keypoints"], geo["hand"], geo["toe"], geo["head"][None]])
    pad = max(person["leg_w"], person["arm_w"]) / 2 + person["outline"] + 1
    lo = np.minimum(pts.min(0) - pad, geo["head"] - 1.4 * geo["head_r"])
    hi = np.maximum(pts.max(0) + pad, geo["head"] + 1.4 * geo["head_r"])
    return np.concatenate([lo, hi])


# ----------------------------------------------------------------------------- drawing

def _fx(p):
    return tuple(int(round(float(c) * _SCALE)) for c in p)


def _person_parts(person, geo):
    """Draw list from back to front: (shape, geometry, label, width)."""
    kp = {n: geo["keypoints"][i] for i, n in enumerate(skeleton.COCO_KEYPOINTS)}
    o = person["outline"]
    parts = []

    def limb(a, b, pieces, width):
        parts.append(("seg", (a, b), OUTLINE, width + 2 * o))
        for f0, f1, label in pieces:
            if f1 > f0:
                parts.append(("seg", (a + f0 * (b - a), a + f1 * (b - a)), label, width))

    def disk(centre, radius, label, outlined=True):
        if outlined:
            parts.append(("disk", (centre, radius + o), OUTLINE, 0))
        parts.append(("disk", (centre, radius), label, 0))

    leg_w, arm_w = person["leg_w"], person["arm_w"]
    for s, side in ((1, "left"), (0, "right")):
        hip, knee, ankle = kp[f"{side}_hip"], kp[f"{side}_knee"], kp[f"{side}_ankle"]
        limb(hip, knee, [(0, 1, PANTS)], leg_w)
        limb(knee, ankle, [(0, 1, SKIN if person["shorts"] else PANTS)], leg_w * 0.92)
        limb(ankle, geo["toe"][s], [(0, 1, SHOES)], leg_w * 0.9)
    limb(kp["right_hip"], kp["left_hip"], [(0, 1, PANTS)], leg_w)
    limb(geo["neck"], geo["head"], [(0, 1, SKIN)], person["neck_w"])
    # Torso: shoulders and hips widened by half a limb so the limbs join its outline.
    rs, ls, rh, lh = kp["right_shoulder"], kp["left_shoulder"], kp["right_hip"], kp["left_hip"]
    across_s = (ls - rs) / max(np.linalg.norm(ls - rs), 1e-6)
    across_h = (lh - rh) / max(np.linalg.norm(lh - rh), 1e-6)
    torso = np.array([rs - across_s * arm_w * 0.5, ls + across_s * arm_w * 0.5,
                      lh + across_h * leg_w * 0.5, rh - across_h * leg_w * 0.5])
    parts.append(("poly_outline", torso, OUTLINE, 2 * o + 1))
    parts.append(("seg", (rs, ls), OUTLINE, arm_w + 2 * o))
    parts.append(("poly", torso, SHIRT, 0))
    parts.append(("seg", (rs, ls), SHIRT, arm_w))
    r = geo["head_r"]
    for ear in ("right_ear", "left_ear"):
        if geo["face_vis"][ear] == 2:
            disk(geo["face"][ear], 0.3 * r, SKIN)
    disk(geo["head"], r, HAIR if person["back"] else SKIN)
    if not person["back"] and not person["bald"]:
        t = np.linspace(math.pi + person["hairline"], 2 * math.pi - person["hairline"], 16)
        cap = (geo["head"] + r * np.cos(t)[:, None] * geo["head_right"]
               + r * np.sin(t)[:, None] * geo["head_down"])
        parts.append(("poly", cap, HAIR, 0))
    sleeve = (0.0, 0.55, 1.0)[person["sleeves"]]
    for s, side in ((0, "right"), (1, "left")):
        sho, elb, wri = kp[f"{side}_shoulder"], kp[f"{side}_elbow"], kp[f"{side}_wrist"]
        limb(sho, elb, [(0, sleeve, SHIRT), (sleeve, 1, SKIN)], arm_w)
        limb(elb, wri, [(0, 1, SHIRT if person["sleeves"] == 2 else SKIN)], arm_w * 0.9)
        limb(wri, geo["hand"][s], [(0, 1, SKIN)], arm_w * 1.05)
    return parts


def _rasterise(parts, origin, shape):
    label = np.zeros(shape, np.uint8)
    for kind, geom, value, width in parts:
        if kind == "seg":
            cv2.line(label, _fx(geom[0] - origin), _fx(geom[1] - origin), value,
                     max(1, int(round(width))), cv2.LINE_8, _SHIFT)
        elif kind == "disk":
            cv2.circle(label, _fx(geom[0] - origin), max(1, int(round(geom[1] * _SCALE))),
                       value, -1, cv2.LINE_8, _SHIFT)
        else:
            pts = np.array([_fx(p - origin) for p in geom], np.int32)
            if kind == "poly":
                cv2.fillPoly(label, [pts], value, cv2.LINE_8, _SHIFT)
            else:
                cv2.polylines(label, [pts], True, value, int(width), cv2.LINE_8, _SHIFT)
    return label


def _texture_colors(spec, xs, ys, ref, axis, crop_shape):
    """Colours of a clothing texture at image pixels (xs, ys); stripes follow the body."""
    c1, c2 = spec["colors"]
    kind = spec["kind"]
    if kind == "solid":
        return np.broadcast_to(c1, (len(xs), 3))
    if kind in ("noise", "blotch"):
        field = cv2.resize(spec["noise"], (crop_shape[1], crop_shape[0]),
                           interpolation=cv2.INTER_CUBIC)
        n = field[ys - ref[3], xs - ref[2]][:, None]
        if kind == "noise":
            return c1 + (n - 0.5) * spec["amp"]
        return np.where(n > 0.5, c2, c1)
    dx, dy = xs - ref[0], ys - ref[1]
    along = np.floor((dx * axis[0] + dy * axis[1]) / spec["period"]).astype(np.int64)
    across = np.floor((dx * axis[1] - dy * axis[0]) / spec["period"]).astype(np.int64)
    odd = {"hstripes": along % 2, "vstripes": across % 2, "checker": (along + across) % 2}[kind]
    return np.where(odd[:, None] == 1, c2, c1)


def render_person(image, person, geo):
    """Draw one person onto `image` (in place). Returns (x0, y0, mask): the person's
    silhouette (holes filled) clipped to the image, its top-left corner at (x0, y0); None
    when nothing of the person is inside the image."""
    h, w = image.shape[:2]
    ext = _extent(person, geo)
    x0, y0 = max(0, int(math.floor(ext[0]))), max(0, int(math.floor(ext[1])))
    x1, y1 = min(w, int(math.ceil(ext[2])) + 1), min(h, int(math.ceil(ext[3])) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    label = _rasterise(_person_parts(person, geo), np.array([x0, y0], np.float64), (y1 - y0, x1 - x0))
    ys, xs = np.nonzero(label)
    if len(xs) == 0:
        return None
    values = label[ys, xs]
    colors = np.empty((len(xs), 3), np.float64)
    flat = {OUTLINE: person["outline_color"], SKIN: person["skin"], HAIR: person["hair"],
            SHOES: person["shoes"]}
    ref = (geo["neck"][0], geo["neck"][1], x0, y0)
    for value in np.unique(values):
        sel = values == value
        if value in flat:
            colors[sel] = flat[value]
        else:
            spec = person["shirt"] if value == SHIRT else person["pants"]
            colors[sel] = _texture_colors(spec, xs[sel] + x0, ys[sel] + y0, ref, geo["axis"],
                                          label.shape)
    image[ys + y0, xs + x0] = np.clip(colors, 0, 255).astype(np.uint8)
    _draw_face(image, person, geo)
    return x0, y0, _fill_holes(label)


def _fill_holes(label):
    """The silhouette with its holes filled (say between an arm on the hip and the torso):
    what a COCO polygon can express, so segmentation, area, bbox and occlusion agree."""
    contours, _ = cv2.findContours((label > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(label.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, -1)
    return filled.astype(bool)


def _draw_face(image, person, geo):
    r = geo["head_r"]
    if person["back"] or r < 4:
        return
    face, vis = geo["face"], geo["face_vis"]
    for eye in ("right_eye", "left_eye"):
        if vis[eye] == 2:
            cv2.circle(image, _fx(face[eye]), max(_SCALE, int(0.2 * r * _SCALE)),
                       (235, 235, 235), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(image, _fx(face[eye]), max(_SCALE // 2, int(0.1 * r * _SCALE)),
                       (30, 20, 20), -1, cv2.LINE_AA, _SHIFT)
    nose_color = tuple(float(c) for c in np.clip(person["skin"] * 0.7, 0, 255))
    cv2.circle(image, _fx(face["nose"]), max(_SCALE, int(0.13 * r * _SCALE)), nose_color, -1,
               cv2.LINE_AA, _SHIFT)
    mouth = face["nose"] + 0.32 * r * geo["head_down"]
    half = 0.22 * r * geo["head_right"]
    cv2.line(image, _fx(mouth - half), _fx(mouth + half), (40, 30, 120),
             max(1, int(round(0.08 * r))), cv2.LINE_AA, _SHIFT)


# ----------------------------------------------------------------------------- scene

def _background(rng, w, h):
    c1 = _random_color(rng, sat=(0.0, 0.7), val=(0.25, 0.95))
    c2 = _random_color(rng, sat=(0.0, 0.7), val=(0.25, 0.95))
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
        color = tuple(float(c) for c in _random_color(rng, sat=(0.0, 0.9), val=(0.1, 1.0)))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.04, 0.3) * min(w, h)
        shape = rng.integers(5)
        if shape == 0:
            cv2.rectangle(layer, _fx((cx - size / 2, cy - size * rng.uniform(0.2, 1))),
                          _fx((cx + size / 2, cy + size * rng.uniform(0.2, 1))), color, -1,
                          cv2.LINE_8, _SHIFT)
        elif shape == 1:
            axes = (int(size / 2) + 1, int(size * rng.uniform(0.15, 0.5)) + 1)
            cv2.ellipse(layer, (int(cx), int(cy)), axes,
                        rng.uniform(0, 180), 0, 360, color, -1)
        elif shape == 2:
            pts = np.array([cx, cy]) + rng.uniform(-size / 2, size / 2, (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(layer, [np.array([_fx(p) for p in pts], np.int32)], color, cv2.LINE_8, _SHIFT)
        elif shape == 3:
            d = rng.uniform(-1, 1, 2) * size
            cv2.line(layer, _fx((cx, cy)), _fx((cx + d[0], cy + d[1])), color,
                     int(rng.integers(1, 4)), cv2.LINE_AA, _SHIFT)
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
    base = _random_color(rng, sat=(0.1, 0.8), val=(0.25, 0.9))
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
        ext = _extent(person, geo)
        offset = (rng.uniform(cx - width / 2, cx + width / 2), feet - row * 0.35 * person_h - ext[3])
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
    cv2.line(kernel, (round((c - dx) * _SCALE), round((c - dy) * _SCALE)),
             (round((c + dx) * _SCALE), round((c + dy) * _SCALE)), 1.0, 1, cv2.LINE_AA, _SHIFT)
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


def render_image(seed, split, index):
    """Draw image `index` of `split`. Returns (BGR image, COCO image record, annotations)."""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    w, h = (int(v) for v in rng.integers(MIN_SIZE, MAX_SIZE + 1, 2))
    image = _background(rng, w, h)
    n_people, n_crowds, tiny_forced = _scene_plan(index, rng)
    crowds = [_draw_crowd(rng, image) for _ in range(n_crowds)]

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
        ext = _extent(person, geo)
        offset = _place(rng, ext, w, h, centres, cut=rng.random() < CUT_BY_BORDER_P)
        depth = ext[3] + offset[1] + rng.normal(0, 0.05 * h)   # lower feet: nearer, drawn later
        placed.append((depth, k, tiny, person, translate(geo, offset)))
    placed.sort(key=lambda item: (item[0], item[1]))
    drawn = []
    for _, _, tiny, person, geo in placed:
        result = render_person(image, person, geo)
        if result is not None:                              # entirely outside: not in the image
            drawn.append((tiny, geo, result))
    front = (_draw_occluder(rng, image) if drawn and rng.random() < 0.12
             else np.zeros((h, w), bool))
    noise = rng.standard_normal((h, w, 3), np.float32) * rng.uniform(1.5, 4)
    # Its own generator: the annotations stay those of the same seed without the camera.
    noisy = camera_blur(np.random.default_rng([seed, _SPLIT_CODE[split], index, 1]),
                        image.astype(np.float32)) + noise
    image = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    # Visibility from front to back: whatever is drawn later covers what is behind it.
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

    img_id = image_id(split, index)
    anns = []
    for union in crowds:
        rle = mask_utils.encode(np.asfortranarray(union.astype(np.uint8)))
        anns.append(dict(iscrowd=1, num_keypoints=0, keypoints=[0] * (3 * skeleton.NUM_COCO),
                         bbox=[float(v) for v in mask_utils.toBbox(rle)],
                         area=float(mask_utils.area(rle)),
                         segmentation={"size": [h, w], "counts": rle["counts"].decode("ascii")}))
    anns += people_anns
    records = []
    for rank, ann in enumerate(anns):
        if ann["segmentation"] is None:                     # a sliver: its box as the polygon
            x, y, bw, bh = ann["bbox"]
            ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        records.append({"id": img_id * _ANN_PER_IMAGE + rank + 1, "image_id": img_id,
                        "category_id": skeleton.PERSON_CATEGORY["id"], **ann})
    record = {"id": img_id, "file_name": paths.image_file_name(split, img_id),
              "width": w, "height": h, "license": 1}
    return image, record, records


def encode_jpeg(image):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ----------------------------------------------------------------------------- data set

def split_parameters(split, num_images, seed):
    """What a finished annotation file records; a rerun with the same values is skipped."""
    return {"generator_version": GENERATOR_VERSION, "split": split,
            "num_images": int(num_images), "seed": int(seed)}


def check_arguments(num_images, seed, what="num_images"):
    if not isinstance(num_images, (int, np.integer)) or num_images < 0:
        raise UserError(f"{what} must be a non-negative integer, got {num_images}")
    if num_images > MAX_IMAGES:
        raise UserError(f"{what} must be at most {MAX_IMAGES}, got {num_images}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")


def _make_image(job):
    seed, split, index, out_dir = job
    image, record, anns = render_image(seed, split, index)
    write_bytes(Path(out_dir) / record["file_name"], encode_jpeg(image))
    return record, anns


def _existing(ann_path):
    """The synthetic annotation file at ann_path, None if absent; UserError if it is not ours."""
    if not ann_path.exists():
        return None
    data = read_json(ann_path, "annotation file")
    if not isinstance(data, dict) or "synthetic" not in (data.get("info") or {}):
        raise UserError(f"{ann_path} exists and is not a synthetic annotation file "
                        "(no info.synthetic); refusing to overwrite it: use another --coco_root")
    return data


def generate_split(coco_root, split, num_images, seed=0, workers=1, force=False, progress=True):
    """Write one split (images, then the annotation file last) and return its COCO dict.

    A complete set with the same parameters is kept as it is (unless force). Images of an
    older synthetic set that the new one does not have are removed once the new file exists."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    check_arguments(num_images, seed, f"number of {split} images")
    coco_root = Path(coco_root)
    ann_path = paths.annotation_file(coco_root, split)
    img_dir = paths.image_dir(coco_root, split)
    params = split_parameters(split, num_images, seed)
    old = _existing(ann_path)
    if old is not None and not force and old["info"]["synthetic"] == params and all(
            (img_dir / im["file_name"]).is_file() for im in old["images"]):
        log.info("%s: complete synthetic set with the same parameters (%d images, seed %d): kept",
                 split, num_images, seed)
        return old
    old_files = {im["file_name"] for im in old["images"]} if old else set()
    if old is not None:
        ann_path.unlink()          # a run killed from here on leaves no file that looks complete
    img_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    log.info("%s: drawing %d images (seed %d, %d worker%s)", split, num_images, seed, workers,
             "s" if workers != 1 else "")
    jobs = [(seed, split, i, str(img_dir)) for i in range(num_images)]
    bar = dict(total=num_images, desc=split, unit="img", disable=not progress)
    if workers > 1 and num_images >= 8:
        # spawn, not fork: the caller may already run TensorFlow or torch threads.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_make_image, jobs, chunksize=4), **bar))
    else:
        results = [_make_image(job) for job in tqdm(jobs, **bar)]
    dataset = {
        "info": {"description": "Synthetic mini-COCO person keypoints (model.synthetic)",
                 "version": f"synthetic-{GENERATOR_VERSION}", "year": 2014,
                 "contributor": "model.synthetic", "date_created": "generated",
                 "synthetic": params},
        "licenses": [{"id": 1, "name": "synthetic images, no restrictions", "url": ""}],
        "images": [record for record, _ in results],
        "annotations": [ann for _, anns in results for ann in anns],
        "categories": [skeleton.PERSON_CATEGORY],
    }
    write_json(ann_path, dataset)
    stale = old_files - {im["file_name"] for im in dataset["images"]}
    for name in sorted(stale):
        (img_dir / name).unlink(missing_ok=True)
    log.info("%s: %d images, %d annotations written in %.1f s%s", split, num_images,
             len(dataset["annotations"]), time.time() - start,
             f" ({len(stale)} stale images removed)" if stale else "")
    return dataset


def generate_dataset(coco_root, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL, seed=0,
                     workers=1, force=False, progress=True):
    """Both splits; returns {split: COCO dict}."""
    check_arguments(num_train, seed, "num_train")
    check_arguments(num_val, seed, "num_val")
    return {split: generate_split(coco_root, split, n, seed, workers, force, progress)
            for split, n in (("train2014", num_train), ("val2014", num_val))}


# ----------------------------------------------------------------------------- report

def dataset_statistics(dataset):
    """Counts of one COCO dict (a split): what the CLI prints."""
    images, anns = dataset["images"], dataset["annotations"]
    people = [a for a in anns if not a["iscrowd"]]
    per_image = Counter(a["image_id"] for a in people)
    counts = [per_image.get(im["id"], 0) for im in images]
    vis = np.array([a["keypoints"][2::3] for a in people], np.int64).reshape(-1)
    with_anns = {a["image_id"] for a in anns}
    widths = [im["width"] for im in images] or [0]
    heights = [im["height"] for im in images] or [0]
    return {
        "images": len(images), "people": len(people),
        "people_per_image": np.bincount(counts, minlength=7).tolist() if counts else [],
        "labelled_keypoints": int((vis > 0).sum()), "visible_keypoints": int((vis == 2).sum()),
        "occluded_keypoints": int((vis == 1).sum()),
        "people_without_keypoints": sum(1 for a in people if a["num_keypoints"] == 0),
        "crowd_regions": sum(1 for a in anns if a["iscrowd"]),
        "images_without_people": sum(1 for im in images if im["id"] not in with_anns),
        "width_range": [min(widths), max(widths)], "height_range": [min(heights), max(heights)],
    }


def format_statistics(split, stats):
    hist = " ".join(f"{k}:{n}" for k, n in enumerate(stats["people_per_image"]))
    return "\n".join([
        f"{split}: {stats['images']} images, {stats['people']} people "
        f"({stats['people_without_keypoints']} with num_keypoints=0), "
        f"{stats['crowd_regions']} crowd regions, "
        f"{stats['images_without_people']} images without people",
        f"  people per image: {hist}",
        f"  labelled keypoints: {stats['labelled_keypoints']} "
        f"(visible {stats['visible_keypoints']}, occluded {stats['occluded_keypoints']})",
        f"  image size: width {stats['width_range'][0]}-{stats['width_range'][1]}, "
        f"height {stats['height_range'][0]}-{stats['height_range'][1]} px",
    ])


def make_preview(coco_root, out_path, split="val2014", num_images=6, cell=320, columns=3):
    """A grid of the first images of `split` that hold annotations, ground truth drawn:
    skeletons (occluded parts included), crowd regions outlined in magenta, people with
    num_keypoints=0 boxed in grey. Returns the path written (PNG)."""
    from pycocotools import mask as mask_utils

    from model.draw import coco_annotations_to_people, draw_people
    coco_root = Path(coco_root)
    dataset = read_json(paths.annotation_file(coco_root, split), "annotation file")
    by_image = {}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    chosen = [im for im in dataset["images"] if im["id"] in by_image][:num_images]
    rows = max(1, math.ceil(len(chosen) / columns))
    header = 26
    canvas = np.full((header + rows * cell, columns * cell, 3), 40, np.uint8)
    cv2.putText(canvas, f"{split}: ground truth (skeletons incl. occluded; magenta crowd; "
                        "grey box num_keypoints=0)", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (230, 230, 230), 1, cv2.LINE_AA)
    for k, im in enumerate(chosen):
        image = cv2.imread(str(paths.image_dir(coco_root, split) / im["file_name"]))
        if image is None:
            raise UserError(f"cannot read image {im['file_name']} of {split}")
        s = min(cell / im["width"], cell / im["height"])
        small = cv2.resize(image, (max(1, round(im["width"] * s)), max(1, round(im["height"] * s))),
                           interpolation=cv2.INTER_AREA)
        anns = by_image[im["id"]]
        people = coco_annotations_to_people(anns)
        people[:, :, :2] = (people[:, :, :2] + 0.5) * s - 0.5      # pixel centres
        small = draw_people(small, people, threshold=0, thickness=2, radius=3)
        for ann in anns:
            if ann["iscrowd"]:
                m = mask_utils.decode(ann["segmentation"])
                m = cv2.resize(m, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(small, contours, -1, (255, 0, 255), 1)
            elif ann["num_keypoints"] == 0:
                x, y, bw, bh = (v * s for v in ann["bbox"])
                cv2.rectangle(small, (int(x), int(y)), (int(x + bw), int(y + bh)), (160, 160, 160), 1)
        cv2.putText(small, str(im["id"]), (4, small.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        y0, x0 = header + r * cell, c * cell
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    ok, buf = cv2.imencode(".png", canvas)
    write_bytes(out_path, buf.tobytes())
    return Path(out_path)
