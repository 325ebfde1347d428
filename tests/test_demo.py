"""The demo on a generated video and an image with a small random network, its per-frame
JSON, and its bad inputs."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from model import decode, inference, paths, targets
from model.skeleton import CMU_PARTS

SCRIPT = paths.REPO_ROOT / "eval" / "demo.py"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from model import network
    path = tmp_path_factory.mktemp("demo_weights") / "random_small.h5"
    network.save_weights(network.build_pose_model("small", vgg19=None, seed=1), path)
    return path


@pytest.fixture(scope="module")
def clip(synthetic_coco, tmp_path_factory):
    """A 4-frame MJPG video made of synthetic val images."""
    folder = paths.image_dir(synthetic_coco, "val2014")
    path = tmp_path_factory.mktemp("clip") / "walk.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    for name in sorted(os.listdir(folder))[:4]:
        writer.write(cv2.resize(cv2.imread(str(folder / name)), (320, 240)))
    writer.release()
    return path


def run_demo(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd="/", env=env, timeout=300)


def test_demo_on_a_video_and_an_image(clip, weights, synthetic_coco, tmp_path):
    out = tmp_path / "out"
    result = run_demo("--video", clip, "--weights", weights, "--config", "small",
                      "--scale_mode", "boxsize", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "4 frame(s)" in result.stdout and "frames per second" in result.stdout
    video = cv2.VideoCapture(str(out / "walk_pose.avi"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    ok, frame = video.read()
    video.release()
    assert ok and frame.shape == (240, 320, 3)
    frames = sorted(os.listdir(out / "walk_json"))
    assert frames == [f"walk_{i:06d}.json" for i in range(4)]
    record = json.loads((out / "walk_json" / frames[2]).read_text())
    assert record["frame"] == 2 and (record["width"], record["height"]) == (320, 240)
    assert record["parts"] == list(CMU_PARTS) and isinstance(record["people"], list)
    assert not [p for p in os.listdir(out) if "partial" in p]

    image = sorted(paths.image_dir(synthetic_coco, "val2014").iterdir())[0]
    result = run_demo("--image", image, "--weights", weights, "--config", "small",
                      "--out", out)
    assert result.returncode == 0, result.stderr
    drawn = cv2.imread(str(out / f"{image.stem}_pose.png"))
    assert drawn.shape == cv2.imread(str(image)).shape
    assert json.loads((out / f"{image.stem}.json").read_text())["frame"] == 0


def test_frame_json_holds_18_keypoints_with_scores():
    people = np.zeros((1, 18, 3))
    people[0, :, 0] = np.arange(18) * 10 + 40
    people[0, :, 1] = 100 + np.arange(18) * 5
    people[0, :, 2] = 2
    hw = (300, 300)
    heat = targets.make_heatmaps(people, hw, stride=1)
    paf = targets.make_pafs(people, hw, stride=1, thickness=8.0)
    found = decode.decode_poses(heat, paf)
    record = json.loads(json.dumps(inference.people_json(found, 7, hw)))
    assert record["frame"] == 7 and len(record["people"]) == 1
    kp = np.array(record["people"][0]["keypoints"])
    assert kp.shape == (18, 3)
    np.testing.assert_allclose(kp[:, :2], people[0, :, :2], atol=0.01)
    assert np.all(kp[:, 2] > 0.9)


def test_demo_bad_inputs(tmp_path, weights):
    result = run_demo("--video", tmp_path / "none.avi", "--weights", weights)
    assert result.returncode == 2 and result.stderr.strip() == \
        f"error: video not found: {tmp_path / 'none.avi'}"
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    result = run_demo("--image", tmp_path / "bad.jpg", "--weights", weights)
    assert result.returncode == 2 and "unreadable image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_demo("--image", tmp_path / "bad.jpg", "--video", tmp_path / "x.avi")
    assert result.returncode == 2 and "not allowed with" in result.stderr
