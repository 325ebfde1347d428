"""A minimal resumable step runner for run_experiment.py.

Each step is a command line of one of the project's scripts (exactly what a user would type)
and the files that prove it finished. A finished step leaves a marker with its command, its
stamp (what else decides its output, e.g. the synthetic generator's version) and the time it
finished. A rerun skips a step whose marker matches, whose outputs exist and which finished
after the step before it; so once a step runs, every later step runs too (each may depend on
what an earlier one wrote), even after an interruption.

Most scripts themselves keep work they find complete (masks, HDF5, trained epochs), which is
what resumes an interrupted first run. A step that reruns after it had finished (its inputs or
command changed, --force) is given its `redo` flags so that it does not keep stale work; the
marker says so until the redo completes."""
import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from model import files, machine
from model.errors import UserError
from model.launcher import start_subprocess

log = logging.getLogger("experiment")


@dataclass
class Step:
    name: str
    command: list                      # argv; "python" is replaced by this interpreter
    outputs: list = field(default_factory=list)   # files that prove the step finished
    stamp: str = ""
    redo: list = field(default_factory=list)      # flags that make the script redo finished work
    watch: object = None               # called with the seconds since start while it runs

    def record(self):
        return {"command": [str(a) for a in self.command], "stamp": self.stamp}

    def argv(self):
        return [sys.executable if a == "python" else str(a) for a in self.command]

    def output_paths(self):
        return [Path(p) for p in self.outputs]


NOT_RUN = "not run before"


def run_watched(argv, watch=None, every=2.0, start_process=subprocess.Popen):
    """Run argv to completion, calling watch(seconds since start) about every `every` seconds;
    its exit status. On an interrupt the child, which got the same signal, is given time to
    save its work before it is killed. start_process(argv): the child, with Popen's wait and
    kill (model.launcher.Launcher.start forks a script from a process that has imported
    TensorFlow)."""
    start = time.time()
    child = start_process(argv)
    try:
        while True:
            try:
                return child.wait(timeout=every if watch else None)
            except subprocess.TimeoutExpired:
                watch(time.time() - start)
    except BaseException:
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


class Runner:
    def __init__(self, marker_dir, force=False, launcher=None):
        self.marker_dir = Path(marker_dir)
        self.force = force              # --force: redo every step
        self.launcher = launcher        # model.launcher.Launcher, or None: subprocesses
        self.upstream = 0.0             # when the previous step finished
        self.timings = []               # (step name, seconds, "ran" | "skipped")
        self.cpu_at_start = machine.cpu_times()
        self._print_lock = threading.Lock()

    def _marker(self, step):
        return self.marker_dir / f"{step.name}.json"

    def is_done(self, step):
        return self.reason_to_run(step) is None

    def reason_to_run(self, step):
        """Why `step` must run (a short phrase for the log), or None when it is complete."""
        return self._check(step, self.upstream)[0]

    def _check(self, step, upstream):
        if self.force:
            return "--force", None
        marker = self._marker(step)
        if not marker.is_file():
            return NOT_RUN, None
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            recorded = None
        if not isinstance(recorded, dict):
            return "its marker is unreadable", None
        if recorded.get("redo"):
            return "its redo was interrupted", None
        for key, value in step.record().items():
            if recorded.get(key) != value:
                return f"its {key} changed", None
        if recorded.get("finished", 0.0) < upstream:
            return "an earlier step ran after it", None
        missing = [p for p in step.output_paths() if not p.exists()]
        if missing:
            return f"output missing: {missing[0]}", None
        return None, recorded

    def _start(self, threads, output):
        start = self.launcher.start if self.launcher is not None else start_subprocess
        return lambda argv: start(argv, threads, output)

    def _run(self, step, number, upstream, threads=None, output=None):
        """Run or skip `step` ([step `number`] in the log) after a step that finished at
        `upstream`; (its timing row, when it finished). threads and output: see
        Launcher.start (the step's output is printed when it ends)."""
        prefix = f"[step {number}] {step.name}"
        reason, recorded = self._check(step, upstream)
        if reason is None:
            log.info("%s: already complete, skipped", prefix)
            return (step.name, 0.0, "skipped"), recorded.get("finished", 0.0)
        argv = step.argv()
        if reason != NOT_RUN:
            argv += [str(a) for a in step.redo]
            files.write_json(self._marker(step), {"redo": True})
        log.info("%s (%s): %s", prefix, reason, shlex.join(argv))
        start = time.time()
        try:
            returncode = run_watched(argv, step.watch,
                                     start_process=self._start(threads, output))
        finally:
            if output is not None and output.is_file():
                with self._print_lock:
                    sys.stdout.write(output.read_text(errors="replace"))
                    sys.stdout.flush()
        seconds = time.time() - start
        if returncode != 0:
            how = (f"killed by {signal.Signals(-returncode).name}"
                   if -returncode in signal.valid_signals() else f"exit {returncode}")
            raise UserError(f"step '{step.name}' failed ({how}); "
                            f"fix the cause and rerun: finished steps are skipped")
        missing = [str(p) for p in step.output_paths() if not p.exists()]
        if missing:
            raise UserError(f"step '{step.name}' finished but did not write {missing[0]}")
        finished = time.time()
        files.write_json(self._marker(step), {**step.record(), "seconds": round(seconds, 1),
                                              "finished": finished})
        log.info("%s: done in %.1f s", prefix, seconds)
        return (step.name, seconds, "ran"), finished

    def steal_percent(self):
        """The share of the CPU time the hypervisor gave to other machines while this
        runner's steps ran (model.machine.steal_percent), None when none ran."""
        if not any(status == "ran" for _, _, status in self.timings):
            return None
        return machine.steal_percent(self.cpu_at_start)

    def run(self, step):
        row, self.upstream = self._run(step, len(self.timings) + 1, self.upstream)
        self.timings.append(row)

    def run_all(self, steps):
        for step in steps:
            self.run(step)
        return self.timings

    def run_groups(self, groups, processes=2):
        """Groups of steps that depend on nothing in one another: each group's steps in
        order, `processes` groups at a time, each step's output printed when it ends. A step
        gets usable / k threads (usable: the CPUs this process may run on, machine.
        usable_cpus), k = the groups at most `processes` not yet ended when it starts (so the
        last group's later steps take every core). On 2 cores two of the small
        network's evaluations or fine-tunings at once, one thread each, do 1.25-1.6x the
        work of one with two threads (its convolutions use a second thread for only about
        1.3x). After a step fails, no new group starts; the error comes when the running ones
        have ended."""
        if processes <= 1 or len(groups) <= 1:
            for group in groups:
                self.run_all(group)
            return self.timings
        first = len(self.timings) + 1
        numbers = [first + sum(map(len, groups[:i])) for i in range(len(groups))]
        rows = [None] * sum(map(len, groups))
        unfinished = len(groups)          # groups not yet ended, this one included
        lock, failed = threading.Lock(), threading.Event()
        self.marker_dir.mkdir(parents=True, exist_ok=True)

        def run_group(i):
            nonlocal unfinished
            upstream = self.upstream
            try:
                for k, step in enumerate(groups[i]):
                    if failed.is_set():
                        return upstream
                    number = numbers[i] + k
                    with lock:
                        threads = max(1, machine.usable_cpus() // min(processes, unfinished))
                    rows[number - first], upstream = self._run(
                        step, number, upstream, threads, self.marker_dir / f"{step.name}.log")
            except BaseException:
                failed.set()
                raise
            finally:
                with lock:
                    unfinished -= 1
            return upstream

        with ThreadPoolExecutor(processes) as pool:
            futures = [pool.submit(run_group, i) for i in range(len(groups))]
            done = [f.result() for f in futures]      # the first error, after all ended
        self.timings += rows
        self.upstream = max(done)
        return self.timings
