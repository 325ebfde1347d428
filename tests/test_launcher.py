"""model.launcher: a script started from the preloading server behaves as `python script.py`
would (argv, __main__, sys.path[0], exit status, its own process), and finds the preloaded
modules already imported. Each case runs in a new interpreter, since the forkserver and its
preload list are global to the process that starts it."""
import json
import subprocess
import sys
import textwrap

from model.launcher import Launcher

SCRIPT = """\
import json, os, sys
seen = {"argv": sys.argv[1:], "name": __name__, "path0": sys.path[0], "pid": os.getpid(),
        "preloaded": "model.errors" in sys.modules}
with open(sys.argv[1], "w") as f:
    json.dump(seen, f)
if sys.argv[2] == "raise":
    raise RuntimeError("boom")
sys.exit(int(sys.argv[2]))
"""


def launch(tmp_path, *args):
    """Run the script through Launcher.start in a new interpreter: (exit status it returned,
    what the script saw, the driver's pid)."""
    script = tmp_path / "tools" / "probe.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(SCRIPT)
    seen = tmp_path / "seen.json"
    driver = textwrap.dedent(f"""
        import os, sys
        from model.launcher import Launcher
        launcher = Launcher(preload=["model.errors"])
        child = launcher.start([sys.executable, {str(script)!r}, {str(seen)!r}, *{list(args)!r}])
        print(child.wait(timeout=120), os.getpid(), "model.errors" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    status, driver_pid, driver_imported = done.stdout.split()
    return int(status), json.loads(seen.read_text()), int(driver_pid), driver_imported, done


def test_a_forked_script_sees_what_python_script_py_gives_it(tmp_path):
    status, seen, driver_pid, driver_imported, _ = launch(tmp_path, "0", "--flag", "x y")
    assert status == 0
    assert seen["argv"] == [str(tmp_path / "seen.json"), "0", "--flag", "x y"]
    assert seen["name"] == "__main__"
    assert seen["path0"] == str(tmp_path / "tools")
    assert seen["pid"] != driver_pid
    # Imported by the server before it forked, not by the script nor by the driver.
    assert seen["preloaded"] is True and driver_imported == "False"


def test_a_forked_script_exit_status_and_exceptions_come_back(tmp_path):
    assert launch(tmp_path, "2")[0] == 2
    status, *_, done = launch(tmp_path, "raise")
    assert status == 1
    assert "RuntimeError: boom" in done.stderr


def test_commands_that_are_not_a_script_start_as_subprocesses(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")     # what Launcher() sets, undone after
    launcher = Launcher(preload=[])
    child = launcher.start([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert isinstance(child, subprocess.Popen)
    assert child.wait(timeout=60) == 3


def test_a_forked_script_runs_its_atexit_functions(tmp_path):
    """As at an interpreter's exit: what a script registers with atexit runs when it ends."""
    marker = tmp_path / "atexit.txt"
    script = tmp_path / "registers.py"
    script.write_text(f"import atexit, pathlib\n"
                      f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'ran')\n")
    driver = (f"import sys\nfrom model.launcher import Launcher\n"
              f"print(Launcher(preload=[]).start([sys.executable, {str(script)!r}]).wait(60))")
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["0"], done.stderr[-2000:]
    assert marker.read_text() == "ran"


def test_a_forked_script_can_be_limited_to_threads_and_write_to_a_file(tmp_path):
    """What Runner.run_groups asks for: one thread for OpenCV (preloaded) and OpenMP, and the
    script's stdout and stderr in a file."""
    script = tmp_path / "threads.py"
    script.write_text("import os, sys, cv2\nprint('cv2', cv2.getNumThreads(), "
                      "os.environ['OMP_NUM_THREADS'])\nprint('to stderr', file=sys.stderr)\n")
    output = tmp_path / "out.log"
    driver = (f"import sys\nfrom model.launcher import Launcher\n"
              f"child = Launcher(preload=['cv2']).start([sys.executable, {str(script)!r}], "
              f"threads=1, output={str(output)!r})\nprint(child.wait(60))")
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["0"], done.stderr[-2000:]
    assert output.read_text().splitlines() == ["cv2 1 1", "to stderr"]
