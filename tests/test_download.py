"""step1_download_coco2014.sh against a local HTTP server (with Range support), and step2."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import zipfile

import cv2
import numpy as np
import pytest

from model import paths

STEP1 = paths.REPO_ROOT / "dataset" / "step1_download_coco2014.sh"
STEP2 = paths.REPO_ROOT / "dataset" / "step2_setup_coco_api.sh"

# A static file server that honours "Range: bytes=N-", logs every request, can cut the first
# full GET of a file after K bytes (an interrupted download), and can announce a fake size
# on HEAD. python -m http.server cannot do Range requests.
SERVER = textwrap.dedent('''
    import http.server, json, os, sys
    root, port_file, log_file = sys.argv[1:4]
    config = json.loads(sys.argv[4])
    cut_done = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _file(self):
            path = os.path.join(root, self.path.lstrip("/"))
            with open(log_file, "a") as f:
                f.write(json.dumps([self.command, self.path, self.headers.get("Range")]) + "\\n")
            if not os.path.isfile(path):
                self.send_error(404)
                return None
            return path

        def do_HEAD(self):
            path = self._file()
            if path:
                size = config.get("fake_size", {}).get(self.path, os.path.getsize(path))
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

        def do_GET(self):
            path = self._file()
            if not path:
                return
            data = open(path, "rb").read()
            start = 0
            rng = self.headers.get("Range")
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % len(data))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range",
                                 "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            cut = config.get("cut", {}).get(self.path)
            if cut and not rng and self.path not in cut_done:
                cut_done.add(self.path)
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()
''')


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


class Server:
    def __init__(self, root, tmp_path, config=None):
        self.log = tmp_path / "requests.log"
        self.log.write_text("")
        port_file = tmp_path / "port"
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        self.proc = subprocess.Popen([sys.executable, str(script), str(root), str(port_file),
                                      str(self.log), json.dumps(config or {})])
        deadline = time.time() + 20
        while not port_file.exists():
            assert time.time() < deadline and self.proc.poll() is None, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def requests(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


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
