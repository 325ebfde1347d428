"""Person ids that stay the same across the frames of a video.

OpenPose leaves `person_id` at -1; here each frame's people are matched to the tracks of the
frames before by object keypoint similarity (OKS, model.keypoints.prediction_oks: the
keypoints both found, scaled by the union of the two keypoint boxes), greedily, best pair
first, and a match needs OKS >= min_oks. A track is compared at the pose it is expected at:
its last pose moved by its velocity (the mean shift of its keypoints per frame between its
last two matches) times the frames since, so a walking person missed for a few frames, or
detected badly while crossing someone, is found again where it has walked to. A person left
unmatched starts a new track with the next id; a track left unmatched is kept for up to
`max_age` frames, so a person missed in a few frames (occluded, blurred) gets the same id
back, and is then dropped.

Greedy matching is what the pose-tracking baselines use at video frame rates (people move a
few pixels between frames, so the best pair is almost always the right one); it needs no
motion model and costs microseconds for a handful of people.
"""
from dataclasses import dataclass, field

import numpy as np

from model.keypoints import found_mask, prediction_oks
from model.skeleton import cmu_to_coco

DEFAULT_MIN_OKS = 0.3
DEFAULT_MAX_AGE = 10


@dataclass
class Track:
    track_id: int
    keypoints: np.ndarray          # (17, 3) COCO order, the last pose seen
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))   # pixels per frame

    def expected(self, frame):
        """The last pose moved to where the track's velocity puts it at `frame`."""
        pose = self.keypoints.copy()
        pose[:, :2] += self.velocity * (frame - self.last_frame)
        return pose

    def follow(self, pose, frame):
        """Take `pose` seen at `frame` as the track's new last pose and update the velocity."""
        both = found_mask(self.keypoints) & found_mask(pose)
        if both.any():
            shift = (pose[both, :2] - self.keypoints[both, :2]).mean(0)
            self.velocity = shift / max(frame - self.last_frame, 1)
        self.keypoints, self.last_frame = pose, frame


class Tracker:
    """update(people, frame) -> one track id per person (people with 18 CMU keypoints)."""

    def __init__(self, min_oks=DEFAULT_MIN_OKS, max_age=DEFAULT_MAX_AGE):
        if not 0 < min_oks <= 1:
            raise ValueError(f"min_oks must be in (0, 1], got {min_oks}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.min_oks, self.max_age = float(min_oks), int(max_age)
        self.tracks = []
        self.next_id = 0

    def update(self, people, frame):
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_age + 1]
        poses = [cmu_to_coco(np.asarray(p["keypoints"], np.float64)) for p in people]
        ids = [None] * len(poses)
        for person, track in self._greedy_pairs(poses, frame):
            ids[person] = track.track_id
            track.follow(poses[person], frame)
        for person, pose in enumerate(poses):
            if ids[person] is None:
                self.tracks.append(Track(self.next_id, pose, frame))
                ids[person] = self.next_id
                self.next_id += 1
        return ids

    def _greedy_pairs(self, poses, frame):
        """(person index, track) pairs, best OKS first, each person and track at most once."""
        if not poses or not self.tracks:
            return []
        oks = prediction_oks(np.stack(poses), np.stack([t.expected(frame) for t in self.tracks]))
        order = np.argsort(-oks, axis=None, kind="stable")
        used_people, used_tracks, pairs = set(), set(), []
        for flat in order:
            person, track = np.unravel_index(flat, oks.shape)
            if oks[person, track] < self.min_oks:
                break
            if person in used_people or track in used_tracks:
                continue
            used_people.add(person)
            used_tracks.add(track)
            pairs.append((int(person), self.tracks[track]))
        return pairs
