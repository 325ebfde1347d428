"""Skeleton drawing in OpenPose colours (OpenCV, BGR uint8 images).

Used for the synthetic set's preview, the demo and the evaluation figures, so every picture
of the project shows people the same way: one colour per CMU part (model.skeleton.PART_COLORS),
each limb in the colour of its end part, limbs blended over the image, joints as solid dots.
"""
import cv2
import numpy as np

from model import skeleton

# The PAF limbs shoulder-ear (9 and 13) help the grouping but clutter a picture; OpenPose's
# own renderer leaves them out as well.
EAR_LIMBS = tuple(i for i, (a, b) in enumerate(skeleton.LIMBS)
                  if {skeleton.CMU_PARTS[a], skeleton.CMU_PARTS[b]} & {"left_ear", "right_ear"}
                  and {skeleton.CMU_PARTS[a], skeleton.CMU_PARTS[b]}
                  & {"left_shoulder", "right_shoulder"})


def default_thickness(image_shape):
    """Limb width that stays visible on images from 100 to 2000 px."""
    return max(2, int(round(min(image_shape[:2]) / 150)))


def draw_people(image_bgr, people, threshold=0.0, thickness=None, radius=None,
                alpha=0.6, draw_ear_limbs=False):
    """Return a copy of `image_bgr` with every person's skeleton drawn.

    people: (P, 18, 3) CMU-ordered x, y, score-or-visibility (also (18, 3) for one person).
    A part is drawn when its third value is > threshold; a limb when both ends are. With COCO
    visibility codes, threshold 0 draws occluded (1) and visible (2) parts, threshold 1 only
    visible ones. Coordinates are pixel centres (pixel (i, j) at x=i, y=j)."""
    image = np.ascontiguousarray(image_bgr, dtype=np.uint8).copy()
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    people = np.asarray(people, dtype=np.float32)
    if people.size == 0:
        return image
    if people.ndim == 2:
        people = people[None]
    if people.shape[1:] != (skeleton.NUM_PARTS, 3):
        raise ValueError(f"people must be (P, {skeleton.NUM_PARTS}, 3), got {people.shape}")
    thickness = default_thickness(image.shape) if thickness is None else int(thickness)
    radius = thickness + 1 if radius is None else int(radius)
    present = people[:, :, 2] > threshold
    points = np.round(people[:, :, :2]).astype(np.int64)

    # Limbs go on an overlay blended once, so crossing limbs of one colour do not add up.
    overlay = image.copy()
    for limb, (a, b) in enumerate(skeleton.LIMBS):
        if limb in EAR_LIMBS and not draw_ear_limbs:
            continue
        color = skeleton.PART_COLORS[b]
        for p in np.nonzero(present[:, a] & present[:, b])[0]:
            cv2.line(overlay, tuple(int(v) for v in points[p, a]),
                     tuple(int(v) for v in points[p, b]), color, thickness, cv2.LINE_AA)
    cv2.addWeighted(overlay, alpha, image, 1.0 - alpha, 0.0, dst=image)
    for part in range(skeleton.NUM_PARTS):
        for p in np.nonzero(present[:, part])[0]:
            cv2.circle(image, tuple(int(v) for v in points[p, part]), radius,
                       skeleton.PART_COLORS[part], -1, cv2.LINE_AA)
    return image


def coco_annotations_to_people(annotations):
    """COCO keypoint annotations or result records (dicts) -> (P, 18, 3) CMU parts, the third
    value being the COCO visibility code (or the result's per-keypoint score).

    Crowd regions and annotations with num_keypoints = 0 are left out."""
    rows = [np.asarray(a["keypoints"], np.float32).reshape(skeleton.NUM_COCO, 3)
            for a in annotations
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 1) > 0]
    if not rows:
        return np.zeros((0, skeleton.NUM_PARTS, 3), np.float32)
    return skeleton.coco_to_cmu(np.stack(rows))
