"""Track ids across video frames: two synthetic people walking across each other, decoded
from ground-truth maps with network-like noise; gaps shorter and longer than max_age."""
import numpy as np
import pytest
from test_decode import render

from model import inference, keypoints, skeleton, tracking
from model.synthetic import body_geometry, sample_person

HW = (480, 640)


def walking_people(num_frames, seed=0):
    """Per frame, the (2, 18, 3) CMU joints of two people walking in opposite directions
    along nearly the same line, so that they cross once half-way."""
    rng = np.random.default_rng(seed)
    people = [sample_person(rng, 240.0, allow_lying=False) for _ in range(2)]
    shapes = [body_geometry(p) for p in people]
    frames = []
    for f in range(num_frames):
        t = f / (num_frames - 1)
        joints = []
        for k, geo in enumerate(shapes):
            x = 100 + 440 * (t if k == 0 else 1 - t)
            coco = np.concatenate([geo["keypoints"] + (x, 150 + 25 * k),
                                   np.full((17, 1), 2.0)], 1)
            joints.append(skeleton.coco_to_cmu(coco))
        frames.append(np.stack(joints))
    return frames


def decoded(joints, rng):
    heat, paf = render(joints, HW, stride=8, noise=0.03, rng=rng)
    settings = inference.InferenceSettings()
    grid_heat, grid_paf = inference.maps_to_grid(heat, paf, HW, 1.0, settings.resolution)
    return inference.decode_maps(grid_heat, grid_paf, HW, settings)


def id_switches(frames, rng):
    """(switches, ids per true person): a switch is a change of the track id given to one
    true person between two frames in which it was detected (matched by OKS >= 0.5)."""
    tracker = tracking.Tracker()
    seen = {0: [], 1: []}
    for f, joints in enumerate(frames):
        people = decoded(joints, rng)
        ids = tracker.update(people, f)
        if not people:
            continue
        oks = keypoints.prediction_oks(
            np.stack([skeleton.cmu_to_coco(p["keypoints"]) for p in people]),
            skeleton.cmu_to_coco(joints))
        for truth in (0, 1):
            best = int(np.argmax(oks[:, truth]))
            if oks[best, truth] >= 0.5:
                seen[truth].append(ids[best])
    switches = sum(int(a != b) for ids in seen.values() for a, b in zip(ids, ids[1:]))
    return switches, seen


def test_two_people_crossing_keep_their_ids():
    frames = walking_people(24)
    first, last = (f[:, skeleton.NECK, 0] for f in (frames[0], frames[-1]))
    assert first[0] < first[1] and last[0] > last[1]          # they do cross
    switches, seen = id_switches(frames, np.random.default_rng(1))
    assert all(len(ids) >= 20 for ids in seen.values())      # both found in most frames
    assert switches == 0, seen
    assert seen[0][0] != seen[1][0]


def person_at(x, y=200.0):
    """One person in the demo's people format: 18 CMU keypoints (x, y, score)."""
    geo = body_geometry(sample_person(np.random.default_rng(3), 200.0, allow_lying=False))
    coco = np.concatenate([geo["keypoints"] + (x, y), np.ones((17, 1))], 1)
    return {"keypoints": skeleton.coco_to_cmu(coco), "score": 10.0, "num_parts": 18}


def test_new_people_get_new_ids_and_steady_ones_keep_theirs():
    tracker = tracking.Tracker()
    assert tracker.update([person_at(100), person_at(400)], 0) == [0, 1]
    assert tracker.update([person_at(402), person_at(103)], 1) == [1, 0]
    assert tracker.update([person_at(104), person_at(600), person_at(401)], 2) == [0, 2, 1]
    assert tracker.update([], 3) == []


@pytest.mark.parametrize("gap,same", [(3, True), (5, True), (6, False)])
def test_a_person_missed_for_up_to_max_age_frames_gets_its_id_back(gap, same):
    tracker = tracking.Tracker(max_age=5)
    assert tracker.update([person_at(100)], 0) == [0]
    for f in range(1, gap + 1):
        tracker.update([], f)
    assert tracker.update([person_at(101)], gap + 1) == ([0] if same else [1])


def test_a_walking_person_missed_for_frames_is_found_where_it_walked_to():
    """20 px per frame, missed for 3 frames: 80 px from its last pose when it comes back,
    where a tracker without velocity sees OKS 0.0 and starts a new id."""
    tracker = tracking.Tracker()
    for f in range(4):
        assert tracker.update([person_at(100 + 20 * f)], f) == [0]
    for f in range(4, 7):
        tracker.update([], f)
    came_back = person_at(100 + 20 * 7)
    assert tracker.update([came_back], 7) == [0]
    still = tracking.Track(9, skeleton.cmu_to_coco(person_at(160)["keypoints"]), 3)
    assert keypoints.prediction_oks(skeleton.cmu_to_coco(came_back["keypoints"])[None],
                                    still.keypoints[None])[0, 0] < 0.05


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_oks"):
        tracking.Tracker(min_oks=0)
    with pytest.raises(ValueError, match="max_age"):
        tracking.Tracker(max_age=-1)
