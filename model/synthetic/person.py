"""The synthetic person: pose, proportions and appearance drawn at random, and its joints.

A person is a kinematic stick model (torso, neck, head, arms, hands, legs, feet) with
consistent proportions and joint angles of one of five pose families (standing, walking, arms
raised, action, sitting), a few lying or leaning. Front view by default (the person's right
side on the image left; the nose and eyes move with the head's yaw); about one person in ten
is seen from the back (no face: nose and eyes unlabelled, right side on the image right).
"""
import colorsys
import math

import numpy as np

from model import skeleton

POSE_KINDS = ("standing", "walking", "arms_raised", "action", "sitting")
POSE_WEIGHTS = (0.32, 0.20, 0.18, 0.16, 0.14)
BACK_VIEW_P = 0.10
LYING_P = 0.06
LEANING_P = 0.10

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


def random_color(rng, sat=(0.25, 1.0), val=(0.25, 1.0)):
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([b, g, r]) * 255.0


def _palette_color(rng, palette_rgb, jitter):
    return np.clip(palette_rgb[rng.integers(len(palette_rgb))][::-1]
                   + rng.uniform(-jitter, jitter, 3), 0, 255)


def _texture_spec(rng, base, kinds, weights, height):
    kind = kinds[rng.choice(len(kinds), p=weights)]
    second = (random_color(rng) if rng.random() < 0.6
              else np.clip(base * rng.uniform(0.35, 0.7), 0, 255))
    return dict(kind=kind, colors=(base, second),
                period=max(3.0, rng.uniform(0.025, 0.06) * height),
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
    shirt = _texture_spec(rng, random_color(rng, sat=(0.3, 1.0), val=(0.3, 1.0)),
                          ("solid", "hstripes", "vstripes", "checker", "noise", "blotch"),
                          (0.4, 0.15, 0.1, 0.1, 0.15, 0.1), height)
    pants_base = (_palette_color(rng, _PANTS_RGB, 15) if rng.random() < 0.7
                  else random_color(rng, sat=(0.2, 0.9), val=(0.2, 0.8)))
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

def _limb_joints(person, u, v, s_right):
    """Shoulders, hips and the joints of the four limbs with the neck at the origin, before
    the global rotation; each list is (person's right, person's left)."""
    h, pr = person["height"], person["prop"]

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
    return dict(neck=neck, sho=sho, hip=hip, elbow=elbow, wrist=wrist, hand=hand, knee=knee,
                ankle=ankle, toe=toe)


def _head_and_face(person, neck, u, v):
    """(head centre, head_down, head_right, head radius, face points, their visibility)
    before the global rotation; the face points turn with the yaw (and 180 degrees seen
    from the back)."""
    h, pr = person["height"], person["prop"]
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
    return head, head_down, head_right, r, face, face_vis


def body_geometry(person):
    """Joint positions of a person with the neck at the origin (global rotation applied).

    Returns a dict: 'keypoints' (17, 2) COCO order, 'self_vis' (17,) visibility before other
    people are considered (2 visible, 1 hidden by the own head, 0 not labelled: the face of a
    back view), and the extra points and axes the renderer needs."""
    tau = person["lean"]
    u = np.array([math.sin(tau), math.cos(tau)])          # torso axis, pointing down
    v = np.array([u[1], -u[0]])                           # image right for an upright body
    s_right = 1.0 if person["back"] else -1.0             # image side of the person's right
    j = _limb_joints(person, u, v, s_right)
    neck = j["neck"]
    head, head_down, head_right, r, face, face_vis = _head_and_face(person, neck, u, v)

    named = {"nose": face["nose"], "left_eye": face["left_eye"], "right_eye": face["right_eye"],
             "left_ear": face["left_ear"], "right_ear": face["right_ear"]}
    for name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        joints = j["sho" if name == "shoulder" else name]
        named[f"right_{name}"], named[f"left_{name}"] = joints[0], joints[1]
    keypoints = np.array([named[n] for n in skeleton.COCO_KEYPOINTS])
    self_vis = np.array([face_vis.get(n, 2) for n in skeleton.COCO_KEYPOINTS], np.int64)

    c, s = math.cos(person["theta"]), math.sin(person["theta"])
    rot = np.array([[c, -s], [s, c]])
    turn_pts = lambda p: np.asarray(p) @ rot.T           # noqa: E731  rotation about the neck
    return dict(keypoints=turn_pts(keypoints), self_vis=self_vis, neck=neck,
                head=turn_pts(head), head_r=r, head_down=turn_pts(head_down),
                head_right=turn_pts(head_right), axis=turn_pts(u),
                hand=turn_pts(np.array(j["hand"])), toe=turn_pts(np.array(j["toe"])),
                face_vis=face_vis, face={k: turn_pts(p) for k, p in face.items()})


def translate(geo, offset):
    offset = np.asarray(offset, np.float64)
    out = dict(geo)
    for key in ("keypoints", "neck", "head", "hand", "toe"):
        out[key] = geo[key] + offset
    out["face"] = {k: p + offset for k, p in geo["face"].items()}
    return out


def extent(person, geo):
    """Bounding box (x0, y0, x1, y1) of everything drawn for the person."""
    pts = np.concatenate([geo["keypoints"], geo["hand"], geo["toe"], geo["head"][None]])
    pad = max(person["leg_w"], person["arm_w"]) / 2 + person["outline"] + 1
    lo = np.minimum(pts.min(0) - pad, geo["head"] - 1.4 * geo["head_r"])
    hi = np.maximum(pts.max(0) + pad, geo["head"] + 1.4 * geo["head_r"])
    return np.concatenate([lo, hi])
