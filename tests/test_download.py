"""step1_download_coco2014.sh against a local HTTP server (with Range support), and step2."""
import json
import os
import socket
import subprocess
import zipfile

import cv2
import numpy as np
import pytest
from http_server import Server

from model import paths

STEP1 = paths.REPO_ROOT / "dataset" / "step1_download_coco2014.sh"
STEP2 = paths.REPO_ROOT / "dataset" / "step2_setup_coco_api.sh"


def noisy_jpeg(seed, size=96):
    rng = np.random.default_rng(seed)
    return cv2.imencode(".jpg", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """Small COCO-like zips (same inner layout as COCO's) and the files they hold."""
    served = tmp_path_factory.mktemp("served")
    (served / "zips").mkdir()
    (served / "annotations").mkdir()
    content = {}
    for split, base in (("train2014", 100), ("val2014", 200)):
        with zipfile.ZipFile(served / "zips" / f"{split}.zip", "w", zipfile.ZIP_STORED) as z:
            for k in range(3):
                name = f"{split}/COCO_{split}_{base + k:012d}.jpg"
                content[name] = noisy_jpeg(base + k)
                z.writestr(name, content[name])
    with zipfile.ZipFile(served / "annotations" / "annotations_trainval2014.zip", "w",
                         zipfile.ZIP_DEFLATED) as z:
        for split in ("train2014", "val2014"):
            name = f"annotations/person_keypoints_{split}.json"
            content[name] = json.dumps({"images": [], "annotations": [],
                                        "pad": list(range(20000))}).encode()
            z.writestr(name, content[name])
    return served, content


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(root, config=None):
        server = Server(root, tmp_path, config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run_step1(coco_root, url, *args, attempts=None):
    env = dict(os.environ, COCO_BASE_URL=url)
    if attempts:
        env["COCO_DOWNLOAD_ATTEMPTS"] = str(attempts)
    return subprocess.run(["bash", str(STEP1), "--coco_root", str(coco_root), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def check_layout(coco_root, content, parts=("train2014", "val2014", "annotations")):
    for name, data in content.items():
        top = name.split("/")[0]
        part = "annotations" if top == "annotations" else top
        if part not in parts:
            continue
        target = coco_root / name if part == "annotations" else coco_root / "images" / name
        assert target.read_bytes() == data, name
    for part in parts:
        assert (coco_root / ".download" / f"{part}.done").is_file()
    assert not list(coco_root.glob("*.zip*")), "archives are removed after extraction"


def test_download_all_then_rerun_skips_everything(archives, serve, tmp_path):
    served, content = archives
    ann = "/annotations/annotations_trainval2014.zip"
    server = serve(served, {"cut": {ann: 3000}})     # interrupted once: resumed in the same run
    coco_root = tmp_path / "COCO"
    run = run_step1(coco_root, server.url)
    assert run.returncode == 0, run.stderr
    assert "disk space needed" in run.stdout and "free in" in run.stdout
    check_layout(coco_root, content)
    gets = [r for r in server.requests() if r[0] == "GET" and r[1] == ann]
    assert [g[2] for g in gets] == [None, "bytes=3000-"]
    assert "resuming at 3.0 KB" in run.stdout
    before = len(server.requests())
    again = run_step1(coco_root, server.url)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert len(server.requests()) == before            # finished parts are not even asked for


def test_interrupted_download_resumes_on_the_next_run(archives, serve, tmp_path):
    served, content = archives
    val = "/zips/val2014.zip"
    server = serve(served, {"cut": {val: 5000}})
    coco_root = tmp_path / "COCO"
    first = run_step1(coco_root, server.url, "--parts", "val2014", attempts=1)
    assert first.returncode == 5
    assert "rerun to resume" in first.stderr and "Traceback" not in first.stderr
    partial = coco_root / "val2014.zip.part"
    assert partial.stat().st_size == 5000
    assert not (coco_root / ".download" / "val2014.done").exists()
    second = run_step1(coco_root, server.url, "--parts", "val2014", attempts=1)
    assert second.returncode == 0, second.stderr
    gets = [r[2] for r in server.requests() if r[0] == "GET"]
    assert gets == [None, "bytes=5000-"]
    check_layout(coco_root, content, parts=("val2014",))
    assert not (coco_root / "images" / "train2014").exists()


def test_unreachable_server_fails_clearly(tmp_path):
    with socket.socket() as s:            # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = run_step1(tmp_path / "COCO", f"http://127.0.0.1:{port}")
    assert run.returncode == 3
    assert "cannot reach the COCO server" in run.stderr and "COCO_BASE_URL" in run.stderr
    assert not list((tmp_path / "COCO").glob("*.zip*"))


def test_corrupt_archive_is_removed_and_not_unpacked(archives, serve, tmp_path):
    served, _ = archives
    bad = tmp_path / "bad"
    (bad / "zips").mkdir(parents=True)
    good = (served / "zips" / "val2014.zip").read_bytes()
    (bad / "zips" / "val2014.zip").write_bytes(good[:100] + bytes(len(good) - 100))
    server = serve(bad)
    coco_root = tmp_path / "COCO"
    run = run_step1(coco_root, server.url, "--parts", "val2014")
    assert run.returncode == 6
    assert "is corrupt" in run.stderr and "rerun to download it again" in run.stderr
    assert not (coco_root / "val2014.zip").exists()
    assert not (coco_root / "images" / "val2014").exists()
    assert not (coco_root / ".download" / "val2014.done").exists()


def test_not_enough_space_and_bad_arguments(archives, serve, tmp_path):
    served, _ = archives
    server = serve(served, {"fake_size": {"/zips/train2014.zip": 10 ** 16}})
    coco_root = tmp_path / "COCO"
    run = run_step1(coco_root, server.url, "--parts", "train2014")
    assert run.returncode == 4
    assert "not enough free space" in run.stderr and "need about 20000.0 TB" in run.stderr
    assert not any(r[0] == "GET" for r in server.requests())
    run = run_step1(coco_root, server.url, "--parts", "test2014")
    assert run.returncode == 2 and "unknown part 'test2014'" in run.stderr
    run = run_step1(coco_root, server.url, "--skip_space_check", "maybe")
    assert run.returncode == 2 and "expected a boolean" in run.stderr


def test_step2_installs_pinned_pycocotools_and_checks_import(tmp_path):
    # the pinned version is already installed, so pip answers without the registry
    run = subprocess.run(["bash", str(STEP2)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    pinned = [line for line in (paths.REPO_ROOT / "requirements.txt").read_text().splitlines()
              if line.startswith("pycocotools==")][0].split("==")[1]
    assert f"pycocotools {pinned} imports fine" in run.stdout
    missing = subprocess.run(["bash", str(STEP2)], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, VENV=str(tmp_path / "none")))
    assert missing.returncode == 1
    assert "no Python environment" in missing.stderr and "make install" in missing.stderr
