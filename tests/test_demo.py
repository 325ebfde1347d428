"""The demo on a generated video and an image with a small random network, its per-frame
JSON, and its bad inputs."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from model import decode, inference, network, paths, targets
from model.skeleton import CMU_PARTS

SCRIPT = paths.REPO_ROOT / "eval" / "demo.py"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
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


@pytest.mark.slow
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
    assert result.returncode == 2 and "corrupt or truncated image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_demo("--image", tmp_path / "bad.jpg", "--video", tmp_path / "x.avi")
    assert result.returncode == 2 and "not allowed with" in result.stderr


# ------------------------------------------------------------------ the demo's package code

from PIL import Image  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from test_decode import render  # noqa: E402
from test_tracking import HW, walking_people  # noqa: E402

from model import demo, demo_draw, demo_load, demo_predict, export, keypoints, skeleton  # noqa: E402
from model.domains import DARK, MOTION_BLUR, NORMAL  # noqa: E402
from model.draw import draw_people  # noqa: E402
from model.errors import UserError  # noqa: E402
from model.tracking import Tracker  # noqa: E402
from model.uncertainty import disagreement, gather_members, match_people  # noqa: E402


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


class MapsNetwork:
    """A stand-in network whose maps are the ground-truth encoding of `people_of(call)`
    (CMU joints, image coordinates) at stride 8: real people through the demo's decoding."""

    def __init__(self, people_of):
        self.people_of, self.calls = people_of, 0

    def __call__(self, batch, training=False):
        joints = self.people_of(self.calls)
        self.calls += 1
        heat, paf = render(joints, batch.shape[1:3], stride=8)
        return paf[None], heat[None]


def person_joints(x, y=60.0, height=120.0, seed=3):
    """(1, 18, 3) CMU joints of one synthetic person with its neck at (x, y)."""
    from model.synthetic import body_geometry, sample_person
    geo = body_geometry(sample_person(np.random.default_rng(seed), height, allow_lying=False))
    coco = np.concatenate([geo["keypoints"] + (x, y), np.full((17, 1), 2.0)], 1)
    return skeleton.coco_to_cmu(coco)[None]


def fixed_predictor(people_of=lambda call: person_joints(80.0)):
    return demo_predict.SinglePose(MapsNetwork(people_of), inference.InferenceSettings())


def test_demo_averages_maps_as_predict_people_does(weights):
    model = network.load_pose_model("small", weights)
    image = np.random.default_rng(0).integers(0, 255, (72, 88, 3), np.uint8)
    settings = inference.InferenceSettings((1.0, 0.75), flip=True, resolution=2)
    timer = demo_predict.StageTimer()
    with timer("network"):
        outputs = inference.network_outputs([model, model], image, settings)
    for w in ([1.0, 0.0], [0.25, 0.75]):
        heat, pafs = inference.average_maps(outputs, image.shape[:2], settings, w)
        ref_heat, ref_paf = inference.predict_maps(
            [model, model] if w[1] else model, image, (1.0, 0.75), True,
            w if w[1] else None, resolution=2)
        np.testing.assert_allclose(heat, ref_heat, rtol=0, atol=1e-6)
        np.testing.assert_allclose(pafs.dense(), ref_paf, rtol=0, atol=1e-6)
    assert set(timer.seconds) == {"network"}

    people = fixed_predictor()(np.zeros((200, 240, 3), np.uint8), timer).people
    assert len(people) == 1 and people[0]["num_parts"] >= 16
    found = people[0]["keypoints"][:, 2] > 0
    np.testing.assert_allclose(people[0]["keypoints"][found, :2],
                               person_joints(80.0)[0, found, :2], atol=1.5)


def test_video_people_keep_their_track_ids(tmp_path, capsys):
    """Two people walking across each other (tests/test_tracking.py), decoded from their
    ground-truth maps frame by frame: each keeps its person_id in the JSONs."""
    frames = walking_people(24)
    clip = tmp_path / "cross.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, HW[::-1])
    for _ in frames:
        writer.write(np.full(HW + (3,), 90, np.uint8))
    writer.release()
    predictor = fixed_predictor(lambda call: frames[call])
    demo.run_video(predictor, tmp_path / "out", video=clip, tracker=Tracker(0.3, 2))
    printed = capsys.readouterr().out
    assert "24 frame(s)" in printed and "2 track(s)" in printed, printed
    for stage in ("read", "network", "decoding", "tracking", "drawing and writing"):
        assert f"{stage} " in printed.split("per frame: ")[1]
    ids = {0: [], 1: []}                  # the true person -> its person_id in each frame
    for f, joints in enumerate(frames):
        record = json.loads((tmp_path / "out" / "cross_json" / f"cross_{f:06d}.json").read_text())
        assert record["frame"] == f
        for p in record["people"]:
            kp = np.array(p["keypoints"])
            oks = keypoints.prediction_oks(skeleton.cmu_to_coco(kp)[None],
                                           skeleton.cmu_to_coco(joints))[0]
            if oks.max() >= 0.5:
                ids[int(np.argmax(oks))].append(p["person_id"])
    assert all(len(v) >= 20 for v in ids.values())
    assert set(ids[0]) == {ids[0][0]} and set(ids[1]) == {ids[1][0]}
    assert {ids[0][0], ids[1][0]} == {0, 1}
    assert sorted(os.listdir(tmp_path / "out")) == ["cross_json", "cross_pose.avi"]


def test_drawn_ids_and_uncertain_people():
    image = np.zeros((200, 240, 3), np.uint8)
    people = [{"keypoints": person_joints(70.0)[0]}, {"keypoints": person_joints(170.0)[0]}]
    plain = demo_draw.draw_frame(image, people)
    np.testing.assert_array_equal(plain, draw_people(image, [p["keypoints"] for p in people]))
    drawn = demo_draw.draw_frame(image, people, [7, 8], [False, True])
    right = drawn[:, 125:]                    # the uncertain person: grey only
    lit = right.max(-1) > 40
    assert lit.any() and np.abs(right[lit].astype(int) - right[lit].mean(-1, keepdims=True)).max() < 3
    x, y = demo_draw.label_anchor(people[0]["keypoints"])
    above = drawn[int(y) - 14:int(y), int(x) - 8:int(x) + 8]
    assert (above > 200).all(-1).any()        # the white id above the first person's head


def write_inputs(folder):
    """Every supported kind of file, and one corrupt JPEG and one text file."""
    folder.mkdir()
    base = np.zeros((200, 240, 3), np.uint8)
    base[:, :, 1] = 200
    cv2.imwrite(str(folder / "a_color.jpg"), base)
    cv2.imwrite(str(folder / "b_gray.png"), np.full((210, 250), 77, np.uint8))
    rgba = np.zeros((220, 230, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 250, 30      # red, nearly transparent
    cv2.imwrite(str(folder / "c_alpha.png"), rgba)
    cv2.imwrite(str(folder / "d_deep.png"), np.full((200, 256, 3), 40000, np.uint16))
    Image.new("CMYK", (250, 230), (0, 0, 0, 0)).save(folder / "e_cmyk.jpg")
    cv2.imwrite(str(folder / "f_upper.BMP"), base)
    cv2.imwrite(str(folder / "g.tif"), base)
    cv2.imwrite(str(folder / "g.webp"), base)
    (folder / "h_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not an image")


def test_folder_of_every_format_with_a_corrupt_file(tmp_path, capsys):
    write_inputs(tmp_path / "photos")
    seen = {}

    def predictor(image, timer):
        seen[image.shape] = image
        return fixed_predictor()(image, timer)
    demo.run_folder(tmp_path / "photos", predictor, tmp_path / "out")
    printed = capsys.readouterr().out
    assert "8 of 9 image(s) done" in printed
    assert "skipped: 1 file(s) could not be read and were skipped (h_corrupt.jpg: corrupt" in printed
    for shape, value in (((210, 250, 3), 77), ((200, 256, 3), 156)):
        assert seen[shape].dtype == np.uint8 and abs(int(seen[shape][5, 5, 0]) - value) <= 1
    assert tuple(seen[(220, 230, 3)][5, 5]) == (0, 0, 250)         # alpha dropped
    assert (seen[(230, 250, 3)] >= 250).all()                      # CMYK white is white
    stems = ["a_color", "b_gray", "c_alpha", "d_deep", "e_cmyk", "f_upper", "g_tif", "g_webp"]
    out = tmp_path / "out" / "photos"
    assert sorted(os.listdir(out)) == sorted([s + ".json" for s in stems]
                                             + [s + "_pose.png" for s in stems])
    record = json.loads((out / "b_gray.json").read_text())
    assert record["file_name"] == "b_gray.png" and record["image_id"] == 1
    assert (record["width"], record["height"]) == (250, 210)
    assert record["people"][0]["person_id"] == -1
    assert cv2.imread(str(out / "d_deep_pose.png")).shape == (200, 256, 3)
    mapping = json.loads((tmp_path / "out" / "photos_coco_images.json").read_text())
    assert [im["file_name"] for im in mapping["images"]] == [
        "a_color.jpg", "b_gray.png", "c_alpha.png", "d_deep.png", "e_cmyk.jpg", "f_upper.BMP",
        "g.tif", "g.webp"]
    assert [im["id"] for im in mapping["images"]] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert mapping["skipped"][0]["file_name"] == "h_corrupt.jpg"
    gt = COCO()
    gt.dataset = {"images": mapping["images"], "annotations": [],
                  "categories": [skeleton.PERSON_CATEGORY]}
    gt.createIndex()
    results = gt.loadRes(str(tmp_path / "out" / "photos_coco_results.json"))
    assert sorted(results.getImgIds()) == list(range(8))
    ann = results.loadAnns(results.getAnnIds(imgIds=[1]))[0]
    kp = np.array(ann["keypoints"]).reshape(17, 3)
    found = kp[:, 2] > 0
    assert found.sum() >= 15
    np.testing.assert_allclose(kp[found, :2],
                               skeleton.cmu_to_coco(person_joints(80.0)[0])[found, :2], atol=1.5)


def test_an_interrupted_folder_run_continues(tmp_path, capsys):
    write_inputs(tmp_path / "photos")
    calls = []

    def interrupted(image, timer):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(image.shape)
        return fixed_predictor()(image, timer)
    with pytest.raises(KeyboardInterrupt):
        demo.run_folder(tmp_path / "photos", interrupted, tmp_path / "out")
    out = tmp_path / "out" / "photos"
    assert sorted(p for p in os.listdir(out) if p.endswith(".json")) == [
        "a_color.json", "b_gray.json", "c_alpha.json"]
    assert not (tmp_path / "out" / "photos_coco_results.json").exists()
    (out / "b_gray.json").write_text('{"frame": 0, "peo')       # damaged: redone
    kept = (out / "a_color.json").stat().st_mtime_ns
    calls.clear()

    def counting(image, timer):
        calls.append(image.shape)
        return fixed_predictor()(image, timer)
    demo.run_folder(tmp_path / "photos", counting, tmp_path / "out")
    assert len(calls) == 6 and calls[0] == (210, 250, 3)          # b_gray first, a kept
    assert (out / "a_color.json").stat().st_mtime_ns == kept
    assert "8 of 9 image(s) done (2 kept from an earlier run)" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "photos_coco_results.json").read_text())
    assert sorted(r["image_id"] for r in results) == list(range(8))


def expert_people(*joints_list):
    return [{"keypoints": j, "score": 10.0, "num_parts": 18} for j in joints_list]


def test_person_uncertainty_uses_the_evaluations_matching_and_disagreement():
    a = person_joints(100.0)[0]
    shifted = a.copy()
    shifted[:, 0] += 3.0
    lonely = person_joints(400.0, seed=5)[0]
    experts = [expert_people(a, lonely), expert_people(shifted), []]
    rows = demo_predict.person_uncertainty(experts, experts[0], chosen=0)
    arrays = [demo_predict.coco_keypoints(p) for p in experts]
    members, present = gather_members(arrays, match_people(arrays))
    expected = disagreement(members, present)
    assert rows[0]["num_experts"] == 2 and rows[0]["found_by"] == ["normal", "dark"]
    assert rows[0]["translational_disagreement"] == round(float(expected["translational"][0]), 4)
    assert rows[0]["translational_disagreement"] > 0
    assert rows[0]["rotational_disagreement"] == 0.0          # a pure shift turns no limb
    assert rows[1] == {"num_experts": 1, "found_by": ["normal"],
                       "translational_disagreement": None, "rotational_disagreement": None}
    fused = demo_predict.person_uncertainty(experts, expert_people(shifted, a + 200), None)
    assert fused[0]["translational_disagreement"] == rows[0]["translational_disagreement"]
    assert fused[1]["num_experts"] == 0 and fused[1]["translational_disagreement"] is None
    assert demo_predict.is_uncertain(rows[1], 0.08) and not demo_predict.is_uncertain(rows[0], 1)


# ------------------------------------------------------------------ the experts' ensemble

@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Three small experts with He-scaled random weights: their maps are far from zero, so
    each finds many (meaningless) people and the disagreement has people to compare. Whether
    a random network finds people on a given image is chance: seeds 26-28 find 18-29 on the
    test image, and some of the same ones (seed 12 finds none)."""
    from test_export import converted_weights
    root = tmp_path_factory.mktemp("experts")
    out = []
    for seed, name in enumerate(("normal", "dark", "motion_blur")):
        folder = root / name
        folder.mkdir()
        out.append(converted_weights(folder, "small", seed=26 + seed))
    return out


@pytest.fixture(scope="module")
def classifier_run(synthetic_coco, tmp_path_factory):
    """A tiny domain classifier (arch "tiny", 48 px) trained for a few dozen steps on the
    synthetic images with the three effects, saved as a training run's checkpoint."""
    import torch
    from train_domain_classifier import data, runs
    from train_domain_classifier.network import DomainClassifier
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = paths.image_dir(synthetic_coco, "train2014")
    x, y = [], []
    for name in sorted(os.listdir(folder))[:16]:
        bgr = cv2.imread(str(folder / name))
        for label, effect in enumerate(data.CLASS_EFFECTS):
            rgb = data.prepare_image(bgr, effect, 48)
            x.append(data.normalise(torch.from_numpy(rgb).permute(2, 0, 1)))
            y.append(label)
    x, y = torch.stack(x), torch.tensor(y)
    model = DomainClassifier("tiny")
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.set_num_threads(threads)
    run_dir = tmp_path_factory.mktemp("classifier_log") / "2026-01-01_00-00"
    runs.save_checkpoint(runs.checkpoint_path(run_dir, 1), {
        "model": model.state_dict(), "arch": "tiny", "input_size": 48, "epoch": 1, "seed": 0})
    return run_dir


def test_classifier_prepares_frames_as_the_evaluation_does(classifier_run, synthetic_coco):
    from model.effects import PIXEL_EFFECTS
    from train_domain_classifier import data, engine
    from train_domain_classifier import inference as classifier_inference
    classifier = demo_load.DomainClassifier(classifier_run, classifier_run.parent)
    path = sorted(paths.image_dir(synthetic_coco, "val2014").iterdir())[1]
    model, state, _ = classifier_inference.load_classifier(classifier_run, None)
    dataset = data.ImageFileDataset([data.ImageRef(0, str(path))], data.eval_size(state))
    _, expected, _ = engine.predict(model, engine.make_loader(dataset, 1, 0), "cpu")
    np.testing.assert_allclose(classifier(cv2.imread(str(path))), expected[0], atol=1e-6)
    dark = PIXEL_EFFECTS[DARK](cv2.imread(str(path)))
    assert int(np.argmax(classifier(dark))) == 1          # the trained net sees the dark one


@pytest.mark.slow
def test_ensemble_writes_domains_and_disagreement(experts, classifier_run, synthetic_coco,
                                                  clip, tmp_path):
    from model.effects import PIXEL_EFFECTS
    folder = tmp_path / "pair"
    folder.mkdir()
    source = sorted(paths.image_dir(synthetic_coco, "val2014").iterdir())[1]
    image = cv2.resize(cv2.imread(str(source)), (160, 120))
    cv2.imwrite(str(folder / "a_normal.png"), image)
    cv2.imwrite(str(folder / "b_dark.png"), PIXEL_EFFECTS[DARK](image))
    flags = ["--config", "small", "--weights_normal", experts[0], "--weights_dark", experts[1],
             "--weights_motion_blur", experts[2], "--classifier", classifier_run]
    result = run_demo("--images", folder, "--effect", "_ensemble", *flags, "--out",
                      tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classifier" in result.stdout and "uncertainty" in result.stdout
    dark = json.loads((tmp_path / "out" / "pair" / "b_dark.json").read_text())
    assert dark["ensemble"] == "routed" and dark["domain"] == dark["expert"] == "dark"
    probs = dark["domain_probabilities"]
    assert list(probs) == ["normal", "dark", "motion_blur"]
    assert sum(probs.values()) == pytest.approx(1, abs=1e-5) and max(probs.values()) == probs["dark"]
    people = dark["people"]
    assert people and all("dark" in p["found_by"] for p in people)
    for p in people:
        seen = p["num_experts"] >= 2
        assert (p["translational_disagreement"] is not None) == seen
        assert (p["rotational_disagreement"] is not None) == seen
        assert p["uncertain"] == (not seen or p["translational_disagreement"] > 0.08)
    assert {p["num_experts"] for p in people} >= {1, 2}
    assert json.loads((tmp_path / "out" / "pair_coco_results.json").read_text())

    result = run_demo("--video", clip, "--max_frames", 1, "--effect", "_ensemble_fuse",
                      "--uncertain_above", 0.2, *flags, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    frame = json.loads((tmp_path / "out" / "walk_json" / "walk_000000.json").read_text())
    assert frame["ensemble"] == "fused" and "expert" not in frame
    weights = np.array(list(frame["fusion_weights"].values()))
    np.testing.assert_allclose(weights, list(frame["domain_probabilities"].values()), atol=1e-5)
    assert frame["people"] and {p["person_id"] for p in frame["people"]} >= {0}
    for p in frame["people"]:
        t = p["translational_disagreement"]
        assert p["uncertain"] == (t is None or t > 0.2)


def test_missing_experts_or_classifier_are_one_line(experts, classifier_run, tmp_path,
                                                    monkeypatch):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((40, 40, 3), np.uint8))
    base = ["--image", image, "--config", "small", "--effect", "_ensemble"]
    line = error_line(run_demo(*base, "--weights_normal", experts[0], "--weights_dark",
                               tmp_path / "none.h5", "--weights_motion_blur", experts[2],
                               "--classifier", classifier_run))
    assert line == f"error: dark expert weights not found: {tmp_path / 'none.h5'} (--weights_dark)"
    line = error_line(run_demo(*base, "--weights_normal", experts[0], "--weights_dark",
                               experts[1], "--weights_motion_blur", experts[2],
                               "--classifier", tmp_path / "no_run"))
    assert f"checkpoint or run folder not found: {tmp_path / 'no_run'}" in line
    assert "train_domain_classifier/train.py" in line and "--classifier" in line
    line = error_line(run_demo(*base[:2], "--weights_dark", experts[1]))
    assert line == "error: --weights_dark is for --effect _ensemble or _ensemble_fuse"
    # the defaults: the experts' folders and the newest classifier run
    monkeypatch.setattr(paths, "expert_weights_dir", lambda effect: tmp_path / f"w{effect}")
    with pytest.raises(UserError, match=r"no weights for the motion_blur expert in .*: train "
                       r"them with python training/train_pose.py --effect '_motion_blur'.*"
                       r"or pass --weights_motion_blur FILE"):
        demo_load.expert_weights(MOTION_BLUR, None)
    assert demo_load.expert_weights(NORMAL, experts[0])[0] == experts[0]
    with pytest.raises(UserError, match=r"no domain classifier: no training run with "
                       r"checkpoints in .*; train one with python train_domain_classifier"):
        demo_load.DomainClassifier(None, tmp_path / "empty_log")
    classifier = demo_load.DomainClassifier(None, classifier_run.parent)   # the newest run
    assert classifier.path.name == "model_0001.pth"


# ------------------------------------------------------------------ backends and bad inputs

@pytest.mark.slow
def test_onnx_backends_give_the_keras_people(experts, synthetic_coco, tmp_path):
    onnx_file = tmp_path / "small.onnx"
    export.export_onnx("small", experts[0], onnx_file)
    image = cv2.resize(cv2.imread(str(sorted(paths.image_dir(synthetic_coco, "val2014")
                                             .iterdir())[2])), (160, 120))
    settings, timer = inference.InferenceSettings(), demo_predict.StageTimer()
    keras_people = demo_predict.SinglePose(
        network.load_pose_model("small", experts[0]), settings)(image, timer).people
    assert len(keras_people) > 5
    cv2.imwrite(str(tmp_path / "im.png"), image)
    for backend in ("onnxruntime", "openvino"):
        result = run_demo("--image", tmp_path / "im.png", "--backend", backend, "--weights",
                          onnx_file, "--config", "small", "--out", tmp_path / backend)
        assert result.returncode == 0, result.stderr[-3000:]
        people = json.loads((tmp_path / backend / "im.json").read_text())["people"]
        if backend == "onnxruntime":      # 1e-10 from Keras: the same people
            assert len(people) == len(keras_people)
            np.testing.assert_allclose([p["keypoints"] for p in people],
                                       [np.round(p["keypoints"], 2) for p in keras_people],
                                       atol=0.02)
        else:                             # float32 on another engine: nearly the same
            assert abs(len(people) - len(keras_people)) <= 0.1 * len(keras_people)
    line = error_line(run_demo("--image", tmp_path / "im.png", "--backend", "onnxruntime",
                               "--weights", onnx_file, "--config", "full"))
    assert "was exported from configuration 'small', not 'full'" in line
    line = error_line(run_demo("--image", tmp_path / "im.png", "--backend", "onnxruntime",
                               "--weights", experts[0], "--config", "small"))
    assert line.startswith(f"error: {experts[0]} is not an ONNX model")
    line = error_line(run_demo("--image", tmp_path / "im.png", "--backend", "openvino"))
    assert "--backend openvino runs an exported network: pass --weights FILE.onnx" in line


def test_empty_folder_and_zero_frame_video_are_one_line(tmp_path, weights):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    line = error_line(run_demo("--images", tmp_path / "empty", "--weights", weights))
    assert line.startswith(f"error: no images in {tmp_path / 'empty'} (looked for jpg, jpeg")
    zero = tmp_path / "zero.avi"
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48)).release()
    out = tmp_path / "out"
    line = error_line(run_demo("--video", zero, "--weights", weights, "--config", "small",
                               "--out", out))
    assert line == f"error: no frame could be read from {zero}"
    assert os.listdir(out) == []
    line = error_line(run_demo("--video", zero, "--track_min_oks", 0))
    assert line == "error: --track_min_oks must be in (0, 1], got 0.0"


def test_a_video_shorter_than_declared_is_a_warning(tmp_path, caplog):
    clip = tmp_path / "six.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(6):
        writer.write(rng.integers(0, 255, (48, 64, 3), np.uint8))
    writer.release()
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:int(len(data) * 0.7)])            # the index at the end is lost
    declared = int(cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT))
    demo.run_video(fixed_predictor(lambda call: np.zeros((0, 18, 3))), tmp_path / "out",
                   video=cut)
    count = len(os.listdir(tmp_path / "out" / "cut_json"))
    assert 0 < count < declared == 6
    assert f"{cut} declares 6 frames but only {count} could be read" in caplog.text
