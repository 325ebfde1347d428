"""Drawing a synthetic person: a label raster of its parts, then colours and the face.

Every body part has a dark outline, so limbs are recognisable by shape whatever the clothing
(solid, stripes, checks, noise, blotches), skin tone and background. Coordinates are pixel
centres: pixel (column i, row j) is at x = i, y = j (OpenCV's drawing convention). Shapes are
drawn with OpenCV's sub-pixel shift, so a person moved by a fraction of a pixel moves on the
image too.
"""
import math

import cv2
import numpy as np

from model import skeleton
from model.synthetic.person import extent

# Label values of a person's raster; 0 is "not this person".
OUTLINE, SKIN, SHIRT, PANTS, SHOES, HAIR = 1, 2, 3, 4, 5, 6
SHIFT = 3                               # OpenCV sub-pixel drawing: coordinates x 8
SCALE = 1 << SHIFT


def fixed_point(p):
    """OpenCV's fixed-point coordinates (x SCALE, rounded) of a point, for drawing with SHIFT."""
    return tuple(int(round(float(c) * SCALE)) for c in p)


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
            cv2.line(label, fixed_point(geom[0] - origin), fixed_point(geom[1] - origin), value,
                     max(1, int(round(width))), cv2.LINE_8, SHIFT)
        elif kind == "disk":
            cv2.circle(label, fixed_point(geom[0] - origin), max(1, int(round(geom[1] * SCALE))),
                       value, -1, cv2.LINE_8, SHIFT)
        else:
            pts = np.array([fixed_point(p - origin) for p in geom], np.int32)
            if kind == "poly":
                cv2.fillPoly(label, [pts], value, cv2.LINE_8, SHIFT)
            else:
                cv2.polylines(label, [pts], True, value, int(width), cv2.LINE_8, SHIFT)
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
    ext = extent(person, geo)
    x0, y0 = max(0, int(math.floor(ext[0]))), max(0, int(math.floor(ext[1])))
    x1, y1 = min(w, int(math.ceil(ext[2])) + 1), min(h, int(math.ceil(ext[3])) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    label = _rasterise(_person_parts(person, geo), np.array([x0, y0], np.float64),
                       (y1 - y0, x1 - x0))
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
            cv2.circle(image, fixed_point(face[eye]), max(SCALE, int(0.2 * r * SCALE)),
                       (235, 235, 235), -1, cv2.LINE_AA, SHIFT)
            cv2.circle(image, fixed_point(face[eye]), max(SCALE // 2, int(0.1 * r * SCALE)),
                       (30, 20, 20), -1, cv2.LINE_AA, SHIFT)
    nose_color = tuple(float(c) for c in np.clip(person["skin"] * 0.7, 0, 255))
    cv2.circle(image, fixed_point(face["nose"]), max(SCALE, int(0.13 * r * SCALE)), nose_color, -1,
               cv2.LINE_AA, SHIFT)
    mouth = face["nose"] + 0.32 * r * geo["head_down"]
    half = 0.22 * r * geo["head_right"]
    cv2.line(image, fixed_point(mouth - half), fixed_point(mouth + half), (40, 30, 120),
             max(1, int(round(0.08 * r))), cv2.LINE_AA, SHIFT)
