"""Start the runner's steps without importing TensorFlow, Keras and torch again for each one.

Every step of run_experiment.py is `python <script> <flags>`. Started as a new interpreter,
each would import TensorFlow and Keras first (4.5-4.8 s on 2 cores) and the classifier's steps
torch (2 s): about 3 minutes of the demo's 50 steps. Here one process (multiprocessing's
forkserver) imports them once, and each step runs in a new process forked from it, with the
script as __main__ and sys.argv as typed: its own memory and exit status, as before, without
the imports. Nothing has run TensorFlow or torch in that process before it forks: it only
imported them.

Commands that are not a Python script (`python -c ...`, torchrun) start as before
(subprocess)."""
import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
from pathlib import Path

# What the steps' scripts import; a module that is not installed is skipped by the server.
PRELOAD = ["tensorflow", "keras", "model.torch_compat", "cv2", "h5py", "scipy.ndimage",
           "pycocotools.cocoeval", "matplotlib.pyplot", "tqdm"]


def limit_threads(threads):
    """At most `threads` threads for TensorFlow's, torch's and OpenCV's operations; before
    TensorFlow runs anything (it cannot change afterwards)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "tensorflow" in sys.modules:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)


def _run_script(argv, threads=None, output=None):
    """In the forked process: what `python script.py flags` does with script.py; its output
    into the file `output` when given."""
    if output is not None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    if threads:
        limit_threads(threads)
    script = str(Path(argv[0]).resolve())
    sys.argv = [script, *argv[1:]]
    sys.path[0] = str(Path(script).parent)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        # A forked process ends with os._exit, which skips the atexit functions an
        # interpreter's exit would call (writers' and loggers' last flushes).
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


class ForkedStep:
    """A step's process, with the part of subprocess.Popen's interface that run_watched uses."""

    def __init__(self, context, argv, threads=None, output=None):
        self.process = context.Process(target=_run_script, args=(argv, threads, output),
                                       name=Path(argv[0]).name)
        self.process.start()

    def wait(self, timeout=None):
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.process.name, timeout)
        return self.process.exitcode

    def kill(self):
        self.process.kill()


class Launcher:
    """start(argv) -> a process object with wait(timeout) and kill(), for argv as Step.argv()
    gives it (Runner.run_groups also limits its threads and collects its output)."""

    def __init__(self, preload=PRELOAD):
        # The classifier's and the sweep's scripts set this before torch loads (idle OpenMP
        # threads sleep); the preloading server loads torch, so it must be set before it starts.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(list(preload))

    @staticmethod
    def is_script(argv):
        return (len(argv) >= 2 and argv[0] == sys.executable and argv[1].endswith(".py")
                and Path(argv[1]).is_file())

    def start(self, argv, threads=None, output=None):
        """threads: at most this many threads for the step's operations (None: all cores);
        output: a file for the step's stdout and stderr (None: the runner's)."""
        if self.is_script(argv):
            return ForkedStep(self.context, argv[1:], threads, output)
        return start_subprocess(argv, threads, output)


def start_subprocess(argv, threads=None, output=None):
    """subprocess.Popen(argv), with Launcher.start's threads and output."""
    env = None if not threads else {**os.environ, "OMP_NUM_THREADS": str(threads),
                                     "TF_NUM_INTRAOP_THREADS": str(threads)}
    if output is None:
        return subprocess.Popen(argv, env=env)
    with open(output, "wb") as f:
        return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT)
