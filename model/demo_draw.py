"""The demo's pictures: skeletons in OpenPose colours (model.draw), people the experts
disagree on as dashed grey skeletons, and each tracked person's id above its head."""
import cv2
import numpy as np

from model import skeleton
from model.draw import EAR_LIMBS, default_thickness, draw_people

UNCERTAIN_COLOR = (170, 170, 170)          # BGR grey
LABEL_COLOR = (255, 255, 255)
LABEL_OUTLINE = (0, 0, 0)
DASH = 6                                   # dash and gap length in limb widths
NOSE = skeleton.CMU_PARTS.index("nose")
HEAD_PARTS = tuple(skeleton.CMU_PARTS.index(n) for n in
                   ("nose", "right_eye", "left_eye", "right_ear", "left_ear", "neck"))


def dashed_line(image, a, b, color, thickness):
    """A dashed line from a to b (dashes and gaps of DASH x thickness pixels, at least 4)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    length = float(np.hypot(*(b - a)))
    step = max(4.0, DASH * thickness / 2)
    for start in np.arange(0.0, length, 2 * step):
        p = a + (b - a) * (start / length)
        q = a + (b - a) * (min(start + step, length) / length)
        cv2.line(image, tuple(int(round(v)) for v in p), tuple(int(round(v)) for v in q),
                 color, thickness, cv2.LINE_AA)


def draw_uncertain(image, keypoints, thickness):
    """One person as a dashed grey skeleton with hollow joints, in place."""
    kp = np.asarray(keypoints, np.float64)
    found = kp[:, 2] > 0
    for limb, (a, b) in enumerate(skeleton.LIMBS):
        if limb not in EAR_LIMBS and found[a] and found[b]:
            dashed_line(image, kp[a, :2], kp[b, :2], UNCERTAIN_COLOR, thickness)
    for part in np.flatnonzero(found):
        cv2.circle(image, tuple(int(round(v)) for v in kp[part, :2]), thickness + 1,
                   UNCERTAIN_COLOR, max(1, thickness // 2), cv2.LINE_AA)


def label_anchor(keypoints):
    """(x, y) above a person's head: over the highest found head part (nose, eyes, ears,
    neck; else the highest found part), lifted by 0.7 x the nose-neck distance (about the
    head's top) when both are found; None for a person without parts."""
    kp = np.asarray(keypoints, np.float64)
    found = kp[:, 2] > 0
    head = [p for p in HEAD_PARTS if found[p]]
    candidates = head or list(np.flatnonzero(found))
    if not candidates:
        return None
    top = min(candidates, key=lambda p: kp[p, 1])
    lift = 0.0
    if found[NOSE] and found[skeleton.NECK]:
        lift = 0.7 * float(np.hypot(*(kp[NOSE, :2] - kp[skeleton.NECK, :2])))
    return float(kp[top, 0]), float(kp[top, 1]) - lift


def draw_label(image, text, anchor, color, thickness):
    """`text` centred above `anchor`, with a dark outline so it reads on any background."""
    scale = max(0.5, thickness / 3)
    (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(np.clip(anchor[0] - w / 2, 0, max(0, image.shape[1] - w)))
    y = int(np.clip(anchor[1] - 2 * thickness, h, image.shape[0] - 1))
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, LABEL_OUTLINE,
                thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness,
                cv2.LINE_AA)


def draw_frame(image, people, ids=None, uncertain=None):
    """A copy of the BGR image with every person drawn: certain ones in OpenPose colours
    (model.draw.draw_people), uncertain ones dashed grey, and each id >= 0 above its head.
    Without ids and uncertainty this is draw_people of every person."""
    ids = [-1] * len(people) if ids is None else list(ids)
    uncertain = [False] * len(people) if uncertain is None else list(uncertain)
    keypoints = [np.asarray(p["keypoints"]) for p in people]
    drawn = draw_people(image, [k for k, u in zip(keypoints, uncertain) if not u])
    thickness = default_thickness(drawn.shape)
    for kp, u in zip(keypoints, uncertain):
        if u:
            draw_uncertain(drawn, kp, thickness)
    for kp, person_id, u in zip(keypoints, ids, uncertain):
        anchor = label_anchor(kp)
        if person_id >= 0 and anchor is not None:
            draw_label(drawn, str(person_id), anchor, UNCERTAIN_COLOR if u else LABEL_COLOR,
                       max(1, (thickness + 1) // 2))
    return drawn
