"""The one source of truth for body parts, limbs and their orders.

Two orders are used:
* COCO: the 17 keypoints of person_keypoints_*.json (annotations and result files).
* CMU: the 18 parts of the OpenPose network (COCO's 17 plus a neck), channel order of the
  heatmaps; channel 18 of the heatmap output is the background.

Keypoint arrays are (N, 3) float arrays of x, y and a visibility or score. Visibility keeps
COCO's codes everywhere in this project: 0 not labelled, 1 labelled but occluded,
2 labelled and visible (the reference trainers recode them; we do not, see README).
"""
import numpy as np

CMU_PARTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee",
    "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
    "left_eye", "right_ear", "left_ear",
)
NUM_PARTS = len(CMU_PARTS)            # 18
BACKGROUND = NUM_PARTS                # heatmap channel 18
NUM_HEATMAPS = NUM_PARTS + 1          # 19
NECK = CMU_PARTS.index("neck")

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_COCO = len(COCO_KEYPOINTS)        # 17

# CMU index of every COCO keypoint, in COCO order.
COCO_TO_CMU = np.array([CMU_PARTS.index(name) for name in COCO_KEYPOINTS])
assert COCO_TO_CMU.tolist() == [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]

# The 19 limbs in PAF channel order: limb i uses PAF channels 2i (x) and 2i+1 (y).
LIMBS = np.array([
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4), (2, 16),
    (1, 5), (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16), (15, 17),
])
NUM_LIMBS = len(LIMBS)                # 19
NUM_PAFS = 2 * NUM_LIMBS              # 38
LIMB_NAMES = tuple(f"{CMU_PARTS[a]}-{CMU_PARTS[b]}" for a, b in LIMBS)
# Channels of the training target: 38 PAF, 18 parts, 1 background.
NUM_TARGET_CHANNELS = NUM_PAFS + NUM_HEATMAPS  # 57


def _mirror(name):
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# FLIP_CMU[i] is the part that part i becomes after a horizontal flip.
FLIP_CMU = np.array([CMU_PARTS.index(_mirror(n)) for n in CMU_PARTS])
FLIP_COCO = np.array([COCO_KEYPOINTS.index(_mirror(n)) for n in COCO_KEYPOINTS])
FLIP_PAIRS_CMU = tuple((i, int(j)) for i, j in enumerate(FLIP_CMU) if i < j)

# COCO's person category (1-based skeleton, as in person_keypoints_*.json).
COCO_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
PERSON_CATEGORY = {
    "supercategory": "person", "id": 1, "name": "person",
    "keypoints": list(COCO_KEYPOINTS), "skeleton": COCO_SKELETON,
}
# Per-keypoint OKS constants of COCOeval, COCO order.
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                        1.07, 1.07, .87, .87, .89, .89]) / 10.0

# OpenPose drawing colours, one per CMU part (BGR for OpenCV).
PART_COLORS = (
    (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (0, 255, 170), (0, 255, 85),
    (0, 255, 0), (85, 255, 0), (170, 255, 0), (255, 255, 0), (255, 170, 0), (255, 85, 0),
    (255, 0, 0), (255, 0, 85), (255, 0, 170), (255, 0, 255), (170, 0, 255), (85, 0, 255),
)


def coco_to_cmu(keypoints):
    """(..., 17, 3) COCO keypoints -> (..., 18, 3) CMU parts.

    The neck is the midpoint of the shoulders, present only when both are labelled; its
    visibility is the worse of the two (min of COCO codes 1 occluded, 2 visible)."""
    kp = np.asarray(keypoints, dtype=np.float32)
    out = np.zeros(kp.shape[:-2] + (NUM_PARTS, 3), np.float32)
    out[..., COCO_TO_CMU, :] = kp
    lsho = kp[..., COCO_KEYPOINTS.index("left_shoulder"), :]
    rsho = kp[..., COCO_KEYPOINTS.index("right_shoulder"), :]
    both = (lsho[..., 2] > 0) & (rsho[..., 2] > 0)
    out[..., NECK, :2] = np.where(both[..., None], (lsho[..., :2] + rsho[..., :2]) / 2, 0)
    out[..., NECK, 2] = np.where(both, np.minimum(lsho[..., 2], rsho[..., 2]), 0)
    return out


def cmu_to_coco(parts):
    """(..., 18, 3) CMU parts -> (..., 17, 3) COCO keypoints (the neck is dropped)."""
    return np.asarray(parts)[..., COCO_TO_CMU, :]
